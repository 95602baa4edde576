//! Fencing a write: a holder that was paused past its lease wakes up and tries to write;
//! the resource refuses it, because a newer holder's token has been seen.
//!
//! ```text
//! cargo run --example fencing                                    # memory store
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example fencing  # Redis
//! ```

use std::time::Duration;

use leasehold::Client;

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_owned());
    let client = Client::open(&url).await?;

    // Holder A takes the lock and writes under its token.
    let a = client
        .try_lock(
            "invoice-42",
            &leasehold::random_value(),
            Duration::from_millis(200),
        )
        .await?;
    a.fenced_set("invoice-42:state", "drafted by A").await?;
    println!("A (token {}) wrote", a.fencing_token());

    // A stalls (GC, swap, a stopped VM) past its lease; B takes over and writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = client
        .try_lock(
            "invoice-42",
            &leasehold::random_value(),
            Duration::from_secs(10),
        )
        .await?;
    b.fenced_set("invoice-42:state", "sent by B").await?;
    println!("B (token {}) wrote", b.fencing_token());

    // A wakes up and writes as if it still held the lock: refused, nothing written.
    match a
        .fenced_set("invoice-42:state", "drafted by A, again")
        .await
    {
        Err(e) if e.is_fenced() => println!("A refused: {e}"),
        other => panic!("a stale holder must be refused, got {other:?}"),
    }
    let state = b.fenced_get("invoice-42:state").await?;
    println!("state: {state:?}");
    assert_eq!(state.as_deref(), Some("sent by B"));

    // A resource elsewhere (SQL, an API) gets the token with each write and refuses a
    // lower one than it has seen: see "Fencing a resource" in the crate docs.
    b.unlock().await?;
    Ok(())
}
