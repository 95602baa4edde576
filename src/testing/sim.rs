//! A simulated store.

/// A deterministic simulated store on tokio's paused clock.
#[derive(Debug, Default)]
pub struct SimStore;
