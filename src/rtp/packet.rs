//! Checked, zero-copy view of an RTP packet (RFC 3550 §5.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |           synchronization source (SSRC) identifier            |
//! |            contributing source (CSRC) identifiers  (CC x 32)  |
//! |  profile-defined (16)         |   extension length (words)    |  if X
//! |                        extension data ...                     |
//! |                payload ...          | padding ... | pad count |  if P
//! ```
//!
//! `RtpPacket::new_checked` validates everything the accessors rely on, so after it returns
//! `Ok` every accessor is a plain load. `new_unchecked` skips validation; its accessors still
//! never panic (an out-of-range field reads as 0, `payload` as empty, and setters on a too
//! short buffer do nothing), they just return meaningless values for a malformed buffer.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use core::fmt;

/// Length of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// Why a buffer is not a well-formed RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    TooShort,
    /// Version field is not 2.
    BadVersion,
    /// The CSRC list (CC x 4 bytes) runs past the end of the buffer.
    CsrcOverrun,
    /// The header extension (X bit) runs past the end of the buffer.
    ExtensionOverrun,
    /// P bit set but the pad count is 0 or eats into the header.
    BadPadding,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RtpError::TooShort => "RTP packet shorter than the fixed header",
            RtpError::BadVersion => "RTP version is not 2",
            RtpError::CsrcOverrun => "RTP CSRC list runs past the packet end",
            RtpError::ExtensionOverrun => "RTP header extension runs past the packet end",
            RtpError::BadPadding => "RTP padding count is invalid",
        };
        f.write_str(s)
    }
}

impl std::error::Error for RtpError {}

mod field {
    pub const VPXCC: usize = 0;
    pub const MPT: usize = 1;
    pub const SEQ: usize = 2;
    pub const TIMESTAMP: usize = 4;
    pub const SSRC: usize = 8;
    pub const CSRC: usize = 12;
}

#[inline]
fn be16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
fn be32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[inline]
fn byte(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

/// A read/write view of an RTP packet over any byte buffer (`&[u8]`, `&mut [u8]`, `Vec<u8>`…).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps a buffer without validating it. Accessors never panic, but return garbage for a
    /// malformed buffer; use [`RtpPacket::new_checked`] on anything received from the network.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        RtpPacket { buffer }
    }

    /// Wraps a buffer after validating version, CSRC list, header extension and padding.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, RtpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the buffer (what `new_checked` runs).
    pub fn check_len(&self) -> Result<(), RtpError> {
        let buf = self.buffer.as_ref();
        let len = buf.len();
        if len < RTP_HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        if self.version() != 2 {
            return Err(RtpError::BadVersion);
        }
        let mut header = RTP_HEADER_LEN + 4 * usize::from(self.csrc_count());
        if header > len {
            return Err(RtpError::CsrcOverrun);
        }
        if self.extension() {
            // 4-byte extension header, then `length` 32-bit words of data.
            if header + 4 > len {
                return Err(RtpError::ExtensionOverrun);
            }
            header += 4 + 4 * usize::from(be16(buf, header + 2));
            if header > len {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        if self.padding() {
            // The last byte counts the padding octets, itself included (§5.1): at least 1,
            // and the padding may not overlap the header.
            let pad = usize::from(buf[len - 1]);
            if pad == 0 || header + pad > len {
                return Err(RtpError::BadPadding);
            }
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (2 for every packet accepted by `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        byte(self.buffer.as_ref(), field::VPXCC) >> 6
    }

    /// P bit: the payload is followed by padding.
    #[inline]
    pub fn padding(&self) -> bool {
        byte(self.buffer.as_ref(), field::VPXCC) & 0x20 != 0
    }

    /// X bit: a header extension follows the CSRC list.
    #[inline]
    pub fn extension(&self) -> bool {
        byte(self.buffer.as_ref(), field::VPXCC) & 0x10 != 0
    }

    /// CC field: number of CSRC identifiers (0..=15).
    #[inline]
    pub fn csrc_count(&self) -> u8 {
        byte(self.buffer.as_ref(), field::VPXCC) & 0x0f
    }

    /// M bit.
    #[inline]
    pub fn marker(&self) -> bool {
        byte(self.buffer.as_ref(), field::MPT) & 0x80 != 0
    }

    /// PT field (0..=127).
    #[inline]
    pub fn payload_type(&self) -> u8 {
        byte(self.buffer.as_ref(), field::MPT) & 0x7f
    }

    #[inline]
    pub fn sequence_number(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn timestamp(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TIMESTAMP)
    }

    #[inline]
    pub fn ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SSRC)
    }

    /// CSRC identifier `index` (0-based), if the CC field lists that many.
    #[inline]
    pub fn csrc(&self, index: usize) -> Option<u32> {
        if index >= usize::from(self.csrc_count()) {
            return None;
        }
        let buf = self.buffer.as_ref();
        let at = field::CSRC + 4 * index;
        buf.get(at..at + 4).map(|_| be32(buf, at))
    }

    /// Offset of the header extension (after the CSRC list).
    #[inline]
    fn extension_offset(&self) -> usize {
        field::CSRC + 4 * usize::from(self.csrc_count())
    }

    /// The header extension: profile-defined 16 bits (0xBEDE for RFC 8285 one-byte headers)
    /// and the extension data, when the X bit is set and the extension fits.
    pub fn header_extension(&self) -> Option<(u16, &[u8])> {
        if !self.extension() {
            return None;
        }
        let buf = self.buffer.as_ref();
        let at = self.extension_offset();
        let profile = buf.get(at..at + 4).map(|_| be16(buf, at))?;
        let words = usize::from(be16(buf, at + 2));
        let data = buf.get(at + 4..at + 4 + 4 * words)?;
        Some((profile, data))
    }

    /// Length of the whole buffer (header, payload and padding).
    #[inline]
    pub fn total_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Length of the header: fixed part, CSRC list and extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        let at = self.extension_offset();
        if self.extension() {
            at + 4 + 4 * usize::from(be16(self.buffer.as_ref(), at + 2))
        } else {
            at
        }
    }

    /// Number of padding octets at the end (0 when the P bit is clear).
    #[inline]
    pub fn padding_len(&self) -> usize {
        let buf = self.buffer.as_ref();
        match (self.padding(), buf.last()) {
            (true, Some(&n)) => usize::from(n),
            _ => 0,
        }
    }

    /// The payload, between the header and the padding. Empty if the buffer is malformed.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        let end = buf.len().saturating_sub(self.padding_len());
        buf.get(self.header_len()..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    #[inline]
    fn set_bits(&mut self, at: usize, mask: u8, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = (*b & !mask) | (value & mask);
        }
    }

    #[inline]
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buffer.as_mut().get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Sets the version field (only the low 2 bits of `value` are used).
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        self.set_bits(field::VPXCC, 0xc0, value << 6);
    }

    #[inline]
    pub fn set_padding(&mut self, value: bool) {
        self.set_bits(field::VPXCC, 0x20, if value { 0x20 } else { 0 });
    }

    #[inline]
    pub fn set_extension(&mut self, value: bool) {
        self.set_bits(field::VPXCC, 0x10, if value { 0x10 } else { 0 });
    }

    /// Sets the CC field (only the low 4 bits of `value` are used).
    #[inline]
    pub fn set_csrc_count(&mut self, value: u8) {
        self.set_bits(field::VPXCC, 0x0f, value);
    }

    #[inline]
    pub fn set_marker(&mut self, value: bool) {
        self.set_bits(field::MPT, 0x80, if value { 0x80 } else { 0 });
    }

    /// Sets the PT field (only the low 7 bits of `value` are used).
    #[inline]
    pub fn set_payload_type(&mut self, value: u8) {
        self.set_bits(field::MPT, 0x7f, value);
    }

    #[inline]
    pub fn set_sequence_number(&mut self, value: u16) {
        self.put(field::SEQ, &value.to_be_bytes());
    }

    #[inline]
    pub fn set_timestamp(&mut self, value: u32) {
        self.put(field::TIMESTAMP, &value.to_be_bytes());
    }

    #[inline]
    pub fn set_ssrc(&mut self, value: u32) {
        self.put(field::SSRC, &value.to_be_bytes());
    }

    /// The payload, writable. Empty if the buffer is malformed.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = self
            .buffer
            .as_ref()
            .len()
            .saturating_sub(self.padding_len());
        self.buffer.as_mut().get_mut(start..end).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // V=2 P=0 X=0 CC=0, M=1 PT=0 (PCMU), seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304, 4 bytes.
    static PACKET: [u8; 16] = [
        0x80, 0x80, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0xaa, 0xbb, 0xcc,
        0xdd,
    ];

    // V=2 P=1 X=1 CC=1, M=0 PT=111, one CSRC, RFC 8285 one-byte extension of 1 word,
    // 2 payload bytes, 2 padding bytes.
    static FULL: [u8; 28] = [
        0xb1, 0x6f, 0xff, 0xff, 0x00, 0x00, 0x00, 0x10, 0xca, 0xfe, 0xba, 0xbe, // fixed
        0x11, 0x22, 0x33, 0x44, // CSRC
        0xbe, 0xde, 0x00, 0x01, 0x10, 0x7f, 0x00, 0x00, // extension
        0x55, 0x66, // payload
        0x00, 0x02, // padding
    ];

    #[test]
    fn deconstruct() {
        let p = RtpPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert!(!p.extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.header_len(), RTP_HEADER_LEN);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(p.csrc(0), None);
        assert_eq!(p.header_extension(), None);
        assert_eq!(p.into_inner(), &PACKET[..]);
    }

    #[test]
    fn deconstruct_csrc_extension_padding() {
        let p = RtpPacket::new_checked(&FULL[..]).unwrap();
        assert!(p.padding());
        assert!(p.extension());
        assert!(!p.marker());
        assert_eq!(p.csrc_count(), 1);
        assert_eq!(p.payload_type(), 111);
        assert_eq!(p.sequence_number(), 0xffff);
        assert_eq!(p.timestamp(), 16);
        assert_eq!(p.ssrc(), 0xcafe_babe);
        assert_eq!(p.csrc(0), Some(0x1122_3344));
        assert_eq!(p.csrc(1), None);
        assert_eq!(p.header_extension(), Some((0xbede, &FULL[20..24])));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.padding_len(), 2);
        assert_eq!(p.payload(), &[0x55, 0x66]);
    }

    #[test]
    fn construct_on_dirty_buffer() {
        let mut buf = [0xa5u8; 16];
        {
            let mut p = RtpPacket::new_unchecked(&mut buf[..]);
            p.set_version(2);
            p.set_padding(false);
            p.set_extension(false);
            p.set_csrc_count(0);
            p.set_marker(true);
            p.set_payload_type(0);
            p.set_sequence_number(0x1234);
            p.set_timestamp(0xdead_beef);
            p.set_ssrc(0x0102_0304);
            p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        }
        assert_eq!(buf, PACKET);
        assert!(RtpPacket::new_checked(&buf[..]).is_ok());
    }

    #[test]
    fn setters_mask_and_round_trip() {
        let mut p = RtpPacket::new_unchecked(PACKET.to_vec());
        p.set_marker(false);
        p.set_payload_type(0xff); // only 7 bits land
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 0x7f);
        p.set_marker(true);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0x7f);
        p.set_version(1);
        assert_eq!(p.version(), 1);
        assert_eq!(p.new_checked_err(), Some(RtpError::BadVersion));
    }

    impl<T: AsRef<[u8]>> RtpPacket<T> {
        fn new_checked_err(&self) -> Option<RtpError> {
            self.check_len().err()
        }
    }

    #[test]
    fn edge_cases() {
        let mut ext_overrun = FULL;
        ext_overrun[19] = 0x04; // extension claims 4 words
        let mut pad_zero = FULL;
        pad_zero[27] = 0;
        let mut pad_into_header = FULL;
        pad_into_header[27] = 5; // 24 + 5 > 28
        let mut pad_all_payload = FULL;
        pad_all_payload[27] = 4; // padding eats the whole payload: allowed, empty payload
        let mut csrc_overrun = PACKET;
        csrc_overrun[0] = 0x82; // 2 CSRCs = 20 bytes > 16
        let mut ext_header_cut = PACKET;
        ext_header_cut[0] = 0x93; // X=1, CC=3: extension header would start at 24
        let mut v1 = PACKET;
        v1[0] = 0x40;
        let table: &[(&[u8], Result<usize, RtpError>)] = &[
            (&[], Err(RtpError::TooShort)),
            (&PACKET[..11], Err(RtpError::TooShort)),
            (&PACKET[..12], Ok(0)),
            (&PACKET, Ok(4)),
            (&v1, Err(RtpError::BadVersion)),
            (&csrc_overrun, Err(RtpError::CsrcOverrun)),
            (&ext_header_cut, Err(RtpError::CsrcOverrun)),
            (&FULL[..19], Err(RtpError::ExtensionOverrun)),
            (&FULL[..23], Err(RtpError::ExtensionOverrun)),
            (&ext_overrun, Err(RtpError::ExtensionOverrun)),
            (&pad_zero, Err(RtpError::BadPadding)),
            (&pad_into_header, Err(RtpError::BadPadding)),
            (&pad_all_payload, Ok(0)),
            (&FULL, Ok(2)),
        ];
        for (i, (buf, want)) in table.iter().enumerate() {
            let got = RtpPacket::new_checked(*buf).map(|p| p.payload().len());
            assert_eq!(&got, want, "case {i}");
        }
    }

    #[test]
    fn unchecked_accessors_never_panic() {
        for len in 0..FULL.len() {
            let p = RtpPacket::new_unchecked(&FULL[..len]);
            let _ = (
                p.version(),
                p.sequence_number(),
                p.timestamp(),
                p.ssrc(),
                p.csrc(0),
            );
            let _ = p.header_extension();
            assert!(p.payload().len() <= len);
            let mut buf = FULL[..len].to_vec();
            let mut q = RtpPacket::new_unchecked(&mut buf[..]);
            q.set_ssrc(1);
            q.set_timestamp(2);
            q.set_sequence_number(3);
            q.set_marker(true);
            let _ = q.payload_mut();
        }
        // Short buffers read as zero rather than panicking.
        assert_eq!(RtpPacket::new_unchecked(&PACKET[..6]).timestamp(), 0);
    }

    #[test]
    fn error_display() {
        assert!(RtpError::BadPadding.to_string().contains("padding"));
    }
}
