//! A webhook receiver for the tests, on Gavel's loopback receiver
//! (`gavel::webhooks::receiver`): it records every request (path, Standard Webhooks headers, body,
//! when it arrived, what it answered) and answers as the test's plan says: a status, extra
//! headers, and an optional stall.
//!
//! Signatures are not checked here: tests check them with the official `standardwebhooks` crate
//! over the recorded bodies and headers, so a failure shows up as a test failure, not a log line.

// The receiver runs on plain threads of the test process, not on Gavel's event loops: locks and
// sleeps are fine here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gavel_testkit::receiver::{self, Server};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, unix seconds.
    pub timestamp: u64,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status the receiver answered.
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Verifies the delivery with the official Standard Webhooks library and `secret`.
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        let mut map = http::HeaderMap::new();
        for (n, v) in &self.headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        standardwebhooks::Webhook::new(secret)
            .map_err(|e| e.to_string())?
            .verify(&self.body, &map)
            .map_err(|e| e.to_string())
    }
}

/// How to answer one request: status, extra headers, and how long to stall first.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub stall: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            stall: Duration::ZERO,
        }
    }
}

/// Decides the answer from the request and how many earlier requests carried its webhook-id
/// (counted when they arrived, answered or not).
pub type Plan = Box<dyn FnMut(&Hit, usize) -> Answer + Send>;

pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
    _server: Server,
}

impl Receiver {
    /// Starts a receiver that answers every request with `status`.
    pub fn start(status: u16) -> Receiver {
        Receiver::with_plan(Box::new(move |_, _| Answer::status(status)))
    }

    pub fn with_plan(plan: Plan) -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let plan = Arc::new(Mutex::new(plan));
        let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (h, p) = (hits.clone(), plan.clone());
        let server = Server::start(Arc::new(move |req: receiver::Request| {
            let mut hit = Hit {
                id: req.header("webhook-id").unwrap_or_default().to_string(),
                timestamp: req
                    .header("webhook-timestamp")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                path: req.path,
                headers: req.headers,
                body: req.body,
                at: Instant::now(),
                status: 0,
            };
            let earlier = {
                let mut a = arrivals.lock().unwrap();
                let n = a.entry(hit.id.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            let answer = (p.lock().unwrap())(&hit, earlier);
            std::thread::sleep(answer.stall);
            hit.status = answer.status;
            h.lock().unwrap().push(hit);
            receiver::Answer {
                status: answer.status,
                headers: answer.headers,
            }
        }))
        .expect("the receiver starts");
        Receiver {
            addr: server.addr,
            hits,
            plan,
            _server: server,
        }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn set_plan(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Requests to `path`, in the order they were answered.
    pub fn hits_at(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Deduplicated by webhook-id: the first request of each id that was answered with a 2xx.
    pub fn delivered(&self, path: &str) -> Vec<Hit> {
        let mut seen = std::collections::HashSet::new();
        self.hits_at(path)
            .into_iter()
            .filter(|h| (200..300).contains(&h.status) && seen.insert(h.id.clone()))
            .collect()
    }

    /// Waits until `done` holds for the hits, or panics after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&[Hit]) -> bool) {
        let t0 = Instant::now();
        loop {
            if done(&self.hits()) {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for {what}; got {} requests",
                self.hits().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
