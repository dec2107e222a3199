//! NAT, Kamailio's rule: a binding or a dialog Contact is reached at the source address its
//! messages came from only when there is evidence of NAT (a private Contact host, or a top
//! Via that differs from the packet's source). This file keeps the table of such contacts;
//! `route` consults it.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use super::state::{NatEntry, Proxy};
use crate::sip::header::{Contact, Via};
use crate::sip::parse::Message;
use crate::sip::registrar::LocationStore;
use crate::sip::transport::Transport;
use crate::sip::uri::SipUri;

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
pub(super) fn contact_key(u: &SipUri<'_>) -> String {
    format!(
        "{}@{}:{}",
        u.user.unwrap_or(""),
        u.host_raw.to_ascii_lowercase(),
        u.port_or_default()
    )
}

/// Whether the top Via disagrees with where the packet came from (nat_uac_test 2 + 16).
pub fn via_mismatch(via: &Via<'_>, src: SocketAddr) -> bool {
    via.host.ip() != Some(src.ip()) || via.port.unwrap_or(5060) != src.port()
}

impl<S: LocationStore> Proxy<S> {
    pub(super) fn remember_nat(
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
    pub(super) fn learn_contact(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        transport: Transport,
        evidence: bool,
        now: u64,
    ) {
        let Ok(Contact::List(list)) = msg.contacts() else {
            return;
        };
        for c in list.iter().take(4) {
            let Some(u) = c.sip_uri() else { continue };
            let private = u.host.ip().is_some_and(is_private);
            let elsewhere = u.host.ip() != Some(src.ip()) || u.port_or_default() != src.port();
            // Over TCP/TLS the connection the contact came on is how it is reached.
            if (private || evidence || transport.reliable()) && elsewhere {
                let ttl = self.cfg.nat_contact_ttl_ns;
                self.remember_nat(contact_key(u), src, transport, now.saturating_add(ttl));
            }
        }
    }
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
}
