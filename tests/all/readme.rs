//! The README's walk-through for plugin authors, taken verbatim: its shell commands make,
//! test, build and run a crate outside this repository's workspaces with `sandflow` on the
//! `PATH`, as a reader would, and the `Cargo.toml` and `lib.rs` it shows are the ones
//! `sandflow new` wrote.

use crate::authoring::share_build_cache;
use crate::plugins::without_host_settings;
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
    let [commands] = &blocks(readme, heading, "sh")[..] else {
        panic!("expected one block of commands in `{heading}`");
    };
    let [manifest] = &blocks(readme, heading, "toml")[..] else {
        panic!("expected one Cargo.toml in `{heading}`");
    };
    // The first Rust block is the lib.rs `sandflow new` writes; the others are tests of
    // plugins/etl, as they are there.
    let [source, etl_tests @ ..] = &blocks(readme, heading, "rust")[..] else {
        panic!("expected a lib.rs in `{heading}`");
    };
    let etl =
        std::fs::read_to_string(crate::plugins::plugins_dir().join("etl/src/lib.rs")).unwrap();
    for test in etl_tests {
        let indented: String = test.lines().map(|line| format!("    {line}\n")).collect();
        let indented = indented.replace("    \n", "\n");
        assert!(
            etl.contains(&indented),
            "plugins/etl has the README's\n{test}"
        );
    }
    let (first, rest) = commands.split_once('\n').unwrap();
    assert_eq!(
        first, "sandflow new greet",
        "the walk-through starts a crate"
    );

    let scratch = Scratch::default();
    let bin_dir = sandflow_bin().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |script: &str, dir: &Path| {
        let out = without_host_settings(&mut Command::new("bash"))
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("PATH", &path)
            .env("SANDFLOW_CACHE_DIR", scratch.cache())
            .env_remove("SANDFLOW_DB")
            .env_remove("SANDFLOW_SDK")
            .output()
            .expect("running bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the README's commands failed:\n{stdout}\n{stderr}"
        );
        stdout
    };
    let created = bash(first, scratch.path());
    assert!(
        created.contains("cargo test"),
        "it says what to do next:\n{created}"
    );

    let krate = scratch.path().join("greet");
    let sdk = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"));
    let written = |file: &str| std::fs::read_to_string(krate.join(file)).unwrap();
    let written_manifest = written("Cargo.toml");
    let sdk = sdk.unwrap();
    let written_manifest = written_manifest.replace(sdk.to_str().unwrap(), "/path/to/sandflow/sdk");
    assert_eq!(
        &written_manifest, manifest,
        "the README shows the Cargo.toml written"
    );
    assert_eq!(
        &written("src/lib.rs"),
        source,
        "the README shows the lib.rs written"
    );

    share_build_cache(&krate, "readme-greet");

    let stdout = bash(rest, scratch.path());
    assert!(
        stdout.contains("target/wasm32-wasip2/release/greet.wasm\n"),
        "`sandflow build` prints the bundle's path:\n{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("\"Hello, Ada!\""),
        "the last command should print the greeting:\n{stdout}"
    );
    assert!(krate.join("greet.redb").is_file(), "{stdout}");
}
