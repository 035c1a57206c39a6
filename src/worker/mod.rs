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

pub use self::state::RecentFailure;
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
    probe: WorkerProbe,
}

/// A running worker's state as the HTTP endpoint reads it.
#[derive(Debug, Clone)]
pub struct WorkerProbe {
    shared: Arc<Shared>,
    config: Arc<Config>,
    name: String,
}

/// One job running now, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunningStatus {
    /// Windmill's job id.
    pub id: crate::domain::JobId,
    /// The workspace.
    pub workspace: String,
    /// The script or flow path.
    pub path: Option<String>,
    /// The tag.
    pub tag: String,
    /// The current attempt's Kubernetes Job, once it exists.
    pub kubernetes_job: Option<String>,
    /// The cluster it runs on, when the worker has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Where it is (`pending: waiting for capacity`, `running`, ...).
    pub phase: String,
    /// Seconds since this worker took it.
    pub for_seconds: f64,
}

/// What `/status` shows of the worker itself and its jobs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStatus {
    /// The worker's name in Windmill.
    pub worker: String,
    /// Its worker group.
    pub group: String,
    /// The tags it claims.
    pub tags: Vec<String>,
    /// The clusters it runs jobs on: `(name, namespace)`.
    pub clusters: Vec<ClusterStatus>,
    /// `worker.concurrency`.
    pub concurrency: usize,
    /// Jobs handed back since start.
    pub jobs_handed_back: i32,
    /// Jobs running now, longest first.
    pub running: Vec<RunningStatus>,
    /// The last failures, newest first.
    pub recent_failures: Vec<RecentFailure>,
}

/// A cluster the worker runs jobs on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// Its name (`default` for the single `cluster:` mapping).
    pub name: String,
    /// The namespace of the jobs.
    pub namespace: String,
    /// Whether new jobs can go there (its API answered the last probe).
    pub ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_because: Option<String>,
    /// Jobs placed there and not yet ended.
    pub in_flight: usize,
    /// Its warm pools (`warm_pools:`), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warm_pools: Vec<WarmPoolStatus>,
}

/// One warm pool's pods not handed a job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WarmPoolStatus {
    /// The pool (`<tag>-<language>`).
    pub pool: String,
    /// Pods whose runner calls for a job.
    pub waiting: usize,
    /// Pods made and not calling yet.
    pub starting: usize,
    /// How many it keeps.
    pub size: u32,
}

impl WorkerProbe {
    /// The worker's tags.
    #[must_use]
    pub fn tags(&self) -> &[String] {
        &self.config.settings.windmill.tags
    }

    /// The worker and the jobs it runs now.
    #[must_use]
    pub fn status(&self) -> WorkerStatus {
        let settings = &self.config.settings;
        let mut running: Vec<RunningStatus> = self
            .shared
            .snapshot()
            .into_iter()
            .map(|(id, job)| {
                let milestones = job.progress.milestones();
                RunningStatus {
                    id,
                    workspace: job.workspace.clone(),
                    path: job.path.clone(),
                    tag: job.tag.clone(),
                    kubernetes_job: milestones.object,
                    cluster: milestones.cluster,
                    phase: if milestones.phase.is_empty() {
                        "claimed".to_owned()
                    } else {
                        milestones.phase
                    },
                    for_seconds: job.since.elapsed().as_secs_f64(),
                }
            })
            .collect();
        running.sort_by(|a, b| b.for_seconds.total_cmp(&a.for_seconds));
        WorkerStatus {
            worker: self.name.clone(),
            group: settings.windmill.worker_group.clone(),
            tags: settings.windmill.tags.clone(),
            clusters: settings
                .clusters()
                .into_iter()
                .map(|c| ClusterStatus {
                    name: c.name,
                    namespace: c.namespace,
                    ready: true,
                    not_ready_because: None,
                    in_flight: 0,
                    warm_pools: Vec::new(),
                })
                .collect(),
            concurrency: settings.worker.concurrency,
            jobs_handed_back: self.shared.jobs_executed(),
            running,
            recent_failures: self.shared.recent_failures(),
        }
    }

    /// The worker's metrics, to update before an encode (queue depth, readiness).
    #[must_use]
    pub fn metrics_handle(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// `/metrics` in the Prometheus text format (`OpenMetrics`).
    #[must_use]
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode(&crate::metrics::Gauges {
            in_flight: self.shared.running_count(),
            concurrency: self.config.settings.worker.concurrency,
            heartbeat_lag: self.shared.heartbeat_lag().as_secs_f64(),
            fix_ups_pending: self.shared.fix_ups().len(),
        })
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
        self.probe.shared.running_count()
    }

    /// What the worker's HTTP endpoint reads: metrics and status.
    #[must_use]
    pub fn probe(&self) -> WorkerProbe {
        self.probe.clone()
    }

    /// Jobs handed back since start.
    #[must_use]
    pub fn jobs_executed(&self) -> i32 {
        self.probe.shared.jobs_executed()
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
        let metrics = crate::metrics::Metrics::new(self.executor.metrics());
        metrics.init_tags(&self.config.settings.windmill.tags);
        let shared = Arc::new(Shared::new(metrics));
        let probe = WorkerProbe {
            shared: shared.clone(),
            config: self.config.clone(),
            name: self.name.clone(),
        };
        let task = tokio::spawn(self.run(control.clone(), shared));
        WorkerHandle {
            control,
            task,
            probe,
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
        let hub =
            LogHub::new(self.queue.clone(), settings.logs.clone()).counting(shared.metrics.logs());
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
