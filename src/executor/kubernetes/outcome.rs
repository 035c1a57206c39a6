//! What an attempt's end means for the job: a terminated container and its result trailer, or a
//! pod that was disrupted or lost, become the job's outcome and the message the user reads. Pure,
//! so every case is unit-tested without a cluster.

use std::time::Duration;

use crate::config::HumanDuration;
use crate::domain::{Completion, FailureCategory, JobFailure, Outcome};
use crate::trailer::{self, Status, Trailer};

/// How the main container ended (from the pod's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    /// The termination message (or log tail).
    pub message: String,
}

impl Ended {
    fn oom_killed(&self) -> bool {
        self.reason == "OOMKilled"
    }

    /// How long to keep reading the log for the trailer once the container ended. A clean exit
    /// always printed one: wait longer for it than after a crash, and not at all after an OOM
    /// kill (the runner died with the script).
    #[must_use]
    pub fn patience(&self) -> Duration {
        match (self.exit_code, self.oom_killed()) {
            (_, true) => Duration::ZERO,
            (0, false) => Duration::from_secs(30),
            _ => Duration::from_secs(5),
        }
    }
}

/// The outcome of a terminated container, from its end and the trailer read from its log.
/// `memory_limit` names the limit in the OOM message; `elapsed` is the attempt's time, used when
/// the trailer has no run time.
#[must_use]
pub fn terminated(
    ended: &Ended,
    trailer: Result<Trailer, trailer::Error>,
    memory_limit: &str,
    elapsed: Duration,
) -> Completion {
    let duration = trailer
        .as_ref()
        .ok()
        .and_then(|t| t.duration_ms)
        .map_or(elapsed, Duration::from_millis);
    let memory_peak_kib = trailer
        .as_ref()
        .ok()
        .and_then(|t| t.memory_peak_kib)
        .and_then(|k| i32::try_from(k).ok());
    let preprocessed_args = trailer
        .as_ref()
        .ok()
        .and_then(|t| t.preprocessed_args.clone());
    let outcome = if ended.oom_killed() {
        Outcome::Failure(JobFailure::new(
            FailureCategory::OomKilled,
            "OOMKilled",
            format!(
                "the script ran out of memory (limit {memory_limit}); raise `memory` in the script's `# k8s:` hints"
            ),
        ))
    } else {
        match trailer {
            Ok(t) if t.status == Status::Ok && ended.exit_code == 0 => Outcome::Success(t.payload),
            Ok(t) => Outcome::Failure(user_failure(&t.payload)),
            Err(error) => Outcome::Failure(without_result(ended, &error)),
        }
    };
    let preprocessed_args = preprocessed_args.filter(|_| matches!(outcome, Outcome::Success(_)));
    Completion {
        outcome,
        duration,
        memory_peak_kib,
        preprocessed_args,
    }
}

/// The failure of a container whose trailer could not be read.
fn without_result(ended: &Ended, error: &trailer::Error) -> JobFailure {
    if let trailer::Error::TooLarge { size, limit } = error {
        return JobFailure::new(
            FailureCategory::ResultInvalid,
            "ResultTooLarge",
            format!(
                "the result is {size} bytes, more than the limit of {limit} bytes (executor.max_result_bytes); return less data"
            ),
        );
    }
    let (category, name) = if ended.exit_code == 0 {
        (FailureCategory::ResultInvalid, "ResultInvalid")
    } else {
        (FailureCategory::UserError, "ExitCode")
    };
    JobFailure::new(
        category,
        name,
        format!(
            "the container ended with exit code {} ({}) and {error}; {}",
            ended.exit_code,
            ended.reason,
            ended.message.trim()
        ),
    )
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

/// No node took the pod within the pending budget.
#[must_use]
pub fn unschedulable(message: &str, budget: HumanDuration) -> JobFailure {
    JobFailure::new(
        FailureCategory::Unschedulable,
        "Unschedulable",
        format!(
            "no node could take the pod within {budget} (executor.pending_budget): {message}; lower the script's `k8s:` resource hints or add capacity"
        ),
    )
}

/// Kueue did not admit the Job within the admission budget.
#[must_use]
pub fn not_admitted(queue: &str, message: &str, budget: HumanDuration) -> JobFailure {
    JobFailure::new(
        FailureCategory::Unschedulable,
        "NotAdmitted",
        format!(
            "Kueue did not admit the Job from LocalQueue `{queue}` within {budget} (executor.admission_budget): {message}; lower the script's `k8s:` resource hints, raise the ClusterQueue's quota, or raise executor.admission_budget"
        ),
    )
}

/// The image could not be pulled within the grace.
#[must_use]
pub fn image_pull(image: &str, message: &str, grace: HumanDuration) -> JobFailure {
    JobFailure::new(
        FailureCategory::ImagePull,
        "ImagePullError",
        format!(
            "image `{image}` could not be pulled within {grace} (executor.image_pull_grace): {message}; check the image name in the script's `image=` hint or executor.images, and the registry credentials"
        ),
    )
}

/// The image name can never be pulled.
#[must_use]
pub fn invalid_image(image: &str, message: &str) -> JobFailure {
    JobFailure::new(
        FailureCategory::ImagePull,
        "InvalidImageName",
        format!(
            "image `{image}` is not a valid image name ({message}); fix the script's `image=` hint or executor.images"
        ),
    )
}

/// The container could not be created.
#[must_use]
pub fn container_config(message: &str) -> JobFailure {
    JobFailure::new(
        FailureCategory::ConfigError,
        "CreateContainerConfigError",
        format!(
            "the pod's container could not be created: {message}; check the Secrets, ConfigMaps and service account the script's hints name"
        ),
    )
}

/// What a pod lost before its container ended means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// User code never ran: a new attempt cannot run anything twice. The reason, for the log.
    Retry(String),
    /// User code ran and may have had side effects: the job fails.
    Failed(JobFailure),
}

/// A pod that failed as a whole (evicted, preempted, node lost).
#[must_use]
pub fn disrupted(reason: &str, message: &str, user_code_started: bool) -> Lost {
    if !user_code_started {
        return Lost::Retry(format!("{reason}: {message}"));
    }
    Lost::Failed(JobFailure::new(
        FailureCategory::PodLost,
        reason,
        format!(
            "the pod stopped while the script ran ({reason}: {message}); the script may have been interrupted midway, so it is not retried automatically"
        ),
    ))
}

/// A pod that disappeared.
#[must_use]
pub fn deleted(user_code_started: bool) -> Lost {
    if !user_code_started {
        return Lost::Retry("the pod was deleted before the script started".into());
    }
    Lost::Failed(JobFailure::new(
        FailureCategory::PodLost,
        "PodDeleted",
        "the pod was deleted while the script ran; it is not retried automatically because the script may have had side effects",
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ended(exit_code: i32, reason: &str) -> Ended {
        Ended {
            exit_code,
            reason: reason.into(),
            message: " last words \n".into(),
        }
    }

    fn trailer(status: Status, payload: serde_json::Value) -> Trailer {
        Trailer {
            status,
            payload,
            memory_peak_kib: Some(2048),
            duration_ms: Some(1500),
            preprocessed_args: None,
        }
    }

    fn failure_of(completion: &Completion) -> &JobFailure {
        match &completion.outcome {
            Outcome::Failure(failure) => failure,
            other => panic!("not a failure: {other:?}"),
        }
    }

    const SOON: Duration = Duration::from_secs(9);

    #[test]
    fn exit_zero_with_a_trailer_succeeds_with_its_measures() {
        let done = terminated(
            &ended(0, "Completed"),
            Ok(trailer(Status::Ok, json!(42))),
            "1Gi",
            SOON,
        );
        assert_eq!(
            done,
            Completion {
                outcome: Outcome::Success(json!(42)),
                duration: Duration::from_millis(1500),
                memory_peak_kib: Some(2048),
                preprocessed_args: None,
            }
        );
        assert_eq!(ended(0, "Completed").patience(), Duration::from_secs(30));
    }

    #[test]
    fn an_oom_kill_names_the_limit_whatever_the_exit_code_or_trailer() {
        for code in [0, 137] {
            let end = ended(code, "OOMKilled");
            assert_eq!(end.patience(), Duration::ZERO);
            let done = terminated(&end, Err(trailer::Error::Missing), "64Mi", SOON);
            let failure = failure_of(&done);
            assert_eq!(
                (failure.category, failure.name.as_str()),
                (FailureCategory::OomKilled, "OOMKilled")
            );
            assert!(
                failure.message.contains("limit 64Mi"),
                "{}",
                failure.message
            );
            assert_eq!(done.duration, SOON, "no trailer: the attempt's time");
        }
    }

    #[test]
    fn a_nonzero_exit_with_an_error_object_fails_with_its_name_message_and_stack() {
        let error = json!({"name": "ValueError", "message": "bad x", "stack": "line 2"});
        let done = terminated(
            &ended(1, "Error"),
            Ok(trailer(Status::Error, error)),
            "1Gi",
            SOON,
        );
        let failure = failure_of(&done);
        assert_eq!(failure.category, FailureCategory::UserError);
        assert_eq!(
            (
                failure.name.as_str(),
                failure.message.as_str(),
                failure.stack.as_deref()
            ),
            ("ValueError", "bad x", Some("line 2"))
        );
        assert_eq!(ended(1, "Error").patience(), Duration::from_secs(5));
        // An error object without a name or message is still shown whole.
        let done = terminated(
            &ended(1, "Error"),
            Ok(trailer(Status::Error, json!([1]))),
            "1Gi",
            SOON,
        );
        let failure = failure_of(&done);
        assert_eq!(
            (failure.name.as_str(), failure.message.as_str()),
            ("Error", "[1]")
        );
    }

    #[test]
    fn a_missing_trailer_is_a_result_error_after_exit_zero_and_a_user_error_otherwise() {
        let done = terminated(
            &ended(0, "Completed"),
            Err(trailer::Error::Missing),
            "1Gi",
            SOON,
        );
        let failure = failure_of(&done);
        assert_eq!(
            (failure.category, failure.name.as_str()),
            (FailureCategory::ResultInvalid, "ResultInvalid")
        );
        assert!(
            failure.message.starts_with("the container ended with exit code 0 (Completed) and the job's output has no result trailer")
                && failure.message.ends_with("; last words"),
            "{}",
            failure.message
        );
        let done = terminated(
            &ended(2, "Error"),
            Err(trailer::Error::Truncated),
            "1Gi",
            SOON,
        );
        let failure = failure_of(&done);
        assert_eq!(
            (failure.name.as_str(), failure.category),
            ("ExitCode", FailureCategory::UserError)
        );
    }

    #[test]
    fn a_too_large_result_names_the_limit() {
        let error = trailer::Error::TooLarge {
            size: 2000,
            limit: 1000,
        };
        let done = terminated(&ended(0, "Completed"), Err(error), "1Gi", SOON);
        let failure = failure_of(&done);
        assert_eq!(
            (failure.category, failure.name.as_str()),
            (FailureCategory::ResultInvalid, "ResultTooLarge")
        );
        assert!(
            failure
                .message
                .contains("2000 bytes, more than the limit of 1000 bytes"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_disruption_before_user_code_is_retried_and_after_it_fails() {
        assert_eq!(
            disrupted("Evicted", "node pressure", false),
            Lost::Retry("Evicted: node pressure".into())
        );
        let Lost::Failed(failure) = disrupted("Evicted", "node pressure", true) else {
            panic!("user code ran: no retry");
        };
        assert_eq!(
            (failure.category, failure.name.as_str()),
            (FailureCategory::PodLost, "Evicted")
        );
        assert!(
            failure.message.contains("not retried automatically"),
            "{}",
            failure.message
        );
        assert!(matches!(deleted(false), Lost::Retry(_)));
        assert!(matches!(deleted(true), Lost::Failed(f) if f.name == "PodDeleted"));
    }
}
