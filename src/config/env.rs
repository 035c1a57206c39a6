//! Where configuration comes from besides the file: the FlexCore wrapper around it, and the
//! environment with its `FLEXT__SECTION__KEY` overrides.

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

use super::{Error, Result};

/// Where configuration comes from besides the file: the process environment, or a fixed map in
/// tests.
pub trait Env {
    /// The value of a variable.
    fn var(&self, name: &str) -> Option<String>;
    /// All variables whose name starts with `prefix`, sorted by name.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Prefix of the variables that override settings: `FLEXT__WORKER__CONCURRENCY=8`.
pub const OVERRIDE_PREFIX: &str = "FLEXT__";

/// Accepts either the FlexCore wrapper (`runtime: {type: kubernetes, config: {...}}`) or the bare
/// `config` mapping. Returns the mapping and its dotted path for messages.
pub(super) fn unwrap_runtime(document: Yaml) -> Result<(Yaml, String)> {
    let Yaml::Mapping(mut top) = document else {
        return Err(Error::Parse {
            field: "(document)".into(),
            message: "the config must be a YAML mapping".into(),
        });
    };
    let Some(runtime) = top.remove("runtime") else {
        return Ok((Yaml::Mapping(top), "runtime.config".into()));
    };
    if let Some((key, _)) = top.into_iter().next() {
        return Err(Error::invalid(
            &yaml_key(&key),
            "unknown top-level key; everything goes under `runtime:`",
        ));
    }
    let Yaml::Mapping(mut runtime) = runtime else {
        return Err(Error::invalid(
            "runtime",
            "must be a mapping with `type` and `config`",
        ));
    };
    match runtime.remove("type") {
        Some(Yaml::String(t)) if t == "kubernetes" => {}
        Some(other) => {
            return Err(Error::invalid(
                "runtime.type",
                format!("is {other:?}; this runtime is `kubernetes`"),
            ));
        }
        None => {
            return Err(Error::invalid(
                "runtime.type",
                "missing; set `type: kubernetes`",
            ));
        }
    }
    let config = runtime
        .remove("config")
        .unwrap_or(Yaml::Mapping(serde_yaml_ng::Mapping::new()));
    if let Some((key, _)) = runtime.into_iter().next() {
        return Err(Error::invalid(
            &format!("runtime.{}", yaml_key(&key)),
            "unknown key; expected `type` and `config`",
        ));
    }
    if matches!(config, Yaml::Null) {
        return Ok((
            Yaml::Mapping(serde_yaml_ng::Mapping::new()),
            "runtime.config".into(),
        ));
    }
    Ok((config, "runtime.config".into()))
}

fn yaml_key(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Applies `FLEXT__WORKER__CONCURRENCY=8` as `worker.concurrency: 8`.
pub(super) fn apply_override(tree: &mut Yaml, name: &str, value: &str) -> Result<()> {
    let path: Vec<String> = name[OVERRIDE_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(Error::invalid(
            name,
            "malformed override: use FLEXT__SECTION__KEY, e.g. FLEXT__WORKER__CONCURRENCY=8",
        ));
    }
    let parsed: Yaml =
        serde_yaml_ng::from_str(value).unwrap_or_else(|_| Yaml::String(value.to_owned()));
    let mut node = tree;
    for (i, key) in path.iter().enumerate() {
        let Yaml::Mapping(map) = node else {
            return Err(Error::invalid(
                name,
                format!("`{}` is not a section", path[..i].join(".")),
            ));
        };
        let key = Yaml::String(key.clone());
        if i + 1 == path.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Yaml::Mapping(serde_yaml_ng::Mapping::new()));
    }
    Ok(())
}
