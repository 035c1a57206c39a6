//! The sections of `runtime.config`, their defaults, and the checks each makes on itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::hints::{HintSettings, Limits, Profiles, Resources};
use crate::units::{ByteSize, HumanDuration};

/// The settings a file (and env overrides) can give: `runtime.config` of the FlexCore schema.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The Windmill side: worker group, tags, finalize tag, timeouts.
    pub windmill: WindmillSettings,
    /// Which cluster to run jobs in (one cluster, named `default`).
    pub cluster: ClusterSettings,
    /// Several named clusters, in order of preference (instead of `cluster:`; `docs/clusters.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterSettings>,
    /// Default pod resources (a `hints` type: only hints read it).
    pub resources: Resources,
    /// The Job template.
    pub job_template: JobTemplateSettings,
    /// Per-tag profiles (`k8s-gpu: {gpu: 1, node_selector: {pool: gpu}}`): hints for every job
    /// of that tag (`docs/hints.md`).
    pub profiles: Profiles,
    /// Admin limits on hints: maxima, allow-lists, protected labels (`docs/hints.md`).
    pub limits: Limits,
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
    /// Policy plugins, run in this order on every job before its objects are created
    /// (`docs/plugins.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::plugins::PluginSettings>,
    /// Runner pods kept waiting for a tag's jobs, so that a matching job starts without a pod
    /// start (`docs/warm-pools.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warm_pools: Vec<WarmPoolSettings>,
}

/// One entry of `warm_pools:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPoolSettings {
    /// The tag whose jobs the pool's pods take (its profile shapes them).
    pub tag: String,
    /// The language the pods are made for (its image and runner): required, an `Option` so that
    /// leaving it out gets an error that says so.
    #[serde(default)]
    pub language: Option<String>,
    /// How many pods wait at most.
    pub size: u32,
}

impl WarmPoolSettings {
    /// `tag` or `tag/language`: the pool's name in labels, logs and metrics.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.language {
            Some(language) => format!("{}-{language}", self.tag),
            None => self.tag.clone(),
        }
    }
}

/// Largest `warm_pools[].size`.
pub const MAX_WARM_POOL_SIZE: u32 = 100;

impl Settings {
    /// The clusters jobs run on, in order of preference: `clusters:`, else the one `cluster:`.
    #[must_use]
    pub fn clusters(&self) -> Vec<ClusterSettings> {
        if self.clusters.is_empty() {
            vec![self.cluster.clone()]
        } else {
            self.clusters.clone()
        }
    }

    /// Names unique and well-formed, `cluster:` and `clusters:` not both, every tag of the worker
    /// served by some cluster and no cluster serving a tag the worker does not claim.
    pub(super) fn validate_clusters(&self) -> Result<()> {
        if !self.clusters.is_empty() && self.cluster != ClusterSettings::default() {
            return Err(Error::invalid(
                "runtime.config.cluster",
                "both `cluster:` and `clusters:` are set: move the single cluster into `clusters:` (with a name) and remove `cluster:`",
            ));
        }
        let clusters = self.clusters();
        let mut names = std::collections::BTreeSet::new();
        for (i, cluster) in clusters.iter().enumerate() {
            let at = if self.clusters.is_empty() {
                "runtime.config.cluster".to_owned()
            } else {
                format!("runtime.config.clusters[{i}]")
            };
            crate::hints::check_cluster_name(&cluster.name)
                .map_err(|why| Error::invalid(&format!("{at}.name"), why))?;
            if !names.insert(cluster.name.as_str()) {
                return Err(Error::invalid(
                    &format!("{at}.name"),
                    format!(
                        "`{}` names two clusters: give each its own name",
                        cluster.name
                    ),
                ));
            }
            if cluster.max_in_flight == Some(0) {
                return Err(Error::invalid(
                    &format!("{at}.max_in_flight"),
                    "must be at least 1 (leave it out for no limit but worker.concurrency)",
                ));
            }
            for tag in &cluster.tags {
                if !self.windmill.tags.contains(tag) {
                    return Err(Error::invalid(
                        &format!("{at}.tags"),
                        format!(
                            "`{tag}` is not one of windmill.tags {:?}: this worker never claims its jobs",
                            self.windmill.tags
                        ),
                    ));
                }
            }
        }
        for tag in &self.windmill.tags {
            if !clusters.iter().any(|c| c.serves(tag)) {
                return Err(Error::invalid(
                    "runtime.config.clusters",
                    format!(
                        "no cluster serves tag `{tag}`: add it to a cluster's `tags` (or leave a cluster's `tags` empty to serve every tag)"
                    ),
                ));
            }
        }
        for (tag, profile) in &self.profiles {
            if let Some(name) = &profile.cluster {
                match clusters.iter().find(|c| c.name == name.value) {
                    None => {
                        return Err(Error::invalid(
                            &format!("runtime.config.profiles.{tag}.cluster"),
                            format!(
                                "no cluster is named `{}`; the clusters are {:?}",
                                name.value,
                                clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
                            ),
                        ));
                    }
                    Some(c) if !c.serves(tag) => {
                        return Err(Error::invalid(
                            &format!("runtime.config.profiles.{tag}.cluster"),
                            format!(
                                "cluster `{}` does not serve tag `{tag}` (its tags: {:?})",
                                c.name, c.tags
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Each warm pool names a claimed tag, a language the runner runs and a size in range, once;
    /// its pods resolve (the tag's profile, no script hints) without a Kueue queue or a
    /// script-keyed scheduling preset; policy plugins, which decide each job's pod, are not
    /// combined with pools; and warm pods have an address to reach the worker at.
    pub(super) fn validate_warm_pools(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for (i, pool) in self.warm_pools.iter().enumerate() {
            let at = format!("runtime.config.warm_pools[{i}]");
            if !self.windmill.tags.contains(&pool.tag) {
                return Err(Error::invalid(
                    &format!("{at}.tag"),
                    format!(
                        "`{}` is not one of windmill.tags {:?}: this worker never claims its jobs",
                        pool.tag, self.windmill.tags
                    ),
                ));
            }
            if !(1..=MAX_WARM_POOL_SIZE).contains(&pool.size) {
                return Err(Error::invalid(
                    &format!("{at}.size"),
                    format!(
                        "{} is out of range: keep 1 to {MAX_WARM_POOL_SIZE} pods waiting (remove the pool for none)",
                        pool.size
                    ),
                ));
            }
            let Some(language) = &pool.language else {
                return Err(Error::invalid(
                    &format!("{at}.language"),
                    format!(
                        "a pool's pods are made for one language (its image and runner): add `language:`, one of {}",
                        crate::domain::LanguageInfo::runnable()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if crate::runner::main_file(language).is_none() {
                return Err(Error::invalid(
                    &format!("{at}.language"),
                    format!(
                        "the runner does not run `{language}`; it runs {}",
                        crate::domain::LanguageInfo::runnable()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !names.insert(pool.name()) {
                return Err(Error::invalid(
                    &at,
                    format!(
                        "a second pool for `{}`: give the first one the size you want",
                        pool.name()
                    ),
                ));
            }
            let pod = crate::hints::resolve(
                &self.hints(),
                &pool.tag,
                pool.language.as_deref().unwrap_or_default(),
                "",
                crate::hints::WindmillFields::default(),
            )
            .map_err(|e| Error::invalid(&at, format!("its pods do not resolve: {e}")))?;
            if pod.local_queue.is_some() {
                return Err(Error::invalid(
                    &at,
                    format!(
                        "tag `{}` waits in a Kueue LocalQueue: Kueue admits Jobs, and a warm pod would bypass it; remove the pool or the profile's local_queue",
                        pool.tag
                    ),
                ));
            }
            if !pod.affinity.is_empty() {
                return Err(Error::invalid(
                    &at,
                    format!(
                        "tag `{}`'s profile sets a scheduling preset keyed by script, which a pod made before its job cannot have; remove the pool or the preset",
                        pool.tag
                    ),
                ));
            }
        }
        if self.warm_pools.is_empty() {
            return Ok(());
        }
        if !self.plugins.is_empty() {
            return Err(Error::invalid(
                "runtime.config.warm_pools",
                "policy plugins decide each job's pod when the job is claimed, and a warm pod exists before its job: use warm pools or plugins, not both",
            ));
        }
        let listen: std::net::SocketAddr = self.worker.handover.listen.parse().map_err(|e| {
            Error::invalid(
                "runtime.config.worker.handover.listen",
                format!(
                    "`{}` is not an address with a port ({e})",
                    self.worker.handover.listen
                ),
            )
        })?;
        if self.worker.handover.advertise.is_none() && listen.ip().is_unspecified() {
            return Err(Error::invalid(
                "runtime.config.worker.handover.advertise",
                format!(
                    "warm pods need the address they reach this worker at, and `{listen}` listens on every interface: set it to the worker pod's IP (the Helm chart does: FLEXT__WORKER__HANDOVER__ADVERTISE=$(POD_IP)) or listen on one IP"
                ),
            ));
        }
        Ok(())
    }

    /// Whether this worker's jobs may wait in Kueue `LocalQueues`: a profile names one, or
    /// scripts may (`limits.allowed_local_queues`). Such a worker needs to read Kueue's
    /// Workloads ([`crate::executor::kubernetes::access::KUEUE`]).
    #[must_use]
    pub fn uses_kueue(&self) -> bool {
        !self.limits.allowed_local_queues.is_empty()
            || self.profiles.values().any(|p| p.local_queue.is_some())
    }

    /// What `hints` reads of these settings: the pod defaults, the profiles and the limits.
    #[must_use]
    pub fn hints(&self) -> HintSettings<'_> {
        HintSettings {
            resources: &self.resources,
            image: &self.job_template.image,
            service_account: self.job_template.service_account.as_deref(),
            images: &self.executor.images,
            system_retries: self.job_template.system_retries,
            default_timeout: self.windmill.default_timeout.0,
            max_timeout: self.windmill.max_timeout.0,
            profiles: &self.profiles,
            limits: &self.limits,
        }
    }
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

impl WindmillSettings {
    /// Tags fit `v2_job.tag`, the finalize tag is not ours, the timeouts are in order.
    pub(super) fn validate(&self) -> Result<()> {
        if self.tags.is_empty() {
            return Err(Error::invalid(
                "runtime.config.windmill.tags",
                "no tags: list the tags this worker claims, e.g. [k8s]",
            ));
        }
        for tag in &self.tags {
            if tag.is_empty() || tag.len() > 50 {
                return Err(Error::invalid(
                    "runtime.config.windmill.tags",
                    format!("tag `{tag}` must be 1 to 50 characters (v2_job.tag is varchar(50))"),
                ));
            }
        }
        if self.tags.contains(&self.finalize_tag) {
            return Err(Error::invalid(
                "runtime.config.windmill.finalize_tag",
                format!(
                    "`{}` is also one of our tags: finished jobs would come back to us instead of a stock Windmill worker; \
                     use a tag that Windmill's own workers serve (default `flow`)",
                    self.finalize_tag
                ),
            ));
        }
        if self.worker_group.is_empty() {
            return Err(Error::invalid(
                "runtime.config.windmill.worker_group",
                "must not be empty",
            ));
        }
        if self.default_timeout > self.max_timeout {
            return Err(Error::invalid(
                "runtime.config.windmill.default_timeout",
                format!(
                    "{} exceeds max_timeout {}",
                    self.default_timeout, self.max_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `cluster:` (or one entry of `clusters:`) — a Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Its name: in job logs, metrics (`cluster` label), `cluster=` hints and profiles.
    pub name: String,
    /// Path of a kubeconfig; else `KUBECONFIG`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    pub context: Option<String>,
    /// Namespace the Jobs go to.
    pub namespace: String,
    /// The tags whose jobs it runs; empty (default): every tag of the worker.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Jobs on this cluster at once; absent: up to `worker.concurrency`. A full cluster is
    /// skipped like an unreachable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            kubeconfig: None,
            context: None,
            namespace: "flext-runtime".into(),
            tags: Vec::new(),
            max_in_flight: None,
        }
    }
}

impl ClusterSettings {
    /// Whether it runs jobs of `tag`.
    #[must_use]
    pub fn serves(&self, tag: &str) -> bool {
        self.tags.is_empty() || self.tags.iter().any(|t| t == tag)
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
    /// The ServiceAccount job pods run as unless a `service_account` hint names one (default:
    /// the namespace's `default`). Its token is never mounted into job pods.
    pub service_account: Option<String>,
}

impl Default for JobTemplateSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/flext/flext-kubernetes:latest".into(),
            restart_policy: "Never".into(),
            backoff_limit: 0,
            system_retries: 3,
            service_account: None,
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
    /// The HTTP endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub http: HttpSettings,
    /// The endpoint warm pods fetch their job from (used only with `warm_pools:`).
    pub handover: HandoverSettings,
}

/// `worker.handover:` — where warm pods reach this worker (TLS, one-time credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoverSettings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// The host or IP job pods reach this worker at (the chart sets the pod IP); its port is the
    /// listening one. Required with `warm_pools:` unless `listen` names a specific IP.
    pub advertise: Option<String>,
}

impl Default for HandoverSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9443".into(),
            advertise: None,
        }
    }
}

/// `worker.http:` — the worker's HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to listen on (`0.0.0.0:9464` in a pod); `null` turns the endpoint off.
    pub listen: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: Some("127.0.0.1:9464".into()),
        }
    }
}

impl HttpSettings {
    /// The address, if the endpoint is on.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>> {
        self.listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|e| {
                    Error::invalid(
                        "runtime.config.worker.http.listen",
                        format!("`{text}` is not an address and port like 0.0.0.0:9464 ({e}); use null to turn the endpoint off"),
                    )
                })
            })
            .transpose()
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            name: None,
            concurrency: 64,
            poll_interval: HumanDuration(Duration::from_millis(100)),
            heartbeat_interval: HumanDuration(Duration::from_secs(5)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            http: HttpSettings::default(),
            handover: HandoverSettings::default(),
        }
    }
}

impl WorkerSettings {
    /// At least one permit, and a heartbeat well inside Windmill's zombie window.
    pub(super) fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid(
                "runtime.config.worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.heartbeat_interval.0.is_zero()
            || self.heartbeat_interval.0 > Duration::from_secs(30)
        {
            return Err(Error::invalid(
                "runtime.config.worker.heartbeat_interval",
                format!(
                    "{} is outside 1ms..30s: Windmill re-queues a job whose ping is older than 60 s",
                    self.heartbeat_interval
                ),
            ));
        }
        if self.poll_interval.0.is_zero() {
            return Err(Error::invalid(
                "runtime.config.worker.poll_interval",
                "must be greater than 0",
            ));
        }
        self.http.address()?;
        if let Some(name) = &self.name
            && (name.is_empty() || name.len() > 255)
        {
            return Err(Error::invalid(
                "runtime.config.worker.name",
                "must be 1 to 255 characters",
            ));
        }
        Ok(())
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

impl LogSettings {
    /// A cap large enough for a truncation line, and flushes that happen.
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_bytes.0 < 1024 {
            return Err(Error::invalid(
                "runtime.config.logs.max_bytes",
                "must be at least 1KiB",
            ));
        }
        if self.fast_flush_interval.0.is_zero() || self.slow_flush_interval.0.is_zero() {
            return Err(Error::invalid(
                "runtime.config.logs",
                "flush intervals must be greater than 0",
            ));
        }
        Ok(())
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
    /// Counted from Kueue's admission for a Job in a `LocalQueue`.
    pub pending_budget: HumanDuration,
    /// How long a Job in a Kueue `LocalQueue` may wait for Kueue to admit it before the job fails;
    /// absent (default): as long as it takes (queueing for quota is normal), within the job's
    /// timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_budget: Option<HumanDuration>,
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
            admission_budget: None,
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
