//! One layer of hints (a tag's profile, or a script's annotations), its checks, and its
//! annotation form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::names::{
    check_annotation_value, check_cluster_name, check_dns_subdomain, check_image, check_label_key,
    check_label_value, check_local_queue,
};
use super::parse::quote;
use super::quantity::{Bytes, Millicores};
use super::{AffinityPreset, PullPolicy, RequestLimit, Sourced, Toleration, Volume};
use crate::units::HumanDuration;

/// The profiles of the worker config (`profiles:`), by the tag whose jobs they apply to.
pub type Profiles = BTreeMap<String, HintSet>;

/// One layer of hints: a profile (`profiles.<tag>` in the config) or a script's annotations.
/// Every field is optional; see `docs/hints.md` for each key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HintSet {
    /// `cpu: 2` or `cpu: 500m..2` (request..limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Sourced<RequestLimit<Millicores>>>,
    /// `memory: 4Gi` or `memory: 2Gi..4Gi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Sourced<RequestLimit<Bytes>>>,
    /// Ephemeral storage, request = limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Sourced<Bytes>>,
    /// GPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Sourced<u32>>,
    /// The extended resource that counts GPUs (profiles only: it is the admin's choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_resource: Option<Sourced<String>>,
    /// The container image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Sourced<String>>,
    /// The image pull policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<Sourced<PullPolicy>>,
    /// Node labels the pod must land on.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, Sourced<String>>,
    /// Taints the pod tolerates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Sourced<Toleration>>,
    /// Scheduling presets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<Sourced<AffinityPreset>>,
    /// The pod's PriorityClass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<Sourced<String>>,
    /// The pod's ServiceAccount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Sourced<String>>,
    /// The pod's RuntimeClass (`gvisor`, `kata`, `nvidia`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<Sourced<String>>,
    /// The Kueue `LocalQueue` the Job waits in for admission (`docs/kueue.md`): the Job gets the
    /// `kueue.x-k8s.io/queue-name` label and is created suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_queue: Option<Sourced<String>>,
    /// The cluster the job runs on, by its name in `clusters:` (`docs/clusters.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Sourced<String>>,
    /// Secrets whose keys become environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from_secrets: Vec<Sourced<String>>,
    /// ConfigMaps whose keys become environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from_configmaps: Vec<Sourced<String>>,
    /// Volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Sourced<Volume>>,
    /// How long the job may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Sourced<HumanDuration>>,
    /// System-retry budget: new attempts when the pod is lost before user code starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Sourced<u32>>,
    /// Extra pod labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Sourced<String>>,
    /// Extra pod annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Sourced<String>>,
}

/// Hard bound on the retry budget a hint may ask, whatever the limits say: each retry is a new
/// pod, and a runaway budget would loop on a broken node pool.
pub const MAX_RETRIES: u32 = 100;

impl HintSet {
    /// Checks the values that deserialization alone does not: names, label syntax, sizes. The
    /// annotation parser runs the same checks as it reads; profiles get them at config load.
    /// The error names the key and says what is wrong.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.storage.as_ref().is_some_and(|s| s.value.0 == 0) {
            return Err(("storage".into(), "must be more than 0".into()));
        }
        if let Some(retries) = &self.retries
            && retries.value > MAX_RETRIES
        {
            return Err((
                "retries".into(),
                format!("{} is more than {MAX_RETRIES}", retries.value),
            ));
        }
        each(
            "gpu_resource",
            one(self.gpu_resource.as_ref()),
            check_label_key,
        )?;
        each("image", one(self.image.as_ref()), check_image)?;
        each(
            "priority_class",
            one(self.priority_class.as_ref()),
            check_dns_subdomain,
        )?;
        each(
            "service_account",
            one(self.service_account.as_ref()),
            check_dns_subdomain,
        )?;
        each(
            "runtime_class",
            one(self.runtime_class.as_ref()),
            check_dns_subdomain,
        )?;
        each(
            "local_queue",
            one(self.local_queue.as_ref()),
            check_local_queue,
        )?;
        each("cluster", one(self.cluster.as_ref()), check_cluster_name)?;
        each(
            "env_from_secrets",
            self.env_from_secrets.iter().map(|s| &s.value),
            check_dns_subdomain,
        )?;
        each(
            "env_from_configmaps",
            self.env_from_configmaps.iter().map(|s| &s.value),
            check_dns_subdomain,
        )?;
        each("node_selector", self.node_selector.keys(), check_label_key)?;
        each(
            "node_selector",
            self.node_selector.values().map(|s| &s.value),
            check_label_value,
        )?;
        each("labels", self.labels.keys(), check_label_key)?;
        each(
            "labels",
            self.labels.values().map(|s| &s.value),
            check_label_value,
        )?;
        each("annotations", self.annotations.keys(), check_label_key)?;
        each(
            "annotations",
            self.annotations.values().map(|s| &s.value),
            check_annotation_value,
        )?;
        let mut paths = BTreeSet::new();
        for volume in &self.volumes {
            if !paths.insert(volume.value.mount_path()) {
                return Err((
                    "volumes".into(),
                    format!("two volumes at {}", volume.value.mount_path()),
                ));
            }
        }
        if self.timeout.as_ref().is_some_and(|t| t.value.0.is_zero()) {
            return Err(("timeout".into(), "must be more than 0".into()));
        }
        Ok(())
    }

    /// The same hints as annotation lines (`marker` is `#`, `//` or `--`), one key per line, in
    /// a stable order: what the parser reads back into an equal set (sources aside).
    #[must_use]
    pub fn render_annotations(&self, marker: &str) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut push = |key: &str, value: String| pairs.push((key.to_owned(), value));
        if let Some(v) = &self.cpu {
            push("cpu", v.value.to_string());
        }
        if let Some(v) = &self.memory {
            push("memory", v.value.to_string());
        }
        if let Some(v) = &self.storage {
            push("storage", v.value.to_string());
        }
        if let Some(v) = &self.gpu {
            push("gpu", v.value.to_string());
        }
        if let Some(v) = &self.image {
            push("image", v.value.clone());
        }
        if let Some(v) = &self.pull_policy {
            push("pull_policy", v.value.to_string());
        }
        for (k, v) in &self.node_selector {
            push("node_selector", format!("{k}:{}", v.value));
        }
        for v in &self.tolerations {
            push("toleration", v.value.to_string());
        }
        for v in &self.affinity {
            push("affinity", v.value.to_string());
        }
        for (key, v) in [
            ("priority_class", &self.priority_class),
            ("service_account", &self.service_account),
            ("runtime_class", &self.runtime_class),
            ("local_queue", &self.local_queue),
            ("cluster", &self.cluster),
        ] {
            if let Some(v) = v {
                push(key, v.value.clone());
            }
        }
        for v in &self.env_from_secrets {
            push("env_from_secret", v.value.clone());
        }
        for v in &self.env_from_configmaps {
            push("env_from_configmap", v.value.clone());
        }
        for v in &self.volumes {
            push("volume", v.value.to_string());
        }
        if let Some(v) = &self.timeout {
            push("timeout", v.value.to_string());
        }
        if let Some(v) = &self.retries {
            push("retries", v.value.to_string());
        }
        for (k, v) in &self.labels {
            push(&format!("label.{k}"), v.value.clone());
        }
        for (k, v) in &self.annotations {
            push(&format!("annotation.{k}"), quote(&v.value));
        }
        let mut text = String::new();
        for (k, v) in pairs {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{marker} k8s: {k}={v}");
        }
        text
    }
}

/// Checks every value of `key` with `check`, naming the key in the error.
fn each<'a>(
    key: &str,
    values: impl IntoIterator<Item = &'a String>,
    check: fn(&str) -> std::result::Result<(), String>,
) -> std::result::Result<(), (String, String)> {
    values
        .into_iter()
        .try_for_each(|v| check(v).map_err(|e| (key.to_owned(), e)))
}
/// The value of an optional hint, for [`each`].
fn one(o: Option<&Sourced<String>>) -> Option<&String> {
    o.map(|s| &s.value)
}
