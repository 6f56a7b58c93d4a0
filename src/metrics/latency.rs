//! Exact HDR latency report for `GET /v1/metrics/latency`: percentiles over the last 60 s and since
//! start for every histogram series, plus each histogram serialized (V2 + deflate, base64 standard)
//! so tools can merge histograms from several nodes exactly. Which series a report holds is the
//! caller's choice ([`latency_json_of`]); who may see which is the API's rule, not this module's.

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::{HistogramPair, Snapshot, WINDOW_SECS};

/// Quantiles reported, with their JSON keys.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// `{"count","p50","p90","p99","p999","max","hdr"}` for one histogram; an empty histogram gives
/// count 0 and zeros (its `hdr` still decodes to an empty histogram).
fn view(h: &Histogram<u64>) -> Value {
    let mut obj = Map::new();
    obj.insert("count".into(), json!(h.len()));
    for (key, q) in QUANTILES {
        let v = if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        };
        obj.insert(key.into(), json!(v));
    }
    obj.insert("max".into(), json!(if h.is_empty() { 0 } else { h.max() }));
    let mut buf = Vec::new();
    // Serializing into a Vec cannot fail on I/O; a failure would mean a bug in the histogram, and
    // then the report says so instead of panicking.
    let hdr = match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(&buf),
        Err(_) => String::new(),
    };
    obj.insert("hdr".into(), json!(hdr));
    Value::Object(obj)
}

fn series(name: &str, labels: Value, pair: &HistogramPair) -> Value {
    json!({
        "name": name,
        "labels": labels,
        "since_start": view(&pair.since_start),
        "last_60s": view(&pair.last_60s),
    })
}

/// The latency report of `snap` (normally all cores merged). Values are microseconds:
///
/// ```json
/// {"unit":"us","window_s":60,"series":[
///   {"name":"ping_duration","labels":{},
///    "since_start":{"count":N,"p50":…,"p90":…,"p99":…,"p999":…,"max":…,"hdr":"<base64>"},
///    "last_60s":{…}}, …]}
/// ```
///
/// Series, in order: `ping_duration`, `auction_duration`, `engine_overhead`, `post_duration`,
/// `store_commit_duration`, then for every seller `ping_duration` and `post_duration` with labels
/// `{"seller": id, "tenant": tenant}` (that seller's own requests; 2 significant digits), then
/// `buyer_ping_rtt` with labels `{"buyer": id, "tenant": tenant}` for every buyer (ids are scoped
/// by tenant).
/// Percentiles are `value_at_quantile` (the highest value equivalent to the quantile's bucket).
pub fn latency_json(snap: &Snapshot) -> Value {
    latency_json_of(snap, true, |_, _| true, |_, _| true)
}

/// [`latency_json`] holding only part of the series: the exchange-wide ones (those without labels)
/// when `exchange` is set, the two per-seller series of each seller (tenant, id) `seller` accepts,
/// and the `buyer_ping_rtt` series of each buyer (tenant, id) `buyer` accepts. Who may see which
/// is the API's rule, not this module's.
pub fn latency_json_of(
    snap: &Snapshot,
    exchange: bool,
    seller: impl Fn(crate::types::Tenant, &str) -> bool,
    buyer: impl Fn(crate::types::Tenant, &str) -> bool,
) -> Value {
    let mut out = Vec::new();
    if exchange {
        out.extend([
            series("ping_duration", json!({}), &snap.ping),
            series("auction_duration", json!({}), &snap.auction),
            series("engine_overhead", json!({}), &snap.engine_overhead),
            series("post_duration", json!({}), &snap.post),
            series("store_commit_duration", json!({}), &snap.store_commit),
        ]);
    }
    let sellers = snap.seller_ids.iter().zip(&snap.seller_ping);
    for (((tenant, id), ping), post) in sellers.zip(&snap.seller_post) {
        if seller(*tenant, id) {
            let labels = json!({ "seller": id, "tenant": tenant.as_str() });
            out.push(series("ping_duration", labels.clone(), ping));
            out.push(series("post_duration", labels, post));
        }
    }
    for ((tenant, id), pair) in snap.buyer_ids.iter().zip(&snap.buyer_rtt) {
        if buyer(*tenant, id) {
            let labels = json!({ "buyer": id, "tenant": tenant.as_str() });
            out.push(series("buyer_ping_rtt", labels, pair));
        }
    }
    json!({ "unit": "us", "window_s": WINDOW_SECS, "series": out })
}

#[cfg(test)]
mod tests {
    use super::super::CoreMetrics;
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    fn decode(b64: &str) -> Histogram<u64> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("valid base64");
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .expect("valid V2+deflate histogram")
    }

    #[test]
    fn round_trip_percentiles_match_reported() {
        let ids: Vec<_> = ["acme", "globex"]
            .into_iter()
            .map(|id| (crate::types::Tenant::Sandbox, id.to_string()))
            .collect();
        let a = CoreMetrics::new(&ids);
        let b = CoreMetrics::new(&ids);
        for k in 0..5000u64 {
            a.record_ping(100 + k * 13);
            b.record_ping(70 + k * 29);
            a.record_buyer_ping(
                crate::types::Tenant::Sandbox,
                "globex",
                crate::types::words::OutcomeKind::Bid,
                Some(2_000 + k * 101),
            );
        }
        a.record_seller_ping(crate::types::Tenant::Production, "s1", 1_234);
        b.record_seller_post(crate::types::Tenant::Production, "s1", 56_789);
        a.record_ping(45_000_000);
        let mut snap = Snapshot::empty(&ids);
        snap.merge(&a.snapshot());
        snap.merge(&b.snapshot());
        let report = latency_json(&snap);
        assert_eq!(report["unit"], "us");
        assert_eq!(report["window_s"], 60);
        let series = report["series"].as_array().unwrap();
        let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "ping_duration",
                "auction_duration",
                "engine_overhead",
                "post_duration",
                "store_commit_duration",
                "ping_duration",
                "post_duration",
                "buyer_ping_rtt",
                "buyer_ping_rtt"
            ]
        );
        assert_eq!(series[8]["labels"]["buyer"], "globex");
        assert_eq!(series[8]["labels"]["tenant"], "sandbox");
        assert_eq!(series[0]["labels"], json!({}));
        let seller = json!({"seller": "s1", "tenant": "production"});
        assert_eq!(series[5]["labels"], seller);
        assert_eq!(series[6]["labels"], seller);
        assert_eq!(series[5]["since_start"]["count"], 1);
        assert_eq!(series[6]["last_60s"]["count"], 1);
        // Two significant digits: within 1 % of the recorded value.
        let p = series[6]["since_start"]["max"].as_u64().unwrap();
        assert!((56_789 * 99 / 100..=56_789 * 101 / 100).contains(&p), "{p}");

        for s in series {
            for v in ["since_start", "last_60s"] {
                let view = &s[v];
                let h = decode(view["hdr"].as_str().unwrap());
                assert_eq!(view["count"], h.len());
                for (key, q) in QUANTILES {
                    let expected = if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(q)
                    };
                    assert_eq!(view[key], expected, "{} {v} {key}", s["name"]);
                }
                assert_eq!(view["max"], if h.is_empty() { 0 } else { h.max() });
            }
        }
        // Spot-check against the snapshot itself.
        let ping = &series[0]["since_start"];
        assert_eq!(ping["count"], 10_001);
        assert_eq!(ping["p50"], snap.ping.since_start.value_at_quantile(0.5));
        assert_eq!(ping["max"], snap.ping.since_start.max());
        let rtt = &series[8]["last_60s"];
        assert_eq!(rtt["count"], 5000);
        // The decoded histogram merges exactly with another node's.
        let mut merged = decode(ping["hdr"].as_str().unwrap());
        merged.add(decode(ping["hdr"].as_str().unwrap())).unwrap();
        assert_eq!(merged.len(), 20_002);
    }

    /// The selection keeps exactly the series asked for: a seller's report (no exchange-wide
    /// series, its own seller series, no buyer's) names no other seller and no buyer.
    #[test]
    fn selection_keeps_one_sellers_series_only() {
        use crate::types::Tenant;
        let buyers = vec![(Tenant::Sandbox, "acme".to_string())];
        let m = CoreMetrics::new(&buyers);
        m.record_ping(10);
        m.record_seller_ping(Tenant::Sandbox, "seller-a", 10);
        m.record_seller_ping(Tenant::Sandbox, "seller-b", 20);
        m.record_seller_ping(Tenant::Production, "seller-a", 30);
        let snap = m.snapshot();
        let report = latency_json_of(
            &snap,
            false,
            |t, id| t == Tenant::Sandbox && id == "seller-a",
            |_, _| false,
        );
        let series = report["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        for s in series {
            assert_eq!(
                s["labels"],
                json!({"seller": "seller-a", "tenant": "sandbox"})
            );
        }
        assert_eq!(series[0]["name"], "ping_duration");
        assert_eq!(series[0]["since_start"]["max"], 10);
        assert_eq!(series[1]["name"], "post_duration");
    }

    #[test]
    fn empty_histograms_report_zeros() {
        let report = latency_json(&Snapshot::empty(&[]));
        let series = report["series"].as_array().unwrap();
        assert_eq!(series.len(), 5);
        for s in series {
            let v = &s["last_60s"];
            for key in ["count", "p50", "p90", "p99", "p999", "max"] {
                assert_eq!(v[key], 0, "{key}");
            }
            assert_eq!(decode(v["hdr"].as_str().unwrap()).len(), 0);
        }
    }
}
