//! Several clusters behind one executor: where each job runs, and what happens when a cluster's
//! API goes away.
//!
//! A job's candidates come from its hints ([`placement`]): the cluster a profile or a `cluster=`
//! hint names (only that one), else every cluster serving the job's tag, in config order. A job
//! whose work already exists on a cluster (a worker before us created it) follows it there. Any
//! other job goes to the first candidate that is ready (its API answered within the last health
//! probe and its pod watch synced) and below its `max_in_flight`; the job log says which and, when
//! it skipped one, why. Once an attempt's objects were sent to a cluster the job stays there: its
//! attempts never run on two clusters. With no candidate available the job waits, saying so,
//! until one is, or its cancel or timeout.
//!
//! Each cluster has its own client, rate limiter, shared watch and readiness
//! ([`super::ClusterExecutor`]); with one cluster nothing here costs a request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{ClusterExecutor, Error};
use crate::config::{ClusterSettings, Config, Settings};
use crate::domain::{Completion, FailureCategory, Job, JobFailure, JobId, Progress};
use crate::hints::PodSettings;
use crate::logs::LogSink;
use crate::metrics::KubeMetrics;
use crate::telemetry::error_chain;

/// How often each cluster's API is asked whether it answers (several clusters only).
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a job with no cluster available waits before looking again.
const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(1);

/// Where a job may run: its candidate clusters in order, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Names of the candidate clusters, in order of preference.
    pub candidates: Vec<String>,
    /// Why these: `cluster=gpu (annotation, line 2)`, or the tag that they serve.
    pub why: String,
}

/// The candidate clusters of a job of `tag` with pod settings `pod`, or the failure to hand
/// back when its `cluster` names one that does not exist or does not serve the tag.
pub fn placement(
    settings: &Settings,
    tag: &str,
    pod: &PodSettings,
) -> Result<Placement, JobFailure> {
    let clusters = settings.clusters();
    let names = || {
        clusters
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(named) = &pod.cluster {
        let Some(cluster) = clusters.iter().find(|c| c.name == named.value) else {
            return Err(JobFailure::new(
                FailureCategory::ConfigError,
                "UnknownCluster",
                format!(
                    "`cluster={}` ({}) names no cluster of this worker; its clusters are {}",
                    named.value,
                    named.source,
                    names()
                ),
            ));
        };
        if !cluster.serves(tag) {
            return Err(JobFailure::new(
                FailureCategory::ConfigError,
                "ClusterDoesNotServeTag",
                format!(
                    "`cluster={}` ({}) does not run jobs of tag `{tag}` (its tags: {}); pick one of the clusters serving `{tag}`",
                    named.value,
                    named.source,
                    cluster.tags.join(", ")
                ),
            ));
        }
        return Ok(Placement {
            candidates: vec![cluster.name.clone()],
            why: format!("cluster={} ({})", named.value, named.source),
        });
    }
    let candidates: Vec<String> = clusters
        .iter()
        .filter(|c| c.serves(tag))
        .map(|c| c.name.clone())
        .collect();
    Ok(Placement {
        why: format!(
            "the first ready cluster serving tag `{tag}`, in config order ({})",
            candidates.join(", ")
        ),
        candidates,
    })
}

/// The cluster a job goes to when all its candidates are ready (for `render`, `hints`, `check`):
/// its settings and the placement, or why the job cannot run.
pub fn first_choice(
    settings: &Settings,
    tag: &str,
    pod: &PodSettings,
) -> Result<(ClusterSettings, Placement), JobFailure> {
    let placement = placement(settings, tag, pod)?;
    let cluster = settings
        .clusters()
        .into_iter()
        .find(|c| Some(&c.name) == placement.candidates.first())
        .unwrap_or_default();
    Ok((cluster, placement))
}

impl Placement {
    /// `# cluster: gpu (why); if it is not ready: a, b` — for `render` and `hints`.
    #[must_use]
    pub fn describe(&self) -> String {
        let first = self.candidates.first().map_or("", String::as_str);
        let rest = &self.candidates[1.min(self.candidates.len())..];
        if rest.is_empty() {
            format!("cluster `{first}` ({})", self.why)
        } else {
            format!(
                "cluster `{first}` ({}); if it is not ready or full: {}",
                self.why,
                rest.join(", ")
            )
        }
    }
}

/// One cluster and its state.
struct Member {
    settings: ClusterSettings,
    /// Set once the cluster was reached (at start, or later by its probe).
    executor: std::sync::OnceLock<ClusterExecutor>,
    /// `None` while ready; else why not, from the last probe.
    down: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    metrics: KubeMetrics,
}

impl Member {
    fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn connected(&self) -> Option<&ClusterExecutor> {
        self.executor.get()
    }

    fn name(&self) -> &str {
        &self.settings().name
    }

    fn down(&self) -> MutexGuard<'_, Option<String>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its executor, when a new job can go here now; else why not.
    fn available(&self) -> Result<&ClusterExecutor, String> {
        let down = self.down().clone();
        if let Some(why) = down {
            return Err(why);
        }
        let executor = self
            .connected()
            .ok_or_else(|| "not connected yet".to_owned())?;
        match self.settings().max_in_flight {
            Some(max) if self.in_flight.load(Ordering::SeqCst) >= max => {
                Err(format!("{max} jobs in flight (its max_in_flight)"))
            }
            _ => Ok(executor),
        }
    }
}

struct Router {
    config: Arc<Config>,
    /// The policy plugins, for a cluster connected later.
    plugins: Option<crate::plugins::Plugins>,
    members: Vec<Member>,
    metrics: KubeMetrics,
    /// The cluster of each job placed and not yet finished.
    placed: Mutex<HashMap<JobId, usize>>,
    _stop: tokio_util::sync::DropGuard,
}

/// Runs jobs as Kubernetes Jobs on one or several clusters.
#[derive(Clone)]
pub struct KubernetesExecutor {
    inner: Arc<Router>,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for member in &self.inner.members {
            list.entry(&format_args!(
                "cluster `{}` (namespace `{}`)",
                member.name(),
                member.settings().namespace
            ));
        }
        list.finish()
    }
}

impl Router {
    /// Tries to connect a cluster that was unreachable: `None` once connected, else why not.
    async fn connect_later(&self, member: &Member) -> Option<String> {
        match ClusterExecutor::connect(
            self.config.clone(),
            member.settings.clone(),
            member.metrics.clone(),
            self.plugins.clone(),
        )
        .await
        {
            Ok(executor) => {
                let _ = member.executor.set(executor);
                tracing::info!(cluster = member.name(), "cluster connected");
                None
            }
            Err(error) => Some(format!("not connected yet: {}", error_chain(&error))),
        }
    }
}

/// Each cluster's state at connect, one line each: `ok` or its error.
pub(super) fn report(states: &[(String, Option<Error>)]) -> String {
    let failed = states.iter().filter(|(_, e)| e.is_some()).count();
    let mut text = format!("{failed} of {} cluster(s) cannot be used:", states.len());
    for (name, error) in states {
        match error {
            None => {
                let _ = write!(
                    text,
                    "\n  cluster `{name}`: reachable, namespace exists, permissions granted"
                );
            }
            Some(error) => {
                let _ = write!(text, "\n  cluster `{name}`: {}", error_chain(error));
            }
        }
    }
    text
}

impl KubernetesExecutor {
    /// Connects to every cluster of the config (`clusters:`, or the one `cluster:`), checking
    /// each one's namespace and permissions; refuses to start when any cannot be used, naming
    /// each cluster's state.
    pub async fn connect(config: Arc<Config>) -> Result<Self, Error> {
        // The plugins first: a worker whose policy cannot run must not take jobs.
        let metrics = KubeMetrics::default();
        let plugins =
            crate::plugins::Plugins::load(&config.settings.plugins, &config.settings.limits)?
                .map(|plugins| plugins.counting(metrics.clone()));
        let clusters = config.settings.clusters();
        let views: Vec<KubeMetrics> = clusters
            .iter()
            .map(|cluster| metrics.for_cluster(&cluster.name))
            .collect();
        let connects = clusters.iter().zip(&views).map(|(cluster, view)| {
            ClusterExecutor::connect(
                config.clone(),
                cluster.clone(),
                view.clone(),
                plugins.clone(),
            )
        });
        let results = futures::future::join_all(connects).await;
        let mut members = Vec::new();
        let mut states = Vec::new();
        for ((cluster, result), metrics) in clusters.iter().zip(results).zip(views) {
            let member = Member {
                settings: cluster.clone(),
                executor: std::sync::OnceLock::new(),
                down: Mutex::new(None),
                in_flight: AtomicUsize::new(0),
                metrics,
            };
            match result {
                Ok(executor) => {
                    member.metrics.set_cluster_ready(true);
                    let _ = member.executor.set(executor);
                    states.push((cluster.name.clone(), None));
                }
                Err(error) => {
                    member.metrics.set_cluster_ready(false);
                    *member.down() = Some(format!("not connected yet: {}", error_chain(&error)));
                    states.push((cluster.name.clone(), Some(error)));
                }
            }
            members.push(member);
        }
        // A cluster that cannot be reached now is connected later by its probe, so a restart does
        // not wait for it; one that answers but cannot be used (no namespace, permissions,
        // config) is a mistake to fix, and so is having no cluster at all.
        let fatal = states.iter().any(|(_, e)| {
            e.as_ref()
                .is_some_and(|e| !matches!(e, Error::Unreachable(_)))
        });
        let none = states.iter().all(|(_, e)| e.is_some());
        if fatal || none {
            // One cluster: its own error, as before there were several.
            if states.len() == 1
                && let Some((_, Some(error))) = states.pop()
            {
                return Err(error);
            }
            return Err(Error::Clusters(states));
        }
        for (name, error) in &states {
            if let Some(error) = error {
                tracing::warn!(cluster = %name, error = %error_chain(error), "cluster unreachable at start: jobs go to the others until its probe connects it");
            }
        }
        let stop = CancellationToken::new();
        let this = Self {
            inner: Arc::new(Router {
                config,
                plugins,
                members,
                metrics,
                placed: Mutex::default(),
                _stop: stop.clone().drop_guard(),
            }),
        };
        if this.inner.members.len() > 1 {
            this.spawn_probes(&stop);
        }
        Ok(this)
    }

    /// Asks each cluster every [`PROBE_EVERY`] whether it is ready, until `stop`.
    fn spawn_probes(&self, stop: &CancellationToken) {
        for index in 0..self.inner.members.len() {
            let router = Arc::downgrade(&self.inner);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let Some(router) = router.upgrade() else {
                        return;
                    };
                    let member = &router.members[index];
                    let state = match member.connected() {
                        Some(executor) => executor.ready().await.err(),
                        None => router.connect_later(member).await,
                    };
                    let changed = state != *member.down();
                    if changed {
                        if let Some(why) = &state {
                            tracing::warn!(
                                cluster = member.name(),
                                why,
                                "cluster not ready: new jobs go to the next one serving their tag"
                            );
                        } else {
                            tracing::info!(cluster = member.name(), "cluster ready again");
                        }
                    }
                    *member.down() = state;
                    drop(router);
                    tokio::select! {
                        () = tokio::time::sleep(PROBE_EVERY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
    }

    /// The index of the cluster named `name`.
    fn member(&self, name: &str) -> Option<usize> {
        self.inner.members.iter().position(|m| m.name() == name)
    }

    /// Ready when some cluster is: each cluster's state otherwise. One cluster is asked now;
    /// several are probed every [`PROBE_EVERY`] already, and their last answers are used.
    pub async fn ready(&self) -> Result<(), String> {
        let members = &self.inner.members;
        if let [member] = members.as_slice()
            && let Some(executor) = member.connected()
        {
            return executor.ready().await;
        }
        let states: Vec<Result<(), String>> = members
            .iter()
            .map(|m| m.down().clone().map_or(Ok(()), Err))
            .collect();
        if states.iter().any(Result::is_ok) {
            return Ok(());
        }
        if let [Err(why)] = states.as_slice() {
            return Err(why.clone());
        }
        Err(members
            .iter()
            .zip(states)
            .map(|(m, s)| format!("cluster `{}`: {}", m.name(), s.err().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// Each cluster's name, namespace, readiness (from the last probe) and jobs in flight.
    #[must_use]
    pub fn cluster_states(&self) -> Vec<crate::worker::ClusterStatus> {
        self.inner
            .members
            .iter()
            .map(|m| {
                let down = m.down().clone();
                crate::worker::ClusterStatus {
                    name: m.name().to_owned(),
                    namespace: m.settings().namespace.clone(),
                    ready: down.is_none(),
                    not_ready_because: down,
                    in_flight: m.in_flight.load(Ordering::SeqCst),
                    warm_pools: m
                        .connected()
                        .map(ClusterExecutor::warm_pools)
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The executor's metrics (API requests, rate-limiter waits, system retries, clusters).
    #[must_use]
    pub fn metrics(&self) -> KubeMetrics {
        self.inner.metrics.clone()
    }

    /// Kubernetes API requests made so far through the clusters' rate limiters.
    #[must_use]
    pub fn api_requests(&self) -> u64 {
        self.inner
            .members
            .iter()
            .filter_map(Member::connected)
            .map(ClusterExecutor::api_requests)
            .sum()
    }

    /// The pod settings of a job (hints resolved), or the failure to hand back.
    pub fn pod_settings(&self, job: &Job) -> Result<PodSettings, JobFailure> {
        super::pod_settings(&self.inner.config, job)
    }

    /// Runs a job to its outcome on the cluster chosen as the module says.
    pub async fn run(
        &self,
        job: &Job,
        cancel: CancellationToken,
        logs: &LogSink,
        progress: &Progress,
    ) -> Completion {
        let started = Instant::now();
        let pod = match self.pod_settings(job) {
            Ok(pod) => pod,
            Err(failure) => return Completion::failed(failure, started.elapsed()),
        };
        let placement = match placement(&self.inner.config.settings, &job.tag, &pod) {
            Ok(placement) => placement,
            Err(failure) => return Completion::failed(failure, started.elapsed()),
        };
        let Some((index, executor)) = self.choose(job, &placement, &cancel, logs, progress).await
        else {
            return Completion::canceled(started.elapsed());
        };
        let member = &self.inner.members[index];
        self.inner
            .placed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id, index);
        member.in_flight.fetch_add(1, Ordering::SeqCst);
        member.metrics.cluster_job_placed();
        let completion = executor.run(job, pod, cancel, logs, progress).await;
        member.in_flight.fetch_sub(1, Ordering::SeqCst);
        member.metrics.cluster_job_left();
        completion
    }

    /// The cluster a job runs on, by index, and its executor: where its work already is, else
    /// the first available candidate (waiting for one); `None` when canceled while waiting.
    async fn choose(
        &self,
        job: &Job,
        placement: &Placement,
        cancel: &CancellationToken,
        logs: &LogSink,
        progress: &Progress,
    ) -> Option<(usize, &ClusterExecutor)> {
        let members = &self.inner.members;
        if let [member] = members.as_slice() {
            // One cluster: connected at start, or the worker would not have started.
            return member.connected().map(|executor| (0, executor));
        }
        // A worker before us created work somewhere: it stays there.
        let found = futures::future::join_all(members.iter().map(|m| async {
            match m.connected() {
                Some(executor) => executor.has_work(job).await,
                None => false,
            }
        }))
        .await;
        if let Some(index) = found.iter().position(|has| *has)
            && let Some(executor) = members[index].connected()
        {
            logs.note(&format!(
                "following the job's work on cluster `{}`, where an earlier worker created it",
                members[index].name()
            ));
            progress.record_cluster(members[index].name());
            return Some((index, executor));
        }
        let mut noted_wait = false;
        loop {
            let mut skipped = Vec::new();
            for name in &placement.candidates {
                let Some(index) = self.member(name) else {
                    continue;
                };
                match members[index].available() {
                    Ok(executor) => {
                        let why = if skipped.is_empty() {
                            placement.why.clone()
                        } else {
                            format!("{} skipped: {}", skipped.len(), skipped.join("; "))
                        };
                        logs.note(&format!("running on cluster `{name}` ({why})"));
                        progress.record_cluster(name);
                        return Some((index, executor));
                    }
                    Err(why) => skipped.push(format!("cluster `{name}`: {why}")),
                }
            }
            if !noted_wait {
                noted_wait = true;
                progress.set_phase("waiting for a cluster");
                logs.note(&format!(
                    "waiting for a cluster: none of {} can take the job now ({}); it runs when one can",
                    placement.candidates.join(", "),
                    skipped.join("; ")
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(WAIT_FOR_CLUSTER) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    /// Deletes every object of a job on the cluster it ran on (after the hand-back).
    pub async fn finished(&self, job: &Job) {
        let index = self
            .inner
            .placed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job.id);
        match index {
            Some(index) => {
                if let Some(executor) = self.inner.members[index].connected() {
                    executor.finished(job).await;
                }
            }
            None => self.delete_all(job.id).await,
        }
    }

    /// The Windmill jobs whose Kubernetes Jobs exist in this worker group, on every cluster; an
    /// error while some cluster is not connected (what runs there is unknown: adoption must not
    /// start anything it might run twice).
    pub async fn running_jobs(&self) -> Result<Vec<JobId>, String> {
        let members = &self.inner.members;
        if let Some(member) = members.iter().find(|m| m.connected().is_none()) {
            return Err(format!(
                "cluster `{}` is not connected yet, so its jobs cannot be listed",
                member.name()
            ));
        }
        let lists = futures::future::join_all(
            members
                .iter()
                .filter_map(Member::connected)
                .map(ClusterExecutor::running_jobs),
        )
        .await;
        let mut ids = Vec::new();
        for list in lists {
            ids.extend(list.map_err(|e| e.to_string())?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes every Kubernetes object of a job, on every cluster.
    pub async fn delete_all(&self, id: JobId) {
        futures::future::join_all(
            self.inner
                .members
                .iter()
                .filter_map(Member::connected)
                .map(|executor| executor.delete_all(id)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hints::{Source, Sourced};

    fn settings(yaml: &str) -> Settings {
        crate::config::Config::from_yaml(yaml, &std::collections::BTreeMap::new())
            .unwrap()
            .settings
    }

    fn pod() -> PodSettings {
        let s = settings("");
        PodSettings::defaults(&s.hints()).unwrap()
    }

    const TWO: &str = "windmill: {tags: [k8s, k8s-gpu]}\nclusters:\n  - {name: general, namespace: a}\n  - {name: gpu, namespace: b, tags: [k8s-gpu]}\n";

    #[test]
    fn a_tag_goes_to_every_cluster_serving_it_in_config_order() {
        let s = settings(TWO);
        let p = placement(&s, "k8s-gpu", &pod()).unwrap();
        assert_eq!(p.candidates, ["general", "gpu"]);
        assert!(p.why.contains("tag `k8s-gpu`"), "{}", p.why);
        assert_eq!(
            placement(&s, "k8s", &pod()).unwrap().candidates,
            ["general"]
        );
    }

    #[test]
    fn a_named_cluster_is_the_only_candidate_and_must_serve_the_tag() {
        let s = settings(TWO);
        let mut pod = pod();
        pod.cluster = Some(Sourced::new("gpu".into(), Source::Annotation { line: 2 }));
        let p = placement(&s, "k8s-gpu", &pod).unwrap();
        assert_eq!(p.candidates, ["gpu"]);
        assert!(p.why.starts_with("cluster=gpu"), "{}", p.why);
        let refused = placement(&s, "k8s", &pod).unwrap_err();
        assert_eq!(refused.name, "ClusterDoesNotServeTag");
        assert!(refused.message.contains("tag `k8s`"), "{}", refused.message);
        pod.cluster = Some(Sourced::new("eu".into(), Source::Annotation { line: 2 }));
        let unknown = placement(&s, "k8s", &pod).unwrap_err();
        assert_eq!(unknown.name, "UnknownCluster");
        assert!(
            unknown.message.contains("`general`, `gpu`"),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn the_single_cluster_mapping_is_a_cluster_named_default() {
        let s = settings("cluster: {namespace: jobs}");
        let clusters = s.clusters();
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].name, "default");
        assert_eq!(clusters[0].namespace, "jobs");
        assert_eq!(
            placement(&s, "k8s", &pod()).unwrap().candidates,
            ["default"]
        );
    }

    #[test]
    fn bad_cluster_lists_are_refused_naming_the_field() {
        for (yaml, field) in [
            (
                "cluster: {namespace: x}\nclusters: [{name: a}]",
                "runtime.config.cluster",
            ),
            (
                "clusters: [{name: a}, {name: a}]",
                "runtime.config.clusters[1].name",
            ),
            ("clusters: [{name: Big}]", "runtime.config.clusters[0].name"),
            (
                "clusters: [{name: a, tags: [other]}]",
                "runtime.config.clusters[0].tags",
            ),
            (
                "windmill: {tags: [k8s, k8s-gpu]}\nclusters: [{name: a, tags: [k8s]}]",
                "runtime.config.clusters",
            ),
            (
                "clusters: [{name: a, max_in_flight: 0}]",
                "runtime.config.clusters[0].max_in_flight",
            ),
            (
                "clusters: [{name: a}]\nprofiles: {k8s: {cluster: b}}",
                "runtime.config.profiles.k8s.cluster",
            ),
        ] {
            let error = crate::config::Config::from_yaml(yaml, &std::collections::BTreeMap::new())
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{yaml}: {error}");
        }
    }
}
