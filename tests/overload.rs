//! Issue #13, overload: a core that already works on as much as it may sheds the excess at once
//! with 503 `overloaded` and `Retry-After`, through the real server on one core, under both
//! drivers. The admitted requests complete normally, the shed counter matches the 503s the
//! clients saw, the operations endpoints still answer, and a shed keyed request leaves nothing
//! under its key, so its retry runs.
//!
//! The overload here is the in-flight cap (`server.max_in_flight_requests_per_core`) with slow
//! sandbox buyers: deterministic on any machine. The loop-lag and queue-delay signals need a
//! saturated CPU, which a test cannot make on purpose; their decision is unit-tested in
//! `runtime::admission`, and the queue-delay limit is set to its maximum here so that a busy
//! test machine cannot shed anything else. No assertion is about speed beyond "the 503s came
//! back while the admitted auctions were still waiting for their buyer".
// Test threads are not event loops: sleeping in them is how tests wait.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;

/// How long the sandbox buyer takes to answer a ping: far longer than a shed takes.
const BUYER_LATENCY_MS: u64 = 1_500;

fn slow_env(driver: Driver, max_in_flight: usize) -> Env {
    let mut buyer = fixed("slow", 20.0);
    buyer.latency_ms_min = BUYER_LATENCY_MS;
    buyer.latency_ms_max = BUYER_LATENCY_MS;
    Env::start(driver, vec![buyer], |cfg, _| {
        cfg.server.cores = 1;
        cfg.server.max_in_flight_requests_per_core = max_in_flight;
        cfg.server.max_queue_delay_ms = gavel::config::MAX_WINDOW_MS;
        cfg.auction.window_ms = 4_000;
        for b in &mut cfg.buyers {
            b.ping_timeout_ms = 4_000;
        }
    })
}

/// The sum of `gavel_requests_shed_total` samples with `reason="{reason}"`.
fn shed(scrape: &str, reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with("gavel_requests_shed_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn assert_overloaded(r: &Resp) {
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.error_code(), "overloaded", "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert!(r.header("x-request-id").is_some());
    let message = r.json["message"].as_str().unwrap_or("");
    assert!(message.contains("retry after 1 s"), "{message}");
}

#[test]
fn pings_past_the_in_flight_cap_get_503_with_retry_after_at_once() {
    const CAP: usize = 3;
    const SENT: usize = 10;
    for driver in drivers() {
        let env = slow_env(driver, CAP);
        let start = Barrier::new(SENT);
        let answers: Vec<(Resp, Duration)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..SENT)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let sent = Instant::now();
                        let r = env.ping(&ping_body());
                        (r, sent.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        let (ok, refused): (Vec<_>, Vec<_>) = answers.iter().partition(|(r, _)| r.status == 200);
        assert_eq!(
            ok.len() + refused.len(),
            SENT,
            "{driver:?}: only 200s and 503s"
        );
        assert!(ok.len() >= CAP, "{driver:?}: at least the cap is admitted");
        assert!(!refused.is_empty(), "{driver:?}: something is shed");
        for (r, _) in &ok {
            assert_eq!(r.json["status"], "won", "{driver:?}: {}", r.text);
            assert!(r.json["bid"]["bid_token"].is_string(), "{}", r.text);
        }
        for (r, _) in &refused {
            assert_overloaded(r);
        }
        // Shed at once: every 503 came back before the first admitted auction, which waits
        // for its buyer, had its answer.
        let first_ok = ok.iter().map(|(_, t)| *t).min().unwrap();
        let last_refused = refused.iter().map(|(_, t)| *t).max().unwrap();
        assert!(
            last_refused < first_ok,
            "{driver:?}: a 503 took {last_refused:?}, the first 200 {first_ok:?}"
        );

        // The counters tell the operator what the clients saw.
        let text = env.scrape();
        assert_eq!(shed(&text, "in_flight"), refused.len() as u64, "{driver:?}");
        for other in ["loop_lag", "queue_delay", "inbox_full"] {
            assert_eq!(shed(&text, other), 0, "{driver:?}: {other}");
        }
        assert_eq!(
            env.metric_sum("gavel_http_requests_total{endpoint=\"/v1/ping\",status=\"503\"}"),
            refused.len() as u64,
            "{driver:?}"
        );
        assert_eq!(env.metric_sum("gavel_core_in_flight_requests"), 0);
        assert!(text.contains("gavel_core_loop_lag_max_seconds{core=\"0\"}"));
        assert!(text.contains("gavel_loop_lag_seconds_count"));

        // Once the admitted auctions are done, the core takes new work again.
        let again = env.ping(&ping_body());
        assert_eq!(again.status, 200, "{driver:?}: {}", again.text);
    }
}

#[test]
fn a_full_core_still_answers_health_and_metrics() {
    let env = slow_env(Driver::Legacy, 1);
    std::thread::scope(|s| {
        let busy = s.spawn(|| env.ping(&ping_body()));
        wait_in_flight(&env, 1);
        assert_overloaded(&env.ping(&ping_body()));
        assert_eq!(env.get("/healthz", None).status, 200);
        assert_eq!(env.get("/readyz", None).status, 200);
        assert_eq!(env.scrape_resp().status, 200);
        assert_eq!(busy.join().unwrap().status, 200);
    });
}

#[test]
fn a_shed_keyed_ping_keeps_nothing_under_its_key_and_its_retry_runs() {
    for driver in drivers() {
        let env = slow_env(driver, 1);
        let body = ping_body().to_string();
        let keyed = || {
            env.post_with(
                "/v1/ping",
                Some(TOKEN),
                &body,
                &[("Idempotency-Key", "overload-retry-1")],
            )
        };
        std::thread::scope(|s| {
            let busy = s.spawn(|| env.ping(&ping_body()));
            wait_in_flight(&env, 1);
            let shed = keyed();
            assert_overloaded(&shed);
            assert_eq!(shed.header("idempotent-replayed"), None);
            assert_eq!(busy.join().unwrap().status, 200, "{driver:?}");
        });
        // The retry runs the auction: the 503 was not kept under the key.
        let retry = keyed();
        assert_eq!(retry.status, 200, "{driver:?}: {}", retry.text);
        assert_eq!(retry.header("idempotent-replayed"), None, "{driver:?}");
        assert_eq!(retry.json["status"], "won");
        // And its answer is what the key keeps from now on.
        let replay = keyed();
        assert_eq!(replay.status, 200, "{driver:?}");
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.json["auction_id"], retry.json["auction_id"]);
    }
}

/// Waits (scraping the operations listener, which is never shed) until the core works on `n`
/// requests.
fn wait_in_flight(env: &Env, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.metric_sum("gavel_core_in_flight_requests") != n {
        assert!(
            Instant::now() < deadline,
            "the core never had {n} in flight"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
