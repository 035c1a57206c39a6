//! Two shared, label-selected watches per cluster, O(1) however many jobs run: the worker group's
//! pods ([`PodWatch`]: every running job reads its pod from here and is woken when it changes),
//! and its Jobs' metadata ([`JobIndex`]: which attempts of which job exist, read before creating
//! one instead of a list request per job).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::render::{LABEL_ATTEMPT, LABEL_JOB_ID, LABEL_WARM_POOL};

#[derive(Debug, Default)]
struct Inner {
    /// Pods by job id, then by pod name.
    pods: HashMap<String, HashMap<String, Pod>>,
    /// Wakers by job id.
    wakers: HashMap<String, Arc<Notify>>,
    /// Pods seen in the current relist (between `Init` and `InitDone`).
    relist: Option<HashMap<String, HashMap<String, Pod>>>,
    /// Warm pods not handed a job yet, by name.
    warm: HashMap<String, Pod>,
    /// Warm pods seen in the current relist.
    relist_warm: HashMap<String, Pod>,
}

/// Whether a watch's first list has arrived, and a way to wait for it.
#[derive(Debug, Default)]
struct Synced {
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Synced {
    fn set(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// The shared pod watch.
#[derive(Debug, Clone, Default)]
pub struct PodWatch {
    inner: Arc<Mutex<Inner>>,
    synced: Arc<Synced>,
}

fn job_id(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(LABEL_JOB_ID).cloned()
}

/// Whether a pod is a warm pool's.
#[must_use]
pub fn is_warm(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_WARM_POOL))
}

/// A warm pod not yet handed a job, by name.
fn unassigned_warm(pod: &Pod) -> Option<String> {
    (is_warm(pod) && job_id(pod).is_none())
        .then(|| pod.metadata.name.clone())
        .flatten()
}

impl PodWatch {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches `api` with `selector` until `stop`; restarts the watch on errors (the watcher
    /// itself backs off).
    pub fn spawn(api: Api<Pod>, selector: &str, stop: CancellationToken) -> Self {
        let this = Self::default();
        let watch = this.clone();
        let config = watcher::Config::default().labels(selector);
        drive(
            watcher::watcher(api, config),
            "pod",
            stop,
            move |event| watch.apply(event),
            |_| {},
        );
        this
    }

    fn apply(&self, event: Event<Pod>) {
        // Only the labels, name, creation time and status are read (`classify`, `follow`): the
        // spec and the managed fields are the bulk of a pod object, and with a thousand jobs in
        // flight they would dominate the worker's memory.
        let event = event.modify(|pod| {
            pod.metadata.managed_fields = None;
            pod.metadata.annotations = None;
            pod.spec = None;
        });
        let mut woken = Vec::new();
        {
            let mut inner = self.lock();
            match event {
                Event::Apply(pod) => {
                    if let Some(name) = &pod.metadata.name {
                        inner.warm.remove(name);
                    }
                    if let Some(name) = unassigned_warm(&pod) {
                        inner.warm.insert(name, pod);
                    } else if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.clone())
                    {
                        inner.pods.entry(id.clone()).or_default().insert(name, pod);
                        woken.push(id);
                    }
                }
                Event::Delete(pod) => {
                    if let Some(name) = &pod.metadata.name {
                        inner.warm.remove(name);
                    }
                    if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.as_ref()) {
                        if let Some(pods) = inner.pods.get_mut(&id) {
                            pods.remove(name);
                        }
                        woken.push(id);
                    }
                }
                Event::Init => {
                    inner.relist = Some(HashMap::new());
                    inner.relist_warm.clear();
                }
                Event::InitApply(pod) => {
                    if let Some(name) = unassigned_warm(&pod) {
                        inner.relist_warm.insert(name, pod);
                    } else if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.clone())
                    {
                        inner
                            .relist
                            .get_or_insert_with(HashMap::new)
                            .entry(id)
                            .or_default()
                            .insert(name, pod);
                    }
                }
                Event::InitDone => {
                    let fresh = inner.relist.take().unwrap_or_default();
                    inner.warm = std::mem::take(&mut inner.relist_warm);
                    let old = std::mem::replace(&mut inner.pods, fresh);
                    woken.extend(old.into_keys());
                    woken.extend(inner.pods.keys().cloned());
                    self.synced.set();
                }
            }
            woken.retain(|id| inner.wakers.contains_key(id));
            woken.sort();
            woken.dedup();
            for id in &woken {
                if let Some(waker) = inner.wakers.get(id) {
                    waker.notify_one();
                }
            }
        }
    }

    /// Whether the first list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.is_set()
    }

    /// Waits until the first list has arrived.
    pub async fn synced(&self) {
        self.synced.wait().await;
    }

    /// The waker of a job: notified whenever one of its pods changes.
    pub fn waker(&self, job: &str) -> Arc<Notify> {
        self.lock()
            .wakers
            .entry(job.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Forgets a job's waker and pods.
    pub fn forget(&self, job: &str) {
        let mut inner = self.lock();
        inner.wakers.remove(job);
        inner.pods.remove(job);
    }

    /// The warm pods not handed a job yet.
    pub fn warm_pods(&self) -> Vec<Pod> {
        self.lock().warm.values().cloned().collect()
    }

    /// The warm pods handed a job: job id, attempt and pod name of each.
    pub fn assigned_warm(&self) -> Vec<(String, u32, String)> {
        let inner = self.lock();
        let mut found = Vec::new();
        for (id, pods) in &inner.pods {
            for (name, pod) in pods {
                let attempt = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_ATTEMPT))
                    .and_then(|a| a.parse().ok());
                if let (true, Some(attempt)) = (is_warm(pod), attempt) {
                    found.push((id.clone(), attempt, name.clone()));
                }
            }
        }
        found
    }

    /// The pod of one attempt of a job, if it exists (the newest one when several do).
    pub fn pod(&self, job: &str, attempt: u32) -> Option<Pod> {
        let attempt = attempt.to_string();
        self.lock()
            .pods
            .get(job)?
            .values()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_ATTEMPT))
                    == Some(&attempt)
            })
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
            .cloned()
    }
}

/// Feeds a watcher's events to `apply` and its errors to `failed` until `stop`, on a task of its
/// own; the watcher restarts itself with backoff after an error.
pub(super) fn drive<K, S>(
    stream: S,
    what: &'static str,
    stop: CancellationToken,
    mut apply: impl FnMut(Event<K>) + Send + 'static,
    mut failed: impl FnMut(&watcher::Error) + Send + 'static,
) where
    K: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let stream = stream.default_backoff();
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = stop.cancelled() => return,
            };
            match event {
                Some(Ok(event)) => apply(event),
                Some(Err(error)) => {
                    tracing::warn!(%error, "{what} watch error; the watcher retries with backoff");
                    failed(&error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return,
            }
        }
    });
}

/// Attempts by Windmill job id.
type Attempts = HashMap<String, BTreeSet<u32>>;

#[derive(Debug, Default)]
struct IndexInner {
    attempts: Attempts,
    /// Jobs seen in the current relist (between `Init` and `InitDone`).
    relist: Option<Attempts>,
}

/// The attempts of the worker group's Kubernetes Jobs, from one shared watch of the Jobs'
/// metadata (labels only: a few hundred bytes a Job).
///
/// Exactly-once does not rest on it: an attempt is created under its deterministic name, and a
/// 409 on that name adopts the Job an earlier worker made. The index says which attempt to
/// create or follow, as the list it replaces did: a worker that stopped made its Jobs long
/// before another claims its jobs again (Windmill waits for its pings to stop), far longer than
/// a watch event takes.
#[derive(Debug, Clone, Default)]
pub struct JobIndex {
    inner: Arc<Mutex<IndexInner>>,
    synced: Arc<Synced>,
}

/// A Job's Windmill job id and attempt, from its labels.
fn attempt_of(job: &PartialObjectMeta<KubeJob>) -> Option<(String, u32)> {
    let labels = job.metadata.labels.as_ref()?;
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    Some((labels.get(LABEL_JOB_ID)?.clone(), attempt))
}

impl JobIndex {
    fn lock(&self) -> MutexGuard<'_, IndexInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the metadata of the Jobs in `namespace` that `selector` selects, until `stop`.
    pub fn spawn(
        client: kube::Client,
        namespace: &str,
        selector: &str,
        stop: CancellationToken,
    ) -> Self {
        let this = Self::default();
        let index = this.clone();
        let api: Api<PartialObjectMeta<KubeJob>> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(selector);
        drive(
            watcher::watcher(api, config),
            "Job",
            stop,
            move |event| index.apply(event),
            |_| {},
        );
        this
    }

    fn apply(&self, event: Event<PartialObjectMeta<KubeJob>>) {
        let mut inner = self.lock();
        match event {
            Event::Apply(job) => {
                if let Some((id, attempt)) = attempt_of(&job) {
                    inner.attempts.entry(id).or_default().insert(attempt);
                }
            }
            Event::Delete(job) => {
                if let Some((id, attempt)) = attempt_of(&job)
                    && let Some(attempts) = inner.attempts.get_mut(&id)
                {
                    attempts.remove(&attempt);
                    if attempts.is_empty() {
                        inner.attempts.remove(&id);
                    }
                }
            }
            Event::Init => inner.relist = Some(Attempts::new()),
            Event::InitApply(job) => {
                if let Some((id, attempt)) = attempt_of(&job) {
                    inner
                        .relist
                        .get_or_insert_with(Attempts::new)
                        .entry(id)
                        .or_default()
                        .insert(attempt);
                }
            }
            Event::InitDone => {
                inner.attempts = inner.relist.take().unwrap_or_default();
                self.synced.set();
            }
        }
    }

    /// Whether the first list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.is_set()
    }

    /// Waits until the first list has arrived.
    pub async fn synced(&self) {
        self.synced.wait().await;
    }

    /// The newest attempt of a job whose Job exists, if any.
    pub fn latest_attempt(&self, job: &str) -> Option<u32> {
        self.lock().attempts.get(job)?.last().copied()
    }

    /// The Windmill job ids that have a Job, sorted.
    pub fn jobs(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().attempts.keys().cloned().collect();
        ids.sort();
        ids
    }
}
