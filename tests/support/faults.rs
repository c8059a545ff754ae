//! Page faults, for the tests and benchmarks that measure memory touched anew rather than
//! time: a count that repeats from run to run, where a duration does not.

/// Minor page faults the calling thread has taken so far. A current-thread runtime runs
/// its attempts on the thread that drives it, so the difference across a call counts them.
pub fn minor_faults() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    usage.ru_minflt
}
