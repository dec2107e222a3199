//! Offer/answer, re-offers, forks, delete, limits, timeouts and query counters.

use super::*;

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
