//! State shared between a worker (single writer) and the control plane (readers).
//!
//! Each stream has one [`StreamShared`] (per side: each socket's [`Counters`], the
//! published RTP quality and the last RTCP report). Only the owning
//! worker writes it, with `Relaxed` load+store pairs (no locked read-modify-write on the
//! packet path); the control plane reads it at any time without waiting for the worker.
//! Multi-field snapshots may be slightly torn, which is fine for statistics.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::rtp::stats::RtpStreamStats;
use crate::session::backend::{
    KernelStatus, RtcpReport, SenderReportSeen, SideBrief, SideStats, SocketCounters, StreamStats,
};

/// Increments a single-writer counter without a locked instruction.
#[inline(always)]
pub fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

/// [`bump`] for a 32-bit counter (wraps).
#[inline(always)]
pub fn bump32(c: &AtomicU32, by: u32) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Ingress counters of one relay socket.
#[derive(Default, Debug)]
pub struct Counters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub last_packet_ns: AtomicU64,
}

impl Counters {
    pub fn read(&self) -> SocketCounters {
        SocketCounters {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            last_packet_ns: self.last_packet_ns.load(Relaxed),
        }
    }
}

/// RTP quality of one direction, published from the worker's tracker on its housekeeping
/// tick (not per packet). Only the tracker's raw figures are kept; what derives from them
/// (loss fraction, jitter in ms) is computed on read, so the cell stays small (memory per
/// stream). Duplicates and reordered packets are held as 32-bit counts, saturating (four
/// billion of either is beyond any real call).
#[derive(Default, Debug)]
pub struct QualityCell {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Expected packets, loss (i32 bits) and the extended highest sequence number are 32-bit
    /// (saturating), as RTCP carries them: four billion packets is 2.7 years at 50 pps, and
    /// the smaller cell keeps the stream's record in a smaller allocator class.
    expected: AtomicU32,
    lost: AtomicU32,
    ext_seq: AtomicU32,
    duplicates: AtomicU32,
    reordered: AtomicU32,
    ssrc: AtomicU32,
    ssrc_changes: AtomicU32,
    jitter_units: AtomicU32,
    max_jitter_units: AtomicU32,
    clock_hz: AtomicU32,
    pt: AtomicU32,
}

fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl QualityCell {
    pub fn publish(&self, s: &RtpStreamStats) {
        self.packets.store(s.packets, Relaxed);
        self.bytes.store(s.bytes, Relaxed);
        self.expected.store(saturate(s.expected), Relaxed);
        let lost = s.lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        self.lost.store(lost as u32, Relaxed);
        self.ext_seq
            .store(saturate(s.extended_highest_seq), Relaxed);
        self.duplicates.store(saturate(s.duplicates), Relaxed);
        self.reordered.store(saturate(s.reordered), Relaxed);
        self.ssrc.store(s.ssrc, Relaxed);
        self.ssrc_changes.store(s.ssrc_changes, Relaxed);
        self.jitter_units.store(s.jitter_rtp_units, Relaxed);
        self.max_jitter_units.store(s.max_jitter_rtp_units, Relaxed);
        self.clock_hz.store(s.clock_rate_hz, Relaxed);
        self.pt.store(u32::from(s.payload_type), Relaxed);
    }

    /// Loss (RFC 3550 A.3, may be negative), duplicates and reordered packets as published.
    pub fn counts(&self) -> (i64, u64, u64) {
        (
            i64::from(self.lost.load(Relaxed) as i32),
            u64::from(self.duplicates.load(Relaxed)),
            u64::from(self.reordered.load(Relaxed)),
        )
    }

    /// The figures as published. `last_rtp_ns` is the time of the socket's last packet
    /// (kept once, in the socket's counters).
    pub fn read(&self, last_rtp_ns: u64) -> RtpStreamStats {
        RtpStreamStats {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            ssrc: self.ssrc.load(Relaxed),
            ssrc_changes: self.ssrc_changes.load(Relaxed),
            payload_type: self.pt.load(Relaxed) as u8,
            extended_highest_seq: u64::from(self.ext_seq.load(Relaxed)),
            expected: u64::from(self.expected.load(Relaxed)),
            lost: i64::from(self.lost.load(Relaxed) as i32),
            duplicates: u64::from(self.duplicates.load(Relaxed)),
            reordered: u64::from(self.reordered.load(Relaxed)),
            jitter_rtp_units: self.jitter_units.load(Relaxed),
            max_jitter_rtp_units: self.max_jitter_units.load(Relaxed),
            clock_rate_hz: self.clock_hz.load(Relaxed),
            last_packet_ns: last_rtp_ns,
            ..RtpStreamStats::default()
        }
        .with_derived()
    }
}

/// The latest RTCP report block an endpoint sent (about the media it receives), and the
/// two latest sender reports it sent with their arrival times: what the control plane needs
/// for the round-trip time (RFC 3550 §6.4.1: `A − LSR − DLSR`, with the relay's own arrival
/// times standing in for `A` and the SR's departure). Written per RTCP packet only.
#[derive(Default, Debug)]
pub struct ReportCell {
    pub fraction_lost: AtomicU32,
    pub cumulative_lost: AtomicU32, // i32 bits
    pub jitter: AtomicU32,
    /// Report blocks seen (wraps after 2^32, years of RTCP at any real rate).
    pub reports: AtomicU32,
    /// The last block's LSR and DLSR. When it arrived is the side's RTCP socket's
    /// `last_packet_ns` (the block came in the endpoint's latest compound packet), which
    /// keeps this cell 8 bytes smaller.
    pub last_sr: AtomicU32,
    pub delay_since_last_sr: AtomicU32,
    /// Middle 32 bits of the NTP timestamps of the two newest SRs (newest first), and when
    /// each arrived.
    pub sr_ntp_mid: [AtomicU32; 2],
    pub sr_at_ns: [AtomicU64; 2],
}

impl ReportCell {
    /// Records a report block.
    #[inline]
    pub fn on_block(&self, rb: &crate::rtp::rtcp::ReportBlock) {
        self.fraction_lost
            .store(u32::from(rb.fraction_lost), Relaxed);
        self.cumulative_lost
            .store(rb.cumulative_lost as u32, Relaxed);
        self.jitter.store(rb.jitter, Relaxed);
        self.last_sr.store(rb.last_sr, Relaxed);
        self.delay_since_last_sr
            .store(rb.delay_since_last_sr, Relaxed);
        bump32(&self.reports, 1);
    }

    /// Records a sender report whose NTP timestamp's middle 32 bits are `ntp_mid`.
    #[inline]
    pub fn on_sender_report(&self, ntp_mid: u32, now: u64) {
        self.sr_ntp_mid[1].store(self.sr_ntp_mid[0].load(Relaxed), Relaxed);
        self.sr_at_ns[1].store(self.sr_at_ns[0].load(Relaxed), Relaxed);
        self.sr_ntp_mid[0].store(ntp_mid, Relaxed);
        self.sr_at_ns[0].store(now, Relaxed);
    }

    /// The report as last written; `report_at_ns` is when its RTCP packet arrived.
    pub fn read(&self, report_at_ns: u64) -> RtcpReport {
        RtcpReport {
            fraction_lost: self.fraction_lost.load(Relaxed) as u8,
            cumulative_lost: self.cumulative_lost.load(Relaxed) as i32,
            jitter_rtp_units: self.jitter.load(Relaxed),
            reports: u64::from(self.reports.load(Relaxed)),
            last_sr: self.last_sr.load(Relaxed),
            delay_since_last_sr: self.delay_since_last_sr.load(Relaxed),
            report_at_ns,
            sender_reports: [0, 1].map(|i| SenderReportSeen {
                ntp_mid: self.sr_ntp_mid[i].load(Relaxed),
                at_ns: self.sr_at_ns[i].load(Relaxed),
            }),
        }
    }
}

/// A record of a stream's shared state that many streams never need, allocated the first
/// time it is: 8 bytes (a pointer) until then, not the record's size (memory per held call,
/// issue 19). Set once, by the command path or the owning worker's housekeeping (never per
/// packet), and freed with the stream's record; readers see `None` (all zero) until it is.
pub struct LazyCell<T> {
    ptr: AtomicPtr<T>,
}

impl<T> Default for LazyCell<T> {
    fn default() -> Self {
        LazyCell {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl<T> std::fmt::Debug for LazyCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() {
            "LazyCell(set)"
        } else {
            "LazyCell(unset)"
        })
    }
}

impl<T> LazyCell<T> {
    /// The record, once allocated.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        let p = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` in `get_or_init` (published
        // with Release, read with Acquire, so the record is initialised) and is freed only in
        // `drop`, which has `&mut self`: no shared borrow of the cell outlives it.
        unsafe { p.as_ref() }
    }
}

impl<T: Default> LazyCell<T> {
    /// The record, allocated now if it was not yet. Not for the per-packet path.
    pub fn get_or_init(&self) -> &T {
        self.get_or_put(Box::<T>::default)
    }
}

impl<T> LazyCell<T> {
    /// The record, set now to what `make` gives if it was not yet: the packet path gives a
    /// record allocated beforehand (the worker's [`Spares`](super::spares::Spares)).
    #[inline]
    pub fn get_or_put(&self, make: impl FnOnce() -> Box<T>) -> &T {
        if let Some(t) = self.get() {
            return t;
        }
        let fresh = Box::into_raw(make());
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        match self
            .ptr
            .compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire)
        {
            // SAFETY: `fresh` is now the cell's (see `get`); it lives until `drop`.
            Ok(_) => unsafe { &*fresh },
            Err(won) => {
                // SAFETY: `fresh` was never published: it is still this call's own box.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: `won` is the published pointer (see `get`).
                unsafe { &*won }
            }
        }
    }
}

impl<T> Drop for LazyCell<T> {
    fn drop(&mut self) {
        let p = std::mem::replace(self.ptr.get_mut(), std::ptr::null_mut());
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` and `&mut self` means no borrow remains.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl LazyCell<QualityCell> {
    /// Publishes a tracker's figures (housekeeping): the cell is allocated on the first
    /// publication, so a stream that never carried RTP has none.
    pub fn publish(&self, s: &RtpStreamStats) {
        self.get_or_init().publish(s);
    }
}

/// What a side's RTCP leaves: its RTCP socket's counters and the last report its endpoint
/// sent (on either socket: a muxing endpoint sends RTCP to the RTP port). 80 bytes, allocated
/// apart on the side's first RTCP packet, from the worker's spares (no allocation on the
/// packet path): a held call that carries no RTCP has none (memory per held call, issue 19).
#[derive(Default, Debug)]
pub struct RtcpCell {
    pub socket: Counters,
    pub report: ReportCell,
}

impl LazyCell<RtcpCell> {
    /// The RTCP socket's counters as read (all zero while there are none).
    pub fn read(&self) -> SocketCounters {
        self.get().map(|c| c.socket.read()).unwrap_or_default()
    }
}

/// Everything readers see of one side: what its endpoint sent to the relay. Its RTCP
/// counters and report are allocated on its first RTCP packet (see [`RtcpCell`]), the
/// quality cell on the first publication (a held call that carries no RTP never has one):
/// a silent stream's record is 128 bytes with its `Arc` counts (224 while the RTCP
/// report was inline and the RTCP counters were allocated with the RTCP socket, 384 while
/// all were inline).
#[derive(Default, Debug)]
pub struct SideShared {
    pub rtp: Counters,
    pub rtcp: LazyCell<RtcpCell>,
    pub quality: LazyCell<QualityCell>,
}

impl SideShared {
    fn stats(&self) -> SideStats {
        let rtcp = self.rtcp.read();
        let rtp_last = self.rtp.last_packet_ns.load(Relaxed);
        SideStats {
            rtp: self.rtp.read(),
            rtcp,
            quality: match self.quality.get() {
                Some(q) => q.read(rtp_last),
                None => RtpStreamStats {
                    last_packet_ns: rtp_last,
                    ..RtpStreamStats::default()
                }
                .with_derived(),
            },
            learned_rtp: None,
            confirmed: false,
            rtcp_report: self
                .rtcp
                .get()
                .map(|c| c.report.read(rtcp.last_packet_ns))
                .unwrap_or_default(),
            kernel: KernelStatus::Pending,
            kernel_packets: 0,
        }
    }
}

/// Both sides of one stream. One allocation per stream: with its `Arc` header 128 bytes, an
/// allocator size class (224 while each side kept its RTCP report inline, 384 while its RTCP
/// counters and quality cell were inline too, 448 while padded to a cache line: memory per
/// call). Two streams' records may share a line
/// at their edges, where this one has the fields written on housekeeping (`kernel`,
/// `locals`) and the next its reference counts.
#[derive(Default, Debug)]
pub struct StreamShared {
    pub sides: [SideShared; 2],
    /// Set by the control plane on close: the worker drops this stream's packets at once
    /// and frees its sockets on its next turn (closing needs no wake-up of its own).
    pub closed: std::sync::atomic::AtomicBool,
    /// [`KernelStatus`] code of each side's RTP direction, written by the worker's
    /// housekeeping. Bytes beside `closed`.
    pub kernel: [AtomicU8; 2],
    /// RTP packets of each side's direction that the in-kernel path relayed (folded in from
    /// the kernel's counts on the worker's housekeeping; saturating). 32 bits, so they too
    /// fit in the alignment padding: four billion packets is 2.7 years of a 50 pps stream.
    pub kernel_packets: [AtomicU32; 2],
    /// Which of the relay's interface addresses (their order in the configuration) side A's
    /// and side B's sockets are bound on ([`NO_LOCAL`]: none known), fixed when the stream
    /// opens: the two sides may be on two networks, and the fast path names each socket by
    /// its address. Two bytes.
    pub locals: [u8; 2],
}

/// `StreamShared::locals` of a side whose address is none of the configured ones.
pub const NO_LOCAL: u8 = u8::MAX;

/// Socket order in a stream's four-slot group.
pub const A_RTP: usize = 0;
pub const A_RTCP: usize = 1;
pub const B_RTP: usize = 2;
pub const B_RTCP: usize = 3;

impl StreamShared {
    /// Reads everything but the learned addresses, which the control side tracks from events.
    pub fn stats(&self) -> StreamStats {
        let mut s = StreamStats {
            a: self.sides[0].stats(),
            b: self.sides[1].stats(),
        };
        s.a.kernel = KernelStatus::from_code(u32::from(self.kernel[0].load(Relaxed)));
        s.b.kernel = KernelStatus::from_code(u32::from(self.kernel[1].load(Relaxed)));
        s.a.kernel_packets = u64::from(self.kernel_packets[0].load(Relaxed));
        s.b.kernel_packets = u64::from(self.kernel_packets[1].load(Relaxed));
        s
    }

    /// What a metrics scrape reads of each side (see [`SideBrief`]).
    pub fn briefs(&self) -> [SideBrief; 2] {
        [0, 1].map(|i| {
            let (lost, duplicates, reordered) = self.sides[i]
                .quality
                .get()
                .map_or((0, 0, 0), QualityCell::counts);
            SideBrief {
                lost,
                duplicates,
                reordered,
                kernel: KernelStatus::from_code(u32::from(self.kernel[i].load(Relaxed))),
            }
        })
    }
}

/// Per-worker counters, one per reason a packet is dropped or noted. Single writer.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct WorkerCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rtcp_packets: AtomicU64,
    /// Too short for RTP, or version != 2 (forwarded unless strict).
    pub malformed_rtp: AtomicU64,
    /// STUN/DTLS/ZRTP/unknown on a media port (forwarded unless strict).
    pub non_rtp: AtomicU64,
    pub malformed_rtcp: AtomicU64,
    pub drop_strict: AtomicU64,
    /// A source other than the confirmed endpoint.
    pub drop_source: AtomicU64,
    /// No address to send to yet (no SDP address, nothing learned).
    pub drop_no_destination: AtomicU64,
    /// The kernel refused the send (send buffer full or error).
    pub drop_send_failed: AtomicU64,
    /// Shed because the worker's send queue was full.
    pub drop_overload: AtomicU64,
    /// Packets for a slot removed in the meantime.
    pub drop_stale: AtomicU64,
    /// Packets whose handling panicked (a bug): dropped, and the worker went on.
    pub drop_panic: AtomicU64,
    /// Panics caught in the worker: packets (as `drop_panic`), commands, housekeeping.
    pub worker_panics: AtomicU64,
    /// Passes of the worker's loop ended by a panic in the engine's I/O code (outside the
    /// guards above): the loop went on with the same sockets and slots.
    pub worker_restarts: AtomicU64,
    /// Dropped by the kernel before the worker read them: a socket's receive queue was full
    /// (`SO_RXQ_OVFL`; learnt from the next datagram that socket delivers).
    pub drop_rcvbuf: AtomicU64,
    pub truncated: AtomicU64,
    /// UDP GSO: sends that carried several datagrams, the datagrams they carried, and those
    /// the kernel refused (their datagrams were then sent one by one).
    pub gso_sends: AtomicU64,
    pub gso_segments: AtomicU64,
    pub gso_failed: AtomicU64,
    pub events_lost: AtomicU64,
    /// RTP trackers and RTCP records a direction's first packet allocated because the
    /// worker's spares had run out (`spares.rs`): the packet path allocated.
    pub spares_short: AtomicU64,
    pub recv_rearms: AtomicU64,
    pub enobufs: AtomicU64,
    /// Multishot receives found stalled (data queued, no completion) and re-armed.
    pub recv_stalls: AtomicU64,
    /// Stall watchdog: queue-length queries made, and those the kernel could not answer
    /// (a socket `uring_cmd` needs Linux 6.7; without it fixed sockets go unwatched).
    pub watch_queries: AtomicU64,
    pub watch_failed: AtomicU64,
    /// io_uring: sockets now held in the ring's fixed-file table (a gauge).
    pub fixed_files: AtomicU64,
    /// io_uring: sockets that stayed plain descriptors (table full or registration failed).
    pub fixed_fallbacks: AtomicU64,
    /// io_uring: sockets connected to their endpoint's locked source, disconnected again
    /// (new signalling, a silence that allows re-learning, a takeover), and connects or
    /// disconnects the kernel refused.
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Packets the in-kernel fast path relayed (also in rx/tx; counted on the worker's
    /// housekeeping ticks), and directions now handed to it (a gauge).
    pub kernel_forwarded: AtomicU64,
    /// Bytes of those packets (UDP payload).
    pub kernel_bytes: AtomicU64,
    pub kernel_streams: AtomicU64,
    /// Directions handed to the fast path, and taken back by the worker.
    pub kernel_handovers: AtomicU64,
    pub kernel_takebacks: AtomicU64,
    /// Packets received in user space and directions taken back, by why.
    pub reasons: crate::dataplane::kernel::reasons::ReasonCounters,
    pub loops: AtomicU64,
}

/// A summed copy of [`WorkerCounters`], for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPlaneTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rtcp_packets: u64,
    pub malformed_rtp: u64,
    pub non_rtp: u64,
    pub malformed_rtcp: u64,
    pub drop_strict: u64,
    pub drop_source: u64,
    pub drop_no_destination: u64,
    pub drop_send_failed: u64,
    pub drop_overload: u64,
    pub drop_stale: u64,
    pub drop_panic: u64,
    pub worker_panics: u64,
    pub worker_restarts: u64,
    pub drop_rcvbuf: u64,
    pub truncated: u64,
    pub gso_sends: u64,
    pub gso_segments: u64,
    pub gso_failed: u64,
    pub events_lost: u64,
    pub spares_short: u64,
    pub recv_rearms: u64,
    pub enobufs: u64,
    pub recv_stalls: u64,
    pub watch_queries: u64,
    pub watch_failed: u64,
    pub fixed_files: u64,
    pub fixed_fallbacks: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub connect_failed: u64,
    pub kernel_forwarded: u64,
    pub kernel_bytes: u64,
    pub kernel_streams: u64,
    pub kernel_handovers: u64,
    pub kernel_takebacks: u64,
    /// Times the program was attached again after an outsider detached it.
    pub kernel_reattached: u64,
    /// Packets the TC program and the XDP program relayed (of `kernel_forwarded`, counted
    /// by the programs themselves), and the devices XDP runs on.
    pub kernel_tc_forwarded: u64,
    pub kernel_xdp_forwarded: u64,
    pub kernel_xdp_devices: u64,
    /// The programs' own run time (ns) and runs, while `kernel.bpf_stats_enabled` is 1.
    pub kernel_program_ns: u64,
    pub kernel_program_runs: u64,
    pub reasons: crate::dataplane::kernel::reasons::ReasonTotals,
}

impl DataPlaneTotals {
    pub fn add(&mut self, c: &WorkerCounters) {
        self.rx_packets += c.rx_packets.load(Relaxed);
        self.rx_bytes += c.rx_bytes.load(Relaxed);
        self.tx_packets += c.tx_packets.load(Relaxed);
        self.tx_bytes += c.tx_bytes.load(Relaxed);
        self.rtcp_packets += c.rtcp_packets.load(Relaxed);
        self.malformed_rtp += c.malformed_rtp.load(Relaxed);
        self.non_rtp += c.non_rtp.load(Relaxed);
        self.malformed_rtcp += c.malformed_rtcp.load(Relaxed);
        self.drop_strict += c.drop_strict.load(Relaxed);
        self.drop_source += c.drop_source.load(Relaxed);
        self.drop_no_destination += c.drop_no_destination.load(Relaxed);
        self.drop_send_failed += c.drop_send_failed.load(Relaxed);
        self.drop_overload += c.drop_overload.load(Relaxed);
        self.drop_stale += c.drop_stale.load(Relaxed);
        self.drop_panic += c.drop_panic.load(Relaxed);
        self.worker_panics += c.worker_panics.load(Relaxed);
        self.worker_restarts += c.worker_restarts.load(Relaxed);
        self.drop_rcvbuf += c.drop_rcvbuf.load(Relaxed);
        self.truncated += c.truncated.load(Relaxed);
        self.gso_sends += c.gso_sends.load(Relaxed);
        self.gso_segments += c.gso_segments.load(Relaxed);
        self.gso_failed += c.gso_failed.load(Relaxed);
        self.events_lost += c.events_lost.load(Relaxed);
        self.spares_short += c.spares_short.load(Relaxed);
        self.recv_rearms += c.recv_rearms.load(Relaxed);
        self.enobufs += c.enobufs.load(Relaxed);
        self.recv_stalls += c.recv_stalls.load(Relaxed);
        self.watch_queries += c.watch_queries.load(Relaxed);
        self.watch_failed += c.watch_failed.load(Relaxed);
        self.fixed_files += c.fixed_files.load(Relaxed);
        self.fixed_fallbacks += c.fixed_fallbacks.load(Relaxed);
        self.connects += c.connects.load(Relaxed);
        self.disconnects += c.disconnects.load(Relaxed);
        self.connect_failed += c.connect_failed.load(Relaxed);
        self.kernel_forwarded += c.kernel_forwarded.load(Relaxed);
        self.kernel_bytes += c.kernel_bytes.load(Relaxed);
        self.kernel_streams += c.kernel_streams.load(Relaxed);
        self.kernel_handovers += c.kernel_handovers.load(Relaxed);
        self.kernel_takebacks += c.kernel_takebacks.load(Relaxed);
        self.reasons.add(&c.reasons);
    }

    /// Every counter with its report name.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut named = vec![
            ("rx_packets", self.rx_packets),
            ("rx_bytes", self.rx_bytes),
            ("tx_packets", self.tx_packets),
            ("tx_bytes", self.tx_bytes),
            ("rtcp_packets", self.rtcp_packets),
            ("malformed_rtp", self.malformed_rtp),
            ("non_rtp", self.non_rtp),
            ("malformed_rtcp", self.malformed_rtcp),
            ("drop_strict", self.drop_strict),
            ("drop_source", self.drop_source),
            ("drop_no_destination", self.drop_no_destination),
            ("drop_send_failed", self.drop_send_failed),
            ("drop_overload", self.drop_overload),
            ("drop_stale", self.drop_stale),
            ("drop_panic", self.drop_panic),
            ("worker_panics", self.worker_panics),
            ("worker_restarts", self.worker_restarts),
            ("drop_rcvbuf", self.drop_rcvbuf),
            ("truncated", self.truncated),
            ("gso_sends", self.gso_sends),
            ("gso_segments", self.gso_segments),
            ("gso_failed", self.gso_failed),
            ("events_lost", self.events_lost),
            ("spares_short", self.spares_short),
            ("recv_rearms", self.recv_rearms),
            ("enobufs", self.enobufs),
            ("recv_stalls", self.recv_stalls),
            ("watch_queries", self.watch_queries),
            ("watch_failed", self.watch_failed),
            ("fixed_files", self.fixed_files),
            ("fixed_fallbacks", self.fixed_fallbacks),
            ("connects", self.connects),
            ("disconnects", self.disconnects),
            ("connect_failed", self.connect_failed),
            ("kernel_forwarded", self.kernel_forwarded),
            ("kernel_bytes", self.kernel_bytes),
            ("kernel_streams", self.kernel_streams),
            ("kernel_handovers", self.kernel_handovers),
            ("kernel_takebacks", self.kernel_takebacks),
            ("kernel_reattached", self.kernel_reattached),
            ("kernel_tc_forwarded", self.kernel_tc_forwarded),
            ("kernel_xdp_forwarded", self.kernel_xdp_forwarded),
            ("kernel_xdp_devices", self.kernel_xdp_devices),
            ("kernel_program_ns", self.kernel_program_ns),
            ("kernel_program_runs", self.kernel_program_runs),
        ];
        named.extend(self.reasons.named());
        named
    }

    /// Every packet received and then dropped, for any reason. Not `drop_rcvbuf`: the kernel
    /// dropped those before they were received (they are not in `rx_packets`).
    pub fn dropped(&self) -> u64 {
        self.drop_strict
            + self.drop_source
            + self.drop_no_destination
            + self.drop_send_failed
            + self.drop_overload
            + self.drop_stale
            + self.drop_panic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::stats::{RtpHeader, RtpStreamTracker};

    /// The cell keeps fewer fields than the snapshot; what it drops must come back on read.
    #[test]
    fn quality_survives_publication() {
        let mut t = RtpStreamTracker::new();
        // 8 kHz, 20 ms packets, one lost (seq 3), one duplicate (seq 5), one late (seq 3 at the end).
        for (i, seq) in [1u16, 2, 4, 5, 5, 6, 3].into_iter().enumerate() {
            let jitter_ns = if i % 2 == 0 { 0 } else { 3_000_000 };
            let header = RtpHeader {
                sequence_number: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 7,
                payload_type: 0,
                len: 172,
            };
            t.on_rtp(
                header,
                1_000_000_000 + i as u64 * 20_000_000 + jitter_ns,
                8_000,
            );
        }
        let snap = t.snapshot();
        assert!(snap.duplicates == 1 && snap.reordered == 1 && snap.jitter_ms > 0.0);
        let cell = QualityCell::default();
        cell.publish(&snap);
        assert_eq!(cell.read(snap.last_packet_ns), snap);

        // Counts beyond 32 bits saturate rather than wrap.
        let mut big = snap;
        big.duplicates = u64::from(u32::MAX) + 5;
        cell.publish(&big);
        assert_eq!(cell.read(0).duplicates, u64::from(u32::MAX));
    }
}
