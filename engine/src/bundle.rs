//! Loading a bundle: read the file, make sure it is a component of the `sandflow:plugin`
//! world, pre-initialise and compile it (or load the compiled artifact from the cache), link
//! it, and ask it to describe its workflow.
//!
//! Everything here happens before a run is created, so a bad bundle is refused without
//! writing anything to the database.

use crate::contain::contain_async;
use crate::sandbox::{RunLimits, Sandbox, SandboxError};
use crate::snapshot::{self, NotSnapshotted};
use crate::state::Failure;
use crate::workflow::WorkflowDef;
use crate::world::BundlePre;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

/// Why a file is not a bundle sandflow can run. Each message names the file and, where
/// there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read bundle {}: {source}", path.display())]
    Read {
        /// The bundle file, as given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The path is a directory, a FIFO or a device.
    #[error("{} is not a regular file; a bundle is a `.wasm` file", path.display())]
    NotAFile {
        /// The bundle file, as given.
        path: PathBuf,
    },
    /// The file is larger than `BundleLimits::bytes`.
    #[error(
        "bundle {} is {size} bytes, more than the limit of {limit} (raise it with --max-bundle)",
        path.display()
    )]
    TooLarge {
        /// The bundle file, as given.
        path: PathBuf,
        /// Its size, in bytes.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The file is empty.
    #[error("bundle {} is empty", path.display())]
    Empty {
        /// The bundle file, as given.
        path: PathBuf,
    },
    /// The file does not start with WebAssembly's magic number.
    #[error("{} is not a WebAssembly file (it lacks the `\\0asm` header)", path.display())]
    NotWasm {
        /// The bundle file, as given.
        path: PathBuf,
    },
    /// A core module, where a component is needed.
    #[error(
        "{} is a core WebAssembly module, not a component: build the plugin with \
         `cargo build --target wasm32-wasip2`",
        path.display()
    )]
    CoreModule {
        /// The bundle file, as given.
        path: PathBuf,
    },
    /// wasmtime cannot compile the component.
    #[error("{} is not a valid WebAssembly component (truncated or corrupt?): {reason}", path.display())]
    Invalid {
        /// The bundle file, as given.
        path: PathBuf,
        /// wasmtime's own words.
        reason: String,
    },
    /// A memory starts larger than the sandbox's memory slots.
    #[error(
        "{} needs more memory from the start than the memory limit allows (raise it with \
         --memory): {reason}",
        path.display()
    )]
    ExceedsMemory {
        /// The bundle file, as given.
        path: PathBuf,
        /// wasmtime's own words.
        reason: String,
    },
    /// More memories, tables or core instances than a pool slot holds.
    #[error(
        "{} has more memories, tables or core module instances than a sandflow task may have \
         (at most {} memories, {} tables and {} core instances in one component, whatever \
         the flags): {reason}",
        path.display(),
        crate::sandbox::MEMORIES_PER_COMPONENT,
        crate::sandbox::TABLES_PER_COMPONENT,
        crate::sandbox::CORE_INSTANCES_PER_COMPONENT
    )]
    ExceedsShape {
        /// The bundle file, as given.
        path: PathBuf,
        /// wasmtime's own words.
        reason: String,
    },
    /// The component does not implement sandflow's world.
    #[error(
        "{} is a component, but not a sandflow bundle: {reason}; a bundle implements the \
         `sandflow:plugin/bundle` world, which a plugin crate exports by calling \
         `sandflow_sdk::export_workflow!(workflow)` once, at its root",
        path.display()
    )]
    WrongWorld {
        /// The bundle file, as given.
        path: PathBuf,
        /// wasmtime's own words.
        reason: String,
    },
    /// Its `describe` failed (trapped, hit a limit, returned an error).
    #[error("bundle {} could not describe its workflow: {failure}", path.display())]
    Describe {
        /// The bundle file, as given.
        path: PathBuf,
        /// Why `describe` failed.
        failure: Failure,
    },
    /// The limits to describe it under do not fit the sandbox.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The workflow declares more tasks than `BundleLimits::tasks`.
    #[error(
        "bundle {} describes {tasks} tasks, more than the limit of {limit} (raise it with \
         --max-tasks)",
        path.display()
    )]
    TooManyTasks {
        /// The bundle file, as given.
        path: PathBuf,
        /// How many tasks it declares.
        tasks: usize,
        /// The limit it exceeds.
        limit: usize,
    },
}

/// What a bundle may be, checked as it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLimits {
    /// Size of the bundle, in bytes; a larger file is refused before it is read.
    ///
    /// ## Default
    /// 256 MiB.
    pub bytes: u64,
    /// Tasks its workflow may declare.
    ///
    /// ## Default
    /// 100,000.
    pub tasks: usize,
    /// What its `describe` runs under, once when the bundle is first compiled (to snapshot
    /// it) and once at each load.
    pub describe: RunLimits,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            bytes: 256 << 20,
            tasks: 100_000,
            describe: RunLimits::default(),
        }
    }
}

/// A loaded bundle: compiled, linked, and described. Cheap to share across tasks.
pub struct Bundle {
    path: PathBuf,
    hash: String,
    workflow: WorkflowDef,
    pre: BundlePre,
    from_cache: bool,
}

impl Bundle {
    /// Loads the bundle at `path`. With `cache` set, compiled artifacts are kept in that
    /// directory, keyed by the bundle's hash and the engine configuration, so that the next
    /// load skips compilation. The directory must be writable only by the operator: its
    /// files are native code that is loaded without validation.
    pub async fn load(
        sandbox: &Sandbox,
        path: &Path,
        limits: &BundleLimits,
        cache: Option<&Path>,
    ) -> Result<Self, BundleError> {
        let bytes = read_bounded(path, limits.bytes)?;
        Self::from_bytes(sandbox, path, &bytes, limits, cache).await
    }

    /// Loads a bundle that is already in memory (an upload, a fuzzer's input) as [`load`]
    /// would; `path` names it in messages and in the runs it starts.
    ///
    /// [`load`]: Self::load
    pub async fn from_bytes(
        sandbox: &Sandbox,
        path: &Path,
        bytes: &[u8],
        limits: &BundleLimits,
        cache: Option<&Path>,
    ) -> Result<Self, BundleError> {
        sandbox.check(&limits.describe)?;
        let limit = limits.bytes;
        if bytes.len() as u64 > limit {
            return Err(BundleError::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
                limit,
            });
        }
        check_header(path, bytes)?;
        let hash = content_hash(bytes);

        let (compiled, from_cache) = match cache {
            Some(dir) => compile_cached(sandbox, dir, &hash, path, bytes, limits).await?,
            None => (compile_snapshot(sandbox, path, bytes, limits).await?, false),
        };
        let pre = sandbox
            .prepare(&compiled.component)
            .map_err(|e| BundleError::WrongWorld {
                path: path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        // A snapshot's workflow is what its `describe` returned when it was taken. Asking
        // the snapshot again would cost more than time: a pooled slot keeps the pages an
        // instance wrote, and a `describe` writes the whole workflow, which then crowds
        // the attempts' own pages out of the slot's in-place reset (see `sandbox`).
        let workflow = match compiled.workflow {
            Some(workflow) => workflow,
            None => sandbox
                .describe(&pre, &limits.describe)
                .await
                .map_err(|failure| BundleError::Describe {
                    path: path.to_owned(),
                    failure,
                })?,
        };
        let limit = limits.tasks;
        if workflow.tasks.len() > limit {
            return Err(BundleError::TooManyTasks {
                path: path.to_owned(),
                tasks: workflow.tasks.len(),
                limit,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            hash,
            workflow,
            pre,
            from_cache,
        })
    }

    /// The path the bundle was loaded from (or named by).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the bundle file, hex-encoded: what a run records to say which code ran.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The workflow its `describe` returned, not yet validated (see [`crate::dag`]).
    pub fn workflow(&self) -> &WorkflowDef {
        &self.workflow
    }

    /// The same task bodies under another workflow than the one the bundle describes: for
    /// hosts that generate workflows outside the bundle, and for benchmarks of many shapes
    /// and sizes. The bundle must be able to run every task `workflow` names; one it cannot
    /// run fails as a task, not the engine. The caller vouches for the workflow's size.
    pub fn with_workflow(self, workflow: WorkflowDef) -> Self {
        Self { workflow, ..self }
    }

    /// Whether the compiled artifact came from the cache rather than a fresh compilation.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    pub(crate) fn pre(&self) -> &BundlePre {
        &self.pre
    }
}

/// Reads the bundle file, refusing what is not a regular file (a FIFO would block the
/// open, a device like /dev/zero never ends) and, by its size, more than `limit` bytes.
/// Whatever the size says, no more than `limit + 1` bytes are read; a file that grew past
/// the limit meanwhile is refused by `from_bytes`, which checks what was read.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let read_error = |source| BundleError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(BundleError::NotAFile {
            path: path.to_owned(),
        });
    }
    if metadata.len() > limit {
        return Err(BundleError::TooLarge {
            path: path.to_owned(),
            size: metadata.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    let file = std::fs::File::open(path).map_err(read_error)?;
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}

/// Tells the common wrong files apart before wasmtime sees them, for clearer messages.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_LAYER: [u8; 2] = [0, 0];
    let path = path.to_owned();
    if bytes.is_empty() {
        return Err(BundleError::Empty { path });
    }
    if !bytes.starts_with(&MAGIC[..bytes.len().min(4)]) {
        return Err(BundleError::NotWasm { path });
    }
    if bytes.len() < 8 {
        return Err(BundleError::Invalid {
            path,
            reason: "the file ends inside the header".into(),
        });
    }
    if bytes[6..8] == CORE_LAYER {
        return Err(BundleError::CoreModule { path });
    }
    Ok(())
}

/// Compiles `bytes`. The pooling allocator also checks, at compile time, that the
/// component's memories, tables and instances fit its slots; that is a limit, not a broken
/// file, so it is told apart, and only the initial size of a memory is one the operator can
/// raise (by wasmtime's wording: should that change, the error reads as an invalid
/// component, which is still an exit code 2).
async fn compile(sandbox: &Sandbox, path: &Path, bytes: &[u8]) -> Result<Component, BundleError> {
    sandbox.compile(bytes.to_vec()).await.map_err(|e| {
        let path = path.to_owned();
        let reason = format!("{e:#}");
        if reason.contains("memory has a minimum byte size") {
            BundleError::ExceedsMemory { path, reason }
        } else if reason.contains("pooling allocator") {
            BundleError::ExceedsShape { path, reason }
        } else {
            BundleError::Invalid { path, reason }
        }
    })
}

/// `bytes` pre-initialised by their own `describe` (see [`crate::snapshot`]) and compiled;
/// or, when that cannot be done, `bytes` compiled as they are, which also reports what is
/// wrong with a bad bundle.
///
/// The snapshot runs on a blocking thread: wizer parses and rewrites the whole component
/// twice (instrumenting it, then writing the snapshot), which for a large bundle is as
/// much work as compiling it and would stall the async thread other runs share.
async fn compile_snapshot(
    sandbox: &Sandbox,
    path: &Path,
    bytes: &[u8],
    limits: &BundleLimits,
) -> Result<Compiled, BundleError> {
    let (owned, input, describe) = (sandbox.clone(), bytes.to_vec(), limits.describe.clone());
    let runtime = tokio::runtime::Handle::current();
    let snapshot = tokio::task::spawn_blocking(move || {
        runtime.block_on(contain_async(snapshot::snapshot(&owned, &input, &describe)))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let why_not = match snapshot {
        Ok(Ok(snapshot)) => match compile(sandbox, path, &snapshot.bytes).await {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    workflow: Some(snapshot.workflow),
                });
            }
            Err(e) => e.to_string(),
        },
        Ok(Err(NotSnapshotted::Describe(failure))) => {
            return Err(BundleError::Describe {
                path: path.to_owned(),
                failure,
            });
        }
        Ok(Err(NotSnapshotted::Unsupported(e))) => format!("{e:#}"),
        Err(panic) => format!("the snapshot panicked: {panic}"),
    };
    tracing::info!(
        bundle = %path.display(),
        "running without a snapshot, so every attempt runs `describe`'s code again: {why_not}"
    );
    Ok(Compiled {
        component: compile(sandbox, path, bytes).await?,
        workflow: None,
    })
}

/// A compiled bundle, with its workflow when that is known without asking the bundle.
struct Compiled {
    component: Component,
    /// What `describe` returned when the bundle was snapshotted; `None` for a bundle that
    /// runs without a snapshot, which is described when it loads.
    workflow: Option<WorkflowDef>,
}

/// Loads the artifact for `hash` from `dir`, or compiles and stores it. A cache that cannot
/// be read or written costs a compilation and a warning, never the run.
async fn compile_cached(
    sandbox: &Sandbox,
    dir: &Path,
    hash: &str,
    path: &Path,
    bytes: &[u8],
    limits: &BundleLimits,
) -> Result<(Compiled, bool), BundleError> {
    let engine = sandbox.engine();
    let mut config_hash = std::hash::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut config_hash);
    // Artifacts are snapshots (see `compile_snapshot`); those of older sandflows were not.
    "pre-initialised by describe".hash(&mut config_hash);
    let artifact = dir.join(format!("{hash}-{:016x}.cwasm", config_hash.finish()));
    // A snapshot's workflow, beside it (see `store_compiled`). Without one (a bundle that is
    // not snapshotted, or a file lost), the bundle is described as it loads.
    let described = artifact.with_extension("workflow.json");

    if artifact.is_file() {
        // SAFETY: the artifact was written by `Component::serialize` of an engine with the
        // same compatibility hash, into the operator's own cache directory (see `load`).
        match unsafe { Component::deserialize_file(engine, &artifact) } {
            Ok(component) => {
                let workflow = std::fs::read(&described)
                    .ok()
                    .and_then(|json| serde_json::from_slice(&json).ok());
                return Ok((
                    Compiled {
                        component,
                        workflow,
                    },
                    true,
                ));
            }
            Err(e) => tracing::warn!(
                artifact = %artifact.display(),
                "ignoring unreadable compiled artifact: {e:#}"
            ),
        }
    }
    let compiled = compile_snapshot(sandbox, path, bytes, limits).await?;
    if let Err(e) = store_compiled(&compiled, dir, &artifact, &described) {
        tracing::warn!(dir = %dir.display(), "cannot cache the compiled bundle: {e}");
    }
    Ok((compiled, false))
}

/// Caches `compiled`: its workflow (if it has one) at `described` first, then the artifact,
/// so that an artifact found in the cache never lacks the workflow it was snapshotted with.
fn store_compiled(
    compiled: &Compiled,
    dir: &Path,
    artifact: &Path,
    described: &Path,
) -> std::io::Result<()> {
    if let Some(workflow) = &compiled.workflow {
        let json = serde_json::to_vec(workflow).map_err(std::io::Error::other)?;
        store_atomically(dir, described, &json)?;
    }
    let bytes = compiled
        .component
        .serialize()
        .map_err(std::io::Error::other)?;
    store_atomically(dir, artifact, &bytes)
}

/// Writes to a temporary file first, so a crash never leaves a half-written file under the
/// final name.
fn store_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A bundle's id: the SHA-256 of its bytes, hex-encoded, as [`Bundle::hash`] gives it.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<(), BundleError> {
        check_header(Path::new("b.wasm"), bytes)
    }

    #[test]
    fn header_check_tells_wrong_files_apart() {
        assert!(matches!(header(b""), Err(BundleError::Empty { .. })));
        assert!(matches!(header(b"hello"), Err(BundleError::NotWasm { .. })));
        assert!(matches!(header(b"\0as"), Err(BundleError::Invalid { .. })));
        assert!(matches!(
            header(b"\0asm\x01\0\0\0"),
            Err(BundleError::CoreModule { .. })
        ));
        assert!(header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
