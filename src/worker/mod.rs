//! The worker: claims jobs when a permit is free, runs each through the executor, keeps them alive
//! with one batched heartbeat, hands them back, fixes up the completed rows, and shuts down in two
//! phases. One file per step of a job's path:
//!
//! - [`adopt`]: at start, takes back the jobs this worker (or a silent one of its group) left
//!   running — following their work where it still runs, starting those whose work never began.
//! - [`claim`]: the claim loop; the permit comes before the claim.
//! - [`job`]: one job's life — run with its timeout, hand back (with retries), clean up.
//! - [`heartbeat`]: the batched ping of every running job and the `worker_ping` row.
//! - [`fix_up`]: restores what a native run shows once Windmill has completed a handed-back job.
//! - [`occupancy`]: the busy share of the worker's slots that `worker_ping` reports.
//! - [`state`]: what those tasks share.
//!
//! Shutdown: [`WorkerHandle::stop`] (SIGTERM) stops claiming and lets running jobs finish within
//! `worker.shutdown_grace`; what still runs then is abandoned *without* a hand-back, so it stays
//! owned in Windmill and the next worker can adopt it. Heartbeats stop last.
//! [`WorkerHandle::abandon`] (a second signal) skips the grace.

mod adopt;
mod claim;
mod fix_up;
mod heartbeat;
mod job;
mod occupancy;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::state::Shared;
use crate::config::Config;
use crate::executor::Executor;
use crate::logs::LogHub;
use crate::queue::Queue;

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
    control: WorkerControl,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    concurrency: usize,
}

/// A running worker's state as the HTTP endpoint reads it.
#[derive(Debug, Clone)]
pub struct WorkerProbe {
    shared: Arc<Shared>,
    concurrency: usize,
}

impl WorkerProbe {
    /// `/metrics` in the Prometheus text format (`OpenMetrics`).
    #[must_use]
    pub fn metrics(&self) -> String {
        self.shared
            .metrics
            .encode(self.shared.running_count(), self.concurrency)
    }
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
        self.control.clone()
    }

    /// Stops claiming; running jobs get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.control.stop();
    }

    /// Stops claiming and abandons running jobs at once (they stay owned in Windmill).
    pub fn abandon(&self) {
        self.control.abandon();
    }

    /// Jobs running now.
    #[must_use]
    pub fn running(&self) -> usize {
        self.shared.running_count()
    }

    /// What the worker's HTTP endpoint reads: metrics and the running count.
    #[must_use]
    pub fn probe(&self) -> WorkerProbe {
        WorkerProbe {
            shared: self.shared.clone(),
            concurrency: self.concurrency,
        }
    }

    /// Jobs handed back since start.
    #[must_use]
    pub fn jobs_executed(&self) -> i32 {
        self.shared.jobs_executed()
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

/// What every job task of a running worker needs: the worker itself, the permits, the shared
/// state, the log hub, the task tracker and the abandon token — one value instead of six
/// arguments passed by hand.
#[derive(Debug, Clone)]
struct Jobs {
    worker: Worker,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    hub: LogHub,
    tracker: TaskTracker,
    abandon: CancellationToken,
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
        let control = WorkerControl {
            stop_claiming: CancellationToken::new(),
            abandon: CancellationToken::new(),
        };
        let shared = Arc::new(Shared::default());
        let concurrency = self.config.settings.worker.concurrency;
        let task = tokio::spawn(self.run(control.clone(), shared.clone()));
        WorkerHandle {
            control,
            task,
            shared,
            concurrency,
        }
    }

    async fn run(self, control: WorkerControl, shared: Arc<Shared>) {
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
        let beat_task = tokio::spawn(heartbeat::run(
            self.clone(),
            shared.clone(),
            beat_stop.clone(),
        ));
        let fix_up_stop = CancellationToken::new();
        let fix_up_task = tokio::spawn(fix_up::run(
            self.clone(),
            shared.clone(),
            fix_up_stop.clone(),
        ));

        let jobs = Jobs {
            worker: self.clone(),
            permits: Arc::new(Semaphore::new(settings.worker.concurrency)),
            shared: shared.clone(),
            hub,
            tracker: TaskTracker::new(),
            abandon: control.abandon.clone(),
        };
        adopt::run(&jobs).await;
        claim::run(&jobs, &control.stop_claiming).await;
        jobs.tracker.close();
        jobs.wait_for_running(settings.worker.shutdown_grace.0)
            .await;

        // Logs first, heartbeats last: while a job is still owned its ping stays fresh.
        hub_stop.cancel();
        let _ = hub_task.await;
        fix_up_stop.cancel();
        let _ = fix_up_task.await;
        beat_stop.cancel();
        let _ = beat_task.await;
        tracing::info!(worker = %self.name, jobs = shared.jobs_executed(), "worker stopped");
    }
}

impl Jobs {
    /// After the claim loop ended: gives running jobs `grace` to finish, then abandons them
    /// (they stay owned in Windmill for the next worker), and waits for their tasks.
    async fn wait_for_running(&self, grace: Duration) {
        let running = self.shared.running_count();
        if running > 0 {
            tracing::info!(running, grace = ?grace, "stopped claiming; waiting for running jobs");
        }
        tokio::select! {
            () = self.tracker.wait() => {}
            () = self.abandon.cancelled() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(running = self.shared.running_count(), "shutdown grace elapsed; leaving running jobs to the next worker");
            }
        }
        self.abandon.cancel();
        self.tracker.wait().await;
    }
}

/// Delays between retries of database work: exponential from 100 ms, jittered, capped at 10 s,
/// unbounded in count.
fn retry_delays() -> impl Iterator<Item = Duration> {
    crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(10))
}

#[cfg(test)]
mod tests;
