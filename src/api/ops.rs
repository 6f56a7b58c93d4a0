//! Operations endpoints: liveness, readiness and the Prometheus scrape (CONTRACT §9).
//!
//! The counters shown here are the per-core runtime counters; latency histograms arrive with the
//! metrics module. Nothing here needs authentication on loopback.

use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use serde::Serialize;

use crate::http::Reply;
use crate::runtime::{Core, CoreStats};

pub fn healthz() -> Reply {
    Reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    cores: usize,
    driver: &'static str,
}

pub fn readyz(core: &Rc<Core>) -> Reply {
    let s = &core.shared;
    Reply::json(
        StatusCode::OK,
        &Ready {
            status: "ready",
            cores: s.cores,
            driver: match s.driver {
                crate::config::Driver::Uring => "uring",
                _ => "legacy",
            },
        },
    )
}

/// Renders one metric family with a value per core.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    stats: &[CoreStats],
    f: fn(&CoreStats) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (i, s) in stats.iter().enumerate() {
        let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", f(s));
    }
}

pub fn metrics(core: &Rc<Core>) -> Reply {
    let stats = &core.shared.stats;
    let mut out = String::with_capacity(2048);
    family(
        &mut out,
        "gavel_core_handoffs_out_total",
        "counter",
        "Requests a core received for an auction another core owns, and handed over.",
        stats,
        |s| s.handoffs_out.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "gavel_core_handoffs_in_total",
        "counter",
        "Requests a core ran on behalf of another core.",
        stats,
        |s| s.handoffs_in.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "gavel_core_requests_total",
        "counter",
        "HTTP requests received by a core.",
        stats,
        |s| s.requests_total.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "gavel_core_connections_open",
        "gauge",
        "Client connections currently open on a core.",
        stats,
        |s| s.connections_open.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "gavel_core_connections_total",
        "counter",
        "Client connections accepted by a core.",
        stats,
        |s| s.connections_total.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "gavel_core_auctions_in_memory",
        "gauge",
        "Auctions held in a core's shard (open or awaiting their post).",
        stats,
        |s| s.auctions_in_memory.load(Ordering::Relaxed),
    );
    store_metrics(&mut out, &core.shared);
    Reply::text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}

/// Largest bucket exported for store commit latency: 2^24 µs ≈ 16.8 s; slower commits land in +Inf.
const COMMIT_BUCKETS_EXPORTED: usize = 25;

/// The group committers' numbers, all cores merged.
fn store_metrics(out: &mut String, shared: &crate::runtime::Shared) {
    let mut st = crate::store::CommitStats::default();
    for c in &shared.committers {
        st.merge(&c.stats());
    }
    let name = "gavel_store_commit_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from queueing a write to its durable acknowledgement (group commit)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    // Bucket 0 holds zero-latency commits; it folds into the first exported bucket.
    let mut cumulative = st.latency_us_buckets[0];
    for b in 1..COMMIT_BUCKETS_EXPORTED {
        cumulative += st.latency_us_buckets[b];
        let le = crate::store::CommitStats::bucket_upper_us(b) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", st.commits);
    let _ = writeln!(out, "{name}_sum {}", st.latency_us_sum as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", st.commits);
    let counters = [
        (
            "gavel_store_commits_total",
            "Writes acknowledged by the group committers, failed ones included.",
            st.commits,
        ),
        (
            "gavel_store_commit_failures_total",
            "Writes the store could not make durable.",
            st.failed,
        ),
        (
            "gavel_store_commit_groups_total",
            "Groups written, one flush (fsync) each.",
            st.groups,
        ),
    ];
    for (metric, help, v) in counters {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        let _ = writeln!(out, "{metric} {v}");
    }
}
