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

const SAND_BUYER: &str = "gv_test_isolation_buyer_sand_000000000000";
const LIVE_BUYER: &str = "gv_live_isolation_buyer_live_000000000000";

/// Regression: a sandbox ping with a seller-chosen id made the same id a 409 `auction_exists` for
/// production, telling a sandbox caller that a production id exists.
fn seller_ids_are_scoped_by_tenant(driver: Driver) {
    let mut env = Env::start(
        driver,
        vec![fixed("sand", 30.0), fixed("live", 20.0)],
        |cfg, _| {
            cfg.buyers[1].tenant = gavel::config::Tenant::Production;
            cfg.tokens
                .push(buyer_token("buyer-sand", "sand", SAND_BUYER));
            let mut live = buyer_token("buyer-live", "live", LIVE_BUYER);
            live.tenant = gavel::config::Tenant::Production;
            cfg.tokens.push(live);
        },
    );
    let id = "acme_order_000123";
    let mut body = ping_body();
    body["auction_id"] = json!(id);
    let body = body.to_string();
    let sandbox = env.post("/v1/ping", Some(TOKEN), &body);
    assert_eq!(sandbox.json["status"], "won", "{}", sandbox.text);
    let live = env.post("/v1/ping", Some(LIVE), &body);
    assert_eq!(live.status, 200, "no 409, no oracle: {}", live.text);
    assert_eq!(live.json["auction_id"], id);
    assert_eq!(live.json["status"], "won", "{}", live.text);
    // Each tenant's own repeat is refused, naming only its own auction.
    for token in [TOKEN, LIVE] {
        let again = env.post("/v1/ping", Some(token), &body);
        assert_eq!((again.status, again.error_code()), (409, "auction_exists"));
    }
    // Each tenant posts and reads its own auction under the one id, also after a restart; the
    // seller even reuses its own lead id in both tenants.
    let lead_uuid = "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2";
    for (token, r, buyer) in [(TOKEN, &sandbox, "sand"), (LIVE, &live, "live")] {
        let bid_token = r.json["bid"]["bid_token"].as_str().unwrap();
        let mut body = post_body(id, bid_token);
        body["lead"]["lead_uuid"] = json!(lead_uuid);
        let p = env.post("/v1/post", Some(token), &body.to_string());
        assert_eq!(p.status, 201, "{}", p.text);
        assert_eq!(p.json["lead_uuid"], lead_uuid);
        // The buyer knows the auction by an id Gavel minted for it, not the seller's own.
        let d = env.fleet.log().deliveries();
        assert!(d.iter().any(|d| d.buyer_id == buyer
            && d.auction_id.starts_with("auc_")
            && d.auction_id != id));
    }
    // Each tenant's buyer reports on its own lead under the one lead id.
    for token in [SAND_BUYER, LIVE_BUYER] {
        let r = env.post(
            &format!("/v1/leads/{lead_uuid}/status"),
            Some(token),
            &json!({"status": "contacted"}).to_string(),
        );
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json["previous_status"], "sold", "{}", r.text);
    }
    env.restart();
    for (token, tenant, buyer) in [
        (OPERATOR, "sandbox", "sand"),
        (LIVE_OPERATOR, "production", "live"),
    ] {
        let rec = env.get(&format!("/v1/auctions/{id}"), Some(token));
        assert_eq!(rec.status, 200, "{}", rec.text);
        assert_eq!(rec.json["tenant"], tenant, "{}", rec.text);
        assert_eq!(rec.json["winner"]["buyer_id"], buyer, "{}", rec.text);
        assert_eq!(rec.json["post"]["status"], "sold", "{}", rec.text);
    }
    assert_eq!(env.fleet.log().deliveries().len(), 2);
}

/// Regression: one cap for all tenants let sandbox traffic 503 production, and the 503 said
/// `Retry-After: 1` while the slots were held for minutes.
fn a_sandbox_flood_cannot_fill_production(driver: Driver) {
    let env = Env::start(
        driver,
        vec![fixed("sand", 30.0), fixed("live", 20.0)],
        |cfg, _| {
            cfg.buyers[1].tenant = gavel::config::Tenant::Production;
            cfg.auction.max_auctions_per_core = 3;
        },
    );
    // One keep-alive connection: every ping lands on one core, whose sandbox room fills up.
    let mut refused = None;
    for _ in 0..4 {
        let r = env.ping(&ping_body());
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.json["status"], "won", "{}", r.text);
    }
    let refused = refused.expect("the sandbox room on that core is full after 3 auctions");
    assert_eq!(refused.error_code(), "overloaded");
    // Won auctions stay postable for the bid's lifetime plus retention; the hint says so.
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let held_s = (env.config.bid_token.ttl_ms() + env.config.auction.retention_ms) / 1_000;
    assert!(
        retry_after > held_s / 2 && retry_after <= held_s + 1,
        "Retry-After {retry_after} s, auctions held ~{held_s} s"
    );
    // Production keeps all of its room on the same core.
    for _ in 0..3 {
        let r = env.post("/v1/ping", Some(LIVE), &ping_body().to_string());
        assert_eq!(r.json["status"], "won", "{}", r.text);
    }
}

/// Regression: eviction ran only when a new auction arrived, so an idle server held every
/// auction (and its memory) until traffic came back.
fn idle_auctions_expire_without_traffic(driver: Driver) {
    let env = Env::start_with_clock(
        driver,
        vec![fixed("a", 30.0)],
        |cfg, _| {
            cfg.auction.retention_ms = 100;
            cfg.bid_token.ttl_ms = Some(200);
        },
        manual_clock(),
    );
    for _ in 0..5 {
        assert_eq!(env.ping(&ping_body()).json["status"], "won");
    }
    assert_eq!(env.metric_sum("gavel_core_auctions_in_memory"), 5);
    // Only scrapes from here on: nothing that inserts an auction. The auctions are due 300 ms
    // (token lifetime plus retention) after they closed; the server's clock jumps past that, and
    // each core's eviction timer (monotonic, at most SHARD_EXPIRY_INTERVAL_MS) notices.
    env.jump_clock(1_000);
    wait_for_no_auctions_in_memory(&env);
    // Their records are still on disk for the record's retention.
    let id = env.ping(&ping_body()).json["auction_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.jump_clock(1_500);
    wait_for_no_auctions_in_memory(&env);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(TOKEN));
    assert_eq!(rec.status, 200, "{}", rec.text);
}

/// Waits (scraping, which inserts nothing) until no core holds an auction.
fn wait_for_no_auctions_in_memory(env: &Env) {
    let started = std::time::Instant::now();
    while env.metric_sum("gavel_core_auctions_in_memory") > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "auctions still held after {:?} idle",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn auction_ids_are_scoped_by_tenant() {
    for d in drivers() {
        seller_ids_are_scoped_by_tenant(d);
    }
}

#[test]
fn each_tenant_has_its_own_auction_room() {
    for d in drivers() {
        a_sandbox_flood_cannot_fill_production(d);
    }
}

#[test]
fn idle_auctions_leave_memory_on_a_timer() {
    for d in drivers() {
        idle_auctions_expire_without_traffic(d);
    }
}
