//! Who may see or do what on each route: one row per route of [`super::ROUTES`], saying for each
//! kind of party (operator, seller, buyer) how much of the route is theirs. docs/openapi.yaml
//! mirrors each row as the operation's `x-gavel-parties` (tests/openapi.rs checks they agree),
//! and tests/visibility.rs asserts every cell against the running server.
//!
//! This module owns the table and [`admit`], the check every authenticated handler starts with:
//! the caller's party is judged before its scopes, so a party outside a route's view gets the
//! same `404` whatever its credential holds. It does not own what "own" means for one route
//! (which auction, client or endpoint is the caller's): the handler decides that, answering a
//! record outside the caller's view exactly as it answers a missing one.

use http::Request;

use crate::auth::Client;
use crate::config::Scope;
use crate::error::ApiError;
use crate::exchange::{Core, ExchangeError};
use crate::types::{Party, PartyKind};

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

/// One route's view rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// As in [`super::ROUTES`].
    pub method: &'static str,
    /// The path template, as in [`super::ROUTES`].
    pub path: &'static str,
    pub operator: Access,
    pub seller: Access,
    pub buyer: Access,
}

impl Rule {
    /// What `kind` of party has of this route.
    pub fn access(&self, kind: PartyKind) -> Access {
        match kind {
            PartyKind::Operator => self.operator,
            PartyKind::Seller => self.seller,
            PartyKind::Buyer => self.buyer,
        }
    }
}

const fn rule(
    method: &'static str,
    path: &'static str,
    operator: Access,
    seller: Access,
    buyer: Access,
) -> Rule {
    Rule {
        method,
        path,
        operator,
        seller,
        buyer,
    }
}

use Access::{Full, None as No, Own, Public, Refused};

// Architecture Invariant [party-views]: every route has one view rule per party here, applied by
// `admit` before a handler reads anything; what is not the caller's answers 404.
/// Every route's rule. A route added to [`super::ROUTES`] without a row here fails the unit test
/// below and tests/visibility.rs; until then [`admit`] treats it as the operator's alone.
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", Public, Public, Public),
    rule("GET", "/readyz", Public, Public, Public),
    // It names every tenant's buyers: a production operator's only (a sandbox operator gets
    // `403 production_only`).
    rule("GET", "/metrics", Full, No, No),
    rule("POST", "/v1/ping", Refused, Own, Refused),
    rule("POST", "/v1/post", Refused, Own, Refused),
    rule("POST", "/v1/leads", Refused, Own, Refused),
    // Today's rule, kept: the buyer that bought the lead reports on it.
    rule("POST", "/v1/leads/{lead_uuid}/status", No, No, Own),
    // Operator: the whole record. Seller: its own auctions, without buyers or bids. Buyer: its
    // own outcome in auctions it took part in.
    rule("GET", "/v1/auctions/{auction_id}", Full, Own, Own),
    // Operator: every series with its tenant's buyers. Seller: the exchange series, no buyer's.
    // Buyer: its own `buyer_ping_rtt`.
    rule("GET", "/v1/metrics/latency", Full, Own, Own),
    rule("POST", "/v1/dev/seed", Refused, Own, Refused),
    rule("POST", "/oauth/token", Public, Public, Public),
    rule("POST", "/v1/admin/clients", Full, Own, No),
    rule("GET", "/v1/admin/clients", Full, Own, No),
    rule("DELETE", "/v1/admin/clients/{client_id}", Full, Own, No),
    rule("GET", "/v1/admin/webhooks", Full, Own, No),
    rule(
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/enable",
        Full,
        Own,
        No,
    ),
    rule("GET", "/v1/admin/webhooks/events", Full, Own, No),
    rule("GET", "/v1/admin/webhooks/events/{event_id}", Full, Own, No),
    rule(
        "POST",
        "/v1/admin/webhooks/events/{event_id}/replay",
        Full,
        Own,
        No,
    ),
    rule("GET", "/v1/admin/buyers", Full, No, No),
    rule("POST", "/v1/admin/buyers", Full, No, No),
    rule("GET", "/v1/admin/buyers/{buyer_id}", Full, No, No),
    rule("PUT", "/v1/admin/buyers/{buyer_id}", Full, No, No),
    rule("PATCH", "/v1/admin/buyers/{buyer_id}", Full, No, No),
    rule("DELETE", "/v1/admin/buyers/{buyer_id}", Full, No, No),
    rule("POST", "/v1/admin/buyers/{buyer_id}/pause", Full, No, No),
    rule("POST", "/v1/admin/buyers/{buyer_id}/resume", Full, No, No),
    // Sellers are the operator's to manage; a seller does not even see the list of its peers.
    rule("GET", "/v1/admin/sellers", Full, No, No),
    rule("POST", "/v1/admin/sellers", Full, No, No),
    rule("GET", "/v1/admin/sellers/{seller_id}", Full, No, No),
    rule("PATCH", "/v1/admin/sellers/{seller_id}", Full, No, No),
    rule(
        "POST",
        "/v1/admin/sellers/{seller_id}/suspend",
        Full,
        No,
        No,
    ),
    rule("POST", "/v1/admin/sellers/{seller_id}/resume", Full, No, No),
    // Who changed what: the operator's record of every party's admin changes.
    rule("GET", "/v1/admin/audit", Full, No, No),
];

/// The rule of a route missing from [`RULES`]: the operator's alone, so a forgotten row never
/// opens a route to anyone else.
const OPERATOR_ONLY: Rule = rule("", "", Full, No, No);

/// The rule of `method` on the route template `path`.
pub fn rule_of(method: &str, path: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or(&OPERATOR_ONLY)
}

/// The route template a request matched, put in its extensions by [`super::handle`] (the same
/// match that labels its metrics), so that [`admit`] does not match it again.
#[derive(Debug, Clone, Copy)]
pub struct Matched(pub &'static str);

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

/// Authenticates the request, applies its route's rule to the caller's party, then checks that
/// the credential holds every one of `scopes`: `404` for a party outside the route's view,
/// `403 seller_only` for a party that may not take the action, `403 insufficient_scope` only
/// for a party the route is open to.
pub fn admit<B>(core: &Core, req: &Request<B>, scopes: &[Scope]) -> Result<Viewer, ApiError> {
    let path = match req.extensions().get::<Matched>() {
        Some(m) => m.0,
        None => super::endpoint_of(req.method(), req.uri().path()),
    };
    let rule = rule_of(req.method().as_str(), path);
    let client = core.identify(req.headers())?;
    let access = rule.access(client.party.kind());
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
    for &scope in scopes {
        client.require(scope)?;
    }
    Ok(Viewer { client, access })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_exactly_one_rule() {
        for (method, path) in super::super::ROUTES {
            let n = RULES
                .iter()
                .filter(|r| r.method == *method && r.path == *path)
                .count();
            assert_eq!(
                n, 1,
                "{method} {path} needs exactly one row in api::views::RULES"
            );
        }
        for r in RULES {
            assert!(
                super::super::ROUTES.contains(&(r.method, r.path)),
                "{} {} is in RULES but not routed",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn only_open_routes_are_public_and_public_for_everyone() {
        for r in RULES {
            let cells = [r.operator, r.seller, r.buyer];
            let public = cells.iter().filter(|a| **a == Access::Public).count();
            assert!(public == 0 || public == 3, "{} {}", r.method, r.path);
        }
        // Admin over buyers is the operator's alone.
        for r in RULES
            .iter()
            .filter(|r| r.path.starts_with("/v1/admin/buyers"))
        {
            assert_eq!(
                (r.seller, r.buyer),
                (Access::None, Access::None),
                "{}",
                r.path
            );
        }
    }
}
