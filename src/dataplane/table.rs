//! A worker's slot table: the slots of its streams, which indices are free, and which
//! stream owns which four.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::session::backend::{Side, StreamId};
use crate::session::latch::Latch;

use super::shared::{A_RTCP, A_RTP, B_RTCP, B_RTP};
use super::slot::{DirtyList, RtpState, Slot, SlotIdx, SlotKind};
use super::worker::{NewStream, SideInit};

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
