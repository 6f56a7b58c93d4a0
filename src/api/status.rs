//! `POST /v1/leads/{lead_uuid}/status` (CONTRACT §4.6, scope `status`): the buyer that bought a
//! lead reports what became of it. This module reads the report and answers it; the rules and the
//! durable change belong to [`crate::exchange::status`]. Only that buyer may report on it (anyone
//! else gets 404, as if the lead did not exist); the change is durable in the lead's history
//! before the 202. The report runs on the lead id's owning core.

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::validate::{field_error, SmallBody, FIELD_OUT_OF_RANGE};
use crate::auction::rfc3339_ms;
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::status::{self, Reported};
use crate::exchange::Core;
use crate::http::Reply;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::on_core;

/// Longest `reason` accepted, in characters.
pub const MAX_REASON_CHARS: usize = 256;

struct StatusRequest {
    status: Reported,
    reason: Option<String>,
}

impl StatusRequest {
    /// Reads and checks a status report; each error names its field.
    fn parse(body: &[u8]) -> Result<StatusRequest, ApiError> {
        let b = SmallBody::parse(body, &["status", "reason"])?;
        let names: Vec<&str> = Reported::ALL.iter().map(|r| r.as_str()).collect();
        let expected = format!("one of {}", names.join(", "));
        let status = SmallBody::required("status", b.string("status", &expected)?)?;
        let Some(status) = Reported::parse(status) else {
            return Err(field_error(
                "status",
                FIELD_OUT_OF_RANGE,
                &expected,
                format!("status must be {expected}."),
            ));
        };
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
            status,
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
    // Only a buyer reports, on leads it bought: the operator and sellers get the 404 of a route
    // outside their view (`api::views`).
    let client = super::views::admit(core, &req)?.client;
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

/// Records the report through the exchange and answers 202 with the lead's status.
async fn report(
    core: &Rc<Core>,
    client: &Client,
    lead_uuid: &str,
    r: StatusRequest,
) -> Result<Reply, ApiError> {
    let buyer = client.buyer().unwrap_or_default();
    let done = status::report(core, client.tenant, buyer, lead_uuid, r.status, r.reason).await?;
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &StatusOut {
            lead_uuid,
            status: done.status,
            previous_status: done.previous_status,
            at: rfc3339_ms(done.at_ms),
        },
    ))
}
