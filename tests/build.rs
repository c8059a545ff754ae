//! Builds the plugins in `plugins/` for wasm32-wasip2 and tells the tests where they are
//! (`SANDFLOW_PLUGINS`), so that every test runs real bundles built from this checkout.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("plugins");
    for watched in ["plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2"]);
    // The outer build's settings are for the host; the plugin workspace has its own.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .expect("cannot run cargo to build the test plugins");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed (is the target installed? \
         `rustup target add wasm32-wasip2`)"
    );
    println!(
        "cargo:rustc-env=SANDFLOW_PLUGINS={}",
        plugins
            .join("target/wasm32-wasip2/release")
            .canonicalize()
            .expect("the plugin build produced its output directory")
            .display()
    );
}
