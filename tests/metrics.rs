//! The `metrics` facade's counters, histograms and gauge (feature `metrics`), recorded
//! by a debugging recorder: outcomes, waits, renewals, losses, locks held — with bounded
//! labels (the store's kind and the outcome, never a key or a value).

#![cfg(feature = "metrics")]

use std::time::Duration;

use leasehold::Client;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[test]
fn metrics_count_outcomes_waits_renewals_losses_and_held_locks() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let client = Client::memory();
            let lock = client.try_lock("job", "a", 10 * SEC).await.unwrap();
            let err = client.try_lock("job", "b", 10 * SEC).await.unwrap_err();
            assert!(err.is_not_obtained());
            let mut renewal = lock.auto_refresh(20 * MS, 10 * SEC, SEC, 3).unwrap();
            tokio::time::sleep(70 * MS).await;
            assert!(client.force_release("job").await.unwrap());
            assert!(renewal.error().await.unwrap().is_not_held());
            drop(lock);
        });
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(
            labels
                .iter()
                .all(|l| l.starts_with("store=") || l.starts_with("outcome=")),
            "bounded labels only: {labels:?}"
        );
        let name = format!("{:?} {} {}", kind, key.name(), labels.join(","));
        seen.insert(name, value);
    }
    let counter = |name: &str| match seen.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {seen:?}"),
    };
    assert_eq!(
        counter("Counter leasehold_acquires_total store=memory,outcome=acquired"),
        1
    );
    assert_eq!(
        counter("Counter leasehold_acquires_total store=memory,outcome=not_obtained"),
        1
    );
    assert!(counter("Counter leasehold_renewals_total store=memory,outcome=renewed") >= 2);
    assert_eq!(
        counter("Counter leasehold_renewals_total store=memory,outcome=failed"),
        1
    );
    assert_eq!(counter("Counter leasehold_losses_total store=memory"), 1);
    match seen.get("Gauge leasehold_locks_held store=memory") {
        Some(DebugValue::Gauge(held)) => assert_eq!(held.into_inner(), 0.0, "back to none"),
        other => panic!("{other:?}"),
    }
    match seen.get("Histogram leasehold_acquire_attempts store=memory") {
        Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 2),
        other => panic!("{other:?}"),
    }
}
