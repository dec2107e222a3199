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
//!
//! [`RtpRepr`] is the header as values, next to the view: `RtpRepr::parse` reads it from a
//! checked packet, `emit` writes it into a buffer without allocating (tests, benchmarks and
//! load generators build their packets with it).
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

/// Up to 15 CSRC identifiers (the CC field has 4 bits), held inline so an [`RtpRepr`] is
/// `Copy` and building a header never allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsrcList {
    ids: [u32; CsrcList::MAX],
    len: u8,
}

impl CsrcList {
    /// The most identifiers one header can carry.
    pub const MAX: usize = 15;

    /// No CSRC (the common case: a packet straight from its source, not from a mixer).
    pub const fn new() -> CsrcList {
        CsrcList {
            ids: [0; CsrcList::MAX],
            len: 0,
        }
    }

    /// The list `ids`, or `None` when it holds more than [`CsrcList::MAX`].
    pub fn from_slice(ids: &[u32]) -> Option<CsrcList> {
        let mut list = CsrcList::new();
        list.ids.get_mut(..ids.len())?.copy_from_slice(ids);
        list.len = ids.len() as u8;
        Some(list)
    }

    #[inline]
    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..usize::from(self.len)]
    }

    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A header extension (X bit): the profile-defined 16 bits (0xBEDE for RFC 8285 one-byte
/// headers) and the data, which is a whole number of 32-bit words on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    pub profile: u16,
    /// Emitted zero-padded to the next word; parsed back with that padding.
    pub data: &'a [u8],
}

impl RtpExtension<'_> {
    /// Length of the data on the wire, in 32-bit words.
    #[inline]
    fn words(&self) -> usize {
        self.data.len().div_ceil(4)
    }
}

/// Why [`RtpRepr::emit`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpEmitError {
    /// The buffer is shorter than [`RtpRepr::header_len`].
    BufferTooShort,
    /// The extension data is longer than its 16-bit word count can say (65,535 words).
    ExtensionTooLong,
}

impl fmt::Display for RtpEmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RtpEmitError::BufferTooShort => "buffer shorter than the RTP header",
            RtpEmitError::ExtensionTooLong => "RTP header extension longer than 65535 words",
        })
    }
}

impl std::error::Error for RtpEmitError {}

/// The header of an RTP packet as values: what [`RtpRepr::parse`] reads from a packet and
/// [`RtpRepr::emit`] writes into a buffer (the version is always 2).
///
/// `padding` is the number of padding octets that end the packet, the count byte included
/// (0: P bit clear). `emit` writes the header only, so it only sets the P bit;
/// [`RtpRepr::to_vec`] writes the padding too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpRepr<'a> {
    pub marker: bool,
    /// 0..=127; only the low 7 bits are emitted.
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: CsrcList,
    pub extension: Option<RtpExtension<'a>>,
    pub padding: u8,
}

impl RtpRepr<'static> {
    /// A plain header: no marker, CSRC, extension or padding.
    pub const fn new(payload_type: u8, sequence_number: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpRepr {
            marker: false,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            csrcs: CsrcList::new(),
            extension: None,
            padding: 0,
        }
    }
}

impl<'a> RtpRepr<'a> {
    /// Reads the header of a well-formed packet (validated as [`RtpPacket::new_checked`]
    /// does); the extension data borrows from `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<RtpRepr<'a>, RtpError> {
        let p = RtpPacket::new_checked(buf)?;
        let count = usize::from(p.csrc_count());
        let mut csrcs = CsrcList::new();
        for (i, id) in csrcs.ids.iter_mut().take(count).enumerate() {
            *id = p.csrc(i).unwrap_or(0);
        }
        csrcs.len = count as u8;
        let extension = if p.extension() {
            let at = p.extension_offset();
            Some(RtpExtension {
                profile: be16(buf, at),
                data: buf.get(at + 4..p.header_len()).unwrap_or(&[]),
            })
        } else {
            None
        };
        Ok(RtpRepr {
            marker: p.marker(),
            payload_type: p.payload_type(),
            sequence_number: p.sequence_number(),
            timestamp: p.timestamp(),
            ssrc: p.ssrc(),
            csrcs,
            extension,
            padding: p.padding_len() as u8, // the count is one byte
        })
    }

    /// Length of the header `emit` writes: fixed part, CSRC list and extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        RTP_HEADER_LEN + 4 * self.csrcs.len() + self.extension.map_or(0, |e| 4 + 4 * e.words())
    }

    /// Writes the header at the start of `buf` and returns its length; the bytes after it
    /// (payload, padding) are left as they are. Writes nothing on error. Never allocates.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, RtpEmitError> {
        let words = self.extension.map(|e| e.words());
        if words.is_some_and(|w| w > usize::from(u16::MAX)) {
            return Err(RtpEmitError::ExtensionTooLong);
        }
        let len = self.header_len();
        let header = buf.get_mut(..len).ok_or(RtpEmitError::BufferTooShort)?;
        // The first two bytes whole: V=2, P, X, CC; M, PT.
        header[field::VPXCC] = 0x80
            | if self.padding > 0 { 0x20 } else { 0 }
            | if words.is_some() { 0x10 } else { 0 }
            | self.csrcs.len;
        header[field::MPT] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        let mut p = RtpPacket::new_unchecked(&mut *header);
        p.set_sequence_number(self.sequence_number);
        p.set_timestamp(self.timestamp);
        p.set_ssrc(self.ssrc);
        let mut at = field::CSRC;
        for id in self.csrcs.as_slice() {
            p.put(at, &id.to_be_bytes());
            at += 4;
        }
        if let (Some(e), Some(words)) = (self.extension, words) {
            p.put(at, &e.profile.to_be_bytes());
            p.put(at + 2, &(words as u16).to_be_bytes());
            let data = &mut header[at + 4..len];
            let (head, pad) = data.split_at_mut(e.data.len());
            head.copy_from_slice(e.data);
            pad.fill(0);
        }
        Ok(len)
    }

    /// A whole packet: the header, `payload`, then the padding (zeros and the count byte).
    /// Allocates; for tests and tools, not for the packet path.
    pub fn to_vec(&self, payload: &[u8]) -> Result<Vec<u8>, RtpEmitError> {
        let header = self.header_len();
        let mut out = vec![0u8; header + payload.len() + usize::from(self.padding)];
        self.emit(&mut out)?;
        out[header..header + payload.len()].copy_from_slice(payload);
        if let Some(last) = out.last_mut().filter(|_| self.padding > 0) {
            *last = self.padding;
        }
        Ok(out)
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
        assert!(RtpEmitError::BufferTooShort.to_string().contains("shorter"));
    }

    #[test]
    fn repr_parses_and_emits_the_sample_packets() {
        let plain = RtpRepr {
            marker: true,
            ..RtpRepr::new(0, 0x1234, 0xdead_beef, 0x0102_0304)
        };
        assert_eq!(RtpRepr::parse(&PACKET), Ok(plain));
        assert_eq!(plain.header_len(), RTP_HEADER_LEN);
        assert_eq!(plain.to_vec(&PACKET[12..]).unwrap(), PACKET);

        let full = RtpRepr::parse(&FULL).unwrap();
        assert_eq!(
            full,
            RtpRepr {
                marker: false,
                payload_type: 111,
                sequence_number: 0xffff,
                timestamp: 16,
                ssrc: 0xcafe_babe,
                csrcs: CsrcList::from_slice(&[0x1122_3344]).unwrap(),
                extension: Some(RtpExtension {
                    profile: 0xbede,
                    data: &FULL[20..24],
                }),
                padding: 2,
            }
        );
        assert_eq!(full.header_len(), 24);
        assert_eq!(full.to_vec(&[0x55, 0x66]).unwrap(), FULL);
        assert_eq!(RtpRepr::parse(&FULL[..23]), Err(RtpError::ExtensionOverrun));
    }

    #[test]
    fn emit_writes_the_header_only() {
        let mut buf = [0xa5u8; 16];
        let n = RtpRepr {
            marker: true,
            ..RtpRepr::new(0, 0x1234, 0xdead_beef, 0x0102_0304)
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(n, 12);
        assert_eq!(buf[..12], PACKET[..12]);
        assert_eq!(buf[12..], [0xa5; 4], "the payload is the caller's");
        // Too short: nothing written.
        let mut short = [0x5au8; 11];
        assert_eq!(
            RtpRepr::new(0, 1, 2, 3).emit(&mut short),
            Err(RtpEmitError::BufferTooShort)
        );
        assert_eq!(short, [0x5a; 11]);
    }

    #[test]
    fn repr_round_trips_through_the_parser() {
        let ids: Vec<u32> = (1..=15).map(|i| 0x0101_0101 * i).collect();
        let ext_data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        for cc in 0..=CsrcList::MAX {
            for (ext, padding) in [(false, 0u8), (true, 0), (false, 1), (true, 7)] {
                let repr = RtpRepr {
                    marker: cc % 2 == 0,
                    payload_type: 96 + cc as u8,
                    sequence_number: 65_535 - cc as u16,
                    timestamp: 160 * cc as u32,
                    ssrc: 0xfeed_0000 + cc as u32,
                    csrcs: CsrcList::from_slice(&ids[..cc]).unwrap(),
                    extension: ext.then_some(RtpExtension {
                        profile: 0x1000,
                        data: &ext_data,
                    }),
                    padding,
                };
                let payload = [cc as u8; 20];
                let bytes = repr.to_vec(&payload).unwrap();
                let p = RtpPacket::new_checked(&bytes[..]).unwrap();
                assert_eq!(p.csrc_count() as usize, cc);
                assert_eq!(p.csrc(cc.saturating_sub(1)), ids[..cc].last().copied());
                assert_eq!(p.header_extension(), ext.then_some((0x1000, &ext_data[..])));
                assert_eq!(p.padding_len(), usize::from(padding));
                assert_eq!(p.header_len(), repr.header_len());
                assert_eq!(p.payload(), &payload);
                assert_eq!(
                    RtpRepr::parse(&bytes),
                    Ok(repr),
                    "cc {cc} ext {ext} pad {padding}"
                );
            }
        }
    }

    #[test]
    fn repr_edges() {
        // Extension data is padded to whole words on the wire, and read back so.
        let repr = RtpRepr {
            extension: Some(RtpExtension {
                profile: 0xbede,
                data: &[0x10, 0x7f, 0x33],
            }),
            ..RtpRepr::new(0, 1, 2, 3)
        };
        let bytes = repr.to_vec(&[]).unwrap();
        assert_eq!(
            bytes[12..],
            [0xbe, 0xde, 0x00, 0x01, 0x10, 0x7f, 0x33, 0x00]
        );
        let back = RtpRepr::parse(&bytes).unwrap();
        assert_eq!(
            back.extension.map(|e| e.data),
            Some(&[0x10, 0x7f, 0x33, 0][..])
        );
        // The word count has 16 bits.
        let huge = vec![0u8; 4 * 65_536];
        let too_long = RtpRepr {
            extension: Some(RtpExtension {
                profile: 0,
                data: &huge,
            }),
            ..RtpRepr::new(0, 1, 2, 3)
        };
        assert_eq!(too_long.to_vec(&[]), Err(RtpEmitError::ExtensionTooLong));
        // Only 7 bits of payload type; 16 CSRCs do not fit the CC field.
        let pt = RtpRepr::new(0xff, 0, 0, 0).to_vec(&[]).unwrap();
        assert_eq!(
            (pt[1], RtpPacket::new_unchecked(&pt).payload_type()),
            (0x7f, 0x7f)
        );
        assert_eq!(CsrcList::from_slice(&[0; 16]), None);
        assert!(CsrcList::new().is_empty());
        assert_eq!(CsrcList::from_slice(&[7, 8]).map(|l| l.len()), Some(2));
    }
}
