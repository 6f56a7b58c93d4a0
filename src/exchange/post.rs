//! Delivering a posted lead (CONTRACT §4.2) on the auction's owning core: check the post against
//! its auction (bid token claims, expiry, lead vs ping, lead rules, the post state of an earlier
//! attempt), then offer the lead to the winner and, if it refuses, down the ranking, with the
//! intent to deliver durable before each buyer is called and the final answer durable before it
//! is returned.
//!
//! Crash safety: after a crash a retry with the same idempotency key finds the recorded intent and
//! resumes with the same buyer under the same `Idempotency-Key`, so a lead is never sold twice and
//! an acknowledged sale is never lost.
//!
//! The final answer (sold or unsold) is part of what is recorded: it is kept in the auction record
//! and replayed byte for byte to a retry, and it is the `lead.posted` event's data, so it is built
//! here, once. The caller records it under its own idempotency keys through [`Keyed::record`].
//! Buyer I/O belongs to [`crate::auction::deliver`].

use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

use super::error::ExchangeError;
use super::events;
use crate::auction::clearing::seller_payout;
use crate::auction::deliver::{self, Budget, Candidate, Delivery};
use crate::auction::record::to_record;
use crate::auction::token::{Claims, SellerTag};
use crate::auction::{Auction, PostOutcome, PostState, Status, NO_BUYER};
use crate::auth::Client;
use crate::config::{Config, RuleConfig};
use crate::error::FieldError;
use crate::exchange::Core;
use crate::http::Reply;
use crate::model::{Money, Post};
use crate::store::{AuctionRecord, Batch, LeadEvent, LeadRecord, StoreError};
use crate::types::{Cents, Tenant};

/// The idempotency identity a delivery runs under, and how its final answer is recorded under it
/// (and under any other key the same call answers for) in the batch that makes the outcome durable.
pub struct Keyed<'a> {
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    /// Adds the final answer's idempotency records to the batch (`now_ms` is their time).
    pub record: &'a dyn Fn(&mut Batch, &Reply, u64) -> Result<(), StoreError>,
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Delivered {
    /// The final answer (sold or unsold), durable; or the one an earlier call with the same key
    /// recorded, replayed.
    Answer(Reply),
    /// No buyer confirmed in time and the last one called may hold the lead: a retry with the same
    /// key resumes with that buyer.
    Unresolved,
}

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

/// The answer to a post whose buyer answered 2xx without a sale or a refusal Gavel could read.
#[derive(Serialize)]
struct UnconfirmedOut<'a> {
    auction_id: &'a str,
    lead_uuid: &'a str,
    status: &'static str,
    detail: &'static str,
}

/// Delivers a post whose bid token is not verified yet: the token must be Gavel's, for this
/// tenant, seller and auction. Loads the auction from the store when memory no longer holds it.
/// The auction is looked up among the poster's seller's own: another seller's auction under the
/// same id is not found (404), whatever token comes with the post.
pub async fn deliver_with_token(
    core: &Rc<Core>,
    post: Post,
    client: &Client,
    keyed: &Keyed<'_>,
    received: Instant,
) -> Result<Delivered, ExchangeError> {
    let seller = super::auction::seller_of(client)?;
    let claims = core.shared.keys.verify(&post.bid_token).map_err(|_| {
        ExchangeError::InvalidBidToken("The bid token is not one Gavel issued, or it was altered.")
    })?;
    let not_found = || ExchangeError::AuctionNotFound {
        auction_id: post.auction_id.clone(),
    };
    // Another tenant's or another seller's auction is invisible, even to a caller holding its
    // genuine token: the answer is the one an unknown auction gets. (A version-1 token names no
    // seller; the lookup below is scoped by the poster's seller all the same.)
    if claims.tenant != client.tenant || claims.seller.is_some_and(|t| t != SellerTag::of(seller)) {
        return Err(not_found());
    }
    if claims.auction_id != post.auction_id {
        return Err(ExchangeError::InvalidBidToken(
            "The bid token belongs to another auction.",
        ));
    }
    if !super::auction::ensure_loaded(core, client.tenant, seller, &post.auction_id)? {
        return Err(not_found());
    }
    deliver(core, post, client, keyed, received, claims).await
}

/// Delivers `post` to the bidders of the caller's seller's auction once its claims are
/// established (from a verified bid token, or from the auction itself in a one-call lead). The
/// auction must be in the shard.
pub async fn deliver(
    core: &Rc<Core>,
    mut post: Post,
    client: &Client,
    keyed: &Keyed<'_>,
    received: Instant,
    claims: Claims,
) -> Result<Delivered, ExchangeError> {
    let seller = super::auction::seller_of(client)?;
    let plan = match plan(core, &post, client.tenant, seller, keyed, &claims)? {
        Ok(p) => p,
        // A final answer already held by the auction record: nothing changes, nothing to record.
        Err(replay) => {
            core.metrics.record_replay();
            return Ok(Delivered::Answer(replay));
        }
    };
    check_rules(&core.rules(), &plan.vertical, &plan.source, &post)?;
    post.lead.lead_uuid = plan.lead_uuid.clone();
    let run = Run {
        core,
        tenant: client.tenant,
        seller,
        auction_id: &post.auction_id,
        key: keyed.key,
    };
    run.start(keyed.fingerprint, &plan.lead_uuid);
    let mut attempts = Vec::new();
    // The intent to deliver to a buyer is durable before that buyer is called.
    let mut before_buyer = async |slot: usize| run.intend(slot).await;
    let outcome = deliver::deliver(
        &plan.registry,
        &core.pool,
        deliver::Job {
            auction_id: &plan.buyer_ref,
            lead: &post.lead,
            candidates: &plan.candidates,
        },
        budget(&core.shared.config),
        &mut attempts,
        &mut before_buyer,
    )
    .await;
    for a in &attempts {
        core.metrics
            .record_post_attempt(client.tenant, &a.buyer_id, a.result);
    }
    let now = core.shared.clock.now_ms();
    let mut batch = Batch::new();
    // A buyer that may hold the lead without a sale: should the outcome not reach the disk, the
    // auction goes back to it, not to the first candidate.
    let held = match &outcome {
        Delivery::Unconfirmed { slot } => Some(*slot),
        _ => None,
    };
    let Some((state, sold, answer)) =
        run.settle(&post, &plan, outcome, received, now, &mut batch)?
    else {
        // Nobody was called for the failed step; what was recorded before still holds.
        run.update(|a| {
            a.post = plan.previous.clone();
            a.post_attempts.extend(attempts);
        });
        return Err(ExchangeError::DeliveryNotRecorded);
    };
    let record = run.update(|a| {
        a.post = state;
        a.post_attempts.extend(attempts);
        if sold.is_some() {
            a.sold = sold;
        }
    });
    let emitted = final_writes(
        core,
        &mut batch,
        client.tenant,
        seller,
        record.as_ref(),
        &answer,
        keyed,
        now,
    )?;
    if let Err(e) = core.commit(batch).await {
        run.unsettle(held.or(plan.candidates.first().map(|c| c.slot)));
        return Err(e.into());
    }
    // The answer and everything it reports are durable.
    events::committed(core, emitted);
    if let Delivered::Answer(_) = answer {
        // Posted (sold or unsold, for good): the seller's unposted slot is free again.
        if let Some(a) = core
            .shard
            .borrow_mut()
            .get_mut(run.tenant, run.seller, run.auction_id)
        {
            a.unposted = None;
        }
    }
    Ok(answer)
}

/// One delivery's auction on its owning core, under its idempotency key.
struct Run<'a> {
    core: &'a Core,
    tenant: Tenant,
    seller: &'a str,
    auction_id: &'a str,
    key: &'a str,
}

/// What a delivery's outcome makes of the auction: its post state, the sale (slot and buyer's
/// lead id), and the answer.
type Settled = (PostState, Option<(usize, String)>, Delivered);

impl Run<'_> {
    /// Marks the delivery in flight under its key, with the body's fingerprint and the lead id it
    /// delivers under.
    fn start(&self, fingerprint: [u8; 32], lead_uuid: &str) {
        let key = self.key;
        self.update(|a| {
            a.post = PostState::InFlight {
                key: key.to_string(),
                slot: None,
            };
            a.post_fingerprint = Some(fingerprint);
            a.lead_uuid = Some(lead_uuid.to_string());
        });
    }

    /// Sets the auction's post state and returns its record, ready to commit.
    fn update(&self, f: impl FnOnce(&mut Auction)) -> Option<AuctionRecord> {
        let mut shard = self.core.shard.borrow_mut();
        let a = shard.get_mut(self.tenant, self.seller, self.auction_id)?;
        // Every post-state change passes here, so debug builds check each one is a legal move.
        #[cfg(debug_assertions)]
        let old = a.post.clone();
        f(a);
        #[cfg(debug_assertions)]
        debug_assert!(
            old.may_become(&a.post),
            "post state {old:?} may not become {:?}",
            a.post
        );
        Some(to_record(a))
    }

    // Architecture Invariant [durable-before-answer]: the intent to deliver is durable before the
    // buyer is called, and the outcome before the answer leaves.
    /// Makes the intent to deliver to `slot` durable; false when it could not be (the buyer is
    /// then not called).
    async fn intend(&self, slot: usize) -> bool {
        let key = self.key;
        let Some(record) = self.update(|a| {
            a.post = PostState::InFlight {
                key: key.to_string(),
                slot: Some(slot),
            };
        }) else {
            return false;
        };
        // A one-call lead's auction reaches the disk here first: its close is announced with it.
        match super::auction::commit_record(self.core, Some(&record), Batch::new()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the intent to deliver");
                false
            }
        }
    }

    /// Turns the delivery's outcome into the auction's new post state and the answer, adding the
    /// lead record of a sale to `batch`. `None` when the delivery was aborted.
    fn settle(
        &self,
        post: &Post,
        plan: &Plan,
        outcome: Delivery,
        received: Instant,
        now: u64,
        batch: &mut Batch,
    ) -> Result<Option<Settled>, ExchangeError> {
        let done = |reply: &Reply, outcome| PostState::Done {
            key: self.key.to_string(),
            reply: reply.clone(),
            outcome,
        };
        Ok(Some(match outcome {
            Delivery::Sold {
                slot,
                buyer_lead_id,
            } => {
                // Post received → the buyer's 2xx: the latency the post SLO is about.
                // The same value again in the seller's own series, for its latency report.
                let us = received.elapsed().as_micros() as u64;
                self.core.metrics.record_post(us);
                self.core
                    .metrics
                    .record_seller_post(self.tenant, self.seller, us);
                let reply = sold_answer(self.core, post, plan, slot, &buyer_lead_id);
                batch.put_lead(&self.lead_record(plan, slot, &buyer_lead_id, now))?;
                (
                    done(&reply, PostOutcome::Sold),
                    Some((slot, buyer_lead_id)),
                    Delivered::Answer(reply),
                )
            }
            Delivery::Unsold { reason } => {
                let reply = unsold_answer(post, plan, reason);
                (
                    done(&reply, PostOutcome::Unsold),
                    None,
                    Delivered::Answer(reply),
                )
            }
            Delivery::Unconfirmed { .. } => {
                let reply = unconfirmed_answer(post, plan);
                (
                    done(&reply, PostOutcome::Unconfirmed),
                    None,
                    Delivered::Answer(reply),
                )
            }
            Delivery::Unresolved { slot } => (
                PostState::Unresolved {
                    key: self.key.to_string(),
                    slot,
                },
                None,
                Delivered::Unresolved,
            ),
            Delivery::Aborted => return Ok(None),
        }))
    }

    /// The record of a lead sold to the buyer at `slot`: its history starts with Gavel's sale.
    fn lead_record(&self, plan: &Plan, slot: usize, buyer_lead_id: &str, now: u64) -> LeadRecord {
        let buyer_id = self
            .core
            .shard
            .borrow()
            .get(self.tenant, self.seller, self.auction_id)
            .map(|a| a.outcomes[slot].buyer_id.clone())
            .unwrap_or_default();
        LeadRecord {
            lead_uuid: plan.lead_uuid.clone(),
            auction_id: self.auction_id.to_string(),
            tenant: self.tenant.as_str().to_string(),
            seller: self.seller.to_string(),
            buyer_id,
            buyer_lead_id: buyer_lead_id.to_string(),
            created_ms: now,
            history: vec![LeadEvent {
                at_ms: now,
                status: "sold".into(),
                reason: None,
            }],
        }
    }

    /// After the outcome failed to reach the disk: memory keeps it, but to stay safe across a
    /// crash the auction goes back to "unresolved at the last buyer", so a retry asks that buyer
    /// again and the buyer's own idempotency answers it.
    fn unsettle(&self, last_buyer: Option<usize>) {
        let key = self.key;
        self.update(|a| {
            if let (PostState::Done { .. }, Some(slot)) =
                (&a.post, a.sold.as_ref().map(|s| s.0).or(last_buyer))
            {
                a.post = PostState::Unresolved {
                    key: key.to_string(),
                    slot,
                };
            }
        });
    }
}

/// Adds to `batch` what the outcome's commit carries besides the lead: the auction record (with
/// its `auction.closed` event when this is its first write) and, for a final answer, the answer
/// under the caller's keys and the `lead.posted` event.
#[allow(clippy::too_many_arguments)]
fn final_writes(
    core: &Core,
    batch: &mut Batch,
    tenant: Tenant,
    seller: &str,
    record: Option<&AuctionRecord>,
    answer: &Delivered,
    keyed: &Keyed<'_>,
    now: u64,
) -> Result<events::Emitted, ExchangeError> {
    let mut emitted = events::Emitted::default();
    if let Some(r) = record {
        emitted = events::put_auction(core, batch, r, now)?;
    }
    if let Delivered::Answer(reply) = answer {
        (keyed.record)(batch, reply, now)?;
        // The auction's seller hears of it, whichever of its clients posted.
        emitted = emitted.and(events::lead_posted(
            core,
            batch,
            tenant,
            seller,
            &reply.body,
            now,
        )?);
    }
    Ok(emitted)
}

/// The delivery budget from `[post]`: total time, attempts per buyer, backoff, and how many
/// buyers may be tried.
fn budget(config: &Config) -> Budget {
    let pc = &config.post;
    Budget {
        total: Duration::from_millis(pc.budget_ms),
        max_attempts_per_buyer: pc.max_attempts_per_buyer,
        backoff_initial: Duration::from_millis(pc.backoff_initial_ms),
        max_buyers: if pc.fallback {
            pc.max_fallbacks.max(1)
        } else {
            1
        },
    }
}

fn sold_answer(core: &Core, post: &Post, plan: &Plan, slot: usize, buyer_lead_id: &str) -> Reply {
    let amount = plan
        .payouts
        .iter()
        .find(|(s, _)| *s == slot)
        .map_or(0, |(_, p)| *p);
    Reply::json(
        StatusCode::CREATED,
        &SoldOut {
            auction_id: &post.auction_id,
            lead_uuid: &plan.lead_uuid,
            status: PostOutcome::Sold.as_str(),
            buyer_lead_id,
            amount: Money(amount),
            currency: &core.shared.config.auction.currency,
        },
    )
}

fn unsold_answer(post: &Post, plan: &Plan, reason: deliver::UnsoldReason) -> Reply {
    Reply::json(
        StatusCode::OK,
        &UnsoldOut {
            auction_id: &post.auction_id,
            lead_uuid: &plan.lead_uuid,
            status: PostOutcome::Unsold.as_str(),
            reject_reason: reason.as_str(),
            reject_detail: reason.detail(),
        },
    )
}

/// `202`: the buyer may hold the lead but confirmed nothing; the seller must not sell it elsewhere
/// as exclusive, and the operator settles it with the buyer (`gavel_buyer_post_attempts_total`
/// counts it as `unconfirmed`).
fn unconfirmed_answer(post: &Post, plan: &Plan) -> Reply {
    Reply::json(
        StatusCode::ACCEPTED,
        &UnconfirmedOut {
            auction_id: &post.auction_id,
            lead_uuid: &plan.lead_uuid,
            status: PostOutcome::Unconfirmed.as_str(),
            detail: "The buyer answered without a sale or a refusal Gavel could read; it may \
                     hold the lead, so no other buyer was sent it.",
        },
    )
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
    /// The buyer snapshot the auction keeps: candidates' buyer indexes point into it.
    registry: std::sync::Arc<crate::buyers::Registry>,
    /// The id buyers know the auction by (`Auction::buyer_ref`).
    buyer_ref: String,
}

/// Checks the post against its auction's post state and claims; `Ok(Err(reply))` is a final
/// answer recorded earlier under the same key, to replay.
fn plan(
    core: &Core,
    post: &Post,
    tenant: Tenant,
    seller: &str,
    keyed: &Keyed<'_>,
    claims: &Claims,
) -> Result<Result<Plan, Reply>, ExchangeError> {
    let mut shard = core.shard.borrow_mut();
    let a = shard
        .get_mut(tenant, seller, &post.auction_id)
        .ok_or_else(|| ExchangeError::AuctionNotFound {
            auction_id: post.auction_id.clone(),
        })?;
    let resume_slot = match resume_slot(a, keyed)? {
        Resume::Replay(reply) => return Ok(Err(reply)),
        Resume::At(slot) => slot,
    };
    let Status::Won {
        ranked,
        payout_cents,
        ..
    } = &a.status
    else {
        return Err(ExchangeError::InvalidBidToken(
            "The auction has no winning bid.",
        ));
    };
    // A resumed delivery must go back to its buyer whatever the clocks say: that buyer may hold
    // the lead. Expiry only guards the start of a delivery.
    if resume_slot.is_none() {
        if claims.amount_cents != *payout_cents {
            return Err(ExchangeError::InvalidBidToken(
                "The bid token does not match the auction's bid.",
            ));
        }
        if claims.valid_until_ms < core.shared.clock.now_ms() {
            return Err(ExchangeError::BidExpired);
        }
    }
    let mismatches = post.lead.mismatches(&a.ping.state, &a.ping.zip3);
    if !mismatches.is_empty() {
        return Err(ExchangeError::LeadMismatch(mismatches));
    }
    // A resumed delivery starts again with the buyer that may hold the lead; only if that buyer
    // now certainly refuses does it move on down the ranking.
    let start = resume_slot
        .and_then(|s| ranked.iter().position(|r| *r == s))
        .unwrap_or(0);
    let (candidates, payouts) = ranked_candidates(
        a,
        &ranked[start..],
        ranked[0],
        *payout_cents,
        resume_slot,
        &core.shared.config,
    );
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
        registry: a.registry.clone(),
        buyer_ref: a.buyer_ref.clone(),
    }))
}

/// The buyers to offer the lead to, in ranked order from `ranked`'s first, with what the seller
/// is paid if each takes it: the winner's payout, else the runner-up's own bid less the margins.
/// A resumed buyer's bid never expires for this delivery: it may hold the lead already.
fn ranked_candidates(
    a: &Auction,
    ranked: &[usize],
    winner: usize,
    payout_cents: Cents,
    resume_slot: Option<usize>,
    config: &Config,
) -> (Vec<Candidate>, Vec<(usize, Cents)>) {
    let cfg = &config.auction;
    let mut candidates = Vec::new();
    let mut payouts = Vec::new();
    for &s in ranked {
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
        let payout = if s == winner {
            payout_cents
        } else {
            seller_payout(
                o.amount_cents.unwrap_or(0),
                cfg.margin_percent,
                cfg.margin_fixed,
            )
        };
        payouts.push((s, payout));
    }
    (candidates, payouts)
}

/// Where an earlier post of this auction leaves this one.
enum Resume {
    /// The same key's final answer, to replay.
    Replay(Reply),
    /// Deliver: from the start (`None`) or resuming with the buyer at this slot.
    At(Option<usize>),
}

fn resume_slot(a: &Auction, keyed: &Keyed<'_>) -> Result<Resume, ExchangeError> {
    let same_body = || a.post_fingerprint.is_none_or(|f| f == keyed.fingerprint);
    match &a.post {
        PostState::Done { key, reply, .. } if key == keyed.key => {
            if !same_body() {
                return Err(ExchangeError::KeyReused);
            }
            Ok(Resume::Replay(reply.clone().header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            )))
        }
        PostState::InFlight { key, .. } if key == keyed.key => Err(ExchangeError::KeyInFlight),
        PostState::Unresolved { key, slot } if key == keyed.key => {
            if !same_body() {
                return Err(ExchangeError::KeyReused);
            }
            Ok(Resume::At(Some(*slot)))
        }
        PostState::None => Ok(Resume::At(None)),
        _ => Err(ExchangeError::AlreadyPosted {
            auction_id: a.id.clone(),
        }),
    }
}

/// Applies the configured lead rules, e.g. "trustedform_cert_url required when source is
/// facebook_ads"; every unmet rule is one field error.
pub fn check_rules(
    rules: &[RuleConfig],
    vertical: &str,
    source: &str,
    post: &Post,
) -> Result<(), ExchangeError> {
    let mut errs = Vec::new();
    for r in rules {
        if r.vertical.as_deref().is_some_and(|v| v != vertical)
            || r.source.as_deref().is_some_and(|s| s != source)
        {
            continue;
        }
        for path in &r.require {
            if post.lead.has_path(path) == Some(false) {
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
        Err(ExchangeError::RulesUnmet(errs))
    }
}
