//! Conversion between an in-memory [`Auction`] and its stored [`AuctionRecord`].
//!
//! The record is self-describing (buyer ids, not registry indexes; status names, not enums), so it
//! reads back after a restart or a buyer-list change. A delivery that was running when Gavel
//! stopped comes back as [`PostState::Unresolved`]: the buyer may hold the lead, so a retry must
//! resume with it. Final answers come back as [`PostState::Done`] so they replay byte for byte.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use super::{
    AttemptResult, Auction, BuyerOutcome, NoBidReason, OutcomeKind, PostAttempt, PostOutcome,
    PostState, Status, NO_BUYER,
};
use crate::buyers::Registry;
use crate::config::Tenant;
use crate::http::Reply;
use crate::store::{AttemptRecord, AuctionRecord, OutcomeRecord, PostRecord};

/// The stored outcome word of a direct-post buyer's fixed-price bid. It is a `bid` in every
/// other respect; a word of its own marks it without changing the record's layout, so records
/// written before direct-post buyers existed read as they always did.
pub const FIXED_PRICE_BID: &str = "fixed_price_bid";

/// Headers of a reply as stored strings.
pub fn headers_to_strings(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// A reply rebuilt from stored parts.
pub fn reply_from_parts(status: u16, headers: &[(String, String)], body: &[u8]) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers: headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect(),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

pub fn to_record(a: &Auction) -> AuctionRecord {
    let (status, reject_reason, ranked, payout, token_until) = match &a.status {
        Status::Open => ("open", None, Vec::new(), None, None),
        Status::NoBid(r) => (
            "no_bid",
            Some(r.as_str().to_string()),
            Vec::new(),
            None,
            None,
        ),
        Status::Won {
            ranked,
            payout_cents,
            token_valid_until_ms,
        } => (
            "won",
            None,
            ranked.iter().map(|s| *s as u32).collect(),
            Some(*payout_cents),
            Some(*token_valid_until_ms),
        ),
    };
    let mut post = PostRecord {
        state: "none".into(),
        fingerprint: a.post_fingerprint,
        lead_uuid: a.lead_uuid.clone(),
        buyer_lead_id: a.sold.as_ref().map(|(_, id)| id.clone()),
        sold_slot: a.sold.as_ref().map(|(s, _)| *s as u32),
        ..PostRecord::default()
    };
    match &a.post {
        PostState::None => {}
        // A delivery in flight is stored as its intent: should Gavel stop now, the buyer at `slot`
        // may get the lead, and a retry must go back to it.
        PostState::InFlight { key, slot } => {
            post.state = "delivering".into();
            post.key = Some(key.clone());
            post.slot = slot.map(|s| s as u32);
        }
        PostState::Unresolved { key, slot } => {
            post.state = "unresolved".into();
            post.key = Some(key.clone());
            post.slot = Some(*slot as u32);
        }
        PostState::Done {
            key,
            reply,
            outcome,
        } => {
            post.state = outcome.as_str().into();
            post.key = Some(key.clone());
            post.reply_status = Some(reply.status.as_u16());
            post.reply_headers = headers_to_strings(reply);
            post.reply_body = reply.body.to_vec();
        }
    }
    AuctionRecord {
        id: a.id.clone(),
        tenant: a.tenant.as_str().to_string(),
        client: a.client.clone(),
        seller: a.seller.clone(),
        buyer_ref: if a.buyer_ref == a.id {
            String::new()
        } else {
            a.buyer_ref.clone()
        },
        ping_json: serde_json::to_vec(&a.ping).expect("ping serializes"),
        created_ms: a.created_ms,
        deadline_ms: a.deadline_ms,
        closed_ms: a.closed_ms,
        status: status.into(),
        reject_reason,
        outcomes: a
            .outcomes
            .iter()
            .map(|o| OutcomeRecord {
                buyer_id: o.buyer_id.clone(),
                kind: if o.direct_post {
                    FIXED_PRICE_BID.into()
                } else {
                    o.kind.as_str().into()
                },
                amount_cents: o.amount_cents,
                buyer_bid_token: o.buyer_bid_token.clone(),
                valid_until_ms: o.valid_until_ms,
                reject_reason: o.reject_reason.clone(),
                reject_detail: o.reject_detail.clone(),
                latency_us: o.latency_us,
                arrival: o.arrival,
            })
            .collect(),
        ranked,
        payout_cents: payout,
        token_valid_until_ms: token_until,
        post,
        post_attempts: a
            .post_attempts
            .iter()
            .map(|p| AttemptRecord {
                buyer_id: p.buyer_id.clone(),
                attempt: p.attempt,
                result: p.result.as_str().to_string(),
                http_status: p.http_status,
                latency_us: p.latency_us,
            })
            .collect(),
    }
}

/// Rebuilds an auction from its record. `evict_at_ms` is when the shard may forget it again.
/// Its buyers are resolved against `registry`, the snapshot current when it is read back, which
/// the auction then keeps.
pub fn from_record(
    mut r: AuctionRecord,
    registry: &Arc<Registry>,
    evict_at_ms: u64,
) -> Result<Auction, String> {
    let tenant = match r.tenant.as_str() {
        "sandbox" => Tenant::Sandbox,
        "production" => Tenant::Production,
        t => return Err(format!("unknown tenant {t:?}")),
    };
    let ping = serde_json::from_slice(&r.ping_json).map_err(|e| format!("ping summary: {e}"))?;
    let outcomes = std::mem::take(&mut r.outcomes)
        .into_iter()
        .map(|o| outcome_from(o, tenant, registry))
        .collect::<Result<Vec<_>, String>>()?;
    let slot_ok = |s: u32| (s as usize) < outcomes.len();
    let status = status_from(&r, &slot_ok)?;
    let p = r.post;
    let post = post_from(&p, &slot_ok)?;
    let post_attempts = r
        .post_attempts
        .into_iter()
        .map(attempt_from)
        .collect::<Result<Vec<_>, String>>()?;
    let sold = match (p.sold_slot, p.buyer_lead_id) {
        (Some(s), Some(id)) if slot_ok(s) => Some((s as usize, id)),
        _ => None,
    };
    Ok(Auction {
        buyer_ref: if r.buyer_ref.is_empty() {
            r.id.clone()
        } else {
            r.buyer_ref
        },
        id: r.id,
        tenant,
        client: r.client,
        seller: r.seller,
        ping,
        created_ms: r.created_ms,
        deadline_ms: r.deadline_ms,
        closed_ms: r.closed_ms,
        outcomes,
        status,
        post,
        post_attempts,
        sold,
        post_fingerprint: p.fingerprint,
        lead_uuid: p.lead_uuid,
        evict_at_ms,
        close_announced: true,
        registry: registry.clone(),
        // Counts start afresh with the process: an auction read back holds no unposted slot.
        unposted: None,
    })
}

/// One buyer's stored outcome, its buyer found again in `registry` ([`NO_BUYER`] when gone).
fn outcome_from(
    o: crate::store::OutcomeRecord,
    tenant: Tenant,
    registry: &Registry,
) -> Result<BuyerOutcome, String> {
    let direct_post = o.kind == FIXED_PRICE_BID;
    Ok(BuyerOutcome {
        buyer: registry.index_of(tenant, &o.buyer_id).unwrap_or(NO_BUYER),
        kind: if direct_post {
            OutcomeKind::Bid
        } else {
            OutcomeKind::parse(&o.kind).ok_or_else(|| format!("unknown outcome {:?}", o.kind))?
        },
        direct_post,
        buyer_id: o.buyer_id,
        amount_cents: o.amount_cents,
        buyer_bid_token: o.buyer_bid_token,
        valid_until_ms: o.valid_until_ms,
        reject_reason: o.reject_reason,
        reject_detail: o.reject_detail,
        latency_us: o.latency_us,
        arrival: o.arrival,
        // Only counted as the auction closes; a record read back counts nothing again.
        failure: None,
    })
}

/// The stored auction status; `slot_ok` says whether an outcome slot exists.
fn status_from(r: &AuctionRecord, slot_ok: &impl Fn(u32) -> bool) -> Result<Status, String> {
    Ok(match r.status.as_str() {
        "open" => Status::Open,
        "no_bid" => Status::NoBid(
            r.reject_reason
                .as_deref()
                .and_then(NoBidReason::parse)
                .ok_or("no_bid record without a known reason")?,
        ),
        "won" => {
            if !r.ranked.iter().all(|s| slot_ok(*s)) || r.ranked.is_empty() {
                return Err("ranking names a slot that does not exist".into());
            }
            Status::Won {
                ranked: r.ranked.iter().map(|s| *s as usize).collect(),
                payout_cents: r.payout_cents.ok_or("won record without payout")?,
                token_valid_until_ms: r
                    .token_valid_until_ms
                    .ok_or("won record without token expiry")?,
            }
        }
        s => return Err(format!("unknown status {s:?}")),
    })
}

/// The stored post state; `slot_ok` says whether an outcome slot exists.
fn post_from(p: &PostRecord, slot_ok: &impl Fn(u32) -> bool) -> Result<PostState, String> {
    let key = || p.key.clone().ok_or("post record without key");
    Ok(match p.state.as_str() {
        "none" => PostState::None,
        // Gavel stopped while delivering: whether the buyer took the lead is unknown.
        "delivering" | "unresolved" => match p.slot {
            Some(slot) if slot_ok(slot) => PostState::Unresolved {
                key: key()?,
                slot: slot as usize,
            },
            // The intent was recorded before a buyer was chosen: nobody was called.
            _ => PostState::None,
        },
        s => match PostOutcome::parse(s) {
            Some(outcome) => PostState::Done {
                key: key()?,
                reply: reply_from_parts(
                    p.reply_status.ok_or("final post without a reply")?,
                    &p.reply_headers,
                    &p.reply_body,
                ),
                outcome,
            },
            None => return Err(format!("unknown post state {s:?}")),
        },
    })
}

/// One stored delivery attempt.
fn attempt_from(a: AttemptRecord) -> Result<PostAttempt, String> {
    Ok(PostAttempt {
        result: AttemptResult::parse(&a.result)
            .ok_or_else(|| format!("unknown post attempt result {:?}", a.result))?,
        buyer_id: a.buyer_id,
        attempt: a.attempt,
        http_status: a.http_status,
        latency_us: a.latency_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auction() -> Auction {
        let ping = crate::model::Ping::minimal();
        let mut a = Auction::open(
            Default::default(),
            "a1".into(),
            Tenant::Sandbox,
            "c".into(),
            "c".into(),
            ping,
            1,
            2,
            3,
        );
        a.outcomes = OutcomeKind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| BuyerOutcome {
                arrival: i as u32,
                ..BuyerOutcome::new(NO_BUYER, format!("b{i}"), kind)
            })
            .collect();
        a.status = Status::NoBid(NoBidReason::BelowFloor);
        a.post = PostState::Unresolved {
            key: "post_a1".into(),
            slot: 1,
        };
        a.post_attempts = AttemptResult::ALL
            .iter()
            .enumerate()
            .map(|(i, &result)| PostAttempt {
                buyer_id: "b1".into(),
                attempt: i as u32 + 1,
                result,
                http_status: None,
                latency_us: 0,
            })
            .collect();
        a
    }

    #[test]
    fn enums_are_stored_as_their_words_and_read_back() {
        let r = to_record(&auction());
        // The words themselves are pinned by `types::words::tests::words_are_the_contracts`.
        let kinds: Vec<_> = r.outcomes.iter().map(|o| o.kind.as_str()).collect();
        let words: Vec<_> = OutcomeKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, words);
        assert_eq!(
            (r.status.as_str(), r.reject_reason.as_deref()),
            ("no_bid", Some("below_floor"))
        );
        assert_eq!(r.post.state, "unresolved");
        let results: Vec<_> = r.post_attempts.iter().map(|p| p.result.as_str()).collect();
        let words: Vec<_> = AttemptResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(results, words);

        let back = from_record(r, &Arc::new(Registry::default()), 9).unwrap();
        let kinds: Vec<_> = back.outcomes.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, OutcomeKind::ALL);
        assert!(matches!(
            back.status,
            Status::NoBid(NoBidReason::BelowFloor)
        ));
        let results: Vec<_> = back.post_attempts.iter().map(|p| p.result).collect();
        assert_eq!(results, AttemptResult::ALL);
    }

    #[test]
    fn a_fixed_price_bid_keeps_its_marker_through_the_record() {
        let mut a = auction();
        a.outcomes[0].direct_post = true;
        let r = to_record(&a);
        assert_eq!(r.outcomes[0].kind, FIXED_PRICE_BID);
        // Every other outcome keeps its plain word, as records written before did.
        assert_eq!(r.outcomes[1].kind, "no_bid");
        let back = from_record(r, &std::sync::Arc::new(Registry::default()), 9).unwrap();
        assert_eq!(
            (back.outcomes[0].kind, back.outcomes[0].direct_post),
            (OutcomeKind::Bid, true)
        );
        assert!(back.outcomes[1..].iter().all(|o| !o.direct_post));
    }

    #[test]
    fn a_record_with_an_unknown_word_is_refused_not_guessed() {
        let mut r = to_record(&auction());
        r.post_attempts[0].result = "maybe".into();
        assert!(from_record(r, &Arc::new(Registry::default()), 9)
            .unwrap_err()
            .contains("maybe"));
        let mut r = to_record(&auction());
        r.outcomes[0].kind = "maybe".into();
        assert!(from_record(r, &Arc::new(Registry::default()), 9).is_err());
    }
}
