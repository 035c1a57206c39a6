//! The `Queue` seam: claim, heartbeat, logs, hand-back, fix-up and registration against Windmill's
//! job queue.
//!
//! [`Queue::Postgres`] talks to Windmill's database (the product) with the statements of `sql/`,
//! written by us from the tables of `windmill/schema/`; [`Queue::Memory`] is a small in-memory
//! queue for unit tests of the worker loop.

pub mod cache;
mod memory;
mod postgres;
mod rows;
pub mod schema;
mod sql;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use memory::MemoryQueue;
pub use postgres::PgQueue;

use crate::domain::{Cancellation, Completion, Job, JobId, JobKind, Outcome};

/// A result whose error is a queue [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached (or dropped the connection): retry with backoff.
    // The cause is not formatted here: it is the `source`, and a printer of the chain shows it
    // once, after this context.
    #[error(
        "cannot reach Windmill's database at {url} (check FLEXT_DATABASE_URL and that Postgres is up)"
    )]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("{what}")]
    Database {
        /// What we were doing.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database is not a Windmill database we understand.
    #[error("{0}")]
    Schema(String),
    /// Our role cannot see or change Windmill's jobs.
    #[error("{0}")]
    Permission(String),
    /// A job row does not have the shape we expect.
    #[error("job {id}: {message}")]
    BadRow {
        /// The job.
        id: JobId,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (connection trouble, serialization failures).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Database { source, .. } => is_transient(source),
            Self::Schema(_) | Self::Permission(_) | Self::BadRow { .. } => false,
        }
    }

    pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { what, source }
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // 40001 serialization_failure, 40P01 deadlock_detected, 57P01 admin_shutdown,
            // 08xxx connection exceptions, 53300 too_many_connections.
            db.code().is_some_and(|c| {
                c == "40001" || c == "40P01" || c == "57P01" || c == "53300" || c.starts_with("08")
            })
        }
        _ => false,
    }
}

/// One job's entry in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The job.
    pub id: JobId,
    /// Its memory peak so far, in KiB.
    pub memory_peak_kib: Option<i32>,
}

/// What the heartbeat learned of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Still ours and running.
    Running,
    /// Windmill asked to cancel it.
    Canceled(Cancellation),
    /// No queue row: completed or deleted elsewhere. Stop; do not hand back.
    Gone,
    /// The row is no longer ours (re-queued by Windmill's zombie monitor, or claimed by another
    /// worker). Stop; do not hand back.
    Lost {
        /// The worker that holds it now, if any.
        worker: Option<String>,
    },
}

/// Everything the hand-back needs.
#[derive(Debug, Clone)]
pub struct HandBack {
    /// The job.
    pub id: JobId,
    /// Its kind before the hand-back (restored by the fix-up).
    pub kind: JobKind,
    /// How it ended and what the run measured.
    pub completion: Completion,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Where a success goes in Windmill's result cache, when the job has a `cache_ttl`.
    pub cache_path: Option<String>,
}

impl HandBack {
    /// The hand-back of `job` with `completion`; a success of a job with a `cache_ttl` is also
    /// saved to Windmill's result cache.
    #[must_use]
    pub fn of(job: &Job, completion: Completion) -> Self {
        Self {
            id: job.id,
            kind: job.kind.clone(),
            completion,
            started_at: job.started_at,
            cache_path: cache::path(job),
        }
    }

    /// The record the fix-up uses to make the completed job look like a native run.
    #[must_use]
    pub fn fix_up_record(&self, worker: &str) -> Value {
        let mut record = serde_json::json!({
            "kind": self.kind.as_str(),
            "outcome": self.completion.outcome.label(),
            "duration_ms": i64::try_from(self.completion.duration.as_millis()).unwrap_or(i64::MAX),
            "started_at": self.started_at.to_rfc3339(),
            "worker": worker,
        });
        if let Some(map) = record.as_object_mut() {
            if let Some(peak) = self.completion.memory_peak_kib {
                map.insert("memory_peak".into(), peak.into());
            }
            if let Outcome::Failure(failure) = &self.completion.outcome {
                map.insert("error".into(), failure.to_error_object());
            }
            if let Some(args) = &self.completion.preprocessed_args {
                // Windmill records a preprocessed job's args as the preprocessor made them.
                map.insert("new_args".into(), args.clone());
            }
        }
        record
    }
}

/// How a hand-back went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandBackResult {
    /// Handed back: a stock worker will complete the job.
    Done {
        /// Whether the job was canceled at hand-back time (whatever our outcome was).
        canceled: bool,
    },
    /// The job is no longer ours (gone, re-queued, or claimed by another worker): nothing changed.
    NotOurs,
}

/// A pending fix-up: the job and, for jobs whose args carry no record (cancels), the record.
#[derive(Debug, Clone, PartialEq)]
pub struct FixUp {
    /// The job.
    pub id: JobId,
    /// The record kept in memory.
    pub record: Value,
}

/// A job on our tag handed to a stock worker's tag without running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The job.
    pub id: JobId,
    /// The tag it went to.
    pub tag: String,
    /// Why (as written to its job log).
    pub why: String,
}

/// A job running under a worker's name in Windmill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedJob {
    /// The job.
    pub id: JobId,
    /// Whether `canceled_by` is set.
    pub canceled: bool,
}

/// Prefix of the lines the worker itself writes into a job log (`[flext-kubernetes] waiting for
/// capacity ...`). It lives with the queue, not in `logs`, because the queue reads it too: a claimed
/// or adopted job carries how many of its own lines `job_logs` already holds, so that the executor
/// resumes the log after them. `logs` writes through the queue, never the other way round.
pub const NOTE_PREFIX: &str = "[flext-kubernetes] ";

/// Lines of a job log that came from the job's own output (not the worker's notes).
#[must_use]
pub fn output_lines(log: &str) -> usize {
    log.lines().filter(|l| !l.starts_with(NOTE_PREFIX)).count()
}

/// A chunk of log text for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The job.
    pub id: JobId,
    /// Its workspace.
    pub workspace: String,
    /// Text to append (valid UTF-8 without NUL bytes).
    pub text: String,
}

/// This worker as the Workers page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPing {
    /// Unique worker name.
    pub name: String,
    /// The host or pod it runs in.
    pub instance: String,
    /// The worker group.
    pub group: String,
    /// The tags it serves.
    pub tags: Vec<String>,
    /// Our version string.
    pub version: String,
    /// One job it runs now, if any.
    pub current_job: Option<(JobId, String)>,
    /// Jobs finished since start.
    pub jobs_executed: i32,
    /// Share of the worker's slots spent running jobs since start, 0..1.
    pub occupancy: f32,
    /// The same over the last 15 s, once the worker has run that long.
    pub occupancy_15s: Option<f32>,
    /// The same over the last 5 minutes.
    pub occupancy_5m: Option<f32>,
    /// The same over the last 30 minutes.
    pub occupancy_30m: Option<f32>,
    /// CPUs of the worker's host.
    pub vcpus: Option<i64>,
    /// Memory of the worker's host, bytes.
    pub memory: Option<i64>,
    /// The worker's own RSS, bytes.
    pub memory_usage: Option<i64>,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
}

/// The queue: Windmill's Postgres, or memory for unit tests.
#[derive(Debug, Clone)]
pub enum Queue {
    /// Windmill's Postgres.
    Postgres(PgQueue),
    /// In memory, for unit tests.
    Memory(MemoryQueue),
}

impl Queue {
    /// Claims the next job on `tags`, if any, as `worker`.
    pub async fn claim(&self, worker: &str, tags: &[String]) -> Result<Option<Job>> {
        match self {
            Self::Postgres(q) => q.claim(worker, tags).await,
            Self::Memory(q) => Ok(q.claim(worker, tags)),
        }
    }

    /// Takes over a running job whose work this worker found still going (after a restart), if
    /// its row is ours or its worker stopped pinging for `stale`.
    pub async fn adopt(&self, worker: &str, id: JobId, stale: Duration) -> Result<Option<Job>> {
        match self {
            Self::Postgres(q) => q.adopt(worker, id, stale).await,
            Self::Memory(q) => Ok(q.adopt(worker, id)),
        }
    }

    /// Hands the jobs on `tags` that must not wait for us to stock workers: kinds we never run,
    /// and queued jobs already canceled or failed (see `sql/route_elsewhere.sql`). At most
    /// `limit` at a time.
    pub async fn route_elsewhere(
        &self,
        tags: &[String],
        finalize_tag: &str,
        limit: i64,
    ) -> Result<Vec<Routed>> {
        match self {
            Self::Postgres(q) => q.route_elsewhere(tags, finalize_tag, limit).await,
            Self::Memory(_) => Ok(Vec::new()),
        }
    }

    /// The result Windmill's cache holds for the job, if any and not expired.
    pub async fn cached_result(&self, job: &Job) -> Result<Option<Value>> {
        let Some(path) = cache::path(job) else {
            return Ok(None);
        };
        match self {
            Self::Postgres(q) => q.cached_result(&job.workspace, &path).await,
            Self::Memory(_) => Ok(None),
        }
    }

    /// The jobs running under `worker`'s name in Windmill.
    pub async fn owned(&self, worker: &str) -> Result<Vec<OwnedJob>> {
        match self {
            Self::Postgres(q) => q.owned(worker).await,
            Self::Memory(q) => Ok(q.owned(worker)),
        }
    }

    /// Whether Windmill still has the job in its queue.
    pub async fn in_queue(&self, id: JobId) -> Result<bool> {
        match self {
            Self::Postgres(q) => q.in_queue(id).await,
            Self::Memory(q) => Ok(q.running().contains(&id)),
        }
    }

    /// Refreshes the ping of `beats` and reports each job's state, in the order given.
    pub async fn heartbeat(&self, worker: &str, beats: &[Beat]) -> Result<Vec<(JobId, JobState)>> {
        match self {
            Self::Postgres(q) => q.heartbeat(worker, beats).await,
            Self::Memory(q) => Ok(q.heartbeat(worker, beats)),
        }
    }

    /// Cancels a job that ran past its timeout, the way Windmill does.
    pub async fn cancel_for_timeout(
        &self,
        worker: &str,
        id: JobId,
        timeout: Duration,
    ) -> Result<()> {
        match self {
            Self::Postgres(q) => q.cancel_for_timeout(worker, id, timeout).await,
            Self::Memory(q) => {
                q.cancel(
                    id,
                    "timeout",
                    Some(format!("duration > {}", timeout.as_secs())),
                );
                Ok(())
            }
        }
    }

    /// Appends log chunks (at most one per job).
    pub async fn append_logs(&self, chunks: &[LogChunk]) -> Result<()> {
        match self {
            Self::Postgres(q) => q.append_logs(chunks).await,
            Self::Memory(q) => q.append_logs(chunks).map_err(|()| Error::Database {
                what: "appending job logs (failure injected by the memory queue)",
                source: sqlx::Error::PoolTimedOut,
            }),
        }
    }

    /// Hands a finished job back to Windmill: in one transaction, while the queue row is still ours,
    /// writes the outcome into `v2_job` (a success becomes an `identity` job carrying the result, a
    /// failure sets `pre_run_error`; a cancel changes nothing) and re-queues the row on
    /// `finalize_tag`, where a stock worker completes it as if it had run the job
    /// (`sql/lock_for_hand_back.sql`, `hand_back_*.sql`, `requeue_for_finalize.sql`).
    pub async fn hand_back(
        &self,
        worker: &str,
        finalize_tag: &str,
        hand_back: &HandBack,
    ) -> Result<HandBackResult> {
        match self {
            Self::Postgres(q) => q.hand_back(worker, finalize_tag, hand_back).await,
            Self::Memory(q) if q.refuses_hand_back() => Err(Error::Database {
                what: "writing the outcome to v2_job (refused by the memory queue)",
                source: sqlx::Error::Protocol("refused by the memory queue".into()),
            }),
            Self::Memory(q) => Ok(q.hand_back(worker, finalize_tag, hand_back)),
        }
    }

    /// Runs the post-completion fix-up for those of `pending` that Windmill has completed;
    /// returns their ids.
    pub async fn fix_up(&self, pending: &[FixUp]) -> Result<Vec<JobId>> {
        match self {
            Self::Postgres(q) => q.fix_up(pending).await,
            Self::Memory(q) => Ok(q.fix_up(pending)),
        }
    }

    /// Jobs handed back within `window` whose fix-up never ran (a worker stopped in between).
    pub async fn stale_fix_ups(&self, window: Duration) -> Result<Vec<JobId>> {
        match self {
            Self::Postgres(q) => q.stale_fix_ups(window).await,
            Self::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Creates or refreshes this worker's `worker_ping` row.
    pub async fn register(&self, ping: &WorkerPing) -> Result<()> {
        match self {
            Self::Postgres(q) => q.register(ping).await,
            Self::Memory(q) => {
                q.register(ping);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
