#![allow(dead_code)]
//! The conformance suite: every line of the contract's "Semantics users rely on", run on
//! every store, through the async API and through the blocking facade. The cases are
//! written once ([`cases`], [`blocking_cases`]); a test binary names its stores:
//!
//! ```ignore
//! #[macro_use]
//! mod suite;
//! conformance!(redis);
//! ```
//!
//! Each case gets a store of its own: a fresh server, a memory store of its own, or — on
//! an engine shared by the test binary (a cluster, a sentinel-managed master, etcd) — a
//! key prefix of its own (`ClientBuilder::key_prefix`), so that no two cases see each
//! other's keys. The store constructors below are named after the store.
//!
//! Where the contract lets a store differ, a case checks the store's documented
//! behaviour, read from the client by [`Traits::of`]: etcd grants whole seconds (so a
//! 50 ms expiration lasts 1 s there, and the case waits out `Lock::expiration()`, plus
//! the server's expiry sweep), reports `ttl()` in whole seconds rounded down, and its
//! tokens are revisions shared by every key. Every other store is checked to the
//! millisecond, as before.

pub mod blocking_cases;
pub mod cases;
pub mod history;
pub mod locker;
#[cfg(feature = "schedule")]
pub mod schedule;

use std::any::Any;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use leasehold::{Client, blocking};

use super::support::RedisServer;

/// A store for one async case: a client, and whatever keeps the store alive.
pub struct Store {
    pub client: Client,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

/// A store for one blocking case: a client, a way to open a second, independent client
/// on the same store (its own runtime thread and connection, the same key prefix), and
/// whatever keeps the store alive.
pub struct BlockingStore {
    pub client: blocking::Client,
    open: Box<dyn Fn() -> blocking::Client + Send + Sync>,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl BlockingStore {
    pub fn second_client(&self) -> blocking::Client {
        (self.open)()
    }
}

/// Runs `f` on its own thread; fails the test if it does not finish within `limit`.
/// A panic inside `f` is resumed here.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}

/// How a store differs where the contract lets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    /// Expirations are granted in whole seconds (rounded up: `Lock::expiration()` says
    /// what was granted) and `ttl()` counts whole seconds, rounded down.
    pub whole_seconds: bool,
    /// How long an expired key may still be there before the store deletes it.
    pub expiry_lag: Duration,
}

/// Redis, Redis Cluster, Sentinel, memory: milliseconds.
pub const MILLISECONDS: Traits = Traits {
    whole_seconds: false,
    expiry_lag: Duration::from_millis(20),
};

/// etcd: leases of whole seconds, deleted by the server's expiry sweep (every 500 ms)
/// after they ran out; create revisions as tokens.
pub const ETCD: Traits = Traits {
    whole_seconds: true,
    expiry_lag: Duration::from_millis(700),
};

impl Traits {
    /// The traits of the store `client` (a `Client` or a `blocking::Client`) talks to,
    /// as its `Debug` output names it.
    pub fn of(client: &impl Debug) -> Traits {
        if format!("{client:?}").contains("store: \"etcd\"") {
            ETCD
        } else {
            MILLISECONDS
        }
    }

    /// `ttl` is more than `lo` — to the whole second below `lo` on a store that counts
    /// whole seconds (rounded down).
    pub fn above(&self, ttl: Duration, lo: Duration) -> bool {
        if self.whole_seconds {
            ttl >= Duration::from_secs(lo.as_secs())
        } else {
            ttl > lo
        }
    }

    /// How long to wait after acquiring a lock of `granted` expiration
    /// (`Lock::expiration()`) for it to be gone from the store surely: `short` (what
    /// the case waits on a store of milliseconds, a little over the expiration), or the
    /// granted expiration and the expiry sweep on a store of whole seconds.
    pub fn outlive(&self, granted: Duration, short: Duration) -> Duration {
        if self.whole_seconds {
            granted + self.expiry_lag
        } else {
            short
        }
    }

    /// An expiration that `ttl()` can tell from a shorter one: `d`, or at least 3 s on
    /// a store of whole seconds.
    pub fn distinct(&self, d: Duration) -> Duration {
        if self.whole_seconds {
            d.max(Duration::from_secs(3))
        } else {
            d
        }
    }
}

/// A unique name for a case's store: the case, and a random part (a test binary may
/// run twice at once on one shared engine).
fn unique(case: &str) -> String {
    format!("{case}-{}", &leasehold::random_value()[..8])
}

// -- the stores -------------------------------------------------------------------

/// A fresh redis-server per case.
pub mod redis {
    use super::*;

    pub async fn open(_case: &str) -> Store {
        let server = RedisServer::start();
        let client = Client::open(&server.url()).await.expect("connect");
        Store {
            client,
            _keep: Some(Box::new(server)),
        }
    }

    pub fn open_blocking(_case: &str) -> BlockingStore {
        let server = RedisServer::start();
        let url = server.url();
        let open = move || blocking::Client::open(&url).expect("connect");
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: Some(Box::new(server)),
        }
    }
}

/// A memory store of its own per case (`memory://NAME`, so that a second client shares
/// it).
pub mod memory {
    use super::*;

    pub async fn open(case: &str) -> Store {
        let url = format!("memory://{}", unique(case));
        Store {
            client: Client::open(&url).await.expect("open memory"),
            _keep: None,
        }
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        let url = format!("memory://{}", unique(case));
        let open = move || blocking::Client::open(&url).expect("open memory");
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: None,
        }
    }
}

/// The test binary's shared Redis Cluster (3 masters, 1 replica each); a key prefix per
/// case.
#[cfg(feature = "cluster")]
pub mod cluster {
    use super::*;
    use crate::support::RedisCluster;

    fn urls() -> Vec<String> {
        RedisCluster::shared().urls()
    }

    pub async fn open(case: &str) -> Store {
        let urls = urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open_cluster(&urls)
            .await
            .expect("connect to the cluster");
        Store {
            client,
            _keep: None,
        }
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        let prefix = format!("{}:", unique(case));
        let urls = urls();
        let open = move || {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            blocking::Client::builder()
                .key_prefix(prefix.clone())
                .open_cluster(&urls)
                .expect("connect to the cluster")
        };
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: None,
        }
    }
}

/// The test binary's shared sentinel-managed master (one master, one replica, three
/// sentinels); a key prefix per case.
#[cfg(feature = "sentinel")]
pub mod sentinel {
    use super::*;
    use crate::support::RedisSentinel;
    use std::sync::OnceLock;

    /// Started on first use; its processes die with the test binary.
    pub fn shared() -> &'static RedisSentinel {
        static SHARED: OnceLock<RedisSentinel> = OnceLock::new();
        SHARED.get_or_init(RedisSentinel::start)
    }

    pub async fn open(case: &str) -> Store {
        let sentinels = shared().sentinel_urls();
        let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open_sentinel(&sentinels, shared().master_name())
            .await
            .expect("connect through the sentinels");
        Store {
            client,
            _keep: None,
        }
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        let prefix = format!("{}:", unique(case));
        let sentinels = shared().sentinel_urls();
        let open = move || {
            let urls: Vec<&str> = sentinels.iter().map(String::as_str).collect();
            blocking::Client::builder()
                .key_prefix(prefix.clone())
                .open_sentinel(&urls, shared().master_name())
                .expect("connect through the sentinels")
        };
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: None,
        }
    }
}

/// The test binary's shared etcd (one member); a key prefix per case.
#[cfg(feature = "etcd")]
pub mod etcd {
    use super::*;
    use crate::support::EtcdServer;

    pub fn url() -> String {
        EtcdServer::shared().url()
    }

    pub async fn open(case: &str) -> Store {
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open(&url())
            .await
            .expect("connect to etcd");
        Store {
            client,
            _keep: None,
        }
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        let prefix = format!("{}:", unique(case));
        let url = url();
        let open = move || {
            blocking::Client::builder()
                .key_prefix(prefix.clone())
                .open(&url)
                .expect("connect to etcd")
        };
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: None,
        }
    }
}

/// The same, with each statement prepared once per connection (`prepare=true`).
#[cfg(feature = "postgres")]
pub mod postgres_prepared {
    use super::*;

    pub fn url() -> String {
        format!("{}?prepare=true", super::postgres::url())
    }

    pub async fn open(case: &str) -> Store {
        super::postgres::open_url(case, &url()).await
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        super::postgres::open_blocking_url(case, url())
    }
}

/// The test binary's shared PostgreSQL (feature `postgres`); a key prefix per case.
#[cfg(feature = "postgres")]
pub mod postgres {
    use super::*;
    use crate::support::PostgresServer;

    pub fn url() -> String {
        PostgresServer::shared().url()
    }

    pub async fn open(case: &str) -> Store {
        open_url(case, &url()).await
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        open_blocking_url(case, url())
    }

    pub async fn open_url(case: &str, url: &str) -> Store {
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open(url)
            .await
            .expect("connect to postgres");
        Store {
            client,
            _keep: None,
        }
    }

    pub fn open_blocking_url(case: &str, url: String) -> BlockingStore {
        let prefix = format!("{}:", unique(case));
        let open = move || {
            blocking::Client::builder()
                .key_prefix(prefix.clone())
                .open(&url)
                .expect("connect to postgres")
        };
        BlockingStore {
            client: open(),
            open: Box::new(open),
            _keep: None,
        }
    }
}

// -- the suite --------------------------------------------------------------------

/// `conformance!(store)`: a module `store` with every async case (`store::r#async::…`)
/// and every blocking case (`store::blocking::…`), each on a store of its own from
/// `suite::store::open` / `open_blocking`.
macro_rules! conformance {
    ($store:ident) => {
        mod $store {
            mod r#async {
                conformance!(@async $store:
                    acquire_then_contention_is_not_obtained,
                    same_value_reacquires_rearms_and_keeps_its_token,
                    fencing_tokens_rise_across_acquisitions_and_survive_expiry,
                    refresh_rearms_the_original_expiration,
                    refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone,
                    ttl_reports_remaining_time_and_none_when_not_held,
                    unlock_releases_and_a_stale_unlock_is_not_held,
                    retry_waits_until_the_holder_releases,
                    contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt,
                    iterators_and_custom_strategies_plug_in,
                    bad_input_is_rejected_before_any_io,
                    many_tasks_never_hold_one_key_at_once,
                    debug_output_never_shows_the_lock_value,
                    inspection_lists_locks_by_prefix_and_force_release_frees_them,
                    holder_label_and_locked_at_show_who_holds_since_when,
                    lock_requests_take_named_options_and_keep_a_renewed_lock,
                    refresh_for_sets_the_expiration_given,
                    run_exclusive_renews_releases_and_reports_a_loss,
                    force_release_if_deletes_only_the_acquisition_named,
                );
            }
            mod blocking {
                conformance!(@blocking $store:
                    acquire_then_contention_is_not_obtained,
                    same_value_reacquires_rearms_and_keeps_its_token,
                    fencing_tokens_rise_across_acquisitions_and_survive_expiry,
                    refresh_rearms_the_original_expiration,
                    refresh_ttl_unlock_after_loss_are_not_held_and_leave_the_new_owner_alone,
                    bad_input_is_rejected_before_any_io,
                    renewal_continues_while_the_caller_sleeps,
                    error_timeout_is_none_while_renewal_runs_and_not_held_after_a_takeover,
                    unlock_and_stop_end_renewal_cleanly,
                    many_threads_never_hold_one_key_at_once,
                    debug_output_never_shows_the_lock_value,
                    fenced_resources_refuse_a_superseded_holder,
                    lock_requests_take_named_options_and_keep_a_renewed_lock,
                    refresh_for_inspection_and_force_release,
                    run_exclusive_renews_releases_and_reports_a_loss,
                    force_release_if_deletes_only_the_acquisition_named,
                    the_value_is_the_identity_across_clients,
                );
            }
        }
    };
    (@async $store:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = crate::suite::$store::open(stringify!($case)).await;
                crate::suite::cases::$case(&store.client).await;
            }
        )*
    };
    (@blocking $store:ident: $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                crate::suite::bounded(std::time::Duration::from_secs(30), || {
                    let store = crate::suite::$store::open_blocking(stringify!($case));
                    crate::suite::blocking_cases::$case(&store);
                });
            }
        )*
    };
}
