//! Resource hints: what a job's pod gets (resources, image, scheduling, volumes, timeout, ...),
//! and where each value came from.
//!
//! Sources, lowest to highest precedence:
//! 1. worker defaults (`resources`, `job_template.image`, `job_template.system_retries`,
//!    `windmill.default_timeout`),
//! 2. the profile of the job's tag (`profiles.<tag>`),
//! 3. annotations in the script's leading comments (`# k8s: cpu=2 memory=4Gi`),
//! 4. Windmill's own per-job fields (timeout, priority);
//!
//! then admin `limits` clamp or reject. Scalars are replaced by a higher source; maps
//! (`node_selector`, labels, annotations) merge key by key; lists (tolerations, volumes, env
//! sources, affinity presets) add up, a volume replacing one at the same mount path.
//!
//! The whole module is pure: no Kubernetes types. The executor renders [`PodSettings`] into a pod
//! spec; `flext-kubernetes hints` prints it.
//!
//! - `quantity`: Kubernetes quantities reduced to millicores and bytes.
//! - `values`: the value types and their one text form, name checks.
//! - `parse`: the `# k8s:` annotation lines.
//! - `limits`: the `limits:` config section, clamping and rejection.

mod limits;
mod parse;
mod quantity;
mod values;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{HumanDuration, Settings};
use crate::domain::{FailureCategory, JobFailure};

pub use limits::{Limits, OnViolation, PROTECTED_PREFIXES, Rejection, glob_match};
pub use parse::{MAX_HINT_LINE_BYTES, MAX_HINTS, comment_marker, parse_annotations};
pub use quantity::{Bytes, Millicores, QuantityError};
pub use values::{
    AffinityPreset, PullPolicy, RequestLimit, TaintEffect, Toleration, TolerationOperator, Volume,
};

/// A result whose error is a [`HintError`].
pub type Result<T, E = HintError> = std::result::Result<T, E>;

/// Where a value came from, lowest precedence first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The worker config's defaults (`resources`, `job_template`, `windmill.default_timeout`).
    Default,
    /// The profile of the job's tag (`profiles.<tag>`).
    Profile(String),
    /// A `k8s:` annotation in the script, at this line (1-based).
    Annotation {
        /// The line in the script.
        line: usize,
    },
    /// Windmill's own per-job field (timeout, priority).
    WindmillField,
    /// Clamped by an admin limit.
    Limit {
        /// The limit's setting, e.g. `limits.max_cpu`.
        setting: String,
        /// What was asked, and by which source (`16 by annotation, line 2`).
        asked: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Profile(tag) => write!(f, "profile {tag}"),
            Self::Annotation { line } => write!(f, "annotation, line {line}"),
            Self::WindmillField => f.write_str("windmill"),
            Self::Limit { setting, asked } => write!(f, "clamped by {setting} (asked {asked})"),
        }
    }
}

/// A value and where it came from.
///
/// In YAML (profiles, `check` output) only the value is written; a profile's values are stamped
/// with [`Source::Profile`] when a job uses them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub source: Source,
}

impl<T> Sourced<T> {
    /// A value from a source.
    pub fn new(value: T, source: Source) -> Self {
        Self { value, source }
    }
}

impl<T: Serialize> Serialize for Sourced<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sourced<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        T::deserialize(d).map(|value| Self::new(value, Source::Default))
    }
}

/// One layer of hints: a profile (`profiles.<tag>` in the config) or a script's annotations.
/// Every field is optional; see `docs/hints.md` for each key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HintSet {
    /// `cpu: 2` or `cpu: 500m..2` (request..limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Sourced<RequestLimit<Millicores>>>,
    /// `memory: 4Gi` or `memory: 2Gi..4Gi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Sourced<RequestLimit<Bytes>>>,
    /// Ephemeral storage, request = limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Sourced<Bytes>>,
    /// GPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Sourced<u32>>,
    /// The extended resource that counts GPUs (profiles only: it is the admin's choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_resource: Option<Sourced<String>>,
    /// The container image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Sourced<String>>,
    /// The image pull policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<Sourced<PullPolicy>>,
    /// Node labels the pod must land on.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, Sourced<String>>,
    /// Taints the pod tolerates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Sourced<Toleration>>,
    /// Scheduling presets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<Sourced<AffinityPreset>>,
    /// The pod's PriorityClass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<Sourced<String>>,
    /// The pod's ServiceAccount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Sourced<String>>,
    /// The pod's RuntimeClass (`gvisor`, `kata`, `nvidia`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<Sourced<String>>,
    /// Secrets whose keys become environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from_secrets: Vec<Sourced<String>>,
    /// ConfigMaps whose keys become environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from_configmaps: Vec<Sourced<String>>,
    /// Volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Sourced<Volume>>,
    /// How long the job may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Sourced<HumanDuration>>,
    /// System-retry budget: new attempts when the pod is lost before user code starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Sourced<u32>>,
    /// Extra pod labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Sourced<String>>,
    /// Extra pod annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Sourced<String>>,
}

/// Hard bound on the retry budget a hint may ask, whatever the limits say: each retry is a new
/// pod, and a runaway budget would loop on a broken node pool.
pub const MAX_RETRIES: u32 = 100;

impl HintSet {
    /// Checks the values that deserialization alone does not: names, label syntax, sizes. The
    /// annotation parser runs the same checks as it reads; profiles get them at config load.
    /// The error names the key and says what is wrong.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        fn each<'a>(
            key: &str,
            values: impl IntoIterator<Item = &'a String>,
            check: fn(&str) -> std::result::Result<(), String>,
        ) -> std::result::Result<(), (String, String)> {
            values
                .into_iter()
                .try_for_each(|v| check(v).map_err(|e| (key.to_owned(), e)))
        }
        fn one(o: Option<&Sourced<String>>) -> Option<&String> {
            o.map(|s| &s.value)
        }
        if self.storage.as_ref().is_some_and(|s| s.value.0 == 0) {
            return Err(("storage".into(), "must be more than 0".into()));
        }
        if let Some(retries) = &self.retries
            && retries.value > MAX_RETRIES
        {
            return Err((
                "retries".into(),
                format!("{} is more than {MAX_RETRIES}", retries.value),
            ));
        }
        each(
            "gpu_resource",
            one(self.gpu_resource.as_ref()),
            values::check_label_key,
        )?;
        each("image", one(self.image.as_ref()), values::check_image)?;
        each(
            "priority_class",
            one(self.priority_class.as_ref()),
            values::check_dns_subdomain,
        )?;
        each(
            "service_account",
            one(self.service_account.as_ref()),
            values::check_dns_subdomain,
        )?;
        each(
            "runtime_class",
            one(self.runtime_class.as_ref()),
            values::check_dns_subdomain,
        )?;
        each(
            "env_from_secrets",
            self.env_from_secrets.iter().map(|s| &s.value),
            values::check_dns_subdomain,
        )?;
        each(
            "env_from_configmaps",
            self.env_from_configmaps.iter().map(|s| &s.value),
            values::check_dns_subdomain,
        )?;
        each(
            "node_selector",
            self.node_selector.keys(),
            values::check_label_key,
        )?;
        each(
            "node_selector",
            self.node_selector.values().map(|s| &s.value),
            values::check_label_value,
        )?;
        each("labels", self.labels.keys(), values::check_label_key)?;
        each(
            "labels",
            self.labels.values().map(|s| &s.value),
            values::check_label_value,
        )?;
        each(
            "annotations",
            self.annotations.keys(),
            values::check_label_key,
        )?;
        each(
            "annotations",
            self.annotations.values().map(|s| &s.value),
            values::check_annotation_value,
        )?;
        let mut paths = std::collections::BTreeSet::new();
        for volume in &self.volumes {
            if !paths.insert(volume.value.mount_path()) {
                return Err((
                    "volumes".into(),
                    format!("two volumes at {}", volume.value.mount_path()),
                ));
            }
        }
        if self.timeout.as_ref().is_some_and(|t| t.value.0.is_zero()) {
            return Err(("timeout".into(), "must be more than 0".into()));
        }
        Ok(())
    }

    /// The same hints as annotation lines (`marker` is `#`, `//` or `--`), one key per line, in
    /// a stable order: what the parser reads back into an equal set (sources aside).
    #[must_use]
    pub fn render_annotations(&self, marker: &str) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut push = |key: &str, value: String| pairs.push((key.to_owned(), value));
        if let Some(v) = &self.cpu {
            push("cpu", v.value.to_string());
        }
        if let Some(v) = &self.memory {
            push("memory", v.value.to_string());
        }
        if let Some(v) = &self.storage {
            push("storage", v.value.to_string());
        }
        if let Some(v) = &self.gpu {
            push("gpu", v.value.to_string());
        }
        if let Some(v) = &self.image {
            push("image", v.value.clone());
        }
        if let Some(v) = &self.pull_policy {
            push("pull_policy", v.value.to_string());
        }
        for (k, v) in &self.node_selector {
            push("node_selector", format!("{k}:{}", v.value));
        }
        for v in &self.tolerations {
            push("toleration", v.value.to_string());
        }
        for v in &self.affinity {
            push("affinity", v.value.to_string());
        }
        for (key, v) in [
            ("priority_class", &self.priority_class),
            ("service_account", &self.service_account),
            ("runtime_class", &self.runtime_class),
        ] {
            if let Some(v) = v {
                push(key, v.value.clone());
            }
        }
        for v in &self.env_from_secrets {
            push("env_from_secret", v.value.clone());
        }
        for v in &self.env_from_configmaps {
            push("env_from_configmap", v.value.clone());
        }
        for v in &self.volumes {
            push("volume", v.value.to_string());
        }
        if let Some(v) = &self.timeout {
            push("timeout", v.value.to_string());
        }
        if let Some(v) = &self.retries {
            push("retries", v.value.to_string());
        }
        for (k, v) in &self.labels {
            push(&format!("label.{k}"), v.value.clone());
        }
        for (k, v) in &self.annotations {
            push(&format!("annotation.{k}"), parse::quote(&v.value));
        }
        let mut text = String::new();
        for (k, v) in pairs {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{marker} k8s: {k}={v}");
        }
        text
    }
}

/// Windmill's own per-job fields that bear on the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindmillFields {
    /// The script's timeout (`v2_job.timeout`), if set.
    pub timeout: Option<Duration>,
    /// Windmill's priority (used for claim order; reported here for visibility).
    pub priority: Option<i16>,
}

/// The effective settings of one job's pod: the executor's input.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    /// CPU request and limit.
    pub cpu: Sourced<RequestLimit<Millicores>>,
    /// Memory request and limit.
    pub memory: Sourced<RequestLimit<Bytes>>,
    /// Ephemeral storage, request = limit.
    pub storage: Sourced<Bytes>,
    /// GPU count (0: none); requested and limited as `gpu_resource`.
    pub gpu: Sourced<u32>,
    /// The extended resource name of GPUs (`nvidia.com/gpu`).
    pub gpu_resource: Sourced<String>,
    /// The main container's image.
    pub image: Sourced<String>,
    /// Pull policy; `None` leaves Kubernetes' default (`Always` for `:latest`, else
    /// `IfNotPresent`).
    pub pull_policy: Option<Sourced<PullPolicy>>,
    /// Node selector, by label key.
    pub node_selector: BTreeMap<String, Sourced<String>>,
    /// Tolerations, profile ones first, then annotations in line order.
    pub tolerations: Vec<Sourced<Toleration>>,
    /// Scheduling presets, without repeats.
    pub affinity: Vec<Sourced<AffinityPreset>>,
    /// PriorityClass name.
    pub priority_class: Option<Sourced<String>>,
    /// ServiceAccount name.
    pub service_account: Option<Sourced<String>>,
    /// RuntimeClass name.
    pub runtime_class: Option<Sourced<String>>,
    /// Secrets to load as environment (`envFrom`), without repeats.
    pub env_from_secrets: Vec<Sourced<String>>,
    /// ConfigMaps to load as environment (`envFrom`), without repeats.
    pub env_from_configmaps: Vec<Sourced<String>>,
    /// Volumes, one per mount path.
    pub volumes: Vec<Sourced<Volume>>,
    /// Job timeout (`activeDeadlineSeconds` and Windmill's own timeout).
    pub timeout: Sourced<Duration>,
    /// System-retry budget (new attempts when user code never started).
    pub retries: Sourced<u32>,
    /// Windmill's priority, if any (claim order; not part of the pod).
    pub priority: Option<Sourced<i16>>,
    /// Extra pod labels; never a protected key (see [`PROTECTED_PREFIXES`]).
    pub labels: BTreeMap<String, Sourced<String>>,
    /// Extra pod annotations; never a protected key.
    pub annotations: BTreeMap<String, Sourced<String>>,
}

/// Why a job's hints cannot be used. `Display` is the message the Windmill user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    /// The job's language has no comment syntax we read hints from.
    #[error(
        "cannot read `k8s:` hints of a {language} script: hints are read from python3, bash, powershell, nu, ruby (#), bun, deno, nativets, go, rust, java, csharp (//) and SQL (--) scripts"
    )]
    UnknownLanguage {
        /// Windmill's language name.
        language: String,
    },
    /// A hint line is not UTF-8.
    #[error("line {line}: the `k8s:` hint line is not valid UTF-8; save the script as UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// A hint line is longer than [`MAX_HINT_LINE_BYTES`].
    #[error(
        "line {line}: the `k8s:` hint line is {len} bytes, more than {max}; split it over several `k8s:` lines"
    )]
    LineTooLong {
        /// The line.
        line: usize,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// More than [`MAX_HINTS`] hints in one script.
    #[error("line {line}: more than {max} hints in one script")]
    TooManyHints {
        /// The line where the count was exceeded.
        line: usize,
        /// The maximum.
        max: usize,
    },
    /// A token is not `key=value`, or a quote is not closed.
    #[error("line {line}: {message}")]
    Syntax {
        /// The line.
        line: usize,
        /// What is wrong and how to write it.
        message: String,
    },
    /// The key is not one we know (a typo is an error, so that it is seen).
    #[error("line {line}: unknown hint key `{key}`{hint}")]
    UnknownKey {
        /// The line.
        line: usize,
        /// The key, shortened and escaped.
        key: String,
        /// A suggestion (`; did you mean memory?`), or empty.
        hint: String,
    },
    /// The same key (or the same list element) is given twice.
    #[error("line {line}: `{key}` is already set on line {first_line}; give each hint once")]
    Duplicate {
        /// The line of the repeat.
        line: usize,
        /// The key (`cpu`, `node_selector.pool`, `volume /data`).
        key: String,
        /// Where it was first set.
        first_line: usize,
    },
    /// The value does not parse or is not a valid name.
    #[error("line {line}: bad value for `{key}`: {message}")]
    BadValue {
        /// The line.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong, with an example.
        message: String,
    },
    /// A value holds control characters (NUL, escape sequences, ...).
    #[error("line {line}: the value of `{key}` contains control characters")]
    ControlCharacter {
        /// The line.
        line: usize,
        /// The key.
        key: String,
    },
    /// The worker config's defaults are invalid (normally caught when the config is loaded).
    #[error("invalid worker config at `{field}`: {message}")]
    Config {
        /// The setting.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A hint goes beyond an admin limit, or names something the limits do not allow.
    #[error("{0}")]
    Rejected(Box<Rejection>),
}

impl HintError {
    /// A stable label for metrics and the Windmill error name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "HintRejected",
            Self::Config { .. } => "InvalidWorkerConfig",
            _ => "InvalidHint",
        }
    }

    /// The job failure Windmill shows. Hints are fixed by editing the script (or the config),
    /// never by retrying, hence `config_error`.
    #[must_use]
    pub fn to_job_failure(&self) -> JobFailure {
        JobFailure::new(FailureCategory::ConfigError, self.name(), self.to_string())
    }
}

/// Resolves a job's pod settings: defaults, the tag's profile, the script's annotations, then
/// Windmill's fields; then the limits. `language` is Windmill's name (`python3`, `bun`, ...).
pub fn resolve(
    settings: &Settings,
    tag: &str,
    language: &str,
    code: &str,
    windmill: WindmillFields,
) -> Result<PodSettings> {
    resolve_bytes(settings, tag, language, code.as_bytes(), windmill)
}

/// [`resolve`] for code that may not be UTF-8 (a file read by the `hints` command).
pub fn resolve_bytes(
    settings: &Settings,
    tag: &str,
    language: &str,
    code: &[u8],
    windmill: WindmillFields,
) -> Result<PodSettings> {
    let mut pod = PodSettings::defaults(settings)?;
    // The default image is the language's (`executor.images`); `job_template.image` is the
    // worker's own image, which only brings the runner.
    if let Some(image) = settings.executor.images.get(language) {
        pod.image = Sourced::new(image.clone(), Source::Default);
    }
    if let Some(profile) = settings.profiles.get(tag) {
        pod.apply(profile, Some(&Source::Profile(tag.to_owned())));
    }
    let annotations = parse_annotations(language, code)?;
    pod.apply(&annotations, None);
    if let Some(timeout) = windmill.timeout {
        pod.timeout = Sourced::new(timeout, Source::WindmillField);
    }
    pod.priority = windmill
        .priority
        .map(|p| Sourced::new(p, Source::WindmillField));
    limits::enforce(&mut pod, &settings.limits, settings.windmill.max_timeout.0)
        .map_err(HintError::Rejected)?;
    Ok(pod)
}

fn dflt<T>(value: T) -> Sourced<T> {
    Sourced::new(value, Source::Default)
}

/// A quantity from the `resources` defaults.
fn default_quantity<T: std::str::FromStr<Err = String>>(field: &str, text: &str) -> Result<T> {
    text.parse().map_err(|message| HintError::Config {
        field: format!("resources.{field}"),
        message,
    })
}

impl PodSettings {
    /// The worker defaults alone.
    pub fn defaults(settings: &Settings) -> Result<Self> {
        let r = &settings.resources;
        Ok(Self {
            cpu: dflt(default_quantity("default_cpu", &r.default_cpu)?),
            memory: dflt(default_quantity("default_memory", &r.default_memory)?),
            storage: dflt(
                values::positive_quantity(&r.default_storage).map_err(|message| {
                    HintError::Config {
                        field: "resources.default_storage".into(),
                        message,
                    }
                })?,
            ),
            gpu: dflt(0),
            gpu_resource: dflt(r.gpu_resource.clone()),
            image: dflt(settings.job_template.image.clone()),
            pull_policy: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: Vec::new(),
            priority_class: None,
            service_account: None,
            runtime_class: None,
            env_from_secrets: Vec::new(),
            env_from_configmaps: Vec::new(),
            volumes: Vec::new(),
            timeout: dflt(settings.windmill.default_timeout.0),
            retries: dflt(settings.job_template.system_retries),
            priority: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        })
    }

    /// Lays a higher-precedence layer over these settings. `stamp` replaces the layer's own
    /// sources (a profile's values carry no line numbers, so they are stamped with the tag).
    pub fn apply(&mut self, layer: &HintSet, stamp: Option<&Source>) {
        fn restamp<T: Clone>(v: &Sourced<T>, stamp: Option<&Source>) -> Sourced<T> {
            Sourced::new(
                v.value.clone(),
                stamp.cloned().unwrap_or_else(|| v.source.clone()),
            )
        }
        fn scalar<T: Clone>(
            to: &mut Sourced<T>,
            from: Option<&Sourced<T>>,
            stamp: Option<&Source>,
        ) {
            if let Some(v) = from {
                *to = restamp(v, stamp);
            }
        }
        fn optional<T: Clone>(
            to: &mut Option<Sourced<T>>,
            from: Option<&Sourced<T>>,
            stamp: Option<&Source>,
        ) {
            if let Some(v) = from {
                *to = Some(restamp(v, stamp));
            }
        }
        fn map(
            to: &mut BTreeMap<String, Sourced<String>>,
            from: &BTreeMap<String, Sourced<String>>,
            stamp: Option<&Source>,
        ) {
            for (k, v) in from {
                to.insert(k.clone(), restamp(v, stamp));
            }
        }
        fn list<T: Clone + PartialEq>(
            to: &mut Vec<Sourced<T>>,
            from: &[Sourced<T>],
            stamp: Option<&Source>,
        ) {
            for v in from {
                if !to.iter().any(|have| have.value == v.value) {
                    to.push(restamp(v, stamp));
                }
            }
        }
        scalar(&mut self.cpu, layer.cpu.as_ref(), stamp);
        scalar(&mut self.memory, layer.memory.as_ref(), stamp);
        scalar(&mut self.storage, layer.storage.as_ref(), stamp);
        scalar(&mut self.gpu, layer.gpu.as_ref(), stamp);
        scalar(&mut self.gpu_resource, layer.gpu_resource.as_ref(), stamp);
        scalar(&mut self.image, layer.image.as_ref(), stamp);
        optional(&mut self.pull_policy, layer.pull_policy.as_ref(), stamp);
        map(&mut self.node_selector, &layer.node_selector, stamp);
        list(&mut self.tolerations, &layer.tolerations, stamp);
        list(&mut self.affinity, &layer.affinity, stamp);
        optional(
            &mut self.priority_class,
            layer.priority_class.as_ref(),
            stamp,
        );
        optional(
            &mut self.service_account,
            layer.service_account.as_ref(),
            stamp,
        );
        optional(&mut self.runtime_class, layer.runtime_class.as_ref(), stamp);
        list(&mut self.env_from_secrets, &layer.env_from_secrets, stamp);
        list(
            &mut self.env_from_configmaps,
            &layer.env_from_configmaps,
            stamp,
        );
        for v in &layer.volumes {
            // A later source may remount a path with something else: replace, keep the order.
            let new = restamp(v, stamp);
            match self
                .volumes
                .iter_mut()
                .find(|have| have.value.mount_path() == v.value.mount_path())
            {
                Some(have) => *have = new,
                None => self.volumes.push(new),
            }
        }
        if let Some(t) = &layer.timeout {
            self.timeout = Sourced::new(t.value.0, restamp(t, stamp).source);
        }
        scalar(&mut self.retries, layer.retries.as_ref(), stamp);
        map(&mut self.labels, &layer.labels, stamp);
        map(&mut self.annotations, &layer.annotations, stamp);
    }

    /// Every effective value as (key, value, source), in a stable order: the `hints` output.
    #[must_use]
    pub fn rows(&self) -> Vec<(String, String, &Source)> {
        let mut rows: Vec<(String, String, &Source)> = Vec::new();
        let cpu = &self.cpu;
        rows.push((
            "cpu.request".into(),
            cpu.value.request.to_string(),
            &cpu.source,
        ));
        rows.push(("cpu.limit".into(), cpu.value.limit.to_string(), &cpu.source));
        let memory = &self.memory;
        rows.push((
            "memory.request".into(),
            memory.value.request.to_string(),
            &memory.source,
        ));
        rows.push((
            "memory.limit".into(),
            memory.value.limit.to_string(),
            &memory.source,
        ));
        rows.push((
            "storage".into(),
            self.storage.value.to_string(),
            &self.storage.source,
        ));
        rows.push(("gpu".into(), self.gpu.value.to_string(), &self.gpu.source));
        if self.gpu.value > 0 {
            rows.push((
                "gpu_resource".into(),
                self.gpu_resource.value.clone(),
                &self.gpu_resource.source,
            ));
        }
        rows.push(("image".into(), self.image.value.clone(), &self.image.source));
        if let Some(p) = &self.pull_policy {
            rows.push(("pull_policy".into(), p.value.to_string(), &p.source));
        }
        for (k, v) in &self.node_selector {
            rows.push((format!("node_selector.{k}"), v.value.clone(), &v.source));
        }
        for v in &self.tolerations {
            rows.push(("toleration".into(), v.value.to_string(), &v.source));
        }
        for v in &self.affinity {
            rows.push(("affinity".into(), v.value.to_string(), &v.source));
        }
        for (key, v) in [
            ("priority_class", &self.priority_class),
            ("service_account", &self.service_account),
            ("runtime_class", &self.runtime_class),
        ] {
            if let Some(v) = v {
                rows.push((key.into(), v.value.clone(), &v.source));
            }
        }
        for v in &self.env_from_secrets {
            rows.push(("env_from_secret".into(), v.value.clone(), &v.source));
        }
        for v in &self.env_from_configmaps {
            rows.push(("env_from_configmap".into(), v.value.clone(), &v.source));
        }
        for v in &self.volumes {
            rows.push(("volume".into(), v.value.to_string(), &v.source));
        }
        rows.push((
            "timeout".into(),
            HumanDuration(self.timeout.value).to_string(),
            &self.timeout.source,
        ));
        rows.push((
            "retries".into(),
            self.retries.value.to_string(),
            &self.retries.source,
        ));
        if let Some(p) = &self.priority {
            rows.push(("priority".into(), p.value.to_string(), &p.source));
        }
        for (k, v) in &self.labels {
            rows.push((format!("label.{k}"), v.value.clone(), &v.source));
        }
        for (k, v) in &self.annotations {
            rows.push((format!("annotation.{k}"), v.value.clone(), &v.source));
        }
        rows
    }
}

impl fmt::Display for PodSettings {
    /// An aligned KEY VALUE SOURCE table; values are escaped so that a hostile annotation cannot
    /// garble a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(String, String, String)> = self
            .rows()
            .into_iter()
            .map(|(k, v, s)| (k, values::shorten(&v), s.to_string()))
            .collect();
        let key_width = rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0)
            .max(3);
        let value_width = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(f, "{:key_width$}  {:value_width$}  SOURCE", "KEY", "VALUE")?;
        for (k, v, s) in rows {
            writeln!(f, "{k:key_width$}  {v:value_width$}  {s}")?;
        }
        Ok(())
    }
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

fn problem(field: impl Into<String>, message: impl Into<String>) -> SettingsProblem {
    SettingsProblem {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks the hint-related settings: defaults parse, profiles are valid and within the numeric
/// limits (a profile is the admin's own choice, so breaking a limit there is a config error, not
/// a clamp), and the limits themselves make sense.
pub fn validate_settings(settings: &Settings) -> std::result::Result<(), SettingsProblem> {
    let defaults = PodSettings::defaults(settings).map_err(|e| match e {
        HintError::Config { field, message } => problem(field, message),
        other => problem("resources", other.to_string()),
    })?;
    values::check_label_key(&settings.resources.gpu_resource)
        .map_err(|e| problem("resources.gpu_resource", e))?;
    values::check_image(&settings.job_template.image)
        .map_err(|e| problem("job_template.image", e))?;
    if settings.job_template.system_retries > MAX_RETRIES {
        return Err(problem(
            "job_template.system_retries",
            format!("at most {MAX_RETRIES}"),
        ));
    }
    limits::validate(&settings.limits)?;
    // The defaults must fit the limits too, or every job would be clamped or rejected.
    let mut pod = defaults;
    limits::enforce_numeric(
        &mut pod,
        &settings.limits,
        settings.windmill.max_timeout.0,
        OnViolation::Reject,
    )
    .map_err(|r| {
        problem(
            r.setting.clone(),
            format!("the worker defaults break it: {}", r.describe_violation()),
        )
    })?;
    for (tag, profile) in &settings.profiles {
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
        let mut pod =
            PodSettings::defaults(settings).map_err(|e| problem("resources", e.to_string()))?;
        pod.apply(profile, Some(&Source::Profile(tag.clone())));
        limits::enforce_numeric(
            &mut pod,
            &settings.limits,
            settings.windmill.max_timeout.0,
            OnViolation::Reject,
        )
        .map_err(|r| {
            problem(
                field(&r.key),
                format!(
                    "{}: lower it or raise {}",
                    r.describe_violation(),
                    r.setting
                ),
            )
        })?;
        limits::check_protected(&pod, &settings.limits)
            .map_err(|r| problem(field(&r.key), r.describe_violation()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
