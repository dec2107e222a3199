//! ng offer/answer/delete/query flows through the handler with the FakeBackend: no sockets,
//! a fake clock, real SDP bodies (SIPp's and baresip's shapes), exact rewritten lines.

use rtpanchor::control::bencode::Owned;
use rtpanchor::control::handler::handle_body;
use rtpanchor::control::ng::BodyFormat;
use rtpanchor::session::backend::{
    LatchEventKind, MediaBackend, MediaEvent, Side, SocketCounters, StreamId, StreamStats,
};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::latch::LatchMode;
use rtpanchor::session::manager::{CloseReason, ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;

const SEC: u64 = 1_000_000_000;
const RELAY: &str = "203.0.113.1";

/// SIPp's uac offer shape, caller at 192.0.2.10:6000.
const OFFER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// SIPp's uas answer shape, callee at 198.51.100.20:16000.
const ANSWER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 16000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

fn cfg() -> ManagerConfig {
    ManagerConfig {
        interfaces: vec![RelayInterface::new("default", RELAY.parse().unwrap())],
        port_min: 30000,
        port_max: 30099,
        ..ManagerConfig::default()
    }
}

fn mgr_with(cfg: ManagerConfig, min: u16, max: u16) -> SessionManager<FakeBackend> {
    SessionManager::new(FakeBackend::new(min, max).unwrap(), cfg, SEC)
}

/// A manager (and fake backend) with a port range of its own.
fn mgr_ports(min: u16, max: u16) -> SessionManager<FakeBackend> {
    mgr_with(
        ManagerConfig {
            port_min: min,
            port_max: max,
            ..cfg()
        },
        min,
        max,
    )
}

fn mgr() -> SessionManager<FakeBackend> {
    mgr_with(cfg(), 30000, 30099)
}

fn run(m: &mut SessionManager<FakeBackend>, req: Owned, now: u64) -> Owned {
    let (reply, fmt) = handle_body(m, &req.to_bencode(), now);
    assert_eq!(fmt, BodyFormat::Bencode);
    reply
}

fn req(command: &str) -> Owned {
    Owned::dict().with("command", command)
}

fn offer(call: &str, from: &str, sdp: &str) -> Owned {
    req("offer")
        .with("call-id", call)
        .with("from-tag", from)
        .with("sdp", sdp)
}

fn answer(call: &str, from: &str, to: &str, sdp: &str) -> Owned {
    req("answer")
        .with("call-id", call)
        .with("from-tag", from)
        .with("to-tag", to)
        .with("sdp", sdp)
}

fn s<'a>(o: &'a Owned, key: &str) -> &'a str {
    o.get(key)
        .and_then(Owned::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {o}"))
}

fn i(o: &Owned, key: &str) -> i64 {
    o.get(key)
        .and_then(Owned::as_int)
        .unwrap_or_else(|| panic!("no int {key:?} in {o}"))
}

fn ok_sdp(r: &Owned) -> String {
    assert_eq!(s(r, "result"), "ok", "{r}");
    s(r, "sdp").to_owned()
}

fn lines(sdp: &str) -> Vec<&str> {
    sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
}

/// The only stream the fake has open.
fn only_stream(m: &SessionManager<FakeBackend>) -> StreamId {
    let ids: Vec<StreamId> = m.backend().streams().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1, "expected one open stream");
    ids[0]
}

fn addr(s: &str) -> Option<std::net::SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn ping_pongs() {
    let mut m = mgr();
    assert_eq!(s(&run(&mut m, req("ping"), SEC), "result"), "pong");
}

#[test]
fn offer_and_answer_rewrite_exact_lines() {
    let mut m = mgr();
    let r = run(&mut m, offer("c1", "tagA", OFFER), SEC);
    assert_eq!(
        lines(&ok_sdp(&r)),
        [
            "v=0",
            "o=user1 53655765 2353687637 IN IP4 192.0.2.10",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30002 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=rtcp:30003",
        ]
    );
    assert!(r.get("warning").is_none(), "{r}");
    let id = only_stream(&m);
    let st = m.backend().stream(id).unwrap();
    assert_eq!(
        (st.opened.a_ports.rtp, st.opened.b_ports.rtp),
        (30000, 30002)
    );
    assert_eq!(st.spec.a.rtp(), addr("192.0.2.10:6000"));
    assert_eq!(st.spec.a.rtcp.get(), addr("192.0.2.10:6001"));
    assert_eq!(st.spec.b.rtp(), None, "callee unknown until the answer");

    let r = run(&mut m, answer("c1", "tagA", "tagB", ANSWER), 2 * SEC);
    assert_eq!(
        lines(&ok_sdp(&r)),
        [
            "v=0",
            "o=user1 53655765 2353687637 IN IP4 198.51.100.20",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=rtcp:30001",
        ]
    );
    let st = m.backend().stream(id).unwrap();
    assert_eq!(st.spec.b.rtp(), addr("198.51.100.20:16000"));
    assert_eq!(st.spec.b.rtcp.get(), addr("198.51.100.20:16001"));
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn replace_origin_and_flags_from_kamailio() {
    let mut m = mgr();
    // Key order as Kamailio sends it (unsorted), with the flags it adds.
    let r = Owned::dict()
        .with("supports", Owned::List(vec![Owned::str("load limit")]))
        .with("sdp", OFFER)
        .with(
            "replace",
            Owned::List(vec![Owned::str("origin"), Owned::str("session-connection")]),
        )
        .with("call-id", "1-25725@127.0.0.1")
        .with(
            "received-from",
            Owned::List(vec![Owned::str("IP4"), Owned::str("127.0.0.1")]),
        )
        .with("from-tag", "25725SIPpTag09")
        .with("command", "offer");
    let sdp = ok_sdp(&run(&mut m, r, SEC));
    assert_eq!(
        lines(&sdp)[1],
        "o=user1 53655765 2353687637 IN IP4 203.0.113.1"
    );
    // received-from alone does not override the SDP address (trust-address is the default).
    let id = only_stream(&m);
    assert_eq!(
        m.backend().stream(id).unwrap().spec.a.rtp(),
        addr("192.0.2.10:6000")
    );
}

#[test]
fn repeated_offer_and_answer_are_idempotent() {
    let mut m = mgr();
    let o1 = run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let o2 = run(&mut m, offer("c1", "tagA", OFFER), SEC + 1);
    assert_eq!(o1, o2);
    let a1 = run(&mut m, answer("c1", "tagA", "tagB", ANSWER), 2 * SEC);
    let a2 = run(&mut m, answer("c1", "tagA", "tagB", ANSWER), 2 * SEC + 1);
    assert_eq!(a1, a2);
    // The offer retransmitted once more after the answer still gives the same SDP.
    let o3 = run(&mut m, offer("c1", "tagA", OFFER), 3 * SEC);
    assert_eq!(o1, o3);
    assert_eq!(m.backend().opens, 1);
    assert_eq!(m.backend().closes, 0);
    assert_eq!(m.backend().port_usage().0, 2);
}

#[test]
fn reoffer_keeps_ports_adds_and_closes_streams() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    let audio = only_stream(&m);

    // re-INVITE: caller moved to a new address and adds video.
    let reoffer = "v=0\r\n\
o=user1 53655765 2353687638 IN IP4 192.0.2.11\r\n\
s=-\r\n\
c=IN IP4 192.0.2.11\r\n\
t=0 0\r\n\
m=audio 6100 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 6200 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";
    let sdp = ok_sdp(&run(&mut m, offer("c1", "tagA", reoffer), 2 * SEC));
    let l = lines(&sdp);
    assert_eq!(
        l[5], "m=audio 30002 RTP/AVP 0",
        "unchanged stream keeps its ports"
    );
    assert_eq!(l[7], "a=rtcp:30003");
    assert_eq!(
        l[8], "m=video 30006 RTP/AVP 96",
        "added stream gets new ports"
    );
    assert_eq!(l[10], "a=rtcp:30007");
    assert_eq!(m.backend().opens, 2);
    let st = m.backend().stream(audio).unwrap();
    assert_eq!(
        st.spec.a.rtp(),
        addr("192.0.2.11:6100"),
        "remote address updated"
    );
    assert_eq!(
        st.spec.b.rtp(),
        addr("198.51.100.20:16000"),
        "callee side untouched"
    );
    let video = m.backend().stream_by_port(30004).map(|(id, _)| id).unwrap();
    assert_eq!(
        &*m.backend().stream(video).unwrap().spec.a.clock_rates,
        &[(96, 90000)]
    );

    // Next re-INVITE disables the video (port 0): stream closed, SDP keeps port 0.
    let disable = reoffer.replace("m=video 6200", "m=video 0");
    let sdp = ok_sdp(&run(&mut m, offer("c1", "tagA", &disable), 3 * SEC));
    let l = lines(&sdp);
    assert_eq!(l[8], "m=video 0 RTP/AVP 96");
    assert_eq!(l.len(), 10, "the disabled line is copied unchanged: {sdp}");
    assert!(m.backend().stream(video).is_none(), "video stream closed");
    assert!(m.backend().stream(audio).is_some(), "audio stream kept");
    assert_eq!(m.backend().closes, 1);
}

#[test]
fn late_offer_with_swapped_tags() {
    let mut m = mgr();
    // INVITE without SDP; the 200 carries the offer: from-tag = callee (swapped by Kamailio).
    let r = run(
        &mut m,
        offer("late", "calleeTag", ANSWER).with("to-tag", "callerTag"),
        SEC,
    );
    let sdp = ok_sdp(&r);
    assert!(sdp.contains("m=audio 30002 RTP/AVP 0"), "{sdp}");
    // The ACK carries the answer: from-tag = To-tag (callee), to-tag = From-tag (caller).
    let r = run(
        &mut m,
        answer("late", "calleeTag", "callerTag", OFFER),
        2 * SEC,
    );
    let sdp = ok_sdp(&r);
    assert!(sdp.contains("m=audio 30000 RTP/AVP 0"), "{sdp}");
    let id = only_stream(&m);
    let st = m.backend().stream(id).unwrap();
    assert_eq!(
        st.spec.a.rtp(),
        addr("198.51.100.20:16000"),
        "side A = the offerer (callee)"
    );
    assert_eq!(st.spec.b.rtp(), addr("192.0.2.10:6000"));
    // The same answer with the tags in rtpengine's other order is the same answer.
    let again = run(
        &mut m,
        answer("late", "callerTag", "calleeTag", OFFER),
        3 * SEC,
    );
    assert_eq!(ok_sdp(&again), sdp);
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn callee_reinvite_is_an_offer_from_the_callee_tag() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    let id = only_stream(&m);
    let moved = ANSWER.replace("198.51.100.20", "198.51.100.21");
    let r = run(
        &mut m,
        offer("c1", "tagB", &moved).with("to-tag", "tagA"),
        2 * SEC,
    );
    let sdp = ok_sdp(&r);
    assert!(
        sdp.contains("m=audio 30000 RTP/AVP 0"),
        "goes to the caller: {sdp}"
    );
    assert_eq!(
        m.backend().stream(id).unwrap().spec.b.rtp(),
        addr("198.51.100.21:16000")
    );
    // The caller answers; the reply goes to the callee with its own ports.
    let r = run(&mut m, answer("c1", "tagB", "tagA", OFFER), 3 * SEC);
    assert!(ok_sdp(&r).contains("m=audio 30002 RTP/AVP 0"));
    assert_eq!(m.backend().opens, 1);
    assert_eq!(
        m.backend().stream(id).unwrap().spec.a.rtp(),
        addr("192.0.2.10:6000")
    );
}

#[test]
fn forks_with_via_branch_get_their_own_streams() {
    let mut m = mgr();
    let o1 = run(
        &mut m,
        offer("f", "tagA", OFFER).with("via-branch", "br1"),
        SEC,
    );
    let o2 = run(
        &mut m,
        offer("f", "tagA", OFFER).with("via-branch", "br2"),
        SEC,
    );
    assert!(ok_sdp(&o1).contains("m=audio 30002 "));
    assert!(ok_sdp(&o2).contains("m=audio 30006 "));
    let b2 = ANSWER.replace("198.51.100.20", "198.51.100.22");
    let a2 = run(
        &mut m,
        answer("f", "tagA", "B2", &b2).with("via-branch", "br2"),
        2 * SEC,
    );
    let a1 = run(
        &mut m,
        answer("f", "tagA", "B1", ANSWER).with("via-branch", "br1"),
        2 * SEC,
    );
    assert!(ok_sdp(&a1).contains("m=audio 30000 "));
    assert!(ok_sdp(&a2).contains("m=audio 30004 "));
    let (s1, _) = m.backend().stream_by_port(30000).unwrap();
    let (s2, _) = m.backend().stream_by_port(30004).unwrap();
    assert_eq!(
        m.backend().endpoint(s1, Side::B).unwrap().rtp(),
        addr("198.51.100.20:16000")
    );
    assert_eq!(
        m.backend().endpoint(s2, Side::B).unwrap().rtp(),
        addr("198.51.100.22:16000")
    );

    // B1 fails (486): delete with to-tag removes only that branch.
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "f")
            .with("from-tag", "tagA")
            .with("to-tag", "B1"),
        3 * SEC,
    );
    assert_eq!(s(&r, "result"), "ok");
    assert!(m.backend().stream(s1).is_none());
    assert!(m.backend().stream(s2).is_some());
    let q = run(&mut m, req("query").with("call-id", "f"), 3 * SEC);
    let tags = q.get("tags").unwrap();
    assert!(tags.get("B2").is_some() && tags.get("B1").is_none(), "{q}");
}

#[test]
fn forks_without_via_branch_last_answer_retargets() {
    let mut m = mgr();
    run(&mut m, offer("f", "tagA", OFFER), SEC);
    let a1 = run(&mut m, answer("f", "tagA", "B1", ANSWER), 2 * SEC);
    let b2 = ANSWER.replace("198.51.100.20", "198.51.100.22");
    let a2 = run(&mut m, answer("f", "tagA", "B2", &b2), 3 * SEC);
    // Both forks were offered the same ports; the caller sees the same relay ports either way.
    assert!(ok_sdp(&a1).contains("m=audio 30000 "));
    assert!(ok_sdp(&a2).contains("m=audio 30000 "));
    let id = only_stream(&m);
    assert_eq!(
        m.backend().endpoint(id, Side::B).unwrap().rtp(),
        addr("198.51.100.22:16000")
    );
    let q = run(&mut m, req("query").with("call-id", "f"), 3 * SEC);
    let tags = q.get("tags").unwrap();
    assert!(tags.get("B2").is_some() && tags.get("B1").is_none(), "{q}");
    assert_eq!(m.backend().opens, 1);
}

fn stats_with(packets: u64, last_ns: u64) -> StreamStats {
    let mut st = StreamStats::default();
    st.a.rtp = SocketCounters {
        packets,
        bytes: packets * 172,
        errors: 1,
        last_packet_ns: last_ns,
    };
    st.b.rtp = SocketCounters {
        packets: packets + 1,
        bytes: (packets + 1) * 172,
        errors: 0,
        last_packet_ns: last_ns,
    };
    st.b.rtcp = SocketCounters {
        packets: 3,
        bytes: 300,
        errors: 0,
        last_packet_ns: last_ns,
    };
    st.a.quality.ssrc = 0xDEE0_EE8F;
    st.a.quality.jitter_ms = 0.352;
    st.a.quality.max_jitter_ms = 0.839;
    st.a.quality.lost = 2;
    st.a.quality.duplicates = 1;
    st.a.quality.reordered = 4;
    st.a.confirmed = true;
    st
}

#[test]
fn delete_whole_call_from_either_tag_returns_final_stats() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    let id = only_stream(&m);
    assert!(m.backend_mut().set_stats(id, stats_with(236, 5 * SEC)));
    // BYE from the callee: from-tag is the callee's.
    let r = run(
        &mut m,
        req("delete").with("call-id", "c1").with("from-tag", "tagB"),
        6 * SEC,
    );
    assert_eq!(s(&r, "result"), "ok");
    let totals = r.get("totals").unwrap();
    assert_eq!(i(totals.get("RTP").unwrap(), "packets"), 236 + 237);
    assert_eq!(i(totals.get("RTP").unwrap(), "errors"), 1);
    assert_eq!(i(totals.get("RTCP").unwrap(), "packets"), 3);
    assert_eq!(m.backend().open_count(), 0);
    assert_eq!(m.backend().port_usage().0, 0);

    // Repeated delete: ok + warning; with fatal: error.
    let r = run(
        &mut m,
        req("delete").with("call-id", "c1").with("from-tag", "tagB"),
        7 * SEC,
    );
    assert_eq!(s(&r, "result"), "ok");
    assert_eq!(s(&r, "warning"), "Call-ID not found or tags didn't match");
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "c1")
            .with("from-tag", "tagB")
            .with("flags", Owned::List(vec![Owned::str("fatal")])),
        7 * SEC,
    );
    assert_eq!(s(&r, "result"), "error");
    assert_eq!(
        s(&r, "error-reason"),
        "Call-ID not found or tags didn't match"
    );
    let st = run(&mut m, req("statistics"), 8 * SEC);
    let total = st
        .get("statistics")
        .unwrap()
        .get("totalstatistics")
        .unwrap();
    assert_eq!(i(total, "regularterminatedsessions"), 1);
    assert_eq!(i(total, "relayedpackets"), 236 + 237 + 3);
}

#[test]
fn delete_unknown_call_and_wrong_tag_warn() {
    let mut m = mgr();
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "no-such-call")
            .with("from-tag", "x"),
        SEC,
    );
    assert_eq!(
        r.to_bencode(),
        b"d7:warning38:Call-ID not found or tags didn't match6:result2:oke"
    );
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "c1")
            .with("from-tag", "stranger"),
        SEC,
    );
    assert_eq!(s(&r, "warning"), "Call-ID not found or tags didn't match");
    assert_eq!(m.backend().open_count(), 1, "wrong tag deletes nothing");
}

#[test]
fn delete_fast_omits_stats_and_delay_lingers() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "c1")
            .with("from-tag", "tagA")
            .with("flags", Owned::List(vec![Owned::str("fast")])),
        SEC,
    );
    assert_eq!(r.to_bencode(), b"d6:result2:oke");

    run(&mut m, offer("c2", "tagA", OFFER), SEC);
    let r = run(
        &mut m,
        req("delete")
            .with("call-id", "c2")
            .with("from-tag", "tagA")
            .with("delete delay", 5i64),
        10 * SEC,
    );
    assert_eq!(s(&r, "result"), "ok");
    assert!(r.get("tags").is_some());
    // Gone for signalling, still relaying until the delay runs out.
    let l = run(&mut m, req("list"), 10 * SEC);
    assert_eq!(l.get("calls").unwrap().as_list().unwrap().len(), 0);
    assert_eq!(m.backend().open_count(), 1);
    assert!(m.tick(14 * SEC).is_empty());
    assert_eq!(m.backend().open_count(), 1);
    let closed = m.tick(15 * SEC);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, CloseReason::DeleteDelayExpired);
    assert_eq!(&*closed[0].call_id, "c2");
    assert_eq!(m.backend().open_count(), 0);
}

#[test]
fn load_limit_when_ports_run_out_leaves_nothing_allocated() {
    // Two pairs: exactly one stream.
    let mut m = mgr_with(cfg(), 30000, 30003);
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let with_support =
        offer("c2", "tagA", OFFER).with("supports", Owned::List(vec![Owned::str("load limit")]));
    let r = run(&mut m, with_support, SEC);
    assert_eq!(
        r.to_bencode(),
        b"d6:result10:load limit7:message16:Ran out of portse"
    );
    let r = run(&mut m, offer("c2", "tagA", OFFER), SEC);
    assert_eq!(s(&r, "result"), "error");
    assert_eq!(s(&r, "error-reason"), "Ran out of ports");
    assert_eq!(m.call_count(), 1);

    // A two-stream re-offer where only the first fits: the partial open is undone.
    run(
        &mut m,
        req("delete").with("call-id", "c1").with("from-tag", "tagA"),
        SEC,
    );
    let mut m2 = mgr_with(cfg(), 30000, 30005); // three pairs: 1.5 streams
    let two = format!("{OFFER}m=audio 6002 RTP/AVP 0\r\n");
    let r = run(&mut m2, offer("c3", "tagA", &two), SEC);
    assert_eq!(s(&r, "error-reason"), "Ran out of ports");
    assert_eq!(m2.backend().open_count(), 0);
    assert_eq!(m2.backend().port_usage().0, 0);
    assert_eq!(m2.call_count(), 0);
    let st = run(&mut m2, req("statistics"), SEC);
    let total = st
        .get("statistics")
        .unwrap()
        .get("totalstatistics")
        .unwrap();
    assert_eq!(i(total, "rejectedsessions"), 1);
}

#[test]
fn max_sessions_answers_load_limit() {
    let mut c = cfg();
    c.max_sessions = 1;
    let mut m = mgr_with(c, 30000, 30099);
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let r = run(
        &mut m,
        offer("c2", "tagA", OFFER).with("supports", Owned::List(vec![Owned::str("load limit")])),
        SEC,
    );
    assert_eq!(s(&r, "result"), "load limit");
    assert_eq!(s(&r, "message"), "Parallel session limit reached");
    let r = run(&mut m, offer("c2", "tagA", OFFER), SEC);
    assert_eq!(s(&r, "error-reason"), "Parallel session limit reached");
    // The existing call can still be re-offered and answered.
    let r = run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    assert_eq!(s(&r, "result"), "ok");
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn media_timeout_via_tick() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    let id = only_stream(&m);
    assert!(m.tick(30 * SEC).is_empty());
    m.backend_mut().set_stats(id, stats_with(10, 50 * SEC));
    assert!(
        m.tick(100 * SEC).is_empty(),
        "packet at 50 s keeps it alive until 110 s"
    );
    let closed = m.tick(110 * SEC);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, CloseReason::Timeout);
    assert_eq!(closed[0].totals.rtp.packets, 21);
    assert_eq!(m.backend().open_count(), 0);
    let q = run(&mut m, req("query").with("call-id", "c1"), 111 * SEC);
    assert_eq!(s(&q, "error-reason"), "Unknown call-id");
    let st = run(&mut m, req("statistics"), 111 * SEC);
    let total = st
        .get("statistics")
        .unwrap()
        .get("totalstatistics")
        .unwrap();
    assert_eq!(i(total, "timeoutsessions"), 1);
    assert_eq!(i(total, "managedsessions"), 1);
}

#[test]
fn offer_without_answer_times_out_from_last_signal() {
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), 10 * SEC);
    assert!(m.tick(69 * SEC).is_empty());
    assert_eq!(m.tick(70 * SEC).len(), 1);
}

#[test]
fn query_shape_and_counters() {
    let mut m = mgr();
    run(
        &mut m,
        offer("c1", "tagA", OFFER).with("label", "caller"),
        SEC,
    );
    run(&mut m, answer("c1", "tagA", "tagB", ANSWER), SEC);
    let id = only_stream(&m);
    m.backend_mut().set_stats(id, stats_with(100, 2 * SEC));
    let q = run(&mut m, req("query").with("call-id", "c1"), 3 * SEC);
    assert_eq!(s(&q, "result"), "ok");
    for k in ["created", "created_us", "last signal"] {
        i(&q, k);
    }
    assert!(q.get("SSRC").is_some());
    let a = q.get("tags").unwrap().get("tagA").unwrap();
    assert_eq!(s(a, "tag"), "tagA");
    assert_eq!(s(a, "label"), "caller");
    assert_eq!(s(a, "in dialogue with"), "tagB");
    let media = &a.get("medias").unwrap().as_list().unwrap()[0];
    assert_eq!(i(media, "index"), 1);
    assert_eq!(s(media, "type"), "audio");
    assert_eq!(s(media, "protocol"), "RTP/AVP");
    let flags: Vec<&str> = media
        .get("flags")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .filter_map(Owned::as_str)
        .collect();
    assert_eq!(flags, ["initialized", "send", "recv"]);
    let streams = media.get("streams").unwrap().as_list().unwrap();
    assert_eq!(streams.len(), 2);
    let rtp = &streams[0];
    assert_eq!(i(rtp, "local port"), 30000);
    assert_eq!(s(rtp, "local address"), RELAY);
    assert_eq!(s(rtp, "family"), "IPv4");
    let ep = rtp.get("endpoint").unwrap();
    assert_eq!((s(ep, "address"), i(ep, "port")), ("192.0.2.10", 6000));
    assert_eq!(s(ep, "family"), "IPv4");
    assert!(rtp.get("advertised endpoint").is_some());
    i(rtp, "last packet");
    let stats = rtp.get("stats").unwrap();
    assert_eq!(
        (i(stats, "packets"), i(stats, "bytes"), i(stats, "errors")),
        (100, 17200, 1)
    );
    assert_eq!(i(rtp, "SSRC"), 0xDEE0_EE8F);
    assert_eq!(i(rtp, "jitter"), 0);
    assert_eq!(i(rtp, "jitter us"), 352);
    assert_eq!(i(rtp, "max jitter us"), 839);
    assert_eq!(i(rtp, "packets lost"), 2);
    assert_eq!(i(rtp, "duplicates"), 1);
    assert_eq!(i(rtp, "reordered"), 4);
    let rflags: Vec<&str> = rtp
        .get("flags")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .filter_map(Owned::as_str)
        .collect();
    assert_eq!(rflags, ["RTP", "filled", "confirmed"]);
    assert_eq!(i(&streams[1], "local port"), 30001);
    let b = q.get("tags").unwrap().get("tagB").unwrap();
    let b_rtp = &b.get("medias").unwrap().as_list().unwrap()[0]
        .get("streams")
        .unwrap()
        .as_list()
        .unwrap()[0];
    assert_eq!(i(b_rtp, "local port"), 30002);
    assert_eq!(i(b_rtp.get("stats").unwrap(), "packets"), 101);
    let totals = q.get("totals").unwrap();
    assert_eq!(i(totals.get("RTP").unwrap(), "packets"), 201);
    assert_eq!(i(totals.get("RTCP").unwrap(), "bytes"), 300);

    let r = run(&mut m, req("query").with("call-id", "nope"), SEC);
    assert_eq!(
        r.to_bencode(),
        b"d6:result5:error12:error-reason15:Unknown call-ide"
    );
}

#[test]
fn list_oldest_first_with_limit() {
    let mut m = mgr();
    for (n, c) in ["c1", "c2", "c3"].iter().enumerate() {
        run(&mut m, offer(c, "t", OFFER), (n as u64 + 1) * SEC);
    }
    let r = run(&mut m, req("list").with("limit", 2i64), 5 * SEC);
    let calls: Vec<&str> = r
        .get("calls")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .filter_map(Owned::as_str)
        .collect();
    assert_eq!(calls, ["c1", "c2"]);
    assert_eq!(s(&r, "result"), "ok");
    let r = run(&mut m, req("list"), 5 * SEC);
    assert_eq!(r.get("calls").unwrap().as_list().unwrap().len(), 3);
}

#[test]
fn statistics_shape() {
    let mut m = mgr();
    run(&mut m, offer("c1", "t", OFFER), SEC);
    let id = only_stream(&m);
    m.backend_mut().set_stats(id, stats_with(50, SEC));
    m.tick(2 * SEC);
    m.backend_mut().set_stats(id, stats_with(100, 2 * SEC));
    m.tick(3 * SEC);
    let r = run(&mut m, req("statistics"), 11 * SEC);
    assert_eq!(s(&r, "result"), "ok");
    let st = r.get("statistics").unwrap();
    let cur = st.get("currentstatistics").unwrap();
    assert_eq!(i(cur, "sessionsown"), 1);
    assert_eq!(i(cur, "sessionstotal"), 1);
    assert_eq!(i(cur, "packetrate"), 100, "(50 + 50) packets in one second");
    i(cur, "byterate");
    i(cur, "errorrate");
    let total = st.get("totalstatistics").unwrap();
    assert_eq!(i(total, "uptime"), 10);
    assert_eq!(i(total, "managedsessions"), 1);
    assert_eq!(i(total, "relayedpackets"), 100 + 101 + 3);
    for k in [
        "rejectedsessions",
        "timeoutsessions",
        "regularterminatedsessions",
        "relayedbytes",
        "relayedpacketerrors",
    ] {
        i(total, k);
    }
    let ifs = st.get("interfaces").unwrap().as_list().unwrap();
    assert_eq!(ifs.len(), 1);
    assert_eq!(s(&ifs[0], "name"), "default");
    assert_eq!(s(&ifs[0], "address"), RELAY);
    let ports = ifs[0].get("ports").unwrap();
    assert_eq!(
        (
            i(ports, "min"),
            i(ports, "max"),
            i(ports, "used"),
            i(ports, "totals")
        ),
        (30000, 30099, 4, 100)
    );
    assert_eq!(i(ports, "free"), 96);
}

#[test]
fn request_errors() {
    let mut m = mgr();
    let r = run(&mut m, req("frobnicate"), SEC);
    assert_eq!(s(&r, "error-reason"), "Unrecognized command");
    let r = run(
        &mut m,
        req("offer").with("from-tag", "a").with("sdp", OFFER),
        SEC,
    );
    assert_eq!(s(&r, "error-reason"), "No call-id in message");
    let r = run(
        &mut m,
        req("offer").with("call-id", "c").with("from-tag", "a"),
        SEC,
    );
    assert_eq!(s(&r, "error-reason"), "No SDP body in message");
    let r = run(&mut m, offer("c", "a", "garbage"), SEC);
    assert_eq!(s(&r, "result"), "error");
    let r = run(&mut m, answer("nope", "a", "b", ANSWER), SEC);
    assert_eq!(s(&r, "error-reason"), "Unknown call-id");
    run(&mut m, offer("c", "a", OFFER), SEC);
    let r = run(
        &mut m,
        req("answer")
            .with("call-id", "c")
            .with("from-tag", "a")
            .with("sdp", ANSWER),
        SEC,
    );
    assert_eq!(s(&r, "error-reason"), "No to-tag in message");
    let (r, fmt) = handle_body(&mut m, b"not bencode", SEC);
    assert_eq!((s(&r, "result"), fmt), ("error", BodyFormat::Bencode));
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn transcoding_and_protocol_conversion_refused() {
    let mut m = mgr();
    let r = run(
        &mut m,
        offer("c", "a", OFFER).with(
            "codec",
            Owned::dict().with("transcode", Owned::List(vec![Owned::str("G722")])),
        ),
        SEC,
    );
    assert_eq!(s(&r, "result"), "error");
    assert!(s(&r, "error-reason").contains("Transcoding"), "{r}");
    let r = run(
        &mut m,
        offer("c", "a", OFFER).with("transport-protocol", "RTP/SAVP"),
        SEC,
    );
    assert_eq!(
        s(&r, "error-reason"),
        "Unsupported transport protocol conversion: RTP/AVP to RTP/SAVP"
    );
    assert_eq!(m.backend().opens, 0);
    // SRTP offered and asked for as is: relayed opaquely.
    let srtp = OFFER.replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    let r = run(
        &mut m,
        offer("c", "a", &srtp).with("transport-protocol", "RTP/SAVP"),
        SEC,
    );
    let sdp = ok_sdp(&r);
    assert!(sdp.contains("m=audio 30002 RTP/SAVP 0\r\n"));
    assert!(sdp.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQ"));
}

#[test]
fn unknown_flags_are_warned_not_fatal() {
    let mut m = mgr();
    let r = run(
        &mut m,
        offer("c", "a", OFFER).with(
            "flags",
            Owned::List(vec![
                Owned::str("trust-address"),
                Owned::str("bogus-flag"),
                Owned::str("record-call"),
            ]),
        ),
        SEC,
    );
    assert!(ok_sdp(&r).contains("m=audio 30002"));
    let w = s(&r, "warning");
    assert!(w.contains("Unknown flag: bogus-flag"), "{w}");
    assert!(w.contains("Recording is not supported"), "{w}");
}

#[test]
fn sip_source_media_address_and_latch_flags() {
    let mut m = mgr();
    run(
        &mut m,
        offer("c", "a", OFFER)
            .with(
                "flags",
                Owned::List(vec![
                    Owned::str("SIP-source-address"),
                    Owned::str("strict-source"),
                ]),
            )
            .with(
                "received-from",
                Owned::List(vec![Owned::str("IP4"), Owned::str("198.51.100.99")]),
            ),
        SEC,
    );
    let id = only_stream(&m);
    let a = m.backend().endpoint(id, Side::A).unwrap();
    assert_eq!(a.rtp(), addr("198.51.100.99:6000"));
    assert_eq!(a.rtcp_dest(), addr("198.51.100.99:6001"));
    assert_eq!(a.latch, LatchMode::StrictSource);
    run(
        &mut m,
        answer("c", "a", "b", ANSWER)
            .with("media-address", "203.0.113.77")
            .with("flags", Owned::List(vec![Owned::str("asymmetric")])),
        SEC,
    );
    let b = m.backend().endpoint(id, Side::B).unwrap();
    assert_eq!(b.rtp(), addr("203.0.113.77:16000"));
    assert_eq!(b.latch, LatchMode::Asymmetric);
    run(
        &mut m,
        offer("c", "a", OFFER).with("flags", Owned::List(vec![Owned::str("media-handover")])),
        SEC,
    );
    let a = m.backend().endpoint(id, Side::A).unwrap();
    assert_eq!(
        (a.rtp(), a.latch),
        (addr("192.0.2.10:6000"), LatchMode::MediaHandover)
    );
}

#[test]
fn hold_keeps_zero_address_and_sends_nowhere() {
    let mut m = mgr();
    run(&mut m, offer("c", "a", OFFER), SEC);
    run(&mut m, answer("c", "a", "b", ANSWER), SEC);
    let id = only_stream(&m);
    let hold = OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    let sdp = ok_sdp(&run(&mut m, offer("c", "a", &hold), 2 * SEC));
    assert!(sdp.contains("c=IN IP4 0.0.0.0\r\n"), "{sdp}");
    assert!(sdp.contains("m=audio 30002 RTP/AVP 0\r\n"));
    assert_eq!(m.backend().endpoint(id, Side::A).unwrap().rtp(), None);
    // Unhold: the destination comes back, same ports.
    run(&mut m, offer("c", "a", OFFER), 3 * SEC);
    assert_eq!(
        m.backend().endpoint(id, Side::A).unwrap().rtp(),
        addr("192.0.2.10:6000")
    );
    assert_eq!(m.backend().opens, 1);
}

#[test]
fn address_family_selects_interface() {
    let mut m = mgr();
    let r = run(
        &mut m,
        offer("c", "a", OFFER).with("address family", "IP6"),
        SEC,
    );
    assert_eq!(s(&r, "error-reason"), "No IPv6 interface configured");
    assert_eq!(m.backend().opens, 0);
    let mut c = cfg();
    c.interfaces
        .push(RelayInterface::new("v6", "2001:db8::1".parse().unwrap()));
    let mut m = mgr_with(c, 30000, 30099);
    let sdp = ok_sdp(&run(
        &mut m,
        offer("c", "a", OFFER).with("address family", "IP6"),
        SEC,
    ));
    assert!(sdp.contains("c=IN IP6 2001:db8::1\r\n"), "{sdp}");
    // The answer goes back to the IPv4 caller on the IPv4 interface.
    let v6_answer = ANSWER.replace("IN IP4 198.51.100.20", "IN IP6 2001:db8::20");
    let sdp = ok_sdp(&run(&mut m, answer("c", "a", "b", &v6_answer), SEC));
    assert!(sdp.contains("c=IN IP4 203.0.113.1\r\n"), "{sdp}");
    let id = only_stream(&m);
    assert_eq!(
        m.backend().endpoint(id, Side::B).unwrap().rtp(),
        addr("[2001:db8::20]:16000")
    );
}

#[test]
fn advertised_address_goes_into_sdp() {
    let mut c = cfg();
    c.interfaces[0].advertised = Some("198.18.0.1".parse().unwrap());
    let mut m = mgr_with(c, 30000, 30099);
    let sdp = ok_sdp(&run(&mut m, offer("c", "a", OFFER), SEC));
    assert!(sdp.contains("c=IN IP4 198.18.0.1\r\n"), "{sdp}");
    let q = run(&mut m, req("query").with("call-id", "c"), SEC);
    let pending = q.get("tags").unwrap().get("").unwrap();
    let st = &pending.get("medias").unwrap().as_list().unwrap()[0]
        .get("streams")
        .unwrap()
        .as_list()
        .unwrap()[0];
    assert_eq!(
        s(st, "local address"),
        RELAY,
        "query reports the bound address"
    );
}

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

/// The timeout sweep visits at most SWEEP_PER_TICK calls per tick, so one tick's work stays
/// short however many calls there are; the rest wait for the next ticks.
#[test]
fn timeout_sweep_is_sliced_across_ticks() {
    let n = 10 * rtpanchor::session::manager::SWEEP_PER_TICK + 37;
    let mut m = mgr_ports(30000, 40000);
    for k in 0..n {
        let r = run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
        assert_eq!(s(&r, "result"), "ok", "call {k}");
    }
    assert_eq!(m.call_count(), n);
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let round = rtpanchor::session::manager::SWEEP_ROUND_NS;
    let mut closed_per_tick = Vec::new();
    // Calls moved into visited slots by the removals wait for the next round, which starts a
    // round period after this one did: ticks every 10 ms over four round periods.
    for k in 0..4 * round / (SEC / 100) {
        let closed = m.tick(200 * SEC + k * SEC / 100);
        assert!(closed.iter().all(|c| c.reason == CloseReason::Timeout));
        closed_per_tick.push(closed.len());
        if m.call_count() == 0 {
            break;
        }
    }
    assert_eq!(closed_per_tick[0], per_tick, "{closed_per_tick:?}");
    assert!(
        closed_per_tick.iter().all(|&c| c <= per_tick),
        "{closed_per_tick:?}"
    );
    assert_eq!(closed_per_tick.iter().sum::<usize>(), n);
    assert_eq!(m.call_count(), 0);
    assert_eq!(m.backend().open_count(), 0);
}

/// With more calls than one tick sweeps, the rates are computed once per sweep round, over
/// the round's whole interval, with every stream counted once.
#[test]
fn rates_come_from_whole_sweep_rounds() {
    const MS: u64 = SEC / 1000;
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let n = per_tick + 1;
    let mut m = mgr_ports(30000, 31000);
    for k in 0..n {
        run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
    }
    let ids: Vec<StreamId> = m.backend().streams().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), n);
    let packet_rate = |m: &mut SessionManager<FakeBackend>, now| {
        let r = run(m, req("statistics"), now);
        let st = r.get("statistics").unwrap();
        i(st.get("currentstatistics").unwrap(), "packetrate")
    };
    // Round 1 (two ticks) ends 1.01 s after the manager started: 24 packets per stream.
    for &id in &ids {
        m.backend_mut().set_stats(id, stats_with(10, SEC));
    }
    m.tick(2 * SEC);
    m.tick(2 * SEC + 10 * MS);
    assert_eq!(
        packet_rate(&mut m, 2 * SEC + 20 * MS),
        (24 * n as i64) * 100 / 101
    );
    // Round 2: 200 more packets per stream, over 1.01 s again. Mid-round the rate stays.
    for &id in &ids {
        m.backend_mut().set_stats(id, stats_with(110, 3 * SEC));
    }
    m.tick(3 * SEC + 10 * MS);
    assert_eq!(
        packet_rate(&mut m, 3 * SEC + 15 * MS),
        (24 * n as i64) * 100 / 101
    );
    m.tick(3 * SEC + 20 * MS);
    assert_eq!(
        packet_rate(&mut m, 3 * SEC + 30 * MS),
        200 * n as i64 * 100 / 101
    );
}

/// With few calls a round ends in one tick, but the next starts only a round period after it
/// did: the sweep (and the rates it yields) runs once a second, not on every 10 ms tick.
#[test]
fn sweep_rounds_start_at_most_once_a_round_period() {
    const MS: u64 = SEC / 1000;
    let round = rtpanchor::session::manager::SWEEP_ROUND_NS;
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let id = only_stream(&m);
    let packet_rate = |m: &mut SessionManager<FakeBackend>, now| {
        let r = run(m, req("statistics"), now);
        let st = r.get("statistics").unwrap();
        i(st.get("currentstatistics").unwrap(), "packetrate")
    };
    // Round 1 at 2 s.
    m.backend_mut().set_stats(id, stats_with(10, 2 * SEC));
    m.tick(2 * SEC);
    let first = packet_rate(&mut m, 2 * SEC);
    assert!(first > 0);
    // 100 more packets (50 each way); ticks every 10 ms until just before the round period
    // is over leave the rate alone: no round starts.
    m.backend_mut()
        .set_stats(id, stats_with(60, 2 * SEC + 500 * MS));
    let mut t = 2 * SEC + 10 * MS;
    while t < 2 * SEC + round {
        m.tick(t);
        t += 10 * MS;
    }
    assert_eq!(packet_rate(&mut m, 2 * SEC + round - MS), first);
    // The first tick a round period after the last round began runs the next one.
    m.tick(2 * SEC + round);
    assert_eq!(
        packet_rate(&mut m, 2 * SEC + round),
        (100 * SEC / round) as i64
    );
    // Timeouts are found by those rounds: silent since 2.5 s, the call times out at the
    // first round 60 s later.
    let mut closed = Vec::new();
    let mut t = 3 * SEC;
    while t <= 64 * SEC && closed.is_empty() {
        closed = m.tick(t);
        t += 10 * MS;
    }
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, CloseReason::Timeout);
    let found = t - 10 * MS;
    assert!(
        (62 * SEC + 500 * MS..=62 * SEC + 500 * MS + round).contains(&found),
        "timed out at {found} ns"
    );
}

/// Calls deleted between sweep slices move other calls around in the sweep order; every
/// remaining call must still be visited (and timed out) exactly once.
#[test]
fn sweep_visits_every_call_once_despite_deletes() {
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let n = 2 * per_tick + 50;
    let mut m = mgr_ports(30000, 33000);
    for k in 0..n {
        run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
    }
    // One slice, then delete every third call (some already visited, some not).
    let mut closed: Vec<String> = m
        .tick(2 * SEC)
        .into_iter()
        .map(|c| c.call_id.to_string())
        .collect();
    assert!(closed.is_empty(), "nothing is silent for 60 s yet");
    let mut deleted = std::collections::HashSet::new();
    for k in (0..n).step_by(3) {
        let r = run(
            &mut m,
            req("delete").with("call-id", format!("c{k}").as_str()),
            2 * SEC,
        );
        assert_eq!(s(&r, "result"), "ok");
        deleted.insert(format!("c{k}"));
    }
    for t in 0..(2 * n / per_tick + 4) as u64 {
        closed.extend(
            m.tick(200 * SEC + t * SEC / 100)
                .into_iter()
                .map(|c| c.call_id.to_string()),
        );
    }
    let unique: std::collections::HashSet<&String> = closed.iter().collect();
    assert_eq!(unique.len(), closed.len(), "a call closed twice");
    assert!(closed.iter().all(|c| !deleted.contains(c)));
    assert_eq!(closed.len(), n - deleted.len());
    assert_eq!(m.call_count(), 0);
}

fn flag_list(o: &Owned) -> Vec<&str> {
    o.get("flags")
        .and_then(Owned::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Owned::as_str)
        .collect()
}

fn first_media<'a>(q: &'a Owned, tag: &str) -> &'a Owned {
    &q.get("tags")
        .and_then(|t| t.get(tag))
        .and_then(|t| t.get("medias"))
        .and_then(Owned::as_list)
        .unwrap_or_else(|| panic!("no medias for {tag}: {q}"))[0]
}

/// The query shapes a consumer of rtpengine's reads (issue 23): send/recv say what the relay
/// does toward the leg, a hold address is shown, the advertised endpoint follows
/// SIP-source-address, RTCP streams have one too, and a muxed leg's RTCP port is the fallback.
#[test]
fn query_shapes_follow_rtpengine() {
    let mut m = mgr();
    let hold = OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
    );
    run(&mut m, offer("h", "tagA", &hold), SEC);
    let recvonly = ANSWER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=recvonly\r\n",
    );
    run(&mut m, answer("h", "tagA", "tagB", &recvonly), SEC);
    let q = run(&mut m, req("query").with("call-id", "h"), 2 * SEC);
    // A sends only: the relay receives from it and sends it nothing; B the other way round.
    assert_eq!(flag_list(first_media(&q, "tagA")), ["initialized", "recv"]);
    assert_eq!(flag_list(first_media(&q, "tagB")), ["initialized", "send"]);

    let zero = OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    run(&mut m, offer("z", "tagA", &zero), SEC);
    let q = run(&mut m, req("query").with("call-id", "z"), 2 * SEC);
    let streams = first_media(&q, "tagA")
        .get("streams")
        .and_then(Owned::as_list)
        .unwrap();
    let ep = streams[0]
        .get("endpoint")
        .expect("a hold endpoint is shown");
    assert_eq!((s(ep, "address"), i(ep, "port")), ("0.0.0.0", 6000));
    assert_eq!(flag_list(&streams[0]), ["RTP", "filled"]);
    let rtcp_adv = streams[1]
        .get("advertised endpoint")
        .expect("RTCP advertised endpoint");
    assert_eq!(
        (s(rtcp_adv, "address"), i(rtcp_adv, "port")),
        ("0.0.0.0", 6001)
    );

    let nat = offer("n", "tagA", OFFER)
        .with("flags", Owned::List(vec![Owned::str("SIP-source-address")]))
        .with(
            "received-from",
            Owned::List(vec![Owned::str("IP4"), Owned::str("198.51.100.99")]),
        );
    run(&mut m, nat, SEC);
    let q = run(&mut m, req("query").with("call-id", "n"), 2 * SEC);
    let streams = first_media(&q, "tagA")
        .get("streams")
        .and_then(Owned::as_list)
        .unwrap();
    let adv = streams[0].get("advertised endpoint").unwrap();
    assert_eq!((s(adv, "address"), i(adv, "port")), ("198.51.100.99", 6000));

    let mux = OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n",
    );
    let mux_answer = ANSWER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n",
    );
    run(&mut m, offer("x", "tagA", &mux), SEC);
    run(&mut m, answer("x", "tagA", "tagB", &mux_answer), SEC);
    let q = run(&mut m, req("query").with("call-id", "x"), 2 * SEC);
    let media = first_media(&q, "tagA");
    assert!(flag_list(media).contains(&"rtcp-mux"));
    let streams = media.get("streams").and_then(Owned::as_list).unwrap();
    assert_eq!(flag_list(&streams[0]), ["RTP", "RTCP", "filled"]);
    assert_eq!(flag_list(&streams[1]), ["RTCP", "fallback RTCP", "filled"]);
    assert_eq!(
        i(&streams[1], "local port"),
        i(&streams[0], "local port") + 1
    );
    let fallback = streams[1].get("endpoint").unwrap();
    assert_eq!(i(fallback, "port"), 6001);
}

/// rtpengine's `controlstatistics`: per proxy counts, summed durations and errors; totals.
#[test]
fn statistics_has_control_statistics_per_proxy() {
    let mut m = mgr();
    let proxy = "192.0.2.5".parse().ok();
    m.note_command(proxy, "offer", 1_500_000, false);
    m.note_command(proxy, "offer", 500_000, true);
    m.note_command(None, "ping", 1_000, false);
    let st = run(&mut m, req("statistics"), SEC);
    let c = st
        .get("statistics")
        .and_then(|s| s.get("controlstatistics"))
        .unwrap();
    let p = &c.get("proxies").and_then(Owned::as_list).unwrap()[0];
    assert_eq!(s(p, "proxy"), "192.0.2.5");
    assert_eq!(i(p, "offercount"), 2);
    assert_eq!(s(p, "offerduration"), "0.002000");
    assert_eq!(i(p, "errorcount"), 1);
    assert_eq!(i(p, "pingcount"), 0);
    assert_eq!((i(c, "totaloffercount"), i(c, "totalpingcount")), (2, 1));
    assert!(st
        .get("statistics")
        .and_then(|s| s.get("transcoders"))
        .is_some());
}
