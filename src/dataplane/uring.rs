//! The io_uring engine: one ring per pinned worker, one multishot `RecvMsg` per socket
//! drawing from a provided buffer ring, forwarded packets sent with `SendMsg` straight out of
//! the receive buffer (no copy in user space), all sends of a completion batch submitted with
//! one `io_uring_enter`, buffers recycled when their send completes. Consecutive datagrams of
//! a batch that leave through one socket for one destination go as one UDP GSO send
//! ([`super::gso`]): a video frame's packets cross the kernel's send path once.
//!
//! Ring setup: SINGLE_ISSUER + DEFER_TASKRUN. Completion work then runs only inside our own
//! `io_uring_enter` with GETEVENTS, on this pinned thread, so the receive work is charged to
//! the worker rather than to whichever syscall the thread makes next; DEFER_TASKRUN needs
//! SINGLE_ISSUER, which lets only the creating thread submit, so each ring is built on its
//! worker thread. The completion queue is much larger than the submission queue: a multishot
//! receive posts one completion per datagram with no submission behind it, and a full
//! completion queue spills into the kernel's overflow list, which is slow.
//!
//! Sockets live in the ring's fixed-file table (registered files) where it has room: the
//! worker moves each new socket there and closes its descriptor, so a relay is not bounded by
//! the process's descriptor limit (each ring's table may hold as many as that limit) and the
//! kernel skips the per-operation descriptor lookup. Slots beyond the table keep their
//! descriptor.
//!
//! One worker thread may drive several rings ([`UringThread`]). Each ring's table is capped at
//! the descriptor limit, so a worker whose share of the port range holds more sockets than
//! that (and than the spare descriptors, see `placement`) gets a second ring instead of a
//! second thread on the same core, which would cost a thread's sleeps and wake-ups (20-40%
//! per packet measured). Every ring has an eventfd registered, which the kernel signals when
//! that ring gets work; the ring the thread sleeps on holds a read of the others'.
//!
//! Overload: a multishot receive that ends (buffer ring empty: ENOBUFS, or any error) is
//! re-armed on the next turn, after sends have returned buffers, so every socket keeps being
//! read; a packet that finds no room in the submission queue is dropped and counted.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::time::{now_ns, NANOS_PER_MS};

use super::cmsg;
use super::core::{SocketIo, WorkerCore};
use super::forward::{Forward, PathConfig};
use super::gso;
use super::kernel::KernelWorker;
use super::shared::bump;
use super::slot::{Slot, SlotIdx};
use super::sockaddr;
use super::table::SlotTable;
use super::worker::{new_eventfd, WorkerShared};

/// Submission queue entries: at least one send per completion handled in a turn.
const SQ_ENTRIES: u32 = 2048;
/// 16 completions per submission slot: multishot receives post without submissions.
const CQ_ENTRIES: u32 = SQ_ENTRIES * 16;
/// Provided buffers per worker (power of two, at most 32768). 4096 x 2 KiB = 8 MiB holds a
/// full turn of packets even when every send goes asynchronous.
const NBUFS: u16 = 4096;
/// Per buffer: 16-byte recvmsg_out header + 28-byte name area + payload (~2000 bytes).
const BUF_SIZE: usize = 2048;
const BGID: u16 = 7;
/// Completions handled per turn before sends are submitted; bounds latency under load.
const MAX_CQES_PER_TURN: usize = 4096;
const IDLE_WAIT_NS: i64 = 100_000_000;
/// Stall watchdog. In one of ~220 forwarding runs measured on Linux 6.18, a multishot receive
/// stopped posting completions while packets kept arriving, with no error (it did not
/// recur). Every second, each RTP socket that has been silent for [`STALL_SILENCE_NS`] is
/// asked how much data it holds; data queued at two checks in a row with no completion in
/// between means a stalled receive, which is cancelled (its final completion re-arms it).
/// Queued data is never lost meanwhile.
const WATCHDOG_EVERY_NS: u64 = 1_000 * NANOS_PER_MS;
const STALL_SILENCE_NS: u64 = 500 * NANOS_PER_MS;
/// Sockets silent for longer than this are not checked (ended or held media), except those
/// that never received anything (a receive stalled from the start).
const STALL_WATCH_WINDOW_NS: u64 = 60_000 * NANOS_PER_MS;
/// Queries per watchdog pass, taken round-robin from where the last pass stopped. Streams
/// at a packet a second (10,000 calls at 20k packets/s) all look silent: unbounded, the
/// watchdog cost as much as the forwarding. A stall is then found within a few passes of
/// `slots / budget` seconds, still far sooner than anyone would hang up.
const WATCHDOG_BUDGET: usize = 512;

const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
/// Stall watchdog query (SIOCINQ through `IORING_OP_URING_CMD`) for a fixed-file slot.
const KIND_WATCH: u64 = 5;
/// A UDP GSO send of several datagrams (index into the worker's GSO pool).
const KIND_GSO: u64 = 6;
/// A read of another ring's work eventfd, held by the ring the thread sleeps on (low bits:
/// which of its watches).
const KIND_PEER: u64 = 7;
/// GSO sends in flight per worker; when all are taken, datagrams go one by one.
const GSO_POOL: usize = 256;
/// `SOCKET_URING_OP_SIOCINQ` from linux/io_uring.h (Linux 6.7+): bytes queued on a socket.
const SOCKET_URING_OP_SIOCINQ: u32 = 0;

/// user_data of an operation on a slot: kind, the slot's generation (24 bits), its index.
fn slot_token(kind: u64, idx: SlotIdx, generation: u32) -> u64 {
    (kind << KIND_SHIFT) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(idx.raw())
}

fn recv_token(idx: SlotIdx, generation: u32) -> u64 {
    slot_token(KIND_RECV, idx, generation)
}

fn send_token(bid: u16) -> u64 {
    (KIND_SEND << KIND_SHIFT) | u64::from(bid)
}

/// Builds a small ring with the setup flags the workers use; fails where io_uring is
/// disabled (sysctl), filtered (seccomp: EPERM/ENOSYS) or too old for them (EINVAL).
pub fn probe() -> io::Result<()> {
    let ring = build_ring(8)?;
    let probe_ops = {
        let mut p = io_uring::Probe::new();
        ring.submitter().register_probe(&mut p)?;
        p
    };
    for (op, name) in [
        (opcode::RecvMsg::CODE, "RecvMsg"),
        (opcode::SendMsg::CODE, "SendMsg"),
        (opcode::AsyncCancel::CODE, "AsyncCancel"),
        (opcode::Read::CODE, "Read"),
    ] {
        if !probe_ops.is_supported(op) {
            return Err(io::Error::other(format!("kernel lacks io_uring {name}")));
        }
    }
    Ok(())
}

/// Whether the kernel answers SIOCINQ for a socket in the fixed-file table (the watchdog's
/// only way to look at a socket without a descriptor). Uses table slot 0 and leaves it empty;
/// run before the ring carries anything else.
fn socket_cmd_works(ring: &mut IoUring) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind(("127.0.0.1", 0)) else {
        return false;
    };
    if ring
        .submitter()
        .register_files_update(0, &[sock.as_raw_fd()])
        .is_err()
    {
        return false;
    }
    let e = opcode::UringCmd16::new(types::Fixed(0), SOCKET_URING_OP_SIOCINQ)
        .build()
        .user_data(KIND_WATCH << KIND_SHIFT);
    // SAFETY: the command points at no memory of ours.
    let pushed = unsafe { ring.submission().push(&e) }.is_ok();
    let ok = pushed
        && ring.submit_and_wait(1).is_ok()
        && ring.completion().next().is_some_and(|c| c.result() >= 0);
    let _ = ring.submitter().register_files_update(0, &[-1]);
    ok
}

fn build_ring(sq: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(sq * 16)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        // IORING_SQ_TASKRUN tells, without a syscall, that a ring the thread is not sleeping
        // on has completions waiting to be run (see `UringThread`).
        .setup_taskrun_flag()
        .build(sq)
}

/// Per-buffer send state: must stay untouched until the send's completion arrives.
struct SendState {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    /// The relay socket it leaves through (kept for a GSO send that must be redone singly).
    out: OutSocket,
}

/// A relay socket as a send names it, with the owner it had when the datagram was received.
#[derive(Clone, Copy)]
struct OutSocket {
    slot: SlotIdx,
    generation: u32,
    fd: libc::c_int,
    fixed: bool,
}

impl OutSocket {
    fn of(fwd: &Forward) -> OutSocket {
        OutSocket {
            slot: fwd.slot,
            generation: fwd.generation,
            fd: fwd.fd,
            fixed: fwd.fixed,
        }
    }

    /// A `SendMsg` of `hdr` through this socket: its fixed file, or its descriptor.
    fn send_msg(&self, hdr: &libc::msghdr) -> squeue::Entry {
        if self.fixed {
            opcode::SendMsg::new(types::Fixed(self.slot.raw()), hdr).build()
        } else {
            opcode::SendMsg::new(types::Fd(self.fd), hdr).build()
        }
    }
}

/// One GSO send in flight: its own msghdr, the segments' iovecs (each pointing into its
/// receive buffer, as single sends do) and the buffers it holds.
struct GsoSend {
    hdr: libc::msghdr,
    control: cmsg::ControlArea<{ cmsg::UDP_SEGMENT_SPACE }>,
    iovs: [libc::iovec; gso::MAX_SEGMENTS],
    group: gso::Group,
}

struct BufRing {
    /// mmap'ed ring entries (page aligned, as the kernel requires).
    ring: *mut types::BufRingEntry,
    ring_len: usize,
    /// The buffers themselves.
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let ring_len = usize::from(NBUFS) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_len,
            data: vec![0u8; usize::from(NBUFS) * BUF_SIZE],
            tail: 0,
        };
        for bid in 0..NBUFS {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    fn buf_ptr(&mut self, bid: u16) -> *mut u8 {
        // SAFETY: bid < NBUFS, so the offset stays inside `data`.
        unsafe { self.data.as_mut_ptr().add(usize::from(bid) * BUF_SIZE) }
    }

    /// Queues buffer `bid` for the kernel (visible after `publish`).
    fn push(&mut self, bid: u16) {
        let addr = self.buf_ptr(bid) as u64;
        let i = usize::from(self.tail & (NBUFS - 1));
        // SAFETY: i < NBUFS entries of the mapping; the kernel reads only entries between its
        // head and our published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.ring.add(i) };
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `ring` is the base of the mapped ring; the tail field lives in entry 0's
        // reserved bytes and is only written by us (the kernel reads it), atomically.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the ring (and with it the
        // registration) is dropped before this, see field order in UringWorker.
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}

/// A ring and what its operations on the sockets need: the receive and wake-up buffers
/// they point at, and the slots whose receive must be armed again or whose socket closed.
struct Ring {
    // Field order matters: the ring is dropped (and with it every kernel reference to the
    // msghdr and the wake-up buffer) before them.
    ring: IoUring,
    recv_hdr: Box<libc::msghdr>,
    wake_buf: Box<u64>,
    shared: Arc<WorkerShared>,
    /// Slots whose multishot receive ended and must be re-armed next turn.
    rearm: Vec<SlotIdx>,
    /// Slots to close after the current submission (their fds may be named by queued SQEs).
    to_release: Vec<SlotIdx>,
    /// Size of the sparse fixed-file table (0: every socket stays a descriptor).
    fixed_cap: u32,
}

pub struct UringWorker {
    // Field order matters: the ring is dropped (and with it every kernel reference to our
    // buffers and msghdrs) before the buffers themselves.
    ring: Ring,
    bufs: BufRing,
    /// The reads this ring holds, while the thread sleeps on it, of the other rings' work
    /// eventfds (their targets must outlive the ring: field order).
    watches: Vec<Watch>,
    /// This ring's work eventfd, when the thread drives other rings too.
    work_fd: Option<OwnedFd>,
    last_watchdog: u64,
    sends: Vec<SendState>,
    gso_sends: Vec<GsoSend>,
    gso_free: Vec<u16>,
    gather: gso::Gatherer,
    cqes: Vec<cqueue::Entry>,
    /// Where the next watchdog pass starts.
    watch_cursor: usize,
    core: WorkerCore,
}

// SAFETY: the raw pointers (buffer ring mapping, msghdrs) point into memory owned by this
// struct; the worker is moved to its thread before the ring is first used and never shared.
unsafe impl Send for UringWorker {}

impl Ring {
    /// Queues `e`; when the queue is full, submits what it holds and tries once more. False
    /// when there is still no room.
    fn push_sqe(&mut self, e: squeue::Entry) -> bool {
        // SAFETY: every entry we build points only at memory owned by this worker that lives
        // until its completion (buffers, send states, msghdr, wake buffer).
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            return true;
        }
        // Queue full: hand what we have to the kernel and try once more.
        let _ = self.ring.submit();
        // SAFETY: as above.
        unsafe { self.ring.submission().push(&e) }.is_ok()
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.shared.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(KIND_WAKE << KIND_SHIFT);
        if self.push_sqe(e) {
            Ok(())
        } else {
            Err(io::Error::other("submission queue full"))
        }
    }

    /// Arms slot `idx`'s multishot receive, or queues it to be armed next turn when the
    /// ring has no room.
    fn arm_recv(&mut self, slots: &mut [Slot], idx: SlotIdx) {
        let Some(s) = slots.get_mut(idx.index()) else {
            return;
        };
        if !s.is_live() || s.armed {
            return;
        }
        let e = if s.fixed {
            opcode::RecvMsgMulti::new(types::Fixed(idx.raw()), &*self.recv_hdr, BGID).build()
        } else {
            opcode::RecvMsgMulti::new(types::Fd(s.fd()), &*self.recv_hdr, BGID).build()
        }
        .user_data(recv_token(idx, s.generation));
        s.armed = true;
        if !self.push_sqe(e) {
            if let Some(s) = slots.get_mut(idx.index()) {
                s.armed = false;
            }
            self.rearm.push(idx);
        }
    }

    /// Moves slot `i`'s socket into the fixed-file table and closes its descriptor (the
    /// table's reference keeps the socket open). Not on the packet path: once per new socket.
    fn fix(&mut self, slots: &mut [Slot], i: SlotIdx) {
        let Some(s) = slots.get_mut(i.index()) else {
            return;
        };
        let Some(fd) = s.socket.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        if i.raw() >= self.fixed_cap {
            bump(&self.shared.counters.fixed_fallbacks, 1);
            return;
        }
        match self.ring.submitter().register_files_update(i.raw(), &[fd]) {
            Ok(1) => {
                s.socket = None;
                s.fixed = true;
                bump(&self.shared.counters.fixed_files, 1);
            }
            _ => bump(&self.shared.counters.fixed_fallbacks, 1),
        }
    }

    /// Takes slot `i`'s socket out of the fixed-file table, which closes it once no
    /// operation in flight still holds it.
    fn unfix(&mut self, slots: &[Slot], i: SlotIdx) {
        let fixed = slots.get(i.index()).is_some_and(|s| s.fixed);
        if fixed {
            // Failure would mean the index is not in the table; the slot is released anyway.
            let _ = self.ring.submitter().register_files_update(i.raw(), &[-1]);
            self.shared
                .counters
                .fixed_files
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl SocketIo for Ring {
    fn attach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        self.fix(&mut table.slots, i);
        self.arm_recv(&mut table.slots, i);
    }

    fn detach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        let Some(s) = table.slots.get(i.index()) else {
            return;
        };
        if s.armed {
            // The final completion (ECANCELED, no MORE) releases the slot.
            let e = opcode::AsyncCancel::new(recv_token(i, s.generation))
                .build()
                .user_data(KIND_CANCEL << KIND_SHIFT);
            if !self.push_sqe(e) {
                self.to_release.push(i);
            }
        } else {
            self.to_release.push(i);
        }
    }
}

impl UringWorker {
    pub fn new(
        shared: Arc<WorkerShared>,
        cfg: PathConfig,
        fixed_files: u32,
        slot_reserve: usize,
    ) -> io::Result<UringWorker> {
        let mut ring = build_ring(SQ_ENTRIES)?;
        let fixed_cap = if fixed_files == 0 {
            0
        } else {
            match ring.submitter().register_files_sparse(fixed_files) {
                Ok(()) if socket_cmd_works(&mut ring) => fixed_files,
                Ok(()) => {
                    // The stall watchdog could not ask a fixed socket how much it holds.
                    tracing::warn!(
                        "kernel lacks socket uring_cmd (Linux < 6.7): media sockets stay descriptors"
                    );
                    0
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        slots = fixed_files,
                        "io_uring fixed-file table refused; media sockets stay descriptors"
                    );
                    0
                }
            }
        };
        debug_assert_eq!(ring.params().cq_entries(), CQ_ENTRIES);
        let bufs = BufRing::new()?;
        // SAFETY: the mapping stays alive until after the ring is dropped (field order), and
        // NBUFS is a power of two within the kernel's limit.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring as u64, NBUFS, BGID, 0)?;
        }
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let sends = (0..NBUFS)
            .map(|_| SendState {
                // SAFETY: as above.
                hdr: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                name: zero_ss,
                out: OutSocket {
                    slot: SlotIdx::NONE,
                    generation: 0,
                    fd: -1,
                    fixed: false,
                },
            })
            .collect();
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let gso_sends = (0..GSO_POOL)
            .map(|_| GsoSend {
                // SAFETY: as above.
                hdr: unsafe { std::mem::zeroed() },
                control: cmsg::ControlArea::zeroed(),
                iovs: [zero_iov; gso::MAX_SEGMENTS],
                group: gso::Group::default(),
            })
            .collect();
        // The receive msghdr only tells the kernel how much room the name and control areas
        // get: 28 bytes fits a sockaddr_in6 (and a sockaddr_in); the control area fits the
        // socket's drop count (SO_RXQ_OVFL), which the kernel adds once it has dropped any.
        // SAFETY: as above.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        recv_hdr.msg_controllen = cmsg::RXQ_OVFL_SPACE as _;
        let now = now_ns();
        let mut w = UringWorker {
            ring: Ring {
                ring,
                recv_hdr,
                wake_buf: Box::new(0),
                shared: shared.clone(),
                rearm: Vec::with_capacity(1 << 16),
                to_release: Vec::with_capacity(1024),
                fixed_cap,
            },
            bufs,
            watches: Vec::new(),
            work_fd: None,
            last_watchdog: now,
            sends,
            gso_sends,
            gso_free: (0..GSO_POOL as u16).rev().collect(),
            gather: gso::Gatherer::new(cfg.gso),
            cqes: Vec::with_capacity(MAX_CQES_PER_TURN),
            watch_cursor: 0,
            core: WorkerCore::new(shared, cfg, slot_reserve, now),
        };
        w.ring.arm_wake()?;
        Ok(w)
    }

    /// Gives this ring the in-kernel fast path.
    pub fn with_kernel(mut self, kernel: Option<KernelWorker>) -> UringWorker {
        self.core = self.core.with_kernel(kernel);
        self
    }

    /// Whether this ring has something to do without waiting: queued submissions, deferred
    /// completions to run, completions not yet handled, or receives to re-arm.
    fn has_work(&mut self) -> bool {
        let sq = self.ring.ring.submission();
        let queued = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
        drop(sq);
        queued
            || !self.ring.rearm.is_empty()
            || !self.ring.to_release.is_empty()
            || !self.ring.ring.completion().is_empty()
    }

    /// Submits what is queued and handles the completions there are, sleeping for one (up to
    /// the idle timeout) when `wait`. Returns how many it handled. `now`: the time of this
    /// pass of the thread, read by the first ring that needs it (one clock read a pass).
    fn turn(
        &mut self,
        wait: bool,
        ts: &types::Timespec,
        now: &mut Option<u64>,
    ) -> io::Result<usize> {
        self.core.apply_commands(&mut self.ring);
        // Taken and put back, so the list keeps its capacity (no allocation under load);
        // what `arm_recv` queues again (no room in the ring) stays queued.
        let mut rearm = std::mem::take(&mut self.ring.rearm);
        for &i in &rearm {
            self.ring.arm_recv(&mut self.core.table.slots, i);
        }
        rearm.clear();
        rearm.append(&mut self.ring.rearm);
        self.ring.rearm = rearm;
        let entered = if wait {
            let args = types::SubmitArgs::new().timespec(ts);
            self.ring
                .ring
                .submitter()
                .submit_with_args(1, &args)
                .map(|_| ())
        } else if self.has_work() {
            // Carries GETEVENTS when deferred completions wait (IORING_SQ_TASKRUN).
            self.ring.ring.submit().map(|_| ())
        } else {
            // Nothing queued, nothing to collect (a ring the thread did not sleep on).
            return Ok(0);
        };
        if let Err(e) = entered {
            if !matches!(
                e.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) {
                return Err(e);
            }
        }
        // Sockets of removed slots are closed only now: the SQEs naming them are submitted.
        let to_release = std::mem::take(&mut self.ring.to_release);
        for &i in &to_release {
            self.ring.unfix(&self.core.table.slots, i);
            self.core.table.release(i);
        }
        self.ring.to_release = to_release;
        self.ring.to_release.clear();
        let now = *now.get_or_insert_with(now_ns);
        bump(&self.core.counters().loops, 1);
        self.cqes.clear();
        {
            let mut cq = self.ring.ring.completion();
            cq.sync();
            for cqe in cq.by_ref().take(MAX_CQES_PER_TURN) {
                self.cqes.push(cqe);
            }
        }
        let cqes = std::mem::take(&mut self.cqes);
        for cqe in &cqes {
            self.handle_cqe(cqe, now);
        }
        if let Some(g) = self.gather.take() {
            self.send_group(g);
        }
        let handled = cqes.len();
        self.cqes = cqes;
        self.bufs.publish();
        Ok(handled)
    }

    /// Publication and the stall watchdog, after every turn of the thread. `idle`: no ring
    /// of the thread handled anything this turn.
    fn housekeeping(&mut self, now: u64, idle: bool) {
        // Only a turn that found nothing (the wait timed out) finishes a round at once. A
        // turn with one completion is not idle: at 10,000 streams and 50k packets/s per
        // worker most turns bring one packet, and publishing a whole round (~0.35 ms) on
        // them held up the packets behind it every 100 ms (p99 at 10,000 calls).
        self.core.housekeeping(now, idle);
        if now.saturating_sub(self.last_watchdog) >= WATCHDOG_EVERY_NS {
            self.watchdog(now);
            self.last_watchdog = now;
        }
    }

    /// Registers an eventfd that the kernel signals whenever this ring gets work, for another
    /// ring of the thread to watch.
    fn make_work_fd(&mut self) -> io::Result<libc::c_int> {
        let owned = new_eventfd()?;
        let fd = owned.as_raw_fd();
        self.ring.ring.submitter().register_eventfd(fd)?;
        self.work_fd = Some(owned);
        // Signals are wanted only while the thread sleeps (see `UringThread::run`).
        self.ring.ring.completion().disable_eventfd();
        Ok(fd)
    }

    /// Arms this ring's reads of the other rings' work eventfds that are not in flight.
    /// Called before the thread sleeps on this ring, so the submission rides on the sleep's
    /// own enter. A read consumes the count: it completes once per signal.
    fn arm_watches(&mut self) -> bool {
        for k in 0..self.watches.len() {
            let w = &mut self.watches[k];
            if w.armed {
                continue;
            }
            let buf: *mut u64 = &mut *w.buf;
            let e = opcode::Read::new(types::Fd(w.fd), buf.cast(), 8)
                .build()
                .user_data((KIND_PEER << KIND_SHIFT) | k as u64);
            if !self.ring.push_sqe(e) {
                return false;
            }
            self.watches[k].armed = true;
        }
        true
    }

    fn has_queued_submissions(&mut self) -> bool {
        !self.ring.ring.submission().is_empty()
    }

    /// See [`WATCHDOG_EVERY_NS`]. Not on the packet path: once a second, one `FIONREAD` per
    /// silent RTP socket.
    fn watchdog(&mut self, now: u64) {
        let n = self.core.table.slots.len();
        let mut budget = WATCHDOG_BUDGET;
        let start = self.watch_cursor;
        for k in 0..n {
            if budget == 0 {
                self.watch_cursor = (start + k) % n;
                return;
            }
            let i = (start + k) % n;
            let Some(s) = self.core.table.slots.get(i) else {
                break;
            };
            if !s.is_live() || !s.armed || s.kind != super::slot::SlotKind::Rtp {
                continue;
            }
            let last = s
                .counters()
                .map_or(0, |c| c.last_packet_ns.load(Ordering::Relaxed));
            let silent = now.saturating_sub(last);
            let watched = last == 0 || silent <= STALL_WATCH_WINDOW_NS;
            if silent < STALL_SILENCE_NS || !watched {
                if let Some(s) = self.core.table.slots.get_mut(i) {
                    s.stall_suspect = false;
                }
                continue;
            }
            budget -= 1;
            bump(&self.core.counters().watch_queries, 1);
            if s.fixed {
                // No descriptor to ioctl: ask through the ring; the answer comes back as a
                // completion (see `on_queued`).
                let e = opcode::UringCmd16::new(types::Fixed(i as u32), SOCKET_URING_OP_SIOCINQ)
                    .build()
                    .user_data(slot_token(KIND_WATCH, SlotIdx::new(i as u32), s.generation));
                let _ = self.ring.push_sqe(e);
                continue;
            }
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int into `queued`, which outlives the call; `fd` is
            // the slot's open socket.
            let rc = unsafe { libc::ioctl(s.fd(), libc::FIONREAD, &mut queued) };
            self.on_queued(SlotIdx::new(i as u32), rc == 0 && queued > 0);
        }
    }

    /// The watchdog's verdict for slot `i`: data queued at two checks in a row with no
    /// completion in between means a stalled receive, which is cancelled (and re-armed).
    fn on_queued(&mut self, i: SlotIdx, has_data: bool) {
        let Some(s) = self.core.table.slots.get_mut(i.index()) else {
            return;
        };
        let token = recv_token(i, s.generation);
        let suspect = s.stall_suspect;
        s.stall_suspect = has_data && !suspect;
        if has_data && suspect {
            bump(&self.core.counters().recv_stalls, 1);
            let e = opcode::AsyncCancel::new(token)
                .build()
                .user_data(KIND_CANCEL << KIND_SHIFT);
            let _ = self.ring.push_sqe(e);
        }
    }

    fn recycle(&mut self, bid: u16) {
        if bid < NBUFS {
            self.bufs.push(bid);
        }
    }

    /// The slot a [`slot_token`] names, and whether it still belongs to the same owner (same
    /// generation, socket attached).
    #[inline]
    fn token_slot(&self, ud: u64) -> (SlotIdx, bool) {
        let idx = SlotIdx::new((ud & 0xffff_ffff) as u32);
        let generation = ((ud >> 32) & 0x00ff_ffff) as u32;
        let current = matches!(
            self.core.table.slots.get(idx.index()),
            Some(s) if s.generation & 0x00ff_ffff == generation && s.has_socket()
        );
        (idx, current)
    }

    fn handle_cqe(&mut self, cqe: &cqueue::Entry, now: u64) {
        let ud = cqe.user_data();
        let res = cqe.result();
        let flags = cqe.flags();
        match ud >> KIND_SHIFT {
            KIND_RECV => {
                let (idx, current) = self.token_slot(ud);
                let bid = cqueue::buffer_select(flags);
                let more = cqueue::more(flags);
                if current {
                    if let Some(s) = self.core.table.slots.get_mut(idx.index()) {
                        // Any completion proves the receive is alive (stall watchdog).
                        s.stall_suspect = false;
                    }
                }
                if current && !more {
                    if let Some(s) = self.core.table.slots.get_mut(idx.index()) {
                        s.armed = false;
                        if s.closing {
                            self.ring.to_release.push(idx);
                        } else {
                            bump(&self.core.counters().recv_rearms, 1);
                            self.ring.rearm.push(idx);
                        }
                    }
                }
                if res == -libc::ENOBUFS {
                    bump(&self.core.counters().enobufs, 1);
                }
                let Some(bid) = bid else {
                    return;
                };
                if res <= 0 || !current {
                    if !current {
                        bump(&self.core.counters().drop_stale, 1);
                    }
                    self.recycle(bid);
                    return;
                }
                self.on_datagram(idx, bid, res as usize, now);
            }
            KIND_SEND => {
                let bid = (ud & 0xffff) as u16;
                if res < 0 {
                    bump(&self.core.counters().drop_send_failed, 1);
                } else {
                    bump(&self.core.counters().tx_packets, 1);
                    bump(&self.core.counters().tx_bytes, res as u64);
                }
                self.recycle(bid);
            }
            KIND_GSO => self.on_gso_sent((ud & 0xffff) as u16, res),
            KIND_WATCH => {
                let (idx, current) = self.token_slot(ud);
                let watched = current
                    && self
                        .core
                        .slots()
                        .get(idx.index())
                        .is_some_and(|s| s.is_live() && s.armed);
                // A kernel without socket uring_cmd answers with an error: no verdict.
                if res < 0 {
                    bump(&self.core.counters().watch_failed, 1);
                } else if watched {
                    self.on_queued(idx, res > 0);
                }
            }
            KIND_PEER => {
                // The signalling ring's turn follows on this same pass of the thread; the read
                // is armed again before the thread next sleeps on this ring.
                if let Some(w) = self.watches.get_mut((ud & 0xffff) as usize) {
                    w.armed = false;
                }
            }
            KIND_WAKE => {
                // Commands are drained at the top of the next turn, after this.
                self.core.shared.woken();
                if self.ring.arm_wake().is_err() {
                    tracing::error!("cannot re-arm the wake-up read");
                }
            }
            _ => {}
        }
    }

    fn on_datagram(&mut self, idx: SlotIdx, bid: u16, len: usize, now: u64) {
        let base = self.bufs.buf_ptr(bid);
        // SAFETY: the kernel wrote `len` (<= BUF_SIZE) bytes into buffer `bid`, which we own
        // again until we recycle it; nothing else aliases it meanwhile.
        let buf = unsafe { std::slice::from_raw_parts(base, len.min(BUF_SIZE)) };
        let Ok(msg) = types::RecvMsgOut::parse(buf, &self.ring.recv_hdr) else {
            bump(&self.core.counters().truncated, 1);
            self.recycle(bid);
            return;
        };
        if msg.is_payload_truncated() {
            bump(&self.core.counters().truncated, 1);
            self.recycle(bid);
            return;
        }
        self.core.note_control(idx, msg.control_data());
        let Some(src) = sockaddr::read(msg.name_data()) else {
            self.recycle(bid);
            return;
        };
        let payload = msg.payload_data();
        let payload_ptr = payload.as_ptr();
        let payload_len = payload.len();
        let Some(fwd) = self.core.receive(idx, src, payload, now) else {
            self.recycle(bid);
            return;
        };
        let st = &mut self.sends[usize::from(bid)];
        let namelen = sockaddr::write(fwd.dst, &mut st.name);
        st.iov = libc::iovec {
            iov_base: payload_ptr as *mut libc::c_void,
            iov_len: payload_len,
        };
        st.hdr.msg_name = (&mut st.name as *mut libc::sockaddr_storage).cast();
        st.hdr.msg_namelen = namelen;
        st.out = OutSocket::of(&fwd);
        let route = gso::Route {
            slot: fwd.slot.raw(),
            dst: fwd.dst,
        };
        if let Some(g) = self.gather.push(route, payload_len, bid) {
            self.send_group(g);
        }
    }

    /// Sends a gathered group: one datagram as a plain send, several as one GSO send (or
    /// one by one when every GSO state is in flight).
    fn send_group(&mut self, g: gso::Group) {
        let ids = g.ids();
        let (&first, more) = match ids.split_first() {
            Some(x) => x,
            None => return,
        };
        if more.is_empty() {
            self.send_single(first);
            return;
        }
        let Some(k) = self.gso_free.pop() else {
            for &bid in ids {
                self.send_single(bid);
            }
            return;
        };
        let head = &mut self.sends[usize::from(first)];
        let name = (&mut head.name as *mut libc::sockaddr_storage).cast();
        let namelen = head.hdr.msg_namelen;
        let out = head.out;
        let gs = &mut self.gso_sends[usize::from(k)];
        for (iov, &bid) in gs.iovs.iter_mut().zip(ids) {
            *iov = self.sends[usize::from(bid)].iov;
        }
        cmsg::write_udp_segment(&mut gs.control.0, g.seg_len);
        gs.hdr.msg_name = name;
        gs.hdr.msg_namelen = namelen;
        gs.hdr.msg_iov = gs.iovs.as_mut_ptr();
        gs.hdr.msg_iovlen = ids.len() as _;
        gs.hdr.msg_control = gs.control.0.as_mut_ptr().cast();
        gs.hdr.msg_controllen = cmsg::UDP_SEGMENT_SPACE as _;
        gs.group = g;
        let e = out
            .send_msg(&gs.hdr)
            .user_data((KIND_GSO << KIND_SHIFT) | u64::from(k));
        if !self.ring.push_sqe(e) {
            bump(&self.core.counters().drop_overload, u64::from(g.count));
            for &bid in g.ids() {
                self.recycle(bid);
            }
            self.gso_free.push(k);
        }
    }

    /// Sends the datagram in buffer `bid` by itself (its state was filled on receipt).
    fn send_single(&mut self, bid: u16) {
        let st = &mut self.sends[usize::from(bid)];
        st.hdr.msg_iov = &mut st.iov;
        st.hdr.msg_iovlen = 1;
        st.hdr.msg_control = std::ptr::null_mut();
        st.hdr.msg_controllen = 0;
        let e = st.out.send_msg(&st.hdr).user_data(send_token(bid));
        if !self.ring.push_sqe(e) {
            bump(&self.core.counters().drop_overload, 1);
            self.recycle(bid);
        }
    }

    /// A GSO send finished. On success every segment left; on failure (a path that cannot
    /// take the segment size, say) each datagram is sent again by itself, if its socket
    /// still belongs to the same stream.
    fn on_gso_sent(&mut self, k: u16, res: i32) {
        let Some(gs) = self.gso_sends.get(usize::from(k)) else {
            return;
        };
        let g = gs.group;
        self.gso_free.push(k);
        let c = &self.core.counters();
        if res >= 0 {
            bump(&c.tx_packets, u64::from(g.count));
            bump(&c.tx_bytes, res as u64);
            bump(&c.gso_sends, 1);
            bump(&c.gso_segments, u64::from(g.count));
            for &bid in g.ids() {
                self.recycle(bid);
            }
            return;
        }
        bump(&c.gso_failed, 1);
        let out = g.ids().first().map(|&b| self.sends[usize::from(b)].out);
        let current = out.is_some_and(|o| {
            self.core
                .table
                .slots
                .get(o.slot.index())
                .is_some_and(|s| s.generation == o.generation && s.is_live())
        });
        for &bid in g.ids() {
            if current {
                self.send_single(bid);
            } else {
                bump(&self.core.counters().drop_stale, 1);
                self.recycle(bid);
            }
        }
    }
}

/// A read one ring holds of another ring's work eventfd.
struct Watch {
    fd: libc::c_int,
    buf: Box<u64>,
    armed: bool,
}

/// The rings one worker thread drives (see the module notes). The thread sleeps on one ring
/// at a time: the one with sends queued, so they go with the sleep's own enter (sleeping on
/// a fixed ring cost one more enter for each packet of the others: +17% at 60k packets/s).
/// It skips the sleep while another ring has work, and holds a read of every other ring's
/// work eventfd to wake when one gets some. Those eventfds are signalled only while the
/// thread sleeps, not for every batch of a busy ring.
pub struct UringThread {
    rings: Vec<UringWorker>,
}

impl UringThread {
    /// Links the rings (all built on this thread). Fails if a work eventfd cannot be made.
    pub fn new(mut rings: Vec<UringWorker>) -> io::Result<UringThread> {
        if rings.is_empty() {
            return Err(io::Error::other("a worker needs at least one ring"));
        }
        if rings.len() > 1 {
            let fds = rings
                .iter_mut()
                .map(UringWorker::make_work_fd)
                .collect::<io::Result<Vec<_>>>()?;
            for (k, ring) in rings.iter_mut().enumerate() {
                for (j, &fd) in fds.iter().enumerate() {
                    if j != k {
                        ring.watches.push(Watch {
                            fd,
                            buf: Box::new(0),
                            armed: false,
                        });
                    }
                }
            }
        }
        Ok(UringThread { rings })
    }

    /// Whether every ring but `sleeper` is without work.
    fn others_idle(&mut self, sleeper: usize) -> bool {
        self.rings
            .iter_mut()
            .enumerate()
            .all(|(k, ring)| k == sleeper || !ring.has_work())
    }

    /// Turns the other rings' work eventfds on (before a sleep) or off (after it).
    fn signal_others(&mut self, sleeper: usize, on: bool) {
        for (k, ring) in self.rings.iter_mut().enumerate() {
            if k != sleeper {
                let cq = ring.ring.ring.completion();
                if on {
                    cq.enable_eventfd();
                } else {
                    cq.disable_eventfd();
                }
            }
        }
    }

    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let ts = types::Timespec::new().nsec(IDLE_WAIT_NS as u32);
        let n = self.rings.len();
        let mut sleeper = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(k) = (0..n).find(|&k| self.rings[k].has_queued_submissions()) {
                sleeper = k;
            }
            // Sleep only when no other ring has work (its sends would wait for the timeout).
            let mut wait = self.others_idle(sleeper);
            if wait && n > 1 {
                self.signal_others(sleeper, true);
                // The kernel signals a ring's eventfd only when it gets work with none pending
                // (and sets IORING_SQ_TASKRUN first): work that came before the signals were
                // on is seen here, work after them signals. A stale look costs one idle timeout.
                std::sync::atomic::fence(Ordering::SeqCst);
                wait = self.others_idle(sleeper);
                if wait && !self.rings[sleeper].arm_watches() {
                    tracing::error!("cannot arm the reads of the rings' work eventfds");
                    wait = false;
                }
                if !wait {
                    self.signal_others(sleeper, false);
                }
            }
            let mut handled = 0;
            let mut now = None;
            // The sleeper first; the others after it, with what woke it.
            for k in std::iter::once(sleeper).chain((0..n).filter(|&k| k != sleeper)) {
                match self.rings[k].turn(wait && k == sleeper, &ts, &mut now) {
                    Ok(got) => handled += got,
                    Err(e) => {
                        tracing::error!(error = %e, ring = k, "io_uring_enter failed; worker stops");
                        return;
                    }
                }
                if wait && k == sleeper && n > 1 {
                    self.signal_others(sleeper, false);
                }
            }
            let now = now.unwrap_or_else(now_ns);
            for ring in &mut self.rings {
                ring.housekeeping(now, handled == 0);
            }
        }
    }
}
