//! Opening a store from a URL: each store declares its schemes and opens itself from the
//! URL and the client's store-neutral [`Options`]; [`open`] asks the list. Adding a store
//! touches its own module, [`STORES`] and Cargo — nothing in the client.

use std::time::Duration;

use futures::future::BoxFuture;

use super::Backend;
use super::{memory, redis};
use crate::{Error, Result};

/// What every store may be opened with (from the `ClientBuilder`), and the options only
/// one store has, kept apart.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
    /// Whether waiters wake on a release (`ClientBuilder::notify`).
    pub(crate) notify: bool,
    /// The root certificate (PEM) for TLS URLs; `None`: the platform's roots.
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    /// Redis only: `min_replicas`, and the client of a user's connection's notifier.
    pub(crate) redis: redis::Extra,
}

/// A store opened: the client's backend, and where it points (without credentials).
type Opened = (Backend, String);

/// A store's opening function.
type Opener = for<'a> fn(&'a str, &'a Options) -> BoxFuture<'a, Result<Opened>>;

/// How one store opens itself.
struct Entry {
    /// The URL schemes it opens, with `://`.
    schemes: &'static [&'static str],
    /// `None`: built without its feature (named here).
    open: Option<Opener>,
    feature: &'static str,
}

/// Every store that opens from a URL.
const STORES: &[Entry] = &[
    Entry {
        schemes: &[memory::SCHEME],
        open: Some(|url, _| Box::pin(async move { Ok(memory::open(url)) })),
        feature: "",
    },
    Entry {
        schemes: redis::SCHEMES,
        open: Some(|url, options| Box::pin(redis::open(url, options))),
        feature: "",
    },
    Entry {
        schemes: &["etcd://", "etcds://"],
        #[cfg(feature = "etcd")]
        open: Some(|url, options| Box::pin(super::etcd::open(url, options))),
        #[cfg(not(feature = "etcd"))]
        open: None,
        feature: "etcd",
    },
    Entry {
        schemes: &["postgres://", "postgresql://"],
        #[cfg(feature = "postgres")]
        open: Some(|url, options| Box::pin(super::postgres::open_backend(url, options))),
        #[cfg(not(feature = "postgres"))]
        open: None,
        feature: "postgres",
    },
];

/// Open the store `url` names.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a scheme no store opens (naming those that do), or one
/// whose store this build left out (naming its feature); the store's own errors otherwise.
pub(crate) async fn open(url: &str, options: &Options) -> Result<Opened> {
    let entry = STORES
        .iter()
        .find(|e| e.schemes.iter().any(|s| url.starts_with(s)));
    match entry {
        Some(Entry {
            open: Some(open), ..
        }) => open(url, options).await,
        Some(entry) => Err(Error::invalid(format!(
            "url: {} needs the `{}` feature",
            entry.schemes.join(" and "),
            entry.feature
        ))),
        None => {
            let known: Vec<&str> = STORES
                .iter()
                .filter(|e| e.open.is_some())
                .flat_map(|e| e.schemes.iter().copied())
                .collect();
            Err(Error::invalid(format!(
                "url: expected {}",
                known.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            connect_timeout: Duration::from_secs(1),
            notify: true,
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
            redis: redis::Extra::default(),
        }
    }

    #[tokio::test]
    async fn an_unknown_scheme_names_every_scheme_that_opens() {
        let Err(Error::InvalidArgument(msg)) = open("mysql://h/db", &options()).await else {
            panic!("expected InvalidArgument");
        };
        for entry in STORES.iter().filter(|e| e.open.is_some()) {
            for scheme in entry.schemes {
                assert!(msg.contains(scheme), "{msg} should name {scheme}");
            }
        }
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn a_scheme_of_a_store_left_out_names_its_feature() {
        let Err(Error::InvalidArgument(msg)) = open("etcd://h:2379", &options()).await else {
            panic!("expected InvalidArgument");
        };
        assert!(msg.contains("`etcd` feature"), "{msg}");
    }
}
