//! Bundles built against an older WIT world keep running: a tenant's stored, scheduled
//! bundle must not break when the host upgrades sandflow. The fixtures are plugins as
//! sandflow-sdk built them for each older version of `sandflow:plugin`
//! (tests/fixtures/README.md).

use crate::{Scratch, plugin};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

#[test]
fn a_wit_0_1_bundle_runs_as_today_s_build_of_it_does() {
    let scratch = Scratch::default();
    let old = fixture("etl-wit-0.1.0.wasm");
    let params = serde_json::json!({
        "csv": "order_id,date,region,product,quantity,unit_price_cents\n\
                1,2026-01-01,north,tea,2,150\n\
                2,2026-01-02,south,cake,1,400\n"
    })
    .to_string();
    let run = |bundle: &Path| {
        let (code, report) = scratch.run_json(bundle, &["--params", &params]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["state"], "succeeded", "{report}");
        report["id"].to_string()
    };
    let (then, now) = (run(&old), run(&plugin("etl")));
    for task in [
        "extract",
        "parse",
        "revenue_by_region",
        "units_by_product",
        "daily_revenue",
        "summary",
        "report",
    ] {
        let output = |run: &str| scratch.sandflow(&["output", run, task]).stdout;
        assert_eq!(output(&then), output(&now), "{task}");
    }
    // Its host calls (log, input, params, context) are answered as the current ones are.
    let logs = scratch.sandflow(&["logs", &then, "parse"]);
    assert!(logs.stdout.contains("parsed 2 orders"), "{logs:?}");

    // It says nothing of where its tasks are declared: 0.1.0 has no field for it.
    let described = |bundle: &Path| {
        let out = scratch.sandflow(&["inspect", bundle.to_str().unwrap(), "--format", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        json["tasks"][0]["location"].clone()
    };
    assert_eq!(described(&old), serde_json::Value::Null);
    let location = described(&plugin("etl"));
    assert!(
        location
            .as_str()
            .is_some_and(|l| l.starts_with("etl/src/lib.rs:")),
        "{location}"
    );
}

/// 0.2.0's own features (a task skipping itself, `none-failed-min-one-success`, asking how
/// an upstream task ended, source locations) work as they did, through the adapter.
#[test]
fn a_wit_0_2_bundle_runs_as_today_s_build_of_it_does() {
    let scratch = Scratch::default();
    let old = fixture("skips-wit-0.2.0.wasm");
    for params in ["{}", r#"{"new": true}"#] {
        let run = |bundle: &Path| {
            let (code, report) = scratch.run_json(bundle, &["--params", params]);
            assert_eq!(code, 0, "{report}");
            report
        };
        let (then, now) = (run(&old), run(&plugin("skips")));
        assert_eq!(then["state"], now["state"]);
        for task in ["poll", "load", "baseline", "report", "cleanup"] {
            let of = |report: &serde_json::Value| {
                let task = crate::task(report, task);
                (
                    task["state"].clone(),
                    task["attempts"].clone(),
                    task["error"].clone(),
                )
            };
            assert_eq!(of(&then), of(&now), "{task} with {params}");
            let output = |report: &serde_json::Value| {
                let run = report["id"].to_string();
                scratch.sandflow(&["output", &run, task]).stdout
            };
            assert_eq!(output(&then), output(&now), "{task} with {params}");
        }
    }
    let out = scratch.sandflow(&["inspect", old.to_str().unwrap(), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let location = &json["tasks"][0]["location"];
    assert!(
        location
            .as_str()
            .is_some_and(|l| l.starts_with("skips/src/lib.rs:")),
        "{location}"
    );
}
