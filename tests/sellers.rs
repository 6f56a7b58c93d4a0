//! Sellers managed while Gavel runs, and their limits, through the real server: the operator-only
//! admin API (create, show, list, update, suspend, resume; ids per tenant; validation naming the
//! field), suspension refusing a seller's credentials on ping, post, one-call leads and seed while
//! its records stay readable, durability across a restart, `ServerHandle::reload` applying
//! `[[sellers]]`, and the per-seller limits of CONTRACT §7 (concurrent auctions, pings per second,
//! won-but-unposted auctions) holding for one seller without touching another.
// Test threads are not event loops: sleeping in them is how tests wait for events.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use gavel::config::{Config, Driver, Scope, SellerConfig, Tenant, TokenConfig};
use serde_json::{json, Value};

/// The sandbox operator (scopes admin and reports).
const OPERATOR: &str = "gv_test_sellers_it_operator_000000000000000";
/// The production operator.
const OPERATOR_LIVE: &str = "gv_live_sellers_it_operator_000000000000000";
/// Seller `seller-a` (configured), every seller scope.
const SELLER_A: &str = "gv_test_sellers_it_seller_a_000000000000000";
/// Seller `seller-b` (configured), every seller scope.
const SELLER_B: &str = "gv_test_sellers_it_seller_b_000000000000000";

const WAIT: Duration = Duration::from_secs(20);

fn token(client: &str, tenant: Tenant, plain: &str, scopes: &[Scope]) -> TokenConfig {
    TokenConfig {
        client: client.into(),
        tenant,
        sha256: gavel::auth::sha256_hex(plain),
        scopes: scopes.iter().copied().collect(),
        buyer: None,
        seller: None,
        operator: false,
        requests_per_s: None,
    }
}

fn seller(id: &str) -> SellerConfig {
    SellerConfig {
        id: id.into(),
        name: String::new(),
        tenant: Tenant::Sandbox,
        max_concurrent_auctions: None,
        pings_per_s: None,
        max_unposted_auctions: None,
        reveal_winner: false,
        enabled: true,
    }
}

/// Adds the operators and sellers A and B (each with its token) to a test config.
fn parties(cfg: &mut Config) {
    let mut op = token(
        "it-operator",
        Tenant::Sandbox,
        OPERATOR,
        &[Scope::Admin, Scope::Reports],
    );
    op.operator = true;
    let mut op_live = token(
        "it-operator-live",
        Tenant::Production,
        OPERATOR_LIVE,
        &[Scope::Admin],
    );
    op_live.operator = true;
    let all = [
        Scope::Ping,
        Scope::Post,
        Scope::Reports,
        Scope::Dev,
        Scope::Status,
    ];
    let mut a = token("it-seller-a", Tenant::Sandbox, SELLER_A, &all);
    a.seller = Some("seller-a".into());
    let mut b = token("it-seller-b", Tenant::Sandbox, SELLER_B, &all);
    b.seller = Some("seller-b".into());
    cfg.tokens.extend([op, op_live, a, b]);
    cfg.sellers.extend([seller("seller-a"), seller("seller-b")]);
}

fn send(env: &Env, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    call(&env.base, method, path, Some(token), body.as_deref(), &[])
}

fn ping_as(env: &Env, token: &str) -> Resp {
    env.post("/v1/ping", Some(token), &ping_body().to_string())
}

fn post_won(env: &Env, token: &str, won: &Resp) -> Resp {
    let body = post_body(
        won.json["auction_id"].as_str().unwrap(),
        won.json["bid"]["bid_token"].as_str().unwrap(),
    );
    env.post("/v1/post", Some(token), &body.to_string())
}

fn lead_body() -> Value {
    let mut b = ping_body();
    b["lead"] = post_body("unused", "unused")["lead"].clone();
    b
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    gavel_testkit::wait_until(what, WAIT, done)
}

#[test]
fn only_the_operator_manages_sellers_and_ids_are_per_tenant() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        parties(cfg)
    });
    // Every seller route is the operator's: a seller token with `admin` finds nothing there.
    for (method, path, body) in [
        ("GET", "/v1/admin/sellers", None),
        ("POST", "/v1/admin/sellers", Some(json!({"id": "sneaky"}))),
        ("GET", "/v1/admin/sellers/it-all", None),
        (
            "PATCH",
            "/v1/admin/sellers/it-all",
            Some(json!({"name": "x"})),
        ),
        ("POST", "/v1/admin/sellers/it-all/suspend", None),
        ("POST", "/v1/admin/sellers/it-all/resume", None),
    ] {
        let r = send(&env, method, path, TOKEN, body);
        assert_eq!(
            (r.status, r.error_code()),
            (404, "not_found"),
            "{method} {path}: {}",
            r.text
        );
    }
    // The list: configured sellers and the implicit sellers of tokens that name no party.
    let list = send(&env, "GET", "/v1/admin/sellers", OPERATOR, None);
    assert_eq!(list.status, 200, "{}", list.text);
    let sources: Vec<(String, String)> = list.json["sellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("seller-a", "config"),
        ("seller-b", "config"),
        ("it-all", "implicit"),
    ] {
        assert!(
            sources.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {sources:?}"
        );
    }
    assert!(
        !sources.iter().any(|(id, _)| id == "it-live"),
        "another tenant's seller is not listed: {sources:?}"
    );

    // Create, then the same create again (answered again), then a clash.
    let def = json!({"id": "acme", "name": "Acme Leads", "pings_per_s": 50});
    let created = send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR,
        Some(def.clone()),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["source"], "api");
    assert_eq!(created.json["status"], "active");
    assert_eq!(created.json["tenant"], "sandbox");
    assert_eq!(created.json["limits"]["pings_per_s"], 50.0);
    assert_eq!(created.json["limits"]["max_concurrent_auctions"], 1000);
    assert_eq!(created.json["max_concurrent_auctions"], Value::Null);
    let again = send(&env, "POST", "/v1/admin/sellers", OPERATOR, Some(def));
    assert_eq!(again.status, 201, "{}", again.text);
    let clash = send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR,
        Some(json!({"id": "acme", "name": "Other"})),
    );
    assert_eq!((clash.status, clash.error_code()), (409, "seller_exists"));
    let implicit_clash = send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR,
        Some(json!({"id": "it-all"})),
    );
    assert_eq!(implicit_clash.status, 409, "{}", implicit_clash.text);
    // The same id in the other tenant is another seller.
    let live = send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR_LIVE,
        Some(json!({"id": "acme", "name": "Acme Production"})),
    );
    assert_eq!(live.status, 201, "{}", live.text);
    assert_eq!(live.json["tenant"], "production");
    let sandbox_acme = send(&env, "GET", "/v1/admin/sellers/acme", OPERATOR, None);
    assert_eq!(sandbox_acme.json["name"], "Acme Leads");

    // Validation names the field.
    for (body, field) in [
        (json!({"id": "Not An Id"}), "id"),
        (json!({"id": "ok-id", "pings_per_s": 0}), "pings_per_s"),
        (
            json!({"id": "ok-id", "max_unposted_auctions": 0}),
            "max_unposted_auctions",
        ),
        (json!({"id": "ok-id", "tenant": "production"}), "tenant"),
        (json!({"id": "ok-id", "colour": "blue"}), "colour"),
        (json!({"name": "no id"}), "id"),
    ] {
        let r = send(
            &env,
            "POST",
            "/v1/admin/sellers",
            OPERATOR,
            Some(body.clone()),
        );
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_payload");
        assert_eq!(r.field_names(), [field], "{body}");
    }

    // A merge patch changes name, limits and reveal_winner; null takes the default back.
    let patched = send(
        &env,
        "PATCH",
        "/v1/admin/sellers/acme",
        OPERATOR,
        Some(
            json!({"name": "Acme", "max_unposted_auctions": 5, "pings_per_s": null, "reveal_winner": true}),
        ),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["name"], "Acme");
    assert_eq!(patched.json["reveal_winner"], true);
    assert_eq!(patched.json["limits"]["max_unposted_auctions"], 5);
    assert_eq!(patched.json["pings_per_s"], Value::Null);
    assert_eq!(patched.json["limits"]["pings_per_s"], 1_000_000.0);
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/sellers/acme",
        OPERATOR,
        Some(json!({"enabled": false})),
    );
    assert_eq!(
        (r.status, r.field_names()),
        (422, vec!["enabled"]),
        "{}",
        r.text
    );
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/sellers/nobody",
        OPERATOR,
        Some(json!({"name": "x"})),
    );
    assert_eq!((r.status, r.error_code()), (404, "not_found"));
    let r = send(
        &env,
        "POST",
        "/v1/admin/sellers/nobody/suspend",
        OPERATOR,
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn a_suspended_sellers_credentials_are_refused_until_it_resumes() {
    let mut env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        parties(cfg)
    });
    let before = ping_as(&env, SELLER_A);
    assert_eq!(before.json["status"], "won", "{}", before.text);
    let auction_id = before.json["auction_id"].as_str().unwrap().to_string();

    let r = send(
        &env,
        "POST",
        "/v1/admin/sellers/seller-a/suspend",
        OPERATOR,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["status"].as_str(), r.json["enabled"].as_bool()),
        (Some("suspended"), Some(false))
    );
    let refused = |r: Resp, what: &str| {
        assert_eq!(
            (r.status, r.error_code()),
            (403, "seller_suspended"),
            "{what}: {}",
            r.text
        );
        assert!(
            r.json["message"].as_str().unwrap().contains("seller-a"),
            "{what}: {}",
            r.text
        );
    };
    refused(ping_as(&env, SELLER_A), "ping");
    refused(post_won(&env, SELLER_A, &before), "post");
    refused(
        env.post("/v1/leads", Some(SELLER_A), &lead_body().to_string()),
        "one-call lead",
    );
    refused(
        env.post("/v1/dev/seed", Some(SELLER_A), r#"{"count": 1}"#),
        "seed",
    );
    // Its records stay readable, and another seller is unaffected.
    let read = env.get(&format!("/v1/auctions/{auction_id}"), Some(SELLER_A));
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(ping_as(&env, SELLER_B).status, 200);

    // An implicit seller can be suspended too: from then on it is a stored seller.
    let r = send(
        &env,
        "POST",
        "/v1/admin/sellers/it-all/suspend",
        OPERATOR,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["source"], "api");
    assert_eq!(ping_as(&env, TOKEN).error_code(), "seller_suspended");

    // Suspension is durable for a seller the API stores; a config seller is the file's again
    // after a restart (the buyers' ownership rule: `enabled = false` in the file keeps it off).
    env.restart();
    assert_eq!(ping_as(&env, TOKEN).error_code(), "seller_suspended");
    assert_eq!(ping_as(&env, SELLER_A).status, 200);
    let r = send(
        &env,
        "POST",
        "/v1/admin/sellers/seller-a/suspend",
        OPERATOR,
        None,
    );
    assert_eq!(r.json["status"], "suspended", "{}", r.text);
    for id in ["seller-a", "it-all"] {
        let r = send(
            &env,
            "POST",
            &format!("/v1/admin/sellers/{id}/resume"),
            OPERATOR,
            None,
        );
        assert_eq!(r.json["status"], "active", "{}", r.text);
    }
    assert_eq!(ping_as(&env, TOKEN).status, 200);
    // The bid token from before the suspension still posts once its seller is back.
    let posted = post_won(&env, SELLER_A, &before);
    assert_eq!(posted.status, 201, "{}", posted.text);
}

#[test]
fn api_sellers_survive_a_restart_and_a_reload_applies_the_files_sellers() {
    let mut env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        parties(cfg)
    });
    let created = send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR,
        Some(json!({"id": "from-api", "max_concurrent_auctions": 7})),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    // An API change to a config seller lasts until the file is read again.
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/sellers/seller-b",
        OPERATOR,
        Some(json!({"name": "changed by the API"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    env.restart();
    let r = send(&env, "GET", "/v1/admin/sellers/from-api", OPERATOR, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["limits"]["max_concurrent_auctions"], 7);
    assert_eq!(r.json["created_at"], created.json["created_at"]);
    let b = send(&env, "GET", "/v1/admin/sellers/seller-b", OPERATOR, None);
    assert_eq!(
        b.json["name"], "",
        "the file wins again at start: {}",
        b.text
    );

    // A reload: a new seller and a changed one from the file; the API seller stays.
    let mut next = env.config.clone();
    next.sellers.push(SellerConfig {
        name: "New".into(),
        ..seller("seller-c")
    });
    next.sellers[0].max_concurrent_auctions = Some(3);
    env.server().reload(&next).expect("reload applies");
    let c = send(&env, "GET", "/v1/admin/sellers/seller-c", OPERATOR, None);
    assert_eq!(
        (c.status, c.json["source"].as_str()),
        (200, Some("config")),
        "{}",
        c.text
    );
    let a = send(&env, "GET", "/v1/admin/sellers/seller-a", OPERATOR, None);
    assert_eq!(a.json["limits"]["max_concurrent_auctions"], 3);
    let r = send(&env, "GET", "/v1/admin/sellers/from-api", OPERATOR, None);
    assert_eq!(r.status, 200);
    // A seller dropped from the file is gone after the next reload.
    next.sellers.retain(|s| s.id != "seller-c");
    env.server().reload(&next).expect("reload applies");
    let c = send(&env, "GET", "/v1/admin/sellers/seller-c", OPERATOR, None);
    assert_eq!(c.status, 404, "{}", c.text);
}

#[test]
fn one_sellers_concurrent_auction_cap_leaves_another_seller_alone() {
    let mut slow = fixed("slow", 30.0);
    // Long enough that every ping below arrives while the first two auctions still run.
    slow.latency_ms_min = 1_000;
    slow.latency_ms_max = 1_000;
    let env = Env::start(Driver::Legacy, vec![slow], |cfg, _| {
        parties(cfg);
        cfg.sellers[0].max_concurrent_auctions = Some(2);
    });
    let (a, b): (Vec<Resp>, Vec<Resp>) = std::thread::scope(|s| {
        let a: Vec<_> = (0..3)
            .map(|_| s.spawn(|| ping_as(&env, SELLER_A)))
            .collect();
        let b: Vec<_> = (0..3)
            .map(|_| s.spawn(|| ping_as(&env, SELLER_B)))
            .collect();
        (
            a.into_iter().map(|h| h.join().unwrap()).collect(),
            b.into_iter().map(|h| h.join().unwrap()).collect(),
        )
    });
    let ran = a.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Resp> = a.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (ran, refused.len()),
        (2, 1),
        "{:?}",
        a.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let r = refused[0];
    assert_eq!(r.error_code(), "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    let message = r.json["message"].as_str().unwrap();
    assert!(
        message.contains("seller-a") && message.contains("max_concurrent_auctions"),
        "{message}"
    );
    assert!(b.iter().all(|r| r.status == 200), "seller B is unaffected");
    assert_eq!(
        env.metric_sum("gavel_rate_limited_total{limit=\"seller_concurrent_auctions\"}"),
        1
    );
    // Once they finish, the slots are free again.
    assert_eq!(ping_as(&env, SELLER_A).status, 200);
    let usage = send(&env, "GET", "/v1/admin/sellers/seller-a", OPERATOR, None);
    assert_eq!(usage.json["usage"]["running_auctions"], 0, "{}", usage.text);
}

#[test]
fn one_sellers_ping_rate_leaves_another_seller_alone() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        parties(cfg);
        cfg.sellers[0].pings_per_s = Some(0.2); // burst 1, then one every 5 s
    });
    assert_eq!(ping_as(&env, SELLER_A).status, 200);
    let limited = ping_as(&env, SELLER_A);
    assert_eq!(
        (limited.status, limited.error_code()),
        (429, "rate_limited"),
        "{}",
        limited.text
    );
    assert_eq!(limited.header("x-ratelimit-limit"), Some("0.2"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    assert!(limited.header("x-ratelimit-reset").is_some());
    let message = limited.json["message"].as_str().unwrap();
    assert!(
        message.contains("seller-a") && message.contains("pings_per_s"),
        "{message}"
    );
    // Another seller has its own budget; a one-call lead counts against the same rate.
    for _ in 0..3 {
        assert_eq!(ping_as(&env, SELLER_B).status, 200);
    }
    let lead = env.post("/v1/leads", Some(SELLER_A), &lead_body().to_string());
    assert_eq!(lead.status, 429, "{}", lead.text);
    assert_eq!(
        env.metric_sum("gavel_rate_limited_total{limit=\"seller_pings\"}"),
        2
    );
}

#[test]
fn a_won_auction_holds_an_unposted_slot_until_posted_evicted_or_restarted() {
    // Bids that outlive the clock jumps below (the mock fleet stamps them on the system clock).
    let mut buyer = fixed("x", 30.0);
    buyer.bid_valid_ms = 3_600_000;
    let mut env = Env::start_with_clock(
        Driver::Legacy,
        vec![buyer],
        |cfg, _| {
            parties(cfg);
            cfg.sellers[0].max_unposted_auctions = Some(1);
        },
        manual_clock(),
    );
    let usage = |env: &Env| {
        send(env, "GET", "/v1/admin/sellers/seller-a", OPERATOR, None).json["usage"]
            ["unposted_auctions"]
            .as_u64()
            .unwrap()
    };
    let first = ping_as(&env, SELLER_A);
    assert_eq!(first.json["status"], "won", "{}", first.text);
    assert_eq!(usage(&env), 1);
    // The seller holds its one won-but-unposted auction: its next ping is refused.
    let refused = ping_as(&env, SELLER_A);
    assert_eq!(
        (refused.status, refused.error_code()),
        (429, "rate_limited"),
        "{}",
        refused.text
    );
    assert_eq!(refused.header("x-ratelimit-limit"), Some("1"));
    assert!(refused.header("retry-after").is_some());
    let message = refused.json["message"].as_str().unwrap();
    assert!(
        message.contains("seller-a") && message.contains("max_unposted_auctions"),
        "{message}"
    );
    assert_eq!(
        ping_as(&env, SELLER_B).status,
        200,
        "seller B is unaffected"
    );
    // Posting frees it (and a repeated post does not free it twice).
    assert_eq!(post_won(&env, SELLER_A, &first).status, 201);
    assert_eq!(usage(&env), 0);
    assert_eq!(post_won(&env, SELLER_A, &first).status, 201, "a replay");
    assert_eq!(usage(&env), 0);

    // Eviction frees it: past the bid token's life and the auction retention, the auction leaves
    // memory on the core's own timer.
    let second = ping_as(&env, SELLER_A);
    assert_eq!(second.json["status"], "won", "{}", second.text);
    assert_eq!(ping_as(&env, SELLER_A).status, 429);
    env.jump_clock(60_000 + 120_000 + 1_000);
    wait_until("the won auction's eviction", || usage(&env) == 0);
    let third = ping_as(&env, SELLER_A);
    assert_eq!(third.json["status"], "won", "{}", third.text);

    // A restart starts every count afresh; the auction read back from the store holds no slot,
    // so posting it gives nothing back twice.
    env.restart();
    assert_eq!(usage(&env), 0);
    let fourth = ping_as(&env, SELLER_A);
    assert_eq!(fourth.json["status"], "won", "{}", fourth.text);
    assert_eq!(post_won(&env, SELLER_A, &third).status, 201);
    assert_eq!(
        usage(&env),
        1,
        "only the fourth, which this process handed out"
    );
    assert_eq!(post_won(&env, SELLER_A, &fourth).status, 201);
    assert_eq!(usage(&env), 0);
    assert_eq!(
        env.metric_sum("gavel_rate_limited_total{limit=\"seller_unposted\"}"),
        0,
        "counters restart with the process"
    );
}

#[test]
fn gavel_sellers_cli_manages_sellers_of_a_running_server() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        parties(cfg)
    });
    let gavel = |token: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["sellers", "--url", &env.base])
            .args(args)
            .env("GAVEL_ADMIN_TOKEN", token)
            .output()
            .expect("gavel runs")
    };
    let ok = |args: &[&str]| {
        let out = gavel(OPERATOR, args);
        assert!(
            out.status.success(),
            "gavel sellers {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let created = ok(&[
        "create",
        "cli-seller",
        "--name",
        "From the CLI",
        "--pings-per-s",
        "20",
    ]);
    assert!(
        created.starts_with("created: cli-seller  active"),
        "{created}"
    );
    let updated = ok(&[
        "update",
        "cli-seller",
        "--max-unposted-auctions",
        "9",
        "--reset",
        "pings_per_s",
    ]);
    assert!(updated.contains("unposted=0/9"), "{updated}");
    let shown: Value = serde_json::from_str(&ok(&["show", "cli-seller"])).unwrap();
    assert_eq!(shown["pings_per_s"], Value::Null);
    assert_eq!(shown["name"], "From the CLI");
    assert!(ok(&["suspend", "cli-seller"]).starts_with("suspended: cli-seller  suspended"));
    assert!(ok(&["resume", "cli-seller"]).starts_with("resumed: cli-seller  active"));
    let list = ok(&["list"]);
    for id in ["cli-seller", "seller-a", "seller-b", "it-all"] {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("{id}  "))),
            "{id} in {list}"
        );
    }
    // A seller's token finds nothing there, and the CLI says what the server answered.
    let refused = gavel(TOKEN, &["list"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404"));
}
