//! The pause between two attempts of `lock`: the retry strategy's delay, cut short when
//! the key is released or its holder's lease runs out — never longer than the strategy
//! allows.
//!
//! * The strategy is asked for a delay only when the previous one has run out (or there
//!   was none yet); that delay is the step's deadline.
//! * After a miss, the pause ends early when the store says the key was released (this
//!   caller was first in line for it) or when the holder's remaining time to live, as
//!   the store reported it, has passed. The attempt that follows belongs to the same
//!   step: if it misses again, the pause goes on until the same deadline.
//! * When the strategy has no delay left, no attempt follows.
//!
//! * tokio's timer counts whole milliseconds and rounds a deadline up to the next one,
//!   which adds about a millisecond to every pause (a zero delay would sleep up to 1 ms).
//!   A pause is given to the timer as the last tick at or before the delay's end instead,
//!   so it lasts the delay to within the timer's millisecond, either way, and no longer
//!   on average; a zero delay (or a step already over) is no pause at all (the task
//!   only yields).
//!
//! So the total time waited does not exceed the sum of the strategy's delays (to within
//! the timer's millisecond), an early wake costs no strategy step, and waiters are woken
//! in the order they started waiting.

use std::time::Duration;

use tokio::time::Instant;

use crate::retry::RetryStrategy;
use crate::wake::Watch;

/// A wake for a holder's expiry comes this long after the store's reported time to live,
/// so that the key is surely gone by the attempt (the store counts whole milliseconds).
const AFTER_EXPIRY: Duration = Duration::from_millis(1);

/// Far enough to stand for "never" (a strategy may return `Duration::MAX`).
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// tokio's timer resolution: a deadline fires at the first tick at or after it.
const TICK: Duration = Duration::from_millis(1);

/// The deadline to give tokio's timer for a pause that should end at `end`: one that
/// tokio rounds up to the last tick at or before `end`, not to the tick after it.
fn by_tick(end: Instant) -> Instant {
    end.checked_sub(TICK - Duration::from_nanos(1))
        .unwrap_or(end)
}

/// How the last attempt went, for the pause that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Last {
    /// Another value held the key, for this much longer if the store said.
    Missed(Option<Duration>),
    /// The attempt failed (a timeout, a connection error): a release cannot help.
    Failed,
}

pub(crate) struct Pause<R> {
    retry: R,
    /// The end of the strategy's current delay, while it lasts.
    until: Option<Instant>,
    /// This call's place in line for the key, taken at its first miss.
    watch: Option<Watch>,
    /// Whether a pause may end early (`ClientBuilder::notify`).
    early: bool,
}

impl<R: RetryStrategy> Pause<R> {
    pub(crate) fn new(retry: R, early: bool) -> Self {
        Pause {
            retry,
            until: None,
            watch: None,
            early,
        }
    }

    /// Pause before the next attempt; `false` (at once) when the strategy has no delay
    /// left: then no attempt may follow. `watch` takes this call's place in line for the
    /// key, at its first miss.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the line (with the pause).
    pub(crate) async fn wait(&mut self, last: Last, watch: impl FnOnce() -> Option<Watch>) -> bool {
        let now = Instant::now();
        let until = match self.until {
            Some(until) if now < until => until,
            _ => match self.retry.next_delay() {
                Some(delay) => now.checked_add(delay).unwrap_or(now + FAR),
                None => return false,
            },
        };
        self.until = Some(until);
        let (watching, expiry) = match last {
            Last::Missed(ttl) if self.early => {
                if self.watch.is_none() {
                    self.watch = watch();
                }
                let expiry = ttl
                    .and_then(|ttl| now.checked_add(ttl.saturating_add(AFTER_EXPIRY)))
                    .filter(|expiry| *expiry < until);
                (self.watch.as_ref(), expiry)
            }
            _ => (None, None),
        };
        let woken = if until <= Instant::now() {
            // No delay left: a timer would still wait for its next tick.
            tokio::task::yield_now().await;
            false
        } else {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(by_tick(until)) => false,
                () = woken(watching), if watching.is_some() => true,
                // The holder's expiry: rounded up, so that it has passed.
                () = tokio::time::sleep_until(expiry.unwrap_or(until)), if expiry.is_some() => true,
            }
        };
        if !woken {
            self.until = None; // the step ran out: the next pause asks for a new delay
        }
        true
    }
}

async fn woken(watch: Option<&Watch>) {
    match watch {
        Some(watch) => watch.woken().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedInterval;
    use crate::wake::Waiters;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn without_wakes_it_is_the_strategy_exactly() {
        let mut pause = Pause::new(FixedInterval::new(200 * MS, 3), true);
        let started = Instant::now();
        for _ in 0..3 {
            assert!(pause.wait(Last::Missed(None), || None).await);
        }
        assert_eq!(started.elapsed(), 600 * MS);
        assert!(!pause.wait(Last::Missed(None), || None).await);
        assert_eq!(started.elapsed(), 600 * MS, "no pause after the last delay");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_ends_the_pause_early_within_the_same_step() {
        let waiters = Arc::new(Waiters::default());
        let mut pause = Pause::new(FixedInterval::new(200 * MS, 1), true);
        let started = Instant::now();
        let release = {
            let waiters = Arc::clone(&waiters);
            async move {
                tokio::time::sleep(50 * MS).await;
                waiters.released("k");
            }
        };
        let (more, ()) = tokio::join!(
            pause.wait(Last::Missed(None), || Some(waiters.watch("k").0)),
            release
        );
        assert!(more);
        assert_eq!(started.elapsed(), 50 * MS);
        // The next miss waits out the rest of the same step, then the strategy is done.
        assert!(pause.wait(Last::Missed(None), || unreachable!()).await);
        assert_eq!(started.elapsed(), 200 * MS);
        assert!(!pause.wait(Last::Missed(None), || unreachable!()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_holders_expiry_ends_the_pause_and_failures_wait_the_whole_step() {
        let mut pause = Pause::new(FixedInterval::new(200 * MS, 2), true);
        let started = Instant::now();
        assert!(pause.wait(Last::Missed(Some(30 * MS)), || None).await);
        assert_eq!(started.elapsed(), 31 * MS);
        // An expiry past the step's end does not stretch it.
        assert!(pause.wait(Last::Missed(Some(500 * MS)), || None).await);
        assert_eq!(started.elapsed(), 200 * MS);
        assert!(pause.wait(Last::Failed, || unreachable!()).await);
        assert_eq!(started.elapsed(), 400 * MS);
        assert!(!pause.wait(Last::Failed, || None).await);
    }

    /// tokio's timer would round each deadline up to its next millisecond tick: from
    /// half-way through a tick, a zero delay would pause half a millisecond, 0.3 ms as
    /// much, and 1.3 ms would pause 2 ms.
    #[tokio::test(start_paused = true)]
    async fn pauses_are_not_rounded_up_to_the_timers_ticks() {
        tokio::time::advance(MS / 2).await;
        let started = Instant::now();
        let mut pause = Pause::new(FixedInterval::new(Duration::ZERO, 2), true);
        assert!(pause.wait(Last::Missed(None), || None).await);
        assert!(pause.wait(Last::Failed, || None).await);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a zero delay is no pause"
        );
        assert!(!pause.wait(Last::Missed(None), || None).await);

        // Still half-way through the timer's first tick.
        let delay = Duration::from_micros(300);
        let mut pause = Pause::new(FixedInterval::new(delay, 1), true);
        let started = Instant::now();
        assert!(pause.wait(Last::Missed(None), || None).await);
        assert_eq!(started.elapsed(), Duration::ZERO, "no tick before its end");

        let delay = Duration::from_micros(1_300);
        let mut pause = Pause::new(FixedInterval::new(delay, 1), true);
        let started = Instant::now();
        assert!(pause.wait(Last::Missed(None), || None).await);
        let paused = started.elapsed();
        assert!(
            paused <= delay,
            "{paused:?} is longer than the {delay:?} asked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_wakes_off_it_only_polls() {
        let waiters = Arc::new(Waiters::default());
        let (other, _) = waiters.watch("k");
        let mut pause = Pause::new(FixedInterval::new(200 * MS, 1), false);
        let started = Instant::now();
        waiters.wake_key("k");
        assert!(pause.wait(Last::Missed(Some(MS)), || unreachable!()).await);
        assert_eq!(started.elapsed(), 200 * MS);
        drop(other);
    }
}
