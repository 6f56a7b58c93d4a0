//! Metrics through the real server: exact counts after a scripted run, a Prometheus scrape that
//! `promtool` accepts (with the process and thread-group CPU counters), HDR histograms that round-trip from `/v1/metrics/latency`, and logs that
//! never carry a lead's PII.

// Test threads are not event loops: blocking waits and file reads are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use common::*;
use gavel::config::Driver;
use serde_json::json;

/// The value of one sample line, e.g. `name{a="b"}` → 3.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn scripted_run_counts_exactly() {
    let mut shy = fixed("shy", 10.0);
    shy.bid_probability = 0.0;
    let env = Env::start(Driver::Legacy, vec![fixed("hi", 30.0), shy], |cfg, _| {
        cfg.buyers[0].filters.verticals = vec!["auto_insurance".into()];
        cfg.buyers[1].filters.verticals = vec!["auto_insurance".into()];
    });
    let pings = 7;
    let mut won = Vec::new();
    for _ in 0..pings {
        let r = env.ping(&ping_body());
        assert_eq!(r.json["status"], "won");
        won.push((
            r.json["auction_id"].as_str().unwrap().to_string(),
            r.json["bid"]["bid_token"].as_str().unwrap().to_string(),
        ));
    }
    let mut mortgage = ping_body();
    mortgage["vertical"] = json!("mortgage");
    assert_eq!(
        env.ping(&mortgage).json["reject_reason"],
        "no_eligible_buyers"
    );
    assert_eq!(env.post("/v1/ping", None, "{}").status, 401);
    let posts = 3;
    for (id, token) in won.iter().take(posts) {
        assert_eq!(
            env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string())
                .status,
            201
        );
    }
    let (id, token) = &won[0];
    let replay = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let m = env.scrape();
    let ping_200 = (pings + 1) as f64;
    assert_eq!(
        sample(
            &m,
            r#"gavel_http_requests_total{endpoint="/v1/ping",status="200"}"#
        ),
        Some(ping_200),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_http_requests_total{endpoint="/v1/ping",status="401"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_http_requests_total{endpoint="/v1/post",status="201"}"#
        ),
        Some(posts as f64 + 1.0)
    );
    assert_eq!(
        sample(&m, "gavel_ping_duration_seconds_count"),
        Some(ping_200)
    );
    assert_eq!(
        sample(&m, "gavel_auction_duration_seconds_count"),
        Some(ping_200)
    );
    assert_eq!(
        sample(&m, "gavel_engine_overhead_seconds_count"),
        Some(ping_200)
    );
    assert_eq!(
        sample(&m, "gavel_post_duration_seconds_count"),
        Some(posts as f64)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_buyer_pings_total{buyer="hi",tenant="sandbox",outcome="bid"}"#
        ),
        Some(pings as f64)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_buyer_pings_total{buyer="shy",tenant="sandbox",outcome="no_bid"}"#
        ),
        Some(pings as f64)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_buyer_pings_total{buyer="hi",tenant="sandbox",outcome="filtered"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_buyer_pings_total{buyer="hi",tenant="sandbox",outcome="timeout"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"gavel_buyer_ping_rtt_seconds_count{buyer="hi",tenant="sandbox"}"#
        ),
        Some(pings as f64)
    );
    assert_eq!(
        sample(&m, r#"gavel_no_bid_total{reason="no_eligible_buyers"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"gavel_no_bid_total{reason="no_bids"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&m, "gavel_idempotent_replays_total"), Some(1.0));
    // Every ping that ran and every post that delivered made its records durable.
    let commits = sample(&m, "gavel_store_commits_total").unwrap();
    assert!(commits >= ping_200 + 2.0 * posts as f64, "{commits}");
    assert_eq!(
        sample(&m, "gavel_store_commit_duration_seconds_count"),
        Some(commits)
    );
}

#[test]
fn promtool_accepts_a_live_scrape() {
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("a", 20.0), fixed("b", 15.0)],
        |_, _| {},
    );
    for _ in 0..5 {
        let r = env.ping(&ping_body());
        let id = r.json["auction_id"].as_str().unwrap();
        let token = r.json["bid"]["bid_token"].as_str().unwrap();
        env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    }
    // The CPU counters come from a sampler thread that reads /proc once a second in ticks of
    // (normally) 10 ms, so keep auctions running until a refresh has seen the cores' time.
    let mut scrape = env.scrape_resp();
    for _ in 0..60 {
        let cores = sample(
            &scrape.text,
            r#"gavel_thread_cpu_seconds_total{group="cores"}"#,
        );
        if cores.is_some_and(|c| c > 0.0) {
            break;
        }
        env.ping(&ping_body());
        std::thread::sleep(std::time::Duration::from_millis(250));
        scrape = env.scrape_resp();
    }
    let process = sample(&scrape.text, "process_cpu_seconds_total").expect("process CPU");
    assert!(process > 0.0, "{}", scrape.text);
    let cores = sample(
        &scrape.text,
        r#"gavel_thread_cpu_seconds_total{group="cores"}"#,
    )
    .expect("cores CPU");
    assert!(cores > 0.0, "{}", scrape.text);
    for group in gavel::metrics::cpu::THREAD_GROUPS {
        let series = format!("gavel_thread_cpu_seconds_total{{group=\"{group}\"}}");
        assert!(
            sample(&scrape.text, &series).is_some_and(|v| v >= 0.0),
            "{series}"
        );
    }
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let Some(promtool) = gavel_testkit::require_tool("promtool", "GAVEL_REQUIRE_PROMTOOL") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        scrape.text
    );
}

#[test]
fn latency_histograms_round_trip() {
    let env = Env::start(Driver::Legacy, vec![fixed("a", 20.0)], |_, _| {});
    for _ in 0..20 {
        assert_eq!(env.ping(&ping_body()).status, 200);
    }
    assert_eq!(
        env.get("/v1/metrics/latency", None).status,
        401,
        "reports need a token"
    );
    // The operator: every series, with its tenant's buyers and sellers.
    let r = env.get("/v1/metrics/latency", Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    let series = r.json["series"].as_array().unwrap();
    let ping = series
        .iter()
        .find(|s| s["name"] == "ping_duration")
        .unwrap();
    for view in ["since_start", "last_60s"] {
        let v = &ping[view];
        assert_eq!(v["count"], 20, "{view}: {v}");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["hdr"].as_str().unwrap())
            .unwrap();
        let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut raw.as_slice())
            .unwrap();
        assert_eq!(h.len(), 20);
        for (q, key) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")] {
            assert_eq!(
                Some(h.value_at_quantile(q)),
                v[key].as_u64(),
                "{view} {key}"
            );
        }
        assert_eq!(Some(h.max()), v["max"].as_u64());
    }
    let rtt = series
        .iter()
        .find(|s| s["name"] == "buyer_ping_rtt" && s["labels"]["buyer"] == "a")
        .unwrap();
    assert_eq!(rtt["since_start"]["count"], 20);
    // The operator also sees its tenant's per-seller series: the one seller that pinged, with
    // every one of its pings.
    let own: Vec<&serde_json::Value> = series
        .iter()
        .filter(|s| s["name"] == "ping_duration" && s["labels"]["seller"].is_string())
        .collect();
    assert_eq!(own.len(), 1, "{}", r.text);
    assert_eq!(own[0]["since_start"]["count"], 20, "{}", r.text);
    assert_eq!(own[0]["labels"]["tenant"], "sandbox", "{}", r.text);
    // That seller's own report: exactly its two series, with the same labels and counts.
    let r = env.get("/v1/metrics/latency", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text);
    let mine = r.json["series"].as_array().unwrap();
    let names: Vec<&str> = mine.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ping_duration", "post_duration"], "{}", r.text);
    for s in mine {
        assert_eq!(s["labels"], own[0]["labels"], "{}", r.text);
    }
    assert_eq!(mine[0]["since_start"]["count"], 20, "{}", r.text);
    assert_eq!(mine[0]["last_60s"]["count"], 20, "{}", r.text);
}

#[test]
fn logs_carry_request_ids_and_no_pii() {
    // A real gavel process with debug JSON logs, driven through ping, post and a PII-laden ping.
    let dir = temp_dir("logs");
    let fleet = gavel::sandbox::MockFleet::start(
        "127.0.0.1:0".parse().unwrap(),
        3,
        vec![fixed("a", 20.0)],
        1,
    )
    .unwrap();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = 2\npin_threads = false\n[store]\npath = \"{}\"\n[log]\nlevel = \"debug\"\njson = true\n[metrics]\nlisten = \"127.0.0.1:0\"\n[egress]\nallow_private = [\"127.0.0.0/8\"]\n[[tokens]]\nclient = \"logs\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\nscopes = [\"ping\", \"post\", \"reports\"]\n[[buyers]]\nid = \"a\"\ntenant = \"sandbox\"\nping_url = \"{}\"\npost_url = \"{}\"\n",
        dir.join("db").display(),
        gavel::auth::sha256_hex(TOKEN),
        fleet.ping_url("a"),
        fleet.post_url("a")
    );
    let path = dir.join("gavel.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("GAVEL_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("gavel listening on ") {
                let _ = tx.send(addr.to_string());
            }
            lines.push(line);
        }
        lines
    });
    let base = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    let r = call(
        &base,
        "POST",
        "/v1/ping",
        Some(TOKEN),
        Some(&ping_body().to_string()),
        &[],
    );
    let id = r.json["auction_id"].as_str().unwrap();
    let token = r.json["bid"]["bid_token"].as_str().unwrap();
    let p = call(
        &base,
        "POST",
        "/v1/post",
        Some(TOKEN),
        Some(&post_body(id, token).to_string()),
        &[],
    );
    assert_eq!(p.status, 201);
    let mut bad = post_body(id, token);
    bad["lead"]["phone"] = json!("555-0182");
    call(
        &base,
        "POST",
        "/v1/post",
        Some(TOKEN),
        Some(&bad.to_string()),
        &[("Idempotency-Key", "other")],
    );
    let mut pii_ping = ping_body();
    pii_ping["email"] = json!("maria.lopez@example.com");
    pii_ping["first_name"] = json!("Maria");
    assert_eq!(
        call(
            &base,
            "POST",
            "/v1/ping",
            Some(TOKEN),
            Some(&pii_ping.to_string()),
            &[]
        )
        .status,
        422
    );
    // SIGTERM: a graceful stop flushes the log writer.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let requests: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"message\":\"request\""))
        .collect();
    assert!(requests.len() >= 4, "one JSON line per request: {lines:#?}");
    for l in &requests {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.to_string().contains("req_"),
            "request line without request_id: {l}"
        );
    }
    for l in &lines {
        for pii in PII.iter().chain(["555-0182"].iter()) {
            assert!(!l.contains(pii), "log line leaks {pii}: {l}");
        }
    }
}
