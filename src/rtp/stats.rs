//! Per-direction RTP stream quality: counters, loss (RFC 3550 §A.3) and interarrival jitter
//! (RFC 3550 §6.4.1, §A.8).
//!
//! The data plane calls [`RtpStreamTracker::on_rtp`] on every packet: it allocates nothing,
//! cannot panic and has no loop. Time comes in as monotonic nanoseconds.
//!
//! Contract:
//! - `packets`/`bytes` count every RTP packet handed in, duplicates included.
//! - Loss: `expected = extended_max - base_seq + 1`, `lost = expected - received`, where
//!   `received` counts unique packets accepted by the sequence state ([`super::seq`]):
//!   duplicates and the unconfirmed first packet of a big jump do not count. `lost` may go
//!   negative (late packets from before the base), as A.3 allows.
//! - Re-basing (SSRC change, or a big sequence jump confirmed by two consecutive packets)
//!   starts new sequence and jitter state on the new packet (`extended_highest_seq` restarts,
//!   jitter restarts at 0). `expected` and `lost` fold the previous epoch in, so they and
//!   `loss_fraction` stay cumulative over the whole stream, as do `packets`, `bytes`,
//!   `duplicates`, `reordered` and `max_jitter_ms`. An SSRC change also bumps
//!   `ssrc_changes`. The tracker follows one source at a time: a port that interleaves two
//!   SSRCs re-bases on every switch, so track those per SSRC.
//! - Jitter (A.8): `D = (Rj - Ri) - (Sj - Si)` in timestamp units, with arrival time
//!   converted to timestamp units at the packet's clock rate, `J += (|D| - J) / 16`. Kept in
//!   fixed point (x16, rounded as in A.8). Arrival units are computed modulo 2^32 from the
//!   absolute nanosecond time (exact, never overflows, whatever the uptime) and differences
//!   use wrapping arithmetic, so neither arrival nor RTP timestamp wrap-around disturbs D.
//!   Jitter is updated for every accepted unique packet with a known clock rate (0 = unknown:
//!   skipped). When the clock rate changes (payload type switch) the estimate is rescaled to
//!   the new units and the next packet only sets the reference. One |D| is capped at 2^27
//!   units (25 min at 90 kHz): beyond that it is a discontinuity, and the cap keeps the
//!   fixed-point state within `u32`.

use super::clock::ClockRateMap;
use super::packet::RtpPacket;
use super::seq::{ExtendedSeq, SeqEvent};

pub use super::seq::SeqVerdict;

/// Largest |D| one packet may add to the jitter estimate, in timestamp units.
const MAX_JITTER_STEP: u32 = 1 << 27;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Arrival time in timestamp units, modulo 2^32. Exact: `floor(ns * hz / 1e9) mod 2^32`
/// (the whole-second part is an integer multiple of `hz`, so splitting loses nothing and
/// `rem * hz < 1e9 * 2^32 < 2^64`).
#[inline]
fn ns_to_units(ns: u64, hz: u32) -> u32 {
    let hz = u64::from(hz);
    let secs = ns / NANOS_PER_SEC;
    let rem = ns % NANOS_PER_SEC;
    secs.wrapping_mul(hz).wrapping_add(rem * hz / NANOS_PER_SEC) as u32
}

/// Quality state of one direction of one RTP stream. 128 bytes, no heap.
#[derive(Clone, Debug, Default)]
pub struct RtpStreamTracker {
    seq: ExtendedSeq,
    packets: u64,
    bytes: u64,
    /// Unique accepted packets, cumulative over re-bases.
    received: u64,
    /// Cumulative expected = `seq.extended_max() + expected_offset`.
    expected_offset: i64,
    duplicates: u64,
    reordered: u64,
    last_packet_ns: u64,
    /// Jitter x16 (A.8 fixed point), in units of `clock_rate_hz`.
    jitter_q4: u32,
    max_jitter_q4: u32,
    last_transit: u32,
    ssrc: u32,
    ssrc_changes: u32,
    clock_rate_hz: u32,
    payload_type: u8,
    have_transit: bool,
}

impl RtpStreamTracker {
    pub const fn new() -> Self {
        RtpStreamTracker {
            seq: ExtendedSeq::new(),
            packets: 0,
            bytes: 0,
            received: 0,
            expected_offset: 0,
            duplicates: 0,
            reordered: 0,
            last_packet_ns: 0,
            jitter_q4: 0,
            max_jitter_q4: 0,
            last_transit: 0,
            ssrc: 0,
            ssrc_changes: 0,
            clock_rate_hz: 0,
            payload_type: 0,
            have_transit: false,
        }
    }

    /// Cumulative expected packet count.
    #[inline]
    fn expected_total(&self) -> i64 {
        (self.seq.extended_max() as i64).wrapping_add(self.expected_offset)
    }

    /// Starts a new epoch on `seq`, carrying the expected count of the previous one.
    #[inline]
    fn rebase(&mut self, carried_expected: i64, seq: u16) {
        self.seq.reset_to(seq);
        self.expected_offset = carried_expected - i64::from(seq) + 1;
        self.jitter_q4 = 0;
        self.have_transit = false;
    }

    #[cold]
    fn change_clock(&mut self, hz: u32) {
        let old = self.clock_rate_hz;
        if old != 0 {
            let rescale = |q4: u32| {
                let v = u64::from(q4) * u64::from(hz) / u64::from(old);
                v.min(u64::from(MAX_JITTER_STEP) * 16) as u32
            };
            self.jitter_q4 = rescale(self.jitter_q4);
            self.max_jitter_q4 = rescale(self.max_jitter_q4);
        }
        self.clock_rate_hz = hz;
        self.have_transit = false;
    }

    /// One received RTP packet. `arrival_ns`: monotonic ns; `clock_rate_hz`: 0 when unknown
    /// (then jitter is not updated). Returns how the sequence number relates to the ones seen.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn on_rtp(
        &mut self,
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        payload_type: u8,
        bytes: usize,
        arrival_ns: u64,
        clock_rate_hz: u32,
    ) -> SeqVerdict {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(bytes as u64);
        self.last_packet_ns = arrival_ns;
        self.payload_type = payload_type;

        let event = if ssrc != self.ssrc || !self.seq.is_initialized() {
            let first = !self.seq.is_initialized();
            self.ssrc_changes += u32::from(!first);
            self.ssrc = ssrc;
            self.rebase(self.expected_total(), seq);
            if first {
                SeqEvent::First
            } else {
                SeqEvent::Restart
            }
        } else {
            let carried = self.expected_total();
            let event = self.seq.update(seq);
            if event == SeqEvent::Restart {
                self.rebase(carried, seq);
            }
            event
        };

        let verdict = event.verdict();
        let received = event.is_received();
        self.received += u64::from(received);
        self.duplicates += u64::from(verdict == SeqVerdict::Duplicate);
        self.reordered += u64::from(verdict == SeqVerdict::Reordered);

        if received && clock_rate_hz != 0 {
            if clock_rate_hz != self.clock_rate_hz {
                self.change_clock(clock_rate_hz);
            }
            let transit = ns_to_units(arrival_ns, clock_rate_hz).wrapping_sub(timestamp);
            if self.have_transit {
                let d = transit.wrapping_sub(self.last_transit) as i32;
                let d = d.unsigned_abs().min(MAX_JITTER_STEP);
                // J += (|D| - J) / 16 with J kept x16, rounded as in A.8.
                let j = self.jitter_q4;
                self.jitter_q4 = j.saturating_add(d).saturating_sub((j + 8) >> 4);
                self.max_jitter_q4 = self.max_jitter_q4.max(self.jitter_q4);
            }
            self.last_transit = transit;
            self.have_transit = true;
        }
        verdict
    }

    /// `on_rtp` for a parsed packet, with the clock rate looked up in `clocks`.
    #[inline]
    pub fn on_rtp_packet<T: AsRef<[u8]>>(
        &mut self,
        packet: &RtpPacket<T>,
        arrival_ns: u64,
        clocks: &ClockRateMap,
    ) -> SeqVerdict {
        let pt = packet.payload_type();
        self.on_rtp(
            packet.sequence_number(),
            packet.timestamp(),
            packet.ssrc(),
            pt,
            packet.total_len(),
            arrival_ns,
            clocks.clock_rate_hz(pt).unwrap_or(0),
        )
    }

    /// Packets seen so far (duplicates included).
    #[inline]
    pub const fn packets(&self) -> u64 {
        self.packets
    }

    /// Current SSRC (0 before the first packet).
    #[inline]
    pub const fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Arrival time of the last packet (0 before the first packet).
    #[inline]
    pub const fn last_packet_ns(&self) -> u64 {
        self.last_packet_ns
    }

    /// Current figures.
    pub fn snapshot(&self) -> RtpStreamStats {
        let expected = self.expected_total().max(0);
        let lost = expected.wrapping_sub(self.received as i64);
        let loss_fraction = if expected > 0 && lost > 0 {
            (lost as f64 / expected as f64).min(1.0)
        } else {
            0.0
        };
        let units = self.jitter_q4 >> 4;
        let max_units = self.max_jitter_q4 >> 4;
        let to_ms = |u: u32| {
            if self.clock_rate_hz == 0 {
                0.0
            } else {
                f64::from(u) * 1000.0 / f64::from(self.clock_rate_hz)
            }
        };
        RtpStreamStats {
            packets: self.packets,
            bytes: self.bytes,
            ssrc: self.ssrc,
            ssrc_changes: self.ssrc_changes,
            payload_type: self.payload_type,
            extended_highest_seq: if self.seq.is_initialized() {
                self.seq.extended_max()
            } else {
                0
            },
            expected: expected as u64,
            lost,
            loss_fraction,
            duplicates: self.duplicates,
            reordered: self.reordered,
            jitter_rtp_units: units,
            jitter_ms: to_ms(units),
            max_jitter_ms: to_ms(max_units),
            clock_rate_hz: self.clock_rate_hz,
            last_packet_ns: self.last_packet_ns,
        }
    }
}

/// A snapshot of one stream direction's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RtpStreamStats {
    /// Every RTP packet seen, duplicates included.
    pub packets: u64,
    pub bytes: u64,
    /// Current SSRC.
    pub ssrc: u32,
    /// How often the SSRC changed after the first packet.
    pub ssrc_changes: u32,
    /// Payload type of the last packet.
    pub payload_type: u8,
    /// Highest extended sequence number of the current epoch (see module docs).
    pub extended_highest_seq: u64,
    /// Packets expected, cumulative over the stream.
    pub expected: u64,
    /// `expected - received` (unique), cumulative, RFC 3550 A.3; may be negative.
    pub lost: i64,
    /// `lost / expected` over the stream, clamped to 0..=1.
    pub loss_fraction: f64,
    pub duplicates: u64,
    /// Packets older than the highest seen and not duplicates.
    pub reordered: u64,
    /// Interarrival jitter (A.8) in timestamp units.
    pub jitter_rtp_units: u32,
    /// `jitter_rtp_units * 1000 / clock_rate_hz` (0 when the clock rate is unknown).
    pub jitter_ms: f64,
    /// Highest jitter seen, in ms.
    pub max_jitter_ms: f64,
    /// Clock rate of the last packet with a known one (0 if none).
    pub clock_rate_hz: u32,
    /// Arrival time of the last packet, monotonic ns (0 if none).
    pub last_packet_ns: u64,
}
