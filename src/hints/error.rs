//! Why a job's hints cannot be used: each problem, and all of a job's problems together.

use std::fmt;

use super::limits::Rejection;
use crate::domain::{FailureCategory, JobFailure};

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
    /// A hint line is longer than [`MAX_HINT_LINE_BYTES`](super::MAX_HINT_LINE_BYTES).
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
    /// More than [`MAX_HINTS`](super::MAX_HINTS) hints in one script.
    #[error("line {line}: more than {max} hints in one script")]
    TooManyHints {
        /// The line where the count was exceeded.
        line: usize,
        /// The maximum.
        max: usize,
    },
    /// More than [`MAX_PROBLEMS`](super::MAX_PROBLEMS) problems: reading stops, so that a hostile
    /// script cannot make the report as long as itself.
    #[error("line {line}: stopped after {max} problems; fix these first")]
    TooManyProblems {
        /// The line where reading stopped.
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
}

/// Every problem with a job's hints, in the order found: the script's lines first, then what the
/// limits reject. Never empty. `Display` puts one problem on each line, as a compiler lists its
/// errors, so that whoever fixes the script sees them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintErrors(Vec<HintError>);

impl HintErrors {
    /// `Ok` when there is no problem, else the problems.
    pub fn check(problems: Vec<HintError>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self(problems))
        }
    }

    /// The problems, in the order found.
    #[must_use]
    pub fn as_slice(&self) -> &[HintError] {
        &self.0
    }

    /// A stable label for metrics and the Windmill error name: that of the problem to fix first
    /// (the worker config, then the script's own mistakes, then what the limits reject).
    #[must_use]
    pub fn name(&self) -> &'static str {
        ["InvalidWorkerConfig", "InvalidHint", "HintRejected"]
            .into_iter()
            .find(|name| self.0.iter().any(|e| e.name() == *name))
            .unwrap_or("InvalidHint")
    }

    /// The job failure Windmill shows, listing every problem. Hints are fixed by editing the
    /// script (or the config), never by retrying, hence `config_error`.
    #[must_use]
    pub fn to_job_failure(&self) -> JobFailure {
        JobFailure::new(FailureCategory::ConfigError, self.name(), self.to_string())
    }
}

impl From<HintError> for HintErrors {
    fn from(problem: HintError) -> Self {
        Self(vec![problem])
    }
}

impl fmt::Display for HintErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HintErrors {}
