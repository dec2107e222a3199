//! One ring's worker: the ring and its buffers, the send states, the watchdog, and the
//! worker core it tells what arrived. A turn submits what is queued, sleeps when asked,
//! and handles the completions: datagrams go to the core, and what it forwards goes out
//! of the buffer it came in.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, types};

use crate::dataplane::core::{SocketIo, WorkerCore};
use crate::dataplane::forward::PathConfig;
use crate::dataplane::kernel::KernelWorker;
use crate::dataplane::shared::bump;
use crate::dataplane::slot::SlotIdx;
use crate::dataplane::sockaddr;
use crate::dataplane::table::SlotTable;
use crate::dataplane::worker::{new_eventfd, WorkerShared};
use crate::time::now_ns;

use super::bufring::{BufRing, BUF_SIZE};
use super::connect::Connector;
use super::ring::Ring;
use super::send::{SendCtx, Sender};
use super::token;
use super::watchdog::{self, Watchdog};

/// Completions handled per turn before sends are submitted; bounds latency under load.
const MAX_CQES_PER_TURN: usize = 4096;

/// A read one ring holds of another ring's work eventfd.
struct Watch {
    fd: libc::c_int,
    buf: Box<u64>,
    armed: bool,
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
    sender: Sender,
    connect: Connector,
    watchdog: Watchdog,
    cqes: Vec<cqueue::Entry>,
    /// See [`UringWorker::last_useful`]. During a turn's handling, the peer reads seen so
    /// far.
    last_useful: usize,
    core: WorkerCore,
    /// Turns in a row a paused ring found nothing received or in flight.
    quiet_turns: u8,
    /// Test-only: the slot whose receive's end is to go unseen (see `lose_receive`).
    #[cfg(feature = "fault-injection")]
    lost_recv: Option<SlotIdx>,
}

// SAFETY: the raw pointers (buffer ring mapping, msghdrs) point into memory owned by this
// struct; the worker is moved to its thread before the ring is first used and never shared.
unsafe impl Send for UringWorker {}

/// How many times a worker's rings are built before an ENOMEM stops the start.
const START_ATTEMPTS: u32 = 4;

impl UringWorker {
    /// Builds the worker's ring and buffer ring. The kernel's allocations for them can fail
    /// for a moment when memory is fragmented or being reclaimed (ENOMEM): each is tried
    /// [`START_ATTEMPTS`] times, 50 ms apart and doubling, before the error (naming the step
    /// that failed) stops the start.
    pub fn new(
        shared: Arc<WorkerShared>,
        cfg: PathConfig,
        fixed_files: u32,
        slot_reserve: usize,
    ) -> io::Result<UringWorker> {
        let mut pause = std::time::Duration::from_millis(50);
        let mut attempt = 1;
        let (ring, bufs) = loop {
            match Self::rings(&shared, cfg, fixed_files) {
                Ok(r) => break r,
                Err((step, e))
                    if e.raw_os_error() == Some(libc::ENOMEM) && attempt < START_ATTEMPTS =>
                {
                    tracing::warn!(step, attempt, error = %e, "io_uring set-up refused; trying again");
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err((step, e)) => return Err(io::Error::new(e.kind(), format!("{step}: {e}"))),
            }
        };
        let now = now_ns();
        Ok(UringWorker {
            ring,
            bufs,
            watches: Vec::new(),
            work_fd: None,
            sender: Sender::new(cfg.gso),
            connect: Connector::new(cfg.connect),
            watchdog: Watchdog::new(now),
            cqes: Vec::with_capacity(MAX_CQES_PER_TURN),
            last_useful: 0,
            core: WorkerCore::new(shared, cfg, slot_reserve, now),
            quiet_turns: 0,
            #[cfg(feature = "fault-injection")]
            lost_recv: None,
        })
    }

    /// The ring and its registered buffer ring, or the step that failed and why.
    fn rings(
        shared: &Arc<WorkerShared>,
        cfg: PathConfig,
        fixed_files: u32,
    ) -> Result<(Ring, BufRing), (&'static str, io::Error)> {
        #[cfg(feature = "fault-injection")]
        crate::dataplane::fault::ring_setup().map_err(|e| ("io_uring ring", e))?;
        let mut ring = Ring::new(shared.clone(), fixed_files, cfg.batch_wait_us)
            .map_err(|e| ("io_uring ring", e))?;
        let bufs = BufRing::new().map_err(|e| ("receive buffer ring", e))?;
        // SAFETY: `bufs` is moved into the worker next to the ring, and dropped after it
        // (field order); moving the BufRing does not move its mapping or buffers.
        unsafe { ring.register_bufs(&bufs) }.map_err(|e| ("buffer ring registration", e))?;
        Ok((ring, bufs))
    }

    /// Gives this ring the in-kernel fast path.
    pub fn with_kernel(mut self, kernel: Option<KernelWorker>) -> UringWorker {
        if kernel.is_some() {
            // The fast path takes the packets the socket would filter (and the stranger it
            // passes up must reach the latch): its sockets stay unconnected.
            self.connect = Connector::new(false);
        }
        self.core = self.core.with_kernel(kernel);
        self
    }

    /// See [`Ring::has_work_to_run`].
    pub(super) fn has_work_to_run(&mut self) -> bool {
        self.ring.has_work_to_run()
    }

    /// See [`Ring::work_state`].
    pub(super) fn work_state(&mut self) -> String {
        self.ring.work_state()
    }

    /// Completions of the last turn other than the wake-up reads of the thread's other
    /// rings (`KIND_PEER`): datagrams, sends, commands' wake-ups and the like.
    pub(super) fn last_useful(&self) -> usize {
        self.last_useful
    }

    pub(super) fn has_queued_submissions(&mut self) -> bool {
        self.ring.has_queued_submissions()
    }

    /// See [`Ring::signal_work`].
    pub(super) fn signal_work(&mut self, on: bool) {
        self.ring.signal_work(on);
    }

    /// Submits what is queued and handles the completions there are, sleeping for one (up to
    /// the idle timeout) when `wait`. Returns how many it handled. `now`: the time of this
    /// pass of the thread, read by the first ring that needs it (one clock read a pass).
    pub(super) fn turn(
        &mut self,
        wait: bool,
        ts: &types::Timespec,
        now: &mut Option<u64>,
    ) -> io::Result<usize> {
        self.last_useful = 0;
        self.core.apply_commands(&mut Io {
            ring: &mut self.ring,
            connect: &mut self.connect,
        });
        self.ring.rearm_pending(self.core.slots_mut());
        // Sockets to close do not wait out a sleep: their ports are free for the next offer
        // only once they are closed, so this enter only submits and the sleep comes next pass.
        let wait = wait && !self.ring.has_closes();
        if !self.ring.enter(wait, ts)? {
            return Ok(0);
        }
        // Sockets of removed slots are closed only now: the SQEs naming them are submitted.
        self.ring.release_closed(&mut self.core.table);
        // Commands that came while the ring slept go before the datagrams that came with
        // them: a batching sleep (`--uring-batch-wait-us`) holds the wake-up a command
        // sends for up to the wait, and an answer's media must find the answer applied.
        self.core.apply_commands(&mut Io {
            ring: &mut self.ring,
            connect: &mut self.connect,
        });
        let now = *now.get_or_insert_with(now_ns);
        bump(&self.core.counters().loops, 1);
        let mut cqes = std::mem::take(&mut self.cqes);
        self.ring.collect(&mut cqes, MAX_CQES_PER_TURN);
        for cqe in &cqes {
            self.handle_cqe(cqe, now);
        }
        self.sender.flush(&mut SendCtx {
            ring: &mut self.ring,
            bufs: &mut self.bufs,
            counters: &self.core.shared.counters,
        });
        let handled = cqes.len();
        // The peer reads were counted as they were handled (`handle_cqe`).
        self.last_useful = handled.saturating_sub(self.last_useful);
        self.cqes = cqes;
        self.bufs.publish();
        Ok(handled)
    }

    /// Test-only fault: slot `idx`'s receive is cancelled and its final completion ignored,
    /// so the worker believes it armed while nothing reads the socket: to the worker this is
    /// the stall the watchdog exists for (data queued, no completion).
    #[cfg(feature = "fault-injection")]
    fn lose_receive(&mut self, idx: SlotIdx) {
        let Some(generation) = self.core.slots().get(idx.index()).map(|s| s.generation) else {
            return;
        };
        if self.ring.cancel(token::recv(idx, generation)) {
            self.lost_recv = Some(idx);
        }
    }

    /// Counts a restart of the thread's loop after a panic (see `UringThread::run`).
    pub(super) fn count_restart(&self) {
        bump(&self.core.shared.counters.worker_restarts, 1);
    }

    /// Publication and the stall watchdog, after every turn of the thread. `idle`: no ring
    /// of the thread handled anything this turn.
    pub(super) fn housekeeping(&mut self, now: u64, idle: bool) {
        // Only a turn that found nothing (the wait timed out) finishes a round at once. A
        // turn with one completion is not idle: at 10,000 streams and 50k packets/s per
        // worker most turns bring one packet, and publishing a whole round (~0.35 ms) on
        // them held up the packets behind it every 100 ms (p99 at 10,000 calls).
        self.core.housekeeping(now, idle);
        self.connect
            .turn(&mut self.core.table.slots, now, &mut self.ring);
        if self.ring.is_paused() {
            self.note_pause();
            return;
        }
        self.watchdog.tick(
            now,
            &mut self.core.table.slots,
            &mut self.ring,
            &self.core.shared.counters,
        );
    }

    /// A paused ring is done once no receive is armed (their last datagrams handled) and a
    /// further turn has submitted what those datagrams staged for sending.
    fn note_pause(&mut self) {
        if self.ring.receiving(&self.core.table.slots)
            || self.ring.has_queued_submissions()
            || !self.connect.settled(&self.core.table.slots)
        {
            self.quiet_turns = 0;
            return;
        }
        self.quiet_turns = self.quiet_turns.saturating_add(1);
        if self.quiet_turns >= 2 {
            self.core
                .shared
                .paused
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Registers an eventfd that the kernel signals whenever this ring gets work, for another
    /// ring of the thread to watch.
    pub(super) fn make_work_fd(&mut self) -> io::Result<libc::c_int> {
        let owned = new_eventfd()?;
        let fd = owned.as_raw_fd();
        // Signals are wanted only while the thread sleeps (see `UringThread::run`).
        self.ring.register_work_fd(fd)?;
        self.work_fd = Some(owned);
        Ok(fd)
    }

    /// Adds a read of another ring's work eventfd `fd` (armed when the thread sleeps here).
    pub(super) fn watch(&mut self, fd: libc::c_int) {
        self.watches.push(Watch {
            fd,
            buf: Box::new(0),
            armed: false,
        });
    }

    /// Arms this ring's reads of the other rings' work eventfds that are not in flight.
    /// Called before the thread sleeps on this ring, so the submission rides on the sleep's
    /// own enter. A read consumes the count: it completes once per signal.
    pub(super) fn arm_watches(&mut self) -> bool {
        for k in 0..self.watches.len() {
            let w = &mut self.watches[k];
            if w.armed {
                continue;
            }
            let buf: *mut u64 = &mut *w.buf;
            let e = opcode::Read::new(types::Fd(w.fd), buf.cast(), 8)
                .build()
                .user_data(token::item(token::KIND_PEER, k as u16));
            if !self.ring.push_sqe(e) {
                return false;
            }
            self.watches[k].armed = true;
        }
        true
    }

    /// The slot a [`token::slot`] names, and whether it still belongs to the same owner
    /// (same generation, socket attached).
    #[inline]
    fn token_slot(&self, ud: u64) -> (SlotIdx, bool) {
        let (idx, generation) = token::slot_of(ud);
        let current = matches!(
            self.core.slots().get(idx.index()),
            Some(s) if s.generation & token::GENERATION_MASK == generation && s.has_socket()
        );
        (idx, current)
    }

    fn handle_cqe(&mut self, cqe: &cqueue::Entry, now: u64) {
        let ud = cqe.user_data();
        let res = cqe.result();
        let flags = cqe.flags();
        match token::kind(ud) {
            token::KIND_RECV => {
                let (idx, current) = self.token_slot(ud);
                let bid = cqueue::buffer_select(flags);
                let more = cqueue::more(flags);
                #[cfg(feature = "fault-injection")]
                let lost = !more && self.lost_recv.take_if(|l| *l == idx).is_some();
                #[cfg(not(feature = "fault-injection"))]
                let lost = false;
                if current && !lost {
                    if let Some(s) = self.core.slots_mut().get_mut(idx.index()) {
                        // Any completion proves the receive is alive (stall watchdog).
                        s.stall_suspect = false;
                        if !more {
                            s.armed = false;
                            let closing = s.closing;
                            self.ring.on_recv_ended(idx, closing);
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
                    self.bufs.recycle(bid);
                    return;
                }
                self.on_datagram(idx, bid, res as usize, now);
            }
            token::KIND_SEND => self.sender.on_sent(
                token::item_of(ud),
                res,
                &mut SendCtx {
                    ring: &mut self.ring,
                    bufs: &mut self.bufs,
                    counters: &self.core.shared.counters,
                },
            ),
            token::KIND_GSO => self.sender.on_gso_sent(
                token::item_of(ud),
                res,
                &self.core.table.slots,
                &mut SendCtx {
                    ring: &mut self.ring,
                    bufs: &mut self.bufs,
                    counters: &self.core.shared.counters,
                },
            ),
            token::KIND_STALL_CANCEL => {
                let (idx, current) = self.token_slot(ud);
                watchdog::on_cancelled(
                    &mut self.core.table.slots,
                    idx,
                    current,
                    res,
                    &mut self.ring,
                );
            }
            token::KIND_WATCH => {
                let (idx, current) = self.token_slot(ud);
                watchdog::on_answer(
                    &mut self.core.table.slots,
                    idx,
                    current,
                    res,
                    &mut self.ring,
                    &self.core.shared.counters,
                );
            }
            token::KIND_CONNECT => self.connect.on_connected(
                token::item_of(ud),
                res,
                &mut self.core.table.slots,
                &mut self.ring,
                &self.core.shared.counters,
            ),
            token::KIND_DISCONNECT => {
                let (idx, generation) = token::slot_of(ud);
                self.connect.on_disconnected(
                    idx,
                    generation,
                    res,
                    &mut self.core.table.slots,
                    &self.core.shared.counters,
                );
            }
            token::KIND_PEER => {
                // Counted here, subtracted from the turn's completions in `turn`.
                self.last_useful += 1;
                // The signalling ring's turn follows on this same pass of the thread; the read
                // is armed again before the thread next sleeps on this ring.
                if let Some(w) = self.watches.get_mut(usize::from(token::item_of(ud))) {
                    w.armed = false;
                }
            }
            token::KIND_WAKE => {
                let rearmed = self.ring.on_wake();
                if rearmed.is_err() {
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
        let Ok(msg) = types::RecvMsgOut::parse(buf, self.ring.recv_hdr()) else {
            bump(&self.core.counters().truncated, 1);
            self.bufs.recycle(bid);
            return;
        };
        if msg.is_payload_truncated() {
            bump(&self.core.counters().truncated, 1);
            self.bufs.recycle(bid);
            return;
        }
        self.core.note_control(idx, msg.control_data());
        let Some(src) = sockaddr::read(msg.name_data()) else {
            self.bufs.recycle(bid);
            return;
        };
        let payload = msg.payload_data();
        #[cfg(feature = "fault-injection")]
        {
            crate::dataplane::fault::check_io(payload);
            if crate::dataplane::fault::loses_receive(payload) {
                self.lose_receive(idx);
            }
        }
        let fwd = self.core.receive(idx, src, payload, now);
        self.connect
            .after_receive(&mut self.core.table.slots, idx, &mut self.ring);
        let Some(fwd) = fwd else {
            self.bufs.recycle(bid);
            return;
        };
        if let Some(g) = self.sender.stage(bid, payload, &fwd) {
            self.sender.send_group(
                g,
                &mut SendCtx {
                    ring: &mut self.ring,
                    bufs: &mut self.bufs,
                    counters: &self.core.shared.counters,
                },
            );
        }
    }
}

/// The engine's side of the commands: the ring's sockets, and their connections.
struct Io<'a> {
    ring: &'a mut Ring,
    connect: &'a mut Connector,
}

impl SocketIo for Io<'_> {
    fn attach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        self.ring.attach(table, i);
    }

    fn detach(&mut self, table: &mut SlotTable, i: SlotIdx) {
        self.ring.detach(table, i);
    }

    fn pause(&mut self, table: &mut SlotTable) {
        self.connect.pause();
        self.ring.pause(table);
    }

    fn relatch(&mut self, _table: &mut SlotTable, i: SlotIdx) {
        self.connect.relatch(i);
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod start_tests {
    use super::*;
    use crate::dataplane::fault::fail_ring_setup;

    fn cfg() -> PathConfig {
        PathConfig {
            strict: false,
            gso: false,
            connect: false,
            batch_wait_us: 0,
        }
    }

    fn build() -> io::Result<UringWorker> {
        UringWorker::new(WorkerShared::new()?, cfg(), 0, 16)
    }

    #[test]
    fn a_passing_enomem_at_set_up_is_tried_again() {
        fail_ring_setup(START_ATTEMPTS - 1);
        let w = build();
        assert!(w.is_ok(), "{:?}", w.err());
        // Every injected failure was used: the start tried that many times.
        assert!(crate::dataplane::fault::ring_setup().is_ok());
    }

    #[test]
    fn a_lasting_enomem_stops_the_start_naming_the_step() {
        fail_ring_setup(START_ATTEMPTS);
        let e = match build() {
            Ok(_) => panic!("set-up succeeded through {START_ATTEMPTS} ENOMEMs"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
        assert!(e.to_string().starts_with("io_uring ring: "), "{e}");
        fail_ring_setup(0);
    }
}
