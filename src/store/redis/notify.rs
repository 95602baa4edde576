//! Release notifications on Redis: the release script publishes on a channel in the
//! lock key's slot, and one subscriber connection per client listens on the channels of
//! the keys its `lock` calls are waiting for.
//!
//! * One server: `PUBLISH`/`SUBSCRIBE` on a RESP3 connection of its own.
//! * A cluster: `SPUBLISH`/`SSUBSCRIBE` (sharded pub/sub: a message reaches only the
//!   shard that owns the slot, where plain `PUBLISH` would be broadcast to every node).
//!
//! A key's channel is subscribed to when its first waiter starts waiting, and dropped
//! when its last waiter leaves. The subscriber connection resubscribes by itself after a
//! reconnect. A release before a subscription was confirmed (the first, or one after a
//! reconnect) may have gone unseen: on each confirmation the subscriber asks whether the
//! key still exists (`EXISTS`, on the same connection), and wakes the key's first waiter
//! if it is gone — no attempt is spent when the key is still held. Until then, and
//! whenever the subscriber is down, waiters pause as their retry strategy says.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::keys::{Publish, RELEASED, Sidecar};
use crate::wake::{Waiters, Watch};

/// Where the subscriber connection goes.
pub(crate) enum Subscriber {
    Single(Box<redis::Client>),
    #[cfg(feature = "cluster")]
    Cluster(Box<redis::cluster::ClusterClientBuilder>),
}

pub(crate) struct Notifier {
    publish: Publish,
    waiters: Arc<Waiters>,
    /// Channel → key, for every key waited for.
    channels: Arc<Mutex<HashMap<String, String>>>,
    subscriber: Mutex<Option<Subscriber>>,
    /// Bound on (re)establishing the subscriber connection.
    connect_timeout: std::time::Duration,
    /// Subscribe and unsubscribe requests for the subscriber task, started at the first
    /// wait (it needs a runtime).
    commands: Arc<OnceLock<mpsc::UnboundedSender<Command>>>,
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

impl Notifier {
    pub(crate) fn new(
        publish: Publish,
        subscriber: Subscriber,
        connect_timeout: std::time::Duration,
    ) -> Self {
        let channels: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let commands: Arc<OnceLock<mpsc::UnboundedSender<Command>>> = Arc::default();
        // A key's last waiter left: drop its channel.
        let waiters = Waiters::with_idle({
            let (channels, commands) = (Arc::clone(&channels), Arc::clone(&commands));
            move |key| {
                let channel = Sidecar::of(key).name(RELEASED);
                channels.lock().remove(&channel);
                if let Some(commands) = commands.get() {
                    let _ = commands.send(Command::Unsubscribe(channel));
                }
            }
        });
        Notifier {
            publish,
            waiters: Arc::new(waiters),
            channels,
            subscriber: Mutex::new(Some(subscriber)),
            connect_timeout,
            commands,
        }
    }

    pub(crate) fn publish(&self) -> Publish {
        self.publish
    }

    /// A waiter's place in line for `key`; the key's channel is subscribed to if it is
    /// the first.
    pub(crate) fn watch(&self, key: &str) -> Option<Watch> {
        let commands = self.commands()?;
        let (watch, first) = self.waiters.watch(key);
        if first {
            let channel = Sidecar::of(key).name(RELEASED);
            self.channels.lock().insert(channel.clone(), key.to_owned());
            let _ = commands.send(Command::Subscribe(channel));
        }
        Some(watch)
    }

    /// The sender to the subscriber task, starting it (on the current runtime) the first
    /// time; `None` without a runtime.
    fn commands(&self) -> Option<&mpsc::UnboundedSender<Command>> {
        if let Some(commands) = self.commands.get() {
            return Some(commands);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut subscriber = self.subscriber.lock();
        if let Some(commands) = self.commands.get() {
            return Some(commands); // started meanwhile
        }
        let subscriber = subscriber.take()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            waiters: Arc::clone(&self.waiters),
            channels: Arc::clone(&self.channels),
        };
        runtime.spawn(task.run(subscriber, self.connect_timeout, rx));
        let _ = self.commands.set(tx);
        self.commands.get()
    }
}

/// The subscriber task: one connection, the subscribe requests, and the pushes.
struct Task {
    waiters: Arc<Waiters>,
    channels: Arc<Mutex<HashMap<String, String>>>,
}

/// The subscriber connection, once made.
enum Connection {
    Single(redis::aio::ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Task {
    async fn run(
        self,
        subscriber: Subscriber,
        connect_timeout: std::time::Duration,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let Some(mut conn) = connect(subscriber, connect_timeout, push_tx).await else {
            // No subscriber: every waiter polls. Keep draining requests.
            while commands.recv().await.is_some() {}
            return;
        };
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => conn.apply(command).await,
                    None => return, // the store is gone
                },
                Some(push) = pushes.recv() => self.pushed(push, &mut conn).await,
            }
        }
    }

    async fn pushed(&self, push: PushInfo, conn: &mut Connection) {
        let channel = match push.data.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            _ => return,
        };
        let Some(key) = self.channels.lock().get(&channel).cloned() else {
            return;
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.waiters.released(&key),
            // Listening (again): a release before this may have gone unseen. If the key
            // is gone, it is free: its first waiter tries (as for a release); if the
            // check failed, every waiter tries once.
            PushKind::Subscribe | PushKind::SSubscribe => match conn.exists(&key).await {
                Ok(true) => {}
                Ok(false) => self.waiters.released(&key),
                Err(_) => self.waiters.wake_key(&key),
            },
            _ => {}
        }
    }
}

async fn connect(
    subscriber: Subscriber,
    connect_timeout: std::time::Duration,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> Option<Connection> {
    match subscriber {
        Subscriber::Single(client) => {
            let info = client.get_connection_info().clone();
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(resp3)).ok()?;
            let config = super::conn::manager_config(connect_timeout)
                .set_push_sender(pushes)
                .set_automatic_resubscription();
            // Lazy: a server that is down now is connected to when it is back.
            redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                .ok()
                .map(Connection::Single)
        }
        #[cfg(feature = "cluster")]
        Subscriber::Cluster(builder) => builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
            .ok()?
            .get_async_connection()
            .await
            .ok()
            .map(Connection::Cluster),
    }
}

impl Connection {
    /// Whether `key` exists (on a cluster, asked of the node that owns its slot).
    async fn exists(&mut self, key: &str) -> redis::RedisResult<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// Send one request; a failure leaves the key's waiters polling.
    async fn apply(&mut self, command: Command) {
        let _ = match (self, command) {
            (Connection::Single(c), Command::Subscribe(channel)) => c.subscribe(channel).await,
            (Connection::Single(c), Command::Unsubscribe(channel)) => c.unsubscribe(channel).await,
            #[cfg(feature = "cluster")]
            (Connection::Cluster(c), Command::Subscribe(channel)) => c.ssubscribe(channel).await,
            #[cfg(feature = "cluster")]
            (Connection::Cluster(c), Command::Unsubscribe(channel)) => {
                c.sunsubscribe(channel).await
            }
        };
    }
}
