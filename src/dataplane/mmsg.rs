//! The fallback engine: epoll + `recvmmsg`/`sendmmsg`, for kernels or sandboxes without
//! io_uring. Only the I/O is its own: the slots, commands, per-packet decision and
//! housekeeping are the worker core's ([`WorkerCore`]), as under io_uring.
//!
//! Fairness under overload: each ready socket gets at most `BATCHES_PER_WAKE` receive
//! batches per turn and epoll is level-triggered, so every socket keeps being read however
//! busy the others are; what cannot be sent is dropped packet by packet and counted.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::time::now_ns;

use super::cmsg;
use super::core::{SocketIo, WorkerCore};
use super::forward::PathConfig;
use super::gso;
use super::kernel::KernelWorker;
use super::shared::bump;
use super::slot::SlotIdx;
use super::sockaddr;
use super::table::SlotTable;
use super::worker::WorkerShared;

/// Datagrams per recvmmsg/sendmmsg call: 64 amortises the syscall well (0.06 syscalls per
/// packet measured for one busy flow at 64 a call, on a 2-core VM) while keeping the buffers
/// (64 x 2 KiB) in L2.
const BATCH: usize = 64;
/// Receive buffer per datagram: larger than any RTP packet on an Ethernet path; bigger
/// datagrams are counted as truncated and dropped.
const BUF_SIZE: usize = 2048;
const BATCHES_PER_WAKE: usize = 4;
const MAX_EVENTS: usize = 256;
const WAKE_TOKEN: u64 = u64::MAX;
/// Upper bound on sleeping, so housekeeping runs even when idle.
const IDLE_WAIT_MS: i32 = 100;

/// One non-blocking `sendmmsg` of `msgs` on `fd`: how many left, or <= 0 if the first failed.
/// Callers pass only headers they staged this turn (`out_msgs` or `group_msgs`), whose
/// names, iovecs and control areas point into the worker's own buffers.
fn send_mmsg(fd: i32, msgs: &mut [libc::mmsghdr]) -> libc::c_int {
    let n = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
    // SAFETY: `msgs` is a live slice of `n` initialised headers; what they point at (names,
    // iovecs, buffers, control areas) belongs to the worker and outlives the call.
    unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, libc::MSG_DONTWAIT) }
}

fn token(idx: SlotIdx, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(idx.raw())
}

/// The epoll instance a worker waits on: every socket of its slots, and its wake-up eventfd.
/// The flag: a takeover paused the worker (no socket is watched any more).
struct Epoll(OwnedFd, bool);

impl Epoll {
    /// Registers `fd` for input under `token`.
    fn add(&self, fd: i32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open (a socket's until its slot is released, after
        // `del`); `ev` is a valid epoll_event that outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Epoll {
    /// Stops watching `fd`, an open socket of a slot.
    fn del(&self, fd: i32) {
        // SAFETY: both descriptors are open (the caller's socket until its slot is
        // released); a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }
}

impl SocketIo for Epoll {
    fn attach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        if let Some(s) = table.slots.get(i.index()) {
            // A socket epoll refuses is never read; its stream's packets are not relayed.
            let _ = self.add(s.fd(), token(i, s.generation));
        }
    }

    fn detach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        if let Some(s) = table.slots.get(i.index()) {
            // The socket is still open (released just below).
            self.del(s.fd());
        }
        // Synchronous engine: nothing in flight, close at once.
        table.release(i);
    }

    fn pause(&mut self, table: &mut SlotTable) {
        for s in table.slots.iter().filter(|s| s.is_live()) {
            self.del(s.fd());
        }
        self.1 = true;
    }
}

pub struct MmsgWorker {
    core: WorkerCore,
    epoll: Epoll,
    bufs: Vec<[u8; BUF_SIZE]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Per received datagram: room for the socket's drop count (SO_RXQ_OVFL).
    controls: Vec<cmsg::ControlArea<{ cmsg::RXQ_OVFL_SPACE }>>,
    out_names: Vec<libc::sockaddr_storage>,
    out_iovs: Vec<libc::iovec>,
    out_msgs: Vec<libc::mmsghdr>,
    out_routes: Vec<gso::Route>,
    /// The staged datagrams gathered for sending: one message per group (several datagrams
    /// of a group leave as one UDP GSO send), its first datagram and size.
    group_msgs: Vec<libc::mmsghdr>,
    group_controls: Vec<cmsg::ControlArea<{ cmsg::UDP_SEGMENT_SPACE }>>,
    group_first: Vec<usize>,
    group_len: Vec<usize>,
}

// SAFETY: the raw pointers inside the preallocated msghdr/iovec arrays point only into this
// struct's own heap buffers, and the worker is moved to its thread before first use.
unsafe impl Send for MmsgWorker {}

impl MmsgWorker {
    pub fn new(
        shared: Arc<WorkerShared>,
        cfg: PathConfig,
        slot_reserve: usize,
    ) -> std::io::Result<MmsgWorker> {
        // SAFETY: plain syscall; result checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor owned by nobody else.
        let epoll = Epoll(unsafe { OwnedFd::from_raw_fd(ep) }, false);
        epoll.add(shared.wake.as_raw_fd(), WAKE_TOKEN)?;
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(MmsgWorker {
            core: WorkerCore::new(shared, cfg, slot_reserve, now_ns()),
            epoll,
            bufs: vec![[0u8; BUF_SIZE]; BATCH],
            names: vec![zero_ss; BATCH],
            iovs: vec![zero_iov; BATCH],
            msgs: vec![zero_msg; BATCH],
            controls: vec![cmsg::ControlArea::zeroed(); BATCH],
            out_names: vec![zero_ss; BATCH],
            out_iovs: vec![zero_iov; BATCH],
            out_msgs: vec![zero_msg; BATCH],
            out_routes: vec![
                gso::Route {
                    slot: 0,
                    dst: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                };
                BATCH
            ],
            group_msgs: vec![zero_msg; BATCH],
            group_controls: vec![cmsg::ControlArea::zeroed(); BATCH],
            group_first: vec![0; BATCH],
            group_len: vec![0; BATCH],
        })
    }

    /// Gives this worker the in-kernel fast path.
    pub fn with_kernel(mut self, kernel: Option<KernelWorker>) -> MmsgWorker {
        self.core = self.core.with_kernel(kernel);
        self
    }

    /// The thread's loop. A panic in a pass (a bug in this engine's I/O code: the packet
    /// decision, commands and housekeeping have guards of their own) ends that pass only:
    /// it is counted (`worker_restarts`) and the loop goes on with the same sockets and
    /// slots; the datagrams of the batch in hand are lost.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let mut events: Vec<libc::epoll_event> =
            vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        while !stop.load(Ordering::Relaxed) {
            if catch_unwind(AssertUnwindSafe(|| self.pass(&mut events))).is_err() {
                bump(&self.core.counters().worker_restarts, 1);
            }
        }
    }

    /// One pass: commands, a wait for ready sockets, their datagrams, housekeeping.
    fn pass(&mut self, events: &mut [libc::epoll_event]) {
        {
            self.core.apply_commands(&mut self.epoll);
            // SAFETY: `events` has MAX_EVENTS entries the kernel may write.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as i32,
                    IDLE_WAIT_MS,
                )
            };
            let now = now_ns();
            bump(&self.core.counters().loops, 1);
            for ev in events.iter().take(n.max(0) as usize) {
                let tok = ev.u64;
                if tok == WAKE_TOKEN {
                    self.core.shared.woken();
                    self.core.apply_commands(&mut self.epoll);
                    continue;
                }
                let idx = SlotIdx::new((tok & 0xffff_ffff) as u32);
                let generation = (tok >> 32) as u32;
                match self.core.slots().get(idx.index()) {
                    // Paused by a takeover: what is queued stays for the new process.
                    Some(s) if s.is_live() && s.generation == generation && !self.epoll.1 => {}
                    _ => continue,
                }
                self.drain_socket(idx, now);
            }
            self.core.housekeeping(now, n <= 0);
            if self.epoll.1 {
                // Synchronous engine: every send of the last batch has been made.
                self.core.shared.paused.store(true, Ordering::Release);
            }
        }
    }

    fn drain_socket(&mut self, idx: SlotIdx, now: u64) {
        let fd = match self.core.slots().get(idx.index()) {
            Some(s) => s.fd(),
            None => return,
        };
        for _ in 0..BATCHES_PER_WAKE {
            for i in 0..BATCH {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: BUF_SIZE,
                };
                let h = &mut self.msgs[i].msg_hdr;
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = self.controls[i].0.as_mut_ptr().cast();
                h.msg_controllen = cmsg::RXQ_OVFL_SPACE as _;
                h.msg_flags = 0;
                self.msgs[i].msg_len = 0;
            }
            // SAFETY: `msgs` holds BATCH initialised headers whose name/iov/control pointers
            // point into this worker's own buffers, which outlive the call.
            let k = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if k <= 0 {
                break;
            }
            let k = k as usize;
            let mut staged = 0usize;
            for i in 0..k {
                // usize with glibc, socklen_t with musl.
                #[allow(clippy::unnecessary_cast)]
                let control_len =
                    (self.msgs[i].msg_hdr.msg_controllen as usize).min(cmsg::RXQ_OVFL_SPACE);
                self.core
                    .note_control(idx, &self.controls[i].0[..control_len]);
                let len = (self.msgs[i].msg_len as usize).min(BUF_SIZE);
                if self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    bump(&self.core.counters().truncated, 1);
                    continue;
                }
                let Some(src) = sockaddr::read(sockaddr::storage_bytes(
                    &self.names[i],
                    self.msgs[i].msg_hdr.msg_namelen,
                )) else {
                    continue;
                };
                #[cfg(feature = "fault-injection")]
                super::fault::check_io(&self.bufs[i][..len]);
                let Some(fwd) = self.core.receive(idx, src, &self.bufs[i][..len], now) else {
                    continue;
                };
                let j = staged;
                let nl = sockaddr::write(fwd.dst, &mut self.out_names[j]);
                self.out_iovs[j] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: len,
                };
                let h = &mut self.out_msgs[j].msg_hdr;
                h.msg_name = (&mut self.out_names[j] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = nl;
                h.msg_iov = &mut self.out_iovs[j];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                // The mmsg engine names a relay socket by its descriptor.
                self.out_routes[j] = gso::Route {
                    slot: fwd.fd as u32,
                    dst: fwd.dst,
                };
                staged += 1;
            }
            self.flush(staged);
            if k < BATCH {
                break;
            }
        }
    }

    /// Sends the staged datagrams, one `sendmmsg` per run of the same outgoing socket.
    /// Consecutive datagrams for one destination leave as one UDP GSO send (see [`gso`]).
    fn flush(&mut self, staged: usize) {
        let mut groups = 0;
        let mut gather = gso::Gatherer::new(self.core.cfg().gso);
        for j in 0..staged {
            let len = self.out_iovs[j].iov_len;
            if let Some(g) = gather.push(self.out_routes[j], len, j as u16) {
                self.stage_group(groups, &g);
                groups += 1;
            }
        }
        if let Some(g) = gather.take() {
            self.stage_group(groups, &g);
            groups += 1;
        }
        let mut start = 0;
        while start < groups {
            let fd = self.out_fd(self.group_first[start]);
            let mut end = start + 1;
            while end < groups && self.out_fd(self.group_first[end]) == fd {
                end += 1;
            }
            let mut pos = start;
            // Each pass sends at least one group or handles one, so this ends within
            // `end - start` passes.
            while pos < end {
                let sent = send_mmsg(fd, &mut self.group_msgs[pos..end]);
                let counters = self.core.counters();
                if sent <= 0 {
                    let (first, n) = (self.group_first[pos], self.group_len[pos]);
                    if n > 1 {
                        // The kernel refused the GSO send: each datagram by itself.
                        bump(&counters.gso_failed, 1);
                        self.send_singly(fd, first, first + n);
                    } else {
                        // Send buffer full, unreachable: shed it, go on.
                        bump(&counters.drop_send_failed, 1);
                    }
                    pos += 1;
                    continue;
                }
                for k in pos..pos + sent as usize {
                    let n = self.group_len[k] as u64;
                    bump(&counters.tx_packets, n);
                    bump(&counters.tx_bytes, u64::from(self.group_msgs[k].msg_len));
                    if n > 1 {
                        bump(&counters.gso_sends, 1);
                        bump(&counters.gso_segments, n);
                    }
                }
                pos += sent as usize;
            }
            start = end;
        }
    }

    /// The relay socket staged datagram `j` leaves through.
    fn out_fd(&self, j: usize) -> i32 {
        self.out_routes[j].slot as i32
    }

    /// Message `k` of the next `sendmmsg`: group `g` of the staged datagrams.
    fn stage_group(&mut self, k: usize, g: &gso::Group) {
        let first = usize::from(g.ids[0]);
        let n = usize::from(g.count);
        self.group_first[k] = first;
        self.group_len[k] = n;
        let namelen = self.out_msgs[first].msg_hdr.msg_namelen;
        let h = &mut self.group_msgs[k].msg_hdr;
        h.msg_name = (&mut self.out_names[first] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = namelen;
        // The staged iovecs are contiguous, so a group's are out_iovs[first..first + n].
        h.msg_iov = &mut self.out_iovs[first];
        h.msg_iovlen = n as _;
        if n > 1 {
            cmsg::write_udp_segment(&mut self.group_controls[k].0, g.seg_len);
            h.msg_control = self.group_controls[k].0.as_mut_ptr().cast();
            h.msg_controllen = cmsg::UDP_SEGMENT_SPACE as _;
        } else {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        h.msg_flags = 0;
        self.group_msgs[k].msg_len = 0;
    }

    /// Sends staged datagrams `start..end` (all for `fd`) one message each.
    fn send_singly(&mut self, fd: i32, start: usize, end: usize) {
        let counters = self.core.counters();
        let mut pos = start;
        // Each pass sends at least one or drops one, so this ends within `end - start` passes.
        while pos < end {
            let sent = send_mmsg(fd, &mut self.out_msgs[pos..end]);
            if sent <= 0 {
                bump(&counters.drop_send_failed, 1);
                pos += 1;
                continue;
            }
            for m in &self.out_msgs[pos..pos + sent as usize] {
                bump(&counters.tx_packets, 1);
                bump(&counters.tx_bytes, u64::from(m.msg_len));
            }
            pos += sent as usize;
        }
    }
}
