//! A worker's slot table: the slots of its streams, which indices are free, and which
//! stream owns which four.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::session::backend::{Side, StreamId};
use crate::session::latch::Latch;

use super::shared::StreamShared;
use super::shared::{A_RTCP, A_RTP, B_RTCP, B_RTP};
use super::slot::{DirtyList, RtpState, Slot, SlotIdx, SlotKind};
use super::worker::{NewStream, RtcpOpen, SideInit};

/// The side and kind of a stream's slot at `pos` (A_RTP, A_RTCP, B_RTP, B_RTCP).
fn position(pos: usize) -> (Side, SlotKind) {
    match pos {
        A_RTP => (Side::A, SlotKind::Rtp),
        A_RTCP => (Side::A, SlotKind::Rtcp),
        B_RTP => (Side::B, SlotKind::Rtp),
        _ => (Side::B, SlotKind::Rtcp),
    }
}

fn rtp_position(side: Side) -> usize {
    match side {
        Side::A => A_RTP,
        Side::B => B_RTP,
    }
}

fn rtcp_position(side: Side) -> usize {
    match side {
        Side::A => A_RTCP,
        Side::B => B_RTCP,
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
            // The tracker itself comes with the direction's first RTP packet.
            slot.rtp = Some(Box::new(RtpState {
                tracker: Default::default(),
                clock_rates: init.clock_rates.clone(),
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
            let init = if pos < B_RTP { &a } else { &b };
            self.install(idx, pos, sock, ports[pos], id, init, &shared);
        }
        self.streams.insert(id, idx);
        idx
    }

    /// Fills slot `group[pos]` (a fresh generation) for stream `id`: its socket, port, side,
    /// kind, peers (the other side's slots in `group`) and signalling.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        group: [SlotIdx; 4],
        pos: usize,
        sock: OwnedFd,
        port: u16,
        id: StreamId,
        init: &SideInit,
        shared: &Arc<StreamShared>,
    ) {
        let (side, kind) = position(pos);
        let (peer_rtp, peer_rtcp) = match side {
            Side::A => (group[B_RTP], group[B_RTCP]),
            Side::B => (group[A_RTP], group[A_RTCP]),
        };
        let Some(s) = self.slots.get_mut(group[pos].index()) else {
            return;
        };
        let generation = s.generation;
        *s = Slot::empty();
        s.generation = generation.wrapping_add(1) & 0x00ff_ffff;
        s.attach(sock);
        s.local_port = port;
        s.stream = id;
        s.side = side;
        s.kind = kind;
        s.peer_rtp = peer_rtp;
        s.peer_rtcp = peer_rtcp;
        s.shared = Some(shared.clone());
        Self::init_side(s, init, kind);
    }

    /// Points the other side's slots of `group` at `side`'s RTCP slot `to` (NONE: none).
    fn repoint_rtcp_peers(&mut self, group: [SlotIdx; 4], side: Side, to: SlotIdx) {
        let others = match side {
            Side::A => [group[B_RTP], group[B_RTCP]],
            Side::B => [group[A_RTP], group[A_RTCP]],
        };
        for o in others {
            if let Some(s) = self.slots.get_mut(o.index()) {
                s.peer_rtcp = to;
            }
        }
    }

    /// Takes `side`'s RTCP slot out of stream `id` (its endpoint muxes RTCP on the RTP port):
    /// the slot is marked closing and returned for the engine to release; the stream goes
    /// on with three slots (RTCP toward that side leaves by its RTP slot).
    pub fn close_rtcp(&mut self, id: StreamId, side: Side) -> Option<SlotIdx> {
        let pos = rtcp_position(side);
        let group = self.streams.get_mut(&id)?;
        let i = std::mem::replace(&mut group[pos], SlotIdx::NONE);
        let group = *group;
        if i == SlotIdx::NONE {
            return None;
        }
        self.repoint_rtcp_peers(group, side, SlotIdx::NONE);
        let s = self.slots.get_mut(i.index())?;
        s.closing = true;
        Some(i)
    }

    /// Gives stream `id` a new RTCP slot for `side` (bound again: a re-offer without mux) and
    /// returns it for the engine to attach. `None` (the socket is dropped) when the stream
    /// is gone or the side has its RTCP slot.
    pub fn open_rtcp(&mut self, id: StreamId, side: Side, open: RtcpOpen) -> Option<SlotIdx> {
        let pos = rtcp_position(side);
        let group = *self.streams.get(&id)?;
        if group[pos] != SlotIdx::NONE {
            return None;
        }
        let rtp = group[rtp_position(side)];
        let shared = self.slots.get(rtp.index())?.shared.clone()?;
        let i = self.take_slot();
        let mut group = group;
        group[pos] = i;
        self.install(group, pos, open.socket, open.port, id, &open.init, &shared);
        self.repoint_rtcp_peers(group, side, i);
        self.streams.insert(id, group);
        Some(i)
    }

    /// A stream's four slot indices (A_RTP, A_RTCP, B_RTP, B_RTCP); an RTCP one is
    /// [`SlotIdx::NONE`] while its side muxes RTCP and its socket is closed.
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
        // The other direction's clock rates, when they are the same: one slice for both.
        let peer = self.slots.get(rtp.index()).map(|s| s.peer_rtp);
        let rates = match peer
            .and_then(|p| self.slots.get(p.index()))
            .and_then(|p| p.rtp.as_deref())
        {
            Some(p) if p.clock_rates == init.clock_rates => p.clock_rates.clone(),
            _ => init.clock_rates.clone(),
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
                    rtp.clock_rates = rates.clone();
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
