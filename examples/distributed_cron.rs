//! A distributed cron job: every tick runs on exactly one node.
//!
//! Three nodes in one process (each with its own client), on the embedded store:
//!
//! ```text
//! cargo run --example distributed_cron --features schedule -- --nodes 3
//! ```
//!
//! Or one node per terminal, sharing a Redis (start the same command in three terminals):
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example distributed_cron --features schedule
//! ```
//!
//! Options: `--nodes N` (default 1, or 3 on the embedded store), `--ticks N` (how many
//! periods to run for, default 5), `--every-ms MS` (the period, default 1000), and the store
//! URL as an argument or in `REDIS_URL` (default `memory://distributed-cron`, which only
//! nodes of one process share).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leasehold::Client;
use leasehold::schedule::{Job, JobContext, Outcome, Overlap, Scheduler};

struct Args {
    url: String,
    nodes: usize,
    ticks: u32,
    every: Duration,
}

fn args() -> Args {
    let mut url = std::env::var("REDIS_URL").ok();
    let (mut nodes, mut ticks, mut every_ms) = (None, 5, 1000);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--nodes" => nodes = Some(number("--nodes") as usize),
            "--ticks" => ticks = number("--ticks") as u32,
            "--every-ms" => every_ms = number("--every-ms"),
            other if !other.starts_with("--") => url = Some(other.to_owned()),
            other => panic!("unknown option {other}"),
        }
    }
    let url = url.unwrap_or_else(|| "memory://distributed-cron".to_owned());
    let default_nodes = if url.starts_with("memory://") { 3 } else { 1 };
    Args {
        nodes: nodes.unwrap_or(default_nodes).max(1),
        url,
        ticks,
        every: Duration::from_millis(every_ms.max(1)),
    }
}

/// `HH:MM:SS.mmm` (UTC) of a wall-clock instant.
fn clock(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let args = args();
    // The client's Debug names the store without its password.
    let store = Client::open(&args.url).await?;
    println!(
        "{} node(s) on {store:?}: a job every {:?}, running for {:?} (every tick due in that time, the first one included)",
        args.nodes,
        args.every,
        args.every * args.ticks
    );
    // Which node ran each tick (seen by the nodes of this process).
    let ran: Arc<Mutex<BTreeMap<SystemTime, Vec<usize>>>> = Arc::default();
    let mut nodes = Vec::new();
    for node in 1..=args.nodes {
        let client = Client::open(&args.url).await?; // each node its own client
        let scheduler = Scheduler::new(client).key_prefix("example:");
        let reports = scheduler.subscribe();
        let ran = Arc::clone(&ran);
        scheduler.add(
            Job::every("report", args.every).overlap(Overlap::SkipIfStillRunning),
            move |ctx: JobContext| {
                let ran = Arc::clone(&ran);
                async move {
                    println!(
                        "node {node} runs the tick of {} (token {})",
                        clock(ctx.scheduled_for()),
                        ctx.fencing_token()
                    );
                    ran.lock()
                        .unwrap()
                        .entry(ctx.scheduled_for())
                        .or_default()
                        .push(node);
                    tokio::time::sleep(Duration::from_millis(50)).await; // the work
                }
            },
        )?;
        nodes.push((node, scheduler.start(), reports));
    }
    tokio::time::sleep(args.every * args.ticks).await;

    let (handles, nodes): (Vec<_>, Vec<_>) = nodes
        .into_iter()
        .map(|(node, handle, reports)| (handle.shutdown(), (node, reports)))
        .unzip();
    futures::future::join_all(handles).await; // all at once: none fires alone at the end
    let mut summary = Vec::new();
    for (node, mut reports) in nodes {
        let (mut runs, mut elsewhere) = (0, 0);
        while let Some(report) = reports.try_recv() {
            match report.outcome {
                Outcome::ClaimedElsewhere => elsewhere += 1,
                _ if report.ran() => runs += 1,
                other => println!(
                    "node {node}: tick {}: {other:?}",
                    clock(report.scheduled_for)
                ),
            }
        }
        summary.push(format!(
            "node {node} ran {runs} ticks, found {elsewhere} claimed elsewhere"
        ));
    }
    for line in summary {
        println!("{line}");
    }
    let ran = ran.lock().unwrap();
    let twice = ran.values().filter(|nodes| nodes.len() > 1).count();
    println!(
        "{} ticks ran in this process, {twice} of them more than once",
        ran.len()
    );
    assert_eq!(twice, 0);
    Ok(())
}
