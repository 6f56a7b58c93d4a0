//! Group-commit statistics: how long commits wait, how many share one sync, how long syncs take.
//!
//! Each core's write-ahead log ([`super::wal`]) writes its [`CommitCounters`] (atomics, written by
//! that core only) and any thread reads them without a lock as a [`CommitStats`] snapshot, merged
//! over cores for `/metrics`. This module owns only the numbers, not the commit path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of the latency histograms: bucket `b` counts values whose bit length is `b`, i.e.
/// `0` for 0 and `[2^(b-1), 2^b - 1]` for `b >= 1`. 40 buckets reach 2^39 µs (6 days).
pub const LATENCY_BUCKETS: usize = 40;

/// Buckets of the group-size histogram, same bit-length scheme (the last one reaches 2^15).
pub const GROUP_BUCKETS: usize = 16;

/// A snapshot of one core's log statistics (or several, merged with [`CommitStats::merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Requests answered, successfully or not.
    pub commits: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Groups written, i.e. log writes + syncs (or sync-less rounds when not durable).
    pub groups: u64,
    /// Sum of commit latencies (enqueue to answer).
    pub latency_us_sum: u64,
    /// Largest commit latency.
    pub latency_us_max: u64,
    /// Commit latency histogram, see [`LATENCY_BUCKETS`].
    pub latency_us_buckets: [u64; LATENCY_BUCKETS],
    /// Sum of group write + sync durations.
    pub flush_us_sum: u64,
    /// Largest group write + sync duration.
    pub flush_us_max: u64,
    /// Largest group.
    pub group_size_max: u64,
    /// Group size histogram, see [`GROUP_BUCKETS`].
    pub group_size_buckets: [u64; GROUP_BUCKETS],
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            commits: 0,
            failed: 0,
            groups: 0,
            latency_us_sum: 0,
            latency_us_max: 0,
            latency_us_buckets: [0; LATENCY_BUCKETS],
            flush_us_sum: 0,
            flush_us_max: 0,
            group_size_max: 0,
            group_size_buckets: [0; GROUP_BUCKETS],
        }
    }
}

impl CommitStats {
    /// Adds another core's numbers into this one.
    pub fn merge(&mut self, other: &CommitStats) {
        self.commits += other.commits;
        self.failed += other.failed;
        self.groups += other.groups;
        self.latency_us_sum += other.latency_us_sum;
        self.latency_us_max = self.latency_us_max.max(other.latency_us_max);
        for (a, b) in self
            .latency_us_buckets
            .iter_mut()
            .zip(&other.latency_us_buckets)
        {
            *a += b;
        }
        self.flush_us_sum += other.flush_us_sum;
        self.flush_us_max = self.flush_us_max.max(other.flush_us_max);
        self.group_size_max = self.group_size_max.max(other.group_size_max);
        for (a, b) in self
            .group_size_buckets
            .iter_mut()
            .zip(&other.group_size_buckets)
        {
            *a += b;
        }
    }

    /// Upper bound (inclusive) of latency bucket `b`, for Prometheus `le` labels.
    pub fn bucket_upper_us(b: usize) -> u64 {
        if b == 0 {
            0
        } else if b >= 64 {
            u64::MAX
        } else {
            (1u64 << b) - 1
        }
    }

    /// An upper bound of the `q` quantile of commit latency (`q` in 0..=1): the top of the bucket
    /// that holds it, so within a factor of two of the exact value; never above the max.
    pub fn latency_us_quantile(&self, q: f64) -> u64 {
        let total: u64 = self.latency_us_buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in self.latency_us_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::bucket_upper_us(b).min(self.latency_us_max);
            }
        }
        self.latency_us_max
    }

    /// Mean requests per group.
    pub fn mean_group_size(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.commits as f64 / self.groups as f64
        }
    }
}

/// Bit length: the bucket of `v` in the histograms, clamped to the last bucket.
fn bucket_of(v: u64, buckets: usize) -> usize {
    ((64 - v.leading_zeros()) as usize).min(buckets - 1)
}

/// The live counters behind [`CommitStats`]. Only the owning core's log writes them.
pub struct CommitCounters {
    commits: AtomicU64,
    failed: AtomicU64,
    groups: AtomicU64,
    latency_us_sum: AtomicU64,
    latency_us_max: AtomicU64,
    latency_us_buckets: [AtomicU64; LATENCY_BUCKETS],
    flush_us_sum: AtomicU64,
    flush_us_max: AtomicU64,
    group_size_max: AtomicU64,
    group_size_buckets: [AtomicU64; GROUP_BUCKETS],
}

impl Default for CommitCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitCounters {
    /// All zero.
    pub fn new() -> CommitCounters {
        CommitCounters {
            commits: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            latency_us_max: AtomicU64::new(0),
            latency_us_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            flush_us_sum: AtomicU64::new(0),
            flush_us_max: AtomicU64::new(0),
            group_size_max: AtomicU64::new(0),
            group_size_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn record_commit(&self, latency_us: u64, ok: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_us_sum.fetch_add(latency_us, Ordering::Relaxed);
        self.latency_us_max.fetch_max(latency_us, Ordering::Relaxed);
        self.latency_us_buckets[bucket_of(latency_us, LATENCY_BUCKETS)]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_group(&self, size: u64, flush_us: u64) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.flush_us_sum.fetch_add(flush_us, Ordering::Relaxed);
        self.flush_us_max.fetch_max(flush_us, Ordering::Relaxed);
        self.group_size_max.fetch_max(size, Ordering::Relaxed);
        self.group_size_buckets[bucket_of(size, GROUP_BUCKETS)].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot, readable from any thread.
    pub fn snapshot(&self) -> CommitStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CommitStats {
            commits: load(&self.commits),
            failed: load(&self.failed),
            groups: load(&self.groups),
            latency_us_sum: load(&self.latency_us_sum),
            latency_us_max: load(&self.latency_us_max),
            latency_us_buckets: std::array::from_fn(|i| load(&self.latency_us_buckets[i])),
            flush_us_sum: load(&self.flush_us_sum),
            flush_us_max: load(&self.flush_us_max),
            group_size_max: load(&self.group_size_max),
            group_size_buckets: std::array::from_fn(|i| load(&self.group_size_buckets[i])),
        }
    }
}
