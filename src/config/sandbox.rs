//! The `[[sandbox.buyers]]` schema: one mock buyer ([`MockBuyerConfig`]), its failure modes and
//! own filters, and their defaults. It owns the shape of the table only; whether a fleet's values
//! make sense (probabilities, price and latency ranges, unique ids) is the sandbox's check
//! (`sandbox::validate_buyers`), and what a buyer does with its settings is the sandbox's too.

use serde::Deserialize;

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
    /// The buyer takes the lead and answers `200` with a body that is not JSON: a 2xx that
    /// confirms nothing, which Gavel must treat as "may hold the lead".
    Garbage,
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
