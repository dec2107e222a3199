//! What every engine's worker shares: the command queue from the control plane, the slot
//! table, the event queue back, and the wake-up eventfd.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::rtp::clock::ClockRateMap;
use crate::session::backend::{MediaEvent, Side, StreamId};
use crate::session::latch::{Latch, LatchMode};

use super::kernel::KernelWorker;
use super::shared::{StreamShared, WorkerCounters, A_RTCP, A_RTP, B_RTCP, B_RTP};
use super::slot::{DirtyList, RtpState, Slot, SlotIdx, SlotKind};

/// Commands queued per worker. Bounded so a stuck worker cannot make the control plane grow
/// without limit; 64k outstanding commands is far more than a second of signalling.
pub const COMMAND_QUEUE: usize = 65_536;
/// Latch events waiting for the control plane; they are rare (a few per call).
pub const EVENT_QUEUE: usize = 65_536;

/// One side's addresses and policy, as the data plane needs them.
#[derive(Clone, Copy, Debug)]
pub struct SideInit {
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub latch: LatchMode,
    pub clock_rates: ClockRateMap,
}

pub struct NewStream {
    pub id: StreamId,
    /// In the order A_RTP, A_RTCP, B_RTP, B_RTCP.
    pub sockets: [OwnedFd; 4],
    /// Their local ports, in the same order.
    pub ports: [u16; 4],
    pub a: SideInit,
    pub b: SideInit,
    pub shared: Arc<StreamShared>,
}

pub enum Command {
    Add(Box<NewStream>),
    /// Boxed, like `Add`: every slot of the command queue is as large as its largest
    /// command, and the queue is preallocated (resident memory of an idle relay).
    Update {
        id: StreamId,
        side: Side,
        init: Box<SideInit>,
    },
    Remove(StreamId),
}

/// The handle the control plane keeps for one worker.
pub struct WorkerShared {
    pub commands: ArrayQueue<Command>,
    pub events: ArrayQueue<MediaEvent>,
    pub counters: WorkerCounters,
    pub wake: OwnedFd,
    /// Set by the first command after the worker last woke; later commands see it set and
    /// skip the eventfd write, so a burst of signalling costs one wake-up, not one each.
    pub notified: AtomicBool,
}

impl WorkerShared {
    pub fn new() -> std::io::Result<Arc<WorkerShared>> {
        let wake = new_eventfd()?;
        Ok(Arc::new(WorkerShared {
            commands: ArrayQueue::new(COMMAND_QUEUE),
            events: ArrayQueue::new(EVENT_QUEUE),
            counters: WorkerCounters::default(),
            wake,
            notified: AtomicBool::new(false),
        }))
    }

    /// Queues a command and wakes the worker. Returns the command back if the queue is full.
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)?;
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.wake_worker();
        }
        Ok(())
    }

    /// Queues a command that can wait for the worker's next turn (at most its idle timeout):
    /// tearing a stream down needs no wake-up of its own.
    pub fn send_lazy(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)
    }

    /// Called by the worker when it wakes, before it drains the queue.
    pub fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    fn wake_worker(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; failure (EAGAIN when the
        // counter is saturated) still leaves the worker awake, so it is ignored.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// A worker's slots, indexed by the number carried in each completion (no hashing per packet).
pub struct SlotTable {
    pub slots: Vec<Slot>,
    /// Free indices, lowest first: the fixed-file table covers the low indices, so a socket
    /// lands there whenever one is free (and the control plane's count of sockets beyond the
    /// table, `placement`, stays exact).
    free: BinaryHeap<Reverse<SlotIdx>>,
    streams: HashMap<StreamId, [SlotIdx; 4]>,
}

impl SlotTable {
    pub fn new() -> SlotTable {
        Self::with_capacity(0)
    }

    /// Room for `n` slots reserved up front: growing by doubling would copy the table and
    /// leave the old copies with the allocator (~470 bytes per call at 10,000 calls). Pages
    /// that are never touched cost no memory.
    pub fn with_capacity(n: usize) -> SlotTable {
        SlotTable {
            slots: Vec::with_capacity(n),
            free: BinaryHeap::with_capacity(n),
            streams: HashMap::with_capacity(n / 4),
        }
    }

    pub fn live_streams(&self) -> usize {
        self.streams.len()
    }

    fn take_slot(&mut self) -> SlotIdx {
        if let Some(Reverse(i)) = self.free.pop() {
            return i;
        }
        self.slots.push(Slot::empty());
        SlotIdx::new((self.slots.len() - 1) as u32)
    }

    fn init_side(slot: &mut Slot, init: &SideInit, kind: SlotKind) {
        let sdp = match kind {
            SlotKind::Rtp => init.rtp,
            SlotKind::Rtcp => init.rtcp,
        };
        slot.latch = Latch::new(init.latch, sdp);
        slot.rtcp_mux = init.rtcp_mux;
        if kind == SlotKind::Rtp {
            slot.rtp = Some(Box::new(RtpState {
                tracker: Default::default(),
                clock_rates: init.clock_rates,
            }));
        }
    }

    /// Installs a stream; returns its four slot indices (A_RTP, A_RTCP, B_RTP, B_RTCP).
    pub fn add(&mut self, ns: NewStream) -> [SlotIdx; 4] {
        let NewStream {
            id,
            sockets,
            ports,
            a,
            b,
            shared,
        } = ns;
        let idx = [
            self.take_slot(),
            self.take_slot(),
            self.take_slot(),
            self.take_slot(),
        ];
        for (pos, sock) in sockets.into_iter().enumerate() {
            let (side, kind, init) = match pos {
                A_RTP => (Side::A, SlotKind::Rtp, &a),
                A_RTCP => (Side::A, SlotKind::Rtcp, &a),
                B_RTP => (Side::B, SlotKind::Rtp, &b),
                _ => (Side::B, SlotKind::Rtcp, &b),
            };
            let (peer_rtp, peer_rtcp) = match side {
                Side::A => (idx[B_RTP], idx[B_RTCP]),
                Side::B => (idx[A_RTP], idx[A_RTCP]),
            };
            let s = &mut self.slots[idx[pos].index()];
            let generation = s.generation;
            *s = Slot::empty();
            s.generation = generation.wrapping_add(1) & 0x00ff_ffff;
            s.attach(sock);
            s.local_port = ports[pos];
            s.stream = id;
            s.side = side;
            s.kind = kind;
            s.peer_rtp = peer_rtp;
            s.peer_rtcp = peer_rtcp;
            s.shared = Some(shared.clone());
            Self::init_side(s, init, kind);
        }
        self.streams.insert(id, idx);
        idx
    }

    /// A stream's four slot indices (A_RTP, A_RTCP, B_RTP, B_RTCP).
    pub fn group(&self, id: StreamId) -> Option<[SlotIdx; 4]> {
        self.streams.get(&id).copied()
    }

    pub fn update(&mut self, id: StreamId, side: Side, init: &SideInit) {
        let Some(idx) = self.streams.get(&id).copied() else {
            return;
        };
        let (rtp, rtcp) = match side {
            Side::A => (idx[A_RTP], idx[A_RTCP]),
            Side::B => (idx[B_RTP], idx[B_RTCP]),
        };
        for (i, kind) in [(rtp, SlotKind::Rtp), (rtcp, SlotKind::Rtcp)] {
            if let Some(s) = self.slots.get_mut(i.index()) {
                let sdp = match kind {
                    SlotKind::Rtp => init.rtp,
                    SlotKind::Rtcp => init.rtcp,
                };
                s.latch.on_signal(init.latch, sdp);
                s.rtcp_mux = init.rtcp_mux;
                if let Some(rtp) = s.rtp.as_deref_mut() {
                    rtp.clock_rates = init.clock_rates;
                }
            }
        }
    }

    /// Marks a stream's slots as closing and returns them; the engine releases each one when
    /// the kernel no longer references its buffers.
    pub fn remove(&mut self, id: StreamId) -> Option<[SlotIdx; 4]> {
        let idx = self.streams.remove(&id)?;
        for &i in &idx {
            if let Some(s) = self.slots.get_mut(i.index()) {
                s.publish();
                s.closing = true;
            }
        }
        Some(idx)
    }

    /// Closes the socket and returns the slot to the free list.
    pub fn release(&mut self, i: SlotIdx) {
        if let Some(s) = self.slots.get_mut(i.index()) {
            if s.has_socket() {
                s.socket = None;
                s.fixed = false;
                s.shared = None;
                s.rtp = None;
                s.closing = false;
                s.peer_rtp = SlotIdx::NONE;
                s.peer_rtcp = SlotIdx::NONE;
                self.free.push(Reverse(i));
            }
        }
    }

    /// Publishes quality figures of every slot that saw RTP since the last call.
    /// Publishes up to `budget` dirty slots, oldest first; true when none is left.
    pub fn publish_dirty(&mut self, dirty: &mut DirtyList, budget: usize) -> bool {
        if dirty.overflowed {
            self.slots.iter_mut().for_each(Slot::publish);
        } else {
            let end = dirty.cursor.saturating_add(budget).min(dirty.list.len());
            for &i in dirty.list.get(dirty.cursor..end).unwrap_or_default() {
                if let Some(s) = self.slots.get_mut(i.index()) {
                    s.publish();
                }
            }
            dirty.cursor = end;
            if dirty.cursor < dirty.list.len() {
                return false;
            }
        }
        dirty.list.clear();
        dirty.cursor = 0;
        dirty.overflowed = false;
        dirty.rounds = dirty.rounds.wrapping_add(1);
        true
    }
}

impl Default for SlotTable {
    fn default() -> Self {
        Self::new()
    }
}

/// How often a worker publishes the quality figures of the slots that saw RTP.
const PUBLISH_EVERY_NS: u64 = 100 * crate::time::NANOS_PER_MS;
/// Slots published per busy turn. Publishing touches cold memory (~0.7 µs a slot at 10,000
/// streams), and packets that arrive meanwhile wait: a whole round held them up for
/// milliseconds, 256 slots a turn for ~0.2 ms (both seen in p99 at 10,000 calls). 32 a turn
/// costs a packet at most ~25 µs; a busy worker has thousands of turns a second, so rounds
/// still finish within their period.
const PUBLISH_PER_TURN: usize = 32;

/// Paces publication rounds: one starts every [`PUBLISH_EVERY_NS`], and each turn of the
/// worker loop publishes part of it (all of it on a turn that received nothing at all).
pub struct Publisher {
    last_round_ns: u64,
    in_round: bool,
}

impl Publisher {
    pub fn new(now: u64) -> Publisher {
        Publisher {
            last_round_ns: now,
            in_round: false,
        }
    }

    pub fn turn(&mut self, table: &mut SlotTable, dirty: &mut DirtyList, now: u64, idle: bool) {
        if !self.in_round && now.saturating_sub(self.last_round_ns) < PUBLISH_EVERY_NS {
            return;
        }
        self.in_round = true;
        let budget = if idle { usize::MAX } else { PUBLISH_PER_TURN };
        if table.publish_dirty(dirty, budget) {
            self.in_round = false;
            self.last_round_ns = now;
        }
    }
}

/// What both engines do on their housekeeping tick: the fast path's hand-overs and
/// read-back first (it takes its candidates from the dirty list), then publication, which
/// empties that list at the end of a round.
pub fn housekeeping_turn(
    publisher: &mut Publisher,
    table: &mut SlotTable,
    dirty: &mut DirtyList,
    kernel: Option<&mut KernelWorker>,
    counters: &WorkerCounters,
    now: u64,
    idle: bool,
) {
    if let Some(k) = kernel {
        k.turn(&mut table.slots, dirty, counters, now);
    }
    publisher.turn(table, dirty, now, idle);
}

/// A fresh non-blocking eventfd (counter 0).
pub fn new_eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Reads and clears the eventfd counter (non-blocking).
pub fn drain_eventfd(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when nothing is pending is fine.
    unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut v as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(t: &SlotTable) -> usize {
        t.slots.iter().filter(|s| !s.dirty).count()
    }

    #[test]
    fn publication_rounds_are_spread_over_busy_turns() {
        let mut t = SlotTable::new();
        for _ in 0..1000 {
            let mut s = Slot::empty();
            s.dirty = true;
            t.slots.push(s);
        }
        let mut d = DirtyList::with_capacity(4096);
        d.list.extend((0..1000u32).map(SlotIdx::new));
        let mut p = Publisher::new(0);
        p.turn(&mut t, &mut d, PUBLISH_EVERY_NS - 1, false);
        assert_eq!(published(&t), 0, "no round before its period");
        p.turn(&mut t, &mut d, PUBLISH_EVERY_NS, false);
        assert_eq!(published(&t), PUBLISH_PER_TURN);
        // The round goes on at the next turns, oldest marks first.
        p.turn(&mut t, &mut d, PUBLISH_EVERY_NS + 1, false);
        assert_eq!(published(&t), 2 * PUBLISH_PER_TURN);
        assert!(t.slots[..2 * PUBLISH_PER_TURN].iter().all(|s| !s.dirty));
        // A turn without packets finishes it.
        p.turn(&mut t, &mut d, PUBLISH_EVERY_NS + 2, true);
        assert_eq!(published(&t), 1000);
        assert!(d.list.is_empty() && d.cursor == 0);
        // The next round starts a period after the last one ended.
        t.slots[5].dirty = true;
        d.list.push(SlotIdx::new(5));
        p.turn(&mut t, &mut d, 2 * PUBLISH_EVERY_NS + 1, true);
        assert!(t.slots[5].dirty);
        p.turn(&mut t, &mut d, 2 * PUBLISH_EVERY_NS + 2, true);
        assert!(!t.slots[5].dirty);
    }
}
