//! The boundary between the session layer and the data plane.
//!
//! A *stream* is one media line of a call as the relay sees it: two sides, A and B, each with
//! its own relay port pair (RTP even, RTCP odd). Endpoint A sends to A's relay ports; the relay
//! forwards out of B's relay ports to endpoint B, and the other way round. Packets always leave
//! from the relay's own port for the receiving side, so NATed endpoints see symmetric RTP.
//! Statistics of a side are *ingress* counters on that side's ports (what rtpengine reports).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::addr::PackedAddr;

use crate::rtp::stats::RtpStreamStats;
use crate::session::latch::LatchMode;
use crate::session::ports::{AddressUsage, PortError, PortPair};
use crate::time::Nanos;

/// One stream of the relay, as the data plane numbers it. Ids are handed out in order by the
/// backend that opened the stream and never reused while the process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u64);

impl StreamId {
    /// No stream: never handed out (an empty slot's owner, a wake-up command's target).
    pub const NONE: StreamId = StreamId(0);

    /// The id a backend hands out first.
    pub const FIRST: StreamId = StreamId(1);

    /// The id after this one (what a backend hands out next).
    pub fn next(self) -> StreamId {
        StreamId(self.0.wrapping_add(1))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> StreamId {
        StreamId(raw)
    }
}

/// Hashes a relay-made number (a [`StreamId`], a worker's slot index) instead of SipHash: the
/// numbers are the relay's own, never chosen by a peer, and the timeout sweep and the fast
/// path's read-back look them up tens of thousands of times a second at 25,000 calls.
///
/// The map's table picks a bucket by the hash's low bits and keeps its top 7 bits as a tag.
/// Numbers handed out in order are hashed in blocks of [`ID_BLOCK`]: a block's numbers take
/// consecutive buckets, one run of memory, and the blocks are spread over the table by a
/// Fibonacci multiple of the block's number. The sweep (calls in the order they came) and
/// the sync pass (entries in the order they were handed over) then take one cache miss a
/// block, where the processor fetches the rest ahead, instead of one a look-up (at 25,000
/// calls the misses were most of both). Spreading the blocks keeps the table as free of long
/// runs as a plain hash: with the numbers themselves as buckets, a few thousand calls made
/// together (a restore after a takeover) would fill one run of buckets that every later
/// number landing inside it has to probe past. The tag is a Fibonacci multiple of the
/// number itself, so a block's numbers tell apart by it.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

/// The hash bits the map keeps as a bucket's tag (its top 7).
const TAG_BITS: u64 = 0xFE00_0000_0000_0000;

/// Consecutive numbers that [`IdHasher`] keeps in consecutive buckets: a table group's worth
/// (the map compares 16 tags at a time), 1 KiB of stream entries.
pub const ID_BLOCK: u64 = 16;

const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        let n = self.0 ^ n;
        let within = ID_BLOCK - 1;
        // The product's well-mixed high half, brought down to where the buckets are picked.
        let block = (n / ID_BLOCK).wrapping_mul(FIBONACCI).rotate_left(32);
        let tag = n.wrapping_mul(FIBONACCI) & TAG_BITS;
        self.0 = tag | (block & !(TAG_BITS | within)) | (n & within);
    }
}

/// A map keyed by stream id with [`IdHasher`].
pub type StreamIdMap<V> =
    std::collections::HashMap<StreamId, V, std::hash::BuildHasherDefault<IdHasher>>;

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What the relay knows about one endpoint from signalling. Addresses are packed: the
/// session model keeps one per stream side (memory per stream); `rtp()` and `rtcp_dest()`
/// give them unpacked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSpec {
    /// RTP address from the SDP (`c=` + `m=` port); none while unknown or on hold.
    pub rtp: PackedAddr,
    /// Where RTCP goes when this end does not mux (`a=rtcp` or port+1). Kept while it
    /// muxes, for a later re-offer without mux; [`EndpointSpec::rtcp_dest`] gives the
    /// address in use.
    pub rtcp: PackedAddr,
    pub rtcp_mux: bool,
    pub latch: LatchMode,
    /// Dynamic payload type clock rates from `a=rtpmap` (static ones are known already), in
    /// SDP order. A shared slice (16 bytes, nothing allocated when empty): the two ends of a
    /// stream that map the same types hold one, and the data plane's trackers look up in
    /// that same allocation (memory per held call, issue 19).
    pub clock_rates: crate::rtp::clock::ClockRates,
}

impl EndpointSpec {
    /// An endpoint at these addresses, symmetric latching, no mux, static clock rates only.
    pub fn new(rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) -> EndpointSpec {
        EndpointSpec {
            rtp: PackedAddr::from_option(rtp),
            rtcp: PackedAddr::from_option(rtcp),
            ..EndpointSpec::default()
        }
    }

    pub fn rtp(&self) -> Option<SocketAddr> {
        self.rtp.get()
    }

    /// Where this end receives RTCP now: its RTP address when it muxes.
    pub fn rtcp_dest(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            self.rtp.get()
        } else {
            self.rtcp.get()
        }
    }
}

#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// For logs and events: which call this stream belongs to.
    pub call_id: Arc<str>,
    pub a: EndpointSpec,
    pub b: EndpointSpec,
    /// The relay addresses side A's and side B's sockets are bound on (`None`: the
    /// backend's default address): the two sides may be on two networks.
    pub locals: [Option<std::net::IpAddr>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedStream {
    pub id: StreamId,
    /// The relay ports endpoint A sends to.
    pub a_ports: PortPair,
    /// The relay ports endpoint B sends to.
    pub b_ports: PortPair,
    /// A byte of the padding with one valid value: `Option<OpenedStream>`, kept per media
    /// line, is then 16 bytes, not 24 (memory per held call, issue 19).
    _niche: Niche,
}

/// One value of a byte: the others are free for an enclosing `Option` to mean `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Niche {
    Set = 1,
}

impl OpenedStream {
    pub fn new(id: StreamId, a_ports: PortPair, b_ports: PortPair) -> OpenedStream {
        OpenedStream {
            id,
            a_ports,
            b_ports,
            _niche: Niche::Set,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("data plane unavailable: {0}")]
    Unavailable(String),
}

/// Counters of one relay socket (ingress), summed by the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Packets that were counted but not forwarded or not valid (any drop reason).
    pub errors: u64,
    pub last_packet_ns: Nanos,
}

/// What the endpoints themselves report in RTCP SR/RR blocks about the stream they receive.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RtcpReport {
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub jitter_rtp_units: u32,
    pub reports: u64,
    /// The last block's LSR (middle 32 bits of the NTP time of the SR it answers; 0 = none)
    /// and DLSR (1/65536 s since that SR), and when the relay received it (monotonic ns).
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
    pub report_at_ns: Nanos,
    /// The two newest sender reports this endpoint sent, newest first.
    pub sender_reports: [SenderReportSeen; 2],
}

/// A sender report as the relay saw it pass: the middle 32 bits of its NTP timestamp (what a
/// receiver echoes as LSR) and when it arrived (monotonic ns; 0 = none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderReportSeen {
    pub ntp_mid: u32,
    pub at_ns: Nanos,
}

/// Whether one direction is relayed by the in-kernel fast path and, when not, why not, as the
/// owning worker last decided it (on its housekeeping turns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelStatus {
    /// Not looked at yet (no media since the stream opened, or no fast path at all).
    #[default]
    Pending,
    InKernel,
    /// One of the two ends is not latched yet.
    NotLatched,
    /// No RTP tracked yet in this direction.
    NoRtp,
    /// Taken back by the worker (new source, SSRC, payload type, sequence jump) and not
    /// offered again yet.
    TakenBack,
    /// The payload type's clock rate differs from the one tracked so far.
    ClockRate,
    /// No route to the destination now.
    NoRoute,
    /// Something the program does not handle (IPv6, an address mode it lacks).
    Unsupported,
    /// The kernel map refused the entry (full or out of memory).
    MapFull,
}

impl KernelStatus {
    pub const ALL: [KernelStatus; 9] = [
        KernelStatus::Pending,
        KernelStatus::InKernel,
        KernelStatus::NotLatched,
        KernelStatus::NoRtp,
        KernelStatus::TakenBack,
        KernelStatus::ClockRate,
        KernelStatus::NoRoute,
        KernelStatus::Unsupported,
        KernelStatus::MapFull,
    ];

    /// The status's number in a shared cell (its index in [`KernelStatus::ALL`]).
    pub fn code(self) -> u32 {
        KernelStatus::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or(0) as u32
    }

    /// The status of a code; unknown codes read as `Pending`.
    pub fn from_code(code: u32) -> KernelStatus {
        KernelStatus::ALL
            .get(code as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            KernelStatus::Pending => "pending",
            KernelStatus::InKernel => "in_kernel",
            KernelStatus::NotLatched => "not_latched",
            KernelStatus::NoRtp => "no_rtp",
            KernelStatus::TakenBack => "taken_back",
            KernelStatus::ClockRate => "clock_rate",
            KernelStatus::NoRoute => "no_route",
            KernelStatus::Unsupported => "unsupported",
            KernelStatus::MapFull => "map_full",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SideStats {
    pub rtp: SocketCounters,
    pub rtcp: SocketCounters,
    pub quality: RtpStreamStats,
    /// The source address learned by latching (RTP), if any.
    pub learned_rtp: Option<SocketAddr>,
    pub confirmed: bool,
    pub rtcp_report: RtcpReport,
    /// Where the direction from this side's endpoint is relayed.
    pub kernel: KernelStatus,
    /// Of `rtp.packets`, those the in-kernel path relayed (the rest went through a worker).
    pub kernel_packets: u64,
}

/// The few figures of one direction that a metrics scrape sums over every stream: cheap to
/// read (no derived figures, no RTCP report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideBrief {
    pub lost: i64,
    pub duplicates: u64,
    pub reordered: u64,
    pub kernel: KernelStatus,
}

impl SideBrief {
    pub fn of(s: &SideStats) -> SideBrief {
        SideBrief {
            lost: s.quality.lost,
            duplicates: s.quality.duplicates,
            reordered: s.quality.reordered,
            kernel: s.kernel,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    pub a: SideStats,
    pub b: SideStats,
}

impl StreamStats {
    pub fn side(&self, side: Side) -> &SideStats {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// Most recent packet on any of the four sockets (0 = never).
    pub fn last_packet_ns(&self) -> Nanos {
        [self.a.rtp, self.a.rtcp, self.b.rtp, self.b.rtcp]
            .iter()
            .map(|c| c.last_packet_ns)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchEventKind {
    Learned,
    Confirmed,
    Relearned,
}

/// Reported by the data plane, logged by the control plane (never on the packet path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaEvent {
    pub stream: StreamId,
    pub side: Side,
    pub rtcp: bool,
    pub kind: LatchEventKind,
    pub addr: SocketAddr,
}

/// A stream as the state store kept it, to be opened again on the same ports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RestoredStream {
    pub a_ports: PortPair,
    pub b_ports: PortPair,
    /// Latched RTP sources of side A and B, and whether they were confirmed.
    pub learned: [Option<SocketAddr>; 2],
    pub confirmed: [bool; 2],
    /// Counters the stream had (A RTP, A RTCP, B RTP, B RTCP); reported counters continue
    /// from them.
    pub base: [SocketCounters; 4],
}

/// Implemented by the real data plane and by test fakes.
pub trait MediaBackend: Send {
    /// Binds two port pairs and starts relaying between them.
    fn open(&mut self, spec: StreamSpec, now: Nanos) -> Result<OpenedStream, BackendError>;
    /// Opens a stream on the given ports (a call restored from the state store). Fails
    /// when a port is outside the range, in use, or cannot be bound.
    fn restore(
        &mut self,
        spec: StreamSpec,
        restored: &RestoredStream,
        now: Nanos,
    ) -> Result<OpenedStream, BackendError> {
        let _ = (spec, restored, now);
        Err(BackendError::Unavailable(
            "this backend cannot restore streams".into(),
        ))
    }
    /// New signalling for one side (answer, re-offer): new addresses, latch mode, codecs.
    fn update(&mut self, id: StreamId, side: Side, endpoint: EndpointSpec, now: Nanos);
    /// Signalling settled whether `side`'s endpoint muxes RTCP on its RTP port (an answer
    /// accepted mux, or a re-offer dropped it). While it does (`muxed`), the side's separate
    /// RTCP socket is closed and its port stays reserved (one socket per side); when it no
    /// longer does, the socket is bound again, with `endpoint` as the side's signalling.
    /// Unknown ids are ignored; the default keeps every socket.
    fn settle_rtcp(&mut self, id: StreamId, side: Side, endpoint: &EndpointSpec, muxed: bool) {
        let _ = (id, side, endpoint, muxed);
    }
    /// Stops relaying and frees both port pairs. Unknown ids are ignored.
    fn close(&mut self, id: StreamId);
    /// Current counters; `None` for unknown ids. Never waits for the data plane.
    fn stats(&self, id: StreamId) -> Option<StreamStats>;
    /// Only the socket counters (A RTP, A RTCP, B RTP, B RTCP): what the once-a-second tick
    /// reads of every stream, so it should touch as little memory as possible.
    fn socket_counters(&self, id: StreamId) -> Option<[SocketCounters; 4]> {
        let s = self.stats(id)?;
        Some([s.a.rtp, s.a.rtcp, s.b.rtp, s.b.rtcp])
    }
    /// Brings the records of streams `ids` into the cache before the sweep reads them one
    /// by one: independent look-ups overlap their cache misses, the sweep's own (one after
    /// the other, each behind its branches) do not. Nothing is changed; the default does
    /// nothing.
    fn warm<I>(&self, ids: I)
    where
        I: Iterator<Item = StreamId>,
        Self: Sized,
    {
        let _ = ids;
    }
    /// The socket counters as [`MediaBackend::socket_counters`] and, when `whole` says so
    /// given them, the stream's full [`MediaBackend::stats`]: what the timeout sweep reads of
    /// every stream (the full figures only when a quality sample is due). A backend that can
    /// reads both with one look-up of the stream, and may leave the learned endpoints
    /// (`learned_rtp`, `confirmed`) out of the figures: a quality sample does not read them.
    /// `None` for unknown ids.
    fn sweep_read<F>(
        &self,
        id: StreamId,
        whole: F,
    ) -> Option<([SocketCounters; 4], Option<StreamStats>)>
    where
        F: FnOnce(&[SocketCounters; 4]) -> bool,
        Self: Sized,
    {
        let c = self.socket_counters(id)?;
        let st = if whole(&c) { self.stats(id) } else { None };
        Some((c, st))
    }
    /// Side A's and side B's [`SideBrief`]; `None` for unknown ids. What a scrape reads of
    /// every stream, so it should cost less than [`MediaBackend::stats`].
    fn briefs(&self, id: StreamId) -> Option<[SideBrief; 2]> {
        let s = self.stats(id)?;
        Some([SideBrief::of(&s.a), SideBrief::of(&s.b)])
    }
    /// Next latching event, if any.
    fn poll_event(&mut self) -> Option<MediaEvent>;
    /// The Call-ID an open stream was opened for (its spec's), `None` once it is closed:
    /// how the control side names an event's call.
    fn call_of(&self, id: StreamId) -> Option<Arc<str>>;
    /// (used, total) port pairs on all addresses, for `statistics`.
    fn port_usage(&self) -> (usize, usize);
    /// Port pairs used and in all on each local address (each has the whole range), for
    /// `statistics.interfaces`. Empty when the backend does not count by address.
    fn address_usage(&self) -> Vec<AddressUsage> {
        Vec::new()
    }
    /// Engine-wide counters by name (received, forwarded, each drop reason), for
    /// `statistics`. Summed from the workers when read.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod id_hasher_tests {
    use super::{StreamId, StreamIdMap};
    use std::hash::BuildHasher;

    /// 4,096 ids made together (a restore after a takeover) in a table of 8,192 buckets:
    /// spread by blocks, they do not lie in one run of full buckets, which every later id
    /// landing inside it would probe past.
    #[test]
    fn ids_made_together_do_not_fill_one_run_of_buckets() {
        let streams: StreamIdMap<()> = StreamIdMap::default();
        let h = |n: u64| streams.hasher().hash_one(StreamId::from_raw(n)) & 8191;
        let mut used = vec![false; 8192];
        for n in 1..=4096 {
            used[h(n) as usize] = true;
        }
        let longest = used.split(|u| !u).map(<[bool]>::len).max().unwrap_or(0);
        assert!(longest < 256, "a run of {longest} full buckets");
    }
}
