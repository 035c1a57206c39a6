//! The worker's Prometheus metrics: names and units by Prometheus conventions, labels bounded
//! (tag, outcome, category — never a job id). Encoded by `prometheus-client` for `/metrics`.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A job's tag.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TagLabels {
    /// The Windmill tag.
    pub tag: String,
}

/// How a handed-back job ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompletedLabels {
    /// The Windmill tag.
    pub tag: String,
    /// `success`, `failure` or `canceled`.
    pub outcome: String,
    /// The failure category (`user_error`, `oom_killed`, ...), empty unless a failure.
    pub category: String,
}

/// Run times from a tenth of a second to about two hours.
fn run_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.0, 17)
}

/// Every metric of one worker process.
pub struct Metrics {
    registry: Registry,
    claimed: Family<TagLabels, Counter>,
    completed: Family<CompletedLabels, Counter>,
    run_seconds: Family<TagLabels, Histogram>,
    in_flight: Gauge,
    permits_free: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flext");
        let claimed = Family::<TagLabels, Counter>::default();
        registry.register(
            "jobs_claimed",
            "Jobs this worker took: claimed from Windmill's queue, or adopted at start",
            claimed.clone(),
        );
        let completed = Family::<CompletedLabels, Counter>::default();
        registry.register(
            "jobs_completed",
            "Jobs handed back to Windmill, by outcome and failure category",
            completed.clone(),
        );
        let run_seconds =
            Family::<TagLabels, Histogram>::new_with_constructor(|| Histogram::new(run_buckets()));
        registry.register_with_unit(
            "job_run",
            "Claim to outcome of each handed-back job",
            Unit::Seconds,
            run_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "jobs_in_flight",
            "Jobs this worker runs now",
            in_flight.clone(),
        );
        let permits_free = Gauge::default();
        registry.register(
            "permits_free",
            "Free concurrency permits (worker.concurrency minus jobs in flight)",
            permits_free.clone(),
        );
        Self {
            registry,
            claimed,
            completed,
            run_seconds,
            in_flight,
            permits_free,
        }
    }
}

impl Metrics {
    /// A job was claimed.
    pub fn claimed(&self, tag: &str) {
        self.claimed
            .get_or_create(&TagLabels {
                tag: tag.to_owned(),
            })
            .inc();
    }

    /// A job was handed back after `seconds`.
    pub fn completed(&self, tag: &str, outcome: &str, category: Option<&str>, seconds: f64) {
        self.completed
            .get_or_create(&CompletedLabels {
                tag: tag.to_owned(),
                outcome: outcome.to_owned(),
                category: category.unwrap_or_default().to_owned(),
            })
            .inc();
        self.run_seconds
            .get_or_create(&TagLabels {
                tag: tag.to_owned(),
            })
            .observe(seconds);
    }

    /// The Prometheus text format, with the gauges set to `running` of `concurrency` first.
    #[must_use]
    pub fn encode(&self, running: usize, concurrency: usize) -> String {
        self.in_flight
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.permits_free
            .set(i64::try_from(concurrency.saturating_sub(running)).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_their_labels_and_units_follow_the_conventions() {
        let metrics = Metrics::default();
        metrics.claimed("k8s");
        metrics.completed("k8s", "failure", Some("oom_killed"), 1.5);
        let text = metrics.encode(3, 8);
        assert!(
            text.contains("flext_jobs_claimed_total{tag=\"k8s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "flext_jobs_completed_total{tag=\"k8s\",outcome=\"failure\",category=\"oom_killed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("flext_job_run_seconds_count{tag=\"k8s\"} 1"),
            "{text}"
        );
        assert!(text.contains("flext_jobs_in_flight 3"), "{text}");
        assert!(text.contains("flext_permits_free 5"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
