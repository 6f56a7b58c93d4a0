//! Post delivery: hand the full lead to the winning buyer, retrying what may succeed and falling
//! back to the next-highest valid bid when a buyer refuses, all inside one post budget.
//!
//! Rules (CONTRACT §5.2):
//! - every call carries `Idempotency-Key: post_<auction_id>`, so a repeated call is harmless to a
//!   buyer that implements the contract;
//! - 2xx with a `lead_id` is a sale; 4xx, or a 2xx that says no (`reject_reason`, or
//!   `"accepted": false`, or the buyer format's own refusal), is a refusal, never retried;
//! - a 2xx Gavel cannot read as either (malformed body, no lead id) is `unconfirmed`: the buyer
//!   may have taken the lead, so delivery stops there ([`Delivery::Unconfirmed`]) and the lead goes
//!   to nobody else;
//! - 5xx, 429 (honouring `Retry-After` when it fits the budget), connect errors and timeouts are
//!   retried with exponential backoff;
//! - Gavel falls back to the next buyer only when the current one certainly did not take the lead
//!   (it refused, answered 5xx/429, or could not be reached). When the last call timed out or broke
//!   mid-answer, the buyer may hold the lead: the result is [`Delivery::Unresolved`] and a retry of
//!   the post resumes with that same buyer, so a lead is never sold twice.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::{AttemptResult, PostAttempt};
use crate::buyers::format;
use crate::buyers::pool::Pool;
use crate::buyers::Registry;
use crate::model::Lead;

/// Longest buyer lead id accepted.
pub const MAX_BUYER_LEAD_ID_LEN: usize = 128;
/// Largest buyer post answer read, in bytes.
pub const MAX_POST_RESPONSE_BYTES: usize = 16 * 1024;

/// A buyer Gavel may deliver to, in fallback order.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Slot in the auction's outcome list.
    pub slot: usize,
    pub buyer: usize,
    pub buyer_bid_token: String,
    pub valid_until_ms: u64,
}

#[derive(Debug)]
pub enum Delivery {
    Sold {
        slot: usize,
        buyer_lead_id: String,
    },
    /// Every candidate refused or was unreachable.
    Unsold {
        reason: UnsoldReason,
    },
    /// The last buyer tried may have taken the lead; only that buyer may be tried again.
    Unresolved {
        slot: usize,
    },
    /// `slot`'s buyer answered 2xx without a sale or a refusal Gavel could read: it may hold the
    /// lead, so nobody else gets it. Final, like a sale, but without a buyer's lead id.
    Unconfirmed {
        slot: usize,
    },
    /// `before_buyer` refused (the intent to deliver could not be recorded): nobody was called.
    Aborted,
}

pub use crate::types::words::UnsoldReason;

/// What one post delivers, and to whom (in fallback order).
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub auction_id: &'a str,
    pub lead: &'a Lead,
    pub candidates: &'a [Candidate],
}

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub total: Duration,
    pub max_attempts_per_buyer: u32,
    pub backoff_initial: Duration,
    pub max_buyers: usize,
}

#[derive(Serialize)]
struct BuyerPost<'a> {
    auction_id: &'a str,
    bid_token: &'a str,
    lead: &'a Lead,
}

/// A contract post answer: a sale names its `lead_id`; a refusal in a 2xx says so with a
/// `reject_reason` or `"accepted": false`.
#[derive(Deserialize)]
struct BuyerPostAnswer {
    lead_id: Option<String>,
    reject_reason: Option<String>,
    accepted: Option<bool>,
}

enum Try {
    Accepted(String),
    Refused,
    /// A 2xx that is neither a readable sale nor a readable refusal: the buyer may hold the lead.
    Unconfirmed,
    /// The buyer could not be reached, and calling again would fail the same way (an address the
    /// egress rule refuses, a failed TLS handshake): on to the next buyer without retrying.
    Unreachable,
    /// Failed in a way that proves the buyer did not take the lead; retry may help.
    RetryableClean(Option<Duration>),
    /// Failed in a way that leaves open whether the buyer took it; retry may help.
    RetryableUnclear,
}

fn retry_after(h: &http::HeaderMap) -> Option<Duration> {
    h.get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn judge(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Try {
    if status.is_success() {
        let mut buf = body.to_vec();
        return match simd_json::serde::from_slice::<BuyerPostAnswer>(&mut buf) {
            Ok(BuyerPostAnswer {
                lead_id: Some(id), ..
            }) if usable_lead_id(&id) => Try::Accepted(id),
            Ok(BuyerPostAnswer {
                lead_id: None,
                reject_reason,
                accepted,
            }) if reject_reason.is_some() || accepted == Some(false) => Try::Refused,
            _ => Try::Unconfirmed,
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Try::RetryableClean(retry_after(headers));
    }
    Try::Refused
}

/// Reads a 2xx answer of a buyer with its own answer format. A format that maps no lead id
/// records Gavel's own `lead_uuid` as the buyer's id for the lead.
fn formatted(reader: &format::Reader, lead: &Lead, body: &[u8]) -> Try {
    match reader.post(body) {
        format::PostVerdict::Accepted { lead_id: None } => Try::Accepted(lead.lead_uuid.clone()),
        format::PostVerdict::Accepted { lead_id: Some(id) } if usable_lead_id(&id) => {
            Try::Accepted(id)
        }
        format::PostVerdict::Refused => Try::Refused,
        format::PostVerdict::Accepted { .. } | format::PostVerdict::Unconfirmed => Try::Unconfirmed,
    }
}

/// Whether a buyer's lead id can be kept and shown: not empty, at most
/// [`MAX_BUYER_LEAD_ID_LEN`] bytes.
fn usable_lead_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_BUYER_LEAD_ID_LEN
}

/// Delivers `lead` to the candidates in order, starting at `candidates[0]`. Attempts are appended
/// to `attempts` for the auction record.
///
/// `before_buyer(slot)` runs before the first call to each buyer; it is where the caller makes the
/// intent to deliver durable. When it returns `false`, delivery stops before that buyer is called.
pub async fn deliver(
    registry: &Registry,
    pool: &Pool,
    job: Job<'_>,
    budget: Budget,
    attempts: &mut Vec<PostAttempt>,
    before_buyer: &mut impl AsyncFnMut(usize) -> bool,
) -> Delivery {
    let Job {
        auction_id,
        lead,
        candidates,
    } = job;
    let started = Instant::now();
    let end = started + budget.total;
    let idem = HeaderValue::from_str(&format!("post_{auction_id}"))
        .expect("auction ids are header-safe by validation");
    let mut any_refusal = false;
    // Architecture Invariant [one-buyer-at-a-time]: one buyer at a time, always under
    // `post_<auction_id>`; the next only when the last one certainly did not take the lead.
    for c in candidates.iter().take(budget.max_buyers) {
        if c.valid_until_ms <= registry.clock.now_ms() {
            continue;
        }
        if !before_buyer(c.slot).await {
            return Delivery::Aborted;
        }
        let buyer = &registry.buyers[c.buyer];
        // A buyer with its own format gets a body built by that format instead.
        let body: Bytes = match buyer.post_format {
            Some(_) => Bytes::new(),
            None => serde_json::to_vec(&BuyerPost {
                auction_id,
                bid_token: &c.buyer_bid_token,
                lead,
            })
            .expect("lead serializes")
            .into(),
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            vec![(HeaderName::from_static("idempotency-key"), idem.clone())];
        if let Some((n, v)) = &buyer.auth {
            headers.push((n.clone(), v.clone()));
        }
        let mut backoff = budget.backoff_initial;
        let mut unclear = false;
        for attempt in 1..=budget.max_attempts_per_buyer {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let limit = (end - now).min(buyer.post_timeout);
            let t0 = Instant::now();
            let call = async {
                let Some(f) = &buyer.post_format else {
                    let max = MAX_POST_RESPONSE_BYTES;
                    return pool
                        .post_json(&buyer.post, &headers, body.clone(), max)
                        .await;
                };
                let bid_token = &c.buyer_bid_token;
                let input = format::Input::Post {
                    auction_id,
                    bid_token,
                    lead,
                };
                format::send(
                    pool,
                    &buyer.post,
                    f,
                    input,
                    &headers,
                    MAX_POST_RESPONSE_BYTES,
                )
                .await
            };
            let res = monoio::time::timeout(limit, call).await;
            let latency_us = t0.elapsed().as_micros() as u64;
            let (outcome, result, http_status) = match res {
                Err(_) => (Try::RetryableUnclear, AttemptResult::Timeout, None),
                // The request never left Gavel: another attempt (or buyer) is safe, and
                // worth making only when the failure may pass.
                Ok(Err(e)) if e.never_sent() && e.retryable() => {
                    (Try::RetryableClean(None), AttemptResult::ConnectError, None)
                }
                Ok(Err(e)) if e.never_sent() => {
                    (Try::Unreachable, AttemptResult::ConnectError, None)
                }
                Ok(Err(_)) => (Try::RetryableUnclear, AttemptResult::Error, None),
                Ok(Ok(a)) => {
                    let t = match buyer.post_format.as_ref().and_then(|f| f.answer()) {
                        Some(r) if a.status.is_success() => formatted(r, lead, &a.body),
                        _ => judge(a.status, &a.headers, &a.body),
                    };
                    let r = match t {
                        Try::Accepted(_) => AttemptResult::Accepted,
                        Try::Refused => AttemptResult::Rejected,
                        Try::Unconfirmed => AttemptResult::Unconfirmed,
                        _ => AttemptResult::Error,
                    };
                    (t, r, Some(a.status.as_u16()))
                }
            };
            attempts.push(PostAttempt {
                buyer_id: buyer.id.clone(),
                attempt,
                result,
                http_status,
                latency_us,
            });
            let wait = match outcome {
                Try::Accepted(id) => {
                    return Delivery::Sold {
                        slot: c.slot,
                        buyer_lead_id: id,
                    }
                }
                // Once a call to this buyer may have delivered the lead, later failures cannot
                // prove otherwise: the buyer stays "maybe holds it" unless it confirms a sale.
                Try::Refused => {
                    any_refusal = true;
                    break;
                }
                // The buyer may hold the lead: nobody else may get it, and asking again could not
                // make the answer readable.
                Try::Unconfirmed => return Delivery::Unconfirmed { slot: c.slot },
                Try::Unreachable => break,
                Try::RetryableClean(after) => after.unwrap_or(backoff),
                Try::RetryableUnclear => {
                    unclear = true;
                    backoff
                }
            };
            if attempt == budget.max_attempts_per_buyer || Instant::now() + wait >= end {
                break;
            }
            monoio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
        if unclear {
            return Delivery::Unresolved { slot: c.slot };
        }
        if Instant::now() >= end {
            break;
        }
    }
    Delivery::Unsold {
        reason: if any_refusal {
            UnsoldReason::BuyerRejected
        } else {
            UnsoldReason::BuyerUnavailable
        },
    }
}
