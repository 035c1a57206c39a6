//! Tolerations, written as `kubectl taint` writes taints (`dedicated=gpu:NoSchedule`), or in a
//! profile as the pod spec's mapping.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value as Yaml;

use super::names::{check_label_key, check_label_value, shorten};

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

impl Serialize for Toleration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
