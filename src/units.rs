//! Scalar values of the worker config that more than one module reads: durations (`5s`, `2m`)
//! and byte sizes (`8MiB`), each with one text form for YAML, env overrides and messages.
//!
//! Its own module so that `config` and `hints` can both use them without importing each other.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value as Yaml;

/// Serde for a type written as one YAML scalar (string or number) parsed with `FromStr`, and
/// shown with `Display`.
macro_rules! scalar_serde {
    ($kind:ty, $example:literal) => {
        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = match Yaml::deserialize(d)? {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            concat!("expected a ", $example, ", got {:?}"),
                            other
                        )));
                    }
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $kind {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A duration written as `500ms`, `5s`, `2m`, `1h`, `7d` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("`{s}` is not a duration; write it like 500ms, 5s, 2m, 1h or 7d")
        })?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use ms, s, m, h or d"
                ));
            }
        };
        if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&seconds) {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Self(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(86_400_000) && ms > 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

scalar_serde!(HumanDuration, "duration like 5s");

/// A size in bytes written as `8MiB`, `512KiB`, `1GiB`, `8Mi` or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write it like 512KiB, 8MiB or 1GiB"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "Ki" | "KiB" | "K" | "KB" => 1 << 10,
            "Mi" | "MiB" | "M" | "MB" => 1 << 20,
            "Gi" | "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use KiB, MiB or GiB"
                ));
            }
        };
        value
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

scalar_serde!(ByteSize, "size like 8MiB");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_and_print() {
        for (text, secs) in [
            ("500ms", 500),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            ("30", 30_000),
            ("1.5s", 1_500),
        ] {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().0.as_millis(),
                secs,
                "{text}"
            );
        }
        assert!("5 parsecs".parse::<HumanDuration>().is_err());
        assert!("-1s".parse::<HumanDuration>().is_err());
        assert_eq!("8MiB".parse::<ByteSize>().unwrap().0, 8 << 20);
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
    }
}
