//! Hostile plugin `wrong-interface`, a test fixture for the worker's sandbox: NOT an example.
//!
//! A valid component, but of another world (`wit/other.wit`, package `flext-test:other@9.9.9`):
//! it exports `decide: func(input: u32) -> u32`, the name the worker looks for with another type.
//! The worker must refuse it at load (the plugin does not implement `flext:policy@0.1.0`'s
//! `policy`), with an error that names the plugin, and never call it.

/// What the component's `decide` computes.
pub fn decide(input: u32) -> u32 {
    input.wrapping_mul(2)
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "wit", world: "other" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(input: u32) -> u32 {
            super::decide(input)
        }
    }

    export!(Plugin);
}
