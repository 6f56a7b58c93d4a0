//! Tests for the mock buyer fleet: a real fleet on 127.0.0.1:0, driven by a plain blocking HTTP
//! client so the tests exercise the same wire Gavel's buyer client sees.
//!
//! This file holds that client and the fixtures the tests share (ping and post bodies, a buyer
//! without latency, a started fleet); the tests are in `ping`, `post`, `fleet` and `config`.

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
        gavel_testkit::dechunk(body).ok_or_else(|| bad("bad chunks"))?
    } else {
        body.to_owned()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
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

/// Sends `body` as a ping to the buyer `hang` and waits until the fleet counts `hangs` hanging
/// pings; the stream keeps the request open.
fn hanging_ping(fleet: &FleetHandle, body: &str, hangs: u64) -> TcpStream {
    let s = send(
        fleet.addr(),
        "POST",
        "/buyers/hang/ping",
        &[],
        body,
        TIMEOUT,
    )
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while fleet.log().ping_outcome("hang", PingOutcome::Hang) < hangs {
        assert!(
            Instant::now() < deadline,
            "hanging ping {hangs} never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    s
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

mod config;
mod fleet;
mod ping;
mod post;
