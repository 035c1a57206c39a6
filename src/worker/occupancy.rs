//! Occupancy as Windmill's Workers page and autoscaling read it (`worker_ping.occupancy_rate`,
//! `_15s`, `_5m`, `_30m`): the share of the worker's capacity spent running jobs, 0..1, since start
//! and over the last 15 s, 5 min and 30 min. A stock worker runs one job at a time; ours runs up to
//! `worker.concurrency`, so busy time is counted in job-seconds and divided by the slots. As in
//! Windmill (`OccupancyMetrics::update_occupancy_metrics`), a window is reported only once the
//! worker has run that long, and its rate is taken from the oldest sample inside the window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const WINDOWS: [Duration; 3] = [
    Duration::from_secs(15),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
];

/// The rates of one ping.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Rates {
    /// Since the worker started.
    pub(super) total: f32,
    /// Over the last 15 s, 5 min and 30 min (`None` until the worker has run that long).
    pub(super) windows: [Option<f32>; 3],
}

/// Samples of cumulative busy time, kept for the longest window.
#[derive(Debug)]
pub(super) struct Occupancy {
    started: Instant,
    slots: u32,
    samples: VecDeque<(Instant, Duration)>,
}

impl Occupancy {
    pub(super) fn new(started: Instant, slots: usize) -> Self {
        Self {
            started,
            slots: u32::try_from(slots.max(1)).unwrap_or(u32::MAX),
            samples: VecDeque::new(),
        }
    }

    /// Records that `busy` job-time was spent in total by `now`, and returns the rates.
    pub(super) fn record(&mut self, now: Instant, busy: Duration) -> Rates {
        let longest = WINDOWS[WINDOWS.len() - 1];
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > longest)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, busy));
        let up = now.duration_since(self.started);
        let mut rates = Rates {
            total: self.rate(busy, up),
            windows: [None; 3],
        };
        for (rate, window) in rates.windows.iter_mut().zip(WINDOWS) {
            if up < window {
                continue;
            }
            let oldest = self
                .samples
                .iter()
                .find(|(at, _)| now.duration_since(*at) <= window);
            if let Some((at, then)) = oldest {
                let span = now.duration_since(*at);
                *rate = Some(if span.is_zero() {
                    rates.total
                } else {
                    self.rate(busy.saturating_sub(*then), span)
                });
            }
        }
        rates
    }

    fn rate(&self, busy: Duration, span: Duration) -> f32 {
        if span.is_zero() {
            return 0.0;
        }
        let capacity = span.as_secs_f64() * f64::from(self.slots);
        #[allow(clippy::cast_possible_truncation)] // a ratio in 0..1
        let rate = (busy.as_secs_f64() / capacity).clamp(0.0, 1.0) as f32;
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn half_the_slots_busy_all_the_time_is_an_occupancy_of_one_half() {
        let start = Instant::now();
        let mut occupancy = Occupancy::new(start, 4);
        let mut rates = Rates::default();
        // Two of four slots busy for 20 minutes, sampled every 5 s.
        for tick in 0..=240_u32 {
            rates = occupancy.record(start + tick * 5 * S, 2 * tick * 5 * S);
        }
        assert!((rates.total - 0.5).abs() < 1e-6, "{rates:?}");
        assert!((rates.windows[0].unwrap() - 0.5).abs() < 1e-6, "{rates:?}");
        assert!((rates.windows[1].unwrap() - 0.5).abs() < 1e-6, "{rates:?}");
        assert_eq!(rates.windows[2], None, "30 min not reached yet");
    }

    #[test]
    fn windows_follow_recent_load_and_stay_empty_until_the_worker_ran_that_long() {
        let start = Instant::now();
        let mut occupancy = Occupancy::new(start, 1);
        assert_eq!(
            occupancy.record(start + 10 * S, Duration::ZERO).windows,
            [None; 3]
        );
        // Idle for 10 minutes (a ping every 5 s), then fully busy for the last 20 s.
        for tick in 1..=120_u32 {
            occupancy.record(start + tick * 5 * S, Duration::ZERO);
        }
        occupancy.record(start + 605 * S, 5 * S);
        occupancy.record(start + 610 * S, 10 * S);
        occupancy.record(start + 615 * S, 15 * S);
        let rates = occupancy.record(start + 620 * S, 20 * S);
        assert!((rates.windows[0].unwrap() - 1.0).abs() < 1e-6, "{rates:?}");
        let five_minutes = rates.windows[1].unwrap();
        assert!(five_minutes < 0.1, "{rates:?}");
        assert!(rates.total < 0.05, "{rates:?}");
    }
}
