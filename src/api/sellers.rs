//! The seller admin API (`/v1/admin/sellers`, scope `admin`, the operator's only): list, show,
//! create, update (a JSON merge patch of name, limits and `reveal_winner`), suspend and resume
//! the caller's tenant's sellers while Gavel runs. Any other party gets `404`, as for a route
//! that holds nothing for it. HTTP in and out only: the change itself (checks, durability with
//! its audit entry, every core's snapshot, one change at a time) is [`crate::exchange::sellers`].
//!
//! A seller is shown as its definition (the config file's field names; a limit left `null` takes
//! the `[limits]` default), the limits in force, what it holds now against them, `status`
//! (`active` or `suspended`), `source` (`config`, `api`, or `implicit` for the seller of a
//! credential that names no party) and when its row was created and changed. Another tenant's
//! seller does not exist for the caller. Every change is handed to the sellers core as a task of
//! its own, so a caller that hangs up does not stop it half applied; the answer comes once every
//! core holds the change (or `503` names the cores that missed it, and repeating the call
//! finishes it).

use std::rc::Rc;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::store_error;
use super::validate::{field_error, FIELD_INVALID_FORMAT};
use crate::auction::rfc3339_ms;
use crate::audit::Actor;
use crate::config::Tenant;
use crate::error::ApiError;
use crate::exchange::sellers::{self, Change, SellerError, SELLERS_CORE};
use crate::exchange::Core;
use crate::http::Reply;
use crate::parties::Seller;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::run_on;

/// How a refused or unfinished change is answered: one status and error code per kind.
pub(super) fn api_error(e: SellerError) -> ApiError {
    match e {
        SellerError::NotFound { id } => {
            ApiError::not_found(format!("No seller {id} in this tenant."))
        }
        SellerError::Exists { id, implicit } => ApiError::new(
            StatusCode::CONFLICT,
            "seller_exists",
            if implicit {
                format!(
                    "Seller {id} exists in this tenant as the implicit seller of a credential that \
                     names no party; change it with PATCH, suspend or resume."
                )
            } else {
                format!("A seller with id {id} already exists in this tenant.")
            },
        ),
        SellerError::TooMany => ApiError::unprocessable(
            "too_many_sellers",
            format!(
                "A tenant holds at most {} sellers.",
                crate::config::parties::MAX_SELLERS_PER_TENANT
            ),
        ),
        SellerError::Invalid { field, reason } => {
            let field = if field.is_empty() { "body" } else { &field };
            field_error(
                field,
                FIELD_INVALID_FORMAT,
                "a seller definition as in docs/operations.md",
                format!("{field}: {reason}"),
            )
        }
        SellerError::Store(e) => store_error(e),
        SellerError::NotApplied { cores } => {
            let cores: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
            ApiError::overloaded(format!(
                "The change is saved, but core(s) {} were too busy to apply it; repeat the call to finish it.",
                cores.join(", ")
            ))
        }
    }
}

/// The limits a seller works under (its own or the `[limits]` defaults).
#[derive(Serialize)]
struct LimitsOut {
    max_concurrent_auctions: u32,
    pings_per_s: f64,
    max_unposted_auctions: u32,
}

/// What a seller holds now against its limits, all cores together.
#[derive(Serialize)]
struct UsageOut {
    running_auctions: u32,
    unposted_auctions: u32,
}

/// A seller as the admin API shows it.
#[derive(Serialize)]
pub struct SellerOut {
    id: String,
    name: String,
    tenant: Tenant,
    status: &'static str,
    enabled: bool,
    reveal_winner: bool,
    max_concurrent_auctions: Option<u32>,
    pings_per_s: Option<f64>,
    max_unposted_auctions: Option<u32>,
    limits: LimitsOut,
    usage: UsageOut,
    source: &'static str,
    created_at: Option<String>,
    updated_at: Option<String>,
}

pub fn seller_out(s: &Seller) -> SellerOut {
    let c = &s.config;
    let l = &s.limits;
    let time = |ms: u64| (!s.implicit).then(|| rfc3339_ms(ms));
    SellerOut {
        id: c.id.clone(),
        name: c.name.clone(),
        tenant: c.tenant,
        status: if s.enabled() { "active" } else { "suspended" },
        enabled: c.enabled,
        reveal_winner: c.reveal_winner,
        max_concurrent_auctions: c.max_concurrent_auctions,
        pings_per_s: c.pings_per_s,
        max_unposted_auctions: c.max_unposted_auctions,
        limits: LimitsOut {
            max_concurrent_auctions: l.auctions.max(),
            pings_per_s: l.pings.limit(),
            max_unposted_auctions: l.unposted.max(),
        },
        usage: UsageOut {
            running_auctions: l.auctions.current(),
            unposted_auctions: l.unposted.current(),
        },
        source: if s.implicit {
            "implicit"
        } else {
            s.source.as_str()
        },
        created_at: time(s.created_ms),
        updated_at: time(s.updated_ms),
    }
}

/// Runs `change` on the sellers core for the caller and answers with the seller.
async fn change(
    core: &Rc<Core>,
    admin: &crate::auth::Client,
    change: Change,
    status: StatusCode,
) -> Result<Reply, ApiError> {
    let (tenant, by) = (admin.tenant, Actor::of(admin));
    // Admin changes must not wait out an overload: never shed.
    let seller: Option<Arc<Seller>> =
        run_on(core, SELLERS_CORE, Admit::Always, move |c| async move {
            sellers::apply(&c, Some(tenant), change, Some(&by)).await
        })
        .await?
        .map_err(api_error)?;
    let seller = seller.ok_or_else(|| ApiError::internal("The change answered no seller."))?;
    tracing::info!(seller = %seller.id(), by = %admin.name, "seller changed");
    Ok(Reply::json(status, &seller_out(&seller)))
}

/// `GET /v1/admin/sellers`: the tenant's sellers (implicit ones included), in id order.
pub async fn list(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let table = core.sellers();
    let sellers: Vec<SellerOut> = table
        .of_tenant(admin.tenant)
        .into_iter()
        .map(|s| seller_out(s))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "sellers": sellers }),
    ))
}

/// `GET /v1/admin/sellers/{seller_id}`.
pub async fn get(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let table = core.sellers();
    let seller = table
        .get(admin.tenant, id)
        .ok_or_else(|| api_error(SellerError::NotFound { id: id.to_string() }))?;
    Ok(Reply::json(StatusCode::OK, &seller_out(seller)))
}

/// `POST /v1/admin/sellers`: creates a seller of the caller's tenant (`source = api`).
pub async fn create(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let value = super::json_value(req).await?;
    let s = sellers::parse_definition(value, admin.tenant).map_err(api_error)?;
    change(core, &admin, Change::Create(s), StatusCode::CREATED).await
}

/// `PATCH /v1/admin/sellers/{seller_id}`: a JSON merge patch of name, limits and
/// `reveal_winner`.
pub async fn patch(core: &Rc<Core>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let patch = super::json_value(req).await?;
    let c = Change::Patch {
        id: id.to_string(),
        patch,
    };
    change(core, &admin, c, StatusCode::OK).await
}

/// `POST /v1/admin/sellers/{seller_id}/suspend` (`enabled = false`) and `/resume`
/// (`enabled = true`).
pub async fn set_enabled(
    core: &Rc<Core>,
    req: Request<Incoming>,
    id: &str,
    enabled: bool,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let c = Change::SetEnabled {
        id: id.to_string(),
        enabled,
    };
    change(core, &admin, c, StatusCode::OK).await
}
