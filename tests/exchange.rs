//! The exchange's use-cases driven directly on a core of a running server, without the seller-facing
//! HTTP layer: auction outcomes, delivery with fallback, bid expiry on the server's clock and the
//! lead-status state machine. Buyers are the sandbox mock fleet, over real sockets; the clock is a
//! manual one the tests move instead of sleeping.

// Test threads block on the core's answer; no event loop runs on them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::rc::Rc;
use std::time::Instant;

use common::*;
use gavel::auction::token::Claims;
use gavel::auction::NoBidReason;
use gavel::auth::Client;
use gavel::config::{Driver, Scope};
use gavel::exchange::auction::{self, Closed};
use gavel::exchange::post::{self, Delivered, Keyed};
use gavel::exchange::status::{self, Reported};
use gavel::exchange::Core;
use gavel::exchange::ExchangeError;
use gavel::http::Reply;
use gavel::store::{Batch, StoreError};

const CORE: usize = 0;

fn env(mocks: Vec<gavel::sandbox::MockBuyerConfig>, ttl_ms: Option<u64>) -> Env {
    Env::start_with_clock(
        Driver::Legacy,
        mocks,
        |cfg, _| {
            cfg.server.cores = 1;
            cfg.bid_token.ttl_ms = ttl_ms;
        },
        manual_clock(),
    )
}

/// The client the test token stands for, as the core's authentication sees it.
fn client(core: &Core, token: &str, scope: Scope) -> Client {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let client = core.identify(&headers).expect("test token");
    client
        .require(scope)
        .expect("the test token holds the scope");
    client
}

/// The seller the test token speaks for (its implicit seller, named by its client).
fn seller(client: &Client) -> &str {
    client.seller().expect("the test token is a seller's")
}

/// Runs one auction of the standard test ping on `core` and makes it durable.
async fn auction_on(core: &Rc<Core>) -> (Closed, Client) {
    let client = client(core, TOKEN, Scope::Ping);
    let mut body = ping_body().to_string().into_bytes();
    let now = core.shared.clock.now_ms();
    let ping = gavel::api::validate::parse_ping(&mut body, now).expect("valid ping");
    let id = gavel::auction::id::mint(core.id, core.shared.cores);
    let closed = auction::run(core, id.clone(), ping, &client)
        .await
        .expect("the auction runs");
    auction::record_closed(core, client.tenant, seller(&client), &id, Batch::new())
        .await
        .expect("the auction is recorded");
    (closed, client)
}

/// The claims a bid token for the closed auction's winning bid carries.
fn claims(closed: &Closed, client: &Client) -> Claims {
    let won = closed.result.as_ref().expect("a winning bid");
    Claims {
        auction_id: closed.auction_id.clone(),
        tenant: client.tenant,
        seller: client.seller().map(gavel::auction::token::SellerTag::of),
        amount_cents: won.payout_cents,
        valid_until_ms: won.valid_until_ms,
    }
}

fn no_records(_: &mut Batch, _: &Reply, _: u64) -> Result<(), StoreError> {
    Ok(())
}

fn post_of(closed: &Closed, token: &str, now_ms: u64) -> gavel::model::Post {
    let mut body = post_body(&closed.auction_id, token)
        .to_string()
        .into_bytes();
    gavel::api::validate::parse_post(&mut body, now_ms).expect("valid post")
}

#[test]
fn an_auction_clears_to_the_highest_bid_and_its_record_is_durable() {
    let env = env(vec![fixed("high", 30.0), fixed("low", 20.0)], None);
    let (closed, stored) = env
        .server()
        .on_core(CORE, |core| async move {
            let (closed, client) = auction_on(&core).await;
            let stored = auction::stored(&core, client.tenant, seller(&client), &closed.auction_id)
                .expect("readable")
                .map(|r| (r.status, r.client == client.name));
            (closed, stored)
        })
        .expect("core answers");
    assert_eq!((closed.buyers_pinged, closed.bids_received), (2, 2));
    let won = closed.result.expect("won");
    // The payout is the winner's bid less the margins, never more than it bid.
    assert!(
        won.payout_cents > 0 && won.payout_cents <= 3_000,
        "{}",
        won.payout_cents
    );
    let (status, by_the_seller) = stored.expect("the record is in the store");
    assert_eq!(status, "won");
    assert!(by_the_seller, "the record names the seller's client");
}

#[test]
fn no_bids_is_a_result_not_an_error() {
    let mut silent = fixed("silent", 30.0);
    silent.bid_probability = 0.0;
    let env = env(vec![silent], None);
    let closed = env
        .server()
        .on_core(CORE, |core| async move { auction_on(&core).await.0 })
        .expect("core answers");
    assert_eq!(closed.result, Err(NoBidReason::NoBids));
    assert_eq!((closed.buyers_pinged, closed.bids_received), (1, 0));
}

#[test]
fn a_refusing_winner_falls_back_to_the_next_bidder_and_the_lead_moves_through_its_statuses() {
    let mut refuses = fixed("refuses", 30.0);
    refuses.post_accept_probability = 0.0;
    let env = env(vec![refuses, fixed("takes", 20.0)], None);
    let clock = env.clock.clone();
    let (answer, sold_to, lead_uuid) = env
        .server()
        .on_core(CORE, |core| async move {
            let (closed, client) = auction_on(&core).await;
            let post = post_of(&closed, "unused", core.shared.clock.now_ms());
            let lead_uuid = post.lead.lead_uuid.clone();
            let keyed = Keyed {
                key: "post_test",
                fingerprint: [7; 32],
                record: &no_records,
            };
            let claims = claims(&closed, &client);
            let delivered = post::deliver(&core, post, &client, &keyed, Instant::now(), claims)
                .await
                .expect("the delivery runs");
            let Delivered::Answer(reply) = delivered else {
                panic!("a final answer");
            };
            let shard = core.shard.borrow();
            let a = shard
                .get(client.tenant, seller(&client), &closed.auction_id)
                .expect("in memory");
            let sold_to = a
                .sold
                .as_ref()
                .map(|(slot, _)| a.outcomes[*slot].buyer_id.clone());
            (reply, sold_to, lead_uuid)
        })
        .expect("core answers");
    assert_eq!(answer.status.as_u16(), 201);
    assert_eq!(
        sold_to.as_deref(),
        Some("takes"),
        "the second bidder took it"
    );

    // The buyer that bought it reports on it; each change is stamped by the server's clock.
    clock.advance(5_000);
    let at = clock.now_ms();
    let (qualified, refused, other_buyer) = env
        .server()
        .on_core(CORE, move |core| async move {
            let tenant = client(&core, TOKEN, Scope::Ping).tenant;
            let qualified = status::report(
                &core,
                tenant,
                "takes",
                &lead_uuid,
                Reported::Qualified,
                None,
            )
            .await
            .expect("qualified after the sale");
            let refused =
                status::report(&core, tenant, "takes", &lead_uuid, Reported::Returned, None).await;
            let other = status::report(
                &core,
                tenant,
                "refuses",
                &lead_uuid,
                Reported::Contacted,
                None,
            )
            .await;
            (qualified, refused, other)
        })
        .expect("core answers");
    assert_eq!(
        (qualified.status, qualified.previous_status, qualified.at_ms),
        ("qualified", "sold", at)
    );
    assert!(
        matches!(
            refused,
            Err(ExchangeError::InvalidTransition {
                current: "qualified",
                requested: "returned",
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(
        matches!(other_buyer, Err(ExchangeError::LeadNotFound { .. })),
        "another buyer does not learn the lead exists: {other_buyer:?}"
    );
}

#[test]
fn a_bid_token_expires_by_the_servers_clock_not_the_systems() {
    let env = env(vec![fixed("x", 30.0)], Some(1_000));
    let clock = env.clock.clone();
    let closed = env
        .server()
        .on_core(CORE, |core| async move {
            let (closed, client) = auction_on(&core).await;
            (closed, client)
        })
        .expect("core answers");
    let (closed, client) = closed;
    let won = closed.result.clone().expect("won");
    assert_eq!(
        won.valid_until_ms,
        clock.now_ms() + 1_000,
        "ttl from the server's clock"
    );
    clock.advance(1_001);
    let expired = env
        .server()
        .on_core(CORE, move |core| async move {
            let post = post_of(&closed, &won.bid_token, core.shared.clock.now_ms());
            let keyed = Keyed {
                key: "post_test",
                fingerprint: [1; 32],
                record: &no_records,
            };
            post::deliver_with_token(&core, post, &client, &keyed, Instant::now())
                .await
                .map(|_| ())
        })
        .expect("core answers");
    assert!(
        matches!(expired, Err(ExchangeError::BidExpired)),
        "{expired:?}"
    );
}

#[test]
fn an_unconfirmed_delivery_resumes_with_the_same_buyer_only_under_its_key() {
    // The winner takes the lead on every attempt but answers none of the first three, all one
    // delivery may try: the exchange must not offer the lead to the second bidder.
    let mut silent = fixed("silent", 30.0);
    silent.post_fail_first = 3;
    silent.post_fail_mode = gavel::sandbox::PostFailMode::Hang;
    let env = Env::start_with_clock(
        Driver::Legacy,
        vec![silent, fixed("other", 20.0)],
        |cfg, _| {
            cfg.server.cores = 1;
            cfg.buyers[0].post_timeout_ms = 150;
            cfg.post.budget_ms = 2_000;
            cfg.post.max_attempts_per_buyer = 3;
        },
        manual_clock(),
    );
    let outcomes = env
        .server()
        .on_core(CORE, |core| async move {
            let (closed, client) = auction_on(&core).await;
            let claims = claims(&closed, &client);
            let now = core.shared.clock.now_ms();
            let keyed = |key, fingerprint| Keyed {
                key,
                fingerprint,
                record: &no_records,
            };
            let mut seen = Vec::new();
            for (key, fingerprint) in [
                ("post_a", [1; 32]), // unresolved
                ("post_b", [1; 32]), // another key: refused
                ("post_a", [2; 32]), // same key, other body: refused
                ("post_a", [1; 32]), // resumes with the same buyer: sold
                ("post_a", [1; 32]), // the final answer, replayed
            ] {
                let post = post_of(&closed, "unused", now);
                let k = keyed(key, fingerprint);
                let r =
                    post::deliver(&core, post, &client, &k, Instant::now(), claims.clone()).await;
                seen.push(match r {
                    Ok(Delivered::Unresolved) => "unresolved".to_string(),
                    Ok(Delivered::Answer(reply)) => format!(
                        "{} replayed={}",
                        reply.status.as_u16(),
                        reply
                            .headers
                            .iter()
                            .any(|(n, _)| n.as_str() == "idempotent-replayed")
                    ),
                    Err(ExchangeError::AlreadyPosted { .. }) => "already_posted".into(),
                    Err(ExchangeError::KeyReused) => "key_reused".into(),
                    Err(e) => format!("unexpected {e:?}"),
                });
            }
            seen
        })
        .expect("core answers");
    assert_eq!(
        outcomes,
        [
            "unresolved",
            "already_posted",
            "key_reused",
            "201 replayed=false",
            "201 replayed=true"
        ]
    );
    let d = env.fleet.log().deliveries();
    assert!(
        d.iter().all(|r| r.buyer_id == "silent"),
        "the second bidder never saw the lead"
    );
}
