//! Auctions: the per-core shard that holds them, the ping fan-out that runs them, clearing, bid
//! tokens, and post delivery to the winner (with fallback).
//!
//! Everything about one auction runs on the core that owns its id ([`crate::runtime::owner_of`]),
//! so its state is plain data in that core's [`shard::Shard`], never behind a lock. This module does
//! not parse HTTP requests or render responses; [`crate::api`] does that around it.

pub mod clearing;
pub mod deliver;
pub mod fanout;
pub mod id;
pub mod record;
pub mod shard;
pub mod token;

use std::sync::Arc;

use crate::buyers::Registry;
use crate::config::Tenant;
use crate::http::Reply;
use crate::limits::UnpostedSlot;
use crate::model::{Cents, Ping};
/// The words of outcomes, reasons and attempt results live in [`crate::types::words`]; the
/// auction names them from there.
pub use crate::types::words::{
    AttemptResult, CallFailure, NoBidReason, OutcomeKind, PostOutcome, UnsoldReason,
};

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
    /// A direct-post buyer's fixed-price bid: the buyer was not pinged.
    pub direct_post: bool,
    /// Why the call never reached the buyer, when it did not (counted per buyer; not stored).
    pub failure: Option<CallFailure>,
}

impl BuyerOutcome {
    /// An outcome of `kind` for the buyer at registry index `buyer`, with nothing else known
    /// yet: no amount, token or reason, no latency, arriving after every answer.
    pub fn new(buyer: usize, buyer_id: String, kind: OutcomeKind) -> BuyerOutcome {
        BuyerOutcome {
            buyer,
            buyer_id,
            kind,
            amount_cents: None,
            buyer_bid_token: None,
            valid_until_ms: None,
            reject_reason: None,
            reject_detail: None,
            latency_us: 0,
            arrival: u32::MAX,
            direct_post: false,
            failure: None,
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
    pub result: AttemptResult,
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
        outcome: PostOutcome,
    },
}

impl PostState {
    /// Whether the post may move from this state to `next`. The exchange changes the post state
    /// in a few places; this is the one list of the moves it may make, so a debug build catches a
    /// move that would, say, deliver a final post again or forget the buyer that may hold a lead:
    /// - `None` → `InFlight`: a post starts;
    /// - `InFlight` → `InFlight` under the same key: the delivery moves on to a buyer (a slot);
    /// - `InFlight` → `Unresolved` or `Done` under the same key: the delivery ends unclear or final;
    /// - `InFlight` → `None`: a delivery that could not start gives back the state before it (an
    ///   `Unresolved` one is covered by the move above);
    /// - `Unresolved` → `InFlight` under the same key, before a buyer is chosen or with the same
    ///   buyer: a retry resumes where the last delivery left off;
    /// - `Done` → `Unresolved` under the same key: a final answer whose commit failed never reached
    ///   the disk, so the auction goes back to "maybe sold at the last buyer";
    /// - `Done` is otherwise final.
    ///
    /// A state that stays as it is (same variant and key) is not a move and is allowed.
    pub fn may_become(&self, next: &PostState) -> bool {
        use PostState as P;
        match (self, next) {
            (P::None, P::None | P::InFlight { .. }) => true,
            (
                P::InFlight { key, .. },
                P::InFlight { key: k2, .. } | P::Unresolved { key: k2, .. },
            )
            | (P::InFlight { key, .. }, P::Done { key: k2, .. }) => key == k2,
            (P::InFlight { .. }, P::None) => true,
            (P::Unresolved { key, slot }, P::Unresolved { key: k2, slot: s2 }) => {
                key == k2 && slot == s2
            }
            (P::Unresolved { key, slot }, P::InFlight { key: k2, slot: s2 }) => {
                key == k2 && s2.is_none_or(|s| s == *slot)
            }
            (P::Done { key, .. }, P::Done { key: k2, .. } | P::Unresolved { key: k2, .. }) => {
                key == k2
            }
            _ => false,
        }
    }
}

/// An auction as its shard holds it. Contains no PII: the lead of a post is never stored here.
#[derive(Debug)]
pub struct Auction {
    pub id: String,
    pub tenant: Tenant,
    /// The credential's client that pinged (scopes its idempotency keys).
    pub client: String,
    /// The seller the auction belongs to: its id space, its view, its limits.
    pub seller: String,
    /// The id buyers are pinged and posted under: `id` when Gavel minted it, else an id Gavel
    /// minted for the buyers, so that two sellers' equal ids never share a buyer's idempotency
    /// keys (see `AuctionRecord::buyer_ref`).
    pub buyer_ref: String,
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
    // Architecture Invariant [buyer-snapshot]: the auction keeps the buyer snapshot it opened
    // with, for fan-out, clearing, delivery and fallback, whatever changes meanwhile.
    /// The buyer snapshot this auction started with (or, read back from the store, the one
    /// current then): `outcomes[_].buyer` indexes into it, and fan-out, clearing, delivery and
    /// fallback all use it, so a buyer changed or removed meanwhile still gets this auction's post.
    pub registry: Arc<Registry>,
    /// One of its seller's unposted-auction slots, held while the auction is won and not yet
    /// posted: taken back (dropped) when the post gets its final answer, and given back when the
    /// auction leaves memory. An auction read back from the store holds none (a restart starts
    /// every count afresh).
    pub unposted: Option<UnpostedSlot>,
}

impl Auction {
    /// A new auction, open for bids, with nothing posted yet, on buyer snapshot `registry`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        registry: Arc<Registry>,
        id: String,
        tenant: Tenant,
        client: String,
        seller: String,
        ping: Ping,
        created_ms: u64,
        deadline_ms: u64,
        evict_at_ms: u64,
    ) -> Auction {
        Auction {
            buyer_ref: id.clone(),
            id,
            tenant,
            client,
            seller,
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
            registry,
            unposted: None,
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
/// token, bound to `seller`. `bid_valid_until_ms(slot)` is how long that buyer said its bid holds; the token lives no
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
    seller: &str,
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
        seller: Some(token::SellerTag::of(seller)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(key: &str, slot: Option<usize>) -> PostState {
        PostState::InFlight {
            key: key.into(),
            slot,
        }
    }

    fn unresolved(key: &str, slot: usize) -> PostState {
        PostState::Unresolved {
            key: key.into(),
            slot,
        }
    }

    fn done(key: &str) -> PostState {
        PostState::Done {
            key: key.into(),
            reply: Reply::text(http::StatusCode::OK, "text/plain", ""),
            outcome: PostOutcome::Unsold,
        }
    }

    #[test]
    fn post_state_moves_that_delivery_makes_are_legal() {
        let legal = [
            // A post starts, picks a buyer, falls back to the next, and ends.
            (PostState::None, in_flight("k", None)),
            (in_flight("k", None), in_flight("k", Some(0))),
            (in_flight("k", Some(0)), in_flight("k", Some(2))),
            (in_flight("k", Some(2)), done("k")),
            (in_flight("k", None), done("k")),
            (in_flight("k", Some(2)), unresolved("k", 2)),
            // A delivery that could not start gives the previous state back.
            (in_flight("k", None), PostState::None),
            (in_flight("k", None), unresolved("k", 1)),
            // A retry resumes an unresolved delivery with the same buyer.
            (unresolved("k", 1), in_flight("k", None)),
            (unresolved("k", 1), in_flight("k", Some(1))),
            // A final answer whose commit failed goes back to unresolved.
            (done("k"), unresolved("k", 1)),
            // Staying put is not a move.
            (PostState::None, PostState::None),
            (unresolved("k", 1), unresolved("k", 1)),
            (done("k"), done("k")),
        ];
        for (from, to) in &legal {
            assert!(from.may_become(to), "{from:?} -> {to:?} should be legal");
        }
    }

    #[test]
    fn post_state_moves_that_would_break_delivery_are_not() {
        let illegal = [
            // Nothing ends or stalls a delivery that never started.
            (PostState::None, done("k")),
            (PostState::None, unresolved("k", 0)),
            // Another key never takes over a running, unresolved or final delivery.
            (in_flight("k", Some(0)), in_flight("other", Some(0))),
            (in_flight("k", Some(0)), done("other")),
            (unresolved("k", 1), in_flight("other", None)),
            (done("k"), done("other")),
            (done("k"), unresolved("other", 0)),
            // An unresolved delivery resumes only with the buyer that may hold the lead.
            (unresolved("k", 1), in_flight("k", Some(2))),
            (unresolved("k", 1), unresolved("k", 2)),
            (unresolved("k", 1), done("k")),
            (unresolved("k", 1), PostState::None),
            // A final answer is never delivered again nor forgotten.
            (done("k"), in_flight("k", None)),
            (done("k"), PostState::None),
        ];
        for (from, to) in &illegal {
            assert!(!from.may_become(to), "{from:?} -> {to:?} should be illegal");
        }
    }
}
