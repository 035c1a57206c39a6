//! The worker against Windmill's queue in a real PostgreSQL: claims, heartbeats, logs, hand-backs,
//! the fix-up, registration, startup checks, and a flow completed end to end with a stock-worker
//! double.

// Tests fail loudly by design; expected strings are easiest to read built with format!.
#![allow(
    clippy::unwrap_used,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::stock::StockWorker;
use common::{
    Flow, TestDb, WindmillJob, add, completed, config, eventually, executor, holds_for, job_row,
    logs, queue_row, start_worker,
};
use flext_kubernetes::domain::{Completion, FailureCategory, JobFailure, JobId, JobKind, Outcome};
use flext_kubernetes::queue::{HandBack, HandBackResult, JobState, Queue, schema};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

fn tags() -> Vec<String> {
    vec!["k8s".into(), "k8s-gpu".into()]
}

// ---------------------------------------------------------------------------------------------
// Claiming

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_never_hands_one_job_to_two_workers() {
    let db = TestDb::new().await;
    let mut pushed = HashSet::new();
    for i in 0..300 {
        pushed.insert(
            WindmillJob::preview("x")
                .args(json!({"i": i}))
                .push(&db)
                .await,
        );
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let queue = Queue::Postgres(db.queue());
        tasks.push(tokio::spawn(async move {
            let name = format!("wk-race-{w}");
            let mut mine = Vec::new();
            while let Some(job) = queue.claim(&name, &tags()).await.unwrap() {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    let unique: HashSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 300, "every job claimed exactly once");
    assert_eq!(unique, pushed);
    let still_waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM v2_job_queue WHERE running = false")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(still_waiting, 0);
}

#[tokio::test]
async fn claims_only_our_tags_and_runnable_kinds() {
    let db = TestDb::new().await;
    let other_tag = WindmillJob::preview("x").tag("python3").push(&db).await;
    let mut never = Vec::new();
    for kind in [
        "flow",
        "flowpreview",
        "dependencies",
        "flowdependencies",
        "appdependencies",
        "identity",
        "noop",
        "singlestepflow",
        "flownode",
    ] {
        never.push(WindmillJob::kind(kind).push(&db).await);
    }
    never.push(WindmillJob::preview("x").same_worker().push(&db).await);
    never.push(
        WindmillJob::preview("x")
            .canceled_by("alice")
            .push(&db)
            .await,
    );
    never.push(
        WindmillJob::preview("x")
            .pre_run_error("broken")
            .push(&db)
            .await,
    );
    never.push(
        WindmillJob::preview("x")
            .scheduled_in(Duration::from_secs(3600))
            .push(&db)
            .await,
    );
    let ours = WindmillJob::preview("x").tag("k8s-gpu").push(&db).await;
    let script = WindmillJob::script("u/alice/etl", "def main(): pass")
        .push(&db)
        .await;

    let queue = Queue::Postgres(db.queue());
    let mut got = HashSet::new();
    while let Some(job) = queue.claim("wk-a", &tags()).await.unwrap() {
        got.insert(job.id);
    }
    assert_eq!(got, HashSet::from([ours, script]));
    for id in never.iter().chain([&other_tag]) {
        let (running, worker, ..) = queue_row(&db, *id).await.unwrap();
        assert!(!running && worker.is_none(), "job {id} must not be claimed");
    }
}

#[tokio::test]
async fn claim_follows_windmill_order_priority_then_scheduled_for() {
    let db = TestDb::new().await;
    let first_low = WindmillJob::preview("x").push(&db).await;
    let second_low = WindmillJob::preview("x").push(&db).await;
    let high = WindmillJob::preview("x").priority(10).push(&db).await;
    let medium = WindmillJob::preview("x").priority(5).push(&db).await;
    let queue = Queue::Postgres(db.queue());
    let mut order = Vec::new();
    while let Some(job) = queue.claim("wk-a", &tags()).await.unwrap() {
        order.push(job.id);
    }
    assert_eq!(order, vec![high, medium, first_low, second_low]);
}

#[tokio::test]
async fn claim_returns_code_and_lock_by_kind_and_marks_the_row() {
    let db = TestDb::new().await;
    let id = WindmillJob::script("u/alice/etl", "def main(x):\n    return x")
        .args(json!({"x": 2}))
        .timeout(42)
        .envs(&["FOO=bar"])
        .push(&db)
        .await;
    let job = Queue::Postgres(db.queue())
        .claim("wk-a", &tags())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.id, id);
    assert_eq!(job.kind, JobKind::Script);
    assert_eq!(job.code.as_deref(), Some("def main(x):\n    return x"));
    assert_eq!(job.language.as_ref().map(|l| l.as_str()), Some("python3"));
    assert_eq!(job.args, json!({"x": 2}));
    assert_eq!(job.timeout, Some(Duration::from_secs(42)));
    assert_eq!(job.script_envs, vec!["FOO=bar".to_owned()]);
    assert_eq!(job.path.as_deref(), Some("u/alice/etl"));
    let (running, worker, ..) = queue_row(&db, id).await.unwrap();
    assert!(running);
    assert_eq!(worker.as_deref(), Some("wk-a"));
    let started: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT started_at FROM v2_job_queue WHERE id = $1")
            .bind(id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(started.is_some());
}

#[tokio::test]
async fn claiming_a_flow_step_marks_it_in_progress_in_the_parent() {
    let db = TestDb::new().await;
    let flow = Flow::new(json!({"x": 1}))
        .step("a", "python3", "def main(): return 1", "k8s")
        .push(&db)
        .await;
    let stock = StockWorker::new(&db.pool);
    assert_eq!(
        stock.run_once().await.unwrap(),
        Some(flow.0),
        "the stock worker starts the flow"
    );
    let step = Queue::Postgres(db.queue())
        .claim("wk-a", &tags())
        .await
        .unwrap()
        .expect("the step is on our tag");
    assert_eq!(step.kind, JobKind::FlowScript);
    assert_eq!(
        step.code.as_deref(),
        Some("def main(): return 1"),
        "code comes from flow_node"
    );
    assert_eq!(step.flow.as_ref().map(|f| f.parent), Some(flow));
    let status: serde_json::Value =
        sqlx::query_scalar("SELECT flow_status FROM v2_job_status WHERE id = $1")
            .bind(flow.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status["modules"][0]["type"], "InProgress");
    assert_eq!(status["modules"][0]["job"], step.id.to_string());
    assert_eq!(
        status["modules"][0]["id"], "a",
        "other fields of the module are kept"
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-back: exactly the rows the contract specifies

async fn claimed(db: &TestDb, job: WindmillJob) -> flext_kubernetes::domain::Job {
    job.push(db).await;
    Queue::Postgres(db.queue())
        .claim("wk-a", &tags())
        .await
        .unwrap()
        .unwrap()
}

fn hand_back(job: &flext_kubernetes::domain::Job, outcome: Outcome) -> HandBack {
    HandBack::of(
        job,
        Completion {
            outcome,
            duration: Duration::from_millis(1234),
            memory_peak_kib: Some(2048),
            preprocessed_args: None,
        },
    )
}

#[tokio::test]
async fn success_hand_back_turns_the_job_into_an_identity_carrying_the_result() {
    let db = TestDb::new().await;
    let job = claimed(&db, WindmillJob::preview("x").args(json!({"x": 1}))).await;
    let queue = Queue::Postgres(db.queue());
    let result = queue
        .hand_back(
            "wk-a",
            "flow",
            &hand_back(&job, Outcome::Success(json!({"sum": 3}))),
        )
        .await
        .unwrap();
    assert_eq!(result, HandBackResult::Done { canceled: false });
    let (kind, args, pre_run_error) = job_row(&db, job.id).await;
    assert_eq!(kind, "identity");
    let args = args.unwrap();
    assert_eq!(args["previous_result"], json!({"sum": 3}));
    assert_eq!(args["x"], 1);
    assert_eq!(args["_flext_fixup"]["kind"], "preview");
    assert_eq!(pre_run_error, None);
    let cache_ttl: Option<i32> = sqlx::query_scalar("SELECT cache_ttl FROM v2_job WHERE id = $1")
        .bind(job.id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(cache_ttl, None);
    let (running, worker, tag, canceled_by) = queue_row(&db, job.id).await.unwrap();
    assert!(!running);
    assert_eq!(worker, None);
    assert_eq!(tag, "flow");
    assert_eq!(canceled_by, None);
}

#[tokio::test]
async fn failure_hand_back_sets_pre_run_error_and_keeps_the_kind() {
    let db = TestDb::new().await;
    let job = claimed(&db, WindmillJob::preview("x")).await;
    let failure = JobFailure::new(
        FailureCategory::UserError,
        "ValueError",
        "x must be positive",
    );
    Queue::Postgres(db.queue())
        .hand_back(
            "wk-a",
            "flow-demo",
            &hand_back(&job, Outcome::Failure(failure)),
        )
        .await
        .unwrap();
    let (kind, _, pre_run_error) = job_row(&db, job.id).await;
    assert_eq!(kind, "preview");
    assert_eq!(
        pre_run_error.as_deref(),
        Some("ValueError [user_error]: x must be positive")
    );
    assert_eq!(
        queue_row(&db, job.id).await.unwrap().2,
        "flow-demo",
        "the finalize tag is configurable"
    );
}

#[tokio::test]
async fn canceled_hand_back_changes_nothing_in_v2_job() {
    let db = TestDb::new().await;
    let job = claimed(&db, WindmillJob::preview("x").args(json!({"a": 1}))).await;
    sqlx::query(
        "UPDATE v2_job_queue SET canceled_by = 'alice', canceled_reason = 'stop' WHERE id = $1",
    )
    .bind(job.id.0)
    .execute(&db.pool)
    .await
    .unwrap();
    // Even a success computed in a race loses to the cancel.
    let result = Queue::Postgres(db.queue())
        .hand_back("wk-a", "flow", &hand_back(&job, Outcome::Success(json!(1))))
        .await
        .unwrap();
    assert_eq!(result, HandBackResult::Done { canceled: true });
    let (kind, args, pre_run_error) = job_row(&db, job.id).await;
    assert_eq!(
        (kind.as_str(), args, pre_run_error),
        ("preview", Some(json!({"a": 1})), None)
    );
    let (running, worker, tag, canceled_by) = queue_row(&db, job.id).await.unwrap();
    assert_eq!(
        (running, worker, tag.as_str(), canceled_by.as_deref()),
        (false, None, "flow", Some("alice"))
    );
}

#[tokio::test]
async fn hand_back_only_while_the_job_is_still_ours() {
    let db = TestDb::new().await;
    let job = claimed(&db, WindmillJob::preview("x")).await;
    sqlx::query("UPDATE v2_job_queue SET worker = 'wk-other' WHERE id = $1")
        .bind(job.id.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let queue = Queue::Postgres(db.queue());
    let result = queue
        .hand_back("wk-a", "flow", &hand_back(&job, Outcome::Success(json!(1))))
        .await
        .unwrap();
    assert_eq!(result, HandBackResult::NotOurs);
    assert_eq!(job_row(&db, job.id).await.0, "preview", "nothing changed");
    sqlx::query("DELETE FROM v2_job_queue WHERE id = $1")
        .bind(job.id.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let result = queue
        .hand_back("wk-a", "flow", &hand_back(&job, Outcome::Success(json!(1))))
        .await
        .unwrap();
    assert_eq!(result, HandBackResult::NotOurs);
}

// ---------------------------------------------------------------------------------------------
// Heartbeat

#[tokio::test]
async fn heartbeat_reports_cancel_loss_and_completion_elsewhere() {
    let db = TestDb::new().await;
    let queue = Queue::Postgres(db.queue());
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(claimed(&db, WindmillJob::preview("x")).await.id);
    }
    sqlx::query(
        "UPDATE v2_job_queue SET canceled_by = 'alice', canceled_reason = 'no' WHERE id = $1",
    )
    .bind(jobs[1].0)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE v2_job_queue SET running = false, worker = NULL WHERE id = $1")
        .bind(jobs[2].0)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM v2_job_queue WHERE id = $1")
        .bind(jobs[3].0)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE v2_job_runtime SET ping = now() - interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    let beats: Vec<_> = jobs
        .iter()
        .map(|id| flext_kubernetes::queue::Beat {
            id: *id,
            memory_peak_kib: Some(512),
        })
        .collect();
    let states = queue.heartbeat("wk-a", &beats).await.unwrap();
    let states: std::collections::HashMap<_, _> = states.into_iter().collect();
    assert_eq!(states[&jobs[0]], JobState::Running);
    assert!(matches!(&states[&jobs[1]], JobState::Canceled(c) if c.by == "alice"));
    assert_eq!(states[&jobs[2]], JobState::Lost { worker: None });
    assert_eq!(states[&jobs[3]], JobState::Gone);
    let fresh: bool = sqlx::query_scalar("SELECT ping > now() - interval '10 seconds' AND memory_peak = 512 FROM v2_job_runtime WHERE id = $1")
        .bind(jobs[0].0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(fresh, "ping and memory peak refreshed for our running job");
    let stale: bool = sqlx::query_scalar(
        "SELECT ping < now() - interval '30 minutes' FROM v2_job_runtime WHERE id = $1",
    )
    .bind(jobs[2].0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(stale, "a job that is no longer ours is not kept alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_long_job_alive_past_the_zombie_threshold() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("work").push(&db).await;
    // The job outlives the checks below, so that it is still running when the worker is stopped.
    let handle = start_worker(
        &db.pool,
        config(&[]),
        executor(add, Duration::from_secs(10)),
    );
    let stock = StockWorker::new(&db.pool);
    eventually("the claim", LIMIT, || async {
        queue_row(&db, id).await.filter(|r| r.0).map(|_| ())
    })
    .await;
    // Windmill's monitor with a threshold of 1 s (60 s in production) and 5x the heartbeat period,
    // for 3 s from the claim: the period starts once there is a job to keep alive, however long
    // the claim took.
    holds_for(Duration::from_secs(3), 30, || async {
        assert!(
            stock
                .requeue_zombies(Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty(),
            "a heartbeating job was re-queued"
        );
    })
    .await;
    handle.abandon();
    handle.wait().await;
    // Control: once heartbeats stop, the same monitor does re-queue it.
    let requeued = eventually("the zombie monitor", LIMIT, || async {
        let ids = stock.requeue_zombies(Duration::from_secs(1)).await.unwrap();
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert_eq!(requeued, vec![id.0]);
}

// ---------------------------------------------------------------------------------------------
// End to end with the stock-worker double

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_by_us_completes_in_windmill_and_the_flow_advances() {
    let db = TestDb::new().await;
    let flow = Flow::new(json!({"x": 1, "y": 2}))
        .step("a", "python3", "print('step a')", "k8s")
        .step("b", "bash", "echo step b", "k8s-gpu")
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(
        &db.pool,
        config(&[]),
        executor(add, Duration::from_millis(50)),
    );
    let done = eventually("the flow to complete", LIMIT, || async {
        completed(&db, flow).await
    })
    .await;
    assert_eq!(done.status, "success");
    let status: serde_json::Value =
        sqlx::query_scalar("SELECT flow_status FROM v2_job_completed WHERE id = $1")
            .bind(flow.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status["modules"][0]["type"], "Success");
    assert_eq!(status["modules"][1]["type"], "Success");
    let step_b = JobId(
        status["modules"][1]["job"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    // The fix-up makes the step look like a native run.
    let fixed = eventually("the fix-up", LIMIT, || async {
        let row = completed(&db, step_b).await?;
        (row.worker.as_deref() != Some("wk-default-stock")).then_some(row)
    })
    .await;
    assert_eq!(fixed.status, "success");
    assert_eq!(fixed.result, Some(json!({"sum": 0})));
    assert!(
        fixed.duration_ms >= 50,
        "duration restored from our run, got {}",
        fixed.duration_ms
    );
    assert!(fixed.worker.unwrap().starts_with("wk-test-"));
    let (kind, args, _) = job_row(&db, step_b).await;
    assert_eq!(kind, "flowscript", "kind restored");
    let args = args.unwrap();
    assert!(args.get("_flext_fixup").is_none(), "{args}");
    assert_eq!(
        args["previous_result"],
        json!({"sum": 3}),
        "the step's input (step a's result) is kept"
    );
    assert_eq!(logs(&db, step_b).await, "echo step b\n");
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reaches_windmill_with_the_real_error_after_the_fix_up() {
    let db = TestDb::new().await;
    let id = WindmillJob::script("u/alice/etl", "raise ValueError")
        .args(json!({"fail": true}))
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let row = eventually("the fixed-up failure", LIMIT, || async {
        completed(&db, id).await.filter(|r| {
            r.result
                .as_ref()
                .is_some_and(|r| r["error"]["name"] == "ValueError")
        })
    })
    .await;
    assert_eq!(row.status, "failure");
    let error = &row.result.unwrap()["error"];
    assert_eq!(error["message"], "x must be positive");
    assert_eq!(error["category"], "user_error");
    assert!(error["stack"].as_str().unwrap().contains("Traceback"));
    let (kind, args, _) = job_row(&db, id).await;
    assert_eq!(
        (kind.as_str(), args),
        ("script", Some(json!({"fail": true})))
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_running_ends_canceled_in_windmill() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("long").push(&db).await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(
        &db.pool,
        config(&[]),
        executor(add, Duration::from_secs(600)),
    );
    eventually("the claim", LIMIT, || async {
        queue_row(&db, id)
            .await
            .filter(|r| r.0 && r.1.is_some())
            .map(|_| ())
    })
    .await;
    sqlx::query("UPDATE v2_job_queue SET canceled_by = 'alice', canceled_reason = 'changed my mind' WHERE id = $1")
        .bind(id.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let row = eventually("the cancel", LIMIT, || async { completed(&db, id).await }).await;
    assert_eq!(row.status, "canceled");
    assert_eq!(row.canceled_by.as_deref(), Some("alice"));
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windmill_timeout_cancels_the_job_as_timeout() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("long").timeout(1).push(&db).await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(
        &db.pool,
        config(&[]),
        executor(add, Duration::from_secs(600)),
    );
    let row = eventually("the timeout", LIMIT, || async { completed(&db, id).await }).await;
    assert_eq!(row.status, "canceled");
    assert_eq!(row.canceled_by.as_deref(), Some("timeout"));
    let reason: Option<String> =
        sqlx::query_scalar("SELECT canceled_reason FROM v2_job_completed WHERE id = $1")
            .bind(id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("duration > 1"));
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Logs and registration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_arrive_complete_in_order_and_sanitized() {
    let db = TestDb::new().await;
    let code: String = (0..2000)
        .map(|i| format!("line {i:04}\n"))
        .collect::<String>()
        + "nul\\0byte \\xff";
    let id = WindmillJob::preview(&code).push(&db).await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    eventually("completion", LIMIT, || async { completed(&db, id).await }).await;
    let expected: String = (0..2000)
        .map(|i| format!("line {i:04}\n"))
        .collect::<String>()
        + "nul\u{FFFD}byte \u{FFFD}\n";
    assert_eq!(
        logs(&db, id).await,
        expected,
        "complete, in order, NUL and invalid UTF-8 replaced"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_group_shows_on_the_workers_page() {
    let db = TestDb::new().await;
    let cfg = config(&[("FLEXT__WINDMILL__WORKER_GROUP", "k8s-prod")]);
    let name = cfg.worker_name();
    let handle = start_worker(&db.pool, cfg, executor(add, Duration::ZERO));
    let row = eventually("worker_ping", LIMIT, || async {
        sqlx::query("SELECT worker_group, custom_tags, wm_version, job_isolation, ping_at > now() - interval '10 s' AS fresh FROM worker_ping WHERE worker = $1")
            .bind(&name)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(row.get::<String, _>("worker_group"), "k8s-prod");
    assert_eq!(row.get::<Vec<String>, _>("custom_tags"), ["k8s", "k8s-gpu"]);
    assert!(
        row.get::<String, _>("wm_version")
            .starts_with("flext-kubernetes/")
    );
    assert!(row.get::<bool, _>("fresh"));
    handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input: clear errors, nothing stuck

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_we_cannot_run_fail_with_a_message_naming_what_is_supported() {
    let db = TestDb::new().await;
    let php = WindmillJob::preview("<?php").lang("php").push(&db).await;
    let app = WindmillJob::kind("appscript").push(&db).await;
    let bad_args = WindmillJob::preview("x")
        .raw_args(Some(json!([1, 2, 3])))
        .push(&db)
        .await;
    let no_code = WindmillJob::preview("x").push(&db).await;
    sqlx::query("UPDATE v2_job SET raw_code = NULL WHERE id = $1")
        .bind(no_code.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    for (id, name, needle) in [
        (php, "UnsupportedLanguage", "bash, bun, deno, python3"),
        (app, "UnsupportedJobKind", "script, preview, flowscript"),
        (bad_args, "InvalidArgs", "an array"),
        (no_code, "MissingCode", "raw_code"),
    ] {
        let row = eventually("the failure", LIMIT, || async {
            completed(&db, id).await.filter(|r| {
                r.result
                    .as_ref()
                    .is_some_and(|r| r["error"]["name"] == name)
            })
        })
        .await;
        assert_eq!(row.status, "failure");
        let message = row.result.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(needle), "{name}: {message}");
        assert!(
            logs(&db, id).await.contains(needle),
            "the reason is in the job log too"
        );
    }
    let (_, args, _) = job_row(&db, bad_args).await;
    assert_eq!(
        args,
        Some(json!([1, 2, 3])),
        "malformed args restored as they were"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_mid_run_is_dropped_and_the_worker_goes_on() {
    let db = TestDb::new().await;
    let doomed = WindmillJob::preview("long").push(&db).await;
    let handle = start_worker(
        &db.pool,
        config(&[]),
        executor(add, Duration::from_secs(600)),
    );
    eventually("the claim", LIMIT, || async {
        queue_row(&db, doomed).await.filter(|r| r.0).map(|_| ())
    })
    .await;
    sqlx::query("DELETE FROM v2_job_queue WHERE id = $1")
        .bind(doomed.0)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM v2_job WHERE id = $1")
        .bind(doomed.0)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually("the worker to drop the job", LIMIT, || async {
        (handle.running() == 0).then_some(())
    })
    .await;
    handle.shutdown().await;
    let next = WindmillJob::preview("x").push(&db).await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    assert_eq!(
        eventually("the next job", LIMIT, || async {
            completed(&db, next).await
        })
        .await
        .status,
        "success"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test]
async fn a_role_without_rls_bypass_is_refused_with_the_fix() {
    let db = TestDb::new().await;
    let role = format!("flext_weak_{}", &db.name[11..19]);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
    ))
    .await;
    let url = common::url_for(&db.name).replacen("postgres@", &format!("{role}@"), 1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let error = schema::check_role(&pool).await.unwrap_err().to_string();
    assert!(
        error.contains(&role)
            && error.contains("row-level security")
            && error.contains("BYPASSRLS"),
        "{error}"
    );
    // The check is right: this role really sees nothing to claim.
    WindmillJob::preview("x").push(&db).await;
    let weak = Queue::Postgres(flext_kubernetes::queue::PgQueue::from_pool(pool.clone()));
    assert!(weak.claim("wk-weak", &tags()).await.unwrap().is_none());
    db.exec(&format!("ALTER ROLE {role} BYPASSRLS")).await;
    schema::check_role(&pool)
        .await
        .expect("BYPASSRLS is enough");
    pool.close().await;
}

#[tokio::test]
async fn a_database_without_the_windmill_schema_is_named_precisely() {
    let db = TestDb::new().await;
    db.exec("ALTER TABLE v2_job_queue DROP COLUMN canceled_by; DROP TABLE job_logs;")
        .await;
    let error = schema::check_schema(&db.pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("column `v2_job_queue.canceled_by` is missing"),
        "{error}"
    );
    assert!(error.contains("table `job_logs` is missing"), "{error}");
    assert!(error.contains("FLEXT_DATABASE_URL"), "{error}");
    let good = TestDb::new().await;
    schema::check_schema(&good.pool)
        .await
        .expect("the fixture has the schema");
    schema::check_role(&good.pool)
        .await
        .expect("the superuser may do everything");
}

#[tokio::test]
async fn an_unreachable_database_is_reported_with_a_redacted_url() {
    let url =
        flext_kubernetes::config::Secret::new("postgres://windmill:hunter2@127.0.0.1:1/windmill");
    let error = flext_kubernetes::queue::PgQueue::connect(&url, 2, Duration::from_secs(2))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(error.is_retryable());
    assert!(
        text.contains(
            "cannot reach Windmill's database at postgres://windmill:***@127.0.0.1:1/windmill"
        ),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_ups_left_by_a_stopped_worker_are_finished_by_the_next() {
    let db = TestDb::new().await;
    let job = claimed(
        &db,
        WindmillJob::preview("x").args(json!({"previous_result": "mine"})),
    )
    .await;
    let queue = Queue::Postgres(db.queue());
    queue
        .hand_back("wk-a", "flow", &hand_back(&job, Outcome::Success(json!(7))))
        .await
        .unwrap();
    // The worker that handed it back is gone; a stock worker completes it.
    let stock = StockWorker::new(&db.pool);
    stock.run_once().await.unwrap();
    assert_eq!(completed(&db, job.id).await.unwrap().result, Some(json!(7)));
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let (kind, args) = eventually("the fix-up", LIMIT, || async {
        let (kind, args, _) = job_row(&db, job.id).await;
        (kind == "preview").then_some((kind, args))
    })
    .await;
    assert_eq!(kind, "preview");
    assert_eq!(
        args,
        Some(json!({"previous_result": "mine"})),
        "the user's own previous_result arg comes back"
    );
    let row = completed(&db, job.id).await.unwrap();
    assert_eq!(
        (row.duration_ms, row.memory_peak, row.worker.as_deref()),
        (1234, Some(2048), Some("wk-a"))
    );
    handle.shutdown().await;
}
