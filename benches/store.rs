//! Store: idempotency lookups, record encoding, and group commit throughput.
//!
//! What it measures:
//! - `store/idempotency_get/{hit,miss}`: [`Store::get_idempotency`] on a store pre-filled with
//!   100,000 records (all in sled's page cache), for a key that exists and one that does not.
//!   Includes encoding the scope key, the sled lookup, and on a hit the version check, bytecheck
//!   validation (after copying into an aligned buffer) and deserialization.
//! - `store/auction_record/{encode,decode}`: an [`AuctionRecord`] with 5 buyer outcomes encoded to
//!   its stored bytes (version byte + rkyv), and decoded back with full validation.
//! - `store/group_commit/{1,8,64}`: commits per second through one core's write-ahead log
//!   ([`CoreLog`], io_uring where the kernel has it) with 1, 8 and 64 tasks on one monoio runtime, each committing a small batch (one idempotency record and its
//!   index entry) in a loop and awaiting its durability. The store is on disk in a temp dir (not
//!   `Store::temporary()`), so every group pays a real `fdatasync` of the log; the numbers depend mostly on the
//!   disk's flush latency, and the gain from 1 to 64 writers is what group commit buys.
//!
//! Why it matters: the idempotency lookup runs on a core before any keyed request, record encoding
//! runs on a core for every stored auction, and a durable commit sits between a request and its
//! response (CONTRACT §6: no response before its record is durable).
//!
//! Run with: `cargo bench --bench store`
//!
//! Results: see the `store` table in docs/benchmarks.md (machine, commit and date are recorded
//! there; numbers here would go stale).

use std::hint::black_box;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gavel::store::records;
use gavel::store::{
    AttemptRecord, AuctionRecord, Batch, CommitCounters, CommitStats, CoreLog, IdemRecord,
    IdemScope, OutcomeRecord, PostRecord, Store, StoreOptions,
};

const PREFILL: usize = 100_000;
const WRITERS: [usize; 3] = [1, 8, 64];

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TempDir(std::env::temp_dir().join(format!(
            "gavel-bench-store-{tag}-{}-{nanos}",
            std::process::id()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> Store {
    Store::open(&StoreOptions {
        path: dir.0.clone(),
        ..StoreOptions::default()
    })
    .expect("open store")
}

fn scope(i: usize) -> IdemScope {
    IdemScope {
        tenant: "sandbox".into(),
        client: "client-1".into(),
        method: "POST".into(),
        path: "/v1/ping".into(),
        key: format!("idem-{i:08}"),
    }
}

/// A ping answer as it would be replayed: about 300 bytes of JSON and two headers.
fn idem(i: usize) -> IdemRecord {
    IdemRecord {
        fingerprint: [i as u8; 32],
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), format!("req_{i:020}")),
        ],
        body: format!(
            r#"{{"auction_id":"auc_{i:026}","result":"won","price":"12.34","currency":"USD","bid_token":"{}","expires_at":"2026-05-11T14:22:06.123Z"}}"#,
            "t".repeat(160)
        )
        .into_bytes(),
        created_ms: 1_760_000_000_000 + i as u64,
    }
}

fn auction_with_5_outcomes() -> AuctionRecord {
    let created_ms = 1_760_000_000_000;
    AuctionRecord {
        id: "auc_01JTZ3F8Q4W5X6Y7Z8A9B0C1D2".into(),
        tenant: "sandbox".into(),
        client: "client-1".into(),
        seller: "client-1".into(),
        ping_json: br#"{"vertical":"auto_insurance","zip":"94107","state":"CA","age":34,"credit":"good","attributes":{"homeowner":"yes","vehicles":"2"}}"#.to_vec(),
        buyer_ref: String::new(),
        created_ms,
        deadline_ms: created_ms + 2_000,
        closed_ms: Some(created_ms + 1_200),
        status: "won".into(),
        reject_reason: None,
        outcomes: (0..5u64)
            .map(|i| OutcomeRecord {
                buyer_id: format!("buyer-{i}"),
                kind: if i == 4 { "no_bid" } else { "bid" }.into(),
                amount_cents: (i < 4).then_some(1_000 + 150 * i),
                buyer_bid_token: (i < 4).then(|| format!("buyer-token-{i}-{}", "x".repeat(24))),
                valid_until_ms: Some(created_ms + 60_000),
                reject_reason: (i == 4).then(|| "not_interested".into()),
                reject_detail: None,
                latency_us: 20_000 + 1_000 * i,
                arrival: i as u32,
            })
            .collect(),
        ranked: vec![3, 2, 1, 0],
        payout_cents: Some(1_305),
        token_valid_until_ms: Some(created_ms + 60_000),
        post: PostRecord {
            state: "none".into(),
            ..PostRecord::default()
        },
        post_attempts: vec![AttemptRecord {
            buyer_id: "buyer-3".into(),
            attempt: 1,
            result: "accepted".into(),
            http_status: Some(200),
            latency_us: 9_000,
        }],
    }
}

fn idempotency_get(c: &mut Criterion) {
    let dir = TempDir::new("get");
    let store = open(&dir);
    for chunk in (0..PREFILL).collect::<Vec<_>>().chunks(1_000) {
        let mut batch = Batch::new();
        for &i in chunk {
            batch.put_idempotency(&scope(i), &idem(i)).expect("encode");
        }
        store.write_durable(&batch).expect("prefill");
    }
    let mut g = c.benchmark_group("store/idempotency_get");
    g.throughput(Throughput::Elements(1));
    let hit = scope(PREFILL / 2);
    let miss = scope(PREFILL + 1);
    g.bench_function("hit", |b| {
        b.iter(|| {
            let r = store.get_idempotency(black_box(&hit)).expect("get");
            assert!(r.is_some());
            r
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            let r = store.get_idempotency(black_box(&miss)).expect("get");
            assert!(r.is_none());
            r
        })
    });
    g.finish();
}

fn auction_record(c: &mut Criterion) {
    let record = auction_with_5_outcomes();
    let key = record.id.as_bytes().to_vec();
    let bytes = records::encode(&key, &record).expect("encode");
    let mut g = c.benchmark_group("store/auction_record");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| records::encode(&key, black_box(&record)).expect("encode"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| records::decode::<AuctionRecord>(&key, black_box(&bytes)).expect("decode"))
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let dir = TempDir::new("commit");
    let store = Arc::new(open(&dir));
    let uring = monoio::utils::detect_uring();
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .attach_thread_pool(Box::new(
            gavel::store::wal::BlockingThread::start("gavel-log-0".into()).expect("log thread"),
        ))
        .build()
        .expect("monoio runtime");
    let counters = Arc::new(CommitCounters::new());
    let log = Rc::new(
        runtime
            .block_on(CoreLog::start(
                Arc::clone(&store),
                0,
                uring,
                8 * 1024,
                gavel::store::wal::MAX_SEGMENT_BYTES,
                Arc::clone(&counters),
                None,
            ))
            .expect("core log"),
    );
    let mut g = c.benchmark_group("store/group_commit");
    g.throughput(Throughput::Elements(1));
    let mut next_key = 0usize;
    for writers in WRITERS {
        let before = counters.snapshot();
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                // One iteration is one commit; `iters` commits are spread over `writers` tasks.
                b.iter_custom(|iters| {
                    let per_writer = (iters as usize).div_ceil(writers);
                    let first = next_key;
                    next_key += per_writer * writers;
                    runtime.block_on({
                        let log = Rc::clone(&log);
                        async move {
                            let started = Instant::now();
                            let tasks: Vec<_> = (0..writers)
                                .map(|w| {
                                    let log = Rc::clone(&log);
                                    monoio::spawn(async move {
                                        for n in 0..per_writer {
                                            let i = first + w * per_writer + n;
                                            let mut batch = Batch::new();
                                            batch
                                                .put_idempotency(&scope(i), &idem(i))
                                                .expect("encode");
                                            log.commit(batch).await.expect("commit");
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await;
                            }
                            started.elapsed()
                        }
                    })
                })
            },
        );
        report(writers, &delta(&counters.snapshot(), &before));
    }
    g.finish();
}

/// `after - before`, for the statistics of one benchmark (warm-up included).
fn delta(after: &CommitStats, before: &CommitStats) -> CommitStats {
    let mut d = after.clone();
    d.commits -= before.commits;
    d.groups -= before.groups;
    d.flush_us_sum -= before.flush_us_sum;
    for (a, b) in d
        .latency_us_buckets
        .iter_mut()
        .zip(&before.latency_us_buckets)
    {
        *a -= b;
    }
    d
}

/// Group commit behaviour behind the throughput figure: criterion reports only the rate.
fn report(writers: usize, s: &CommitStats) {
    eprintln!(
        "  {writers} writers: {} commits in {} groups (mean {:.1} per group), commit latency p50 <= {} us, p99 <= {} us; mean flush {} us",
        s.commits,
        s.groups,
        s.mean_group_size(),
        s.latency_us_quantile(0.5),
        s.latency_us_quantile(0.99),
        s.flush_us_sum / s.groups.max(1),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = idempotency_get, auction_record, group_commit
}
criterion_main!(benches);
