//! The per-socket state a worker keeps: one slot per relay socket, indexed by [`SlotIdx`],
//! and the list of slots whose quality figures changed since they were last published.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::rtp::clock::ClockRates;
use crate::rtp::stats::RtpStreamTracker;
use crate::session::backend::{Side, StreamId};
use crate::session::latch::Latch;

use super::shared::{Counters, SideShared, StreamShared};
use super::spares::Spares;

/// A slot's place in its worker's table: what completions, epoll tokens, the dirty list and
/// the fast path's entries carry to reach a socket's state without hashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct SlotIdx(u32);

/// Hashes a [`SlotIdx`] as [`IdHasher`](crate::session::backend::IdHasher) does (blocks of
/// consecutive indices in consecutive buckets, the blocks spread) instead of SipHash: the
/// index is the worker's own number, never chosen by a peer, and the fast path's read-back
/// looks one up per folded direction (thousands a second at 25,000 calls).
pub type SlotIdxHasher = crate::session::backend::IdHasher;

/// A map keyed by slot index with [`SlotIdxHasher`].
pub type SlotIdxMap<V> =
    std::collections::HashMap<SlotIdx, V, std::hash::BuildHasherDefault<SlotIdxHasher>>;

impl SlotIdx {
    /// No slot: the peers of a free slot. It lies past the end of every table, so looking it
    /// up finds nothing. (`Option<SlotIdx>` would make each slot 8 bytes larger: memory per
    /// stream, see the size test below.)
    pub const NONE: SlotIdx = SlotIdx(u32::MAX);

    #[inline]
    pub const fn new(raw: u32) -> SlotIdx {
        SlotIdx(raw)
    }

    /// The number as carried in tokens, the fixed-file table and the fast path's map.
    #[inline]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The position in the table's vector.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Rtp,
    Rtcp,
}

/// One relay socket in a worker.
pub struct Slot {
    /// Bumped on every reuse so completions for a previous owner can be recognised.
    pub generation: u32,
    pub socket: Option<OwnedFd>,
    /// io_uring: the socket sits in the ring's fixed-file table at this slot's index, and
    /// `socket` is `None` (its descriptor was closed: the process's descriptor limit then
    /// does not bound the number of streams).
    pub fixed: bool,
    pub stream: StreamId,
    pub side: Side,
    pub kind: SlotKind,
    /// Slots of the other side: where packets received here are sent from.
    pub peer_rtp: SlotIdx,
    pub peer_rtcp: SlotIdx,
    /// Whether the endpoint behind *this* slot multiplexes RTCP on its RTP port.
    pub rtcp_mux: bool,
    /// The endpoint that sends to this socket (and receives from it).
    pub latch: Latch,
    /// RTP sockets only: sequence/loss/jitter state. Boxed so RTCP sockets do not carry it
    /// (memory per stream); allocated on the command path, never per packet.
    pub rtp: Option<Box<RtpState>>,
    pub shared: Option<Arc<StreamShared>>,
    /// Set when the quality snapshot is older than the tracker.
    pub dirty: bool,
    /// Being torn down: completions are ignored until the socket is released.
    pub closing: bool,
    /// io_uring: a multishot receive is outstanding for this socket.
    pub armed: bool,
    /// io_uring watchdog: data was queued with no completion at the last check.
    pub stall_suspect: bool,
    /// The socket's kernel drop count (`SO_RXQ_OVFL`) as last seen on a datagram.
    pub kernel_drops: u32,
    /// The socket's local port (the fast path's map names sockets by address).
    pub local_port: u16,
    /// RTP sockets: the in-kernel fast path relays this direction (see `kernel`).
    pub kernel: bool,
    /// Whether the socket is connected to its endpoint's locked source (user space only:
    /// sends then skip the kernel's per-send route lookup).
    pub conn: Conn,
}

/// A relay socket's `connect()` state (see `uring::connect`). Sends name no address only
/// in `On`; in every other state they name it, which a connected socket accepts too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Conn {
    /// Unconnected: receives from anyone, sends name their destination.
    #[default]
    Off,
    /// A connect to the locked source is in flight.
    Connecting,
    /// Connected to the latch's locked source.
    On,
    /// A disconnect (`AF_UNSPEC`) is in flight.
    Disconnecting,
    /// The kernel refused to connect it: not tried again for this socket.
    Refused,
}

impl Slot {
    pub fn empty() -> Slot {
        Slot {
            generation: 0,
            socket: None,
            fixed: false,
            stream: StreamId::NONE,
            side: Side::A,
            kind: SlotKind::Rtp,
            peer_rtp: SlotIdx::NONE,
            peer_rtcp: SlotIdx::NONE,
            rtcp_mux: false,
            latch: Latch::new(crate::session::latch::LatchMode::Symmetric, None),
            rtp: None,
            shared: None,
            dirty: false,
            closing: false,
            armed: false,
            stall_suspect: false,
            kernel_drops: 0,
            local_port: 0,
            kernel: false,
            conn: Conn::Off,
        }
    }

    /// Takes the running drop count a datagram carried (the kernel's count when it queued
    /// that datagram) and returns how many drops are new since the last one. The count is
    /// the kernel's u32 and wraps; datagrams are read in queue order, so it never goes back.
    pub fn note_kernel_drops(&mut self, cumulative: u32) -> u32 {
        let new = cumulative.wrapping_sub(self.kernel_drops);
        self.kernel_drops = cumulative;
        new
    }

    pub fn is_live(&self) -> bool {
        self.has_socket() && !self.closing
    }

    /// Whether a socket is attached, as a descriptor or in the ring's fixed-file table.
    pub fn has_socket(&self) -> bool {
        self.socket.is_some() || self.fixed
    }

    pub fn attach(&mut self, socket: OwnedFd) {
        self.socket = Some(socket);
    }

    /// The socket's descriptor, or -1 when it has none (none attached, or held in the
    /// ring's fixed-file table).
    #[inline]
    pub fn fd(&self) -> RawFd {
        self.socket.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// What readers see of this slot's side.
    #[inline]
    pub fn side_shared(&self) -> Option<&SideShared> {
        let i = match self.side {
            Side::A => 0,
            Side::B => 1,
        };
        self.shared.as_deref().map(|s| &s.sides[i])
    }

    /// The cell where this socket's direction publishes its kernel status.
    pub fn kernel_status_cell(&self) -> Option<&std::sync::atomic::AtomicU8> {
        let i = match self.side {
            Side::A => 0,
            Side::B => 1,
        };
        self.shared.as_deref().and_then(|s| s.kernel.get(i))
    }

    /// This socket's direction's kernel status as last published (`Pending` without one).
    #[inline]
    pub fn kernel_status(&self) -> crate::session::backend::KernelStatus {
        self.kernel_status_cell().map_or(Default::default(), |c| {
            crate::session::backend::KernelStatus::from_code(u32::from(
                c.load(std::sync::atomic::Ordering::Relaxed),
            ))
        })
    }

    /// The cell counting the RTP packets of this socket's direction the kernel relayed.
    pub fn kernel_packets_cell(&self) -> Option<&AtomicU32> {
        let i = match self.side {
            Side::A => 0,
            Side::B => 1,
        };
        self.shared.as_deref().and_then(|s| s.kernel_packets.get(i))
    }

    /// This socket's ingress counters.
    #[inline]
    pub fn counters(&self) -> Option<&Counters> {
        self.side_shared().and_then(|s| match self.kind {
            SlotKind::Rtp => Some(&s.rtp),
            // Set up on the socket's first packet (`counters_for_packet`).
            SlotKind::Rtcp => s.rtcp.get().map(|c| &c.socket),
        })
    }

    /// This socket's ingress counters, an RTCP socket's set up now from a spare record if
    /// this is its first packet.
    #[inline]
    pub fn counters_for_packet(&self, spares: &mut Spares) -> Option<&Counters> {
        self.side_shared().map(|s| match self.kind {
            SlotKind::Rtp => &s.rtp,
            SlotKind::Rtcp => &s.rtcp.get_or_put(|| spares.rtcp()).socket,
        })
    }

    /// Publishes the tracker's figures for readers (housekeeping, not per packet). Not while
    /// the direction is in the kernel: the tracker is then the one handed over, and the
    /// kernel worker publishes the kernel's figures when they move (`handover::fold`).
    pub fn publish(&mut self) {
        if self.dirty {
            if let (Some(sh), Some(rtp), false) =
                (self.side_shared(), self.rtp.as_deref(), self.kernel)
            {
                sh.quality.publish(&rtp.tracker.snapshot());
            }
            self.dirty = false;
        }
    }
}

/// Per-direction RTP state of an RTP socket: 24 bytes, and the tracker's 112 once the
/// direction has carried RTP (128 inline while every direction had a tracker from its
/// offer on; 160 while each kept a whole clock-rate map; now the two directions of a stream
/// share one slice).
#[derive(Clone, Debug, Default)]
pub struct RtpState {
    pub tracker: LazyTracker,
    pub clock_rates: ClockRates,
}

/// What a tracker reads as before the direction's first RTP packet.
static NO_RTP_YET: RtpStreamTracker = RtpStreamTracker::new();

/// A direction's RTP tracker, allocated apart when its first RTP packet comes (taken from the
/// worker's [`Spares`]: no allocation on the packet path), so a held call that carries no
/// RTP has none (memory per held call, issue 19). Until then it reads as a fresh tracker.
#[derive(Clone, Debug, Default)]
pub struct LazyTracker(Option<Box<RtpStreamTracker>>);

impl std::ops::Deref for LazyTracker {
    type Target = RtpStreamTracker;

    #[inline]
    fn deref(&self) -> &RtpStreamTracker {
        self.0.as_deref().unwrap_or(&NO_RTP_YET)
    }
}

impl LazyTracker {
    /// The tracker to update with a packet: the one there, or a spare.
    #[inline]
    pub fn to_update(&mut self, spares: &mut Spares) -> &mut RtpStreamTracker {
        self.0.get_or_insert_with(|| spares.tracker())
    }

    /// Replaces the figures (a tracker taken back from the fast path; not per packet).
    pub fn set(&mut self, t: RtpStreamTracker) {
        match self.0.as_deref_mut() {
            Some(have) => *have = t,
            None => self.0 = Some(Box::new(t)),
        }
    }

    /// Whether the direction has carried RTP (its tracker is allocated).
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

/// Slots whose quality figures changed since the last publish. Preallocated; when it fills
/// up, `overflowed` asks for one full scan instead (no allocation on the packet path).
pub struct DirtyList {
    pub list: Vec<SlotIdx>,
    pub overflowed: bool,
    /// How far the current publication round has got.
    pub cursor: usize,
    /// Bumped each time the list is emptied (readers other than the publisher tell a new
    /// list from the old one by it, not by its length).
    pub rounds: u64,
}

impl DirtyList {
    pub fn with_capacity(n: usize) -> DirtyList {
        DirtyList {
            list: Vec::with_capacity(n),
            overflowed: false,
            cursor: 0,
            rounds: 0,
        }
    }

    /// Notes that slot `idx` has figures to publish (no allocation: the list never grows).
    #[inline]
    pub fn mark(&mut self, idx: SlotIdx) {
        if self.list.len() < self.list.capacity() {
            self.list.push(idx);
        } else {
            self.overflowed = true;
        }
    }
}

#[cfg(test)]
mod drop_count_tests {
    use super::Slot;

    #[test]
    fn kernel_drop_count_gives_new_drops_across_wrap() {
        let mut s = Slot::empty();
        assert_eq!(s.note_kernel_drops(0), 0);
        assert_eq!(s.note_kernel_drops(5), 5);
        assert_eq!(s.note_kernel_drops(5), 0, "same count again: nothing new");
        assert_eq!(s.note_kernel_drops(12), 7);
        s.kernel_drops = u32::MAX - 2;
        assert_eq!(s.note_kernel_drops(4), 7, "the kernel's u32 wrapped");
        // A reused slot starts from a fresh socket's zero.
        s = Slot::empty();
        assert_eq!(s.note_kernel_drops(3), 3);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Issue 2's target is under 2 KiB per stream (kernel socket buffers excluded). The
    /// worker's share is four slots, two boxed RTP states and the shared counters; the
    /// session model adds its own (see `session::model`'s size test). These bounds hold the
    /// sizes the measured figure in BENCHMARKS.md was made with; the boxed ones sit at or
    /// just under an allocator size class, so a few bytes more cost a whole class. Slots
    /// live in one vector: 120 bytes since each keeps its socket's kernel drop count.
    /// `StreamShared` went from 320 to 384 bytes (one cache line) when each side's RTCP cell
    /// started keeping what round-trip times need (LSR/DLSR and the two newest SRs), and to
    /// 368 (384 with its `Arc` header, no longer padded to a cache line) for issue 19. Slots
    /// went back to 112 bytes (issue 19) when the latch's two times became byte arrays, and
    /// stayed there with the socket's connect state (`Conn`) once the latch kept its rank and
    /// confirmation in one byte (one byte more and the stream id's alignment makes it 120).
    #[test]
    fn worker_memory_per_stream_stays_small() {
        use std::mem::size_of;
        assert!(
            size_of::<Slot>() <= 112,
            "Slot is {} bytes",
            size_of::<Slot>()
        );
        // The tracker apart (112, allocated with the first RTP packet): 24 (128 with it
        // inline).
        assert!(
            size_of::<RtpState>() <= 24,
            "RtpState is {} bytes",
            size_of::<RtpState>()
        );
        assert!(
            size_of::<RtpStreamTracker>() <= 112,
            "RtpStreamTracker is {} bytes",
            size_of::<RtpStreamTracker>()
        );
        // 112 + the Arc's two counts = 128, an allocator size class (208 + 16 = 224 while
        // each side kept its RTCP report inline, 368 + 16 = 384 while its RTCP counters and
        // quality cell were inline too). A side's RTCP record: 80.
        assert!(
            size_of::<StreamShared>() <= 112,
            "StreamShared is {} bytes",
            size_of::<StreamShared>()
        );
        assert!(
            size_of::<super::super::shared::RtcpCell>() <= 80,
            "RtcpCell is {} bytes",
            size_of::<super::super::shared::RtcpCell>()
        );
        // A held (silent) stream's: four slots, two RTP states, the shared record.
        let per_stream =
            4 * size_of::<Slot>() + 2 * size_of::<RtpState>() + size_of::<StreamShared>();
        assert!(
            per_stream <= 608,
            "worker state per stream is {per_stream} bytes"
        );
    }
}

#[cfg(test)]
mod hasher_tests {
    use super::{SlotIdx, SlotIdxMap};
    use crate::session::backend::ID_BLOCK;
    use std::hash::BuildHasher;

    /// The map's table picks buckets by the hash's low bits and keeps the top 7 bits as
    /// tags: consecutive indices (how a worker hands them out) must take consecutive buckets
    /// a block at a time (the sync pass then walks the table a run at a time), the blocks
    /// must spread over the table (see the stream id hasher's test for why), and the tags
    /// over all 128 values.
    #[test]
    fn indices_take_consecutive_buckets_by_block_and_blocks_spread() {
        let map: SlotIdxMap<()> = SlotIdxMap::default();
        let b = map.hasher();
        let mask = 4095;
        let mut tags = [false; 128];
        let mut groups = std::collections::HashSet::new();
        for i in 0..4096u32 {
            let h = b.hash_one(SlotIdx::new(i));
            tags[(h >> 57) as usize] = true;
            let first = b.hash_one(SlotIdx::new(i - i % ID_BLOCK as u32));
            assert_eq!(
                h & mask,
                (first & mask) + u64::from(i) % ID_BLOCK,
                "index {i} is not next to its block's first"
            );
            groups.insert(first & mask);
        }
        assert!(tags.iter().all(|&t| t), "every 7-bit tag used");
        // 256 blocks over 256 block positions: a random spread would take ~162 of them.
        assert!(
            groups.len() > 140,
            "the blocks took {} positions",
            groups.len()
        );
    }
}
