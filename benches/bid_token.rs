//! Bid tokens: signing one for a won auction and verifying it at post time.
//!
//! What it measures, with keys `BidKeys::from_secrets((1, &[7u8; 32]), Some((0, &[9u8; 32])))`
//! (current key 1, previous key 0, as after a rotation):
//!
//! - `sign`: [`gavel::auction::token::BidKeys::sign`] for typical claims; it includes drawing an
//!   8-byte nonce from the system RNG (`ring::rand::SystemRandom`), HMAC-SHA256 and base64url;
//! - `verify_current_key`: `verify` of a token signed with the current key;
//! - `verify_previous_key`: `verify` of a token signed with the previous key (rotation path);
//! - `verify_tampered`: `verify` of a current-key token with one bit of the amount flipped, the
//!   rejection path (decoding and the full HMAC check, then `Err`).
//!
//! Why it matters: every won ping signs one token and every post verifies one, on the core's
//! event loop; the rejection path is what a seller forging or altering tokens makes Gavel pay.
//!
//! Run with: `cargo bench --bench bid_token`
//!
//! Results (placeholder: the measured figures, with machine, commit and date, live in the
//! `bid_token` table of docs/benchmarks.md, so they are not copied here to go stale):
//!
//! | Benchmark | Median [95 % CI] |
//! |---|---|
//! | `bid_token/sign` | see docs/benchmarks.md |
//! | `bid_token/verify_current_key` | see docs/benchmarks.md |
//! | `bid_token/verify_previous_key` | see docs/benchmarks.md |
//! | `bid_token/verify_tampered` | see docs/benchmarks.md |

mod common;

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use gavel::auction::token::{BidKeys, Claims, SellerTag, TokenError};
use gavel::config::Tenant;

fn claims() -> Claims {
    Claims {
        auction_id: "auc_01JXZ3N6M2Q8W5D4R7T9V0B1C2".into(),
        tenant: Tenant::Sandbox,
        seller: Some(SellerTag::of("acme-leads")),
        amount_cents: 3_465,
        valid_until_ms: 1_800_000_000_000,
    }
}

/// The token with one bit of the amount flipped (byte 5 of the claims), re-encoded so it still
/// decodes and only the signature check can refuse it.
fn tampered(token: &str) -> String {
    let mut raw = URL_SAFE_NO_PAD
        .decode(token.strip_prefix("bid_").expect("bid_ prefix"))
        .expect("token is base64url");
    raw[5] ^= 1;
    format!("bid_{}", URL_SAFE_NO_PAD.encode(&raw))
}

fn bench_tokens(c: &mut Criterion) {
    let keys = BidKeys::from_secrets((1, &[7u8; 32]), Some((0, &[9u8; 32])));
    let before_rotation = BidKeys::from_secrets((0, &[9u8; 32]), None);
    let claims = claims();
    let current = keys.sign(&claims);
    let previous = before_rotation.sign(&claims);
    let forged = tampered(&current);
    assert_eq!(keys.verify(&current), Ok(claims.clone()));
    assert_eq!(keys.verify(&previous), Ok(claims.clone()));
    assert_eq!(keys.verify(&forged), Err(TokenError::Invalid));
    eprintln!("bid_token: token length {} characters", current.len());

    let mut g = c.benchmark_group("bid_token");
    g.bench_function("sign", |b| b.iter(|| keys.sign(black_box(&claims))));
    g.bench_function("verify_current_key", |b| {
        b.iter(|| keys.verify(black_box(&current)))
    });
    g.bench_function("verify_previous_key", |b| {
        b.iter(|| keys.verify(black_box(&previous)))
    });
    g.bench_function("verify_tampered", |b| {
        b.iter(|| keys.verify(black_box(&forged)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_tokens
}
criterion_main!(benches);
