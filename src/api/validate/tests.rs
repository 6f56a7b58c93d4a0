//! Unit tests of request validation: pings, posts, one-call leads, the field rules and the format
//! predicates, through the module's own functions.

use http::StatusCode;

use super::formats::{is_e164, is_email, is_ip, is_lead_uuid, is_us_state, is_zip};
use super::*;
use crate::error::{ApiError, FieldError};
use crate::model::{Ping, Post, Scalar};

/// 2025-06-15T15:06:40Z.
const NOW_MS: u64 = 1_750_000_000_000;

fn ping(json: &str) -> Result<Ping, ApiError> {
    parse_ping(&mut json.as_bytes().to_vec(), NOW_MS)
}

fn post(json: &str) -> Result<Post, ApiError> {
    parse_post(&mut json.as_bytes().to_vec(), NOW_MS)
}

fn fields(err: &ApiError) -> Vec<(&str, &str)> {
    err.field_errors
        .iter()
        .map(|e| (e.field.as_str(), e.code))
        .collect()
}

fn valid_ping() -> serde_json::Value {
    serde_json::json!({
        "auction_id": "auc_01JXYZ",
        "vertical": "auto_insurance",
        "sub_vertical": "full_coverage",
        "state": "TX",
        "zip3": "787",
        "source": "facebook_ads",
        "tcpa_consent": true,
        "trustedform_cert_url": "https://cert.trustedform.com/abc123",
        "ai_quality_score": 0.82,
        "currently_insured": true,
        "vehicle_count": 2,
        "driver_age_band": "25-34",
        "attributes": {"homeowner": true, "credit": "good", "age": 31, "ratio": 0.5, "x": null},
        "expires_at": "2030-01-01T00:00:00Z"
    })
}

fn valid_post() -> serde_json::Value {
    serde_json::json!({
        "auction_id": "auc_01JXYZ",
        "bid_token": "bid_abc.def-123",
        "lead": {
            "lead_uuid": "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2",
            "first_name": " Jane ",
            "last_name": "Doe",
            "email": "jane.doe@example.com",
            "phone": "+15125550182",
            "address": {"line1": "1 Main St", "line2": "Apt 2", "city": "Austin",
                        "state": "TX", "zip": "78701-1234"},
            "tcpa": {
                "consent_text": "I agree to be contacted.\nReally.",
                "consent_timestamp": "2025-06-15T15:00:00Z",
                "ip_address": "203.0.113.7",
                "trustedform_cert_url": "https://cert.trustedform.com/abc123"
            }
        }
    })
}

#[test]
fn valid_ping_parses() {
    let p = ping(&valid_ping().to_string()).expect("valid ping");
    assert_eq!(p.auction_id.as_deref(), Some("auc_01JXYZ"));
    assert_eq!(p.vertical, "auto_insurance");
    assert_eq!(p.sub_vertical.as_deref(), Some("full_coverage"));
    assert_eq!(p.state, "TX");
    assert_eq!(p.zip3, "787");
    assert_eq!(p.source, "facebook_ads");
    assert!(p.tcpa_consent);
    assert_eq!(p.ai_quality_score, Some(0.82));
    assert_eq!(p.currently_insured, Some(true));
    assert_eq!(p.vehicle_count, Some(2));
    assert_eq!(p.driver_age_band.as_deref(), Some("25-34"));
    assert_eq!(p.expires_at_ms, Some(1_893_456_000_000));
    assert_eq!(
        p.attributes,
        vec![
            ("age".to_owned(), Scalar::Int(31)),
            ("credit".to_owned(), Scalar::Str("good".to_owned())),
            ("homeowner".to_owned(), Scalar::Bool(true)),
            ("ratio".to_owned(), Scalar::Float(0.5)),
            ("x".to_owned(), Scalar::Null),
        ]
    );
}

#[test]
fn minimal_ping_parses_and_empty_or_null_optionals_are_absent() {
    let p = ping(
        r#"{"vertical":"auto","state":"PR","zip3":"007","source":"web.form-1",
                "tcpa_consent":false,"auction_id":"","sub_vertical":null,"attributes":null}"#,
    )
    .expect("minimal ping");
    assert_eq!(p.auction_id, None);
    assert_eq!(p.sub_vertical, None);
    assert!(p.attributes.is_empty());
    assert!(!p.tcpa_consent);
}

#[test]
fn every_ping_field_error_is_reported_at_once() {
    let mut v = valid_ping();
    let o = v.as_object_mut().unwrap();
    o.remove("vertical");
    o.insert("state".into(), "Texas".into());
    o.insert("zip3".into(), "78".into());
    o.insert("ai_quality_score".into(), 1.5.into());
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err.code, "invalid_payload");
    assert_eq!(
        fields(&err),
        vec![
            ("vertical", "missing_required"),
            ("state", "invalid_format"),
            ("zip3", "invalid_format"),
            ("ai_quality_score", "out_of_range"),
        ]
    );
    assert_eq!(err.field_errors[1].expected, "US state code such as TX");
    assert!(err.message.contains("4 invalid fields"), "{}", err.message);
}

#[test]
fn ping_type_errors() {
    let mut v = valid_ping();
    let o = v.as_object_mut().unwrap();
    o.insert("zip3".into(), 787.into());
    o.insert("tcpa_consent".into(), "yes".into());
    o.insert("vehicle_count".into(), 21.into());
    o.insert("currently_insured".into(), 1.into());
    o.insert("ai_quality_score".into(), "high".into());
    o.insert(
        "trustedform_cert_url".into(),
        "http://cert.trustedform.com/x".into(),
    );
    o.insert("vertical".into(), "Auto Insurance".into());
    o.insert("auction_id".into(), "x".repeat(65).into());
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(
        fields(&err),
        vec![
            ("auction_id", "too_long"),
            ("vertical", "invalid_format"),
            ("zip3", "invalid_type"),
            ("tcpa_consent", "invalid_type"),
            ("trustedform_cert_url", "invalid_format"),
            ("ai_quality_score", "invalid_type"),
            ("currently_insured", "invalid_type"),
            ("vehicle_count", "out_of_range"),
        ]
    );
}

#[test]
fn vehicle_count_accepts_whole_floats_only() {
    let mut v = valid_ping();
    v["vehicle_count"] = 3.0.into();
    assert_eq!(ping(&v.to_string()).unwrap().vehicle_count, Some(3));
    v["vehicle_count"] = 2.5.into();
    assert_eq!(
        fields(&ping(&v.to_string()).unwrap_err()),
        vec![("vehicle_count", "invalid_type")]
    );
    v["vehicle_count"] = (-1).into();
    assert_eq!(
        fields(&ping(&v.to_string()).unwrap_err()),
        vec![("vehicle_count", "out_of_range")]
    );
}

#[test]
fn pii_in_ping_is_refused_without_echoing_values() {
    let mut v = valid_ping();
    v["email"] = "jane.secret@example.com".into();
    v["phone"] = "+15125550182".into();
    v["attributes"]["firstName"] = "Janine".into();
    // Other errors are not reported alongside: PII refusal comes first.
    v["state"] = "XX".into();
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err.code, "pii_not_allowed");
    assert_eq!(
        fields(&err),
        vec![
            ("attributes.firstName", "pii_not_allowed"),
            ("email", "pii_not_allowed"),
            ("phone", "pii_not_allowed"),
        ]
    );
    assert!(err
        .field_errors
        .iter()
        .all(|e| e.expected == "absent: contact data belongs in the post"));
    for name in ["email", "phone", "attributes.firstName"] {
        assert!(err.message.contains(name), "{}", err.message);
    }
    let body = String::from_utf8(err.body("req_x")).unwrap();
    for secret in ["jane.secret", "example.com", "5125550182", "Janine"] {
        assert!(!body.contains(secret), "leaked {secret}: {body}");
    }
}

#[test]
fn each_contract_pii_field_is_refused() {
    for key in PII_FIELDS {
        let mut v = valid_ping();
        v[key] = serde_json::json!({"line1": "1 Main St"});
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(err.code, "pii_not_allowed", "{key}");
        assert_eq!(fields(&err), vec![(key, "pii_not_allowed")]);
        assert!(!err.message.contains("Main St"));
    }
}

#[test]
fn malformed_json_is_400_without_echoing_input() {
    for body in ["", "{", r#"{"email":"jane@x.com""#, "{\"a\":1,}", "nul"] {
        let err = ping(body).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(err.code, "malformed_json");
        assert!(!err.message.contains("jane"), "{}", err.message);
    }
    let err = post(r#"{"lead":{"email":"jane@x.com"}"#).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.field_errors.is_empty());
}

#[test]
fn non_object_root_is_422_on_root() {
    for body in ["[]", "42", "\"ping\"", "null"] {
        let err = ping(body).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(fields(&err), vec![("", "invalid_type")]);
        assert_eq!(err.field_errors[0].expected, "JSON object");
    }
}

#[test]
fn deep_nesting_is_refused_before_building_values() {
    let deep = format!(
        r#"{{"vertical":"auto","attributes":{{"a":{}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = ping(&deep).unwrap_err();
    assert_eq!(fields(&err), vec![("", "out_of_range")]);
    // Brackets inside strings do not count.
    let mut v = valid_ping();
    v["attributes"]["note"] = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".into();
    assert!(ping(&v.to_string()).is_ok());
}

#[test]
fn unknown_and_repeated_fields() {
    let mut v = valid_ping();
    v["credit_rating"] = "good".into();
    v["aaa"] = 1.into();
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(
        fields(&err),
        vec![("aaa", "unknown_field"), ("credit_rating", "unknown_field")]
    );
    assert_eq!(
        err.field_errors[0].expected,
        "no such field; put vertical-specific fields under attributes"
    );

    let err = ping(
        r#"{"vertical":"auto","state":"TX","state":"CA","zip3":"787","source":"web",
                "tcpa_consent":true,"attributes":{"k":1,"k":2}}"#,
    )
    .unwrap_err();
    assert_eq!(
        fields(&err),
        vec![
            ("attributes.k", "invalid_format"),
            ("state", "invalid_format")
        ]
    );
    assert_eq!(err.field_errors[1].expected, "each key at most once");
}

#[test]
fn attributes_must_be_scalars_within_limits() {
    let mut v = valid_ping();
    v["attributes"] = serde_json::json!({
        "nested": {"a": 1},
        "list": [1, 2],
        "long": "x".repeat(MAX_STRING_LEN + 1),
        "ok": "y".repeat(MAX_STRING_LEN),
        "big": u64::MAX,
    });
    let k = "k".repeat(MAX_ATTRIBUTE_KEY_LEN + 1);
    v["attributes"][&k] = 1.into();
    let err = ping(&v.to_string()).unwrap_err();
    let mut got = fields(&err);
    got.sort();
    let long_key = format!("attributes.{}…", "k".repeat(MAX_ATTRIBUTE_KEY_LEN));
    let mut want = vec![
        ("attributes.big", "out_of_range"),
        (long_key.as_str(), "too_long"),
        ("attributes.list", "invalid_type"),
        ("attributes.long", "too_long"),
        ("attributes.nested", "invalid_type"),
    ];
    want.sort();
    assert_eq!(got, want);

    let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_ATTRIBUTES)
        .map(|i| (format!("a{i}"), serde_json::Value::from(i)))
        .collect();
    v["attributes"] = many.into();
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(fields(&err), vec![("attributes", "too_long")]);

    v["attributes"] = serde_json::json!(["a"]);
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(fields(&err), vec![("attributes", "invalid_type")]);
}

#[test]
fn expires_at_must_be_a_future_rfc3339_time() {
    let mut v = valid_ping();
    v["expires_at"] = "2020-01-01T00:00:00Z".into();
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(fields(&err), vec![("expires_at", "out_of_range")]);
    assert_eq!(err.field_errors[0].expected, "a time in the future");

    v["expires_at"] = "tomorrow".into();
    let err = ping(&v.to_string()).unwrap_err();
    assert_eq!(fields(&err), vec![("expires_at", "invalid_format")]);

    // Offsets are honoured and not capped here: 2025-06-15T17:06:41+02:00 is 1 s after now.
    v["expires_at"] = "2025-06-15T17:06:41+02:00".into();
    assert_eq!(
        ping(&v.to_string()).unwrap().expires_at_ms,
        Some(NOW_MS + 1_000)
    );
    v["expires_at"] = "2025-06-15T15:06:40Z".into();
    assert!(
        ping(&v.to_string()).is_err(),
        "now itself is not in the future"
    );
}

#[test]
fn valid_post_parses() {
    let p = post(&valid_post().to_string()).expect("valid post");
    assert_eq!(p.auction_id, "auc_01JXYZ");
    assert_eq!(p.bid_token, "bid_abc.def-123");
    assert!(p.lead_uuid_supplied);
    assert_eq!(p.lead.lead_uuid, "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2");
    assert_eq!(p.lead.first_name, "Jane", "free text is trimmed");
    assert_eq!(p.lead.phone, "+15125550182");
    assert_eq!(p.lead.address.line2.as_deref(), Some("Apt 2"));
    assert_eq!(p.lead.address.zip, "78701-1234");
    assert_eq!(
        p.lead.tcpa.consent_text,
        "I agree to be contacted.\nReally."
    );
    assert_eq!(p.lead.tcpa.consent_timestamp, "2025-06-15T15:00:00Z");
    assert_eq!(p.lead.tcpa.ip_address, "203.0.113.7");
}

#[test]
fn post_without_lead_uuid_mints_one() {
    let mut v = valid_post();
    v["lead"].as_object_mut().unwrap().remove("lead_uuid");
    v["lead"]["address"]
        .as_object_mut()
        .unwrap()
        .remove("line2");
    v["lead"]["tcpa"]["ip_address"] = "2001:db8::1".into();
    let p = post(&v.to_string()).expect("valid post");
    assert!(!p.lead_uuid_supplied);
    assert!(is_lead_uuid(&p.lead.lead_uuid), "{}", p.lead.lead_uuid);
    assert_eq!(p.lead.address.line2, None);
}

#[test]
fn post_field_errors_are_reported_together_without_values() {
    let mut v = valid_post();
    v["lead"]["phone"] = "512-555-0182".into();
    v["lead"]["email"] = "jane.doe.example.com".into();
    v["lead"]["tcpa"]["ip_address"] = "300.1.2.3".into();
    v["lead"]["address"]["zip"] = "1234".into();
    v["lead"]["lead_uuid"] = "ld_01jxz3n6m2q8w5d4r7t9v0b1c2".into();
    v["lead"]["tcpa"]["consent_timestamp"] = "2025-06-15T15:20:00Z".into();
    v["lead"]["middle_name"] = "Q".into();
    let err = post(&v.to_string()).unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        fields(&err),
        vec![
            ("lead.lead_uuid", "invalid_format"),
            ("lead.email", "invalid_format"),
            ("lead.phone", "invalid_format"),
            ("lead.address.zip", "invalid_format"),
            ("lead.tcpa.consent_timestamp", "out_of_range"),
            ("lead.tcpa.ip_address", "invalid_format"),
            ("lead.middle_name", "unknown_field"),
        ]
    );
    let body = String::from_utf8(err.body("req_x")).unwrap();
    for secret in [
        "512-555",
        "jane.doe",
        "300.1.2.3",
        "\"1234\"",
        "Jane",
        "Main St",
    ] {
        assert!(!body.contains(secret), "leaked {secret}: {body}");
    }
}

#[test]
fn post_missing_nested_objects_report_only_the_object() {
    let mut v = valid_post();
    let lead = v["lead"].as_object_mut().unwrap();
    lead.remove("address");
    lead.insert("tcpa".into(), "yes".into());
    lead.remove("first_name");
    v.as_object_mut().unwrap().remove("bid_token");
    let err = post(&v.to_string()).unwrap_err();
    assert_eq!(
        fields(&err),
        vec![
            ("bid_token", "missing_required"),
            ("lead.first_name", "missing_required"),
            ("lead.address", "missing_required"),
            ("lead.tcpa", "invalid_type"),
        ]
    );

    let err = post(r#"{"auction_id":"a","bid_token":"b","extra":1}"#).unwrap_err();
    assert_eq!(
        fields(&err),
        vec![("lead", "missing_required"), ("extra", "unknown_field")]
    );
}

#[test]
fn post_text_rules() {
    let mut v = valid_post();
    v["lead"]["last_name"] = "   ".into();
    v["lead"]["first_name"] = "Ja\u{0}ne".into();
    v["lead"]["address"]["city"] = "x".repeat(MAX_STRING_LEN + 1).into();
    v["lead"]["address"]["state"] = "tx".into();
    v["lead"]["tcpa"]["consent_text"] = "ok\u{7}".into();
    v["lead"]["tcpa"]["trustedform_cert_url"] = "https://cert.example.com/a b".into();
    let err = post(&v.to_string()).unwrap_err();
    assert_eq!(
        fields(&err),
        vec![
            ("lead.first_name", "invalid_format"),
            ("lead.last_name", "missing_required"),
            ("lead.address.city", "too_long"),
            ("lead.address.state", "invalid_format"),
            ("lead.tcpa.consent_text", "invalid_format"),
            ("lead.tcpa.trustedform_cert_url", "invalid_format"),
        ]
    );
}

#[test]
fn field_errors_are_capped() {
    let keys: serde_json::Map<String, serde_json::Value> = (0..500)
        .map(|i| (format!("k{i:03}"), serde_json::Value::from(i)))
        .collect();
    let err = post(&serde_json::Value::from(keys).to_string()).unwrap_err();
    assert_eq!(err.field_errors.len(), MAX_FIELD_ERRORS);
    assert!(err.message.contains("more than 100"), "{}", err.message);
}

#[test]
fn format_predicates() {
    assert!(is_e164("+15125550182"));
    assert!(is_e164("+44207946095"));
    assert!(!is_e164("+0512555018"));
    assert!(!is_e164("+1512"));
    assert!(!is_e164("+1234567890123456"));
    assert!(!is_e164("15125550182"));
    assert!(is_email("a@b.co"));
    assert!(!is_email("a@b@c.co"));
    assert!(!is_email("@b.co"));
    assert!(!is_email("a@localhost"));
    assert!(!is_email("a b@c.co"));
    assert!(is_zip("78701") && is_zip("78701-1234"));
    assert!(!is_zip("787011234") && !is_zip("78701-123") && !is_zip("7870a"));
    assert!(is_ip("::1") && is_ip("10.0.0.1"));
    assert!(!is_ip("10.0.0") && !is_ip("example.com"));
    assert!(is_lead_uuid("ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2"));
    assert!(
        !is_lead_uuid("ld_81JXZ3N6M2Q8W5D4R7T9V0B1C2"),
        "overflows 128 bits"
    );
    assert!(!is_lead_uuid("ld_01JXZ3N6M2Q8W5D4R7T9V0B1C"));
    assert!(!is_lead_uuid("01JXZ3N6M2Q8W5D4R7T9V0B1C2"));
    assert_eq!(US_STATES.len(), 52);
    assert!(is_us_state("DC") && is_us_state("PR") && !is_us_state("GU"));
}

#[test]
fn lead_mismatch_reports_state_and_zip() {
    let lead = post(&valid_post().to_string()).unwrap().lead;
    assert!(lead.mismatches("TX", "787").is_empty());
    let errs = lead.mismatches("CA", "900");
    assert_eq!(
        errs,
        vec![
            FieldError::new(
                "lead.address.state",
                "lead_mismatch",
                "CA (the ping's state)"
            ),
            FieldError::new(
                "lead.address.zip",
                "lead_mismatch",
                "a ZIP code starting with 900 (the ping's zip3)"
            ),
        ]
    );
    assert_eq!(lead.mismatches("TX", "786").len(), 1);
}

#[test]
fn lead_has_path_reports_optional_fields() {
    let mut lead = post(&valid_post().to_string()).unwrap().lead;
    assert_eq!(lead.has_path("lead.tcpa.trustedform_cert_url"), Some(true));
    assert_eq!(lead.has_path("lead.address.line2"), Some(true));
    lead.tcpa.trustedform_cert_url = None;
    lead.address.line2 = None;
    assert_eq!(lead.has_path("lead.tcpa.trustedform_cert_url"), Some(false));
    assert_eq!(lead.has_path("address.line2"), Some(false));
    assert_eq!(lead.has_path("lead.email"), Some(true));
    assert_eq!(lead.has_path("lead.tcpa.ip_address"), Some(true));
    assert_eq!(lead.has_path("lead.ssn"), None);
    assert_eq!(lead.has_path("lead.address.line3"), None);
}
