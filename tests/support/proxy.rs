//! [`FaultProxy`]: an in-process fault-injecting TCP proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{lock, wait_until};

// ---------------------------------------------------------------------------

/// State shared between the [`FaultProxy`] handle and its proxy thread.
struct ProxyShared {
    upstream: SocketAddr,
    delay_nanos: AtomicU64,
    blackhole: AtomicBool,
    /// Connections with an id below this are stalled for good (half-open).
    stall_below: AtomicU64,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Bytes forwarded from clients to the upstream.
    forwarded: AtomicU64,
    /// Bumped by `reset_all`; every connection holds a receiver.
    reset_tx: watch::Sender<u64>,
    /// Live connections per reset generation they were accepted in.
    live_by_generation: Mutex<BTreeMap<u64, usize>>,
    shutdown: Notify,
    /// `lose_reply_to`: the request to lose the reply of, until it is seen.
    lose_pattern: Mutex<Option<RequestMatch>>,
    /// The connection whose replies are swallowed (`NONE`: none).
    losing: AtomicU64,
    /// Reply chunks swallowed so far.
    lost: AtomicU64,
    /// Lost replies whose connection `lose_reply_then_cut` reset.
    losses_cut: AtomicUsize,
    /// The connection `cut_lost` resets (`NONE`: none), and its signal.
    cut_id: AtomicU64,
    cut: Notify,
    /// `mark`: a connection whose requests contain one of these is marked.
    mark_patterns: Mutex<Vec<Vec<u8>>>,
    /// The open connections marked so far.
    marked: Mutex<BTreeSet<u64>>,
    /// `cut_marked`: while on, marked connections are stalled.
    cut_marked: AtomicBool,
}

/// A request matcher for [`FaultProxy::lose_reply_then_cut`]: the chunk contains `pattern`.
pub fn containing(pattern: &[u8]) -> impl Fn(&[u8]) -> bool + Send + 'static {
    let pattern = pattern.to_vec();
    assert!(!pattern.is_empty(), "containing: empty pattern");
    move |chunk| chunk.windows(pattern.len()).any(|window| window == pattern)
}

/// Which request's reply to lose (`lose_reply_to`).
type RequestMatch = Box<dyn Fn(&[u8]) -> bool + Send>;

/// No connection.
const NONE: u64 = u64::MAX;

/// Which way a [`direction`] pumps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Client to server: requests.
    Request,
    /// Server to client: replies.
    Reply,
}

impl ProxyShared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn blackholed(&self) -> bool {
        self.blackhole.load(Ordering::SeqCst)
    }

    fn stalled(&self, id: u64) -> bool {
        self.blackholed()
            || id < self.stall_below.load(Ordering::SeqCst)
            || (self.cut_marked.load(Ordering::SeqCst) && lock(&self.marked).contains(&id))
    }
}

/// An in-process TCP proxy on 127.0.0.1 for fault injection (delay,
/// blackhole, connection resets). Runs on its own OS thread with its own
/// current-thread tokio runtime, so it works from sync code, any caller
/// runtime, and with paused tokio time in the caller. Drop stops it (all
/// proxied connections are closed) within a bounded time.
pub struct FaultProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    thread: Option<JoinHandle<()>>,
    /// In a mutex only so that a `FaultProxy` is `Sync` (a harness in a `static`).
    done_rx: Mutex<mpsc::Receiver<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every accepted connection
    /// to `127.0.0.1:upstream_port`. If the upstream connect fails, the
    /// accepted client connection is closed.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener =
            StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("FaultProxy: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("FaultProxy: set_nonblocking");
        let port = listener
            .local_addr()
            .expect("FaultProxy: local_addr")
            .port();
        let (reset_tx, _) = watch::channel(0u64);
        let shared = Arc::new(ProxyShared {
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
            delay_nanos: AtomicU64::new(0),
            blackhole: AtomicBool::new(false),
            stall_below: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            forwarded: AtomicU64::new(0),
            reset_tx,
            live_by_generation: Mutex::new(BTreeMap::new()),
            shutdown: Notify::new(),
            lose_pattern: Mutex::new(None),
            losing: AtomicU64::new(NONE),
            lost: AtomicU64::new(0),
            losses_cut: AtomicUsize::new(0),
            cut_id: AtomicU64::new(NONE),
            cut: Notify::new(),
            mark_patterns: Mutex::new(Vec::new()),
            marked: Mutex::new(BTreeSet::new()),
            cut_marked: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("FaultProxy: build runtime");
                rt.block_on(accept_loop(listener, thread_shared));
                // Drops every connection task (and thereby its sockets).
                rt.shutdown_timeout(Duration::from_secs(1));
                let _ = done_tx.send(());
            })
            .expect("FaultProxy: spawn thread");
        FaultProxy {
            port,
            shared,
            thread: Some(thread),
            done_rx: Mutex::new(done_rx),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PROXYPORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every chunk read from now on is forwarded `d` after it was read (both
    /// directions, order preserved). `Duration::ZERO` disables the delay.
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// While on, nothing is delivered in either direction: bytes are held, as a
    /// network partition stalls a TCP stream; connections stay open and new ones
    /// are accepted (and stalled too). Off delivers the held bytes, in order, and
    /// resumes forwarding. (Dropping bytes from the middle of a stream is
    /// something TCP never does, and would desynchronise any pipelined client.)
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Stalls every connection open now, for good, while new connections work: the
    /// peer of a half-open connection vanished without a reset (a crashed host, a NAT or
    /// firewall that forgot the flow, a failover to another address).
    pub fn stall_existing(&self) {
        let next = self.shared.next_id.load(Ordering::SeqCst);
        self.shared.stall_below.store(next, Ordering::SeqCst);
    }

    /// Ends a [`stall_existing`](Self::stall_existing): the stalled connections deliver
    /// what they held, in order, and work again — a partition that heals after the
    /// client gave up on the connection.
    pub fn heal_existing(&self) {
        self.shared.stall_below.store(0, Ordering::SeqCst);
    }

    /// Abruptly closes (RST, SO_LINGER 0) both sides of every current
    /// connection. Blocks (bounded, 2 s) until they are closed; connections
    /// accepted afterwards work normally.
    pub fn reset_all(&self) {
        let generation = {
            // Under the lock so that no connection can register with the old
            // generation after we bumped it.
            let _live = lock(&self.shared.live_by_generation);
            let mut next = 0;
            self.shared.reset_tx.send_modify(|g| {
                *g += 1;
                next = *g;
            });
            next
        };
        let closed = wait_until(Duration::from_secs(2), || {
            lock(&self.shared.live_by_generation)
                .range(..generation)
                .all(|(_, n)| *n == 0)
        });
        assert!(
            closed,
            "FaultProxy::reset_all: connections did not close within 2 s"
        );
    }

    /// A reply lost after the request ran: the next request (a chunk a client sends)
    /// that contains `pattern` is forwarded, and from then on everything the server
    /// answers on that connection is swallowed. The connection stays open and silent —
    /// the client waits for an answer that never comes — until
    /// [`cut_lost`](Self::cut_lost) resets it. One request: the next one matching after
    /// it is forwarded as usual.
    pub fn lose_reply_to(&self, pattern: impl AsRef<[u8]>) {
        self.lose_reply_to_matching(containing(pattern.as_ref()));
    }

    /// [`lose_reply_to`](Self::lose_reply_to) the next request (a chunk) for which
    /// `matches` says yes: for a pattern that is not a fixed string of bytes.
    pub fn lose_reply_to_matching(&self, matches: impl Fn(&[u8]) -> bool + Send + 'static) {
        *lock(&self.shared.lose_pattern) = Some(Box::new(matches));
    }

    /// Reply chunks swallowed so far ([`lose_reply_to`](Self::lose_reply_to)): once
    /// above zero, the server has run the request and answered it.
    pub fn replies_lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Resets (RST, both sides) the connection whose replies are swallowed, as a
    /// connection that broke before the answer came back; new connections work.
    /// Blocks (bounded, 2 s) until it is closed. Panics if no reply was lost.
    pub fn cut_lost(&self) {
        let id = self.shared.losing.load(Ordering::SeqCst);
        assert!(id != NONE, "FaultProxy::cut_lost: no request matched");
        self.shared.cut_id.store(id, Ordering::SeqCst);
        self.shared.cut.notify_waiters();
        let closed = wait_until(Duration::from_secs(2), || {
            self.shared.losing.load(Ordering::SeqCst) == NONE
        });
        assert!(
            closed,
            "FaultProxy::cut_lost: the connection did not close within 2 s"
        );
    }

    /// [`blackhole`](Self::blackhole) for `duration`, then let everything through again.
    /// Returns at once (a thread lifts it).
    pub fn blackhole_for(self: &Arc<Self>, duration: Duration) {
        self.blackhole(true);
        let proxy = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            proxy.blackhole(false);
        });
    }

    /// A reply lost after the request ran, then a broken connection: the next request
    /// `matches` says yes to is forwarded, its answer swallowed
    /// ([`lose_reply_to_matching`](Self::lose_reply_to_matching)), and once the server
    /// answered, the connection is reset ([`cut_lost`](Self::cut_lost)). Returns at once;
    /// a thread waits (bounded: 10 s) for the answer, and
    /// [`losses_cut`](Self::losses_cut) counts the ones done.
    pub fn lose_reply_then_cut(self: &Arc<Self>, matches: impl Fn(&[u8]) -> bool + Send + 'static) {
        let before = self.replies_lost();
        self.lose_reply_to_matching(matches);
        let proxy = Arc::clone(self);
        std::thread::spawn(move || {
            if wait_until(Duration::from_secs(10), || proxy.replies_lost() > before) {
                proxy.cut_lost();
                proxy.shared.losses_cut.fetch_add(1, Ordering::SeqCst);
            } else {
                eprintln!("FaultProxy::lose_reply_then_cut: no request matched within 10 s");
            }
        });
    }

    /// Replies [`lose_reply_then_cut`](Self::lose_reply_then_cut) lost and whose
    /// connection it reset, so far.
    pub fn losses_cut(&self) -> usize {
        self.shared.losses_cut.load(Ordering::SeqCst)
    }

    /// Marks every connection whose requests, from now on, contain `pattern` (matched
    /// across read boundaries): a peer that names itself (`CLIENT SETNAME`, a `REPLCONF`),
    /// for [`cut_marked`](Self::cut_marked). A connection is marked before the chunk
    /// that matched is forwarded, so a cut holds that chunk too.
    pub fn mark(&self, pattern: impl AsRef<[u8]>) {
        assert!(!pattern.as_ref().is_empty(), "mark: empty pattern");
        lock(&self.shared.mark_patterns).push(pattern.as_ref().to_vec());
    }

    /// A partition of some peers only: while on, every marked connection
    /// ([`mark`](Self::mark)) — and every connection marked meanwhile — is stalled both
    /// ways, as [`blackhole`](Self::blackhole) stalls them all; the others go on. Off
    /// delivers what was held, in order.
    pub fn cut_marked(&self, on: bool) {
        self.shared.cut_marked.store(on, Ordering::SeqCst);
    }

    /// How many open connections are marked ([`mark`](Self::mark)).
    pub fn marked_count(&self) -> usize {
        lock(&self.shared.marked).len()
    }

    /// Bytes forwarded from clients to the upstream so far (what a client sent this
    /// way, once delivered): which of several proxies a client uses.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Number of currently open proxied connections (client accepted and
    /// upstream connected).
    pub fn connection_count(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.notify_one();
        // Bounded: if the thread does not finish in time it is detached.
        let finished = lock(&self.done_rx)
            .recv_timeout(Duration::from_secs(3))
            .is_ok();
        if let Some(t) = self.thread.take().filter(|_| finished) {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: StdTcpListener, shared: Arc<ProxyShared>) {
    let listener = TcpListener::from_std(listener).expect("FaultProxy: TcpListener::from_std");
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    let (reset_rx, generation) = {
                        let mut live = lock(&shared.live_by_generation);
                        let rx = shared.reset_tx.subscribe();
                        let generation = *rx.borrow();
                        *live.entry(generation).or_insert(0) += 1;
                        (rx, generation)
                    };
                    let guard = LiveGuard { shared: shared.clone(), generation, counted: false };
                    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle_connection(client, id, shared.clone(), reset_rx, guard));
                }
                // e.g. EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Keeps the proxy's connection bookkeeping right however the task ends
/// (including being dropped at runtime shutdown).
struct LiveGuard {
    shared: Arc<ProxyShared>,
    generation: u64,
    counted: bool,
}

impl LiveGuard {
    fn count_open(&mut self) {
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        self.counted = true;
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.counted {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
        }
        let mut live = lock(&self.shared.live_by_generation);
        if let Some(n) = live.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.generation);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Reader saw EOF and everything queued was written; write side shut down.
    Eof,
    /// I/O error in either half.
    Error,
    /// `reset_all` was called; SO_LINGER 0 has been set on both sockets.
    Reset,
}

async fn handle_connection(
    client: TcpStream,
    id: u64,
    shared: Arc<ProxyShared>,
    mut reset_rx: watch::Receiver<u64>,
    mut guard: LiveGuard,
) {
    let upstream = tokio::select! {
        biased;
        _ = reset_changed(&mut reset_rx) => return,
        r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.upstream)) => match r {
            Ok(Ok(s)) => s,
            _ => return, // dropping `client` closes it
        },
    };
    let _ = upstream.set_nodelay(true);
    guard.count_open();

    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let mut tasks = JoinSet::new();
    tasks.spawn(direction(
        client_r,
        up_w,
        id,
        Way::Request,
        shared.clone(),
        reset_rx.clone(),
    ));
    tasks.spawn(direction(
        up_r,
        client_w,
        id,
        Way::Reply,
        shared.clone(),
        reset_rx,
    ));
    while let Some(res) = tasks.join_next().await {
        if !matches!(res, Ok(Outcome::Eof)) {
            // Reset, error or panic: tear the whole connection down. Aborted
            // tasks are still drained so their sockets are gone before the
            // guard reports the connection as closed.
            tasks.abort_all();
        }
    }
    lock(&shared.marked).remove(&id);
    // A connection that lost replies is gone: `cut_lost` waits for this.
    let _ = shared
        .losing
        .compare_exchange(id, NONE, Ordering::SeqCst, Ordering::SeqCst);
    drop(guard);
}

/// Resolves when `cut_lost` names connection `id`.
async fn cut_for(shared: &ProxyShared, id: u64) {
    loop {
        let cut = shared.cut.notified();
        tokio::pin!(cut);
        cut.as_mut().enable();
        if shared.cut_id.load(Ordering::SeqCst) == id {
            return;
        }
        cut.await;
    }
}

async fn reset_changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One direction of a proxied connection: `r` -> (delay/blackhole) -> `w`.
async fn direction(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    id: u64,
    way: Way,
    shared: Arc<ProxyShared>,
    mut reset_rx: watch::Receiver<u64>,
) -> Outcome {
    let result = {
        let fut = pump(&mut r, &mut w, id, way, &shared);
        tokio::pin!(fut);
        tokio::select! {
            biased;
            _ = reset_changed(&mut reset_rx) => None,
            _ = cut_for(&shared, id) => None,
            res = &mut fut => Some(res),
        }
    };
    match result {
        Some(Ok(())) => Outcome::Eof,
        Some(Err(())) => Outcome::Error,
        None => {
            // Both halves of each socket are dropped soon after (this task
            // returns, the sibling is reset/aborted): with linger 0 the
            // close sends RST instead of FIN.
            #[allow(deprecated)]
            {
                let _ = r.as_ref().set_linger(Some(Duration::ZERO));
                let _ = w.as_ref().set_linger(Some(Duration::ZERO));
            }
            Outcome::Reset
        }
    }
}

async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    id: u64,
    way: Way,
    shared: &ProxyShared,
) -> Result<(), ()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        // The last bytes of the previous chunk, so that a mark pattern split across two
        // reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = r.read(&mut buf).await.map_err(|_| ())?;
            if n == 0 {
                return Ok::<(), ()>(()); // dropping `tx` lets the writer finish
            }
            if way == Way::Request {
                mark_if_matched(shared, id, &mut tail, &buf[..n]);
            }
            match way {
                // Marked before it is forwarded: no reply can come back before.
                Way::Request => {
                    let mut pattern = lock(&shared.lose_pattern);
                    let matched = pattern.as_ref().is_some_and(|matches| matches(&buf[..n]));
                    if matched {
                        *pattern = None;
                        shared.losing.store(id, Ordering::SeqCst);
                    }
                }
                Way::Reply if shared.losing.load(Ordering::SeqCst) == id => {
                    shared.lost.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                Way::Reply => {}
            }
            let due = Instant::now() + shared.delay();
            tx.send((due, buf[..n].to_vec())).map_err(|_| ())?;
        }
    };
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            }
            // A partition stalls the stream (as TCP does), it never drops bytes
            // out of its middle: hold the data until the link is back.
            while shared.stalled(id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            w.write_all(&data).await.map_err(|_| ())?;
            if way == Way::Request {
                let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                shared.forwarded.fetch_add(n, Ordering::SeqCst);
            }
        }
        // Propagate the half-close.
        let _ = w.shutdown().await;
        Ok::<(), ()>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// Marks connection `id` when `tail` (the end of its previous chunk) followed by `chunk`
/// contains a [`FaultProxy::mark`] pattern; keeps the end of `chunk` in `tail`.
fn mark_if_matched(shared: &ProxyShared, id: u64, tail: &mut Vec<u8>, chunk: &[u8]) {
    let patterns = lock(&shared.mark_patterns);
    let Some(longest) = patterns.iter().map(Vec::len).max() else {
        return;
    };
    tail.extend_from_slice(chunk);
    let matched = patterns
        .iter()
        .any(|p| tail.windows(p.len()).any(|window| window == p.as_slice()));
    if matched {
        lock(&shared.marked).insert(id);
    }
    let keep = longest.saturating_sub(1).min(tail.len());
    tail.drain(..tail.len() - keep);
}
