//! A scheduled job that must run on one host at a time: `run_exclusive` acquires, renews
//! while the job runs, aborts the job if the lease is lost, and releases when it is done.
//! Three "hosts" start the job at once; one runs it, the others skip.
//!
//! ```text
//! cargo run --example run_exclusive                                    # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example run_exclusive  # Redis
//! ```

use std::time::Duration;

use leasehold::{Client, NoRetry};

async fn nightly_report(host: usize, token: u64) -> String {
    // ... the job; pass `token` to whatever it writes (see the fencing example) ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("report by host {host} under token {token}")
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_owned());
    let client = Client::open(&url).await?;

    let hosts = (0..3).map(|host| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_exclusive(
                    "nightly-report",
                    Duration::from_secs(30),
                    NoRetry,
                    |token| nightly_report(host, token),
                )
                .await
        })
    });
    let mut ran = 0;
    for (host, outcome) in futures::future::join_all(hosts)
        .await
        .into_iter()
        .enumerate()
    {
        match outcome.expect("the task panicked") {
            Ok(report) => {
                ran += 1;
                println!("host {host}: {report}");
            }
            Err(e) if e.is_not_obtained() => println!("host {host}: running elsewhere; skipped"),
            Err(e) => return Err(e), // lost mid-way: the job was aborted
        }
    }
    assert_eq!(ran, 1, "exactly one host runs the job");
    Ok(())
}
