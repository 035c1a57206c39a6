//! `k8s:` annotation lines in a script's leading comments:
//!
//! ```text
//! #!/usr/bin/env python3
//! # Nightly ETL.
//! # k8s: cpu=2 memory=4Gi gpu=1 image=ghcr.io/acme/etl:1.4 timeout=2h
//! # k8s: node_selector=pool:gpu toleration=nvidia.com/gpu:NoSchedule
//! import pandas
//! ```
//!
//! Only the leading comment block counts: reading stops at the first line that is neither blank
//! nor a comment (a shebang may come first), so a `k8s:` string deeper in the code, or in a
//! docstring, is never a hint. Everything here is hostile input: bounded, escaped in messages,
//! and an error rather than a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::values::{
    self, AffinityPreset, PullPolicy, RequestLimit, Toleration, Volume, positive_quantity, shorten,
};
use super::{Bytes, HintError, HintSet, MAX_RETRIES, Millicores, Source, Sourced};
use crate::config::HumanDuration;

/// Longest `k8s:` line, in bytes. Real ones are well under 200; a bound keeps a hostile script
/// from making us hold or echo megabytes.
pub const MAX_HINT_LINE_BYTES: usize = 4096;

/// Most key=value hints (list items counted one by one) in one script.
pub const MAX_HINTS: usize = 256;

/// The line-comment marker hints are read after, by Windmill language name.
#[must_use]
pub fn comment_marker(language: &str) -> Option<&'static str> {
    crate::domain::LanguageInfo::of(language).map(|l| l.comment)
}

/// Reads the hints of a script. Each value's source is [`Source::Annotation`] with its line.
pub fn parse_annotations(language: &str, code: &[u8]) -> Result<HintSet, HintError> {
    let marker = comment_marker(language).ok_or_else(|| HintError::UnknownLanguage {
        language: shorten(language),
    })?;
    let code = code.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(code);
    let mut reader = Reader::default();
    for (index, raw) in code.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line == 1 && raw.starts_with(b"#!") {
            continue;
        }
        let text = raw.trim_ascii_start();
        if text.is_empty() {
            continue;
        }
        let Some(comment) = text.strip_prefix(marker.as_bytes()) else {
            break;
        };
        let Some(hints) = comment.trim_ascii_start().strip_prefix(b"k8s:") else {
            continue;
        };
        if raw.len() > MAX_HINT_LINE_BYTES {
            return Err(HintError::LineTooLong {
                line,
                len: raw.len(),
                max: MAX_HINT_LINE_BYTES,
            });
        }
        let hints = std::str::from_utf8(hints).map_err(|_| HintError::NotUtf8 { line })?;
        for token in tokens(hints, line)? {
            reader.token(line, &token)?;
        }
    }
    Ok(reader.hints)
}

/// Splits on spaces and tabs; `"..."` quotes a value with spaces (`\"` and `\\` escape).
fn tokens(text: &str, line: usize) -> Result<Vec<String>, HintError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_token {
                    out.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            '"' => {
                in_token = true;
                loop {
                    match chars.next() {
                        None => {
                            return Err(HintError::Syntax {
                                line,
                                message:
                                    "a quote is not closed; write annotation.note=\"two words\""
                                        .into(),
                            });
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('"' | '\\')) => current.push(escaped),
                            _ => {
                                return Err(HintError::Syntax {
                                    line,
                                    message: "inside quotes only \\\" and \\\\ are escapes".into(),
                                });
                            }
                        },
                        Some(other) => current.push(other),
                    }
                }
            }
            other => {
                in_token = true;
                current.push(other);
            }
        }
    }
    if in_token {
        out.push(current);
    }
    Ok(out)
}

/// The inverse of [`tokens`] for one value: quoted when it would not survive as is.
pub(super) fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\t', '"', '\\']) {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Every key a script may use, for suggestions.
const KEYS: &[&str] = &[
    "cpu",
    "memory",
    "storage",
    "gpu",
    "image",
    "pull_policy",
    "node_selector",
    "toleration",
    "affinity",
    "priority_class",
    "service_account",
    "runtime_class",
    "env_from_secret",
    "env_from_configmap",
    "volume",
    "timeout",
    "retries",
    "label.NAME",
    "annotation.NAME",
];

/// Spellings people reach for, mostly from the pod spec.
const ALIASES: &[(&str, &str)] = &[
    ("mem", "memory"),
    ("ram", "memory"),
    ("cpus", "cpu"),
    ("gpus", "gpu"),
    ("cpu_limit", "cpu=REQUEST..LIMIT"),
    ("memory_limit", "memory=REQUEST..LIMIT"),
    ("cpu_request", "cpu=REQUEST..LIMIT"),
    ("memory_request", "memory=REQUEST..LIMIT"),
    ("ephemeral_storage", "storage"),
    ("ephemeral-storage", "storage"),
    ("disk", "storage"),
    ("nodeSelector", "node_selector"),
    ("tolerations", "toleration"),
    ("volumes", "volume"),
    ("imagePullPolicy", "pull_policy"),
    ("serviceAccount", "service_account"),
    ("serviceAccountName", "service_account"),
    ("priorityClassName", "priority_class"),
    ("runtimeClassName", "runtime_class"),
    ("label", "label.NAME"),
    ("labels", "label.NAME"),
    ("annotation", "annotation.NAME"),
    ("annotations", "annotation.NAME"),
    ("retry", "retries"),
    ("timeout_seconds", "timeout"),
];

fn suggestion(key: &str) -> String {
    if key == "gpu_resource" {
        return "; the GPU resource name is set by the worker's admin (resources.gpu_resource or a profile)".into();
    }
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == key) {
        return format!("; did you mean {to}?");
    }
    // Typos: the closest key within two edits.
    let closest = KEYS
        .iter()
        .map(|k| (edit_distance(key, k.trim_end_matches(".NAME")), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match closest {
        Some((_, k)) if key.len() <= 64 => format!("; did you mean {k}?"),
        _ => format!("; known keys: {}", KEYS.join(", ")),
    }
}

/// Levenshtein distance, for keys of at most 64 characters (longer ones get no suggestion).
fn edit_distance(a: &str, b: &str) -> usize {
    if a.len() > 64 {
        return usize::MAX;
    }
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The hint set being read, and where each key was first set (for duplicate messages).
#[derive(Default)]
struct Reader {
    hints: HintSet,
    seen: BTreeMap<String, usize>,
    count: usize,
}

fn bad(line: usize, key: &str, message: impl Into<String>) -> HintError {
    HintError::BadValue {
        line,
        key: key.to_owned(),
        message: message.into(),
    }
}

fn parsed<T: FromStr<Err = String>>(line: usize, key: &str, value: &str) -> Result<T, HintError> {
    value.parse().map_err(|e| bad(line, key, e))
}

fn checked(
    line: usize,
    key: &str,
    value: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, HintError> {
    check(value).map_err(|e| bad(line, key, e))?;
    Ok(value.to_owned())
}

fn count(line: usize, key: &str, value: &str, max: u32, example: &str) -> Result<u32, HintError> {
    match value.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        Ok(n) => Err(bad(line, key, format!("{n} is more than {max}"))),
        Err(_) => Err(bad(
            line,
            key,
            format!(
                "`{}` is not a whole number; write {example}",
                shorten(value)
            ),
        )),
    }
}

impl Reader {
    /// Records that `what` is set on `line`; a second time is an error.
    fn once(&mut self, line: usize, what: String) -> Result<(), HintError> {
        self.count += 1;
        if self.count > MAX_HINTS {
            return Err(HintError::TooManyHints {
                line,
                max: MAX_HINTS,
            });
        }
        if let Some(&first_line) = self.seen.get(&what) {
            return Err(HintError::Duplicate {
                line,
                key: shorten(&what),
                first_line,
            });
        }
        self.seen.insert(what, line);
        Ok(())
    }

    fn token(&mut self, line: usize, token: &str) -> Result<(), HintError> {
        let Some((key, value)) = token.split_once('=') else {
            return Err(HintError::Syntax {
                line,
                message: format!(
                    "`{}` is not key=value; write hints like cpu=2 memory=4Gi",
                    shorten(token)
                ),
            });
        };
        let known_shape =
            KEYS.contains(&key) || key.starts_with("label.") || key.starts_with("annotation.");
        if !known_shape || key.chars().any(char::is_control) {
            return Err(HintError::UnknownKey {
                line,
                key: shorten(key),
                hint: suggestion(key),
            });
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(HintError::ControlCharacter {
                line,
                key: key.to_owned(),
            });
        }
        let is_meta = key.starts_with("label.") || key.starts_with("annotation.");
        if value.is_empty() && !is_meta {
            return Err(bad(line, key, format!("empty value; {}", example(key))));
        }
        match key {
            "cpu" => {
                let v: RequestLimit<Millicores> = parsed(line, key, value)?;
                self.once(line, key.into())?;
                self.hints.cpu = Some(at(line, v));
            }
            "memory" => {
                let v: RequestLimit<Bytes> = parsed(line, key, value)?;
                self.once(line, key.into())?;
                self.hints.memory = Some(at(line, v));
            }
            "storage" => {
                let v = positive_quantity::<Bytes>(value).map_err(|e| bad(line, key, e))?;
                self.once(line, key.into())?;
                self.hints.storage = Some(at(line, v));
            }
            "gpu" => {
                let v = count(line, key, value, 64, "gpu=1")?;
                self.once(line, key.into())?;
                self.hints.gpu = Some(at(line, v));
            }
            "retries" => {
                let v = count(line, key, value, MAX_RETRIES, "retries=3")?;
                self.once(line, key.into())?;
                self.hints.retries = Some(at(line, v));
            }
            "image" => {
                let v = checked(line, key, value, values::check_image)?;
                self.once(line, key.into())?;
                self.hints.image = Some(at(line, v));
            }
            "pull_policy" => {
                let v: PullPolicy = parsed(line, key, value)?;
                self.once(line, key.into())?;
                self.hints.pull_policy = Some(at(line, v));
            }
            "priority_class" | "service_account" | "runtime_class" => {
                let v = checked(line, key, value, values::check_dns_subdomain)?;
                self.once(line, key.into())?;
                let slot = match key {
                    "priority_class" => &mut self.hints.priority_class,
                    "service_account" => &mut self.hints.service_account,
                    _ => &mut self.hints.runtime_class,
                };
                *slot = Some(at(line, v));
            }
            "timeout" => {
                let v: HumanDuration = value.parse().map_err(|e: String| bad(line, key, e))?;
                if v.0.is_zero() {
                    return Err(bad(line, key, "must be more than 0, e.g. timeout=30m"));
                }
                self.once(line, key.into())?;
                self.hints.timeout = Some(at(line, v));
            }
            "node_selector" => {
                for item in value.split(',') {
                    let Some((k, v)) = item.split_once(':') else {
                        return Err(bad(
                            line,
                            key,
                            format!("`{}` is not label:value; {}", shorten(item), example(key)),
                        ));
                    };
                    values::check_label_key(k).map_err(|e| bad(line, key, e))?;
                    values::check_label_value(v).map_err(|e| bad(line, key, e))?;
                    self.once(line, format!("node_selector.{k}"))?;
                    self.hints
                        .node_selector
                        .insert(k.to_owned(), at(line, v.to_owned()));
                }
            }
            "toleration" => {
                for item in value.split(',') {
                    let v: Toleration = parsed(line, key, item)?;
                    self.once(line, format!("toleration {v}"))?;
                    self.hints.tolerations.push(at(line, v));
                }
            }
            "affinity" => {
                for item in value.split(',') {
                    let v: AffinityPreset = parsed(line, key, item)?;
                    self.once(line, format!("affinity {v}"))?;
                    self.hints.affinity.push(at(line, v));
                }
            }
            "env_from_secret" | "env_from_configmap" => {
                for item in value.split(',') {
                    let v = checked(line, key, item, values::check_dns_subdomain)?;
                    self.once(line, format!("{key} {v}"))?;
                    let list = if key == "env_from_secret" {
                        &mut self.hints.env_from_secrets
                    } else {
                        &mut self.hints.env_from_configmaps
                    };
                    list.push(at(line, v));
                }
            }
            "volume" => {
                for item in value.split(',') {
                    let v: Volume = parsed(line, key, item)?;
                    self.once(line, format!("volume at {}", v.mount_path()))?;
                    self.hints.volumes.push(at(line, v));
                }
            }
            _ => {
                let (is_label, name) = match key.split_once('.') {
                    Some(("label", name)) => (true, name),
                    Some((_, name)) => (false, name),
                    None => return unreachable_key(line, key),
                };
                values::check_label_key(name).map_err(|e| bad(line, key, e))?;
                let check = if is_label {
                    values::check_label_value
                } else {
                    values::check_annotation_value
                };
                check(value).map_err(|e| bad(line, key, e))?;
                self.once(line, key.to_owned())?;
                let map = if is_label {
                    &mut self.hints.labels
                } else {
                    &mut self.hints.annotations
                };
                map.insert(name.to_owned(), at(line, value.to_owned()));
            }
        }
        Ok(())
    }
}

/// A value read from the annotation on `line`.
fn at<T>(line: usize, value: T) -> Sourced<T> {
    Sourced::new(value, Source::Annotation { line })
}

/// `token` dispatches only known keys; this keeps the impossible case an error, not a panic.
fn unreachable_key<T>(line: usize, key: &str) -> Result<T, HintError> {
    Err(HintError::UnknownKey {
        line,
        key: shorten(key),
        hint: String::new(),
    })
}

/// An example for each key, for messages.
fn example(key: &str) -> &'static str {
    match key {
        "cpu" => "e.g. cpu=2 or cpu=500m..2",
        "memory" => "e.g. memory=4Gi or memory=2Gi..4Gi",
        "storage" => "e.g. storage=20Gi",
        "gpu" => "e.g. gpu=1",
        "image" => "e.g. image=ghcr.io/acme/etl:1.4",
        "pull_policy" => "e.g. pull_policy=IfNotPresent",
        "node_selector" => "e.g. node_selector=pool:gpu,topology.kubernetes.io/zone:eu-west-1a",
        "toleration" => "e.g. toleration=dedicated=gpu:NoSchedule",
        "affinity" => "e.g. affinity=zone-spread",
        "priority_class" => "e.g. priority_class=batch-low",
        "service_account" => "e.g. service_account=etl-reader",
        "runtime_class" => "e.g. runtime_class=gvisor",
        "env_from_secret" => "e.g. env_from_secret=etl-credentials",
        "env_from_configmap" => "e.g. env_from_configmap=etl-settings",
        "volume" => "e.g. volume=pvc:datasets:/mnt/data:ro",
        "timeout" => "e.g. timeout=2h",
        "retries" => "e.g. retries=3",
        _ => "see docs/hints.md",
    }
}
