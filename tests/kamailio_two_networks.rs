//! Kamailio and rtpanchor between two networks (issue 24), in namespaces the test builds: a
//! "LAN" namespace with a SIPp phone at 10.0.0.10, an "internet" namespace with a SIPp phone at
//! 203.0.113.20, and a relay namespace with one veth in each (10.0.0.1, 203.0.113.1) that does
//! not forward. In the relay namespace Kamailio listens on both addresses
//! (tools/kamailio/two_networks.cfg) and drives rtpanchor (`--interface internal/10.0.0.1
//! --interface external/203.0.113.1`, ng on 127.0.0.1 there) with
//! `rtpengine_manage("direction=internal direction=external")` for a call from the LAN, the
//! names the other way round for a call from the internet. One call each way.
//!
//! ```text
//!  LAN phone (SIPp UAC, pcap) ──SIP──▶ 10.0.0.1 Kamailio 203.0.113.1 ──SIP──▶ internet phone (SIPp UAS)
//!  10.0.0.10 ──RTP──▶ 10.0.0.1 rtpanchor 203.0.113.1 ──RTP──▶ echo at 203.0.113.20 (this binary)
//! ```
//!
//! Asserted for each call: it completes (SIPp's counts); the callee is offered only the relay's
//! address in its network and the caller is answered with only the one in its own; the
//! callee's echo got the pcap's packets, only from the relay's address in its network; an ng
//! `query` during the call (run in the relay namespace by this binary) shows the LAN side
//! bound on 10.0.0.1 as `internal` and the internet side on 203.0.113.1 as `external`, with
//! RTP counted on both sides (the caller's pcap in, the echoes in and relayed to the caller).
//!
//! Skips with a printed reason when not root (namespaces) or without `kamailio`/`sipp`.
//! Names: namespaces ra30b-{lan,inet,relay}-kPID. Ports (block 5500-5999, inside the
//! namespaces): ng 5500, Kamailio 5560, LAN phone SIP 5570, internet phone SIP 5575, caller
//! media 5600 / control 5590, callee media 5700 / control 5591, echo 5710, relay media
//! 5800-5899.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::media::echo_until_quiet;
use common::netns::{is_root, two_networks, INET_PHONE, INET_RELAY, LAN_PHONE, LAN_RELAY};
use common::ng::{client, ng};
use common::peers::{find_program, kamailio_args, tail, Peer};
use common::{pcap_uac_command_at, sipp_call_counts, PcapUac, TempDir};
use rtpanchor::control::bencode::Owned;

const NG_PORT: u16 = 5500;
const SIP_PORT: u16 = 5560;
const LAN_SIP: u16 = 5570;
const INET_SIP: u16 = 5575;
/// The caller's media and control ports, and the callee's (each in its own namespace).
const UAC_MEDIA: u16 = 5600;
const UAC_CP: u16 = 5590;
const UAS_MEDIA: u16 = 5700;
const UAS_CP: u16 = 5591;
const ECHO_PORT: u16 = 5710;
const MEDIA: (u16, u16) = (5800, 5899);
/// Packets in SIPp's g711a.pcap; each side must count at least this many of them.
const PCAP_PACKETS: i64 = 236;
const MIN_PACKETS: i64 = PCAP_PACKETS * 85 / 100;

fn in_ns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Whether something in `ns` listens on UDP `port` (asked of `ss` there), for up to `limit`.
fn wait_bound(ns: &str, port: u16, peer: &mut Peer, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-H", "-lun"])
            .args(["sport", "=", &format!(":{port}")])
            .output();
        if out.is_ok_and(|o| !o.stdout.is_empty()) {
            return;
        }
        if let Some(st) = peer.try_status() {
            panic!("{} exited ({st}):\n{}", peer.name(), peer.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} did not bind UDP {port} in {limit:?}:\n{}",
        peer.name(),
        peer.log_tail(40)
    );
}

/// The `c=` address and audio port an SDP log line names (`... c=IN IP4 A m=audio P`).
fn logged_sdp(log: &Path, tag: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(tag))
        .filter_map(|l| l.split("c=IN IP4 ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn calls_through_kamailio_between_the_lan_and_the_internet() {
    if !is_root() {
        eprintln!("SKIP calls_through_kamailio_between_the_lan_and_the_internet: network namespaces need root");
        return;
    }
    let (Some(kamailio), Some(sipp)) = (find_program("kamailio"), find_program("sipp")) else {
        eprintln!("SKIP calls_through_kamailio_between_the_lan_and_the_internet: `kamailio` and/or `sipp` not installed");
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let id = std::process::id();
    let (_ns, lan, inet, relay) = two_networks(
        "ra30b",
        &format!("k{id}"),
        &format!("k{}", id % 100_000),
        [(LAN_PHONE, LAN_RELAY), (INET_PHONE, INET_RELAY)],
    );
    let dir = TempDir::new("rtpanchor-kamailio-two-networks").unwrap();
    let d = dir.path();

    // 1. The relay, in its namespace.
    let mut relay_cmd = in_ns(&relay, Path::new(env!("CARGO_BIN_EXE_rtpanchor")));
    relay_cmd
        .env("NO_COLOR", "1")
        .args(["--interface", &format!("internal/{LAN_RELAY}")])
        .args(["--interface", &format!("external/{INET_RELAY}")])
        .args(["--listen-ng", &format!("127.0.0.1:{NG_PORT}")])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--no-sip", "--num-threads", "1", "--log-level", "info"]);
    let mut relay_peer =
        Peer::spawn("rtpanchor", &mut relay_cmd, &d.join("relay.log")).expect("start rtpanchor");
    wait_bound(&relay, NG_PORT, &mut relay_peer, Duration::from_secs(10));

    // 2. Kamailio on both of the relay's addresses.
    let kam_run = d.join("kamailio-run");
    std::fs::create_dir(&kam_run).expect("kamailio runtime dir");
    let mut kam_cmd = in_ns(&relay, &kamailio);
    kamailio_args(
        &mut kam_cmd,
        &repo.join("tools/kamailio/two_networks.cfg"),
        &kam_run,
        d,
    )
    .args(["-A", &format!("LAN_IP={LAN_RELAY}")])
    .args(["-A", &format!("INET_IP={INET_RELAY}")])
    .args(["-A", &format!("SIP_PORT={SIP_PORT}")])
    .args(["-A", &format!("RTPENGINE_SOCK=\"udp:127.0.0.1:{NG_PORT}\"")])
    .args(["-A", &format!("LAN_HOP=\"sip:{LAN_PHONE}:{LAN_SIP}\"")])
    .args(["-A", &format!("INET_HOP=\"sip:{INET_PHONE}:{INET_SIP}\"")]);
    let mut kam =
        Peer::spawn("kamailio", &mut kam_cmd, &d.join("kamailio.log")).expect("start kamailio");
    wait_bound(&relay, SIP_PORT, &mut kam, Duration::from_secs(10));

    for (caller, callee) in [
        (Phone::lan(&lan), Phone::inet(&inet)),
        (Phone::inet(&inet), Phone::lan(&lan)),
    ] {
        let sub = d.join(format!("{}-to-{}", caller.name, callee.name));
        std::fs::create_dir(&sub).expect("a directory per call");
        call(&sipp, &relay, &caller, &callee, &sub, &mut kam);
    }
    for p in [&mut kam, &mut relay_peer] {
        p.stop(Duration::from_secs(3));
    }
}

/// A phone: its namespace, address, SIP port (the one Kamailio's LAN_HOP or INET_HOP names)
/// and the relay's address in its network.
struct Phone<'a> {
    name: &'static str,
    ns: &'a str,
    ip: &'static str,
    sip: u16,
    relay: &'static str,
}

impl<'a> Phone<'a> {
    fn lan(ns: &'a str) -> Phone<'a> {
        Phone {
            name: "lan",
            ns,
            ip: LAN_PHONE,
            sip: LAN_SIP,
            relay: LAN_RELAY,
        }
    }

    fn inet(ns: &'a str) -> Phone<'a> {
        Phone {
            name: "inet",
            ns,
            ip: INET_PHONE,
            sip: INET_SIP,
            relay: INET_RELAY,
        }
    }
}

/// One call from `caller` to `callee` through Kamailio, with its checks; logs in `d`.
fn call(sipp: &Path, relay: &str, caller: &Phone, callee: &Phone, d: &Path, kam: &mut Peer) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The callee: this binary's echo on the port the UAS's answer names, and SIPp.
    let exe = std::env::current_exe().expect("the test binary");
    let mut echo_cmd = in_ns(callee.ns, &exe);
    echo_cmd
        .env("RA30B_ECHO_IP", callee.ip)
        .args(["--exact", "callee_echo", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"]);
    let echo_log = d.join("echo.log");
    let mut echo = Peer::spawn("echo", &mut echo_cmd, &echo_log).expect("start the echo");
    let uas_log = d.join("uas_sdp.log");
    let mut uas_cmd = in_ns(callee.ns, sipp);
    uas_cmd
        .current_dir(d)
        .arg("-sf")
        .arg(repo.join("tools/sipp/uas_rr_sdp.xml"))
        .args(["-i", callee.ip, "-mi", callee.ip])
        .args(["-p", &callee.sip.to_string()])
        .args(["-mp", &UAS_MEDIA.to_string()])
        .args(["-key", "rtp_port", &ECHO_PORT.to_string()])
        .args(["-cp", &UAS_CP.to_string()])
        .args(["-m", "1", "-nostdin", "-trace_logs"])
        .arg("-log_file")
        .arg(&uas_log);
    let mut uas = Peer::spawn("sipp-uas", &mut uas_cmd, &d.join("uas.out")).expect("sipp uas");
    wait_bound(callee.ns, callee.sip, &mut uas, Duration::from_secs(10));
    wait_bound(callee.ns, ECHO_PORT, &mut echo, Duration::from_secs(10));

    // The caller calls through Kamailio's address in its own network.
    let mut uac_cmd = pcap_uac_command_at(
        in_ns(caller.ns, sipp),
        caller.ip,
        d,
        &repo.join("tools/sipp/uac_rr_pcap.xml"),
        &PcapUac {
            target: format!("{}:{SIP_PORT}", caller.relay),
            service: None,
            sip_port: caller.sip,
            media_port: UAC_MEDIA,
            control_port: UAC_CP,
            calls: 1,
            rate: 1,
            limit: 1,
        },
    );
    let mut uac = Peer::spawn("sipp-uac", &mut uac_cmd, &d.join("uac.out")).expect("sipp uac");

    // While the call runs: the ng query, from inside the relay's namespace.
    let mut query_cmd = Command::new("ip");
    query_cmd.args(["netns", "exec", relay]);
    common::run_inner_test(query_cmd, "relay_query", &[]);

    let status = uac.wait_timeout(Duration::from_secs(30));
    let logs = |uac: &Peer, uas: &Peer, kam: &Peer| {
        format!(
            "uac:\n{}\nuas:\n{}\nkamailio:\n{}\nrelay:\n{}",
            uac.log_tail(30),
            uas.log_tail(30),
            kam.log_tail(40),
            tail(&d.join("../relay.log"), 30)
        )
    };
    let why = logs(&uac, &uas, kam);
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp UAC: {status:?}\n{why}"
    );
    let counts = sipp_call_counts(&d.join("uac_stats.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts, (1, 0), "{why}");

    // Each phone saw only the relay's address of its own network.
    assert_eq!(
        logged_sdp(&uas_log, "UAS-OFFER-SDP"),
        [callee.relay],
        "{why}"
    );
    assert_eq!(
        logged_sdp(&d.join("uac_sdp.log"), "UAC-ANSWER-SDP"),
        [caller.relay],
        "{why}"
    );

    // The echo got the pcap, all of it from the relay's address in the callee's network.
    let _ = echo.wait_timeout(Duration::from_secs(15));
    let said = std::fs::read_to_string(&echo_log).unwrap_or_default();
    let line = said
        .lines()
        .find_map(|l| l.find("ECHO ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("the echo said nothing:\n{said}\n{why}"));
    let mut parts = line.split(' ').skip(1);
    let packets: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let sources: BTreeSet<SocketAddr> = parts.filter_map(|p| p.parse().ok()).collect();
    assert!(packets >= MIN_PACKETS, "{line}");
    assert_eq!(sources.len(), 1, "{line}");
    assert!(
        sources.iter().all(|s| s.ip().to_string() == callee.relay),
        "{line}"
    );
    let kam_log = std::fs::read_to_string(kam.log_path()).unwrap_or_default();
    assert!(
        !kam_log.contains("ERROR: rtpengine"),
        "kamailio logged rtpengine errors:\n{why}"
    );
    eprintln!(
        "{} to {}: call completed; echo: {line}",
        caller.name, callee.name
    );
    uas.stop(Duration::from_secs(3));
}

/// The callee's media: echoes every datagram to its source for at most 40 s, stopping 3 s
/// after the last one (once something came); then prints what it got. Binds
/// `RA30B_ECHO_IP`.
#[test]
#[ignore = "the callee's echo, run by the test above in the callee's namespace"]
fn callee_echo() {
    let ip = std::env::var("RA30B_ECHO_IP").unwrap_or_else(|_| INET_PHONE.to_owned());
    let s = UdpSocket::bind((ip.as_str(), ECHO_PORT)).unwrap();
    let (got, sources) =
        echo_until_quiet(&s, Duration::from_secs(40), Duration::from_secs(3), None);
    let list: Vec<String> = sources.iter().map(|a| a.to_string()).collect();
    println!("ECHO {got} {}", list.join(" "));
}

/// One side of the queried call: (local address, interface, endpoint address, RTP packets).
fn side(tag: &Owned) -> (String, String, String, i64) {
    let rtp = tag
        .get("medias")
        .and_then(Owned::as_list)
        .and_then(|m| m.first())
        .and_then(|m| m.get("streams"))
        .and_then(Owned::as_list)
        .and_then(|s| s.first())
        .unwrap_or_else(|| panic!("no RTP stream in {tag}"));
    let text = |v: Option<&Owned>| v.and_then(Owned::as_str).unwrap_or_default().to_owned();
    (
        text(rtp.get("local address")),
        text(rtp.get("interface")),
        text(rtp.get("endpoint").and_then(|e| e.get("address"))),
        rtp.get("stats")
            .and_then(|s| s.get("packets"))
            .and_then(Owned::as_int)
            .unwrap_or(0),
    )
}

/// In the relay's namespace: waits for the call, then queries it until both sides have
/// counted most of the pcap (at most 20 s), and checks each side's address and interface.
#[test]
#[ignore = "the ng query, run by the test above in the relay's namespace"]
fn relay_query() {
    let mut c = client(SocketAddr::from(([127, 0, 0, 1], NG_PORT)));
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let call = loop {
        // A cookie per request: the relay answers a repeated cookie from its reply cache.
        n += 1;
        let r = ng(
            &mut c,
            &format!("list{n}"),
            &Owned::dict().with("command", "list"),
        );
        let first = r
            .get("calls")
            .and_then(Owned::as_list)
            .and_then(|l| l.first())
            .and_then(Owned::as_str)
            .map(str::to_owned);
        if let Some(id) = first {
            break id;
        }
        assert!(Instant::now() < until, "no call at the relay in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        n += 1;
        let q = ng(
            &mut c,
            &format!("q{n}"),
            &Owned::dict()
                .with("command", "query")
                .with("call-id", call.as_str()),
        );
        let tags = q
            .get("tags")
            .and_then(Owned::as_dict)
            .unwrap_or_else(|| panic!("no tags: {q}"));
        let mut sides: Vec<_> = tags.iter().map(|(_, t)| side(t)).collect();
        sides.sort();
        let done = sides.len() == 2 && sides.iter().all(|s| s.3 >= MIN_PACKETS);
        if done || Instant::now() >= until {
            println!("QUERY {sides:?}");
            assert_eq!(sides.len(), 2, "{q}");
            let (lan, inet) = (&sides[0], &sides[1]);
            assert_eq!(
                (lan.0.as_str(), lan.1.as_str(), lan.2.as_str()),
                (LAN_RELAY, "internal", LAN_PHONE),
                "{q}"
            );
            assert_eq!(
                (inet.0.as_str(), inet.1.as_str(), inet.2.as_str()),
                (INET_RELAY, "external", INET_PHONE),
                "{q}"
            );
            assert!(done, "RTP not counted on both sides: {q}");
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
