//! State shared between a worker (single writer) and the control plane (readers).
//!
//! Each relay socket has one cache-line-aligned [`SlotShared`]. Only the owning worker writes
//! it, with `Relaxed` load+store pairs (no locked read-modify-write on the packet path); the
//! control plane reads it at any time without waiting for the worker. Multi-field snapshots
//! may be slightly torn, which is fine for statistics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::rtp::stats::RtpStreamStats;
use crate::session::backend::{RtcpReport, SideStats, SocketCounters, StreamStats};

/// Increments a single-writer counter without a locked instruction.
#[inline(always)]
pub fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

#[derive(Default, Debug)]
#[repr(align(64))]
pub struct SlotShared {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub last_packet_ns: AtomicU64,
    // RTP quality, published from the worker's tracker on its housekeeping tick.
    pub q_packets: AtomicU64,
    pub q_bytes: AtomicU64,
    pub q_expected: AtomicU64,
    pub q_lost: AtomicU64, // i64 bits
    pub q_duplicates: AtomicU64,
    pub q_reordered: AtomicU64,
    pub q_ext_seq: AtomicU64,
    pub q_jitter_ms: AtomicU64,     // f64 bits
    pub q_max_jitter_ms: AtomicU64, // f64 bits
    pub q_loss_fraction: AtomicU64, // f64 bits
    pub q_last_ns: AtomicU64,
    pub q_ssrc: AtomicU32,
    pub q_ssrc_changes: AtomicU32,
    pub q_jitter_units: AtomicU32,
    pub q_clock_hz: AtomicU32,
    pub q_pt: AtomicU32,
    // Latest RTCP report block about this direction's media, as the receiver reported it.
    pub r_fraction_lost: AtomicU32,
    pub r_cumulative_lost: AtomicU32, // i32 bits
    pub r_jitter: AtomicU32,
    pub r_reports: AtomicU64,
}

impl SlotShared {
    pub fn counters(&self) -> SocketCounters {
        SocketCounters {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            last_packet_ns: self.last_packet_ns.load(Relaxed),
        }
    }

    pub fn publish_quality(&self, s: &RtpStreamStats) {
        self.q_packets.store(s.packets, Relaxed);
        self.q_bytes.store(s.bytes, Relaxed);
        self.q_expected.store(s.expected, Relaxed);
        self.q_lost.store(s.lost as u64, Relaxed);
        self.q_duplicates.store(s.duplicates, Relaxed);
        self.q_reordered.store(s.reordered, Relaxed);
        self.q_ext_seq.store(s.extended_highest_seq, Relaxed);
        self.q_jitter_ms.store(s.jitter_ms.to_bits(), Relaxed);
        self.q_max_jitter_ms
            .store(s.max_jitter_ms.to_bits(), Relaxed);
        self.q_loss_fraction
            .store(s.loss_fraction.to_bits(), Relaxed);
        self.q_last_ns.store(s.last_packet_ns, Relaxed);
        self.q_ssrc.store(s.ssrc, Relaxed);
        self.q_ssrc_changes.store(s.ssrc_changes, Relaxed);
        self.q_jitter_units.store(s.jitter_rtp_units, Relaxed);
        self.q_clock_hz.store(s.clock_rate_hz, Relaxed);
        self.q_pt.store(u32::from(s.payload_type), Relaxed);
    }

    pub fn quality(&self) -> RtpStreamStats {
        RtpStreamStats {
            packets: self.q_packets.load(Relaxed),
            bytes: self.q_bytes.load(Relaxed),
            ssrc: self.q_ssrc.load(Relaxed),
            ssrc_changes: self.q_ssrc_changes.load(Relaxed),
            payload_type: self.q_pt.load(Relaxed) as u8,
            extended_highest_seq: self.q_ext_seq.load(Relaxed),
            expected: self.q_expected.load(Relaxed),
            lost: self.q_lost.load(Relaxed) as i64,
            loss_fraction: f64::from_bits(self.q_loss_fraction.load(Relaxed)),
            duplicates: self.q_duplicates.load(Relaxed),
            reordered: self.q_reordered.load(Relaxed),
            jitter_rtp_units: self.q_jitter_units.load(Relaxed),
            jitter_ms: f64::from_bits(self.q_jitter_ms.load(Relaxed)),
            max_jitter_ms: f64::from_bits(self.q_max_jitter_ms.load(Relaxed)),
            clock_rate_hz: self.q_clock_hz.load(Relaxed),
            last_packet_ns: self.q_last_ns.load(Relaxed),
        }
    }

    pub fn rtcp_report(&self) -> RtcpReport {
        RtcpReport {
            fraction_lost: self.r_fraction_lost.load(Relaxed) as u8,
            cumulative_lost: self.r_cumulative_lost.load(Relaxed) as i32,
            jitter_rtp_units: self.r_jitter.load(Relaxed),
            reports: self.r_reports.load(Relaxed),
        }
    }
}

/// Slot order inside [`StreamShared::slots`].
pub const A_RTP: usize = 0;
pub const A_RTCP: usize = 1;
pub const B_RTP: usize = 2;
pub const B_RTCP: usize = 3;

/// The four sockets of one stream (side A RTP/RTCP, side B RTP/RTCP).
#[derive(Default, Debug)]
pub struct StreamShared {
    pub slots: [SlotShared; 4],
}

impl StreamShared {
    /// Reads everything but the learned addresses, which the control side tracks from events.
    pub fn stats(&self) -> StreamStats {
        let side = |rtp: usize, rtcp: usize| SideStats {
            rtp: self.slots[rtp].counters(),
            rtcp: self.slots[rtcp].counters(),
            quality: self.slots[rtp].quality(),
            learned_rtp: None,
            confirmed: false,
            rtcp_report: self.slots[rtcp].rtcp_report(),
        };
        StreamStats {
            a: side(A_RTP, A_RTCP),
            b: side(B_RTP, B_RTCP),
        }
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
    pub truncated: AtomicU64,
    pub events_lost: AtomicU64,
    pub recv_rearms: AtomicU64,
    pub enobufs: AtomicU64,
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
    pub truncated: u64,
    pub events_lost: u64,
    pub recv_rearms: u64,
    pub enobufs: u64,
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
        self.truncated += c.truncated.load(Relaxed);
        self.events_lost += c.events_lost.load(Relaxed);
        self.recv_rearms += c.recv_rearms.load(Relaxed);
        self.enobufs += c.enobufs.load(Relaxed);
    }

    /// Every packet dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drop_strict
            + self.drop_source
            + self.drop_no_destination
            + self.drop_send_failed
            + self.drop_overload
            + self.drop_stale
    }
}
