//! End-to-end tests: real bundles built from `plugins/` (by `build.rs`), run by the real
//! `sandflow` binary or library. One module per area.

mod bad_bundles;
mod cache;
mod cli;
mod etl;
mod sandbox_limits;
mod scheduling;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `.wasm` of the plugin crate `name` (dashes become underscores, as cargo names them).
pub fn plugin(name: &str) -> PathBuf {
    Path::new(env!("SANDFLOW_PLUGINS")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// The `sandflow` binary, built once per test process with the profile of the tests.
fn sandflow_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        escargot::CargoBuild::new()
            .package("sandflow")
            .bin("sandflow")
            .current_release()
            .run()
            .expect("building the sandflow binary")
            .path()
            .to_owned()
    })
}

/// A test's own database and compile cache, deleted when it drops.
pub struct Scratch {
    dir: tempfile::TempDir,
}

/// What one `sandflow` invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db/sandflow.redb")
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Runs `sandflow` with this scratch space's database and cache.
    pub fn sandflow(&self, args: &[&str]) -> Outcome {
        let out = Command::new(sandflow_bin())
            .arg("--db")
            .arg(self.db())
            .arg("--cache-dir")
            .arg(self.cache())
            .args(args)
            .output()
            .expect("running sandflow");
        Outcome {
            code: out.status.code().expect("sandflow exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `bundle` with `--json` and returns the report, whatever the exit code.
    pub fn run_json(&self, bundle: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["run", bundle.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = self.sandflow(&args);
        let report = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {out:?}"));
        (out.code, report)
    }
}

/// The entry of `task` in a JSON run report.
pub fn task<'a>(report: &'a serde_json::Value, task: &str) -> &'a serde_json::Value {
    report["tasks"]
        .as_array()
        .expect("tasks is a list")
        .iter()
        .find(|t| t["name"] == task)
        .unwrap_or_else(|| panic!("no task {task} in {report}"))
}
