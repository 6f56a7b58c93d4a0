//! Operations endpoints: liveness, readiness and the Prometheus scrape (CONTRACT §9).
//!
//! `/metrics` and `/v1/metrics/latency` collect a snapshot from every core and merge them; the
//! rendering belongs to [`crate::metrics`]. On the API port health needs no token, `/metrics` (it
//! names every tenant's buyers) needs a production operator credential with the `reports` scope,
//! and the latency report the `reports` scope, each party seeing its own series
//! ([`super::views`]).
//! The operations listener (`[metrics] listen`, loopback by default) serves `/metrics`, `/healthz`
//! and `/readyz` without a token through [`handle`], and nothing else.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;

use super::views::Viewer;
use crate::exchange::Core;
use crate::http::Reply;
use crate::metrics::{
    latency_json_of, render_prometheus, CoreCounters, Snapshot, StoreCounters, WebhookCounters,
};
use crate::runtime::handoff;
use crate::types::Party;

/// Entry point for every request on the operations listener: the three operations endpoints,
/// without a token; anything else is 404 (405 for another method on one of them).
pub async fn handle(
    core: Rc<Core>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let rid = crate::http::request_id();
    let path = req.uri().path();
    let mut reply = match (req.method(), path) {
        (&Method::GET, "/healthz") => healthz(),
        (&Method::GET, "/readyz") => readyz(&core),
        (&Method::GET, "/metrics") => metrics(&core).await,
        (_, "/healthz" | "/readyz" | "/metrics") => Reply::error(
            &crate::error::ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} accepts GET."),
            )
            .with_header(http::header::ALLOW, "GET"),
            &rid,
        ),
        _ => Reply::error(
            &crate::error::ApiError::not_found(format!(
                "No route for {path} on the operations listener; it serves /metrics, /healthz and /readyz."
            )),
            &rid,
        ),
    };
    // No body is ever read here, so a connection whose request sent one cannot serve another.
    if crate::http::has_body(&req) {
        reply = reply.header(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(reply.into_response(&rid))
}

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

/// Every core's metrics snapshot, merged. Each core snapshots its own histograms (they are never
/// read across threads); the snapshots travel here through the cores' inboxes.
async fn merged_snapshot(core: &Rc<Core>) -> Snapshot {
    let ids: Vec<crate::metrics::BuyerKey> = core
        .registry()
        .buyers
        .iter()
        .map(|b| (b.tenant, b.id.clone()))
        .collect();
    let mut merged = Snapshot::empty(&ids);
    for target in 0..core.shared.cores {
        match handoff::ask(core, target, |c| async move { c.metrics.snapshot() }).await {
            Ok(snap) => merged.merge(&snap),
            Err(e) => tracing::warn!(core = target, error = %e.message, "no metrics snapshot"),
        }
    }
    merged
}

/// `GET /metrics`: Prometheus text exposition of every core's metrics. The CPU counters come from
/// the sampler thread's atomics (at most a second old): reading `/proc` here would block the core.
pub async fn metrics(core: &Rc<Core>) -> Reply {
    let snap = merged_snapshot(core).await;
    let shared = &core.shared;
    let cores: Vec<CoreCounters> = shared
        .stats
        .iter()
        .enumerate()
        .map(|(i, s)| CoreCounters {
            core: i,
            handoffs_out: s.handoffs_out.load(Ordering::Relaxed),
            handoffs_in: s.handoffs_in.load(Ordering::Relaxed),
            connections_open: s.connections_open.load(Ordering::Relaxed),
            connections_total: s.connections_total.load(Ordering::Relaxed),
            auctions_in_memory: s.auctions_in_memory.load(Ordering::Relaxed),
            requests_total: s.requests_total.load(Ordering::Relaxed),
            in_flight_requests: s.in_flight_requests.load(Ordering::Relaxed),
            loop_lag_max_us: s.loop_lag_us.load(Ordering::Relaxed),
            shed: std::array::from_fn(|r| s.shed[r].load(Ordering::Relaxed)),
        })
        .collect();
    let mut st = crate::store::CommitStats::default();
    for c in &shared.commit_counters {
        st.merge(&c.snapshot());
    }
    let store = StoreCounters {
        commits: st.commits,
        failures: st.failed,
        groups: st.groups,
    };
    let hooks: Vec<WebhookCounters> = core
        .webhooks()
        .endpoints
        .iter()
        .map(|ep| WebhookCounters {
            endpoint: ep.id().to_string(),
            attempts: ep.attempt_counts().collect(),
            exhausted: ep.exhausted(),
            outbox_depth: ep.pending(),
            disabled: u64::from(ep.is_disabled()),
        })
        .collect();
    Reply::text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        render_prometheus(&snap, &cores, &store, &hooks, &shared.cpu.load()),
    )
}

/// `GET /v1/metrics/latency`: exact HDR percentiles, last 60 s and since start, with each
/// histogram serialized so tools can merge them exactly. What each party gets
/// (`api::views`): the operator the exchange-wide series plus the per-seller `ping_duration` and
/// `post_duration` of its own tenant's sellers and the `buyer_ping_rtt` of its own tenant's buyers;
/// a seller only its own two per-seller series (its own pings and posts: no exchange-wide figure,
/// no other seller's, no buyer's); a buyer only its own `buyer_ping_rtt`.
pub async fn latency(core: &Rc<Core>, viewer: &Viewer) -> Reply {
    let snap = merged_snapshot(core).await;
    let tenant = viewer.client.tenant;
    // Seller and buyer series are keyed by tenant and id, so one tenant's party never shows as
    // another's.
    let report = match viewer.party() {
        Party::Operator => latency_json_of(&snap, true, |t, _| t == tenant, |t, _| t == tenant),
        Party::Seller(me) => {
            latency_json_of(&snap, false, |t, id| t == tenant && id == me, |_, _| false)
        }
        Party::Buyer(me) => {
            latency_json_of(&snap, false, |_, _| false, |t, id| t == tenant && id == me)
        }
    };
    Reply::json(StatusCode::OK, &report)
}
