//! Issue #21, F7: buyer URLs must not point into the host. Through the real server: the admin API
//! refuses each hostile URL naming its field (`ping_url`, `post_url`); a host name that resolves
//! into the host is refused when the call would connect (`egress_refused`, counted as a call
//! error of kind `egress`), and nothing reaches the address; allowing it in `[egress]` lets the
//! same buyer through.

mod common;

use common::*;
use gavel::config::Driver;
use serde_json::json;

/// Before the fix each of these was accepted, and the outcomes of pings to them (`http_405`,
/// `http_401`, `connect_failed`) made the sandbox token a port scanner of the host.
#[test]
fn hostile_buyer_urls_are_refused_with_the_field_named() {
    let env = Env::start(Driver::Legacy, vec![fixed("fine", 10.0)], |_, _| {});
    let fleet = env.fleet.base_url(); // http://127.0.0.1:PORT, allowed by the test fixture
    let fleet_host = fleet.trim_start_matches("http://");
    let ops = env.server().metrics_addr.expect("the fixture opens it");
    let hostile = [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_string(),
        "http://0.0.0.0:9000/ping".to_string(),
        "http://[::]:9000/ping".to_string(),
        "http://127.0.0.1:99999/ping".to_string(),
        format!("http://user:pw@{fleet_host}/buyers/fine/ping"),
        // Gavel's own API and operations listener, though the fixture allows 127.0.0.0/8.
        format!("{}/v1/ping", env.base),
        format!("http://{ops}/metrics"),
        "http://10.0.0.1/ping".to_string(),
        "http://169.254.10.10/ping".to_string(),
    ];
    let create = |ping: &str, post: &str| {
        let def = json!({"id": "hostile", "ping_url": ping, "post_url": post});
        env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string())
    };
    let good_post = format!("{fleet}/buyers/fine/post");
    let good_ping = format!("{fleet}/buyers/fine/ping");
    for url in &hostile {
        for (field, r) in [
            ("ping_url", create(url, &good_post)),
            ("post_url", create(&good_ping, url)),
        ] {
            assert_eq!(
                (r.status, r.error_code()),
                (422, "invalid_payload"),
                "{field} = {url}: {}",
                r.text
            );
            assert_eq!(r.field_names(), [field], "{url}: {}", r.text);
        }
    }
    // Nothing got in, and an existing buyer cannot be re-pointed there either.
    let listed = env.get("/v1/admin/buyers", Some(OPERATOR));
    assert_eq!(listed.json["buyers"].as_array().unwrap().len(), 1);
    let patch = json!({"ping_url": format!("{}/v1/ping", env.base)}).to_string();
    let r = call(
        &env.base,
        "PATCH",
        "/v1/admin/buyers/fine",
        Some(OPERATOR),
        Some(&patch),
        &[],
    );
    assert_eq!(
        (r.status, r.field_names()),
        (422, vec!["ping_url"]),
        "{}",
        r.text
    );
    // The allowed loopback target itself is fine.
    assert_eq!(create(&good_ping, &good_post).status, 201);
}

/// A host name is checked where it resolves: `localhost` (127.0.0.1 and ::1) in a config that
/// does not allow loopback fails every call as `egress_refused` without connecting, counted as a
/// call error of kind `egress`; allowing loopback lets the same buyer bid.
#[test]
fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
    let mut env = Env::start(Driver::Legacy, vec![fixed("by_name", 10.0)], |cfg, _| {
        cfg.egress.allow_private.clear();
        for b in &mut cfg.buyers {
            b.ping_url = b.ping_url.replace("127.0.0.1", "localhost");
            b.post_url = b.post_url.replace("127.0.0.1", "localhost");
            assert!(b.ping_url.starts_with("http://localhost:"));
        }
    });
    let log = env.fleet.log();
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "no_bid", "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let outcome = &rec.json["buyers"][0];
    assert_eq!(outcome["outcome"], "error", "{}", rec.text);
    assert_eq!(outcome["reject_reason"], "egress_refused", "{}", rec.text);
    assert!(
        outcome["reject_detail"]
            .as_str()
            .is_some_and(|d| d.contains("loopback") && d.contains("allow_private")),
        "{outcome}"
    );
    assert_eq!(
        log.pings("by_name"),
        0,
        "nothing reached the loopback buyer"
    );
    let text = env.scrape();
    let line = r#"gavel_buyer_call_errors_total{buyer="by_name",tenant="sandbox",kind="egress"} 1"#;
    assert!(text.lines().any(|l| l == line), "{line} in\n{text}");

    // The operator allows loopback: the same buyer, by the same name, is reached.
    env.config.egress.allow_private = vec!["127.0.0.0/8".into(), "::1/128".into()];
    env.restart();
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    assert_eq!(log.pings("by_name"), 1);
}

/// A name that resolves to Gavel's own API port is refused at connect time even where loopback
/// is allowed: only an `ip:port` entry opens one of Gavel's own listeners.
#[test]
fn a_name_resolving_to_gavels_own_listener_is_refused() {
    let env = Env::start(Driver::Legacy, vec![fixed("fine", 10.0)], |_, _| {});
    let port = env.server().addr.port();
    let def = json!({
        "id": "self",
        "ping_url": format!("http://localhost:{port}/v1/ping"),
        "post_url": format!("http://localhost:{port}/v1/post"),
    });
    let r = env.post("/v1/admin/buyers", Some(OPERATOR), &def.to_string());
    assert_eq!(r.status, 201, "a name passes the URL check: {}", r.text);
    let pings_before = env.metric_sum("gavel_core_requests_total");
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    let id = r.json["auction_id"].as_str().unwrap();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let own = rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buyer_id"] == "self")
        .unwrap()
        .clone();
    assert_eq!(own["reject_reason"], "egress_refused", "{own}");
    assert!(
        own["reject_detail"]
            .as_str()
            .is_some_and(|d| d.contains("own listeners")),
        "{own}"
    );
    // The ping and the record lookup are the only requests the API saw: no buyer call came in.
    let requests = env.metric_sum("gavel_core_requests_total") - pings_before;
    assert_eq!(requests, 2, "the buyer call never reached the API");
}
