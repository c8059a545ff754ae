//! `sandflow inspect`: a workflow as a table, JSON, or a graph for Graphviz or Mermaid.

use clap::ValueEnum;
use sandflow::Dag;
use sandflow::workflow::WorkflowDef;
use std::fmt::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

pub fn render(workflow: &WorkflowDef, dag: &Dag, format: Format) -> String {
    match format {
        Format::Text => text(workflow, dag),
        Format::Json => serde_json::to_string_pretty(workflow).expect("workflows serialize") + "\n",
        Format::Dot => dot(workflow),
        Format::Mermaid => mermaid(workflow, dag),
    }
}

/// Tasks in the order they can run, with everything that governs them.
fn text(workflow: &WorkflowDef, dag: &Dag) -> String {
    let mut out = format!("workflow `{}`", workflow.name);
    if let Some(schedule) = &workflow.schedule {
        let _ = write!(out, ", schedule `{schedule}`");
    }
    let _ = writeln!(out, ", {} tasks", workflow.tasks.len());
    let width = workflow
        .tasks
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:<12} {:>8} {:>9} {:>14}  AFTER",
        "TASK", "TRIGGER", "ATTEMPTS", "TIMEOUT", "FUEL"
    );
    for &i in dag.topological() {
        let t = &workflow.tasks[i as usize];
        let timeout = t.timeout().map_or("default".into(), |d| {
            humantime::format_duration(d).to_string()
        });
        let fuel = t.fuel.map_or("default".into(), |f| f.to_string());
        let _ = writeln!(
            out,
            "{:<width$}  {:<12} {:>8} {:>9} {:>14}  {}",
            t.name,
            t.trigger.as_str(),
            t.retry.max_attempts.max(1),
            timeout,
            fuel,
            t.depends_on.join(", ")
        );
    }
    out
}

fn dot(workflow: &WorkflowDef) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", quote(&workflow.name));
    for task in &workflow.tasks {
        let _ = writeln!(out, "  {};", quote(&task.name));
        for dep in &task.depends_on {
            let _ = writeln!(out, "  {} -> {};", quote(dep), quote(&task.name));
        }
    }
    out + "}\n"
}

/// Mermaid ids must be simple, so nodes are `t0`, `t1`, … labelled with the task names;
/// edges come from the validated graph, which already holds every dependency's index.
fn mermaid(workflow: &WorkflowDef, dag: &Dag) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, task) in workflow.tasks.iter().enumerate() {
        let label = task.name.replace('"', "#quot;");
        let _ = writeln!(out, "  t{i}[\"{label}\"]");
    }
    for i in 0..workflow.tasks.len() {
        for &dep in dag.upstream(i) {
            let _ = writeln!(out, "  t{dep} --> t{i}");
        }
    }
    out
}
