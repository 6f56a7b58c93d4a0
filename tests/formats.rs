//! Buyer formats (posting instructions) and direct-post buyers, end to end: the real server on a
//! real socket, pinging and posting to small buyer servers of the test's own that record exactly
//! what they were sent and answer in their own formats.
//!
//! Formats are built and read above the io driver (the same pool call under either), so these
//! scenarios run under the epoll driver only; tests/e2e.rs covers the drivers themselves.

// The test buyers run on plain threads of the test process, not on Gavel's event loops: locks are
// fine here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use gavel::config::{BuyerConfig, Driver, FormatConfig};

/// One request a test buyer received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Status, content type and body of an answer.
type Reply = (u16, &'static str, String);
type Respond = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A keep-alive HTTP/1.1 buyer on loopback that records every request and answers with `respond`.
struct TestBuyer {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestBuyer {
    fn start(respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestBuyer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let respond: Respond = Arc::new(respond);
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (log, respond) = (log.clone(), respond.clone());
                std::thread::spawn(move || serve(conn, &log, &respond));
            }
        });
        TestBuyer { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests whose path (without the query) is `path`.
    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<Seen>>, respond: &Respond) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let body = req.body;
        let seen = Seen {
            method: req.method,
            target: req.target,
            headers: req.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let (status, ct, text) = respond(&seen);
        log.lock().unwrap().push(seen);
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn format(text: &str) -> FormatConfig {
    toml::from_str(text).expect("the test's format parses")
}

/// A buyer entry pointing at a test buyer, copied from the harness's defaults.
fn buyer_at(fleet: &gavel::sandbox::FleetHandle, id: &str, tb: &TestBuyer) -> BuyerConfig {
    let mut b = buyer(fleet, id);
    b.ping_url = tb.url("/ping");
    b.post_url = tb.url("/post");
    b
}

fn outcome(rec: &Resp, id: &str) -> serde_json::Value {
    rec.json["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buyer_id"] == id)
        .unwrap_or_else(|| panic!("no outcome for {id}: {}", rec.text))
        .clone()
}

fn ping_won(env: &Env) -> (String, String) {
    let r = env.ping(&ping_body());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won", "{}", r.text);
    (
        r.json["auction_id"].as_str().unwrap().to_string(),
        r.json["bid"]["bid_token"].as_str().unwrap().to_string(),
    )
}

/// The form fields the form buyer is configured for, as it must receive them (file order).
const FORM_PING: &str = "zip=770&state=TX&insured=Y&api_key=K-123";

/// A buyer that takes form-urlencoded requests and answers in XML: it bids only when the ping
/// arrives with exactly the configured fields, and buys only a post with exactly its fields.
#[test]
fn form_request_and_xml_answer_end_to_end() {
    let tb = TestBuyer::start(|s| {
        let form = s.header("content-type") == Some("application/x-www-form-urlencoded");
        let key = s.header("x-api-key") == Some("secret-1");
        match s.target.as_str() {
            "/ping" if form && key && s.body == FORM_PING => (
                200,
                "application/xml",
                "<?xml version=\"1.0\"?><response><status>accepted</status>\
                 <bid token=\"acme-t-1\"><amount>25.50</amount></bid></response>"
                    .into(),
            ),
            "/post" if form && key && s.body.contains("token=acme-t-1") => (
                200,
                "application/xml",
                "<result><lead id=\"ACME-L-77\"/><ok>1</ok></result>".into(),
            ),
            _ => (
                200,
                "application/xml",
                "<response><status>rejected</status><reason>bad_request</reason></response>".into(),
            ),
        }
    });
    let env = Env::start(Driver::Legacy, vec![fixed("low", 5.0)], |cfg, fleet| {
        let mut b = buyer_at(fleet, "acme", &tb);
        b.ping_format = Some(format(
            r#"
            encoding = "form"
            headers = { "X-Api-Key" = "secret-1" }
            [fields]
            zip = { from = "zip3" }
            state = { from = "state", transform = "upper" }
            insured = { from = "currently_insured", bool_as = ["Y", "N"] }
            api_key = { value = "K-123" }
            [answer]
            type = "xml"
            accepted = "/response/status"
            accepted_value = "accepted"
            amount = "/response/bid/amount"
            bid_token = "/response/bid/@token"
            reject_reason = "/response/reason"
            "#,
        ));
        b.post_format = Some(format(
            r#"
            encoding = "form"
            headers = { "X-Api-Key" = "secret-1" }
            [fields]
            first = { from = "lead.first_name" }
            email = { from = "lead.email" }
            phone = { from = "lead.phone", transform = "digits_only" }
            zip = { from = "lead.address.zip" }
            token = { from = "bid_token" }
            [answer]
            type = "xml"
            accepted = "/result/ok"
            accepted_value = 1
            lead_id = "/result/lead/@id"
            "#,
        ));
        cfg.buyers.push(b);
    });
    let (id, token) = ping_won(&env);
    let pings = tb.seen("/ping");
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].method, "POST");
    assert_eq!(pings[0].body, FORM_PING);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(outcome(&rec, "acme")["outcome"], "bid", "{}", rec.text);
    assert_eq!(outcome(&rec, "acme")["amount"].as_f64(), Some(25.5));
    assert_eq!(rec.json["winner"]["buyer_id"], "acme");

    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    let posts = tb.seen("/post");
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].body,
        "first=Maria&email=maria.lopez%40example.com&phone=15125550182&zip=77001&token=acme-t-1"
    );
    // Gavel's own headers still go with a formatted call.
    assert_eq!(
        posts[0].header("idempotency-key"),
        Some(format!("post_{id}").as_str())
    );
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["status"], "sold", "{}", rec.text);
    assert_eq!(rec.json["post"]["buyer_id"], "acme");
    assert_eq!(rec.json["post"]["buyer_lead_id"], "ACME-L-77");
}

/// A JSON buyer with renamed, nested request fields and a nested answer read by JSON pointer;
/// its refusal to bid is read from its own answer too.
#[test]
fn json_pointer_buyer_end_to_end() {
    let tb = TestBuyer::start(|s| {
        let v: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
        match s.target.as_str() {
            "/ping" if v["lead"]["geo"]["state"] == "TX" && v["meta"]["vendor"] == "gavel" => (
                200,
                "application/json",
                serde_json::json!({"result": {"decision": "yes",
                    "offer": {"price": 41.25, "ref": "J-1"}}})
                .to_string(),
            ),
            "/post" if v["contact"]["email"] == "maria.lopez@example.com" && v["ref"] == "J-1" => (
                200,
                "application/json",
                r#"{"data":{"lead_id":"J-LEAD-9","status":"accepted"}}"#.into(),
            ),
            _ => (
                200,
                "application/json",
                r#"{"result":{"decision":"no","why":"bad_request"}}"#.into(),
            ),
        }
    });
    let env = Env::start(Driver::Legacy, vec![fixed("low", 5.0)], |cfg, fleet| {
        let mut b = buyer_at(fleet, "jay", &tb);
        b.ping_format = Some(format(
            r#"
            [fields]
            "lead.geo.zip3" = { from = "zip3" }
            "lead.geo.state" = { from = "state" }
            "lead.vehicles" = { from = "vehicle_count" }
            "meta.vendor" = { value = "gavel" }
            "meta.request" = { from = "auction_id" }
            [answer]
            type = "json"
            accepted = "/result/decision"
            accepted_value = "yes"
            amount = "/result/offer/price"
            bid_token = "/result/offer/ref"
            reject_reason = "/result/why"
            "#,
        ));
        b.post_format = Some(format(
            r#"
            [fields]
            "contact.email" = { from = "lead.email" }
            "contact.name" = { from = "lead.last_name", transform = "upper" }
            ref = { from = "bid_token" }
            [answer]
            type = "json"
            accepted = "/data/status"
            accepted_value = "accepted"
            lead_id = "/data/lead_id"
            "#,
        ));
        cfg.buyers.push(b);
    });
    let (id, token) = ping_won(&env);
    let ping = &tb.seen("/ping")[0];
    assert_eq!(ping.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&ping.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "lead": {"geo": {"zip3": "770", "state": "TX"}, "vehicles": 2},
            "meta": {"vendor": "gavel", "request": id}
        })
    );
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(outcome(&rec, "jay")["amount"].as_f64(), Some(41.25));
    assert_eq!(rec.json["winner"]["buyer_id"], "jay");

    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    let post: serde_json::Value = serde_json::from_str(&tb.seen("/post")[0].body).unwrap();
    assert_eq!(
        post,
        serde_json::json!({
            "contact": {"email": "maria.lopez@example.com", "name": "LOPEZ"},
            "ref": "J-1"
        })
    );
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(
        rec.json["post"]["buyer_lead_id"], "J-LEAD-9",
        "{}",
        rec.text
    );

    // A ping the buyer declines (another state) is its no_bid, with its own reason.
    let mut other = ping_body();
    other["state"] = "CA".into();
    let r = env.ping(&other);
    assert_eq!(r.status, 200, "{}", r.text);
    let rec = env.get(
        &format!("/v1/auctions/{}", r.json["auction_id"].as_str().unwrap()),
        Some(OPERATOR),
    );
    let o = outcome(&rec, "jay");
    assert_eq!(
        (&o["outcome"], &o["reject_reason"]),
        (&"no_bid".into(), &"bad_request".into()),
        "{}",
        rec.text
    );
}

/// A JSON answer whose mapped amount is missing is the buyer's error (`invalid_amount`), as a
/// contract answer with a bad amount is.
#[test]
fn a_formatted_answer_without_an_amount_is_invalid_amount() {
    let tb = TestBuyer::start(|_| (200, "application/json", r#"{"price":null}"#.into()));
    let env = Env::start(Driver::Legacy, vec![fixed("low", 5.0)], |cfg, fleet| {
        let mut b = buyer_at(fleet, "broken", &tb);
        b.ping_format = Some(format(
            "[fields]\nz = { from = \"zip3\" }\n[answer]\ntype = \"json\"\namount = \"/price\"\n",
        ));
        cfg.buyers.push(b);
    });
    let (id, _) = ping_won(&env);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let o = outcome(&rec, "broken");
    assert_eq!(
        (&o["outcome"], &o["reject_reason"]),
        (&"error".into(), &"invalid_amount".into())
    );
    assert_eq!(rec.json["winner"]["buyer_id"], "low");
}

/// A GET buyer gets the fields in the query string, after the query its URL already has.
#[test]
fn a_get_buyer_gets_its_fields_in_the_query_string() {
    let tb = TestBuyer::start(|s| match (s.method.as_str(), s.target.as_str()) {
        ("GET", "/ping?src=gavel&zip=770&st=tx") if s.body.is_empty() => {
            (200, "application/json", r#"{"price":"33.10"}"#.into())
        }
        _ => (400, "application/json", "{}".into()),
    });
    let env = Env::start(Driver::Legacy, vec![fixed("low", 5.0)], |cfg, fleet| {
        let mut b = buyer_at(fleet, "getter", &tb);
        b.ping_url = tb.url("/ping?src=gavel");
        b.ping_format = Some(format(
            "method = \"GET\"\n[fields]\nzip = { from = \"zip3\" }\n\
             st = { from = \"state\", transform = \"lower\" }\n\
             [answer]\ntype = \"json\"\namount = \"/price\"\n",
        ));
        cfg.buyers.push(b);
    });
    let (id, _) = ping_won(&env);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(
        outcome(&rec, "getter")["amount"].as_f64(),
        Some(33.1),
        "{}",
        rec.text
    );
    assert_eq!(rec.json["winner"]["buyer_id"], "getter");
    assert_eq!(tb.seen("/ping")[0].header("content-type"), None);
}

/// A direct-post buyer: no ping URL, a fixed price, a form post.
fn direct(fleet: &gavel::sandbox::FleetHandle, tb: &TestBuyer, price_cents: u64) -> BuyerConfig {
    let mut b = buyer(fleet, "direct");
    b.ping_url = String::new();
    b.post_url = tb.url("/post");
    b.fixed_price = Some(price_cents);
    b.post_format = Some(format(
        r#"
        encoding = "form"
        [fields]
        email = { from = "lead.email" }
        state = { from = "lead.address.state" }
        [answer]
        type = "json"
        lead_id = "/id"
        "#,
    ));
    b
}

fn direct_buyer() -> TestBuyer {
    TestBuyer::start(|s| match s.target.as_str() {
        "/post" if s.body == "email=maria.lopez%40example.com&state=TX" => {
            (200, "application/json", r#"{"id":"D-1"}"#.into())
        }
        _ => (400, "application/json", "{}".into()),
    })
}

#[test]
fn a_direct_post_buyer_wins_with_its_fixed_price_and_gets_the_lead() {
    let tb = direct_buyer();
    let env = Env::start(Driver::Legacy, vec![fixed("pinged", 10.0)], |cfg, fleet| {
        cfg.buyers.push(direct(fleet, &tb, 2_000));
    });
    let r = env.ping(&ping_body());
    assert_eq!(r.json["status"], "won", "{}", r.text);
    // 20.00 minus the 10 % margin; only the pinged buyer counts as pinged.
    assert_eq!(r.json["bid"]["amount"].as_f64(), Some(18.0));
    assert_eq!(r.json["buyers_pinged"], 1);
    assert_eq!(r.json["bids_received"], 2);
    let id = r.json["auction_id"].as_str().unwrap().to_string();
    let token = r.json["bid"]["bid_token"].as_str().unwrap().to_string();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let o = outcome(&rec, "direct");
    assert_eq!(o["outcome"], "bid", "{}", rec.text);
    assert_eq!(o["direct_post"], true);
    assert_eq!(o["amount"].as_f64(), Some(20.0));
    assert_eq!(outcome(&rec, "pinged").get("direct_post"), None);
    assert_eq!(rec.json["winner"]["buyer_id"], "direct");
    assert!(tb.seen("/ping").is_empty());

    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.json["amount"].as_f64(), Some(18.0));
    assert_eq!(tb.seen("/post").len(), 1);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["buyer_id"], "direct");
    assert_eq!(rec.json["post"]["buyer_lead_id"], "D-1");
    assert!(env.fleet.log().deliveries().is_empty());
}

#[test]
fn a_direct_post_buyer_that_loses_is_not_called() {
    let tb = direct_buyer();
    let env = Env::start(Driver::Legacy, vec![fixed("pinged", 30.0)], |cfg, fleet| {
        cfg.buyers.push(direct(fleet, &tb, 2_000));
    });
    let (id, token) = ping_won(&env);
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["winner"]["buyer_id"], "pinged");
    assert_eq!(rec.json["post"]["buyer_id"], "pinged");
    assert_eq!(outcome(&rec, "direct")["direct_post"], true);
    assert!(tb.seen("/post").is_empty() && tb.seen("/ping").is_empty());
}

#[test]
fn a_direct_post_buyer_that_refuses_falls_back_to_the_next_bid() {
    // This direct buyer refuses every post (its answer never matches).
    let tb = TestBuyer::start(|_| (400, "application/json", "{}".into()));
    let env = Env::start(Driver::Legacy, vec![fixed("pinged", 10.0)], |cfg, fleet| {
        cfg.buyers.push(direct(fleet, &tb, 2_000));
    });
    let (id, token) = ping_won(&env);
    let p = env.post("/v1/post", Some(TOKEN), &post_body(&id, &token).to_string());
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(tb.seen("/post").len(), 1);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.json["post"]["buyer_id"], "pinged", "{}", rec.text);
    let attempts = rec.json["post"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["buyer_id"], "direct");
    assert_eq!(attempts[0]["result"], "rejected");
}

#[test]
fn a_direct_post_buyer_is_filtered_like_any_other() {
    let tb = direct_buyer();
    let env = Env::start(Driver::Legacy, vec![fixed("pinged", 10.0)], |cfg, fleet| {
        let mut b = direct(fleet, &tb, 2_000);
        b.filters.states = vec!["CA".into()];
        cfg.buyers.push(b);
    });
    let (id, _) = ping_won(&env);
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    let o = outcome(&rec, "direct");
    assert_eq!(
        (&o["outcome"], &o["reject_reason"]),
        (&"filtered".into(), &"state_not_allowed".into())
    );
    assert_eq!(rec.json["winner"]["buyer_id"], "pinged");
}

/// The fixed-price marker survives a restart: the record read back from the store shows it.
#[test]
fn the_direct_post_marker_survives_a_restart() {
    let tb = direct_buyer();
    let mut env = Env::start(Driver::Legacy, vec![fixed("pinged", 10.0)], |cfg, fleet| {
        cfg.buyers.push(direct(fleet, &tb, 2_000));
    });
    let (id, _) = ping_won(&env);
    env.restart();
    let rec = env.get(&format!("/v1/auctions/{id}"), Some(OPERATOR));
    assert_eq!(rec.status, 200, "{}", rec.text);
    let o = outcome(&rec, "direct");
    assert_eq!(
        (&o["outcome"], &o["direct_post"]),
        (&"bid".into(), &true.into())
    );
    assert_eq!(rec.json["winner"]["buyer_id"], "direct");
}

/// The three worked examples of docs/buyer-integration.md ("Posting instructions") are valid
/// buyer entries, and Gavel builds exactly the requests the page shows for them.
#[test]
fn documented_posting_instructions_build_the_documented_requests() {
    use gavel::buyers::format::{Call, Format, Input};
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/buyer-integration.md"),
    )
    .unwrap();
    let section = &doc[doc.find("## Posting instructions").unwrap()..];
    let section = &section[..section.find("## Certifying").unwrap()];
    let blocks = |lang: &str| -> Vec<String> {
        section
            .split(&format!("```{lang}\n"))
            .skip(1)
            .map(|b| b[..b.find("```").unwrap()].to_string())
            .collect()
    };
    let configs = blocks("toml");
    assert_eq!(configs.len(), 3);
    let bodies: Vec<String> = blocks("http")
        .iter()
        .map(|h| h[h.find("\n\n").unwrap() + 2..].trim_end().to_string())
        .collect();
    let mut body = serde_json::to_vec(&ping_body()).unwrap();
    let ping = gavel::api::validate::parse_ping(&mut body, 0).expect("the test ping is valid");
    let lead = gavel::model::Lead {
        lead_uuid: "ld_01JTZ8Q6A1B2C3D4E5F6G7H8J9".into(),
        first_name: "Maria".into(),
        last_name: "Lopez".into(),
        email: "maria.lopez@example.com".into(),
        phone: "+15125550182".into(),
        address: gavel::model::Address {
            line1: "1200 Sample St".into(),
            line2: None,
            city: "Houston".into(),
            state: "TX".into(),
            zip: "77001".into(),
        },
        tcpa: gavel::model::Tcpa {
            consent_text: "By clicking submit, I consent to be contacted.".into(),
            consent_timestamp: "2026-05-11T14:21:58Z".into(),
            ip_address: "203.0.113.42".into(),
            trustedform_cert_url: None,
        },
    };
    let auction_id = "auc_01JTZ8Q5W3M4N6P7R8S9T0V1W2";
    let ping_in = Input::Ping {
        auction_id,
        expires_at: "2026-05-11T14:22:08.082Z",
        ping: &ping,
    };
    let mut built = Vec::new();
    for (i, text) in configs.iter().enumerate() {
        let cfg = gavel::config::Config::parse("example.toml", text)
            .unwrap_or_else(|e| panic!("example {}: {e}", i + 1));
        gavel::cli::check_config(&cfg, "example.toml")
            .unwrap_or_else(|e| panic!("example {}: {e}", i + 1));
        let b = &cfg.buyers[0];
        // The post's bid token is the one each example's ping answer gave (none for example 3).
        let token = ["A-778", "J-1", ""][i];
        if let Some(f) = &b.ping_format {
            let f = Format::compile(f, Call::Ping).unwrap();
            built.push(f.build(&ping_in).body);
        }
        let f = Format::compile(b.post_format.as_ref().unwrap(), Call::Post).unwrap();
        built.push(
            f.build(&Input::Post {
                auction_id,
                bid_token: token,
                lead: &lead,
            })
            .body,
        );
    }
    // The page shows the full requests of examples 1 and 2's pings, example 1's post and
    // example 3's post; example 2's post is shown inline.
    let built: Vec<String> = built
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    assert_eq!(
        [&built[0], &built[1], &built[2], &built[4]],
        [&bodies[0], &bodies[1], &bodies[2], &bodies[3]]
    );
    assert!(section.contains(&format!("`{}`", built[3])), "{}", built[3]);
}
