//! Thin wrappers over the Linux syscalls the benchmark needs and `std` does not offer:
//! `sendmmsg`/`recvmmsg` batches, epoll, the monotonic and CPU-time clocks, stop signals,
//! `RLIMIT_NOFILE` and forced socket buffer sizes.
//!
//! All `unsafe` of the rtpbench package lives in this module (the benchmark must batch its
//! syscalls so that it is not the bottleneck, and libc is the only way to do that without a
//! new dependency). Every block states why it is sound. IPv4 only: the benchmark runs on
//! 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC in nanoseconds (system-wide, so stamps are comparable across processes).
pub fn mono_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

/// CPU time used so far by another process (all its threads), in nanoseconds, from its CPU
/// clock (`clock_getcpuclockid`): exact, where `/proc/PID/stat` counts 10 ms ticks (200 ns
/// per packet in a 2.5 s step at 20k packets/s). `None` if the process is gone or its clock
/// cannot be read.
pub fn other_process_cpu_ns(pid: u32) -> Option<u64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut id: libc::clockid_t = 0;
    // SAFETY: `id` is a valid, writable clockid_t; the call only writes into it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut id) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    Some(
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64),
    )
}

/// CPU time consumed by the calling thread, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by this whole process (all threads), nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of utime/stime in `/proc/PID/stat`.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set a flag; returns that flag. Long loops poll
/// it so the benchmark can still tear its calls down on Ctrl-C.
pub fn install_stop_signals() -> &'static AtomicBool {
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is an `extern "C"` fn that only performs an atomic store.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
    &STOP
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Sets SO_RCVBUF beyond `net.core.rmem_max` when allowed (SO_RCVBUFFORCE needs
/// CAP_NET_ADMIN), else falls back to the capped SO_RCVBUF.
pub fn set_rcvbuf(fd: RawFd, bytes: usize) {
    let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` lives across the call and `len` is its size.
    unsafe {
        let p = &v as *const libc::c_int as *const libc::c_void;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// A preallocated batch of datagrams for `sendmmsg`/`recvmmsg`: `cap` slots of `slot_len`
/// bytes, each with its own length and IPv4 peer address. No allocation after `new`.
pub struct MsgBatch {
    bufs: Vec<u8>,
    slot_len: usize,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this batch's own heap
// buffers (rebuilt by `prepare` before each syscall); nothing is shared with another owner,
// so moving the whole batch to another thread is sound.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    pub fn new(cap: usize, slot_len: usize) -> Self {
        let cap = cap.max(1);
        let zero_addr = to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        Self {
            bufs: vec![0; cap * slot_len],
            slot_len,
            lens: vec![0; cap],
            addrs: vec![zero_addr; cap],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                cap
            ],
            // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value
            // (null pointers, zero lengths).
            hdrs: vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; cap],
        }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// The whole slot `i` (to fill before sending).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.slot_len..(i + 1) * self.slot_len]
    }

    /// The received (or to-be-sent) bytes of slot `i`.
    pub fn data(&self, i: usize) -> &[u8] {
        let start = i * self.slot_len;
        &self.bufs[start..start + self.lens[i].min(self.slot_len)]
    }

    pub fn set(&mut self, i: usize, len: usize, dest: SocketAddrV4) {
        self.lens[i] = len.min(self.slot_len);
        self.addrs[i] = to_sockaddr(dest);
    }

    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len.min(self.slot_len);
    }

    /// The peer of slot `i`: source after `recv`, destination as set for `send`.
    pub fn addr(&self, i: usize) -> SocketAddrV4 {
        from_sockaddr(&self.addrs[i])
    }

    /// Rebuilds the iovec/msghdr arrays for the first `n` slots. Pointers are refreshed on
    /// every call so they always point into this batch's own (never reallocated) vectors.
    fn prepare(&mut self, n: usize, recv: bool) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            let len = if recv { self.slot_len } else { self.lens[i] };
            // SAFETY: i < cap, so the offset stays inside `bufs` (cap * slot_len bytes).
            self.iovs[i].iov_base = unsafe { base.add(i * self.slot_len) } as *mut libc::c_void;
            self.iovs[i].iov_len = len;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// Sends slots `from..n` with one `sendmmsg`; returns how many datagrams the kernel took.
    pub fn send_range(&mut self, fd: RawFd, from: usize, n: usize) -> io::Result<usize> {
        let n = n.min(self.capacity());
        if from >= n {
            return Ok(0);
        }
        self.prepare(n, false);
        // SAFETY: hdrs[from..n] were just prepared and point into live buffers owned by self.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr().add(from),
                (n - from) as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// Sends slots `0..n`, retrying after partial sends; returns (sent, failed).
    pub fn send_all(&mut self, fd: RawFd, n: usize) -> (usize, usize) {
        let n = n.min(self.capacity());
        let mut done = 0;
        let mut failed = 0;
        while done + failed < n {
            match self.send_range(fd, done + failed, n) {
                Ok(0) => {
                    failed += 1;
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The datagram at the head failed (e.g. ENOBUFS, EAGAIN): count it, go on.
                Err(_) => failed += 1,
            }
        }
        (done, failed)
    }

    /// One non-blocking `recvmmsg` into all slots; returns the number of datagrams (0 when
    /// the socket is empty).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.capacity();
        self.prepare(n, true);
        // SAFETY: all `n` headers were just prepared and point into buffers owned by self.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = rc as usize;
        for i in 0..got {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.slot_len);
        }
        Ok(got)
    }
}

/// An epoll instance (level-triggered, read interest only).
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: no pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is a freshly created descriptor we own exclusively.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn del(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; failure (fd not registered) is harmless.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms`; calls `f(token)` for each ready descriptor.
    pub fn wait(&mut self, timeout_ms: i32, mut f: impl FnMut(u64)) -> io::Result<usize> {
        // SAFETY: `events` is a writable array of `len` epoll_event entries.
        let rc = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        let n = rc as usize;
        for ev in &self.events[..n] {
            let token = ev.u64;
            f(token);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod cpu_clock_tests {
    use super::*;

    #[test]
    fn another_process_cpu_clock_reads_and_grows() {
        // Our own pid stands in for the relay: the clock is the same kind.
        let pid = std::process::id();
        let t0 = other_process_cpu_ns(pid).expect("own CPU clock");
        let mut x = 0u64;
        let start = mono_ns();
        // ~20 ms of work, bounded by time.
        while mono_ns() - start < 20_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let t1 = other_process_cpu_ns(pid).expect("own CPU clock");
        assert!(t1 > t0 + 5_000_000, "{t0} -> {t1}");
        // A pid that cannot exist (above the kernel's pid_max limit of 2^22).
        assert_eq!(other_process_cpu_ns(1 << 23), None);
    }
}
