//! [`Config`] and its parts: what a configuration file says, and the client it opens.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

use crate::client::ClientBuilder;
use crate::redact::Redacted;
use crate::{
    AutoRefresh, Client, Error, ExponentialBackoff, FixedInterval, Lock, NoRetry, NonFixedInterval,
    Result, RetryStrategy, blocking,
};

/// A client's settings, as read from a configuration file: the store, key prefix,
/// timeouts, notification, replication, TLS root, and the retry and renewal defaults
/// the application uses with it. See the [module documentation](crate::config) for the format.
///
/// Every field is optional (`Config::default()` is "nothing set": the builder's
/// defaults, and no store). Fields are public so that command-line flags or
/// environment variables can override what a file says before the client is opened.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> leasehold::Result<()> {
/// use std::time::Duration;
///
/// let mut config = leasehold::Config::from_url("memory://");
/// config.default_timeout = Some(Duration::from_millis(250));
/// config.key_prefix = Some("staging:".into());
/// let client = config.open().await?;
/// let lock = client.try_lock("nightly-report", "me", Duration::from_secs(30)).await?;
/// assert_eq!(lock.key(), "nightly-report");
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// One store, by URL: `redis://[user:password@]host[:port][/db]`, `rediss://…`
    /// (feature `tls`), `redis+unix:///path` / `unix:///path`, `memory://[NAME]`,
    /// `etcd://[user:password@]host:port[,host:port…]` (feature `etcd`). See
    /// [`Client::open`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Redis Cluster, by one or more of its nodes (`redis://host:port`); see
    /// [`Client::open_cluster`]. Needs the `cluster` feature when the client is opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// A sentinel-managed master: the sentinels (`redis://host:port`), with
    /// [`master_name`](Config::master_name); see [`Client::open_sentinel`]. Needs the
    /// `sentinel` feature when the client is opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinels: Option<Vec<String>>,
    /// The name the sentinels know the master by (with `sentinels` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// [`ClientBuilder::key_prefix`]. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// [`ClientBuilder::holder_label`]. Default: this host's name and the process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_label: Option<String>,
    /// [`ClientBuilder::default_timeout`]. Default: [`Client::DEFAULT_TIMEOUT`] (1 s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub default_timeout: Option<Duration>,
    /// [`ClientBuilder::connect_timeout`]. Default:
    /// [`Client::DEFAULT_CONNECT_TIMEOUT`] (5 s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// [`ClientBuilder::notify`]. Default: on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// [`ClientBuilder::min_replicas`]. Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<MinReplicas>,
    /// A PEM file with the root certificate to trust for `rediss://`
    /// ([`ClientBuilder::tls_root_certificate`]); read when the client is opened. Needs
    /// the `tls` feature. Default: the platform's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_root_certificate: Option<PathBuf>,
    /// The retry strategy the application locks with: [`Config::retry`] builds it.
    /// Default: [`NoRetry`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// The renewal settings the application renews with: [`Config::renewal`]. Default:
    /// [`RenewalConfig::default`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalConfig>,
}

/// `min_replicas = { replicas = 1, timeout = "100ms" }`: see
/// [`ClientBuilder::min_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MinReplicas {
    /// Replicas that must acknowledge each acquire and refresh (at least 1).
    pub replicas: u32,
    /// How long to wait for them.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// `retry = { kind = "…", … }`: a retry strategy and its parameters, built again for
/// every `lock` call by [`RetryConfig::build`] (a strategy keeps state: it cannot be
/// shared between calls).
///
/// | `kind` | parameters | strategy |
/// |---|---|---|
/// | `"none"` | — | [`NoRetry`] |
/// | `"fixed"` | `interval`, `max_retries` | [`FixedInterval`] |
/// | `"jittered"` | `interval`, `max_retries` | [`NonFixedInterval`] |
/// | `"exponential"` | `min_delay`, `max_delay`; `factor` (2), `jitter` (true), `max_retries` (10), `max_total_delay` (none) | [`ExponentialBackoff`] |
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum RetryConfig {
    /// `kind = "none"`: a single attempt. (A struct variant without fields, so that a
    /// parameter given to it is refused as an unknown field.)
    #[serde(rename = "none")]
    NoRetry {},
    /// `kind = "fixed"`: `max_retries` delays of `interval`.
    Fixed {
        /// The delay between attempts.
        #[serde(with = "duration")]
        interval: Duration,
        /// How many retries after the first attempt.
        max_retries: u32,
    },
    /// `kind = "jittered"`: `max_retries` delays drawn from `[interval/2, interval*3/2]`.
    Jittered {
        /// The mean delay between attempts.
        #[serde(with = "duration")]
        interval: Duration,
        /// How many retries after the first attempt.
        max_retries: u32,
    },
    /// `kind = "exponential"`: `min_delay`, growing by `factor` up to `max_delay`.
    Exponential {
        /// The first delay.
        #[serde(with = "duration")]
        min_delay: Duration,
        /// The cap on every delay.
        #[serde(with = "duration")]
        max_delay: Duration,
        /// Growth between delays; default [`ExponentialBackoff::DEFAULT_FACTOR`] (2).
        #[serde(default = "default_factor")]
        factor: f32,
        /// Equal jitter on each delay; default on.
        #[serde(default = "yes")]
        jitter: bool,
        /// How many retries; default [`ExponentialBackoff::DEFAULT_MAX_RETRIES`] (10).
        #[serde(default = "default_max_retries")]
        max_retries: u32,
        /// Give up once the delays would add up to more; default: no limit.
        #[serde(
            default,
            with = "duration::option",
            skip_serializing_if = "Option::is_none"
        )]
        max_total_delay: Option<Duration>,
    },
}

fn default_factor() -> f32 {
    ExponentialBackoff::DEFAULT_FACTOR
}

fn default_max_retries() -> u32 {
    ExponentialBackoff::DEFAULT_MAX_RETRIES
}

fn yes() -> bool {
    true
}

impl RetryConfig {
    /// A fresh strategy with these parameters, ready for one `lock` call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold::RetryStrategy;
    /// use leasehold::config::RetryConfig;
    ///
    /// let retry: RetryConfig =
    ///     serde_json::from_str(r#"{ "kind": "fixed", "interval": 100, "max_retries": 2 }"#)
    ///         .unwrap();
    /// let mut strategy = retry.build();
    /// assert_eq!(strategy.next_delay(), Some(Duration::from_millis(100)));
    /// assert_eq!(strategy.next_delay(), Some(Duration::from_millis(100)));
    /// assert_eq!(strategy.next_delay(), None);
    /// ```
    pub fn build(&self) -> Box<dyn RetryStrategy + Send + Sync> {
        match *self {
            RetryConfig::NoRetry {} => Box::new(NoRetry),
            RetryConfig::Fixed {
                interval,
                max_retries,
            } => Box::new(FixedInterval::new(interval, max_retries)),
            RetryConfig::Jittered {
                interval,
                max_retries,
            } => Box::new(NonFixedInterval::new(interval, max_retries)),
            RetryConfig::Exponential {
                min_delay,
                max_delay,
                factor,
                jitter,
                max_retries,
                max_total_delay,
            } => {
                let mut backoff = ExponentialBackoff::new(min_delay, max_delay)
                    .with_factor(factor)
                    .with_max_retries(max_retries);
                if !jitter {
                    backoff = backoff.without_jitter();
                }
                if let Some(total) = max_total_delay {
                    backoff = backoff.with_max_total_delay(total);
                }
                Box::new(backoff)
            }
        }
    }
}

/// `renewal = { expiration, interval, timeout, max_retry }`: the arguments of
/// [`Lock::auto_refresh`], kept in the configuration so that operators can tune them.
///
/// Read with defaults for what is missing: `expiration` 30 s, `interval` a third of the
/// expiration, `timeout` 1 s, `max_retry` 3; `interval` must be shorter than
/// `expiration` (checked as the file is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RenewalFields")]
pub struct RenewalConfig {
    /// How long each renewal extends the lease (and a good lock expiration).
    #[serde(with = "duration")]
    pub expiration: Duration,
    /// How often to renew.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// The bound on each renewal's round trip.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive timed-out renewals before renewal gives up.
    pub max_retry: u32,
}

impl Default for RenewalConfig {
    /// `expiration` 30 s, `interval` 10 s, `timeout` 1 s, `max_retry` 3.
    fn default() -> Self {
        RenewalConfig {
            expiration: Self::DEFAULT_EXPIRATION,
            interval: Self::DEFAULT_EXPIRATION / 3,
            timeout: Client::DEFAULT_TIMEOUT,
            max_retry: Self::DEFAULT_MAX_RETRY,
        }
    }
}

impl RenewalConfig {
    /// Default `expiration`: 30 s.
    pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(30);
    /// Default `max_retry`: 3.
    pub const DEFAULT_MAX_RETRY: u32 = 3;

    /// Start renewing `lock` with these settings: [`Lock::auto_refresh`].
    ///
    /// # Errors
    ///
    /// As [`Lock::auto_refresh`]: [`Error::InvalidArgument`] for durations out of range
    /// or `interval >= expiration`.
    pub fn auto_refresh(&self, lock: &Lock) -> Result<AutoRefresh> {
        lock.auto_refresh(self.interval, self.expiration, self.timeout, self.max_retry)
    }

    /// Start renewing a blocking `lock` with these settings:
    /// [`blocking::Lock::auto_refresh`].
    ///
    /// # Errors
    ///
    /// As [`blocking::Lock::auto_refresh`].
    pub fn auto_refresh_blocking(&self, lock: &blocking::Lock) -> Result<blocking::AutoRefresh> {
        lock.auto_refresh(self.interval, self.expiration, self.timeout, self.max_retry)
    }
}

/// [`RenewalConfig`] as written, before the defaults and the check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewalFields {
    #[serde(default, with = "duration::option")]
    expiration: Option<Duration>,
    #[serde(default, with = "duration::option")]
    interval: Option<Duration>,
    #[serde(default, with = "duration::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    max_retry: Option<u32>,
}

impl TryFrom<RenewalFields> for RenewalConfig {
    type Error = String;

    fn try_from(fields: RenewalFields) -> Result<Self, String> {
        let expiration = fields
            .expiration
            .unwrap_or(RenewalConfig::DEFAULT_EXPIRATION);
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        // Each message is about what was written: a default the user never set is
        // named as such, or not at all.
        let interval = match fields.interval {
            Some(interval) => interval,
            None => {
                let third = Duration::from_millis((expiration.as_millis() / 3) as u64);
                if third < Duration::from_millis(1) {
                    return Err(format!(
                        "renewal: expiration ({}) is too short to renew: renewal runs every \
                         third of it unless `interval` is set, and that must be at least \
                         1ms; set an expiration of at least 3ms",
                        shown(expiration)
                    ));
                }
                third
            }
        };
        if interval >= expiration {
            let default = if fields.expiration.is_none() {
                ", the default"
            } else {
                ""
            };
            return Err(format!(
                "renewal: interval ({}) must be shorter than expiration ({}{default})",
                shown(interval),
                shown(expiration)
            ));
        }
        Ok(RenewalConfig {
            expiration,
            interval,
            timeout: fields.timeout.unwrap_or(Client::DEFAULT_TIMEOUT),
            max_retry: fields.max_retry.unwrap_or(RenewalConfig::DEFAULT_MAX_RETRY),
        })
    }
}

/// Where a configuration points.
enum Store<'a> {
    Url(&'a str),
    #[cfg(feature = "cluster")]
    Cluster(Vec<&'a str>),
    #[cfg(feature = "sentinel")]
    Sentinel(Vec<&'a str>, &'a str),
}

impl Config {
    /// A configuration with only a store URL: the builder's defaults for the rest.
    pub fn from_url(url: impl Into<String>) -> Config {
        Config {
            url: Some(url.into()),
            ..Config::default()
        }
    }

    /// A [`ClientBuilder`] with every setting of this configuration but the store, for
    /// opening a client your own way (say, [`ClientBuilder::from_connection`]). Checks
    /// the settings and reads `tls_root_certificate`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field: a duration out of range,
    /// `min_replicas.replicas` of 0, a key prefix with braces, an unreadable
    /// `tls_root_certificate` or one without the `tls` feature.
    pub fn builder(&self) -> Result<ClientBuilder> {
        let mut builder = ClientBuilder::new();
        if let Some(timeout) = self.default_timeout {
            builder = builder.default_timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(prefix) = &self.key_prefix {
            builder = builder.key_prefix(prefix.as_str());
        }
        if let Some(label) = &self.holder_label {
            builder = builder.holder_label(label.as_str());
        }
        if let Some(on) = self.notify {
            builder = builder.notify(on);
        }
        if let Some(MinReplicas { replicas, timeout }) = self.min_replicas {
            builder = builder.min_replicas(replicas, timeout);
        }
        if let Some(path) = &self.tls_root_certificate {
            builder = tls_root_certificate(builder, path)?;
        }
        builder.check()?;
        Ok(builder)
    }

    /// [`Config::builder`] for the [`blocking`] client.
    ///
    /// # Errors
    ///
    /// As [`Config::builder`].
    #[deprecated(note = "use `blocking::ClientBuilder::from(config.builder()?)`")]
    pub fn blocking_builder(&self) -> Result<blocking::ClientBuilder> {
        self.builder().map(blocking::ClientBuilder::from)
    }

    /// Check everything [`Config::open`] checks before any I/O: the store (exactly one,
    /// with the feature it needs) and the settings ([`Config::builder`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.store()?;
        self.builder().map(drop)
    }

    /// Open the client this configuration describes: [`ClientBuilder::open`],
    /// [`open_cluster`](ClientBuilder::open_cluster) or
    /// [`open_sentinel`](ClientBuilder::open_sentinel) with every setting applied.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`], before any I/O, for no store or more than one
    ///   (`url`, `cluster`, `sentinels`), `sentinels` without `master_name` or the
    ///   reverse, a store whose feature is off, or a setting [`Config::builder`] refuses;
    /// * what opening the store returns: [`Error::InvalidArgument`] for a bad URL,
    ///   [`Error::Redis`] or [`Error::Timeout`] when it cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written to the store.
    pub async fn open(&self) -> Result<Client> {
        let store = self.store()?;
        let builder = self.builder()?;
        match store {
            Store::Url(url) => builder.open(url).await,
            #[cfg(feature = "cluster")]
            Store::Cluster(urls) => builder.open_cluster(&urls).await,
            #[cfg(feature = "sentinel")]
            Store::Sentinel(sentinels, master) => builder.open_sentinel(&sentinels, master).await,
        }
    }

    /// Open the [`blocking`] client this configuration describes: [`Config::open`]
    /// without `.await`, on a runtime thread of its own.
    ///
    /// # Errors
    ///
    /// As [`Config::open`], and [`Error::Store`] when the runtime thread cannot be
    /// started.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime (see [`blocking`](crate::blocking#panics)).
    #[track_caller]
    pub fn open_blocking(&self) -> Result<blocking::Client> {
        let store = self.store()?;
        let builder = blocking::ClientBuilder::from(self.builder()?);
        match store {
            Store::Url(url) => builder.open(url),
            #[cfg(feature = "cluster")]
            Store::Cluster(urls) => builder.open_cluster(&urls),
            #[cfg(feature = "sentinel")]
            Store::Sentinel(sentinels, master) => builder.open_sentinel(&sentinels, master),
        }
    }

    /// The configured retry strategy, fresh for one `lock` call ([`RetryConfig::build`]);
    /// [`NoRetry`] when the configuration has none.
    pub fn retry(&self) -> Box<dyn RetryStrategy + Send + Sync> {
        match &self.retry {
            Some(retry) => retry.build(),
            None => Box::new(NoRetry),
        }
    }

    /// The configured renewal settings, or [`RenewalConfig::default`].
    pub fn renewal(&self) -> RenewalConfig {
        self.renewal.unwrap_or_default()
    }

    /// The configured `default_timeout`, or [`Client::DEFAULT_TIMEOUT`] (1 s): the bound to
    /// give each attempt of a `lock` call.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout.unwrap_or(Client::DEFAULT_TIMEOUT)
    }

    /// The one store this configuration names.
    fn store(&self) -> Result<Store<'_>> {
        let named: Vec<&str> = [
            ("url", self.url.is_some()),
            ("cluster", self.cluster.is_some()),
            ("sentinels", self.sentinels.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match named[..] {
            [] => {
                return Err(Error::invalid(
                    "config: no store (set `url`, `cluster` or `sentinels`)",
                ));
            }
            [_] => {}
            _ => {
                return Err(Error::invalid(format!(
                    "config: {} are set; name one store",
                    named
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        }
        if self.master_name.is_some() && self.sentinels.is_none() {
            return Err(Error::invalid(
                "master_name: only with `sentinels` (the master's name as they know it)",
            ));
        }
        if let Some(url) = &self.url {
            return Ok(Store::Url(url));
        }
        if let Some(nodes) = &self.cluster {
            if nodes.is_empty() {
                return Err(Error::invalid("cluster: name at least one node"));
            }
            #[cfg(feature = "cluster")]
            return Ok(Store::Cluster(nodes.iter().map(String::as_str).collect()));
            #[cfg(not(feature = "cluster"))]
            return Err(Error::invalid(
                "cluster: needs leasehold's `cluster` feature",
            ));
        }
        let sentinels = self.sentinels.as_deref().unwrap_or_default();
        if sentinels.is_empty() {
            return Err(Error::invalid("sentinels: name at least one sentinel"));
        }
        let Some(master) = self.master_name.as_deref() else {
            return Err(Error::invalid(
                "master_name: required with `sentinels` (the master's name as they know it)",
            ));
        };
        #[cfg(feature = "sentinel")]
        return Ok(Store::Sentinel(
            sentinels.iter().map(String::as_str).collect(),
            master,
        ));
        #[cfg(not(feature = "sentinel"))]
        {
            let _ = master;
            Err(Error::invalid(
                "sentinels: needs leasehold's `sentinel` feature",
            ))
        }
    }
}

#[cfg(feature = "tls")]
fn tls_root_certificate(builder: ClientBuilder, path: &std::path::Path) -> Result<ClientBuilder> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::invalid(format!(
            "tls_root_certificate: cannot read {}: {e}",
            path.display()
        ))
    })?;
    Ok(builder.tls_root_certificate(pem))
}

#[cfg(not(feature = "tls"))]
fn tls_root_certificate(_: ClientBuilder, _: &std::path::Path) -> Result<ClientBuilder> {
    Err(Error::invalid(
        "tls_root_certificate: needs leasehold's `tls` feature",
    ))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls = |urls: &Option<Vec<String>>| -> Option<Vec<String>> {
            urls.as_ref()
                .map(|urls| urls.iter().map(|u| Redacted(u).to_string()).collect())
        };
        f.debug_struct("Config")
            .field("url", &self.url.as_deref().map(Redacted))
            .field("cluster", &urls(&self.cluster))
            .field("sentinels", &urls(&self.sentinels))
            .field("master_name", &self.master_name)
            .field("key_prefix", &self.key_prefix)
            .field("holder_label", &self.holder_label)
            .field("default_timeout", &self.default_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("notify", &self.notify)
            .field("min_replicas", &self.min_replicas)
            .field("tls_root_certificate", &self.tls_root_certificate)
            .field("retry", &self.retry)
            .field("renewal", &self.renewal)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn invalid(config: &Config) -> String {
        match config.validate() {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn empty_is_the_builders_defaults_without_a_store() {
        let config = toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.default_timeout(), Client::DEFAULT_TIMEOUT);
        assert_eq!(config.renewal(), RenewalConfig::default());
        assert_eq!(config.retry().next_delay(), None);
        assert_eq!(
            invalid(&config),
            "config: no store (set `url`, `cluster` or `sentinels`)"
        );
    }

    #[test]
    fn one_store_exactly() {
        let two = toml("url = \"memory://\"\ncluster = [\"redis://h:1\"]").unwrap();
        assert_eq!(
            invalid(&two),
            "config: `url` and `cluster` are set; name one store"
        );
        let three =
            toml("url = \"memory://\"\ncluster = [\"redis://h:1\"]\nsentinels = [\"redis://h:2\"]")
                .unwrap();
        assert_eq!(
            invalid(&three),
            "config: `url` and `cluster` and `sentinels` are set; name one store"
        );
        let stray = toml("url = \"memory://\"\nmaster_name = \"m\"").unwrap();
        assert!(invalid(&stray).starts_with("master_name: only with `sentinels`"));
        let no_name = toml("sentinels = [\"redis://h:2\"]").unwrap();
        assert!(invalid(&no_name).starts_with("master_name: required with `sentinels`"));
        assert_eq!(
            invalid(&toml("cluster = []").unwrap()),
            "cluster: name at least one node"
        );
        #[cfg(not(feature = "cluster"))]
        assert_eq!(
            invalid(&toml("cluster = [\"redis://h:1\"]").unwrap()),
            "cluster: needs leasehold's `cluster` feature"
        );
    }

    #[test]
    fn settings_are_checked_with_the_fields_name() {
        let prefix = toml("url = \"memory://\"\nkey_prefix = \"{app}:\"").unwrap();
        assert!(invalid(&prefix).starts_with("key_prefix:"));
        let replicas =
            toml("url = \"memory://\"\nmin_replicas = { replicas = 0, timeout = 100 }").unwrap();
        assert!(invalid(&replicas).starts_with("min_replicas:"));
        let mut code = Config::from_url("memory://");
        code.default_timeout = Some(Duration::ZERO);
        assert!(invalid(&code).starts_with("default_timeout:"));
        let cert =
            toml("url = \"memory://\"\ntls_root_certificate = \"/nonexistent/ca.pem\"").unwrap();
        assert!(invalid(&cert).starts_with("tls_root_certificate:"));
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let err = toml("url = \"memory://\"\ndefualt_timeout = \"1s\"").unwrap_err();
        assert!(err.contains("unknown field `defualt_timeout`"), "{err}");
        let err = toml("[renewal]\nexpiration = \"30s\"\nintervall = \"1s\"").unwrap_err();
        assert!(err.contains("unknown field `intervall`"), "{err}");
        let err = toml("min_replicas = { replicas = 1, timeout = 1, wait = 2 }").unwrap_err();
        assert!(err.contains("unknown field `wait`"), "{err}");
        let err = toml("[retry]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_retries = 1\nfactor = 2")
            .unwrap_err();
        assert!(err.contains("unknown field `factor`"), "{err}");
        let err = toml("[retry]\nkind = \"none\"\ninterval = \"1s\"").unwrap_err();
        assert!(err.contains("unknown field `interval`"), "{err}");
        let err = toml("[retry]\nkind = \"linear\"").unwrap_err();
        assert!(err.contains("unknown variant `linear`"), "{err}");
        let err = toml("[retry]\ninterval = \"1s\"").unwrap_err();
        assert!(err.contains("missing field `kind`"), "{err}");
    }

    #[test]
    fn retry_strategies_are_built_afresh() {
        let config = toml(
            "[retry]\nkind = \"exponential\"\nmin_delay = \"100ms\"\nmax_delay = \"300ms\"\n\
             jitter = false\nmax_retries = 4",
        )
        .unwrap();
        let delays = |mut s: Box<dyn RetryStrategy + Send + Sync>| {
            std::iter::from_fn(move || s.next_delay()).collect::<Vec<_>>()
        };
        let ms = Duration::from_millis;
        assert_eq!(delays(config.retry()), [ms(100), ms(200), ms(300), ms(300)]);
        assert_eq!(delays(config.retry()), [ms(100), ms(200), ms(300), ms(300)]);
        let total = toml(
            "[retry]\nkind = \"exponential\"\nmin_delay = 100\nmax_delay = 1000\nfactor = 3\n\
             jitter = false\nmax_total_delay = \"1s\"",
        )
        .unwrap();
        assert_eq!(delays(total.retry()), [ms(100), ms(300)]);
        let jittered =
            toml("[retry]\nkind = \"jittered\"\ninterval = \"100ms\"\nmax_retries = 3").unwrap();
        let drawn = delays(jittered.retry());
        assert_eq!(drawn.len(), 3);
        assert!(
            drawn.iter().all(|d| (ms(50)..=ms(150)).contains(d)),
            "{drawn:?}"
        );
        let fixed =
            toml("retry = { kind = \"fixed\", interval = \"1s\", max_retries = 2 }").unwrap();
        assert_eq!(delays(fixed.retry()), [ms(1000), ms(1000)]);
        let none = toml("retry = { kind = \"none\" }").unwrap();
        assert_eq!(delays(none.retry()), []);
    }

    #[test]
    fn renewal_defaults_and_check() {
        let config = toml("[renewal]\nexpiration = \"9s\"").unwrap();
        assert_eq!(
            config.renewal(),
            RenewalConfig {
                expiration: Duration::from_secs(9),
                interval: Duration::from_secs(3),
                timeout: Client::DEFAULT_TIMEOUT,
                max_retry: 3,
            }
        );
        let err = toml("[renewal]\nexpiration = \"9s\"\ninterval = \"9s\"").unwrap_err();
        assert!(
            err.contains("renewal: interval (9s) must be shorter than expiration (9s)"),
            "{err}"
        );
        assert_eq!(RenewalConfig::default().interval, Duration::from_secs(10));
    }

    /// Only `expiration = "2ms"` set: the error used to speak of an `interval (0s)`
    /// the user never wrote.
    #[test]
    fn renewal_errors_are_about_what_was_written() {
        let err = toml("[renewal]\nexpiration = \"2ms\"").unwrap_err();
        assert!(
            err.contains(
                "renewal: expiration (2ms) is too short to renew: renewal runs every third \
                 of it unless `interval` is set"
            ),
            "{err}"
        );
        assert!(!err.contains("interval (0s)"), "{err}");
        // The smallest expiration that works alone, and a short one with an interval.
        let config = toml("[renewal]\nexpiration = \"3ms\"").unwrap();
        assert_eq!(config.renewal().interval, Duration::from_millis(1));
        let config = toml("[renewal]\nexpiration = \"2ms\"\ninterval = \"1ms\"").unwrap();
        assert_eq!(config.renewal().interval, Duration::from_millis(1));
        // An interval against the default expiration says it is the default.
        let err = toml("[renewal]\ninterval = \"1m\"").unwrap_err();
        assert!(
            err.contains(
                "renewal: interval (1m) must be shorter than expiration (30s, the default)"
            ),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_a_password() {
        let config = Config {
            url: Some("redis://app:hunter2@10.0.0.5:6379/0".into()),
            cluster: Some(vec!["redis://:hunter2@h:7000".into()]),
            sentinels: Some(vec!["redis://:hunter2@h:26379".into()]),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://app:***@10.0.0.5:6379/0"), "{shown}");
        // Nor an error, whatever is wrong.
        assert!(!invalid(&config).contains("hunter2"));
    }

    #[test]
    fn round_trips_through_serialize() {
        let text = "url = \"redis://127.0.0.1:6379/\"\nkey_prefix = \"app:\"\n\
                    default_timeout = \"1m 30s\"\nconnect_timeout = 250\n\
                    [retry]\nkind = \"jittered\"\ninterval = \"50ms\"\nmax_retries = 5\n\
                    [renewal]\nexpiration = \"3s\"";
        let config = toml(text).unwrap();
        let written = toml::to_string(&config).unwrap();
        assert!(written.contains("connect_timeout = \"250ms\""), "{written}");
        assert_eq!(toml(&written).unwrap(), config);
    }
}
