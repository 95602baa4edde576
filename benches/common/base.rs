//! What every bench and the report share: the locks' expiration and timeout, the
//! runtimes, percentiles and medians.

use std::time::Duration;

/// Expiration used by every lock in the benches: long enough never to lapse mid-run.
pub const EXPIRATION: Duration = Duration::from_secs(10);
pub const EXPIRATION_MS: u64 = 10_000;
/// Per-attempt timeout for leasehold calls in the benches.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Percentile (0..=100) of a sorted slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median of `values` (upper median for even counts is fine at these sample sizes;
/// we take the mean of the two middle values).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A multi-thread runtime with two workers (the machine's cores).
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
