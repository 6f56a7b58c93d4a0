//! Ping behaviour of the mock buyers: determinism per seed and auction, bid shape and
//! probability, latency, the buyer's own filters, and every failure mode (hang, slow trickle,
//! http 500, garbage JSON, wrong auction id). Posts, routes and configuration are tested elsewhere.

use super::*;

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
    let _open = hanging_ping(&fleet, &body, 2);
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
