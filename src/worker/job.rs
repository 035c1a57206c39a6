//! One job's life on this worker: run it through the executor within its timeout, hand the
//! outcome back to Windmill (retrying what may succeed later), let the executor clean up, and
//! queue the fix-up. A panic in the job's task still ends the job in Windmill, as a failure.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt as _;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, field};

use super::state::{RecentFailure, RunningEntry, RunningJob, StopReason};
use super::{Jobs, retry_delays};
use crate::config::Config;
use crate::domain::Milestones;
use crate::domain::{
    Cancellation, Completion, FailureCategory, Job, JobFailure, Language, Outcome,
};
use crate::logs::LogSink;
use crate::metrics::JobTimes;
use crate::queue::{FixUp, HandBack, HandBackResult};
use std::time::Instant;

impl Jobs {
    /// Runs a claimed `job` in its own task, holding `permit` until the task ends.
    pub(super) fn start(&self, job: Job, permit: OwnedSemaphorePermit) {
        self.spawn(job, Taken::Claimed, permit);
    }

    /// Runs (or follows) a job taken over at start in its own task; with `finished`, hands it
    /// back with that completion without running it.
    pub(super) fn adopt(
        &self,
        job: Job,
        finished: Option<Completion>,
        permit: OwnedSemaphorePermit,
    ) {
        self.spawn(job, Taken::Adopted(finished), permit);
    }

    fn spawn(&self, job: Job, taken: Taken, permit: OwnedSemaphorePermit) {
        let entry = self.shared.enter(&job);
        let span = tracing::info_span!(
            "job",
            job.id = %job.id,
            windmill.workspace = %job.workspace,
            windmill.tag = %job.tag,
            windmill.kind = %job.kind,
            outcome = field::Empty,
        );
        let this = self.clone();
        self.tracker.spawn(
            async move {
                let run = AssertUnwindSafe(this.run(&job, entry, taken)).catch_unwind();
                if let Err(panic) = run.await {
                    this.after_panic(&job, &panic_message(panic.as_ref())).await;
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Runs the job (unless it already finished) and hands it back.
    async fn run(&self, job: &Job, entry: RunningEntry, taken: Taken) {
        tracing::info!(language = ?job.language.as_ref().map(Language::as_str), "job claimed");
        let metrics = &self.shared.metrics;
        let finished = match taken {
            Taken::Claimed => {
                metrics.claimed(&job.tag, false);
                if let Some(scheduled_for) = job.context.scheduled_for {
                    let wait = (job.started_at - scheduled_for)
                        .to_std()
                        .unwrap_or_default();
                    metrics.queue_wait(&job.tag, wait);
                }
                None
            }
            Taken::Adopted(finished) => {
                metrics.claimed(&job.tag, true);
                finished
            }
        };
        let logs = self.hub.sink(job.id, &job.workspace);
        let Some(completion) = self.complete(job, &entry, &logs, finished).await else {
            // Abandoned at shutdown, or now another worker's: no hand-back.
            return logs.finish().await;
        };
        if let Some(StopReason::Lost(state)) = entry.stop_reason() {
            tracing::warn!(
                ?state,
                "job is no longer ours; dropping it without a hand-back"
            );
            logs.finish().await;
            return;
        }
        self.finish(job, completion, logs, entry).await;
    }

    /// How the job ends: as `finished` already, as a job we cannot run, from Windmill's result
    /// cache, or by running it (`None`: abandoned, or another worker's now).
    async fn complete(
        &self,
        job: &Job,
        entry: &RunningJob,
        logs: &LogSink,
        finished: Option<Completion>,
    ) -> Option<Completion> {
        if finished.is_some() {
            return finished;
        }
        if let Err(failure) = self.worker.executor.check(job) {
            return Some(Completion::failed(failure, Duration::ZERO));
        }
        if let Some(completion) = self.cached(job, logs).await {
            return Some(completion);
        }
        self.execute(job, entry, logs).await
    }

    /// A result from Windmill's cache, as its worker takes one before running the job (with its
    /// log line); nothing is created in Kubernetes. A cache that cannot be read runs the job.
    async fn cached(&self, job: &Job, logs: &LogSink) -> Option<Completion> {
        match self.worker.queue.cached_result(job).await {
            Ok(Some(result)) => {
                logs.line(crate::queue::cache::HIT_LINE.as_bytes());
                tracing::info!("result taken from Windmill's cache");
                Some(Completion {
                    outcome: Outcome::Success(result),
                    duration: Duration::ZERO,
                    memory_peak_kib: None,
                    preprocessed_args: None,
                })
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "reading Windmill's result cache failed; running the job"
                );
                None
            }
        }
    }

    /// Runs the job through the executor until it ends, times out, or must be left alone
    /// (`None`: abandoned at shutdown, or another worker's now; its logs so far are flushed).
    async fn execute(&self, job: &Job, running: &RunningJob, logs: &LogSink) -> Option<Completion> {
        let timeout = effective_timeout(job, &self.worker.config);
        let remaining = (job.started_at
            + chrono::Duration::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX)
            - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
        let timer = async {
            tokio::time::sleep(remaining).await;
            self.time_out(job, timeout, running).await;
            std::future::pending::<()>().await;
        };
        let executor = &self.worker.executor;
        tokio::select! {
            completion = executor.run(job, running.cancel.clone(), logs, &running.progress) => Some(completion),
            () = timer => unreachable!("the timer never completes"),
            () = self.abandon.cancelled() => {
                tracing::warn!("abandoned at shutdown; left running in Windmill for adoption");
                None
            }
            () = running.detach.cancelled() => {
                tracing::warn!("job is now another worker's; leaving its work to that worker");
                None
            }
        }
    }

    /// Cancels a job that passed its timeout, in Windmill first (so the cancel survives us),
    /// then locally.
    async fn time_out(&self, job: &Job, timeout: Duration, running: &RunningJob) {
        let worker = &self.worker;
        let mut delays = retry_delays();
        while let Err(error) = worker
            .queue
            .cancel_for_timeout(&worker.name, job.id, timeout)
            .await
        {
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = &error as &dyn std::error::Error, retry_in = ?delay, "recording the timeout failed");
            tokio::time::sleep(delay).await;
        }
        tracing::info!(timeout_s = timeout.as_secs(), "job timed out");
        running.stop_with(StopReason::Canceled(Cancellation {
            by: "timeout".into(),
            reason: Some(format!("duration > {}", timeout.as_secs())),
        }));
    }

    /// Hands the outcome back; once committed, the job leaves the heartbeat (`entry` drops),
    /// the executor removes its work and the fix-up is queued.
    async fn finish(&self, job: &Job, completion: Completion, logs: LogSink, entry: RunningEntry) {
        if let Outcome::Failure(failure) = &completion.outcome {
            logs.note(&format!(
                "{} ({}): {}",
                failure.name, failure.category, failure.message
            ));
        }
        logs.finish().await;
        let mut hand_back = HandBack::of(job, completion);
        let result = self.hand_back(&mut hand_back).await;
        let milestones = entry.progress.milestones();
        let since = entry.since;
        drop(entry);
        match result {
            Some(HandBackResult::Done { canceled }) => {
                let times = job_times(&milestones, since, &hand_back);
                self.handed_back(job, &hand_back, canceled, &times).await;
            }
            Some(HandBackResult::NotOurs) => {
                tracing::warn!("job was taken from us before the hand-back; nothing handed back");
            }
            None => {}
        }
    }

    async fn handed_back(&self, job: &Job, hand_back: &HandBack, canceled: bool, times: &JobTimes) {
        let outcome = if canceled {
            "canceled"
        } else {
            hand_back.completion.outcome.label()
        };
        tracing::Span::current().record("outcome", outcome);
        tracing::info!(
            outcome,
            duration_ms = hand_back.completion.duration.as_millis(),
            "job handed back"
        );
        let category = match &hand_back.completion.outcome {
            Outcome::Failure(failure) if !canceled => {
                self.shared.record_failure(recent_failure(job, failure));
                Some(failure.category.as_str())
            }
            _ => None,
        };
        self.shared
            .metrics
            .completed(&job.tag, outcome, category, times);
        self.shared.count_executed();
        self.worker.executor.finished(job).await;
        self.shared.fix_ups().push(FixUp {
            id: job.id,
            record: hand_back.fix_up_record(&self.worker.name),
        });
    }

    /// Hands back, retrying database trouble with capped, jittered backoff for as long as the
    /// worker lives: a job on our tag must never be left stuck. An error that can never succeed
    /// (Windmill's database refuses the outcome itself, e.g. a result with a NUL character) is
    /// not retried: the job is handed back once more as a failure that names the refusal. `None`
    /// when abandoned at shutdown, or when even that failure was refused.
    async fn hand_back(&self, hand_back: &mut HandBack) -> Option<HandBackResult> {
        let worker = &self.worker;
        let finalize_tag = &worker.config.settings.windmill.finalize_tag;
        let mut delays = retry_delays();
        let mut refused_once = false;
        loop {
            let error = match worker
                .queue
                .hand_back(&worker.name, finalize_tag, hand_back)
                .await
            {
                Ok(result) => return Some(result),
                Err(error) => error,
            };
            if !error.is_retryable() {
                if refused_once {
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        "Windmill's database refused the hand-back twice; leaving the job to Windmill's zombie monitor"
                    );
                    return None;
                }
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "Windmill's database refused the hand-back; handing back a failure that names the refusal"
                );
                refused_once = true;
                hand_back.completion = refused(&hand_back.completion, &error);
                continue;
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = &error as &dyn std::error::Error, retry_in = ?delay, "hand-back failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.abandon.cancelled() => {
                    tracing::warn!("hand-back abandoned at shutdown; the job stays owned in Windmill");
                    return None;
                }
            }
        }
    }

    /// The job's task panicked (a bug of ours): end the job in Windmill as a failure that says
    /// so, and remove its work, rather than leave it running under our name.
    async fn after_panic(&self, job: &Job, message: &str) {
        tracing::error!(panic = %message, "the job's task panicked; handing the job back as a failure");
        let failure = JobFailure::new(
            FailureCategory::Internal,
            "WorkerPanic",
            format!(
                "flext-kubernetes failed while running this job ({message}); this is a bug in the worker: \
                 report it with the worker's log; running the job again may succeed"
            ),
        );
        // The entry left the heartbeat while the task unwound; a fresh one keeps the job pinged
        // until the hand-back commits.
        let entry = self.shared.enter(job);
        let logs = self.hub.sink(job.id, &job.workspace);
        self.finish(
            job,
            Completion::failed(failure, Duration::ZERO),
            logs,
            entry,
        )
        .await;
    }
}

/// How a claimed job came to this worker.
enum Taken {
    /// Claimed from the queue.
    Claimed,
    /// Taken over at start; `Some` when it is only handed back (canceled meanwhile).
    Adopted(Option<Completion>),
}

/// The durations between a handed-back job's milestones (`since`: when it entered the running
/// set, the claim).
fn job_times(
    milestones: &Milestones,
    since: tokio::time::Instant,
    hand_back: &HandBack,
) -> JobTimes {
    let between =
        |from: Option<Instant>, to: Option<Instant>| Some(to?.saturating_duration_since(from?));
    JobTimes {
        queue_wait: None,
        claim_to_created: between(Some(since.into_std()), milestones.job_created),
        created_to_started: between(milestones.job_created, milestones.user_code_started),
        run: hand_back.completion.duration,
        hand_back: milestones.pod_terminated.map(|at| at.elapsed()),
    }
}

/// What the status page shows of a failure: the worker's own message names the cause and the
/// fix; a script's own error stays in Windmill (its output may hold what only Windmill's access
/// rules should show).
fn recent_failure(job: &Job, failure: &JobFailure) -> RecentFailure {
    let hint = if failure.category == FailureCategory::UserError {
        "the script failed: its error and output are in the job's log in Windmill".to_owned()
    } else {
        failure.message.chars().take(500).collect()
    };
    RecentFailure {
        id: job.id,
        workspace: job.workspace.clone(),
        path: job.path.clone(),
        tag: job.tag.clone(),
        category: failure.category.as_str().to_owned(),
        name: failure.name.clone(),
        hint,
        at: Utc::now(),
    }
}

/// The failure handed back when Windmill's database refused `completion` for good.
fn refused(completion: &Completion, error: &crate::queue::Error) -> Completion {
    let failure = JobFailure::new(
        FailureCategory::Internal,
        "HandBackRefused",
        format!(
            "the job ended ({}), but Windmill's database refused to record that outcome: {}; \
             a result or error text with a NUL character (\\u0000) is the usual cause: remove it from what the script returns",
            completion.outcome.label(),
            crate::telemetry::error_chain(error),
        ),
    );
    Completion {
        memory_peak_kib: completion.memory_peak_kib,
        ..Completion::failed(failure, completion.duration)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The job's own timeout, else the instance default, never above the instance maximum.
fn effective_timeout(job: &Job, config: &Config) -> Duration {
    let w = &config.settings.windmill;
    job.timeout
        .unwrap_or(w.default_timeout.0)
        .min(w.max_timeout.0)
}
