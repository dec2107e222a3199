//! Connecting relay sockets to their endpoint's locked source (user space only). A UDP
//! socket that names its destination on every send makes the kernel look the route up for
//! each datagram; a connected one keeps the route. Once a latch locks a source
//! ([`Latch::locked_peer`]) its socket talks to that one peer only, so it is connected to
//! it, and sends out of it name no address.
//!
//! A connected socket also receives from its peer only: the kernel drops what other sources
//! send before the relay sees it (and answers with ICMP port unreachable), so those packets
//! are not in `drop_source` while the socket is connected. Whenever the latch may take a
//! new source, the socket is disconnected first (`AF_UNSPEC`): a new offer or answer for the
//! side, a silence that allows re-learning ([`Latch::may_change`], checked by a scan), a
//! takeover. Sends name their address in every state but `Conn::On`, which a connected
//! socket accepts as well.
//!
//! [`Latch::locked_peer`]: crate::session::latch::Latch::locked_peer
//! [`Latch::may_change`]: crate::session::latch::Latch::may_change

use std::net::SocketAddr;

use io_uring::{opcode, squeue, types};

use crate::dataplane::shared::{bump, WorkerCounters};
use crate::dataplane::slot::{Conn, Slot, SlotIdx};
use crate::dataplane::sockaddr;

use super::ring::Ring;
use super::token;

/// Connects in flight per worker (each holds its address until its completion).
const POOL: usize = 64;
/// How often the scan looks for connected sockets whose latch may change, and how many
/// slots it looks at each time: 40,000 slots (10,000 calls) take 40 ms × 40 = 0.8 s.
const SCAN_EVERY_NS: u64 = 20 * crate::time::NANOS_PER_MS;
const SCAN_SLOTS: usize = 1024;

/// A connect in flight: the slot it is for and the address it names.
struct Op {
    addr: libc::sockaddr_storage,
    peer: Option<SocketAddr>,
    slot: SlotIdx,
    generation: u32,
}

pub struct Connector {
    enabled: bool,
    ops: Vec<Op>,
    free: Vec<u16>,
    /// Disconnects in flight (they share one `AF_UNSPEC` address).
    disconnecting: usize,
    unspec: Box<libc::sockaddr>,
    /// Slots whose signalling changed (commands), to disconnect on the next turn.
    relatch: Vec<SlotIdx>,
    cursor: usize,
    last_scan_ns: u64,
    /// A takeover: nothing is connected any more and every socket is disconnected.
    paused: bool,
}

/// A connect of slot `idx`'s socket (its fixed file, or its descriptor) to `addr`.
fn connect_entry(
    s: &Slot,
    idx: SlotIdx,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> squeue::Entry {
    if s.fixed {
        opcode::Connect::new(types::Fixed(idx.raw()), addr, len).build()
    } else {
        opcode::Connect::new(types::Fd(s.fd()), addr, len).build()
    }
}

impl Connector {
    pub fn new(enabled: bool) -> Connector {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut unspec: Box<libc::sockaddr> = Box::new(unsafe { std::mem::zeroed() });
        unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        Connector {
            enabled,
            ops: (0..POOL)
                .map(|_| Op {
                    addr: zero_storage,
                    peer: None,
                    slot: SlotIdx::NONE,
                    generation: 0,
                })
                .collect(),
            free: (0..POOL as u16).rev().collect(),
            disconnecting: 0,
            unspec,
            relatch: Vec::with_capacity(1024),
            cursor: 0,
            last_scan_ns: 0,
            paused: false,
        }
    }

    /// After a datagram on slot `idx` was decided: connect its socket if its latch has just
    /// locked a source. Costs a flag and a state check per packet once connected.
    #[inline]
    pub fn after_receive(&mut self, slots: &mut [Slot], idx: SlotIdx, ring: &mut Ring) {
        if !self.enabled || self.paused {
            return;
        }
        let Some(s) = slots.get_mut(idx.index()) else {
            return;
        };
        if s.conn != Conn::Off || !s.is_live() {
            return;
        }
        if let Some(peer) = s.latch.locked_peer() {
            self.connect(s, idx, peer, ring);
        }
    }

    #[cold]
    fn connect(&mut self, s: &mut Slot, idx: SlotIdx, peer: SocketAddr, ring: &mut Ring) {
        let Some(k) = self.free.pop() else {
            return; // Tried again on a later packet.
        };
        let op = &mut self.ops[usize::from(k)];
        let len = sockaddr::write(peer, &mut op.addr);
        op.peer = Some(peer);
        op.slot = idx;
        op.generation = s.generation;
        let addr = (&op.addr as *const libc::sockaddr_storage).cast();
        let e = connect_entry(s, idx, addr, len).user_data(token::item(token::KIND_CONNECT, k));
        if ring.push_sqe(e) {
            s.conn = Conn::Connecting;
        } else {
            self.free.push(k);
        }
    }

    /// Disconnects slot `idx`'s socket if it is connected (a connect in flight is undone on
    /// its completion, which checks the latch again).
    fn disconnect(&mut self, s: &mut Slot, idx: SlotIdx, ring: &mut Ring) {
        if s.conn != Conn::On || !s.has_socket() {
            return;
        }
        let e = connect_entry(s, idx, &*self.unspec, size_of_sockaddr()).user_data(token::slot(
            token::KIND_DISCONNECT,
            idx,
            s.generation,
        ));
        if ring.push_sqe(e) {
            s.conn = Conn::Disconnecting;
            self.disconnecting += 1;
        }
    }

    /// A connect's completion: connected, unless the latch moved meanwhile (then undone at
    /// once) or the kernel refused (then this socket stays unconnected).
    pub fn on_connected(
        &mut self,
        k: u16,
        res: i32,
        slots: &mut [Slot],
        ring: &mut Ring,
        counters: &WorkerCounters,
    ) {
        let Some(op) = self.ops.get(usize::from(k)) else {
            return;
        };
        let (idx, generation) = (op.slot, op.generation);
        let peer = op.peer;
        self.free.push(k);
        let Some(s) = slots.get_mut(idx.index()) else {
            return;
        };
        if s.generation != generation || s.conn != Conn::Connecting {
            return;
        }
        if res < 0 {
            bump(&counters.connect_failed, 1);
            s.conn = Conn::Refused;
            return;
        }
        bump(&counters.connects, 1);
        s.conn = Conn::On;
        if self.paused || peer.is_none() || s.latch.locked_peer() != peer || !s.is_live() {
            self.disconnect(s, idx, ring);
        }
    }

    /// A disconnect's completion for slot `idx` of `generation`.
    pub fn on_disconnected(
        &mut self,
        idx: SlotIdx,
        generation: u32,
        res: i32,
        slots: &mut [Slot],
        counters: &WorkerCounters,
    ) {
        self.disconnecting = self.disconnecting.saturating_sub(1);
        let Some(s) = slots.get_mut(idx.index()) else {
            return;
        };
        if s.generation & token::GENERATION_MASK != generation || s.conn != Conn::Disconnecting {
            return;
        }
        if res < 0 {
            // Still connected as far as we know: never named-less again, never reconnected.
            bump(&counters.connect_failed, 1);
            s.conn = Conn::Refused;
        } else {
            bump(&counters.disconnects, 1);
            s.conn = Conn::Off;
        }
    }

    /// Slot `i`'s signalling changed (a command): its socket is disconnected next turn.
    pub fn relatch(&mut self, i: SlotIdx) {
        if self.enabled && self.relatch.len() < self.relatch.capacity() {
            self.relatch.push(i);
        }
        // Else the scan finds it (its latch no longer locks anything).
    }

    /// A takeover: connect nothing more, and disconnect every socket (see [`Self::settled`]).
    pub fn pause(&mut self) {
        self.paused = true;
        self.cursor = 0;
    }

    /// Paused, and no socket is connected or being connected or disconnected.
    pub fn settled(&self, slots: &[Slot]) -> bool {
        !self.enabled
            || (self.disconnecting == 0
                && self.free.len() == POOL
                && slots.iter().all(|s| !matches!(s.conn, Conn::On)))
    }

    /// The housekeeping turn: disconnects what the commands asked for, and scans part of
    /// the table for connected sockets whose latch may change now (every slot when paused).
    pub fn turn(&mut self, slots: &mut [Slot], now: u64, ring: &mut Ring) {
        if !self.enabled {
            return;
        }
        while let Some(i) = self.relatch.pop() {
            if let Some(s) = slots.get_mut(i.index()) {
                if s.latch.locked_peer().is_none() || self.paused {
                    self.disconnect(s, i, ring);
                }
            }
        }
        if !self.paused && now.saturating_sub(self.last_scan_ns) < SCAN_EVERY_NS {
            return;
        }
        self.last_scan_ns = now;
        let n = slots.len();
        if n == 0 {
            return;
        }
        let count = if self.paused { n } else { SCAN_SLOTS.min(n) };
        for _ in 0..count {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            let s = &mut slots[i];
            if s.conn == Conn::On && (self.paused || s.latch.may_change(now)) {
                self.disconnect(s, SlotIdx::new(i as u32), ring);
            }
        }
    }
}

fn size_of_sockaddr() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t
}
