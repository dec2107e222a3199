//! Query and statistics shapes as rtpengine's consumers read them.

use super::*;

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
