//! Kubernetes resource quantities (`500m`, `2`, `1.5`, `4Gi`, `1G`, `1e3`), reduced to canonical
//! integers — millicores for CPU, bytes for memory and storage — so that hints and limits compare
//! exactly. Parsing is exact integer arithmetic: `0.1` CPU is 100m, never 99.999m.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest quantity text we look at; real ones are a handful of characters, and a bound keeps
/// the digit arithmetic in `u128`.
const MAX_LEN: usize = 32;

/// CPU in millicores (`500m` = 500, `2` = 2000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millicores(pub u64);

/// Memory or storage in bytes (`1Ki` = 1024, `1k` = 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

/// An exact non-negative rational `mantissa × 10^dec × 2^bin`, as written.
struct Exact {
    mantissa: u128,
    dec: i32,
    bin: u32,
}

impl Exact {
    /// The value times `10^scale`, rounded up (Kubernetes rounds quantities up to the precision it
    /// keeps, so `0.0001` CPU is 1m, never 0).
    fn scaled_ceil(&self, scale: i32) -> Option<u64> {
        let dec = self.dec.checked_add(scale)?;
        let numerator = self.mantissa.checked_mul(1u128.checked_shl(self.bin)?)?;
        let value = if dec >= 0 {
            numerator.checked_mul(10u128.checked_pow(dec.unsigned_abs())?)?
        } else {
            match 10u128.checked_pow(dec.unsigned_abs()) {
                Some(divisor) => numerator.div_ceil(divisor),
                // A divisor beyond u128 exceeds any numerator: the value rounds up to 1 (or is 0).
                None => u128::from(numerator != 0),
            }
        };
        u64::try_from(value).ok()
    }
}

/// Why a quantity did not parse (the caller adds the key and an example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_exact(text: &str) -> Result<Exact, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError("empty quantity".into()));
    }
    if text.len() > MAX_LEN {
        return Err(QuantityError(format!("longer than {MAX_LEN} characters")));
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(QuantityError("no number".into()));
    }
    if fraction.contains('.') {
        return Err(QuantityError("more than one decimal point".into()));
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or_else(|| QuantityError("too many digits".into()))?;
    }
    // MAX_LEN bounds the fraction, so this cannot truncate.
    let fraction_digits = i32::try_from(fraction.len()).unwrap_or(i32::MAX);
    let (dec, bin) = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exponent if exponent.starts_with(['e', 'E']) => {
            let digits = exponent[1..].strip_prefix('+').unwrap_or(&exponent[1..]);
            let (negative, digits) = match digits.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, digits),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError(format!("unknown suffix `{suffix}`")));
            }
            let value: i32 = digits
                .parse()
                .map_err(|_| QuantityError("exponent out of range".into()))?;
            (if negative { -value } else { value }, 0)
        }
        "Mb" | "MB" | "Gb" | "GB" | "KB" | "Kb" | "kb" | "kB" | "mi" | "gi" | "ki" | "K" => {
            return Err(QuantityError(format!(
                "unknown suffix `{suffix}` (Kubernetes writes Ki, Mi, Gi for powers of 1024 and k, M, G for powers of 1000)"
            )));
        }
        _ => return Err(QuantityError(format!("unknown suffix `{suffix}`"))),
    };
    Ok(Exact {
        mantissa,
        dec: dec - fraction_digits,
        bin,
    })
}

impl Millicores {
    /// Whole cores, for messages.
    #[must_use]
    pub fn from_cores(cores: u64) -> Self {
        Self(cores.saturating_mul(1000))
    }
}

impl FromStr for Millicores {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, QuantityError> {
        let exact = parse_exact(s)?;
        exact
            .scaled_ceil(3)
            .map(Self)
            .ok_or_else(|| QuantityError("too large".into()))
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl FromStr for Bytes {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, QuantityError> {
        let exact = parse_exact(s)?;
        exact
            .scaled_ceil(0)
            .map(Self)
            .ok_or_else(|| QuantityError("too large".into()))
    }
}

impl fmt::Display for Bytes {
    /// The shortest exact form: binary suffixes first (what people write for memory), then
    /// decimal ones, then plain bytes. Parsing the output gives the same number back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b > 0 {
            for (shift, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                if b.trailing_zeros() >= shift {
                    return write!(f, "{}{suffix}", b >> shift);
                }
            }
            for (power, suffix) in [
                (18, "E"),
                (15, "P"),
                (12, "T"),
                (9, "G"),
                (6, "M"),
                (3, "k"),
            ] {
                let unit = 10u64.pow(power);
                if b.is_multiple_of(unit) {
                    return write!(f, "{}{suffix}", b / unit);
                }
            }
        }
        write!(f, "{b}")
    }
}

/// Quantities in YAML may be strings (`"500m"`) or numbers (`2`, `1.5`).
fn quantity_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_yaml_ng::Value::deserialize(d)? {
        serde_yaml_ng::Value::String(s) => Ok(s),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a quantity like \"500m\" or \"4Gi\", got {other:?}"
        ))),
    }
}

impl<'de> Deserialize<'de> for Millicores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = quantity_text(d)?;
        text.parse().map_err(|e: QuantityError| {
            serde::de::Error::custom(format!(
                "`{text}` is not a CPU quantity ({e}); write it like 500m, 2 or 1.5"
            ))
        })
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = quantity_text(d)?;
        text.parse().map_err(|e: QuantityError| {
            serde::de::Error::custom(format!(
                "`{text}` is not a size ({e}); write it like 512Mi, 4Gi or 1G"
            ))
        })
    }
}

impl Serialize for Millicores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_quantities_reduce_to_millicores() {
        for (text, milli) in [
            ("500m", 500),
            ("2", 2000),
            ("1.5", 1500),
            ("0.1", 100),
            (".5", 500),
            ("0.0001", 1),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1k", 1_000_000),
            ("250m", 250),
            ("0", 0),
        ] {
            assert_eq!(text.parse::<Millicores>(), Ok(Millicores(milli)), "{text}");
        }
    }

    #[test]
    fn byte_quantities_reduce_to_bytes() {
        for (text, bytes) in [
            ("4Gi", 4u64 << 30),
            ("512Mi", 512 << 20),
            ("1G", 1_000_000_000),
            ("100k", 100_000),
            ("1.5Gi", 3 << 29),
            ("1Ki", 1024),
            ("123", 123),
            ("0.5", 1),
            ("15Ei", 15 << 60),
        ] {
            assert_eq!(text.parse::<Bytes>(), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for text in [
            "",
            "-1",
            "+1",
            "1.2.3",
            "1 Gi",
            "Gi",
            "1GB",
            "1gi",
            "1Q",
            "1e",
            "1e+",
            "abc",
            ".",
            "1e99999999999",
            "16Ei",
            "99999999999999999999999999999999999",
        ] {
            assert!(text.parse::<Bytes>().is_err(), "{text} parsed as bytes");
        }
        let err = "1GB".parse::<Bytes>().unwrap_err();
        assert!(err.0.contains("Gi"), "{err}");
        assert!(
            "1Gi".parse::<Millicores>().is_ok(),
            "binary suffixes are legal for cpu too"
        );
    }

    #[test]
    fn canonical_forms_are_short() {
        assert_eq!(Bytes(4 << 30).to_string(), "4Gi");
        assert_eq!(Bytes(1_000_000_000).to_string(), "1G");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536Mi");
        assert_eq!(Bytes(7).to_string(), "7");
        assert_eq!(Bytes(0).to_string(), "0");
        assert_eq!(Millicores(2000).to_string(), "2");
        assert_eq!(Millicores(1500).to_string(), "1500m");
    }

    proptest! {
        #[test]
        fn bytes_round_trip_through_their_text(n in any::<u64>()) {
            prop_assert_eq!(Bytes(n).to_string().parse::<Bytes>(), Ok(Bytes(n)));
        }

        #[test]
        fn millicores_round_trip_through_their_text(n in any::<u64>()) {
            prop_assert_eq!(Millicores(n).to_string().parse::<Millicores>(), Ok(Millicores(n)));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Bytes>();
            let _ = text.parse::<Millicores>();
        }
    }
}
