//! Post behaviour of the mock buyers: bid tokens, idempotency keys, acceptance and every
//! rejection, and what the delivery log keeps (ids and keys, never the lead). Pings are tested in
//! `ping`.

use super::*;

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
