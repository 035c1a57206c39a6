//! The values a hint can carry, each with one text form shared by annotations, profiles and the
//! `hints` output (`FromStr` parses it, `Display` writes it back), and the name checks that keep
//! whatever reaches the pod spec within what Kubernetes accepts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value as Yaml;

use super::quantity::{Bytes, Millicores, QuantityError};

/// A request and a limit of one resource. Written `2` (request = limit) or `1..2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit<T> {
    /// What the scheduler reserves.
    pub request: T,
    /// What the container may use (memory above it is `OOMKilled`, CPU above it is throttled).
    pub limit: T,
}

impl<T: Copy> RequestLimit<T> {
    /// Request and limit equal: the pod gets the `Guaranteed` quality-of-service class when every resource is so.
    pub fn exact(value: T) -> Self {
        Self {
            request: value,
            limit: value,
        }
    }
}

/// What a quantity of each kind is called in messages, with an example.
pub trait QuantityKind: FromStr<Err = QuantityError> + fmt::Display + Ord + Copy {
    /// `a CPU quantity`.
    const WHAT: &'static str;
    /// `500m, 2 or 1.5`.
    const EXAMPLES: &'static str;
    /// Zero of this kind.
    const ZERO: Self;
}

impl QuantityKind for Millicores {
    const WHAT: &'static str = "a CPU quantity";
    const EXAMPLES: &'static str = "500m, 2 or 1.5";
    const ZERO: Self = Millicores(0);
}

impl QuantityKind for Bytes {
    const WHAT: &'static str = "a size";
    const EXAMPLES: &'static str = "512Mi, 4Gi or 1G";
    const ZERO: Self = Bytes(0);
}

/// Parses one quantity of kind `T`, with a message that says how to write one.
pub fn quantity<T: QuantityKind>(text: &str) -> Result<T, String> {
    text.parse::<T>().map_err(|e| {
        format!(
            "`{}` is not {} ({e}); write it like {}",
            shorten(text),
            T::WHAT,
            T::EXAMPLES
        )
    })
}

/// Parses a positive quantity (a zero request or size is always a mistake).
pub fn positive_quantity<T: QuantityKind>(text: &str) -> Result<T, String> {
    let value = quantity::<T>(text)?;
    if value == T::ZERO {
        return Err(format!("`{text}` must be more than 0"));
    }
    Ok(value)
}

impl<T: QuantityKind> FromStr for RequestLimit<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((request, limit)) = s.split_once("..") else {
            return positive_quantity(s).map(Self::exact);
        };
        let request = positive_quantity(request)?;
        let limit = positive_quantity(limit)?;
        if request > limit {
            return Err(format!(
                "request {request} is above limit {limit}; write REQUEST..LIMIT, e.g. 1..2"
            ));
        }
        Ok(Self { request, limit })
    }
}

impl<T: QuantityKind> fmt::Display for RequestLimit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.request == self.limit {
            write!(f, "{}", self.request)
        } else {
            write!(f, "{}..{}", self.request, self.limit)
        }
    }
}

/// Deserializes any value with a text form from a YAML string (or a bare number or boolean,
/// for quantities such as `cpu: 2`).
fn from_yaml_text<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(
    d: D,
    expected: &str,
) -> Result<T, D::Error> {
    let text = match Yaml::deserialize(d)? {
        Yaml::String(s) => s,
        Yaml::Number(n) => n.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected {expected}, got {other:?}"
            )));
        }
    };
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de, T: QuantityKind> Deserialize<'de> for RequestLimit<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_yaml_text(d, "a quantity like \"2\" or \"1..2\"")
    }
}

impl<T: QuantityKind> Serialize for RequestLimit<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// When the kubelet pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PullPolicy {
    /// Every start.
    Always,
    /// Only when the node does not have it.
    IfNotPresent,
    /// Never: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(Self::Always),
            "IfNotPresent" => Ok(Self::IfNotPresent),
            "Never" => Ok(Self::Never),
            other => Err(format!(
                "`{}` is not a pull policy; use Always, IfNotPresent or Never",
                shorten(other)
            )),
        }
    }
}

/// The effect of a taint that a toleration matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaintEffect {
    /// New pods are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted (after `toleration_seconds`, when set).
    NoExecute,
}

impl TaintEffect {
    /// The Kubernetes spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

impl FromStr for TaintEffect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "NoSchedule" => Ok(Self::NoSchedule),
            "PreferNoSchedule" => Ok(Self::PreferNoSchedule),
            "NoExecute" => Ok(Self::NoExecute),
            other => Err(format!(
                "`{}` is not a taint effect; use NoSchedule, PreferNoSchedule or NoExecute",
                shorten(other)
            )),
        }
    }
}

/// How a toleration matches a taint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TolerationOperator {
    /// The taint's value must equal ours.
    Equal,
    /// Any value (ours is empty).
    Exists,
}

impl TolerationOperator {
    /// The Kubernetes spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "Equal",
            Self::Exists => "Exists",
        }
    }
}

/// A toleration, written `key=value:Effect` (as `kubectl taint` writes taints), `key:Effect`
/// (any value), `key` (any value and effect), and `key=value:NoExecute:300` for a bounded stay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Toleration {
    /// The taint key. Never empty: a toleration of every taint is not something a hint can ask.
    pub key: String,
    /// `Equal` when a value is given, else `Exists`.
    pub operator: TolerationOperator,
    /// The taint value (`Equal` only).
    pub value: Option<String>,
    /// The taint effect; `None` matches every effect.
    pub effect: Option<TaintEffect>,
    /// How long the pod stays on a node tainted `NoExecute`.
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    fn check(&self) -> Result<(), String> {
        check_label_key(&self.key).map_err(|e| format!("toleration key: {e}"))?;
        match (self.operator, &self.value) {
            (TolerationOperator::Equal, Some(value)) => {
                check_label_value(value).map_err(|e| format!("toleration value: {e}"))?;
            }
            (TolerationOperator::Equal, None) => {
                return Err("operator Equal needs a value (key=value:Effect)".into());
            }
            (TolerationOperator::Exists, Some(_)) => {
                return Err("operator Exists takes no value".into());
            }
            (TolerationOperator::Exists, None) => {}
        }
        if let Some(seconds) = self.toleration_seconds {
            if self.effect != Some(TaintEffect::NoExecute) {
                return Err("toleration seconds only apply to NoExecute".into());
            }
            if !(0..=10 * 365 * 86400).contains(&seconds) {
                return Err(format!("toleration seconds {seconds} out of range"));
            }
        }
        Ok(())
    }
}

impl FromStr for Toleration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let matcher = parts.next().unwrap_or_default();
        let effect = parts.next().map(str::parse::<TaintEffect>).transpose()?;
        let toleration_seconds = parts
            .next()
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| format!("`{}` is not a number of seconds", shorten(t)))
            })
            .transpose()?;
        let (key, value) = match matcher.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (matcher, None),
        };
        let toleration = Self {
            key: key.to_owned(),
            operator: if value.is_some() {
                TolerationOperator::Equal
            } else {
                TolerationOperator::Exists
            },
            value,
            effect,
            toleration_seconds,
        };
        toleration.check().map_err(|e| {
            format!("{e}; write it like dedicated=gpu:NoSchedule, gpu:NoSchedule or gpu")
        })?;
        Ok(toleration)
    }
}

impl fmt::Display for Toleration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(value) = &self.value {
            write!(f, "={value}")?;
        }
        if let Some(effect) = self.effect {
            write!(f, ":{}", effect.as_str())?;
        }
        if let Some(seconds) = self.toleration_seconds {
            write!(f, ":{seconds}")?;
        }
        Ok(())
    }
}

/// The mapping form of a toleration in YAML, as in a pod spec (snake case).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TolerationSpec {
    key: String,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    toleration_seconds: Option<i64>,
}

impl<'de> Deserialize<'de> for Toleration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match Yaml::deserialize(d)? {
            Yaml::String(s) => s.parse().map_err(D::Error::custom),
            map @ Yaml::Mapping(_) => {
                let spec: TolerationSpec =
                    serde_yaml_ng::from_value(map).map_err(D::Error::custom)?;
                let operator = match spec.operator.as_deref() {
                    Some("Equal") => TolerationOperator::Equal,
                    None if spec.value.is_some() => TolerationOperator::Equal,
                    Some("Exists") | None => TolerationOperator::Exists,
                    Some(other) => {
                        return Err(D::Error::custom(format!(
                            "operator `{other}` must be Equal or Exists"
                        )));
                    }
                };
                let toleration = Self {
                    key: spec.key,
                    operator,
                    value: spec.value,
                    effect: spec
                        .effect
                        .as_deref()
                        .map(str::parse)
                        .transpose()
                        .map_err(D::Error::custom)?,
                    toleration_seconds: spec.toleration_seconds,
                };
                toleration.check().map_err(D::Error::custom)?;
                Ok(toleration)
            }
            other => Err(D::Error::custom(format!(
                "expected a toleration like \"dedicated=gpu:NoSchedule\" or {{key: dedicated, value: gpu, effect: NoSchedule}}, got {other:?}"
            ))),
        }
    }
}

/// A scheduling preset; the executor turns each into affinity or spread constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AffinityPreset {
    /// `zone-spread`: spread runs of the same script across zones
    /// (`topology.kubernetes.io/zone`), best effort.
    ZoneSpread,
    /// `anti-affinity`: prefer nodes that are not already running this script.
    AntiAffinityByScript,
}

impl AffinityPreset {
    /// The hint spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZoneSpread => "zone-spread",
            Self::AntiAffinityByScript => "anti-affinity",
        }
    }
}

impl FromStr for AffinityPreset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zone-spread" => Ok(Self::ZoneSpread),
            "anti-affinity" => Ok(Self::AntiAffinityByScript),
            other => Err(format!(
                "`{}` is not an affinity preset; use zone-spread or anti-affinity",
                shorten(other)
            )),
        }
    }
}

/// A volume mounted into the job's container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Volume {
    /// `pvc:NAME:/path[:ro]`: an existing PersistentVolumeClaim.
    Pvc {
        /// The claim's name.
        claim: String,
        /// Where it is mounted.
        mount_path: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// `empty:/path:SIZE`: a scratch emptyDir with a size limit, gone with the pod.
    EmptyDir {
        /// Where it is mounted.
        mount_path: String,
        /// The emptyDir's `sizeLimit` (counts toward the pod's ephemeral storage).
        size: Bytes,
    },
    /// `cache:/path`: the worker's shared dependency cache (pip/npm/go caches), provided by the
    /// executor.
    DependencyCache {
        /// Where it is mounted.
        mount_path: String,
    },
}

impl Volume {
    /// Where the volume is mounted; two volumes may not share it.
    #[must_use]
    pub fn mount_path(&self) -> &str {
        match self {
            Self::Pvc { mount_path, .. }
            | Self::EmptyDir { mount_path, .. }
            | Self::DependencyCache { mount_path } => mount_path,
        }
    }

    fn check(&self) -> Result<(), String> {
        check_mount_path(self.mount_path())?;
        match self {
            Self::Pvc { claim, .. } => {
                check_dns_subdomain(claim).map_err(|e| format!("claim name: {e}"))
            }
            Self::EmptyDir { size, .. } if size.0 == 0 => {
                Err("emptyDir size must be more than 0".into())
            }
            _ => Ok(()),
        }
    }
}

const VOLUME_FORMS: &str = "pvc:NAME:/path[:ro], empty:/path:SIZE or cache:/path";

impl FromStr for Volume {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let volume = match parts.as_slice() {
            ["pvc", claim, path] => Self::Pvc {
                claim: (*claim).to_owned(),
                mount_path: (*path).to_owned(),
                read_only: false,
            },
            ["pvc", claim, path, mode @ ("ro" | "rw")] => Self::Pvc {
                claim: (*claim).to_owned(),
                mount_path: (*path).to_owned(),
                read_only: *mode == "ro",
            },
            ["empty", path, size] => Self::EmptyDir {
                mount_path: (*path).to_owned(),
                size: quantity::<Bytes>(size)?,
            },
            ["cache", path] => Self::DependencyCache {
                mount_path: (*path).to_owned(),
            },
            _ => {
                return Err(format!(
                    "`{}` is not a volume; write {VOLUME_FORMS}",
                    shorten(s)
                ));
            }
        };
        volume.check()?;
        Ok(volume)
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pvc {
                claim,
                mount_path,
                read_only,
            } => write!(
                f,
                "pvc:{claim}:{mount_path}{}",
                if *read_only { ":ro" } else { "" }
            ),
            Self::EmptyDir { mount_path, size } => write!(f, "empty:{mount_path}:{size}"),
            Self::DependencyCache { mount_path } => write!(f, "cache:{mount_path}"),
        }
    }
}

/// Values whose YAML form is their text form.
macro_rules! text_serde {
    ($($ty:ty => $expected:literal),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_yaml_text(d, $expected)
            }
        }
    )*};
}

text_serde! {
    PullPolicy => "Always, IfNotPresent or Never",
    AffinityPreset => "zone-spread or anti-affinity",
    Volume => "a volume like \"pvc:data:/mnt/data:ro\"",
}

macro_rules! display_serialize {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

display_serialize!(Toleration, Volume);

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AffinityPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PullPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for AffinityPreset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A value for a message: at most 64 characters, control characters escaped, so that hostile
/// input cannot flood or garble the Windmill job log.
#[must_use]
pub fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    let mut shown: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    shown
}

/// A DNS subdomain (RFC 1123), the form of most object names: Secrets, ConfigMaps, PVCs,
/// service accounts, priority classes, runtime classes.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .split('.')
            .all(|part| !part.is_empty() && !part.starts_with('-') && !part.ends_with('-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', at most 253, e.g. etl-credentials)",
            shorten(name)
        ))
    }
}

/// The name part of a label key, or a label value: at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric.
fn is_label_name(text: &str) -> bool {
    text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric())
}

/// A label, annotation, node-selector or taint key: `[prefix/]name`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let ok = !name.is_empty()
        && is_label_name(name)
        && prefix.is_none_or(|p| check_dns_subdomain(p).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid key (optional DNS prefix and '/', then at most 63 of letters, digits, '-', '_', '.', e.g. example.com/team)",
            shorten(key)
        ))
    }
}

/// A label or node-selector value: empty, or at most 63 of `[A-Za-z0-9._-]`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid label value (at most 63 of letters, digits, '-', '_', '.')",
            shorten(value)
        ))
    }
}

/// Longest annotation value a hint may set. Kubernetes allows 256 KiB for all annotations
/// together; a hint line is at most 4 KiB anyway, a profile could otherwise be larger.
pub const MAX_ANNOTATION_VALUE: usize = 4096;

/// An annotation value: any text without control characters (tabs excepted), bounded.
pub fn check_annotation_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_ANNOTATION_VALUE {
        return Err(format!(
            "annotation value is {} bytes; at most {MAX_ANNOTATION_VALUE}",
            value.len()
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("annotation value contains control characters".into());
    }
    Ok(())
}

/// An image reference (`ghcr.io/acme/etl:1.4`, `python@sha256:...`): the characters a reference
/// may hold, bounded. The registry has the last word; this keeps garbage out of the pod spec.
pub fn check_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 512
        && image.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
        && image
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !image.contains("..")
        && !image.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an image reference; write it like ghcr.io/acme/etl:1.4",
            shorten(image)
        ))
    }
}

/// A mount path: absolute, not `/`, no `..`, and free of the characters the volume syntax and
/// Kubernetes reserve.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    // The runner's own mounts (see `runner`): a volume there would hide the job's code.
    if path == "/tmp" || path == "/flext" || path.starts_with("/flext/") {
        return Err(format!(
            "`{}` is reserved for the worker's runner (/flext/..., /tmp); mount elsewhere, e.g. /mnt/data",
            shorten(path)
        ));
    }
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 1024
        && !path.split('/').any(|part| part == "..")
        && !path
            .chars()
            .any(|c| c.is_control() || c == ':' || c == ',' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a mount path: it must be absolute, not `/`, without `..`, spaces or ':' (e.g. /mnt/data)",
            shorten(path)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limit_forms() {
        let cpu: RequestLimit<Millicores> = "2".parse().unwrap();
        assert_eq!(cpu, RequestLimit::exact(Millicores(2000)));
        let cpu: RequestLimit<Millicores> = "500m..2".parse().unwrap();
        assert_eq!(
            (cpu.request, cpu.limit),
            (Millicores(500), Millicores(2000))
        );
        assert_eq!(cpu.to_string(), "500m..2");
        let err = "4..2".parse::<RequestLimit<Millicores>>().unwrap_err();
        assert!(err.contains("above limit"), "{err}");
        let err = "0".parse::<RequestLimit<Bytes>>().unwrap_err();
        assert!(err.contains("more than 0"), "{err}");
    }

    #[test]
    fn tolerations_follow_the_kubectl_taint_form() {
        for (text, key, operator, value, effect, seconds) in [
            (
                "dedicated=gpu:NoSchedule",
                "dedicated",
                TolerationOperator::Equal,
                Some("gpu"),
                Some(TaintEffect::NoSchedule),
                None,
            ),
            (
                "gpu:NoSchedule",
                "gpu",
                TolerationOperator::Exists,
                None,
                Some(TaintEffect::NoSchedule),
                None,
            ),
            (
                "nvidia.com/gpu",
                "nvidia.com/gpu",
                TolerationOperator::Exists,
                None,
                None,
                None,
            ),
            (
                "spot=true:NoExecute:300",
                "spot",
                TolerationOperator::Equal,
                Some("true"),
                Some(TaintEffect::NoExecute),
                Some(300),
            ),
        ] {
            let t: Toleration = text.parse().unwrap();
            assert_eq!(
                (
                    t.key.as_str(),
                    t.operator,
                    t.value.as_deref(),
                    t.effect,
                    t.toleration_seconds
                ),
                (key, operator, value, effect, seconds),
                "{text}"
            );
            assert_eq!(t.to_string(), text);
        }
        for bad in [
            "",
            "=x",
            "gpu:NoSched",
            "a=b:NoSchedule:30",
            "a:NoExecute:-1",
            "a b",
        ] {
            assert!(bad.parse::<Toleration>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn volumes_have_three_forms() {
        for text in [
            "pvc:data:/mnt/data",
            "pvc:data:/mnt/data:ro",
            "empty:/scratch:1Gi",
            "cache:/cache",
        ] {
            let v: Volume = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
        }
        assert_eq!(
            "pvc:data:/mnt/data:rw"
                .parse::<Volume>()
                .unwrap()
                .to_string(),
            "pvc:data:/mnt/data"
        );
        for bad in [
            "pvc:Data:/x",
            "pvc:data:relative",
            "pvc:data:/",
            "pvc:data:/a/../etc",
            "empty:/x",
            "empty:/x:0",
            "empty:/x:lots",
            "cache",
            "nfs:server:/x",
            "pvc:data:/x:rx",
        ] {
            assert!(bad.parse::<Volume>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn name_checks() {
        assert!(check_dns_subdomain("etl-credentials.v2").is_ok());
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(check_label_key("example.com/team").is_ok());
        assert!(check_label_key("Team_1").is_ok());
        for bad in ["", "/x", "a/", "x/y/z", "-a", &"a".repeat(64)] {
            assert!(check_label_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_image("ghcr.io/acme/etl:1.4").is_ok());
        assert!(check_image("python@sha256:0123abcd").is_ok());
        for bad in ["", "-x", "a b", "a/../b", "a\0b", "x//y"] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
        assert_eq!(shorten("a\0b"), "a\\0b");
        assert_eq!(shorten(&"x".repeat(100)).chars().count(), 65);
    }
}
