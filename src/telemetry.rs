//! What the crate tells an operator: `tracing` spans and events, and (feature `metrics`)
//! counters, histograms and a gauge through the `metrics` facade.
//!
//! Spans: `leasehold.lock` (per `lock` call: attempts, wait, outcome, token),
//! `leasehold.op` (per refresh or unlock, named by `db.operation.name`), and a
//! long-lived `leasehold.renewal` per auto-refresh. Events: every failed renewal (`WARN`), a confirmed loss (`WARN`), an
//! acquire that waited a second or more (`INFO`). Fields follow OpenTelemetry's names
//! where they fit (`db.system.name`, `db.operation.name`) and otherwise say `lock.*`.
//! A key is shown; a lock value or a credential never is.
//!
//! Metrics (feature `metrics`), with the store's kind as their only label besides the
//! outcome, so that the number of series stays bounded whatever the keys:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `leasehold_acquires_total` | counter | `store`, `outcome` (`acquired`, `not_obtained`, `error`) |
//! | `leasehold_acquire_wait_seconds` | histogram | `store` |
//! | `leasehold_acquire_attempts` | histogram | `store` |
//! | `leasehold_renewals_total` | counter | `store`, `outcome` (`renewed`, `failed`) |
//! | `leasehold_losses_total` | counter | `store` |
//! | `leasehold_locks_held` | gauge | `store` |

use std::time::Duration;

/// An acquire that waited at least this long is worth an `INFO` event.
pub(crate) const SLOW_ACQUIRE: Duration = Duration::from_secs(1);

/// Whether anything listens to what happens under `span`: a subscriber that wants it, or
/// (feature `metrics`) the metrics facade.
pub(crate) fn observed(span: &tracing::Span) -> bool {
    cfg!(feature = "metrics") || !span.is_disabled()
}

/// How a `lock` call ended, for its span and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acquired,
    NotObtained,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::NotObtained => "not_obtained",
            Outcome::Error => "error",
        }
    }
}

/// The span of one `lock` call; its outcome is recorded by [`lock_ended`].
pub(crate) fn lock_span(store: &'static str, key: &str) -> tracing::Span {
    tracing::debug_span!(
        "leasehold.lock",
        db.system.name = store,
        db.operation.name = "lock",
        lock.key = key,
        lock.attempts = tracing::field::Empty,
        lock.wait_ms = tracing::field::Empty,
        lock.outcome = tracing::field::Empty,
        lock.token = tracing::field::Empty,
    )
}

/// A `lock` call ended after `attempts` attempts and `waited`.
pub(crate) fn lock_ended(
    span: &tracing::Span,
    store: &'static str,
    key: &str,
    outcome: Outcome,
    attempts: u32,
    waited: Duration,
    token: Option<u64>,
) {
    let wait_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    span.record("lock.attempts", attempts);
    span.record("lock.wait_ms", wait_ms);
    span.record("lock.outcome", outcome.as_str());
    if let Some(token) = token {
        span.record("lock.token", token);
    }
    if waited >= SLOW_ACQUIRE {
        tracing::info!(
            parent: span,
            lock.key = key,
            lock.wait_ms = wait_ms,
            lock.attempts = attempts,
            lock.outcome = outcome.as_str(),
            "slow acquire"
        );
    }
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("leasehold_acquires_total", "store" => store, "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!("leasehold_acquire_wait_seconds", "store" => store)
            .record(waited.as_secs_f64());
        metrics::histogram!("leasehold_acquire_attempts", "store" => store)
            .record(f64::from(attempts));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = store;
}

/// The span of one refresh or unlock.
pub(crate) fn op_span(
    store: &'static str,
    op: &'static str,
    key: &str,
    token: u64,
) -> tracing::Span {
    tracing::debug_span!(
        "leasehold.op",
        db.system.name = store,
        db.operation.name = op,
        lock.key = key,
        lock.token = token,
    )
}

/// The long-lived span of one auto-refresh.
pub(crate) fn renewal_span(
    store: &'static str,
    key: &str,
    token: u64,
    interval: Duration,
) -> tracing::Span {
    tracing::info_span!(
        "leasehold.renewal",
        db.system.name = store,
        lock.key = key,
        lock.token = token,
        lock.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
    )
}

/// A renewal went out and came back: `error` if it failed (retried or not).
pub(crate) fn renewed(store: &'static str, error: Option<&crate::Error>, retrying: bool) {
    if let Some(error) = error {
        tracing::warn!(%error, retrying, "lock renewal failed");
    }
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "leasehold_renewals_total",
        "store" => store,
        "outcome" => if error.is_some() { "failed" } else { "renewed" }
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = store;
}

/// A lease was confirmed lost (not by its own unlock).
pub(crate) fn lost(store: &'static str, key: &str, token: u64) {
    tracing::warn!(
        db.system.name = store,
        lock.key = key,
        lock.token = token,
        "lock lost"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("leasehold_losses_total", "store" => store).increment(1);
}

/// A lease began (`+1`) or ended (`-1`).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn held(store: &'static str, delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("leasehold_locks_held", "store" => store).increment(delta);
}
