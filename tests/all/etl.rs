//! The etl example computes what an independent reading of its data says it should.

use crate::{Scratch, plugin, task};
use std::collections::BTreeMap;

/// Revenue per region in cents, computed from the CSV the etl plugin embeds, with nothing
/// shared with the plugin's code.
fn expected_revenue_by_region(csv: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for line in csv.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let cents = f[4].parse::<u64>().unwrap() * f[5].parse::<u64>().unwrap();
        *totals.entry(f[2].to_owned()).or_insert(0) += cents;
    }
    totals
}

#[test]
fn etl_summary_matches_an_independent_computation() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("etl"), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["state"], "succeeded");
    for t in report["tasks"].as_array().unwrap() {
        assert_eq!(t["state"], "success", "{t}");
    }

    let run = report["id"].to_string();
    let summary = scratch.sandflow(&["output", &run, "summary"]);
    assert_eq!(summary.code, 0, "{summary:?}");
    let summary: serde_json::Value = serde_json::from_str(&summary.stdout).unwrap();

    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/etl/data/sales.csv"
    ))
    .unwrap();
    let expected = expected_revenue_by_region(&csv);
    let total: u64 = expected.values().sum();
    assert_eq!(summary["total_revenue_cents"], total);
    for (region, cents) in &expected {
        assert_eq!(summary["revenue_by_region"][region], *cents, "{region}");
    }

    let text = scratch.sandflow(&["output", &run, "report"]);
    let dollars = format!("${}.{:02}", total / 100, total % 100);
    assert!(
        text.stdout.contains(&format!("Total revenue: {dollars}")),
        "{}",
        text.stdout
    );
}

#[test]
fn params_reach_the_tasks() {
    let scratch = Scratch::default();
    let csv = "order_id,date,region,product,quantity,unit_price_cents\n\
               1,2026-01-01,north,widget,2,500\n\
               2,2026-01-02,south,widget,1,700\n\
               3,2026-01-02,north,gadget,4,100\n";
    let params = serde_json::json!({ "csv": csv }).to_string();
    let (code, report) = scratch.run_json(&plugin("etl"), &["--params", &params]);
    assert_eq!(code, 0, "{report}");
    let run = report["id"].to_string();
    let summary = scratch.sandflow(&["output", &run, "summary"]);
    let summary: serde_json::Value = serde_json::from_str(&summary.stdout).unwrap();
    assert_eq!(summary["total_revenue_cents"], 1000 + 700 + 400);
    assert_eq!(summary["revenue_by_region"]["north"], 1400);
    assert_eq!(summary["best_day"], "2026-01-02");
}

#[test]
fn a_failing_task_fails_its_downstream_and_the_run() {
    let scratch = Scratch::default();
    let params = serde_json::json!({ "csv": "not,a,sales,file\n" }).to_string();
    let (code, report) = scratch.run_json(&plugin("etl"), &["--params", &params]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["state"], "failed");
    assert_eq!(task(&report, "extract")["state"], "success");
    let parse = task(&report, "parse");
    assert_eq!(parse["state"], "failed");
    assert_eq!(parse["error"]["kind"], "fatal");
    assert!(
        parse["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unexpected CSV header")
    );
    for downstream in ["revenue_by_region", "summary", "report"] {
        assert_eq!(task(&report, downstream)["state"], "upstream-failed");
        assert_eq!(task(&report, downstream)["attempts"], 0);
    }
}
