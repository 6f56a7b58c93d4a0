//! `GET /v1/auctions/{auction_id}` (CONTRACT §4.3): the auction record — ping summary, every buyer's
//! outcome, the winner, post attempts and their result. Never PII.
//!
//! Served from the owning core's shard, so it covers auctions still held in memory (open, or within
//! their retention after the bid expired). Other tenants' auctions are 404, as unknown ones are.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auction::record::{to_record, FIXED_PRICE_BID};
use crate::auction::rfc3339_ms;
use crate::config::{Scope, Tenant};
use crate::error::ApiError;
use crate::exchange::{Core, Shared};
use crate::http::Reply;
use crate::model::Money;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::on_core;
use crate::store::AuctionRecord;

#[derive(Serialize)]
struct BuyerOut<'a> {
    buyer_id: &'a str,
    outcome: &'a str,
    /// Only on a direct-post buyer's fixed-price bid: the buyer was not pinged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    direct_post: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_detail: Option<&'a str>,
    latency_ms: f64,
}

#[derive(Serialize)]
struct WinnerOut<'a> {
    buyer_id: &'a str,
    price: Money,
    payout: Money,
}

#[derive(Serialize)]
struct AttemptOut<'a> {
    buyer_id: &'a str,
    attempt: u32,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    latency_ms: f64,
}

#[derive(Serialize)]
struct PostOut<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_lead_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lead_uuid: Option<&'a str>,
    attempts: Vec<AttemptOut<'a>>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    auction_id: &'a str,
    tenant: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'a str>,
    ping: &'a serde_json::value::RawValue,
    currency: &'a str,
    created_at: String,
    deadline_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_at: Option<String>,
    buyers: Vec<BuyerOut<'a>>,
    winner: Option<WinnerOut<'a>>,
    post: PostOut<'a>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Renders an auction record. The same stored record always renders the same bytes, before and
/// after a restart.
pub fn render(shared: &Shared, r: &AuctionRecord) -> Result<Reply, ApiError> {
    let ping: &serde_json::value::RawValue = serde_json::from_slice(&r.ping_json)
        .map_err(|_| ApiError::internal("The auction record could not be read."))?;
    let slot = |s: u32| r.outcomes.get(s as usize);
    let winner = r.ranked.first().and_then(|&s| slot(s)).map(|o| WinnerOut {
        buyer_id: &o.buyer_id,
        price: Money(o.amount_cents.unwrap_or(0)),
        payout: Money(r.payout_cents.unwrap_or(0)),
    });
    // "delivering" is an internal intent; to a reader the delivery is simply not settled.
    let post_status = match r.post.state.as_str() {
        "delivering" => "in_flight",
        s => s,
    };
    let record = RecordOut {
        auction_id: &r.id,
        tenant: &r.tenant,
        status: &r.status,
        reject_reason: r.reject_reason.as_deref(),
        ping,
        currency: &shared.config.auction.currency,
        created_at: rfc3339_ms(r.created_ms),
        deadline_at: rfc3339_ms(r.deadline_ms),
        closed_at: r.closed_ms.map(rfc3339_ms),
        buyers: r
            .outcomes
            .iter()
            .map(|o| BuyerOut {
                buyer_id: &o.buyer_id,
                // A fixed-price bid is stored under a word of its own and shown as a `bid`.
                outcome: if o.kind == FIXED_PRICE_BID {
                    "bid"
                } else {
                    &o.kind
                },
                direct_post: o.kind == FIXED_PRICE_BID,
                amount: o.amount_cents.map(Money),
                reject_reason: o.reject_reason.as_deref(),
                reject_detail: o.reject_detail.as_deref(),
                latency_ms: ms(o.latency_us),
            })
            .collect(),
        winner,
        post: PostOut {
            status: post_status,
            buyer_id: r.post.sold_slot.and_then(slot).map(|o| o.buyer_id.as_str()),
            buyer_lead_id: r.post.buyer_lead_id.as_deref(),
            lead_uuid: r
                .post
                .lead_uuid
                .as_deref()
                .filter(|_| r.post.sold_slot.is_some()),
            attempts: r
                .post_attempts
                .iter()
                .map(|p| AttemptOut {
                    buyer_id: &p.buyer_id,
                    attempt: p.attempt,
                    result: &p.result,
                    http_status: p.http_status,
                    latency_ms: ms(p.latency_us),
                })
                .collect(),
        },
    };
    Ok(Reply::json(StatusCode::OK, &record))
}

pub async fn handle(
    core: &Rc<Core>,
    req: Request<Incoming>,
    auction_id: String,
    rid: &str,
) -> Result<Reply, ApiError> {
    let client = core.authenticate(req.headers(), Scope::Reports)?;
    if auction_id.is_empty()
        || auction_id.len() > 64
        || !auction_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::not_found("No auction has this id."));
    }
    let owner = core.shared.owner_of(&auction_id);
    let rid_owned = rid.to_string();
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        match lookup(&c, &auction_id, client.tenant) {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

/// The stored record; an auction still open (not yet stored) is rendered from memory.
fn lookup(core: &Rc<Core>, auction_id: &str, tenant: Tenant) -> Result<Reply, ApiError> {
    let missing = || ApiError::not_found("No auction has this id.");
    let record = match crate::exchange::auction::stored(core, tenant, auction_id)? {
        Some(r) => r,
        None => {
            let shard = core.shard.borrow();
            let a = shard.get(tenant, auction_id).ok_or_else(missing)?;
            to_record(a)
        }
    };
    debug_assert_eq!(record.tenant, tenant.as_str());
    render(&core.shared, &record)
}
