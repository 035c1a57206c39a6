//! What a stock Windmill worker does at pull and run time, done for the jobs on our tags, on a
//! real PostgreSQL (issue 9; docs/windmill-fidelity.md has the table of behaviours).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::stock::StockWorker;
use common::{
    Flow, TestDb, WindmillJob, add, completed, config, eventually, executor, job_row, logs,
    queue_row, start_worker,
};
use flext_kubernetes::domain::Job;
use flext_kubernetes::domain::{Completion, FailureCategory, JobFailure, JobId, Outcome};
use flext_kubernetes::executor::{Executor, InProcessExecutor};
use flext_kubernetes::logs::LogSink;
use flext_kubernetes::queue::{FixUp, HandBack, Queue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

/// Waits until the job left our tags (not running, on `tag`), and returns its log.
async fn routed_to(db: &TestDb, id: JobId, tag: &str) -> String {
    eventually(&format!("job {id} on tag {tag}"), LIMIT, || async {
        queue_row(db, id)
            .await
            .filter(|(running, worker, t, _)| !running && worker.is_none() && t == tag)
            .map(|_| ())
    })
    .await;
    logs(db, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_we_never_run_go_to_the_tag_a_stock_worker_serves_with_a_log_line() {
    let db = TestDb::new().await;
    // Windmill pushes a k8s-tagged script's lock job with the script's tag.
    let lock = WindmillJob::kind("dependencies").push(&db).await;
    let flow = WindmillJob::kind("flow").push(&db).await;
    let identity = WindmillJob::kind("identity").push(&db).await;
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let log = routed_to(&db, lock, "dependency").await;
    assert_eq!(
        log,
        "[flext-kubernetes] a job of kind dependencies is run by a stock Windmill worker: handed to tag dependency\n"
    );
    routed_to(&db, flow, "flow").await;
    // identity (a mocked step, say) goes to the finalize tag, where a stock worker ends it.
    routed_to(&db, identity, "flow").await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_workspace_default_tags_are_named_as_windmill_names_them() {
    let db = TestDb::new().await;
    db.exec(
        "INSERT INTO global_settings (name, value) VALUES
            ('default_tags_per_workspace', 'true'),
            ('default_tags_workspaces', '[\"demo\", \"parent\"]'),
            ('fork_workspace_tag_append_fork_suffix', 'true');
         INSERT INTO workspace (id, name, owner, parent_workspace_id) VALUES
            ('demo', 'demo', 'alice', NULL),
            ('wm-fork-x', 'fork', 'alice', 'parent'),
            ('other', 'other', 'alice', NULL)",
    )
    .await;
    let in_demo = WindmillJob::kind("dependencies").push(&db).await;
    let mut forked = WindmillJob::kind("flow");
    forked.workspace = "wm-fork-x".into();
    let forked = forked.push(&db).await;
    let mut elsewhere = WindmillJob::kind("dependencies");
    elsewhere.workspace = "other".into();
    let elsewhere = elsewhere.push(&db).await;
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    routed_to(&db, in_demo, "dependency-demo").await;
    // A fork uses its parent's id, with `-fork` when the instance setting asks for it.
    routed_to(&db, forked, "flow-parent-fork").await;
    // Not in `default_tags_workspaces`: the plain default tag.
    routed_to(&db, elsewhere, "dependency").await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_already_canceled_or_failed_end_in_windmill_without_running() {
    let db = TestDb::new().await;
    let canceled = WindmillJob::preview("echo never")
        .canceled_by("alice")
        .push(&db)
        .await;
    let failed = WindmillJob::preview("echo never")
        .pre_run_error("the flow's input transform failed")
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let row = eventually("the cancel", LIMIT, || async {
        completed(&db, canceled).await
    })
    .await;
    assert_eq!(row.status, "canceled");
    assert_eq!(row.canceled_by.as_deref(), Some("alice"));
    let row = eventually("the failure", LIMIT, || async {
        completed(&db, failed).await
    })
    .await;
    assert_eq!(row.status, "failure");
    for id in [canceled, failed] {
        let log = logs(&db, id).await;
        assert!(!log.contains("echo never"), "the job ran: {log}");
        assert_eq!(
            log.lines().count(),
            1,
            "one line saying what happened: {log}"
        );
    }
    assert!(
        logs(&db, failed)
            .await
            .contains("the flow's input transform failed")
    );
    assert_eq!(handle.jobs_executed(), 0, "nothing was run by us");
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test]
async fn a_flow_step_is_marked_in_progress_where_the_parents_flow_status_points() {
    let db = TestDb::new().await;
    let flow = Flow::new(json!({}))
        .step("a", "python3", "def main(): return 1", "k8s")
        .step("b", "python3", "def main(): return 2", "k8s")
        .push(&db)
        .await;
    let stock = StockWorker::new(&db.pool);
    let queue = Queue::Postgres(db.queue());
    let tags = ["k8s".to_owned()];
    stock.run_once().await.unwrap();
    let a = queue.claim("wk-a", &tags).await.unwrap().expect("step a");
    assert_eq!(a.flow.as_ref().and_then(|f| f.index), Some(0));
    let done = HandBack::of(
        &a,
        Completion {
            outcome: Outcome::Success(json!(1)),
            duration: Duration::from_millis(5),
            memory_peak_kib: None,
            preprocessed_args: None,
        },
    );
    queue.hand_back("wk-a", "flow", &done).await.unwrap();
    stock.run_once().await.unwrap(); // completes step a, pushes step b
    let b = queue.claim("wk-a", &tags).await.unwrap().expect("step b");
    assert_eq!(
        b.flow.as_ref().and_then(|f| f.index),
        Some(1),
        "the index is the parent's flow_status->'step' (Windmill's push writes no v2_job.flow_step)"
    );
    let status: Value = sqlx::query_scalar("SELECT flow_status FROM v2_job_status WHERE id = $1")
        .bind(flow.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status["modules"][1]["type"], "InProgress");
    assert_eq!(status["modules"][1]["job"], b.id.to_string());
    assert_eq!(status["modules"][0]["type"], "Success", "step a untouched");
}

#[tokio::test]
async fn a_workflow_as_code_child_gets_its_started_at_in_the_parent() {
    let db = TestDb::new().await;
    let parent = WindmillJob::preview("wac parent")
        .tag("python3")
        .push(&db)
        .await;
    db.exec(&format!(
        "INSERT INTO v2_job_status (id, workflow_as_code_status) VALUES ('{parent}', '{{}}')"
    ))
    .await;
    let child = WindmillJob::preview("child")
        .child_of(parent)
        .push(&db)
        .await;
    let claimed = Queue::Postgres(db.queue())
        .claim("wk-a", &["k8s".to_owned()])
        .await
        .unwrap()
        .expect("the child is on our tag");
    assert_eq!(claimed.id, child);
    let status: Value =
        sqlx::query_scalar("SELECT workflow_as_code_status FROM v2_job_status WHERE id = $1")
            .bind(parent.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let started = status[child.to_string()]["started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no started_at for the child: {status}"));
    assert!(
        started.starts_with("20"),
        "a timestamp as Postgres prints it: {started}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ping_reports_occupancy_as_windmill_does() {
    let db = TestDb::new().await;
    WindmillJob::preview("busy").push(&db).await;
    let cfg = config(&[("FLEXT__WORKER__CONCURRENCY", "1")]);
    let name = cfg.worker_name();
    let handle = start_worker(&db.pool, cfg, executor(add, Duration::from_secs(20)));
    let (rate, last_15s): (f32, Option<f32>) = eventually("a busy worker_ping", LIMIT, || async {
        sqlx::query_as::<_, (Option<f32>, Option<f32>)>(
            "SELECT occupancy_rate, occupancy_rate_15s FROM worker_ping WHERE worker = $1",
        )
        .bind(&name)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .and_then(|(rate, last)| rate.filter(|r| *r > 0.5).map(|r| (r, last)))
    })
    .await;
    assert!(rate <= 1.0, "a share of the worker's time: {rate}");
    assert_eq!(
        last_15s, None,
        "the 15 s window is empty until the worker ran 15 s"
    );
    handle.abandon();
    handle.wait().await;
}

#[tokio::test]
async fn the_fix_up_writes_nothing_back_into_a_job_windmill_blanked_after_use() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("raise")
        .args(json!({"secret": "s3"}))
        .push(&db)
        .await;
    let queue = Queue::Postgres(db.queue());
    let job = queue
        .claim("wk-a", &["k8s".to_owned()])
        .await
        .unwrap()
        .unwrap();
    let failed = HandBack::of(
        &job,
        Completion::failed(
            JobFailure::new(FailureCategory::UserError, "ValueError", "bad secret"),
            Duration::from_millis(5),
        ),
    );
    queue.hand_back("wk-a", "flow", &failed).await.unwrap();
    StockWorker::new(&db.pool).run_once().await.unwrap();
    // The step had `delete_after_use`: when its root flow ended, Windmill blanked its args and
    // result (windmill-worker `worker_flow.rs`).
    db.exec(&format!(
        "UPDATE v2_job SET args = '{{}}' WHERE id = '{id}';
         UPDATE v2_job_completed SET result = '{{}}' WHERE id = '{id}'"
    ))
    .await;
    let record = failed.fix_up_record("wk-a");
    let done = queue.fix_up(&[FixUp { id, record }]).await.unwrap();
    assert_eq!(done, vec![id], "the fix-up is over, not retried forever");
    let row = completed(&db, id).await.unwrap();
    assert_eq!(
        row.result,
        Some(json!({})),
        "the blanked result stays blank"
    );
    let (kind, args, _) = job_row(&db, id).await;
    assert_eq!(args, Some(json!({})), "the blanked args stay blank");
    assert_eq!(kind, "preview");
}

/// An executor that records how many of its jobs run at once; each takes `hold`.
fn counting(hold: Duration) -> (Executor, Arc<AtomicUsize>) {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    let executor = InProcessExecutor::new(
        &["python3"],
        Arc::new(move |_job: &Job, _cancel, _logs: &LogSink| {
            let (now, most) = (now.clone(), most.clone());
            Box::pin(async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Outcome::Success(json!("done"))
            })
        }),
    );
    (Executor::InProcess(executor), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_limited_to_one_never_runs_twice_at_once_and_says_why_it_waits() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job =
            WindmillJob::script("u/alice/gpu_train", "def main(): pass").concurrency_limit(1, 0);
        ids.push(job.push(&db).await);
    }
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let (executor, most) = counting(Duration::from_millis(800));
    let handle = start_worker(&db.pool, config(&[]), executor);
    for id in &ids {
        let row = eventually("every job to complete", Duration::from_secs(90), || async {
            completed(&db, *id).await
        })
        .await;
        assert_eq!(row.status, "success");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two jobs of the key ran at once"
    );
    let mut waited = 0;
    for id in &ids {
        let log = logs(&db, *id).await;
        if log.contains("Re-scheduled job to") {
            assert!(
                log.contains("due to concurrency limits with key demo/script/u/alice/gpu_train and limit 1 in the last 0 seconds"),
                "{log}"
            );
            waited += 1;
        }
    }
    assert!(waited >= 2, "the jobs that waited say so in their log");
    let left: Value = sqlx::query_scalar("SELECT job_uuids FROM concurrency_counter")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        json!({}),
        "every admitted job was released at completion"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_workers_running_job_counts_against_the_limit() {
    let db = TestDb::new().await;
    let id = WindmillJob::script("u/alice/etl", "def main(): pass")
        .concurrency_limit(1, 0)
        .push(&db)
        .await;
    // A stock worker already runs one job of the key.
    db.exec(
        "UPDATE concurrency_counter SET job_uuids = '{\"7f0c6d2e-0000-4000-8000-000000000001\": {}}'",
    )
    .await;
    let queue = Queue::Postgres(db.queue());
    let tags = ["k8s".to_owned()];
    assert!(
        queue.claim("wk-a", &tags).await.unwrap().is_none(),
        "over the limit"
    );
    let (running, worker, _, _) = queue_row(&db, id).await.unwrap();
    assert!(!running && worker.is_none(), "put back in the queue");
    let later: bool = sqlx::query_scalar(
        "SELECT scheduled_for > now() + interval '2 seconds' FROM v2_job_queue WHERE id = $1",
    )
    .bind(id.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(later, "with a later scheduled_for");
    // The native job ends; once due again, ours is admitted.
    db.exec(&format!(
        "UPDATE concurrency_counter SET job_uuids = '{{}}';
         UPDATE v2_job_queue SET scheduled_for = now() WHERE id = '{id}'"
    ))
    .await;
    let claimed = queue.claim("wk-a", &tags).await.unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_result_completes_the_job_without_running_it_and_a_success_is_saved() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let run = |x: i64| {
        WindmillJob::script("u/alice/slow_sum", "computing")
            .hash(4242)
            .cache_ttl(600)
            .args(json!({"x": x, "y": 1}))
    };
    let first = run(1).push(&db).await;
    let row = eventually("the first run", LIMIT, || async {
        completed(&db, first).await
    })
    .await;
    assert_eq!(row.result, Some(json!({"sum": 2})));
    let saved: Value = sqlx::query_scalar(
        "SELECT value FROM resource WHERE resource_type = 'cache' AND path LIKE 'g/results/%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(saved["value"], json!({"sum": 2}), "{saved}");
    assert!(saved["expire"].as_i64().is_some(), "{saved}");

    let second = run(1).push(&db).await;
    let row = eventually("the cached run", LIMIT, || async {
        completed(&db, second).await
    })
    .await;
    assert_eq!(row.status, "success");
    assert_eq!(row.result, Some(json!({"sum": 2})));
    assert_eq!(
        logs(&db, second).await,
        "Job skipped because args & path found in cache and not expired\n",
        "Windmill's line, and the script did not run"
    );
    let other = run(2).push(&db).await;
    eventually("a run with other args", LIMIT, || async {
        completed(&db, other).await
    })
    .await;
    assert_eq!(
        logs(&db, other).await,
        "computing\n",
        "other args: no cache hit"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_runs_at_its_time_and_keeps_what_windmill_reads_to_push_the_next_tick() {
    let db = TestDb::new().await;
    let id = WindmillJob::script("u/alice/nightly", "nightly")
        .scheduled_by("u/alice/every_night")
        .scheduled_in(Duration::from_secs(2))
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let row = eventually("the scheduled run", LIMIT, || async {
        completed(&db, id).await
    })
    .await;
    assert_eq!(row.status, "success");
    let on_time: bool = sqlx::query_scalar(
        "SELECT c.started_at >= j.created_at + interval '2 seconds'
         FROM v2_job_completed c JOIN v2_job j ON j.id = c.id WHERE c.id = $1",
    )
    .bind(id.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(on_time, "claimed before its scheduled_for");
    // Windmill's `commit_completed_job` → `try_schedule_next_job` reads these to push the next
    // tick: the hand-back and the fix-up must leave them as Windmill wrote them.
    let fields: (Option<String>, Option<String>, Option<String>, Option<String>, String) =
        sqlx::query_as(
            "SELECT trigger, trigger_kind::text, runnable_path, flow_step_id, kind::text FROM v2_job WHERE id = $1",
        )
        .bind(id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let fixed = eventually("the fix-up", LIMIT, || async {
        let kind: String = sqlx::query_scalar("SELECT kind::text FROM v2_job WHERE id = $1")
            .bind(id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (kind == "script").then_some(kind)
    })
    .await;
    assert_eq!(fixed, "script");
    assert_eq!(fields.0.as_deref(), Some("u/alice/every_night"));
    assert_eq!(fields.1.as_deref(), Some("schedule"));
    assert_eq!(fields.2.as_deref(), Some("u/alice/nightly"));
    assert_eq!(
        fields.3, None,
        "not a flow step: Windmill reschedules it at completion"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perpetual_script_is_pushed_again_after_its_run_as_windmill_restarts_it() {
    let db = TestDb::new().await;
    let first = WindmillJob::script("u/alice/forever", "tick")
        .perpetual()
        .args(json!({"x": 1}))
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let next: (uuid::Uuid, String, String, Option<Value>, bool) =
        eventually("the next run queued", LIMIT, || async {
            sqlx::query_as(
                "SELECT j.id, j.kind::text, q.tag, j.args,
                        q.scheduled_for >= (SELECT started_at FROM v2_job_completed WHERE id = $1) + interval '9 seconds'
                 FROM v2_job j JOIN v2_job_queue q ON q.id = j.id
                 WHERE j.runnable_path = 'u/alice/forever' AND j.id <> $1",
            )
            .bind(first.0)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
        })
        .await;
    handle.shutdown().await;
    assert_eq!(
        next.1, "script",
        "pushed as a script, not our identity hand-back"
    );
    assert_eq!(next.2, "k8s", "on the script's own tag");
    assert_eq!(next.3, Some(json!({"x": 1})), "with the run's args");
    assert!(next.4, "due 10 s after a run that took under 10 s");
    let pushed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM v2_job WHERE runnable_path = 'u/alice/forever'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pushed, 2, "restarted exactly once");
    stop.cancel();
    stock.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debounced_job_runs_with_the_arguments_its_batch_accumulated() {
    let db = TestDb::new().await;
    // Two earlier pushes were folded into the last one (Windmill's push, EE `maybe_debounce`):
    // they are completed as skipped and share its debounce batch; only the last is queued.
    let mut folded = Vec::new();
    for items in [json!(["a"]), json!(["b", "c"])] {
        let id = WindmillJob::script("u/alice/batch", "batch")
            .hash(77)
            .args(json!({"items": items}))
            .debounced(5, Some("items"), 9001)
            .push(&db)
            .await;
        db.exec(&format!(
            "DELETE FROM v2_job_queue WHERE id = '{id}';
             INSERT INTO v2_job_completed (id, workspace_id, duration_ms, status) VALUES ('{id}', 'demo', 0, 'skipped')"
        ))
        .await;
        folded.push(id);
    }
    let last = WindmillJob::script("u/alice/batch", "batch")
        .hash(77)
        .args(json!({"items": ["d"]}))
        .debounced(5, Some("items"), 9001)
        .push(&db)
        .await;
    let claimed = Queue::Postgres(db.queue())
        .claim("wk-a", &["k8s".to_owned()])
        .await
        .unwrap()
        .expect("the debounced job");
    assert_eq!(claimed.id, last);
    assert_eq!(claimed.args, json!({"items": ["a", "b", "c", "d"]}));
    assert_eq!(
        logs(&db, last).await,
        "Substituting `items` with: [\"a\",\"b\",\"c\",\"d\"]\n\n"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM debounce_key WHERE job_id = $1")
        .bind(last.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "its debounce key is removed at claim");
    let (_, args, _) = job_row(&db, last).await;
    assert_eq!(
        args,
        Some(json!({"items": ["d"]})),
        "substituted for the run only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debounced_argument_that_is_not_a_list_fails_the_job_as_windmill_does() {
    let db = TestDb::new().await;
    let id = WindmillJob::script("u/alice/batch", "never runs")
        .args(json!({"items": "not a list"}))
        .debounced(5, Some("items"), 9002)
        .push(&db)
        .await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(add, Duration::ZERO));
    let row = eventually("the failure", LIMIT, || async {
        completed(&db, id).await.filter(|r| {
            r.result
                .as_ref()
                .is_some_and(|r| r["error"]["name"] == "Pulled job preprocessing error")
        })
    })
    .await;
    assert_eq!(row.status, "failure");
    assert!(!logs(&db, id).await.contains("never runs"));
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}
