//! Parsing and validating seller request bodies: `POST /v1/ping` and `POST /v1/post`.
//!
//! What it measures: the cost of turning the bytes of a realistic ping (CONTRACT §4.1, with
//! `trustedform_cert_url` and a few `attributes`) into a validated [`gavel::model::Ping`] with
//! [`gavel::api::validate::parse_ping`], the real path (simd-json borrowed values, then every field
//! checked), next to baselines that do less:
//!
//! - `simd_json_borrowed`: simd-json alone to a `simd_json::BorrowedValue`, no validation;
//! - `simd_json_borrowed_reused_buffers`: the same, with simd-json's scratch buffers
//!   (`simd_json::Buffers`) kept across iterations instead of allocated per call;
//! - `serde_json_value`: serde_json to a `serde_json::Value`;
//! - `serde_json_struct`: serde_json into a `#[derive(Deserialize)]` struct whose strings borrow
//!   from the body, no validation.
//!
//! It also measures [`gavel::api::validate::parse_post`] on a realistic post body (the lead of
//! `tests/common/mod.rs::post_body()` with a real bid token), next to simd-json alone on the same
//! bytes. `parse_post` mints a `lead_uuid` (a ULID) because the body does not carry one, as most
//! sellers' posts will not.
//!
//! Why it matters: every ping and every post pays this once per request on a core's event loop
//! before any auction work, so it bounds how many requests a core can take per second.
//!
//! How: simd-json rewrites its input, so every iteration parses a fresh copy of the body made by
//! criterion's `iter_batched_ref` setup closure (not timed). Every variant, serde_json included,
//! parses the same kind of copy, so the figures compare. Each timed iteration includes dropping
//! what the parse produced. Throughput is reported in bytes of request body.
//!
//! Run with: `cargo bench --bench ping_parse`
//!
//! Results (placeholder: the measured figures, with machine, commit and date, live in the
//! `ping_parse` table of docs/benchmarks.md, so they are not copied here to go stale):
//!
//! | Benchmark | Median [95 % CI] |
//! |---|---|
//! | `ping_parse/gavel_parse_ping` | see docs/benchmarks.md |
//! | `ping_parse/simd_json_borrowed` | see docs/benchmarks.md |
//! | `ping_parse/simd_json_borrowed_reused_buffers` | see docs/benchmarks.md |
//! | `ping_parse/serde_json_value` | see docs/benchmarks.md |
//! | `ping_parse/serde_json_struct` | see docs/benchmarks.md |
//! | `post_parse/gavel_parse_post` | see docs/benchmarks.md |
//! | `post_parse/simd_json_borrowed` | see docs/benchmarks.md |

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::hint::black_box;
use std::marker::PhantomData;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gavel::api::validate::{parse_ping, parse_post};
use gavel::auction::token::{BidKeys, Claims};
use gavel::config::Tenant;
use gavel::model::Scalar;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// 2026-05-11T14:22:00Z, a fixed clock so the post's `consent_timestamp` is always in the past.
const NOW_MS: u64 = 1_778_509_320_000;

/// A ping as a seller's form would send it: the seed fields of `tests/common/mod.rs::ping_body()`
/// in the contract's order, plus a TrustedForm certificate and vertical-specific attributes.
const PING_BODY: &str = concat!(
    r#"{"vertical":"auto_insurance","sub_vertical":"non_standard","state":"TX","zip3":"770","#,
    r#""source":"google_ads","tcpa_consent":true,"#,
    r#""trustedform_cert_url":"https://cert.trustedform.com/2f9c3a7e5b1d4c8fa0e6b7d9c1f3a5e7b9d2c4f6","#,
    r#""ai_quality_score":0.84,"currently_insured":true,"vehicle_count":2,"driver_age_band":"35-44","#,
    r#""attributes":{"homeowner":true,"credit_rating":"good","years_licensed":18,"#,
    r#""prior_carrier":"state_farm","continuous_coverage_months":36,"sr22_required":false}}"#
);

const AUCTION_ID: &str = "auc_01JXZ3N6M2Q8W5D4R7T9V0B1C2";

/// The post of `tests/common/mod.rs::post_body()`, with a bid token signed by Gavel's own code so
/// its length is the real one.
fn post_body() -> Vec<u8> {
    let keys = BidKeys::from_secrets((1, &[7u8; 32]), None);
    let token = keys.sign(&Claims {
        auction_id: AUCTION_ID.to_owned(),
        tenant: Tenant::Sandbox,
        seller: Some(gavel::auction::token::SellerTag::of("it-all")),
        amount_cents: 3465,
        valid_until_ms: NOW_MS + 60_000,
    });
    format!(
        concat!(
            r#"{{"auction_id":"{id}","bid_token":"{token}","lead":{{"#,
            r#""first_name":"Maria","last_name":"Lopez","email":"maria.lopez@example.com","#,
            r#""phone":"+15125550182","#,
            r#""address":{{"line1":"1200 Sample St","city":"Houston","state":"TX","zip":"77001"}},"#,
            r#""tcpa":{{"consent_text":"By clicking submit, I consent to be contacted.","#,
            r#""consent_timestamp":"2026-05-11T14:21:58Z","ip_address":"203.0.113.42"}}}}}}"#
        ),
        id = AUCTION_ID,
        token = token,
    )
    .into_bytes()
}

/// The ping deserialized by serde_json with strings borrowed from the body and no validation: the
/// least work a typed parse can do. Fields are only handed to `black_box`, never read.
#[allow(dead_code)]
#[derive(Deserialize)]
struct PingRef<'a> {
    #[serde(borrow)]
    auction_id: Option<&'a str>,
    #[serde(borrow)]
    vertical: &'a str,
    #[serde(borrow)]
    sub_vertical: Option<&'a str>,
    #[serde(borrow)]
    state: &'a str,
    #[serde(borrow)]
    zip3: &'a str,
    #[serde(borrow)]
    source: &'a str,
    tcpa_consent: bool,
    #[serde(borrow)]
    trustedform_cert_url: Option<&'a str>,
    ai_quality_score: Option<f64>,
    currently_insured: Option<bool>,
    vehicle_count: Option<u32>,
    #[serde(borrow)]
    driver_age_band: Option<&'a str>,
    #[serde(borrow)]
    attributes: Option<BTreeMap<&'a str, AttrRef<'a>>>,
    #[serde(borrow)]
    expires_at: Option<&'a str>,
}

/// An attribute value borrowed from the body.
///
/// Hand-written rather than `#[serde(untagged)]`, which buffers every value before trying each
/// variant and would make this baseline slower than it needs to be. The bench body's attributes
/// are booleans, integers and strings without escapes, which is all this type accepts.
#[allow(dead_code)]
enum AttrRef<'a> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(&'a str),
    Null,
}

impl<'de: 'a, 'a> Deserialize<'de> for AttrRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AttrRef<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean, an integer, a string without escapes or null")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttrRef::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttrRef::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AttrRef::UInt(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AttrRef::Str(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AttrRef::Null)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Fails loudly if a variant would measure an error path instead of a successful parse.
fn check_bodies(ping: &[u8], post: &[u8]) {
    let parsed = parse_ping(&mut ping.to_vec(), NOW_MS).expect("bench ping is valid");
    assert_eq!(parsed.attributes.len(), 6);
    assert_eq!(
        parsed.attributes[0],
        ("continuous_coverage_months".into(), Scalar::Int(36))
    );
    assert!(parsed.trustedform_cert_url.is_some());
    simd_json::to_borrowed_value(&mut ping.to_vec()).expect("simd-json parses the ping");
    serde_json::from_slice::<serde_json::Value>(ping).expect("serde_json parses the ping");
    let typed: PingRef<'_> = serde_json::from_slice(ping).expect("the struct parses the ping");
    assert_eq!(typed.attributes.map(|a| a.len()), Some(6));
    let parsed = parse_post(&mut post.to_vec(), NOW_MS).expect("bench post is valid");
    assert!(!parsed.lead_uuid_supplied);
    simd_json::to_borrowed_value(&mut post.to_vec()).expect("simd-json parses the post");
}

fn bench_ping(c: &mut Criterion) {
    let body = PING_BODY.as_bytes().to_vec();
    let post = post_body();
    check_bodies(&body, &post);

    let mut g = c.benchmark_group("ping_parse");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("gavel_parse_ping", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let ping = parse_ping(buf, black_box(NOW_MS)).unwrap();
                black_box(&ping);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("simd_json_borrowed", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let v = simd_json::to_borrowed_value(buf).unwrap();
                black_box(&v);
            },
            BatchSize::SmallInput,
        )
    });
    // The same parse with simd-json's scratch buffers kept across iterations, as a per-core
    // parser could keep them; `to_borrowed_value` allocates fresh ones on every call.
    let mut scratch = simd_json::Buffers::new(body.len());
    g.bench_function("simd_json_borrowed_reused_buffers", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let v = simd_json::to_borrowed_value_with_buffers(buf, &mut scratch).unwrap();
                black_box(&v);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("serde_json_value", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let v: serde_json::Value = serde_json::from_slice(buf).unwrap();
                black_box(&v);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("serde_json_struct", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let v: PingRef<'_> = serde_json::from_slice(buf).unwrap();
                black_box(&v);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("post_parse");
    g.throughput(Throughput::Bytes(post.len() as u64));
    g.bench_function("gavel_parse_post", |b| {
        b.iter_batched_ref(
            || post.clone(),
            |buf| {
                let p = parse_post(buf, black_box(NOW_MS)).unwrap();
                black_box(&p);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("simd_json_borrowed", |b| {
        b.iter_batched_ref(
            || post.clone(),
            |buf| {
                let v = simd_json::to_borrowed_value(buf).unwrap();
                black_box(&v);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_ping
}
criterion_main!(benches);
