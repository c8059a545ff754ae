//! Capabilities an operator grants a run's tasks. Tasks get nothing by default (see
//! `host`); a grant opens exactly one door, for one run:
//!
//! - a host directory, read-only, at a path of the operator's choosing inside the sandbox;
//! - an environment variable of sandflow's own environment, by name.
//!
//! Inside a granted directory only files and directories open (see
//! `refuse_special_files`).
//!
//! Grants are stored with the run so that a resumed run gets the same ones. Environment
//! *values* are not stored (they are often secrets): a resumed run resolves them again.
//!
//! What a name in a grant means is the host's to say, through a [`GrantPolicy`]. On the
//! command line ([`HostGrants`]) the operator is the user, so `--env NAME` reads sandflow's
//! own environment and `--dir` a host directory. A service must never let a tenant name
//! the host's variables or directories: its policy reads the tenant's own secrets instead.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{self as fs, Host as _, HostDescriptor as _};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiView};

/// What the operator granted, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Host directories tasks may read.
    pub dirs: Vec<DirGrant>,
    /// Names of environment variables tasks may read.
    pub env: Vec<String>,
}

/// A host directory tasks may read, and where they see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// `None`: the directory's absolute host path.
    pub guest: Option<String>,
}

/// Why a grant cannot be honoured on this machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The directory cannot be resolved.
    #[error("--dir {}: {source}", path.display())]
    Dir {
        /// The directory as given.
        path: PathBuf,
        /// Why it cannot be resolved.
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("--dir {}: not a directory", path.display())]
    NotADir {
        /// The directory as given.
        path: PathBuf,
    },
    /// Two directories would appear at one path inside the sandbox.
    #[error("two --dir grants would both appear at {guest} inside the sandbox; give each its own")]
    SameGuestPath {
        /// The path inside the sandbox.
        guest: String,
    },
    /// `--dir HOST:GUEST` with a relative `GUEST`.
    #[error(
        "--dir {grant}: the path inside the sandbox ({guest}) must be absolute, such as \
         /{guest}"
    )]
    RelativeGuest {
        /// The grant as given.
        grant: String,
        /// The path inside the sandbox, as given.
        guest: String,
    },
    /// sandflow's environment lacks the variable.
    #[error("--env {name}: sandflow's environment has no such variable (or it is not UTF-8)")]
    Env {
        /// The variable's name.
        name: String,
    },
    /// The host's policy refuses the grant; the message says why, in the host's words.
    #[error("{0}")]
    Refused(String),
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

/// The error of `HOST:GUEST` with a relative `GUEST`, which [`DirGrant::parse`] reads as a
/// host path with a colon: said as what it most likely is when that path does not exist
/// and `HOST` does.
fn relative_guest(text: &Path) -> Option<GrantError> {
    let (host, guest) = text.to_str()?.rsplit_once(':')?;
    (!guest.is_empty() && Path::new(host).is_dir()).then(|| GrantError::RelativeGuest {
        grant: text.display().to_string(),
        guest: guest.to_owned(),
    })
}

/// Turns a run's grants into what its tasks get, for the run's tenant.
#[async_trait::async_trait]
pub trait GrantPolicy: Send + Sync {
    /// What `grants` give `tenant`'s run, or why they cannot be honoured.
    async fn resolve(&self, tenant: &str, grants: &Grants) -> Result<Capabilities, GrantError>;
}

/// The operator's own policy, for the command line: directories of this machine, variables
/// of sandflow's environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostGrants;

#[async_trait::async_trait]
impl GrantPolicy for HostGrants {
    async fn resolve(&self, _tenant: &str, grants: &Grants) -> Result<Capabilities, GrantError> {
        grants.resolve_on_host()
    }
}

impl Grants {
    /// Checks every grant against this machine and reads the granted variables' values.
    fn resolve_on_host(&self) -> Result<Capabilities, GrantError> {
        let mut dirs = Vec::with_capacity(self.dirs.len());
        for grant in &self.dirs {
            let dir_error = |source| GrantError::Dir {
                path: grant.host.clone(),
                source,
            };
            let host = match grant.host.canonicalize() {
                Ok(host) => host,
                Err(e) => return Err(relative_guest(&grant.host).unwrap_or_else(|| dir_error(e))),
            };
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

/// Grants checked and resolved, ready to hand to every attempt's WASI context. It
/// serializes with the variables' values: a queued attempt's job carries them to its
/// worker (see `dispatch`), as the tenants' secrets they come from sit in the same
/// database.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    dirs: Vec<(PathBuf, String)>,
    env: Vec<(String, String)>,
}

/// Names only: the values are often secrets, and a debug line must not print them.
impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Capabilities")
            .field("dirs", &self.dirs)
            .field("env", &env)
            .finish()
    }
}

impl Capabilities {
    /// Environment variables and nothing else: what a policy that grants no host
    /// directories resolves grants to.
    pub fn environment(env: Vec<(String, String)>) -> Self {
        Self {
            dirs: Vec::new(),
            env,
        }
    }

    /// Adds the granted directories (read-only) and variables to a WASI context.
    pub(crate) fn apply(&self, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        wasi.envs(&self.env);
        for (host, guest) in &self.dirs {
            // On a worker, the directory is its machine's, which may lack it.
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    wasmtime::format_err!("the granted directory {}: {e}", host.display())
                })?;
        }
        Ok(())
    }
}

/// The WASI interface whose `open-at` [`refuse_special_files`] replaces: the version
/// wasmtime-wasi links, which also serves guests importing older 0.2 versions.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Makes `open-at` refuse, with `access`, to open anything in a granted directory but
/// files, directories and links to them. Opening a FIFO blocks until a writer comes, in a
/// thread the task's deadline cannot stop (a host process waiting on it never exited);
/// devices and sockets are no business of a task either. The type is read by `stat`,
/// which never blocks, before the open. Grants are read-only, so a task cannot swap in a
/// link between the two; only another process on the host could.
pub(crate) fn refuse_special_files<T: WasiView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    type OpenAt = (
        Resource<fs::Descriptor>,
        fs::PathFlags,
        String,
        fs::OpenFlags,
        fs::DescriptorFlags,
    );
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store, (dir, path_flags, path, open_flags, flags): OpenAt| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let looked = Resource::new_borrow(dir.rep());
                let opened = match fs.stat_at(looked, path_flags, path.clone()).await {
                    Ok(stat) if !openable(stat.type_) => Err(fs::ErrorCode::Access),
                    _ => match fs.open_at(dir, path_flags, path, open_flags, flags).await {
                        Ok(file) => Ok(file),
                        Err(e) => Err(fs.convert_error_code(e)?),
                    },
                };
                Ok((opened,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn openable(kind: fs::DescriptorType) -> bool {
    matches!(
        kind,
        fs::DescriptorType::RegularFile
            | fs::DescriptorType::Directory
            | fs::DescriptorType::SymbolicLink
    )
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
    fn debug_output_names_variables_but_never_shows_their_values() {
        let capabilities = Capabilities::environment(vec![("KEY".into(), "s3cret".into())]);
        let shown = format!("{capabilities:?}");
        assert!(
            shown.contains("KEY") && !shown.contains("s3cret"),
            "{shown}"
        );
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
        assert!(dirs(dir.path().into()).resolve_on_host().is_ok());
        let err = |g: Grants| g.resolve_on_host().unwrap_err().to_string();
        assert!(err(dirs(file)).contains("not a directory"));
        assert!(err(dirs(dir.path().join("missing"))).contains("No such file"));
        let relative = format!("{}:data", dir.path().display());
        let refused = err(dirs(relative.into()));
        assert!(
            refused.contains("must be absolute, such as /data"),
            "{refused}"
        );
        let env = Grants {
            dirs: vec![],
            env: vec!["SANDFLOW_TEST_SURELY_UNSET".into()],
        };
        assert!(err(env).contains("no such variable"));
    }
}
