//! The visibility matrix (issue #21): five parties — the operator, seller A, seller B, buyer X and
//! buyer Y, each with every scope it can hold — against every route of `gavel::api::ROUTES`,
//! through the real server under both drivers. Each cell states the status (and error code) the
//! party gets, and the rows that show records check which fields appear and which do not: a
//! seller's view of its auction names no buyer and no bid anywhere in its raw body, a buyer sees
//! only its own outcome, a seller manages only its own OAuth clients and webhook endpoints, and
//! buyer admin is the operator's alone.
//!
//! A route added to `ROUTES` without a row here fails the test by name: the matrix is walked in
//! `ROUTES` order and every route must find its row. To add a row, add a `Row` to `rows()`.

// Test threads are not event loops: sleeping in them is how tests wait.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use gavel::api::views::Access;
use gavel::config::{Driver, Scope, SellerConfig, Tenant, TokenConfig, WebhookConfig};
use gavel::types::PartyKind;
use serde_json::json;

const SELLER_A: &str = "gv_test_visibility_seller_a_000000000000000";
const SELLER_B: &str = "gv_test_visibility_seller_b_000000000000000";
const BUYER_X: &str = "gv_test_visibility_buyer_x_0000000000000000";
const BUYER_Y: &str = "gv_test_visibility_buyer_y_0000000000000000";

/// Buyer ids long and odd enough that finding one in a body is never a coincidence.
const X: &str = "xavier-bids";
const Y: &str = "yolanda-bids";
/// Served by the fleet but not configured: the buyer the operator creates, changes and deletes
/// through the admin API (`ROUTES` order: the delete runs before pause and resume, which act on Y).
const Z: &str = "zed-buyer";
/// A seller the operator creates during the matrix.
const NEW_SELLER: &str = "seller-new";
/// What X and Y bid on every lead: X always wins.
const X_BID: f64 = 31.37;
const Y_BID: f64 = 23.19;

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum P {
    Operator,
    SellerA,
    SellerB,
    BuyerX,
    BuyerY,
}

const EVERYONE: [P; 5] = [P::Operator, P::SellerA, P::SellerB, P::BuyerX, P::BuyerY];

impl P {
    fn kind(self) -> PartyKind {
        match self {
            P::Operator => PartyKind::Operator,
            P::SellerA | P::SellerB => PartyKind::Seller,
            P::BuyerX | P::BuyerY => PartyKind::Buyer,
        }
    }

    fn token(self) -> &'static str {
        match self {
            P::Operator => OPERATOR,
            P::SellerA => SELLER_A,
            P::SellerB => SELLER_B,
            P::BuyerX => BUYER_X,
            P::BuyerY => BUYER_Y,
        }
    }
}

/// What a cell expects: a status, and for an error the error code.
#[derive(Debug, Clone, Copy)]
struct Want(u16, &'static str);

const OK: Want = Want(200, "");
const CREATED: Want = Want(201, "");
const ACCEPTED: Want = Want(202, "");
const NOT_FOUND: Want = Want(404, "not_found");
const SELLER_ONLY: Want = Want(403, "seller_only");

type Call = Box<dyn Fn(&Ctx, P) -> Resp>;
type Check = Box<dyn Fn(&Ctx, P, &Resp)>;

/// One route's row: the cells in the order they run (state-changing rows run the refused cells
/// before the one that changes anything), the request each party sends, and the field checks of
/// an answer that succeeded.
struct Row {
    method: &'static str,
    path: &'static str,
    cells: Vec<(P, Want)>,
    call: Call,
    check: Check,
}

fn row(method: &'static str, path: &'static str, cells: Vec<(P, Want)>, call: Call) -> Row {
    Row {
        method,
        path,
        cells,
        call,
        check: Box::new(|_, _, _| {}),
    }
}

impl Row {
    fn checked(mut self, check: Check) -> Row {
        self.check = check;
        self
    }
}

/// What the setup made, for the rows to use.
struct Ctx {
    env: Env,
    rx: Receiver,
    /// Seller A's auction, sold to X while Y was paused (Y took no part).
    auction_a: String,
    lead_a: String,
    /// Seller B's auction (B reveals the winner), X won, Y bid.
    auction_b: String,
    /// The `lead.posted` event of seller A's sale.
    event_a: String,
    /// An OAuth client the operator registered for seller B, with its secret.
    client_b: (String, String),
}

impl Ctx {
    fn send(&self, method: &str, path: &str, p: Option<P>, body: Option<&str>) -> Resp {
        call(&self.env.base, method, path, p.map(P::token), body, &[])
    }
}

fn seller_token(client: &str, seller: &str, token: &str) -> TokenConfig {
    TokenConfig {
        client: client.into(),
        tenant: Tenant::Sandbox,
        sha256: gavel::auth::sha256_hex(token),
        scopes: Scope::ALL.iter().copied().collect(),
        buyer: None,
        seller: Some(seller.into()),
        operator: false,
        requests_per_s: None,
    }
}

fn seller(id: &str, reveal_winner: bool) -> SellerConfig {
    SellerConfig {
        id: id.into(),
        name: format!("Seller {id}"),
        tenant: Tenant::Sandbox,
        max_concurrent_auctions: None,
        pings_per_s: None,
        max_unposted_auctions: None,
        reveal_winner,
        enabled: true,
    }
}

fn hook(id: &str, url: String, seller: Option<&str>) -> WebhookConfig {
    WebhookConfig {
        id: id.into(),
        tenant: Tenant::Sandbox,
        seller: seller.map(str::to_string),
        url,
        secrets: vec![gavel::webhooks::Secret::generate()],
        secrets_env: None,
        events: vec!["lead.posted".into()],
        enabled: true,
    }
}

/// Pings then posts as `p`; the post's answer.
fn sell(ctx: &Ctx, p: P) -> (String, Resp) {
    let ping = ctx.send("POST", "/v1/ping", Some(p), Some(&ping_body().to_string()));
    assert_eq!(ping.status, 200, "{p:?} ping: {}", ping.text);
    assert_eq!(ping.json["status"], "won", "{p:?} ping: {}", ping.text);
    let id = ping.json["auction_id"].as_str().unwrap().to_string();
    let token = ping.json["bid"]["bid_token"].as_str().unwrap();
    let post = ctx.send(
        "POST",
        "/v1/post",
        Some(p),
        Some(&post_body(&id, token).to_string()),
    );
    (id, post)
}

fn lead_call_body() -> String {
    let mut body = ping_body();
    body["lead"] = post_body("", "")["lead"].clone();
    body.to_string()
}

fn buyer_definition(ctx: &Ctx) -> String {
    json!({
        "id": Z,
        "ping_url": ctx.env.fleet.ping_url(Z),
        "post_url": ctx.env.fleet.post_url(Z),
        "floor": 1.50,
    })
    .to_string()
}

/// The `endpoint_id` of every delivery in a webhook answer.
fn endpoints_of(r: &Resp) -> BTreeSet<String> {
    r.json["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries in {}", r.text))
        .iter()
        .map(|d| d["endpoint_id"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Asserts that `text` names no buyer and no bid.
fn no_buyer_nor_bid(what: &str, text: &str, buyers: &[&str]) {
    let bids = [X_BID.to_string(), Y_BID.to_string()];
    for needle in buyers
        .iter()
        .copied()
        .chain(bids.iter().map(String::as_str))
    {
        assert!(!text.contains(needle), "{what} names {needle}: {text}");
    }
}

fn rows() -> Vec<Row> {
    use P::*;
    let every = |want: Want| EVERYONE.iter().map(|&p| (p, want)).collect::<Vec<_>>();
    let operator_only = |op_want: Want| {
        // The refused parties go first, so that a change the operator makes comes last.
        vec![
            (SellerA, NOT_FOUND),
            (SellerB, NOT_FOUND),
            (BuyerX, NOT_FOUND),
            (BuyerY, NOT_FOUND),
            (Operator, op_want),
        ]
    };
    let sellers_only = |seller_want: Want| {
        vec![
            (Operator, SELLER_ONLY),
            (BuyerX, SELLER_ONLY),
            (BuyerY, SELLER_ONLY),
            (SellerA, seller_want),
            (SellerB, seller_want),
        ]
    };
    vec![
        row(
            "GET",
            "/healthz",
            every(OK),
            Box::new(|c, _| c.send("GET", "/healthz", None, None)),
        ),
        row(
            "GET",
            "/readyz",
            every(OK),
            Box::new(|c, _| c.send("GET", "/readyz", None, None)),
        ),
        row(
            "GET",
            "/metrics",
            vec![
                (Operator, Want(403, "production_only")),
                (SellerA, NOT_FOUND),
                (SellerB, NOT_FOUND),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| c.send("GET", "/metrics", Some(p), None)),
        ),
        row(
            "POST",
            "/v1/ping",
            sellers_only(OK),
            Box::new(|c, p| c.send("POST", "/v1/ping", Some(p), Some(&ping_body().to_string()))),
        ),
        row(
            "POST",
            "/v1/post",
            sellers_only(CREATED),
            Box::new(|c, p| match p {
                SellerA | SellerB => sell(c, p).1,
                // Refused before the body is read: an empty object is as good as any.
                _ => c.send("POST", "/v1/post", Some(p), Some("{}")),
            }),
        ),
        row(
            "POST",
            "/v1/leads",
            sellers_only(CREATED),
            Box::new(|c, p| c.send("POST", "/v1/leads", Some(p), Some(&lead_call_body()))),
        ),
        row(
            "POST",
            "/v1/leads/{lead_uuid}/status",
            vec![
                (Operator, NOT_FOUND),
                (SellerA, NOT_FOUND),
                (SellerB, NOT_FOUND),
                (BuyerY, NOT_FOUND),
                (BuyerX, ACCEPTED),
            ],
            Box::new(|c, p| {
                let path = format!("/v1/leads/{}/status", c.lead_a);
                c.send("POST", &path, Some(p), Some(r#"{"status":"contacted"}"#))
            }),
        ),
        row(
            "GET",
            "/v1/auctions/{auction_id}",
            vec![
                (Operator, OK),
                (SellerA, OK),
                (SellerB, NOT_FOUND),
                (BuyerX, OK),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| {
                c.send(
                    "GET",
                    &format!("/v1/auctions/{}", c.auction_a),
                    Some(p),
                    None,
                )
            }),
        )
        .checked(Box::new(|c, p, r| {
            let j = &r.json;
            match p {
                Operator => {
                    assert_eq!(j["seller_id"], "seller-a", "{}", r.text);
                    let ids: Vec<&str> = j["buyers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| b["buyer_id"].as_str().unwrap())
                        .collect();
                    assert_eq!(ids, [X], "Y was paused: {}", r.text);
                    assert_eq!(j["winner"]["buyer_id"], X, "{}", r.text);
                    assert_eq!(j["post"]["attempts"][0]["buyer_id"], X, "{}", r.text);
                }
                SellerA => {
                    no_buyer_nor_bid("seller A's view", &r.text, &[X, Y]);
                    for hidden in ["buyers", "winner", "seller_id"] {
                        assert!(j.get(hidden).is_none(), "{hidden} in {}", r.text);
                    }
                    assert!(j["post"].get("attempts").is_none(), "{}", r.text);
                    assert!(j["post"].get("buyer_lead_id").is_none(), "{}", r.text);
                    assert_eq!(j["status"], "won", "{}", r.text);
                    assert_eq!(j["post"]["status"], "sold", "{}", r.text);
                    assert_eq!(j["post"]["lead_uuid"], c.lead_a.as_str(), "{}", r.text);
                    assert!(j["payout"].as_f64().is_some(), "{}", r.text);
                    assert!(j["ping"]["vertical"].is_string(), "{}", r.text);
                }
                BuyerX => {
                    assert_eq!(j["buyer_id"], X, "{}", r.text);
                    assert_eq!(j["amount"].as_f64(), Some(X_BID), "{}", r.text);
                    assert_eq!((&j["won"], &j["bought"]), (&json!(true), &json!(true)));
                    assert_eq!(j["lead_uuid"], c.lead_a.as_str(), "{}", r.text);
                    for hidden in ["buyers", "winner", "seller_id", "ping", "payout", "post"] {
                        assert!(j.get(hidden).is_none(), "{hidden} in {}", r.text);
                    }
                    assert!(!r.text.contains("seller-a"), "{}", r.text);
                }
                _ => unreachable!(),
            }
        })),
        row(
            "GET",
            "/v1/metrics/latency",
            every(OK),
            Box::new(|c, p| c.send("GET", "/v1/metrics/latency", Some(p), None)),
        )
        .checked(Box::new(|_, p, r| {
            let series = r.json["series"].as_array().unwrap();
            let buyers: BTreeSet<&str> = series
                .iter()
                .filter(|s| s["name"] == "buyer_ping_rtt")
                .map(|s| s["labels"]["buyer"].as_str().unwrap())
                .collect();
            // Exchange-wide series carry no labels; per-seller ones carry `seller`.
            let exchange = series
                .iter()
                .any(|s| s["name"] == "ping_duration" && s["labels"] == json!({}));
            let sellers: BTreeSet<&str> = series
                .iter()
                .filter_map(|s| s["labels"]["seller"].as_str())
                .collect();
            match p {
                Operator => {
                    assert!(exchange, "{p:?}");
                    assert_eq!(buyers, [X, Y].into_iter().collect(), "{}", r.text);
                    let both = ["seller-a", "seller-b"].into_iter().collect();
                    assert_eq!(sellers, both, "{}", r.text);
                }
                SellerA | SellerB => {
                    let (me, other) = if p == SellerA {
                        ("seller-a", "seller-b")
                    } else {
                        ("seller-b", "seller-a")
                    };
                    // Only its own two series: its pings and its posts (both sold one in setup),
                    // no exchange-wide figure, no other seller's, no buyer's.
                    let names: Vec<&str> =
                        series.iter().map(|s| s["name"].as_str().unwrap()).collect();
                    assert_eq!(
                        names,
                        ["ping_duration", "post_duration"],
                        "{p:?}: {}",
                        r.text
                    );
                    for s in series {
                        assert_eq!(s["labels"]["seller"], me, "{p:?}: {}", r.text);
                        assert!(s["labels"].get("buyer").is_none(), "{p:?}: {}", r.text);
                        assert!(
                            s["since_start"]["count"].as_u64().unwrap() >= 1,
                            "{}",
                            r.text
                        );
                    }
                    assert!(!exchange, "{p:?}: {}", r.text);
                    assert!(!r.text.contains(other), "{p:?} sees {other}: {}", r.text);
                    assert!(!r.text.contains("\"buyer\""), "{p:?}: {}", r.text);
                    no_buyer_nor_bid("a seller's latency report", &r.text, &[X, Y]);
                }
                BuyerX | BuyerY => {
                    let me = if p == BuyerX { X } else { Y };
                    assert_eq!(series.len(), 1, "{p:?}: only its own series");
                    assert_eq!(buyers, [me].into_iter().collect(), "{p:?}");
                }
            }
        })),
        row(
            "POST",
            "/v1/dev/seed",
            sellers_only(OK),
            Box::new(|c, p| {
                let body = r#"{"count":2,"vertical":"auto_insurance","seed":7}"#;
                c.send("POST", "/v1/dev/seed", Some(p), Some(body))
            }),
        )
        .checked(Box::new(|_, p, r| {
            assert_eq!(r.json["auctions"], 2, "{p:?}: {}", r.text);
            assert_eq!(r.json["errors"], 0, "{p:?}: {}", r.text);
        })),
        row(
            "POST",
            "/oauth/token",
            every(OK),
            // Open: the client authenticates itself, the same whoever sends it.
            Box::new(|c, _| {
                let body = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}",
                    c.client_b.0, c.client_b.1
                );
                call(
                    &c.env.base,
                    "POST",
                    "/oauth/token",
                    None,
                    Some(&body),
                    &[("Content-Type", "application/x-www-form-urlencoded")],
                )
            }),
        ),
        row(
            "POST",
            "/v1/admin/clients",
            vec![
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
                (SellerA, CREATED),
                (SellerB, CREATED),
                (Operator, CREATED),
            ],
            Box::new(|c, p| {
                let body = match p {
                    Operator => {
                        r#"{"name":"ops made","scopes":["reports"],"party":"seller:seller-a"}"#
                    }
                    _ => r#"{"name":"own","scopes":["reports"]}"#,
                };
                c.send("POST", "/v1/admin/clients", Some(p), Some(body))
            }),
        )
        .checked(Box::new(|_, p, r| {
            let party = match p {
                Operator | SellerA => "seller:seller-a",
                SellerB => "seller:seller-b",
                _ => unreachable!(),
            };
            assert_eq!(r.json["party"], party, "{p:?}: {}", r.text);
        })),
        row(
            "GET",
            "/v1/admin/clients",
            vec![
                (Operator, OK),
                (SellerA, OK),
                (SellerB, OK),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| c.send("GET", "/v1/admin/clients", Some(p), None)),
        )
        .checked(Box::new(|_, p, r| {
            let parties: BTreeSet<&str> = r.json["clients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["party"].as_str().unwrap())
                .collect();
            let want = match p {
                Operator => set(&["seller:seller-a", "seller:seller-b"]),
                SellerA => set(&["seller:seller-a"]),
                SellerB => set(&["seller:seller-b"]),
                _ => unreachable!(),
            };
            let got: BTreeSet<String> = parties.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "{p:?}: {}", r.text);
        })),
        row(
            "DELETE",
            "/v1/admin/clients/{client_id}",
            // Seller B's client: another seller, the buyers, then B itself, then the operator
            // (whose revocation of a revoked client answers the first revocation).
            vec![
                (SellerA, NOT_FOUND),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
                (SellerB, OK),
                (Operator, OK),
            ],
            Box::new(|c, p| {
                let path = format!("/v1/admin/clients/{}", c.client_b.0);
                c.send("DELETE", &path, Some(p), None)
            }),
        ),
        row(
            "GET",
            "/v1/admin/webhooks",
            vec![
                (Operator, OK),
                (SellerA, OK),
                (SellerB, OK),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| c.send("GET", "/v1/admin/webhooks", Some(p), None)),
        )
        .checked(Box::new(|_, p, r| {
            let ids: BTreeSet<String> = r.json["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_string())
                .collect();
            let want = match p {
                Operator => set(&["hook_a", "hook_b", "hook_ops"]),
                SellerA => set(&["hook_a"]),
                SellerB => set(&["hook_b"]),
                _ => unreachable!(),
            };
            assert_eq!(ids, want, "{p:?}: {}", r.text);
        })),
        row(
            "POST",
            "/v1/admin/webhooks/{endpoint_id}/enable",
            vec![
                (SellerB, Want(404, "not_found")),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
                (SellerA, OK),
                (Operator, OK),
            ],
            Box::new(|c, p| c.send("POST", "/v1/admin/webhooks/hook_a/enable", Some(p), None)),
        ),
        row(
            "GET",
            "/v1/admin/webhooks/events",
            vec![
                (Operator, OK),
                (SellerA, OK),
                (SellerB, OK),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| c.send("GET", "/v1/admin/webhooks/events", Some(p), None)),
        )
        .checked(Box::new(|_, p, r| {
            let want = match p {
                Operator => set(&["hook_a", "hook_b", "hook_ops"]),
                SellerA => set(&["hook_a"]),
                SellerB => set(&["hook_b"]),
                _ => unreachable!(),
            };
            assert_eq!(endpoints_of(r), want, "{p:?}: {}", r.text);
        })),
        row(
            "GET",
            "/v1/admin/webhooks/events/{event_id}",
            vec![
                (Operator, OK),
                (SellerA, OK),
                (SellerB, NOT_FOUND),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
            ],
            Box::new(|c, p| {
                let path = format!("/v1/admin/webhooks/events/{}", c.event_a);
                c.send("GET", &path, Some(p), None)
            }),
        )
        .checked(Box::new(|_, p, r| {
            let want = match p {
                Operator => set(&["hook_a", "hook_ops"]),
                SellerA => set(&["hook_a"]),
                _ => unreachable!(),
            };
            assert_eq!(endpoints_of(r), want, "{p:?}: {}", r.text);
        })),
        row(
            "POST",
            "/v1/admin/webhooks/events/{event_id}/replay",
            vec![
                (SellerB, NOT_FOUND),
                (BuyerX, NOT_FOUND),
                (BuyerY, NOT_FOUND),
                (SellerA, ACCEPTED),
                (Operator, ACCEPTED),
            ],
            Box::new(|c, p| {
                // Seller A replays without naming an endpoint: only its own is replayed. The
                // operator replays the tenant-wide endpoint, which A's replay left alone.
                let query = if p == Operator {
                    "?endpoint=hook_ops"
                } else {
                    ""
                };
                let path = format!("/v1/admin/webhooks/events/{}/replay{query}", c.event_a);
                c.send("POST", &path, Some(p), None)
            }),
        )
        .checked(Box::new(|_, p, r| {
            let want = match p {
                Operator => set(&["hook_ops"]),
                SellerA => set(&["hook_a"]),
                _ => unreachable!(),
            };
            assert_eq!(endpoints_of(r), want, "{p:?}: {}", r.text);
        })),
        row(
            "GET",
            "/v1/admin/buyers",
            operator_only(OK),
            Box::new(|c, p| c.send("GET", "/v1/admin/buyers", Some(p), None)),
        ),
        row(
            "POST",
            "/v1/admin/buyers",
            operator_only(CREATED),
            Box::new(|c, p| {
                c.send(
                    "POST",
                    "/v1/admin/buyers",
                    Some(p),
                    Some(&buyer_definition(c)),
                )
            }),
        ),
        row(
            "GET",
            "/v1/admin/buyers/{buyer_id}",
            operator_only(OK),
            Box::new(|c, p| c.send("GET", &format!("/v1/admin/buyers/{X}"), Some(p), None)),
        ),
        row(
            "PUT",
            "/v1/admin/buyers/{buyer_id}",
            operator_only(OK),
            Box::new(|c, p| {
                let path = format!("/v1/admin/buyers/{Z}");
                c.send("PUT", &path, Some(p), Some(&buyer_definition(c)))
            }),
        ),
        row(
            "PATCH",
            "/v1/admin/buyers/{buyer_id}",
            operator_only(OK),
            Box::new(|c, p| {
                let path = format!("/v1/admin/buyers/{Z}");
                c.send("PATCH", &path, Some(p), Some(r#"{"floor":2.00}"#))
            }),
        ),
        row(
            "POST",
            "/v1/admin/buyers/{buyer_id}/pause",
            operator_only(OK),
            Box::new(|c, p| {
                c.send(
                    "POST",
                    &format!("/v1/admin/buyers/{Y}/pause"),
                    Some(p),
                    None,
                )
            }),
        ),
        row(
            "POST",
            "/v1/admin/buyers/{buyer_id}/resume",
            operator_only(OK),
            Box::new(|c, p| {
                c.send(
                    "POST",
                    &format!("/v1/admin/buyers/{Y}/resume"),
                    Some(p),
                    None,
                )
            }),
        ),
        row(
            "DELETE",
            "/v1/admin/buyers/{buyer_id}",
            operator_only(OK),
            Box::new(|c, p| c.send("DELETE", &format!("/v1/admin/buyers/{Z}"), Some(p), None)),
        ),
        // Sellers are the operator's: not even seller A may read its own row, nor learn of B's.
        row(
            "GET",
            "/v1/admin/sellers",
            operator_only(OK),
            Box::new(|c, p| c.send("GET", "/v1/admin/sellers", Some(p), None)),
        ),
        row(
            "POST",
            "/v1/admin/sellers",
            operator_only(CREATED),
            Box::new(|c, p| {
                let body = format!(r#"{{"id":"{NEW_SELLER}","name":"New"}}"#);
                c.send("POST", "/v1/admin/sellers", Some(p), Some(&body))
            }),
        ),
        row(
            "GET",
            "/v1/admin/sellers/{seller_id}",
            operator_only(OK),
            Box::new(|c, p| c.send("GET", "/v1/admin/sellers/seller-a", Some(p), None)),
        ),
        row(
            "PATCH",
            "/v1/admin/sellers/{seller_id}",
            operator_only(OK),
            Box::new(|c, p| {
                let path = format!("/v1/admin/sellers/{NEW_SELLER}");
                c.send("PATCH", &path, Some(p), Some(r#"{"name":"Renamed"}"#))
            }),
        ),
        row(
            "POST",
            "/v1/admin/sellers/{seller_id}/suspend",
            operator_only(OK),
            Box::new(|c, p| {
                let path = format!("/v1/admin/sellers/{NEW_SELLER}/suspend");
                c.send("POST", &path, Some(p), None)
            }),
        ),
        row(
            "POST",
            "/v1/admin/sellers/{seller_id}/resume",
            operator_only(OK),
            Box::new(|c, p| {
                let path = format!("/v1/admin/sellers/{NEW_SELLER}/resume");
                c.send("POST", &path, Some(p), None)
            }),
        ),
        row(
            "GET",
            "/v1/admin/audit",
            operator_only(OK),
            Box::new(|c, p| c.send("GET", "/v1/admin/audit", Some(p), None)),
        ),
    ]
}

/// The server, its parties, two sold auctions and a webhook event to look at.
fn setup(driver: Driver) -> Ctx {
    let rx = Receiver::start(204);
    let (a, b, ops) = (rx.url("/a"), rx.url("/b"), rx.url("/ops"));
    let env = Env::start(
        driver,
        vec![fixed(X, X_BID), fixed(Y, Y_BID), fixed(Z, 1.0)],
        move |cfg, _| {
            // Z is only served by the fleet: the operator adds it through the admin API.
            cfg.buyers.retain(|b| b.id != Z);
            cfg.sellers = vec![seller("seller-a", false), seller("seller-b", true)];
            cfg.tokens.extend([
                seller_token("it-seller-a", "seller-a", SELLER_A),
                seller_token("it-seller-b", "seller-b", SELLER_B),
            ]);
            for (client, buyer, token) in [("it-buyer-x", X, BUYER_X), ("it-buyer-y", Y, BUYER_Y)] {
                let mut t = buyer_token(client, buyer, token);
                t.scopes = [Scope::Status, Scope::Reports].into_iter().collect();
                cfg.tokens.push(t);
            }
            cfg.webhooks = vec![
                hook("hook_a", a, Some("seller-a")),
                hook("hook_b", b, Some("seller-b")),
                hook("hook_ops", ops, None),
            ];
        },
    );
    let send = |method: &str, path: &str, token: &str, body: Option<&str>| {
        call(&env.base, method, path, Some(token), body, &[])
    };
    // Seller A's auction runs while Y is paused, so Y takes no part in it.
    let r = send(
        "POST",
        &format!("/v1/admin/buyers/{Y}/pause"),
        OPERATOR,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let mut ctx = Ctx {
        env,
        rx,
        auction_a: String::new(),
        lead_a: String::new(),
        auction_b: String::new(),
        event_a: String::new(),
        client_b: (String::new(), String::new()),
    };
    let (auction_a, post) = sell(&ctx, P::SellerA);
    assert_eq!(post.status, 201, "{}", post.text);
    ctx.lead_a = post.json["lead_uuid"].as_str().unwrap().to_string();
    ctx.auction_a = auction_a;
    ctx.rx
        .wait_for(WAIT, "A's sale at hook_a and hook_ops", |h| {
            h.iter().filter(|h| h.path == "/a").count() == 1
                && h.iter().filter(|h| h.path == "/ops").count() == 1
        });
    let events = ctx.send(
        "GET",
        "/v1/admin/webhooks/events?endpoint=hook_a",
        Some(P::Operator),
        None,
    );
    ctx.event_a = events.json["deliveries"][0]["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", events.text))
        .to_string();
    let r = ctx.send(
        "POST",
        &format!("/v1/admin/buyers/{Y}/resume"),
        Some(P::Operator),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Seller B's auction: both buyers bid, X wins.
    let (auction_b, post) = sell(&ctx, P::SellerB);
    assert_eq!(post.status, 201, "{}", post.text);
    ctx.auction_b = auction_b;
    ctx.rx
        .wait_for(WAIT, "B's sale at hook_b and hook_ops", |h| {
            h.iter().filter(|h| h.path == "/b").count() == 1
                && h.iter().filter(|h| h.path == "/ops").count() == 2
        });
    // The operator registers a client for seller B (a seller of the seller table).
    let r = ctx.send(
        "POST",
        "/v1/admin/clients",
        Some(P::Operator),
        Some(r#"{"name":"for b","scopes":["reports"],"party":"seller:seller-b"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["party"], "seller:seller-b", "{}", r.text);
    ctx.client_b = (
        r.json["client_id"].as_str().unwrap().to_string(),
        r.json["client_secret"].as_str().unwrap().to_string(),
    );
    ctx
}

/// Every cell of every row, in `ROUTES` order.
fn run_matrix(ctx: &Ctx) {
    let mut rows = rows();
    for route in gavel::api::ROUTES {
        let (method, path) = (route.method, route.path);
        let at = rows
            .iter()
            .position(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| {
                panic!(
                    "{method} {path} is in gavel::api::ROUTES but has no row in the visibility \
                     matrix (tests/visibility.rs, rows()): say what each party gets there"
                )
            });
        let row = rows.remove(at);
        let covered: BTreeSet<P> = row.cells.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            covered.len(),
            EVERYONE.len(),
            "{method} {path}: a cell per party"
        );
        for (p, want) in &row.cells {
            let cell = format!("{method} {path} as {p:?}");
            // The cell agrees with the route's view rule in the table before it runs. (A party
            // the route is open to may still get a 404: for a record that is not its own.)
            let rule = route.access(p.kind());
            match rule {
                Access::None => assert_eq!((want.0, want.1), (404, "not_found"), "{cell}"),
                Access::Refused => assert_eq!((want.0, want.1), (403, "seller_only"), "{cell}"),
                Access::Public | Access::Full | Access::Own => assert_ne!(
                    want.1,
                    "seller_only",
                    "{cell}: the table gives {} access",
                    rule.as_str()
                ),
            }
            let r = (row.call)(ctx, *p);
            assert_eq!(r.status, want.0, "{cell}: {}", r.text);
            if want.0 >= 400 {
                assert_eq!(r.error_code(), want.1, "{cell}: {}", r.text);
            } else {
                (row.check)(ctx, *p, &r);
            }
        }
    }
    let left: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        left.is_empty(),
        "rows for routes that are not routed: {left:?}"
    );
}

/// What the matrix's cells cannot say alone: answers outside a view are the same bytes as for
/// what does not exist, `reveal_winner` names the winner to its own seller only, a buyer never
/// sees another's bid, and a seller with every scope still cannot touch a buyer nor another
/// seller's things.
fn beyond_the_cells(ctx: &Ctx) {
    let get = |path: &str, p: P| ctx.send("GET", path, Some(p), None);
    let unknown = get("/v1/auctions/auc_00000000000000000000000000", P::SellerB);
    let hidden = get(&format!("/v1/auctions/{}", ctx.auction_a), P::SellerB);
    assert_eq!(
        (hidden.status, &hidden.json["message"]),
        (unknown.status, &unknown.json["message"]),
        "another seller's auction answers as an unknown one"
    );

    // Seller B reveals its winner: B's view names X (never a bid, never Y); A's view of its own
    // auction never names one.
    let b_view = get(&format!("/v1/auctions/{}", ctx.auction_b), P::SellerB);
    assert_eq!(b_view.status, 200, "{}", b_view.text);
    assert_eq!(b_view.json["winner"]["buyer_id"], X, "{}", b_view.text);
    assert!(
        b_view.json["winner"].get("price").is_none(),
        "{}",
        b_view.text
    );
    no_buyer_nor_bid("seller B's view", &b_view.text, &[Y]);
    assert_eq!(
        get(&format!("/v1/auctions/{}", ctx.auction_b), P::SellerA).status,
        404
    );
    let a_view = get(&format!("/v1/auctions/{}", ctx.auction_a), P::SellerA);
    assert!(a_view.json.get("winner").is_none(), "{}", a_view.text);

    // Y bid on B's auction and lost: its own bid, nothing of X's.
    let y_view = get(&format!("/v1/auctions/{}", ctx.auction_b), P::BuyerY);
    assert_eq!(y_view.status, 200, "{}", y_view.text);
    assert_eq!(
        y_view.json["amount"].as_f64(),
        Some(Y_BID),
        "{}",
        y_view.text
    );
    assert_eq!(
        (&y_view.json["won"], &y_view.json["bought"]),
        (&json!(false), &json!(false))
    );
    let x_bid = X_BID.to_string();
    for needle in [X, x_bid.as_str(), "seller-b"] {
        assert!(
            !y_view.text.contains(needle),
            "Y sees {needle}: {}",
            y_view.text
        );
    }

    // A seller with every scope: no buyer, no other seller's client, endpoint or lead.
    for path in [
        format!("/v1/admin/buyers/{X}"),
        format!("/v1/admin/buyers/{Y}"),
    ] {
        let r = get(&path, P::SellerA);
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{path}");
    }
    let r = ctx.send(
        "POST",
        "/v1/admin/webhooks/hook_b/enable",
        Some(P::SellerA),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = ctx.send(
        "POST",
        "/v1/admin/clients",
        Some(P::SellerA),
        Some(r#"{"name":"sneaky","scopes":["reports"],"party":"seller:seller-b"}"#),
    );
    assert_eq!(
        (r.status, r.field_names()),
        (422, vec!["party"]),
        "{}",
        r.text
    );

    // The operator names only parties of its tenant; a buyer's client speaks for that buyer.
    let r = ctx.send(
        "POST",
        "/v1/admin/clients",
        Some(P::Operator),
        Some(r#"{"name":"nobody","scopes":["reports"],"party":"seller:nobody"}"#),
    );
    assert_eq!(
        (r.status, r.field_names()),
        (422, vec!["party"]),
        "{}",
        r.text
    );
    let r = ctx.send(
        "POST",
        "/v1/admin/clients",
        Some(P::Operator),
        Some(
            &json!({"name": "for x", "scopes": ["reports"], "party": format!("buyer:{X}")})
                .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let (id, secret) = (
        r.json["client_id"].as_str().unwrap(),
        r.json["client_secret"].as_str().unwrap(),
    );
    let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let token = call(
        &ctx.env.base,
        "POST",
        "/oauth/token",
        None,
        Some(&body),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    let access = token.json["access_token"].as_str().unwrap();
    let r = call(
        &ctx.env.base,
        "GET",
        &format!("/v1/auctions/{}", ctx.auction_a),
        Some(access),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["buyer_id"], X,
        "X's client sees X's view: {}",
        r.text
    );
    // Even X's own client may not send leads.
    let r = call(
        &ctx.env.base,
        "POST",
        "/v1/ping",
        Some(access),
        Some(&ping_body().to_string()),
        &[],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "seller_only"),
        "{}",
        r.text
    );

    // The production operator reads /metrics; nobody else on the API port does.
    assert_eq!(get("/metrics", P::Operator).status, 403);
    let r = call(
        &ctx.env.base,
        "GET",
        "/metrics",
        Some(LIVE_OPERATOR),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn every_party_sees_and_changes_only_its_own_on_every_route() {
    for driver in drivers() {
        let ctx = setup(driver);
        run_matrix(&ctx);
        beyond_the_cells(&ctx);
    }
}
