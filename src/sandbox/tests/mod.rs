//! Tests for the mock buyer fleet: a real fleet on 127.0.0.1:0, driven by a plain blocking HTTP
//! client so the tests exercise the same wire Gavel's buyer client sees.

// Test threads are not event loops: sleeping in them is how these tests wait.
#![allow(clippy::disallowed_methods)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Writes one HTTP/1.1 request with `Connection: close` and the given headers.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    Ok(s)
}

/// Sends a request and reads the whole response (the server closes after it).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<Resp> {
    let mut s = send(addr, method, path, headers, body, timeout)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Resp> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunks"))?
    } else {
        body.to_owned()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size + 2..)?;
    }
}

fn ping_body(auction_id: &str) -> Value {
    json!({
        "auction_id": auction_id,
        "vertical": "auto_insurance",
        "state": "CA",
        "zip3": "941",
        "source": "google_ads",
        "tcpa_consent": true,
        "ai_quality_score": 0.95,
        "expires_at": "2030-01-01T00:00:00Z",
    })
}

fn ping_with(fleet: &FleetHandle, buyer: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
    request(
        fleet.addr(),
        "POST",
        &format!("/buyers/{buyer}/ping"),
        headers,
        &body.to_string(),
        TIMEOUT,
    )
    .expect("ping answered")
}

fn ping(fleet: &FleetHandle, buyer: &str, auction_id: &str) -> Resp {
    ping_with(fleet, buyer, &ping_body(auction_id), &[])
}

fn post(fleet: &FleetHandle, buyer: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
    request(
        fleet.addr(),
        "POST",
        &format!("/buyers/{buyer}/post"),
        headers,
        &body.to_string(),
        TIMEOUT,
    )
    .expect("post answered")
}

fn post_body(auction_id: &str, bid_token: &str) -> Value {
    json!({
        "auction_id": auction_id,
        "bid_token": bid_token,
        "lead": {
            "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
            "phone": "+14155550100",
            "address": {"line1": "1 Main St", "city": "SF", "state": "CA", "zip": "94103"},
            "tcpa": {"consent_text": "yes", "consent_timestamp": "2025-01-01T00:00:00Z",
                     "ip_address": "203.0.113.9"}
        }
    })
}

/// A buyer with no latency, so tests run fast.
fn quick(id: &str) -> MockBuyerConfig {
    MockBuyerConfig {
        latency_ms_min: 0,
        latency_ms_max: 0,
        post_latency_ms_min: 0,
        post_latency_ms_max: 0,
        ..MockBuyerConfig::new(id)
    }
}

fn start(buyers: Vec<MockBuyerConfig>) -> FleetHandle {
    MockFleet::start(loopback(), 7, buyers, 1).expect("fleet starts")
}

/// The answer with its only wall-clock field removed.
fn stable(resp: &Resp) -> Value {
    let mut v = resp.json();
    if let Some(bid) = v.get_mut("bid").and_then(Value::as_object_mut) {
        bid.remove("valid_until");
    }
    v
}

/// The raw text of `"amount":…` in a bid body, to check the two decimals on the wire.
fn raw_amount(body: &str) -> &str {
    let start = body.find("\"amount\":").expect("amount present") + "\"amount\":".len();
    let len = body[start..]
        .find(',')
        .expect("amount is followed by currency");
    &body[start..start + len]
}

#[test]
fn same_seed_and_auction_give_the_same_answer() {
    let buyers = vec![MockBuyerConfig {
        bid_probability: 0.5,
        ..quick("a")
    }];
    let one = MockFleet::start(loopback(), 42, buyers.clone(), 2).unwrap();
    let two = MockFleet::start(loopback(), 42, buyers.clone(), 1).unwrap();
    let other_seed = MockFleet::start(loopback(), 43, buyers, 1).unwrap();

    let ids: Vec<String> = (0..40).map(|i| format!("auc_{i:04}")).collect();
    let first: Vec<Value> = ids.iter().map(|id| stable(&ping(&one, "a", id))).collect();

    // Same fleet again, concurrently and in reverse order: the answers must not move.
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .rev()
            .map(|(i, id)| {
                let one = &one;
                s.spawn(move || (i, stable(&ping(one, "a", id))))
            })
            .collect();
        for h in handles {
            let (i, v) = h.join().unwrap();
            assert_eq!(v, first[i], "auction {}", ids[i]);
        }
    });
    // Another fleet with the same seed, another process state: the same answers.
    for (id, expected) in ids.iter().zip(&first) {
        assert_eq!(&stable(&ping(&two, "a", id)), expected);
    }
    // Different auctions and a different seed do vary.
    let distinct: std::collections::HashSet<String> = first
        .iter()
        .map(|v| v.get("bid").unwrap().to_string())
        .collect();
    assert!(distinct.len() > 10, "answers barely vary: {distinct:?}");
    let moved = ids
        .iter()
        .zip(&first)
        .filter(|(id, expected)| &&stable(&ping(&other_seed, "a", id)) != expected)
        .count();
    assert!(moved > 10, "another seed changed only {moved} answers");
    assert_eq!(one.log().pings("a"), 80);
}

#[test]
fn bids_follow_probability_and_contract_shape() {
    let fleet = start(vec![MockBuyerConfig {
        bid_probability: 0.3,
        price_min: 10.0,
        price_max: 20.0,
        ..quick("p")
    }]);
    let mut bids = 0;
    for i in 0..200 {
        let auction = format!("auc_prob_{i}");
        let resp = ping(&fleet, "p", &auction);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert!(resp.header("x-request-id").unwrap().starts_with("req_"));
        let v = resp.json();
        assert_eq!(v["auction_id"], auction.as_str());
        if v["bid"].is_null() {
            assert_eq!(v["reject_reason"], "no_demand");
            assert!(v["reject_detail"].as_str().unwrap().contains('p'));
            continue;
        }
        bids += 1;
        let raw = raw_amount(&resp.body);
        let (_, cents) = raw.split_once('.').expect("two decimals");
        assert_eq!(cents.len(), 2, "amount {raw}");
        let amount: f64 = raw.parse().unwrap();
        assert!((10.0..=20.0).contains(&amount), "amount {amount}");
        assert_eq!(v["bid"]["currency"], "USD");
        let token = v["bid"]["bid_token"].as_str().unwrap();
        assert!(token.starts_with("mb_p_") && token.len() == "mb_p_".len() + 16);
        let until = time::OffsetDateTime::parse(
            v["bid"]["valid_until"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(until > time::OffsetDateTime::now_utc() + Duration::from_secs(50));
    }
    assert!((30..=90).contains(&bids), "{bids} bids out of 200 at p=0.3");
    let log = fleet.log();
    assert_eq!(log.pings("p"), 200);
    assert_eq!(log.ping_outcome("p", PingOutcome::Bid), bids);
    assert_eq!(log.ping_outcome("p", PingOutcome::NoBid), 200 - bids);
}

#[test]
fn latency_is_applied() {
    let fleet = start(vec![MockBuyerConfig {
        latency_ms_min: 80,
        latency_ms_max: 80,
        ..MockBuyerConfig::new("slow")
    }]);
    let started = Instant::now();
    assert_eq!(ping(&fleet, "slow", "auc_lat").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(80));
}

#[test]
fn own_filters_give_structured_reasons() {
    let fleet = start(vec![MockBuyerConfig {
        bid_probability: 1.0,
        filters: MockFilters {
            states: vec!["CA".into(), "NY".into()],
            verticals: vec!["auto_insurance".into()],
            min_ai_quality_score: Some(0.9),
        },
        ..quick("f")
    }]);
    let mut body = ping_body("auc_f1");
    body["state"] = json!("TX");
    let v = ping_with(&fleet, "f", &body, &[]).json();
    assert!(v["bid"].is_null());
    assert_eq!(v["reject_reason"], "state_not_served");
    assert!(v["reject_detail"].as_str().unwrap().contains("TX"));

    let mut body = ping_body("auc_f2");
    body["vertical"] = json!("home_insurance");
    let v = ping_with(&fleet, "f", &body, &[]).json();
    assert_eq!(v["reject_reason"], "vertical_not_served");

    let mut body = ping_body("auc_f3");
    body["ai_quality_score"] = json!(0.84);
    let v = ping_with(&fleet, "f", &body, &[]).json();
    assert_eq!(v["reject_reason"], "below_score_threshold");
    assert_eq!(v["reject_detail"], "ai_quality_score 0.84 < buyer_min 0.90");

    let mut body = ping_body("auc_f4");
    body.as_object_mut().unwrap().remove("ai_quality_score");
    let v = ping_with(&fleet, "f", &body, &[]).json();
    assert_eq!(v["reject_reason"], "below_score_threshold");

    let v = ping(&fleet, "f", "auc_f5").json();
    assert!(v["bid"].is_object(), "{v}");
}

#[test]
fn failure_modes_misbehave_as_documented() {
    let fleet = start(vec![
        MockBuyerConfig {
            failure: FailureMode::Http500,
            ..quick("e500")
        },
        MockBuyerConfig {
            failure: FailureMode::GarbageJson,
            ..quick("garbage")
        },
        MockBuyerConfig {
            failure: FailureMode::WrongAuctionId,
            ..quick("wrong")
        },
        MockBuyerConfig {
            failure: FailureMode::Http500,
            failure_probability: 0.0,
            bid_probability: 1.0,
            ..quick("never")
        },
    ]);
    let resp = ping(&fleet, "e500", "auc_x");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.json()["error"], "internal_error");

    let resp = ping(&fleet, "garbage", "auc_x");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "{\"auction_id\": nope");
    assert!(serde_json::from_str::<Value>(&resp.body).is_err());

    let resp = ping(&fleet, "wrong", "auc_x");
    assert_eq!(resp.status, 200);
    let v = resp.json();
    let other = v["auction_id"].as_str().unwrap();
    assert!(other != "auc_x" && other.starts_with("auc_"), "{other}");
    assert!(v["bid"]["amount"].as_f64().unwrap() > 0.0);

    // A failure probability of 0 leaves the buyer well-behaved.
    assert!(ping(&fleet, "never", "auc_x").json()["bid"].is_object());

    let log = fleet.log();
    assert_eq!(log.ping_outcome("e500", PingOutcome::Http500), 1);
    assert_eq!(log.ping_outcome("garbage", PingOutcome::GarbageJson), 1);
    assert_eq!(log.ping_outcome("wrong", PingOutcome::WrongAuctionId), 1);
}

#[test]
fn hang_never_answers_and_stop_still_returns_promptly() {
    let fleet = start(vec![MockBuyerConfig {
        failure: FailureMode::Hang,
        ..quick("hang")
    }]);
    let body = ping_body("auc_hang").to_string();
    let err = request(
        fleet.addr(),
        "POST",
        "/buyers/hang/ping",
        &[],
        &body,
        Duration::from_millis(300),
    )
    .expect_err("a hanging buyer must not answer");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    // Another request left hanging while the fleet stops.
    let _open = send(
        fleet.addr(),
        "POST",
        "/buyers/hang/ping",
        &[],
        &body,
        TIMEOUT,
    )
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while fleet.log().ping_outcome("hang", PingOutcome::Hang) < 2 {
        assert!(Instant::now() < deadline, "second hang never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    fleet.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
}

#[test]
fn slow_trickle_sends_headers_then_dribbles_and_stops_on_disconnect() {
    let fleet = start(vec![MockBuyerConfig {
        failure: FailureMode::SlowTrickle,
        bid_probability: 1.0,
        ..quick("trickle")
    }]);
    let log = fleet.log();
    let body = ping_body("auc_tr").to_string();
    let mut s = send(
        fleet.addr(),
        "POST",
        "/buyers/trickle/ping",
        &[],
        &body,
        Duration::from_millis(100),
    )
    .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_millis(900) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, chunks) = text.split_once("\r\n\r\n").expect("headers arrive at once");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked"));
    // One data byte per 200 ms: "1\r\nX\r\n" per chunk, so under a second gives a handful.
    let data_bytes = chunks.matches("1\r\n").count();
    assert!(
        (1..=6).contains(&data_bytes),
        "{data_bytes} bytes: {chunks:?}"
    );
    assert!(chunks.starts_with("1\r\n{\r\n"), "{chunks:?}");
    assert_eq!(log.active_connections(), 1);

    // The client gives up; the fleet notices on its next writes and lets the connection go.
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(3);
    while log.active_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "trickle kept going after disconnect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(log.ping_outcome("trickle", PingOutcome::SlowTrickle), 1);
}

/// Pings `buyer` for `auction_id` and returns its bid token.
fn bid_token(fleet: &FleetHandle, buyer: &str, auction_id: &str) -> String {
    let v = ping(fleet, buyer, auction_id).json();
    v["bid"]["bid_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{buyer} did not bid: {v}"))
        .to_owned()
}

#[test]
fn post_is_idempotent_per_key_and_recorded_without_pii() {
    let fleet = start(vec![MockBuyerConfig {
        bid_probability: 1.0,
        post_accept_probability: 1.0,
        ..quick("b")
    }]);
    let log = fleet.log();
    let token = bid_token(&fleet, "b", "auc_p1");
    let body = post_body("auc_p1", &token);

    let first = post(&fleet, "b", &body, &[("Idempotency-Key", "post_auc_p1")]);
    assert_eq!(first.status, 201, "{}", first.body);
    let lead_id = first.json()["lead_id"].as_str().unwrap().to_owned();
    assert!(
        lead_id.starts_with("b-") && lead_id.len() == 2 + 26,
        "{lead_id}"
    );
    let again = post(&fleet, "b", &body, &[("Idempotency-Key", "post_auc_p1")]);
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["lead_id"], lead_id.as_str());
    assert_eq!(log.leads("b"), 1);
    assert_eq!(log.posts("b"), 2);

    // A new key is a new delivery of the lead.
    let other = post(&fleet, "b", &body, &[("Idempotency-Key", "retry-2")]);
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["lead_id"], lead_id.as_str());
    assert_eq!(log.leads("b"), 2);

    // Without a header the key defaults to post_<auction_id>, which was already used above.
    let keyless = post(&fleet, "b", &body, &[]);
    assert_eq!(keyless.json()["lead_id"], lead_id.as_str());
    assert_eq!(log.leads("b"), 2);

    let deliveries = log.deliveries();
    assert_eq!(deliveries.len(), 4);
    assert_eq!(
        deliveries[0],
        DeliveryRecord {
            buyer_id: "b".into(),
            auction_id: "auc_p1".into(),
            idempotency_key: Some("post_auc_p1".into()),
            lead_id: Some(lead_id.clone()),
            accepted: true,
            reason: None,
        }
    );
    assert_eq!(deliveries[3].idempotency_key, None);
    let dump = format!("{deliveries:?} {log:?}");
    for pii in [
        "Ada",
        "Lovelace",
        "ada@example.com",
        "+1415",
        "Main St",
        "203.0.113.9",
    ] {
        assert!(!dump.contains(pii), "{pii} recorded");
    }
}

#[test]
fn post_rejections() {
    let fleet = start(vec![
        MockBuyerConfig {
            bid_probability: 1.0,
            failure: FailureMode::RejectPost,
            ..quick("rej")
        },
        MockBuyerConfig {
            bid_probability: 1.0,
            post_accept_probability: 1.0,
            ..quick("ok")
        },
    ]);
    let token = bid_token(&fleet, "rej", "auc_r");
    let resp = post(&fleet, "rej", &post_body("auc_r", &token), &[]);
    assert_eq!(resp.status, 422);
    assert_eq!(
        resp.json(),
        json!({"status": "rejected", "reason": "duplicate_lead"})
    );

    // Only the token this buyer issued for this auction is honoured.
    let token = bid_token(&fleet, "ok", "auc_r");
    let resp = post(&fleet, "ok", &post_body("auc_other", &token), &[]);
    assert_eq!(resp.status, 422);
    assert_eq!(resp.json()["reason"], "unknown_bid_token");
    let resp = post(&fleet, "ok", &post_body("auc_r", "bid_gavels_own"), &[]);
    assert_eq!(resp.json()["reason"], "unknown_bid_token");

    let resp = post(&fleet, "ok", &json!({"auction_id": "auc_r"}), &[]);
    assert_eq!(resp.status, 400);

    let deliveries = fleet.log().deliveries();
    let reasons: Vec<_> = deliveries.iter().map(|d| d.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("duplicate_lead"),
            Some("unknown_bid_token"),
            Some("unknown_bid_token"),
            Some("malformed_body")
        ]
    );
    assert!(deliveries
        .iter()
        .all(|d| !d.accepted && d.lead_id.is_none()));
    assert_eq!(fleet.log().leads("rej"), 0);
}

#[test]
fn routes_and_errors() {
    let fleet = start(vec![quick("a")]);
    let addr = fleet.addr();
    let resp = request(addr, "GET", "/healthz", &[], "", TIMEOUT).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"status": "ok", "buyers": 1}));

    let resp = request(addr, "POST", "/buyers/nobody/ping", &[], "{}", TIMEOUT).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "not_found");
    assert_eq!(
        request(addr, "POST", "/buyers/a/bid", &[], "{}", TIMEOUT)
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        request(addr, "GET", "/", &[], "", TIMEOUT).unwrap().status,
        404
    );

    let resp = request(addr, "GET", "/buyers/a/ping", &[], "", TIMEOUT).unwrap();
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));

    let resp = request(addr, "POST", "/buyers/a/ping", &[], "not json", TIMEOUT).unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "malformed_json");
    let resp = request(
        addr,
        "POST",
        "/buyers/a/ping",
        &[],
        "{\"state\":\"CA\"}",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(resp.status, 422);
    assert_eq!(fleet.log().ping_outcome("a", PingOutcome::BadRequest), 2);

    let big = format!("{{\"auction_id\":\"{}\"}}", "x".repeat(70 * 1024));
    let resp = request(addr, "POST", "/buyers/a/ping", &[], &big, TIMEOUT).unwrap();
    assert_eq!(resp.status, 413);
}

#[test]
fn auth_is_checked_on_ping_and_post() {
    let fleet = start(vec![MockBuyerConfig {
        bid_probability: 1.0,
        post_accept_probability: 1.0,
        expect_auth: Some("Bearer s3cret".into()),
        ..quick("auth")
    }]);
    let body = ping_body("auc_a");
    assert_eq!(ping_with(&fleet, "auth", &body, &[]).status, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(ping_with(&fleet, "auth", &body, &wrong).status, 401);
    let right = [("Authorization", "Bearer s3cret")];
    let v = ping_with(&fleet, "auth", &body, &right).json();
    let token = v["bid"]["bid_token"].as_str().unwrap();

    let pb = post_body("auc_a", token);
    assert_eq!(post(&fleet, "auth", &pb, &[]).status, 401);
    assert_eq!(post(&fleet, "auth", &pb, &right).status, 201);
    let log = fleet.log();
    assert_eq!(log.ping_outcome("auth", PingOutcome::Unauthorized), 2);
    assert_eq!(log.pings("auth"), 3);
    assert_eq!(log.posts("auth"), 2);
}

#[test]
fn log_keeps_last_ping_and_idempotency_keys() {
    let fleet = start(vec![quick("l")]);
    let log = fleet.log();
    assert_eq!(log.last_ping_body("l"), None);
    for id in ["auc_1", "auc_2"] {
        let key = format!("ping_{id}");
        ping_with(&fleet, "l", &ping_body(id), &[("Idempotency-Key", &key)]);
    }
    assert_eq!(log.last_ping_body("l"), Some(ping_body("auc_2")));
    let headers = log.ping_headers("l").unwrap();
    assert!(headers.contains(&("idempotency-key".into(), "ping_auc_2".into())));
    assert_eq!(log.ping_idempotency_keys("l"), ["ping_auc_1", "ping_auc_2"]);
    assert_eq!(log.pings("unknown"), 0);
    assert_eq!(log.ping_headers("unknown"), None);
    assert_eq!(log.dropped_records(), 0);
}

#[test]
fn config_defaults_and_parsing() {
    let b: MockBuyerConfig = toml::from_str("id = \"acme\"").unwrap();
    assert_eq!(b, MockBuyerConfig::new("acme"));
    assert_eq!(b.bid_probability, 0.7);
    assert_eq!((b.price_min, b.price_max), (5.0, 40.0));
    assert_eq!((b.latency_ms_min, b.latency_ms_max), (10, 30));
    assert_eq!((b.post_latency_ms_min, b.post_latency_ms_max), (2, 5));
    assert_eq!(b.post_accept_probability, 0.95);
    assert_eq!(b.bid_valid_ms, 60_000);
    assert_eq!(b.failure, FailureMode::None);
    assert_eq!(b.failure_probability, 1.0);
    assert_eq!(b.currency, "USD");
    assert!(validate_buyers(&[b]).is_ok());

    let b: MockBuyerConfig = toml::from_str(
        "id = \"x\"\nfailure = \"http_500\"\nfailure_probability = 0.2\n\
         [filters]\nstates = [\"CA\"]\nmin_ai_quality_score = 0.5\n",
    )
    .unwrap();
    assert_eq!(b.failure, FailureMode::Http500);
    assert_eq!(b.filters.states, ["CA"]);
    for mode in [
        "none",
        "hang",
        "garbage_json",
        "slow_trickle",
        "reject_post",
        "wrong_auction_id",
    ] {
        toml::from_str::<MockBuyerConfig>(&format!("id = \"x\"\nfailure = \"{mode}\"")).unwrap();
    }
    assert!(toml::from_str::<MockBuyerConfig>("id = \"x\"\nbid_prob = 0.1").is_err());
    assert!(toml::from_str::<MockBuyerConfig>("id = \"x\"\n[filters]\nzip = []").is_err());
    assert!(toml::from_str::<MockBuyerConfig>("bid_probability = 0.1").is_err());
}

#[test]
fn validation_names_the_key() {
    let ok = quick("a");
    let check = |b: MockBuyerConfig| validate_buyers(&[ok.clone(), b]).unwrap_err().0;
    assert_eq!(check(quick("a")), "buyers[1].id");
    assert_eq!(check(quick("")), "buyers[1].id");
    assert_eq!(check(quick("Has Space")), "buyers[1].id");
    let b = MockBuyerConfig {
        bid_probability: 1.5,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].bid_probability");
    let b = MockBuyerConfig {
        failure_probability: -0.1,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].failure_probability");
    let b = MockBuyerConfig {
        price_min: 0.0,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].price_min");
    let b = MockBuyerConfig {
        price_min: 50.0,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].price_max");
    let b = MockBuyerConfig {
        latency_ms_min: 40,
        latency_ms_max: 30,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].latency_ms_min");
    let b = MockBuyerConfig {
        post_latency_ms_max: 60_001,
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].post_latency_ms_max");
    let b = MockBuyerConfig {
        currency: "usd".into(),
        ..quick("b")
    };
    assert_eq!(check(b), "buyers[1].currency");
    let mut b = quick("b");
    b.filters.min_ai_quality_score = Some(2.0);
    assert_eq!(check(b), "buyers[1].filters.min_ai_quality_score");

    let err = MockFleet::start(loopback(), 0, vec![quick("a"), quick("a")], 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn many_threads_share_one_port_and_count_every_ping() {
    let fleet = MockFleet::start(loopback(), 1, vec![quick("m")], 4).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let fleet = &fleet;
            s.spawn(move || {
                for i in 0..25 {
                    assert_eq!(ping(fleet, "m", &format!("auc_{t}_{i}")).status, 200);
                }
            });
        }
    });
    assert_eq!(fleet.log().pings("m"), 200);
    let answered: u64 = fleet.log().ping_outcomes("m").iter().map(|(_, n)| n).sum();
    assert_eq!(answered, 200);
    drop(fleet);
}

#[test]
fn a_hanging_ping_is_released_when_the_client_goes_away() {
    let fleet = start(vec![MockBuyerConfig {
        failure: FailureMode::Hang,
        ..quick("hang")
    }]);
    let log = fleet.log();
    let body = ping_body("auc_hang").to_string();
    let s = send(
        fleet.addr(),
        "POST",
        "/buyers/hang/ping",
        &[],
        &body,
        TIMEOUT,
    )
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while log.ping_outcome("hang", PingOutcome::Hang) < 1 {
        assert!(Instant::now() < deadline, "the hang never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.active_connections(), 1);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(3);
    while log.active_connections() > 0 {
        assert!(Instant::now() < deadline, "the hang outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn outcome_order_matches_the_counter_slots() {
    // The log indexes its counters by discriminant, so `ALL` must list variants in declared order.
    for (i, outcome) in PingOutcome::ALL.iter().enumerate() {
        assert_eq!(*outcome as usize, i, "{}", outcome.as_str());
    }
}
