//! Tasks that misbehave on purpose, each in a way the sandbox must contain, beside `ok`,
//! which behaves: burn fuel, outlive a deadline, grow memory, read an undeclared input,
//! panic, recurse, trap, return a huge output, flood the log, call the host in a loop or
//! wrongly, and reach for a file (to read, to write and to hold open by the hundred), an
//! environment variable and a socket. No task
//! depends on another, so one run exercises them all at once: every hostile task must fail
//! with its own cause while `ok` succeeds.
use sandflow_sdk::{Context, Retry, Task, TaskError, Workflow, export_workflow};
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
        // Calls the host without end, so that its own instructions cost little: host
        // calls are charged to fuel, so it must still run out within its budget.
        .task(
            Task::raw("host_calls", |ctx: &Context| {
                loop {
                    std::hint::black_box(ctx.params_bytes());
                }
            })
            .fuel(50_000_000)
            .timeout(Duration::from_secs(5)),
        )
        .task(Task::new("grow", grow))
        .task(Task::new("sneaky", sneaky))
        .task(Task::new("panic", |_: &Context| -> Result<(), TaskError> {
            panic!("the plugin gave up")
        }))
        .task(Task::new("fail", |_: &Context| -> Result<(), TaskError> {
            Err(TaskError::fatal("refusing on purpose"))
        }))
        // A 10 MiB error, again and again, at once: each one stored.
        .task(
            Task::new("huge_error", |_: &Context| -> Result<(), TaskError> {
                Err(TaskError::retryable("e".repeat(10 << 20)))
            })
            .retry(Retry {
                max_attempts: 20,
                initial_backoff: Duration::ZERO,
                ..Retry::default()
            }),
        )
        .task(Task::new("bad_host_call", bad_host_call))
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
        .task(Task::new(
            "hoard_files",
            |ctx: &Context| -> Result<(), TaskError> {
                let path = ctx.params::<Reach>()?.file;
                let mut open = Vec::new();
                loop {
                    open.push(std::fs::File::open(&path)?);
                }
            },
        ))
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

/// Calls `host.log` as no binding would: with a message said to lie past the end of
/// memory. The host must refuse to read it, and say why.
fn bad_host_call(_: &Context) -> Result<(), TaskError> {
    #[link(wasm_import_module = "sandflow:plugin/host@0.3.0")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn log(level: i32, message: *const u8, len: usize);
    }
    // SAFETY: none; the host is the one that must stay safe.
    unsafe { log(2, (u32::MAX - 8) as usize as *const u8, 64) };
    Ok(())
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
