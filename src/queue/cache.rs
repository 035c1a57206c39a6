//! Windmill's result cache (`cache_ttl`), as its worker keeps it (windmill-worker `common.rs`:
//! `cached_result_path`, `hash_args`, `save_in_cache`): a `resource` row of type `cache` at
//! `g/results/<sha256>` holding `{"expire": <unix seconds>, "value": <result>}`. The hash covers one
//! byte for the job's kind (its place in Windmill's `JobKind`), the script hash as 8 little-endian
//! bytes (else the path and the raw code), then every arg's name and JSON text in name order.
//! Our hand-back clears `cache_ttl`, so the stock worker that completes the job neither reads nor
//! writes the cache: the worker does both, keyed on the job as Windmill queued it.

use sha2::{Digest as _, Sha256};

use crate::domain::{Job, JobKind};

/// The job's cache path, when it has a `cache_ttl` and a kind Windmill caches.
#[must_use]
pub fn path(job: &Job) -> Option<String> {
    job.context.cache_ttl.filter(|ttl| *ttl > 0)?;
    // Windmill's `JobKind` declaration order: script 0, script_hub 1, preview 2, ...,
    // flowscript 12.
    let kind: u8 = match job.kind {
        JobKind::Script => 0,
        JobKind::Preview => 2,
        JobKind::FlowScript => 12,
        JobKind::Other(_) => return None,
    };
    let mut hash = Sha256::new();
    hash.update([kind]);
    if let Some(id) = job.context.runnable_id {
        hash.update(id.to_le_bytes());
    } else {
        hash.update(job.path.as_deref().unwrap_or_default());
        hash.update(job.code.as_deref().unwrap_or_default());
    }
    for (name, value) in &job.context.cache_args {
        hash.update(name);
        hash.update(value);
    }
    Some(format!("g/results/{}", hex(&hash.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// Windmill's job-log line for a cache hit.
pub const HIT_LINE: &str = "Job skipped because args & path found in cache and not expired";

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(ttl: Option<i32>) -> Job {
        let mut job = crate::testing::job();
        job.kind = JobKind::Script;
        job.context.cache_ttl = ttl;
        job.context.runnable_id = Some(42);
        job.context.cache_args = vec![("x".into(), "1".into())];
        job
    }

    #[test]
    fn the_key_is_the_kind_the_script_hash_and_the_args() {
        let job = cached(Some(60));
        let first = path(&job).unwrap();
        assert!(
            first.starts_with("g/results/") && first.len() == 10 + 64,
            "{first}"
        );
        // A hand-computed digest of [0] ++ 42u64 LE ++ "x" ++ "1".
        let mut expected = Sha256::new();
        expected.update([0u8, 42, 0, 0, 0, 0, 0, 0, 0]);
        expected.update(b"x1");
        let hex = hex(&expected.finalize());
        assert_eq!(first, format!("g/results/{hex}"));
        let mut other_args = job.clone();
        other_args.context.cache_args = vec![("x".into(), "2".into())];
        assert_ne!(path(&other_args), Some(first.clone()));
        let mut preview = job.clone();
        preview.kind = JobKind::Preview;
        assert_ne!(path(&preview), Some(first));
    }

    #[test]
    fn no_ttl_no_cache() {
        assert_eq!(path(&cached(None)), None);
        assert_eq!(path(&cached(Some(0))), None);
    }
}
