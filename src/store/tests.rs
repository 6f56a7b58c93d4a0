//! Store tests: encoding, corruption, key scoping, atomicity, reopen, crash, expiry, group commit.

// Tests may block and sleep: they run on the test harness's threads, not on a core.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::records::{self, Record};
use super::*;
use crate::types::clock::Clock;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "gavel-store-{tag}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the store at `o`, waiting while a store just dropped in this process still holds the
/// directory's lock: sled releases it only once its background flush thread has finished, which
/// on a busy machine can take a moment after the drop returns.
fn open(o: &StoreOptions) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(o) {
            Ok(s) => return s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("open the store: {e}"),
        }
    }
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        path: dir.to_path_buf(),
        cache_capacity_bytes: 16 * 1024 * 1024,
        ..StoreOptions::default()
    }
}

fn scope(key: &str) -> IdemScope {
    IdemScope {
        tenant: "sandbox".into(),
        client: "client-1".into(),
        method: "POST".into(),
        path: "/v1/ping".into(),
        key: key.into(),
    }
}

fn idem(created_ms: u64) -> IdemRecord {
    IdemRecord {
        fingerprint: [7; 32],
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "req_123".into()),
        ],
        body: br#"{"auction_id":"auc_1","result":"won"}"#.to_vec(),
        created_ms,
    }
}

fn auction(id: &str, created_ms: u64) -> AuctionRecord {
    AuctionRecord {
        id: id.into(),
        tenant: "sandbox".into(),
        client: "client-1".into(),
        seller: "seller-1".into(),
        ping_json: br#"{"vertical":"auto","zip":"94107"}"#.to_vec(),
        buyer_ref: String::new(),
        created_ms,
        deadline_ms: created_ms + 2_000,
        closed_ms: Some(created_ms + 1_500),
        status: "won".into(),
        reject_reason: None,
        outcomes: (0..5)
            .map(|i| OutcomeRecord {
                buyer_id: format!("buyer-{i}"),
                kind: if i == 4 { "timeout" } else { "bid" }.into(),
                amount_cents: (i < 4).then_some(1_000 + 100 * i),
                buyer_bid_token: (i < 4).then(|| format!("tok-{i}")),
                valid_until_ms: Some(created_ms + 60_000),
                reject_reason: (i == 4).then(|| "timeout".into()),
                reject_detail: None,
                latency_us: 12_000 + i,
                arrival: i as u32,
            })
            .collect(),
        ranked: vec![3, 2, 1, 0],
        payout_cents: Some(1_170),
        token_valid_until_ms: Some(created_ms + 60_000),
        post: PostRecord {
            state: "sold".into(),
            key: Some(format!("post_{id}")),
            slot: Some(3),
            fingerprint: Some([9; 32]),
            reply_status: Some(200),
            reply_headers: vec![("content-type".into(), "application/json".into())],
            reply_body: br#"{"result":"sold"}"#.to_vec(),
            lead_uuid: Some(format!("lead-{id}")),
            buyer_lead_id: Some("B-77".into()),
            sold_slot: Some(3),
        },
        post_attempts: vec![AttemptRecord {
            buyer_id: "buyer-3".into(),
            attempt: 1,
            result: "accepted".into(),
            http_status: Some(200),
            latency_us: 8_000,
        }],
    }
}

fn lead(uuid: &str, auction_id: &str, created_ms: u64) -> LeadRecord {
    LeadRecord {
        lead_uuid: uuid.into(),
        auction_id: auction_id.into(),
        tenant: "sandbox".into(),
        seller: "seller-1".into(),
        buyer_id: "buyer-3".into(),
        buyer_lead_id: "B-77".into(),
        created_ms,
        history: vec![
            LeadEvent {
                at_ms: created_ms,
                status: "sold".into(),
                reason: None,
            },
            LeadEvent {
                at_ms: created_ms + 10,
                status: "returned".into(),
                reason: Some("duplicate".into()),
            },
        ],
    }
}

fn round_trip<R>(record: &R) -> R
where
    R: Record
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    R::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<R, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let bytes = records::encode(b"k", record).expect("encode");
    assert_eq!(bytes[0], R::VERSION);
    // Decode from an odd offset too: sled gives no alignment guarantee.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    let a = records::decode::<R>(b"k", &bytes).expect("decode");
    let b = records::decode::<R>(b"k", &shifted[1..]).expect("decode unaligned");
    assert_eq!(
        records::created_ms::<R>(b"k", &bytes).expect("created_ms"),
        records::created_ms::<R>(b"k", &shifted[1..]).expect("created_ms")
    );
    drop(b);
    a
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<Batch>();
    assert_send_sync::<StoreError>();
}

#[test]
fn records_round_trip() {
    let i = idem(1_000);
    assert_eq!(round_trip(&i), i);
    let a = auction("auc_1", 2_000);
    assert_eq!(round_trip(&a), a);
    let l = lead("lead-1", "auc_1", 3_000);
    assert_eq!(round_trip(&l), l);
    // Empty and default-ish values too.
    let mut empty = auction("", 0);
    empty.outcomes.clear();
    empty.post = PostRecord::default();
    empty.post_attempts.clear();
    assert_eq!(round_trip(&empty), empty);
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    let store = Store::temporary().unwrap();
    let good = records::encode(b"auc_1", &auction("auc_1", 5)).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("version only", vec![AuctionRecord::VERSION]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("last byte cut", good[..good.len() - 1].to_vec()),
        ("garbage", {
            let mut v = vec![AuctionRecord::VERSION];
            v.extend((0..200u8).map(|b| b.wrapping_mul(37)));
            v
        }),
        ("all bits flipped", {
            let mut v = good.clone();
            for b in &mut v[1..] {
                *b = !*b;
            }
            v
        }),
        ("root pointer flipped", {
            let mut v = good.clone();
            let n = v.len();
            for b in &mut v[n - 16..] {
                *b ^= 0xA5;
            }
            v
        }),
    ];
    for (what, bytes) in cases {
        store.raw_insert(TreeId::Auctions, b"auc_1", &bytes);
        match store.get_auction("sandbox", "seller-1", "auc_1") {
            Err(StoreError::Corrupt { tree, key, .. }) => {
                assert_eq!(tree, "auctions", "{what}");
                assert_eq!(key, "auc_1", "{what}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    let mut wrong_version = good.clone();
    wrong_version[0] = 200;
    store.raw_insert(TreeId::Auctions, b"auc_1", &wrong_version);
    assert!(matches!(
        store.get_auction("sandbox", "seller-1", "auc_1"),
        Err(StoreError::UnknownVersion {
            tree: "auctions",
            version: 200,
            ..
        })
    ));

    // Every single-byte flip either still decodes (a flip inside a string, say) or is an error;
    // none panics.
    for i in 1..good.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut v = good.clone();
            v[i] ^= mask;
            store.raw_insert(TreeId::Auctions, b"auc_1", &v);
            match store.get_auction("sandbox", "seller-1", "auc_1") {
                Ok(_) | Err(StoreError::Corrupt { .. }) => {}
                Err(e) => panic!("byte {i} mask {mask:#x}: unexpected {e}"),
            }
        }
    }

    // Same for the other record kinds.
    let s = scope("k1");
    store.raw_insert(
        TreeId::Idem,
        &s.encode_key(),
        &[IdemRecord::VERSION, 1, 2, 3],
    );
    assert!(matches!(
        store.get_idempotency(&s),
        Err(StoreError::Corrupt { tree: "idem", .. })
    ));
    store.raw_insert(TreeId::Leads, b"lead-1", &[9]);
    assert!(matches!(
        store.get_lead("sandbox", "seller-1", "lead-1"),
        Err(StoreError::UnknownVersion { tree: "leads", .. })
    ));
}

#[test]
fn idempotency_scope_encoding_is_injective() {
    let s = |t: &str, c: &str, m: &str, p: &str, k: &str| IdemScope {
        tenant: t.into(),
        client: c.into(),
        method: m.into(),
        path: p.into(),
        key: k.into(),
    };
    let tricky = [
        s("a", "bc", "POST", "/v1/ping", "k"),
        s("ab", "c", "POST", "/v1/ping", "k"),
        s("abc", "", "POST", "/v1/ping", "k"),
        s("", "abc", "POST", "/v1/ping", "k"),
        s("a", "b", "POST", "/v1/pingk", ""),
        s("a", "b", "POST", "/v1/ping", "k"),
        s("a", "b", "POS", "T/v1/ping", "k"),
        s("a\0", "b", "POST", "/v1/ping", "k"),
        s("a", "\0b", "POST", "/v1/ping", "k"),
        s("a\0\0\0\x01b", "", "POST", "/v1/ping", "k"),
        s("a", "b", "POST", "/v1/ping", "k|x"),
        s("a", "b", "POST", "/v1/ping|k", "x"),
        s("", "", "", "", ""),
    ];
    let mut keys: Vec<Vec<u8>> = tricky.iter().map(IdemScope::encode_key).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "two scopes share a key");

    // And through the store: one scope never sees another's record.
    let store = Store::temporary().unwrap();
    let mut batch = Batch::new();
    batch.put_idempotency(&tricky[0], &idem(1)).unwrap();
    store.write_durable(&batch).unwrap();
    assert!(store.get_idempotency(&tricky[0]).unwrap().is_some());
    assert!(store.get_idempotency(&tricky[1]).unwrap().is_none());
}

#[test]
fn batch_is_atomic_across_trees() {
    let store = Store::temporary().unwrap();
    let s = scope("atomic");
    let mut batch = Batch::new();
    batch
        .put_idempotency(&s, &idem(10))
        .unwrap()
        .put_auction(&auction("auc_a", 10))
        .unwrap()
        .put_lead(&lead("lead-a", "auc_a", 10))
        .unwrap()
        .put_meta("cursor", b"42".to_vec());
    assert_eq!(batch.len(), 7);
    store.write_durable(&batch).unwrap();
    assert_eq!(store.get_idempotency(&s).unwrap(), Some(idem(10)));
    assert_eq!(
        store.get_auction("sandbox", "seller-1", "auc_a").unwrap(),
        Some(auction("auc_a", 10))
    );
    assert_eq!(
        store.get_lead("sandbox", "seller-1", "lead-a").unwrap(),
        Some(lead("lead-a", "auc_a", 10))
    );
    assert_eq!(store.get_meta("cursor").unwrap(), Some(b"42".to_vec()));

    // A batch that fails to build is never applied, not even in part: encoding happens first.
    let mut too_big = auction("auc_big", 10);
    too_big.ping_json = vec![b'x'; records::MAX_VALUE_BYTES];
    let mut batch = Batch::new();
    batch.put_meta("cursor", b"43".to_vec());
    assert!(matches!(
        batch.put_auction(&too_big),
        Err(StoreError::Encode {
            tree: "auctions",
            ..
        })
    ));

    // Deletes in a batch.
    let mut batch = Batch::new();
    batch.delete_idempotency(&s).delete_meta("cursor");
    store.write_durable(&batch).unwrap();
    assert_eq!(store.get_idempotency(&s).unwrap(), None);
    assert_eq!(store.get_meta("cursor").unwrap(), None);
    assert!(store
        .get_auction("sandbox", "seller-1", "auc_a")
        .unwrap()
        .is_some());
}

/// A multi-tree batch is visible all at once to a concurrent reader: it never sees the lead
/// without its auction (the transaction writes the lead's trees first).
#[test]
fn batch_is_never_seen_half_applied() {
    const N: usize = 300;
    let store = Arc::new(Store::temporary().unwrap());
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..N {
                let mut batch = Batch::new();
                batch
                    .put_lead(&lead(&format!("lead-{i}"), &format!("auc-{i}"), 1))
                    .unwrap()
                    .put_auction(&auction(&format!("auc-{i}"), 1))
                    .unwrap();
                store.apply(&batch).unwrap();
            }
        })
    };
    for i in 0..N {
        loop {
            // Lead first: if it is there, the auction written in the same batch must be too.
            let lead_present = store
                .get_lead("sandbox", "seller-1", &format!("lead-{i}"))
                .unwrap()
                .is_some();
            let auction_present = store
                .get_auction("sandbox", "seller-1", &format!("auc-{i}"))
                .unwrap()
                .is_some();
            if lead_present {
                assert!(auction_present, "lead-{i} visible without auc-{i}");
                break;
            }
            std::thread::yield_now();
        }
    }
    writer.join().unwrap();
}

#[test]
fn reopen_reads_back_everything_written() {
    let dir = TempDir::new("reopen");
    let s = scope("reopen");
    {
        let store = open(&options(dir.path()));
        for i in 0..50u64 {
            let mut batch = Batch::new();
            batch
                .put_idempotency(&scope(&format!("k{i}")), &idem(i))
                .unwrap()
                .put_auction(&auction(&format!("auc_{i}"), i))
                .unwrap()
                .put_lead(&lead(&format!("lead_{i}"), &format!("auc_{i}"), i))
                .unwrap();
            store.write_durable(&batch).unwrap();
        }
        let mut batch = Batch::new();
        batch
            .put_idempotency(&s, &idem(99))
            .unwrap()
            .put_meta("m", b"v".to_vec());
        store.write_durable(&batch).unwrap();
    }
    let store = open(&options(dir.path()));
    for i in 0..50u64 {
        assert_eq!(
            store.get_idempotency(&scope(&format!("k{i}"))).unwrap(),
            Some(idem(i))
        );
        assert_eq!(
            store
                .get_auction("sandbox", "seller-1", &format!("auc_{i}"))
                .unwrap(),
            Some(auction(&format!("auc_{i}"), i))
        );
        assert_eq!(
            store
                .get_lead("sandbox", "seller-1", &format!("lead_{i}"))
                .unwrap(),
            Some(lead(&format!("lead_{i}"), &format!("auc_{i}"), i))
        );
    }
    assert_eq!(store.get_idempotency(&s).unwrap(), Some(idem(99)));
    assert_eq!(store.get_meta("m").unwrap(), Some(b"v".to_vec()));
    let counts = store.counts();
    assert_eq!(counts.idempotency, 51);
    assert_eq!(counts.idempotency_index, 51);
    assert_eq!(counts.auctions, 50);
    assert_eq!(counts.leads_index, 50);
    assert_eq!(counts.meta, 1);
}

#[test]
fn refuses_a_newer_layout() {
    let dir = TempDir::new("layout");
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert("layout_version", &[LAYOUT_VERSION + 1]).unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(&options(dir.path())),
        Err(StoreError::UnknownVersion { .. })
    ));
}

#[test]
fn invalid_options_are_refused() {
    let dir = TempDir::new("opts");
    let mut o = options(dir.path());
    o.expiry_interval_ms = 0;
    assert!(matches!(
        Store::open(&o),
        Err(StoreError::InvalidOptions {
            field: "expiry_interval_ms",
            ..
        })
    ));
}

#[test]
fn expiry_deletes_old_records_and_their_index_entries() {
    let store = Store::temporary().unwrap();
    let now = 200 * DAY_MS;
    let old_idem = now - 31 * DAY_MS;
    let fresh_idem = now - 29 * DAY_MS;
    let old_rec = now - 91 * DAY_MS;
    let fresh_rec = now - 89 * DAY_MS;

    let mut batch = Batch::new();
    batch
        .put_idempotency(&scope("old"), &idem(old_idem))
        .unwrap()
        .put_idempotency(&scope("fresh"), &idem(fresh_idem))
        .unwrap()
        // Exactly one retention old: expired.
        .put_idempotency(&scope("edge"), &idem(now - 30 * DAY_MS))
        .unwrap()
        .put_auction(&auction("auc_old", old_rec))
        .unwrap()
        .put_auction(&auction("auc_fresh", fresh_rec))
        .unwrap()
        .put_lead(&lead("lead_old", "auc_old", old_rec))
        .unwrap()
        .put_lead(&lead("lead_fresh", "auc_fresh", fresh_rec))
        .unwrap()
        .put_meta("forever", b"1".to_vec());
    store.write_durable(&batch).unwrap();

    // An auction rewritten later (closed, then posted) keeps its created_ms: same index key.
    let mut rewritten = auction("auc_fresh", fresh_rec);
    for state in ["delivering", "sold"] {
        rewritten.post.state = state.into();
        let mut b = Batch::new();
        b.put_auction(&rewritten).unwrap();
        store.write_durable(&b).unwrap();
    }
    let counts = store.counts();
    assert_eq!(counts.auctions, 2);
    assert_eq!(
        counts.auctions_index, 2,
        "a rewrite duplicated the index entry"
    );

    let stats = store.expire(now).unwrap();
    assert_eq!(stats.idempotency, 2);
    assert_eq!(stats.auctions, 1);
    assert_eq!(stats.leads, 1);
    assert_eq!(stats.stale_index, 0);

    assert!(store.get_idempotency(&scope("old")).unwrap().is_none());
    assert!(store.get_idempotency(&scope("edge")).unwrap().is_none());
    assert!(store.get_idempotency(&scope("fresh")).unwrap().is_some());
    assert!(store
        .get_auction("sandbox", "seller-1", "auc_old")
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .get_auction("sandbox", "seller-1", "auc_fresh")
            .unwrap(),
        Some(rewritten)
    );
    assert!(store
        .get_lead("sandbox", "seller-1", "lead_old")
        .unwrap()
        .is_none());
    assert!(store
        .get_lead("sandbox", "seller-1", "lead_fresh")
        .unwrap()
        .is_some());
    assert_eq!(store.get_meta("forever").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        store.counts(),
        StoreCounts {
            idempotency: 1,
            idempotency_index: 1,
            auctions: 1,
            auctions_index: 1,
            leads: 1,
            leads_index: 1,
            meta: 1,
            ..StoreCounts::default()
        }
    );

    // A second pass at the same time finds nothing; later, the fresh ones go too.
    assert_eq!(store.expire(now).unwrap(), ExpiryStats::default());
    let later = store.expire(now + 91 * DAY_MS).unwrap();
    assert_eq!(later.deleted(), 3);
    let c = store.counts();
    assert_eq!(
        c.idempotency + c.idempotency_index + c.auctions + c.auctions_index + c.leads,
        0
    );
}

#[test]
fn expiry_cleans_stale_index_entries_without_deleting_live_records() {
    let store = Store::temporary().unwrap();
    let now = 200 * DAY_MS;
    // Written once with an old created_ms, then rewritten with a fresh one: the old entry is
    // stale and must not take the fresh record with it.
    let mut b = Batch::new();
    b.put_auction(&auction("auc_moved", now - 100 * DAY_MS))
        .unwrap();
    store.write_durable(&b).unwrap();
    let mut b = Batch::new();
    b.put_auction(&auction("auc_moved", now - DAY_MS)).unwrap();
    // And a deleted idempotency record leaves its entry behind.
    b.put_idempotency(&scope("gone"), &idem(now - 40 * DAY_MS))
        .unwrap();
    store.write_durable(&b).unwrap();
    let mut b = Batch::new();
    b.delete_idempotency(&scope("gone"));
    store.write_durable(&b).unwrap();

    let stats = store.expire(now).unwrap();
    assert_eq!(stats.deleted(), 0);
    assert_eq!(stats.stale_index, 2);
    assert!(store
        .get_auction("sandbox", "seller-1", "auc_moved")
        .unwrap()
        .is_some());
    let c = store.counts();
    assert_eq!((c.auctions, c.auctions_index), (1, 1));
    assert_eq!((c.idempotency, c.idempotency_index), (0, 0));
}

#[test]
fn expiry_skips_unreadable_records() {
    let store = Store::temporary().unwrap();
    let now = 200 * DAY_MS;
    let mut b = Batch::new();
    b.put_lead(&lead("lead_bad", "a", now - 100 * DAY_MS))
        .unwrap();
    store.write_durable(&b).unwrap();
    store.raw_insert(
        TreeId::Leads,
        &super::record_key("sandbox", "lead_bad", "seller-1"),
        &[77, 1, 2],
    );
    let stats = store.expire(now).unwrap();
    assert_eq!(stats.unreadable, 1);
    assert_eq!(stats.leads, 0);
    assert_eq!(store.counts().leads, 1);
}

#[test]
fn expiry_thread_runs_and_stops_on_drop() {
    let dir = TempDir::new("expiry");
    let mut o = options(dir.path());
    o.idempotency_retention_ms = DAY_MS;
    o.expiry_interval_ms = 10;
    let store = Arc::new(Store::open(&o).unwrap());
    let born = 1_700_000_000_000;
    let mut b = Batch::new();
    b.put_idempotency(&scope("x"), &idem(born)).unwrap();
    store.write_durable(&b).unwrap();
    // The thread expires as of its clock, not the system's: a manual one holds the record young.
    let clock = Clock::manual(born + DAY_MS - 1);
    let handle = store.spawn_expiry(clock.clone()).unwrap();
    // A few passes (10 ms apart, on the monotonic clock) leave a record younger than its
    // retention alone.
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.get_idempotency(&scope("x")).unwrap().is_some());
    // One millisecond later it is exactly one retention old: the next pass deletes it.
    clock.advance(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get_idempotency(&scope("x")).unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "expiry never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = std::time::Instant::now();
    drop(handle);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop did not stop the thread"
    );
}

fn small_batch(i: u64) -> Batch {
    let mut b = Batch::new();
    b.put_idempotency(&scope(&format!("gc_{i}")), &idem(i))
        .unwrap();
    b
}

/// The drivers a core may run on here: legacy always, io_uring where the kernel allows it.
fn drivers() -> Vec<crate::config::Driver> {
    let mut d = vec![crate::config::Driver::Legacy];
    if monoio::utils::detect_uring() {
        d.push(crate::config::Driver::Uring);
    }
    d
}

/// Runs `make()` as a core would: on `driver`, with a legacy core's blocking thread attached.
fn on_core<F, Fut>(driver: crate::config::Driver, make: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    crate::runtime::block_on_core(driver, 0, 256, make).expect("core runtime")
}

async fn start_log(
    store: &Arc<Store>,
    driver: crate::config::Driver,
    max_waiting: usize,
) -> CoreLog {
    CoreLog::start(
        Arc::clone(store),
        0,
        driver == crate::config::Driver::Uring,
        max_waiting,
        wal::MAX_SEGMENT_BYTES,
        Arc::new(CommitCounters::new()),
        None,
    )
    .await
    .unwrap()
}

#[test]
fn the_log_groups_concurrent_commits_and_applies_them_before_answering() {
    for driver in drivers() {
        let dir = TempDir::new("group");
        let store = Arc::new(open(&options(dir.path())));
        let counters = Arc::new(CommitCounters::new());
        on_core(driver, || {
            let store = Arc::clone(&store);
            let counters = Arc::clone(&counters);
            async move {
                let log = CoreLog::start(
                    Arc::clone(&store),
                    0,
                    driver == crate::config::Driver::Uring,
                    1024,
                    wal::MAX_SEGMENT_BYTES,
                    counters,
                    None,
                )
                .await
                .unwrap();
                let tasks: Vec<_> = (0..64u64)
                    .map(|i| {
                        let (log, store) = (log.clone(), Arc::clone(&store));
                        monoio::spawn(async move {
                            log.commit(small_batch(i)).await.unwrap();
                            // Answered means readable, from any thread.
                            assert_eq!(
                                store.get_idempotency(&scope(&format!("gc_{i}"))).unwrap(),
                                Some(idem(i))
                            );
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                log.shutdown().await;
            }
        });
        let stats = counters.snapshot();
        assert_eq!(stats.commits, 64, "{driver:?}");
        assert_eq!(stats.failed, 0);
        assert!(
            stats.groups < 64,
            "{driver:?}: 64 concurrent commits took {} log writes: no grouping",
            stats.groups
        );
        assert_eq!(stats.latency_us_buckets.iter().sum::<u64>(), 64);
        assert_eq!(stats.group_size_buckets.iter().sum::<u64>(), stats.groups);
        assert!(store.wal_applied(0).unwrap() >= 64);
    }
}

/// Small segments force rotations: the checkpoint thread prepares each next segment (zeros),
/// seals and deletes the full ones, and a restart finds every write, with preallocated tails
/// read as clean ends rather than torn ones.
#[test]
fn segments_rotate_through_prepared_files_and_sealed_ones_are_deleted() {
    const SEGMENT: u64 = 4096;
    for driver in drivers() {
        let dir = TempDir::new("rotate");
        let store = Arc::new(open(&options(dir.path())));
        let checkpointer = Checkpointer::start(Arc::clone(&store)).unwrap();
        let counters = Arc::new(CommitCounters::new());
        on_core(driver, || {
            let (store, counters) = (Arc::clone(&store), Arc::clone(&counters));
            let checkpointer = &checkpointer;
            async move {
                let uring = driver == crate::config::Driver::Uring;
                let log =
                    CoreLog::start(store, 0, uring, 64, SEGMENT, counters, Some(checkpointer))
                        .await
                        .unwrap();
                // One at a time, so every write can move the rotation along; a commit is a few
                // hundred bytes, so this fills dozens of segments.
                for i in 0..400u64 {
                    log.commit(small_batch(i)).await.unwrap();
                    if i % 10 == 0 {
                        // Give the checkpoint thread time to prepare the next segment.
                        monoio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                log.shutdown().await;
            }
        });
        drop(checkpointer);
        let core_dir = wal::core_dir(&dir.path().join("wal"), 0);
        let left = std::fs::read_dir(&core_dir).unwrap().count();
        assert!(
            left <= 3,
            "{driver:?}: {left} segments left: sealed ones were not deleted"
        );
        // The segment left in use was prepared ahead: full length already, mostly zeros.
        let in_use = std::fs::read_dir(&core_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        let bytes = std::fs::read(&in_use).unwrap();
        assert!(
            bytes.len() as u64 >= SEGMENT && bytes.ends_with(&[0u8; 64]),
            "{driver:?}: {} is not a preallocated segment",
            in_use.display()
        );
        drop(store);
        let store = open(&options(dir.path()));
        for i in 0..400u64 {
            assert_eq!(
                store.get_idempotency(&scope(&format!("gc_{i}"))).unwrap(),
                Some(idem(i)),
                "{driver:?}: write {i} lost across rotations"
            );
        }
    }
}

#[test]
fn a_prepared_segment_that_was_never_written_is_a_clean_end() {
    let dir = TempDir::new("prepared");
    drop(open(&options(dir.path())));
    let path = write_segment(dir.path(), 0, 1, &[(1, small_batch(1))]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(8192, 0);
    std::fs::write(&path, &bytes).unwrap();
    // The next one was being prepared: zeros only, header not even written.
    let core_dir = wal::core_dir(&dir.path().join("wal"), 0);
    std::fs::write(core_dir.join(format!("{:016}.log", 2)), vec![0u8; 4096]).unwrap();
    std::fs::write(core_dir.join(format!("{:016}.log", 3)), b"").unwrap();
    let store = open(&options(dir.path()));
    assert_eq!(
        store.get_idempotency(&scope("gc_1")).unwrap(),
        Some(idem(1))
    );
}

/// Polls a future once with a waker that does nothing: enough to enqueue a commit.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let waker = futures::task::noop_waker();
    f.poll(&mut std::task::Context::from_waker(&waker))
}

#[test]
fn a_full_log_queue_is_refused_not_grown_and_a_closed_log_refuses() {
    for driver in drivers() {
        let dir = TempDir::new("full");
        let store = Arc::new(open(&options(dir.path())));
        on_core(driver, || {
            let store = Arc::clone(&store);
            async move {
                let log = start_log(&store, driver, 4).await;
                // Enqueued without yielding, so the flusher has not taken any of them yet.
                let mut pending = Vec::new();
                let mut overloaded = 0;
                for i in 0..9u64 {
                    let mut f = Box::pin(log.commit(small_batch(i)));
                    match poll_once(f.as_mut()) {
                        std::task::Poll::Pending => pending.push(f),
                        std::task::Poll::Ready(Err(StoreError::Overloaded)) => overloaded += 1,
                        std::task::Poll::Ready(other) => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!((pending.len(), overloaded), (4, 5), "{driver:?}");
                assert_eq!(log.queued(), 4);
                log.close();
                // What was accepted before the close still completes.
                for f in pending {
                    f.await.unwrap();
                }
                let r = monoio::time::timeout(Duration::from_secs(10), log.commit(small_batch(99)))
                    .await
                    .expect("commit after close hung");
                assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
                log.shutdown().await;
                assert_eq!(log.queued(), 0);
            }
        });
        for i in 0..4u64 {
            assert!(store
                .get_idempotency(&scope(&format!("gc_{i}")))
                .unwrap()
                .is_some());
        }
    }
}

/// Env var that turns [`crash_child`] into the writer half of the kill -9 tests: `DIR MODE`,
/// where MODE is `index` (the usual path) or `log-only` (acknowledged before sled sees anything,
/// i.e. killed between the log write and the index update).
const CRASH_DIR_ENV: &str = "GAVEL_STORE_CRASH_DIR";
const CRASH_COMMITS: u64 = 200;

/// Not a test of its own: when a kill -9 test runs this binary with [`CRASH_DIR_ENV`] set, it
/// commits records through a [`CoreLog`], says so on stdout, and waits to be killed.
#[test]
fn crash_child() {
    let Ok(arg) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let (dir, mode) = arg.rsplit_once(' ').unwrap();
    let store = Arc::new(open(&options(Path::new(dir))));
    let log_only = mode == "log-only";
    on_core(crate::config::Driver::Legacy, || async move {
        let log = start_log(&store, crate::config::Driver::Legacy, 1024).await;
        if log_only {
            log.skip_index();
        }
        let tasks: Vec<_> = (0..CRASH_COMMITS)
            .map(|i| {
                let log = log.clone();
                monoio::spawn(async move {
                    let mut batch = Batch::new();
                    batch
                        .put_auction(&auction(&format!("crash_{i}"), i))
                        .unwrap()
                        .put_idempotency(&scope(&format!("crash_{i}")), &idem(i))
                        .unwrap();
                    log.commit(batch).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        if log_only {
            // Nothing reached sled: recovery alone must bring these back.
            assert_eq!(
                store.get_auction("sandbox", "seller-1", "crash_0").unwrap(),
                None
            );
        }
    });
    println!("GAVEL_CRASH_READY");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs [`crash_child`] in `mode`, kills it with SIGKILL once it says its commits were
/// acknowledged (no destructor, no final flush), and checks every acknowledged write is there.
fn killed_writer_loses_nothing(mode: &str) {
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let this_module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            &format!("{this_module}::crash_child"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, format!("{} {mode}", dir.path().display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("GAVEL_CRASH_READY"));
    // `Child::kill` is SIGKILL on Unix.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "the child exited before committing");

    let store = open(&options(dir.path()));
    for i in 0..CRASH_COMMITS {
        assert_eq!(
            store
                .get_auction("sandbox", "seller-1", &format!("crash_{i}"))
                .unwrap(),
            Some(auction(&format!("crash_{i}"), i)),
            "{mode}: acknowledged auction crash_{i} lost"
        );
        assert_eq!(
            store
                .get_idempotency(&scope(&format!("crash_{i}")))
                .unwrap(),
            Some(idem(i))
        );
    }
    // Recovery moved everything into sled and removed the logs.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("wal").join("core-0"))
        .unwrap()
        .collect();
    assert!(
        left.is_empty(),
        "{mode}: segments left after recovery: {left:?}"
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    killed_writer_loses_nothing("index");
}

#[test]
fn writes_acknowledged_before_the_index_update_survive_kill_9() {
    killed_writer_loses_nothing("log-only");
}

/// Writes one segment of frames `(seq, batch)` for `core` under `dir`'s log directory.
fn write_segment(dir: &Path, core: usize, id: u64, frames: &[(u64, Batch)]) -> PathBuf {
    let core_dir = wal::core_dir(&dir.join("wal"), core);
    std::fs::create_dir_all(&core_dir).unwrap();
    let mut bytes = wal::SEGMENT_MAGIC.to_vec();
    for (seq, batch) in frames {
        wal::encode_frame(&mut bytes, *seq, &batch.ops);
    }
    let path = core_dir.join(format!("{id:016}.log"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn recovery_ignores_a_torn_or_corrupt_tail_from_the_first_bad_frame() {
    for damage in ["torn", "bitflip", "garbage"] {
        let dir = TempDir::new("torn");
        // Create the database first, as a server would have.
        drop(open(&options(dir.path())));
        let path = write_segment(
            dir.path(),
            0,
            1,
            &[
                (1, small_batch(1)),
                (2, small_batch(2)),
                (3, small_batch(3)),
            ],
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let mut third = wal::SEGMENT_MAGIC.to_vec();
        let base = {
            let mut two = wal::SEGMENT_MAGIC.to_vec();
            wal::encode_frame(&mut two, 1, &small_batch(1).ops);
            wal::encode_frame(&mut two, 2, &small_batch(2).ops);
            two.len()
        };
        wal::encode_frame(&mut third, 3, &small_batch(3).ops);
        match damage {
            // The last write was cut short by the crash.
            "torn" => bytes.truncate(bytes.len() - 5),
            // A bit of the last frame's body changed on disk.
            "bitflip" => {
                let at = bytes.len() - 3;
                bytes[at] ^= 0x40;
            }
            // Junk where the last frame's header should be.
            _ => bytes[base..base + 8].copy_from_slice(&[0xff; 8]),
        }
        std::fs::write(&path, &bytes).unwrap();
        // A later segment of the same core is ignored too: it follows a bad frame.
        write_segment(dir.path(), 0, 2, &[(4, small_batch(4))]);
        let store = open(&options(dir.path()));
        for i in 1..=2 {
            assert!(
                store
                    .get_idempotency(&scope(&format!("gc_{i}")))
                    .unwrap()
                    .is_some(),
                "{damage}: good frame {i} lost"
            );
        }
        for i in 3..=4 {
            assert_eq!(
                store.get_idempotency(&scope(&format!("gc_{i}"))).unwrap(),
                None,
                "{damage}: frame {i} after the bad one was applied"
            );
        }
        // The next run's sequence numbers start past every frame read (the logs are gone now,
        // so the unread ones cannot come back).
        assert!(store.next_wal_seq() > 2, "{damage}");
        drop(third);
    }
}

#[test]
fn recovery_replays_only_what_sled_lacks_and_in_global_order() {
    let dir = TempDir::new("marks");
    {
        let store = open(&options(dir.path()));
        // Core 0 applied through seq 5 before the crash; sled then took a newer direct write
        // (as the webhook worker does) that an old frame must not overwrite.
        store.set_wal_applied(0, 5).unwrap();
        let mut newer = Batch::new();
        newer.put_idempotency(&scope("k"), &idem(500)).unwrap();
        store.write_durable(&newer).unwrap();
    }
    let batch = |v: u64| {
        let mut b = Batch::new();
        b.put_idempotency(&scope("k"), &idem(v)).unwrap();
        b
    };
    // seq 4 (covered by core 0's mark) must be skipped; core 1's frames 6 and 8 and core 0's 7
    // interleave: the last by sequence (8, core 1) wins.
    write_segment(dir.path(), 0, 1, &[(4, batch(4)), (7, batch(7))]);
    write_segment(dir.path(), 1, 1, &[(6, batch(6)), (8, batch(8))]);
    let store = open(&options(dir.path()));
    assert_eq!(store.get_idempotency(&scope("k")).unwrap(), Some(idem(8)));
    assert_eq!(store.wal_applied(0).unwrap(), 7);
    assert_eq!(store.wal_applied(1).unwrap(), 8);
    drop(store);
    // Only core 0's seq 4 frame was older than its mark.
    let dir2 = TempDir::new("marks2");
    {
        let store = open(&options(dir2.path()));
        store.set_wal_applied(0, 5).unwrap();
        let mut newer = Batch::new();
        newer.put_idempotency(&scope("k"), &idem(500)).unwrap();
        store.write_durable(&newer).unwrap();
    }
    write_segment(dir2.path(), 0, 1, &[(4, batch(4))]);
    let store = open(&options(dir2.path()));
    assert_eq!(store.get_idempotency(&scope("k")).unwrap(), Some(idem(500)));
}

#[test]
fn sequence_numbers_keep_rising_across_restarts() {
    let dir = TempDir::new("seq");
    for round in 0..3u64 {
        let store = Arc::new(open(&options(dir.path())));
        on_core(crate::config::Driver::Legacy, || {
            let store = Arc::clone(&store);
            async move {
                let log = start_log(&store, crate::config::Driver::Legacy, 16).await;
                // Acknowledged but never indexed: only the log holds the newest value.
                log.skip_index();
                log.commit({
                    let mut b = Batch::new();
                    b.put_idempotency(&scope("same"), &idem(round)).unwrap();
                    b
                })
                .await
                .unwrap();
                log.shutdown().await;
            }
        });
        drop(store);
        let store = open(&options(dir.path()));
        assert_eq!(
            store.get_idempotency(&scope("same")).unwrap(),
            Some(idem(round)),
            "round {round}: the newest write lost to an older mark"
        );
    }
}

#[test]
fn commit_stats_quantiles_and_merge() {
    let mut a = CommitStats {
        commits: 4,
        groups: 2,
        latency_us_max: 900,
        ..CommitStats::default()
    };
    a.latency_us_buckets[3] = 3; // 4..=7 µs
    a.latency_us_buckets[10] = 1; // 512..=1023 µs
    assert_eq!(a.latency_us_quantile(0.5), 7);
    assert_eq!(a.latency_us_quantile(0.75), 7);
    assert_eq!(a.latency_us_quantile(1.0), 900);
    assert_eq!(a.mean_group_size(), 2.0);
    let mut b = a.clone();
    b.merge(&a);
    assert_eq!(b.commits, 8);
    assert_eq!(b.latency_us_buckets[3], 6);
    assert_eq!(CommitStats::bucket_upper_us(0), 0);
    assert_eq!(CommitStats::bucket_upper_us(1), 1);
    assert_eq!(CommitStats::bucket_upper_us(4), 15);
}

fn delivery(event_id: &str, endpoint: &str, created_ms: u64, due: Option<u64>) -> DeliveryRecord {
    DeliveryRecord {
        event_id: event_id.into(),
        endpoint_id: endpoint.into(),
        tenant: "sandbox".into(),
        client: "seller".into(),
        event_type: "lead.posted".into(),
        created_ms,
        body: br#"{"type":"lead.posted"}"#.to_vec(),
        state: if due.is_some() {
            "pending"
        } else {
            "delivered"
        }
        .into(),
        next_attempt_ms: due,
        attempts: vec![WebhookAttemptRecord {
            at_ms: created_ms,
            result: "failed".into(),
            http_status: Some(503),
            error: None,
            latency_us: 1200,
        }],
        schedule_base: 0,
    }
}

#[test]
fn outbox_due_index_is_per_endpoint_and_in_due_order() {
    let store = Store::temporary().unwrap();
    let mut b = Batch::new();
    // "a" and "ab" must not see each other's entries although one id prefixes the other.
    b.put_delivery(&delivery("evt_3", "a", 1, Some(300)))
        .unwrap();
    b.put_delivery(&delivery("evt_1", "a", 1, Some(100)))
        .unwrap();
    b.put_delivery(&delivery("evt_2", "ab", 1, Some(50)))
        .unwrap();
    b.put_delivery(&delivery("evt_4", "a", 1, None)).unwrap();
    store.write_durable(&b).unwrap();
    assert_eq!(
        round_trip(&delivery("evt_1", "a", 1, Some(5))),
        delivery("evt_1", "a", 1, Some(5))
    );

    let none = |_: &str| false;
    let ids = |v: Vec<Due>| v.into_iter().map(|d| d.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.due_deliveries("a", 1000, 10, &none).unwrap()),
        ["evt_1", "evt_3"]
    );
    assert_eq!(
        ids(store.due_deliveries("a", 200, 10, &none).unwrap()),
        ["evt_1"]
    );
    assert_eq!(
        ids(store.due_deliveries("a", 1000, 1, &none).unwrap()),
        ["evt_1"]
    );
    let busy = |id: &str| id == "evt_1";
    assert_eq!(
        ids(store.due_deliveries("a", 1000, 10, &busy).unwrap()),
        ["evt_3"]
    );
    assert_eq!(store.next_due("a", &busy).unwrap(), Some(300));
    assert_eq!(
        ids(store.due_deliveries("ab", 1000, 10, &none).unwrap()),
        ["evt_2"]
    );
    assert_eq!(
        (
            store.count_due("a"),
            store.count_due("ab"),
            store.count_due("b")
        ),
        (2, 1, 0)
    );

    // Moving a due time: the old entry goes, the new one comes, in one batch.
    let mut moved = delivery("evt_1", "a", 1, Some(900));
    moved.attempts.clear();
    let mut b = Batch::new();
    b.delete_due("a", 100, "evt_1")
        .put_delivery(&moved)
        .unwrap();
    store.write_durable(&b).unwrap();
    assert_eq!(
        ids(store.due_deliveries("a", 1000, 10, &none).unwrap()),
        ["evt_3", "evt_1"]
    );
    assert_eq!(store.get_delivery("evt_1", "a").unwrap(), Some(moved));
    assert_eq!(store.get_deliveries("evt_1").unwrap().len(), 1);
    assert!(store.get_delivery("evt_1", "ab").unwrap().is_none());
}

#[test]
fn outbox_listing_pages_newest_first_with_a_cursor() {
    let store = Store::temporary().unwrap();
    let mut b = Batch::new();
    for i in 0..7 {
        b.put_delivery(&delivery(&format!("evt_{i}"), "a", 1, None))
            .unwrap();
    }
    store.write_durable(&b).unwrap();
    let all = |_: &DeliveryRecord| true;
    let (page, next) = store.list_deliveries(None, 3, 100, &all).unwrap();
    let ids: Vec<_> = page.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["evt_6", "evt_5", "evt_4"]);
    let (page, next) = store
        .list_deliveries(next.as_deref(), 3, 100, &all)
        .unwrap();
    assert_eq!(page[0].event_id, "evt_3");
    let (page, next) = store
        .list_deliveries(next.as_deref(), 3, 100, &all)
        .unwrap();
    assert_eq!((page.len(), next), (1, None));
    // A damaged record is skipped, not fatal to the listing.
    store.raw_insert(TreeId::Outbox, b"evt_35/a", b"\x01garbage");
    let (page, _) = store.list_deliveries(None, 100, 100, &all).unwrap();
    assert_eq!(page.len(), 7);
    assert!(store.get_deliveries("evt_35").is_err());
    // A scan limit stops early and says where to go on.
    let odd = |r: &DeliveryRecord| r.event_id.ends_with(['1', '3', '5']);
    let (page, next) = store.list_deliveries(None, 10, 2, &odd).unwrap();
    assert_eq!((page.len(), next.as_deref()), (1, Some(&b"evt_5/a"[..])));
}

#[test]
fn expiry_removes_old_outbox_deliveries() {
    let store = Store::temporary().unwrap();
    let mut b = Batch::new();
    b.put_delivery(&delivery("evt_old", "a", 1_000, None))
        .unwrap();
    b.put_delivery(&delivery("evt_new", "a", 50 * DAY_MS, None))
        .unwrap();
    store.write_durable(&b).unwrap();
    let stats = store.expire(1_000 + 91 * DAY_MS).unwrap();
    assert_eq!(stats.outbox, 1);
    assert!(store.get_delivery("evt_old", "a").unwrap().is_none());
    assert!(store.get_delivery("evt_new", "a").unwrap().is_some());
    assert_eq!((store.counts().outbox, store.counts().outbox_index), (1, 1));
}

#[test]
fn auction_ids_are_scoped_by_tenant() {
    let store = Store::temporary().unwrap();
    let sandbox = auction("acme_order_000123", 10);
    let mut live = auction("acme_order_000123", 20);
    live.tenant = "production".into();
    let mut batch = Batch::new();
    batch
        .put_auction(&sandbox)
        .unwrap()
        .put_auction(&live)
        .unwrap();
    store.write_durable(&batch).unwrap();
    assert_eq!(
        store
            .get_auction("sandbox", "seller-1", "acme_order_000123")
            .unwrap(),
        Some(sandbox)
    );
    assert_eq!(
        store
            .get_auction("production", "seller-1", "acme_order_000123")
            .unwrap(),
        Some(live)
    );
    // A record written before ids were scoped (under the bare id) is found by its own tenant
    // only.
    let old = auction("auc_before_scoping", 30);
    let bytes = records::encode(b"auc_before_scoping", &old).unwrap();
    store.raw_insert(TreeId::Auctions, b"auc_before_scoping", &bytes);
    assert_eq!(
        store
            .get_auction("sandbox", "seller-1", "auc_before_scoping")
            .unwrap(),
        Some(old)
    );
    assert_eq!(
        store
            .get_auction("production", "seller-1", "auc_before_scoping")
            .unwrap(),
        None
    );
}

#[test]
fn lead_ids_are_scoped_by_tenant() {
    let store = Store::temporary().unwrap();
    let sandbox = lead("ld_same", "auc_s", 10);
    let mut live = lead("ld_same", "auc_p", 20);
    live.tenant = "production".into();
    let mut batch = Batch::new();
    batch.put_lead(&sandbox).unwrap().put_lead(&live).unwrap();
    store.write_durable(&batch).unwrap();
    assert_eq!(
        store.get_lead("sandbox", "seller-1", "ld_same").unwrap(),
        Some(sandbox)
    );
    assert_eq!(
        store.get_lead("production", "seller-1", "ld_same").unwrap(),
        Some(live)
    );
}

/// The delivery states are the words outbox records hold and the webhook admin API shows; a
/// change would misread records already on disk.
#[test]
fn delivery_states_keep_their_record_words() {
    let words: Vec<_> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(words, ["pending", "delivered", "exhausted", "disabled"]);
    for s in DeliveryState::ALL {
        assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
    }
    assert_eq!(DeliveryState::parse("Pending"), None);
}

/// Values written before records named their seller (layout 1) still decode, through `get` and
/// through the expiry thread's `created_ms`: an auction's seller is then its client.
#[test]
fn layout_1_auctions_and_leads_read_back_with_a_seller() {
    let a = auction("auc_old", 7);
    let v1 = v1_auction(&a);
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&v1).unwrap());
    let back = records::decode::<AuctionRecord>(b"k", &bytes).expect("layout 1 decodes");
    assert_eq!(back.seller, a.client);
    assert_eq!(back.outcomes, a.outcomes);
    assert_eq!(
        records::created_ms::<AuctionRecord>(b"k", &bytes).unwrap(),
        7
    );

    let l = lead("ld_old", "auc_old", 9);
    let v1 = v1_lead(&l);
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&v1).unwrap());
    let back = records::decode::<LeadRecord>(b"k", &bytes).expect("layout 1 decodes");
    assert_eq!(
        (back.seller.as_str(), back.buyer_id.as_str()),
        ("", "buyer-3")
    );
    // A version newer than any known stays an error.
    bytes[0] = 3;
    assert!(matches!(
        records::decode::<LeadRecord>(b"k", &bytes),
        Err(StoreError::UnknownVersion { .. })
    ));
}

/// Two sellers of one tenant may use the same id at once: each has its own record, neither
/// overwrites the other, and a by-id read finds both, in seller order.
#[test]
fn ids_are_scoped_by_seller() {
    let store = Store::temporary().unwrap();
    let a = auction("order-1", 10);
    let mut b = auction("order-1", 20);
    b.seller = "seller-2".into();
    let la = lead("ld_same", "order-1", 10);
    let mut lb = lead("ld_same", "order-1", 20);
    lb.seller = "seller-2".into();
    lb.buyer_id = "buyer-9".into();
    let mut batch = Batch::new();
    batch.put_auction(&a).unwrap().put_auction(&b).unwrap();
    batch.put_lead(&la).unwrap().put_lead(&lb).unwrap();
    store.write_durable(&batch).unwrap();
    assert_eq!(
        store.get_auction("sandbox", "seller-1", "order-1").unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_auction("sandbox", "seller-2", "order-1").unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        store.get_auction("sandbox", "seller-3", "order-1").unwrap(),
        None
    );
    assert_eq!(
        store.get_lead("sandbox", "seller-2", "ld_same").unwrap(),
        Some(lb.clone())
    );
    assert_eq!(
        store.auctions_by_id("sandbox", "order-1").unwrap(),
        vec![a, b]
    );
    assert_eq!(
        store.leads_by_id("sandbox", "ld_same").unwrap(),
        vec![la, lb]
    );
    // An id that merely starts like another is another id.
    assert!(store
        .auctions_by_id("sandbox", "order-")
        .unwrap()
        .is_empty());
    assert!(store
        .auctions_by_id("production", "order-1")
        .unwrap()
        .is_empty());
}

/// A by-id read looks at no more than MAX_SAME_ID_SELLERS rows, however many sellers used the id;
/// a seller's own record stays reachable by naming the seller.
#[test]
fn a_by_id_read_is_bounded() {
    let store = Store::temporary().unwrap();
    let mut batch = Batch::new();
    for i in 0..MAX_SAME_ID_SELLERS + 4 {
        let mut a = auction("popular", 10);
        a.seller = format!("seller-{i:02}");
        batch.put_auction(&a).unwrap();
    }
    store.write_durable(&batch).unwrap();
    let found = store.auctions_by_id("sandbox", "popular").unwrap();
    assert_eq!(found.len(), MAX_SAME_ID_SELLERS);
    let last = format!("seller-{:02}", MAX_SAME_ID_SELLERS + 3);
    assert!(store
        .get_auction("sandbox", &last, "popular")
        .unwrap()
        .is_some());
}

fn v1_auction(a: &AuctionRecord) -> super::legacy::AuctionRecordV1 {
    super::legacy::AuctionRecordV1 {
        id: a.id.clone(),
        tenant: a.tenant.clone(),
        client: a.client.clone(),
        ping_json: a.ping_json.clone(),
        created_ms: a.created_ms,
        deadline_ms: a.deadline_ms,
        closed_ms: a.closed_ms,
        status: a.status.clone(),
        reject_reason: a.reject_reason.clone(),
        outcomes: a.outcomes.clone(),
        ranked: a.ranked.clone(),
        payout_cents: a.payout_cents,
        token_valid_until_ms: a.token_valid_until_ms,
        post: a.post.clone(),
        post_attempts: a.post_attempts.clone(),
    }
}

fn v1_lead(l: &LeadRecord) -> super::legacy::LeadRecordV1 {
    super::legacy::LeadRecordV1 {
        lead_uuid: l.lead_uuid.clone(),
        auction_id: l.auction_id.clone(),
        tenant: l.tenant.clone(),
        buyer_id: l.buyer_id.clone(),
        buyer_lead_id: l.buyer_lead_id.clone(),
        created_ms: l.created_ms,
        history: l.history.clone(),
    }
}

/// What the release before seller-scoped ids wrote (layout-1 values under `tenant ++ 0 ++ id`)
/// is found by its own seller only (an auction's seller is its client, a lead's is its
/// auction's), counts for by-id reads, gives way to a rewrite under the current key, expires, and
/// the database is marked layout 2 when opened.
#[test]
fn layout_1_keys_are_read_for_their_seller_only() {
    let dir = TempDir::new("layout1");
    let now = 200 * DAY_MS;
    let mut a = auction("auc_old", now - 100 * DAY_MS);
    a.seller = a.client.clone();
    let mut l = lead("ld_old", "auc_old", now - 100 * DAY_MS);
    l.seller = a.client.clone();
    {
        let store = open(&options(dir.path()));
        legacy::write_layout_1(&store, &[v1_auction(&a)], &[v1_lead(&l)]).unwrap();
    }
    let store = open(&options(dir.path()));
    assert_eq!(
        store.db.get("layout_version").unwrap().as_deref(),
        Some(&[LAYOUT_VERSION][..])
    );
    assert_eq!(
        store.get_auction("sandbox", &a.client, "auc_old").unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_auction("sandbox", "seller-1", "auc_old").unwrap(),
        None
    );
    assert_eq!(
        store.get_lead("sandbox", &a.client, "ld_old").unwrap(),
        Some(l.clone())
    );
    assert_eq!(
        store.get_lead("sandbox", "seller-1", "ld_old").unwrap(),
        None
    );
    // Another seller uses the old id now: both are found by id, each by its own seller.
    let mut other = auction("auc_old", now);
    other.seller = "seller-2".into();
    let mut batch = Batch::new();
    batch.put_auction(&other).unwrap();
    store.write_durable(&batch).unwrap();
    assert_eq!(
        store.auctions_by_id("sandbox", "auc_old").unwrap(),
        vec![other.clone(), a.clone()]
    );
    // A rewrite goes under the current key and shadows the old copy.
    let mut moved = a.clone();
    moved.status = "no_bid".into();
    let mut batch = Batch::new();
    batch.put_auction(&moved).unwrap();
    store.write_durable(&batch).unwrap();
    assert_eq!(
        store.get_auction("sandbox", &a.client, "auc_old").unwrap(),
        Some(moved.clone())
    );
    assert_eq!(
        store.auctions_by_id("sandbox", "auc_old").unwrap(),
        vec![moved, other]
    );
    // Retention works over both key forms.
    let stats = store.expire(now + DAY_MS).unwrap();
    assert_eq!((stats.auctions, stats.leads), (2, 1), "{stats:?}");
    assert_eq!(
        store.auctions_by_id("sandbox", "auc_old").unwrap().len(),
        1,
        "only the other seller's fresh auction is left"
    );
    assert!(store.leads_by_id("sandbox", "ld_old").unwrap().is_empty());
}

fn audit_entry(tenant: &str, id: &str, created_ms: u64, party: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        tenant: tenant.into(),
        created_ms,
        party: party.into(),
        client: "ops".into(),
        action: "create".into(),
        target_kind: "seller".into(),
        target_id: id.into(),
        before_json: None,
        after_json: Some(r#"{"id":"x"}"#.into()),
    }
}

#[test]
fn audit_lists_one_tenant_newest_first_by_time_and_pages() {
    let store = Store::temporary().unwrap();
    let mut b = Batch::new();
    for (i, t) in [10u64, 20, 30, 40, 50].iter().enumerate() {
        let party = if i % 2 == 0 { "operator" } else { "seller:a" };
        b.put_audit(&audit_entry("sandbox", &format!("aud_{i}"), *t, party))
            .unwrap();
    }
    // Another tenant's entries, at the same times, are never listed.
    b.put_audit(&audit_entry("production", "aud_live", 30, "operator"))
        .unwrap();
    store.write_durable(&b).unwrap();
    let all = |_: &AuditRecord| true;
    let ids = |page: &[AuditRecord]| page.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let (page, next) = store
        .list_audit("sandbox", 0, u64::MAX, None, 10, 100, &all)
        .unwrap();
    assert_eq!(ids(&page), ["aud_4", "aud_3", "aud_2", "aud_1", "aud_0"]);
    assert!(next.is_none());
    // from and to are inclusive.
    let (page, _) = store
        .list_audit("sandbox", 20, 40, None, 10, 100, &all)
        .unwrap();
    assert_eq!(ids(&page), ["aud_3", "aud_2", "aud_1"]);
    // Pages of two follow the cursor to the end, each entry once.
    let mut seen = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store
            .list_audit("sandbox", 0, u64::MAX, cursor.as_deref(), 2, 100, &all)
            .unwrap();
        seen.extend(ids(&page));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["aud_4", "aud_3", "aud_2", "aud_1", "aud_0"]);
    // A filter, with a scan bound that stops early and hands back a cursor.
    let operator = |r: &AuditRecord| r.party == "operator";
    let (page, next) = store
        .list_audit("sandbox", 0, u64::MAX, None, 10, 2, &operator)
        .unwrap();
    assert_eq!(ids(&page), ["aud_4"]);
    let (page, _) = store
        .list_audit("sandbox", 0, u64::MAX, next.as_deref(), 10, 100, &operator)
        .unwrap();
    assert_eq!(ids(&page), ["aud_2", "aud_0"]);
    // A cursor from another tenant's listing starts this one at its newest.
    let (live, _) = store
        .list_audit("production", 0, u64::MAX, None, 10, 100, &all)
        .unwrap();
    assert_eq!(ids(&live), ["aud_live"]);
    let foreign = audit_key("production", 30, "aud_live");
    let (page, _) = store
        .list_audit("sandbox", 0, u64::MAX, Some(&foreign), 1, 100, &all)
        .unwrap();
    assert_eq!(ids(&page), ["aud_4"]);
}

#[test]
fn audit_entries_expire_with_the_records_retention_in_every_tenant() {
    let store = Store::temporary().unwrap();
    let retention = store.options().record_retention_ms;
    let mut b = Batch::new();
    for tenant in ["production", "sandbox"] {
        b.put_audit(&audit_entry(tenant, "aud_old", 1_000, "operator"))
            .unwrap();
        b.put_audit(&audit_entry(tenant, "aud_new", 5_000, "operator"))
            .unwrap();
    }
    store.write_durable(&b).unwrap();
    let stats = store.expire(retention + 2_000).unwrap();
    assert_eq!(stats.audit, 2);
    assert_eq!(store.counts().audit, 2);
    for tenant in ["production", "sandbox"] {
        let (page, _) = store
            .list_audit(tenant, 0, u64::MAX, None, 10, 100, &|_| true)
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, "aud_new");
    }
}

#[test]
fn only_a_full_commit_queue_is_worth_retrying() {
    use crate::error::Cause;
    assert!(StoreError::Overloaded.retryable());
    assert_eq!(StoreError::Overloaded.cause(), Cause::Internal);
    let corrupt = StoreError::Corrupt {
        tree: "auctions",
        key: "k".into(),
        reason: "bad".into(),
    };
    for e in [StoreError::Closed, corrupt] {
        assert!(!e.retryable(), "{e}");
        assert_eq!(e.cause(), Cause::Internal);
    }
    let options = StoreError::InvalidOptions {
        field: "path",
        reason: "must not be empty".into(),
    };
    assert!(!options.retryable());
    assert_eq!(options.cause(), Cause::Operator);
}
