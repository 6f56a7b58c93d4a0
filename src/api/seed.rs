//! `POST /v1/dev/seed` (CONTRACT §4.5, scope `dev`, sandbox tenant only): generates deterministic
//! synthetic leads ([`crate::sandbox::synth`]) and runs each through the one-call flow (ping, then
//! post to the winner) against the sandbox buyers, then answers with a summary and every lead's
//! ping fields and outcome.
//!
//! The leads run on the core that took the request (as a task of their own, so a caller that hangs
//! up stops nothing), at most [`SEED_CONCURRENCY`] at a time, under
//! the caller's own limits. A production token gets 403: seeding never reaches a production buyer.

use std::rc::Rc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::idempotency;
use super::leads::{self, Call};
use super::validate::{field_error, SmallBody, FIELD_INVALID_FORMAT, FIELD_OUT_OF_RANGE};
use crate::config::Tenant;
use crate::error::ApiError;
use crate::exchange::Core;
use crate::http::Reply;
use crate::model::Post;
use crate::runtime::admission::Admit;
use crate::sandbox::synth;

/// Most leads one seed request may generate.
pub const MAX_SEED_COUNT: usize = 1_000;
/// Leads of one seed request running at once.
pub const SEED_CONCURRENCY: usize = 32;

struct SeedRequest {
    count: usize,
    vertical: String,
    state: Option<String>,
    seed: Option<u64>,
}

/// The fields a seed request may have.
const SEED_FIELDS: [&str; 4] = ["count", "vertical", "state", "seed"];

impl SeedRequest {
    /// Reads and checks a seed request; each error names its field in the seller's terms.
    fn parse(body: &[u8]) -> Result<SeedRequest, ApiError> {
        let b = SmallBody::parse(body, &SEED_FIELDS)?;
        let count = SmallBody::required("count", b.whole("count", 1..=MAX_SEED_COUNT as u64)?)?;
        let expected = "a lowercase id of a-z, 0-9 and _ such as auto_insurance";
        let vertical = SmallBody::required("vertical", b.string("vertical", expected)?)?;
        if !super::validate::is_snake_id(vertical) {
            return Err(field_error(
                "vertical",
                FIELD_INVALID_FORMAT,
                expected,
                format!("vertical must be {expected}."),
            ));
        }
        let known: Vec<&str> = synth::STATES.iter().map(|(s, _)| *s).collect();
        let expected = format!("one of {}", known.join(", "));
        let state = b.string("state", &expected)?;
        if let Some(s) = state {
            if !synth::knows_state(s) {
                return Err(field_error(
                    "state",
                    FIELD_OUT_OF_RANGE,
                    &expected,
                    format!("state must be {expected} (the states seeding has ZIP data for)."),
                ));
            }
        }
        Ok(SeedRequest {
            count: count as usize,
            vertical: vertical.to_string(),
            state: state.map(str::to_string),
            seed: b.whole("seed", 0..=u64::MAX)?,
        })
    }
}

/// What one generated lead came to.
struct Outcome {
    ping: Value,
    auction_id: Option<String>,
    status: String,
    amount: Option<f64>,
    ms: f64,
}

pub async fn handle(core: &Rc<Core>, req: Request<Incoming>, rid: &str) -> Result<Reply, ApiError> {
    // Seeding sends leads, which only a seller does: anyone else is refused before any runs.
    let client = super::views::admit(core, &req)?.client;
    crate::exchange::sellers::refuse_suspended(core, &client)?;
    if client.tenant != Tenant::Sandbox {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sandbox_only",
            "Seeding runs only for sandbox tenants; use a gv_test_ credential.",
        ));
    }
    let body = super::json_body(req).await?;
    let r = SeedRequest::parse(&body)?;
    // Without a seed, pick one and report it, so the run can be repeated exactly.
    let seed = r
        .seed
        .unwrap_or_else(|| core.shared.clock.now_ms() ^ 0x9e37_79b9_7f4a_7c15);
    let bodies = synth::leads(
        seed,
        r.count,
        &r.vertical,
        r.state.as_deref(),
        core.shared.clock.now_ms(),
    );
    // The leads run as a task of their own on this core, so a caller that hangs up leaves no lead
    // half-delivered (see the cancellation rule in `runtime::handoff`).
    let rid_owned = rid.to_string();
    crate::runtime::handoff::run_on(core, core.id, Admit::New, move |c| async move {
        run_all(&c, seed, bodies, client, &rid_owned).await
    })
    .await?
}

/// Runs every generated lead, [`SEED_CONCURRENCY`] at a time, and answers with the summary.
async fn run_all(
    core: &Rc<Core>,
    seed: u64,
    bodies: Vec<Value>,
    client: crate::auth::Client,
    rid: &str,
) -> Result<Reply, ApiError> {
    let started = Instant::now();
    let mut pending = bodies.into_iter();
    let mut running = FuturesUnordered::new();
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(pending.len());
    let mut next = 0usize;
    loop {
        while running.len() < SEED_CONCURRENCY {
            let Some(body) = pending.next() else { break };
            running.push(run_one(core, next, body, client.clone(), rid));
            next += 1;
        }
        match running.next().await {
            Some(done) => outcomes.push(done?),
            None => break,
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &summary(seed, &outcomes, started.elapsed().as_secs_f64() * 1000.0),
    ))
}

/// Validates and runs one generated lead through the one-call flow.
async fn run_one(
    core: &Rc<Core>,
    index: usize,
    lead: Value,
    client: crate::auth::Client,
    rid: &str,
) -> Result<(usize, Outcome), ApiError> {
    let received = Instant::now();
    let mut ping_json = lead.clone();
    if let Some(obj) = ping_json.as_object_mut() {
        obj.remove("lead");
    }
    let mut body = serde_json::to_vec(&lead).expect("generated leads serialize");
    let fingerprint = idempotency::fingerprint(&body);
    let (ping, lead, lead_uuid_supplied) =
        super::validate::parse_lead_call(&mut body, core.shared.clock.now_ms()).map_err(|e| {
            tracing::error!(message = %e.message, "a generated lead failed validation");
            ApiError::internal("A generated lead failed validation.")
        })?;
    let call = Call {
        ping,
        post: Post {
            auction_id: String::new(),
            bid_token: String::new(),
            lead,
            lead_uuid_supplied,
        },
        client,
        idem: None,
        fingerprint,
        received,
    };
    // A lead that fails (a limit, a store error) is counted by its error code, not fatal.
    let reply = match leads::run(core, call, rid).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e, rid),
    };
    let answer: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let status = match (reply.status.as_u16(), answer["status"].as_str()) {
        (_, Some(s)) => s.to_string(),
        (code, None) => answer["error"]
            .as_str()
            .map_or_else(|| format!("http_{code}"), str::to_string),
    };
    Ok((
        index,
        Outcome {
            ping: ping_json,
            auction_id: answer["auction_id"].as_str().map(str::to_string),
            amount: (status == "sold")
                .then(|| answer["amount"].as_f64())
                .flatten(),
            status,
            ms: received.elapsed().as_secs_f64() * 1000.0,
        },
    ))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The CONTRACT §4.5 summary plus every lead's ping fields and outcome.
fn summary(seed: u64, outcomes: &[Outcome], total_ms: f64) -> Value {
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    let (sold, unsold, no_bid) = (count("sold"), count("unsold"), count("no_bid"));
    let amounts: Vec<f64> = outcomes.iter().filter_map(|o| o.amount).collect();
    let avg = if amounts.is_empty() {
        0.0
    } else {
        amounts.iter().sum::<f64>() / amounts.len() as f64
    };
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "seed": seed,
        "auctions": outcomes.len(),
        "won": sold + unsold + outcomes.iter().filter(|o| o.status == "buyer_unavailable").count(),
        "no_bid": no_bid,
        "sold": sold,
        "unsold": unsold,
        "errors": outcomes.len() - sold - unsold - no_bid,
        "avg_amount": round2(avg),
        "p50_ms": round2(percentile(&ms, 0.50)),
        "p99_ms": round2(percentile(&ms, 0.99)),
        "total_ms": round2(total_ms),
        "leads": outcomes.iter().map(|o| json!({
            "auction_id": o.auction_id,
            "status": o.status,
            "amount": o.amount,
            "ping": o.ping,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
