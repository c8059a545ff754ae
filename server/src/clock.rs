//! Where the service reads the time its schedules fire at.
//!
//! Schedules are tested as users run them, on the real binary, over days of ticks and
//! across downtime: a test cannot wait for real minutes to pass, so the time can come from
//! a file the test writes (`sandflow serve --clock-file`). Only the schedules read it;
//! records, deadlines and timeouts keep the system clock.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time schedules see, in milliseconds since the Unix epoch.
pub trait Clock: std::fmt::Debug + Send + Sync {
    /// Now.
    fn now_ms(&self) -> u64;

    /// The longest the schedules' loop sleeps before it reads the clock again: a clock
    /// that moves without telling (a system clock set anew, a file rewritten) is noticed
    /// this late at most.
    fn max_wait(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that reads its time from a file holding milliseconds since the Unix epoch, as
/// decimal text. While the file is missing or unreadable, time stands at 0: no tick is
/// due, nothing fires.
#[derive(Debug)]
pub struct FileClock(pub PathBuf);

impl Clock for FileClock {
    fn now_ms(&self) -> u64 {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A test moves this clock by hours at a time, in real milliseconds.
    fn max_wait(&self) -> Duration {
        Duration::from_millis(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_clock_reads_its_file_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FileClock(dir.path().join("now"));
        assert_eq!(clock.now_ms(), 0, "no file yet");
        std::fs::write(&clock.0, "1700000000000\n").unwrap();
        assert_eq!(clock.now_ms(), 1_700_000_000_000);
        std::fs::write(&clock.0, "1700000060000").unwrap();
        assert_eq!(clock.now_ms(), 1_700_000_060_000);
    }
}
