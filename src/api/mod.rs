//! The HTTP API: routing, authentication per route, request logging, and one module per endpoint
//! family.
//!
//! Handlers turn requests into [`Reply`]s; anything that touches an auction runs on the auction's
//! owning core via [`crate::runtime::handoff::on_core`]. The route table that docs/openapi.yaml
//! mirrors is [`routes::ROUTES`]; this module runs a request through it ([`handle`]). It does not
//! own auction rules or buyer I/O.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::error::ApiError;
use crate::exchange::Core;
use crate::exchange::ExchangeError;
use crate::http::{request_id, Reply};

pub mod auctions;
pub mod audit;
pub mod buyers;
pub mod idempotency;
pub mod leads;
pub mod oauth;
pub mod ops;
pub mod ping;
pub mod post;
pub mod routes;
pub mod seed;
pub mod sellers;
pub mod status;
pub mod validate;
pub mod views;
pub mod webhooks;

/// A store failure as the seller sees it: Gavel's fault, worth a retry.
pub fn store_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store write failed");
    // A write worth retrying soon (a full commit queue) is a 503 with Retry-After; any other
    // store failure would fail again, so it is Gavel's own 500.
    if e.retryable() {
        ApiError::overloaded("The store is saturated; retry shortly.")
    } else {
        ApiError::internal("The request could not be recorded.")
    }
}

/// How each exchange error is answered: one status code and error code per variant (the metric
/// label follows from the status, see [`ApiError::cause`]).
impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> ApiError {
        match e {
            ExchangeError::AuctionExists { auction_id } => ApiError::new(
                StatusCode::CONFLICT,
                "auction_exists",
                format!("An auction with id {auction_id} already exists."),
            ),
            ExchangeError::AmbiguousAuctionId {
                auction_id,
                sellers,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous_auction_id",
                if sellers.is_empty() {
                    format!(
                        "Auction id {auction_id} names several auctions you may see; name the \
                         seller with the seller_id query parameter."
                    )
                } else {
                    format!(
                        "Auction id {auction_id} names auctions of sellers {}; name one with the \
                         seller_id query parameter.",
                        sellers.join(", ")
                    )
                },
            ),
            ExchangeError::AmbiguousLeadUuid { lead_uuid } => ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous_lead_uuid",
                format!(
                    "You bought leads of several sellers under lead uuid {lead_uuid}; a status \
                     report cannot tell them apart."
                ),
            ),
            ExchangeError::NotASeller { party } => ApiError::new(
                StatusCode::FORBIDDEN,
                "seller_only",
                format!("Only a seller's credential sends leads; this one is the {party}'s."),
            ),
            ExchangeError::SellerSuspended { seller } => ApiError::new(
                StatusCode::FORBIDDEN,
                "seller_suspended",
                format!(
                    "Seller {seller} is suspended: its credentials send no pings, posts or leads \
                     until the operator resumes it. Its records stay readable."
                ),
            ),
            ExchangeError::SellerUnknown { seller } => ApiError::new(
                StatusCode::FORBIDDEN,
                "seller_unknown",
                format!(
                    "This credential's seller {seller} no longer exists; ask the operator for a \
                     credential of a current seller."
                ),
            ),
            ExchangeError::TooManyRunning { seller, max } => crate::limits::too_many(
                &format!(
                    "Seller {seller} may run {max} auctions at once (its max_concurrent_auctions)"
                ),
                max,
                Duration::from_secs(1),
                Duration::from_secs(1),
            ),
            ExchangeError::SellerPingRate {
                seller,
                per_s,
                retry_after_ms,
                reset_ms,
            } => crate::limits::too_many(
                &format!("Seller {seller} may send {per_s} pings per second (its pings_per_s)"),
                per_s,
                Duration::from_millis(retry_after_ms),
                Duration::from_millis(reset_ms),
            ),
            ExchangeError::TooManyUnposted { seller, max } => crate::limits::too_many(
                &format!(
                    "Seller {seller} may hold {max} won auctions it has not posted (its \
                     max_unposted_auctions); post or let one expire"
                ),
                max,
                Duration::from_secs(1),
                Duration::from_secs(1),
            ),
            ExchangeError::RoomFull {
                tenant,
                retry_after_ms,
            } => {
                let secs = retry_after_ms.div_ceil(1_000).max(1);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "This core holds the {} tenant's maximum number of auctions; the earliest leaves in about {secs} s.",
                        tenant.as_str()
                    ),
                )
                .with_header(http::header::RETRY_AFTER, secs.to_string())
            }
            ExchangeError::LeadNotFound { lead_uuid } => {
                ApiError::not_found(format!("No lead {lead_uuid} bought by this buyer."))
            }
            ExchangeError::StatusInFlight => ApiError::new(
                StatusCode::CONFLICT,
                "status_in_flight",
                "Another status report for this lead is being recorded; retry shortly.",
            ),
            ExchangeError::InvalidTransition {
                current,
                allowed,
                requested,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                if allowed.is_empty() {
                    format!("The lead is {current}, which is final.")
                } else {
                    format!(
                        "The lead is {current}; it can become {} next, not {requested}.",
                        allowed.join(", ")
                    )
                },
            ),
            ExchangeError::StatusHistoryFull { current } => ApiError::new(
                StatusCode::CONFLICT,
                "status_history_full",
                format!(
                    "The lead already has {} status changes, the most one lead may record; it stays {current}.",
                    crate::exchange::status::MAX_STATUS_CHANGES_PER_LEAD
                ),
            ),
            ExchangeError::AuctionNotFound { auction_id } => ApiError::not_found(format!(
                "Auction {auction_id} is unknown here or its post window has passed."
            )),
            ExchangeError::InvalidBidToken(msg) => {
                ApiError::unprocessable("invalid_bid_token", msg)
            }
            ExchangeError::BidExpired => ApiError::unprocessable(
                "bid_expired",
                "The bid token expired; ping again for a fresh bid.",
            ),
            ExchangeError::KeyReused => ApiError::unprocessable(
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request body.",
            ),
            ExchangeError::KeyInFlight => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_flight",
                "A post with this idempotency key is still being delivered; retry shortly.",
            ),
            ExchangeError::AlreadyPosted { auction_id } => ApiError::new(
                StatusCode::CONFLICT,
                "auction_already_posted",
                format!("Auction {auction_id} was already posted with another idempotency key."),
            ),
            ExchangeError::LeadMismatch(field_errors) => {
                let mut e = ApiError::unprocessable(
                    "lead_mismatch",
                    "The lead does not agree with its ping; see field_errors.",
                );
                e.field_errors = field_errors;
                e
            }
            ExchangeError::RulesUnmet(field_errors) => ApiError::validation(field_errors),
            ExchangeError::DeliveryNotRecorded => ApiError::internal(
                "The delivery could not be recorded, so no buyer was called for it. Retry the post.",
            ),
            ExchangeError::RecordUnreadable { auction_id, reason } => {
                tracing::error!(auction_id, reason, "auction record unreadable");
                ApiError::internal("The auction record could not be read.")
            }
            ExchangeError::Inconsistent(what) => {
                tracing::error!(what, "internal inconsistency");
                ApiError::internal("Gavel hit an internal error; the request was not recorded.")
            }
            ExchangeError::Store(e) => store_error(e),
        }
    }
}

/// The HTTP API as the runtime serves it.
pub struct Api;

impl crate::runtime::Service<crate::exchange::Exchange> for Api {
    fn handle(
        core: Rc<Core>,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + 'static
    {
        handle(core, req)
    }

    fn handle_ops(
        core: Rc<Core>,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + 'static
    {
        ops::handle(core, req)
    }
}

/// Starts Gavel serving this API: [`crate::runtime::start`] with [`Api`].
pub fn start(config: crate::config::Config) -> Result<crate::exchange::ServerHandle, String> {
    crate::runtime::start::<crate::exchange::Exchange, Api>(config)
}

/// [`start`] on `clock` (tests hand in a manual clock).
pub fn start_with_clock(
    config: crate::config::Config,
    clock: crate::types::Clock,
) -> Result<crate::exchange::ServerHandle, String> {
    crate::runtime::start_with_clock::<crate::exchange::Exchange, Api>(config, clock)
}

pub use routes::{Route, ROUTES};

/// Time a client has to send its whole request body once the head arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Entry point for every request on every core: finds the request's route in [`ROUTES`], runs
/// its handler, logs and counts the answer.
pub async fn handle(
    core: Rc<Core>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let rid = request_id();
    let method = req.method().clone();
    // A second handle on the request's URI (its bytes are shared, not copied), so that the path
    // parameters can borrow from it while the handler owns the request.
    let uri = req.uri().clone();
    let path = uri.path();
    core.stats().requests_total.fetch_add(1, Ordering::Relaxed);
    let found = routes::find(method.as_str(), path);
    let endpoint = match &found {
        routes::Found::Route(r, _) => {
            req.extensions_mut().insert(views::Matched(r));
            r.path
        }
        // Anything unrouted is labelled `other`, so a client cannot create label values at will.
        _ => "other",
    };
    let announced_body = crate::http::has_body(&req);
    let body_read = crate::http::BodyRead::default();
    req.extensions_mut().insert(body_read.clone());
    req.extensions_mut().insert(views::Received(started));
    // Every event logged while this request runs on this core carries its request id.
    let span = tracing::info_span!("request", request_id = %rid, core = core.id);
    let answer = async {
        match found {
            routes::Found::Route(r, params) => (r.handler)(&core, req, params, &rid).await,
            routes::Found::WrongMethod(allowed) => Err(routes::unrouted(path, allowed)),
            routes::Found::NoRoute => Err(routes::unrouted(path, &[])),
        }
    };
    let mut reply = match tracing::Instrument::instrument(answer, span.clone()).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e, &rid),
    };
    if announced_body && !body_read.done() {
        reply = reply.header(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let status = reply.status.as_u16();
    core.metrics.record_request(endpoint, status);
    if endpoint == "/v1/ping" && status == 200 {
        core.metrics
            .record_ping(started.elapsed().as_micros() as u64);
    }
    let _entered = span.enter();
    tracing::info!(
        request_id = %rid,
        core = core.id,
        method = %method,
        path = %logged(path),
        status = reply.status.as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(reply.into_response(&rid))
}

/// Most characters of a request's path the request log line keeps.
const MAX_LOGGED_PATH_CHARS: usize = 128;

/// `path` cut to [`MAX_LOGGED_PATH_CHARS`].
fn logged(path: &str) -> &str {
    path.char_indices()
        .nth(MAX_LOGGED_PATH_CHARS)
        .map_or(path, |(i, _)| &path[..i])
}

/// Refuses a body that declares a content type other than JSON.
pub fn require_json(req: &Request<Incoming>) -> Result<(), ApiError> {
    require_json_headers(req.headers())
}

/// [`require_json`] on the headers alone (public for the benchmark baseline, which has no hyper
/// `Incoming` body).
pub fn require_json_headers(headers: &http::HeaderMap) -> Result<(), ApiError> {
    match headers.get(http::header::CONTENT_TYPE) {
        None => Ok(()),
        Some(v) => {
            let v = v.to_str().unwrap_or("");
            let mime = v.split(';').next().unwrap_or("").trim();
            if mime.eq_ignore_ascii_case("application/json") {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Send the body as application/json.",
                ))
            }
        }
    }
}

/// Reads a JSON request body into a value (admin bodies, small and rare): not JSON is the
/// caller's malformed request (400).
pub async fn json_value(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let body = json_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::malformed_json("it holds a value JSON cannot represent")
        } else {
            ApiError::malformed_json(format_args!("line {} column {}", e.line(), e.column()))
        }
    })
}

/// Reads and bounds a JSON request body (CONTRACT §2: 64 KiB).
pub async fn json_body(req: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    require_json(&req)?;
    let body =
        crate::http::read_body(req, crate::config::MAX_BODY_BYTES, BODY_READ_TIMEOUT).await?;
    Ok(body.to_vec())
}
