//! Settings shared by the criterion benches, so every micro-benchmark in docs/benchmarks.md is
//! measured the same way (1 s warm-up, 3 s of samples).

use std::time::Duration;

use criterion::Criterion;

/// The criterion configuration of the micro-benchmarks.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
