//! A UDP receive that says when the kernel queued the datagram (`SO_TIMESTAMPNS`), so the SIP
//! server can tell how long its input waited: the overload signal of its admission control.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg::{self, ControlArea, TIMESTAMP_SPACE};
use super::sockaddr;

/// One datagram received.
#[derive(Clone, Copy, Debug)]
pub struct Stamped {
    /// Bytes written to the buffer (a datagram longer than the buffer is cut to it).
    pub len: usize,
    pub peer: SocketAddr,
    /// When the kernel queued it (CLOCK_REALTIME, ns since the Unix epoch), if it said.
    pub queued_unix_ns: Option<u64>,
}

/// Asks the kernel to stamp every datagram `fd` receives.
pub fn enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::sockets::set_socket_flag(fd, cmsg::SO_TIMESTAMPNS)
}

/// Receives one datagram without blocking (`WouldBlock` when none is queued).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Stamped> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = ControlArea::<TIMESTAMP_SPACE>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = TIMESTAMP_SPACE as _;
    // SAFETY: the descriptor is open for the borrow; msg points at live, exclusively
    // borrowed name, iovec (over `buf`) and control areas of the lengths it gives, all of
    // which outlive the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = usize::try_from(n).unwrap_or(0).min(buf.len());
    let peer = sockaddr::read(sockaddr::storage_bytes(&name, msg.msg_namelen))
        .ok_or_else(|| io::Error::other("datagram from an address of unknown family"))?;
    let used = (msg.msg_controllen as usize).min(TIMESTAMP_SPACE);
    let queued_unix_ns = control.0.get(..used).and_then(cmsg::rx_timestamp_ns);
    Ok(Stamped {
        len,
        peer,
        queued_unix_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_datagram_comes_with_its_queueing_time() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(rx.as_fd()).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            recv(rx.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let before = crate::time::unix_now().as_nanos() as u64;
        tx.send_to(b"OPTIONS", rx.local_addr().unwrap()).unwrap();
        let mut got = None;
        for _ in 0..200 {
            match recv(rx.as_fd(), &mut buf) {
                Ok(s) => {
                    got = Some(s);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let s = got.expect("the datagram arrived");
        let after = crate::time::unix_now().as_nanos() as u64;
        assert_eq!(&buf[..s.len], b"OPTIONS");
        assert_eq!(s.peer, tx.local_addr().unwrap());
        let at = s.queued_unix_ns.expect("a timestamp");
        assert!(
            before.saturating_sub(1_000_000) <= at && at <= after,
            "{before} <= {at} <= {after}"
        );
    }
}
