//! The ping use-case ([`ping`]) on the auction's owning core, and the auction records that go with
//! it: open the auction in the shard, fan the ping out to eligible buyers, clear the bids, price
//! and sign the winning bid, and make the closed auction durable (with its `auction.closed` event
//! and the answer's idempotency records); and finding the record a party may see under an id
//! ([`find`]).
//!
//! Auction ids are scoped by tenant and seller: everything here that reads or writes an auction
//! on a seller's behalf names the seller, so another seller's auction under the same id is never
//! found, refused, nor changed.
//!
//! Owns the use-case, not its wire form: the API hands in how a [`Closed`] auction is answered
//! ([`Answering`]), since the answer is recorded with the auction for a retry to replay, and
//! decides how an [`ExchangeError`] is answered. Buyer I/O belongs to
//! [`crate::auction::fanout`], clearing and tokens to [`crate::auction`].

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ExchangeError;
use super::events;
use crate::auction::clearing::Candidate;
use crate::auction::record::{from_record, to_record, FIXED_PRICE_BID};
use crate::auction::shard::InsertError;
use crate::auction::{fanout, Auction, Award, BuyerOutcome, NoBidReason, OutcomeKind, Status};
use crate::auth::Client;
use crate::buyers::{Eligibility, Registry};
use crate::config::MAX_WINDOW_MS;
use crate::exchange::Core;
use crate::http::Reply;
use crate::limits::{Decision, Slot, UnpostedSlot};
use crate::model::Ping;
use crate::parties::Seller;
use crate::store::{AuctionRecord, Batch, StoreError};
use crate::types::{Cents, Party, Tenant};

/// A closed auction, as its seller is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub auction_id: String,
    /// The winning bid, or why nobody won.
    pub result: Result<WinningBid, NoBidReason>,
    /// Buyers that were sent the ping (eligible and within their limits).
    pub buyers_pinged: usize,
    /// Valid bids among their answers.
    pub bids_received: usize,
    /// From opening the auction to clearing it.
    pub auction_ms: u64,
}

/// What the seller is offered for the lead, and the token that lets it post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinningBid {
    /// What the seller is paid once the lead is delivered.
    pub payout_cents: Cents,
    pub bid_token: String,
    pub valid_until_ms: u64,
}

impl From<Award> for WinningBid {
    fn from(w: Award) -> WinningBid {
        WinningBid {
            payout_cents: w.payout_cents,
            bid_token: w.bid_token,
            valid_until_ms: w.valid_until_ms,
        }
    }
}

/// How a ping's answer is made and kept, handed in by the API: the wire form of a closed auction,
/// and the idempotency records that become durable with it (none for a ping without a key).
pub struct Answering<'a> {
    /// The seller's answer to its closed auction.
    pub answer: &'a dyn Fn(&Closed) -> Reply,
    /// Adds the answer's idempotency records to the batch (`now_ms` is their time); adds nothing
    /// for a ping without a key.
    pub record: &'a dyn Fn(&mut Batch, &Reply, u64) -> Result<(), StoreError>,
}

/// The ping use-case on the auction's owning core (the idempotency key, if any, is already held):
/// the auction under the ping's id (or a fresh one minted here), then its answer, returned once
/// the auction record and the answer's idempotency records reached the disk, then the engine's
/// overhead recorded. A refusal before the auction ran (an id in use, a seller limit, a full
/// shard) is an error and records nothing, so a corrected or later retry can still run.
pub async fn ping(
    core: &Rc<Core>,
    ping: Ping,
    client: &Client,
    received: Instant,
    answering: &Answering<'_>,
) -> Result<Reply, ExchangeError> {
    let auction_id = match &ping.auction_id {
        Some(id) => id.clone(),
        None => crate::auction::id::mint(core.id, core.shared.cores),
    };
    let closed = run(core, auction_id, ping, client).await?;
    // The auction ran, so the caller is a seller; its auctions are its own id space.
    let seller = seller_of(client)?;
    let reply = answer_durably(core, client.tenant, seller, &closed, answering).await?;
    record_engine_overhead(core, client.tenant, seller, &closed.auction_id, received);
    Ok(reply)
}

/// `seller`'s answer to its closed auction, returned once the auction record (and the answer's
/// idempotency records) reached the disk: a post after a crash needs the record, a retry needs
/// the answer.
pub async fn answer_durably(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    closed: &Closed,
    answering: &Answering<'_>,
) -> Result<Reply, ExchangeError> {
    let reply = (answering.answer)(closed);
    let mut batch = Batch::new();
    (answering.record)(&mut batch, &reply, core.shared.clock.now_ms())?;
    record_closed(core, tenant, seller, &closed.auction_id, batch).await?;
    Ok(reply)
}

/// Runs one auction under `auction_id` (which must be free) and leaves it, closed, in the shard.
/// Writes nothing to the store: the caller makes it durable with [`record_closed`] together with
/// whatever else it answers for.
pub async fn run(
    core: &Rc<Core>,
    auction_id: String,
    ping: Ping,
    client: &Client,
) -> Result<Closed, ExchangeError> {
    let shared = &core.shared;
    let started = Instant::now();
    let account = super::sellers::sending(core, client)?;
    // Held until the auction closes: the seller's running auctions, counted on every core.
    let (_running, unposted) = admit(core, &account)?;
    let seller = account.id();
    // The buyer snapshot this auction keeps for its whole life, whatever changes meanwhile.
    let registry = core.registry();
    let (deadline, elig, buyer_ref) =
        open(core, &registry, &auction_id, &ping, client, seller, started)?;
    let outcomes = fanout::ping_buyers(
        &registry,
        &core.pool,
        &shared.config.auction,
        &buyer_ref,
        &ping,
        &elig,
        deadline,
    )
    .await;
    core.metrics
        .record_auction(started.elapsed().as_micros() as u64);
    // A direct-post buyer was not pinged: its fixed price is no ping outcome.
    for o in outcomes.iter().filter(|o| !o.direct_post) {
        core.metrics.record_buyer_ping(
            client.tenant,
            &o.buyer_id,
            o.kind,
            o.kind.was_pinged().then_some(o.latency_us),
        );
        if let Some(why) = o.failure {
            core.metrics
                .record_buyer_call_error(client.tenant, &o.buyer_id, why);
        }
    }
    let any_eligible = !elig.eligible.is_empty();
    let closed = close(
        core,
        &registry,
        client.tenant,
        seller,
        auction_id,
        outcomes,
        any_eligible,
        started,
    );
    if closed.result.is_ok() {
        // A won auction keeps its unposted slot until it is posted or leaves memory; a lost one
        // gives it back here, as it is dropped.
        if let Some(a) = core
            .shard
            .borrow_mut()
            .get_mut(client.tenant, seller, &closed.auction_id)
        {
            a.unposted = Some(unposted);
        }
    }
    Ok(closed)
}

/// The seller's limits (CONTRACT §7), checked before its auction opens: a running-auction slot,
/// held until the auction closes; an unposted slot, which the auction keeps if it is won; and one
/// ping of its rate. Each refusal is counted by the limit that made it.
fn admit<'a>(core: &Core, seller: &'a Seller) -> Result<(Slot<'a>, UnpostedSlot), ExchangeError> {
    let limits = &seller.limits;
    let id = || seller.id().to_string();
    let running = limits.auctions.try_acquire().ok_or_else(|| {
        core.metrics
            .record_rate_limited("seller_concurrent_auctions");
        ExchangeError::TooManyRunning {
            seller: id(),
            max: limits.auctions.max(),
        }
    })?;
    let unposted = limits.reserve_unposted().ok_or_else(|| {
        core.metrics.record_rate_limited("seller_unposted");
        ExchangeError::TooManyUnposted {
            seller: id(),
            max: limits.unposted.max(),
        }
    })?;
    // Last: a ping refused by a cap above does not spend the seller's rate.
    if let Decision::Limited { retry_after, reset } = limits.pings.acquire() {
        core.metrics.record_rate_limited("seller_pings");
        return Err(ExchangeError::SellerPingRate {
            seller: id(),
            per_s: limits.pings.limit(),
            retry_after_ms: retry_after.as_millis() as u64,
            reset_ms: reset.as_millis() as u64,
        });
    }
    Ok((running, unposted))
}

/// The seller a caller sends leads for; the operator and buyers send none.
pub fn seller_of(client: &Client) -> Result<&str, ExchangeError> {
    client.seller().ok_or(ExchangeError::NotASeller {
        party: client.party.kind().as_str(),
    })
}

/// Opens the auction in the shard: its bid window, the buyers eligible for its ping, the id
/// buyers will know it by, and the check that a seller-chosen id is not in use.
fn open(
    core: &Core,
    registry: &Arc<Registry>,
    auction_id: &str,
    ping: &Ping,
    client: &Client,
    seller: &str,
    started: Instant,
) -> Result<(fanout::Deadline, Eligibility, String), ExchangeError> {
    let cfg = &core.shared.config.auction;
    let now = core.shared.clock.now_ms();
    // The bid window: the seller's expires_at when given (never more than 5 s away), else the
    // configured window.
    let deadline_ms = ping
        .expires_at_ms
        .map_or(now + cfg.window_ms, |e| e.min(now + MAX_WINDOW_MS));
    let deadline = fanout::Deadline {
        at: started + Duration::from_millis(deadline_ms.saturating_sub(now)),
        unix_ms: deadline_ms,
    };
    // A seller-chosen id names one auction of that seller for as long as its record is kept,
    // not only while it is in memory (Gavel's own ids are ULIDs and never repeat). Only the
    // seller's own auctions count: another seller's use of the id is neither an obstacle nor
    // anything this answer may reveal.
    let in_memory = || {
        core.shard
            .borrow()
            .get(client.tenant, seller, auction_id)
            .is_some()
    };
    if ping.auction_id.is_some()
        && !in_memory()
        && stored(core, client.tenant, seller, auction_id)?.is_some()
    {
        return Err(ExchangeError::AuctionExists {
            auction_id: auction_id.to_string(),
        });
    }
    let elig = registry.eligibility(ping, client.tenant, cfg.max_buyers_per_auction);
    let mut auction = Auction::open(
        registry.clone(),
        auction_id.to_string(),
        client.tenant,
        client.name.clone(),
        seller.to_string(),
        ping.clone(),
        now,
        deadline_ms,
        deadline_ms + cfg.retention_ms,
    );
    // Buyers dedupe on `ping_<id>` and `post_<id>`: an id a seller chose (which another seller
    // may choose too) reaches them as an id of Gavel's own, unique across sellers.
    if ping.auction_id.is_some() {
        auction.buyer_ref = format!("auc_{}", ulid::Ulid::new());
    }
    let buyer_ref = auction.buyer_ref.clone();
    insert(core, auction, now).map_err(|e| refused(e, client.tenant, auction_id))?;
    Ok((deadline, elig, buyer_ref))
}

/// Clears the buyers' answers, prices and signs the winning bid (its token bound to `seller`),
/// and closes the auction in the shard with the time it may leave memory.
#[allow(clippy::too_many_arguments)]
fn close(
    core: &Core,
    registry: &Registry,
    tenant: Tenant,
    seller: &str,
    auction_id: String,
    mut outcomes: Vec<BuyerOutcome>,
    any_eligible: bool,
    started: Instant,
) -> Closed {
    let shared = &core.shared;
    let closed = shared.clock.now_ms();
    // A bid that states no validity (a direct-post buyer's fixed price, a formatted answer)
    // holds for the bid token's lifetime, so the token and the delivery can rely on it.
    for o in &mut outcomes {
        if o.kind == OutcomeKind::Bid && o.valid_until_ms.is_none() {
            o.valid_until_ms = Some(closed + shared.config.bid_token.ttl_ms());
        }
    }
    let bids: Vec<Candidate> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == OutcomeKind::Bid)
        .map(|(slot, o)| Candidate {
            slot,
            amount_cents: o.amount_cents.unwrap_or(0),
            buyer_floor_cents: registry.buyers[o.buyer].floor_cents,
            arrival: o.arrival,
        })
        .collect();
    let award = crate::auction::award(
        &shared.config,
        &shared.keys,
        any_eligible,
        &bids,
        |slot| outcomes[slot].valid_until_ms,
        &auction_id,
        tenant,
        seller,
        closed,
    );
    let retention_ms = shared.config.auction.retention_ms;
    // A won auction stays while its bid token may still be posted, then for the retention.
    let (status, result, evict_at) = match award {
        Err(reason) => {
            core.metrics.record_no_bid(reason);
            (Status::NoBid(reason), Err(reason), closed + retention_ms)
        }
        Ok(w) => {
            let evict_at = w.valid_until_ms + retention_ms;
            let status = Status::Won {
                ranked: w.ranked.iter().map(|c| c.slot).collect(),
                payout_cents: w.payout_cents,
                token_valid_until_ms: w.valid_until_ms,
            };
            (status, Ok(WinningBid::from(w)), evict_at)
        }
    };
    let answer = Closed {
        auction_id: auction_id.clone(),
        result,
        buyers_pinged: outcomes
            .iter()
            .filter(|o| o.kind.was_pinged() && !o.direct_post)
            .count(),
        bids_received: bids.len(),
        auction_ms: started.elapsed().as_millis() as u64,
    };
    let mut shard = core.shard.borrow_mut();
    if let Some(a) = shard.get_mut(tenant, seller, &auction_id) {
        a.outcomes = outcomes;
        a.status = status;
        a.closed_ms = Some(closed);
    }
    shard.set_evict_at(tenant, seller, &auction_id, evict_at);
    answer
}

/// Puts an auction into this core's shard and updates the core's count of auctions in memory.
fn insert(core: &Core, auction: Auction, now: u64) -> Result<(), InsertError> {
    let mut shard = core.shard.borrow_mut();
    let inserted = shard.insert(auction, now);
    core.stats()
        .auctions_in_memory
        .store(shard.len() as u64, Ordering::Relaxed);
    inserted
}

/// A shard's refusal in the exchange's terms.
fn refused(e: InsertError, tenant: Tenant, auction_id: &str) -> ExchangeError {
    match e {
        InsertError::Exists => ExchangeError::AuctionExists {
            auction_id: auction_id.to_string(),
        },
        InsertError::Full { retry_after_ms } => ExchangeError::RoomFull {
            tenant,
            retry_after_ms,
        },
    }
}

/// Makes `seller`'s closed auction `auction_id` durable, together with what the caller put in
/// `batch` (a keyed request's answer), and announces its `auction.closed` event once it is.
/// Nothing is written when the auction is not in the shard and `batch` is empty.
pub async fn record_closed(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
    batch: Batch,
) -> Result<(), ExchangeError> {
    let record = core
        .shard
        .borrow()
        .get(tenant, seller, auction_id)
        .map(to_record);
    commit_record(core, record.as_ref(), batch).await
}

/// Commits `record` (when there is one) with what `batch` already holds, and the record's
/// `auction.closed` event when this is its first durable write; the event is announced once the
/// batch is durable. An empty batch without a record writes nothing.
pub async fn commit_record(
    core: &Core,
    record: Option<&AuctionRecord>,
    mut batch: Batch,
) -> Result<(), ExchangeError> {
    let emitted = match record {
        Some(r) => events::put_auction(core, &mut batch, r, core.shared.clock.now_ms())?,
        None => events::Emitted::default(),
    };
    if batch.is_empty() {
        return Ok(());
    }
    core.commit(batch).await?;
    events::committed(core, emitted);
    Ok(())
}

/// Records what Gavel added on top of the slowest buyer it waited for: time since `received`
/// minus the longest round trip among the buyers `seller`'s auction pinged.
pub fn record_engine_overhead(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
    received: Instant,
) {
    let slowest_us = core
        .shard
        .borrow()
        .get(tenant, seller, auction_id)
        .map(|a| {
            a.outcomes
                .iter()
                .filter(|o| o.kind.was_pinged())
                .map(|o| o.latency_us)
                .max()
                .unwrap_or(0)
        });
    if let Some(slowest_us) = slowest_us {
        let total_us = received.elapsed().as_micros() as u64;
        core.metrics
            .record_engine_overhead(total_us.saturating_sub(slowest_us));
    }
}

/// The stored record of `seller`'s auction `auction_id` in `tenant`, if the store still keeps
/// one.
pub fn stored(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
) -> Result<Option<AuctionRecord>, ExchangeError> {
    core.shared
        .store
        .get_auction(tenant.as_str(), seller, auction_id)
        .map_err(|e| unreadable(auction_id, e))
}

fn unreadable(auction_id: &str, e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::RecordUnreadable {
        auction_id: auction_id.to_string(),
        reason: e.to_string(),
    }
}

/// Loads `seller`'s auction into the shard from the store when memory no longer holds it (after a
/// restart, or after the shard evicted it). Returns false when that seller has no such auction.
pub fn ensure_loaded(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
) -> Result<bool, ExchangeError> {
    if core
        .shard
        .borrow()
        .get(tenant, seller, auction_id)
        .is_some()
    {
        return Ok(true);
    }
    let Some(record) = stored(core, tenant, seller, auction_id)? else {
        return Ok(false);
    };
    let now = core.shared.clock.now_ms();
    let evict_at = record.token_valid_until_ms.unwrap_or(now).max(now)
        + core.shared.config.auction.retention_ms;
    // Read back, the auction resolves its buyer ids against the snapshot current now.
    let auction =
        from_record(record, &core.registry(), evict_at).map_err(|e| unreadable(auction_id, e))?;
    match insert(core, auction, now) {
        Ok(()) | Err(InsertError::Exists) => Ok(true),
        Err(e) => Err(refused(e, tenant, auction_id)),
    }
}

/// The auction record `who` may see under `auction_id` in `tenant` (CONTRACT §4.3; how it is
/// rendered is the caller's): a seller its own auction; a buyer one it took part in (it was
/// pinged, or bid its fixed price); the operator any seller's. `seller_hint` (`?seller_id=`)
/// picks one seller's auction when several sellers used the id; for a seller it can only name
/// itself. The stored record is preferred to memory (it is what survives a restart); an auction
/// still open is found in the shard. Several matches without a hint are
/// [`ExchangeError::AmbiguousAuctionId`]; none, for whatever reason, is
/// [`ExchangeError::AuctionNotFound`], so an answer never tells a party about another's auction.
/// Runs on the id's owning core; reads at most [`crate::store::MAX_SAME_ID_SELLERS`] stored
/// records.
pub fn find(
    core: &Core,
    tenant: Tenant,
    who: &Party,
    auction_id: &str,
    seller_hint: Option<&str>,
) -> Result<AuctionRecord, ExchangeError> {
    let not_found = || ExchangeError::AuctionNotFound {
        auction_id: auction_id.to_string(),
    };
    let seller = match (who, seller_hint) {
        (Party::Seller(own), Some(hint)) if hint != own => return Err(not_found()),
        (Party::Seller(own), _) => Some(own.as_str()),
        (_, hint) => hint,
    };
    let mut found = match seller {
        Some(s) => one_sellers(core, tenant, s, auction_id)?
            .into_iter()
            .collect(),
        None => every_sellers(core, tenant, auction_id)?,
    };
    if let Party::Buyer(b) = who {
        found.retain(|r| took_part(r, b));
    }
    match found.len() {
        0 => Err(not_found()),
        1 => Ok(found.pop().expect("one")),
        _ => Err(ExchangeError::AmbiguousAuctionId {
            auction_id: auction_id.to_string(),
            // Which sellers used the id is the operator's to know, not a buyer's.
            sellers: match who {
                Party::Operator => found.into_iter().map(|r| r.seller).collect(),
                _ => Vec::new(),
            },
        }),
    }
}

/// `seller`'s auction under the id: stored, else in memory.
fn one_sellers(
    core: &Core,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
) -> Result<Option<AuctionRecord>, ExchangeError> {
    if let Some(r) = stored(core, tenant, seller, auction_id)? {
        return Ok(Some(r));
    }
    let shard = core.shard.borrow();
    Ok(shard.get(tenant, seller, auction_id).map(to_record))
}

/// Every seller's auction under the id: the stored ones, and those only memory holds yet.
fn every_sellers(
    core: &Core,
    tenant: Tenant,
    auction_id: &str,
) -> Result<Vec<AuctionRecord>, ExchangeError> {
    let mut found = core
        .shared
        .store
        .auctions_by_id(tenant.as_str(), auction_id)
        .map_err(|e| unreadable(auction_id, e))?;
    let shard = core.shard.borrow();
    for a in shard.by_id(tenant, auction_id) {
        if !found.iter().any(|r| r.seller == a.seller) {
            found.push(to_record(a));
        }
    }
    Ok(found)
}

/// Whether buyer `buyer` took part in the auction: it was pinged (whatever it answered) or bid
/// its fixed price. A buyer filtered out, capped or rate limited never heard of the auction.
fn took_part(r: &AuctionRecord, buyer: &str) -> bool {
    r.outcomes.iter().any(|o| {
        o.buyer_id == buyer
            && (o.kind == FIXED_PRICE_BID
                || OutcomeKind::parse(&o.kind).is_some_and(OutcomeKind::was_pinged))
    })
}
