//! A client's settings from a configuration file (feature `serde`).
//!
//! [`Config`] deserializes from any serde format — TOML, YAML, JSON,
//! environment layers such as `figment` or `config` — and opens the client it describes:
//!
//! ```toml
//! # one store: url = "…", or cluster = […], or sentinels = […] with master_name
//! url = "redis://:secret@10.0.0.5:6379/0"   # redis://, rediss://, unix://, etcd://, memory://
//! key_prefix = "billing:"
//! default_timeout = "500ms"                 # "250ms", "30s", "1m 30s" or integer milliseconds
//! connect_timeout = "5s"
//! notify = true
//! min_replicas = { replicas = 1, timeout = "100ms" }
//! tls_root_certificate = "/etc/leasehold/ca.pem"   # rediss:// with a private CA (feature tls)
//!
//! [retry]                  # how Client::lock retries: fixed | jittered | exponential | none
//! kind = "exponential"
//! min_delay = "50ms"
//! max_delay = "2s"
//! factor = 2.0             # default 2
//! jitter = true            # default true
//! max_retries = 10         # default 10
//! max_total_delay = "10s"  # default: none
//!
//! [renewal]                # defaults for Lock::auto_refresh
//! expiration = "30s"       # default 30 s
//! interval = "10s"         # default: a third of the expiration
//! timeout = "1s"           # default 1 s
//! max_retry = 3            # default 3
//! ```
//!
//! Every field is optional. A store is one of `url`, `cluster` (feature `cluster`) or
//! `sentinels` with `master_name` (feature `sentinel`); [`Config::open`] refuses none or
//! two. Durations are strings in humantime's units (`"250ms"`, `"30s"`, `"1m 30s"`,
//! `"2h"`) or integer milliseconds, and must lie within 1 ms ..=
//! [`MAX_DURATION`](crate::MAX_DURATION) like the builder's. Unknown fields are
//! errors (a misspelt `defualt_timeout` is never silently ignored), and every error
//! names the field or quotes the value it is about.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any serde format: the format crate is yours (toml, serde-saphyr, serde_json…).
//! let config: leasehold::Config = serde_json::from_str(r#"{
//!     "url": "memory://",
//!     "key_prefix": "billing:",
//!     "default_timeout": "500ms",
//!     "retry": { "kind": "fixed", "interval": "100ms", "max_retries": 20 },
//!     "renewal": { "expiration": "30s" }
//! }"#)?;
//! let client = config.open().await?;
//! let lock = client
//!     .lock(
//!         "nightly-report",
//!         &leasehold::random_value(),
//!         config.renewal().expiration, // 30 s
//!         config.default_timeout(),    // 500 ms per attempt
//!         config.retry(),              // 20 × 100 ms, a fresh strategy each call
//!     )
//!     .await?;
//! let mut renewal = config.renewal().auto_refresh(&lock)?; // every 10 s
//! assert!(renewal.try_error().is_none());
//! lock.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! A password inside a URL never appears in the `Debug` output of a `Config`, nor in an
//! error (serializing a `Config` writes it, as it was read).

mod duration;
pub(crate) mod settings;

// `Config` is documented at the crate root (`leasehold::Config`); this path stays for
// code written against it.
#[doc(hidden)]
pub use settings::Config;
pub use settings::{MinReplicas, RenewalConfig, RetryConfig};
