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
//! - `quantity`: Kubernetes quantities reduced to millicores and bytes.
//! - `values`, `toleration`, `volume`: the value types and their one text form.
//! - `names`: the name checks, and how a hostile value is shown.
//! - `hint_set`: one layer of hints (a profile or a script's annotations).
//! - `parse`, `keys`: the `# k8s:` annotation lines, and the keys they may use.
//! - `pod`: the effective settings of one job's pod, layer by layer.
//! - `limits`: the `limits:` config section and its checks; `maxima` clamps or rejects
//!   numbers, `allow_lists` rejects names a script may not use and protected labels.
//! - `settings`: what the worker config gives this module, and its checks at load.
//! - `error`: each problem, and all of a job's problems together.

mod allow_lists;
mod error;
mod hint_set;
mod keys;
mod limits;
mod maxima;
mod names;
mod parse;
mod pod;
mod quantity;
mod settings;
mod toleration;
mod values;
mod volume;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use allow_lists::glob_match;
pub use error::{HintError, HintErrors};
pub use hint_set::{HintSet, MAX_RETRIES, Profiles};
pub use limits::{Limits, OnViolation, PROTECTED_PREFIXES, Rejection};
pub use names::check_cluster_name;
pub use parse::{MAX_HINT_LINE_BYTES, MAX_HINTS, MAX_PROBLEMS, comment_marker, parse_annotations};
pub use pod::{PodSettings, WindmillFields};
pub use quantity::{Bytes, Millicores, QuantityError};
pub use settings::{HintSettings, Resources, SettingsProblem};
pub use toleration::{TaintEffect, Toleration, TolerationOperator};
pub use values::{AffinityPreset, PullPolicy, RequestLimit};
pub use volume::Volume;

/// A result whose error lists every problem with a job's hints.
pub type Result<T, E = HintErrors> = std::result::Result<T, E>;

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

/// Resolves a job's pod settings: defaults, the tag's profile, the script's annotations, then
/// Windmill's fields; then the limits. `language` is Windmill's name (`python3`, `bun`, ...).
pub fn resolve(
    settings: &HintSettings<'_>,
    tag: &str,
    language: &str,
    code: &str,
    windmill: WindmillFields,
) -> Result<PodSettings> {
    resolve_bytes(settings, tag, language, code.as_bytes(), windmill)
}

/// [`resolve`] for code that may not be UTF-8 (a file read by the `hints` command).
///
/// Every problem is reported, not only the first: the limits are checked on the hints that did
/// parse, so that one run lists all a script's author has to change.
pub fn resolve_bytes(
    settings: &HintSettings<'_>,
    tag: &str,
    language: &str,
    code: &[u8],
    windmill: WindmillFields,
) -> Result<PodSettings> {
    let mut pod = PodSettings::defaults(settings)?;
    // The default image is the language's (`executor.images`); `job_template.image` is the
    // worker's own image, which only brings the runner.
    if let Some(image) = settings.images.get(language) {
        pod.image = Sourced::new(image.clone(), Source::Default);
    }
    if let Some(profile) = settings.profiles.get(tag) {
        pod.apply(profile, Some(&Source::Profile(tag.to_owned())));
    }
    let (annotations, mut problems) = parse::read_annotations(language, code);
    pod.apply(&annotations, None);
    if let Some(timeout) = windmill.timeout {
        pod.timeout = Sourced::new(timeout, Source::WindmillField);
    }
    pod.priority = windmill
        .priority
        .map(|p| Sourced::new(p, Source::WindmillField));
    let rejections = limits::enforce(&mut pod, settings.limits, settings.max_timeout);
    problems.extend(
        rejections
            .into_iter()
            .map(|r| HintError::Rejected(Box::new(r))),
    );
    HintErrors::check(problems)?;
    Ok(pod)
}

#[cfg(test)]
mod tests;
