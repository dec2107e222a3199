//! The relay binary end to end over its ng socket, with real RTP on 127.0.0.1, once per
//! data-plane engine: ping, offer/answer, media both ways with one side behind "NAT" (it
//! sends from another port than its SDP names), `query` counters equal to what was sent,
//! `delete` stops forwarding, and a burst of malformed control messages gets error replies
//! while the relay keeps serving; a silent call times out. (Ping latency under a saturated data
//! plane is measured alone, in `ng_saturation.rs`.)

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::media::{count_rx, media_sock, pcmu};
use common::ng::{client, int_at, ng, relay_port, sdp, start_relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

fn call_flow(engine: &str, ng_port: u16, port_min: u16) {
    let relay = start_relay(ng_port, port_min, engine, &[]);
    let mut c = client(relay.ng);
    let to = relay.ng;
    let a = media_sock();
    let b_real = media_sock(); // where B really sends from and listens (its NAT binding)
    let a_port = a.local_addr().unwrap().port();
    let b_sdp_port = 9; // what B's SDP claims (discard): unreachable, as behind NAT

    let offer = ng(
        &mut c,
        "o1",
        &Owned::dict()
            .with("supports", Owned::List(vec![Owned::str("load limit")]))
            .with("sdp", sdp(a_port, 1).as_str())
            .with("call-id", "e2e-call-1")
            .with("from-tag", "tagA")
            .with(
                "received-from",
                Owned::List(vec![Owned::str("IP4"), Owned::str("127.0.0.1")]),
            )
            .with("command", "offer"),
    );
    assert_eq!(
        offer.get("result").and_then(Owned::as_str),
        Some("ok"),
        "{offer}"
    );
    let to_b = relay_port(offer.get("sdp").and_then(Owned::as_str).unwrap());
    // A retransmission with a new cookie returns the same SDP (idempotent).
    let again = ng(
        &mut c,
        "o2",
        &Owned::dict()
            .with("sdp", sdp(a_port, 1).as_str())
            .with("call-id", "e2e-call-1")
            .with("from-tag", "tagA")
            .with("command", "offer"),
    );
    assert_eq!(again.get("sdp"), offer.get("sdp"));
    let answer = ng(
        &mut c,
        "a1",
        &Owned::dict()
            .with("sdp", sdp(b_sdp_port, 2).as_str())
            .with("call-id", "e2e-call-1")
            .with("from-tag", "tagA")
            .with("to-tag", "tagB")
            .with("command", "answer"),
    );
    assert_eq!(
        answer.get("result").and_then(Owned::as_str),
        Some("ok"),
        "{answer}"
    );
    let to_a = relay_port(answer.get("sdp").and_then(Owned::as_str).unwrap());
    assert_ne!(to_a, to_b);
    assert!((port_min..port_min + 1000).contains(&to_a));

    let relay_a = SocketAddr::from(([127, 0, 0, 1], to_a));
    let relay_b = SocketAddr::from(([127, 0, 0, 1], to_b));
    // B (behind NAT) speaks first: the relay learns its real address.
    let n = 50u16;
    for i in 0..n {
        b_real.send_to(&pcmu(i, 0xb), relay_b).unwrap();
    }
    assert_eq!(
        count_rx(&a, n as usize, Duration::from_secs(3)),
        n as usize,
        "B->A"
    );
    for i in 0..n {
        a.send_to(&pcmu(i, 0xa), relay_a).unwrap();
    }
    assert_eq!(
        count_rx(&b_real, n as usize, Duration::from_secs(3)),
        n as usize,
        "A->B via NAT"
    );

    // query: ingress counters per tag equal what each side sent. The figures trail the
    // packets: the workers publish every 100 ms, and a direction the in-kernel path took
    // over (on by default, once both ends are latched) reports once a second; so ask until
    // the totals have caught up (5 s at most), then check every figure.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut k = 0;
    let q = loop {
        k += 1;
        let q = ng(
            &mut c,
            &format!("q{k}"),
            &Owned::dict()
                .with("call-id", "e2e-call-1")
                .with("command", "query"),
        );
        let packets = q
            .get("totals")
            .and_then(|t| t.get("RTP"))
            .and_then(|t| t.get("packets"))
            .and_then(Owned::as_int);
        if packets >= Some(2 * i64::from(n)) || Instant::now() > deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(q.get("result").and_then(Owned::as_str), Some("ok"), "{q}");
    assert_eq!(int_at(&q, &["totals", "RTP", "packets"]), 2 * i64::from(n));
    assert_eq!(
        int_at(&q, &["totals", "RTP", "bytes"]),
        2 * 172 * i64::from(n)
    );
    for tag in ["tagA", "tagB"] {
        let medias = q
            .get("tags")
            .and_then(|t| t.get(tag))
            .and_then(|t| t.get("medias"));
        let streams = medias
            .and_then(Owned::as_list)
            .and_then(|m| m.first())
            .and_then(|m| m.get("streams"))
            .and_then(Owned::as_list)
            .unwrap_or_else(|| panic!("no streams for {tag}: {q}"));
        assert_eq!(
            int_at(&streams[0], &["stats", "packets"]),
            i64::from(n),
            "{tag}"
        );
    }

    // Garbage on a media port is counted (and, by default, forwarded: it may be a keepalive).
    a.send_to(b"\x00\x01 not rtp at all", relay_a).unwrap();
    a.send_to(&[0x80], relay_a).unwrap();
    assert_eq!(count_rx(&b_real, 2, Duration::from_secs(2)), 2);
    // Worker counters are published without locks and may trail the packets by a moment
    // (the in-kernel path's by up to a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut k = 0;
    let st = loop {
        k += 1;
        let st = ng(
            &mut c,
            &format!("s{k}"),
            &Owned::dict().with("command", "statistics"),
        );
        let tx = int_at(&st, &["statistics", "dataplane", "tx_packets"]);
        if tx == 2 * i64::from(n) + 2 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        int_at(&st, &["statistics", "dataplane", "non_rtp"]),
        2,
        "{st}"
    );
    assert_eq!(
        int_at(&st, &["statistics", "dataplane", "tx_packets"]),
        2 * i64::from(n) + 2,
        "{st}"
    );

    // list, then delete: nothing is forwarded afterwards and the call is gone.
    let l = ng(&mut c, "l1", &Owned::dict().with("command", "list"));
    let calls = l.get("calls").and_then(Owned::as_list).unwrap();
    assert_eq!(calls.len(), 1);
    let d = ng(
        &mut c,
        "d1",
        &Owned::dict()
            .with("call-id", "e2e-call-1")
            .with("from-tag", "tagA")
            .with("command", "delete"),
    );
    assert_eq!(d.get("result").and_then(Owned::as_str), Some("ok"), "{d}");
    // The worker closes the stream on its next turn (at once, unless the machine is busy).
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..10 {
        let _ = a.send_to(&pcmu(100 + i, 0xa), relay_a);
    }
    assert_eq!(
        count_rx(&b_real, 1, Duration::from_millis(300)),
        0,
        "forwarded after delete"
    );
    let l = ng(&mut c, "l2", &Owned::dict().with("command", "list"));
    assert_eq!(
        l.get("calls").and_then(Owned::as_list).map(|c| c.len()),
        Some(0)
    );
    let d2 = ng(
        &mut c,
        "d2",
        &Owned::dict()
            .with("call-id", "e2e-call-1")
            .with("from-tag", "tagA")
            .with("command", "delete"),
    );
    assert_eq!(d2.get("result").and_then(Owned::as_str), Some("ok"));
    assert!(d2.get("warning").is_some(), "repeated delete warns: {d2}");

    // Malformed control traffic (raw datagrams, from a socket of their own): errors for what
    // has a cookie, silence otherwise; still serving.
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        b"nocookie".to_vec(),
        b"c1 d7:command".to_vec(),
        b"c2 i42e".to_vec(),
        b"c3 d7:command5:fnorde".to_vec(),
        b"c4 d7:command5:offere".to_vec(),
        b"c5 {\"command\": ".to_vec(),
        b"c6 d7:command5:query7:call-idi5ee".to_vec(),
        b"c7 ".to_vec(),
        vec![b'c', b'8', b' ', 0xff, 0xfe, 0x00],
        [b"c9 ".as_slice(), &[b'l'; 30_000]].concat(),
    ];
    let mut errors = 0;
    for round in 0..20 {
        for g in &garbage {
            raw.send_to(g, to).unwrap();
        }
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = 0;
        while got < garbage.len() - 1 && Instant::now() < deadline {
            if let Ok(n) = raw.recv(&mut buf) {
                got += 1;
                let reply = String::from_utf8_lossy(&buf[..n]);
                assert!(reply.contains("error"), "round {round}: {reply}");
                errors += 1;
            }
        }
    }
    assert_eq!(
        errors,
        20 * (garbage.len() - 1),
        "one error reply per request with a cookie"
    );
    let p = ng(&mut c, "p-after", &Owned::dict().with("command", "ping"));
    assert_eq!(p.get("result").and_then(Owned::as_str), Some("pong"));
}

#[test]
fn ng_call_flow_mmsg() {
    call_flow("mmsg", 21301, 22000);
}

#[test]
fn ng_call_flow_uring() {
    call_flow("uring", 21302, 24000);
}

#[test]
fn silent_call_times_out_and_frees_its_ports_mmsg() {
    silent_call_times_out(21304, 28000, "mmsg");
}

#[test]
fn silent_call_times_out_and_frees_its_ports_uring() {
    silent_call_times_out(21305, 29000, "uring");
}

fn silent_call_times_out(ng_port: u16, port_min: u16, engine: &str) {
    let relay = start_relay(ng_port, port_min, engine, &["--timeout", "1"]);
    let mut c = client(relay.ng);
    let a = media_sock();
    let b = media_sock();
    let o = ng(
        &mut c,
        "to1",
        &Owned::dict()
            .with("sdp", sdp(a.local_addr().unwrap().port(), 1).as_str())
            .with("call-id", "timeout-call")
            .with("from-tag", "ta")
            .with("command", "offer"),
    );
    let to_b = relay_port(o.get("sdp").and_then(Owned::as_str).unwrap());
    ng(
        &mut c,
        "to2",
        &Owned::dict()
            .with("sdp", sdp(b.local_addr().unwrap().port(), 2).as_str())
            .with("call-id", "timeout-call")
            .with("from-tag", "ta")
            .with("to-tag", "tb")
            .with("command", "answer"),
    );
    let used = |c: &mut NgClient, cookie: &str| {
        let s = ng(c, cookie, &Owned::dict().with("command", "statistics"));
        let ifs = s
            .get("statistics")
            .and_then(|s| s.get("interfaces"))
            .and_then(Owned::as_list)
            .expect("interfaces");
        int_at(&ifs[0], &["ports", "used"])
    };
    assert_eq!(
        used(&mut c, "st1"),
        4,
        "one stream: two sides, each an RTP+RTCP port pair"
    );
    // Media for a moment, then silence.
    for i in 0..5 {
        b.send_to(&pcmu(i, 1), SocketAddr::from(([127, 0, 0, 1], to_b)))
            .unwrap();
    }
    assert_eq!(count_rx(&a, 5, Duration::from_secs(2)), 5);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut n = 0;
    let gone = loop {
        n += 1;
        let l = ng(
            &mut c,
            &format!("tl{n}"),
            &Owned::dict().with("command", "list"),
        );
        if l.get("calls")
            .and_then(Owned::as_list)
            .is_some_and(|c| c.is_empty())
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        gone,
        "the silent call was not torn down within 6 s of a 1 s timeout"
    );
    assert_eq!(used(&mut c, "st2"), 0, "ports freed");
    let s = ng(&mut c, "st3", &Owned::dict().with("command", "statistics"));
    assert_eq!(
        int_at(&s, &["statistics", "totalstatistics", "timeoutsessions"]),
        1
    );
    // The freed port no longer relays (the worker closes it on its next turn).
    std::thread::sleep(Duration::from_millis(300));
    b.send_to(&pcmu(9, 1), SocketAddr::from(([127, 0, 0, 1], to_b)))
        .unwrap();
    assert_eq!(count_rx(&a, 1, Duration::from_millis(300)), 0);
}
