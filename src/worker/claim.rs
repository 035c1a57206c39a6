//! The claim loop: a permit first (never claim what cannot start), then one claim; an empty queue
//! waits `worker.poll_interval`, database trouble backs off.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Jobs, retry_delays};

/// Claims and starts jobs until `stop` fires.
pub(super) async fn run(jobs: &Jobs, stop: &CancellationToken) {
    let worker = &jobs.worker;
    let settings = &worker.config.settings;
    let mut errors = retry_delays();
    loop {
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
            Ok(None) => settings.worker.poll_interval.0,
            Err(error) => {
                let delay = errors.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(%error, retry_in = ?delay, "claiming failed");
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
