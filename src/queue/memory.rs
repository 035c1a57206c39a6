//! A small in-memory queue for unit tests of the worker loop and the log hub. It keeps the rules
//! that matter to its callers (claim once, tag filter, ownership at heartbeat and hand-back) and
//! nothing of Windmill's storage.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Beat, FixUp, HandBack, HandBackResult, JobState, LogChunk, OwnedJob, WorkerPing};
use crate::domain::{Cancellation, Job, JobId, JobKind, Outcome};

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<Job>,
    running: BTreeMap<JobId, (String, Option<Cancellation>)>,
    /// The jobs behind `running`, for adoption after a restart.
    claimed: BTreeMap<JobId, Job>,
    /// Every cancellation recorded, kept after the hand-back.
    cancellations: BTreeMap<JobId, Cancellation>,
    hand_back_refusals: usize,
    logs: BTreeMap<JobId, String>,
    handed_back: Vec<(JobId, String, Outcome)>,
    pings: Vec<WorkerPing>,
    log_failures: usize,
}

/// The in-memory queue. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
}

impl MemoryQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread must not poison every later assertion.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a job.
    pub fn push(&self, job: Job) {
        self.lock().waiting.push_back(job);
    }

    /// Sets `canceled_by` on a job.
    pub fn cancel(&self, id: JobId, by: &str, reason: Option<String>) {
        let cancellation = Cancellation {
            by: by.to_owned(),
            reason,
        };
        let mut state = self.lock();
        if let Some(entry) = state.running.get_mut(&id) {
            entry.1 = Some(cancellation.clone());
            state.cancellations.insert(id, cancellation);
        }
    }

    /// The cancellation recorded for a job (`canceled_by`, `canceled_reason`), if any.
    #[must_use]
    pub fn cancellation(&self, id: JobId) -> Option<Cancellation> {
        self.lock().cancellations.get(&id).cloned()
    }

    /// Puts a job in the queue as already running under `worker` (claimed by a run of it that
    /// stopped).
    pub fn push_running(&self, job: Job, worker: &str) {
        let mut state = self.lock();
        state.running.insert(job.id, (worker.to_owned(), None));
        state.claimed.insert(job.id, job);
    }

    /// Makes the next `n` hand-backs fail with an error that retrying cannot fix.
    pub fn refuse_next_hand_backs(&self, n: usize) {
        self.lock().hand_back_refusals = n;
    }

    /// Gives a running job to another worker, as Windmill's zombie monitor and a re-claim do.
    pub fn reassign(&self, id: JobId, worker: &str) {
        if let Some(entry) = self.lock().running.get_mut(&id) {
            worker.clone_into(&mut entry.0);
        }
    }

    /// Deletes a running job, as if completed elsewhere.
    pub fn delete(&self, id: JobId) {
        self.lock().running.remove(&id);
    }

    /// Makes the next `n` log appends fail, to test that logs survive database errors.
    pub fn fail_next_log_appends(&self, n: usize) {
        self.lock().log_failures = n;
    }

    /// The log of a job so far.
    #[must_use]
    pub fn log(&self, id: JobId) -> String {
        self.lock().logs.get(&id).cloned().unwrap_or_default()
    }

    /// Jobs handed back so far: id, worker, outcome.
    #[must_use]
    pub fn handed_back(&self) -> Vec<(JobId, String, Outcome)> {
        self.lock().handed_back.clone()
    }

    /// Jobs currently running.
    #[must_use]
    pub fn running(&self) -> Vec<JobId> {
        self.lock().running.keys().copied().collect()
    }

    /// Jobs still waiting.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Registrations seen.
    #[must_use]
    pub fn pings(&self) -> Vec<WorkerPing> {
        self.lock().pings.clone()
    }

    pub(super) fn claim(&self, worker: &str, tags: &[String]) -> Option<Job> {
        let mut state = self.lock();
        let index = state.waiting.iter().position(|job| {
            tags.contains(&job.tag) && !JobKind::NEVER_CLAIMED.contains(&job.kind.as_str())
        })?;
        let job = state.waiting.remove(index)?;
        state.running.insert(job.id, (worker.to_owned(), None));
        state.claimed.insert(job.id, job.clone());
        Some(job)
    }

    pub(super) fn adopt(&self, worker: &str, id: JobId) -> Option<Job> {
        let state = self.lock();
        match state.running.get(&id) {
            Some((holder, _)) if holder == worker => state.claimed.get(&id).cloned(),
            _ => None,
        }
    }

    /// Whether this hand-back is to be refused (see [`Self::refuse_next_hand_backs`]).
    pub(super) fn refuses_hand_back(&self) -> bool {
        let mut state = self.lock();
        let refuse = state.hand_back_refusals > 0;
        state.hand_back_refusals = state.hand_back_refusals.saturating_sub(1);
        refuse
    }

    pub(super) fn owned(&self, worker: &str) -> Vec<OwnedJob> {
        self.lock()
            .running
            .iter()
            .filter(|(_, (holder, _))| holder == worker)
            .map(|(id, (_, cancel))| OwnedJob {
                id: *id,
                canceled: cancel.is_some(),
            })
            .collect()
    }

    pub(super) fn heartbeat(&self, worker: &str, beats: &[Beat]) -> Vec<(JobId, JobState)> {
        let state = self.lock();
        beats
            .iter()
            .map(|beat| {
                let job_state = match state.running.get(&beat.id) {
                    None => JobState::Gone,
                    Some((holder, _)) if holder != worker => JobState::Lost {
                        worker: Some(holder.clone()),
                    },
                    Some((_, Some(cancel))) => JobState::Canceled(cancel.clone()),
                    Some((_, None)) => JobState::Running,
                };
                (beat.id, job_state)
            })
            .collect()
    }

    pub(super) fn append_logs(&self, chunks: &[LogChunk]) -> Result<(), ()> {
        let mut state = self.lock();
        if state.log_failures > 0 {
            state.log_failures -= 1;
            return Err(());
        }
        for chunk in chunks {
            state
                .logs
                .entry(chunk.id)
                .or_default()
                .push_str(&chunk.text);
        }
        Ok(())
    }

    pub(super) fn hand_back(
        &self,
        worker: &str,
        _finalize_tag: &str,
        hand_back: &HandBack,
    ) -> HandBackResult {
        let mut state = self.lock();
        match state.running.get(&hand_back.id) {
            Some((holder, cancel)) if holder == worker => {
                let canceled =
                    cancel.is_some() || matches!(hand_back.completion.outcome, Outcome::Canceled);
                let outcome = if canceled {
                    Outcome::Canceled
                } else {
                    hand_back.completion.outcome.clone()
                };
                state.running.remove(&hand_back.id);
                state.claimed.remove(&hand_back.id);
                state
                    .handed_back
                    .push((hand_back.id, worker.to_owned(), outcome));
                HandBackResult::Done { canceled }
            }
            _ => HandBackResult::NotOurs,
        }
    }

    #[allow(clippy::unused_self)] // same shape as the Postgres queue
    pub(super) fn fix_up(&self, pending: &[FixUp]) -> Vec<JobId> {
        pending.iter().map(|p| p.id).collect()
    }

    pub(super) fn register(&self, ping: &WorkerPing) {
        self.lock().pings.push(ping.clone());
    }
}
