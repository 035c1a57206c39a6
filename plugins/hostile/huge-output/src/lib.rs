//! Hostile plugin `huge-output`, a test fixture for the worker's sandbox: NOT an example.
//!
//! Its `decide` returns a `patch` of 16 MiB (or config `{"bytes": n}`): valid JSON, a merge patch
//! that would set one huge annotation, so that only the worker's output cap stands in its way,
//! not a JSON parser. (The memory limit must leave room for it: 16 MiB of patch is well inside
//! the default 64 MiB.)

/// The patch's size when the config names none: 16 MiB.
pub const DEFAULT_BYTES: usize = 16 << 20;

/// The annotation the patch would set.
pub const ANNOTATION: &str = "flext.dev/huge";

/// The size of config `{"bytes": n}`.
pub fn bytes(config: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|config| config.get("bytes")?.as_u64())
        .and_then(|bytes| usize::try_from(bytes).ok())
        .unwrap_or(DEFAULT_BYTES)
}

/// A merge patch of exactly `bytes` bytes (or of its smallest size, when `bytes` is smaller).
pub fn patch(bytes: usize) -> String {
    let head = format!(r#"{{"metadata":{{"annotations":{{"{ANNOTATION}":""#);
    let tail = r#""}}}"#;
    let fill = bytes.saturating_sub(head.len() + tail.len());
    let mut patch = String::with_capacity(head.len() + fill + tail.len());
    patch.push_str(&head);
    patch.extend(std::iter::repeat_n('x', fill));
    patch.push_str(tail);
    patch
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(config: String, _input: String) -> Result<Decision, String> {
            Ok(Decision::Patch(super::patch(super::bytes(&config))))
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_is_valid_json_of_the_size_asked() {
        let patch = patch(DEFAULT_BYTES);
        assert_eq!(patch.len(), 16 * 1024 * 1024);
        let value: serde_json::Value = serde_json::from_str(&patch).unwrap();
        assert_eq!(
            value["metadata"]["annotations"][ANNOTATION]
                .as_str()
                .map(str::len),
            Some(patch.len() - 50)
        );
        assert_eq!(bytes(r#"{"bytes": 1000}"#), 1000);
        assert_eq!(bytes("{}"), DEFAULT_BYTES);
        assert_eq!(
            super::patch(1),
            r#"{"metadata":{"annotations":{"flext.dev/huge":""}}}"#
        );
    }
}
