//! The result trailer: how the in-pod runner hands a job's result to the worker through the pod
//! log, and how the worker finds it again.
//!
//! After the user's program exits, the runner prints:
//! ```text
//! --flext-result <nonce> begin status=ok bytes=<n> memory_peak_kib=<k> duration_ms=<d> [preprocessed=1]
//! --flext-result <nonce> data <base64 chunk>        (as many lines as needed)
//! --flext-result <nonce> end
//! ```
//! While the program runs, the runner also prints, at most once a second and only when the figure
//! grew, `--flext-result <nonce> progress memory_peak_kib=<k>`: the live peak memory the worker's
//! heartbeat reports. Progress lines are never user output and never part of the result.
//!
//! With `preprocessed=1` (the script's `preprocessor` ran first), the payload is
//! `{"result": <result>, "args": <the preprocessor's result, main's args>}`.
//!
//! The nonce is per job and known only to the worker and the runner (it is not in the user's
//! environment), so output of the user's program cannot forge a result. Base64 chunks keep every
//! line short and free of bytes a log pipeline could mangle; the payload is compact JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// Base64 characters per data line.
const CHUNK: usize = 8192;

/// Whether the user's program succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The payload is the result.
    Ok,
    /// The payload is an error object `{name, message, stack}`.
    Error,
}

/// A decoded trailer.
#[derive(Debug, Clone, PartialEq)]
pub struct Trailer {
    /// Success or error.
    pub status: Status,
    /// The result or the error object.
    pub payload: Value,
    /// Peak memory of the user's program, KiB.
    pub memory_peak_kib: Option<i64>,
    /// Run time of the user's program.
    pub duration_ms: Option<u64>,
    /// The args `main` ran with when the script's `preprocessor` made them.
    pub preprocessed_args: Option<Value>,
}

/// Why no result could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No `begin` line for this nonce.
    #[error("the job's output has no result trailer (the runner did not finish)")]
    Missing,
    /// `begin` without `end`.
    #[error("the result trailer is cut short (no end line)")]
    Truncated,
    /// The payload is larger than allowed.
    #[error(
        "the result is {size} bytes, more than the limit of {limit} bytes (executor.max_result_bytes)"
    )]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Bad base64, size mismatch or bad JSON.
    #[error("the result trailer is malformed: {0}")]
    Malformed(String),
}

fn prefix(nonce: &str) -> String {
    format!("--flext-result {nonce} ")
}

/// Renders the trailer lines (each ending in `\n`).
#[must_use]
pub fn encode(
    nonce: &str,
    status: Status,
    payload: &Value,
    preprocessed_args: Option<&Value>,
    memory_peak_kib: Option<i64>,
    duration_ms: u64,
) -> String {
    let json = match preprocessed_args {
        Some(args) => serde_json::json!({"result": payload, "args": args}).to_string(),
        None => payload.to_string(),
    };
    let encoded = STANDARD.encode(json.as_bytes());
    let p = prefix(nonce);
    let mut out =
        String::with_capacity(encoded.len() + encoded.len() / CHUNK * (p.len() + 6) + 200);
    let status = match status {
        Status::Ok => "ok",
        Status::Error => "error",
    };
    let _ = write!(
        out,
        "{p}begin status={status} bytes={} duration_ms={duration_ms}",
        json.len()
    );
    if let Some(peak) = memory_peak_kib {
        let _ = write!(out, " memory_peak_kib={peak}");
    }
    if preprocessed_args.is_some() {
        out.push_str(" preprocessed=1");
    }
    out.push('\n');
    for chunk in encoded.as_bytes().chunks(CHUNK) {
        out.push_str(&p);
        out.push_str("data ");
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&p);
    out.push_str("end\n");
    out
}

/// Renders a progress line (ending in `\n`).
#[must_use]
pub fn encode_progress(nonce: &str, memory_peak_kib: u64) -> String {
    format!(
        "{}progress memory_peak_kib={memory_peak_kib}\n",
        prefix(nonce)
    )
}

/// What one log line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The user's output.
    Output,
    /// Part of the result trailer.
    Trailer,
    /// A progress line: the program's peak memory so far, KiB.
    Progress {
        /// Peak resident memory of the program's process tree, KiB.
        memory_peak_kib: u64,
    },
}

/// What a `begin` line announced.
#[derive(Debug, Clone, Copy)]
struct Begin {
    status: Status,
    bytes: u64,
    peak: Option<i64>,
    duration: Option<u64>,
    preprocessed: bool,
}

/// Incrementally finds the trailer in log lines (timestamps already stripped).
#[derive(Debug)]
pub struct Decoder {
    prefix: String,
    limit: u64,
    begin: Option<Begin>,
    data: String,
    done: bool,
}

impl Decoder {
    /// A decoder for one job's nonce and result size limit.
    #[must_use]
    pub fn new(nonce: &str, limit: u64) -> Self {
        Self {
            prefix: prefix(nonce),
            limit,
            begin: None,
            data: String::new(),
            done: false,
        }
    }

    /// Feeds one line; says whether it was output, trailer or progress. Any line with the nonce
    /// is ours, never user output, even one this version does not understand.
    pub fn push(&mut self, line: &str) -> Result<Line, Error> {
        let Some(rest) = line.strip_prefix(&self.prefix) else {
            return Ok(Line::Output);
        };
        let rest = rest.trim_end_matches(['\r', '\n']);
        if let Some(kib) = rest
            .strip_prefix("progress memory_peak_kib=")
            .and_then(|k| k.parse().ok())
        {
            return Ok(Line::Progress {
                memory_peak_kib: kib,
            });
        }
        if let Some(fields) = rest.strip_prefix("begin ") {
            let mut status = None;
            let (mut bytes, mut peak, mut duration) = (None, None, None);
            let mut preprocessed = false;
            for field in fields.split_whitespace() {
                match field.split_once('=') {
                    Some(("status", "ok")) => status = Some(Status::Ok),
                    Some(("status", "error")) => status = Some(Status::Error),
                    Some(("bytes", v)) => bytes = v.parse().ok(),
                    Some(("memory_peak_kib", v)) => peak = v.parse().ok(),
                    Some(("duration_ms", v)) => duration = v.parse().ok(),
                    Some(("preprocessed", "1")) => preprocessed = true,
                    _ => {}
                }
            }
            let (Some(status), Some(bytes)) = (status, bytes) else {
                return Err(Error::Malformed(format!("bad begin line `{fields}`")));
            };
            if bytes > self.limit {
                return Err(Error::TooLarge {
                    size: bytes,
                    limit: self.limit,
                });
            }
            // A second begin (a restarted runner) replaces the first.
            self.begin = Some(Begin {
                status,
                bytes,
                peak,
                duration,
                preprocessed,
            });
            self.data.clear();
            self.done = false;
        } else if let Some(chunk) = rest.strip_prefix("data ") {
            if let Some(Begin { bytes, .. }) = self.begin {
                if (self.data.len() as u64) > bytes.saturating_mul(4) / 3 + 8 {
                    return Err(Error::Malformed("more data than announced".into()));
                }
                self.data.push_str(chunk.trim());
            }
        } else if rest == "end" {
            self.done = self.begin.is_some();
        }
        Ok(Line::Trailer)
    }

    /// Whether a whole trailer (begin to end) has been read.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.begin.is_some() && self.done
    }

    /// The trailer, once complete.
    pub fn finish(&self) -> Result<Trailer, Error> {
        let Some(Begin {
            status,
            bytes,
            peak: memory_peak_kib,
            duration: duration_ms,
            preprocessed,
        }) = self.begin
        else {
            return Err(Error::Missing);
        };
        if !self.done {
            return Err(Error::Truncated);
        }
        let raw = STANDARD
            .decode(self.data.as_bytes())
            .map_err(|e| Error::Malformed(format!("bad base64: {e}")))?;
        if raw.len() as u64 != bytes {
            return Err(Error::Malformed(format!(
                "{} bytes announced, {} received",
                bytes,
                raw.len()
            )));
        }
        let mut payload: Value =
            serde_json::from_slice(&raw).map_err(|e| Error::Malformed(format!("not JSON: {e}")))?;
        let preprocessed_args = if preprocessed {
            let args = payload.get_mut("args").map(Value::take);
            payload = payload.get_mut("result").map_or(Value::Null, Value::take);
            args
        } else {
            None
        };
        Ok(Trailer {
            status,
            payload,
            memory_peak_kib,
            duration_ms,
            preprocessed_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn decode(text: &str, nonce: &str, limit: u64) -> Result<Trailer, Error> {
        let mut decoder = Decoder::new(nonce, limit);
        for line in text.lines() {
            decoder.push(line)?;
        }
        decoder.finish()
    }

    #[test]
    fn round_trips_a_result_among_user_output() {
        let payload = json!({"rows": [1, 2, 3], "text": "multi\nline ünïcode"});
        let text = format!(
            "hello\n{}bye\n",
            encode("n0nce", Status::Ok, &payload, None, Some(2048), 1500)
        );
        let trailer = decode(&text, "n0nce", 1 << 20).unwrap();
        assert_eq!(
            trailer,
            Trailer {
                status: Status::Ok,
                payload,
                memory_peak_kib: Some(2048),
                duration_ms: Some(1500),
                preprocessed_args: None
            }
        );
    }

    #[test]
    fn a_preprocessors_args_travel_beside_the_result() {
        let text = encode(
            "n",
            Status::Ok,
            &json!(41),
            Some(&json!({"x": 40})),
            None,
            1,
        );
        assert!(
            text.lines().next().unwrap().ends_with(" preprocessed=1"),
            "{text}"
        );
        let trailer = decode(&text, "n", 1 << 20).unwrap();
        assert_eq!(trailer.payload, json!(41));
        assert_eq!(trailer.preprocessed_args, Some(json!({"x": 40})));
        let plain = decode(
            &encode("n", Status::Ok, &json!(41), None, None, 1),
            "n",
            1 << 20,
        );
        assert_eq!(plain.unwrap().preprocessed_args, None);
    }

    #[test]
    fn a_forged_trailer_with_another_nonce_is_ignored() {
        let forged = encode("guess", Status::Ok, &json!("pwned"), None, None, 1);
        let real = encode(
            "secret",
            Status::Error,
            &json!({"name": "E", "message": "m"}),
            None,
            None,
            1,
        );
        let trailer = decode(&format!("{forged}{real}"), "secret", 1 << 20).unwrap();
        assert_eq!(trailer.status, Status::Error);
        assert_eq!(decode(&forged, "secret", 1 << 20), Err(Error::Missing));
    }

    #[test]
    fn large_results_span_many_lines_and_the_limit_is_named() {
        let payload = json!("x".repeat(100_000));
        let text = encode("n", Status::Ok, &payload, None, None, 1);
        assert!(text.lines().count() > 10);
        assert!(text.lines().all(|l| l.len() < CHUNK + 64));
        assert_eq!(decode(&text, "n", 1 << 20).unwrap().payload, payload);
        let err = decode(&text, "n", 1000).unwrap_err();
        assert!(err.to_string().contains("limit of 1000 bytes"), "{err}");
    }

    #[test]
    fn progress_lines_carry_the_peak_and_do_not_disturb_the_result() {
        let mut decoder = Decoder::new("n", 1 << 20);
        assert_eq!(
            decoder.push(encode_progress("n", 61_440).trim_end()),
            Ok(Line::Progress {
                memory_peak_kib: 61_440
            })
        );
        assert_eq!(
            decoder.push(encode_progress("other", 1).trim_end()),
            Ok(Line::Output)
        );
        for line in encode("n", Status::Ok, &json!([1]), None, None, 1).lines() {
            assert_eq!(decoder.push(line), Ok(Line::Trailer));
        }
        assert_eq!(decoder.finish().unwrap().payload, json!([1]));
    }

    #[test]
    fn a_cut_trailer_is_reported_as_truncated() {
        let text = encode("n", Status::Ok, &json!([1]), None, None, 1);
        let cut = text.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(decode(&cut, "n", 1 << 20), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_lines_never_panics(lines in proptest::collection::vec(".*", 0..20)) {
            let mut decoder = Decoder::new("n", 1 << 20);
            for line in &lines {
                let _ = decoder.push(&format!("--flext-result n {line}"));
            }
            let _ = decoder.finish();
        }

        #[test]
        fn any_json_string_round_trips(s in ".*") {
            let payload = json!(s);
            let text = encode("n", Status::Ok, &payload, None, None, 0);
            prop_assert_eq!(decode(&text, "n", 1 << 30).unwrap().payload, payload);
        }
    }
}
