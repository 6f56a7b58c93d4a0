//! CONTRACT §7 rate limits through the real server on 2 cores: a client over its request rate gets
//! 429 with every header and a Retry-After that works, the aggregate over cores stays within 5 %
//! of the rate, a buyer never receives more pings per second than its limit (counted by the mock
//! buyer), and the concurrent-auction cap holds.
// Test threads are not event loops: sleeping in them is how tests wait.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;

/// Sends requests from `threads` threads until `for_how_long` has passed; returns the status
/// codes and the time from the first send to the last answer.
fn hammer(
    env: &Env,
    threads: usize,
    for_how_long: Duration,
    send: impl Fn(&Env) -> u16 + Sync,
) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while started.elapsed() < for_how_long {
                        out.push(send(env));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    (statuses, started.elapsed())
}

#[test]
fn client_over_its_rate_gets_429_with_headers() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        cfg.limits.client_requests_per_s = 20.0; // burst 1
        let live = cfg
            .tokens
            .iter_mut()
            .find(|t| t.client == "it-live")
            .unwrap();
        live.requests_per_s = Some(0.1);
    });
    let get = || env.get("/v1/auctions/auc_unknown", Some(TOKEN));
    // Two at once: the second is over the rate.
    let first = get();
    assert_eq!(first.status, 404, "{}", first.text);
    let limited = (0..5)
        .map(|_| get())
        .find(|r| r.status == 429)
        .expect("a 429");
    assert_eq!(limited.error_code(), "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("x-ratelimit-limit"), Some("20"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = limited
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now..=now + 2).contains(&reset), "reset {reset}, now {now}");
    assert!(limited.json["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    // Waiting as told is enough.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get().status, 404);
    // Another client has its own budget (here a per-token rate: 1 request per 10 s, so its
    // second request is refused), and 429s are counted on /metrics.
    assert_eq!(env.get("/v1/auctions/auc_unknown", Some(LIVE)).status, 404);
    let live = env.get("/v1/auctions/auc_unknown", Some(LIVE));
    assert_eq!(live.status, 429);
    assert_eq!(live.header("x-ratelimit-limit"), Some("0.1"));
    assert_eq!(live.header("retry-after"), Some("10"));
    let m = env.scrape();
    assert!(m.lines().any(|l| l.contains("status=\"429\"")), "{m}");
    assert!(
        m.lines().any(
            |l| l.starts_with("gavel_rate_limited_total{limit=\"client_requests\"}")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
}

#[test]
fn the_client_rate_holds_across_cores() {
    const RATE: f64 = 50.0;
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        cfg.server.cores = 2;
        cfg.limits.client_requests_per_s = RATE; // burst 2
    });
    // Fresh connections spread over both cores.
    let (statuses, took) = hammer(&env, 8, Duration::from_secs(2), |env| {
        let addr = env.server().addr;
        let req = format!(
            "GET /v1/auctions/auc_unknown HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(addr, req.as_bytes(), Duration::from_secs(5));
        answer[9..12].parse().unwrap()
    });
    let allowed = statuses.iter().filter(|s| **s == 404).count() as f64;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed as usize + limited, statuses.len(), "{statuses:?}");
    assert!(limited > 0, "the load exceeded the rate");
    let ceiling = RATE * took.as_secs_f64() * 1.05 + 2.0;
    assert!(
        allowed <= ceiling,
        "{allowed} allowed in {took:?} (ceiling {ceiling})"
    );
    assert!(
        allowed >= RATE * 1.5,
        "{allowed} allowed in {took:?}: the limit starved the client"
    );
    let per_core = |c: usize| {
        env.scrape()
            .lines()
            .find(|l| l.starts_with(&format!("gavel_core_requests_total{{core=\"{c}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        per_core(0) > 0 && per_core(1) > 0,
        "both cores took requests"
    );
}

#[test]
fn a_buyer_never_gets_more_pings_than_its_limit() {
    const LIMIT: f64 = 40.0;
    let env = Env::start(Driver::Legacy, vec![fixed("capped", 30.0)], |cfg, _| {
        cfg.server.cores = 2;
        cfg.buyers[0].max_pings_per_s = Some(LIMIT); // burst 2
    });
    let (statuses, took) = hammer(&env, 8, Duration::from_secs(2), |env| {
        call(
            &env.base,
            "POST",
            "/v1/ping",
            Some(TOKEN),
            Some(&ping_body().to_string()),
            &[],
        )
        .status
    });
    // Every ping was answered; a rate-limited buyer makes a no-bid, not an error.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let delivered = env.fleet.log().pings("capped") as f64;
    let ceiling = LIMIT * took.as_secs_f64() * 1.05 + 2.0;
    assert!(
        delivered <= ceiling,
        "{delivered} pings in {took:?} (ceiling {ceiling})"
    );
    assert!(
        statuses.len() as f64 > delivered * 1.5,
        "the load exceeded the limit"
    );
    // Not starved: the buyer got a fair share of what the limit allowed, or of the auctions that
    // ran when a loaded machine ran fewer than that. A quarter, because on a loaded machine the
    // eight senders fall into waves, and a wave gets only the burst (2) through, as it should.
    let allowed = (LIMIT * took.as_secs_f64()).min(statuses.len() as f64);
    assert!(
        delivered >= allowed / 4.0,
        "{delivered} pings of {} auctions in {took:?}: the limit starved the buyer",
        statuses.len()
    );
    // The skipped auctions say why.
    let m = env.scrape();
    assert!(
        m.lines()
            .any(|l| l.contains("outcome=\"rate_limited\"") && !l.ends_with(" 0")),
        "{m}"
    );
}

#[test]
fn the_concurrent_auction_cap_holds() {
    let mut slow = fixed("slow", 30.0);
    // Long enough that all six pings arrive while the first two auctions still run.
    slow.latency_ms_min = 1_000;
    slow.latency_ms_max = 1_000;
    let env = Env::start(Driver::Legacy, vec![slow], |cfg, _| {
        cfg.server.cores = 2;
        cfg.limits.seller_max_concurrent_auctions = 2;
    });
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| env.ping(&ping_body()).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ran = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ran, refused), (2, 4), "{statuses:?}");
    assert_eq!(
        env.metric_sum("gavel_rate_limited_total{limit=\"seller_concurrent_auctions\"}"),
        4
    );
    // Once they finish, the slots are free again.
    assert_eq!(env.ping(&ping_body()).status, 200);
}
