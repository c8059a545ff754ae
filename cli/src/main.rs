//! The `sandflow` command line: a thin layer over the `sandflow` library that parses flags,
//! prints reports and maps outcomes to exit codes (0 success, 1 run failed, 2 bad input).
//! Flags are parsed by clap, then turned into the library's validated types (`RunLimits`,
//! `BundleLimits`, `RunOptions`) before anything is loaded or written.

mod alerts;
mod build;
mod door;
mod inspect;
mod kept;
mod logging;
mod logs;
mod new;
mod options;
mod place;
mod policies;
mod remote;
mod report;
mod runs;
mod schedules;
mod serve;
mod telemetry;
mod tenant;
mod worker;

use clap::{Args, FromArgMatches, Parser, Subcommand};
use report::Invocation;
use runs::RunsCommand;
use sandflow::scheduler::RunError;
use sandflow::{
    Bundle, BundleLimits, Clear, DirGrant, Engine, EngineConfig, Flow, GrantPolicy, Grants,
    HostGrants, NewRun, Params, RedbStore, RunLimits, RunOptions, RunSettings, RunState, Sandbox,
    Store,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Run workflows whose tasks are sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "sandflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a bundle's workflow and report every task
    Run(RunArgs),
    /// Continue a run that was interrupted, timed out or crashed: tasks that ended are
    /// kept, the others run
    Resume(ResumeArgs),
    /// Run a run's failed tasks again, or (--task) the tasks named, each with every task
    /// downstream of it; the other tasks keep their outputs (Airflow's "clear")
    Retry(RetryArgs),
    /// Describe a bundle's workflow without running it, or (--run) a run's, with the
    /// state of each task
    Inspect {
        /// The bundle (`.wasm` component) to describe
        #[arg(required_unless_present = "run", conflicts_with = "run")]
        bundle: Option<PathBuf>,
        /// The run whose workflow to show, each task in its state (coloured with --format
        /// dot or mermaid)
        #[arg(long, value_name = "RUN")]
        run: Option<u64>,
        /// How to print the workflow
        #[arg(long, value_enum, default_value_t = inspect::Format::Text)]
        format: inspect::Format,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Check that a bundle loads and its workflow is a valid DAG
    Validate {
        /// The bundle (`.wasm` component) to check
        bundle: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write a new plugin crate: a two-task workflow with a native test, ready to build
    New(new::NewArgs),
    /// Build the bundle of the plugin crate this directory is in, and check its workflow
    Build(build::BuildArgs),
    /// List runs, show one, delete or prune them
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(flatten)]
        list: runs::ListArgs,
        #[command(subcommand)]
        command: Option<RunsCommand>,
    },
    /// Write a task's output bytes to stdout
    Output {
        /// The run (see `sandflow runs`)
        run: u64,
        /// The task whose output to write
        task: String,
    },
    /// Print what a run's tasks logged, stdout and stderr included: every attempt, in the
    /// order the attempts started
    Logs(logs::LogsArgs),
    /// Serve the multi-tenant HTTP API until SIGTERM, then drain
    Serve(serve::ServeArgs),
    /// Run the task attempts a `sandflow serve --workers` queues in its PostgreSQL store
    /// (`--store`), until SIGTERM
    Worker(worker::WorkerArgs),
    /// Print the shell's completion script for sandflow, e.g. `sandflow completions bash >
    /// ~/.local/share/bash-completion/completions/sandflow`
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Add, list, remove and change the tenants of `sandflow serve`
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// List, set, pause and backfill the tenant's schedules on a server (with --server)
    Schedules {
        #[command(subcommand)]
        command: Option<schedules::ScheduleCommand>,
    },
    /// List, set and remove the tenant's workflow policies on a server (with --server):
    /// runs at once, what a trigger does past that, SLA
    Policies {
        #[command(subcommand)]
        command: Option<policies::PolicyCommand>,
    },
    /// Set where the tenant's alerts go, and list the latest, on a server (with --server)
    Alerts {
        #[command(subcommand)]
        command: Option<alerts::AlertCommand>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The bundle (`.wasm` component) whose workflow to run
    bundle: PathBuf,
    /// Run parameters, a JSON document the tasks read
    #[arg(long, default_value = "{}", value_name = "JSON")]
    params: String,
    /// Let tasks read a host directory (read-only), at GUEST inside the sandbox or else at
    /// its own absolute path; repeatable
    #[arg(long = "dir", value_name = "HOST[:GUEST]")]
    dirs: Vec<String>,
    /// Let tasks read this environment variable of sandflow's; repeatable
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// Run only this task and the tasks it depends on, directly or not, e.g. to try one
    /// task out; repeatable
    #[arg(long = "only", value_name = "TASK")]
    only: Vec<String>,
    #[command(flatten)]
    drive: DriveArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct ResumeArgs {
    /// The run to continue (see `sandflow runs`)
    run: u64,
    /// The bundle to resume with, if it moved [default: the path the run started with, or
    /// the copy kept when it ran]. Its contents must be the same.
    #[arg(long, value_name = "PATH")]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    drive: DriveArgs,
}

#[derive(Args)]
struct RetryArgs {
    /// The run to retry (see `sandflow runs`)
    run: u64,
    /// Run this task again, however it ended, with every task downstream of it;
    /// repeatable [default: the failed and upstream-failed tasks of a failed run]
    #[arg(long = "task", value_name = "NAME")]
    tasks: Vec<String>,
    /// The bundle to retry with, if it moved [default: the path the run started with, or
    /// the copy kept when it ran]. Its contents must be the same.
    #[arg(long, value_name = "PATH")]
    bundle: Option<PathBuf>,
    /// Let tasks read a host directory from now on, as `run --dir`; with --env, replaces
    /// the run's grants; repeatable
    #[arg(long = "dir", value_name = "HOST[:GUEST]")]
    dirs: Vec<String>,
    /// Let tasks read this environment variable from now on, as `run --env`; with --dir,
    /// replaces the run's grants; repeatable
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    #[command(flatten)]
    drive: DriveArgs,
    /// The limits given replace the run's from now on; the others stay
    #[command(flatten)]
    limits: LimitArgs,
}

impl RetryArgs {
    /// The run's settings as this retry changes them, if it changes any.
    fn settings(&self, run: &sandflow::RunRecord) -> Option<RunSettings> {
        let grants = !(self.dirs.is_empty() && self.env.is_empty());
        (grants || self.limits.any()).then(|| RunSettings {
            grants: match grants {
                true => Grants {
                    dirs: self.dirs.iter().map(|d| DirGrant::parse(d)).collect(),
                    env: self.env.clone(),
                },
                false => run.grants.clone(),
            },
            limits: self.limits.over(&run.limits),
        })
    }
}

/// How this invocation drives the run; free to differ between a start and its resumes.
#[derive(Args)]
struct DriveArgs {
    /// Task attempts in flight at once [default: number of CPU cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Option<u32>,
    /// Stop the run after this long, e.g. 10m; it ends `timed-out` and can be resumed
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    run_timeout: Option<Duration>,
    /// Stop the run once it has stored this much in outputs, logs and failures; it ends
    /// `storage-limit` and can be resumed [default: 4GiB]
    #[arg(long, value_name = "SIZE")]
    max_stored: Option<bytesize::ByteSize>,
    /// Print the report as JSON instead of a table
    #[arg(long)]
    json: bool,
}

impl DriveArgs {
    fn options(&self) -> RunOptions {
        let defaults = RunOptions::default();
        RunOptions {
            concurrency: self.concurrency.map_or_else(cores, |n| n as usize),
            timeout: self.run_timeout,
            max_stored: self.max_stored.map_or(defaults.max_stored, |s| s.as_u64()),
            ..defaults
        }
    }
}

/// Per-attempt and per-bundle limits; each default is `RunLimits::default()`'s or
/// `BundleLimits::default()`'s.
#[derive(Args)]
struct LimitArgs {
    /// Fuel per task attempt; a task may declare less [default: 10000000000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,
    /// Wall-clock limit per task attempt, at least 10ms (deadlines are checked every
    /// 10ms); a task may declare less, e.g. 30s, 5m [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = attempt_timeout)]
    timeout: Option<Duration>,
    /// Linear memory per task attempt, e.g. 64MiB [default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    memory: Option<bytesize::ByteSize>,
    /// Largest output a task may return [default: 16MiB]
    #[arg(long, value_name = "SIZE")]
    max_output: Option<bytesize::ByteSize>,
    /// Log bytes per task attempt [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    max_log: Option<bytesize::ByteSize>,
    /// Tasks a workflow may declare [default: 100000]
    #[arg(long, value_name = "N")]
    max_tasks: Option<usize>,
    /// Largest bundle file sandflow reads [default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    max_bundle: Option<bytesize::ByteSize>,
}

impl LimitArgs {
    fn run_limits(&self) -> RunLimits {
        self.over(&RunLimits::default())
    }

    /// `base` with the limits given replacing its own.
    fn over(&self, base: &RunLimits) -> RunLimits {
        let bytes = |size: Option<bytesize::ByteSize>, default: usize| {
            size.map_or(default, |s| {
                usize::try_from(s.as_u64()).unwrap_or(usize::MAX)
            })
        };
        RunLimits {
            fuel: self.fuel.unwrap_or(base.fuel),
            timeout: self.timeout.unwrap_or(base.timeout),
            memory: bytes(self.memory, base.memory),
            output: bytes(self.max_output, base.output),
            log: bytes(self.max_log, base.log),
        }
    }

    /// Whether an attempt limit is given.
    fn any(&self) -> bool {
        self.fuel.is_some()
            || self.timeout.is_some()
            || self.memory.is_some()
            || self.max_output.is_some()
            || self.max_log.is_some()
    }

    fn bundle_limits(&self) -> BundleLimits {
        let defaults = BundleLimits::default();
        BundleLimits {
            bytes: self.max_bundle.map_or(defaults.bytes, |s| s.as_u64()),
            tasks: self.max_tasks.unwrap_or(defaults.tasks),
            describe: self.run_limits(),
        }
    }
}

/// A sandbox for one command: one pool slot per concurrent attempt, plus one for
/// `describe`, each as large as `limits` allow.
fn sandbox(limits: &RunLimits, concurrency: usize) -> Result<Arc<Sandbox>, Failed> {
    Sandbox::new(EngineConfig {
        instances: u32::try_from(concurrency + 1).unwrap_or(u32::MAX),
        max_memory: limits.memory,
        ..EngineConfig::default()
    })
    .map(Arc::new)
    .map_err(Failed::input)
}

/// A duration like `30s` or `5m`, refusing zero: a task or run that may not run at all is a
/// typo.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the timeout must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// A task attempt's timeout: deadlines are checked at every epoch tick, so a shorter one
/// could not be kept.
fn attempt_timeout(text: &str) -> Result<Duration, String> {
    let timeout = positive_duration(text)?;
    if timeout < sandflow::sandbox::EPOCH_TICK {
        return Err(format!(
            "an attempt's timeout must be at least {}, the resolution of deadlines",
            humantime::format_duration(sandflow::sandbox::EPOCH_TICK)
        ));
    }
    Ok(timeout)
}

/// The exit code of a command that found the database held by another process it could
/// not reach, or of a replica that lost the leader's lease: sysexits' EX_TEMPFAIL, "try
/// again later", apart from bad input.
const LOCKED: u8 = 75;

/// An error that ends the command: its message, and whether it is the user's input (exit
/// code 2) or the run failing (exit code 1).
#[derive(Debug)]
struct Failed {
    message: String,
    code: u8,
}

impl Failed {
    fn input(error: impl std::fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            code: 2,
        }
    }
}

fn main() -> ExitCode {
    restore_sigpipe();
    raise_open_file_limit();
    // clap prints help and usage errors itself and exits 0 or 2.
    let matches = options::command().get_matches();
    let context = options::Context::from_matches(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A server's operator wants to see what it does; a command's user only what is wrong.
    // Tenants' own log lines stay out unless asked for: they are the tenants' to fill.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Worker(_) => "info,sandflow::plugin=warn,tokio_postgres=warn",
        _ => "warn",
    };
    let _exporter = match logging::init(
        context.log_format,
        default_filter,
        context.otlp_endpoint.as_deref(),
    ) {
        Ok(exporter) => exporter,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        sandflow_server::runtime()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(dispatch(cli.command, context));
    // Everything sandflow started has ended with `dispatch`; what may be left is a thread
    // of the blocking pool stuck in a system call a task made (a WASI read that never
    // returns), which dropping the runtime would wait for without end.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failed) => {
            eprintln!("error: {}", failed.message);
            ExitCode::from(failed.code)
        }
    }
}

async fn dispatch(command: Command, context: options::Context) -> Result<u8, Failed> {
    if let Some(server) = &context.server {
        let remote = remote::Remote::new(server, context.token.clone())?;
        return tokio::task::spawn_blocking(move || remotely(&remote, command))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    let cache = if context.no_cache {
        None
    } else {
        context
            .cache_dir
            .clone()
            .or_else(|| dirs::cache_dir().map(|d| d.join("sandflow")))
    };
    let db_path = || -> Result<PathBuf, Failed> {
        context
            .db
            .clone()
            .or_else(|| dirs::data_dir().map(|d| d.join("sandflow").join("sandflow.redb")))
            .ok_or_else(|| Failed::input("no home directory to keep the database in; pass --db"))
    };
    let place = || -> Result<place::Place, Failed> {
        Ok(match &context.store {
            Some(url) => place::Place::Postgres(url.clone()),
            None => place::Place::File(db_path()?),
        })
    };
    // The default database not existing yet means nothing ran; a named one not existing
    // is most likely a typo, which an empty listing would hide. Neither is made to be
    // written to when only history is changed.
    let existing = async |write: bool| -> Result<RedbStore, Failed> {
        let path = db_path()?;
        if (context.db.is_some() || write) && !path.exists() {
            return Err(Failed::input(format!(
                "there is no database at {}: `sandflow run BUNDLE --db {}` makes one",
                path.display(),
                path.display()
            )));
        }
        door::open_store(&path, write).await
    };
    let read_only = async || existing(false).await;
    // A database another process holds is reached through its door (see `door`).
    if through_door(&command)
        && let Some(remote) = db_path().ok().and_then(|db| door::knock(&db))
    {
        return tokio::task::spawn_blocking(move || remotely(&remote, command))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    match command {
        Command::Run(args) => {
            let mut interrupts = Interrupts::watch()?;
            let options = args.drive.options();
            let params = Params::parse(args.params)
                .map_err(|e| Failed::input(format!("--params is not valid JSON: {e}")))?;
            let grants = Grants {
                dirs: args.dirs.iter().map(|d| DirGrant::parse(d)).collect(),
                env: args.env,
            };
            // Checked now, so that a bad grant is refused before the database is touched.
            HostGrants
                .resolve("", &grants)
                .await
                .map_err(Failed::input)?;
            let limits = args.limits.run_limits();
            let sandbox = sandbox(&limits, options.concurrency)?;
            let bundle_limits = args.limits.bundle_limits();
            let loading = load(&sandbox, &args.bundle, &bundle_limits, cache.as_deref());
            let mut flow = interrupts.unless(loading).await?;
            if !args.only.is_empty() {
                flow = flow.only(&args.only).map_err(|task| {
                    Failed::input(format!(
                        "--only {task}: the workflow has no such task (see `sandflow inspect`)"
                    ))
                })?;
            }
            if let Some(cache) = &cache {
                kept::keep(cache, &args.bundle, flow.bundle().hash());
            }
            // Opened once the bundle is known good: a refused bundle leaves no database.
            let db = db_path()?;
            let store = Arc::new(door::open_store(&db, true).await?);
            let engine = Engine::from_sandbox(sandbox, store);
            let invocation = Invocation::Start(NewRun {
                params,
                grants,
                limits: limits.clone(),
                ..NewRun::default()
            });
            drive_run(
                &engine,
                (&db, &limits),
                &flow,
                invocation,
                options,
                args.drive.json,
                interrupts,
            )
            .await
        }
        Command::Resume(args) => {
            let invocation = (args.run, Invocation::Resume(args.run));
            let (bundle, cache) = (args.bundle.as_deref(), cache.as_deref());
            reopen(&db_path()?, invocation, bundle, &args.drive, cache, |_| {
                None
            })
            .await
        }
        Command::Retry(args) => {
            let which = match args.tasks.is_empty() {
                true => Clear::Failed,
                false => Clear::Tasks(args.tasks.clone()),
            };
            let invocation = (args.run, Invocation::Retry(args.run, which, None));
            let (bundle, cache) = (args.bundle.as_deref(), cache.as_deref());
            let changes = |run: &sandflow::RunRecord| args.settings(run);
            reopen(&db_path()?, invocation, bundle, &args.drive, cache, changes).await
        }
        Command::Inspect {
            bundle: Some(bundle),
            format,
            limits,
            ..
        } => {
            let sandbox = sandbox(&limits.run_limits(), 1)?;
            let bundle_limits = limits.bundle_limits();
            let flow = load(&sandbox, &bundle, &bundle_limits, cache.as_deref()).await?;
            let workflow = flow.bundle().workflow();
            print!("{}", inspect::render(workflow, flow.dag(), format, None));
            Ok(0)
        }
        Command::Inspect {
            run: Some(run),
            format,
            ..
        } => {
            let store = read_only().await?;
            let record = store.run(run).await.map_err(Failed::input)?;
            let dag = sandflow::Dag::build(&record.workflow).map_err(|e| Failed {
                message: format!("run {run}'s workflow is not a valid DAG: {e}"),
                code: 1,
            })?;
            let tasks = store.tasks(run).await.map_err(Failed::input)?;
            let states = tasks.into_iter().map(|(t, r)| (t, r.state)).collect();
            let shown = inspect::render(&record.workflow, &dag, format, Some(&states));
            print!("{shown}");
            Ok(0)
        }
        Command::Inspect { .. } => unreachable!("clap requires a bundle or --run"),
        Command::Validate { bundle, limits } => {
            let sandbox = sandbox(&limits.run_limits(), 1)?;
            let bundle_limits = limits.bundle_limits();
            let flow = load(&sandbox, &bundle, &bundle_limits, cache.as_deref()).await?;
            let workflow = flow.bundle().workflow();
            println!(
                "{}: workflow `{}` with {} tasks is valid",
                bundle.display(),
                workflow.name,
                workflow.tasks.len()
            );
            Ok(0)
        }
        Command::New(args) => new::new(&args),
        Command::Build(args) => build::build(&args, cache.as_deref()).await,
        Command::Runs { list, command } => match command {
            None => report::list_runs(&read_only().await?, &list).await,
            Some(RunsCommand::Show { run, json, logs }) => {
                report::show_run(&read_only().await?, run, json, logs).await
            }
            Some(RunsCommand::Delete { runs }) => runs::delete(&existing(true).await?, runs).await,
            Some(RunsCommand::Prune(args)) => runs::prune(&existing(true).await?, &args).await,
        },
        Command::Serve(args) => {
            let interrupts = Interrupts::watch()?;
            serve::serve(args, &place()?, cache.as_deref(), interrupts).await
        }
        Command::Worker(args) => {
            let interrupts = Interrupts::watch()?;
            worker::work(args, &place()?, cache.as_deref(), interrupts).await
        }
        Command::Tenant { command } => tenant::tenant(command, &place()?).await,
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Schedules { .. } | Command::Policies { .. } | Command::Alerts { .. } => {
            Err(Failed::input(
                "schedules, policies and alerts act where a server runs: give its URL with \
                 --server and the tenant's token with --token",
            ))
        }
        Command::Output { run, task } => {
            let store = read_only().await?;
            write_output(&report::output(&store, run, &task).await?)
        }
        Command::Logs(args) => logs::local(&read_only().await?, &args).await,
    }
}

/// Whether `command` can be done by the process holding the database, through its door:
/// what the API of `sandflow serve` does for a tenant. A run with grants cannot: grants are
/// the host's, and a door's runs get none.
fn through_door(command: &Command) -> bool {
    match command {
        Command::Run(args) => args.dirs.is_empty() && args.env.is_empty() && args.only.is_empty(),
        Command::Retry(args) => args.tasks.is_empty(),
        Command::Runs { .. } | Command::Output { .. } | Command::Logs(_) => true,
        _ => false,
    }
}

/// Prints the completion script for `shell`, generated from the same definitions that
/// parse the flags, so it is never out of date.
fn completions(shell: clap_complete::Shell) -> u8 {
    clap_complete::generate(
        shell,
        &mut options::command(),
        "sandflow",
        &mut std::io::stdout(),
    );
    0
}

/// A command against a server: what a tenant may do there.
fn remotely(remote: &remote::Remote, command: Command) -> Result<u8, Failed> {
    match command {
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Run(args) => remote.run(&args.bundle, &args.params, args.env, args.drive.json),
        Command::Runs { list, command } => match command {
            None => remote.list_runs(&list),
            Some(RunsCommand::Show { run, json, logs }) => remote.show_run(run, json, logs),
            Some(RunsCommand::Delete { runs }) => remote.delete_runs(&runs),
            Some(RunsCommand::Prune(args)) => remote.prune(&args),
        },
        Command::Output { run, task } => write_output(&remote.output(run, &task)?),
        Command::Logs(args) => remote.logs(&args),
        Command::Retry(args) if args.tasks.is_empty() => remote.retry(args.run, args.drive.json),
        Command::Retry(_) => Err(Failed::input(
            "with --server, retry runs a failed run's failed tasks again; --task works on \
             this machine's database, without --server",
        )),
        Command::Tenant { command } => remote.tenant(command),
        Command::Schedules { command } => {
            let command = command.unwrap_or(schedules::ScheduleCommand::List);
            schedules::schedules(remote, command)
        }
        Command::Policies { command } => {
            policies::policies(remote, command.unwrap_or(policies::PolicyCommand::List))
        }
        Command::Alerts { command } => {
            let command = command.unwrap_or(alerts::AlertCommand::List { limit: 20 });
            alerts::alerts(remote, command)
        }
        _ => Err(Failed::input(
            "with --server, sandflow runs, shows and reads runs and outputs, manages \
             schedules, policies, alerts and tenants; the other commands work on this \
             machine, without --server",
        )),
    }
}

/// Writes a task's output to stdout, as it is.
fn write_output(output: &[u8]) -> Result<u8, Failed> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failed::input(format!("cannot write the output: {e}")))?;
    Ok(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Takes up a run again (a resume or a retry): its bundle from `bundle`, else from where
/// it started, else the copy kept when it ran; under the run's own limits.
async fn reopen(
    db: &Path,
    (id, mut invocation): (u64, Invocation),
    bundle: Option<&Path>,
    drive: &DriveArgs,
    cache: Option<&Path>,
    changes: impl FnOnce(&sandflow::RunRecord) -> Option<RunSettings>,
) -> Result<u8, Failed> {
    let store = Arc::new(door::open_store(db, true).await?);
    let record = store.run(id).await.map_err(Failed::input)?;
    // Refused before the bundle loads, which may take a while.
    if matches!(invocation, Invocation::Resume(_)) && record.state.is_final() {
        return Err(Failed::input(RunError::Final {
            run: record.id,
            state: record.state,
        }));
    }
    // A retry's new settings; checked now, so that a bad grant changes nothing.
    let settings = changes(&record);
    if let Some(settings) = &settings {
        HostGrants
            .resolve("", &settings.grants)
            .await
            .map_err(Failed::input)?;
    }
    let limits = settings
        .as_ref()
        .map_or(&record.limits, |s| &s.limits)
        .clone();
    if let Invocation::Retry(_, _, new) = &mut invocation {
        *new = settings;
    }
    let mut interrupts = Interrupts::watch()?;
    let options = drive.options();
    let sandbox = sandbox(&limits, options.concurrency)?;
    let bundle_limits = BundleLimits {
        describe: limits.clone(),
        ..BundleLimits::default()
    };
    let path = bundle.unwrap_or(&record.bundle);
    let loading = load(&sandbox, path, &bundle_limits, cache);
    let mut flow = interrupts.unless(loading).await;
    let changed = flow
        .as_ref()
        .map_or(true, |f| f.bundle().hash() != record.bundle_hash);
    let kept = cache.and_then(|cache| kept::kept(cache, &record.bundle_hash));
    if let (true, None, Some(kept)) = (changed, bundle, kept) {
        eprintln!(
            "{} is not the bundle run {} started with (it is gone or was rebuilt): using the \
             copy kept at {}",
            path.display(),
            record.id,
            kept.display()
        );
        let loading = load(&sandbox, &kept, &bundle_limits, cache);
        flow = interrupts.unless(loading).await;
    }
    // A run of some of the workflow's tasks (`run --only`) goes on with those.
    let mut flow = flow?;
    if *flow.workflow() != record.workflow {
        let names: Vec<String> = record
            .workflow
            .tasks
            .iter()
            .map(|t| t.name.clone())
            .collect();
        if let Ok(narrowed) = flow.only(&names) {
            flow = narrowed;
        }
    }
    let engine = Engine::from_sandbox(sandbox, store);
    let held = (db, &limits);
    let json = drive.json;
    drive_run(&engine, held, &flow, invocation, options, json, interrupts).await
}

/// Starts or resumes a run, stopping it on Ctrl-C or SIGTERM, and turns how it ended into
/// the exit code: 0 succeeded, 1 failed or stopped by a limit, 130 interrupted (as shells
/// report Ctrl-C).
/// Meanwhile, other processes reach the database through this one's door; the command
/// ends once the runs they started here have ended too.
async fn drive_run(
    engine: &Engine,
    held: (&Path, &RunLimits),
    flow: &Flow,
    invocation: Invocation,
    options: RunOptions,
    json: bool,
    mut interrupts: Interrupts,
) -> Result<u8, Failed> {
    let door = door::open(held.0, engine, held.1).await;
    let interrupted = async move { interrupts.next().await };
    let started = |run: &sandflow::RunHandle| {
        if let Some(door) = &door {
            door.show(run);
        }
    };
    let watch = (started, interrupted);
    let report = report::run(engine, flow, invocation, options, json, watch).await;
    if let Some(door) = door {
        door.close(Interrupts::watch()?).await;
    }
    let report = report.map_err(|e| Failed {
        code: if e.is_bad_input() { 2 } else { 1 },
        message: e.to_string(),
    })?;
    let (id, state) = (report.run.id, report.run.state);
    if !state.is_final() {
        eprintln!("run {id} {state}: continue it with `sandflow resume {id}`");
    }
    Ok(match state {
        RunState::Succeeded => 0,
        RunState::Interrupted => 130,
        _ => 1,
    })
}

/// Ctrl-C and SIGTERM. Watched from the moment a run command starts, so that a signal that
/// arrives while the bundle loads still stops the run cleanly rather than killing the
/// process (which would leave the run resumable too, but marked `running`).
struct Interrupts {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl Interrupts {
    fn watch() -> Result<Self, Failed> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watch = |kind| {
                signal(kind).map_err(|e| Failed {
                    message: format!("cannot watch for Ctrl-C and SIGTERM: {e}"),
                    code: 1,
                })
            };
            Ok(Self {
                signals: [
                    watch(SignalKind::interrupt())?,
                    watch(SignalKind::terminate())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// `work`, unless a signal comes first: then the command ends with exit code 130
    /// before anything was written (a `describe` that sleeps must not hold the process).
    async fn unless<T>(
        &mut self,
        work: impl Future<Output = Result<T, Failed>>,
    ) -> Result<T, Failed> {
        tokio::select! {
            done = work => done,
            () = self.next() => Err(Failed {
                message: "interrupted while loading the bundle; nothing was started".into(),
                code: 130,
            }),
        }
    }

    /// Completes on the first of the signals.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Loads and validates a bundle: everything that can be wrong with the user's input is
/// found here, before a database is opened.
/// The bundle at `path`, loaded, with its workflow validated.
async fn load(
    sandbox: &Sandbox,
    path: &Path,
    limits: &BundleLimits,
    cache: Option<&Path>,
) -> Result<Flow, Failed> {
    let bundle = Bundle::load(sandbox, path, limits, cache)
        .await
        .map_err(Failed::input)?;
    Flow::new(bundle).map_err(|e| {
        Failed::input(format!(
            "bundle {} describes an invalid workflow: {e}",
            path.display()
        ))
    })
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader left (`sandflow runs | head`)
/// fails, and `println!` panics on the failure. A command line tool should end quietly
/// instead, as other tools do: the default action ends the process at the first write. A
/// run's report is printed after the run has ended and its end is stored; only its first
/// line comes earlier, and a run stopped there is resumable like any interrupted one.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Each task may hold up to 256 open handles (see the README's limits), and 64 run at once
/// by default: more than the soft limit of 1,024 open files many systems start processes
/// with. The hard limit is the operator's ceiling; the soft one is only a default, which
/// servers commonly raise to the hard one.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: `getrlimit` and `setrlimit` only read and write the struct passed to them.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    /// `--help` is the manual a user reaches first: every command, argument and option
    /// says what it is.
    #[test]
    fn every_command_argument_and_option_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::options::command(), "sandflow", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }
}
