//! Who may see or do what on each route: the words of the view rule each row of
//! [`super::routes::ROUTES`] states for each kind of party (operator, seller, buyer), and
//! [`admit`], the check every authenticated handler starts with. docs/openapi.yaml mirrors each
//! row's rule as the operation's `x-gavel-parties` (tests/openapi.rs checks they agree), and
//! tests/visibility.rs asserts every cell against the running server.
//!
//! [`admit`] judges the caller's party before its scopes, so a party outside a route's view gets
//! the same `404` whatever its credential holds. This module does not own what "own" means for one
//! route (which auction, client or endpoint is the caller's): the handler decides that, answering
//! a record outside the caller's view exactly as it answers a missing one.

use http::Request;

use super::routes::Route;
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::{Core, ExchangeError};
use crate::types::Party;

/// How much of a route one kind of party has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential needed; every caller gets the same answer.
    Public,
    /// Everything of the caller's tenant.
    Full,
    /// Only what is the caller's own (its auctions, its outcomes, its clients, its endpoints, its
    /// latency series); the route's documentation says what that is.
    Own,
    /// The action is not this party's to take (only sellers send leads): `403 seller_only`.
    /// Nothing about any record is disclosed by it.
    Refused,
    /// Outside the party's view: `404`, the answer for what does not exist.
    None,
}

impl Access {
    /// The word docs/openapi.yaml writes in `x-gavel-parties`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Full => "full",
            Access::Own => "own",
            Access::Refused => "refused",
            Access::None => "none",
        }
    }
}

/// The route a request matched, put in its extensions by [`super::handle`] (the same match that
/// labels its metrics), so that [`admit`] does not match it again.
#[derive(Debug, Clone, Copy)]
pub struct Matched(pub &'static Route);

/// When [`super::handle`] received a request, put in its extensions next to [`Matched`], so that a
/// handler recording a per-party latency (the ping's per-seller series) measures from the same
/// instant as the exchange-wide series.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub std::time::Instant);

/// An admitted caller and how much of the route it has ([`Access::Full`] or [`Access::Own`], or
/// [`Access::Public`] on an open route).
#[derive(Debug)]
pub struct Viewer {
    pub client: Client,
    pub access: Access,
}

impl Viewer {
    pub fn party(&self) -> &Party {
        &self.client.party
    }
}

/// Authenticates the request, applies its route's view rule to the caller's party, then checks
/// that the credential holds every scope the route names: `404` for a party outside the route's
/// view, `403 seller_only` for a party that may not take the action, `403 insufficient_scope`
/// only for a party the route is open to.
pub fn admit<B>(core: &Core, req: &Request<B>) -> Result<Viewer, ApiError> {
    let route = match req.extensions().get::<Matched>() {
        Some(m) => m.0,
        None => match super::routes::find(req.method().as_str(), req.uri().path()) {
            super::routes::Found::Route(r, _) => r,
            // Not a route: nothing to admit to (only a handler reached through the table calls
            // this, so this answers a caller that bypassed it).
            _ => return Err(crate::exchange::app::not_yours()),
        },
    };
    let client = core.identify(req.headers())?;
    let access = route.access(client.party.kind());
    match access {
        Access::None => return Err(crate::exchange::app::not_yours()),
        Access::Refused => {
            return Err(ExchangeError::NotASeller {
                party: client.party.kind().as_str(),
            }
            .into())
        }
        Access::Public | Access::Full | Access::Own => {}
    }
    for &scope in route.scopes {
        client.require(scope)?;
    }
    Ok(Viewer { client, access })
}
