//! `sandflow build`: the bundle of the plugin crate the current directory is in, built for
//! wasm32-wasip2 and checked as `sandflow validate` checks it, so that a mistake in the
//! workflow (a cycle, an unknown upstream task) shows when the author builds, not when the
//! run starts.
//!
//! Cargo does the building; what it is asked for is its own machine-readable account of
//! what it built, so that the bundle is found wherever the crate's target directory is (a
//! workspace's, `CARGO_TARGET_DIR`'s), not where it usually is.

use crate::{Failed, LimitArgs};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `sandflow build` takes.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The plugin crate's Cargo.toml [default: the crate of the current directory, or of
    /// the nearest directory above it that has one]
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Limits the bundle is checked under, as `sandflow validate`'s
    #[command(flatten)]
    limits: LimitArgs,
}

/// The target bundles are built for: the WIT world the engine loads is a WASI p2 component.
const TARGET: &str = "wasm32-wasip2";

pub async fn build(args: &BuildArgs, cache: Option<&Path>) -> Result<u8, Failed> {
    let manifest = match &args.manifest_path {
        Some(path) => path.clone(),
        None => locate()?,
    };
    let built = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || cargo_build(&manifest))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
    };
    let sandbox = crate::sandbox(&args.limits.run_limits(), 1)?;
    let flow = crate::load(&sandbox, &built, &args.limits.bundle_limits(), cache).await?;
    let workflow = flow.bundle().workflow();
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| built.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| built.clone());
    eprintln!(
        "workflow `{}` with {} tasks is valid; run it with `sandflow run {}`",
        workflow.name,
        workflow.tasks.len(),
        shown.display()
    );
    println!("{}", shown.display());
    Ok(0)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The Cargo.toml of the crate the current directory is in, as Cargo finds it.
fn locate() -> Result<PathBuf, Failed> {
    let out = cargo()
        .args(["locate-project", "--message-format", "plain"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| Failed::input(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        let cwd = std::env::current_dir().unwrap_or_default();
        return Err(Failed::input(format!(
            "no Cargo.toml in {} or any directory above it: run `sandflow build` inside a \
             plugin crate (`sandflow new NAME` makes one), or pass --manifest-path",
            cwd.display()
        )));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim_end(),
    ))
}

/// Builds the crate of `manifest` for [`TARGET`] in release mode and answers its `.wasm`.
/// Cargo's own diagnostics go to stderr as they come.
fn cargo_build(manifest: &Path) -> Result<PathBuf, Failed> {
    let manifest = std::fs::canonicalize(manifest)
        .map_err(|e| Failed::input(format!("cannot read {}: {e}", manifest.display())))?;
    let mut child = cargo()
        .args(["build", "--release", "--target", TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failed::input(format!("cannot run cargo: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut bundle = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(found) = bundle_of(&line, &manifest) {
            bundle = Some(found);
        }
    }
    let status = child
        .wait()
        .map_err(|e| Failed::input(format!("cargo did not end: {e}")))?;
    if !status.success() {
        return Err(Failed::input(format!(
            "cargo could not build {} for {TARGET} (its messages are above); a missing \
             target is added with `rustup target add {TARGET}`",
            manifest.display()
        )));
    }
    bundle.ok_or_else(|| {
        Failed::input(format!(
            "{} builds no bundle: a plugin is a library with `crate-type = [\"cdylib\"]` \
             in its `[lib]` section",
            manifest.display()
        ))
    })
}

/// The `.wasm` a line of Cargo's JSON messages says the crate of `manifest` built as a
/// cdylib, if it says so.
fn bundle_of(line: &str, manifest: &Path) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    let ours = message["reason"] == "compiler-artifact"
        && message["manifest_path"].as_str().map(Path::new) == Some(manifest);
    let cdylib = message["target"]["crate_types"]
        .as_array()
        .is_some_and(|types| types.iter().any(|t| t == "cdylib"));
    if !(ours && cdylib) {
        return None;
    }
    let files = message["filenames"].as_array()?;
    files
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_the_cdylib_of_the_crate_built_not_of_its_dependencies() {
        let manifest = Path::new("/p/greet/Cargo.toml");
        let artifact = |manifest: &str, types: &str, file: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","manifest_path":"{manifest}",
                    "target":{{"crate_types":{types}}},"filenames":["{file}"]}}"#
            )
            .replace('\n', "")
        };
        let ours = artifact(
            "/p/greet/Cargo.toml",
            r#"["cdylib"]"#,
            "/t/wasm32-wasip2/release/greet.wasm",
        );
        assert_eq!(
            bundle_of(&ours, manifest),
            Some(PathBuf::from("/t/wasm32-wasip2/release/greet.wasm"))
        );
        let dependency = artifact("/sdk/Cargo.toml", r#"["cdylib"]"#, "/t/sdk.wasm");
        assert_eq!(bundle_of(&dependency, manifest), None);
        let rlib = artifact("/p/greet/Cargo.toml", r#"["lib"]"#, "/t/libgreet.rlib");
        assert_eq!(bundle_of(&rlib, manifest), None);
        assert_eq!(bundle_of(r#"{"reason":"build-finished"}"#, manifest), None);
        assert_eq!(bundle_of("not json", manifest), None);
    }
}
