//! Retry strategies beyond the built-in ones: your own type, a plain iterator, and a
//! strategy of the `backon` crate — each plugs into `Client::lock` unchanged.
//!
//! ```text
//! cargo run --example custom_strategy                                    # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example custom_strategy  # Redis
//! ```

use std::time::{Duration, Instant};

use leasehold::{Client, RetryStrategy};

const MS: Duration = Duration::from_millis(1);

/// Keep retrying every `interval` until `deadline`: "wait at most 2 s for the lock",
/// whatever the number of attempts that takes.
struct UntilDeadline {
    interval: Duration,
    deadline: Instant,
}

impl RetryStrategy for UntilDeadline {
    fn next_delay(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        Some(self.interval.min(left))
    }
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_owned());
    let client = Client::open(&url).await?;

    // Someone holds the key for 300 ms.
    let holder = client.try_lock("report", "holder", 300 * MS).await?;
    let started = Instant::now();

    // 1. Your own type.
    let deadline = UntilDeadline {
        interval: 50 * MS,
        deadline: Instant::now() + Duration::from_secs(2),
    };
    let lock = client
        .lock(
            "report",
            "custom",
            Duration::from_secs(1),
            200 * MS,
            deadline,
        )
        .await?;
    println!("own strategy: acquired after {:?}", started.elapsed());
    drop(holder);
    lock.unlock().await?;

    // 2. Any `Iterator<Item = Duration> + Send`: here 10 attempts, 20 ms apart.
    let lock = client
        .lock(
            "report",
            "iterator",
            Duration::from_secs(1),
            200 * MS,
            std::iter::repeat_n(20 * MS, 10),
        )
        .await?;
    println!("iterator: acquired, token {}", lock.fencing_token());
    lock.unlock().await?;

    // 3. backon's builders make iterators of delays: pass one as it is.
    let backoff = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(10 * MS)
            .with_max_delay(200 * MS)
            .with_max_times(8)
            .with_jitter(),
    );
    let lock = client
        .lock(
            "report",
            "backon",
            Duration::from_secs(1),
            200 * MS,
            backoff,
        )
        .await?;
    println!("backon: acquired, token {}", lock.fencing_token());
    lock.unlock().await?;
    Ok(())
}
