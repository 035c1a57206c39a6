//! Jobs run inside the worker process by a handler function.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::domain::{Completion, Job, Language, Outcome, Progress};
use crate::logs::LogSink;

/// A boxed future borrowing the job and its log.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an in-process executor runs for each job.
pub type Handler = Arc<
    dyn for<'a> Fn(&'a Job, CancellationToken, &'a LogSink) -> BoxFuture<'a, Outcome> + Send + Sync,
>;

/// Runs each job by calling a handler inside the worker process.
#[derive(Clone)]
pub struct InProcessExecutor {
    languages: BTreeSet<Language>,
    handler: Handler,
}

impl InProcessExecutor {
    /// An executor for `languages` that calls `handler`.
    #[must_use]
    pub fn new(languages: &[&str], handler: Handler) -> Self {
        Self {
            languages: languages.iter().map(|l| Language::new(l)).collect(),
            handler,
        }
    }

    /// Every job succeeds with `{"args": <its args>}` after logging one line. Exercises the whole
    /// queue path (claim, logs, heartbeat, hand-back, fix-up) without running user code.
    #[must_use]
    pub fn echo(languages: &[&str]) -> Self {
        Self::new(
            languages,
            Arc::new(|job: &Job, _cancel, logs: &LogSink| {
                Box::pin(async move {
                    logs.line(
                        format!(
                            "echo: {} job {} with {} bytes of code",
                            job.language.as_ref().map_or("?", Language::as_str),
                            job.id,
                            job.code.as_ref().map_or(0, String::len)
                        )
                        .as_bytes(),
                    );
                    Outcome::Success(serde_json::json!({ "args": job.args }))
                })
            }),
        )
    }

    /// Languages it accepts.
    #[must_use]
    pub fn languages(&self) -> BTreeSet<Language> {
        self.languages.clone()
    }

    pub(super) async fn run(
        &self,
        job: &Job,
        cancel: CancellationToken,
        logs: &LogSink,
        // Nothing is measured in process: the worker's own memory is not the job's.
        _progress: &Progress,
    ) -> Completion {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = (self.handler)(job, cancel.clone(), logs) => outcome,
            () = cancel.cancelled() => Outcome::Canceled,
        };
        Completion {
            outcome,
            duration: started.elapsed(),
            memory_peak_kib: None,
            preprocessed_args: None,
        }
    }
}
