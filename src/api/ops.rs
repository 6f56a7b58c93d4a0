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
    Reply::text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}
