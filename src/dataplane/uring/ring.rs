//! A worker's ring, and what its operations on the sockets need: the receive header and
//! wake-up buffer they point at, and the slots whose receive must be armed again or whose
//! socket waits to be closed. Everything here is the ring's own I/O; what a datagram means is
//! the worker core's business.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::dataplane::cmsg;
use crate::dataplane::core::SocketIo;
use crate::dataplane::shared::bump;
use crate::dataplane::slot::{Slot, SlotIdx};
use crate::dataplane::table::SlotTable;
use crate::dataplane::worker::WorkerShared;

use super::bufring::{BufRing, BGID, NBUFS};
use super::token;

/// Submission queue entries: at least one send per completion handled in a turn.
const SQ_ENTRIES: u32 = 2048;
/// 16 completions per submission slot: multishot receives post without submissions.
const CQ_ENTRIES: u32 = SQ_ENTRIES * 16;
/// Completions a batching sleep waits for before its minimum wait is over.
const BATCH_WAIT_COMPLETIONS: usize = 32;
/// `SOCKET_URING_OP_SIOCINQ` from linux/io_uring.h (Linux 6.7+): bytes queued on a socket.
const SOCKET_URING_OP_SIOCINQ: u32 = 0;

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
        (opcode::Send::CODE, "Send"),
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
        .user_data(token::bare(token::KIND_WATCH));
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
        // on has completions waiting to be run (see `super::UringThread`).
        .setup_taskrun_flag()
        .build(sq)
}

/// A ring and what its operations on the sockets need.
pub struct Ring {
    // Field order matters: the ring is dropped (and with it every kernel reference to the
    // msghdr and the wake-up buffer) before them.
    ring: IoUring,
    /// Only tells the kernel how much room a receive's name and control areas get.
    recv_hdr: Box<libc::msghdr>,
    wake_buf: Box<u64>,
    shared: Arc<WorkerShared>,
    /// Slots whose multishot receive ended and must be re-armed next turn.
    rearm: Vec<SlotIdx>,
    /// Slots to close after the current submission (their fds may be named by queued SQEs).
    to_release: Vec<SlotIdx>,
    /// Size of the sparse fixed-file table (0: every socket stays a descriptor).
    fixed_cap: u32,
    /// A takeover paused this ring: ended receives are not armed again.
    paused: bool,
    /// Slots whose receive is still to be cancelled (the queue had no room).
    to_cancel: Vec<SlotIdx>,
    /// Microseconds a sleep, once a completion has come, may go on to gather more (0: none,
    /// or the kernel lacks IORING_FEAT_MIN_TIMEOUT).
    batch_wait_us: u32,
}

impl Ring {
    /// Builds the ring on the calling thread (the one that will submit) with a sparse
    /// fixed-file table of `fixed_files` entries where the kernel allows it, and arms the
    /// read of the worker's wake-up eventfd.
    pub fn new(
        shared: Arc<WorkerShared>,
        fixed_files: u32,
        batch_wait_us: u32,
    ) -> io::Result<Ring> {
        let mut ring = build_ring(SQ_ENTRIES)?;
        let batch_wait_us = if ring.params().is_feature_min_timeout() {
            batch_wait_us
        } else {
            if batch_wait_us > 0 {
                tracing::warn!("kernel lacks io_uring min-wait (Linux < 6.12): no batching wait");
            }
            0
        };
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
        // The receive msghdr only tells the kernel how much room the name and control areas
        // get: 28 bytes fits a sockaddr_in6 (and a sockaddr_in); the control area fits the
        // socket's drop count (SO_RXQ_OVFL), which the kernel adds once it has dropped any.
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        recv_hdr.msg_controllen = cmsg::RXQ_OVFL_SPACE as _;
        let mut r = Ring {
            ring,
            recv_hdr,
            wake_buf: Box::new(0),
            shared,
            rearm: Vec::with_capacity(1 << 16),
            to_release: Vec::with_capacity(1024),
            fixed_cap,
            paused: false,
            to_cancel: Vec::new(),
            batch_wait_us,
        };
        r.arm_wake()?;
        Ok(r)
    }

    /// Registers the buffer ring the receives draw from.
    ///
    /// # Safety
    /// `bufs` must stay alive (not be dropped or moved out of its mapping) until this ring is
    /// dropped: the kernel writes into its buffers until then.
    pub unsafe fn register_bufs(&mut self, bufs: &BufRing) -> io::Result<()> {
        // SAFETY: the caller keeps the mapping alive for the ring's life, and NBUFS is a
        // power of two within the kernel's limit.
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(bufs.entries_addr(), NBUFS, BGID, 0)
        }
    }

    /// What a receive's completion is parsed against.
    #[inline]
    pub fn recv_hdr(&self) -> &libc::msghdr {
        &self.recv_hdr
    }

    /// Queues `e`; when the queue is full, submits what it holds and tries once more. False
    /// when there is still no room.
    #[inline]
    pub fn push_sqe(&mut self, e: squeue::Entry) -> bool {
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
        .user_data(token::bare(token::KIND_WAKE));
        if self.push_sqe(e) {
            Ok(())
        } else {
            Err(io::Error::other("submission queue full"))
        }
    }

    /// The wake-up read completed: clears it and reads again. Commands are drained at the
    /// top of the next turn, after this.
    pub fn on_wake(&mut self) -> io::Result<()> {
        self.shared.woken();
        self.arm_wake()
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
        .user_data(token::recv(idx, s.generation));
        s.armed = true;
        if !self.push_sqe(e) {
            if let Some(s) = slots.get_mut(idx.index()) {
                s.armed = false;
            }
            self.rearm.push(idx);
        }
    }

    /// Slot `idx`'s multishot receive ended (no MORE flag): its socket is released after
    /// this turn's submission if the slot is closing, or armed again next turn.
    pub fn on_recv_ended(&mut self, idx: SlotIdx, closing: bool) {
        if closing {
            self.to_release.push(idx);
        } else if !self.paused {
            bump(&self.shared.counters.recv_rearms, 1);
            self.rearm.push(idx);
        }
    }

    /// Arms the receives that ended or found no room since the last turn.
    pub fn rearm_pending(&mut self, slots: &mut [Slot]) {
        // Taken and put back, so the list keeps its capacity (no allocation under load);
        // what `arm_recv` queues again (no room in the ring) stays queued.
        if self.paused {
            self.rearm.clear();
            self.cancel_pending(slots);
            return;
        }
        let mut rearm = std::mem::take(&mut self.rearm);
        for &i in &rearm {
            self.arm_recv(slots, i);
        }
        rearm.clear();
        rearm.append(&mut self.rearm);
        self.rearm = rearm;
    }

    /// Whether a takeover paused this ring.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether a paused ring still has receives to cancel or in flight.
    pub fn receiving(&self, slots: &[Slot]) -> bool {
        !self.to_cancel.is_empty() || slots.iter().any(|s| s.armed)
    }

    /// Pushes the cancels of paused receives that found no room before.
    fn cancel_pending(&mut self, slots: &[Slot]) {
        while let Some(&i) = self.to_cancel.last() {
            let Some(s) = slots.get(i.index()) else {
                self.to_cancel.pop();
                continue;
            };
            if s.armed && !self.cancel(token::recv(i, s.generation)) {
                return;
            }
            self.to_cancel.pop();
        }
    }

    /// Cancels the operation whose token is `target`. False when the ring had no room.
    pub fn cancel(&mut self, target: u64) -> bool {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(token::bare(token::KIND_CANCEL));
        self.push_sqe(e)
    }

    /// Cancels slot `i`'s receive for the stall watchdog: the completion names the slot, so a
    /// receive the kernel no longer has (-ENOENT) is re-armed there. False when no room.
    pub fn cancel_stalled(&mut self, i: SlotIdx, generation: u32) -> bool {
        let e = opcode::AsyncCancel::new(token::recv(i, generation))
            .build()
            .user_data(token::slot(token::KIND_STALL_CANCEL, i, generation));
        self.push_sqe(e)
    }

    /// Asks how many bytes slot `i`'s socket, held in the fixed-file table, has queued; the
    /// answer comes back as a [`token::KIND_WATCH`] completion.
    pub fn ask_queued(&mut self, i: SlotIdx, generation: u32) -> bool {
        let e = opcode::UringCmd16::new(types::Fixed(i.raw()), SOCKET_URING_OP_SIOCINQ)
            .build()
            .user_data(token::slot(token::KIND_WATCH, i, generation));
        self.push_sqe(e)
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

    /// Releases the slots of removed streams. Called only after a submission: the SQEs that
    /// name their sockets are then in the kernel's hands.
    pub fn release_closed(&mut self, table: &mut SlotTable) {
        let to_release = std::mem::take(&mut self.to_release);
        for &i in &to_release {
            self.unfix(&table.slots, i);
            table.release(i);
        }
        self.to_release = to_release;
        self.to_release.clear();
    }

    /// Whether removed streams' sockets wait to be closed (after the next submission).
    pub fn has_closes(&self) -> bool {
        !self.to_release.is_empty()
    }

    /// Whether this ring has something to do without waiting: queued submissions, deferred
    /// completions to run, completions not yet handled, or receives to re-arm.
    fn has_work(&mut self) -> bool {
        let (other, taskrun) = self.work_signs();
        other || taskrun
    }

    /// What [`Ring::has_work`] is made of: every sign of work but IORING_SQ_TASKRUN, and that
    /// flag.
    fn work_signs(&mut self) -> (bool, bool) {
        let sq = self.ring.submission();
        let (queued, taskrun) = (!sq.is_empty() || sq.cq_overflow(), sq.taskrun());
        drop(sq);
        let other = queued
            || !self.rearm.is_empty()
            || !self.to_release.is_empty()
            || !self.ring.completion().is_empty();
        (other, taskrun)
    }

    /// For the thread's decision to sleep on another ring: [`Ring::has_work`], except that a
    /// ring whose only sign of work is IORING_SQ_TASKRUN is entered first (GETEVENTS runs its
    /// deferred work, whose completions then show). The flag can stay set with nothing
    /// deferred: the kernel clears it when a run of the deferred work starts, and work queued
    /// during that run (which the run also takes) sets it again; an enter with nothing deferred
    /// runs nothing and leaves it set, until a later run. Counted as work, such a flag kept a
    /// worker thread from ever sleeping (BENCHMARKS §30b, §32). One enter per sleep while it
    /// is set; work queued after this look signals the ring's eventfd (the caller turns it on
    /// before looking again).
    pub fn has_work_to_run(&mut self) -> bool {
        match self.work_signs() {
            (true, _) => true,
            (false, false) => false,
            // Only the flag (the SQ is empty, so nothing is submitted): run what is deferred.
            // An enter that fails cannot tell: then the others are not slept on.
            (false, true) => self.ring.submit().is_err() || !self.ring.completion().is_empty(),
        }
    }

    /// What [`Ring::has_work`] looks at, for a log line.
    pub fn work_state(&mut self) -> String {
        let sq = self.ring.submission();
        let head = format!(
            "sq {} taskrun {} cq_overflow {}",
            sq.len(),
            sq.taskrun(),
            sq.cq_overflow()
        );
        drop(sq);
        format!(
            "{head} rearm {} release {} cq {}",
            self.rearm.len(),
            self.to_release.len(),
            self.ring.completion().len()
        )
    }

    pub fn has_queued_submissions(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// Submits what is queued and, when `wait`, sleeps for a completion (up to `ts`).
    /// Without `wait` it enters only when the ring has work; false when it did not enter.
    /// A timeout, an interrupted wait or a completion backlog is not an error.
    pub fn enter(&mut self, wait: bool, ts: &types::Timespec) -> io::Result<bool> {
        let entered = if wait && self.batch_wait_us > 0 {
            // Sleep until a completion comes; then up to `batch_wait_us` from the start of
            // the wait, or until BATCH_WAIT_COMPLETIONS, gather more before waking.
            let args = types::SubmitArgs::new()
                .timespec(ts)
                .min_wait_usec(self.batch_wait_us);
            self.ring
                .submitter()
                .submit_with_args(BATCH_WAIT_COMPLETIONS, &args)
                .map(|_| ())
        } else if wait {
            let args = types::SubmitArgs::new().timespec(ts);
            self.ring.submitter().submit_with_args(1, &args).map(|_| ())
        } else if self.has_work() {
            // Carries GETEVENTS when deferred completions wait (IORING_SQ_TASKRUN).
            self.ring.submit().map(|_| ())
        } else {
            // Nothing queued, nothing to collect (a ring the thread did not sleep on).
            return Ok(false);
        };
        if let Err(e) = entered {
            if !matches!(
                e.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) {
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Moves up to `max` completions into `cqes` (cleared first).
    pub fn collect(&mut self, cqes: &mut Vec<cqueue::Entry>, max: usize) {
        cqes.clear();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in cq.by_ref().take(max) {
            cqes.push(cqe);
        }
    }

    /// Registers `fd` as the eventfd the kernel signals when this ring gets work, with the
    /// signals off until [`Ring::signal_work`] turns them on.
    pub fn register_work_fd(&mut self, fd: libc::c_int) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)?;
        self.ring.completion().disable_eventfd();
        Ok(())
    }

    /// Turns the work eventfd's signals on (before the thread sleeps on another ring) or off.
    pub fn signal_work(&mut self, on: bool) {
        let cq = self.ring.completion();
        if on {
            cq.enable_eventfd();
        } else {
            cq.disable_eventfd();
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
        // The final completion of an armed receive (ECANCELED, no MORE) releases the slot.
        if !s.armed || !self.cancel(token::recv(i, s.generation)) {
            self.to_release.push(i);
        }
    }

    fn pause(&mut self, table: &mut SlotTable) {
        self.paused = true;
        self.rearm.clear();
        // Each armed receive ends with a final completion (ECANCELED, no MORE); the
        // datagrams it brought before are handled as usual.
        self.to_cancel = (0..table.slots.len())
            .filter(|&i| table.slots[i].armed)
            .map(|i| SlotIdx::new(i as u32))
            .collect();
        self.cancel_pending(&table.slots);
    }
}
