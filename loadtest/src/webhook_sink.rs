//! `--webhooks`: a webhook receiver the spawned Gavel delivers to, so a run measures what the
//! outbox and its delivery cost the auction path, and how far behind the sale a webhook arrives.
//!
//! A plain HTTP/1.1 server on 127.0.0.1 (one thread per keep-alive connection) that answers 204
//! at once, checks each delivery's signature with the endpoint's secret, and reports every
//! arrival (event id, lag from the event's `created_at`) to one collector over a channel, so no
//! lock is shared. Owns nothing of Gavel's; it is a client of the contract (CONTRACT §8).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use gavel::webhooks::Secret;

/// Largest webhook body read, in bytes; Gavel's events are far smaller.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One delivery as the sink saw it.
struct Arrival {
    id: String,
    /// Arrival wall clock minus the event's `created_at`, in µs (0 when the clock says earlier).
    lag_us: u64,
    signed_ok: bool,
}

/// The running sink.
pub struct Sink {
    pub addr: SocketAddr,
    /// `whsec_…` the endpoint signs with.
    pub secret: String,
    rx: Receiver<Arrival>,
    stop: Arc<AtomicBool>,
}

/// What the sink received during the run.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookView {
    /// Requests received (redeliveries included).
    pub received: u64,
    /// Distinct `webhook-id`s.
    pub events: u64,
    /// Deliveries whose signature did not verify with the endpoint's secret.
    pub bad_signatures: u64,
    /// From the event's `created_at` to its arrival, ms: p50, p90, p99, max.
    pub lag_ms: [f64; 4],
}

impl WebhookView {
    pub fn to_json(&self) -> Value {
        json!({
            "received": self.received,
            "events": self.events,
            "bad_signatures": self.bad_signatures,
            "lag_ms": {
                "p50": self.lag_ms[0],
                "p90": self.lag_ms[1],
                "p99": self.lag_ms[2],
                "max": self.lag_ms[3],
            },
        })
    }
}

impl Sink {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub fn start() -> Result<Sink, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot start the webhook sink: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let secret = Secret::generate();
        let key = Secret::parse(&secret)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("gavel-load-webhook-sink".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (tx, key) = (tx.clone(), key.clone());
                    let _ = std::thread::Builder::new()
                        .name("gavel-load-webhook-conn".into())
                        .spawn(move || serve(conn, &key, &tx));
                }
            })
            .map_err(|e| format!("cannot start the webhook sink: {e}"))?;
        Ok(Sink {
            addr,
            secret,
            rx,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/gavel-load", self.addr)
    }

    /// Waits until no delivery arrived for `quiet` (or `limit` passed), then summarises.
    pub fn finish(&self, quiet: Duration, limit: Duration) -> WebhookView {
        // 1 µs to 1 h: a later arrival is recorded as 1 h.
        let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("static histogram bounds are valid");
        let (mut received, mut bad) = (0, 0);
        let mut ids = HashSet::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            match self.rx.recv_timeout(quiet) {
                Ok(a) => {
                    received += 1;
                    bad += u64::from(!a.signed_ok);
                    lag.saturating_record(a.lag_us);
                    ids.insert(a.id);
                }
                Err(_) => break,
            }
        }
        let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
        WebhookView {
            received,
            events: ids.len() as u64,
            bad_signatures: bad,
            lag_ms: [ms(0.5), ms(0.9), ms(0.99), lag.max() as f64 / 1000.0],
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one keep-alive connection until the peer closes it.
fn serve(conn: TcpStream, key: &Secret, tx: &Sender<Arrival>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut id, mut timestamp, mut signature, mut len) =
            (String::new(), 0u64, String::new(), 0usize);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "webhook-id" => id = value.to_string(),
                "webhook-timestamp" => timestamp = value.parse().unwrap_or(0),
                "webhook-signature" => signature = value.to_string(),
                "content-length" => len = value.parse().unwrap_or(usize::MAX),
                _ => {}
            }
        }
        if len > MAX_BODY_BYTES {
            let _ = out.write_all(
                b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let now_ms = gavel::auction::now_ms();
        let expected = key.sign(&id, timestamp, &body);
        let signed_ok = signature.split(' ').any(|s| s == expected);
        let created_ms = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| gavel::auction::parse_rfc3339_ms(v["created_at"].as_str()?));
        let lag_us = created_ms.map_or(0, |c| now_ms.saturating_sub(c) * 1000);
        if out
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
        let _ = tx.send(Arrival {
            id,
            lag_us,
            signed_ok,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_counts_checks_signatures_and_measures_lag() {
        let sink = Sink::start().unwrap();
        let key = Secret::parse(&sink.secret).unwrap();
        let agent = ureq::AgentBuilder::new().build();
        let created = gavel::auction::now_ms() - 250;
        let body = json!({"type": "lead.posted", "id": "evt_1",
            "created_at": gavel::auction::rfc3339_ms(created), "data": {}})
        .to_string();
        for (id, good) in [("evt_1", true), ("evt_1", true), ("evt_2", false)] {
            let ts = gavel::auction::now_ms() / 1000;
            let sig = if good {
                key.sign(id, ts, body.as_bytes())
            } else {
                "v1,bm9wZQ==".to_string()
            };
            let r = agent
                .post(&sink.url())
                .set("webhook-id", id)
                .set("webhook-timestamp", &ts.to_string())
                .set("webhook-signature", &sig)
                .send_string(&body)
                .unwrap();
            assert_eq!(r.status(), 204);
        }
        let v = sink.finish(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!((v.received, v.events, v.bad_signatures), (3, 2, 1));
        assert!(v.lag_ms[0] >= 250.0 && v.lag_ms[3] < 5_000.0, "{v:?}");
    }
}
