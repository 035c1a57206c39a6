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
        context: crate::domain::JobContext::default(),
        preprocess: false,
        failed_at_claim: None,
    }
}

/// Worker-config sections that exercise every kind of hint setting: a tag's profile, numeric
/// maxima and allow-lists (shared by the `hints` and `config` tests).
pub const HINTS_CONFIG: &str = r#"
windmill:
  tags: [k8s, k8s-gpu]
  max_timeout: 6h
resources:
  default_cpu: "500m"
  default_memory: "1Gi"
  default_storage: "10Gi"
profiles:
  k8s-gpu:
    gpu: 1
    cpu: 4
    node_selector: { pool: gpu }
    tolerations: ["nvidia.com/gpu:NoSchedule", {key: dedicated, value: ml, effect: NoExecute, toleration_seconds: 60}]
    labels: { team: ml }
limits:
  max_cpu: "8"
  max_memory: "32Gi"
  max_gpu: 2
  max_storage: 50Gi
  allowed_images: ["ghcr.io/acme/*", "python:3.*"]
  allowed_node_selectors: { pool: [gpu, general], topology.kubernetes.io/zone: ["eu-*"] }
  allowed_tolerations: ["nvidia.com/*", dedicated]
  allowed_secrets: [etl-*]
  allowed_pvcs: [datasets]
  protected_prefixes: [acme.com/billing]
"#;
