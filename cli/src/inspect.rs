//! `sandflow inspect`: a workflow as a table, JSON, or a graph for Graphviz or Mermaid; with
//! `--run`, a run's workflow with each task's state (coloured in the graphs).

use clap::ValueEnum;
use sandflow::workflow::{TaskDef, TriggerRule, WorkflowDef};
use sandflow::{Dag, TaskState};
use std::collections::HashMap;
use std::fmt::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// Each task's state in a run, by name; tasks not there have not ended.
pub type States = HashMap<String, TaskState>;

pub fn render(
    workflow: &WorkflowDef,
    dag: &Dag,
    format: Format,
    states: Option<&States>,
) -> String {
    match format {
        Format::Text => text(workflow, dag, states),
        Format::Json => json(workflow, states),
        Format::Dot => dot(workflow, dag, states),
        Format::Mermaid => mermaid(workflow, dag, states),
    }
}

fn state_of(states: &States, task: &TaskDef) -> TaskState {
    states
        .get(&task.name)
        .copied()
        .unwrap_or(TaskState::Pending)
}

/// Tasks in the order they can run, with everything that governs them.
fn text(workflow: &WorkflowDef, dag: &Dag, states: Option<&States>) -> String {
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
    let state_column = |state: &str| match states {
        Some(_) => format!("{state:<16}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{:<width$}  {}{:<12} {:>8} {:>9} {:>14}  AFTER",
        "TASK",
        state_column("STATE"),
        "TRIGGER",
        "ATTEMPTS",
        "TIMEOUT",
        "FUEL"
    );
    for &i in dag.topological() {
        let t = &workflow.tasks[i as usize];
        let timeout = t.timeout().map_or("default".into(), |d| {
            humantime::format_duration(d).to_string()
        });
        let fuel = t.fuel.map_or("default".into(), |f| f.to_string());
        let state = states.map_or("", |s| state_of(s, t).as_str());
        let _ = writeln!(
            out,
            "{:<width$}  {}{:<12} {:>8} {:>9} {:>14}  {}",
            t.name,
            state_column(state),
            t.trigger.as_str(),
            t.retry.max_attempts.max(1),
            timeout,
            fuel,
            t.depends_on.join(", ")
        );
    }
    out
}

/// The workflow as the bundle describes it; with a run, `states` by task.
fn json(workflow: &WorkflowDef, states: Option<&States>) -> String {
    let mut value = serde_json::to_value(workflow).expect("workflows serialize");
    if let Some(states) = states {
        let by_task: serde_json::Map<String, serde_json::Value> = workflow
            .tasks
            .iter()
            .map(|t| (t.name.clone(), state_of(states, t).as_str().into()))
            .collect();
        value["states"] = by_task.into();
    }
    serde_json::to_string_pretty(&value).expect("values serialize") + "\n"
}

/// What a node says besides its name: what is not the default about when and how often
/// it runs, and its state in a run.
fn notes(task: &TaskDef, states: Option<&States>) -> Vec<String> {
    let mut notes = Vec::new();
    if task.trigger != TriggerRule::AllSuccess {
        notes.push(task.trigger.as_str().to_owned());
    }
    if task.retry.max_attempts > 1 {
        notes.push(format!("{} attempts", task.retry.max_attempts));
    }
    if let Some(states) = states {
        notes.push(state_of(states, task).as_str().to_owned());
    }
    notes
}

/// The fill of a task in `state`; `None` leaves it unfilled (it has not run).
fn colour(state: TaskState) -> Option<&'static str> {
    match state {
        TaskState::Success => Some("#a6d96a"),
        TaskState::Failed => Some("#f46d6d"),
        TaskState::UpstreamFailed => Some("#fdae61"),
        TaskState::Skipped => Some("#d9d9d9"),
        TaskState::Running | TaskState::UpForRetry => Some("#ffffbf"),
        TaskState::Pending => None,
    }
}

/// Edges into a task whose trigger rule is not `all-success` are dashed: it runs on
/// something other than its upstream tasks' success.
fn dot(workflow: &WorkflowDef, dag: &Dag, states: Option<&States>) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", quote(&workflow.name));
    for task in &workflow.tasks {
        let mut label = task.name.clone();
        let notes = notes(task, states);
        if !notes.is_empty() {
            let _ = write!(label, "\n({})", notes.join(", "));
        }
        let fill = states
            .and_then(|s| colour(state_of(s, task)))
            .map(|c| format!(", style=filled, fillcolor=\"{c}\""))
            .unwrap_or_default();
        let label = quote(&label).replace('\n', "\\n");
        let _ = writeln!(out, "  {} [label={label}{fill}];", quote(&task.name));
    }
    for (i, task) in workflow.tasks.iter().enumerate() {
        let style = match task.trigger {
            TriggerRule::AllSuccess => "",
            _ => " [style=dashed]",
        };
        for &dep in dag.upstream(i) {
            let from = &workflow.tasks[dep as usize].name;
            let _ = writeln!(out, "  {} -> {}{style};", quote(from), quote(&task.name));
        }
    }
    out + "}\n"
}

/// Mermaid ids must be simple, so nodes are `t0`, `t1`, … labelled with the task names;
/// edges come from the validated graph, which already holds every dependency's index.
fn mermaid(workflow: &WorkflowDef, dag: &Dag, states: Option<&States>) -> String {
    let mut out = String::from("flowchart LR\n");
    let escape = |s: &str| s.replace('"', "#quot;");
    for (i, task) in workflow.tasks.iter().enumerate() {
        let mut label = escape(&task.name);
        let notes = notes(task, states);
        if !notes.is_empty() {
            let _ = write!(label, "<br/>({})", escape(&notes.join(", ")));
        }
        let _ = writeln!(out, "  t{i}[\"{label}\"]");
    }
    for (i, task) in workflow.tasks.iter().enumerate() {
        let arrow = match task.trigger {
            TriggerRule::AllSuccess => "-->",
            _ => "-.->",
        };
        for &dep in dag.upstream(i) {
            let _ = writeln!(out, "  t{dep} {arrow} t{i}");
        }
    }
    if let Some(states) = states {
        let mut classes: Vec<(TaskState, Vec<String>)> = Vec::new();
        for (i, task) in workflow.tasks.iter().enumerate() {
            let state = state_of(states, task);
            match classes.iter_mut().find(|(s, _)| *s == state) {
                Some((_, ids)) => ids.push(format!("t{i}")),
                None => classes.push((state, vec![format!("t{i}")])),
            }
        }
        for (state, ids) in classes {
            let Some(fill) = colour(state) else { continue };
            let class = state.as_str().replace('-', "_");
            let _ = writeln!(out, "  classDef {class} fill:{fill}");
            let _ = writeln!(out, "  class {} {class}", ids.join(","));
        }
    }
    out
}
