//! CPU per auction: this process's CPU time by thread group over the measured window, from
//! `/proc/self/task/*/stat` read when the warm-up ends and again when the run ends.
//!
//! With `--spawn-server` the server, the mock buyers and the generator all run in this process, so
//! one reading splits the cost between them by thread name ([`group_of`]). Without it only the
//! generator's own time is here, plus (optionally) the server's `process_cpu_seconds_total`
//! difference scraped from its `/metrics`. Owns the readings and the arithmetic; not the rendering
//! (see [`crate::report`]). The readings are blocking file reads, so they run on the reporting
//! threads, never on a generator core.

use std::collections::BTreeMap;
use std::time::Instant;

use gavel::metrics::cpu::{read_process_us, read_threads};
use serde_json::{json, Value};

/// Thread groups in report order.
pub const GROUPS: [&str; 7] = [
    "server_cores",
    "server_store",
    "server_webhooks",
    "dns",
    "buyer_fleet",
    "generator",
    "other",
];

/// The report group of a thread of this process: `gavel-load-N` is the generator; Gavel's own
/// threads map as in [`gavel::metrics::cpu::group_of`] (the sandbox fleet is the buyer fleet).
pub fn group_of(thread_name: &str) -> &'static str {
    if thread_name
        .strip_prefix("gavel-load-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return "generator";
    }
    match gavel::metrics::cpu::group_of(thread_name) {
        "cores" => "server_cores",
        "store" => "server_store",
        "webhooks" => "server_webhooks",
        "dns" => "dns",
        "buyers_sandbox" => "buyer_fleet",
        _ => "other",
    }
}

/// One reading of this process: the process total and every live thread's time, in µs.
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Instant,
    pub process_us: u64,
    /// Thread id → (name, µs).
    pub threads: BTreeMap<u64, (String, u64)>,
    /// The buyer child process's CPU, µs (`--buyers-process`), when it could be read.
    pub buyers_process_us: Option<u64>,
}

impl Reading {
    /// Reads `/proc/self` (and `/proc/<buyers_pid>/stat`) now. Blocking: never on a generator
    /// core.
    pub fn take(buyers_pid: Option<u32>) -> Result<Reading, String> {
        let process_us = read_process_us().map_err(|e| format!("/proc/self/stat: {e}"))?;
        let threads = read_threads()
            .map_err(|e| format!("/proc/self/task: {e}"))?
            .into_iter()
            .map(|t| (t.tid, (t.name, t.cpu_us)))
            .collect();
        Ok(Reading {
            at: Instant::now(),
            process_us,
            threads,
            buyers_process_us: buyers_pid.and_then(child_cpu_us),
        })
    }
}

/// User + system CPU of process `pid` (a child of this one), µs.
#[allow(clippy::disallowed_methods)] // A reporting thread, never a generator core.
fn child_cpu_us(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, ticks) = gavel::metrics::cpu::parse_stat(&text)?;
    Some(ticks * gavel::metrics::cpu::us_per_tick())
}

/// CPU over the measured window, and what it is divided by.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuView {
    /// Seconds between the two readings.
    pub window_s: f64,
    /// Measured auctions (pings or one-call leads scheduled in the measured window).
    pub auctions: u64,
    /// Measured requests (pings, posts, leads, health checks).
    pub requests: u64,
    /// µs per group, in [`GROUPS`] order; threads started after the first reading count from 0.
    pub groups_us: [u64; GROUPS.len()],
    /// This process's total, exited threads included.
    pub process_us: u64,
    /// The remote server's `process_cpu_seconds_total` difference, in µs, when it was scraped.
    pub server_process_us: Option<u64>,
    /// The buyer child process's CPU, in µs (`--buyers-process`).
    pub buyers_process_us: Option<u64>,
}

impl CpuView {
    /// `after - before`, per group, for `auctions` auctions and `requests` requests.
    pub fn window(before: &Reading, after: &Reading, auctions: u64, requests: u64) -> CpuView {
        let mut groups_us = [0u64; GROUPS.len()];
        for (tid, (name, us)) in &after.threads {
            let earlier = before
                .threads
                .get(tid)
                .filter(|(n, _)| n == name)
                .map_or(0, |(_, us)| *us);
            let g = group_of(name);
            if let Some(i) = GROUPS.iter().position(|x| *x == g) {
                groups_us[i] += us.saturating_sub(earlier);
            }
        }
        CpuView {
            window_s: after.at.saturating_duration_since(before.at).as_secs_f64(),
            auctions,
            requests,
            groups_us,
            process_us: after.process_us.saturating_sub(before.process_us),
            server_process_us: None,
            buyers_process_us: match (before.buyers_process_us, after.buyers_process_us) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                _ => None,
            },
        }
    }

    fn per(us: u64, n: u64) -> Option<f64> {
        (n > 0).then(|| us as f64 / n as f64)
    }

    /// `{"cpu_s", "cpus", "us_per_auction", "us_per_request"}` of `us` µs.
    fn figures(&self, us: u64) -> Value {
        json!({
            "cpu_s": us as f64 / 1e6,
            "cpus": if self.window_s > 0.0 { us as f64 / 1e6 / self.window_s } else { 0.0 },
            "us_per_auction": Self::per(us, self.auctions),
            "us_per_request": Self::per(us, self.requests),
        })
    }

    /// The `cpu` section of the JSON report.
    pub fn to_json(&self) -> Value {
        let groups: serde_json::Map<String, Value> = GROUPS
            .iter()
            .zip(self.groups_us)
            .map(|(g, us)| (g.to_string(), self.figures(us)))
            .collect();
        json!({
            "window_s": self.window_s,
            "auctions": self.auctions,
            "requests": self.requests,
            "groups": groups,
            "process": self.figures(self.process_us),
            "server_process": self.server_process_us.map(|us| self.figures(us)),
            "buyers_process": self.buyers_process_us.map(|us| self.figures(us)),
        })
    }

    /// Table lines: one per group with any time, then the totals.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nCPU, measured window ({:.1} s, {} auctions, {} requests; from /proc, in clock ticks):",
            self.window_s, self.auctions, self.requests
        );
        let line = |out: &mut String, name: &str, us: u64| {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
            let _ = writeln!(
                out,
                "  {:<16} {:>9.3} s  {:>5.2} CPUs  {:>10} µs/auction  {:>10} µs/request",
                name,
                us as f64 / 1e6,
                if self.window_s > 0.0 {
                    us as f64 / 1e6 / self.window_s
                } else {
                    0.0
                },
                f(Self::per(us, self.auctions)),
                f(Self::per(us, self.requests)),
            );
        };
        for (g, us) in GROUPS.iter().zip(self.groups_us) {
            if us > 0 || *g == "server_cores" || *g == "generator" {
                line(&mut out, g, us);
            }
        }
        line(&mut out, "this process", self.process_us);
        if let Some(us) = self.server_process_us {
            line(&mut out, "server process", us);
        }
        if let Some(us) = self.buyers_process_us {
            line(&mut out, "buyers process", us);
        }
        out
    }
}

/// The remote server's `process_cpu_seconds_total`, in µs, from `{base_url}/metrics` (the token
/// needs the `reports` scope), on a short-lived runtime of `driver` on the calling thread.
pub fn fetch_server_process_us(
    base_url: &str,
    token: Option<&str>,
    driver: gavel::config::Driver,
) -> Result<u64, String> {
    use gavel::buyers::pool::Pool;
    let target = crate::tls::target(&format!("{}/metrics", base_url.trim_end_matches('/')))?;
    let mut headers = Vec::new();
    if let Some(t) = token {
        let value =
            http::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        headers.push((http::header::AUTHORIZATION, value));
    }
    let answer = gavel::runtime::block_on(driver, 64, || async {
        let pool = Pool::new();
        monoio::time::timeout(
            std::time::Duration::from_secs(10),
            pool.get(&target, &headers, 8 * 1024 * 1024),
        )
        .await
    })
    .map_err(|e| format!("cannot start a runtime: {e}"))?
    .map_err(|_| "GET /metrics timed out".to_string())?
    .map_err(|e| format!("GET /metrics: {e}"))?;
    if !answer.status.is_success() {
        return Err(format!("GET /metrics answered {}", answer.status));
    }
    process_cpu_us(&String::from_utf8_lossy(&answer.body))
        .ok_or_else(|| "no process_cpu_seconds_total in /metrics".to_string())
}

/// `process_cpu_seconds_total` from Prometheus text, in µs.
pub fn process_cpu_us(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let v: f64 = l
            .strip_prefix("process_cpu_seconds_total ")?
            .trim()
            .parse()
            .ok()?;
        Some((v * 1e6).round() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_thread_name() {
        assert_eq!(group_of("gavel-load-0"), "generator");
        assert_eq!(group_of("gavel-load-12"), "generator");
        assert_eq!(group_of("gavel-load"), "other");
        assert_eq!(group_of("gavel-core-1"), "server_cores");
        assert_eq!(group_of("sled-io-0"), "server_store");
        assert_eq!(group_of("gavel-mock-0"), "buyer_fleet");
        assert_eq!(group_of("gavel-dns-0"), "dns");
        assert_eq!(group_of("gavel-webhook-0"), "server_webhooks");
    }

    #[test]
    fn window_subtracts_per_thread_and_divides() {
        let at = Instant::now();
        let before = Reading {
            at,
            process_us: 1_000_000,
            threads: [
                (1, ("gavel-core-0".to_string(), 400_000)),
                (2, ("gavel-load-0".to_string(), 100_000)),
            ]
            .into(),
            buyers_process_us: None,
        };
        let after = Reading {
            at: at + std::time::Duration::from_secs(2),
            process_us: 2_500_000,
            threads: [
                (1, ("gavel-core-0".to_string(), 1_400_000)),
                (2, ("gavel-load-0".to_string(), 300_000)),
                (3, ("gavel-mock-0".to_string(), 50_000)),
            ]
            .into(),
            buyers_process_us: None,
        };
        let v = CpuView::window(&before, &after, 1000, 2000);
        assert_eq!(v.window_s, 2.0);
        assert_eq!(v.groups_us[0], 1_000_000);
        assert_eq!(v.groups_us[4], 50_000);
        assert_eq!(v.groups_us[5], 200_000);
        assert_eq!(v.process_us, 1_500_000);
        let j = v.to_json();
        assert_eq!(j["groups"]["server_cores"]["us_per_auction"], 1000.0);
        assert_eq!(j["groups"]["server_cores"]["us_per_request"], 500.0);
        assert_eq!(j["groups"]["server_cores"]["cpus"], 0.5);
        assert_eq!(j["process"]["cpu_s"], 1.5);
        assert!(j["server_process"].is_null());
        assert!(v.render().contains("server_cores"));
    }

    #[test]
    fn process_cpu_from_metrics_text() {
        let text =
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.345678\n";
        assert_eq!(process_cpu_us(text), Some(12_345_678));
        assert_eq!(process_cpu_us("x 1\n"), None);
    }
}
