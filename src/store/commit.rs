//! Group commit: one committer thread per core turns many durable writes into one fsync.
//!
//! A core hands its [`Batch`] to its [`Committer`] and awaits the answer; the event loop never
//! blocks. The committer thread waits for the first request, takes every request already queued
//! behind it (up to `max_batch`), applies each batch atomically, flushes sled once for the whole
//! group and then answers every waiter. Under load a flush serves many requests, so durability costs
//! a share of one fsync per request instead of one fsync each.
//!
//! Statistics (commit latency from enqueue to answer, group sizes, flush time) are atomics written
//! only by the committer thread and read from any thread without a lock: see [`CommitStats`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::channel::oneshot;

use super::{Batch, Store, StoreError};

/// Queue depth per committer, in groups: up to `QUEUE_GROUPS * max_batch` requests may wait. Past
/// that the disk is not keeping up and [`Committer::commit`] fails fast with
/// [`StoreError::Overloaded`] instead of queueing without bound.
pub const QUEUE_GROUPS: usize = 8;

/// Buckets of the latency histograms: bucket `b` counts values whose bit length is `b`, i.e.
/// `0` for 0 and `[2^(b-1), 2^b - 1]` for `b >= 1`. 40 buckets reach 2^39 µs (6 days).
pub const LATENCY_BUCKETS: usize = 40;

/// Buckets of the group-size histogram, same bit-length scheme (the last one reaches 2^15).
pub const GROUP_BUCKETS: usize = 16;

/// A snapshot of one committer's statistics (or several, merged with [`CommitStats::merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Requests answered, successfully or not.
    pub commits: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Groups written, i.e. flushes (or flush-less rounds when not durable).
    pub groups: u64,
    /// Sum of commit latencies (enqueue to answer).
    pub latency_us_sum: u64,
    /// Largest commit latency.
    pub latency_us_max: u64,
    /// Commit latency histogram, see [`LATENCY_BUCKETS`].
    pub latency_us_buckets: [u64; LATENCY_BUCKETS],
    /// Sum of flush durations.
    pub flush_us_sum: u64,
    /// Largest flush duration.
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
    /// Adds another committer's numbers (e.g. every core's) into this one.
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

/// The live counters behind [`CommitStats`]. Only the committer thread writes them.
struct Counters {
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

impl Counters {
    fn new() -> Counters {
        Counters {
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

    fn record_commit(&self, latency_us: u64, ok: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_us_sum.fetch_add(latency_us, Ordering::Relaxed);
        self.latency_us_max.fetch_max(latency_us, Ordering::Relaxed);
        self.latency_us_buckets[bucket_of(latency_us, LATENCY_BUCKETS)]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn record_group(&self, size: u64, flush_us: u64) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.flush_us_sum.fetch_add(flush_us, Ordering::Relaxed);
        self.flush_us_max.fetch_max(flush_us, Ordering::Relaxed);
        self.group_size_max.fetch_max(size, Ordering::Relaxed);
        self.group_size_buckets[bucket_of(size, GROUP_BUCKETS)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CommitStats {
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

/// One queued commit.
struct Request {
    batch: Batch,
    enqueued: Instant,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

enum Msg {
    Commit(Request),
    /// Runs a closure on the committer thread before the group it arrives with is applied: tests
    /// use it to stall or crash the thread. Nothing else sends it.
    #[cfg_attr(not(test), allow(dead_code))]
    Hook(Box<dyn FnOnce() + Send>),
}

/// A core's handle on its committer thread. Dropping it stops the thread after every queued
/// request has been answered, and joins it.
pub struct Committer {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Set by [`Committer::close`]: refuse new commits.
    closed: AtomicBool,
    /// Set by the thread if it panicked: it answers everything with `Closed` from then on.
    broken: Arc<AtomicBool>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the committer thread `gavel-commit-{core}`. Groups hold at most `max_batch`
    /// requests (at least 1). Whether a group is flushed comes from `store.options().durable`.
    pub fn start(
        store: Arc<Store>,
        core: usize,
        max_batch: usize,
    ) -> Result<Committer, StoreError> {
        let max_batch = max_batch.max(1);
        let (tx, rx) = crossbeam_channel::bounded(max_batch.saturating_mul(QUEUE_GROUPS));
        let counters = Arc::new(Counters::new());
        let broken = Arc::new(AtomicBool::new(false));
        let thread = {
            let counters = Arc::clone(&counters);
            let broken = Arc::clone(&broken);
            std::thread::Builder::new()
                .name(format!("gavel-commit-{core}"))
                .spawn(move || run(&store, &rx, max_batch, &counters, &broken))
                .map_err(|e| StoreError::Io(sled::Error::Io(e)))?
        };
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            closed: AtomicBool::new(false),
            broken,
        })
    }

    /// Queues `batch` and resolves once it is applied and durable. Never blocks the calling
    /// (event-loop) thread: the sled work and the fsync happen on the committer thread, and the
    /// answer comes back through a oneshot channel. Fails fast with [`StoreError::Overloaded`]
    /// when the queue is full and with [`StoreError::Closed`] once the committer is closed or
    /// its thread is gone; it never hangs.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) || self.broken.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let Some(tx) = &self.tx else {
            return Err(StoreError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        let request = Request {
            batch,
            enqueued: Instant::now(),
            reply,
        };
        match tx.try_send(Msg::Commit(request)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        // A dropped sender means the thread died with the request: report it, don't hang.
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Refuses every later [`Committer::commit`] with [`StoreError::Closed`]. Requests already
    /// queued are still committed; the thread stops when the committer is dropped.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// A snapshot of the statistics, readable from any thread.
    pub fn stats(&self) -> CommitStats {
        self.counters.snapshot()
    }

    /// Number of requests waiting for the thread.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Runs `hook` on the committer thread, as if it were part of the next group (test hook).
    #[cfg(test)]
    pub(crate) fn run_on_thread(&self, hook: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Hook(Box::new(hook)));
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
        // Disconnecting lets the thread drain the queue and exit.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("store committer thread panicked");
            }
        }
    }
}

/// The committer thread's loop: one group per iteration until every sender is gone.
fn run(
    store: &Store,
    rx: &Receiver<Msg>,
    max_batch: usize,
    counters: &Counters,
    broken: &AtomicBool,
) {
    let durable = store.options().durable;
    let mut group: Vec<Request> = Vec::with_capacity(max_batch);
    let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(max_batch);
    // recv() returns queued messages before it reports the disconnection, so nothing queued is
    // dropped at shutdown.
    while let Ok(first) = rx.recv() {
        let mut hooks: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Commit(request) => group.push(request),
                Msg::Hook(hook) => hooks.push(hook),
            }
            next = if group.len() < max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for hook in hooks {
                hook();
            }
            commit_group(store, durable, &group, &mut results, counters);
        }));
        if outcome.is_err() {
            tracing::error!("store committer panicked; it refuses every further commit");
            // Dropping the requests drops their reply senders: each waiter sees Closed.
            group.clear();
            results.clear();
            broken.store(true, Ordering::Release);
            while let Ok(msg) = rx.recv() {
                if let Msg::Commit(request) = msg {
                    let _ = request.reply.send(Err(StoreError::Closed));
                }
            }
            return;
        }
        for (request, result) in group.drain(..).zip(results.drain(..)) {
            let latency_us = request.enqueued.elapsed().as_micros() as u64;
            counters.record_commit(latency_us, result.is_ok());
            // The waiter may have gone away (its task was cancelled); the write stands anyway.
            let _ = request.reply.send(result);
        }
    }
}

/// Applies every batch of the group (each atomically, independently of the others), then flushes
/// once. `results[i]` is the answer for `group[i]`.
fn commit_group(
    store: &Store,
    durable: bool,
    group: &[Request],
    results: &mut Vec<Result<(), StoreError>>,
    counters: &Counters,
) {
    results.clear();
    results.extend(group.iter().map(|r| store.apply(&r.batch)));
    let started = Instant::now();
    if durable && results.iter().any(Result::is_ok) {
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "store flush failed; failing the group");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
    }
    counters.record_group(group.len() as u64, started.elapsed().as_micros() as u64);
}
