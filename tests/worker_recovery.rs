//! The worker recovering on a real PostgreSQL: what a killed run of it left in Windmill, and
//! outcomes Windmill's database refuses. Every job still ends in Windmill, and runs once.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::stock::StockWorker;
use common::{
    TestDb, WindmillJob, add, completed, config, eventually, executor, logs, start_worker,
};
use flext_kubernetes::domain::{Job, Outcome};
use flext_kubernetes::queue::Queue;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_by_a_worker_killed_before_its_work_existed_runs_once_after_the_restart() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("echo once")
        .args(json!({"x": 2, "y": 3}))
        .push(&db)
        .await;
    let cfg = config(&[]);
    let name = cfg.worker_name();
    // The first run of the worker claims the job and dies before creating any work for it.
    let claimed = Queue::Postgres(db.queue())
        .claim(&name, &["k8s".to_owned()])
        .await
        .unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(id));

    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, cfg, executor(add, Duration::ZERO));
    // Well before Windmill's zombie monitor (60 s) would re-queue it.
    let row = eventually("the completion", LIMIT, || async {
        completed(&db, id).await
    })
    .await;
    assert_eq!(row.status, "success");
    assert_eq!(row.result, Some(json!({"sum": 5})));
    assert_eq!(
        logs(&db, id).await,
        "echo once\n",
        "the job ran exactly once"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}

fn returns_nul(_job: &Job) -> Outcome {
    Outcome::Success(json!("a\u{0}b"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_windmill_cannot_store_fails_the_job_naming_the_cause() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("print('nul')").push(&db).await;
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&db.pool).spawn(stop.clone());
    let handle = start_worker(&db.pool, config(&[]), executor(returns_nul, Duration::ZERO));
    let row = eventually("the fixed-up failure", LIMIT, || async {
        completed(&db, id).await.filter(|r| {
            r.result
                .as_ref()
                .is_some_and(|r| r["error"]["name"] == "HandBackRefused")
        })
    })
    .await;
    assert_eq!(row.status, "failure");
    let message = row.result.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("NUL"), "{message}");
    assert!(
        message.contains("unsupported Unicode escape sequence"),
        "Postgres' own reason is named: {message}"
    );
    handle.shutdown().await;
    stop.cancel();
    stock.await.unwrap();
}
