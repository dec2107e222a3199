//! Which device the kernel sends a packet through: one rtnetlink `RTM_GETROUTE` question,
//! as `ip route get DST from SRC` asks it. The fast path needs the answer for a relay on a
//! real address, where the program sends the rewritten packet out of that device.
//!
//! The message layouts (`struct nlmsghdr`, `struct rtmsg`, `struct rtattr`) are built and
//! read here as bytes: the request by [`request`], the answer by [`parse_oif`], both pure.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;
/// Header, rtmsg, and two 8-byte attributes (IPv4).
pub const REQUEST_LEN: usize = NLMSG_HDR + RTMSG + 2 * 8;
/// Header, rtmsg, and two 20-byte attributes (IPv6).
pub const REQUEST6_LEN: usize = NLMSG_HDR + RTMSG + 2 * 20;

/// The question "which route does a packet from `src` to `dst` take?".
pub fn request(seq: u32, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; REQUEST_LEN] {
    let mut m = [0u8; REQUEST_LEN];
    fill(&mut m, seq, libc::AF_INET, &src.octets(), &dst.octets());
    m
}

/// The same question for IPv6 (`ip -6 route get DST from SRC`).
pub fn request6(seq: u32, src: Ipv6Addr, dst: Ipv6Addr) -> [u8; REQUEST6_LEN] {
    let mut m = [0u8; REQUEST6_LEN];
    fill(&mut m, seq, libc::AF_INET6, &src.octets(), &dst.octets());
    m
}

/// Writes the request into `m` (exactly its length): header, rtmsg of `family` with full
/// prefix lengths, then RTA_DST and RTA_SRC.
fn fill(m: &mut [u8], seq: u32, family: i32, src: &[u8], dst: &[u8]) {
    let len = m.len();
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // rtmsg: family, dst_len and src_len in bits; the rest zero.
    let bits = (dst.len() * 8) as u8;
    m[16] = family as u8;
    m[17] = bits;
    m[18] = bits;
    let mut at = NLMSG_HDR + RTMSG;
    for (kind, addr) in [(RTA_DST, dst), (RTA_SRC, src)] {
        let alen = 4 + addr.len();
        m[at..at + 2].copy_from_slice(&(alen as u16).to_ne_bytes());
        m[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
        m[at + 4..at + alen].copy_from_slice(addr);
        at += alen;
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The output device (`RTA_OIF`) in the kernel's answer to request `seq`; `None` for an
/// error answer (no route), a truncated or foreign message.
pub fn parse_oif(reply: &[u8], seq: u32) -> Option<u32> {
    let mut at = 0;
    while at + NLMSG_HDR <= reply.len() {
        let len = u32_at(reply, at)? as usize;
        let kind = u16_at(reply, at + 4)?;
        if len < NLMSG_HDR || at + len > reply.len() {
            return None;
        }
        if u32_at(reply, at + 8)? == seq {
            if kind == NLMSG_ERROR {
                return None;
            }
            if kind == RTM_NEWROUTE {
                let mut a = at + NLMSG_HDR + RTMSG;
                while a + 4 <= at + len {
                    let alen = usize::from(u16_at(reply, a)?);
                    let akind = u16_at(reply, a + 2)?;
                    if alen < 4 || a + alen > at + len {
                        return None;
                    }
                    if akind == RTA_OIF && alen >= 8 {
                        return u32_at(reply, a + 4);
                    }
                    a += alen.div_ceil(4) * 4;
                }
                return None;
            }
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

/// A worker's rtnetlink socket for route questions (asked once per hand-over).
pub struct RouteQuery {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteQuery {
    pub fn new() -> std::io::Result<RouteQuery> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(RouteQuery {
            sock,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// The device a packet from `src` to `dst` leaves by, or `None` (no route, no answer).
    pub fn egress(&mut self, src: IpAddr, dst: IpAddr) -> Option<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.sock.send(&request(seq, s, d)).ok()?,
            (IpAddr::V6(s), IpAddr::V6(d)) => self.sock.send(&request6(seq, s, d)).ok()?,
            _ => return None,
        };
        // Answers to earlier questions that timed out are read past (bounded).
        for _ in 0..4 {
            let n = (&self.sock).read(&mut self.buf).ok()?;
            let reply = self.buf.get(..n)?;
            if let Some(oif) = parse_oif(reply, seq) {
                return Some(oif);
            }
            if reply_is_for(reply, seq) {
                return None;
            }
        }
        None
    }
}

/// Whether the first message in `reply` answers request `seq`.
fn reply_is_for(reply: &[u8], seq: u32) -> bool {
    u32_at(reply, 8) == Some(seq)
}

/// A netlink answer for tests: message `kind` to request `seq`, a family header of `family`
/// bytes (zeros), then `attrs`, each padded to 4 bytes.
#[cfg(test)]
pub(super) fn test_answer(seq: u32, kind: u16, family: usize, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDR + family];
    for (k, data) in attrs {
        let len = 4 + data.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&k.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().div_ceil(4) * 4, 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seq: u32, kind: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        test_answer(seq, kind, RTMSG, attrs)
    }

    #[test]
    fn the_request_asks_for_the_route_from_src_to_dst() {
        let r = request(7, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 9));
        assert_eq!(u32_at(&r, 0), Some(REQUEST_LEN as u32));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETROUTE));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!((r[16], r[17], r[18]), (libc::AF_INET as u8, 32, 32));
        assert_eq!(u16_at(&r, 30), Some(RTA_DST));
        assert_eq!(&r[32..36], &[192, 0, 2, 9]);
        assert_eq!(u16_at(&r, 38), Some(RTA_SRC));
        assert_eq!(&r[40..44], &[10, 0, 0, 1]);
    }

    #[test]
    fn the_ipv6_request_carries_both_addresses_whole() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8:1::5".parse().unwrap(),
        );
        let r = request6(3, src, dst);
        assert_eq!(u32_at(&r, 0), Some(REQUEST6_LEN as u32));
        assert_eq!((r[16], r[17], r[18]), (libc::AF_INET6 as u8, 128, 128));
        assert_eq!((u16_at(&r, 28), u16_at(&r, 30)), (Some(20), Some(RTA_DST)));
        assert_eq!(&r[32..48], &dst.octets());
        assert_eq!((u16_at(&r, 48), u16_at(&r, 50)), (Some(20), Some(RTA_SRC)));
        assert_eq!(&r[52..68], &src.octets());
    }

    #[test]
    fn the_answer_gives_the_output_device() {
        let table = [254u8, 0, 0, 0];
        let oif = 3u32.to_ne_bytes();
        let a = answer(9, RTM_NEWROUTE, &[(15, &table), (RTA_OIF, &oif)]);
        assert_eq!(parse_oif(&a, 9), Some(3));
        assert_eq!(parse_oif(&a, 8), None, "an answer to another question");
        // No route: the kernel answers with an error message.
        assert_eq!(parse_oif(&answer(9, NLMSG_ERROR, &[]), 9), None);
        // Without RTA_OIF, truncated, or with a lying length: no answer, no panic.
        assert_eq!(
            parse_oif(&answer(9, RTM_NEWROUTE, &[(15, &table)]), 9),
            None
        );
        for cut in 0..a.len() {
            assert_eq!(parse_oif(&a[..cut], 9), None);
        }
        let mut bad = a.clone();
        bad[NLMSG_HDR + RTMSG..NLMSG_HDR + RTMSG + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse_oif(&bad, 9), None);
        bad[NLMSG_HDR + RTMSG..NLMSG_HDR + RTMSG + 2].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(parse_oif(&bad, 9), None);
    }
}
