//! Retry delays: exponential from `first`, capped at `cap`, jittered, unbounded in count (the
//! callers retry for as long as the work matters and stop on their own signals).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays between retries.
pub fn delays(first: Duration, cap: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_the_first_and_stay_bounded_forever() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        let taken: Vec<Duration> = delays(first, cap).take(200).collect();
        assert_eq!(taken.len(), 200, "never runs out");
        assert!(taken.iter().all(|d| *d >= first), "{taken:?}");
        // Jitter adds at most one more delay's worth on top of the cap.
        assert!(taken.iter().all(|d| *d <= cap * 2), "{taken:?}");
        assert!(
            taken[150..].iter().all(|d| *d >= cap),
            "reaches the cap: {:?}",
            &taken[150..]
        );
    }
}
