//! Builds the plugins in `plugins/` for the end-to-end tests and the benchmarks, which
//! include this file as a module of their own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `.wasm` of the plugin crate `name` (dashes become underscores, as cargo names them).
pub fn plugin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_plugins)
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds every plugin in `plugins/` for wasm32-wasip2, once per test process. Cargo makes
/// this a no-op when nothing changed, so every test runs bundles built from this checkout.
fn build_plugins() -> PathBuf {
    let plugins = plugins_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2"]);
    without_host_settings(&mut build);
    let status = build.status().expect("cannot run cargo to build plugins/");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed (is the target installed? \
         `rustup target add wasm32-wasip2`)"
    );
    plugins.join("target/wasm32-wasip2/release")
}

/// The plugin workspace, `plugins/` in the repository.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// Clears what the test build sets for the host, so that a plugin build started from it
/// gets its own target and flags.
pub fn without_host_settings(command: &mut Command) -> &mut Command {
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}
