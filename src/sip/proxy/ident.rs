//! Who we are on the wire: recognising our own host, Route and Via; the branches and tags
//! we mint (§16.6 item 8, §8.2.6.2), and loop detection by branch (§16.3 item 4).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use super::state::Proxy;
use crate::sip::auth::Credentials;
use crate::sip::header::Via;
use crate::sip::media::MediaOp;
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::LocationStore;
use crate::sip::transport::Transport;
use crate::sip::uri::{Host, SipUri};

/// FNV-1a, 64 bit: stable across runs, used for branch and tag derivation.
pub(super) use crate::sip::hash::fnv;

/// Borrows what [`Proxy::media_direction`] returned, for a `MediaCtx`.
pub(super) fn names(d: &Option<[String; 2]>) -> Option<[&str; 2]> {
    d.as_ref().map(|[a, b]| [a.as_str(), b.as_str()])
}

impl<S: LocationStore> Proxy<S> {
    /// Our address toward a peer at `peer` over `transport`: TLS has a port of its own;
    /// when bridging networks, the (advertised) address on the peer's network
    /// ([`SipNetworks`](crate::sip::networks::SipNetworks)).
    pub(super) fn local_for(&self, transport: Transport, peer: IpAddr) -> SocketAddr {
        match (transport, self.cfg.local_tls) {
            (Transport::Tls, Some(a)) => a,
            _ => self
                .cfg
                .networks
                .address_for(peer)
                .map_or(self.cfg.local, |a| a.advertised),
        }
    }

    /// Our Record-Route entry for the side of a dialog that uses `transport` and on which
    /// the peer is at `peer`: TLS names our TLS port with `transport=tls` (`sips:` when the
    /// request asked for end-to-end TLS, RFC 5630 §3.1.3); UDP and TCP share the plain
    /// entry, on the address of the peer's network.
    pub(super) fn record_route_for(
        &self,
        transport: Transport,
        sips: bool,
        peer: IpAddr,
    ) -> String {
        match (transport, self.cfg.local_tls) {
            (Transport::Tls, Some(a)) if sips => format!("<sips:{a};lr>"),
            (Transport::Tls, Some(a)) => format!("<sip:{a};transport=tls;lr>"),
            _ => format!("<sip:{};lr>", self.local_for(transport, peer)),
        }
    }

    /// The interface names for a media step whose SDP goes from a peer at `sender` to one
    /// at `receiver`, in the order ng `direction` has them (an offer's sender first, an
    /// answer's receiver first: the from-tag side's); `None` when not bridging networks.
    pub(super) fn media_direction(
        &self,
        op: MediaOp,
        sender: IpAddr,
        receiver: IpAddr,
    ) -> Option<[String; 2]> {
        let n = &self.cfg.networks;
        if !n.is_bridging() || op == MediaOp::Delete {
            return None;
        }
        let (s, r) = (
            n.network_of(sender).to_owned(),
            n.network_of(receiver).to_owned(),
        );
        Some(if op == MediaOp::Offer { [s, r] } else { [r, s] })
    }

    /// Whether `port` is one of our listen ports on `ip`.
    fn is_our_port(&self, port: u16) -> bool {
        port == self.cfg.local.port()
            || self.cfg.local_tls.is_some_and(|a| a.port() == port)
            || self.cfg.networks.has_port(port)
    }

    /// Whether `ip` is one of our listen addresses.
    fn is_our_ip(&self, ip: IpAddr) -> bool {
        ip == self.cfg.local.ip() || self.cfg.networks.is_ours(ip)
    }

    fn is_our_host(&self, host: &Host<'_>, port: Option<u16>) -> bool {
        let port_ok = port.is_none_or(|p| self.is_our_port(p));
        match host.ip() {
            Some(ip) if self.is_our_ip(ip) => port_ok,
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
    pub(super) fn is_our_uri(&self, u: &SipUri<'_>) -> bool {
        self.is_our_host(&u.host, u.port)
    }

    /// Whether a credentials value names one of our domains as its realm.
    pub(super) fn is_our_realm(&self, credentials: &str) -> bool {
        Credentials::parse(credentials).is_ok_and(|c| {
            c.realm
                .eq_ignore_ascii_case(&self.cfg.local.ip().to_string())
                || self
                    .cfg
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&c.realm))
        })
    }

    /// A Route/Record-Route URI naming this proxy.
    pub(super) fn is_our_route(&self, u: &SipUri<'_>) -> bool {
        let port = u.port_or_default();
        u.host.ip().is_some_and(|ip| self.is_our_ip(ip)) && self.is_our_port(port)
            || matches!(u.host, Host::Name(n) if self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(n)))
                && self.is_our_port(port)
    }

    pub(super) fn is_our_via(&self, v: &Via<'_>) -> bool {
        let default = if v.is_transport("TLS") { 5061 } else { 5060 };
        v.host.ip().is_some_and(|ip| self.is_our_ip(ip))
            && self.is_our_port(v.port.unwrap_or(default))
    }

    /// The loop-detection part of our branch (§16.6 item 8): a hash of what identifies the
    /// request as it arrived, Via excluded, so a looped copy hashes the same and a spiral
    /// (changed Request-URI or Route) does not.
    pub(super) fn loop_hash(&self, msg: &Message<'_>) -> u64 {
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

    /// Our branch for one forwarded copy: `z9hG4bK`, the loop hash, and a part derived from
    /// the incoming transaction, the method and the fork index.
    pub(super) fn branch(
        &self,
        loop_hash: u64,
        incoming: &str,
        salt: &str,
        index: usize,
    ) -> String {
        let u = fnv(
            self.cfg.secret ^ 0x9e37_79b9_7f4a_7c15,
            &[incoming.as_bytes(), salt.as_bytes(), &index.to_be_bytes()],
        );
        format!("z9hG4bK{loop_hash:016x}.{:08x}", u as u32)
    }

    /// Whether one of the request's Vias is ours with this loop hash (§16.3 item 4).
    pub(super) fn is_loop(&self, msg: &Message<'_>, loop_hash: u64) -> bool {
        let prefix = format!("z9hG4bK{loop_hash:016x}.");
        msg.vias().any(|v| {
            v.is_ok_and(|(_, v)| {
                self.is_our_via(&v) && v.branch.is_some_and(|b| b.starts_with(&prefix))
            })
        })
    }

    /// The To tag of responses we generate for the transaction (or request) `key`.
    pub(super) fn tag_for(&self, key: &str) -> String {
        format!(
            "{:012x}",
            fnv(self.cfg.secret ^ 0x7a67, &[key.as_bytes()]) & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv(0, &[b"a"]), fnv(0, &[b"a"]));
        assert_ne!(fnv(0, &[b"a", b"b"]), fnv(0, &[b"ab"]));
        assert_ne!(fnv(1, &[b"a"]), fnv(0, &[b"a"]));
    }
}
