//! The `[[sandbox.buyers]]` configuration: defaults, TOML parsing, and `validate_buyers` naming the
//! offending key (also when `MockFleet::start` refuses a fleet). Buyer behaviour is tested in
//! `ping` and `post`.

use super::*;

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
