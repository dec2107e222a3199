//! The control messages the relay asks for: `SO_RXQ_OVFL`, the socket's running count of
//! datagrams the kernel dropped before we read them (receive queue full), and, on the SIP
//! socket, `SO_TIMESTAMPNS`, when the kernel queued each datagram (how long it waited for us).
//! Parsed from plain bytes, so both engines share them and they are tested without sockets.
#![forbid(unsafe_code)]

use std::mem::size_of;

/// `SO_RXQ_OVFL` (asm-generic/socket.h; the same on x86, arm and riscv). `libc` does not
/// export it for Linux.
pub const SO_RXQ_OVFL: libc::c_int = 40;

const ALIGN: usize = size_of::<usize>();
const HEADER: usize = size_of::<libc::cmsghdr>();

const fn cmsg_align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// A control area of `N` bytes, aligned as `cmsghdr` needs (the engines keep these next to
/// their msghdrs).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct ControlArea<const N: usize>(pub [u8; N]);

impl<const N: usize> ControlArea<N> {
    pub const fn zeroed() -> Self {
        ControlArea([0; N])
    }
}

/// Control-area room for one `SO_RXQ_OVFL` message (`CMSG_SPACE(sizeof(u32))`).
pub const RXQ_OVFL_SPACE: usize = cmsg_align(HEADER) + cmsg_align(size_of::<u32>());

/// `SO_TIMESTAMPNS` (the "old" one, a `struct timespec` of two longs; asm-generic/socket.h,
/// the same on x86, arm and riscv); its message type `SCM_TIMESTAMPNS` has the same value.
pub const SO_TIMESTAMPNS: libc::c_int = 35;

/// Control-area room for one `SCM_TIMESTAMPNS` message (`CMSG_SPACE(sizeof(timespec))`)
/// and an `SO_RXQ_OVFL` one.
pub const TIMESTAMP_SPACE: usize =
    cmsg_align(HEADER) + cmsg_align(size_of::<libc::timespec>()) + RXQ_OVFL_SPACE;

/// Control-area room for one `UDP_SEGMENT` message (`CMSG_SPACE(sizeof(u16))`).
pub const UDP_SEGMENT_SPACE: usize = cmsg_align(HEADER) + cmsg_align(size_of::<u16>());

/// Writes a `UDP_SEGMENT` control message (segment size for a GSO send) into `buf`.
pub fn write_udp_segment(buf: &mut [u8; UDP_SEGMENT_SPACE], seg_len: u16) {
    buf.fill(0);
    let len = cmsg_align(HEADER) + size_of::<u16>();
    buf[..ALIGN].copy_from_slice(&len.to_ne_bytes());
    buf[ALIGN..ALIGN + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    buf[ALIGN + 4..ALIGN + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    let data = cmsg_align(HEADER);
    buf[data..data + 2].copy_from_slice(&seg_len.to_ne_bytes());
}

/// The drop count carried in a received datagram's control area, if there is one. The
/// kernel adds it only once the socket has dropped something, so an empty area is the
/// common case and costs one length check.
pub fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    let data = find(control, libc::SOL_SOCKET, SO_RXQ_OVFL)?;
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// When the kernel queued the datagram (CLOCK_REALTIME, ns since the Unix epoch), from an
/// `SCM_TIMESTAMPNS` message.
pub fn rx_timestamp_ns(control: &[u8]) -> Option<u64> {
    let data = find(control, libc::SOL_SOCKET, SO_TIMESTAMPNS)?;
    let word = size_of::<libc::c_long>();
    let secs = i64::from_ne_bytes(pad_word(data.get(..word)?)?);
    let nanos = i64::from_ne_bytes(pad_word(data.get(word..2 * word)?)?);
    let secs = u64::try_from(secs).ok()?;
    let nanos = u64::try_from(nanos).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A native-endian `long` (4 or 8 bytes) as the 8 bytes of an `i64`.
fn pad_word(bytes: &[u8]) -> Option<[u8; 8]> {
    match bytes.len() {
        8 => bytes.try_into().ok(),
        4 => {
            let v = i32::from_ne_bytes(bytes.try_into().ok()?);
            Some(i64::from(v).to_ne_bytes())
        }
        _ => None,
    }
}

/// The data of the first control message of `level`/`kind` in `control`.
fn find(control: &[u8], want_level: i32, want_kind: i32) -> Option<&[u8]> {
    let mut rest = control;
    // Each pass consumes at least one header, so this ends within len / HEADER passes.
    while rest.len() >= HEADER {
        let len = usize::from_ne_bytes(rest.get(..ALIGN)?.try_into().ok()?);
        let level = i32::from_ne_bytes(rest.get(ALIGN..ALIGN + 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(rest.get(ALIGN + 4..ALIGN + 8)?.try_into().ok()?);
        if len < HEADER || len > rest.len() {
            return None;
        }
        if level == want_level && kind == want_kind {
            return rest.get(cmsg_align(HEADER)..len);
        }
        rest = rest.get(cmsg_align(len)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(cmsg_align(HEADER) + data.len()).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.resize(cmsg_align(HEADER), 0);
        v.extend_from_slice(data);
        v.resize(cmsg_align(v.len()), 0);
        v
    }

    #[test]
    fn space_matches_the_kernel_macro() {
        // CMSG_SPACE(4) on a 64-bit target: 16-byte header + 4 bytes padded to 8.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(RXQ_OVFL_SPACE, 24);
        assert_eq!(
            cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &7u32.to_ne_bytes()).len(),
            RXQ_OVFL_SPACE
        );
    }

    #[test]
    fn udp_segment_message_has_the_kernel_layout() {
        let mut buf = [0xffu8; UDP_SEGMENT_SPACE];
        write_udp_segment(&mut buf, 1200);
        let want = cmsg(libc::SOL_UDP, libc::UDP_SEGMENT, &1200u16.to_ne_bytes());
        assert_eq!(&buf[..], &want[..]);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(UDP_SEGMENT_SPACE, 24);
    }

    #[test]
    fn reads_the_timestamp_beside_the_drop_count() {
        let mut ts = Vec::new();
        ts.extend_from_slice(&(1_796_548_929 as libc::c_long).to_ne_bytes());
        ts.extend_from_slice(&(94_789_000 as libc::c_long).to_ne_bytes());
        let mut c = cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &5u32.to_ne_bytes());
        c.extend(cmsg(libc::SOL_SOCKET, SO_TIMESTAMPNS, &ts));
        assert!(c.len() <= TIMESTAMP_SPACE);
        assert_eq!(rx_timestamp_ns(&c), Some(1_796_548_929_094_789_000));
        assert_eq!(rxq_ovfl(&c), Some(5));
        // Cut short, negative, or absent: none.
        let short = cmsg(libc::SOL_SOCKET, SO_TIMESTAMPNS, &ts[..ts.len() / 2]);
        assert_eq!(rx_timestamp_ns(&short), None);
        let mut neg = Vec::new();
        neg.extend_from_slice(&(-1 as libc::c_long).to_ne_bytes());
        neg.extend_from_slice(&(0 as libc::c_long).to_ne_bytes());
        assert_eq!(
            rx_timestamp_ns(&cmsg(libc::SOL_SOCKET, SO_TIMESTAMPNS, &neg)),
            None
        );
        assert_eq!(
            rx_timestamp_ns(&cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &[0; 4])),
            None
        );
    }

    #[test]
    fn reads_the_count() {
        let c = cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &123_456u32.to_ne_bytes());
        assert_eq!(rxq_ovfl(&c), Some(123_456));
    }

    #[test]
    fn finds_it_after_another_message() {
        let mut c = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0xb8]);
        c.extend(cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &9u32.to_ne_bytes()));
        assert_eq!(rxq_ovfl(&c), Some(9));
    }

    #[test]
    fn nothing_or_garbage_gives_none() {
        assert_eq!(rxq_ovfl(&[]), None);
        assert_eq!(rxq_ovfl(&[0u8; 8]), None);
        // A header whose length is shorter than a header, or runs past the area.
        let mut bad = cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &1u32.to_ne_bytes());
        bad[..ALIGN].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(rxq_ovfl(&bad), None);
        bad[..ALIGN].copy_from_slice(&1000usize.to_ne_bytes());
        assert_eq!(rxq_ovfl(&bad), None);
        // The right message cut short of its data.
        let full = cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &1u32.to_ne_bytes());
        assert_eq!(rxq_ovfl(&full[..HEADER + 2]), None);
        // Another type only.
        assert_eq!(rxq_ovfl(&cmsg(libc::SOL_SOCKET, 1, &[0; 4])), None);
        // Every truncation of a valid area is refused or read correctly, never a panic.
        for n in 0..full.len() {
            let got = rxq_ovfl(&full[..n]);
            assert!(got.is_none() || got == Some(1), "{n}: {got:?}");
        }
    }
}
