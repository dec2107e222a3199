//! Compound RTCP (RFC 3550 §6.4): validation, iteration, SR sender info and SR/RR report
//! blocks.
//!
//! ```text
//! common header:   |V=2|P| count(5) |  PT (8)  |  length (16): 32-bit words - 1  |
//! SR:  header, SSRC of sender, sender info (20 bytes), count x report block (24 bytes)
//! RR:  header, SSRC of packet sender,                  count x report block (24 bytes)
//! ```
//!
//! A compound packet is valid here when every packet has version 2, the lengths add up to
//! the buffer exactly, any padding count fits its packet (1..=body length), and every SR/RR
//! is long enough for the report blocks its count announces (profile extensions after them
//! are allowed). Unlike the A.2 check, the first packet need not be SR/RR: reduced-size RTCP
//! (RFC 5506) sends lone feedback packets. SRTCP is encrypted and carries a trailer, so it
//! does not validate; a relay forwards what it cannot inspect.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use core::fmt;

pub const RTCP_HEADER_LEN: usize = 4;
pub const SENDER_INFO_LEN: usize = 20;
pub const REPORT_BLOCK_LEN: usize = 24;

/// RTCP packet types (RFC 3550 §12.1, RFC 4585, RFC 3611).
pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
pub const PT_APP: u8 = 204;
pub const PT_RTPFB: u8 = 205;
pub const PT_PSFB: u8 = 206;
pub const PT_XR: u8 = 207;

/// Why a buffer is not a valid compound RTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpError {
    /// Shorter than one 4-byte header (or too short for what is being written).
    TooShort,
    /// A packet's version is not 2.
    BadVersion,
    /// A length field runs past the buffer, the lengths leave trailing bytes, a padding
    /// count does not fit, or an SR/RR is too short for its report blocks.
    BadLength,
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RtcpError::TooShort => "RTCP packet too short",
            RtcpError::BadVersion => "RTCP version is not 2",
            RtcpError::BadLength => "RTCP length fields do not add up",
        })
    }
}

impl std::error::Error for RtcpError {}

#[inline]
fn be32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Parses a block from the first 24 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Option<ReportBlock> {
        let b = buf.get(..REPORT_BLOCK_LEN)?;
        let lost24 = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        Some(ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            // Sign-extend 24 -> 32 bits.
            cumulative_lost: ((lost24 << 8) as i32) >> 8,
            extended_highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        })
    }

    /// Writes the block into the first 24 bytes of `out`. `cumulative_lost` saturates to
    /// the 24-bit signed range.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), RtcpError> {
        let o = out.get_mut(..REPORT_BLOCK_LEN).ok_or(RtcpError::TooShort)?;
        let lost = self.cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1) as u32;
        o[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        o[4] = self.fraction_lost;
        o[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        o[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        o[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        o[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        o[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
        Ok(())
    }
}

/// SR sender info (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point seconds since 1900.
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

impl SenderInfo {
    /// Parses sender info from the first 20 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Option<SenderInfo> {
        let b = buf.get(..SENDER_INFO_LEN)?;
        Some(SenderInfo {
            ntp_timestamp: (u64::from(be32(b, 0)) << 32) | u64::from(be32(b, 4)),
            rtp_timestamp: be32(b, 8),
            packet_count: be32(b, 12),
            octet_count: be32(b, 16),
        })
    }

    /// Writes sender info into the first 20 bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), RtcpError> {
        let o = out.get_mut(..SENDER_INFO_LEN).ok_or(RtcpError::TooShort)?;
        o[0..8].copy_from_slice(&self.ntp_timestamp.to_be_bytes());
        o[8..12].copy_from_slice(&self.rtp_timestamp.to_be_bytes());
        o[12..16].copy_from_slice(&self.packet_count.to_be_bytes());
        o[16..20].copy_from_slice(&self.octet_count.to_be_bytes());
        Ok(())
    }

    /// The middle 32 bits of the NTP timestamp: what a receiver echoes as `last_sr`.
    #[inline]
    pub const fn ntp_middle32(&self) -> u32 {
        (self.ntp_timestamp >> 16) as u32
    }
}

/// Writes a common header for a packet of `len_bytes` (a multiple of 4, at least 4) into
/// `out`: version 2, no padding, `count` (5 bits), `packet_type`.
pub fn emit_header(
    out: &mut [u8],
    count: u8,
    packet_type: u8,
    len_bytes: usize,
) -> Result<(), RtcpError> {
    if len_bytes < RTCP_HEADER_LEN || len_bytes % 4 != 0 || len_bytes / 4 > 65536 {
        return Err(RtcpError::BadLength);
    }
    let o = out.get_mut(..RTCP_HEADER_LEN).ok_or(RtcpError::TooShort)?;
    o[0] = 0x80 | (count & 0x1f);
    o[1] = packet_type;
    o[2..4].copy_from_slice(&((len_bytes / 4 - 1) as u16).to_be_bytes());
    Ok(())
}

/// One packet of a compound, exactly as long as its length field says (padding included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    buf: &'a [u8],
}

impl<'a> RtcpPacket<'a> {
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }

    #[inline]
    pub fn padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// Report count (SR/RR), source count (SDES/BYE), FMT (feedback) or subtype (APP).
    #[inline]
    pub fn count(&self) -> u8 {
        self.buf[0] & 0x1f
    }

    #[inline]
    pub fn packet_type(&self) -> u8 {
        self.buf[1]
    }

    /// The whole packet, header and padding included.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Length without trailing padding.
    #[inline]
    fn unpadded_len(&self) -> usize {
        let pad = if self.padding() {
            self.buf.last().copied().map_or(0, usize::from)
        } else {
            0
        };
        self.buf.len().saturating_sub(pad)
    }

    /// The 32 bits after the header: the sender SSRC of SR, RR, RTPFB, PSFB, XR and APP
    /// (for SDES/BYE, the first listed source). `None` if the packet is just a header.
    #[inline]
    pub fn ssrc(&self) -> Option<u32> {
        self.buf.get(4..8).map(|_| be32(self.buf, 4))
    }

    /// Sender info of an SR.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != PT_SR {
            return None;
        }
        SenderInfo::parse(self.buf.get(8..)?)
    }

    /// Offset of the first report block (SR/RR), `None` for other types.
    #[inline]
    fn blocks_offset(&self) -> Option<usize> {
        match self.packet_type() {
            PT_SR => Some(8 + SENDER_INFO_LEN),
            PT_RR => Some(8),
            _ => None,
        }
    }

    /// The report blocks of an SR/RR (empty for other types). Complete for every packet
    /// produced by [`iter_compound`], which checks that they fit.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        match self.blocks_offset() {
            Some(at) => ReportBlocks {
                rest: self.buf.get(at..self.unpadded_len()).unwrap_or(&[]),
                remaining: self.count(),
            },
            None => ReportBlocks {
                rest: &[],
                remaining: 0,
            },
        }
    }

    /// Checks a packet already cut to its length field: padding and SR/RR block room.
    fn check(&self) -> Result<(), RtcpError> {
        if self.padding() {
            let pad = self.buf.last().copied().map_or(0, usize::from);
            if pad == 0 || pad > self.buf.len() - RTCP_HEADER_LEN {
                return Err(RtcpError::BadLength);
            }
        }
        if let Some(at) = self.blocks_offset() {
            if at + REPORT_BLOCK_LEN * usize::from(self.count()) > self.unpadded_len() {
                return Err(RtcpError::BadLength);
            }
        }
        Ok(())
    }
}

/// Iterator over the report blocks of one SR/RR.
#[derive(Clone, Debug)]
pub struct ReportBlocks<'a> {
    rest: &'a [u8],
    remaining: u8,
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.remaining == 0 {
            return None;
        }
        let block = ReportBlock::parse(self.rest)?;
        self.rest = self.rest.get(REPORT_BLOCK_LEN..).unwrap_or(&[]);
        self.remaining -= 1;
        Some(block)
    }
}

/// Iterator over the packets of a compound. Yields `Err` once and then stops when the
/// buffer is malformed (packets before the error are yielded normally).
#[derive(Clone, Debug)]
pub struct CompoundIter<'a> {
    rest: &'a [u8],
    first: bool,
}

/// Iterates the packets of compound RTCP `buf`. An empty buffer yields `Err(TooShort)`.
pub fn iter_compound(buf: &[u8]) -> CompoundIter<'_> {
    CompoundIter {
        rest: buf,
        first: true,
    }
}

impl<'a> Iterator for CompoundIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = core::mem::replace(&mut self.first, false);
        if self.rest.is_empty() && !first {
            return None;
        }
        let buf = core::mem::take(&mut self.rest);
        if buf.len() < RTCP_HEADER_LEN {
            // Nothing at all is too short; a few stray bytes after valid packets mean the
            // lengths did not add up.
            return Some(Err(if first {
                RtcpError::TooShort
            } else {
                RtcpError::BadLength
            }));
        }
        if buf[0] >> 6 != 2 {
            return Some(Err(RtcpError::BadVersion));
        }
        let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
        let Some((this, rest)) = buf.split_at_checked(len) else {
            return Some(Err(RtcpError::BadLength));
        };
        let packet = RtcpPacket { buf: this };
        if let Err(e) = packet.check() {
            return Some(Err(e));
        }
        self.rest = rest;
        Some(Ok(packet))
    }
}

/// Checks a compound RTCP packet: lengths add up exactly, version 2 everywhere (see the
/// module docs for the rest).
pub fn validate_compound(buf: &[u8]) -> Result<(), RtcpError> {
    for packet in iter_compound(buf) {
        packet?;
    }
    Ok(())
}

/// Calls `f` for each report block in every SR/RR of the compound packet; returns how many
/// it visited. The whole compound is validated first, so on `Err` `f` was never called.
pub fn for_each_report_block(
    buf: &[u8],
    mut f: impl FnMut(u32, &ReportBlock),
) -> Result<usize, RtcpError> {
    validate_compound(buf)?;
    let mut visited = 0;
    for packet in iter_compound(buf).flatten() {
        let reporter = packet.ssrc().unwrap_or(0);
        for block in packet.report_blocks() {
            f(reporter, &block);
            visited += 1;
        }
    }
    Ok(visited)
}

/// Calls `f` with the sender SSRC and sender info of every SR in the compound; returns how
/// many. Validates the whole compound first, like [`for_each_report_block`].
pub fn for_each_sender_info(
    buf: &[u8],
    mut f: impl FnMut(u32, &SenderInfo),
) -> Result<usize, RtcpError> {
    validate_compound(buf)?;
    let mut visited = 0;
    for packet in iter_compound(buf).flatten() {
        if let (Some(ssrc), Some(info)) = (packet.ssrc(), packet.sender_info()) {
            f(ssrc, &info);
            visited += 1;
        }
    }
    Ok(visited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static SR: [u8; 52] = [
        0x81, 200, 0x00, 0x0c,                          // V=2 RC=1 SR, 13 words
        0x11, 0x22, 0x33, 0x44,                         // sender SSRC
        0xe1, 0x2f, 0x8a, 0x10, 0x80, 0x00, 0x00, 0x00, // NTP
        0x00, 0x01, 0xe2, 0x40,                         // RTP ts 123456
        0x00, 0x00, 0x00, 0x64,                         // 100 packets
        0x00, 0x00, 0x3e, 0x80,                         // 16000 octets
        0x55, 0x66, 0x77, 0x88,                         // block: source SSRC
        0x40, 0xff, 0xff, 0xfe,                         // 25 % lost, cumulative -2
        0x00, 0x01, 0x00, 0x05,                         // ext highest seq 65541
        0x00, 0x00, 0x00, 0x2a,                         // jitter 42
        0x12, 0x34, 0x56, 0x78,                         // LSR
        0x00, 0x01, 0x00, 0x00,                         // DLSR 1 s
    ];

    #[rustfmt::skip]
    static SDES: [u8; 16] = [
        0x81, 202, 0x00, 0x03, 0x11, 0x22, 0x33, 0x44,
        1, 4, b'a', b'b', b'c', b'd', 0, 0,             // CNAME "abcd", END, pad
    ];

    #[rustfmt::skip]
    static RR: [u8; 32] = [
        0x81, 201, 0x00, 0x07, 0x99, 0x99, 0x99, 0x99,
        0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x7f, 0xff, 0xff, // max positive cumulative lost
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    fn compound() -> Vec<u8> {
        [&SR[..], &SDES[..], &RR[..]].concat()
    }

    fn sr_block() -> ReportBlock {
        ReportBlock {
            ssrc: 0x5566_7788,
            fraction_lost: 0x40,
            cumulative_lost: -2,
            extended_highest_seq: 65_541,
            jitter: 42,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65_536,
        }
    }

    #[test]
    fn deconstruct_compound() {
        let buf = compound();
        assert_eq!(validate_compound(&buf), Ok(()));
        let packets: Vec<_> = iter_compound(&buf).map(|p| p.unwrap()).collect();
        assert_eq!(packets.len(), 3);
        let kinds: Vec<_> = packets
            .iter()
            .map(|p| (p.packet_type(), p.count()))
            .collect();
        assert_eq!(kinds, [(PT_SR, 1), (PT_SDES, 1), (PT_RR, 1)]);
        assert!(packets.iter().all(|p| p.version() == 2 && !p.padding()));
        assert_eq!(packets[1].bytes(), &SDES);
        assert_eq!(packets[0].ssrc(), Some(0x1122_3344));
        let info = packets[0].sender_info().unwrap();
        assert_eq!(
            info,
            SenderInfo {
                ntp_timestamp: 0xe12f_8a10_8000_0000,
                rtp_timestamp: 123_456,
                packet_count: 100,
                octet_count: 16_000,
            }
        );
        assert_eq!(info.ntp_middle32(), 0x8a10_8000);
        assert_eq!(packets[2].sender_info(), None);
        assert_eq!(packets[1].report_blocks().count(), 0);

        let mut seen = Vec::new();
        let n = for_each_report_block(&buf, |reporter, b| seen.push((reporter, *b))).unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0], (0x1122_3344, sr_block()));
        assert_eq!(seen[1].0, 0x9999_9999);
        assert_eq!(seen[1].1.ssrc, 0xaabb_ccdd);
        assert_eq!(seen[1].1.cumulative_lost, (1 << 23) - 1);
        assert_eq!(seen[1].1.extended_highest_seq, 1);

        let mut senders = Vec::new();
        assert_eq!(
            for_each_sender_info(&buf, |s, i| senders.push((s, *i))),
            Ok(1)
        );
        assert_eq!(senders, [(0x1122_3344, info)]);
    }

    #[test]
    fn construct_on_dirty_buffer() {
        let mut buf = [0xa5u8; 52];
        emit_header(&mut buf, 1, PT_SR, 52).unwrap();
        buf[4..8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
        SenderInfo {
            ntp_timestamp: 0xe12f_8a10_8000_0000,
            rtp_timestamp: 123_456,
            packet_count: 100,
            octet_count: 16_000,
        }
        .emit(&mut buf[8..])
        .unwrap();
        sr_block().emit(&mut buf[28..]).unwrap();
        assert_eq!(buf, SR);
        assert_eq!(
            emit_header(&mut buf, 0, PT_RR, 6),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            emit_header(&mut buf[..3], 0, PT_RR, 8),
            Err(RtcpError::TooShort)
        );
        assert_eq!(sr_block().emit(&mut buf[..23]), Err(RtcpError::TooShort));
    }

    #[test]
    fn cumulative_lost_sign_and_clamp() {
        for (value, wire) in [
            (-1, -1),
            (-(1 << 23), -(1 << 23)),
            (-10_000_000, -(1 << 23)),
            (10_000_000, (1 << 23) - 1),
            (12_345, 12_345),
        ] {
            let b = ReportBlock {
                cumulative_lost: value,
                ..ReportBlock::default()
            };
            let mut out = [0u8; 24];
            b.emit(&mut out).unwrap();
            assert_eq!(ReportBlock::parse(&out).unwrap().cumulative_lost, wire);
        }
        assert_eq!(ReportBlock::parse(&[0; 23]), None);
    }

    #[test]
    fn edge_cases() {
        let good = compound();
        let mut v1 = good.clone();
        v1[0] = 0x41;
        let mut second_v3 = good.clone();
        second_v3[52] = 0xc1;
        let mut len_past_end = good.clone();
        len_past_end[3] = 0x20;
        let mut trailing2 = good.clone();
        trailing2.extend_from_slice(&[0x80, 0xc9]);
        let mut trailing_bad_header = good.clone();
        trailing_bad_header.extend_from_slice(&[0x00, 0xc9, 0, 0]);
        let mut rr_count_overrun = RR;
        rr_count_overrun[0] = 0x82; // two blocks announced, room for one
        let mut sr_no_room = SR;
        sr_no_room[3] = 0x06; // 28 bytes: sender info but no room for the block
        let sr_no_room = &sr_no_room[..28];
        // RR with a one-word profile extension after its block: allowed.
        let mut rr_ext = RR.to_vec();
        rr_ext[3] = 0x08;
        rr_ext.extend_from_slice(&[1, 2, 3, 4]);
        // Empty RR with 4 bytes of padding (P bit, pad count 4).
        let rr_pad_ok = [0xa0, 201, 0x00, 0x02, 1, 2, 3, 4, 0, 0, 0, 4];
        let rr_pad_zero = [0xa0, 201, 0x00, 0x02, 1, 2, 3, 4, 0, 0, 0, 0];
        let rr_pad_huge = [0xa0, 201, 0x00, 0x02, 1, 2, 3, 4, 0, 0, 0, 9];
        // RR with RC=1 whose block is eaten by padding.
        let mut rr_pad_eats_block = RR;
        rr_pad_eats_block[0] = 0xa1;
        rr_pad_eats_block[31] = 4;
        let header_only_bye = [0x80, 203, 0x00, 0x00];
        let table: &[(&[u8], Result<usize, RtcpError>)] = &[
            (&[], Err(RtcpError::TooShort)),
            (&good[..3], Err(RtcpError::TooShort)),
            (&good, Ok(2)),
            (&SR, Ok(1)),
            (&RR, Ok(1)),
            (&SDES, Ok(0)),
            (&header_only_bye, Ok(0)),
            (&v1, Err(RtcpError::BadVersion)),
            (&second_v3, Err(RtcpError::BadVersion)),
            (&len_past_end, Err(RtcpError::BadLength)),
            (&good[..good.len() - 4], Err(RtcpError::BadLength)),
            (&trailing2, Err(RtcpError::BadLength)),
            (&trailing_bad_header, Err(RtcpError::BadVersion)),
            (&rr_count_overrun, Err(RtcpError::BadLength)),
            (sr_no_room, Err(RtcpError::BadLength)),
            (&rr_ext, Ok(1)),
            (&rr_pad_ok, Ok(0)),
            (&rr_pad_zero, Err(RtcpError::BadLength)),
            (&rr_pad_huge, Err(RtcpError::BadLength)),
            (&rr_pad_eats_block, Err(RtcpError::BadLength)),
        ];
        for (i, (buf, want)) in table.iter().enumerate() {
            let mut calls = 0;
            let got = for_each_report_block(buf, |_, _| calls += 1);
            assert_eq!(&got, want, "case {i}");
            assert_eq!(validate_compound(buf), want.map(|_| ()), "case {i}");
            if got.is_err() {
                assert_eq!(calls, 0, "f not called on invalid input, case {i}");
            }
        }
    }

    #[test]
    fn iterator_yields_packets_before_error_then_stops() {
        let mut buf = compound();
        buf[52] = 0x01; // SDES header: version 0
        let items: Vec<_> = iter_compound(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert_eq!(items[1], Err(RtcpError::BadVersion));
    }

    #[test]
    fn mutated_input_never_panics() {
        let base = compound();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut buf = base.clone();
            let at = x as usize % buf.len();
            buf[at] = (x >> 8) as u8;
            buf.truncate(buf.len() - (x >> 24) as usize % 8);
            let _ = for_each_report_block(&buf, |_, b| assert!(b.cumulative_lost < 1 << 23));
            let _ = for_each_sender_info(&buf, |_, _| {});
            for p in iter_compound(&buf).flatten() {
                let _ = (p.report_blocks().count(), p.sender_info(), p.ssrc());
            }
        }
        assert_eq!(validate_compound(&base), Ok(()));
    }

    #[test]
    fn error_display() {
        assert!(RtcpError::BadLength.to_string().contains("length"));
    }
}
