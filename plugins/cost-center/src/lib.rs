//! `cost-center`: an example policy plugin for flext-kubernetes, meant to be copied.
//!
//! It labels every Job with the cost center of the job's Windmill workspace, and refuses jobs of
//! workspaces that have none, so that nothing runs on the cluster unaccounted for.
//!
//! Config: an object mapping workspace → cost center (a valid Kubernetes label value):
//!
//! ```yaml
//! plugins:
//!   - name: cost-center
//!     path: /etc/flext/plugins/cost_center.wasm
//!     config: { finance: "cc-4411", research: "cc-5120" }
//! ```
//!
//! Decision:
//! - workspace in the map: `patch`, adding the label `cost-center: <value>` to the Job's
//!   `metadata.labels` and to its pod template's `spec.template.metadata.labels`;
//! - workspace not in the map: `deny`, naming the workspace and saying where to add it;
//! - config not such a map, or the input has no `job.workspace`: an error (the plugin's own
//!   failure, `policy_error` unless the worker's config says `on_error: allow`).
//!
//! The decision logic is plain Rust ([`decide`]), tested natively; the component glue at the
//! bottom of this file (wasm builds only) converts its result to the WIT `decision`.

use serde_json::{Map, Value, json};

/// The label this plugin sets.
pub const LABEL: &str = "cost-center";

/// What the plugin decides, before it becomes the WIT `decision` (the patch still a JSON value).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    Deny(String),
    Patch(Value),
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
    let centers = cost_centers(config)?;
    let workspace = input
        .pointer("/job/workspace")
        .and_then(Value::as_str)
        .ok_or("input has no job.workspace (a string)")?;
    let plugin = input
        .get("plugin")
        .and_then(Value::as_str)
        .unwrap_or("cost-center");
    let Some(center) = centers.get(workspace) else {
        return Ok(Decision::Deny(format!(
            "workspace `{workspace}` has no cost center: add `{workspace}: <cost center>` to the \
             config of the worker's plugin `{plugin}`"
        )));
    };
    let labels = json!({ LABEL: center });
    Ok(Decision::Patch(json!({
        "metadata": { "labels": labels },
        "spec": { "template": { "metadata": { "labels": labels } } },
    })))
}

/// The config's workspace → cost center map, each value checked as a label value.
fn cost_centers(config: &Value) -> Result<&Map<String, Value>, String> {
    let map = config.as_object().ok_or_else(|| {
        format!(
            "config must be an object mapping workspace → cost center, e.g. {{\"finance\": \
             \"cc-4411\"}}; it is {}",
            kind(config)
        )
    })?;
    for (workspace, center) in map {
        let center = center.as_str().ok_or_else(|| {
            format!(
                "config: the cost center of workspace `{workspace}` must be a string, it is {}",
                kind(center)
            )
        })?;
        check_label_value(center).map_err(|why| {
            format!("config: the cost center of workspace `{workspace}`, `{center}`, {why}")
        })?;
    }
    Ok(map)
}

/// Kubernetes' rule for label values: at most 63 characters, alphanumerics, `-`, `_` and `.`,
/// beginning and ending with an alphanumeric (or empty).
fn check_label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("is longer than a label value may be (63 characters)");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("is not a label value: only letters, digits, `-`, `_` and `.` are allowed");
    }
    let alnum = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if !alnum(value.chars().next()) || !alnum(value.chars().last()) {
        return Err("is not a label value: it must begin and end with a letter or digit");
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

    fn input(workspace: &Value) -> Value {
        json!({
            "plugin": "cost-center",
            "job": { "id": "0190c8a4-0000-7000-8000-000000000001", "workspace": workspace,
                     "path": "u/alice/etl", "kind": "script", "tag": "k8s" },
            "hints": [],
            "objects": { "job": { "metadata": { "name": "wm-1", "labels": { "flext.dev/job-id": "x" } } } },
        })
    }

    #[test]
    fn a_mapped_workspace_gets_its_label_on_the_job_and_its_pods() {
        let config = json!({ "finance": "cc-4411", "research": "cc-5120" });
        let decision = decide_value(&config, &input(&json!("finance"))).unwrap();
        assert_eq!(
            decision,
            Decision::Patch(json!({
                "metadata": { "labels": { "cost-center": "cc-4411" } },
                "spec": { "template": { "metadata": { "labels": { "cost-center": "cc-4411" } } } },
            }))
        );
    }

    #[test]
    fn an_unmapped_workspace_is_denied_with_a_reason_that_says_what_to_do() {
        let config = json!({ "finance": "cc-4411" });
        let Decision::Deny(reason) = decide_value(&config, &input(&json!("marketing"))).unwrap()
        else {
            panic!("not denied");
        };
        assert!(reason.contains("`marketing`"), "{reason}");
        assert!(
            reason.contains("add `marketing: <cost center>`"),
            "{reason}"
        );
        assert!(reason.contains("plugin `cost-center`"), "{reason}");
    }

    #[test]
    fn the_text_entry_point_parses_both_documents() {
        let decision = decide(
            r#"{"finance":"cc-4411"}"#,
            &input(&json!("finance")).to_string(),
        );
        assert!(matches!(decision, Ok(Decision::Patch(_))));
        assert!(
            decide("{", "{}")
                .unwrap_err()
                .starts_with("config is not JSON")
        );
        assert!(
            decide("{}", "nope")
                .unwrap_err()
                .starts_with("input is not JSON")
        );
    }

    #[test]
    fn missing_fields_are_errors_that_name_them() {
        let config = json!({ "finance": "cc-4411" });
        for input in [
            json!({}),
            json!({ "job": null }),
            input(&Value::Null),
            input(&json!(7)),
        ] {
            assert_eq!(
                decide_value(&config, &input).unwrap_err(),
                "input has no job.workspace (a string)"
            );
        }
    }

    #[test]
    fn a_bad_config_is_an_error() {
        let err = decide_value(&json!(["finance"]), &input(&json!("finance"))).unwrap_err();
        assert!(err.contains("it is an array"), "{err}");
        let err = decide_value(&json!({ "finance": 4411 }), &input(&json!("finance"))).unwrap_err();
        assert!(
            err.contains("workspace `finance` must be a string"),
            "{err}"
        );
        let err =
            decide_value(&json!({ "finance": "cc 4411" }), &input(&json!("finance"))).unwrap_err();
        assert!(err.contains("is not a label value"), "{err}");
        let err =
            decide_value(&json!({ "finance": "-cc" }), &input(&json!("finance"))).unwrap_err();
        assert!(err.contains("begin and end"), "{err}");
        let long = "c".repeat(64);
        let err = decide_value(&json!({ "finance": long }), &input(&json!("finance"))).unwrap_err();
        assert!(err.contains("63"), "{err}");
    }
}
