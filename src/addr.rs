//! A socket address in 19 bytes instead of the 32 an `Option<SocketAddr>` takes, for state
//! kept per socket or per stream (memory per stream). Byte-aligned (the port is kept as two
//! bytes), so records holding several of them, or them beside flags, pack without padding.
//!
//! Media endpoints come from SDP, which cannot name an IPv6 zone, or are sources of packets
//! sent to relay addresses named in SDP; so the flow label and scope id are not kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const FAMILY_NONE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// An optional IPv4/IPv6 address and port. `PackedAddr::NONE` stands for "no address".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PackedAddr {
    ip: [u8; 16],
    /// Native byte order; bytes, not a `u16`, so the address needs no 2-byte alignment.
    port: [u8; 2],
    family: u8,
}

impl Default for PackedAddr {
    fn default() -> Self {
        PackedAddr::NONE
    }
}

impl PackedAddr {
    pub const NONE: PackedAddr = PackedAddr {
        ip: [0; 16],
        port: [0; 2],
        family: FAMILY_NONE,
    };

    pub const fn new(a: SocketAddr) -> PackedAddr {
        match a {
            SocketAddr::V4(v4) => {
                let o = v4.ip().octets();
                PackedAddr {
                    ip: [o[0], o[1], o[2], o[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    port: v4.port().to_ne_bytes(),
                    family: FAMILY_V4,
                }
            }
            SocketAddr::V6(v6) => PackedAddr {
                ip: v6.ip().octets(),
                port: v6.port().to_ne_bytes(),
                family: FAMILY_V6,
            },
        }
    }

    pub const fn from_option(a: Option<SocketAddr>) -> PackedAddr {
        match a {
            Some(a) => PackedAddr::new(a),
            None => PackedAddr::NONE,
        }
    }

    pub fn get(self) -> Option<SocketAddr> {
        let ip = match self.family {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, u16::from_ne_bytes(self.port)))
    }

    pub fn is_some(self) -> bool {
        self.family != FAMILY_NONE
    }

    /// Both are addresses, and the same host (ports may differ).
    pub fn same_ip(self, other: PackedAddr) -> bool {
        self.is_some() && self.family == other.family && self.ip == other.ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_compares() {
        for s in [
            "10.0.0.1:4000",
            "[2001:db8::7]:30000",
            "0.0.0.0:0",
            "[::1]:9",
        ] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(PackedAddr::new(a).get(), Some(a), "{s}");
        }
        assert_eq!(PackedAddr::NONE.get(), None);
        assert_eq!(PackedAddr::from_option(None), PackedAddr::NONE);
        let a = PackedAddr::new("10.0.0.1:4000".parse().unwrap());
        let b = PackedAddr::new("10.0.0.1:4002".parse().unwrap());
        // An IPv4 address and the IPv6 address with the same leading bytes differ.
        let c = PackedAddr::new("[a00:1::]:4000".parse().unwrap());
        assert!(a.same_ip(b) && a != b);
        assert!(!a.same_ip(c) && a != c);
        assert!(!PackedAddr::NONE.same_ip(PackedAddr::NONE));
        assert_eq!(std::mem::size_of::<PackedAddr>(), 19);
        assert_eq!(std::mem::align_of::<PackedAddr>(), 1);
    }
}
