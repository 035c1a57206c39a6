//! The Kubernetes objects of a job: creating one attempt's Job and Secret (a 409 AlreadyExists
//! is adopted, never duplicated), finding the attempts that exist (in the shared watch of the
//! group's Jobs), and deleting them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::render::{self, Objects};
use crate::domain::{FailureCategory, Job, JobFailure, JobId};
use crate::logs::LogSink;

/// A Kubernetes API error met while creating a job's objects, by what the executor does about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 403 `exceeded quota`: back-pressure, retried until the quota lifts.
    #[error("waiting for quota (back-pressure, not a failure)")]
    Quota(#[source] kube::Error),
    /// 429, 5xx, or a 409 conflict on an object being replaced: retried.
    #[error("the Kubernetes API is busy")]
    Busy(#[source] kube::Error),
    /// No answer (connection, TLS, timeout): retried.
    #[error("the Kubernetes API is unreachable")]
    Unreachable(#[source] kube::Error),
    /// Any other refusal (RBAC, validation, admission): never succeeds by retrying.
    #[error("the Kubernetes API refused the job's objects")]
    Rejected(#[source] kube::Error),
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status)
                if status.code == 403 && status.message.contains("exceeded quota") =>
            {
                Self::Quota(error)
            }
            kube::Error::Api(status)
                if status.code == 429 || status.code >= 500 || status.code == 409 =>
            {
                Self::Busy(error)
            }
            kube::Error::Api(_) => Self::Rejected(error),
            _ => Self::Unreachable(error),
        }
    }
}

impl ApiError {
    /// Whether trying again may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }

    /// The Kubernetes error itself.
    #[must_use]
    pub fn cause(&self) -> &kube::Error {
        match self {
            Self::Quota(e) | Self::Busy(e) | Self::Unreachable(e) | Self::Rejected(e) => e,
        }
    }

    /// The job log's note while waiting to retry.
    #[must_use]
    pub fn waiting_note(&self, delay: Duration) -> String {
        format!(
            "{self}: {}; retrying in {}ms",
            self.cause(),
            delay.as_millis()
        )
    }

    /// The failure handed back when it is not retried.
    #[must_use]
    pub fn to_job_failure(&self) -> JobFailure {
        JobFailure::new(
            FailureCategory::ConfigError,
            "KubernetesRejected",
            format!(
                "{self}: {}; check the worker's RBAC and the script's hints",
                self.cause()
            ),
        )
    }
}

/// How creating an attempt's objects ended.
pub(super) enum Created {
    /// Made by us.
    Fresh,
    /// Made earlier by a worker that stopped; adopted with the nonce in its Secret.
    Adopted(String),
    /// The job was canceled while waiting to retry.
    Canceled,
    /// The API refused them.
    Failed(JobFailure),
}

impl Inner {
    /// Creates the objects of one attempt, retrying API trouble and quota rejections with
    /// backoff (back-pressure, never a failure), adopting objects that already exist.
    pub(super) async fn create(
        &self,
        objects: &Objects,
        cancel: &CancellationToken,
        logs: &LogSink,
    ) -> Created {
        let mut delays =
            crate::backoff::delays(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let error = match self.create_once(objects).await {
                Ok(created) => return created,
                Err(error) => ApiError::from(error),
            };
            if !error.is_retryable() {
                return Created::Failed(error.to_job_failure());
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            logs.note(&error.waiting_note(delay));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return Created::Canceled,
            }
        }
    }

    async fn create_once(&self, objects: &Objects) -> Result<Created, kube::Error> {
        let name = objects.job.metadata.name.clone().unwrap_or_default();
        // The Job first: a 409 means the attempt exists (an earlier worker made it) and is
        // adopted, never duplicated.
        self.limiter.acquire().await;
        let (job, fresh) = match self.jobs.create(&PostParams::default(), &objects.job).await {
            Ok(created) => (created, true),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.limiter.acquire().await;
                (self.jobs.get(&name).await?, false)
            }
            Err(error) => return Err(error),
        };
        if !fresh {
            // Its nonce is in its Secret, unless the worker that made the Job stopped before the
            // Secret: then the pod is still waiting for it and ours serves.
            self.limiter.acquire().await;
            if let Some(secret) = self.secrets.get_opt(&name).await? {
                return Ok(Created::Adopted(nonce_of(secret)));
            }
        }
        // The Secret belongs to the Job: deleting the Job removes it. The pod waits for it like
        // for any volume.
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: name.clone(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        };
        let mut secret = objects.secret.clone();
        secret.metadata.owner_references = Some(vec![owner]);
        self.limiter.acquire().await;
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(Created::Fresh),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Created::Fresh),
            Err(error) => Err(error),
        }
    }

    /// The nonce an attempt's pod marks its trailer with, from the Secret it reads it from (an
    /// adopted attempt's, cold or warm); empty when the Secret has none.
    pub(super) async fn nonce_in(&self, secret: &str) -> String {
        self.limiter.acquire().await;
        match self.secrets.get_opt(secret).await {
            Ok(Some(secret)) => nonce_of(secret),
            Ok(None) | Err(_) => String::new(),
        }
    }

    /// The Windmill jobs whose Kubernetes Jobs exist in this worker group: from the shared
    /// watch once it has synced, else listed.
    pub(super) async fn running_jobs(&self) -> Result<Vec<JobId>, kube::Error> {
        let ids = if self.index.is_synced() {
            self.index.jobs()
        } else {
            self.list_jobs(
                &render::group_selector(&self.config.settings),
                render::LABEL_JOB_ID,
            )
            .await?
        };
        // Jobs on warm pods have no Kubernetes Job: their pods carry the job's labels.
        let warm = self.watch.assigned_warm().into_iter().map(|(id, _, _)| id);
        let mut ids: Vec<JobId> = ids
            .into_iter()
            .chain(warm)
            .filter_map(|id| id.parse().ok())
            .map(JobId)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The newest attempt that exists for a job, if any: from the shared watch once it has
    /// synced (no request), else listed.
    pub(super) async fn latest_attempt(&self, job: &Job) -> Option<u32> {
        let id = job.id.to_string();
        let warm = self
            .watch
            .assigned_warm()
            .into_iter()
            .filter(|(of, _, _)| *of == id)
            .map(|(_, attempt, _)| attempt)
            .max();
        if self.index.is_synced() {
            return self.index.latest_attempt(&id).max(warm);
        }
        let selector = format!("{}={id}", render::LABEL_JOB_ID);
        self.list_jobs(&selector, render::LABEL_ATTEMPT)
            .await
            .ok()?
            .iter()
            .filter_map(|attempt| attempt.parse().ok())
            .max()
            .max(warm)
    }

    pub(super) fn lock_warm_jobs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<JobId, (u32, String)>> {
        self.warm_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The warm pod an attempt of a job was handed to, by this worker or one before it.
    pub(super) fn assigned_warm_pod(&self, id: JobId, attempt: u32) -> Option<String> {
        if let Some((a, pod)) = self.lock_warm_jobs().get(&id)
            && *a == attempt
        {
            return Some(pod.clone());
        }
        let id = id.to_string();
        self.watch
            .assigned_warm()
            .into_iter()
            .find(|(of, a, _)| *of == id && *a == attempt)
            .map(|(_, _, pod)| pod)
    }

    /// Deletes a warm pod (its Secret goes with it).
    async fn delete_pod(&self, pod: &str) {
        // Its hand-over slot goes too (with a job its runner never fetched, if so).
        if let Some(pools) = &self.warm {
            pools.forget(pod);
        }
        self.limiter.acquire().await;
        if let Err(error) = self.pods.delete(pod, &DeleteParams::default()).await
            && !matches!(&error, kube::Error::Api(status) if status.code == 404)
        {
            tracing::warn!(%error, pod, "deleting a warm pod failed; its deadline ends it");
        }
    }

    /// The value of `label` on every Kubernetes Job `selector` selects.
    async fn list_jobs(&self, selector: &str, label: &str) -> Result<Vec<String>, kube::Error> {
        self.limiter.acquire().await;
        let jobs = self
            .jobs
            .list(&ListParams::default().labels(selector))
            .await?;
        Ok(jobs
            .items
            .into_iter()
            .filter_map(|j| j.metadata.labels?.remove(label))
            .collect())
    }

    /// Deletes every Kubernetes object of a job.
    pub(super) async fn delete_all(&self, id: JobId) {
        let warm = self.lock_warm_jobs().remove(&id).map(|(_, pod)| pod);
        let text = id.to_string();
        let adopted = self
            .watch
            .assigned_warm()
            .into_iter()
            .filter(|(of, _, _)| *of == text)
            .map(|(_, _, pod)| pod);
        let mut pods: Vec<String> = warm.into_iter().chain(adopted).collect();
        pods.sort();
        pods.dedup();
        for pod in &pods {
            self.delete_pod(pod).await;
        }
        let selector = format!("{}={}", render::LABEL_JOB_ID, id);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        self.limiter.acquire().await;
        if let Err(error) = self
            .jobs
            .delete_collection(&params, &ListParams::default().labels(&selector))
            .await
        {
            tracing::warn!(%error, "deleting the finished job's Kubernetes Job failed; ttlSecondsAfterFinished will remove it");
        }
    }

    /// Deletes one attempt's Job, its pods first (foreground: a next attempt must not overlap
    /// it); the garbage collector removes its Secret, which the Job owns.
    pub(super) async fn delete_attempt(&self, job: &Job, attempt: u32) {
        if let Some(pod) = self.assigned_warm_pod(job.id, attempt) {
            self.delete_pod(&pod).await;
            return;
        }
        let name = render::object_name(job, attempt);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        self.limiter.acquire().await;
        let _ = self.jobs.delete(&name, &params).await;
    }
}

/// The `nonce` key of an attempt's Secret.
fn nonce_of(secret: k8s_openapi::api::core::v1::Secret) -> String {
    secret
        .data
        .and_then(|d| {
            d.get("nonce")
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn quota_and_busy_errors_are_retried_and_refusals_are_not() {
        let quota = ApiError::from(status(403, "exceeded quota: compute"));
        assert!(quota.is_retryable());
        assert!(
            quota
                .waiting_note(Duration::from_millis(400))
                .starts_with("waiting for quota (back-pressure, not a failure): "),
            "{}",
            quota.waiting_note(Duration::from_millis(400))
        );
        for code in [429, 500, 503, 409] {
            let busy = ApiError::from(status(code, "x"));
            assert!(matches!(busy, ApiError::Busy(_)), "{code}: {busy:?}");
        }
        let refused = ApiError::from(status(403, "forbidden: cannot create jobs"));
        assert!(!refused.is_retryable());
        let failure = refused.to_job_failure();
        assert_eq!(failure.name, "KubernetesRejected");
        assert!(
            failure.message.contains("cannot create jobs"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("RBAC"), "{}", failure.message);
    }
}
