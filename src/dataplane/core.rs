//! The worker's core, the same under both engines: its slot table, the dirty list, the
//! publisher and, when the relay runs it, its side of the in-kernel fast path. It applies
//! the control plane's commands, decides for each datagram received, and does the
//! housekeeping; the engines ([`super::uring`], [`super::mmsg`]) only move datagrams and
//! tell it what arrived.
//!
//! Engines own their sockets' I/O: what they do when a stream's sockets come or go, they do
//! in [`SocketIo`], called from [`WorkerCore::apply`] (generic: no dynamic dispatch).

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::time::Nanos;

use super::forward::{self, Forward, PacketCtx, PathConfig};
use super::kernel::reasons::UserReason;
use super::kernel::KernelWorker;
use super::shared::{bump, WorkerCounters};
use super::slot::{DirtyList, Slot, SlotIdx, SlotKind};
use super::spares::Spares;
use super::table::SlotTable;
use super::worker::{Command, WorkerShared};

/// Commands applied per [`WorkerCore::apply_commands`]: a flood of signalling cannot starve
/// the packets.
const COMMANDS_PER_TURN: usize = 1024;
/// Slots the dirty list holds before a publication round falls back to a full scan.
const DIRTY_CAPACITY: usize = 1 << 16;

/// What an engine does for a stream's sockets when a command adds or removes the stream.
pub trait SocketIo {
    /// Slot `i` of a stream just installed: start receiving on its socket.
    fn attach(&mut self, table: &mut SlotTable, i: SlotIdx);
    /// Slot `i` of a stream being removed (marked closing): stop receiving, and release the
    /// slot now or once no operation in flight names its socket any more.
    fn detach(&mut self, table: &mut SlotTable, i: SlotIdx);
    /// A takeover: stop receiving on every socket, keeping the slots (what the receives in
    /// flight still bring is relayed as usual). The engine sets `WorkerShared::paused` once
    /// nothing is received or waiting to be sent any more.
    fn pause(&mut self, table: &mut SlotTable);
    /// Slot `i`'s signalling changed (an offer or answer): its latch may take a new source.
    fn relatch(&mut self, _table: &mut SlotTable, _i: SlotIdx) {}
}

/// One worker's (one ring's) state apart from its engine's I/O.
pub struct WorkerCore {
    pub shared: Arc<WorkerShared>,
    pub table: SlotTable,
    pub dirty: DirtyList,
    /// Records a direction's first packet takes (topped up when a stream is added and on
    /// housekeeping).
    pub spares: Spares,
    cfg: PathConfig,
    publisher: Publisher,
    /// The in-kernel fast path's handle, when the relay runs it.
    kernel: Option<KernelWorker>,
}

impl WorkerCore {
    /// `slot_reserve`: slots reserved up front (see [`SlotTable::with_capacity`]).
    pub fn new(
        shared: Arc<WorkerShared>,
        cfg: PathConfig,
        slot_reserve: usize,
        now: Nanos,
    ) -> WorkerCore {
        WorkerCore {
            shared,
            table: SlotTable::with_capacity(slot_reserve),
            dirty: DirtyList::with_capacity(DIRTY_CAPACITY),
            spares: Spares::new(),
            cfg,
            publisher: Publisher::new(now),
            kernel: None,
        }
    }

    /// Gives this worker the in-kernel fast path.
    pub fn with_kernel(mut self, kernel: Option<KernelWorker>) -> WorkerCore {
        self.kernel = kernel;
        self
    }

    #[inline]
    pub fn cfg(&self) -> PathConfig {
        self.cfg
    }

    #[inline]
    pub fn counters(&self) -> &WorkerCounters {
        &self.shared.counters
    }

    #[inline]
    pub fn slots(&self) -> &[Slot] {
        &self.table.slots
    }

    #[inline]
    pub fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.table.slots
    }

    /// Applies the commands queued by the control plane, up to 1,024 a call.
    pub fn apply_commands(&mut self, io: &mut impl SocketIo) {
        for _ in 0..COMMANDS_PER_TURN {
            let Some(cmd) = self.shared.commands.pop() else {
                break;
            };
            // A panic applying one command (a bug) loses that command, not the worker.
            if catch_unwind(AssertUnwindSafe(|| self.apply(cmd, io))).is_err() {
                bump(&self.shared.counters.worker_panics, 1);
            }
        }
    }

    /// Applies one command. A stream whose signalling changes, or that goes, is taken back
    /// from the fast path first (its entries go before its sockets close).
    pub fn apply(&mut self, cmd: Command, io: &mut impl SocketIo) {
        match cmd {
            Command::Add(ns) => {
                for i in self.table.add(*ns) {
                    io.attach(&mut self.table, i);
                }
                self.spares
                    .refill(Spares::wanted(self.table.live_streams()));
            }
            Command::Update { id, side, init } => {
                if let (Some(k), Some(group)) = (self.kernel.as_mut(), self.table.group(id)) {
                    k.take_back_group(&mut self.table.slots, group, &self.shared.counters);
                }
                self.table.update(id, side, &init);
                if let Some(group) = self.table.group(id) {
                    for i in group {
                        io.relatch(&mut self.table, i);
                    }
                }
            }
            Command::Pause => io.pause(&mut self.table),
            Command::Rtcp { id, side, open } => match open {
                None => {
                    if let Some(i) = self.table.close_rtcp(id, side) {
                        io.detach(&mut self.table, i);
                    }
                }
                Some(open) => {
                    if let Some(i) = self.table.open_rtcp(id, side, *open) {
                        io.attach(&mut self.table, i);
                    }
                }
            },
            Command::Remove(id) => {
                if let (Some(k), Some(group)) = (self.kernel.as_mut(), self.table.group(id)) {
                    k.forget_group(&mut self.table.slots, group, &self.shared.counters);
                }
                if let Some(group) = self.table.remove(id) {
                    for i in group {
                        io.detach(&mut self.table, i);
                    }
                }
            }
        }
    }

    /// Takes a received datagram's control area and counts the socket's new kernel drops
    /// (see [`forward::note_control`]).
    #[inline]
    pub fn note_control(&mut self, idx: SlotIdx, control: &[u8]) {
        forward::note_control(&mut self.table.slots, idx, control, &self.shared.counters);
    }

    /// Decides what happens to one datagram received on slot `idx` from `src` at `now`.
    ///
    /// A panic while deciding (a bug: the packet path has no panic on input by design, and
    /// the fuzz targets look for one) drops that datagram and counts it (`drop_panic`,
    /// `worker_panics`); the slot table stays as it is and the worker goes on with the next
    /// datagram, so one bad packet cannot silence every call on the core. The guard costs
    /// nothing until a panic unwinds (unwinding is table-driven).
    #[inline]
    pub fn receive(
        &mut self,
        idx: SlotIdx,
        src: SocketAddr,
        pkt: &[u8],
        now: Nanos,
    ) -> Option<Forward> {
        match catch_unwind(AssertUnwindSafe(|| self.decide(idx, src, pkt, now))) {
            Ok(fwd) => fwd,
            Err(_) => self.contained_panic(),
        }
    }

    #[cold]
    #[inline(never)]
    fn contained_panic(&self) -> Option<Forward> {
        let c = &self.shared.counters;
        bump(&c.drop_panic, 1);
        bump(&c.worker_panics, 1);
        None
    }

    #[inline(always)]
    fn decide(&mut self, idx: SlotIdx, src: SocketAddr, pkt: &[u8], now: Nanos) -> Option<Forward> {
        let counters = &self.shared.counters;
        let slots = &mut self.table.slots;
        let slot = forward::admit(slots, idx, pkt.len(), counters)?;
        let in_kernel = slot.kernel;
        // Why this packet is here and not relayed in the kernel (one relaxed add).
        let kind = crate::rtp::demux::classify(pkt);
        let why = match (slot.kind, UserReason::of_kind(kind)) {
            (SlotKind::Rtcp, _) => Some(UserReason::Rtcp),
            (_, Some(why)) => Some(why),
            // The data plane says why there is none (`ReasonTotals::kernel_off_because`).
            _ if self.kernel.is_none() => Some(UserReason::Unavailable),
            _ if in_kernel => None,
            _ => Some(UserReason::of_status(slot.kernel_status())),
        };
        if let Some(why) = why {
            counters.reasons.user(why);
        }
        if in_kernel {
            // Rare: the kernel passed this packet up. Its tracker may have to come back first.
            if let Some(k) = self.kernel.as_mut() {
                let why = k.on_user_packet(slots, idx, src, pkt, now, counters);
                if kind == crate::rtp::demux::PacketKind::Rtp {
                    counters.reasons.user(why);
                }
            }
        }
        let mut ctx = PacketCtx {
            cfg: self.cfg,
            counters,
            events: &self.shared.events,
            dirty: &mut self.dirty,
            spares: &mut self.spares,
        };
        forward::decide(slots, idx, src, pkt, now, &mut ctx)
    }

    /// The housekeeping tick, after every turn of the worker loop: the fast path's
    /// hand-overs and read-back first (it takes its candidates from the dirty list), then
    /// publication, which empties that list at the end of a round. `idle`: the turn
    /// received nothing at all.
    ///
    /// A panic in it (a bug) is caught and counted (`worker_panics`); the turn's remaining
    /// housekeeping waits for the next turn.
    pub fn housekeeping(&mut self, now: Nanos, idle: bool) {
        if catch_unwind(AssertUnwindSafe(|| self.housekeeping_turn(now, idle))).is_err() {
            bump(&self.shared.counters.worker_panics, 1);
        }
    }

    fn housekeeping_turn(&mut self, now: Nanos, idle: bool) {
        // This worker's own count (single writer): published as is.
        self.shared
            .counters
            .spares_short
            .store(self.spares.short, std::sync::atomic::Ordering::Relaxed);
        self.spares
            .refill(Spares::wanted(self.table.live_streams()));
        if let Some(k) = self.kernel.as_mut() {
            k.turn(
                &mut self.table.slots,
                &self.dirty,
                &self.shared.counters,
                now,
            );
        }
        self.publisher
            .turn(&mut self.table, &mut self.dirty, now, idle);
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
struct Publisher {
    last_round_ns: u64,
    in_round: bool,
}

impl Publisher {
    fn new(now: u64) -> Publisher {
        Publisher {
            last_round_ns: now,
            in_round: false,
        }
    }

    fn turn(&mut self, table: &mut SlotTable, dirty: &mut DirtyList, now: u64, idle: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fault::PANIC_PACKET;
    use crate::dataplane::shared::{DataPlaneTotals, StreamShared};
    use crate::dataplane::worker::{new_eventfd, NewStream, SideInit};
    use crate::rtp::clock::ClockRates;
    use crate::rtp::RtpRepr;
    use crate::session::backend::StreamId;
    use crate::session::latch::LatchMode;
    use std::sync::atomic::Ordering::Relaxed;

    fn side(port: u16) -> SideInit {
        SideInit {
            rtp: Some(SocketAddr::from(([10, 0, 0, 1], port))),
            rtcp: Some(SocketAddr::from(([10, 0, 0, 1], port + 1))),
            rtcp_mux: false,
            latch: LatchMode::Symmetric,
            clock_rates: ClockRates::default(),
        }
    }

    /// Adds a stream whose A side is 10.0.0.1:`port` and B side `port + 2`; returns A's RTP
    /// slot and source.
    fn add(core: &mut WorkerCore, id: u64, port: u16) -> (SlotIdx, SocketAddr) {
        let fd = || new_eventfd().expect("eventfd");
        let idx = core.table.add(NewStream {
            id: StreamId::from_raw(id),
            sockets: [fd(), fd(), fd(), fd()],
            ports: [0; 4],
            a: side(port),
            b: side(port + 2),
            shared: Arc::new(StreamShared::default()),
        });
        (idx[0], SocketAddr::from(([10, 0, 0, 1], port)))
    }

    fn rtp(seq: u16) -> Vec<u8> {
        RtpRepr::new(0, seq, u32::from(seq) * 160, 7)
            .to_vec(&[0xff; 160])
            .expect("emit")
    }

    /// A worker core without GSO, strict checks, connects or batch waits.
    fn plain_core() -> WorkerCore {
        let shared = WorkerShared::new().expect("eventfd");
        let cfg = PathConfig {
            strict: false,
            gso: false,
            connect: false,
            batch_wait_us: 0,
        };
        WorkerCore::new(shared, cfg, 0, 1)
    }

    /// A panic deciding one datagram drops that datagram, counts it, and leaves the worker
    /// and its slots working: the same stream and the other one are relayed right after.
    #[test]
    fn a_panic_on_the_packet_path_is_contained_and_counted() {
        let mut core = plain_core();
        let (s1, src1) = add(&mut core, 1, 4000);
        let (s2, src2) = add(&mut core, 2, 5000);
        let peer1 = SocketAddr::from(([10, 0, 0, 1], 4002));
        let peer2 = SocketAddr::from(([10, 0, 0, 1], 5002));
        assert_eq!(
            core.receive(s1, src1, &rtp(1), 10).map(|f| f.dst),
            Some(peer1)
        );

        assert_eq!(core.receive(s1, src1, PANIC_PACKET, 20), None);
        let c = core.counters();
        assert_eq!(c.drop_panic.load(Relaxed), 1);
        assert_eq!(c.worker_panics.load(Relaxed), 1);

        assert_eq!(
            core.receive(s1, src1, &rtp(2), 30).map(|f| f.dst),
            Some(peer1)
        );
        assert_eq!(
            core.receive(s2, src2, &rtp(1), 40).map(|f| f.dst),
            Some(peer2)
        );
        assert_eq!(core.receive(s1, src1, PANIC_PACKET, 50), None);
        let c = core.counters();
        assert_eq!(c.drop_panic.load(Relaxed), 2);
        assert_eq!(c.rx_packets.load(Relaxed), 5);
        // The stream kept its figures across the panics: both RTP packets tracked.
        let tracked = core.slots()[s1.index()]
            .rtp
            .as_deref()
            .map(|st| st.tracker.packets());
        assert_eq!(tracked, Some(2));
    }

    /// A silent stream holds no tracker and no RTCP record; its first RTP packet takes a
    /// tracker, and a side's first RTCP packet an RTCP record, from the worker's spares (no
    /// allocation there), which the next housekeeping turn tops up again.
    #[test]
    fn first_packets_take_their_records_from_the_spares() {
        let mut core = plain_core();
        let (a_rtp, src) = add(&mut core, 1, 4000);
        assert_eq!(
            core.spares.ready(),
            (0, 0),
            "none kept before a stream comes"
        );
        core.housekeeping(5, true);
        let full = core.spares.ready();
        assert_eq!(full, (2, 2), "two of each per stream");
        let tracked = |core: &WorkerCore, i: SlotIdx| {
            core.slots()[i.index()]
                .rtp
                .as_deref()
                .map(|st| (st.tracker.is_allocated(), st.tracker.packets()))
        };
        let rtcp_of_a = |core: &WorkerCore| {
            core.slots()[a_rtp.index()]
                .side_shared()
                .and_then(|s| s.rtcp.get())
                .map(|c| c.report.reports.load(Relaxed))
        };
        assert_eq!(tracked(&core, a_rtp), Some((false, 0)));
        assert_eq!(rtcp_of_a(&core), None);

        assert!(core.receive(a_rtp, src, &rtp(1), 10).is_some());
        assert!(core.receive(a_rtp, src, &rtp(2), 20).is_some());
        assert_eq!(tracked(&core, a_rtp), Some((true, 2)));
        assert_eq!(core.spares.ready(), (full.0 - 1, full.1));

        // An RR with one report block, on the RTP port (as a muxing endpoint sends it).
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 7];
        rr.extend_from_slice(&[0, 0, 0, 9, 5, 0, 0, 3, 0, 0, 0, 10, 0, 0, 0, 4]);
        rr.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        core.receive(a_rtp, src, &rr, 30);
        assert_eq!(rtcp_of_a(&core), Some(1));
        assert_eq!(core.spares.ready(), (full.0 - 1, full.1 - 1));
        let st = core.slots()[a_rtp.index()]
            .shared
            .as_deref()
            .map(StreamShared::stats)
            .expect("shared");
        assert_eq!(st.a.rtcp_report.fraction_lost, 5);
        assert_eq!(st.a.rtcp_report.cumulative_lost, 3);
        assert_eq!(st.a.rtcp.packets, 0, "no RTCP socket counted it");
        assert_eq!(st.b.rtcp_report.reports, 0, "B sent none");

        core.housekeeping(40, true);
        assert_eq!(core.spares.ready(), full);
        assert_eq!(core.spares.short, 0);
    }

    /// A first packet that finds no spare allocates its tracker (counted), and the worker's
    /// next housekeeping turn publishes the count as `spares_short`.
    #[test]
    fn a_first_packet_without_spares_is_counted_as_short() {
        let mut core = plain_core();
        let (a_rtp, src) = add(&mut core, 1, 4000);
        assert_eq!(core.spares.ready(), (0, 0));
        assert!(core.receive(a_rtp, src, &rtp(1), 10).is_some());
        assert_eq!(core.spares.short, 1);
        assert_eq!(
            core.counters().spares_short.load(Relaxed),
            0,
            "not yet published"
        );
        core.housekeeping(20, true);
        assert_eq!(core.counters().spares_short.load(Relaxed), 1);
        let mut totals = DataPlaneTotals::default();
        totals.add(core.counters());
        assert!(totals.named().contains(&("spares_short", 1)));
    }

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
