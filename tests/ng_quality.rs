//! The `SSRC` block of ng `query`/`delete` (issue 15), sans-IO: the handler over the
//! FakeBackend, with the figures a data plane would publish set by hand. Checks rtpengine's
//! shape (per SSRC: `average MOS` / `lowest MOS` / `highest MOS` with `MOS` × 10, `reported
//! at`, `packet loss`, `jitter`, `round-trip time`, `samples`) and that the values follow
//! the media: a clean direction scores 4.3, one with 10 % loss 3.3-3.4.

use rtpanchor::control::bencode::Owned;
use rtpanchor::control::handler::handle_body;
use rtpanchor::session::backend::{SenderReportSeen, StreamStats};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::manager::{ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;
use rtpanchor::time::NANOS_PER_SEC;

const S: u64 = NANOS_PER_SEC;
const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const SDP_B: &str = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

fn bstr(s: &str) -> String {
    format!("{}:{}", s.len(), s)
}

fn ask(mgr: &mut SessionManager<FakeBackend>, body: &str, now: u64) -> Owned {
    let (reply, _) = handle_body(mgr, body.as_bytes(), now);
    assert_eq!(
        reply.get("result").and_then(Owned::as_str),
        Some("ok"),
        "{reply:?}"
    );
    reply
}

fn int(d: &Owned, path: &[&str]) -> i64 {
    let mut v = d;
    for k in path {
        v = v.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}"));
    }
    v.as_int().unwrap()
}

/// A: 1000 packets sent, none lost; B: 1000 expected, 100 lost. Each side reports on the
/// other's stream by RTCP and answered the other's SR (20 ms legs each way).
fn stats(reports: u64, at: u64) -> StreamStats {
    let mut st = StreamStats::default();
    for (side, lost, ssrc, fraction) in
        [(&mut st.a, 0i64, 0xaaaa, 26u8), (&mut st.b, 100, 0xbbbb, 0)]
    {
        side.quality.expected = 1000;
        side.quality.lost = lost;
        side.quality.packets = 1000 - lost as u64;
        side.quality.bytes = side.quality.packets * 172;
        side.quality.ssrc = ssrc;
        side.quality.clock_rate_hz = 8000;
        side.quality.extended_highest_seq = 1999;
        side.rtp.packets = side.quality.packets;
        side.rtp.last_packet_ns = at;
        // This side's report: about the other's stream (A hears B's 10 % loss).
        side.rtcp_report.reports = reports;
        side.rtcp_report.fraction_lost = fraction;
        side.rtcp_report.jitter_rtp_units = 16; // 2 ms
        side.rtcp_report.report_at_ns = at;
        side.rtcp_report.last_sr = 0x5150 + u32::from(fraction);
        side.rtcp_report.delay_since_last_sr = 65_536 / 10; // 100 ms
        side.rtcp.last_packet_ns = at;
    }
    // Each SR passed the relay 120 ms before the other's report: 20 ms legs.
    st.b.rtcp_report.sender_reports[0] = SenderReportSeen {
        ntp_mid: 0x5150 + 26,
        at_ns: at - 120_000_000,
    };
    st.a.rtcp_report.sender_reports[0] = SenderReportSeen {
        ntp_mid: 0x5150,
        at_ns: at - 120_000_000,
    };
    st
}

#[test]
fn delete_reports_mos_per_ssrc_in_rtpengine_shape() {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    let mut mgr = SessionManager::new(FakeBackend::new(40000, 40999).unwrap(), cfg, S);
    ask(
        &mut mgr,
        &format!(
            "d7:command5:offer7:call-id1:c8:from-tag1:a3:sdp{}e",
            bstr(SDP_A)
        ),
        S,
    );
    ask(
        &mut mgr,
        &format!(
            "d7:command6:answer7:call-id1:c8:from-tag1:a6:to-tag1:b3:sdp{}e",
            bstr(SDP_B)
        ),
        S,
    );
    let id = *mgr.backend().streams().next().unwrap().0;
    // Before any media: an empty block.
    let q = ask(&mut mgr, "d7:command5:query7:call-id1:ce", 2 * S);
    assert_eq!(q.get("SSRC"), Some(&Owned::dict()));

    // Two rounds of reports, sampled by the sweep.
    for (n, t) in [(1u64, 10 * S), (2, 15 * S)] {
        assert!(mgr.backend_mut().set_stats(id, stats(n, t)));
        for k in 0..3 {
            mgr.tick(t + k * S / 100);
        }
    }
    let r = ask(
        &mut mgr,
        "d7:command6:delete7:call-id1:c8:from-tag1:ae",
        16 * S,
    );
    let ssrc = r.get("SSRC").unwrap();
    let keys: Vec<&str> = ssrc
        .as_dict()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys.len(), 2, "{ssrc:?}");
    // A (0xaaaa = 43690) hears B's stream with 10 % loss; B (48059) hears A's clean one.
    let a = ssrc.get("43690").unwrap();
    let b = ssrc.get("48059").unwrap();
    // A's first sample lacked B's leg (no end-to-end round trip): 3.4; the second, with
    // 40 ms end to end: 3.3.
    assert_eq!(int(a, &["highest MOS", "MOS"]), 34, "{a:?}");
    assert_eq!(int(a, &["lowest MOS", "MOS"]), 33, "{a:?}");
    assert_eq!(int(a, &["average MOS", "MOS"]), 33, "{a:?}");
    for k in ["average MOS", "lowest MOS", "highest MOS"] {
        // Clean, 22 ms one way (20 + 2 ms jitter): R = 92.7, 4.3.
        assert_eq!(int(b, &[k, "MOS"]), 43, "{b:?}");
        assert_eq!(int(a, &[k, "packet loss"]), 10);
        assert_eq!(int(b, &[k, "packet loss"]), 0);
        assert_eq!(int(a, &[k, "jitter"]), 2);
        // 120 ms between SR and report, less DLSR 6553/65536 s: a 20 ms leg.
        let leg = int(a, &[k, "round-trip time leg"]);
        assert!((19_900..=20_100).contains(&leg), "{leg}");
    }
    let rtt = int(a, &["lowest MOS", "round-trip time"]);
    assert!((39_900..=40_100).contains(&rtt), "{rtt}");
    assert_eq!(int(a, &["highest MOS", "round-trip time"]), 0);
    assert_eq!(int(a, &["average MOS", "samples"]), 2);
    assert!(int(a, &["lowest MOS", "reported at"]) >= 10);
    assert_eq!(int(a, &["packets"]), 1000);
    assert_eq!(int(b, &["packets"]), 900);
    assert_eq!(int(a, &["last RTP seq"]), 1999);
    assert_eq!(
        a.get("MOS progression")
            .and_then(|p| p.get("entries"))
            .and_then(Owned::as_list)
            .map(<[Owned]>::len),
        Some(2)
    );
}
