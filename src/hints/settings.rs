//! What the worker config says about every job's pod, as this module reads it: the default
//! resources, image, retries and timeouts, the tags' profiles and the admin's limits; and the
//! checks the config runs on them at load.
//!
//! The config builds a [`HintSettings`] from its own sections (`config::Settings::hints`); this
//! module never reads the config itself, so the two do not depend on each other.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::allow_lists::check_protected;
use super::hint_set::Profiles;
use super::limits::{self, Limits, OnViolation, Rejection};
use super::maxima::enforce_numeric;
use super::names::{check_image, check_label_key};
use super::pod::PodSettings;
use super::{HintError, MAX_RETRIES, Source};

/// `resources:` — the default pod resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPU request (`500m`).
    pub default_cpu: String,
    /// Memory request and limit (`1Gi`).
    pub default_memory: String,
    /// Ephemeral storage (`10Gi`).
    pub default_storage: String,
    /// The extended resource that counts GPUs (`gpu=1` requests one of these).
    pub gpu_resource: String,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            default_cpu: "500m".into(),
            default_memory: "1Gi".into(),
            default_storage: "10Gi".into(),
            gpu_resource: "nvidia.com/gpu".into(),
        }
    }
}

/// The worker config's say on every job's pod, borrowed from the config's sections. Field docs
/// name the setting each comes from, as messages do.
#[derive(Debug, Clone, Copy)]
pub struct HintSettings<'a> {
    /// `resources`.
    pub resources: &'a Resources,
    /// `job_template.image`: the worker's own image, the default when a language has none.
    pub image: &'a str,
    /// `job_template.service_account`: the job pods' ServiceAccount unless a hint names one.
    pub service_account: Option<&'a str>,
    /// `executor.images`: the default image per language.
    pub images: &'a BTreeMap<String, String>,
    /// `job_template.system_retries`.
    pub system_retries: u32,
    /// `windmill.default_timeout`.
    pub default_timeout: Duration,
    /// `windmill.max_timeout`: no source may ask more.
    pub max_timeout: Duration,
    /// `profiles`.
    pub profiles: &'a Profiles,
    /// `limits`.
    pub limits: &'a Limits,
}

/// A problem with the `resources`, `profiles` or `limits` settings, named by its field (below
/// `runtime.config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    /// Dotted path below `runtime.config` (`profiles.k8s-gpu.image`).
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

pub(super) fn problem(field: impl Into<String>, message: impl Into<String>) -> SettingsProblem {
    SettingsProblem {
        field: field.into(),
        message: message.into(),
    }
}

impl HintSettings<'_> {
    /// Checks the hint-related settings: defaults parse, profiles are valid and within the
    /// numeric limits (a profile is the admin's own choice, so breaking a limit there is a config
    /// error, not a clamp), and the limits themselves make sense. The first problem found.
    pub fn validate(&self) -> Result<(), SettingsProblem> {
        let defaults = PodSettings::defaults(self).map_err(|e| match e {
            HintError::Config { field, message } => problem(field, message),
            other => problem("resources", other.to_string()),
        })?;
        check_label_key(&self.resources.gpu_resource)
            .map_err(|e| problem("resources.gpu_resource", e))?;
        check_image(self.image).map_err(|e| problem("job_template.image", e))?;
        if self.system_retries > MAX_RETRIES {
            return Err(problem(
                "job_template.system_retries",
                format!("at most {MAX_RETRIES}"),
            ));
        }
        limits::validate(self.limits)?;
        // The defaults must fit the limits too, or every job would be clamped or rejected.
        let mut pod = defaults.clone();
        if let Some(r) = self.first_numeric_violation(&mut pod) {
            return Err(problem(
                r.setting.clone(),
                format!("the worker defaults break it: {}", r.describe_violation()),
            ));
        }
        for (tag, profile) in self.profiles {
            let field = |key: &str| format!("profiles.{tag}.{key}");
            if tag.is_empty() || tag.len() > 50 {
                return Err(problem(
                    format!("profiles.{tag}"),
                    "a profile is keyed by a tag of 1 to 50 characters",
                ));
            }
            profile
                .check()
                .map_err(|(key, message)| problem(field(&key), message))?;
            let mut pod = defaults.clone();
            pod.apply(profile, Some(&Source::Profile(tag.clone())));
            if let Some(r) = self.first_numeric_violation(&mut pod) {
                return Err(problem(
                    field(&r.key),
                    format!(
                        "{}: lower it or raise {}",
                        r.describe_violation(),
                        r.setting
                    ),
                ));
            }
            if let Some(r) = check_protected(&pod, self.limits).into_iter().next() {
                return Err(problem(field(&r.key), r.describe_violation()));
            }
        }
        Ok(())
    }

    fn first_numeric_violation(&self, pod: &mut PodSettings) -> Option<Rejection> {
        enforce_numeric(pod, self.limits, self.max_timeout, OnViolation::Reject)
            .into_iter()
            .next()
    }
}
