//! Other applications' keys in the same store never break a listing: keys that are not
//! UTF-8, and keys an ACL user may not read, are left out of `Client::list` on a real
//! redis-server (and, with feature `etcd`, a key that is not UTF-8 on etcd).

mod support;

use std::time::Duration;

use leasehold::{Client, LockInfo};
use support::RedisServer;

const SEC: Duration = Duration::from_secs(1);

/// `SET key value` with raw bytes (what no `&str` API can write).
fn set_raw(server: &RedisServer, key: &[u8], value: &[u8]) {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut conn)
        .unwrap();
}

fn keys(listed: &[LockInfo]) -> Vec<&str> {
    listed.iter().map(LockInfo::key).collect()
}

/// One foreign key that is not UTF-8, anywhere in the database, used to fail every
/// `list` whose walk met it (a `SCAN` reply read as strings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_utf8_are_left_out_of_a_listing() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let a = client.try_lock("jobs:a", "v", 60 * SEC).await.unwrap();
    // Foreign keys: one under the listed prefix, one elsewhere, one that looks like a
    // lock key with a state key of this library's shape next to it.
    set_raw(&server, b"jobs:\xff\xfe", b"x");
    set_raw(&server, b"\xc3\x28", b"x");
    set_raw(&server, b"jobs:\x80", b"holder");
    set_raw(&server, b"jobs:\x80:state{1}", b"7 1-1 1700000000000 ");

    let listed = client.list("").await.unwrap();
    assert_eq!(keys(&listed), ["jobs:a"], "{listed:?}");
    assert_eq!(listed[0].fencing_token(), a.fencing_token());
    let listed = client.list("jobs:").await.unwrap();
    assert_eq!(keys(&listed), ["jobs:a"], "{listed:?}");
    // A key with control characters is UTF-8: listed, as it is.
    let odd = client
        .try_lock("jobs:\x1b[2J\nforged", "v", 60 * SEC)
        .await
        .unwrap();
    let listed = client.list("jobs:").await.unwrap();
    assert_eq!(keys(&listed), ["jobs:\x1b[2J\nforged", "jobs:a"]);
    odd.unlock().await.unwrap();
    // Under a key prefix too.
    let prefixed = Client::builder()
        .key_prefix("jobs:")
        .open(&server.url())
        .await
        .unwrap();
    assert_eq!(keys(&prefixed.list("").await.unwrap()), ["a"]);
}

/// An ACL user confined to `~app:*` without a key prefix: `SCAN` shows it every key,
/// and inspecting one outside its pattern is `NOPERM`. Those keys are left out; a
/// permission error that is not about a key still fails the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_an_acl_user_may_not_read_are_left_out_of_its_listing() {
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
    let admin = Client::open(&server.url()).await.unwrap();
    let _billing = admin.try_lock("billing:job", "v", 60 * SEC).await.unwrap();
    server.cmd_sync(&["SET", "other:plain", "x"]);
    let url = format!("redis://app:app-secret@127.0.0.1:{}/", server.port());
    let app = Client::open(&url).await.unwrap();
    let _job = app.try_lock("app:job", "v", 60 * SEC).await.unwrap();

    let listed = app.list("").await.unwrap();
    assert_eq!(keys(&listed), ["app:job"], "{listed:?}");
    // The administrator sees both.
    assert_eq!(
        keys(&admin.list("").await.unwrap()),
        ["app:job", "billing:job"]
    );

    // Negative control: a user that may not run scripts at all gets the error, not an
    // empty list.
    server.cmd_sync(&[
        "ACL",
        "SETUSER",
        "noscripts",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@scripting",
    ]);
    let url = format!("redis://noscripts:pw@127.0.0.1:{}/", server.port());
    let noscripts = Client::open(&url).await.unwrap();
    let err = noscripts.list("").await.unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    assert!(
        err.to_string().contains("run the 'evalsha' command"),
        "{err}"
    );
}

/// On etcd a key is bytes too: a lock line whose name is not UTF-8 (written by hand)
/// is left out.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keys_that_are_not_utf8_are_left_out_of_a_listing() {
    let server = support::EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let _a = client.try_lock("jobs:a", "v", 60 * SEC).await.unwrap();
    let mut raw = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    // The shape of a contender key (name, \0, 16 hex digits), under a name that is not
    // UTF-8; and a plain foreign key.
    raw.put(b"jobs:\xff\x000123456789abcdef".to_vec(), "x", None)
        .await
        .unwrap();
    raw.put(b"\xfe".to_vec(), "x", None).await.unwrap();
    assert_eq!(keys(&client.list("").await.unwrap()), ["jobs:a"]);
    assert_eq!(keys(&client.list("jobs:").await.unwrap()), ["jobs:a"]);
}
