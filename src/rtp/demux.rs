//! Telling packet kinds apart on one UDP port.
//!
//! First byte ranges from RFC 7983 §7 (updating RFC 5764 §5.1.2):
//!
//! | first byte | kind |
//! |------------|------|
//! | 0..=3      | STUN (RFC 5389: top two bits zero, message types fit here) |
//! | 16..=19    | ZRTP (RFC 6189) |
//! | 20..=63    | DTLS (content types 20..=63) |
//! | 128..=191  | RTP or RTCP (version 2) |
//!
//! RTP and RTCP multiplexed on one port (RFC 5761 §4) are told apart by the second byte:
//! RTCP packet types are 192..=223 (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205,
//! PSFB 206, XR 207), which collide only with RTP marker-bit packets of payload types
//! 64..=95 — the range RFC 5761 tells RTP not to use when multiplexing.
//!
//! `classify` looks at two bytes at most and validates nothing else; run the checked
//! parsers afterwards. A one-byte buffer in the RTP range is `Unknown`: it can be neither.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// What a datagram on a shared media port carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
    Stun,
    Dtls,
    Zrtp,
    Unknown,
}

/// Classifies a datagram by its first one or two bytes (see the module docs).
#[inline]
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf {
        [0..=3, ..] => PacketKind::Stun,
        [16..=19, ..] => PacketKind::Zrtp,
        [20..=63, ..] => PacketKind::Dtls,
        [128..=191, 192..=223, ..] => PacketKind::Rtcp,
        [128..=191, _, ..] => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

/// True if `packet_type` (the second byte of an RTCP header) is in the RTCP range 192..=223.
#[inline]
pub const fn is_rtcp_packet_type(packet_type: u8) -> bool {
    matches!(packet_type, 192..=223)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PacketKind::*;

    #[test]
    fn real_packets() {
        // RTP: V=2, PT 0 (PCMU), seq 1.
        let rtp = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1];
        // RTCP RR with no report blocks: V=2 RC=0, PT=201, length 1.
        let rr = [0x80, 201, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78];
        // STUN binding request: type 0x0001, length 0, magic cookie.
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        // DTLS 1.2 handshake record: content type 22, version 0xfefd.
        let dtls = [22, 0xfe, 0xfd, 0, 0];
        // ZRTP: first byte 0x10 (version 0001, reserved bits).
        let zrtp = [0x10, 0x00, 0x00, 0x01];
        assert_eq!(classify(&rtp), Rtp);
        assert_eq!(classify(&rr), Rtcp);
        assert_eq!(classify(&stun), Stun);
        assert_eq!(classify(&dtls), Dtls);
        assert_eq!(classify(&zrtp), Zrtp);
    }

    #[test]
    fn boundaries() {
        let table: &[(&[u8], PacketKind)] = &[
            (&[], Unknown),
            (&[0], Stun),
            (&[3, 0xff], Stun),
            (&[4], Unknown),
            (&[15], Unknown),
            (&[16], Zrtp),
            (&[19], Zrtp),
            (&[20], Dtls),
            (&[63], Dtls),
            (&[64, 0], Unknown), // TURN channel data (RFC 7983), not ours
            (&[127, 0], Unknown),
            (&[128], Unknown), // too short for RTP or RTCP
            (&[128, 0], Rtp),
            (&[128, 191], Rtp),
            (&[128, 192], Rtcp),
            (&[0x81, 200], Rtcp), // SR
            (&[0x80, 207], Rtcp), // XR
            (&[191, 223], Rtcp),
            (&[191, 224], Rtp), // marker + PT 96
            (&[0x80, 0x80 | 111], Rtp),
            (&[192, 200], Unknown), // version 3
            (&[255, 0], Unknown),
        ];
        for (buf, want) in table {
            assert_eq!(classify(buf), *want, "{buf:?}");
        }
    }

    #[test]
    fn every_first_byte_is_classified_consistently() {
        for b in 0..=255u8 {
            let kind = classify(&[b, 0x00]);
            let want = match b {
                0..=3 => Stun,
                16..=19 => Zrtp,
                20..=63 => Dtls,
                128..=191 => Rtp,
                _ => Unknown,
            };
            assert_eq!(kind, want, "first byte {b}");
        }
        for pt in 0..=255u8 {
            assert_eq!(is_rtcp_packet_type(pt), (192..=223).contains(&pt));
        }
    }
}
