//! The transport layer as the proxy core sees it (RFC 3261 §18, RFC 3581), sans-IO.
//!
//! - [`Transport`]: the network transport a message arrives on or leaves by (UDP, TCP, TLS),
//!   and how that frames it for the parser ([`Framing`]).
//! - [`Transmit`]: one message the driver is asked to send.
//! - Where a response goes (§18.2.2 and RFC 3581 `rport`), the `received`/`rport` a server
//!   transport adds to the top Via (§18.2.1, RFC 3581 §4), and where a response is sent
//!   given the next Via when it is forwarded without a transaction.
//!
//! No sockets here: the driver (`server::sip`) owns them.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header::{Rport, Via, ViaIter};
use super::message::is_sendable_destination;
use super::parse::Framing;
use super::uri::{Scheme, SipUri};

/// The transport a message arrived on or leaves by (stored as `"udp"`, `"tcp"`, `"tls"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP under TLS (RFC 3261 §26.2.1); its own listen port (`ProxyConfig::local_tls`).
    Tls,
}

impl Transport {
    /// The transport token of a Via `sent-protocol` (§20.42).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Reliable transports need no retransmissions and no lingering (§17).
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// How a message that arrived on this transport is framed for the parser.
    pub fn framing(self) -> Framing {
        match self {
            Transport::Udp => Framing::Datagram,
            Transport::Tcp | Transport::Tls => Framing::Stream,
        }
    }

    /// The transport a SIP URI asks for: TLS for `sips:` (RFC 3261 §26.2.2) or
    /// `;transport=tls`, TCP for `;transport=tcp`, UDP otherwise.
    pub fn of_uri(u: &SipUri<'_>) -> Transport {
        if u.scheme == Scheme::Sips {
            return Transport::Tls;
        }
        match u.transport() {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
            _ => Transport::Udp,
        }
    }

    /// The transport named by a Via's `sent-protocol`, UDP unless it says TCP or TLS.
    pub fn of_via(via: &Via<'_>) -> Transport {
        if via.is_transport("TCP") {
            Transport::Tcp
        } else if via.is_transport("TLS") {
            Transport::Tls
        } else {
            Transport::Udp
        }
    }
}

/// A configured next hop (`--sip-outbound`): an IP literal and port (no DNS) and the
/// transport it is reached over. Written `HOST:PORT` (UDP, the old form),
/// `HOST:PORT;transport=udp|tcp|tls`, or as a URI: `sip:HOST[:PORT][;transport=...]`,
/// `sips:HOST[:PORT]` (TLS, RFC 3261 §26.2.2). Without a port: 5060, or 5061 over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct NextHop {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl NextHop {
    pub fn udp(addr: SocketAddr) -> NextHop {
        NextHop {
            addr,
            transport: Transport::Udp,
        }
    }
}

impl std::str::FromStr for NextHop {
    type Err = String;

    fn from_str(s: &str) -> Result<NextHop, String> {
        let bad = |why: &str| format!("{s:?}: {why}");
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let (sips, rest) = if lower.starts_with("sips:") {
            (true, &t[5..])
        } else if lower.starts_with("sip:") {
            (false, &t[4..])
        } else {
            (false, t)
        };
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or("").trim();
        let mut transport = sips.then_some(Transport::Tls);
        for p in parts {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if !name.trim().eq_ignore_ascii_case("transport") {
                continue; // `lr` and the like say nothing about how to reach it
            }
            let named = match value.trim().to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "tls" => Transport::Tls,
                _ => return Err(bad("transport must be udp, tcp or tls")),
            };
            if sips && named != Transport::Tls {
                return Err(bad("a sips: next hop is reached over TLS only"));
            }
            transport = Some(named);
        }
        let transport = transport.unwrap_or(Transport::Udp);
        let default_port = if transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let addr = match hostport.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let ip = hostport
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(hostport);
                let ip: std::net::IpAddr = ip
                    .parse()
                    .map_err(|_| bad("expected an IP address and port (no DNS)"))?;
                SocketAddr::new(ip, default_port)
            }
        };
        if addr.port() == 0 {
            return Err(bad("port 0"));
        }
        Ok(NextHop { addr, transport })
    }
}

impl TryFrom<String> for NextHop {
    type Error = String;

    fn try_from(s: String) -> Result<NextHop, String> {
        s.parse()
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Transport::Tls => write!(f, "sips:{}", self.addr),
            Transport::Tcp => write!(f, "sip:{};transport=tcp", self.addr),
            Transport::Udp => write!(f, "sip:{}", self.addr),
        }
    }
}

/// One message to send. For TCP, `to` is the peer of an existing connection (responses,
/// pongs) or a target to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub transport: Transport,
    pub bytes: Vec<u8>,
}

/// The top via-parm with `received` and `rport` filled in per RFC 3581, or `None` if it
/// needs no change.
pub fn fixed_via(via: &Via<'_>, src: SocketAddr) -> Option<String> {
    let need_received = via.host.ip() != Some(src.ip());
    let fill_rport = via.rport == Rport::Requested;
    if !need_received && !fill_rport {
        return None;
    }
    let mut s = format!(
        "{}/{}/{} {}",
        via.protocol, via.version, via.transport, via.host
    );
    if let Some(p) = via.port {
        let _ = write!(s, ":{p}");
    }
    for (n, v) in via.params.iter() {
        if n.eq_ignore_ascii_case("received") || (fill_rport && n.eq_ignore_ascii_case("rport")) {
            continue;
        }
        s.push(';');
        s.push_str(n);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    let _ = write!(s, ";received={}", src.ip());
    if fill_rport {
        let _ = write!(s, ";rport={}", src.port());
    }
    Some(s)
}

/// A Via header value (one or more via-parms) with its first via-parm given `received` and
/// `rport` by [`fixed_via`], or `None` if that needs no change (or does not parse).
pub fn fixed_via_value(value: &str, src: SocketAddr) -> Option<String> {
    let top = ViaIter::new(value).next()?.ok()?;
    let fixed = fixed_via(&top, src)?;
    let end = top.start + top.raw.len();
    Some(format!(
        "{}{}{}",
        value.get(..top.start).unwrap_or(""),
        fixed,
        value.get(end..).unwrap_or("")
    ))
}

/// Where a response to a request with this top Via goes (RFC 3261 §18.2.2, RFC 3581).
pub fn reply_address(via: Option<&Via<'_>>, src: SocketAddr, transport: Transport) -> SocketAddr {
    match (transport, via) {
        (Transport::Tcp | Transport::Tls, _) | (_, None) => src,
        (Transport::Udp, Some(v)) => match v.rport {
            Rport::Requested | Rport::Port(_) => src,
            Rport::Absent => SocketAddr::new(src.ip(), v.port.unwrap_or(5060)),
        },
    }
}

/// Where a response goes given the next Via (after ours was popped), for stateless
/// forwarding; `None` for an address nothing is ever sent to.
pub fn via_destination(via: &Via<'_>) -> Option<(SocketAddr, Transport)> {
    let ip = via.received.or_else(|| via.host.ip())?;
    if !is_sendable_destination(ip) {
        return None;
    }
    let port = match via.rport {
        Rport::Port(p) => p,
        _ => via.port.unwrap_or(5060),
    };
    Some((SocketAddr::new(ip, port), Transport::of_via(via)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_name_their_transport() {
        let hop = |s: &str| s.parse::<NextHop>();
        let a: SocketAddr = "192.0.2.1:5070".parse().unwrap();
        let at = |addr, transport| Ok(NextHop { addr, transport });
        assert_eq!(hop("192.0.2.1:5070"), at(a, Transport::Udp));
        assert_eq!(hop("sip:192.0.2.1:5070"), at(a, Transport::Udp));
        assert_eq!(hop("192.0.2.1:5070;transport=TCP"), at(a, Transport::Tcp));
        assert_eq!(hop("192.0.2.1:5070;transport=tls"), at(a, Transport::Tls));
        assert_eq!(hop("SIPS:192.0.2.1:5070;lr"), at(a, Transport::Tls));
        assert_eq!(
            hop("sips:192.0.2.1"),
            at("192.0.2.1:5061".parse().unwrap(), Transport::Tls)
        );
        assert_eq!(
            hop("sip:[2001:db8::1];transport=tcp"),
            at("[2001:db8::1]:5060".parse().unwrap(), Transport::Tcp)
        );
        for bad in [
            "",
            "proxy.example.com:5060",
            "sips:192.0.2.1:5061;transport=udp",
            "192.0.2.1:5060;transport=sctp",
            "192.0.2.1:0",
        ] {
            assert!(hop(bad).is_err(), "{bad:?} accepted");
        }
        for s in ["sips:192.0.2.1:5070", "sip:192.0.2.1:5070;transport=tcp"] {
            assert_eq!(hop(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn via_fixing_rfc3581() {
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let v = super::super::header::parse_vias("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKx;rport")
            .unwrap()[0];
        assert_eq!(
            fixed_via(&v, src).unwrap(),
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKx;received=203.0.113.9;rport=40000"
        );
        assert_eq!(reply_address(Some(&v), src, Transport::Udp), src);
        let v = super::super::header::parse_vias("SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bKx")
            .unwrap()[0];
        assert_eq!(fixed_via(&v, src), None);
        assert_eq!(
            reply_address(Some(&v), src, Transport::Udp),
            "203.0.113.9:5070".parse().unwrap()
        );
        let v = super::super::header::parse_vias(
            "SIP/2.0/UDP host.example;branch=z9hG4bKx;received=1.2.3.4;rport=9",
        )
        .unwrap()[0];
        assert_eq!(
            via_destination(&v),
            Some(("1.2.3.4:9".parse().unwrap(), Transport::Udp))
        );
        let v = super::super::header::parse_vias("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKx")
            .unwrap()[0];
        assert_eq!(
            via_destination(&v),
            None,
            "RFC 4475 bcast: never sent there"
        );
    }
}
