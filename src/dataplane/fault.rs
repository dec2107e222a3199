//! Test-only fault injection (cargo feature `fault-injection`, switched on for test builds
//! by the crate's dev-dependency on itself; never in a release build or package): a
//! datagram that makes a worker's packet handling panic, so tests can show the worker
//! contains it (the packet dropped and counted, every other stream still relayed).

/// A datagram that starts with these bytes panics in the forwarding decision of an RTP
/// slot. Its first byte (0xff) is neither RTP nor RTCP, so the check sits in the branch for
/// non-RTP datagrams and costs RTP packets nothing.
pub const PANIC_PACKET: &[u8] = b"\xffrtpanchor fault injection: panic";

/// Panics when `pkt` is [`PANIC_PACKET`].
#[inline]
pub fn check(pkt: &[u8]) {
    if pkt.starts_with(PANIC_PACKET) {
        panic!("injected data-plane panic");
    }
}
