//! What the ownership checks add to each request (issue #21): finding the route's view rule,
//! finding the caller's seller, and taking (then giving back) the seller's limits.
//!
//! What it measures:
//!
//! - `route/ping` and `route/last_route`: [`gavel::api::routes::find`] for `POST /v1/ping` (near
//!   the top of the table) and for `GET /v1/admin/audit` (its last row), the one lookup of a
//!   request's route (its handler, scopes and view rule, which `views::admit` then reads from
//!   the request without another lookup);
//! - `seller_get/1000_sellers`: [`gavel::parties::Sellers::get`] in a table of 1,000 sellers of
//!   one tenant, the lookup a seller's ping, post and one-call lead make;
//! - `seller_limits/admit_and_release`: one ping of the seller's rate, a running-auction slot and
//!   an unposted slot taken and dropped, what a seller's ping holds on shared atomics.
//!
//! Why it matters: each runs on a core's event loop for every request of its kind; together they
//! are the whole per-request cost of who-owns-what besides the bid token's seller tag (measured
//! in the `bid_token` bench).
//!
//! Run with: `cargo bench --bench parties`
//!
//! Results: the measured figures, with machine, commit and date, live in docs/benchmarks.md
//! ("Issue #21").

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use gavel::api::routes::{find, Found};
use gavel::config::{Config, Tenant};
use gavel::limits::SellerLimits;
use gavel::parties::Sellers;

fn sellers(n: usize) -> Sellers {
    let mut text = String::new();
    for i in 0..n {
        text += &format!("[[sellers]]\nid = \"seller-{i:04}\"\ntenant = \"production\"\n");
    }
    Sellers::from_config(&Config::parse("bench.toml", &text).expect("bench config parses"))
}

fn bench(c: &mut Criterion) {
    let found = |method: &str, path: &str| matches!(find(method, path), Found::Route(..));
    c.bench_function("route/ping", |b| {
        b.iter(|| black_box(found(black_box("POST"), black_box("/v1/ping"))))
    });
    c.bench_function("route/last_route", |b| {
        b.iter(|| black_box(found(black_box("GET"), black_box("/v1/admin/audit"))))
    });
    let table = sellers(1_000);
    c.bench_function("seller_get/1000_sellers", |b| {
        b.iter(|| black_box(table.get(Tenant::Production, black_box("seller-0500"))))
    });
    let limits = Arc::new(SellerLimits::new(1e9, u32::MAX, u32::MAX));
    c.bench_function("seller_limits/admit_and_release", |b| {
        b.iter(|| {
            let rate = limits.pings.acquire();
            let running = limits.auctions.try_acquire();
            let unposted = limits.reserve_unposted();
            black_box((rate, running.is_some(), unposted.is_some()))
        })
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
