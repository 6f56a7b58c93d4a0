//! `POST /v1/leads` (CONTRACT §4.4): the one-call flow for sellers that hold the whole lead up
//! front. The body is a ping's fields plus the full lead under `lead`; Gavel auctions the ping part
//! (buyers never see the contact data), delivers the lead to the winner exactly as a post would, and
//! answers with the post's result, or with the ping's no-bid when nobody bid.
//!
//! Everything is checked before any buyer hears of the lead: the fields of both halves (all errors
//! at once), PII outside `lead`, the lead against its own ping (`lead_mismatch`) and the configured
//! lead rules. The auction and the delivery are the ping and post code paths, so the durability and
//! resume rules of a post hold unchanged; one fsync fewer than ping + post, because the auction
//! record first reaches the disk with the intent to deliver.
//!
//! Retrying: with an `Idempotency-Key` (and no `auction_id`), the auction id is derived from the
//! scoped key, so a retry after a crash finds the auction whose delivery had started and resumes
//! it with the same buyer instead of auctioning the same lead twice (a seller-chosen `auction_id`
//! does the same). A crash before the delivery started left nothing on disk, and the retry simply
//! runs the auction. The finished answer is stored under the key, and under the post's default
//! key `post_<auction_id>` as a post's would be.

use std::rc::Rc;
use std::time::Instant;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use ring::digest;

use super::idempotency::{self, Idem};
use super::{ping, post};
use crate::auction::token::Claims;
use crate::auction::Status;
use crate::auth::Client;
use crate::config::{Scope, Tenant};
use crate::error::ApiError;
use crate::exchange::post::Keyed;
use crate::exchange::{self, auction};
use crate::http::Reply;
use crate::model::{Ping, Post};
use crate::runtime::admission::{self, Admit};
use crate::runtime::handoff::on_core;
use crate::runtime::Core;
use crate::store::Batch;

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    let received = Instant::now();
    let client = core.authenticate(req.headers(), Scope::Ping)?;
    core.authenticate(req.headers(), Scope::Post)?;
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
    exchange::post::check_rules(&core.shared.config, &ping.vertical, &ping.source, &post)?;
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

/// The auction id a keyed one-call lead uses: a ULID-shaped id from the SHA-256 of the scoped
/// key, owned by `core` (the core the key routes to). Deterministic while the core count stays
/// the same, which is what lets a retry after a crash find its auction.
pub fn derived_auction_id(core: &Core, idem: &Idem) -> String {
    let scope = idem.scope.encode_key();
    let mut n: u32 = 0;
    loop {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"gavel one-call auction id\0");
        ctx.update(&scope);
        ctx.update(&n.to_le_bytes());
        let d = ctx.finish();
        let bytes: [u8; 16] = d.as_ref()[..16].try_into().expect("SHA-256 is 32 bytes");
        let id = format!("auc_{}", ulid::Ulid::from_bytes(bytes));
        if core.shared.owner_of(&id) == core.id {
            return id;
        }
        n += 1;
    }
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
/// auction, then delivery.
async fn execute(core: &Rc<Core>, call: Call, rid: &str) -> Result<Reply, ApiError> {
    let Call {
        ping,
        mut post,
        client,
        idem,
        fingerprint,
        received,
    } = call;
    let auction_id = match (&ping.auction_id, &idem) {
        (Some(id), _) => id.clone(),
        (None, Some(i)) => derived_auction_id(core, i),
        (None, None) => core.mint_auction_id(),
    };
    post.auction_id = auction_id.clone();

    // The auction record first reaches the disk with the intent to deliver, which also records
    // this body's fingerprint. An auction under this id carrying it is this very call, cut off
    // after its delivery started: go on with that delivery. Any other is someone else's auction.
    let existing = auction::ensure_loaded(core, client.tenant, &auction_id)?;
    if existing {
        let ours = core
            .shard
            .borrow()
            .get(client.tenant, &auction_id)
            .is_some_and(|a| a.post_fingerprint == Some(fingerprint));
        if !ours {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "auction_exists",
                format!("An auction with id {auction_id} already exists."),
            ));
        }
    } else {
        let closed = auction::run(core, auction_id.clone(), ping, &client).await?;
        auction::record_engine_overhead(core, client.tenant, &auction_id, received);
        if closed.result.is_err() {
            // Nobody to deliver to: the no-bid answer, durable with the auction record.
            let answer = ping::answer(&closed, &core.shared.config.auction.currency);
            let mut batch = Batch::new();
            if let Some(i) = &idem {
                idempotency::record(&mut batch, i, &answer, core.shared.clock.now_ms())?;
            }
            auction::record_closed(core, client.tenant, &auction_id, batch).await?;
            return Ok(answer);
        }
    }
    let Some(claims) = claims_of(core, client.tenant, &auction_id) else {
        // Unreachable: a fingerprint is only recorded on a won auction's delivery.
        return Err(ApiError::internal(
            "The auction has no winning bid to deliver.",
        ));
    };
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
    // The post's own latency series counts from here, not from the start of the auction.
    let delivered =
        exchange::post::deliver(core, post, &client, &keyed, Instant::now(), claims).await?;
    Ok(post::answer(delivered, rid))
}

/// What a bid token for the auction's winning bid would carry; `None` without a winner.
fn claims_of(core: &Core, tenant: Tenant, auction_id: &str) -> Option<Claims> {
    let shard = core.shard.borrow();
    let a = shard.get(tenant, auction_id)?;
    match &a.status {
        Status::Won {
            payout_cents,
            token_valid_until_ms,
            ..
        } => Some(Claims {
            auction_id: a.id.clone(),
            tenant: a.tenant,
            amount_cents: *payout_cents,
            valid_until_ms: *token_valid_until_ms,
        }),
        _ => None,
    }
}
