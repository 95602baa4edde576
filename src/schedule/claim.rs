//! The once-per-tick claim: a per-job record of the last claimed tick, compared and
//! advanced under a short claim lock whose fencing token guards the record.
//!
//! ```text
//! m  = lock(<prefix><job>:claim, random, 3 × default timeout)      token t
//! r  = m.fenced_get(<prefix><job>:last)    (raises the record's highest token to t)
//! r ≥ tick                → claimed already: not ours
//! r < tick (or no record) → m.fenced_set(<prefix><job>:last, "tick prev id") → ours
//! unlock(m)
//! ```
//!
//! The record only moves forward, and every write is fenced by the claim lock's token: a
//! claimer whose claim lock lapsed (paused, slow network) and was taken by another host
//! is refused ([`Error::Fenced`](crate::Error::Fenced)), because that host's read raised
//! the record's highest token above its own. So each tick is claimed at most once, by
//! one host, however late any host fires it, with no lease that has to outlive the tick.

use std::time::Duration;

use super::timing::Millis;
use crate::{Client, Error, Lock, Result, RetryStrategy};

/// The store keys of one job.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The short claim lock: issues the fencing tokens that guard `record`.
    pub(crate) claim: String,
    /// The fenced record of the last claimed tick.
    pub(crate) record: String,
    /// The running lock of `SkipIfStillRunning` / `DelayIfStillRunning`.
    pub(crate) running: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, job: &str) -> Keys {
        Keys {
            claim: format!("{prefix}{job}:claim"),
            record: format!("{prefix}{job}:last"),
            running: format!("{prefix}{job}:running"),
        }
    }
}

/// How a claim attempt for a tick ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This host claimed the tick: the claim lock's fencing token, and the tick claimed
    /// before it (`None`: the job had no record — it never ran on any host).
    Won {
        token: u64,
        previous: Option<Millis>,
    },
    /// The tick, or a later one, was claimed by another host.
    Lost,
    /// Not claimed because the job has no record and the caller asked for one.
    NoRecord,
}

/// The claim lock's lease: long enough for its two round trips even at the client's
/// timeout. If it lapses mid-claim, fencing keeps the claim exclusive anyway.
fn claim_lease(client: &Client) -> Duration {
    (client.default_timeout() * 3).min(crate::MAX_DURATION)
}

/// Claim `tick` for this host. `retry` bounds the whole claim: waiting for the claim lock
/// while another host holds it, and retrying after a timeout or a dropped connection.
/// With `require_record`, a job without a record is not claimed ([`Claim::NoRecord`]).
///
/// A claim that timed out may have landed: retries reuse the same claim id, so a later
/// attempt that finds its own id on the record knows the tick is its own.
pub(crate) async fn claim(
    client: &Client,
    keys: &Keys,
    tick: Millis,
    require_record: bool,
    retry: &mut (dyn RetryStrategy + Send),
) -> Result<Claim> {
    let id = crate::random_value();
    loop {
        let attempt = attempt(client, keys, tick, &id, require_record, retry).await;
        match attempt {
            Err(e) if retryable(&e) => match retry.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(e),
            },
            outcome => return outcome,
        }
    }
}

/// A timeout or a dropped connection: another attempt may succeed.
fn retryable(e: &Error) -> bool {
    e.is_transient() && !e.is_not_obtained()
}

async fn attempt(
    client: &Client,
    keys: &Keys,
    tick: Millis,
    id: &str,
    require_record: bool,
    retry: &mut (dyn RetryStrategy + Send),
) -> Result<Claim> {
    let lock = client
        .lock(
            &keys.claim,
            &crate::random_value(),
            claim_lease(client),
            client.default_timeout(),
            &mut *retry,
        )
        .await?;
    let decided = decide(&lock, keys, tick, id, require_record).await;
    // Released whatever was decided; if the release fails the lock expires by itself.
    let _ = lock.unlock().await;
    decided
}

/// Decide under the claim lock: its fenced accesses carry its token and its holder, so a
/// stale holder — or one given the same token after a failover — is refused.
async fn decide(
    lock: &Lock,
    keys: &Keys,
    tick: Millis,
    id: &str,
    require_record: bool,
) -> Result<Claim> {
    let token = lock.fencing_token();
    let record = match lock.fenced_get(&keys.record).await {
        Ok(record) => record,
        // A newer claim lock holder has read the record: it decides.
        Err(e) if e.is_fenced() => return Ok(Claim::Lost),
        Err(e) => return Err(e),
    };
    let record = record.as_deref().and_then(|r| {
        let parsed = Record::parse(r);
        if parsed.is_none() {
            tracing::warn!(
                key = keys.record.as_str(),
                "ignoring an unreadable tick record"
            );
        }
        parsed
    });
    let previous = match record {
        Some(r) if r.tick > tick => return Ok(Claim::Lost),
        Some(r) if r.tick == tick => {
            // Ours if an earlier attempt of this claim landed (its reply was lost).
            return Ok(if r.id == id {
                Claim::Won {
                    token,
                    previous: r.previous,
                }
            } else {
                Claim::Lost
            });
        }
        Some(r) => Some(r.tick),
        None if require_record => return Ok(Claim::NoRecord),
        None => None,
    };
    let value = Record {
        tick,
        previous,
        id: id.to_owned(),
    }
    .to_string();
    match lock.fenced_set(&keys.record, &value).await {
        Ok(()) => Ok(Claim::Won { token, previous }),
        Err(e) if e.is_fenced() => Ok(Claim::Lost),
        Err(e) => Err(e),
    }
}

/// The record's value: `"<tick> <previous tick or -> <claim id>"`, ticks in milliseconds
/// since the Unix epoch. Readable with `GET` for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    tick: Millis,
    previous: Option<Millis>,
    id: String,
}

impl Record {
    fn parse(s: &str) -> Option<Record> {
        let mut parts = s.split(' ');
        let tick = parts.next()?.parse().ok()?;
        let previous = match parts.next()? {
            "-" => None,
            p => Some(p.parse().ok()?),
        };
        let id = parts.next()?.to_owned();
        parts
            .next()
            .is_none()
            .then_some(Record { tick, previous, id })
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.previous {
            Some(p) => write!(f, "{} {p} {}", self.tick, self.id),
            None => write!(f, "{} - {}", self.tick, self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixedInterval, NoRetry};

    fn keys() -> Keys {
        Keys::new("t:", "job")
    }

    #[test]
    fn records_round_trip() {
        for r in [
            Record {
                tick: 1_700_000_000_000,
                previous: None,
                id: "abc".into(),
            },
            Record {
                tick: 2,
                previous: Some(1),
                id: "x".into(),
            },
        ] {
            assert_eq!(Record::parse(&r.to_string()), Some(r));
        }
        for bad in ["", "1", "1 -", "x - id", "1 y id", "1 - id extra"] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_tick_is_claimed_once_and_only_forward() {
        let c = Client::memory();
        let k = keys();
        let won = claim(&c, &k, 1_000, false, &mut NoRetry).await.unwrap();
        assert!(matches!(won, Claim::Won { previous: None, .. }), "{won:?}");
        // Any number of later attempts at the same tick, however late: not ours.
        for _ in 0..3 {
            assert_eq!(
                claim(&c, &k, 1_000, false, &mut NoRetry).await.unwrap(),
                Claim::Lost
            );
        }
        let Claim::Won { token, previous } =
            claim(&c, &k, 2_000, true, &mut NoRetry).await.unwrap()
        else {
            panic!("the next tick is free");
        };
        assert_eq!(previous, Some(1_000));
        // An older tick fired after a newer one was claimed is not claimed either.
        assert_eq!(
            claim(&c, &k, 1_500, false, &mut NoRetry).await.unwrap(),
            Claim::Lost
        );
        // Tokens rise with every claim.
        let Claim::Won { token: next, .. } =
            claim(&c, &k, 3_000, false, &mut NoRetry).await.unwrap()
        else {
            panic!("free");
        };
        assert!(next > token);
        assert_eq!(
            c.fenced_get(&k.record, u64::MAX)
                .await
                .unwrap()
                .unwrap()
                .split(' ')
                .next(),
            Some("3000")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_without_a_record_is_not_claimed_when_one_is_required() {
        let c = Client::memory();
        assert_eq!(
            claim(&c, &keys(), 1_000, true, &mut NoRetry).await.unwrap(),
            Claim::NoRecord
        );
        assert_eq!(
            c.fenced_get(&keys().record, u64::MAX).await.unwrap(),
            None,
            "nothing written"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimer_whose_claim_lock_lapsed_is_fenced_out() {
        let c = Client::memory();
        let k = keys();
        // A claims the lock and reads the record, then stalls past its claim lease…
        let a = c
            .try_lock(&k.claim, "a", Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(a.fenced_get(&k.record).await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // …B claims the same tick meanwhile…
        let won = claim(&c, &k, 5_000, false, &mut NoRetry).await.unwrap();
        assert!(matches!(won, Claim::Won { .. }));
        // …and A's stale write is refused: the tick stays B's.
        let stale = decide(&a, &k, 5_000, "a-id", false).await.unwrap();
        assert_eq!(stale, Claim::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_claim_lock_is_waited_for_under_the_strategy() {
        let c = Client::memory();
        let k = keys();
        let _held = c
            .try_lock(&k.claim, "other", Duration::from_millis(200))
            .await
            .unwrap();
        let err = claim(&c, &k, 1_000, false, &mut NoRetry).await.unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        let started = tokio::time::Instant::now();
        let won = claim(
            &c,
            &k,
            1_000,
            false,
            &mut FixedInterval::new(Duration::from_millis(50), 10),
        )
        .await
        .unwrap();
        assert!(matches!(won, Claim::Won { .. }));
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }
}
