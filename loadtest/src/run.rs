//! The generator: one OS thread per `--cores`, each running its own monoio runtime, its own
//! keep-alive connections ([`crate::http1::Client`]) and its own slice of the arrival schedule; nothing is shared between threads
//! until each hands back its [`Stats`] at the end.
//!
//! For every arrival a thread sleeps until the scheduled instant and *spawns* the request, so a
//! slow answer never delays the next send. At most `--connections` requests per thread are in
//! flight; an arrival that finds them all busy waits, and because latency counts from the
//! scheduled time, that wait is part of its latency (and is counted in `connection_waits`).
//! Sending stops at warm-up + duration; in-flight requests then get `--drain` to finish.
//! Request bodies are written before the run ([`Bodies`]): a ping or one-call lead clones a
//! prepared buffer, and a post writes its auction id and bid token around a prepared lead, so the
//! generator spends its cores on sending rather than on building JSON.
//!
//! Timer precision: monoio's timer ticks every millisecond and rounds a deadline up to the next
//! tick, so sleeping until the scheduled instant would start every request up to a millisecond
//! late and put that delay into every latency (a median of ~0.6 ms, large next to sub-millisecond
//! service times). Instead a thread wakes on the last tick at or before the scheduled instant and
//! sends then, and each latency counts from the earlier of its scheduled instant and its actual
//! send ([`origin`]): a request sent a little early counts from its real send, one sent late (a
//! busy generator) still counts from its schedule, so coordinated omission stays corrected. The offered rate is
//! unchanged; arrivals are only aligned to the millisecond ticks, as wrk2's are.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::channel::oneshot;
use gavel::buyers::pool::Target;
use gavel::config::Driver;
use hdrhistogram::Histogram;
use http::HeaderValue;
use serde::Deserialize;

use crate::cli::Scenario;
use crate::http1::{Answer, CallError, Client};
use crate::progress::{Publisher, Tick, TICK};
use crate::report::{latency_from, new_hist, Phase, Phases, Stats};
use crate::schedule::{thread_slice, Arrival};

/// Largest answer body read.
const MAX_BODY: usize = 256 * 1024;
/// A wait for a free connection longer than this counts in `connection_waits`.
const CONNECTION_WAIT_NOTE: Duration = Duration::from_millis(1);
/// monoio's timer resolution: deadlines are rounded up to the next tick.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Where a request's latency counts from: the earlier of its scheduled instant and its actual
/// send. A send the timer fired a little early counts from the send (so the latency is never
/// shortened); a late one counts from the schedule (so the lateness is never hidden).
pub fn origin(scheduled: Instant, sent: Instant) -> Instant {
    scheduled.min(sent)
}

/// What the generator threads need to know.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    pub token: Option<String>,
    pub scenario: Scenario,
    pub arrival: Arrival,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub cores: usize,
    pub seed: u64,
    /// Verticals and states rotate together so that every combination recurs.
    pub verticals: Vec<String>,
    pub states: Vec<String>,
    pub timeout: Duration,
    pub drain: Duration,
    /// Keep per-second interval histograms of the measured window (for `--hdr-log`).
    pub intervals: bool,
}

/// A zip3 inside each state the pings rotate through (the post's address must agree with it).
pub fn zip3_of(state: &str) -> Option<&'static str> {
    Some(match state {
        "TX" => "770",
        "CA" => "900",
        "FL" => "331",
        "NY" => "100",
        "IL" => "606",
        "OH" => "441",
        "GA" => "303",
        "PA" => "191",
        "AZ" => "850",
        "WA" => "981",
        _ => return None,
    })
}

/// The ping for arrival number `index`: a fixed lead shape with the state taken round-robin.
pub fn ping_body(vertical: &str, state: &str) -> Bytes {
    let zip3 = zip3_of(state).unwrap_or("770");
    Bytes::from(
        serde_json::json!({
            "vertical": vertical,
            "state": state,
            "zip3": zip3,
            "source": "google_ads",
            "tcpa_consent": true,
            "ai_quality_score": 0.84,
            "currently_insured": true,
            "vehicle_count": 2,
            "driver_age_band": "35-44"
        })
        .to_string(),
    )
}

/// The post for a won auction, agreeing with its ping's state and zip3.
pub fn post_body(auction_id: &str, bid_token: &str, state: &str) -> Bytes {
    post_body_with(auction_id, bid_token, &lead(state).to_string())
}

/// [`post_body`] around a lead already written as JSON, so a generator core writes each post in one
/// buffer instead of building a `serde_json::Value` tree per request. The keys come in the order
/// `serde_json` writes them (sorted), so the bytes are the same.
fn post_body_with(auction_id: &str, bid_token: &str, lead_json: &str) -> Bytes {
    let mut out = Vec::with_capacity(48 + auction_id.len() + bid_token.len() + lead_json.len());
    out.extend_from_slice(br#"{"auction_id":"#);
    serde_json::to_writer(&mut out, auction_id).expect("strings serialize into a Vec");
    out.extend_from_slice(br#","bid_token":"#);
    serde_json::to_writer(&mut out, bid_token).expect("strings serialize into a Vec");
    out.extend_from_slice(br#","lead":"#);
    out.extend_from_slice(lead_json.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// A one-call lead (`POST /v1/leads`): the ping's fields plus the lead.
pub fn lead_call_body(vertical: &str, state: &str) -> Bytes {
    let mut body: serde_json::Value =
        serde_json::from_slice(&ping_body(vertical, state)).expect("ping_body is JSON");
    body["lead"] = lead(state);
    Bytes::from(body.to_string())
}

/// The synthetic lead, agreeing with a ping from `state`.
fn lead(state: &str) -> serde_json::Value {
    let zip3 = zip3_of(state).unwrap_or("770");
    serde_json::json!({
                "first_name": "Load",
                "last_name": "Test",
                "email": "load.test@example.com",
                "phone": "+15125550182",
                "address": {"line1": "1 Load St", "city": "Testville", "state": state, "zip": format!("{zip3}01")},
                "tcpa": {
                    "consent_text": "By clicking submit, I consent to be contacted.",
                    "consent_timestamp": "2026-05-11T14:21:58Z",
                    "ip_address": "203.0.113.42"
                }
    })
}

/// The fields of a ping / post / error answer the report needs, borrowed from the answer's bytes
/// where the JSON allows it (no per-answer strings).
#[derive(Debug, Default, Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    auction_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    bid: Option<Bid<'a>>,
    #[serde(borrow)]
    reject_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Bid<'a> {
    #[serde(borrow)]
    bid_token: Cow<'a, str>,
}

/// Request bodies written once before the run: the pings and one-call leads of every
/// (vertical, state) pair, and the lead of every state, so that a generator core only clones a
/// reference-counted buffer per ping (and writes one buffer per post) instead of building JSON.
struct Bodies {
    /// Indexed like [`mix`]: vertical fastest, then state.
    pings: Vec<Bytes>,
    leads: Vec<Bytes>,
    /// The lead of each state, as JSON, in `cfg.states` order.
    post_leads: Vec<String>,
}

impl Bodies {
    fn new(cfg: &RunConfig) -> Bodies {
        let mut pings = Vec::new();
        let mut leads = Vec::new();
        for state in &cfg.states {
            for vertical in &cfg.verticals {
                pings.push(ping_body(vertical, state));
                leads.push(lead_call_body(vertical, state));
            }
        }
        let post_leads = cfg.states.iter().map(|s| lead(s).to_string()).collect();
        Bodies {
            pings,
            leads,
            post_leads,
        }
    }
}

/// Where arrival number `index` falls in [`Bodies`]: the (vertical, state) pair of [`mix`], and
/// the state alone.
fn mix_slots(cfg: &RunConfig, index: usize) -> (usize, usize) {
    let nv = cfg.verticals.len();
    let state = (index / nv) % cfg.states.len();
    (index % nv + nv * state, state)
}

/// A tiny single-thread semaphore: the per-thread connection limit.
struct Permits {
    free: Cell<usize>,
    waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
}

struct Permit(Rc<Permits>);

impl Permits {
    fn new(n: usize) -> Rc<Permits> {
        Rc::new(Permits {
            free: Cell::new(n),
            waiters: RefCell::new(VecDeque::new()),
        })
    }

    async fn acquire(self: &Rc<Self>) -> Permit {
        if self.free.get() > 0 {
            self.free.set(self.free.get() - 1);
            return Permit(self.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back(tx);
        // The sender is only dropped unsent when the runtime is torn down.
        let _ = rx.await;
        Permit(self.clone())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Hand the permit straight to the oldest live waiter, else return it.
        loop {
            let next = self.0.waiters.borrow_mut().pop_front();
            match next {
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    self.0.free.set(self.0.free.get() + 1);
                    return;
                }
            }
        }
    }
}

struct Ctx {
    cfg: RunConfig,
    client: Client,
    permits: Rc<Permits>,
    /// Request paths (the base URL's path, if any, then the route).
    ping: String,
    post: String,
    leads: String,
    healthz: String,
    bodies: Bodies,
    stats: RefCell<Stats>,
    in_flight: Cell<usize>,
    /// Instant of schedule offset zero (shared by every thread).
    start: Instant,
    /// Live progress: shared counters and the channel for [`live`](Ctx::live) snapshots.
    progress: Option<Publisher>,
    /// Primary-phase latencies (µs) since the last progress tick.
    live: RefCell<Histogram<u64>>,
    /// Sending and draining are over (stops the progress ticker).
    finished: Cell<bool>,
}

impl Ctx {
    /// A finished primary-phase request, for the progress line.
    fn live(&self, latency: Duration, outcome: &Outcome) {
        let Some(p) = &self.progress else { return };
        self.live
            .borrow_mut()
            .saturating_record((latency.as_micros() as u64).max(1));
        p.counters.done.fetch_add(1, Ordering::Relaxed);
        let ok = matches!(outcome, Ok(a) if a.status.is_success());
        if !ok {
            p.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every [`TICK`], hands this thread's primary-phase histogram to the progress thread.
async fn ticker(ctx: Rc<Ctx>) {
    let Some(p) = ctx.progress.clone() else {
        return;
    };
    while !ctx.finished.get() {
        monoio::time::sleep(TICK).await;
        let latency = std::mem::replace(&mut *ctx.live.borrow_mut(), new_hist());
        if p.ticks.send(Tick { latency }).is_err() {
            return;
        }
    }
}

/// Runs the whole schedule on `cfg.cores` threads of `driver` and returns the merged stats.
pub fn run(cfg: &RunConfig, driver: Driver) -> Result<Stats, String> {
    run_with_progress(cfg, driver, None)
}

/// [`run`], publishing live counters and histograms to `progress` (see [`crate::progress`]).
pub fn run_with_progress(
    cfg: &RunConfig,
    driver: Driver,
    progress: Option<Publisher>,
) -> Result<Stats, String> {
    run_with_hooks(cfg, driver, progress, || {})
}

/// [`run_with_progress`], calling `at_end` on this thread once every generator thread has
/// finished sending and draining but before any of them exits, so that a reading of the threads'
/// CPU time (`/proc/self/task`, [`crate::cpu`]) still finds them.
pub fn run_with_hooks(
    cfg: &RunConfig,
    driver: Driver,
    progress: Option<Publisher>,
    at_end: impl FnOnce(),
) -> Result<Stats, String> {
    let base = cfg.base_url.trim_end_matches('/');
    for path in ["/v1/ping", "/v1/post", "/v1/leads", "/healthz"] {
        Target::parse(&format!("{base}{path}"))?;
    }
    crate::tls::client_config(base)?;
    if let Some(t) = &cfg.token {
        HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| format!("--token: {e}"))?;
    }
    // Every thread counts from the same start, a little ahead so all of them are ready.
    let start = Instant::now() + Duration::from_millis(50);
    let started_at = SystemTime::now() + Duration::from_millis(50);
    // Each thread reports when its runtime has ended, then waits (no event loop left to block)
    // until `release` is dropped.
    let (finished_tx, finished_rx) = crossbeam_channel::bounded::<()>(cfg.cores);
    let (release, released) = crossbeam_channel::bounded::<()>(0);
    let mut threads = Vec::with_capacity(cfg.cores);
    for i in 0..cfg.cores {
        let cfg = cfg.clone();
        let progress = progress.clone();
        let (finished, released) = (finished_tx.clone(), released.clone());
        let t = std::thread::Builder::new()
            .name(format!("gavel-load-{i}"))
            .spawn(move || {
                let stats =
                    gavel::runtime::block_on(driver, 1024, || generator(cfg, i, start, progress))
                        .map_err(|e| format!("generator {i}: cannot start runtime: {e}"));
                let _ = finished.send(());
                drop(finished);
                let _ = released.recv();
                stats
            })
            .map_err(|e| format!("cannot spawn generator thread: {e}"))?;
        threads.push(t);
    }
    drop((progress, finished_tx, released));
    // Every thread sends once and then drops its sender (or drops it unwinding), so this ends.
    while finished_rx.recv().is_ok() {}
    at_end();
    drop(release);
    let mut total = Stats::default();
    for t in threads {
        let stats = t
            .join()
            .map_err(|_| "a generator thread panicked".to_string())??;
        total.merge(&stats);
    }
    total.started_at = Some(started_at);
    Ok(total)
}

async fn generator(
    cfg: RunConfig,
    thread: usize,
    start: Instant,
    progress: Option<Publisher>,
) -> Stats {
    let base = cfg.base_url.trim_end_matches('/').to_string();
    let target = |p: &str| Target::parse(&format!("{base}{p}")).expect("checked in run()");
    let bearer = cfg.token.as_ref().map(|t| format!("Bearer {t}"));
    let auth: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let healthz = target("/healthz");
    let client = Client::new(
        healthz.origin.clone(),
        healthz.host_header.to_str().expect("built from a URL"),
        &auth,
        crate::tls::client_config(&base).expect("checked in run()"),
    );
    let ctx = Rc::new(Ctx {
        client,
        permits: Permits::new(cfg.connections),
        ping: target("/v1/ping").path,
        post: target("/v1/post").path,
        leads: target("/v1/leads").path,
        healthz: healthz.path,
        bodies: Bodies::new(&cfg),
        stats: RefCell::new(Stats::default()),
        in_flight: Cell::new(0),
        start,
        progress,
        live: RefCell::new(new_hist()),
        finished: Cell::new(false),
        cfg,
    });
    if ctx.progress.is_some() {
        monoio::spawn(ticker(ctx.clone()));
    }
    let cfg = &ctx.cfg;
    let end = cfg.warmup + cfg.duration;
    let arrivals = thread_slice(cfg.arrival, cfg.rate, cfg.seed, thread, cfg.cores, end);
    for (n, offset) in arrivals.enumerate() {
        let at = start + offset;
        // The last timer tick at or before `at` (see the module docs).
        let wake = at.checked_sub(TIMER_TICK).unwrap_or(at);
        if wake > Instant::now() {
            monoio::time::sleep_until(wake.into()).await;
        }
        let index = thread + n * cfg.cores;
        ctx.in_flight.set(ctx.in_flight.get() + 1);
        monoio::spawn(one(ctx.clone(), at, offset < cfg.warmup, index));
    }
    let deadline = Instant::now() + cfg.drain;
    while ctx.in_flight.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    ctx.finished.set(true);
    let mut stats = std::mem::take(&mut *ctx.stats.borrow_mut());
    stats.unfinished = ctx.in_flight.get() as u64;
    stats
}

/// Outcome of one call: the answer, or a transport error kind.
type Outcome = Result<Answer, &'static str>;

async fn call<F: std::future::Future<Output = Result<Answer, CallError>>>(
    timeout: Duration,
    fut: F,
) -> Outcome {
    match monoio::time::timeout(timeout, fut).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(e.kind()),
        Err(_) => Err("timeout"),
    }
}

/// Records `outcome` in `phase`; `ok_outcome` names the answer's business outcome from its body.
fn record(phase: &mut Phase, latency: Duration, outcome: &Outcome, body: &Body) {
    match outcome {
        Ok(a) => {
            let status = a.status.as_u16();
            let business = if (200..300).contains(&status) {
                body.status.as_deref()
            } else {
                None
            };
            phase.record_answer(
                latency,
                status,
                business,
                body.reject_reason.as_deref(),
                body.error.as_deref(),
            );
        }
        Err(kind) => phase.record_transport_error(latency, kind),
    }
}

fn parse_body(outcome: &Outcome) -> Body<'_> {
    match outcome {
        Ok(a) => serde_json::from_slice(&a.body).unwrap_or_default(),
        Err(_) => Body::default(),
    }
}

fn with_phases<R>(ctx: &Ctx, warm: bool, f: impl FnOnce(&mut Phases) -> R) -> R {
    let mut s = ctx.stats.borrow_mut();
    f(if warm { &mut s.warmup } else { &mut s.measured })
}

/// The second of the measured window in which `done` falls, when interval histograms are kept
/// and the request is measured.
fn interval_of(ctx: &Ctx, warm: bool, done: Instant) -> Option<u64> {
    (ctx.cfg.intervals && !warm).then(|| {
        done.saturating_duration_since(ctx.start + ctx.cfg.warmup)
            .as_secs()
    })
}

/// The vertical and state of arrival number `index`: verticals cycle fastest, states next, so
/// every (vertical, state) pair recurs evenly.
pub fn mix(cfg: &RunConfig, index: usize) -> (&str, &str) {
    let v = &cfg.verticals[index % cfg.verticals.len()];
    let s = &cfg.states[(index / cfg.verticals.len()) % cfg.states.len()];
    (v, s)
}

/// Records the answer of a scheduled request that just finished in the phase `phase` picks: its
/// latency from `at` (taken before anything else), the live progress line, and (when kept) its
/// second's interval histogram. Returns the answer's body fields, parsed when `parse` is set.
fn finish_scheduled<'a>(
    ctx: &Ctx,
    at: Instant,
    warm: bool,
    out: &'a Outcome,
    parse: bool,
    phase: fn(&mut Phases) -> &mut Phase,
) -> Body<'a> {
    let done = Instant::now();
    let latency = latency_from(at, done);
    let parsed = if parse {
        parse_body(out)
    } else {
        Body::default()
    };
    let sec = interval_of(ctx, warm, done);
    ctx.live(latency, out);
    with_phases(ctx, warm, |p| {
        let p = phase(p);
        record(p, latency, out, &parsed);
        if let Some(sec) = sec {
            p.record_interval(sec, latency);
        }
    });
    parsed
}

/// One scheduled arrival, from its scheduled instant `at` to its last answer.
async fn one(ctx: Rc<Ctx>, scheduled: Instant, warm: bool, index: usize) {
    let cfg = &ctx.cfg;
    let at = origin(scheduled, Instant::now());
    {
        if let Some(p) = &ctx.progress {
            p.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = ctx.stats.borrow_mut();
        s.sent += 1;
        if !warm {
            let late = latency_from(scheduled, Instant::now());
            s.lateness
                .saturating_record((late.as_micros() as u64).max(1));
        }
    }
    let waited = Instant::now();
    let _permit = ctx.permits.acquire().await;
    if !warm && waited.elapsed() > CONNECTION_WAIT_NOTE {
        ctx.stats.borrow_mut().connection_waits += 1;
    }
    match cfg.scenario {
        Scenario::Healthz => {
            let out = call(
                cfg.timeout,
                ctx.client.call(true, &ctx.healthz, false, &[], MAX_BODY),
            )
            .await;
            finish_scheduled(&ctx, at, warm, &out, false, |p| &mut p.healthz);
        }
        Scenario::Leads => {
            let body = ctx.bodies.leads[mix_slots(cfg, index).0].clone();
            let out = call(
                cfg.timeout,
                ctx.client.call(false, &ctx.leads, true, &body, MAX_BODY),
            )
            .await;
            finish_scheduled(&ctx, at, warm, &out, true, |p| &mut p.leads);
        }
        Scenario::Ping | Scenario::PingPost => {
            let (pair, state) = mix_slots(cfg, index);
            let body = ctx.bodies.pings[pair].clone();
            let out = call(
                cfg.timeout,
                ctx.client.call(false, &ctx.ping, true, &body, MAX_BODY),
            )
            .await;
            let parsed = finish_scheduled(&ctx, at, warm, &out, true, |p| &mut p.ping);
            let won = matches!(&out, Ok(a) if a.status.as_u16() == 200)
                && parsed.status.as_deref() == Some("won");
            if cfg.scenario == Scenario::PingPost && won {
                if let (Some(auction), Some(bid)) = (&parsed.auction_id, &parsed.bid) {
                    let body =
                        post_body_with(auction, &bid.bid_token, &ctx.bodies.post_leads[state]);
                    let sent = Instant::now();
                    let out = call(
                        cfg.timeout,
                        ctx.client.call(false, &ctx.post, true, &body, MAX_BODY),
                    )
                    .await;
                    let done = Instant::now();
                    let parsed = parse_body(&out);
                    let sec = interval_of(&ctx, warm, done);
                    with_phases(&ctx, warm, |p| {
                        record(&mut p.post, latency_from(sent, done), &out, &parsed);
                        record(&mut p.e2e, latency_from(at, done), &out, &parsed);
                        if let Some(sec) = sec {
                            p.post.record_interval(sec, latency_from(sent, done));
                            p.e2e.record_interval(sec, latency_from(at, done));
                        }
                    });
                }
            }
        }
    }
    if !warm {
        let mut s = ctx.stats.borrow_mut();
        s.last_done = s
            .last_done
            .max(Instant::now().saturating_duration_since(ctx.start));
    }
    ctx.in_flight.set(ctx.in_flight.get() - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_agree_on_state_and_zip() {
        let ping: serde_json::Value =
            serde_json::from_slice(&ping_body("auto_insurance", "CA")).unwrap();
        assert_eq!(ping["state"], "CA");
        assert_eq!(ping["zip3"], "900");
        let post: serde_json::Value =
            serde_json::from_slice(&post_body("auc_1", "bid_x", "CA")).unwrap();
        assert_eq!(post["lead"]["address"]["state"], "CA");
        assert!(post["lead"]["address"]["zip"]
            .as_str()
            .unwrap()
            .starts_with("900"));
    }

    #[test]
    fn post_bodies_are_what_serde_json_writes() {
        let odd = "auc_\"q\"\\\n\u{1}é";
        let expected = serde_json::json!({
            "auction_id": odd, "bid_token": "mb_x_01", "lead": lead("TX"),
        })
        .to_string();
        assert_eq!(post_body(odd, "mb_x_01", "TX"), expected);
    }

    #[test]
    fn latency_origin_never_shortens_latency_nor_hides_lateness() {
        let t = Instant::now();
        let early = t - Duration::from_micros(700);
        let late = t + Duration::from_millis(5);
        // Sent early by the timer: counts from the real send, so an answer arriving before the
        // scheduled instant still has its full latency.
        assert_eq!(origin(t, early), early);
        let answered = early + Duration::from_micros(200);
        assert_eq!(
            latency_from(origin(t, early), answered),
            Duration::from_micros(200)
        );
        // Sent late: counts from the schedule, so the 5 ms delay is in the latency.
        assert_eq!(origin(t, late), t);
        assert_eq!(
            latency_from(origin(t, late), late + Duration::from_millis(1)),
            Duration::from_millis(6)
        );
    }

    #[test]
    fn every_vertical_and_state_pair_recurs() {
        let cfg = RunConfig {
            base_url: String::new(),
            token: None,
            scenario: Scenario::Ping,
            arrival: crate::schedule::Arrival::Fixed,
            rate: 1.0,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            connections: 1,
            cores: 1,
            seed: 1,
            verticals: vec!["auto_insurance".into(), "solar".into()],
            states: vec!["TX".into(), "CA".into(), "FL".into()],
            timeout: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            intervals: false,
        };
        let pairs: std::collections::HashSet<(&str, &str)> = (0..6).map(|i| mix(&cfg, i)).collect();
        assert_eq!(pairs.len(), 6);
        assert_eq!(mix(&cfg, 6), mix(&cfg, 0));
        // The bodies written before the run are those of each arrival's pair.
        let bodies = Bodies::new(&cfg);
        for i in 0..13 {
            let (v, s) = mix(&cfg, i);
            let (pair, state) = mix_slots(&cfg, i);
            assert_eq!(bodies.pings[pair], ping_body(v, s));
            assert_eq!(bodies.leads[pair], lead_call_body(v, s));
            assert_eq!(cfg.states[state], s);
        }
    }

    #[test]
    fn permits_bound_concurrency() {
        gavel::runtime::block_on(Driver::Legacy, 64, || async {
            let p = Permits::new(2);
            let a = p.acquire().await;
            let _b = p.acquire().await;
            assert_eq!(p.free.get(), 0);
            let p2 = p.clone();
            let waiter = monoio::spawn(async move {
                let _c = p2.acquire().await;
            });
            monoio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(p.waiters.borrow().len(), 1);
            drop(a);
            waiter.await;
            assert_eq!(p.free.get(), 1);
        })
        .unwrap();
    }
}
