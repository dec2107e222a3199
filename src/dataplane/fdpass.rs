//! Passing open sockets to another process (a takeover): a Unix `SOCK_SEQPACKET` connection
//! (message boundaries kept) whose messages may carry descriptors (`SCM_RIGHTS`). The
//! receiving process gets new descriptors for the same open sockets, with their queued
//! datagrams. Only a peer running under our own user is served (`SO_PEERCRED`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// Most descriptors one message carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;

/// Control-area room for `n` descriptors (`CMSG_SPACE(n * sizeof(int))`).
fn control_space(n: usize) -> usize {
    let payload = u32::try_from(n * size_of::<libc::c_int>()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE is arithmetic on its argument only.
    unsafe { libc::CMSG_SPACE(payload) as usize }
}

/// A listening takeover socket at a filesystem path.
pub struct FdListener {
    sock: Socket,
}

/// One connection of a takeover.
pub struct FdConn {
    sock: Socket,
}

impl FdListener {
    /// Listens at `path` (a stale file there is replaced), readable and writable by our
    /// own user only.
    pub fn bind(path: &Path) -> io::Result<FdListener> {
        let _ = std::fs::remove_file(path);
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        sock.bind(&SockAddr::unix(path)?)?;
        std::fs::set_permissions(
            path,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )?;
        sock.listen(4)?;
        Ok(FdListener { sock })
    }

    /// Waits for the next connection from a process of our own user (others are closed).
    pub fn accept(&self) -> io::Result<FdConn> {
        loop {
            let (sock, _) = self.sock.accept()?;
            // SAFETY: getuid has no preconditions.
            let me = unsafe { libc::getuid() };
            match peer_uid(&sock) {
                Ok(uid) if uid == me => return Ok(FdConn { sock }),
                Ok(uid) => tracing::warn!(uid, "takeover connection from another user refused"),
                Err(e) => tracing::warn!(error = %e, "takeover connection without credentials"),
            }
        }
    }
}

/// The user id of the process at the other end of `sock`.
fn peer_uid(sock: &Socket) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live ucred and `len` its size; the descriptor is open (owned by
    // `sock`).
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl FdConn {
    /// Connects to the takeover socket at `path`.
    pub fn connect(path: &Path) -> io::Result<FdConn> {
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
        sock.connect(&SockAddr::unix(path)?)?;
        Ok(FdConn { sock })
    }

    /// Bounds every later receive (None: wait for ever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)?;
        self.sock.set_write_timeout(t)
    }

    /// Sends one message, with up to [`MAX_FDS`] descriptors attached.
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let payload = raw.len() * size_of::<libc::c_int>();
        let space = control_space(raw.len());
        // u64 words: the control area is aligned as `cmsghdr` needs.
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: the control area is `space` bytes, room for one header and `payload`
            // bytes (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and its data area holds the
            // descriptors copied in.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(c),
                    payload,
                );
            }
        }
        let n = loop {
            // SAFETY: `msg` points at `iov` (the caller's bytes, read only) and `control`,
            // both alive for the call; the descriptors are open (borrowed).
            let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                break n;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if n as usize != data.len() {
            return Err(io::Error::other("takeover message cut short"));
        }
        Ok(())
    }

    /// Receives one message into `buf`: its length and the descriptors it carried (close on
    /// exec). A message longer than `buf`, or whose descriptors did not all fit, is an error
    /// (the descriptors that came are closed). Length 0: the peer closed the connection.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let space = control_space(MAX_FDS);
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            // SAFETY: `msg` points at `buf` and `control`, writable and alive for the call.
            let n =
                unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n;
            }
            // A signal before anything arrived: nothing was received, try again.
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        // SAFETY: the kernel filled `msg`'s control area (msg_controllen bytes of it); the
        // CMSG_* macros walk only within it, and each SCM_RIGHTS message's data holds
        // (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors now owned by this process, read
        // unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    for k in 0..bytes / size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.add(k));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::other(
                "takeover message or its descriptors cut short",
            ));
        }
        Ok((n as usize, fds))
    }
}
