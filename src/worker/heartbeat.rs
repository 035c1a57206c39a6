//! One batched heartbeat for every running job: refreshes `ping` and `memory_peak`, and acts on
//! what it reads back (canceled, completed elsewhere, taken by another worker). The same tick
//! refreshes this worker's `worker_ping` row, occupancy rates included.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Worker;
use super::occupancy::{Occupancy, Rates};
use super::state::{RunningJob, Shared, StopReason};
use crate::domain::JobId;
use crate::queue::{Beat, JobState, WorkerPing};

/// Beats every `worker.heartbeat_interval` until `stop` fires.
pub(super) async fn run(worker: Worker, shared: Arc<Shared>, stop: CancellationToken) {
    let started_at = Utc::now();
    let mut occupancy = Occupancy::new(Instant::now(), worker.config.settings.worker.concurrency);
    let mut interval = tokio::time::interval(worker.config.settings.worker.heartbeat_interval.0);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        let jobs_pinged = beat(&worker, &shared).await;
        let now = Instant::now();
        let rates = occupancy.record(now, shared.busy(now));
        match worker
            .queue
            .register(&ping(&worker, &shared, started_at, rates))
            .await
        {
            Ok(()) if jobs_pinged => shared.beat_committed(),
            Ok(()) => {}
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "refreshing worker_ping failed"
            ),
        }
    }
}

/// Pings every running job; whether that committed (true with none running).
async fn beat(worker: &Worker, shared: &Shared) -> bool {
    let jobs = shared.snapshot();
    if jobs.is_empty() {
        return true;
    }
    let beats: Vec<Beat> = jobs
        .iter()
        .map(|(id, job)| Beat {
            id: *id,
            memory_peak_kib: job.progress.memory_peak_kib(),
        })
        .collect();
    match worker.queue.heartbeat(&worker.name, &beats).await {
        Ok(states) => {
            let by_id: HashMap<JobId, Arc<RunningJob>> = jobs.into_iter().collect();
            for (id, state) in states {
                if let Some(job) = by_id.get(&id) {
                    act_on(id, job, state);
                }
            }
            true
        }
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                jobs = beats.len(),
                "heartbeat failed; retrying next tick"
            );
            false
        }
    }
}

/// What the heartbeat read back about one job, carried out.
fn act_on(id: JobId, job: &RunningJob, state: JobState) {
    match state {
        JobState::Running => {}
        JobState::Canceled(cancel) => {
            if job.stop_reason().is_none() {
                tracing::info!(job.id = %id, by = %cancel.by, "job canceled in Windmill");
            }
            job.stop_with(StopReason::Canceled(cancel));
        }
        state @ (JobState::Gone | JobState::Lost { .. }) => {
            tracing::warn!(job.id = %id, ?state, "job left our hands");
            job.stop_with(StopReason::Lost(state));
        }
    }
}

fn ping(worker: &Worker, shared: &Shared, started_at: DateTime<Utc>, rates: Rates) -> WorkerPing {
    let settings = &worker.config.settings;
    WorkerPing {
        name: worker.name.clone(),
        instance: crate::config::hostname(),
        group: settings.windmill.worker_group.clone(),
        tags: settings.windmill.tags.clone(),
        version: format!("flext-kubernetes/{}", env!("CARGO_PKG_VERSION")),
        current_job: shared.any_running(),
        jobs_executed: shared.jobs_executed(),
        occupancy: rates.total,
        occupancy_15s: rates.windows[0],
        occupancy_5m: rates.windows[1],
        occupancy_30m: rates.windows[2],
        vcpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| i64::try_from(n.get()).ok()),
        memory: crate::telemetry::host_memory_bytes(),
        memory_usage: crate::telemetry::own_rss_bytes(),
        started_at,
    }
}
