//! What an operator watches on the real server: Prometheus metrics that move as tasks run.

use crate::Scratch;
use crate::serve::{Server, tenant};
use serde_json::json;

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
