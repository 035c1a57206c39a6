//! Fixtures for unit tests.

use chrono::Utc;

use crate::domain::{Job, JobId, JobKind, Language};

/// A runnable Python preview job on tag `k8s`.
pub fn job() -> Job {
    Job {
        id: JobId::new_v4(),
        workspace: "demo".into(),
        kind: JobKind::Preview,
        tag: "k8s".into(),
        language: Some(Language::new("python3")),
        code: Some("def main(x):\n    return x\n".into()),
        lock: None,
        path: Some("u/alice/echo".into()),
        entrypoint: None,
        args: serde_json::json!({"x": 1}),
        timeout: None,
        priority: None,
        flow: None,
        permissioned_as: Some("u/alice".into()),
        permissioned_as_email: Some("alice@example.com".into()),
        created_by: Some("alice".into()),
        script_envs: Vec::new(),
        created_at: Utc::now(),
        started_at: Utc::now(),
        prior_output_lines: 0,
    }
}
