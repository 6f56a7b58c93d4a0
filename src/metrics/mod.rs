//! Metrics: per-core recording, merging on read, Prometheus and JSON rendering.
//!
//! # What this module owns
//! - [`CoreMetrics`]: one core's HDR histograms and counters. Only its own core writes it (plain
//!   `Cell`/`RefCell` interior mutability: no atomics, no locks, nothing shared between threads).
//! - [`Snapshot`]: a `Send + Clone` copy of one core's metrics, taken on that core with
//!   [`CoreMetrics::snapshot`], carried to the core answering a scrape and combined there with
//!   [`Snapshot::merge`]. No histogram is ever written by two threads: merging happens on read.
//! - [`cpu`]: process and per-thread-group CPU time, read from `/proc` by a sampler thread (never
//!   on a core) and kept in atomics for the scrape.
//! - Rendering, as pure functions of a merged snapshot: [`render_prometheus`] (Prometheus text
//!   exposition 0.0.4, `GET /metrics`) and [`latency_json`] (exact HDR percentiles plus the serialized
//!   histograms, `GET /v1/metrics/latency`).
//!
//! # What it does not own
//! It does not decide what to record or when: handlers and the auction engine call the `record_*`
//! methods. It does not read other modules' state either: per-core gauges and store counters are
//! passed to the renderer as plain numbers ([`CoreCounters`], [`StoreCounters`]) by the caller.
//!
//! # Windows
//! Every histogram series has two views: since start, and the last 60 s. The last-60 s view is a
//! ring of [`WINDOW_SLOTS`] slots of [`SLOT_SECS`] seconds each, rotated lazily (on record and on
//! snapshot) from a monotonic clock; the view is the merge of the slots whose start lies within the
//! last [`WINDOW_SECS`] seconds (so it covers between 50 and 60 s of data).
//!
//! # Memory
//! Bounded and fixed per series: one since-start histogram plus at most [`WINDOW_SLOTS`] slot
//! histograms, each allocated on first use and then reused. A histogram with the bounds below
//! ([`HIST_LOWEST_US`]..[`HIST_HIGHEST_US`], [`HIST_SIGFIG`] digits) holds about 17k `u64` counts
//! (~136 KiB). Series: 6 fixed plus one per buyer plus two per seller. Per-buyer series are keyed by tenant and
//! buyer id ([`BuyerKey`]: ids are scoped by tenant, so a sandbox and a production buyer with one
//! id are two series, labelled `tenant` and `buyer`) in a slot map that grows when a buyer first
//! appears (a buyer added at runtime gets its series then), up to [`MAX_BUYER_SERIES`]; a buyer removed at runtime keeps its series (and its last
//! counts) until restart, and ids past the limit are not recorded. The endpoint × status counter map holds at most
//! [`MAX_ENDPOINT_STATUS_KEYS`] entries plus one overflow entry: keys past the limit are counted
//! under ([`OVERFLOW_ENDPOINT`], 0).
//!
//! Per-seller series ([`SellerKey`]: tenant and seller id) are two per seller, `ping_duration` and
//! `post_duration`, kept only for the seller's own latency report (never in Prometheus output:
//! that would be one label value per seller). They live in a slot map like the buyers', created
//! when a seller's request is first recorded, up to [`MAX_SELLER_SERIES`] sellers per core; a
//! seller past the limit is not recorded (its requests still count in the exchange-wide series).
//! Their histograms keep [`SELLER_HIST_SIGFIG`] = 2 significant digits (relative error ≤ 1 %)
//! instead of 3, which shrinks each from ~136 KiB to ~20 KiB (2,560 `u64` counts). Worst case per
//! core: [`MAX_SELLER_SERIES`] × 2 series × (1 + [`WINDOW_SLOTS`]) histograms × 20 KiB ≈ 70 MiB,
//! reached only once 256 sellers have each pinged and sold posts on that core in every slot of the
//! window (a slot's histogram is allocated on first use, then kept); a seller that has pinged but
//! never sold a post holds one since-start histogram for `post_duration` (20 KiB). A snapshot
//! copies two histograms per series (since start and the merged window): at most ~20 MiB more per
//! core, for the duration of a latency report or a scrape.
//! Units: all recorded values are microseconds; Prometheus output is in seconds.

pub mod cpu;
mod latency;
mod prometheus;

pub use latency::{latency_json, latency_json_of};
pub use prometheus::{
    metric_names, render_prometheus, CoreCounters, StoreCounters, WebhookCounters,
    PROMETHEUS_BUCKETS,
};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::types::words::{AttemptResult, CallFailure, NoBidReason, OutcomeKind, Word};
use crate::types::Tenant;

/// What names one buyer's series: its tenant and its id (ids are scoped by tenant).
pub type BuyerKey = (Tenant, String);

/// What names one seller's series: its tenant and its id (ids are scoped by tenant).
pub type SellerKey = (Tenant, String);

/// Most per-seller series one core keeps (each seller has two: `ping_duration` and
/// `post_duration`). Far below [`crate::config::MAX_SELLERS_PER_TENANT`] on purpose: sellers past
/// it on a core are not recorded per seller, which bounds memory (see the module doc).
pub const MAX_SELLER_SERIES: usize = 256;

/// Significant decimal digits kept by per-seller histograms (relative error ≤ 1 %): a seventh of
/// the memory of [`HIST_SIGFIG`], since there may be [`MAX_SELLER_SERIES`] of them.
pub const SELLER_HIST_SIGFIG: u8 = 2;

/// Tenants whose buyers have series: sandbox and production.
const TENANTS: usize = 2;

/// Most per-buyer series one core keeps: room for every buyer Gavel may hold
/// ([`crate::config::MAX_BUYERS_PER_TENANT`] in each tenant) plus as many again for buyers
/// removed or renamed since start, whose series stay until restart.
pub const MAX_BUYER_SERIES: usize = 2 * TENANTS * crate::config::MAX_BUYERS_PER_TENANT;

/// Number of slots in the rolling "last 60 s" window.
pub const WINDOW_SLOTS: usize = 6;
/// Length of one window slot, in seconds.
pub const SLOT_SECS: u64 = 10;
/// Length of the rolling window, in seconds (`WINDOW_SLOTS * SLOT_SECS`).
pub const WINDOW_SECS: u64 = WINDOW_SLOTS as u64 * SLOT_SECS;
/// Lowest value a histogram distinguishes, in microseconds.
pub const HIST_LOWEST_US: u64 = 1;
/// Highest value a histogram tracks, in microseconds (60 s). Larger values are clamped to it.
pub const HIST_HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept by every histogram (relative error ≤ 0.1 %).
pub const HIST_SIGFIG: u8 = 3;
/// Most distinct (endpoint, status) pairs counted per core; routes are templates, so the real
/// number is small, and this keeps a bug (e.g. a raw path passed as endpoint) from growing memory.
pub const MAX_ENDPOINT_STATUS_KEYS: usize = 256;
/// Endpoint label under which requests are counted once [`MAX_ENDPOINT_STATUS_KEYS`] is reached.
pub const OVERFLOW_ENDPOINT: &str = "_other";

/// Client and seller limits whose 429s are counted (`gavel_rate_limited_total{limit=…}`): a
/// client's requests per second, a seller's pings per second, running auctions and won-but-unposted
/// auctions. A buyer's ping limit shows as the buyer outcome `rate_limited` instead.
pub const RATE_LIMITS: [&str; 4] = [
    "client_requests",
    "seller_pings",
    "seller_concurrent_auctions",
    "seller_unposted",
];

/// A fresh, empty histogram with the module's bounds (auto-resize off).
pub fn new_histogram() -> Histogram<u64> {
    histogram_of(HIST_SIGFIG)
}

/// A fresh, empty histogram with the module's bounds and `sigfig` significant digits (one of
/// [`HIST_SIGFIG`] and [`SELLER_HIST_SIGFIG`]).
fn histogram_of(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants that satisfy the constructor's requirements (low ≥ 1,
    // high ≥ 2 * low, sigfig ≤ 5), so this cannot fail.
    Histogram::new_with_bounds(HIST_LOWEST_US, HIST_HIGHEST_US, sigfig)
        .expect("constant histogram bounds are valid")
}

/// Adds `src` into `dst`. Both come from [`new_histogram`] (same bounds), so addition cannot fail;
/// if it ever did, the data is dropped rather than panicking on a core.
fn add_into(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    let added = dst.add(src);
    debug_assert!(added.is_ok(), "histograms with equal bounds always add");
}

/// Where the clock comes from: the system's monotonic clock, or (tests) a settable instant.
enum Clock {
    System,
    #[cfg(test)]
    Manual(std::cell::Cell<Instant>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(now) => now.get(),
        }
    }
}

/// Marks a window slot that holds nothing.
const SLOT_UNUSED: u64 = u64::MAX;

/// One window slot: the histogram of values recorded during slot number `number` (counted in
/// [`SLOT_SECS`] steps since the core's metrics were created).
struct Slot {
    number: u64,
    hist: Option<Histogram<u64>>,
}

impl Slot {
    fn clear(&mut self) {
        self.number = SLOT_UNUSED;
        if let Some(h) = self.hist.as_mut() {
            h.reset();
        }
    }

    /// Whether this slot belongs to the window ending in slot `current`.
    fn in_window(&self, current: u64) -> bool {
        self.number != SLOT_UNUSED
            && self.number <= current
            && current - self.number < WINDOW_SLOTS as u64
    }
}

/// One histogram series on one core: since start plus the rolling window.
struct Series {
    sigfig: u8,
    since_start: Histogram<u64>,
    slots: [Slot; WINDOW_SLOTS],
}

impl Series {
    fn new() -> Series {
        Series::with_sigfig(HIST_SIGFIG)
    }

    fn with_sigfig(sigfig: u8) -> Series {
        Series {
            sigfig,
            since_start: histogram_of(sigfig),
            slots: std::array::from_fn(|_| Slot {
                number: SLOT_UNUSED,
                hist: None,
            }),
        }
    }

    fn record(&mut self, value_us: u64, slot_number: u64) {
        self.since_start.saturating_record(value_us);
        let slot = &mut self.slots[(slot_number % WINDOW_SLOTS as u64) as usize];
        if slot.number != slot_number {
            if slot.number != SLOT_UNUSED && slot.number > slot_number {
                // A time earlier than the slot's current owner (impossible with a monotonic
                // clock): keep it in since-start only.
                return;
            }
            slot.clear();
            slot.number = slot_number;
        }
        let sigfig = self.sigfig;
        slot.hist
            .get_or_insert_with(|| histogram_of(sigfig))
            .saturating_record(value_us);
    }

    /// Drops stale slots and returns both views as of slot `current`.
    fn snapshot(&mut self, current: u64) -> HistogramPair {
        let mut last_60s = histogram_of(self.sigfig);
        for slot in &mut self.slots {
            if slot.in_window(current) {
                if let Some(h) = slot.hist.as_ref() {
                    add_into(&mut last_60s, h);
                }
            } else if slot.number != SLOT_UNUSED {
                slot.clear();
            }
        }
        HistogramPair {
            since_start: self.since_start.clone(),
            last_60s,
        }
    }
}

/// Everything a core records, behind one `RefCell` (borrowed only inside non-async methods).
struct Inner {
    ping: Series,
    auction: Series,
    engine_overhead: Series,
    post: Series,
    store_commit: Series,
    loop_lag: Series,
    /// Per-buyer series; a buyer's slot is its position in `buyer_ids`, found through `buyer_slots`
    /// (by tenant, then id, so a lookup by `&str` allocates nothing).
    /// A new per-buyer series is one more `Vec` here, pushed in [`Inner::buyer_slot`].
    buyer_ids: Vec<BuyerKey>,
    buyer_slots: std::collections::HashMap<Tenant, std::collections::HashMap<String, usize>>,
    buyer_rtt: Vec<Series>,
    buyer_pings: Vec<[u64; OutcomeKind::COUNT]>,
    buyer_call_errors: Vec<[u64; CallFailure::COUNT]>,
    buyer_post_attempts: Vec<[u64; AttemptResult::COUNT]>,
    /// Per-seller series, kept like the buyers': a seller's slot is its position in `seller_ids`.
    seller_ids: Vec<SellerKey>,
    seller_slots: std::collections::HashMap<Tenant, std::collections::HashMap<String, usize>>,
    seller_ping: Vec<Series>,
    seller_post: Vec<Series>,
    no_bid: [u64; NoBidReason::COUNT],
    requests: BTreeMap<(&'static str, u16), u64>,
    idempotent_replays: u64,
    rate_limited: [u64; RATE_LIMITS.len()],
}

// Architecture Invariant [metrics-per-core]: only the owning core writes these (no atomics, no
// locks); readers merge snapshots, and labels come from fixed sets, never from request data.
/// One core's metrics. Written only by its own core (interior mutability with `Cell`/`RefCell`,
/// not atomics, not locks); read by taking a [`Snapshot`] on that core, which is `Send` and
/// travels to the core rendering a scrape.
///
/// All methods are synchronous and hold no borrow across an `.await`, so a call can never observe
/// a borrow in progress.
pub struct CoreMetrics {
    clock: Clock,
    /// Start of slot number 0.
    origin: Instant,
    inner: RefCell<Inner>,
    /// Benchmark-only switch (`metrics.record = false`): when off, every `record_*` returns at once.
    enabled: std::cell::Cell<bool>,
}

impl CoreMetrics {
    /// Empty metrics for one core, with (zero) series for `buyer_ids` from the start; other buyers
    /// get theirs when first recorded.
    pub fn new(buyer_ids: &[BuyerKey]) -> CoreMetrics {
        Self::with_clock(buyer_ids, Clock::System)
    }

    fn with_clock(buyer_ids: &[BuyerKey], clock: Clock) -> CoreMetrics {
        let origin = clock.now();
        let m = CoreMetrics {
            clock,
            origin,
            inner: RefCell::new(Inner {
                ping: Series::new(),
                auction: Series::new(),
                engine_overhead: Series::new(),
                post: Series::new(),
                store_commit: Series::new(),
                loop_lag: Series::new(),
                buyer_ids: Vec::new(),
                buyer_slots: std::collections::HashMap::new(),
                buyer_rtt: Vec::new(),
                buyer_pings: Vec::new(),
                buyer_call_errors: Vec::new(),
                buyer_post_attempts: Vec::new(),
                seller_ids: Vec::new(),
                seller_slots: std::collections::HashMap::new(),
                seller_ping: Vec::new(),
                seller_post: Vec::new(),
                no_bid: [0; NoBidReason::COUNT],
                requests: BTreeMap::new(),
                idempotent_replays: 0,
                rate_limited: [0; RATE_LIMITS.len()],
            }),
            enabled: std::cell::Cell::new(true),
        };
        {
            let mut inner = m.inner.borrow_mut();
            for (tenant, id) in buyer_ids {
                inner.buyer_slot(*tenant, id);
            }
        }
        m
    }

    /// Turns recording on or off (off only to measure what recording costs).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.set(on);
    }

    /// The buyers this core keeps series for, in slot order.
    pub fn buyer_ids(&self) -> Vec<BuyerKey> {
        self.inner.borrow().buyer_ids.clone()
    }

    /// Current window slot number.
    fn slot_now(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.origin)
            .as_secs()
            / SLOT_SECS
    }

    fn record_series(&self, value_us: u64, pick: impl FnOnce(&mut Inner) -> &mut Series) {
        if !self.enabled.get() {
            return;
        }
        let slot = self.slot_now();
        pick(&mut self.inner.borrow_mut()).record(value_us, slot);
    }

    /// Seller-observed `/v1/ping` latency: request received → reply ready, in µs.
    pub fn record_ping(&self, latency_us: u64) {
        self.record_series(latency_us, |i| &mut i.ping);
    }

    /// Seller `seller_id` of `tenant`'s own `/v1/ping` latency, measured like [`Self::record_ping`].
    /// A seller seen for the first time gets its series now; past [`MAX_SELLER_SERIES`] it is not
    /// recorded.
    pub fn record_seller_ping(&self, tenant: Tenant, seller_id: &str, latency_us: u64) {
        self.record_seller(tenant, seller_id, latency_us, |i, s| &mut i.seller_ping[s]);
    }

    /// Seller `seller_id` of `tenant`'s own sold-post latency, measured like
    /// [`Self::record_post`]; bounded like [`Self::record_seller_ping`].
    pub fn record_seller_post(&self, tenant: Tenant, seller_id: &str, latency_us: u64) {
        self.record_seller(tenant, seller_id, latency_us, |i, s| &mut i.seller_post[s]);
    }

    fn record_seller(
        &self,
        tenant: Tenant,
        seller_id: &str,
        value_us: u64,
        pick: impl FnOnce(&mut Inner, usize) -> &mut Series,
    ) {
        if !self.enabled.get() {
            return;
        }
        let slot = self.slot_now();
        let mut inner = self.inner.borrow_mut();
        let Some(seller) = inner.seller_slot(tenant, seller_id) else {
            return;
        };
        pick(&mut inner, seller).record(value_us, slot);
    }

    /// The sellers this core keeps series for, in slot order.
    pub fn seller_ids(&self) -> Vec<SellerKey> {
        self.inner.borrow().seller_ids.clone()
    }

    /// Auction duration: fan-out start → auction closed, in µs.
    pub fn record_auction(&self, duration_us: u64) {
        self.record_series(duration_us, |i| &mut i.auction);
    }

    /// Engine overhead: ping latency minus the slowest counted buyer's RTT, in µs.
    pub fn record_engine_overhead(&self, overhead_us: u64) {
        self.record_series(overhead_us, |i| &mut i.engine_overhead);
    }

    /// One buyer ping's outcome and, when `Some`, its round-trip time in µs, recorded into the
    /// RTT histogram of buyer `buyer_id` of `tenant`. A buyer seen for the first time gets its
    /// series now; past [`MAX_BUYER_SERIES`] it is not recorded.
    pub fn record_buyer_ping(
        &self,
        tenant: Tenant,
        buyer_id: &str,
        outcome: OutcomeKind,
        rtt_us: Option<u64>,
    ) {
        if !self.enabled.get() {
            return;
        }
        let slot = self.slot_now();
        let mut inner = self.inner.borrow_mut();
        let Some(buyer) = inner.buyer_slot(tenant, buyer_id) else {
            return;
        };
        inner.buyer_pings[buyer][outcome.index()] += 1;
        if let Some(rtt) = rtt_us {
            inner.buyer_rtt[buyer].record(rtt, slot);
        }
    }

    /// One ping that could not reach buyer `buyer_id` of `tenant`, by why. Past
    /// [`MAX_BUYER_SERIES`] buyers a new buyer is not recorded.
    pub fn record_buyer_call_error(&self, tenant: Tenant, buyer_id: &str, why: CallFailure) {
        self.count_for_buyer(tenant, buyer_id, |i, b| {
            i.buyer_call_errors[b][why.index()] += 1
        });
    }

    /// One attempt to deliver a post to buyer `buyer_id` of `tenant`, by its result. Past
    /// [`MAX_BUYER_SERIES`] buyers a new buyer is not recorded.
    pub fn record_post_attempt(&self, tenant: Tenant, buyer_id: &str, result: AttemptResult) {
        self.count_for_buyer(tenant, buyer_id, |i, b| {
            i.buyer_post_attempts[b][result.index()] += 1
        });
    }

    /// Runs `count` on this core's series of buyer `buyer_id` of `tenant` (made on first use),
    /// unless recording is off or the buyer is past [`MAX_BUYER_SERIES`].
    fn count_for_buyer(
        &self,
        tenant: Tenant,
        buyer_id: &str,
        count: impl FnOnce(&mut Inner, usize),
    ) {
        if !self.enabled.get() {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        if let Some(buyer) = inner.buyer_slot(tenant, buyer_id) {
            count(&mut inner, buyer);
        }
    }

    /// An auction that ended without a winner, by reason.
    pub fn record_no_bid(&self, reason: NoBidReason) {
        if !self.enabled.get() {
            return;
        }
        self.inner.borrow_mut().no_bid[reason.index()] += 1;
    }

    /// Post latency for sold posts: post received → buyer 2xx, in µs.
    pub fn record_post(&self, latency_us: u64) {
        self.record_series(latency_us, |i| &mut i.post);
    }

    /// Store commit latency: queued → durable, in µs.
    pub fn record_store_commit(&self, latency_us: u64) {
        self.record_series(latency_us, |i| &mut i.store_commit);
    }

    /// How late one tick of the core's event loop fired, in µs (see `runtime::admission`).
    pub fn record_loop_lag(&self, lag_us: u64) {
        self.record_series(lag_us, |i| &mut i.loop_lag);
    }

    /// One HTTP request answered, by route template (e.g. `"/v1/ping"`, never a raw path) and
    /// status code.
    pub fn record_request(&self, endpoint: &'static str, status: u16) {
        if !self.enabled.get() {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let key = if inner.requests.len() < MAX_ENDPOINT_STATUS_KEYS
            || inner.requests.contains_key(&(endpoint, status))
        {
            (endpoint, status)
        } else {
            (OVERFLOW_ENDPOINT, 0)
        };
        *inner.requests.entry(key).or_insert(0) += 1;
    }

    /// One idempotent replay (a repeated request answered from the stored result).
    pub fn record_replay(&self) {
        if !self.enabled.get() {
            return;
        }
        self.inner.borrow_mut().idempotent_replays += 1;
    }

    /// One 429 for `limit` (one of [`RATE_LIMITS`]; anything else is ignored).
    pub fn record_rate_limited(&self, limit: &str) {
        if !self.enabled.get() {
            return;
        }
        if let Some(i) = RATE_LIMITS.iter().position(|l| *l == limit) {
            self.inner.borrow_mut().rate_limited[i] += 1;
        }
    }

    /// A copy of this core's metrics as of now; also drops window slots older than the window.
    pub fn snapshot(&self) -> Snapshot {
        let current = self.slot_now();
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        Snapshot {
            buyer_ids: inner.buyer_ids.clone(),
            ping: inner.ping.snapshot(current),
            auction: inner.auction.snapshot(current),
            engine_overhead: inner.engine_overhead.snapshot(current),
            post: inner.post.snapshot(current),
            store_commit: inner.store_commit.snapshot(current),
            loop_lag: inner.loop_lag.snapshot(current),
            buyer_rtt: inner
                .buyer_rtt
                .iter_mut()
                .map(|s| s.snapshot(current))
                .collect(),
            buyer_pings: inner.buyer_pings.clone(),
            buyer_call_errors: inner.buyer_call_errors.clone(),
            buyer_post_attempts: inner.buyer_post_attempts.clone(),
            seller_ids: inner.seller_ids.clone(),
            seller_ping: inner
                .seller_ping
                .iter_mut()
                .map(|s| s.snapshot(current))
                .collect(),
            seller_post: inner
                .seller_post
                .iter_mut()
                .map(|s| s.snapshot(current))
                .collect(),
            no_bid: inner.no_bid,
            requests: inner.requests.clone(),
            idempotent_replays: inner.idempotent_replays,
            rate_limited: inner.rate_limited,
        }
    }
}

impl Inner {
    /// The slot of the series of buyer `buyer_id` of `tenant`, created on first sight; `None` once
    /// [`MAX_BUYER_SERIES`] slots exist.
    fn buyer_slot(&mut self, tenant: Tenant, buyer_id: &str) -> Option<usize> {
        if let Some(&i) = self
            .buyer_slots
            .get(&tenant)
            .and_then(|ids| ids.get(buyer_id))
        {
            return Some(i);
        }
        if self.buyer_ids.len() >= MAX_BUYER_SERIES {
            return None;
        }
        let i = self.buyer_ids.len();
        self.buyer_ids.push((tenant, buyer_id.to_string()));
        self.buyer_slots
            .entry(tenant)
            .or_default()
            .insert(buyer_id.to_string(), i);
        self.buyer_rtt.push(Series::new());
        self.buyer_pings.push([0; OutcomeKind::COUNT]);
        self.buyer_call_errors.push([0; CallFailure::COUNT]);
        self.buyer_post_attempts.push([0; AttemptResult::COUNT]);
        Some(i)
    }

    /// The slot of the series of seller `seller_id` of `tenant`, created on first sight; `None`
    /// once [`MAX_SELLER_SERIES`] slots exist.
    fn seller_slot(&mut self, tenant: Tenant, seller_id: &str) -> Option<usize> {
        if let Some(&i) = self
            .seller_slots
            .get(&tenant)
            .and_then(|ids| ids.get(seller_id))
        {
            return Some(i);
        }
        if self.seller_ids.len() >= MAX_SELLER_SERIES {
            return None;
        }
        let i = self.seller_ids.len();
        self.seller_ids.push((tenant, seller_id.to_string()));
        self.seller_slots
            .entry(tenant)
            .or_default()
            .insert(seller_id.to_string(), i);
        self.seller_ping
            .push(Series::with_sigfig(SELLER_HIST_SIGFIG));
        self.seller_post
            .push(Series::with_sigfig(SELLER_HIST_SIGFIG));
        Some(i)
    }
}

/// Both views of one histogram series, in microseconds.
#[derive(Debug, Clone)]
pub struct HistogramPair {
    /// Every value recorded since the core started.
    pub since_start: Histogram<u64>,
    /// Values recorded in the window slots that started within the last [`WINDOW_SECS`] seconds.
    pub last_60s: Histogram<u64>,
}

impl HistogramPair {
    /// Two empty histograms.
    pub fn empty() -> HistogramPair {
        HistogramPair {
            since_start: new_histogram(),
            last_60s: new_histogram(),
        }
    }

    /// Adds `other`'s values into both views.
    pub fn merge(&mut self, other: &HistogramPair) {
        add_into(&mut self.since_start, &other.since_start);
        add_into(&mut self.last_60s, &other.last_60s);
    }
}

/// A point-in-time copy of one core's metrics, or of several merged. `Send + Clone`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Buyers (tenant and id); index `i` labels `buyer_rtt[i]` and `buyer_pings[i]`.
    pub buyer_ids: Vec<BuyerKey>,
    /// Seller-observed ping latency.
    pub ping: HistogramPair,
    /// Auction duration.
    pub auction: HistogramPair,
    /// Engine overhead.
    pub engine_overhead: HistogramPair,
    /// Post latency (sold posts).
    pub post: HistogramPair,
    /// Store commit latency.
    pub store_commit: HistogramPair,
    /// Event-loop tick lag, every core's ticks together.
    pub loop_lag: HistogramPair,
    /// Buyer ping round-trip time, per buyer.
    pub buyer_rtt: Vec<HistogramPair>,
    /// Buyer ping outcome counts, per buyer, indexed by [`OutcomeKind`].
    pub buyer_pings: Vec<[u64; OutcomeKind::COUNT]>,
    /// Pings that could not reach the buyer, per buyer, indexed by [`CallFailure`].
    pub buyer_call_errors: Vec<[u64; CallFailure::COUNT]>,
    /// Post delivery attempts, per buyer, indexed by [`AttemptResult`].
    pub buyer_post_attempts: Vec<[u64; AttemptResult::COUNT]>,
    /// Sellers (tenant and id); index `i` labels `seller_ping[i]` and `seller_post[i]`.
    pub seller_ids: Vec<SellerKey>,
    /// Each seller's own ping latency ([`SELLER_HIST_SIGFIG`] digits).
    pub seller_ping: Vec<HistogramPair>,
    /// Each seller's own post latency, sold posts ([`SELLER_HIST_SIGFIG`] digits).
    pub seller_post: Vec<HistogramPair>,
    /// No-winner auction counts, indexed by [`NoBidReason`].
    pub no_bid: [u64; NoBidReason::COUNT],
    /// HTTP requests per (route template, status).
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Idempotent replays.
    pub idempotent_replays: u64,
    /// 429s per client limit, indexed like [`RATE_LIMITS`].
    pub rate_limited: [u64; RATE_LIMITS.len()],
}

impl Snapshot {
    /// A snapshot with nothing recorded, to merge cores' snapshots into.
    pub fn empty(buyer_ids: &[BuyerKey]) -> Snapshot {
        Snapshot {
            buyer_ids: buyer_ids.to_vec(),
            ping: HistogramPair::empty(),
            auction: HistogramPair::empty(),
            engine_overhead: HistogramPair::empty(),
            post: HistogramPair::empty(),
            store_commit: HistogramPair::empty(),
            loop_lag: HistogramPair::empty(),
            buyer_rtt: buyer_ids.iter().map(|_| HistogramPair::empty()).collect(),
            buyer_pings: vec![[0; OutcomeKind::COUNT]; buyer_ids.len()],
            buyer_call_errors: vec![[0; CallFailure::COUNT]; buyer_ids.len()],
            buyer_post_attempts: vec![[0; AttemptResult::COUNT]; buyer_ids.len()],
            seller_ids: Vec::new(),
            seller_ping: Vec::new(),
            seller_post: Vec::new(),
            no_bid: [0; NoBidReason::COUNT],
            requests: BTreeMap::new(),
            idempotent_replays: 0,
            rate_limited: [0; RATE_LIMITS.len()],
        }
    }

    /// Adds `other` into `self`: histograms are added (exact), counters summed. Buyers are matched
    /// by tenant and id, so cores built from different buyer lists still merge correctly (and two
    /// tenants' buyers with one id never do); buyers only `other` knows are appended. Sellers are
    /// matched the same way, by tenant and id.
    pub fn merge(&mut self, other: &Snapshot) {
        self.ping.merge(&other.ping);
        self.auction.merge(&other.auction);
        self.engine_overhead.merge(&other.engine_overhead);
        self.post.merge(&other.post);
        self.store_commit.merge(&other.store_commit);
        self.loop_lag.merge(&other.loop_lag);
        for (j, id) in other.buyer_ids.iter().enumerate() {
            let i = if self.buyer_ids.get(j) == Some(id) {
                j
            } else if let Some(i) = self.buyer_ids.iter().position(|x| x == id) {
                i
            } else {
                self.buyer_ids.push(id.clone());
                self.buyer_rtt.push(HistogramPair::empty());
                self.buyer_pings.push([0; OutcomeKind::COUNT]);
                self.buyer_call_errors.push([0; CallFailure::COUNT]);
                self.buyer_post_attempts.push([0; AttemptResult::COUNT]);
                self.buyer_ids.len() - 1
            };
            self.buyer_rtt[i].merge(&other.buyer_rtt[j]);
            for (a, b) in self.buyer_pings[i].iter_mut().zip(other.buyer_pings[j]) {
                *a += b;
            }
            for (a, b) in self.buyer_call_errors[i]
                .iter_mut()
                .zip(other.buyer_call_errors[j])
            {
                *a += b;
            }
            for (a, b) in self.buyer_post_attempts[i]
                .iter_mut()
                .zip(other.buyer_post_attempts[j])
            {
                *a += b;
            }
        }
        for (j, id) in other.seller_ids.iter().enumerate() {
            let found = if self.seller_ids.get(j) == Some(id) {
                Some(j)
            } else {
                self.seller_ids.iter().position(|x| x == id)
            };
            match found {
                Some(i) => {
                    self.seller_ping[i].merge(&other.seller_ping[j]);
                    self.seller_post[i].merge(&other.seller_post[j]);
                }
                // A seller only `other` knows: its histograms are copied, which keeps their
                // precision (an empty pair here would have `HIST_SIGFIG` digits).
                None => {
                    self.seller_ids.push(id.clone());
                    self.seller_ping.push(other.seller_ping[j].clone());
                    self.seller_post.push(other.seller_post[j].clone());
                }
            }
        }
        for (a, b) in self.no_bid.iter_mut().zip(other.no_bid) {
            *a += b;
        }
        for (k, v) in &other.requests {
            *self.requests.entry(*k).or_insert(0) += v;
        }
        self.idempotent_replays += other.idempotent_replays;
        for (a, b) in self.rate_limited.iter_mut().zip(other.rate_limited) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sandbox(ids: &[&str]) -> Vec<BuyerKey> {
        ids.iter()
            .map(|id| (Tenant::Sandbox, id.to_string()))
            .collect()
    }

    fn ids() -> Vec<BuyerKey> {
        sandbox(&["acme", "globex"])
    }

    fn manual(start: Instant) -> CoreMetrics {
        CoreMetrics::with_clock(&ids(), Clock::Manual(std::cell::Cell::new(start)))
    }

    fn set_now(m: &CoreMetrics, now: Instant) {
        match &m.clock {
            Clock::Manual(c) => c.set(now),
            Clock::System => unreachable!(),
        }
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn snapshot_is_send_and_core_metrics_is_send() {
        assert_send::<Snapshot>();
        assert_send::<CoreMetrics>();
    }

    #[test]
    fn record_snapshot_and_merge_two_cores_is_exact() {
        let a = CoreMetrics::new(&ids());
        let b = CoreMetrics::new(&ids());
        for v in 1..=500u64 {
            a.record_ping(v);
        }
        for v in 501..=1000u64 {
            b.record_ping(v);
        }
        a.record_buyer_ping(Tenant::Sandbox, "acme", OutcomeKind::Bid, Some(1200));
        a.record_buyer_ping(Tenant::Sandbox, "globex", OutcomeKind::Timeout, None);
        b.record_buyer_ping(Tenant::Sandbox, "acme", OutcomeKind::Bid, Some(800));
        b.record_buyer_ping(Tenant::Sandbox, "acme", OutcomeKind::NoBid, Some(300));
        a.record_no_bid(NoBidReason::NoBids);
        b.record_no_bid(NoBidReason::BelowFloor);
        a.record_request("/v1/ping", 200);
        b.record_request("/v1/ping", 200);
        b.record_request("/v1/post", 409);
        a.record_replay();
        b.record_replay();
        a.record_store_commit(70_000_000); // clamped to 60 s

        let mut all = Snapshot::empty(&ids());
        all.merge(&a.snapshot());
        all.merge(&b.snapshot());

        assert_eq!(all.ping.since_start.len(), 1000);
        assert_eq!(all.ping.last_60s.len(), 1000);
        // Values below 2048 are exact at 3 significant digits.
        assert_eq!(all.ping.since_start.value_at_quantile(0.5), 500);
        assert_eq!(all.ping.since_start.value_at_quantile(0.99), 990);
        assert_eq!(all.ping.since_start.max(), 1000);
        assert_eq!(all.ping.since_start.min(), 1);
        assert_eq!(all.buyer_rtt[0].since_start.len(), 3);
        assert_eq!(all.buyer_rtt[1].since_start.len(), 0);
        assert_eq!(all.buyer_pings[0], [2, 1, 0, 0, 0, 0, 0]);
        assert_eq!(all.buyer_pings[1], [0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(all.no_bid, [0, 1, 1]);
        assert_eq!(all.requests[&("/v1/ping", 200)], 2);
        assert_eq!(all.requests[&("/v1/post", 409)], 1);
        assert_eq!(all.idempotent_replays, 2);
        assert_eq!(all.store_commit.since_start.len(), 1);
        assert!(all.store_commit.since_start.max() <= 60_100_000);
    }

    #[test]
    fn a_buyer_first_seen_at_runtime_gets_its_own_series_up_to_the_limit() {
        let m = CoreMetrics::new(&ids());
        m.record_buyer_ping(Tenant::Sandbox, "added_later", OutcomeKind::Bid, Some(10));
        m.record_buyer_ping(Tenant::Sandbox, "acme", OutcomeKind::NoBid, None);
        let s = m.snapshot();
        assert_eq!(s.buyer_ids, sandbox(&["acme", "globex", "added_later"]));
        assert_eq!(s.buyer_pings[2][0], 1);
        assert_eq!(s.buyer_pings[0][1], 1);
        for n in 0..MAX_BUYER_SERIES {
            m.record_buyer_ping(Tenant::Sandbox, &format!("b{n}"), OutcomeKind::Bid, None);
        }
        assert_eq!(m.buyer_ids().len(), MAX_BUYER_SERIES);
        assert!(!m.buyer_ids().iter().any(|(_, id)| id == "one_too_many"));
        m.record_buyer_ping(Tenant::Sandbox, "one_too_many", OutcomeKind::Bid, None);
        assert_eq!(m.buyer_ids().len(), MAX_BUYER_SERIES);
    }

    #[test]
    fn merge_matches_buyers_by_id() {
        let a = CoreMetrics::new(&ids());
        let other = sandbox(&["globex", "initech"]);
        let b = CoreMetrics::new(&other);
        a.record_buyer_ping(Tenant::Sandbox, "globex", OutcomeKind::Bid, Some(10));
        b.record_buyer_ping(Tenant::Sandbox, "globex", OutcomeKind::Bid, Some(20));
        b.record_buyer_ping(Tenant::Sandbox, "initech", OutcomeKind::Error, Some(30));
        let mut all = a.snapshot();
        all.merge(&b.snapshot());
        assert_eq!(all.buyer_ids, sandbox(&["acme", "globex", "initech"]));
        assert_eq!(all.buyer_pings[1][0], 2);
        assert_eq!(all.buyer_rtt[1].since_start.len(), 2);
        assert_eq!(all.buyer_pings[2][3], 1);
    }

    /// Ids are scoped by tenant: a production buyer with a sandbox buyer's id has series of its
    /// own, on one core and across a merge.
    #[test]
    fn two_tenants_buyers_with_one_id_keep_their_own_series() {
        let a = CoreMetrics::new(&ids());
        let b = CoreMetrics::new(&[(Tenant::Production, "acme".to_string())]);
        a.record_buyer_ping(Tenant::Production, "acme", OutcomeKind::NoBid, Some(10));
        a.record_buyer_ping(Tenant::Sandbox, "acme", OutcomeKind::Bid, Some(10));
        b.record_buyer_ping(Tenant::Production, "acme", OutcomeKind::NoBid, Some(20));
        a.record_buyer_call_error(Tenant::Production, "acme", CallFailure::Dns);
        let mut all = a.snapshot();
        all.merge(&b.snapshot());
        let mut want = ids();
        want.push((Tenant::Production, "acme".to_string()));
        assert_eq!(all.buyer_ids, want);
        assert_eq!(all.buyer_pings[0], [1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(all.buyer_pings[2], [0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(all.buyer_call_errors[0], [0; CallFailure::COUNT]);
        assert_eq!(all.buyer_call_errors[2][1], 1);
    }

    #[test]
    fn window_drops_values_older_than_60s_and_keeps_recent_ones() {
        let t0 = Instant::now();
        let m = manual(t0);
        m.record_ping(100); // slot 0
        set_now(&m, t0 + Duration::from_secs(35));
        m.record_ping(200); // slot 3
        set_now(&m, t0 + Duration::from_secs(59));
        let s = m.snapshot();
        assert_eq!(s.ping.last_60s.len(), 2);
        assert_eq!(s.ping.since_start.len(), 2);

        // At 60 s slot 0 (started 60 s ago) leaves the window; slot 3 stays.
        set_now(&m, t0 + Duration::from_secs(60));
        let s = m.snapshot();
        assert_eq!(s.ping.last_60s.len(), 1);
        assert_eq!(s.ping.last_60s.max(), 200);
        assert_eq!(s.ping.since_start.len(), 2);

        // Recording into a reused ring position replaces the stale slot's content.
        set_now(&m, t0 + Duration::from_secs(95));
        m.record_ping(300); // slot 9, same ring position as slot 3
        let s = m.snapshot();
        assert_eq!(s.ping.last_60s.len(), 1);
        assert_eq!(s.ping.last_60s.max(), 300);

        // Long idle: everything leaves the window, since-start keeps all.
        set_now(&m, t0 + Duration::from_secs(1000));
        let s = m.snapshot();
        assert_eq!(s.ping.last_60s.len(), 0);
        assert_eq!(s.ping.since_start.len(), 3);
    }

    #[test]
    fn window_applies_to_buyer_rtt() {
        let t0 = Instant::now();
        let m = manual(t0);
        m.record_buyer_ping(Tenant::Sandbox, "globex", OutcomeKind::Bid, Some(5000));
        set_now(&m, t0 + Duration::from_secs(61));
        m.record_buyer_ping(Tenant::Sandbox, "globex", OutcomeKind::Bid, Some(7000));
        let s = m.snapshot();
        assert_eq!(s.buyer_rtt[1].since_start.len(), 2);
        assert_eq!(s.buyer_rtt[1].last_60s.len(), 1);
        assert_eq!(s.buyer_pings[1][0], 2);
    }

    /// Seller series merge by tenant and id (whatever each core's slot order), a seller only one
    /// core knows is appended, and a production seller with a sandbox seller's id stays apart.
    #[test]
    fn merge_matches_sellers_by_tenant_and_id() {
        let a = CoreMetrics::new(&[]);
        let b = CoreMetrics::new(&[]);
        a.record_seller_ping(Tenant::Sandbox, "s1", 100);
        a.record_seller_ping(Tenant::Sandbox, "s2", 200);
        a.record_seller_post(Tenant::Sandbox, "s2", 5_000);
        b.record_seller_ping(Tenant::Sandbox, "s2", 300);
        b.record_seller_ping(Tenant::Production, "s1", 400);
        b.record_seller_post(Tenant::Sandbox, "s3", 6_000);
        let mut all = Snapshot::empty(&[]);
        all.merge(&a.snapshot());
        all.merge(&b.snapshot());
        let key = |t, id: &str| (t, id.to_string());
        assert_eq!(
            all.seller_ids,
            [
                key(Tenant::Sandbox, "s1"),
                key(Tenant::Sandbox, "s2"),
                key(Tenant::Production, "s1"),
                key(Tenant::Sandbox, "s3"),
            ]
        );
        let pings: Vec<u64> = all
            .seller_ping
            .iter()
            .map(|p| p.since_start.len())
            .collect();
        let posts: Vec<u64> = all
            .seller_post
            .iter()
            .map(|p| p.since_start.len())
            .collect();
        assert_eq!(pings, [1, 2, 1, 0]);
        assert_eq!(posts, [0, 1, 0, 1]);
        assert_eq!(all.seller_ping[1].last_60s.len(), 2);
        // 400 µs at two significant digits: its bucket's highest equivalent value.
        let h = &all.seller_ping[2].since_start;
        assert!(h.equivalent(h.max(), 400), "{}", h.max());
        // Seller series keep two significant digits, also once merged.
        assert_eq!(all.seller_ping[1].since_start.sigfig(), SELLER_HIST_SIGFIG);
        assert_eq!(all.seller_post[3].since_start.sigfig(), SELLER_HIST_SIGFIG);
        // The exchange-wide series are not touched by seller recording.
        assert_eq!(all.ping.since_start.len(), 0);
    }

    #[test]
    fn seller_series_are_bounded_per_core() {
        let m = CoreMetrics::new(&[]);
        for n in 0..MAX_SELLER_SERIES {
            m.record_seller_ping(Tenant::Production, &format!("s{n}"), 10);
        }
        assert_eq!(m.seller_ids().len(), MAX_SELLER_SERIES);
        m.record_seller_ping(Tenant::Production, "one_too_many", 10);
        m.record_seller_post(Tenant::Sandbox, "one_too_many", 10);
        assert_eq!(m.seller_ids().len(), MAX_SELLER_SERIES);
        assert!(!m.seller_ids().iter().any(|(_, id)| id == "one_too_many"));
        // A seller already kept is still recorded once the limit is reached.
        m.record_seller_ping(Tenant::Production, "s0", 20);
        assert_eq!(m.snapshot().seller_ping[0].since_start.len(), 2);
    }

    #[test]
    fn window_applies_to_seller_series() {
        let t0 = Instant::now();
        let m = manual(t0);
        m.record_seller_post(Tenant::Sandbox, "s1", 5000);
        set_now(&m, t0 + Duration::from_secs(61));
        m.record_seller_post(Tenant::Sandbox, "s1", 7000);
        let s = m.snapshot();
        assert_eq!(s.seller_post[0].since_start.len(), 2);
        assert_eq!(s.seller_post[0].last_60s.len(), 1);
        assert_eq!(s.seller_ping[0].since_start.len(), 0);
    }

    #[test]
    fn endpoint_status_map_is_bounded() {
        let m = CoreMetrics::new(&[]);
        for s in 0..(MAX_ENDPOINT_STATUS_KEYS as u16 + 10) {
            m.record_request("/v1/ping", s);
        }
        let s = m.snapshot();
        assert_eq!(s.requests.len(), MAX_ENDPOINT_STATUS_KEYS + 1);
        assert_eq!(s.requests[&(OVERFLOW_ENDPOINT, 0)], 10);
    }
}
