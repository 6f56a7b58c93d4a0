//! Arrival schedules for open-loop load: when each request is due, as an offset from the run's start.
//!
//! A schedule never depends on how fast the server answers (that is what makes the load open-loop).
//! `Fixed` spaces arrivals exactly `1/rate` apart; `Poisson` draws exponential gaps from a
//! `ChaCha8Rng` seeded by `--seed`, so the same seed always gives the same arrival times.
//! Generator thread `i` of `T` takes arrivals `i, i+T, i+2T, …` of the one global schedule.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Exactly `1/rate` apart.
    Fixed,
    /// Exponential gaps with mean `1/rate` (a Poisson process), seeded.
    Poisson,
}

/// An endless stream of arrival offsets (nanoseconds from start), in increasing order.
#[derive(Debug, Clone)]
pub struct Arrivals {
    kind: Arrival,
    rate: f64,
    index: u64,
    at_ns: f64,
    rng: ChaCha8Rng,
}

impl Arrivals {
    /// `rate` is arrivals per second and must be positive.
    pub fn new(kind: Arrival, rate: f64, seed: u64) -> Arrivals {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Arrivals {
            kind,
            rate,
            index: 0,
            at_ns: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let at = match self.kind {
            // Computed from the index, not accumulated, so no rounding drift over long runs.
            Arrival::Fixed => self.index as f64 * 1e9 / self.rate,
            Arrival::Poisson => {
                let now = self.at_ns;
                // 1 - u is in (0, 1], so ln never sees 0.
                let u: f64 = self.rng.gen();
                self.at_ns += -(1.0 - u).ln() * 1e9 / self.rate;
                now
            }
        };
        self.index += 1;
        Some(Duration::from_nanos(at as u64))
    }
}

/// The arrivals of generator thread `thread` (of `threads`) that fall before `end`.
pub fn thread_slice(
    kind: Arrival,
    rate: f64,
    seed: u64,
    thread: usize,
    threads: usize,
    end: Duration,
) -> impl Iterator<Item = Duration> {
    Arrivals::new(kind, rate, seed)
        .take_while(move |at| *at < end)
        .skip(thread)
        .step_by(threads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_is_exact_and_even() {
        let all: Vec<Duration> =
            thread_slice(Arrival::Fixed, 200.0, 1, 0, 1, Duration::from_secs(3)).collect();
        assert_eq!(all.len(), 600);
        assert_eq!(all[0], Duration::ZERO);
        for w in all.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap.as_nanos().abs_diff(5_000_000) <= 1,
                "uneven gap {gap:?}"
            );
        }
    }

    #[test]
    fn thread_slices_partition_the_schedule() {
        let end = Duration::from_secs(2);
        let all: Vec<Duration> = thread_slice(Arrival::Poisson, 500.0, 9, 0, 1, end).collect();
        let mut merged: Vec<Duration> = (0..3)
            .flat_map(|t| thread_slice(Arrival::Poisson, 500.0, 9, t, 3, end))
            .collect();
        merged.sort();
        assert_eq!(all, merged);
    }

    #[test]
    fn poisson_is_seeded_and_has_the_right_mean() {
        let a: Vec<Duration> = Arrivals::new(Arrival::Poisson, 1000.0, 42)
            .take(1000)
            .collect();
        let b: Vec<Duration> = Arrivals::new(Arrival::Poisson, 1000.0, 42)
            .take(1000)
            .collect();
        let c: Vec<Duration> = Arrivals::new(Arrival::Poisson, 1000.0, 43)
            .take(1000)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 100 000 arrivals at 1000/s span ~100 s; the standard error of the mean gap is 0.3 %.
        let n = 100_000;
        let last = Arrivals::new(Arrival::Poisson, 1000.0, 7).nth(n).unwrap();
        let rate = n as f64 / last.as_secs_f64();
        assert!((rate - 1000.0).abs() < 20.0, "mean rate {rate}");
        // Gaps are not all equal (it is not the fixed schedule in disguise).
        assert!(
            a.windows(2)
                .map(|w| w[1] - w[0])
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 900
        );
    }
}
