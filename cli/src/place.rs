//! Where a server's state is kept: the redb file of `--db`, which one process opens at a
//! time, or the PostgreSQL database of `--store`, which many processes share.

use crate::Failed;
use sandflow::{PgStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// Connections a process keeps to a PostgreSQL store: enough for its attempts' reads and
/// its runs' commits at once, few enough for many processes on one database.
pub(crate) const CONNECTIONS: usize = 16;

pub enum Place {
    File(PathBuf),
    Postgres(String),
}

impl Place {
    /// The store, opened to be written.
    pub async fn open(&self) -> Result<Arc<dyn Store>, Failed> {
        Ok(match self {
            Place::File(path) => Arc::new(crate::door::open_store(path, true).await?),
            Place::Postgres(url) => Arc::new(
                PgStore::connect(url, CONNECTIONS)
                    .await
                    .map_err(Failed::input)?,
            ),
        })
    }
}
