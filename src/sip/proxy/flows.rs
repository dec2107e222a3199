//! Flows that are gone (RFC 5626 §5.3, RFC 5923 §11): a phone registered over TCP or TLS
//! is reached on the connection it registered over. When that connection closes (the phone
//! closed it, it broke, it idled out), the driver says so with [`Proxy::flow_closed`]; a
//! binding on it is then reached as Kamailio does:
//! - registered with outbound (`reg-id` + `+sip.instance`): only its flow reaches it, so
//!   a request gets 430 Flow Failed at once and the binding is dropped (the phone registers
//!   again on a new flow);
//! - otherwise: a new connection is opened to its Contact's address (the phone may listen
//!   there; with a hostname or no listener, the driver's connect fails and the caller is
//!   answered at once from `Proxy::handle_transport_error`).
//!
//! A flow is live again when a message comes over a connection from the same address and
//! transport. The table is capped (`max_table_entries`) and swept: an entry older than
//! `max_expires` outlives any binding on it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::state::Proxy;
use crate::sip::registrar::{canonical_aor, LocationStore};
use crate::sip::transport::Transport;
use crate::sip::uri::{Scheme, Uri};

/// A flow: the transport and the peer address of one connection.
pub(super) type FlowKey = (Transport, SocketAddr);

impl<S: LocationStore> Proxy<S> {
    /// The driver's connection to `peer` over `transport` (TCP or TLS) is gone at `now`:
    /// bindings on it are no longer reached over it (module docs). Ignored for UDP.
    pub fn flow_closed(&mut self, transport: Transport, peer: SocketAddr, now: u64) {
        if !transport.reliable() {
            return;
        }
        let key = (transport, peer);
        if self.closed_flows.len() >= self.cfg.max_table_entries
            && !self.closed_flows.contains_key(&key)
        {
            // Full: the binding is tried on its old address and the connect fails at once.
            return;
        }
        self.closed_flows.insert(key, now);
    }

    /// A message came over `transport` from `src`: a flow from there is live.
    pub(super) fn flow_seen(&mut self, transport: Transport, src: SocketAddr) {
        if transport.reliable() && !self.closed_flows.is_empty() {
            self.closed_flows.remove(&(transport, src));
        }
    }

    pub(super) fn flow_is_closed(&self, transport: Transport, peer: SocketAddr) -> bool {
        transport.reliable()
            && !self.closed_flows.is_empty()
            && self.closed_flows.contains_key(&(transport, peer))
    }

    /// Forgets closed flows older than any binding can be.
    pub(super) fn sweep_flows(&mut self, now: u64) {
        let max_age = u64::from(self.cfg.max_expires).saturating_mul(1_000_000_000);
        self.closed_flows
            .retain(|_, at| now.saturating_sub(*at) <= max_age);
    }

    /// After a 430: drops the outbound bindings of the AOR of `ruri` whose flow is gone
    /// (RFC 5626 §5.3: the phone registers a new flow), counting them.
    pub(super) fn drop_failed_flows(&mut self, ruri: &Uri<'_>, now: u64) -> usize {
        let mut dropped = 0;
        for aor in self.aor_candidates(ruri) {
            let bindings = self.registrar.store.get(&aor);
            let keep: Vec<_> = bindings
                .iter()
                .filter(|b| {
                    !(b.outbound && b.path.is_none() && self.flow_is_closed(b.transport, b.source))
                })
                .cloned()
                .collect();
            if keep.len() != bindings.len() {
                dropped += bindings.len() - keep.len();
                let keep = keep.into_iter().filter(|b| b.expires_at_ns > now).collect();
                self.registrar.store.put(&aor, keep);
            }
        }
        dropped
    }

    /// The AORs a Request-URI is looked up under (§16.5 via `lookup`): its canonical AOR;
    /// for `sips:` the `sip:` one too (RFC 5630 §3.1.3); with a port the one without, and
    /// without a port the one with ours.
    pub(super) fn aor_candidates(&self, ruri: &Uri<'_>) -> Vec<String> {
        let Some(aor) = canonical_aor(ruri) else {
            return Vec::new();
        };
        let mut candidates = vec![aor.clone()];
        let secure = ruri.as_sip().is_some_and(|u| u.scheme == Scheme::Sips);
        if let Some(rest) = aor.strip_prefix("sips:").filter(|_| secure) {
            candidates.push(format!("sip:{rest}"));
        }
        if ruri.as_sip().is_some_and(|u| u.port.is_some()) {
            // `sip:bob@host:port` also finds `sip:bob@host`, and the reverse.
            if let Some(i) = aor.rfind(':').filter(|&i| i > 4 && !aor[i..].contains(']')) {
                candidates.push(aor[..i].to_owned());
            }
        } else {
            candidates.push(format!("{aor}:{}", self.cfg.local.port()));
        }
        candidates
    }
}
