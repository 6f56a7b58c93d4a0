//! The fleet as a server: routes and their errors, `Authorization` checks, what the log records
//! for pings, several threads on one port, releasing a hanging ping when its client goes away, and
//! the outcome counters' order. Buyer behaviour is tested in `ping` and `post`.

use super::*;

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
    let s = hanging_ping(&fleet, &body, 1);
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
