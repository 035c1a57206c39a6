//! Admin limits (`limits:` in the worker config): numeric maxima that clamp or reject, allow-lists
//! that always reject, and the label prefixes we own.
//!
//! Allow-lists govern what a *script* may ask for, so they apply to annotation values only:
//! profiles and defaults are written by the admin. Numeric maxima apply to every value, and a
//! profile or default beyond one is a config error at load (see `HintSettings::validate`), so at
//! run time only annotations and Windmill's timeout can be clamped.
//!
//! This file holds the section and its own checks; `maxima` and `allow_lists` apply it to a pod.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Source;
use super::allow_lists::{check_allowed, check_protected};
use super::maxima::enforce_numeric;
use super::names::{check_label_key, shorten};
use super::pod::PodSettings;
use super::quantity::{Bytes, Millicores};
use super::settings::{SettingsProblem, problem};

/// Label and annotation prefixes the worker owns: its own bookkeeping (`flext.dev/job-id`, ...)
/// and the managed-by label its watch selects on. No source may set them, whatever the config says.
pub const PROTECTED_PREFIXES: &[&str] = &[
    "flext.dev/",
    "app.kubernetes.io/managed-by",
    // Kueue reads its queue from this label: a queue comes from `local_queue` only, within
    // `limits.allowed_local_queues`.
    "kueue.x-k8s.io/",
];

/// What to do with a hint above a numeric maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// Fail the job with a message naming the hint and the limit (default: the user sees why).
    #[default]
    Reject,
    /// Lower the value to the maximum and run; `hints` shows the value as clamped.
    Clamp,
}

/// `limits:` — what hints may ask for. Absent maxima mean no maximum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum CPU limit (`"8"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<Millicores>,
    /// Maximum memory limit (`"32Gi"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Bytes>,
    /// Maximum ephemeral storage, and size of any one emptyDir volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_storage: Option<Bytes>,
    /// Maximum GPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gpu: Option<u32>,
    /// Maximum system-retry budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Image patterns a script may name (`ghcr.io/acme/*`); absent: any image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_images: Option<Vec<String>>,
    /// Node-selector keys a script may use, each with its allowed value patterns; absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_node_selectors: Option<BTreeMap<String, Vec<String>>>,
    /// Taint-key patterns a script may tolerate; absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tolerations: Option<Vec<String>>,
    /// `PriorityClass` patterns a script may name; absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_priority_classes: Option<Vec<String>>,
    /// Cluster names (from `clusters:`) a script may pick with `cluster=`; absent: any cluster
    /// that serves the job's tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_clusters: Option<Vec<String>>,
    /// `RuntimeClass` patterns a script may name; absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_runtime_classes: Option<Vec<String>>,
    /// `ServiceAccount` patterns a script may name; empty (default): none. Accounts carry API
    /// credentials, so a script gets one only when the admin lists it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_service_accounts: Vec<String>,
    /// Secret patterns a script may load with `env_from_secret`; empty (default): none. The
    /// namespace may hold the worker's own credentials.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_secrets: Vec<String>,
    /// `ConfigMap` patterns a script may load with `env_from_configmap`; empty (default): none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_configmaps: Vec<String>,
    /// PVC patterns a script may mount; empty (default): none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_pvcs: Vec<String>,
    /// Kueue `LocalQueue` patterns a script may name with `local_queue`; empty (default): none.
    /// A queue is a share of quota: profiles choose it, scripts only within this list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_local_queues: Vec<String>,
    /// More label/annotation prefixes no source may set, besides [`PROTECTED_PREFIXES`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protected_prefixes: Vec<String>,
    /// `reject` (default) or `clamp`: what a value above a numeric maximum does. Allow-lists and
    /// protected prefixes always reject.
    pub on_violation: OnViolation,
}

/// A hint that a limit does not allow. `Display` is the message the Windmill user sees: the hint,
/// where it came from, the limit and where it is configured, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hint `{hint}` ({hint_source}) is not allowed: {violation}; {fix}")]
pub struct Rejection {
    /// The hint key (`memory`, `node_selector.pool`, `volume`).
    pub key: String,
    /// The hint as written (`memory=64Gi`).
    pub hint: String,
    /// Where the hint came from.
    pub hint_source: Source,
    /// The setting that forbids it (`limits.max_memory`).
    pub setting: String,
    /// What the limit says (`64Gi is above limits.max_memory = 32Gi in the worker config`).
    pub violation: String,
    /// What to change.
    pub fix: String,
}

impl Rejection {
    /// The violation alone, for config errors.
    #[must_use]
    pub fn describe_violation(&self) -> String {
        format!("`{}`: {}", self.hint, self.violation)
    }
}
/// Everything the limits say about one job's settings: every hint they do not allow.
pub(super) fn enforce(
    pod: &mut PodSettings,
    limits: &Limits,
    max_timeout: Duration,
) -> Vec<Rejection> {
    let mut rejected = check_allowed(pod, limits);
    rejected.extend(check_protected(pod, limits));
    rejected.extend(enforce_numeric(
        pod,
        limits,
        max_timeout,
        limits.on_violation,
    ));
    rejected
}

/// Checks the limits themselves.
pub(super) fn validate(limits: &Limits) -> Result<(), SettingsProblem> {
    let positive = [
        ("limits.max_cpu", limits.max_cpu.is_some_and(|m| m.0 == 0)),
        (
            "limits.max_memory",
            limits.max_memory.is_some_and(|m| m.0 == 0),
        ),
        (
            "limits.max_storage",
            limits.max_storage.is_some_and(|m| m.0 == 0),
        ),
    ];
    for (field, zero) in positive {
        if zero {
            return Err(problem(
                field,
                "must be more than 0 (leave it out for no maximum)",
            ));
        }
    }
    let lists: [(&str, Option<&[String]>); 11] = [
        (
            "limits.allowed_clusters",
            limits.allowed_clusters.as_deref(),
        ),
        ("limits.allowed_images", limits.allowed_images.as_deref()),
        (
            "limits.allowed_tolerations",
            limits.allowed_tolerations.as_deref(),
        ),
        (
            "limits.allowed_priority_classes",
            limits.allowed_priority_classes.as_deref(),
        ),
        (
            "limits.allowed_runtime_classes",
            limits.allowed_runtime_classes.as_deref(),
        ),
        (
            "limits.allowed_service_accounts",
            Some(&limits.allowed_service_accounts),
        ),
        ("limits.allowed_secrets", Some(&limits.allowed_secrets)),
        (
            "limits.allowed_configmaps",
            Some(&limits.allowed_configmaps),
        ),
        ("limits.allowed_pvcs", Some(&limits.allowed_pvcs)),
        (
            "limits.allowed_local_queues",
            Some(&limits.allowed_local_queues),
        ),
        (
            "limits.protected_prefixes",
            Some(&limits.protected_prefixes),
        ),
    ];
    let selector_values = limits
        .allowed_node_selectors
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k, v.as_slice()));
    for (field, list) in lists {
        for pattern in list.unwrap_or_default() {
            check_pattern(field, pattern)?;
        }
    }
    for (key, patterns) in selector_values {
        let field = format!("limits.allowed_node_selectors.{key}");
        check_label_key(key).map_err(|e| problem(&field, e))?;
        for pattern in patterns {
            check_pattern(&field, pattern)?;
        }
    }
    Ok(())
}

fn check_pattern(field: &str, pattern: &str) -> Result<(), SettingsProblem> {
    if pattern.is_empty() || pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(problem(
            field,
            format!(
                "`{}` is not a pattern: non-empty, no spaces; `*` matches any run of characters",
                shorten(pattern)
            ),
        ));
    }
    Ok(())
}
