//! The ng control server (tokio): UDP (`--listen-ng`) and optional TCP (`--listen-tcp-ng`),
//! both feeding [`crate::control::handler`].
//!
//! - **Framing.** UDP: one datagram = `cookie SP body`; a datagram without a cookie is dropped
//!   without reply (counted), as rtpengine does. TCP: the same `cookie SP bencode` repeated on
//!   the stream; bencode is self-delimiting, so a message ends where its dictionary ends
//!   (whitespace between messages is skipped). A TCP body that is not bencode, or a message
//!   larger than [`MAX_TCP_MESSAGE`], gets an error reply and the connection is closed (the
//!   stream cannot be re-synchronised).
//! - **Retransmissions.** Replies are cached by cookie (like rtpengine: the cookie only, not
//!   the source address) in two generations rotated every `cache_ttl` (30 s), so a repeat
//!   within 30-60 s gets the byte-identical reply and the command is not executed twice. Each
//!   generation holds at most half of `cache_max_entries`; a full one rotates early (memory
//!   stays bounded under a flood, at the cost of a shorter memory). A repeat that arrives while
//!   the original is still being handled is dropped: the client retransmits again and then
//!   hits the cache (rtpengine blocks instead; dropping keeps our loop from ever waiting).
//! - **Never stalls, never panics.** The manager's mutex is held for one command only, never
//!   across an `.await`; the backend's calls are non-blocking by contract. A panic inside the
//!   handler is caught and answered with an error (the poisoned lock is recovered), so one bad
//!   request cannot take the control plane down.
//! - A tokio task calls [`SessionManager::tick`] every `tick_interval` and drains backend
//!   events; closed calls are logged with their final counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::stopped;
use crate::cidr::{any_contains, Cidr};
use crate::control::bencode::{self, DecodeError};
use crate::control::handler;
use crate::control::ng::{self, BodyFormat};
use crate::control::reply;
use crate::metrics::RequestMetrics;
use crate::session::backend::MediaBackend;
use crate::session::manager::SessionManager;
use crate::time::{self, Nanos, NANOS_PER_SEC};

/// Largest message accepted on a TCP connection (cookie + body).
pub const MAX_TCP_MESSAGE: usize = 256 * 1024;
/// Longest cookie accepted on TCP before a space must appear.
pub const MAX_COOKIE: usize = 256;

#[derive(Clone, Debug)]
pub struct NgServerConfig {
    pub listen_udp: SocketAddr,
    pub listen_tcp: Option<SocketAddr>,
    /// Age of one reply-cache generation (a reply is remembered for 1-2 times this).
    pub cache_ttl: Duration,
    /// Most cached replies (both generations together).
    pub cache_max_entries: usize,
    pub tick_interval: Duration,
    /// Clients allowed (`--ng-allow`); empty: anyone. ng has no authentication of its own.
    pub allow: Vec<Cidr>,
}

impl Default for NgServerConfig {
    fn default() -> Self {
        NgServerConfig {
            listen_udp: SocketAddr::from(([127, 0, 0, 1], 2223)),
            listen_tcp: None,
            cache_ttl: Duration::from_secs(30),
            cache_max_entries: 100_000,
            // Short ticks, each sweeping a slice of the calls (see SWEEP_PER_TICK).
            tick_interval: Duration::from_millis(10),
            allow: Vec::new(),
        }
    }
}

/// Counters of the ng server (read with [`NgStats::snapshot`]).
#[derive(Debug, Default)]
pub struct NgStats {
    pub received: AtomicU64,
    pub replied: AtomicU64,
    /// Answered from the reply cache.
    pub duplicates: AtomicU64,
    /// Repeats dropped while the original was in progress.
    pub in_flight_drops: AtomicU64,
    /// Datagrams without a cookie (dropped, no reply).
    pub no_cookie: AtomicU64,
    /// Replies with `result: error`, malformed input included.
    pub errors: AtomicU64,
    /// Parser and handler panics caught (should stay 0).
    pub panics: AtomicU64,
    pub tcp_connections: AtomicU64,
    /// Datagrams and connections from outside `--ng-allow`, dropped unanswered.
    pub not_allowed: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NgStatsSnapshot {
    pub received: u64,
    pub replied: u64,
    pub duplicates: u64,
    pub in_flight_drops: u64,
    pub no_cookie: u64,
    pub errors: u64,
    pub panics: u64,
    pub tcp_connections: u64,
    pub not_allowed: u64,
}

impl NgStats {
    pub fn snapshot(&self) -> NgStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NgStatsSnapshot {
            received: l(&self.received),
            replied: l(&self.replied),
            duplicates: l(&self.duplicates),
            in_flight_drops: l(&self.in_flight_drops),
            no_cookie: l(&self.no_cookie),
            errors: l(&self.errors),
            panics: l(&self.panics),
            tcp_connections: l(&self.tcp_connections),
            not_allowed: l(&self.not_allowed),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight,
    Done(Arc<[u8]>),
}

/// What the cache says about a cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheLookup {
    /// Seen and answered: send this again.
    Hit(Arc<[u8]>),
    /// Seen, still being handled.
    InFlight,
    /// New: reserved; call [`ReplyCache::complete`] with the reply.
    Reserved,
}

/// Two-generation reply cache keyed by cookie (pure; time passed in).
#[derive(Debug)]
pub struct ReplyCache {
    current: HashMap<Box<[u8]>, Entry>,
    previous: HashMap<Box<[u8]>, Entry>,
    rotated_at: Nanos,
    ttl_ns: Nanos,
    max_per_generation: usize,
}

impl ReplyCache {
    pub fn new(ttl: Duration, max_entries: usize, now: Nanos) -> ReplyCache {
        ReplyCache {
            current: HashMap::new(),
            previous: HashMap::new(),
            rotated_at: now,
            ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX).max(1),
            max_per_generation: (max_entries / 2).max(1),
        }
    }

    fn rotate(&mut self, now: Nanos) {
        self.previous = std::mem::take(&mut self.current);
        self.rotated_at = now;
    }

    fn maybe_rotate(&mut self, now: Nanos) {
        let age = now.saturating_sub(self.rotated_at);
        if age >= self.ttl_ns.saturating_mul(2) {
            // Two periods without traffic: the previous generation is stale too.
            self.previous.clear();
            self.current.clear();
            self.rotated_at = now;
        } else if age >= self.ttl_ns {
            // Keep generation boundaries on the ttl grid, so an entry lives at most 2 ttl.
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at = self.rotated_at.saturating_add(self.ttl_ns);
        }
    }

    pub fn lookup_or_reserve(&mut self, cookie: &[u8], now: Nanos) -> CacheLookup {
        self.maybe_rotate(now);
        let found = self
            .current
            .get(cookie)
            .or_else(|| self.previous.get(cookie));
        match found {
            Some(Entry::Done(r)) => CacheLookup::Hit(r.clone()),
            Some(Entry::InFlight) => CacheLookup::InFlight,
            None => {
                if self.current.len() >= self.max_per_generation {
                    self.rotate(now);
                }
                self.current.insert(cookie.into(), Entry::InFlight);
                CacheLookup::Reserved
            }
        }
    }

    /// Stores the reply for a reserved cookie.
    pub fn complete(&mut self, cookie: &[u8], reply: Arc<[u8]>) {
        let done = Entry::Done(reply);
        if let Some(e) = self.previous.get_mut(cookie) {
            // Rotated while handling: keep it where it is.
            *e = done;
        } else {
            if self.current.len() >= self.max_per_generation && !self.current.contains_key(cookie) {
                return;
            }
            self.current.insert(cookie.into(), done);
        }
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// State shared by the server's tasks.
pub struct NgShared<B: MediaBackend> {
    pub manager: Arc<Mutex<SessionManager<B>>>,
    cache: Mutex<ReplyCache>,
    allow: Vec<Cidr>,
    pub stats: NgStats,
    /// Per-command counts and latencies, for `/metrics`.
    pub requests: RequestMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was caught and answered; the state is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B: MediaBackend> NgShared<B> {
    pub fn new(manager: Arc<Mutex<SessionManager<B>>>, cfg: &NgServerConfig) -> Self {
        NgShared {
            manager,
            cache: Mutex::new(ReplyCache::new(
                cfg.cache_ttl,
                cfg.cache_max_entries,
                time::now_ns(),
            )),
            allow: cfg.allow.clone(),
            stats: NgStats::default(),
            requests: RequestMetrics::default(),
        }
    }

    /// Whether `peer` may talk ng (counting those that may not).
    pub fn allowed(&self, peer: SocketAddr) -> bool {
        if self.allow.is_empty() || any_contains(&self.allow, peer.ip()) {
            return true;
        }
        bump(&self.stats.not_allowed);
        false
    }

    /// One framed message from a stream (TCP: no size limit on the reply): the reply bytes
    /// to send, or `None` (no reply due).
    pub fn process(&self, cookie: &[u8], body: &[u8], now: Nanos) -> Option<Arc<[u8]>> {
        self.process_from(None, cookie, body, now, usize::MAX)
    }

    /// [`NgShared::process`] for a message from `source` (counted per proxy in `statistics`),
    /// with the reply held to `max_reply` bytes (one UDP datagram): `list` is cut to what
    /// fits, with a warning; other oversized replies become errors.
    pub fn process_from(
        &self,
        source: Option<std::net::IpAddr>,
        cookie: &[u8],
        body: &[u8],
        now: Nanos,
        max_reply: usize,
    ) -> Option<Arc<[u8]>> {
        bump(&self.stats.received);
        match lock(&self.cache).lookup_or_reserve(cookie, now) {
            CacheLookup::Hit(r) => {
                bump(&self.stats.duplicates);
                bump(&self.stats.replied);
                return Some(r);
            }
            CacheLookup::InFlight => {
                bump(&self.stats.in_flight_drops);
                return None;
            }
            CacheLookup::Reserved => {}
        }
        // The parser runs under the same guard as the handler: a panic in either is an
        // error reply and a count, never a lost control thread.
        let parsed = catch_unwind(AssertUnwindSafe(|| parse_guarded(body)));
        let (reply, fmt) = match parsed {
            Err(_) => {
                bump(&self.stats.panics);
                tracing::error!("ng request parser panicked");
                let fmt = if body.first() == Some(&b'{') {
                    BodyFormat::Json
                } else {
                    BodyFormat::Bencode
                };
                (reply::error("Internal error"), fmt)
            }
            Ok(Err((e, fmt))) => (reply::from_error(&e), fmt),
            Ok(Ok((req, fmt))) => {
                let command = req.command;
                let started = time::now_ns();
                let handled = catch_unwind(AssertUnwindSafe(|| {
                    let mut m = lock(&self.manager);
                    let r = handler::handle(&mut m, req, now);
                    let error = r.get("result").and_then(|v| v.as_str()) == Some("error");
                    let took = time::now_ns().saturating_sub(now);
                    m.note_command(source, command.as_str(), took, error);
                    r
                }));
                self.requests
                    .record(command.as_str(), time::now_ns().saturating_sub(started));
                match handled {
                    Ok(r) => (r, fmt),
                    Err(_) => {
                        bump(&self.stats.panics);
                        tracing::error!(command = command.as_str(), "ng handler panicked");
                        (reply::error("Internal error"), fmt)
                    }
                }
            }
        };
        if reply.get("result").and_then(|r| r.as_str()) == Some("error") {
            bump(&self.stats.errors);
        }
        let framed: Arc<[u8]> = ng::frame_reply_within(cookie, fmt, &reply, max_reply).into();
        lock(&self.cache).complete(cookie, framed.clone());
        bump(&self.stats.replied);
        Some(framed)
    }

    /// One UDP datagram.
    pub fn process_datagram(&self, dgram: &[u8], now: Nanos) -> Option<Arc<[u8]>> {
        self.process_datagram_from(None, dgram, now)
    }

    /// [`NgShared::process_datagram`] for a datagram from `source`.
    pub fn process_datagram_from(
        &self,
        source: Option<std::net::IpAddr>,
        dgram: &[u8],
        now: Nanos,
    ) -> Option<Arc<[u8]>> {
        match ng::split_datagram(dgram) {
            Some((cookie, body)) => self.process_from(source, cookie, body, now, ng::MAX_UDP_REPLY),
            None => {
                bump(&self.stats.no_cookie);
                None
            }
        }
    }
}

/// A bound ng server, not yet running.
pub struct NgServer<B: MediaBackend> {
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    shared: Arc<NgShared<B>>,
    tick_interval: Duration,
}

impl<B: MediaBackend + 'static> NgServer<B> {
    pub async fn bind(
        cfg: &NgServerConfig,
        manager: Arc<Mutex<SessionManager<B>>>,
    ) -> anyhow::Result<NgServer<B>> {
        let udp = UdpSocket::bind(cfg.listen_udp)
            .await
            .with_context(|| format!("binding ng UDP {}", cfg.listen_udp))?;
        let tcp = match cfg.listen_tcp {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding ng TCP {a}"))?,
            ),
            None => None,
        };
        Ok(NgServer {
            udp,
            tcp,
            shared: Arc::new(NgShared::new(manager, cfg)),
            tick_interval: cfg.tick_interval,
        })
    }

    /// Serves on sockets bound before (handed over by a relay that was upgraded): what is
    /// queued on them is answered here. Needs a tokio runtime.
    pub fn from_sockets(
        cfg: &NgServerConfig,
        manager: Arc<Mutex<SessionManager<B>>>,
        udp: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
    ) -> anyhow::Result<NgServer<B>> {
        let shared = Arc::new(NgShared::new(manager, cfg));
        Self::resume(shared, udp, tcp, cfg.tick_interval)
    }

    /// Serves again with the state of a server that was stopped (a takeover that failed),
    /// on copies of its sockets. Needs a tokio runtime.
    pub fn resume(
        shared: Arc<NgShared<B>>,
        udp: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
        tick_interval: Duration,
    ) -> anyhow::Result<NgServer<B>> {
        udp.set_nonblocking(true)?;
        let tcp = match tcp {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l)?)
            }
            None => None,
        };
        Ok(NgServer {
            udp: UdpSocket::from_std(udp)?,
            tcp,
            shared,
            tick_interval,
        })
    }

    /// Copies of the UDP socket and TCP listener, for a takeover.
    pub fn handover_sockets(
        &self,
    ) -> std::io::Result<(std::os::fd::OwnedFd, Option<std::os::fd::OwnedFd>)> {
        use std::os::fd::AsFd;
        let udp = self.udp.as_fd().try_clone_to_owned()?;
        let tcp = match &self.tcp {
            Some(l) => Some(l.as_fd().try_clone_to_owned()?),
            None => None,
        };
        Ok((udp, tcp))
    }

    pub fn local_udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn local_tcp_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.tcp.as_ref().map(TcpListener::local_addr)
    }

    pub fn shared(&self) -> Arc<NgShared<B>> {
        self.shared.clone()
    }

    /// Serves until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let NgServer {
            udp,
            tcp,
            shared,
            tick_interval,
        } = self;
        let ticker = tokio::spawn(tick_loop(shared.clone(), tick_interval, shutdown.clone()));
        let tcp_task = tcp.map(|l| tokio::spawn(tcp_loop(l, shared.clone(), shutdown.clone())));
        let result = udp_loop(udp, shared, shutdown).await;
        ticker.abort();
        if let Some(t) = tcp_task {
            t.abort();
        }
        result
    }
}

/// Binds and serves the ng protocol until `shutdown` turns true.
pub async fn serve_ng<B: MediaBackend + 'static>(
    config: NgServerConfig,
    manager: Arc<Mutex<SessionManager<B>>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let server = NgServer::bind(&config, manager).await?;
    tracing::info!(udp = %config.listen_udp, tcp = ?config.listen_tcp, "ng control listening");
    server.run(shutdown).await
}

pub async fn udp_loop<B: MediaBackend + 'static>(
    sock: UdpSocket,
    shared: Arc<NgShared<B>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65_536];
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let (n, peer) = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep going.
                    tracing::debug!(error = %e, "ng UDP receive error");
                    continue;
                }
            },
        };
        let Some(dgram) = buf.get(..n) else {
            continue;
        };
        if !shared.allowed(peer) {
            continue;
        }
        if let Some(reply) = shared.process_datagram_from(Some(peer.ip()), dgram, time::now_ns()) {
            if let Err(e) = sock.send_to(&reply, peer).await {
                tracing::debug!(%peer, error = %e, "ng UDP send failed");
            }
        }
    }
}

pub async fn tcp_loop<B: MediaBackend + 'static>(
    listener: TcpListener,
    shared: Arc<NgShared<B>>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let Some((stream, peer)) = super::accept_or_stop(&listener, &mut stop, "ng").await else {
            return;
        };
        if !shared.allowed(peer) {
            continue;
        }
        bump(&shared.stats.tcp_connections);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stop = stopped(shutdown);
            tokio::select! {
                _ = stop => {}
                r = tcp_connection(stream, shared) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "ng TCP connection ended");
                    }
                }
            }
        });
    }
}

/// What the TCP framer found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum TcpFrame {
    /// Need more bytes.
    Incomplete,
    /// A message: cookie range, body range, total bytes consumed.
    Message {
        cookie: std::ops::Range<usize>,
        body: std::ops::Range<usize>,
        consumed: usize,
    },
    /// Cannot be framed; the cookie (if any) for an error reply.
    Invalid {
        cookie: Option<std::ops::Range<usize>>,
    },
}

/// Frames `cookie SP bencode` at the start of `buf` (leading whitespace skipped).
pub fn tcp_frame(buf: &[u8]) -> TcpFrame {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let Some(sp) = rest.iter().position(|&b| b == b' ') else {
        return if rest.len() > MAX_COOKIE {
            TcpFrame::Invalid { cookie: None }
        } else {
            TcpFrame::Incomplete
        };
    };
    if sp > MAX_COOKIE {
        return TcpFrame::Invalid { cookie: None };
    }
    let cookie = start..start + sp;
    let body_start = start + sp + 1;
    let body = &buf[body_start..];
    match body.first() {
        None => return TcpFrame::Incomplete,
        Some(b'd') => {}
        Some(_) => {
            return TcpFrame::Invalid {
                cookie: Some(cookie),
            }
        }
    }
    match bencode::decode_prefix(body) {
        Ok((_, left)) => {
            let len = body.len() - left.len();
            TcpFrame::Message {
                cookie,
                body: body_start..body_start + len,
                consumed: body_start + len,
            }
        }
        Err(DecodeError::UnexpectedEnd) => TcpFrame::Incomplete,
        Err(_) => TcpFrame::Invalid {
            cookie: Some(cookie),
        },
    }
}

async fn tcp_connection<B: MediaBackend + 'static>(
    mut stream: TcpStream,
    shared: Arc<NgShared<B>>,
) -> anyhow::Result<()> {
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Handle every complete message in the buffer.
        loop {
            match tcp_frame(&buf) {
                TcpFrame::Incomplete => break,
                TcpFrame::Message {
                    cookie,
                    body,
                    consumed,
                } => {
                    let reply = match (buf.get(cookie), buf.get(body)) {
                        (Some(c), Some(b)) => {
                            shared.process_from(peer, c, b, time::now_ns(), usize::MAX)
                        }
                        _ => None,
                    };
                    if let Some(r) = reply {
                        stream.write_all(&r).await?;
                    }
                    buf.drain(..consumed.min(buf.len()));
                }
                TcpFrame::Invalid { cookie } => {
                    if let Some(c) = cookie.and_then(|c| buf.get(c)) {
                        bump(&shared.stats.errors);
                        let r = ng::frame_reply(
                            c,
                            BodyFormat::Bencode,
                            &reply::from_error(&ng::NgError::InvalidFormat),
                        );
                        stream.write_all(&r).await?;
                    }
                    return Ok(());
                }
            }
        }
        if buf.len() > MAX_TCP_MESSAGE {
            // What is left is one incomplete message, already too large.
            let start = buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(0);
            let cookie = buf
                .get(start..)
                .and_then(|r| r.iter().position(|&b| b == b' '))
                .and_then(|sp| buf.get(start..start + sp));
            if let Some(c) = cookie.filter(|c| !c.is_empty() && c.len() <= MAX_COOKIE) {
                bump(&shared.stats.errors);
                let r = ng::frame_reply(c, BodyFormat::Bencode, &reply::error("Message too large"));
                stream.write_all(&r).await?;
            }
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

async fn tick_loop<B: MediaBackend + 'static>(
    shared: Arc<NgShared<B>>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut iv = tokio::time::interval(interval.max(Duration::from_millis(10)));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = iv.tick() => {}
        }
        let now = time::now_ns();
        let closed = {
            let mut m = lock(&shared.manager);
            let closed = m.tick(now);
            m.drain_events();
            m.flush_changes();
            closed
        };
        for c in closed {
            let t = c.totals;
            tracing::info!(
                call_id = %c.call_id,
                reason = ?c.reason,
                duration_s = c.age_ns / NANOS_PER_SEC,
                rtp_packets = t.rtp.packets,
                rtp_bytes = t.rtp.bytes,
                rtp_errors = t.rtp.errors,
                rtcp_packets = t.rtcp.packets,
                "call closed; final packet stats"
            );
        }
    }
}

/// [`ng::parse_request`], with a panic a unit test can inject (the guard around it is what
/// is tested).
fn parse_guarded(body: &[u8]) -> Result<(ng::NgRequest, BodyFormat), (ng::NgError, BodyFormat)> {
    #[cfg(test)]
    if tests::PANIC_IN_PARSER.with(|p| p.replace(false)) {
        panic!("injected parser panic");
    }
    ng::parse_request(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Set by a test: the next parse on this thread panics.
        pub(super) static PANIC_IN_PARSER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn a_panic_in_the_request_parser_is_an_error_reply_and_a_count() {
        use crate::session::fake::FakeBackend;
        use crate::session::manager::ManagerConfig;
        use crate::session::negotiate::RelayInterface;
        let cfg = ManagerConfig {
            interfaces: vec![RelayInterface::new(
                "lo",
                std::net::Ipv4Addr::LOCALHOST.into(),
            )],
            ..ManagerConfig::default()
        };
        let backend = FakeBackend::new(10_000, 10_099).expect("ports");
        let manager = Arc::new(Mutex::new(SessionManager::new(backend, cfg, 1)));
        let shared = NgShared::new(manager, &NgServerConfig::default());
        PANIC_IN_PARSER.with(|p| p.set(true));
        let reply = shared
            .process(b"c1", b"d7:command4:pinge", 10)
            .expect("a reply");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.contains("result5:error") && text.contains("Internal error"),
            "{text}"
        );
        assert_eq!(shared.stats.snapshot().panics, 1);
        // The next request is served as usual.
        let reply = shared
            .process(b"c2", b"d7:command4:pinge", 11)
            .expect("a reply");
        assert!(String::from_utf8_lossy(&reply).contains("pong"));
    }

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn cache_hits_within_one_to_two_ttls_then_forgets() {
        let mut c = ReplyCache::new(Duration::from_secs(30), 100, 0);
        assert_eq!(c.lookup_or_reserve(b"k1", 0), CacheLookup::Reserved);
        assert_eq!(c.lookup_or_reserve(b"k1", 1), CacheLookup::InFlight);
        c.complete(b"k1", Arc::from(&b"reply"[..]));
        assert_eq!(
            c.lookup_or_reserve(b"k1", 29 * S),
            CacheLookup::Hit(Arc::from(&b"reply"[..]))
        );
        // Rotated at 30 s: still in the previous generation.
        assert!(matches!(
            c.lookup_or_reserve(b"k1", 45 * S),
            CacheLookup::Hit(_)
        ));
        // Rotated again at 60 s: gone.
        assert!(matches!(
            c.lookup_or_reserve(b"zz", 61 * S),
            CacheLookup::Reserved
        ));
        assert_eq!(c.lookup_or_reserve(b"k1", 61 * S), CacheLookup::Reserved);
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = ReplyCache::new(Duration::from_secs(30), 10, 0);
        for i in 0..1000u32 {
            let k = i.to_string();
            assert_eq!(c.lookup_or_reserve(k.as_bytes(), 1), CacheLookup::Reserved);
            c.complete(k.as_bytes(), Arc::from(&b"r"[..]));
            assert!(c.len() <= 10);
        }
        // The newest ones are still there.
        assert!(matches!(
            c.lookup_or_reserve(b"999", 2),
            CacheLookup::Hit(_)
        ));
    }

    #[test]
    fn tcp_framing() {
        assert_eq!(tcp_frame(b""), TcpFrame::Incomplete);
        assert_eq!(tcp_frame(b"abc"), TcpFrame::Incomplete);
        assert_eq!(tcp_frame(b"abc d7:comma"), TcpFrame::Incomplete);
        let two = b"\r\nc1 d7:command4:pinge c2 d7:command4:pinge";
        match tcp_frame(two) {
            TcpFrame::Message {
                cookie,
                body,
                consumed,
            } => {
                assert_eq!(&two[cookie], b"c1");
                assert_eq!(&two[body], b"d7:command4:pinge");
                assert_eq!(
                    tcp_frame(&two[consumed..]),
                    TcpFrame::Message {
                        cookie: 1..3,
                        body: 4..21,
                        consumed: 21
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tcp_frame(b"c1 {\"command\":\"ping\"}"),
            TcpFrame::Invalid { cookie: Some(0..2) }
        );
        assert_eq!(
            tcp_frame(b"c1 di5ee"),
            TcpFrame::Invalid { cookie: Some(0..2) }
        );
        assert_eq!(
            tcp_frame(&[b'x'; MAX_COOKIE + 1]),
            TcpFrame::Invalid { cookie: None }
        );
    }
}
