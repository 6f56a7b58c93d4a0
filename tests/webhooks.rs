//! Webhooks to sellers (CONTRACT §8) through the real server: events a sale and a status report
//! cause, Standard Webhooks signatures checked with the official crate, the retry schedule,
//! `Retry-After`, exhaustion and redelivery by hand (CLI), 410 disabling an endpoint, and a slow
//! receiver never delaying pings or posts. The kill -9 case lives in tests/crash.rs.

// Test threads are not event loops: sleeping in them is how the tests wait for deliveries.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::receiver::{Answer, Receiver};
use common::*;
use gavel::config::{Config, Driver, WebhookConfig};
use gavel::webhooks::Secret;

const BUYER_HI: &str = "gv_test_webhooks_buyer_hi_0000000000000000";
const WAIT: Duration = Duration::from_secs(15);

fn driver() -> Driver {
    drivers()[0]
}

fn endpoint(
    id: &str,
    url: String,
    client: Option<&str>,
    secrets: &[&str],
    events: &[&str],
) -> WebhookConfig {
    WebhookConfig {
        id: id.into(),
        tenant: gavel::config::Tenant::Sandbox,
        seller: client.map(str::to_string),
        url,
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        secrets_env: None,
        events: events.iter().map(|s| s.to_string()).collect(),
        enabled: true,
    }
}

fn schedule(cfg: &mut Config, ms: &[u64]) {
    cfg.webhook_delivery.retry_schedule_ms = ms.to_vec();
}

/// Ping then post; returns the ping answer and the post answer.
fn sell(env: &Env) -> (serde_json::Value, Resp) {
    let ping = env.ping(&ping_body());
    assert_eq!(ping.status, 200, "{}", ping.text);
    assert_eq!(ping.json["status"], "won", "{}", ping.text);
    let id = ping.json["auction_id"].as_str().unwrap();
    let token = ping.json["bid"]["bid_token"].as_str().unwrap();
    let post = env.post("/v1/post", Some(TOKEN), &post_body(id, token).to_string());
    assert_eq!(post.status, 201, "{}", post.text);
    (ping.json, post)
}

fn events_of(env: &Env, query: &str) -> Vec<serde_json::Value> {
    let r = env.get(&format!("/v1/admin/webhooks/events{query}"), Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["deliveries"].as_array().unwrap().clone()
}

fn endpoint_state(env: &Env, id: &str) -> serde_json::Value {
    let r = env.get("/v1/admin/webhooks", Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("endpoint {id} listed: {}", r.text))
        .clone()
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    gavel_testkit::wait_until(what, WAIT, done)
}

/// The server-clock times (unix ms) of the first delivery of `event` once it has recorded `n`
/// attempts: each attempt's, and when the next one is due (`None` once none is).
fn recorded_attempts(env: &Env, event: &str, n: usize) -> (Vec<u64>, Option<u64>) {
    let ms = |v: &serde_json::Value| gavel::auction::parse_rfc3339_ms(v.as_str().unwrap()).unwrap();
    let mut out = (Vec::new(), None);
    wait_until(&format!("{n} attempts recorded"), || {
        let r = env.get(
            &format!("/v1/admin/webhooks/events/{event}"),
            Some(OPERATOR),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let d = &r.json["deliveries"][0];
        let attempts = d["attempts"].as_array().unwrap();
        out = (
            attempts.iter().map(|a| ms(&a["at"])).collect(),
            d["next_attempt_at"]
                .as_str()
                .map(|_| ms(&d["next_attempt_at"])),
        );
        attempts.len() == n
    });
    out
}

#[test]
fn a_sale_and_a_status_report_reach_the_seller_signed_while_its_secret_rotates() {
    let (old, new) = (Secret::generate(), Secret::generate());
    let rx = Receiver::start(204);
    let (crm, other) = (rx.url("/crm"), rx.url("/other"));
    let (o, n) = (old.clone(), new.clone());
    let env = Env::start(
        driver(),
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        move |cfg, _| {
            cfg.webhooks = vec![
                endpoint(
                    "crm",
                    crm,
                    Some("it-all"),
                    &[&n, &o],
                    &["lead.posted", "lead.status_changed", "auction.closed"],
                ),
                // Another seller's endpoint hears nothing of this seller's leads.
                endpoint(
                    "other",
                    other,
                    Some("someone-else"),
                    &[&n],
                    &["lead.posted"],
                ),
            ];
            cfg.sellers.push(gavel::parties::implicit(
                gavel::config::Tenant::Sandbox,
                "someone-else",
            ));
            cfg.tokens.push(buyer_token("buyer-hi", "hi", BUYER_HI));
        },
    );
    let (ping, post) = sell(&env);
    let lead_uuid = post.json["lead_uuid"].as_str().unwrap().to_string();
    let r = env.post(
        &format!("/v1/leads/{lead_uuid}/status"),
        Some(BUYER_HI),
        r#"{"status":"contacted"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text);
    // A repeat changes nothing and emits nothing.
    let r = env.post(
        &format!("/v1/leads/{lead_uuid}/status"),
        Some(BUYER_HI),
        r#"{"status":"contacted"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text);

    rx.wait_for(WAIT, "three events", |h| h.len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    let hits = rx.hits_at("/crm");
    assert_eq!(hits.len(), 3, "one delivery per event: {hits:?}");
    assert!(
        rx.hits_at("/other").is_empty(),
        "another seller's endpoint got nothing"
    );
    for h in &hits {
        for secret in [&old, &new] {
            h.verify(secret)
                .unwrap_or_else(|e| panic!("{} verifies with either secret: {e}", h.id));
        }
        assert!(h.verify(&Secret::generate()).is_err());
        let body = h.json();
        assert_eq!(body["id"], h.id.as_str(), "the body's id is the webhook-id");
        assert!(h.id.starts_with("evt_"));
        let text = String::from_utf8_lossy(&h.body);
        for pii in PII {
            assert!(!text.contains(pii), "{pii} leaked into {text}");
        }
    }
    let by_type = |t: &str| {
        hits.iter()
            .map(|h| h.json())
            .find(|b| b["type"] == t)
            .unwrap_or_else(|| panic!("a {t} event"))
    };
    let closed = by_type("auction.closed");
    assert_eq!(closed["data"]["auction_id"], ping["auction_id"]);
    assert_eq!(closed["data"]["status"], "won");
    assert_eq!(closed["data"]["amount"], ping["bid"]["amount"]);
    assert_eq!(closed["data"]["bids"], 2);
    let posted = by_type("lead.posted");
    assert_eq!(
        posted["data"], post.json,
        "lead.posted carries the post's answer"
    );
    let changed = by_type("lead.status_changed");
    assert_eq!(changed["data"]["lead_uuid"], lead_uuid.as_str());
    assert_eq!(changed["data"]["status"], "contacted");
    assert_eq!(changed["data"]["previous_status"], "sold");

    // The admin API shows the same deliveries, payload byte for byte.
    wait_until("three deliveries recorded", || {
        events_of(&env, "?state=delivered&endpoint=crm").len() == 3
    });
    let one = env.get(
        &format!("/v1/admin/webhooks/events/{}", hits[0].id),
        Some(OPERATOR),
    );
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["deliveries"][0]["payload"], hits[0].json());
    assert_eq!(one.json["deliveries"][0]["attempts"][0]["http_status"], 204);
    let state = endpoint_state(&env, "crm");
    assert_eq!(
        (
            state["pending"].clone(),
            state["attempts"]["delivered"].clone()
        ),
        (0.into(), 3.into())
    );
    assert_eq!(
        env.metric_sum("gavel_webhook_deliveries_total{endpoint=\"crm\",result=\"delivered\"}"),
        3
    );
    // Another tenant sees none of it.
    let r = env.get(
        &format!("/v1/admin/webhooks/events/{}", hits[0].id),
        Some(LIVE_OPERATOR),
    );
    assert_eq!(r.status, 404);
    let r = env.post(
        &format!("/v1/admin/webhooks/events/{}/replay", hits[0].id),
        Some(LIVE_OPERATOR),
        "",
    );
    assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    assert!(events_of_live(&env).is_empty());
}

fn events_of_live(env: &Env) -> Vec<serde_json::Value> {
    let r = env.get("/v1/admin/webhooks/events", Some(LIVE_OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["deliveries"].as_array().unwrap().clone()
}

#[test]
fn a_receiver_failing_three_times_gets_the_same_event_on_schedule_until_it_succeeds() {
    let secret = Secret::generate();
    let rx = Receiver::with_plan(Box::new(|_, earlier| {
        Answer::status(if earlier < 3 { 500 } else { 200 })
    }));
    let (url, s) = (rx.url("/hook"), secret.clone());
    let env = Env::start_with_clock(
        driver(),
        vec![fixed("hi", 30.0)],
        move |cfg, _| {
            cfg.webhooks = vec![endpoint("crm", url, None, &[&s], &["lead.posted"])];
            // Whole seconds apart, so each attempt's webhook-timestamp is later than the last.
            schedule(cfg, &[1000, 1000, 1000, 1000, 1000]);
        },
        manual_clock(),
    );
    sell(&env);
    // The server's clock stands still: the sale stamped the first attempt due at once, and each
    // retry is due once the test moves the clock on by the schedule's second. The dispatcher
    // notices a move within its idle wait (monotonic, at most 1 s).
    for n in 1..=3 {
        rx.wait_for(WAIT, "the next attempt", |h| h.len() >= n);
        let (at, next) = recorded_attempts(&env, &rx.hits()[0].id, n);
        assert_eq!(next, Some(at[n - 1] + 1000), "the schedule says 1 s");
        env.clock.advance(1000);
    }
    rx.wait_for(WAIT, "four attempts", |h| h.len() >= 4);
    let (at, next) = recorded_attempts(&env, &rx.hits()[0].id, 4);
    assert_eq!(next, None, "nothing due after the success");
    env.clock.advance(1500);
    let hits = rx.hits();
    assert_eq!(hits.len(), 4, "nothing after the success");
    assert!(
        hits.iter().all(|h| h.id == hits[0].id),
        "one webhook-id for every attempt"
    );
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    assert_eq!(
        rx.delivered("/hook").len(),
        1,
        "exactly one successful delivery"
    );
    for h in &hits {
        h.verify(&secret).expect("every attempt verifies");
    }
    for pair in hits.windows(2) {
        assert!(pair[1].timestamp > pair[0].timestamp, "timestamps increase");
    }
    // The gaps on the server's clock, which stamps the attempts.
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (950..2500).contains(&gap),
            "retry {gap} ms after the last, schedule says 1 s"
        );
    }
    let ev = env.get(
        &format!("/v1/admin/webhooks/events/{}", hits[0].id),
        Some(OPERATOR),
    );
    let d = &ev.json["deliveries"][0];
    assert_eq!(d["state"], "delivered");
    let results: Vec<_> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["result"].clone())
        .collect();
    assert_eq!(results, ["failed", "failed", "failed", "delivered"]);
    assert_eq!(
        env.metric_sum("gavel_webhook_deliveries_total{endpoint=\"crm\",result=\"failed\"}"),
        3
    );
}

#[test]
fn retry_after_is_honoured_exhausted_events_stay_listed_and_the_cli_redelivers_them() {
    let secret = Secret::generate();
    let rx = Receiver::with_plan(Box::new(|_, earlier| {
        let mut a = Answer::status(503);
        if earlier == 0 {
            a.headers.push(("Retry-After".into(), "2".into()));
        }
        a
    }));
    let (url, s) = (rx.url("/hook"), secret.clone());
    let env = Env::start_with_clock(
        driver(),
        vec![fixed("hi", 30.0)],
        move |cfg, _| {
            cfg.webhooks = vec![endpoint("crm", url, None, &[&s], &["lead.posted"])];
            schedule(cfg, &[100, 100]);
        },
        manual_clock(),
    );
    sell(&env);
    // The server's clock moves only when the test moves it: to each retry the dispatcher
    // scheduled (see the schedule test).
    rx.wait_for(WAIT, "the first attempt", |h| !h.is_empty());
    let event = rx.hits()[0].id.clone();
    for n in 1..=2 {
        let (at, next) = recorded_attempts(&env, &event, n);
        env.clock
            .advance(next.expect("a retry is scheduled") - at[n - 1]);
        rx.wait_for(WAIT, "the next attempt", |h| h.len() > n);
    }
    let (at, _) = recorded_attempts(&env, &event, 3);
    assert!(
        at[1] - at[0] >= 1950,
        "Retry-After: 2 is honoured over a 100 ms schedule"
    );
    assert!(at[2] - at[1] < 1500);
    wait_until("the delivery to be exhausted", || {
        events_of(&env, "?state=exhausted").len() == 1
    });
    // Nothing is due any more, however late it gets; the dispatcher's own wake-ups are
    // monotonic, hence the short wait.
    env.clock.advance(400);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(rx.hits().len(), 3, "1 try + 2 retries, then nothing");
    assert_eq!(
        events_of(&env, "?state=exhausted")[0]["event_id"],
        event.as_str()
    );
    assert_eq!(
        env.metric_sum("gavel_webhook_exhausted_total{endpoint=\"crm\"}"),
        1
    );
    assert_eq!(
        env.metric_sum("gavel_webhook_outbox_depth{endpoint=\"crm\"}"),
        0
    );

    // Bad queries name the problem; unknown events are 404.
    let r = env.get("/v1/admin/webhooks/events?state=lost", Some(OPERATOR));
    assert_eq!((r.status, r.error_code()), (422, "invalid_query"));
    assert!(
        r.json["message"].as_str().unwrap().starts_with("state "),
        "{}",
        r.text
    );
    // `type` is an enum too: an unknown event type is refused, not answered with an empty page.
    let r = env.get("/v1/admin/webhooks/events?type=AAA", Some(OPERATOR));
    assert_eq!((r.status, r.error_code()), (422, "invalid_query"));
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .starts_with("type must be one of"),
        "{}",
        r.text
    );
    let r = env.get("/v1/admin/webhooks/events?type=lead.posted", Some(OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = env.get("/v1/admin/webhooks/events?limit=ten", Some(OPERATOR));
    assert_eq!((r.status, r.error_code()), (422, "invalid_query"));
    let r = env.post(
        "/v1/admin/webhooks/events/evt_nope/replay",
        Some(OPERATOR),
        "",
    );
    assert_eq!(r.status, 404);

    // The receiver is fixed; an operator redelivers the event by hand.
    rx.set_plan(Box::new(|_, _| Answer::status(200)));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["webhooks", "replay", "--url", &env.base, "--event", &event])
        .env("GAVEL_ADMIN_TOKEN", OPERATOR)
        .output()
        .expect("gavel runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&event));
    rx.wait_for(WAIT, "the redelivery", |h| h.len() >= 4);
    let last = rx.hits().pop().unwrap();
    assert_eq!((last.id.as_str(), last.status), (event.as_str(), 200));
    last.verify(&secret).unwrap();
    wait_until("the delivery to be recorded", || {
        events_of(&env, "?state=delivered").len() == 1
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args([
            "webhooks",
            "events",
            "--url",
            &env.base,
            "--state",
            "delivered",
        ])
        .env("GAVEL_ADMIN_TOKEN", OPERATOR)
        .output()
        .expect("gavel runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&event) && listing.contains("attempts=4"),
        "{listing}"
    );
}

#[test]
fn gone_disables_the_endpoint_across_restarts_until_it_is_enabled_again() {
    let rx = Receiver::start(410);
    let secret = Secret::generate();
    let (url, s) = (rx.url("/hook"), secret.clone());
    let mut env = Env::start(driver(), vec![fixed("hi", 30.0)], move |cfg, _| {
        cfg.webhooks = vec![endpoint("crm", url, None, &[&s], &["lead.posted"])];
        schedule(cfg, &[50, 50, 50]);
    });
    sell(&env);
    rx.wait_for(WAIT, "the first delivery", |h| !h.is_empty());
    wait_until("the endpoint to be disabled", || {
        endpoint_state(&env, "crm")["disabled"]["reason"] == "gone"
    });
    assert_eq!(
        env.metric_sum("gavel_webhook_endpoint_disabled{endpoint=\"crm\"}"),
        1
    );
    let first = events_of(&env, "");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["state"], "disabled");

    // Later sales queue nothing for it, across a restart too.
    sell(&env);
    env.restart();
    assert_eq!(endpoint_state(&env, "crm")["disabled"]["reason"], "gone");
    sell(&env);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.hits().len(), 1, "no request after the 410");
    assert_eq!(events_of(&env, "").len(), 1);
    let replay_first = |env: &Env| {
        env.post(
            &format!(
                "/v1/admin/webhooks/events/{}/replay",
                first[0]["event_id"].as_str().unwrap()
            ),
            Some(OPERATOR),
            "",
        )
    };
    let r = replay_first(&env);
    assert_eq!((r.status, r.error_code()), (409, "endpoint_inactive"));

    // Enabled again: new events flow, and the one refused can be sent by hand.
    rx.set_plan(Box::new(|_, _| Answer::status(200)));
    let r = env.post("/v1/admin/webhooks/crm/enable", Some(OPERATOR), "");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["disabled"].is_null());
    sell(&env);
    let r = replay_first(&env);
    assert_eq!(r.status, 202, "{}", r.text);
    rx.wait_for(WAIT, "two deliveries after enabling", |h| {
        h.iter().filter(|h| h.status == 200).count() == 2
    });
    let ids: HashSet<String> = rx.delivered("/hook").into_iter().map(|h| h.id).collect();
    assert!(ids.contains(first[0]["event_id"].as_str().unwrap()));
    for h in rx.hits() {
        h.verify(&secret).unwrap();
    }
    let r = env.post("/v1/admin/webhooks/nope/enable", Some(OPERATOR), "");
    assert_eq!(r.status, 404);
}

#[test]
fn a_slow_receiver_never_delays_pings_or_posts() {
    const STALL_MS: u64 = 3000;
    let rx = Receiver::with_plan(Box::new(|_, _| Answer {
        status: 200,
        headers: Vec::new(),
        stall: Duration::from_millis(STALL_MS),
    }));
    let fast = Receiver::start(200);
    let secret = Secret::generate();
    let (url, fast_url, s) = (rx.url("/hook"), fast.url("/fast"), secret.clone());
    let env = Env::start(
        driver(),
        vec![fixed("hi", 30.0), fixed("lo", 20.0)],
        move |cfg, _| {
            cfg.webhooks = vec![
                endpoint("crm", url, None, &[&s], &["lead.posted", "auction.closed"]),
                endpoint("fast", fast_url, None, &[&s], &["lead.posted"]),
            ];
            cfg.webhook_delivery.max_in_flight_per_endpoint = 1;
            cfg.webhook_delivery.threads = 2;
        },
    );
    let mut auctions = Vec::new();
    for _ in 0..8 {
        let (ping, _) = sell(&env);
        auctions.push(ping["auction_id"].as_str().unwrap().to_string());
    }
    // 16 events queued, the receiver takes one per 3 s: most still wait while every flow is done.
    let depth = env.metric_sum("gavel_webhook_outbox_depth{endpoint=\"crm\"}");
    assert!(
        depth >= 8,
        "deliveries were still queued when the flows ended: depth {depth}"
    );
    // The stalled endpoint holds one sender; the other endpoint gets every event meanwhile.
    fast.wait_for(WAIT, "every event at the fast endpoint", |h| h.len() == 8);
    let depth = env.metric_sum("gavel_webhook_outbox_depth{endpoint=\"crm\"}");
    assert!(
        depth >= 8,
        "the slow endpoint is still behind: depth {depth}"
    );
    // Gavel's own record of each auction: the ping closed when the buyers answered and each
    // delivery to a buyer took buyer time, neither waited for the stalled receiver.
    for id in &auctions {
        let a = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
        assert_eq!(a.status, 200, "{}", a.text);
        let created =
            gavel::auction::parse_rfc3339_ms(a.json["created_at"].as_str().unwrap()).unwrap();
        let closed =
            gavel::auction::parse_rfc3339_ms(a.json["closed_at"].as_str().unwrap()).unwrap();
        assert!(
            closed - created < STALL_MS,
            "auction {id} took {} ms",
            closed - created
        );
        for p in a.json["post"]["attempts"]
            .as_array()
            .expect("post attempts")
        {
            let ms = p["latency_ms"].as_f64().unwrap();
            assert!(ms < STALL_MS as f64, "post attempt took {ms} ms");
        }
    }
}

#[test]
fn a_receiver_too_slow_to_answer_or_redirecting_fails_the_attempt() {
    let rx = Receiver::with_plan(Box::new(|_, earlier| match earlier {
        // Longer than timeout_ms: Gavel gives up and retries.
        0 => Answer {
            status: 200,
            headers: Vec::new(),
            stall: Duration::from_millis(1200),
        },
        // A redirect is not followed: 3xx fails the attempt.
        1 => {
            let mut a = Answer::status(302);
            a.headers.push(("Location".into(), "/elsewhere".into()));
            a
        }
        _ => Answer::status(200),
    }));
    let secret = Secret::generate();
    let (url, s) = (rx.url("/hook"), secret.clone());
    let env = Env::start(driver(), vec![fixed("hi", 30.0)], move |cfg, _| {
        cfg.webhooks = vec![endpoint("crm", url, None, &[&s], &["lead.posted"])];
        cfg.webhook_delivery.timeout_ms = 300;
        schedule(cfg, &[100, 100, 100]);
    });
    sell(&env);
    let mut event = String::new();
    wait_until("the delivery to be recorded", || {
        let d = events_of(&env, "?state=delivered");
        if let Some(first) = d.first() {
            event = first["event_id"].as_str().unwrap().to_string();
        }
        d.len() == 1
    });
    let ev = env.get(
        &format!("/v1/admin/webhooks/events/{event}"),
        Some(OPERATOR),
    );
    let attempts = ev.json["deliveries"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    let results: Vec<_> = attempts.iter().map(|a| a["result"].clone()).collect();
    assert_eq!(results, ["timeout", "failed", "delivered"], "{}", ev.text);
    assert!(attempts[0]["http_status"].is_null());
    assert!(attempts[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(attempts[1]["http_status"], 302);
    assert!(
        rx.hits_at("/elsewhere").is_empty(),
        "the redirect was not followed"
    );
    assert_eq!(
        env.metric_sum("gavel_webhook_deliveries_total{endpoint=\"crm\",result=\"timeout\"}"),
        1
    );
}

/// `ServerHandle::reload` (what SIGHUP calls) applies `[[webhooks]]` on every core and in the
/// worker: a changed URL and secret take the next event, a new endpoint gets it, a removed one
/// gets nothing more while its queued delivery waits in the outbox, and goes out once the
/// endpoint is configured again. Counters follow an endpoint's id across reloads.
#[test]
fn a_reload_adds_removes_and_changes_webhook_endpoints() {
    let (first, second) = (Secret::generate(), Secret::generate());
    // `/gone` fails until the test says otherwise, so its delivery stays queued.
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let rx = Receiver::with_plan(Box::new(move |h, _| {
        let fail = h.path == "/gone" && f.load(std::sync::atomic::Ordering::Relaxed);
        Answer::status(if fail { 500 } else { 204 })
    }));
    let hook = |id: &str, path: &str, secret: &str| {
        endpoint(id, rx.url(path), None, &[secret], &["lead.posted"])
    };
    let (crm, gone) = (hook("crm", "/crm", &first), hook("gone", "/gone", &first));
    let env = Env::start_with_clock(
        driver(),
        vec![fixed("hi", 30.0)],
        move |cfg, _| {
            cfg.webhooks = vec![crm, gone];
            schedule(cfg, &[1000]);
        },
        manual_clock(),
    );
    sell(&env);
    rx.wait_for(WAIT, "both endpoints tried", |h| h.len() >= 2);
    wait_until("the failed attempt recorded", || {
        endpoint_state(&env, "gone")["attempts"]["failed"] == 1
    });
    let queued = rx.hits_at("/gone")[0].id.clone();

    let mut cfg = env.config.clone();
    cfg.webhooks = vec![hook("crm", "/crm2", &second), hook("late", "/late", &first)];
    gavel::cli::check_config(&cfg, "reload.toml").unwrap();
    env.server().reload(&cfg).expect("the reload applies");
    let r = env.get("/v1/admin/webhooks", Some(OPERATOR));
    let ids: Vec<&str> = r.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["crm", "late"], "{}", r.text);
    let crm = endpoint_state(&env, "crm");
    assert_eq!(crm["url"], rx.url("/crm2").as_str());
    assert_eq!(
        crm["attempts"]["delivered"], 1,
        "counters stay with the id: {crm}"
    );

    // The removed endpoint's retry falls due; the worker leaves it alone.
    env.clock.advance(1000);
    failing.store(false, std::sync::atomic::Ordering::Relaxed);
    sell(&env);
    rx.wait_for(WAIT, "the new URL and the new endpoint", |_| {
        rx.hits_at("/crm2").len() == 1 && rx.hits_at("/late").len() == 1
    });
    // Longer than the dispatcher's idle wait (1 s): anything still going to the old URL or the
    // removed endpoint would have arrived.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.hits_at("/crm").len(), 1, "nothing more to the old URL");
    assert_eq!(
        rx.hits_at("/gone").len(),
        1,
        "nothing to the removed endpoint"
    );
    assert_eq!(rx.hits_at("/crm2").len(), 1);
    let moved = &rx.hits_at("/crm2")[0];
    moved.verify(&second).expect("signed with the new secret");
    assert!(moved.verify(&first).is_err(), "not with the old one");
    assert_eq!(
        rx.hits_at("/late")[0].id,
        moved.id,
        "one event, both endpoints"
    );
    let waiting = events_of(&env, "?endpoint=gone&state=pending");
    assert_eq!(waiting.len(), 1, "the removed endpoint's delivery waits");
    assert_eq!(waiting[0]["event_id"], queued.as_str());

    // Back in the file: its queued delivery goes out, the same event.
    cfg.webhooks.push(hook("gone", "/gone", &first));
    env.server().reload(&cfg).expect("the reload applies");
    rx.wait_for(WAIT, "the queued delivery", |_| {
        rx.hits_at("/gone").len() == 2
    });
    assert_eq!(rx.hits_at("/gone")[1].id, queued);
    assert_eq!(rx.hits_at("/gone")[1].status, 204);
    wait_until("the outbox of gone empty", || {
        endpoint_state(&env, "gone")["pending"] == 0
    });
}
