//! Each interface address has the whole port range to itself: a relay with two addresses
//! under one name (`pool/127.0.0.1`, `pool/127.0.0.2`) and 4 port pairs (`--port-min 5600
//! --port-max 5607`) takes two calls on each address (a pair per side), binding the same port
//! numbers on both, and refuses the fifth call with rtpengine's "Ran out of ports". ng
//! `statistics` counts ports per address, a delete frees the ports of the address its call
//! was on, and media flows through calls on both addresses that use the same port numbers.
//!
//! Ports (block 5500-5999, loopback): ng 5500, phones 5510-5529, relay media 5600-5607.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::media::rtp;
use common::ng::{client, ng, relay_end, Relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;
use rtpanchor::sdp::AudioSdp;

const NG_PORT: u16 = 5500;
const PHONES: u16 = 5510;
const MEDIA: (u16, u16) = (5600, 5607);

fn start(engine: &str) -> Relay {
    let ng_at = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args([
            "--interface",
            "pool/127.0.0.1",
            "--interface",
            "pool/127.0.0.2",
        ])
        .args(["--listen-ng", &ng_at.to_string()])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--no-sip", "--num-threads", "1", "--io-engine", engine])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let relay = Relay::new(child, ng_at);
    if let Err(e) = client(ng_at).wait_ready(Duration::from_secs(10)) {
        panic!("relay did not answer ping in 10 s: {e}");
    }
    relay
}

fn sdp(port: u16, sess: u64) -> String {
    AudioSdp::new(SocketAddr::from(([127, 0, 0, 1], port)), sess).to_string()
}

fn offer(c: &mut NgClient, call: &str, phone: u16) -> Owned {
    ng(
        c,
        &format!("o-{call}"),
        &Owned::dict()
            .with("command", "offer")
            .with("call-id", call)
            .with("from-tag", "a")
            .with("sdp", sdp(phone, 1).as_str()),
    )
}

fn sdp_of(reply: &Owned) -> &str {
    reply
        .get("sdp")
        .and_then(Owned::as_str)
        .unwrap_or_else(|| panic!("no SDP in {reply}"))
}

/// (used, totals) ports of each interface address, from `statistics`.
fn ports(c: &mut NgClient, n: u32) -> Vec<(String, i64, i64)> {
    let r = ng(
        c,
        &format!("st{n}"),
        &Owned::dict().with("command", "statistics"),
    );
    let list = r
        .get("statistics")
        .and_then(|s| s.get("interfaces"))
        .and_then(Owned::as_list)
        .unwrap_or_else(|| panic!("no interfaces: {r}"));
    list.iter()
        .map(|i| {
            let p = i.get("ports").unwrap_or_else(|| panic!("no ports: {i}"));
            let int = |k: &str| p.get(k).and_then(Owned::as_int).unwrap_or(-1);
            let addr = i
                .get("local address")
                .and_then(Owned::as_str)
                .unwrap_or_default()
                .to_owned();
            assert_eq!(int("free"), int("totals") - int("used"), "{i}");
            (addr, int("used"), int("totals"))
        })
        .collect()
}

/// Answers `call` from a phone at `b_port` and sends RTP from the phone at `a_port` to the
/// relay; returns how many of `count` packets reached the answerer, and from where.
fn media(c: &mut NgClient, call: &str, a: &UdpSocket, b: &UdpSocket) -> (usize, Vec<SocketAddr>) {
    let b_port = b.local_addr().unwrap().port();
    let answer = ng(
        c,
        &format!("a-{call}"),
        &Owned::dict()
            .with("command", "answer")
            .with("call-id", call)
            .with("from-tag", "a")
            .with("to-tag", "b")
            .with("sdp", sdp(b_port, 2).as_str()),
    );
    let to_relay = relay_end(sdp_of(&answer));
    b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut got = 0;
    let mut from = Vec::new();
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        a.send_to(
            &rtp(seq, u32::from(seq) * 160, 0xA1, &[0xd5; 160]),
            to_relay,
        )
        .unwrap();
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            if let Ok((_, src)) = b.recv_from(&mut buf) {
                got += 1;
                if !from.contains(&src) {
                    from.push(src);
                }
            }
        }
    }
    (got, from)
}

fn run(engine: &str) {
    let relay = start(engine);
    let mut c = client(relay.ng);
    let phone = |n: u16| UdpSocket::bind(("127.0.0.1", PHONES + n)).unwrap();
    let phones: Vec<UdpSocket> = (0..10).map(phone).collect();
    let mut ends = Vec::new();
    for n in 0..4u16 {
        let port = phones[usize::from(n)].local_addr().unwrap().port();
        let r = offer(&mut c, &format!("call{n}"), port);
        ends.push(relay_end(sdp_of(&r)));
    }
    let addrs: Vec<String> = ends.iter().map(|e| e.ip().to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]);
    // The same port numbers are bound on both addresses.
    assert_eq!(ends[0].port(), ends[1].port(), "{ends:?}");
    let refused = offer(&mut c, "call4", PHONES + 4);
    assert_eq!(
        refused.get("result").and_then(Owned::as_str),
        Some("error"),
        "{refused}"
    );
    let reason = refused
        .get("error-reason")
        .and_then(Owned::as_str)
        .unwrap_or_default();
    assert!(reason.contains("Ran out of ports"), "{refused}");
    let full = vec![
        ("127.0.0.1".to_owned(), 8, 8),
        ("127.0.0.2".to_owned(), 8, 8),
    ];
    assert_eq!(ports(&mut c, 1), full);

    // call1 was on 127.0.0.2: its ports are free there, not on 127.0.0.1.
    let del = ng(
        &mut c,
        "d-call1",
        &Owned::dict()
            .with("command", "delete")
            .with("call-id", "call1")
            .with("delete-delay", 0i64),
    );
    assert_eq!(
        del.get("result").and_then(Owned::as_str),
        Some("ok"),
        "{del}"
    );
    assert_eq!(
        ports(&mut c, 2),
        vec![
            ("127.0.0.1".to_owned(), 8, 8),
            ("127.0.0.2".to_owned(), 4, 8)
        ]
    );
    // A new call gets 127.0.0.2 (the only address with room), on ports call1 had; a socket
    // still being closed by the worker may make the first try fail: a few tries.
    let mut again = None;
    for attempt in 0..20 {
        let r = offer(&mut c, &format!("call5-{attempt}"), PHONES + 5);
        if r.get("result").and_then(Owned::as_str) == Some("ok") {
            again = Some((format!("call5-{attempt}"), relay_end(sdp_of(&r))));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (call5, end5) = again.expect("a call after the delete");
    assert_eq!(end5.ip().to_string(), "127.0.0.2");
    assert_eq!(ports(&mut c, 3), full);

    // Media through a call on each address.
    let (got0, from0) = media(&mut c, "call0", &phones[0], &phones[8]);
    let (got5, from5) = media(&mut c, &call5, &phones[5], &phones[9]);
    assert!(got0 >= 15, "call0 on 127.0.0.1: {got0} of 20 arrived");
    assert!(got5 >= 15, "{call5} on 127.0.0.2: {got5} of 20 arrived");
    assert_eq!(from0.len(), 1, "{from0:?}");
    assert_eq!(from5.len(), 1, "{from5:?}");
    assert_eq!(from0[0].ip().to_string(), "127.0.0.1");
    assert_eq!(from5[0].ip().to_string(), "127.0.0.2");
    eprintln!("{engine}: media from {from0:?} and {from5:?}");
}

/// Both engines, one after the other (one port block).
#[test]
fn each_address_has_the_whole_port_range() {
    for engine in ["mmsg", "uring"] {
        run(engine);
    }
}
