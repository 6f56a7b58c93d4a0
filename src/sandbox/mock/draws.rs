//! Deterministic decisions: the seeded generator per (fleet seed, buyer, auction, phase), what a
//! buyer draws for a ping or a post, and which of its own filters turns a ping away. It does not
//! read requests (`parse`) or write answers (`answer`); it only decides.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{FailureMode, MockBuyerConfig, MockFilters};
use super::parse::PingView;

/// FNV-1a 64 over several parts. A 0xff byte, which never occurs in UTF-8, separates the parts so
/// that ("ab", "c") and ("a", "bc") hash differently.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

fn decision_rng(seed: u64, buyer_id: &str, auction_id: &str, phase: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(fnv1a64(&[
        &seed.to_le_bytes(),
        buyer_id.as_bytes(),
        auction_id.as_bytes(),
        phase.as_bytes(),
    ]))
}

/// Everything a buyer decides about one ping. All values are drawn in a fixed order whether they
/// are used or not, so changing one knob (say, the failure mode) does not reshuffle the prices.
pub(super) struct PingDraws {
    pub(super) latency: Duration,
    pub(super) fails: bool,
    pub(super) bids: bool,
    pub(super) amount_cents: u64,
    /// The bid token's random part; the token itself is written only when an answer needs it.
    pub(super) token_bits: u64,
    other_bits: u128,
}

impl PingDraws {
    /// Whether `token` is the bid token this buyer issues for this auction,
    /// `mb_{buyer}_{token_bits as 16 hex digits}` (see `answer::bid_body`), compared without
    /// building it.
    pub(super) fn token_matches(&self, buyer_id: &str, token: &str) -> bool {
        token
            .strip_prefix("mb_")
            .and_then(|t| t.strip_prefix(buyer_id))
            .and_then(|t| t.strip_prefix('_'))
            .is_some_and(|hex| {
                hex.len() == 16
                    && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                    && u64::from_str_radix(hex, 16) == Ok(self.token_bits)
            })
    }

    /// The auction id a `wrong_auction_id` buyer answers with.
    pub(super) fn other_auction_id(&self) -> String {
        format!("auc_{}", ulid::Ulid::from_parts(0, self.other_bits))
    }
}

pub(super) fn draw_ping(seed: u64, buyer: &MockBuyerConfig, auction_id: &str) -> PingDraws {
    let mut rng = decision_rng(seed, &buyer.id, auction_id, "ping");
    let latency_ms =
        rng.gen_range(buyer.latency_ms_min..=buyer.latency_ms_max.max(buyer.latency_ms_min));
    let failure_roll: f64 = rng.gen();
    let bid_roll: f64 = rng.gen();
    let price_roll: f64 = rng.gen();
    let token_bits: u64 = rng.gen();
    let other_bits: u128 = rng.gen();
    let price = buyer.price_min + price_roll * (buyer.price_max - buyer.price_min);
    PingDraws {
        latency: Duration::from_millis(latency_ms),
        fails: buyer.failure.affects_pings() && failure_roll < buyer.failure_probability,
        bids: bid_roll < buyer.bid_probability,
        // A bid of zero is a buyer error in Gavel's eyes; a configured minimum above 0 never
        // rounds down to it.
        amount_cents: ((price * 100.0).round() as u64).max(1),
        token_bits,
        other_bits,
    }
}

pub(super) struct PostDraws {
    pub(super) latency: Duration,
    pub(super) accepts: bool,
}

pub(super) fn draw_post(seed: u64, buyer: &MockBuyerConfig, auction_id: &str) -> PostDraws {
    let mut rng = decision_rng(seed, &buyer.id, auction_id, "post");
    let latency_ms = rng.gen_range(
        buyer.post_latency_ms_min..=buyer.post_latency_ms_max.max(buyer.post_latency_ms_min),
    );
    let failure_roll: f64 = rng.gen();
    let accept_roll: f64 = rng.gen();
    let forced_reject =
        buyer.failure == FailureMode::RejectPost && failure_roll < buyer.failure_probability;
    PostDraws {
        latency: Duration::from_millis(latency_ms),
        accepts: !forced_reject && accept_roll < buyer.post_accept_probability,
    }
}

/// Why the buyer's own filters turn a ping away, if they do.
pub(super) fn filter_reject(
    filters: &MockFilters,
    ping: &PingView<'_>,
) -> Option<(&'static str, String)> {
    let state = ping.state.as_deref();
    let vertical = ping.vertical.as_deref();
    not_served("state_not_served", "state", &filters.states, state)
        .or_else(|| {
            not_served(
                "vertical_not_served",
                "vertical",
                &filters.verticals,
                vertical,
            )
        })
        .or_else(|| below_threshold(filters.min_ai_quality_score, ping.ai_quality_score))
}

/// `below_score_threshold` when the buyer has a minimum score and the ping's score is missing or
/// lower.
fn below_threshold(min: Option<f64>, score: Option<f64>) -> Option<(&'static str, String)> {
    let min = min?;
    match score {
        Some(score) if score >= min => None,
        Some(score) => Some((
            "below_score_threshold",
            format!(
                "ai_quality_score {} < buyer_min {}",
                fmt_score(score),
                fmt_score(min)
            ),
        )),
        None => Some((
            "below_score_threshold",
            format!("ai_quality_score missing; buyer_min {}", fmt_score(min)),
        )),
    }
}

/// `reason` when `served` is a non-empty list without `value` (ASCII case ignored); `what` names
/// the field in the detail.
fn not_served(
    reason: &'static str,
    what: &str,
    served: &[String],
    value: Option<&str>,
) -> Option<(&'static str, String)> {
    if served.is_empty() || value.is_some_and(|v| served.iter().any(|x| x.eq_ignore_ascii_case(v)))
    {
        return None;
    }
    Some((
        reason,
        format!(
            "{what} {} is not among the buyer's {what}s [{}]",
            value.unwrap_or("(missing)"),
            served.join(", ")
        ),
    ))
}

/// Two decimals when that is exact (0.90), the full value otherwise (0.905), so a detail never
/// shows two equal-looking numbers.
fn fmt_score(x: f64) -> String {
    if ((x * 100.0).round() / 100.0 - x).abs() < 1e-12 {
        format!("{x:.2}")
    } else {
        format!("{x}")
    }
}
