//! `--webhooks`: a webhook receiver the spawned Gavel delivers to, so a run measures what the
//! outbox and its delivery cost the auction path, and how far behind the sale a webhook arrives.
//!
//! Built on the loopback receiver of `gavel-testkit`: every delivery is answered 204
//! at once, its signature checked with the endpoint's secret, and its arrival (event id, lag from
//! the event's `created_at`) sent to one collector over a channel, so no lock is shared. Owns
//! nothing of Gavel's; it is a client of the contract (CONTRACT §8).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use gavel::webhooks::Secret;
use gavel_testkit::receiver::{Answer, Request, Server};

/// One delivery as the sink saw it.
struct Arrival {
    id: String,
    /// Arrival wall clock minus the event's `created_at`, in µs (0 when the clock says earlier).
    lag_us: u64,
    signed_ok: bool,
}

/// The running sink.
pub struct Sink {
    /// `whsec_…` the endpoint signs with.
    pub secret: String,
    rx: Receiver<Arrival>,
    server: Server,
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
    /// Starts the receiver on 127.0.0.1 with a fresh secret.
    pub fn start() -> Result<Sink, String> {
        let secret = Secret::generate();
        let key = Secret::parse(&secret).map_err(|e| e.to_string())?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let server = Server::start(Arc::new(move |req: Request| {
            let now_ms = gavel::types::clock::system_now_ms();
            let header = |n: &str| req.header(n).unwrap_or_default();
            let id = header("webhook-id").to_string();
            let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
            let expected = key.sign(&id, timestamp, &req.body);
            let signed_ok = header("webhook-signature")
                .split(' ')
                .any(|s| s == expected);
            let created_ms = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| gavel::auction::parse_rfc3339_ms(v["created_at"].as_str()?));
            let lag_us = created_ms.map_or(0, |c| now_ms.saturating_sub(c) * 1000);
            let _ = tx.send(Arrival {
                id,
                lag_us,
                signed_ok,
            });
            Answer::status(204)
        }))
        .map_err(|e| format!("cannot start the webhook sink: {e}"))?;
        Ok(Sink { secret, rx, server })
    }

    pub fn url(&self) -> String {
        self.server.url("/hooks/gavel-load")
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        reason = "a test thread's blocking client, not an event loop"
    )]
    use super::*;

    #[test]
    fn the_sink_counts_checks_signatures_and_measures_lag() {
        let sink = Sink::start().unwrap();
        let key = Secret::parse(&sink.secret).unwrap();
        let agent = ureq::AgentBuilder::new().build();
        let created = gavel::types::clock::system_now_ms() - 250;
        let body = json!({"type": "lead.posted", "id": "evt_1",
            "created_at": gavel::auction::rfc3339_ms(created), "data": {}})
        .to_string();
        for (id, good) in [("evt_1", true), ("evt_1", true), ("evt_2", false)] {
            let ts = gavel::types::clock::system_now_ms() / 1000;
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
