//! Job logs: every running job writes lines into a [`LogSink`]; one [`LogHub`] task appends them
//! to `job_logs` for all jobs at once, in batches.
//!
//! Guarantees: lines of a job reach Windmill in the order written, none is dropped below the cap
//! (a failed append is retried, not discarded), invalid UTF-8 and NUL bytes are replaced rather
//! than fatal, and past `logs.max_bytes` one truncation line is written and further output is
//! counted and dropped. A job flushes every `fast_flush_interval` while young (the UI shows output
//! at once), then every `slow_flush_interval`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ByteSize, LogSettings};
use crate::domain::JobId;
use crate::metrics::LogCounters;
use crate::queue::{LogChunk, NOTE_PREFIX, Queue};

/// A job's buffer grows at most this much before it is flushed early.
const EARLY_FLUSH_BYTES: usize = 256 << 10;
/// Retry delays after a failed append (see [`crate::backoff`]): from the first, capped at the
/// last, so a database outage is retried often at first and then without hammering it.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

fn retry_delays() -> impl Iterator<Item = Duration> {
    crate::backoff::delays(RETRY_FIRST, RETRY_CAP)
}

#[derive(Debug)]
struct JobLog {
    workspace: String,
    buf: String,
    accepted: u64,
    dropped: u64,
    truncated: bool,
    started: Instant,
    last_flush: Instant,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<JobId, JobLog>,
    waiters: Vec<(JobId, oneshot::Sender<()>)>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    settings: LogSettings,
    counters: LogCounters,
    state: Mutex<State>,
    wake: Notify,
}

/// Collects the output of all running jobs and appends it to `job_logs` in batches.
#[derive(Debug, Clone)]
pub struct LogHub {
    inner: Arc<Inner>,
}

impl LogHub {
    /// A hub writing to `queue`. Call [`LogHub::run`] to start flushing.
    #[must_use]
    pub fn new(queue: Queue, settings: LogSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                settings,
                counters: LogCounters::default(),
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        }
    }

    /// The same hub, counting appended bytes and dropped lines into `counters`. Call before
    /// the hub is shared.
    #[must_use]
    pub fn counting(mut self, counters: LogCounters) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.counters = counters;
        }
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the log of a job.
    #[must_use]
    pub fn sink(&self, id: JobId, workspace: &str) -> LogSink {
        let now = Instant::now();
        self.state().jobs.entry(id).or_insert_with(|| JobLog {
            workspace: workspace.to_owned(),
            buf: String::new(),
            accepted: 0,
            dropped: 0,
            truncated: false,
            started: now,
            last_flush: now,
        });
        LogSink {
            hub: self.clone(),
            id,
        }
    }

    /// Flushes until `stop` is canceled, then flushes what is left and returns.
    pub async fn run(self, stop: CancellationToken) {
        let tick = (self.inner.settings.fast_flush_interval.0 / 5)
            .clamp(Duration::from_millis(10), Duration::from_millis(100));
        let mut retries = retry_delays();
        loop {
            let stopping = stop.is_cancelled();
            match self.flush_round(stopping).await {
                Ok(()) => retries = retry_delays(),
                Err(error) => {
                    let delay = retries.next().unwrap_or(RETRY_CAP);
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        retry_in = ?delay,
                        "appending job logs failed; keeping them and retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            if stopping && self.state().jobs.values().all(|j| j.buf.is_empty()) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.inner.wake.notified() => {}
                () = stop.cancelled(), if !stopping => {}
            }
        }
    }

    /// One batch: takes every due buffer, appends them in one statement, answers flush waiters.
    async fn flush_round(&self, everything: bool) -> Result<(), crate::queue::Error> {
        let now = Instant::now();
        let settings = &self.inner.settings;
        let chunks: Vec<LogChunk> = {
            let mut state = self.state();
            let wanted: Vec<JobId> = state.waiters.iter().map(|(id, _)| *id).collect();
            state
                .jobs
                .iter_mut()
                .filter(|(id, job)| {
                    if job.buf.is_empty() {
                        return false;
                    }
                    let interval = if now.duration_since(job.started) < settings.fast_period.0 {
                        settings.fast_flush_interval.0
                    } else {
                        settings.slow_flush_interval.0
                    };
                    everything
                        || wanted.contains(id)
                        || job.buf.len() >= EARLY_FLUSH_BYTES
                        || now.duration_since(job.last_flush) >= interval
                })
                .map(|(id, job)| {
                    job.last_flush = now;
                    LogChunk {
                        id: *id,
                        workspace: job.workspace.clone(),
                        text: std::mem::take(&mut job.buf),
                    }
                })
                .collect()
        };
        if !chunks.is_empty()
            && let Err(error) = self.inner.queue.append_logs(&chunks).await
        {
            // Put the text back in front of whatever arrived meanwhile: order is kept.
            let mut state = self.state();
            for chunk in chunks {
                if let Some(job) = state.jobs.get_mut(&chunk.id) {
                    job.buf.insert_str(0, &chunk.text);
                }
            }
            return Err(error);
        }
        for chunk in &chunks {
            self.inner.counters.appended(chunk.text.len());
        }
        let mut state = self.state();
        let waiters = std::mem::take(&mut state.waiters);
        for (id, tx) in waiters {
            if state.jobs.get(&id).is_none_or(|j| j.buf.is_empty()) {
                let _ = tx.send(());
            } else {
                state.waiters.push((id, tx));
            }
        }
        Ok(())
    }
}

/// One job's log: write lines, flush before the hand-back, finish when done.
#[derive(Debug)]
pub struct LogSink {
    hub: LogHub,
    id: JobId,
}

impl LogSink {
    /// Appends one line of output (a newline is added). Bytes that are not UTF-8 become U+FFFD.
    pub fn line(&self, bytes: &[u8]) {
        let mut text = sanitize(bytes);
        text.push('\n');
        self.append(&text);
    }

    /// Appends a line written by the worker itself (`[flext] waiting for capacity ...`).
    pub fn note(&self, message: &str) {
        self.append(&format!("{NOTE_PREFIX}{}\n", sanitize(message.as_bytes())));
    }

    fn append(&self, text: &str) {
        let max = self.hub.inner.settings.max_bytes;
        let mut state = self.hub.state();
        let Some(job) = state.jobs.get_mut(&self.id) else {
            return;
        };
        let len = text.len() as u64;
        if job.truncated {
            job.dropped += len;
            self.hub.inner.counters.dropped_line();
            return;
        }
        if job.accepted + len > max.0 {
            job.truncated = true;
            job.dropped += len;
            self.hub.inner.counters.dropped_line();
            job.buf.push_str(&truncation_line(max));
            return;
        }
        job.accepted += len;
        job.buf.push_str(text);
        if job.buf.len() >= EARLY_FLUSH_BYTES {
            self.hub.inner.wake.notify_one();
        }
    }

    /// Returns once everything written so far is committed to `job_logs`.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.hub.state().waiters.push((self.id, tx));
        self.hub.inner.wake.notify_one();
        // The hub answers every waiter unless it stopped; then there is nothing more to wait for.
        let _ = rx.await;
    }

    /// Bytes dropped past the cap so far.
    #[must_use]
    pub fn dropped_bytes(&self) -> u64 {
        self.hub.state().jobs.get(&self.id).map_or(0, |j| j.dropped)
    }

    /// Writes the closing note on dropped output, flushes, and forgets the job.
    pub async fn finish(self) {
        let dropped = self.dropped_bytes();
        if dropped > 0 {
            let mut state = self.hub.state();
            if let Some(job) = state.jobs.get_mut(&self.id) {
                let _ = writeln!(
                    job.buf,
                    "{NOTE_PREFIX}{dropped} bytes of further output were discarded"
                );
            }
        }
        self.flush().await;
        self.hub.state().jobs.remove(&self.id);
    }
}

fn truncation_line(max: ByteSize) -> String {
    format!(
        "{NOTE_PREFIX}log truncated: this job's output passed {max} (logs.max_bytes in the worker config); \
         further output is discarded, the job keeps running\n"
    )
}

/// Text that Postgres accepts: invalid UTF-8 and NUL bytes become U+FFFD, never an error.
#[must_use]
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::format_collect)] // readable expectations
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::queue::MemoryQueue;

    fn settings(max: u64) -> LogSettings {
        LogSettings {
            fast_flush_interval: HumanDuration(Duration::from_millis(500)),
            fast_period: HumanDuration(Duration::from_secs(30)),
            slow_flush_interval: HumanDuration(Duration::from_secs(2)),
            max_bytes: ByteSize(max),
        }
    }

    fn hub(
        max: u64,
    ) -> (
        MemoryQueue,
        LogHub,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let memory = MemoryQueue::new();
        let hub = LogHub::new(Queue::Memory(memory.clone()), settings(max));
        let stop = CancellationToken::new();
        let task = tokio::spawn(hub.clone().run(stop.clone()));
        (memory, hub, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn lines_arrive_in_order_within_the_fast_interval() {
        let (memory, hub, stop, task) = hub(1 << 20);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        for i in 0..1000 {
            sink.line(format!("line {i}").as_bytes());
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(memory.log(id), expected);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn old_jobs_flush_on_the_slow_interval() {
        let (memory, hub, stop, task) = hub(1 << 20);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        tokio::time::sleep(Duration::from_secs(31)).await;
        sink.line(b"first");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            memory.log(id),
            "first\n",
            "a quiet job's first line goes out at the next tick"
        );
        sink.line(b"second");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            memory.log(id),
            "first\n",
            "past fast_period the job flushes every 2 s, not 0.5 s"
        );
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert_eq!(memory.log(id), "first\nsecond\n");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_appends_are_retried_without_loss_or_reordering() {
        let (memory, hub, stop, task) = hub(1 << 20);
        memory.fail_next_log_appends(3);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        sink.line(b"one");
        tokio::time::sleep(Duration::from_millis(550)).await;
        sink.line(b"two");
        sink.line(b"three");
        sink.flush().await;
        assert_eq!(memory.log(id), "one\ntwo\nthree\n");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_utf8_and_nul_are_replaced() {
        let (memory, hub, stop, task) = hub(1 << 20);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        sink.line(b"ok \xff\xfe bytes\0end");
        sink.flush().await;
        assert_eq!(memory.log(id), "ok \u{FFFD}\u{FFFD} bytes\u{FFFD}end\n");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_one_truncation_line_is_written_and_the_rest_counted() {
        let (memory, hub, stop, task) = hub(2048);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        for _ in 0..100 {
            sink.line(&[b'x'; 99]);
        }
        assert_eq!(sink.dropped_bytes(), 100 * 100 - 2000);
        sink.finish().await;
        let log = memory.log(id);
        assert_eq!(log.matches("log truncated").count(), 1, "{log}");
        assert!(log.starts_with(&"x".repeat(99)));
        assert!(log.contains("logs.max_bytes"));
        assert!(
            log.ends_with("8000 bytes of further output were discarded\n"),
            "{log}"
        );
        assert_eq!(log.matches(&"x".repeat(99)).count(), 20);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_the_hub_flushes_everything_left() {
        let (memory, hub, stop, task) = hub(1 << 20);
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        sink.line(b"last words");
        stop.cancel();
        task.await.unwrap();
        assert_eq!(memory.log(id), "last words\n");
    }
}
