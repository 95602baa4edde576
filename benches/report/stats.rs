//! Interleaving and the figures made of rounds: rotation, ratios, verdicts.

use std::time::Duration;

use crate::common::base::median;

/// `order` rotated by `round`.
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let n = items.len();
    (0..n).map(|i| items[(i + round) % n]).collect()
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median over rounds of `a[round] / b[round]`.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

/// "met", or "missed by N %" of the goal, for a measured `value` against `goal`.
pub fn verdict(value: f64, goal: f64, at_most: bool) -> String {
    let ok = if at_most {
        value <= goal
    } else {
        value >= goal
    };
    if ok {
        "met".to_owned()
    } else {
        format!("**missed** by {:.1} %", 100.0 * (value - goal).abs() / goal)
    }
}
