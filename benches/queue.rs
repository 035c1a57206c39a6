//! Queue benchmark on a real PostgreSQL with the in-process echo executor: claims per second and
//! enqueue→claim latency (p50/p99) with 1, 4 and 16 concurrent workers. Run with
//! `scripts/bench queue` (it starts PostgreSQL and sets `FLEXT_TEST_DATABASE_URL`).
//!
//! Throughput: N jobs are queued up front, the workers claim, log and hand back every one; the
//! figure is N divided by the time until the last hand-back. Latency: jobs are queued at a steady
//! rate while the workers poll; the figure is `started_at - created_at` of each queue row, both
//! stamped by Postgres' own clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
#[allow(clippy::unwrap_used)]
mod common;

use flext_kubernetes::config::Config;
use flext_kubernetes::executor::{Executor, InProcessExecutor};
use flext_kubernetes::worker::WorkerHandle;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const THROUGHPUT_JOBS: i64 = 3000;
const LATENCY_JOBS: usize = 400;
const LATENCY_RATE_PER_S: u64 = 100;
const WORKERS: [usize; 3] = [1, 4, 16];
const PER_WORKER_CONCURRENCY: usize = 8;
const POLL_INTERVAL: &str = "50ms";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let admin = std::env::var("FLEXT_TEST_DATABASE_URL").expect(
        "FLEXT_TEST_DATABASE_URL is not set: run `scripts/bench queue`, which starts PostgreSQL",
    );
    println!(
        "queue benchmark: PostgreSQL at {}, echo executor, {PER_WORKER_CONCURRENCY} permits per worker, poll interval {POLL_INTERVAL}",
        flext_kubernetes::config::redact_url(&admin)
    );
    println!(
        "throughput: {THROUGHPUT_JOBS} jobs queued up front; latency: {LATENCY_JOBS} jobs queued at {LATENCY_RATE_PER_S}/s\n"
    );
    println!(
        "| workers | claims/s (claim+log+hand-back) | vs 1 worker | enqueue→claim p50 | enqueue→claim p99 |"
    );
    println!(
        "|--------:|-------------------------------:|------------:|------------------:|------------------:|"
    );
    let mut baseline = None;
    for workers in WORKERS {
        let db = fresh_database(&admin).await;
        let rate = throughput(&db, workers).await;
        let (p50, p99) = latency(&db, workers).await;
        let base = *baseline.get_or_insert(rate);
        println!(
            "| {workers:>7} | {rate:>30.0} | {:>10.2}x | {:>14.1} ms | {:>14.1} ms |",
            rate / base,
            p50 * 1000.0,
            p99 * 1000.0
        );
        db.close().await;
    }
}

async fn fresh_database(admin: &str) -> PgPool {
    common::clone_template(admin, "flext_bench_", 8).await.2
}

fn start(db: &PgPool, workers: usize) -> Vec<WorkerHandle> {
    (0..workers)
        .map(|i| {
            let env: BTreeMap<String, String> = [
                ("FLEXT__WORKER__NAME", format!("wk-bench-{i}")),
                (
                    "FLEXT__WORKER__CONCURRENCY",
                    PER_WORKER_CONCURRENCY.to_string(),
                ),
                ("FLEXT__WORKER__POLL_INTERVAL", POLL_INTERVAL.to_owned()),
                ("FLEXT__WORKER__HEARTBEAT_INTERVAL", "1s".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let config = Config::from_yaml("", &env).expect("bench config");
            // A pool per worker, as separate worker processes would have.
            let options = db.connect_options().as_ref().clone();
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy_with(options);
            let executor = Executor::InProcess(InProcessExecutor::echo(&["python3"]));
            common::start_worker(&pool, config, executor)
        })
        .collect()
}

async fn stop(handles: Vec<WorkerHandle>) {
    for handle in handles {
        handle.shutdown().await;
    }
}

async fn enqueue(db: &PgPool, n: i64) {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("CREATE TEMP TABLE new_ids ON COMMIT DROP AS SELECT gen_random_uuid() AS id FROM generate_series(1, $1)")
        .bind(n)
        .execute(&mut *tx)
        .await
        .expect("ids");
    for statement in [
        "INSERT INTO v2_job (id, workspace_id, kind, tag, script_lang, raw_code, args)
         SELECT id, 'bench', 'preview', 'k8s', 'python3', 'print(1)', '{\"x\": 1}' FROM new_ids",
        "INSERT INTO v2_job_queue (id, workspace_id, scheduled_for, tag) SELECT id, 'bench', now(), 'k8s' FROM new_ids",
        "INSERT INTO v2_job_runtime (id) SELECT id FROM new_ids",
    ] {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
}

async fn handed_back(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM v2_job_queue WHERE tag = 'flow'")
        .fetch_one(db)
        .await
        .expect("count")
}

async fn throughput(db: &PgPool, workers: usize) -> f64 {
    enqueue(db, THROUGHPUT_JOBS).await;
    let started = Instant::now();
    let handles = start(db, workers);
    while handed_back(db).await < THROUGHPUT_JOBS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    stop(handles).await;
    sqlx::query("DELETE FROM v2_job_queue")
        .execute(db)
        .await
        .expect("clean");
    #[allow(clippy::cast_precision_loss)]
    let jobs = THROUGHPUT_JOBS as f64;
    jobs / elapsed.as_secs_f64()
}

async fn latency(db: &PgPool, workers: usize) -> (f64, f64) {
    let handles = start(db, workers);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let period = Duration::from_micros(1_000_000 / LATENCY_RATE_PER_S);
    let mut next = tokio::time::Instant::now();
    for _ in 0..LATENCY_JOBS {
        enqueue(db, 1).await;
        next += period;
        tokio::time::sleep_until(next).await;
    }
    let total = i64::try_from(LATENCY_JOBS).unwrap_or(i64::MAX);
    while handed_back(db).await < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(handles).await;
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))::float8
         FROM v2_job_queue",
    )
    .fetch_one(db)
    .await
    .expect("percentiles");
    (p50, p99)
}
