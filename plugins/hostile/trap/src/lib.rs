//! Hostile plugin `trap`, a test fixture for the worker's sandbox: NOT an example.
//!
//! Its `decide` traps instead of returning, the way config `{"mode": ...}` says:
//!
//! | mode | what happens in the component |
//! | --- | --- |
//! | `panic` (the default) | `panic!`: the message goes to WASI stderr, then `abort` (an `unreachable` trap) |
//! | `abort` | `std::process::abort()`: an `unreachable` trap, nothing written |
//! | `unreachable` | the wasm `unreachable` instruction itself |
//! | `stack-overflow` | unbounded recursion: the guest's stack runs out (an out-of-bounds or stack-exhaustion trap) |
//!
//! Each must fail the job as `policy_error` (or let it run with `on_error: allow`), and leave the
//! worker as it was. An unknown mode is returned as an error, which is a plugin failure too.

use std::hint::black_box;

/// Traps as `config`'s mode says; returns only the error for an unknown mode.
///
/// # Panics
///
/// In mode `panic`, which is the point.
pub fn trap(config: &str) -> String {
    let config: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    match config
        .get("mode")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("panic")
    {
        "panic" => panic!("the hostile plugin `trap` panics, as asked"),
        "abort" => std::process::abort(),
        "unreachable" => unreachable_instruction(),
        "stack-overflow" => {
            let depth = recurse(black_box(0));
            format!("recursion ended at depth {depth}, which it should not")
        }
        other => format!("unknown mode `{other}`: panic, abort, unreachable or stack-overflow"),
    }
}

#[cfg(target_arch = "wasm32")]
fn unreachable_instruction() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn unreachable_instruction() -> ! {
    std::process::abort()
}

/// Recurses until the stack runs out, each frame holding 1 KiB the optimizer cannot drop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 128]);
    recurse(frame[0] + 1).wrapping_add(frame[127])
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(config: String, _input: String) -> Result<Decision, String> {
            Err(super::trap(&config))
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_mode_is_an_error() {
        assert!(super::trap(r#"{"mode": "segfault"}"#).starts_with("unknown mode `segfault`"));
    }

    #[test]
    #[should_panic(expected = "panics, as asked")]
    fn the_default_mode_panics() {
        super::trap("{}");
    }
}
