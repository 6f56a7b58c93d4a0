//! `POST /v1/ping` (CONTRACT §4.1): validate the ping, run the auction on its owning core, answer
//! with the winning bid and a signed bid token, or with a structured no-bid.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auction::clearing::Candidate;
use crate::auction::shard::InsertError;
use crate::auction::{fanout, now_ms, rfc3339_ms, Auction, OutcomeKind, Status};
use crate::auth::Client;
use crate::config::{Scope, Tenant, MAX_WINDOW_MS};
use crate::error::ApiError;
use crate::http::Reply;
use crate::model::{Money, Ping};
use crate::runtime::admission::{self, Admit};
use crate::runtime::handoff::on_core;
use crate::store::Batch;

use super::idempotency::{self, Idem};
use crate::runtime::Core;

/// The winning bid in a ping's answer (CONTRACT §4.1).
#[derive(Serialize)]
pub struct BidOut {
    pub amount: Money,
    pub currency: String,
    pub bid_token: String,
    pub valid_until: String,
}

impl BidOut {
    /// The answer's bid for an award, in `currency`.
    pub fn of(award: &crate::auction::Award, currency: &str) -> BidOut {
        BidOut {
            amount: Money(award.payout_cents),
            currency: currency.to_string(),
            bid_token: award.bid_token.clone(),
            valid_until: rfc3339_ms(award.valid_until_ms),
        }
    }
}

/// A ping's answer (CONTRACT §4.1); public so the baseline bench answers in exactly this shape.
#[derive(Serialize)]
pub struct PingOut<'a> {
    pub auction_id: &'a str,
    pub status: &'static str,
    pub bid: Option<BidOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_detail: Option<&'static str>,
    pub buyers_pinged: usize,
    pub bids_received: usize,
    pub auction_ms: u64,
}

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    let received = Instant::now();
    let client = core.authenticate(req.headers(), Scope::Ping)?;
    let key = idempotency::key_from(req.headers())?;
    let mut body = super::json_body(req).await?;
    // Shed before parsing when this core already runs too late to start an auction in time.
    admission::precheck(core, Admit::New)?;
    let fingerprint = idempotency::fingerprint(&body);
    let ping = super::validate::parse_ping(&mut body, now_ms())?;
    let owner = deciding_core(core, ping.auction_id.as_deref(), key.as_deref());
    let idem = key.map(|k| Idem::new(&client, "POST", "/v1/ping", k, fingerprint));
    let rid_owned = rid.to_string();
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        match run(&c, ping, client, idem, &rid_owned, received).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

/// The core that decides a request: its idempotency key's core when it has a key (one key is never
/// decided on two cores, whatever else the body says; an id minted there is owned by it), else the
/// auction id's owner, else this core.
pub(super) fn deciding_core(core: &Core, auction_id: Option<&str>, key: Option<&str>) -> usize {
    match (key, auction_id) {
        (Some(k), _) => idempotency::key_core(&core.shared, k),
        (None, Some(id)) => core.shared.owner_of(id),
        (None, None) => core.id,
    }
}

/// Runs one ping on its deciding core: the idempotency check there, then the auction on the
/// auction id's owner.
async fn run(
    core: &Rc<Core>,
    ping: Ping,
    client: Client,
    idem: Option<Idem>,
    rid: &str,
    received: Instant,
) -> Result<Reply, ApiError> {
    let Some(i) = idem.clone() else {
        return execute(core, ping, client, None, rid, received).await;
    };
    let target = ping
        .auction_id
        .as_deref()
        .map_or(core.id, |id| core.shared.owner_of(id));
    let rid = rid.to_string();
    idempotency::run_keyed(core, &i, target, Admit::New, move |c| async move {
        execute(&c, ping, client, idem, &rid, received).await
    })
    .await
}

/// Runs one auction on its owning core (the idempotency key, if any, is already held): auction,
/// durable record (with the answer under the key), reply.
async fn execute(
    core: &Rc<Core>,
    ping: Ping,
    client: Client,
    idem: Option<Idem>,
    rid: &str,
    received: Instant,
) -> Result<Reply, ApiError> {
    let auction_id = match &ping.auction_id {
        Some(id) => id.clone(),
        None => core.mint_auction_id(),
    };
    let client_tenant = client.tenant;
    let outcome = run_auction(core, auction_id.clone(), ping, &client).await;
    let reply = match &outcome {
        Ok(r) => r.clone(),
        Err(e) => Reply::error(e, rid),
    };
    // The auction record (and the answer, for a keyed request) reach the disk before the seller
    // hears of the bid: a post after a crash needs the record, a retry needs the answer.
    let record = {
        let shard = core.shard.borrow();
        shard
            .get(client_tenant, &auction_id)
            .map(crate::auction::record::to_record)
    };
    let mut batch = Batch::new();
    let mut emitted = super::events::Emitted::default();
    if let (Ok(_), Some(r)) = (&outcome, &record) {
        emitted = super::events::put_auction(core, &mut batch, r, now_ms())?;
    }
    // Only an auction that ran is recorded under the key; a refusal before it ran (an auction id
    // in use, a full shard) is not, so a corrected or later retry can still run.
    if let (Some(i), Ok(_)) = (&idem, &outcome) {
        idempotency::record(&mut batch, i, &reply, now_ms())?;
    }
    if !batch.is_empty() {
        core.commit(batch).await.map_err(store_error)?;
        super::events::committed(core, emitted);
    }
    if outcome.is_ok() {
        record_engine_overhead(core, client_tenant, &auction_id, received);
    }
    Ok(reply)
}

/// Records what Gavel added on top of the slowest buyer it waited for: time since `received`
/// minus the longest round trip among the buyers it pinged.
pub(super) fn record_engine_overhead(
    core: &Core,
    tenant: Tenant,
    auction_id: &str,
    received: Instant,
) {
    let slowest_us = core.shard.borrow().get(tenant, auction_id).map(|a| {
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

/// 503 for a tenant whose auctions fill its room on this core, with the time until the earliest
/// of them may leave as `Retry-After` (whole seconds, at least 1).
pub(super) fn shard_full(tenant: Tenant, retry_after_ms: u64) -> ApiError {
    let secs = retry_after_ms.div_ceil(1_000).max(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "This core holds the {} tenant's maximum number of auctions; the earliest leaves in about {secs} s.",
            tenant.as_str()
        ),
    )
    .with_header(http::header::RETRY_AFTER, secs.to_string())
}

fn auction_exists(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "auction_exists",
        format!("An auction with id {id} already exists."),
    )
}

/// A store failure as the seller sees it: Gavel's fault, worth a retry.
pub fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store write failed");
    match e {
        crate::store::StoreError::Overloaded => {
            ApiError::overloaded("The store is saturated; retry shortly.")
        }
        _ => ApiError::internal("The request could not be recorded."),
    }
}

/// Runs one auction under `auction_id` (which must be free) and leaves it in the shard; returns
/// the seller's answer (won with a signed bid token, or a structured no-bid). Writes nothing to
/// the store: the caller commits the record together with whatever else it answers for.
pub(super) async fn run_auction(
    core: &Rc<Core>,
    auction_id: String,
    ping: Ping,
    client: &Client,
) -> Result<Reply, ApiError> {
    let shared = &core.shared;
    let cfg = &shared.config.auction;
    let started = Instant::now();
    let now = now_ms();
    // Held until the auction closes: the seller's running auctions, counted on every core.
    let _running = client.limits.auctions.try_acquire().ok_or_else(|| {
        core.metrics.record_rate_limited("concurrent_auctions");
        let max = client.limits.auctions.max();
        crate::limits::too_many(
            &format!("This client may run {max} auctions at once"),
            max,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    })?;
    // The bid window: the seller's expires_at when given (never more than 5 s away), else the
    // configured window.
    let deadline_ms = ping
        .expires_at_ms
        .map_or(now + cfg.window_ms, |e| e.min(now + MAX_WINDOW_MS));
    let deadline = started + Duration::from_millis(deadline_ms.saturating_sub(now));

    // A seller-chosen id names one auction for as long as its record is kept, not only while it
    // is in memory (Gavel's own ids are ULIDs and never repeat).
    if ping.auction_id.is_some()
        && core
            .shard
            .borrow()
            .get(client.tenant, &auction_id)
            .is_none()
    {
        let stored = super::auctions::stored(core, client.tenant, &auction_id)?;
        if stored.is_some() {
            return Err(auction_exists(&auction_id));
        }
    }

    let elig = shared
        .registry
        .eligibility(&ping, client.tenant, cfg.max_buyers_per_auction);
    let auction = Auction::open(
        auction_id.clone(),
        client.tenant,
        client.name.clone(),
        ping.clone(),
        now,
        deadline_ms,
        deadline_ms + cfg.retention_ms,
    );
    {
        let mut shard = core.shard.borrow_mut();
        match shard.insert(auction, now) {
            Ok(()) => {}
            Err(InsertError::Exists) => return Err(auction_exists(&auction_id)),
            Err(InsertError::Full { retry_after_ms }) => {
                return Err(shard_full(client.tenant, retry_after_ms))
            }
        }
        core.stats()
            .auctions_in_memory
            .store(shard.len() as u64, Ordering::Relaxed);
    }

    let outcomes = fanout::ping_buyers(
        &shared.registry,
        &core.pool,
        cfg,
        &auction_id,
        &ping,
        &elig,
        fanout::Deadline {
            at: deadline,
            unix_ms: deadline_ms,
        },
    )
    .await;

    core.metrics
        .record_auction(started.elapsed().as_micros() as u64);
    for o in &outcomes {
        core.metrics.record_buyer_ping(
            o.buyer,
            o.kind.as_str(),
            o.kind.was_pinged().then_some(o.latency_us),
        );
    }

    let bids: Vec<Candidate> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == OutcomeKind::Bid)
        .map(|(slot, o)| Candidate {
            slot,
            amount_cents: o.amount_cents.unwrap_or(0),
            buyer_floor_cents: shared.registry.buyers[o.buyer].floor_cents,
            arrival: o.arrival,
        })
        .collect();
    let closed = now_ms();
    let award = crate::auction::award(
        &shared.config,
        &shared.keys,
        !elig.eligible.is_empty(),
        &bids,
        |slot| outcomes[slot].valid_until_ms,
        &auction_id,
        client.tenant,
        closed,
    );
    let (status, bid) = match award {
        Err(reason) => (Status::NoBid(reason), None),
        Ok(w) => {
            let bid = BidOut::of(&w, &cfg.currency);
            (
                Status::Won {
                    ranked: w.ranked.iter().map(|c| c.slot).collect(),
                    payout_cents: w.payout_cents,
                    token_valid_until_ms: w.valid_until_ms,
                },
                Some(bid),
            )
        }
    };

    let out = PingOut {
        auction_id: &auction_id,
        status: if bid.is_some() { "won" } else { "no_bid" },
        reject_reason: match &status {
            Status::NoBid(r) => Some(r.code()),
            _ => None,
        },
        reject_detail: match &status {
            Status::NoBid(r) => Some(r.detail()),
            _ => None,
        },
        bid,
        buyers_pinged: outcomes.iter().filter(|o| o.kind.was_pinged()).count(),
        bids_received: bids.len(),
        auction_ms: started.elapsed().as_millis() as u64,
    };
    if let Status::NoBid(r) = &status {
        core.metrics.record_no_bid(r.code());
    }
    let reply = Reply::json(StatusCode::OK, &out);

    let mut shard = core.shard.borrow_mut();
    let evict_at = match &status {
        Status::Won {
            token_valid_until_ms,
            ..
        } => *token_valid_until_ms + cfg.retention_ms,
        _ => closed + cfg.retention_ms,
    };
    if let Some(a) = shard.get_mut(client.tenant, &auction_id) {
        a.outcomes = outcomes;
        a.status = status;
        a.closed_ms = Some(closed);
    }
    shard.set_evict_at(client.tenant, &auction_id, evict_at);
    Ok(reply)
}
