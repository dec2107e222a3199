//! The relay between two networks: a "LAN" namespace with a phone at 10.0.0.10, an
//! "internet" namespace with a phone at 203.0.113.20, and the relay in a third namespace with
//! one veth in each (10.0.0.1 `internal`, 203.0.113.1 `external`). The relay's namespace does
//! not forward, so the phones reach each other only through the relay's media ports.
//!
//! A call set up over ng with `direction=[internal, external]` must carry RTP both ways; each
//! phone is told only the relay's address of its own network, and gets packets only from it.
//! The internet phone echoes every packet back to where it came from (the relay); the LAN
//! side (this test's inner half, run in the LAN namespace, which also speaks ng to the relay)
//! sends and counts the echoes. Run for each engine with the in-kernel path on: once both
//! ends are latched, both directions must be handed to the kernel and its counters grow.
//!
//! Names (prefix ra24-; E is the engine's initial, as the two tests run at once): namespaces
//! ra24-lan-EPID, ra24-inet-EPID, ra24-relay-EPID; veths ra24lENNNNN/ra24LENNNNN and
//! ra24iENNNNN/ra24IENNNNN. Ports (block 3000-3499, inside the namespaces): ng 3000, LAN
//! phone 3010, internet phone 3020, relay media 3100-3199.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kernel::cannot_run;
use common::media::rtp;
use common::netns::{
    echo_result, inner_test, lan_inet_call, run_echo_phone, spawn_in, two_networks, Namespaces,
    Proc, INET_PHONE, INET_RELAY, LAN_PHONE, LAN_RELAY,
};
use common::ng::{client, find_int, ng};
use common::TempDir;
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

const NG_PORT: u16 = 3000;
const LAN_PORT: u16 = 3010;
const INET_PORT: u16 = 3020;
const MEDIA: (u16, u16) = (3100, 3199);

/// Builds the three namespaces and their two links, named with `tag`. Returns (guard, lan,
/// inet, relay).
fn build(tag: char) -> (Namespaces, String, String, String) {
    let id = std::process::id();
    two_networks(
        "ra24",
        &format!("{tag}{id}"),
        &format!("{tag}{}", id % 100_000),
        [(LAN_PHONE, LAN_RELAY), (INET_PHONE, INET_RELAY)],
    )
}

fn start_relay(ns: &str, engine: &str, log: &std::path::Path) -> Proc {
    let mut relay = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    relay
        .args(["--interface", &format!("internal/{LAN_RELAY}")])
        .args(["--interface", &format!("external/{INET_RELAY}")])
        .args(["--listen-ng", &format!("{LAN_RELAY}:{NG_PORT}")])
        .args(["--ng-allow", "10.0.0.0/24", "--no-sip"])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--io-engine", engine])
        .args(["--log-level", "info"]);
    spawn_in(ns, &mut relay, log)
}

/// The internet phone: this binary's `inet_echo_phone` in the internet namespace.
fn start_echo(ns: &str, log: &std::path::Path) -> Proc {
    spawn_in(ns, &mut inner_test("inet_echo_phone"), log)
}

fn run(engine: &str) {
    let (_ns, lan, inet, relay) = build(engine.chars().next().unwrap_or('x'));
    let dir = TempDir::new("rtpanchor-two-networks").unwrap();
    let relay_log = dir.path().join(format!("relay-{engine}.log"));
    let echo_log = dir.path().join(format!("echo-{engine}.log"));
    let relay_proc = start_relay(&relay, engine, &relay_log);
    let echo = start_echo(&inet, &echo_log);
    let kernel = cannot_run().is_none();
    let mut wrapper = Command::new("ip");
    wrapper.args(["netns", "exec", &lan]);
    common::run_inner_test(
        wrapper,
        "lan_side",
        &[("RA24_KERNEL", if kernel { "1" } else { "0" })],
    );
    let (packets, sources) = echo_result(echo, &echo_log, &relay_log);
    drop(relay_proc);
    // Everything it got came from the relay's external address (none straight from the LAN
    // phone, none from the internal address).
    let line = format!("{packets} packets from {sources:?}");
    assert!(packets >= 100, "{line}");
    assert_eq!(sources.len(), 1, "{line}");
    assert!(
        sources.iter().all(|s| s.ip().to_string() == INET_RELAY),
        "{line}"
    );
    eprintln!("{engine}: {line}; kernel path tested: {kernel}");
}

#[test]
fn a_call_between_a_lan_and_the_internet_over_uring() {
    run("uring");
}

#[test]
fn a_call_between_a_lan_and_the_internet_over_mmsg() {
    run("mmsg");
}

/// The internet phone, for at most 30 s ([`run_echo_phone`]).
#[test]
#[ignore = "the internet phone, run by the tests above in its namespace"]
fn inet_echo_phone() {
    run_echo_phone(INET_PORT, Duration::from_secs(30));
}

fn port_and_address(sdp: &str) -> (String, u16) {
    let c = sdp
        .lines()
        .find(|l| l.starts_with("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= line: {sdp}"));
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no m= line: {sdp}"));
    (
        c.trim_start_matches("c=IN IP4 ").trim().to_owned(),
        m.split(' ').nth(1).unwrap().parse().unwrap(),
    )
}

fn statistic(c: &mut NgClient, n: &mut u32, key: &str) -> i64 {
    *n += 1;
    let r = ng(
        c,
        &format!("st{n}"),
        &Owned::dict().with("command", "statistics"),
    );
    find_int(&r, key).unwrap_or(-1)
}

/// Sends `count` packets (seq from `first`) to `to`, 10 ms apart, and returns the echoes'
/// sources (with repeats) that came back within a second of the last send.
fn round(s: &UdpSocket, to: SocketAddr, first: u16, count: u16) -> Vec<SocketAddr> {
    let mut back = Vec::new();
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    for seq in first..first + count {
        s.send_to(&rtp(seq, u32::from(seq) * 160, 0x1A7, &[0xff; 160]), to)
            .unwrap();
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            back.push(from);
        }
    }
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            back.push(from);
        }
    }
    back
}

#[test]
#[ignore = "the LAN side, run by the tests above in the LAN namespace"]
fn lan_side() {
    let kernel = std::env::var("RA24_KERNEL").as_deref() == Ok("1");
    let ng_at = SocketAddr::new(LAN_RELAY.parse().unwrap(), NG_PORT);
    let mut c = client(ng_at);
    c.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let phone = UdpSocket::bind((LAN_PHONE, LAN_PORT)).unwrap();
    // No way to the internet phone but through the relay: sent straight, it never arrives
    // (the echo phone would list this phone as a source).
    for seq in 0..5u16 {
        let _ = phone.send_to(
            &rtp(seq, 0, 0xBAD, &[0; 20]),
            (INET_PHONE.parse::<std::net::IpAddr>().unwrap(), INET_PORT),
        );
    }
    let (offer, answer) = lan_inet_call(&mut c, "two-networks", LAN_PORT, INET_PORT);
    let to_inet = offer.get("sdp").and_then(Owned::as_str).unwrap_or_default();
    let (inet_addr, _inet_port) = port_and_address(to_inet);
    assert_eq!(inet_addr, INET_RELAY, "{offer}");
    assert!(
        !to_inet.contains(&format!("IN IP4 {LAN_RELAY}\r\n")),
        "{to_inet}"
    );
    let to_lan = answer
        .get("sdp")
        .and_then(Owned::as_str)
        .unwrap_or_default();
    let (lan_addr, lan_port) = port_and_address(to_lan);
    assert_eq!(lan_addr, LAN_RELAY, "{answer}");
    assert!(
        !to_lan.contains(&format!("IN IP4 {INET_RELAY}\r\n")),
        "{to_lan}"
    );
    assert!(
        answer.get("warning").is_none(),
        "the answer's direction agrees with the offer's: {answer}"
    );
    let relay_lan = SocketAddr::new(LAN_RELAY.parse().unwrap(), lan_port);

    // Round 1: through a worker (nothing is latched yet).
    let back = round(&phone, relay_lan, 100, 60);
    assert!(back.len() >= 55, "{} of 60 came back", back.len());
    assert!(back.iter().all(|a| *a == relay_lan), "{back:?}");

    let mut n = 0;
    if kernel {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut handed = false;
        while Instant::now() < deadline && !handed {
            // Keep media flowing while the latch confirms and the worker hands over.
            round(&phone, relay_lan, 200, 10);
            handed = statistic(&mut c, &mut n, "kernel_streams") == 2;
        }
        assert!(handed, "both directions were not handed to the kernel");
        let before = statistic(&mut c, &mut n, "kernel_forwarded");
        let back = round(&phone, relay_lan, 300, 200);
        assert!(back.len() >= 190, "{} of 200 came back", back.len());
        assert!(back.iter().all(|a| *a == relay_lan), "{back:?}");
        let after = statistic(&mut c, &mut n, "kernel_forwarded");
        assert!(
            after - before >= 380,
            "the kernel relayed {} of the 400 packets",
            after - before
        );
    } else {
        eprintln!("kernel path not tested here: {:?}", cannot_run());
    }

    let q = ng(
        &mut c,
        "query",
        &Owned::dict()
            .with("command", "query")
            .with("call-id", "two-networks"),
    );
    let text = q.to_string();
    for want in ["internal", "external", LAN_RELAY, INET_RELAY] {
        assert!(text.contains(want), "query lacks {want}: {text}");
    }
    let st = ng(
        &mut c,
        "stats-if",
        &Owned::dict().with("command", "statistics"),
    );
    let ifs = st
        .get("statistics")
        .and_then(|s| s.get("interfaces"))
        .and_then(Owned::as_list)
        .unwrap_or_else(|| panic!("{st}"));
    let used: Vec<(String, i64)> = ifs
        .iter()
        .map(|i| {
            (
                i.get("name")
                    .and_then(Owned::as_str)
                    .unwrap_or("")
                    .to_owned(),
                i.get("ports")
                    .and_then(|p| p.get("used"))
                    .and_then(Owned::as_int)
                    .unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        used,
        [("internal".to_string(), 2), ("external".to_string(), 2)],
        "{st}"
    );
    ng(
        &mut c,
        "delete",
        &Owned::dict()
            .with("command", "delete")
            .with("call-id", "two-networks"),
    );
}
