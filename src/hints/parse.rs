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

use super::keys::{KEYS, example, suggestion};
use super::names::{
    check_annotation_value, check_cluster_name, check_dns_subdomain, check_image, check_label_key,
    check_label_value, check_local_queue, shorten,
};
use super::values::{AffinityPreset, PullPolicy, RequestLimit, positive_quantity};
use super::{
    Bytes, HintError, HintErrors, HintSet, MAX_RETRIES, Millicores, Source, Sourced, Toleration,
    Volume,
};
use crate::units::HumanDuration;

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
/// Every problem is reported, each with its line, not only the first.
pub fn parse_annotations(language: &str, code: &[u8]) -> Result<HintSet, HintErrors> {
    let (hints, problems) = read_annotations(language, code);
    HintErrors::check(problems)?;
    Ok(hints)
}

/// The hints that parse, and the problems with the others, in line order. Reading goes on past a
/// bad hint (a compiler's habit: someone fixing a script wants every problem at once), but stops
/// at [`MAX_HINTS`] hints or [`MAX_PROBLEMS`] problems, so hostile input stays bounded.
pub(super) fn read_annotations(language: &str, code: &[u8]) -> (HintSet, Vec<HintError>) {
    let Some(marker) = comment_marker(language) else {
        let unknown = HintError::UnknownLanguage {
            language: shorten(language),
        };
        return (HintSet::default(), vec![unknown]);
    };
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
        if let Err(problem) = reader.line(line, raw.len(), hints) {
            reader.problem(line, problem);
        }
        if reader.stopped {
            break;
        }
    }
    (reader.hints, reader.problems)
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

/// Most problems reported for one script; past it reading stops.
pub const MAX_PROBLEMS: usize = 32;

/// The hint set being read, where each key was first set (for duplicate messages), and the
/// problems found so far.
#[derive(Default)]
struct Reader {
    hints: HintSet,
    seen: BTreeMap<String, usize>,
    count: usize,
    problems: Vec<HintError>,
    /// Set at more than [`MAX_HINTS`] hints or [`MAX_PROBLEMS`] problems: nothing more is read.
    stopped: bool,
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
    /// Records a problem and reads on, unless there are too many hints or problems.
    fn problem(&mut self, line: usize, problem: HintError) {
        if self.stopped {
            return;
        }
        if matches!(problem, HintError::TooManyHints { .. }) {
            self.stopped = true;
        } else if self.problems.len() == MAX_PROBLEMS {
            self.stopped = true;
            self.problems.push(HintError::TooManyProblems {
                line,
                max: MAX_PROBLEMS,
            });
            return;
        }
        self.problems.push(problem);
    }

    /// One `k8s:` line, `hints` being what follows the `k8s:`. A line that cannot be split into
    /// tokens is one problem; otherwise each bad token is a problem of its own.
    fn line(&mut self, line: usize, len: usize, hints: &[u8]) -> Result<(), HintError> {
        if len > MAX_HINT_LINE_BYTES {
            return Err(HintError::LineTooLong {
                line,
                len,
                max: MAX_HINT_LINE_BYTES,
            });
        }
        let hints = std::str::from_utf8(hints).map_err(|_| HintError::NotUtf8 { line })?;
        for token in tokens(hints, line)? {
            if let Err(problem) = self.token(line, &token) {
                self.problem(line, problem);
            }
            if self.stopped {
                break;
            }
        }
        Ok(())
    }

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

    /// One `key=value`: the key must be known and the value free of control characters, then
    /// the key's kind reads the value.
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
        let is_meta = key.starts_with("label.") || key.starts_with("annotation.");
        if !(KEYS.contains(&key) || is_meta) || key.chars().any(char::is_control) {
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
        if value.is_empty() && !is_meta {
            return Err(bad(line, key, format!("empty value; {}", example(key))));
        }
        match key {
            "node_selector" | "toleration" | "affinity" | "env_from_secret"
            | "env_from_configmap" | "volume" => {
                // Each item of a list is a hint of its own, with its own problem.
                for item in value.split(',') {
                    if let Err(problem) = self.item(line, key, item) {
                        self.problem(line, problem);
                    }
                    if self.stopped {
                        break;
                    }
                }
                Ok(())
            }
            _ if is_meta => self.meta(line, key, value),
            _ => self.scalar(line, key, value),
        }
    }

    /// A key given once, whose value replaces a lower source's.
    fn scalar(&mut self, line: usize, key: &str, value: &str) -> Result<(), HintError> {
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
                let v = checked(line, key, value, check_image)?;
                self.once(line, key.into())?;
                self.hints.image = Some(at(line, v));
            }
            "pull_policy" => {
                let v: PullPolicy = parsed(line, key, value)?;
                self.once(line, key.into())?;
                self.hints.pull_policy = Some(at(line, v));
            }
            "priority_class" | "service_account" | "runtime_class" => {
                let v = checked(line, key, value, check_dns_subdomain)?;
                self.once(line, key.into())?;
                let slot = match key {
                    "priority_class" => &mut self.hints.priority_class,
                    "service_account" => &mut self.hints.service_account,
                    _ => &mut self.hints.runtime_class,
                };
                *slot = Some(at(line, v));
            }
            "local_queue" => {
                let v = checked(line, key, value, check_local_queue)?;
                self.once(line, key.into())?;
                self.hints.local_queue = Some(at(line, v));
            }
            "cluster" => {
                let v = checked(line, key, value, check_cluster_name)?;
                self.once(line, key.into())?;
                self.hints.cluster = Some(at(line, v));
            }
            "timeout" => {
                let v: HumanDuration = value.parse().map_err(|e: String| bad(line, key, e))?;
                if v.0.is_zero() {
                    return Err(bad(line, key, "must be more than 0, e.g. timeout=30m"));
                }
                self.once(line, key.into())?;
                self.hints.timeout = Some(at(line, v));
            }
            _ => return unreachable_key(line, key),
        }
        Ok(())
    }

    /// One item of a list key (`toleration=a,b`): lists add up across sources.
    fn item(&mut self, line: usize, key: &str, item: &str) -> Result<(), HintError> {
        match key {
            "node_selector" => {
                let Some((k, v)) = item.split_once(':') else {
                    return Err(bad(
                        line,
                        key,
                        format!("`{}` is not label:value; {}", shorten(item), example(key)),
                    ));
                };
                check_label_key(k).map_err(|e| bad(line, key, e))?;
                check_label_value(v).map_err(|e| bad(line, key, e))?;
                self.once(line, format!("node_selector.{k}"))?;
                self.hints
                    .node_selector
                    .insert(k.to_owned(), at(line, v.to_owned()));
            }
            "toleration" => {
                let v: Toleration = parsed(line, key, item)?;
                self.once(line, format!("toleration {v}"))?;
                self.hints.tolerations.push(at(line, v));
            }
            "affinity" => {
                let v: AffinityPreset = parsed(line, key, item)?;
                self.once(line, format!("affinity {v}"))?;
                self.hints.affinity.push(at(line, v));
            }
            "env_from_secret" | "env_from_configmap" => {
                let v = checked(line, key, item, check_dns_subdomain)?;
                self.once(line, format!("{key} {v}"))?;
                let list = if key == "env_from_secret" {
                    &mut self.hints.env_from_secrets
                } else {
                    &mut self.hints.env_from_configmaps
                };
                list.push(at(line, v));
            }
            "volume" => {
                let v: Volume = parsed(line, key, item)?;
                self.once(line, format!("volume at {}", v.mount_path()))?;
                self.hints.volumes.push(at(line, v));
            }
            _ => return unreachable_key(line, key),
        }
        Ok(())
    }

    /// `label.NAME=value` or `annotation.NAME=value`: maps merge key by key across sources.
    fn meta(&mut self, line: usize, key: &str, value: &str) -> Result<(), HintError> {
        let (is_label, name) = match key.split_once('.') {
            Some(("label", name)) => (true, name),
            Some((_, name)) => (false, name),
            None => return unreachable_key(line, key),
        };
        check_label_key(name).map_err(|e| bad(line, key, e))?;
        let check = if is_label {
            check_label_value
        } else {
            check_annotation_value
        };
        check(value).map_err(|e| bad(line, key, e))?;
        self.once(line, key.to_owned())?;
        let map = if is_label {
            &mut self.hints.labels
        } else {
            &mut self.hints.annotations
        };
        map.insert(name.to_owned(), at(line, value.to_owned()));
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
