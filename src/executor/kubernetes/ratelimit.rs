//! A client-side token bucket for Kubernetes API requests: `qps` on average, `burst` at once. It
//! also counts the requests it let through (for `scripts/bench k8s`) and how long each waited
//! (`flext_kube_rate_limiter_wait_seconds`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::KubeMetrics;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Waits before each request so that the worker stays within its API budget.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
    requests: AtomicU64,
    metrics: KubeMetrics,
}

impl RateLimiter {
    /// A limiter; `qps` 0 means unlimited.
    pub fn new(qps: u32, burst: u32, metrics: KubeMetrics) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: f64::from(qps),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
            requests: AtomicU64::new(0),
            metrics,
        }
    }

    /// How many requests [`acquire`](Self::acquire) has let through so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Takes one token, sleeping until one is available.
    pub async fn acquire(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.qps <= 0.0 {
            self.metrics.limiter_waited(Duration::ZERO);
            return;
        }
        let wait = {
            let mut bucket = self
                .bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(bucket.last).as_secs_f64() * self.qps;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.last = now;
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-bucket.tokens / self.qps)
            }
        };
        self.metrics.limiter_waited(wait);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_holds_the_rate() {
        let limiter = RateLimiter::new(10, 5, KubeMetrics::default());
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.99..1.1).contains(&elapsed),
            "10 more at 10 qps take about 1 s, took {elapsed}"
        );
        assert_eq!(limiter.requests(), 15, "every request is counted");
    }
}
