//! The Kubernetes executor: each claimed job runs as a `batch/v1` Job.
//!
//! One attempt: render the ConfigMap, Secret and Job (deterministic names, our labels; a 409
//! AlreadyExists is adopted, never duplicated), then follow the pod through the shared watch:
//! waiting for capacity and image pulls are logged to the Windmill job, the pod's output is
//! followed into the job log (resuming with `sinceTime` after a break, without duplicates), and
//! the result is read from the nonce-marked trailer. System failures before user code starts
//! (evicted, preempted, deleted, node lost) start a new attempt after a capped, jittered backoff;
//! everything else is the job's outcome. Cancellation deletes the Job with its pods.

pub mod classify;
mod ratelimit;
pub mod render;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use self::classify::PodState;
use self::render::{Context, MAIN_CONTAINER, Objects};
use self::watch::PodWatch;
use crate::config::Config;
use crate::domain::{Completion, FailureCategory, Job, JobFailure, Outcome};
use crate::hints::{self, PodSettings, WindmillFields};
use crate::logs::LogSink;
use crate::trailer::{self, Status};
use crate::windmill_api::WindmillApi;

/// After the container ended, how long the followed log may stay silent before it counts as
/// drained.
const FOLLOW_QUIET: Duration = Duration::from_secs(2);
/// The longest one plain read of a finished container's log may take.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a Job may go without a pod before the job log says why it waits.
const NO_POD_NOTE_AFTER: Duration = Duration::from_secs(10);

/// How a Kubernetes executor failed to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster config.
    #[error(
        "cannot configure the Kubernetes client: {0}; set cluster.kubeconfig or KUBECONFIG, or run in a cluster"
    )]
    Config(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(#[source] kube::Error),
    /// The namespace does not exist.
    #[error("namespace `{0}` does not exist; create it or set cluster.namespace")]
    NoNamespace(String),
}

/// Runs jobs as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubernetesExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    client: Client,
    pods: Api<Pod>,
    jobs: Api<KubeJob>,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    watch: PodWatch,
    limiter: ratelimit::RateLimiter,
    api: Option<WindmillApi>,
    _stop: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor")
            .field("namespace", &self.inner.config.settings.cluster.namespace)
            .finish()
    }
}

/// The result of one attempt.
enum Attempt {
    /// The job's outcome.
    Done(Completion),
    /// User code never started: try again as a new attempt.
    SystemRetry(String),
}

impl KubernetesExecutor {
    /// Builds a client from the config, checks the namespace, and starts the shared pod watch.
    pub async fn connect(config: Arc<Config>) -> Result<Self, Error> {
        let cluster = &config.settings.cluster;
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
        let client = Client::try_from(kube_config).map_err(|e| Error::Config(e.to_string()))?;
        let namespace = cluster.namespace.clone();
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
        let watch = PodWatch::spawn(
            pods.clone(),
            render::group_selector(&config.settings),
            stop.clone(),
        );
        let limiter = ratelimit::RateLimiter::new(
            config.settings.executor.api_qps,
            config.settings.executor.api_burst,
        );
        let api = match (&config.windmill_url, &config.windmill_token) {
            (Some(url), Some(token)) => Some(
                WindmillApi::new(url, token.clone())
                    .map_err(|e| Error::Config(format!("Windmill API client: {e}")))?,
            ),
            _ => None,
        };
        let inner = Inner {
            api,
            jobs: Api::namespaced(client.clone(), &namespace),
            config_maps: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client.clone(), &namespace),
            pods,
            client,
            watch,
            limiter,
            config,
            _stop: stop.drop_guard(),
        };
        let this = Self {
            inner: Arc::new(inner),
        };
        this.inner.watch.synced().await;
        Ok(this)
    }

    /// The client, for tests and adoption.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Kubernetes API requests made so far through the rate limiter (the shared pod watch aside).
    #[must_use]
    pub fn api_requests(&self) -> u64 {
        self.inner.limiter.requests()
    }

    /// The pod settings of a job (hints resolved), or the failure to hand back.
    pub fn pod_settings(&self, job: &Job) -> Result<PodSettings, JobFailure> {
        pod_settings(&self.inner.config, job)
    }

    /// Runs a job to its outcome.
    pub async fn run(&self, job: &Job, cancel: CancellationToken, logs: &LogSink) -> Completion {
        let started = Instant::now();
        let failed = |failure: JobFailure| Completion {
            outcome: Outcome::Failure(failure),
            duration: started.elapsed(),
            memory_peak_kib: None,
        };
        let pod = match self.pod_settings(job) {
            Ok(pod) => pod,
            Err(failure) => return failed(failure),
        };
        // A token for the job's user (WM_TOKEN), and `$var:`/`$res:` args read with it.
        let token = match (&self.inner.api, &job.permissioned_as_email) {
            (Some(api), Some(_)) => match api
                .impersonate(job, pod.timeout.value + Duration::from_secs(600))
                .await
            {
                Ok(token) => Some(token),
                Err(error) => {
                    return failed(JobFailure::new(
                        FailureCategory::ConfigError,
                        "JobTokenError",
                        format!(
                            "{error}; check FLEXT_WINDMILL_URL and that FLEXT_WINDMILL_TOKEN is a superadmin token"
                        ),
                    ));
                }
            },
            _ => None,
        };
        let args = match (&self.inner.api, &token) {
            (Some(api), Some(token)) => match job.args_object() {
                Ok(args) => api.resolve(&job.workspace, &args, token).await,
                Err(failure) => Err(failure),
            },
            _ => resolve_args(job, &self.inner.config),
        };
        let completion = match args {
            Ok(args) => {
                self.run_attempts(job, &cancel, logs, &pod, &args, token.as_ref())
                    .await
            }
            Err(failure) => failed(failure),
        };
        if let (Some(api), Some(token)) = (&self.inner.api, &token)
            && let Err(error) = api.delete_token(token).await
        {
            tracing::warn!(%error, "deleting the job's token failed; it expires by itself");
        }
        completion
    }

    async fn run_attempts(
        &self,
        job: &Job,
        cancel: &CancellationToken,
        logs: &LogSink,
        pod: &PodSettings,
        args: &serde_json::Map<String, serde_json::Value>,
        token: Option<&crate::config::Secret>,
    ) -> Completion {
        let started = Instant::now();
        let failed = |failure: JobFailure| Completion {
            outcome: Outcome::Failure(failure),
            duration: started.elapsed(),
            memory_peak_kib: None,
        };
        let budget = pod.retries.value;
        let mut delays = crate::backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
        let id = job.id.to_string();
        let waker = self.inner.watch.waker(&id);
        let mut last_reason = String::new();
        // A restarted worker follows the attempt that is already running instead of starting one.
        let first = self.latest_attempt(job).await.unwrap_or(1);
        for attempt in first..=budget.saturating_add(1).max(first) {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let result = self
                .attempt(job, attempt, pod, args, token, &nonce, cancel, logs, &waker)
                .await;
            match result {
                Attempt::Done(completion) => {
                    self.inner.watch.forget(&id);
                    return completion;
                }
                Attempt::SystemRetry(reason) => {
                    self.delete_attempt(job, attempt).await;
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
                            return Completion { outcome: Outcome::Canceled, duration: started.elapsed(), memory_peak_kib: None };
                        }
                    }
                }
            }
        }
        self.inner.watch.forget(&id);
        failed(JobFailure::new(
            FailureCategory::PodLost,
            "SystemRetriesExhausted",
            format!(
                "the pod was lost before the script started {} time(s), last: {last_reason}; raise `retries` in the script's `k8s:` hints or check the cluster",
                budget.saturating_add(1)
            ),
        ))
    }

    /// Deletes every object of a job (after the hand-back; TTL is the backstop).
    pub async fn finished(&self, job: &Job) {
        self.delete_all(job.id).await;
    }

    /// The Windmill jobs whose Kubernetes Jobs exist in this worker group.
    pub async fn running_jobs(&self) -> Result<Vec<crate::domain::JobId>, kube::Error> {
        self.inner.limiter.acquire().await;
        let jobs = self
            .inner
            .jobs
            .list(
                &ListParams::default().labels(&render::group_selector(&self.inner.config.settings)),
            )
            .await?;
        let mut ids: Vec<crate::domain::JobId> = jobs
            .items
            .iter()
            .filter_map(|j| {
                j.metadata
                    .labels
                    .as_ref()?
                    .get(render::LABEL_JOB_ID)?
                    .parse()
                    .ok()
            })
            .map(crate::domain::JobId)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The newest attempt that exists for a job, if any.
    async fn latest_attempt(&self, job: &Job) -> Option<u32> {
        self.inner.limiter.acquire().await;
        let selector = format!("{}={}", render::LABEL_JOB_ID, job.id);
        let jobs = self
            .inner
            .jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        jobs.items
            .iter()
            .filter_map(|j| {
                j.metadata
                    .labels
                    .as_ref()?
                    .get(render::LABEL_ATTEMPT)?
                    .parse()
                    .ok()
            })
            .max()
    }

    /// Deletes every Kubernetes object of a job.
    pub async fn delete_all(&self, id: crate::domain::JobId) {
        let selector = format!("{}={}", render::LABEL_JOB_ID, id);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        self.inner.limiter.acquire().await;
        if let Err(error) = self
            .inner
            .jobs
            .delete_collection(&params, &ListParams::default().labels(&selector))
            .await
        {
            tracing::warn!(%error, "deleting the finished job's Kubernetes Job failed; ttlSecondsAfterFinished will remove it");
        }
    }

    async fn delete_attempt(&self, job: &Job, attempt: u32) {
        let name = render::object_name(job, attempt);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        self.inner.limiter.acquire().await;
        let _ = self.inner.jobs.delete(&name, &params).await;
        self.inner.limiter.acquire().await;
        let _ = self
            .inner
            .config_maps
            .delete(&name, &DeleteParams::default())
            .await;
        self.inner.limiter.acquire().await;
        let _ = self
            .inner
            .secrets
            .delete(&name, &DeleteParams::default())
            .await;
    }

    #[allow(clippy::too_many_arguments, clippy::too_many_lines)] // one attempt's state machine reads best in one place
    async fn attempt(
        &self,
        job: &Job,
        attempt: u32,
        pod_settings: &PodSettings,
        args: &serde_json::Map<String, serde_json::Value>,
        token: Option<&crate::config::Secret>,
        nonce: &str,
        cancel: &CancellationToken,
        logs: &LogSink,
        waker: &tokio::sync::Notify,
    ) -> Attempt {
        let settings = &self.inner.config.settings;
        let started = Instant::now();
        let cx = Context {
            settings,
            pod: pod_settings,
            attempt,
            nonce,
            args,
            token: token.map(crate::config::Secret::expose),
            base_url: self.inner.config.windmill_url.as_deref(),
        };
        let objects = render::render(job, &cx);
        let mut follower = LogFollower::default();
        let nonce = match self.create(&objects, cancel, logs).await {
            Created::Fresh => {
                if job.prior_output_lines > 0 {
                    logs.note("running the script again: the output above is from an earlier run that did not finish");
                }
                nonce.to_owned()
            }
            Created::Adopted(existing) => {
                // The output of this pod that a stopped worker already logged is not repeated.
                follower.skip = job.prior_output_lines;
                existing
            }
            Created::Canceled => return Attempt::Done(canceled(started)),
            Created::Failed(failure) => {
                return Attempt::Done(Completion {
                    outcome: Outcome::Failure(failure),
                    duration: started.elapsed(),
                    memory_peak_kib: None,
                });
            }
        };
        // The objects are in the cluster now; a job may wait for capacity for a long time, so
        // their copy here is not kept.
        drop(objects);
        let id = job.id.to_string();
        let memory_limit = pod_settings.memory.value.limit.to_string();
        let mut decoder = trailer::Decoder::new(&nonce, settings.executor.max_result_bytes.0);
        let mut last_note = String::new();
        let mut pending_since: Option<Instant> = None;
        let mut pulling_since: Option<Instant> = None;
        let mut seen_pod = false;
        let mut started_user_code = false;
        let mut stream: Option<LineStream> = None;
        let mut recheck = true;
        loop {
            let pod = if recheck {
                self.inner.watch.pod(&id, attempt)
            } else {
                None
            };
            if !recheck {
                // Only log lines arrived: no need to look at the pod again.
            } else if let Some(pod) = &pod {
                seen_pod = true;
                started_user_code |= classify::user_code_started(pod);
                let state = classify::assess(pod);
                if !matches!(state, PodState::Unschedulable(_)) {
                    pending_since = None;
                }
                if !matches!(state, PodState::PullingImage { .. }) {
                    pulling_since = None;
                }
                match state {
                    PodState::Unschedulable(message) => {
                        let since = *pending_since.get_or_insert_with(Instant::now);
                        note_once(
                            logs,
                            &mut last_note,
                            &format!("waiting for capacity: {message}"),
                        );
                        if since.elapsed() > settings.executor.pending_budget.0 {
                            self.delete_attempt(job, attempt).await;
                            return Attempt::Done(failure(
                                started,
                                FailureCategory::Unschedulable,
                                "Unschedulable",
                                format!(
                                    "no node could take the pod within {} (executor.pending_budget): {message}; lower the script's `k8s:` resource hints or add capacity",
                                    settings.executor.pending_budget
                                ),
                            ));
                        }
                    }
                    PodState::PullingImage { image, message } => {
                        let since = *pulling_since.get_or_insert_with(Instant::now);
                        note_once(
                            logs,
                            &mut last_note,
                            &format!("pulling image {image}: {message}"),
                        );
                        if since.elapsed() > settings.executor.image_pull_grace.0 {
                            self.delete_attempt(job, attempt).await;
                            return Attempt::Done(failure(
                                started,
                                FailureCategory::ImagePull,
                                "ImagePullError",
                                format!(
                                    "image `{image}` could not be pulled within {} (executor.image_pull_grace): {message}; check the image name in the script's `image=` hint or executor.images, and the registry credentials",
                                    settings.executor.image_pull_grace
                                ),
                            ));
                        }
                    }
                    PodState::InvalidImage { image, message } => {
                        self.delete_attempt(job, attempt).await;
                        return Attempt::Done(failure(
                            started,
                            FailureCategory::ImagePull,
                            "InvalidImageName",
                            format!(
                                "image `{image}` is not a valid image name ({message}); fix the script's `image=` hint or executor.images"
                            ),
                        ));
                    }
                    PodState::ConfigError(message) => {
                        self.delete_attempt(job, attempt).await;
                        return Attempt::Done(failure(
                            started,
                            FailureCategory::ConfigError,
                            "CreateContainerConfigError",
                            format!(
                                "the pod's container could not be created: {message}; check the Secrets, ConfigMaps and service account the script's hints name"
                            ),
                        ));
                    }
                    PodState::Starting(reason) => {
                        note_once(logs, &mut last_note, &format!("pod starting: {reason}"));
                    }
                    PodState::Running => {
                        if stream.is_none() {
                            stream = self.open_log(pod, &mut follower, true).await;
                        }
                    }
                    PodState::Terminated {
                        exit_code,
                        reason,
                        message,
                    } => {
                        // Everything the container printed, then the verdict. A clean exit
                        // always printed a trailer: wait longer for it than after a crash, and
                        // not at all after an OOM kill (the runner died with the script).
                        let patience = match (exit_code, reason.as_str()) {
                            (_, "OOMKilled") => Duration::ZERO,
                            (0, _) => Duration::from_secs(30),
                            _ => Duration::from_secs(5),
                        };
                        self.read_to_end(
                            pod,
                            stream.take(),
                            &mut follower,
                            &mut decoder,
                            logs,
                            patience,
                        )
                        .await;
                        let trailer = decoder.finish();
                        let duration = trailer
                            .as_ref()
                            .ok()
                            .and_then(|t| t.duration_ms)
                            .map_or_else(|| started.elapsed(), Duration::from_millis);
                        let memory_peak_kib = trailer
                            .as_ref()
                            .ok()
                            .and_then(|t| t.memory_peak_kib)
                            .and_then(|k| i32::try_from(k).ok());
                        let outcome = if reason == "OOMKilled" {
                            Outcome::Failure(JobFailure::new(
                                FailureCategory::OomKilled,
                                "OOMKilled",
                                format!(
                                    "the script ran out of memory (limit {memory_limit}); raise `memory` in the script's `# k8s:` hints"
                                ),
                            ))
                        } else {
                            match trailer {
                                Ok(t) if t.status == Status::Ok && exit_code == 0 => {
                                    Outcome::Success(t.payload)
                                }
                                Ok(t) => Outcome::Failure(user_failure(&t.payload)),
                                Err(trailer::Error::TooLarge { size, limit }) => {
                                    Outcome::Failure(JobFailure::new(
                                        FailureCategory::ResultInvalid,
                                        "ResultTooLarge",
                                        format!(
                                            "the result is {size} bytes, more than the limit of {limit} bytes (executor.max_result_bytes); return less data"
                                        ),
                                    ))
                                }
                                Err(error) => Outcome::Failure(JobFailure::new(
                                    if exit_code == 0 {
                                        FailureCategory::ResultInvalid
                                    } else {
                                        FailureCategory::UserError
                                    },
                                    if exit_code == 0 {
                                        "ResultInvalid"
                                    } else {
                                        "ExitCode"
                                    },
                                    format!(
                                        "the container ended with exit code {exit_code} ({reason}) and {error}; {}",
                                        message.trim()
                                    ),
                                )),
                            }
                        };
                        return Attempt::Done(Completion {
                            outcome,
                            duration,
                            memory_peak_kib,
                        });
                    }
                    PodState::Disrupted { reason, message } => {
                        if started_user_code {
                            self.read_to_end(
                                pod,
                                stream.take(),
                                &mut follower,
                                &mut decoder,
                                logs,
                                Duration::ZERO,
                            )
                            .await;
                            return Attempt::Done(failure(
                                started,
                                FailureCategory::PodLost,
                                reason.clone(),
                                format!(
                                    "the pod stopped while the script ran ({reason}: {message}); the script may have been interrupted midway, so it is not retried automatically"
                                ),
                            ));
                        }
                        return Attempt::SystemRetry(format!("{reason}: {message}"));
                    }
                }
            } else if seen_pod && recheck {
                if started_user_code {
                    return Attempt::Done(failure(started, FailureCategory::PodLost, "PodDeleted",
                        "the pod was deleted while the script ran; it is not retried automatically because the script may have had side effects".to_owned()));
                }
                return Attempt::SystemRetry(
                    "the pod was deleted before the script started".into(),
                );
            } else if recheck && started.elapsed() > NO_POD_NOTE_AFTER {
                // The Job exists but its controller made no pod: a quota or an admission policy
                // refuses it. Kubernetes retries; say so in the log instead of staying silent.
                note_once(
                    logs,
                    &mut last_note,
                    &format!(
                        "waiting for the Job controller to create the pod (a quota or an admission policy may refuse it; see `kubectl -n {} describe job {}`)",
                        settings.cluster.namespace,
                        render::object_name(job, attempt)
                    ),
                );
            }
            recheck = false;
            tokio::select! {
                () = waker.notified() => recheck = true,
                line = next_line(&mut stream), if stream.is_some() => match line {
                    Some(Ok(line)) => follower.accept(&line, &mut decoder, logs),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "pod log stream broke; resuming from the last line seen");
                        stream = None;
                        recheck = true;
                    }
                    None => {
                        stream = None;
                        recheck = true;
                    }
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => recheck = true,
                () = cancel.cancelled() => {
                    logs.note("canceled: deleting the Kubernetes Job and its pod");
                    self.delete_attempt(job, attempt).await;
                    return Attempt::Done(canceled(started));
                }
            }
        }
    }

    /// Creates the objects of one attempt, retrying API trouble and quota rejections with
    /// backoff (back-pressure, never a failure), adopting objects that already exist.
    async fn create(
        &self,
        objects: &Objects,
        cancel: &CancellationToken,
        logs: &LogSink,
    ) -> Created {
        let inner = &self.inner;
        let name = objects.job.metadata.name.clone().unwrap_or_default();
        let mut delays =
            crate::backoff::delays(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let result = async {
                // The Job first: a 409 means the attempt exists (an earlier worker made it) and
                // is adopted, never duplicated.
                inner.limiter.acquire().await;
                let (job, fresh) = match inner
                    .jobs
                    .create(&PostParams::default(), &objects.job)
                    .await
                {
                    Ok(created) => (created, true),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        inner.limiter.acquire().await;
                        (inner.jobs.get(&name).await?, false)
                    }
                    Err(error) => return Err(error),
                };
                if !fresh {
                    // Its nonce is in its Secret, unless the worker that made the Job stopped
                    // before the Secret: then the pod is still waiting for it and ours serves.
                    inner.limiter.acquire().await;
                    if let Some(secret) = inner.secrets.get_opt(&name).await? {
                        let nonce = secret
                            .data
                            .and_then(|d| {
                                d.get("nonce")
                                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                            })
                            .unwrap_or_default();
                        return Ok::<_, kube::Error>(Created::Adopted(nonce));
                    }
                }
                // The ConfigMap and Secret belong to the Job: deleting it removes them. The pod
                // waits for them like for any volume.
                let owner = OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: name.clone(),
                    uid: job.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(false),
                    block_owner_deletion: Some(false),
                };
                let mut config_map = objects.config_map.clone();
                config_map.metadata.owner_references = Some(vec![owner.clone()]);
                let mut secret = objects.secret.clone();
                secret.metadata.owner_references = Some(vec![owner]);
                inner.limiter.acquire().await;
                inner.limiter.acquire().await;
                let (config_map, secret) = tokio::join!(
                    create_or_keep(&inner.config_maps, &config_map),
                    create_or_keep(&inner.secrets, &secret)
                );
                config_map?;
                secret?;
                Ok(Created::Fresh)
            }
            .await;
            match result {
                Ok(created) => return created,
                Err(error) => {
                    let (retry, what) = classify_api_error(&error);
                    if !retry {
                        return Created::Failed(JobFailure::new(
                            FailureCategory::ConfigError,
                            "KubernetesRejected",
                            format!(
                                "the Kubernetes API refused the job's objects: {error}; check the worker's RBAC and the script's hints"
                            ),
                        ));
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    logs.note(&format!(
                        "{what}: {error}; retrying in {}ms",
                        delay.as_millis()
                    ));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Created::Canceled,
                    }
                }
            }
        }
    }

    /// Opens the main container's log from where the follower stopped (timestamps on).
    async fn open_log(
        &self,
        pod: &Pod,
        follower: &mut LogFollower,
        follow: bool,
    ) -> Option<LineStream> {
        let name = pod.metadata.name.clone()?;
        let params = LogParams {
            container: Some(MAIN_CONTAINER.into()),
            follow,
            timestamps: true,
            since_time: follower
                .resume_from()
                .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).ok()),
            ..LogParams::default()
        };
        self.inner.limiter.acquire().await;
        match self.inner.pods.log_stream(&name, &params).await {
            Ok(reader) => {
                follower.begin_read();
                Some(Box::pin(futures::stream::unfold(
                    reader,
                    |mut reader| async move {
                        let mut line = Vec::new();
                        match reader.read_until(b'\n', &mut line).await {
                            Ok(0) => None,
                            Ok(_) => Some((Ok(line), reader)),
                            Err(error) => Some((Err(error), reader)),
                        }
                    },
                )))
            }
            Err(error) => {
                tracing::debug!(%error, "opening the pod log failed; retrying");
                None
            }
        }
    }

    /// After the container ended: drains the followed stream, then one plain read from the last
    /// line seen picks up whatever the stream missed (the trailer included).
    async fn read_to_end(
        &self,
        pod: &Pod,
        stream: Option<LineStream>,
        follower: &mut LogFollower,
        decoder: &mut trailer::Decoder,
        logs: &LogSink,
        patience: Duration,
    ) {
        // The followed stream ends with the container's log; stop waiting on it once it goes
        // quiet, so that the plain reads below always get their time.
        if let Some(mut stream) = stream {
            while let Ok(Some(Ok(line))) = tokio::time::timeout(FOLLOW_QUIET, stream.next()).await {
                follower.accept(&line, decoder, logs);
            }
        }
        // The runner prints the trailer before it exits, so a complete read holds it; the API
        // may still fail under load, or the node may lag in serving the last lines: read again
        // (from the last line seen) until the trailer is complete, at least once, then until the
        // deadline.
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(mut stream) = self.open_log(pod, follower, false).await {
                let read_until = tokio::time::Instant::now() + READ_TIMEOUT;
                while let Ok(Some(Ok(line))) =
                    tokio::time::timeout_at(read_until, stream.next()).await
                {
                    follower.accept(&line, decoder, logs);
                }
            }
            if decoder.complete() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

type LineStream = std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

async fn next_line(stream: &mut Option<LineStream>) -> Option<std::io::Result<Vec<u8>>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Tracks what was read of a container's log, to resume without duplicates: `sinceTime` has
/// second precision, so a resumed read repeats the lines of the last second; lines are told apart
/// by their nanosecond timestamps and, for equal ones, by how many were taken.
#[derive(Debug, Default)]
struct LogFollower {
    /// Lines taken per timestamp (only timestamps of the newest second are kept).
    taken: std::collections::HashMap<chrono::DateTime<chrono::Utc>, usize>,
    /// Lines per timestamp in the current read.
    current: std::collections::HashMap<chrono::DateTime<chrono::Utc>, usize>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Output lines to pass over: already logged by a worker that stopped.
    skip: usize,
}

impl LogFollower {
    fn resume_from(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.newest
    }

    fn begin_read(&mut self) {
        self.current.clear();
        if let Some(newest) = self.newest {
            let second = newest.timestamp();
            self.taken.retain(|t, _| t.timestamp() >= second);
        }
    }

    fn accept(&mut self, line: &[u8], decoder: &mut trailer::Decoder, logs: &LogSink) {
        let text = crate::logs::sanitize(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (stamp, text) = match text.split_once(' ') {
            Some((t, rest)) => match chrono::DateTime::parse_from_rfc3339(t) {
                Ok(t) => (Some(t.with_timezone(&chrono::Utc)), rest),
                Err(_) => (None, text),
            },
            None => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(t) => (Some(t.with_timezone(&chrono::Utc)), ""),
                Err(_) => (None, text),
            },
        };
        if let Some(stamp) = stamp {
            let count = self.current.entry(stamp).or_default();
            *count += 1;
            let taken = self.taken.entry(stamp).or_default();
            if *count <= *taken {
                return;
            }
            *taken = *count;
            if self.newest.is_none_or(|t| stamp > t) {
                self.newest = Some(stamp);
            }
        }
        match decoder.push(text) {
            Ok(true) => {}
            Ok(false) if self.skip > 0 => self.skip -= 1,
            Ok(false) => logs.line(text.as_bytes()),
            Err(error) => logs.note(&format!("result trailer: {error}")),
        }
    }
}

enum Created {
    Fresh,
    Adopted(String),
    Canceled,
    Failed(JobFailure),
}

async fn create_or_keep<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether an API error is worth retrying, and how to describe the wait.
fn classify_api_error(error: &kube::Error) -> (bool, &'static str) {
    match error {
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("exceeded quota") =>
        {
            (true, "waiting for quota (back-pressure, not a failure)")
        }
        kube::Error::Api(status)
            if status.code == 429 || status.code >= 500 || status.code == 409 =>
        {
            (true, "the Kubernetes API is busy")
        }
        kube::Error::Api(_) => (false, ""),
        _ => (true, "the Kubernetes API is unreachable"),
    }
}

fn note_once(logs: &LogSink, last: &mut String, message: &str) {
    if last != message {
        logs.note(message);
        message.clone_into(last);
    }
}

fn canceled(started: Instant) -> Completion {
    Completion {
        outcome: Outcome::Canceled,
        duration: started.elapsed(),
        memory_peak_kib: None,
    }
}

fn failure(
    started: Instant,
    category: FailureCategory,
    name: impl Into<String>,
    message: String,
) -> Completion {
    Completion {
        outcome: Outcome::Failure(JobFailure::new(category, name, message)),
        duration: started.elapsed(),
        memory_peak_kib: None,
    }
}

/// The error object a wrapper wrote, as a job failure.
fn user_failure(payload: &serde_json::Value) -> JobFailure {
    let text = |key: &str| {
        payload
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let mut failure = JobFailure::new(
        FailureCategory::UserError,
        text("name").unwrap_or_else(|| "Error".into()),
        text("message").unwrap_or_else(|| payload.to_string()),
    );
    failure.stack = text("stack").filter(|s| !s.is_empty());
    failure
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

/// The job's args when no `$var:`/`$res:` value needs Windmill's API (else the failure saying
/// what to configure).
pub fn resolve_args(
    job: &Job,
    config: &Config,
) -> Result<serde_json::Map<String, serde_json::Value>, JobFailure> {
    let args = job.args_object()?;
    let needs = crate::windmill_api::needs_resolution(&args);
    if !needs.is_empty() {
        let why = if config.windmill_url.is_none() || config.windmill_token.is_none() {
            "set FLEXT_WINDMILL_URL and FLEXT_WINDMILL_TOKEN so the worker can resolve them through Windmill's API"
        } else {
            "the job has no user email (v2_job.permissioned_as_email) to read them as"
        };
        return Err(JobFailure::new(
            FailureCategory::ConfigError,
            "UnresolvedArgs",
            format!(
                "argument(s) {} reference Windmill variables or resources ($var:/$res:); {why}",
                needs.join(", ")
            ),
        ));
    }
    Ok(args)
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
    use super::*;
    use crate::config::LogSettings;
    use crate::domain::JobId;
    use crate::logs::LogHub;
    use crate::queue::{MemoryQueue, Queue};

    #[tokio::test]
    async fn a_resumed_log_read_neither_repeats_nor_loses_lines() {
        let memory = MemoryQueue::new();
        let hub = LogHub::new(Queue::Memory(memory.clone()), LogSettings::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(hub.clone().run(stop.clone()));
        let id = JobId::new_v4();
        let sink = hub.sink(id, "ws");
        let mut decoder = trailer::Decoder::new("n", 1 << 20);
        let mut follower = LogFollower::default();
        let at = |t: &str, text: &str| format!("2026-01-01T00:00:{t}Z {text}\n").into_bytes();

        follower.begin_read();
        for line in [
            at("00.5", "zero"),
            at("01.1", "a"),
            at("01.2", "b"),
            at("01.2", "b again"),
        ] {
            follower.accept(&line, &mut decoder, &sink);
        }
        // The stream broke; sinceTime has second precision, so the server repeats second 01.
        assert_eq!(follower.resume_from().map(|t| t.timestamp() % 60), Some(1));
        follower.begin_read();
        for line in [
            at("01.1", "a"),
            at("01.2", "b"),
            at("01.2", "b again"),
            at("01.2", "b third"),
            at("02.0", "c"),
        ] {
            follower.accept(&line, &mut decoder, &sink);
        }
        // The trailer is not user output.
        for line in
            trailer::encode("n", trailer::Status::Ok, &serde_json::json!(7), None, 1).lines()
        {
            follower.accept(&at("02.5", line), &mut decoder, &sink);
        }
        sink.flush().await;
        assert_eq!(memory.log(id), "zero\na\nb\nb again\nb third\nc\n");
        assert_eq!(decoder.finish().unwrap().payload, serde_json::json!(7));
        stop.cancel();
        task.await.unwrap();
    }
}
