//! A client that hangs up changes nothing about the outcome of a state change (issue 12, finding 1):
//! posts, one-call leads and status reports whose client closes the socket right after sending run
//! to completion on their owning core, and a retry with the same key gets the stored answer.
//! Also: shutdown with a full hand-off inbox still stops every core.

// Test threads sleep between retries; no core runs here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;
use serde_json::json;

/// Flows per kind of request, spread over both cores by the kernel's SO_REUSEPORT hashing.
const FLOWS: usize = 40;
/// Threads sending them, so the suite does not wait on 40 sequential buyer round trips.
const THREADS: usize = 8;
/// Buyer's post latency: long enough that the hang-up lands while the delivery is running.
const POST_LATENCY_MS: u64 = 20;

const BUYER_TOKEN: &str = "gv_test_buyer_cancel_status_000000000000000";

/// Sends one HTTP/1.1 request on a fresh connection and closes it without reading anything.
fn send_and_hang_up(
    addr: SocketAddr,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &str,
    linger: Duration,
) {
    let mut s = TcpStream::connect(addr).unwrap();
    let key = key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: gavel\r\nAuthorization: Bearer {token}\r\n{key}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(linger);
    let _ = s.shutdown(Shutdown::Both);
}

/// Retries `send` until it stops answering "still running" (409 `*_in_flight`), and returns the
/// answer with how long it took. A generous bound proves the work does not hang; it is not a
/// latency figure.
fn until_settled(send: impl Fn() -> Resp, bound: Duration) -> (Resp, Duration) {
    let started = Instant::now();
    loop {
        let r = send();
        let running = r.status == 409 && r.error_code().ends_with("_in_flight");
        if !running {
            return (r, started.elapsed());
        }
        assert!(
            started.elapsed() < bound,
            "still {} after {:?}: the work was stranded by the hang-up",
            r.error_code(),
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn env(driver: Driver) -> Env {
    let mut buyer = fixed("slow_post", 30.0);
    buyer.post_latency_ms_min = POST_LATENCY_MS;
    buyer.post_latency_ms_max = POST_LATENCY_MS;
    Env::start(driver, vec![buyer], |cfg, _| {
        cfg.tokens
            .push(buyer_token("buyer-slow", "slow_post", BUYER_TOKEN));
    })
}

/// Runs `flow(i)` for every i in 0..FLOWS on THREADS threads and returns what each produced.
fn run_flows<T: Send>(flow: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let flow = &flow;
                s.spawn(move || (t..FLOWS).step_by(THREADS).map(flow).collect::<Vec<T>>())
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("flow thread"))
            .collect()
    })
}

fn budget(env: &Env) -> Duration {
    // The post budget plus slack for a loaded 2-vCPU machine.
    Duration::from_millis(env.config.post.budget_ms) + Duration::from_secs(5)
}

fn lead_call_body(i: usize) -> serde_json::Value {
    let mut body = ping_body();
    body["lead"] = post_body("unused", "unused")["lead"].clone();
    body["vehicle_count"] = json!(1 + i % 4);
    body
}

/// Exactly one delivery per auction, each under the auction's own post key.
fn assert_one_delivery_each(env: &Env, auctions: &[String]) {
    let deliveries = env.fleet.log().deliveries();
    for id in auctions {
        let to_it: Vec<_> = deliveries.iter().filter(|d| &d.auction_id == id).collect();
        assert_eq!(to_it.len(), 1, "auction {id}: {to_it:?}");
        assert_eq!(
            to_it[0].idempotency_key.as_deref(),
            Some(format!("post_{id}").as_str())
        );
        assert!(to_it[0].accepted, "{:?}", to_it[0]);
    }
}

fn hung_up_post_completes(driver: Driver) {
    let env = env(driver);
    let addr = env.server().addr;
    let auctions = run_flows(|i| {
        let r = env.ping(&ping_body());
        assert_eq!(r.json["status"], "won", "{}", r.text);
        let id = r.json["auction_id"].as_str().unwrap().to_string();
        let token = r.json["bid"]["bid_token"].as_str().unwrap();
        let body = post_body(&id, token).to_string();
        let key = format!("cancel-post-{i}");
        send_and_hang_up(addr, "/v1/post", TOKEN, Some(&key), &body, Duration::ZERO);
        let (r, _) = until_settled(
            || env.post_with("/v1/post", Some(TOKEN), &body, &[("Idempotency-Key", &key)]),
            budget(&env),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["status"], "sold");
        // Asking again gives the same stored answer.
        let again = env.post_with("/v1/post", Some(TOKEN), &body, &[("Idempotency-Key", &key)]);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json, r.json);
        let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
        assert_eq!(rec.json["post"]["status"], "sold", "{}", rec.text);
        id
    });
    assert_one_delivery_each(&env, &auctions);
}

fn hung_up_one_call_lead_completes(driver: Driver) {
    let env = env(driver);
    let addr = env.server().addr;
    let auctions = run_flows(|i| {
        let body = lead_call_body(i).to_string();
        let key = format!("cancel-lead-{i}");
        // Hang up a few milliseconds in, while buyers are being pinged or posted to.
        let linger = Duration::from_millis((i % 4 * 5) as u64);
        send_and_hang_up(addr, "/v1/leads", TOKEN, Some(&key), &body, linger);
        let (r, _) = until_settled(
            || {
                env.post_with(
                    "/v1/leads",
                    Some(TOKEN),
                    &body,
                    &[("Idempotency-Key", &key)],
                )
            },
            budget(&env),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let again = env.post_with(
            "/v1/leads",
            Some(TOKEN),
            &body,
            &[("Idempotency-Key", &key)],
        );
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json, r.json);
        r.json["auction_id"].as_str().unwrap().to_string()
    });
    let mut distinct = auctions.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), FLOWS, "one auction per key");
    assert_one_delivery_each(&env, &auctions);
    // Every auction the keyed calls created was pinged once: the hang-up started no second one.
    assert_eq!(env.fleet.log().pings("slow_post"), FLOWS as u64);
}

fn hung_up_status_report_completes(driver: Driver) {
    let env = env(driver);
    let addr = env.server().addr;
    run_flows(|i| {
        let r = env.post("/v1/leads", Some(TOKEN), &lead_call_body(i).to_string());
        assert_eq!(r.status, 201, "{}", r.text);
        let lead = r.json["lead_uuid"].as_str().unwrap().to_string();
        let path = format!("/v1/leads/{lead}/status");
        let body = json!({"status": "contacted", "reason": "called"}).to_string();
        send_and_hang_up(addr, &path, BUYER_TOKEN, None, &body, Duration::ZERO);
        let (r, _) = until_settled(|| env.post(&path, Some(BUYER_TOKEN), &body), budget(&env));
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json["status"], "contacted");
        // The hung-up report was applied (the retry is the no-op repeat), or the retry applied
        // it; either way exactly one change to contacted, after sold.
        let prev = r.json["previous_status"].as_str().unwrap();
        assert!(prev == "contacted" || prev == "sold", "{}", r.text);
        let next = env.post(
            &path,
            Some(BUYER_TOKEN),
            &json!({"status": "returned"}).to_string(),
        );
        assert_eq!(next.status, 202, "{}", next.text);
        assert_eq!(next.json["previous_status"], "contacted");
    });
}

/// A stop request reaches a core whose inbox is full (it used to be a job in that inbox, and was
/// dropped), so `stop` returns within the grace period instead of waiting forever.
fn shutdown_with_a_full_inbox(driver: Driver) {
    let mut env = Env::start(driver, vec![fixed("a", 5.0)], |cfg, _| {
        cfg.server.shutdown_grace_ms = 2_000;
    });
    let server = env.server.take().unwrap();
    let shared = server.shared.clone();
    // Keep core 1 busy (a test-only blocking job stands for a core with a long backlog), then
    // fill its inbox to the brim.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    assert!(shared.inboxes[1]
        .send(Box::new(move |_| {
            started_tx.send(()).unwrap();
            // The point: a core that is busy for a while.
            std::thread::sleep(Duration::from_millis(300));
        }))
        .is_ok());
    started_rx.recv().unwrap();
    let mut queued = 0;
    while shared.inboxes[1].send(Box::new(|_| {})).is_ok() {
        queued += 1;
    }
    assert!(queued > 0);
    drop(shared);
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_000 + 3_000),
        "stop took {took:?} with a full inbox"
    );
}

#[test]
fn hung_up_posts_run_to_completion() {
    for d in drivers() {
        hung_up_post_completes(d);
    }
}

#[test]
fn hung_up_one_call_leads_run_to_completion() {
    for d in drivers() {
        hung_up_one_call_lead_completes(d);
    }
}

#[test]
fn hung_up_status_reports_run_to_completion() {
    for d in drivers() {
        hung_up_status_report_completes(d);
    }
}

#[test]
fn shutdown_reaches_a_core_with_a_full_inbox() {
    for d in drivers() {
        shutdown_with_a_full_inbox(d);
    }
}
