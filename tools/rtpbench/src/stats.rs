//! Pure parts of the measurement: the benchmark packet layout, per-flow sequence accounting
//! (loss, reordering, duplicates), RFC 3550 interarrival jitter and latency percentiles.
//! No clock reads here: times are passed in as nanoseconds.
//!
//! Packet (172 bytes, like 20 ms of PCMU): a 12-byte RTP header (RFC 3550 section 5.1:
//! V=2, PT 0, sequence +1 and timestamp +160 per packet, one SSRC per flow) and a 160-byte
//! payload that starts with a 28-byte stamp, the rest being PCMU silence (0xFF):
//! `magic "RBv1" | step u32 | flow u32 | seq u64 | sent CLOCK_MONOTONIC ns u64` (big endian).
//! With `--webrtc-ext` the header carries what WebRTC audio sends (RFC 8285 one-byte
//! headers: audio level and abs-send-time, 12 bytes in all) and the packet is 184 bytes.

use hdrhistogram::Histogram;
use rtpanchor::rtp::{RtpPacket, RtpRepr};
use serde::Serialize;

pub use rtpanchor::rtp::RTP_HEADER_LEN;
pub const PAYLOAD_LEN: usize = 160;
pub const PACKET_LEN: usize = RTP_HEADER_LEN + PAYLOAD_LEN;
/// The header extension of `--webrtc-ext`: 0xBEDE, 2 words; audio level (id 1, 1 byte),
/// abs-send-time (id 3, 3 bytes), 2 bytes of padding.
const WEBRTC_EXT: [u8; 12] = [0xbe, 0xde, 0, 2, 0x10, 0x7f, 0x32, 0, 0, 0, 0, 0];
/// The longest packet: with the extension.
pub const MAX_PACKET_LEN: usize = PACKET_LEN + WEBRTC_EXT.len();

/// The packet length with or without the WebRTC-like extension.
pub fn packet_len(ext: bool) -> usize {
    if ext {
        MAX_PACKET_LEN
    } else {
        PACKET_LEN
    }
}

/// Where the payload starts: after the fixed header and any extension (its length word);
/// `None` when the extension runs past `buf`.
fn payload_at(buf: &[u8]) -> Option<usize> {
    let b0 = *buf.first()?;
    if b0 & 0x10 == 0 {
        return Some(RTP_HEADER_LEN);
    }
    let words = u16::from_be_bytes([*buf.get(14)?, *buf.get(15)?]);
    Some(RTP_HEADER_LEN + 4 + 4 * usize::from(words))
}
pub const PT_PCMU: u8 = 0;
pub const SAMPLES_PER_PACKET: u32 = 160;
const MAGIC: [u8; 4] = *b"RBv1";
const STAMP_LEN: usize = 28;

/// What the payload carries besides audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Measurement step (one rate of a ladder); packets of older steps are ignored.
    pub step: u32,
    /// Flow index: `2 * call + direction` (0 = caller -> callee).
    pub flow: u32,
    /// Per-flow, per-step sequence, from 0.
    pub seq: u64,
    /// CLOCK_MONOTONIC at send time.
    pub sent_ns: u64,
}

/// Fills a whole packet buffer (`buf.len() >= PACKET_LEN`) once: header fields that never
/// change and the silence payload.
pub fn init_packet(buf: &mut [u8], ssrc: u32, ext: bool) {
    buf[..packet_len(ext)].fill(0xFF);
    // V=2, no padding, CSRC or marker; sequence and timestamp come per packet.
    let _ = RtpRepr::new(PT_PCMU, 0, 0, ssrc).emit(buf); // fits: buf holds PACKET_LEN
    let mut at = RTP_HEADER_LEN;
    if ext {
        buf[0] |= 0x10;
        buf[at..at + WEBRTC_EXT.len()].copy_from_slice(&WEBRTC_EXT);
        at += WEBRTC_EXT.len();
    }
    buf[at..at + 4].copy_from_slice(&MAGIC);
}

/// Writes the per-packet fields into a buffer prepared by [`init_packet`].
pub fn stamp_packet(buf: &mut [u8], rtp_seq: u16, rtp_ts: u32, stamp: &Stamp) {
    let mut rtp = RtpPacket::new_unchecked(&mut *buf);
    rtp.set_sequence_number(rtp_seq);
    rtp.set_timestamp(rtp_ts);
    let at = payload_at(buf).unwrap_or(RTP_HEADER_LEN);
    let p = &mut buf[at + 4..at + STAMP_LEN];
    p[0..4].copy_from_slice(&stamp.step.to_be_bytes());
    p[4..8].copy_from_slice(&stamp.flow.to_be_bytes());
    p[8..16].copy_from_slice(&stamp.seq.to_be_bytes());
    p[16..24].copy_from_slice(&stamp.sent_ns.to_be_bytes());
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Reads the stamp of a received datagram; `None` for anything that is not ours.
pub fn read_stamp(pkt: &[u8]) -> Option<Stamp> {
    let at = payload_at(pkt)?;
    if pkt.len() < at + STAMP_LEN || RtpPacket::new_unchecked(pkt).version() != 2 {
        return None;
    }
    let p = &pkt[at..at + STAMP_LEN];
    if p[0..4] != MAGIC {
        return None;
    }
    Some(Stamp {
        step: be_u32(&p[4..8]),
        flow: be_u32(&p[8..12]),
        seq: be_u64(&p[12..20]),
        sent_ns: be_u64(&p[20..28]),
    })
}

const WINDOW_BITS: u64 = 1024;

/// How one arrival was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Highest sequence so far (possibly after a gap).
    InOrder,
    /// Older than the highest, first copy.
    Reordered,
    /// A sequence already received (within the last 1024).
    Duplicate,
    /// Older than the duplicate window: counted as reordered, assumed unique.
    TooOld,
}

/// Receive-side accounting of one flow within one step.
#[derive(Debug, Clone)]
pub struct FlowRx {
    highest: Option<u64>,
    /// 1024-bit history of received sequences (bit `seq % 1024`) for duplicate detection.
    window: [u64; (WINDOW_BITS / 64) as usize],
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// RFC 3550 jitter estimate in nanoseconds (J in section 6.4.1, in ns not timestamp units).
    pub jitter_ns: f64,
    last_transit: Option<i64>,
}

impl Default for FlowRx {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowRx {
    pub fn new() -> Self {
        Self {
            highest: None,
            window: [0; (WINDOW_BITS / 64) as usize],
            unique: 0,
            duplicates: 0,
            reordered: 0,
            jitter_ns: 0.0,
            last_transit: None,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let b = seq % WINDOW_BITS;
        ((b / 64) as usize, 1u64 << (b % 64))
    }

    /// Accounts one packet with per-flow sequence `seq`, sent at `sent_ns`, received at
    /// `recv_ns`.
    pub fn on_packet(&mut self, seq: u64, sent_ns: u64, recv_ns: u64) -> Arrival {
        let kind = match self.highest {
            None => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
            Some(h) if seq > h => {
                // Forget the sequences that the window slides past.
                let steps = (seq - h).min(WINDOW_BITS);
                for s in (seq + 1 - steps)..=seq {
                    let (w, m) = Self::bit(s);
                    self.window[w] &= !m;
                }
                self.highest = Some(seq);
                Arrival::InOrder
            }
            Some(h) if h - seq >= WINDOW_BITS => Arrival::TooOld,
            Some(_) => {
                let (w, m) = Self::bit(seq);
                if self.window[w] & m != 0 {
                    Arrival::Duplicate
                } else {
                    Arrival::Reordered
                }
            }
        };
        if kind == Arrival::Duplicate {
            self.duplicates += 1;
            return kind;
        }
        let (w, m) = Self::bit(seq);
        self.window[w] |= m;
        self.unique += 1;
        if kind != Arrival::InOrder {
            self.reordered += 1;
        }
        // RFC 3550 6.4.1: D = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16, in arrival order.
        let transit = recv_ns as i64 - sent_ns as i64;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit = Some(transit);
        kind
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// A nanosecond latency histogram: 1 ns .. 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}

/// Percentiles of a nanosecond histogram, in microseconds (all 0 when empty).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Percentiles {
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
    }
}

/// Loss in percent of `sent`, never negative (duplicates do not hide loss: `unique` counts
/// each sequence once).
pub fn loss_pct(sent: u64, unique: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(unique) as f64 * 100.0 / sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip_and_rtp_header() {
        let mut buf = [0u8; PACKET_LEN];
        init_packet(&mut buf, 0xDEADBEEF, false);
        let st = Stamp {
            step: 3,
            flow: 17,
            seq: 123_456,
            sent_ns: 987_654_321_000,
        };
        stamp_packet(&mut buf, 65535, 160 * 9, &st);
        assert_eq!(read_stamp(&buf), Some(st));
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf[1], 0);
        assert_eq!(&buf[2..4], &[0xFF, 0xFF]);
        assert_eq!(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]), 1440);
        assert_eq!(&buf[8..12], &0xDEADBEEFu32.to_be_bytes());
        assert_eq!(buf[PACKET_LEN - 1], 0xFF);
        // Foreign or truncated datagrams are ignored.
        assert_eq!(read_stamp(&buf[..39]), None);
        let mut other = buf;
        other[13] = b'X';
        assert_eq!(read_stamp(&other), None);
        // With the WebRTC-like extension: a valid RTP packet the relay's parser accepts.
        let mut ext = [0u8; MAX_PACKET_LEN];
        init_packet(&mut ext, 0xDEADBEEF, true);
        stamp_packet(&mut ext, 7, 160, &st);
        assert_eq!(read_stamp(&ext), Some(st));
        let rtp = RtpPacket::new_checked(&ext[..]).unwrap();
        assert_eq!(rtp.header_extension().map(|(p, _)| p), Some(0xBEDE));
        assert_eq!(rtp.payload().len(), PAYLOAD_LEN);
    }

    #[test]
    fn loss_reorder_duplicates() {
        let mut f = FlowRx::new();
        // 0 1 3 2 2 5 (4 lost), then a very old one
        let seqs = [0u64, 1, 3, 2, 2, 5];
        let kinds: Vec<_> = seqs.iter().map(|&s| f.on_packet(s, 0, 100)).collect();
        assert_eq!(
            kinds,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::Reordered,
                Arrival::Duplicate,
                Arrival::InOrder
            ]
        );
        assert_eq!(f.unique, 5);
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.reordered, 1);
        assert!((loss_pct(6, f.unique) - 100.0 / 6.0).abs() < 1e-9);
        // The window slides: after a jump of > 1024, seq 5's bit is forgotten and an old
        // arrival is "too old" rather than a false duplicate.
        assert_eq!(f.on_packet(5000, 0, 100), Arrival::InOrder);
        assert_eq!(f.on_packet(5, 0, 100), Arrival::TooOld);
        assert_eq!(f.on_packet(4000, 0, 100), Arrival::Reordered);
        assert_eq!(f.on_packet(4000, 0, 100), Arrival::Duplicate);
        assert_eq!(f.unique, 8);
        assert_eq!(loss_pct(5, 8), 0.0);
        assert_eq!(loss_pct(0, 0), 0.0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut f = FlowRx::new();
        // Constant transit: no jitter.
        for i in 0..100u64 {
            f.on_packet(i, i * 20_000_000, i * 20_000_000 + 50_000);
        }
        assert_eq!(f.jitter_ns, 0.0);
        // Alternating transit 0 / 16 µs: |D| = 16 µs every packet, J converges to 16 µs.
        let mut g = FlowRx::new();
        for i in 0..2000u64 {
            let extra = if i % 2 == 0 { 0 } else { 16_000 };
            g.on_packet(i, i * 20_000_000, i * 20_000_000 + extra);
        }
        assert!((g.jitter_ns - 16_000.0).abs() < 1.0, "{}", g.jitter_ns);
        // First step from 0: J = 16000 / 16 = 1000.
        let mut h = FlowRx::new();
        h.on_packet(0, 0, 0);
        h.on_packet(1, 0, 16_000);
        assert!((h.jitter_ns - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn percentile_math() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = percentiles(&h);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(close(p.p50_us, 500.0), "{p:?}");
        assert!(close(p.p90_us, 900.0), "{p:?}");
        assert!(close(p.p99_us, 990.0), "{p:?}");
        assert!(close(p.p999_us, 999.0), "{p:?}");
        assert!(close(p.max_us, 1000.0), "{p:?}");
        assert!(close(p.mean_us, 500.5), "{p:?}");
        assert_eq!(percentiles(&latency_histogram()), Percentiles::default());
    }
}
