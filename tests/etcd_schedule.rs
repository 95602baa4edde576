//! Scheduled jobs across hosts on etcd (features `etcd` and `schedule`): the multi-host
//! scenarios of `tests/schedule.rs` — every tick once with a late host and a late
//! starter, `SkipIfStillRunning` never overlapping (with `Allow` as its negative
//! control), `DelayIfStillRunning` starting right after the previous run — on one etcd
//! member shared by this binary (each scenario under key prefixes of its own). The
//! scheduler is built on the public client API only; its leases are whole seconds here.
#![cfg(all(feature = "etcd", feature = "schedule"))]

#[allow(unused_macros)] // `conformance!`: not run here
mod suite;
mod support;

use suite::schedule::{
    delayed_runs_start_right_after_the_previous, skip_never_overlaps_and_allow_does,
    three_hosts_each_tick_once,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_etcd_run_each_tick_exactly_once() {
    three_hosts_each_tick_once(&suite::etcd::url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_if_still_running_never_overlaps_across_hosts_on_etcd() {
    skip_never_overlaps_and_allow_does(&suite::etcd::url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_if_still_running_starts_right_after_the_previous_run_on_etcd() {
    delayed_runs_start_right_after_the_previous(&suite::etcd::url()).await;
}
