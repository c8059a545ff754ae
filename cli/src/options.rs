//! The options that say where a command works (its database, cache and server) and how
//! sandflow reports on itself. Each is added only to the commands that heed it, by one
//! table, so that `completions --db X` is refused instead of ignored and each command's
//! help lists what it heeds. They are global within their command: `schedules --server U
//! list` and `schedules list --server U` are the same.

use crate::logging::LogFormat;
use clap::builder::{Arg, ArgAction, EnumValueParser};
use clap::{ArgMatches, CommandFactory};
use std::path::PathBuf;

/// A group of options a command takes together.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Group {
    /// `--db`
    Db,
    /// `--store`: a PostgreSQL database instead of the `--db` file.
    Store,
    /// `--cache-dir`, `--no-cache`
    Cache,
    /// `--server`, `--token`
    Server,
    /// `--log-format`
    Log,
    /// `--otlp-endpoint`: only commands that run tasks have traces to export.
    Trace,
}

use Group::{Cache, Db, Log, Server, Store, Trace};

/// Which command takes which groups. Every command is named, so that a new one is decided
/// on (a unit test checks).
const TAKES: &[(&str, &[Group])] = &[
    ("run", &[Db, Cache, Server, Log, Trace]),
    ("resume", &[Db, Cache, Log, Trace]),
    ("retry", &[Db, Cache, Server, Log, Trace]),
    ("inspect", &[Db, Cache, Log]),
    ("validate", &[Cache, Log]),
    ("new", &[]),
    ("build", &[Cache, Log]),
    ("runs", &[Db, Server, Log]),
    ("output", &[Db, Server, Log]),
    ("logs", &[Db, Server, Log]),
    ("serve", &[Db, Store, Cache, Log, Trace]),
    ("worker", &[Store, Cache, Log, Trace]),
    ("completions", &[]),
    ("tenant", &[Db, Store, Server, Log]),
    ("schedules", &[Server, Log]),
    ("policies", &[Server, Log]),
    ("alerts", &[Server, Log]),
];

const HEADING: &str = "Where and how";

impl Group {
    fn args(self) -> Vec<Arg> {
        let option =
            |name: &'static str| Arg::new(name).long(name).global(true).help_heading(HEADING);
        match self {
            Db => vec![
                option("db")
                    .env("SANDFLOW_DB")
                    .value_name("PATH")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "The run database [default: $XDG_DATA_HOME/sandflow/sandflow.redb, \
                         i.e. ~/.local/share/sandflow/sandflow.redb]",
                    ),
            ],
            Store => vec![
                option("store")
                    .env("SANDFLOW_STORE")
                    .value_name("URL")
                    .help(
                        "Keep runs, tenants and bundles in this PostgreSQL database, not in \
                         the --db file: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE",
                    ),
            ],
            Cache => vec![
                option("cache-dir")
                    .env("SANDFLOW_CACHE_DIR")
                    .value_name("DIR")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "Where compiled bundles are cached [default: $XDG_CACHE_HOME/sandflow, \
                         i.e. ~/.cache/sandflow]",
                    ),
                option("no-cache")
                    .action(ArgAction::SetTrue)
                    .help("Compile bundles afresh instead of using the cache"),
            ],
            Server => vec![
                option("server")
                    .env("SANDFLOW_SERVER")
                    .value_name("URL")
                    .help(
                        "Talk to a `sandflow serve` at URL instead of the database, as the \
                         tenant whose token --token gives",
                    ),
                option("token")
                    .env("SANDFLOW_TOKEN")
                    .value_name("TOKEN")
                    .hide_env_values(true)
                    .help("The tenant's API token, with --server"),
            ],
            Log => vec![
                option("log-format")
                    .env("SANDFLOW_LOG_FORMAT")
                    .value_parser(EnumValueParser::<LogFormat>::new())
                    .default_value("text")
                    .help(
                        "How sandflow's own log is written to stderr (filtered by RUST_LOG): \
                         lines for people, or one JSON object a line with the run, task and \
                         attempt it is about",
                    ),
            ],
            Trace => vec![
                option("otlp-endpoint")
                    .env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .value_name("URL")
                    .help(
                        "Export each run as an OpenTelemetry trace, with a span per task \
                         attempt, to this OTLP/HTTP collector (protobuf to URL/v1/traces), \
                         such as http://localhost:4318",
                    ),
            ],
        }
    }
}

/// The command line's definition: the commands of [`crate::Cli`], each with its groups.
pub fn command() -> clap::Command {
    TAKES
        .iter()
        .fold(crate::Cli::command(), |cli, (name, groups)| {
            cli.mut_subcommand(name, |command| with(command, groups))
        })
}

/// `command` taking `groups`, before and after its subcommand's name; but a command whose
/// own options conflict with its subcommands (`runs --state failed` lists, `runs show`
/// shows) takes them after its last word, as its subcommands' own.
fn with(command: clap::Command, groups: &[Group]) -> clap::Command {
    let args = || groups.iter().flat_map(|g| g.args());
    if !command.is_args_conflicts_with_subcommands_set() {
        return command.args(args());
    }
    let local = |command: clap::Command| command.args(args().map(|a| a.global(false)));
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    names.iter().fold(local(command), |command, name| {
        command.mut_subcommand(name, local)
    })
}

/// What the options of this invocation say, whichever command it is; an option its command
/// does not take reads as not given.
#[derive(Default)]
pub struct Context {
    pub db: Option<PathBuf>,
    pub store: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
    pub server: Option<String>,
    pub token: Option<String>,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
}

impl Context {
    pub fn from_matches(matches: &ArgMatches) -> Self {
        // Global options reach the innermost subcommand's matches.
        let mut leaf = matches;
        while let Some((_, sub)) = leaf.subcommand() {
            leaf = sub;
        }
        fn get<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
            m.try_get_one::<T>(id).ok().flatten().cloned()
        }
        Self {
            db: get(leaf, "db"),
            store: get(leaf, "store"),
            cache_dir: get(leaf, "cache-dir"),
            no_cache: get(leaf, "no-cache").unwrap_or(false),
            server: get(leaf, "server"),
            token: get(leaf, "token"),
            log_format: get(leaf, "log-format").unwrap_or_default(),
            otlp_endpoint: get(leaf, "otlp-endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_given_its_options() {
        let names: Vec<_> = crate::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let table: Vec<_> = TAKES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, table);
    }

    fn parse(args: &[&str]) -> Result<Context, clap::Error> {
        let args = std::iter::once("sandflow").chain(args.iter().copied());
        command()
            .try_get_matches_from(args)
            .map(|m| Context::from_matches(&m))
    }

    #[test]
    fn an_option_is_taken_where_it_is_heeded_only() {
        let refused = |args: &[&str]| {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{args:?}"
            );
        };
        refused(&["completions", "bash", "--db", "x"]);
        refused(&["validate", "b.wasm", "--db", "x"]);
        refused(&["resume", "1", "--server", "http://h"]);
        refused(&["schedules", "--db", "x"]);
        refused(&["runs", "--otlp-endpoint", "http://h"]);
        refused(&["--db", "x", "runs"]);
    }

    #[test]
    fn a_command_s_options_are_read_before_and_after_its_subcommand_s_name() {
        let before = parse(&["tenant", "--db", "a", "list"]).unwrap();
        assert_eq!(before.db, Some(PathBuf::from("a")));
        let after = parse(&["tenant", "list", "--db", "b"]).unwrap();
        assert_eq!(after.db, Some(PathBuf::from("b")));
        // `runs` takes its own options, or a subcommand.
        let listed = parse(&["runs", "--db", "a", "--state", "failed"]).unwrap();
        assert_eq!(listed.db, Some(PathBuf::from("a")));
        let shown = parse(&["runs", "show", "1", "--db", "b"]).unwrap();
        assert_eq!(shown.db, Some(PathBuf::from("b")));
        let run = parse(&["run", "b.wasm", "--no-cache", "--log-format", "json"]).unwrap();
        assert!(run.no_cache);
        assert_eq!(run.log_format, LogFormat::Json);
        let server = parse(&[
            "schedules",
            "set",
            "w",
            "--server",
            "http://h",
            "--token",
            "t",
        ]);
        let server = server.unwrap();
        assert_eq!(server.server.as_deref(), Some("http://h"));
        assert_eq!(server.token.as_deref(), Some("t"));
    }
}
