//! A sans-IO, transaction-stateful SIP proxy and registrar core (RFC 3261 §16, §17;
//! RFC 3581; RFC 6026 for the INVITE server transaction after a 2xx).
//!
//! The driver feeds [`Proxy::handle_incoming`] one datagram (or one framed TCP message)
//! with its source and the current time, calls [`Proxy::handle_timeout`] when
//! [`Proxy::poll_timeout`] says, and sends every returned [`Transmit`]. Nothing here does
//! I/O or reads the clock; no input makes it panic.
//!
//! What it does with a request (after [`check_request`](crate::sip::check_request) and
//! RFC 3261 §16.3):
//! - retransmissions are answered from the server transaction, never forwarded again;
//!   ACK of a non-2xx final is absorbed; ACK of a 2xx is routed end to end, statelessly;
//! - CANCEL is answered 200 and forwarded on every pending branch (after a provisional
//!   response, §9.1); branches that never answered are finished locally with 487;
//! - loops (§16.3 item 4: our Via with the branch's loop hash) get 482, Max-Forwards 0
//!   gets 483 (an OPTIONS then gets 200, §11);
//! - Route: our own top Route is popped (loose routing); a remaining Route or, in a dialog,
//!   the Request-URI is the next hop; a Request-URI in one of our domains is looked up in
//!   the location service (REGISTER goes to the [`Registrar`](crate::sip::registrar::Registrar),
//!   OPTIONS without a user part is answered 200 here) and forked in parallel to every
//!   binding; other domains get 403 unless `outbound` is set. No DNS: targets must be IP
//!   literals.
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
//! - Media: [`MediaHook`] is asked per the [`media::decide`](crate::sip::media::decide)
//!   table; a new body replaces the old one and Content-Length is fixed.
//!
//! Memory is bounded: live transactions are capped (beyond the cap new requests get 503
//! with Retry-After), every transaction ends by a timer, and the side tables (NAT contacts,
//! 2xx cache, known AORs) are capped and swept.
//!
//! ## Rooms
//!
//! Each call into the proxy builds one `Cx` (the time, the source and transport, the media
//! hook, the messages to send) and hands it down. From the top:
//! - this file: the entry points, and what cannot be parsed;
//! - `request`: §16.3–16.6, from validity checks to forwarding, with the interception
//!   point where modules that answer requests themselves (auth, presence, relay sets) go;
//! - `timers`: the §17 timers and housekeeping;
//! - `response`: §16.7 and the response context of a forked request;
//! - `cancel`: CANCEL from upstream, cancelling branches, building CANCEL and ACK;
//! - `tx`: creating, answering through and removing transactions;
//! - `services`: what the presence agent and message store (`sip::presence`) are told
//!   at the interception point, and the requests they send;
//! - `route`: §16.4–16.5, where a request goes; `nat`: the NAT contact table; `flows`:
//!   TCP/TLS flows that are gone (430 Flow Failed, or a new connection to the Contact);
//! - `ident`: our host, Route and Via, the branches and tags we mint, loop detection;
//! - `state`: configuration, counters, tables and `Cx`.
//!
//! Each file calls only into the files listed below it.
#![forbid(unsafe_code)]

mod cancel;
mod flows;
mod ident;
mod nat;
mod request;
mod response;
mod route;
mod services;
mod state;
mod timers;
mod tx;

use std::net::SocketAddr;

use self::state::{Cx, HOUSEKEEPING_NS};
use crate::sip::auth::AuthHook;
use crate::sip::media::MediaHook;
use crate::sip::message::{build_response, ReplyContext};
use crate::sip::parse::{Message, ParseError};
use crate::sip::registrar::LocationStore;
use crate::sip::transport::{Transmit, Transport};

pub use self::nat::{is_private, via_mismatch};
pub use self::state::{Proxy, ProxyConfig, ProxyStats};

impl<S: LocationStore> Proxy<S> {
    /// Earliest deadline at which [`Proxy::handle_timeout`] has work (possibly early).
    pub fn poll_timeout(&self) -> Option<u64> {
        let services = self.presence.as_ref().and_then(|s| s.poll_timeout());
        [
            self.timers.next_deadline(),
            self.next_housekeeping,
            services,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One datagram (or one framed TCP message) from `src`, served without authentication.
    pub fn handle_incoming(
        &mut self,
        data: &[u8],
        src: SocketAddr,
        transport: Transport,
        now_ns: u64,
        media: &mut dyn MediaHook,
    ) -> Vec<Transmit> {
        self.handle_incoming_with_auth(data, src, transport, now_ns, media, None)
    }

    /// One datagram (or one framed TCP message) from `src`; new requests are put to `auth`
    /// (see [`crate::sip::auth`]) before they are routed.
    pub fn handle_incoming_with_auth<'m>(
        &mut self,
        data: &[u8],
        src: SocketAddr,
        transport: Transport,
        now_ns: u64,
        media: &'m mut dyn MediaHook,
        auth: Option<&'m mut dyn AuthHook>,
    ) -> Vec<Transmit> {
        self.stats.received += 1;
        if self.next_housekeeping.is_none() {
            self.next_housekeeping = Some(now_ns.saturating_add(HOUSEKEEPING_NS));
        }
        self.flow_seen(transport, src);
        let mut cx = Cx::message(now_ns, src, transport, media);
        cx.auth = auth;
        // RFC 5626 §4.4.1: CRLFCRLF ping → CRLF pong on streams; ignored on UDP.
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            self.stats.keepalives += 1;
            if transport.reliable() && data.len() >= 4 {
                cx.push(src, transport, b"\r\n".to_vec());
            }
            return cx.out;
        }
        match Message::parse_with(data, transport.framing()) {
            Err(e) => self.on_unparseable(data, e, &mut cx),
            Ok(msg) if msg.is_request() => {
                self.stats.requests += 1;
                self.on_request(&msg, &mut cx);
            }
            Ok(msg) => {
                self.stats.responses += 1;
                self.on_response(&msg, &mut cx);
            }
        }
        cx.out
    }

    /// Fires due timers (retransmissions A/E/G, timeouts B/F/H/C, cleanup D/I/J/K/L) and
    /// housekeeping (registrar expiry, table sweeps).
    pub fn handle_timeout(&mut self, now_ns: u64, media: &mut dyn MediaHook) -> Vec<Transmit> {
        let mut cx = Cx::timer(now_ns, self.cfg.local, media);
        self.fire_due(&mut cx);
        self.service_timers(&mut cx);
        if self.next_housekeeping.is_none_or(|h| h <= now_ns) {
            self.housekeeping(now_ns);
            self.next_housekeeping = Some(now_ns.saturating_add(HOUSEKEEPING_NS));
        }
        cx.out
    }

    /// A request we sent to `to` that the transport could not deliver (no connection could
    /// be made: refused, timed out, or a TLS handshake that failed). RFC 3261 §16.9 (and
    /// §8.1.3.1): the branch ends as if `to` had answered 503, so the caller hears at once
    /// instead of at Timer B/F. Responses, ACKs and whatever is not ours are forgotten; the
    /// ACK of that 503 is not sent (there is no connection to send it on).
    pub fn handle_transport_error(
        &mut self,
        request: &[u8],
        to: SocketAddr,
        transport: Transport,
        now_ns: u64,
        media: &mut dyn MediaHook,
    ) -> Vec<Transmit> {
        let Ok(msg) = Message::parse_with(request, transport.framing()) else {
            return Vec::new();
        };
        if !msg.is_request() || msg.method() == Some("ACK") {
            return Vec::new();
        }
        self.stats.transport_errors += 1;
        let reply = ReplyContext::from_message(&msg);
        let bytes = build_response(&reply, 503, "Service Unavailable", Some("tperr"), &[]);
        let Ok(answer) = Message::parse_with(&bytes, transport.framing()) else {
            return Vec::new();
        };
        let mut cx = Cx::message(now_ns, to, transport, media);
        self.on_response(&answer, &mut cx);
        let mut out = cx.out;
        out.retain(|t| !(t.to == to && t.transport == transport && t.bytes.starts_with(b"ACK ")));
        out
    }

    /// What does not parse: a request whose Vias can be salvaged gets the parser's status
    /// (400, 413, 505...) without a transaction; anything else is dropped.
    fn on_unparseable(&mut self, data: &[u8], e: ParseError, cx: &mut Cx<'_>) {
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
        let (src, transport) = (cx.src, cx.transport);
        self.emit(cx, src, transport, bytes);
    }
}
