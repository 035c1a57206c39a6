//! What a plugin's patch may not undo, checked on the patched Job before anything is created.
//!
//! Two kinds of rules:
//! - the worker's own wiring, never liftable: the Job's name and namespace, the `flext.dev/`
//!   labels and annotations it reads back (adoption, the shared watch, cleanup), the init
//!   container, and each of its containers' command, args and env (the runner, the nonce, the
//!   job's token);
//! - the security baseline and the admin's maxima, each liftable for one plugin by name
//!   (`lift: [run_as_root]`): [`Rule`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hints::Limits;
use crate::hints::{Bytes, Millicores};

/// A rule of the baseline a plugin may be allowed to lift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The pod runs as non-root (`runAsNonRoot: true`, no `runAsUser: 0`).
    RunAsRoot,
    /// No privilege escalation, no privileged container, no added capability.
    PrivilegeEscalation,
    /// No host network, PID or IPC namespace, no `hostPath` volume, no `hostPort`.
    HostNamespaces,
    /// The service-account token stays unmounted (unless the worker mounted it for a hint), and
    /// the ServiceAccount stays the one the worker chose.
    ServiceAccountToken,
    /// The seccomp profile stays `RuntimeDefault` (or the worker's).
    Seccomp,
    /// Resource limits stay within `limits.max_cpu`, `max_memory`, `max_storage`, `max_gpu`, and the
    /// main image within `limits.allowed_images`.
    AdminLimits,
}

impl Rule {
    /// The name in `lift:`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsRoot => "run_as_root",
            Self::PrivilegeEscalation => "privilege_escalation",
            Self::HostNamespaces => "host_namespaces",
            Self::ServiceAccountToken => "service_account_token",
            Self::Seccomp => "seccomp",
            Self::AdminLimits => "admin_limits",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a patched Job broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule, when the config could lift it; `None`: the worker's own wiring.
    pub rule: Option<Rule>,
    /// What changed, naming the field.
    pub what: String,
}

fn pod_spec(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]
}

fn containers(job: &Value) -> Vec<&Value> {
    let spec = pod_spec(job);
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|c| c["name"] == name)
}

fn flext_keys(map: &Value) -> Vec<(&String, &Value)> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    k.starts_with("flext.dev/") || *k == "app.kubernetes.io/managed-by"
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The worker's wiring, which no plugin may change.
fn wiring(before: &Value, after: &Value, out: &mut Vec<Violation>) {
    let mut broke = |what: String| out.push(Violation { rule: None, what });
    for field in ["name", "namespace"] {
        if before["metadata"][field] != after["metadata"][field] {
            broke(format!("metadata.{field}"));
        }
    }
    for (at, path) in [
        (&before["metadata"]["labels"], "metadata.labels"),
        (&before["metadata"]["annotations"], "metadata.annotations"),
        (
            &before["spec"]["template"]["metadata"]["labels"],
            "spec.template.metadata.labels",
        ),
    ] {
        let after_map = match path {
            "metadata.labels" => &after["metadata"]["labels"],
            "metadata.annotations" => &after["metadata"]["annotations"],
            _ => &after["spec"]["template"]["metadata"]["labels"],
        };
        for (key, value) in flext_keys(at) {
            if &after_map[key] != value {
                broke(format!("{path}.{key}"));
            }
        }
    }
    if pod_spec(before)["initContainers"] != pod_spec(after)["initContainers"] {
        broke("spec.template.spec.initContainers".to_owned());
    }
    for container in pod_spec(before)["containers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = container["name"].as_str().unwrap_or_default();
        let Some(patched) = named(&pod_spec(after)["containers"], name) else {
            broke(format!("container `{name}` was removed"));
            continue;
        };
        // The image is the admin's to change (`admin_limits` checks it); how it is run is not.
        for field in ["command", "args", "env", "volumeMounts"] {
            if container[field] != patched[field] {
                broke(format!("container `{name}`.{field}"));
            }
        }
    }
    for volume in pod_spec(before)["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        if named(&pod_spec(after)["volumes"], name) != Some(volume) {
            broke(format!("volume `{name}`"));
        }
    }
}

fn truthy(value: &Value) -> bool {
    value.as_bool() == Some(true)
}

fn security(before: &Value, after: &Value, out: &mut Vec<Violation>) {
    let mut broke = |rule: Rule, what: String| {
        out.push(Violation {
            rule: Some(rule),
            what,
        });
    };
    let spec = pod_spec(after);
    let pod_context = &spec["securityContext"];
    if truthy(&pod_spec(before)["securityContext"]["runAsNonRoot"])
        && !truthy(&pod_context["runAsNonRoot"])
    {
        broke(
            Rule::RunAsRoot,
            "spec.template.spec.securityContext.runAsNonRoot is no longer true".into(),
        );
    }
    if pod_context["runAsUser"] == 0 {
        broke(
            Rule::RunAsRoot,
            "spec.template.spec.securityContext.runAsUser is 0".into(),
        );
    }
    let seccomp = |spec: &Value| spec["securityContext"]["seccompProfile"].clone();
    if seccomp(pod_spec(before)) != seccomp(spec) {
        broke(
            Rule::Seccomp,
            "spec.template.spec.securityContext.seccompProfile changed".into(),
        );
    }
    for (field, what) in [
        ("hostNetwork", "hostNetwork"),
        ("hostPID", "hostPID"),
        ("hostIPC", "hostIPC"),
    ] {
        if truthy(&spec[field]) {
            broke(
                Rule::HostNamespaces,
                format!("spec.template.spec.{what} is true"),
            );
        }
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if !volume["hostPath"].is_null() {
            broke(
                Rule::HostNamespaces,
                format!(
                    "volume `{}` is a hostPath",
                    volume["name"].as_str().unwrap_or_default()
                ),
            );
        }
    }
    if spec["automountServiceAccountToken"] != pod_spec(before)["automountServiceAccountToken"] {
        broke(
            Rule::ServiceAccountToken,
            "spec.template.spec.automountServiceAccountToken changed".into(),
        );
    }
    if spec["serviceAccountName"] != pod_spec(before)["serviceAccountName"] {
        broke(
            Rule::ServiceAccountToken,
            "spec.template.spec.serviceAccountName changed".into(),
        );
    }
    for container in containers(after) {
        let name = container["name"].as_str().unwrap_or_default();
        let context = &container["securityContext"];
        if context["allowPrivilegeEscalation"].as_bool() != Some(false) {
            broke(
                Rule::PrivilegeEscalation,
                format!("container `{name}` does not set allowPrivilegeEscalation: false"),
            );
        }
        if truthy(&context["privileged"]) {
            broke(
                Rule::PrivilegeEscalation,
                format!("container `{name}` is privileged"),
            );
        }
        if context["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            broke(
                Rule::PrivilegeEscalation,
                format!("container `{name}` adds capabilities"),
            );
        }
        if context["runAsNonRoot"].as_bool() == Some(false) || context["runAsUser"] == 0 {
            broke(
                Rule::RunAsRoot,
                format!("container `{name}` may run as root"),
            );
        }
        for port in container["ports"].as_array().into_iter().flatten() {
            if !port["hostPort"].is_null() {
                broke(
                    Rule::HostNamespaces,
                    format!("container `{name}` has a hostPort"),
                );
            }
        }
    }
}

fn quantity_over<T: std::str::FromStr + PartialOrd + fmt::Display>(
    value: &Value,
    max: Option<T>,
) -> Option<String> {
    let max = max?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    match text.parse::<T>() {
        Ok(v) if v > max => Some(format!("{text} is above {max}")),
        Ok(_) => None,
        Err(_) => Some(format!("`{text}` is not a quantity")),
    }
}

fn admin_limits(after: &Value, limits: &Limits, gpu_resource: &str, out: &mut Vec<Violation>) {
    let mut broke = |what: String| {
        out.push(Violation {
            rule: Some(Rule::AdminLimits),
            what,
        });
    };
    for container in containers(after) {
        let name = container["name"].as_str().unwrap_or_default();
        for section in ["limits", "requests"] {
            let resources = &container["resources"][section];
            let checks = [
                (
                    "cpu",
                    quantity_over::<Millicores>(&resources["cpu"], limits.max_cpu),
                    "limits.max_cpu",
                ),
                (
                    "memory",
                    quantity_over::<Bytes>(&resources["memory"], limits.max_memory),
                    "limits.max_memory",
                ),
                (
                    "ephemeral-storage",
                    quantity_over::<Bytes>(&resources["ephemeral-storage"], limits.max_storage),
                    "limits.max_storage",
                ),
                (
                    gpu_resource,
                    quantity_over::<u32>(&resources[gpu_resource], limits.max_gpu),
                    "limits.max_gpu",
                ),
            ];
            for (resource, over, setting) in checks {
                if let Some(over) = over {
                    broke(format!(
                        "container `{name}` resources.{section}.{resource}: {over} ({setting})"
                    ));
                }
            }
        }
    }
    if let Some(allowed) = &limits.allowed_images
        && let Some(main) = named(&pod_spec(after)["containers"], "main")
    {
        let image = main["image"].as_str().unwrap_or_default();
        if !allowed
            .iter()
            .any(|pattern| crate::hints::glob_match(pattern, image))
        {
            broke(format!("image `{image}` is not in limits.allowed_images"));
        }
    }
}

/// Everything `after` (the patched Job) breaks compared with `before` (the Job as it was handed
/// to the plugin), under the admin's `limits`.
#[must_use]
pub fn check(before: &Value, after: &Value, limits: &Limits, gpu_resource: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    wiring(before, after, &mut out);
    security(before, after, &mut out);
    admin_limits(after, limits, gpu_resource, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job() -> Value {
        json!({
            "metadata": {"name": "wm-1-1", "namespace": "jobs",
                         "labels": {"flext.dev/job-id": "1", "app.kubernetes.io/managed-by": "flext-kubernetes"},
                         "annotations": {"flext.dev/windmill-tag": "k8s"}},
            "spec": {"template": {
                "metadata": {"labels": {"flext.dev/job-id": "1"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [{"name": "runner", "image": "flext", "securityContext": {"allowPrivilegeEscalation": false}}],
                    "containers": [{"name": "main", "image": "python:3.12", "command": ["/flext/runner"],
                                    "env": [{"name": "A", "value": "1"}],
                                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                                    "securityContext": {"allowPrivilegeEscalation": false}}],
                    "volumes": [{"name": "code", "configMap": {"name": "wm-1-1"}}]
                }
            }}
        })
    }

    fn patched(patch: &Value) -> Value {
        let mut after = job();
        crate::plugins::merge::merge(&mut after, patch);
        after
    }

    fn rules(patch: &Value, limits: &Limits) -> Vec<(Option<Rule>, String)> {
        check(&job(), &patched(patch), limits, "nvidia.com/gpu")
            .into_iter()
            .map(|v| (v.rule, v.what))
            .collect()
    }

    #[test]
    fn labels_tolerations_and_node_selectors_pass() {
        let patch = json!({
            "metadata": {"labels": {"cost-center": "cc-1"}},
            "spec": {"template": {"metadata": {"labels": {"cost-center": "cc-1"}},
                     "spec": {"nodeSelector": {"pool": "spot"}, "tolerations": [{"key": "spot", "operator": "Exists"}]}}}
        });
        assert_eq!(rules(&patch, &Limits::default()), vec![]);
    }

    #[test]
    fn the_workers_wiring_is_never_liftable() {
        let found = rules(
            &json!({"metadata": {"name": "other", "labels": {"flext.dev/job-id": null}},
                    "spec": {"template": {"spec": {"initContainers": null}}}}),
            &Limits::default(),
        );
        let whats: Vec<&str> = found.iter().map(|(_, w)| w.as_str()).collect();
        assert!(found.iter().all(|(rule, _)| rule.is_none()), "{found:?}");
        for what in [
            "metadata.name",
            "metadata.labels.flext.dev/job-id",
            "spec.template.spec.initContainers",
        ] {
            assert!(whats.contains(&what), "{what} not in {whats:?}");
        }
    }

    #[test]
    fn each_baseline_rule_is_named() {
        for (patch, rule) in [
            (
                json!({"spec": {"template": {"spec": {"securityContext": {"runAsNonRoot": false}}}}}),
                Rule::RunAsRoot,
            ),
            (
                json!({"spec": {"template": {"spec": {"hostNetwork": true}}}}),
                Rule::HostNamespaces,
            ),
            (
                json!({"spec": {"template": {"spec": {"automountServiceAccountToken": true}}}}),
                Rule::ServiceAccountToken,
            ),
            (
                json!({"spec": {"template": {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}}}),
                Rule::Seccomp,
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "python:3.12", "command": ["/flext/runner"],
                       "env": [{"name": "A", "value": "1"}], "securityContext": {"privileged": true, "allowPrivilegeEscalation": false}}]}}}}),
                Rule::PrivilegeEscalation,
            ),
        ] {
            let found = rules(&patch, &Limits::default());
            assert!(
                found.iter().any(|(r, _)| *r == Some(rule)),
                "{rule}: {found:?}"
            );
        }
    }

    #[test]
    fn resources_beyond_the_maxima_break_the_admin_limits() {
        let limits = Limits {
            max_memory: Some("2Gi".parse().unwrap()),
            ..Limits::default()
        };
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "python:3.12",
            "command": ["/flext/runner"], "env": [{"name": "A", "value": "1"}],
            "resources": {"limits": {"memory": "64Gi"}}, "securityContext": {"allowPrivilegeEscalation": false}}]}}}});
        let found = rules(&patch, &limits);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Some(Rule::AdminLimits));
        assert!(found[0].1.contains("64Gi"), "{found:?}");
    }
}
