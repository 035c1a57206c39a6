//! Hostile plugin `endless-loop`, a test fixture for the worker's sandbox: NOT an example.
//!
//! Its `decide` never returns: it counts forever, without calling the host. Only the epoch
//! deadline (the plugin's `timeout:`, 100 ms by default) stops it; the job then fails as
//! `policy_error` (or runs, with `on_error: allow`), and the worker goes on with other jobs.

/// Counts forever; `black_box` keeps the optimizer from proving the loop useless.
pub fn spin() -> ! {
    let mut count: u64 = 0;
    loop {
        count = std::hint::black_box(count.wrapping_add(1));
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::same_length_and_capacity)] // the generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Plugin;

    impl Guest for Plugin {
        fn decide(_config: String, _input: String) -> Result<Decision, String> {
            super::spin()
        }
    }

    export!(Plugin);
}
