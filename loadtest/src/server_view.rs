//! Gavel's own view of a run: its HDR histograms from `GET /v1/metrics/latency`, taken when the
//! warm-up ends and again when the run ends, and subtracted, so the report can put the server's
//! percentiles for (almost exactly) the measured window next to the generator's.
//!
//! This is where the engine overhead is measured properly: Gavel records, per auction, its ping
//! latency minus the round trip of the slowest buyer it waited for, which is free of the generator's
//! timer lateness and of the mock buyers' sleep granularity. The client-side figure in the report is
//! only an upper-bound estimate. Owns the fetch and the arithmetic; not the rendering (see
//! [`crate::report`]). Needs a token with the `reports` scope; without one the report says why the
//! server view is missing instead of failing the run.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use gavel::buyers::pool::Pool;
use gavel::config::Driver;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use http::HeaderValue;
use serde_json::{json, Value};

use crate::report::Percentiles;

/// Series of `/v1/metrics/latency` the report carries, in display order.
pub const SERIES: [&str; 5] = [
    "ping_duration",
    "auction_duration",
    "engine_overhead",
    "post_duration",
    "store_commit_duration",
];

/// Largest latency report read (it holds one deflated histogram per series and buyer).
const MAX_REPORT: usize = 8 * 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The since-start histograms (µs) of [`SERIES`] at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub series: BTreeMap<String, Histogram<u64>>,
}

/// One series over the measured window.
#[derive(Debug, Clone)]
pub struct WindowSeries {
    pub name: String,
    pub count: u64,
    pub percentiles_ms: Percentiles,
}

/// The server's figures for the measured window, or why there are none.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub series: Vec<WindowSeries>,
}

impl ServerView {
    pub fn get(&self, name: &str) -> Option<&WindowSeries> {
        self.series.iter().find(|s| s.name == name)
    }

    /// `{"<series>": {"count", "ms": {p50…max}}}`.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for s in &self.series {
            out.insert(
                s.name.clone(),
                json!({"count": s.count, "ms": s.percentiles_ms.to_json()}),
            );
        }
        Value::Object(out)
    }
}

fn decode(b64: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// Parses a `/v1/metrics/latency` body into a [`Snapshot`] of its since-start histograms.
pub fn parse(body: &[u8]) -> Result<Snapshot, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("latency report is not JSON: {e}"))?;
    if v["unit"] != "us" {
        return Err(format!(
            "latency report unit is {}, expected \"us\"",
            v["unit"]
        ));
    }
    let mut snap = Snapshot::default();
    for s in v["series"].as_array().into_iter().flatten() {
        let Some(name) = s["name"].as_str() else {
            continue;
        };
        if !SERIES.contains(&name) {
            continue;
        }
        // The exchange-wide series (no labels, what an operator's report holds) wins over a
        // per-seller one of the same name; a seller's report holds only its own `ping_duration`
        // and `post_duration` (labelled `seller`), which are then the figures there are.
        let exchange = s["labels"].as_object().is_none_or(|l| l.is_empty());
        if !exchange && snap.series.contains_key(name) {
            continue;
        }
        let hdr = s["since_start"]["hdr"]
            .as_str()
            .ok_or_else(|| format!("series {name} has no since_start.hdr"))?;
        snap.series.insert(name.to_string(), decode(hdr)?);
    }
    Ok(snap)
}

/// `after - before` for every series (what was recorded between the two snapshots).
pub fn window(before: &Snapshot, after: &Snapshot) -> Result<ServerView, String> {
    let mut series = Vec::new();
    for name in SERIES {
        let Some(a) = after.series.get(name) else {
            continue;
        };
        let mut h = a.clone();
        if let Some(b) = before.series.get(name) {
            h.subtract(b)
                .map_err(|e| format!("series {name}: later snapshot is not a superset: {e:?}"))?;
        }
        series.push(WindowSeries {
            name: name.to_string(),
            count: h.len(),
            percentiles_ms: Percentiles::of(&h),
        });
    }
    Ok(ServerView { series })
}

/// Fetches Gavel's latency report from `base_url` with `token`, on a short-lived runtime of
/// `driver` on the calling thread.
pub fn fetch(base_url: &str, token: Option<&str>, driver: Driver) -> Result<Snapshot, String> {
    let target = crate::tls::target(&format!(
        "{}/v1/metrics/latency",
        base_url.trim_end_matches('/')
    ))?;
    let mut headers = Vec::new();
    if let Some(t) = token {
        let value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        headers.push((http::header::AUTHORIZATION, value));
    }
    let answer = gavel::runtime::block_on(driver, 64, || async {
        let pool = Pool::new();
        monoio::time::timeout(FETCH_TIMEOUT, pool.get(&target, &headers, MAX_REPORT)).await
    })
    .map_err(|e| format!("cannot start a runtime: {e}"))?
    .map_err(|_| "GET /v1/metrics/latency timed out".to_string())?
    .map_err(|e| format!("GET /v1/metrics/latency: {e}"))?;
    if !answer.status.is_success() {
        return Err(format!(
            "GET /v1/metrics/latency answered {} (the token needs the reports scope)",
            answer.status
        ));
    }
    parse(&answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};

    fn encoded(values: &[u64]) -> String {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in values {
            h.record(*v).unwrap();
        }
        let mut buf = Vec::new();
        V2DeflateSerializer::new().serialize(&h, &mut buf).unwrap();
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    fn report(overhead: &[u64]) -> Vec<u8> {
        json!({"unit": "us", "window_s": 60, "series": [
            {"name": "engine_overhead", "labels": {},
             "since_start": {"hdr": encoded(overhead)}, "last_60s": {"hdr": ""}},
            {"name": "buyer_ping_rtt", "labels": {"buyer": "b"},
             "since_start": {"hdr": "not even base64"}, "last_60s": {}}
        ]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn window_is_the_difference_of_two_snapshots() {
        // Warm-up recorded two slow values; the measured window adds 1,000 values of 100..=1099 µs.
        let warm = [50_000, 60_000];
        let mut all: Vec<u64> = warm.to_vec();
        all.extend(100..1100);
        let before = parse(&report(&warm)).unwrap();
        let after = parse(&report(&all)).unwrap();
        let view = window(&before, &after).unwrap();
        let o = view.get("engine_overhead").unwrap();
        assert_eq!(o.count, 1000);
        // The warm-up's 50–60 ms values are gone: the max is the window's own.
        assert!((o.percentiles_ms.max - 1.099).abs() < 0.002, "{o:?}");
        assert!((o.percentiles_ms.p50 - 0.599).abs() < 0.002, "{o:?}");
        // Buyer series are not read (their malformed hdr above would fail otherwise).
        assert!(view.get("buyer_ping_rtt").is_none());
    }

    /// An operator's report holds the exchange-wide `ping_duration` and every seller's own: the
    /// exchange-wide one is read, whatever the order; a seller's report has only its own.
    #[test]
    fn exchange_wide_series_win_over_per_seller_ones() {
        let seller = json!({"seller": "s1", "tenant": "sandbox"});
        let ping = |labels: &Value, values: &[u64]| {
            json!({"name": "ping_duration", "labels": labels,
                   "since_start": {"hdr": encoded(values)}, "last_60s": {}})
        };
        for series in [
            vec![ping(&json!({}), &[1, 2, 3]), ping(&seller, &[9])],
            vec![ping(&seller, &[9]), ping(&json!({}), &[1, 2, 3])],
        ] {
            let body = json!({"unit": "us", "series": series}).to_string();
            let snap = parse(body.as_bytes()).unwrap();
            assert_eq!(snap.series["ping_duration"].len(), 3);
        }
        let body = json!({"unit": "us", "series": [ping(&seller, &[9])]}).to_string();
        assert_eq!(
            parse(body.as_bytes()).unwrap().series["ping_duration"].len(),
            1
        );
    }

    #[test]
    fn bad_reports_are_errors() {
        assert!(parse(b"nope").is_err());
        assert!(parse(br#"{"unit":"ms","series":[]}"#).is_err());
        let bad =
            json!({"unit":"us","series":[{"name":"ping_duration","since_start":{"hdr":"!!"}}]});
        assert!(parse(bad.to_string().as_bytes()).is_err());
    }
}
