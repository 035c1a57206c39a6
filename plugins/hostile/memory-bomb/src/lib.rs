//! Hostile plugin `memory-bomb`, a test fixture for the worker's sandbox: NOT an example.
//!
//! Its `decide` allocates memory in chunks (1 MiB, or config `{"chunk": bytes}`), writes to every
//! page of each so none is left untouched, and keeps them all, forever. The memory limit (the
//! plugin's `memory:`, 64 MiB by default) makes `memory.grow` fail; Rust's allocation-failure
//! handler then aborts, which is an `unreachable` trap, and the job fails as `policy_error`. The
//! worker's own memory is never at stake.

use std::hint::black_box;

/// The chunk size when the config names none.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// The chunk size of config `{"chunk": bytes}` (at least one page).
pub fn chunk(config: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|config| config.get("chunk")?.as_u64())
        .and_then(|chunk| usize::try_from(chunk).ok())
        .map_or(DEFAULT_CHUNK, |chunk| chunk.max(4096))
}

/// Allocates `chunk` bytes at a time, touching each page, and never frees any.
pub fn exhaust(chunk: usize) -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::<u8>::with_capacity(chunk);
        // Write every page (`with_capacity` alone would leave fresh memory untouched).
        block.resize(chunk, 0xa5);
        for page in block.iter_mut().step_by(4096) {
            *page = black_box(0x5a);
        }
        hoard.push(black_box(block));
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(config: String, _input: String) -> Result<Decision, String> {
            super::exhaust(super::chunk(&config))
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chunk_comes_from_the_config() {
        assert_eq!(super::chunk(r#"{"chunk": 65536}"#), 65536);
        assert_eq!(super::chunk(r#"{"chunk": 1}"#), 4096);
        assert_eq!(super::chunk("null"), super::DEFAULT_CHUNK);
        assert_eq!(super::chunk("not json"), super::DEFAULT_CHUNK);
    }
}
