//! Following a pod's log into the Windmill job log: the main container's output is streamed
//! (`follow`, `timestamps`), resumed with `sinceTime` after a break without repeating or losing
//! lines, and, unless the stream reached its end with the result trailer complete, read once more
//! after the container ended to pick up the tail and the trailer. Nonce-marked lines (trailer,
//! progress) are taken out of the output.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;

use super::Inner;
use super::render::MAIN_CONTAINER;
use crate::domain::Progress;
use crate::logs::LogSink;
use crate::trailer::{self, Line};

/// After the container ended, how long the followed log may stay silent before it counts as
/// drained.
const FOLLOW_QUIET: Duration = Duration::from_secs(2);
/// The longest one plain read of a finished container's log may take.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A container log, line by line.
pub(super) type LineStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

/// The next line of the stream, or never when there is none.
pub(super) async fn next_line(stream: &mut Option<LineStream>) -> Option<std::io::Result<Vec<u8>>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Takes in the lines of one attempt's container log: output goes to the job log once, the
/// trailer to its decoder, progress figures to the job's [`Progress`].
///
/// `sinceTime` has second precision, so a resumed read repeats the lines of the last second;
/// lines are told apart by their nanosecond timestamps and, for equal ones, by how many were
/// taken.
pub(super) struct LogFollower<'a> {
    /// Lines taken per timestamp (only timestamps of the newest second are kept).
    taken: HashMap<DateTime<Utc>, usize>,
    /// Lines per timestamp in the current read.
    current: HashMap<DateTime<Utc>, usize>,
    newest: Option<DateTime<Utc>>,
    /// Output lines to pass over: already logged by a worker that stopped.
    pub(super) skip: usize,
    /// A followed stream reached its end (not a break): the container's log was complete then.
    reached_end: bool,
    decoder: trailer::Decoder,
    logs: &'a LogSink,
    progress: &'a Progress,
}

impl<'a> LogFollower<'a> {
    pub(super) fn new(
        decoder: trailer::Decoder,
        logs: &'a LogSink,
        progress: &'a Progress,
    ) -> Self {
        Self {
            taken: HashMap::new(),
            current: HashMap::new(),
            newest: None,
            skip: 0,
            reached_end: false,
            decoder,
            logs,
            progress,
        }
    }

    /// The trailer's decoder.
    pub(super) fn decoder(&self) -> &trailer::Decoder {
        &self.decoder
    }

    /// A followed stream ended at its end, not by breaking.
    pub(super) fn reached_end(&mut self) {
        self.reached_end = true;
    }

    /// Everything is read: a followed stream reached its end and the runner's trailer, the last
    /// thing it prints, is complete. No further read of the log is needed.
    pub(super) fn drained(&self) -> bool {
        self.reached_end && self.decoder.complete()
    }

    fn resume_from(&self) -> Option<DateTime<Utc>> {
        self.newest
    }

    fn begin_read(&mut self) {
        self.current.clear();
        self.reached_end = false;
        if let Some(newest) = self.newest {
            let second = newest.timestamp();
            self.taken.retain(|t, _| t.timestamp() >= second);
        }
    }

    /// Takes one line (`<RFC 3339 timestamp> <text>`) of the log.
    pub(super) fn accept(&mut self, line: &[u8]) {
        let text = crate::logs::sanitize(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (stamp, text) = match text.split_once(' ') {
            Some((t, rest)) => match DateTime::parse_from_rfc3339(t) {
                Ok(t) => (Some(t.with_timezone(&Utc)), rest),
                Err(_) => (None, text),
            },
            None => match DateTime::parse_from_rfc3339(text) {
                Ok(t) => (Some(t.with_timezone(&Utc)), ""),
                Err(_) => (None, text),
            },
        };
        if let Some(stamp) = stamp {
            let count = self.current.entry(stamp).or_default();
            *count += 1;
            let taken = self.taken.entry(stamp).or_default();
            if *count <= *taken {
                return;
            }
            *taken = *count;
            if self.newest.is_none_or(|t| stamp > t) {
                self.newest = Some(stamp);
            }
        }
        match self.decoder.push(text) {
            Ok(Line::Trailer) => {}
            Ok(Line::Progress { memory_peak_kib }) => {
                self.progress.record_memory_peak_kib(memory_peak_kib);
            }
            Ok(Line::Output) if self.skip > 0 => self.skip -= 1,
            Ok(Line::Output) => self.logs.line(text.as_bytes()),
            Err(error) => self.logs.note(&format!("result trailer: {error}")),
        }
    }
}

impl Inner {
    /// Opens the main container's log from where the follower stopped (timestamps on).
    pub(super) async fn open_log(
        &self,
        pod: &Pod,
        follower: &mut LogFollower<'_>,
        follow: bool,
    ) -> Option<LineStream> {
        let name = pod.metadata.name.clone()?;
        let params = LogParams {
            container: Some(MAIN_CONTAINER.into()),
            follow,
            timestamps: true,
            since_time: follower
                .resume_from()
                .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).ok()),
            ..LogParams::default()
        };
        self.limiter.acquire().await;
        match self.pods.log_stream(&name, &params).await {
            Ok(reader) => {
                follower.begin_read();
                Some(Box::pin(futures::stream::unfold(
                    reader,
                    |mut reader| async move {
                        let mut line = Vec::new();
                        match reader.read_until(b'\n', &mut line).await {
                            Ok(0) => None,
                            Ok(_) => Some((Ok(line), reader)),
                            Err(error) => Some((Err(error), reader)),
                        }
                    },
                )))
            }
            Err(error) => {
                tracing::debug!(%error, "opening the pod log failed; retrying");
                None
            }
        }
    }

    /// After the container ended: drains the followed stream; unless that read the log to its end
    /// with the trailer, one plain read from the last line seen picks up whatever the stream
    /// missed (the trailer included).
    pub(super) async fn read_to_end(
        &self,
        pod: &Pod,
        stream: Option<LineStream>,
        follower: &mut LogFollower<'_>,
        patience: Duration,
    ) {
        // The followed stream ends with the container's log; stop waiting on it once it goes
        // quiet, so that the plain reads below always get their time.
        if let Some(mut stream) = stream {
            loop {
                match tokio::time::timeout(FOLLOW_QUIET, stream.next()).await {
                    Ok(Some(Ok(line))) => follower.accept(&line),
                    Ok(None) => {
                        follower.reached_end();
                        break;
                    }
                    Ok(Some(Err(_))) | Err(_) => break,
                }
            }
        }
        if follower.drained() {
            return;
        }
        // The runner prints the trailer before it exits, so a complete read holds it; the API
        // may still fail under load, or the node may lag in serving the last lines: read again
        // (from the last line seen) until the trailer is complete, at least once, then until the
        // deadline.
        let deadline = tokio::time::Instant::now() + patience;
        let mut pauses = crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if let Some(mut stream) = self.open_log(pod, follower, false).await {
                let read_until = tokio::time::Instant::now() + READ_TIMEOUT;
                while let Ok(Some(Ok(line))) =
                    tokio::time::timeout_at(read_until, stream.next()).await
                {
                    follower.accept(&line);
                }
            }
            if follower.decoder().complete() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::LogSettings;
    use crate::domain::JobId;
    use crate::logs::LogHub;
    use crate::queue::{MemoryQueue, Queue};

    /// A job's log in a memory queue, and the follower that writes into it.
    struct Fixture {
        memory: MemoryQueue,
        hub: LogHub,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        id: JobId,
    }

    impl Fixture {
        fn new() -> Self {
            let memory = MemoryQueue::new();
            let hub = LogHub::new(Queue::Memory(memory.clone()), LogSettings::default());
            let stop = CancellationToken::new();
            let task = tokio::spawn(hub.clone().run(stop.clone()));
            Self {
                memory,
                hub,
                stop,
                task,
                id: JobId::new_v4(),
            }
        }

        async fn finish(self, sink: LogSink) -> String {
            sink.flush().await;
            let log = self.memory.log(self.id);
            self.stop.cancel();
            self.task.await.unwrap();
            log
        }
    }

    fn at(t: &str, text: &str) -> Vec<u8> {
        format!("2026-01-01T00:00:{t}Z {text}\n").into_bytes()
    }

    #[tokio::test]
    async fn a_resumed_log_read_neither_repeats_nor_loses_lines() {
        let fixture = Fixture::new();
        let sink = fixture.hub.sink(fixture.id, "ws");
        let progress = Progress::new();
        let mut follower = LogFollower::new(trailer::Decoder::new("n", 1 << 20), &sink, &progress);

        follower.begin_read();
        for line in [
            at("00.5", "zero"),
            at("01.1", "a"),
            at("01.2", "b"),
            at("01.2", "b again"),
        ] {
            follower.accept(&line);
        }
        // The stream broke; sinceTime has second precision, so the server repeats second 01.
        assert_eq!(follower.resume_from().map(|t| t.timestamp() % 60), Some(1));
        follower.begin_read();
        for line in [
            at("01.1", "a"),
            at("01.2", "b"),
            at("01.2", "b again"),
            at("01.2", "b third"),
            at("02.0", "c"),
        ] {
            follower.accept(&line);
        }
        // The trailer is not user output.
        for line in trailer::encode(
            "n",
            trailer::Status::Ok,
            &serde_json::json!(7),
            None,
            None,
            1,
        )
        .lines()
        {
            follower.accept(&at("02.5", line));
        }
        assert_eq!(
            follower.decoder().finish().unwrap().payload,
            serde_json::json!(7)
        );
        drop(follower);
        assert_eq!(
            fixture.finish(sink).await,
            "zero\na\nb\nb again\nb third\nc\n"
        );
    }

    #[tokio::test]
    async fn progress_lines_raise_the_memory_peak_and_are_not_logged() {
        let fixture = Fixture::new();
        let sink = fixture.hub.sink(fixture.id, "ws");
        let progress = Progress::new();
        let heartbeat = progress.clone();
        let mut follower = LogFollower::new(trailer::Decoder::new("n", 1 << 20), &sink, &progress);
        follower.begin_read();
        follower.accept(&at("00.1", "before"));
        follower.accept(&at(
            "00.2",
            trailer::encode_progress("n", 30_000).trim_end(),
        ));
        assert_eq!(heartbeat.memory_peak_kib(), Some(30_000));
        follower.accept(&at(
            "01.2",
            trailer::encode_progress("n", 61_000).trim_end(),
        ));
        follower.accept(&at("01.3", "after"));
        // Another nonce's progress line is the user's output, and changes nothing.
        follower.accept(&at(
            "01.4",
            trailer::encode_progress("forged", 9_999_999).trim_end(),
        ));
        assert_eq!(heartbeat.memory_peak_kib(), Some(61_000));
        drop(follower);
        assert_eq!(
            fixture.finish(sink).await,
            "before\nafter\n--flext-result forged progress memory_peak_kib=9999999\n"
        );
    }
}
