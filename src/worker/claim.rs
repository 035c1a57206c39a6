//! The claim loop: a permit first (never claim what cannot start), then one claim; an empty queue
//! waits `worker.poll_interval`, database trouble backs off. Once per poll interval the jobs on our
//! tags that must not wait for us (kinds we never run, jobs already canceled or failed) are handed
//! to stock workers, so nothing sits on our tags longer than one poll.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Jobs, Worker, retry_delays};

/// How many jobs one pass hands to stock workers at most (the next poll takes the rest).
const ROUTE_BATCH: i64 = 100;

/// Claims and starts jobs until `stop` fires.
pub(super) async fn run(jobs: &Jobs, stop: &CancellationToken) {
    let worker = &jobs.worker;
    let settings = &worker.config.settings;
    let poll = settings.worker.poll_interval.0;
    let mut errors = retry_delays();
    let mut routed_at: Option<Instant> = None;
    loop {
        if routed_at.is_none_or(|at| at.elapsed() >= poll) {
            route_elsewhere(worker).await;
            routed_at = Some(Instant::now());
        }
        // Never claim what we cannot start: the permit comes first.
        let permit = tokio::select! {
            permit = jobs.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            return;
        }
        let wait = match worker
            .queue
            .claim(&worker.name, &settings.windmill.tags)
            .await
        {
            Ok(Some(job)) => {
                errors = retry_delays();
                jobs.start(job, permit);
                continue;
            }
            Ok(None) => poll,
            Err(error) => {
                let delay = errors.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = &error as &dyn std::error::Error, retry_in = ?delay, "claiming failed");
                delay
            }
        };
        drop(permit);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One pass of handing jobs we do not run to stock workers; failures wait for the next pass.
async fn route_elsewhere(worker: &Worker) {
    let windmill = &worker.config.settings.windmill;
    match worker
        .queue
        .route_elsewhere(&windmill.tags, &windmill.finalize_tag, ROUTE_BATCH)
        .await
    {
        Ok(routed) => {
            for job in routed {
                tracing::info!(job.id = %job.id, tag = %job.tag, why = %job.why, "handed a job we do not run to a stock worker");
            }
        }
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "handing jobs we do not run to stock workers failed; retrying next poll"
            );
        }
    }
}
