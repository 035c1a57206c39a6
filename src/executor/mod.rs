//! The `Executor` seam: run a claimed job to an [`Outcome`](crate::domain::Outcome), honouring a
//! cancellation token, writing output into a [`LogSink`] and live figures into a [`Progress`].
//!
//! [`Executor::Kubernetes`] runs each job as a Kubernetes Job ([`kubernetes`]);
//! [`Executor::InProcess`] runs jobs inside the worker process (an echo for queue-path smoke tests
//! and benchmarks, or any handler a test supplies).

mod inprocess;
pub mod kubernetes;

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

pub use inprocess::{Handler, InProcessExecutor};
pub use kubernetes::KubernetesExecutor;

use crate::domain::{
    Completion, FailureCategory, Job, JobFailure, JobKind, Language, LanguageInfo, Progress,
};
use crate::logs::LogSink;

/// Runs claimed jobs.
#[derive(Clone)]
pub enum Executor {
    /// Inside the worker process.
    InProcess(InProcessExecutor),
    /// As Kubernetes Jobs.
    Kubernetes(KubernetesExecutor),
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(e) => f.debug_tuple("InProcess").field(&e.languages()).finish(),
            Self::Kubernetes(e) => e.fmt(f),
        }
    }
}

impl Executor {
    /// Languages this executor runs.
    #[must_use]
    pub fn languages(&self) -> BTreeSet<Language> {
        match self {
            Self::InProcess(e) => e.languages(),
            Self::Kubernetes(_) => LanguageInfo::runnable().map(Language::new).collect(),
        }
    }

    /// Whether the executor can run jobs now (for `/readyz`); else why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self {
            Self::InProcess(_) => Ok(()),
            Self::Kubernetes(k) => k.ready().await,
        }
    }

    /// The executor's metrics, for the worker's registry (fresh, never moved, for in-process).
    #[must_use]
    pub fn metrics(&self) -> crate::metrics::KubeMetrics {
        match self {
            Self::InProcess(_) => crate::metrics::KubeMetrics::default(),
            Self::Kubernetes(k) => k.metrics(),
        }
    }

    /// Job kinds any executor of ours runs.
    pub const KINDS: &'static [&'static str] = &["script", "preview", "flowscript"];

    /// Whether this job can run here; if not, the failure to hand back, naming what is supported.
    pub fn check(&self, job: &Job) -> Result<(), JobFailure> {
        if let Some(failure) = &job.failed_at_claim {
            return Err(failure.clone());
        }
        if let JobKind::Other(kind) = &job.kind {
            return Err(JobFailure::new(
                FailureCategory::InvalidJob,
                "UnsupportedJobKind",
                format!(
                    "flext-kubernetes runs jobs of kind {}, not `{kind}`; give this job a tag served by a stock Windmill \
                     worker instead of `{}`",
                    Self::KINDS.join(", "),
                    job.tag
                ),
            ));
        }
        let languages = self.languages();
        let supported = languages
            .iter()
            .map(Language::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        match &job.language {
            Some(language) if languages.contains(language) => {}
            Some(language) => {
                return Err(JobFailure::new(
                    FailureCategory::InvalidJob,
                    "UnsupportedLanguage",
                    format!(
                        "flext-kubernetes runs {supported}, not `{language}`; give this script a tag served by a Windmill \
                         worker that runs {language} instead of `{}`",
                        job.tag
                    ),
                ));
            }
            None => {
                return Err(JobFailure::new(
                    FailureCategory::InvalidJob,
                    "UnsupportedLanguage",
                    format!("the job has no script language; flext-kubernetes runs {supported}"),
                ));
            }
        }
        if job.code.is_none() {
            let where_ = match job.kind {
                JobKind::Script => {
                    "no `script` row matches the job's workspace and hash (v2_job.runnable_id)"
                }
                JobKind::FlowScript => "no `flow_node` row matches v2_job.runnable_id",
                _ => "v2_job.raw_code is empty",
            };
            return Err(JobFailure::new(
                FailureCategory::InvalidJob,
                "MissingCode",
                format!("the job has no code to run: {where_}; redeploy the script or flow"),
            ));
        }
        job.script_env_pairs()?;
        job.args_object().map(|_| ())
    }

    /// Runs a job until it ends or `cancel` fires (then it returns [`crate::domain::Outcome::Canceled`]).
    /// Live figures (peak memory) go into `progress` while it runs.
    pub async fn run(
        &self,
        job: &Job,
        cancel: CancellationToken,
        logs: &LogSink,
        progress: &Progress,
    ) -> Completion {
        match self {
            Self::InProcess(e) => e.run(job, cancel, logs, progress).await,
            Self::Kubernetes(e) => e.run(job, cancel, logs, progress).await,
        }
    }

    /// Jobs whose work is still running in the executor (Kubernetes Jobs of this worker group).
    pub async fn running_jobs(&self) -> Result<Vec<crate::domain::JobId>, String> {
        match self {
            Self::InProcess(_) => Ok(Vec::new()),
            Self::Kubernetes(e) => e.running_jobs().await,
        }
    }

    /// Removes the work of a job Windmill no longer has.
    pub async fn cleanup(&self, id: crate::domain::JobId) {
        match self {
            Self::InProcess(_) => {}
            Self::Kubernetes(e) => e.delete_all(id).await,
        }
    }

    /// Called after the hand-back committed: the executor may now remove what it created.
    pub async fn finished(&self, job: &Job) {
        match self {
            Self::InProcess(_) => {}
            Self::Kubernetes(e) => e.finished(job).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobKind;

    fn executor() -> Executor {
        Executor::InProcess(InProcessExecutor::echo(&["python3", "bash"]))
    }

    #[test]
    fn unsupported_language_lists_what_is_supported() {
        let mut job = crate::testing::job();
        job.language = Some(Language::new("php"));
        let failure = executor().check(&job).unwrap_err();
        assert_eq!(failure.name, "UnsupportedLanguage");
        assert!(
            failure.message.contains("bash, python3"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("`php`"), "{}", failure.message);
    }

    #[test]
    fn unsupported_kind_lists_the_kinds_we_run() {
        let mut job = crate::testing::job();
        job.kind = JobKind::Other("appscript".into());
        let failure = executor().check(&job).unwrap_err();
        assert_eq!(failure.name, "UnsupportedJobKind");
        assert!(
            failure.message.contains("script, preview, flowscript"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn missing_code_names_where_it_was_looked_for() {
        let mut job = crate::testing::job();
        job.code = None;
        job.kind = JobKind::Script;
        let failure = executor().check(&job).unwrap_err();
        assert!(
            failure.message.contains("runnable_id"),
            "{}",
            failure.message
        );
        job.kind = JobKind::Preview;
        let failure = executor().check(&job).unwrap_err();
        assert!(failure.message.contains("raw_code"), "{}", failure.message);
    }
}
