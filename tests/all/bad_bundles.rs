//! Every kind of bad bundle is refused with its own message and exit code 2, before the
//! database is even created.

use crate::{Outcome, Scratch, plugin};

/// Runs `sandflow run` and `validate` on a file holding `bytes`, checks the refusal, and
/// returns what `validate` said.
fn refused(bytes: &[u8], expected: &str) -> Outcome {
    let scratch = Scratch::default();
    let bundle = scratch.path().join("bundle.wasm");
    std::fs::write(&bundle, bytes).unwrap();
    refused_file(&scratch, bundle.to_str().unwrap(), expected)
}

fn refused_file(scratch: &Scratch, bundle: &str, expected: &str) -> Outcome {
    let outcomes = ["run", "validate"].map(|command| scratch.sandflow(&[command, bundle]));
    for outcome in &outcomes {
        outcome.assert_bad_input(expected);
    }
    assert!(
        !scratch.db().exists(),
        "a refused bundle must not touch the database"
    );
    let [_, validate] = outcomes;
    validate
}

#[test]
fn empty_file() {
    refused(b"", "is empty");
}

#[test]
fn not_wasm() {
    refused(b"#!/bin/sh\necho hello\n", "is not a WebAssembly file");
}

#[test]
fn truncated_component() {
    let bytes = std::fs::read(plugin("hello")).unwrap();
    refused(
        &bytes[..bytes.len() / 2],
        "is not a valid WebAssembly component",
    );
    refused(&bytes[..6], "ends inside the header");
}

#[test]
fn core_module_instead_of_component() {
    refused(
        b"\0asm\x01\0\0\0",
        "is a core WebAssembly module, not a component",
    );
}

#[test]
fn component_of_another_world() {
    let scratch = Scratch::default();
    let bundle = plugin("wrong-world");
    refused_file(&scratch, bundle.to_str().unwrap(), "not a sandflow bundle");
}

#[test]
fn describe_that_traps() {
    let scratch = Scratch::default();
    let bundle = plugin("bad-describe");
    refused_file(
        &scratch,
        bundle.to_str().unwrap(),
        "could not describe its workflow: plugin panicked, and its stderr says: this bundle cannot describe itself",
    );
}

#[test]
fn cyclic_workflow_names_the_cycle() {
    let scratch = Scratch::default();
    let bundle = plugin("cyclic");
    refused_file(&scratch, bundle.to_str().unwrap(), "dependency cycle: ");
    let out = scratch.sandflow(&["validate", bundle.to_str().unwrap()]);
    for task in ["a", "b", "c"] {
        assert!(
            out.stderr.contains(&format!("{task} -> ")),
            "{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("start ->"), "{}", out.stderr);
}

#[test]
fn missing_file() {
    let scratch = Scratch::default();
    refused_file(
        &scratch,
        "/no/such/bundle.wasm",
        "cannot read bundle /no/such/bundle.wasm",
    );
}

#[test]
fn params_that_are_not_json() {
    let scratch = Scratch::default();
    let bundle = plugin("hello");
    let out = scratch.sandflow(&["run", bundle.to_str().unwrap(), "--params", "{oops"]);
    out.assert_bad_input("--params is not valid JSON");
    assert!(!scratch.db().exists());
}

#[test]
fn more_tasks_than_the_limit() {
    let scratch = Scratch::default();
    let etl = plugin("etl");
    let out = scratch.sandflow(&["run", etl.to_str().unwrap(), "--max-tasks", "6"]);
    out.assert_bad_input("describes 7 tasks, more than the limit of 6");
    assert!(!scratch.db().exists());
}

#[test]
fn a_memory_limit_below_the_bundles_initial_memory_blames_the_limit() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let out = scratch.sandflow(&["run", hello.to_str().unwrap(), "--memory", "64KiB"]);
    out.assert_bad_input("than the memory limit allows (raise it with --memory)");
    assert!(!scratch.db().exists());
}

/// Three memories are more than an instance may have, which no flag changes: the message
/// must not send the operator to `--memory`.
#[test]
fn a_bundle_with_more_memories_than_an_instance_may_have_is_told_which_limit() {
    let three_memories = wat::parse_str(
        "(component
           (core module $m (memory 1))
           (core instance (instantiate $m))
           (core instance (instantiate $m))
           (core instance (instantiate $m)))",
    )
    .unwrap();
    let out = refused(
        &three_memories,
        "at most 2 memories, 8 tables and 16 core instances",
    );
    assert!(!out.stderr.contains("--memory"), "{}", out.stderr);
}

/// What is not a regular file is refused before it is opened: a device such as /dev/zero
/// never ends (it grew sandflow to 24 GB), a FIFO blocks the open, a directory is no
/// bundle.
#[test]
fn what_is_not_a_regular_file_is_refused_unread() {
    let scratch = Scratch::default();
    let fifo = scratch.path().join("bundle.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    for path in [
        "/dev/zero",
        fifo.to_str().unwrap(),
        scratch.path().to_str().unwrap(),
    ] {
        refused_file(&scratch, path, "is not a regular file");
    }
}

#[test]
fn a_bundle_larger_than_the_limit_is_refused_unread() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let size = std::fs::metadata(&hello).unwrap().len();
    let limit = (size - 1).to_string();
    let out = scratch.sandflow(&["validate", hello.to_str().unwrap(), "--max-bundle", &limit]);
    out.assert_bad_input(&format!(
        "is {size} bytes, more than the limit of {limit} (raise it with --max-bundle)"
    ));
    let exact = size.to_string();
    let out = scratch.sandflow(&["validate", hello.to_str().unwrap(), "--max-bundle", &exact]);
    assert_eq!(out.code, 0, "{out:?}");
}
