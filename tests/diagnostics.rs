//! `open()` says what is wrong, naming the server (never the password): a missing or
//! wrong password, a port that is not Redis, a refused connection, a server that never
//! answers. Each is found at `open()`, not by the first lock.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use leasehold::{Client, Error};
use support::{RedisServer, ServerOptions};

fn protected() -> RedisServer {
    RedisServer::start_with(ServerOptions {
        password: Some("s3cret-pw".into()),
        ..ServerOptions::default()
    })
}

#[tokio::test]
async fn a_missing_password_fails_at_open_and_says_so() {
    let server = protected();
    let target = format!("127.0.0.1:{}", server.port());
    let err = Client::open(&format!("redis://{target}/"))
        .await
        .unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("requires a password"), "{shown}");
    assert!(shown.contains(&target), "{shown}");
}

#[tokio::test]
async fn a_wrong_password_fails_at_open_without_echoing_it() {
    let server = protected();
    let url = format!("redis://:not-the-pw@127.0.0.1:{}/", server.port());
    let err = Client::open(&url).await.unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("refused the username or password"),
        "{shown}"
    );
    for text in [shown, format!("{err:?}")] {
        assert!(!text.contains("not-the-pw"), "{text}");
    }
    // The right one opens (the control).
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/", server.port());
    Client::open(&url).await.unwrap();
}

/// A server that answers every connection with `reply` (or never, if `None`).
fn fake_server(reply: Option<&'static [u8]>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0; 256];
            let _ = conn.read(&mut buf);
            if let Some(reply) = reply {
                let _ = conn.write_all(reply);
            }
            held.push(conn); // silent servers keep the connection open
        }
    });
    port
}

#[tokio::test]
async fn a_port_that_is_not_redis_is_named_as_such() {
    let port = fake_server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
    let err = Client::open(&format!("redis://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(err.is_redis(), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("not a Redis server"), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
}

#[tokio::test]
async fn a_refused_connection_names_the_server_and_keeps_its_kind() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = Client::open(&format!("redis://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    let Error::Redis(redis) = &err else {
        panic!("{err:?}")
    };
    assert!(
        redis.is_connection_refusal() && err.is_transient(),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_like_any_other() {
    let port = fake_server(None);
    let started = Instant::now();
    let err = Client::builder()
        .connect_timeout(Duration::from_millis(200))
        .open(&format!("redis://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("cannot connect to 127.0.0.1:{port}")) && shown.contains("200ms"),
        "names the server and the timeout: {shown}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A cluster none of whose seeds answers: the error names every seed and what it said.
#[cfg(feature = "cluster")]
#[tokio::test]
async fn a_cluster_without_a_reachable_seed_names_each_seed() {
    let (a, b) = (support::free_port(), support::free_port());
    let silent = fake_server(None);
    let urls = [
        format!("redis://127.0.0.1:{a}"),
        format!("redis://127.0.0.1:{b}"),
        format!("redis://127.0.0.1:{silent}"),
    ];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let started = Instant::now();
    let err = Client::builder()
        .connect_timeout(Duration::from_millis(300))
        .open_cluster(&urls)
        .await
        .unwrap_err();
    let shown = err.to_string();
    for port in [a, b, silent] {
        assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    }
    assert!(shown.contains("refused"), "{shown}");
    assert!(shown.contains("connect timeout"), "{shown}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
}
