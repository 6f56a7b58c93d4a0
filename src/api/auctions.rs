//! `GET /v1/auctions/{auction_id}` (CONTRACT §4.3): the auction record — ping summary, every buyer's
//! outcome, the winner, post attempts and their result. Never PII.
//!
//! Served on the id's owning core, from the store (or, for an auction still open, the shard).
//! Which record a caller may see is the exchange's ([`crate::exchange::auction::find`]): a seller
//! its own auction under the id (ids are scoped by seller), a buyer one it took part in, the
//! operator any seller's, picked with `?seller_id=` when several sellers used the id (else `409
//! ambiguous_auction_id`). Other tenants' and other parties' auctions are 404, as unknown ones are.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auction::record::FIXED_PRICE_BID;
use crate::auction::rfc3339_ms;
use crate::config::Scope;
use crate::error::ApiError;
use crate::exchange::ExchangeError;
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
    let seller_id = seller_id(req.uri().query())?;
    if !is_auction_id(&auction_id) {
        return Err(missing());
    }
    let owner = core.shared.owner_of(&auction_id);
    let rid_owned = rid.to_string();
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        match lookup(&c, &client, &auction_id, seller_id.as_deref()) {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

fn missing() -> ApiError {
    ApiError::not_found("No auction has this id.")
}

/// Whether `id` could be an auction id at all (what a ping accepts); anything else is 404 at once.
fn is_auction_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Longest `seller_id` query value, in bytes. Configured sellers' ids are at most 64 bytes; an
/// implicit seller is named by its token's client, which may be longer.
pub const MAX_SELLER_ID_QUERY_BYTES: usize = 256;

/// The optional `seller_id` query parameter: which seller's auction, when several sellers used
/// the id. Any other parameter, a repeated one, or an empty, overlong or control-character value
/// is `422 invalid_query`.
fn seller_id(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut seller = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let plausible = !v.is_empty()
            && v.len() <= MAX_SELLER_ID_QUERY_BYTES
            && !v.chars().any(char::is_control);
        match k.as_ref() {
            "seller_id" if plausible && seller.is_none() => seller = Some(v.into_owned()),
            "seller_id" => {
                return Err(bad_query(format!(
                    "seller_id must be given once, 1 to {MAX_SELLER_ID_QUERY_BYTES} bytes without \
                     control characters."
                )))
            }
            other => {
                return Err(bad_query(format!(
                    "Unknown query parameter {other:?}; the only one is seller_id."
                )))
            }
        }
    }
    Ok(seller)
}

fn bad_query(message: String) -> ApiError {
    ApiError::unprocessable("invalid_query", message)
}

/// The record the caller may see under the id (see [`crate::exchange::auction::find`]),
/// rendered; an auction still open (not yet stored) is rendered from memory.
fn lookup(
    core: &Rc<Core>,
    client: &crate::auth::Client,
    auction_id: &str,
    seller_id: Option<&str>,
) -> Result<Reply, ApiError> {
    let record =
        crate::exchange::auction::find(core, client.tenant, &client.party, auction_id, seller_id)
            .map_err(|e| match e {
            ExchangeError::AuctionNotFound { .. } => missing(),
            e => e.into(),
        })?;
    debug_assert_eq!(record.tenant, client.tenant.as_str());
    render(&core.shared, &record)
}
