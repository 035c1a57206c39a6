//! What the worker's tasks share: the jobs running now (each behind a drop guard, so that no way
//! out of a job's task — a panic included — leaves it in the heartbeat), pending fix-ups and the
//! count of jobs handed back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{Cancellation, JobId, Progress};
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
    /// When it entered the running set (for occupancy).
    since: Instant,
    /// Fired to stop the job's work (cancel, or the job left Windmill).
    pub(super) cancel: CancellationToken,
    /// Fired when the job became another worker's: stop following it, touch nothing.
    pub(super) detach: CancellationToken,
    stop: Mutex<Option<StopReason>>,
    /// Live figures the executor writes and the heartbeat reports (`memory_peak`).
    pub(super) progress: Progress,
}

impl RunningJob {
    fn new(workspace: String) -> Self {
        Self {
            workspace,
            since: Instant::now(),
            cancel: CancellationToken::new(),
            detach: CancellationToken::new(),
            stop: Mutex::new(None),
            progress: Progress::new(),
        }
    }

    /// Records why the job must stop (the first reason wins) and stops its work accordingly.
    pub(super) fn stop_with(&self, reason: StopReason) {
        let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
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
        self.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// State shared by the claim loop, the job tasks, the heartbeat and the fix-up loop.
#[derive(Debug, Default)]
pub(super) struct Shared {
    running: Mutex<HashMap<JobId, Arc<RunningJob>>>,
    fix_ups: Mutex<Vec<FixUp>>,
    jobs_executed: AtomicI32,
    /// Job-time of the jobs that left the running set.
    finished_busy: Mutex<std::time::Duration>,
    /// What `/metrics` shows.
    pub(super) metrics: crate::metrics::Metrics,
}

impl Shared {
    /// Enters a job in the running set; it leaves when the returned guard is dropped.
    pub(super) fn enter(self: &Arc<Self>, id: JobId, workspace: String) -> RunningEntry {
        let job = Arc::new(RunningJob::new(workspace));
        self.running().insert(id, job.clone());
        RunningEntry {
            shared: self.clone(),
            id,
            job,
        }
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
        running
            + *self
                .finished_busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
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
        self.fix_ups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn count_executed(&self) {
        self.jobs_executed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn jobs_executed(&self) -> i32 {
        self.jobs_executed.load(Ordering::Relaxed)
    }

    fn running(&self) -> MutexGuard<'_, HashMap<JobId, Arc<RunningJob>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
        *self
            .shared
            .finished_busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += self.job.since.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_leaves_the_running_set_when_its_entry_drops_even_in_a_panic() {
        let shared = Arc::new(Shared::default());
        let id = JobId::new_v4();
        let entry = shared.enter(id, "ws".into());
        assert_eq!(shared.running_count(), 1);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _entry = entry;
            panic!("the job's task failed");
        }));
        assert!(unwound.is_err());
        assert_eq!(shared.running_count(), 0);
    }
}
