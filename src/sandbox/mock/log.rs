//! Recording: [`FleetLog`], what the fleet saw (counters per buyer and outcome, ping keys, the
//! last ping, every post as a [`DeliveryRecord`]), shared by the fleet threads and read by tests
//! and the load tester. It keeps ids and keys only, never lead PII, and it does not answer
//! requests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
// The fleet's bookkeeping lock is the one deliberate exception to the no-locks rule (see FleetLog).
#[allow(clippy::disallowed_types)]
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::MockBuyerConfig;
use super::{DELIVERY_LIMIT, IDEMPOTENCY_LIMIT, PING_KEY_LIMIT};

/// How a mock buyer answered one ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingOutcome {
    Bid,
    NoBid,
    /// 401: `Authorization` did not match `expect_auth`.
    Unauthorized,
    /// 4xx: the body was unreadable or had no `auction_id`.
    BadRequest,
    Hang,
    Http500,
    GarbageJson,
    SlowTrickle,
    WrongAuctionId,
}

impl PingOutcome {
    pub const ALL: [PingOutcome; 9] = [
        PingOutcome::Bid,
        PingOutcome::NoBid,
        PingOutcome::Unauthorized,
        PingOutcome::BadRequest,
        PingOutcome::Hang,
        PingOutcome::Http500,
        PingOutcome::GarbageJson,
        PingOutcome::SlowTrickle,
        PingOutcome::WrongAuctionId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PingOutcome::Bid => "bid",
            PingOutcome::NoBid => "no_bid",
            PingOutcome::Unauthorized => "unauthorized",
            PingOutcome::BadRequest => "bad_request",
            PingOutcome::Hang => "hang",
            PingOutcome::Http500 => "http_500",
            PingOutcome::GarbageJson => "garbage_json",
            PingOutcome::SlowTrickle => "slow_trickle",
            PingOutcome::WrongAuctionId => "wrong_auction_id",
        }
    }
}

/// One post a mock buyer received. Ids and keys only: the lead itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub buyer_id: String,
    /// Empty when the body could not be read.
    pub auction_id: String,
    /// The `Idempotency-Key` header as sent, if any.
    pub idempotency_key: Option<String>,
    /// The lead id answered (a repeated key gets the first answer's id again).
    pub lead_id: Option<String>,
    pub accepted: bool,
    /// Why the post was refused: `duplicate_lead`, `unknown_bid_token`, `unauthorized`,
    /// `malformed_body`.
    pub reason: Option<String>,
}

#[derive(Default)]
struct BuyerLog {
    pings: u64,
    outcomes: [u64; PingOutcome::ALL.len()],
    posts: u64,
    leads: u64,
    ping_keys: Vec<String>,
    /// Kept as the bytes received (already checked to be JSON) and parsed only when asked for.
    last_ping_body: Option<Bytes>,
    /// Kept as header clones (reference-counted bytes) in a reused buffer, and turned into
    /// strings only when asked for.
    last_ping_headers: Option<Vec<(HeaderName, HeaderValue)>>,
    accepted_keys: HashMap<String, String>,
    accepted_order: VecDeque<String>,
    /// Post attempts seen per idempotency key, for `post_fail_first`.
    post_attempts: HashMap<String, u32>,
}

#[derive(Default)]
struct LogInner {
    buyers: HashMap<String, BuyerLog>,
    deliveries: Vec<DeliveryRecord>,
    dropped_records: u64,
}

/// What the fleet saw, shared by its threads and read by tests and the load tester.
///
/// Counters are exact; the ping-key and delivery lists stop growing at a large cap (see
/// [`FleetLog::dropped_records`]) so a long-running sandbox has bounded memory.
pub struct FleetLog {
    // A plain mutex is fine: this is the sandbox's bookkeeping, off Gavel's request path, and each
    // critical section is a handful of map operations.
    #[allow(clippy::disallowed_types)]
    inner: Mutex<LogInner>,
    pub(super) active_connections: AtomicU64,
}

impl std::fmt::Debug for FleetLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLog")
            .field("deliveries", &self.lock().deliveries.len())
            .field("active_connections", &self.active_connections())
            .finish_non_exhaustive()
    }
}

impl FleetLog {
    #[allow(clippy::disallowed_types)]
    pub(super) fn new(buyers: &[MockBuyerConfig]) -> Self {
        let inner = LogInner {
            buyers: buyers
                .iter()
                .map(|b| (b.id.clone(), BuyerLog::default()))
                .collect(),
            ..LogInner::default()
        };
        Self {
            inner: Mutex::new(inner),
            active_connections: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panicking test thread must not hide what the fleet recorded from the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read<T>(&self, buyer_id: &str, f: impl FnOnce(&BuyerLog) -> T) -> Option<T> {
        self.lock().buyers.get(buyer_id).map(f)
    }

    fn with_buyer(&self, buyer_id: &str, f: impl FnOnce(&mut BuyerLog)) {
        if let Some(b) = self.lock().buyers.get_mut(buyer_id) {
            f(b);
        }
    }

    /// Pings the buyer received, whatever the answer.
    pub fn pings(&self, buyer_id: &str) -> u64 {
        self.read(buyer_id, |b| b.pings).unwrap_or(0)
    }

    /// Pings the buyer answered (or started hanging on) with `outcome`.
    pub fn ping_outcome(&self, buyer_id: &str, outcome: PingOutcome) -> u64 {
        self.read(buyer_id, |b| b.outcomes[outcome as usize])
            .unwrap_or(0)
    }

    /// Every outcome with its count, in [`PingOutcome::ALL`] order.
    pub fn ping_outcomes(&self, buyer_id: &str) -> Vec<(PingOutcome, u64)> {
        let counts = self.read(buyer_id, |b| b.outcomes).unwrap_or_default();
        PingOutcome::ALL
            .iter()
            .map(|&o| (o, counts[o as usize]))
            .collect()
    }

    /// Posts the buyer received, repeats and refusals included.
    pub fn posts(&self, buyer_id: &str) -> u64 {
        self.read(buyer_id, |b| b.posts).unwrap_or(0)
    }

    /// Distinct leads the buyer accepted: a repeated idempotency key does not count again.
    pub fn leads(&self, buyer_id: &str) -> u64 {
        self.read(buyer_id, |b| b.leads).unwrap_or(0)
    }

    /// Every post received across the fleet, in arrival order.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().deliveries.clone()
    }

    /// The body of the buyer's last ping, as Gavel sent it (pings never carry PII).
    pub fn last_ping_body(&self, buyer_id: &str) -> Option<Value> {
        let raw = self
            .read(buyer_id, |b| b.last_ping_body.clone())
            .flatten()?;
        serde_json::from_slice(&raw).ok()
    }

    /// The headers of the buyer's last ping, names lower-cased, in arrival order.
    pub fn ping_headers(&self, buyer_id: &str) -> Option<Vec<(String, String)>> {
        self.read(buyer_id, |b| {
            b.last_ping_headers.as_ref().map(|headers| {
                headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect()
            })
        })
        .flatten()
    }

    /// The `Idempotency-Key` of every ping the buyer received that carried one.
    pub fn ping_idempotency_keys(&self, buyer_id: &str) -> Vec<String> {
        self.read(buyer_id, |b| b.ping_keys.clone())
            .unwrap_or_default()
    }

    /// Records not kept because a list reached its cap.
    pub fn dropped_records(&self) -> u64 {
        self.lock().dropped_records
    }

    /// Connections the fleet holds open right now.
    pub fn active_connections(&self) -> u64 {
        self.active_connections.load(Ordering::Relaxed)
    }

    pub(super) fn record_ping(&self, buyer_id: &str, headers: &HeaderMap, key: Option<String>) {
        let mut inner = self.lock();
        let mut dropped = false;
        if let Some(b) = inner.buyers.get_mut(buyer_id) {
            b.pings += 1;
            let last = b.last_ping_headers.get_or_insert_with(Vec::new);
            last.clear();
            last.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(key) = key {
                if b.ping_keys.len() < PING_KEY_LIMIT {
                    b.ping_keys.push(key);
                } else {
                    dropped = true;
                }
            }
        }
        if dropped {
            inner.dropped_records += 1;
        }
    }

    /// Counts one more post attempt under `key` and returns the count (1 for the first).
    pub(super) fn bump_post_attempt(&self, buyer_id: &str, key: &str) -> u32 {
        let mut n = 0;
        self.with_buyer(buyer_id, |b| {
            if b.post_attempts.len() >= IDEMPOTENCY_LIMIT && !b.post_attempts.contains_key(key) {
                b.post_attempts.clear();
            }
            let c = b.post_attempts.entry(key.to_string()).or_insert(0);
            *c += 1;
            n = *c;
        });
        n
    }

    pub(super) fn record_ping_body(&self, buyer_id: &str, body: Bytes) {
        self.with_buyer(buyer_id, |b| b.last_ping_body = Some(body));
    }

    pub(super) fn record_outcome(&self, buyer_id: &str, outcome: PingOutcome) {
        self.with_buyer(buyer_id, |b| b.outcomes[outcome as usize] += 1);
    }

    /// Records a post and, for an accepted one, settles its lead id under the idempotency key in
    /// the same critical section, so two concurrent posts with one key get one lead id.
    pub(super) fn record_post(
        &self,
        mut record: DeliveryRecord,
        settle: Option<(String, bool)>,
    ) -> Option<String> {
        let mut inner = self.lock();
        let mut lead_id = None;
        if let Some(b) = inner.buyers.get_mut(&record.buyer_id) {
            b.posts += 1;
            if let Some((key, accepts)) = settle {
                if let Some(previous) = b.accepted_keys.get(&key) {
                    lead_id = Some(previous.clone());
                } else if accepts {
                    let id = format!("{}-{}", record.buyer_id, ulid::Ulid::new());
                    if b.accepted_order.len() >= IDEMPOTENCY_LIMIT {
                        if let Some(oldest) = b.accepted_order.pop_front() {
                            b.accepted_keys.remove(&oldest);
                        }
                    }
                    b.accepted_keys.insert(key.clone(), id.clone());
                    b.accepted_order.push_back(key);
                    b.leads += 1;
                    lead_id = Some(id);
                } else {
                    record.reason = Some("duplicate_lead".into());
                }
            }
        }
        record.accepted = lead_id.is_some();
        record.lead_id.clone_from(&lead_id);
        if inner.deliveries.len() < DELIVERY_LIMIT {
            inner.deliveries.push(record);
        } else {
            inner.dropped_records += 1;
        }
        lead_id
    }
}
