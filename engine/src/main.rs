//! The `sandflow` command line: a thin layer over the `sandflow` library that parses flags,
//! prints reports and maps outcomes to exit codes (0 success, 1 run failed, 2 bad input).

mod cli;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    raise_open_file_limit();
    cli::main()
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
