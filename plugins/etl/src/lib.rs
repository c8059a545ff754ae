//! A sales ETL over an embedded CSV of 2,000 orders.
//!
//! ```text
//!                ┌─▶ revenue_by_region ─┐
//! extract ─▶ parse ─▶ units_by_product ──┼─▶ summary ─▶ report
//!                └─▶ daily_revenue ─────┘
//! ```
//!
//! `extract` hands on the raw CSV (the run parameter `csv` replaces the embedded data),
//! `parse` validates it into records, three aggregations run in parallel, `summary` joins
//! them, and `report` renders the result. All amounts are integer cents, so the figures can
//! be checked exactly.
use sandflow_sdk::{Context, Output, RawOutput, Task, TaskError, Workflow, export_workflow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const SALES_CSV: &str = include_str!("../data/sales.csv");

#[derive(Serialize, Deserialize)]
struct Sale {
    date: String,
    region: String,
    product: String,
    quantity: u64,
    unit_price_cents: u64,
}

impl Sale {
    fn revenue_cents(&self) -> u64 {
        self.quantity * self.unit_price_cents
    }
}

/// The joined figures `summary` produces and `report` renders.
#[derive(Serialize, Deserialize)]
struct Summary {
    total_revenue_cents: u64,
    revenue_by_region: BTreeMap<String, u64>,
    units_by_product: BTreeMap<String, u64>,
    best_region: String,
    best_product: String,
    best_day: String,
    best_day_revenue_cents: u64,
}

/// Each task's output, named once: `Task::of` takes the edges into a task and the types it
/// reads from these, so a misspelt or mistyped edge does not compile.
const EXTRACT: Output<String> = Output::new("extract");
const PARSE: Output<Vec<Sale>> = Output::new("parse");
type Totals = BTreeMap<String, u64>;
const REVENUE_BY_REGION: Output<Totals> = Output::new("revenue_by_region");
const UNITS_BY_PRODUCT: Output<Totals> = Output::new("units_by_product");
const DAILY_REVENUE: Output<Totals> = Output::new("daily_revenue");
const SUMMARY: Output<Summary> = Output::new("summary");
const REPORT: RawOutput = RawOutput::new("report");

fn workflow() -> Workflow {
    let aggregations = (REVENUE_BY_REGION, UNITS_BY_PRODUCT, DAILY_REVENUE);
    Workflow::new("etl")
        .schedule("0 3 * * *")
        .task(Task::of(EXTRACT, (), extract))
        .task(Task::of(PARSE, EXTRACT, parse))
        .task(Task::of(REVENUE_BY_REGION, PARSE, revenue_by_region))
        .task(Task::of(UNITS_BY_PRODUCT, PARSE, units_by_product))
        .task(Task::of(DAILY_REVENUE, PARSE, daily_revenue))
        .task(Task::of(SUMMARY, aggregations, summary))
        .task(Task::of(REPORT, SUMMARY, report).retries(2))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Params {
    csv: Option<String>,
}

fn extract(ctx: &Context, (): ()) -> Result<String, TaskError> {
    let params: Params = ctx.params()?;
    Ok(params.csv.unwrap_or_else(|| SALES_CSV.to_owned()))
}

fn parse(ctx: &Context, csv: String) -> Result<Vec<Sale>, TaskError> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| TaskError::fatal("the CSV is empty"))?;
    if header.trim() != "order_id,date,region,product,quantity,unit_price_cents" {
        return Err(TaskError::fatal(format!("unexpected CSV header: {header}")));
    }
    let sales = lines
        .enumerate()
        .map(|(i, line)| parse_line(line).map_err(|e| format!("line {}: {e}", i + 2)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TaskError::fatal)?;
    ctx.info(&format!("parsed {} orders", sales.len()));
    Ok(sales)
}

fn parse_line(line: &str) -> Result<Sale, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [_id, date, region, product, quantity, price] = fields[..] else {
        return Err(format!("expected 6 fields, found {}", fields.len()));
    };
    let number = |s: &str, what: &str| s.parse::<u64>().map_err(|e| format!("{what} `{s}`: {e}"));
    Ok(Sale {
        date: date.to_owned(),
        region: region.to_owned(),
        product: product.to_owned(),
        quantity: number(quantity, "quantity")?,
        unit_price_cents: number(price, "unit price")?,
    })
}

/// Sums `value` of every sale under the key `key` picks.
fn aggregate(sales: &[Sale], key: impl Fn(&Sale) -> &str, value: impl Fn(&Sale) -> u64) -> Totals {
    let mut totals = BTreeMap::new();
    for sale in sales {
        *totals.entry(key(sale).to_owned()).or_insert(0) += value(sale);
    }
    totals
}

fn revenue_by_region(_: &Context, sales: Vec<Sale>) -> Result<Totals, TaskError> {
    Ok(aggregate(&sales, |s| &s.region, Sale::revenue_cents))
}

fn units_by_product(_: &Context, sales: Vec<Sale>) -> Result<Totals, TaskError> {
    Ok(aggregate(&sales, |s| &s.product, |s| s.quantity))
}

fn daily_revenue(_: &Context, sales: Vec<Sale>) -> Result<Totals, TaskError> {
    Ok(aggregate(&sales, |s| &s.date, Sale::revenue_cents))
}

/// The key with the largest value; ties go to the first key in order, so the result does
/// not depend on map iteration details.
fn best(totals: &Totals) -> Result<(String, u64), TaskError> {
    totals
        .iter()
        .fold(None, |best: Option<(&String, u64)>, (k, &v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((k, v)),
        })
        .map(|(k, v)| (k.clone(), v))
        .ok_or_else(|| TaskError::fatal("no sales to summarise"))
}

fn summary(
    _: &Context,
    (revenue_by_region, units_by_product, daily): (Totals, Totals, Totals),
) -> Result<Summary, TaskError> {
    let (best_day, best_day_revenue_cents) = best(&daily)?;
    Ok(Summary {
        total_revenue_cents: revenue_by_region.values().sum(),
        best_region: best(&revenue_by_region)?.0,
        best_product: best(&units_by_product)?.0,
        best_day,
        best_day_revenue_cents,
        revenue_by_region,
        units_by_product,
    })
}

/// Renders the summary as the text a person reads (raw UTF-8, not JSON); amounts as dollars
/// with cents.
fn report(_: &Context, s: Summary) -> Result<Vec<u8>, TaskError> {
    let dollars = |cents: u64| format!("${}.{:02}", cents / 100, cents % 100);
    let mut out = format!(
        "Sales report\nTotal revenue: {}\n",
        dollars(s.total_revenue_cents)
    );
    for (region, cents) in &s.revenue_by_region {
        out += &format!("  {region:<10} {}\n", dollars(*cents));
    }
    out += &format!("Best region: {}\n", s.best_region);
    out += &format!(
        "Best-selling product: {} ({} units)\n",
        s.best_product, s.units_by_product[&s.best_product]
    );
    out += &format!(
        "Best day: {} ({})\n",
        s.best_day,
        dollars(s.best_day_revenue_cents)
    );
    Ok(out.into_bytes())
}

export_workflow!(workflow);

/// The task bodies, run natively (`sandflow_sdk::testing`): `cargo test -p etl --target`
/// the host's triple, from `plugins/` (whose own default target is wasm32-wasip2).
#[cfg(test)]
mod tests {
    use super::*;
    use sandflow_sdk::State;
    use sandflow_sdk::testing::{TaskRun, WorkflowRun};

    const CSV: &str = "order_id,date,region,product,quantity,unit_price_cents\n\
                       1,2026-01-01,north,tea,2,150\n\
                       2,2026-01-02,south,tea,1,150\n\
                       3,2026-01-02,north,cake,3,400\n";

    #[test]
    fn parse_validates_each_line_and_says_which_is_wrong() {
        let ran = TaskRun::new(workflow, "parse").input("extract", CSV).run();
        let sales: Vec<Sale> = ran.output().unwrap();
        assert_eq!(sales.len(), 3);
        assert!(ran.logged("parsed 3 orders"));

        let broken = format!("{CSV}4,2026-01-03,east,tea,many,150\n");
        let ran = TaskRun::new(workflow, "parse")
            .input("extract", broken)
            .run();
        let Err(error) = ran.output::<Vec<Sale>>() else {
            panic!("a line without a quantity was parsed");
        };
        assert_eq!(
            error.message(),
            "line 5: quantity `many`: invalid digit found in string"
        );
    }

    #[test]
    fn the_summary_joins_the_three_aggregations() {
        let sales = TaskRun::new(workflow, "parse").input("extract", CSV).run();
        let sales: Vec<Sale> = sales.output().unwrap();
        let aggregate = |task| {
            let ran = TaskRun::new(workflow, task).input("parse", &sales).run();
            ran.output::<BTreeMap<String, u64>>().unwrap()
        };
        let summary = TaskRun::new(workflow, "summary")
            .input("revenue_by_region", aggregate("revenue_by_region"))
            .input("units_by_product", aggregate("units_by_product"))
            .input("daily_revenue", aggregate("daily_revenue"))
            .run();
        let summary: Summary = summary.output().unwrap();
        assert_eq!(summary.total_revenue_cents, 300 + 150 + 1200);
        // Three cakes and three teas: a tie goes to the first product by name.
        let best = (summary.best_region.as_str(), summary.best_product.as_str());
        assert_eq!(best, ("north", "cake"));
        assert_eq!(
            (summary.best_day.as_str(), summary.best_day_revenue_cents),
            ("2026-01-02", 1350)
        );
    }

    #[test]
    fn the_csv_parameter_replaces_the_embedded_data() {
        let ran = TaskRun::new(workflow, "extract")
            .params(BTreeMap::from([("csv", CSV)]))
            .run();
        assert_eq!(ran.output::<String>().unwrap(), CSV);
    }

    #[test]
    fn the_whole_workflow_reports_on_the_orders_it_is_given() {
        let ran = WorkflowRun::new(workflow)
            .params(BTreeMap::from([("csv", CSV)]))
            .run();
        assert!(ran.succeeded());
        let report = ran.task("report").attempts[0].result.clone().unwrap();
        let report = String::from_utf8(report).unwrap();
        assert!(report.contains("Total revenue: $16.50"), "{report}");
        assert!(report.contains("Best day: 2026-01-02 ($13.50)"), "{report}");
    }

    #[test]
    fn a_bad_line_fails_parse_and_what_depends_on_it() {
        let broken = format!("{CSV}4,2026-01-03,east,tea,many,150\n");
        let ran = WorkflowRun::new(workflow)
            .params(BTreeMap::from([("csv", broken)]))
            .run();
        assert!(!ran.succeeded());
        assert_eq!(ran.state("parse"), State::Failed);
        for task in ["revenue_by_region", "summary", "report"] {
            assert_eq!(ran.state(task), State::UpstreamFailed, "{task}");
        }
    }
}
