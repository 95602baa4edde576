//! The `leasehold` binary end to end, against a spawned `redis-server` (and etcd, with the
//! `etcd` feature): what it prints, and its exit codes.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use leasehold::blocking::{Client, Lock};
use serde_json::Value;
use support::{RedisServer, ServerOptions};

const PREFIX: &str = "app:";
const EXPIRATION: Duration = Duration::from_secs(60);

/// The binary, with no `LEASEHOLD_URL` from the environment of the test run.
fn leasehold() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    cmd.env_remove("LEASEHOLD_URL").stdin(Stdio::null());
    cmd
}

/// Run with `args` on `server` (and the applications' key prefix).
fn run(server: &RedisServer, args: &[&str]) -> Output {
    leasehold()
        .args(["--url", &server.url(), "--key-prefix", PREFIX])
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Run with `input` on stdin.
fn run_with_input(server: &RedisServer, args: &[&str], input: &str) -> Output {
    let mut child = leasehold()
        .args(["--url", &server.url(), "--key-prefix", PREFIX])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

/// An application's client on `server`, with the key prefix.
fn app(server: &RedisServer) -> Client {
    Client::builder()
        .key_prefix(PREFIX)
        .open(&server.url())
        .unwrap()
}

fn hold(client: &Client, key: &str, value: &str) -> Lock {
    client.try_lock(key, value, EXPIRATION).unwrap()
}

#[test]
fn ls_shows_every_lock_with_its_ttl_token_and_a_short_holder_digest() {
    let server = RedisServer::start();
    let client = app(&server);
    let a = hold(&client, "jobs:a", "secret-a");
    let _b = hold(&client, "jobs:b", "secret-b");
    let _other = hold(&client, "other", "secret-c");

    let out = run(&server, &["ls"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["KEY", "TTL", "TOKEN", "HOLDER", "LABEL"]);
    let info = inspect(&server, "jobs:a");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "jobs:a");
    assert!(row[1].ends_with('s'), "a TTL under a minute: {row:?}");
    assert_eq!(row[2], a.fencing_token().to_string());
    assert_eq!(row[3], &info.holder()[..12]);
    // The label the holder's client stored: by default its host name and process id.
    assert_eq!(Some(row[4]), info.holder_label());
    assert!(
        row[4].ends_with(&format!(":{}", std::process::id())),
        "{row:?}"
    );
    assert!(lines[2].starts_with("jobs:b ") && lines[3].starts_with("other "));
    assert!(!text.contains("secret"), "never a lock's value: {text}");

    // Under a prefix; and without the key prefix, keys as the store has them.
    let out = run(&server, &["ls", "jobs:"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 3);
    let out = leasehold()
        .args(["ls", "--url", &server.url()])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("app:jobs:a "), "{}", stdout(&out));
}

#[test]
fn ls_without_locks_prints_nothing_and_succeeds() {
    let server = RedisServer::start();
    let out = run(&server, &["ls"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "no locks held (any key)\n");
    let out = run(&server, &["ls", "jobs:", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out), Value::Array(vec![]));
}

#[test]
fn show_prints_one_lock_and_exits_1_without_one() {
    let server = RedisServer::start();
    let client = app(&server);
    let lock = hold(&client, "nightly-report", "secret-value");
    let info = inspect(&server, "nightly-report");

    let out = run(&server, &["show", "nightly-report"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("key            nightly-report\n"), "{text}");
    assert!(
        text.contains(&format!("fencing token  {}\n", lock.fencing_token())),
        "{text}"
    );
    assert!(
        text.contains(&format!("holder         {}\n", info.holder())),
        "{text}"
    );
    assert!(text.contains(" ms)\n"), "{text}");
    assert!(
        text.contains(&format!(
            "label          {}\n",
            info.holder_label().unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("locked at      ") && text.contains(" UTC ("),
        "{text}"
    );
    assert!(!text.contains("secret"));

    let out = run(&server, &["show", "missing"]);
    assert_exit(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "no lock on \"missing\"\n");
}

#[test]
fn json_output_parses_for_every_command() {
    let server = RedisServer::start();
    let client = app(&server);
    let lock = hold(&client, "jobs:a", "secret-a");
    let info = inspect(&server, "jobs:a");
    let expected = |v: &Value| {
        assert_eq!(v["key"], "jobs:a");
        assert_eq!(v["fencing_token"], lock.fencing_token());
        assert_eq!(v["holder"], info.holder());
        assert_eq!(v["holder_label"].as_str(), info.holder_label());
        assert!(v["locked_at_ms"].as_u64().is_some(), "{v}");
        let ttl = v["ttl_ms"].as_u64().expect("ttl_ms");
        assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    };

    let out = run(&server, &["ls", "--json"]);
    assert_exit(&out, 0);
    let listed = json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    expected(&listed[0]);

    let out = run(&server, &["--json", "show", "jobs:a"]);
    assert_exit(&out, 0);
    expected(&json(&out));
    let out = run(&server, &["show", "missing", "--json"]);
    assert_exit(&out, 1);
    assert_eq!(json(&out), Value::Null);

    let out = run(
        &server,
        &["watch", "--json", "--count", "2", "--interval", "50ms"],
    );
    assert_exit(&out, 0);
    let frames: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2);
    for frame in &frames {
        assert!(frame["at_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(frame["prefix"], "");
        expected(&frame["locks"][0]);
    }

    let out = run(&server, &["release", "jobs:a", "--yes", "--json"]);
    assert_exit(&out, 0);
    let released = json(&out);
    assert_eq!(released["released"], true);
    expected(&released["lock"]);
    let out = run(&server, &["release", "jobs:a", "--yes", "--json"]);
    assert_exit(&out, 1);
    assert_eq!(json(&out)["released"], false);
    assert_eq!(json(&out)["lock"], Value::Null);
}

#[test]
fn release_with_yes_deletes_the_lock_and_its_holder_finds_out() {
    let server = RedisServer::start();
    let client = app(&server);
    let lock = hold(&client, "stuck", "dead-holder");
    let out = run(&server, &["release", "stuck", "--yes"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "released \"stuck\" (fencing token {}, holder ",
            lock.fencing_token()
        )),
        "{text}"
    );
    assert_eq!(server.get("app:stuck"), None);
    assert!(lock.refresh().unwrap_err().is_not_held());
    // A new holder gets a higher token.
    let next = hold(&client, "stuck", "next-holder");
    assert!(next.fencing_token() > lock.fencing_token());

    let out = run(&server, &["release", "never-held", "-y"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "no lock on \"never-held\"\n");
}

#[test]
fn release_asks_first_and_a_refusal_keeps_the_lock() {
    let server = RedisServer::start();
    let client = app(&server);
    let lock = hold(&client, "nightly-report", "holder");

    for refusal in ["n\n", "\n", "nope\n", ""] {
        let out = run_with_input(&server, &["release", "nightly-report"], refusal);
        assert_exit(&out, 3);
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "release \"nightly-report\" (fencing token {}, holder ",
                lock.fencing_token()
            )),
            "{err}"
        );
        assert!(err.contains("[y/N] "), "{err}");
        assert!(err.ends_with("not released\n"), "{err}");
        assert_eq!(stdout(&out), "");
        assert_eq!(server.get("app:nightly-report").as_deref(), Some("holder"));
    }
    lock.refresh().unwrap();

    let out = run_with_input(&server, &["release", "nightly-report"], "yes\n");
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("released \"nightly-report\""));
    assert_eq!(server.get("app:nightly-report"), None);
}

#[test]
fn a_confirmation_for_one_holder_does_not_release_the_next() {
    let server = RedisServer::start();
    let client = app(&server);
    let first = hold(&client, "job", "first");
    // Answer only once the lock has changed hands.
    let mut child = leasehold()
        .args([
            "--url",
            &server.url(),
            "--key-prefix",
            PREFIX,
            "release",
            "job",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut prompt = [0u8; 1];
    let mut stderr_pipe = child.stderr.take().unwrap();
    // The first byte of the prompt: the binary has inspected the lock.
    std::io::Read::read_exact(&mut stderr_pipe, &mut prompt).unwrap();
    first.unlock().unwrap();
    let second = hold(&client, "job", "second");
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{rest}");
    assert!(
        rest.contains("changed hands while you were deciding"),
        "{rest}"
    );
    assert_eq!(server.get("app:job").as_deref(), Some("second"));
    second.refresh().unwrap();
}

#[test]
fn watch_refreshes_count_times_at_the_interval() {
    let server = RedisServer::start();
    let client = app(&server);
    let _a = hold(&client, "jobs:a", "a");
    let _b = hold(&client, "other", "b");
    let started = Instant::now();
    let out = run(
        &server,
        &["watch", "jobs:", "--count", "2", "--interval", "300ms"],
    );
    let took = started.elapsed();
    assert_exit(&out, 0);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let text = stdout(&out);
    let frames: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(frames.len(), 2, "{text:?}");
    for frame in frames {
        let lines: Vec<&str> = frame.lines().collect();
        assert!(
            lines[0].starts_with(
                "leasehold watch: keys starting with \"jobs:\", 1 lock held, every 300ms"
            ),
            "{frame}"
        );
        assert!(lines[0].ends_with(" UTC"), "{frame}");
        assert!(lines[1].starts_with("KEY "), "{frame}");
        assert!(lines[2].starts_with("jobs:a "), "{frame}");
        assert_eq!(lines.len(), 3, "{frame}");
    }
    // Not a terminal: no escape sequences.
    assert!(!text.contains('\x1b'));
}

#[cfg(unix)]
#[test]
fn watch_ends_cleanly_on_ctrl_c() {
    let server = RedisServer::start();
    let mut child = leasehold()
        .args(["--url", &server.url(), "watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("leasehold watch: any key, 0 locks held"),
        "{first}"
    );
    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(0), "exited, not killed by the signal");
}

/// Ctrl-C (SIGINT) to `child`; how it exited (within 5 s, or the test fails).
#[cfg(unix)]
fn interrupt(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of a child's pipe, as they come, on a channel.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line starting with `start`, within 10 s.
#[track_caller]
fn next_line(lines: &std::sync::mpsc::Receiver<String>, start: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(start) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with {start:?}: {e}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn watch_reports_a_store_outage_and_carries_on() {
    let mut server = RedisServer::start();
    let client = app(&server);
    let _lock = hold(&client, "jobs:a", "a");
    let mut child = leasehold()
        .args(["--url", &server.url(), "--key-prefix", PREFIX, "watch"])
        .args(["--interval", "100ms", "--timeout", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    next_line(&out, "leasehold watch: any key, 1 lock held");

    server.stop();
    let reported = next_line(&err, "leasehold: store: ");
    assert!(!reported.is_empty());
    server.start_again();
    // The server lost its data (no persistence): an empty view, then the lock again.
    next_line(&out, "leasehold watch: any key, 0 locks held");
    let _again = hold(&app(&server), "jobs:a", "a");
    next_line(&out, "leasehold watch: any key, 1 lock held");

    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(0), "the last refresh succeeded");
}

#[test]
fn bad_urls_and_unreachable_stores_fail_with_exit_2_and_no_password() {
    let out = leasehold()
        .args(["--url", "nats://127.0.0.1:4222", "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).starts_with("leasehold: cannot open the store: invalid argument: url:"));

    let out = leasehold()
        .args(["--url", "redis://:hunter2@127.0.0.1:1/", "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).starts_with("leasehold: cannot open the store: "));
    assert!(!stderr(&out).contains("hunter2"));

    let out = leasehold()
        .args(["--url", "redis://:hun/ter2@127.0.0.1:notaport/", "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(!stderr(&out).contains("ter2"), "{}", stderr(&out));

    let server = RedisServer::start_with(ServerOptions {
        password: Some("hunter2".into()),
        ..ServerOptions::default()
    });
    let wrong = server.url().replace("hunter2", "hunter3");
    let out = leasehold().args(["--url", &wrong, "ls"]).output().unwrap();
    assert_exit(&out, 2);
    assert!(!stderr(&out).contains("hunter"), "{}", stderr(&out));
    // The right password works, and shows up nowhere either.
    let client = Client::open(&server.url()).unwrap();
    let _lock = hold(&client, "k", "v");
    let out = leasehold()
        .args(["--url", &server.url(), "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("\nk "));
    assert!(!stdout(&out).contains("hunter2") && !stderr(&out).contains("hunter2"));

    let out = leasehold().arg("ls").output().unwrap();
    assert_exit(&out, 2);
    assert_eq!(
        stderr(&out),
        "leasehold: no store: pass --url URL, set LEASEHOLD_URL, or --config FILE\n"
    );
    let out = leasehold().args(["frobnicate"]).output().unwrap();
    assert_exit(&out, 2);
}

#[test]
fn the_store_can_come_from_leasehold_url() {
    let server = RedisServer::start();
    let client = app(&server);
    let _lock = hold(&client, "from-env", "v");
    let out = leasehold()
        .env("LEASEHOLD_URL", server.url())
        .args(["ls", "--key-prefix", PREFIX])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("\nfrom-env "), "{}", stdout(&out));
    // --url wins over the environment.
    let out = leasehold()
        .env("LEASEHOLD_URL", "redis://127.0.0.1:1/")
        .args([
            "--url",
            &server.url(),
            "--key-prefix",
            PREFIX,
            "show",
            "from-env",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

#[test]
fn the_store_and_settings_can_come_from_a_config_file() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("hunter2".into()),
        ..ServerOptions::default()
    });
    let client = app(&server);
    let _lock = hold(&client, "configured", "v");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("leasehold.toml");
    std::fs::write(
        &toml,
        format!(
            "url = \"{}\"\nkey_prefix = \"{PREFIX}\"\ndefault_timeout = \"2s\"\n",
            server.url()
        ),
    )
    .unwrap();
    let json_file = dir.path().join("leasehold.json");
    std::fs::write(
        &json_file,
        format!(
            "{{\"url\": \"{}\", \"key_prefix\": \"{PREFIX}\"}}",
            server.url()
        ),
    )
    .unwrap();
    #[allow(unused_mut)]
    let mut files = vec![toml.clone(), json_file];
    #[cfg(feature = "yaml")]
    {
        let yaml = dir.path().join("leasehold.yaml");
        std::fs::write(
            &yaml,
            format!("url: {}\nkey_prefix: \"{PREFIX}\"\n", server.url()),
        )
        .unwrap();
        files.push(yaml);
    }
    for file in &files {
        let out = leasehold()
            .arg("--config")
            .arg(file)
            .args(["show", "configured"])
            .output()
            .unwrap();
        assert_exit(&out, 0);
        assert!(stdout(&out).starts_with("key            configured\n"));
    }
    // The file's store beats LEASEHOLD_URL; a --key-prefix beats the file's.
    let out = leasehold()
        .env("LEASEHOLD_URL", "redis://127.0.0.1:1/")
        .arg("--config")
        .arg(&toml)
        .args(["--key-prefix", "", "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("\napp:configured "),
        "{}",
        stdout(&out)
    );

    // A bad file: the field is named, the password in the quoted line is not shown.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("url = \"{}\"\ndefualt_timeout = \"2s\"\n", server.url()),
    )
    .unwrap();
    let out = leasehold()
        .arg("--config")
        .arg(&bad)
        .arg("ls")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.starts_with("leasehold: config file "), "{err}");
    assert!(err.contains("unknown field `defualt_timeout`"), "{err}");
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, format!("url = \"{}\" trailing\n", server.url())).unwrap();
    let out = leasehold()
        .arg("--config")
        .arg(&syntax)
        .arg("ls")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("redis://:***@127.0.0.1:"),
        "the line is quoted, masked: {err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let out = leasehold()
        .args(["--config", "/nonexistent/leasehold.toml", "ls"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).starts_with("leasehold: cannot read config file /nonexistent/leasehold.toml")
    );
}

/// `SET key value` with raw bytes: another application's key, which no `&str` API can
/// write.
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

/// A key an application chose to attack the operator's terminal: clear the screen, then
/// forge a row of `ls`.
const HOSTILE: &str = "evil\x1b[2J\x1b[H\nforged  12s  99  deadbeef\u{202e}";
/// How the binary shows it.
const HOSTILE_SHOWN: &str = "evil\\x1b[2J\\x1b[H\\nforged  12s  99  deadbeef\\u{202e}";

#[test]
fn keys_are_escaped_in_ls_show_and_the_release_prompt_but_not_in_json() {
    let server = RedisServer::start();
    let client = app(&server);
    let lock = hold(&client, HOSTILE, "v");
    let _plain = hold(&client, "plain", "v");

    let out = run(&server, &["ls"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one row per lock, none forged: {text:?}");
    assert!(
        lines[1].starts_with(&format!("{HOSTILE_SHOWN}  ")),
        "{text}"
    );
    assert!(lines[2].starts_with("plain "), "{text}");

    let out = run(&server, &["show", HOSTILE]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("key            {HOSTILE_SHOWN}\nttl ")),
        "{text:?}"
    );

    let out = run_with_input(&server, &["release", HOSTILE], "n\n");
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("release \"{HOSTILE_SHOWN}\" (fencing token ")),
        "{err:?}"
    );
    assert!(!err.contains('\x1b'), "{err:?}");
    let out = run(&server, &["release", HOSTILE, "--yes"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!("released \"{HOSTILE_SHOWN}\" (")),
        "{}",
        stdout(&out)
    );
    assert!(lock.refresh().unwrap_err().is_not_held());
    let out = run(&server, &["show", HOSTILE]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), format!("no lock on \"{HOSTILE_SHOWN}\"\n"));

    // JSON carries the key as it is (serde_json escapes it).
    let _again = hold(&client, HOSTILE, "v");
    let out = run(&server, &["ls", "--json"]);
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains('\x1b'));
    assert_eq!(json(&out)[0]["key"], HOSTILE);
    let out = run(&server, &["watch", "--count", "1"]);
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains('\x1b'), "{:?}", stdout(&out));
    assert!(stdout(&out).contains(HOSTILE_SHOWN));
}

/// Another application's key that is not UTF-8 used to end `ls` with exit code 2.
#[test]
fn ls_and_watch_survive_a_foreign_key_that_is_not_utf8() {
    let server = RedisServer::start();
    let client = app(&server);
    let _a = hold(&client, "jobs:a", "v");
    set_raw(&server, b"app:jobs:\xff", b"x");
    set_raw(&server, b"\xfe\x1b[2J", b"x");
    for prefix in [&["--key-prefix", PREFIX][..], &["--key-prefix", ""][..]] {
        let out = leasehold()
            .args(["--url", &server.url()])
            .args(prefix)
            .arg("ls")
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("jobs:a "), "{text}");
    }
    let out = run(&server, &["watch", "--count", "1", "--json"]);
    assert_exit(&out, 0);
    let out = run(&server, &["show", "jobs:a"]);
    assert_exit(&out, 0);
}

#[test]
fn show_without_a_key_prefix_suggests_the_prefixed_keys_that_end_in_the_key() {
    let server = RedisServer::start();
    let prefixed = |prefix: &str| {
        Client::builder()
            .key_prefix(prefix)
            .open(&server.url())
            .unwrap()
    };
    let _billing = hold(&prefixed("billing:"), "leader", "v");
    let _shipping = hold(&prefixed("shipping:"), "leader", "v");
    let _other = hold(&prefixed("billing:"), "leader-election", "v");
    let bare = |args: &[&str]| {
        leasehold()
            .args(["--url", &server.url()])
            .args(args)
            .output()
            .unwrap()
    };

    let out = bare(&["show", "leader"]);
    assert_exit(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "no lock on \"leader\"; held under a key prefix? these keys end in \"leader\" \
         (pass --key-prefix):\n  \
         \"billing:leader\"   --key-prefix \"billing:\"\n  \
         \"shipping:leader\"  --key-prefix \"shipping:\"\n"
    );
    // The suggestion works.
    let out = bare(&["--key-prefix", "billing:", "show", "leader"]);
    assert_exit(&out, 0);
    // release says the same, and releases nothing.
    let out = bare(&["release", "leader", "--yes"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("\n  \"billing:leader\"   --key-prefix \"billing:\"\n"),
        "{}",
        stderr(&out)
    );
    assert!(server.get("billing:leader").is_some());

    // Nothing ends in the key, a key prefix was given, or --json: the plain answer.
    let out = bare(&["show", "follower"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "no lock on \"follower\"\n");
    let out = bare(&["--key-prefix", "billing:", "show", "nobody"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "no lock on \"nobody\"\n");
    let out = bare(&["show", "leader", "--json"]);
    assert_exit(&out, 1);
    assert_eq!(json(&out), Value::Null);
    assert_eq!(stderr(&out), "no lock on \"leader\"\n");
}

/// The default build has one-server Redis and TOML/JSON files only: what needs another
/// feature says which, before any I/O.
#[test]
fn a_build_without_a_feature_names_the_feature_a_store_or_file_needs() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("leasehold.yml");
    std::fs::write(&yaml, "url: redis://127.0.0.1:1/\n").unwrap();
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(&cluster, "cluster = [\"redis://127.0.0.1:1\"]\n").unwrap();
    let cases: [(&[&str], &str, bool); 6] = [
        (
            &["--url", "rediss://:hunter2@127.0.0.1:1/"],
            "tls",
            cfg!(feature = "tls"),
        ),
        (
            &["--url", "etcd://127.0.0.1:1"],
            "etcd",
            cfg!(feature = "etcd"),
        ),
        (
            &["--url", "postgres://u:hunter2@127.0.0.1:1/db"],
            "postgres",
            cfg!(feature = "postgres"),
        ),
        (
            &["migrate", "postgresql://u:hunter2@127.0.0.1:1/db"],
            "postgres",
            cfg!(feature = "postgres"),
        ),
        (
            &["--config", yaml.to_str().unwrap()],
            "yaml",
            cfg!(feature = "yaml"),
        ),
        (
            &["--config", cluster.to_str().unwrap()],
            "cluster",
            cfg!(feature = "cluster"),
        ),
    ];
    // (A build with the feature would try to connect: not this test's business.)
    for (args, feature, _) in cases.into_iter().filter(|(_, _, built)| !built) {
        let mut cmd = leasehold();
        cmd.args(args);
        if args[0] != "migrate" {
            cmd.arg("ls");
        }
        let out = cmd.output().unwrap();
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "built without its `{feature}` feature (cargo install leasehold-cli \
                 --features {feature})"
            )),
            "{args:?}: {err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    let help = leasehold().arg("--help").output().unwrap();
    assert_exit(&help, 0);
    assert!(stdout(&help).contains("This build's features: "));
}

/// `migrate` is for PostgreSQL only: another store's URL is refused in so many words,
/// before any I/O and without its password.
#[test]
fn migrate_refuses_a_store_without_a_schema() {
    for url in [
        "redis://:hunter2@127.0.0.1:1/",
        "etcd://u:hunter2@127.0.0.1:1",
    ] {
        for args in [&["migrate", url][..], &["--url", url, "migrate", "--print"]] {
            let out = leasehold().args(args).output().unwrap();
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert!(
                err.contains("migrate: only the PostgreSQL store has a schema to create"),
                "{args:?}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
            assert_eq!(stdout(&out), "");
        }
    }
}

/// The lock on `key` as the library reports it (what the binary's answers are compared
/// with).
fn inspect(server: &RedisServer, key: &str) -> leasehold::LockInfo {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = leasehold::Client::builder()
            .key_prefix(PREFIX)
            .open(&server.url())
            .await
            .unwrap();
        client.inspect(key).await.unwrap().expect("held")
    })
}

/// `--url etcd://…` (feature `etcd`): `ls`, `show` and `release` against a spawned etcd,
/// with the applications' key prefix; the holder's digest and token are the library's.
#[cfg(feature = "etcd")]
#[test]
fn ls_show_and_release_work_on_etcd() {
    let server = support::EtcdServer::start();
    let url = server.url();
    let client = Client::builder().key_prefix(PREFIX).open(&url).unwrap();
    let a = hold(&client, "jobs:a", "secret-a");
    let _b = hold(&client, "jobs:b", "secret-b");
    let run = |args: &[&str]| {
        leasehold()
            .args(["--url", &url, "--key-prefix", PREFIX])
            .args(args)
            .output()
            .expect("the binary runs")
    };
    let info = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = leasehold::Client::builder()
                .key_prefix(PREFIX)
                .open(&url)
                .await
                .unwrap();
            client.inspect("jobs:a").await.unwrap().expect("held")
        })
    };

    let out = run(&["ls"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "jobs:a");
    assert!(row[1].ends_with('s'), "a TTL under a minute: {row:?}");
    assert_eq!(row[2], a.fencing_token().to_string());
    assert_eq!(row[3], &info.holder()[..12]);
    assert!(lines[2].starts_with("jobs:b "), "{text}");
    assert!(!text.contains("secret"), "never a lock's value: {text}");

    let out = run(&["show", "jobs:a", "--json"]);
    assert_exit(&out, 0);
    let shown = json(&out);
    assert_eq!(shown["key"], "jobs:a");
    assert_eq!(shown["fencing_token"], a.fencing_token());
    assert_eq!(shown["holder"], info.holder());
    let ttl = shown["ttl_ms"].as_u64().expect("ttl_ms");
    assert!((59_000..=60_000).contains(&ttl), "whole seconds: {ttl}");

    let out = run(&["release", "jobs:a", "--yes"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!(
            "released \"jobs:a\" (fencing token {}, holder ",
            a.fencing_token()
        )),
        "{}",
        stdout(&out)
    );
    assert!(a.refresh().unwrap_err().is_not_held());
    let out = run(&["show", "jobs:a"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "no lock on \"jobs:a\"\n");
    let next = hold(&client, "jobs:a", "next-holder");
    assert!(next.fencing_token() > a.fencing_token());
}

/// `migrate --print` prints the shipped schema for the URL's names and sends nothing;
/// `migrate` creates the tables (again: a no-op) and says which version is there, so that
/// clients told `create=false` open; then `ls`, `show` and `release` work on
/// `postgres://` as on the other stores.
#[cfg(feature = "postgres")]
#[test]
fn migrate_creates_the_schema_and_ls_show_release_work_on_postgres() {
    let server = support::PostgresServer::start();
    let url = format!("{}?table=cli_locks&create=false", server.url());
    let exists = || {
        server.sql("SELECT to_regclass('public.cli_locks') IS NOT NULL")[0][0].as_deref()
            == Some("t")
    };

    let out = leasehold()
        .args(["migrate", "--print", &url])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        leasehold::store::postgres::schema_sql(&url).unwrap()
    );
    assert!(stdout(&out).contains("CREATE TABLE IF NOT EXISTS \"public\".\"cli_locks\" ("));
    assert!(!exists(), "--print sends nothing");

    // Without the tables, a client told not to create them cannot open; it says why.
    let out = leasehold().args(["--url", &url, "ls"]).output().unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("leasehold migrate"),
        "{}",
        stderr(&out)
    );

    for _ in 0..2 {
        let out = leasehold().args(["migrate", &url]).output().unwrap();
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), "schema version 2\n");
        assert!(exists());
    }
    let out = leasehold()
        .args(["--url", &url, "migrate", "--json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(json(&out)["schema_version"], 2);
    assert_eq!(
        server.sql("SELECT count(*), max(version) FROM cli_locks_version")[0],
        [Some("1".to_owned()), Some("2".to_owned())]
    );

    let client = Client::builder().key_prefix(PREFIX).open(&url).unwrap();
    let a = hold(&client, "jobs:a", "secret-a");
    let _b = hold(&client, "jobs:b", "secret-b");
    let run = |args: &[&str]| {
        leasehold()
            .args(["--url", &url, "--key-prefix", PREFIX])
            .args(args)
            .output()
            .expect("the binary runs")
    };
    let out = run(&["ls"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "jobs:a");
    assert_eq!(row[2], a.fencing_token().to_string());
    assert!(lines[2].starts_with("jobs:b "), "{text}");
    assert!(!text.contains("secret"), "never a lock's value: {text}");

    let out = run(&["show", "jobs:a", "--json"]);
    assert_exit(&out, 0);
    let shown = json(&out);
    assert_eq!(shown["key"], "jobs:a");
    assert_eq!(shown["fencing_token"], a.fencing_token());
    let ttl = shown["ttl_ms"].as_u64().expect("ttl_ms");
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");

    let out = run(&["release", "jobs:a", "--yes"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!(
            "released \"jobs:a\" (fencing token {}, holder ",
            a.fencing_token()
        )),
        "{}",
        stdout(&out)
    );
    assert!(a.refresh().unwrap_err().is_not_held());
    let out = run(&["show", "jobs:a"]);
    assert_exit(&out, 1);
    let next = hold(&client, "jobs:a", "next-holder");
    assert!(next.fencing_token() > a.fencing_token());
}
