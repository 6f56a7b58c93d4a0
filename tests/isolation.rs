//! Keys, ids and capacity that belong to one caller stay with that caller (issue 12): one
//! idempotency key is decided on one core whatever the body says, seller-chosen auction ids are
//! scoped by tenant, one tenant's flood cannot take another's auction capacity, and auctions leave
//! memory on time without new traffic.

// Test threads sleep while a request is running; no core runs here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use gavel::config::Driver;
use gavel::runtime::owner_of;
use serde_json::json;

/// A buyer slow enough that a second request arrives while the first is still running.
fn slow(id: &str, ping_ms: u64, post_ms: u64) -> gavel::sandbox::MockBuyerConfig {
    let mut b = fixed(id, 30.0);
    b.latency_ms_min = ping_ms;
    b.latency_ms_max = ping_ms;
    b.post_latency_ms_min = post_ms;
    b.post_latency_ms_max = post_ms;
    b
}

/// Runs `first` on a thread, waits `lead`, runs `second` here, and returns both answers.
fn overlapping(
    first: impl FnOnce() -> Resp + Send,
    lead: Duration,
    second: impl FnOnce() -> Resp,
) -> (Resp, Resp) {
    std::thread::scope(|s| {
        let a = s.spawn(first);
        std::thread::sleep(lead);
        let b = second();
        (a.join().unwrap(), b)
    })
}

/// Regression: a ping with a key and an `auction_id` was decided on the id's core, the same key
/// without one on the key's core, so both could run at once.
fn one_ping_key_is_decided_on_one_core(driver: Driver) {
    let env = Env::start(driver, vec![slow("slow", 400, 1)], |_, _| {});
    let key = "isolation-ping-key";
    // An id owned by the other core than the key's, so the old routing split them.
    let id = (0..)
        .map(|n| format!("seller_order_{n}"))
        .find(|id| owner_of(id, 2) != owner_of(key, 2))
        .unwrap();
    let mut with_id = ping_body();
    with_id["auction_id"] = json!(id);
    let hdr = [("Idempotency-Key", key)];
    let (a, b) = overlapping(
        || env.post_with("/v1/ping", Some(TOKEN), &with_id.to_string(), &hdr),
        Duration::from_millis(100),
        || env.post_with("/v1/ping", Some(TOKEN), &ping_body().to_string(), &hdr),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["auction_id"], json!(id));
    assert_eq!(
        (b.status, b.error_code()),
        (409, "idempotency_in_flight"),
        "{}",
        b.text
    );
    let c = env.post_with("/v1/ping", Some(TOKEN), &ping_body().to_string(), &hdr);
    assert_eq!((c.status, c.error_code()), (422, "idempotency_key_reused"));
    assert_eq!(env.fleet.log().pings("slow"), 1, "only one auction ran");
}

/// The same for posts: one custom key on two auctions owned by different cores.
fn one_post_key_is_decided_on_one_core(driver: Driver) {
    let env = Env::start(driver, vec![slow("slow", 1, 400)], |_, _| {});
    // Seller-chosen ids, one owned by each core.
    let won: Vec<(String, String)> = (0..2)
        .map(|core| {
            let id = (0..)
                .map(|n| format!("post_key_order_{n}"))
                .find(|id| owner_of(id, 2) == core)
                .unwrap();
            let mut body = ping_body();
            body["auction_id"] = json!(id);
            let r = env.ping(&body);
            assert_eq!(r.json["status"], "won", "{}", r.text);
            (id, r.json["bid"]["bid_token"].as_str().unwrap().to_string())
        })
        .collect();
    let hdr = [("Idempotency-Key", "isolation-post-key")];
    let body = |i: usize| post_body(&won[i].0, &won[i].1).to_string();
    let (a, b) = overlapping(
        || env.post_with("/v1/post", Some(TOKEN), &body(0), &hdr),
        Duration::from_millis(100),
        || env.post_with("/v1/post", Some(TOKEN), &body(1), &hdr),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(
        (b.status, b.error_code()),
        (409, "idempotency_in_flight"),
        "{}",
        b.text
    );
    let c = env.post_with("/v1/post", Some(TOKEN), &body(1), &hdr);
    assert_eq!((c.status, c.error_code()), (422, "idempotency_key_reused"));
    assert_eq!(env.fleet.log().deliveries().len(), 1);
}

#[test]
fn an_idempotency_key_is_decided_on_one_core() {
    for d in drivers() {
        one_ping_key_is_decided_on_one_core(d);
        one_post_key_is_decided_on_one_core(d);
    }
}
