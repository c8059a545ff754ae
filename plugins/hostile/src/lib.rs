//! Tasks that misbehave on purpose, each in a way the sandbox must contain, beside `ok`,
//! which behaves: burn fuel, outlive a deadline, grow memory, read an undeclared input,
//! panic, recurse, trap, return a huge output, flood the log, and reach for a file (to read
//! and to write), an environment variable and a socket. No task depends on another, so one run exercises them all at once: every
//! hostile task must fail with its own cause while `ok` succeeds.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
use std::time::Duration;

/// What the file, env and write tasks reach for; the defaults are what a sandbox escape
/// would want. Tests point them at what an operator granted.
#[derive(serde::Deserialize)]
#[serde(default)]
struct Reach {
    file: String,
    write: String,
    env: String,
}

impl Default for Reach {
    fn default() -> Self {
        Self {
            file: "/etc/passwd".into(),
            write: "/tmp/sandflow-escaped".into(),
            env: "HOME".into(),
        }
    }
}

fn workflow() -> Workflow {
    Workflow::new("hostile")
        .task(Task::new("ok", |_: &Context| Ok("fine")))
        // Dies of fuel: a small budget so the test is quick.
        .task(Task::new("spin", spin).fuel(50_000_000))
        // Dies of its deadline: fuel for about ten seconds, 300 ms of wall clock.
        .task(
            Task::new("slow", spin)
                .fuel(100_000_000_000)
                .timeout(Duration::from_millis(300)),
        )
        .task(Task::new("grow", grow))
        .task(Task::new("sneaky", sneaky))
        .task(Task::new("panic", |_: &Context| -> Result<(), TaskError> {
            panic!("the plugin gave up")
        }))
        .task(Task::new("fail", |_: &Context| -> Result<(), TaskError> {
            Err(TaskError::fatal("refusing on purpose"))
        }))
        .task(Task::new(
            "huge_error",
            |_: &Context| -> Result<(), TaskError> {
                Err(TaskError::retryable("e".repeat(10 << 20)))
            },
        ))
        .task(Task::new("recurse", |_: &Context| Ok(recurse(0))))
        .task(Task::new("trap", |_: &Context| -> Result<(), TaskError> {
            core::arch::wasm32::unreachable()
        }))
        .task(Task::raw("huge_output", |_: &Context| {
            Ok(vec![7u8; 20 << 20])
        }))
        .task(Task::new("log_flood", log_flood))
        .task(Task::new(
            "stdout_flood",
            |_: &Context| -> Result<(), TaskError> {
                let line = "y".repeat(1000);
                loop {
                    println!("{line}");
                }
            },
        ))
        .task(Task::new(
            "log_empty_lines",
            |ctx: &Context| -> Result<(), TaskError> {
                loop {
                    ctx.info("");
                }
            },
        ))
        .task(Task::new(
            "log_escapes",
            |ctx: &Context| -> Result<(), TaskError> {
                let line = "\u{1}".repeat(1024);
                loop {
                    ctx.info(&line);
                }
            },
        ))
        .task(Task::new("read_file", |ctx: &Context| {
            Ok(std::fs::read_to_string(ctx.params::<Reach>()?.file)?)
        }))
        .task(Task::new("write_file", |ctx: &Context| {
            std::fs::write(ctx.params::<Reach>()?.write, "escaped")?;
            Ok("written")
        }))
        .task(Task::new("read_env", |ctx: &Context| {
            let name = ctx.params::<Reach>()?.env;
            std::env::var(&name).map_err(|e| TaskError::fatal(format!("{name}: {e}")))
        }))
        .task(Task::new("connect", |_: &Context| {
            std::net::TcpStream::connect("127.0.0.1:22")?;
            Ok("connected")
        }))
}

/// Recurses without end; the frame is kept alive so the compiler cannot make it a loop.
#[allow(unconditional_recursion, reason = "the point of this task")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 16]);
    recurse(frame[0] + 1) + frame[15]
}

fn log_flood(ctx: &Context) -> Result<(), TaskError> {
    let line = "x".repeat(1024);
    loop {
        ctx.info(&line);
    }
}

fn spin(_: &Context) -> Result<(), TaskError> {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB at a time until the memory cap stops it.
fn grow(_: &Context) -> Result<(), TaskError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Reads the output of a task it never declared as upstream.
fn sneaky(ctx: &Context) -> Result<Vec<u8>, TaskError> {
    Ok(ctx.input_bytes("ok")?.unwrap_or_default())
}

export_workflow!(workflow);
