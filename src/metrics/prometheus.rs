//! Prometheus text exposition (format 0.0.4) of a merged [`Snapshot`], for `GET /metrics`.
//!
//! Pure rendering: the caller merges the cores' snapshots and passes per-core gauges and store
//! counters as plain numbers. Every family has `# HELP` and `# TYPE`; durations are in seconds;
//! counters end in `_total`; label values are escaped. Histogram buckets come from the since-start
//! HDR histogram (see [`PROMETHEUS_BUCKETS`]), so they are aggregatable across nodes.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::cpu::{CpuSeconds, THREAD_GROUPS};
use super::{BuyerKey, Snapshot};
use crate::types::words::{AttemptResult, CallFailure, NoBidReason, OutcomeKind, ShedReason, Word};

/// Per-core gauges and counters, read by the caller from the runtime's per-core statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Core index (the `core` label).
    pub core: usize,
    /// Requests this core received that another core owned, and handed over.
    pub handoffs_out: u64,
    /// Requests other cores handed to this one.
    pub handoffs_in: u64,
    /// Connections open now (gauge).
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Auctions held in memory now (gauge).
    pub auctions_in_memory: u64,
    /// Requests served since start.
    pub requests_total: u64,
    /// Requests this core works on now (gauge).
    pub in_flight_requests: u64,
    /// Worst event-loop lag of the last second or two, in µs (gauge).
    pub loop_lag_max_us: u64,
    /// Requests shed, indexed by [`ShedReason`].
    pub shed: [u64; ShedReason::COUNT],
}

/// Store group-commit counters, read by the caller from the cores' log statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Commit requests answered, successfully or not.
    pub commits: u64,
    /// Commit requests answered with an error.
    pub failures: u64,
    /// Groups written (flushes).
    pub groups: u64,
}

/// One webhook endpoint's counters, read by the caller from the webhook endpoint table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookCounters {
    /// Endpoint id (the `endpoint` label).
    pub endpoint: String,
    /// Delivery attempts by result, in the order of `webhooks::outbox::ATTEMPT_RESULTS`.
    pub attempts: Vec<(&'static str, u64)>,
    /// Deliveries that failed every retry.
    pub exhausted: u64,
    /// Deliveries waiting in the outbox (gauge).
    pub outbox_depth: u64,
    /// 1 while a 410 keeps the endpoint disabled (gauge).
    pub disabled: u64,
}

/// Histogram bucket upper bounds: the `le` label as printed, and the same bound in microseconds.
/// Chosen to resolve sub-millisecond engine latencies up to multi-second buyer timeouts.
pub const PROMETHEUS_BUCKETS: [(&str, u64); 16] = [
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// One sample per buyer and word of vocabulary `W`: `counts[i][w]` under the labels of buyer
/// `buyers[i]` and `label` = the word.
fn per_buyer_word<W: Word>(
    out: &mut String,
    name: &str,
    label: &str,
    buyers: &[BuyerKey],
    counts: &[impl AsRef<[u64]>],
) {
    for ((tenant, id), counts) in buyers.iter().zip(counts) {
        for (word, n) in W::ALL.iter().zip(counts.as_ref()) {
            let labels = [
                ("buyer", id.as_str()),
                ("tenant", tenant.as_str()),
                (label, word.as_str()),
            ];
            sample(out, name, &labels, *n);
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{k="v",…}` with escaped values, or nothing when there are no labels; `extra` is appended
/// (already formatted, e.g. `le="0.1"`).
fn labels(pairs: &[(&str, &str)], extra: Option<&str>) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(e) = extra {
        parts.push(e.to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Cumulative bucket counts of `h` for [`PROMETHEUS_BUCKETS`]. A recorded HDR bucket counts towards
/// `le` when its lowest equivalent value is ≤ `le`, so a value recorded exactly at a bound is
/// counted in that bound's bucket; a value at most one HDR bucket width (≤ 0.1 %) above a bound
/// may be counted too.
fn bucket_counts(h: &Histogram<u64>) -> [u64; PROMETHEUS_BUCKETS.len()] {
    let mut counts = [0u64; PROMETHEUS_BUCKETS.len()];
    for v in h.iter_recorded() {
        let low = h.lowest_equivalent(v.value_iterated_to());
        let n = v.count_at_value();
        for (c, (_, le_us)) in counts.iter_mut().zip(PROMETHEUS_BUCKETS) {
            if low <= le_us {
                *c += n;
            }
        }
    }
    counts
}

/// One histogram sample set (buckets, `+Inf`, `_sum`, `_count`). The sum is derived from the HDR
/// histogram (mean × count), so it is exact only to the histogram's precision (3 digits).
fn histogram_samples(out: &mut String, name: &str, pairs: &[(&str, &str)], h: &Histogram<u64>) {
    for (le, count) in PROMETHEUS_BUCKETS.iter().zip(bucket_counts(h)) {
        let l = labels(pairs, Some(&format!("le=\"{}\"", le.0)));
        let _ = writeln!(out, "{name}_bucket{l} {count}");
    }
    let total = h.len();
    let l = labels(pairs, Some("le=\"+Inf\""));
    let _ = writeln!(out, "{name}_bucket{l} {total}");
    let sum_s = if total == 0 {
        0.0
    } else {
        h.mean() * total as f64 / 1e6
    };
    let l = labels(pairs, None);
    let _ = writeln!(out, "{name}_sum{l} {sum_s}");
    let _ = writeln!(out, "{name}_count{l} {total}");
}

fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: u64) {
    let _ = writeln!(out, "{name}{} {value}", labels(pairs, None));
}

/// A sample of a duration kept in µs, written in seconds with all six decimals.
fn seconds_sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value_us: u64) {
    let (s, us) = (value_us / 1_000_000, value_us % 1_000_000);
    let _ = writeln!(out, "{name}{} {s}.{us:06}", labels(pairs, None));
}

/// Renders `snap` (normally all cores merged), the per-core counters and the store counters as
/// Prometheus text exposition format 0.0.4 (content type `text/plain; version=0.0.4`). Histograms
/// use the since-start view. Buyer outcome and no-bid counters are emitted for every label value,
/// zeros included, so rates exist from the first scrape; so are the CPU counters of every thread
/// group.
pub fn render_prometheus(
    snap: &Snapshot,
    cores: &[CoreCounters],
    store: &StoreCounters,
    webhooks: &[WebhookCounters],
    cpu: &CpuSeconds,
) -> String {
    let inputs = Inputs {
        snap,
        cores,
        store,
        webhooks,
        cpu,
    };
    let mut out = String::with_capacity(16 * 1024);
    for f in FAMILIES {
        header(&mut out, f.name, f.kind, f.help);
        (f.samples)(&mut out, f.name, &inputs);
    }
    out
}

/// Every metric family [`render_prometheus`] emits (without `_bucket`/`_sum`/`_count` suffixes),
/// in order. Names are fixed: the Grafana dashboard is built on them.
pub fn metric_names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|f| f.name)
}

/// What one scrape renders from.
struct Inputs<'a> {
    snap: &'a Snapshot,
    cores: &'a [CoreCounters],
    store: &'a StoreCounters,
    webhooks: &'a [WebhookCounters],
    cpu: &'a CpuSeconds,
}

/// One metric family, declared once: its name, type and help, and how its samples are written.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: fn(&mut String, &'static str, &Inputs<'_>),
}

/// One histogram family of one series.
const fn histogram(
    name: &'static str,
    help: &'static str,
    samples: fn(&mut String, &'static str, &Inputs<'_>),
) -> Family {
    Family {
        name,
        kind: "histogram",
        help,
        samples,
    }
}

/// One sample per core: `value` of its counters, labelled `core`.
fn per_core(out: &mut String, name: &str, cores: &[CoreCounters], value: fn(&CoreCounters) -> u64) {
    for c in cores {
        sample(out, name, &[("core", &c.core.to_string())], value(c));
    }
}

/// One sample per webhook endpoint: `value` of its counters, labelled `endpoint`.
fn per_endpoint(
    out: &mut String,
    name: &str,
    webhooks: &[WebhookCounters],
    value: fn(&WebhookCounters) -> u64,
) {
    for w in webhooks {
        sample(out, name, &[("endpoint", &w.endpoint)], value(w));
    }
}

/// Every family, in the order a scrape lists them: a flat table, one entry per family (which is
/// why it is longer than 70 lines).
const FAMILIES: &[Family] = &[
    histogram(
        "gavel_ping_duration_seconds",
        "Seller-observed /v1/ping latency, request received to reply ready.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.ping.since_start),
    ),
    histogram(
        "gavel_auction_duration_seconds",
        "Auction duration, buyer fan-out start to auction closed.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.auction.since_start),
    ),
    histogram(
        "gavel_engine_overhead_seconds",
        "Ping latency minus the slowest counted buyer's round-trip time.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.engine_overhead.since_start),
    ),
    histogram(
        "gavel_post_duration_seconds",
        "Post latency for sold posts, post received to buyer 2xx.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.post.since_start),
    ),
    histogram(
        "gavel_store_commit_duration_seconds",
        "Store commit latency, queued to durable.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.store_commit.since_start),
    ),
    histogram(
        "gavel_loop_lag_seconds",
        "How late each core's event-loop tick fired (every 10 ms), all cores together; the \
         overload signal that sheds new work past server.max_queue_delay_ms.",
        |out, name, i| histogram_samples(out, name, &[], &i.snap.loop_lag.since_start),
    ),
    histogram(
        "gavel_buyer_ping_rtt_seconds",
        "Buyer ping round-trip time, per buyer (tenant and id).",
        |out, name, i| {
            for ((tenant, id), pair) in i.snap.buyer_ids.iter().zip(&i.snap.buyer_rtt) {
                let labels = [("buyer", id.as_str()), ("tenant", tenant.as_str())];
                histogram_samples(out, name, &labels, &pair.since_start);
            }
        },
    ),
    Family {
        name: "gavel_buyer_pings_total",
        kind: "counter",
        help: "Buyer pings, per buyer (tenant and id) and outcome.",
        samples: |out, name, i| {
            per_buyer_word::<OutcomeKind>(
                out,
                name,
                "outcome",
                &i.snap.buyer_ids,
                &i.snap.buyer_pings,
            )
        },
    },
    Family {
        name: "gavel_buyer_call_errors_total",
        kind: "counter",
        help: "Buyer pings that never reached the buyer, per buyer (tenant and id) and kind (tls, \
               dns, connect, egress).",
        samples: |out, name, i| {
            per_buyer_word::<CallFailure>(
                out,
                name,
                "kind",
                &i.snap.buyer_ids,
                &i.snap.buyer_call_errors,
            )
        },
    },
    Family {
        name: "gavel_buyer_post_attempts_total",
        kind: "counter",
        help: "Post delivery attempts, per buyer (tenant and id) and result (accepted, rejected, \
               error, timeout, connect_error, unconfirmed).",
        samples: |out, name, i| {
            let s = i.snap;
            per_buyer_word::<AttemptResult>(
                out,
                name,
                "result",
                &s.buyer_ids,
                &s.buyer_post_attempts,
            )
        },
    },
    Family {
        name: "gavel_no_bid_total",
        kind: "counter",
        help: "Auctions closed without a winner, per reason.",
        samples: |out, name, i| {
            for (reason, n) in NoBidReason::ALL.iter().zip(i.snap.no_bid) {
                sample(out, name, &[("reason", reason.as_str())], n);
            }
        },
    },
    Family {
        name: "gavel_http_requests_total",
        kind: "counter",
        help: "HTTP requests answered, per route template and status.",
        samples: |out, name, i| {
            for ((endpoint, status), n) in &i.snap.requests {
                let status = status.to_string();
                sample(
                    out,
                    name,
                    &[("endpoint", endpoint), ("status", &status)],
                    *n,
                );
            }
        },
    },
    Family {
        name: "gavel_idempotent_replays_total",
        kind: "counter",
        help: "Requests answered by replaying a stored idempotent result.",
        samples: |out, name, i| sample(out, name, &[], i.snap.idempotent_replays),
    },
    Family {
        name: "gavel_rate_limited_total",
        kind: "counter",
        help: "Requests refused with 429 rate_limited, by the client or seller limit that refused \
               them.",
        samples: |out, name, i| {
            for (limit, n) in super::RATE_LIMITS.iter().zip(i.snap.rate_limited) {
                sample(out, name, &[("limit", limit)], n);
            }
        },
    },
    Family {
        name: "gavel_core_handoffs_out_total",
        kind: "counter",
        help: "Requests this core received that another core owned, and handed over.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.handoffs_out),
    },
    Family {
        name: "gavel_core_handoffs_in_total",
        kind: "counter",
        help: "Requests other cores handed to this core.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.handoffs_in),
    },
    Family {
        name: "gavel_core_requests_total",
        kind: "counter",
        help: "Requests served by this core.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.requests_total),
    },
    Family {
        name: "gavel_core_connections_open",
        kind: "gauge",
        help: "Connections open on this core.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.connections_open),
    },
    Family {
        name: "gavel_core_connections_total",
        kind: "counter",
        help: "Connections accepted by this core.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.connections_total),
    },
    Family {
        name: "gavel_core_auctions_in_memory",
        kind: "gauge",
        help: "Auctions held in memory by this core.",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.auctions_in_memory),
    },
    Family {
        name: "gavel_core_in_flight_requests",
        kind: "gauge",
        help: "Requests this core works on now (server.max_in_flight_requests_per_core caps it).",
        samples: |out, name, i| per_core(out, name, i.cores, |c| c.in_flight_requests),
    },
    Family {
        name: "gavel_core_loop_lag_max_seconds",
        kind: "gauge",
        help: "Worst lag of this core's event-loop tick over the last one to two seconds.",
        samples: |out, name, i| {
            for c in i.cores {
                let core = c.core.to_string();
                seconds_sample(out, name, &[("core", &core)], c.loop_lag_max_us);
            }
        },
    },
    Family {
        name: "gavel_requests_shed_total",
        kind: "counter",
        help: "Requests refused with 503 overloaded before any work, by the core that refused \
               them and why (loop_lag, queue_delay, in_flight, inbox_full).",
        samples: |out, name, i| {
            for c in i.cores {
                let core = c.core.to_string();
                for (reason, n) in ShedReason::ALL.iter().zip(c.shed) {
                    sample(
                        out,
                        name,
                        &[("core", &core), ("reason", reason.as_str())],
                        n,
                    );
                }
            }
        },
    },
    Family {
        name: "gavel_store_commits_total",
        kind: "counter",
        help: "Store commit requests answered, successfully or not.",
        samples: |out, name, i| sample(out, name, &[], i.store.commits),
    },
    Family {
        name: "gavel_store_commit_failures_total",
        kind: "counter",
        help: "Store commit requests answered with an error.",
        samples: |out, name, i| sample(out, name, &[], i.store.failures),
    },
    Family {
        name: "gavel_store_commit_groups_total",
        kind: "counter",
        help: "Store commit groups written (flushes).",
        samples: |out, name, i| sample(out, name, &[], i.store.groups),
    },
    Family {
        name: "gavel_webhook_deliveries_total",
        kind: "counter",
        help: "Webhook delivery attempts, by endpoint and result (delivered, failed, timeout, \
               connect_error, gone).",
        samples: |out, name, i| {
            for w in i.webhooks {
                for (result, n) in &w.attempts {
                    sample(
                        out,
                        name,
                        &[("endpoint", &w.endpoint), ("result", result)],
                        *n,
                    );
                }
            }
        },
    },
    Family {
        name: "gavel_webhook_exhausted_total",
        kind: "counter",
        help: "Webhook deliveries that failed every retry and stay in the outbox as exhausted.",
        samples: |out, name, i| per_endpoint(out, name, i.webhooks, |w| w.exhausted),
    },
    Family {
        name: "gavel_webhook_outbox_depth",
        kind: "gauge",
        help: "Webhook deliveries waiting in the outbox.",
        samples: |out, name, i| per_endpoint(out, name, i.webhooks, |w| w.outbox_depth),
    },
    Family {
        name: "gavel_webhook_endpoint_disabled",
        kind: "gauge",
        help: "1 while a webhook endpoint is disabled because it answered 410 Gone.",
        samples: |out, name, i| per_endpoint(out, name, i.webhooks, |w| w.disabled),
    },
    // The standard name, so dashboards built for any Prometheus client library work unchanged.
    Family {
        name: "process_cpu_seconds_total",
        kind: "counter",
        help: "Total user and system CPU time spent in seconds.",
        samples: |out, name, i| seconds_sample(out, name, &[], i.cpu.process_us),
    },
    Family {
        name: "gavel_thread_cpu_seconds_total",
        kind: "counter",
        help: "User and system CPU time of the live threads of each group (cores, store, \
               webhooks, dns, buyers_sandbox, other), in seconds; refreshed every second.",
        samples: |out, name, i| {
            for (group, us) in THREAD_GROUPS.iter().zip(i.cpu.groups_us) {
                seconds_sample(out, name, &[("group", group)], us);
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use super::super::CoreMetrics;
    use super::*;

    fn sample_output() -> (Snapshot, String) {
        let ids: Vec<_> = ["acme", "we\"ird\\buyer\nid", "globex"]
            .into_iter()
            .map(|id| (crate::types::Tenant::Sandbox, id.to_string()))
            .collect();
        let cores: Vec<CoreMetrics> = (0..2).map(|_| CoreMetrics::new(&ids)).collect();
        for (i, m) in cores.iter().enumerate() {
            for k in 0..2000u64 {
                let v = 50 + k * 37 + i as u64 * 11; // 50 µs .. ~74 ms
                m.record_ping(v + 300);
                m.record_auction(v);
                m.record_engine_overhead(k % 400 + 20);
                let (tenant, id) = &ids[(k % 3) as usize];
                m.record_buyer_ping(*tenant, id, OutcomeKind::ALL[(k % 4) as usize], Some(v));
                if k % 100 == 0 {
                    m.record_buyer_call_error(ids[0].0, &ids[0].1, CallFailure::Tls);
                    m.record_post_attempt(ids[0].0, &ids[0].1, AttemptResult::Unconfirmed);
                }
                if k % 10 == 0 {
                    m.record_post(v * 3);
                    m.record_store_commit(k + 200);
                    m.record_no_bid(NoBidReason::NoBids);
                }
                m.record_request("/v1/ping", if k % 50 == 0 { 429 } else { 200 });
            }
            m.record_request("/v1/post", 201);
            m.record_replay();
            m.record_ping(30_000_000); // a very slow one: above the last bucket
        }
        let mut snap = Snapshot::empty(&ids);
        for m in &cores {
            snap.merge(&m.snapshot());
        }
        let counters: Vec<CoreCounters> = (0..2)
            .map(|core| CoreCounters {
                core,
                handoffs_out: 10,
                handoffs_in: 12,
                connections_open: 3,
                connections_total: 40,
                auctions_in_memory: 7,
                requests_total: 2001,
                in_flight_requests: 4,
                loop_lag_max_us: 1_500,
                shed: [1, 2, 3, 0],
            })
            .collect();
        let store = StoreCounters {
            commits: 400,
            failures: 1,
            groups: 120,
        };
        let hooks = [WebhookCounters {
            endpoint: "crm".into(),
            attempts: vec![("delivered", 9), ("failed", 2)],
            exhausted: 1,
            outbox_depth: 3,
            disabled: 0,
        }];
        let cpu = CpuSeconds {
            process_us: 12_345_678,
            groups_us: [9_000_000, 1_500_000, 10_000, 0, 1_000_000, 5],
        };
        let text = render_prometheus(&snap, &counters, &store, &hooks, &cpu);
        (snap, text)
    }

    /// The value of the sample line starting with `prefix ` (exact series).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {series}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_family_has_help_and_type() {
        let (_, text) = sample_output();
        for name in metric_names() {
            assert!(text.contains(&format!("# HELP {name} ")), "HELP {name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "TYPE {name}");
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1);
        }
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(
            types,
            metric_names().count(),
            "no family missing from FAMILIES"
        );
    }

    #[test]
    fn buckets_are_cumulative_monotonic_and_inf_equals_count() {
        let (snap, text) = sample_output();
        let histos = [
            ("gavel_ping_duration_seconds", String::new()),
            ("gavel_auction_duration_seconds", String::new()),
            ("gavel_store_commit_duration_seconds", String::new()),
            (
                "gavel_buyer_ping_rtt_seconds",
                "buyer=\"acme\",tenant=\"sandbox\",".to_string(),
            ),
        ];
        for (name, lab) in histos {
            let mut prev = 0.0;
            for (le, _) in PROMETHEUS_BUCKETS {
                let v = value(&text, &format!("{name}_bucket{{{lab}le=\"{le}\"}}"));
                assert!(v >= prev, "{name} le={le}: {v} < {prev}");
                prev = v;
            }
            let inf = value(&text, &format!("{name}_bucket{{{lab}le=\"+Inf\"}}"));
            assert!(inf >= prev);
            let plain = lab.trim_end_matches(',');
            let count_series = if plain.is_empty() {
                format!("{name}_count")
            } else {
                format!("{name}_count{{{plain}}}")
            };
            assert_eq!(inf, value(&text, &count_series));
        }
        // Exact check on one series: ping values are 350.. by 37 (+11 on core 1), plus 2 × 30 s.
        let h = &snap.ping.since_start;
        assert_eq!(h.len(), 4002);
        let le_1ms = value(&text, "gavel_ping_duration_seconds_bucket{le=\"0.001\"}");
        let expected = (0..2000u64)
            .flat_map(|k| [350 + k * 37, 361 + k * 37])
            .filter(|&v| v <= 1000)
            .count();
        assert_eq!(le_1ms as usize, expected);
        let le_10 = value(&text, "gavel_ping_duration_seconds_bucket{le=\"10\"}");
        assert_eq!(le_10, 4000.0);
        let sum = value(&text, "gavel_ping_duration_seconds_sum");
        let exact: f64 = (0..2000u64)
            .flat_map(|k| [350 + k * 37, 361 + k * 37])
            .map(|v| v as f64 / 1e6)
            .sum::<f64>()
            + 60.0;
        assert!((sum - exact).abs() / exact < 0.002, "sum {sum} vs {exact}");
    }

    #[test]
    fn zero_counters_are_emitted_for_every_label_value() {
        let (_, text) = sample_output();
        for reason in NoBidReason::ALL {
            let series = format!("gavel_no_bid_total{{reason=\"{reason}\"}}");
            value(&text, &series);
        }
        for outcome in OutcomeKind::ALL {
            let series =
                format!("gavel_buyer_pings_total{{buyer=\"globex\",tenant=\"sandbox\",outcome=\"{outcome}\"}}");
            value(&text, &series);
        }
        assert_eq!(
            value(
                &text,
                "gavel_buyer_pings_total{buyer=\"acme\",tenant=\"sandbox\",outcome=\"capped\"}"
            ),
            0.0
        );
        for kind in CallFailure::ALL {
            let series =
                format!("gavel_buyer_call_errors_total{{buyer=\"globex\",tenant=\"sandbox\",kind=\"{kind}\"}}");
            assert_eq!(value(&text, &series), 0.0);
        }
        assert_eq!(
            value(
                &text,
                "gavel_buyer_call_errors_total{buyer=\"acme\",tenant=\"sandbox\",kind=\"tls\"}"
            ),
            40.0
        );
        for result in AttemptResult::ALL {
            let series = format!(
                "gavel_buyer_post_attempts_total{{buyer=\"globex\",tenant=\"sandbox\",result=\"{result}\"}}"
            );
            assert_eq!(value(&text, &series), 0.0);
        }
        assert_eq!(
            value(
                &text,
                "gavel_buyer_post_attempts_total{buyer=\"acme\",tenant=\"sandbox\",result=\"unconfirmed\"}"
            ),
            40.0
        );
        assert_eq!(
            value(
                &text,
                "gavel_http_requests_total{endpoint=\"/v1/ping\",status=\"429\"}"
            ),
            80.0
        );
        assert_eq!(
            value(&text, "gavel_core_auctions_in_memory{core=\"1\"}"),
            7.0
        );
        assert_eq!(value(&text, "gavel_store_commit_failures_total"), 1.0);
        assert_eq!(value(&text, "gavel_idempotent_replays_total"), 2.0);
        assert_eq!(value(&text, "process_cpu_seconds_total"), 12.345678);
        assert_eq!(
            value(&text, "gavel_thread_cpu_seconds_total{group=\"cores\"}"),
            9.0
        );
        assert_eq!(
            value(&text, "gavel_thread_cpu_seconds_total{group=\"other\"}"),
            0.000005
        );
        assert_eq!(
            value(&text, "gavel_thread_cpu_seconds_total{group=\"dns\"}"),
            0.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let (_, text) = sample_output();
        assert!(text.contains("buyer=\"we\\\"ird\\\\buyer\\nid\""));
        // The raw newline never reaches the output inside a sample line.
        assert!(text
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("gavel_") || l.starts_with("process_")));
    }

    #[test]
    fn empty_snapshot_renders_zeros() {
        let text = render_prometheus(
            &Snapshot::empty(&[]),
            &[],
            &StoreCounters::default(),
            &[],
            &CpuSeconds::default(),
        );
        assert_eq!(value(&text, "gavel_ping_duration_seconds_count"), 0.0);
        assert_eq!(value(&text, "gavel_ping_duration_seconds_sum"), 0.0);
        assert_eq!(
            value(&text, "gavel_ping_duration_seconds_bucket{le=\"+Inf\"}"),
            0.0
        );
    }

    #[test]
    fn promtool_check_metrics_accepts_output() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let Some(promtool) = gavel_testkit::require_tool("promtool", "GAVEL_REQUIRE_PROMTOOL")
        else {
            return;
        };
        let (_, realistic) = sample_output();
        let empty = render_prometheus(
            &Snapshot::empty(&[]),
            &[],
            &StoreCounters::default(),
            &[],
            &CpuSeconds::default(),
        );
        for text in [realistic, empty] {
            let mut child = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn promtool");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write to promtool");
            let out = child.wait_with_output().expect("promtool output");
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
