//! Domain types: what a Windmill job is to us, and how it ended.
//!
//! Nothing here knows about Postgres, Kubernetes or WASM: the seams (`queue`, `executor`) translate
//! their world into these types.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod kind;
mod language;

pub use kind::JobKind;
pub use language::{LANGUAGES, LanguageInfo, RunnerKind};

/// A Windmill job id (`v2_job.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh random id, as Windmill mints them.
    #[must_use]
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Windmill's `script_lang`, by name (`python3`, `bash`, `bun`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Language(pub String);

impl Language {
    /// A language by Windmill's name.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// Windmill's name of the language.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a flow step sits in its parent flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStep {
    /// The parent flow job.
    pub parent: JobId,
    /// The root flow job (differs from `parent` in nested flows).
    pub root: Option<JobId>,
    /// Index of the step in the parent's `flow_status.modules`.
    pub index: Option<i32>,
    /// The module id (`a`, `b`, ...).
    pub step_id: Option<String>,
}

/// A job this worker has claimed, with everything needed to run it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Windmill's id of the job.
    pub id: JobId,
    /// The workspace the job belongs to.
    pub workspace: String,
    /// What kind of job it is.
    pub kind: JobKind,
    /// The tag it was queued with (one of ours).
    pub tag: String,
    /// The script language, if Windmill knows one.
    pub language: Option<Language>,
    /// The code to run (script content, raw code or flow node code).
    pub code: Option<String>,
    /// The lock file (resolved dependencies).
    pub lock: Option<String>,
    /// The script or flow path (`u/alice/etl`).
    pub path: Option<String>,
    /// The entrypoint when not `main`.
    pub entrypoint: Option<String>,
    /// The arguments as Windmill stored them (normally a JSON object).
    pub args: Value,
    /// Windmill's own timeout for the job, if set.
    pub timeout: Option<Duration>,
    /// Windmill's priority.
    pub priority: Option<i16>,
    /// Parent flow, when this is a flow step.
    pub flow: Option<FlowStep>,
    /// `u/<user>` or `g/<group>`.
    pub permissioned_as: Option<String>,
    /// Email of the user the job runs as.
    pub permissioned_as_email: Option<String>,
    /// Who created the job.
    pub created_by: Option<String>,
    /// `script.envs`: `KEY=VALUE` entries the script's settings add to its environment.
    pub script_envs: Vec<String>,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When it was first started (set at claim).
    pub started_at: DateTime<Utc>,
    /// Lines of the job's own output already in its Windmill log: non-zero when a worker that
    /// stopped had run it, so that a resumed run does not log them twice.
    pub prior_output_lines: usize,
    /// What Windmill's `get_reserved_variables` needs beyond the fields above.
    pub context: JobContext,
    /// Run the script's `preprocessor` before its entrypoint: Windmill pushed the job with
    /// `preprocessed = false` (and it is not a flow's preprocessor step).
    pub preprocess: bool,
    /// Why the job fails before it runs, found at claim (Windmill's "Pulled job preprocessing
    /// error": a debounced argument that is not a list).
    pub failed_at_claim: Option<JobFailure>,
}

/// The facts behind a job's reserved `WM_*` variables that only Windmill's database knows
/// (windmill-common `variables.rs`, `get_reserved_variables`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContext {
    /// `v2_job.trigger` when `trigger_kind = 'schedule'`: the schedule's path.
    pub schedule_path: Option<String>,
    /// The parent flow's `runnable_path`, for a flow step.
    pub flow_path: Option<String>,
    /// `v2_job.flow_innermost_root_job`.
    pub innermost_root: Option<JobId>,
    /// `v2_job.runnable_id`: the script hash.
    pub runnable_id: Option<i64>,
    /// `v2_job_queue.scheduled_for`.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// `job_perms.end_user_email` (set when an app triggered the job).
    pub end_user_email: Option<String>,
    /// The instance setting `base_url` (`global_settings`), when set.
    pub base_url: Option<String>,
    /// The workspace's custom environment variables (`workspace_env`), by name.
    pub workspace_envs: std::collections::BTreeMap<String, String>,
    /// `v2_job.cache_ttl` in seconds: the result may come from, and goes to, Windmill's cache.
    pub cache_ttl: Option<i32>,
    /// With a `cache_ttl`: each arg's name and its JSON text as Windmill reads it from
    /// `v2_job.args`, in name order (the cache key hashes them).
    pub cache_args: Vec<(String, String)>,
}

impl Job {
    /// A job made from a local script file, as if pushed as a preview (for `render` and `hints`).
    #[must_use]
    pub fn local(
        path: &std::path::Path,
        code: String,
        language: &str,
        args: Value,
        tag: &str,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: JobId(Uuid::nil()),
            workspace: "local".into(),
            kind: JobKind::Preview,
            tag: tag.to_owned(),
            language: Some(Language::new(language)),
            code: Some(code),
            lock: None,
            path: Some(path.display().to_string()),
            entrypoint: None,
            args,
            timeout: None,
            priority: None,
            flow: None,
            permissioned_as: None,
            permissioned_as_email: None,
            created_by: None,
            script_envs: Vec::new(),
            created_at: now,
            started_at: now,
            prior_output_lines: 0,
            context: JobContext::default(),
            preprocess: false,
            failed_at_claim: None,
        }
    }

    /// `script.envs` as (name, value) pairs, each entry split at its first `=` as Windmill's
    /// `build_envs` does; an entry without `=` (Windmill: "Must be in the form of KEY=VALUE"), or
    /// a name a Kubernetes Secret key cannot hold, is the job's failure.
    pub fn script_env_pairs(&self) -> Result<Vec<(String, String)>, JobFailure> {
        self.script_envs
            .iter()
            .map(|entry| {
                let invalid = |why: &str| {
                    JobFailure::new(
                        FailureCategory::InvalidJob,
                        "InvalidScriptEnv",
                        format!(
                            "the script's environment variable `{entry}` {why}; fix it in the script's settings (Windmill: \
                             Settings > Runtime > Env variables)"
                        ),
                    )
                };
                let (name, value) = entry
                    .split_once('=')
                    .ok_or_else(|| invalid("must be in the form of KEY=VALUE"))?;
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !valid {
                    return Err(invalid(
                        "has a name other than letters, digits, `_`, `.` and `-`",
                    ));
                }
                Ok((name.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// The arguments as a JSON object, or an error naming what is wrong with them.
    ///
    /// Windmill always stores an object; anything else came from a broken client or a manual
    /// insert, and is a failure of the job, not of the worker.
    pub fn args_object(&self) -> Result<serde_json::Map<String, Value>, JobFailure> {
        match &self.args {
            Value::Null => Ok(serde_json::Map::new()),
            Value::Object(map) => Ok(map.clone()),
            other => Err(JobFailure::new(
                FailureCategory::InvalidJob,
                "InvalidArgs",
                format!(
                    "the job's args must be a JSON object of named arguments, but v2_job.args is {}; \
                     push the job with args like {{\"x\": 1}}",
                    json_type_name(other)
                ),
            )),
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a job failed: shown to the user in Windmill and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// The user's code failed (exit ≠ 0 or an exception).
    UserError,
    /// The job cannot be run by this worker (unsupported kind or language, missing code,
    /// malformed args).
    InvalidJob,
    /// Memory limit reached.
    OomKilled,
    /// The image could not be pulled.
    ImagePull,
    /// The Kubernetes objects are misconfigured.
    ConfigError,
    /// No node can take the pod.
    Unschedulable,
    /// The result trailer is missing, too large or not JSON.
    ResultInvalid,
    /// The pod was lost after user code started.
    PodLost,
    /// An internal error of the worker.
    Internal,
    /// A policy plugin refused the job.
    PolicyDenied,
    /// A policy plugin failed (trap, timeout, unusable output, a patch against the baseline).
    PolicyError,
}

impl FailureCategory {
    /// Every category.
    pub const ALL: [Self; 11] = [
        Self::UserError,
        Self::InvalidJob,
        Self::OomKilled,
        Self::ImagePull,
        Self::ConfigError,
        Self::Unschedulable,
        Self::ResultInvalid,
        Self::PodLost,
        Self::Internal,
        Self::PolicyDenied,
        Self::PolicyError,
    ];

    /// The stable label (`user_error`, `oom_killed`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserError => "user_error",
            Self::InvalidJob => "invalid_job",
            Self::OomKilled => "oom_killed",
            Self::ImagePull => "image_pull",
            Self::ConfigError => "config_error",
            Self::Unschedulable => "unschedulable",
            Self::ResultInvalid => "result_invalid",
            Self::PodLost => "pod_lost",
            Self::Internal => "internal",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyError => "policy_error",
        }
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed job, as the user will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// The failure category.
    pub category: FailureCategory,
    /// Error name (`ValueError`, `OOMKilled`, `UnsupportedLanguage`, ...).
    pub name: String,
    /// What happened and what to change.
    pub message: String,
    /// The user's stack trace, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl JobFailure {
    /// A failure without a stack trace.
    pub fn new(
        category: FailureCategory,
        name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            category,
            name: name.into(),
            message: message.into(),
            stack: None,
        }
    }

    /// The error object as Windmill stores it in a completed job's result.
    #[must_use]
    pub fn to_error_object(&self) -> Value {
        let mut error = serde_json::json!({
            "name": self.name,
            "message": self.message,
            "category": self.category.as_str(),
        });
        if let (Some(stack), Some(map)) = (&self.stack, error.as_object_mut()) {
            map.insert("stack".into(), Value::String(stack.clone()));
        }
        error
    }

    /// The one-line text that goes into `v2_job.pre_run_error`, which Windmill turns into
    /// `{"error": {"name": "ExecutionErr", "message": <text>}}` until our fix-up restores the
    /// real error object.
    #[must_use]
    pub fn to_pre_run_error(&self) -> String {
        format!("{} [{}]: {}", self.name, self.category, self.message)
    }
}

/// How a job ended on our side.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job returned this result.
    Success(Value),
    /// The job failed.
    Failure(JobFailure),
    /// The job was stopped because Windmill asked (`canceled_by` set).
    Canceled,
}

impl Outcome {
    /// `success`, `failure` or `canceled`: a stable label for logs and metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Success(_) => "success",
            Self::Failure(_) => "failure",
            Self::Canceled => "canceled",
        }
    }
}

/// An outcome plus what the run measured, for the hand-back and the fix-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// What happened.
    pub outcome: Outcome,
    /// Wall time of the user's code (or of the attempt, when it never started).
    pub duration: Duration,
    /// Peak memory of the job in KiB, when measured.
    pub memory_peak_kib: Option<i32>,
    /// The args `main` ran with when the script's `preprocessor` made them (a success only):
    /// Windmill records them as the job's args, with `preprocessed = true`.
    pub preprocessed_args: Option<Value>,
}

impl Completion {
    /// A failure, with nothing measured beyond the time it took.
    #[must_use]
    pub fn failed(failure: JobFailure, duration: Duration) -> Self {
        Self {
            outcome: Outcome::Failure(failure),
            duration,
            memory_peak_kib: None,
            preprocessed_args: None,
        }
    }

    /// A cancellation, with nothing measured beyond the time it took.
    #[must_use]
    pub fn canceled(duration: Duration) -> Self {
        Self {
            outcome: Outcome::Canceled,
            duration,
            memory_peak_kib: None,
            preprocessed_args: None,
        }
    }
}

/// Live figures of a running job, written by the executor and read by the heartbeat, the
/// metrics and the status page: peak memory, the milestones of its Kubernetes Job, its phase.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    memory_peak_kib: Arc<Unknown>,
    milestones: Arc<std::sync::Mutex<Milestones>>,
}

/// When a job reached each step of its run (the first time), and where it is now.
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    /// Its Kubernetes Job was created by this worker (not adopted).
    pub job_created: Option<std::time::Instant>,
    /// Its objects were found already there (adopted after a restart, or a 409 on create).
    pub adopted: bool,
    /// User code started in its pod.
    pub user_code_started: Option<std::time::Instant>,
    /// Its pod's container terminated.
    pub pod_terminated: Option<std::time::Instant>,
    /// The Kubernetes Job's name (of the current attempt).
    pub object: Option<String>,
    /// The cluster it runs on, when the worker has several.
    pub cluster: Option<String>,
    /// What the job is doing now, in a few words (`pending: waiting for capacity`, `running`).
    pub phase: String,
}

/// A figure in Windmill's `int4`, -1 = unknown (also when defaulted, so that `Progress::default()`
/// knows nothing rather than a peak of 0).
#[derive(Debug)]
struct Unknown(AtomicI32);

impl Default for Unknown {
    fn default() -> Self {
        Self(AtomicI32::new(-1))
    }
}

impl Progress {
    /// Nothing known yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the recorded peak (never lowers it).
    pub fn record_memory_peak_kib(&self, kib: u64) {
        let kib = i32::try_from(kib).unwrap_or(i32::MAX);
        self.memory_peak_kib.0.fetch_max(kib, Ordering::Relaxed);
    }

    /// The peak recorded so far, if any.
    #[must_use]
    pub fn memory_peak_kib(&self) -> Option<i32> {
        Some(self.memory_peak_kib.0.load(Ordering::Relaxed)).filter(|k| *k >= 0)
    }

    /// The milestones and phase so far.
    #[must_use]
    pub fn milestones(&self) -> Milestones {
        self.lock().clone()
    }

    /// The attempt's Kubernetes Job `object` exists: created by us, or found (`adopted`).
    pub fn record_job(&self, object: &str, adopted: bool) {
        let mut m = self.lock();
        if adopted {
            m.adopted = true;
        } else {
            m.job_created.get_or_insert_with(std::time::Instant::now);
        }
        m.object = Some(object.to_owned());
    }

    /// The job was placed on cluster `name` (a worker with several clusters).
    pub fn record_cluster(&self, name: &str) {
        self.lock().cluster = Some(name.to_owned());
    }

    /// User code started (the first time counts).
    pub fn record_user_code_started(&self) {
        self.lock()
            .user_code_started
            .get_or_insert_with(std::time::Instant::now);
    }

    /// The pod's container terminated.
    pub fn record_pod_terminated(&self) {
        self.lock()
            .pod_terminated
            .get_or_insert_with(std::time::Instant::now);
    }

    /// What the job is doing now.
    pub fn set_phase(&self, phase: &str) {
        let mut m = self.lock();
        if m.phase != phase {
            phase.clone_into(&mut m.phase);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Milestones> {
        self.milestones
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why Windmill canceled a job (`v2_job_queue.canceled_by` / `canceled_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    /// Who canceled (`timeout` for timeouts).
    pub by: String,
    /// Free text reason.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_we_never_claim_are_exactly_those_routed_to_stock_workers() {
        let mut routed: Vec<&str> = [
            JobKind::DEPENDENCY_KINDS,
            JobKind::FLOW_KINDS,
            JobKind::FINALIZED_KINDS,
        ]
        .concat();
        let mut never = JobKind::NEVER_CLAIMED.to_vec();
        routed.sort_unstable();
        never.sort_unstable();
        assert_eq!(routed, never);
    }

    #[test]
    fn script_envs_are_split_at_the_first_equals_and_bad_entries_name_the_fix() {
        let mut job = crate::testing::job();
        job.script_envs = vec!["A=1".into(), "B=x=y".into(), "EMPTY=".into()];
        assert_eq!(
            job.script_env_pairs().unwrap(),
            [("A", "1"), ("B", "x=y"), ("EMPTY", "")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        job.script_envs = vec!["NOVALUE".into()];
        let failure = job.script_env_pairs().unwrap_err();
        assert_eq!(failure.name, "InvalidScriptEnv");
        assert!(failure.message.contains("KEY=VALUE"), "{}", failure.message);
        job.script_envs = vec!["A B=1".into()];
        assert!(job.script_env_pairs().is_err());
    }

    #[test]
    fn args_that_are_not_an_object_fail_with_a_clear_message() {
        let mut job = crate::testing::job();
        job.args = serde_json::json!([1, 2]);
        let err = job.args_object().unwrap_err();
        assert_eq!(err.category, FailureCategory::InvalidJob);
        assert!(err.message.contains("an array"), "{}", err.message);
        job.args = Value::Null;
        assert!(job.args_object().unwrap().is_empty());
    }

    #[test]
    fn progress_keeps_the_highest_memory_peak_and_starts_unknown() {
        assert_eq!(Progress::default().memory_peak_kib(), None);
        let progress = Progress::new();
        assert_eq!(progress.memory_peak_kib(), None);
        let seen_by_heartbeat = progress.clone();
        progress.record_memory_peak_kib(60_000);
        progress.record_memory_peak_kib(10_000);
        assert_eq!(seen_by_heartbeat.memory_peak_kib(), Some(60_000));
        progress.record_memory_peak_kib(u64::MAX);
        assert_eq!(seen_by_heartbeat.memory_peak_kib(), Some(i32::MAX));
    }

    #[test]
    fn error_object_carries_name_message_category_and_stack() {
        let mut failure = JobFailure::new(FailureCategory::UserError, "ValueError", "bad x");
        failure.stack = Some("line 3".into());
        assert_eq!(
            failure.to_error_object(),
            serde_json::json!({"name": "ValueError", "message": "bad x", "category": "user_error", "stack": "line 3"})
        );
        assert_eq!(failure.to_pre_run_error(), "ValueError [user_error]: bad x");
    }
}
