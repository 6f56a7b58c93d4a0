//! `POST /v1/post` (CONTRACT §4.2): check the bid token and the lead against the auction, deliver the
//! lead to the winner (or the next bidder), answer with the buyer's lead id.
//!
//! Crash safety: before any buyer is called, the intent to deliver (idempotency key, buyer slot,
//! body fingerprint) is durable in the auction record; the final answer is durable, together with
//! the lead record and the idempotency record, before the seller sees it. After a crash a retry
//! with the same key finds the recorded intent and resumes with the same buyer under the same
//! `Idempotency-Key`, so a lead is never sold twice and an acknowledged sale is never lost.
//!
//! A repeated post gets: the replay of the final answer (same key and body), 422
//! `idempotency_key_reused` (same key, other body), 409 `idempotency_in_flight` (same key, still
//! running), 409 `auction_already_posted` (another key once the auction is posted).

use std::rc::Rc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::events;
use super::idempotency::{self, Idem};
use super::ping::store_error;
use crate::auction::clearing::seller_payout;
use crate::auction::deliver::{self, Budget, Candidate, Delivery};
use crate::auction::record::{from_record, to_record};
use crate::auction::shard::InsertError;
use crate::auction::token::Claims;
use crate::auction::{now_ms, PostState, Status, NO_BUYER};
use crate::auth::Client;
use crate::config::{Scope, Tenant};
use crate::error::{ApiError, FieldError};
use crate::http::Reply;
use crate::model::{Money, Post};
use crate::runtime::admission::{self, Admit};
use crate::runtime::handoff::on_core;
use crate::runtime::Core;
use crate::store::{Batch, LeadEvent, LeadRecord};

#[derive(Serialize)]
struct SoldOut<'a> {
    auction_id: &'a str,
    lead_uuid: &'a str,
    status: &'static str,
    buyer_lead_id: &'a str,
    amount: Money,
    currency: &'a str,
}

#[derive(Serialize)]
struct UnsoldOut<'a> {
    auction_id: &'a str,
    lead_uuid: &'a str,
    status: &'static str,
    reject_reason: &'static str,
    reject_detail: &'static str,
}

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    let received = std::time::Instant::now();
    let client = core.authenticate(req.headers(), Scope::Post)?;
    let key = idempotency::key_from(req.headers())?;
    let mut body = super::json_body(req).await?;
    // A post finishes a sale already made: shed only far past the delay new work gets.
    admission::precheck(core, Admit::Finish)?;
    let fingerprint = idempotency::fingerprint(&body);
    let post = super::validate::parse_post(&mut body, now_ms())?;
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

fn invalid_token(msg: &str) -> ApiError {
    ApiError::unprocessable("invalid_bid_token", msg)
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Auction {id} is unknown here or its post window has passed."
    ))
}

fn already_posted(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "auction_already_posted",
        format!("Auction {id} was already posted with another idempotency key."),
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
    received: std::time::Instant,
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

/// Loads the auction into the shard from the store when memory no longer holds it (after a
/// restart, or after the shard evicted it). Returns false when no record exists.
pub(super) fn ensure_loaded(
    core: &Rc<Core>,
    tenant: Tenant,
    auction_id: &str,
) -> Result<bool, ApiError> {
    if core.shard.borrow().get(tenant, auction_id).is_some() {
        return Ok(true);
    }
    let record = super::auctions::stored(core, tenant, auction_id)?;
    let Some(record) = record else {
        return Ok(false);
    };
    let now = now_ms();
    let evict_at = record.token_valid_until_ms.unwrap_or(now).max(now)
        + core.shared.config.auction.retention_ms;
    let auction = from_record(record, &core.shared.registry, evict_at).map_err(|e| {
        tracing::error!(error = %e, auction_id, "auction record invalid");
        ApiError::internal("The auction record could not be read.")
    })?;
    let mut shard = core.shard.borrow_mut();
    let inserted = shard.insert(auction, now);
    core.stats()
        .auctions_in_memory
        .store(shard.len() as u64, std::sync::atomic::Ordering::Relaxed);
    match inserted {
        Ok(()) | Err(InsertError::Exists) => Ok(true),
        Err(InsertError::Full { retry_after_ms }) => {
            Err(super::ping::shard_full(tenant, retry_after_ms))
        }
    }
}

/// What the shard lets this post do, decided without awaiting.
struct Plan {
    candidates: Vec<Candidate>,
    payouts: Vec<(usize, u64)>,
    vertical: String,
    source: String,
    /// Lead id to deliver under: the one a resumed delivery already used, else the post's.
    lead_uuid: String,
    /// State to restore if the delivery cannot even start.
    previous: PostState,
}

fn plan(
    core: &Rc<Core>,
    post: &Post,
    client: &Client,
    idem: &Idem,
    claims: &Claims,
) -> Result<Result<Plan, Reply>, ApiError> {
    let shared = &core.shared;
    let key = &idem.scope.key;
    let mut shard = core.shard.borrow_mut();
    let a = shard
        .get_mut(client.tenant, &post.auction_id)
        .ok_or_else(|| not_found(&post.auction_id))?;
    let resume_slot = match &a.post {
        PostState::Done { key: k, reply } if k == key => {
            if a.post_fingerprint.is_some_and(|f| f != idem.fingerprint) {
                return Err(reused());
            }
            return Ok(Err(reply.clone().header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            )));
        }
        PostState::InFlight { key: k, .. } if k == key => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_flight",
                "A post with this idempotency key is still being delivered; retry shortly.",
            ))
        }
        PostState::Unresolved { key: k, slot } if k == key => {
            if a.post_fingerprint.is_some_and(|f| f != idem.fingerprint) {
                return Err(reused());
            }
            Some(*slot)
        }
        PostState::None => None,
        _ => return Err(already_posted(&a.id)),
    };
    let Status::Won {
        ranked,
        payout_cents,
        ..
    } = &a.status
    else {
        return Err(invalid_token("The auction has no winning bid."));
    };
    // A resumed delivery must go back to its buyer whatever the clocks say: that buyer may hold
    // the lead. Expiry only guards the start of a delivery.
    if resume_slot.is_none() {
        if claims.amount_cents != *payout_cents {
            return Err(invalid_token(
                "The bid token does not match the auction's bid.",
            ));
        }
        if claims.valid_until_ms < now_ms() {
            return Err(ApiError::unprocessable(
                "bid_expired",
                "The bid token expired; ping again for a fresh bid.",
            ));
        }
    }
    super::validate::check_lead_matches(&a.ping.state, &a.ping.zip3, &post.lead)?;
    // A resumed delivery starts again with the buyer that may hold the lead; only if that buyer
    // now certainly refuses does it move on down the ranking.
    let start = resume_slot
        .and_then(|s| ranked.iter().position(|r| *r == s))
        .unwrap_or(0);
    let margin_fixed = shared.config.auction.margin_fixed;
    let mut candidates = Vec::new();
    let mut payouts = Vec::new();
    for &s in &ranked[start..] {
        let o = &a.outcomes[s];
        if o.buyer == NO_BUYER {
            continue; // No longer configured: nobody to deliver to.
        }
        candidates.push(Candidate {
            slot: s,
            buyer: o.buyer,
            buyer_bid_token: o.buyer_bid_token.clone().unwrap_or_default(),
            valid_until_ms: if Some(s) == resume_slot {
                u64::MAX
            } else {
                o.valid_until_ms.unwrap_or(0)
            },
        });
        payouts.push((
            s,
            if s == ranked[0] {
                *payout_cents
            } else {
                seller_payout(
                    o.amount_cents.unwrap_or(0),
                    shared.config.auction.margin_percent,
                    margin_fixed,
                )
            },
        ));
    }
    Ok(Ok(Plan {
        candidates,
        payouts,
        vertical: a.ping.vertical.clone(),
        source: a.ping.source.clone(),
        lead_uuid: a
            .lead_uuid
            .clone()
            .filter(|_| resume_slot.is_some())
            .unwrap_or_else(|| post.lead.lead_uuid.clone()),
        previous: a.post.clone(),
    }))
}

fn reused() -> ApiError {
    ApiError::unprocessable(
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request body.",
    )
}

/// Sets the auction's post state and returns its record, ready to commit.
fn update(
    core: &Rc<Core>,
    tenant: Tenant,
    auction_id: &str,
    f: impl FnOnce(&mut crate::auction::Auction),
) -> Option<crate::store::AuctionRecord> {
    let mut shard = core.shard.borrow_mut();
    let a = shard.get_mut(tenant, auction_id)?;
    f(a);
    Some(to_record(a))
}

async fn deliver_post(
    core: &Rc<Core>,
    post: Post,
    client: &Client,
    idem: &Idem,
    rid: &str,
    received: std::time::Instant,
) -> Result<Reply, ApiError> {
    let shared = &core.shared;
    let claims = shared
        .keys
        .verify(&post.bid_token)
        .map_err(|_| invalid_token("The bid token is not one Gavel issued, or it was altered."))?;
    if claims.tenant != client.tenant {
        // Another tenant's auction is invisible, even to a caller holding its genuine token.
        return Err(not_found(&post.auction_id));
    }
    if claims.auction_id != post.auction_id {
        return Err(invalid_token("The bid token belongs to another auction."));
    }
    if !ensure_loaded(core, client.tenant, &post.auction_id)? {
        return Err(not_found(&post.auction_id));
    }
    deliver_with_claims(core, post, client, idem, None, rid, received, claims).await
}

/// Delivers `post` to the auction's bidders once its claims are established (from a verified bid
/// token, or from the auction itself in a one-call lead). The auction must be in the shard.
/// `also` is a second idempotency identity (a one-call lead's own key) recorded with the final
/// answer in the same commit.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deliver_with_claims(
    core: &Rc<Core>,
    mut post: Post,
    client: &Client,
    idem: &Idem,
    also: Option<&Idem>,
    rid: &str,
    received: std::time::Instant,
    claims: Claims,
) -> Result<Reply, ApiError> {
    let shared = &core.shared;
    let plan = match plan(core, &post, client, idem, &claims)? {
        Ok(p) => p,
        // A final answer already held by the auction record: nothing changes, nothing to record.
        Err(replay) => {
            core.metrics.record_replay();
            return Ok(replay);
        }
    };
    check_rules(shared, &plan.vertical, &plan.source, &post)?;
    post.lead.lead_uuid = plan.lead_uuid.clone();

    let key = idem.scope.key.clone();
    let fingerprint = idem.fingerprint;
    let lead_uuid = plan.lead_uuid.clone();
    update(core, client.tenant, &post.auction_id, |a| {
        a.post = PostState::InFlight {
            key: key.clone(),
            slot: None,
        };
        a.post_fingerprint = Some(fingerprint);
        a.lead_uuid = Some(lead_uuid.clone());
    });
    let pc = &shared.config.post;
    let budget = Budget {
        total: Duration::from_millis(pc.budget_ms),
        max_attempts_per_buyer: pc.max_attempts_per_buyer,
        backoff_initial: Duration::from_millis(pc.backoff_initial_ms),
        max_buyers: if pc.fallback {
            pc.max_fallbacks.max(1)
        } else {
            1
        },
    };
    let mut attempts = Vec::new();
    let auction_id = post.auction_id.clone();
    // The intent to deliver to a buyer is durable before that buyer is called.
    let mut before_buyer = async |slot: usize| {
        let Some(record) = update(core, client.tenant, &auction_id, |a| {
            a.post = PostState::InFlight {
                key: key.clone(),
                slot: Some(slot),
            };
        }) else {
            return false;
        };
        let mut batch = Batch::new();
        // A one-call lead's auction reaches the disk here first: its close is announced with it.
        let Ok(emitted) = events::put_auction(core, &mut batch, &record, now_ms()) else {
            return false;
        };
        match core.commit(batch).await {
            Ok(()) => {
                events::committed(core, emitted);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the intent to deliver");
                false
            }
        }
    };
    let outcome = deliver::deliver(
        &shared.registry,
        &core.pool,
        deliver::Job {
            auction_id: &post.auction_id,
            lead: &post.lead,
            candidates: &plan.candidates,
        },
        budget,
        &mut attempts,
        &mut before_buyer,
    )
    .await;

    let currency = &shared.config.auction.currency;
    let now = now_ms();
    let mut batch = Batch::new();
    let (state, sold, reply) = match outcome {
        Delivery::Sold {
            slot,
            buyer_lead_id,
        } => {
            // Post received → the buyer's 2xx: the latency the post SLO is about.
            core.metrics
                .record_post(received.elapsed().as_micros() as u64);
            let amount = plan
                .payouts
                .iter()
                .find(|(s, _)| *s == slot)
                .map_or(0, |(_, p)| *p);
            let reply = Reply::json(
                StatusCode::CREATED,
                &SoldOut {
                    auction_id: &post.auction_id,
                    lead_uuid: &plan.lead_uuid,
                    status: "sold",
                    buyer_lead_id: &buyer_lead_id,
                    amount: Money(amount),
                    currency,
                },
            );
            let buyer_id = core
                .shard
                .borrow()
                .get(client.tenant, &post.auction_id)
                .map(|a| a.outcomes[slot].buyer_id.clone())
                .unwrap_or_default();
            batch
                .put_lead(&LeadRecord {
                    lead_uuid: plan.lead_uuid.clone(),
                    auction_id: post.auction_id.clone(),
                    tenant: client.tenant.as_str().to_string(),
                    buyer_id,
                    buyer_lead_id: buyer_lead_id.clone(),
                    created_ms: now,
                    history: vec![LeadEvent {
                        at_ms: now,
                        status: "sold".into(),
                        reason: None,
                    }],
                })
                .map_err(store_error)?;
            (
                PostState::Done {
                    key: key.clone(),
                    reply: reply.clone(),
                },
                Some((slot, buyer_lead_id)),
                reply,
            )
        }
        Delivery::Unsold { reason } => {
            let reply = Reply::json(
                StatusCode::OK,
                &UnsoldOut {
                    auction_id: &post.auction_id,
                    lead_uuid: &plan.lead_uuid,
                    status: "unsold",
                    reject_reason: reason,
                    reject_detail: if reason == "buyer_rejected" {
                        "Every bidder refused the lead."
                    } else {
                        "No bidder could be reached within the post budget."
                    },
                },
            );
            (
                PostState::Done {
                    key: key.clone(),
                    reply: reply.clone(),
                },
                None,
                reply,
            )
        }
        Delivery::Unresolved { slot } => (
            PostState::Unresolved {
                key: key.clone(),
                slot,
            },
            None,
            Reply::error(
                &ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "buyer_unavailable",
                    "The buyer did not confirm the delivery in time. Retry this post with the \
                     same Idempotency-Key: Gavel resumes with the same buyer and never sells \
                     the lead twice.",
                ),
                rid,
            ),
        ),
        Delivery::Aborted => {
            // Nobody was called for the failed step; what was recorded before still holds.
            update(core, client.tenant, &post.auction_id, |a| {
                a.post = plan.previous.clone();
                a.post_attempts.extend(attempts);
            });
            return Err(ApiError::internal(
                "The delivery could not be recorded, so no buyer was called for it. Retry the post.",
            ));
        }
    };
    let final_state = matches!(state, PostState::Done { .. });
    let record = update(core, client.tenant, &post.auction_id, |a| {
        a.post = state;
        a.post_attempts.extend(attempts);
        if sold.is_some() {
            a.sold = sold;
        }
    });
    let mut emitted = events::Emitted::default();
    if let Some(r) = &record {
        emitted = events::put_auction(core, &mut batch, r, now)?;
    }
    if final_state {
        idempotency::record(&mut batch, idem, &reply, now)?;
        if let Some(also) = also {
            idempotency::record(&mut batch, also, &reply, now)?;
        }
        // The auction's seller hears of it, whichever of its clients posted.
        let seller = record.as_ref().map_or(client.name.as_str(), |r| &r.client);
        emitted = emitted.and(events::lead_posted(
            core,
            &mut batch,
            client.tenant,
            seller,
            &reply.body,
            now,
        )?);
    }
    if let Err(e) = core.commit(batch).await {
        // The outcome is not on disk. Memory keeps it, but to stay safe across a crash the
        // auction goes back to "unresolved at the last buyer": a retry asks that buyer again,
        // and the buyer's own idempotency answers it.
        let last = plan.candidates.first().map(|c| c.slot);
        update(core, client.tenant, &post.auction_id, |a| {
            if let (PostState::Done { .. }, Some(slot)) =
                (&a.post, a.sold.as_ref().map(|s| s.0).or(last))
            {
                a.post = PostState::Unresolved {
                    key: key.clone(),
                    slot,
                };
            }
        });
        return Err(store_error(e));
    }
    // The answer and everything it reports are durable.
    events::committed(core, emitted);
    Ok(reply)
}

/// Applies the configured lead rules, e.g. "trustedform_cert_url required when source is facebook_ads".
pub(super) fn check_rules(
    shared: &crate::runtime::Shared,
    vertical: &str,
    source: &str,
    post: &Post,
) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    for r in &shared.config.rules {
        if r.vertical.as_deref().is_some_and(|v| v != vertical)
            || r.source.as_deref().is_some_and(|s| s != source)
        {
            continue;
        }
        for path in &r.require {
            if super::validate::lead_has_path(&post.lead, path) == Some(false) {
                let when = match (&r.vertical, &r.source) {
                    (Some(v), Some(s)) => {
                        format!("required when vertical is {v} and source is {s}")
                    }
                    (Some(v), None) => format!("required when vertical is {v}"),
                    (None, Some(s)) => format!("required when source is {s}"),
                    (None, None) => "required".to_string(),
                };
                errs.push(FieldError::new(path.clone(), "missing_required", when));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errs))
    }
}
