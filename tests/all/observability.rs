//! What an operator watches: the real server's Prometheus metrics that move as tasks run,
//! its log as JSON lines that say which run, task and attempt each is about, and runs
//! exported as OpenTelemetry traces to a collector on loopback.

use crate::Scratch;
use crate::loopback::Receiver;
use crate::serve::{Server, tenant};
use serde_json::{Value, json};

/// The value of the sample of `name` whose labels include every one of `labels`; 0 when
/// there is none yet.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_move_as_tasks_run_and_only_the_operator_reads_them() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start_with(&scratch, &["--admin-token", "operator-secret"]);
    let scrape = |token: &str| {
        let mut answer = ureq::get(format!("{}/metrics", server.url))
            .header("Authorization", format!("Bearer {token}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.body_mut().read_to_string().unwrap())
    };
    assert_eq!(scrape(&token).0, 401, "a tenant's token does not read them");
    let (status, before) = scrape("operator-secret");
    assert_eq!(status, 200);

    let api = server.api(&token);
    let bundle = api.upload("deterministic");
    let run = api.start(&json!({ "bundle": bundle }));
    assert_eq!(api.finished(run)["state"], "succeeded");
    let (_, after) = scrape("operator-secret");

    let red = [("tenant", "red"), ("workflow", "deterministic")];
    let attempts = |text: &str, outcome: &str| {
        let labels = [red[0], red[1], ("outcome", outcome)];
        sample(text, "sandflow_task_attempts_total", &labels)
    };
    // `observe` succeeds once; `retried` fails its first attempt, then succeeds.
    assert_eq!(
        attempts(&after, "success") - attempts(&before, "success"),
        2.0,
        "{after}"
    );
    assert_eq!(attempts(&after, "retryable"), 1.0, "{after}");
    let durations = sample(&after, "sandflow_task_duration_seconds_count", &red);
    assert_eq!(durations, 3.0, "one observation per attempt: {after}");
    assert!(sample(&after, "sandflow_task_fuel_total", &red) > 0.0);
    assert_eq!(
        sample(
            &after,
            "sandflow_queue_wait_seconds_count",
            &[("tenant", "red")]
        ),
        3.0
    );
    assert!(sample(&after, "sandflow_instantiation_seconds_count", &[]) >= 3.0);
    let started = [("tenant", "red"), ("trigger", "manual")];
    assert_eq!(sample(&after, "sandflow_runs_started_total", &started), 1.0);
    let ended = [red[0], red[1], ("state", "succeeded")];
    assert_eq!(sample(&after, "sandflow_runs_ended_total", &ended), 1.0);
    // Nothing is left waiting or running once the run ended.
    for gauge in ["sandflow_tasks_pending", "sandflow_tasks_running"] {
        assert_eq!(sample(&after, gauge, &[("tenant", "red")]), 0.0, "{gauge}");
    }
}

#[test]
fn json_logs_say_which_tenant_run_task_and_attempt_each_line_is_about() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let log = scratch.path().join("server.log");
    let server = Server::start_logging(&scratch, &["--log-format", "json"], &log, "info");
    let api = server.api(&token);
    let bundle = api.upload("hello");
    let run = api.start(&json!({ "bundle": bundle, "params": { "name": "logs" } }));
    assert_eq!(api.finished(run)["state"], "succeeded");
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string())
    );
    // The task's own line, with everything that places it.
    let greeting = lines
        .iter()
        .find(|l| l["target"] == "sandflow::plugin")
        .unwrap_or_else(|| panic!("no line of the task's: {text}"));
    assert_eq!(greeting["message"], format!("greeting logs in run {run}"));
    assert_eq!(greeting["level"], "INFO");
    assert_eq!(
        (
            &greeting["run_id"],
            &greeting["tenant"],
            &greeting["workflow"]
        ),
        (&json!(run), &json!("red"), &json!("hello"))
    );
    assert_eq!(
        (&greeting["task"], &greeting["attempt"]),
        (&json!("greet"), &json!(1))
    );
    let trace = greeting["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32, "{greeting}");
    assert_eq!(greeting["span_id"].as_str().map(str::len), Some(16));
    // The engine's own lines about the run carry the same trace.
    let engine = lines
        .iter()
        .filter(|l| l["target"] != "sandflow::plugin" && l["run_id"] == json!(run))
        .count();
    assert!(engine > 0, "{text}");
    assert!(
        lines
            .iter()
            .filter(|l| l["run_id"] == json!(run))
            .all(|l| l["trace_id"] == trace),
        "{text}"
    );
}

/// A span as a collector received it: ids in hex, attributes as text.
#[derive(Debug)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: std::collections::HashMap<String, String>,
}

/// Every span `collector` received over OTLP/HTTP.
fn exported(collector: &Receiver) -> Vec<Exported> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut all = Vec::new();
    for request in collector.got() {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        let decoded = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
        let spans = decoded
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        for span in spans {
            let attributes = span
                .attributes
                .into_iter()
                .map(|kv| {
                    let value = match kv.value.and_then(|v| v.value) {
                        Some(Any::StringValue(s)) => s,
                        Some(Any::IntValue(i)) => i.to_string(),
                        Some(Any::BoolValue(b)) => b.to_string(),
                        other => format!("{other:?}"),
                    };
                    (kv.key, value)
                })
                .collect();
            all.push(Exported {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes,
            });
        }
    }
    all
}

#[test]
fn a_run_is_exported_as_a_trace_with_a_span_per_attempt_that_the_log_names() {
    let scratch = Scratch::default();
    let collector = Receiver::start(0);
    let hello = crate::plugin("hello");
    let out = scratch.sandflow_with_env(
        &[
            "run",
            hello.to_str().unwrap(),
            "--log-format",
            "json",
            "--otlp-endpoint",
            &collector.base,
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.code, 0, "{out:?}");

    // The command flushed its spans before it exited.
    let spans = exported(&collector);
    let run = spans.iter().find(|s| s.name == "run").expect("a run span");
    assert_eq!(run.attributes["workflow"], "hello", "{run:?}");
    assert_eq!(run.attributes["run_id"], "1", "{run:?}");
    let attempt = spans
        .iter()
        .find(|s| s.name == "attempt")
        .expect("an attempt span");
    assert_eq!(attempt.trace_id, run.trace_id);
    assert_eq!(attempt.parent_span_id, run.span_id);
    let a = &attempt.attributes;
    assert_eq!((a["task"].as_str(), a["attempt"].as_str()), ("greet", "1"));
    assert_eq!(a["outcome"], "success", "{attempt:?}");
    assert!(a["fuel"].parse::<u64>().unwrap() > 0, "{attempt:?}");
    assert!(a.contains_key("queue_wait_ms"), "{attempt:?}");

    // The task's log line names the exported trace and span.
    let greeting: Value = out
        .stderr
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["target"] == "sandflow::plugin")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(greeting["trace_id"], run.trace_id.as_str());
    assert_eq!(greeting["span_id"], attempt.span_id.as_str());
}

#[test]
fn the_servers_runs_are_exported_with_their_tenant_and_flushed_at_shutdown() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let collector = Receiver::start(0);
    let server = Server::start_with(&scratch, &["--otlp-endpoint", &collector.base]);
    let api = server.api(&token);
    let bundle = api.upload("hello");
    let run = api.start(&json!({ "bundle": bundle }));
    assert_eq!(api.finished(run)["state"], "succeeded");
    server.signal("-TERM");
    assert_eq!(server.wait(), Some(0));

    let spans = exported(&collector);
    let exported_run = spans
        .iter()
        .find(|s| s.name == "run" && s.attributes["run_id"] == run.to_string())
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(exported_run.attributes["tenant"], "red");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "attempt" && s.parent_span_id == exported_run.span_id),
        "{spans:#?}"
    );
}
