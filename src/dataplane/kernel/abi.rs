//! What the worker and the TC program (`forward.bpf.c`) share: the map's key and the
//! direction entry's layout, the flags the program sets, and how a direction's addresses
//! become an entry.

use std::net::{IpAddr, SocketAddr};

use crate::rtp::stats::TrackerParts;

/// Set by the program when it passed up a packet the worker must see: the worker takes the
/// direction back. With it, one of the `BACK_*` bits says why: another source, SSRC or
/// payload type, or a sequence jump beyond the reorder window.
pub const HANDED_BACK: u32 = 1;
pub const BACK_SOURCE: u32 = 1 << 8;
pub const BACK_SSRC: u32 = 1 << 9;
pub const BACK_PAYLOAD_TYPE: u32 = 1 << 10;
pub const BACK_JUMP: u32 = 1 << 11;

/// The program's map key: the relay socket a packet arrives on (network order). Addresses
/// are 16 bytes: IPv6 as is, IPv4 mapped (`::ffff:a.b.c.d`), so one map serves both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub pad: u16,
}

/// A direction's entry in `anchor_dir` (see `dirs.rs`); the layout is `struct fwd_value` in
/// `forward.bpf.c`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdValue {
    pub src_addr: [u8; 16],
    pub out_saddr: [u8; 16],
    pub out_daddr: [u8; 16],
    pub src_port: u16,
    pub out_sport: u16,
    pub out_dport: u16,
    pub payload_type: u8,
    /// `MODE_LOCAL` or `MODE_ROUTED` (see `forward.bpf.c`).
    pub mode: u8,
    pub ifindex: u32,
    pub clock_hz: u32,
    pub origin_ns: u64,
    pub flags: u32,
    pub ssrc: u32,
    pub window0: u64,
    pub window1: u64,
    pub cycles: u32,
    pub max_seq: u16,
    pub pad1: u16,
    pub packets: u64,
    pub bytes: u64,
    pub received: u64,
    pub last_packet_ns: u64,
    pub duplicates: u32,
    pub reordered: u32,
    pub jitter_q4: u32,
    pub max_jitter_q4: u32,
    pub last_transit: u32,
    pub have_transit: u32,
    pub owner: u32,
    pub slot: u32,
}

const _: () = assert!(std::mem::size_of::<FwdValue>() == 168);
const _: () = assert!(std::mem::size_of::<FwdKey>() == 20);

// SAFETY: both are repr(C) structs of plain integers with every padding byte spelled out as a
// field (the sizes are asserted above and in forward.bpf.c), so any bit pattern is valid and
// no byte is uninitialised.
unsafe impl aya::Pod for FwdKey {}
// SAFETY: as for FwdKey.
unsafe impl aya::Pod for FwdValue {}

impl FwdValue {
    /// Carries the kernel's tracker figures over `base`, the tracker as handed over.
    pub fn advance(&self, base: &TrackerParts) -> TrackerParts {
        TrackerParts {
            window: [self.window0, self.window1],
            cycles: self.cycles,
            max_seq: self.max_seq,
            packets: self.packets,
            bytes: self.bytes,
            received: self.received,
            duplicates: self.duplicates,
            reordered: self.reordered,
            last_packet_ns: self.last_packet_ns,
            jitter_q4: self.jitter_q4,
            max_jitter_q4: self.max_jitter_q4,
            last_transit: self.last_transit,
            have_transit: self.have_transit != 0,
            ..*base
        }
    }
}

/// The two addresses a direction's entry names, as the worker knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The relay socket packets arrive on, and the endpoint they come from.
    pub local: SocketAddr,
    pub source: SocketAddr,
    /// The relay socket they leave from, and the endpoint they go to.
    pub out_local: SocketAddr,
    pub destination: SocketAddr,
}

/// How the program sends a direction's packets on (`forward.bpf.c`).
pub const MODE_LOCAL: u8 = 0;
pub const MODE_ROUTED: u8 = 1;

/// An address (16 bytes, IPv4 mapped) and port (network order) as the program keys them.
type WireAddr = ([u8; 16], u16);

/// A socket address as the program keys it (16 bytes, IPv4 mapped), its port in network
/// order, and whether it is on loopback; `None` for the unspecified address or port 0.
fn wire(a: SocketAddr) -> Option<([u8; 16], u16, bool)> {
    let (bytes, lo) = match a.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => (ip.to_ipv6_mapped().octets(), ip.is_loopback()),
        IpAddr::V6(ip) if !ip.is_unspecified() && ip.to_ipv4_mapped().is_none() => {
            (ip.octets(), ip.is_loopback())
        }
        _ => return None,
    };
    if a.port() == 0 {
        return None;
    }
    Some((bytes, a.port().to_be(), lo))
}

/// The four addresses of a direction as the program keys them, and how the program can
/// send it on; `None` when it cannot carry it: the two families mixed, or loopback and other
/// addresses mixed (a packet from outside cannot be delivered to a loopback address, and one
/// that came in on `lo` is not routed out again).
fn addresses(route: &Route) -> Option<([WireAddr; 4], u8)> {
    let all = [
        route.local,
        route.source,
        route.out_local,
        route.destination,
    ];
    if all.iter().any(|a| a.is_ipv4() != route.local.is_ipv4()) {
        return None;
    }
    let mut out = [([0; 16], 0); 4];
    let mut loopback = [false; 4];
    for (k, a) in all.into_iter().enumerate() {
        let (addr, port, lo) = wire(a)?;
        out[k] = (addr, port);
        loopback[k] = lo;
    }
    let mode = match loopback {
        [true, true, true, true] => MODE_LOCAL,
        [false, false, false, false] => MODE_ROUTED,
        _ => return None,
    };
    Some((out, mode))
}

/// How the program can send a direction on (`None` as for [`entry`]).
pub fn mode_of(route: &Route) -> Option<u8> {
    addresses(route).map(|(_, mode)| mode)
}

/// The entry for one direction, or `None` when the program cannot carry it (the families
/// mixed, or loopback and other addresses mixed). `clock_hz`: the clock rate of the tracker's payload
/// type; `ifindex`: the device packets leave by (`lo` for a local direction, the
/// destination's route for a routed one).
pub fn entry(
    route: &Route,
    parts: &TrackerParts,
    clock_hz: u32,
    ifindex: u32,
    origin_ns: u64,
) -> Option<(FwdKey, FwdValue)> {
    let (
        [(addr, port), (src_addr, src_port), (out_saddr, out_sport), (out_daddr, out_dport)],
        mode,
    ) = addresses(route)?;
    let key = FwdKey { addr, port, pad: 0 };
    let value = FwdValue {
        src_addr,
        src_port,
        out_sport,
        out_saddr,
        out_daddr,
        out_dport,
        payload_type: parts.payload_type,
        mode,
        ifindex,
        clock_hz,
        origin_ns,
        ssrc: parts.ssrc,
        window0: parts.window[0],
        window1: parts.window[1],
        cycles: parts.cycles,
        max_seq: parts.max_seq,
        packets: parts.packets,
        bytes: parts.bytes,
        received: parts.received,
        last_packet_ns: parts.last_packet_ns,
        duplicates: parts.duplicates,
        reordered: parts.reordered,
        jitter_q4: parts.jitter_q4,
        max_jitter_q4: parts.max_jitter_q4,
        last_transit: parts.last_transit,
        have_transit: u32::from(parts.have_transit),
        ..FwdValue::default()
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::stats::{RtpHeader, RtpStreamTracker};

    /// An 8 kHz packet of 172 bytes with these fields.
    fn pcm(sequence_number: u16, timestamp: u32, ssrc: u32, payload_type: u8) -> RtpHeader {
        RtpHeader {
            sequence_number,
            timestamp,
            ssrc,
            payload_type,
            len: 172,
        }
    }

    fn route() -> Route {
        Route {
            local: "127.0.0.1:30000".parse().unwrap(),
            source: "127.0.0.1:40000".parse().unwrap(),
            out_local: "127.0.0.1:30002".parse().unwrap(),
            destination: "127.0.0.1:40002".parse().unwrap(),
        }
    }

    #[test]
    fn entry_names_the_sockets_in_network_order_and_copies_the_tracker() {
        let mut t = RtpStreamTracker::new();
        t.on_rtp(pcm(7, 160, 0xdead_beef, 8), 1_000_000, 8_000);
        t.on_rtp(pcm(8, 320, 0xdead_beef, 8), 21_000_000, 8_000);
        let parts = t.export().unwrap();
        let (k, v) = entry(&route(), &parts, 8_000, 1, 5).unwrap();
        assert_eq!(k.addr[10..], [0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(k.addr[..10], [0; 10]);
        assert_eq!(k.port.to_ne_bytes(), 30000u16.to_be_bytes());
        assert_eq!(v.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(v.out_sport.to_ne_bytes(), 30002u16.to_be_bytes());
        assert_eq!(v.out_dport.to_ne_bytes(), 40002u16.to_be_bytes());
        assert_eq!((v.ssrc, v.payload_type, v.max_seq), (0xdead_beef, 8, 8));
        assert_eq!((v.packets, v.received, v.clock_hz), (2, 2, 8_000));
        // Nothing advanced: the tracker comes back unchanged.
        assert_eq!(v.advance(&parts), parts);
    }

    #[test]
    fn loopback_routes_stay_local_real_ones_are_routed_and_mixes_get_no_entry() {
        let parts = {
            let mut t = RtpStreamTracker::new();
            t.on_rtp(
                RtpHeader {
                    len: 12,
                    ..pcm(1, 0, 1, 0)
                },
                1,
                8_000,
            );
            t.export().unwrap()
        };
        let (_, v) = entry(&route(), &parts, 8_000, 1, 0).unwrap();
        assert_eq!((v.mode, v.ifindex), (MODE_LOCAL, 1));
        let routed = Route {
            local: "192.0.2.1:30000".parse().unwrap(),
            source: "198.51.100.9:4000".parse().unwrap(),
            out_local: "192.0.2.1:30002".parse().unwrap(),
            destination: "203.0.113.5:5000".parse().unwrap(),
        };
        let (k, v) = entry(&routed, &parts, 8_000, 1, 0).unwrap();
        assert_eq!(v.mode, MODE_ROUTED);
        assert_eq!(k.addr[12..], [192, 0, 2, 1]);
        assert_eq!(v.out_daddr[12..], [203, 0, 113, 5]);
        // A loopback endpoint of a relay on a real address, and the other way round.
        let mut r = route();
        r.destination = "192.0.2.7:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        let mut r = routed;
        r.source = "127.0.0.1:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        // The families mixed, the unspecified address, port 0.
        let mut r = route();
        r.source = "[::1]:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        // IPv6 throughout: on loopback, and routed.
        let v6 = Route {
            local: "[::1]:30000".parse().unwrap(),
            source: "[::1]:40000".parse().unwrap(),
            out_local: "[::1]:30002".parse().unwrap(),
            destination: "[::1]:40002".parse().unwrap(),
        };
        let (k, v) = entry(&v6, &parts, 8_000, 1, 0).unwrap();
        assert_eq!(
            (k.addr, v.mode),
            (std::net::Ipv6Addr::LOCALHOST.octets(), MODE_LOCAL)
        );
        let v6 = Route {
            local: "[2001:db8::1]:30000".parse().unwrap(),
            source: "[2001:db8::9]:40000".parse().unwrap(),
            out_local: "[2001:db8::1]:30002".parse().unwrap(),
            destination: "[2001:db8:1::5]:40002".parse().unwrap(),
        };
        let (_, v) = entry(&v6, &parts, 8_000, 1, 0).unwrap();
        assert_eq!(v.mode, MODE_ROUTED);
        assert_eq!(v.out_daddr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        let mut r = routed;
        r.destination = "0.0.0.0:5000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        let mut r = routed;
        r.destination = "203.0.113.5:0".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
    }

    #[test]
    fn the_kernels_figures_carry_the_tracker_on() {
        let mut t = RtpStreamTracker::new();
        t.on_rtp(pcm(100, 0, 9, 0), 1_000_000, 8_000);
        let base = t.export().unwrap();
        // What the program would hold after seq 101 and 103 (102 lost).
        let v = FwdValue {
            window0: 0b1011,
            max_seq: 103,
            packets: 3,
            bytes: 3 * 172,
            received: 3,
            last_packet_ns: 61_000_000,
            ..FwdValue::default()
        };
        let s = RtpStreamTracker::import(&v.advance(&base)).snapshot();
        assert_eq!((s.packets, s.expected, s.lost), (3, 4, 1));
        assert_eq!(s.extended_highest_seq, 103);
        assert_eq!(s.ssrc, 9, "kept from the tracker as handed over");
    }
}
