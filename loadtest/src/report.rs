//! What a run measured: HDR latency histograms and counters per phase, the generator's own
//! lateness, and the final table / JSON built from them.
//!
//! Phases: `ping` (scheduled send → ping answer), `post` (post sent → post answer; posts are not
//! scheduled, they follow a won ping at once), `e2e` (ping scheduled send → post answer, won pings
//! only), `leads` (one-call: scheduled send → answer), `healthz` (scheduled send → answer). Latencies are recorded in microseconds from the
//! *scheduled* time (wrk2's coordinated-omission correction), so a stalled generator or a full
//! connection pool shows up as latency instead of silently lowering the load.
//!
//! Each phase also keeps the latencies of its 2xx answers and of its 503s apart, so a server
//! that sheds load shows both what its served clients saw and how fast it said no.
//!
//! Requests whose scheduled time falls in the warm-up are counted in [`Stats::warmup`] (so a
//! test can reconcile totals with the server's counters) but kept out of the latency table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Largest latency a histogram holds (2 minutes, in µs); larger values are clamped.
pub const HIST_MAX_US: u64 = 120_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("static bounds are valid")
}

/// Latency of a request scheduled at `scheduled` whose answer arrived at `done`: measured from the
/// schedule, not from when the generator actually got round to sending.
pub fn latency_from(scheduled: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(scheduled)
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, HIST_MAX_US)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One phase's answers.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Microseconds.
    pub latency: Histogram<u64>,
    /// Microseconds, 2xx answers only: what the clients that were served saw.
    pub accepted: Histogram<u64>,
    /// Microseconds, 503 answers only: how fast an overloaded server said no.
    pub refused: Histogram<u64>,
    /// Requests that finished (with an answer or a transport error).
    pub count: u64,
    /// HTTP status → count.
    pub statuses: BTreeMap<u16, u64>,
    /// `connect`, `http`, `timeout`, `too_large` → count (no HTTP status).
    pub transport_errors: BTreeMap<String, u64>,
    /// `reject_reason` of 200 answers (no_bid, unsold) → count.
    pub reject_reasons: BTreeMap<String, u64>,
    /// `error` code of error answers → count.
    pub error_codes: BTreeMap<String, u64>,
    /// `won`, `no_bid`, `sold`, `unsold` → count.
    pub outcomes: BTreeMap<String, u64>,
    /// Per-second interval histograms (µs), keyed by the second of the measured window in which
    /// the request finished; only kept when asked for (`--hdr-log`).
    pub intervals: BTreeMap<u64, Histogram<u64>>,
}

impl Default for Phase {
    fn default() -> Self {
        Phase {
            latency: new_hist(),
            accepted: new_hist(),
            refused: new_hist(),
            count: 0,
            statuses: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            reject_reasons: BTreeMap::new(),
            error_codes: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            intervals: BTreeMap::new(),
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    // A key seen before (nearly every answer) is counted without allocating a new string.
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn merge_map<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Phase {
    pub fn record_latency(&mut self, latency: Duration) {
        self.latency.saturating_record(us(latency));
    }

    /// Adds `latency` to the interval histogram of second `second` of the measured window.
    pub fn record_interval(&mut self, second: u64, latency: Duration) {
        self.intervals
            .entry(second)
            .or_insert_with(new_hist)
            .saturating_record(us(latency));
    }

    /// An HTTP answer: its status, and the outcome / reason / error code read from its body.
    pub fn record_answer(
        &mut self,
        latency: Duration,
        status: u16,
        outcome: Option<&str>,
        reject_reason: Option<&str>,
        error_code: Option<&str>,
    ) {
        self.count += 1;
        self.record_latency(latency);
        if (200..300).contains(&status) {
            self.accepted.saturating_record(us(latency));
        } else if status == 503 {
            self.refused.saturating_record(us(latency));
        }
        *self.statuses.entry(status).or_default() += 1;
        if let Some(o) = outcome {
            bump(&mut self.outcomes, o);
        }
        if let Some(r) = reject_reason {
            bump(&mut self.reject_reasons, r);
        }
        if let Some(e) = error_code {
            bump(&mut self.error_codes, e);
        }
    }

    /// A request that got no HTTP answer. Its latency is recorded too (up to the failure).
    pub fn record_transport_error(&mut self, latency: Duration, kind: &str) {
        self.count += 1;
        self.record_latency(latency);
        bump(&mut self.transport_errors, kind);
    }

    /// Non-2xx answers plus transport errors.
    pub fn errors(&self) -> u64 {
        let bad: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        bad + self.transport_errors.values().sum::<u64>()
    }

    pub fn merge(&mut self, o: &Phase) {
        self.latency.add(&o.latency).expect("same bounds");
        self.accepted.add(&o.accepted).expect("same bounds");
        self.refused.add(&o.refused).expect("same bounds");
        self.count += o.count;
        merge_map(&mut self.statuses, &o.statuses);
        merge_map(&mut self.transport_errors, &o.transport_errors);
        merge_map(&mut self.reject_reasons, &o.reject_reasons);
        merge_map(&mut self.error_codes, &o.error_codes);
        merge_map(&mut self.outcomes, &o.outcomes);
        for (sec, h) in &o.intervals {
            self.intervals
                .entry(*sec)
                .or_insert_with(new_hist)
                .add(h)
                .expect("same bounds");
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }

    fn to_json(&self, seconds: f64) -> Value {
        json!({
            "count": self.count,
            "achieved_rate": if seconds > 0.0 { self.count as f64 / seconds } else { 0.0 },
            "latency_ms": self.percentiles().to_json(),
            "accepted_latency_ms": Percentiles::of(&self.accepted).to_json(),
            "overloaded_503_latency_ms": Percentiles::of(&self.refused).to_json(),
            "overloaded_503_share": if self.count > 0 { self.refused.len() as f64 / self.count as f64 } else { 0.0 },
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "transport_errors": self.transport_errors,
            "reject_reasons": self.reject_reasons,
            "error_codes": self.error_codes,
            "outcomes": self.outcomes,
            "errors": self.errors(),
        })
    }
}

/// p50 / p90 / p99 / p99.9 / max, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// Each percentile minus `ms`, never below zero.
    pub fn minus(&self, ms: f64) -> Percentiles {
        let f = |v: f64| (v - ms).max(0.0);
        Percentiles {
            p50: f(self.p50),
            p90: f(self.p90),
            p99: f(self.p99),
            p999: f(self.p999),
            max: f(self.max),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"p50": self.p50, "p90": self.p90, "p99": self.p99, "p99_9": self.p999, "max": self.max})
    }
}

/// The phases of one window (measured or warm-up).
#[derive(Debug, Clone, Default)]
pub struct Phases {
    pub ping: Phase,
    pub post: Phase,
    pub e2e: Phase,
    pub leads: Phase,
    pub healthz: Phase,
}

impl Phases {
    pub fn merge(&mut self, o: &Phases) {
        self.ping.merge(&o.ping);
        self.post.merge(&o.post);
        self.e2e.merge(&o.e2e);
        self.leads.merge(&o.leads);
        self.healthz.merge(&o.healthz);
    }

    /// The phase called `name` (`ping`, `post`, `e2e`, `leads`, `healthz`).
    pub fn get(&self, name: &str) -> Option<&Phase> {
        Some(match name {
            "ping" => &self.ping,
            "post" => &self.post,
            "e2e" => &self.e2e,
            "leads" => &self.leads,
            "healthz" => &self.healthz,
            _ => return None,
        })
    }

    fn to_json(&self, secs: f64) -> Value {
        json!({
            "ping": self.ping.to_json(secs),
            "post": self.post.to_json(secs),
            "e2e": self.e2e.to_json(secs),
            "leads": self.leads.to_json(secs),
            "healthz": self.healthz.to_json(secs),
        })
    }
}

/// Everything one generator thread (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests scheduled at or after the warm-up.
    pub measured: Phases,
    /// Requests scheduled during the warm-up (counted, not in the table).
    pub warmup: Phases,
    /// Scheduled requests actually started (warm-up included).
    pub sent: u64,
    /// How late each measured request started against its schedule, µs.
    pub lateness: Histogram<u64>,
    /// Measured requests that waited more than 1 ms for a free connection (`--connections`).
    pub connection_waits: u64,
    /// Requests still in flight when the drain grace ran out (never answered).
    pub unfinished: u64,
    /// When the last measured request finished, counted from the schedule's start.
    pub last_done: Duration,
    /// Wall-clock time of the schedule's start (offset zero), for the interval log.
    pub started_at: Option<SystemTime>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            measured: Phases::default(),
            warmup: Phases::default(),
            sent: 0,
            lateness: new_hist(),
            connection_waits: 0,
            unfinished: 0,
            last_done: Duration::ZERO,
            started_at: None,
        }
    }
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.measured.merge(&o.measured);
        self.warmup.merge(&o.warmup);
        self.sent += o.sent;
        self.lateness.add(&o.lateness).expect("same bounds");
        self.connection_waits += o.connection_waits;
        self.unfinished += o.unfinished;
        self.last_done = self.last_done.max(o.last_done);
        self.started_at = self.started_at.or(o.started_at);
    }
}

/// Whether the generator kept its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Saturation {
    pub lateness_ms: Percentiles,
    pub threshold_ms: f64,
    /// p99 lateness above the threshold: the generator, not the server, set the pace.
    pub saturated: bool,
}

impl Saturation {
    pub fn check(lateness: &Histogram<u64>, threshold_ms: f64) -> Saturation {
        let p = Percentiles::of(lateness);
        Saturation {
            lateness_ms: p,
            threshold_ms,
            saturated: p.p99 > threshold_ms,
        }
    }
}

/// Where the three parties ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    pub buyers_spawned: bool,
    pub server_spawned: bool,
    /// One sentence for the report.
    pub summary: String,
    pub available_cpus: usize,
    pub generator_driver: String,
    /// The spawned server's `server.driver` (`auto (uring)`, `uring`, `legacy`); none when the
    /// server was not spawned.
    pub server_driver: Option<String>,
}

/// The final report of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The request parameters, as given (serialized CLI).
    pub params: Value,
    pub scenario: String,
    pub requested_rate: f64,
    /// Measured window (excludes warm-up).
    pub duration: Duration,
    pub warmup: Duration,
    pub stats: Stats,
    pub saturation: Saturation,
    pub placement: Placement,
    /// Upper bound of the spawned buyers' ping latency, when buyers were spawned.
    pub buyer_latency_max_ms: Option<u64>,
    pub slo_p99_ms: Option<f64>,
    /// Gavel's own histograms over the measured window, or why they are missing (none for the
    /// healthz scenario, which records no auction series).
    pub server: Option<Result<crate::server_view::ServerView, String>>,
    /// What the `--webhooks` receiver got (the whole run, warm-up included).
    pub webhooks: Option<crate::webhook_sink::WebhookView>,
    /// CPU time over the measured window by thread group, or why it is missing.
    pub cpu: Option<Result<crate::cpu::CpuView, String>>,
}

/// Definition printed with the engine-overhead line and put in the JSON.
pub const ENGINE_OVERHEAD_DEFINITION: &str = "ping latency percentile (from scheduled send) minus \
the configured buyer ping latency upper bound (--buyer-latency-ms B), clamped at 0; a conservative \
estimate of what Gavel (plus the load generator and loopback network) adds on top of the slowest buyer";

impl Report {
    /// Seconds the achieved rates divide by: the measured window, or longer when answers kept
    /// coming after it (from the window's start to the last measured answer).
    fn secs(&self) -> f64 {
        self.duration
            .max(self.stats.last_done.saturating_sub(self.warmup))
            .as_secs_f64()
    }

    /// The primary phase the SLO and achieved rate refer to.
    pub fn primary(&self) -> &Phase {
        let name = match self.scenario.as_str() {
            "healthz" => "healthz",
            "leads" => "leads",
            _ => "ping",
        };
        self.stats.measured.get(name).expect("a known phase")
    }

    /// The client-side estimate; only for scenarios whose ping is its own request.
    pub fn engine_overhead(&self) -> Option<Percentiles> {
        let b = self.buyer_latency_max_ms?;
        if !matches!(self.scenario.as_str(), "ping" | "ping-post") {
            return None;
        }
        Some(self.stats.measured.ping.percentiles().minus(b as f64))
    }

    /// `Some(message)` when the primary phase's p99 exceeds `--slo-p99-ms`.
    pub fn slo_breach(&self) -> Option<String> {
        let slo = self.slo_p99_ms?;
        let p99 = self.primary().percentiles().p99;
        (p99 > slo).then(|| format!("SLO BREACHED: p99 {p99:.3} ms > {slo} ms"))
    }

    pub fn to_json(&self) -> Value {
        let s = self.secs();
        let m = &self.stats.measured;
        let w = &self.stats.warmup;
        json!({
            "params": self.params,
            "scenario": self.scenario,
            "requested_rate": self.requested_rate,
            "duration_s": self.duration.as_secs_f64(),
            "rate_window_s": s,
            "warmup_s": self.warmup.as_secs_f64(),
            "placement": self.placement,
            "phases": m.to_json(s),
            "warmup": w.to_json(self.warmup.as_secs_f64()),
            "sent_total": self.stats.sent,
            "unfinished": self.stats.unfinished,
            "connection_waits": self.stats.connection_waits,
            "generator": {
                "lateness_ms": self.saturation.lateness_ms.to_json(),
                "threshold_p99_ms": self.saturation.threshold_ms,
                "saturated": self.saturation.saturated,
            },
            "engine_overhead": self.engine_overhead().map(|p| json!({
                "definition": ENGINE_OVERHEAD_DEFINITION,
                "buyer_latency_max_ms": self.buyer_latency_max_ms,
                "ms": p.to_json(),
            })),
            "server": match &self.server {
                Some(Ok(v)) => v.to_json(),
                Some(Err(e)) => json!({"unavailable": e}),
                None => Value::Null,
            },
            "webhooks": self.webhooks.as_ref().map(|w| w.to_json()),
            "cpu": match &self.cpu {
                Some(Ok(c)) => c.to_json(),
                Some(Err(e)) => json!({"unavailable": e}),
                None => Value::Null,
            },
            "slo": self.slo_p99_ms.map(|x| json!({"p99_ms": x, "breached": self.slo_breach().is_some()})),
        })
    }

    /// The phases the scenario produces, in table order: name, measured phase, and whether it is
    /// scheduled (its requested rate is `--rate`).
    pub fn shown_phases(&self) -> Vec<(&'static str, &Phase, bool)> {
        let m = &self.stats.measured;
        if self.scenario == "healthz" {
            vec![("healthz", &m.healthz, true)]
        } else if self.scenario == "leads" {
            vec![("leads", &m.leads, true)]
        } else if self.scenario == "ping" {
            vec![("ping", &m.ping, true)]
        } else {
            vec![
                ("ping", &m.ping, true),
                ("post", &m.post, false),
                ("e2e", &m.e2e, false),
            ]
        }
    }

    /// Writes the measured window's per-second interval histograms in the HdrHistogram interval
    /// log format (V2 deflate-compressed, values in µs, max column in ms), one histogram per
    /// second per phase, tagged with the phase name. StartTime and BaseTime are the wall-clock
    /// start of the measured window; interval timestamps are seconds since then.
    pub fn write_hdr_log<W: std::io::Write>(&self, out: &mut W) -> Result<(), String> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use hdrhistogram::serialization::V2DeflateSerializer;
        let window_start = self.stats.started_at.unwrap_or_else(SystemTime::now) + self.warmup;
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "gavel-load: scenario {} at {} req/s requested; latency in microseconds from the scheduled send",
                self.scenario, self.requested_rate
            ))
            .with_start_time(window_start)
            .with_base_time(window_start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(out, &mut serializer)
            .map_err(|e| format!("hdr log: {e}"))?;
        let phases = self.shown_phases();
        let seconds: std::collections::BTreeSet<u64> = phases
            .iter()
            .flat_map(|(_, p, _)| p.intervals.keys().copied())
            .collect();
        for sec in seconds {
            for (name, p, _) in &phases {
                if let Some(h) = p.intervals.get(&sec) {
                    log.write_histogram(
                        h,
                        Duration::from_secs(sec),
                        Duration::from_secs(1),
                        Tag::new(name),
                    )
                    .map_err(|e| format!("hdr log: {e:?}"))?;
                }
            }
        }
        Ok(())
    }

    /// The human-readable final table.
    pub fn render(&self) -> String {
        let s = self.secs();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gavel-load: scenario {} at {} req/s requested, {:.1} s measured after {:.1} s warm-up",
            self.scenario,
            self.requested_rate,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        let _ = writeln!(out, "placement: {}", self.placement.summary);
        let _ = writeln!(
            out,
            "rate/s = answers / {s:.2} s (measured window start → last measured answer, at least the window)"
        );
        let _ = writeln!(
            out,
            "\n{:<8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "phase",
            "count",
            "rate/s",
            "requested",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors"
        );
        let phases = self.shown_phases();
        for (name, p, scheduled) in &phases {
            let q = p.percentiles();
            let req = if *scheduled {
                format!("{:.1}", self.requested_rate)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:<8} {:>8} {:>10.1} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                name,
                p.count,
                if s > 0.0 { p.count as f64 / s } else { 0.0 },
                req,
                q.p50,
                q.p90,
                q.p99,
                q.p999,
                q.max,
                p.errors()
            );
        }
        out.push('\n');
        for (name, p, _) in &phases {
            let mut parts = Vec::new();
            if !p.outcomes.is_empty() {
                parts.push(format!("outcomes {}", fmt_map(&p.outcomes)));
            }
            if !p.reject_reasons.is_empty() {
                parts.push(format!("reject_reason {}", fmt_map(&p.reject_reasons)));
            }
            let statuses: BTreeMap<String, u64> = p
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            if !statuses.is_empty() {
                parts.push(format!("status {}", fmt_map(&statuses)));
            }
            if !p.error_codes.is_empty() {
                parts.push(format!("error {}", fmt_map(&p.error_codes)));
            }
            if !p.transport_errors.is_empty() {
                parts.push(format!("transport {}", fmt_map(&p.transport_errors)));
            }
            if !p.refused.is_empty() {
                let (a, r) = (Percentiles::of(&p.accepted), Percentiles::of(&p.refused));
                parts.push(format!(
                    "2xx p50 {:.3} p99 {:.3} max {:.3} ms; 503 {} ({:.1} %) p50 {:.3} p99 {:.3} max {:.3} ms",
                    a.p50,
                    a.p99,
                    a.max,
                    p.refused.len(),
                    100.0 * p.refused.len() as f64 / p.count.max(1) as f64,
                    r.p50,
                    r.p99,
                    r.max
                ));
            }
            if !parts.is_empty() {
                let _ = writeln!(out, "{name}: {}", parts.join("; "));
            }
        }
        let w = &self.stats.warmup;
        let _ = writeln!(
            out,
            "warm-up (not in the table): ping {} post {} leads {} healthz {}; sent in all {}; unfinished at stop {}",
            w.ping.count, w.post.count, w.leads.count, w.healthz.count, self.stats.sent, self.stats.unfinished
        );
        if let Some(o) = self.engine_overhead() {
            let _ = writeln!(
                out,
                "\nengine overhead (ping minus buyer latency upper bound {} ms): p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
                self.buyer_latency_max_ms.unwrap_or(0),
                o.p50, o.p90, o.p99, o.p999, o.max
            );
            let _ = writeln!(out, "  definition: {ENGINE_OVERHEAD_DEFINITION}");
        }
        match &self.server {
            Some(Ok(v)) => {
                let _ = writeln!(
                    out,
                    "\nGavel's own histograms, measured window (from /v1/metrics/latency; engine overhead = ping latency minus the slowest buyer's round trip, per auction):"
                );
                for s in &v.series {
                    let p = &s.percentiles_ms;
                    let _ = writeln!(
                        out,
                        "  {:<22} n {:>9}  p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}  p99.9 {:>8.3}  max {:>8.3} ms",
                        s.name, s.count, p.p50, p.p90, p.p99, p.p999, p.max
                    );
                }
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "\nGavel's own histograms: unavailable ({e})");
            }
            None => {}
        }
        if let Some(w) = &self.webhooks {
            let _ = writeln!(
                out,
                "\nwebhooks (whole run, warm-up included): {} requests, {} events, {} bad signatures; lag from event creation to arrival p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ms",
                w.received, w.events, w.bad_signatures, w.lag_ms[0], w.lag_ms[1], w.lag_ms[2], w.lag_ms[3]
            );
        }
        match &self.cpu {
            Some(Ok(c)) => out.push_str(&c.render()),
            Some(Err(e)) => {
                let _ = writeln!(out, "\nCPU: unavailable ({e})");
            }
            None => {}
        }
        let l = &self.saturation.lateness_ms;
        let _ = writeln!(
            out,
            "\ngenerator lateness vs schedule: p50 {:.3} p99 {:.3} max {:.3} ms (threshold p99 {} ms); {} requests waited >1 ms for a connection",
            l.p50, l.p99, l.max, self.saturation.threshold_ms, self.stats.connection_waits
        );
        if self.saturation.saturated {
            let _ = writeln!(
                out,
                "WARNING: generator saturated: p99 send lateness {:.3} ms > {} ms; the load generator, not the server, limited the rate. Use more --cores, fewer other processes, or a lower --rate.",
                l.p99, self.saturation.threshold_ms
            );
        }
        let measured = self.primary().count.max(1);
        if self.stats.connection_waits * 100 > measured {
            let _ = writeln!(
                out,
                "NOTE: {:.1} % of requests waited for one of the --connections per core; that wait is in their latency (raise --connections to offer more concurrency)",
                self.stats.connection_waits as f64 * 100.0 / measured as f64
            );
        }
        if self.stats.unfinished > 0 {
            let _ = writeln!(
                out,
                "WARNING: {} requests were still unanswered when the drain grace ran out",
                self.stats.unfinished
            );
        }
        if let Some(b) = self.slo_breach() {
            let _ = writeln!(out, "{b}");
        } else if let Some(x) = self.slo_p99_ms {
            let _ = writeln!(out, "SLO met: p99 <= {x} ms");
        }
        out
    }
}

fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_schedule() {
        let t0 = Instant::now();
        let scheduled = t0 + Duration::from_millis(10);
        // Sent 40 ms late, answered 5 ms after the send: latency is 45 ms, not 5.
        let done = scheduled + Duration::from_millis(45);
        assert_eq!(latency_from(scheduled, done), Duration::from_millis(45));
        // An answer "before" its schedule cannot happen; it saturates at zero.
        assert_eq!(latency_from(done, scheduled), Duration::ZERO);
    }

    #[test]
    fn percentiles_and_counters_from_known_inputs() {
        let mut p = Phase::default();
        for i in 1..=1000u64 {
            p.record_answer(Duration::from_millis(i), 200, Some("won"), None, None);
        }
        p.record_answer(
            Duration::from_millis(1),
            200,
            Some("no_bid"),
            Some("no_bids"),
            None,
        );
        p.record_answer(
            Duration::from_millis(1),
            422,
            None,
            None,
            Some("validation"),
        );
        p.record_transport_error(Duration::from_millis(1), "connect");
        let q = p.percentiles();
        assert_eq!(p.count, 1003);
        assert_eq!(p.errors(), 2);
        assert_eq!(p.outcomes["won"], 1000);
        assert_eq!(p.outcomes["no_bid"], 1);
        assert_eq!(p.reject_reasons["no_bids"], 1);
        assert_eq!(p.error_codes["validation"], 1);
        // 1003 values: three at 1 ms, then 1..=1000 ms. The p-th percentile is the value at rank
        // ceil(p × 1003), reported as HDR's bucket top (3 significant figures: within 0.2 %).
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.002;
        assert!(close(q.p50, 499.0), "p50 {}", q.p50);
        assert!(close(q.p90, 900.0), "p90 {}", q.p90);
        assert!(close(q.p99, 990.0), "p99 {}", q.p99);
        assert!(close(q.max, 1000.0), "max {}", q.max);
        let mut merged = Phase::default();
        merged.merge(&p);
        merged.merge(&p);
        assert_eq!(merged.count, 2006);
        assert_eq!(merged.statuses[&200], 2002);
        assert_eq!(merged.transport_errors["connect"], 2);
        assert_eq!(merged.percentiles(), q);
        assert_eq!(merged.accepted.len(), 2002);
        assert!(merged.refused.is_empty());
        let mut shed = Phase::default();
        shed.record_answer(
            Duration::from_millis(2),
            503,
            None,
            None,
            Some("overloaded"),
        );
        shed.record_answer(Duration::from_millis(40), 200, Some("won"), None, None);
        assert_eq!((shed.refused.len(), shed.accepted.len()), (1, 1));
        assert!(Percentiles::of(&shed.refused).max < 2.1);
    }

    #[test]
    fn overhead_subtracts_and_clamps() {
        let p = Percentiles {
            p50: 25.0,
            p90: 31.0,
            p99: 40.0,
            p999: 50.0,
            max: 60.0,
        };
        let o = p.minus(30.0);
        assert_eq!(o.p50, 0.0);
        assert_eq!(o.p90, 1.0);
        assert_eq!(o.p99, 10.0);
    }

    #[test]
    fn saturation_from_synthetic_lateness() {
        let mut on_time = new_hist();
        for _ in 0..1000 {
            on_time.record(300).unwrap(); // 0.3 ms: timer granularity
        }
        assert!(!Saturation::check(&on_time, 2.0).saturated);
        let mut behind = on_time.clone();
        for i in 0..50 {
            behind.record(5_000 + i * 1000).unwrap(); // 5 % of sends 5–55 ms late
        }
        let s = Saturation::check(&behind, 2.0);
        assert!(s.saturated);
        assert!(s.lateness_ms.p99 > 40.0);
    }

    /// A report of synthetic data for the output tests: `ping-post`, three seconds.
    pub(crate) fn synthetic_report() -> Report {
        let mut stats = Stats {
            started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..Stats::default()
        };
        let m = &mut stats.measured;
        for sec in 0..3u64 {
            for i in 1..=100u64 {
                let ping = Duration::from_micros(20_000 + i * 100 + sec * 1000);
                m.ping.record_answer(ping, 200, Some("won"), None, None);
                m.ping.record_interval(sec, ping);
                if i % 2 == 0 {
                    let post = Duration::from_micros(5_000 + i * 50);
                    m.post.record_answer(post, 201, Some("sold"), None, None);
                    m.post.record_interval(sec, post);
                    m.e2e
                        .record_answer(ping + post, 201, Some("sold"), None, None);
                    m.e2e.record_interval(sec, ping + post);
                }
            }
        }
        let saturation = Saturation::check(&stats.lateness, 2.0);
        Report {
            params: json!({}),
            scenario: "ping-post".into(),
            requested_rate: 100.0,
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            stats,
            saturation,
            placement: Placement {
                buyers_spawned: true,
                server_spawned: true,
                summary: "test".into(),
                available_cpus: 1,
                generator_driver: "legacy".into(),
                server_driver: None,
            },
            buyer_latency_max_ms: None,
            slo_p99_ms: None,
            server: None,
            webhooks: None,
            cpu: None,
        }
    }

    #[test]
    fn hdr_interval_log_round_trips() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        use hdrhistogram::serialization::Deserializer;
        let r = synthetic_report();
        let mut buf = Vec::new();
        r.write_hdr_log(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000001.000"), "{text}");
        assert!(text.contains("#[BaseTime: 1700000001.000"), "{text}");
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut seconds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut saw_start = false;
        for entry in IntervalLogIterator::new(&buf) {
            match entry.unwrap() {
                LogEntry::StartTime(t) => {
                    saw_start = true;
                    assert_eq!(t, Duration::from_secs(1_700_000_001));
                }
                LogEntry::BaseTime(_) => {}
                LogEntry::Interval(ilh) => {
                    let tag = ilh.tag().expect("tagged").as_str().to_string();
                    assert_eq!(ilh.duration(), Duration::from_secs(1));
                    let bytes = base64_decode(ilh.encoded_histogram());
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut std::io::Cursor::new(bytes))
                        .unwrap();
                    *counts.entry(tag.clone()).or_default() += h.len();
                    seconds
                        .entry(tag)
                        .or_default()
                        .push(ilh.start_timestamp().as_secs());
                }
            }
        }
        assert!(saw_start);
        assert_eq!(counts["ping"], 300);
        assert_eq!(counts["post"], 150);
        assert_eq!(counts["e2e"], 150);
        assert_eq!(counts.len(), 3);
        for tag in ["ping", "post", "e2e"] {
            assert_eq!(seconds[tag], vec![0, 1, 2]);
        }
    }

    /// Standard base64 (the interval log's histogram encoding), enough for the test.
    fn base64_decode(s: &str) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = A.iter().position(|&a| a == c).expect("base64") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}
