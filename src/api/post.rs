//! `POST /v1/post` (CONTRACT §4.2): check the bid token and the lead against the auction, deliver the
//! lead to the winner (or the next bidder), answer with the buyer's lead id.
//!
//! The auction's post state decides what a repeated post gets: the same idempotency key replays the
//! final answer or resumes an unresolved delivery; another key gets 409 once the auction is posted.

use std::rc::Rc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auction::clearing::seller_payout;
use crate::auction::deliver::{self, Budget, Candidate, Delivery};
use crate::auction::{now_ms, PostState, Status};
use crate::auth::Client;
use crate::config::Scope;
use crate::error::{ApiError, FieldError};
use crate::http::Reply;
use crate::model::{f64_to_cents, Money, Post};
use crate::runtime::handoff::on_core;
use crate::runtime::Core;

/// Longest idempotency key accepted (CONTRACT §6).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

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

/// Reads the optional `Idempotency-Key` header: 1–255 printable ASCII characters.
pub fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = v.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    let client = core.shared.auth.check(req.headers(), Scope::Post)?;
    let key = idempotency_key(req.headers())?;
    let mut body = super::json_body(req).await?;
    let post = super::validate::parse_post(&mut body, now_ms())?;
    let key = key.unwrap_or_else(|| format!("post_{}", post.auction_id));
    let owner = core.shared.owner_of(&post.auction_id);
    let rid_owned = rid.to_string();
    Ok(on_core(core, owner, rid, move |c| async move {
        match run(&c, post, client, key).await {
            Ok(r) => r,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

fn invalid_token(msg: &str) -> ApiError {
    ApiError::unprocessable("invalid_bid_token", msg)
}

fn already_posted(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "auction_already_posted",
        format!("Auction {id} was already posted with another idempotency key."),
    )
}

async fn run(core: &Rc<Core>, post: Post, client: Client, key: String) -> Result<Reply, ApiError> {
    let shared = &core.shared;
    let claims = shared
        .keys
        .verify(&post.bid_token)
        .map_err(|_| invalid_token("The bid token is not one Gavel issued, or it was altered."))?;
    if claims.tenant != client.tenant {
        // Another tenant's auction is invisible, even to a caller holding its genuine token.
        return Err(ApiError::not_found(format!(
            "Auction {} is unknown here or its post window has passed.",
            post.auction_id
        )));
    }
    if claims.auction_id != post.auction_id {
        return Err(invalid_token("The bid token belongs to another auction."));
    }

    // Decide, without awaiting, what this post may do; the shard borrow ends before any I/O.
    let (candidates, payouts, vertical, source) = {
        let mut shard = core.shard.borrow_mut();
        let a = shard
            .get_mut(&post.auction_id)
            .filter(|a| a.tenant == client.tenant)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "Auction {} is unknown here or its post window has passed.",
                    post.auction_id
                ))
            })?;
        let resume_slot = match &a.post {
            PostState::Done { key: k, reply } if *k == key => {
                return Ok(reply.clone().header(
                    HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                ))
            }
            PostState::InFlight { key: k } if *k == key => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_in_flight",
                    "A post with this idempotency key is still being delivered; retry shortly.",
                ))
            }
            PostState::Unresolved { key: k, slot } if *k == key => Some(*slot),
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
        let mismatches = super::validate::lead_mismatch(&a.ping.state, &a.ping.zip3, &post.lead);
        if !mismatches.is_empty() {
            let mut e = ApiError::unprocessable(
                "lead_mismatch",
                "The lead does not agree with its ping; see field_errors.",
            );
            e.field_errors = mismatches;
            return Err(e);
        }
        // A resumed delivery starts again with the buyer that may hold the lead; only if that
        // buyer now certainly refuses does it move on down the ranking.
        let start = resume_slot
            .and_then(|s| ranked.iter().position(|r| *r == s))
            .unwrap_or(0);
        let slots: Vec<usize> = ranked[start..].to_vec();
        let margin_fixed = f64_to_cents(shared.config.auction.margin_fixed).unwrap_or(0);
        let mut candidates = Vec::with_capacity(slots.len());
        let mut payouts = Vec::with_capacity(slots.len());
        for s in slots {
            let o = &a.outcomes[s];
            candidates.push(Candidate {
                slot: s,
                buyer: o.buyer,
                buyer_bid_token: o.buyer_bid_token.clone().unwrap_or_default(),
                valid_until_ms: o.valid_until_ms.unwrap_or(0),
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
        (
            candidates,
            payouts,
            a.ping.vertical.clone(),
            a.ping.source.clone(),
        )
    };
    check_rules(shared, &vertical, &source, &post)?;

    set_post(
        core,
        &post.auction_id,
        PostState::InFlight { key: key.clone() },
    );
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
    let outcome = deliver::deliver(
        &shared.registry,
        &core.pool,
        deliver::Job {
            auction_id: &post.auction_id,
            lead: &post.lead,
            candidates: &candidates,
        },
        budget,
        &mut attempts,
        &mut async |_slot| true,
    )
    .await;

    let currency = &shared.config.auction.currency;
    let sold = match &outcome {
        Delivery::Sold {
            slot,
            buyer_lead_id,
        } => Some((*slot, buyer_lead_id.clone())),
        _ => None,
    };
    let (state, reply) = match outcome {
        Delivery::Sold {
            slot,
            buyer_lead_id,
        } => {
            let amount = payouts
                .iter()
                .find(|(s, _)| *s == slot)
                .map_or(0, |(_, p)| *p);
            let reply = Reply::json(
                StatusCode::CREATED,
                &SoldOut {
                    auction_id: &post.auction_id,
                    lead_uuid: &post.lead.lead_uuid,
                    status: "sold",
                    buyer_lead_id: &buyer_lead_id,
                    amount: Money(amount),
                    currency,
                },
            );
            (
                PostState::Done {
                    key,
                    reply: reply.clone(),
                },
                Ok(reply),
            )
        }
        Delivery::Unsold { reason } => {
            let reply = Reply::json(
                StatusCode::OK,
                &UnsoldOut {
                    auction_id: &post.auction_id,
                    lead_uuid: &post.lead.lead_uuid,
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
                    key,
                    reply: reply.clone(),
                },
                Ok(reply),
            )
        }
        Delivery::Aborted => (
            PostState::None,
            Err(ApiError::internal(
                "The delivery could not be recorded; no buyer was called. Retry the post.",
            )),
        ),
        Delivery::Unresolved { slot } => (
            PostState::Unresolved { key, slot },
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "buyer_unavailable",
                "The buyer did not confirm the delivery in time. Retry this post with the same \
                 Idempotency-Key: Gavel resumes with the same buyer and never sells the lead twice.",
            )),
        ),
    };
    {
        let mut shard = core.shard.borrow_mut();
        if let Some(a) = shard.get_mut(&post.auction_id) {
            a.post = state;
            a.post_attempts.extend(attempts);
            if sold.is_some() {
                a.sold = sold;
            }
        }
    }
    reply
}

fn set_post(core: &Rc<Core>, auction_id: &str, state: PostState) {
    if let Some(a) = core.shard.borrow_mut().get_mut(auction_id) {
        a.post = state;
    }
}

/// Applies the configured lead rules, e.g. "trustedform_cert_url required when source is facebook_ads".
fn check_rules(
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
