//! The manager's unit tests through the fake backend, and the fixtures the plan and
//! allocation tests share.

use super::*;
use crate::session::backend::BackendError;
use crate::session::fake::FakeBackend;
use crate::session::model::{RtcpMuxPolicy, MAX_DIALOGUES, MAX_TOKEN_LEN};
use crate::session::negotiate::NegotiateOptions;

pub(super) const S: Nanos = NANOS_PER_SEC;
pub(super) const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\nm=video 6002 RTP/AVP 96\r\n";
pub(super) const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";

fn mgr() -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(30000, 30999).unwrap(), cfg, S)
}

pub(super) fn sig<'a>(from: &'a str, to: Option<&'a str>, sdp: &'a str) -> Signal<'a> {
    Signal {
        call_id: "c",
        from_tag: from,
        to_tag: to,
        sdp: sdp.as_bytes(),
        ..Signal::default()
    }
}

#[test]
fn answer_rejecting_a_stream_closes_it() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    assert_eq!(m.backend().open_count(), 2);
    let out = m.answer(&sig("a", Some("b"), ANSWER), &o, S).unwrap();
    let text = String::from_utf8(out.sdp).unwrap();
    assert!(text.contains("m=audio 30000 RTP/AVP 0\r\n"), "{text}");
    assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
    assert_eq!(m.backend().open_count(), 1);
    let call = m.call("c").unwrap();
    assert!(call.dialogues[0].answered);
    assert!(call.dialogues[0].media[1].stream.is_none());
}

#[test]
fn callee_update_before_answer_names_side_b() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    // Early-dialog UPDATE from the callee: from-tag b, to-tag a, no answer yet.
    let out = m.offer(&sig("b", Some("a"), ANSWER), &o, 2 * S).unwrap();
    assert!(String::from_utf8(out.sdp)
        .unwrap()
        .contains("m=audio 30000 "));
    let d = &m.call("c").unwrap().dialogues[0];
    assert_eq!((d.b_tag.as_deref(), d.offerer), (Some("b"), Side::B));
    assert_eq!(m.call("c").unwrap().dialogues.len(), 1);
}

#[test]
fn shorter_reoffer_closes_dropped_lines() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    let audio_only = OFFER.replace("m=video 6002 RTP/AVP 96\r\n", "");
    m.offer(&sig("a", None, &audio_only), &o, S).unwrap();
    assert_eq!(m.backend().open_count(), 1);
    assert_eq!(m.call("c").unwrap().dialogues[0].media.len(), 1);
}

#[test]
fn branches_per_call_are_bounded() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    for n in 0..MAX_DIALOGUES {
        let b = format!("br{n}");
        let s = Signal {
            via_branch: Some(&b),
            ..sig("a", None, OFFER)
        };
        m.offer(&s, &o, S).unwrap();
    }
    let s = Signal {
        via_branch: Some("one-too-many"),
        ..sig("a", None, OFFER)
    };
    assert_eq!(
        m.offer(&s, &o, S),
        Err(SessionError::TooManyBranches(MAX_DIALOGUES))
    );
    assert_eq!(m.backend().open_count(), 2 * MAX_DIALOGUES);
}

#[test]
fn hostile_tokens_are_refused_before_any_allocation() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    let long = "x".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        m.offer(&sig(&long, None, OFFER), &o, S),
        Err(SessionError::TooLong("from-tag"))
    );
    assert_eq!(
        m.offer(&sig("", None, OFFER), &o, S),
        Err(SessionError::Empty("from-tag"))
    );
    assert!(m.offer(&sig("a", None, "v=1\r\n"), &o, S).is_err());
    assert_eq!(m.backend().opens, 0);
    assert_eq!(m.call_count(), 0);
}

#[test]
fn backend_failure_other_than_ports_is_an_error_not_a_load_limit() {
    let mut m = mgr();
    m.backend_mut().fail_next_open = Some(BackendError::Unavailable("worker gone".into()));
    let e = m
        .offer(&sig("a", None, OFFER), &NegotiateOptions::default(), S)
        .unwrap_err();
    assert!(!e.is_load_limit());
    assert_eq!(
        e.to_string(),
        "Media backend failure: data plane unavailable: worker gone"
    );
    assert_eq!(m.backend().open_count(), 0);
}

const MUX_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtcp-mux\r\n";
const PLAIN_ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n";
const MUX_ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\na=rtcp-mux\r\n";

fn a_rtcp_line(sdp: &[u8]) -> String {
    let text = String::from_utf8(sdp.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with("a=rtcp:"))
        .unwrap_or_else(|| panic!("no a=rtcp in {text}"))
        .to_owned()
}

/// An offer with rtcp-mux keeps the separate RTCP port named (RTP + 1) beside `a=rtcp-mux`;
/// when the answer declines mux, both ends fall back to their separate RTCP addresses.
#[test]
fn mux_offer_keeps_the_rtcp_fallback_until_the_answer_declines() {
    for policy in [
        RtcpMuxPolicy::Passthrough,
        RtcpMuxPolicy::Accept,
        RtcpMuxPolicy::Offer,
    ] {
        let mut m = mgr();
        let o = NegotiateOptions {
            rtcp_mux: policy,
            ..NegotiateOptions::default()
        };
        let out = m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
        let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
        let text = String::from_utf8(out.sdp.clone()).unwrap();
        assert!(text.contains("a=rtcp-mux\r\n"), "{policy:?}: {text}");
        assert_eq!(
            a_rtcp_line(&out.sdp),
            format!("a=rtcp:{}", s.b_ports.rtp + 1),
            "{policy:?}"
        );
        let ans = m
            .answer(&sig("a", Some("b"), PLAIN_ANSWER), &o, 2 * S)
            .unwrap();
        let text = String::from_utf8(ans.sdp.clone()).unwrap();
        // `accept`: the relay muxes with the offerer itself, whatever the answerer does.
        let a_mux = policy == RtcpMuxPolicy::Accept;
        assert_eq!(text.contains("a=rtcp-mux"), a_mux, "{policy:?}: {text}");
        let a_rtcp = if a_mux {
            s.a_ports.rtp
        } else {
            s.a_ports.rtp + 1
        };
        assert_eq!(a_rtcp_line(&ans.sdp), format!("a=rtcp:{a_rtcp}"));
        let (a, b) = (
            m.backend().endpoint(s.id, Side::A).unwrap(),
            m.backend().endpoint(s.id, Side::B).unwrap(),
        );
        assert_eq!((a.rtcp_mux, b.rtcp_mux), (a_mux, false), "{policy:?}");
        let a_dest = if a_mux {
            "192.0.2.10:6000"
        } else {
            "192.0.2.10:6001"
        };
        assert_eq!(a.rtcp_dest(), Some(a_dest.parse().unwrap()));
        assert_eq!(b.rtcp_dest(), Some("198.51.100.20:16001".parse().unwrap()));
        let q = m.query("c").unwrap();
        let muxed = q
            .tags
            .iter()
            .flat_map(|t| &t.medias)
            .filter(|md| md.rtcp_mux)
            .count();
        assert_eq!(muxed, usize::from(a_mux), "{policy:?}");
    }
}

#[test]
fn mux_accepted_by_the_answer_is_used_and_require_offers_no_fallback() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
    let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
    let ans = m
        .answer(&sig("a", Some("b"), MUX_ANSWER), &o, 2 * S)
        .unwrap();
    // The answer tells the offerer mux is on: a=rtcp names the RTP port.
    assert_eq!(a_rtcp_line(&ans.sdp), format!("a=rtcp:{}", s.a_ports.rtp));
    let (a, b) = (
        m.backend().endpoint(s.id, Side::A).unwrap(),
        m.backend().endpoint(s.id, Side::B).unwrap(),
    );
    assert!(a.rtcp_mux && b.rtcp_mux);
    assert_eq!(a.rtcp_dest(), Some("192.0.2.10:6000".parse().unwrap()));
    let q = m.query("c").unwrap();
    let medias: Vec<_> = q.tags.iter().flat_map(|t| &t.medias).collect();
    assert_eq!(medias.len(), 2);
    assert!(medias.iter().all(|md| md.rtcp_mux));
    // The fallback address stays known (rtpengine lists it on the RTCP stream).
    assert!(medias
        .iter()
        .any(|md| md.rtcp_endpoint == Some("192.0.2.10:6001".parse().unwrap())));

    let mut m = mgr();
    let o = NegotiateOptions {
        rtcp_mux: RtcpMuxPolicy::Require,
        ..NegotiateOptions::default()
    };
    let out = m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
    let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
    assert_eq!(a_rtcp_line(&out.sdp), format!("a=rtcp:{}", s.b_ports.rtp));
}

/// Once the answer accepted mux, a re-offer with mux (either way) names the RTP port alone:
/// the fallback is for an answer not yet known.
#[test]
fn reoffer_after_accepted_mux_offers_no_fallback() {
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), MUX_ANSWER), &o, 2 * S)
        .unwrap();
    let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
    let re = m.offer(&sig("a", Some("b"), MUX_OFFER), &o, 3 * S).unwrap();
    assert_eq!(a_rtcp_line(&re.sdp), format!("a=rtcp:{}", s.b_ports.rtp));
    let from_b = m
        .offer(&sig("b", Some("a"), MUX_ANSWER), &o, 4 * S)
        .unwrap();
    assert_eq!(
        a_rtcp_line(&from_b.sdp),
        format!("a=rtcp:{}", s.a_ports.rtp)
    );

    // Declined before: the re-offer keeps the fallback.
    let mut m = mgr();
    m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), PLAIN_ANSWER), &o, 2 * S)
        .unwrap();
    let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
    let re = m.offer(&sig("a", Some("b"), MUX_OFFER), &o, 3 * S).unwrap();
    assert_eq!(
        a_rtcp_line(&re.sdp),
        format!("a=rtcp:{}", s.b_ports.rtp + 1)
    );
}

/// One socket per side that muxes: the answer settles each side's separate RTCP socket
/// (closed where mux is on), and a re-offer without mux has them bound again at once.
#[test]
fn the_answer_settles_which_sides_keep_an_rtcp_socket() {
    let plain_offer = MUX_OFFER.replace("a=rtcp-mux\r\n", "");
    let rtcp_open = |m: &SessionManager<FakeBackend>| {
        let s = m.call("c").unwrap().dialogues[0].media[0].stream.unwrap();
        m.backend().stream(s.id).unwrap().rtcp_open
    };
    for (policy, answer, after) in [
        (RtcpMuxPolicy::Passthrough, MUX_ANSWER, [false, false]),
        (RtcpMuxPolicy::Passthrough, PLAIN_ANSWER, [true, true]),
        (RtcpMuxPolicy::Accept, PLAIN_ANSWER, [false, true]),
    ] {
        let mut m = mgr();
        let o = NegotiateOptions {
            rtcp_mux: policy,
            ..NegotiateOptions::default()
        };
        m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
        assert_eq!(rtcp_open(&m), [true, true], "bound until the answer");
        m.answer(&sig("a", Some("b"), answer), &o, 2 * S).unwrap();
        assert_eq!(rtcp_open(&m), after, "{policy:?}");
    }
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, MUX_OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), MUX_ANSWER), &o, 2 * S)
        .unwrap();
    // A re-offer with mux keeps them closed; one without binds both again before the answer.
    m.offer(&sig("a", Some("b"), MUX_OFFER), &o, 3 * S).unwrap();
    assert_eq!(rtcp_open(&m), [false, false]);
    m.offer(&sig("a", Some("b"), &plain_offer), &o, 4 * S)
        .unwrap();
    assert_eq!(rtcp_open(&m), [true, true]);
    m.answer(&sig("a", Some("b"), PLAIN_ANSWER), &o, 5 * S)
        .unwrap();
    assert_eq!(rtcp_open(&m), [true, true]);
}

#[test]
fn record_carries_the_kernel_share_per_direction() {
    use crate::session::backend::KernelStatus;
    use crate::session::record::EndReason;
    let mut m = mgr();
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    m.set_record_sink(tx);
    let o = NegotiateOptions::default();
    let audio = OFFER.replace("m=video 6002 RTP/AVP 96\r\n", "");
    let answer = ANSWER.replace("m=video 0 RTP/AVP 96\r\n", "");
    m.offer(&sig("a", None, &audio), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), &answer), &o, S).unwrap();
    let id = m.call("c").unwrap().dialogues[0].media[0]
        .stream
        .unwrap()
        .id;
    let mut st = crate::session::backend::StreamStats::default();
    st.a.rtp.packets = 400;
    st.a.kernel_packets = 300;
    st.a.kernel = KernelStatus::InKernel;
    st.b.rtp.packets = 200;
    st.b.kernel = KernelStatus::TakenBack;
    assert!(m.backend_mut().set_stats(id, st));
    m.terminate("c", EndReason::Terminate, 3 * S).unwrap();
    let r = rx.try_recv().unwrap();
    let dirs = &r.streams[0].directions;
    let from_a = dirs.iter().find(|d| d.from_tag == "a").unwrap();
    assert_eq!(
        (from_a.kernel_packets, from_a.kernel_percent, from_a.kernel),
        (300, 75.0, "in_kernel")
    );
    let from_b = dirs.iter().find(|d| d.from_tag == "b").unwrap();
    assert_eq!(
        (from_b.kernel_packets, from_b.kernel_percent, from_b.kernel),
        (0, 0.0, "taken_back")
    );
}

#[test]
fn scrape_figures_sum_the_live_streams_in_one_pass() {
    use crate::session::backend::KernelStatus;
    let mut m = mgr();
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), ANSWER), &o, S).unwrap();
    let id = m.call("c").unwrap().dialogues[0].media[0]
        .stream
        .unwrap()
        .id;
    let mut st = crate::session::backend::StreamStats::default();
    st.a.quality.lost = 7;
    st.a.quality.duplicates = 2;
    st.b.quality.lost = -3;
    st.b.quality.reordered = 4;
    st.a.kernel = KernelStatus::InKernel;
    st.b.kernel = KernelStatus::NotLatched;
    assert!(m.backend_mut().set_stats(id, st));
    let f = m.scrape_figures(5 * S);
    assert_eq!((f.sessions, f.streams, f.managed), (1, 1, 1));
    assert_eq!((f.uptime_secs, f.pairs_used), (4, 2));
    assert_eq!(
        (f.quality.lost, f.quality.duplicates, f.quality.reordered),
        (7, 2, 4)
    );
    let at = |k: KernelStatus| f.kernel[k.code() as usize];
    assert_eq!(at(KernelStatus::InKernel), 1);
    assert_eq!(at(KernelStatus::NotLatched), 1);
    assert_eq!(f.kernel.iter().sum::<u64>(), 2);
}
