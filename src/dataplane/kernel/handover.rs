//! A worker's side of the fast path: which directions it hands to the kernel, reading the
//! kernel's figures back into the published ones, and taking a direction back.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use crate::rtp::stats::{RtpStreamTracker, TrackerParts};
use crate::rtp::RtpPacket;

use super::abi::{entry, mode_of, FwdKey, FwdValue, Route, HANDED_BACK, MODE_LOCAL};
use super::dirs::{Entries, Entry};
use super::keys::Keys;
use super::offer::{queued_before_handover, Retry, Unmarked};
use super::pace::{fold_gap, Look};
use super::reasons::{Back, UserReason};
use super::route;
use crate::dataplane::shared::{bump, WorkerCounters};
use crate::dataplane::slot::{DirtyList, Slot, SlotIdx, SlotIdxMap, SlotKind};
use crate::session::backend::{KernelStatus, Side};

/// How often a sync pass looks at every direction in the kernel: one load from the mapped
/// entries and one from the worker's dense marks per direction, and a fold for those whose
/// packet count moved, a flowing one every `pace::fold_gap` passes (1 up to 1,000
/// directions a ring). Idle timeouts are tens of seconds; queries see figures at most
/// this old (times the gap).
const SYNC_EVERY_NS: u64 = crate::time::NANOS_PER_SEC;
/// Entry positions looked at per housekeeping turn while a sync pass runs, so a pass over
/// 25,000 directions takes 7 turns.
const SYNC_PER_TURN: usize = 4096;
/// Map operations per housekeeping turn (each is a syscall of about a microsecond), so a
/// busy worker's packets never wait long behind them.
const OPS_PER_TURN: usize = 64;
/// Slots looked at per turn, from the dirty list or by a full scan (no syscall unless one
/// qualifies), so a long list never holds packets up.
const SCAN_PER_TURN: usize = 1024;

/// What a worker keeps for a direction it handed to the kernel.
struct Handed {
    key: FwdKey,
    /// The entry's position among the worker's (`Entries`) while the direction is in the
    /// kernel.
    pos: Option<usize>,
    /// Packets the worker counted since the last fold (queued before the hand-over): the
    /// next sync folds even if the kernel's count did not move.
    carried_unfolded: bool,
    /// The tracker as handed over: the fields the kernel does not keep come from here.
    base: TrackerParts,
    at_ns: u64,
    /// The kernel's packet and byte counts when last folded into the published figures.
    seen_packets: u64,
    seen_bytes: u64,
    /// RTP packets that reached the worker after the hand-over but were queued before it.
    carried_packets: u64,
    carried_bytes: u64,
    /// When it is offered again after a failed offer or a take-back (`offer::Retry`: after
    /// 50 packets, or a few once a second has passed, doubled per miss in a row).
    retry: Retry,
    /// Why it waits: no route at the last try, or the map refused the entry (else: taken
    /// back).
    unrouted: bool,
    refused: bool,
}

/// Publishes why slot's direction is (not) in the kernel, for `/metrics` (housekeeping only).
fn note(slot: &Slot, status: KernelStatus) {
    if let Some(cell) = slot.kernel_status_cell() {
        // Nine statuses: the code always fits a byte.
        cell.store(status.code() as u8, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Handed {
    /// The tracker now: the kernel's figures in `v` (if it has the entry) over the tracker
    /// as handed over, plus the packets the worker counted for it meanwhile (queued before
    /// the hand-over).
    fn current(&self, v: Option<&FwdValue>) -> TrackerParts {
        let mut parts = v.map_or(self.base, |v| v.advance(&self.base));
        parts.packets += self.carried_packets;
        parts.bytes += self.carried_bytes;
        parts.received += self.carried_packets;
        parts
    }

    /// A direction handed over under `key` as the tracker stood (`parts`), or, when
    /// `handed` is false, one that could not be: offered again later (`retry`: its misses
    /// so far).
    fn new(key: FwdKey, parts: TrackerParts, now: u64, handed: bool, retry: Retry) -> Handed {
        Handed {
            key,
            pos: None,
            carried_unfolded: false,
            base: parts,
            at_ns: now,
            seen_packets: parts.packets,
            seen_bytes: parts.bytes,
            carried_packets: 0,
            carried_bytes: 0,
            retry: if handed {
                retry
            } else {
                retry.missed(parts.packets, now, 0)
            },
            unrouted: false,
            refused: false,
        }
    }
}

/// One worker's (one ring's) side of the fast path. Used only on the worker's thread.
pub struct KernelWorker {
    map: Keys,
    /// This worker's entry numbers, and the program's direction entries mapped.
    entries: Entries,
    /// Loopback's ifindex.
    ifindex: u32,
    origin_ns: u64,
    /// The relay's interface addresses, in configuration order (`StreamShared::locals`).
    locals: std::sync::Arc<[IpAddr]>,
    /// For a relay on a real address: which device each destination is reached by.
    routes: Option<route::RouteQuery>,
    slots: SlotIdxMap<Handed>,
    /// Directions in the kernel now (the slots with `kernel` set).
    in_kernel: u64,
    /// Where a full scan (after the dirty list overflowed) has got; 0: none running.
    scan_cursor: usize,
    /// How much of the current dirty list (of round `dirty_round`) has been looked at.
    dirty_seen: usize,
    dirty_round: u64,
    /// This worker's mark in the entries it makes (the map is shared by all workers).
    owner: u32,
    /// Where the sync's pass over this worker's entry positions has got.
    sync_cursor: usize,
    sync_in_pass: bool,
    last_sync_ns: u64,
    /// Per entry position, what the sync saw of it and when it last folded it.
    looks: Vec<Look>,
    /// The directions a sync turn found due (position, entry, slot, packet count), kept
    /// between turns for its capacity.
    due: Vec<(usize, Entry, SlotIdx, u64)>,
    /// Sync passes started (wraps), and the fold gap of the current one.
    pass: u32,
    gap: u32,
    /// The clock at the last housekeeping turn (when a freed entry number was freed).
    last_turn_ns: u64,
}

impl KernelWorker {
    /// A worker's handle on the map `map`, marking its entries with `owner`. `routes`: for
    /// a relay on a real address, the routing questions; `ifindex`: loopback's.
    pub(super) fn new(
        map: Keys,
        entries: Entries,
        ifindex: u32,
        origin_ns: u64,
        locals: std::sync::Arc<[IpAddr]>,
        routes: Option<route::RouteQuery>,
        owner: u32,
    ) -> KernelWorker {
        KernelWorker {
            map,
            entries,
            ifindex,
            origin_ns,
            locals,
            routes,
            slots: SlotIdxMap::default(),
            in_kernel: 0,
            scan_cursor: 0,
            dirty_seen: 0,
            dirty_round: 0,
            owner,
            sync_cursor: 0,
            sync_in_pass: false,
            last_sync_ns: 0,
            looks: Vec::new(),
            due: Vec::new(),
            pass: 0,
            gap: 1,
            last_turn_ns: 0,
        }
    }

    /// Housekeeping: hands qualifying directions to the kernel, and folds the kernel's
    /// counts into the published figures.
    pub fn turn(
        &mut self,
        slots: &mut [Slot],
        dirty: &DirtyList,
        counters: &WorkerCounters,
        now: u64,
    ) {
        let mut ops = 0;
        self.last_turn_ns = now;
        if self.sync_in_pass || now.saturating_sub(self.last_sync_ns) >= SYNC_EVERY_NS {
            if !self.sync_in_pass {
                self.pass = self.pass.wrapping_add(1);
                self.gap = fold_gap(self.in_kernel);
            }
            self.sync_in_pass = true;
            if self.sync_some(slots, counters) {
                self.sync_in_pass = false;
                self.sync_cursor = 0;
                self.last_sync_ns = now;
            }
        }
        // Candidates are the slots that saw RTP in user space lately (the publisher's dirty
        // list, read before it is cleared): once every stream is in the kernel this costs
        // nothing. When that list overflowed, every slot is looked at, a slice a turn.
        if dirty.rounds != self.dirty_round {
            self.dirty_round = dirty.rounds;
            self.dirty_seen = 0;
        }
        if dirty.overflowed || self.scan_cursor > 0 {
            for _ in 0..SCAN_PER_TURN {
                if ops >= OPS_PER_TURN {
                    break;
                }
                if self.scan_cursor >= slots.len() {
                    self.scan_cursor = 0;
                    break;
                }
                let i = SlotIdx::new(self.scan_cursor as u32);
                self.scan_cursor += 1;
                if self.try_hand_over(slots, i, now, counters) {
                    ops += 1;
                }
            }
        }
        for _ in 0..SCAN_PER_TURN {
            if ops >= OPS_PER_TURN {
                break;
            }
            let Some(&i) = dirty.list.get(self.dirty_seen) else {
                break;
            };
            self.dirty_seen += 1;
            // The opposite direction too: it may have qualified only now that this side's
            // source is confirmed, after its own last packet in user space.
            let peer = slots.get(i.index()).map_or(SlotIdx::NONE, |s| s.peer_rtp);
            for j in [i, peer] {
                if self.try_hand_over(slots, j, now, counters) {
                    ops += 1;
                }
            }
        }
    }

    /// Hands slot `i`'s direction to the kernel if it qualifies; true when a map update was
    /// tried.
    fn try_hand_over(
        &mut self,
        slots: &mut [Slot],
        i: SlotIdx,
        now: u64,
        counters: &WorkerCounters,
    ) -> bool {
        let Some(slot) = slots.get(i.index()) else {
            return false;
        };
        if slot.kind != SlotKind::Rtp || !slot.is_live() || slot.kernel {
            return false;
        }
        let Some(st) = slot.rtp.as_deref() else {
            return false;
        };
        let retry = self.slots.get(&i).map_or(Retry::default(), |h| h.retry);
        if let Some(h) = self.slots.get(&i) {
            if !h.retry.due(st.tracker.packets(), now) {
                let why = if h.unrouted {
                    KernelStatus::NoRoute
                } else if h.refused {
                    KernelStatus::MapFull
                } else {
                    KernelStatus::TakenBack
                };
                note(slot, why);
                return false;
            }
        }
        let Some(parts) = st.tracker.export() else {
            note(slot, KernelStatus::NoRtp);
            return false;
        };
        // The kernel keeps one clock rate: the tracker's must be the payload type's.
        let clock_hz = match st.clock_rates.clock_rate_hz(parts.payload_type) {
            Some(hz) if hz == parts.clock_rate_hz => hz,
            Some(_) => {
                note(slot, KernelStatus::ClockRate);
                return false;
            }
            None => 0,
        };
        let Some(out) = slots.get(slot.peer_rtp.index()) else {
            return false;
        };
        if !out.is_live() {
            return false;
        }
        let (Some(source), Some(destination)) = (slot.latch.confirmed(), out.latch.confirmed())
        else {
            note(slot, KernelStatus::NotLatched);
            return false;
        };
        // Each socket's own address: the two sides may be on two networks (two devices),
        // the route question below then names the device of the outgoing side's network.
        let local_of = |s: &Slot| {
            let locals = s.shared.as_ref().map(|sh| sh.locals)?;
            let n = match s.side {
                Side::A => locals[0],
                Side::B => locals[1],
            };
            self.locals.get(usize::from(n)).copied()
        };
        let (Some(in_ip), Some(out_ip)) = (local_of(slot), local_of(out)) else {
            note(slot, KernelStatus::Unsupported);
            return false;
        };
        let route = Route {
            local: SocketAddr::new(in_ip, slot.local_port),
            source,
            out_local: SocketAddr::new(out_ip, out.local_port),
            destination,
        };
        let ifindex = match (
            mode_of(&route),
            route.out_local.ip(),
            route.destination.ip(),
        ) {
            (Some(MODE_LOCAL), _, _) => self.ifindex,
            (Some(_), from, to) => {
                match self.routes.as_mut().and_then(|r| r.egress(from, to)) {
                    Some(oif) => oif,
                    None => {
                        // No route now: asked again as after a take-back.
                        note(slot, KernelStatus::NoRoute);
                        let mut unrouted = Handed::new(FwdKey::default(), parts, now, false, retry);
                        unrouted.unrouted = true;
                        self.slots.insert(i, unrouted);
                        return true;
                    }
                }
            }
            _ => {
                note(slot, KernelStatus::Unsupported);
                return false;
            }
        };
        let Some((key, mut value)) = entry(&route, &parts, clock_hz, ifindex, self.origin_ns)
        else {
            note(slot, KernelStatus::Unsupported);
            return false;
        };
        value.owner = self.owner;
        value.slot = i.raw();
        // The entry first, then the key that makes the program use it. No number left, map
        // full or out of memory: tried again as after a take-back.
        let taken = self.entries.take(i, now);
        let handed = match taken {
            Some((pos, at)) => {
                let keyed = self.entries.dirs().write(at, &value)
                    && self.map.insert(key, at.raw(), 0).is_ok();
                if !keyed {
                    self.entries.give_back(pos, now);
                }
                keyed
            }
            None => false,
        };
        let mut h = Handed::new(key, parts, now, handed, retry);
        h.refused = !handed;
        if handed {
            h.pos = taken.map(|(pos, _)| pos);
            if let Some((pos, _)) = taken {
                if self.looks.len() <= pos {
                    self.looks
                        .resize(self.entries.positions().max(pos + 1), Look::default());
                }
                if let Some(l) = self.looks.get_mut(pos) {
                    *l = Look::handed(value.packets, self.pass);
                }
            }
        }
        self.slots.insert(i, h);
        if !handed {
            note(slot, KernelStatus::MapFull);
            return true;
        }
        note(slot, KernelStatus::InKernel);
        if let Some(s) = slots.get_mut(i.index()) {
            // The tracker's figures as handed over are published now: from here on only a
            // fold publishes this direction's, when the kernel's count moves.
            s.publish();
            s.kernel = true;
        }
        self.in_kernel += 1;
        bump(&counters.kernel_handovers, 1);
        counters
            .kernel_streams
            .store(self.in_kernel, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Looks at the next [`SYNC_PER_TURN`] entry positions and folds the directions whose
    /// packet count moved (or whose worker-counted packets are not folded yet) into the
    /// published figures, a flowing one every `gap` passes (see `pace`); a direction not
    /// due costs a load from `looks` and, unless it is known or presumed to be flowing (then
    /// it waits for its turn unread), one from its entry. The directions due are gathered
    /// first and their records (the worker's, the slot, the shared counters and quality)
    /// brought into the cache together, so their misses overlap instead of coming one
    /// after the other behind each fold. True when the pass is complete.
    fn sync_some(&mut self, slots: &mut [Slot], counters: &WorkerCounters) -> bool {
        let end = self
            .sync_cursor
            .saturating_add(SYNC_PER_TURN)
            .min(self.entries.positions())
            .min(self.looks.len());
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        for pos in self.sync_cursor..end {
            let Some(look) = self.looks.get_mut(pos) else {
                continue;
            };
            // Moved (or presumed flowing) and not due: this pass would not fold it, so its
            // entry is not read.
            if look.waiting(self.pass, self.gap) {
                continue;
            }
            let Some((at, i)) = self.entries.used(pos) else {
                continue;
            };
            let Some(packets) = self.entries.dirs().packets(at) else {
                continue;
            };
            if !look.visit(packets, self.pass, self.gap) {
                continue;
            }
            look.folded(self.pass);
            due.push((pos, at, i, packets));
        }
        for &(_, _, i, _) in &due {
            std::hint::black_box(self.slots.get(&i).map(|h| h.seen_packets));
            if let Some(slot) = slots.get(i.index()) {
                std::hint::black_box(slot.counters().map(|c| c.packets.load(Relaxed)));
            }
        }
        let mut folded = Folded::default();
        for &(pos, at, i, packets) in &due {
            let (Some(h), Some(slot)) = (self.slots.get_mut(&i), slots.get_mut(i.index())) else {
                continue;
            };
            if !slot.kernel || h.pos != Some(pos) {
                continue;
            }
            if packets == h.seen_packets && !h.carried_unfolded {
                continue;
            }
            let v = self.entries.dirs().read(at);
            fold(slot, h, v.as_ref(), &mut folded);
        }
        self.due = due;
        folded.publish(counters);
        self.sync_cursor = end;
        end >= self.entries.positions().min(self.looks.len())
    }

    /// Entry `h`'s figures, while it is in the kernel.
    fn entry_of(&self, h: &Handed) -> Option<Entry> {
        h.pos.and_then(|pos| self.entries.entry_at(pos))
    }

    /// A packet reached the worker on slot `idx`, whose direction is in the kernel. Takes
    /// the direction (and the opposite one) back when the packet concerns the tracker or
    /// the latch, so the worker handles it with the kernel's state; a packet queued before
    /// the hand-over is only counted. Returns why an RTP packet reached the worker.
    pub fn on_user_packet(
        &mut self,
        slots: &mut [Slot],
        idx: SlotIdx,
        src: SocketAddr,
        pkt: &[u8],
        now: u64,
        counters: &WorkerCounters,
    ) -> UserReason {
        let Some(slot) = slots.get(idx.index()) else {
            return UserReason::Pending;
        };
        let seq = (crate::rtp::demux::classify(pkt) == crate::rtp::demux::PacketKind::Rtp)
            .then(|| RtpPacket::new_checked(pkt).ok())
            .flatten()
            .map(|p| p.sequence_number());
        let is_rtp = seq.is_some();
        let same_source = slot.latch.confirmed() == Some(src);
        if same_source && !is_rtp {
            // RTCP or not RTP at all: the worker handles it; the tracker is not involved.
            return UserReason::Malformed;
        }
        // The program marks what it passed up for the worker; an unmarked RTP packet from the
        // latched source was queued before the hand-over (the program never saw it), or the
        // program does not see the direction (`offer::queued_before_handover` tells which).
        let entry = self
            .slots
            .get(&idx)
            .and_then(|h| self.entry_of(h))
            .and_then(|at| self.entries.dirs().read(at));
        let flags = entry.as_ref().map_or(0, |v| v.flags);
        if let Some(h) = self.slots.get_mut(&idx) {
            let queued = |seq: u16| {
                queued_before_handover(&Unmarked {
                    since_ns: now.saturating_sub(h.at_ns),
                    relayed: entry.as_ref().is_some_and(|v| v.packets > h.base.packets),
                    kernel_max_seq: entry.as_ref().map_or(h.base.max_seq, |v| v.max_seq),
                    seq,
                    carried: h.carried_packets,
                })
            };
            if same_source && flags & HANDED_BACK == 0 && seq.is_some_and(queued) {
                h.carried_packets += 1;
                h.carried_bytes += pkt.len() as u64;
                h.carried_unfolded = true;
                if let Some(l) = h.pos.and_then(|pos| self.looks.get_mut(pos)) {
                    l.force();
                }
                return UserReason::Queued;
            }
        }
        let peer = slot.peer_rtp;
        // Another source is the latch's question whatever the program marked.
        let why = if same_source {
            Back::of_flags(flags)
        } else {
            Back::Source
        };
        self.take_back(slots, idx, why, counters);
        self.take_back(slots, peer, Back::Pair, counters);
        UserReason::HandedBack
    }

    /// Takes slot `i`'s direction back from the kernel: the tracker continues from where the
    /// kernel left it.
    pub fn take_back(
        &mut self,
        slots: &mut [Slot],
        i: SlotIdx,
        why: Back,
        counters: &WorkerCounters,
    ) {
        let Some(at) = self.slots.get(&i).and_then(|h| self.entry_of(h)) else {
            return;
        };
        let (Some(h), Some(slot)) = (self.slots.get_mut(&i), slots.get_mut(i.index())) else {
            return;
        };
        if !slot.kernel {
            return;
        }
        slot.kernel = false;
        note(slot, KernelStatus::TakenBack);
        h.unrouted = false;
        h.refused = false;
        self.in_kernel = self.in_kernel.saturating_sub(1);
        bump(&counters.kernel_takebacks, 1);
        counters.reasons.back(why);
        counters
            .kernel_streams
            .store(self.in_kernel, std::sync::atomic::Ordering::Relaxed);
        // The key goes first, so the program stops updating the entry, which is then read
        // (without it, the tracker as handed over and the packets the worker counted since)
        // and its number freed.
        let _ = self.map.remove(&h.key);
        let got = self.entries.dirs().read(at);
        if let Some(pos) = h.pos.take() {
            self.entries.give_back(pos, self.last_turn_ns);
        }
        let stayed_ns = self.last_turn_ns.saturating_sub(h.at_ns);
        let mut folded = Folded::default();
        let parts = fold(slot, h, got.as_ref(), &mut folded);
        folded.publish(counters);
        h.carried_packets = 0;
        h.carried_bytes = 0;
        h.retry = h.retry.missed(parts.packets, self.last_turn_ns, stayed_ns);
        if let Some(st) = slot.rtp.as_deref_mut() {
            st.tracker.set(RtpStreamTracker::import(&parts));
        }
    }

    /// Takes back the RTP directions among a stream's four slots `group` (its signalling
    /// changed).
    pub fn take_back_group(
        &mut self,
        slots: &mut [Slot],
        group: [SlotIdx; 4],
        counters: &WorkerCounters,
    ) {
        for i in group {
            self.take_back(slots, i, Back::Signalling, counters);
        }
    }

    /// The stream of the four slots `group` is being removed: its entries go before its
    /// sockets close.
    pub fn forget_group(
        &mut self,
        slots: &mut [Slot],
        group: [SlotIdx; 4],
        counters: &WorkerCounters,
    ) {
        self.take_back_group(slots, group, counters);
        for i in group {
            self.slots.remove(&i);
        }
    }
}

/// Folds the kernel's figures `v` for slot's direction (`None`: the entry is gone) into the
/// published ones: counts, quality, the latch's last packet. Returns the tracker now.
fn fold(
    slot: &mut Slot,
    h: &mut Handed,
    v: Option<&FwdValue>,
    totals: &mut Folded,
) -> TrackerParts {
    if let Some(v) = v {
        fold_counts(slot, h, v, totals);
        slot.latch.note_confirmed_packet(v.last_packet_ns);
    }
    h.carried_unfolded = false;
    let parts = h.current(v);
    if let Some(sh) = slot.side_shared() {
        sh.quality
            .publish(&RtpStreamTracker::import(&parts).snapshot());
    }
    parts
}

/// What folds added up, for the worker's counts: added once per sync pass (or take-back)
/// rather than six shared atomics per direction.
#[derive(Default)]
struct Folded {
    packets: u64,
    bytes: u64,
}

impl Folded {
    /// Adds the folded packets to the worker's published counts.
    fn publish(self, counters: &WorkerCounters) {
        if self.packets == 0 {
            return;
        }
        bump(&counters.rx_packets, self.packets);
        bump(&counters.rx_bytes, self.bytes);
        bump(&counters.tx_packets, self.packets);
        bump(&counters.tx_bytes, self.bytes);
        bump(&counters.kernel_forwarded, self.packets);
        bump(&counters.kernel_bytes, self.bytes);
    }
}

/// Adds what the kernel forwarded since the last fold to the socket's counts, and to
/// `totals` for the worker's.
fn fold_counts(slot: &Slot, h: &mut Handed, v: &FwdValue, totals: &mut Folded) {
    let packets = v.packets.saturating_sub(h.seen_packets);
    let bytes = v.bytes.saturating_sub(h.seen_bytes);
    h.seen_packets = h.seen_packets.max(v.packets);
    h.seen_bytes = h.seen_bytes.max(v.bytes);
    if packets == 0 {
        return;
    }
    totals.packets += packets;
    totals.bytes += bytes;
    if let Some(k) = slot.kernel_packets_cell() {
        let was = k.load(std::sync::atomic::Ordering::Relaxed);
        let now = was.saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
        k.store(now, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(c) = slot.counters() {
        bump(&c.packets, packets);
        bump(&c.bytes, bytes);
        c.last_packet_ns
            .store(v.last_packet_ns, std::sync::atomic::Ordering::Relaxed);
    }
}
