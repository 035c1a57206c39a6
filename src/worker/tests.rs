//! Unit tests of the worker loop on the in-memory queue, on virtual time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::*;
use crate::domain::{Cancellation, FailureCategory, Job, Outcome};
use crate::executor::InProcessExecutor;
use crate::queue::MemoryQueue;

fn config(concurrency: usize) -> Config {
    let env: BTreeMap<String, String> = [
        (
            "FLEXT__WORKER__CONCURRENCY".to_owned(),
            concurrency.to_string(),
        ),
        ("FLEXT__WORKER__NAME".to_owned(), "wk-test".to_owned()),
        ("FLEXT__WORKER__SHUTDOWN_GRACE".to_owned(), "10s".to_owned()),
    ]
    .into();
    Config::from_yaml("", &env).unwrap()
}

/// An executor whose jobs wait until `release` fires, then succeed.
fn gated(release: CancellationToken) -> Executor {
    Executor::InProcess(InProcessExecutor::new(
        &["python3"],
        Arc::new(move |_job: &Job, _cancel, _logs: &crate::logs::LogSink| {
            let release = release.clone();
            Box::pin(async move {
                release.cancelled().await;
                Outcome::Success(serde_json::json!("done"))
            })
        }),
    ))
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn never_claims_more_jobs_than_permits() {
    let memory = MemoryQueue::new();
    for _ in 0..5 {
        memory.push(crate::testing::job());
    }
    let release = CancellationToken::new();
    let handle = Worker::new(
        config(2),
        Queue::Memory(memory.clone()),
        gated(release.clone()),
    )
    .spawn();
    until("two jobs running", || memory.running().len() == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        memory.running().len(),
        2,
        "a third job was claimed without a free permit"
    );
    assert_eq!(memory.waiting(), 3);
    release.cancel();
    until("all handed back", || memory.handed_back().len() == 5).await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stop_lets_running_jobs_finish_within_the_grace() {
    let memory = MemoryQueue::new();
    memory.push(crate::testing::job());
    let release = CancellationToken::new();
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(release.clone()),
    )
    .spawn();
    until("the job running", || memory.running().len() == 1).await;
    handle.stop();
    memory.push(crate::testing::job());
    tokio::time::sleep(Duration::from_secs(3)).await;
    release.cancel();
    handle.wait().await;
    assert_eq!(memory.handed_back().len(), 1);
    assert_eq!(memory.waiting(), 1, "a job was claimed after stop");
}

#[tokio::test(start_paused = true)]
async fn past_the_grace_running_jobs_stay_owned_and_are_not_handed_back() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    memory.push(job);
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(CancellationToken::new()),
    )
    .spawn();
    until("the job running", || memory.running().len() == 1).await;
    handle.stop();
    handle.wait().await;
    assert!(memory.handed_back().is_empty());
    assert_eq!(
        memory.running(),
        vec![id],
        "the job must stay owned for the next worker"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_in_windmill_stops_the_job_and_hands_it_back_canceled() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    memory.push(job);
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(CancellationToken::new()),
    )
    .spawn();
    until("the job running", || memory.running().len() == 1).await;
    memory.cancel(id, "alice", Some("not needed".into()));
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    assert_eq!(memory.handed_back()[0].2, Outcome::Canceled);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_as_windmill_does() {
    let memory = MemoryQueue::new();
    let mut job = crate::testing::job();
    let id = job.id;
    job.timeout = Some(Duration::from_secs(20));
    memory.push(job);
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(CancellationToken::new()),
    )
    .spawn();
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    assert_eq!(memory.handed_back()[0].2, Outcome::Canceled);
    assert_eq!(
        memory.cancellation(id),
        Some(Cancellation {
            by: "timeout".into(),
            reason: Some("duration > 20".into()),
        }),
        "Windmill records a timeout as canceled_by = 'timeout', canceled_reason = 'duration > <secs>'"
    );
    handle.shutdown().await;
}

/// An executor whose jobs panic, as a bug of ours would.
fn panicking() -> Executor {
    Executor::InProcess(InProcessExecutor::new(
        &["python3"],
        Arc::new(|_job: &Job, _cancel, _logs: &crate::logs::LogSink| {
            Box::pin(async { panic!("index out of bounds in the executor") })
        }),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_task_panics_ends_as_a_failure_and_leaves_the_heartbeat() {
    let memory = MemoryQueue::new();
    memory.push(crate::testing::job());
    let handle = Worker::new(config(4), Queue::Memory(memory.clone()), panicking()).spawn();
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    let Outcome::Failure(failure) = &memory.handed_back()[0].2 else {
        panic!("expected a failure, got {:?}", memory.handed_back()[0].2);
    };
    assert_eq!(failure.name, "WorkerPanic");
    assert_eq!(failure.category, FailureCategory::Internal);
    assert!(
        failure
            .message
            .contains("index out of bounds in the executor"),
        "{}",
        failure.message
    );
    until("the job to leave the running set", || handle.running() == 0).await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hand_back_the_database_refuses_for_good_is_not_retried_but_failed_with_the_cause() {
    let memory = MemoryQueue::new();
    memory.push(crate::testing::job());
    memory.refuse_next_hand_backs(1);
    let release = CancellationToken::new();
    release.cancel();
    let handle = Worker::new(config(4), Queue::Memory(memory.clone()), gated(release)).spawn();
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    let Outcome::Failure(failure) = &memory.handed_back()[0].2 else {
        panic!("expected a failure, got {:?}", memory.handed_back()[0].2);
    };
    assert_eq!(failure.name, "HandBackRefused");
    assert!(
        failure.message.contains("refused by the memory queue"),
        "the cause is named: {}",
        failure.message
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_left_running_under_our_name_without_work_is_started_at_restart() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    // A run of this worker claimed it and was killed before the executor had any work for it.
    memory.push_running(job, "wk-test");
    let release = CancellationToken::new();
    release.cancel();
    let handle = Worker::new(config(4), Queue::Memory(memory.clone()), gated(release)).spawn();
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    assert_eq!(
        memory.handed_back(),
        vec![(
            id,
            "wk-test".to_owned(),
            Outcome::Success(serde_json::json!("done"))
        )]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_canceled_while_the_worker_was_down_is_handed_back_canceled_without_running() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    memory.push_running(job, "wk-test");
    memory.cancel(id, "alice", None);
    let handle = Worker::new(config(4), Queue::Memory(memory.clone()), panicking()).spawn();
    until("the hand-back", || !memory.handed_back().is_empty()).await;
    assert_eq!(memory.handed_back()[0].2, Outcome::Canceled, "the job ran");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_deleted_elsewhere_is_dropped_without_a_hand_back() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    memory.push(job);
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(CancellationToken::new()),
    )
    .spawn();
    until("the job running", || memory.running().len() == 1).await;
    memory.delete(id);
    until("the worker to drop it", || handle.running() == 0).await;
    assert!(memory.handed_back().is_empty());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_taken_by_another_worker_is_left_running_for_it() {
    let memory = MemoryQueue::new();
    let job = crate::testing::job();
    let id = job.id;
    memory.push(job);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = stopped.clone();
    let executor = Executor::InProcess(InProcessExecutor::new(
        &["python3"],
        Arc::new(
            move |_job: &Job, cancel: CancellationToken, _logs: &crate::logs::LogSink| {
                let seen = seen.clone();
                Box::pin(async move {
                    cancel.cancelled().await;
                    seen.store(true, Ordering::SeqCst);
                    Outcome::Canceled
                })
            },
        ),
    ));
    let handle = Worker::new(config(4), Queue::Memory(memory.clone()), executor).spawn();
    until("the job running", || memory.running().len() == 1).await;
    memory.reassign(id, "wk-other");
    until("the worker to let go", || handle.running() == 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !stopped.load(Ordering::SeqCst),
        "the work was stopped, though another worker holds the job now"
    );
    assert!(memory.handed_back().is_empty());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn registers_in_worker_ping_with_group_and_tags() {
    let memory = MemoryQueue::new();
    let handle = Worker::new(
        config(4),
        Queue::Memory(memory.clone()),
        gated(CancellationToken::new()),
    )
    .spawn();
    until("a registration", || !memory.pings().is_empty()).await;
    let ping = &memory.pings()[0];
    assert_eq!(ping.name, "wk-test");
    assert_eq!(ping.group, "k8s");
    assert_eq!(ping.tags, ["k8s"]);
    handle.shutdown().await;
}
