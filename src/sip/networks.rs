//! Which network a SIP peer is on, and the proxy's address on it, when the relay bridges
//! networks with named interfaces (`--interface internal/10.0.0.1 --interface
//! external/203.0.113.1`).
//!
//! A peer's network (an interface name) is, in this order:
//! 1. the `--sip-network NAME=CIDR` rule with the longest prefix holding its address;
//! 2. the interface whose own subnet holds it, longest prefix first (the subnets are the
//!    prefixes the OS has configured on the interfaces' addresses, read by the driver at
//!    start: the netmask `getifaddrs` reports for each address);
//! 3. the default interface (`default`, else the first one given).
//!
//! The proxy listens on every interface address (same port), writes into Via and
//! Record-Route the (advertised) address of the network the message goes to, and the driver
//! sends each message from the address of the destination's network. Pure: the table is
//! built once at start and consulted per message.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use crate::cidr::Cidr;

/// One address the proxy serves SIP on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipAddr {
    /// The interface name (the network).
    pub name: String,
    /// Bound here.
    pub local: SocketAddr,
    /// Written into Via and Record-Route (differs from `local` behind 1:1 NAT).
    pub advertised: SocketAddr,
}

/// The networks the proxy bridges. Empty (the default): one network, as without named
/// interfaces.
#[derive(Clone, Debug, Default)]
pub struct SipNetworks {
    /// `--sip-network` rules, as given.
    rules: Vec<(Cidr, String)>,
    /// The interfaces' own subnets.
    subnets: Vec<(Cidr, String)>,
    addrs: Vec<SipAddr>,
    default: String,
}

/// Parses one `NAME=CIDR` (`--sip-network`).
pub fn parse_rule(s: &str) -> Result<(String, Cidr), String> {
    let (name, cidr) = s
        .split_once('=')
        .ok_or_else(|| format!("bad --sip-network {s:?}: expected NAME=CIDR"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("bad --sip-network {s:?}: no interface name"));
    }
    Ok((name.to_owned(), cidr.trim().parse::<Cidr>()?))
}

/// The IPv4 address inside an IPv4-mapped IPv6 one (dual-stack sockets report peers so).
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn longest(list: &[(Cidr, String)], ip: IpAddr) -> Option<&str> {
    list.iter()
        .filter(|(c, _)| c.contains(ip))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(_, n)| n.as_str())
}

impl SipNetworks {
    /// A table whose peers outside every rule and subnet are on `default`.
    pub fn new(default: &str, rules: Vec<(String, Cidr)>) -> Self {
        SipNetworks {
            rules: rules.into_iter().map(|(n, c)| (c, n)).collect(),
            subnets: Vec::new(),
            addrs: Vec::new(),
            default: default.to_owned(),
        }
    }

    /// One address served on network `name`; `subnet` is the prefix configured on it.
    pub fn add_address(&mut self, addr: SipAddr, subnet: Option<Cidr>) {
        if let Some(s) = subnet {
            self.subnets.push((s, addr.name.clone()));
        }
        self.addrs.push(addr);
    }

    /// Gives addresses added with port 0 the port the listener got.
    pub fn set_port(&mut self, port: u16) {
        for a in &mut self.addrs {
            for at in [&mut a.local, &mut a.advertised] {
                if at.port() == 0 {
                    at.set_port(port);
                }
            }
        }
    }

    /// Whether there is more than one network to choose from.
    pub fn is_bridging(&self) -> bool {
        let first = self.addrs.first().map_or("", |a| a.name.as_str());
        self.addrs
            .iter()
            .any(|a| !a.name.eq_ignore_ascii_case(first))
    }

    /// Every address served, in the order added.
    pub fn addresses(&self) -> &[SipAddr] {
        &self.addrs
    }

    /// The network `ip` is on (see the module docs for the order).
    pub fn network_of(&self, ip: IpAddr) -> &str {
        let ip = plain(ip);
        longest(&self.rules, ip)
            .or_else(|| longest(&self.subnets, ip))
            .unwrap_or(&self.default)
    }

    /// Our address toward a peer at `peer`: one on the peer's network of its family, else
    /// any on that network, else the first address (`None` only when the table is empty).
    pub fn address_for(&self, peer: IpAddr) -> Option<&SipAddr> {
        let peer = plain(peer);
        let name = self.network_of(peer);
        let on: Vec<&SipAddr> = self
            .addrs
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case(name))
            .collect();
        on.iter()
            .find(|a| a.local.is_ipv6() == peer.is_ipv6())
            .or_else(|| on.first())
            .copied()
            .or_else(|| self.addrs.first())
    }

    /// Whether `ip` is one of our addresses (bound or advertised).
    pub fn is_ours(&self, ip: IpAddr) -> bool {
        let ip = plain(ip);
        self.addrs
            .iter()
            .any(|a| a.local.ip() == ip || a.advertised.ip() == ip)
    }

    /// Whether `port` is the port of one of our addresses.
    pub fn has_port(&self, port: u16) -> bool {
        self.addrs
            .iter()
            .any(|a| a.local.port() == port || a.advertised.port() == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, local: &str, adv: &str) -> SipAddr {
        SipAddr {
            name: name.into(),
            local: local.parse().unwrap(),
            advertised: adv.parse().unwrap(),
        }
    }

    fn bridge(rules: &[&str]) -> SipNetworks {
        let rules = rules.iter().map(|r| parse_rule(r).unwrap()).collect();
        let mut n = SipNetworks::new("internal", rules);
        n.add_address(
            addr("internal", "10.0.0.1:5060", "10.0.0.1:5060"),
            Some("10.0.0.0/24".parse().unwrap()),
        );
        n.add_address(
            addr("external", "192.168.1.5:5060", "203.0.113.1:5060"),
            Some("192.168.1.0/24".parse().unwrap()),
        );
        n
    }

    #[test]
    fn rules_parse() {
        let (n, c) = parse_rule("external = 0.0.0.0/0").unwrap();
        assert_eq!(
            (n.as_str(), c.to_string()),
            ("external", "0.0.0.0/0".into())
        );
        assert!(parse_rule("external").is_err());
        assert!(parse_rule("=10.0.0.0/8").is_err());
        assert!(parse_rule("lan=10.0.0.0/33").is_err());
    }

    #[test]
    fn subnet_then_default_without_rules() {
        let n = bridge(&[]);
        assert!(n.is_bridging());
        assert_eq!(n.network_of("10.0.0.10".parse().unwrap()), "internal");
        assert_eq!(n.network_of("192.168.1.77".parse().unwrap()), "external");
        // Outside every subnet: the default.
        assert_eq!(n.network_of("198.51.100.7".parse().unwrap()), "internal");
        // A dual-stack socket's view of an IPv4 peer.
        assert_eq!(
            n.network_of("::ffff:192.168.1.77".parse().unwrap()),
            "external"
        );
    }

    #[test]
    fn rules_come_first_longest_prefix_wins() {
        let n = bridge(&["external=0.0.0.0/0", "internal=10.0.0.0/8"]);
        assert_eq!(n.network_of("10.9.9.9".parse().unwrap()), "internal");
        assert_eq!(n.network_of("198.51.100.7".parse().unwrap()), "external");
        // A rule beats the subnet the address is in.
        let n = bridge(&["external=10.0.0.128/25"]);
        assert_eq!(n.network_of("10.0.0.200".parse().unwrap()), "external");
        assert_eq!(n.network_of("10.0.0.20".parse().unwrap()), "internal");
    }

    #[test]
    fn our_address_toward_a_peer_is_the_advertised_one_of_its_network() {
        let n = bridge(&["external=0.0.0.0/0", "internal=10.0.0.0/8"]);
        let a = n.address_for("198.51.100.7".parse().unwrap()).unwrap();
        assert_eq!(a.advertised.to_string(), "203.0.113.1:5060");
        assert_eq!(a.local.to_string(), "192.168.1.5:5060");
        let a = n.address_for("10.0.0.10".parse().unwrap()).unwrap();
        assert_eq!(a.advertised.to_string(), "10.0.0.1:5060");
        assert!(n.is_ours("203.0.113.1".parse().unwrap()));
        assert!(n.is_ours("192.168.1.5".parse().unwrap()));
        assert!(!n.is_ours("10.0.0.10".parse().unwrap()));
        assert!(SipNetworks::default()
            .address_for("10.0.0.1".parse().unwrap())
            .is_none());
        assert!(!SipNetworks::default().is_bridging());
    }
}
