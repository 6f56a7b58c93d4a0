//! Buyer eligibility: which of the configured buyers a ping may be sent to.
//!
//! What it measures: [`gavel::buyers::Registry::eligibility`] for one sandbox ping against
//! registries of 10, 100 and 1,000 buyers built with `Registry::from_config`. The buyers carry a
//! realistic mix of filters (verticals, states, zip3 allow and deny lists, a minimum AI quality
//! score, TCPA consent, source allow and deny lists), drawn from a seeded RNG so every run builds
//! the same registry; about one buyer in ten belongs to the production tenant and one in
//! twenty-five is disabled, so the tenant and enabled checks are exercised too. `max_buyers` is
//! `usize::MAX`, so no buyer is capped and every buyer of the tenant is checked. The
//! `eligibility_all_filters` group repeats 100 and 1,000 buyers where every buyer also carries
//! filters on the optional ping fields (sub-vertical, insured, vehicle count, age band) and one to
//! four attribute rules (`eq`, `in`, `not_in`, `range`, `exists`). Building the
//! registry is not timed. Throughput is reported in buyers checked per second.
//!
//! Why it matters: eligibility runs once per ping on the core that owns the auction, before the
//! fan-out; it scales with the number of configured buyers, not with the number pinged.
//!
//! Run with: `cargo bench --bench eligibility`
//!
//! Results (placeholder: the measured figures, with machine, commit and date, live in the
//! `eligibility` table of docs/benchmarks.md, so they are not copied here to go stale):
//!
//! | Benchmark | Median [95 % CI] |
//! |---|---|
//! | `eligibility/10` | see docs/benchmarks.md |
//! | `eligibility/100` | see docs/benchmarks.md |
//! | `eligibility/1000` | see docs/benchmarks.md |
//! | `eligibility_all_filters/100` | see docs/benchmarks.md |
//! | `eligibility_all_filters/1000` | see docs/benchmarks.md |

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gavel::buyers::Registry;
use gavel::config::{
    AttributeOp, AttributeRule, BuyerConfig, BuyerFilters, CountRange, FilterValue, Tenant,
};
use gavel::model::{Ping, Scalar};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 3] = [10, 100, 1_000];
/// Registry sizes of the group with every filter kind in use.
const ALL_FILTER_SIZES: [usize; 2] = [100, 1_000];
const AGE_BANDS: [&str; 6] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];

const VERTICALS: [&str; 6] = [
    "auto_insurance",
    "home_insurance",
    "health_insurance",
    "life_insurance",
    "solar",
    "mortgage",
];
const STATES: [&str; 20] = [
    "TX", "CA", "FL", "NY", "IL", "PA", "OH", "GA", "NC", "MI", "NJ", "VA", "WA", "AZ", "MA", "TN",
    "IN", "MO", "MD", "CO",
];
const SOURCES: [&str; 6] = [
    "google_ads",
    "facebook_ads",
    "bing_ads",
    "tiktok_ads",
    "organic",
    "affiliate",
];

/// The ping every size is checked against: the e2e suite's auto-insurance ping from Houston.
fn ping() -> Ping {
    Ping {
        auction_id: Some("auc_01JXZ3N6M2Q8W5D4R7T9V0B1C2".into()),
        vertical: "auto_insurance".into(),
        sub_vertical: Some("non_standard".into()),
        state: "TX".into(),
        zip3: "770".into(),
        source: "google_ads".into(),
        tcpa_consent: true,
        trustedform_cert_url: Some(
            "https://cert.trustedform.com/2f9c3a7e5b1d4c8fa0e6b7d9c1f3a5e7b9d2c4f6".into(),
        ),
        ai_quality_score: Some(0.84),
        currently_insured: Some(true),
        vehicle_count: Some(2),
        driver_age_band: Some("35-44".into()),
        attributes: vec![
            ("credit_rating".into(), Scalar::Str("good".into())),
            ("homeowner".into(), Scalar::Bool(true)),
            ("fico".into(), Scalar::Int(710)),
            ("months_insured".into(), Scalar::Int(18)),
            ("prior_claims".into(), Scalar::Str("0".into())),
        ],
        expires_at_ms: None,
    }
}

/// `k` distinct entries of `from`, owned.
fn pick(rng: &mut ChaCha8Rng, from: &[&str], k: usize) -> Vec<String> {
    from.choose_multiple(rng, k)
        .map(|s| (*s).to_owned())
        .collect()
}

/// `k` random zip3 prefixes; around Houston (770-779) often enough that the lists matter.
fn zip3s(rng: &mut ChaCha8Rng, k: usize) -> Vec<String> {
    (0..k)
        .map(|_| {
            let n: u32 = if rng.gen_bool(0.3) {
                rng.gen_range(770..780)
            } else {
                rng.gen_range(10..1000)
            };
            format!("{n:03}")
        })
        .collect()
}

/// One buyer's filters: most buyers restrict vertical and state, some keep zip3 lists, a quality
/// floor or source lists, most require TCPA consent.
fn filters(rng: &mut ChaCha8Rng) -> BuyerFilters {
    let verticals = match rng.gen_range(0..10) {
        0 => Vec::new(),
        1..=5 => vec!["auto_insurance".to_owned()],
        n => pick(rng, &VERTICALS, 1 + n % 3),
    };
    let states = if rng.gen_bool(0.2) {
        Vec::new()
    } else {
        let k = rng.gen_range(1..=STATES.len());
        pick(rng, &STATES, k)
    };
    let zip3_allow = if rng.gen_bool(0.25) {
        let k = rng.gen_range(5..=60);
        zip3s(rng, k)
    } else {
        Vec::new()
    };
    let zip3_deny = if rng.gen_bool(0.3) {
        let k = rng.gen_range(1..=15);
        zip3s(rng, k)
    } else {
        Vec::new()
    };
    let min_ai_quality_score = rng
        .gen_bool(0.4)
        .then(|| f64::from(rng.gen_range(30..95u32)) / 100.0);
    let tcpa_consent_required = rng.gen_bool(0.8);
    let sources_allow = if rng.gen_bool(0.3) {
        let k = rng.gen_range(1..=4);
        pick(rng, &SOURCES, k)
    } else {
        Vec::new()
    };
    let sources_deny = if rng.gen_bool(0.2) {
        let k = rng.gen_range(1..=2);
        pick(rng, &SOURCES, k)
    } else {
        Vec::new()
    };
    BuyerFilters {
        verticals,
        states,
        zip3_allow,
        zip3_deny,
        min_ai_quality_score,
        tcpa_consent_required,
        sources_allow,
        sources_deny,
        ..BuyerFilters::default()
    }
}

/// The filters on the optional ping fields and the attribute rules, added to `f` for the
/// `eligibility_all_filters` group: every buyer carries some, most carry two or three rules, so a
/// check runs the whole chain for the buyers that pass the older filters.
fn ping_field_filters(rng: &mut ChaCha8Rng, f: &mut BuyerFilters) {
    if rng.gen_bool(0.5) {
        f.sub_verticals = pick(rng, &["standard", "non_standard", "high_risk"], 2);
    }
    if rng.gen_bool(0.5) {
        f.currently_insured = Some(rng.gen_bool(0.8));
    }
    if rng.gen_bool(0.5) {
        f.vehicle_count = Some(CountRange {
            min: Some(rng.gen_range(0..=2)),
            max: Some(rng.gen_range(2..=6)),
        });
    }
    if rng.gen_bool(0.5) {
        let k = rng.gen_range(2..=5);
        f.driver_age_bands = pick(rng, &AGE_BANDS, k);
    }
    let s = |v: &str| FilterValue::Str(v.to_owned());
    let mut rules = vec![
        AttributeRule {
            values: vec![s("good"), s("excellent")],
            ..AttributeRule::new("credit_rating", AttributeOp::In)
        },
        AttributeRule {
            min: Some(f64::from(rng.gen_range(550..720u32))),
            max: Some(850.0),
            ..AttributeRule::new("fico", AttributeOp::Range)
        },
        AttributeRule {
            value: Some(FilterValue::Bool(true)),
            ..AttributeRule::new("homeowner", AttributeOp::Eq)
        },
        AttributeRule {
            values: vec![s("2"), s("3+")],
            ..AttributeRule::new("prior_claims", AttributeOp::NotIn)
        },
        AttributeRule::new("months_insured", AttributeOp::Exists),
    ];
    rules.shuffle(rng);
    rules.truncate(rng.gen_range(1..=4));
    f.attributes = rules;
}

fn buyers(n: usize, seed: u64, all_filters: bool) -> Vec<BuyerConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| BuyerConfig {
            id: format!("buyer_{i:04}"),
            tenant: if rng.gen_bool(0.1) {
                Tenant::Production
            } else {
                Tenant::Sandbox
            },
            ping_url: format!("http://10.0.{}.{}:8080/ping", i / 250, i % 250 + 1),
            post_url: format!("http://10.0.{}.{}:8080/post", i / 250, i % 250 + 1),
            auth_header: None,
            enabled: !rng.gen_bool(0.04),
            filters: {
                let mut f = filters(&mut rng);
                if all_filters {
                    ping_field_filters(&mut rng, &mut f);
                }
                f
            },
            floor: u64::from(rng.gen_range(0..=2000u32)),
            ping_timeout_ms: 1_500,
            post_timeout_ms: 800,
            max_pings_per_s: None,
            tls: None,
            fixed_price: None,
            ping_format: None,
            post_format: None,
        })
        .collect()
}

fn bench_eligibility(c: &mut Criterion) {
    group(c, "eligibility", &SIZES, false);
    group(c, "eligibility_all_filters", &ALL_FILTER_SIZES, true);
}

fn group(c: &mut Criterion, name: &str, sizes: &[usize], all_filters: bool) {
    let ping = ping();
    let mut g = c.benchmark_group(name);
    for &n in sizes {
        let configs = buyers(n, 42, all_filters);
        if all_filters {
            // The same checks `gavel check-config` runs, so the bench measures valid rules.
            let mut cfg: gavel::config::Config =
                gavel::config::Config::parse("bench.toml", "").expect("empty config parses");
            cfg.buyers = configs.clone();
            cfg.validate("bench.toml").expect("bench filters are valid");
        }
        let registry = Registry::from_config(&configs, 100.0).expect("bench buyers are valid");
        let e = registry.eligibility(&ping, Tenant::Sandbox, usize::MAX);
        eprintln!(
            "{name}/{n}: {} eligible, {} filtered, {} capped",
            e.eligible.len(),
            e.filtered.len(),
            e.capped.len()
        );
        assert!(e.capped.is_empty());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &registry, |b, r| {
            b.iter(|| r.eligibility(black_box(&ping), black_box(Tenant::Sandbox), usize::MAX))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_eligibility
}
criterion_main!(benches);
