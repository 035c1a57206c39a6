//! The end-to-end demo (`scripts/demo`): a small Windmill flow whose steps run as Kubernetes Jobs
//! on the local test bed through the real `flext-kubernetes run`, completed by the stock-worker
//! double (ours, from the queue contract) as Windmill's own workers would; prints each step as
//! Windmill would show it.
//!
//! Needs `FLEXT_DATABASE_URL` (a database with the Windmill schema fixture) and `KUBECONFIG` (the
//! test bed); `scripts/demo` sets both up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)] // a demo stops loudly

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Flow;
use common::stock::StockWorker;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = "windmill/examples/testbed.yaml";
const NAMESPACE: &str = "flext-demo";

const PYTHON: &str = "def main(x: int, y: int):
    print(f'adding {x} and {y} in a Kubernetes pod')
    return {'sum': x + y}
";

const BASH: &str = "previous_result=\"$1\"
echo \"bash got: $previous_result\"
echo \"kernel: $(uname -sr)\"
echo '{\"from\": \"bash\", \"ok\": true}'
";

const TYPESCRIPT: &str = "export async function main(previous_result: unknown) {
  console.log(`bun ${Bun.version} got`, JSON.stringify(previous_result));
  return { runtime: `bun ${Bun.version}`, echoed: previous_result };
}
";

const HINTED: &str = "# k8s: cpu=250m memory=128Mi
import os

def main(previous_result):
    print('running with the resources from the k8s: hint above')
    return {'job': os.environ['WM_JOB_ID'], 'flow': os.environ['WM_FLOW_JOB_ID']}
";

const SCHEDULED: &str = "import os

def main():
    print(os.environ['GREETING'], 'at', os.environ['WM_SCHEDULED_FOR'])
    return {name: os.environ[name] for name in ['GREETING', 'WM_SCHEDULE_PATH', 'WM_STATE_PATH']}
";

const FLAKY: &str = "def main(previous_result, attempt: int = 0):
    if attempt == 0:
        raise RuntimeError('a transient failure on the first try; the flow retries this step')
    print(f'attempt {attempt} succeeds')
    return 'ok after a retry'
";

#[tokio::main]
async fn main() {
    let url = std::env::var("FLEXT_DATABASE_URL").expect("FLEXT_DATABASE_URL (run scripts/demo)");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::raw_sql(
        "TRUNCATE v2_job, v2_job_queue, v2_job_runtime, v2_job_status, v2_job_completed, job_logs, flow_node, script, worker_ping",
    )
    .execute(&pool)
    .await
    .expect("reset the demo database");

    let client = common::bed::client().await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    let _ = Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await;

    println!("== starting the worker: flext-kubernetes run --config {CONFIG}");
    // Examples get no CARGO_BIN_EXE_*: the binary sits next to the examples directory.
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("flext-kubernetes");
    let http_port = common::scrape::free_port();
    let mut worker = Command::new(&binary)
        .args(["run", "--config", CONFIG])
        .env("RUST_LOG", "warn")
        .env(
            "FLEXT__WORKER__HTTP__LISTEN",
            format!("127.0.0.1:{http_port}"),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start the worker");

    let flow = Flow::new(json!({"x": 2, "y": 40}))
        .step("a", "python3", PYTHON, "k8s")
        .step("b", "bash", BASH, "k8s")
        .step("c", "bun", TYPESCRIPT, "k8s")
        .step("d", "python3", HINTED, "k8s")
        .step("e", "python3", FLAKY, "k8s")
        .retries(1)
        .push_to(&pool)
        .await;
    println!(
        "== pushed flow {flow}: a (Python) → b (Bash) → c (TypeScript) → d (Python, k8s: hints) → e (fails once, retried)"
    );
    // A deployed script with an environment variable in its settings (script.envs), pushed by a
    // schedule for 3 s from now, as Windmill's scheduler queues the next tick.
    let scheduled = common::push(
        &pool,
        common::WindmillJob::script("u/demo/greet", SCHEDULED)
            .envs(&["GREETING=hello from script.envs"])
            .scheduled_by("u/demo/every_hour")
            .scheduled_in(Duration::from_secs(3)),
    )
    .await;
    println!("== pushed scheduled job {scheduled} (u/demo/greet, due in 3 s)\n");

    let stop = CancellationToken::new();
    let stock = StockWorker {
        pool: pool.clone(),
        tag: "flow".into(),
        name: "wk-default-stock".into(),
    }
    .spawn(stop.clone());
    let started = Instant::now();
    let flow_status = loop {
        if let Some(row) =
            sqlx::query("SELECT status::text AS status, result FROM v2_job_completed WHERE id = $1")
                .bind(flow.0)
                .fetch_optional(&pool)
                .await
                .unwrap()
        {
            break (
                row.get::<String, _>("status"),
                row.get::<Option<Value>, _>("result"),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the flow did not complete within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the fix-ups land (the last step's is a moment behind the flow).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let steps = sqlx::query(
        "SELECT j.id, j.flow_step_id, j.script_lang::text AS lang, j.kind::text AS kind, c.status::text AS status, c.result,
                c.duration_ms, c.memory_peak, c.worker, coalesce(l.logs, '') AS logs
         FROM v2_job j JOIN v2_job_completed c ON c.id = j.id LEFT JOIN job_logs l ON l.job_id = j.id
         WHERE j.parent_job = $1 ORDER BY c.completed_at",
    )
    .bind(flow.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    for step in &steps {
        let status: String = step.get("status");
        let mark = if status == "success" { "✔" } else { "✘" };
        println!(
            "{mark} step {} ({}, kind {}) {status} in {} ms, memory peak {} KiB, worker {}",
            step.get::<String, _>("flow_step_id"),
            step.get::<String, _>("lang"),
            step.get::<String, _>("kind"),
            step.get::<i64, _>("duration_ms"),
            step.get::<Option<i32>, _>("memory_peak")
                .map_or_else(|| "?".into(), |k| k.to_string()),
            step.get::<Option<String>, _>("worker").unwrap_or_default(),
        );
        println!(
            "    result: {}",
            step.get::<Option<Value>, _>("result")
                .unwrap_or(Value::Null)
        );
        for line in step.get::<String, _>("logs").lines().take(6) {
            println!("    | {line}");
        }
    }
    println!(
        "\n== flow {}: {} with result {}",
        flow,
        flow_status.0,
        flow_status.1.unwrap_or(Value::Null)
    );
    let greet = loop {
        if let Some(row) = sqlx::query(
            "SELECT c.status::text AS status, c.result, c.started_at >= q.scheduled_for AS on_time
             FROM v2_job_completed c, LATERAL (SELECT j.created_at + interval '3 s' AS scheduled_for FROM v2_job j WHERE j.id = c.id) q
             WHERE c.id = $1",
        )
        .bind(scheduled.0)
        .fetch_optional(&pool)
        .await
        .unwrap()
        {
            break row;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the scheduled job did not complete within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let greet_status: String = greet.get("status");
    println!(
        "== scheduled job u/demo/greet: {greet_status}, started at or after its scheduled_for: {}, result {}",
        greet.get::<bool, _>("on_time"),
        greet
            .get::<Option<Value>, _>("result")
            .unwrap_or(Value::Null)
    );

    // What an operator sees: the status page, and the worker's metrics for these jobs.
    println!(
        "\n== status page: http://127.0.0.1:{http_port}/ (JSON at /status; served while the worker runs)"
    );
    let (_, status) = common::scrape::get(http_port, "/status").await;
    let status: Value = serde_json::from_str(&status).unwrap_or(Value::Null);
    println!(
        "   worker {}, tags {}, ready {}, {} jobs handed back, {} running, {} recent failures",
        status["worker"],
        status["tags"],
        status["ready"],
        status["jobs_handed_back"],
        status["running"].as_array().map_or(0, Vec::len),
        status["recent_failures"].as_array().map_or(0, Vec::len),
    );
    println!("== a few lines of http://127.0.0.1:{http_port}/metrics:");
    let (_, metrics) = common::scrape::get(http_port, "/metrics").await;
    for line in metrics.lines().filter(|line| {
        !line.starts_with('#')
            && line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v != 0.0)
            && (line.starts_with("flext_jobs_completed_total")
                || line.starts_with("flext_claim_to_job_created_seconds_sum")
                || line.starts_with("flext_claim_to_job_created_seconds_count")
                || line.starts_with("flext_job_run_seconds_count")
                || line.starts_with("flext_system_retries_total")
                || line.starts_with("flext_kube_requests_total{verb=\"create\""))
    }) {
        println!("   {line}");
    }

    stop.cancel();
    let _ = stock.await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    if flow_status.0 != "success" || greet_status != "success" {
        std::process::exit(1);
    }
}
