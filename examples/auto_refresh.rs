//! Two ways for business code to live with a renewed lock.
//!
//! 1. A long job that polls the renewal's failure channel between its steps, and stops
//!    as soon as renewal reports a failure.
//! 2. A job that races its work against `lock.lost()` in `tokio::select!`, so it is
//!    aborted the moment the lease can no longer be trusted.
//!
//! ```text
//! cargo run --example auto_refresh                                    # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example auto_refresh  # Redis
//! ```

use std::time::Duration;

use leasehold::{Client, ExponentialBackoff};

const MS: Duration = Duration::from_millis(1);

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_owned());
    let client = Client::open(&url).await?;

    polling_job(&client).await?;
    select_job(&client).await?;
    Ok(())
}

/// A job made of steps; between steps it checks that renewal is still fine.
async fn polling_job(client: &Client) -> leasehold::Result<()> {
    let lock = client
        .lock(
            "example:polling-job",
            &leasehold::random_value(),
            300 * MS, // short expiration: renewal has to keep it alive
            100 * MS,
            ExponentialBackoff::new(10 * MS, 200 * MS),
        )
        .await?;
    // Renew every 100 ms (a third of the expiration), each attempt bounded by 50 ms,
    // giving up after 3 consecutive timeouts.
    let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 50 * MS, 3)?;
    for step in 1..=10 {
        if let Some(err) = renewal.try_error() {
            eprintln!("polling job: renewal failed ({err}); stopping at step {step}");
            return Ok(());
        }
        tokio::time::sleep(100 * MS).await; // one step of work: 1 s in all, > 3 expirations
    }
    println!(
        "polling job: 10 steps done under token {}, lease valid for another {:?}",
        lock.fencing_token(),
        lock.valid_for().unwrap_or_default()
    );
    lock.unlock().await?; // stops renewal first, then releases
    Ok(())
}

/// A job that is aborted the moment the lease is lost.
async fn select_job(client: &Client) -> leasehold::Result<()> {
    let lock = client
        .try_lock("example:select-job", &leasehold::random_value(), 300 * MS)
        .await?;
    let renewal = lock.auto_refresh(100 * MS, 300 * MS, 50 * MS, 3)?;
    // Simulate trouble: after 400 ms renewal stops (as if the network were cut).
    tokio::spawn(async move {
        tokio::time::sleep(400 * MS).await;
        renewal.stop().await;
    });
    let work = async {
        for step in 1..=20 {
            tokio::time::sleep(50 * MS).await;
            println!("select job: step {step}");
        }
    };
    tokio::select! {
        () = work => println!("select job: finished"),
        () = lock.lost() => println!(
            "select job: lease lost or no longer certain; aborted before anyone else could take {}",
            lock.key()
        ),
    }
    Ok(())
}
