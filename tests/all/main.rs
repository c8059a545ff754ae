//! End-to-end tests: real bundles built from `plugins/` for wasm32-wasip2, run by the real
//! `sandflow` binary or library. One module per area. They are the `all` test target of the
//! command-line package (see cli/Cargo.toml): `cargo test --workspace` runs them.

mod alerts;
mod authoring;
mod bad_bundles;
mod branches;
mod cache;
mod cli;
mod compat;
mod deterministic;
mod engine;
mod etl;
mod held;
mod history;
mod logs;
mod loopback;
mod mapped;
mod mutations;
mod observability;
mod outages;
mod postgres;
mod readme;
mod resume;
mod retry;
mod sandbox_limits;
mod scheduling;
mod serve;
mod skips;
mod triggers;

mod snapshot;

#[path = "../support/faults.rs"]
mod faults;
#[path = "../support/plugins.rs"]
mod plugins;

pub use plugins::plugin;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Sends `signal` (`-TERM`, `-KILL`, `-STOP`, …) to `child`, as `kill` does.
pub fn signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {}", child.id());
}

pub fn sandflow_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sandflow"))
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

impl From<std::process::Output> for Outcome {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().expect("sandflow exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
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
        self.sandflow_with_db(&self.db(), args)
    }

    /// Runs `sandflow` with the database at `db` and this scratch space's cache.
    pub fn sandflow_with_db(&self, db: &Path, args: &[&str]) -> Outcome {
        self.invoke(db, args, &[])
    }

    /// Runs `sandflow` with extra environment variables.
    pub fn sandflow_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        self.invoke(&self.db(), args, env)
    }

    /// `sandflow` with the database at `db` and this scratch space's cache, given as the
    /// environment gives them: a command heeds them where it takes `--db` and `--cache-dir`.
    pub fn command_with_db(&self, db: &Path) -> Command {
        let mut command = Command::new(sandflow_bin());
        command
            .env("SANDFLOW_DB", db)
            .env("SANDFLOW_CACHE_DIR", self.cache());
        command
    }

    /// `sandflow` with this scratch space's database and cache.
    pub fn command(&self) -> Command {
        self.command_with_db(&self.db())
    }

    fn invoke(&self, db: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let out = self
            .command_with_db(db)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("running sandflow");
        Outcome::from(out)
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

impl Outcome {
    /// Asserts the refusal of bad input: exit code 2, a message containing `expected`, and
    /// no panic of the engine itself ("thread '…' panicked at"), whatever a plugin did.
    pub fn assert_bad_input(&self, expected: &str) {
        assert_eq!(self.code, 2, "{self:?}");
        assert!(
            self.stderr.contains(expected),
            "expected `{expected}` in: {}",
            self.stderr
        );
        assert!(!self.stderr.contains("' panicked at"), "{}", self.stderr);
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
