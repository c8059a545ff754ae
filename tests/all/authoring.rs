//! An author's first commands: `sandflow new` writes a crate, `sandflow build` builds and
//! checks its bundle from anywhere inside it, and each mistake is said in the author's
//! terms. (The README's walk-through, in readme.rs, runs the happy path verbatim.)

use crate::plugins::{plugins_dir, without_host_settings};
use crate::{Outcome, Scratch};
use std::path::{Path, PathBuf};

/// Lets the crate at `krate` build offline and fast: the plugins' lock file (the same
/// dependency versions, no registry update) and a target directory kept between runs,
/// `plugins/target/NAME`.
pub fn share_build_cache(krate: &Path, name: &str) {
    std::fs::copy(plugins_dir().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let shared = plugins_dir().join("target").join(name);
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, krate.join("target")).unwrap();
}

/// Runs `sandflow` in `dir`, without what the test build sets for its own compiles.
fn sandflow_in(scratch: &Scratch, dir: &Path, args: &[&str]) -> Outcome {
    let out = without_host_settings(&mut scratch.command())
        .args(args)
        .current_dir(dir)
        .env_remove("SANDFLOW_SDK")
        .output()
        .expect("running sandflow");
    Outcome::from(out)
}

fn new_plugin(scratch: &Scratch, name: &str) -> PathBuf {
    let out = sandflow_in(scratch, scratch.path(), &["new", name]);
    assert_eq!(out.code, 0, "{out:?}");
    let krate = scratch.path().join(name);
    share_build_cache(&krate, &format!("authoring-{name}"));
    krate
}

#[test]
fn new_never_overwrites_and_names_only_crates_cargo_takes() {
    let scratch = Scratch::default();
    let taken = scratch.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    sandflow_in(&scratch, scratch.path(), &["new", "taken"]).assert_bad_input("already exists");
    assert_eq!(
        std::fs::read_dir(&taken).unwrap().count(),
        1,
        "left as it was"
    );
    sandflow_in(&scratch, scratch.path(), &["new", "2fast"])
        .assert_bad_input("cannot name a crate");
    let elsewhere = scratch.path().to_str().unwrap();
    sandflow_in(&scratch, scratch.path(), &["new", "x", "--sdk", elsewhere])
        .assert_bad_input("no sandflow-sdk crate at");
    assert!(!scratch.path().join("x").exists(), "nothing written");
}

#[test]
fn build_works_from_inside_the_crate_and_says_each_mistake_in_the_author_s_terms() {
    let scratch = Scratch::default();
    let krate = new_plugin(&scratch, "flow");

    // From a directory below the crate's root.
    let built = sandflow_in(&scratch, &krate.join("src"), &["build"]);
    assert_eq!(built.code, 0, "{built:?}");
    let bundle = PathBuf::from(built.stdout.trim_end());
    assert!(
        bundle.ends_with("wasm32-wasip2/release/flow.wasm"),
        "{built:?}"
    );
    assert!(krate.join("src").join(&bundle).is_file(), "{built:?}");
    assert!(
        built
            .stderr
            .contains("workflow `flow` with 2 tasks is valid"),
        "{built:?}"
    );

    // A workflow the engine would refuse is refused now, in the author's terms.
    let lib = krate.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(source.contains(from), "the template has `{from}`");
        std::fs::write(&lib, source.replace(from, to)).unwrap();
    };
    let refused = |from: &str, to: &str, expected: &str| {
        edit(from, to);
        sandflow_in(&scratch, &krate, &["build"]).assert_bad_input(expected);
    };
    let greeting = ".task(Task::new(\"greeting\", greeting).after([\"name\"]))";
    refused(
        ".after([\"name\"])",
        ".after([\"nmae\"])",
        "task `greeting` (declared at src/lib.rs:6:15) depends on `nmae`, which is not a \
         task of this workflow",
    );
    refused(
        greeting,
        &format!("{greeting}{greeting}"),
        // The second declaration, on the same line, after the first.
        &format!(
            "task `greeting` (declared at src/lib.rs:6:{}) is declared more than once",
            15 + greeting.len()
        ),
    );
    refused(
        ".task(Task::new(\"name\", name))",
        ".task(Task::new(\"name\", name).after([\"greeting\"]))",
        "the workflow has a dependency cycle: name -> greeting -> name",
    );
    // The workflow function panics: the message and where, from the panic itself.
    refused(
        "Workflow::new(\"flow\")",
        "{ if true { panic!(\"no workflow today\") } Workflow::new(\"flow\") }",
        "could not describe its workflow: plugin panicked, and its stderr says: no workflow \
         today (at src/lib.rs:",
    );
    // No `export_workflow!`: a component, but no bundle, and what makes one.
    refused(
        "export_workflow!(workflow);",
        "",
        "`sandflow_sdk::export_workflow!(workflow)` once",
    );

    // Rust that does not compile: cargo's own messages, and what failed.
    edit("Ok(format!", "Ok(formt!");
    let broken = sandflow_in(&scratch, &krate, &["build"]);
    broken.assert_bad_input("cargo could not build");
    assert!(
        broken.stderr.contains("formt"),
        "cargo's message: {broken:?}"
    );

    // A crate that is no plugin.
    std::fs::write(&lib, &source).unwrap();
    let manifest = krate.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, toml.replace("crate-type = [\"cdylib\"]", "")).unwrap();
    sandflow_in(&scratch, &krate, &["build"]).assert_bad_input("builds no bundle");

    // Outside any crate.
    let outside = tempfile::tempdir().unwrap();
    sandflow_in(&scratch, outside.path(), &["build"]).assert_bad_input("no Cargo.toml in");
}
