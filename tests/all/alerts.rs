//! Alerts on the real server, posted to a webhook receiver on loopback that fails at
//! first and then recovers: each failure reaches it once, signed, with what an on-call
//! person needs, however often delivery was retried and the server restarted.

use crate::Scratch;
use crate::loopback::Receiver;
use crate::serve::{Server, tenant};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The alerts `receiver` answered 200, by their key, once `done` holds of them.
fn wait_for_alerts(
    receiver: &Receiver,
    done: impl Fn(&BTreeMap<String, Vec<Value>>) -> bool,
) -> BTreeMap<String, Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut delivered = BTreeMap::<String, Vec<Value>>::new();
        for received in receiver.got().iter().filter(|r| r.answered == 200) {
            let body: Value = serde_json::from_slice(&received.body).unwrap();
            let key = body["key"].as_str().unwrap().to_owned();
            delivered.entry(key).or_default().push(body);
        }
        if done(&delivered) {
            return delivered;
        }
        assert!(Instant::now() < deadline, "{delivered:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hmac_hex(key: &str, data: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn each_failure_reaches_the_webhook_once_signed_through_failures_and_restarts() {
    let scratch = Scratch::default();
    // Hostile's tasks ask for more fuel and time than a tenant gets by default.
    let quotas = ["--fuel", "100000000000", "--timeout", "5s"];
    let token = tenant(&scratch, "red", &quotas);
    let receiver = Receiver::start(3);
    let url = format!("{}/hook", receiver.base);
    let start = || Server::start_with(&scratch, &["--private-webhooks"]);
    let server = start();
    let api = server.api(&token);
    let secret = api.request("PUT", "/secrets/HOOK_KEY", Some(br#"{"value":"k3y"}"#));
    assert_eq!(secret.status, 201, "{secret:?}");
    let webhook = json!({ "url": url, "signing_secret": "HOOK_KEY" });
    let set = api.request(
        "PUT",
        "/alerts/webhook",
        Some(webhook.to_string().as_bytes()),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let unsigned = json!({ "url": url, "signing_secret": "NONE" });
    api.request(
        "PUT",
        "/alerts/webhook",
        Some(unsigned.to_string().as_bytes()),
    )
    .assert_error(422, "invalid_webhook");

    // A run whose tasks fail in every way: an alert per task, one for the run.
    let hostile = api.upload("hostile");
    let run = api.start(&json!({ "bundle": hostile }));
    let detail = api.finished(run);
    assert_eq!(detail["state"], "failed");
    let failed: Vec<&str> = detail["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "failed")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // More than the ten tasks of a run that raise alerts of their own.
    assert!(failed.len() > 10, "{detail}");
    let expected = 10 + 1;
    let delivered = wait_for_alerts(&receiver, |d| d.len() == expected);
    let run_key = format!("run:{run}@{}", detail["finished_ms"]);
    let run_alert = &delivered[&run_key][0];
    assert_eq!(run_alert["alert"], "run_failed");
    assert_eq!(run_alert["workflow"], "hostile");
    assert_eq!(
        run_alert["link"],
        format!("{}/api/v1/runs/{run}", server.url)
    );
    assert_eq!(
        run_alert["failed_tasks"].as_array().unwrap().len(),
        failed.len()
    );
    assert_eq!(run_alert["failed_task_count"], failed.len());
    let tasks: Vec<&Value> = delivered
        .values()
        .map(|bodies| &bodies[0])
        .filter(|b| b["alert"] == "task_failed")
        .collect();
    assert_eq!(tasks.len(), 10, "{delivered:#?}");
    for task in tasks {
        let name = task["task"].as_str().unwrap();
        let record = detail["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap();
        assert_eq!(task["cause"], record["error"]["kind"], "{task} {record}");
        assert_eq!(task["attempts"], record["attempts"], "{task} {record}");
        assert_eq!(task["run"], run);
    }

    // Each was signed with the tenant's secret, over its timestamp and body.
    for received in receiver.got() {
        let signature = &received.headers["x-sandflow-signature"];
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let body = String::from_utf8(received.body).unwrap();
        assert_eq!(*v1, hmac_hex("k3y", &format!("{t}.{body}")));
    }

    // The three the receiver refused were tried again; the API says how each went, once
    // the server has recorded the answer to the last post, which the receiver has seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = api.get("/alerts?limit=1000").json();
        let alerts = listed["alerts"].as_array().unwrap();
        if alerts.iter().all(|a| a["delivery"]["state"] == "delivered") {
            break listed;
        }
        assert!(Instant::now() < deadline, "{listed}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let alerts = listed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), expected);
    let retried = alerts.iter().filter(|a| a["attempts"] == 2).count();
    assert_eq!(retried, 3, "{listed}");
    assert_eq!(listed["webhook"]["url"], url.as_str());
    let cli = scratch.sandflow(&["alerts", "--server", &server.url, "--token", &token]);
    assert_eq!(cli.code, 0, "{cli:?}");
    assert!(
        cli.stdout.contains(&url) && cli.stdout.contains("run_failed"),
        "{cli:?}"
    );

    // Killed and restarted: nothing is raised or posted again.
    drop(server);
    let server = start();
    std::thread::sleep(Duration::from_millis(1_500));
    let again = wait_for_alerts(&receiver, |_| true);
    assert!(again.values().all(|bodies| bodies.len() == 1), "{again:#?}");
    assert_eq!(again.len(), expected);

    // A run past its workflow's SLA raises an alert while it is in flight.
    let api = server.api(&token);
    let lattice = api.upload("lattice");
    let sla = api.request("PUT", "/policies/lattice", Some(br#"{"sla_ms": 300}"#));
    assert_eq!(sla.status, 200, "{sla:?}");
    let slow = api.start(&json!({ "bundle": lattice, "params": { "work": 100_000_000 } }));
    let sla_key = format!("sla:{slow}");
    let delivered = wait_for_alerts(&receiver, |d| d.contains_key(&sla_key));
    assert_eq!(delivered[&sla_key][0]["alert"], "sla_missed");
    assert_eq!(delivered[&sla_key][0]["sla_ms"], 300);
    let cancelled = api.post(&format!("/runs/{slow}/cancel"), &json!({}));
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    api.finished(slow);

    // Alerts are kept as long as their runs: deleting a run deletes its own.
    let about = |run: u64| {
        let listed = api.get("/alerts?limit=1000").json();
        let alerts = listed["alerts"].as_array().unwrap().clone();
        alerts.into_iter().filter(move |a| a["run"] == run).count()
    };
    assert_eq!(about(slow), 1);
    assert_eq!(
        api.request("DELETE", &format!("/runs/{slow}"), None).status,
        204
    );
    assert_eq!(about(slow), 0);
    assert_eq!(
        api.get("/alerts?limit=1000").json()["alerts"]
            .as_array()
            .unwrap()
            .len(),
        expected,
        "the other runs' stay"
    );
}

#[test]
fn a_webhook_at_a_private_address_is_refused_unless_the_operator_allows_it() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.com/hook",
    ] {
        let body = json!({ "url": url }).to_string();
        let refused = api.request("PUT", "/alerts/webhook", Some(body.as_bytes()));
        refused.assert_error(422, "invalid_webhook");
    }
    assert_eq!(api.get("/alerts").json()["webhook"], Value::Null);
    api.request("DELETE", "/alerts/webhook", None)
        .assert_error(404, "not_found");
}
