mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Value;
use support::{FaultProxy, RedisServer, ServerOptions, free_port, wait_until};

fn get(server: &RedisServer, key: &str) -> Value {
    server.cmd_sync(&["GET", key])
}

#[test]
fn start_and_ping() {
    let server = RedisServer::start();
    assert!(server.is_running());
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert_eq!(
        server.cmd_sync(&["PING"]),
        Value::SimpleString("PONG".into())
    );
    assert!(free_port() > 0);
    assert!(wait_until(Duration::from_millis(50), || true));
    assert!(!wait_until(Duration::from_millis(30), || false));
}

#[test]
fn server_errors_are_reported() {
    let server = RedisServer::start();
    let err = server.try_cmd_sync(&["NOSUCHCOMMAND"]).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("unknown"), "{err}");
}

#[test]
fn password_option() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("s3cr:et@".into()),
        ..Default::default()
    });
    assert_eq!(server.cmd_sync(&["SET", "k", "v"]), Value::Okay);
    let anon = format!("redis://127.0.0.1:{}/", server.port());
    let mut con = redis::Client::open(anon).unwrap().get_connection().unwrap();
    assert!(redis::cmd("GET").arg("k").query::<Value>(&mut con).is_err());
}

#[test]
fn restart_loses_data_without_persistence() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.cmd_sync(&["SET", "k", "v"]), Value::Okay);
    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert_eq!(get(&server, "k"), Value::Nil);
}

#[test]
fn restart_with_appendonly_always_keeps_data() {
    let mut server = RedisServer::start_with(ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    assert_eq!(server.cmd_sync(&["SET", "k", "v"]), Value::Okay);
    server.restart();
    assert_eq!(get(&server, "k"), Value::BulkString(b"v".to_vec()));
}

#[test]
fn stop_and_start_again() {
    let mut server = RedisServer::start();
    server.stop();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    assert!(server.try_cmd_sync(&["PING"]).is_err());
    server.start_again();
    assert!(server.is_running());
    assert_eq!(
        server.cmd_sync(&["PING"]),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn client_pause_blocks_commands() {
    let server = RedisServer::start();
    server.cmd_sync(&["SET", "k", "v"]);
    server.client_pause(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(get(&server, "k"), Value::BulkString(b"v".to_vec()));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn client_kill_breaks_existing_async_connection() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    server.client_kill_all_normal();
    let res = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut con),
    )
    .await
    .expect("command must fail, not hang");
    assert!(res.is_err(), "{res:?}");
    // The server itself is fine.
    assert_eq!(
        server.cmd_sync(&["PING"]),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn proxy_forwards_set_get() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));
    let mut con = redis::Client::open(proxy.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg("k")
        .arg("through-proxy")
        .query::<()>(&mut con)
        .unwrap();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("through-proxy"));
    assert_eq!(
        get(&server, "k"),
        Value::BulkString(b"through-proxy".to_vec())
    );
    assert_eq!(proxy.connection_count(), 1);
    drop(con);
    assert!(wait_until(Duration::from_secs(2), || proxy
        .connection_count()
        == 0));
}

#[tokio::test]
async fn proxy_blackhole() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();

    proxy.blackhole(true);
    let res = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut con),
    )
    .await;
    assert!(res.is_err(), "expected timeout, got {res:?}");
    assert_eq!(
        proxy.connection_count(),
        1,
        "blackhole keeps connections open"
    );

    // A command sent during the partition is held, not dropped: it lands once the
    // link is back, and the old connection stays in sync.
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stalled = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("SET")
            .arg("held")
            .arg("1")
            .query_async::<()>(&mut con),
    )
    .await;
    assert!(stalled.is_err(), "nothing gets through while black-holed");
    let seen: Option<String> = redis::cmd("GET")
        .arg("held")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(seen, None, "held, not delivered");

    proxy.blackhole(false);
    assert!(wait_until(Duration::from_secs(2), || server
        .cmd_sync(&["GET", "held"])
        != redis::Value::Nil));
    let v: Option<String> = redis::cmd("GET")
        .arg("held")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("1"),
        "the old connection is still in sync"
    );
}

#[tokio::test]
async fn proxy_reset_all() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(proxy.connection_count(), 1);

    proxy.reset_all();
    assert_eq!(proxy.connection_count(), 0);
    let res = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut con),
    )
    .await
    .expect("command must fail, not hang");
    assert!(res.is_err(), "{res:?}");

    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut fresh)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_loses_the_reply_to_the_matching_request_only() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut other = client.get_multiplexed_async_connection().await.unwrap();
    proxy.lose_reply_to("lost-key");
    // Negative control: requests without the pattern are answered.
    let _: () = redis::cmd("SET")
        .arg("kept-key")
        .arg("1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(proxy.replies_lost(), 0);
    // The matching request runs; its answer never comes.
    let mut lost = con.clone();
    let pending = tokio::spawn(async move {
        redis::cmd("SET")
            .arg("lost-key")
            .arg("ran")
            .query_async::<()>(&mut lost)
            .await
    });
    assert!(wait_until(Duration::from_secs(5), || proxy.replies_lost() > 0));
    assert_eq!(
        get(&server, "lost-key"),
        Value::BulkString(b"ran".to_vec()),
        "the request ran"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "its answer was swallowed");
    // Other connections are not affected.
    let v: Option<String> = redis::cmd("GET")
        .arg("kept-key")
        .query_async(&mut other)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    tokio::task::block_in_place(|| proxy.cut_lost());
    let res = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the cut ends the call")
        .unwrap();
    assert!(res.is_err(), "{res:?}");
    // One request: the next one matching is answered.
    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("lost-key")
        .arg("again")
        .query_async(&mut fresh)
        .await
        .unwrap();
    assert_eq!(proxy.replies_lost(), 1);
}

/// `mark` + `cut_marked`: a partition of the connections that named themselves only
/// (how the sentinel harness cuts the sentinels and the replica off a master and leaves
/// its clients be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cuts_only_the_marked_connections() {
    use std::io::{Read, Write};
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    proxy.mark("sentinel-");
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut named = client.get_multiplexed_async_connection().await.unwrap();
    let mut plain = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("sentinel-selftest-cmd")
        .query_async(&mut named)
        .await
        .unwrap();
    assert_eq!(
        proxy.marked_count(),
        1,
        "only the connection that named itself"
    );
    // A pattern split across two reads marks its connection too.
    let mut raw = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    raw.write_all(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$10\r\nsenti")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    raw.write_all(b"nel-x\r\n").unwrap();
    let mut ok = [0u8; 5];
    raw.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    assert_eq!(proxy.marked_count(), 2);

    proxy.cut_marked(true);
    let held = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("SET")
            .arg("held")
            .arg("1")
            .query_async::<()>(&mut named),
    )
    .await;
    assert!(held.is_err(), "a marked connection is cut");
    assert_eq!(get(&server, "held"), Value::Nil, "held, not delivered");
    // Negative control: the other connection goes on.
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("1")
        .query_async(&mut plain)
        .await
        .unwrap();
    // A connection that names itself during the cut is cut from that request on.
    let mut late = client.get_multiplexed_async_connection().await.unwrap();
    let named_late = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("sentinel-late")
            .query_async::<()>(&mut late),
    )
    .await;
    assert!(named_late.is_err(), "cut from its first marked request");
    assert_eq!(proxy.marked_count(), 3);

    proxy.cut_marked(false);
    assert!(wait_until(Duration::from_secs(2), || get(&server, "held")
        != Value::Nil));
    let v: Option<String> = redis::cmd("GET")
        .arg("held")
        .query_async(&mut named)
        .await
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("1"),
        "the cut connection is still in sync"
    );
}

#[test]
fn proxy_delay() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut con = redis::Client::open(proxy.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("PING").query(&mut con).unwrap();

    proxy.set_delay(Duration::from_millis(200));
    let t0 = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    let took = t0.elapsed();
    assert_eq!(pong, "PONG");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "{took:?}"
    );

    proxy.set_delay(Duration::ZERO);
    let t0 = Instant::now();
    let _: String = redis::cmd("PING").query(&mut con).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(150));
}

/// With paused time the caller's runtime auto-advances while idle, so the
/// redis client's own timeouts must be disabled; the proxy (own runtime)
/// really waits its 20 ms delay.
#[tokio::test(start_paused = true)]
async fn proxy_works_with_paused_caller_time() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    proxy.set_delay(Duration::from_millis(20));
    let client = redis::Client::open(proxy.url()).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let t0 = Instant::now();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        t0.elapsed() >= Duration::from_millis(40),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn proxy_drop_closes_connections() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut con = redis::Client::open(proxy.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("PING").query(&mut con).unwrap();
    let t0 = Instant::now();
    drop(proxy);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
}
