//! The one-call lead (CONTRACT §4.4) on its auction's owning core: auction the ping part, then
//! deliver the lead to the winner exactly as a post would. The auction and the delivery are the
//! ping's and the post's use-cases, so the durability and resume rules of a post hold unchanged;
//! the auction record first reaches the disk with the intent to deliver, one fsync fewer than a
//! ping followed by a post.
//!
//! Retrying: a keyed call's auction id is derived from its scoped key ([`derived_auction_id`]),
//! so a retry after a crash finds the auction whose delivery had started, recognises it by the
//! body's fingerprint and resumes it with the same buyer instead of auctioning the same lead
//! twice. A crash before the delivery started left nothing on disk, and the retry simply runs the
//! auction.
//!
//! Checking the call before any buyer hears of it (fields, lead vs ping, rules) and answering it
//! are the caller's; so is recording a no-bid answer (with [`super::auction::record_closed`]).

use std::rc::Rc;
use std::time::Instant;

use ring::digest;

use super::auction::{self, Closed};
use super::error::ExchangeError;
use super::post::{self, Delivered, Keyed};
use crate::auction::token::{Claims, SellerTag};
use crate::auction::Status;
use crate::auth::Client;
use crate::exchange::Core;
use crate::model::{Ping, Post};
use crate::types::Tenant;

/// How a one-call lead ended.
#[derive(Debug)]
pub enum Outcome {
    /// Nobody bid: the auction is closed in the shard but not yet durable; the caller records it
    /// with its answer.
    NoBid(Closed),
    /// The lead went through delivery, as a post would.
    Delivered(Delivered),
}

/// The auction id a keyed one-call lead uses: a ULID-shaped id from the SHA-256 of the scoped
/// key (`scope_key`, the idempotency scope's encoding), owned by `core`, the core the key routes
/// to. Deterministic while the core count stays the same, which is what lets a retry after a
/// crash find its auction.
pub fn derived_auction_id(core: &Core, scope_key: &[u8]) -> String {
    let mut n: u32 = 0;
    loop {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"gavel one-call auction id\0");
        ctx.update(scope_key);
        ctx.update(&n.to_le_bytes());
        let d = ctx.finish();
        let bytes: [u8; 16] = d.as_ref()[..16].try_into().expect("SHA-256 is 32 bytes");
        let id = format!("auc_{}", ulid::Ulid::from_bytes(bytes));
        if core.shared.owner_of(&id) == core.id {
            return id;
        }
        n += 1;
    }
}

/// Runs a checked one-call lead under `auction_id` on its owning core. `keyed` is the delivery's
/// identity (the post's default key, with the body's fingerprint) and records its final answer.
pub async fn run(
    core: &Rc<Core>,
    auction_id: String,
    ping: Ping,
    mut post: Post,
    client: &Client,
    keyed: &Keyed<'_>,
    received: Instant,
) -> Result<Outcome, ExchangeError> {
    post.auction_id = auction_id.clone();
    let seller = auction::seller_of(client)?;
    // The auction record first reaches the disk with the intent to deliver, which also records
    // this body's fingerprint. An auction of this seller under this id carrying it is this very
    // call, cut off after its delivery started: go on with that delivery. Any other is an earlier
    // auction of the seller's under the same id. (Another seller's is in another scope.)
    if auction::ensure_loaded(core, client.tenant, seller, &auction_id)? {
        let ours = core
            .shard
            .borrow()
            .get(client.tenant, seller, &auction_id)
            .is_some_and(|a| a.post_fingerprint == Some(keyed.fingerprint));
        if !ours {
            return Err(ExchangeError::AuctionExists { auction_id });
        }
    } else {
        let closed = auction::run(core, auction_id.clone(), ping, client).await?;
        auction::record_engine_overhead(core, client.tenant, seller, &auction_id, received);
        if closed.result.is_err() {
            return Ok(Outcome::NoBid(closed));
        }
    }
    // A fingerprint is only recorded on a won auction's delivery, so a winner is always there.
    let claims = winning_claims(core, client.tenant, seller, &auction_id).ok_or(
        ExchangeError::Inconsistent("a one-call lead's auction has no winning bid to deliver"),
    )?;
    // The post's own latency series counts from here, not from the start of the auction.
    let delivered = post::deliver(core, post, client, keyed, Instant::now(), claims).await?;
    Ok(Outcome::Delivered(delivered))
}

/// What a bid token for the seller's auction's winning bid would carry; `None` without a winner.
fn winning_claims(core: &Core, tenant: Tenant, seller: &str, auction_id: &str) -> Option<Claims> {
    let shard = core.shard.borrow();
    let a = shard.get(tenant, seller, auction_id)?;
    match &a.status {
        Status::Won {
            payout_cents,
            token_valid_until_ms,
            ..
        } => Some(Claims {
            auction_id: a.id.clone(),
            tenant: a.tenant,
            seller: Some(SellerTag::of(&a.seller)),
            amount_cents: *payout_cents,
            valid_until_ms: *token_valid_until_ms,
        }),
        _ => None,
    }
}
