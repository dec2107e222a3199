//! Per-direction RTP stream quality: counters, loss (RFC 3550 §A.3) and interarrival jitter
//! (RFC 3550 §6.4.1, §A.8).
//!
//! The data plane calls [`RtpStreamTracker::on_rtp`] on every packet, with the header fields
//! it follows ([`RtpHeader`], read once from the packet view): it allocates nothing, cannot
//! panic and has no loop. Time comes in as monotonic nanoseconds.
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

/// What the tracker follows of one RTP packet: its header fields and its length, read once
/// from the checked packet view ([`RtpHeader::of`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpHeader {
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload_type: u8,
    /// The whole packet in bytes: header, payload and padding.
    pub len: usize,
}

impl RtpHeader {
    /// The fields of `packet` (a view checked with [`RtpPacket::new_checked`], or the fields
    /// read are meaningless).
    #[inline]
    pub fn of<T: AsRef<[u8]>>(packet: &RtpPacket<T>) -> RtpHeader {
        RtpHeader {
            sequence_number: packet.sequence_number(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            payload_type: packet.payload_type(),
            len: packet.total_len(),
        }
    }
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
    /// 32-bit (saturating): four billion duplicates is beyond any real call, and the
    /// smaller tracker keeps the memory per stream down.
    duplicates: u32,
    reordered: u32,
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
    pub fn on_rtp(&mut self, header: RtpHeader, arrival_ns: u64, clock_rate_hz: u32) -> SeqVerdict {
        let RtpHeader {
            sequence_number: seq,
            timestamp,
            ssrc,
            payload_type,
            len: bytes,
        } = header;
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(bytes as u64);
        self.last_packet_ns = arrival_ns;
        self.payload_type = payload_type;

        let event = if ssrc != self.ssrc || !self.seq.is_initialized() {
            let first = !self.seq.is_initialized();
            self.ssrc_changes = self.ssrc_changes.saturating_add(u32::from(!first));
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
        self.duplicates = self
            .duplicates
            .saturating_add(u32::from(verdict == SeqVerdict::Duplicate));
        self.reordered = self
            .reordered
            .saturating_add(u32::from(verdict == SeqVerdict::Reordered));

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
        let header = RtpHeader::of(packet);
        let hz = clocks.clock_rate_hz(header.payload_type).unwrap_or(0);
        self.on_rtp(header, arrival_ns, hz)
    }

    /// The tracker as plain figures, for the in-kernel fast path to carry on with; `None`
    /// when it cannot (see [`ExtendedSeq::export`]).
    pub fn export(&self) -> Option<TrackerParts> {
        let (window, cycles, max_seq) = self.seq.export()?;
        Some(TrackerParts {
            window,
            cycles,
            max_seq,
            packets: self.packets,
            bytes: self.bytes,
            received: self.received,
            expected_offset: self.expected_offset,
            duplicates: self.duplicates,
            reordered: self.reordered,
            last_packet_ns: self.last_packet_ns,
            jitter_q4: self.jitter_q4,
            max_jitter_q4: self.max_jitter_q4,
            last_transit: self.last_transit,
            ssrc: self.ssrc,
            ssrc_changes: self.ssrc_changes,
            clock_rate_hz: self.clock_rate_hz,
            payload_type: self.payload_type,
            have_transit: self.have_transit,
        })
    }

    /// Rebuilds a tracker from [`export`](Self::export)ed figures, as the kernel advanced
    /// them.
    pub fn import(p: &TrackerParts) -> RtpStreamTracker {
        RtpStreamTracker {
            seq: ExtendedSeq::import(p.window, p.cycles, p.max_seq),
            packets: p.packets,
            bytes: p.bytes,
            received: p.received,
            expected_offset: p.expected_offset,
            duplicates: p.duplicates,
            reordered: p.reordered,
            last_packet_ns: p.last_packet_ns,
            jitter_q4: p.jitter_q4,
            max_jitter_q4: p.max_jitter_q4,
            last_transit: p.last_transit,
            ssrc: p.ssrc,
            ssrc_changes: p.ssrc_changes,
            clock_rate_hz: p.clock_rate_hz,
            payload_type: p.payload_type,
            have_transit: p.have_transit,
        }
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
            lost: expected.wrapping_sub(self.received as i64),
            duplicates: u64::from(self.duplicates),
            reordered: u64::from(self.reordered),
            jitter_rtp_units: self.jitter_q4 >> 4,
            max_jitter_rtp_units: self.max_jitter_q4 >> 4,
            clock_rate_hz: self.clock_rate_hz,
            last_packet_ns: self.last_packet_ns,
            ..RtpStreamStats::default()
        }
        .with_derived()
    }
}

/// Everything a tracker holds, as plain fields: what the in-kernel fast path copies in
/// when it takes a stream over and back out when it returns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerParts {
    pub window: [u64; 2],
    pub cycles: u32,
    pub max_seq: u16,
    pub packets: u64,
    pub bytes: u64,
    pub received: u64,
    pub expected_offset: i64,
    pub duplicates: u32,
    pub reordered: u32,
    pub last_packet_ns: u64,
    pub jitter_q4: u32,
    pub max_jitter_q4: u32,
    pub last_transit: u32,
    pub ssrc: u32,
    pub ssrc_changes: u32,
    pub clock_rate_hz: u32,
    pub payload_type: u8,
    pub have_transit: bool,
}

impl RtpStreamStats {
    /// Fills in what derives from the counted figures: the loss fraction over the stream
    /// and jitter in ms. (The data plane publishes only the counted ones.)
    pub fn with_derived(mut self) -> RtpStreamStats {
        self.loss_fraction = if self.expected > 0 && self.lost > 0 {
            (self.lost as f64 / self.expected as f64).min(1.0)
        } else {
            0.0
        };
        let hz = self.clock_rate_hz;
        let to_ms = |u: u32| {
            if hz == 0 {
                0.0
            } else {
                f64::from(u) * 1000.0 / f64::from(hz)
            }
        };
        self.jitter_ms = to_ms(self.jitter_rtp_units);
        self.max_jitter_ms = to_ms(self.max_jitter_rtp_units);
        self
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
    /// Highest jitter seen, in timestamp units and in ms.
    pub max_jitter_rtp_units: u32,
    pub max_jitter_ms: f64,
    /// Clock rate of the last packet with a known one (0 if none).
    pub clock_rate_hz: u32,
    /// Arrival time of the last packet, monotonic ns (0 if none).
    pub last_packet_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with these fields, `len` bytes long.
    fn h(
        sequence_number: u16,
        timestamp: u32,
        ssrc: u32,
        payload_type: u8,
        len: usize,
    ) -> RtpHeader {
        RtpHeader {
            sequence_number,
            timestamp,
            ssrc,
            payload_type,
            len,
        }
    }

    const MS: u64 = 1_000_000;
    const DAY: u64 = 86_400 * 1_000_000_000;

    /// Feeds a 20 ms-paced 8 kHz stream (160 units per packet) for each seq in `seqs`.
    fn feed(t: &mut RtpStreamTracker, ssrc: u32, seqs: &[u16]) -> Vec<SeqVerdict> {
        seqs.iter()
            .map(|&s| {
                let ts = u32::from(s).wrapping_mul(160);
                t.on_rtp(h(s, ts, ssrc, 0, 172), DAY + u64::from(s) * 20 * MS, 8_000)
            })
            .collect()
    }

    #[test]
    fn in_order_stream() {
        let mut t = RtpStreamTracker::new();
        assert_eq!(t.snapshot(), RtpStreamStats::default());
        let v = feed(&mut t, 7, &[10, 11, 12, 13]);
        assert!(v.iter().all(|&v| v == SeqVerdict::InOrder));
        let s = t.snapshot();
        assert_eq!(s.packets, 4);
        assert_eq!(s.bytes, 4 * 172);
        assert_eq!(s.ssrc, 7);
        assert_eq!(s.extended_highest_seq, 13);
        assert_eq!(s.expected, 4);
        assert_eq!(s.lost, 0);
        assert_eq!(s.loss_fraction, 0.0);
        assert_eq!(s.jitter_rtp_units, 0, "perfectly paced");
        assert_eq!(s.clock_rate_hz, 8_000);
        assert_eq!(s.last_packet_ns, DAY + 13 * 20 * MS);
        assert_eq!(t.packets(), 4);
        assert_eq!(t.ssrc(), 7);
    }

    #[test]
    fn jitter_hand_computed() {
        // 8 kHz, 20 ms packets (160 units). Arrivals in ms relative to a base 5 days in:
        //
        //  pkt  arrival  ts   arrival units  transit  D    |D|  J (x16, A.8 rounding)   J
        //  0     0 ms     0      0             0      -    -    0                      0
        //  1    20 ms   160    160             0      0    0    0 + 0 - 0        = 0   0
        //  2    41 ms   320    328             8      8    8    0 + 8 - 0        = 8   0
        //  3    60 ms   480    480             0     -8    8    8 + 8 - 1        = 15  0
        //  4    85 ms   640    680            40     40   40   15 + 40 - 1       = 54  3
        //  5   100 ms   800    800             0    -40   40   54 + 40 - 3       = 91  5
        //  6   120 ms   960    960             0      0    0   91 + 0 - 6        = 85  5
        //
        // (x16 update: J16 += |D| - ((J16 + 8) >> 4); reported J = J16 >> 4.)
        // Floating A.8 for comparison: 0, 0.5, 0.97, 3.41, 5.70, 5.34.
        let base = 5 * DAY + 123_456; // sub-ms offset: conversion must stay exact
        let arrivals = [0, 20, 41, 60, 85, 100, 120];
        let want_q4 = [0, 0, 8, 15, 54, 91, 85];
        let mut t = RtpStreamTracker::new();
        for (i, (&ms, &q4)) in arrivals.iter().zip(&want_q4).enumerate() {
            let v = t.on_rtp(
                h(i as u16, i as u32 * 160, 1, 0, 172),
                base + ms * MS,
                8_000,
            );
            assert_eq!(v, SeqVerdict::InOrder);
            assert_eq!(t.jitter_q4, q4, "packet {i}");
            let s = t.snapshot();
            assert_eq!(s.jitter_rtp_units, q4 >> 4);
            assert_eq!(s.jitter_ms, f64::from(s.jitter_rtp_units) * 1000.0 / 8000.0);
        }
        let s = t.snapshot();
        assert_eq!(s.jitter_rtp_units, 5);
        assert_eq!(s.jitter_ms, 0.625);
        assert_eq!(s.max_jitter_ms, 0.625, "peak J16 91 -> 5 units");
    }

    #[test]
    fn max_jitter_tracks_the_peak() {
        let mut t = RtpStreamTracker::new();
        // One 50 ms late packet, then perfect pacing lets the estimate decay.
        let mut arrival = DAY;
        for i in 0..200u16 {
            let late = if i == 10 { 50 * MS } else { 0 };
            t.on_rtp(h(i, u32::from(i) * 160, 1, 0, 172), arrival + late, 8_000);
            arrival += 20 * MS;
        }
        let s = t.snapshot();
        assert!(s.max_jitter_ms > 2.0, "{s:?}");
        assert!(s.jitter_ms < s.max_jitter_ms);
        assert_eq!(s.jitter_rtp_units, 0, "decayed back to 0");
    }

    #[test]
    fn timestamp_and_arrival_wrap_give_no_jitter() {
        // 90 kHz video, 30 days of uptime (arrival units wrap u32 many times), RTP timestamp
        // crossing 2^32, perfectly paced: jitter must stay 0.
        let mut t = RtpStreamTracker::new();
        let start_ts = u32::MAX - 3000 * 5;
        for i in 0..20u32 {
            let ts = start_ts.wrapping_add(i * 3000); // 33.333 ms at 90 kHz
            let arrival = 30 * DAY + u64::from(i) * 100 * MS / 3;
            t.on_rtp(h(i as u16, ts, 9, 96, 1200), arrival, 90_000);
        }
        let s = t.snapshot();
        assert!(s.jitter_rtp_units <= 1, "{s:?}"); // truncation of 1/3 ms at most
        assert!(s.max_jitter_ms < 0.02);
    }

    #[test]
    fn unknown_clock_leaves_jitter_alone() {
        let mut t = RtpStreamTracker::new();
        for i in 0..10u16 {
            // Wildly irregular arrivals, but clock rate unknown.
            t.on_rtp(
                h(i, u32::from(i) * 160, 1, 99, 100),
                DAY + u64::from(i * i) * 7 * MS,
                0,
            );
        }
        let s = t.snapshot();
        assert_eq!((s.jitter_rtp_units, s.clock_rate_hz), (0, 0));
        assert_eq!(s.jitter_ms, 0.0);
        assert_eq!(s.packets, 10);
    }

    #[test]
    fn clock_change_rescales() {
        let mut t = RtpStreamTracker::new();
        t.jitter_q4 = 16 * 80; // 80 units at 8 kHz = 10 ms
        t.max_jitter_q4 = 16 * 160;
        t.clock_rate_hz = 8_000;
        t.change_clock(48_000);
        let s = t.snapshot();
        assert_eq!(s.jitter_rtp_units, 480);
        assert_eq!(s.jitter_ms, 10.0);
        assert_eq!(s.max_jitter_ms, 20.0);
        assert!(!t.have_transit);
    }

    #[test]
    fn loss_gap_late_and_duplicates() {
        let mut t = RtpStreamTracker::new();
        let v = feed(&mut t, 1, &[100, 101, 104, 105]);
        assert_eq!(v[2], SeqVerdict::Gap);
        let s = t.snapshot();
        assert_eq!((s.expected, s.lost), (6, 2));
        assert!((s.loss_fraction - 2.0 / 6.0).abs() < 1e-12);
        // 102 arrives late: one fewer lost.
        assert_eq!(feed(&mut t, 1, &[102]), [SeqVerdict::Reordered]);
        // RFC 4733 end-of-event packets repeat a sequence number: duplicates.
        assert_eq!(
            feed(&mut t, 1, &[105, 105, 102]),
            [SeqVerdict::Duplicate; 3]
        );
        let s = t.snapshot();
        assert_eq!(s.packets, 8);
        assert_eq!(s.duplicates, 3);
        assert_eq!(s.reordered, 1);
        assert_eq!((s.expected, s.lost), (6, 1), "duplicates are not received");
        assert_eq!(s.extended_highest_seq, 105);
    }

    #[test]
    fn wraps_and_late_packet_before_wrap() {
        let mut t = RtpStreamTracker::new();
        let mut seq = 65_000u16;
        let mut n = 0u64;
        // Three wraps.
        while n < 3 * 65_536 {
            feed(&mut t, 5, &[seq]);
            seq = seq.wrapping_add(1);
            n += 1;
        }
        let s = t.snapshot();
        assert_eq!(s.extended_highest_seq, 65_000 + n - 1);
        assert_eq!(s.expected, n);
        assert_eq!(s.lost, 0);
        // Skip 2 across the next wrap, then the skipped one from before the wrap arrives.
        let mut t = RtpStreamTracker::new();
        assert_eq!(
            feed(&mut t, 5, &[65_533, 65_534, 0, 1]),
            [
                SeqVerdict::InOrder,
                SeqVerdict::InOrder,
                SeqVerdict::Gap,
                SeqVerdict::InOrder
            ]
        );
        assert_eq!(feed(&mut t, 5, &[65_535]), [SeqVerdict::Reordered]);
        let s = t.snapshot();
        assert_eq!(s.extended_highest_seq, 65_536 + 1);
        assert_eq!((s.expected, s.lost, s.reordered), (5, 0, 1));
    }

    #[test]
    fn big_jump_restarts_after_two_packets() {
        let mut t = RtpStreamTracker::new();
        feed(&mut t, 3, &[1, 2, 3, 5]); // expected 5, lost 1
        assert_eq!(feed(&mut t, 3, &[20_000]), [SeqVerdict::Gap]);
        let s = t.snapshot();
        assert_eq!(
            (s.expected, s.lost, s.packets),
            (5, 1, 5),
            "jump not counted yet"
        );
        assert_eq!(
            feed(&mut t, 3, &[20_001, 20_002]),
            [SeqVerdict::Restart, SeqVerdict::InOrder]
        );
        let s = t.snapshot();
        assert_eq!(s.extended_highest_seq, 20_002, "re-based epoch");
        assert_eq!((s.expected, s.lost), (7, 1), "loss carried over");
        assert_eq!(s.packets, 7);
        assert_eq!(s.ssrc_changes, 0);
        // A stray far-behind packet is reported as reordered, not counted.
        assert_eq!(feed(&mut t, 3, &[15_002]), [SeqVerdict::Reordered]);
        assert_eq!(t.snapshot().expected, 7);
    }

    #[test]
    fn ssrc_change_rebases() {
        let mut t = RtpStreamTracker::new();
        feed(&mut t, 0xaaaa, &[10, 11, 13]); // expected 4, lost 1
        t.jitter_q4 = 1000;
        t.max_jitter_q4 = 1000;
        let v = t.on_rtp(h(500, 0, 0xbbbb, 8, 172), 2 * DAY, 8_000);
        assert_eq!(v, SeqVerdict::Restart);
        let s = t.snapshot();
        assert_eq!(s.ssrc, 0xbbbb);
        assert_eq!(s.ssrc_changes, 1);
        assert_eq!(s.packets, 4);
        assert_eq!(s.bytes, 4 * 172);
        assert_eq!(s.payload_type, 8);
        assert_eq!(s.extended_highest_seq, 500);
        assert_eq!((s.expected, s.lost), (5, 1));
        assert_eq!(s.jitter_rtp_units, 0, "jitter re-based");
        assert_eq!(s.max_jitter_ms, 62.0 * 1000.0 / 8000.0, "max kept");
        assert_eq!(
            t.on_rtp(h(501, 160, 0xbbbb, 8, 172), 2 * DAY + 20 * MS, 8_000),
            SeqVerdict::InOrder
        );
        assert_eq!(t.snapshot().jitter_rtp_units, 0);
        // SSRC 0 as the very first source is not a change.
        let mut t = RtpStreamTracker::new();
        assert_eq!(feed(&mut t, 0, &[1]), [SeqVerdict::InOrder]);
        assert_eq!(t.snapshot().ssrc_changes, 0);
    }

    #[test]
    fn on_rtp_packet_uses_clock_map() {
        let pkt = [
            0x80, 111, 0x00, 0x07, 0x00, 0x00, 0x03, 0xc0, 0x00, 0x00, 0x00, 0x2a, 1, 2, 3,
        ];
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        let mut clocks = ClockRateMap::new();
        clocks.insert(111, 48_000);
        let mut t = RtpStreamTracker::new();
        assert_eq!(t.on_rtp_packet(&p, DAY, &clocks), SeqVerdict::InOrder);
        let s = t.snapshot();
        assert_eq!((s.ssrc, s.payload_type, s.bytes), (42, 111, 15));
        assert_eq!((s.extended_highest_seq, s.clock_rate_hz), (7, 48_000));
    }

    #[test]
    fn small_and_copy_free() {
        assert!(core::mem::size_of::<RtpStreamTracker>() <= 128);
        let t = RtpStreamTracker::default();
        assert_eq!(t.snapshot(), RtpStreamTracker::new().snapshot());
    }

    #[test]
    fn hostile_input_keeps_invariants() {
        // Deterministic pseudo-random soup of sequence numbers, SSRCs, timestamps, clocks
        // and arrival times (including going backwards): no panic, invariants hold.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = RtpStreamTracker::new();
        for _ in 0..50_000 {
            let r = next();
            let seq = r as u16;
            let ssrc = if r >> 60 == 0 { (r >> 20) as u32 } else { 1 };
            let clock = [0, 8_000, 90_000, u32::MAX][(r >> 40) as usize & 3];
            let arrival = if r >> 63 == 0 {
                next()
            } else {
                u64::MAX - (r & 0xffff)
            };
            t.on_rtp(
                h(seq, (r >> 16) as u32, ssrc, (r >> 50) as u8, r as usize),
                arrival,
                clock,
            );
            let s = t.snapshot();
            assert!((0.0..=1.0).contains(&s.loss_fraction));
            assert!(s.jitter_ms.is_finite() && s.max_jitter_ms >= s.jitter_ms);
            assert_eq!(
                s.expected as i64 - s.lost,
                t.received as i64,
                "expected - lost = received"
            );
        }
        assert_eq!(t.snapshot().packets, 50_000);
    }

    #[test]
    fn export_then_import_carries_on_as_if_never_moved() {
        let mut whole = RtpStreamTracker::new();
        let mut first = RtpStreamTracker::new();
        let seqs: [u16; 10] = [65530, 65531, 65533, 65532, 65532, 65535, 0, 2, 1, 5];
        for (i, &q) in seqs.iter().enumerate() {
            let t = (i as u64) * 20 * MS + (i as u64 % 3) * MS;
            let ts = (i as u32) * 160;
            whole.on_rtp(h(q, ts, 7, 0, 172), t, 8_000);
            if i < 5 {
                first.on_rtp(h(q, ts, 7, 0, 172), t, 8_000);
            }
            if i == 4 {
                let parts = first.export().expect("initialised, no pending jump");
                first = RtpStreamTracker::import(&parts);
            } else if i > 4 {
                first.on_rtp(h(q, ts, 7, 0, 172), t, 8_000);
            }
        }
        assert_eq!(first.snapshot(), whole.snapshot());
        assert_eq!(first.export(), whole.export());
    }

    #[test]
    fn a_tracker_with_nothing_seen_or_a_pending_jump_does_not_export() {
        let mut t = RtpStreamTracker::new();
        assert!(t.export().is_none());
        t.on_rtp(h(100, 0, 1, 0, 172), MS, 8_000);
        assert!(t.export().is_some());
        t.on_rtp(h(30_000, 160, 1, 0, 172), 2 * MS, 8_000);
        assert!(
            t.export().is_none(),
            "a big jump waits for its confirming packet"
        );
        t.on_rtp(h(30_001, 320, 1, 0, 172), 3 * MS, 8_000);
        assert!(t.export().is_some());
    }
}
