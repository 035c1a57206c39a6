//! The values a hint can carry, each with one text form shared by annotations, profiles and the
//! `hints` output (`FromStr` parses it, `Display` writes it back): quantities and their
//! request..limit pairs, pull policies and affinity presets. Tolerations and volumes, which have
//! forms of their own, are in `toleration` and `volume`; name checks in `names`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value as Yaml;

use super::names::shorten;
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
pub(super) fn from_yaml_text<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(
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
}

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
}
