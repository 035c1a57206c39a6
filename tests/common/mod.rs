//! Shared fixtures for tests (and benches) against a real PostgreSQL: a fresh database per test
//! cloned from the Windmill schema fixture, builders that push jobs the way Windmill does, a
//! stock-worker double, and the one way each to start a worker ([`start_worker`]), to wait for a
//! condition ([`eventually`]) and, in [`bed`], to reach the Kubernetes test bed.
#![allow(dead_code, clippy::missing_panics_doc)]

pub mod bed;
pub mod oci;
pub mod scrape;
pub mod stock;
pub mod tools;
pub mod windmill_api;

use std::collections::BTreeMap;
use std::time::Duration;

use flext_kubernetes::config::Config;
use flext_kubernetes::domain::{Job, JobId};
use flext_kubernetes::executor::{Executor, InProcessExecutor};
use flext_kubernetes::logs::LogSink;
use flext_kubernetes::queue::{PgQueue, Queue};
use flext_kubernetes::worker::{Worker, WorkerHandle};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A database of its own for one test, cloned from `flext_template`.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

pub fn admin_url() -> String {
    std::env::var("FLEXT_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "FLEXT_TEST_DATABASE_URL is not set: run the tests with scripts/test (it starts PostgreSQL), \
             or `scripts/pg start && eval \"$(scripts/pg env)\"` first"
        )
    })
}

/// The URL of another database on the same server.
pub fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    format!("{base}/{database}")
}

/// Creates a database named `<prefix><random>` as a clone of `flext_template` (the Windmill
/// schema fixture) on the server of `admin`; returns its name, URL and a pool.
pub async fn clone_template(
    admin: &str,
    prefix: &str,
    connections: u32,
) -> (String, String, PgPool) {
    let name = format!("{prefix}{}", Uuid::new_v4().simple());
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE flext_template"
    )))
    .execute(&pool)
    .await
    .expect("clone flext_template (did scripts/pg start load the fixture?)");
    pool.close().await;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    let url = format!("{base}/{name}");
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .expect("connect to the new database");
    (name, url, pool)
}

impl TestDb {
    pub async fn new() -> Self {
        let (name, url, pool) = clone_template(&admin_url(), "flext_test_", 16).await;
        Self { pool, url, name }
    }

    pub fn queue(&self) -> PgQueue {
        PgQueue::from_pool(self.pool.clone())
    }

    /// Runs SQL as the test's superuser.
    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A worker config for tests: fast ticks, a unique name.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut env: BTreeMap<String, String> = [
        (
            "FLEXT__WORKER__NAME",
            format!("wk-test-{}", &Uuid::new_v4().simple().to_string()[..8]),
        ),
        ("FLEXT__WORKER__POLL_INTERVAL", "20ms".into()),
        ("FLEXT__WORKER__HEARTBEAT_INTERVAL", "200ms".into()),
        ("FLEXT__WORKER__SHUTDOWN_GRACE", "5s".into()),
        ("FLEXT__WORKER__CONCURRENCY", "8".into()),
        ("FLEXT__LOGS__FAST_FLUSH_INTERVAL", "100ms".into()),
        ("FLEXT__WINDMILL__TAGS", "[k8s, k8s-gpu]".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_yaml("", &env).expect("test config")
}

/// What a test handler does with a job.
pub type Behaviour = fn(&Job) -> flext_kubernetes::domain::Outcome;

/// An in-process executor that logs the job's code lines and then applies `behaviour`; it honours
/// cancellation while `sleep` runs.
pub fn executor(behaviour: Behaviour, sleep: Duration) -> Executor {
    Executor::InProcess(InProcessExecutor::new(
        &["python3", "bash", "bun", "deno"],
        std::sync::Arc::new(
            move |job: &Job, cancel: CancellationToken, logs: &LogSink| {
                Box::pin(async move {
                    // Each code line is echoed as output; `\0` and `\xff` stand for raw bytes that
                    // Postgres text cannot hold (NUL) or that are not UTF-8.
                    for line in job.code.as_deref().unwrap_or_default().lines() {
                        let bytes = line.replace("\\0", "\0").into_bytes();
                        let bytes: Vec<u8> = String::from_utf8_lossy(&bytes)
                            .split("\\xff")
                            .map(|part| part.as_bytes().to_vec())
                            .collect::<Vec<_>>()
                            .join(&0xff_u8);
                        logs.line(&bytes);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(sleep) => behaviour(job),
                        () = cancel.cancelled() => flext_kubernetes::domain::Outcome::Canceled,
                    }
                })
            },
        ),
    ))
}

/// Returns `{"sum": x + y}` from args, or fails like a Python `ValueError` when `fail` is true.
pub fn add(job: &Job) -> flext_kubernetes::domain::Outcome {
    use flext_kubernetes::domain::{FailureCategory, JobFailure, Outcome};
    let args = job.args.as_object().cloned().unwrap_or_default();
    if args.get("fail").and_then(Value::as_bool) == Some(true) {
        let mut failure = JobFailure::new(
            FailureCategory::UserError,
            "ValueError",
            "x must be positive",
        );
        failure.stack =
            Some("Traceback (most recent call last):\n  File \"main.py\", line 2".into());
        return Outcome::Failure(failure);
    }
    let x = args.get("x").and_then(Value::as_i64).unwrap_or(0);
    let y = args.get("y").and_then(Value::as_i64).unwrap_or(0);
    Outcome::Success(json!({ "sum": x + y }))
}

/// The one way tests (and benches) start a worker: on Windmill's database behind `pool`, with
/// `config` and `executor`, as `flext-kubernetes run` would.
pub fn start_worker(pool: &PgPool, config: Config, executor: Executor) -> WorkerHandle {
    Worker::new(
        config,
        Queue::Postgres(PgQueue::from_pool(pool.clone())),
        executor,
    )
    .spawn()
}

/// What one look at a condition [`eventually`] waits for found: the value, or not yet.
pub trait Attempt {
    /// What the condition yields once it holds.
    type Value;
    /// The value, or what was seen instead (when the check says) for the timeout message.
    fn settled(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Attempt for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err` carries the state seen, which the timeout message shows.
impl<T> Attempt for Result<T, String> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// Polls `check` until it yields a value (`Some`, or `Ok`), failing the test after `limit` with
/// `what` and, for a check returning `Result`, the last state it saw. Polls often at first (most
/// conditions settle within a second) and then gently, not to load the bed's apiserver.
pub async fn eventually<A, F, Fut>(what: &str, limit: Duration, mut check: F) -> A::Value
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = A>,
{
    let started = tokio::time::Instant::now();
    loop {
        let last = match check().await.settled() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if started.elapsed() >= limit {
            match last {
                Some(last) => {
                    panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
                }
                None => panic!("timed out after {limit:?} waiting for {what}"),
            }
        }
        let pause = if started.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(25)
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Runs `check` again and again for `period` from now, and at least `min_checks` times however
/// long each takes: an invariant that must hold over time is checked for that time, never zero
/// times. Returns how many checks ran.
pub async fn holds_for<F, Fut>(period: Duration, min_checks: u32, mut check: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + period;
    let pause = period / min_checks.max(1);
    let mut checks = 0;
    loop {
        check().await;
        checks += 1;
        if checks >= min_checks && tokio::time::Instant::now() >= deadline {
            return checks;
        }
        tokio::time::sleep(pause).await;
    }
}

/// A job as Windmill pushes it: `WindmillJob::preview("print(1)").tag("k8s").push(&db)`.
#[derive(Debug, Clone)]
pub struct WindmillJob {
    pub id: Uuid,
    pub workspace: String,
    pub kind: &'static str,
    pub tag: String,
    pub language: Option<String>,
    pub code: String,
    pub lock: Option<String>,
    pub path: String,
    pub args: Option<Value>,
    pub timeout: Option<i32>,
    pub priority: Option<i16>,
    pub scheduled_in: Option<Duration>,
    pub same_worker: bool,
    pub canceled_by: Option<String>,
    pub pre_run_error: Option<String>,
    /// The parent job and, for a flow step, its module id (`flow_step_id`); a workflow-as-code
    /// child has a parent and no step id.
    pub parent: Option<(Uuid, Option<String>)>,
    pub runnable_id: Option<i64>,
    /// The script's `envs` (`KEY=VALUE`), for kind `script`.
    pub envs: Vec<String>,
    /// `v2_job.trigger` and `trigger_kind` (`schedule`, `webhook`, ...).
    pub trigger: Option<(String, String)>,
    /// A concurrency limit: how many at once, within how many seconds.
    pub concurrency: Option<(i32, i32)>,
    /// `v2_job.cache_ttl`, in seconds.
    pub cache_ttl: Option<i32>,
    /// The script's `restart_unless_cancelled` (a perpetual script).
    pub perpetual: bool,
    /// `v2_job.preprocessed`.
    pub preprocessed: Option<bool>,
    /// Debouncing: the delay in seconds, the argument to accumulate, the debounce batch.
    pub debounce: Option<(i32, Option<String>, i64)>,
}

impl WindmillJob {
    fn base(kind: &'static str, code: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            workspace: "demo".into(),
            kind,
            tag: "k8s".into(),
            language: Some("python3".into()),
            code: code.into(),
            lock: None,
            path: "u/alice/script".into(),
            args: Some(json!({})),
            timeout: None,
            priority: None,
            scheduled_in: None,
            same_worker: false,
            canceled_by: None,
            pre_run_error: None,
            parent: None,
            runnable_id: None,
            envs: Vec::new(),
            trigger: None,
            concurrency: None,
            cache_ttl: None,
            perpetual: false,
            preprocessed: None,
            debounce: None,
        }
    }

    /// A deployed script (a `script` row, the job points at it by hash).
    pub fn script(path: &str, code: &str) -> Self {
        Self {
            path: path.into(),
            ..Self::base("script", code)
        }
    }

    /// A preview: code in `v2_job.raw_code`.
    pub fn preview(code: &str) -> Self {
        Self::base("preview", code)
    }

    /// A job of any other kind (`flow`, `identity`, `dependencies`, `appscript`, ...).
    pub fn kind(kind: &'static str) -> Self {
        Self::base(kind, "")
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }
    pub fn lang(mut self, language: &str) -> Self {
        self.language = Some(language.into());
        self
    }
    pub fn args(mut self, args: Value) -> Self {
        self.args = Some(args);
        self
    }
    pub fn raw_args(mut self, args: Option<Value>) -> Self {
        self.args = args;
        self
    }
    pub fn timeout(mut self, seconds: i32) -> Self {
        self.timeout = Some(seconds);
        self
    }
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }
    pub fn scheduled_in(mut self, delay: Duration) -> Self {
        self.scheduled_in = Some(delay);
        self
    }
    pub fn same_worker(mut self) -> Self {
        self.same_worker = true;
        self
    }
    pub fn canceled_by(mut self, who: &str) -> Self {
        self.canceled_by = Some(who.into());
        self
    }
    /// The script's environment variables (`KEY=VALUE`), as its settings store them.
    pub fn envs(mut self, envs: &[&str]) -> Self {
        self.envs = envs.iter().map(|e| (*e).to_owned()).collect();
        self
    }
    /// Pushed by a schedule, as Windmill's `push_scheduled_job` does (`trigger` = the
    /// schedule's path, `trigger_kind` = `schedule`).
    pub fn scheduled_by(mut self, schedule: &str) -> Self {
        self.trigger = Some((schedule.into(), "schedule".into()));
        self
    }
    /// At most `limit` jobs of this script at once (and within `window_s` seconds of each other),
    /// as a script's concurrency settings ask.
    pub fn concurrency_limit(mut self, limit: i32, window_s: i32) -> Self {
        self.concurrency = Some((limit, window_s));
        self
    }
    /// Debounced by `delay_s`, accumulating `arg` (if any) over debounce batch `batch`.
    pub fn debounced(mut self, delay_s: i32, arg: Option<&str>, batch: i64) -> Self {
        self.debounce = Some((delay_s, arg.map(str::to_owned), batch));
        self
    }
    /// Pushed to run its `preprocessor` first, as Windmill's push does for a webhook, route or
    /// Kafka trigger (`apply_preprocessor`: `v2_job.preprocessed = false`).
    pub fn through_preprocessor(mut self) -> Self {
        self.preprocessed = Some(false);
        self
    }
    /// A perpetual script: Windmill restarts it after each run until it is canceled.
    pub fn perpetual(mut self) -> Self {
        self.perpetual = true;
        self
    }
    /// Results kept in Windmill's cache for `seconds` (the script's `cache_ttl`).
    pub fn cache_ttl(mut self, seconds: i32) -> Self {
        self.cache_ttl = Some(seconds);
        self
    }
    /// The deployed script's hash (`v2_job.runnable_id`), to run one script several times.
    pub fn hash(mut self, hash: i64) -> Self {
        self.runnable_id = Some(hash);
        self
    }
    /// A child of a workflow-as-code job (Windmill's push: `parent_job`, `root_job`, no step id).
    pub fn child_of(mut self, parent: JobId) -> Self {
        self.parent = Some((parent.0, None));
        self
    }
    pub fn pre_run_error(mut self, message: &str) -> Self {
        self.pre_run_error = Some(message.into());
        self
    }

    pub async fn push(self, db: &TestDb) -> JobId {
        push(&db.pool, self).await
    }
}

/// Inserts the rows Windmill writes when it queues a job.
pub async fn push(pool: &PgPool, job: WindmillJob) -> JobId {
    let mut tx = pool.begin().await.unwrap();
    let mut runnable_id = job.runnable_id;
    if job.kind == "script" {
        // The same script deployed once, run many times: a given hash names one `script` row.
        let hash: i64 = job.runnable_id.unwrap_or_else(rand_hash);
        sqlx::query(
            "INSERT INTO script (workspace_id, hash, path, content, lock, language, created_by, envs,
                                 restart_unless_cancelled)
             VALUES ($1, $2, $3, $4, $5, $6::script_lang, 'alice', $7, $8)
             ON CONFLICT (workspace_id, hash) DO NOTHING",
        )
        .bind(&job.workspace)
        .bind(hash)
        .bind(&job.path)
        .bind(&job.code)
        .bind(&job.lock)
        .bind(job.language.as_deref().unwrap_or("python3"))
        .bind(&job.envs)
        .bind(job.perpetual)
        .execute(&mut *tx)
        .await
        .unwrap();
        runnable_id = Some(hash);
    }
    let raw_code = (job.kind == "preview").then_some(job.code.clone());
    // As Windmill's `push` (windmill-queue `jobs.rs`): a flow step carries `parent_job`,
    // `root_job` and `flow_step_id`; `v2_job.flow_step` is not in push's column list (the step's
    // index lives in the parent's `flow_status->'step'`).
    let (parent, root, step_id) = match &job.parent {
        Some((p, sid)) => (Some(*p), Some(*p), sid.clone()),
        None => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO v2_job (id, workspace_id, kind, tag, script_lang, raw_code, raw_lock, runnable_id,
                             runnable_path, args, timeout, priority, same_worker, created_by,
                             permissioned_as, permissioned_as_email, parent_job, root_job,
                             flow_step_id, pre_run_error, trigger, trigger_kind, cache_ttl, preprocessed)
         VALUES ($1, $2, $3::job_kind, $4, $5::script_lang, $6, $7, $8, $9, $10, $11, $12, $13, 'alice',
                 'u/alice', 'alice@example.com', $14, $15, $16, $17, $18, $19::job_trigger_kind, $20, $21)",
    )
    .bind(job.id)
    .bind(&job.workspace)
    .bind(job.kind)
    .bind(&job.tag)
    .bind(&job.language)
    .bind(&raw_code)
    .bind(&job.lock)
    .bind(runnable_id)
    .bind(&job.path)
    .bind(&job.args)
    .bind(job.timeout)
    .bind(job.priority)
    .bind(job.same_worker)
    .bind(parent)
    .bind(root)
    .bind(step_id)
    .bind(&job.pre_run_error)
    .bind(job.trigger.as_ref().map(|t| t.0.as_str()))
    .bind(job.trigger.as_ref().map(|t| t.1.as_str()))
    .bind(job.cache_ttl)
    .bind(job.preprocessed)
    .execute(&mut *tx)
    .await
    .unwrap();
    let settings = push_settings(&mut tx, &job).await;
    let delay_ms = job.scheduled_in.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    sqlx::query(
        "INSERT INTO v2_job_queue (id, workspace_id, scheduled_for, tag, priority, canceled_by, canceled_reason,
                                   runnable_settings_handle)
         VALUES ($1, $2, now() + make_interval(secs => $3 / 1000.0), $4, $5, $6, $7, $8)",
    )
    .bind(job.id)
    .bind(&job.workspace)
    .bind(delay_ms)
    .bind(&job.tag)
    .bind(job.priority)
    .bind(&job.canceled_by)
    .bind(job.canceled_by.as_ref().map(|_| "canceled before it started"))
    .bind(settings)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO v2_job_runtime (id) VALUES ($1)")
        .bind(job.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    JobId(job.id)
}

/// The runnable settings Windmill's push writes for a job with a concurrency limit or
/// debouncing (windmill-queue `jobs.rs`, `push_inner` and `insert_concurrency_key`;
/// windmill-common `runnable_settings.rs`, `insert_rs`): the settings rows behind the handle it
/// returns (`v2_job.concurrent_limit` stays NULL); for a limit, the job's key row and the key's
/// counter row if missing (the key is Windmill's default, `<workspace>/script/<path>`); for
/// debouncing, the job's `debounce_key` row and its batch. Windmill's push side of debouncing is
/// Enterprise code we cannot read (`maybe_debounce`): the key's text here is ours; the worker
/// only deletes the row by `job_id`, as Windmill's public `maybe_apply_debouncing` does.
async fn push_settings(tx: &mut sqlx::PgConnection, job: &WindmillJob) -> Option<i64> {
    if job.concurrency.is_none() && job.debounce.is_none() {
        return None;
    }
    let key = format!("{}/script/{}", job.workspace, job.path);
    let concurrency = match job.concurrency {
        Some((limit, window_s)) => {
            let hash = rand_hash();
            sqlx::query(
                "INSERT INTO concurrency_settings (hash, concurrency_key, concurrent_limit, concurrency_time_window_s)
                 VALUES ($1, NULL, $2, $3)",
            )
            .bind(hash)
            .bind(limit)
            .bind(window_s)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO concurrency_counter (concurrency_id, job_uuids) VALUES ($1, '{}'::jsonb)
                 ON CONFLICT (concurrency_id) DO NOTHING",
            )
            .bind(&key)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("INSERT INTO concurrency_key (key, job_id) VALUES ($1, $2)")
                .bind(&key)
                .bind(job.id)
                .execute(&mut *tx)
                .await
                .unwrap();
            Some(hash)
        }
        None => None,
    };
    let debouncing = match &job.debounce {
        Some((delay_s, accumulate, batch)) => {
            let hash = rand_hash();
            sqlx::query(
                "INSERT INTO debouncing_settings (hash, debounce_delay_s, debounce_args_to_accumulate)
                 VALUES ($1, $2, $3)",
            )
            .bind(hash)
            .bind(delay_s)
            .bind(accumulate.as_ref().map(|a| vec![a.clone()]))
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("INSERT INTO debounce_key (key, job_id) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET job_id = EXCLUDED.job_id")
                .bind(format!("debounce:{key}"))
                .bind(job.id)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO v2_job_debounce_batch (id, debounce_batch) VALUES ($1, $2)")
                .bind(job.id)
                .bind(batch)
                .execute(&mut *tx)
                .await
                .unwrap();
            Some(hash)
        }
        None => None,
    };
    let handle = rand_hash();
    sqlx::query(
        "INSERT INTO runnable_settings (hash, concurrency_settings, debouncing_settings) VALUES ($1, $2, $3)",
    )
    .bind(handle)
    .bind(concurrency)
    .bind(debouncing)
    .execute(&mut *tx)
    .await
    .unwrap();
    Some(handle)
}

fn rand_hash() -> i64 {
    let bytes = Uuid::new_v4().into_bytes();
    i64::from_le_bytes(bytes[..8].try_into().unwrap()).abs()
}

/// A linear flow of inline steps, pushed the way Windmill queues a flow: the flow job (tag `flow`)
/// with its `flow_status`, each step's code in `flow_node`. A stock worker starts it.
pub struct Flow {
    pub id: Uuid,
    pub steps: Vec<FlowStep>,
    pub args: Value,
}

/// One inline step of a [`Flow`].
pub struct FlowStep {
    pub id: String,
    pub language: String,
    pub code: String,
    pub tag: String,
    /// Windmill's `retry.constant.attempts`.
    pub retries: u32,
}

impl Flow {
    pub fn new(args: Value) -> Self {
        Self {
            id: Uuid::new_v4(),
            steps: Vec::new(),
            args,
        }
    }

    /// Adds a step: id, language, code, tag.
    pub fn step(mut self, id: &str, language: &str, code: &str, tag: &str) -> Self {
        self.steps.push(FlowStep {
            id: id.into(),
            language: language.into(),
            code: code.into(),
            tag: tag.into(),
            retries: 0,
        });
        self
    }

    /// Lets the last step be retried this many times when it fails.
    pub fn retries(mut self, attempts: u32) -> Self {
        if let Some(step) = self.steps.last_mut() {
            step.retries = attempts;
        }
        self
    }

    pub async fn push(self, db: &TestDb) -> JobId {
        self.push_to(&db.pool).await
    }

    pub async fn push_to(self, pool: &PgPool) -> JobId {
        let mut modules = Vec::new();
        let mut statuses = Vec::new();
        for step in &self.steps {
            let node_id: i64 = sqlx::query("INSERT INTO flow_node (workspace_id, path, code) VALUES ('demo', 'f/demo/flow', $1) RETURNING id")
                .bind(&step.code)
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
            modules.push(json!({
                "id": step.id,
                "value": {"type": "flowscript", "id": node_id, "language": step.language, "tag": step.tag},
                "retry": {"constant": {"attempts": step.retries, "seconds": 0}},
            }));
            statuses.push(json!({"id": step.id, "type": "WaitingForExecutor"}));
        }
        let raw_flow = json!({ "modules": modules });
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO v2_job (id, workspace_id, kind, tag, script_lang, raw_flow, runnable_path, args, created_by,
                                 permissioned_as, permissioned_as_email)
             VALUES ($1, 'demo', 'flow', 'flow', NULL, $2, 'f/demo/flow', $3, 'alice', 'u/alice', 'alice@example.com')",
        )
        .bind(self.id)
        .bind(&raw_flow)
        .bind(&self.args)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO v2_job_queue (id, workspace_id, scheduled_for, tag) VALUES ($1, 'demo', now(), 'flow')")
            .bind(self.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO v2_job_runtime (id) VALUES ($1)")
            .bind(self.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO v2_job_status (id, flow_status) VALUES ($1, $2)")
            .bind(self.id)
            .bind(json!({"step": 0, "modules": statuses, "failure_module": {"type": "WaitingForPriorSteps", "id": "failure"}}))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        JobId(self.id)
    }
}

/// A row of `v2_job_completed`, as a test inspects it.
#[derive(Debug, Clone)]
pub struct Completed {
    pub status: String,
    pub result: Option<Value>,
    pub duration_ms: i64,
    pub memory_peak: Option<i32>,
    pub worker: Option<String>,
    pub canceled_by: Option<String>,
}

/// Waits up to `limit` for the job to complete in Windmill through our hand-back (the stock
/// double's completion of a job we handed back, not one it ran itself).
pub async fn handed_back(db: &TestDb, id: JobId, limit: Duration) -> Completed {
    eventually("the job to complete in Windmill", limit, || async {
        completed(db, id)
            .await
            .filter(|c| c.worker.as_deref() != Some("wk-default-stock"))
    })
    .await
}

pub async fn completed(db: &TestDb, id: JobId) -> Option<Completed> {
    let row = sqlx::query(
        "SELECT status::text AS status, result, duration_ms, memory_peak, worker, canceled_by FROM v2_job_completed WHERE id = $1",
    )
    .bind(id.0)
    .fetch_optional(&db.pool)
    .await
    .unwrap()?;
    Some(Completed {
        status: row.get("status"),
        result: row.get("result"),
        duration_ms: row.get("duration_ms"),
        memory_peak: row.get("memory_peak"),
        worker: row.get("worker"),
        canceled_by: row.get("canceled_by"),
    })
}

/// `v2_job.kind` and `args` of a job now.
pub async fn job_row(db: &TestDb, id: JobId) -> (String, Option<Value>, Option<String>) {
    let row =
        sqlx::query("SELECT kind::text AS kind, args, pre_run_error FROM v2_job WHERE id = $1")
            .bind(id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    (row.get("kind"), row.get("args"), row.get("pre_run_error"))
}

/// The queue row: `running`, `worker`, `tag`, `canceled_by`.
pub async fn queue_row(
    db: &TestDb,
    id: JobId,
) -> Option<(bool, Option<String>, String, Option<String>)> {
    sqlx::query("SELECT running, worker, tag, canceled_by FROM v2_job_queue WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|r| {
            (
                r.get("running"),
                r.get("worker"),
                r.get("tag"),
                r.get("canceled_by"),
            )
        })
}

pub async fn logs(db: &TestDb, id: JobId) -> String {
    sqlx::query_scalar::<_, Option<String>>("SELECT logs FROM job_logs WHERE job_id = $1")
        .bind(id.0)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
        .unwrap_or_default()
}

/// Cancels a queued or running job as Windmill does for a running one: sets `canceled_by`.
pub async fn cancel(db: &TestDb, id: JobId, by: &str) {
    sqlx::query("UPDATE v2_job_queue SET canceled_by = $2, canceled_reason = 'canceled by the test' WHERE id = $1")
        .bind(id.0)
        .bind(by)
        .execute(&db.pool)
        .await
        .unwrap();
}
