//! Request handling: what every fleet thread shares (`Fleet`), routing, and the ping and post
//! behaviour the module doc describes, step by step. It does not own the threads and sockets
//! (`fleet`), the decisions (`draws`) or the bodies' exact bytes (`answer`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{select, Either};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::answer::{
    bid_body, error_reply, json_reply, method_not_allowed, no_bid_body, post_accepted,
    post_rejected, unauthorized, MockBody,
};
use super::config::{FailureMode, MockBuyerConfig, PostFailMode};
use super::draws::{draw_ping, draw_post, filter_reject, PingDraws};
use super::log::{DeliveryRecord, FleetLog, PingOutcome};
use super::parse::{PingView, PostBody};
use super::{BODY_TIMEOUT, HANG_MAX, MAX_BODY_BYTES};
use crate::error::{ApiError, FieldError};
use crate::http::shutdown::Shutdown;
use crate::http::Reply;

/// What every fleet thread shares.
pub(super) struct Fleet {
    pub(super) seed: u64,
    pub(super) buyers: HashMap<String, MockBuyerConfig>,
    pub(super) log: Arc<FleetLog>,
    /// The fleet serves https with this configuration (load tests of Gavel's buyer TLS).
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
}

/// One fleet thread's view: the shared fleet plus this thread's shutdown signal.
pub(super) struct Local {
    pub(super) fleet: Arc<Fleet>,
    pub(super) shutdown: Shutdown,
}

enum Answer {
    Full(Reply),
    Trickle(Bytes),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Full(reply)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    header_str(headers, &HeaderName::from_static("idempotency-key")).map(str::to_owned)
}

fn authorized(buyer: &MockBuyerConfig, headers: &HeaderMap) -> bool {
    match &buyer.expect_auth {
        None => true,
        Some(expected) => headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes()),
    }
}

/// Sleeps for `d` unless the fleet shuts down first; true when the full time passed.
pub(super) async fn sleep_or_shutdown(d: Duration, shutdown: &Shutdown) -> bool {
    if d.is_zero() {
        return true;
    }
    let sleep = std::pin::pin!(monoio::time::sleep(d));
    let stop = std::pin::pin!(shutdown.wait());
    matches!(select(sleep, stop).await, Either::Left(_))
}

pub(super) async fn handle(local: &Local, req: Request<Incoming>) -> Response<MockBody> {
    let request_id = crate::http::request_id();
    match route(local, req, &request_id).await {
        Answer::Full(reply) => reply.into_response(&request_id).map(MockBody::full),
        Answer::Trickle(data) => {
            let mut resp = Response::new(MockBody::trickle(data, &local.shutdown));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                h.insert(HeaderName::from_static("x-request-id"), v);
            }
            resp
        }
    }
}

async fn route(local: &Local, req: Request<Incoming>, request_id: &str) -> Answer {
    enum Action {
        Ping,
        Post,
    }
    let path = req.uri().path();
    if path == "/healthz" {
        if req.method() != Method::GET {
            return method_not_allowed("GET", request_id).into();
        }
        let body = serde_json::json!({"status": "ok", "buyers": local.fleet.buyers.len()});
        return Reply::json(StatusCode::OK, &body).into();
    }
    let Some((id, action)) = path
        .strip_prefix("/buyers/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route.",
            request_id,
        )
        .into();
    };
    let action = match action {
        "ping" => Action::Ping,
        "post" => Action::Post,
        _ => {
            return error_reply(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such route.",
                request_id,
            )
            .into()
        }
    };
    let Some(buyer) = local.fleet.buyers.get(id) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            "No mock buyer has this id.",
            request_id,
        )
        .into();
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST", request_id).into();
    }
    match action {
        Action::Ping => ping(local, buyer, req, request_id).await,
        Action::Post => post(local, buyer, req, request_id).await.into(),
    }
}

async fn ping(
    local: &Local,
    buyer: &MockBuyerConfig,
    req: Request<Incoming>,
    request_id: &str,
) -> Answer {
    let log = &local.fleet.log;
    log.record_ping(&buyer.id, req.headers(), idempotency_key(req.headers()));
    if !authorized(buyer, req.headers()) {
        log.record_outcome(&buyer.id, PingOutcome::Unauthorized);
        return unauthorized(request_id).into();
    }
    let body = match crate::http::read_body(req, MAX_BODY_BYTES, BODY_TIMEOUT).await {
        Ok(body) => body,
        Err(e) => {
            log.record_outcome(&buyer.id, PingOutcome::BadRequest);
            return Reply::error(&e, request_id).into();
        }
    };
    let ping: PingView = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            log.record_outcome(&buyer.id, PingOutcome::BadRequest);
            return Reply::error(&ApiError::malformed_json(e), request_id).into();
        }
    };
    let Some(auction_id) = ping.auction_id.as_deref() else {
        log.record_outcome(&buyer.id, PingOutcome::BadRequest);
        let err = ApiError::validation(vec![FieldError::new(
            "auction_id",
            "missing_required",
            "string",
        )]);
        return Reply::error(&err, request_id).into();
    };
    let draws = draw_ping(local.fleet.seed, buyer, auction_id);
    let rejected = filter_reject(&buyer.filters, &ping);
    log.record_ping_body(&buyer.id, body.clone());
    let shutdown = &local.shutdown;

    if draws.fails {
        let failure = failure_answer(
            local,
            buyer,
            auction_id,
            &draws,
            rejected.as_ref(),
            request_id,
        );
        if let Some(answer) = failure.await {
            return answer;
        }
    }

    sleep_or_shutdown(draws.latency, shutdown).await;
    let (outcome, body) = normal_answer(buyer, auction_id, &draws, rejected.as_ref());
    log.record_outcome(&buyer.id, outcome);
    json_reply(StatusCode::OK, body).into()
}

/// The answer of a buyer whose injected failure takes over this ping (`None` for a failure mode
/// that leaves pings alone).
async fn failure_answer(
    local: &Local,
    buyer: &MockBuyerConfig,
    auction_id: &str,
    draws: &PingDraws,
    rejected: Option<&(&'static str, String)>,
    request_id: &str,
) -> Option<Answer> {
    let log = &local.fleet.log;
    let shutdown = &local.shutdown;
    let answer = match buyer.failure {
        FailureMode::Hang => {
            log.record_outcome(&buyer.id, PingOutcome::Hang);
            sleep_or_shutdown(HANG_MAX, shutdown).await;
            error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "hang_ended",
                "The mock buyer stopped hanging.",
                request_id,
            )
            .into()
        }
        FailureMode::SlowTrickle => {
            log.record_outcome(&buyer.id, PingOutcome::SlowTrickle);
            let (_, body) = normal_answer(buyer, auction_id, draws, rejected);
            Answer::Trickle(body)
        }
        FailureMode::Http500 => {
            sleep_or_shutdown(draws.latency, shutdown).await;
            log.record_outcome(&buyer.id, PingOutcome::Http500);
            error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The mock buyer failed on purpose (http_500).",
                request_id,
            )
            .into()
        }
        FailureMode::GarbageJson => {
            sleep_or_shutdown(draws.latency, shutdown).await;
            log.record_outcome(&buyer.id, PingOutcome::GarbageJson);
            json_reply(StatusCode::OK, Bytes::from_static(b"{\"auction_id\": nope")).into()
        }
        FailureMode::WrongAuctionId => {
            sleep_or_shutdown(draws.latency, shutdown).await;
            log.record_outcome(&buyer.id, PingOutcome::WrongAuctionId);
            let body = bid_body(&draws.other_auction_id(), buyer, draws);
            json_reply(StatusCode::OK, body).into()
        }
        FailureMode::None | FailureMode::RejectPost => return None,
    };
    Some(answer)
}

/// The answer of a buyer that behaves: its filters first, then whether it wants the lead at all.
fn normal_answer(
    buyer: &MockBuyerConfig,
    auction_id: &str,
    draws: &PingDraws,
    rejected: Option<&(&'static str, String)>,
) -> (PingOutcome, Bytes) {
    if let Some((reason, detail)) = rejected {
        return (PingOutcome::NoBid, no_bid_body(auction_id, reason, detail));
    }
    if !draws.bids {
        let detail = format!("buyer {} has no demand for this lead right now", buyer.id);
        return (
            PingOutcome::NoBid,
            no_bid_body(auction_id, "no_demand", &detail),
        );
    }
    (PingOutcome::Bid, bid_body(auction_id, buyer, draws))
}

async fn post(
    local: &Local,
    buyer: &MockBuyerConfig,
    req: Request<Incoming>,
    request_id: &str,
) -> Reply {
    let log = &local.fleet.log;
    let mut record = DeliveryRecord {
        buyer_id: buyer.id.clone(),
        auction_id: String::new(),
        idempotency_key: idempotency_key(req.headers()),
        lead_id: None,
        accepted: false,
        reason: None,
    };
    if !authorized(buyer, req.headers()) {
        record.reason = Some("unauthorized".into());
        log.record_post(record, None);
        return unauthorized(request_id);
    }
    let raw = crate::http::read_body(req, MAX_BODY_BYTES, BODY_TIMEOUT).await;
    let parsed = match &raw {
        Ok(raw) => serde_json::from_slice::<PostBody>(raw).map_err(ApiError::malformed_json),
        Err(e) => Err(e.clone()),
    };
    let body = match parsed {
        Ok(body) => body,
        Err(e) => {
            record.reason = Some("malformed_body".into());
            log.record_post(record, None);
            return Reply::error(&e, request_id);
        }
    };
    record.auction_id.clone_from(&body.auction_id);
    // The buyer recognises only tokens it issued; Gavel must forward the buyer's own token.
    if !draw_ping(local.fleet.seed, buyer, &body.auction_id)
        .token_matches(&buyer.id, &body.bid_token)
    {
        record.reason = Some("unknown_bid_token".into());
        log.record_post(record, None);
        return post_rejected("unknown_bid_token");
    }
    let key = record
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("post_{}", body.auction_id));
    if buyer.post_fail_first > 0 && log.bump_post_attempt(&buyer.id, &key) <= buyer.post_fail_first
    {
        return match buyer.post_fail_mode {
            PostFailMode::Http503 => {
                record.reason = Some("injected_503".into());
                log.record_post(record, None);
                json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(br#"{"error":"temporarily_unavailable"}"#),
                )
                .header(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("0"),
                )
            }
            PostFailMode::Hang => {
                // The lead is taken (settled under its key) but the answer never comes, which
                // is exactly the ambiguous case Gavel must resolve by retrying the same buyer.
                record.reason = Some("injected_hang".into());
                log.record_post(record, Some((key, true)));
                sleep_or_shutdown(HANG_MAX, &local.shutdown).await;
                post_rejected("injected_hang")
            }
            PostFailMode::Garbage => {
                record.reason = Some("injected_garbage".into());
                log.record_post(record, Some((key, true)));
                json_reply(StatusCode::OK, Bytes::from_static(b"<html>thanks!</html>"))
            }
        };
    }
    let draws = draw_post(local.fleet.seed, buyer, &body.auction_id);
    sleep_or_shutdown(draws.latency, &local.shutdown).await;
    match log.record_post(record, Some((key, draws.accepts))) {
        Some(lead_id) => post_accepted(&lead_id),
        None => post_rejected("duplicate_lead"),
    }
}
