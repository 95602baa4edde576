//! Several workers contend for one key; each waits its turn under a retry strategy,
//! holds the lock for a moment, and hands it over.
//!
//! ```text
//! cargo run -p leasehold-demo                                   # embedded memory store
//! cargo run -p leasehold-demo -- redis://127.0.0.1:6379/        # a Redis server (or REDIS_URL=…)
//! ```

use std::time::Duration;

use leasehold::{Client, NonFixedInterval};

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "memory://".to_owned());
    let client = Client::open(&url).await?;
    println!("store: {client:?}");

    let workers: Vec<_> = (1..=4)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                for round in 1..=2 {
                    // Wait up to ~2 s for the key, retrying every 50 ms ± 25 ms.
                    let lock = client
                        .lock(
                            "demo:report",
                            &leasehold::random_value(),
                            Duration::from_secs(5),     // expiration
                            Duration::from_millis(500), // timeout per attempt
                            NonFixedInterval::new(Duration::from_millis(50), 40),
                        )
                        .await?;
                    println!(
                        "worker {worker} holds {} (round {round}, fencing token {})",
                        lock.key(),
                        lock.fencing_token()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await; // the critical section
                    lock.unlock().await?;
                    tokio::time::sleep(Duration::from_millis(20)).await; // let others in
                }
                Ok::<_, leasehold::Error>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker panicked")?;
    }
    println!("all workers done");
    Ok(())
}
