//! Binding relay sockets (socket2): non-blocking UDP, configurable buffers, IPv4 or IPv6.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::session::ports::{AddressId, AddressPorts, PortError, PortPair};

#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    pub rcvbuf: usize,
    pub sndbuf: usize,
}

pub fn bind_udp(addr: SocketAddr, opts: SocketOptions) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    // Non-blocking from the start (SOCK_NONBLOCK): two fcntl calls fewer per socket, four
    // sockets per call set up.
    let s = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if opts.rcvbuf > 0 {
        s.set_recv_buffer_size(opts.rcvbuf)?;
    }
    if opts.sndbuf > 0 {
        s.set_send_buffer_size(opts.sndbuf)?;
    }
    enable_drop_count(&s)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Whether a socket could not be made for want of descriptors (process or system limit).
fn out_of_descriptors(r: &io::Result<OwnedFd>) -> bool {
    matches!(r, Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

/// Whether the kernel takes UDP GSO sends (`UDP_SEGMENT`, Linux 4.18). Asked by reading the
/// option back: an older kernel refuses it (ENOPROTOOPT), where a send would ignore the
/// control message and put a whole burst into one datagram.
pub fn gso_supported() -> bool {
    let Ok(s) = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP)) else {
        return false;
    };
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is open (owned by `s`); `val` and `len` are live and `len` is
    // the size of `val`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Asks the kernel to attach the socket's drop count to received datagrams (`SO_RXQ_OVFL`),
/// so the workers can count what was lost to a full receive queue. socket2 has no setter.
fn enable_drop_count(s: &Socket) -> io::Result<()> {
    set_socket_flag(s.as_fd(), super::cmsg::SO_RXQ_OVFL)
}

/// Turns on a boolean `SOL_SOCKET` option that socket2 has no setter for.
pub fn set_socket_flag(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open for the borrow, and `on` is a live c_int whose size is
    // the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Upper bound on bind attempts per allocation: enough to step over a crowd of ports that
/// other programs hold, small enough that a full range fails fast.
const MAX_BIND_ATTEMPTS: usize = 64;

/// Allocates a pair on `ip` (from that address's own range) and binds both sockets, skipping
/// pairs that cannot be bound.
pub fn bind_pair(
    ports: &mut AddressPorts,
    ip: IpAddr,
    opts: SocketOptions,
) -> Result<(AddressId, PortPair, OwnedFd, OwnedFd), PortError> {
    for _ in 0..MAX_BIND_ATTEMPTS.min(ports.pairs_per_address()) {
        let (pool, pair) = ports.allocate(ip)?;
        let rtp = bind_udp(SocketAddr::new(ip, pair.rtp), opts);
        let rtcp = rtp
            .as_ref()
            .ok()
            .map(|_| bind_udp(SocketAddr::new(ip, pair.rtcp()), opts));
        let no_fds = out_of_descriptors(&rtp) || rtcp.as_ref().is_some_and(out_of_descriptors);
        match (rtp, rtcp) {
            (Ok(a), Some(Ok(b))) => return Ok((pool, pair, a, b)),
            _ => ports.skip(pool, pair),
        }
        // Every other pair would fail alike; the caller reports it as running out of ports
        // (rtpengine's wording, on which a proxy fails over to another relay).
        if no_fds {
            break;
        }
    }
    Err(PortError::Exhausted)
}
