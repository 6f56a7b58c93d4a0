//! `GET /v1/auctions/{auction_id}` (CONTRACT §4.3): the auction record — ping summary, every buyer's
//! outcome, the winner, post attempts and their result — as the caller's party may see it
//! (`api::views`): the operator the whole record, the auction's seller its own view (no buyer
//! outcome, bid or id, unless its `reveal_winner` setting names the winner), a buyer that took
//! part its own outcome. Each view is its own struct, so a field cannot leak into another by
//! accident. Never PII.
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
use crate::config::Tenant;
use crate::error::ApiError;
use crate::exchange::ExchangeError;
use crate::exchange::{Core, Shared};
use crate::http::Reply;
use crate::model::Money;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::on_core;
use crate::store::{AuctionRecord, OutcomeRecord};
use crate::types::Party;

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
    seller_id: &'a str,
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

/// The winning buyer as a seller whose `reveal_winner` is on sees it: its id, never its price.
#[derive(Serialize)]
struct SellerWinnerOut<'a> {
    buyer_id: &'a str,
}

/// The delivery as its seller sees it: where it stands and the sold lead's id. The buyer's own id
/// for the lead is the buyer's data and can name it, so it shows only where the winner is shown.
#[derive(Serialize)]
struct SellerPostOut<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lead_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_lead_id: Option<&'a str>,
}

/// A seller's view of its own auction: what it offered, what it is paid and how the delivery
/// went. No buyer outcome, bid, price, buyer id (unless `reveal_winner`) or delivery attempt: a
/// field missing here cannot leak, whatever the record holds.
#[derive(Serialize)]
struct SellerRecordOut<'a> {
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
    /// What the seller is paid, for a won auction.
    #[serde(skip_serializing_if = "Option::is_none")]
    payout: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    winner: Option<SellerWinnerOut<'a>>,
    post: SellerPostOut<'a>,
}

/// A buyer's view of an auction it took part in: its own outcome only. No other buyer's id or
/// bid, no seller, no ping (a direct-post buyer was never sent it).
#[derive(Serialize)]
struct BuyerRecordOut<'a> {
    auction_id: &'a str,
    tenant: &'a str,
    buyer_id: &'a str,
    currency: &'a str,
    created_at: String,
    deadline_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_at: Option<String>,
    outcome: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    direct_post: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_detail: Option<&'a str>,
    latency_ms: f64,
    /// Its bid ranked first.
    won: bool,
    /// The lead was delivered to it.
    bought: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    lead_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_lead_id: Option<&'a str>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The answer for an auction outside the caller's view: the same as for an unknown id.
fn missing() -> ApiError {
    ApiError::not_found("No auction has this id.")
}

/// A fixed-price bid is stored under a word of its own and shown as a `bid`.
fn outcome_word(o: &OutcomeRecord) -> &str {
    if o.kind == FIXED_PRICE_BID {
        "bid"
    } else {
        &o.kind
    }
}

/// "delivering" is an internal intent; to a reader the delivery is simply not settled.
fn post_status(r: &AuctionRecord) -> &str {
    match r.post.state.as_str() {
        "delivering" => "in_flight",
        s => s,
    }
}

/// Renders an auction record as `party` may see it (`api::views`): the operator the whole record,
/// its seller the seller's view (naming the winning buyer only when `reveal_winner`, the seller's
/// setting), a buyer that took part its own outcome. Anyone else gets the `404` of an unknown id.
/// The same stored record always renders the same bytes for the same party, before and after a
/// restart.
pub fn render(
    shared: &Shared,
    r: &AuctionRecord,
    party: &Party,
    reveal_winner: bool,
) -> Result<Reply, ApiError> {
    let ping = || -> Result<&serde_json::value::RawValue, ApiError> {
        serde_json::from_slice(&r.ping_json)
            .map_err(|_| ApiError::internal("The auction record could not be read."))
    };
    let slot = |s: u32| r.outcomes.get(s as usize);
    let currency = &shared.config.auction.currency;
    match party {
        Party::Operator => Ok(Reply::json(StatusCode::OK, &full(r, ping()?, currency))),
        Party::Seller(me) if *me == r.seller => {
            let winner = r
                .ranked
                .first()
                .and_then(|&s| slot(s))
                .filter(|_| reveal_winner);
            let sold_to = r.post.sold_slot.and_then(slot);
            let out = SellerRecordOut {
                auction_id: &r.id,
                tenant: &r.tenant,
                status: &r.status,
                reject_reason: r.reject_reason.as_deref(),
                ping: ping()?,
                currency,
                created_at: rfc3339_ms(r.created_ms),
                deadline_at: rfc3339_ms(r.deadline_ms),
                closed_at: r.closed_ms.map(rfc3339_ms),
                payout: r.payout_cents.map(Money),
                winner: winner.map(|o| SellerWinnerOut {
                    buyer_id: &o.buyer_id,
                }),
                post: SellerPostOut {
                    status: post_status(r),
                    lead_uuid: r.post.lead_uuid.as_deref().filter(|_| sold_to.is_some()),
                    buyer_lead_id: r
                        .post
                        .buyer_lead_id
                        .as_deref()
                        .filter(|_| reveal_winner && sold_to.is_some()),
                },
            };
            Ok(Reply::json(StatusCode::OK, &out))
        }
        Party::Buyer(me) => {
            let Some(mine) = r.outcomes.iter().position(|o| o.buyer_id == *me) else {
                return Err(missing());
            };
            let o = &r.outcomes[mine];
            let bought = r.post.sold_slot == Some(mine as u32);
            let out = BuyerRecordOut {
                auction_id: &r.id,
                tenant: &r.tenant,
                buyer_id: &o.buyer_id,
                currency,
                created_at: rfc3339_ms(r.created_ms),
                deadline_at: rfc3339_ms(r.deadline_ms),
                closed_at: r.closed_ms.map(rfc3339_ms),
                outcome: outcome_word(o),
                direct_post: o.kind == FIXED_PRICE_BID,
                amount: o.amount_cents.map(Money),
                reject_reason: o.reject_reason.as_deref(),
                reject_detail: o.reject_detail.as_deref(),
                latency_ms: ms(o.latency_us),
                won: r.ranked.first() == Some(&(mine as u32)),
                bought,
                lead_uuid: r.post.lead_uuid.as_deref().filter(|_| bought),
                buyer_lead_id: r.post.buyer_lead_id.as_deref().filter(|_| bought),
            };
            Ok(Reply::json(StatusCode::OK, &out))
        }
        Party::Seller(_) => Err(missing()),
    }
}

/// The operator's view: the whole record, every buyer's outcome and every delivery attempt.
fn full<'a>(
    r: &'a AuctionRecord,
    ping: &'a serde_json::value::RawValue,
    currency: &'a str,
) -> RecordOut<'a> {
    let slot = |s: u32| r.outcomes.get(s as usize);
    let winner = r.ranked.first().and_then(|&s| slot(s)).map(|o| WinnerOut {
        buyer_id: &o.buyer_id,
        price: Money(o.amount_cents.unwrap_or(0)),
        payout: Money(r.payout_cents.unwrap_or(0)),
    });
    RecordOut {
        auction_id: &r.id,
        tenant: &r.tenant,
        seller_id: &r.seller,
        status: &r.status,
        reject_reason: r.reject_reason.as_deref(),
        ping,
        currency,
        created_at: rfc3339_ms(r.created_ms),
        deadline_at: rfc3339_ms(r.deadline_ms),
        closed_at: r.closed_ms.map(rfc3339_ms),
        buyers: r
            .outcomes
            .iter()
            .map(|o| BuyerOut {
                buyer_id: &o.buyer_id,
                outcome: outcome_word(o),
                direct_post: o.kind == FIXED_PRICE_BID,
                amount: o.amount_cents.map(Money),
                reject_reason: o.reject_reason.as_deref(),
                reject_detail: o.reject_detail.as_deref(),
                latency_ms: ms(o.latency_us),
            })
            .collect(),
        winner,
        post: PostOut {
            status: post_status(r),
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
    }
}

pub async fn handle(
    core: &Rc<Core>,
    req: Request<Incoming>,
    auction_id: String,
    rid: &str,
) -> Result<Reply, ApiError> {
    let viewer = super::views::admit(core, &req)?;
    let seller_id = seller_id(req.uri().query())?;
    if !is_auction_id(&auction_id) {
        return Err(missing());
    }
    let owner = core.shared.owner_of(&auction_id);
    let rid_owned = rid.to_string();
    let (tenant, party) = (viewer.client.tenant, viewer.client.party);
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        let shown =
            lookup(&c, tenant, &party, &auction_id, seller_id.as_deref()).and_then(|record| {
                // The seller's setting, as this core's seller table holds it now.
                let reveal_winner = c
                    .sellers()
                    .get(tenant, &record.seller)
                    .is_some_and(|s| s.config.reveal_winner);
                render(&c.shared, &record, &party, reveal_winner)
            });
        match shown {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

/// Whether `id` could be an auction id at all (what a ping accepts); anything else is 404 at once.
fn is_auction_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Longest `seller_id` query value, in characters. Configured sellers' ids are at most 64; an
/// implicit seller is named by its token's client, which may be longer.
pub const MAX_SELLER_ID_QUERY_CHARS: usize = 256;

/// The optional `seller_id` query parameter: which seller's auction, when several sellers used
/// the id. Any other parameter, a repeated one, or an empty, overlong or control-character value
/// is `422 invalid_query`.
fn seller_id(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut seller = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let plausible = !v.is_empty()
            && v.chars().count() <= MAX_SELLER_ID_QUERY_CHARS
            && !v.chars().any(char::is_control);
        match k.as_ref() {
            "seller_id" if plausible && seller.is_none() => seller = Some(v.into_owned()),
            "seller_id" => {
                return Err(bad_query(format!(
                    "seller_id must be given once, 1 to {MAX_SELLER_ID_QUERY_CHARS} characters without \
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

/// The record the caller may see under the id (see [`crate::exchange::auction::find`]); an
/// auction still open (not yet stored) is read from memory.
fn lookup(
    core: &Rc<Core>,
    tenant: Tenant,
    party: &crate::types::Party,
    auction_id: &str,
    seller_id: Option<&str>,
) -> Result<AuctionRecord, ApiError> {
    let record = crate::exchange::auction::find(core, tenant, party, auction_id, seller_id)
        .map_err(|e| match e {
            ExchangeError::AuctionNotFound { .. } => missing(),
            e => e.into(),
        })?;
    debug_assert_eq!(record.tenant, tenant.as_str());
    Ok(record)
}
