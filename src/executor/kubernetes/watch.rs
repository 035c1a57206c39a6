//! One shared, label-selected watch of this worker group's pods: every running job reads its pod
//! from here and is woken when it changes. O(1) watches however many jobs run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::render::{LABEL_ATTEMPT, LABEL_JOB_ID};

#[derive(Debug, Default)]
struct Inner {
    /// Pods by job id, then by pod name.
    pods: HashMap<String, HashMap<String, Pod>>,
    /// Wakers by job id.
    wakers: HashMap<String, Arc<Notify>>,
    /// Pods seen in the current relist (between `Init` and `InitDone`).
    relist: Option<HashMap<String, HashMap<String, Pod>>>,
    /// Whether the first list completed.
    synced: bool,
}

/// The shared pod watch.
#[derive(Debug, Clone, Default)]
pub struct PodWatch {
    inner: Arc<Mutex<Inner>>,
    synced: Arc<Notify>,
}

fn job_id(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(LABEL_JOB_ID).cloned()
}

impl PodWatch {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches `api` with `selector` until `stop`; restarts the watch on errors (the watcher
    /// itself backs off).
    pub fn spawn(api: Api<Pod>, selector: String, stop: CancellationToken) -> Self {
        let this = Self::default();
        let watch = this.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().labels(&selector);
            let stream = watcher::watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    () = stop.cancelled() => return,
                };
                match event {
                    Some(Ok(event)) => watch.apply(event),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pod watch error; the watcher retries with backoff");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => return,
                }
            }
        });
        this
    }

    fn apply(&self, event: Event<Pod>) {
        // Managed fields are the bulk of a pod object and nothing here reads them: with a
        // thousand jobs in flight they would dominate the worker's memory.
        let event = event.modify(|pod| pod.metadata.managed_fields = None);
        let mut woken = Vec::new();
        {
            let mut inner = self.lock();
            match event {
                Event::Apply(pod) => {
                    if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.clone()) {
                        inner.pods.entry(id.clone()).or_default().insert(name, pod);
                        woken.push(id);
                    }
                }
                Event::Delete(pod) => {
                    if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.as_ref()) {
                        if let Some(pods) = inner.pods.get_mut(&id) {
                            pods.remove(name);
                        }
                        woken.push(id);
                    }
                }
                Event::Init => inner.relist = Some(HashMap::new()),
                Event::InitApply(pod) => {
                    if let (Some(id), Some(name)) = (job_id(&pod), pod.metadata.name.clone()) {
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
                    let old = std::mem::replace(&mut inner.pods, fresh);
                    woken.extend(old.into_keys());
                    woken.extend(inner.pods.keys().cloned());
                    inner.synced = true;
                    self.synced.notify_waiters();
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
        self.lock().synced
    }

    /// Waits until the first list has arrived.
    pub async fn synced(&self) {
        loop {
            let notified = self.synced.notified();
            if self.lock().synced {
                return;
            }
            notified.await;
        }
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
