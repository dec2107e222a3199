//! What the proxy holds: its configuration and counters, the transaction tables and the
//! side tables (NAT contacts, recent 2xx, known AORs), and [`Cx`], the context one call
//! into the proxy (a message or a timer run) hands from handler to handler.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::sip::auth::AuthHook;
use crate::sip::media::{MediaCtx, MediaHook, MediaResult};
use crate::sip::networks::SipNetworks;
use crate::sip::presence::{PresenceConfig, Services};
use crate::sip::registrar::{LocationStore, MemoryStore, Registrar, RegistrarConfig};
use crate::sip::transaction::{ClientId, ClientTx, ServerId, ServerTx, TimerConfig, Timers, TxIds};
use crate::sip::transport::{NextHop, Transmit, Transport};

/// How often housekeeping runs (2xx cache sweep; registrar expiry and NAT sweep every
/// tenth run).
pub(super) const HOUSEKEEPING_NS: u64 = 1_000_000_000;

/// Proxy configuration. Build with [`ProxyConfig::new`] and override fields.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Our listen address, used in Via and Record-Route (must be a concrete address).
    pub local: SocketAddr,
    /// Our TLS listen address (`--listen-sips`), used in Via and Record-Route for what goes
    /// out or comes in over TLS; `None`: no TLS.
    pub local_tls: Option<SocketAddr>,
    /// Served domains (host names or IP literals); the listen address's IP is always one.
    pub domains: Vec<String>,
    /// Where requests for other domains go, and over what transport; `None` refuses them
    /// with 403. A request that must go over TLS (a `sips:` Request-URI, RFC 3261 §26.2) is
    /// refused at once when this is not TLS: it is never downgraded.
    pub outbound: Option<NextHop>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Most contacts per AOR.
    pub max_bindings: usize,
    /// Cap on live (server + client) transactions; beyond it requests get 503.
    pub max_transactions: usize,
    /// Overload control: from this many live transactions on, new INVITEs (not in a
    /// dialog) are refused with 503 + Retry-After before anything else is done for them,
    /// so the rest of the cap serves the calls already admitted (their ACK, BYE, re-INVITE).
    pub invite_high_water: usize,
    /// Seconds in the Retry-After of an overload 503.
    pub overload_retry_after_secs: u32,
    /// Cap on remembered NAT contacts, cached 2xx responses and known AORs (each).
    pub max_table_entries: usize,
    /// How long a Contact learnt from a NATed dialog request/response is remembered.
    pub nat_contact_ttl_ns: u64,
    /// Record-Route dialog-initiating requests (so in-dialog requests come back here).
    pub record_route: bool,
    pub timers: TimerConfig,
    /// Mixed into branch and tag hashes so they are not predictable from outside.
    pub secret: u64,
    /// Serve presence, PUBLISH and store-and-forward MESSAGE for our domains
    /// (`sip::presence`); `None` routes those requests like any other.
    pub presence: Option<PresenceConfig>,
    /// The networks bridged (named interfaces): which one a peer is on, our address on
    /// each, and the interface names media is anchored on. Empty: one network, `local`.
    pub networks: SipNetworks,
}

impl ProxyConfig {
    pub fn new(local: SocketAddr) -> Self {
        ProxyConfig {
            local,
            local_tls: None,
            domains: Vec::new(),
            outbound: None,
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_bindings: 16,
            max_transactions: 100_000,
            invite_high_water: 60_000,
            overload_retry_after_secs: 5,
            max_table_entries: 200_000,
            nat_contact_ttl_ns: 12 * 3600 * 1_000_000_000,
            record_route: true,
            timers: TimerConfig::default(),
            secret: 0x5eed_5eed_5eed_5eed,
            presence: None,
            networks: SipNetworks::default(),
        }
    }
}

/// Counters. `responses_sent[c]` counts responses of class `c` (1..=6) we sent or forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub received: u64,
    pub requests: u64,
    pub responses: u64,
    pub keepalives: u64,
    /// Messages that failed to parse (answered 400 if possible, else dropped).
    pub parse_errors: u64,
    /// Messages discarded: bad responses, stray responses, unroutable ACKs...
    pub dropped: u64,
    /// Requests answered with an error by the validity checks (400, 416, 420, 483...).
    pub rejected: u64,
    pub forwarded_requests: u64,
    pub forwarded_responses: u64,
    /// ACKs of 2xx and 2xx retransmissions forwarded without a transaction.
    pub stateless_forwards: u64,
    /// Request retransmissions answered from (or absorbed by) a server transaction.
    pub retransmissions_absorbed: u64,
    /// Retransmissions we sent (Timers A, E, G).
    pub retransmissions_sent: u64,
    pub responses_sent: [u64; 7],
    pub loops: u64,
    pub too_many_hops: u64,
    /// Client transactions that timed out (Timers B, F, C).
    pub timeouts: u64,
    /// Requests the transport could not deliver (no connection to the next hop), each
    /// answered as a 503 from it (`Proxy::handle_transport_error`).
    pub transport_errors: u64,
    /// Requests answered 430 Flow Failed (RFC 5626 §5.3): the binding was registered with
    /// outbound and its flow (the connection it came over) is gone.
    pub flows_failed: u64,
    pub overload_rejects: u64,
    /// New INVITEs refused by overload control (high-water mark or shedding).
    pub overload_invites_refused: u64,
    /// Finished transactions that lingered T4 instead of 64·T1 (see `Proxy::linger`).
    pub short_lingers: u64,
    pub media_failures: u64,
    /// Messages dropped until a remote media relay answers (handed in again then).
    pub media_parked: u64,
    /// Requests answered 401/407 (a challenge) or 403 by the authentication hook.
    pub auth_challenges: u64,
    pub auth_forbidden: u64,
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub registrations: u64,
}

/// A Contact reached at the address its messages came from (NAT).
#[derive(Clone, Copy, Debug)]
pub(super) struct NatEntry {
    pub(super) source: SocketAddr,
    pub(super) transport: Transport,
    pub(super) expires_at_ns: u64,
}

/// A 2xx to an INVITE as forwarded upstream, for its retransmissions.
#[derive(Clone, Debug)]
pub(super) struct Cached2xx {
    pub(super) bytes: Vec<u8>,
    pub(super) to: SocketAddr,
    pub(super) transport: Transport,
    pub(super) expires_at_ns: u64,
}

/// The sans-IO proxy. See the module docs of [`proxy`](super).
pub struct Proxy<S: LocationStore = MemoryStore> {
    pub(super) cfg: ProxyConfig,
    pub(super) registrar: Registrar<S>,
    pub(super) servers: HashMap<ServerId, ServerTx>,
    pub(super) server_index: HashMap<String, ServerId>,
    pub(super) clients: HashMap<ClientId, ClientTx>,
    pub(super) client_index: HashMap<String, ClientId>,
    pub(super) timers: Timers,
    pub(super) ids: TxIds,
    /// Contact key (see `nat::contact_key`) → where to reach it.
    pub(super) nat: HashMap<String, NatEntry>,
    pub(super) known_aors: HashSet<String>,
    /// `branch|to-tag` of a 2xx → what was sent upstream.
    pub(super) ok_cache: HashMap<String, Cached2xx>,
    pub(super) next_housekeeping: Option<u64>,
    pub(super) ticks: u64,
    pub(super) stats: ProxyStats,
    /// Set by the driver while it cannot keep up (see [`Proxy::set_shedding`]).
    pub(super) shedding: bool,
    /// Server transactions in `servers` that sent their final response (see `working`).
    pub(super) finished_servers: usize,
    /// Client transactions in `clients` whose final response (or timeout) was accounted.
    pub(super) finished_clients: usize,
    /// Presence, publications and stored messages (`services`).
    pub(super) presence: Option<Services>,
    /// TCP/TLS flows the driver said are gone, with when (`flows`).
    pub(super) closed_flows: HashMap<super::flows::FlowKey, u64>,
}

/// What one call into the proxy carries from handler to handler: the time, where the
/// message came from and on what, the media hook, and what is to be sent.
///
/// For a timer run, `src` is our own listen address (it is what the media layer is told as
/// the source of a delete we originate) and `transport` is UDP: nothing that reads the
/// transport of the incoming message runs from a timer.
pub(super) struct Cx<'m> {
    pub(super) now: u64,
    pub(super) src: SocketAddr,
    pub(super) transport: Transport,
    pub(super) media: &'m mut dyn MediaHook,
    /// Digest authentication and authorization (`sip::auth`); `None` serves everyone.
    pub(super) auth: Option<&'m mut dyn AuthHook>,
    pub(super) out: Vec<Transmit>,
}

impl<'m> Cx<'m> {
    /// The context for one message from `src`.
    pub(super) fn message(
        now: u64,
        src: SocketAddr,
        transport: Transport,
        media: &'m mut dyn MediaHook,
    ) -> Self {
        Cx {
            now,
            src,
            transport,
            media,
            auth: None,
            out: Vec::new(),
        }
    }

    /// The context for a timer run at `now` (see the type's docs for `src`).
    pub(super) fn timer(now: u64, local: SocketAddr, media: &'m mut dyn MediaHook) -> Self {
        Self::message(now, local, Transport::Udp, media)
    }

    /// Asks the media layer about `ctx` (the body of the message it concerns).
    pub(super) fn ask_media(&mut self, ctx: &MediaCtx<'_>, body: &[u8]) -> MediaResult {
        self.media.media(ctx, body, self.now)
    }

    /// Whether the media layer can answer `ctx` now (see [`MediaHook::ready`]).
    pub(super) fn media_ready(&mut self, ctx: &MediaCtx<'_>, body: &[u8]) -> bool {
        self.media.ready(ctx, body, self.now)
    }

    /// Queues a request (or an ACK/CANCEL we build) for sending; responses go through
    /// `Proxy::emit`, which counts them.
    pub(super) fn push(&mut self, to: SocketAddr, transport: Transport, bytes: Vec<u8>) {
        self.out.push(Transmit {
            to,
            transport,
            bytes,
        });
    }
}

/// The status code of a response we send, for the counters.
pub(super) fn status_of(bytes: &[u8]) -> Option<u16> {
    let code = bytes.get(8..11)?;
    if !bytes.starts_with(b"SIP/2.0 ") {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

impl<S: LocationStore> Proxy<S> {
    pub fn new(cfg: ProxyConfig, store: S) -> Self {
        let rc = RegistrarConfig {
            default_expires: cfg.default_expires,
            min_expires: cfg.min_expires,
            max_expires: cfg.max_expires,
            max_bindings: cfg.max_bindings,
        };
        let presence = cfg.presence.clone().map(|mut p| {
            p.local = cfg.local;
            p.secret ^= cfg.secret;
            Services::new(p)
        });
        Proxy {
            presence,
            registrar: Registrar::new(rc, store),
            cfg,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            timers: Timers::default(),
            ids: TxIds::default(),
            nat: HashMap::new(),
            known_aors: HashSet::new(),
            ok_cache: HashMap::new(),
            next_housekeeping: None,
            ticks: 0,
            stats: ProxyStats::default(),
            shedding: false,
            finished_servers: 0,
            finished_clients: 0,
            closed_flows: HashMap::new(),
        }
    }

    /// The driver says whether it is falling behind (its input queue is not draining):
    /// while on, new INVITEs are refused with 503 + Retry-After.
    pub fn set_shedding(&mut self, on: bool) {
        self.shedding = on;
    }

    /// Whether new INVITEs are refused now: shedding, the high-water mark of transactions at
    /// work reached, or the reserve of the cap reached (see [`Proxy::in_reserve`]).
    pub(super) fn refusing_invites(&self) -> bool {
        self.shedding || self.working() >= self.cfg.invite_high_water || self.in_reserve()
    }

    /// Whether the live transactions, finished ones included, have reached the last tenth
    /// of the cap. That tenth is kept for the requests of calls already admitted (ACK, BYE,
    /// re-INVITE, their responses): new INVITEs are then refused without a transaction of
    /// their own. At 5,000 calls/s offered with digest auth the finished transactions of
    /// refused and completed calls filled the cap and admitted calls' BYEs got 503.
    pub(super) fn in_reserve(&self) -> bool {
        let cap = self.cfg.max_transactions;
        self.live() >= cap - cap / 10
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// The registrar (and through it the location store).
    pub fn registrar(&self) -> &Registrar<S> {
        &self.registrar
    }

    pub fn registrar_mut(&mut self) -> &mut Registrar<S> {
        &mut self.registrar
    }

    /// The presence agent, compositor and message store, when served.
    pub fn presence(&self) -> Option<&Services> {
        self.presence.as_ref()
    }

    pub fn stats(&self) -> ProxyStats {
        let mut s = self.stats;
        s.server_transactions = self.servers.len();
        s.client_transactions = self.clients.len();
        s
    }

    /// Live (server + client) transactions.
    pub(super) fn live(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// Transactions still at work: live ones less those that are done (server transactions
    /// that sent their final response, client ones whose final was accounted) and only
    /// linger to absorb retransmissions (Timers J, L, M, K, D). Overload
    /// control judges this: at 1,000 calls/s with digest auth, the lingering ones alone
    /// (two per call, 32 s each until half the cap is taken) held the count near the mark
    /// and new INVITEs got 503 in bursts though the proxy was half idle. Memory stays
    /// bounded by the hard cap on all live transactions.
    pub(super) fn working(&self) -> usize {
        debug_assert!(
            self.finished_servers <= self.servers.len()
                && self.finished_clients <= self.clients.len(),
            "finished transaction counts out of step"
        );
        self.live()
            .saturating_sub(self.finished_servers + self.finished_clients)
    }

    /// How long a finished transaction stays to absorb retransmissions: `full` (the RFC's
    /// 64·T1 for Timers J and L) normally, but at most T4 once half the transaction cap is
    /// taken. At 2,000 calls/s the RFC values keep ~140k finished transactions alive and
    /// new calls would get 503; a peer that got our final response stops retransmitting
    /// within T2, and T4 is what Kamailio's tm keeps a finished transaction by default.
    pub(super) fn linger(&mut self, full: u64) -> u64 {
        let t4 = self.cfg.timers.t4;
        if full > t4 && self.live() >= self.cfg.max_transactions / 2 {
            self.stats.short_lingers += 1;
            t4
        } else {
            full
        }
    }

    /// Queues a message for sending, counting it if it is a response.
    pub(super) fn emit(
        &mut self,
        cx: &mut Cx<'_>,
        to: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    ) {
        if let Some(code) = status_of(&bytes) {
            if let Some(c) = self.stats.responses_sent.get_mut(usize::from(code / 100)) {
                *c += 1;
            }
        }
        cx.push(to, transport, bytes);
    }
}

impl Default for Proxy<MemoryStore> {
    fn default() -> Self {
        Proxy::new(
            ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 5060))),
            MemoryStore::default(),
        )
    }
}
