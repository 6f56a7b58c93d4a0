//! Memory per retained auction: what one auction costs the shard that keeps it postable for
//! `auction.retention_ms` after its bid expires.
//!
//! What it measures: live heap bytes (a counting global allocator) after inserting 100,000
//! auctions shaped like the reference benchmark's into one [`gavel::auction::shard::Shard`]: the
//! reference ping, 5 buyer outcomes (4 bids with the buyers' own bid tokens, 1 no-bid), a winner,
//! and then either no post yet ("awaiting post") or a finished sale (the replayable answer, one
//! delivery attempt, the buyer's lead id). Heap only: the store's page cache and the allocator's
//! own slack come on top in a process's RSS (see docs/benchmarks.md for the process figure).
//!
//! Why it matters: with 120 s of retention after a 60 s bid token, a core holds about 180 s of its
//! auctions, so this times the auction rate is the shard's share of memory.
//!
//! Run with: `cargo bench --bench retained` (prints bytes per auction; not a criterion bench,
//! because it measures memory, not time). The figures live in docs/benchmarks.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use gavel::auction::shard::Shard;
use gavel::auction::{
    AttemptResult, Auction, BuyerOutcome, OutcomeKind, PostAttempt, PostState, Status,
};
use gavel::config::Tenant;
use gavel::http::Reply;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const AUCTIONS: usize = 100_000;

const PING: &str = r#"{"vertical":"auto_insurance","sub_vertical":"non_standard","state":"TX",
"zip3":"770","source":"google_ads","tcpa_consent":true,"ai_quality_score":0.84,
"currently_insured":true,"vehicle_count":2,"driver_age_band":"35-44"}"#;

fn auction(n: usize, sold: bool) -> Auction {
    let mut body = PING.as_bytes().to_vec();
    let ping = gavel::api::validate::parse_ping(&mut body, 0).expect("reference ping is valid");
    let id = format!(
        "auc_{}",
        ulid::Ulid::from_parts(1_700_000_000_000, n as u128)
    );
    let mut a = Auction::open(
        Default::default(),
        id.clone(),
        Tenant::Sandbox,
        "seller-1".into(),
        "seller-1".into(),
        ping,
        1_700_000_000_000,
        1_700_000_002_000,
        1_700_000_182_000,
    );
    a.outcomes = (0..5)
        .map(|b| {
            let bid = b < 4;
            BuyerOutcome {
                buyer: b,
                buyer_id: format!("buyer-{b}"),
                kind: if bid {
                    OutcomeKind::Bid
                } else {
                    OutcomeKind::NoBid
                },
                amount_cents: bid.then_some(2_500 + b as u64 * 100),
                buyer_bid_token: bid.then(|| format!("mock_{id}_{b}_0123456789abcdef")),
                valid_until_ms: bid.then_some(1_700_000_060_000),
                reject_reason: (!bid).then(|| "no_bid".to_string()),
                reject_detail: None,
                latency_us: 20_000,
                arrival: b as u32,
                direct_post: false,
                failure: None,
            }
        })
        .collect();
    a.status = Status::Won {
        ranked: vec![3, 2, 1, 0],
        payout_cents: 2_520,
        token_valid_until_ms: 1_700_000_060_000,
    };
    a.closed_ms = Some(1_700_000_000_031);
    if sold {
        let lead_uuid = format!(
            "ld_{}",
            ulid::Ulid::from_parts(1_700_000_000_100, n as u128)
        );
        let reply = Reply::json(
            http::StatusCode::CREATED,
            &serde_json::json!({
                "auction_id": id, "lead_uuid": lead_uuid, "status": "sold",
                "buyer_lead_id": format!("buyer-3-lead-{n}"), "amount": 25.20, "currency": "USD"
            }),
        );
        a.post = PostState::Done {
            key: format!("post_{id}"),
            reply,
            outcome: gavel::auction::PostOutcome::Sold,
        };
        a.post_attempts = vec![PostAttempt {
            buyer_id: "buyer-3".into(),
            attempt: 1,
            result: AttemptResult::Accepted,
            http_status: Some(201),
            latency_us: 3_000,
        }];
        a.sold = Some((3, format!("buyer-3-lead-{n}")));
        a.post_fingerprint = Some([7; 32]);
        a.lead_uuid = Some(lead_uuid);
    }
    a
}

fn per_auction(sold: bool) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let mut shard = Shard::new(AUCTIONS);
    for n in 0..AUCTIONS {
        shard
            .insert(auction(n, sold), 1_700_000_000_000)
            .expect("room for every auction");
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(shard.len(), AUCTIONS);
    drop(shard);
    (after - before) as f64 / AUCTIONS as f64
}

fn main() {
    // `cargo test --benches` runs bench targets with --test-ish flags; a tiny run keeps it quick.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    println!(
        "retained auction, awaiting post: {:.0} bytes",
        per_auction(false)
    );
    println!(
        "retained auction, sold:          {:.0} bytes",
        per_auction(true)
    );
    println!("(live heap per auction, {AUCTIONS} auctions in one shard)");
}
