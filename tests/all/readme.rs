//! The README's walk-through for plugin authors, taken verbatim: its `Cargo.toml` and
//! `lib.rs` become a crate of their own outside this repository's workspaces, and its shell
//! commands build and run it with `sandflow` on the `PATH`, as a reader would.

use crate::plugins::{plugins_dir, without_host_settings};
use crate::{Scratch, sandflow_bin};
use std::path::Path;
use std::process::Command;

/// The fenced blocks of `language` in the README section that starts with `heading`.
fn blocks(readme: &str, heading: &str, language: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no `{heading}`"));
    let section = &readme[start..];
    let section = &section[..section[heading.len()..]
        .find("\n## ")
        .map_or(section.len(), |end| end + heading.len())];
    let fence = format!("```{language}\n");
    section
        .match_indices(&fence)
        .map(|(at, _)| {
            let body = &section[at + fence.len()..];
            body[..body.find("```").expect("a closed block")].to_owned()
        })
        .collect()
}

#[test]
fn the_first_plugin_walk_through_builds_and_runs_as_written() {
    let readme = include_str!("../../README.md");
    let heading = "## Write your first plugin";
    let [manifest] = &blocks(readme, heading, "toml")[..] else {
        panic!("expected one Cargo.toml in `{heading}`");
    };
    let [source] = &blocks(readme, heading, "rust")[..] else {
        panic!("expected one lib.rs in `{heading}`");
    };
    let [commands] = &blocks(readme, heading, "sh")[..] else {
        panic!("expected one block of commands in `{heading}`");
    };

    let scratch = Scratch::default();
    let krate = scratch.path().join("greet");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let manifest = manifest.replace("/path/to/sandflow/sdk", sdk.to_str().unwrap());
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(krate.join("src/lib.rs"), source).unwrap();
    // The plugins' lock file pins the same dependency versions, so the build needs no
    // registry update; their target directory keeps the compiled dependencies between runs.
    std::fs::copy(plugins_dir().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let shared_target = plugins_dir().join("target/readme-greet");
    std::fs::create_dir_all(&shared_target).unwrap();
    std::os::unix::fs::symlink(&shared_target, krate.join("target")).unwrap();

    let bin_dir = sandflow_bin().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = without_host_settings(&mut Command::new("bash"))
        .args(["-euo", "pipefail", "-c", commands])
        .current_dir(&krate)
        .env("PATH", path)
        .env("SANDFLOW_CACHE_DIR", scratch.cache())
        .env_remove("SANDFLOW_DB")
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README's commands failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.trim_end().ends_with("\"Hello, Ada!\""),
        "the last command should print the greeting:\n{stdout}"
    );
    assert!(krate.join("greet.redb").is_file(), "{stdout}");
}
