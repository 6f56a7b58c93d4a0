//! The route table: every route the API listener answers, declared once ([`ROUTES`]) with its
//! method, path template (named parameters in braces), the scopes its credential must hold, the
//! core that decides it, what each kind of party has of it, and its handler.
//!
//! Everything else reads this table: the router ([`find`], built once on first use with
//! `matchit`), the request's metric label, [`super::views::admit`] (scopes and view rule),
//! docs/openapi.yaml through tests/openapi.rs (paths, `x-gavel-scope`, `x-gavel-parties`), and
//! the visibility matrix of tests/visibility.rs.
//!
//! This module owns matching a request to a route and answering 404/405 for one that matches
//! none; it does not own what a handler does, nor what "own" means for one route (see
//! [`super::views`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::views::Access::{self, Full, None as No, Own, Public, Refused};
use super::{auctions, audit, buyers, leads, oauth, ops, ping, post, seed, sellers, status};
use super::{views, webhooks};
use crate::error::ApiError;
use crate::exchange::Core;
use crate::http::Reply;
use crate::types::{PartyKind, Scope};

/// A handler's answer, boxed so that every route's handler has one type.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + 'a>>;

/// A route's handler: the core that received the request, the request, its path parameters and
/// its request id.
pub type Handler = for<'a> fn(&'a Rc<Core>, Request<Incoming>, Params<'a>, &'a str) -> Pending<'a>;

/// Which core decides a request of a route. The handler makes the hop (a request body is read on
/// the core that received it, so the hop cannot come before the handler); this says where it
/// goes, for the reader and for the checks in the tests below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The core that received the request (reads of state every core holds, or a question put to
    /// every core).
    Here,
    /// The owner of the named path parameter (`Shared::owner_of`).
    Param(&'static str),
    /// Named by the body: the idempotency key's core when there is a key, else the auction id's
    /// owner, else the receiving core (`api::ping::deciding_core`).
    Body,
    /// The caller's tenant's admin core (`api::oauth::admin_core`): one change of its clients at
    /// a time.
    Tenant,
    /// The core that keeps the party tables (`exchange::buyers::BUYERS_CORE`,
    /// `exchange::sellers::SELLERS_CORE`); reads are answered here.
    Parties,
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    /// Upper case, as on the wire.
    pub method: &'static str,
    /// The path template, as in docs/openapi.yaml: `{name}` is one non-empty segment.
    pub path: &'static str,
    /// Every scope the caller's credential must hold; empty on an open route.
    pub scopes: &'static [Scope],
    pub owner: Owner,
    pub operator: Access,
    pub seller: Access,
    pub buyer: Access,
    pub handler: Handler,
}

impl Route {
    /// What `kind` of party has of this route.
    pub fn access(&self, kind: PartyKind) -> Access {
        match kind {
            PartyKind::Operator => self.operator,
            PartyKind::Seller => self.seller,
            PartyKind::Buyer => self.buyer,
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A request's path parameters, by name.
pub struct Params<'a>(matchit::Params<'a, 'a>);

impl<'a> Params<'a> {
    /// The value of the parameter `name` of the matched template. [`find`] only matches a
    /// template with every parameter non-empty, so an empty answer means `name` is not one of the
    /// template's (a typo the unit tests below catch).
    pub fn get(&self, name: &str) -> &'a str {
        self.0.get(name).unwrap_or_default()
    }
}

/// How a request matched the table.
pub enum Found<'a> {
    Route(&'static Route, Params<'a>),
    /// The path is a route's, the method is not: the methods it has, for `Allow`.
    WrongMethod(&'static [&'static Route]),
    NoRoute,
}

/// The router over [`ROUTES`], built on first use: each path template maps to its routes (one
/// per method), in table order.
fn router() -> &'static matchit::Router<Vec<&'static Route>> {
    static ROUTER: OnceLock<matchit::Router<Vec<&'static Route>>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut by_path: Vec<(&'static str, Vec<&'static Route>)> = Vec::new();
        for r in ROUTES {
            match by_path.iter_mut().find(|(p, _)| *p == r.path) {
                Some((_, routes)) => routes.push(r),
                None => by_path.push((r.path, vec![r])),
            }
        }
        let mut router = matchit::Router::new();
        for (path, routes) in by_path {
            router
                .insert(path, routes)
                .unwrap_or_else(|e| panic!("route {path} does not fit the router: {e}"));
        }
        router
    })
}

/// The route `method` on `path` names.
pub fn find<'a>(method: &str, path: &'a str) -> Found<'a> {
    let Ok(m) = router().at(path) else {
        return Found::NoRoute;
    };
    // `matchit` lets a parameter between two slashes be empty (`/v1/leads//status`); a route's
    // parameter is one non-empty segment, so such a path names no route.
    if m.params.iter().any(|(_, v)| v.is_empty()) {
        return Found::NoRoute;
    }
    match m.value.iter().find(|r| r.method == method) {
        Some(r) => Found::Route(r, Params(m.params)),
        None => Found::WrongMethod(m.value),
    }
}

/// The answer to a request that matched no route: `404`, or `405` with `Allow` when the path is
/// a route's under other methods.
pub fn unrouted(path: &str, allowed: &[&'static Route]) -> ApiError {
    if allowed.is_empty() {
        return ApiError::not_found(format!("No route for {path}."));
    }
    let allow = allowed
        .iter()
        .map(|r| r.method)
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} accepts {allow}."),
    )
    .with_header(http::header::ALLOW, allow)
}

#[allow(clippy::too_many_arguments)]
const fn route(
    method: &'static str,
    path: &'static str,
    scopes: &'static [Scope],
    owner: Owner,
    [operator, seller, buyer]: [Access; 3],
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        scopes,
        owner,
        operator,
        seller,
        buyer,
        handler,
    }
}

use Owner::{Body, Here, Param, Parties, Tenant};
use Scope::{Admin, Dev, Ping, Post, Reports, Status};

// Architecture Invariant [request-id-and-spec]: every response carries X-Request-Id, and every
// route here is in docs/openapi.yaml and the other way round (tests/openapi.rs).
// Architecture Invariant [party-views]: every route has one view rule per party here (operator,
// seller, buyer), applied by `views::admit` before a handler reads anything; what is not the
// caller's answers 404.
/// Every route the server answers. A flat list, one row per route, so it is long on purpose.
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", &[], Here, [Public; 3], |_, _, _, _| {
        Box::pin(async { Ok(ops::healthz()) })
    }),
    route("GET", "/readyz", &[], Here, [Public; 3], |core, _, _, _| {
        Box::pin(async move { Ok(ops::readyz(core)) })
    }),
    // It names every tenant's buyers: a production operator's only (a sandbox operator gets
    // `403 production_only`).
    route(
        "GET",
        "/metrics",
        &[Reports],
        Here,
        [Full, No, No],
        |core, req, _, _| Box::pin(public_metrics(core, req)),
    ),
    route(
        "POST",
        "/v1/ping",
        &[Ping],
        Body,
        [Refused, Own, Refused],
        |core, req, _, rid| Box::pin(ping::handle(core, req, rid)),
    ),
    route(
        "POST",
        "/v1/post",
        &[Post],
        Body,
        [Refused, Own, Refused],
        |core, req, _, rid| Box::pin(post::handle(core, req, rid)),
    ),
    route(
        "POST",
        "/v1/leads",
        &[Ping, Post],
        Body,
        [Refused, Own, Refused],
        |core, req, _, rid| Box::pin(leads::handle(core, req, rid)),
    ),
    // Today's rule, kept: the buyer that bought the lead reports on it.
    route(
        "POST",
        "/v1/leads/{lead_uuid}/status",
        &[Status],
        Param("lead_uuid"),
        [No, No, Own],
        |core, req, p, rid| Box::pin(status::handle(core, req, p.get("lead_uuid").into(), rid)),
    ),
    // Operator: the whole record. Seller: its own auctions, without buyers or bids. Buyer: its
    // own outcome in auctions it took part in.
    route(
        "GET",
        "/v1/auctions/{auction_id}",
        &[Reports],
        Param("auction_id"),
        [Full, Own, Own],
        |core, req, p, rid| Box::pin(auctions::handle(core, req, p.get("auction_id").into(), rid)),
    ),
    // Operator: every series with its tenant's buyers. Seller: the exchange series, no buyer's.
    // Buyer: its own `buyer_ping_rtt`.
    route(
        "GET",
        "/v1/metrics/latency",
        &[Reports],
        Here,
        [Full, Own, Own],
        |core, req, _, _| Box::pin(latency(core, req)),
    ),
    route(
        "POST",
        "/v1/dev/seed",
        &[Dev],
        Here,
        [Refused, Own, Refused],
        |core, req, _, rid| Box::pin(seed::handle(core, req, rid)),
    ),
    route(
        "POST",
        "/oauth/token",
        &[],
        Here,
        [Public; 3],
        |core, req, _, _| Box::pin(oauth::token(core, req)),
    ),
    route(
        "POST",
        "/v1/admin/clients",
        &[Admin],
        Tenant,
        [Full, Own, No],
        |core, req, _, _| Box::pin(oauth::create(core, req)),
    ),
    route(
        "GET",
        "/v1/admin/clients",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, _, _| Box::pin(oauth::list(core, req)),
    ),
    route(
        "DELETE",
        "/v1/admin/clients/{client_id}",
        &[Admin],
        Tenant,
        [Full, Own, No],
        |core, req, p, _| Box::pin(oauth::revoke(core, req, p.get("client_id"))),
    ),
    route(
        "GET",
        "/v1/admin/webhooks",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, _, _| Box::pin(webhooks::list_endpoints(core, req)),
    ),
    route(
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/enable",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, p, _| Box::pin(webhooks::enable(core, req, p.get("endpoint_id"))),
    ),
    route(
        "GET",
        "/v1/admin/webhooks/events",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, _, _| Box::pin(webhooks::list_events(core, req)),
    ),
    route(
        "GET",
        "/v1/admin/webhooks/events/{event_id}",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, p, _| Box::pin(webhooks::get_event(core, req, p.get("event_id"))),
    ),
    route(
        "POST",
        "/v1/admin/webhooks/events/{event_id}/replay",
        &[Admin],
        Here,
        [Full, Own, No],
        |core, req, p, _| Box::pin(webhooks::replay(core, req, p.get("event_id"))),
    ),
    // Admin over buyers is the operator's alone.
    route(
        "GET",
        "/v1/admin/buyers",
        &[Admin],
        Here,
        [Full, No, No],
        |core, req, _, _| Box::pin(buyers::list(core, req)),
    ),
    route(
        "POST",
        "/v1/admin/buyers",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, _, _| Box::pin(buyers::create(core, req)),
    ),
    route(
        "GET",
        "/v1/admin/buyers/{buyer_id}",
        &[Admin],
        Here,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::get(core, req, p.get("buyer_id"))),
    ),
    route(
        "PUT",
        "/v1/admin/buyers/{buyer_id}",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::replace(core, req, p.get("buyer_id"))),
    ),
    route(
        "PATCH",
        "/v1/admin/buyers/{buyer_id}",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::patch(core, req, p.get("buyer_id"))),
    ),
    route(
        "DELETE",
        "/v1/admin/buyers/{buyer_id}",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::delete(core, req, p.get("buyer_id"))),
    ),
    route(
        "POST",
        "/v1/admin/buyers/{buyer_id}/pause",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::set_enabled(core, req, p.get("buyer_id"), false)),
    ),
    route(
        "POST",
        "/v1/admin/buyers/{buyer_id}/resume",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(buyers::set_enabled(core, req, p.get("buyer_id"), true)),
    ),
    // Sellers are the operator's to manage; a seller does not even see the list of its peers.
    route(
        "GET",
        "/v1/admin/sellers",
        &[Admin],
        Here,
        [Full, No, No],
        |core, req, _, _| Box::pin(sellers::list(core, req)),
    ),
    route(
        "POST",
        "/v1/admin/sellers",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, _, _| Box::pin(sellers::create(core, req)),
    ),
    route(
        "GET",
        "/v1/admin/sellers/{seller_id}",
        &[Admin],
        Here,
        [Full, No, No],
        |core, req, p, _| Box::pin(sellers::get(core, req, p.get("seller_id"))),
    ),
    route(
        "PATCH",
        "/v1/admin/sellers/{seller_id}",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(sellers::patch(core, req, p.get("seller_id"))),
    ),
    route(
        "POST",
        "/v1/admin/sellers/{seller_id}/suspend",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(sellers::set_enabled(core, req, p.get("seller_id"), false)),
    ),
    route(
        "POST",
        "/v1/admin/sellers/{seller_id}/resume",
        &[Admin],
        Parties,
        [Full, No, No],
        |core, req, p, _| Box::pin(sellers::set_enabled(core, req, p.get("seller_id"), true)),
    ),
    // Who changed what: the operator's record of every party's admin changes.
    route(
        "GET",
        "/v1/admin/audit",
        &[Admin],
        Here,
        [Full, No, No],
        |core, req, _, _| Box::pin(audit::list(core, req)),
    ),
];

/// `GET /metrics` on the API listener. It names every tenant's buyers, so there only a production
/// operator with `reports` sees it (sandbox tokens are handed around, one ships in the README);
/// scrapers use the operations listener (`[metrics] listen`).
async fn public_metrics(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let viewer = views::admit(core, &req)?;
    if viewer.client.tenant != crate::types::Tenant::Production {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "production_only",
            "/metrics covers every tenant's buyers; use a gv_live_ operator credential with the \
             reports scope, or the operations listener ([metrics] listen).",
        ));
    }
    Ok(ops::metrics(core).await)
}

/// `GET /v1/metrics/latency`: the caller's view of the latency series ([`ops::latency`]).
async fn latency(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let viewer = views::admit(core, &req)?;
    Ok(ops::latency(core, &viewer).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(method: &str, path: &str) -> Option<(&'static str, Vec<(String, String)>)> {
        match find(method, path) {
            Found::Route(r, p) => Some((
                r.path,
                p.0.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn every_route_is_found_under_its_own_template() {
        for r in ROUTES {
            // Each parameter replaced by a value that names it.
            let path: String = r
                .path
                .split('/')
                .map(|s| match s.strip_prefix('{') {
                    Some(name) => format!("v-{}", name.trim_end_matches('}')),
                    None => s.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let (template, params) = found(r.method, &path).unwrap_or_else(|| panic!("{r:?}"));
            assert_eq!(template, r.path, "{path}");
            for (k, v) in params {
                assert_eq!(v, format!("v-{k}"), "{r:?}");
            }
            let n = ROUTES
                .iter()
                .filter(|o| o.method == r.method && o.path == r.path)
                .count();
            assert_eq!(n, 1, "{r:?} is declared {n} times");
        }
    }

    #[test]
    fn parameters_are_whole_non_empty_segments() {
        let auction = |p: &str| found("GET", p).map(|(t, v)| (t, v[0].1.clone()));
        assert_eq!(
            auction("/v1/auctions/auc_1"),
            Some(("/v1/auctions/{auction_id}", "auc_1".to_string()))
        );
        assert!(auction("/v1/auctions/").is_none());
        assert!(auction("/v1/auctions/a/b").is_none());
        assert!(found("POST", "/v1/leads//status").is_none());
        assert!(found("POST", "/v1/leads/ld_1/other").is_none());
        assert!(found("POST", "/v1/leads/x/status").is_some());
        assert_eq!(found("POST", "/v1/leads").map(|f| f.0), Some("/v1/leads"));
        assert!(found("POST", "/v1/leads/x").is_none());
        // A static segment wins over a parameter in the same place.
        assert_eq!(
            found("GET", "/v1/admin/webhooks/events").map(|f| f.0),
            Some("/v1/admin/webhooks/events")
        );
    }

    #[test]
    fn another_method_is_405_with_the_methods_of_the_path() {
        let Found::WrongMethod(routes) = find("POST", "/v1/admin/buyers/b1") else {
            panic!("POST on a buyer is another method");
        };
        let e = unrouted("/v1/admin/buyers/b1", routes);
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(matches!(find("GET", "/v1/nope"), Found::NoRoute));
        assert_eq!(unrouted("/v1/nope", &[]).status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn owners_name_parameters_of_their_paths() {
        for r in ROUTES {
            if let Owner::Param(name) = r.owner {
                assert!(r.path.contains(&format!("{{{name}}}")), "{r:?}");
            }
        }
    }

    #[test]
    fn only_open_routes_are_public_and_public_for_everyone() {
        for r in ROUTES {
            let cells = [r.operator, r.seller, r.buyer];
            let public = cells.iter().filter(|a| **a == Access::Public).count();
            assert!(public == 0 || public == 3, "{r:?}");
            assert_eq!(public == 3, r.scopes.is_empty(), "{r:?}: open iff no scope");
        }
        for r in ROUTES
            .iter()
            .filter(|r| r.path.starts_with("/v1/admin/buyers"))
        {
            assert_eq!((r.seller, r.buyer), (Access::None, Access::None), "{r:?}");
        }
    }
}
