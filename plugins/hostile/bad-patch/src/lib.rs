//! Hostile plugin `bad-patch`, a test fixture for the worker's sandbox: NOT an example.
//!
//! Its `decide` returns a `patch` that the worker must never apply (the job failing as
//! `policy_error`), the one config `{"mode": ...}` names:
//!
//! | mode | the patch |
//! | --- | --- |
//! | `not-json` (the default) | `not json` |
//! | `not-object` | `[1, 2, 3]`: JSON, but a merge patch of an array would replace the whole Job |
//! | `host-network` | `hostNetwork`, `hostPID` and `hostIPC` set on the pod |
//! | `privileged` | every container `privileged` and allowed privilege escalation |
//! | `run-as-root` | the pod and every container `runAsUser: 0`, `runAsNonRoot: false` |
//! | `service-account-token` | `automountServiceAccountToken: true` |
//! | `command` | the `main` container's command replaced |
//! | `worker-label` | the worker's own labels (`flext.dev/job-id`, `flext.dev/worker-group`) changed, on the Job and its pods |
//! | `name` | the Job renamed |
//! | `limits` | every container asks for 512 CPUs and 1 TiB of memory (past any admin limit) |
//!
//! The modes that change containers copy them from the input's Job (a merge patch replaces the
//! whole `containers` list), as a real plugin would, so that only the named change is wrong.

use serde_json::{Value, json};

/// Every mode, in the order of the table above.
pub const MODES: &[&str] = &[
    "not-json",
    "not-object",
    "host-network",
    "privileged",
    "run-as-root",
    "service-account-token",
    "command",
    "worker-label",
    "name",
    "limits",
];

/// The patch for `config`'s mode, as text, or an error for an unknown mode.
pub fn patch(config: &str, input: &str) -> Result<String, String> {
    let config: Value = serde_json::from_str(config).unwrap_or_default();
    let input: Value = serde_json::from_str(input).unwrap_or_default();
    let mode = config
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("not-json");
    let pod = |spec: Value| json!({ "spec": { "template": { "spec": spec } } });
    let patch = match mode {
        "not-json" => return Ok("not json".into()),
        "not-object" => json!([1, 2, 3]),
        "host-network" => pod(json!({ "hostNetwork": true, "hostPID": true, "hostIPC": true })),
        "privileged" => pod(json!({ "containers": containers(&input, |c| {
            c["securityContext"]["privileged"] = json!(true);
            c["securityContext"]["allowPrivilegeEscalation"] = json!(true);
        }) })),
        "run-as-root" => pod(json!({
            "securityContext": { "runAsUser": 0, "runAsNonRoot": false },
            "containers": containers(&input, |c| {
                c["securityContext"]["runAsUser"] = json!(0);
                c["securityContext"]["runAsNonRoot"] = json!(false);
            }),
        })),
        "service-account-token" => pod(json!({ "automountServiceAccountToken": true })),
        "command" => pod(json!({ "containers": containers(&input, |c| {
            if c["name"] == "main" {
                c["command"] = json!(["sh", "-c", "echo the hostile plugin bad-patch ran this instead"]);
                c["args"] = Value::Null;
            }
        }) })),
        "worker-label" => {
            let labels =
                json!({ "flext.dev/job-id": "someone-else", "flext.dev/worker-group": "another" });
            json!({
                "metadata": { "labels": labels },
                "spec": { "template": { "metadata": { "labels": labels } } },
            })
        }
        "name" => json!({ "metadata": { "name": "renamed-by-bad-patch" } }),
        "limits" => pod(json!({ "containers": containers(&input, |c| {
            let huge = json!({ "cpu": "512", "memory": "1Ti" });
            c["resources"] = json!({ "requests": huge, "limits": huge });
        }) })),
        other => {
            return Err(format!(
                "unknown mode `{other}`: one of {}",
                MODES.join(", ")
            ));
        }
    };
    Ok(patch.to_string())
}

/// The input Job's containers, each changed by `change` (one bare `main` when it has none).
fn containers(input: &Value, change: impl Fn(&mut Value)) -> Value {
    let mut containers = input
        .pointer("/objects/job/spec/template/spec/containers")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({ "name": "main" })]);
    for container in &mut containers {
        if !container["securityContext"].is_object() {
            container["securityContext"] = json!({});
        }
        change(container);
    }
    Value::Array(containers)
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(config: String, input: String) -> Result<Decision, String> {
            super::patch(&config, &input).map(Decision::Patch)
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_gives_its_patch() {
        let input = json!({ "objects": { "job": { "spec": { "template": { "spec": { "containers": [
            { "name": "main", "image": "python:3.12", "command": ["python3"], "securityContext": { "runAsNonRoot": true } },
        ] } } } } } })
        .to_string();
        for mode in MODES {
            let patch = patch(&json!({ "mode": mode }).to_string(), &input).unwrap();
            if *mode == "not-json" {
                assert_eq!(patch, "not json");
                continue;
            }
            let patch: Value = serde_json::from_str(&patch).unwrap();
            assert_eq!(patch.is_object(), *mode != "not-object", "{mode}: {patch}");
        }
        let privileged: Value =
            serde_json::from_str(&patch(r#"{"mode":"privileged"}"#, &input).unwrap()).unwrap();
        let main = &privileged["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(main["image"], "python:3.12");
        assert_eq!(
            main["securityContext"],
            json!({ "runAsNonRoot": true, "privileged": true, "allowPrivilegeEscalation": true })
        );
        assert_eq!(patch("{}", "").unwrap(), "not json");
        assert!(
            patch(r#"{"mode":"nope"}"#, "")
                .unwrap_err()
                .starts_with("unknown mode `nope`")
        );
    }
}
