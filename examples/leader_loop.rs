//! A loop that runs on one node at a time (the seeds' `RunLoopWithLock`).
//!
//! ```text
//! cargo run --example leader_loop --features schedule            # 3 contenders, embedded store
//! cargo run --example leader_loop --features schedule -- redis://127.0.0.1:6379/
//! ```
//!
//! Each contender (its own client) campaigns for the key; the leader runs rounds of its
//! loop, then steps down after `--rounds N` (default 4) so the next one takes over. Run it
//! in several terminals against one Redis and stop the leader with Ctrl-C: another one
//! takes over once its lease expires (the lease is released at once on a clean exit).

use std::time::Duration;

use leasehold::Client;

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let mut url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://leader-loop".into());
    let (mut contenders, mut rounds) = (None, 4u32);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--contenders" => contenders = it.next().and_then(|v| v.parse().ok()),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("a number"),
            other => url = other.to_owned(),
        }
    }
    let contenders: usize = contenders.unwrap_or(if url.starts_with("memory://") { 3 } else { 1 });
    // The client's Debug names the store without its password.
    let store = format!("{:?}", Client::open(&url).await?);
    println!("{contenders} contender(s) on {store}");

    let mut tasks = Vec::new();
    for name in (0..contenders).map(|i| char::from(b'A' + i as u8)) {
        let client = Client::open(&url).await?;
        tasks.push(tokio::spawn(async move {
            client
                .run_while_leader(
                    "example-leader",
                    Duration::from_secs(3), // lease, renewed every second
                    std::iter::repeat(Duration::from_millis(100)), // campaign until elected
                    |leadership| async move {
                        let token = leadership.fencing_token();
                        println!("{name}: leader (term {}, token {token})", leadership.term());
                        if let Some(why) = leadership.previous_loss() {
                            println!("{name}: my previous term ended: {why}");
                        }
                        for round in 1..=rounds {
                            tokio::select! {
                                // The future is dropped on loss anyway; this is where a
                                // loop would clean up first.
                                () = leadership.lost() => unreachable!("dropped first"),
                                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                            }
                            println!("{name}: round {round} (token {token})");
                        }
                        println!("{name}: stepping down");
                        rounds
                    },
                )
                .await
        }));
    }
    for task in tasks {
        let led = task.await.expect("contender task")?;
        assert_eq!(led, rounds);
    }
    Ok(())
}
