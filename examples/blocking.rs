//! Several OS threads take turns holding one lock through the blocking API.
//!
//! Runs on the embedded store by default; set `REDIS_URL` (e.g.
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run --example blocking`) to use Redis.
//!
//! Each worker acquires the lock with a jittered retry strategy, starts auto-refresh,
//! does its "work" in steps with `std::thread::sleep` — longer than the lock's
//! expiration, so only renewal keeps it — checks between steps that renewal is healthy,
//! then unlocks.

use std::thread;
use std::time::{Duration, Instant};

use leasehold::NonFixedInterval;
use leasehold::blocking::Client;

const WORKERS: usize = 4;
const KEY: &str = "example:blocking:report";
const EXPIRATION: Duration = Duration::from_millis(300);
const STEP: Duration = Duration::from_millis(100);
const STEPS: u32 = 4; // 400 ms of work: more than one expiration

fn main() -> leasehold::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_owned());
    let client = Client::open(&url)?;
    println!("store: {client:?}");
    let started = Instant::now();

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let client = client.clone();
            thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || work(&client, worker, started))
                .expect("spawn a worker thread")
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker panicked")?;
    }
    println!("all {WORKERS} workers done in {:?}", started.elapsed());
    Ok(())
}

fn work(client: &Client, worker: usize, started: Instant) -> leasehold::Result<()> {
    let lock = client.lock(
        KEY,
        &leasehold::random_value(),
        EXPIRATION,
        Duration::from_millis(200), // timeout per attempt
        NonFixedInterval::new(Duration::from_millis(25), 400), // up to ~10 s of retries
    )?;
    let at = started.elapsed().as_millis();
    println!(
        "[{at:>5} ms] worker {worker} holds {} with fencing token {}",
        lock.key(),
        lock.fencing_token()
    );
    let mut renewal = lock.auto_refresh(
        Duration::from_millis(100), // interval
        EXPIRATION,
        Duration::from_millis(50), // timeout per renewal
        3,                         // max_retry
    )?;
    for step in 1..=STEPS {
        thread::sleep(STEP); // the "work": the runtime thread renews meanwhile
        if let Some(e) = renewal.try_error() {
            println!("worker {worker}: lost the lock at step {step}: {e}; giving up");
            return Ok(());
        }
    }
    let at = started.elapsed().as_millis();
    println!(
        "[{at:>5} ms] worker {worker} releases token {} (valid for {:?} more)",
        lock.fencing_token(),
        lock.valid_for().unwrap_or_default()
    );
    lock.unlock()?; // stops the renewal first
    Ok(())
}
