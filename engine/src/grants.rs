//! Capabilities an operator grants a run's tasks. Tasks get nothing by default (see
//! [`crate::host`]); a grant opens exactly one door, for one run:
//!
//! - a host directory, read-only, at a path of the operator's choosing inside the sandbox;
//! - an environment variable of sandflow's own environment, by name.
//!
//! Grants are stored with the run so that a resumed run gets the same ones. Environment
//! *values* are not stored (they are often secrets): a resumed run reads them again from
//! the environment of the process that resumes it.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What the operator granted, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Names of environment variables tasks may read.
    pub env: Vec<String>,
}

/// A host directory tasks may read, and where they see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    pub host: PathBuf,
    /// `None`: the directory's absolute host path.
    pub guest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    #[error("--dir {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--dir {}: not a directory", path.display())]
    NotADir { path: PathBuf },
    #[error("two --dir grants would both appear at {guest} inside the sandbox; give each its own")]
    SameGuestPath { guest: String },
    #[error("--env {name}: sandflow's environment has no such variable (or it is not UTF-8)")]
    Env { name: String },
}

impl DirGrant {
    /// Parses `HOST[:GUEST]`; without a guest path, tasks see the directory at its host path.
    pub fn parse(text: &str) -> Self {
        match text.rsplit_once(':') {
            Some((host, guest)) if !host.is_empty() && guest.starts_with('/') => Self {
                host: host.into(),
                guest: Some(guest.to_owned()),
            },
            _ => Self {
                host: text.into(),
                guest: None,
            },
        }
    }
}

impl Grants {
    /// Checks every grant against this machine and reads the granted variables' values.
    pub fn resolve(&self) -> Result<Capabilities, GrantError> {
        let mut dirs = Vec::with_capacity(self.dirs.len());
        for grant in &self.dirs {
            let dir_error = |source| GrantError::Dir {
                path: grant.host.clone(),
                source,
            };
            let host = grant.host.canonicalize().map_err(dir_error)?;
            if !host.metadata().map_err(dir_error)?.is_dir() {
                return Err(GrantError::NotADir {
                    path: grant.host.clone(),
                });
            }
            let guest = match &grant.guest {
                Some(guest) => guest.clone(),
                None => host.to_string_lossy().into_owned(),
            };
            if dirs.iter().any(|(_, taken)| *taken == guest) {
                return Err(GrantError::SameGuestPath { guest });
            }
            dirs.push((host, guest));
        }
        let env = self
            .env
            .iter()
            .map(|name| match std::env::var(name) {
                Ok(value) => Ok((name.clone(), value)),
                Err(_) => Err(GrantError::Env { name: name.clone() }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Capabilities { dirs, env })
    }
}

/// Grants checked and resolved, ready to hand to every attempt's WASI context.
#[derive(Debug, Default)]
pub struct Capabilities {
    dirs: Vec<(PathBuf, String)>,
    env: Vec<(String, String)>,
}

impl Capabilities {
    /// Adds the granted directories (read-only) and variables to a WASI context.
    pub(crate) fn apply(&self, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        wasi.envs(&self.env);
        for (host, guest) in &self.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_parse_with_and_without_a_guest_path() {
        let grant = |host: &str, guest: Option<&str>| DirGrant {
            host: host.into(),
            guest: guest.map(Into::into),
        };
        assert_eq!(DirGrant::parse("/data"), grant("/data", None));
        assert_eq!(
            DirGrant::parse("./in:/input"),
            grant("./in", Some("/input"))
        );
        // A colon that does not introduce an absolute guest path is part of the host path.
        assert_eq!(DirGrant::parse("a:b"), grant("a:b", None));
    }

    #[test]
    fn resolving_refuses_what_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let dirs = |host: PathBuf| Grants {
            dirs: vec![DirGrant { host, guest: None }],
            env: vec![],
        };
        assert!(dirs(dir.path().into()).resolve().is_ok());
        let err = |g: Grants| g.resolve().unwrap_err().to_string();
        assert!(err(dirs(file)).contains("not a directory"));
        assert!(err(dirs(dir.path().join("missing"))).contains("No such file"));
        let env = Grants {
            dirs: vec![],
            env: vec!["SANDFLOW_TEST_SURELY_UNSET".into()],
        };
        assert!(err(env).contains("no such variable"));
    }
}
