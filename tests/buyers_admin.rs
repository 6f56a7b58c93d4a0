//! Buyers managed while Gavel runs, through the real server: the admin API (create, pause, resume,
//! update, delete, tenant isolation, validation), durability across a restart, an auction in
//! flight keeping its buyer set, the `gavel buyers` CLI, `ServerHandle::reload`, and `SIGHUP` on
//! the real binary.
// Test threads are not event loops: sleeping in them is how tests wait for events.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    gavel_testkit::wait_until(what, WAIT, done)
}

/// A seller-chosen auction id that core `core` of 2 owns, so the ping runs there.
fn id_on_core(core: usize, tag: &str) -> String {
    (0..)
        .map(|n| format!("auc_{tag}_{n}"))
        .find(|id| gavel::runtime::owner_of(id, 2) == core)
        .unwrap()
}

fn ping_on(env: &Env, core: usize, tag: &str) -> Resp {
    let mut b = ping_body();
    b["auction_id"] = json!(id_on_core(core, tag));
    let r = env.ping(&b);
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

fn send(env: &Env, method: &str, path: &str, token: &str, body: Option<&str>) -> Resp {
    call(&env.base, method, path, Some(token), body, &[])
}

/// The definition of fleet buyer `id` as the admin API takes it.
fn definition(env: &Env, id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "ping_url": env.fleet.ping_url(id),
        "post_url": env.fleet.post_url(id),
        "floor": 1.50,
    })
}

fn create(env: &Env, id: &str) -> Resp {
    let r = env.post(
        "/v1/admin/buyers",
        Some(OPERATOR),
        &definition(env, id).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r
}

/// A server whose config names only `in_config`; the fleet also serves `newbie` and `slow`, which
/// the tests add through the API.
fn env_with_spare_buyers() -> Env {
    env_with_spare_buyers_on(Driver::Legacy)
}

fn env_with_spare_buyers_on(driver: Driver) -> Env {
    let mut slow = fixed("slow", 40.0);
    slow.latency_ms_min = 700;
    slow.latency_ms_max = 700;
    Env::start(
        driver,
        vec![fixed("in_config", 10.0), fixed("newbie", 20.0), slow],
        |cfg, _| cfg.buyers.retain(|b| b.id == "in_config"),
    )
}

/// Under every driver the e2e suite runs.
#[test]
fn a_created_buyer_is_pinged_on_both_cores_and_pause_and_resume_hold() {
    for driver in drivers() {
        created_paused_resumed(driver);
    }
}

fn created_paused_resumed(driver: Driver) {
    let env = env_with_spare_buyers_on(driver);
    let log = env.fleet.log();
    let r = create(&env, "newbie");
    assert_eq!(r.json["source"], "api");
    assert_eq!(r.json["tenant"], "sandbox");
    assert_eq!(r.json["floor"].as_f64(), Some(1.5));
    assert!(r.text.contains("\"floor\":1.50"), "{}", r.text);

    for core in [0, 1] {
        let before = log.pings("newbie");
        let r = ping_on(&env, core, &format!("create{core}"));
        assert_eq!(r.json["buyers_pinged"], 2, "core {core}: {}", r.text);
        assert_eq!(
            log.pings("newbie"),
            before + 1,
            "core {core} pinged the new buyer"
        );
    }
    let listed = env.get("/v1/admin/buyers", Some(OPERATOR));
    let ids: Vec<&str> = listed.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["in_config", "newbie"]);
    assert_eq!(listed.json["buyers"][0]["source"], "config");
    assert!(listed.text.contains("\"floor\":1.50"), "{}", listed.text);

    let r = env.post("/v1/admin/buyers/newbie/pause", Some(OPERATOR), "");
    assert_eq!(
        (r.status, &r.json["enabled"]),
        (200, &json!(false)),
        "{}",
        r.text
    );
    let before = log.pings("newbie");
    for core in [0, 1] {
        let r = ping_on(&env, core, &format!("paused{core}"));
        assert_eq!(r.json["buyers_pinged"], 1, "{}", r.text);
    }
    assert_eq!(log.pings("newbie"), before, "a paused buyer is not pinged");

    let r = env.post("/v1/admin/buyers/newbie/resume", Some(OPERATOR), "");
    assert_eq!(
        (r.status, &r.json["enabled"]),
        (200, &json!(true)),
        "{}",
        r.text
    );
    for core in [0, 1] {
        ping_on(&env, core, &format!("resumed{core}"));
    }
    assert_eq!(log.pings("newbie"), before + 2, "resumed on both cores");
    // The per-buyer metrics follow a buyer added at runtime.
    let text = env.scrape();
    assert!(
        text.lines()
            .any(|l| l.starts_with("gavel_buyer_pings_total{buyer=\"newbie\"")),
        "{text}"
    );
}

#[test]
fn a_raised_floor_applies_to_the_next_auction() {
    let env = Env::start(Driver::Legacy, vec![fixed("only", 20.0)], |_, _| {});
    let r = ping_on(&env, 0, "floor_before");
    assert_eq!(r.json["status"], "won", "{}", r.text);

    let r = call(
        &env.base,
        "PATCH",
        "/v1/admin/buyers/only",
        Some(OPERATOR),
        Some(r#"{"floor": 25.00}"#),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("\"floor\":25.00"), "{}", r.text);
    // A config buyer changed through the API says so, and stays config-owned.
    assert_eq!(r.json["source"], "config");
    for core in [0, 1] {
        let r = ping_on(&env, core, &format!("floor_after{core}"));
        assert_eq!(r.json["status"], "no_bid", "{}", r.text);
        assert_eq!(r.json["reject_reason"], "below_floor", "{}", r.text);
    }
    let shown = env.get("/v1/admin/buyers/only", Some(OPERATOR));
    assert_eq!(shown.json["floor"].as_f64(), Some(25.0));
}

#[test]
fn deleted_buyers_stay_gone_and_api_buyers_survive_a_restart() {
    let mut env = env_with_spare_buyers();
    create(&env, "newbie");
    create(&env, "slow");
    let r = send(&env, "DELETE", "/v1/admin/buyers/slow", OPERATOR, None);
    assert_eq!(
        (r.status, r.json["id"].as_str()),
        (200, Some("slow")),
        "{}",
        r.text
    );
    assert_eq!(env.get("/v1/admin/buyers/slow", Some(OPERATOR)).status, 404);
    let r = send(&env, "DELETE", "/v1/admin/buyers/slow", OPERATOR, None);
    assert_eq!(r.status, 404);
    // A config buyer deleted through the API lasts only until the file is read again.
    let r = send(&env, "DELETE", "/v1/admin/buyers/in_config", OPERATOR, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = ping_on(&env, 1, "after_delete");
    assert_eq!(r.json["buyers_pinged"], 1, "{}", r.text);

    env.restart();
    let r = env.get("/v1/admin/buyers/newbie", Some(OPERATOR));
    assert_eq!(
        (r.status, &r.json["source"]),
        (200, &json!("api")),
        "{}",
        r.text
    );
    assert_eq!(env.get("/v1/admin/buyers/slow", Some(OPERATOR)).status, 404);
    let r = env.get("/v1/admin/buyers/in_config", Some(OPERATOR));
    assert_eq!(r.status, 200, "the file seeds its buyers again at start");
    let log = env.fleet.log();
    let (newbie, slow) = (log.pings("newbie"), log.pings("slow"));
    let r = ping_on(&env, 0, "after_restart");
    assert_eq!(r.json["buyers_pinged"], 2, "{}", r.text);
    assert_eq!(log.pings("newbie"), newbie + 1);
    assert_eq!(log.pings("slow"), slow);
}

#[test]
fn another_tenant_cannot_see_or_change_a_buyer() {
    let env = env_with_spare_buyers();
    create(&env, "newbie");
    let r = env.get("/v1/admin/buyers", Some(LIVE_OPERATOR));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["buyers"], json!([]));
    assert_eq!(
        env.get("/v1/admin/buyers/newbie", Some(LIVE_OPERATOR))
            .status,
        404
    );
    let patch = Some(r#"{"floor": 99}"#);
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/newbie",
        LIVE_OPERATOR,
        patch,
    );
    assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    let r = send(
        &env,
        "POST",
        "/v1/admin/buyers/newbie/pause",
        LIVE_OPERATOR,
        None,
    );
    assert_eq!(r.status, 404);
    let r = send(
        &env,
        "DELETE",
        "/v1/admin/buyers/newbie",
        LIVE_OPERATOR,
        None,
    );
    assert_eq!(r.status, 404);
    // A buyer in another tenant's name is refused.
    let mut other = definition(&env, "newbie");
    other["tenant"] = json!("sandbox");
    let r = send(
        &env,
        "POST",
        "/v1/admin/buyers",
        LIVE_OPERATOR,
        Some(&other.to_string()),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["field_errors"][0]["field"], "tenant");
    // Untouched for its own tenant.
    let r = env.get("/v1/admin/buyers/newbie", Some(OPERATOR));
    assert_eq!((r.status, &r.json["enabled"]), (200, &json!(true)));
    // A seller's token sees nothing of the buyers: they are the operator's (404, whatever scopes).
    assert_eq!(env.get("/v1/admin/buyers", Some(PING_ONLY)).status, 404);
}

/// Issue #21, F6: buyer ids and limits are per tenant. The sandbox (whose token is public) once
/// got `409 buyer_exists` for a production id, an oracle and a way to squat production's ids.
/// Now the same id in each tenant is two buyers, each pinged by its own tenant's auctions only,
/// counted in its own metric series, and kept across a restart; another tenant's id is `404`.
#[test]
fn the_same_buyer_id_in_two_tenants_is_two_buyers() {
    let mut env = Env::start(
        Driver::Legacy,
        vec![fixed("sandbox_side", 10.0), fixed("production_side", 20.0)],
        |cfg, _| cfg.buyers.clear(),
    );
    let log = env.fleet.log();
    let as_p_alpha = |fleet_id: &str| {
        json!({
            "id": "p_alpha",
            "ping_url": env.fleet.ping_url(fleet_id),
            "post_url": env.fleet.post_url(fleet_id),
        })
        .to_string()
    };
    let r = env.post(
        "/v1/admin/buyers",
        Some(OPERATOR),
        &as_p_alpha("sandbox_side"),
    );
    assert_eq!(
        (r.status, &r.json["tenant"]),
        (201, &json!("sandbox")),
        "{}",
        r.text
    );
    let r = env.post(
        "/v1/admin/buyers",
        Some(LIVE_OPERATOR),
        &as_p_alpha("production_side"),
    );
    assert_eq!(
        (r.status, &r.json["tenant"]),
        (201, &json!("production")),
        "an id the sandbox uses is free in production: {}",
        r.text
    );
    let only = json!({
        "id": "p_only",
        "ping_url": env.fleet.ping_url("production_side"),
        "post_url": env.fleet.post_url("production_side"),
        "enabled": false,
    });
    let r = env.post("/v1/admin/buyers", Some(LIVE_OPERATOR), &only.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        env.get("/v1/admin/buyers/p_only", Some(OPERATOR)).status,
        404
    );
    // Each tenant shows its own p_alpha.
    let shown = |env: &Env, token: &str| env.get("/v1/admin/buyers/p_alpha", Some(token));
    let url = |r: Resp| r.json["ping_url"].as_str().unwrap().to_string();
    assert!(url(shown(&env, OPERATOR)).contains("sandbox_side"));
    assert!(url(shown(&env, LIVE_OPERATOR)).contains("production_side"));

    let pings_each_side = |env: &Env| {
        let r = env.ping(&ping_body());
        assert_eq!(r.json["buyers_pinged"], 1, "{}", r.text);
        let r = call(
            &env.base,
            "POST",
            "/v1/ping",
            Some(LIVE),
            Some(&ping_body().to_string()),
            &[],
        );
        assert_eq!(
            (r.status, &r.json["buyers_pinged"]),
            (200, &json!(1)),
            "{}",
            r.text
        );
    };
    pings_each_side(&env);
    assert_eq!(
        log.pings("sandbox_side"),
        1,
        "only the sandbox ping reached it"
    );
    assert_eq!(
        log.pings("production_side"),
        1,
        "only the production ping reached it"
    );
    let text = env.scrape();
    for tenant in ["sandbox", "production"] {
        let line = format!(
            "gavel_buyer_pings_total{{buyer=\"p_alpha\",tenant=\"{tenant}\",outcome=\"bid\"}} 1"
        );
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    // Pausing one leaves the other alone, and both survive a restart as they were.
    let r = send(
        &env,
        "POST",
        "/v1/admin/buyers/p_alpha/pause",
        LIVE_OPERATOR,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    env.restart();
    assert_eq!(shown(&env, OPERATOR).json["enabled"], json!(true));
    assert_eq!(shown(&env, LIVE_OPERATOR).json["enabled"], json!(false));
    let r = send(&env, "DELETE", "/v1/admin/buyers/p_alpha", OPERATOR, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(shown(&env, OPERATOR).status, 404);
    assert_eq!(
        shown(&env, LIVE_OPERATOR).status,
        200,
        "deleting the sandbox's p_alpha left production's"
    );
}

#[test]
fn an_auction_in_flight_keeps_the_buyer_set_it_started_with() {
    let env = env_with_spare_buyers();
    create(&env, "slow");
    let log = env.fleet.log();
    let base = env.base.clone();
    let pinging = std::thread::spawn(move || {
        let mut b = ping_body();
        b["auction_id"] = json!(id_on_core(1, "in_flight"));
        call(
            &base,
            "POST",
            "/v1/ping",
            Some(TOKEN),
            Some(&b.to_string()),
            &[],
        )
    });
    // The slow buyer has the ping: delete it while it thinks.
    wait_until("the slow buyer to be pinged", || log.pings("slow") == 1);
    let r = send(&env, "DELETE", "/v1/admin/buyers/slow", OPERATOR, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = pinging.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    // 40.00 from the deleted buyer, less the 10% margin: its bid still won.
    assert_eq!(r.json["bid"]["amount"].as_f64(), Some(36.0), "{}", r.text);
    let auction_id = r.json["auction_id"].as_str().unwrap();
    let token = r.json["bid"]["bid_token"].as_str().unwrap();
    let posted = env.post(
        "/v1/post",
        Some(TOKEN),
        &post_body(auction_id, token).to_string(),
    );
    assert_eq!(posted.status, 201, "{}", posted.text);
    assert_eq!(posted.json["status"], "sold", "{}", posted.text);
    assert_eq!(
        log.posts("slow"),
        1,
        "the post still went to the deleted buyer"
    );
    // New auctions no longer see it.
    ping_on(&env, 1, "after_in_flight");
    assert_eq!(log.pings("slow"), 1);
}

#[test]
fn invalid_definitions_name_their_field() {
    let env = env_with_spare_buyers();
    let field_of = |body: serde_json::Value| {
        let r = env.post("/v1/admin/buyers", Some(OPERATOR), &body.to_string());
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_payload"),
            "{}",
            r.text
        );
        r.json["field_errors"][0]["field"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut bad_url = definition(&env, "newbie");
    bad_url["ping_url"] = json!("ftp://example.com/ping");
    assert_eq!(field_of(bad_url), "ping_url");
    let mut unknown = definition(&env, "newbie");
    unknown["flor"] = json!(2);
    assert_eq!(field_of(unknown), "flor");
    let mut nested = definition(&env, "newbie");
    nested["filters"] = json!({"statez": ["TX"]});
    assert_eq!(field_of(nested), "filters.statez");
    let mut negative = definition(&env, "newbie");
    negative["floor"] = json!(-1);
    assert_eq!(field_of(negative), "floor");
    let mut zero = definition(&env, "newbie");
    zero["ping_timeout_ms"] = json!(0);
    assert_eq!(field_of(zero), "ping_timeout_ms");
    // Upper bounds: a timeout no bid window or post budget could wait for, a price past the
    // exchange's ceiling, a post format that would send the buyer an empty body.
    let mut huge = definition(&env, "newbie");
    huge["ping_timeout_ms"] = json!(1_000_000_000_000u64);
    assert_eq!(field_of(huge), "ping_timeout_ms");
    let mut huge = definition(&env, "newbie");
    huge["post_timeout_ms"] = json!(1_000_000_000_000_000u64);
    assert_eq!(field_of(huge), "post_timeout_ms");
    let mut pricey = definition(&env, "newbie");
    pricey["floor"] = json!(5_000);
    assert_eq!(field_of(pricey), "floor");
    let mut empty_format = definition(&env, "newbie");
    empty_format["post_format"] = json!({"method": "POST"});
    assert_eq!(field_of(empty_format), "post_format.fields");
    let mut bad_id = definition(&env, "newbie");
    bad_id["id"] = json!("no spaces/please");
    assert_eq!(field_of(bad_id), "id");
    let missing = json!({"id": "newbie"});
    assert_eq!(field_of(missing), "post_url");
    // A buyer is pinged (`ping_url`) or direct-post (`fixed_price`): one of them, not neither.
    let neither = json!({"id": "newbie", "post_url": env.fleet.post_url("newbie")});
    let field = field_of(neither);
    assert!(field == "ping_url" || field == "fixed_price", "{field}");

    let r = env.post("/v1/admin/buyers", Some(OPERATOR), "{not json");
    assert_eq!((r.status, r.error_code()), (400, "malformed_json"));
    // The config's buyer id is taken.
    let r = env.post(
        "/v1/admin/buyers",
        Some(OPERATOR),
        &definition(&env, "in_config").to_string(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (409, "buyer_exists"),
        "{}",
        r.text
    );
    // A create repeated with the same definition is answered again, not refused.
    create(&env, "newbie");
    create(&env, "newbie");
    // Nothing invalid got in.
    let listed = env.get("/v1/admin/buyers", Some(OPERATOR));
    assert_eq!(listed.json["buyers"].as_array().unwrap().len(), 2);
}

#[test]
fn an_auth_header_value_is_kept_but_never_shown() {
    let env = env_with_spare_buyers();
    let mut def = definition(&env, "newbie");
    def["auth_header"] = json!({"name": "X-Buyer-Key", "value": "s3cret-value"});
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains("s3cret-value"), "{}", r.text);
    assert_eq!(r.json["auth_header"]["name"], "X-Buyer-Key");
    // Sending back what was shown (no value) keeps the stored one.
    let mut shown = r.json.clone();
    for k in ["source", "created_at", "updated_at"] {
        shown.as_object_mut().unwrap().remove(k);
    }
    shown["floor"] = json!(2.25);
    let r = send(
        &env,
        "PUT",
        "/v1/admin/buyers/newbie",
        OPERATOR,
        Some(&shown.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!env
        .get("/v1/admin/buyers", Some(OPERATOR))
        .text
        .contains("s3cret"));
    ping_on(&env, 0, "secret");
    let headers = env.fleet.log().ping_headers("newbie").unwrap();
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("x-buyer-key") && v == "s3cret-value"),
        "{headers:?}"
    );
}

/// Every file under `dir`, read whole, that holds `needle` anywhere in its bytes.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// Issue #21, F1: secrets sent through the API are values, stored sealed: neither the write-ahead
/// log nor sled's files hold the plaintext, and the buyer still gets its header after a restart
/// (the row opens with the store's key).
#[test]
fn an_auth_header_value_is_stored_sealed() {
    let mut env = env_with_spare_buyers();
    let mut def = definition(&env, "newbie");
    def["auth_header"] = json!({"name": "X-Buyer-Key", "value": "s3cret-sealed-value"});
    def["ping_format"] = json!({
        "headers": {"X-Api-Key": "s3cret-format-value"},
        "fields": {"auction_id": {"from": "auction_id"}, "zip3": {"from": "zip3"}},
    });
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    env.restart();
    let store = env.config.store.path.clone();
    for secret in ["s3cret-sealed-value", "s3cret-format-value"] {
        let holding = files_holding(&store, secret.as_bytes());
        assert!(
            holding.is_empty(),
            "{secret} stored in the clear in {holding:?}"
        );
    }
    ping_on(&env, 0, "sealed");
    let headers = env.fleet.log().ping_headers("newbie").unwrap();
    for (name, value) in [
        ("x-buyer-key", "s3cret-sealed-value"),
        ("x-api-key", "s3cret-format-value"),
    ] {
        assert!(
            headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value),
            "{name}: {headers:?}"
        );
    }
}

/// Issue #21, F1: through the API a caller never names a server environment variable. Before
/// the fix `auth_header.value_env = "GAVEL_BID_KEY"` was accepted and the next ping sent the
/// bid-token key to the caller's URL. Create, replace and patch are refused with the field named,
/// and nothing changes.
#[test]
fn the_api_refuses_to_name_an_environment_variable() {
    let env = env_with_spare_buyers();
    let log = env.fleet.log();
    let field_of = |r: &Resp| {
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_payload"),
            "{}",
            r.text
        );
        r.field_names()[0].to_string()
    };
    let mut def = definition(&env, "newbie");
    def["auth_header"] = json!({"name": "X-Leak", "value_env": "PATH"});
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string());
    assert_eq!(field_of(&r), "auth_header.value_env");
    assert_eq!(
        env.get("/v1/admin/buyers/newbie", Some(OPERATOR)).status,
        404
    );

    create(&env, "newbie");
    let r = send(
        &env,
        "PUT",
        "/v1/admin/buyers/newbie",
        OPERATOR,
        Some(&def.to_string()),
    );
    assert_eq!(field_of(&r), "auth_header.value_env");
    let patch = json!({"auth_header": {"name": "X-Leak", "value_env": "PATH"}}).to_string();
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/newbie",
        OPERATOR,
        Some(&patch),
    );
    assert_eq!(field_of(&r), "auth_header.value_env");
    let shown = env.get("/v1/admin/buyers/newbie", Some(OPERATOR));
    assert_eq!(shown.json["auth_header"], json!(null), "{}", shown.text);
    ping_on(&env, 0, "no_leak");
    let headers = env.fleet.log().ping_headers("newbie").unwrap();
    assert!(
        !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("x-leak")),
        "{headers:?}"
    );
    assert_eq!(log.pings("newbie"), 1);
}

/// A buyer whose auth header the config file reads from the environment keeps working when the
/// API changes it: it keeps the reference it did not write (never shown), and a definition sent
/// back as shown keeps it too. Its URLs keep their origin, so the API cannot send the server-held
/// secret elsewhere; a new header value lifts that.
#[test]
fn a_config_buyer_reading_the_environment_keeps_it_through_the_api() {
    let expected = std::env::var("PATH").expect("tests run with a PATH");
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("from_env", 20.0), fixed("elsewhere", 20.0)],
        |cfg, _| {
            cfg.buyers.retain(|b| b.id == "from_env");
            cfg.buyers[0].auth_header = Some(gavel::config::HeaderConfig {
                name: "X-From-Env".into(),
                value: None,
                value_env: Some("PATH".into()),
            });
        },
    );
    let header = |env: &Env| {
        env.fleet
            .log()
            .ping_headers("from_env")
            .unwrap_or_default()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-from-env"))
            .map(|(_, v)| v)
    };
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/from_env",
        OPERATOR,
        Some(r#"{"floor": 3.00}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["auth_header"],
        json!({"name": "X-From-Env"}),
        "{}",
        r.text
    );
    assert!(!r.text.contains("PATH"), "{}", r.text);
    ping_on(&env, 0, "env_patched");
    assert_eq!(header(&env).as_deref(), Some(expected.as_str()));

    // Sent back as shown: still reads the environment.
    let mut shown = r.json.clone();
    for k in ["source", "created_at", "updated_at"] {
        shown.as_object_mut().unwrap().remove(k);
    }
    shown["floor"] = json!(4.00);
    let r = send(
        &env,
        "PUT",
        "/v1/admin/buyers/from_env",
        OPERATOR,
        Some(&shown.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    ping_on(&env, 1, "env_replaced");
    assert_eq!(header(&env).as_deref(), Some(expected.as_str()));

    // Re-pointing it would carry the server's secret to another host: refused, field named.
    let elsewhere = json!({"ping_url": format!("http://localhost:1/{}", "x")}).to_string();
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/from_env",
        OPERATOR,
        Some(&elsewhere),
    );
    assert_eq!(
        (r.status, r.field_names()),
        (422, vec!["ping_url"]),
        "{}",
        r.text
    );
    // The same origin, another path: allowed.
    let moved = env.fleet.ping_url("elsewhere");
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/from_env",
        OPERATOR,
        Some(&json!({"ping_url": moved}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // With a value of its own, it may go anywhere the egress rules allow.
    let r = send(
        &env,
        "PATCH",
        "/v1/admin/buyers/from_env",
        OPERATOR,
        Some(
            &json!({"ping_url": "http://localhost:1/x", "auth_header": {"value": "own"}})
                .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn the_buyers_cli_manages_buyers_of_a_running_server() {
    let env = env_with_spare_buyers();
    let dir = temp_dir("buyers-cli");
    let file = dir.join("newbie.toml");
    std::fs::write(
        &file,
        format!(
            "id = \"newbie\"\nping_url = \"{}\"\npost_url = \"{}\"\nfloor = 3.25\n",
            env.fleet.ping_url("newbie"),
            env.fleet.post_url("newbie")
        ),
    )
    .unwrap();
    let gavel = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["buyers", "--url", &env.base])
            .args(args)
            .env("GAVEL_ADMIN_TOKEN", OPERATOR)
            .output()
            .expect("gavel runs");
        assert!(
            out.status.success(),
            "gavel buyers {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let created = gavel(&["create", "--file", file.to_str().unwrap()]);
    assert!(
        created.contains("newbie") && created.contains("source=api"),
        "{created}"
    );
    assert!(gavel(&["pause", "newbie"]).contains("PAUSED"));
    let listing = gavel(&["list"]);
    assert!(
        listing.contains("in_config") && listing.contains("newbie  PAUSED"),
        "{listing}"
    );
    let shown: serde_json::Value = serde_json::from_str(&gavel(&["show", "newbie"])).unwrap();
    assert_eq!(shown["floor"].as_f64(), Some(3.25));
    gavel(&["resume", "newbie"]);
    gavel(&["delete", "newbie"]);
    assert_eq!(
        env.get("/v1/admin/buyers/newbie", Some(OPERATOR)).status,
        404
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reload_applies_the_files_buyers_tokens_and_rules_without_a_restart() {
    let env = env_with_spare_buyers();
    create(&env, "slow");
    let new_token = "gv_test_reloaded_token_0000000000000000000";
    assert_eq!(env.get("/v1/admin/buyers", Some(new_token)).status, 401);
    let mut cfg = env.config.clone();
    cfg.buyers = vec![buyer(&env.fleet, "newbie")];
    cfg.tokens.push(gavel::config::TokenConfig {
        client: "reloaded".into(),
        tenant: gavel::config::Tenant::Sandbox,
        sha256: gavel::auth::sha256_hex(new_token),
        scopes: [gavel::config::Scope::Admin, gavel::config::Scope::Ping]
            .into_iter()
            .collect(),
        buyer: None,
        seller: None,
        operator: true,
        requests_per_s: None,
    });
    // A new lead rule: google_ads leads (the test ping's source) now need a TrustedForm cert.
    cfg.rules.push(gavel::config::RuleConfig {
        vertical: None,
        source: Some("google_ads".into()),
        require: vec!["lead.tcpa.trustedform_cert_url".into()],
    });
    gavel::cli::check_config(&cfg, "reload.toml").unwrap();
    env.server().reload(&cfg).expect("reload applies");

    let r = env.get("/v1/admin/buyers", Some(new_token));
    assert_eq!(r.status, 200, "the new token works at once: {}", r.text);
    let ids: Vec<&str> = r.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    // The file's buyer replaced the config buyer it no longer names; the API buyer stayed.
    assert_eq!(ids, ["newbie", "slow"]);
    let log = env.fleet.log();
    let before = log.pings("in_config");
    for core in [0, 1] {
        ping_on(&env, core, &format!("reloaded{core}"));
    }
    assert_eq!(log.pings("in_config"), before);
    assert_eq!(log.pings("newbie"), 2);
    let won = env.ping(&ping_body());
    assert_eq!(won.json["status"], "won", "{}", won.text);
    let body = post_body(
        won.json["auction_id"].as_str().unwrap(),
        won.json["bid"]["bid_token"].as_str().unwrap(),
    );
    let r = env.post("/v1/post", Some(TOKEN), &body.to_string());
    assert_eq!(r.status, 422, "the reloaded rule holds: {}", r.text);
    assert_eq!(
        r.json["field_errors"][0]["field"],
        "lead.tcpa.trustedform_cert_url"
    );

    // A token the file no longer names stops working.
    cfg.tokens.retain(|t| t.client != "reloaded");
    env.server().reload(&cfg).unwrap();
    assert_eq!(env.get("/v1/admin/buyers", Some(new_token)).status, 401);
}

/// The `gavel serve` child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_reloads_a_valid_file_and_keeps_running_on_an_invalid_one() {
    let fleet = gavel::sandbox::MockFleet::start(
        "127.0.0.1:0".parse().unwrap(),
        7,
        vec![fixed("first", 10.0), fixed("second", 20.0)],
        1,
    )
    .unwrap();
    let dir = temp_dir("sighup");
    let config = dir.join("gavel.toml");
    let file = |buyers: &[&str], extra_token: bool| {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncores = 2\ndriver = \"legacy\"\npin_threads = false\n\
             [store]\npath = \"{}\"\n[metrics]\nlisten = \"off\"\n[log]\nlevel = \"info\"\n\
             [egress]\nallow_private = [\"127.0.0.0/8\"]\n\
             [[tokens]]\nclient = \"admin\"\ntenant = \"sandbox\"\noperator = true\nsha256 = \"{}\"\n\
             scopes = [\"admin\"]\n\
             [[tokens]]\nclient = \"seller\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\n\
             scopes = [\"ping\"]\n",
            dir.join("db").display(),
            gavel::auth::sha256_hex(OPERATOR),
            gavel::auth::sha256_hex(TOKEN),
        );
        if extra_token {
            text += &format!(
                "[[tokens]]\nclient = \"late\"\ntenant = \"sandbox\"\noperator = true\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
                gavel::auth::sha256_hex(PING_ONLY)
            );
        }
        for id in buyers {
            text += &format!(
                "[[buyers]]\nid = \"{id}\"\ntenant = \"sandbox\"\nping_url = \"{}\"\npost_url = \"{}\"\n",
                fleet.ping_url(id),
                fleet.post_url(id)
            );
        }
        std::fs::write(&config, text).unwrap();
    };
    file(&["first"], false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gavel starts");
    let stderr = child.stderr.take().unwrap();
    let child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let base = loop {
        let line = rx.recv_timeout(WAIT).expect("gavel reports its address");
        if let Some(addr) = line.strip_prefix("gavel listening on ") {
            break addr.trim().to_string();
        }
    };
    let ids = |token: &str| {
        let r = call(&base, "GET", "/v1/admin/buyers", Some(token), None, &[]);
        (r.status, r.json["buyers"].to_string())
    };
    assert!(ids(OPERATOR).1.contains("first"));
    assert_eq!(ids(PING_ONLY).0, 401);
    let hup = || {
        // SAFETY: kill(2) on the child's pid, which this test started and still owns.
        let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0);
    };

    file(&["first", "second"], true);
    hup();
    wait_until("the reloaded token to work", || ids(PING_ONLY).0 == 200);
    assert!(ids(PING_ONLY).1.contains("second"));
    let before = fleet.log().pings("second");
    let r = call(
        &base,
        "POST",
        "/v1/ping",
        Some(TOKEN),
        Some(&ping_body().to_string()),
        &[],
    );
    assert_eq!(r.json["buyers_pinged"], 2, "{}", r.text);
    assert_eq!(fleet.log().pings("second"), before + 1);

    // An invalid file changes nothing and says why.
    std::fs::write(&config, "[server]\ncores = \"many\"\n").unwrap();
    hup();
    let t0 = Instant::now();
    let refused = loop {
        let line = rx
            .recv_timeout(WAIT.saturating_sub(t0.elapsed()))
            .expect("the refused reload is logged");
        if line.contains("reload refused") {
            break line;
        }
    };
    assert!(refused.contains("gavel.toml"), "{refused}");
    assert_eq!(ids(PING_ONLY).0, 200, "the running config still serves");
    assert!(ids(OPERATOR).1.contains("second"));
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}

/// What #15 added to a buyer's definition goes through the admin API too: a direct-post buyer
/// created at runtime wins with its fixed price (kept in USD with two decimals) and gets the lead
/// without being pinged; a format's constant headers are never shown; TLS files are refused
/// (they are named in the config file only).
#[test]
fn a_direct_post_buyer_with_a_format_is_managed_through_the_api() {
    let env = env_with_spare_buyers();
    let log = env.fleet.log();
    let def = json!({
        "id": "newbie",
        "fixed_price": 50.00,
        "post_url": env.fleet.post_url("newbie"),
    });
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.text.contains("\"fixed_price\":50.00"), "{}", r.text);
    assert_eq!(r.json["ping_url"], "");

    let won = env.ping(&ping_body());
    assert_eq!(won.json["status"], "won", "{}", won.text);
    let id = won.json["auction_id"].as_str().unwrap().to_string();
    let token = won.json["bid"]["bid_token"].as_str().unwrap().to_string();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["winner"]["buyer_id"], "newbie", "{}", rec.text);
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(log.posts("newbie"), 1);
    assert_eq!(
        log.pings("newbie"),
        0,
        "a direct-post buyer is never pinged"
    );

    let formatted = json!({
        "id": "slow",
        "ping_url": env.fleet.ping_url("slow"),
        "post_url": env.fleet.post_url("slow"),
        "enabled": false,
        "ping_format": {
            "encoding": "form",
            "headers": {"X-Api-Key": "secret-key-1"},
            "fields": {"zip": {"from": "zip3"}, "vendor": {"value": "GAVEL"}},
            "answer": {"type": "json", "amount": "/bid/amount"},
        },
    });
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &formatted.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains("secret-key-1"), "{}", r.text);
    assert_eq!(r.json["ping_format"]["headers"]["X-Api-Key"], "");
    let fields: Vec<&String> = r.json["ping_format"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, ["zip", "vendor"], "fields keep their order");

    let mut with_ca = definition(&env, "tls_buyer");
    with_ca["ping_url"] = json!("https://127.0.0.1:1/ping");
    with_ca["tls"] = json!({"ca_file": "/etc/passwd"});
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &with_ca.to_string());
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("tls.ca_file"), "{}", r.text);
}

/// Issue #21, F6: the public sandbox token created 977 buyers, after which production got
/// `422 too_many_buyers`. Each tenant now has its own room: a sandbox holding its full 1,000
/// buyers (here from the config file, which counts with the API's) refuses one more, while
/// production still creates one, and the sandbox's refusal says nothing of production.
#[test]
fn a_full_sandbox_does_not_stop_a_production_create() {
    let full = gavel::config::MAX_BUYERS_PER_TENANT;
    let env = Env::start(Driver::Legacy, vec![fixed("p_alpha", 20.0)], |cfg, _| {
        let template = cfg.buyers[0].clone();
        cfg.buyers = (0..full)
            .map(|n| {
                let mut b = template.clone();
                b.id = format!("sandbox_{n:04}");
                b.enabled = false;
                b
            })
            .collect();
    });
    let one_more = |token: &str, id: &str| {
        let def = json!({
            "id": id,
            "ping_url": env.fleet.ping_url("p_alpha"),
            "post_url": env.fleet.post_url("p_alpha"),
        });
        env.post("/v1/admin/buyers", Some(token), &def.to_string())
    };
    let r = one_more(OPERATOR, "sandbox_extra");
    assert_eq!(
        (r.status, r.error_code()),
        (422, "too_many_buyers"),
        "{}",
        r.text
    );
    let r = one_more(LIVE_OPERATOR, "p_alpha");
    assert_eq!(
        r.status, 201,
        "production is not the sandbox's to fill: {}",
        r.text
    );
    let listed = env.get("/v1/admin/buyers", Some(LIVE_OPERATOR));
    assert_eq!(listed.json["buyers"].as_array().map(Vec::len), Some(1));
}
