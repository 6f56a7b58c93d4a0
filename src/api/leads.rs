//! `POST /v1/leads` (CONTRACT §4.4): the one-call flow for sellers that hold the whole lead up
//! front. The body is a ping's fields plus the full lead under `lead`; Gavel auctions the ping part
//! (buyers never see the contact data), delivers the lead to the winner exactly as a post would, and
//! answers with the post's result, or with the ping's no-bid when nobody bid.
//!
//! This module checks everything before any buyer hears of the lead: the fields of both halves
//! (all errors at once), PII outside `lead`, the lead against its own ping (`lead_mismatch`) and
//! the configured lead rules. It then hands the call to its deciding core, where
//! [`crate::exchange::lead`] runs the auction and the delivery (and the retry rules of a keyed
//! call). The finished answer is stored under the call's `Idempotency-Key`, and under the post's
//! default key `post_<auction_id>` as a post's would be.

use std::rc::Rc;
use std::time::Instant;

use http::Request;
use hyper::body::Incoming;

use super::idempotency::{self, Idem};
use super::{ping, post};
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::auction::{self, Answering};
use crate::exchange::post::Keyed;
use crate::exchange::Core;
use crate::exchange::{self, lead};
use crate::http::Reply;
use crate::model::{Ping, Post};
use crate::runtime::admission::{self, Admit};
use crate::runtime::handoff::on_core;
use crate::store::Batch;

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    let received = Instant::now();
    // Only a seller sends leads: anyone else is refused before any of the body is read.
    let client = super::views::admit(core, &req)?.client;
    crate::exchange::sellers::refuse_suspended(core, &client)?;
    let key = idempotency::key_from(req.headers())?;
    let mut body = super::json_body(req).await?;
    // Shed before parsing when this core already runs too late to start an auction in time.
    admission::precheck(core, Admit::New)?;
    let fingerprint = idempotency::fingerprint(&body);
    let (ping, lead, lead_uuid_supplied) =
        super::validate::parse_lead_call(&mut body, core.shared.clock.now_ms())?;
    let mismatches = lead.mismatches(&ping.state, &ping.zip3);
    if !mismatches.is_empty() {
        return Err(exchange::ExchangeError::LeadMismatch(mismatches).into());
    }
    let post = Post {
        auction_id: String::new(),
        bid_token: String::new(),
        lead,
        lead_uuid_supplied,
    };
    exchange::post::check_rules(&core.rules(), &ping.vertical, &ping.source, &post)?;
    let owner = ping::deciding_core(core, ping.auction_id.as_deref(), key.as_deref());
    let idem = key.map(|k| Idem::new(&client, "POST", "/v1/leads", k, fingerprint));
    let rid_owned = rid.to_string();
    let call = Call {
        ping,
        post,
        client,
        idem,
        fingerprint,
        received,
    };
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        match run(&c, call, &rid_owned).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

/// A validated one-call lead on its way to the owning core.
pub(super) struct Call {
    pub ping: Ping,
    pub post: Post,
    pub client: Client,
    pub idem: Option<Idem>,
    pub fingerprint: [u8; 32],
    pub received: Instant,
}

/// Runs a validated one-call lead on its deciding core: the idempotency check there, then the
/// auction and the delivery on the auction id's owner.
pub(super) async fn run(core: &Rc<Core>, call: Call, rid: &str) -> Result<Reply, ApiError> {
    let Some(i) = call.idem.clone() else {
        return execute(core, call, rid).await;
    };
    let target = call
        .ping
        .auction_id
        .as_deref()
        .map_or(core.id, |id| core.shared.owner_of(id));
    let rid = rid.to_string();
    idempotency::run_keyed(core, &i, target, Admit::New, move |c| async move {
        execute(&c, call, &rid).await
    })
    .await
}

/// Runs a one-call lead on its auction's owner (the idempotency key, if any, is already held):
/// the exchange auctions and delivers; a no-bid answer is recorded here with the auction.
async fn execute(core: &Rc<Core>, call: Call, rid: &str) -> Result<Reply, ApiError> {
    let Call {
        ping,
        post,
        client,
        idem,
        fingerprint,
        received,
    } = call;
    let auction_id = match (&ping.auction_id, &idem) {
        (Some(id), _) => id.clone(),
        (None, Some(i)) => lead::derived_auction_id(core, &i.scope.encode_key()),
        (None, None) => crate::auction::id::mint(core.id, core.shared.cores),
    };
    // The finished answer is stored under the call's key, and under the post's default key as a
    // post's would be.
    let post_idem = Idem::new(
        &client,
        "POST",
        "/v1/post",
        format!("post_{auction_id}"),
        fingerprint,
    );
    let record = |batch: &mut Batch, reply: &Reply, now: u64| {
        idempotency::put_answer(batch, &post_idem, reply, now)?;
        match &idem {
            Some(also) => idempotency::put_answer(batch, also, reply, now),
            None => Ok(()),
        }
    };
    let keyed = Keyed {
        key: &post_idem.scope.key,
        fingerprint,
        record: &record,
    };
    let outcome = lead::run(
        core,
        auction_id.clone(),
        ping,
        post,
        &client,
        &keyed,
        received,
    )
    .await?;
    match outcome {
        lead::Outcome::Delivered(delivered) => Ok(post::answer(delivered, rid)),
        lead::Outcome::NoBid(closed) => {
            // Nobody to deliver to: the no-bid answer, durable with the auction record and under
            // the call's key (not the post's: nothing was posted).
            let seller = auction::seller_of(&client)?;
            let currency = &core.shared.config.auction.currency;
            let record = |batch: &mut Batch, reply: &Reply, now: u64| match &idem {
                Some(i) => idempotency::put_answer(batch, i, reply, now),
                None => Ok(()),
            };
            let answering = Answering {
                answer: &|closed| ping::answer(closed, currency),
                record: &record,
            };
            let tenant = client.tenant;
            Ok(auction::answer_durably(core, tenant, seller, &closed, &answering).await?)
        }
    }
}
