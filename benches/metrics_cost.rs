//! What recording metrics costs: ping throughput and latency with recording on (the default) and
//! off (`metrics.record = false`, a benchmark-only switch).
//!
//! A real Gavel (2 cores) and two sandbox buyers (0 ms latency, always bid) run in this process on
//! loopback. For each setting: 2,000 sequential pings from one client (latency percentiles), then
//! 8 client threads sending pings back to back for 5 s (closed-loop throughput). Load generator,
//! buyers and server share the machine, so the absolute figures are this machine's, and only the
//! on/off difference is the point. Results go in docs/benchmarks.md.
//!
//! Run with: `cargo bench --bench metrics_cost`

// Bench threads are not event loops; blocking here only prepares temp directories.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gavel::config::Config;
use gavel::sandbox::{MockBuyerConfig, MockFleet};
use hdrhistogram::Histogram;

const TOKEN: &str = "gv_test_bench_metrics_cost_000000000000000";
const PING: &str = r#"{"vertical":"auto_insurance","state":"TX","zip3":"770","source":"google_ads","tcpa_consent":true}"#;

fn ping(agent: &ureq::Agent, url: &str) {
    let r = agent
        .post(url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(PING)
        .expect("ping answers 200");
    let _ = r.into_string();
}

fn run(record: bool, sequential: usize, secs: u64) -> (Histogram<u64>, f64) {
    let buyers: Vec<MockBuyerConfig> = ["a", "b"]
        .iter()
        .map(|id| {
            let mut b = MockBuyerConfig::new(*id);
            b.bid_probability = 1.0;
            b.latency_ms_min = 0;
            b.latency_ms_max = 0;
            b
        })
        .collect();
    let fleet = MockFleet::start("127.0.0.1:0".parse().unwrap(), 1, buyers, 1).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "gavel-bench-metrics-{}-{record}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 2\npin_threads = false\n[store]\npath = \"{}\"\n[metrics]\nrecord = {record}\nlisten = \"off\"\n[egress]\nallow_private = [\"127.0.0.0/8\"]\n[log]\nlevel = \"error\"\n[limits]\nclient_requests_per_s = 1000000\nseller_pings_per_s = 1000000\nseller_max_unposted_auctions = 4294967295\nbuyer_pings_per_s = 1000000\n[[tokens]]\nclient = \"bench\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\nscopes = [\"ping\"]\n",
        dir.join("db").display(),
        gavel::auth::sha256_hex(TOKEN)
    );
    for id in ["a", "b"] {
        text.push_str(&format!(
            "[[buyers]]\nid = \"{id}\"\ntenant = \"sandbox\"\nping_url = \"{}\"\npost_url = \"{}\"\n",
            fleet.ping_url(id),
            fleet.post_url(id)
        ));
    }
    let cfg = Config::parse("bench.toml", &text).unwrap();
    gavel::cli::check_config(&cfg, "bench.toml").unwrap();
    let server = gavel::api::start(cfg).unwrap();
    let url = format!("http://{}/v1/ping", server.addr);

    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    for _ in 0..sequential / 10 {
        ping(&agent, &url);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..sequential {
        let t0 = Instant::now();
        ping(&agent, &url);
        hist.record((t0.elapsed().as_micros() as u64).max(1))
            .unwrap();
    }

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, done, stop) = (url.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    ping(&agent, &url);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let start_count = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let rate = (done.load(Ordering::Relaxed) - start_count) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    server.stop();
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
    (hist, rate)
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`; keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (sequential, secs) = if quick { (20, 1) } else { (2_000, 5) };
    println!("ping latency (µs, {sequential} sequential) and closed-loop throughput (8 clients, {secs} s)");
    println!("| metrics.record | p50 | p90 | p99 | p99.9 | max | pings/s |");
    println!("|---|---|---|---|---|---|---|");
    for record in [true, false, true, false] {
        let (h, rate) = run(record, sequential, secs);
        println!(
            "| {record} | {} | {} | {} | {} | {} | {rate:.0} |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}
