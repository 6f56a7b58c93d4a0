//! A webhook receiver for the tests: a real HTTP/1.1 server on 127.0.0.1 that records every
//! request (path, Standard Webhooks headers, body, when it arrived, what it answered) and answers
//! as the test's plan says: a status, extra headers, and an optional stall.
//!
//! Signatures are not checked here: tests check them with the official `standardwebhooks` crate
//! over the recorded bodies and headers, so a failure shows up as a test failure, not a log line.

// The receiver runs on plain threads of the test process, not on Gavel's event loops: locks and
// sleeps are fine here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Requests that arrived, per webhook-id.
    arrivals: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    plan: Arc<Mutex<Plan>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts a receiver that answers every request with `status`.
    pub fn start(status: u16) -> Receiver {
        Receiver::with_plan(Box::new(move |_, _| Answer::status(status)))
    }

    pub fn with_plan(plan: Plan) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver {
            addr,
            hits: Arc::default(),
            arrivals: Arc::default(),
            plan: Arc::new(Mutex::new(plan)),
            stop: Arc::default(),
        };
        let (hits, arrivals, plan, stop) = (
            r.hits.clone(),
            r.arrivals.clone(),
            r.plan.clone(),
            r.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (hits, arrivals, plan) = (hits.clone(), arrivals.clone(), plan.clone());
                std::thread::spawn(move || serve(conn, &hits, &arrivals, &plan));
            }
        });
        r
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

    /// Requests to `path`, in arrival order.
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

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    conn: TcpStream,
    hits: &Mutex<Vec<Hit>>,
    arrivals: &Mutex<std::collections::HashMap<String, usize>>,
    plan: &Mutex<Plan>,
) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut hit = Hit {
            path,
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp").parse().unwrap_or(0),
            headers,
            body,
            at: Instant::now(),
            status: 0,
        };
        let earlier = {
            let mut a = arrivals.lock().unwrap();
            let n = a.entry(hit.id.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let answer = (plan.lock().unwrap())(&hit, earlier);
        std::thread::sleep(answer.stall);
        hit.status = answer.status;
        hits.lock().unwrap().push(hit);
        let mut head = format!("HTTP/1.1 {} X\r\ncontent-length: 0\r\n", answer.status);
        for (n, v) in &answer.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}
