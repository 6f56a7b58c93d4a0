use super::*;
use crate::config::format::{AnswerKind, FieldConfig, FormatEncoding, FormatMethod};
use crate::model::{Address, Scalar, Tcpa};

/// A format parsed the way the config file is, so the tests also pin the file's shape.
fn fmt(toml_text: &str) -> FormatConfig {
    toml::from_str(toml_text).expect("format parses")
}

fn compile(toml_text: &str, call: Call) -> Result<Format, FormatError> {
    Format::compile(&fmt(toml_text), call)
}

fn ping() -> Ping {
    let mut p = Ping::minimal();
    p.currently_insured = Some(true);
    p.vehicle_count = Some(2);
    p.attributes = vec![
        ("credit_band".into(), Scalar::Str("good".into())),
        ("gone".into(), Scalar::Null),
    ];
    p
}

fn lead() -> Lead {
    Lead {
        lead_uuid: "lead-1".into(),
        first_name: "Maria".into(),
        last_name: "Lopez".into(),
        email: "maria@example.com".into(),
        phone: "+1 (512) 555-0182".into(),
        address: Address {
            line1: "1 Main St".into(),
            line2: None,
            city: "Houston".into(),
            state: "TX".into(),
            zip: "77001".into(),
        },
        tcpa: Tcpa {
            consent_text: "ok".into(),
            consent_timestamp: "2026-05-11T14:21:58Z".into(),
            ip_address: "203.0.113.42".into(),
            trustedform_cert_url: None,
        },
    }
}

fn ping_input(p: &Ping) -> Input<'_> {
    Input::Ping {
        auction_id: "auc_1",
        expires_at: "2026-05-11T14:22:06.123Z",
        ping: p,
    }
}

fn text(b: &Built) -> &str {
    std::str::from_utf8(&b.body).unwrap()
}

#[test]
fn a_form_template_writes_fields_in_file_order_with_transforms() {
    let f = compile(
        r#"
        encoding = "form"
        headers = { "X-Api-Key" = "k1" }
        [fields]
        zip = { from = "zip3" }
        state = { from = "state", transform = "lower" }
        api_key = { value = "ABC 123" }
        insured = { from = "currently_insured", bool_as = ["Y", "N"] }
        band = { from = "driver_age_band", default = "unknown" }
        credit = { from = "attributes.credit_band", transform = "upper" }
        gone = { from = "attributes.gone" }
        cars = { from = "vehicle_count" }
        consent = { from = "tcpa_consent", bool_as = "1/0" }
        id = { from = "auction_id" }
        "#,
        Call::Ping,
    )
    .unwrap();
    let p = ping();
    let b = f.build(&ping_input(&p));
    assert_eq!(b.method, http::Method::POST);
    assert_eq!(
        b.content_type.as_ref().unwrap(),
        "application/x-www-form-urlencoded"
    );
    // A missing value without a default is left out (`gone`).
    assert_eq!(
        text(&b),
        "zip=770&state=tx&api_key=ABC+123&insured=Y&band=unknown&credit=GOOD&cars=2&consent=1&id=auc_1"
    );
    assert_eq!(f.headers()[0].0.as_str(), "x-api-key");
    assert_eq!(f.headers()[0].1, "k1");
}

#[test]
fn a_json_template_nests_dotted_names_and_keeps_types() {
    let f = compile(
        r#"
        [fields]
        "applicant.zip" = { from = "lead.address.zip" }
        "applicant.phone" = { from = "lead.phone", transform = "digits_only" }
        "applicant.line2" = { from = "lead.address.line2" }
        "meta.token" = { from = "bid_token" }
        "meta.test" = { value = true }
        "meta.version" = { value = 2 }
        "#,
        Call::Post,
    )
    .unwrap();
    let l = lead();
    let b = f.build(&Input::Post {
        auction_id: "auc_1",
        bid_token: "bt",
        lead: &l,
    });
    assert_eq!(b.content_type.as_ref().unwrap(), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "applicant": {"zip": "77001", "phone": "15125550182"},
            "meta": {"token": "bt", "test": true, "version": 2}
        })
    );
}

#[test]
fn a_get_template_puts_fields_in_the_query() {
    let f = compile(
        "method = \"GET\"\n[fields]\nz = { from = \"zip3\" }\nq = { from = \"ai_quality_score\", default = 0.5 }\n",
        Call::Ping,
    )
    .unwrap();
    let p = ping();
    let b = f.build(&ping_input(&p));
    assert_eq!(b.method, http::Method::GET);
    assert!(b.content_type.is_none() && b.body.is_empty());
    assert_eq!(b.query.as_deref(), Some("z=770&q=0.5"));
}

#[test]
fn templates_with_unknown_fields_or_bad_shapes_are_refused_with_their_key() {
    let err = |t: &str, call| compile(t, call).unwrap_err();
    let e = err("[fields]\nzip = { from = \"zipcode\" }\n", Call::Ping);
    assert_eq!(e.key, "fields.zip");
    assert_eq!(e.reason, "unknown ping field \"zipcode\"");
    // Lead fields exist only in a post, and a post names them under `lead.`.
    let e = err("[fields]\nmail = { from = \"lead.email\" }\n", Call::Ping);
    assert_eq!(e.reason, "unknown ping field \"lead.email\"");
    let e = err("[fields]\nmail = { from = \"email\" }\n", Call::Post);
    assert_eq!(
        (e.key.as_str(), e.reason.as_str()),
        ("fields.mail", "unknown lead field \"email\"")
    );
    let e = err(
        "[fields]\nx = { from = \"zip3\", value = \"1\" }\n",
        Call::Ping,
    );
    assert!(e.reason.contains("exactly one"), "{e:?}");
    let e = err("[fields]\nx = {}\n", Call::Ping);
    assert!(e.reason.contains("exactly one"), "{e:?}");
    let e = err(
        "[fields]\na = { value = 1 }\n\"a.b\" = { value = 2 }\n",
        Call::Ping,
    );
    assert_eq!(e.key, "fields.a.b");
    let e = err("[fields]\n\"a.\" = { value = 1 }\n", Call::Ping);
    assert_eq!(e.key, "fields.a.");
    let e = err(
        "[fields]\nx = { from = \"tcpa_consent\", bool_as = \"yes\" }\n",
        Call::Ping,
    );
    assert_eq!(e.key, "fields.x.bool_as");
    let e = err("[headers]\n\"bad header\" = \"x\"\n", Call::Ping);
    assert_eq!(e.key, "headers.bad header");
    let e = err("[answer]\ntype = \"json\"\n", Call::Ping);
    assert_eq!(e.key, "answer.amount");
    let e = err(
        "[answer]\ntype = \"json\"\namount = \"bid.amount\"\n",
        Call::Ping,
    );
    assert_eq!(e.key, "answer.amount");
    let e = err(
        "[answer]\ntype = \"xml\"\namount = \"/r/@a/b\"\n",
        Call::Ping,
    );
    assert_eq!(e.key, "answer.amount");
    // A post answer needs no amount.
    assert!(compile(
        "[fields]\nid = { from = \"auction_id\" }\n[answer]\ntype = \"xml\"\nlead_id = \"/r/id\"\n",
        Call::Post
    )
    .is_ok());
    // A post format without fields would send the buyer an empty body instead of the lead.
    let e = err("[answer]\ntype = \"json\"\n", Call::Post);
    assert_eq!(e.key, "fields");
    assert!(e.reason.contains("at least one field"), "{}", e.reason);
}

#[test]
fn the_file_shape_has_its_defaults() {
    let f = fmt("");
    assert_eq!(f.method, FormatMethod::Post);
    assert_eq!(f.encoding, FormatEncoding::Json);
    assert!(f.fields.is_empty() && f.answer.is_none());
    let f = fmt("[answer]\ntype = \"xml\"\namount = \"/a\"\n");
    assert_eq!(f.answer.unwrap().kind, AnswerKind::Xml);
    assert!(toml::from_str::<FormatConfig>("method = \"PUT\"").is_err());
    assert!(toml::from_str::<FieldConfig>("from = \"x\"\ntransform = \"title\"").is_err());
}

fn json_reader(extra: &str) -> Reader {
    let f = compile(
        &format!("[answer]\ntype = \"json\"\namount = \"/result/bid/amount\"\nbid_token = \"/result/bid/id\"\nreject_reason = \"/result/why\"\n{extra}"),
        Call::Ping,
    )
    .unwrap();
    f.answer.unwrap()
}

#[test]
fn json_answers_are_read_by_pointer() {
    let r = json_reader("accepted = \"/result/status\"\naccepted_value = \"OK\"\n");
    assert_eq!(
        r.ping(br#"{"result":{"status":"OK","bid":{"amount":12.5,"id":"t-1"}}}"#),
        PingVerdict::Bid {
            amount: Some(12.5),
            bid_token: Some("t-1".into())
        }
    );
    // A numeric string is a number; a missing token is no token.
    assert_eq!(
        r.ping(br#"{"result":{"status":"OK","bid":{"amount":"7.25"}}}"#),
        PingVerdict::Bid {
            amount: Some(7.25),
            bid_token: None
        }
    );
    // Missing or not-a-number amounts are read as no amount, for the fan-out to refuse.
    for body in [
        &br#"{"result":{"status":"OK","bid":{}}}"#[..],
        br#"{"result":{"status":"OK","bid":{"amount":"12 USD"}}}"#,
        br#"{"result":{"status":"OK","bid":{"amount":{"v":1}}}}"#,
        br#"{"result":{"status":"OK","bid":{"amount":"NaN"}}}"#,
    ] {
        assert_eq!(
            r.ping(body),
            PingVerdict::Bid {
                amount: None,
                bid_token: None
            },
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        r.ping(br#"{"result":{"status":"NO","why":"no_demand"}}"#),
        PingVerdict::NoBid {
            reason: Some("no_demand".into())
        }
    );
    assert_eq!(
        r.ping(br#"{"result":{}}"#),
        PingVerdict::NoBid { reason: None }
    );
    assert_eq!(r.ping(b"<xml/>"), PingVerdict::Unreadable("invalid_json"));
    // Without an accepted flag, any readable answer is a bid attempt.
    let r = json_reader("");
    assert_eq!(
        r.ping(br#"{"result":{"bid":{"amount":3}}}"#),
        PingVerdict::Bid {
            amount: Some(3.0),
            bid_token: None
        }
    );
    // A boolean flag compares as its text.
    let r = json_reader("accepted = \"/ok\"\n");
    assert!(matches!(
        r.ping(br#"{"ok":true,"result":{"bid":{"amount":3}}}"#),
        PingVerdict::Bid { .. }
    ));
    assert!(matches!(
        r.ping(br#"{"ok":false,"result":{"bid":{"amount":3}}}"#),
        PingVerdict::NoBid { .. }
    ));
}

#[test]
fn xml_answers_are_read_by_element_path() {
    let f = compile(
        r#"
        [answer]
        type = "xml"
        amount = "/response/bid/amount"
        bid_token = "/response/bid/@token"
        accepted = "/response/status"
        accepted_value = "accepted"
        reject_reason = "/response/reason"
        "#,
        Call::Ping,
    )
    .unwrap();
    let r = f.answer().unwrap();
    let body = br#"<?xml version="1.0"?>
        <response><status>accepted</status>
          <bid token="t&amp;1"><amount> 9.75 </amount></bid></response>"#;
    assert_eq!(
        r.ping(body),
        PingVerdict::Bid {
            amount: Some(9.75),
            bid_token: Some("t&1".into())
        }
    );
    assert_eq!(
        r.ping(b"<response><status>accepted</status><bid/></response>"),
        PingVerdict::Bid {
            amount: None,
            bid_token: None
        }
    );
    assert_eq!(
        r.ping(b"<response><status>rejected</status><reason>dupe</reason></response>"),
        PingVerdict::NoBid {
            reason: Some("dupe".into())
        }
    );
    for bad in [&b"{\"json\":1}"[..], b"<a><b></a>", b"", b"<a/><b/>"] {
        assert_eq!(r.ping(bad), PingVerdict::Unreadable("invalid_xml"));
    }
}

#[test]
fn post_answers_give_the_lead_id_a_refusal_or_nothing_confirmed() {
    let f = compile(
        "[fields]\nid = { from = \"auction_id\" }\n\
         [answer]\ntype = \"xml\"\naccepted = \"/r/@ok\"\naccepted_value = \"1\"\nlead_id = \"/r/id\"\n",
        Call::Post,
    )
    .unwrap();
    let r = f.answer().unwrap();
    assert_eq!(
        r.post(br#"<r ok="1"><id>L-9</id></r>"#),
        PostVerdict::Accepted {
            lead_id: Some("L-9".into())
        }
    );
    assert_eq!(
        r.post(br#"<r ok="0"><id>L-9</id></r>"#),
        PostVerdict::Refused
    );
    // The format maps a lead id: an answer that accepts without one, or one that cannot be read
    // at all, confirms nothing, yet the buyer may hold the lead.
    assert_eq!(r.post(br#"<r ok="1"></r>"#), PostVerdict::Unconfirmed);
    assert_eq!(r.post(b"not xml"), PostVerdict::Unconfirmed);
    let f = compile(
        "[fields]\nid = { from = \"auction_id\" }\n[answer]\ntype = \"json\"\n",
        Call::Post,
    )
    .unwrap();
    assert_eq!(
        f.answer().unwrap().post(b"{}"),
        PostVerdict::Accepted { lead_id: None }
    );
}
