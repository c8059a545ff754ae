//! Each run's bundle, kept by its hash beside the compile cache (`CACHE/bundles/HASH.wasm`):
//! rebuilding a plugin at the path a run started from must not strand the run, so
//! `resume` and `retry` take the kept copy when the file there is gone or has changed.

use std::path::{Path, PathBuf};

/// Where the bundle of hash `hash` is kept.
fn place(cache: &Path, hash: &str) -> PathBuf {
    cache.join("bundles").join(format!("{hash}.wasm"))
}

/// Keeps a copy of the bundle at `path`, whose SHA-256 is `hash`, unless one is kept. A
/// copy that cannot be written is said, never fatal: the run goes on without it.
pub fn keep(cache: &Path, path: &Path, hash: &str) {
    let kept = place(cache, hash);
    if kept.exists() {
        return;
    }
    let copied = (|| -> std::io::Result<()> {
        let bytes = std::fs::read(path)?;
        // The file may have changed since it was loaded: keep only what ran.
        if sandflow::bundle::content_hash(&bytes) != hash {
            return Ok(());
        }
        let dir = kept.parent().expect("kept bundles are in a directory");
        std::fs::create_dir_all(dir)?;
        // Whole or not at all: a copy cut short by a crash must not pass for the bundle.
        let partial = kept.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&partial, &bytes)?;
        std::fs::rename(&partial, &kept)
    })();
    if let Err(e) = copied {
        eprintln!(
            "warning: cannot keep a copy of {} in {}: {e}; resuming the run needs the file as it is",
            path.display(),
            kept.display()
        );
    }
}

/// The kept copy of the bundle of hash `hash`, if there is one.
pub fn kept(cache: &Path, hash: &str) -> Option<PathBuf> {
    Some(place(cache, hash)).filter(|p| p.is_file())
}
