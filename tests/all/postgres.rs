//! `sandflow serve` and `sandflow tenant` on a PostgreSQL database (`--store`), each test in
//! a schema of its own of the database `SANDFLOW_TEST_POSTGRES` names (by default the one
//! this project's machines run). Without a server the tests fail; they never skip.

use crate::Scratch;
use crate::serve::Server;
use serde_json::json;

#[path = "../support/postgres.rs"]
mod support;

/// A schema of the test database, made empty for one test and dropped with it; its URL
/// points the store at it.
struct Schema {
    name: String,
    url: String,
}

/// Runs `sql` on the test database.
fn admin(sql: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(support::admin(sql));
}

impl Schema {
    fn new(test: &str) -> Self {
        let name = format!("sandflow_e2e_{}_{test}", std::process::id());
        admin(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        let base = support::test_url();
        let joint = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{joint}options=-csearch_path%3D{name}");
        Self { name, url }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            admin(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

#[test]
fn a_server_on_postgres_runs_tenants_workflows_and_keeps_them_across_restarts() {
    let scratch = Scratch::default();
    let schema = Schema::new("serve");
    let added = scratch.sandflow(&["tenant", "add", "acme", "--store", &schema.url]);
    assert_eq!(added.code, 0, "{added:?}");
    let token = added.stdout.trim().to_owned();

    let server = Server::start_with(&scratch, &["--store", &schema.url]);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let id = api.start(&json!({ "bundle": hello, "params": { "name": "postgres" } }));
    let run = api.finished(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let output = api.get(&format!("/runs/{id}/tasks/greet/output"));
    assert_eq!(output.body, b"\"Hello, postgres!\"");
    // Nothing went to the database file.
    assert!(!scratch.db().exists());

    // A second server on the same database is refused, with the exit code of "try later".
    let second = scratch.sandflow(&["serve", "--listen", "127.0.0.1:0", "--store", &schema.url]);
    assert_eq!(second.code, 75, "{second:?}");
    assert!(
        second
            .stderr
            .contains("another sandflow serve uses this PostgreSQL database")
    );

    // Stopped and started again, it has the tenant, the bundle and the run.
    server.signal("-TERM");
    assert_eq!(server.wait(), Some(0));
    let server = Server::start_with(&scratch, &["--store", &schema.url]);
    let api = server.api(&token);
    let listed = api.get("/runs").json();
    assert_eq!(listed["runs"][0]["id"], id, "{listed}");
    let again = api.start(&json!({ "bundle": hello }));
    assert!(again > id);
    assert_eq!(api.finished(again)["state"], "succeeded");
    let tenants = scratch.sandflow(&["tenant", "list", "--store", &schema.url]);
    assert!(tenants.stdout.contains("acme"), "{tenants:?}");
}

#[test]
fn a_store_that_cannot_be_reached_is_said_and_its_password_is_not() {
    let scratch = Scratch::default();
    let url = "postgres://sandflow:hunter2@127.0.0.1:1/none";
    let out = scratch.sandflow(&["tenant", "list", "--store", url]);
    out.assert_bad_input(
        "cannot use the PostgreSQL database at postgres://sandflow@127.0.0.1:1/none",
    );
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
}
