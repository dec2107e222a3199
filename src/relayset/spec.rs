//! `--media-relay` values: `ng:HOST:PORT[;weight=N][;transport=tcp]` or `embedded[;weight=N]`.
//!
//! HOST is an IP address or a name resolved once at start (the first address it gives);
//! an IPv6 address is written in brackets (`ng:[2001:db8::1]:2223`). Weights are 1..=1000
//! (default 1); weight 0 is refused (a relay nobody may use is left out instead).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The largest weight accepted.
pub const MAX_WEIGHT: u32 = 1000;

/// How the ng requests reach a remote relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NgTransport {
    /// Datagrams, retransmitted with the same cookie (what Kamailio's module does).
    Udp,
    /// One stream (the relay's `--listen-tcp-ng`, rtpengine's `listen-tcp-ng`).
    Tcp,
}

/// Where a relay of the set is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayTarget {
    /// This process's own relay (the session manager, no ng on the wire).
    Embedded,
    /// Another rtpanchor box or an rtpengine, over ng.
    Ng {
        addr: SocketAddr,
        transport: NgTransport,
    },
}

/// One `--media-relay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySpec {
    pub target: RelayTarget,
    pub weight: u32,
}

impl fmt::Display for RelaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RelayTarget::Embedded => write!(f, "embedded")?,
            RelayTarget::Ng { addr, transport } => {
                write!(f, "ng:{addr}")?;
                if *transport == NgTransport::Tcp {
                    write!(f, ";transport=tcp")?;
                }
            }
        }
        write!(f, ";weight={}", self.weight)
    }
}

/// Parses one `--media-relay` value (names are resolved here).
pub fn parse_relay(s: &str) -> Result<RelaySpec, String> {
    let mut parts = s.trim().split(';');
    let head = parts.next().unwrap_or("").trim();
    let mut weight = 1u32;
    let mut transport = NgTransport::Udp;
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match (k.trim().to_ascii_lowercase().as_str(), v.trim()) {
            ("weight", v) => {
                weight = v
                    .parse()
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| format!("weight must be 1..={MAX_WEIGHT}, not {v:?}"))?;
            }
            ("transport", v) if v.eq_ignore_ascii_case("udp") => transport = NgTransport::Udp,
            ("transport", v) if v.eq_ignore_ascii_case("tcp") => transport = NgTransport::Tcp,
            (k, _) => return Err(format!("unknown relay parameter {k:?}")),
        }
    }
    let target = if head.eq_ignore_ascii_case("embedded") {
        if transport != NgTransport::Udp {
            return Err("the embedded relay takes no transport".into());
        }
        RelayTarget::Embedded
    } else if let Some(rest) = head.strip_prefix("ng:") {
        let addr = resolve(rest)?;
        RelayTarget::Ng { addr, transport }
    } else {
        return Err(format!(
            "{head:?}: expected ng:HOST:PORT[;weight=N][;transport=tcp] or embedded[;weight=N]"
        ));
    };
    Ok(RelaySpec { target, weight })
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("{hostport:?}: no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{hostport:?}: bad port"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let r = parse_relay("ng:127.0.0.1:2223;weight=3").unwrap();
        assert_eq!(r.weight, 3);
        assert_eq!(
            r.target,
            RelayTarget::Ng {
                addr: "127.0.0.1:2223".parse().unwrap(),
                transport: NgTransport::Udp
            }
        );
        let r = parse_relay("ng:[::1]:2223;transport=tcp").unwrap();
        assert_eq!(r.weight, 1);
        assert!(matches!(
            r.target,
            RelayTarget::Ng {
                transport: NgTransport::Tcp,
                ..
            }
        ));
        assert_eq!(
            parse_relay("embedded;weight=2").unwrap().target,
            RelayTarget::Embedded
        );
        assert_eq!(
            parse_relay("ng:localhost:2223").unwrap().target,
            RelayTarget::Ng {
                addr: "127.0.0.1:2223".parse().unwrap(),
                transport: NgTransport::Udp
            }
        );
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            "",
            "udp:1.2.3.4:5",
            "ng:1.2.3.4",
            "ng:1.2.3.4:x",
            "ng:1.2.3.4:5;weight=0",
            "ng:1.2.3.4:5;weight=1001",
            "ng:1.2.3.4:5;weight=-1",
            "ng:1.2.3.4:5;colour=red",
            "embedded;transport=tcp",
        ] {
            assert!(parse_relay(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_what_it_parsed() {
        let r = parse_relay("ng:127.0.0.1:2223;weight=3;transport=tcp").unwrap();
        assert_eq!(r.to_string(), "ng:127.0.0.1:2223;transport=tcp;weight=3");
    }
}
