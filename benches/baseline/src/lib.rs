//! gavel-baseline: a deliberately straightforward tokio + axum + reqwest exchange that answers
//! Gavel's `POST /v1/ping` contract (CONTRACT §4.1) against the same buyers, for side-by-side
//! benchmarks only. It is never shipped.
//!
//! Everything that must be identical comes from Gavel's library: config, auth, ping validation,
//! eligibility, buyer ping body, buyer answer judging, clearing and bid tokens. What differs is the
//! runtime and I/O architecture: a work-stealing tokio runtime, one shared reqwest client (its own
//! keep-alive pool), `join_all` fan-out with per-buyer `tokio::time::timeout`, and auctions in a
//! `DashMap` in memory only. There is NO durability (nothing reaches a disk), no idempotency keys,
//! no client rate limits or concurrency caps, no webhooks and no metrics. Buyers' outbound
//! pings-per-second limits are honoured, because they decide how many buyers an auction pings and
//! so how much work both exchanges do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use dashmap::DashMap;
use futures::future::join_all;
use gavel::api::ping::{BidOut, PingOut};
use gavel::exchange::auction::WinningBid;

use gavel::api::validate::parse_ping;
use gavel::auction::clearing::Candidate;
use gavel::auction::token::BidKeys;
use gavel::auction::{fanout, parse_rfc3339_ms, NoBidReason, OutcomeKind};
use gavel::auth::Auth;
use gavel::buyers::Registry;
use gavel::config::{Config, Scope, Tenant, MAX_BODY_BYTES, MAX_WINDOW_MS};
use gavel::error::ApiError;
use gavel::model::{f64_to_cents, Cents, Ping};
use gavel::types::clock::system_now_ms as now_ms;

/// What a later post would need of a closed auction. Kept in memory only.
#[derive(Debug, Clone)]
pub struct AuctionEntry {
    pub ping: Ping,
    /// Bidders by rank: (registry index, buyer's own bid token, price in cents).
    pub ranked: Vec<(usize, String, Cents)>,
    pub payout_cents: Cents,
    pub valid_until_ms: u64,
    /// When the sweeper drops it (unix ms).
    pub evict_at_ms: u64,
}

/// Everything a request needs, shared by every worker thread.
pub struct App {
    pub config: Config,
    auth: Auth,
    registry: Registry,
    keys: BidKeys,
    http: reqwest::Client,
    /// Buyer ping URLs, by registry index (the registry keeps config order).
    ping_urls: Vec<String>,
    /// Auctions by (tenant, auction id).
    pub auctions: DashMap<(Tenant, String), AuctionEntry>,
}

impl App {
    /// Builds the state from a validated config; bid tokens are signed with a fresh random secret.
    pub fn new(config: Config) -> Result<Arc<App>, String> {
        let auth = Auth::from_config(&config.tokens, &config.limits)?;
        let registry = Registry::from_config(&config.buyers, config.limits.buyer_pings_per_s)
            .map_err(|e| e.to_string())?;
        let secret = BidKeys::generate_secret();
        let keys = BidKeys::from_secrets((1, &secret), None);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let ping_urls = config.buyers.iter().map(|b| b.ping_url.clone()).collect();
        Ok(Arc::new(App {
            config,
            auth,
            registry,
            keys,
            http,
            ping_urls,
            auctions: DashMap::new(),
        }))
    }
}

/// The routes: `POST /v1/ping`, `GET /healthz`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/ping", post(ping))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Serves `app` on `listener` until the future is dropped, with a sweeper that evicts auctions
/// past their retention.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let sweep = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now_ms();
            sweep.auctions.retain(|_, a| a.evict_at_ms > now);
        }
    });
    axum::serve(listener, router(app)).await
}

/// Binds `listen`, for callers that want the real port before serving.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await
}

fn request_id() -> HeaderValue {
    HeaderValue::from_str(&gavel::http::request_id()).expect("request ids are header-safe")
}

fn error_response(e: &ApiError, rid: HeaderValue) -> Response {
    let body = e.body(rid.to_str().unwrap_or(""));
    let mut resp = (e.status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    h.insert(HeaderName::from_static("x-request-id"), rid);
    resp
}

async fn ping(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let rid = request_id();
    match run_ping(&app, &headers, body).await {
        Ok(json) => {
            let mut resp = (StatusCode::OK, json).into_response();
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(HeaderName::from_static("x-request-id"), rid);
            resp
        }
        Err(e) => error_response(&e, rid),
    }
}

fn auction_exists(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "auction_exists",
        format!("An auction with id {id} already exists."),
    )
}

/// One buyer's answer, as the fan-out collected it.
struct Answer {
    buyer: usize,
    kind: OutcomeKind,
    amount_cents: Option<Cents>,
    valid_until_ms: Option<u64>,
    buyer_token: Option<String>,
    arrival: u32,
}

async fn run_ping(app: &App, headers: &HeaderMap, body: Bytes) -> Result<Vec<u8>, ApiError> {
    let client = app.auth.check(headers, Scope::Ping)?;
    gavel::api::require_json_headers(headers)?;
    let mut body = body.to_vec();
    let now = now_ms();
    let ping = parse_ping(&mut body, now)?;
    let cfg = &app.config.auction;
    let started = Instant::now();

    let auction_id = match &ping.auction_id {
        Some(id) => {
            if app.auctions.contains_key(&(client.tenant, id.clone())) {
                return Err(auction_exists(id));
            }
            id.clone()
        }
        None => gavel::auction::id::mint_owned_id(0, 1).expect("one core always owns its ids"),
    };
    let deadline_ms = ping
        .expires_at_ms
        .map_or(now + cfg.window_ms, |e| e.min(now + MAX_WINDOW_MS));
    let deadline = started + Duration::from_millis(deadline_ms.saturating_sub(now));

    let elig = app
        .registry
        .eligibility(&ping, client.tenant, cfg.max_buyers_per_auction);
    // Same outbound work as Gavel: a buyer over its pings-per-second limit is skipped.
    let to_ping: Vec<usize> = elig
        .eligible
        .iter()
        .copied()
        .filter(|&bi| {
            matches!(
                app.registry.buyers[bi].ping_rate.acquire(),
                gavel::limits::Decision::Allowed { .. }
            )
        })
        .collect();

    let buyer_body = fanout::buyer_ping_body(&auction_id, &ping, deadline_ms);
    let idem = format!("ping_{auction_id}");
    let arrivals = AtomicU32::new(0);
    let answers: Vec<Answer> = join_all(to_ping.iter().map(|&bi| {
        let buyer = &app.registry.buyers[bi];
        let mut req = app
            .http
            .post(&app.ping_urls[bi])
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &idem)
            .body(buyer_body.clone());
        if let Some((n, v)) = &buyer.auth {
            req = req.header(n.clone(), v.clone());
        }
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(buyer.ping_timeout);
        let limit = cfg.max_buyer_response_bytes;
        let auction_id = auction_id.as_str();
        let currency = cfg.currency.as_str();
        let arrivals = &arrivals;
        async move {
            let res = tokio::time::timeout(budget, async {
                let mut resp = req.send().await.ok()?;
                let status = resp.status();
                let mut buf = Vec::new();
                while let Some(chunk) = resp.chunk().await.ok()? {
                    if buf.len() + chunk.len() > limit {
                        return None;
                    }
                    buf.extend_from_slice(&chunk);
                }
                Some((status, buf))
            })
            .await;
            let arrival = arrivals.fetch_add(1, Ordering::Relaxed);
            let mut a = Answer {
                buyer: bi,
                kind: OutcomeKind::Error,
                amount_cents: None,
                valid_until_ms: None,
                buyer_token: None,
                arrival,
            };
            match res {
                Err(_) => a.kind = OutcomeKind::Timeout,
                Ok(None) => {}
                Ok(Some((status, buf))) => {
                    let (kind, bid, _, _) =
                        fanout::judge(auction_id, currency, status, &buf, now_ms());
                    a.kind = kind;
                    if let Some(b) = bid {
                        a.amount_cents = f64_to_cents(b.amount);
                        a.valid_until_ms = parse_rfc3339_ms(&b.valid_until);
                        a.buyer_token = Some(b.bid_token);
                    }
                }
            }
            a
        }
    }))
    .await;

    let bids: Vec<Candidate> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind == OutcomeKind::Bid)
        .map(|(slot, a)| Candidate {
            slot,
            amount_cents: a.amount_cents.unwrap_or(0),
            buyer_floor_cents: app.registry.buyers[a.buyer].floor_cents,
            arrival: a.arrival,
        })
        .collect();
    let closed = now_ms();
    let award = gavel::auction::award(
        &app.config,
        &app.keys,
        !elig.eligible.is_empty(),
        &bids,
        |slot| answers[slot].valid_until_ms,
        &auction_id,
        client.tenant,
        client.seller().unwrap_or(&client.name),
        closed,
    );
    let outcome: Result<(BidOut, AuctionEntry), NoBidReason> = award.map(|w| {
        let entry = AuctionEntry {
            ping: ping.clone(),
            ranked: w
                .ranked
                .iter()
                .map(|c| {
                    let a = &answers[c.slot];
                    (
                        a.buyer,
                        a.buyer_token.clone().unwrap_or_default(),
                        c.amount_cents,
                    )
                })
                .collect(),
            payout_cents: w.payout_cents,
            valid_until_ms: w.valid_until_ms,
            evict_at_ms: w.valid_until_ms + cfg.retention_ms,
        };
        (BidOut::of(&WinningBid::from(w), &cfg.currency), entry)
    });

    let (bid, reason, entry) = match outcome {
        Ok((bid, entry)) => (Some(bid), None, entry),
        Err(r) => (
            None,
            Some(r),
            AuctionEntry {
                ping,
                ranked: Vec::new(),
                payout_cents: 0,
                valid_until_ms: closed,
                evict_at_ms: closed + cfg.retention_ms,
            },
        ),
    };
    // A seller-chosen id that another request took meanwhile loses, as in Gavel.
    match app.auctions.entry((client.tenant, auction_id.clone())) {
        dashmap::Entry::Occupied(_) => return Err(auction_exists(&auction_id)),
        dashmap::Entry::Vacant(v) => {
            v.insert(entry);
        }
    }
    let out = PingOut {
        auction_id: &auction_id,
        status: if bid.is_some() { "won" } else { "no_bid" },
        bid,
        reject_reason: reason.map(|r| r.as_str()),
        reject_detail: reason.map(|r| r.detail()),
        buyers_pinged: to_ping.len(),
        bids_received: bids.len(),
        auction_ms: started.elapsed().as_millis() as u64,
    };
    Ok(serde_json::to_vec(&out).expect("answer serializes"))
}
