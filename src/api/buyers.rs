//! The buyer admin API (`/v1/admin/buyers`, scope `admin`): list, show, create, update (PUT a
//! whole definition or PATCH a JSON merge patch), pause, resume and delete the caller's tenant's
//! buyers while Gavel runs. HTTP in and out only: the change itself (checks, durability, every
//! core's snapshot, one change at a time) is [`crate::exchange::buyers`].
//!
//! A buyer is shown as its definition (the config file's field names, floor in USD) plus
//! `source` (`config` or `api`), `created_at` and `updated_at`; its auth header's value is never
//! shown. A definition sent here names no environment variable and no file of the server (`422`
//! naming the field, e.g. `auth_header.value_env`): secrets are sent as values and stored sealed. Buyer ids are scoped by tenant: another tenant's buyer does not exist for the caller
//! (404, never listed, and its id is free for the caller's own buyer). Every change
//! is handed to the buyers core as a task of its own, so a caller that hangs up does not stop it
//! half applied; the answer comes once every core holds the change (or `503` names the cores that
//! missed it, and repeating the call finishes it).

use std::rc::Rc;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::store_error;
use super::validate::{field_error, FIELD_INVALID_FORMAT};
use crate::auction::rfc3339_ms;
use crate::audit::Actor;
use crate::auth::Client;
use crate::buyers::table::BuyerRecord;
use crate::config::BuyerConfig;
use crate::error::ApiError;
use crate::exchange::buyers::{self, BuyerError, Change, BUYERS_CORE};
use crate::exchange::Core;
use crate::http::Reply;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::run_on;

/// How a refused or unfinished change is answered: one status and error code per kind.
fn api_error(e: BuyerError) -> ApiError {
    match e {
        BuyerError::NotFound { id } => {
            ApiError::not_found(format!("No buyer {id} in this tenant."))
        }
        BuyerError::Exists { id } => ApiError::new(
            StatusCode::CONFLICT,
            "buyer_exists",
            format!("This tenant has a buyer with id {id} already."),
        ),
        BuyerError::TooMany => ApiError::unprocessable(
            "too_many_buyers",
            format!(
                "A tenant holds at most {} buyers; delete one first.",
                crate::config::MAX_BUYERS_PER_TENANT
            ),
        ),
        BuyerError::Invalid { field, reason } => {
            let field = if field.is_empty() { "body" } else { &field };
            field_error(
                field,
                FIELD_INVALID_FORMAT,
                "a buyer definition as in docs/operations.md",
                format!("{field}: {reason}"),
            )
        }
        BuyerError::Store(e) => store_error(e),
        BuyerError::Internal(reason) => {
            tracing::error!(%reason, "buyer change failed");
            ApiError::internal("The buyer change could not be made; nothing changed.")
        }
        BuyerError::NotApplied { cores } => {
            let cores: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
            ApiError::overloaded(format!(
                "The change is saved, but core(s) {} were too busy to apply it; repeat the call to finish it.",
                cores.join(", ")
            ))
        }
    }
}

/// A buyer as the admin API shows it: the definition (money with two decimals) without its auth
/// header's value (or the environment variable it comes from) and its formats' header values,
/// plus where it came from and when it changed.
#[derive(serde::Serialize)]
pub struct BuyerOut {
    #[serde(flatten)]
    definition: BuyerConfig,
    source: &'static str,
    created_at: String,
    updated_at: String,
}

pub fn buyer_out(r: &BuyerRecord) -> BuyerOut {
    let mut definition = r.buyer.clone();
    // Neither the value nor where the server reads it from (a config file's `value_env`): the
    // server's environment is none of the API's business, and a definition sent back as shown
    // keeps both (`exchange::buyers::Change::Replace`).
    if let Some(h) = definition.auth_header.as_mut() {
        h.value = None;
        h.value_env = None;
    }
    // A format's constant headers carry the buyer's API keys as often as not: shown empty.
    for f in [&mut definition.ping_format, &mut definition.post_format]
        .into_iter()
        .flatten()
    {
        for (_, value) in f.headers.iter_mut() {
            value.clear();
        }
    }
    BuyerOut {
        definition,
        source: r.source.as_str(),
        created_at: rfc3339_ms(r.created_ms),
        updated_at: rfc3339_ms(r.updated_ms),
    }
}

/// Reads a JSON body: not JSON is the caller's malformed request (400).
async fn json(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let body = super::json_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::malformed_json("it holds a value JSON cannot represent")
        } else {
            ApiError::malformed_json(format_args!("line {} column {}", e.line(), e.column()))
        }
    })
}

/// Runs `change` on the buyers core for `admin` (its tenant, and who the audit log names) and
/// answers with the buyer's row.
async fn change(
    core: &Rc<Core>,
    admin: &Client,
    change: Change,
) -> Result<Option<BuyerRecord>, ApiError> {
    let (tenant, by) = (admin.tenant, Actor::of(admin));
    // Admin changes must not wait out an overload: never shed.
    run_on(core, BUYERS_CORE, Admit::Always, move |c| async move {
        buyers::apply(&c, Some(tenant), change, Some(by)).await
    })
    .await?
    .map_err(api_error)
}

fn one(record: Option<BuyerRecord>, status: StatusCode) -> Result<Reply, ApiError> {
    let record = record.ok_or_else(|| ApiError::internal("The change answered no buyer."))?;
    Ok(Reply::json(status, &buyer_out(&record)))
}

/// `GET /v1/admin/buyers`: the tenant's buyers, in the order auctions consider them.
pub async fn list(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let registry = core.registry();
    // A struct rather than `json!`, which would turn the floor's two decimals into a float.
    #[derive(serde::Serialize)]
    struct List {
        buyers: Vec<BuyerOut>,
    }
    let buyers = registry
        .records
        .iter()
        .filter(|r| r.buyer.tenant == admin.tenant)
        .map(buyer_out)
        .collect();
    Ok(Reply::json(StatusCode::OK, &List { buyers }))
}

/// `GET /v1/admin/buyers/{id}`.
pub async fn get(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let registry = core.registry();
    let record = registry
        .records
        .iter()
        .find(|r| r.is(admin.tenant, id))
        .ok_or_else(|| api_error(BuyerError::NotFound { id: id.to_string() }))?;
    Ok(Reply::json(StatusCode::OK, &buyer_out(record)))
}

/// `POST /v1/admin/buyers`: creates a buyer of the caller's tenant (`source = api`).
pub async fn create(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let value = json(req).await?;
    // Checked where the change is decided, off the cores (`exchange::buyers::apply`).
    let b = buyers::parse_definition(value, admin.tenant, None).map_err(api_error)?;
    let id = b.id.clone();
    let record = change(core, &admin, Change::Create(b)).await?;
    tracing::info!(buyer = %id, by = %admin.name, "buyer created");
    one(record, StatusCode::CREATED)
}

/// `PUT /v1/admin/buyers/{id}`: replaces the definition of one of the tenant's buyers.
pub async fn replace(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let value = json(req).await?;
    let b = buyers::parse_definition(value, admin.tenant, Some(id)).map_err(api_error)?;
    let record = change(core, &admin, Change::Replace(b)).await?;
    tracing::info!(buyer = %id, by = %admin.name, "buyer replaced");
    one(record, StatusCode::OK)
}

/// `PATCH /v1/admin/buyers/{id}`: a JSON merge patch over the buyer's definition.
pub async fn patch(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let patch = json(req).await?;
    if !patch.is_object() {
        return Err(api_error(BuyerError::Invalid {
            field: String::new(),
            reason: "a merge patch must be a JSON object".into(),
        }));
    }
    let change_ = Change::Patch {
        id: id.to_string(),
        patch,
    };
    let record = change(core, &admin, change_).await?;
    tracing::info!(buyer = %id, by = %admin.name, "buyer patched");
    one(record, StatusCode::OK)
}

/// `POST /v1/admin/buyers/{id}/pause` (`enabled = false`) and `/resume` (`enabled = true`).
pub async fn set_enabled(
    core: &Rc<Core>,
    req: Request<Incoming>,
    id: &str,
    enabled: bool,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let change_ = Change::SetEnabled {
        id: id.to_string(),
        enabled,
    };
    let record = change(core, &admin, change_).await?;
    tracing::info!(buyer = %id, enabled, by = %admin.name, "buyer paused or resumed");
    one(record, StatusCode::OK)
}

/// `DELETE /v1/admin/buyers/{id}`: answers with the buyer as it was.
pub async fn delete(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let change_ = Change::Delete { id: id.to_string() };
    let record = change(core, &admin, change_).await?;
    tracing::info!(buyer = %id, by = %admin.name, "buyer deleted");
    one(record, StatusCode::OK)
}
