//! The built-in SIP proxy's transport (tokio): UDP and TCP on one address (`--listen-sip`),
//! feeding the sans-IO [`Proxy`] and carrying out the [`Transmit`]s it returns. Media steps
//! reach the session manager shared with the ng server through [`SharedMedia`].
//!
//! - **UDP** (RFC 3261 §18): one datagram = one message. A datagram larger than
//!   `max_message` is not parsed: a request whose Via headers can be salvaged is answered
//!   `513 Message Too Large` at its source, anything else is dropped. Datagrams of nothing but
//!   CRLF are keep-alives and ignored.
//! - **TCP** (§18.3): messages are framed by Content-Length with [`crate::sip::frame`] (which also
//!   bounds the header count and line length). Double-CRLF keep-alives are answered with a
//!   single CRLF (RFC 5626 §4.4.1). A stream that cannot be framed (no Content-Length, a
//!   message above `max_message`, a broken header section) cannot be re-synchronised: a
//!   request gets its error response on the connection, then the connection is closed. A
//!   connection silent for `tcp_idle` is closed. The head of a message is searched
//!   incrementally, so a peer dribbling bytes costs linear, not quadratic, work.
//! - **Where replies go.** Every connection (accepted or opened by us) is registered under its
//!   peer address; a TCP [`Transmit`] to that address is written on it, so responses go back
//!   on the connection the request came on. A TCP transmit to an address without a
//!   connection opens one (bounded by `tcp_connect_timeout`); messages queue meanwhile.
//!   Per-connection queues are bounded (`tcp_queue`); beyond, messages are dropped and counted.
//! - **Timers.** A task sleeps until [`Proxy::poll_timeout`] (at most `max_timer_sleep`),
//!   then calls [`Proxy::handle_timeout`]; a message that arms an earlier timer wakes it.
//! - **Never stalls, never panics.** The proxy and the manager are each behind a mutex held
//!   for one message (the manager only for a media step, inside the proxy's call; the ng
//!   server takes only the manager's), never across an `.await`. A panic inside the proxy
//!   is caught, counted and logged; the message is dropped and the server goes on.
//! - Counters: [`SipStats`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Notify};

use super::stopped;
use crate::cidr::{any_contains, Cidr};
use crate::session::backend::MediaBackend;
use crate::session::manager::SessionManager;
use crate::session::sip_media::SharedMedia;
use crate::sip::auth::{AuthHook, AuthStats, Authenticator, UserFile};
use crate::sip::flood::{FloodGuard, FloodStats, Verdict};
use crate::sip::message::{build_response, ReplyContext};
use crate::sip::parse::{frame, Frame, ParseError, MAX_MESSAGE_LEN};
use crate::sip::proxy::{Proxy, ProxyConfig, ProxyStats};
use crate::sip::registrar::MemoryStore;
use crate::sip::transport::{Transmit, Transport};
use crate::time::{self, Nanos};

/// SO_RCVBUF asked for on the SIP UDP socket.
const UDP_RCVBUF: usize = 4 << 20;

/// A UDP input queue that has not been empty for this long is standing: the proxy is
/// slower than its input. T1 (500 ms): requests waiting that long are being retransmitted,
/// which multiplies the load; shorter stalls (the control thread descheduled on a shared
/// machine, a generator's burst) refused calls that would have completed (100 ms refused
/// 1.6% of calls at 2,000 calls/s on a relay using a quarter of a core).
const SHED_AFTER_NS: u64 = 500_000_000;

/// Shedding episodes between two log lines (it can flap at the edge of capacity).
const SHED_LOG_EVERY: u64 = 100;

#[derive(Clone, Debug)]
pub struct SipServerConfig {
    /// UDP and TCP are bound to this address (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// Largest message accepted (at most the message layer's 65535).
    pub max_message: usize,
    /// A TCP connection without incoming bytes for this long is closed.
    pub tcp_idle: Duration,
    /// Most TCP connections at once (accepted and opened); more are refused.
    pub max_tcp_connections: usize,
    /// Messages queued per TCP connection before new ones are dropped.
    pub tcp_queue: usize,
    pub tcp_connect_timeout: Duration,
    /// Longest sleep of the timer task (timers are also checked this often).
    pub max_timer_sleep: Duration,
}

impl Default for SipServerConfig {
    fn default() -> Self {
        SipServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            max_message: MAX_MESSAGE_LEN,
            tcp_idle: Duration::from_secs(300),
            max_tcp_connections: 4096,
            tcp_queue: 256,
            tcp_connect_timeout: Duration::from_secs(5),
            max_timer_sleep: Duration::from_secs(1),
        }
    }
}

/// Transport counters (the proxy keeps its own, [`ProxyStats`]).
#[derive(Debug, Default)]
pub struct SipStats {
    /// UDP datagrams handed to the proxy.
    pub udp_received: AtomicU64,
    /// TCP messages framed and handed to the proxy.
    pub tcp_received: AtomicU64,
    /// CRLF keep-alives (UDP and TCP).
    pub keepalives: AtomicU64,
    /// Messages larger than `max_message` (UDP and TCP).
    pub too_large: AtomicU64,
    /// TCP streams that could not be framed (connection closed).
    pub framing_errors: AtomicU64,
    /// Error responses the transport itself sent (513 / 400 for unframable input).
    pub transport_rejects: AtomicU64,
    pub udp_sent: AtomicU64,
    pub tcp_sent: AtomicU64,
    /// Sends that failed or were dropped (full queue, no route, connect failure).
    pub send_errors: AtomicU64,
    pub tcp_accepted: AtomicU64,
    /// Outgoing TCP connections opened.
    pub tcp_connected: AtomicU64,
    /// Connections refused because `max_tcp_connections` were open.
    pub tcp_refused: AtomicU64,
    pub tcp_idle_closed: AtomicU64,
    /// Panics caught inside the proxy (should stay 0).
    pub panics: AtomicU64,
    /// Times the UDP input queue stood (overload control began refusing new INVITEs).
    pub shed_starts: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipStatsSnapshot {
    pub udp_received: u64,
    pub tcp_received: u64,
    pub keepalives: u64,
    pub too_large: u64,
    pub framing_errors: u64,
    pub transport_rejects: u64,
    pub udp_sent: u64,
    pub tcp_sent: u64,
    pub send_errors: u64,
    pub tcp_accepted: u64,
    pub tcp_connected: u64,
    pub tcp_refused: u64,
    pub tcp_idle_closed: u64,
    pub panics: u64,
    pub shed_starts: u64,
    /// TCP connections open now.
    pub tcp_open: u64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A caught panic may have poisoned it; the state is still the best we have.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy and the media hook it calls, locked together for one message.
struct Core<B: MediaBackend> {
    proxy: Proxy<MemoryStore>,
    media: SharedMedia<B>,
    /// Digest authentication (`--sip-users`); `None` serves everyone.
    auth: Option<Authenticator>,
    /// Per-source flood control; `None`: off.
    flood: Option<FloodGuard>,
    /// Sources flood control leaves alone (`--sip-trusted`).
    flood_exempt: Vec<Cidr>,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

/// State shared by the server's tasks.
pub struct SipShared<B: MediaBackend> {
    core: Mutex<Core<B>>,
    udp: Arc<UdpSocket>,
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    next_conn: AtomicU64,
    /// The deadline the timer task sleeps toward (u64::MAX: none).
    armed: AtomicU64,
    wake: Notify,
    cfg: SipServerConfig,
    pub stats: SipStats,
}

impl<B: MediaBackend + 'static> SipShared<B> {
    pub fn snapshot(&self) -> SipStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        SipStatsSnapshot {
            udp_received: l(&s.udp_received),
            tcp_received: l(&s.tcp_received),
            keepalives: l(&s.keepalives),
            too_large: l(&s.too_large),
            framing_errors: l(&s.framing_errors),
            transport_rejects: l(&s.transport_rejects),
            udp_sent: l(&s.udp_sent),
            tcp_sent: l(&s.tcp_sent),
            send_errors: l(&s.send_errors),
            tcp_accepted: l(&s.tcp_accepted),
            tcp_connected: l(&s.tcp_connected),
            tcp_refused: l(&s.tcp_refused),
            tcp_idle_closed: l(&s.tcp_idle_closed),
            panics: l(&s.panics),
            shed_starts: l(&s.shed_starts),
            tcp_open: lock(&self.conns).len() as u64,
        }
    }

    /// The proxy's own counters.
    pub fn proxy_stats(&self) -> ProxyStats {
        lock(&self.core).proxy.stats()
    }

    /// Turns digest authentication on (or off with `None`).
    pub fn set_auth(&self, auth: Option<Authenticator>) {
        lock(&self.core).auth = auth;
    }

    /// Replaces the users (SIGHUP): registrations, dialogs and nonces in use are kept.
    /// False when authentication is off.
    pub fn reload_users(&self, users: UserFile) -> bool {
        match lock(&self.core).auth.as_mut() {
            Some(a) => {
                a.replace_store(users);
                true
            }
            None => false,
        }
    }

    /// The authentication counters (`None` when it is off).
    pub fn auth_stats(&self) -> Option<AuthStats> {
        lock(&self.core).auth.as_ref().map(Authenticator::stats)
    }

    /// Turns per-source flood control on (or off with `None`); `trusted` sources are exempt.
    pub fn set_flood(&self, guard: Option<FloodGuard>, trusted: Vec<Cidr>) {
        let mut core = lock(&self.core);
        core.flood = guard;
        core.flood_exempt = trusted;
    }

    /// Overload control: the UDP loop says whether its queue is standing (see `udp_loop`).
    fn set_shedding(&self, on: bool) {
        lock(&self.core).proxy.set_shedding(on);
        if on {
            // Counted every time, logged at most once per SHED_LOG_EVERY starts.
            let n = self.stats.shed_starts.fetch_add(1, Ordering::Relaxed);
            if n % SHED_LOG_EVERY == 0 {
                tracing::warn!(
                    times = n + 1,
                    "SIP input queue not draining: refusing new INVITEs with 503"
                );
            }
        }
    }

    /// The flood-control counters (`None` when it is off).
    pub fn flood_stats(&self) -> Option<FloodStats> {
        lock(&self.core).flood.as_ref().map(FloodGuard::stats)
    }

    /// Runs `f` on the locked core (proxy, hooks, flood guard), catching panics; re-arms the
    /// timer.
    fn with_proxy(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Core<B>) -> Vec<Transmit>,
    ) -> Vec<Transmit> {
        let done = catch_unwind(AssertUnwindSafe(|| {
            let mut core = lock(&self.core);
            let out = f(&mut core);
            (out, core.proxy.poll_timeout())
        }));
        match done {
            Ok((out, next)) => {
                if let Some(next) = next {
                    if next < self.armed.load(Ordering::Relaxed) {
                        self.wake.notify_one();
                    }
                }
                out
            }
            Err(_) => {
                bump(&self.stats.panics);
                tracing::error!(what, "SIP proxy panicked; message dropped");
                Vec::new()
            }
        }
    }

    fn incoming(&self, data: &[u8], src: SocketAddr, transport: Transport) -> Vec<Transmit> {
        let now = time::now_ns();
        self.with_proxy("incoming", |core| {
            let ip = src.ip();
            let exempt = any_contains(&core.flood_exempt, ip);
            if let (Some(g), false) = (core.flood.as_mut(), exempt) {
                if let Verdict::Banned { new_ban } = g.admit(ip, now) {
                    if new_ban {
                        tracing::warn!(source = %ip, "SIP source banned: too many requests");
                    }
                    return Vec::new();
                }
            }
            let Core {
                proxy, media, auth, ..
            } = core;
            let hook = auth.as_mut().map(|a| a as &mut dyn AuthHook);
            let out = proxy.handle_incoming_with_auth(data, src, transport, now, media, hook);
            let failed = auth.as_ref().is_some_and(Authenticator::last_failed);
            if let (Some(g), true, false) = (core.flood.as_mut(), failed, exempt) {
                if g.failed_auth(ip, now) {
                    tracing::warn!(source = %ip, "SIP source banned: too many failed authentications");
                }
            }
            out
        })
    }

    fn timeout(&self, now: Nanos) -> Vec<Transmit> {
        self.with_proxy("timeout", |core| {
            core.proxy.handle_timeout(now, &mut core.media)
        })
    }
}

/// Whether the bytes hold nothing but CR/LF (a keep-alive).
fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// The error response for a request the transport cannot hand to the proxy (too large or
/// unframable), if the bytes look like a request with at least one Via.
fn transport_reject(data: &[u8], e: ParseError) -> Option<Vec<u8>> {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let first = data.get(start..start + 4)?;
    if first.eq_ignore_ascii_case(b"SIP/") {
        return None; // never answer a response
    }
    let ctx = ReplyContext::salvage(data);
    if ctx.vias.is_empty() {
        return None;
    }
    Some(build_response(
        &ctx,
        e.status(),
        e.reason_phrase(),
        None,
        &[],
    ))
}

fn first_line(bytes: &[u8]) -> &str {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len())
        .min(120);
    std::str::from_utf8(bytes.get(..end).unwrap_or_default()).unwrap_or("<binary>")
}

/// Sends what the proxy asked for.
async fn dispatch<B: MediaBackend + 'static>(shared: &Arc<SipShared<B>>, out: Vec<Transmit>) {
    for t in out {
        tracing::debug!(
            to = %t.to,
            transport = ?t.transport,
            len = t.bytes.len(),
            line = first_line(&t.bytes),
            "sip send"
        );
        match t.transport {
            Transport::Udp => send_udp(shared, t.to, &t.bytes).await,
            Transport::Tcp => send_tcp(shared, t.to, t.bytes),
        }
    }
}

async fn send_udp<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    to: SocketAddr,
    bytes: &[u8],
) {
    let r = match shared.udp.try_send_to(bytes, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => shared.udp.send_to(bytes, to).await,
        other => other,
    };
    match r {
        Ok(_) => bump(&shared.stats.udp_sent),
        Err(e) => {
            bump(&shared.stats.send_errors);
            tracing::debug!(%to, error = %e, "SIP UDP send failed");
        }
    }
}

fn send_tcp<B: MediaBackend + 'static>(shared: &Arc<SipShared<B>>, to: SocketAddr, bytes: Vec<u8>) {
    let mut conns = lock(&shared.conns);
    if let Some(c) = conns.get(&to) {
        match c.tx.try_send(bytes) {
            Ok(()) => {}
            Err(e) => {
                bump(&shared.stats.send_errors);
                tracing::debug!(%to, error = %e, "SIP TCP queue full or closed: message dropped");
            }
        }
        return;
    }
    if conns.len() >= shared.cfg.max_tcp_connections {
        bump(&shared.stats.tcp_refused);
        bump(&shared.stats.send_errors);
        return;
    }
    // No connection to that peer: open one; the message waits in its queue.
    let (tx, rx) = mpsc::channel(shared.cfg.tcp_queue.max(1));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if tx.try_send(bytes).is_err() {
        bump(&shared.stats.send_errors);
        return;
    }
    conns.insert(to, Conn { id, tx });
    drop(conns);
    let shared = shared.clone();
    tokio::spawn(async move {
        let limit = shared.cfg.tcp_connect_timeout;
        match tokio::time::timeout(limit, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => {
                bump(&shared.stats.tcp_connected);
                let _ = stream.set_nodelay(true);
                run_connection(shared, stream, to, id, rx).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%to, error = %e, "SIP TCP connect failed");
                connect_failed(&shared, to, id, rx);
            }
            Err(_) => {
                tracing::debug!(%to, "SIP TCP connect timed out");
                connect_failed(&shared, to, id, rx);
            }
        }
    });
}

fn connect_failed<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    to: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    unregister(shared, to, id);
    rx.close();
    while rx.try_recv().is_ok() {
        bump(&shared.stats.send_errors);
    }
}

fn unregister<B: MediaBackend + 'static>(shared: &SipShared<B>, peer: SocketAddr, id: u64) {
    let mut conns = lock(&shared.conns);
    if conns.get(&peer).is_some_and(|c| c.id == id) {
        conns.remove(&peer);
    }
}

/// A bound SIP server, not yet running.
pub struct SipServer<B: MediaBackend> {
    tcp: TcpListener,
    shared: Arc<SipShared<B>>,
    local: SocketAddr,
}

/// Binds UDP, then TCP on the port UDP got (retrying a few times for port 0).
async fn bind_both(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..8 {
        let udp = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("binding SIP UDP {listen}"))?;
        // Bursts of INVITEs (and their retransmissions) must not overflow the kernel's
        // default ~200 KiB receive buffer; best effort (capped by net.core.rmem_max).
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RCVBUF);
        let at = udp.local_addr()?;
        match TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding SIP TCP {at}")),
        }
    }
    Err(anyhow::anyhow!(
        "no port free for both SIP UDP and TCP on {}: {last:?}",
        listen.ip()
    ))
}

impl<B: MediaBackend + 'static> SipServer<B> {
    /// Binds `cfg.listen` (UDP and TCP) and builds the proxy. When the listen port is 0, the
    /// proxy's `local` port is set to the one bound.
    pub async fn bind(
        cfg: SipServerConfig,
        mut proxy_cfg: ProxyConfig,
        manager: Arc<Mutex<SessionManager<B>>>,
    ) -> anyhow::Result<SipServer<B>> {
        let (udp, tcp) = bind_both(cfg.listen).await?;
        let local = udp.local_addr()?;
        if proxy_cfg.local.port() == 0 {
            proxy_cfg.local.set_port(local.port());
        }
        let proxy = Proxy::new(proxy_cfg, MemoryStore::default());
        let mut cfg = cfg;
        cfg.max_message = cfg.max_message.clamp(1, MAX_MESSAGE_LEN);
        let shared = Arc::new(SipShared {
            core: Mutex::new(Core {
                proxy,
                media: SharedMedia::new(manager),
                auth: None,
                flood: None,
                flood_exempt: Vec::new(),
            }),
            udp: Arc::new(udp),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            armed: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            cfg,
            stats: SipStats::default(),
        });
        Ok(SipServer { tcp, shared, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn shared(&self) -> Arc<SipShared<B>> {
        self.shared.clone()
    }

    /// Serves until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let SipServer { tcp, shared, .. } = self;
        let timer = tokio::spawn(timer_loop(shared.clone(), shutdown.clone()));
        let tcp_task = tokio::spawn(tcp_loop(tcp, shared.clone(), shutdown.clone()));
        let result = udp_loop(shared.clone(), shutdown).await;
        timer.abort();
        tcp_task.abort();
        let s = shared.snapshot();
        tracing::info!(
            udp_received = s.udp_received,
            tcp_received = s.tcp_received,
            too_large = s.too_large,
            framing_errors = s.framing_errors,
            send_errors = s.send_errors,
            panics = s.panics,
            "SIP server stopped"
        );
        result
    }
}

/// Binds and serves SIP until `shutdown` turns true.
pub async fn serve_sip<B: MediaBackend + 'static>(
    cfg: SipServerConfig,
    proxy_cfg: ProxyConfig,
    manager: Arc<Mutex<SessionManager<B>>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let server = SipServer::bind(cfg, proxy_cfg, manager).await?;
    tracing::info!(listen = %server.local_addr(), "SIP proxy listening (UDP and TCP)");
    server.run(shutdown).await
}

async fn udp_loop<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // One byte more than the largest message, to tell "exactly the limit" from "more".
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let udp = shared.udp.clone();
    // Overload detection: when the socket was last found empty. A queue that has not
    // drained for SHED_AFTER_NS is a standing queue (the proxy is slower than its input), so
    // new INVITEs are refused until it drains again.
    let mut last_empty = time::now_ns();
    let mut shedding = false;
    loop {
        let (n, peer) = match udp.try_recv_from(&mut buf) {
            Ok(x) => {
                let standing = time::now_ns().saturating_sub(last_empty) > SHED_AFTER_NS;
                if standing != shedding {
                    shedding = standing;
                    shared.set_shedding(shedding);
                }
                x
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if shedding {
                    shedding = false;
                    shared.set_shedding(false);
                }
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    r = udp.readable() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "SIP UDP readiness error");
                        }
                    }
                }
                // The queue was empty until this wake-up.
                last_empty = time::now_ns();
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "SIP UDP receive error");
                continue;
            }
        };
        let Some(data) = buf.get(..n) else {
            continue;
        };
        if n > shared.cfg.max_message {
            bump(&shared.stats.too_large);
            if let Some(r) = transport_reject(data, ParseError::TooLarge) {
                bump(&shared.stats.transport_rejects);
                send_udp(&shared, peer, &r).await;
            }
            continue;
        }
        if is_keepalive(data) {
            bump(&shared.stats.keepalives);
            continue;
        }
        bump(&shared.stats.udp_received);
        let out = shared.incoming(data, peer, Transport::Udp);
        dispatch(&shared, out).await;
    }
}

async fn tcp_loop<B: MediaBackend + 'static>(
    listener: TcpListener,
    shared: Arc<SipShared<B>>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let Some((stream, peer)) = super::accept_or_stop(&listener, &mut stop, "SIP").await else {
            return;
        };
        let (tx, rx) = mpsc::channel(shared.cfg.tcp_queue.max(1));
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = lock(&shared.conns);
            if conns.len() >= shared.cfg.max_tcp_connections {
                bump(&shared.stats.tcp_refused);
                continue; // dropping the stream closes it
            }
            // A newer connection from the same address replaces the old one for sending.
            conns.insert(peer, Conn { id, tx });
        }
        bump(&shared.stats.tcp_accepted);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped(shutdown) => {}
                _ = run_connection(shared, stream, peer, id, rx) => {}
            }
        });
    }
}

/// Reads and writes one registered connection until it closes, idles out or breaks.
async fn run_connection<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let (rd, mut wr) = stream.into_split();
    let stats = shared.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = wr.write_all(&bytes).await {
                tracing::debug!(%peer, error = %e, "SIP TCP write failed");
                bump(&stats.stats.send_errors);
                return;
            }
            bump(&stats.stats.tcp_sent);
        }
        let _ = wr.shutdown().await;
    });
    let reason = tokio::select! {
        r = read_connection(&shared, rd, peer, id) => r,
        // The writer ends on its own only when writing failed: the connection is dead.
        _ = &mut writer => "write failed",
    };
    tracing::debug!(%peer, reason, "SIP TCP connection closed");
    // Drop our sender so the writer drains what is queued (a final error response), then ends.
    unregister(&shared, peer, id);
    if !writer.is_finished()
        && tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// The sender registered for this connection, if it is still the registered one.
fn conn_sender<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    peer: SocketAddr,
    id: u64,
) -> Option<mpsc::Sender<Vec<u8>>> {
    lock(&shared.conns)
        .get(&peer)
        .filter(|c| c.id == id)
        .map(|c| c.tx.clone())
}

/// Frames and handles messages until the stream ends; returns why it ended.
async fn read_connection<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    mut rd: OwnedReadHalf,
    peer: SocketAddr,
    id: u64,
) -> &'static str {
    let max = shared.cfg.max_message;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // Where the search for the end of the header section resumes.
    let mut scan_from = 0usize;
    loop {
        loop {
            // Keep-alives first, then only re-frame once a blank line has arrived.
            let crlfs = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if crlfs == 0 {
                match find_blank_line(&buf, scan_from) {
                    Some(_) => {}
                    None => {
                        scan_from = buf.len().saturating_sub(3);
                        break;
                    }
                }
            }
            match frame(&buf) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::KeepAlive(n)) => {
                    bump(&shared.stats.keepalives);
                    let n = n.min(buf.len());
                    // A double-CRLF ping gets a single-CRLF pong (RFC 5626 §4.4.1).
                    if n >= 4 {
                        if let Some(tx) = conn_sender(shared, peer, id) {
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                    }
                    buf.drain(..n);
                    scan_from = 0;
                    if n == 0 {
                        break;
                    }
                }
                Ok(Frame::Message { len }) => {
                    let len = len.min(buf.len());
                    if len > max {
                        return reject_and_close(shared, &buf, ParseError::TooLarge, peer, id);
                    }
                    bump(&shared.stats.tcp_received);
                    let out = shared.incoming(&buf[..len], peer, Transport::Tcp);
                    dispatch(shared, out).await;
                    buf.drain(..len);
                    scan_from = 0;
                }
                Err(e) => return reject_and_close(shared, &buf, e, peer, id),
            }
        }
        if buf.len() > max {
            return reject_and_close(shared, &buf, ParseError::TooLarge, peer, id);
        }
        let n = match tokio::time::timeout(shared.cfg.tcp_idle, rd.read(&mut chunk)).await {
            Err(_) => {
                bump(&shared.stats.tcp_idle_closed);
                return "idle";
            }
            Ok(Err(_)) => return "read error",
            Ok(Ok(0)) => return "closed by peer",
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Offset of the first CRLF CRLF at or after `from`.
fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
}

fn reject_and_close<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    buf: &[u8],
    e: ParseError,
    peer: SocketAddr,
    id: u64,
) -> &'static str {
    if e == ParseError::TooLarge {
        bump(&shared.stats.too_large);
    } else {
        bump(&shared.stats.framing_errors);
    }
    if let Some(r) = transport_reject(buf, e) {
        if let Some(tx) = conn_sender(shared, peer, id) {
            bump(&shared.stats.transport_rejects);
            let _ = tx.try_send(r);
        }
    }
    tracing::debug!(%peer, error = %e, "SIP TCP stream cannot be framed");
    "framing error"
}

async fn timer_loop<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let max_sleep = u64::try_from(shared.cfg.max_timer_sleep.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1_000_000);
    loop {
        let now = time::now_ns();
        let next = lock(&shared.core).proxy.poll_timeout();
        let deadline = next.unwrap_or(u64::MAX).min(now.saturating_add(max_sleep));
        shared.armed.store(deadline, Ordering::Relaxed);
        let wait = Duration::from_nanos(deadline.saturating_sub(now));
        tokio::select! {
            _ = &mut stop => return,
            _ = shared.wake.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let out = shared.timeout(time::now_ns());
        dispatch(&shared, out).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fake::FakeBackend;
    use crate::session::manager::ManagerConfig;
    use crate::session::negotiate::RelayInterface;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LO: [u8; 4] = [127, 0, 0, 1];

    /// A server on a free loopback port with a fake media backend; returns its address, its
    /// shared state and the stop sender (dropping it stops the server).
    async fn start(
        cfg: SipServerConfig,
    ) -> (SocketAddr, Arc<SipShared<FakeBackend>>, watch::Sender<bool>) {
        let mgr = SessionManager::new(
            FakeBackend::new(30000, 30999).unwrap(),
            ManagerConfig {
                interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
                ..ManagerConfig::default()
            },
            time::now_ns(),
        );
        let mut proxy_cfg = ProxyConfig::new(SocketAddr::from((LO, 0)));
        proxy_cfg.domains = vec!["127.0.0.1".into()];
        let server = SipServer::bind(cfg, proxy_cfg, Arc::new(Mutex::new(mgr)))
            .await
            .unwrap();
        let addr = server.local_addr();
        let shared = server.shared();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(server.run(rx));
        (addr, shared, tx)
    }

    fn test_cfg() -> SipServerConfig {
        SipServerConfig {
            listen: SocketAddr::from((LO, 0)),
            ..SipServerConfig::default()
        }
    }

    fn register(transport: &str, me: SocketAddr, n: u32) -> String {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {me};rport;branch=z9hG4bK-t{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{n}@127.0.0.1>;tag=f{n}\r\nTo: <sip:u{n}@127.0.0.1>\r\n\
             Call-ID: reg-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{n}@{me}>\r\nExpires: 600\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    async fn read_some(s: &mut TcpStream, want: &[u8], limit: Duration) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let _ = tokio::time::timeout(limit, async {
            while !got.windows(want.len()).any(|w| w == want) {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        got
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[tokio::test]
    async fn udp_register_and_oversize() {
        let (addr, shared, _stop) = start(SipServerConfig {
            max_message: 2000,
            ..test_cfg()
        })
        .await;
        let sock = UdpSocket::bind(SocketAddr::from((LO, 0))).await.unwrap();
        let me = sock.local_addr().unwrap();
        let mut buf = vec![0u8; 65536];
        sock.send_to(register("UDP", me, 1).as_bytes(), addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].starts_with(b"SIP/2.0 200 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Above max_message: 513 from the transport, the proxy never sees it.
        let mut big = register("UDP", me, 2).replace("Content-Length: 0\r\n\r\n", "");
        big.push_str(&format!(
            "X-Pad: {}\r\nContent-Length: 0\r\n\r\n",
            "p".repeat(3000)
        ));
        sock.send_to(big.as_bytes(), addr).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].starts_with(b"SIP/2.0 513 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Keep-alives are not messages.
        sock.send_to(b"\r\n\r\n", addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = shared.snapshot();
        assert_eq!(
            (s.udp_received, s.too_large, s.keepalives),
            (1, 1, 1),
            "{s:?}"
        );
        assert_eq!(s.udp_sent, 2, "{s:?}");
        assert_eq!(s.panics, 0);
    }

    #[tokio::test]
    async fn tcp_framing_keepalive_and_replies_on_the_same_connection() {
        let (addr, shared, _stop) = start(test_cfg()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        // Two messages in one write, then one split in three writes with a keep-alive first.
        let two = format!("{}{}", register("TCP", me, 1), register("TCP", me, 2));
        c.write_all(two.as_bytes()).await.unwrap();
        let got = read_some(&mut c, b"reg-2", Duration::from_secs(2)).await;
        assert_eq!(
            count(&got, b"SIP/2.0 200 "),
            2,
            "{}",
            String::from_utf8_lossy(&got)
        );
        c.write_all(b"\r\n\r\n").await.unwrap();
        let pong = read_some(&mut c, b"\r\n", Duration::from_secs(2)).await;
        assert_eq!(pong, b"\r\n");
        let third = register("TCP", me, 3);
        let (a, rest) = third.as_bytes().split_at(10);
        let (b, d) = rest.split_at(rest.len() - 3);
        for part in [a, b, d] {
            c.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = read_some(&mut c, b"reg-3", Duration::from_secs(2)).await;
        assert!(
            got.starts_with(b"SIP/2.0 200 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
        let s = shared.snapshot();
        assert_eq!(
            (s.tcp_received, s.tcp_accepted, s.tcp_open),
            (3, 1, 1),
            "{s:?}"
        );

        // No Content-Length on a stream: 400 saying so, then the connection is closed.
        let broken = register("TCP", me, 4).replace("Content-Length: 0\r\n", "");
        c.write_all(broken.as_bytes()).await.unwrap();
        let got = read_some(&mut c, b"\r\n\r\n", Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request - Missing Content-Length"),
            "{text}"
        );
        let mut rest = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(2), c.read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = shared.snapshot();
        assert_eq!((s.framing_errors, s.tcp_open), (1, 0), "{s:?}");
    }

    #[tokio::test]
    async fn idle_tcp_connections_are_closed() {
        let (addr, shared, _stop) = start(SipServerConfig {
            tcp_idle: Duration::from_millis(200),
            ..test_cfg()
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = shared.snapshot();
        assert_eq!((s.tcp_idle_closed, s.tcp_open), (1, 0), "{s:?}");
    }

    #[tokio::test]
    async fn huge_tcp_message_is_refused() {
        let (addr, shared, _stop) = start(SipServerConfig {
            max_message: 4096,
            ..test_cfg()
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        let big = register("TCP", me, 1).replace(
            "Content-Length: 0\r\n",
            &format!("X-Pad: {}\r\nContent-Length: 0\r\n", "p".repeat(5000)),
        );
        c.write_all(big.as_bytes()).await.unwrap();
        let got = read_some(&mut c, b"\r\n\r\n", Duration::from_secs(2)).await;
        assert!(
            got.starts_with(b"SIP/2.0 513 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(shared.snapshot().too_large, 1);
    }

    #[test]
    fn keepalive_and_blank_line() {
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\r\nX"));
        assert_eq!(find_blank_line(b"ab\r\n\r\ncd", 0), Some(2));
        assert_eq!(find_blank_line(b"ab\r\n\r\ncd", 3), None);
        assert_eq!(find_blank_line(b"ab", 10), None);
    }

    #[test]
    fn transport_rejects_only_requests_with_via() {
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\n\r\n";
        let r = transport_reject(req, ParseError::MissingContentLength).unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request - Missing Content-Length"),
            "{text}"
        );
        assert!(text.contains("Via: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKx\r\n"));
        let r = transport_reject(req, ParseError::TooLarge).unwrap();
        assert!(r.starts_with(b"SIP/2.0 513 "));
        assert!(
            transport_reject(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", ParseError::TooLarge).is_none()
        );
        assert!(transport_reject(b"garbage\r\n\r\n", ParseError::BadRequestLine).is_none());
        assert!(transport_reject(b"", ParseError::Empty).is_none());
    }
}
