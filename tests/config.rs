//! `leasehold::Config` read from TOML and YAML files (feature `serde`), and clients opened
//! from them on a real `redis-server` (and a Redis Cluster).
#![cfg(feature = "serde")]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold::config::{MinReplicas, RenewalConfig, RetryConfig};
use leasehold::{Config, Error, RetryStrategy};
use support::{RedisServer, ServerOptions};

fn file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn toml_file(name: &str) -> Result<Config, String> {
    toml::from_str(&read(name)).map_err(|e| e.to_string())
}

fn yaml_file(name: &str) -> Result<Config, String> {
    serde_saphyr::from_str(&read(name)).map_err(|e| e.to_string())
}

fn invalid(result: leasehold::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidArgument(msg)) => msg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn every_field_from_toml_and_yaml_alike() {
    let config = toml_file("full.toml").unwrap();
    assert_eq!(
        config.url.as_deref(),
        Some("redis://app:hunter2@10.0.0.5:6379/0")
    );
    assert_eq!(config.key_prefix.as_deref(), Some("billing:"));
    assert_eq!(config.default_timeout, Some(ms(500)));
    assert_eq!(config.connect_timeout, Some(ms(2500)));
    assert_eq!(config.notify, Some(false));
    assert_eq!(
        config.min_replicas,
        Some(MinReplicas {
            replicas: 1,
            timeout: ms(100)
        })
    );
    assert_eq!(
        config.tls_root_certificate.as_deref(),
        Some(Path::new("/etc/leasehold/ca.pem"))
    );
    assert_eq!(
        config.retry,
        Some(RetryConfig::Exponential {
            min_delay: ms(50),
            max_delay: ms(2000),
            factor: 1.5,
            jitter: false,
            max_retries: 8,
            max_total_delay: Some(ms(90_000)),
        })
    );
    assert_eq!(
        config.renewal(),
        RenewalConfig {
            expiration: ms(30_000),
            interval: ms(10_000),
            timeout: ms(1000),
            max_retry: 5,
        }
    );
    let mut retry = config.retry();
    assert_eq!(retry.next_delay(), Some(ms(50)));
    assert_eq!(retry.next_delay(), Some(ms(75)));

    assert_eq!(yaml_file("full.yaml").unwrap(), config);

    // The password is in the file, and in no `Debug`.
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://app:***@10.0.0.5:6379/0"), "{shown}");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let err = toml_file("unknown_field.toml").unwrap_err();
    assert!(err.contains("unknown field `defualt_timeout`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = yaml_file("unknown_field.yaml").unwrap_err();
    assert!(err.contains("unknown field `intervall`"), "{err}");
}

#[test]
fn bad_durations_are_refused_where_they_stand() {
    let err = toml_file("bad_duration.toml").unwrap_err();
    assert!(err.contains("invalid duration \"fast\""), "{err}");
    assert!(
        err.contains("default_timeout"),
        "the field is quoted: {err}"
    );
    assert!(
        err.contains("\"250ms\""),
        "the expected form is shown: {err}"
    );

    let err = yaml_file("bad_duration.yaml").unwrap_err();
    assert!(err.contains("expected a duration"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn zero_durations_are_refused() {
    let err = toml_file("zero_duration.toml").unwrap_err();
    assert!(err.contains("must be at least 1ms"), "{err}");
    assert!(err.contains("connect_timeout"), "{err}");
    let err = yaml_file("zero_duration.yaml").unwrap_err();
    assert!(err.contains("must be at least 1ms"), "{err}");
}

#[tokio::test]
async fn two_stores_are_refused_before_any_io() {
    let config = toml_file("two_stores.toml").unwrap();
    assert_eq!(
        invalid(config.open().await),
        "config: `url` and `sentinels` are set; name one store"
    );
    let config = yaml_file("two_stores.yaml").unwrap();
    assert_eq!(
        invalid(config.open().await),
        "config: `url` and `cluster` are set; name one store"
    );
}

/// A file naming `url`, with the server's port filled in.
fn config_for(url: &str, rest: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leasehold.toml");
    std::fs::write(&path, format!("url = \"{url}\"\n{rest}")).unwrap();
    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_client_opened_from_a_file_locks_on_redis_with_its_settings() {
    let server = RedisServer::start();
    let config = config_for(
        &server.url(),
        r#"key_prefix = "billing:"
default_timeout = "300ms"
connect_timeout = "2s"
retry = { kind = "fixed", interval = "20ms", max_retries = 5 }
renewal = { expiration = "3s", interval = "1s" }
"#,
    );
    let client = config.open().await.unwrap();
    assert_eq!(client.default_timeout(), ms(300));
    let renewal = config.renewal();
    let lock = client
        .lock(
            "invoices",
            "holder-1",
            renewal.expiration,
            config.default_timeout(),
            config.retry(),
        )
        .await
        .unwrap();
    // Under the configured prefix in Redis; named without it by the client.
    assert_eq!(server.get("billing:invoices").as_deref(), Some("holder-1"));
    assert_eq!(lock.key(), "invoices");
    let mut auto = renewal.auto_refresh(&lock).unwrap();

    // A second holder retries under the configured strategy: 5 × 20 ms, then gives up.
    let started = std::time::Instant::now();
    let err = client
        .lock("invoices", "holder-2", ms(3000), ms(300), config.retry())
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let waited = started.elapsed();
    assert!(waited >= ms(100) && waited < ms(2000), "{waited:?}");

    assert!(auto.try_error().is_none());
    lock.unlock().await.unwrap();
    assert_eq!(auto.error().await.map(|e| e.to_string()), None);
    assert_eq!(server.get("billing:invoices"), None);
}

#[test]
fn a_blocking_client_from_a_file_with_a_password_that_no_output_shows() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("hunter2".into()),
        ..ServerOptions::default()
    });
    let config = config_for(&server.url(), "key_prefix = \"ops:\"\n");
    assert!(config.url.as_deref().unwrap().contains("hunter2"));
    assert!(!format!("{config:?}").contains("hunter2"));

    let client = config.open_blocking().unwrap();
    assert!(!format!("{client:?}").contains("hunter2"));
    let lock = client.try_lock("report", "me", ms(5000)).unwrap();
    let mut renewal = config.renewal().auto_refresh_blocking(&lock).unwrap();
    assert_eq!(server.get("ops:report").as_deref(), Some("me"));
    assert!(renewal.try_error().is_none());
    lock.unlock().unwrap();

    // A wrong password: refused, and the error does not quote it.
    let wrong = server.url().replace("hunter2", "hunter3");
    let err = config_for(&wrong, "").open_blocking().unwrap_err();
    assert!(err.is_redis(), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("hunter"), "{shown}");
    }
}

#[tokio::test]
async fn a_missing_store_or_setting_names_the_field() {
    assert_eq!(
        invalid(Config::default().open().await),
        "config: no store (set `url`, `cluster` or `sentinels`)"
    );
    let config = config_for("redis://127.0.0.1:1/", "key_prefix = \"a{b}:\"\n");
    assert!(invalid(config.open().await).starts_with("key_prefix:"));
    let config = config_for(
        "rediss://127.0.0.1:1/",
        "tls_root_certificate = \"/nonexistent/ca.pem\"\n",
    );
    let msg = invalid(config.open().await);
    assert!(
        msg.starts_with("tls_root_certificate: cannot read /nonexistent/ca.pem"),
        "{msg}"
    );
    let config = config_for("nats://127.0.0.1:1/", "");
    assert!(invalid(config.open().await).starts_with("url:"));
}

#[test]
fn memory_store_through_the_blocking_builder() {
    let config: Config =
        serde_saphyr::from_str("url: memory://config-test\nnotify: false\n").unwrap();
    let client = leasehold::blocking::ClientBuilder::from(config.builder().unwrap()).memory();
    let lock = client.try_lock("k", "v", ms(1000)).unwrap();
    assert!(lock.fencing_token() > 0);
    lock.unlock().unwrap();
}

#[cfg(feature = "cluster")]
#[tokio::test]
async fn a_cluster_from_a_file() {
    let cluster = support::RedisCluster::start(3, 0);
    let nodes: Vec<String> = cluster
        .urls()
        .iter()
        .take(2)
        .map(|u| format!("\"{u}\""))
        .collect();
    let text = format!(
        "cluster = [{}]\nkey_prefix = \"c:\"\ndefault_timeout = \"1s\"\n",
        nodes.join(", ")
    );
    let config: Config = toml::from_str(&text).unwrap();
    let client = config.open().await.unwrap();
    let lock = client.try_lock("job", "v", ms(5000)).await.unwrap();
    let info = client.inspect("job").await.unwrap().expect("held");
    assert_eq!(info.fencing_token(), lock.fencing_token());
    assert_eq!(
        cluster.cmd(cluster.master_of_key("c:job").port, &["GET", "c:job"]),
        redis::Value::BulkString(b"v".to_vec())
    );
    lock.unlock().await.unwrap();
}
