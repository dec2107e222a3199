//! Media-line handling: rtcp-mux, RTCP attributes, ICE, loop protection, protocols, JSON, events.

use super::*;

/// baresip-style offer with rtcp-mux.
const MUX_OFFER: &str = "v=0\r\n\
o=- 1234 5678 IN IP4 192.0.2.30\r\n\
s=-\r\n\
c=IN IP4 192.0.2.30\r\n\
t=0 0\r\n\
m=audio 35006 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-mux\r\n\
a=sendrecv\r\n";

#[test]
fn rtcp_mux_passthrough_and_demux() {
    let mut m = mgr();
    let sdp = ok_sdp(&run(&mut m, offer("c", "a", MUX_OFFER), SEC));
    let l = lines(&sdp);
    assert_eq!(l[5], "m=audio 30002 RTP/AVP 0 8 101");
    assert!(l.contains(&"a=rtcp-mux"), "{sdp}");
    // Until the answer accepts mux, the separate RTCP port stays offered (RTP + 1), as
    // rtpengine does: a callee that declines mux sends its RTCP there.
    assert!(
        l.contains(&"a=rtcp:30003"),
        "an offered mux keeps the RTCP fallback port: {sdp}"
    );
    // The callee does not mux: the caller is told not to either (passthrough).
    let sdp = ok_sdp(&run(&mut m, answer("c", "a", "b", ANSWER), SEC));
    assert!(!sdp.contains("a=rtcp-mux"), "{sdp}");
    assert!(sdp.contains("a=rtcp:30001"), "{sdp}");
    let id = only_stream(&m);
    let a = m.backend().endpoint(id, Side::A).unwrap();
    assert!(!a.rtcp_mux);
    assert_eq!(a.rtcp_dest(), addr("192.0.2.30:35007"));

    // demux: the callee gets no rtcp-mux, the caller keeps it.
    let mut m = mgr();
    let sdp = ok_sdp(&run(
        &mut m,
        offer("c", "a", MUX_OFFER).with("rtcp-mux", Owned::List(vec![Owned::str("demux")])),
        SEC,
    ));
    assert!(!sdp.contains("a=rtcp-mux"), "{sdp}");
    assert!(sdp.contains("a=rtcp:30003"), "{sdp}");
    let sdp = ok_sdp(&run(&mut m, answer("c", "a", "b", ANSWER), SEC));
    assert!(sdp.contains("a=rtcp-mux"), "{sdp}");
    let id = only_stream(&m);
    let a = m.backend().endpoint(id, Side::A).unwrap();
    assert!(a.rtcp_mux);
    assert_eq!(a.rtcp_dest(), addr("192.0.2.30:35006"));
    assert!(!m.backend().endpoint(id, Side::B).unwrap().rtcp_mux);
}

#[test]
fn rtcp_attribute_flags() {
    let mut m = mgr();
    let sdp = ok_sdp(&run(
        &mut m,
        offer("c", "a", OFFER).with("flags", Owned::List(vec![Owned::str("no-rtcp-attribute")])),
        SEC,
    ));
    assert!(!sdp.contains("a=rtcp"), "{sdp}");
    let sdp = ok_sdp(&run(
        &mut m,
        offer("c2", "a", OFFER).with(
            "flags",
            Owned::List(vec![Owned::str("full-rtcp-attribute")]),
        ),
        SEC,
    ));
    assert!(sdp.contains("a=rtcp:30007 IN IP4 203.0.113.1\r\n"), "{sdp}");
}

#[test]
fn ice_is_removed_from_relayed_media() {
    let mut m = mgr();
    let ice = format!(
        "{OFFER}a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
         a=candidate:1 1 UDP 2130706431 192.0.2.10 6000 typ host\r\n"
    );
    let r = run(&mut m, offer("c", "a", &ice).with("ICE", "force"), SEC);
    let sdp = ok_sdp(&r);
    assert!(
        !sdp.contains("a=candidate") && !sdp.contains("a=ice-"),
        "{sdp}"
    );
    assert!(s(&r, "warning").contains("ICE"));
}

#[test]
fn loop_protect_passes_our_own_sdp_unchanged() {
    let mut m = mgr();
    let ours = ok_sdp(&run(&mut m, offer("c", "a", OFFER), SEC));
    let r = run(
        &mut m,
        offer("c-loop", "x", &ours).with("flags", Owned::List(vec![Owned::str("loop-protect")])),
        SEC,
    );
    assert_eq!(ok_sdp(&r), ours);
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn not_relayed_protocols_pass_with_warning() {
    let mut m = mgr();
    let msrp =
        format!("{OFFER}m=message 7000 TCP/MSRP *\r\na=path:msrp://192.0.2.10:7000/x;tcp\r\n");
    let r = run(&mut m, offer("c", "a", &msrp), SEC);
    let sdp = ok_sdp(&r);
    assert!(
        sdp.contains("m=message 7000 TCP/MSRP *\r\nc=IN IP4 192.0.2.10\r\n"),
        "{sdp}"
    );
    assert!(s(&r, "warning").contains("TCP/MSRP"));
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn json_requests_get_json_replies() {
    let mut m = mgr();
    let (r, fmt) = handle_body(&mut m, br#"{"command":"ping"}"#, SEC);
    assert_eq!((fmt, s(&r, "result")), (BodyFormat::Json, "pong"));
    let body = format!(
        r#"{{"command":"offer","call-id":"j","from-tag":"a","sdp":{}}}"#,
        serde_json::to_string(OFFER).unwrap()
    );
    let (r, fmt) = handle_body(&mut m, body.as_bytes(), SEC);
    assert_eq!(fmt, BodyFormat::Json);
    assert!(ok_sdp(&r).contains("m=audio 30002"));
}

#[test]
fn backend_events_are_drained_once() {
    let mut m = mgr();
    run(&mut m, offer("c", "a", OFFER), SEC);
    let id = only_stream(&m);
    m.backend_mut().push_event(MediaEvent {
        stream: id,
        side: Side::A,
        rtcp: false,
        kind: LatchEventKind::Confirmed,
        addr: "192.0.2.10:6000".parse().unwrap(),
    });
    assert_eq!(m.drain_events(), 1);
    assert_eq!(m.drain_events(), 0);
}

#[test]
fn unknown_direction_interface_is_warned() {
    let mut m = mgr();
    let r = run(
        &mut m,
        offer("c", "a", OFFER).with(
            "direction",
            Owned::List(vec![Owned::str("default"), Owned::str("external")]),
        ),
        SEC,
    );
    assert!(ok_sdp(&r).contains("c=IN IP4 203.0.113.1"));
    assert_eq!(
        s(&r, "warning"),
        "Unknown interface external: default interface used"
    );
}
