//! What the crate tells an operator through `tracing` (captured here): spans and events,
//! never a lock value or a credential. Alone in its test binary: `tracing` caches which
//! callsites a subscriber wants, and a test without one running at the same time would
//! spoil that. The metrics are in `tests/metrics.rs`.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold::{Client, FixedInterval};
use support::{RedisServer, ServerOptions};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Everything written to it, for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn spans_and_events_tell_what_happened_and_never_a_value_or_a_password() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        // Spans are printed when they close, with the fields recorded by then.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let server = RedisServer::start_with(ServerOptions {
        password: Some("p4ssw0rd-secret".into()),
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let client = Client::open(&server.url()).await.unwrap();
            let lock = client
                .try_lock("report", "v4lue-secret", 10 * SEC)
                .await
                .unwrap();
            let err = client
                .lock(
                    "report",
                    "other-secret",
                    SEC,
                    SEC,
                    FixedInterval::new(10 * MS, 2),
                )
                .await
                .unwrap_err();
            assert!(err.is_not_obtained());
            let mut renewal = lock.auto_refresh(50 * MS, 10 * SEC, SEC, 3).unwrap();
            // Someone deletes the key: the next renewal fails, the lock is lost.
            assert!(client.force_release("report").await.unwrap());
            let failure = tokio::time::timeout(5 * SEC, renewal.error())
                .await
                .unwrap();
            assert!(failure.unwrap().is_not_held());
            // A waiter that waits over a second is a slow acquire.
            let held = client.try_lock("slow", "h", 1200 * MS).await.unwrap();
            let _held_until_expiry = client
                .lock("slow", "w", SEC, SEC, FixedInterval::new(100 * MS, 50))
                .await
                .unwrap();
            drop(held);
            let done = client.try_lock("done", "v", SEC).await.unwrap();
            done.unlock().await.unwrap();
        });
    });
    let text = captured.text();
    for expected in [
        "leasehold.lock",
        "db.system.name=\"redis\"",
        "lock.key=\"report\"",
        "lock.outcome=\"acquired\"",
        "lock.outcome=\"not_obtained\"",
        "lock.attempts=",
        "db.operation.name=\"refresh\"",
        "db.operation.name=\"unlock\"",
        "leasehold.renewal",
        "lock renewal failed",
        "lock lost",
        "slow acquire",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    for secret in ["v4lue-secret", "other-secret", "p4ssw0rd-secret"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}
