//! Configuration: YAML (a superset of the FlexCore runtime schema), environment overrides, and
//! secrets that are read from the environment or files and never printed.
//!
//! Precedence, lowest to highest: built-in defaults → the YAML file → `FLEXT__SECTION__KEY`
//! environment variables (a path below `runtime.config`, each value parsed as YAML) → the secret
//! variables `FLEXT_DATABASE_URL`, `FLEXT_WINDMILL_URL`, `FLEXT_WINDMILL_TOKEN` (or their
//! `*_FILE` forms).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value as Yaml;

/// A result whose error is a configuration [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a field has the wrong shape.
    #[error("invalid config at `{field}`: {message}")]
    Parse {
        /// Dotted path of the field (`runtime.config.worker.concurrency`).
        field: String,
        /// What the parser said.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("invalid config at `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Why, and what to do.
        message: String,
    },
    /// A required setting is missing.
    #[error("missing setting: {0}")]
    Missing(String),
}

impl Error {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A secret value: never shown by `Debug`, `Display` or serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is handed to a client.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The database URL with its password replaced, for messages.
#[must_use]
pub fn redact_url(url: &str) -> String {
    // scheme://user:password@host/db?params
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters may carry a password too (`?password=`): drop them.
    let tail = tail.split('?').next().unwrap_or_default();
    format!("{scheme}://{authority}{tail}")
}

/// Serde for a type written as one YAML scalar (string or number) parsed with `FromStr`, and
/// shown with `Display`.
macro_rules! scalar_serde {
    ($kind:ty, $example:literal) => {
        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = match Yaml::deserialize(d)? {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            concat!("expected a ", $example, ", got {:?}"),
                            other
                        )));
                    }
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $kind {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A duration written as `500ms`, `5s`, `2m`, `1h`, `7d` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("`{s}` is not a duration; write it like 500ms, 5s, 2m, 1h or 7d")
        })?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use ms, s, m, h or d"
                ));
            }
        };
        if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&seconds) {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Self(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(86_400_000) && ms > 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

scalar_serde!(HumanDuration, "duration like 5s");

/// A size in bytes written as `8MiB`, `512KiB`, `1GiB`, `8Mi` or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write it like 512KiB, 8MiB or 1GiB"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "Ki" | "KiB" | "K" | "KB" => 1 << 10,
            "Mi" | "MiB" | "M" | "MB" => 1 << 20,
            "Gi" | "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use KiB, MiB or GiB"
                ));
            }
        };
        value
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

scalar_serde!(ByteSize, "size like 8MiB");

/// The whole configuration, as used at run time.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Everything under `runtime.config` in the file.
    pub settings: Settings,
    /// `FLEXT_DATABASE_URL`: Windmill's Postgres.
    pub database_url: Option<Secret>,
    /// `FLEXT_WINDMILL_URL`: Windmill's HTTP API, for job tokens and `$var:`/`$res:` args.
    pub windmill_url: Option<String>,
    /// `FLEXT_WINDMILL_TOKEN`: a superadmin token for Windmill's API.
    pub windmill_token: Option<Secret>,
}

/// The settings a file (and env overrides) can give: `runtime.config` of the FlexCore schema.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The Windmill side: worker group, tags, finalize tag, timeouts.
    pub windmill: WindmillSettings,
    /// Which cluster to run jobs in.
    pub cluster: ClusterSettings,
    /// Default pod resources.
    pub resources: ResourceSettings,
    /// The Job template.
    pub job_template: JobTemplateSettings,
    /// Per-tag profiles (`k8s-gpu: {gpu: 1, node_selector: {pool: gpu}}`): hints for every job
    /// of that tag (`docs/hints.md`).
    pub profiles: BTreeMap<String, crate::hints::HintSet>,
    /// Admin limits on hints: maxima, allow-lists, protected labels (`docs/hints.md`).
    pub limits: crate::hints::Limits,
    /// The worker process: concurrency, polling, heartbeats, shutdown.
    pub worker: WorkerSettings,
    /// Job log batching and caps.
    pub logs: LogSettings,
    /// Database pool.
    pub database: DatabaseSettings,
    /// Which executor runs claimed jobs.
    pub executor: ExecutorSettings,
    /// Process logs.
    pub telemetry: TelemetrySettings,
}

/// `windmill:` — how we appear to and talk with Windmill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindmillSettings {
    /// Shown on Windmill's Workers page.
    pub worker_group: String,
    /// The tags this worker claims.
    pub tags: Vec<String>,
    /// A tag served by stock Windmill workers; our hand-back re-queues finished jobs on it.
    pub finalize_tag: String,
    /// Timeout for jobs without their own (`job_default_timeout` of the instance).
    pub default_timeout: HumanDuration,
    /// Upper bound of any job's timeout (the instance maximum).
    pub max_timeout: HumanDuration,
}

impl Default for WindmillSettings {
    fn default() -> Self {
        Self {
            worker_group: "k8s".into(),
            tags: vec!["k8s".into()],
            finalize_tag: "flow".into(),
            default_timeout: HumanDuration(Duration::from_secs(900)),
            max_timeout: HumanDuration(Duration::from_secs(7 * 86400)),
        }
    }
}

/// `cluster:` — the Kubernetes cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Path of a kubeconfig; else `KUBECONFIG`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    pub context: Option<String>,
    /// Namespace the Jobs go to.
    pub namespace: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: "flext-runtime".into(),
        }
    }
}

/// `resources:` — default pod resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSettings {
    /// CPU request (`500m`).
    pub default_cpu: String,
    /// Memory request and limit (`1Gi`).
    pub default_memory: String,
    /// Ephemeral storage (`10Gi`).
    pub default_storage: String,
    /// The extended resource that counts GPUs (`gpu=1` requests one of these).
    pub gpu_resource: String,
}

impl Default for ResourceSettings {
    fn default() -> Self {
        Self {
            default_cpu: "500m".into(),
            default_memory: "1Gi".into(),
            default_storage: "10Gi".into(),
            gpu_resource: "nvidia.com/gpu".into(),
        }
    }
}

/// `job_template:` — the Kubernetes Job shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobTemplateSettings {
    /// The worker image, which also provides the in-pod runner.
    pub image: String,
    /// Pod restart policy.
    pub restart_policy: String,
    /// Kubernetes-side retries (we own retries: keep 0).
    pub backoff_limit: i32,
    /// Default system-retry budget: new attempts when a pod is lost before user code started
    /// (the `retries` hint overrides it).
    pub system_retries: u32,
}

impl Default for JobTemplateSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/flext/flext-kubernetes:latest".into(),
            restart_policy: "Never".into(),
            backoff_limit: 0,
            system_retries: 3,
        }
    }
}

/// `worker:` — the worker process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Unique name of this worker process in Windmill (`worker_ping.worker`, `v2_job_queue.worker`).
    /// Default: `wk-<worker_group>-<hostname>`.
    pub name: Option<String>,
    /// Jobs run at once; a job is claimed only when one of these permits is free.
    pub concurrency: usize,
    /// How long to wait before polling an empty queue again.
    pub poll_interval: HumanDuration,
    /// How often the batched heartbeat refreshes `ping` for every running job.
    pub heartbeat_interval: HumanDuration,
    /// How long SIGTERM waits for running jobs before leaving them to the next worker.
    pub shutdown_grace: HumanDuration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            name: None,
            concurrency: 64,
            poll_interval: HumanDuration(Duration::from_millis(100)),
            heartbeat_interval: HumanDuration(Duration::from_secs(5)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// `logs:` — how job output reaches `job_logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Flush period while a job is young, so the UI shows output at once.
    pub fast_flush_interval: HumanDuration,
    /// How long a job counts as young.
    pub fast_period: HumanDuration,
    /// Flush period afterwards.
    pub slow_flush_interval: HumanDuration,
    /// Cap on the log of one job; past it a truncation line is written and output is dropped.
    pub max_bytes: ByteSize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            fast_flush_interval: HumanDuration(Duration::from_millis(500)),
            fast_period: HumanDuration(Duration::from_secs(30)),
            slow_flush_interval: HumanDuration(Duration::from_secs(2)),
            max_bytes: ByteSize(16 << 20),
        }
    }
}

/// `database:` — the connection pool to Windmill's Postgres.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: HumanDuration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// Which executor runs claimed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Kubernetes Jobs (the product).
    #[default]
    Kubernetes,
    /// In-process echo: every job succeeds with `{"args": <its args>}`. For exercising the queue
    /// path (benchmarks, smoke tests of a Windmill setup) without a cluster.
    Echo,
}

/// `executor:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    /// `kubernetes` (default) or `echo`.
    #[serde(rename = "type")]
    pub kind: ExecutorKind,
    /// The main container's image per language, unless a script's `image=` hint names one.
    pub images: BTreeMap<String, String>,
    /// Largest result a job may return; larger ones fail with a message naming this limit.
    pub max_result_bytes: ByteSize,
    /// How long an image may fail to pull (`ErrImagePull`, `ImagePullBackOff`) before the job
    /// fails.
    pub image_pull_grace: HumanDuration,
    /// How long a pod may stay unschedulable (waiting for capacity) before the job fails.
    pub pending_budget: HumanDuration,
    /// `ttlSecondsAfterFinished` of the Jobs: a backstop, the worker deletes them itself.
    pub ttl_after_finished: HumanDuration,
    /// Kubernetes API requests per second, on average.
    pub api_qps: u32,
    /// Kubernetes API requests allowed in a burst.
    pub api_burst: u32,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::default(),
            images: BTreeMap::from([
                ("python3".to_owned(), "python:3.12-slim".to_owned()),
                ("bash".to_owned(), "bash:5.2".to_owned()),
                ("bun".to_owned(), "oven/bun:1".to_owned()),
                ("nativets".to_owned(), "oven/bun:1".to_owned()),
                ("deno".to_owned(), "denoland/deno:2.1.4".to_owned()),
            ]),
            max_result_bytes: ByteSize(64 << 20),
            image_pull_grace: HumanDuration(Duration::from_secs(60)),
            pending_budget: HumanDuration(Duration::from_secs(15 * 60)),
            ttl_after_finished: HumanDuration(Duration::from_secs(3600)),
            api_qps: 50,
            api_burst: 100,
        }
    }
}

/// Process log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `telemetry:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `flext_kubernetes=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Where configuration comes from besides the file: the process environment, or a fixed map in
/// tests.
pub trait Env {
    /// The value of a variable.
    fn var(&self, name: &str) -> Option<String>;
    /// All variables whose name starts with `prefix`, sorted by name.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Prefix of the variables that override settings: `FLEXT__WORKER__CONCURRENCY=8`.
pub const OVERRIDE_PREFIX: &str = "FLEXT__";

impl Config {
    /// Loads a file (or nothing: defaults) and applies the environment.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_yaml(&text, env)
    }

    /// Parses YAML text and applies the environment.
    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Self> {
        let document: Yaml = if text.trim().is_empty() {
            Yaml::Mapping(serde_yaml_ng::Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| Error::Parse {
                field: "(document)".into(),
                message: e.to_string(),
            })?
        };
        let (mut tree, prefix) = unwrap_runtime(document)?;
        for (name, value) in env.vars_with_prefix(OVERRIDE_PREFIX) {
            apply_override(&mut tree, &name, &value)?;
        }
        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                prefix.clone()
            } else {
                format!("{prefix}.{path}")
            };
            Error::Parse {
                field,
                message: e.into_inner().to_string(),
            }
        })?;
        let config = Self {
            settings,
            database_url: secret_from_env(env, "FLEXT_DATABASE_URL")?,
            windmill_url: env.var("FLEXT_WINDMILL_URL"),
            windmill_token: secret_from_env(env, "FLEXT_WINDMILL_TOKEN")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<()> {
        let s = &self.settings;
        let w = &s.windmill;
        if w.tags.is_empty() {
            return Err(Error::invalid(
                "runtime.config.windmill.tags",
                "no tags: list the tags this worker claims, e.g. [k8s]",
            ));
        }
        for tag in &w.tags {
            if tag.is_empty() || tag.len() > 50 {
                return Err(Error::invalid(
                    "runtime.config.windmill.tags",
                    format!("tag `{tag}` must be 1 to 50 characters (v2_job.tag is varchar(50))"),
                ));
            }
        }
        if w.tags.contains(&w.finalize_tag) {
            return Err(Error::invalid(
                "runtime.config.windmill.finalize_tag",
                format!(
                    "`{}` is also one of our tags: finished jobs would come back to us instead of a stock Windmill worker; \
                     use a tag that Windmill's own workers serve (default `flow`)",
                    w.finalize_tag
                ),
            ));
        }
        if w.worker_group.is_empty() {
            return Err(Error::invalid(
                "runtime.config.windmill.worker_group",
                "must not be empty",
            ));
        }
        if w.default_timeout > w.max_timeout {
            return Err(Error::invalid(
                "runtime.config.windmill.default_timeout",
                format!(
                    "{} exceeds max_timeout {}",
                    w.default_timeout, w.max_timeout
                ),
            ));
        }
        let wk = &s.worker;
        if wk.concurrency == 0 {
            return Err(Error::invalid(
                "runtime.config.worker.concurrency",
                "must be at least 1",
            ));
        }
        if wk.heartbeat_interval.0.is_zero() || wk.heartbeat_interval.0 > Duration::from_secs(30) {
            return Err(Error::invalid(
                "runtime.config.worker.heartbeat_interval",
                format!(
                    "{} is outside 1ms..30s: Windmill re-queues a job whose ping is older than 60 s",
                    wk.heartbeat_interval
                ),
            ));
        }
        if wk.poll_interval.0.is_zero() {
            return Err(Error::invalid(
                "runtime.config.worker.poll_interval",
                "must be greater than 0",
            ));
        }
        if let Some(name) = &wk.name
            && (name.is_empty() || name.len() > 255)
        {
            return Err(Error::invalid(
                "runtime.config.worker.name",
                "must be 1 to 255 characters",
            ));
        }
        if s.logs.max_bytes.0 < 1024 {
            return Err(Error::invalid(
                "runtime.config.logs.max_bytes",
                "must be at least 1KiB",
            ));
        }
        if s.logs.fast_flush_interval.0.is_zero() || s.logs.slow_flush_interval.0.is_zero() {
            return Err(Error::invalid(
                "runtime.config.logs",
                "flush intervals must be greater than 0",
            ));
        }
        crate::hints::validate_settings(s)
            .map_err(|p| Error::invalid(&format!("runtime.config.{}", p.field), p.message))?;
        if s.database.max_connections < 2 {
            return Err(Error::invalid(
                "runtime.config.database.max_connections",
                "must be at least 2 (claims and heartbeats run side by side)",
            ));
        }
        if let Some(url) = &self.windmill_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::invalid(
                "FLEXT_WINDMILL_URL",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        Ok(())
    }

    /// The database URL, or an error that says how to give one.
    pub fn require_database_url(&self) -> Result<&Secret> {
        self.database_url.as_ref().ok_or_else(|| {
            Error::Missing("FLEXT_DATABASE_URL (or FLEXT_DATABASE_URL_FILE): the URL of Windmill's Postgres, e.g. postgres://windmill@db:5432/windmill".into())
        })
    }

    /// This worker's name in Windmill.
    #[must_use]
    pub fn worker_name(&self) -> String {
        self.settings
            .worker
            .name
            .clone()
            .unwrap_or_else(|| format!("wk-{}-{}", self.settings.windmill.worker_group, hostname()))
    }

    /// The effective settings as YAML, secrets redacted: what `check` prints.
    #[must_use]
    pub fn to_redacted_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            runtime: Runtime<'a>,
            secrets: Secrets,
        }
        #[derive(Serialize)]
        struct Runtime<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            config: &'a Settings,
        }
        #[derive(Serialize)]
        struct Secrets {
            database_url: Option<String>,
            windmill_url: Option<String>,
            windmill_token: Option<&'static str>,
        }
        let shown = Shown {
            runtime: Runtime {
                kind: "kubernetes",
                config: &self.settings,
            },
            secrets: Secrets {
                database_url: self.database_url.as_ref().map(|u| redact_url(u.expose())),
                windmill_url: self.windmill_url.clone(),
                windmill_token: self.windmill_token.as_ref().map(|_| "<redacted>"),
            },
        };
        serde_yaml_ng::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// Accepts either the FlexCore wrapper (`runtime: {type: kubernetes, config: {...}}`) or the bare
/// `config` mapping. Returns the mapping and its dotted path for messages.
fn unwrap_runtime(document: Yaml) -> Result<(Yaml, String)> {
    let Yaml::Mapping(mut top) = document else {
        return Err(Error::Parse {
            field: "(document)".into(),
            message: "the config must be a YAML mapping".into(),
        });
    };
    let Some(runtime) = top.remove("runtime") else {
        return Ok((Yaml::Mapping(top), "runtime.config".into()));
    };
    if let Some((key, _)) = top.into_iter().next() {
        return Err(Error::invalid(
            &yaml_key(&key),
            "unknown top-level key; everything goes under `runtime:`",
        ));
    }
    let Yaml::Mapping(mut runtime) = runtime else {
        return Err(Error::invalid(
            "runtime",
            "must be a mapping with `type` and `config`",
        ));
    };
    match runtime.remove("type") {
        Some(Yaml::String(t)) if t == "kubernetes" => {}
        Some(other) => {
            return Err(Error::invalid(
                "runtime.type",
                format!("is {other:?}; this runtime is `kubernetes`"),
            ));
        }
        None => {
            return Err(Error::invalid(
                "runtime.type",
                "missing; set `type: kubernetes`",
            ));
        }
    }
    let config = runtime
        .remove("config")
        .unwrap_or(Yaml::Mapping(serde_yaml_ng::Mapping::new()));
    if let Some((key, _)) = runtime.into_iter().next() {
        return Err(Error::invalid(
            &format!("runtime.{}", yaml_key(&key)),
            "unknown key; expected `type` and `config`",
        ));
    }
    if matches!(config, Yaml::Null) {
        return Ok((
            Yaml::Mapping(serde_yaml_ng::Mapping::new()),
            "runtime.config".into(),
        ));
    }
    Ok((config, "runtime.config".into()))
}

fn yaml_key(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Applies `FLEXT__WORKER__CONCURRENCY=8` as `worker.concurrency: 8`.
fn apply_override(tree: &mut Yaml, name: &str, value: &str) -> Result<()> {
    let path: Vec<String> = name[OVERRIDE_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(Error::invalid(
            name,
            "malformed override: use FLEXT__SECTION__KEY, e.g. FLEXT__WORKER__CONCURRENCY=8",
        ));
    }
    let parsed: Yaml =
        serde_yaml_ng::from_str(value).unwrap_or_else(|_| Yaml::String(value.to_owned()));
    let mut node = tree;
    for (i, key) in path.iter().enumerate() {
        let Yaml::Mapping(map) = node else {
            return Err(Error::invalid(
                name,
                format!("`{}` is not a section", path[..i].join(".")),
            ));
        };
        let key = Yaml::String(key.clone());
        if i + 1 == path.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Yaml::Mapping(serde_yaml_ng::Mapping::new()));
    }
    Ok(())
}

/// Reads `NAME`, or the file named by `NAME_FILE` (trailing newline trimmed).
fn secret_from_env(env: &dyn Env, name: &str) -> Result<Option<Secret>> {
    let file_var = format!("{name}_FILE");
    match (env.var(name), env.var(&file_var)) {
        (Some(_), Some(_)) => Err(Error::invalid(
            name,
            format!("both {name} and {file_var} are set; keep one"),
        )),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone().into(),
                source,
            })?;
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                return Err(Error::invalid(&file_var, format!("{path} is empty")));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

/// The host name, for the default worker name.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const FLEXCORE: &str = r#"
runtime:
  type: kubernetes
  config:
    windmill:
      worker_group: k8s
      tags: [k8s, k8s-gpu]
      finalize_tag: flow
    cluster:
      kubeconfig: ~/.kube/config
      context: production-cluster
      namespace: flext-runtime
    resources:
      default_cpu: "500m"
      default_memory: "1Gi"
      default_storage: "10Gi"
    job_template:
      image: ghcr.io/flext/flext-kubernetes:latest
      restart_policy: Never
      backoff_limit: 0
    profiles:
      k8s-gpu: { gpu: 1, node_selector: { pool: gpu } }
    limits:
      max_cpu: "8"
      max_memory: "32Gi"
"#;

    #[test]
    fn accepts_the_flexcore_runtime_schema() {
        let config = Config::from_yaml(FLEXCORE, &env(&[])).unwrap();
        assert_eq!(config.settings.windmill.tags, ["k8s", "k8s-gpu"]);
        assert_eq!(
            config.settings.cluster.context.as_deref(),
            Some("production-cluster")
        );
        assert!(config.settings.profiles.contains_key("k8s-gpu"));
    }

    #[test]
    fn env_overrides_file_values() {
        let e = env(&[
            ("FLEXT__WORKER__CONCURRENCY", "8"),
            ("FLEXT__WINDMILL__TAGS", "[a, b]"),
        ]);
        let config = Config::from_yaml(FLEXCORE, &e).unwrap();
        assert_eq!(config.settings.worker.concurrency, 8);
        assert_eq!(config.settings.windmill.tags, ["a", "b"]);
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let err = Config::from_yaml(
            "runtime:\n  type: kubernetes\n  config:\n    worker:\n      concurency: 3\n",
            &env(&[]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("runtime.config.worker"), "{text}");
        assert!(text.contains("concurency"), "{text}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let err = Config::from_yaml("worker:\n  concurrency: many\n", &env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("runtime.config.worker.concurrency"),
            "{err}"
        );
    }

    #[test]
    fn finalize_tag_among_our_tags_is_rejected() {
        let err = Config::from_yaml("windmill:\n  tags: [k8s, flow]\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("finalize_tag"), "{err}");
    }

    #[test]
    fn other_runtime_types_are_rejected() {
        let err = Config::from_yaml("runtime:\n  type: docker\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("runtime.type"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_or_files_and_are_redacted() {
        let dir = std::env::temp_dir().join(format!("flext-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
        let e = env(&[
            (
                "FLEXT_DATABASE_URL",
                "postgres://windmill:hunter2@db:5432/windmill?password=hunter2",
            ),
            ("FLEXT_WINDMILL_TOKEN_FILE", token_file.to_str().unwrap()),
        ]);
        let config = Config::from_yaml("", &e).unwrap();
        assert_eq!(
            config.windmill_token.as_ref().unwrap().expose(),
            "s3cr3t-token"
        );
        let shown = format!("{}\n{:?}", config.to_redacted_yaml(), config);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("postgres://windmill:***@db:5432/windmill"),
            "{shown}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations_and_sizes_parse_and_print() {
        for (text, secs) in [
            ("500ms", 500),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            ("30", 30_000),
            ("1.5s", 1_500),
        ] {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().0.as_millis(),
                secs,
                "{text}"
            );
        }
        assert!("5 parsecs".parse::<HumanDuration>().is_err());
        assert!("-1s".parse::<HumanDuration>().is_err());
        assert_eq!("8MiB".parse::<ByteSize>().unwrap().0, 8 << 20);
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn heartbeat_slower_than_the_zombie_window_is_rejected() {
        let err = Config::from_yaml("worker:\n  heartbeat_interval: 90s\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval"), "{err}");
    }
}
