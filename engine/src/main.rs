//! The `sandflow` command line: a thin layer over the `sandflow` library that parses flags,
//! prints reports and maps outcomes to exit codes (0 success, 1 run failed, 2 bad input).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
