//! Ping fan-out: send one auction's ping to every eligible buyer at once and collect what each one
//! answers before the deadline.
//!
//! Every buyer call is bounded by `min(buyer.ping_timeout, deadline - now)`, so the auction closes
//! by its deadline whatever a buyer does; a buyer that hangs or trickles bytes only loses its own
//! bid (its connection is dropped, not reused). The fan-out closes early once every buyer answered.
//! Clearing the collected bids is [`super::clearing`]'s job.

use std::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::{parse_rfc3339_ms, rfc3339_ms, BuyerOutcome, OutcomeKind};
use crate::buyers::format;
use crate::buyers::pool::{CallError, Pool};
use crate::buyers::{Eligibility, Registry};
use crate::config::AuctionConfig;
use crate::model::{f64_to_cents, Cents, Ping};

/// Longest buyer bid token Gavel will carry back to the buyer at post time.
pub const MAX_BUYER_TOKEN_LEN: usize = 512;
/// Longest reject_detail kept from a buyer, in bytes.
pub const MAX_REJECT_DETAIL_LEN: usize = 256;

/// The ping body a buyer receives (CONTRACT §5.1): the seller's fields plus id and deadline.
#[derive(Serialize)]
struct BuyerPing<'a> {
    auction_id: &'a str,
    expires_at: String,
    #[serde(flatten)]
    ping: &'a Ping,
}

#[derive(Deserialize)]
struct BuyerAnswer {
    auction_id: Option<String>,
    bid: Option<BuyerBid>,
    reject_reason: Option<String>,
    reject_detail: Option<String>,
}

/// A buyer's bid as it arrives on the wire (CONTRACT §5.1), before [`judge`] accepts it.
#[derive(Deserialize)]
pub struct BuyerBid {
    pub amount: f64,
    pub currency: String,
    pub bid_token: String,
    pub valid_until: String,
}

/// A bid's amount in cents, or `None` when it cannot be a price: zero (also after rounding),
/// negative, or above [`crate::types::money::MAX_MONEY`] (`invalid_amount`). NaN and infinities
/// never get here (JSON has no such numbers and simd-json refuses `1e400`, so they are
/// `invalid_json`), but would be refused too. Sub-cent amounts are rounded to the nearest cent,
/// not refused: CONTRACT §5.1 names only `amount ≤ 0` among a buyer's amount mistakes, and
/// docs/buyer-integration.md promises buyers this rounding (`12.345` bids 12.35).
fn bid_cents(amount: f64) -> Option<Cents> {
    f64_to_cents(amount).filter(|&c| c > 0)
}

/// Serializes the buyer ping once per auction; every buyer gets the same bytes.
pub fn buyer_ping_body(auction_id: &str, ping: &Ping, deadline_ms: u64) -> Bytes {
    serde_json::to_vec(&BuyerPing {
        auction_id,
        expires_at: rfc3339_ms(deadline_ms),
        ping,
    })
    .expect("ping serializes")
    .into()
}

/// Whether a buyer's bid token is one Gavel carries back at post time: not empty, and at most
/// [`MAX_BUYER_TOKEN_LEN`] bytes.
fn carriable_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_BUYER_TOKEN_LEN
}

/// A reject reason as the record will show it: a short snake_case code, or `unspecified`.
fn clean_reason(r: Option<String>) -> String {
    match r {
        Some(r)
            if !r.is_empty()
                && r.len() <= 64
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            r
        }
        _ => "unspecified".into(),
    }
}

fn clip(s: Option<String>) -> Option<String> {
    s.map(|mut s| {
        if s.len() > MAX_REJECT_DETAIL_LEN {
            let mut cut = MAX_REJECT_DETAIL_LEN;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    })
}

/// Turns a buyer's raw answer into an outcome. Anything off-contract is the buyer's `error`.
/// Public so that the benchmark baseline (`benches/baseline`) judges answers exactly like Gavel;
/// returns the kind, the accepted bid, and the reject reason and detail.
pub fn judge(
    auction_id: &str,
    currency: &str,
    status: StatusCode,
    body: &[u8],
    now_ms: u64,
) -> (
    OutcomeKind,
    Option<BuyerBid>,
    Option<String>,
    Option<String>,
) {
    let err = |reason: &str| (OutcomeKind::Error, None, Some(reason.to_string()), None);
    if status != StatusCode::OK {
        return err(&format!("http_{}", status.as_u16()));
    }
    let mut buf = body.to_vec();
    let Ok(a) = simd_json::serde::from_slice::<BuyerAnswer>(&mut buf) else {
        return err("invalid_json");
    };
    if a.auction_id.as_deref() != Some(auction_id) {
        return err("wrong_auction_id");
    }
    match a.bid {
        None => (
            OutcomeKind::NoBid,
            None,
            Some(clean_reason(a.reject_reason)),
            clip(a.reject_detail),
        ),
        Some(b) => {
            if bid_cents(b.amount).is_none() {
                return err("invalid_amount");
            }
            if b.currency != currency {
                return err("currency_mismatch");
            }
            if !carriable_token(&b.bid_token) {
                return err("invalid_bid_token");
            }
            match parse_rfc3339_ms(&b.valid_until) {
                None => err("invalid_valid_until"),
                Some(v) if v <= now_ms => err("bid_already_expired"),
                Some(_) => (OutcomeKind::Bid, Some(b), None, None),
            }
        }
    }
}

/// When an auction closes, on the monotonic clock (for timers) and the wall clock (for buyers).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub unix_ms: u64,
}

/// Pings every eligible buyer and returns one outcome per considered buyer: the pinged ones in
/// eligibility order, then the filtered and capped ones.
pub async fn ping_buyers(
    registry: &Registry,
    pool: &Pool,
    cfg: &AuctionConfig,
    auction_id: &str,
    ping: &Ping,
    elig: &Eligibility,
    deadline: Deadline,
) -> Vec<BuyerOutcome> {
    let body = buyer_ping_body(auction_id, ping, deadline.unix_ms);
    let deadline_ms = deadline.unix_ms;
    let deadline = deadline.at;
    let idem = HeaderValue::from_str(&format!("ping_{auction_id}"))
        .expect("auction ids are header-safe by validation");
    let mut arrival = 0u32;
    let Split {
        to_ping,
        rate_limited,
        direct,
    } = split(registry, elig);
    // Pings leave here: whoever computed `elig` must have capped it at the configured limit.
    debug_assert!(
        to_ping.len() <= cfg.max_buyers_per_auction,
        "more buyers pinged than auction.max_buyers_per_auction"
    );
    let mut outcomes: Vec<Option<BuyerOutcome>> = vec![None; to_ping.len()];

    let mut calls: FuturesUnordered<_> = to_ping
        .iter()
        .enumerate()
        .map(|(slot, &bi)| {
            let buyer = &registry.buyers[bi];
            let call = PingCall {
                auction_id,
                ping,
                body: body.clone(),
                headers: ping_headers(&idem, buyer),
                deadline,
                deadline_ms,
            };
            async move {
                let (took, res) = ping_one(pool, cfg, buyer, call).await;
                (slot, bi, took, res)
            }
        })
        .collect();

    while let Some((slot, bi, took, res)) = calls.next().await {
        let latency_us = took.as_micros() as u64;
        let base = BuyerOutcome {
            latency_us,
            arrival,
            ..BuyerOutcome::new(bi, registry.buyers[bi].id.clone(), OutcomeKind::Error)
        };
        arrival += 1;
        outcomes[slot] = Some(answered(registry, cfg, auction_id, base, res));
    }
    let mut out: Vec<BuyerOutcome> = outcomes.into_iter().flatten().collect();
    // Fixed prices arrive after every pinged answer, so a tie goes to the buyer that priced
    // this lead. Their validity is the bid token's lifetime, set where the auction closes.
    out.extend(
        direct
            .iter()
            .zip(arrival..)
            .map(|(&bi, arrival)| BuyerOutcome {
                amount_cents: registry.buyers[bi].fixed_price_cents,
                arrival,
                direct_post: true,
                ..BuyerOutcome::new(bi, registry.buyers[bi].id.clone(), OutcomeKind::Bid)
            }),
    );
    out.extend(not_pinged(registry, elig, &rate_limited));
    out
}

/// What every ping of one auction carries.
struct PingCall<'a> {
    auction_id: &'a str,
    ping: &'a Ping,
    /// The contract body, serialized once per auction.
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    deadline: Instant,
    deadline_ms: u64,
}

/// Pings one buyer (in its own format when it has one) and says how long it took.
async fn ping_one(
    pool: &Pool,
    cfg: &AuctionConfig,
    buyer: &crate::buyers::Buyer,
    c: PingCall<'_>,
) -> (
    std::time::Duration,
    Result<Result<crate::buyers::pool::Answer, CallError>, monoio::time::error::Elapsed>,
) {
    let target = buyer
        .ping
        .as_ref()
        .expect("direct-post buyers are not pinged");
    let started = Instant::now();
    let budget = c
        .deadline
        .saturating_duration_since(started)
        .min(buyer.ping_timeout);
    let max = cfg.max_buyer_response_bytes;
    let call = async {
        let Some(f) = &buyer.ping_format else {
            return pool.post_json(target, &c.headers, c.body, max).await;
        };
        let expires_at = rfc3339_ms(c.deadline_ms);
        let input = format::Input::Ping {
            auction_id: c.auction_id,
            expires_at: &expires_at,
            ping: c.ping,
        };
        format::send(pool, target, f, input, &c.headers, max).await
    };
    // Architecture Invariant [deadline]: each call is bounded by min(ping timeout,
    // deadline - now), so the auction closes on time whatever the buyer does.
    let res = monoio::time::timeout(budget, call).await;
    (started.elapsed(), res)
}

/// The eligible buyers of one auction, by what happens to them.
struct Split {
    to_ping: Vec<usize>,
    /// Over their pings-per-second limit (shared by all cores): skipped, not pinged.
    rate_limited: Vec<usize>,
    /// Direct-post buyers: never pinged, their fixed price is their bid.
    direct: Vec<usize>,
}

/// Sorts the eligible buyers into [`Split`], taking a ping from each pinged buyer's rate limit.
fn split(registry: &Registry, elig: &Eligibility) -> Split {
    let mut s = Split {
        to_ping: Vec::with_capacity(elig.eligible.len()),
        rate_limited: Vec::new(),
        direct: Vec::new(),
    };
    for &bi in &elig.eligible {
        let buyer = &registry.buyers[bi];
        if buyer.ping.is_none() {
            s.direct.push(bi);
        } else if matches!(
            buyer.ping_rate.acquire(),
            crate::limits::Decision::Allowed { .. }
        ) {
            s.to_ping.push(bi);
        } else {
            s.rate_limited.push(bi);
        }
    }
    s
}

/// A ping's headers: the auction's idempotency key and the buyer's auth header, if any.
fn ping_headers(
    idem: &HeaderValue,
    buyer: &crate::buyers::Buyer,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![(HeaderName::from_static("idempotency-key"), idem.clone())];
    if let Some((n, v)) = &buyer.auth {
        headers.push((n.clone(), v.clone()));
    }
    headers
}

/// What a pinged buyer's call came to: its bid, its refusal, or why it gave neither. `base` is
/// the buyer's outcome with its timing filled in.
fn answered(
    registry: &Registry,
    cfg: &AuctionConfig,
    auction_id: &str,
    base: BuyerOutcome,
    res: Result<Result<crate::buyers::pool::Answer, CallError>, monoio::time::error::Elapsed>,
) -> BuyerOutcome {
    match res {
        Err(_elapsed) => BuyerOutcome {
            kind: OutcomeKind::Timeout,
            reject_reason: Some("timeout".into()),
            ..base
        },
        Ok(Err(e)) => BuyerOutcome {
            reject_reason: Some(
                match &e {
                    CallError::Connect(_) => "connect_failed",
                    CallError::Resolve(r) => r.reason(),
                    CallError::Egress(_) => "egress_refused",
                    CallError::Tls(_) => "tls_error",
                    CallError::Http(_) => "http_error",
                    CallError::TooLarge(_) => "response_too_large",
                }
                .into(),
            ),
            failure: e.failure(),
            // The host is the buyer's configured one, so saying why it did not resolve (or why
            // its handshake failed) reveals nothing about the lead.
            reject_detail: match &e {
                CallError::Resolve(r) => clip(Some(r.to_string())),
                CallError::Egress(r) => clip(Some(r.to_string())),
                CallError::Tls(t) => clip(Some(t.to_string())),
                _ => None,
            },
            ..base
        },
        Ok(Ok(answer)) => {
            let format = registry.buyers[base.buyer].ping_format.as_ref();
            let read = if let Some(reader) = format.and_then(|f| f.answer()) {
                formatted(reader, &answer, base)
            } else {
                let (kind, bid, reason, detail) = judge(
                    auction_id,
                    &cfg.currency,
                    answer.status,
                    &answer.body,
                    registry.clock.now_ms(),
                );
                BuyerOutcome {
                    kind,
                    amount_cents: bid.as_ref().and_then(|b| bid_cents(b.amount)),
                    valid_until_ms: bid.as_ref().and_then(|b| parse_rfc3339_ms(&b.valid_until)),
                    buyer_bid_token: bid.map(|b| b.bid_token),
                    reject_reason: reason,
                    reject_detail: detail,
                    ..base
                }
            };
            within_max_price(read, cfg.max_price)
        }
    }
}

/// A bid above `[auction] max_price` is no bid Gavel takes: it is most likely a buyer's typo (or
/// a price in the wrong unit), and selling at it would bill someone that amount. It is recorded
/// as the buyer's `error` with reason `above_max_price`.
fn within_max_price(o: BuyerOutcome, max_price: Cents) -> BuyerOutcome {
    match o.amount_cents {
        Some(c) if o.kind == OutcomeKind::Bid && c > max_price => BuyerOutcome {
            kind: OutcomeKind::Error,
            amount_cents: None,
            buyer_bid_token: None,
            valid_until_ms: None,
            reject_reason: Some("above_max_price".into()),
            reject_detail: Some(format!(
                "bid {}.{:02} is above the exchange's maximum price {}.{:02}",
                c / 100,
                c % 100,
                max_price / 100,
                max_price % 100
            )),
            ..o
        },
        _ => o,
    }
}

/// What a buyer with its own answer format said, judged by the contract's rules: a bid's amount
/// becomes cents like a contract bid's, a token keeps the contract's length limit, and a reason is
/// cleaned the same way. Such an answer carries no validity: the bid holds for the bid token's
/// lifetime.
fn formatted(
    reader: &format::Reader,
    answer: &crate::buyers::pool::Answer,
    base: BuyerOutcome,
) -> BuyerOutcome {
    let err = |base: BuyerOutcome, reason: String| BuyerOutcome {
        reject_reason: Some(reason),
        ..base
    };
    if !answer.status.is_success() {
        return err(base, format!("http_{}", answer.status.as_u16()));
    }
    match reader.ping(&answer.body) {
        format::PingVerdict::Unreadable(why) => err(base, why.into()),
        format::PingVerdict::NoBid { reason } => BuyerOutcome {
            kind: OutcomeKind::NoBid,
            reject_reason: Some(clean_reason(reason)),
            ..base
        },
        format::PingVerdict::Bid { amount, bid_token } => {
            let Some(cents) = amount.and_then(bid_cents) else {
                return err(base, "invalid_amount".into());
            };
            if bid_token.as_deref().is_some_and(|t| !carriable_token(t)) {
                return err(base, "invalid_bid_token".into());
            }
            BuyerOutcome {
                kind: OutcomeKind::Bid,
                amount_cents: Some(cents),
                buyer_bid_token: bid_token,
                ..base
            }
        }
    }
}

/// The outcomes of the buyers that were not pinged: filtered out by their own filters, over the
/// auction's buyer cap, or over their pings-per-second limit.
fn not_pinged<'a>(
    registry: &'a Registry,
    elig: &'a Eligibility,
    rate_limited: &'a [usize],
) -> impl Iterator<Item = BuyerOutcome> + 'a {
    let skipped = |bi: usize, kind: OutcomeKind, reason: &str| BuyerOutcome {
        reject_reason: Some(reason.into()),
        ..BuyerOutcome::new(bi, registry.buyers[bi].id.clone(), kind)
    };
    let filtered = elig
        .filtered
        .iter()
        .map(move |&(bi, r)| skipped(bi, OutcomeKind::Filtered, r.as_str()));
    let capped = elig
        .capped
        .iter()
        .map(move |&bi| skipped(bi, OutcomeKind::Capped, "max_buyers_per_auction"));
    let limited = rate_limited
        .iter()
        .map(move |&bi| skipped(bi, OutcomeKind::RateLimited, "max_pings_per_s"));
    filtered.chain(capped).chain(limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_outcomes() {
        let now = 1_700_000_000_000;
        let ok = br#"{"auction_id":"a1","bid":{"amount":12.5,"currency":"USD","bid_token":"t","valid_until":"2099-01-01T00:00:00Z"}}"#;
        assert_eq!(
            judge("a1", "USD", StatusCode::OK, ok, now).0,
            OutcomeKind::Bid
        );
        assert_eq!(
            judge("a2", "USD", StatusCode::OK, ok, now).2.unwrap(),
            "wrong_auction_id"
        );
        assert_eq!(
            judge("a1", "EUR", StatusCode::OK, ok, now).2.unwrap(),
            "currency_mismatch"
        );
        assert_eq!(
            judge("a1", "USD", StatusCode::INTERNAL_SERVER_ERROR, ok, now)
                .2
                .unwrap(),
            "http_500"
        );
        assert_eq!(
            judge("a1", "USD", StatusCode::OK, b"{nope", now).2.unwrap(),
            "invalid_json"
        );
        let nb =
            br#"{"auction_id":"a1","bid":null,"reject_reason":"no_demand","reject_detail":"x"}"#;
        let (k, _, r, d) = judge("a1", "USD", StatusCode::OK, nb, now);
        assert_eq!(
            (k, r.as_deref(), d.as_deref()),
            (OutcomeKind::NoBid, Some("no_demand"), Some("x"))
        );
        let zero = br#"{"auction_id":"a1","bid":{"amount":0,"currency":"USD","bid_token":"t","valid_until":"2099-01-01T00:00:00Z"}}"#;
        assert_eq!(
            judge("a1", "USD", StatusCode::OK, zero, now).2.unwrap(),
            "invalid_amount"
        );
        let old = br#"{"auction_id":"a1","bid":{"amount":3,"currency":"USD","bid_token":"t","valid_until":"2001-01-01T00:00:00Z"}}"#;
        assert_eq!(
            judge("a1", "USD", StatusCode::OK, old, now).2.unwrap(),
            "bid_already_expired"
        );
        let weird = br#"{"auction_id":"a1","bid":null,"reject_reason":"Has Spaces"}"#;
        assert_eq!(
            judge("a1", "USD", StatusCode::OK, weird, now).2.unwrap(),
            "unspecified"
        );
    }

    /// A formatted answer is judged by the contract's rules: status, cents, token length and
    /// reason cleaning.
    #[test]
    fn formatted_answers_follow_the_contract_rules() {
        let cfg: crate::config::FormatConfig = toml::from_str(
            "[answer]\ntype = \"json\"\namount = \"/a\"\nbid_token = \"/t\"\n\
             accepted = \"/ok\"\nreject_reason = \"/why\"\n",
        )
        .unwrap();
        let f = format::Format::compile(&cfg, format::Call::Ping).unwrap();
        let judge = |status: u16, body: String| {
            let base = BuyerOutcome::new(0, "b".into(), OutcomeKind::Error);
            let answer = crate::buyers::pool::Answer {
                status: StatusCode::from_u16(status).unwrap(),
                headers: Default::default(),
                body: body.into(),
            };
            let o = formatted(f.answer().unwrap(), &answer, base);
            (o.kind, o.amount_cents, o.buyer_bid_token, o.reject_reason)
        };
        let bid = |a: &str, t: &str| format!(r#"{{"ok":true,"a":{a},"t":"{t}"}}"#);
        assert_eq!(
            judge(200, bid("12.345", "x")),
            (OutcomeKind::Bid, Some(1235), Some("x".into()), None)
        );
        assert_eq!(judge(201, bid("1", "x")).0, OutcomeKind::Bid);
        let error = |r: &str| (OutcomeKind::Error, None, None, Some(r.to_string()));
        assert_eq!(judge(503, bid("1", "x")), error("http_503"));
        assert_eq!(judge(200, bid("0", "x")), error("invalid_amount"));
        assert_eq!(judge(200, bid("-3", "x")), error("invalid_amount"));
        assert_eq!(judge(200, bid("1e13", "x")), error("invalid_amount"));
        assert_eq!(judge(200, bid("1", "")), error("invalid_bid_token"));
        let long = "t".repeat(MAX_BUYER_TOKEN_LEN + 1);
        assert_eq!(judge(200, bid("1", &long)), error("invalid_bid_token"));
        assert_eq!(judge(200, "nope".into()), error("invalid_json"));
        assert_eq!(
            judge(200, r#"{"ok":false,"why":"Not Today"}"#.into()),
            (OutcomeKind::NoBid, None, None, Some("unspecified".into()))
        );
        assert_eq!(
            judge(200, r#"{"ok":false,"why":"capped"}"#.into())
                .3
                .as_deref(),
            Some("capped")
        );
    }

    fn bid_of(amount: &str) -> Vec<u8> {
        format!(
            r#"{{"auction_id":"a1","bid":{{"amount":{amount},"currency":"USD","bid_token":"t","valid_until":"2099-01-01T00:00:00Z"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn absurd_bid_amounts_are_the_buyers_error_and_never_a_bid() {
        let now = 1_700_000_000_000;
        for (amount, reason) in [
            ("1e13", "invalid_amount"),
            ("1000000000000.01", "invalid_amount"),
            ("-1", "invalid_amount"),
            ("-0.0", "invalid_amount"),
            ("0.004", "invalid_amount"),
            // JSON has no NaN or infinity: as a literal or a string they are not numbers at all,
            // and a number beyond a float's range is not read as infinity.
            ("1e400", "invalid_json"),
            ("NaN", "invalid_json"),
            ("\"NaN\"", "invalid_json"),
            ("Infinity", "invalid_json"),
            ("\"12.50\"", "invalid_json"),
        ] {
            let (kind, bid, why, _) = judge("a1", "USD", StatusCode::OK, &bid_of(amount), now);
            assert_eq!(
                (kind, bid.is_some(), why.as_deref()),
                (OutcomeKind::Error, false, Some(reason)),
                "amount {amount}"
            );
        }
    }

    #[test]
    fn bid_amounts_become_cents_and_sub_cent_ones_are_rounded() {
        let now = 1_700_000_000_000;
        for (amount, cents) in [
            ("12.5", 1250),
            ("12", 1200),
            ("0.01", 1),
            ("1000000000000", crate::types::money::MAX_CENTS),
            // Rounded to the nearest cent, not refused (see `bid_cents`).
            ("12.345", 1235),
            ("12.344", 1234),
            ("0.005", 1),
        ] {
            let (kind, bid, _, _) = judge("a1", "USD", StatusCode::OK, &bid_of(amount), now);
            assert_eq!(kind, OutcomeKind::Bid, "amount {amount}");
            assert_eq!(
                bid.and_then(|b| bid_cents(b.amount)),
                Some(cents),
                "amount {amount}"
            );
        }
    }
}
