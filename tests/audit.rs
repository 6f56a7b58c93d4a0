//! The audit log through the real server: admin changes of sellers, OAuth clients, buyers and
//! webhook endpoints each leave one entry naming the credential's party and client, the action,
//! the target, and the thing before and after; no secret ever appears in the listing (checked on
//! the raw body); `from`/`to`/`party` filter it, `cursor` pages through it, only the operator of
//! the tenant reads it, and it survives a restart.
// Test threads are not event loops.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use gavel::config::{Config, Driver, Scope, Tenant, TokenConfig, WebhookConfig};
use serde_json::{json, Value};

const OPERATOR: &str = "gv_test_audit_it_operator_00000000000000000";
const OPERATOR_LIVE: &str = "gv_live_audit_it_operator_00000000000000000";
/// A webhook signing secret from the config file: never part of an entry.
const WEBHOOK_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3A=";
/// A buyer's auth header values sent through the API: never part of an entry.
const BUYER_KEY: &str = "s3cret-buyer-key-0001";
const BUYER_KEY_2: &str = "s3cret-buyer-key-0002";

fn operator(client: &str, tenant: Tenant, plain: &str) -> TokenConfig {
    TokenConfig {
        client: client.into(),
        tenant,
        sha256: gavel::auth::sha256_hex(plain),
        scopes: [Scope::Admin].into_iter().collect(),
        buyer: None,
        seller: None,
        operator: true,
        requests_per_s: None,
    }
}

fn setup(cfg: &mut Config) {
    cfg.tokens
        .push(operator("it-operator", Tenant::Sandbox, OPERATOR));
    cfg.tokens.push(operator(
        "it-operator-live",
        Tenant::Production,
        OPERATOR_LIVE,
    ));
    cfg.webhooks.push(WebhookConfig {
        id: "crm".into(),
        tenant: Tenant::Sandbox,
        seller: None,
        url: "http://127.0.0.1:9/hook".into(),
        secrets: vec![WEBHOOK_SECRET.into()],
        secrets_env: None,
        events: vec!["lead.posted".into()],
        enabled: true,
    });
}

fn send(env: &Env, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    let r = call(&env.base, method, path, Some(token), body.as_deref(), &[]);
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text);
    r
}

/// Every entry of the listing at `query`, page after page, and the raw bodies read.
fn all_entries(env: &Env, token: &str, query: &str) -> (Vec<Value>, String) {
    let (mut entries, mut raw) = (Vec::new(), String::new());
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/admin/audit?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = env.get(&path, Some(token));
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        raw.push_str(&r.text);
        entries.extend(r.json["entries"].as_array().unwrap().iter().cloned());
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (entries, raw),
        }
    }
    panic!("the cursor never ended");
}

fn find<'a>(entries: &'a [Value], action: &str, kind: &str, id: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["action"] == action && e["target"]["kind"] == kind && e["target"]["id"] == id)
        .unwrap_or_else(|| panic!("no {action} of {kind} {id} in {entries:#?}"))
}

#[test]
fn every_admin_change_is_audited_with_its_party_and_never_a_secret() {
    let mut env = Env::start_with_clock(
        Driver::Legacy,
        vec![fixed("x", 30.0), fixed("bought", 20.0)],
        |cfg, _| setup(cfg),
        manual_clock(),
    );
    // Four moments, ten seconds apart, so `from` and `to` can pick some of them.
    let t0 = env.clock.now_ms();
    send(
        &env,
        "POST",
        "/v1/admin/sellers",
        OPERATOR,
        Some(json!({"id": "acme"})),
    );
    env.jump_clock(10_000);
    let t1 = env.clock.now_ms();
    send(
        &env,
        "PATCH",
        "/v1/admin/sellers/acme",
        OPERATOR,
        Some(json!({"name": "Acme", "pings_per_s": 25})),
    );
    send(
        &env,
        "POST",
        "/v1/admin/sellers/acme/suspend",
        OPERATOR,
        None,
    );
    env.jump_clock(10_000);
    let t2 = env.clock.now_ms();
    let client = send(
        &env,
        "POST",
        "/v1/admin/clients",
        OPERATOR,
        Some(json!({"name": "crm sync", "scopes": ["ping"]})),
    );
    let client_id = client.json["client_id"].as_str().unwrap().to_string();
    let client_secret = client.json["client_secret"].as_str().unwrap().to_string();
    send(
        &env,
        "DELETE",
        &format!("/v1/admin/clients/{client_id}"),
        OPERATOR,
        None,
    );
    // A seller's own change names the seller.
    let own = send(
        &env,
        "POST",
        "/v1/admin/clients",
        TOKEN,
        Some(json!({"name": "own", "scopes": ["ping"]})),
    );
    let own_secret = own.json["client_secret"].as_str().unwrap().to_string();
    env.jump_clock(10_000);
    let mut buyer = json!({
        "id": "bought",
        "ping_url": env.fleet.ping_url("bought"),
        "post_url": env.fleet.post_url("bought"),
        "auth_header": {"name": "X-Buyer-Key", "value": BUYER_KEY},
    });
    // The config already names `bought`: create another id with the same endpoints.
    buyer["id"] = json!("bought_api");
    send(&env, "POST", "/v1/admin/buyers", OPERATOR, Some(buyer));
    send(
        &env,
        "PATCH",
        "/v1/admin/buyers/bought_api",
        OPERATOR,
        Some(json!({"auth_header": {"name": "X-Buyer-Key", "value": BUYER_KEY_2}, "floor": 2.5})),
    );
    send(
        &env,
        "POST",
        "/v1/admin/webhooks/crm/enable",
        OPERATOR,
        None,
    );

    let (entries, raw) = all_entries(&env, OPERATOR, "limit=2");
    assert_eq!(entries.len(), 9, "{entries:#?}");
    // No secret, whatever the entry: client secrets (and their hashes), buyer keys, webhook
    // secrets.
    for secret in [
        client_secret.as_str(),
        &gavel::auth::sha256_hex(&client_secret),
        own_secret.as_str(),
        &gavel::auth::sha256_hex(&own_secret),
        BUYER_KEY,
        BUYER_KEY_2,
        WEBHOOK_SECRET,
    ] {
        assert!(
            !raw.contains(secret),
            "{secret} leaked into the audit log: {raw}"
        );
    }
    // Newest first, each entry once.
    let ats: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
    let mut ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
    assert!(ids.iter().all(|id| id.starts_with("aud_")));

    // Who, what, before and after.
    let created = find(&entries, "create", "seller", "acme");
    assert_eq!(
        (created["party"].as_str(), created["client"].as_str()),
        (Some("operator"), Some("it-operator"))
    );
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["after"]["id"], "acme");
    let updated = find(&entries, "update", "seller", "acme");
    assert_eq!(updated["before"]["name"], "");
    assert_eq!(updated["after"]["name"], "Acme");
    assert_eq!(updated["after"]["pings_per_s"], 25.0);
    let suspended = find(&entries, "suspend", "seller", "acme");
    assert_eq!(
        (
            suspended["before"]["enabled"].as_bool(),
            suspended["after"]["enabled"].as_bool()
        ),
        (Some(true), Some(false))
    );
    let made = find(&entries, "create", "oauth_client", &client_id);
    assert_eq!(made["after"]["name"], "crm sync");
    assert_eq!(made["after"]["client_secret"], Value::Null);
    let revoked = find(&entries, "revoke", "oauth_client", &client_id);
    assert_eq!(revoked["before"]["revoked_at"], Value::Null);
    assert!(revoked["after"]["revoked_at"].is_string());
    let sellers_own: Vec<&Value> = entries
        .iter()
        .filter(|e| e["party"] == "seller:it-all")
        .collect();
    assert_eq!(sellers_own.len(), 1, "{entries:#?}");
    assert_eq!(sellers_own[0]["client"], "it-all");
    assert_eq!(sellers_own[0]["target"]["kind"], "oauth_client");
    let bought = find(&entries, "create", "buyer", "bought_api");
    assert_eq!(
        bought["after"]["buyer"]["auth_header"]["name"],
        "X-Buyer-Key"
    );
    assert_eq!(bought["after"]["buyer"]["auth_header"]["value"], "[masked]");
    let repriced = find(&entries, "update", "buyer", "bought_api");
    assert_eq!(repriced["before"]["buyer"]["floor"], 0.0);
    assert_eq!(repriced["after"]["buyer"]["floor"], 2.5);
    let enabled = find(&entries, "enable", "webhook_endpoint", "crm");
    assert_eq!(enabled["after"]["disabled_by_410"], false);

    // Filters: the party, and a time window (inclusive at both ends).
    let (by_seller, _) = all_entries(&env, OPERATOR, "party=seller:it-all");
    assert_eq!(by_seller.len(), 1);
    let (by_operator, _) = all_entries(&env, OPERATOR, "party=operator&limit=3");
    assert_eq!(by_operator.len(), 8);
    let window = format!(
        "from={}&to={}",
        gavel::auction::rfc3339_ms(t1),
        gavel::auction::rfc3339_ms(t2)
    );
    let (between, _) = all_entries(&env, OPERATOR, &window);
    // Newest first: within one millisecond (the manual clock stands still between jumps), in the
    // reverse of the order the changes were made.
    let actions: Vec<String> = between
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"]["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "create oauth_client",
            "revoke oauth_client",
            "create oauth_client",
            "suspend seller",
            "update seller"
        ],
        "{between:#?}"
    );
    assert!(between.iter().all(|e| e["target"]["id"] != "bought_api"));
    let (first, _) = all_entries(
        &env,
        OPERATOR,
        &format!("to={}", gavel::auction::rfc3339_ms(t0)),
    );
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["action"], "create");

    // Bad queries say which parameter is wrong.
    for q in [
        "party=admin",
        "from=yesterday",
        "limit=0",
        "limit=201",
        "cursor=***",
        "colour=blue",
    ] {
        let r = env.get(&format!("/v1/admin/audit?{q}"), Some(OPERATOR));
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_query"),
            "{q}: {}",
            r.text
        );
    }
    // Only the tenant's operator reads it.
    let r = env.get("/v1/admin/audit", Some(TOKEN));
    assert_eq!((r.status, r.error_code()), (404, "not_found"));
    let (live, _) = all_entries(&env, OPERATOR_LIVE, "");
    assert!(live.is_empty(), "{live:#?}");

    // Durable: the same log after a restart.
    env.restart();
    let (again, _) = all_entries(&env, OPERATOR, "limit=200");
    assert_eq!(again, entries);
}
