//! The effective settings of one job's pod, built layer by layer (defaults, profile,
//! annotations, Windmill's fields), and the `hints` table that shows them with their sources.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::names::shorten;
use super::quantity::{Bytes, Millicores};
use super::settings::HintSettings;
use super::values::positive_quantity;
use super::{
    AffinityPreset, HintError, HintSet, PullPolicy, RequestLimit, Source, Sourced, Toleration,
    Volume,
};
use crate::units::HumanDuration;

/// Windmill's own per-job fields that bear on the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindmillFields {
    /// The script's timeout (`v2_job.timeout`), if set.
    pub timeout: Option<Duration>,
    /// Windmill's priority (used for claim order; reported here for visibility).
    pub priority: Option<i16>,
}

/// The effective settings of one job's pod: the executor's input.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    /// CPU request and limit.
    pub cpu: Sourced<RequestLimit<Millicores>>,
    /// Memory request and limit.
    pub memory: Sourced<RequestLimit<Bytes>>,
    /// Ephemeral storage, request = limit.
    pub storage: Sourced<Bytes>,
    /// GPU count (0: none); requested and limited as `gpu_resource`.
    pub gpu: Sourced<u32>,
    /// The extended resource name of GPUs (`nvidia.com/gpu`).
    pub gpu_resource: Sourced<String>,
    /// The main container's image.
    pub image: Sourced<String>,
    /// Pull policy; `None` leaves Kubernetes' default (`Always` for `:latest`, else
    /// `IfNotPresent`).
    pub pull_policy: Option<Sourced<PullPolicy>>,
    /// Node selector, by label key.
    pub node_selector: BTreeMap<String, Sourced<String>>,
    /// Tolerations, profile ones first, then annotations in line order.
    pub tolerations: Vec<Sourced<Toleration>>,
    /// Scheduling presets, without repeats.
    pub affinity: Vec<Sourced<AffinityPreset>>,
    /// PriorityClass name.
    pub priority_class: Option<Sourced<String>>,
    /// ServiceAccount name.
    pub service_account: Option<Sourced<String>>,
    /// RuntimeClass name.
    pub runtime_class: Option<Sourced<String>>,
    /// Kueue `LocalQueue` name: the Job waits there, suspended, until Kueue admits it.
    pub local_queue: Option<Sourced<String>>,
    /// The cluster named by a profile or a hint; `None`: the first healthy cluster serving the
    /// job's tag.
    pub cluster: Option<Sourced<String>>,
    /// Secrets to load as environment (`envFrom`), without repeats.
    pub env_from_secrets: Vec<Sourced<String>>,
    /// ConfigMaps to load as environment (`envFrom`), without repeats.
    pub env_from_configmaps: Vec<Sourced<String>>,
    /// Volumes, one per mount path.
    pub volumes: Vec<Sourced<Volume>>,
    /// Job timeout (`activeDeadlineSeconds` and Windmill's own timeout).
    pub timeout: Sourced<Duration>,
    /// System-retry budget (new attempts when user code never started).
    pub retries: Sourced<u32>,
    /// Windmill's priority, if any (claim order; not part of the pod).
    pub priority: Option<Sourced<i16>>,
    /// Extra pod labels; never a protected key (see [`PROTECTED_PREFIXES`]).
    pub labels: BTreeMap<String, Sourced<String>>,
    /// Extra pod annotations; never a protected key.
    pub annotations: BTreeMap<String, Sourced<String>>,
}

fn dflt<T>(value: T) -> Sourced<T> {
    Sourced::new(value, Source::Default)
}

/// A quantity from the `resources` defaults.
fn default_quantity<T: std::str::FromStr<Err = String>>(
    field: &str,
    text: &str,
) -> Result<T, HintError> {
    text.parse().map_err(|message| HintError::Config {
        field: format!("resources.{field}"),
        message,
    })
}

impl PodSettings {
    /// The worker defaults alone.
    pub fn defaults(settings: &HintSettings<'_>) -> Result<Self, HintError> {
        let r = &settings.resources;
        Ok(Self {
            cpu: dflt(default_quantity("default_cpu", &r.default_cpu)?),
            memory: dflt(default_quantity("default_memory", &r.default_memory)?),
            storage: dflt(positive_quantity(&r.default_storage).map_err(|message| {
                HintError::Config {
                    field: "resources.default_storage".into(),
                    message,
                }
            })?),
            gpu: dflt(0),
            gpu_resource: dflt(r.gpu_resource.clone()),
            image: dflt(settings.image.to_owned()),
            pull_policy: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: Vec::new(),
            priority_class: None,
            service_account: settings.service_account.map(|name| dflt(name.to_owned())),
            runtime_class: None,
            local_queue: None,
            cluster: None,
            env_from_secrets: Vec::new(),
            env_from_configmaps: Vec::new(),
            volumes: Vec::new(),
            timeout: dflt(settings.default_timeout),
            retries: dflt(settings.system_retries),
            priority: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        })
    }

    /// Lays a higher-precedence layer over these settings. `stamp` replaces the layer's own
    /// sources (a profile's values carry no line numbers, so they are stamped with the tag).
    pub fn apply(&mut self, layer: &HintSet, stamp: Option<&Source>) {
        scalar(&mut self.cpu, layer.cpu.as_ref(), stamp);
        scalar(&mut self.memory, layer.memory.as_ref(), stamp);
        scalar(&mut self.storage, layer.storage.as_ref(), stamp);
        scalar(&mut self.gpu, layer.gpu.as_ref(), stamp);
        scalar(&mut self.gpu_resource, layer.gpu_resource.as_ref(), stamp);
        scalar(&mut self.image, layer.image.as_ref(), stamp);
        optional(&mut self.pull_policy, layer.pull_policy.as_ref(), stamp);
        map(&mut self.node_selector, &layer.node_selector, stamp);
        list(&mut self.tolerations, &layer.tolerations, stamp);
        list(&mut self.affinity, &layer.affinity, stamp);
        optional(
            &mut self.priority_class,
            layer.priority_class.as_ref(),
            stamp,
        );
        optional(
            &mut self.service_account,
            layer.service_account.as_ref(),
            stamp,
        );
        optional(&mut self.runtime_class, layer.runtime_class.as_ref(), stamp);
        optional(&mut self.local_queue, layer.local_queue.as_ref(), stamp);
        optional(&mut self.cluster, layer.cluster.as_ref(), stamp);
        list(&mut self.env_from_secrets, &layer.env_from_secrets, stamp);
        list(
            &mut self.env_from_configmaps,
            &layer.env_from_configmaps,
            stamp,
        );
        for v in &layer.volumes {
            // A later source may remount a path with something else: replace, keep the order.
            let new = restamp(v, stamp);
            match self
                .volumes
                .iter_mut()
                .find(|have| have.value.mount_path() == v.value.mount_path())
            {
                Some(have) => *have = new,
                None => self.volumes.push(new),
            }
        }
        if let Some(t) = &layer.timeout {
            self.timeout = Sourced::new(t.value.0, restamp(t, stamp).source);
        }
        scalar(&mut self.retries, layer.retries.as_ref(), stamp);
        map(&mut self.labels, &layer.labels, stamp);
        map(&mut self.annotations, &layer.annotations, stamp);
    }

    /// Every effective value as (key, value, source), in a stable order: the `hints` output.
    /// One push per row in output order reads best whole, hence its length.
    #[must_use]
    pub fn rows(&self) -> Vec<(String, String, &Source)> {
        let mut rows: Vec<(String, String, &Source)> = Vec::new();
        let cpu = &self.cpu;
        rows.push((
            "cpu.request".into(),
            cpu.value.request.to_string(),
            &cpu.source,
        ));
        rows.push(("cpu.limit".into(), cpu.value.limit.to_string(), &cpu.source));
        let memory = &self.memory;
        rows.push((
            "memory.request".into(),
            memory.value.request.to_string(),
            &memory.source,
        ));
        rows.push((
            "memory.limit".into(),
            memory.value.limit.to_string(),
            &memory.source,
        ));
        rows.push((
            "storage".into(),
            self.storage.value.to_string(),
            &self.storage.source,
        ));
        rows.push(("gpu".into(), self.gpu.value.to_string(), &self.gpu.source));
        if self.gpu.value > 0 {
            rows.push((
                "gpu_resource".into(),
                self.gpu_resource.value.clone(),
                &self.gpu_resource.source,
            ));
        }
        rows.push(("image".into(), self.image.value.clone(), &self.image.source));
        if let Some(p) = &self.pull_policy {
            rows.push(("pull_policy".into(), p.value.to_string(), &p.source));
        }
        for (k, v) in &self.node_selector {
            rows.push((format!("node_selector.{k}"), v.value.clone(), &v.source));
        }
        for v in &self.tolerations {
            rows.push(("toleration".into(), v.value.to_string(), &v.source));
        }
        for v in &self.affinity {
            rows.push(("affinity".into(), v.value.to_string(), &v.source));
        }
        for (key, v) in [
            ("priority_class", &self.priority_class),
            ("service_account", &self.service_account),
            ("runtime_class", &self.runtime_class),
            ("local_queue", &self.local_queue),
            ("cluster", &self.cluster),
        ] {
            if let Some(v) = v {
                rows.push((key.into(), v.value.clone(), &v.source));
            }
        }
        for v in &self.env_from_secrets {
            rows.push(("env_from_secret".into(), v.value.clone(), &v.source));
        }
        for v in &self.env_from_configmaps {
            rows.push(("env_from_configmap".into(), v.value.clone(), &v.source));
        }
        for v in &self.volumes {
            rows.push(("volume".into(), v.value.to_string(), &v.source));
        }
        rows.push((
            "timeout".into(),
            HumanDuration(self.timeout.value).to_string(),
            &self.timeout.source,
        ));
        rows.push((
            "retries".into(),
            self.retries.value.to_string(),
            &self.retries.source,
        ));
        if let Some(p) = &self.priority {
            rows.push(("priority".into(), p.value.to_string(), &p.source));
        }
        for (k, v) in &self.labels {
            rows.push((format!("label.{k}"), v.value.clone(), &v.source));
        }
        for (k, v) in &self.annotations {
            rows.push((format!("annotation.{k}"), v.value.clone(), &v.source));
        }
        rows
    }
}

// How [`PodSettings::apply`] lays one value of a layer over the pod: scalars replace, maps
// merge key by key, lists add what they do not have yet.

fn restamp<T: Clone>(v: &Sourced<T>, stamp: Option<&Source>) -> Sourced<T> {
    Sourced::new(
        v.value.clone(),
        stamp.cloned().unwrap_or_else(|| v.source.clone()),
    )
}
fn scalar<T: Clone>(to: &mut Sourced<T>, from: Option<&Sourced<T>>, stamp: Option<&Source>) {
    if let Some(v) = from {
        *to = restamp(v, stamp);
    }
}
fn optional<T: Clone>(
    to: &mut Option<Sourced<T>>,
    from: Option<&Sourced<T>>,
    stamp: Option<&Source>,
) {
    if let Some(v) = from {
        *to = Some(restamp(v, stamp));
    }
}
fn map(
    to: &mut BTreeMap<String, Sourced<String>>,
    from: &BTreeMap<String, Sourced<String>>,
    stamp: Option<&Source>,
) {
    for (k, v) in from {
        to.insert(k.clone(), restamp(v, stamp));
    }
}
fn list<T: Clone + PartialEq>(
    to: &mut Vec<Sourced<T>>,
    from: &[Sourced<T>],
    stamp: Option<&Source>,
) {
    for v in from {
        if !to.iter().any(|have| have.value == v.value) {
            to.push(restamp(v, stamp));
        }
    }
}

impl fmt::Display for PodSettings {
    /// An aligned KEY VALUE SOURCE table; values are escaped so that a hostile annotation cannot
    /// garble a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(String, String, String)> = self
            .rows()
            .into_iter()
            .map(|(k, v, s)| (k, shorten(&v), s.to_string()))
            .collect();
        let key_width = rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0)
            .max(3);
        let value_width = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(f, "{:key_width$}  {:value_width$}  SOURCE", "KEY", "VALUE")?;
        for (k, v, s) in rows {
            writeln!(f, "{k:key_width$}  {v:value_width$}  {s}")?;
        }
        Ok(())
    }
}
