//! The webhook admin API (scope `admin`, the caller's tenant only): endpoints and their state,
//! the outbox's deliveries (exhausted ones included), redelivery by hand, and re-enabling an
//! endpoint a 410 disabled.
//!
//! The operator sees and acts on every endpoint of its tenant; a seller only on the endpoints
//! scoped to it (`seller = its id`) and their deliveries; a buyer has no part of it
//! (`api::views`). Another seller's endpoint or event answers exactly as a missing one.
//!
//! Reads go to the store directly; anything that changes a delivery or an endpoint is a command
//! to the delivery worker, the only writer of existing outbox records, so a redelivery can never
//! race an attempt in flight; the command carries the change's audit entry, which the worker
//! writes in the same batch. Owns the HTTP shapes only; delivery is [`crate::webhooks`].

use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::store_error;
use crate::auction::rfc3339_ms;
use crate::audit;
use crate::auth::Client;
use crate::config::WEBHOOK_EVENTS;
use crate::error::ApiError;
use crate::exchange::Core;
use crate::http::Reply;
use crate::store::DeliveryRecord;
use crate::types::Party;
use crate::webhooks::outbox::{Command, Disabled, Endpoint, ReplayError};

/// Largest page of `GET /v1/admin/webhooks/events`.
pub const MAX_PAGE: usize = 500;
/// Records one page request reads at most before it answers with a cursor, so a rare filter
/// never holds the core for long.
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;
/// Delivery states a listing may filter on.
pub const STATES: [&str; 4] = ["pending", "delivered", "exhausted", "disabled"];

#[derive(Serialize)]
struct DisabledOut<'a> {
    at: String,
    reason: &'a str,
    event_id: &'a str,
}

#[derive(Serialize)]
struct EndpointOut<'a> {
    id: &'a str,
    url: &'a str,
    seller: Option<&'a str>,
    events: &'a [String],
    enabled: bool,
    disabled: Option<DisabledOut<'a>>,
    pending: u64,
    attempts: serde_json::Map<String, serde_json::Value>,
    exhausted: u64,
}

fn endpoint_out<'a>(ep: &'a Endpoint, disabled: &'a Option<Disabled>) -> EndpointOut<'a> {
    EndpointOut {
        id: ep.id(),
        url: &ep.config.url,
        seller: ep.config.seller.as_deref(),
        events: &ep.config.events,
        enabled: ep.config.enabled,
        disabled: disabled.as_ref().map(|d| DisabledOut {
            at: rfc3339_ms(d.at_ms),
            reason: &d.reason,
            event_id: &d.event_id,
        }),
        pending: ep.pending(),
        attempts: ep
            .attempt_counts()
            .map(|(r, n)| (r.to_string(), n.into()))
            .collect(),
        exhausted: ep.exhausted(),
    }
}

#[derive(Serialize)]
struct AttemptOut<'a> {
    at: String,
    result: &'a str,
    http_status: Option<u16>,
    error: Option<&'a str>,
    latency_ms: f64,
}

#[derive(Serialize)]
struct DeliveryOut<'a> {
    event_id: &'a str,
    endpoint_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    state: &'a str,
    created_at: String,
    next_attempt_at: Option<String>,
    attempts: Vec<AttemptOut<'a>>,
    /// The exact body every attempt sends; only when one event is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
}

fn delivery_out(r: &DeliveryRecord, with_payload: bool) -> DeliveryOut<'_> {
    DeliveryOut {
        event_id: &r.event_id,
        endpoint_id: &r.endpoint_id,
        kind: &r.event_type,
        state: &r.state,
        created_at: rfc3339_ms(r.created_ms),
        next_attempt_at: r.next_attempt_ms.map(rfc3339_ms),
        attempts: r
            .attempts
            .iter()
            .map(|a| AttemptOut {
                at: rfc3339_ms(a.at_ms),
                result: &a.result,
                http_status: a.http_status,
                error: a.error.as_deref(),
                latency_ms: a.latency_us as f64 / 1000.0,
            })
            .collect(),
        payload: if with_payload {
            serde_json::from_slice(&r.body).ok()
        } else {
            None
        },
    }
}

/// Whether `admin` sees and acts on `ep`: the operator on every endpoint of its tenant, a seller
/// on those scoped to it.
fn manages(admin: &Client, ep: &Endpoint) -> bool {
    ep.config.tenant == admin.tenant
        && match &admin.party {
            Party::Operator => true,
            Party::Seller(me) => ep.config.seller.as_deref() == Some(me.as_str()),
            Party::Buyer(_) => false,
        }
}

/// The endpoint named `id` that `admin` manages; another tenant's or another seller's is as
/// unknown as a missing one.
fn own_endpoint(core: &Core, admin: &Client, id: &str) -> Result<Arc<Endpoint>, ApiError> {
    core.webhooks()
        .endpoint(id)
        .filter(|ep| manages(admin, ep))
        .ok_or_else(|| ApiError::not_found(format!("No webhook endpoint {id} in this tenant.")))
}

/// Which deliveries `admin` sees: the operator every one of its tenant; a seller those to the
/// endpoints it manages now (a delivery to an endpoint no longer configured has no known owner,
/// so only the operator sees it).
struct Deliveries {
    tenant: &'static str,
    endpoints: Option<HashSet<String>>,
}

impl Deliveries {
    fn of(core: &Core, admin: &Client) -> Deliveries {
        let endpoints = (!admin.party.is_operator()).then(|| {
            core.webhooks()
                .endpoints
                .iter()
                .filter(|ep| manages(admin, ep))
                .map(|ep| ep.id().to_string())
                .collect()
        });
        Deliveries {
            tenant: admin.tenant.as_str(),
            endpoints,
        }
    }

    fn shows(&self, r: &DeliveryRecord) -> bool {
        r.tenant == self.tenant
            && self
                .endpoints
                .as_ref()
                .is_none_or(|own| own.contains(&r.endpoint_id))
    }
}

/// `GET /v1/admin/webhooks`: the tenant's endpoints with their state and counters.
pub async fn list_endpoints(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let store = &core.shared.store;
    let table = core.webhooks();
    let eps: Vec<(&Endpoint, Option<Disabled>)> = table
        .endpoints
        .iter()
        .filter(|ep| manages(&admin, ep))
        .map(|ep| Ok((&**ep, ep.disabled_info(store)?)))
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    let out: Vec<EndpointOut> = eps.iter().map(|(ep, d)| endpoint_out(ep, d)).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "webhooks": out }),
    ))
}

/// `POST /v1/admin/webhooks/{endpoint_id}/enable`: takes deliveries again after a 410.
pub async fn enable(
    core: &Rc<Core>,
    req: Request<Incoming>,
    endpoint_id: &str,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let ep = own_endpoint(core, &admin, endpoint_id)?;
    let (tx, rx) = futures::channel::oneshot::channel();
    let audit = audit::Entry::new(
        admin.tenant,
        &audit::Actor::of(&admin),
        audit::Action::Enable,
        audit::Target::WebhookEndpoint,
        endpoint_id,
    );
    ask_worker(
        core,
        Command::Enable {
            endpoint: ep.clone(),
            audit: Box::new(audit),
            reply: tx,
        },
    )?;
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(store_error(e)),
        Err(_) => return Err(worker_gone()),
    }
    tracing::info!(endpoint = endpoint_id, by = %admin.name, "webhook endpoint enabled");
    let disabled = ep.disabled_info(&core.shared.store).map_err(store_error)?;
    Ok(Reply::json(StatusCode::OK, &endpoint_out(&ep, &disabled)))
}

/// `GET /v1/admin/webhooks/events`: deliveries, newest first, filtered by `state`, `endpoint`
/// and `type`, a page of `limit` at a time (`cursor` continues).
pub async fn list_events(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let (mut state, mut endpoint, mut kind, mut cursor) = (None, None, None, None);
    let mut limit = 100;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "state" if STATES.contains(&v.as_str()) => state = Some(v),
            "state" => {
                return Err(bad_query(format!(
                    "state must be one of {}.",
                    STATES.join(", ")
                )))
            }
            "endpoint" => endpoint = Some(v),
            "type" if WEBHOOK_EVENTS.contains(&v.as_str()) => kind = Some(v),
            "type" => {
                return Err(bad_query(format!(
                    "type must be one of {}.",
                    WEBHOOK_EVENTS.join(", ")
                )))
            }
            "cursor" => cursor = Some(v),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad_query(format!("limit must be 1..={MAX_PAGE}.")))?;
            }
            other => {
                return Err(bad_query(format!(
                    "Unknown query parameter {other:?}; use state, endpoint, type, limit, cursor."
                )))
            }
        }
    }
    let visible = Deliveries::of(core, &admin);
    let keep = |r: &DeliveryRecord| {
        visible.shows(r)
            && state.as_deref().is_none_or(|s| s == r.state)
            && endpoint.as_deref().is_none_or(|e| e == r.endpoint_id)
            && kind.as_deref().is_none_or(|t| t == r.event_type)
    };
    let (page, next) = core
        .shared
        .store
        .list_deliveries(
            cursor.as_deref().map(str::as_bytes),
            limit,
            MAX_SCANNED_PER_PAGE,
            &keep,
        )
        .map_err(store_error)?;
    let out: Vec<DeliveryOut> = page.iter().map(|r| delivery_out(r, false)).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "deliveries": out,
            "next_cursor": next.map(|k| String::from_utf8_lossy(&k).into_owned()),
        }),
    ))
}

/// `GET /v1/admin/webhooks/events/{event_id}`: one event's deliveries, with its payload.
pub async fn get_event(
    core: &Rc<Core>,
    req: Request<Incoming>,
    event_id: &str,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let visible = Deliveries::of(core, &admin);
    let records: Vec<DeliveryRecord> = core
        .shared
        .store
        .get_deliveries(event_id)
        .map_err(store_error)?
        .into_iter()
        .filter(|r| visible.shows(r))
        .collect();
    if records.is_empty() {
        return Err(no_event(event_id));
    }
    let out: Vec<DeliveryOut> = records.iter().map(|r| delivery_out(r, true)).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "event_id": event_id, "deliveries": out }),
    ))
}

/// `POST /v1/admin/webhooks/events/{event_id}/replay[?endpoint=id]`: delivers an event again,
/// now, with a fresh retry schedule and the same `webhook-id`.
pub async fn replay(
    core: &Rc<Core>,
    req: Request<Incoming>,
    event_id: &str,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let mut endpoint = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "endpoint" => endpoint = Some(v.into_owned()),
            other => {
                return Err(bad_query(format!(
                    "Unknown query parameter {other:?}; use endpoint."
                )))
            }
        }
    }
    // The endpoints to replay to: as asked for the operator (the worker replays only the
    // caller's tenant's events); for a seller, only its own endpoints, each replayed in turn.
    let targets: Vec<Option<String>> = match Deliveries::of(core, &admin).endpoints {
        None => vec![endpoint],
        Some(own) => {
            let wanted: BTreeSet<String> = core
                .shared
                .store
                .get_deliveries(event_id)
                .map_err(store_error)?
                .into_iter()
                .filter(|r| r.tenant == admin.tenant.as_str() && own.contains(&r.endpoint_id))
                .map(|r| r.endpoint_id)
                .filter(|id| endpoint.as_ref().is_none_or(|e| e == id))
                .collect();
            if wanted.is_empty() {
                return Err(no_event(event_id));
            }
            wanted.into_iter().map(Some).collect()
        }
    };
    let mut records = Vec::new();
    for target in targets {
        records.extend(replay_to(core, &admin, event_id, target).await?);
    }
    tracing::info!(event_id, by = %admin.name, "webhook event queued again by hand");
    let out: Vec<DeliveryOut> = records.iter().map(|r| delivery_out(r, false)).collect();
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "event_id": event_id, "deliveries": out }),
    ))
}

/// Asks the delivery worker to replay `event_id` of the caller's tenant (to `endpoint`, or to every endpoint
/// it went to) and answers its refusals.
async fn replay_to(
    core: &Core,
    admin: &crate::auth::Client,
    event_id: &str,
    endpoint: Option<String>,
) -> Result<Vec<DeliveryRecord>, ApiError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    // The worker writes the audit entry in the batch that queues the event again.
    let audit = audit::Entry::new(
        admin.tenant,
        &audit::Actor::of(admin),
        audit::Action::Replay,
        audit::Target::WebhookEvent,
        event_id,
    );
    ask_worker(
        core,
        Command::Replay {
            tenant: admin.tenant,
            event_id: event_id.to_string(),
            endpoint,
            audit: Box::new(audit),
            reply: tx,
        },
    )?;
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(ReplayError::NotFound)) => Err(no_event(event_id)),
        Ok(Err(ReplayError::InFlight(ep))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "delivery_in_flight",
            format!("An attempt to deliver {event_id} to {ep} is under way; retry when it ends."),
        )),
        Ok(Err(ReplayError::EndpointInactive(ep))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_inactive",
            format!(
                "Webhook endpoint {ep} takes no deliveries (disabled in config, disabled by a \
                 410 until enabled again, or no longer configured)."
            ),
        )),
        Ok(Err(ReplayError::Store(e))) => {
            tracing::error!(error = %e, "webhook replay could not be recorded");
            Err(ApiError::internal("The redelivery could not be recorded."))
        }
        Err(_) => Err(worker_gone()),
    }
}

fn ask_worker(core: &Core, c: Command) -> Result<(), ApiError> {
    core.webhooks()
        .command(c)
        .map_err(|_| ApiError::overloaded("The webhook worker is busy; retry shortly."))
}

fn worker_gone() -> ApiError {
    ApiError::internal("The webhook worker stopped before answering.")
}

fn no_event(event_id: &str) -> ApiError {
    ApiError::not_found(format!("No webhook event {event_id} in this tenant."))
}

fn bad_query(msg: String) -> ApiError {
    ApiError::unprocessable("invalid_query", msg)
}
