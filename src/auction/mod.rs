//! Auctions: the per-core shard that holds them, the ping fan-out that runs them, clearing, bid
//! tokens, and post delivery to the winner (with fallback).
//!
//! Everything about one auction runs on the core that owns its id ([`crate::runtime::owner_of`]),
//! so its state is plain data in that core's [`shard::Shard`], never behind a lock. This module does
//! not parse HTTP requests or render responses; [`crate::api`] does that around it.

pub mod clearing;
pub mod deliver;
pub mod fanout;
pub mod record;
pub mod shard;
pub mod token;

use crate::config::Tenant;
use crate::http::Reply;
use crate::model::{Cents, Ping};

/// How one buyer fared in one auction (CONTRACT §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Bid,
    NoBid,
    Timeout,
    Error,
    Filtered,
    RateLimited,
    Capped,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Bid => "bid",
            OutcomeKind::NoBid => "no_bid",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Error => "error",
            OutcomeKind::Filtered => "filtered",
            OutcomeKind::RateLimited => "rate_limited",
            OutcomeKind::Capped => "capped",
        }
    }

    /// Whether the buyer was actually called (as opposed to skipped by a filter, the cap on
    /// buyers per auction, or its rate limit).
    pub fn was_pinged(self) -> bool {
        matches!(
            self,
            OutcomeKind::Bid | OutcomeKind::NoBid | OutcomeKind::Error | OutcomeKind::Timeout
        )
    }
}

/// One buyer's outcome, kept for the auction record.
#[derive(Debug, Clone)]
pub struct BuyerOutcome {
    /// Index into the registry; [`NO_BUYER`] when a stored record names a buyer no longer configured.
    pub buyer: usize,
    /// The buyer's configured id, kept so records stay readable when the buyer list changes.
    pub buyer_id: String,
    pub kind: OutcomeKind,
    pub amount_cents: Option<Cents>,
    /// The buyer's own bid token, echoed back to it at post time.
    pub buyer_bid_token: Option<String>,
    pub valid_until_ms: Option<u64>,
    /// Machine-readable reason for a no_bid, error or filter (snake_case).
    pub reject_reason: Option<String>,
    pub reject_detail: Option<String>,
    /// Time from sending the ping to the buyer's complete answer (or to giving up).
    pub latency_us: u64,
    /// Order in which answers arrived; ties in price go to the lower number.
    pub arrival: u32,
}

/// Why an auction ended without a winner (CONTRACT §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBidReason {
    NoEligibleBuyers,
    NoBids,
    BelowFloor,
}

impl NoBidReason {
    pub fn code(self) -> &'static str {
        match self {
            NoBidReason::NoEligibleBuyers => "no_eligible_buyers",
            NoBidReason::NoBids => "no_bids",
            NoBidReason::BelowFloor => "below_floor",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            NoBidReason::NoEligibleBuyers => "No buyer's filters accept this lead.",
            NoBidReason::NoBids => "No buyer placed a valid bid before the deadline.",
            NoBidReason::BelowFloor => "Every bid was below the floor price.",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Status {
    /// Buyers are being pinged.
    Open,
    /// A winner exists; `ranked` holds the slots of valid bids, best first.
    Won {
        ranked: Vec<usize>,
        payout_cents: Cents,
        token_valid_until_ms: u64,
    },
    NoBid(NoBidReason),
}

/// Registry index of a buyer that is no longer configured (from a stored record).
pub const NO_BUYER: usize = usize::MAX;

/// One attempt to deliver a post to a buyer.
#[derive(Debug, Clone)]
pub struct PostAttempt {
    pub buyer_id: String,
    pub attempt: u32,
    /// `accepted`, `rejected`, `error`, `timeout` or `connect_error`.
    pub result: String,
    pub http_status: Option<u16>,
    pub latency_us: u64,
}

/// Where the post of an auction stands.
#[derive(Debug, Clone)]
pub enum PostState {
    None,
    /// A delivery is running under this idempotency key; `slot` is the buyer being called.
    InFlight {
        key: String,
        slot: Option<usize>,
    },
    /// The last delivery ended without knowing whether `slot`'s buyer took the lead; a retry with
    /// the same key resumes there and nowhere else.
    Unresolved {
        key: String,
        slot: usize,
    },
    /// Final: the reply is replayed to a retry with the same key.
    Done {
        key: String,
        reply: Reply,
    },
}

/// An auction as its shard holds it. Contains no PII: the lead of a post is never stored here.
#[derive(Debug, Clone)]
pub struct Auction {
    pub id: String,
    pub tenant: Tenant,
    pub client: String,
    pub ping: Ping,
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub closed_ms: Option<u64>,
    pub outcomes: Vec<BuyerOutcome>,
    pub status: Status,
    pub post: PostState,
    pub post_attempts: Vec<PostAttempt>,
    /// The sale, once a buyer took the lead: (slot in `outcomes`, buyer's lead id).
    pub sold: Option<(usize, String)>,
    /// SHA-256 of the post body that owns the delivery (a retry must send the same body).
    pub post_fingerprint: Option<[u8; 32]>,
    /// Gavel's id of the lead being (or that was) delivered.
    pub lead_uuid: Option<String>,
    /// When the shard may forget this auction.
    pub evict_at_ms: u64,
    /// Whether a commit carrying this auction's `auction.closed` webhook event (or its closed
    /// record, for an auction read back from the store) has reached the disk: the first durable
    /// write of a closed auction carries the event, later ones do not.
    pub close_announced: bool,
}

impl Auction {
    /// A new auction, open for bids, with nothing posted yet.
    pub fn open(
        id: String,
        tenant: Tenant,
        client: String,
        ping: Ping,
        created_ms: u64,
        deadline_ms: u64,
        evict_at_ms: u64,
    ) -> Auction {
        Auction {
            id,
            tenant,
            client,
            ping,
            created_ms,
            deadline_ms,
            closed_ms: None,
            outcomes: Vec::new(),
            status: Status::Open,
            post: PostState::None,
            post_attempts: Vec::new(),
            sold: None,
            post_fingerprint: None,
            lead_uuid: None,
            evict_at_ms,
            close_announced: false,
        }
    }
}

/// A won auction as its seller is told it: the valid bids best first, the seller's payout, how
/// long the bid holds, and the signed bid token.
pub struct Award {
    pub ranked: Vec<clearing::Candidate>,
    pub payout_cents: Cents,
    pub valid_until_ms: u64,
    pub bid_token: String,
}

/// Clears a closed auction's bids and, when one wins, prices it (floors, margins) and signs its bid
/// token. `bid_valid_until_ms(slot)` is how long that buyer said its bid holds; the token lives no
/// longer than that, nor than `bid_token.ttl_ms` after `closed_ms`. Gavel's ping and the baseline
/// bench both decide auctions through this one function.
#[allow(clippy::too_many_arguments)]
pub fn award(
    config: &crate::config::Config,
    keys: &token::BidKeys,
    any_eligible: bool,
    bids: &[clearing::Candidate],
    bid_valid_until_ms: impl Fn(usize) -> Option<u64>,
    auction_id: &str,
    tenant: Tenant,
    closed_ms: u64,
) -> Result<Award, NoBidReason> {
    if !any_eligible {
        return Err(NoBidReason::NoEligibleBuyers);
    }
    let cfg = &config.auction;
    let ranked = match clearing::clear(bids, cfg.floor) {
        clearing::Cleared::NoBids => return Err(NoBidReason::NoBids),
        clearing::Cleared::BelowFloor => return Err(NoBidReason::BelowFloor),
        clearing::Cleared::Won(ranked) => ranked,
    };
    let payout_cents =
        clearing::seller_payout(ranked[0].amount_cents, cfg.margin_percent, cfg.margin_fixed);
    let valid_until_ms = bid_valid_until_ms(ranked[0].slot)
        .unwrap_or(closed_ms)
        .min(closed_ms + config.bid_token.ttl_ms());
    let bid_token = keys.sign(&token::Claims {
        auction_id: auction_id.to_string(),
        tenant,
        amount_cents: payout_cents,
        valid_until_ms,
    });
    Ok(Award {
        ranked,
        payout_cents,
        valid_until_ms,
        bid_token,
    })
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-05-11T14:22:06.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp to unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
