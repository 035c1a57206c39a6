//! Configuration: YAML (a superset of the FlexCore runtime schema), environment overrides, and
//! secrets that are read from the environment or files and never printed.
//!
//! Precedence, lowest to highest: built-in defaults → the YAML file → `FLEXT__SECTION__KEY`
//! environment variables (a path below `runtime.config`, each value parsed as YAML) → the secret
//! variables `FLEXT_DATABASE_URL`, `FLEXT_WINDMILL_URL`, `FLEXT_WINDMILL_TOKEN` (or their
//! `*_FILE` forms).
//!
//! - `settings`: the sections of `runtime.config`, their defaults and their own checks.
//! - `env`: the FlexCore wrapper, the environment and its overrides.
//! - `secret`: secrets, and URLs with their password hidden.
//!
//! The hint-related sections (`profiles`, `limits`, `resources`) are `hints` types, checked by
//! `hints` itself; durations and sizes are `units`.

mod env;
mod secret;
mod settings;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml_ng::Value as Yaml;

pub use crate::hints::Resources as ResourceSettings;
pub use crate::units::{ByteSize, HumanDuration};
pub use env::{Env, OVERRIDE_PREFIX, ProcessEnv};
pub use secret::{Secret, redact_url};
pub use settings::{
    ClusterSettings, DatabaseSettings, ExecutorKind, ExecutorSettings, HandoverSettings,
    JobTemplateSettings, LogFormat, LogSettings, Settings, TelemetrySettings, WarmPoolSettings,
    WindmillSettings, WorkerSettings,
};

/// A result whose error is a configuration [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    // The cause is a `#[source]`, shown by whoever prints the chain: not in this message too.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a field has the wrong shape.
    #[error("invalid config at `{field}`: {message}")]
    Parse {
        /// Dotted path of the field (`runtime.config.worker.concurrency`).
        field: String,
        /// What the parser said.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("invalid config at `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Why, and what to do.
        message: String,
    },
    /// A required setting is missing.
    #[error("missing setting: {0}")]
    Missing(String),
}

impl Error {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The whole configuration, as used at run time.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Everything under `runtime.config` in the file.
    pub settings: Settings,
    /// `FLEXT_DATABASE_URL`: Windmill's Postgres.
    pub database_url: Option<Secret>,
    /// `FLEXT_WINDMILL_URL`: Windmill's HTTP API, for job tokens and `$var:`/`$res:` args.
    pub windmill_url: Option<String>,
    /// `FLEXT_WINDMILL_TOKEN`: a superadmin token for Windmill's API.
    pub windmill_token: Option<Secret>,
}

impl Config {
    /// Loads a file (or nothing: defaults) and applies the environment.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_yaml(&text, env)
    }

    /// Parses YAML text and applies the environment.
    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Self> {
        let document: Yaml = if text.trim().is_empty() {
            Yaml::Mapping(serde_yaml_ng::Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| Error::Parse {
                field: "(document)".into(),
                message: e.to_string(),
            })?
        };
        let (mut tree, prefix) = env::unwrap_runtime(document)?;
        for (name, value) in env.vars_with_prefix(OVERRIDE_PREFIX) {
            env::apply_override(&mut tree, &name, &value)?;
        }
        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                prefix.clone()
            } else {
                format!("{prefix}.{path}")
            };
            Error::Parse {
                field,
                message: e.into_inner().to_string(),
            }
        })?;
        let config = Self {
            settings,
            database_url: secret::from_env(env, "FLEXT_DATABASE_URL")?,
            windmill_url: env.var("FLEXT_WINDMILL_URL"),
            windmill_token: secret::from_env(env, "FLEXT_WINDMILL_TOKEN")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense together: each section's own checks, then
    /// the hint settings (defaults, profiles, limits), then the database URL's scheme.
    pub fn validate(&self) -> Result<()> {
        let s = &self.settings;
        s.windmill.validate()?;
        s.worker.validate()?;
        s.logs.validate()?;
        s.validate_clusters()?;
        s.validate_warm_pools()?;
        s.hints()
            .validate()
            .map_err(|p| Error::invalid(&format!("runtime.config.{}", p.field), p.message))?;
        let mut names = std::collections::BTreeSet::new();
        for (i, plugin) in s.plugins.iter().enumerate() {
            let at = format!("runtime.config.plugins[{i}]");
            plugin
                .validate(&at)
                .map_err(|(field, why)| Error::invalid(&field, why))?;
            if !names.insert(plugin.name.as_str()) {
                return Err(Error::invalid(
                    &format!("{at}.name"),
                    format!(
                        "`{}` names two plugins: give each its own name",
                        plugin.name
                    ),
                ));
            }
        }
        if s.database.max_connections < 2 {
            return Err(Error::invalid(
                "runtime.config.database.max_connections",
                "must be at least 2 (claims and heartbeats run side by side)",
            ));
        }
        if let Some(url) = &self.windmill_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::invalid(
                "FLEXT_WINDMILL_URL",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        Ok(())
    }

    /// The database URL, or an error that says how to give one.
    pub fn require_database_url(&self) -> Result<&Secret> {
        self.database_url.as_ref().ok_or_else(|| {
            Error::Missing("FLEXT_DATABASE_URL (or FLEXT_DATABASE_URL_FILE): the URL of Windmill's Postgres, e.g. postgres://windmill@db:5432/windmill".into())
        })
    }

    /// This worker's name in Windmill.
    #[must_use]
    pub fn worker_name(&self) -> String {
        self.settings
            .worker
            .name
            .clone()
            .unwrap_or_else(|| format!("wk-{}-{}", self.settings.windmill.worker_group, hostname()))
    }

    /// The effective settings as YAML, secrets redacted: what `check` prints.
    #[must_use]
    pub fn to_redacted_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            runtime: Runtime<'a>,
            secrets: Secrets,
        }
        #[derive(Serialize)]
        struct Runtime<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            config: &'a Settings,
        }
        #[derive(Serialize)]
        struct Secrets {
            database_url: Option<String>,
            windmill_url: Option<String>,
            windmill_token: Option<&'static str>,
        }
        let shown = Shown {
            runtime: Runtime {
                kind: "kubernetes",
                config: &self.settings,
            },
            secrets: Secrets {
                database_url: self.database_url.as_ref().map(|u| redact_url(u.expose())),
                windmill_url: self.windmill_url.clone(),
                windmill_token: self.windmill_token.as_ref().map(|_| "<redacted>"),
            },
        };
        serde_yaml_ng::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// The host name, for the default worker name.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;
