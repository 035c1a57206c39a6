//! `image-registry`: an example policy plugin for flext-kubernetes, meant to be copied.
//!
//! It refuses every Job whose containers or init containers run an image that does not come from
//! an allowed place, given as prefixes of the image reference (a registry with its `/`, a
//! repository, or a local image name with its `:`).
//!
//! Config:
//!
//! ```yaml
//! plugins:
//!   - name: image-registry
//!     path: /etc/flext/plugins/image_registry.wasm
//!     config:
//!       allowed: ["registry.example.com/", "flext-kubernetes:"]
//! ```
//!
//! Decision:
//! - every image of `spec.template.spec.containers` and `initContainers` starts with one of the
//!   `allowed` prefixes: `allow`;
//! - otherwise `deny`, naming each image that does not, its container, and the allowed prefixes.
//!
//! An invalid config (`allowed` missing, empty, or not a list of strings), or an input without
//! the Job's `spec.template.spec.containers`, is an error. A container without an image is
//! refused.
//!
//! The decision logic is plain Rust ([`decide`]), tested natively; the component glue at the
//! bottom of this file (wasm builds only) converts its result to the WIT `decision`.

use serde_json::Value;

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
    let allowed = config
        .get("allowed")
        .and_then(Value::as_array)
        .ok_or(
            "config has no `allowed` (a list of image prefixes, e.g. \"registry.example.com/\")",
        )?
        .iter()
        .map(|prefix| {
            prefix
                .as_str()
                .ok_or("config: each of `allowed` must be a string")
        })
        .collect::<Result<Vec<_>, _>>()?;
    if allowed.is_empty() {
        return Err("config: `allowed` is empty: no image could run".into());
    }
    let pod = input
        .pointer("/objects/job/spec/template/spec")
        .ok_or("input has no objects.job.spec.template.spec")?;
    let containers = pod
        .get("containers")
        .and_then(Value::as_array)
        .ok_or("input has no objects.job.spec.template.spec.containers (a list)")?;
    let init_containers = pod
        .get("initContainers")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);

    let mut refused = Vec::new();
    for (what, container) in init_containers
        .iter()
        .map(|c| ("init container", c))
        .chain(containers.iter().map(|c| ("container", c)))
    {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        match container.get("image").and_then(Value::as_str) {
            Some(image) if allowed.iter().any(|prefix| image.starts_with(prefix)) => {}
            Some(image) => refused.push(format!("image `{image}` of {what} `{name}`")),
            None => refused.push(format!("{what} `{name}`, which has no image,")),
        }
    }
    if refused.is_empty() {
        return Ok(Decision::Allow);
    }
    let allowed = allowed
        .iter()
        .map(|prefix| format!("`{prefix}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Decision::Deny(format!(
        "{} not from an allowed registry: images must begin with one of {allowed}",
        if refused.len() == 1 {
            format!("{} is", refused[0])
        } else {
            format!("{} are", refused.join(" and "))
        }
    )))
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
    use serde_json::json;

    fn config() -> Value {
        json!({ "allowed": ["registry.example.com/", "flext-kubernetes:"] })
    }

    #[allow(clippy::needless_pass_by_value)] // json! literals read best passed by value
    fn input(containers: Value, init_containers: Value) -> Value {
        json!({
            "plugin": "image-registry",
            "job": { "workspace": "finance", "tag": "k8s" },
            "objects": { "job": { "spec": { "template": { "spec": {
                "containers": containers,
                "initContainers": init_containers,
            } } } } },
        })
    }

    #[test]
    fn allowed_images_are_allowed() {
        let input = input(
            json!([{ "name": "main", "image": "registry.example.com/python:3.12" }]),
            json!([{ "name": "fetch", "image": "flext-kubernetes:0.1.0" }]),
        );
        assert_eq!(decide_value(&config(), &input).unwrap(), Decision::Allow);
        // initContainers may be absent.
        let input = json!({ "objects": { "job": { "spec": { "template": { "spec": {
            "containers": [{ "name": "main", "image": "registry.example.com/bun:1" }],
        } } } } } });
        assert_eq!(decide_value(&config(), &input).unwrap(), Decision::Allow);
    }

    #[test]
    fn a_denied_image_is_named_with_its_container_and_the_allowed_prefixes() {
        let input = input(
            json!([{ "name": "main", "image": "docker.io/library/python:3.12" }]),
            json!([{ "name": "fetch", "image": "flext-kubernetes:0.1.0" }]),
        );
        assert_eq!(
            decide_value(&config(), &input).unwrap(),
            Decision::Deny(
                "image `docker.io/library/python:3.12` of container `main` is not from an allowed \
                 registry: images must begin with one of `registry.example.com/`, `flext-kubernetes:`"
                    .into()
            )
        );
    }

    #[test]
    fn every_denied_image_is_named_init_containers_too() {
        let input = input(
            json!([{ "name": "main", "image": "registry.example.com.evil.io/python" }, { "name": "side" }]),
            json!([{ "name": "fetch", "image": "flext-kubernetes-evil:1" }]),
        );
        let Decision::Deny(reason) = decide_value(&config(), &input).unwrap() else {
            panic!("not denied");
        };
        assert!(
            reason.starts_with("image `flext-kubernetes-evil:1` of init container `fetch` and "),
            "{reason}"
        );
        assert!(
            reason.contains("image `registry.example.com.evil.io/python` of container `main` and "),
            "{reason}"
        );
        assert!(
            reason.contains("container `side`, which has no image, are not from"),
            "{reason}"
        );
    }

    #[test]
    fn missing_fields_are_errors_that_name_them() {
        assert_eq!(
            decide_value(&config(), &json!({})).unwrap_err(),
            "input has no objects.job.spec.template.spec"
        );
        assert_eq!(
            decide_value(&config(), &input(Value::Null, Value::Null)).unwrap_err(),
            "input has no objects.job.spec.template.spec.containers (a list)"
        );
    }

    #[test]
    fn a_bad_config_is_an_error() {
        let input = input(json!([{ "name": "main", "image": "x" }]), Value::Null);
        for (config, says) in [
            (json!(null), "no `allowed`"),
            (
                json!({ "allowed": "registry.example.com/" }),
                "no `allowed`",
            ),
            (json!({ "allowed": [] }), "is empty"),
            (json!({ "allowed": [null] }), "must be a string"),
        ] {
            let err = decide_value(&config, &input).unwrap_err();
            assert!(err.contains(says), "{config}: {err}");
        }
        assert!(
            decide("{}", "[")
                .unwrap_err()
                .starts_with("input is not JSON")
        );
        assert!(decide("{}", "{}").unwrap_err().starts_with("config has no"));
    }
}
