//! `ls`, `show`, `release` and `watch`.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use leasehold::{Client, LockInfo};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use crate::render::{self, LockJson};
use crate::{Failure, Printer, suggest};

/// Exit code: done.
pub const OK: u8 = 0;
/// Exit code: no lock on the key (`show`, `release`).
pub const NO_LOCK: u8 = 1;
/// Exit code: `release` was not confirmed.
pub const NOT_CONFIRMED: u8 = 3;

fn store(e: leasehold::Error) -> Failure {
    Failure::new(format!("store: {e}"))
}

pub async fn ls(client: &Client, prefix: &str, p: &Printer) -> Result<u8, Failure> {
    let locks = client.list(prefix).await.map_err(store)?;
    if p.json {
        p.json(&render::locks_json(&locks))?;
    } else if locks.is_empty() {
        p.note(&format!("no locks held ({})", render::under(prefix)));
    } else {
        p.out(&render::table(&locks))?;
    }
    Ok(OK)
}

/// `bare`: the client has no key prefix (then a miss suggests the keys that end in
/// `key`).
pub async fn show(client: &Client, key: &str, bare: bool, p: &Printer) -> Result<u8, Failure> {
    match client.inspect(key).await.map_err(store)? {
        Some(info) if p.json => {
            p.json(&LockJson::from(&info))?;
            Ok(OK)
        }
        Some(info) => {
            p.out(&render::detail(&info))?;
            Ok(OK)
        }
        None => {
            if p.json {
                p.json(&None::<LockJson>)?;
            }
            no_lock(client, key, bare, p).await;
            Ok(NO_LOCK)
        }
    }
}

/// `release --json`.
#[derive(Serialize)]
struct Released<'a> {
    key: &'a str,
    released: bool,
    /// The lock that was (or would have been) released.
    lock: Option<LockJson<'a>>,
}

/// `bare`: as for [`show`].
pub async fn release(
    client: &Client,
    key: &str,
    yes: bool,
    bare: bool,
    p: &Printer,
) -> Result<u8, Failure> {
    let report = |released: bool, lock: Option<&LockInfo>| -> Result<(), Failure> {
        if p.json {
            p.json(&Released {
                key,
                released,
                lock: lock.map(LockJson::from),
            })?;
        }
        Ok(())
    };
    let Some(info) = client.inspect(key).await.map_err(store)? else {
        report(false, None)?;
        no_lock(client, key, bare, p).await;
        return Ok(NO_LOCK);
    };
    if !yes {
        let question = format!(
            "release {} ({})? The holder is not told. [y/N] ",
            render::quoted(key),
            render::summary(&info)
        );
        if !confirm(question).await? {
            report(false, Some(&info))?;
            p.note("not released");
            return Ok(NOT_CONFIRMED);
        }
        // What was confirmed must still be there: not a lock taken since by someone else.
        match client.inspect(key).await.map_err(store)? {
            None => {
                report(false, None)?;
                p.note(&format!(
                    "no lock on {} any more (released or expired meanwhile)",
                    render::quoted(key)
                ));
                return Ok(NO_LOCK);
            }
            Some(now)
                if now.fencing_token() != info.fencing_token() || now.holder() != info.holder() =>
            {
                report(false, Some(&now))?;
                p.note(&format!(
                    "not released: {} changed hands while you were deciding (now {}); run again",
                    render::quoted(key),
                    render::summary(&now)
                ));
                return Ok(NOT_CONFIRMED);
            }
            Some(_) => {}
        }
    }
    // Only the acquisition shown (and confirmed): one that replaced it is never deleted.
    if client
        .force_release_if(key, info.fencing_token())
        .await
        .map_err(store)?
    {
        report(true, Some(&info))?;
        if !p.json {
            p.out(&format!(
                "released {} ({})\n",
                render::quoted(key),
                render::summary(&info)
            ))?;
        }
        Ok(OK)
    } else {
        // Gone, or taken again since it was shown: say which.
        match client.inspect(key).await.map_err(store)? {
            None => {
                report(false, None)?;
                p.note(&format!(
                    "no lock on {} any more (released or expired meanwhile)",
                    render::quoted(key)
                ));
                Ok(NO_LOCK)
            }
            Some(now) => {
                report(false, Some(&now))?;
                p.note(&format!(
                    "not released: {} changed hands (now {}); run again",
                    render::quoted(key),
                    render::summary(&now)
                ));
                Ok(NOT_CONFIRMED)
            }
        }
    }
}

/// `no lock on "KEY"`, on stderr; for a person (not `--json`) using no key prefix,
/// followed by the keys of locks held that end in `key`, with the prefix that names
/// each.
async fn no_lock(client: &Client, key: &str, bare: bool, p: &Printer) {
    let mut note = format!("no lock on {}", render::quoted(key));
    if bare && !p.json {
        note.push_str(&suggest::hint(
            key,
            &suggest::keys_ending_in(client, key).await,
        ));
    }
    p.note(&note);
}

/// Ask on stderr, read the answer from stdin: `y` or `yes` confirms; anything else, or
/// the end of the input, does not.
async fn confirm(question: String) -> Result<bool, Failure> {
    eprint!("{question}");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Failure::new(format!("cannot read the answer: {e}")))?
    .map_err(|e| Failure::new(format!("cannot read the answer: {e}")))?;
    if !std::io::stdin().is_terminal() {
        // Nobody typed the answer and its newline: end the prompt's line.
        eprintln!();
    }
    let answer = answer.trim();
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

/// `watch --json`: one line per refresh.
#[derive(Serialize)]
struct Frame<'a> {
    /// Wall-clock time of the refresh, in Unix milliseconds.
    at_ms: u64,
    prefix: &'a str,
    locks: Vec<LockJson<'a>>,
}

pub async fn watch(
    client: &Client,
    prefix: &str,
    interval: Duration,
    count: Option<u64>,
    p: &Printer,
) -> Result<u8, Failure> {
    let mut interrupt = Interrupt::new()?;
    let live = !p.json && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval_at(Instant::now(), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut refreshes = 0u64;
    let mut failed = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = interrupt.recv() => break,
        }
        let listed = tokio::select! {
            listed = client.list(prefix) => listed,
            () = interrupt.recv() => break,
        };
        refreshes += 1;
        let at = SystemTime::now();
        failed = listed.is_err();
        match listed {
            Ok(locks) if p.json => {
                let at_ms = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                p.json_line(&Frame {
                    at_ms,
                    prefix,
                    locks: render::locks_json(&locks),
                })?;
            }
            Ok(locks) => {
                let header = format!(
                    "leasehold watch: {}, {} held, every {}   {}",
                    render::under(prefix),
                    plural(locks.len(), "lock"),
                    humantime::format_duration(interval),
                    render::clock(at)
                );
                let body = if locks.is_empty() {
                    String::new()
                } else {
                    render::table(&locks)
                };
                if live {
                    // Home, clear the screen, then the frame.
                    p.out(&format!("\x1b[H\x1b[2J{header}\n\n{body}"))?;
                } else {
                    p.out(&format!("{header}\n{body}\n"))?;
                }
            }
            Err(e) => p.error(&format!("store: {e}")),
        }
        if count.is_some_and(|count| refreshes >= count) {
            break;
        }
    }
    Ok(if failed { crate::ERROR } else { OK })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Ctrl-C (SIGINT), listened for from creation on, so that an early Ctrl-C also ends
/// `watch` cleanly.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> Result<Self, Failure> {
        Ok(Interrupt {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| Failure::new(format!("cannot listen for Ctrl-C: {e}")))?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
