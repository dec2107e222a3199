//! A sans-IO, transaction-stateful SIP proxy and registrar core (RFC 3261 §16, §17;
//! RFC 3581; RFC 6026 for the INVITE server transaction after a 2xx).
//!
//! The driver feeds [`Proxy::handle_incoming`] one datagram (or one framed TCP message)
//! with its source and the current time, calls [`Proxy::handle_timeout`] when
//! [`Proxy::poll_timeout`] says, and sends every returned [`Transmit`]. Nothing here does
//! I/O or reads the clock; no input makes it panic.
//!
//! What it does with a request (after [`check_request`] and RFC 3261 §16.3):
//! - retransmissions are answered from the server transaction, never forwarded again;
//!   ACK of a non-2xx final is absorbed; ACK of a 2xx is routed end to end, statelessly;
//! - CANCEL is answered 200 and forwarded on every pending branch (after a provisional
//!   response, §9.1); branches that never answered are finished locally with 487;
//! - loops (§16.3 item 4: our Via with the branch's loop hash) get 482, Max-Forwards 0
//!   gets 483 (an OPTIONS then gets 200, §11);
//! - Route: our own top Route is popped (loose routing); a remaining Route or, in a dialog,
//!   the Request-URI is the next hop; a Request-URI in one of our domains is looked up in
//!   the location service (REGISTER goes to the [`Registrar`], OPTIONS without a user part
//!   is answered 200 here) and forked in parallel to every binding; other domains get 403
//!   unless `outbound` is set. No DNS: targets must be IP literals.
//! - On the way out: Via pushed with a `z9hG4bK` branch = loop hash of the request +
//!   a part derived from the incoming branch, Max-Forwards decremented (70 added if
//!   absent), `Record-Route: <sip:local;lr>` on dialog-initiating requests, the top Via of
//!   the received request given `received`/`rport` (RFC 3581).
//! - Responses: our Via popped, sent to the request's source (rport) or the next Via;
//!   100 is not forwarded; the first and every further 2xx is forwarded (§16.7 item 5) and
//!   the other branches cancelled; non-2xx finals are collected and the best one (6xx
//!   first, then the lowest class; 503 becomes 500) forwarded when all branches are done;
//!   2xx retransmissions are forwarded statelessly (from a short cache of what was sent).
//! - NAT (Kamailio's rule): a binding or a dialog Contact is reached at the source address
//!   it came from only when there is evidence of NAT: a private Contact host, or a top Via
//!   that differs from the packet's source.
//! - Media: [`MediaHook`] is asked per the [`media::decide`](super::media::decide) table;
//!   a new body replaces the old one and Content-Length is fixed.
//!
//! Memory is bounded: live transactions are capped (beyond the cap new requests get 503
//! with Retry-After), every transaction ends by a timer, and the side tables (NAT contacts,
//! 2xx cache, known AORs) are capped and swept.
#![forbid(unsafe_code)]
#![allow(clippy::too_many_arguments)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::edit::{EditError, Editor};
use super::header::{NameAddr, NameAddrIter, Via};
use super::media::{
    decide, has_sdp, media_tags, MediaCtx, MediaEvent, MediaHook, MediaOp, MediaResult,
};
use super::message::{build_response, check_request, check_response, ReplyContext};
use super::parse::{HeaderName, Message, ParseError};
use super::registrar::{canonical_aor, LocationStore, MemoryStore, Registrar, RegistrarConfig};
use super::transaction::{
    client_key, server_key, server_key_for_method, ClientState, ClientTx, Deadlines, OwnedReply,
    ServerState, ServerTx, Slot, Target, TimerConfig, TimerRef, Timers,
};
use super::transport::{fixed_via, reply_address, via_destination, Transmit, Transport};
use super::uri::{Host, SipUri, Uri};

/// Proxy configuration. Build with [`ProxyConfig::new`] and override fields.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Our listen address, used in Via and Record-Route (must be a concrete address).
    pub local: SocketAddr,
    /// Served domains (host names or IP literals); the listen address's IP is always one.
    pub domains: Vec<String>,
    /// Where requests for other domains go; `None` refuses them with 403.
    pub outbound: Option<SocketAddr>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Most contacts per AOR.
    pub max_bindings: usize,
    /// Cap on live (server + client) transactions; beyond it requests get 503.
    pub max_transactions: usize,
    /// Cap on remembered NAT contacts, cached 2xx responses and known AORs (each).
    pub max_table_entries: usize,
    /// How long a Contact learnt from a NATed dialog request/response is remembered.
    pub nat_contact_ttl_ns: u64,
    /// Record-Route dialog-initiating requests (so in-dialog requests come back here).
    pub record_route: bool,
    pub timers: TimerConfig,
    /// Mixed into branch and tag hashes so they are not predictable from outside.
    pub secret: u64,
}

impl ProxyConfig {
    pub fn new(local: SocketAddr) -> Self {
        ProxyConfig {
            local,
            domains: Vec::new(),
            outbound: None,
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_bindings: 16,
            max_transactions: 100_000,
            max_table_entries: 200_000,
            nat_contact_ttl_ns: 12 * 3600 * 1_000_000_000,
            record_route: true,
            timers: TimerConfig::default(),
            secret: 0x5eed_5eed_5eed_5eed,
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
    pub overload_rejects: u64,
    /// Finished transactions that lingered T4 instead of 64·T1 (see [`Proxy::linger`]).
    pub short_lingers: u64,
    pub media_failures: u64,
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub registrations: u64,
}

#[derive(Clone, Copy, Debug)]
struct NatEntry {
    source: SocketAddr,
    transport: Transport,
    expires_at_ns: u64,
}

#[derive(Clone, Debug)]
struct Cached2xx {
    bytes: Vec<u8>,
    to: SocketAddr,
    transport: Transport,
    expires_at_ns: u64,
}

/// Where a request goes next.
#[derive(Clone, Debug)]
struct Hop {
    /// New Request-URI (location lookup), if it changes.
    ruri: Option<String>,
    to: SocketAddr,
    transport: Transport,
}

#[derive(Clone, Debug)]
enum Decision {
    Register,
    Options,
    Reject(u16, &'static str),
    Forward(Vec<Hop>),
}

/// Our own top Route entry, to be removed.
#[derive(Clone, Debug)]
struct PopRoute {
    header: usize,
    /// What is left of that header's value (`None`: remove the line).
    rest: Option<String>,
}

const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, REFER, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH";
const HOUSEKEEPING_NS: u64 = 1_000_000_000;

/// FNV-1a, 64 bit: stable across runs, used for branch and tag derivation.
fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// RFC 1918, RFC 6598, link-local, IPv6 ULA/link-local: unreachable from outside.
/// Loopback counts as reachable.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || a.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Key of a contact URI for NAT lookups: `user@host:port`, host lower-cased.
fn contact_key(u: &SipUri<'_>) -> String {
    format!(
        "{}@{}:{}",
        u.user.unwrap_or(""),
        u.host_raw.to_ascii_lowercase(),
        u.port_or_default()
    )
}

/// Whether the top Via disagrees with where the packet came from (nat_uac_test 2 + 16).
fn via_mismatch(via: &Via<'_>, src: SocketAddr) -> bool {
    via.host.ip() != Some(src.ip()) || via.port.unwrap_or(5060) != src.port()
}

/// The status class of a response we send, for the counters.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let code = bytes.get(8..11)?;
    if !bytes.starts_with(b"SIP/2.0 ") {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// §16.7 item 6: 6xx beats everything, then the lowest class; earlier wins ties.
fn better(new: u16, old: u16) -> bool {
    let rank = |s: u16| if s >= 600 { 0 } else { s / 100 };
    rank(new) < rank(old)
}

/// Replaces the status line of a response (503 → 500 when forwarded, §16.7 item 6).
fn with_status_line(bytes: &[u8], line: &str) -> Vec<u8> {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len());
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(bytes.get(end..).unwrap_or(&[]));
    out
}

/// The sans-IO proxy. See the module docs.
pub struct Proxy<S: LocationStore = MemoryStore> {
    cfg: ProxyConfig,
    registrar: Registrar<S>,
    servers: HashMap<u64, ServerTx>,
    server_index: HashMap<String, u64>,
    clients: HashMap<u64, ClientTx>,
    client_index: HashMap<String, u64>,
    timers: Timers,
    next_id: u64,
    nat: HashMap<String, NatEntry>,
    known_aors: HashSet<String>,
    ok_cache: HashMap<String, Cached2xx>,
    next_housekeeping: Option<u64>,
    ticks: u64,
    stats: ProxyStats,
}

impl<S: LocationStore> Proxy<S> {
    pub fn new(cfg: ProxyConfig, store: S) -> Self {
        let rc = RegistrarConfig {
            default_expires: cfg.default_expires,
            min_expires: cfg.min_expires,
            max_expires: cfg.max_expires,
            max_bindings: cfg.max_bindings,
        };
        Proxy {
            registrar: Registrar::new(rc, store),
            cfg,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            timers: Timers::default(),
            next_id: 1,
            nat: HashMap::new(),
            known_aors: HashSet::new(),
            ok_cache: HashMap::new(),
            next_housekeeping: None,
            ticks: 0,
            stats: ProxyStats::default(),
        }
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

    pub fn stats(&self) -> ProxyStats {
        let mut s = self.stats;
        s.server_transactions = self.servers.len();
        s.client_transactions = self.clients.len();
        s
    }

    /// Earliest deadline at which [`Proxy::handle_timeout`] has work (possibly early).
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.timers.next_deadline(), self.next_housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn live(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// How long a finished transaction stays to absorb retransmissions: `full` (the RFC's
    /// 64·T1 for Timers J and L) normally, but at most T4 once half the transaction cap is
    /// taken. At 2,000 calls/s the RFC values keep ~140k finished transactions alive and
    /// new calls would get 503; a peer that got our final response stops retransmitting
    /// within T2, and T4 is what Kamailio's tm keeps a finished transaction by default.
    fn linger(&mut self, full: u64) -> u64 {
        let t4 = self.cfg.timers.t4;
        if full > t4 && self.live() >= self.cfg.max_transactions / 2 {
            self.stats.short_lingers += 1;
            t4
        } else {
            full
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn emit(
        &mut self,
        out: &mut Vec<Transmit>,
        to: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    ) {
        if let Some(code) = status_of(&bytes) {
            if let Some(c) = self.stats.responses_sent.get_mut(usize::from(code / 100)) {
                *c += 1;
            }
        }
        out.push(Transmit {
            to,
            transport,
            bytes,
        });
    }

    // ----------------------------------------------------------------------------------
    // Address helpers

    fn local_str(&self) -> String {
        self.cfg.local.to_string()
    }

    fn is_our_host(&self, host: &Host<'_>, port: Option<u16>) -> bool {
        let port_ok = port.is_none_or(|p| p == self.cfg.local.port());
        match host.ip() {
            Some(ip) if ip == self.cfg.local.ip() => port_ok,
            Some(ip) => self
                .cfg
                .domains
                .iter()
                .any(|d| d.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip)),
            None => match host {
                Host::Name(n) => self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(n)),
                _ => false,
            },
        }
    }

    /// A Request-URI in a domain we serve.
    fn is_our_uri(&self, u: &SipUri<'_>) -> bool {
        self.is_our_host(&u.host, u.port)
    }

    /// A Route/Record-Route URI naming this proxy.
    fn is_our_route(&self, u: &SipUri<'_>) -> bool {
        u.host.ip() == Some(self.cfg.local.ip()) && u.port_or_default() == self.cfg.local.port()
            || matches!(u.host, Host::Name(n) if self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(n)))
                && u.port_or_default() == self.cfg.local.port()
    }

    fn is_our_via(&self, v: &Via<'_>) -> bool {
        v.host.ip() == Some(self.cfg.local.ip()) && v.port.unwrap_or(5060) == self.cfg.local.port()
    }

    /// Resolves a URI to a next hop without DNS: a remembered NAT source first, then an IP
    /// literal.
    fn resolve(&self, u: &SipUri<'_>, now: u64) -> Option<(SocketAddr, Transport)> {
        if let Some(e) = self.nat.get(&contact_key(u)) {
            if e.expires_at_ns > now {
                return Some((e.source, e.transport));
            }
        }
        let ip = u.host.ip()?;
        Some((
            SocketAddr::new(ip, u.port_or_default()),
            Transport::of_uri(u),
        ))
    }

    fn remember_nat(
        &mut self,
        key: String,
        source: SocketAddr,
        transport: Transport,
        expires_at_ns: u64,
    ) {
        if self.nat.len() >= self.cfg.max_table_entries && !self.nat.contains_key(&key) {
            return;
        }
        self.nat.insert(
            key,
            NatEntry {
                source,
                transport,
                expires_at_ns,
            },
        );
    }

    /// Learns the Contact of a dialog request/response that shows NAT evidence.
    fn learn_contact(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        transport: Transport,
        evidence: bool,
        now: u64,
    ) {
        let Ok(super::header::Contact::List(list)) = msg.contacts() else {
            return;
        };
        for c in list.iter().take(4) {
            let Some(u) = c.sip_uri() else { continue };
            let private = u.host.ip().is_some_and(is_private);
            let elsewhere = u.host.ip() != Some(src.ip()) || u.port_or_default() != src.port();
            if (private || evidence) && elsewhere {
                let ttl = self.cfg.nat_contact_ttl_ns;
                self.remember_nat(contact_key(u), src, transport, now.saturating_add(ttl));
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Branches and tags

    /// The loop-detection part of our branch (§16.6 item 8): a hash of what identifies the
    /// request as it arrived, Via excluded, so a looped copy hashes the same and a spiral
    /// (changed Request-URI or Route) does not.
    fn loop_hash(&self, msg: &Message<'_>) -> u64 {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(12);
        let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes();
        parts.push(msg.call_id().unwrap_or("").as_bytes());
        parts.push(msg.from_tag().unwrap_or("").as_bytes());
        parts.push(msg.to_tag().unwrap_or("").as_bytes());
        parts.push(&cseq);
        parts.push(msg.request_uri_str().unwrap_or("").as_bytes());
        for h in &msg.headers {
            if matches!(
                h.kind,
                HeaderName::Route | HeaderName::ProxyRequire | HeaderName::ProxyAuthorization
            ) {
                parts.push(h.value.as_bytes());
            }
        }
        fnv(self.cfg.secret, &parts)
    }

    fn branch(&self, loop_hash: u64, incoming: &str, salt: &str, index: usize) -> String {
        let u = fnv(
            self.cfg.secret ^ 0x9e37_79b9_7f4a_7c15,
            &[incoming.as_bytes(), salt.as_bytes(), &index.to_be_bytes()],
        );
        format!("z9hG4bK{loop_hash:016x}.{:08x}", u as u32)
    }

    fn is_loop(&self, msg: &Message<'_>, loop_hash: u64) -> bool {
        let prefix = format!("z9hG4bK{loop_hash:016x}.");
        msg.vias().any(|v| {
            v.is_ok_and(|(_, v)| {
                self.is_our_via(&v) && v.branch.is_some_and(|b| b.starts_with(&prefix))
            })
        })
    }

    fn tag_for(&self, key: &str) -> String {
        format!(
            "{:012x}",
            fnv(self.cfg.secret ^ 0x7a67, &[key.as_bytes()]) & 0xffff_ffff_ffff
        )
    }

    // ----------------------------------------------------------------------------------
    // Entry points

    /// One datagram (or one framed TCP message) from `src`.
    pub fn handle_incoming(
        &mut self,
        data: &[u8],
        src: SocketAddr,
        transport: Transport,
        now_ns: u64,
        media: &mut dyn MediaHook,
    ) -> Vec<Transmit> {
        self.stats.received += 1;
        if self.next_housekeeping.is_none() {
            self.next_housekeeping = Some(now_ns.saturating_add(HOUSEKEEPING_NS));
        }
        let mut out = Vec::new();
        // RFC 5626 §4.4.1: CRLFCRLF ping → CRLF pong on streams; ignored on UDP.
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            self.stats.keepalives += 1;
            if transport == Transport::Tcp && data.len() >= 4 {
                out.push(Transmit {
                    to: src,
                    transport,
                    bytes: b"\r\n".to_vec(),
                });
            }
            return out;
        }
        match Message::parse_with(data, transport.framing()) {
            Err(e) => self.on_unparseable(data, e, src, transport, &mut out),
            Ok(msg) if msg.is_request() => {
                self.stats.requests += 1;
                match check_request(&msg) {
                    Ok(()) => self.on_request(&msg, src, transport, now_ns, media, &mut out),
                    Err(rej) => {
                        let method = msg.method().unwrap_or("");
                        if method == "ACK" {
                            self.stats.dropped += 1;
                        } else if rej.status == 483 && method == "OPTIONS" {
                            // §11 / §16.3 item 3: an OPTIONS with Max-Forwards 0 may be
                            // answered by the proxy itself.
                            self.answer_stateless(
                                &msg,
                                src,
                                transport,
                                200,
                                "OK",
                                &options_headers(),
                                &mut out,
                            );
                        } else {
                            if rej.status == 483 {
                                self.stats.too_many_hops += 1;
                            }
                            self.stats.rejected += 1;
                            let list = rej.unsupported.join(", ");
                            let extra: Vec<(&str, &str)> = if rej.status == 420 {
                                vec![("Unsupported", list.as_str())]
                            } else {
                                Vec::new()
                            };
                            self.answer_stateless(
                                &msg, src, transport, rej.status, rej.reason, &extra, &mut out,
                            );
                        }
                    }
                }
            }
            Ok(msg) => {
                self.stats.responses += 1;
                match check_response(&msg) {
                    Ok(()) => self.on_response(&msg, src, transport, now_ns, media, &mut out),
                    Err(_) => self.stats.dropped += 1,
                }
            }
        }
        out
    }

    /// Fires due timers (retransmissions A/E/G, timeouts B/F/H/C, cleanup D/I/J/K/L) and
    /// housekeeping (registrar expiry, table sweeps).
    pub fn handle_timeout(&mut self, now_ns: u64, media: &mut dyn MediaHook) -> Vec<Transmit> {
        let mut out = Vec::new();
        // Bounded: every entry is popped once; re-armed entries lie in the future unless a
        // duration is zero, and zero-length timers never re-arm.
        let mut budget = self.timers.len() + 1024;
        while budget > 0 {
            budget -= 1;
            let Some((deadline, tref)) = self.timers.pop_due(now_ns) else {
                break;
            };
            self.on_timer(deadline, tref, now_ns, media, &mut out);
        }
        if self.next_housekeeping.is_none_or(|h| h <= now_ns) {
            self.housekeeping(now_ns);
            self.next_housekeeping = Some(now_ns.saturating_add(HOUSEKEEPING_NS));
        }
        out
    }

    fn housekeeping(&mut self, now: u64) {
        self.ticks += 1;
        self.ok_cache.retain(|_, c| c.expires_at_ns > now);
        if self.ticks % 10 == 1 {
            self.registrar.expire(now);
            self.nat.retain(|_, e| e.expires_at_ns > now);
        }
    }

    // ----------------------------------------------------------------------------------
    // Stateless answers

    fn on_unparseable(
        &mut self,
        data: &[u8],
        e: ParseError,
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<Transmit>,
    ) {
        self.stats.parse_errors += 1;
        let start = data
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0);
        let is_response = data
            .get(start..start + 4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
        let is_ack = data.get(start..start + 4) == Some(b"ACK ");
        let reply = ReplyContext::salvage(data);
        if e == ParseError::Empty || is_response || is_ack || reply.vias.is_empty() {
            self.stats.dropped += 1;
            return;
        }
        let bytes = build_response(&reply, e.status(), e.reason_phrase(), None, &[]);
        // Salvaged values may hold stray control bytes; never send what we cannot parse.
        if Message::parse(&bytes).is_err() {
            self.stats.dropped += 1;
            return;
        }
        self.emit(out, src, transport, bytes);
    }

    /// The reply context of a request, its top Via given received/rport.
    fn owned_reply(msg: &Message<'_>, src: SocketAddr) -> OwnedReply {
        let ctx = ReplyContext::from_message(msg);
        let mut vias: Vec<String> = ctx.vias.iter().map(|v| (*v).to_owned()).collect();
        if let (Some(first), Some(h)) = (vias.first_mut(), msg.header(HeaderName::Via)) {
            if let Some(Ok(top)) = super::header::ViaIter::new(h.value).next() {
                if let Some(f) = fixed_via(&top, src) {
                    let end = top.start + top.raw.len();
                    *first = format!(
                        "{}{}{}",
                        h.value.get(..top.start).unwrap_or(""),
                        f,
                        h.value.get(end..).unwrap_or("")
                    );
                }
            }
        }
        OwnedReply {
            vias,
            from: ctx.from.map(str::to_owned),
            to: ctx.to.map(str::to_owned),
            call_id: ctx.call_id.map(str::to_owned),
            cseq: ctx.cseq.map(str::to_owned),
        }
    }

    fn answer_stateless(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        transport: Transport,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        out: &mut Vec<Transmit>,
    ) {
        let reply = Self::owned_reply(msg, src);
        let tag = self.tag_for(&format!("{:?}", reply.vias.first()));
        let bytes = build_response(&reply.as_ctx(), status, reason, Some(&tag), extra);
        let to = reply_address(msg.top_via().ok().as_ref(), src, transport);
        self.emit(out, to, transport, bytes);
    }

    // ----------------------------------------------------------------------------------
    // Server transactions

    fn new_server_tx(
        &mut self,
        msg: &Message<'_>,
        key: String,
        src: SocketAddr,
        transport: Transport,
        now: u64,
    ) -> u64 {
        let id = self.id();
        let method = msg.method().unwrap_or("").to_owned();
        let invite = method == "INVITE";
        let via = msg.top_via().ok();
        let mut timers = Deadlines::default();
        // Safety net: a server transaction whose branches somehow never finish still ends.
        let t = self.cfg.timers;
        let life = if invite {
            t.timer_c + 3 * t.t64()
        } else {
            2 * t.t64()
        };
        timers.arm(
            Slot::Timeout,
            now.saturating_add(life),
            &mut self.timers,
            Target::Server(id),
        );
        let tx = ServerTx {
            to_tag: self.tag_for(&key),
            key: key.clone(),
            invite,
            method,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            reply_to: reply_address(via.as_ref(), src, transport),
            reliable: transport.reliable(),
            transport,
            reply: Self::owned_reply(msg, src),
            last_response: None,
            last_status: 0,
            timers,
            call_id: msg.call_id().unwrap_or("").to_owned(),
            from_tag: msg.from_tag().unwrap_or("").to_owned(),
            branches: Vec::new(),
            pending: 0,
            best: None,
            got_2xx: false,
            cancelled: false,
            request_had_sdp: has_sdp(msg),
            media_engaged: false,
        };
        self.servers.insert(id, tx);
        self.server_index.insert(key, id);
        id
    }

    fn local_response(
        &self,
        sid: u64,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        match self.servers.get(&sid) {
            Some(tx) => build_response(&tx.reply.as_ctx(), status, reason, Some(&tx.to_tag), extra),
            None => Vec::new(),
        }
    }

    fn server_send_provisional(&mut self, sid: u64, bytes: Vec<u8>, out: &mut Vec<Transmit>) {
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        if !matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            return;
        }
        tx.state = ServerState::Proceeding;
        tx.last_response = Some(bytes.clone());
        let (to, tr) = (tx.reply_to, tx.transport);
        self.emit(out, to, tr, bytes);
    }

    /// Sends a final response through the server transaction and moves it on (§17.2).
    fn server_send_final(
        &mut self,
        sid: u64,
        bytes: Vec<u8>,
        status: u16,
        now: u64,
        media: &mut dyn MediaHook,
        src: SocketAddr,
        out: &mut Vec<Transmit>,
    ) {
        let t = self.cfg.timers;
        // Timer L (INVITE after a 2xx) or J (non-INVITE), for a transaction this final ends.
        let end = match self.servers.get(&sid) {
            Some(tx) if matches!(tx.state, ServerState::Trying | ServerState::Proceeding) => {
                match (tx.invite, tx.reliable) {
                    (true, _) if status < 300 => self.linger(t.t64()),
                    (true, _) => 0,
                    (false, reliable) => self.linger(t.timer_j(reliable)),
                }
            }
            _ => 0,
        };
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        let (to, tr) = (tx.reply_to, tx.transport);
        match tx.state {
            ServerState::Trying | ServerState::Proceeding => {}
            ServerState::Accepted if status < 300 => {
                // Further 2xx from other branches (§16.7 item 5).
                self.emit(out, to, tr, bytes);
                return;
            }
            _ => return,
        }
        tx.last_response = Some(bytes.clone());
        tx.last_status = status;
        tx.timers.disarm(Slot::Timeout);
        let target = Target::Server(sid);
        let mut delete = None;
        if tx.invite && status < 300 {
            tx.state = ServerState::Accepted;
            tx.got_2xx = true;
            tx.timers
                .arm(Slot::End, now.saturating_add(end), &mut self.timers, target);
        } else if tx.invite {
            tx.state = ServerState::Completed;
            if !tx.reliable {
                tx.timers.interval = t.t1;
                tx.timers.arm(
                    Slot::Retransmit,
                    now.saturating_add(t.t1),
                    &mut self.timers,
                    target,
                );
            }
            tx.timers.arm(
                Slot::Timeout,
                now.saturating_add(t.t64()),
                &mut self.timers,
                target,
            );
            if tx.media_engaged {
                delete = Some((tx.call_id.clone(), tx.from_tag.clone(), tx.to_tag.clone()));
            }
        } else {
            tx.state = ServerState::Completed;
            tx.timers
                .arm(Slot::End, now.saturating_add(end), &mut self.timers, target);
        }
        self.emit(out, to, tr, bytes);
        if let Some((call_id, from_tag, _)) = delete {
            let ctx = MediaCtx {
                op: MediaOp::Delete,
                call_id: &call_id,
                from_tag: &from_tag,
                to_tag: None,
                via_branch: None,
                source: src,
            };
            let _ = media.media(&ctx, &[], now);
        }
    }

    /// Creates a server transaction and answers it at once (local final response).
    fn answer_locally(
        &mut self,
        msg: &Message<'_>,
        key: String,
        src: SocketAddr,
        transport: Transport,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) -> u64 {
        let sid = self.new_server_tx(msg, key, src, transport, now);
        let bytes = self.local_response(sid, status, reason, extra);
        self.server_send_final(sid, bytes, status, now, media, src, out);
        sid
    }

    fn remove_server(&mut self, sid: u64) {
        if let Some(tx) = self.servers.remove(&sid) {
            if self.server_index.get(&tx.key) == Some(&sid) {
                self.server_index.remove(&tx.key);
            }
        }
    }

    fn remove_client(&mut self, cid: u64) -> Option<ClientTx> {
        let ct = self.clients.remove(&cid)?;
        if self.client_index.get(&ct.key) == Some(&cid) {
            self.client_index.remove(&ct.key);
        }
        Some(ct)
    }

    // ----------------------------------------------------------------------------------
    // Requests

    fn on_request(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let method = msg.method().unwrap_or("");
        let Ok(key) = server_key(msg) else {
            self.stats.dropped += 1;
            return;
        };
        if method == "ACK" {
            self.on_ack(msg, &key, src, transport, now, media, out);
            return;
        }
        // Retransmission: answer from the transaction (§17.2.1, §17.2.2).
        if let Some(&sid) = self.server_index.get(&key) {
            self.stats.retransmissions_absorbed += 1;
            if let Some(tx) = self.servers.get(&sid) {
                if matches!(tx.state, ServerState::Proceeding | ServerState::Completed) {
                    if let Some(b) = tx.last_response.clone() {
                        let (to, tr) = (tx.reply_to, tx.transport);
                        self.emit(out, to, tr, b);
                    }
                }
            }
            return;
        }
        if self.live() >= self.cfg.max_transactions {
            self.stats.overload_rejects += 1;
            self.answer_stateless(
                msg,
                src,
                transport,
                503,
                "Service Unavailable",
                &[("Retry-After", "5")],
                out,
            );
            return;
        }
        if method == "CANCEL" {
            self.on_cancel(msg, key, src, transport, now, media, out);
            return;
        }
        let loop_hash = self.loop_hash(msg);
        if self.is_loop(msg, loop_hash) {
            self.stats.loops += 1;
            self.answer_locally(
                msg,
                key,
                src,
                transport,
                482,
                "Loop Detected",
                &[],
                now,
                media,
                out,
            );
            return;
        }
        let (decision, pop) = self.route(msg, now);
        match decision {
            Decision::Reject(status, reason) => {
                self.answer_locally(
                    msg,
                    key,
                    src,
                    transport,
                    status,
                    reason,
                    &[],
                    now,
                    media,
                    out,
                );
            }
            Decision::Options => {
                self.answer_locally(
                    msg,
                    key,
                    src,
                    transport,
                    200,
                    "OK",
                    &options_headers(),
                    now,
                    media,
                    out,
                );
            }
            Decision::Register => self.on_register(msg, key, src, transport, now, media, out),
            Decision::Forward(hops) => {
                if let Ok(via) = msg.top_via() {
                    let evidence = via_mismatch(&via, src);
                    if method != "REGISTER" {
                        self.learn_contact(msg, src, transport, evidence, now);
                    }
                }
                self.forward_stateful(
                    msg, key, hops, pop, loop_hash, src, transport, now, media, out,
                );
            }
        }
    }

    /// The routing decision of §16.4/§16.5 (see the module docs), plus our Route to pop.
    fn route(&self, msg: &Message<'_>, now: u64) -> (Decision, Option<PopRoute>) {
        let routes = msg.route_set(HeaderName::Route).unwrap_or_default();
        let mut pop = None;
        if let Some(first) = routes.first() {
            if first.sip_uri().is_some_and(|u| self.is_our_route(u)) {
                pop = self.pop_route_edit(msg);
            }
        }
        let popped = usize::from(pop.is_some());
        let in_dialog = msg.to_tag().is_some();
        let method = msg.method().unwrap_or("");
        let Some(Ok(ruri)) = msg.request_uri() else {
            return (
                Decision::Reject(400, "Bad Request - Malformed Request-URI"),
                pop,
            );
        };
        if let Some(next) = routes.get(popped) {
            if in_dialog || popped > 0 {
                return (self.hop_to(next, None, now), pop);
            }
        }
        let sip = ruri.as_sip();
        if sip.is_some_and(|u| self.is_our_uri(u)) {
            let Some(u) = sip else {
                return (Decision::Reject(404, "Not Found"), pop);
            };
            if method == "REGISTER" {
                return (Decision::Register, pop);
            }
            if u.user.is_none() {
                return if method == "OPTIONS" {
                    (Decision::Options, pop)
                } else {
                    (Decision::Reject(404, "Not Found"), pop)
                };
            }
            return (self.lookup(&ruri, now), pop);
        }
        if in_dialog || popped > 0 {
            return match sip {
                Some(u) => match self.resolve(u, now) {
                    Some((to, transport)) => (
                        Decision::Forward(vec![Hop {
                            ruri: None,
                            to,
                            transport,
                        }]),
                        pop,
                    ),
                    None => (
                        Decision::Reject(502, "Bad Gateway - Unresolvable Destination"),
                        pop,
                    ),
                },
                None => (Decision::Reject(416, "Unsupported URI Scheme"), pop),
            };
        }
        match self.cfg.outbound {
            Some(to) => (
                Decision::Forward(vec![Hop {
                    ruri: None,
                    to,
                    transport: Transport::Udp,
                }]),
                pop,
            ),
            None => (Decision::Reject(403, "Forbidden - Domain Not Served"), pop),
        }
    }

    fn hop_to(&self, route: &NameAddr<'_>, ruri: Option<String>, now: u64) -> Decision {
        match route.sip_uri().and_then(|u| self.resolve(u, now)) {
            Some((to, transport)) => Decision::Forward(vec![Hop {
                ruri,
                to,
                transport,
            }]),
            None => Decision::Reject(502, "Bad Gateway - Unresolvable Route"),
        }
    }

    fn pop_route_edit(&self, msg: &Message<'_>) -> Option<PopRoute> {
        let (idx, h) = msg
            .headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.kind == HeaderName::Route)?;
        let first = NameAddrIter::new(h.value).next()?.ok()?;
        let rest = h.value.get(first.next..).unwrap_or("").trim();
        Some(PopRoute {
            header: idx,
            rest: (!rest.is_empty()).then(|| rest.to_owned()),
        })
    }

    /// Location service lookup (§16.5): bindings → hops, NAT-aware.
    fn lookup(&self, ruri: &Uri<'_>, now: u64) -> Decision {
        let Some(aor) = canonical_aor(ruri) else {
            return Decision::Reject(404, "Not Found");
        };
        let mut candidates = vec![aor.clone()];
        if ruri.as_sip().is_some_and(|u| u.port.is_some()) {
            // `sip:bob@host:port` also finds `sip:bob@host`, and the reverse.
            if let Some(i) = aor.rfind(':').filter(|&i| i > 4 && !aor[i..].contains(']')) {
                candidates.push(aor[..i].to_owned());
            }
        } else {
            candidates.push(format!("{aor}:{}", self.cfg.local.port()));
        }
        let mut known = false;
        for a in &candidates {
            let bindings = self.registrar.lookup(a, now);
            known |= self.known_aors.contains(a) || !self.registrar.store.get(a).is_empty();
            if bindings.is_empty() {
                continue;
            }
            let mut hops = Vec::new();
            for b in bindings {
                let Ok(u) = SipUri::parse(&b.uri) else {
                    continue;
                };
                let private = u.host.ip().is_some_and(is_private);
                let nat_seen = self
                    .nat
                    .get(&contact_key(&u))
                    .is_some_and(|e| e.source == b.source && e.expires_at_ns > now);
                let (to, transport) = if private || nat_seen || u.host.ip().is_none() {
                    let t = self
                        .nat
                        .get(&contact_key(&u))
                        .map_or(Transport::of_uri(&u), |e| e.transport);
                    (b.source, t)
                } else {
                    match u.host.ip() {
                        Some(ip) => (
                            SocketAddr::new(ip, u.port_or_default()),
                            Transport::of_uri(&u),
                        ),
                        None => (b.source, Transport::of_uri(&u)),
                    }
                };
                hops.push(Hop {
                    ruri: Some(b.uri.clone()),
                    to,
                    transport,
                });
            }
            if !hops.is_empty() {
                return Decision::Forward(hops);
            }
        }
        if known {
            Decision::Reject(480, "Temporarily Unavailable")
        } else {
            Decision::Reject(404, "Not Found")
        }
    }

    fn on_register(
        &mut self,
        msg: &Message<'_>,
        key: String,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let resp = self.registrar.handle_register(msg, src, now);
        self.stats.registrations += 1;
        if resp.status == 200 {
            if let Some(aor) = msg.to().ok().and_then(|t| canonical_aor(&t.uri)) {
                let evidence = msg.top_via().is_ok_and(|v| via_mismatch(&v, src));
                let call_id = msg.call_id().unwrap_or("");
                for b in self.registrar.lookup(&aor, now) {
                    if b.call_id != call_id || b.source != src {
                        continue;
                    }
                    let Ok(u) = SipUri::parse(&b.uri) else {
                        continue;
                    };
                    let k = contact_key(&u);
                    if evidence {
                        self.remember_nat(k, src, transport, b.expires_at_ns);
                    } else {
                        self.nat.remove(&k);
                    }
                }
                if self.known_aors.len() < self.cfg.max_table_entries {
                    self.known_aors.insert(aor);
                }
            }
        }
        let extra: Vec<(&str, &str)> = resp.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.answer_locally(
            msg,
            key,
            src,
            transport,
            resp.status,
            resp.reason,
            &extra,
            now,
            media,
            out,
        );
    }

    /// Builds the request for one hop (§16.6).
    fn build_request(
        &self,
        msg: &Message<'_>,
        src: SocketAddr,
        hop: &Hop,
        branch: &str,
        pop: Option<&PopRoute>,
        record_route: bool,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, EditError> {
        let mut e = Editor::new(msg);
        if let Some(r) = &hop.ruri {
            e.set_request_uri(r)?;
        }
        e.decrement_max_forwards()?;
        if let Some(p) = pop {
            match &p.rest {
                Some(rest) => e.replace_value(p.header, rest)?,
                None => e.remove_header(p.header)?,
            }
        }
        if record_route {
            let at = msg
                .headers
                .iter()
                .position(|h| h.kind == HeaderName::RecordRoute)
                .unwrap_or(msg.headers.len());
            e.insert_header_before(
                at,
                "Record-Route",
                &format!("<sip:{};lr>", self.local_str()),
            )?;
        }
        // RFC 3581 on the received top Via, then ours above it.
        if let Some((idx, h)) = msg
            .headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.kind == HeaderName::Via)
        {
            if let Some(Ok(top)) = super::header::ViaIter::new(h.value).next() {
                if let Some(f) = fixed_via(&top, src) {
                    let end = top.start + top.raw.len();
                    let v = format!(
                        "{}{}{}",
                        h.value.get(..top.start).unwrap_or(""),
                        f,
                        h.value.get(end..).unwrap_or("")
                    );
                    e.replace_value(idx, &v)?;
                }
            }
        }
        e.push_via(&format!(
            "SIP/2.0/{} {};branch={branch}",
            hop.transport.via_name(),
            self.local_str()
        ));
        if let Some(b) = body {
            e.set_body(b);
        }
        e.finish()
    }

    fn forward_stateful(
        &mut self,
        msg: &Message<'_>,
        key: String,
        hops: Vec<Hop>,
        pop: Option<PopRoute>,
        loop_hash: u64,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let method = msg.method().unwrap_or("").to_owned();
        let invite = method == "INVITE";
        let sdp = has_sdp(msg);
        let op = decide(MediaEvent::Request { method: &method }, sdp);
        let call_id = msg.call_id().unwrap_or("").to_owned();
        let from_tag = msg.from_tag().unwrap_or("").to_owned();
        let to_tag = msg.to_tag().map(str::to_owned);
        let initial = to_tag.is_none();
        let record_route = self.cfg.record_route
            && initial
            && matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER" | "NOTIFY");
        // Whole-request media ops (answer in PRACK, delete on BYE) happen once.
        let mut shared_body: Option<Vec<u8>> = None;
        if let Some(o @ (MediaOp::Answer | MediaOp::Delete)) = op {
            let (f, t) = media_tags(o, true, &from_tag, to_tag.as_deref());
            let ctx = MediaCtx {
                op: o,
                call_id: &call_id,
                from_tag: f,
                to_tag: t,
                via_branch: None,
                source: src,
            };
            match media.media(&ctx, msg.body(), now) {
                MediaResult::NewBody(b) if o == MediaOp::Answer => shared_body = Some(b),
                MediaResult::Failed { .. } if o == MediaOp::Answer => {
                    self.stats.media_failures += 1
                }
                _ => {}
            }
        }
        let incoming = key.clone();
        let sid = self.new_server_tx(msg, key, src, transport, now);
        if invite {
            let trying = self.local_response(sid, 100, "Trying", &[]);
            self.server_send_provisional(sid, trying, out);
        }
        let mut failure: Option<(u16, String)> = None;
        let mut created = Vec::new();
        for (i, hop) in hops.iter().enumerate().take(self.cfg.max_bindings.max(1)) {
            let branch = self.branch(loop_hash, &incoming, &method, i);
            let mut body = shared_body.clone();
            if op == Some(MediaOp::Offer) {
                let ctx = MediaCtx {
                    op: MediaOp::Offer,
                    call_id: &call_id,
                    from_tag: &from_tag,
                    to_tag: to_tag.as_deref(),
                    via_branch: Some(&branch),
                    source: src,
                };
                match media.media(&ctx, msg.body(), now) {
                    MediaResult::Unchanged => {}
                    MediaResult::NewBody(b) => body = Some(b),
                    MediaResult::Failed { status, reason } => {
                        self.stats.media_failures += 1;
                        failure.get_or_insert((status, reason));
                        continue;
                    }
                }
                if let Some(tx) = self.servers.get_mut(&sid) {
                    tx.media_engaged = true;
                }
            }
            let Ok(bytes) = self.build_request(
                msg,
                src,
                hop,
                &branch,
                pop.as_ref(),
                record_route,
                body.as_deref(),
            ) else {
                continue;
            };
            let cid = self.new_client_tx(sid, &branch, &method, hop, bytes.clone(), now);
            created.push(cid);
            self.stats.forwarded_requests += 1;
            out.push(Transmit {
                to: hop.to,
                transport: hop.transport,
                bytes,
            });
        }
        if created.is_empty() {
            let (status, reason) = failure.unwrap_or((500, "Server Internal Error".to_owned()));
            // Nothing was offered successfully: no delete is needed.
            if let Some(tx) = self.servers.get_mut(&sid) {
                tx.media_engaged = false;
            }
            let bytes = self.local_response(sid, status, &reason, &[]);
            self.server_send_final(sid, bytes, status, now, media, src, out);
            return;
        }
        if let Some(tx) = self.servers.get_mut(&sid) {
            tx.pending = created.len();
            tx.branches = created;
        }
    }

    fn new_client_tx(
        &mut self,
        sid: u64,
        branch: &str,
        method: &str,
        hop: &Hop,
        request: Vec<u8>,
        now: u64,
    ) -> u64 {
        let id = self.id();
        let t = self.cfg.timers;
        let invite = method == "INVITE";
        let reliable = hop.transport.reliable();
        let target = Target::Client(id);
        let mut timers = Deadlines::default();
        if !reliable {
            timers.interval = t.t1.max(1);
            timers.arm(
                Slot::Retransmit,
                now.saturating_add(t.t1.max(1)),
                &mut self.timers,
                target,
            );
        }
        timers.arm(
            Slot::Timeout,
            now.saturating_add(t.t64()),
            &mut self.timers,
            target,
        );
        if invite {
            timers.arm(
                Slot::TimerC,
                now.saturating_add(t.timer_c),
                &mut self.timers,
                target,
            );
        }
        let key = client_key(branch, method);
        let ct = ClientTx {
            key: key.clone(),
            branch: branch.to_owned(),
            method: method.to_owned(),
            invite,
            state: ClientState::Calling,
            server: (method != "CANCEL").then_some(sid),
            to: hop.to,
            transport: hop.transport,
            reliable,
            request,
            ack: None,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            final_done: false,
            timers,
        };
        self.clients.insert(id, ct);
        self.client_index.insert(key, id);
        id
    }

    fn on_cancel(
        &mut self,
        msg: &Message<'_>,
        key: String,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let invite_sid = server_key_for_method(msg, "INVITE")
            .ok()
            .and_then(|k| self.server_index.get(&k).copied());
        let Some(isid) = invite_sid else {
            self.answer_locally(
                msg,
                key,
                src,
                transport,
                481,
                "Call/Transaction Does Not Exist",
                &[],
                now,
                media,
                out,
            );
            return;
        };
        self.answer_locally(msg, key, src, transport, 200, "OK", &[], now, media, out);
        let call_id = msg.call_id().unwrap_or("");
        let from_tag = msg.from_tag().unwrap_or("");
        let ctx = MediaCtx {
            op: MediaOp::Delete,
            call_id,
            from_tag,
            to_tag: None,
            via_branch: None,
            source: src,
        };
        let _ = media.media(&ctx, &[], now);
        let Some(tx) = self.servers.get_mut(&isid) else {
            return;
        };
        if tx.state != ServerState::Proceeding {
            return;
        }
        tx.cancelled = true;
        tx.media_engaged = false;
        let branches = tx.branches.clone();
        for cid in branches {
            self.cancel_branch(cid, now, media, src, out);
        }
    }

    /// Cancels one branch: CANCEL now if it has had a provisional response, otherwise
    /// stop retransmitting, finish it locally with 487, and CANCEL it should it answer
    /// later (§9.1).
    fn cancel_branch(
        &mut self,
        cid: u64,
        now: u64,
        media: &mut dyn MediaHook,
        src: SocketAddr,
        out: &mut Vec<Transmit>,
    ) {
        let Some(ct) = self.clients.get_mut(&cid) else {
            return;
        };
        if ct.state == ClientState::Completed || ct.cancel_sent || ct.cancel_pending {
            return;
        }
        if ct.got_provisional {
            self.send_cancel(cid, now, out);
            return;
        }
        ct.cancel_pending = true;
        ct.timers.disarm(Slot::Retransmit);
        let sid = ct.server;
        if let Some(sid) = sid {
            if !ct.final_done {
                let bytes = self.local_response(sid, 487, "Request Terminated", &[]);
                self.branch_final(sid, cid, 487, bytes, now, media, src, out);
            }
        }
    }

    fn send_cancel(&mut self, cid: u64, now: u64, out: &mut Vec<Transmit>) {
        let Some(ct) = self.clients.get_mut(&cid) else {
            return;
        };
        if ct.cancel_sent {
            return;
        }
        ct.cancel_sent = true;
        ct.cancel_pending = false;
        let Some(bytes) = build_cancel_or_ack(&ct.request, "CANCEL", None) else {
            return;
        };
        let hop = Hop {
            ruri: None,
            to: ct.to,
            transport: ct.transport,
        };
        let branch = ct.branch.clone();
        self.new_client_tx(0, &branch, "CANCEL", &hop, bytes.clone(), now);
        self.stats.forwarded_requests += 1;
        out.push(Transmit {
            to: hop.to,
            transport: hop.transport,
            bytes,
        });
    }

    fn on_ack(
        &mut self,
        msg: &Message<'_>,
        key: &str,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        if let Some(&sid) = self.server_index.get(key) {
            let t = self.cfg.timers;
            if let Some(tx) = self.servers.get_mut(&sid) {
                match tx.state {
                    ServerState::Completed => {
                        // §17.2.1: ACK of our non-2xx final; Timer I absorbs retransmissions.
                        tx.state = ServerState::Confirmed;
                        tx.timers.disarm(Slot::Retransmit);
                        tx.timers.disarm(Slot::Timeout);
                        let i = t.timer_ik(tx.reliable);
                        tx.timers.arm(
                            Slot::End,
                            now.saturating_add(i),
                            &mut self.timers,
                            Target::Server(sid),
                        );
                        return;
                    }
                    ServerState::Confirmed | ServerState::Proceeding | ServerState::Trying => {
                        self.stats.retransmissions_absorbed += 1;
                        return;
                    }
                    // An RFC 2543 ACK of a 2xx matches the INVITE: route it end to end.
                    ServerState::Accepted => {}
                }
            }
        }
        // ACK of a 2xx: end to end, stateless (§16.11 behaviour for the one request that
        // has no transaction).
        let loop_hash = self.loop_hash(msg);
        let (decision, pop) = self.route(msg, now);
        let Decision::Forward(hops) = decision else {
            self.stats.dropped += 1;
            return;
        };
        let Some(hop) = hops.into_iter().next() else {
            self.stats.dropped += 1;
            return;
        };
        let mut body = None;
        if let Some(MediaOp::Answer) = decide(MediaEvent::Request { method: "ACK" }, has_sdp(msg)) {
            let from_tag = msg.from_tag().unwrap_or("");
            let (f, t) = media_tags(MediaOp::Answer, true, from_tag, msg.to_tag());
            let ctx = MediaCtx {
                op: MediaOp::Answer,
                call_id: msg.call_id().unwrap_or(""),
                from_tag: f,
                to_tag: t,
                via_branch: None,
                source: src,
            };
            match media.media(&ctx, msg.body(), now) {
                MediaResult::NewBody(b) => body = Some(b),
                MediaResult::Failed { .. } => self.stats.media_failures += 1,
                MediaResult::Unchanged => {}
            }
        }
        let branch = self.branch(loop_hash, key, "ACK", 0);
        if let Ok(bytes) = self.build_request(
            msg,
            src,
            &hop,
            &branch,
            pop.as_ref(),
            false,
            body.as_deref(),
        ) {
            self.stats.stateless_forwards += 1;
            let _ = transport;
            out.push(Transmit {
                to: hop.to,
                transport: hop.transport,
                bytes,
            });
        }
    }

    // ----------------------------------------------------------------------------------
    // Responses

    fn on_response(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let (Ok(via), Ok(cseq), Some(status)) = (msg.top_via(), msg.cseq(), msg.status()) else {
            self.stats.dropped += 1;
            return;
        };
        if !self.is_our_via(&via) {
            self.stats.dropped += 1;
            return;
        }
        let branch = via.branch.unwrap_or("");
        if let Some(&cid) = self.client_index.get(&client_key(branch, cseq.method)) {
            self.on_client_response(cid, msg, status, src, transport, now, media, out);
            return;
        }
        if cseq.method == "INVITE" && (200..300).contains(&status) {
            // A 2xx retransmission (the client transaction ended on the first 2xx) or a
            // 2xx from a branch we no longer track: forward statelessly (§16.7, §17.1.1.2).
            let ck = format!("{branch}|{}", msg.to_tag().unwrap_or(""));
            if let Some(c) = self.ok_cache.get(&ck).cloned() {
                self.stats.stateless_forwards += 1;
                self.emit(out, c.to, c.transport, c.bytes);
                return;
            }
            let next = msg.vias().nth(1).and_then(|v| v.ok()).map(|(_, v)| v);
            let (Some(dest), Ok(bytes)) = (next.as_ref().and_then(via_destination), pop_via(msg))
            else {
                self.stats.dropped += 1;
                return;
            };
            self.stats.stateless_forwards += 1;
            self.emit(out, dest.0, dest.1, bytes);
            return;
        }
        self.stats.dropped += 1;
    }

    /// Pops our Via and runs the media hook for a response to be forwarded upstream.
    fn upstream_response(
        &mut self,
        msg: &Message<'_>,
        sid: u64,
        branch: &str,
        status: u16,
        others_pending: bool,
        src: SocketAddr,
        now: u64,
        media: &mut dyn MediaHook,
    ) -> Option<Vec<u8>> {
        let mut e = Editor::new(msg);
        e.remove_top_via().ok()?;
        let (had_sdp, method) = match self.servers.get(&sid) {
            Some(tx) => (tx.request_had_sdp, tx.method.clone()),
            None => (true, String::new()),
        };
        let method = msg
            .cseq()
            .map(|c| c.method)
            .unwrap_or(method.as_str())
            .to_owned();
        let op = decide(
            MediaEvent::Response {
                method: &method,
                status,
                request_had_sdp: had_sdp,
                other_branches_pending: others_pending,
            },
            has_sdp(msg),
        );
        if let Some(o @ (MediaOp::Offer | MediaOp::Answer)) = op {
            let ctx = MediaCtx {
                op: o,
                call_id: msg.call_id().unwrap_or(""),
                from_tag: msg.from_tag().unwrap_or(""),
                to_tag: msg.to_tag(),
                via_branch: Some(branch),
                source: src,
            };
            match media.media(&ctx, msg.body(), now) {
                MediaResult::NewBody(b) => e.set_body(&b),
                MediaResult::Failed { .. } => self.stats.media_failures += 1,
                MediaResult::Unchanged => {}
            }
            if o == MediaOp::Offer {
                if let Some(tx) = self.servers.get_mut(&sid) {
                    tx.media_engaged = true;
                }
            }
        }
        e.finish().ok()
    }

    fn on_client_response(
        &mut self,
        cid: u64,
        msg: &Message<'_>,
        status: u16,
        src: SocketAddr,
        transport: Transport,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let t = self.cfg.timers;
        let Some(ct) = self.clients.get_mut(&cid) else {
            return;
        };
        let target = Target::Client(cid);
        // Our own CANCELs: absorb the responses.
        let Some(sid) = ct.server else {
            if status >= 200 && ct.state != ClientState::Completed {
                ct.state = ClientState::Completed;
                ct.timers.disarm(Slot::Retransmit);
                ct.timers.disarm(Slot::Timeout);
                let k = t.timer_ik(ct.reliable);
                ct.timers
                    .arm(Slot::End, now.saturating_add(k), &mut self.timers, target);
            } else if status < 200 {
                ct.state = ClientState::Proceeding;
            }
            return;
        };
        let branch = ct.branch.clone();
        if ct.state == ClientState::Completed {
            // Retransmitted final: the INVITE transaction re-sends its ACK (§17.1.1.2).
            if let (true, Some(ack)) = (ct.invite && status >= 300, ct.ack.clone()) {
                let (to, tr) = (ct.to, ct.transport);
                out.push(Transmit {
                    to,
                    transport: tr,
                    bytes: ack,
                });
            }
            return;
        }
        if status < 200 {
            ct.state = ClientState::Proceeding;
            ct.got_provisional = true;
            if ct.invite {
                ct.timers.disarm(Slot::Retransmit);
                ct.timers.disarm(Slot::Timeout);
                if status > 100 {
                    ct.timers.arm(
                        Slot::TimerC,
                        now.saturating_add(t.timer_c),
                        &mut self.timers,
                        target,
                    );
                }
            }
            let cancel_now = ct.cancel_pending && !ct.cancel_sent;
            let final_done = ct.final_done;
            if cancel_now {
                self.send_cancel(cid, now, out);
            }
            if status > 100 && !final_done {
                if let Ok(Some(_)) = msg.contacts().map(|c| {
                    matches!(c, super::header::Contact::List(ref l) if !l.is_empty()).then_some(())
                }) {
                    self.learn_contact(msg, src, transport, false, now);
                }
                let pending = self.servers.get(&sid).is_some_and(|s| s.pending > 1);
                if let Some(bytes) =
                    self.upstream_response(msg, sid, &branch, status, pending, src, now, media)
                {
                    self.stats.forwarded_responses += 1;
                    self.server_send_provisional(sid, bytes, out);
                }
            }
            return;
        }
        if ct.invite && status < 300 {
            // 2xx: the INVITE client transaction ends (§17.1.1.2); retransmissions of the
            // 2xx take the stateless path (served from the cache below).
            let final_done = ct.final_done;
            self.remove_client(cid);
            self.learn_contact(msg, src, transport, false, now);
            let Some(bytes) =
                self.upstream_response(msg, sid, &branch, status, false, src, now, media)
            else {
                return;
            };
            if let Some(tx) = self.servers.get(&sid) {
                if self.ok_cache.len() < self.cfg.max_table_entries {
                    let ck = format!("{branch}|{}", msg.to_tag().unwrap_or(""));
                    self.ok_cache.insert(
                        ck,
                        Cached2xx {
                            bytes: bytes.clone(),
                            to: tx.reply_to,
                            transport: tx.transport,
                            expires_at_ns: now.saturating_add(t.t64()),
                        },
                    );
                }
            }
            self.stats.forwarded_responses += 1;
            if final_done {
                // The branch was already finished locally (cancelled before it answered);
                // the 2xx must still reach the caller, who will ACK and BYE it.
                if let Some(tx) = self.servers.get(&sid) {
                    let (to, tr) = (tx.reply_to, tx.transport);
                    self.emit(out, to, tr, bytes);
                }
                return;
            }
            self.branch_final(sid, cid, status, bytes, now, media, src, out);
            return;
        }
        // Final non-2xx (INVITE: ACK it, Timer D) or any final (non-INVITE: Timer K).
        ct.state = ClientState::Completed;
        ct.timers.disarm(Slot::Retransmit);
        ct.timers.disarm(Slot::Timeout);
        ct.timers.disarm(Slot::TimerC);
        let final_done = ct.final_done;
        if ct.invite {
            if let Some(ack) = build_cancel_or_ack(
                &ct.request,
                "ACK",
                msg.header(HeaderName::To).map(|h| h.value),
            ) {
                ct.ack = Some(ack.clone());
                out.push(Transmit {
                    to: ct.to,
                    transport: ct.transport,
                    bytes: ack,
                });
            }
            let d = t.timer_d(ct.reliable);
            ct.timers
                .arm(Slot::End, now.saturating_add(d), &mut self.timers, target);
        } else {
            let k = t.timer_ik(ct.reliable);
            ct.timers
                .arm(Slot::End, now.saturating_add(k), &mut self.timers, target);
        }
        if final_done {
            return;
        }
        let Some(bytes) = self.upstream_response(msg, sid, &branch, status, true, src, now, media)
        else {
            return;
        };
        self.branch_final(sid, cid, status, bytes, now, media, src, out);
    }

    /// Accounts a branch's final response in the response context (§16.7 items 5–10).
    fn branch_final(
        &mut self,
        sid: u64,
        cid: u64,
        status: u16,
        bytes: Vec<u8>,
        now: u64,
        media: &mut dyn MediaHook,
        src: SocketAddr,
        out: &mut Vec<Transmit>,
    ) {
        if let Some(ct) = self.clients.get_mut(&cid) {
            if ct.final_done {
                return;
            }
            ct.final_done = true;
        }
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        tx.pending = tx.pending.saturating_sub(1);
        let invite = tx.invite;
        if (200..300).contains(&status) {
            let first = !tx.got_2xx;
            let others: Vec<u64> = tx.branches.iter().copied().filter(|&b| b != cid).collect();
            self.server_send_final(sid, bytes, status, now, media, src, out);
            if invite && first {
                for b in others {
                    self.cancel_branch(b, now, media, src, out);
                }
            }
            return;
        }
        if tx.got_2xx || !matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            return;
        }
        if tx.best.as_ref().is_none_or(|(s, _)| better(status, *s)) {
            tx.best = Some((status, bytes));
        }
        if invite && status >= 600 {
            let others: Vec<u64> = tx.branches.iter().copied().filter(|&b| b != cid).collect();
            for b in others {
                self.cancel_branch(b, now, media, src, out);
            }
        }
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        if tx.pending > 0 {
            return;
        }
        let Some((mut st, mut b)) = tx.best.take() else {
            return;
        };
        if tx.cancelled && st == 408 {
            st = 487;
            b = self.local_response(sid, 487, "Request Terminated", &[]);
        }
        if st == 503 {
            // §16.7 item 6: a 503 is not passed upstream as such.
            st = 500;
            b = with_status_line(&b, "SIP/2.0 500 Server Internal Error");
        }
        self.stats.forwarded_responses += 1;
        self.server_send_final(sid, b, st, now, media, src, out);
    }

    // ----------------------------------------------------------------------------------
    // Timers

    fn on_timer(
        &mut self,
        deadline: u64,
        tref: TimerRef,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let t = self.cfg.timers;
        let local = self.cfg.local;
        match tref.target {
            Target::Client(cid) => {
                let Some(ct) = self.clients.get_mut(&cid) else {
                    return;
                };
                if !ct.timers.take_if_current(tref.slot, deadline) {
                    return;
                }
                let target = tref.target;
                match tref.slot {
                    Slot::Retransmit => {
                        if ct.state == ClientState::Completed
                            || (ct.invite && ct.state != ClientState::Calling)
                        {
                            return;
                        }
                        // A: doubles; E: doubles up to T2, and T2 once provisional (§17.1.2.2).
                        ct.timers.interval = if !ct.invite && ct.state == ClientState::Proceeding {
                            t.t2
                        } else {
                            t.next_interval(ct.timers.interval, !ct.invite)
                        }
                        .max(1);
                        let next = now.saturating_add(ct.timers.interval);
                        ct.timers
                            .arm(Slot::Retransmit, next, &mut self.timers, target);
                        let tx = Transmit {
                            to: ct.to,
                            transport: ct.transport,
                            bytes: ct.request.clone(),
                        };
                        self.stats.retransmissions_sent += 1;
                        out.push(tx);
                    }
                    Slot::Timeout => {
                        if ct.state == ClientState::Completed {
                            return;
                        }
                        self.client_timed_out(cid, now, media, out);
                    }
                    Slot::TimerC => {
                        if ct.state == ClientState::Completed {
                            return;
                        }
                        if ct.got_provisional {
                            // §16.8: CANCEL the branch; give it 64·T1 to answer, then 408.
                            ct.timers.arm(
                                Slot::Timeout,
                                now.saturating_add(t.t64()),
                                &mut self.timers,
                                target,
                            );
                            self.send_cancel(cid, now, out);
                        } else {
                            self.client_timed_out(cid, now, media, out);
                        }
                    }
                    Slot::End => {
                        self.remove_client(cid);
                    }
                }
            }
            Target::Server(sid) => {
                let Some(tx) = self.servers.get_mut(&sid) else {
                    return;
                };
                if !tx.timers.take_if_current(tref.slot, deadline) {
                    return;
                }
                match (tref.slot, tx.state) {
                    (Slot::Retransmit, ServerState::Completed) => {
                        // Timer G.
                        tx.timers.interval = t.next_interval(tx.timers.interval, true).max(1);
                        let next = now.saturating_add(tx.timers.interval);
                        tx.timers
                            .arm(Slot::Retransmit, next, &mut self.timers, tref.target);
                        if let Some(b) = tx.last_response.clone() {
                            let (to, tr) = (tx.reply_to, tx.transport);
                            self.stats.retransmissions_sent += 1;
                            self.emit(out, to, tr, b);
                        }
                    }
                    (Slot::Timeout, ServerState::Trying | ServerState::Proceeding) => {
                        // Safety net: no branch answered in time.
                        let code = if tx.cancelled { 487 } else { 408 };
                        let reason = if tx.cancelled {
                            "Request Terminated"
                        } else {
                            "Request Timeout"
                        };
                        let b = self.local_response(sid, code, reason, &[]);
                        self.server_send_final(sid, b, code, now, media, local, out);
                    }
                    (Slot::Timeout | Slot::End, _) => {
                        // Timer H (no ACK), I, J, L.
                        self.remove_server(sid);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Timer B/F (or C without a provisional): the branch counts as a 408 (§16.7 item 2...).
    fn client_timed_out(
        &mut self,
        cid: u64,
        now: u64,
        media: &mut dyn MediaHook,
        out: &mut Vec<Transmit>,
    ) {
        let local = self.cfg.local;
        let Some(ct) = self.remove_client(cid) else {
            return;
        };
        self.stats.timeouts += 1;
        let Some(sid) = ct.server else { return };
        if ct.final_done {
            return;
        }
        // Re-insert a finished marker so branch_final can account it.
        let bytes = self.local_response(sid, 408, "Request Timeout", &[]);
        self.clients.insert(
            cid,
            ClientTx {
                final_done: false,
                ..ct
            },
        );
        self.branch_final(sid, cid, 408, bytes, now, media, local, out);
        self.clients.remove(&cid);
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

fn options_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Allow", ALLOW),
        ("Accept", "application/sdp"),
        ("Supported", ""),
    ]
}

/// Removes the top Via of a response.
fn pop_via(msg: &Message<'_>) -> Result<Vec<u8>, EditError> {
    let mut e = Editor::new(msg);
    e.remove_top_via()?;
    e.finish()
}

/// Builds the CANCEL (§9.1) or the ACK of a non-2xx final (§17.1.1.3) for a request we
/// sent: same Request-URI, top Via, Call-ID, From, CSeq number and Route; the ACK takes the
/// response's To.
fn build_cancel_or_ack(request: &[u8], method: &str, to: Option<&str>) -> Option<Vec<u8>> {
    let m = Message::parse(request).ok()?;
    let ruri = m.request_uri_str()?;
    let via = m.top_via().ok()?.raw;
    let cseq = m.cseq().ok()?.seq;
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
    );
    for kind in [HeaderName::From, HeaderName::CallId] {
        let h = m.header(kind)?;
        let _ = write!(s, "{}: {}\r\n", h.name, h.value);
    }
    let to = match to {
        Some(t) => t,
        None => m.header(HeaderName::To)?.value,
    };
    let _ = write!(s, "To: {to}\r\nCSeq: {cseq} {method}\r\n");
    for h in m.headers_of(HeaderName::Route) {
        let _ = write!(s, "Route: {}\r\n", h.value);
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Some(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for (ip, p) in [
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.32.0.1", false),
            ("192.168.1.5", true),
            ("100.64.0.1", true),
            ("100.128.0.1", false),
            ("127.0.0.1", false),
            ("203.0.113.9", false),
            ("fd00::1", true),
            ("fe80::1", true),
            ("2001:db8::1", false),
        ] {
            assert_eq!(is_private(ip.parse().unwrap()), p, "{ip}");
        }
    }

    #[test]
    fn response_selection() {
        assert!(better(486, 503));
        assert!(better(302, 404));
        assert!(better(603, 302));
        assert!(!better(404, 486), "same class: the first stays");
        assert!(!better(500, 600));
        assert_eq!(
            with_status_line(
                b"SIP/2.0 503 Busy\r\nX: y\r\n\r\n",
                "SIP/2.0 500 Server Internal Error"
            ),
            b"SIP/2.0 500 Server Internal Error\r\nX: y\r\n\r\n"
        );
        assert_eq!(status_of(b"SIP/2.0 487 x"), Some(487));
        assert_eq!(status_of(b"INVITE x"), None);
    }

    #[test]
    fn cancel_and_ack_building() {
        let req = b"INVITE sip:bob@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\r\nRoute: <sip:r@1.2.3.4;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        let c = build_cancel_or_ack(req, "CANCEL", None).unwrap();
        let m = Message::parse(&c).unwrap();
        assert_eq!(m.method(), Some("CANCEL"));
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKp"));
        assert_eq!(m.vias().count(), 1);
        assert_eq!(m.cseq().unwrap().seq, 7);
        assert_eq!(m.route_set(HeaderName::Route).unwrap().len(), 1);
        let a = build_cancel_or_ack(req, "ACK", Some("<sip:bob@x>;tag=b9")).unwrap();
        let m = Message::parse(&a).unwrap();
        assert_eq!(m.to_tag(), Some("b9"));
        assert_eq!(m.cseq().unwrap().method, "ACK");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv(0, &[b"a"]), fnv(0, &[b"a"]));
        assert_ne!(fnv(0, &[b"a", b"b"]), fnv(0, &[b"ab"]));
        assert_ne!(fnv(1, &[b"a"]), fnv(0, &[b"a"]));
    }
}
