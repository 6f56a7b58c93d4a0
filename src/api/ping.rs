//! `POST /v1/ping` (CONTRACT §4.1): validate the ping, run the auction on its owning core, answer
//! with the winning bid and a signed bid token, or with a structured no-bid.

use std::rc::Rc;
use std::time::Instant;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::idempotency::{self, Idem};
use crate::auction::rfc3339_ms;
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::auction::{self, Answering, Closed, WinningBid};
use crate::exchange::Core;
use crate::http::Reply;
use crate::model::{Money, Ping};
use crate::runtime::admission::{self, Admit};
use crate::runtime::handoff::on_core;
use crate::store::Batch;

/// The winning bid in a ping's answer (CONTRACT §4.1).
#[derive(Serialize)]
pub struct BidOut {
    pub amount: Money,
    pub currency: String,
    pub bid_token: String,
    pub valid_until: String,
}

impl BidOut {
    /// The answer's bid for a winning bid, in `currency`.
    pub fn of(bid: &WinningBid, currency: &str) -> BidOut {
        BidOut {
            amount: Money(bid.payout_cents),
            currency: currency.to_string(),
            bid_token: bid.bid_token.clone(),
            valid_until: rfc3339_ms(bid.valid_until_ms),
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
    // Only a seller sends leads: anyone else is refused before any of the body is read.
    let client = super::views::admit(core, &req)?.client;
    let req_started = req.extensions().get::<super::views::Received>().copied();
    crate::exchange::sellers::refuse_suspended(core, &client)?;
    let key = idempotency::key_from(req.headers())?;
    let mut body = super::json_body(req).await?;
    // Shed before parsing when this core already runs too late to start an auction in time.
    admission::precheck(core, Admit::New)?;
    let fingerprint = idempotency::fingerprint(&body);
    let ping = super::validate::parse_ping(&mut body, core.shared.clock.now_ms())?;
    let owner = deciding_core(core, ping.auction_id.as_deref(), key.as_deref());
    let idem = key.map(|k| Idem::new(&client, "POST", "/v1/ping", k, fingerprint));
    let rid_owned = rid.to_string();
    // The seller's own latency series is recorded here, on the core that received the ping, from
    // the instant `api::handle` received it, and for 200s only: the same measure on the same core
    // as the exchange-wide `ping_duration` that `api::handle` records (which ends a few
    // instructions later, once the reply is back there).
    let started = req_started.map_or(received, |r| r.0);
    let seller = (client.tenant, client.seller().map(str::to_owned));
    let reply = on_core(core, owner, rid, Admit::New, move |c| async move {
        match run(&c, ping, client, idem, received).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await;
    if let (tenant, Some(seller)) = &seller {
        if reply.status == http::StatusCode::OK {
            let us = started.elapsed().as_micros() as u64;
            core.metrics.record_seller_ping(*tenant, seller, us);
        }
    }
    Ok(reply)
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
    received: Instant,
) -> Result<Reply, ApiError> {
    let Some(i) = idem.clone() else {
        return execute(core, ping, client, None, received).await;
    };
    let target = ping
        .auction_id
        .as_deref()
        .map_or(core.id, |id| core.shared.owner_of(id));
    idempotency::run_keyed(core, &i, target, Admit::New, move |c| async move {
        execute(&c, ping, client, idem, received).await
    })
    .await
}

/// Runs one ping on its auction's owner (the idempotency key, if any, is already held): one call
/// of the exchange's use-case, which answers in this module's wire form and records the answer
/// under the key.
async fn execute(
    core: &Rc<Core>,
    ping: Ping,
    client: Client,
    idem: Option<Idem>,
    received: Instant,
) -> Result<Reply, ApiError> {
    let currency = &core.shared.config.auction.currency;
    let record = |batch: &mut Batch, reply: &Reply, now: u64| match &idem {
        Some(i) => idempotency::put_answer(batch, i, reply, now),
        None => Ok(()),
    };
    let answering = Answering {
        answer: &|closed| answer(closed, currency),
        record: &record,
    };
    Ok(auction::ping(core, ping, &client, received, &answering).await?)
}

/// The seller's answer to a closed auction (CONTRACT §4.1).
pub(super) fn answer(closed: &Closed, currency: &str) -> Reply {
    let (bid, reject) = match &closed.result {
        Ok(w) => (Some(BidOut::of(w, currency)), None),
        Err(reason) => (None, Some(*reason)),
    };
    let out = PingOut {
        auction_id: &closed.auction_id,
        status: if bid.is_some() { "won" } else { "no_bid" },
        reject_reason: reject.map(|r| r.as_str()),
        reject_detail: reject.map(|r| r.detail()),
        bid,
        buyers_pinged: closed.buyers_pinged,
        bids_received: closed.bids_received,
        auction_ms: closed.auction_ms,
    };
    Reply::json(StatusCode::OK, &out)
}
