//! What the worker's tasks share: the jobs running now (each behind a drop guard, so that no way
//! out of a job's task — a panic included — leaves it in the heartbeat), pending fix-ups and the
//! count of jobs handed back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{Cancellation, Job, JobId, Progress};
use crate::queue::{FixUp, JobState};

/// Why a running job was told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StopReason {
    /// Windmill canceled it (user, or timeout): hand back as canceled.
    Canceled(Cancellation),
    /// It is no longer ours: no hand-back.
    Lost(JobState),
}

/// One job this worker runs now, as the heartbeat sees it.
#[derive(Debug)]
pub(super) struct RunningJob {
    pub(super) workspace: String,
    /// Its script or flow path, for the status page.
    pub(super) path: Option<String>,
    /// Its tag.
    pub(super) tag: String,
    /// When it entered the running set (for occupancy, metrics and the status page).
    pub(super) since: Instant,
    /// Fired to stop the job's work (cancel, or the job left Windmill).
    pub(super) cancel: CancellationToken,
    /// Fired when the job became another worker's: stop following it, touch nothing.
    pub(super) detach: CancellationToken,
    stop: Mutex<Option<StopReason>>,
    /// Live figures the executor writes and the heartbeat reports (`memory_peak`).
    pub(super) progress: Progress,
}

impl RunningJob {
    fn new(job: &Job) -> Self {
        Self {
            workspace: job.workspace.clone(),
            path: job.path.clone(),
            tag: job.tag.clone(),
            since: Instant::now(),
            cancel: CancellationToken::new(),
            detach: CancellationToken::new(),
            stop: Mutex::new(None),
            progress: Progress::new(),
        }
    }

    /// Records why the job must stop (the first reason wins) and stops its work accordingly.
    pub(super) fn stop_with(&self, reason: StopReason) {
        let mut stop = lock(&self.stop);
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

    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        lock(&self.stop).clone()
    }
}

/// How many failures the status page remembers.
const RECENT_FAILURES: usize = 20;

/// A job that ended as a failure, for the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentFailure {
    /// Windmill's job id.
    pub id: JobId,
    /// The workspace.
    pub workspace: String,
    /// The script or flow path.
    pub path: Option<String>,
    /// The tag.
    pub tag: String,
    /// The failure category (`oom_killed`, `unschedulable`, ...).
    pub category: String,
    /// The failure's name (`ExecutionErr`, `Unschedulable`, ...).
    pub name: String,
    /// What happened and how to fix it (the job's own output stays in Windmill).
    pub hint: String,
    /// When it was handed back.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// State shared by the claim loop, the job tasks, the heartbeat and the fix-up loop.
#[derive(Debug)]
pub(super) struct Shared {
    running: Mutex<HashMap<JobId, Arc<RunningJob>>>,
    fix_ups: Mutex<Vec<FixUp>>,
    jobs_executed: AtomicI32,
    /// Job-time of the jobs that left the running set.
    finished_busy: Mutex<std::time::Duration>,
    /// When the heartbeat last committed every ping (else when the worker started).
    last_beat: Mutex<Instant>,
    /// The last failures, newest last.
    failures: Mutex<VecDeque<RecentFailure>>,
    /// What `/metrics` shows.
    pub(super) metrics: crate::metrics::Metrics,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new(crate::metrics::Metrics::default())
    }
}

impl Shared {
    /// Nothing running yet; counting into `metrics`.
    pub(super) fn new(metrics: crate::metrics::Metrics) -> Self {
        Self {
            running: Mutex::default(),
            fix_ups: Mutex::default(),
            jobs_executed: AtomicI32::new(0),
            finished_busy: Mutex::default(),
            last_beat: Mutex::new(Instant::now()),
            failures: Mutex::default(),
            metrics,
        }
    }

    /// Enters a job in the running set; it leaves when the returned guard is dropped.
    pub(super) fn enter(self: &Arc<Self>, job: &Job) -> RunningEntry {
        let id = job.id;
        let job = Arc::new(RunningJob::new(job));
        self.running().insert(id, job.clone());
        RunningEntry {
            shared: self.clone(),
            id,
            job,
        }
    }

    /// The heartbeat committed every ping just now.
    pub(super) fn beat_committed(&self) {
        *lock(&self.last_beat) = Instant::now();
    }

    /// Time since the heartbeat last committed every ping.
    pub(super) fn heartbeat_lag(&self) -> std::time::Duration {
        lock(&self.last_beat).elapsed()
    }

    /// Remembers a failure for the status page.
    pub(super) fn record_failure(&self, failure: RecentFailure) {
        let mut failures = lock(&self.failures);
        if failures.len() == RECENT_FAILURES {
            failures.pop_front();
        }
        failures.push_back(failure);
    }

    /// The last failures, newest first.
    pub(super) fn recent_failures(&self) -> Vec<RecentFailure> {
        lock(&self.failures).iter().rev().cloned().collect()
    }

    /// The jobs running now.
    pub(super) fn snapshot(&self) -> Vec<(JobId, Arc<RunningJob>)> {
        self.running()
            .iter()
            .map(|(id, job)| (*id, job.clone()))
            .collect()
    }

    /// Job-time spent so far, running jobs included (for occupancy).
    pub(super) fn busy(&self, now: Instant) -> std::time::Duration {
        let running: std::time::Duration = self
            .running()
            .values()
            .map(|job| now.saturating_duration_since(job.since))
            .sum();
        running + *lock(&self.finished_busy)
    }

    pub(super) fn running_count(&self) -> usize {
        self.running().len()
    }

    /// One running job and its workspace, for `worker_ping.current_job_id`.
    pub(super) fn any_running(&self) -> Option<(JobId, String)> {
        self.running()
            .iter()
            .next()
            .map(|(id, job)| (*id, job.workspace.clone()))
    }

    pub(super) fn fix_ups(&self) -> MutexGuard<'_, Vec<FixUp>> {
        lock(&self.fix_ups)
    }

    pub(super) fn count_executed(&self) {
        self.jobs_executed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn jobs_executed(&self) -> i32 {
        self.jobs_executed.load(Ordering::Relaxed)
    }

    fn running(&self) -> MutexGuard<'_, HashMap<JobId, Arc<RunningJob>>> {
        lock(&self.running)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A job's place in the running set: dropping it (however the job's task ends) takes the job out
/// of the heartbeat, so a dead task never keeps a job alive in Windmill.
#[derive(Debug)]
pub(super) struct RunningEntry {
    shared: Arc<Shared>,
    id: JobId,
    job: Arc<RunningJob>,
}

impl std::ops::Deref for RunningEntry {
    type Target = RunningJob;

    fn deref(&self) -> &RunningJob {
        &self.job
    }
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.shared.running().remove(&self.id);
        *lock(&self.shared.finished_busy) += self.job.since.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_leaves_the_running_set_when_its_entry_drops_even_in_a_panic() {
        let shared = Arc::new(Shared::default());
        let entry = shared.enter(&crate::testing::job());
        assert_eq!(shared.running_count(), 1);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _entry = entry;
            panic!("the job's task failed");
        }));
        assert!(unwound.is_err());
        assert_eq!(shared.running_count(), 0);
    }
}
