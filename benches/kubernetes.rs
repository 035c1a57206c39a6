//! Kubernetes benchmark on the local test bed (a real kube-apiserver and Job controller, and the
//! node agent that runs pods as local processes) with a real PostgreSQL. Run with
//! `scripts/bench k8s`, which starts both and sets `KUBECONFIG` and `FLEXT_TEST_DATABASE_URL`.
//!
//! Every figure comes from this run, measured with this machine's clock (PostgreSQL runs on the
//! same host, so its `clock_timestamp()` is the same clock):
//! - **Latency.** Jobs are queued at a steady rate while one worker (in this process) polls. The
//!   enqueue instant is taken when the queue insert has committed; a Kubernetes watch of Jobs and
//!   Pods in this process notes when it first sees each Job and each pod's main container
//!   terminated; a deferred trigger in the bench database notes `clock_timestamp()` when the
//!   hand-back transaction commits. Watch events arrive a little after the fact, so
//!   "enqueue → Job created" is over-stated and "terminated → hand-back" under-stated by the
//!   watch delay (the worker reacts to the same kind of watch event).
//! - **The limit.** The same pods as bare `batch/v1` Jobs: our rendered Secret and Job for N
//!   jobs, created by a minimal client as fast as the bed accepts them (64 requests in flight),
//!   each Job deleted (cascading) as soon as the watch sees its main container terminated — the
//!   event our worker hands back on. No Windmill, no log read. Its jobs/s is the bed's ceiling for
//!   this work; ours is printed as a ratio of it. Paced at 10/s, the same client gives the bed's
//!   own Job-creation latency (POST round trip, and POST → seen by the watch).
//! - **Throughput.** N small Bash jobs are queued up front, then one worker with
//!   `worker.concurrency` = c starts; the figure is N over the time until the last hand-back
//!   committed. API requests per job are the executor's rate-limiter count (every request but the
//!   shared pod and Job watches) over N.
//! - **Memory.** The real binary (`flext-kubernetes run`) with 100 jobs whose pods run (`sleep`)
//!   and with 1000 jobs whose pods stay Pending (they ask for more memory than any node has): its
//!   `VmRSS` (highest sample over a few seconds once all are in flight) and `VmHWM`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a benchmark stops loudly; the casts turn counts and durations into printed figures

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::WindmillJob;
use flext_kubernetes::config::Config;
use flext_kubernetes::domain::Job;
use flext_kubernetes::executor::kubernetes::pod_settings;
use flext_kubernetes::executor::kubernetes::render::{
    self, LABEL_JOB_ID, LABEL_MANAGED_BY, MAIN_CONTAINER, MANAGER,
};
use flext_kubernetes::executor::{Executor, KubernetesExecutor};
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The worker's poll interval when the queue is empty (the default is 100ms).
const POLL_INTERVAL: &str = "20ms";
/// Per-pod requests: small, so that 100 pods fit the bed's 4-CPU, 8 GiB node.
const POD_CPU: &str = "10m";
const POD_MEMORY: &str = "64Mi";
/// The small job: a Bash script whose last line is its result.
const ECHO: &str = "echo \"hello $1\"\necho '{\"ok\": true}'\n";

const LATENCY_JOBS: usize = 100;
const LATENCY_RATE_PER_S: u64 = 10;
const LATENCY_CONCURRENCY: usize = 50;

/// (concurrency, jobs, `api_qps`): the scale shape at a budget that does not bind, then the
/// default budget.
const THROUGHPUT: [(usize, usize, u32); 5] = [
    (1, 12, 1000),
    (10, 60, 1000),
    (100, 300, 1000),
    (500, 500, 1000),
    (100, 200, 50),
];
/// Bare Jobs for the ceiling (as many as the c=100 row), and paced ones for the creation latency.
const BARE_JOBS: usize = 300;
const BARE_PACED_JOBS: usize = 50;

/// Bound on any one wait; the whole run stays well below 10 minutes when the bed keeps up.
const PHASE_LIMIT: Duration = Duration::from_secs(150);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let started = Instant::now();
    let admin = common::admin_url();
    // `scripts/bench k8s` starts the bed and sets KUBECONFIG.
    let client = common::bed::client().await;
    let namespace = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the bench namespace");
    let db = BenchDb::new(&admin).await;
    let seen = Observer::spawn(client.clone(), &namespace);
    seen.synced().await;

    println!(
        "Kubernetes benchmark: test bed at {}, PostgreSQL at {}, namespace {namespace}",
        std::env::var("FLEXT_TESTBED_APISERVER").unwrap_or_else(|_| "(KUBECONFIG)".into()),
        flext_kubernetes::config::redact_url(&admin)
    );
    println!(
        "jobs: Bash `echo` scripts (image bash:5.2 → the host's shell, runner copied in by the init container), \
         pods request cpu={POD_CPU} memory={POD_MEMORY}; worker poll interval {POLL_INTERVAL}; {} cores\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );

    // `FLEXT_BENCH_ONLY=warm`: only the warm-pool table (while working on it; the figures of
    // record come from a whole run).
    let only_warm = std::env::var("FLEXT_BENCH_ONLY").is_ok_and(|v| v == "warm");
    if !only_warm {
        the_rest(&db, &client, &namespace, &seen).await;
    }
    println!("{}", warm_versus_cold(&db, &client, &namespace).await);

    let gone = delete_namespace(&client, &namespace).await;
    db.drop().await;
    println!(
        "total {:.0}s; namespace {namespace} {}",
        started.elapsed().as_secs_f64(),
        if gone {
            "deleted"
        } else {
            "deletion still in progress"
        }
    );
}

/// Latency, plugins, metrics overhead, bare Jobs and throughput, memory.
async fn the_rest(db: &BenchDb, client: &Client, namespace: &str, seen: &Observer) {
    let (table, (quiet_p50, quiet_p99)) = latency(db, client, namespace, seen, false, None).await;
    let paced = bare_jobs(
        client,
        namespace,
        seen,
        BARE_PACED_JOBS,
        Some(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_S)),
    )
    .await;
    println!("{table}\n{}", paced.creation_latency());
    // Then, adjacent runs compared (later runs on the same bed drift slower, so each comparison
    // is with its neighbour and the drift is shown): with the three example policy plugins on
    // every job; with the worker's endpoint scraped as hard as no Prometheus does; plain again.
    let plugins = example_plugins();
    let (_, (plugins_p50, plugins_p99)) =
        latency(db, client, namespace, seen, false, Some(&plugins)).await;
    let (_, (scraped_p50, _)) = latency(db, client, namespace, seen, true, None).await;
    let (_, (again_p50, again_p99)) = latency(db, client, namespace, seen, false, None).await;
    println!(
        "Policy plugins (spot-for-batch, cost-center, image-registry; `scripts/bench plugins` times each call)\n\n\
         | claimed → Job seen, run in this order | p50 | p99 |\n|---|---:|---:|\n\
         | 1. without plugins (the table above) | {} | {} |\n| 2. with the three plugins | {} | {} |\n\
         | 4. without plugins again, last (the drift) | {} | {} |\n\
         | ratio 2 / 1 (p50) | {:.2}× | |\n",
        ms(quiet_p50),
        ms(quiet_p99),
        ms(plugins_p50),
        ms(plugins_p99),
        ms(again_p50),
        ms(again_p99),
        plugins_p50 / quiet_p50,
    );
    println!("{}", metrics_overhead(again_p50, scraped_p50));
    // The bed's ceiling first, then our rows beside it.
    let bare = bare_jobs(client, namespace, seen, BARE_JOBS, None).await;
    let mut rows = Vec::new();
    for (concurrency, jobs, qps) in THROUGHPUT {
        rows.push(throughput(db, namespace, seen, concurrency, jobs, qps).await);
    }
    print_throughput(&rows, &bare);
    let memory = memory(db, client, namespace, seen).await;
    println!("{memory}");
}

// ---------------------------------------------------------------------------------------------
// The database: a fresh clone of the Windmill schema with a commit-time probe.

struct BenchDb {
    pool: PgPool,
    url: String,
    name: String,
    admin: String,
}

impl BenchDb {
    async fn new(admin: &str) -> Self {
        // Not `flext_test_*`: `scripts/test` drops those when it starts, even during a bench run.
        let (name, url, pool) = common::clone_template(admin, "flext_bench_", 8).await;
        // The hand-back ends with the UPDATE that moves the row to the finalize tag; a deferred
        // constraint trigger runs at COMMIT, so its clock_timestamp() is the commit instant
        // (scheduled_for = now() is the transaction's start).
        sqlx::raw_sql(
            "CREATE TABLE bench_hand_back (id uuid PRIMARY KEY, committed_at timestamptz NOT NULL);
             CREATE FUNCTION bench_note_hand_back() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO bench_hand_back VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER bench_hand_back AFTER UPDATE ON v2_job_queue
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                 WHEN (NEW.tag = 'flow' AND NOT NEW.running)
                 EXECUTE FUNCTION bench_note_hand_back();",
        )
        .execute(&pool)
        .await
        .expect("install the hand-back probe");
        Self {
            pool,
            url,
            name,
            admin: admin.to_owned(),
        }
    }

    async fn push(&self, code: &str) -> Uuid {
        self.push_in("bash", code).await
    }

    async fn push_in(&self, language: &str, code: &str) -> Uuid {
        let job = WindmillJob::preview(code)
            .lang(language)
            .args(json!({"name": "bench"}));
        common::push(&self.pool, job).await.0
    }

    /// The job's log as Windmill has it.
    async fn log(&self, id: Uuid) -> String {
        sqlx::query_scalar::<_, Option<String>>("SELECT logs FROM job_logs WHERE job_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("read a job log")
            .flatten()
            .unwrap_or_default()
    }

    async fn handed_back(&self, ids: &[Uuid]) -> usize {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_hand_back WHERE id = ANY($1)")
            .bind(ids)
            .fetch_one(&self.pool)
            .await
            .expect("count hand-backs");
        usize::try_from(n).unwrap_or(0)
    }

    async fn claimed(&self, ids: &[Uuid]) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM v2_job_queue WHERE id = ANY($1) AND running")
                .bind(ids)
                .fetch_one(&self.pool)
                .await
                .expect("count claimed");
        usize::try_from(n).unwrap_or(0)
    }

    /// Jobs handed back as a failure (`pre_run_error` set), with one of their messages.
    async fn failures(&self, ids: &[Uuid]) -> (usize, Option<String>) {
        let (n, example): (i64, Option<String>) = sqlx::query_as(
            "SELECT count(*), min(pre_run_error) FROM v2_job WHERE id = ANY($1) AND pre_run_error IS NOT NULL",
        )
        .bind(ids)
        .fetch_one(&self.pool)
        .await
        .expect("count failures");
        (usize::try_from(n).unwrap_or(0), example)
    }

    async fn drop(self) {
        self.pool.close().await;
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin)
            .await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The observer: a watch of the namespace's Jobs and Pods, noting when each event is seen here.

#[derive(Default)]
struct Seen {
    synced: usize,
    /// Job id → when its (first) Kubernetes Job was first seen.
    job_added: HashMap<Uuid, SystemTime>,
    /// Job id → when its pod's main container was first seen terminated.
    terminated: HashMap<Uuid, SystemTime>,
    /// Jobs whose main container ended with a non-zero exit code.
    exited_non_zero: HashSet<Uuid>,
    /// Pods whose main container runs.
    running: HashSet<String>,
    /// Pods the node agent reported unschedulable.
    unschedulable: HashSet<String>,
}

#[derive(Clone)]
struct Observer(Arc<Mutex<Seen>>);

fn job_id(meta: &kube::api::ObjectMeta) -> Option<Uuid> {
    meta.labels.as_ref()?.get(LABEL_JOB_ID)?.parse().ok()
}

impl Observer {
    fn spawn(client: Client, namespace: &str) -> Self {
        let this = Self(Arc::default());
        let selector = format!("{LABEL_MANAGED_BY}={MANAGER}");
        let jobs: Api<KubeJob> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let me = this.clone();
        let config = watcher::Config::default().labels(&selector);
        let job_config = config.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(jobs, job_config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let now = SystemTime::now();
                let mut seen = me.lock();
                match event {
                    Ok(Event::Apply(job) | Event::InitApply(job)) => {
                        if let Some(id) = job_id(&job.metadata) {
                            seen.job_added.entry(id).or_insert(now);
                        }
                    }
                    Ok(Event::InitDone) => seen.synced += 1,
                    _ => {}
                }
            }
        });
        let me = this.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(pods, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let now = SystemTime::now();
                let mut seen = me.lock();
                match event {
                    Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                        seen.pod(&pod, now);
                    }
                    Ok(Event::Delete(pod)) => {
                        let name = pod.metadata.name.unwrap_or_default();
                        seen.running.remove(&name);
                        seen.unschedulable.remove(&name);
                    }
                    Ok(Event::InitDone) => seen.synced += 1,
                    _ => {}
                }
            }
        });
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn synced(&self) {
        wait_for("the bench's watches to sync", || async {
            self.lock().synced >= 2
        })
        .await;
    }
}

impl Seen {
    fn pod(&mut self, pod: &Pod, now: SystemTime) {
        let (Some(id), Some(name)) = (job_id(&pod.metadata), pod.metadata.name.clone()) else {
            return;
        };
        let status = pod.status.as_ref();
        let main = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == MAIN_CONTAINER))
            .and_then(|c| c.state.as_ref());
        if let Some(terminated) = main.and_then(|s| s.terminated.as_ref()) {
            self.terminated.entry(id).or_insert(now);
            if terminated.exit_code != 0 {
                self.exited_non_zero.insert(id);
            }
        }
        if main.is_some_and(|s| s.running.is_some()) {
            self.running.insert(name.clone());
        } else {
            self.running.remove(&name);
        }
        let unschedulable = status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        });
        if unschedulable {
            self.unschedulable.insert(name);
        } else {
            self.unschedulable.remove(&name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers.

fn settings(namespace: &str, name: &str, concurrency: usize, qps: u32) -> BTreeMap<String, String> {
    [
        ("FLEXT__WORKER__NAME", name.to_owned()),
        ("FLEXT__WORKER__CONCURRENCY", concurrency.to_string()),
        ("FLEXT__WORKER__POLL_INTERVAL", POLL_INTERVAL.to_owned()),
        ("FLEXT__WINDMILL__TAGS", "[k8s]".to_owned()),
        ("FLEXT__CLUSTER__NAMESPACE", namespace.to_owned()),
        (
            "FLEXT__JOB_TEMPLATE__IMAGE",
            "flext-kubernetes:dev".to_owned(),
        ),
        ("FLEXT__RESOURCES__DEFAULT_CPU", POD_CPU.to_owned()),
        ("FLEXT__RESOURCES__DEFAULT_MEMORY", POD_MEMORY.to_owned()),
        ("FLEXT__RESOURCES__DEFAULT_STORAGE", "1Gi".to_owned()),
        ("FLEXT__EXECUTOR__API_QPS", qps.to_string()),
        ("FLEXT__EXECUTOR__API_BURST", qps.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A worker's config and its executor, connected to the bed; [`common::start_worker`] starts it
/// on the bench database.
async fn in_process_worker(
    namespace: &str,
    concurrency: usize,
    qps: u32,
    plugins: Option<&str>,
) -> (Config, KubernetesExecutor) {
    let mut env = settings(
        namespace,
        &format!("wk-bench-c{concurrency}"),
        concurrency,
        qps,
    );
    if let Some(plugins) = plugins {
        env.insert("FLEXT__PLUGINS".into(), plugins.to_owned());
    }
    let config = Config::from_yaml("", &env).expect("bench config");
    let executor = KubernetesExecutor::connect(Arc::new(config.clone()))
        .await
        .expect("the executor connects to the bed");
    (config, executor)
}

// ---------------------------------------------------------------------------------------------
// Latency.

/// The latency table, and its claimed → Job seen p50 and p99 (seconds). With `scrape`, the
/// worker's `/metrics` and `/status` are read every [`SCRAPE_EVERY`] meanwhile; with `plugins`
/// (the `plugins:` YAML), the worker runs them on every job.
async fn latency(
    db: &BenchDb,
    client: &Client,
    namespace: &str,
    seen: &Observer,
    scrape: bool,
    plugins: Option<&str>,
) -> (String, (f64, f64)) {
    let (config, executor) = in_process_worker(namespace, LATENCY_CONCURRENCY, 1000, plugins).await;
    let executor = Executor::Kubernetes(executor);
    let handle = common::start_worker(&db.pool, config, executor.clone());
    let scraping = CancellationToken::new();
    if scrape {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the endpoint");
        let port = listener.local_addr().expect("its address").port();
        let endpoint = flext_kubernetes::http::Endpoint {
            probe: handle.probe(),
            queue: flext_kubernetes::queue::PgQueue::from_pool(db.pool.clone()),
            executor,
        };
        tokio::spawn(flext_kubernetes::http::serve(
            listener,
            endpoint,
            scraping.clone(),
        ));
        let stop = scraping.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                common::scrape::get(port, "/metrics").await;
                common::scrape::get(port, "/status").await;
                tokio::time::sleep(SCRAPE_EVERY).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let period = Duration::from_micros(1_000_000 / LATENCY_RATE_PER_S);
    let mut next = tokio::time::Instant::now();
    let mut enqueued = HashMap::new();
    let mut ids = Vec::new();
    for _ in 0..LATENCY_JOBS {
        let id = db.push(ECHO).await;
        enqueued.insert(id, SystemTime::now());
        ids.push(id);
        next += period;
        tokio::time::sleep_until(next).await;
    }
    let complete = wait_until(|| async { db.handed_back(&ids).await >= ids.len() }).await;
    scraping.cancel();
    handle.shutdown().await;
    let rows: Vec<(Uuid, f64, f64, f64)> = sqlx::query_as(
        "SELECT q.id, extract(epoch FROM q.started_at)::float8, extract(epoch FROM h.committed_at)::float8,
                extract(epoch FROM h.committed_at - q.scheduled_for)::float8
         FROM v2_job_queue q JOIN bench_hand_back h USING (id) WHERE q.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&db.pool)
    .await
    .expect("read the hand-backs");
    let (failed, example) = db.failures(&ids).await;
    let (mut to_claim, mut to_job, mut claim_to_job, mut to_hand_back, mut commit_tx) = {
        let seen = seen.lock();
        let (mut to_claim, mut to_job, mut claim_to_job, mut to_hand_back, mut commit_tx) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, started_at, committed_at, tx) in rows {
            let queued = epoch(enqueued[&id]);
            to_claim.push(started_at - queued);
            if let Some(added) = seen.job_added.get(&id) {
                to_job.push(epoch(*added) - queued);
                claim_to_job.push(epoch(*added) - started_at);
            }
            if let Some(terminated) = seen.terminated.get(&id) {
                to_hand_back.push(committed_at - epoch(*terminated));
            }
            commit_tx.push(tx);
        }
        (to_claim, to_job, claim_to_job, to_hand_back, commit_tx)
    };
    delete_jobs(client, namespace).await;
    let mut out = format!(
        "Latency: {LATENCY_JOBS} jobs queued at {LATENCY_RATE_PER_S}/s, one worker (concurrency {LATENCY_CONCURRENCY}, api_qps 1000)\n\n\
         | interval | p50 | p99 | samples |\n|---|---:|---:|---:|\n"
    );
    for (what, samples) in [
        ("enqueue → Job seen (watch)", &mut to_job),
        (
            "  enqueue → claimed (`started_at`; poll interval)",
            &mut to_claim,
        ),
        ("  claimed → Job seen (watch)", &mut claim_to_job),
        (
            "main container terminated (watch) → hand-back committed",
            &mut to_hand_back,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            samples.len()
        );
    }
    let _ = write!(
        out,
        "\nThe hand-back transaction itself (commit − its `now()`): p50 {}, p99 {}.",
        ms(percentile(&mut commit_tx, 0.5)),
        ms(percentile(&mut commit_tx, 0.99))
    );
    if !complete {
        let _ = write!(
            out,
            "\nTIMED OUT after {}s: only {} of {LATENCY_JOBS} jobs were handed back.",
            PHASE_LIMIT.as_secs(),
            commit_tx.len()
        );
    }
    if failed > 0 {
        let _ = write!(
            out,
            "\n{failed} job(s) failed, e.g.: {}",
            example.unwrap_or_default()
        );
    }
    let p50 = percentile(&mut claim_to_job, 0.5);
    (out, (p50, percentile(&mut claim_to_job, 0.99)))
}

// ---------------------------------------------------------------------------------------------
// Warm pools against cold Jobs.

/// Jobs per language and path.
const WARM_JOBS: usize = 20;
/// Pods a bench pool keeps waiting.
const WARM_POOL_SIZE: u32 = 3;
/// The pause between two jobs of one cell (the pool refills meanwhile; cold jobs get it too).
const WARM_PAUSE: Duration = Duration::from_millis(1500);

/// Trivial jobs that print, as their first statement, the wall clock when user code started
/// (the bench and the bed share the machine's clock, and so does PostgreSQL's `started_at`).
const WARM_CODE: [(&str, &str); 2] = [
    (
        "python3",
        "import time\nT0 = time.time()\ndef main(name):\n    print(f'user code started {T0:.6f}', flush=True)\n    return 1\n",
    ),
    (
        "bash",
        "echo \"user code started $EPOCHREALTIME\"\necho 1\n",
    ),
];

/// claim → user code started and claim → hand-back committed, p50 and p99, cold and warm, for a
/// trivial Python and a trivial Bash job: one worker per cell, jobs one at a time.
async fn warm_versus_cold(db: &BenchDb, client: &Client, namespace: &str) -> String {
    let mut out = format!(
        "Warm pools against cold Jobs: {WARM_JOBS} jobs a cell, one at a time with {:.1}s between them; warm: a pool of {WARM_POOL_SIZE} pods of the job's language (`warm_pools:`)\n\n\
         | language | path | claim → user code started p50 | p99 | claim → hand-back committed p50 | p99 | jobs warm / cold |\n|---|---|---:|---:|---:|---:|---:|\n",
        WARM_PAUSE.as_secs_f64()
    );
    let mut ratios = Vec::new();
    for (language, code) in WARM_CODE {
        let mut cells = Vec::new();
        for warm in [false, true] {
            let mut env = settings(namespace, &format!("wk-bench-{language}-{warm}"), 8, 1000);
            if warm {
                env.insert(
                    "FLEXT__WARM_POOLS".into(),
                    format!("[{{tag: k8s, language: {language}, size: {WARM_POOL_SIZE}}}]"),
                );
                env.insert(
                    "FLEXT__WORKER__HANDOVER__LISTEN".into(),
                    "127.0.0.1:0".into(),
                );
            }
            let config = Config::from_yaml("", &env).expect("bench config");
            let executor = KubernetesExecutor::connect(Arc::new(config.clone()))
                .await
                .expect("the executor connects to the bed");
            let handle = common::start_worker(&db.pool, config, Executor::Kubernetes(executor));
            if warm {
                // The pool's first pods start before the first job.
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            let (mut started, mut done, mut paths) = (Vec::new(), Vec::new(), (0, 0));
            for _ in 0..WARM_JOBS {
                let id = db.push_in(language, code).await;
                let finished = wait_until(|| async { db.handed_back(&[id]).await >= 1 }).await;
                if !finished {
                    continue;
                }
                let (claimed, committed): (f64, f64) = sqlx::query_as(
                    "SELECT extract(epoch FROM q.started_at)::float8, extract(epoch FROM h.committed_at)::float8
                     FROM v2_job_queue q JOIN bench_hand_back h USING (id) WHERE q.id = $1",
                )
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .expect("read the hand-back");
                let log = db.log(id).await;
                if log.contains("warm start:") {
                    paths.0 += 1;
                } else {
                    paths.1 += 1;
                }
                let user = log
                    .lines()
                    .find_map(|l| l.strip_prefix("user code started "))
                    .and_then(|t| t.trim().parse::<f64>().ok());
                if let Some(user) = user {
                    started.push(user - claimed);
                }
                done.push(committed - claimed);
                tokio::time::sleep(WARM_PAUSE).await;
            }
            handle.shutdown().await;
            let row = (
                percentile(&mut started, 0.5),
                percentile(&mut started, 0.99),
                percentile(&mut done, 0.5),
                percentile(&mut done, 0.99),
            );
            let _ = writeln!(
                out,
                "| {language} | {} | {} | {} | {} | {} | {} / {} |",
                if warm { "warm" } else { "cold" },
                ms(row.0),
                ms(row.1),
                ms(row.2),
                ms(row.3),
                paths.0,
                paths.1
            );
            cells.push(row);
        }
        if let [cold, warm] = cells[..] {
            ratios.push(format!(
                "{language}: claim → user code started p50 {:.1}× lower warm ({} vs {}), claim → hand-back p50 {:.1}×",
                cold.0 / warm.0,
                ms(warm.0),
                ms(cold.0),
                cold.2 / warm.2
            ));
        }
        delete_jobs(client, namespace).await;
    }
    let _ = write!(out, "\n{}\n", ratios.join("\n"));
    out
}

/// The example plugins of `plugins/` (built by `scripts/build-plugins`) as `plugins:` YAML, set
/// to decide about the bench's jobs (workspace `demo`, tag `k8s`, image `bash:5.2`) as the worker
/// would in production: two allow, one labels.
fn example_plugins() -> String {
    let dir = common::tools::built_plugins().display().to_string();
    format!(
        "[{{name: spot, path: '{dir}/spot_for_batch.wasm', config: {{tags: [batch], node_selector: {{lifecycle: spot}}}}}}, \
          {{name: cost-center, path: '{dir}/cost_center.wasm', config: {{demo: cc-4411}}}}, \
          {{name: registry, path: '{dir}/image_registry.wasm', config: {{allowed: ['bash:', 'flext-kubernetes:']}}}}]"
    )
}

/// How often the second latency run reads `/metrics` and `/status` (Prometheus scrapes every
/// 15 to 60 s).
const SCRAPE_EVERY: Duration = Duration::from_millis(250);

/// What metrics cost a job: the worker always records them, so their recording is timed alone
/// (one job's worth of calls, as the worker makes them), and scraping is compared in one run.
fn metrics_overhead(quiet_p50: f64, scraped_p50: f64) -> String {
    use flext_kubernetes::metrics::{JobTimes, Metrics};
    const JOBS: u32 = 20_000;
    let metrics = Metrics::default();
    metrics.init_tags(&["k8s".to_owned()]);
    let times = JobTimes {
        queue_wait: Some(Duration::from_millis(20)),
        claim_to_created: Some(Duration::from_millis(40)),
        created_to_started: Some(Duration::from_millis(900)),
        run: Duration::from_millis(1200),
        hand_back: Some(Duration::from_millis(30)),
    };
    // One job: its claim and queue wait, ~8 API requests with their limiter waits, its outcome.
    let one_job = || {
        metrics.claimed("k8s", false);
        metrics.queue_wait("k8s", Duration::from_millis(20));
        for _ in 0..8 {
            metrics.kube().limiter_waited(Duration::ZERO);
            metrics.kube().request("get", "pods/log", Some(200));
        }
        metrics.completed("k8s", "success", None, &times);
    };
    let mut per_job: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..JOBS {
                one_job();
            }
            start.elapsed().as_secs_f64() / f64::from(JOBS)
        })
        .collect();
    let record = percentile(&mut per_job, 0.5);
    format!(
        "Metrics overhead\n\n\
         | | value |\n|---|---:|\n\
         | recording one job's metrics (claim, queue wait, 8 API requests, outcome and its histograms; median of 7 × {JOBS}) | {:.1} µs |\n\
         | claimed → Job seen p50, endpoint not read (run 4, after) | {} |\n\
         | claimed → Job seen p50, /metrics and /status read every {} ms (run 3) | {} |\n\
         | ratio scraped / not read | {:.2}× |\n\
         | recording as a share of claimed → Job seen p50 | {:.3} % |\n",
        record * 1e6,
        ms(quiet_p50),
        SCRAPE_EVERY.as_millis(),
        ms(scraped_p50),
        scraped_p50 / quiet_p50,
        record / quiet_p50 * 100.0,
    )
}

// ---------------------------------------------------------------------------------------------
// The limit: the same pods as bare Jobs.

/// What the bed did with bare Jobs.
struct Bare {
    jobs: usize,
    /// Jobs whose main container was seen terminated in time.
    terminated: usize,
    failed: usize,
    /// From the first POST to the last main container seen terminated.
    seconds: f64,
    /// Kubernetes API requests made (the watches aside).
    requests: u64,
    /// Job POST round trips (seconds).
    post: Vec<f64>,
    /// Job POST sent → Job seen by the watch (seconds).
    to_seen: Vec<f64>,
    pace: Option<Duration>,
}

impl Bare {
    fn rate(&self) -> f64 {
        self.terminated as f64 / self.seconds
    }

    fn creation_latency(&self) -> String {
        let mut post = self.post.clone();
        let mut to_seen = self.to_seen.clone();
        format!(
            "The bed's own Job-creation latency: {} bare Jobs (the same Secret and Job a job gets, no worker) created one at a time at {}/s\n\n\
             | interval | p50 | p99 | samples |\n|---|---:|---:|---:|\n\
             | Job POST round trip | {} | {} | {} |\n\
             | Job POST sent → Job seen (watch) | {} | {} | {} |\n",
            self.jobs,
            self.pace.map_or(0, |p| 1_000_000 / p.as_micros().max(1)),
            ms(percentile(&mut post, 0.5)),
            ms(percentile(&mut post, 0.99)),
            post.len(),
            ms(percentile(&mut to_seen, 0.5)),
            ms(percentile(&mut to_seen, 0.99)),
            to_seen.len(),
        )
    }
}

/// The bench's Bash job as a worker would render it (attempt 1, its own nonce).
fn bare_objects(config: &Config, namespace: &str) -> (Uuid, render::Objects) {
    let mut job = Job::local(
        std::path::Path::new("echo.sh"),
        ECHO.to_owned(),
        "bash",
        json!({"name": "bench"}),
        "k8s",
    );
    job.id = flext_kubernetes::domain::JobId::new_v4();
    let pod = pod_settings(config, &job).expect("pod settings of the bench job");
    let args = job.args.as_object().cloned().unwrap_or_default();
    let nonce = Uuid::new_v4().simple().to_string();
    let objects = render::render(
        &job,
        &render::Context {
            settings: &config.settings,
            namespace,
            pod: &pod,
            attempt: 1,
            nonce: &nonce,
            args: &args,
            token: None,
            base_url: None,
        },
    );
    (job.id.0, objects)
}

/// `n` bare Jobs: all created as fast as the bed accepts them (`pace` `None`), or one every
/// `pace`; each deleted once its main container is seen terminated.
async fn bare_jobs(
    client: &Client,
    namespace: &str,
    seen: &Observer,
    n: usize,
    pace: Option<Duration>,
) -> Bare {
    let config = Config::from_yaml("", &settings(namespace, "wk-bench-bare", 1, 1000))
        .expect("bench config");
    let jobs: Api<KubeJob> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let rendered: Vec<(Uuid, render::Objects)> =
        (0..n).map(|_| bare_objects(&config, namespace)).collect();
    let ids: Vec<Uuid> = rendered.iter().map(|(id, _)| *id).collect();
    let requests = std::sync::atomic::AtomicU64::new(0);
    let count = || {
        requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    // As the worker does: the Job, then its Secret owned by it.
    let create = |(id, objects): (Uuid, render::Objects)| {
        let (jobs, secrets) = (jobs.clone(), secrets.clone());
        async move {
            let sent = SystemTime::now();
            count();
            let job = jobs
                .create(&PostParams::default(), &objects.job)
                .await
                .expect("create a bare Job");
            let returned = SystemTime::now();
            let mut secret = objects.secret;
            secret.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: job.metadata.name.clone().unwrap_or_default(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
                ..OwnerReference::default()
            }]);
            count();
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("create a bare Job's Secret");
            (id, sent, returned)
        }
    };
    let started = SystemTime::now();
    let created: Vec<(Uuid, SystemTime, SystemTime)> = if let Some(period) = pace {
        let mut next = tokio::time::Instant::now();
        let mut created = Vec::with_capacity(n);
        for one in rendered {
            created.push(create(one).await);
            next += period;
            tokio::time::sleep_until(next).await;
        }
        created
    } else {
        futures::stream::iter(rendered)
            .map(create)
            .buffer_unordered(64)
            .collect()
            .await
    };
    // Delete each Job (cascading: its pod and Secret go too) once its container has ended.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let mut deleted = HashSet::new();
    let deadline = Instant::now() + PHASE_LIMIT;
    while deleted.len() < n && Instant::now() < deadline {
        let ended: Vec<Uuid> = {
            let seen = seen.lock();
            ids.iter()
                .filter(|id| seen.terminated.contains_key(id) && !deleted.contains(*id))
                .copied()
                .collect()
        };
        futures::future::join_all(ended.iter().map(|id| {
            count();
            let (jobs, params) = (&jobs, &params);
            async move { jobs.delete(&format!("wm-{id}-1"), params).await }
        }))
        .await;
        deleted.extend(ended);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (post, to_seen, terminated, failed, last) = {
        let seen = seen.lock();
        let post = created
            .iter()
            .map(|(_, sent, returned)| epoch(*returned) - epoch(*sent))
            .collect();
        let to_seen = created
            .iter()
            .filter_map(|(id, sent, _)| Some(epoch(*seen.job_added.get(id)?) - epoch(*sent)))
            .collect();
        let ended: Vec<f64> = ids
            .iter()
            .filter_map(|id| seen.terminated.get(id).map(|t| epoch(*t)))
            .collect();
        let failed = ids
            .iter()
            .filter(|id| seen.exited_non_zero.contains(id))
            .count();
        let last = ended.iter().copied().fold(f64::NAN, f64::max);
        (post, to_seen, ended.len(), failed, last)
    };
    delete_jobs(client, namespace).await;
    Bare {
        jobs: n,
        terminated,
        failed,
        seconds: last - epoch(started),
        requests: requests.load(std::sync::atomic::Ordering::Relaxed),
        post,
        to_seen,
        pace,
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput.

struct Throughput {
    concurrency: usize,
    qps: u32,
    jobs: usize,
    done: usize,
    failed: usize,
    failure: Option<String>,
    seconds: f64,
    requests: u64,
}

async fn throughput(
    db: &BenchDb,
    namespace: &str,
    seen: &Observer,
    concurrency: usize,
    jobs: usize,
    qps: u32,
) -> Throughput {
    let (config, executor) = in_process_worker(namespace, concurrency, qps, None).await;
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        ids.push(db.push(ECHO).await);
    }
    let before = executor.api_requests();
    let started = SystemTime::now();
    let handle = common::start_worker(&db.pool, config, Executor::Kubernetes(executor.clone()));
    wait_until(|| async { db.handed_back(&ids).await >= jobs }).await;
    handle.shutdown().await;
    let requests = executor.api_requests() - before;
    let (done, last): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM max(committed_at))::float8 FROM bench_hand_back WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&db.pool)
    .await
    .expect("last hand-back");
    let (failed, example) = db.failures(&ids).await;
    // Jobs are deleted by the worker after the hand-back; wait for the pods to go, so that the
    // next round starts on an idle bed.
    wait_until(|| async {
        let seen = seen.lock();
        seen.running.is_empty()
    })
    .await;
    Throughput {
        concurrency,
        qps,
        jobs,
        done: usize::try_from(done).unwrap_or(0),
        failed,
        failure: example,
        seconds: last.map_or(f64::NAN, |l| l - epoch(started)),
        requests,
    }
}

fn print_throughput(rows: &[Throughput], bare: &Bare) {
    let mut bare_jobs = bare.terminated.to_string();
    if bare.terminated < bare.jobs {
        bare_jobs = format!("{} of {} (timed out)", bare.terminated, bare.jobs);
    }
    if bare.failed > 0 {
        let _ = write!(bare_jobs, ", {} exited non-zero", bare.failed);
    }
    println!(
        "Throughput: N jobs queued up front, then one worker starts; time until the last hand-back committed. \
         First row: the bed's ceiling, the same pods as bare Jobs (our Secret and Job, created {} at a time as fast as \
         the bed accepts them, each deleted when its container is seen terminated; no Windmill, no logs)\n",
        64
    );
    println!(
        "| worker.concurrency | api_qps (burst) | jobs | wall time | jobs/s | vs c=1 | vs bare Jobs | API requests/job |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| bare Jobs | - | {bare_jobs} | {:.1} s | {:.1} | - | 1.00× | {:.1} |",
        bare.seconds,
        bare.rate(),
        bare.requests as f64 / bare.jobs as f64
    );
    let first = rows.first().map(|r| r.done as f64 / r.seconds);
    for r in rows {
        let rate = r.done as f64 / r.seconds;
        let mut jobs = r.jobs.to_string();
        if r.done < r.jobs {
            jobs = format!("{} of {} (timed out)", r.done, r.jobs);
        }
        if r.failed > 0 {
            let _ = write!(jobs, ", {} failed", r.failed);
        }
        println!(
            "| {} | {} | {jobs} | {:.1} s | {rate:.1} | {:.2}× | {:.2}× | {:.1} |",
            r.concurrency,
            r.qps,
            r.seconds,
            first.map_or(f64::NAN, |b| rate / b),
            rate / bare.rate(),
            r.requests as f64 / r.jobs as f64
        );
    }
    for r in rows {
        if let Some(failure) = &r.failure {
            println!(
                "\nc={} api_qps={}: {} job(s) failed, e.g.: {}",
                r.concurrency,
                r.qps,
                r.failed,
                failure.trim()
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Memory of the real binary.

/// The worker process, killed (`SIGKILL`) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_binary(db: &BenchDb, namespace: &str, concurrency: usize, qps: u32) -> Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flext-kubernetes"));
    command
        .arg("run")
        .env("FLEXT_DATABASE_URL", &db.url)
        .env("FLEXT__EXECUTOR__PENDING_BUDGET", "1h")
        .env("FLEXT__TELEMETRY__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in settings(
        namespace,
        &format!("wk-bench-rss-{concurrency}"),
        concurrency,
        qps,
    ) {
        command.env(k, v);
    }
    Child(command.spawn().expect("start flext-kubernetes run"))
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The highest `VmRSS` over `period` (sampled every 100 ms) and the `VmHWM` at its end.
async fn sample(pid: u32, period: Duration) -> (u64, u64) {
    let end = Instant::now() + period;
    let mut peak = 0;
    let mut hwm = 0;
    while Instant::now() < end {
        let (now, high) = rss(pid);
        peak = peak.max(now);
        hwm = high;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (peak, hwm)
}

async fn memory(db: &BenchDb, client: &Client, namespace: &str, seen: &Observer) -> String {
    let mut out = String::from(
        "Worker memory: the release binary `flext-kubernetes run` (one process per row), pod watch and \
         all jobs in flight; RSS = highest VmRSS over 3 s once all are in flight, HWM = VmHWM then; \
         per job = (RSS − idle RSS) / jobs\n\n\
         | in-flight jobs | what they are | time to get there | VmRSS | VmHWM | per job in flight |\n|---:|---|---:|---:|---:|---:|\n",
    );
    // 100 running pods.
    let child = spawn_binary(db, namespace, 100, 1000);
    let pid = child.0.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, idle_hwm) = sample(pid, Duration::from_secs(1)).await;
    let _ = writeln!(
        out,
        "| 0 | idle, 2 s after start | - | {} | {} | - |",
        mib(idle),
        mib(idle_hwm)
    );
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(db.push("echo started\nsleep 600\n").await);
    }
    let t0 = Instant::now();
    let reached =
        wait_until(|| async { seen.lock().running.len() >= 100 && db.claimed(&ids).await >= 100 })
            .await;
    let took = t0.elapsed();
    let running = seen.lock().running.len();
    let (peak, hwm) = sample(pid, Duration::from_secs(3)).await;
    let _ = writeln!(
        out,
        "| 100 | pods Running (`sleep 600`), logs followed{} | {:.0} s | {} | {} | {} |",
        if reached {
            String::new()
        } else {
            format!(" — TIMED OUT: {running} running")
        },
        took.as_secs_f64(),
        mib(peak),
        mib(hwm),
        per_job(peak, idle, 100)
    );
    drop(child);
    delete_jobs(client, namespace).await;

    // 1000 pending pods.
    let child = spawn_binary(db, namespace, 1000, 200);
    let pid = child.0.id();
    let mut ids = Vec::new();
    for _ in 0..1000 {
        ids.push(db.push("# k8s: memory=900Gi\necho never\n").await);
    }
    let t0 = Instant::now();
    let reached = wait_until(|| async {
        let jobs_and_pods = {
            let seen = seen.lock();
            let jobs = ids
                .iter()
                .filter(|id| seen.job_added.contains_key(id))
                .count();
            jobs >= 1000 && seen.unschedulable.len() >= 1000
        };
        jobs_and_pods && db.claimed(&ids).await >= 1000
    })
    .await;
    let took = t0.elapsed();
    let (jobs, pending) = {
        let seen = seen.lock();
        (
            ids.iter()
                .filter(|id| seen.job_added.contains_key(id))
                .count(),
            seen.unschedulable.len(),
        )
    };
    let (peak, hwm) = sample(pid, Duration::from_secs(3)).await;
    let _ = writeln!(
        out,
        "| 1000 | pods Pending (`memory=900Gi`: no node fits; the bed cannot run 1000 processes), api_qps 200{} | {:.0} s | {} | {} | {} |",
        if reached {
            String::new()
        } else {
            format!(" — TIMED OUT: {jobs} Jobs, {pending} pods Unschedulable")
        },
        took.as_secs_f64(),
        mib(peak),
        mib(hwm),
        per_job(peak, idle, 1000)
    );
    drop(child);
    delete_jobs(client, namespace).await;
    out
}

/// The memory one in-flight job adds, from the RSS with `jobs` in flight and idle (KiB).
fn per_job(rss: u64, idle: u64, jobs: u64) -> String {
    format!("{:.0} KiB", rss.saturating_sub(idle) as f64 / jobs as f64)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn delete_jobs(client: &Client, namespace: &str) {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let _ = Api::<KubeJob>::namespaced(client.clone(), namespace)
        .delete_collection(&params, &ListParams::default())
        .await;
    // The garbage collector removes the pods after the Jobs: the next phase starts on a quiet bed,
    // not beside a hundred deletions (a run measured during them took ten times longer).
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    wait_until(|| async {
        pods.list(&ListParams::default())
            .await
            .is_ok_and(|list| list.items.is_empty())
    })
    .await;
}

async fn delete_namespace(client: &Client, namespace: &str) -> bool {
    let api = Api::<Namespace>::all(client.clone());
    let _ = api.delete(namespace, &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(api.get_opt(namespace).await, Ok(None)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Polls `check` every 50 ms until it holds or [`PHASE_LIMIT`] passes; whether it held.
async fn wait_until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PHASE_LIMIT;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(wait_until(check).await, "timed out waiting for {what}");
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Nearest-rank percentile (seconds); NaN without samples.
fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
