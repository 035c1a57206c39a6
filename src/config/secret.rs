//! Secrets: read from the environment or a file, handed only to the client that needs them, and
//! never shown by `Debug`, `Display` or serialization.

use std::fmt;

use serde::{Serialize, Serializer};

use super::{Env, Error, Result};

/// A secret value: never shown by `Debug`, `Display` or serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is handed to a client.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The database URL with its password replaced, for messages.
#[must_use]
pub fn redact_url(url: &str) -> String {
    // scheme://user:password@host/db?params
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters may carry a password too (`?password=`): drop them.
    let tail = tail.split('?').next().unwrap_or_default();
    format!("{scheme}://{authority}{tail}")
}

/// Reads `NAME`, or the file named by `NAME_FILE` (trailing newline trimmed).
pub(super) fn from_env(env: &dyn Env, name: &str) -> Result<Option<Secret>> {
    let file_var = format!("{name}_FILE");
    match (env.var(name), env.var(&file_var)) {
        (Some(_), Some(_)) => Err(Error::invalid(
            name,
            format!("both {name} and {file_var} are set; keep one"),
        )),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone().into(),
                source,
            })?;
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                return Err(Error::invalid(&file_var, format!("{path} is empty")));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}
