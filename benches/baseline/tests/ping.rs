//! The baseline answers `POST /v1/ping` like Gavel: against the default config's sandbox buyers,
//! with the README's token; 401 without a token; 422 on a PII field.

use serde_json::{json, Value};

const TOKEN: &str = "gv_test_sandbox_readme_0000000000000000000000";

/// The project's default config, config/gavel.toml.
fn default_config() -> gavel::config::Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/gavel.toml");
    gavel::cli::load_config(&path).expect("default config loads")
}

/// The default config with its buyers pointed at a fleet on a free port.
fn config(fleet: &gavel::sandbox::FleetHandle) -> gavel::config::Config {
    let mut cfg = default_config();
    let from = format!("http://{}", cfg.sandbox.listen.expect("sandbox.listen"));
    for b in &mut cfg.buyers {
        b.ping_url = b.ping_url.replace(&from, &fleet.base_url());
        b.post_url = b.post_url.replace(&from, &fleet.base_url());
    }
    // The default config allows its own fleet's socket only; this fleet listens elsewhere.
    let fleet_addr = fleet.base_url().trim_start_matches("http://").to_string();
    cfg.egress.allow_private.push(fleet_addr);
    gavel::cli::check_config(&cfg, "config/gavel.toml").expect("config is valid");
    cfg
}

/// Sends a ping body with `token` (none: no Authorization header).
async fn send_ping(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = http.post(format!("{base}/v1/ping")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_like_gavel() {
    let default = default_config();
    let fleet = gavel::sandbox::MockFleet::start(
        "127.0.0.1:0".parse().unwrap(),
        default.sandbox.seed,
        default.sandbox.buyers.clone(),
        1,
    )
    .expect("fleet starts");
    let app = gavel_baseline::App::new(config(&fleet)).expect("app builds");
    let listener = gavel_baseline::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gavel_baseline::serve(listener, app));
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ping = json!({
        "vertical": "auto_insurance",
        "state": "CA",
        "zip3": "900",
        "source": "google_ads",
        "tcpa_consent": true,
        "ai_quality_score": 0.8
    });
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = send_ping(&http, &base, Some(TOKEN), &ping).await;
        assert_eq!(r.status(), 200);
        let a: Value = r.json().await.unwrap();
        assert!(a["auction_id"].as_str().unwrap().starts_with("auc_"), "{a}");
        assert!(a["buyers_pinged"].as_u64().unwrap() >= 1, "{a}");
        assert!(a["bids_received"].is_u64(), "{a}");
        assert!(a["auction_ms"].is_u64(), "{a}");
        match a["status"].as_str().unwrap() {
            "won" => {
                let bid = &a["bid"];
                assert!(bid["amount"].as_f64().unwrap() > 0.0, "{a}");
                assert_eq!(bid["currency"], "USD");
                assert!(
                    bid["bid_token"].as_str().unwrap().starts_with("bid_"),
                    "{a}"
                );
                assert!(
                    gavel::auction::parse_rfc3339_ms(bid["valid_until"].as_str().unwrap())
                        .is_some()
                );
                assert!(a.get("reject_reason").is_none(), "{a}");
            }
            "no_bid" => {
                assert!(a["bid"].is_null(), "{a}");
                let r = a["reject_reason"].as_str().unwrap();
                assert!(
                    ["no_bids", "below_floor", "no_eligible_buyers"].contains(&r),
                    "{a}"
                );
                assert!(a["reject_detail"].is_string(), "{a}");
            }
            s => panic!("status {s}"),
        }
        statuses.push(a["status"].as_str().unwrap().to_string());
    }
    assert!(statuses.iter().any(|s| s == "won"), "{statuses:?}");

    // A seller-chosen id is used once.
    let mut own = ping.clone();
    own["auction_id"] = json!("auc_baseline_test_1");
    let first = send_ping(&http, &base, Some(TOKEN), &own).await;
    assert_eq!(first.status(), 200);
    let again = send_ping(&http, &base, Some(TOKEN), &own).await;
    assert_eq!(again.status(), 409);

    let anon = send_ping(&http, &base, None, &ping).await;
    assert_eq!(anon.status(), 401);
    assert!(anon.headers().contains_key("www-authenticate"));

    let mut pii = ping.clone();
    pii["email"] = json!("someone@example.com");
    let r = send_ping(&http, &base, Some(TOKEN), &pii).await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "pii_not_allowed", "{e}");
    assert!(!e.to_string().contains("someone@example.com"), "{e}");

    fleet.stop();
}
