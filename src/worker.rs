//! The worker: claims jobs when a permit is free, runs each through the executor, keeps them alive
//! with one batched heartbeat, hands them back, fixes up the completed rows, and shuts down in two
//! phases.
//!
//! Shutdown: [`WorkerHandle::stop`] (SIGTERM) stops claiming and lets running jobs finish within
//! `worker.shutdown_grace`; what still runs then is abandoned *without* a hand-back, so it stays
//! owned in Windmill and the next worker can adopt it. Heartbeats stop last.
//! [`WorkerHandle::abandon`] (a second signal) skips the grace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field};

use crate::config::Config;
use crate::domain::{Cancellation, Completion, Job, JobId, Language, Outcome, Progress};
use crate::executor::Executor;
use crate::logs::LogHub;
use crate::queue::{Beat, FixUp, HandBack, HandBackResult, JobState, Queue, WorkerPing};

/// How far back the startup sweep looks for fix-ups a stopped worker left undone.
const STALE_FIX_UP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long another worker's running job must have gone without a ping before this worker adopts
/// its still-running work at start (Windmill's own monitor re-queues after 60 s).
const ADOPT_AFTER_SILENCE: Duration = Duration::from_secs(30);
/// How often pending fix-ups are tried.
const FIX_UP_INTERVAL: Duration = Duration::from_millis(500);

/// Why a running job was told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopReason {
    /// Windmill canceled it (user, or timeout): hand back as canceled.
    Canceled(Cancellation),
    /// It is no longer ours: no hand-back.
    Lost(JobState),
}

#[derive(Debug)]
struct Running {
    workspace: String,
    cancel: CancellationToken,
    /// Fired when the job became another worker's: stop following it, touch nothing.
    detach: CancellationToken,
    stop: Mutex<Option<StopReason>>,
    /// Live figures the executor writes and the heartbeat sends.
    progress: Progress,
}

impl Running {
    fn stop_with(&self, reason: StopReason) {
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lost_to_another = matches!(reason, StopReason::Lost(JobState::Lost { .. }));
        if stop.is_none() {
            *stop = Some(reason);
        }
        // A job another worker now holds keeps its work running (that worker adopts it); a
        // canceled job, or one Windmill no longer has, has its work stopped and removed.
        if lost_to_another {
            self.detach.cancel();
        } else {
            self.cancel.cancel();
        }
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug, Default)]
struct Shared {
    running: Mutex<HashMap<JobId, Arc<Running>>>,
    fix_ups: Mutex<Vec<FixUp>>,
    jobs_executed: AtomicI32,
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, HashMap<JobId, Arc<Running>>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fix_ups(&self) -> MutexGuard<'_, Vec<FixUp>> {
        self.fix_ups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A worker, ready to [`spawn`](Worker::spawn).
#[derive(Debug, Clone)]
pub struct Worker {
    config: Arc<Config>,
    queue: Queue,
    executor: Executor,
    name: String,
}

/// Controls a running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// Stops a worker from another task (a signal handler).
#[derive(Debug, Clone)]
pub struct WorkerControl {
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
}

impl WorkerControl {
    /// Stops claiming; running jobs get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.stop_claiming.cancel();
    }

    /// Stops claiming and abandons running jobs at once (they stay owned in Windmill).
    pub fn abandon(&self) {
        self.stop_claiming.cancel();
        self.abandon.cancel();
    }
}

impl WorkerHandle {
    /// A control that outlives borrows of the handle.
    #[must_use]
    pub fn control(&self) -> WorkerControl {
        WorkerControl {
            stop_claiming: self.stop_claiming.clone(),
            abandon: self.abandon.clone(),
        }
    }

    /// Stops claiming; running jobs get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.control().stop();
    }

    /// Stops claiming and abandons running jobs at once (they stay owned in Windmill).
    pub fn abandon(&self) {
        self.control().abandon();
    }

    /// Jobs running now.
    #[must_use]
    pub fn running(&self) -> usize {
        self.shared.running().len()
    }

    /// Jobs handed back since start.
    #[must_use]
    pub fn jobs_executed(&self) -> i32 {
        self.shared.jobs_executed.load(Ordering::Relaxed)
    }

    /// Waits for the worker to end.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the worker task panicked");
        }
    }

    /// Stops and waits.
    pub async fn shutdown(self) {
        self.stop();
        self.wait().await;
    }
}

impl Worker {
    /// A worker with this configuration, queue and executor.
    #[must_use]
    pub fn new(config: Config, queue: Queue, executor: Executor) -> Self {
        let name = config.worker_name();
        Self {
            config: Arc::new(config),
            queue,
            executor,
            name,
        }
    }

    /// This worker's name in Windmill.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the worker on the current runtime.
    #[must_use]
    pub fn spawn(self) -> WorkerHandle {
        let stop_claiming = CancellationToken::new();
        let abandon = CancellationToken::new();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(self.run(stop_claiming.clone(), abandon.clone(), shared.clone()));
        WorkerHandle {
            stop_claiming,
            abandon,
            task,
            shared,
        }
    }

    async fn run(
        self,
        stop_claiming: CancellationToken,
        abandon: CancellationToken,
        shared: Arc<Shared>,
    ) {
        let settings = &self.config.settings;
        tracing::info!(
            worker = %self.name,
            group = %settings.windmill.worker_group,
            tags = ?settings.windmill.tags,
            concurrency = settings.worker.concurrency,
            "worker started"
        );
        let hub = LogHub::new(self.queue.clone(), settings.logs.clone());
        let hub_stop = CancellationToken::new();
        let hub_task = tokio::spawn(hub.clone().run(hub_stop.clone()));
        let beat_stop = CancellationToken::new();
        let beat_task = tokio::spawn(
            self.clone()
                .heartbeat_loop(shared.clone(), beat_stop.clone()),
        );
        let fix_up_stop = CancellationToken::new();
        let fix_up_task = tokio::spawn(
            self.clone()
                .fix_up_loop(shared.clone(), fix_up_stop.clone()),
        );

        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(settings.worker.concurrency));
        self.adopt_running(&permits, &abandon, &shared, &hub, &tracker)
            .await;
        self.claim_loop(&permits, &stop_claiming, &abandon, &shared, &hub, &tracker)
            .await;
        tracker.close();

        let grace = settings.worker.shutdown_grace.0;
        let running = shared.running().len();
        if running > 0 {
            tracing::info!(running, grace = ?grace, "stopped claiming; waiting for running jobs");
        }
        tokio::select! {
            () = tracker.wait() => {}
            () = abandon.cancelled() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(running = shared.running().len(), "shutdown grace elapsed; leaving running jobs to the next worker");
                abandon.cancel();
            }
        }
        abandon.cancel();
        tracker.wait().await;
        // Logs first, heartbeats last: while a job is still owned its ping stays fresh.
        hub_stop.cancel();
        let _ = hub_task.await;
        fix_up_stop.cancel();
        let _ = fix_up_task.await;
        beat_stop.cancel();
        let _ = beat_task.await;
        tracing::info!(worker = %self.name, jobs = shared.jobs_executed.load(Ordering::Relaxed), "worker stopped");
    }

    /// Before claiming anything: takes back the jobs whose work still runs (this worker
    /// restarted, or another one of the group stopped), and cleans up work whose Windmill job is
    /// gone. A job is never started twice: its running attempt is followed, not recreated.
    async fn adopt_running(
        &self,
        permits: &Arc<Semaphore>,
        abandon: &CancellationToken,
        shared: &Arc<Shared>,
        hub: &LogHub,
        tracker: &TaskTracker,
    ) {
        let found = match self.executor.running_jobs().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "listing running work to adopt failed; Windmill re-queues what is left");
                return;
            }
        };
        for id in found {
            match self.queue.adopt(&self.name, id, ADOPT_AFTER_SILENCE).await {
                Ok(Some(job)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    tracing::info!(job.id = %id, "adopting a job whose work is still running");
                    self.start(job, permit, abandon, shared, hub, tracker);
                }
                Ok(None) => match self.queue.in_queue(id).await {
                    Ok(false) => {
                        tracing::info!(job.id = %id, "cleaning up work of a job Windmill no longer has");
                        self.executor.cleanup(id).await;
                    }
                    Ok(true) => {
                        tracing::debug!(job.id = %id, "running work belongs to a live worker");
                    }
                    Err(error) => tracing::warn!(%error, "looking up a job to adopt failed"),
                },
                Err(error) => {
                    tracing::warn!(%error, job.id = %id, "adopting failed; Windmill re-queues it if it stays silent");
                }
            }
        }
    }

    fn start(
        &self,
        job: Job,
        permit: tokio::sync::OwnedSemaphorePermit,
        abandon: &CancellationToken,
        shared: &Arc<Shared>,
        hub: &LogHub,
        tracker: &TaskTracker,
    ) {
        let running = Arc::new(Running {
            workspace: job.workspace.clone(),
            cancel: CancellationToken::new(),
            detach: CancellationToken::new(),
            stop: Mutex::new(None),
            progress: Progress::new(),
        });
        shared.running().insert(job.id, running.clone());
        let span = tracing::info_span!(
            "job",
            job.id = %job.id,
            windmill.workspace = %job.workspace,
            windmill.tag = %job.tag,
            windmill.kind = %job.kind,
            outcome = field::Empty,
        );
        let this = self.clone();
        let (shared, hub, abandon) = (shared.clone(), hub.clone(), abandon.clone());
        tracker.spawn(
            async move {
                this.run_job(job, running, &shared, &hub, &abandon).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    async fn claim_loop(
        &self,
        permits: &Arc<Semaphore>,
        stop: &CancellationToken,
        abandon: &CancellationToken,
        shared: &Arc<Shared>,
        hub: &LogHub,
        tracker: &TaskTracker,
    ) {
        let settings = &self.config.settings;
        let mut errors = retry_delays();
        loop {
            // Never claim what we cannot start: the permit comes first.
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            if stop.is_cancelled() {
                return;
            }
            match self.queue.claim(&self.name, &settings.windmill.tags).await {
                Ok(Some(job)) => {
                    errors = retry_delays();
                    self.start(job, permit, abandon, shared, hub, tracker);
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep(settings.worker.poll_interval.0) => {}
                        () = stop.cancelled() => return,
                    }
                }
                Err(error) => {
                    drop(permit);
                    let delay = errors.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, retry_in = ?delay, "claiming failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn run_job(
        &self,
        job: Job,
        running: Arc<Running>,
        shared: &Shared,
        hub: &LogHub,
        abandon: &CancellationToken,
    ) {
        tracing::info!(language = ?job.language.as_ref().map(Language::as_str), "job claimed");
        let logs = hub.sink(job.id, &job.workspace);
        let completion = if let Err(failure) = self.executor.check(&job) {
            Completion {
                outcome: Outcome::Failure(failure),
                duration: Duration::ZERO,
                memory_peak_kib: None,
            }
        } else {
            {
                let timeout = effective_timeout(&job, &self.config);
                let remaining = (job.started_at
                    + chrono::Duration::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX)
                    - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
                let timer = async {
                    tokio::time::sleep(remaining).await;
                    self.time_out(&job, timeout, &running).await;
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    completion = self.executor.run(&job, running.cancel.clone(), &logs, &running.progress) => completion,
                    () = timer => unreachable!("the timer never completes"),
                    () = abandon.cancelled() => {
                        // Shutdown past its grace: leave the job owned in Windmill for the next
                        // worker. Its logs so far are flushed; no hand-back.
                        tracing::warn!("abandoned at shutdown; left running in Windmill for adoption");
                        logs.finish().await;
                        shared.running().remove(&job.id);
                        return;
                    }
                    () = running.detach.cancelled() => {
                        tracing::warn!("job is now another worker's; leaving its work to that worker");
                        logs.finish().await;
                        shared.running().remove(&job.id);
                        return;
                    }
                }
            }
        };
        if let Some(StopReason::Lost(state)) = running.stop_reason() {
            tracing::warn!(
                ?state,
                "job is no longer ours; dropping it without a hand-back"
            );
            logs.finish().await;
            shared.running().remove(&job.id);
            return;
        }
        if let Outcome::Failure(failure) = &completion.outcome {
            logs.note(&format!(
                "{} ({}): {}",
                failure.name, failure.category, failure.message
            ));
        }
        logs.finish().await;
        let hand_back = HandBack {
            id: job.id,
            kind: job.kind.clone(),
            completion,
            started_at: job.started_at,
        };
        let result = self.hand_back_with_retries(&hand_back, abandon).await;
        shared.running().remove(&job.id);
        match result {
            Some(HandBackResult::Done { canceled }) => {
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
                shared.jobs_executed.fetch_add(1, Ordering::Relaxed);
                self.executor.finished(&job).await;
                shared.fix_ups().push(FixUp {
                    id: job.id,
                    record: hand_back.fix_up_record(&self.name),
                });
            }
            Some(HandBackResult::NotOurs) => {
                tracing::warn!("job was taken from us before the hand-back; nothing handed back");
            }
            None => {
                tracing::warn!("hand-back abandoned at shutdown; the job stays owned in Windmill");
            }
        }
    }

    /// Cancels a job that passed its timeout, in Windmill first (so the cancel survives us), then
    /// locally.
    async fn time_out(&self, job: &Job, timeout: Duration, running: &Running) {
        let mut delays = retry_delays();
        loop {
            match self
                .queue
                .cancel_for_timeout(&self.name, job.id, timeout)
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, retry_in = ?delay, "recording the timeout failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        tracing::info!(timeout_s = timeout.as_secs(), "job timed out");
        running.stop_with(StopReason::Canceled(Cancellation {
            by: "timeout".into(),
            reason: Some(format!("duration > {}", timeout.as_secs())),
        }));
    }

    /// Hands back, retrying database trouble with capped, jittered backoff for as long as the
    /// worker lives: a job on our tag must never be left stuck. `None` when abandoned.
    async fn hand_back_with_retries(
        &self,
        hand_back: &HandBack,
        abandon: &CancellationToken,
    ) -> Option<HandBackResult> {
        let finalize_tag = &self.config.settings.windmill.finalize_tag;
        let mut delays = retry_delays();
        loop {
            match self
                .queue
                .hand_back(&self.name, finalize_tag, hand_back)
                .await
            {
                Ok(result) => return Some(result),
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    if error.is_retryable() {
                        tracing::warn!(%error, retry_in = ?delay, "hand-back failed; retrying");
                    } else {
                        tracing::error!(%error, retry_in = ?delay, "hand-back failed; retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = abandon.cancelled() => return None,
                    }
                }
            }
        }
    }

    async fn heartbeat_loop(self, shared: Arc<Shared>, stop: CancellationToken) {
        let started_at = Utc::now();
        let mut interval = tokio::time::interval(self.config.settings.worker.heartbeat_interval.0);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = stop.cancelled() => return,
            }
            self.beat(&shared).await;
            if let Err(error) = self.queue.register(&self.ping(&shared, started_at)).await {
                tracing::warn!(%error, "refreshing worker_ping failed");
            }
        }
    }

    async fn beat(&self, shared: &Shared) {
        let jobs: Vec<(JobId, Arc<Running>)> = shared
            .running()
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        if jobs.is_empty() {
            return;
        }
        let beats: Vec<Beat> = jobs
            .iter()
            .map(|(id, r)| Beat {
                id: *id,
                memory_peak_kib: r.progress.memory_peak_kib(),
            })
            .collect();
        match self.queue.heartbeat(&self.name, &beats).await {
            Ok(states) => {
                let by_id: HashMap<JobId, Arc<Running>> = jobs.into_iter().collect();
                for (id, state) in states {
                    let Some(running) = by_id.get(&id) else {
                        continue;
                    };
                    match state {
                        JobState::Running => {}
                        JobState::Canceled(cancel) => {
                            if running.stop_reason().is_none() {
                                tracing::info!(job.id = %id, by = %cancel.by, "job canceled in Windmill");
                            }
                            running.stop_with(StopReason::Canceled(cancel));
                        }
                        state @ (JobState::Gone | JobState::Lost { .. }) => {
                            tracing::warn!(job.id = %id, ?state, "job left our hands");
                            running.stop_with(StopReason::Lost(state));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, jobs = beats.len(), "heartbeat failed; retrying next tick");
            }
        }
    }

    fn ping(&self, shared: &Shared, started_at: chrono::DateTime<Utc>) -> WorkerPing {
        let settings = &self.config.settings;
        let running = shared.running();
        let current_job = running
            .iter()
            .next()
            .map(|(id, r)| (*id, r.workspace.clone()));
        #[allow(clippy::cast_precision_loss)] // a ratio of two small counts
        let occupancy = running.len() as f32 / settings.worker.concurrency as f32;
        WorkerPing {
            name: self.name.clone(),
            instance: crate::config::hostname(),
            group: settings.windmill.worker_group.clone(),
            tags: settings.windmill.tags.clone(),
            version: format!("flext-kubernetes/{}", env!("CARGO_PKG_VERSION")),
            current_job,
            jobs_executed: shared.jobs_executed.load(Ordering::Relaxed),
            occupancy,
            vcpus: std::thread::available_parallelism()
                .ok()
                .and_then(|n| i64::try_from(n.get()).ok()),
            memory: crate::telemetry::host_memory_bytes(),
            memory_usage: crate::telemetry::own_rss_bytes(),
            started_at,
        }
    }

    async fn fix_up_loop(self, shared: Arc<Shared>, stop: CancellationToken) {
        // Fix-ups a stopped worker left behind: their records travel in v2_job.args.
        match self.queue.stale_fix_ups(STALE_FIX_UP_WINDOW).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(
                    jobs = ids.len(),
                    "resuming fix-ups left by a stopped worker"
                );
                shared.fix_ups().extend(ids.into_iter().map(|id| FixUp {
                    id,
                    record: serde_json::Value::Null,
                }));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "looking for stale fix-ups failed"),
        }
        loop {
            let stopping = stop.is_cancelled();
            let pending: Vec<FixUp> = shared.fix_ups().clone();
            if !pending.is_empty() {
                match self.queue.fix_up(&pending).await {
                    Ok(done) => {
                        if !done.is_empty() {
                            tracing::debug!(jobs = done.len(), "fixed up completed jobs");
                            shared.fix_ups().retain(|f| !done.contains(&f.id));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "fix-up failed; retrying"),
                }
            }
            if stopping {
                let left = shared.fix_ups().len();
                if left > 0 {
                    tracing::info!(
                        jobs = left,
                        "fix-ups not done yet at shutdown; the next worker finishes those handed back as success or failure"
                    );
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FIX_UP_INTERVAL) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

/// The job's own timeout, else the instance default, never above the instance maximum.
fn effective_timeout(job: &Job, config: &Config) -> Duration {
    let w = &config.settings.windmill;
    job.timeout
        .unwrap_or(w.default_timeout.0)
        .min(w.max_timeout.0)
}

/// Delays between retries of database work: exponential from 100 ms, jittered, capped at 10 s,
/// unbounded in count.
fn retry_delays() -> impl Iterator<Item = Duration> {
    crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::executor::InProcessExecutor;
    use crate::queue::MemoryQueue;

    fn config(concurrency: usize) -> Config {
        let env: BTreeMap<String, String> = [
            (
                "FLEXT__WORKER__CONCURRENCY".to_owned(),
                concurrency.to_string(),
            ),
            ("FLEXT__WORKER__NAME".to_owned(), "wk-test".to_owned()),
            ("FLEXT__WORKER__SHUTDOWN_GRACE".to_owned(), "10s".to_owned()),
        ]
        .into();
        Config::from_yaml("", &env).unwrap()
    }

    /// An executor whose jobs wait until `release` fires, then succeed.
    fn gated(release: CancellationToken) -> Executor {
        Executor::InProcess(InProcessExecutor::new(
            &["python3"],
            Arc::new(move |_job: &Job, _cancel, _logs: &crate::logs::LogSink| {
                let release = release.clone();
                Box::pin(async move {
                    release.cancelled().await;
                    Outcome::Success(serde_json::json!("done"))
                })
            }),
        ))
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_claims_more_jobs_than_permits() {
        let memory = MemoryQueue::new();
        for _ in 0..5 {
            memory.push(crate::testing::job());
        }
        let release = CancellationToken::new();
        let handle = Worker::new(
            config(2),
            Queue::Memory(memory.clone()),
            gated(release.clone()),
        )
        .spawn();
        until("two jobs running", || memory.running().len() == 2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            memory.running().len(),
            2,
            "a third job was claimed without a free permit"
        );
        assert_eq!(memory.waiting(), 3);
        release.cancel();
        until("all handed back", || memory.handed_back().len() == 5).await;
        handle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_lets_running_jobs_finish_within_the_grace() {
        let memory = MemoryQueue::new();
        memory.push(crate::testing::job());
        let release = CancellationToken::new();
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(release.clone()),
        )
        .spawn();
        until("the job running", || memory.running().len() == 1).await;
        handle.stop();
        memory.push(crate::testing::job());
        tokio::time::sleep(Duration::from_secs(3)).await;
        release.cancel();
        handle.wait().await;
        assert_eq!(memory.handed_back().len(), 1);
        assert_eq!(memory.waiting(), 1, "a job was claimed after stop");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_grace_running_jobs_stay_owned_and_are_not_handed_back() {
        let memory = MemoryQueue::new();
        let job = crate::testing::job();
        let id = job.id;
        memory.push(job);
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(CancellationToken::new()),
        )
        .spawn();
        until("the job running", || memory.running().len() == 1).await;
        handle.stop();
        handle.wait().await;
        assert!(memory.handed_back().is_empty());
        assert_eq!(
            memory.running(),
            vec![id],
            "the job must stay owned for the next worker"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_in_windmill_stops_the_job_and_hands_it_back_canceled() {
        let memory = MemoryQueue::new();
        let job = crate::testing::job();
        let id = job.id;
        memory.push(job);
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(CancellationToken::new()),
        )
        .spawn();
        until("the job running", || memory.running().len() == 1).await;
        memory.cancel(id, "alice", Some("not needed".into()));
        until("the hand-back", || !memory.handed_back().is_empty()).await;
        assert_eq!(memory.handed_back()[0].2, Outcome::Canceled);
        handle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_cancels_as_windmill_does() {
        let memory = MemoryQueue::new();
        let mut job = crate::testing::job();
        job.timeout = Some(Duration::from_secs(20));
        memory.push(job);
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(CancellationToken::new()),
        )
        .spawn();
        until("the hand-back", || !memory.handed_back().is_empty()).await;
        assert_eq!(memory.handed_back()[0].2, Outcome::Canceled);
        handle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_deleted_elsewhere_is_dropped_without_a_hand_back() {
        let memory = MemoryQueue::new();
        let job = crate::testing::job();
        let id = job.id;
        memory.push(job);
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(CancellationToken::new()),
        )
        .spawn();
        until("the job running", || memory.running().len() == 1).await;
        memory.delete(id);
        until("the worker to drop it", || handle.running() == 0).await;
        assert!(memory.handed_back().is_empty());
        handle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_taken_by_another_worker_is_left_running_for_it() {
        let memory = MemoryQueue::new();
        let job = crate::testing::job();
        let id = job.id;
        memory.push(job);
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = stopped.clone();
        let executor = Executor::InProcess(InProcessExecutor::new(
            &["python3"],
            Arc::new(
                move |_job: &Job, cancel: CancellationToken, _logs: &crate::logs::LogSink| {
                    let seen = seen.clone();
                    Box::pin(async move {
                        cancel.cancelled().await;
                        seen.store(true, Ordering::SeqCst);
                        Outcome::Canceled
                    })
                },
            ),
        ));
        let handle = Worker::new(config(4), Queue::Memory(memory.clone()), executor).spawn();
        until("the job running", || memory.running().len() == 1).await;
        memory.reassign(id, "wk-other");
        until("the worker to let go", || handle.running() == 0).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !stopped.load(Ordering::SeqCst),
            "the work was stopped, though another worker holds the job now"
        );
        assert!(memory.handed_back().is_empty());
        handle.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn registers_in_worker_ping_with_group_and_tags() {
        let memory = MemoryQueue::new();
        let handle = Worker::new(
            config(4),
            Queue::Memory(memory.clone()),
            gated(CancellationToken::new()),
        )
        .spawn();
        until("a registration", || !memory.pings().is_empty()).await;
        let ping = &memory.pings()[0];
        assert_eq!(ping.name, "wk-test");
        assert_eq!(ping.group, "k8s");
        assert_eq!(ping.tags, ["k8s"]);
        handle.shutdown().await;
    }
}
