//! Which state change emits which webhook event (CONTRACT §8), and with what data.
//!
//! Each function here adds an event to the [`Batch`] that records the state change, so the event
//! and the change reach the disk together or not at all; [`committed`] is called once that batch is
//! durable. Event data carries ids, statuses and amounts, never the lead's contact data: a seller's
//! receiver learns nothing it did not send or was not answered already.
//!
//! - `auction.closed` (opt-in): the first durable write of a closed auction. Every auction record
//!   is written through [`put_auction`], so no write path can skip it.
//! - `lead.posted`: a post's final answer (sold or unsold); `data` is that answer's body.
//! - `lead.status_changed`: a buyer's status report, with the status before it.
//!
//! Owns the mapping only; the outbox and its delivery belong to [`crate::webhooks`].

use serde::Serialize;

use super::error::ExchangeError;
use crate::auction::{rfc3339_ms, Status};
use crate::config::Tenant;
use crate::exchange::Core;
use crate::model::Money;
use crate::store::Batch;
use crate::webhooks::Queued;

/// Events queued in a batch that is not committed yet.
#[derive(Debug, Default)]
#[must_use = "pass to events::committed once the batch is durable"]
pub struct Emitted {
    queued: Queued,
    /// The auction (tenant, seller, id) whose `auction.closed` the batch carries.
    announced: Option<(Tenant, String, String)>,
}

impl Emitted {
    /// Adds the events of another call for the same batch.
    pub fn and(mut self, other: Emitted) -> Emitted {
        self.queued.extend(other.queued);
        self.announced = self.announced.or(other.announced);
        self
    }
}

// Architecture Invariant [webhook-same-batch]: an event is written in the batch of the state
// change that caused it; the dispatcher is rung only once that batch is durable.
/// To call once the batch holding `emitted` is durable: counts the events and wakes the worker.
pub fn committed(core: &Core, emitted: Emitted) {
    if let Some((tenant, seller, id)) = emitted.announced {
        if let Some(a) = core.shard.borrow_mut().get_mut(tenant, &seller, &id) {
            a.close_announced = true;
        }
    }
    core.webhooks().committed(emitted.queued);
}

#[derive(Serialize)]
struct AuctionClosed<'a> {
    auction_id: &'a str,
    /// `won` or `no_bid`.
    status: &'static str,
    vertical: &'a str,
    /// What the seller is paid if it posts the lead, for `won`.
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    /// Why nobody won, for `no_bid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'static str>,
    buyers_pinged: usize,
    bids: usize,
    closed_at: String,
}

/// Puts an auction record into `batch`, with its `auction.closed` event when this is the first
/// durable write of the closed auction.
pub fn put_auction(
    core: &Core,
    batch: &mut Batch,
    record: &crate::store::AuctionRecord,
    now_ms: u64,
) -> Result<Emitted, ExchangeError> {
    batch.put_auction(record)?;
    let Some(tenant) = Tenant::from_name(&record.tenant) else {
        return Ok(Emitted::default());
    };
    auction_closed(core, batch, tenant, &record.seller, &record.id, now_ms)
}

/// Queues `auction.closed` for an auction that closed and was never written since (a no-op when
/// it was, when it is still open, or when no endpoint takes the event).
fn auction_closed(
    core: &Core,
    batch: &mut Batch,
    tenant: Tenant,
    seller: &str,
    auction_id: &str,
    now_ms: u64,
) -> Result<Emitted, ExchangeError> {
    let hooks = &core.webhooks();
    let shard = core.shard.borrow();
    let Some(a) = shard.get(tenant, seller, auction_id) else {
        return Ok(Emitted::default());
    };
    if a.close_announced || !hooks.wants(a.tenant, &a.seller, "auction.closed") {
        return Ok(Emitted::default());
    }
    let (status, amount, reject_reason) = match &a.status {
        Status::Open => return Ok(Emitted::default()),
        Status::Won { payout_cents, .. } => ("won", Some(Money(*payout_cents)), None),
        Status::NoBid(r) => ("no_bid", None, Some(r.as_str())),
    };
    let data = AuctionClosed {
        auction_id,
        status,
        vertical: &a.ping.vertical,
        amount,
        currency: amount.map(|_| core.shared.config.auction.currency.as_str()),
        reject_reason,
        buyers_pinged: a
            .outcomes
            .iter()
            .filter(|o| o.kind.was_pinged() && !o.direct_post)
            .count(),
        bids: a
            .outcomes
            .iter()
            .filter(|o| o.kind == crate::auction::OutcomeKind::Bid)
            .count(),
        closed_at: rfc3339_ms(a.closed_ms.unwrap_or(now_ms)),
    };
    let queued = hooks.enqueue(batch, a.tenant, &a.seller, "auction.closed", &data, now_ms)?;
    Ok(Emitted {
        queued,
        announced: Some((tenant, seller.to_string(), auction_id.to_string())),
    })
}

/// Queues `lead.posted` with the post's final answer body as its data.
pub fn lead_posted(
    core: &Core,
    batch: &mut Batch,
    tenant: Tenant,
    seller: &str,
    answer_body: &[u8],
    now_ms: u64,
) -> Result<Emitted, ExchangeError> {
    let hooks = &core.webhooks();
    if !hooks.wants(tenant, seller, "lead.posted") {
        return Ok(Emitted::default());
    }
    let data: &serde_json::value::RawValue = serde_json::from_slice(answer_body)
        .map_err(|_| ExchangeError::Inconsistent("the post's answer is not JSON"))?;
    let queued = hooks.enqueue(batch, tenant, seller, "lead.posted", &data, now_ms)?;
    Ok(Emitted {
        queued,
        announced: None,
    })
}

#[derive(Serialize)]
struct StatusChanged<'a> {
    lead_uuid: &'a str,
    auction_id: &'a str,
    status: &'a str,
    previous_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    changed_at: String,
}

/// The status change of one lead, as `lead.status_changed` reports it.
pub struct StatusChange<'a> {
    pub lead_uuid: &'a str,
    pub auction_id: &'a str,
    pub status: &'a str,
    pub previous_status: &'a str,
    pub reason: Option<&'a str>,
    pub at_ms: u64,
}

/// Queues `lead.status_changed` for `seller`, whose lead it is (the lead record names it; a lead
/// of an older layout whose seller could not be found has an empty one, and nobody is told).
pub fn status_changed(
    core: &Core,
    batch: &mut Batch,
    tenant: Tenant,
    seller: &str,
    change: &StatusChange<'_>,
) -> Result<Emitted, ExchangeError> {
    let hooks = &core.webhooks();
    if seller.is_empty() || !hooks.wants(tenant, seller, "lead.status_changed") {
        return Ok(Emitted::default());
    }
    let data = StatusChanged {
        lead_uuid: change.lead_uuid,
        auction_id: change.auction_id,
        status: change.status,
        previous_status: change.previous_status,
        reason: change.reason,
        changed_at: rfc3339_ms(change.at_ms),
    };
    let queued = hooks.enqueue(
        batch,
        tenant,
        seller,
        "lead.status_changed",
        &data,
        change.at_ms,
    )?;
    Ok(Emitted {
        queued,
        announced: None,
    })
}
