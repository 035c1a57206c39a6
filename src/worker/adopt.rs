//! Before claiming anything, take back what a stopped worker left: jobs whose work still runs are
//! followed (never started twice), work whose Windmill job is gone is removed, and jobs still
//! running under this worker's name in Windmill that have no work at all (the worker was killed
//! between the claim and creating the work) are started — their user code never ran.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Jobs, retry_delays};
use crate::domain::{Completion, JobId};
use crate::queue::OwnedJob;

/// How long another worker's running job must have gone without a ping before this worker adopts
/// its still-running work at start (Windmill's own monitor re-queues after 60 s).
const ADOPT_AFTER_SILENCE: Duration = Duration::from_secs(30);
/// How often listing the executor's work or this worker's jobs is tried before giving up.
const LIST_TRIES: usize = 5;

/// Adopts, cleans up and restarts as described above.
pub(super) async fn run(jobs: &Jobs) {
    let executor = &jobs.worker.executor;
    let Some(found) =
        with_retries("listing running work to adopt", || executor.running_jobs()).await
    else {
        // Without knowing what runs, starting anything could run it twice: Windmill's zombie
        // monitor re-queues what is left.
        return;
    };
    let found: BTreeSet<JobId> = found.into_iter().collect();
    for id in &found {
        follow_running_work(jobs, *id).await;
    }
    let queue = &jobs.worker.queue;
    let name = &jobs.worker.name;
    let Some(owned) = with_retries("listing this worker's jobs", || queue.owned(name)).await else {
        return;
    };
    for owned in owned.into_iter().filter(|o| !found.contains(&o.id)) {
        start_without_work(jobs, owned).await;
    }
}

async fn follow_running_work(jobs: &Jobs, id: JobId) {
    let worker = &jobs.worker;
    match worker
        .queue
        .adopt(&worker.name, id, ADOPT_AFTER_SILENCE)
        .await
    {
        Ok(Some(job)) => {
            let Ok(permit) = jobs.permits.clone().acquire_owned().await else {
                return;
            };
            tracing::info!(job.id = %id, "adopting a job whose work is still running");
            jobs.adopt(job, None, permit);
        }
        Ok(None) => match worker.queue.in_queue(id).await {
            Ok(false) => {
                tracing::info!(job.id = %id, "cleaning up work of a job Windmill no longer has");
                worker.executor.cleanup(id).await;
            }
            Ok(true) => tracing::debug!(job.id = %id, "running work belongs to a live worker"),
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "looking up a job to adopt failed"
            ),
        },
        Err(error) => {
            tracing::warn!(error = &error as &dyn std::error::Error, job.id = %id, "adopting failed; Windmill re-queues it if it stays silent");
        }
    }
}

/// A job Windmill shows running under our name with no work in the executor: a canceled one is
/// handed back canceled; any other is started from the beginning.
async fn start_without_work(jobs: &Jobs, owned: OwnedJob) {
    let worker = &jobs.worker;
    let job = match worker
        .queue
        .adopt(&worker.name, owned.id, ADOPT_AFTER_SILENCE)
        .await
    {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(error = &error as &dyn std::error::Error, job.id = %owned.id, "taking back a job without work failed; Windmill re-queues it");
            return;
        }
    };
    let Ok(permit) = jobs.permits.clone().acquire_owned().await else {
        return;
    };
    if owned.canceled {
        tracing::info!(job.id = %owned.id, "handing back a job canceled while this worker was down");
        jobs.adopt(job, Some(Completion::canceled(Duration::ZERO)), permit);
    } else {
        tracing::info!(job.id = %owned.id, "starting a job claimed before a restart whose work never began");
        jobs.adopt(job, None, permit);
    }
}

/// Tries `list` a few times with backoff; `None` (logged) when it keeps failing.
async fn with_retries<T, E, F, Fut>(what: &str, mut list: F) -> Option<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = retry_delays();
    for attempt in 1..=LIST_TRIES {
        let error: Box<dyn std::error::Error + Send + Sync> = match list().await {
            Ok(found) => return Some(found),
            Err(error) => error.into(),
        };
        if attempt == LIST_TRIES {
            tracing::warn!(
                error = &*error as &dyn std::error::Error,
                "{what} failed; Windmill re-queues what is left"
            );
        } else {
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            tracing::debug!(error = &*error as &dyn std::error::Error, retry_in = ?delay, "{what} failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
    None
}
