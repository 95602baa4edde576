//! placeholder until the real module lands
use std::time::Duration;
/// Decides the delay before the next lock attempt.
pub trait RetryStrategy: Send {
    /// Delay before the next attempt, or None to give up.
    fn next_delay(&mut self) -> Option<Duration>;
}
impl<I: Iterator<Item = Duration> + Send> RetryStrategy for I {
    fn next_delay(&mut self) -> Option<Duration> {
        self.next()
    }
}
/// A single attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;
impl RetryStrategy for NoRetry {
    fn next_delay(&mut self) -> Option<Duration> {
        None
    }
}
