//! Configuration: the TOML schema, loading, range checks and CLI overrides.
//!
//! This module owns the shape of `config/*.toml`, every check that needs nothing but the file's own
//! values (ranges, required keys, cross-references between sections), and the error that names the
//! file, the key and the reason. It does not own the checks that need a subsystem's knowledge (a
//! buyer URL's origin, a bid-token key, a webhook URL or signing secret, the sandbox fleet's
//! rules): each subsystem checks its own section, and `cli::load_config` runs them all after
//! [`Config::validate`], so a bad config is still refused at start. Nor does it own any runtime
//! state: the rest of the crate receives a validated, immutable [`Config`] and never re-reads the
//! file.

pub use crate::types::money::MAX_MONEY;
use crate::types::money::{deserialize_usd, Cents, MAX_CENTS};
use crate::types::{is_snake_id, MAX_DRIVER_AGE_BAND_LEN};
pub use crate::types::{Scope, Tenant};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod dns;
pub mod egress;
pub mod format;
pub mod parties;
pub mod sandbox;

pub use dns::DnsConfig;
pub use egress::EgressConfig;
pub use format::FormatConfig;
pub use parties::SellerConfig;
pub use sandbox::MockBuyerConfig;

/// Hard ceiling on the bid window the contract allows (CONTRACT §4.1: capped at 5 s).
pub const MAX_WINDOW_MS: u64 = 5_000;
/// Longest a buyer's `ping_timeout_ms` may be: no bid window is longer, so a longer timeout could
/// never be waited for.
pub const MAX_PING_TIMEOUT_MS: u64 = MAX_WINDOW_MS;
/// Longest one post's delivery may take, retries and fallbacks included (`post.budget_ms`), and
/// so the longest one post call may wait (`buyers[].post_timeout_ms`): the seller holds its
/// connection open meanwhile, and the industry's post SLA is 200 ms.
pub const MAX_POST_BUDGET_MS: u64 = 30_000;
/// `[auction] max_price` when the file gives none: 1,000.00 USD, above any price a real lead
/// fetches and far below what a typo (an extra three zeros) would make of one.
pub const DEFAULT_MAX_PRICE: Cents = 100_000;
// Architecture Invariant [named-limits]: everything has a limit with a name and a unit; the
// limits of the configuration and of requests are the constants around here.
/// Largest request body any endpoint accepts (CONTRACT §2).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most buyers one tenant holds (config file and admin API together): bounds the buyer table,
/// each auction's eligibility pass and the per-buyer metric series. Per tenant, so the sandbox
/// (whose token is public) can never fill production's room.
pub const MAX_BUYERS_PER_TENANT: usize = 1_000;

/// SHA-256 of the tokens Gavel publishes (the README's sandbox token, and the sandbox operator's
/// token documented beside it): anyone can send them, so a server that is reachable from a
/// network refuses to start with them ([`Config::validate`]: only on a loopback `server.listen`).
pub const WELL_KNOWN_TOKEN_SHA256: [&str; 2] = [
    // gv_test_sandbox_readme_0000000000000000000000 (README, config/gavel.toml)
    "db9188f74478b575896d409b5f9a2d709d4d0d7fbd35046f9d544877d49aaa4d",
    // gv_test_sandbox_operator_00000000000000000000 (the sandbox operator's, documented)
    "e2511af4f03f6e155c459ee03f194099df90bcf16b4d9aa94dc2bf90614a2e87",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// Which io driver each core's monoio runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start fails where the kernel forbids it.
    Uring,
    /// epoll (mio) only.
    Legacy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auction: AuctionConfig,
    #[serde(default)]
    pub post: PostConfig,
    #[serde(default)]
    pub bid_token: BidTokenConfig,
    #[serde(default)]
    pub oauth: OAuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Sellers: the parties that send leads (each token may name one).
    #[serde(default)]
    pub sellers: Vec<SellerConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub buyers: Vec<BuyerConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// How webhooks are delivered (every endpoint alike).
    #[serde(default)]
    pub webhook_delivery: WebhookDeliveryConfig,
    /// Sellers' webhook endpoints (CONTRACT §8).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where buyer host names are looked up and how long answers are kept.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Which private or loopback addresses buyer URLs may reach.
    #[serde(default)]
    pub egress: EgressConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Benchmark-only: `false` skips all latency and counter recording, to measure what it costs.
    pub record: bool,
    /// Address of the separate operations listener that serves `/metrics`, `/healthz` and
    /// `/readyz` without a token (port 0 picks a free port); `"off"` disables it. `/metrics` on
    /// the API port always needs a production token with the `reports` scope.
    #[serde(deserialize_with = "address_or_off")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            record: true,
            listen: Some(DEFAULT_METRICS_LISTEN.parse().expect("static address")),
        }
    }
}

/// Where the operations listener binds unless `[metrics] listen` says otherwise: loopback only,
/// since it answers without a token.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// A socket address, or `"off"` for none.
fn address_or_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "expected an address such as 127.0.0.1:9464, or \"off\": {e}"
        ))
    })
}

/// Where and how Gavel keeps idempotency keys, auction records and leads on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the sled database; created when missing.
    pub path: PathBuf,
    /// How long an idempotency key replays its first answer.
    pub idempotency_retention_days: u64,
    /// How long auction records and leads are kept.
    pub record_retention_days: u64,
    /// sled's page cache size.
    pub cache_capacity_bytes: u64,
    /// How often the background expiry pass runs.
    pub expiry_interval_ms: u64,
    /// Sizes each core's write-ahead log queue: `8 ×` this many writes may wait for the disk,
    /// and one more is refused with 503 (one `fdatasync` serves every write waiting).
    pub group_commit_max_batch: usize,
    /// Benchmark-only: `false` answers before records reach the disk, to measure what durability
    /// costs. Never turn it off in production: a crash would then lose acknowledged sales.
    pub durable: bool,
    /// Environment variable holding the 32-byte key (base64 or hex) that seals buyers' secrets in
    /// the store. Unset: Gavel generates one on first start and keeps it in the store, beside what
    /// it seals (so a copy of the store carries its key; see docs/operations.md, "Secrets").
    pub seal_key_env: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/gavel.sled"),
            idempotency_retention_days: 30,
            record_retention_days: 90,
            cache_capacity_bytes: 256 * 1024 * 1024,
            expiry_interval_ms: 60_000,
            group_commit_max_batch: 1024,
            durable: true,
            seal_key_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address every core's SO_REUSEPORT listener binds. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Number of pinned cores; 0 means every core the process may run on.
    pub cores: usize,
    pub driver: Driver,
    /// Pin each core's thread to one CPU. Off is useful when several Gavels share a box.
    pub pin_threads: bool,
    /// A client must send its request head within this time (from its first byte, or from the
    /// accept for a connection's first request) or the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in progress and nothing received for this long is
    /// closed, so idle clients do not hold file descriptors forever.
    pub idle_timeout_ms: u64,
    /// Open connections one core accepts before it closes new ones at once. Lowered at start
    /// when the process's file-descriptor limit could not hold that many (see the start log).
    pub max_connections_per_core: usize,
    /// Requests one core works on at once (pings whose auction runs, posts delivering, lookups,
    /// work handed over from other cores); past it new ones get 503 `overloaded` at once. A bound
    /// on memory and outbound sockets, not on latency: see `max_queue_delay_ms` for that.
    pub max_in_flight_requests_per_core: usize,
    /// Longest a request may wait for its core: from the moment it is ready to run (body read,
    /// validated) to the moment its owning core starts it, and how far behind schedule the core's
    /// event loop may run (a tick every `runtime::admission::LOOP_TICK_MS`). Past it new pings,
    /// one-call leads, lookups and status reports get 503 `overloaded` with `Retry-After: 1`;
    /// posts, which finish a sale already made, get twice this.
    pub max_queue_delay_ms: u64,
    /// How long shutdown waits for in-flight requests before the process exits anyway.
    pub shutdown_grace_ms: u64,
    /// `[server.tls]`: the API listener speaks TLS with this certificate and key; absent, plain
    /// HTTP (the default, for a local run or behind a TLS terminator).
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: the seller-facing listener's certificate chain and private key, PEM files read
/// at start and again on SIGHUP (new handshakes get the new pair; open connections keep theirs).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            cores: 0,
            driver: Driver::Auto,
            pin_threads: true,
            header_read_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            max_connections_per_core: 10_000,
            max_in_flight_requests_per_core: 10_000,
            max_queue_delay_ms: 50,
            shutdown_grace_ms: 10_000,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuctionConfig {
    /// Bid window when the seller sends no `expires_at`; never more than 5 000 ms.
    pub window_ms: u64,
    /// Platform-wide floor, in cents; a bid must also clear its buyer's own floor. The file says
    /// USD with at most two decimals (`floor = 2.50`).
    #[serde(deserialize_with = "deserialize_usd")]
    pub floor: Cents,
    /// Share of the winning price Gavel keeps, in percent (0–100). Not money: a plain number,
    /// checked at load.
    pub margin_percent: f64,
    /// Fixed amount Gavel keeps per sold auction, in cents; USD with at most two decimals in the
    /// file.
    #[serde(deserialize_with = "deserialize_usd")]
    pub margin_fixed: Cents,
    /// Highest price anything may have, in cents (USD in the file, default
    /// [`DEFAULT_MAX_PRICE`]): floors and fixed prices above it are refused at load, and a buyer
    /// bidding above it is ignored (`error`, reason `above_max_price`), never sold at that price.
    #[serde(deserialize_with = "deserialize_usd")]
    pub max_price: Cents,
    pub currency: String,
    /// Buyers pinged at most per auction, after filtering; extra eligible buyers are `capped`.
    pub max_buyers_per_auction: usize,
    /// Auctions one tenant may hold in memory on one core (open or awaiting post) before its pings
    /// are refused with 503. Each tenant has its own room, so sandbox traffic can never fill
    /// production's; the 503's `Retry-After` says when the tenant's earliest auction leaves.
    pub max_auctions_per_core: usize,
    /// How long a closed auction stays in its shard for a post after its bid expires.
    pub retention_ms: u64,
    /// Largest buyer ping response read, in bytes; a larger answer is the buyer's error.
    pub max_buyer_response_bytes: usize,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        Self {
            window_ms: 2_000,
            floor: 0,
            margin_percent: 10.0,
            margin_fixed: 0,
            max_price: DEFAULT_MAX_PRICE,
            currency: "USD".into(),
            max_buyers_per_auction: 64,
            max_auctions_per_core: 100_000,
            retention_ms: 120_000,
            max_buyer_response_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostConfig {
    /// Total time one post may spend on delivery, retries and fallbacks included.
    pub budget_ms: u64,
    /// Attempts per buyer for retryable failures (5xx, 429, connect errors).
    pub max_attempts_per_buyer: u32,
    /// First retry delay; each further retry doubles it.
    pub backoff_initial_ms: u64,
    /// When the winner rejects, offer the lead to the next-highest still-valid bid.
    pub fallback: bool,
    /// How many buyers one post may try, the winner included.
    pub max_fallbacks: usize,
}

impl Default for PostConfig {
    fn default() -> Self {
        Self {
            budget_ms: 1_000,
            max_attempts_per_buyer: 3,
            backoff_initial_ms: 50,
            fallback: true,
            max_fallbacks: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BidTokenConfig {
    /// Lifetime of Gavel's bid token; the buyer's own `valid_until` shortens it.
    pub ttl_ms: Option<u64>,
    pub current: Option<KeyConfig>,
    /// The key used before the last rotation; tokens it signed still verify.
    pub previous: Option<KeyConfig>,
}

impl BidTokenConfig {
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms.unwrap_or(60_000)
    }
}

/// Bounds of every requests- or pings-per-second limit.
pub const RATE_PER_S: std::ops::RangeInclusive<f64> = 0.1..=1_000_000.0;

/// CONTRACT §7 rate limits. Each holds across all cores; bursts are 5 % of a second's rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second one API client (static token or OAuth client) may send.
    pub client_requests_per_s: f64,
    /// Auctions one seller may have running at once, all its credentials together, unless its
    /// `[[sellers]]` entry says otherwise.
    pub seller_max_concurrent_auctions: u32,
    /// Pings per second one seller may send, all its credentials together, unless its
    /// `[[sellers]]` entry says otherwise.
    pub seller_pings_per_s: f64,
    /// Auctions one seller may hold won but not yet posted, all cores together, unless its
    /// `[[sellers]]` entry says otherwise. Without it one seller that never posts could fill the
    /// room every seller of the tenant shares.
    pub seller_max_unposted_auctions: u32,
    /// Pings per second sent to one buyer, unless its `max_pings_per_s` says otherwise.
    pub buyer_pings_per_s: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            client_requests_per_s: 1_000.0,
            seller_max_concurrent_auctions: 1_000,
            seller_pings_per_s: 1_000.0,
            seller_max_unposted_auctions: 50_000,
            buyer_pings_per_s: 100.0,
        }
    }
}

/// Events a webhook endpoint may subscribe to (CONTRACT §8).
pub const WEBHOOK_EVENTS: [&str; 3] = ["lead.posted", "lead.status_changed", "auction.closed"];
/// Most retries one webhook delivery may be given.
pub const MAX_WEBHOOK_RETRIES: usize = 20;
/// Longest wait between two webhook attempts, schedule or `Retry-After` alike: 7 days, in ms.
pub const MAX_WEBHOOK_DELAY_MS: u64 = 7 * 24 * 3_600_000;

/// How the delivery worker sends webhooks. The defaults follow CONTRACT §8.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliveryConfig {
    /// Wait before each retry, in ms: one entry per retry, so its length is the number of retries.
    /// Default: 5 retries, each 4× later than the one before, the last ~22.7 h after the first try.
    pub retry_schedule_ms: Vec<u64>,
    /// A receiver that has not answered within this time has failed the attempt.
    pub timeout_ms: u64,
    /// Deliveries in flight to one endpoint at most; more wait their turn in the outbox.
    pub max_in_flight_per_endpoint: usize,
    /// Threads sending webhooks, all endpoints together: the most deliveries in flight at once.
    /// A stalled receiver holds at most `max_in_flight_per_endpoint` of them.
    pub threads: usize,
    /// A receiver's `Retry-After` is honoured up to this long, in ms.
    pub max_retry_after_ms: u64,
    /// PEM bundle of extra CA certificates trusted for `https://` receivers (a private CA), in
    /// addition to the public (webpki) roots. Read once, when the config is loaded.
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhookDeliveryConfig {
    fn default() -> Self {
        Self {
            retry_schedule_ms: vec![240_000, 960_000, 3_840_000, 15_360_000, 61_440_000],
            timeout_ms: 10_000,
            max_in_flight_per_endpoint: 16,
            threads: 32,
            max_retry_after_ms: 86_400_000,
            ca_file: None,
        }
    }
}

/// One seller webhook endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Stable name (snake_case): labels metrics, keys the outbox, names the endpoint in the API.
    pub id: String,
    pub tenant: Tenant,
    /// Only this seller's events; every seller of the tenant when absent. Written `client` in
    /// configs from before parties: the implicit seller of a token without a party is named by
    /// its client, so such a config keeps meaning the same seller.
    #[serde(default, alias = "client")]
    pub seller: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Signing secrets (`whsec_…`). Each one signs every delivery, so a receiver can move to a new
    /// secret while the old one is still listed.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Environment variable holding the secrets instead, separated by spaces.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// Event types sent to this endpoint; `auction.closed` only when listed.
    pub events: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl WebhookConfig {
    /// Whether this endpoint receives `event_type` for `seller` of `tenant`.
    pub fn wants(&self, tenant: Tenant, seller: &str, event_type: &str) -> bool {
        self.enabled
            && self.tenant == tenant
            && self.seller.as_deref().is_none_or(|c| c == seller)
            && self.events.iter().any(|e| e == event_type)
    }
}

/// Bounds of `oauth.access_token_ttl_s`.
pub const ACCESS_TOKEN_TTL_S: std::ops::RangeInclusive<u64> = 1..=86_400;

/// OAuth 2.0 client credentials (`POST /oauth/token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Lifetime of an issued access token, seconds (1..=86400).
    pub access_token_ttl_s: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_ttl_s: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Small number carried in each token so verification picks the right key.
    pub id: u8,
    /// Base64 secret, at least 32 bytes once decoded. Prefer `secret_env` outside the sandbox.
    pub secret: Option<String>,
    /// Name of an environment variable holding the base64 secret.
    pub secret_env: Option<String>,
}

/// A static bearer token. Only its SHA-256 is stored; the plaintext is shown once by `gavel token create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Client name: shows up in logs and scopes idempotency keys.
    pub client: String,
    pub tenant: Tenant,
    /// Lowercase hex SHA-256 of the full token string.
    pub sha256: String,
    pub scopes: BTreeSet<Scope>,
    /// The buyer this token belongs to (a `[[buyers]]` id of the same tenant): a buyer reports
    /// the status of the leads it bought with it (`POST /v1/leads/{lead_uuid}/status`).
    #[serde(default)]
    pub buyer: Option<String>,
    /// The seller this token belongs to (a `[[sellers]]` id of the same tenant). A token that
    /// names no party is a seller token of an implicit seller whose id is its `client`.
    #[serde(default)]
    pub seller: Option<String>,
    /// This token is the operator's: it sees every record of its tenant, and with `admin` it
    /// manages buyers, sellers and every party's credentials.
    #[serde(default)]
    pub operator: bool,
    /// This client's requests per second, instead of `limits.client_requests_per_s`.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
}

/// A buyer definition, as the file's `[[buyers]]` entry, the admin API's body and the stored buyer
/// row all write it (serialized with the floor in USD, so it reads back through the same rules).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerConfig {
    pub id: String,
    pub tenant: Tenant,
    /// Where pings go. Empty (left out) for a direct-post buyer, which has a `fixed_price`
    /// instead; exactly one of the two is set.
    #[serde(default)]
    pub ping_url: String,
    pub post_url: String,
    /// A direct-post buyer's price (USD in the file, cents here): it is never pinged and bids this
    /// for every lead its filters accept.
    #[serde(
        default,
        deserialize_with = "deserialize_opt_usd",
        serialize_with = "crate::types::money::serialize_opt_usd",
        skip_serializing_if = "Option::is_none"
    )]
    pub fixed_price: Option<Cents>,
    /// How the ping becomes this buyer's request and how its answer is read; absent: Gavel's
    /// buyer contract.
    #[serde(default)]
    pub ping_format: Option<FormatConfig>,
    /// How the post becomes this buyer's request and how its answer is read; absent: Gavel's
    /// buyer contract.
    #[serde(default)]
    pub post_format: Option<FormatConfig>,
    /// Header sent on every call to this buyer, e.g. `{ name = "Authorization", value = "Bearer …" }`.
    pub auth_header: Option<HeaderConfig>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub filters: BuyerFilters,
    /// The least this buyer may pay, in cents; lower bids from it cannot win. The file says USD
    /// with at most two decimals (`floor = 5.00`).
    #[serde(
        default,
        deserialize_with = "deserialize_usd",
        serialize_with = "crate::types::money::serialize_usd"
    )]
    pub floor: Cents,
    #[serde(default = "default_ping_timeout_ms")]
    pub ping_timeout_ms: u64,
    #[serde(default = "default_post_timeout_ms")]
    pub post_timeout_ms: u64,
    /// Most pings per second Gavel sends this buyer, all cores together; over it the buyer is
    /// skipped as `rate_limited`. Default: `limits.buyer_pings_per_s`.
    #[serde(default)]
    pub max_pings_per_s: Option<f64>,
    /// TLS to this buyer's `https://` URLs (`[buyers.tls]`); absent: the public (webpki) roots,
    /// no client certificate, the URL's host as server name, warm-up on.
    #[serde(default)]
    pub tls: Option<BuyerTlsConfig>,
}

/// How Gavel speaks TLS to one buyer. Its files are read once, when the config is loaded (never
/// on a core); buyers with the same three files share one TLS client configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerTlsConfig {
    /// PEM bundle of the CA certificates that sign this buyer's server certificate (a private
    /// CA). When set it replaces the public roots for this buyer: only these CAs are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain Gavel presents when the buyer asks for one (mutual TLS); needs
    /// `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the buyer's certificate, instead of the URL's host
    /// (e.g. the URL names an IP address or an internal load balancer).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Each core opens one connection to this buyer's ping origin when it starts, so the first
    /// auction does not pay the TLS handshake.
    #[serde(default = "yes")]
    pub warm_up: bool,
}

fn yes() -> bool {
    true
}

/// An optional USD amount, read like every other amount of the file ([`deserialize_usd`]); JSON's
/// `null` (the buyer table and the admin API write absent amounts so) is no amount.
fn deserialize_opt_usd<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cents>, D::Error> {
    #[derive(Deserialize)]
    struct Usd(#[serde(deserialize_with = "deserialize_usd")] Cents);
    Option::<Usd>::deserialize(d).map(|o| o.map(|u| u.0))
}
fn default_ping_timeout_ms() -> u64 {
    1_500
}
fn default_post_timeout_ms() -> u64 {
    800
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Read the header value from this environment variable instead of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env: Option<String>,
}

/// Eligibility filters; an empty list means "no restriction".
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuyerFilters {
    pub verticals: Vec<String>,
    pub states: Vec<String>,
    pub zip3_allow: Vec<String>,
    pub zip3_deny: Vec<String>,
    pub min_ai_quality_score: Option<f64>,
    pub tcpa_consent_required: bool,
    pub sources_allow: Vec<String>,
    pub sources_deny: Vec<String>,
    /// Allowed `sub_vertical`s; a ping without one is refused when the list is set.
    pub sub_verticals: Vec<String>,
    /// Allowed `driver_age_band`s, as the seller writes them (`25-34`); a ping without one is
    /// refused when the list is set.
    pub driver_age_bands: Vec<String>,
    /// The `currently_insured` value the buyer takes; a ping without one is refused when set.
    pub currently_insured: Option<bool>,
    /// Inclusive bounds on `vehicle_count`; a ping without one is refused when set.
    pub vehicle_count: Option<CountRange>,
    /// Rules over the ping's `attributes`, all of which must hold.
    pub attributes: Vec<AttributeRule>,
}

/// Inclusive bounds on a whole number; an absent bound is open.
#[derive(Debug, Clone, Copy, Deserialize, Default, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CountRange {
    pub min: Option<u32>,
    pub max: Option<u32>,
}

/// How an attribute rule tests the ping's value under `key`.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributeOp {
    /// The value equals `value`.
    Eq,
    /// The value is one of `values`.
    In,
    /// The value is none of `values`; a missing value passes.
    NotIn,
    /// The value is a number within `min..=max` (either bound may be left open).
    Range,
    /// The key is present with a non-null value.
    Exists,
}

impl AttributeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeOp::Eq => "eq",
            AttributeOp::In => "in",
            AttributeOp::NotIn => "not_in",
            AttributeOp::Range => "range",
            AttributeOp::Exists => "exists",
        }
    }
}

/// A scalar a filter compares an attribute with: what TOML can write and a ping attribute can hold.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(untagged)]
pub enum FilterValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// One rule of `[buyers.filters] attributes`, e.g. `{ key = "credit_band", op = "in", values =
/// ["good", "excellent"] }`. Which of `value`, `values`, `min`, `max` a rule takes depends on `op`;
/// [`Config::validate`] refuses the others, so a typo cannot silently widen a filter.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeRule {
    pub key: String,
    pub op: AttributeOp,
    #[serde(default)]
    pub value: Option<FilterValue>,
    #[serde(default)]
    pub values: Vec<FilterValue>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

impl AttributeRule {
    /// A rule of `op` on `key` with no operands; set the ones `op` takes.
    pub fn new(key: &str, op: AttributeOp) -> AttributeRule {
        AttributeRule {
            key: key.to_string(),
            op,
            value: None,
            values: Vec::new(),
            min: None,
            max: None,
        }
    }

    /// Why this rule cannot be applied, as `(field, reason)`; `None` when it is well formed.
    fn problem(&self) -> Option<(&'static str, String)> {
        let op = self.op.as_str();
        if self.key.is_empty() {
            return Some(("key", "must not be empty".into()));
        }
        let takes = |field: &str| match self.op {
            AttributeOp::Eq => field == "value",
            AttributeOp::In | AttributeOp::NotIn => field == "values",
            AttributeOp::Range => field == "min" || field == "max",
            AttributeOp::Exists => false,
        };
        for (field, set) in [
            ("value", self.value.is_some()),
            ("values", !self.values.is_empty()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
        ] {
            if set && !takes(field) {
                return Some((field, format!("op {op:?} does not take `{field}`")));
            }
        }
        let nan = |v: &FilterValue| matches!(v, FilterValue::Float(f) if !f.is_finite());
        match self.op {
            AttributeOp::Eq => match &self.value {
                None => return Some(("value", format!("op {op:?} needs `value`"))),
                Some(v) if nan(v) => {
                    return Some(("value", "must be a finite number, not NaN or inf".into()))
                }
                Some(_) => {}
            },
            AttributeOp::In | AttributeOp::NotIn => {
                if self.values.is_empty() {
                    return Some(("values", format!("op {op:?} needs a non-empty `values`")));
                }
                if self.values.iter().any(nan) {
                    return Some(("values", "numbers must be finite, not NaN or inf".into()));
                }
            }
            AttributeOp::Range => {
                if self.min.is_none() && self.max.is_none() {
                    return Some(("min", "op \"range\" needs `min`, `max` or both".into()));
                }
                for (field, b) in [("min", self.min), ("max", self.max)] {
                    if let Some(b) = b.filter(|b| !b.is_finite()) {
                        return Some((field, format!("must be a finite number, got {b}")));
                    }
                }
                if let (Some(lo), Some(hi)) = (self.min, self.max) {
                    if lo > hi {
                        return Some(("min", format!("{lo} is above max {hi}")));
                    }
                }
            }
            AttributeOp::Exists => {}
        }
        None
    }
}

impl BuyerFilters {
    /// Why the new-style filters (bands, vehicle count, attribute rules) cannot be applied, as
    /// `(key under filters, reason)`; `None` when they are well formed.
    fn problem(&self) -> Option<(String, String)> {
        for (j, band) in self.driver_age_bands.iter().enumerate() {
            // A band is compared with the ping's validated `driver_age_band`: trimmed, 1 to
            // MAX_DRIVER_AGE_BAND_LEN characters, no control characters. The contract names no
            // fixed set, so a band that no valid ping can carry is what is refused here.
            let chars = band.chars().count();
            if chars == 0
                || chars > MAX_DRIVER_AGE_BAND_LEN
                || band.trim() != band
                || band.chars().any(char::is_control)
            {
                return Some((
                    format!("driver_age_bands[{j}]"),
                    format!(
                        "{band:?} is no band a ping can carry: 1 to {MAX_DRIVER_AGE_BAND_LEN} \
                         characters, no surrounding spaces or control characters"
                    ),
                ));
            }
        }
        if let Some(CountRange {
            min: Some(lo),
            max: Some(hi),
        }) = self.vehicle_count
        {
            if lo > hi {
                return Some((
                    "vehicle_count.min".into(),
                    format!("{lo} is above max {hi}"),
                ));
            }
        }
        for (j, rule) in self.attributes.iter().enumerate() {
            if let Some((field, reason)) = rule.problem() {
                return Some((format!("attributes[{j}].{field}"), reason));
            }
        }
        None
    }
}

/// A lead rule applied at post time: when the ping matches `vertical`/`source`, `require` fields must be present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub vertical: Option<String>,
    pub source: Option<String>,
    /// Dotted paths inside the post body, e.g. `lead.tcpa.trustedform_cert_url`.
    pub require: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Start the mock buyer fleet inside `gavel serve` (loopback only).
    pub enabled: bool,
    pub listen: Option<SocketAddr>,
    pub seed: u64,
    pub buyers: Vec<MockBuyerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive; `GAVEL_LOG` overrides it.
    pub level: String,
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            json: false,
        }
    }
}

/// CLI flags that override file values; `None` leaves the file's value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Number of cores (overrides server.cores; 0 = all).
    #[arg(long)]
    pub cores: Option<usize>,
    /// io driver (overrides server.driver).
    #[arg(long, value_enum)]
    pub driver: Option<Driver>,
    /// Store directory (overrides store.path).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads, parses and range-checks one TOML file ([`Config::validate`]). The subsystems' checks
    /// of their own sections are not run here: `cli::load_config` runs both.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        // Config is read once, before any event loop exists, so blocking here is harmless.
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let cfg = Self::parse(&file, &text)?;
        cfg.validate(&file)?;
        Ok(cfg)
    }

    /// Parses one TOML text. A value the schema refuses (a sub-cent floor, a string where a
    /// number belongs, an unknown key) is reported with its key, like [`Config::validate`]'s
    /// errors; broken TOML syntax is reported with toml's own line and column.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let key = e.path().to_string();
            let e = e.into_inner();
            // The path is "." when the error lies outside any key, and holds "?" where serde
            // could not tell the key; toml's own message then says best where the fault is.
            if key == "." || key.contains('?') {
                return ConfigError::Parse {
                    file: file.to_string(),
                    reason: e.to_string().trim_end().to_string(),
                };
            }
            let line = e.span().map(|s| {
                let before = &text.as_bytes()[..s.start.min(text.len())];
                before.iter().filter(|&&b| b == b'\n').count() + 1
            });
            ConfigError::Invalid {
                file: file.to_string(),
                key,
                reason: match line {
                    Some(n) => format!("{} (line {n})", e.message()),
                    None => e.message().to_string(),
                },
            }
        })
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = o.listen {
            self.server.listen = l;
        }
        if let Some(c) = o.cores {
            self.server.cores = c;
        }
        if let Some(d) = o.driver {
            self.server.driver = d;
        }
        if let Some(p) = &o.data_dir {
            self.store.path = p.clone();
        }
    }

    /// Checks every range and cross-field rule that needs only the file's values; `file` names the
    /// source in errors. The subsystems' own checks are not here: `cli::check_config` runs this
    /// and them.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        self.check_oauth(&bad)?;
        self.dns.validate(file)?;
        self.egress.validate(file)?;
        self.check_limits(&bad)?;
        self.validate_parties(file)?;
        self.check_auction(&bad)?;
        self.check_counts(&bad)?;
        self.check_bid_token(&bad)?;
        self.check_server(&bad)?;
        self.check_tokens(&bad)?;
        self.check_buyers(&bad)?;
        self.check_rules(&bad)?;
        self.check_store(&bad)?;
        self.check_sandbox(&bad)?;
        self.check_bounds(&bad)?;
        self.validate_webhooks(file)
    }

    /// `[oauth]`: the access-token lifetime.
    fn check_oauth(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if !ACCESS_TOKEN_TTL_S.contains(&self.oauth.access_token_ttl_s) {
            return Err(bad(
                "oauth.access_token_ttl_s",
                format!(
                    "must be {}..={} seconds, got {}",
                    ACCESS_TOKEN_TTL_S.start(),
                    ACCESS_TOKEN_TTL_S.end(),
                    self.oauth.access_token_ttl_s
                ),
            ));
        }
        Ok(())
    }

    /// `[limits]` and the per-buyer and per-token rates: finite, positive rates and caps.
    fn check_limits(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let l = &self.limits;
        let rates = [
            (
                "limits.client_requests_per_s".to_string(),
                l.client_requests_per_s,
            ),
            ("limits.buyer_pings_per_s".to_string(), l.buyer_pings_per_s),
            (
                "limits.seller_pings_per_s".to_string(),
                l.seller_pings_per_s,
            ),
        ];
        let buyer_rates = self.buyers.iter().enumerate().filter_map(|(i, b)| {
            b.max_pings_per_s
                .map(|r| (format!("buyers[{i}].max_pings_per_s"), r))
        });
        let token_rates = self.tokens.iter().enumerate().filter_map(|(i, t)| {
            t.requests_per_s
                .map(|r| (format!("tokens[{i}].requests_per_s"), r))
        });
        for (key, r) in rates.into_iter().chain(buyer_rates).chain(token_rates) {
            if !RATE_PER_S.contains(&r) {
                return Err(bad(
                    &key,
                    format!(
                        "must be {}..={} per second, got {r}",
                        RATE_PER_S.start(),
                        RATE_PER_S.end()
                    ),
                ));
            }
        }
        if l.seller_max_concurrent_auctions == 0 {
            return Err(bad(
                "limits.seller_max_concurrent_auctions",
                "must be at least 1".into(),
            ));
        }
        if l.seller_max_unposted_auctions == 0 {
            return Err(bad(
                "limits.seller_max_unposted_auctions",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `[auction]`: window, margin, floor, currency.
    fn check_auction(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let a = &self.auction;
        if a.window_ms == 0 || a.window_ms > MAX_WINDOW_MS {
            return Err(bad(
                "auction.window_ms",
                format!("must be 1..={MAX_WINDOW_MS}, got {}", a.window_ms),
            ));
        }
        // `contains` is false for NaN, so a NaN percentage is refused here too.
        if !(0.0..=100.0).contains(&a.margin_percent) {
            return Err(bad(
                "auction.margin_percent",
                format!("must be a number from 0 to 100, got {}", a.margin_percent),
            ));
        }
        check_money(a.floor).map_err(|r| bad("auction.floor", r))?;
        check_money(a.margin_fixed).map_err(|r| bad("auction.margin_fixed", r))?;
        if a.currency.len() != 3 || !a.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad(
                "auction.currency",
                "must be an ISO 4217 code such as USD".into(),
            ));
        }
        Ok(())
    }

    /// Counts and durations of several sections that must be at least 1: a flat list, one entry per key.
    fn check_counts(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        for (key, n) in [
            (
                "auction.max_buyers_per_auction",
                self.auction.max_buyers_per_auction as u64,
            ),
            (
                "auction.max_auctions_per_core",
                self.auction.max_auctions_per_core as u64,
            ),
            ("post.budget_ms", self.post.budget_ms),
            (
                "post.max_attempts_per_buyer",
                u64::from(self.post.max_attempts_per_buyer),
            ),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.max_connections_per_core",
                self.server.max_connections_per_core as u64,
            ),
            (
                "server.max_in_flight_requests_per_core",
                self.server.max_in_flight_requests_per_core as u64,
            ),
            ("server.max_queue_delay_ms", self.server.max_queue_delay_ms),
        ] {
            if n == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// `[server]`: the idle timeout, and a queue delay no longer than a bid window.
    fn check_server(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if self.server.idle_timeout_ms == 0 {
            return Err(bad("server.idle_timeout_ms", "must be > 0".into()));
        }
        // A request that waited longer than a bid window can last has nothing left to win.
        if self.server.max_queue_delay_ms > MAX_WINDOW_MS {
            return Err(bad(
                "server.max_queue_delay_ms",
                format!(
                    "must be at most {MAX_WINDOW_MS} (the longest bid window), got {}",
                    self.server.max_queue_delay_ms
                ),
            ));
        }
        Ok(())
    }

    /// `[bid_token]`: the token lifetime and the key ids.
    fn check_bid_token(
        &self,
        bad: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.bid_token.ttl_ms == Some(0) {
            return Err(bad("bid_token.ttl_ms", "must be at least 1".into()));
        }
        if let (Some(c), Some(p)) = (&self.bid_token.current, &self.bid_token.previous) {
            if c.id == p.id {
                return Err(bad(
                    "bid_token.previous.id",
                    "must differ from bid_token.current.id".into(),
                ));
            }
        }
        if self.bid_token.current.is_none()
            && self.bid_token.previous.as_ref().is_some_and(|p| p.id == 0)
        {
            return Err(bad(
                "bid_token.previous.id",
                "0 is the id of the key Gavel generates when bid_token.current is unset".into(),
            ));
        }
        Ok(())
    }

    /// `[[tokens]]`: hashes, scopes, parties, rates.
    fn check_tokens(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        for (i, t) in self.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
                return Err(bad(
                    &format!("tokens[{i}].sha256"),
                    "must be 64 hex characters (SHA-256 of the token)".into(),
                ));
            }
            // A published token on a listener others can reach is an open door (issue #21, F1).
            let listen = self.server.listen;
            if !listen.ip().is_loopback()
                && WELL_KNOWN_TOKEN_SHA256
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&t.sha256))
            {
                return Err(bad(
                    &format!("tokens[{i}].sha256"),
                    format!(
                        "is a published sandbox token (anyone can send it), and server.listen \
                         {listen} is not a loopback address: remove this [[tokens]] entry, or \
                         replace it with a token of your own (`gavel token create`)"
                    ),
                ));
            }
            if t.scopes.is_empty() {
                return Err(bad(
                    &format!("tokens[{i}].scopes"),
                    "must not be empty".into(),
                ));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if let Some(id) = &t.buyer {
                if !self
                    .buyers
                    .iter()
                    .any(|b| &b.id == id && b.tenant == t.tenant)
                {
                    return Err(bad(
                        &format!("tokens[{i}].buyer"),
                        format!(
                            "no buyer {id:?} of tenant {} is configured",
                            t.tenant.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[[buyers]]`: how many per tenant, ids, timeouts, URLs or fixed prices, headers, filters.
    fn check_buyers(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        for tenant in [Tenant::Sandbox, Tenant::Production] {
            let n = self.buyers.iter().filter(|b| b.tenant == tenant).count();
            if n > MAX_BUYERS_PER_TENANT {
                return Err(bad(
                    "buyers",
                    format!(
                        "at most {MAX_BUYERS_PER_TENANT} buyers per tenant, got {n} of tenant {}",
                        tenant.as_str()
                    ),
                ));
            }
        }
        // Ids are scoped by tenant: the same id may name a sandbox and a production buyer.
        let mut seen = BTreeSet::new();
        for (i, b) in self.buyers.iter().enumerate() {
            if b.id.is_empty() || !seen.insert((b.tenant, b.id.clone())) {
                return Err(bad(
                    &format!("buyers[{i}].id"),
                    format!(
                        "must be unique within its tenant and non-empty, got {:?}",
                        b.id
                    ),
                ));
            }
            check_buyer(i, b, bad)?;
        }
        Ok(())
    }

    /// `[[rules]]`: each requires `lead.` paths.
    fn check_rules(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.require.is_empty() {
                return Err(bad(
                    &format!("rules[{i}].require"),
                    "must not be empty".into(),
                ));
            }
            for p in &r.require {
                if !p.starts_with("lead.") {
                    return Err(bad(
                        &format!("rules[{i}].require"),
                        format!("path {p:?} must start with `lead.`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[store]`: retention, expiry, batches, path.
    fn check_store(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let st = &self.store;
        for (key, days) in [
            (
                "store.idempotency_retention_days",
                st.idempotency_retention_days,
            ),
            ("store.record_retention_days", st.record_retention_days),
        ] {
            if days == 0 {
                return Err(bad(key, "retention must be at least 1 day".into()));
            }
        }
        for (key, n) in [
            ("store.expiry_interval_ms", st.expiry_interval_ms),
            (
                "store.group_commit_max_batch",
                st.group_commit_max_batch as u64,
            ),
        ] {
            if n == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if st.path.as_os_str().is_empty() {
            return Err(bad("store.path", "must not be empty".into()));
        }
        Ok(())
    }

    /// `[sandbox]`: a loopback listener when enabled.
    fn check_sandbox(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if self.sandbox.enabled {
            let Some(addr) = self.sandbox.listen else {
                return Err(bad(
                    "sandbox.listen",
                    "required when sandbox.enabled".into(),
                ));
            };
            if !addr.ip().is_loopback() {
                return Err(bad(
                    "sandbox.listen",
                    "mock buyers only listen on loopback".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Upper bounds on money and time, and listeners that cannot share an address: a typo here
    /// (an extra three zeros, a timeout in microseconds) would otherwise load and be obeyed.
    fn check_bounds(&self, bad: &impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let max_price = self.auction.max_price;
        if max_price == 0 {
            return Err(bad("auction.max_price", "must be more than 0".into()));
        }
        check_money(max_price).map_err(|r| bad("auction.max_price", r))?;
        let usd = |c: Cents| format!("{}.{:02}", c / 100, c % 100);
        let over = |key: &str, c: Cents| {
            bad(
                key,
                format!(
                    "must be at most auction.max_price ({}), got {}",
                    usd(max_price),
                    usd(c)
                ),
            )
        };
        if self.auction.floor > max_price {
            return Err(over("auction.floor", self.auction.floor));
        }
        let budget = self.post.budget_ms;
        if budget > MAX_POST_BUDGET_MS {
            return Err(bad(
                "post.budget_ms",
                format!("must be 1..={MAX_POST_BUDGET_MS}, got {budget}"),
            ));
        }
        for (i, b) in self.buyers.iter().enumerate() {
            if b.floor > max_price {
                return Err(over(&format!("buyers[{i}].floor"), b.floor));
            }
            if let Some(p) = b.fixed_price.filter(|&p| p > max_price) {
                return Err(over(&format!("buyers[{i}].fixed_price"), p));
            }
            for (k, ms, max) in [
                ("ping_timeout_ms", b.ping_timeout_ms, MAX_PING_TIMEOUT_MS),
                ("post_timeout_ms", b.post_timeout_ms, MAX_POST_BUDGET_MS),
            ] {
                if ms > max {
                    return Err(bad(
                        &format!("buyers[{i}].{k}"),
                        format!("buyer {:?}: must be 1..={max}, got {ms}", b.id),
                    ));
                }
            }
        }
        // Both would bind the same socket, and `serve` would fail after the checks passed.
        let api = self.server.listen;
        if let Some(ops) = self.metrics.listen {
            let same_ip =
                ops.ip() == api.ip() || ops.ip().is_unspecified() || api.ip().is_unspecified();
            if ops.port() != 0 && ops.port() == api.port() && same_ip {
                return Err(bad(
                    "metrics.listen",
                    format!("{ops} overlaps server.listen {api}: give the operations listener its own port"),
                ));
            }
        }
        Ok(())
    }

    fn validate_webhooks(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason,
        };
        let d = &self.webhook_delivery;
        if d.retry_schedule_ms.len() > MAX_WEBHOOK_RETRIES {
            return Err(bad(
                "webhook_delivery.retry_schedule_ms".into(),
                format!("at most {MAX_WEBHOOK_RETRIES} retries"),
            ));
        }
        if d.retry_schedule_ms
            .iter()
            .any(|&ms| ms == 0 || ms > MAX_WEBHOOK_DELAY_MS)
        {
            return Err(bad(
                "webhook_delivery.retry_schedule_ms".into(),
                format!("each delay must be 1..={MAX_WEBHOOK_DELAY_MS} ms"),
            ));
        }
        if !(1..=60_000).contains(&d.timeout_ms) {
            return Err(bad(
                "webhook_delivery.timeout_ms".into(),
                "must be 1..=60000".into(),
            ));
        }
        if !(1..=256).contains(&d.max_in_flight_per_endpoint) {
            return Err(bad(
                "webhook_delivery.max_in_flight_per_endpoint".into(),
                "must be 1..=256".into(),
            ));
        }
        if !(1..=256).contains(&d.threads) {
            return Err(bad(
                "webhook_delivery.threads".into(),
                "must be 1..=256".into(),
            ));
        }
        if d.max_retry_after_ms > MAX_WEBHOOK_DELAY_MS {
            return Err(bad(
                "webhook_delivery.max_retry_after_ms".into(),
                format!("must be at most {MAX_WEBHOOK_DELAY_MS}"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("webhooks[{i}].{k}");
            if !is_snake_id(&w.id) || w.id.len() > 64 {
                return Err(bad(
                    key("id"),
                    format!("must be snake_case, 1 to 64 characters, got {:?}", w.id),
                ));
            }
            if !seen.insert(w.id.as_str()) {
                return Err(bad(key("id"), format!("{:?} is used twice", w.id)));
            }
            if !w.secrets.is_empty() && w.secrets_env.is_some() {
                return Err(bad(
                    key("secrets"),
                    "set secrets or secrets_env, not both".into(),
                ));
            }
            if w.events.is_empty() {
                return Err(bad(key("events"), "must name at least one event".into()));
            }
            for e in &w.events {
                if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                    return Err(bad(
                        key("events"),
                        format!("unknown event {e:?}; known: {}", WEBHOOK_EVENTS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks one money value. A file's amounts were checked as they were read ([`deserialize_usd`]
/// refuses NaN, negative, sub-cent and too large ones); this catches a config built in code.
fn check_money(c: Cents) -> Result<(), String> {
    if c <= MAX_CENTS {
        Ok(())
    } else {
        Err(format!(
            "must be an amount in USD from 0 to {MAX_MONEY:.0}, got {}",
            crate::types::money::cents_to_f64(c)
        ))
    }
}

/// One `[[buyers]]` entry (at index `i`): timeouts, a ping URL or a fixed price, auth header,
/// format and filters, a flat list of per-key checks (hence its length). What spans buyers
/// (count per tenant, unique ids) is `Config::check_buyers`' business.
fn check_buyer(
    i: usize,
    b: &BuyerConfig,
    bad: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (k, ms) in [
        ("ping_timeout_ms", b.ping_timeout_ms),
        ("post_timeout_ms", b.post_timeout_ms),
    ] {
        if ms == 0 {
            return Err(bad(
                &format!("buyers[{i}].{k}"),
                "must be at least 1".into(),
            ));
        }
    }
    check_money(b.floor).map_err(|r| bad(&format!("buyers[{i}].floor"), r))?;
    // A buyer is either pinged (it prices each lead) or direct-post (one fixed price);
    // both or neither leaves Gavel no way to know what it pays.
    match (b.ping_url.is_empty(), b.fixed_price) {
        (false, None) => {}
        (true, Some(p)) => {
            if p == 0 {
                return Err(bad(
                    &format!("buyers[{i}].fixed_price"),
                    format!("buyer {:?}: must be more than 0", b.id),
                ));
            }
            check_money(p).map_err(|r| bad(&format!("buyers[{i}].fixed_price"), r))?;
            if b.ping_format.is_some() {
                return Err(bad(
                    &format!("buyers[{i}].ping_format"),
                    format!("buyer {:?}: a direct-post buyer is never pinged", b.id),
                ));
            }
        }
        (false, Some(_)) | (true, None) => {
            return Err(bad(
                &format!("buyers[{i}].ping_url"),
                format!(
                    "buyer {:?}: needs exactly one of `ping_url` (a pinged buyer) and \
                         `fixed_price` (a direct-post buyer)",
                    b.id
                ),
            ))
        }
    }
    if let Some(h) = &b.auth_header {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(bad(
                &format!("buyers[{i}].auth_header.name"),
                "not a valid header name".into(),
            ));
        }
        if h.value.is_none() && h.value_env.is_none() {
            return Err(bad(
                &format!("buyers[{i}].auth_header"),
                "needs `value` or `value_env`".into(),
            ));
        }
    }
    if let Some(s) = b.filters.min_ai_quality_score {
        if !(0.0..=1.0).contains(&s) {
            return Err(bad(
                &format!("buyers[{i}].filters.min_ai_quality_score"),
                format!("must be a number from 0 to 1, got {s}"),
            ));
        }
    }
    b.filters.problem().map_or(Ok(()), |(key, reason)| {
        Err(bad(&format!("buyers[{i}].filters.{key}"), reason))
    })?;
    Ok(())
}

/// The config file `gavel serve` uses when none is named.
pub fn default_path() -> PathBuf {
    PathBuf::from("config/gavel.toml")
}
