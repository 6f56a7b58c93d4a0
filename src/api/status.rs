//! `POST /v1/leads/{lead_uuid}/status` (CONTRACT §4.6, scope `status`): the buyer that bought a
//! lead reports what became of it. Only that buyer may report on it (anyone else gets 404, as if
//! the lead did not exist); the new status must follow the lead's current one ([`allowed`]); the
//! change is durable in the lead's history before the 202.
//!
//! Reports on one lead are decided on one core (the lead id's owner) and one at a time there, so
//! two reports can never both read the same history and lose one another's change. A change
//! queues the `lead.status_changed` webhook in the same commit as the history (see
//! [`super::events`]); a repeated report changes nothing and emits nothing.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::store_error;
use super::validate::{field_error, SmallBody, FIELD_OUT_OF_RANGE};
use crate::auction::{now_ms, rfc3339_ms};
use crate::auth::Client;
use crate::config::Scope;
use crate::error::ApiError;
use crate::http::Reply;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::on_core;
use crate::runtime::Core;
use crate::store::{Batch, LeadEvent};

/// Statuses a buyer may report.
pub const BUYER_STATUSES: [&str; 4] = ["qualified", "contacted", "sold", "returned"];
/// Longest `reason` accepted, in characters.
pub const MAX_REASON_CHARS: usize = 256;
/// Most status changes one lead's history keeps, Gavel's own `sold` included. A buyer could
/// otherwise cycle `qualified` ↔ `contacted` until the record outgrows what the store accepts,
/// after which every report would fail; past this limit a change is refused with
/// `409 status_history_full` and the history stays readable as it is.
pub const MAX_STATUS_CHANGES_PER_LEAD: usize = 32;

/// The statuses that may follow `current`. A lead starts at `sold` (Gavel's sale to the buyer);
/// the buyer then reports `qualified` and `contacted` as it works the lead, `sold` when it
/// converts it (after which only `returned` may follow), and `returned` only once it was sold or
/// contacted (a return needs a lead the buyer actually kept or worked). `returned` is final.
pub fn allowed(current: &str) -> &'static [&'static str] {
    match current {
        "sold" => &["qualified", "contacted", "returned"],
        "qualified" => &["contacted", "sold"],
        "contacted" => &["qualified", "sold", "returned"],
        _ => &[],
    }
}

struct StatusRequest {
    status: String,
    reason: Option<String>,
}

impl StatusRequest {
    /// Reads and checks a status report; each error names its field.
    fn parse(body: &[u8]) -> Result<StatusRequest, ApiError> {
        let b = SmallBody::parse(body, &["status", "reason"])?;
        let expected = format!("one of {}", BUYER_STATUSES.join(", "));
        let status = SmallBody::required("status", b.string("status", &expected)?)?;
        if !BUYER_STATUSES.contains(&status) {
            return Err(field_error(
                "status",
                FIELD_OUT_OF_RANGE,
                &expected,
                format!("status must be {expected}."),
            ));
        }
        let expected = format!("1 to {MAX_REASON_CHARS} characters");
        let reason = b.string("reason", &expected)?;
        if reason.is_some_and(|s| s.is_empty() || s.chars().count() > MAX_REASON_CHARS) {
            return Err(field_error(
                "reason",
                FIELD_OUT_OF_RANGE,
                &expected,
                format!("reason must be {expected}."),
            ));
        }
        Ok(StatusRequest {
            status: status.to_string(),
            reason: reason.map(str::to_string),
        })
    }
}

#[derive(Serialize)]
struct StatusOut<'a> {
    lead_uuid: &'a str,
    status: &'a str,
    previous_status: &'a str,
    at: String,
}

pub async fn handle(
    core: &Rc<Core>,
    req: Request<Incoming>,
    lead_uuid: String,
    rid: &str,
) -> Result<Reply, ApiError> {
    let client = core.authenticate(req.headers(), Scope::Status)?;
    if client.buyer.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_buyer",
            "Only a buyer's token may report lead status; this token belongs to no buyer.",
        ));
    }
    let body = super::json_body(req).await?;
    let r = StatusRequest::parse(&body)?;
    let owner = core.shared.owner_of(&lead_uuid);
    let rid_owned = rid.to_string();
    Ok(on_core(core, owner, rid, Admit::New, move |c| async move {
        match report(&c, &client, &lead_uuid, r).await {
            Ok(reply) => reply,
            Err(e) => Reply::error(&e, &rid_owned),
        }
    })
    .await)
}

/// Marks a lead busy on its core; dropping it frees the lead.
struct Busy<'a> {
    core: &'a Core,
    key: Vec<u8>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.core.in_flight.borrow_mut().remove(&self.key);
    }
}

async fn report(
    core: &Rc<Core>,
    client: &Client,
    lead_uuid: &str,
    r: StatusRequest,
) -> Result<Reply, ApiError> {
    let key = format!("lead_status\0{}\0{lead_uuid}", client.tenant.as_str()).into_bytes();
    if !core.in_flight.borrow_mut().insert(key.clone()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "status_in_flight",
            "Another status report for this lead is being recorded; retry shortly.",
        ));
    }
    let _busy = Busy { core, key };
    let not_found = || ApiError::not_found(format!("No lead {lead_uuid} bought by this buyer."));
    let mut lead = core
        .shared
        .store
        .get_lead(client.tenant.as_str(), lead_uuid)
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    if Some(&lead.buyer_id) != client.buyer.as_ref() {
        return Err(not_found());
    }
    let current = lead
        .history
        .last()
        .map_or("sold", |e| e.status.as_str())
        .to_string();
    if current == r.status {
        // Reporting the status the lead already has changes nothing.
        return Ok(accepted(
            lead_uuid,
            &r.status,
            &current,
            lead.history.last(),
        ));
    }
    // `sold` is where every lead starts (Gavel's sale); once the buyer itself reports `sold`
    // (it converted the lead) only a return can follow.
    let buyer_sold = current == "sold" && lead.history.len() > 1;
    let next = if buyer_sold {
        &["returned"][..]
    } else {
        allowed(&current)
    };
    if !next.contains(&r.status.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            if next.is_empty() {
                format!("The lead is {current}, which is final.")
            } else {
                format!(
                    "The lead is {current}; it can become {} next, not {}.",
                    next.join(", "),
                    r.status
                )
            },
        ));
    }
    if lead.history.len() >= MAX_STATUS_CHANGES_PER_LEAD {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "status_history_full",
            format!(
                "The lead already has {MAX_STATUS_CHANGES_PER_LEAD} status changes, the most one lead may record; it stays {current}."
            ),
        ));
    }
    let at_ms = now_ms();
    let mut batch = Batch::new();
    let emitted = crate::exchange::events::status_changed(
        core,
        &mut batch,
        client.tenant,
        &crate::exchange::events::StatusChange {
            lead_uuid,
            auction_id: &lead.auction_id,
            status: &r.status,
            previous_status: &current,
            reason: r.reason.as_deref(),
            at_ms,
        },
    )?;
    lead.history.push(LeadEvent {
        at_ms,
        status: r.status.clone(),
        reason: r.reason,
    });
    batch.put_lead(&lead).map_err(store_error)?;
    core.commit(batch).await.map_err(store_error)?;
    crate::exchange::events::committed(core, emitted);
    Ok(accepted(
        lead_uuid,
        &r.status,
        &current,
        lead.history.last(),
    ))
}

fn accepted(lead_uuid: &str, status: &str, previous: &str, at: Option<&LeadEvent>) -> Reply {
    Reply::json(
        StatusCode::ACCEPTED,
        &StatusOut {
            lead_uuid,
            status,
            previous_status: previous,
            at: rfc3339_ms(at.map_or(0, |e| e.at_ms)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_only_after_sold_or_contacted_and_final() {
        assert!(allowed("sold").contains(&"returned"));
        assert!(allowed("contacted").contains(&"returned"));
        assert!(!allowed("qualified").contains(&"returned"));
        assert!(allowed("returned").is_empty());
        for s in BUYER_STATUSES {
            assert!(
                !allowed(s).contains(&s),
                "{s} -> {s} is a no-op, not a transition"
            );
        }
    }
}
