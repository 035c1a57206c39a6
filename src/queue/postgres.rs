//! The queue on Windmill's Postgres: binds the statements of [`super::sql`] (written by us from
//! the tables of `windmill/schema/`); `rows.rs` reads their rows into our types.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::rows::{get, job_from_row};
use super::sql::{
    ADMIT, ADOPT, APPEND_LOGS, CACHE_LOOKUP, CACHE_SAVE, CLAIM, DEBOUNCE, FIX_UP,
    HAND_BACK_FAILURE, HAND_BACK_SUCCESS, HEARTBEAT, IN_QUEUE, LOAD_JOB, LOCK_FOR_HAND_BACK,
    OWNED_JOBS, PENDING_FIX_UPS, QUEUE_DEPTH, QUEUED_COUNT, REGISTER, REQUEUE_FOR_FINALIZE,
    RESCHEDULE_FOR_CONCURRENCY, RESTART_PERPETUAL, ROUTE_ELSEWHERE, TIMEOUT,
};
use super::{
    Beat, Error, FixUp, HandBack, HandBackResult, JobState, LogChunk, OwnedJob, Result, Routed,
    WorkerPing,
};
use crate::config::{Secret, redact_url};
use crate::domain::{Cancellation, FailureCategory, Job, JobFailure, JobId, JobKind, Outcome};

/// How many jobs over their concurrency limit one claim call puts back before it reports an
/// empty queue (the next poll goes on).
const MAX_CLAIMS_PER_CALL: usize = 8;

/// Windmill's queue in Postgres.
#[derive(Debug, Clone)]
pub struct PgQueue {
    pool: PgPool,
    never_claimed: Vec<String>,
}

impl PgQueue {
    /// Connects a pool to `url`, failing fast with a clear error when the database is unreachable.
    pub async fn connect(
        url: &Secret,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let shown = redact_url(url.expose());
        let options: PgConnectOptions =
            url.expose().parse().map_err(|source| Error::Unreachable {
                url: shown.clone(),
                source,
            })?;
        let options = options.application_name("flext-kubernetes");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(connect_timeout)
            .connect_with(options)
            .await
            .map_err(|source| Error::Unreachable { url: shown, source })?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            never_claimed: JobKind::NEVER_CLAIMED
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// Whether the database answers within `limit`; else why not.
    pub async fn ping(&self, limit: std::time::Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(limit, sqlx::query(super::sql::PING).execute(&self.pool)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the database does not answer: {error}")),
            Err(_) => Err(format!("the database did not answer within {limit:?}")),
        }
    }

    /// The pool, for the startup checks and tests.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims the next job, applying its concurrency limit as Windmill's pull does: a job over its
    /// limit goes back to the queue for later and the next one is tried.
    pub(super) async fn claim(&self, worker: &str, tags: &[String]) -> Result<Option<Job>> {
        for _ in 0..MAX_CLAIMS_PER_CALL {
            let row = sqlx::query(CLAIM)
                .bind(worker)
                .bind(tags)
                .bind(&self.never_claimed)
                .fetch_optional(&self.pool)
                .await
                .map_err(Error::db("claiming a job"))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut job = job_from_row(&row)?;
            if self.admit(&job, &row).await? {
                if get(&row, "debounced")? {
                    self.debounce(&mut job).await?;
                }
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// Debouncing, as Windmill applies it right after its pull (see `sql/debounce.sql`): the
    /// accumulated argument replaces the job's own for this run, with Windmill's log line; one
    /// that is not a list fails the job, as Windmill's "Pulled job preprocessing error".
    async fn debounce(&self, job: &mut Job) -> Result<()> {
        let Some(row) = sqlx::query(DEBOUNCE)
            .bind(job.id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("debouncing a claimed job"))?
        else {
            return Ok(());
        };
        let Some(arg) = get::<Option<String>>(&row, "arg")? else {
            return Ok(());
        };
        if get::<i64>(&row, "not_lists")? > 0 {
            job.failed_at_claim = Some(JobFailure::new(
                FailureCategory::InvalidJob,
                "Pulled job preprocessing error",
                format!(
                    "cannot consolidate arguments of non-list type. Type provided for argument `{arg}` is not a list; \
                     pass a list, or stop accumulating it in the script's debouncing settings"
                ),
            ));
            return Ok(());
        }
        let accumulated: Value = get(&row, "accumulated")?;
        self.append_logs(&[LogChunk {
            id: job.id,
            workspace: job.workspace.clone(),
            text: format!("Substituting `{arg}` with: {accumulated}\n\n"),
        }])
        .await?;
        if let Value::Object(args) = &mut job.args {
            args.insert(arg, accumulated);
        } else {
            job.args = serde_json::json!({ arg: accumulated });
        }
        Ok(())
    }

    /// Whether the claimed job is within its concurrency limit; if not, it is back in the queue.
    async fn admit(&self, job: &Job, row: &PgRow) -> Result<bool> {
        let limit: Option<i32> = get(row, "concurrent_limit")?;
        // As Windmill's pull: no limit for a job without a path (a preview run from the editor).
        let Some(limit) = limit.filter(|l| *l > 0 && job.path.is_some()) else {
            return Ok(true);
        };
        let window: i32 = get(row, "concurrency_time_window_s")?;
        // Windmill's push always writes the key; its default form stands in for a row without.
        let key: String = get::<Option<String>>(row, "concurrency_key")?.unwrap_or_else(|| {
            format!(
                "{}/script/{}",
                job.workspace,
                job.path.as_deref().unwrap_or("tmp/main")
            )
        });
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::db("starting a concurrency check"))?;
        let running: i64 = sqlx::query_scalar(ADMIT)
            .bind(job.id.0)
            .bind(&key)
            .bind(window)
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db("counting the jobs of a concurrency key"))?;
        let admitted = running <= i64::from(limit);
        if !admitted {
            sqlx::query(RESCHEDULE_FOR_CONCURRENCY)
                .bind(job.id.0)
                .bind(&key)
                .bind(limit)
                .bind(window)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("re-scheduling a job over its concurrency limit"))?;
            tracing::info!(job.id = %job.id, key, limit, "over its concurrency limit; re-scheduled");
        }
        tx.commit()
            .await
            .map_err(Error::db("committing a concurrency check"))?;
        Ok(admitted)
    }

    pub(super) async fn adopt(
        &self,
        worker: &str,
        id: JobId,
        stale: Duration,
    ) -> Result<Option<Job>> {
        let row = sqlx::query(ADOPT)
            .bind(worker)
            .bind(id.0)
            .bind(stale.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("adopting a running job"))?;
        row.map(|row| job_from_row(&row)).transpose()
    }

    pub(super) async fn route_elsewhere(
        &self,
        tags: &[String],
        finalize_tag: &str,
        limit: i64,
    ) -> Result<Vec<Routed>> {
        let rows = sqlx::query(ROUTE_ELSEWHERE)
            .bind(tags)
            .bind(JobKind::DEPENDENCY_KINDS)
            .bind(JobKind::FLOW_KINDS)
            .bind(JobKind::FINALIZED_KINDS)
            .bind(finalize_tag)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("handing jobs we do not run to stock workers"))?;
        rows.iter()
            .map(|row| {
                Ok(Routed {
                    id: JobId(get(row, "id")?),
                    tag: get(row, "tag")?,
                    why: get(row, "why")?,
                })
            })
            .collect()
    }

    pub(super) async fn cached_result(&self, workspace: &str, path: &str) -> Result<Option<Value>> {
        sqlx::query_scalar(CACHE_LOOKUP)
            .bind(workspace)
            .bind(path)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("reading Windmill's result cache"))
    }

    pub(super) async fn owned(&self, worker: &str) -> Result<Vec<OwnedJob>> {
        let rows = sqlx::query(OWNED_JOBS)
            .bind(worker)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("listing the jobs running under our name"))?;
        rows.iter()
            .map(|row| {
                Ok(OwnedJob {
                    id: JobId(get(row, "id")?),
                    canceled: get(row, "canceled")?,
                })
            })
            .collect()
    }

    pub(super) async fn in_queue(&self, id: JobId) -> Result<bool> {
        sqlx::query_scalar(IN_QUEUE)
            .bind(id.0)
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db("looking up a job"))
    }

    /// How many jobs on `tags` wait for a worker now (queued, not running).
    pub async fn queued_count(&self, tags: &[String]) -> Result<i64> {
        sqlx::query_scalar(QUEUED_COUNT)
            .bind(tags)
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db("counting queued jobs"))
    }

    /// Jobs queued on each of `tags` and not running: `(tag, due now, scheduled later)`.
    pub async fn queue_depth(&self, tags: &[String]) -> Result<Vec<(String, i64, i64)>> {
        sqlx::query_as(QUEUE_DEPTH)
            .bind(tags)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("reading the queue depth"))
    }

    /// A queued or running job's details, without claiming it.
    pub async fn load(&self, id: JobId) -> Result<Option<Job>> {
        let row = sqlx::query(LOAD_JOB)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::db("loading a job"))?;
        row.map(|row| job_from_row(&row)).transpose()
    }

    pub(super) async fn heartbeat(
        &self,
        worker: &str,
        beats: &[Beat],
    ) -> Result<Vec<(JobId, JobState)>> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = beats.iter().map(|b| b.id.0).collect();
        let peaks: Vec<Option<i32>> = beats.iter().map(|b| b.memory_peak_kib).collect();
        let rows = sqlx::query(HEARTBEAT)
            .bind(&ids)
            .bind(&peaks)
            .bind(worker)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("sending the heartbeat"))?;
        rows.iter()
            .map(|row| {
                let id = JobId(get(row, "id")?);
                let present: bool = get(row, "present")?;
                let ours: bool = get(row, "ours")?;
                let canceled_by: Option<String> = get(row, "canceled_by")?;
                let state = if !present {
                    JobState::Gone
                } else if !ours {
                    JobState::Lost {
                        worker: get(row, "worker")?,
                    }
                } else if let Some(by) = canceled_by {
                    JobState::Canceled(Cancellation {
                        by,
                        reason: get(row, "canceled_reason")?,
                    })
                } else {
                    JobState::Running
                };
                Ok((id, state))
            })
            .collect()
    }

    pub(super) async fn cancel_for_timeout(
        &self,
        worker: &str,
        id: JobId,
        timeout: Duration,
    ) -> Result<()> {
        sqlx::query(TIMEOUT)
            .bind(id.0)
            .bind(worker)
            .bind(timeout.as_secs().to_string())
            .execute(&self.pool)
            .await
            .map_err(Error::db("canceling a job for timeout"))?;
        Ok(())
    }

    pub(super) async fn append_logs(&self, chunks: &[LogChunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = chunks.iter().map(|c| c.id.0).collect();
        let workspaces: Vec<&str> = chunks.iter().map(|c| c.workspace.as_str()).collect();
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        sqlx::query(APPEND_LOGS)
            .bind(&ids)
            .bind(&workspaces)
            .bind(&texts)
            .execute(&self.pool)
            .await
            .map_err(Error::db("appending job logs"))?;
        Ok(())
    }

    pub(super) async fn hand_back(
        &self,
        worker: &str,
        finalize_tag: &str,
        hand_back: &HandBack,
    ) -> Result<HandBackResult> {
        let id = hand_back.id;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::db("starting the hand-back"))?;
        let row = sqlx::query(LOCK_FOR_HAND_BACK)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db("locking the job for the hand-back"))?;
        let Some(row) = row else {
            return Ok(HandBackResult::NotOurs);
        };
        let running: bool = get(&row, "running")?;
        let holder: Option<String> = get(&row, "worker")?;
        let canceled_by: Option<String> = get(&row, "canceled_by")?;
        if !running || holder.as_deref() != Some(worker) {
            return Ok(HandBackResult::NotOurs);
        }
        let record = hand_back.fix_up_record(worker);
        // A cancel wins over whatever we computed: the stock worker completes the job as canceled
        // when `canceled_by` is set, so v2_job stays untouched.
        let canceled =
            canceled_by.is_some() || matches!(hand_back.completion.outcome, Outcome::Canceled);
        if !canceled {
            if let (Outcome::Success(result), Some(path)) =
                (&hand_back.completion.outcome, &hand_back.cache_path)
            {
                sqlx::query(CACHE_SAVE)
                    .bind(id.0)
                    .bind(path)
                    .bind(result)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("saving the result in Windmill's cache"))?;
            }
            let updated = match &hand_back.completion.outcome {
                Outcome::Success(result) => sqlx::query(HAND_BACK_SUCCESS)
                    .bind(id.0)
                    .bind(result)
                    .bind(&record),
                Outcome::Failure(failure) => sqlx::query(HAND_BACK_FAILURE)
                    .bind(id.0)
                    .bind(failure.to_pre_run_error())
                    .bind(&record),
                Outcome::Canceled => unreachable!("handled above"),
            }
            .execute(&mut *tx)
            .await
            .map_err(Error::db("writing the outcome to v2_job"))?
            .rows_affected();
            if updated != 1 {
                return Err(Error::Permission(format!(
                    "the hand-back of job {id} changed {updated} rows of v2_job instead of 1: the row was deleted, or \
                     row-level security hides it from our database role; connect as Windmill's database owner or a \
                     role with BYPASSRLS"
                )));
            }
        }
        sqlx::query(REQUEUE_FOR_FINALIZE)
            .bind(id.0)
            .bind(finalize_tag)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("re-queueing the job for its finalize tag"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing the hand-back"))?;
        Ok(HandBackResult::Done { canceled })
    }

    pub(super) async fn fix_up(&self, pending: &[FixUp]) -> Result<Vec<JobId>> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = pending.iter().map(|p| p.id.0).collect();
        let records: Vec<&Value> = pending.iter().map(|p| &p.record).collect();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::db("starting the fix-up"))?;
        let rows = sqlx::query(FIX_UP)
            .bind(&ids)
            .bind(&records)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::db("fixing up completed jobs"))?;
        let done: Vec<Uuid> = rows
            .iter()
            .map(|row| get(row, "id"))
            .collect::<Result<_>>()?;
        let restarted = sqlx::query(RESTART_PERPETUAL)
            .bind(&done)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::db("restarting perpetual scripts"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing the fix-up"))?;
        for row in &restarted {
            let (last, next): (Uuid, Uuid) = (get(row, "restarted")?, get(row, "next_id")?);
            tracing::info!(job.id = %last, next = %next, "perpetual script restarted");
        }
        Ok(done.into_iter().map(JobId).collect())
    }

    pub(super) async fn stale_fix_ups(&self, window: Duration) -> Result<Vec<JobId>> {
        let rows = sqlx::query(PENDING_FIX_UPS)
            .bind(window.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db("looking for fix-ups left by a stopped worker"))?;
        rows.iter().map(|row| Ok(JobId(get(row, "id")?))).collect()
    }

    pub(super) async fn register(&self, ping: &WorkerPing) -> Result<()> {
        sqlx::query(REGISTER)
            .bind(&ping.name)
            .bind(&ping.instance)
            .bind(&ping.tags)
            .bind(&ping.group)
            .bind(&ping.version)
            .bind(ping.current_job.as_ref().map(|(id, _)| id.0))
            .bind(ping.current_job.as_ref().map(|(_, ws)| ws.as_str()))
            .bind(ping.jobs_executed)
            .bind(ping.occupancy)
            .bind(ping.vcpus)
            .bind(ping.memory)
            .bind(ping.memory_usage)
            .bind(ping.started_at)
            .bind(ping.occupancy_15s)
            .bind(ping.occupancy_5m)
            .bind(ping.occupancy_30m)
            .execute(&self.pool)
            .await
            .map_err(Error::db("registering the worker in worker_ping"))?;
        Ok(())
    }
}
