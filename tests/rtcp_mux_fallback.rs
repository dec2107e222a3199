// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! rtcp-mux offered, the callee declines (issue 23): the offer keeps RTP + 1 as the RTCP
//! fallback port, and RTCP both ways arrives at each end's separate RTCP port, counted
//! exactly, under each I/O engine with the in-kernel path on (the default start).
//! Ports: 13001-13002 (ng), 13010-13089 (relay media), 13900-13939 (the endpoints).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::kernel::cannot_run;
use common::media::{pcmu, recv_n, relay, wait_for};
use common::ng::{client, find_int, ng, relay_port, start_relay_in};
use rtpanchor::control::bencode::Owned;
use rtpanchor::rtp::rtcp::emit_header;

/// An RTCP receiver report without report blocks from `ssrc` (8 bytes); each packet of a
/// test has its own SSRC, so they are told apart.
fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    emit_header(&mut p, 0, 201, 8).expect("an 8-byte RR header fits");
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p
}

fn bind(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

fn sdp(port: u16, sess: u64, mux: bool) -> String {
    let mut s = format!(
        "v=0\r\no=- {sess} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    if mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    s
}

fn attr<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.strip_prefix(prefix))
}

/// Datagrams that arrive at `s` within `limit`, `want` at most, plus 200 ms more to catch
/// any surplus (so the count is exact, not at least).
fn exactly(s: &UdpSocket, want: usize, limit: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = recv_n(s, want, limit);
    got.extend(recv_n(s, 1, Duration::from_millis(200)));
    got
}

/// `k` RTCP reports (SSRCs `ssrc0`..) from `from` to the relay's `relay_port`, received
/// unchanged, exactly `k`, at `at.0` from the relay port `at.1`.
fn rtcp_one_way(
    from: &UdpSocket,
    relay_port: u16,
    at: (&UdpSocket, u16),
    ssrc0: u32,
    k: u32,
    engine: &str,
) {
    for i in 0..k {
        from.send_to(&rtcp_rr(ssrc0 + i), relay(relay_port))
            .unwrap();
    }
    let got = exactly(at.0, k as usize, Duration::from_secs(3));
    assert_eq!(
        got.len(),
        k as usize,
        "RTCP to relay port {relay_port} ({engine})"
    );
    for (i, (p, src)) in got.iter().enumerate() {
        assert_eq!(p, &rtcp_rr(ssrc0 + i as u32), "RTCP #{i} unchanged");
        assert_eq!(src.port(), at.1, "sent from the relay's RTCP port");
    }
}

/// The data plane's `kernel_streams` figure (directions the TC program holds).
fn kernel_streams(c: &mut rtpanchor::client::ng::NgClient) -> Option<i64> {
    let r = c.command("statistics").ok()?;
    find_int(&r, "kernel_streams")
}

fn fallback_call(engine: &str, ng_port: u16, media: (u16, u16), ends: u16) {
    let relay_proc = start_relay_in(ng_port, media, engine, &[]);
    let mut c = client(relay_proc.ng);
    let (a_rtp, a_rtcp) = (bind(ends), bind(ends + 1));
    let (b_rtp, b_rtcp) = (bind(ends + 10), bind(ends + 11));
    let call = format!("mux-fallback-{engine}");

    let offer = ng(
        &mut c,
        &format!("{engine}-o"),
        &Owned::dict()
            .with("command", "offer")
            .with("call-id", call.as_str())
            .with("from-tag", "caller")
            .with("rtcp-mux", Owned::List(vec![Owned::str("offer")]))
            .with("sdp", sdp(ends, 1, true).as_str()),
    );
    let offer_sdp = offer.get("sdp").and_then(Owned::as_str).expect("offer sdp");
    let to_b = relay_port(offer_sdp);
    assert!(offer_sdp.contains("a=rtcp-mux\r\n"), "{offer_sdp}");
    let fallback = (to_b + 1).to_string();
    assert_eq!(
        attr(offer_sdp, "a=rtcp:"),
        Some(fallback.as_str()),
        "the offer keeps RTP + 1 as the RTCP fallback: {offer_sdp}"
    );

    let answer = ng(
        &mut c,
        &format!("{engine}-a"),
        &Owned::dict()
            .with("command", "answer")
            .with("call-id", call.as_str())
            .with("from-tag", "caller")
            .with("to-tag", "callee")
            .with("sdp", sdp(ends + 10, 2, false).as_str()),
    );
    let answer_sdp = answer
        .get("sdp")
        .and_then(Owned::as_str)
        .expect("answer sdp");
    let to_a = relay_port(answer_sdp);
    assert!(!answer_sdp.contains("a=rtcp-mux"), "{answer_sdp}");
    let a_fallback = (to_a + 1).to_string();
    assert_eq!(attr(answer_sdp, "a=rtcp:"), Some(a_fallback.as_str()));

    // RTP both ways first: both directions latch (and may go to the in-kernel path).
    let n = 20u16;
    for i in 0..n {
        a_rtp.send_to(&pcmu(i, 0xa), relay(to_a)).unwrap();
        b_rtp.send_to(&pcmu(i, 0xb), relay(to_b)).unwrap();
    }
    assert_eq!(
        recv_n(&b_rtp, n.into(), Duration::from_secs(3)).len(),
        n as usize,
        "A->B RTP"
    );
    assert_eq!(
        recv_n(&a_rtp, n.into(), Duration::from_secs(3)).len(),
        n as usize,
        "B->A RTP"
    );

    // Where the in-kernel path can run (root, Linux 6.6+, built with clang) both latched
    // directions go to it: RTCP must still reach the other side (the TC program leaves
    // it to the worker).
    match cannot_run() {
        None => {
            let handed = wait_for(Duration::from_secs(5), || kernel_streams(&mut c) == Some(2));
            assert!(handed, "both RTP directions in the kernel ({engine})");
        }
        Some(why) => eprintln!("in-kernel path not running here ({why}): userspace only"),
    }

    // The callee declined mux: it sends RTCP to the fallback port the offer named.
    let k = 3u32;
    rtcp_one_way(&b_rtcp, to_b + 1, (&a_rtcp, to_a + 1), 0xb00, k, engine);
    rtcp_one_way(&a_rtcp, to_a + 1, (&b_rtcp, to_b + 1), 0xa00, k, engine);
    // RTP still flows both ways, exactly (in the kernel where it runs).
    for i in n..2 * n {
        a_rtp.send_to(&pcmu(i, 0xa), relay(to_a)).unwrap();
        b_rtp.send_to(&pcmu(i, 0xb), relay(to_b)).unwrap();
    }
    assert_eq!(
        exactly(&b_rtp, n.into(), Duration::from_secs(3)).len(),
        n as usize
    );
    assert_eq!(
        exactly(&a_rtp, n.into(), Duration::from_secs(3)).len(),
        n as usize
    );
    // Nothing strayed onto the RTP sockets.
    assert!(recv_n(&a_rtp, 1, Duration::from_millis(100)).is_empty());
    assert!(recv_n(&b_rtp, 1, Duration::from_millis(100)).is_empty());

    // The query says RTCP runs on the separate ports: no rtcp-mux media flag, no
    // "fallback RTCP", and each RTCP stream counted its 3 packets.
    let q = ng(
        &mut c,
        &format!("{engine}-q"),
        &Owned::dict()
            .with("command", "query")
            .with("call-id", call.as_str()),
    );
    for tag in ["caller", "callee"] {
        let media = q
            .get("tags")
            .and_then(|t| t.get(tag))
            .and_then(|t| t.get("medias"))
            .and_then(Owned::as_list)
            .and_then(|l| l.first())
            .unwrap_or_else(|| panic!("no media for {tag}: {q}"));
        let flags = media
            .get("flags")
            .map(|f| f.to_string())
            .unwrap_or_default();
        assert!(!flags.contains("rtcp-mux"), "{tag}: {flags}");
        let streams = media
            .get("streams")
            .and_then(Owned::as_list)
            .expect("streams");
        let rtcp = &streams[1];
        let rtcp_flags = rtcp.get("flags").map(|f| f.to_string()).unwrap_or_default();
        assert!(!rtcp_flags.contains("fallback"), "{tag}: {rtcp_flags}");
        let packets = rtcp
            .get("stats")
            .and_then(|s| s.get("packets"))
            .and_then(Owned::as_int);
        assert_eq!(packets, Some(i64::from(k)), "{tag} RTCP stats: {rtcp}");
    }
}

#[test]
fn rtcp_mux_declined_relays_rtcp_on_the_fallback_ports_uring() {
    fallback_call("uring", 13001, (13010, 13049), 13900);
}

#[test]
fn rtcp_mux_declined_relays_rtcp_on_the_fallback_ports_mmsg() {
    fallback_call("mmsg", 13002, (13050, 13089), 13920);
}
