//! The Kubernetes executor: each claimed job runs as a `batch/v1` Job.
//!
//! A job's path through it, one file per step: [`render`] turns an attempt into its Secret and
//! Job; `objects` creates them (a 409 AlreadyExists is adopted, never duplicated), finds them in
//! the shared [`watch`] of the group's Jobs and deletes them; `attempt` follows one attempt's pod through the shared [`watch`]
//! (waiting for capacity and image pulls is logged to the Windmill job), deciding as
//! [`classify`] reads the pod; `follow` streams the pod's output into the job log (resuming with
//! `sinceTime` after a break, without duplicates) and takes the nonce-marked trailer and progress
//! lines out of it; `outcome` turns the container's end into the job's outcome. System failures
//! before user code starts (evicted, preempted, deleted, node lost) start a new attempt after a
//! capped, jittered backoff; everything else is the job's outcome. Cancellation deletes the Job
//! with its pods. The job's token and `$var:`/`$res:` args come from [`crate::windmill_api`].

pub mod access;
mod attempt;
pub mod classify;
pub mod clusters;
mod counted;
mod follow;
pub mod kueue;
mod objects;
mod outcome;
mod ratelimit;
pub mod render;
pub mod warm;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

pub use self::clusters::KubernetesExecutor;

use self::attempt::{Attempt, Run};
use self::watch::{JobIndex, PodWatch};
use crate::config::{ClusterSettings, Config};
use crate::domain::{Completion, FailureCategory, Job, JobFailure, JobId, Progress};
use crate::hints::{self, PodSettings, WindmillFields};
use crate::logs::LogSink;
use crate::metrics::KubeMetrics;
use crate::windmill_api::{self, JobAccess, WindmillApi};

/// How long a job's token outlives the job's timeout.
const TOKEN_MARGIN: Duration = Duration::from_secs(600);

/// How a Kubernetes executor failed to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster config.
    #[error(
        "cannot configure the Kubernetes client: {0}; set cluster.kubeconfig or KUBECONFIG, or run in a cluster"
    )]
    Config(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API")]
    Unreachable(#[source] kube::Error),
    /// The namespace does not exist.
    #[error("namespace `{0}` does not exist; create it or set cluster.namespace")]
    NoNamespace(String),
    /// The worker's identity may not make some of the requests it needs.
    #[error("{0}")]
    Forbidden(access::Missing),
    /// A policy plugin cannot be used.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::LoadError),
    /// Some of several clusters cannot be used: each cluster's state.
    #[error("{}", clusters::report(.0))]
    Clusters(Vec<(String, Option<Error>)>),
}

/// Runs jobs as Kubernetes Jobs on one cluster.
#[derive(Clone)]
pub struct ClusterExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    /// Which cluster, and its namespace.
    cluster: ClusterSettings,
    client: Client,
    pods: Api<Pod>,
    jobs: Api<KubeJob>,
    secrets: Api<Secret>,
    watch: PodWatch,
    /// Which attempts of which jobs exist.
    index: JobIndex,
    /// Kueue's Workloads, watched from the first queued Job on.
    kueue: kueue::AdmissionWatch,
    limiter: Arc<ratelimit::RateLimiter>,
    metrics: KubeMetrics,
    /// The warm pools on this cluster, if any.
    warm: Option<Arc<warm::Pools>>,
    /// Jobs running on warm pods, and the pod of each (deleted with the job).
    warm_jobs: std::sync::Mutex<std::collections::HashMap<JobId, (u32, String)>>,
    plugins: Option<crate::plugins::Plugins>,
    api: Option<WindmillApi>,
    _stop: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExecutor")
            .field("cluster", &self.inner.cluster.name)
            .field("namespace", &self.inner.cluster.namespace)
            .finish()
    }
}

impl ClusterExecutor {
    /// Builds a client for `cluster`, checks its namespace and permissions, and starts its
    /// shared pod watch. `metrics` is this cluster's view; `plugins` are shared by all clusters.
    pub async fn connect(
        config: Arc<Config>,
        cluster: ClusterSettings,
        metrics: KubeMetrics,
        plugins: Option<crate::plugins::Plugins>,
    ) -> Result<Self, Error> {
        let cluster = &cluster;
        let kube_config = if let Some(path) = &cluster.kubeconfig {
            let path = expand_home(path);
            let kubeconfig = Kubeconfig::read_from(&path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let options = KubeConfigOptions {
                context: cluster.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        } else if cluster.context.is_some() {
            let options = KubeConfigOptions {
                context: cluster.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        } else {
            kube::Config::infer()
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        };
        let client = kube::client::ClientBuilder::try_from(kube_config)
            .map_err(|e| Error::Config(e.to_string()))?
            .with_layer(&counted::CountLayer(metrics.clone()))
            .build();
        let namespace = cluster.namespace.clone();
        // Every permission first: a worker that could claim jobs but not run them would fail each
        // one; better not to start, naming what is missing.
        let permissions = access::needed(
            config.settings.uses_kueue(),
            !config.settings.warm_pools.is_empty(),
        );
        match access::review(&client, &namespace, &permissions).await {
            Ok(None) => {}
            Ok(Some(missing)) => return Err(Error::Forbidden(missing)),
            Err(error) => return Err(Error::Unreachable(error)),
        }
        match Api::<Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => return Err(Error::NoNamespace(namespace)),
            Err(error) => return Err(Error::Unreachable(error)),
        }
        let stop = CancellationToken::new();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let jobs: Api<KubeJob> = Api::namespaced(client.clone(), &namespace);
        let selector = render::group_selector(&config.settings);
        let watch = PodWatch::spawn(pods.clone(), &selector, stop.clone());
        let index = JobIndex::spawn(client.clone(), &namespace, &selector, stop.clone());
        let limiter = Arc::new(ratelimit::RateLimiter::new(
            config.settings.executor.api_qps,
            config.settings.executor.api_burst,
            metrics.clone(),
        ));
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let warm = if config.settings.warm_pools.is_empty() {
            None
        } else {
            let handover = &config.settings.worker.handover;
            let server = warm::Handover::start(
                &handover.listen,
                handover.advertise.as_deref(),
                stop.clone(),
            )
            .await
            .map_err(Error::Config)?;
            warm::Pools::new(
                config.clone(),
                &cluster.name,
                server,
                warm::Kube {
                    pods: pods.clone(),
                    secrets: secrets.clone(),
                    watch: watch.clone(),
                    limiter: limiter.clone(),
                    metrics: metrics.clone(),
                },
            )
            .map(Arc::new)
        };
        if let Some(pools) = &warm {
            pools.clone().spawn(stop.clone());
        }
        let api = match (&config.windmill_url, &config.windmill_token) {
            (Some(url), Some(token)) => Some(
                WindmillApi::new(url, token.clone())
                    .map_err(|e| Error::Config(format!("Windmill API client: {e}")))?,
            ),
            _ => None,
        };
        let inner = Inner {
            cluster: cluster.clone(),
            kueue: kueue::AdmissionWatch::new(client.clone(), &namespace, stop.clone()),
            api,
            jobs,
            secrets,
            pods,
            client,
            watch,
            index,
            limiter,
            metrics,
            warm,
            warm_jobs: std::sync::Mutex::default(),
            plugins,
            config,
            _stop: stop.drop_guard(),
        };
        let this = Self {
            inner: Arc::new(inner),
        };
        tokio::join!(this.inner.watch.synced(), this.inner.index.synced());
        Ok(this)
    }

    /// Ready to run jobs: the shared watch has synced and the API server answers (within 2 s);
    /// recorded in `flext_cluster_ready`.
    pub async fn ready(&self) -> Result<(), String> {
        let state = self.readiness().await;
        self.inner.metrics.set_cluster_ready(state.is_ok());
        state
    }

    async fn readiness(&self) -> Result<(), String> {
        if !self.inner.watch.is_synced() {
            return Err("the shared pod watch has not synced yet".into());
        }
        if !self.inner.index.is_synced() {
            return Err("the shared Job watch has not synced yet".into());
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.inner.client.apiserver_version(),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the Kubernetes API does not answer: {error}")),
            Err(_) => Err("the Kubernetes API did not answer within 2 s".into()),
        }
    }

    /// The client, for tests and adoption.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The executor's metrics (API requests, rate-limiter waits, system retries).
    #[must_use]
    pub fn metrics(&self) -> KubeMetrics {
        self.inner.metrics.clone()
    }

    /// Kubernetes API requests made so far through the rate limiter (the shared pod watch aside).
    #[must_use]
    pub fn api_requests(&self) -> u64 {
        self.inner.limiter.requests()
    }

    /// Its warm pools' pods not handed a job.
    #[must_use]
    pub fn warm_pools(&self) -> Vec<crate::worker::WarmPoolStatus> {
        self.inner
            .warm
            .as_ref()
            .map(|pools| pools.states())
            .unwrap_or_default()
    }

    /// This cluster's settings.
    #[must_use]
    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.cluster
    }

    /// Whether some attempt of `job` exists here (a worker before us made it).
    pub(super) async fn has_work(&self, job: &Job) -> bool {
        self.inner.latest_attempt(job).await.is_some()
    }

    /// Runs a job, whose pod settings are `pod`, to its outcome.
    pub async fn run(
        &self,
        job: &Job,
        pod: PodSettings,
        cancel: CancellationToken,
        logs: &LogSink,
        progress: &Progress,
    ) -> Completion {
        let started = Instant::now();
        // Windmill's side first: a token for the job's user (WM_TOKEN), and `$var:`/`$res:`
        // args read with it.
        let api = self.inner.api.as_ref();
        let access = match windmill_api::prepare(api, job, pod.timeout.value + TOKEN_MARGIN).await {
            Ok(access) => access,
            Err(failure) => return Completion::failed(failure, started.elapsed()),
        };
        let completion = self
            .run_attempts(job, &pod, &access, &cancel, logs, progress)
            .await;
        windmill_api::release(api, &access).await;
        completion
    }

    async fn run_attempts(
        &self,
        job: &Job,
        pod: &PodSettings,
        access: &JobAccess,
        cancel: &CancellationToken,
        logs: &LogSink,
        progress: &Progress,
    ) -> Completion {
        let started = Instant::now();
        let budget = pod.retries.value;
        let mut delays = crate::backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
        let id = job.id.to_string();
        let waker = self.inner.watch.waker(&id);
        let run = Run {
            job,
            pod,
            args: &access.args,
            token: access.token.as_ref(),
            cancel,
            logs,
            progress,
            waker: &waker,
        };
        let mut last_reason = String::new();
        // A restarted worker follows the attempt that is already running instead of starting one.
        let existing = self.inner.latest_attempt(job).await;
        let first = existing.unwrap_or(1);
        for attempt in first..=budget.saturating_add(1).max(first) {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let warm = if let Some(pod) = self.inner.assigned_warm_pod(job.id, attempt) {
                Some(self.inner.adopt_warm(&run, attempt, &pod).await)
            } else if attempt == 1 && existing.is_none() {
                self.inner.try_warm(&run).await
            } else {
                None
            };
            let outcome = match warm {
                Some(outcome) => outcome,
                None => self.inner.attempt(&run, attempt, &nonce).await,
            };
            match outcome {
                Attempt::Done(completion) => {
                    self.inner.watch.forget(&id);
                    return completion;
                }
                Attempt::SystemRetry(reason) => {
                    self.inner.metrics.system_retry(&job.tag);
                    self.inner.delete_attempt(job, attempt).await;
                    last_reason = reason;
                    if attempt > budget {
                        break;
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    logs.note(&format!(
                        "attempt {attempt} did not run the script ({last_reason}); retrying in {}s",
                        delay.as_secs()
                    ));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => {
                            self.inner.watch.forget(&id);
                            return Completion::canceled(started.elapsed());
                        }
                    }
                }
            }
        }
        self.inner.watch.forget(&id);
        Completion::failed(
            JobFailure::new(
                FailureCategory::PodLost,
                "SystemRetriesExhausted",
                format!(
                    "the pod was lost before the script started {} time(s), last: {last_reason}; raise `retries` in the script's `k8s:` hints or check the cluster",
                    budget.saturating_add(1)
                ),
            ),
            started.elapsed(),
        )
    }

    /// Deletes every object of a job (after the hand-back; TTL is the backstop).
    pub async fn finished(&self, job: &Job) {
        self.inner.delete_all(job.id).await;
    }

    /// The Windmill jobs whose Kubernetes Jobs exist in this worker group.
    pub async fn running_jobs(&self) -> Result<Vec<JobId>, kube::Error> {
        self.inner.running_jobs().await
    }

    /// Deletes every Kubernetes object of a job.
    pub async fn delete_all(&self, id: JobId) {
        self.inner.delete_all(id).await;
    }
}

/// The pod settings of a job: the hints resolved against the worker's config.
pub fn pod_settings(config: &Config, job: &Job) -> Result<PodSettings, JobFailure> {
    let language = job.language.as_ref().map_or("", |l| l.as_str());
    hints::resolve(
        &config.settings.hints(),
        &job.tag,
        language,
        job.code.as_deref().unwrap_or_default(),
        WindmillFields {
            timeout: job.timeout,
            priority: job.priority,
        },
    )
    .map_err(|e| e.to_job_failure())
}

fn expand_home(path: &std::path::Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => std::env::var_os("HOME")
            .map_or_else(|| path.to_owned(), |home| PathBuf::from(home).join(rest)),
        Err(_) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_unreachable_api_adds_context_and_leaves_its_cause_to_the_chain() {
        let cause = kube::Error::Api(
            kube::core::Status::failure("connection refused", "")
                .with_code(503)
                .boxed(),
        );
        let error = Error::Unreachable(cause);
        let source = error.source().map(ToString::to_string).unwrap_or_default();
        assert!(source.contains("connection refused"), "{source}");
        assert!(!error.to_string().contains(&source), "said twice: {error}");
    }
}
