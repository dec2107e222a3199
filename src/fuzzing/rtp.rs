//! The RTP target: the RTP header's parse/emit round trip, the RTCP views, and the stream
//! tracker fed the packets (directly, and handed to the kernel path and back at every
//! packet).

use super::input::Input;
use crate::rtp::rtcp::{self, ReportBlock, SenderInfo};
use crate::rtp::stats::RtpStreamTracker;
use crate::rtp::{classify, ClockRateMap, RtpPacket, RtpRepr};

/// Most packets one input feeds the tracker.
const MAX_PACKETS: usize = 512;

/// `data` as a sequence of datagrams, each `[length][arrival delta in ms][bytes]`.
///
/// Invariants: a parsed RTP header emitted with its payload parses back to the same header
/// and payload; every RTCP report block and sender info emitted parses back the same; a
/// tracker exported and imported (the kernel hand-over) before every packet ends with the
/// same figures as one that never was; the figures are consistent (duplicates and
/// reordered within the packets seen, jitter within its maximum, loss fraction in 0..=1).
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mut clocks = ClockRateMap::new();
    for (pt, hz) in [(0u8, 8000u32), (8, 8000), (96, 48_000), (101, 8000)] {
        clocks.insert(pt, hz);
    }
    let mut direct = RtpStreamTracker::new();
    let mut handed = RtpStreamTracker::new();
    let mut now: u64 = 1_000_000_000;
    let mut fed = 0u64;
    for _ in 0..MAX_PACKETS {
        if input.is_empty() {
            break;
        }
        let len = usize::from(input.byte());
        now += u64::from(input.byte()) * 1_000_000;
        let pkt = input.take(len);
        let _ = classify(pkt);
        rtcp_views(pkt);
        let Ok(repr) = RtpRepr::parse(pkt) else {
            continue;
        };
        let Ok(view) = RtpPacket::new_checked(pkt) else {
            panic!("RtpRepr parsed what RtpPacket refuses");
        };
        let payload = view.payload();
        let bytes = match repr.to_vec(payload) {
            Ok(b) => b,
            Err(e) => panic!("emit of a parsed header failed: {e}"),
        };
        assert_eq!(RtpRepr::parse(&bytes).ok(), Some(repr), "header round trip");
        let Ok(again) = RtpPacket::new_checked(&bytes[..]) else {
            panic!("emitted packet does not check");
        };
        assert_eq!(again.payload(), payload, "payload round trip");

        direct.on_rtp_packet(&view, now, &clocks);
        if let Some(parts) = handed.export() {
            handed = RtpStreamTracker::import(&parts);
        }
        handed.on_rtp_packet(&view, now, &clocks);
        fed += 1;
    }
    let s = direct.snapshot();
    assert_eq!(handed.snapshot(), s, "hand-over changed the figures");
    assert_eq!(s.packets, fed);
    assert!(
        s.duplicates <= s.packets && s.reordered <= s.packets,
        "{s:?}"
    );
    assert!(s.jitter_rtp_units <= s.max_jitter_rtp_units, "{s:?}");
    assert!((0.0..=1.0).contains(&s.loss_fraction), "{s:?}");
}

fn rtcp_views(pkt: &[u8]) {
    let valid = rtcp::validate_compound(pkt).is_ok();
    let mut blocks = 0usize;
    let mut infos = 0usize;
    for p in rtcp::iter_compound(pkt).flatten() {
        let _ = (
            p.version(),
            p.padding(),
            p.count(),
            p.packet_type(),
            p.ssrc(),
        );
        assert!(p.bytes().len() <= pkt.len());
        if let (Some(_), Some(info)) = (p.ssrc(), p.sender_info()) {
            infos += 1;
            let mut out = [0u8; 20];
            assert!(info.emit(&mut out).is_ok());
            assert_eq!(
                SenderInfo::parse(&out),
                Some(info),
                "sender info round trip"
            );
        }
        for b in p.report_blocks() {
            blocks += 1;
            let mut out = [0u8; 24];
            assert!(b.emit(&mut out).is_ok());
            assert_eq!(ReportBlock::parse(&out), Some(b), "report block round trip");
        }
    }
    let visited_blocks = rtcp::for_each_report_block(pkt, |_, _| {});
    let visited_infos = rtcp::for_each_sender_info(pkt, |_, _| {});
    if valid {
        assert_eq!(
            visited_blocks,
            Ok(blocks),
            "report blocks of a valid compound"
        );
        assert_eq!(visited_infos, Ok(infos), "sender infos of a valid compound");
    } else {
        assert!(visited_blocks.is_err() && visited_infos.is_err());
    }
}
