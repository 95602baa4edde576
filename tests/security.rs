//! Security: TLS (`rediss://`, certificates generated in the test), ACL users confined
//! to a key prefix, and secrets kept out of `Debug`/`Display`/errors.

mod support;

use std::time::Duration;

use leasehold::{Client, Error};
use support::{RedisServer, ServerOptions};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_locks_inside_its_prefix_and_gets_a_clear_error_outside_it() {
    let server = RedisServer::start();
    server.cmd_sync(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-secret",
        "~app:*",
        "+@all",
    ]);
    let url = format!("redis://app:app-secret@127.0.0.1:{}/", server.port());
    let client = Client::open(&url).await.unwrap();
    // Inside the prefix: the lock and its state (`app:job:state{N}`) are allowed.
    let lock = client.try_lock("app:job", "v", SEC).await.unwrap();
    lock.refresh().await.unwrap();
    assert!(lock.ttl().await.unwrap().is_some());
    lock.unlock().await.unwrap();
    let hash_tagged = client
        .try_lock("app:{tenant-7}:job", "v", SEC)
        .await
        .unwrap();
    hash_tagged.unlock().await.unwrap();

    // Outside it: a permission error, not contention, and not retried.
    let err = client
        .lock(
            "billing:job",
            "v",
            SEC,
            SEC,
            leasehold::FixedInterval::new(Duration::from_millis(10), 5),
        )
        .await
        .unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("NOPERM") || shown.to_lowercase().contains("permission"),
        "{shown}"
    );
    for text in [shown, format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains("app-secret"), "{text}");
    }
}

/// An ACL user confined to a deeper pattern (`~app:sub:*`) locks `app:sub:job` without a
/// key prefix and with no other permission: a lock's companions are named after its own
/// key (the earlier layout's shared counter was named after the first segment, `app:`,
/// and this got `NOPERM`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_confined_to_a_deeper_pattern_locks_inside_it() {
    let server = RedisServer::start();
    server.cmd_sync(&[
        "ACL",
        "SETUSER",
        "deep",
        "on",
        ">deep-secret",
        "~app:sub:*",
        "&app:sub:*",
        "+@all",
    ]);
    let url = format!("redis://deep:deep-secret@127.0.0.1:{}/", server.port());
    let client = Client::open(&url).await.unwrap();
    let lock = client.try_lock("app:sub:job", "v", SEC).await.unwrap();
    lock.refresh().await.unwrap();
    lock.fenced_set("app:sub:row", "x").await.unwrap();
    let first = lock.fencing_token();
    lock.unlock().await.unwrap();
    let again = client.try_lock("app:sub:job", "w", SEC).await.unwrap();
    assert!(again.fencing_token() > first);
    // Negative control: one level up is outside the pattern.
    let err = client.try_lock("app:job", "v", SEC).await.unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_urls_are_invalid_arguments_that_do_not_echo_the_url() {
    for url in [
        "",
        "http://127.0.0.1:6379",
        "redis://:pw-in-url@[::1",
        "redis://user:pw-in-url@host:notaport/",
    ] {
        match Client::open(url).await {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.starts_with("url"), "{msg}");
                assert!(!msg.contains("pw-in-url"), "{msg}");
            }
            other => panic!("{url:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_values_never_appear_in_debug_display_or_errors() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("server-password".into()),
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    let secret = "lock-value-7f3a";
    let lock = client.try_lock("k", secret, SEC).await.unwrap();
    let renewal = lock
        .auto_refresh(
            Duration::from_millis(100),
            SEC,
            Duration::from_millis(100),
            3,
        )
        .unwrap();
    let contention = client.try_lock("k", "other", SEC).await.unwrap_err();
    server.cmd_sync(&["SET", "k", "thief"]);
    let not_held = lock.refresh().await.unwrap_err();
    for text in [
        format!("{lock:?}"),
        format!("{renewal:?}"),
        format!("{client:?}"),
        format!("{contention} {contention:?}"),
        format!("{not_held} {not_held:?}"),
    ] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("server-password"), "{text}");
    }
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rediss_works_against_a_tls_server_with_a_private_ca() {
        let dir = std::env::temp_dir().join(format!("leasehold-tls-{}", leasehold::random_value()));
        std::fs::create_dir_all(&dir).unwrap();
        support::make_certs(&dir);
        let tls_port = support::free_port();
        let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let server = RedisServer::start_with(ServerOptions {
            extra_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path("server.crt"),
                "--tls-key-file".into(),
                path("server.key"),
                "--tls-ca-cert-file".into(),
                path("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            ..Default::default()
        });
        let url = format!("rediss://127.0.0.1:{tls_port}/");
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        let client = Client::builder()
            .tls_root_certificate(ca)
            .open(&url)
            .await
            .expect("TLS handshake with the private CA");
        let lock = client.try_lock("k", "v", SEC).await.unwrap();
        lock.unlock().await.unwrap();
        // The plain port saw the same data: the TLS client really talked to this server.
        assert_eq!(server.cmd_sync(&["EXISTS", "k"]), redis::Value::Int(0));
        assert_ne!(
            server.cmd_sync(&["KEYS", "k:state*"]),
            redis::Value::Array(vec![])
        );

        // Without trusting the CA, the handshake fails with a clear (non-contention) error.
        let started = std::time::Instant::now();
        let err = Client::builder()
            .connect_timeout(SEC)
            .open(&url)
            .await
            .unwrap_err();
        eprintln!(
            "untrusted handshake failed in {:?}: {err}",
            started.elapsed()
        );
        assert!(err.is_redis(), "{err:?}");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// An ACL user confined to `~billing:*` locks with the client's key prefix `billing:`
/// (keys named without it), and every key the lock writes stays inside the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_prefix_keeps_every_key_inside_an_acl_users_pattern() {
    let server = RedisServer::start();
    server.cmd_sync(&[
        "ACL",
        "SETUSER",
        "billing",
        "on",
        ">billing-secret",
        "~billing:*",
        "&billing:*",
        "+@all",
    ]);
    let url = format!(
        "redis://billing:billing-secret@127.0.0.1:{}/",
        server.port()
    );
    let client = Client::builder()
        .key_prefix("billing:")
        .open(&url)
        .await
        .unwrap();
    for key in ["job", "order:{7}", "nested:job"] {
        let lock = client.try_lock(key, "v", SEC).await.unwrap();
        assert_eq!(lock.key(), key);
        lock.fenced_set(&format!("{key}:row"), "x").await.unwrap();
        lock.refresh().await.unwrap();
        let listed = client.list("").await.unwrap();
        assert!(listed.iter().any(|l| l.key() == key), "{listed:?}");
        lock.unlock().await.unwrap();
    }
    match server.cmd_sync(&["KEYS", "*"]) {
        redis::Value::Array(keys) => {
            for key in keys {
                let redis::Value::BulkString(key) = key else {
                    panic!()
                };
                let key = String::from_utf8(key).unwrap();
                assert!(key.starts_with("billing:"), "{key}");
            }
        }
        other => panic!("{other:?}"),
    }
    // A prefix that would change a key's hash tag is refused.
    let err = Client::builder()
        .key_prefix("{billing}:")
        .open(&url)
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
}
