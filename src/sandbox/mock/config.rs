//! A mock buyer's configuration: the `[[sandbox.buyers]]` table ([`MockBuyerConfig`]), its
//! failure modes and own filters, their defaults, and [`validate_buyers`], which checks a fleet
//! before it starts. It does not own what a buyer does with its configuration: the decisions are
//! in `draws`, the answers in `handler`.

use std::collections::HashMap;

use http::HeaderValue;
use serde::Deserialize;

use super::MAX_MOCK_LATENCY_MS;

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
    pub(super) fn affects_pings(self) -> bool {
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
        let at = |(field, reason): Invalid| (format!("buyers[{i}].{field}"), reason);
        check_id(b, i, &mut seen).map_err(at)?;
        check_bids(b).map_err(at)?;
        check_filters(&b.filters).map_err(at)?;
        if let Some(auth) = &b.expect_auth {
            if auth.is_empty() || HeaderValue::from_str(auth).is_err() {
                return Err(at((
                    "expect_auth".into(),
                    "must be a non-empty, printable header value".into(),
                )));
            }
        }
    }
    Ok(())
}

/// A buyer's invalid setting: (field under `buyers[i].`, reason).
type Invalid = (String, String);

/// The id's form, and that no earlier buyer (`seen`: id to index) has it.
fn check_id<'a>(
    b: &'a MockBuyerConfig,
    i: usize,
    seen: &mut HashMap<&'a str, usize>,
) -> Result<(), Invalid> {
    if b.id.is_empty() {
        return Err(("id".into(), "must not be empty".into()));
    }
    if b.id.len() > 64
        || !b
            .id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        return Err((
            "id".into(),
            format!("`{}` must be 1-64 characters of [a-z0-9_-]", b.id),
        ));
    }
    if let Some(first) = seen.insert(&b.id, i) {
        return Err((
            "id".into(),
            format!("duplicate buyer id `{}` (also buyers[{first}])", b.id),
        ));
    }
    Ok(())
}

/// Probabilities, prices, currency, latencies and bid validity.
fn check_bids(b: &MockBuyerConfig) -> Result<(), Invalid> {
    for (field, p) in [
        ("bid_probability", b.bid_probability),
        ("post_accept_probability", b.post_accept_probability),
        ("failure_probability", b.failure_probability),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err((field.into(), format!("{p} is not a probability in 0..=1")));
        }
    }
    if !(b.price_min.is_finite() && b.price_min > 0.0) {
        return Err((
            "price_min".into(),
            format!("{} must be above 0", b.price_min),
        ));
    }
    if !b.price_max.is_finite() || b.price_min > b.price_max {
        return Err((
            "price_max".into(),
            format!(
                "{} must be a number no smaller than price_min {}",
                b.price_max, b.price_min
            ),
        ));
    }
    if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err((
            "currency".into(),
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
                max_field.into(),
                format!("{max} exceeds the {MAX_MOCK_LATENCY_MS} ms ceiling"),
            ));
        }
        if min > max {
            return Err((min_field.into(), format!("{min} exceeds {max_field} {max}")));
        }
    }
    if b.bid_valid_ms == 0 || b.bid_valid_ms > 86_400_000 {
        return Err((
            "bid_valid_ms".into(),
            format!("{} must be in 1..=86400000 (one day)", b.bid_valid_ms),
        ));
    }
    Ok(())
}

/// The buyer's own targeting: two-letter states, non-empty verticals, a score in 0..=1.
fn check_filters(filters: &MockFilters) -> Result<(), Invalid> {
    for (j, s) in filters.states.iter().enumerate() {
        if s.len() != 2 || !s.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err((
                format!("filters.states[{j}]"),
                format!("`{s}` is not a two-letter state"),
            ));
        }
    }
    for (j, v) in filters.verticals.iter().enumerate() {
        if v.is_empty() {
            return Err((
                format!("filters.verticals[{j}]"),
                "must not be empty".into(),
            ));
        }
    }
    if let Some(min) = filters.min_ai_quality_score {
        if !(0.0..=1.0).contains(&min) {
            return Err((
                "filters.min_ai_quality_score".into(),
                format!("{min} is not a score in 0..=1"),
            ));
        }
    }
    Ok(())
}
