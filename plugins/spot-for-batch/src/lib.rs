//! `spot-for-batch`: an example policy plugin for flext-kubernetes, meant to be copied.
//!
//! It sends the jobs of chosen Windmill worker tags to spot (or any other dedicated) nodes, by
//! adding a node selector and tolerations to the Job's pod template. Jobs of other tags run as
//! rendered.
//!
//! Config:
//!
//! ```yaml
//! plugins:
//!   - name: spot-for-batch
//!     path: /etc/flext/plugins/spot_for_batch.wasm
//!     config:
//!       tags: [batch]                                   # required
//!       node_selector: { node.kubernetes.io/lifecycle: spot }
//!       tolerations:
//!         - { key: spot, operator: Exists, effect: NoSchedule }
//! ```
//!
//! Decision, for a job whose `job.tag` is listed in `tags`:
//! - `patch` of `spec.template.spec`: `nodeSelector` gets the configured entries (a merge patch
//!   merges objects, so the Job's own entries stay; a configured key overrides the Job's value),
//!   and `tolerations` becomes the Job's tolerations followed by each configured one the Job does
//!   not have yet (a merge patch *replaces* arrays, so the patch carries the whole list);
//! - `allow` when the Job already has all of that.
//!
//! For any other tag: `allow`. An invalid config, or an input without `job.tag` or the Job's
//! `spec.template.spec`, is an error.
//!
//! The decision logic is plain Rust ([`decide`]), tested natively; the component glue at the
//! bottom of this file (wasm builds only) converts its result to the WIT `decision`.

use serde_json::{Map, Value, json};

/// What the plugin decides, before it becomes the WIT `decision` (the patch still a JSON value).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    Deny(String),
    Patch(Value),
}

/// The plugin's config, checked.
#[derive(Debug)]
struct Config<'a> {
    tags: Vec<&'a str>,
    node_selector: Option<&'a Map<String, Value>>,
    tolerations: &'a [Value],
}

/// Decides about one job: `config` and `input` are the JSON texts the worker passes.
pub fn decide(config: &str, input: &str) -> Result<Decision, String> {
    let config: Value =
        serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
    let input: Value =
        serde_json::from_str(input).map_err(|e| format!("input is not JSON: {e}"))?;
    decide_value(&config, &input)
}

/// [`decide`] on parsed documents.
pub fn decide_value(config: &Value, input: &Value) -> Result<Decision, String> {
    let config = parse_config(config)?;
    let tag = input
        .pointer("/job/tag")
        .and_then(Value::as_str)
        .ok_or("input has no job.tag (a string)")?;
    if !config.tags.contains(&tag) {
        return Ok(Decision::Allow);
    }
    let pod = input
        .pointer("/objects/job/spec/template/spec")
        .and_then(Value::as_object)
        .ok_or("input has no objects.job.spec.template.spec (an object)")?;

    let mut patch = Map::new();
    if let Some(wanted) = config.node_selector {
        let existing = pod.get("nodeSelector").and_then(Value::as_object);
        let changed: Map<String, Value> = wanted
            .iter()
            .filter(|(key, value)| existing.and_then(|e| e.get(*key)) != Some(value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if !changed.is_empty() {
            patch.insert("nodeSelector".into(), Value::Object(changed));
        }
    }
    let existing: &[Value] = pod
        .get("tolerations")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut tolerations = existing.to_vec();
    for toleration in config.tolerations {
        if !tolerations.contains(toleration) {
            tolerations.push(toleration.clone());
        }
    }
    if tolerations.len() > existing.len() {
        patch.insert("tolerations".into(), Value::Array(tolerations));
    }

    if patch.is_empty() {
        return Ok(Decision::Allow);
    }
    Ok(Decision::Patch(
        json!({ "spec": { "template": { "spec": patch } } }),
    ))
}

fn parse_config(config: &Value) -> Result<Config<'_>, String> {
    let config = config
        .as_object()
        .ok_or("config must be an object with `tags`, `node_selector` and `tolerations`")?;
    let tags = config
        .get("tags")
        .and_then(Value::as_array)
        .ok_or("config has no `tags` (a list of Windmill worker tags)")?
        .iter()
        .map(|tag| {
            tag.as_str()
                .ok_or("config: each of `tags` must be a string")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node_selector = match config.get("node_selector") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            if let Some((key, _)) = map.iter().find(|(_, value)| !value.is_string()) {
                return Err(format!("config: node_selector's `{key}` must be a string"));
            }
            Some(map)
        }
        Some(_) => return Err("config: node_selector must be an object of label → value".into()),
    };
    let tolerations = match config.get("tolerations") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) if list.iter().all(Value::is_object) => list.as_slice(),
        Some(_) => {
            return Err(
                "config: tolerations must be a list of Kubernetes tolerations (objects)".into(),
            );
        }
    };
    if node_selector.is_none_or(Map::is_empty) && tolerations.is_empty() {
        return Err(
            "config has neither node_selector nor tolerations: the plugin would change nothing"
                .into(),
        );
    }
    Ok(Config {
        tags,
        node_selector,
        tolerations,
    })
}

/// The component: wit-bindgen's bindings for the world `policy`, and the export.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(config: String, input: String) -> Result<Decision, String> {
            Ok(match super::decide(&config, &input)? {
                super::Decision::Allow => Decision::Allow,
                super::Decision::Deny(reason) => Decision::Deny(reason),
                super::Decision::Patch(patch) => Decision::Patch(patch.to_string()),
            })
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Value {
        json!({
            "tags": ["batch", "nightly"],
            "node_selector": { "node.kubernetes.io/lifecycle": "spot" },
            "tolerations": [{ "key": "spot", "operator": "Exists", "effect": "NoSchedule" }],
        })
    }

    #[allow(clippy::needless_pass_by_value)] // json! literals read best passed by value
    fn input(tag: &str, pod: Value) -> Value {
        json!({
            "plugin": "spot-for-batch",
            "job": { "workspace": "finance", "tag": tag },
            "hints": [],
            "objects": { "job": { "metadata": { "name": "wm-1" }, "spec": { "template": { "spec": pod } } } },
        })
    }

    fn gpu_toleration() -> Value {
        json!({ "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" })
    }

    #[test]
    fn a_batch_job_gets_the_node_selector_and_its_tolerations_plus_the_spot_one() {
        let pod = json!({
            "containers": [{ "name": "main", "image": "python:3.12" }],
            "nodeSelector": { "kubernetes.io/arch": "amd64" },
            "tolerations": [gpu_toleration()],
        });
        let decision = decide_value(&config(), &input("batch", pod)).unwrap();
        assert_eq!(
            decision,
            Decision::Patch(json!({ "spec": { "template": { "spec": {
                // Only the new entry: the merge patch keeps `kubernetes.io/arch`.
                "nodeSelector": { "node.kubernetes.io/lifecycle": "spot" },
                // The whole list: a merge patch replaces arrays.
                "tolerations": [
                    gpu_toleration(),
                    { "key": "spot", "operator": "Exists", "effect": "NoSchedule" },
                ],
            } } } }))
        );
    }

    #[test]
    fn a_batch_job_without_selector_or_tolerations_gets_both() {
        let pod = json!({ "containers": [{ "name": "main" }], "nodeSelector": null });
        let Decision::Patch(patch) = decide_value(&config(), &input("nightly", pod)).unwrap()
        else {
            panic!("not patched");
        };
        assert_eq!(
            patch["spec"]["template"]["spec"]["nodeSelector"],
            json!({ "node.kubernetes.io/lifecycle": "spot" })
        );
        assert_eq!(
            patch["spec"]["template"]["spec"]["tolerations"],
            config()["tolerations"]
        );
    }

    #[test]
    fn a_toleration_the_job_has_is_not_added_twice() {
        let pod = json!({
            "nodeSelector": { "node.kubernetes.io/lifecycle": "on-demand" },
            "tolerations": [{ "key": "spot", "operator": "Exists", "effect": "NoSchedule" }, gpu_toleration()],
        });
        let decision = decide_value(&config(), &input("batch", pod)).unwrap();
        assert_eq!(
            decision,
            Decision::Patch(json!({ "spec": { "template": { "spec": {
                "nodeSelector": { "node.kubernetes.io/lifecycle": "spot" },
            } } } }))
        );
    }

    #[test]
    fn a_batch_job_that_has_it_all_already_is_allowed() {
        let pod = json!({
            "nodeSelector": { "node.kubernetes.io/lifecycle": "spot" },
            "tolerations": [{ "key": "spot", "operator": "Exists", "effect": "NoSchedule" }],
        });
        assert_eq!(
            decide_value(&config(), &input("batch", pod)).unwrap(),
            Decision::Allow
        );
    }

    #[test]
    fn other_tags_are_allowed_whatever_their_tolerations() {
        let pod = json!({ "tolerations": [gpu_toleration()] });
        assert_eq!(
            decide_value(&config(), &input("k8s", pod)).unwrap(),
            Decision::Allow
        );
        // Not even the Job is needed to allow them.
        let bare = json!({ "job": { "tag": "k8s" }, "objects": null });
        assert_eq!(decide_value(&config(), &bare).unwrap(), Decision::Allow);
    }

    #[test]
    fn the_text_entry_point_parses_both_documents() {
        let decision = decide(
            &config().to_string(),
            &input("batch", json!({})).to_string(),
        );
        assert!(matches!(decision, Ok(Decision::Patch(_))));
        assert!(
            decide("", "{}")
                .unwrap_err()
                .starts_with("config is not JSON")
        );
    }

    #[test]
    fn missing_fields_are_errors_that_name_them() {
        assert_eq!(
            decide_value(&config(), &json!({ "job": {} })).unwrap_err(),
            "input has no job.tag (a string)"
        );
        let no_job = json!({ "job": { "tag": "batch" }, "objects": { "job": null } });
        assert_eq!(
            decide_value(&config(), &no_job).unwrap_err(),
            "input has no objects.job.spec.template.spec (an object)"
        );
    }

    #[test]
    fn a_bad_config_is_an_error() {
        let input = input("batch", json!({}));
        for (config, says) in [
            (json!(null), "must be an object"),
            (json!({ "node_selector": { "a": "b" } }), "no `tags`"),
            (json!({ "tags": [1] }), "each of `tags`"),
            (
                json!({ "tags": ["batch"], "node_selector": { "a": 1 } }),
                "node_selector's `a`",
            ),
            (
                json!({ "tags": ["batch"], "node_selector": ["a"] }),
                "node_selector must be",
            ),
            (
                json!({ "tags": ["batch"], "tolerations": ["spot"] }),
                "tolerations must be",
            ),
            (json!({ "tags": ["batch"] }), "would change nothing"),
        ] {
            let err = decide_value(&config, &input).unwrap_err();
            assert!(err.contains(says), "{config}: {err}");
        }
    }
}
