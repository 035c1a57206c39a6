//! The worker's Prometheus metrics: names and units by Prometheus conventions, labels bounded
//! (tag, outcome, category, verb, resource, code, when — never a job id). Encoded by
//! `prometheus-client` for `/metrics`.
//!
//! Each part of the worker owns the families it moves: [`Metrics`] (the worker's jobs, queue and
//! heartbeat), [`KubeMetrics`] (the Kubernetes executor's API requests, rate-limiter waits and
//! system retries, made when the executor connects) and [`LogCounters`] (the log hub). One
//! registry holds them all; every family is a handle on shared state, so a clone moves the same
//! series.
//!
//! The README's "Metrics" section lists every metric; `tests/observability.rs` checks the chart's
//! dashboard and alerts against a real scrape.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A job's tag.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TagLabels {
    /// The Windmill tag.
    pub tag: String,
}

impl TagLabels {
    fn of(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
        }
    }
}

/// How a handed-back job ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompletedLabels {
    /// The Windmill tag.
    pub tag: String,
    /// `success`, `failure` or `canceled`.
    pub outcome: String,
    /// The failure category (`user_error`, `oom_killed`, ...), empty unless a failure.
    pub category: String,
}

/// Jobs waiting on a tag.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepthLabels {
    /// The Windmill tag.
    pub tag: String,
    /// `due` (claimable now) or `later` (scheduled for the future).
    pub when: String,
}

/// One cluster (its name in the config: bounded).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The cluster's name (`default` for the single `cluster:` mapping).
    pub cluster: String,
}

/// A job's tag on one cluster.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterTagLabels {
    /// The cluster's name.
    pub cluster: String,
    /// The Windmill tag.
    pub tag: String,
}

/// One Kubernetes API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The cluster the request went to.
    pub cluster: String,
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// The resource (`pods`, `jobs`, `configmaps`, `secrets`, `pods/log`, ...).
    pub resource: String,
    /// The HTTP status code, or `error` when no response came.
    pub code: String,
}

/// Queue and start-up latencies: from 5 ms to about 20 min.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Run times from a tenth of a second to about two hours.
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 17))
}

/// Rate-limiter waits: from 1 ms to about 30 s.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn tag_histograms(new: fn() -> Histogram) -> Family<TagLabels, Histogram> {
    Family::new_with_constructor(new)
}

/// The Kubernetes executor's metrics: one set of families for every cluster, each cluster's view
/// ([`KubeMetrics::for_cluster`]) stamping its `cluster` label.
#[derive(Debug, Clone)]
pub struct KubeMetrics {
    /// The cluster this view records for.
    cluster: String,
    /// Every cluster a view was made for, in order.
    clusters: Arc<std::sync::Mutex<Vec<String>>>,
    requests: Family<RequestLabels, Counter>,
    limiter_wait: Family<ClusterLabels, Histogram>,
    system_retries: Family<ClusterTagLabels, Counter>,
    cluster_ready: Family<ClusterLabels, Gauge>,
    cluster_in_flight: Family<ClusterLabels, Gauge>,
    cluster_jobs: Family<ClusterLabels, Counter>,
    policy_decisions: Family<PolicyLabels, Counter>,
    policy_call: Family<PluginLabels, Histogram>,
    warm_pods: Family<WarmLabels, Gauge>,
    job_starts: Family<StartLabels, Counter>,
}

/// One warm pool's pods in one state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarmLabels {
    /// The cluster's name.
    pub cluster: String,
    /// The pool (`warm_pools:` in the config: bounded).
    pub pool: String,
    /// `waiting` (its runner is calling for a job) or `starting`.
    pub state: String,
}

/// How jobs started.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// The cluster's name.
    pub cluster: String,
    /// `warm` (handed to a waiting pod) or `cold` (a Job of its own).
    pub path: String,
}

/// One policy plugin's decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The plugin's name (from the worker's config: bounded).
    pub plugin: String,
    /// `allow`, `deny`, `patch`, `error` (the job failed as `policy_error`) or `skipped` (an
    /// error of an `on_error: allow` plugin).
    pub decision: String,
}

/// One policy plugin.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin's name.
    pub plugin: String,
}

/// Policy plugin calls: from 50 µs to about 3 s.
fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for KubeMetrics {
    fn default() -> Self {
        Self {
            cluster: "default".to_owned(),
            clusters: Arc::default(),
            requests: Family::default(),
            limiter_wait: Family::new_with_constructor(wait_histogram),
            system_retries: Family::default(),
            cluster_ready: Family::default(),
            cluster_in_flight: Family::default(),
            cluster_jobs: Family::default(),
            policy_decisions: Family::default(),
            policy_call: Family::new_with_constructor(plugin_histogram),
            warm_pods: Family::default(),
            job_starts: Family::default(),
        }
    }
}

impl KubeMetrics {
    /// The view of cluster `name`: the same families, its `cluster` label; its series start at
    /// zero.
    #[must_use]
    pub fn for_cluster(&self, name: &str) -> Self {
        let mut view = self.clone();
        name.clone_into(&mut view.cluster);
        let mut clusters = self
            .clusters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !clusters.iter().any(|c| c == name) {
            clusters.push(name.to_owned());
        }
        let labels = view.cluster_labels();
        drop(view.limiter_wait.get_or_create(&labels));
        drop(view.cluster_ready.get_or_create(&labels));
        drop(view.cluster_in_flight.get_or_create(&labels));
        drop(view.cluster_jobs.get_or_create(&labels));
        view
    }

    /// The clusters views were made for (`default` when none was).
    fn cluster_names(&self) -> Vec<String> {
        let clusters = self
            .clusters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if clusters.is_empty() {
            vec![self.cluster.clone()]
        } else {
            clusters.clone()
        }
    }

    fn cluster_labels(&self) -> ClusterLabels {
        ClusterLabels {
            cluster: self.cluster.clone(),
        }
    }

    /// How many pods of a warm pool wait for a job, and how many are starting.
    pub fn set_warm_pods(&self, pool: &str, waiting: usize, starting: usize) {
        for (state, count) in [("waiting", waiting), ("starting", starting)] {
            self.warm_pods
                .get_or_create(&WarmLabels {
                    cluster: self.cluster.clone(),
                    pool: pool.to_owned(),
                    state: state.to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// A job's first attempt started, on a warm pod or cold.
    pub fn job_started(&self, warm: bool) {
        self.job_starts
            .get_or_create(&StartLabels {
                cluster: self.cluster.clone(),
                path: if warm { "warm" } else { "cold" }.to_owned(),
            })
            .inc();
    }

    /// Whether this cluster's API answers (and its watch synced).
    pub fn set_cluster_ready(&self, ready: bool) {
        self.cluster_ready
            .get_or_create(&self.cluster_labels())
            .set(i64::from(ready));
    }

    /// A job was placed on this cluster (claimed or adopted): counted, and in flight until
    /// [`Self::cluster_job_left`].
    pub fn cluster_job_placed(&self) {
        let labels = self.cluster_labels();
        self.cluster_jobs.get_or_create(&labels).inc();
        self.cluster_in_flight.get_or_create(&labels).inc();
    }

    /// A job placed on this cluster ended here.
    pub fn cluster_job_left(&self) {
        self.cluster_in_flight
            .get_or_create(&self.cluster_labels())
            .dec();
    }

    /// A request answered with `code` (`None`: no response).
    pub fn request(&self, verb: &str, resource: &str, code: Option<u16>) {
        self.requests
            .get_or_create(&RequestLabels {
                cluster: self.cluster.clone(),
                verb: verb.to_owned(),
                resource: resource.to_owned(),
                code: code.map_or_else(|| "error".to_owned(), |c| c.to_string()),
            })
            .inc();
    }

    /// The client rate limiter held a request back for `wait` (zero included).
    pub fn limiter_waited(&self, wait: Duration) {
        self.limiter_wait
            .get_or_create(&self.cluster_labels())
            .observe(wait.as_secs_f64());
    }

    /// An attempt of a job on `tag` ended before user code started and a new one follows.
    pub fn system_retry(&self, tag: &str) {
        self.system_retries
            .get_or_create(&ClusterTagLabels {
                cluster: self.cluster.clone(),
                tag: tag.to_owned(),
            })
            .inc();
    }

    /// A policy plugin decided (`decision`, see [`PolicyLabels`]) in `took`.
    pub fn policy_decision(&self, plugin: &str, decision: &str, took: Duration) {
        self.policy_decisions
            .get_or_create(&PolicyLabels {
                plugin: plugin.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
        self.policy_call
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "policy_decisions",
            "Decisions of the policy plugins (allow, deny, patch; error: the job failed as policy_error; skipped: on_error: allow)",
            self.policy_decisions.clone(),
        );
        registry.register_with_unit(
            "policy_call",
            "Time of each policy plugin call, in its fresh sandbox",
            Unit::Seconds,
            self.policy_call.clone(),
        );
        registry.register(
            "kube_requests",
            "Kubernetes API requests by verb, resource and HTTP status code (the shared pod watch included)",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "kube_rate_limiter_wait",
            "Time each Kubernetes API request waited for the client rate limiter (executor.api_qps, api_burst)",
            Unit::Seconds,
            self.limiter_wait.clone(),
        );
        registry.register(
            "system_retries",
            "Attempts that ended before user code started (evicted, preempted, deleted, node lost) and were run again",
            self.system_retries.clone(),
        );
        registry.register(
            "cluster_ready",
            "1 while the cluster's Kubernetes API answers and its pod watch has synced; jobs not yet created go to the next cluster otherwise",
            self.cluster_ready.clone(),
        );
        registry.register(
            "cluster_in_flight",
            "Jobs placed on the cluster and not yet ended there",
            self.cluster_in_flight.clone(),
        );
        registry.register(
            "cluster_jobs",
            "Jobs placed on the cluster (claimed or adopted)",
            self.cluster_jobs.clone(),
        );
        registry.register(
            "warm_pods",
            "Pods of each warm pool not handed a job: waiting (their runner calls for one) or starting; they count against quotas like any pod",
            self.warm_pods.clone(),
        );
        registry.register(
            "job_starts",
            "First attempts of jobs with warm pools configured, by path: warm (handed to a waiting pod) or cold (a Job of its own)",
            self.job_starts.clone(),
        );
    }
}

/// The log hub's counters.
#[derive(Debug, Clone, Default)]
pub struct LogCounters {
    bytes: Counter,
    lines_dropped: Counter,
}

impl LogCounters {
    /// `bytes` of job output were committed to Windmill's `job_logs`.
    pub fn appended(&self, bytes: usize) {
        self.bytes.inc_by(bytes as u64);
    }

    /// A line was dropped: its job's log passed `logs.max_bytes`.
    pub fn dropped_line(&self) {
        self.lines_dropped.inc();
    }
}

/// The gauges read at each scrape.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Jobs running now.
    pub in_flight: usize,
    /// `worker.concurrency`.
    pub concurrency: usize,
    /// Seconds since the heartbeat last committed every ping.
    pub heartbeat_lag: f64,
    /// Hand-backs whose fix-up has not committed yet.
    pub fix_ups_pending: usize,
}

/// The milestones of one handed-back job, as durations between them.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobTimes {
    /// `scheduled_for` → claim (`None` for an adopted job: its first claim counted it).
    pub queue_wait: Option<Duration>,
    /// Claim → its Kubernetes Job created (`None` when adopted or never created).
    pub claim_to_created: Option<Duration>,
    /// Job created → user code started.
    pub created_to_started: Option<Duration>,
    /// Claim → outcome.
    pub run: Duration,
    /// Pod terminated → hand-back committed.
    pub hand_back: Option<Duration>,
}

struct Families {
    registry: Registry,
    claimed: Family<TagLabels, Counter>,
    adoptions: Family<TagLabels, Counter>,
    completed: Family<CompletedLabels, Counter>,
    queue_wait: Family<TagLabels, Histogram>,
    claim_to_created: Family<TagLabels, Histogram>,
    created_to_started: Family<TagLabels, Histogram>,
    run_seconds: Family<TagLabels, Histogram>,
    hand_back: Family<TagLabels, Histogram>,
    in_flight: Gauge,
    permits_free: Gauge,
    queue_depth: Family<DepthLabels, Gauge>,
    heartbeat_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    fix_ups_pending: Gauge,
    ready: Gauge,
    logs: LogCounters,
    kube: KubeMetrics,
}

/// Every metric of one worker process.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(KubeMetrics::default())
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Metrics {
    /// The worker's metrics, with the executor's `kube` families in the same registry.
    #[must_use]
    pub fn new(kube: KubeMetrics) -> Self {
        let mut registry = Registry::with_prefix("flext");
        let claimed = Family::<TagLabels, Counter>::default();
        registry.register(
            "jobs_claimed",
            "Jobs this worker took: claimed from Windmill's queue, or adopted at start",
            claimed.clone(),
        );
        let adoptions = Family::<TagLabels, Counter>::default();
        registry.register(
            "adoptions",
            "Jobs taken over at start from a stopped worker of the group (their work still running, or never begun)",
            adoptions.clone(),
        );
        let completed = Family::<CompletedLabels, Counter>::default();
        registry.register(
            "jobs_completed",
            "Jobs handed back to Windmill, by outcome and failure category",
            completed.clone(),
        );
        let queue_wait = tag_histograms(latency_histogram);
        registry.register_with_unit(
            "queue_wait",
            "Time a job waited in Windmill's queue: scheduled_for to claim",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let claim_to_created = tag_histograms(latency_histogram);
        registry.register_with_unit(
            "claim_to_job_created",
            "Claim to the job's Kubernetes Job created (its ConfigMap and Secret first)",
            Unit::Seconds,
            claim_to_created.clone(),
        );
        let created_to_started = tag_histograms(latency_histogram);
        registry.register_with_unit(
            "job_created_to_started",
            "Kubernetes Job created to user code started (scheduling, image pull, init container, runner start)",
            Unit::Seconds,
            created_to_started.clone(),
        );
        let run_seconds = tag_histograms(run_histogram);
        registry.register_with_unit(
            "job_run",
            "Claim to outcome of each handed-back job",
            Unit::Seconds,
            run_seconds.clone(),
        );
        let hand_back = tag_histograms(latency_histogram);
        registry.register_with_unit(
            "hand_back",
            "The job's pod terminated to its outcome committed in Windmill (rest of the log read, result handed back)",
            Unit::Seconds,
            hand_back.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "jobs_in_flight",
            "Jobs this worker runs now",
            in_flight.clone(),
        );
        let permits_free = Gauge::default();
        registry.register(
            "permits_free",
            "Free concurrency permits (worker.concurrency minus jobs in flight)",
            permits_free.clone(),
        );
        let queue_depth = Family::<DepthLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs queued on this worker's tags and not running: due now, or scheduled later (read at each scrape)",
            queue_depth.clone(),
        );
        let heartbeat_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "heartbeat_lag",
            "Time since the heartbeat last refreshed every running job's ping and the worker_ping row",
            Unit::Seconds,
            heartbeat_lag.clone(),
        );
        let fix_ups_pending = Gauge::default();
        registry.register(
            "fix_ups_pending",
            "Handed-back jobs whose fix-up (what a native run shows once Windmill completed them) has not committed yet",
            fix_ups_pending.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the database and the Kubernetes API answer and the shared watch has synced (as /readyz), else 0",
            ready.clone(),
        );
        let logs = LogCounters::default();
        registry.register_with_unit(
            "log",
            "Job output committed to Windmill's job_logs",
            Unit::Bytes,
            logs.bytes.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Output lines dropped because their job's log passed logs.max_bytes",
            logs.lines_dropped.clone(),
        );
        kube.register(&mut registry);
        Self {
            families: Arc::new(Families {
                registry,
                claimed,
                adoptions,
                completed,
                queue_wait,
                claim_to_created,
                created_to_started,
                run_seconds,
                hand_back,
                in_flight,
                permits_free,
                queue_depth,
                heartbeat_lag,
                fix_ups_pending,
                ready,
                logs,
                kube,
            }),
        }
    }

    /// Creates every series of `tags` at zero, as Prometheus advises for known label values: a
    /// fresh worker's scrape then lists each family, and `rate()` sees a job's first increment.
    pub fn init_tags(&self, tags: &[String]) {
        let f = &self.families;
        for tag in tags {
            let labels = TagLabels::of(tag);
            drop(f.claimed.get_or_create(&labels));
            drop(f.adoptions.get_or_create(&labels));
            for cluster in f.kube.cluster_names() {
                drop(f.kube.system_retries.get_or_create(&ClusterTagLabels {
                    cluster,
                    tag: tag.clone(),
                }));
            }
            for family in [
                &f.queue_wait,
                &f.claim_to_created,
                &f.created_to_started,
                &f.run_seconds,
                &f.hand_back,
            ] {
                drop(family.get_or_create(&labels));
            }
            let outcomes = [("success", ""), ("canceled", "")].into_iter().chain(
                crate::domain::FailureCategory::ALL
                    .iter()
                    .map(|c| ("failure", c.as_str())),
            );
            for (outcome, category) in outcomes {
                drop(f.completed.get_or_create(&CompletedLabels {
                    tag: tag.clone(),
                    outcome: outcome.to_owned(),
                    category: category.to_owned(),
                }));
            }
            for when in ["due", "later"] {
                drop(f.queue_depth.get_or_create(&DepthLabels {
                    tag: tag.clone(),
                    when: when.to_owned(),
                }));
            }
        }
    }

    /// The log hub's counters.
    #[must_use]
    pub fn logs(&self) -> LogCounters {
        self.families.logs.clone()
    }

    /// The executor's families.
    #[must_use]
    pub fn kube(&self) -> &KubeMetrics {
        &self.families.kube
    }

    /// A job was claimed (`adopted`: taken over at start).
    pub fn claimed(&self, tag: &str, adopted: bool) {
        let labels = TagLabels::of(tag);
        self.families.claimed.get_or_create(&labels).inc();
        if adopted {
            self.families.adoptions.get_or_create(&labels).inc();
        }
    }

    /// A job's queue wait, observed at its claim.
    pub fn queue_wait(&self, tag: &str, wait: Duration) {
        self.families
            .queue_wait
            .get_or_create(&TagLabels::of(tag))
            .observe(seconds(wait));
    }

    /// A job was handed back.
    pub fn completed(&self, tag: &str, outcome: &str, category: Option<&str>, times: &JobTimes) {
        let f = &self.families;
        f.completed
            .get_or_create(&CompletedLabels {
                tag: tag.to_owned(),
                outcome: outcome.to_owned(),
                category: category.unwrap_or_default().to_owned(),
            })
            .inc();
        let labels = TagLabels::of(tag);
        f.run_seconds
            .get_or_create(&labels)
            .observe(seconds(times.run));
        for (family, value) in [
            (&f.claim_to_created, times.claim_to_created),
            (&f.created_to_started, times.created_to_started),
            (&f.hand_back, times.hand_back),
        ] {
            if let Some(value) = value {
                family.get_or_create(&labels).observe(seconds(value));
            }
        }
    }

    /// The queue depth read just now: `(tag, due, later)` for each of the worker's tags.
    pub fn set_queue_depth(&self, depth: &[(String, i64, i64)]) {
        for (tag, due, later) in depth {
            for (when, value) in [("due", due), ("later", later)] {
                self.families
                    .queue_depth
                    .get_or_create(&DepthLabels {
                        tag: tag.clone(),
                        when: when.to_owned(),
                    })
                    .set(*value);
            }
        }
    }

    /// Readiness as `/readyz` found it just now.
    pub fn set_ready(&self, ready: bool) {
        self.families.ready.set(i64::from(ready));
    }

    /// The Prometheus text format (`OpenMetrics`), with the gauges set from `gauges` first.
    #[must_use]
    pub fn encode(&self, gauges: &Gauges) -> String {
        let f = &self.families;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        f.in_flight.set(count(gauges.in_flight));
        f.permits_free
            .set(count(gauges.concurrency.saturating_sub(gauges.in_flight)));
        f.heartbeat_lag.set(gauges.heartbeat_lag);
        f.fix_ups_pending.set(count(gauges.fix_ups_pending));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &f.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_their_labels_and_units_follow_the_conventions() {
        let metrics = Metrics::default();
        metrics.claimed("k8s", false);
        metrics.claimed("k8s", true);
        metrics.completed(
            "k8s",
            "failure",
            Some("oom_killed"),
            &JobTimes {
                run: Duration::from_millis(1500),
                hand_back: Some(Duration::from_millis(30)),
                ..JobTimes::default()
            },
        );
        metrics.kube().request("create", "jobs", Some(201));
        metrics.kube().request("get", "pods/log", None);
        metrics.logs().appended(12);
        metrics.logs().dropped_line();
        metrics.set_queue_depth(&[("k8s".into(), 4, 2)]);
        let text = metrics.encode(&Gauges {
            in_flight: 3,
            concurrency: 8,
            heartbeat_lag: 1.5,
            fix_ups_pending: 2,
        });
        for line in [
            "flext_jobs_claimed_total{tag=\"k8s\"} 2",
            "flext_adoptions_total{tag=\"k8s\"} 1",
            "flext_jobs_completed_total{tag=\"k8s\",outcome=\"failure\",category=\"oom_killed\"} 1",
            "flext_job_run_seconds_count{tag=\"k8s\"} 1",
            "flext_hand_back_seconds_count{tag=\"k8s\"} 1",
            "flext_kube_requests_total{cluster=\"default\",verb=\"create\",resource=\"jobs\",code=\"201\"} 1",
            "flext_kube_requests_total{cluster=\"default\",verb=\"get\",resource=\"pods/log\",code=\"error\"} 1",
            "flext_log_bytes_total 12",
            "flext_log_lines_dropped_total 1",
            "flext_queue_depth{tag=\"k8s\",when=\"due\"} 4",
            "flext_queue_depth{tag=\"k8s\",when=\"later\"} 2",
            "flext_jobs_in_flight 3",
            "flext_permits_free 5",
            "flext_heartbeat_lag_seconds 1.5",
            "flext_fix_ups_pending 2",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
        // A milestone a job never reached is not observed as zero.
        assert!(
            !text.contains("flext_claim_to_job_created_seconds_count{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_fresh_worker_lists_every_series_of_its_tags_at_zero() {
        let metrics = Metrics::default();
        metrics.init_tags(&["k8s".to_owned()]);
        let text = metrics.encode(&Gauges::default());
        for line in [
            "flext_jobs_claimed_total{tag=\"k8s\"} 0",
            "flext_jobs_completed_total{tag=\"k8s\",outcome=\"failure\",category=\"pod_lost\"} 0",
            "flext_jobs_completed_total{tag=\"k8s\",outcome=\"canceled\",category=\"\"} 0",
            "flext_hand_back_seconds_count{tag=\"k8s\"} 0",
            "flext_system_retries_total{cluster=\"default\",tag=\"k8s\"} 0",
            "flext_queue_depth{tag=\"k8s\",when=\"later\"} 0",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn a_clone_moves_the_same_series() {
        let metrics = Metrics::default();
        metrics.clone().claimed("k8s", false);
        metrics.kube().clone().system_retry("k8s");
        let text = metrics.encode(&Gauges::default());
        assert!(
            text.contains("flext_jobs_claimed_total{tag=\"k8s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flext_system_retries_total{cluster=\"default\",tag=\"k8s\"} 1"),
            "{text}"
        );
    }
}
