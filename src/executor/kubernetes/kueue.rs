//! Kueue admission: why a Job in a `LocalQueue` waits. Kueue keeps the answer on the Job's
//! Workload (`kueue.x-k8s.io/v1beta2`), not on the Job: condition `QuotaReserved` is `False` with
//! Kueue's own message ("couldn't assign flavors to pod set main: insufficient unused quota for
//! cpu in flavor default, 200m more needed") while it waits, and `Admitted` turns `True` on
//! admission (there is no `Admitted` condition before). See docs/kueue-on-the-bed.md.
//!
//! One shared watch of the namespace's Workloads, started the first time a queued Job waits (a
//! worker whose jobs never name a queue never asks for Kueue's API), keeps only what the job log
//! needs per Job: O(1) requests however many jobs wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Kueue's API group.
pub const GROUP: &str = "kueue.x-k8s.io";

/// Where Kueue stands on one Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No Workload for the Job (yet): Kueue has not seen it, or its Workloads cannot be read
    /// (then why).
    Unknown(Option<String>),
    /// Kueue has not admitted the Job: the condition's reason and message, as Kueue wrote them.
    Waiting(String),
    /// Admitted, in this `ClusterQueue`.
    Admitted(String),
}

#[derive(Debug, Default)]
struct State {
    /// By the name of the Job that owns the Workload.
    by_job: HashMap<String, Admission>,
    relist: Option<HashMap<String, Admission>>,
    /// The watch's last error, cleared by the next event.
    error: Option<String>,
}

/// The shared watch of the job namespace's Kueue Workloads.
#[derive(Clone)]
pub struct AdmissionWatch {
    state: Arc<Mutex<State>>,
    start: Arc<Once>,
    api: Api<DynamicObject>,
    stop: CancellationToken,
}

impl std::fmt::Debug for AdmissionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionWatch").finish_non_exhaustive()
    }
}

/// The Workload API resource (served version v1beta2, what Kueue 0.17 stores).
fn workloads() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1beta2", "Workload"),
        "workloads",
    )
}

impl AdmissionWatch {
    /// A watch of `namespace`'s Workloads, not started until [`Self::admission`] is first
    /// called; it stops with `stop`.
    #[must_use]
    pub fn new(client: Client, namespace: &str, stop: CancellationToken) -> Self {
        Self {
            state: Arc::default(),
            start: Arc::new(Once::new()),
            api: Api::namespaced_with(client, namespace, &workloads()),
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where Kueue stands on the Job named `job` (starting the watch on first use).
    pub fn admission(&self, job: &str) -> Admission {
        self.start.call_once(|| self.spawn());
        let state = self.lock();
        state
            .by_job
            .get(job)
            .cloned()
            .unwrap_or_else(|| Admission::Unknown(state.error.clone()))
    }

    fn spawn(&self) {
        let (this, failing) = (self.clone(), self.clone());
        super::watch::drive(
            watcher::watcher(self.api.clone(), watcher::Config::default()),
            "Kueue Workload",
            self.stop.clone(),
            move |event| this.apply(event),
            move |error| failing.lock().error = Some(error.to_string()),
        );
    }

    fn apply(&self, event: Event<DynamicObject>) {
        let mut state = self.lock();
        state.error = None;
        match event {
            Event::Apply(workload) => {
                if let Some((job, admission)) = read(&workload) {
                    state.by_job.insert(job, admission);
                }
            }
            Event::Delete(workload) => {
                if let Some((job, _)) = read(&workload) {
                    state.by_job.remove(&job);
                }
            }
            Event::Init => state.relist = Some(HashMap::new()),
            Event::InitApply(workload) => {
                if let Some((job, admission)) = read(&workload) {
                    state
                        .relist
                        .get_or_insert_with(HashMap::new)
                        .insert(job, admission);
                }
            }
            Event::InitDone => {
                let fresh = state.relist.take().unwrap_or_default();
                state.by_job = fresh;
            }
        }
    }
}

/// The owning Job's name and where Kueue stands, from a Workload.
fn read(workload: &DynamicObject) -> Option<(String, Admission)> {
    let job = workload
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|owner| owner.kind == "Job" && owner.api_version == "batch/v1")?
        .name
        .clone();
    Some((job, admission(&workload.data)))
}

/// Where Kueue stands, from a Workload's JSON (`status.conditions`, `status.admission`).
#[must_use]
pub fn admission(workload: &serde_json::Value) -> Admission {
    let status = &workload["status"];
    let conditions = status["conditions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let condition = |kind: &str| conditions.iter().find(|c| c["type"].as_str() == Some(kind));
    let text = |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or_default().to_owned();
    if let Some(admitted) = condition("Admitted")
        && admitted["status"].as_str() == Some("True")
    {
        let queue = status["admission"]["clusterQueue"]
            .as_str()
            .unwrap_or_default();
        return Admission::Admitted(queue.to_owned());
    }
    match condition("QuotaReserved") {
        Some(reserved) if reserved["status"].as_str() == Some("True") => {
            Admission::Waiting(format!(
                "{}; waiting for its admission checks",
                text(reserved, "message")
            ))
        }
        Some(reserved) => {
            let message = text(reserved, "message");
            if message.is_empty() {
                Admission::Waiting(text(reserved, "reason"))
            } else {
                Admission::Waiting(message)
            }
        }
        None => Admission::Waiting("Kueue has not evaluated the Workload yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_workload_waiting_for_quota_gives_kueues_message() {
        // As Kueue 0.17 wrote it on the bed (docs/kueue-on-the-bed.md).
        let workload = json!({"status": {"conditions": [{
            "type": "QuotaReserved", "status": "False", "reason": "Pending",
            "message": "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default, 200m more needed"
        }]}});
        assert_eq!(
            admission(&workload),
            Admission::Waiting("couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default, 200m more needed".into())
        );
    }

    #[test]
    fn an_admitted_workload_names_its_cluster_queue() {
        let workload = json!({"status": {
        "admission": {"clusterQueue": "cq"},
        "conditions": [
            {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "Quota reserved in ClusterQueue cq"},
            {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "The workload is admitted"}
        ]}});
        assert_eq!(admission(&workload), Admission::Admitted("cq".into()));
    }

    #[test]
    fn reserved_quota_without_admission_waits_for_the_checks() {
        let workload = json!({"status": {"conditions": [
            {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "Quota reserved in ClusterQueue cq"}
        ]}});
        let Admission::Waiting(message) = admission(&workload) else {
            panic!("not waiting")
        };
        assert!(message.contains("admission checks"), "{message}");
        assert_eq!(
            admission(&json!({})),
            Admission::Waiting("Kueue has not evaluated the Workload yet".into())
        );
    }

    #[test]
    fn a_workload_is_filed_under_the_job_that_owns_it() {
        let workload: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": "job-wm-1-1-abcde", "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "wm-1-1", "uid": "u"}
            ]},
            "status": {}
        }))
        .unwrap();
        let (job, _) = read(&workload).unwrap();
        assert_eq!(job, "wm-1-1");
    }
}
