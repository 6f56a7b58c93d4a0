//! `POST /v1/post` (CONTRACT §4.2): read the post, hand it to its idempotency key's core and the
//! auction's owner, and answer with what the exchange decided ([`crate::exchange::post`]: token,
//! auction and lead checks, delivery with fallback, crash-safe resume).
//!
//! A repeated post gets: the replay of the final answer (same key and body), 422
//! `idempotency_key_reused` (same key, other body), 409 `idempotency_in_flight` (same key, still
//! running), 409 `auction_already_posted` (another key once the auction is posted).

use std::rc::Rc;
use std::time::Instant;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::idempotency::{self, Idem};
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::post::{self, Delivered, Keyed};
use crate::exchange::Core;
use crate::http::Reply;
use crate::model::Post;
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
    // A post finishes a sale already made: shed only far past the delay new work gets.
    admission::precheck(core, Admit::Finish)?;
    let fingerprint = idempotency::fingerprint(&body);
    let post = super::validate::parse_post(&mut body, core.shared.clock.now_ms())?;
    let key = key.unwrap_or_else(|| format!("post_{}", post.auction_id));
    let idem = Idem::new(&client, "POST", "/v1/post", key, fingerprint);
    let decider = idempotency::key_core(&core.shared, &idem.scope.key);
    let rid_owned = rid.to_string();
    Ok(
        on_core(core, decider, rid, Admit::Finish, move |c| async move {
            run(&c, post, client, idem, &rid_owned, received).await
        })
        .await,
    )
}

/// Runs a post on its key's core (see [`idempotency::key_core`]; the auction's owner for the
/// default key), delivering on the auction's owning core, and always answers; a final answer is
/// recorded under the idempotency key before it leaves.
async fn run(
    core: &Rc<Core>,
    post: Post,
    client: Client,
    idem: Idem,
    rid: &str,
    received: Instant,
) -> Reply {
    let target = core.shared.owner_of(&post.auction_id);
    let rid_owned = rid.to_string();
    let idem_owned = idem.clone();
    // Only a post that started delivering leaves a record: a refusal before that (bad token,
    // expired bid, lead mismatch) is not kept, so the seller can correct the request and send it
    // again under the same (default) key.
    let outcome = idempotency::run_keyed(core, &idem, target, Admit::Finish, move |c| async move {
        deliver_post(&c, post, &client, &idem_owned, &rid_owned, received).await
    })
    .await;
    match outcome {
        Ok(reply) => reply,
        Err(e) => Reply::error(&e, rid),
    }
}

async fn deliver_post(
    core: &Rc<Core>,
    post: Post,
    client: &Client,
    idem: &Idem,
    rid: &str,
    received: Instant,
) -> Result<Reply, ApiError> {
    let record = |batch: &mut Batch, reply: &Reply, now: u64| {
        idempotency::put_answer(batch, idem, reply, now)
    };
    let keyed = Keyed {
        key: &idem.scope.key,
        fingerprint: idem.fingerprint,
        record: &record,
    };
    let delivered = post::deliver_with_token(core, post, client, &keyed, received).await?;
    Ok(answer(delivered, rid))
}

/// The seller's answer to a delivery: its final answer as recorded, or 502 when the buyer may
/// hold the lead and only a retry with the same key may resume.
pub(super) fn answer(delivered: Delivered, rid: &str) -> Reply {
    match delivered {
        Delivered::Answer(reply) => reply,
        Delivered::Unresolved => Reply::error(
            &ApiError::new(
                StatusCode::BAD_GATEWAY,
                "buyer_unavailable",
                "The buyer did not confirm the delivery in time. Retry this post with the \
                 same Idempotency-Key: Gavel resumes with the same buyer and never sells \
                 the lead twice.",
            ),
            rid,
        ),
    }
}
