//! End-to-end behaviour of ping and post through the real server on a real socket, with real
//! buyer endpoints on loopback. Every scenario runs under both io drivers (io_uring and epoll).
// Test threads are not event loops: sleeping in them is how tests wait.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;
use gavel::sandbox::{FailureMode, MockBuyerConfig, PostFailMode};
use serde_json::json;

use gavel_testkit::both_drivers;

both_drivers!(
    ping_wins_and_post_sells,
    no_bid_reasons,
    bids_expired_by_the_servers_clock_are_refused,
    hanging_and_trickling_buyers_do_not_hold_the_auction,
    broken_buyers_are_recorded_as_errors,
    bids_above_the_max_price_are_ignored,
    post_falls_back_to_next_bidder,
    bid_token_checks,
    ping_validation,
    post_validation_and_rules,
    auth_errors,
    limits_and_malformed_requests,
    cross_core_handoff,
    second_post_conflicts_and_replays,
    graceful_shutdown_finishes_in_flight_auction,
    post_retries_a_failing_buyer,
    seller_expires_at_shortens_the_window,
    unconfirmed_post_resumes_with_the_same_buyer,
    unreadable_post_answer_goes_to_nobody_else,
    idempotent_replay_and_key_reuse,
    concurrent_same_key_runs_once,
    records_and_replays_survive_restart,
    one_call_lead_sells_and_replays,
    one_call_lead_is_checked_before_any_buyer,
    one_call_lead_resumes_after_restart,
    buyers_report_lead_status,
    lead_status_history_is_bounded,
    buyer_host_names_resolve_off_the_core,
    buyer_filters_on_every_ping_field,
);

/// A `POST /v1/leads` body: the test ping's fields plus the test lead.
fn lead_call_body() -> serde_json::Value {
    let mut body = ping_body();
    body["lead"] = post_body("unused", "unused")["lead"].clone();
    body
}

fn won(env: &Env, body: &serde_json::Value) -> (String, String, f64) {
    let r = env.ping(body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    (
        r.json["auction_id"].as_str().unwrap().to_string(),
        r.json["bid"]["bid_token"].as_str().unwrap().to_string(),
        r.json["bid"]["amount"].as_f64().unwrap(),
    )
}

fn ping_wins_and_post_sells(driver: Driver) {
    let env = Env::start(
        driver,
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        |_, _| {},
    );
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let j = &r.json;
    assert_eq!(j["status"], "won");
    assert_eq!(j["buyers_pinged"], 2);
    assert_eq!(j["bids_received"], 2);
    // 30.00 minus the 10% margin.
    assert_eq!(j["bid"]["amount"].as_f64(), Some(27.0));
    assert!(
        r.text.contains("\"amount\":27.00"),
        "money has two decimals: {}",
        r.text
    );
    assert_eq!(j["bid"]["currency"], "USD");
    let id = j["auction_id"].as_str().unwrap();
    assert!(id.starts_with("auc_") && id.len() == 30, "{id}");
    let token = j["bid"]["bid_token"].as_str().unwrap();
    assert!(token.starts_with("bid_"));

    // What the buyer saw: the ping fields and id, an expires_at, the idempotency key, no PII.
    let seen = env.fleet.log().last_ping_body("hi").unwrap();
    assert_eq!(seen["auction_id"], id);
    assert_eq!(seen["state"], "TX");
    assert!(seen["expires_at"].as_str().unwrap().ends_with('Z'));
    let headers = env.fleet.log().ping_headers("hi").unwrap();
    assert!(headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("idempotency-key") && *v == format!("ping_{id}")));

    let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.json["status"], "sold");
    assert_eq!(p.json["auction_id"], id);
    assert_eq!(p.json["amount"].as_f64(), Some(27.0));
    assert!(p.json["lead_uuid"].as_str().unwrap().starts_with("ld_"));
    let buyer_lead_id = p.json["buyer_lead_id"].as_str().unwrap();
    let deliveries = env.fleet.log().deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].buyer_id, "hi");
    assert_eq!(
        deliveries[0].idempotency_key.as_deref(),
        Some(format!("post_{id}").as_str())
    );
    assert_eq!(deliveries[0].lead_id.as_deref(), Some(buyer_lead_id));

    // The auction record holds every outcome and the sale, and no PII.
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["status"], "won");
    assert_eq!(rec.json["winner"]["buyer_id"], "hi");
    assert_eq!(rec.json["post"]["status"], "sold");
    assert_eq!(rec.json["post"]["buyer_lead_id"], buyer_lead_id);
    assert_eq!(rec.json["buyers"].as_array().unwrap().len(), 2);
    for pii in PII {
        assert!(!rec.text.contains(pii), "record leaks {pii}");
    }
    // Ping record, intent to deliver, final answer: three durable writes.
    assert!(
        env.metric_sum("gavel_store_commits_total") >= 3,
        "{}",
        env.scrape()
    );
    assert!(env
        .scrape()
        .contains("gavel_store_commit_duration_seconds_bucket{le=\"+Inf\"}"));
}

fn no_bid_reasons(driver: Driver) {
    let mut shy = fixed("shy", 10.0);
    shy.bid_probability = 0.0;
    let env = Env::start(driver, vec![shy, fixed("cheap", 0.50)], |cfg, _| {
        cfg.buyers[0].filters.verticals = vec!["auto_insurance".into()];
        cfg.buyers[1].filters.verticals = vec!["solar".into()];
    });
    // Nobody buys mortgage leads.
    let mut b = ping_body();
    b["vertical"] = json!("mortgage");
    let r = env.ping(&b);
    assert_eq!(r.json["status"], "no_bid", "{}", r.text);
    assert_eq!(r.json["reject_reason"], "no_eligible_buyers");
    assert_eq!(r.json["bid"], serde_json::Value::Null);
    assert_eq!(r.json["buyers_pinged"], 0);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    assert!(rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["outcome"] == "filtered"));
    assert_eq!(
        rec.json["buyers"][0]["reject_reason"],
        "vertical_not_allowed"
    );

    // The only auto buyer declines.
    let r = env.ping(&ping_body());
    assert_eq!(r.json["reject_reason"], "no_bids", "{}", r.text);
    assert_eq!(r.json["buyers_pinged"], 1);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    let shy_outcome = rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buyer_id"] == "shy")
        .unwrap()
        .clone();
    assert_eq!(shy_outcome["outcome"], "no_bid");
    assert_eq!(shy_outcome["reject_reason"], "no_demand");

    // The solar buyer bids 0.50, under the 1.00 floor.
    let mut b = ping_body();
    b["vertical"] = json!("solar");
    let r = env.ping(&b);
    assert_eq!(r.json["reject_reason"], "below_floor", "{}", r.text);
    assert_eq!(r.json["bids_received"], 1);
}

/// A bid whose `valid_until` has passed by the server's clock when it arrives is no bid. The mock
/// buyers' bids live a minute by the system clock; the server's manual clock jumps past that.
fn bids_expired_by_the_servers_clock_are_refused(driver: Driver) {
    let env = Env::start_with_clock(driver, vec![fixed("x", 30.0)], |_, _| {}, manual_clock());
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    env.jump_clock(61_000);
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "no_bid", "{}", r.text);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(
        rec.json["buyers"][0]["reject_reason"], "bid_already_expired",
        "{}",
        rec.text
    );
}

fn hanging_and_trickling_buyers_do_not_hold_the_auction(driver: Driver) {
    let mut hang = fixed("hang", 90.0);
    hang.failure = FailureMode::Hang;
    let mut trickle = fixed("trickle", 80.0);
    trickle.failure = FailureMode::SlowTrickle;
    let env = Env::start(
        driver,
        vec![hang, trickle, fixed("good", 12.0)],
        |cfg, _| {
            cfg.auction.window_ms = 600;
        },
    );
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = env.ping(&ping_body());
        let took = t0.elapsed();
        assert_eq!(r.json["status"], "won", "{}", r.text);
        assert_eq!(r.json["bid"]["amount"].as_f64(), Some(10.8));
        // Generous slack: the point is that nobody waits for the hanging buyer's 120 s.
        assert!(took < Duration::from_millis(3_000), "auction took {took:?}");
        assert!(r.json["auction_ms"].as_u64().unwrap() < 3_000);
        let rec = env.get(
            &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
            Some(OPERATOR),
        );
        let outcome = |id: &str| {
            rec.json["buyers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["buyer_id"] == id)
                .unwrap()["outcome"]
                .clone()
        };
        assert_eq!(outcome("hang"), "timeout");
        assert_eq!(outcome("trickle"), "timeout");
        assert_eq!(outcome("good"), "bid");
    }
}

fn broken_buyers_are_recorded_as_errors(driver: Driver) {
    let mut e500 = fixed("e500", 90.0);
    e500.failure = FailureMode::Http500;
    let mut garbage = fixed("garbage", 80.0);
    garbage.failure = FailureMode::GarbageJson;
    let mut wrong = fixed("wrong", 70.0);
    wrong.failure = FailureMode::WrongAuctionId;
    let env = Env::start(
        driver,
        vec![e500, garbage, wrong, fixed("good", 15.0)],
        |cfg, fleet| {
            // A buyer whose endpoint refuses connections.
            let mut dead = buyer(fleet, "dead");
            dead.ping_url = "http://127.0.0.1:1/ping".into();
            dead.post_url = "http://127.0.0.1:1/post".into();
            cfg.buyers.push(dead);
        },
    );
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(r.json["bids_received"], 1);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    let find = |id: &str| {
        rec.json["buyers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["buyer_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(find("e500")["outcome"], "error");
    assert_eq!(find("e500")["reject_reason"], "http_500");
    assert_eq!(find("garbage")["outcome"], "error");
    assert_eq!(find("garbage")["reject_reason"], "invalid_json");
    assert_eq!(find("wrong")["reject_reason"], "wrong_auction_id");
    assert_eq!(find("dead")["outcome"], "error");
    assert_eq!(find("dead")["reject_reason"], "connect_failed");
    assert_eq!(rec.json["winner"]["buyer_id"], "good");
}

fn bids_above_the_max_price_are_ignored(driver: Driver) {
    // A buyer bidding 2,000.00 against the exchange's 1,000.00 ceiling (a typo, or cents sent as
    // dollars) is ignored with its reason; the fair bid wins.
    let env = Env::start(
        driver,
        vec![fixed("typo", 2_000.0), fixed("fair", 20.0)],
        |cfg, _| assert_eq!(cfg.auction.max_price, 100_000, "the default ceiling"),
    );
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(r.json["bids_received"], 1, "{}", r.text);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    let typo = rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buyer_id"] == "typo")
        .unwrap()
        .clone();
    assert_eq!(typo["outcome"], "error", "{typo}");
    assert_eq!(typo["reject_reason"], "above_max_price", "{typo}");
    assert!(typo["amount"].is_null(), "{typo}");
    assert_eq!(rec.json["winner"]["buyer_id"], "fair");
}

fn post_falls_back_to_next_bidder(driver: Driver) {
    let mut picky = fixed("picky", 50.0);
    picky.failure = FailureMode::RejectPost;
    let env = Env::start(
        driver,
        vec![picky, fixed("second", 40.0), fixed("third", 30.0)],
        |_, _| {},
    );
    let (id, token, amount) = won(&env, &ping_body());
    assert_eq!(amount, 45.0);
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    // Sold to the second-highest bidder, at its price minus the margin.
    assert_eq!(p.json["amount"].as_f64(), Some(36.0));
    let d = env.fleet.log().deliveries();
    let buyers: Vec<&str> = d.iter().map(|r| r.buyer_id.as_str()).collect();
    assert_eq!(buyers, vec!["picky", "second"]);
    assert!(!d[0].accepted && d[1].accepted);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["buyer_id"], "second");
    let attempts = rec.json["post"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["result"], "rejected");
    assert_eq!(attempts[1]["result"], "accepted");

    // With every bidder refusing, the post answers 200 unsold.
    let mut a = fixed("a", 50.0);
    a.failure = FailureMode::RejectPost;
    let mut b = fixed("b", 40.0);
    b.failure = FailureMode::RejectPost;
    let env = Env::start(driver, vec![a, b], |_, _| {});
    let (id, token, _) = won(&env, &ping_body());
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["status"], "unsold");
    assert_eq!(p.json["reject_reason"], "buyer_rejected");
}

fn bid_token_checks(driver: Driver) {
    let env = Env::start_with_clock(
        driver,
        vec![fixed("x", 30.0)],
        |cfg, _| {
            cfg.bid_token.ttl_ms = Some(400);
        },
        manual_clock(),
    );
    let (id, token, _) = won(&env, &ping_body());
    let (other_id, other_token, _) = won(&env, &ping_body());

    // Altered: flip one character in the middle.
    let mut chars: Vec<char> = token.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let altered: String = chars.into_iter().collect();
    let p = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(&id, &altered).to_string(),
    );
    assert_eq!(
        (p.status, p.error_code()),
        (422, "invalid_bid_token"),
        "{}",
        p.text
    );

    // Forged from scratch.
    let p = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(&id, "bid_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").to_string(),
    );
    assert_eq!((p.status, p.error_code()), (422, "invalid_bid_token"));

    // Another auction's token.
    let p = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(&id, &other_token).to_string(),
    );
    assert_eq!((p.status, p.error_code()), (422, "invalid_bid_token"));

    // To another tenant the auction does not exist, even with its genuine token.
    let p = env.post("/v1/post", Some(LIVE), &post_body(&id, &token).to_string());
    assert_eq!((p.status, p.error_code()), (404, "not_found"));

    // Expired: the token lives 400 ms of the server's clock.
    env.clock.advance(600);
    let p = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(&other_id, &other_token).to_string(),
    );
    assert_eq!(
        (p.status, p.error_code()),
        (422, "bid_expired"),
        "{}",
        p.text
    );
    assert!(
        env.fleet.log().deliveries().is_empty(),
        "no invalid post reached a buyer"
    );
}

fn ping_validation(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    // PII in a ping.
    let mut b = ping_body();
    b["email"] = json!("maria.lopez@example.com");
    b["first_name"] = json!("Maria");
    let r = env.ping(&b);
    assert_eq!(
        (r.status, r.error_code()),
        (422, "pii_not_allowed"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("maria.lopez@example.com") && !r.text.contains("Maria"));
    assert!(r.json["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(
        env.fleet.log().pings("x"),
        0,
        "a ping with PII never reaches a buyer"
    );

    // Every field error at once.
    let r = env.ping(&json!({"state": "ZZ", "zip3": "77", "source": "google_ads", "tcpa_consent": "yes", "ai_quality_score": 1.5}));
    assert_eq!(
        (r.status, r.error_code()),
        (422, "invalid_payload"),
        "{}",
        r.text
    );
    let fields = r.field_names();
    for f in [
        "vertical",
        "state",
        "zip3",
        "tcpa_consent",
        "ai_quality_score",
    ] {
        assert!(fields.contains(&f), "missing error for {f}: {fields:?}");
    }

    // Malformed JSON.
    let r = env.post("/v1/ping", Some(TOKEN), "{\"vertical\": ");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "malformed_json"),
        "{}",
        r.text
    );
    // The message says what is wrong in the seller's terms, not in the parser's.
    for body in ["{\"vertical\": ", "{", "", "nul", "{\"a\":1,}"] {
        let r = env.post("/v1/ping", Some(TOKEN), body);
        assert_eq!(r.status, 400, "{body:?}: {}", r.text);
        let msg = r.json["message"].as_str().unwrap();
        assert!(
            msg.starts_with("The request body is not valid JSON"),
            "{msg}"
        );
        assert!(!msg.contains("Error") && !msg.contains("Tape"), "{msg}");
    }

    // Seller-supplied id, and the same id twice.
    let mut b = ping_body();
    b["auction_id"] = json!("auc_seller_supplied_1");
    let r = env.ping(&b);
    assert_eq!(r.json["auction_id"], "auc_seller_supplied_1", "{}", r.text);
    let r = env.ping(&b);
    assert_eq!((r.status, r.error_code()), (409, "auction_exists"));
}

fn post_validation_and_rules(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    let (id, token, _) = won(&env, &ping_body());

    // Several invalid lead fields, all reported.
    let mut b = post_body(&id, &token);
    b["lead"]["phone"] = json!("555-0182");
    b["lead"]["email"] = json!("not-an-email");
    b["lead"]["tcpa"]["ip_address"] = json!("999.1.1.1");
    let r = env.post("/v1/post", Some(TOKEN), &b.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "invalid_payload"),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["field_errors"].as_array().unwrap().len(),
        3,
        "{}",
        r.text
    );
    for pii in ["555-0182", "not-an-email", "999.1.1.1"] {
        assert!(!r.text.contains(pii), "error echoes {pii}");
    }

    // The lead's state must match its ping.
    let mut b = post_body(&id, &token);
    b["lead"]["address"]["state"] = json!("CA");
    b["lead"]["address"]["zip"] = json!("90001");
    let r = env.post("/v1/post", Some(TOKEN), &b.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "lead_mismatch"),
        "{}",
        r.text
    );
    assert_eq!(r.json["field_errors"].as_array().unwrap().len(), 2);

    // facebook_ads leads need a TrustedForm certificate at post time.
    let mut ping = ping_body();
    ping["source"] = json!("facebook_ads");
    let (fb_id, fb_token, _) = won(&env, &ping);
    let r = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(&fb_id, &fb_token).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.json["field_errors"][0]["field"],
        "lead.tcpa.trustedform_cert_url"
    );
    assert_eq!(r.json["field_errors"][0]["code"], "missing_required");
    let mut b = post_body(&fb_id, &fb_token);
    b["lead"]["tcpa"]["trustedform_cert_url"] = json!("https://cert.trustedform.com/abc");
    let r = env.post("/v1/post", Some(TOKEN), &b.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        env.fleet.log().deliveries().len() == 1,
        "only the valid post was delivered"
    );
}

fn auth_errors(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    let body = ping_body().to_string();
    let r = env.post("/v1/ping", None, &body);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Refused before its body was read: the connection cannot be reused, and the answer says so.
    assert_eq!(r.header("connection"), Some("close"));
    let ok = env.ping(&ping_body());
    assert_eq!((ok.status, ok.header("connection")), (200, None));
    let r = env.post("/v1/ping", Some("gv_test_not_a_real_token"), &body);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let (id, token, _) = won(&env, &ping_body());
    let r = env.post(
        "/v1/post",
        Some(PING_ONLY),
        &post_body(&id, &token).to_string(),
    );
    assert_eq!((r.status, r.error_code()), (403, "insufficient_scope"));
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"post\""));
    // A production client sees no sandbox auction.
    let r = env.get(&format!("/v1/auctions/{id}"), Some(LIVE_OPERATOR));
    assert_eq!(r.status, 404);
    // And a production ping reaches no sandbox buyer.
    let before = env.fleet.log().pings("x");
    let r = env.post("/v1/ping", Some(LIVE), &body);
    assert_eq!(r.json["reject_reason"], "no_eligible_buyers", "{}", r.text);
    assert_eq!(env.fleet.log().pings("x"), before);
}

fn limits_and_malformed_requests(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    // 64 KiB + 1 byte body.
    let big = format!("{{\"vertical\":\"{}\"}}", "a".repeat(64 * 1024));
    let r = env.post("/v1/ping", Some(TOKEN), &big);
    assert_eq!((r.status, r.error_code()), (413, "payload_too_large"));
    // Unknown route and wrong method.
    let r = env.get("/v1/nope", Some(TOKEN));
    assert_eq!((r.status, r.error_code()), (404, "not_found"));
    let r = env.get("/v1/ping", Some(TOKEN));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Wrong content type.
    let r = env.post_with(
        "/v1/ping",
        Some(TOKEN),
        "x",
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(r.status, 415);
    // Invalid idempotency key.
    let long = "k".repeat(300);
    let r = env.post_with(
        "/v1/post",
        Some(TOKEN),
        "{}",
        &[("Idempotency-Key", long.as_str())],
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_idempotency_key"));
    // A client that never finishes its request head is cut off after header_read_timeout_ms.
    let t0 = Instant::now();
    let out = raw(
        env.server().addr,
        b"POST /v1/ping HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "slow header client held {:?}",
        t0.elapsed()
    );
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
    // Health endpoints.
    assert_eq!(env.get("/healthz", None).status, 200);
    let ready = env.get("/readyz", None);
    assert_eq!(ready.json["cores"], 2);
    assert_eq!(
        ready.json["driver"],
        if driver == Driver::Uring {
            "uring"
        } else {
            "legacy"
        }
    );
}

fn cross_core_handoff(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    assert_eq!(env.metric_sum("gavel_core_handoffs_out_total"), 0);
    // Ids owned by each core, sent on one keep-alive connection: whichever core holds that
    // connection, the ids owned by the other core must be handed over.
    let mut ids = Vec::new();
    let mut n = 0;
    while ids.len() < 8 {
        let id = format!("auc_handoff_{n}");
        n += 1;
        let want = ids.len() % 2;
        if gavel::runtime::owner_of(&id, 2) == want {
            ids.push(id);
        }
    }
    for id in &ids {
        let mut b = ping_body();
        b["auction_id"] = json!(id);
        let r = env.ping(&b);
        assert_eq!(r.json["status"], "won", "{}", r.text);
        let token = r.json["bid"]["bid_token"].as_str().unwrap();
        let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
        assert_eq!(p.status, 201, "{}", p.text);
        let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
        assert_eq!(rec.json["post"]["status"], "sold");
    }
    let out = env.metric_sum("gavel_core_handoffs_out_total");
    let inn = env.metric_sum("gavel_core_handoffs_in_total");
    assert!(out >= 4, "expected hand-offs, saw {out}");
    assert_eq!(out, inn, "every hand-off out is a hand-off in");
}

fn second_post_conflicts_and_replays(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    let (id, token, _) = won(&env, &ping_body());
    let body = post_body(&id, &token).to_string();
    let first = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!(first.status, 201);
    // Same (default) key: the same answer, marked as a replay, and no second delivery.
    let again = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["buyer_lead_id"], first.json["buyer_lead_id"]);
    // Another key for the same auction: 409.
    let other = env.post_with(
        "/v1/post",
        Some(TOKEN),
        &body,
        &[("Idempotency-Key", "seller-retry-2")],
    );
    assert_eq!(
        (other.status, other.error_code()),
        (409, "auction_already_posted")
    );
    assert_eq!(env.fleet.log().deliveries().len(), 1);
}

fn graceful_shutdown_finishes_in_flight_auction(driver: Driver) {
    let mut slow = fixed("slow", 30.0);
    slow.latency_ms_min = 400;
    slow.latency_ms_max = 400;
    let mut env = Env::start(driver, vec![slow], |_, _| {});
    let base = env.base.clone();
    let t = std::thread::spawn(move || {
        call(
            &base,
            "POST",
            "/v1/ping",
            Some(TOKEN),
            Some(&ping_body().to_string()),
            &[],
        )
    });
    std::thread::sleep(Duration::from_millis(150));
    let server = env.server.take().unwrap();
    server.shutdown();
    let r = t.join().unwrap();
    assert_eq!(
        r.json["status"], "won",
        "in-flight auction finished: {}",
        r.text
    );
    let addr = server.addr;
    server.join();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed after shutdown"
    );
}

fn seller_expires_at_shortens_the_window(driver: Driver) {
    let mut hang = fixed("hang", 90.0);
    hang.failure = FailureMode::Hang;
    let env = Env::start(driver, vec![hang, fixed("good", 12.0)], |cfg, _| {
        cfg.auction.window_ms = 5_000;
    });
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(400);
    let mut b = ping_body();
    b["expires_at"] = json!(soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap());
    let t0 = Instant::now();
    let r = env.ping(&b);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert!(
        t0.elapsed() < Duration::from_millis(3_000),
        "waited {:?} despite expires_at",
        t0.elapsed()
    );
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    let created = rec.json["created_at"].as_str().unwrap();
    let deadline = rec.json["deadline_at"].as_str().unwrap();
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(
        parse(deadline) - parse(created) <= time::Duration::milliseconds(450),
        "{created} .. {deadline}"
    );

    // An expires_at in the past is refused.
    b["expires_at"] = json!("2001-01-01T00:00:00Z");
    let r = env.ping(&b);
    assert_eq!(r.status, 422);
}

fn post_retries_a_failing_buyer(driver: Driver) {
    let mut flaky = fixed("flaky", 30.0);
    flaky.post_fail_first = 2;
    flaky.post_fail_mode = PostFailMode::Http503;
    let env = Env::start(driver, vec![flaky, fixed("backup", 10.0)], |_, _| {});
    let (id, token, _) = won(&env, &ping_body());
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(
        p.json["amount"].as_f64(),
        Some(27.0),
        "sold to the winner after two 503s"
    );
    let d = env.fleet.log().deliveries();
    assert_eq!(d.len(), 3);
    assert!(d.iter().all(|r| r.buyer_id == "flaky"));
    let key = format!("post_{id}");
    assert!(d
        .iter()
        .all(|r| r.idempotency_key.as_deref() == Some(key.as_str())));
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let statuses: Vec<u64> = rec.json["post"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![503, 503, 201]);
}

fn unconfirmed_post_resumes_with_the_same_buyer(driver: Driver) {
    // The winner takes the lead on every attempt but answers none of the first three, which is
    // all one post may try: Gavel must not offer the lead to the second bidder.
    let mut silent = fixed("silent", 30.0);
    silent.post_fail_first = 3;
    silent.post_fail_mode = PostFailMode::Hang;
    let env = Env::start(driver, vec![silent, fixed("other", 20.0)], |cfg, _| {
        cfg.buyers[0].post_timeout_ms = 150;
        cfg.post.budget_ms = 2_000;
        cfg.post.max_attempts_per_buyer = 3;
    });
    let (id, token, _) = won(&env, &ping_body());
    let body = post_body(&id, &token).to_string();
    let p = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!(
        (p.status, p.error_code()),
        (502, "buyer_unavailable"),
        "{}",
        p.text
    );
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["status"], "unresolved");
    // Another key may not start a second delivery.
    let other = env.post_with(
        "/v1/post",
        Some(TOKEN),
        &body,
        &[("Idempotency-Key", "another-key")],
    );
    assert_eq!(
        (other.status, other.error_code()),
        (409, "auction_already_posted")
    );
    // The retry with the same key resumes with the same buyer, which answers this time.
    let p = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!(p.status, 201, "{}", p.text);
    let d = env.fleet.log().deliveries();
    assert!(
        d.iter().all(|r| r.buyer_id == "silent"),
        "the second bidder never saw the lead"
    );
    let ids: std::collections::HashSet<_> = d.iter().filter_map(|r| r.lead_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one lead id across every attempt");
    assert_eq!(
        p.json["buyer_lead_id"].as_str(),
        ids.iter().next().map(|s| s.as_str())
    );
}

fn unreadable_post_answer_goes_to_nobody_else(driver: Driver) {
    // The winner takes the lead and answers 200 with a body that is not JSON: it may hold the
    // lead, so the second bidder must never receive it, and the seller hears it is unconfirmed.
    let mut garbled = fixed("garbled", 30.0);
    garbled.post_fail_first = 1;
    garbled.post_fail_mode = PostFailMode::Garbage;
    let env = Env::start(driver, vec![garbled, fixed("other", 20.0)], |_, _| {});
    let (id, token, _) = won(&env, &ping_body());
    let body = post_body(&id, &token).to_string();
    let p = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!(p.status, 202, "{}", p.text);
    assert_eq!(p.json["status"], "unconfirmed", "{}", p.text);
    assert_eq!(p.json["auction_id"], id.as_str());
    assert!(p.json["buyer_lead_id"].is_null(), "{}", p.text);
    let d = env.fleet.log().deliveries();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].buyer_id, "garbled");
    // The record says which buyer answered what.
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let attempts = rec.json["post"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{}", rec.text);
    assert_eq!(attempts[0]["result"], "unconfirmed", "{}", rec.text);
    assert_eq!(attempts[0]["http_status"], 200);
    // The answer is final: a retry with the same key replays it, and the second bidder still
    // never sees the lead.
    let again = env.post("/v1/post", Some(TOKEN), &body);
    assert_eq!((again.status, again.text.as_str()), (202, p.text.as_str()));
    assert_eq!(env.fleet.log().deliveries().len(), 1);
    // The operator's alert reads this counter.
    let metrics = env.scrape();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gavel_buyer_post_attempts_total{")
                && l.contains("buyer=\"garbled\"")
                && l.contains("result=\"unconfirmed\"")
        })
        .unwrap_or_else(|| panic!("no unconfirmed series in\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
}

fn idempotent_replay_and_key_reuse(driver: Driver) {
    let env = Env::start(driver, vec![fixed("x", 30.0)], |_, _| {});
    let body = ping_body().to_string();
    let key = [("Idempotency-Key", "seller-ping-1")];
    let first = env.post_with("/v1/ping", Some(TOKEN), &body, &key);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = env.post_with("/v1/ping", Some(TOKEN), &body, &key);
    assert_eq!(
        (again.status, again.text.as_str()),
        (200, first.text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        env.fleet.log().pings("x"),
        1,
        "the replay ran no second auction"
    );
    // The same key with another body.
    let mut other = ping_body();
    other["state"] = json!("CA");
    let r = env.post_with("/v1/ping", Some(TOKEN), &other.to_string(), &key);
    assert_eq!(
        (r.status, r.error_code()),
        (422, "idempotency_key_reused"),
        "{}",
        r.text
    );
    // Another client's identical key is another key.
    let r = env.post_with("/v1/ping", Some(LIVE), &body, &key);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("idempotent-replayed"), None);

    // Post: replay under the default key, reuse with another body refused.
    let id = first.json["auction_id"].as_str().unwrap();
    let token = first.json["bid"]["bid_token"].as_str().unwrap();
    let post = post_body(id, token).to_string();
    let p1 = env.post("/v1/post", Some(TOKEN), &post);
    assert_eq!(p1.status, 201, "{}", p1.text);
    let p2 = env.post("/v1/post", Some(TOKEN), &post);
    assert_eq!((p2.status, p2.text.as_str()), (201, p1.text.as_str()));
    assert_eq!(p2.header("idempotent-replayed"), Some("true"));
    let mut changed = post_body(id, token);
    changed["lead"]["first_name"] = json!("Marta");
    let p3 = env.post("/v1/post", Some(TOKEN), &changed.to_string());
    assert_eq!(
        (p3.status, p3.error_code()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(env.fleet.log().deliveries().len(), 1);

    // A refusal before delivery starts is not recorded: the corrected post goes through under
    // the same default key.
    let second = env.ping(&ping_body());
    let id2 = second.json["auction_id"].as_str().unwrap();
    let token2 = second.json["bid"]["bid_token"].as_str().unwrap();
    let mut bad = post_body(id2, token2);
    bad["lead"]["address"]["state"] = json!("OK");
    let r = env.post("/v1/post", Some(TOKEN), &bad.to_string());
    assert_eq!(r.error_code(), "lead_mismatch");
    let r = env.post("/v1/post", Some(TOKEN), &post_body(id2, token2).to_string());
    assert_eq!(r.status, 201, "{}", r.text);
}

fn concurrent_same_key_runs_once(driver: Driver) {
    let mut slow = fixed("slow", 30.0);
    slow.latency_ms_min = 150;
    slow.latency_ms_max = 150;
    let env = Env::start(driver, vec![slow], |_, _| {});
    let body = ping_body().to_string();
    // 60 requests with one key, each on its own connection so they land on both cores.
    let handles: Vec<_> = (0..60)
        .map(|_| {
            let base = env.base.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().max_idle_connections(0).build();
                let r = agent
                    .post(&format!("{base}/v1/ping"))
                    .set("Authorization", &format!("Bearer {TOKEN}"))
                    .set("Idempotency-Key", "burst-key")
                    .send_string(&body);
                let r = match r {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("{e}"),
                };
                let status = r.status();
                let replayed = r.header("idempotent-replayed").is_some();
                (status, replayed, r.into_string().unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, bool, String)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let executed: Vec<_> = results.iter().filter(|(s, r, _)| *s == 200 && !r).collect();
    assert_eq!(executed.len(), 1, "exactly one request ran: {results:?}");
    for (status, replayed, text) in &results {
        match status {
            200 => assert_eq!(
                text, &executed[0].2,
                "a 200 is the one answer (replayed: {replayed})"
            ),
            409 => assert!(text.contains("idempotency_in_flight")),
            s => panic!("unexpected {s}: {text}"),
        }
    }
    assert_eq!(
        env.fleet.log().pings("slow"),
        1,
        "one auction reached the buyer"
    );
    assert!(env.metric_sum("gavel_core_connections_total") >= 60);
}

fn records_and_replays_survive_restart(driver: Driver) {
    let mut env = Env::start(driver, vec![fixed("x", 30.0), fixed("y", 25.0)], |_, _| {});
    let key = [("Idempotency-Key", "restart-ping")];
    let body = ping_body().to_string();
    let ping = env.post_with("/v1/ping", Some(TOKEN), &body, &key);
    let id = ping.json["auction_id"].as_str().unwrap().to_string();
    let token = ping.json["bid"]["bid_token"].as_str().unwrap().to_string();
    let unsold = env.ping(&ping_body());
    let record_before = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(record_before.status, 200);

    env.restart();

    // The ping replays after the restart, and its bid token still posts (the signing key is kept).
    let again = env.post_with("/v1/ping", Some(TOKEN), &body, &key);
    assert_eq!(
        (again.status, again.text.as_str()),
        (200, ping.text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let record_after = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(
        record_after.text, record_before.text,
        "the record reads the same after a restart"
    );
    let post = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(post.status, 201, "{}", post.text);

    env.restart();
    let replay = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(
        (replay.status, replay.text.as_str()),
        (201, post.text.as_str())
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["status"], "sold");
    assert_eq!(
        rec.json["post"]["buyer_lead_id"],
        post.json["buyer_lead_id"]
    );
    // Other tenants and unknown ids stay 404.
    assert_eq!(
        env.get(&format!("/v1/auctions/{id}"), Some(LIVE_OPERATOR))
            .status,
        404
    );
    assert_eq!(
        env.get(
            "/v1/auctions/auc_00000000000000000000000000",
            Some(OPERATOR)
        )
        .status,
        404
    );
    // A seller-chosen id stays taken after a restart.
    let mut b = ping_body();
    b["auction_id"] = json!("auc_seller_restart_1");
    assert_eq!(env.ping(&b).status, 200);
    env.restart();
    let r = env.ping(&b);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "auction_exists"),
        "{}",
        r.text
    );
    // An auction that was never posted can still be posted after the restart.
    let uid = unsold.json["auction_id"].as_str().unwrap();
    let utoken = unsold.json["bid"]["bid_token"].as_str().unwrap();
    let p = env.post("/v1/post", Some(TOKEN), &post_body(uid, utoken).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(
        env.fleet.log().deliveries().len(),
        2,
        "no delivery was repeated"
    );
}

#[test]
fn shipped_sandbox_buyer_configs_are_valid() {
    // Sanity of the mock defaults used by the tests themselves.
    gavel::sandbox::validate_buyers(&[MockBuyerConfig::new("a"), fixed("b", 3.0)]).unwrap();
}

fn one_call_lead_sells_and_replays(driver: Driver) {
    let env = Env::start(
        driver,
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        |_, _| {},
    );
    let body = lead_call_body().to_string();
    let commits = env.metric_sum("gavel_store_commits_total");
    let r = env.post("/v1/leads", Some(TOKEN), &body);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "sold");
    assert_eq!(r.json["amount"].as_f64(), Some(27.0));
    let id = r.json["auction_id"].as_str().unwrap().to_string();
    assert!(r.json["lead_uuid"].as_str().unwrap().starts_with("ld_"));
    // The buyers were pinged with the ping fields only; the winner got the lead under the
    // post's key, exactly once.
    for buyer in ["hi", "lo"] {
        let seen = env.fleet.log().last_ping_body(buyer).unwrap().to_string();
        for pii in PII {
            assert!(!seen.contains(pii), "{buyer}'s ping leaks {pii}");
        }
    }
    let d = env.fleet.log().deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].buyer_id, "hi");
    assert_eq!(
        d[0].idempotency_key.as_deref(),
        Some(format!("post_{id}").as_str())
    );
    assert_eq!(r.json["buyer_lead_id"].as_str(), d[0].lead_id.as_deref());
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["status"], "won");
    assert_eq!(rec.json["post"]["status"], "sold");
    for pii in PII {
        assert!(!rec.text.contains(pii), "record leaks {pii}");
    }
    // One commit for the auction and the intent together, one for the outcome: no separate
    // ping record.
    assert_eq!(env.metric_sum("gavel_store_commits_total") - commits, 2);

    // Keyed: the repeat replays, without a second auction or delivery.
    let key = [("Idempotency-Key", "lead-call-1")];
    let first = env.post_with("/v1/leads", Some(TOKEN), &body, &key);
    assert_eq!(first.status, 201, "{}", first.text);
    let again = env.post_with("/v1/leads", Some(TOKEN), &body, &key);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
    assert_eq!(env.fleet.log().deliveries().len(), 2);
    assert_eq!(env.fleet.log().pings("hi"), 2);
    let mut other = lead_call_body();
    other["vehicle_count"] = json!(3);
    let reused = env.post_with("/v1/leads", Some(TOKEN), &other.to_string(), &key);
    assert_eq!(
        (reused.status, reused.error_code()),
        (422, "idempotency_key_reused")
    );

    // Nobody bids: the ping's no-bid answer, and nothing delivered.
    let mut shy = fixed("shy", 30.0);
    shy.bid_probability = 0.0;
    let env = Env::start(driver, vec![shy], |_, _| {});
    let r = env.post("/v1/leads", Some(TOKEN), &body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "no_bid");
    assert_eq!(r.json["reject_reason"], "no_bids");
    assert!(env.fleet.log().deliveries().is_empty());
    let id = r.json["auction_id"].as_str().unwrap();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(
        rec.status, 200,
        "the no-bid auction is recorded: {}",
        rec.text
    );
    assert_eq!(rec.json["status"], "no_bid");
}

fn one_call_lead_is_checked_before_any_buyer(driver: Driver) {
    let env = Env::start(driver, vec![fixed("hi", 30.0)], |_, _| {});
    // No lead at all, and a bad ping field: both reported at once.
    let mut body = ping_body();
    body["zip3"] = json!("77");
    let r = env.post("/v1/leads", Some(TOKEN), &body.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "invalid_payload"),
        "{}",
        r.text
    );
    let fields = r.field_names();
    assert!(
        fields.contains(&"zip3") && fields.contains(&"lead"),
        "{fields:?}"
    );
    // Contact data outside `lead`.
    let mut body = lead_call_body();
    body["email"] = json!("maria.lopez@example.com");
    let r = env.post("/v1/leads", Some(TOKEN), &body.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "pii_not_allowed"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("maria.lopez"));
    // A lead from another state than its ping fields.
    let mut body = lead_call_body();
    body["lead"]["address"]["state"] = json!("CA");
    let r = env.post("/v1/leads", Some(TOKEN), &body.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "lead_mismatch"),
        "{}",
        r.text
    );
    // A lead rule: facebook_ads needs a TrustedForm certificate.
    let mut body = lead_call_body();
    body["source"] = json!("facebook_ads");
    let r = env.post("/v1/leads", Some(TOKEN), &body.to_string());
    assert_eq!(
        (r.status, r.error_code()),
        (422, "invalid_payload"),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["field_errors"][0]["field"],
        "lead.tcpa.trustedform_cert_url"
    );
    // Both scopes are needed.
    let r = env.post("/v1/leads", Some(PING_ONLY), &lead_call_body().to_string());
    assert_eq!(r.status, 403, "{}", r.text);
    // None of these reached a buyer.
    assert_eq!(env.fleet.log().pings("hi"), 0);
    assert!(env.fleet.log().deliveries().is_empty());
}

fn one_call_lead_resumes_after_restart(driver: Driver) {
    // The winner takes the lead on every attempt but answers none of the first three: the call
    // ends unresolved, and after a restart its retry must go back to that buyer only.
    let mut silent = fixed("silent", 30.0);
    silent.post_fail_first = 3;
    silent.post_fail_mode = PostFailMode::Hang;
    let mut env = Env::start(driver, vec![silent, fixed("other", 20.0)], |cfg, _| {
        cfg.buyers[0].post_timeout_ms = 150;
        cfg.post.budget_ms = 2_000;
        cfg.post.max_attempts_per_buyer = 3;
    });
    let body = lead_call_body().to_string();
    let key = [("Idempotency-Key", "resume-me")];
    let r = env.post_with("/v1/leads", Some(TOKEN), &body, &key);
    assert_eq!(
        (r.status, r.error_code()),
        (502, "buyer_unavailable"),
        "{}",
        r.text
    );
    env.restart();
    let r = env.post_with("/v1/leads", Some(TOKEN), &body, &key);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "sold");
    // One auction (the buyers were pinged once), one buyer, one key, one lead id.
    assert_eq!(env.fleet.log().pings("silent"), 1);
    assert_eq!(env.fleet.log().pings("other"), 1);
    let d = env.fleet.log().deliveries();
    assert!(d.iter().all(|r| r.buyer_id == "silent"), "{d:?}");
    let keys: std::collections::HashSet<_> =
        d.iter().filter_map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ids: std::collections::HashSet<_> = d.iter().filter_map(|r| r.lead_id.clone()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // And the answer is now final: replayed after another restart.
    env.restart();
    let again = env.post_with("/v1/leads", Some(TOKEN), &body, &key);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, r.json);
}

#[test]
fn dev_seed_is_deterministic_and_sandbox_only() {
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        |_, _| {},
    );
    let seed = |body: serde_json::Value| {
        let r = env.post("/v1/dev/seed", Some(TOKEN), &body.to_string());
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    };
    let a = seed(json!({"count": 40, "vertical": "auto_insurance", "seed": 11}));
    let b = seed(json!({"count": 40, "vertical": "auto_insurance", "seed": 11}));
    let pings = |j: &serde_json::Value| -> Vec<serde_json::Value> {
        j["leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ping"].clone())
            .collect()
    };
    assert_eq!(pings(&a).len(), 40);
    assert_eq!(pings(&a), pings(&b), "same seed, same leads");
    let c = seed(json!({"count": 40, "vertical": "auto_insurance", "seed": 12}));
    assert_ne!(pings(&a), pings(&c));
    // Every lead ran through ping and post against the sandbox buyers: both always bid and
    // accept, so all 40 are sold, and the buyers saw 40 auctions of each run.
    assert_eq!(a["auctions"], 40);
    assert_eq!(
        (a["sold"].as_u64(), a["won"].as_u64()),
        (Some(40), Some(40))
    );
    assert_eq!(
        (a["no_bid"].as_u64(), a["errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(a["avg_amount"].as_f64(), Some(27.0));
    assert!(a["p99_ms"].as_f64().unwrap() >= a["p50_ms"].as_f64().unwrap());
    assert_eq!(env.fleet.log().deliveries().len(), 120);
    assert_eq!(env.fleet.log().pings("hi"), 120);
    // A seeded auction is a real, recorded auction; its ping is what the answer shows.
    let first = &a["leads"][0];
    let rec = env.get(
        &format!("/v1/auctions/{}", first["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["post"]["status"], "sold");
    // A state narrows the leads; realistic fields come with them.
    let ca = seed(json!({"count": 10, "vertical": "solar", "state": "CA", "seed": 1}));
    assert!(pings(&ca)
        .iter()
        .all(|p| p["state"] == "CA" && p["vertical"] == "solar"));
    // Without a seed, one is chosen and reported.
    assert!(seed(json!({"count": 1, "vertical": "solar"}))["seed"].is_u64());
    // A whole number written as a float is that number; `null` is as if absent.
    let v = seed(json!({"count": 2.0, "vertical": "solar", "seed": null, "state": null}));
    assert_eq!(v["auctions"], 2, "{v}");
    assert!(v["seed"].is_u64());
    // Bounds and tenants; each error names its field and says what it must be, never what the
    // parser expected.
    for (body, field, message) in [
        (
            json!({"count": 0, "vertical": "solar"}),
            "count",
            "count must be a whole number from 1 to 1000.",
        ),
        (
            json!({"count": 1001, "vertical": "solar"}),
            "count",
            "count must be a whole number from 1 to 1000.",
        ),
        (
            json!({"count": 2.5, "vertical": "solar"}),
            "count",
            "count must be a whole number from 1 to 1000.",
        ),
        (
            json!({"count": "2", "vertical": "solar"}),
            "count",
            "count must be a whole number from 1 to 1000.",
        ),
        (json!({"vertical": "solar"}), "count", "count is required."),
        (
            json!({"count": 1, "vertical": "Solar!"}),
            "vertical",
            "vertical must be a lowercase id",
        ),
        (
            json!({"count": 1, "vertical": "solar", "state": "ZZ"}),
            "state",
            "state must be one of",
        ),
        (
            json!({"count": 1, "vertical": "solar", "seed": -1}),
            "seed",
            "seed must be a whole number from 0 to",
        ),
        (
            json!({"count": 1, "vertical": "solar", "seed": 1e30}),
            "seed",
            "seed must be a whole number from 0 to",
        ),
        (
            json!({"count": 1, "vertical": "solar", "speed": 3}),
            "speed",
            "Unknown field \"speed\"",
        ),
    ] {
        let r = env.post("/v1/dev/seed", Some(TOKEN), &body.to_string());
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_payload"),
            "{body}"
        );
        assert_eq!(r.field_names(), vec![field], "{body}: {}", r.text);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.starts_with(message), "{body}: {msg}");
    }
    let r = env.post("/v1/dev/seed", Some(TOKEN), "{\"count\": 1,");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "malformed_json"),
        "{}",
        r.text
    );
    let msg = r.json["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The request body is not valid JSON: the first problem is at line 1"),
        "{msg}"
    );
    let r = env.post(
        "/v1/dev/seed",
        Some(LIVE),
        &json!({"count": 1, "vertical": "solar"}).to_string(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "sandbox_only"),
        "{}",
        r.text
    );
    let r = env.post(
        "/v1/dev/seed",
        Some(PING_ONLY),
        &json!({"count": 1, "vertical": "solar"}).to_string(),
    );
    assert_eq!((r.status, r.error_code()), (403, "insufficient_scope"));
}

fn buyers_report_lead_status(driver: Driver) {
    const HI: &str = "gv_test_buyer_hi_status_0000000000000000000";
    const LO: &str = "gv_test_buyer_lo_status_0000000000000000000";
    let mut env = Env::start(
        driver,
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        |cfg, _| {
            for (token, buyer) in [(HI, "hi"), (LO, "lo")] {
                cfg.tokens
                    .push(buyer_token(&format!("buyer-{buyer}"), buyer, token));
            }
        },
    );
    let (id, token, _) = won(&env, &ping_body());
    let sold = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(sold.status, 201, "{}", sold.text);
    let lead = sold.json["lead_uuid"].as_str().unwrap().to_string();
    let path = format!("/v1/leads/{lead}/status");
    let report = |env: &Env, token: &str, body: serde_json::Value| {
        env.post(&path, Some(token), &body.to_string())
    };
    // The buyer that bought it reports; the answer names the change.
    let r = report(&env, HI, json!({"status": "contacted"}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        (
            r.json["status"].as_str(),
            r.json["previous_status"].as_str()
        ),
        (Some("contacted"), Some("sold"))
    );
    // Another buyer, a seller token, the operator, an unknown lead.
    assert_eq!(report(&env, LO, json!({"status": "qualified"})).status, 404);
    for not_a_buyer in [TOKEN, OPERATOR] {
        let r = report(&env, not_a_buyer, json!({"status": "qualified"}));
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    }
    let r = env.post(
        "/v1/leads/ld_nope/status",
        Some(HI),
        &json!({"status": "qualified"}).to_string(),
    );
    assert_eq!(r.status, 404);
    // Bad bodies: each error names its field and says what it must be.
    for (body, field, message) in [
        (
            json!({"status": "lost"}),
            "status",
            "status must be one of qualified",
        ),
        (
            json!({"status": 3}),
            "status",
            "status must be one of qualified",
        ),
        (
            json!({"status": "sold", "reason": ""}),
            "reason",
            "reason must be 1 to 256 characters.",
        ),
        (json!({}), "status", "status is required."),
        (
            json!({"status": "sold", "note": "x"}),
            "note",
            "Unknown field \"note\"",
        ),
    ] {
        let r = report(&env, HI, body.clone());
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_payload"),
            "{body}"
        );
        assert_eq!(r.field_names(), vec![field], "{body}: {}", r.text);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.starts_with(message), "{body}: {msg}");
    }
    // Transitions: contacted -> returned is allowed, and final; a repeat is a no-op.
    let r = report(
        &env,
        HI,
        json!({"status": "returned", "reason": "wrong_number"}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let again = report(&env, HI, json!({"status": "returned"}));
    assert_eq!(again.status, 202);
    assert_eq!(again.json["previous_status"], "returned");
    // The history is durable: after a restart the lead is still returned, which is final.
    env.restart();
    let r = report(&env, HI, json!({"status": "qualified"}));
    assert_eq!(
        (r.status, r.error_code()),
        (409, "invalid_transition"),
        "{}",
        r.text
    );
    assert!(r.json["message"].as_str().unwrap().contains("returned"));
    // A fresh lead: returned is not allowed straight after qualified.
    let (id, token, _) = won(&env, &ping_body());
    let sold = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    let lead = sold.json["lead_uuid"].as_str().unwrap().to_string();
    let path = format!("/v1/leads/{lead}/status");
    let post = |body: serde_json::Value| env.post(&path, Some(HI), &body.to_string());
    assert_eq!(post(json!({"status": "qualified"})).status, 202);
    let r = post(json!({"status": "returned"}));
    assert_eq!((r.status, r.error_code()), (409, "invalid_transition"));
    assert_eq!(post(json!({"status": "sold"})).status, 202);
    assert_eq!(post(json!({"status": "returned"})).status, 202);
}

fn lead_status_history_is_bounded(driver: Driver) {
    const HI: &str = "gv_test_buyer_hi_history_000000000000000000";
    let env = Env::start(driver, vec![fixed("hi", 30.0)], |cfg, _| {
        cfg.tokens.push(buyer_token("buyer-hi", "hi", HI));
    });
    let (id, token, _) = won(&env, &ping_body());
    let sold = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(sold.status, 201, "{}", sold.text);
    let lead = sold.json["lead_uuid"].as_str().unwrap().to_string();
    let path = format!("/v1/leads/{lead}/status");
    let report = |status: &str| env.post(&path, Some(HI), &json!({ "status": status }).to_string());
    // Gavel's own `sold` is the first entry; the buyer may add the rest, cycling forever if it
    // wanted to, until the history is full.
    let limit = gavel::exchange::status::MAX_STATUS_CHANGES_PER_LEAD;
    let cycle = ["qualified", "contacted"];
    for i in 0..limit - 1 {
        let r = report(cycle[i % 2]);
        assert_eq!(r.status, 202, "report {i}: {}", r.text);
    }
    let last = cycle[(limit - 2) % 2];
    let next = cycle[(limit - 1) % 2];
    let r = report(next);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "status_history_full"),
        "{}",
        r.text
    );
    assert!(
        r.json["message"].as_str().unwrap().contains(last),
        "{}",
        r.text
    );
    // Still full on a retry, never a 500; repeating the current status is still a harmless 202.
    assert_eq!(report("sold").error_code(), "status_history_full");
    let again = report(last);
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["previous_status"], last);
    // The auction and its lead stay readable.
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["post"]["status"], "sold");
}

fn buyer_host_names_resolve_off_the_core(driver: Driver) {
    let env = Env::start(driver, vec![fixed("named", 30.0)], |cfg, fleet| {
        // A buyer reached by name, through the resolver threads.
        let named = &mut cfg.buyers[0];
        named.ping_url = named.ping_url.replace("127.0.0.1", "localhost");
        named.post_url = named.post_url.replace("127.0.0.1", "localhost");
        assert!(
            named.ping_url.starts_with("http://localhost:"),
            "{}",
            named.ping_url
        );
        // A buyer whose host name does not resolve (`.invalid` never does, RFC 2606).
        let mut lost = buyer(fleet, "lost");
        lost.ping_url = "http://gavel-no-such-host.invalid:9/ping".into();
        lost.post_url = "http://gavel-no-such-host.invalid:9/post".into();
        cfg.buyers.push(lost);
    });
    // Twice: the second auction finds both answers (the address and the failure) in the cache.
    for _ in 0..2 {
        let r = env.ping(&ping_body());
        assert_eq!(r.json["status"], "won", "{}", r.text);
        assert_eq!(
            (
                r.json["buyers_pinged"].as_u64(),
                r.json["bids_received"].as_u64()
            ),
            (Some(2), Some(1)),
            "{}",
            r.text
        );
        let id = r.json["auction_id"].as_str().unwrap();
        let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
        let buyers = rec.json["buyers"].as_array().unwrap();
        let find = |id: &str| buyers.iter().find(|b| b["buyer_id"] == id).unwrap();
        assert_eq!(rec.json["winner"]["buyer_id"], "named", "{}", rec.text);
        let lost = find("lost");
        assert_eq!(lost["outcome"], "error", "{lost}");
        let reason = lost["reject_reason"].as_str().unwrap();
        assert!(["dns_error", "dns_timeout"].contains(&reason), "{lost}");
        assert!(
            lost["reject_detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{lost}"
        );
        // The lead reaches the named buyer too.
        let token = r.json["bid"]["bid_token"].as_str().unwrap();
        let p = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
        assert_eq!(p.status, 201, "{}", p.text);
    }
    assert_eq!(env.fleet.log().pings("named"), 2);
}

/// Every filter kind and attribute op on one server: each buyer has one filter, set up either so
/// the test ping passes it (`*_ok`) or so it refuses the ping (`*_no`). A second ping without the
/// optional fields shows that a missing value is refused by the filter that needs it, except by
/// `not_in`.
fn buyer_filters_on_every_ping_field(driver: Driver) {
    use gavel::config::{AttributeOp as Op, AttributeRule, CountRange, FilterValue as V};
    let rule = |key: &str, op: Op, f: &dyn Fn(&mut AttributeRule)| {
        let mut r = AttributeRule::new(key, op);
        f(&mut r);
        r
    };
    let s = |v: &str| V::Str(v.to_owned());
    // (buyer, its filters, the reason it refuses the full ping with, and the one without the
    // optional fields; None: it is pinged).
    type Case = (
        &'static str,
        gavel::config::BuyerFilters,
        Option<&'static str>,
        Option<&'static str>,
    );
    let mut cases: Vec<Case> = Vec::new();
    let mut case = |id, set: &dyn Fn(&mut gavel::config::BuyerFilters), full, bare| {
        let mut f = gavel::config::BuyerFilters::default();
        set(&mut f);
        cases.push((id, f, full, bare));
    };
    let sub = Some("sub_vertical_not_allowed");
    case(
        "sub_ok",
        &|f| f.sub_verticals = vec!["non_standard".into(), "standard".into()],
        None,
        sub,
    );
    case(
        "sub_no",
        &|f| f.sub_verticals = vec!["standard".into()],
        sub,
        sub,
    );
    let ins = Some("currently_insured_mismatch");
    case("ins_ok", &|f| f.currently_insured = Some(true), None, ins);
    case("ins_no", &|f| f.currently_insured = Some(false), ins, ins);
    let veh = Some("vehicle_count_out_of_range");
    case(
        "veh_ok",
        &|f| {
            f.vehicle_count = Some(CountRange {
                min: Some(1),
                max: Some(2),
            })
        },
        None,
        veh,
    );
    case(
        "veh_no",
        &|f| {
            f.vehicle_count = Some(CountRange {
                min: Some(3),
                max: None,
            })
        },
        veh,
        veh,
    );
    let age = Some("driver_age_band_not_allowed");
    case(
        "age_ok",
        &|f| f.driver_age_bands = vec!["35-44".into()],
        None,
        age,
    );
    case(
        "age_no",
        &|f| f.driver_age_bands = vec!["18-24".into(), "65+".into()],
        age,
        age,
    );
    let eq = Some("attribute_not_equal");
    case(
        "eq_ok",
        &|f| f.attributes = vec![rule("credit_band", Op::Eq, &|r| r.value = Some(s("good")))],
        None,
        eq,
    );
    case(
        "eq_no",
        &|f| {
            f.attributes = vec![rule("homeowner", Op::Eq, &|r| {
                r.value = Some(V::Bool(false))
            })]
        },
        eq,
        eq,
    );
    let within = Some("attribute_not_allowed");
    case(
        "in_ok",
        &|f| {
            f.attributes = vec![rule("credit_band", Op::In, &|r| {
                r.values = vec![s("good"), s("excellent")]
            })]
        },
        None,
        within,
    );
    case(
        "in_no",
        &|f| {
            f.attributes = vec![rule("credit_band", Op::In, &|r| {
                r.values = vec![s("excellent")]
            })]
        },
        within,
        within,
    );
    // A missing value is in no list, so `not_in` lets the bare ping through.
    case(
        "not_in_ok",
        &|f| {
            f.attributes = vec![rule("credit_band", Op::NotIn, &|r| {
                r.values = vec![s("poor")]
            })]
        },
        None,
        None,
    );
    case(
        "not_in_no",
        &|f| {
            f.attributes = vec![rule("credit_band", Op::NotIn, &|r| {
                r.values = vec![s("good"), s("fair")]
            })]
        },
        Some("attribute_denied"),
        None,
    );
    let range = Some("attribute_out_of_range");
    case(
        "range_ok",
        &|f| {
            f.attributes = vec![rule("fico", Op::Range, &|r| {
                r.min = Some(700.0);
                r.max = Some(850.0)
            })]
        },
        None,
        range,
    );
    case(
        "range_no",
        &|f| f.attributes = vec![rule("fico", Op::Range, &|r| r.min = Some(720.0))],
        range,
        range,
    );
    let missing = Some("attribute_missing");
    case(
        "exists_ok",
        &|f| f.attributes = vec![rule("homeowner", Op::Exists, &|_| {})],
        None,
        missing,
    );
    case(
        "exists_no",
        &|f| f.attributes = vec![rule("bankruptcy", Op::Exists, &|_| {})],
        missing,
        missing,
    );
    // Rules are ANDed: the first holds, the second refuses.
    case(
        "and_no",
        &|f| {
            f.attributes = vec![
                rule("credit_band", Op::Eq, &|r| r.value = Some(s("good"))),
                rule("fico", Op::Range, &|r| r.max = Some(600.0)),
            ]
        },
        range,
        eq,
    );
    let mocks = cases.iter().map(|(id, ..)| fixed(id, 5.0)).collect();
    let filters: Vec<_> = cases.iter().map(|(_, f, ..)| f.clone()).collect();
    let env = Env::start(driver, mocks, |cfg, _| {
        for (b, f) in cfg.buyers.iter_mut().zip(filters) {
            b.filters = f;
        }
    });
    let outcomes = |body: &serde_json::Value| {
        let r = env.ping(body);
        assert_eq!(r.status, 200, "{}", r.text);
        let rec = env.get(
            &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
            Some(OPERATOR),
        );
        assert_eq!(rec.status, 200, "{}", rec.text);
        rec.json["buyers"].as_array().unwrap().clone()
    };
    let check = |buyers: &[serde_json::Value],
                 which: &str,
                 want: &dyn Fn(&Case) -> Option<&'static str>| {
        for c in &cases {
            let b = buyers
                .iter()
                .find(|b| b["buyer_id"] == c.0)
                .unwrap_or_else(|| panic!("{which}: no outcome for {}", c.0));
            match want(c) {
                Some(reason) => {
                    assert_eq!(b["outcome"], "filtered", "{which}: {b}");
                    assert_eq!(b["reject_reason"], reason, "{which}: {b}");
                }
                None => assert_ne!(b["outcome"], "filtered", "{which}: {b}"),
            }
        }
    };
    let mut full = ping_body();
    full["attributes"] =
        json!({"credit_band": "good", "homeowner": true, "fico": 710, "ratio": 0.5});
    check(&outcomes(&full), "full ping", &|c| c.2);
    let mut bare = ping_body();
    for k in [
        "sub_vertical",
        "currently_insured",
        "vehicle_count",
        "driver_age_band",
    ] {
        bare.as_object_mut().unwrap().remove(k);
    }
    check(&outcomes(&bare), "bare ping", &|c| c.3);
}
