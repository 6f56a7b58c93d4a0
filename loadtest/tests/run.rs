//! End to end: spawn 3 mock buyers and Gavel in-process, run `ping-post` at 100/s for 2 s after a
//! 0.5 s warm-up, and reconcile the generator's counts with the server's own `/metrics` counters.
//!
//! Counting rule under test: every scheduled ping is counted exactly once, in `warmup` (scheduled
//! before the warm-up ended) or in `measured`, so warm-up + measured = what the server received.

use std::time::Duration;

use gavel_load::cli::Scenario;
use gavel_load::client::{blocking_get, metric_sum};
use gavel_load::run::RunConfig;
use gavel_load::schedule::Arrival;
use gavel_load::spawn::SpawnConfig;

/// The spawned server's operations listener: its counters need no token there, and a scrape is
/// not counted as a request.
fn ops_addr(spawned: &gavel_load::spawn::Spawned) -> std::net::SocketAddr {
    spawned
        .server
        .as_ref()
        .expect("server spawned")
        .metrics_addr
        .expect("the spawned server has an operations listener")
}

fn server_count(text: &str, endpoint: &str, status: Option<u16>) -> u64 {
    let ep = format!("endpoint=\"{endpoint}\"");
    match status {
        Some(s) => {
            let st = format!("status=\"{s}\"");
            metric_sum(text, "gavel_http_requests_total", &[&ep, &st])
        }
        None => metric_sum(text, "gavel_http_requests_total", &[&ep]),
    }
}

#[test]
fn ping_post_counts_match_the_servers_counters() {
    let spawned = gavel_load::spawn::start(&SpawnConfig {
        buyers: 3,
        buyer_latency_ms: (1, 3),
        buyer_post_latency_ms: (1, 2),
        bid_rate: 0.7,
        post_accept: 0.95,
        buyer_threads: 1,
        buyers_process: false,
        seed: 5,
        server: true,
        server_cores: 2,
        server_driver: gavel::config::Driver::Auto,
        // A debug build on a busy machine runs late; these tests count answers, not shedding.
        server_max_queue_delay_ms: gavel::config::MAX_WINDOW_MS,
        durable: true,
        webhooks: false,
        server_tls: false,
        buyers_tls: false,
    })
    .expect("fleet and server start");
    let server = ops_addr(&spawned);
    let cfg = RunConfig {
        base_url: spawned.base_url.clone().unwrap(),
        token: spawned.token.clone(),
        scenario: Scenario::PingPost,
        arrival: Arrival::Fixed,
        rate: 100.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        connections: 16,
        cores: 2,
        seed: 1,
        verticals: vec!["auto_insurance".into()],
        states: vec!["TX".into(), "CA".into(), "NY".into()],
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(5),
        intervals: true,
    };
    let driver = gavel_load::app::generator_driver();
    // The operator's report holds the exchange-wide series; the seller's only its own.
    let report_token = spawned.report_token.clone();
    let view = |d| gavel_load::server_view::fetch(&cfg.base_url, report_token.as_deref(), d);
    let before = view(driver).expect("latency report before the run");
    let stats = gavel_load::run::run(&cfg, driver).expect("run");
    let (status, metrics) = blocking_get(server, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    let after = view(driver).expect("latency report after the run");
    let window = gavel_load::server_view::window(&before, &after).expect("window");
    let own = gavel_load::server_view::fetch(&cfg.base_url, cfg.token.as_deref(), driver)
        .expect("the seller's own latency report");
    spawned.stop();
    let mine: Vec<&str> = own.series.keys().map(String::as_str).collect();
    assert_eq!(
        mine,
        ["ping_duration", "post_duration"],
        "a seller sees its own series only"
    );
    assert_eq!(
        own.series["ping_duration"].len(),
        after.series["ping_duration"].len(),
        "the only seller's pings are all the exchange's"
    );

    let m = &stats.measured;
    let w = &stats.warmup;
    // Fixed schedule: exactly rate × (warm-up + duration) arrivals, split 50 / 200.
    assert_eq!(stats.sent, 250);
    assert_eq!(w.ping.count, 50);
    assert_eq!(m.ping.count, 200);
    assert_eq!(stats.unfinished, 0);

    let pings = w.ping.count + m.ping.count;
    assert_eq!(pings, server_count(&metrics, "/v1/ping", None), "{metrics}");
    let ok = |p: &gavel_load::report::Phase, s: u16| p.statuses.get(&s).copied().unwrap_or(0);
    assert_eq!(
        ok(&w.ping, 200) + ok(&m.ping, 200),
        server_count(&metrics, "/v1/ping", Some(200))
    );
    assert_eq!(m.ping.errors() + w.ping.errors(), 0, "{:?}", m.ping);
    // Gavel's own histograms saw every auction of the run once: one engine-overhead sample per ping.
    let series = |n: &str| window.get(n).expect(n).count;
    assert_eq!(series("engine_overhead"), pings);
    assert_eq!(series("auction_duration"), pings);

    // Every won ping was posted, and the server saw exactly those posts.
    let won = w.ping.outcomes.get("won").copied().unwrap_or(0)
        + m.ping.outcomes.get("won").copied().unwrap_or(0);
    assert!(won > 0);
    let posts = w.post.count + m.post.count;
    assert_eq!(posts, won);
    assert_eq!(posts, server_count(&metrics, "/v1/post", None));
    for s in [200, 201] {
        assert_eq!(
            ok(&w.post, s) + ok(&m.post, s),
            server_count(&metrics, "/v1/post", Some(s)),
            "post status {s}"
        );
    }
    // Outcomes add up: won + no_bid = pings; sold + unsold = posts; e2e mirrors post.
    let count = |p: &gavel_load::report::Phase, k: &str| p.outcomes.get(k).copied().unwrap_or(0);
    assert_eq!(
        count(&m.ping, "won") + count(&m.ping, "no_bid"),
        m.ping.count
    );
    assert_eq!(
        count(&m.post, "sold") + count(&m.post, "unsold"),
        m.post.count
    );
    assert_eq!(m.e2e.count, m.post.count);
    assert!(count(&m.post, "sold") > 0);
    // End-to-end latency includes the ping, so it is never below the post's alone.
    assert!(m.e2e.percentiles().p50 >= m.post.percentiles().p50);
    // Latency counts from the schedule: no ping answered faster than the fastest buyer (1 ms).
    assert!(m.ping.latency.min() >= 1_000);
    // The per-second interval histograms hold exactly the measured requests.
    let in_intervals =
        |p: &gavel_load::report::Phase| -> u64 { p.intervals.values().map(|h| h.len()).sum() };
    assert_eq!(in_intervals(&m.ping), m.ping.count);
    assert_eq!(in_intervals(&m.post), m.post.count);
    assert_eq!(in_intervals(&m.e2e), m.e2e.count);
    assert!(w.ping.intervals.is_empty());
    assert!(stats.started_at.is_some());
}

#[test]
fn healthz_scenario_needs_no_token() {
    let spawned = gavel_load::spawn::start(&SpawnConfig {
        buyers: 1,
        buyer_latency_ms: (1, 1),
        buyer_post_latency_ms: (1, 2),
        bid_rate: 0.5,
        post_accept: 1.0,
        buyer_threads: 1,
        buyers_process: false,
        seed: 1,
        server: true,
        server_cores: 1,
        server_driver: gavel::config::Driver::Legacy,
        server_max_queue_delay_ms: gavel::config::MAX_WINDOW_MS,
        durable: false,
        webhooks: false,
        server_tls: false,
        buyers_tls: false,
    })
    .expect("start");
    let cfg = RunConfig {
        base_url: spawned.base_url.clone().unwrap(),
        token: None,
        scenario: Scenario::Healthz,
        arrival: Arrival::Poisson,
        rate: 200.0,
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        connections: 4,
        cores: 1,
        seed: 3,
        verticals: vec!["auto_insurance".into()],
        states: vec!["TX".into()],
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        intervals: false,
    };
    let stats = gavel_load::run::run(&cfg, gavel_load::app::generator_driver()).expect("run");
    spawned.stop();
    let h = &stats.measured.healthz;
    assert!(h.count > 50, "{}", h.count);
    assert_eq!(h.statuses.get(&200).copied(), Some(h.count));
    assert_eq!(stats.sent, h.count);
    assert!(h.intervals.is_empty());
}

#[test]
fn leads_scenario_counts_match_the_servers_counters() {
    let spawned = gavel_load::spawn::start(&SpawnConfig {
        buyers: 2,
        buyer_latency_ms: (1, 2),
        buyer_post_latency_ms: (1, 1),
        bid_rate: 0.8,
        post_accept: 1.0,
        buyer_threads: 1,
        buyers_process: false,
        seed: 9,
        server: true,
        server_cores: 2,
        server_driver: gavel::config::Driver::Auto,
        // A debug build on a busy machine runs late; these tests count answers, not shedding.
        server_max_queue_delay_ms: gavel::config::MAX_WINDOW_MS,
        durable: true,
        webhooks: true,
        server_tls: false,
        buyers_tls: false,
    })
    .expect("start");
    let server = ops_addr(&spawned);
    // Run as an OAuth client: register one with the spawned admin token, then let gavel-load get
    // its access token through the client-credentials flow.
    let base = spawned.base_url.clone().unwrap();
    let driver = gavel_load::app::generator_driver();
    let (id, secret) = register_client(&base, spawned.token.as_deref().unwrap());
    let access = gavel_load::client::oauth_token(&base, &id, &secret, driver).expect("token");
    assert!(access.starts_with("gv_test_at_"));
    assert!(gavel_load::client::oauth_token(&base, &id, "wrong", driver)
        .unwrap_err()
        .contains("invalid_client"));
    let cfg = RunConfig {
        base_url: base,
        token: Some(access),
        scenario: Scenario::Leads,
        arrival: Arrival::Fixed,
        rate: 100.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        connections: 8,
        cores: 1,
        seed: 1,
        verticals: vec!["auto_insurance".into(), "solar".into()],
        states: vec!["TX".into(), "FL".into()],
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(5),
        intervals: false,
    };
    let stats = gavel_load::run::run(&cfg, gavel_load::app::generator_driver()).expect("run");
    let (_, metrics) = blocking_get(server, "/metrics").expect("GET /metrics");
    let hooks = spawned
        .sink
        .as_ref()
        .expect("--webhooks starts a sink")
        .finish(Duration::from_millis(500), Duration::from_secs(30));
    spawned.stop();
    let (m, w) = (&stats.measured.leads, &stats.warmup.leads);
    assert_eq!(stats.sent, 120);
    assert_eq!((w.count, m.count), (20, 100));
    assert_eq!(m.errors() + w.errors(), 0, "{m:?}");
    assert_eq!(m.count + w.count, server_count(&metrics, "/v1/leads", None));
    // Every answer is final: sold (201), or no_bid (200) when neither buyer bid.
    let status = |s: u16| {
        m.statuses.get(&s).copied().unwrap_or(0) + w.statuses.get(&s).copied().unwrap_or(0)
    };
    assert_eq!(status(201), server_count(&metrics, "/v1/leads", Some(201)));
    assert_eq!(status(200), server_count(&metrics, "/v1/leads", Some(200)));
    assert!(m.outcomes.get("sold").copied().unwrap_or(0) > 50, "{m:?}");
    let outcome = |k: &str| m.outcomes.get(k).copied().unwrap_or(0);
    assert_eq!(outcome("sold") + outcome("no_bid"), m.count);
    // One auction.closed per auction and one lead.posted per sale, each signed.
    assert_eq!(hooks.events, 120 + status(201), "{hooks:?}");
    assert_eq!(hooks.bad_signatures, 0);
    // The ping phases stay empty: one request per lead.
    assert_eq!(stats.measured.ping.count + stats.measured.post.count, 0);
}

/// Registers an OAuth client through the admin API; returns (client_id, client_secret).
fn register_client(base: &str, admin_token: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let body = r#"{"name":"load client","scopes":["ping","post"]}"#;
    let request = format!(
        "POST /v1/admin/clients HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin_token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    #[allow(
        clippy::disallowed_methods,
        reason = "a test thread, with a SocketAddr"
    )]
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    (
        json["client_id"].as_str().unwrap().to_string(),
        json["client_secret"].as_str().unwrap().to_string(),
    )
}

/// The whole command with `--spawn-server`: the JSON report carries the CPU of the measured
/// window by thread group, divided per auction and per request.
#[test]
fn report_has_cpu_per_auction_by_thread_group() {
    use clap::Parser;
    let args = gavel_load::cli::Args::try_parse_from([
        "gavel-load",
        "--spawn-server",
        "--server-max-queue-delay-ms",
        "5000",
        "--buyers",
        "2",
        "--buyer-latency-ms",
        "1..3",
        "--server-cores",
        "1",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--connections",
        "16",
    ])
    .expect("flags parse");
    let report = gavel_load::app::execute(&args).expect("run");
    let json = report.to_json();
    let cpu = &json["cpu"];
    assert!(cpu["window_s"].as_f64().unwrap() > 0.0, "{cpu}");
    assert_eq!(
        cpu["auctions"].as_u64(),
        Some(report.stats.measured.ping.count)
    );
    assert!(cpu["requests"].as_u64().unwrap() >= report.stats.measured.ping.count);
    for group in gavel_load::cpu::GROUPS {
        let g = &cpu["groups"][group];
        for field in ["cpu_s", "cpus", "us_per_auction", "us_per_request"] {
            let v = g[field].as_f64();
            assert!(v.is_some_and(|v| v >= 0.0), "{group}.{field}: {g}");
        }
    }
    // The server's cores answered every ping of the window: their time cannot be zero.
    assert!(
        cpu["groups"]["server_cores"]["cpu_s"].as_f64().unwrap() > 0.0,
        "{cpu}"
    );
    assert!(cpu["process"]["cpu_s"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(report.render().contains("server_cores"));
}

/// `--buyers-process`: the fleet runs as a child `gavel mock-buyers`, whose CPU is reported on its
/// own. Needs the `gavel` binary of the same profile (`cargo build --bin gavel`); without it the test says so and passes.
#[test]
fn buyers_process_reports_the_fleets_cpu_apart() {
    use clap::Parser;
    let exe = std::env::current_exe().unwrap();
    let has_gavel = exe.ancestors().skip(1).take(2).any(|d| {
        d.join(format!("gavel{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    });
    if !has_gavel {
        eprintln!("no gavel binary next to the tests: skipping (cargo build --bin gavel)");
        return;
    }
    let args = gavel_load::cli::Args::try_parse_from([
        "gavel-load",
        "--spawn-server",
        "--server-max-queue-delay-ms",
        "5000",
        "--buyers-process",
        "--buyers",
        "2",
        "--buyer-latency-ms",
        "1..3",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--warmup",
        "300ms",
    ])
    .expect("flags parse");
    let report = gavel_load::app::execute(&args).expect("run");
    assert_eq!(report.primary().errors(), 0);
    let cpu = &report.to_json()["cpu"];
    // Other tests of this binary run their own fleets in this process at the same time, so the
    // buyer_fleet group is not checked here.
    assert!(
        cpu["buyers_process"]["cpu_s"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{cpu}"
    );
    assert!(report.placement.summary.contains("child process"));
}

#[test]
fn a_run_over_tls_to_gavel_and_its_buyers_counts_like_a_plain_one() {
    // The spawned server serves https and its buyers do too, each with a certificate of the CA
    // the run generated: every ping and post of the generator and every buyer call is TLS.
    let spawned = gavel_load::spawn::start(&SpawnConfig {
        buyers: 2,
        buyer_latency_ms: (1, 3),
        buyer_post_latency_ms: (1, 2),
        bid_rate: 1.0,
        post_accept: 1.0,
        buyer_threads: 1,
        buyers_process: false,
        seed: 5,
        server: true,
        server_cores: 1,
        server_driver: gavel::config::Driver::Auto,
        server_max_queue_delay_ms: gavel::config::MAX_WINDOW_MS,
        durable: true,
        webhooks: false,
        server_tls: true,
        buyers_tls: true,
    })
    .expect("fleet and server start with TLS");
    let base_url = spawned.base_url.clone().unwrap();
    assert!(base_url.starts_with("https://"), "{base_url}");
    assert!(spawned
        .buyers_url
        .as_deref()
        .unwrap()
        .starts_with("https://"));
    let server = ops_addr(&spawned);
    let cfg = RunConfig {
        base_url,
        token: spawned.token.clone(),
        scenario: Scenario::PingPost,
        arrival: Arrival::Fixed,
        rate: 50.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        connections: 8,
        cores: 1,
        seed: 1,
        verticals: vec!["auto_insurance".into()],
        states: vec!["TX".into()],
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(5),
        intervals: false,
    };
    let stats = gavel_load::run::run(&cfg, gavel_load::app::generator_driver()).expect("run");
    let (status, metrics) = blocking_get(server, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    spawned.stop();
    let m = &stats.measured;
    assert_eq!(
        m.ping.errors() + stats.warmup.ping.errors(),
        0,
        "{:?}",
        m.ping
    );
    let pings = stats.warmup.ping.count + m.ping.count;
    assert_eq!(pings, 60);
    assert_eq!(
        pings,
        server_count(&metrics, "/v1/ping", Some(200)),
        "{metrics}"
    );
    // Every buyer bids and accepts: every auction was won through a TLS buyer call and sold.
    assert_eq!(m.ping.outcomes.get("won").copied(), Some(m.ping.count));
    assert_eq!(m.post.outcomes.get("sold").copied(), Some(m.post.count));
    assert_eq!(
        gavel_load::client::metric_sum(&metrics, "gavel_buyer_call_errors_total", &[]),
        0,
        "no buyer call failed its handshake"
    );
}
