//! The mock buyer fleet: real HTTP buyer endpoints on loopback that Gavel pings and posts to.
//!
//! # Routes
//!
//! - `POST /buyers/{id}/ping`: answers CONTRACT §5.1 with a bid or a structured no-bid.
//! - `POST /buyers/{id}/post`: answers CONTRACT §5.2 with `201 {"lead_id"}` or
//!   `422 {"status":"rejected","reason"}`.
//! - `GET /healthz`: `200 {"status":"ok","buyers":N}`.
//!
//! An unknown buyer or path is 404; a wrong method on a known path is 405.
//!
//! # Determinism
//!
//! Every decision a buyer makes is drawn from a `ChaCha8Rng` seeded with an FNV-1a 64 hash of
//! (fleet seed, buyer id, auction id, `"ping"` or `"post"`). A fresh generator per decision means
//! the same seed and auction id always give the same latency, failure, bid or no-bid, price
//! (rounded to cents) and bid token, whatever order requests arrive in and however many run at
//! once. Only wall-clock values differ between runs: `valid_until` and the ULID in a `lead_id`.
//!
//! # Ping behaviour, in order
//!
//! 1. `Authorization` must equal `expect_auth` when that is set, else 401.
//! 2. The body must be JSON with a string `auction_id`, else 400/422.
//! 3. With probability `failure_probability` the configured [`FailureMode`] takes over.
//! 4. After a uniform latency in `latency_ms_min..=latency_ms_max`, the buyer's own
//!    [`MockFilters`] may refuse the lead (`state_not_served`, `vertical_not_served`,
//!    `below_score_threshold`); otherwise it bids with probability `bid_probability` at a uniform
//!    price in `price_min..=price_max`, or answers `no_demand`.
//!
//! # Post behaviour
//!
//! The post must carry the bid token this buyer issued for that auction (the buyer recomputes it
//! from the seed), else 422 `unknown_bid_token`. After the post latency it accepts with probability
//! `post_accept_probability` (never for the `reject_post` share), else 422 `duplicate_lead`. An
//! accepted `Idempotency-Key` (default `post_<auction_id>`, as in CONTRACT §6) is remembered per
//! buyer: repeating it returns the same `lead_id` and does not count a new lead.
//!
//! # Threads
//!
//! Each fleet thread runs its own monoio runtime on the legacy (epoll) driver, so the fleet works
//! whichever driver Gavel itself uses, and accepts from a shared listening socket. What the fleet
//! saw is recorded in a [`FleetLog`] that holds ids and keys only, never lead PII.

use std::time::Duration;

use crate::http::ConnLimits;

/// Largest request body a mock buyer reads, the same limit Gavel applies (CONTRACT §2).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a mock buyer waits for a request body before answering 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on configured latencies: a buyer slower than a minute is a configuration mistake.
pub const MAX_MOCK_LATENCY_MS: u64 = 60_000;
/// A hanging buyer gives up after this long even if the fleet keeps running.
const HANG_MAX: Duration = Duration::from_secs(120);
/// Gap between two bytes of a `slow_trickle` body.
const TRICKLE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a stopping fleet thread waits for in-flight requests before dropping them.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Per-buyer cap on remembered ping idempotency keys; the counters stay exact beyond it.
const PING_KEY_LIMIT: usize = 100_000;
/// Cap on delivery records kept across the fleet; the counters stay exact beyond it.
const DELIVERY_LIMIT: usize = 1_000_000;
/// Per-buyer cap on remembered post idempotency keys; the oldest are forgotten first so a
/// long-running `gavel serve` does not grow without bound.
const IDEMPOTENCY_LIMIT: usize = 1_000_000;

const CONN_LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(10),
    max_headers_bytes: 16 * 1024,
};

mod answer;
mod config;
mod draws;
mod fleet;
mod handler;
mod log;
mod parse;

pub use answer::MockBody;
pub use config::{
    check_config, validate_buyers, FailureMode, MockBuyerConfig, MockFilters, PostFailMode,
};
pub use fleet::{FleetHandle, MockFleet};
pub use log::{DeliveryRecord, FleetLog, PingOutcome};
