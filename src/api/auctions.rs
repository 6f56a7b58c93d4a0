//! `GET /v1/auctions/{auction_id}` (CONTRACT §4.3): the auction record — ping summary, every buyer's
//! outcome, the winner, post attempts and their result. Never PII.
//!
//! Served from the owning core's shard, so it covers auctions still held in memory (open, or within
//! their retention after the bid expired). Other tenants' auctions are 404, as unknown ones are.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auction::{rfc3339_ms, Auction, PostState, Status};
use crate::config::{Scope, Tenant};
use crate::error::ApiError;
use crate::http::Reply;
use crate::model::{Money, Ping};
use crate::runtime::handoff::on_core;
use crate::runtime::{Core, Shared};

#[derive(Serialize)]
struct BuyerOut<'a> {
    buyer_id: &'a str,
    outcome: &'static str,
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
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    latency_ms: f64,
}

#[derive(Serialize)]
struct PostOut<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_lead_id: Option<&'a str>,
    attempts: Vec<AttemptOut<'a>>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    auction_id: &'a str,
    tenant: Tenant,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'static str>,
    ping: &'a Ping,
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

/// Renders an auction record.
pub fn render(shared: &Shared, a: &Auction) -> Reply {
    let name = |i: usize| shared.registry.buyers[i].id.as_str();
    let winner = match &a.status {
        Status::Won {
            ranked,
            payout_cents,
            ..
        } => ranked.first().map(|&slot| WinnerOut {
            buyer_id: name(a.outcomes[slot].buyer),
            price: Money(a.outcomes[slot].amount_cents.unwrap_or(0)),
            payout: Money(*payout_cents),
        }),
        _ => None,
    };
    let post_status = match (&a.post, &a.sold) {
        (_, Some(_)) => "sold",
        (PostState::None, _) => "none",
        (PostState::InFlight { .. }, _) => "in_flight",
        (PostState::Unresolved { .. }, _) => "unresolved",
        (PostState::Done { .. }, None) => "unsold",
    };
    let record = RecordOut {
        auction_id: &a.id,
        tenant: a.tenant,
        status: match a.status {
            Status::Open => "open",
            Status::Won { .. } => "won",
            Status::NoBid(_) => "no_bid",
        },
        reject_reason: match a.status {
            Status::NoBid(r) => Some(r.code()),
            _ => None,
        },
        ping: &a.ping,
        currency: &shared.config.auction.currency,
        created_at: rfc3339_ms(a.created_ms),
        deadline_at: rfc3339_ms(a.deadline_ms),
        closed_at: a.closed_ms.map(rfc3339_ms),
        buyers: a
            .outcomes
            .iter()
            .map(|o| BuyerOut {
                buyer_id: name(o.buyer),
                outcome: o.kind.as_str(),
                amount: o.amount_cents.map(Money),
                reject_reason: o.reject_reason.as_deref(),
                reject_detail: o.reject_detail.as_deref(),
                latency_ms: ms(o.latency_us),
            })
            .collect(),
        winner,
        post: PostOut {
            status: post_status,
            buyer_id: a
                .sold
                .as_ref()
                .map(|(slot, _)| name(a.outcomes[*slot].buyer)),
            buyer_lead_id: a.sold.as_ref().map(|(_, id)| id.as_str()),
            attempts: a
                .post_attempts
                .iter()
                .map(|p| AttemptOut {
                    buyer_id: name(p.buyer),
                    attempt: p.attempt,
                    result: p.result,
                    http_status: p.http_status,
                    latency_ms: ms(p.latency_us),
                })
                .collect(),
        },
    };
    Reply::json(StatusCode::OK, &record)
}

pub async fn handle(
    core: &Rc<Core>,
    req: Request<Incoming>,
    auction_id: String,
    rid: &str,
) -> Result<Reply, ApiError> {
    let client = core.shared.auth.check(req.headers(), Scope::Reports)?;
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
    Ok(on_core(core, owner, rid, move |c| async move {
        let shard = c.shard.borrow();
        match shard.get(&auction_id).filter(|a| a.tenant == client.tenant) {
            Some(a) => render(&c.shared, a),
            None => Reply::error(&ApiError::not_found("No auction has this id."), &rid_owned),
        }
    })
    .await)
}
