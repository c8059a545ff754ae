//! What one attempt logged: its `host.log` lines and its stdout and stderr cut into
//! lines, in the order they were written, each with the time it was written, within one
//! budget (the run's log limit).
//!
//! One journal per attempt, shared by the host functions and the two output streams the
//! task's WASI context writes to: a task's `println!` and its panic message are kept like
//! its log lines, with their place among them, instead of being thrown away.

use crate::host::{LimitHit, PLUGIN_TARGET};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// One line a task wrote: through `host.log`, or to stdout or stderr.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// When it was written (a stdout or stderr line: its first byte), in milliseconds
    /// since the Unix epoch; 0 in logs kept by sandflow before 0.2.
    #[serde(default)]
    pub at_ms: u64,
    /// Where it was written.
    #[serde(default)]
    pub stream: LogStream,
    /// How much it matters: as the task said through `host.log`; `info` for stdout and
    /// stderr, which carry no level.
    pub level: LogLevel,
    /// What the task said, without the line's end.
    pub message: String,
}

/// Where a log line was written.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Through `host.log` (the SDK's `ctx.log`, `info!` and the like).
    #[default]
    Log,
    /// The task's standard output (`println!`).
    Stdout,
    /// The task's standard error (`eprintln!`, a panic's message).
    Stderr,
}

impl LogStream {
    /// Its name, as logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// How much a log line matters, as the plugin said.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected the task got past.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// Its name, as logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// What a stored line costs beyond its message: the JSON record around it and a
/// `LogLine` in a `Vec`, rounded up.
pub(crate) const RECORD_OVERHEAD: usize = 96;

/// What `text` costs to keep and store, which the log limit counts, without the record
/// around it: control characters, quotes and backslashes are escaped in JSON, up to six
/// bytes for one. Counting a message's bytes alone let a task log empty lines without
/// end: gigabytes of memory and database, never the limit.
fn escaped_len(text: &[u8]) -> usize {
    let escaped = text
        .iter()
        .filter(|&&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    text.len() + 5 * escaped
}

/// What a line with `message` costs to keep and store, which the log limit counts.
pub(crate) fn stored_len(message: &str) -> usize {
    RECORD_OVERHEAD + escaped_len(message.as_bytes())
}

/// The most bytes a stream offers a task to write at once: a bound on what one write
/// makes the host copy, as wasmtime's own pipes have.
const WRITE_PERMIT: usize = 64 << 10;

/// One attempt's log, shared by its host state and its two output streams.
#[derive(Clone)]
pub(crate) struct Journal(Arc<Mutex<Lines>>);

struct Lines {
    lines: Vec<LogLine>,
    /// What the lines (and the partial ones) cost so far.
    bytes: usize,
    limit: usize,
    /// Whether a write or a line was refused for passing the limit.
    hit: bool,
    /// The line each of stdout and stderr is writing, until its end comes.
    partial: [Partial; 2],
}

#[derive(Default)]
struct Partial {
    text: Vec<u8>,
    at_ms: u64,
}

impl Journal {
    /// An empty journal whose lines may cost `limit` bytes in all.
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Lines {
            lines: Vec::new(),
            bytes: 0,
            limit,
            hit: false,
            partial: Default::default(),
        })))
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        // A panic while the lock was held left whole lines behind: still worth keeping.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a `host.log` line, unless it would pass the limit.
    pub(crate) fn log(&self, level: LogLevel, message: String) -> Result<(), LimitHit> {
        let mut lines = self.lines();
        lines.charge(stored_len(&message))?;
        // Through tracing as well, at its own level, in the attempt's span: the host's
        // log shows it with the run, task and attempt it belongs to.
        match level {
            LogLevel::Trace => tracing::trace!(target: PLUGIN_TARGET, "{message}"),
            LogLevel::Debug => tracing::debug!(target: PLUGIN_TARGET, "{message}"),
            LogLevel::Info => tracing::info!(target: PLUGIN_TARGET, "{message}"),
            LogLevel::Warn => tracing::warn!(target: PLUGIN_TARGET, "{message}"),
            LogLevel::Error => tracing::error!(target: PLUGIN_TARGET, "{message}"),
        }
        lines.lines.push(LogLine {
            at_ms: crate::state::now_ms(),
            stream: LogStream::Log,
            level,
            message,
        });
        Ok(())
    }

    /// Appends `bytes` written to `stream`, cutting them into lines; fails, keeping
    /// nothing of them, if they would pass the limit.
    fn write(&self, stream: LogStream, bytes: &[u8]) -> Result<(), LimitHit> {
        let slot = match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
            LogStream::Log => unreachable!("only stdout and stderr are streams"),
        };
        let mut lines = self.lines();
        // Every byte that comes while no line is open opens one, which costs a record;
        // the line ends themselves are not kept.
        let (mut open, mut starts, mut ends) = (!lines.partial[slot].text.is_empty(), 0, 0);
        for &b in bytes {
            starts += usize::from(!open);
            open = b != b'\n';
            ends += usize::from(!open);
        }
        lines.charge(escaped_len(bytes) - 6 * ends + RECORD_OVERHEAD * starts)?;
        let now = crate::state::now_ms();
        let mut rest = bytes;
        while !rest.is_empty() {
            let partial = &mut lines.partial[slot];
            if partial.text.is_empty() {
                partial.at_ms = now;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    partial.text.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    let line = std::mem::take(partial);
                    lines.push(stream, line);
                }
                None => {
                    partial.text.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// Every line, the partial ones last, and the journal empty again.
    pub(crate) fn take(&self) -> Vec<LogLine> {
        let mut lines = self.lines();
        for (slot, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let partial = std::mem::take(&mut lines.partial[slot]);
            if !partial.text.is_empty() {
                lines.push(stream, partial);
            }
        }
        lines.bytes = 0;
        std::mem::take(&mut lines.lines)
    }

    /// The whole lines written so far from the `from`th on. Lines are only ever added,
    /// until `take`: a reader that counts what it has read reads each line once.
    pub(crate) fn written_since(&self, from: usize) -> Vec<LogLine> {
        self.lines().lines.get(from..).unwrap_or_default().to_vec()
    }

    /// Adds whole lines another journal wrote, as they were: a worker's, relayed to the
    /// process that runs the attempt's run, where its log is followed. They count
    /// against the limit as there; lines past it are dropped, which the worker's journal
    /// refused already.
    pub(crate) fn relayed(&self, relayed: impl IntoIterator<Item = LogLine>) {
        let mut lines = self.lines();
        for line in relayed {
            if lines.charge(stored_len(&line.message)).is_err() {
                break;
            }
            lines.lines.push(line);
        }
    }

    /// The limit, if the task tried to pass it: such an attempt fails because of it,
    /// whatever the task did with the error.
    pub(crate) fn limit_hit(&self) -> Option<usize> {
        let lines = self.lines();
        lines.hit.then_some(lines.limit)
    }

    /// What the task wrote to stderr so far, lines joined by `\n`: where a Rust panic's
    /// message is.
    pub(crate) fn stderr(&self) -> String {
        let lines = self.lines();
        let mut text: Vec<&str> = lines
            .lines
            .iter()
            .filter(|l| l.stream == LogStream::Stderr)
            .map(|l| l.message.as_str())
            .collect();
        let partial = String::from_utf8_lossy(&lines.partial[1].text);
        text.push(&partial);
        text.join("\n")
    }

    /// An output stream into this journal, for the task's WASI context.
    pub(crate) fn stream(&self, stream: LogStream) -> Pipe {
        Pipe {
            journal: self.clone(),
            stream,
        }
    }
}

impl Lines {
    fn charge(&mut self, cost: usize) -> Result<(), LimitHit> {
        let bytes = self.bytes.saturating_add(cost);
        if bytes > self.limit {
            self.hit = true;
            return Err(LimitHit::Log { limit: self.limit });
        }
        self.bytes = bytes;
        Ok(())
    }

    fn push(&mut self, stream: LogStream, line: Partial) {
        let mut text = line.text;
        if text.last() == Some(&b'\r') {
            text.pop();
        }
        let message = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Through tracing as well, in the attempt's span, as `host.log` lines are.
        tracing::info!(target: PLUGIN_TARGET, stream = stream.as_str(), "{message}");
        self.lines.push(LogLine {
            at_ms: line.at_ms,
            stream,
            level: LogLevel::Info,
            message,
        });
    }
}

/// The journals of a run's attempts in flight, one per task, shared by the scheduler,
/// which adds and removes them, and the run's control, through which a host shows the
/// lines of an attempt while it runs. An attempt's journal leaves here when the attempt
/// ends, before its lines are committed: a reader sees them here, or stored, or for a
/// moment neither, never both.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<HashMap<String, (u32, Journal)>>>);

impl InFlight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Journal)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `task`'s attempt `attempt` started, writing to `journal`.
    pub(crate) fn started(&self, task: &str, attempt: u32, journal: Journal) {
        self.map().insert(task.to_owned(), (attempt, journal));
    }

    /// `task`'s attempt ended; its journal, if it was in flight.
    pub(crate) fn ended(&self, task: &str) -> Option<Journal> {
        self.map().remove(task).map(|(_, journal)| journal)
    }

    /// Each task with an attempt in flight, and the attempt's number.
    pub(crate) fn attempts(&self) -> Vec<(String, u32)> {
        let mut attempts: Vec<_> = self
            .map()
            .iter()
            .map(|(t, (n, _))| (t.clone(), *n))
            .collect();
        attempts.sort();
        attempts
    }

    /// The number of `task`'s attempt in flight and its whole lines so far.
    pub(crate) fn lines(&self, task: &str) -> Option<(u32, Vec<LogLine>)> {
        // The map's lock is not held while the journal's is taken.
        let journal = self.map().get(task).map(|(n, j)| (*n, j.clone()));
        journal.map(|(attempt, journal)| (attempt, journal.written_since(0)))
    }
}

/// stdout or stderr of one attempt: every write goes into its journal.
#[derive(Clone)]
pub(crate) struct Pipe {
    journal: Journal,
    stream: LogStream,
}

impl IsTerminal for Pipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Pipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// A write past the log limit traps, as `host.log` does: the attempt fails with that
/// limit as its cause, whatever the task would have done with the error.
#[async_trait::async_trait]
impl OutputStream for Pipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.journal
            .write(self.stream, &bytes)
            .map_err(|hit| StreamError::Trap(hit.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Pipe {
    async fn ready(&mut self) {}
}

/// For WASI 0.3 guests; a write past the limit is an error there.
impl tokio::io::AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.journal
                .write(self.stream, buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(lines: &[LogLine]) -> Vec<(LogStream, &str)> {
        lines
            .iter()
            .map(|l| (l.stream, l.message.as_str()))
            .collect()
    }

    #[test]
    fn an_attempt_in_flight_shows_its_whole_lines_until_it_ends() {
        let watched = InFlight::default();
        let journal = Journal::new(1 << 20);
        watched.started("t", 2, journal.clone());
        journal.log(LogLevel::Info, "one".into()).unwrap();
        journal.write(LogStream::Stdout, b"two\nthr").unwrap();
        assert_eq!(watched.attempts(), [("t".to_owned(), 2)]);
        let (attempt, lines) = watched.lines("t").unwrap();
        let (log, stdout) = (LogStream::Log, LogStream::Stdout);
        assert_eq!(attempt, 2);
        assert_eq!(messages(&lines), [(log, "one"), (stdout, "two")]);
        // Its journal leaves with it, and holds the partial line too.
        let ended = watched.ended("t").unwrap();
        assert!(watched.lines("t").is_none() && watched.attempts().is_empty());
        let all = [(log, "one"), (stdout, "two"), (stdout, "thr")];
        assert_eq!(messages(&ended.take()), all);
    }

    #[test]
    fn streams_are_cut_into_lines_in_the_order_they_were_written() {
        let journal = Journal::new(1 << 20);
        journal.write(LogStream::Stdout, b"hel").unwrap();
        journal.write(LogStream::Stderr, b"oops\r\n").unwrap();
        journal.log(LogLevel::Warn, "careful".into()).unwrap();
        journal.write(LogStream::Stdout, b"lo\n\nworld").unwrap();
        journal.write(LogStream::Stdout, b"\xff\n").unwrap();
        journal.write(LogStream::Stderr, b"no end").unwrap();
        let lines = journal.take();
        assert_eq!(
            messages(&lines),
            [
                (LogStream::Stderr, "oops"),
                (LogStream::Log, "careful"),
                (LogStream::Stdout, "hello"),
                (LogStream::Stdout, ""),
                (LogStream::Stdout, "world\u{fffd}"),
                (LogStream::Stderr, "no end"),
            ]
        );
        assert!(lines.iter().all(|l| l.at_ms > 0));
        assert_eq!(lines[1].level, LogLevel::Warn);
        assert!(journal.take().is_empty(), "taken once");
    }

    #[test]
    fn one_limit_counts_every_stream_as_the_stored_lines_cost() {
        // Two lines of stdout cost what two log lines of the same text cost.
        let limit = 2 * stored_len("a\"b");
        let journal = Journal::new(limit);
        journal.log(LogLevel::Info, "a\"b".into()).unwrap();
        journal.write(LogStream::Stdout, b"a\"b\n").unwrap();
        assert!(matches!(
            journal.write(LogStream::Stderr, b"x"),
            Err(LimitHit::Log { limit: l }) if l == limit
        ));
        assert!(journal.log(LogLevel::Info, String::new()).is_err());
        // A flood of empty lines hits the limit too: each costs its record.
        let journal = Journal::new(10 * RECORD_OVERHEAD);
        assert!(journal.write(LogStream::Stdout, &[b'\n'; 11]).is_err());
        journal.write(LogStream::Stdout, &[b'\n'; 10]).unwrap();
        assert_eq!(journal.take().len(), 10);
    }

    #[test]
    fn stderr_so_far_includes_the_line_not_ended() {
        let journal = Journal::new(1 << 20);
        journal
            .write(LogStream::Stderr, b"thread panicked at a.rs:1:2:\n")
            .unwrap();
        journal.write(LogStream::Stdout, b"unrelated\n").unwrap();
        journal.write(LogStream::Stderr, b"boom").unwrap();
        assert_eq!(journal.stderr(), "thread panicked at a.rs:1:2:\nboom");
    }
}
