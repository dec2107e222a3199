//! The built-in SIP proxy's transport (tokio): UDP and TCP on one address (`--listen-sip`), or
//! on every interface address when bridging networks (`also_listen`; a UDP message then leaves
//! from the socket on its destination's network, `sip::networks`),
//! TLS on another (`--listen-sips`, see `tls`), feeding the sans-IO [`Proxy`] and carrying out the [`Transmit`]s it returns. Media steps
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
//!   transport and peer address; a TCP or TLS [`Transmit`] to that address is written on it, so responses go back
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
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Notify};

use super::stopped;
use crate::cidr::{any_contains, Cidr};
use crate::relayset::{HealthConfig, RelayMedia, RelaySet, RelaySnapshot, RelaySpec};
use crate::session::backend::MediaBackend;
use crate::session::manager::SessionManager;
use crate::session::sip_media::SharedMedia;
use crate::sip::auth::{AuthHook, AuthStats, Authenticator, UserFile};
use crate::sip::flood::{FloodGuard, FloodStats, Verdict};
use crate::sip::networks::SipNetworks;
use crate::sip::parse::{frame, Frame, ParseError, MAX_MESSAGE_LEN};
use crate::sip::proxy::{Proxy, ProxyConfig, ProxyStats};
use crate::sip::transport::{Transmit, Transport};
use crate::store::locations::{LocationPersistence, StoredLocations};
use crate::store::presence::PresencePersistence;
use crate::time::{self, Nanos};

mod handover;
mod persist;
mod relay;
mod remote;
mod tcp;
mod tls;
mod udp;
pub use handover::{AdoptedSip, SipFds};
#[cfg(test)]
use tcp::find_blank_line;
use tcp::{accept_loop, send_stream};
pub use tls::TlsSettings;
use tls::TlsState;
#[cfg(test)]
use udp::is_keepalive;
use udp::{transport_reject, udp_loop};

/// SO_RCVBUF asked for on the SIP UDP socket.
const UDP_RCVBUF: usize = 4 << 20;

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
    /// A TCP/TLS connection holding part of a message for this long is closed.
    pub message_timeout: Duration,
    /// TLS (`--listen-sips`); `None`: no TLS.
    pub tls: Option<TlsSettings>,
    /// Most TCP connections at once (accepted and opened); more are refused.
    pub max_tcp_connections: usize,
    /// Messages queued per TCP connection before new ones are dropped.
    pub tcp_queue: usize,
    pub tcp_connect_timeout: Duration,
    /// Longest sleep of the timer task (timers are also checked this often).
    pub max_timer_sleep: Duration,
    /// Registrations go to the state store and start from what it held (`--redis`).
    pub locations: Option<LocationPersistence>,
    /// `--media-relay`: anchor media on these relays; empty: the embedded relay alone.
    pub media_relays: Vec<RelaySpec>,
    /// Presence state and stored messages go to this store and start from what it held.
    pub presence_store: Option<PresencePersistence>,
    /// More addresses served with UDP and TCP on the port `listen` got (the other
    /// interfaces' addresses when bridging networks, `sip::networks`).
    pub also_listen: Vec<std::net::IpAddr>,
}

impl Default for SipServerConfig {
    fn default() -> Self {
        SipServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            max_message: MAX_MESSAGE_LEN,
            tcp_idle: Duration::from_secs(300),
            message_timeout: Duration::from_secs(10),
            tls: None,
            max_tcp_connections: 4096,
            tcp_queue: 256,
            tcp_connect_timeout: Duration::from_secs(5),
            max_timer_sleep: Duration::from_secs(1),
            locations: None,
            media_relays: Vec::new(),
            presence_store: None,
            also_listen: Vec::new(),
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
    /// UDP datagrams dropped unanswered because the input queue was full (oldest new
    /// requests first, see `sip::admission::InputQueue`).
    pub input_dropped: AtomicU64,
    /// TLS messages framed and handed to the proxy.
    pub tls_received: AtomicU64,
    pub tls_sent: AtomicU64,
    /// TLS connections accepted (the handshake may still fail).
    pub tls_accepted: AtomicU64,
    /// Outgoing TLS connections opened (handshake done).
    pub tls_connected: AtomicU64,
    /// TLS handshakes that failed or timed out (accepted and opened).
    pub tls_handshake_failed: AtomicU64,
    /// Connections closed because a message did not complete within `message_timeout`.
    pub slow_closed: AtomicU64,
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
    pub input_dropped: u64,
    pub tls_received: u64,
    pub tls_sent: u64,
    pub tls_accepted: u64,
    pub tls_connected: u64,
    pub tls_handshake_failed: u64,
    pub slow_closed: u64,
    /// TCP connections open now.
    pub tcp_open: u64,
    /// TLS connections open now (handshaking included).
    pub tls_open: u64,
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
    proxy: Proxy<StoredLocations>,
    media: RelayMedia<B>,
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
    /// The UDP sockets on `also_listen`, by the address each is bound to.
    udp_more: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Which network a destination is on: UDP leaves from our address there.
    networks: SipNetworks,
    /// Open TCP and TLS connections by transport and peer address.
    conns: Mutex<HashMap<(Transport, SocketAddr), Conn>>,
    /// Certificates and keys (`None` without `--listen-sips`).
    tls: Option<TlsState>,
    next_conn: AtomicU64,
    /// The deadline the timer task sleeps toward (u64::MAX: none).
    armed: AtomicU64,
    wake: Notify,
    cfg: SipServerConfig,
    pub stats: SipStats,
    /// The relay set (`--media-relay`).
    relays: Option<relay::RelayIo>,
    /// What was made outside the server's tasks (other fronts' changes), for the timer
    /// task to send.
    outbox: Mutex<Vec<Transmit>>,
    /// Subscriptions to the other fronts' changes so far (`remote`).
    resubscribed: AtomicU64,
}

impl<B: MediaBackend + 'static> SipShared<B> {
    pub fn snapshot(&self) -> SipStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (tls_open, tcp_open) = {
            let conns = lock(&self.conns);
            let tls = conns.keys().filter(|(t, _)| *t == Transport::Tls).count() as u64;
            (tls, conns.len() as u64 - tls)
        };
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
            input_dropped: l(&s.input_dropped),
            tls_received: l(&s.tls_received),
            tls_sent: l(&s.tls_sent),
            tls_accepted: l(&s.tls_accepted),
            tls_connected: l(&s.tls_connected),
            tls_handshake_failed: l(&s.tls_handshake_failed),
            slow_closed: l(&s.slow_closed),
            tcp_open,
            tls_open,
        }
    }

    /// The relay set's figures (empty without `--media-relay`).
    pub fn relay_stats(&self) -> Vec<RelaySnapshot> {
        self.relays
            .as_ref()
            .map(|r| crate::server::relays::snapshot(&r.set))
            .unwrap_or_default()
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

    /// Overload control: the UDP loop says whether new requests wait too long (see `udp_loop`).
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
        let mut jobs = Vec::new();
        let out = self.with_proxy("incoming", |core| {
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
            jobs = core.media.take_jobs();
            out
        });
        self.send_jobs(jobs, data, src, transport);
        out
    }

    /// A message handed in again once its relays answered: it was admitted and
    /// authenticated the first time (its nonce count is spent), so neither is done again.
    fn replay(&self, data: &[u8], src: SocketAddr, transport: Transport) -> Vec<Transmit> {
        let now = time::now_ns();
        let mut jobs = Vec::new();
        let out = self.with_proxy("replay", |core| {
            let out = core
                .proxy
                .handle_incoming(data, src, transport, now, &mut core.media);
            jobs = core.media.take_jobs();
            out
        });
        self.send_jobs(jobs, data, src, transport);
        out
    }

    fn send_jobs(
        &self,
        jobs: Vec<crate::relayset::Job>,
        data: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) {
        if jobs.is_empty() {
            return;
        }
        if let Some(io) = &self.relays {
            let parked = relay::Parked {
                bytes: data.to_vec(),
                src,
                transport,
            };
            io.spawn_jobs(jobs, Some(parked));
        }
    }

    fn timeout(&self, now: Nanos) -> Vec<Transmit> {
        self.with_media("timeout", |proxy, media| proxy.handle_timeout(now, media))
    }

    /// Runs `f` on the proxy and its media hook (not for a message: nothing is parked), and
    /// hands the relay-set requests it made to the relay I/O.
    fn with_media(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Proxy<StoredLocations>, &mut RelayMedia<B>) -> Vec<Transmit>,
    ) -> Vec<Transmit> {
        let mut jobs = Vec::new();
        let out = self.with_proxy(what, |core| {
            let out = f(&mut core.proxy, &mut core.media);
            jobs = core.media.take_jobs();
            out
        });
        if let (false, Some(io)) = (jobs.is_empty(), &self.relays) {
            io.spawn_jobs(jobs, None);
        }
        out
    }
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
            Transport::Tcp | Transport::Tls => send_stream(shared, t.transport, t.to, t.bytes),
        }
    }
}

/// The UDP socket a datagram to `to` leaves from: when bridging networks, the one on our
/// address in `to`'s network (the address the proxy wrote into Via and Record-Route).
fn udp_toward<B: MediaBackend + 'static>(shared: &SipShared<B>, to: SocketAddr) -> &UdpSocket {
    let Some(ours) = shared.networks.address_for(to.ip()).map(|a| a.local) else {
        return &shared.udp;
    };
    shared
        .udp_more
        .iter()
        .find(|(at, _)| *at == ours)
        .map_or(&shared.udp, |(_, u)| u)
}

async fn send_udp<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    to: SocketAddr,
    bytes: &[u8],
) {
    let udp = udp_toward(shared, to);
    let r = match udp.try_send_to(bytes, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => udp.send_to(bytes, to).await,
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

/// A bound SIP server, not yet running.
pub struct SipServer<B: MediaBackend> {
    tcp: TcpListener,
    /// The TCP listeners on `also_listen`.
    tcp_more: Vec<TcpListener>,
    /// The TLS listener (`--listen-sips`).
    tls: Option<TcpListener>,
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
        proxy_cfg: ProxyConfig,
        manager: Arc<Mutex<SessionManager<B>>>,
    ) -> anyhow::Result<SipServer<B>> {
        Self::bind_or_adopt(cfg, proxy_cfg, manager, None).await
    }

    /// [`SipServer::bind`], or with `adopted` (UDP, TCP and perhaps TLS bound before:
    /// handed over by a relay that was upgraded) serving those instead of binding.
    pub async fn bind_or_adopt(
        cfg: SipServerConfig,
        mut proxy_cfg: ProxyConfig,
        manager: Arc<Mutex<SessionManager<B>>>,
        adopted: Option<AdoptedSip>,
    ) -> anyhow::Result<SipServer<B>> {
        let (udp, tcp, adopted_tls) = match adopted {
            Some(a) => {
                let (udp, tcp) = a.into_tokio()?;
                (udp, tcp.0, tcp.1)
            }
            None => {
                let (udp, tcp) = bind_both(cfg.listen).await?;
                (udp, tcp, None)
            }
        };
        let local = udp.local_addr()?;
        if proxy_cfg.local.port() == 0 {
            proxy_cfg.local.set_port(local.port());
        }
        proxy_cfg.networks.set_port(local.port());
        let (mut udp_more, mut tcp_more) = (Vec::new(), Vec::new());
        for ip in &cfg.also_listen {
            let (u, t) = bind_both(SocketAddr::new(*ip, local.port())).await?;
            udp_more.push((u.local_addr()?, Arc::new(u)));
            tcp_more.push(t);
        }
        let networks = proxy_cfg.networks.clone();
        let mut cfg = cfg;
        if let (Some(_), Some(p)) = (&cfg.locations, cfg.presence_store.as_mut()) {
            // Shared with other fronts: presence records are kept under this front's name.
            p.front = Some(format!("sip:{}", proxy_cfg.local));
        }
        let locations = match cfg.locations.clone() {
            Some(mut p) => {
                // The path of the bindings made here, for the other fronts.
                p.front = Some(format!("sip:{}", proxy_cfg.local));
                let (store, bad) = StoredLocations::new(p, time::now_ns());
                tracing::info!(
                    aors = crate::sip::registrar::LocationStore::len(&store),
                    unreadable = bad,
                    "registrations restored from the state store"
                );
                store
            }
            None => StoredLocations::memory(),
        };
        let (tls_listener, tls) = match &cfg.tls {
            Some(t) => {
                let state = TlsState::load(t)?;
                let l = match adopted_tls {
                    Some(l) => l,
                    None => TcpListener::bind(t.listen)
                        .await
                        .with_context(|| format!("binding SIP TLS {}", t.listen))?,
                };
                let at = l.local_addr()?;
                // The address written into Via and Record-Route for TLS.
                let mut ours = proxy_cfg.local_tls.unwrap_or(at);
                if ours.port() == 0 {
                    ours.set_port(at.port());
                }
                proxy_cfg.local_tls = Some(ours);
                (Some(l), Some(state))
            }
            None => (None, None),
        };
        let mut proxy = Proxy::new(proxy_cfg, locations);
        if let Some(p) = &cfg.presence_store {
            persist::restore(&mut proxy, p);
        }
        let embedded = SharedMedia::new(manager.clone());
        let (media, relays) = if cfg.media_relays.is_empty() {
            (RelayMedia::embedded(embedded), None)
        } else {
            let set = RelaySet::new(
                cfg.media_relays.clone(),
                HealthConfig::default(),
                time::now_ns(),
            );
            let set = Arc::new(Mutex::new(set));
            lock(&manager).set_relay_set(set.clone());
            let io = relay::RelayIo::start(set.clone());
            (RelayMedia::with_set(Some(embedded), Some(set)), Some(io))
        };
        cfg.max_message = cfg.max_message.clamp(1, MAX_MESSAGE_LEN);
        let shared = Arc::new(SipShared {
            core: Mutex::new(Core {
                proxy,
                media,
                auth: None,
                flood: None,
                flood_exempt: Vec::new(),
            }),
            udp: Arc::new(udp),
            udp_more,
            networks,
            conns: Mutex::new(HashMap::new()),
            tls,
            next_conn: AtomicU64::new(1),
            armed: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            cfg,
            stats: SipStats::default(),
            relays,
            outbox: Mutex::new(Vec::new()),
            resubscribed: AtomicU64::new(0),
        });
        Ok(SipServer {
            tcp,
            tcp_more,
            tls: tls_listener,
            shared,
            local,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The TLS listener's address (`None` without TLS).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn shared(&self) -> Arc<SipShared<B>> {
        self.shared.clone()
    }

    /// Serves until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let SipServer {
            tcp,
            tcp_more,
            tls,
            shared,
            ..
        } = self;
        let timer = tokio::spawn(timer_loop(shared.clone(), shutdown.clone()));
        let health = shared.relays.as_ref().map(relay::RelayIo::start_health);
        let replay = shared
            .relays
            .as_ref()
            .and_then(relay::RelayIo::take_receiver)
            .map(|rx| tokio::spawn(relay::replay_loop(shared.clone(), rx)));
        let flusher = shared
            .cfg
            .presence_store
            .clone()
            .map(|p| tokio::spawn(persist::flush_loop(shared.clone(), p, shutdown.clone())));
        let tcp_task = tokio::spawn(accept_loop(
            tcp,
            shared.clone(),
            shutdown.clone(),
            Transport::Tcp,
        ));
        let mut more: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        for l in tcp_more {
            let t = accept_loop(l, shared.clone(), shutdown.clone(), Transport::Tcp);
            more.push(tokio::spawn(t));
        }
        for (_, u) in shared.udp_more.clone() {
            let sh = shared.clone();
            let stop = shutdown.clone();
            more.push(tokio::spawn(async move {
                if let Err(e) = udp_loop(sh, u, stop, false).await {
                    tracing::warn!(error = format!("{e:#}"), "SIP UDP listener stopped");
                }
            }));
        }
        let tls_task = tls.map(|l| {
            tokio::spawn(accept_loop(
                l,
                shared.clone(),
                shutdown.clone(),
                Transport::Tls,
            ))
        });
        let result = udp_loop(shared.clone(), shared.udp.clone(), shutdown, true).await;
        timer.abort();
        for t in more {
            t.abort();
        }
        if let Some(f) = flusher {
            f.abort();
        }
        if let Some(p) = &shared.cfg.presence_store {
            persist::finish(&shared, p);
        }
        tcp_task.abort();
        for t in [health, replay].into_iter().flatten() {
            t.abort();
        }
        if let Some(t) = tls_task {
            t.abort();
        }
        let s = shared.snapshot();
        tracing::info!(
            udp_received = s.udp_received,
            tcp_received = s.tcp_received,
            tls_received = s.tls_received,
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
            _ = shared.wake.notified() => {
                let out = shared.take_outbox();
                dispatch(&shared, out).await;
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let out = shared.timeout(time::now_ns());
        dispatch(&shared, out).await;
    }
}

#[cfg(test)]
mod tests;
