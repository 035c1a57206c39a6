//! The worker's HTTP endpoint on the Kubernetes test bed, read as operators' tools read it:
//! `/metrics` parsed by the Python `prometheus-client` `OpenMetrics` parser after a known mix of
//! jobs, `/status` and the status page (in headless Chromium) while a job runs, and `/readyz`
//! while PostgreSQL stops and comes back.
#![allow(clippy::unwrap_used, clippy::float_cmp)] // tests fail loudly by design; counts are whole numbers

mod common;

use std::process::Command;
use std::time::Duration;

use common::bed::{Bed, LIMIT};
use common::scrape::{Scrape, chromium_dom, get};
use common::{WindmillJob, completed, eventually, logs};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn scrape(port: u16) -> Scrape {
    let (status, body) = get(port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_mix_of_jobs_moved_by_exactly_those_jobs_and_the_page_shows_a_running_one()
{
    let bed = Bed::new(&[("FLEXT__EXECUTOR__PENDING_BUDGET", "4s")]).await;
    let stop = CancellationToken::new();
    let port = bed.serve_http(stop.clone()).await;
    let (_, text) = get(port, "/metrics").await;
    let before = Scrape::parse(&text);
    // Every family is declared from the start, moved or not (the parser lists only those with
    // samples; the declarations are in the text).
    for family in [
        "flext_jobs_claimed",
        "flext_jobs_completed",
        "flext_queue_wait_seconds",
        "flext_claim_to_job_created_seconds",
        "flext_job_created_to_started_seconds",
        "flext_job_run_seconds",
        "flext_hand_back_seconds",
        "flext_kube_requests",
        "flext_kube_rate_limiter_wait_seconds",
        "flext_queue_depth",
        "flext_heartbeat_lag_seconds",
        "flext_fix_ups_pending",
        "flext_ready",
        "flext_log_bytes",
        "flext_log_lines_dropped",
        "flext_adoptions",
        "flext_system_retries",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "no family {family} in\n{text}"
        );
    }
    assert_eq!(before.value("flext_ready", &[]), 1.0);

    let success =
        WindmillJob::preview("def main():\n    print('hello', flush=True)\n    return 1\n")
            .push(&bed.db)
            .await;
    let user_error = WindmillJob::preview("def main():\n    raise ValueError('bad input')\n")
        .push(&bed.db)
        .await;
    let oom = WindmillJob::preview(
        "# k8s: memory=64Mi\ndef main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(8 << 20))\n",
    )
    .push(&bed.db)
    .await;
    let unschedulable = WindmillJob::preview("# k8s: memory=900Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    let canceled = WindmillJob::script(
        "u/ops/long_running",
        "import time\ndef main():\n    print('working', flush=True)\n    time.sleep(300)\n",
    )
    .push(&bed.db)
    .await;

    // While the long job runs: /status and the page show it, with its Kubernetes Job.
    eventually("the long job running", LIMIT, || async {
        logs(&bed.db, canceled)
            .await
            .contains("working")
            .then_some(())
    })
    .await;
    let status: Value = eventually("the long job shown running in /status", LIMIT, || async {
        let (code, body) = get(port, "/status").await;
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        let shown = status["running"]
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["id"] == canceled.to_string() && job["phase"] == "running");
        if shown { Ok(status) } else { Err(body) }
    })
    .await;
    let job = status["running"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["id"] == canceled.to_string())
        .unwrap();
    assert_eq!(job["path"], "u/ops/long_running", "{status}");
    assert!(
        job["kubernetes_job"]
            .as_str()
            .is_some_and(|name| name == format!("wm-{canceled}-1")),
        "{status}"
    );
    assert_eq!(status["ready"], true, "{status}");
    assert!(
        status["tags"].as_array().unwrap().contains(&"k8s".into()),
        "{status}"
    );
    let url = format!("http://127.0.0.1:{port}/");
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&url))
        .await
        .unwrap();
    assert!(dom.contains(&canceled.to_string()), "{dom}");
    assert!(dom.contains("u/ops/long_running"), "{dom}");
    assert!(dom.contains("<td class=\"phase\">running</td>"), "{dom}");
    assert!(dom.contains("id=\"ready\">ready<"), "{dom}");

    common::cancel(&bed.db, canceled, "alice").await;
    for id in [success, user_error, oom, unschedulable, canceled] {
        eventually("the job completed", LIMIT, || async {
            completed(&bed.db, id).await
        })
        .await;
    }
    // The hand-back is counted once the worker saw its commit; the row is there a moment before.
    let after = eventually("every hand-back counted", LIMIT, || async {
        let after = scrape(port).await;
        let done = after.sum("flext_jobs_completed_total", &[])
            - before.sum("flext_jobs_completed_total", &[]);
        if done == 5.0 {
            Ok(after)
        } else {
            Err(format!("{done} of 5 counted"))
        }
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let tag = [("tag", "k8s")];
    assert_eq!(delta("flext_jobs_claimed_total", &tag), 5.0);
    for (outcome, category) in [
        ("success", ""),
        ("failure", "user_error"),
        ("failure", "oom_killed"),
        ("failure", "unschedulable"),
        ("canceled", ""),
    ] {
        let labels = [("tag", "k8s"), ("outcome", outcome), ("category", category)];
        assert_eq!(
            delta("flext_jobs_completed_total", &labels),
            1.0,
            "{outcome} {category}"
        );
    }
    assert_eq!(delta("flext_job_run_seconds_count", &tag), 5.0);
    assert_eq!(delta("flext_queue_wait_seconds_count", &tag), 5.0);
    // Each job had its Kubernetes Job created; user code started in four (not the
    // unschedulable one); three pods terminated on their own (the canceled one was deleted).
    assert_eq!(delta("flext_claim_to_job_created_seconds_count", &tag), 5.0);
    assert_eq!(
        delta("flext_job_created_to_started_seconds_count", &tag),
        4.0
    );
    assert_eq!(delta("flext_hand_back_seconds_count", &tag), 3.0);
    assert_eq!(delta("flext_adoptions_total", &tag), 0.0);
    assert_eq!(
        delta(
            "flext_system_retries_total",
            &[("cluster", "default"), ("tag", "k8s")]
        ),
        0.0
    );
    // The one cluster: ready, five jobs placed, none left in flight.
    let cluster = [("cluster", "default")];
    assert_eq!(after.value("flext_cluster_ready", &cluster), 1.0);
    assert_eq!(delta("flext_cluster_jobs_total", &cluster), 5.0);
    assert_eq!(after.value("flext_cluster_in_flight", &cluster), 0.0);
    // Every job's Job was created once, answered 201.
    let created = after.value(
        "flext_kube_requests_total",
        &[
            ("cluster", "default"),
            ("verb", "create"),
            ("resource", "jobs"),
            ("code", "201"),
        ],
    ) - before.value(
        "flext_kube_requests_total",
        &[
            ("cluster", "default"),
            ("verb", "create"),
            ("resource", "jobs"),
            ("code", "201"),
        ],
    );
    assert_eq!(created, 5.0);
    assert!(
        after.sum(
            "flext_kube_requests_total",
            &[("verb", "watch"), ("resource", "pods")]
        ) >= 1.0,
        "the shared watch is counted"
    );
    assert!(
        after.value("flext_kube_rate_limiter_wait_seconds_count", &cluster)
            > before.value("flext_kube_rate_limiter_wait_seconds_count", &cluster)
    );
    assert!(after.value("flext_log_bytes_total", &[]) > before.value("flext_log_bytes_total", &[]));
    assert_eq!(delta("flext_log_lines_dropped_total", &[]), 0.0);
    assert_eq!(after.value("flext_jobs_in_flight", &[]), 0.0);
    assert_eq!(
        after.value("flext_queue_depth", &[("tag", "k8s"), ("when", "due")]),
        0.0
    );
    // The page remembers the failures with their categories and the worker's hints.
    let (_, body) = get(port, "/status").await;
    let status: Value = serde_json::from_str(&body).unwrap();
    let categories: Vec<&str> = status["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["category"].as_str().unwrap())
        .collect();
    for category in ["user_error", "oom_killed", "unschedulable"] {
        assert!(categories.contains(&category), "{status}");
    }
    let unschedulable_hint = status["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "unschedulable")
        .unwrap()["hint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        unschedulable_hint.contains("Insufficient memory"),
        "{unschedulable_hint}"
    );
    stop.cancel();
    bed.stop().await;
}

/// A PostgreSQL of the test's own (scripts/pg with its own directory and port), so that it can
/// be stopped without touching the other tests' server.
struct OwnPg {
    dir: std::path::PathBuf,
    port: u16,
}

impl OwnPg {
    fn pg(&self, verb: &str) {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg"))
            .arg(verb)
            .env("FLEXT_PG_DIR", &self.dir)
            .env("FLEXT_PG_PORT", self.port.to_string())
            .output()
            .expect("run scripts/pg");
        assert!(
            out.status.success(),
            "scripts/pg {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let this = Self {
            dir: std::env::temp_dir()
                .join(format!("flext-pg-readyz-{}", uuid::Uuid::new_v4().simple())),
            port: common::scrape::free_port(),
        };
        this.pg("start");
        this
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/windmill", self.port)
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        self.pg("reset");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_false_while_postgres_is_down_and_the_running_job_survives() {
    use std::sync::Arc;

    use flext_kubernetes::executor::{Executor, KubernetesExecutor};
    use flext_kubernetes::queue::PgQueue;

    let pg = OwnPg::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&pg.url())
        .await
        .expect("connect to the test's own PostgreSQL");
    let namespace = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let client = common::bed::client().await;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .unwrap();
    let config = common::bed::bed_config(&namespace, &[]);
    let executor = Executor::Kubernetes(
        KubernetesExecutor::connect(Arc::new(config.clone()))
            .await
            .expect("the executor connects to the bed"),
    );
    let worker = common::start_worker(&pool, config, executor.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(flext_kubernetes::http::serve(
        listener,
        flext_kubernetes::http::Endpoint {
            probe: worker.probe(),
            queue: PgQueue::from_pool(pool.clone()),
            executor,
        },
        stop.clone(),
    ));
    assert_eq!(get(port, "/readyz").await.0, 200);

    let id = common::push(
        &pool,
        WindmillJob::preview("import time\ndef main():\n    print('working', flush=True)\n    time.sleep(20)\n    return 'survived'\n"),
    )
    .await;
    eventually("the job running", LIMIT, || async {
        let log: Option<String> =
            sqlx::query_scalar("SELECT string_agg(logs, '') FROM job_logs WHERE job_id = $1")
                .bind(id.0)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
        log.is_some_and(|l| l.contains("working")).then_some(())
    })
    .await;

    pg.pg("stop");
    let (code, body) = eventually(
        "/readyz false with the database down",
        Duration::from_secs(15),
        || async {
            let (code, body) = get(port, "/readyz").await;
            if code == 503 {
                Ok((code, body))
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("database"), "{body}");
    assert_eq!(get(port, "/healthz").await.0, 200, "alive while not ready");
    let (_, metrics) = get(port, "/metrics").await;
    assert!(metrics.contains("flext_ready 0"), "{metrics}");
    assert_eq!(worker.running(), 1, "the running job is kept");

    pg.pg("start");
    eventually("/readyz true again", Duration::from_secs(30), || async {
        let (code, body) = get(port, "/readyz").await;
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    // The stock worker double records the hand-back once the database is back.
    let stock_stop = CancellationToken::new();
    common::stock::StockWorker::new(&pool).spawn(stock_stop.clone());
    let status: String = eventually("the job completed once", LIMIT, || async {
        sqlx::query_scalar::<_, String>("SELECT status::text FROM v2_job_completed WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(status, "success");
    worker.shutdown().await;
    stock_stop.cancel();
    stop.cancel();
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&namespace, &kube::api::DeleteParams::default())
        .await;
    pool.close().await;
}
