//! The built-in SIP proxy between two networks: a "LAN" namespace with a phone at 10.0.0.10,
//! an "internet" namespace with a phone at 203.0.113.20, and the relay in a third namespace
//! with one veth in each (10.0.0.1 `internal`, 203.0.113.1 `external`), started with the two
//! named interfaces and nothing else about networks (each phone's network is found from the
//! interfaces' subnets). The relay's namespace does not forward.
//!
//! Both phones register (each to the relay's address on its own network); the LAN phone
//! calls the internet phone, then the internet phone calls the LAN phone. In each call the
//! callee echoes the RTP it gets and hangs up (the BYE from the callee side), and each phone
//! checks that everything it hears of the relay names the relay's address on its own network:
//! the SDP's `c=`, the top Record-Route entry (the one its route set starts at; the other
//! entry of the double Record-Route names the far network, as RFC 3261 §16.6 has it), our Via
//! in requests, and the source of every SIP and RTP packet it receives.
//!
//! The phones are this binary's `phone` (ignored test) run in each phone's namespace with the
//! SIP kit of `common::sip` writing the messages. Names (prefix ra30a-): namespaces
//! ra30a-{lan,inet,relay}-PID, veths ra30al/ra30aL/ra30ai/ra30aI + PID % 100000. Ports (block
//! 5000-5499, inside the namespaces): SIP relay 5000, ng 5001 (loopback), phones' SIP 5010,
//! their media 5012, relay media 5100-5199.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{
    inner_test, spawn_in, two_networks, Proc, INET_PHONE, INET_RELAY, LAN_PHONE, LAN_RELAY,
};
use common::peers::tail;
use common::sip::{register_bytes, Uac, Uas};
use common::TempDir;
use rtpanchor::sip::{HeaderName, Message};

const SIP_PORT: u16 = 5000;
const PHONE_SIP: u16 = 5010;
const PHONE_MEDIA: u16 = 5012;
const MEDIA: (u16, u16) = (5100, 5199);
/// RTP packets the caller sends per call.
const PACKETS: u16 = 60;

fn start_relay(ns: &str, log: &std::path::Path) -> Proc {
    let mut relay = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    relay
        .args(["--interface", &format!("internal/{LAN_RELAY}")])
        .args(["--interface", &format!("external/{INET_RELAY}")])
        .args(["--listen-sip", &format!("{LAN_RELAY}:{SIP_PORT}")])
        .args(["--sip-open", "--domain", "example.com"])
        .args(["--listen-ng", "127.0.0.1:5001"])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--log-level", "debug"]);
    spawn_in(ns, &mut relay, log)
}

fn start_phone(ns: &str, which: &str, log: &std::path::Path) -> Proc {
    spawn_in(ns, inner_test("phone").env("RA30_PHONE", which), log)
}

fn wait_exit(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = p.0.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn phones_on_two_networks_call_each_other_through_the_proxy() {
    if !common::netns::is_root() {
        eprintln!(
            "SKIP phones_on_two_networks_call_each_other_through_the_proxy: network \
             namespaces and veths need root"
        );
        return;
    }
    let id = std::process::id();
    let (_ns, lan, inet, relay) = two_networks(
        "ra30a",
        &id.to_string(),
        &(id % 100_000).to_string(),
        [(LAN_PHONE, LAN_RELAY), (INET_PHONE, INET_RELAY)],
    );
    let dir = TempDir::new("rtpanchor-sip-two-networks").unwrap();
    let relay_log = dir.path().join("relay.log");
    let lan_log = dir.path().join("lan.log");
    let inet_log = dir.path().join("inet.log");
    let _relay = start_relay(&relay, &relay_log);
    let mut lan_phone = start_phone(&lan, "lan", &lan_log);
    let mut inet_phone = start_phone(&inet, "inet", &inet_log);
    let lan_done = wait_exit(&mut lan_phone, Duration::from_secs(60));
    let inet_done = wait_exit(&mut inet_phone, Duration::from_secs(10));
    let show = |p: &std::path::Path| tail(p, 60);
    let report = format!(
        "LAN phone:\n{}\ninternet phone:\n{}\nrelay:\n{}",
        show(&lan_log),
        show(&inet_log),
        show(&relay_log)
    );
    for (who, st, log) in [
        ("LAN", lan_done, &lan_log),
        ("internet", inet_done, &inet_log),
    ] {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            st.is_some_and(|s| s.success()) && said.contains("1 passed"),
            "the {who} phone failed ({st:?}):\n{report}"
        );
        let line = said.lines().find(|l| l.starts_with("PHONE ")).unwrap_or("");
        eprintln!("{who}: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// The phone, run in its namespace.

/// One phone: its addresses, the relay's address on its network, and what it saw.
struct Phone {
    me: IpAddr,
    relay: SocketAddr,
    user: &'static str,
    peer_user: &'static str,
    sip: UdpSocket,
    media: UdpSocket,
    /// Every source of SIP and RTP packets received.
    sources: BTreeSet<IpAddr>,
}

impl Phone {
    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.me, port)
    }

    fn send(&self, bytes: &[u8]) {
        self.sip.send_to(bytes, self.relay).unwrap();
    }

    /// The next SIP message `want` accepts, within `limit` (others are skipped).
    fn expect(
        &mut self,
        what: &str,
        limit: Duration,
        want: impl Fn(&Message<'_>) -> bool,
    ) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            self.sources.insert(from.ip());
            assert_eq!(
                from, self.relay,
                "SIP from {from}, not the relay's address here"
            );
            let bytes = buf[..n].to_vec();
            if Message::parse(&bytes).is_ok_and(|m| want(&m)) {
                return bytes;
            }
        }
        panic!("{}: no {what} within {limit:?}", self.user);
    }

    /// The relay's `c=` address and media port in an SDP body; the address must be ours.
    fn relay_media(&self, m: &Message<'_>) -> SocketAddr {
        let sdp = std::str::from_utf8(m.body()).unwrap();
        let c = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("c=IN IP4 "))
            .collect::<Vec<_>>();
        assert!(!c.is_empty(), "no c= line: {sdp}");
        assert!(
            c.iter().all(|a| a.trim() == self.relay.ip().to_string()),
            "{}: the SDP names another address than the relay's here: {sdp}",
            self.user
        );
        assert!(!sdp.contains(other_relay(self.relay.ip())), "{sdp}");
        let port = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no m= line: {sdp}"));
        SocketAddr::new(self.relay.ip(), port)
    }

    /// Record-Route as received: two entries, the one naming our network first when we
    /// are the callee (`callee`), last when we are the caller.
    fn check_record_route(&self, m: &Message<'_>, callee: bool) {
        let rr: Vec<String> = m
            .route_set(HeaderName::RecordRoute)
            .unwrap()
            .iter()
            .map(|r| r.raw.to_string())
            .collect();
        let ours = format!("<sip:{};lr>", self.relay);
        assert_eq!(rr.len(), 2, "double Record-Route: {rr:?}");
        let facing = if callee { &rr[0] } else { &rr[1] };
        assert_eq!(facing, &ours, "{}: {rr:?}", self.user);
    }

    fn sdp(&self) -> Vec<u8> {
        common::sip::sdp(&self.me.to_string(), PHONE_MEDIA)
    }

    /// Sends RTP to `to` and counts the echoes, which must come from `to`.
    fn talk(&mut self, to: SocketAddr) -> usize {
        let mut back = 0;
        let mut buf = [0u8; 2048];
        for seq in 0..PACKETS {
            let pkt = common::media::rtp(seq, u32::from(seq) * 160, 0x5A7, &[0xd5; 160]);
            self.media.send_to(&pkt, to).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            while let Ok((_, from)) = self.media.recv_from(&mut buf) {
                self.sources.insert(from.ip());
                assert_eq!(from, to, "RTP echo from {from}");
                back += 1;
            }
        }
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Ok((_, from)) = self.media.recv_from(&mut buf) {
                self.sources.insert(from.ip());
                back += 1;
            }
        }
        back
    }

    /// Echoes RTP to its source until none came for a second; returns the count.
    fn echo(&mut self) -> usize {
        let mut got = 0;
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        let mut last = Instant::now();
        while start.elapsed() < Duration::from_secs(20) && last.elapsed() < Duration::from_secs(1) {
            if let Ok((n, from)) = self.media.recv_from(&mut buf) {
                self.sources.insert(from.ip());
                assert_eq!(from.ip(), self.relay.ip(), "RTP from {from}");
                got += 1;
                last = Instant::now();
                let _ = self.media.send_to(&buf[..n], from);
            }
        }
        got
    }

    fn register(&mut self) {
        let via = self.addr(PHONE_SIP).to_string();
        let contact = format!("sip:{}@{via}", self.user);
        let reg = register_bytes(
            self.user,
            &[&contact],
            &via,
            &format!("reg-{}", self.user),
            1,
        );
        self.send(&reg);
        self.expect("200 to REGISTER", Duration::from_secs(2), |m| {
            m.status() == Some(200)
        });
    }

    /// Calls the other phone (retrying while it is not registered yet), sends RTP, and
    /// waits for the callee's BYE. Returns the echoes counted.
    fn call(&mut self, call_id: &str) -> usize {
        let via = self.addr(PHONE_SIP).to_string();
        let target = format!("sip:{}@example.com", self.peer_user);
        let mut a = Uac::new(self.addr(PHONE_SIP), &via, call_id).calling(&target);
        let deadline = Instant::now() + Duration::from_secs(20);
        let ok = loop {
            assert!(
                Instant::now() < deadline,
                "{call_id}: the callee never answered"
            );
            let sdp = self.sdp();
            self.send(&a.invite(Some(&sdp)));
            let r = self.expect("final response", Duration::from_secs(5), |m| {
                m.status().is_some_and(|s| s >= 200)
            });
            let m = Message::parse(&r).unwrap();
            match m.status() {
                Some(200) => break r,
                Some(404 | 480) => {
                    self.send(&a.ack_failure(&r));
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("{call_id}: INVITE answered {other:?}"),
            }
        };
        let m = Message::parse(&ok).unwrap();
        self.check_record_route(&m, false);
        let media = self.relay_media(&m);
        a.learn(&ok);
        // Our route set starts at the relay's address on our network.
        assert_eq!(
            a.route.first().map(String::as_str),
            Some(format!("<sip:{};lr>", self.relay).as_str())
        );
        self.send(&a.ack(None));
        let echoes = self.talk(media);
        assert!(
            echoes >= usize::from(PACKETS) * 9 / 10,
            "{call_id}: {echoes} echoes"
        );
        // The callee hangs up.
        let bye = self.expect("BYE", Duration::from_secs(10), |m| {
            m.method() == Some("BYE")
        });
        let me = Uas::new(
            self.addr(PHONE_SIP),
            "a1",
            &format!("sip:{}@{via}", self.user),
        );
        self.send(&me.respond(&bye, 200));
        echoes
    }

    /// Answers the other phone's call, echoes its RTP, and hangs up. Returns the packets
    /// echoed.
    fn answer(&mut self, call_id: &str) -> usize {
        let inv = self.expect("INVITE", Duration::from_secs(30), |m| {
            m.method() == Some("INVITE") && m.call_id() == Ok(call_id)
        });
        let m = Message::parse(&inv).unwrap();
        self.check_record_route(&m, true);
        // Our Via, pushed by the relay, names its address on our network.
        let top = m.top_via().unwrap();
        assert_eq!(top.host.ip(), Some(self.relay.ip()));
        self.relay_media(&m);
        let via = self.addr(PHONE_SIP).to_string();
        let contact = format!("sip:{}@{via}", self.user);
        let uas = Uas::new(self.addr(PHONE_SIP), "b1", &contact);
        self.send(&uas.respond_sdp(&inv, 200, &self.sdp()));
        self.expect("ACK", Duration::from_secs(5), |m| m.method() == Some("ACK"));
        let got = self.echo();
        assert!(
            got >= usize::from(PACKETS) * 9 / 10,
            "{call_id}: {got} packets"
        );
        // Hang up: the route set is the Record-Route as received (ours first).
        let route = m.header(HeaderName::RecordRoute).unwrap().value.to_string();
        let from = m.header(HeaderName::From).unwrap().value.to_string();
        let to = m.header(HeaderName::To).unwrap().value.to_string();
        let caller = m.header(HeaderName::Contact).unwrap().value;
        let caller = caller.trim_start_matches('<').trim_end_matches('>');
        let bye = format!(
            "BYE {caller} SIP/2.0\r\n\
Via: SIP/2.0/UDP {via};branch=z9hG4bK{call_id}bye;rport\r\n\
Route: {route}\r\n\
Max-Forwards: 70\r\n\
From: {to};tag=b1\r\n\
To: {from}\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n"
        );
        self.send(bye.as_bytes());
        self.expect("200 to BYE", Duration::from_secs(5), |m| {
            m.status() == Some(200) && m.cseq().is_ok_and(|c| c.method == "BYE")
        });
        got
    }
}

/// The relay's address on the other network.
fn other_relay(ours: IpAddr) -> &'static str {
    if ours.to_string() == LAN_RELAY {
        INET_RELAY
    } else {
        LAN_RELAY
    }
}

#[test]
#[ignore = "a phone, run by the test above in its namespace"]
fn phone() {
    let lan = std::env::var("RA30_PHONE").as_deref() == Ok("lan");
    let (me, relay, user, peer_user) = if lan {
        (LAN_PHONE, LAN_RELAY, "lanphone", "netphone")
    } else {
        (INET_PHONE, INET_RELAY, "netphone", "lanphone")
    };
    let me: IpAddr = me.parse().unwrap();
    let sip = UdpSocket::bind((me, PHONE_SIP)).unwrap();
    sip.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let media = UdpSocket::bind((me, PHONE_MEDIA)).unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut p = Phone {
        me,
        relay: SocketAddr::new(relay.parse().unwrap(), SIP_PORT),
        user,
        peer_user,
        sip,
        media,
        sources: BTreeSet::new(),
    };
    // The relay may still be starting: REGISTER until it answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.register()));
        if done.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never answered REGISTER"
        );
    }
    let (first, second) = if lan {
        (p.call("lan-to-net"), p.answer("net-to-lan"))
    } else {
        (p.answer("lan-to-net"), p.call("net-to-lan"))
    };
    let sources: Vec<String> = p.sources.iter().map(IpAddr::to_string).collect();
    println!("PHONE {user} first-call {first} second-call {second} sources {sources:?}");
    assert_eq!(
        p.sources.iter().copied().collect::<Vec<_>>(),
        vec![p.relay.ip()],
        "{user} heard from more than the relay's address on its network"
    );
}
