//! Release hand-off through `LISTEN`/`NOTIFY`: every release (and abort or forced release
//! that frees a key) calls `pg_notify` on the table's channel with the key in hex (a key
//! over 3900 bytes: `md5:` and its MD5, as a payload holds 8000 bytes), sent by
//! the database when the statement commits; one listening connection per client, of its
//! own (a session `LISTEN` needs one: through a transaction-mode pooler point it at the
//! server directly, or waiters poll), wakes the first waiter of the key.
//!
//! The listener starts at the first wait. When it (re)connects, every waiter is woken
//! once, since a release before its `LISTEN` took effect went unseen; while it is down,
//! waiters pause as their retry strategy says.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio_postgres::AsyncMessage;

use super::tls::Tls;
use crate::store::{Waiters, Watch};

pub(crate) struct Notifier {
    config: tokio_postgres::Config,
    tls: Tls,
    channel: String,
    waiters: Arc<Waiters>,
    /// The keys waited for (to wake each once on a reconnect).
    keys: Arc<Mutex<HashSet<String>>>,
    task: OnceLock<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    pub(crate) fn new(config: tokio_postgres::Config, tls: Tls, channel: String) -> Self {
        let keys: Arc<Mutex<HashSet<String>>> = Arc::default();
        let waiters = Waiters::with_idle({
            let keys = Arc::clone(&keys);
            move |key| {
                keys.lock().remove(key);
            }
        });
        Notifier {
            config,
            tls,
            channel,
            waiters: Arc::new(waiters),
            keys,
            task: OnceLock::new(),
        }
    }

    pub(crate) fn watch(&self, key: &str) -> Watch {
        let (watch, first) = self.waiters.watch(key);
        if first {
            self.keys.lock().insert(key.to_owned());
        }
        if self.task.get().is_none() && tokio::runtime::Handle::try_current().is_ok() {
            let task = tokio::spawn(listen(
                self.config.clone(),
                self.tls.clone(),
                self.channel.clone(),
                Arc::clone(&self.waiters),
                Arc::clone(&self.keys),
            ));
            if let Err(task) = self.task.set(task) {
                task.abort();
            }
        }
        watch
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// Listen on `channel` until aborted, connecting again (after a pause) whenever the
/// connection ends.
async fn listen(
    config: tokio_postgres::Config,
    tls: Tls,
    channel: String,
    waiters: Arc<Waiters>,
    keys: Arc<Mutex<HashSet<String>>>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        if let Ok((client, messages)) = tls.connect(&config).await {
            let mut messages = messages.fuse();
            let statement = format!("LISTEN \"{channel}\"");
            let listen = client.batch_execute(&statement);
            // The connection is driven by reading its messages: both at once.
            let listening = {
                let mut listen = std::pin::pin!(listen);
                loop {
                    tokio::select! {
                        done = &mut listen => break done.is_ok(),
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(n))) => wake(&waiters, &keys, n.payload()),
                            Some(Ok(_)) => {}
                            _ => break false,
                        },
                    }
                }
            };
            if listening {
                pause = Duration::from_millis(50);
                // Releases before the LISTEN went unseen: every waiter looks once.
                let watched: Vec<String> = keys.lock().iter().cloned().collect();
                for key in watched {
                    waiters.wake_key(&key);
                }
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message {
                        wake(&waiters, &keys, n.payload());
                    }
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A release of the key `payload` names: in hex, or by its MD5 (`md5:<hex>`, a key too
/// long for a payload), matched against the keys waited for (a collision only wakes a
/// waiter that finds the key still held and waits on).
fn wake(waiters: &Waiters, keys: &Mutex<HashSet<String>>, payload: &str) {
    if let Some(digest) = payload.strip_prefix("md5:") {
        let released: Vec<String> = keys
            .lock()
            .iter()
            .filter(|key| md5_hex(key) == digest)
            .cloned()
            .collect();
        for key in released {
            waiters.released(&key);
        }
        return;
    }
    if let Some(key) = unhex(payload) {
        waiters.released(&key);
    }
}

/// `md5(key)` as PostgreSQL writes it: 32 lower-case hex digits.
fn md5_hex(key: &str) -> String {
    use md5::Digest;
    use std::fmt::Write;
    let mut hex = String::with_capacity(32);
    for byte in md5::Md5::digest(key.as_bytes()) {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn unhex(hex: &str) -> Option<String> {
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    let raw: Option<Vec<u8>> = bytes
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect();
    String::from_utf8(raw?).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_decode_to_keys() {
        assert_eq!(super::unhex("6a6f62").as_deref(), Some("job"));
        assert_eq!(super::unhex("d0bad0bb").as_deref(), Some("кл"));
        assert_eq!(super::unhex("6"), None);
        assert_eq!(super::unhex("zz"), None);
        assert_eq!(super::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    /// A long key's release, announced by its MD5, wakes that key's first waiter and no
    /// other (it used to wake every waiter of every key).
    #[test]
    fn a_long_key_announced_by_its_digest_wakes_only_its_waiter() {
        use futures::FutureExt;
        use std::collections::HashSet;
        use std::sync::Arc;

        use parking_lot::Mutex;

        use crate::store::Waiters;

        let waiters = Arc::new(Waiters::default());
        let keys: Mutex<HashSet<String>> = Mutex::default();
        let (a, b) = ("a".repeat(5000), "b".repeat(5000));
        let (first_of_a, _) = waiters.watch(&a);
        let (second_of_a, _) = waiters.watch(&a);
        let (of_b, _) = waiters.watch(&b);
        let (short, _) = waiters.watch("k");
        for key in [&a, &b, "k"] {
            keys.lock().insert(key.to_owned());
        }
        super::wake(&waiters, &keys, &format!("md5:{}", super::md5_hex(&a)));
        assert!(first_of_a.woken().now_or_never().is_some());
        assert!(
            second_of_a.woken().now_or_never().is_none(),
            "one release, one waiter"
        );
        assert!(of_b.woken().now_or_never().is_none());
        assert!(short.woken().now_or_never().is_none());
    }
}
