//! Clearing: from the bids an auction collected to a ranked list of valid bids and a payout.
//!
//! What it measures: [`gavel::auction::clearing::clear`] with 5, 64 and 1,000 candidate bids
//! (amounts, buyer floors and arrival order drawn from a seeded RNG, so every run clears the same
//! bids; about one bid in ten falls below its floor), and
//! [`gavel::auction::clearing::seller_payout`] for one winning price. Throughput for `clear` is
//! reported in candidate bids per second; each iteration includes allocating and dropping the
//! ranked list.
//!
//! Why it matters: clearing runs once per auction on the owning core, after the bid window closes
//! and before the seller gets its answer, so it adds directly to the ping's response time.
//!
//! Run with: `cargo bench --bench clearing`
//!
//! Results (placeholder: the measured figures, with machine, commit and date, live in the
//! `clearing` table of docs/benchmarks.md, so they are not copied here to go stale):
//!
//! | Benchmark | Median [95 % CI] |
//! |---|---|
//! | `clear/5` | see docs/benchmarks.md |
//! | `clear/64` | see docs/benchmarks.md |
//! | `clear/1000` | see docs/benchmarks.md |
//! | `seller_payout` | see docs/benchmarks.md |

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gavel::auction::clearing::{clear, seller_payout, Candidate, Cleared};
use gavel::model::Cents;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 3] = [5, 64, 1_000];
/// The platform floor of the sample config: $1.00.
const FLOOR_CENTS: Cents = 100;

/// `n` bids between $0.50 and $60.00; a quarter of the buyers set their own floor.
fn candidates(n: usize, seed: u64) -> Vec<Candidate> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut arrivals: Vec<u32> = (0..n as u32).collect();
    arrivals.shuffle(&mut rng);
    arrivals
        .into_iter()
        .enumerate()
        .map(|(slot, arrival)| Candidate {
            slot,
            amount_cents: rng.gen_range(50..=6_000),
            buyer_floor_cents: if rng.gen_bool(0.25) {
                rng.gen_range(500..=2_500)
            } else {
                0
            },
            arrival,
        })
        .collect()
}

fn bench_clear(c: &mut Criterion) {
    let mut g = c.benchmark_group("clear");
    for n in SIZES {
        let bids = candidates(n, 7);
        let Cleared::Won(valid) = clear(&bids, FLOOR_CENTS) else {
            panic!("bench bids must clear");
        };
        eprintln!("clear/{n}: {} of {n} bids valid", valid.len());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &bids, |b, bids| {
            b.iter(|| clear(black_box(bids), black_box(FLOOR_CENTS)))
        });
    }
    g.finish();
}

fn bench_payout(c: &mut Criterion) {
    // $38.50 with the sample config's 10 % margin and no fixed margin: the payout is $34.65.
    assert_eq!(seller_payout(3_850, 10.0, 0), 3_465);
    c.bench_function("seller_payout", |b| {
        b.iter(|| seller_payout(black_box(3_850), black_box(10.0), black_box(0)))
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_clear, bench_payout
}
criterion_main!(benches);
