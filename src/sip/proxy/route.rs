//! Where a request goes (RFC 3261 §16.4 Route processing, §16.5 target determination):
//! our own top Route is popped (loose routing); a remaining Route or, in a dialog, the
//! Request-URI is the next hop; a Request-URI in one of our domains is a registration, an
//! OPTIONS to us, or a location-service lookup forked to every binding; other domains go
//! to `outbound` or get 403. No DNS: targets must be IP literals (or remembered NAT
//! sources, see `nat`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::nat::{contact_key, is_private};
use super::state::Proxy;
use crate::sip::header::{NameAddr, NameAddrIter};
use crate::sip::number::{number_aor, sip_phone_number, tel_number};
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::LocationStore;
use crate::sip::transport::Transport;
use crate::sip::uri::{SipUri, Uri};

/// Where a request goes next.
#[derive(Clone, Debug)]
pub(super) struct Hop {
    /// New Request-URI (location lookup), if it changes.
    pub(super) ruri: Option<String>,
    pub(super) to: SocketAddr,
    pub(super) transport: Transport,
    /// A Route to put on top (the front holding a TCP/TLS binding, RFC 3327 style).
    pub(super) route: Option<String>,
}

/// What routing decided for a request.
#[derive(Clone, Debug)]
pub(super) enum Decision {
    /// A REGISTER for one of our domains: the registrar answers it.
    Register,
    /// An OPTIONS to us (no user part): answered 200 here.
    Options,
    Reject(u16, &'static str),
    /// Forward to these hops (more than one: parallel forking).
    Forward(Vec<Hop>),
}

/// The hop to a binding held by another front (`front`, its SIP URI): the request goes
/// to that front, with a Route naming it on top and the binding's contact as Request-URI.
fn via_front(front: &str, contact: &str) -> Option<Hop> {
    let f = SipUri::parse(front).ok()?;
    let ip = f.host.ip()?;
    Some(Hop {
        ruri: Some(contact.to_owned()),
        to: SocketAddr::new(ip, f.port_or_default()),
        transport: Transport::of_uri(&f),
        route: Some(format!("<{front};lr>")),
    })
}

/// The hop to a binding's Contact address, over a new connection, once the flow it
/// registered over is gone (`flows`): the transport the Contact names, or the one it
/// registered over when it names UDP (a phone that registered over TCP/TLS listens there).
/// `None` for a hostname (no DNS here).
fn contact_hop(u: &SipUri<'_>, contact: &str, registered: Transport) -> Option<Hop> {
    let ip = u.host.ip()?;
    let transport = match Transport::of_uri(u) {
        Transport::Udp => registered,
        t => t,
    };
    let port = match (u.port, transport) {
        (Some(p), _) => p,
        (None, Transport::Tls) => 5061,
        (None, _) => 5060,
    };
    Some(Hop {
        ruri: Some(contact.to_owned()),
        to: SocketAddr::new(ip, port),
        transport,
        route: None,
    })
}

/// RFC 3261 §18.1.1: a request larger than this (the path MTU unknown) goes over a
/// congestion-controlled transport.
pub(super) const UDP_REQUEST_LIMIT: usize = 1300;

/// The hop over TCP for a request of `size` bytes to another front (a hop with its Route)
/// that is over [`UDP_REQUEST_LIMIT`]: a front listens for TCP on its SIP port. Requests to
/// phones keep the transport they registered with.
pub(super) fn to_front_over_tcp(hop: &Hop, size: usize) -> Option<Hop> {
    (hop.route.is_some() && hop.transport == Transport::Udp && size > UDP_REQUEST_LIMIT).then(
        || Hop {
            transport: Transport::Tcp,
            ..hop.clone()
        },
    )
}

/// Our own top Route entries (one, or two after double record-routing), to be removed.
#[derive(Clone, Debug)]
pub(super) struct PopRoute {
    /// Per Route header touched, in order: its index and what is left of its value
    /// (`None`: remove the line).
    pub(super) edits: Vec<(usize, Option<String>)>,
}

impl<S: LocationStore> Proxy<S> {
    /// The routing decision of §16.4/§16.5 (see the module docs), plus our Route to pop.
    pub(super) fn route(&self, msg: &Message<'_>, now: u64) -> (Decision, Option<PopRoute>) {
        let routes = msg.route_set(HeaderName::Route).unwrap_or_default();
        let mut pop = None;
        let mut popped = 0;
        if let Some(first) = routes.first() {
            if first.sip_uri().is_some_and(|u| self.is_our_route(u)) {
                // RFC 5658: after double record-routing our second entry (the other
                // transport's) follows the first; both are ours to remove.
                let second = routes.get(1).is_some_and(|r| {
                    r.sip_uri().is_some_and(|u| {
                        self.is_our_route(u) && u.raw != first.sip_uri().map_or("", |f| f.raw)
                    })
                });
                let n = 1 + usize::from(second);
                pop = self.pop_route_edit(msg, n);
                if pop.is_some() {
                    popped = n;
                }
            }
        }
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
        if method != "REGISTER" {
            if let Some(d) = self.route_number(&ruri, now) {
                return (d, pop);
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
                            route: None,
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
        (self.to_outbound(&ruri), pop)
    }

    /// A request for a domain we do not serve: to `outbound`, over its transport, else 403.
    /// One that must go over TLS (a `sips:` Request-URI or `;transport=tls`: RFC 3261 §26.2
    /// wants TLS on every hop) is refused at once with 503 when `outbound` is not reached
    /// over TLS: never downgraded to UDP or TCP.
    fn to_outbound(&self, ruri: &Uri<'_>) -> Decision {
        let Some(next) = self.cfg.outbound else {
            return Decision::Reject(403, "Forbidden - Domain Not Served");
        };
        let tls_only = ruri
            .as_sip()
            .is_some_and(|u| Transport::of_uri(u) == Transport::Tls);
        if tls_only && next.transport != Transport::Tls {
            return Decision::Reject(503, "Service Unavailable - No TLS Route");
        }
        Decision::Forward(vec![Hop {
            ruri: None,
            to: next.addr,
            transport: next.transport,
            route: None,
        }])
    }

    /// A number (RFC 3966: a `tel:` URI, or `user=phone` in one of our domains): looked up
    /// without its visual separators (a `tel:` in the default domain); one that is not
    /// ours goes to `outbound`, else 404.
    fn route_number(&self, ruri: &Uri<'_>, now: u64) -> Option<Decision> {
        let aor = match ruri {
            Uri::Tel(t) => number_aor(&tel_number(t)?, &self.default_domain()),
            Uri::Sip(u) if self.is_our_uri(u) => number_aor(&sip_phone_number(u)?, u.host_raw),
            _ => return None,
        };
        let uri = Uri::parse(&aor).ok()?;
        Some(match self.lookup(&uri, now) {
            Decision::Reject(404, _) if self.cfg.outbound.is_some() => self.to_outbound(ruri),
            d => d,
        })
    }

    fn hop_to(&self, route: &NameAddr<'_>, ruri: Option<String>, now: u64) -> Decision {
        match route.sip_uri().and_then(|u| self.resolve(u, now)) {
            Some((to, transport)) => Decision::Forward(vec![Hop {
                ruri,
                to,
                transport,
                route: None,
            }]),
            None => Decision::Reject(502, "Bad Gateway - Unresolvable Route"),
        }
    }

    /// The edits removing the first `n` Route entries (which may span Route headers).
    fn pop_route_edit(&self, msg: &Message<'_>, n: usize) -> Option<PopRoute> {
        let mut edits = Vec::new();
        let mut left = n;
        for (idx, h) in msg.headers.iter().enumerate() {
            if left == 0 {
                break;
            }
            if h.kind != HeaderName::Route {
                continue;
            }
            let mut cut = 0;
            for entry in NameAddrIter::new(h.value) {
                if left == 0 {
                    break;
                }
                cut = entry.ok()?.next;
                left -= 1;
            }
            let rest = h.value.get(cut..).unwrap_or("").trim();
            edits.push((idx, (!rest.is_empty()).then(|| rest.to_owned())));
        }
        (left == 0).then_some(PopRoute { edits })
    }

    /// Resolves a URI to a next hop without DNS: a remembered NAT source first, then an IP
    /// literal.
    fn resolve(&self, u: &SipUri<'_>, now: u64) -> Option<(SocketAddr, Transport)> {
        if let Some(e) = self.nat.get(&contact_key(u)) {
            // A flow that is gone: a new connection to the URI's own address instead.
            if e.expires_at_ns > now && !self.flow_is_closed(e.transport, e.source) {
                return Some((e.source, e.transport));
            }
        }
        let ip = u.host.ip()?;
        Some((
            SocketAddr::new(ip, u.port_or_default()),
            Transport::of_uri(u),
        ))
    }

    /// Location service lookup (§16.5): bindings → hops, NAT-aware.
    pub(super) fn lookup(&self, ruri: &Uri<'_>, now: u64) -> Decision {
        let candidates = self.aor_candidates(ruri);
        if candidates.is_empty() {
            return Decision::Reject(404, "Not Found");
        }
        // RFC 5630 §3.1.3: `sips:bob@example.com` is Bob's AOR asked to be reached over TLS
        // only; his bindings stand under `sip:`, and only his TLS ones qualify.
        let secure = ruri
            .as_sip()
            .is_some_and(|u| u.scheme == crate::sip::uri::Scheme::Sips);
        let mut known = false;
        // An outbound binding whose flow is gone was found (`flows`).
        let mut flow_failed = false;
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
                if b.path.is_none() && self.flow_is_closed(b.transport, b.source) {
                    if b.outbound {
                        flow_failed = true;
                    } else if let Some(hop) = contact_hop(&u, &b.uri, b.transport) {
                        if !secure || hop.transport == Transport::Tls {
                            hops.push(hop);
                        }
                    }
                    continue;
                }
                if let Some(front) = b.path.as_deref().filter(|_| b.transport.reliable()) {
                    // Registered over TCP/TLS at another front: only its connection reaches
                    // the phone, so the request goes there, routed through that front.
                    if let Some(hop) = via_front(front, &b.uri).filter(|_| !secure) {
                        hops.push(hop);
                    }
                    continue;
                }
                let private = u.host.ip().is_some_and(is_private);
                // The evidence seen here, or stored with the binding by the front that took
                // it (a shared location service).
                let nat_seen = b.nat
                    || self
                        .nat
                        .get(&contact_key(&u))
                        .is_some_and(|e| e.source == b.source && e.expires_at_ns > now);
                let (to, transport) = if private || nat_seen || u.host.ip().is_none() {
                    let t = self.nat.get(&contact_key(&u)).map_or(
                        if b.nat {
                            b.transport
                        } else {
                            Transport::of_uri(&u)
                        },
                        |e| e.transport,
                    );
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
                if secure && transport != Transport::Tls {
                    continue;
                }
                hops.push(Hop {
                    ruri: Some(b.uri.clone()),
                    to,
                    transport,
                    route: None,
                });
            }
            if !hops.is_empty() {
                return Decision::Forward(hops);
            }
        }
        if flow_failed {
            Decision::Reject(430, "Flow Failed")
        } else if known {
            Decision::Reject(480, "Temporarily Unavailable")
        } else {
            Decision::Reject(404, "Not Found")
        }
    }
}
