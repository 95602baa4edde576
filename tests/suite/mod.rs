#![allow(dead_code)]
//! The stores the conformance kit (`leasehold::testing::conformance`, feature `testing`)
//! runs on in this repository: a test binary names its stores,
//!
//! ```ignore
//! #[macro_use]
//! mod suite;
//! conformance!(redis);
//! ```
//!
//! and gets every published case, each on a store of its own: a fresh server, a memory
//! store of its own, or — on an engine shared by the test binary (a cluster, a
//! sentinel-managed master, etcd) — a key prefix of its own (`ClientBuilder::key_prefix`),
//! so that no two cases see each other's keys. The store constructors below are named
//! after the store. The cases themselves live in the crate (`src/testing/conformance`):
//! users run the same ones on their own stores.

pub mod history;
#[cfg(feature = "schedule")]
pub mod schedule;

use leasehold::testing::conformance::{AsyncStore, BlockingStore};
use leasehold::{Client, blocking};

use super::support::RedisServer;

/// A unique name for a case's store: the case, and a random part (a test binary may
/// run twice at once on one shared engine).
fn unique(case: &str) -> String {
    format!("{case}-{}", &leasehold::random_value()[..8])
}

// -- the stores -------------------------------------------------------------------

/// A fresh redis-server per case.
pub mod redis {
    use super::*;

    pub async fn open(_case: &str) -> AsyncStore {
        let server = RedisServer::start();
        let client = Client::open(&server.url()).await.expect("connect");
        AsyncStore::new(client).keep_alive(server)
    }

    pub fn open_blocking(_case: &str) -> BlockingStore {
        let server = RedisServer::start();
        let url = server.url();
        let open = move || blocking::Client::open(&url).expect("connect");
        BlockingStore::new(open).keep_alive(server)
    }
}

/// A memory store of its own per case (`memory://NAME`, so that a second client shares
/// it).
pub mod memory {
    use super::*;

    pub async fn open(case: &str) -> AsyncStore {
        let url = format!("memory://{}", unique(case));
        AsyncStore::new(Client::open(&url).await.expect("open memory"))
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        let url = format!("memory://{}", unique(case));
        let open = move || blocking::Client::open(&url).expect("open memory");
        BlockingStore::new(open)
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

    pub async fn open(case: &str) -> AsyncStore {
        let urls = urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open_cluster(&urls)
            .await
            .expect("connect to the cluster");
        AsyncStore::new(client)
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
        BlockingStore::new(open)
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

    pub async fn open(case: &str) -> AsyncStore {
        let sentinels = shared().sentinel_urls();
        let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open_sentinel(&sentinels, shared().master_name())
            .await
            .expect("connect through the sentinels");
        AsyncStore::new(client)
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
        BlockingStore::new(open)
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

    pub async fn open(case: &str) -> AsyncStore {
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open(&url())
            .await
            .expect("connect to etcd");
        AsyncStore::new(client)
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
        BlockingStore::new(open)
    }
}

/// The same, with each statement prepared once per connection (`prepare=true`).
#[cfg(feature = "postgres")]
pub mod postgres_prepared {
    use super::*;

    pub fn url() -> String {
        format!("{}?prepare=true", super::postgres::url())
    }

    pub async fn open(case: &str) -> AsyncStore {
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

    pub async fn open(case: &str) -> AsyncStore {
        open_url(case, &url()).await
    }

    pub fn open_blocking(case: &str) -> BlockingStore {
        open_blocking_url(case, url())
    }

    pub async fn open_url(case: &str, url: &str) -> AsyncStore {
        let client = Client::builder()
            .key_prefix(format!("{}:", unique(case)))
            .open(url)
            .await
            .expect("connect to postgres");
        AsyncStore::new(client)
    }

    pub fn open_blocking_url(case: &str, url: String) -> BlockingStore {
        let prefix = format!("{}:", unique(case));
        let open = move || {
            blocking::Client::builder()
                .key_prefix(prefix.clone())
                .open(&url)
                .expect("connect to postgres")
        };
        BlockingStore::new(open)
    }
}

// -- the suite --------------------------------------------------------------------

/// `conformance!(store)`: a module `store` with every published async case
/// (`store::r#async::…`) and every blocking case (`store::blocking::…`), each on a store
/// of its own from `suite::store::open` / `open_blocking`.
macro_rules! conformance {
    ($store:ident) => {
        mod $store {
            leasehold::conformance_tests!(
                crate::suite::$store::open,
                crate::suite::$store::open_blocking
            );
        }
    };
}
