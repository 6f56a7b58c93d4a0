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

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
// The fleet's bookkeeping lock is the one deliberate exception to the no-locks rule (see FleetLog).
#[allow(clippy::disallowed_types)]
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, Either};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{ApiError, FieldError};
use crate::http::shutdown::{Shutdown, Wait};
use crate::http::{ConnLimits, Reply};

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

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// One synthetic buyer, as written under `[[sandbox.buyers]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockBuyerConfig {
    /// Path segment of the buyer's URLs (`/buyers/{id}/ping`); `[a-z0-9_-]`, unique in the fleet.
    pub id: String,
    /// Share of eligible pings the buyer bids on; the rest get `no_demand`.
    #[serde(default = "default_bid_probability")]
    pub bid_probability: f64,
    /// Bids are uniform in `price_min..=price_max`, rounded to cents.
    #[serde(default = "default_price_min")]
    pub price_min: f64,
    #[serde(default = "default_price_max")]
    pub price_max: f64,
    /// ISO 4217 code sent with every bid; a mismatch with Gavel's currency is a buyer error.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Uniform delay before answering a ping; Gavel's engine overhead is measured against it.
    #[serde(default = "default_latency_ms_min")]
    pub latency_ms_min: u64,
    #[serde(default = "default_latency_ms_max")]
    pub latency_ms_max: u64,
    /// Uniform delay before answering a post.
    #[serde(default = "default_post_latency_ms_min")]
    pub post_latency_ms_min: u64,
    #[serde(default = "default_post_latency_ms_max")]
    pub post_latency_ms_max: u64,
    /// Share of posts (with a valid bid token) the buyer accepts.
    #[serde(default = "default_post_accept_probability")]
    pub post_accept_probability: f64,
    /// Lifetime of a bid: `valid_until` = answer time + this.
    #[serde(default = "default_bid_valid_ms")]
    pub bid_valid_ms: u64,
    /// How this buyer misbehaves, if at all.
    #[serde(default)]
    pub failure: FailureMode,
    /// Share of pings (posts for `reject_post`) the failure applies to.
    #[serde(default = "default_failure_probability")]
    pub failure_probability: f64,
    /// The buyer's own targeting, which turns leads away with structured reasons.
    #[serde(default)]
    pub filters: MockFilters,
    /// Exact `Authorization` value the buyer requires; unset accepts anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_auth: Option<String>,
    /// The first this-many post attempts under each idempotency key fail (`post_fail_mode`);
    /// later attempts behave. Exercises Gavel's retries and resumed deliveries.
    #[serde(default)]
    pub post_fail_first: u32,
    #[serde(default)]
    pub post_fail_mode: PostFailMode,
}

/// How an injected post failure looks to Gavel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostFailMode {
    /// 503 with `Retry-After: 0`: a clean "not taken, try again".
    #[default]
    #[serde(rename = "http_503")]
    Http503,
    /// The buyer takes the lead and never answers that attempt (until the caller gives up or the
    /// fleet stops): Gavel cannot know whether the lead was taken.
    Hang,
}

fn default_bid_probability() -> f64 {
    0.7
}
fn default_price_min() -> f64 {
    5.0
}
fn default_price_max() -> f64 {
    40.0
}
fn default_currency() -> String {
    "USD".to_owned()
}
fn default_latency_ms_min() -> u64 {
    10
}
fn default_latency_ms_max() -> u64 {
    30
}
fn default_post_latency_ms_min() -> u64 {
    2
}
fn default_post_latency_ms_max() -> u64 {
    5
}
fn default_post_accept_probability() -> f64 {
    0.95
}
fn default_bid_valid_ms() -> u64 {
    60_000
}
fn default_failure_probability() -> f64 {
    1.0
}

impl MockBuyerConfig {
    /// A well-behaved buyer with every default, for code and tests that build fleets by hand.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            bid_probability: default_bid_probability(),
            price_min: default_price_min(),
            price_max: default_price_max(),
            currency: default_currency(),
            latency_ms_min: default_latency_ms_min(),
            latency_ms_max: default_latency_ms_max(),
            post_latency_ms_min: default_post_latency_ms_min(),
            post_latency_ms_max: default_post_latency_ms_max(),
            post_accept_probability: default_post_accept_probability(),
            bid_valid_ms: default_bid_valid_ms(),
            failure: FailureMode::None,
            failure_probability: default_failure_probability(),
            filters: MockFilters::default(),
            expect_auth: None,
            post_fail_first: 0,
            post_fail_mode: PostFailMode::Http503,
        }
    }
}

/// How a buyer misbehaves for the `failure_probability` share of its pings (or posts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Behaves.
    #[default]
    None,
    /// Never answers the ping; the connection stays open until the fleet stops (at most 120 s).
    Hang,
    /// Answers the ping with 500 and a small JSON body.
    #[serde(rename = "http_500")]
    Http500,
    /// Answers the ping 200 with a body that is not JSON.
    GarbageJson,
    /// Sends 200 headers at once, then a valid body one byte every 200 ms.
    SlowTrickle,
    /// Rejects the post (422) even though it bid.
    RejectPost,
    /// Answers the ping with a valid bid for some other auction.
    WrongAuctionId,
}

impl FailureMode {
    fn affects_pings(self) -> bool {
        !matches!(self, FailureMode::None | FailureMode::RejectPost)
    }
}

/// A buyer's own targeting. Empty lists accept everything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockFilters {
    /// Two-letter states served; others get `state_not_served`.
    pub states: Vec<String>,
    /// Verticals served; others get `vertical_not_served`.
    pub verticals: Vec<String>,
    /// Leads scored below this (or unscored) get `below_score_threshold`.
    pub min_ai_quality_score: Option<f64>,
}

/// Checks a fleet's buyers; the error is (key such as `buyers[2].bid_probability`, reason).
pub fn validate_buyers(buyers: &[MockBuyerConfig]) -> Result<(), (String, String)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, b) in buyers.iter().enumerate() {
        let key = |field: &str| format!("buyers[{i}].{field}");
        if b.id.is_empty() {
            return Err((key("id"), "must not be empty".into()));
        }
        if b.id.len() > 64
            || !b
                .id
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        {
            return Err((
                key("id"),
                format!("`{}` must be 1-64 characters of [a-z0-9_-]", b.id),
            ));
        }
        if let Some(first) = seen.insert(&b.id, i) {
            return Err((
                key("id"),
                format!("duplicate buyer id `{}` (also buyers[{first}])", b.id),
            ));
        }
        for (field, p) in [
            ("bid_probability", b.bid_probability),
            ("post_accept_probability", b.post_accept_probability),
            ("failure_probability", b.failure_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err((key(field), format!("{p} is not a probability in 0..=1")));
            }
        }
        if !(b.price_min.is_finite() && b.price_min > 0.0) {
            return Err((key("price_min"), format!("{} must be above 0", b.price_min)));
        }
        if !b.price_max.is_finite() || b.price_min > b.price_max {
            return Err((
                key("price_max"),
                format!(
                    "{} must be a number no smaller than price_min {}",
                    b.price_max, b.price_min
                ),
            ));
        }
        if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err((
                key("currency"),
                format!("`{}` is not an ISO 4217 code such as USD", b.currency),
            ));
        }
        for (min_field, min, max_field, max) in [
            (
                "latency_ms_min",
                b.latency_ms_min,
                "latency_ms_max",
                b.latency_ms_max,
            ),
            (
                "post_latency_ms_min",
                b.post_latency_ms_min,
                "post_latency_ms_max",
                b.post_latency_ms_max,
            ),
        ] {
            if max > MAX_MOCK_LATENCY_MS {
                return Err((
                    key(max_field),
                    format!("{max} exceeds the {MAX_MOCK_LATENCY_MS} ms ceiling"),
                ));
            }
            if min > max {
                return Err((key(min_field), format!("{min} exceeds {max_field} {max}")));
            }
        }
        if b.bid_valid_ms == 0 || b.bid_valid_ms > 86_400_000 {
            return Err((
                key("bid_valid_ms"),
                format!("{} must be in 1..=86400000 (one day)", b.bid_valid_ms),
            ));
        }
        for (j, s) in b.filters.states.iter().enumerate() {
            if s.len() != 2 || !s.bytes().all(|c| c.is_ascii_alphabetic()) {
                return Err((
                    key(&format!("filters.states[{j}]")),
                    format!("`{s}` is not a two-letter state"),
                ));
            }
        }
        for (j, v) in b.filters.verticals.iter().enumerate() {
            if v.is_empty() {
                return Err((
                    key(&format!("filters.verticals[{j}]")),
                    "must not be empty".into(),
                ));
            }
        }
        if let Some(min) = b.filters.min_ai_quality_score {
            if !(0.0..=1.0).contains(&min) {
                return Err((
                    key("filters.min_ai_quality_score"),
                    format!("{min} is not a score in 0..=1"),
                ));
            }
        }
        if let Some(auth) = &b.expect_auth {
            if auth.is_empty() || HeaderValue::from_str(auth).is_err() {
                return Err((
                    key("expect_auth"),
                    "must be a non-empty, printable header value".into(),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deterministic decisions
// ---------------------------------------------------------------------------------------------

/// FNV-1a 64 over several parts. A 0xff byte, which never occurs in UTF-8, separates the parts so
/// that ("ab", "c") and ("a", "bc") hash differently.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

fn decision_rng(seed: u64, buyer_id: &str, auction_id: &str, phase: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(fnv1a64(&[
        &seed.to_le_bytes(),
        buyer_id.as_bytes(),
        auction_id.as_bytes(),
        phase.as_bytes(),
    ]))
}

/// Everything a buyer decides about one ping. All values are drawn in a fixed order whether they
/// are used or not, so changing one knob (say, the failure mode) does not reshuffle the prices.
struct PingDraws {
    latency: Duration,
    fails: bool,
    bids: bool,
    amount_cents: u64,
    /// The bid token's random part; the token itself is written only when an answer needs it.
    token_bits: u64,
    other_bits: u128,
}

impl PingDraws {
    /// Whether `token` is the bid token this buyer issues for this auction,
    /// `mb_{buyer}_{token_bits as 16 hex digits}` (see [`bid_body`]), compared without building it.
    fn token_matches(&self, buyer_id: &str, token: &str) -> bool {
        token
            .strip_prefix("mb_")
            .and_then(|t| t.strip_prefix(buyer_id))
            .and_then(|t| t.strip_prefix('_'))
            .is_some_and(|hex| {
                hex.len() == 16
                    && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                    && u64::from_str_radix(hex, 16) == Ok(self.token_bits)
            })
    }

    /// The auction id a `wrong_auction_id` buyer answers with.
    fn other_auction_id(&self) -> String {
        format!("auc_{}", ulid::Ulid::from_parts(0, self.other_bits))
    }
}

fn draw_ping(seed: u64, buyer: &MockBuyerConfig, auction_id: &str) -> PingDraws {
    let mut rng = decision_rng(seed, &buyer.id, auction_id, "ping");
    let latency_ms =
        rng.gen_range(buyer.latency_ms_min..=buyer.latency_ms_max.max(buyer.latency_ms_min));
    let failure_roll: f64 = rng.gen();
    let bid_roll: f64 = rng.gen();
    let price_roll: f64 = rng.gen();
    let token_bits: u64 = rng.gen();
    let other_bits: u128 = rng.gen();
    let price = buyer.price_min + price_roll * (buyer.price_max - buyer.price_min);
    PingDraws {
        latency: Duration::from_millis(latency_ms),
        fails: buyer.failure.affects_pings() && failure_roll < buyer.failure_probability,
        bids: bid_roll < buyer.bid_probability,
        // A bid of zero is a buyer error in Gavel's eyes; a configured minimum above 0 never
        // rounds down to it.
        amount_cents: ((price * 100.0).round() as u64).max(1),
        token_bits,
        other_bits,
    }
}

struct PostDraws {
    latency: Duration,
    accepts: bool,
}

fn draw_post(seed: u64, buyer: &MockBuyerConfig, auction_id: &str) -> PostDraws {
    let mut rng = decision_rng(seed, &buyer.id, auction_id, "post");
    let latency_ms = rng.gen_range(
        buyer.post_latency_ms_min..=buyer.post_latency_ms_max.max(buyer.post_latency_ms_min),
    );
    let failure_roll: f64 = rng.gen();
    let accept_roll: f64 = rng.gen();
    let forced_reject =
        buyer.failure == FailureMode::RejectPost && failure_roll < buyer.failure_probability;
    PostDraws {
        latency: Duration::from_millis(latency_ms),
        accepts: !forced_reject && accept_roll < buyer.post_accept_probability,
    }
}

/// The ping fields a buyer reads, borrowed from the body where the JSON allows it.
///
/// Reading these four fields straight from the bytes, instead of building a `serde_json::Value`
/// tree of the whole ping, keeps the fleet's CPU per request small (issue #13: the harness must not
/// be what a co-located benchmark measures). The answers are those of the `Value` reading it
/// replaces: any JSON document is accepted, a field that is missing or of another type reads as
/// absent, and a repeated key takes its last value, as `serde_json::Map` does.
#[derive(Debug, Default, PartialEq)]
struct PingView<'a> {
    auction_id: Option<Cow<'a, str>>,
    state: Option<Cow<'a, str>>,
    vertical: Option<Cow<'a, str>>,
    ai_quality_score: Option<f64>,
}

/// One top-level field's value: a string, a number (as `Value::as_f64` reads it) or anything else.
enum Field<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Other,
}

impl<'a> Field<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A top-level key of a ping, as far as the buyer cares.
enum Key {
    AuctionId,
    State,
    Vertical,
    AiQualityScore,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "auction_id" => Key::AuctionId,
                    "state" => Key::State,
                    "vertical" => Key::Vertical,
                    "ai_quality_score" => Key::AiQualityScore,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for PingView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PingView<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PingView<'de>, A::Error> {
                let mut view = PingView::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::AuctionId => view.auction_id = map.next_value::<Field>()?.into_str(),
                        Key::State => view.state = map.next_value::<Field>()?.into_str(),
                        Key::Vertical => view.vertical = map.next_value::<Field>()?.into_str(),
                        Key::AiQualityScore => {
                            view.ai_quality_score = match map.next_value::<Field>()? {
                                Field::Num(x) => Some(x),
                                _ => None,
                            }
                        }
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(view)
            }
            // A document that is not an object has none of the fields.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PingView<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PingView::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_unit<E>(self) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Why the buyer's own filters turn a ping away, if they do.
fn filter_reject(filters: &MockFilters, ping: &PingView<'_>) -> Option<(&'static str, String)> {
    if !filters.states.is_empty() {
        let state = ping.state.as_deref();
        if !state.is_some_and(|s| filters.states.iter().any(|x| x.eq_ignore_ascii_case(s))) {
            return Some((
                "state_not_served",
                format!(
                    "state {} is not among the buyer's states [{}]",
                    state.unwrap_or("(missing)"),
                    filters.states.join(", ")
                ),
            ));
        }
    }
    if !filters.verticals.is_empty() {
        let vertical = ping.vertical.as_deref();
        if !vertical.is_some_and(|v| filters.verticals.iter().any(|x| x.eq_ignore_ascii_case(v))) {
            return Some((
                "vertical_not_served",
                format!(
                    "vertical {} is not among the buyer's verticals [{}]",
                    vertical.unwrap_or("(missing)"),
                    filters.verticals.join(", ")
                ),
            ));
        }
    }
    if let Some(min) = filters.min_ai_quality_score {
        match ping.ai_quality_score {
            Some(score) if score >= min => {}
            Some(score) => {
                return Some((
                    "below_score_threshold",
                    format!(
                        "ai_quality_score {} < buyer_min {}",
                        fmt_score(score),
                        fmt_score(min)
                    ),
                ))
            }
            None => {
                return Some((
                    "below_score_threshold",
                    format!("ai_quality_score missing; buyer_min {}", fmt_score(min)),
                ))
            }
        }
    }
    None
}

/// Two decimals when that is exact (0.90), the full value otherwise (0.905), so a detail never
/// shows two equal-looking numbers.
fn fmt_score(x: f64) -> String {
    if ((x * 100.0).round() / 100.0 - x).abs() < 1e-12 {
        format!("{x:.2}")
    } else {
        format!("{x}")
    }
}

/// Appends `s` as a JSON string literal, escaped exactly as `serde_json` escapes it.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("strings serialize into a Vec");
}

/// Appends `t` as RFC 3339 in UTC with the fraction trimmed of trailing zeros, the text `time`'s
/// `Rfc3339` format gives for a millisecond-precise instant, without its intermediate buffers.
fn push_rfc3339_ms(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    let (year, month, day) = t.to_calendar_date();
    let mut w = VecWriter(out);
    let _ = write!(
        w,
        "{year:04}-{:02}-{day:02}T{:02}:{:02}:{:02}",
        u8::from(month),
        t.hour(),
        t.minute(),
        t.second()
    );
    let ms = t.millisecond();
    let _ = if ms == 0 {
        Ok(())
    } else if ms % 100 == 0 {
        write!(w, ".{}", ms / 100)
    } else if ms % 10 == 0 {
        write!(w, ".{:02}", ms / 10)
    } else {
        write!(w, ".{ms:03}")
    };
    out.push(b'Z');
}

/// The §5.1 bid answer, written by hand so the amount keeps exactly two decimals. Buyer ids and
/// currencies are validated to need no escaping, so only the auction id goes through the escaper.
fn bid_body(auction_id: &str, buyer: &MockBuyerConfig, draws: &PingDraws) -> Bytes {
    let now = time::OffsetDateTime::now_utc();
    let until = now + Duration::from_millis(buyer.bid_valid_ms);
    // Millisecond precision is plenty for an expiry and keeps the timestamp short.
    let until = until
        .replace_millisecond(until.millisecond())
        .unwrap_or(until);
    let mut out = Vec::with_capacity(160 + auction_id.len());
    out.extend_from_slice(br#"{"auction_id":"#);
    push_json_str(&mut out, auction_id);
    let _ = write!(
        VecWriter(&mut out),
        r#","bid":{{"amount":{}.{:02},"currency":"{}","bid_token":"mb_{}_{:016x}","valid_until":""#,
        draws.amount_cents / 100,
        draws.amount_cents % 100,
        buyer.currency,
        buyer.id,
        draws.token_bits,
    );
    push_rfc3339_ms(&mut out, until);
    out.extend_from_slice(br#""}}"#);
    out.into()
}

/// `fmt::Write` into a byte buffer, so `write!` appends without an intermediate `String`.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The §5.1 no-bid answer, keys in the order `serde_json` writes an object's keys (sorted).
fn no_bid_body(auction_id: &str, reason: &str, detail: &str) -> Bytes {
    let mut out = Vec::with_capacity(80 + auction_id.len() + reason.len() + detail.len());
    out.extend_from_slice(br#"{"auction_id":"#);
    push_json_str(&mut out, auction_id);
    out.extend_from_slice(br#","bid":null,"reject_detail":"#);
    push_json_str(&mut out, detail);
    out.extend_from_slice(br#","reject_reason":"#);
    push_json_str(&mut out, reason);
    out.push(b'}');
    out.into()
}

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

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
    active_connections: AtomicU64,
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
    fn new(buyers: &[MockBuyerConfig]) -> Self {
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

    fn record_ping(&self, buyer_id: &str, headers: &HeaderMap, key: Option<String>) {
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
    fn bump_post_attempt(&self, buyer_id: &str, key: &str) -> u32 {
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

    fn record_ping_body(&self, buyer_id: &str, body: Bytes) {
        self.with_buyer(buyer_id, |b| b.last_ping_body = Some(body));
    }

    fn record_outcome(&self, buyer_id: &str, outcome: PingOutcome) {
        self.with_buyer(buyer_id, |b| b.outcomes[outcome as usize] += 1);
    }

    /// Records a post and, for an accepted one, settles its lead id under the idempotency key in
    /// the same critical section, so two concurrent posts with one key get one lead id.
    fn record_post(
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

// ---------------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------------

/// The fleet's response body: a whole buffer, or a `slow_trickle` body that releases one byte per
/// tick and ends early when the fleet shuts down. Hyper drops it when the client goes away, which
/// stops the ticking.
pub struct MockBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Full<Bytes>),
    Trickle {
        data: Bytes,
        pos: usize,
        tick: Pin<Box<monoio::time::Sleep>>,
        stop: Pin<Box<Wait>>,
    },
}

impl MockBody {
    fn full(body: Full<Bytes>) -> Self {
        Self {
            kind: BodyKind::Full(body),
        }
    }

    fn trickle(data: Bytes, shutdown: &Shutdown) -> Self {
        Self {
            kind: BodyKind::Trickle {
                data,
                pos: 0,
                tick: Box::pin(monoio::time::sleep(TRICKLE_INTERVAL)),
                stop: Box::pin(shutdown.wait()),
            },
        }
    }
}

impl hyper::body::Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(body) => Pin::new(body).poll_frame(cx),
            BodyKind::Trickle {
                data,
                pos,
                tick,
                stop,
            } => {
                if *pos >= data.len() {
                    return Poll::Ready(None);
                }
                if stop.as_mut().poll(cx).is_ready() {
                    *pos = data.len();
                    return Poll::Ready(None);
                }
                if tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let byte = data.slice(*pos..*pos + 1);
                *pos += 1;
                tick.set(monoio::time::sleep(TRICKLE_INTERVAL));
                Poll::Ready(Some(Ok(Frame::data(byte))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(body) => body.is_end_stream(),
            BodyKind::Trickle { data, pos, .. } => *pos >= data.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(body) => body.size_hint(),
            // No length up front, so hyper streams it chunked as each byte is released.
            BodyKind::Trickle { .. } => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

/// What every fleet thread shares.
struct Fleet {
    seed: u64,
    buyers: HashMap<String, MockBuyerConfig>,
    log: Arc<FleetLog>,
}

/// One fleet thread's view: the shared fleet plus this thread's shutdown signal.
struct Local {
    fleet: Arc<Fleet>,
    shutdown: Shutdown,
}

enum Answer {
    Full(Reply),
    Trickle(Bytes),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Full(reply)
    }
}

fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    Reply::text(status, "application/json", body)
}

fn error_reply(status: StatusCode, code: &'static str, message: &str, request_id: &str) -> Reply {
    Reply::error(&ApiError::new(status, code, message), request_id)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    header_str(headers, &HeaderName::from_static("idempotency-key")).map(str::to_owned)
}

fn authorized(buyer: &MockBuyerConfig, headers: &HeaderMap) -> bool {
    match &buyer.expect_auth {
        None => true,
        Some(expected) => headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes()),
    }
}

/// Sleeps for `d` unless the fleet shuts down first; true when the full time passed.
async fn sleep_or_shutdown(d: Duration, shutdown: &Shutdown) -> bool {
    if d.is_zero() {
        return true;
    }
    let sleep = std::pin::pin!(monoio::time::sleep(d));
    let stop = std::pin::pin!(shutdown.wait());
    matches!(select(sleep, stop).await, Either::Left(_))
}

async fn handle(local: &Local, req: Request<Incoming>) -> Response<MockBody> {
    let request_id = crate::http::request_id();
    match route(local, req, &request_id).await {
        Answer::Full(reply) => reply.into_response(&request_id).map(MockBody::full),
        Answer::Trickle(data) => {
            let mut resp = Response::new(MockBody::trickle(data, &local.shutdown));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                h.insert(HeaderName::from_static("x-request-id"), v);
            }
            resp
        }
    }
}

async fn route(local: &Local, req: Request<Incoming>, request_id: &str) -> Answer {
    enum Action {
        Ping,
        Post,
    }
    let path = req.uri().path();
    if path == "/healthz" {
        if req.method() != Method::GET {
            return method_not_allowed("GET", request_id).into();
        }
        let body = serde_json::json!({"status": "ok", "buyers": local.fleet.buyers.len()});
        return Reply::json(StatusCode::OK, &body).into();
    }
    let Some((id, action)) = path
        .strip_prefix("/buyers/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route.",
            request_id,
        )
        .into();
    };
    let action = match action {
        "ping" => Action::Ping,
        "post" => Action::Post,
        _ => {
            return error_reply(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such route.",
                request_id,
            )
            .into()
        }
    };
    let Some(buyer) = local.fleet.buyers.get(id) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            "No mock buyer has this id.",
            request_id,
        )
        .into();
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST", request_id).into();
    }
    match action {
        Action::Ping => ping(local, buyer, req, request_id).await,
        Action::Post => post(local, buyer, req, request_id).await.into(),
    }
}

fn method_not_allowed(allow: &'static str, request_id: &str) -> Reply {
    let err = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("This route only answers {allow}."),
    )
    .with_header(http::header::ALLOW, allow);
    Reply::error(&err, request_id)
}

fn unauthorized(request_id: &str) -> Reply {
    error_reply(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "The Authorization header does not match what this buyer expects.",
        request_id,
    )
}

async fn ping(
    local: &Local,
    buyer: &MockBuyerConfig,
    req: Request<Incoming>,
    request_id: &str,
) -> Answer {
    let log = &local.fleet.log;
    log.record_ping(&buyer.id, req.headers(), idempotency_key(req.headers()));
    if !authorized(buyer, req.headers()) {
        log.record_outcome(&buyer.id, PingOutcome::Unauthorized);
        return unauthorized(request_id).into();
    }
    let body = match crate::http::read_body(req, MAX_BODY_BYTES, BODY_TIMEOUT).await {
        Ok(body) => body,
        Err(e) => {
            log.record_outcome(&buyer.id, PingOutcome::BadRequest);
            return Reply::error(&e, request_id).into();
        }
    };
    let ping: PingView = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            log.record_outcome(&buyer.id, PingOutcome::BadRequest);
            return Reply::error(&ApiError::malformed_json(e), request_id).into();
        }
    };
    let Some(auction_id) = ping.auction_id.as_deref() else {
        log.record_outcome(&buyer.id, PingOutcome::BadRequest);
        let err = ApiError::validation(vec![FieldError::new(
            "auction_id",
            "missing_required",
            "string",
        )]);
        return Reply::error(&err, request_id).into();
    };
    let draws = draw_ping(local.fleet.seed, buyer, auction_id);
    let rejected = filter_reject(&buyer.filters, &ping);
    log.record_ping_body(&buyer.id, body.clone());
    let shutdown = &local.shutdown;

    if draws.fails {
        match buyer.failure {
            FailureMode::Hang => {
                log.record_outcome(&buyer.id, PingOutcome::Hang);
                sleep_or_shutdown(HANG_MAX, shutdown).await;
                return error_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "hang_ended",
                    "The mock buyer stopped hanging.",
                    request_id,
                )
                .into();
            }
            FailureMode::SlowTrickle => {
                log.record_outcome(&buyer.id, PingOutcome::SlowTrickle);
                let (_, body) = normal_answer(buyer, auction_id, &draws, rejected);
                return Answer::Trickle(body);
            }
            FailureMode::Http500 => {
                sleep_or_shutdown(draws.latency, shutdown).await;
                log.record_outcome(&buyer.id, PingOutcome::Http500);
                return error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The mock buyer failed on purpose (http_500).",
                    request_id,
                )
                .into();
            }
            FailureMode::GarbageJson => {
                sleep_or_shutdown(draws.latency, shutdown).await;
                log.record_outcome(&buyer.id, PingOutcome::GarbageJson);
                return json_reply(StatusCode::OK, Bytes::from_static(b"{\"auction_id\": nope"))
                    .into();
            }
            FailureMode::WrongAuctionId => {
                sleep_or_shutdown(draws.latency, shutdown).await;
                log.record_outcome(&buyer.id, PingOutcome::WrongAuctionId);
                let body = bid_body(&draws.other_auction_id(), buyer, &draws);
                return json_reply(StatusCode::OK, body).into();
            }
            FailureMode::None | FailureMode::RejectPost => {}
        }
    }

    sleep_or_shutdown(draws.latency, shutdown).await;
    let (outcome, body) = normal_answer(buyer, auction_id, &draws, rejected);
    log.record_outcome(&buyer.id, outcome);
    json_reply(StatusCode::OK, body).into()
}

/// The answer of a buyer that behaves: its filters first, then whether it wants the lead at all.
fn normal_answer(
    buyer: &MockBuyerConfig,
    auction_id: &str,
    draws: &PingDraws,
    rejected: Option<(&'static str, String)>,
) -> (PingOutcome, Bytes) {
    if let Some((reason, detail)) = rejected {
        return (PingOutcome::NoBid, no_bid_body(auction_id, reason, &detail));
    }
    if !draws.bids {
        let detail = format!("buyer {} has no demand for this lead right now", buyer.id);
        return (
            PingOutcome::NoBid,
            no_bid_body(auction_id, "no_demand", &detail),
        );
    }
    (PingOutcome::Bid, bid_body(auction_id, buyer, draws))
}

/// The post body a buyer reads. The lead must be an object but is skipped unread, never built.
#[derive(Deserialize)]
struct PostBody<'a> {
    auction_id: String,
    #[serde(borrow)]
    bid_token: Cow<'a, str>,
    #[allow(dead_code)]
    lead: AnyObject,
}

/// A JSON object whose contents are skipped: what `serde_json::Map` accepts, without keeping it.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyObject;
            // The words `serde_json::Map` uses, so a wrong lead gets the same 400 detail.
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// `{"reason":…,"status":"rejected"}`, keys in `serde_json`'s (sorted) order.
fn post_rejected(reason: &str) -> Reply {
    let mut out = Vec::with_capacity(40 + reason.len());
    out.extend_from_slice(br#"{"reason":"#);
    push_json_str(&mut out, reason);
    out.extend_from_slice(br#","status":"rejected"}"#);
    json_reply(StatusCode::UNPROCESSABLE_ENTITY, out.into())
}

async fn post(
    local: &Local,
    buyer: &MockBuyerConfig,
    req: Request<Incoming>,
    request_id: &str,
) -> Reply {
    let log = &local.fleet.log;
    let mut record = DeliveryRecord {
        buyer_id: buyer.id.clone(),
        auction_id: String::new(),
        idempotency_key: idempotency_key(req.headers()),
        lead_id: None,
        accepted: false,
        reason: None,
    };
    if !authorized(buyer, req.headers()) {
        record.reason = Some("unauthorized".into());
        log.record_post(record, None);
        return unauthorized(request_id);
    }
    let raw = crate::http::read_body(req, MAX_BODY_BYTES, BODY_TIMEOUT).await;
    let parsed = match &raw {
        Ok(raw) => serde_json::from_slice::<PostBody>(raw).map_err(ApiError::malformed_json),
        Err(e) => Err(e.clone()),
    };
    let body = match parsed {
        Ok(body) => body,
        Err(e) => {
            record.reason = Some("malformed_body".into());
            log.record_post(record, None);
            return Reply::error(&e, request_id);
        }
    };
    record.auction_id.clone_from(&body.auction_id);
    // The buyer recognises only tokens it issued; Gavel must forward the buyer's own token.
    if !draw_ping(local.fleet.seed, buyer, &body.auction_id)
        .token_matches(&buyer.id, &body.bid_token)
    {
        record.reason = Some("unknown_bid_token".into());
        log.record_post(record, None);
        return post_rejected("unknown_bid_token");
    }
    let key = record
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("post_{}", body.auction_id));
    if buyer.post_fail_first > 0 && log.bump_post_attempt(&buyer.id, &key) <= buyer.post_fail_first
    {
        return match buyer.post_fail_mode {
            PostFailMode::Http503 => {
                record.reason = Some("injected_503".into());
                log.record_post(record, None);
                json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(br#"{"error":"temporarily_unavailable"}"#),
                )
                .header(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("0"),
                )
            }
            PostFailMode::Hang => {
                // The lead is taken (settled under its key) but the answer never comes, which
                // is exactly the ambiguous case Gavel must resolve by retrying the same buyer.
                record.reason = Some("injected_hang".into());
                log.record_post(record, Some((key, true)));
                sleep_or_shutdown(HANG_MAX, &local.shutdown).await;
                post_rejected("injected_hang")
            }
        };
    }
    let draws = draw_post(local.fleet.seed, buyer, &body.auction_id);
    sleep_or_shutdown(draws.latency, &local.shutdown).await;
    match log.record_post(record, Some((key, draws.accepts))) {
        Some(lead_id) => {
            let mut out = Vec::with_capacity(16 + lead_id.len());
            out.extend_from_slice(br#"{"lead_id":"#);
            push_json_str(&mut out, &lead_id);
            out.push(b'}');
            json_reply(StatusCode::CREATED, out.into())
        }
        None => post_rejected("duplicate_lead"),
    }
}

// ---------------------------------------------------------------------------------------------
// Fleet threads
// ---------------------------------------------------------------------------------------------

/// Starts mock buyer fleets. The running fleet is a [`FleetHandle`].
pub struct MockFleet;

impl MockFleet {
    /// Binds `listen` (port 0 picks a free port) and starts `threads` fleet threads (at least one)
    /// serving `buyers`. The socket is bound and every thread is accepting when this returns.
    /// Invalid buyers are refused with [`io::ErrorKind::InvalidInput`].
    pub fn start(
        listen: SocketAddr,
        seed: u64,
        buyers: Vec<MockBuyerConfig>,
        threads: usize,
    ) -> io::Result<FleetHandle> {
        validate_buyers(&buyers).map_err(|(key, reason)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {reason}"))
        })?;
        let listener = std::net::TcpListener::bind(listen)?;
        // The legacy driver needs a non-blocking socket; the flag is shared by every clone.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(FleetLog::new(&buyers));
        let fleet = Arc::new(Fleet {
            seed,
            buyers: buyers.into_iter().map(|b| (b.id.clone(), b)).collect(),
            log: log.clone(),
        });
        let mut handle = FleetHandle {
            addr,
            log,
            stops: Vec::new(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let n = threads.max(1);
        for i in 0..n {
            let listener = listener.try_clone()?;
            let (stop_tx, stop_rx) = oneshot::channel();
            let fleet = fleet.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gavel-mock-{i}"))
                .spawn(move || fleet_thread(listener, fleet, stop_rx, ready))?;
            handle.stops.push(stop_tx);
            handle.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                // Returning drops `handle`, which stops the threads already running.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a mock buyer thread died while starting")),
            }
        }
        tracing::info!(%addr, threads = n, buyers = fleet.buyers.len(), "mock buyer fleet listening");
        Ok(handle)
    }
}

/// A running fleet. Dropping it stops the fleet, like [`FleetHandle::stop`].
pub struct FleetHandle {
    addr: SocketAddr,
    log: Arc<FleetLog>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("addr", &self.addr)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl FleetHandle {
    /// The bound address, with the real port when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ping_url(&self, buyer_id: &str) -> String {
        format!("http://{}/buyers/{buyer_id}/ping", self.addr)
    }

    pub fn post_url(&self, buyer_id: &str) -> String {
        format!("http://{}/buyers/{buyer_id}/post", self.addr)
    }

    pub fn log(&self) -> Arc<FleetLog> {
        self.log.clone()
    }

    /// Stops accepting, lets in-flight requests finish (hanging and trickling ones end at once,
    /// the rest get up to 2 s) and joins every fleet thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::warn!("a mock buyer thread panicked");
            }
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts a connection as open for as long as it lives.
struct ConnGuard {
    local: Rc<Cell<usize>>,
    log: Arc<FleetLog>,
}

impl ConnGuard {
    fn new(local: &Rc<Cell<usize>>, log: &Arc<FleetLog>) -> Self {
        local.set(local.get() + 1);
        log.active_connections.fetch_add(1, Ordering::Relaxed);
        Self {
            local: local.clone(),
            log: log.clone(),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.local.set(self.local.get() - 1);
        self.log.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn fleet_thread(
    listener: std::net::TcpListener,
    fleet: Arc<Fleet>,
    stop_rx: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let mut rt = match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        // Registering the socket needs the runtime's driver, hence inside `block_on`.
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let shutdown = Shutdown::new();
        {
            let shutdown = shutdown.clone();
            // A dropped handle (sender gone) stops the thread just like an explicit stop.
            monoio::spawn(async move {
                let _ = stop_rx.await;
                shutdown.fire();
            });
        }
        let log = fleet.log.clone();
        let local = Rc::new(Local {
            fleet,
            shutdown: shutdown.clone(),
        });
        let open = Rc::new(Cell::new(0usize));
        loop {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(shutdown.wait());
            match select(accept, stop).await {
                Either::Left((Ok((stream, _peer)), _)) => {
                    let guard = ConnGuard::new(&open, &log);
                    let local = local.clone();
                    let shutdown = shutdown.clone();
                    monoio::spawn(async move {
                        let _guard = guard;
                        crate::http::serve_connection(stream, CONN_LIMITS, shutdown, move |req| {
                            let local = local.clone();
                            async move { Ok::<_, Infallible>(handle(&local, req).await) }
                        })
                        .await;
                    });
                }
                Either::Left((Err(e), _)) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "mock buyer accept failed");
                    sleep_or_shutdown(Duration::from_millis(10), &shutdown).await;
                }
                Either::Right(_) => break,
            }
        }
        drop(listener);
        let deadline = std::time::Instant::now() + DRAIN_GRACE;
        while open.get() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[cfg(test)]
mod unit {
    use super::*;

    /// (auction_id, state, vertical, ai_quality_score) as read from a ping; `None` when refused.
    type Read = Option<(Option<String>, Option<String>, Option<String>, Option<f64>)>;

    /// What the `Value` reading this replaced made of a ping.
    fn by_value(body: &str) -> Read {
        let v: Value = serde_json::from_str(body).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some((
            s("auction_id"),
            s("state"),
            s("vertical"),
            v.get("ai_quality_score").and_then(Value::as_f64),
        ))
    }

    fn by_view(body: &str) -> Read {
        let v: PingView = serde_json::from_str(body).ok()?;
        let s = |c: &Option<Cow<str>>| c.as_deref().map(str::to_owned);
        Some((
            s(&v.auction_id),
            s(&v.state),
            s(&v.vertical),
            v.ai_quality_score,
        ))
    }

    #[test]
    fn ping_view_reads_what_a_value_tree_reads() {
        for body in [
            r#"{"auction_id":"auc_1","state":"TX","vertical":"solar","ai_quality_score":0.84}"#,
            r#"{"auction_id":"auc_\u0031","state":"T\"X","extra":{"a":[1,{"b":null}]},"ai_quality_score":1}"#,
            r#"{"auction_id":5,"state":null,"vertical":["x"],"ai_quality_score":"0.9"}"#,
            r#"{"auction_id":"a","auction_id":"b","ai_quality_score":-3}"#,
            r#"{"auction_id":"a","auction_id":7}"#,
            r#"{"auction\u005fid":"escaped key"}"#,
            r#"[1,2,{"auction_id":"x"}]"#,
            r#""auc_1""#,
            "12",
            "null",
            "true",
            "{}",
            "{\"auction_id\": nope",
            r#"{"auction_id":"a"} trailing"#,
            "",
        ] {
            assert_eq!(by_view(body), by_value(body), "{body}");
        }
    }

    #[test]
    fn timestamps_match_times_rfc3339() {
        use time::format_description::well_known::Rfc3339;
        let base = time::OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        for ms in [
            0u64,
            1,
            10,
            100,
            120,
            123,
            500,
            999,
            86_399_999,
            31_622_400_000,
        ] {
            let t = base + Duration::from_millis(ms);
            let mut out = Vec::new();
            push_rfc3339_ms(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), t.format(&Rfc3339).unwrap());
        }
    }

    #[test]
    fn hand_written_bodies_are_what_serde_json_writes() {
        let odd = "auc_\"quoted\"\\\n\u{1}é";
        assert_eq!(
            no_bid_body(odd, "no_demand", "buyer x has no demand"),
            serde_json::to_vec(&serde_json::json!({
                "auction_id": odd, "bid": null,
                "reject_reason": "no_demand", "reject_detail": "buyer x has no demand",
            }))
            .unwrap()
        );
        let expected = serde_json::to_vec(
            &serde_json::json!({"status": "rejected", "reason": "duplicate_lead"}),
        )
        .unwrap();
        assert_eq!(post_rejected("duplicate_lead").body, expected);

        let buyer = MockBuyerConfig::new("b-1");
        let draws = draw_ping(7, &buyer, odd);
        let bid: Value = serde_json::from_slice(&bid_body(odd, &buyer, &draws)).unwrap();
        assert_eq!(bid["auction_id"], odd);
        let token = bid["bid"]["bid_token"].as_str().unwrap();
        assert_eq!(token, format!("mb_b-1_{:016x}", draws.token_bits));
        assert!(draws.token_matches("b-1", token));
        assert!(!draws.token_matches("b-1", &token.to_uppercase()));
        assert!(!draws.token_matches("b-2", token));
        assert!(!draws.token_matches("b-1", &token[..token.len() - 1]));
        let amount = bid["bid"]["amount"].as_f64().unwrap();
        assert_eq!((amount * 100.0).round() as u64, draws.amount_cents);
        let until = bid["bid"]["valid_until"].as_str().unwrap();
        assert!(crate::auction::parse_rfc3339_ms(until).is_some(), "{until}");
    }
}
