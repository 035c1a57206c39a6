//! What a pod's status says about its job: still waiting (and why), running, or finished (and
//! how). Pure functions over the pod object, so every case is unit-tested.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::render::MAIN_CONTAINER;

/// The state of one attempt's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not bound to a node: the scheduler's message ("0/3 nodes are available: ...").
    Unschedulable(String),
    /// An image cannot be pulled yet (`ErrImagePull`, `ImagePullBackOff`): may recover.
    PullingImage {
        /// The image.
        image: String,
        /// Reason and message.
        message: String,
    },
    /// The image name is invalid: will never recover.
    InvalidImage {
        /// The image.
        image: String,
        /// The kubelet's message.
        message: String,
    },
    /// The container cannot be created (missing Secret or ConfigMap key, bad config).
    ConfigError(String),
    /// Being set up (volumes, init container, container creation).
    Starting(String),
    /// The user's program is running.
    Running,
    /// The main container ended.
    Terminated {
        /// Its exit code.
        exit_code: i32,
        /// `Completed`, `Error`, `OOMKilled`, ...
        reason: String,
        /// The termination message (or log tail).
        message: String,
    },
    /// The pod failed as a whole without the main container ending (evicted, preempted, node
    /// lost, deadline).
    Disrupted {
        /// `Evicted`, `DeadlineExceeded`, `Preempted`, ...
        reason: String,
        /// The message.
        message: String,
    },
}

impl PodState {
    /// A few words for the status page: where the job is (no message: those go to its log).
    #[must_use]
    pub fn phase(&self) -> &'static str {
        match self {
            Self::Unschedulable(_) => "pending: waiting for capacity",
            Self::PullingImage { .. } => "pending: pulling the image",
            Self::InvalidImage { .. } => "failing: invalid image",
            Self::ConfigError(_) => "failing: container config error",
            Self::Starting(_) => "starting",
            Self::Running => "running",
            Self::Terminated { .. } => "terminated",
            Self::Disrupted { .. } => "disrupted",
        }
    }
}

/// Whether the user's code ever started in this pod.
#[must_use]
pub fn user_code_started(pod: &Pod) -> bool {
    main_status(pod).is_some_and(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            || s.last_state
                .as_ref()
                .is_some_and(|st| st.terminated.is_some())
    })
}

fn main_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == MAIN_CONTAINER)
}

/// Reads the pod's state.
///
/// One ordered list of checks where the first that matches is the answer (deleted, main
/// container ended or running, pod failed, unschedulable, a container waiting on an error,
/// starting): it reads best whole, because the order is the logic.
#[must_use]
pub fn assess(pod: &Pod) -> PodState {
    // A pod being deleted that the worker did not delete (it deletes only when canceling, and
    // then stops looking): a user, an eviction or the node took it away. Unless the script had
    // already finished cleanly, that is the verdict, whatever the container reports while it is
    // being stopped.
    if pod.metadata.deletion_timestamp.is_some() {
        let finished_cleanly = main_status(pod)
            .and_then(|s| s.state.as_ref()?.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        if !finished_cleanly {
            return PodState::Disrupted {
                reason: "PodDeleted".into(),
                message: "the pod was deleted (by a user, an eviction or its node)".into(),
            };
        }
    }
    let Some(status) = pod.status.as_ref() else {
        return PodState::Starting("pod created".into());
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    // The main container first: once it has ended, that is the answer.
    if let Some(main) = main_status(pod)
        && let Some(state) = &main.state
    {
        if let Some(t) = &state.terminated {
            return PodState::Terminated {
                exit_code: t.exit_code,
                reason: t.reason.clone().unwrap_or_default(),
                message: t.message.clone().unwrap_or_default(),
            };
        }
        if state.running.is_some() {
            return PodState::Running;
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        let disruption = conditions
            .iter()
            .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
        return PodState::Disrupted {
            reason: status
                .reason
                .clone()
                .or_else(|| disruption.and_then(|c| c.reason.clone()))
                .unwrap_or_else(|| "Failed".into()),
            message: status
                .message
                .clone()
                .or_else(|| disruption.and_then(|c| c.message.clone()))
                .unwrap_or_default(),
        };
    }
    if let Some(scheduled) = conditions.iter().find(|c| c.type_ == "PodScheduled")
        && scheduled.status == "False"
        && scheduled.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Unschedulable(
            scheduled
                .message
                .clone()
                .unwrap_or_else(|| "no node can run the pod".into()),
        );
    }
    // Waiting containers, init containers first.
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in all {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" => {
                return PodState::PullingImage {
                    image: container.image.clone(),
                    message: format!("{reason}: {message}"),
                };
            }
            "InvalidImageName" => {
                return PodState::InvalidImage {
                    image: container.image.clone(),
                    message,
                };
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return PodState::ConfigError(format!("{reason}: {message}"));
            }
            _ => {}
        }
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    PodState::Starting(
        waiting.unwrap_or_else(|| status.phase.clone().unwrap_or_else(|| "Pending".into())),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[allow(clippy::needless_pass_by_value)] // reads best with json! at the call site
    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn unschedulable_quotes_the_scheduler() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient memory."}]}),
        );
        assert_eq!(
            assess(&p),
            PodState::Unschedulable("0/2 nodes are available: 2 Insufficient memory.".into())
        );
        assert!(!user_code_started(&p));
    }

    #[test]
    fn image_pull_errors_are_told_apart_from_invalid_names() {
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
        );
        assert!(matches!(assess(&p), PodState::PullingImage { image, .. } if image == "nope:1"));
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "UPPER", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "InvalidImageName", "message": "bad"}}}]}),
        );
        assert!(matches!(assess(&p), PodState::InvalidImage { .. }));
    }

    #[test]
    fn oom_killed_is_read_from_the_main_container() {
        let p = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "python:3", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(
            assess(&p),
            PodState::Terminated {
                exit_code: 137,
                reason: "OOMKilled".into(),
                message: String::new()
            }
        );
        assert!(user_code_started(&p));
    }

    #[test]
    fn eviction_before_the_container_ran_is_a_disruption() {
        let p = pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        assert_eq!(
            assess(&p),
            PodState::Disrupted {
                reason: "Evicted".into(),
                message: "The node was low on resource: memory.".into()
            }
        );
        assert!(!user_code_started(&p));
    }

    #[test]
    fn a_pod_deleted_under_a_running_script_is_a_disruption_not_a_user_error() {
        let mut p = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "python:3", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(matches!(assess(&p), PodState::Disrupted { reason, .. } if reason == "PodDeleted"));
        assert!(user_code_started(&p));
    }

    #[test]
    fn running_main_container_means_user_code_started() {
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "python:3", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}),
        );
        assert_eq!(assess(&p), PodState::Running);
        assert!(user_code_started(&p));
    }
}
