//! What durability costs end to end: post latency (seller-observed, post sent → 201 received) with
//! each core's write-ahead log on (`store.durable = true`, the default: intent and outcome are synced
//! before the answer) versus off (the benchmark-only `store.durable = false`).
//!
//! A real Gavel (2 cores) and one sandbox buyer (1 ms ping latency, 0 ms post latency) run in this
//! process on loopback; one client sends ping → post flows one after another and times only the
//! post. Sequential flows show the per-request floor (each post waits for its own fsyncs; group
//! commit only helps when requests overlap). Results go in docs/benchmarks.md.
//!
//! Run with: `cargo bench --bench durability` (set `GAVEL_BENCH_FLOWS` to change the count).

// Bench threads are not event loops; blocking file access here only prepares temp directories.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use gavel::config::Config;
use gavel::sandbox::{MockBuyerConfig, MockFleet};
use hdrhistogram::Histogram;

const TOKEN: &str = "gv_test_bench_durability_000000000000000000";

fn config(durable: bool, dir: &std::path::Path, fleet: &gavel::sandbox::FleetHandle) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
cores = 2
pin_threads = false
[store]
path = "{path}"
durable = {durable}
[log]
level = "error"
[metrics]
listen = "off"
# The sandbox buyer listens on loopback.
[egress]
allow_private = ["127.0.0.0/8"]

# Measures durability, not the protective limits.
[limits]
client_requests_per_s = 1000000
seller_pings_per_s = 1000000
seller_max_unposted_auctions = 4294967295
buyer_pings_per_s = 1000000
[[tokens]]
client = "bench"
tenant = "sandbox"
sha256 = "{hash}"
scopes = ["ping", "post"]
[[buyers]]
id = "b"
tenant = "sandbox"
ping_url = "{ping}"
post_url = "{post}"
"#,
        path = dir.join("db").display(),
        hash = gavel::auth::sha256_hex(TOKEN),
        ping = fleet.ping_url("b"),
        post = fleet.post_url("b"),
    );
    let cfg = Config::parse("bench.toml", &text).unwrap();
    gavel::cli::check_config(&cfg, "bench.toml").unwrap();
    cfg
}

fn call(agent: &ureq::Agent, url: &str, body: &str) -> (u16, serde_json::Value) {
    let r = agent
        .post(url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(body);
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = r.status();
    (
        status,
        serde_json::from_str(&r.into_string().unwrap()).unwrap(),
    )
}

fn run(durable: bool, flows: usize) -> Histogram<u64> {
    let mut buyer = MockBuyerConfig::new("b");
    buyer.bid_probability = 1.0;
    buyer.price_min = 20.0;
    buyer.price_max = 20.0;
    buyer.latency_ms_min = 1;
    buyer.latency_ms_max = 1;
    buyer.post_latency_ms_min = 0;
    buyer.post_latency_ms_max = 0;
    buyer.post_accept_probability = 1.0;
    let fleet = MockFleet::start("127.0.0.1:0".parse().unwrap(), 1, vec![buyer], 1).unwrap();
    let dir =
        std::env::temp_dir().join(format!("gavel-bench-dur-{}-{durable}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = gavel::api::start(config(durable, &dir, &fleet)).unwrap();
    let base = format!("http://{}", server.addr);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let ping = r#"{"vertical":"auto_insurance","state":"TX","zip3":"770","source":"google_ads","tcpa_consent":true}"#;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let warmup = flows / 10;
    for i in 0..warmup + flows {
        let (_, p) = call(&agent, &format!("{base}/v1/ping"), ping);
        let post = serde_json::json!({
            "auction_id": p["auction_id"], "bid_token": p["bid"]["bid_token"],
            "lead": {"first_name": "Bench", "last_name": "Mark", "email": "bench@example.com",
                     "phone": "+15125550100",
                     "address": {"line1": "1 Main St", "city": "Houston", "state": "TX", "zip": "77001"},
                     "tcpa": {"consent_text": "ok", "consent_timestamp": "2026-01-01T00:00:00Z",
                              "ip_address": "192.0.2.1"}}
        })
        .to_string();
        let t0 = Instant::now();
        let (status, _) = call(&agent, &format!("{base}/v1/post"), &post);
        let us = t0.elapsed().as_micros() as u64;
        assert_eq!(status, 201);
        if i >= warmup {
            hist.record(us.max(1)).unwrap();
        }
    }
    server.stop();
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
    hist
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; do a tiny run then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let flows = std::env::var("GAVEL_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20 } else { 3000 });
    println!("post latency, seller-observed, {flows} sequential flows (µs)");
    println!("| store.durable | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|");
    for durable in [true, false] {
        let h = run(durable, flows);
        println!(
            "| {durable} | {} | {} | {} | {} | {} |",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}
