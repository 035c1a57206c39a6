//! Side by side with a peer: Prefect's Kubernetes worker (`prefect` 3.9.1, `prefect-kubernetes`
//! 0.8.0, its server on 127.0.0.1 on PostgreSQL) and our worker (`flext-kubernetes run`, the
//! release binary) on the same test bed, each with its defaults and then with its fastest
//! documented settings. Run with `scripts/bench peers`, which installs and starts everything this
//! needs (the bed with a node config that maps Prefect's image to the Prefect venv, PostgreSQL,
//! Prefect's server) and stops it at the end.
//!
//! What is measured, with this machine's clock (every process runs on this host):
//! - **submitted**: Prefect: the `create_flow_run` response has arrived (the run is stored,
//!   Scheduled for now); ours: the insert of the Windmill job rows has committed.
//! - **Job created**: a Kubernetes watch of Jobs in this process first sees the run's Job (label
//!   `prefect.io/flow-run-id` / `flext.dev/job-id`). A Job's `creationTimestamp` has whole
//!   seconds only, so the watch is the clock; it sees the Job a little after the fact.
//! - **result recorded**: Prefect: the flow run's state is `Completed` in Prefect's API; ours:
//!   Windmill's `v2_job_completed` row exists (written by the stock-worker double that serves the
//!   finalize tag, as a stock Windmill worker would). Both are polled every 50 ms, which adds
//!   0–50 ms to each figure.
//! - **Latency**: runs submitted one at a time at a steady pace; p50 and p99 (nearest rank: with
//!   20 runs, p99 is the slowest).
//! - **Throughput**: 50 runs submitted at once; 50 over the time from the first submission to the
//!   last result recorded.
//! - **API requests per run**: the apiserver's `apiserver_request_total`, scraped before and after
//!   each phase (after the worker started), the difference over the runs of the phase. It has no
//!   client label, so it is shown twice: every client (the Job controller and the node agent act
//!   on each Job and pod too) and the requests only a worker makes on this bed (see
//!   [`worker_made`]). Ours also counts its own requests (`flext_kube_requests_total`).

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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::WindmillJob;
use common::stock::StockWorker;
use flext_kubernetes::executor::kubernetes::render::LABEL_JOB_ID;
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Prefect labels the Jobs it creates with the flow run's id.
const PREFECT_LABEL: &str = "prefect.io/flow-run-id";
const PREFECT_POOL: &str = "peers";
/// Prefect's Kubernetes work pool puts Jobs in `default` unless told otherwise.
const PREFECT_NAMESPACE: &str = "default";
const OUR_NAMESPACE: &str = "peers-ours";

/// The trivial flow: one function, no tasks.
const FLOW: &str =
    "from prefect import flow\n\n\n@flow\ndef trivial():\n    return {\"ok\": True}\n";
/// The trivial Windmill script: Bash whose last line is its result.
const SCRIPT: &str = "echo '{\"ok\": true}'\n";

const LATENCY_RUNS: usize = 20;
/// Prefect's pod starts a Python interpreter and Prefect's client (seconds on the bed): runs a
/// few seconds apart keep the latency runs from queueing behind each other's pods.
const PREFECT_SPACING: Duration = Duration::from_secs(3);
const OUR_SPACING: Duration = Duration::from_secs(1);
const BURST_RUNS: usize = 50;
const POLL: Duration = Duration::from_millis(50);
/// Bound on waiting for the results of one phase part, after its last submission: 50 Prefect pods
/// at once on 2 busy cores took over 5 minutes (26 of 50 done after 300 s beside a CI run).
const RESULT_LIMIT: Duration = Duration::from_secs(600);
const START_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

/// What `scripts/bench peers` hands over.
struct Setup {
    /// Prefect's API, `http://127.0.0.1:PORT/api`.
    api: String,
    /// The Prefect venv (`scripts/tools prefect`).
    venv: PathBuf,
    /// A scratch directory of this run: configs, the flow's code, logs, the pid list.
    dir: PathBuf,
    /// `flext-kubernetes` (release build).
    worker_bin: PathBuf,
    /// Prefect's server, for its CPU time.
    prefect_server_pid: Option<u32>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `scripts/bench peers`"))
}

async fn run() {
    // reqwest is built without a default TLS provider (the worker picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let setup = Setup {
        api: env("FLEXT_PEERS_PREFECT_API"),
        venv: env("FLEXT_PEERS_PREFECT_VENV").into(),
        dir: env("FLEXT_PEERS_DIR").into(),
        worker_bin: env("FLEXT_PEERS_WORKER_BIN").into(),
        prefect_server_pid: std::env::var("FLEXT_PEERS_PREFECT_SERVER_PID")
            .ok()
            .and_then(|p| p.parse().ok()),
    };
    std::fs::create_dir_all(setup.dir.join("logs")).unwrap();
    let client = common::bed::client().await;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": OUR_NAMESPACE}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let seen = Seen::spawn(client.clone()).await;
    let http = reqwest::Client::new();

    let versions = Command::new(setup.venv.join("bin/python"))
        .args(["-c", "import importlib.metadata as m; print(m.version('prefect'), m.version('prefect-kubernetes'))"])
        .output()
        .expect("run the Prefect venv's Python");
    let versions = String::from_utf8_lossy(&versions.stdout).trim().to_owned();
    println!(
        "Peers benchmark: test bed at {}, {} cores; Prefect (prefect, prefect-kubernetes) {versions}, server {} on PostgreSQL",
        std::env::var("FLEXT_TESTBED_APISERVER").unwrap_or_else(|_| "(KUBECONFIG)".into()),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        setup.api,
    );
    println!(
        "Prefect: a trivial flow (`return {{\"ok\": True}}`), its code on the host (pull step set_working_directory), \
         pods of image prefecthq/prefect:*-python3.11 mapped to the venv; \
         ours: a trivial Bash script (`echo '{{\"ok\": true}}'`) on tag k8s, image bash:5.2 → the host's shell\n"
    );

    // Prefect: the work pool (its default base job template), the flow and a deployment.
    let prefect = Prefect::prepare(&setup, &http).await;
    // Ours: a Windmill database of its own.
    let (db_name, db_url, pool) =
        common::clone_template(&common::admin_url(), "flext_peers_", 16).await;

    let mut phases = Vec::new();
    // Defaults: nothing set. Fastest: `worker.query_seconds` (PREFECT_WORKER_QUERY_SECONDS,
    // default 10 s: "Number of seconds a worker should wait between queries for scheduled
    // work", https://docs.prefect.io/v3/develop/settings-ref) at 0.2 s, as in the issue's first
    // run. `worker.prefetch_seconds` (default 10) only submits runs scheduled in the future
    // early; these runs are scheduled for now, so it changes nothing here.
    for (name, extra) in [
        ("defaults", vec![]),
        ("fastest", vec![("PREFECT_WORKER_QUERY_SECONDS", "0.2")]),
    ] {
        phases.push(prefect.phase(&setup, &client, &seen, name, &extra).await);
        println!("  ({:.0} s so far)", started.elapsed().as_secs_f64());
    }
    // Ours: defaults (poll_interval 100ms, api_qps 50, api_burst 100, concurrency 64); fastest:
    // poll_interval 20ms and a client rate limit that does not bind (README, Configuration).
    let stop = CancellationToken::new();
    let stock = StockWorker::new(&pool).spawn(stop.clone());
    for (name, extra) in [
        ("defaults", ""),
        (
            "fastest",
            "    worker: { poll_interval: 20ms }\n    executor: { api_qps: 1000, api_burst: 1000 }\n",
        ),
    ] {
        phases.push(ours(&setup, &client, &seen, &pool, &db_url, name, extra).await);
        println!("  ({:.0} s so far)", started.elapsed().as_secs_f64());
    }
    stop.cancel();
    stock.await.unwrap();
    pool.close().await;
    drop_database(&db_name).await;

    let import = python_import_time(&setup.venv);
    print_table(&phases, import);
    println!("\n(bench took {:.0} s)", started.elapsed().as_secs_f64());
}

/// One side's phase: its figures and how to print them.
struct Phase {
    side: &'static str,
    settings: String,
    latency: Vec<Sample>,
    burst: Vec<Sample>,
    burst_seconds: f64,
    api: ApiDelta,
    runs: usize,
    /// Our worker's own count of its Kubernetes requests.
    own_requests: Option<f64>,
    worker_cpu: f64,
    server_cpu: Option<f64>,
}

#[derive(Clone, Copy)]
struct Sample {
    submitted: Instant,
    created: Instant,
    done: Instant,
}

/// Jobs first seen by a watch, by run id (a Prefect flow run's or a Windmill job's).
#[derive(Clone)]
struct Seen(Arc<Mutex<HashMap<String, Instant>>>);

impl Seen {
    async fn spawn(client: Client) -> Self {
        let seen = Self(Arc::default());
        let map = seen.0.clone();
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            let mut stream =
                watcher::watcher(Api::<KubeJob>::all(client), watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(Event::Apply(job) | Event::InitApply(job)) => {
                        let labels = job.metadata.labels.unwrap_or_default();
                        if let Some(id) = labels.get(PREFECT_LABEL).or(labels.get(LABEL_JOB_ID)) {
                            map.lock().unwrap().entry(id.clone()).or_insert(now);
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(tx) = synced_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("peers: Job watch error (it retries): {e}"),
                }
            }
        });
        tokio::time::timeout(START_LIMIT, synced)
            .await
            .expect("the watch of Jobs did not finish its initial list within 120 s")
            .unwrap();
        seen
    }

    fn get(&self, id: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(id).copied()
    }
}

/// How runs are submitted and their results read, for one side.
enum Target<'a> {
    Prefect {
        http: &'a reqwest::Client,
        api: &'a str,
        deployment: &'a str,
    },
    Ours {
        pool: &'a PgPool,
    },
}

impl Target<'_> {
    fn what(&self) -> &'static str {
        match self {
            Self::Prefect { .. } => "Prefect flow run",
            Self::Ours { .. } => "Windmill job",
        }
    }

    async fn submit(&self) -> String {
        match self {
            Self::Prefect {
                http,
                api,
                deployment,
            } => {
                let run = post(
                    http,
                    &format!("{api}/deployments/{deployment}/create_flow_run"),
                    &json!({}),
                )
                .await;
                run["id"].as_str().unwrap().to_owned()
            }
            Self::Ours { pool } => {
                let id = common::push(
                    pool,
                    WindmillJob::script("u/peers/trivial", SCRIPT)
                        .lang("bash")
                        .tag("k8s")
                        .hash(42),
                )
                .await;
                id.0.to_string()
            }
        }
    }

    /// Of `ids`, those whose result is recorded. A run that ended otherwise stops the bench.
    async fn finished(&self, ids: &[String]) -> Vec<String> {
        match self {
            Self::Prefect { http, api, .. } => {
                let runs = post(
                    http,
                    &format!("{api}/flow_runs/filter"),
                    &json!({"flow_runs": {"id": {"any_": ids},
                                          "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]}}},
                            "limit": 200}),
                )
                .await;
                runs.as_array()
                    .unwrap()
                    .iter()
                    .map(|run| {
                        let id = run["id"].as_str().unwrap().to_owned();
                        let state = run["state"]["type"].as_str().unwrap_or("?");
                        assert!(
                            state == "COMPLETED",
                            "Prefect flow run {id} ended {state}, not Completed: {}",
                            run["state"]["message"]
                        );
                        id
                    })
                    .collect()
            }
            Self::Ours { pool } => {
                let rows: Vec<(String, String, Option<Value>)> = sqlx::query_as(
                    "SELECT id::text, status::text, result FROM v2_job_completed WHERE id::text = ANY($1)",
                )
                .bind(ids)
                .fetch_all(*pool)
                .await
                .unwrap();
                rows.into_iter()
                    .map(|(id, status, result)| {
                        assert!(
                            status == "success",
                            "Windmill job {id} completed with {status}, not success: {result:?}"
                        );
                        id
                    })
                    .collect()
            }
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {text}"))
}

/// Runs submitted `spacing` apart (all at once when zero, concurrently); returns each run's
/// figures once every result is recorded.
async fn measure(
    target: &Target<'_>,
    seen: &Seen,
    runs: usize,
    spacing: Duration,
    label: &str,
) -> Vec<Sample> {
    let mut submitted: Vec<(String, Instant)> = Vec::new();
    if spacing.is_zero() {
        let all = futures::future::join_all((0..runs).map(|_| async {
            let id = target.submit().await;
            (id, Instant::now())
        }))
        .await;
        submitted.extend(all);
    }
    let mut done: HashMap<String, Instant> = HashMap::new();
    let mut next = Instant::now();
    let mut deadline = Instant::now() + RESULT_LIMIT + spacing * runs as u32;
    loop {
        if submitted.len() < runs && Instant::now() >= next {
            let id = target.submit().await;
            submitted.push((id, Instant::now()));
            next += spacing;
            if submitted.len() == runs {
                deadline = Instant::now() + RESULT_LIMIT;
            }
        }
        let pending: Vec<String> = submitted
            .iter()
            .filter(|(id, _)| !done.contains_key(id))
            .map(|(id, _)| id.clone())
            .collect();
        if !pending.is_empty() {
            let now = Instant::now();
            for id in target.finished(&pending).await {
                done.entry(id).or_insert(now);
            }
        }
        if submitted.len() == runs && done.len() == runs {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<&String> = submitted
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !done.contains_key(*id))
                .collect();
            panic!(
                "{label}: {} of {runs} {}s have no result recorded {} s after the last submission: {missing:?} \
                 (logs in $FLEXT_PEERS_DIR/logs)",
                missing.len(),
                target.what(),
                RESULT_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    submitted
        .into_iter()
        .map(|(id, at)| {
            let created = seen.get(&id).unwrap_or_else(|| {
                panic!(
                    "{label}: the result of {} {id} is recorded but the watch never saw its Kubernetes Job",
                    target.what()
                )
            });
            Sample {
                submitted: at,
                created,
                done: done[&id],
            }
        })
        .collect()
}

/// A child process in a process group of its own, stopped (the whole group) when dropped; its
/// pid is listed in `$FLEXT_PEERS_DIR/pids` for `scripts/bench`'s trap in case this process dies.
struct Process {
    child: Child,
    what: String,
}

impl Process {
    fn spawn(mut command: Command, what: &str, dir: &Path, log: &str) -> Self {
        let log = std::fs::File::create(dir.join("logs").join(log)).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut pids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pids"))
            .unwrap();
        writeln!(pids, "{}", child.id()).unwrap();
        Self {
            child,
            what: what.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its log is in $FLEXT_PEERS_DIR/logs",
                self.what
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id().cast_signed());
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        // Prefect's worker takes its time over SIGTERM: 5 s, then SIGKILL.
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of a process and its waited-for children (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<f64> = rest.split(' ').map(|f| f.parse().unwrap_or(0.0)).collect();
    // utime, stime, cutime, cstime are fields 14..17 (1-based) of the whole line.
    let ticks: f64 = fields[11..15].iter().sum();
    // USER_HZ: 100 on Linux for every architecture this runs on.
    ticks / 100.0
}

struct Prefect<'a> {
    http: &'a reqwest::Client,
    deployment: String,
}

impl<'a> Prefect<'a> {
    async fn prepare(setup: &Setup, http: &'a reqwest::Client) -> Self {
        let api = &setup.api;
        // The work pool with the Kubernetes worker's default base job template (the CLI takes it
        // from prefect-kubernetes).
        let out = Command::new(setup.venv.join("bin/prefect"))
            .args([
                "work-pool",
                "create",
                PREFECT_POOL,
                "--type",
                "kubernetes",
                "--overwrite",
            ])
            .env("PREFECT_API_URL", api)
            .env("PREFECT_HOME", setup.dir.join("prefect-home"))
            .output()
            .expect("run `prefect work-pool create`");
        assert!(
            out.status.success(),
            "`prefect work-pool create {PREFECT_POOL} --type kubernetes` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The flow's code where the pod (a host process) finds it: the deployment's pull step
        // changes to that directory, its entrypoint names the function.
        let code = setup.dir.join("flow");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join("flow.py"), FLOW).unwrap();
        let flow = post(http, &format!("{api}/flows/"), &json!({"name": "trivial"})).await;
        let deployment = post(
            http,
            &format!("{api}/deployments/"),
            &json!({
                "name": "peers",
                "flow_id": flow["id"],
                "work_pool_name": PREFECT_POOL,
                "entrypoint": "flow.py:trivial",
                "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": code}}],
            }),
        )
        .await;
        Self {
            http,
            deployment: deployment["id"].as_str().unwrap().to_owned(),
        }
    }

    async fn phase(
        &self,
        setup: &Setup,
        client: &Client,
        seen: &Seen,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Phase {
        let label = format!("Prefect ({name})");
        println!(
            "== {label}: starting `prefect worker start --pool {PREFECT_POOL} --type kubernetes` {extra:?}"
        );
        let worker_name = format!("peers-{name}");
        let mut command = Command::new(setup.venv.join("bin/prefect"));
        command
            .args([
                "worker",
                "start",
                "--pool",
                PREFECT_POOL,
                "--type",
                "kubernetes",
                "--name",
                &worker_name,
            ])
            .env("PREFECT_API_URL", &setup.api)
            .env("PREFECT_HOME", setup.dir.join("prefect-home"));
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut worker = Process::spawn(
            command,
            &format!("Prefect's worker ({name})"),
            &setup.dir,
            &format!("prefect-worker-{name}.log"),
        );
        let registered = Instant::now();
        loop {
            worker.assert_running();
            let workers = post(
                self.http,
                &format!("{}/work_pools/{PREFECT_POOL}/workers/filter", setup.api),
                &json!({}),
            )
            .await;
            if workers
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == worker_name.as_str())
            {
                break;
            }
            assert!(
                registered.elapsed() < START_LIMIT,
                "{label}: Prefect's worker did not register with the server within {} s \
                 (log: $FLEXT_PEERS_DIR/logs/prefect-worker-{name}.log)",
                START_LIMIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let its first poll and its Kubernetes observer settle before counting.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let target = Target::Prefect {
            http: self.http,
            api: &setup.api,
            deployment: &self.deployment,
        };
        // 50 Prefect pods at once take minutes on a busy 2-core machine: the defaults' burst can be
        // left out (the fastest settings' burst always runs), and the table says so.
        let skip_burst = extra.is_empty()
            && std::env::var("FLEXT_PEERS_SKIP_PREFECT_DEFAULTS_BURST").as_deref() == Ok("1");
        let phase = timed_phase(
            setup,
            client,
            seen,
            &target,
            &label,
            PREFECT_SPACING,
            worker.pid(),
            None,
            skip_burst,
        )
        .await;
        worker.assert_running();
        drop(worker);
        // Prefect's Jobs stay (no TTL by default): remove them, uncounted, before the next phase.
        Api::<KubeJob>::namespaced(client.clone(), PREFECT_NAMESPACE)
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(PREFECT_LABEL),
            )
            .await
            .expect("delete Prefect's Jobs");
        Phase {
            side: "Prefect",
            settings: if extra.is_empty() {
                "defaults".into()
            } else {
                // PREFECT_WORKER_QUERY_SECONDS=0.2 → QUERY_SECONDS=0.2
                extra
                    .iter()
                    .map(|(k, v)| format!("{}={v}", k.trim_start_matches("PREFECT_WORKER_")))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            ..phase
        }
    }
}

/// The latency runs, then the burst, with the apiserver's counters around both.
#[allow(clippy::too_many_arguments)]
async fn timed_phase(
    setup: &Setup,
    client: &Client,
    seen: &Seen,
    target: &Target<'_>,
    label: &str,
    spacing: Duration,
    worker_pid: u32,
    own_metrics: Option<u16>,
    skip_burst: bool,
) -> Phase {
    let before = ApiCounts::scrape(client).await;
    let own_before = match own_metrics {
        Some(port) => Some(own_requests(port).await),
        None => None,
    };
    let cpu_before = cpu_seconds(worker_pid);
    let server_before = setup.prefect_server_pid.map(cpu_seconds);
    println!("   {LATENCY_RUNS} runs, {} ms apart", spacing.as_millis());
    let latency = measure(target, seen, LATENCY_RUNS, spacing, label).await;
    let burst = if skip_burst {
        println!(
            "   {BURST_RUNS} runs at once: skipped (FLEXT_PEERS_SKIP_PREFECT_DEFAULTS_BURST=1)"
        );
        Vec::new()
    } else {
        println!("   {BURST_RUNS} runs at once");
        measure(target, seen, BURST_RUNS, Duration::ZERO, label).await
    };
    let first = burst.iter().map(|s| s.submitted).min();
    let last = burst.iter().map(|s| s.done).max();
    // Requests that follow a result (a worker's clean-up) belong to the phase.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ApiCounts::scrape(client).await;
    let own_after = match own_metrics {
        Some(port) => Some(own_requests(port).await),
        None => None,
    };
    let runs = LATENCY_RUNS + burst.len();
    Phase {
        side: "",
        settings: String::new(),
        latency,
        burst,
        burst_seconds: first
            .zip(last)
            .map_or(f64::NAN, |(f, l)| (l - f).as_secs_f64()),
        api: after.minus(&before),
        runs,
        own_requests: own_before
            .zip(own_after)
            .map(|(b, a)| (a - b) / runs as f64),
        worker_cpu: cpu_seconds(worker_pid) - cpu_before,
        server_cpu: setup
            .prefect_server_pid
            .map(cpu_seconds)
            .zip(server_before)
            .map(|(a, b)| a - b),
    }
}

async fn ours(
    setup: &Setup,
    client: &Client,
    seen: &Seen,
    pool: &PgPool,
    db_url: &str,
    name: &str,
    extra: &str,
) -> Phase {
    let label = format!("flext-kubernetes ({name})");
    // Small requests, so that 50 pods fit the bed's 8 GiB node at once (the defaults, 500m and
    // 1Gi, would queue them; Prefect's pods request nothing).
    let config = format!(
        "runtime:\n  type: kubernetes\n  config:\n    windmill: {{ worker_group: peers, tags: [k8s], finalize_tag: flow }}\n    \
         cluster: {{ namespace: {OUR_NAMESPACE} }}\n    resources: {{ default_cpu: 10m, default_memory: 64Mi, default_storage: 1Gi }}\n    \
         job_template: {{ image: flext-kubernetes:dev }}\n{extra}"
    );
    let path = setup.dir.join(format!("ours-{name}.yaml"));
    std::fs::write(&path, &config).unwrap();
    println!(
        "== {label}: starting `flext-kubernetes run --config {}`{}",
        path.display(),
        if extra.is_empty() {
            String::new()
        } else {
            format!(" with\n{}", extra.trim_end())
        }
    );
    let port = common::scrape::free_port();
    let mut command = Command::new(&setup.worker_bin);
    command
        .args(["run", "--config"])
        .arg(&path)
        .env("FLEXT_DATABASE_URL", db_url)
        .env("FLEXT__WORKER__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn");
    let mut worker = Process::spawn(
        command,
        &format!("our worker ({name})"),
        &setup.dir,
        &format!("ours-{name}.log"),
    );
    let started = Instant::now();
    loop {
        worker.assert_running();
        if let Some((200, _)) = common::scrape::try_get(port, "/readyz").await {
            break;
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "{label}: the worker's /readyz did not answer 200 within {} s (log: $FLEXT_PEERS_DIR/logs/ours-{name}.log)",
            START_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = Target::Ours { pool };
    let phase = timed_phase(
        setup,
        client,
        seen,
        &target,
        &label,
        OUR_SPACING,
        worker.pid(),
        Some(port),
        false,
    )
    .await;
    worker.assert_running();
    drop(worker);
    Phase {
        side: "flext-kubernetes",
        settings: if extra.is_empty() {
            "defaults".into()
        } else {
            "poll 20ms, qps 1000".into()
        },
        ..phase
    }
}

async fn own_requests(port: u16) -> f64 {
    let (status, text) = common::scrape::get(port, "/metrics").await;
    assert_eq!(status, 200, "our worker's /metrics answered {status}");
    text.lines()
        .filter(|l| l.starts_with("flext_kube_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `apiserver_request_total` by (verb, resource, subresource), summed over codes and versions.
struct ApiCounts(BTreeMap<(String, String, String), f64>);

struct ApiDelta(BTreeMap<(String, String, String), f64>);

impl ApiCounts {
    async fn scrape(client: &Client) -> Self {
        let text = client
            .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
            .await
            .expect("scrape the apiserver's /metrics");
        let mut counts = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
        {
            let (labels, value) = line.rsplit_once(' ').unwrap();
            let labels = &labels["apiserver_request_total{".len()..labels.len() - 1];
            let label: HashMap<&str, &str> = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            let key = (
                label.get("verb").copied().unwrap_or("").to_owned(),
                label.get("resource").copied().unwrap_or("").to_owned(),
                label.get("subresource").copied().unwrap_or("").to_owned(),
            );
            *counts.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
        assert!(
            !counts.is_empty(),
            "the apiserver's /metrics has no apiserver_request_total"
        );
        Self(counts)
    }

    fn minus(&self, before: &Self) -> ApiDelta {
        ApiDelta(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .filter(|(k, v)| *v > 0.0 && !k.1.is_empty()) // non-resource: our own /metrics scrapes
                .collect(),
        )
    }
}

/// Requests only a worker makes on this bed. The others act on every Job and pod too: the Job
/// controller (creates and patches pods, updates `jobs/status`, events), the garbage collector
/// (deletes a deleted Job's pods, ConfigMaps and Secrets), the node agent (binds pods, updates
/// `pods/status`, reads pods, ConfigMaps and Secrets for volumes, mints service-account tokens);
/// a GET of a pod, ConfigMap or Secret is counted as theirs even when a worker made it.
fn worker_made(verb: &str, resource: &str, subresource: &str) -> bool {
    match (resource, subresource) {
        ("jobs", "") => matches!(
            verb,
            "POST" | "GET" | "LIST" | "WATCH" | "DELETE" | "DELETECOLLECTION"
        ),
        ("pods", "") => matches!(verb, "LIST" | "WATCH"),
        // Following a pod's log is a CONNECT of pods/log (the apiserver proxies it to the node).
        ("pods", "log") => matches!(verb, "GET" | "CONNECT"),
        ("namespaces", "") => verb == "GET",
        ("configmaps" | "secrets", "") => verb == "POST",
        _ => false,
    }
}

impl ApiDelta {
    fn total(&self) -> f64 {
        self.0.values().sum()
    }

    fn by_workers(&self) -> f64 {
        self.0
            .iter()
            .filter(|((v, r, s), _)| worker_made(v, r, s))
            .map(|(_, n)| n)
            .sum()
    }

    fn listing(&self, runs: usize) -> String {
        let mut rows: Vec<_> = self.0.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        rows.iter()
            .map(|((v, r, s), n)| {
                let mark = if worker_made(v, r, s) { "*" } else { "" };
                let res = if s.is_empty() {
                    r.clone()
                } else {
                    format!("{r}/{s}")
                };
                format!("{mark}{v} {res} {:.2}", *n / runs as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

struct Figures {
    created: (Duration, Duration),
    done: (Duration, Duration),
    rate: f64,
}

fn figures(phase: &Phase) -> Figures {
    let mut created: Vec<Duration> = phase
        .latency
        .iter()
        .map(|s| s.created.saturating_duration_since(s.submitted))
        .collect();
    let mut done: Vec<Duration> = phase.latency.iter().map(|s| s.done - s.submitted).collect();
    Figures {
        created: (
            percentile(&mut created, 0.5),
            percentile(&mut created, 0.99),
        ),
        done: (percentile(&mut done, 0.5), percentile(&mut done, 0.99)),
        rate: phase.burst.len() as f64 / phase.burst_seconds,
    }
}

fn print_table(phases: &[Phase], import: Duration) {
    let figs: Vec<Figures> = phases.iter().map(figures).collect();
    let mut out = String::new();
    let w = 21;
    writeln!(out, "\n== Side by side ({LATENCY_RUNS} runs one at a time for latency; {BURST_RUNS} at once for jobs/s)").unwrap();
    write!(out, "{:<44}", "").unwrap();
    for p in phases {
        write!(out, "{:>w$}", p.side).unwrap();
    }
    writeln!(out).unwrap();
    write!(out, "{:<44}", "").unwrap();
    for p in phases {
        write!(out, "{:>w$}", p.settings).unwrap();
    }
    writeln!(out).unwrap();
    let mut row = |name: &str, cell: &dyn Fn(usize) -> String| {
        write!(out, "{name:<44}").unwrap();
        for i in 0..phases.len() {
            write!(out, "{:>w$}", cell(i)).unwrap();
        }
        writeln!(out).unwrap();
    };
    row("submitted → Kubernetes Job created  p50", &|i| {
        show(figs[i].created.0)
    });
    row("submitted → Kubernetes Job created  p99", &|i| {
        show(figs[i].created.1)
    });
    row("submitted → result recorded         p50", &|i| {
        show(figs[i].done.0)
    });
    row("submitted → result recorded         p99", &|i| {
        show(figs[i].done.1)
    });
    row(&format!("runs/s, {BURST_RUNS} at once"), &|i| {
        if figs[i].rate.is_nan() {
            "not run".into()
        } else {
            format!("{:.2}", figs[i].rate)
        }
    });
    row("apiserver requests/run, all clients", &|i| {
        format!("{:.1}", phases[i].api.total() / phases[i].runs as f64)
    });
    row("apiserver requests/run, worker-only kinds", &|i| {
        format!("{:.1}", phases[i].api.by_workers() / phases[i].runs as f64)
    });
    row("  (ours: its own count, all requests)", &|i| {
        phases[i]
            .own_requests
            .map_or("—".into(), |n| format!("{n:.1}"))
    });
    row("worker process CPU s/run", &|i| {
        format!("{:.3}", phases[i].worker_cpu / phases[i].runs as f64)
    });
    row(
        "Prefect server CPU s/run",
        &|i| match (phases[i].side, phases[i].server_cpu) {
            ("Prefect", Some(c)) => format!("{:.3}", c / phases[i].runs as f64),
            _ => "—".into(),
        },
    );

    // Ratios at each side's fastest settings (and at defaults, the design's target).
    let find = |side: &str, settings_default: bool| {
        phases
            .iter()
            .position(|p| p.side == side && (p.settings == "defaults") == settings_default)
            .unwrap()
    };
    writeln!(
        out,
        "\nPrefect ÷ ours (higher: ours is better; jobs/s: ours ÷ Prefect)"
    )
    .unwrap();
    for (what, default) in [("fastest", false), ("defaults", true)] {
        let (p, o) = (
            &figs[find("Prefect", default)],
            &figs[find("flext-kubernetes", default)],
        );
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "  at {what:<8}: Job created p50 {:.0}×, p99 {:.0}×; result recorded p50 {:.1}×, p99 {:.1}×; jobs/s {}",
            ratio(p.created.0, o.created.0),
            ratio(p.created.1, o.created.1),
            ratio(p.done.0, o.done.0),
            ratio(p.done.1, o.done.1),
            if p.rate.is_nan() { "(Prefect's burst not run)".to_owned() } else { format!("{:.1}×", o.rate / p.rate) },
        )
        .unwrap();
    }

    writeln!(
        out,
        "\napiserver requests per run by verb and resource (* = counted as worker-only):"
    )
    .unwrap();
    for p in phases {
        writeln!(
            out,
            "  {} ({}): {}",
            p.side,
            p.settings,
            p.api.listing(p.runs)
        )
        .unwrap();
    }

    writeln!(out, "\nWhat makes the comparison uneven:").unwrap();
    for note in [
        format!(
            "- Prefect's pod starts a Python interpreter and Prefect's client, loads the deployment and runs its pull step \
             before the flow; `python -c 'import prefect'` alone takes {} on this host now (median of 3). Our pod runs a \
             static runner and Bash.",
            show(import)
        ),
        "- Prefect's flow reports Completed from inside the pod, before the pod exits; ours is recorded after the pod \
         terminated, by the hand-back and the stock-worker double (polling every 20 ms) that completes it as a stock \
         Windmill worker would."
            .to_owned(),
        "- Prefect's server (Python, on PostgreSQL), its worker and every Prefect pod share this machine's cores with the \
         bed; our side has no server of its own (Windmill's queue is PostgreSQL itself)."
            .to_owned(),
        "- Our pods request cpu=10m memory=64Mi (so that 50 fit the bed's node at once); Prefect's default template \
         requests nothing. Prefect's pods mount a service-account token (the node agent mints one per pod); ours do not."
            .to_owned(),
        "- Results are polled every 50 ms on both sides; Job creation is seen by a watch (a little after the fact)."
            .to_owned(),
        "- apiserver_request_total has no client label: 'all clients' includes the Job controller's and the node agent's \
         requests for each run's Job and pod; 'worker-only kinds' counts only requests the bed's own components do \
         not make (a worker's GET of a pod is not counted there). Long-running watches are counted when they end."
            .to_owned(),
        "- The phases run one after another on one bed (Prefect first); later runs on a bed drift slower.".to_owned(),
    ] {
        writeln!(out, "{note}").unwrap();
    }
    print!("{out}");
}

/// Median of three `python -c 'import prefect'` in the venv.
fn python_import_time(venv: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let status = Command::new(venv.join("bin/python"))
                .args(["-c", "import prefect"])
                .current_dir("/")
                .status()
                .expect("run the venv's Python");
            assert!(
                status.success(),
                "`python -c 'import prefect'` failed in {}",
                venv.display()
            );
            t.elapsed()
        })
        .collect();
    percentile(&mut times, 0.5)
}

async fn drop_database(name: &str) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&common::admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
