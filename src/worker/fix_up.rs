//! The fix-up loop: once Windmill has completed a handed-back job, restore what a native run
//! shows (duration, memory peak, start time, worker, the real error, kind and args). Fix-ups a
//! stopped worker left undone are found at start: their records travel in `v2_job.args`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;
use super::state::Shared;
use crate::queue::FixUp;

/// How far back the startup sweep looks for fix-ups a stopped worker left undone.
const STALE_FIX_UP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often pending fix-ups are tried.
const FIX_UP_INTERVAL: Duration = Duration::from_millis(500);

/// Tries pending fix-ups every [`FIX_UP_INTERVAL`] until `stop` fires (then once more).
pub(super) async fn run(worker: Worker, shared: Arc<Shared>, stop: CancellationToken) {
    resume_stale(&worker, &shared).await;
    loop {
        let stopping = stop.is_cancelled();
        let pending: Vec<FixUp> = shared.fix_ups().clone();
        if !pending.is_empty() {
            match worker.queue.fix_up(&pending).await {
                Ok(done) if !done.is_empty() => {
                    tracing::debug!(jobs = done.len(), "fixed up completed jobs");
                    shared.fix_ups().retain(|f| !done.contains(&f.id));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "fix-up failed; retrying"
                ),
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

/// Fix-ups a stopped worker left behind: their records travel in `v2_job.args`.
async fn resume_stale(worker: &Worker, shared: &Shared) {
    match worker.queue.stale_fix_ups(STALE_FIX_UP_WINDOW).await {
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
        Err(error) => tracing::warn!(
            error = &error as &dyn std::error::Error,
            "looking for stale fix-ups failed"
        ),
    }
}
