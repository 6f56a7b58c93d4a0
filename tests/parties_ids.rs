//! Seller-chosen ids are scoped by seller (issue 21): two sellers of one tenant may use the same
//! `auction_id` and `lead_uuid` at once without a 409, an overwrite or an oracle; a bid token is
//! bound to the seller it was issued to (F5); the operator finds an id's auctions across sellers
//! and picks one with `?seller_id=`; and a store the release before seller scoping wrote is still
//! read, each record by its own seller only.
//!
//! Sellers `a` and `b` send different `source`s, and each of the two buyers takes one source
//! only, so each seller's auction has its own winner and every delivery shows whose it was.

// Test threads sleep and block on the harness's HTTP client; no core runs here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use gavel::config::{Config, Driver, Scope, SellerConfig, Tenant, TokenConfig};
use gavel::sandbox::{FleetHandle, MockBuyerConfig};
use serde_json::{json, Value};

const SELLER_A: &str = "gv_test_parties_ids_seller_a_00000000000000";
const SELLER_B: &str = "gv_test_parties_ids_seller_b_00000000000000";
const SELLER_C: &str = "gv_test_parties_ids_seller_c_00000000000000";
const OPERATOR: &str = "gv_test_parties_ids_operator_00000000000000";
const BUYER_A: &str = "gv_test_parties_ids_buyer_ba_00000000000000";
const BUYER_B: &str = "gv_test_parties_ids_buyer_bb_00000000000000";

/// Seller `a`'s pings: only buyer `ba` takes them.
const SOURCE_A: &str = "google_ads";
/// Seller `b`'s pings: only buyer `bb` takes them.
const SOURCE_B: &str = "bing_ads";

const LEAD_UUID: &str = "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2";

fn token(client: &str, plaintext: &str, scopes: &[Scope]) -> TokenConfig {
    TokenConfig {
        client: client.to_string(),
        tenant: Tenant::Sandbox,
        sha256: gavel::auth::sha256_hex(plaintext),
        scopes: scopes.iter().copied().collect(),
        buyer: None,
        seller: None,
        operator: false,
        requests_per_s: None,
    }
}

fn seller(id: &str) -> SellerConfig {
    SellerConfig {
        id: id.to_string(),
        name: format!("Seller {id}"),
        tenant: Tenant::Sandbox,
        max_concurrent_auctions: None,
        pings_per_s: None,
        max_unposted_auctions: None,
        // The seller's view names the winner, which is what tells the two auctions apart.
        reveal_winner: true,
        enabled: true,
    }
}

/// A buyer whose ping answer takes `ping_ms`, so two pings sent together are open at once.
fn bidder(id: &str, price: f64, ping_ms: u64) -> MockBuyerConfig {
    let mut b = fixed(id, price);
    b.latency_ms_min = ping_ms;
    b.latency_ms_max = ping_ms;
    b
}

/// Sellers `a`, `b` and `c` with a token each, an operator token, and a token for each buyer;
/// buyer `ba` takes only [`SOURCE_A`], buyer `bb` only [`SOURCE_B`].
fn parties(cfg: &mut Config, _: &FleetHandle) {
    cfg.sellers = ["a", "b", "c"].into_iter().map(seller).collect();
    let selling = [Scope::Ping, Scope::Post, Scope::Reports];
    for (id, plaintext) in [("a", SELLER_A), ("b", SELLER_B), ("c", SELLER_C)] {
        let mut t = token(&format!("seller-{id}"), plaintext, &selling);
        t.seller = Some(id.to_string());
        cfg.tokens.push(t);
    }
    let mut op = token("ops", OPERATOR, &[Scope::Reports]);
    op.operator = true;
    cfg.tokens.push(op);
    for (buyer, plaintext) in [("ba", BUYER_A), ("bb", BUYER_B)] {
        let mut t = token(
            &format!("buyer-{buyer}"),
            plaintext,
            &[Scope::Status, Scope::Reports],
        );
        t.buyer = Some(buyer.to_string());
        cfg.tokens.push(t);
    }
    cfg.buyers[0].filters.sources_allow = vec![SOURCE_A.into()];
    cfg.buyers[1].filters.sources_allow = vec![SOURCE_B.into()];
}

fn start(driver: Driver) -> Env {
    Env::start(
        driver,
        vec![bidder("ba", 30.0, 300), bidder("bb", 20.0, 300)],
        parties,
    )
}

fn ping_of(auction_id: Option<&str>, source: &str) -> String {
    let mut body = ping_body();
    body["source"] = json!(source);
    if let Some(id) = auction_id {
        body["auction_id"] = json!(id);
    }
    body.to_string()
}

fn won(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    (
        r.json["auction_id"].as_str().unwrap().to_string(),
        r.json["bid"]["bid_token"].as_str().unwrap().to_string(),
    )
}

fn post_as(env: &Env, token: &str, auction_id: &str, bid_token: &str) -> Resp {
    let mut body = post_body(auction_id, bid_token);
    body["lead"]["lead_uuid"] = json!(LEAD_UUID);
    env.post("/v1/post", Some(token), &body.to_string())
}

fn auction(env: &Env, token: &str, path: &str) -> Resp {
    env.get(&format!("/v1/auctions/{path}"), Some(token))
}

/// The buyer that won the auction `token` sees under `path`, with its post status.
fn winner_seen(env: &Env, token: &str, path: &str) -> (String, String) {
    let r = auction(env, token, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    // A buyer's view holds only its own outcome: whether it won and bought.
    if let Some(me) = r.json["buyer_id"].as_str() {
        let won = if r.json["won"] == true { me } else { "" };
        let bought = if r.json["bought"] == true { "sold" } else { "" };
        return (won.to_string(), bought.to_string());
    }
    (
        r.json["winner"]["buyer_id"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        r.json["post"]["status"].as_str().unwrap_or("").to_string(),
    )
}

fn two_sellers_share_an_auction_id_and_a_lead_uuid(driver: Driver) {
    let mut env = start(driver);
    let id = "shared_order_000123";
    // Both pings are open at once (each buyer answers after 300 ms).
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| env.post("/v1/ping", Some(SELLER_A), &ping_of(Some(id), SOURCE_A)));
        let b = s.spawn(|| env.post("/v1/ping", Some(SELLER_B), &ping_of(Some(id), SOURCE_B)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (id_a, token_a) = won(&ra);
    let (id_b, token_b) = won(&rb);
    assert_eq!((id_a.as_str(), id_b.as_str()), (id, id));
    assert_eq!(ra.json["bid"]["amount"], json!(27.0), "{}", ra.text);
    assert_eq!(rb.json["bid"]["amount"], json!(18.0), "{}", rb.text);
    // Both post a lead under the same lead_uuid: two sales, one to each seller's own winner.
    for (token, bid_token) in [(SELLER_A, &token_a), (SELLER_B, &token_b)] {
        let p = post_as(&env, token, id, bid_token);
        assert_eq!(p.status, 201, "{}", p.text);
        assert_eq!(p.json["lead_uuid"], LEAD_UUID, "{}", p.text);
    }
    let mut delivered: Vec<(String, String)> = env
        .fleet
        .log()
        .deliveries()
        .into_iter()
        .map(|d| (d.buyer_id, d.auction_id))
        .collect();
    delivered.sort();
    let buyers: Vec<&str> = delivered.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(buyers, ["ba", "bb"]);
    // Buyers know each auction by an id of Gavel's own, never the sellers' shared one.
    assert_ne!(delivered[0].1, delivered[1].1);
    assert!(delivered
        .iter()
        .all(|(_, a)| a != id && a.starts_with("auc_")));
    // Two lead records: each buyer finds the lead it bought under the shared uuid (an
    // overwritten one would be 404 for its buyer).
    for buyer in [BUYER_A, BUYER_B] {
        let r = env.post(
            &format!("/v1/leads/{LEAD_UUID}/status"),
            Some(buyer),
            &json!({"status": "contacted"}).to_string(),
        );
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json["previous_status"], "sold", "{}", r.text);
    }
    for restarted in [false, true] {
        if restarted {
            env.restart();
        }
        // Each seller sees its own auction under the id, and nothing of the other's.
        assert_eq!(
            winner_seen(&env, SELLER_A, id),
            ("ba".into(), "sold".into())
        );
        assert_eq!(
            winner_seen(&env, SELLER_B, id),
            ("bb".into(), "sold".into())
        );
        let r = auction(&env, SELLER_A, &format!("{id}?seller_id=b"));
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
        let r = auction(&env, SELLER_C, id);
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
        // A buyer sees the auction it took part in; the other seller's filtered it out.
        assert_eq!(winner_seen(&env, BUYER_A, id).0, "ba");
        assert_eq!(winner_seen(&env, BUYER_B, id).0, "bb");
        // The operator sees both and must say which.
        let r = auction(&env, OPERATOR, id);
        assert_eq!(
            (r.status, r.error_code()),
            (409, "ambiguous_auction_id"),
            "{}",
            r.text
        );
        let message = r.json["message"].as_str().unwrap();
        assert!(message.contains("seller_id"), "{message}");
        assert!(message.contains("a, b"), "{message}");
        assert_eq!(
            winner_seen(&env, OPERATOR, &format!("{id}?seller_id=a")).0,
            "ba"
        );
        assert_eq!(
            winner_seen(&env, OPERATOR, &format!("{id}?seller_id=b")).0,
            "bb"
        );
        let r = auction(&env, OPERATOR, &format!("{id}?seller_id=c"));
        assert_eq!(r.status, 404, "{}", r.text);
        let r = auction(&env, OPERATOR, &format!("{id}?seller=a"));
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_query"),
            "{}",
            r.text
        );
    }
    // A seller's own id stays taken for as long as its record is kept; a third seller's is free.
    let again = env.post("/v1/ping", Some(SELLER_A), &ping_of(Some(id), SOURCE_A));
    assert_eq!(
        (again.status, again.error_code()),
        (409, "auction_exists"),
        "{}",
        again.text
    );
    let c = env.post("/v1/ping", Some(SELLER_C), &ping_of(Some(id), SOURCE_A));
    assert_eq!(won(&c).0, id);
    assert_eq!(
        winner_seen(&env, SELLER_C, id),
        ("ba".into(), "none".into())
    );
    assert_eq!(
        winner_seen(&env, SELLER_A, id),
        ("ba".into(), "sold".into())
    );
}

#[test]
fn two_sellers_use_one_auction_id_and_one_lead_uuid_at_once() {
    for d in drivers() {
        two_sellers_share_an_auction_id_and_a_lead_uuid(d);
    }
}

/// Regression (F5): seller B posted seller A's auction with A's bid token and got `201 sold`.
/// Another seller's auction is not found in B's scope (404, as an unknown auction), whatever
/// token comes with the post, and A's auction is untouched: A's own post then sells it.
fn seller_b_posting_seller_a_auction_with_a_token(driver: Driver) {
    let env = start(driver);
    // An auction id Gavel minted for A.
    let (minted, token_a) = won(&env.post("/v1/ping", Some(SELLER_A), &ping_of(None, SOURCE_A)));
    let stolen = post_as(&env, SELLER_B, &minted, &token_a);
    assert_eq!(
        (stolen.status, stolen.error_code()),
        (404, "not_found"),
        "{}",
        stolen.text
    );
    let r = auction(&env, SELLER_B, &minted);
    assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    assert!(
        env.fleet.log().deliveries().is_empty(),
        "nothing was delivered"
    );
    assert_eq!(
        winner_seen(&env, SELLER_A, &minted),
        ("ba".into(), "none".into())
    );
    let own = post_as(&env, SELLER_A, &minted, &token_a);
    assert_eq!(own.status, 201, "{}", own.text);
    assert_eq!(own.json["status"], "sold", "{}", own.text);

    // An id both chose: B holds an auction under it too, and A's token still opens neither.
    let id = "f5_shared_order";
    let (_, token_a) = won(&env.post("/v1/ping", Some(SELLER_A), &ping_of(Some(id), SOURCE_A)));
    let (_, token_b) = won(&env.post("/v1/ping", Some(SELLER_B), &ping_of(Some(id), SOURCE_B)));
    let stolen = post_as(&env, SELLER_B, id, &token_a);
    assert_eq!(
        (stolen.status, stolen.error_code()),
        (404, "not_found"),
        "{}",
        stolen.text
    );
    for (token, bid_token, buyer) in [(SELLER_A, &token_a, "ba"), (SELLER_B, &token_b, "bb")] {
        let p = post_as(&env, token, id, bid_token);
        assert_eq!(p.status, 201, "{}", p.text);
        assert_eq!(winner_seen(&env, token, id), (buyer.into(), "sold".into()));
    }
    let deliveries = env.fleet.log().deliveries();
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d.accepted));
}

/// Regression: buyers dedupe on `ping_<auction_id>` / `post_<auction_id>`. When two sellers
/// used one id with the same buyer, the buyer replayed A's post answer to B's post, and B's lead
/// was recorded as sold although the buyer never took it. Each seller-chosen id now reaches
/// buyers as an id of Gavel's own.
fn two_sellers_one_id_one_buyer(driver: Driver) {
    let env = Env::start(driver, vec![bidder("ba", 30.0, 0)], |cfg, fleet| {
        cfg.buyers.push(buyer(fleet, "bb"));
        parties(cfg, fleet);
        // Buyer `ba` takes both sellers' leads; `bb` (absent from the fleet) takes none.
        cfg.buyers[0].filters.sources_allow = vec![SOURCE_A.into(), SOURCE_B.into()];
        cfg.buyers[1].filters.sources_allow = vec!["no_such_source".into()];
    });
    let id = "order-7";
    for (token, source) in [(SELLER_A, SOURCE_A), (SELLER_B, SOURCE_B)] {
        let r = env.post("/v1/ping", Some(token), &ping_of(Some(id), source));
        let (got, bid_token) = won(&r);
        assert_eq!(got, id);
        let p = post_as(&env, token, id, &bid_token);
        assert_eq!(
            (p.status, p.json["status"].as_str()),
            (201, Some("sold")),
            "{}",
            p.text
        );
    }
    let d = env.fleet.log().deliveries();
    assert_eq!(d.len(), 2, "the buyer took both leads: {d:?}");
    assert_ne!(d[0].auction_id, d[1].auction_id);
    // A replay of the first answer would carry the first lead id again.
    assert_ne!(d[0].lead_id, d[1].lead_id);
}

#[test]
fn two_sellers_with_one_auction_id_at_one_buyer_make_two_sales() {
    for driver in drivers() {
        two_sellers_one_id_one_buyer(driver);
    }
}

#[test]
fn f5_a_seller_cannot_post_another_sellers_auction_with_its_bid_token() {
    for d in drivers() {
        seller_b_posting_seller_a_auction_with_a_token(d);
    }
}

/// The ping summary a layout-1 record kept (no PII).
const OLD_PING: &str = r#"{"vertical":"auto_insurance","state":"TX","zip3":"770","source":"google_ads","tcpa_consent":true}"#;

/// A sold auction and its lead as the release before seller scoping wrote them: layout 1, no
/// seller (the auction's is its client, `it-all`, the harness token's implicit seller).
fn layout_1_records(
    auction_id: &str,
    created_ms: u64,
) -> (
    gavel::store::legacy::AuctionRecordV1,
    gavel::store::legacy::LeadRecordV1,
) {
    use gavel::store::{AttemptRecord, LeadEvent, OutcomeRecord, PostRecord};
    let auction = gavel::store::legacy::AuctionRecordV1 {
        id: auction_id.to_string(),
        tenant: "sandbox".into(),
        client: "it-all".into(),
        ping_json: OLD_PING.as_bytes().to_vec(),
        created_ms,
        deadline_ms: created_ms + 1_500,
        closed_ms: Some(created_ms + 40),
        status: "won".into(),
        reject_reason: None,
        outcomes: vec![
            OutcomeRecord {
                buyer_id: "ba".into(),
                kind: "bid".into(),
                amount_cents: Some(3_000),
                buyer_bid_token: Some("ba-token".into()),
                valid_until_ms: Some(created_ms + 60_000),
                reject_reason: None,
                reject_detail: None,
                latency_us: 12_500,
                arrival: 0,
            },
            OutcomeRecord {
                buyer_id: "bb".into(),
                kind: "filtered".into(),
                amount_cents: None,
                buyer_bid_token: None,
                valid_until_ms: None,
                reject_reason: Some("source_not_allowed".into()),
                reject_detail: None,
                latency_us: 0,
                arrival: u32::MAX,
            },
        ],
        ranked: vec![0],
        payout_cents: Some(2_700),
        token_valid_until_ms: Some(created_ms + 60_000),
        post: PostRecord {
            state: "sold".into(),
            key: Some(format!("post_{auction_id}")),
            slot: Some(0),
            fingerprint: Some([3; 32]),
            reply_status: Some(201),
            reply_headers: vec![("content-type".into(), "application/json".into())],
            reply_body: b"{}".to_vec(),
            lead_uuid: Some(LEAD_UUID.into()),
            buyer_lead_id: Some("ba-lead-1".into()),
            sold_slot: Some(0),
        },
        post_attempts: vec![AttemptRecord {
            buyer_id: "ba".into(),
            attempt: 1,
            result: "accepted".into(),
            http_status: Some(201),
            latency_us: 8_000,
        }],
    };
    let lead = gavel::store::legacy::LeadRecordV1 {
        lead_uuid: LEAD_UUID.into(),
        auction_id: auction_id.to_string(),
        tenant: "sandbox".into(),
        buyer_id: "ba".into(),
        buyer_lead_id: "ba-lead-1".into(),
        created_ms: created_ms + 50,
        history: vec![LeadEvent {
            at_ms: created_ms + 50,
            status: "sold".into(),
            reason: None,
        }],
    };
    (auction, lead)
}

/// Stops the server, writes `records` into its store as layout 1, and starts it again on it.
fn restart_on_layout_1(
    env: &mut Env,
    records: &(
        gavel::store::legacy::AuctionRecordV1,
        gavel::store::legacy::LeadRecordV1,
    ),
) {
    env.server.take().expect("running").stop();
    // The stopped server's store may still be closing (see `Env::restart`): wait for its lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match gavel::runtime::open_store(&env.config) {
            Ok(s) => break s,
            Err(e)
                if e.contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the store opens: {e}"),
        }
    };
    gavel::store::legacy::write_layout_1(
        &store,
        std::slice::from_ref(&records.0),
        std::slice::from_ref(&records.1),
    )
    .expect("layout-1 records written");
    drop(store);
    env.restart();
}

fn a_layout_1_store_is_read_by_seller(driver: Driver) {
    let mut env = start(driver);
    let id = "acme_order_before_parties";
    let created_ms = gavel::types::clock::system_now_ms() - 60_000;
    restart_on_layout_1(&mut env, &layout_1_records(id, created_ms));
    // Its implicit seller (the client that pinged) reads it as it was written.
    // The operator reads the whole record as it was written.
    {
        let r = auction(&env, OPERATOR, id);
        assert_eq!(r.status, 200, "{}", r.text);
        let j = &r.json;
        assert_eq!(j["seller_id"], "it-all");
        assert_eq!(j["auction_id"], id);
        assert_eq!(j["tenant"], "sandbox");
        assert_eq!(j["status"], "won");
        assert_eq!(j["ping"], serde_json::from_str::<Value>(OLD_PING).unwrap());
        assert_eq!(
            j["created_at"],
            gavel::auction::rfc3339_ms(created_ms).as_str()
        );
        assert_eq!(j["buyers"][0]["buyer_id"], "ba");
        assert_eq!(j["buyers"][0]["outcome"], "bid");
        assert_eq!(j["buyers"][0]["amount"], json!(30.0));
        assert_eq!(j["buyers"][1]["outcome"], "filtered");
        assert_eq!(j["winner"]["buyer_id"], "ba");
        assert_eq!(j["winner"]["payout"], json!(27.0));
        assert_eq!(j["post"]["status"], "sold");
        assert_eq!(j["post"]["lead_uuid"], LEAD_UUID);
        assert_eq!(j["post"]["buyer_lead_id"], "ba-lead-1");
        assert_eq!(j["post"]["attempts"][0]["result"], "accepted");
    }
    // Its implicit seller (the client that pinged) reads its own view of it.
    let r = auction(&env, TOKEN, id);
    assert_eq!(r.status, 200, "{}", r.text);
    let j = &r.json;
    assert_eq!(
        (j["auction_id"].as_str(), j["status"].as_str()),
        (Some(id), Some("won"))
    );
    assert_eq!(j["payout"], json!(27.0));
    assert_eq!(
        (
            j["post"]["status"].as_str(),
            j["post"]["lead_uuid"].as_str()
        ),
        (Some("sold"), Some(LEAD_UUID))
    );
    assert!(
        j.get("buyers").is_none() && !r.text.contains("\"ba\""),
        "{}",
        r.text
    );
    // Any other seller: as if it did not exist.
    for token in [SELLER_A, SELLER_B] {
        let r = auction(&env, token, id);
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    }
    // The old lead is found by the buyer that bought it (its seller is its auction's).
    let r = env.post(
        &format!("/v1/leads/{LEAD_UUID}/status"),
        Some(BUYER_A),
        &json!({"status": "qualified"}).to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["previous_status"], "sold", "{}", r.text);
    let r = env.post(
        &format!("/v1/leads/{LEAD_UUID}/status"),
        Some(BUYER_B),
        &json!({"status": "qualified"}).to_string(),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    // The old id is still its seller's, and free for another seller.
    let again = env.post("/v1/ping", Some(TOKEN), &ping_of(Some(id), SOURCE_A));
    assert_eq!(
        (again.status, again.error_code()),
        (409, "auction_exists"),
        "{}",
        again.text
    );
    let other = env.post("/v1/ping", Some(SELLER_A), &ping_of(Some(id), SOURCE_A));
    assert_eq!(won(&other).0, id);
    // Now two sellers hold the id: the operator is asked to choose, and the old one is there.
    let r = auction(&env, OPERATOR, id);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "ambiguous_auction_id"),
        "{}",
        r.text
    );
    assert_eq!(
        winner_seen(&env, OPERATOR, &format!("{id}?seller_id=it-all")),
        ("ba".into(), "sold".into())
    );
}

#[test]
fn a_store_written_before_seller_scoping_is_read_by_each_seller() {
    for d in drivers() {
        a_layout_1_store_is_read_by_seller(d);
    }
}
