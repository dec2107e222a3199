//! A shared location service: two SIP fronts (two rtpanchor processes, each with its
//! built-in proxy and embedded relay) on one real `redis-server` see each other's
//! registrations. A phone registered at front A is called through front B: over UDP B
//! reaches it directly, with media anchored on B's relay; over TCP the INVITE goes through A
//! and reaches the phone on the connection it registered over. An unregistration at A is
//! seen at B; with Redis stopped each front still serves its own phones, and once Redis is
//! back what changed meanwhile is seen again.
//!
//! How fast B sees a change at A is measured (printed as `propagation`): REGISTER answered
//! at A → the first OPTIONS through B that reaches the phone.
//!
//! Port block 6000-6499, a block of 100 per test: Redis +0, ng A +1, ng B +2, SIP A +3,
//! SIP B +4, phone +5, caller +6, the caller's media +7, the phone's media +8, a second
//! phone +9; relay media A +20..+59, B +60..+99.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::media::{pcmu, recv_n};
use common::sip::{register_bytes, sdp, Uac, Uas};
use common::store::{start_redis, Fronts as Bed};
use common::tcp_phone::TcpPhone;

/// The ports of one test (see the module docs).
#[derive(Clone, Copy)]
struct Ports(u16);

impl Ports {
    fn redis(self) -> u16 {
        self.0
    }
    fn sip_a(self) -> SocketAddr {
        lo(self.0 + 3)
    }
    fn sip_b(self) -> SocketAddr {
        lo(self.0 + 4)
    }
    fn phone(self) -> u16 {
        self.0 + 5
    }
    fn caller(self) -> u16 {
        self.0 + 6
    }
    fn b_media(self) -> std::ops::RangeInclusive<u16> {
        self.0 + 60..=self.0 + 99
    }
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A phone: where its requests arrive and how it answers them.
trait Phone {
    /// The next message within `limit`.
    fn next(&mut self, limit: Duration) -> Option<String>;
    /// Sends to where the last message came from.
    fn send(&mut self, bytes: &[u8]);
}

struct UdpPhone {
    sock: UdpSocket,
    last: Option<SocketAddr>,
}

impl UdpPhone {
    fn bind(port: u16) -> UdpPhone {
        let sock = UdpSocket::bind(lo(port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        UdpPhone { sock, last: None }
    }

    fn register(&mut self, front: SocketAddr, user: &str, cseq: u32, expires: u32) -> String {
        let port = self.sock.local_addr().unwrap().port();
        let contact = format!("sip:{user}@127.0.0.1:{port}");
        let bytes = String::from_utf8(register_bytes(
            user,
            &[&contact],
            &format!("127.0.0.1:{port}"),
            &format!("reg-{user}-{port}"),
            cseq,
        ))
        .unwrap()
        .replace("Expires: 600", &format!("Expires: {expires}"));
        self.sock.send_to(bytes.as_bytes(), front).unwrap();
        self.next(Duration::from_secs(3))
            .expect("no answer to REGISTER")
    }
}

impl Phone for UdpPhone {
    fn next(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65535];
        loop {
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                self.last = Some(from);
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Some(to) = self.last {
            self.sock.send_to(bytes, to).unwrap();
        }
    }
}

impl Phone for TcpPhone {
    fn next(&mut self, limit: Duration) -> Option<String> {
        TcpPhone::next(self, limit)
    }

    fn send(&mut self, bytes: &[u8]) {
        TcpPhone::send(self, bytes)
    }
}

/// The caller, on UDP, always talking to front B.
struct Caller {
    sock: UdpSocket,
    via: String,
}

impl Caller {
    fn bind(port: u16) -> Caller {
        let sock = UdpSocket::bind(lo(port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        Caller {
            sock,
            via: format!("127.0.0.1:{port}"),
        }
    }

    fn uac(&self, call_id: &str, target: &str) -> Uac {
        Uac::new(self.sock.local_addr().unwrap(), &self.via, call_id).calling(target)
    }

    /// The next response within `limit` that is not a 100.
    fn response(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let t = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !t.starts_with("SIP/2.0 100") {
                    return Some(t);
                }
            }
        }
        None
    }
}

fn status(msg: &str) -> u16 {
    msg.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn sdp_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in:\n{msg}"))
}

/// One OPTIONS from the caller through `front` to `target`: the final status the caller
/// got (the phone answers 200 to what reaches it), 0 if none within 1 s.
fn probe(caller: &Caller, uac: &mut Uac, front: SocketAddr, phone: &mut dyn Phone) -> u16 {
    caller
        .sock
        .send_to(&uac.request("OPTIONS", ""), front)
        .unwrap();
    let uas = Uas::new(lo(1), "p1", "sip:x@127.0.0.1");
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(m) = phone.next(Duration::from_millis(2)) {
            if m.starts_with("OPTIONS ") {
                phone.send(&uas.respond(m.as_bytes(), 200));
            }
        }
        if let Some(r) = caller.response(Duration::from_millis(2)) {
            return status(&r);
        }
    }
    0
}

/// Probes through `front` until `done(status)`, for `limit` at most: how long it took.
fn probe_until(
    caller: &Caller,
    target: &str,
    front: SocketAddr,
    phone: &mut dyn Phone,
    limit: Duration,
    done: impl Fn(u16) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut uac = caller.uac(&format!("probe-{}", front.port()), target);
    while start.elapsed() < limit {
        if done(probe(caller, &mut uac, front, phone)) {
            return Some(start.elapsed());
        }
    }
    None
}

/// The next request the phone gets whose method is `method` (answering OPTIONS probes).
fn expect_request(phone: &mut dyn Phone, method: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let uas = Uas::new(lo(1), "p1", "sip:x@127.0.0.1");
    while Instant::now() < deadline {
        if let Some(m) = phone.next(Duration::from_millis(20)) {
            if m.starts_with(&format!("{method} ")) {
                return Some(m);
            }
            if m.starts_with("OPTIONS ") {
                phone.send(&uas.respond(m.as_bytes(), 200));
            }
        }
    }
    None
}

/// Probes through `front` until the phone answers (`limit` at most): how long it took.
fn until_reached(
    bed: &Bed,
    caller: &Caller,
    target: &str,
    front: SocketAddr,
    phone: &mut dyn Phone,
    limit: Duration,
) -> Duration {
    probe_until(caller, target, front, phone, limit, |s| s == 200).unwrap_or_else(|| {
        panic!(
            "{target} not reached through {front} in {limit:?}\n{}",
            bed.logs()
        )
    })
}

/// How long until bob is reached through B (3 s at most).
fn bob_through_b(bed: &Bed, caller: &Caller, bob: &mut dyn Phone) -> Duration {
    let b = Ports(bed.base).sip_b();
    until_reached(bed, caller, BOB, b, bob, Duration::from_secs(3))
}

/// The caller's INVITE (with SDP) to bob through B, as it reaches the phone.
fn invite_through_b(
    bed: &Bed,
    caller: &Caller,
    call_id: &str,
    phone: &mut dyn Phone,
) -> (Uac, String) {
    let p = Ports(bed.base);
    let mut uac = caller.uac(call_id, BOB);
    caller
        .sock
        .send_to(&uac.invite(Some(&sdp("127.0.0.1", p.0 + 7))), p.sip_b())
        .unwrap();
    let invite = expect_request(phone, "INVITE", Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no INVITE at the phone\n{}", bed.logs()));
    (uac, invite)
}

/// The phone answers 200 with SDP; the caller gets it, anchored on B's relay, and ACKs.
/// Returns the relay port the caller's media goes to.
fn answer_and_ack(
    bed: &Bed,
    caller: &Caller,
    uac: &mut Uac,
    phone: &mut dyn Phone,
    uas: &Uas,
    invite: &str,
) -> u16 {
    let p = Ports(bed.base);
    phone.send(&uas.respond_sdp(invite.as_bytes(), 200, &sdp("127.0.0.1", p.0 + 8)));
    let ok = caller.response(Duration::from_secs(3)).expect("no 200");
    assert_eq!(status(&ok), 200, "{ok}");
    let relay = sdp_port(&ok);
    assert!(
        p.b_media().contains(&relay),
        "answer not anchored on B:\n{ok}"
    );
    uac.learn(ok.as_bytes());
    caller.sock.send_to(&uac.ack(None), p.sip_b()).unwrap();
    assert!(expect_request(phone, "ACK", Duration::from_secs(2)).is_some());
    relay
}

/// The caller hangs up through B; the phone gets the BYE and answers it.
fn hang_up(bed: &Bed, caller: &Caller, uac: &mut Uac, phone: &mut dyn Phone, uas: &Uas) {
    caller
        .sock
        .send_to(&uac.bye(), Ports(bed.base).sip_b())
        .unwrap();
    let bye = expect_request(phone, "BYE", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no BYE at the phone\n{}", bed.logs()));
    phone.send(&uas.respond(bye.as_bytes(), 200));
    let ok = caller
        .response(Duration::from_secs(2))
        .expect("no 200 to BYE");
    assert_eq!(status(&ok), 200, "{ok}");
}

const BOB: &str = "sip:bob@example.com";

#[test]
fn a_udp_phone_registered_at_a_is_called_through_b_and_unregistered() {
    let bed = Bed::start(6000, "rtpanchor-shloc-udp");
    let p = Ports(bed.base);
    let mut bob = UdpPhone::bind(p.phone());
    let caller = Caller::bind(p.caller());

    let ok = bob.register(p.sip_a(), "bob", 1, 600);
    assert_eq!(status(&ok), 200, "{ok}");
    let seen = bob_through_b(&bed, &caller, &mut bob);
    eprintln!("propagation register A -> routable at B: {seen:?}");
    assert!(seen < Duration::from_secs(1), "{seen:?}");

    // The call through B: B's relay anchors the media both ways.
    let a_media = UdpSocket::bind(lo(p.0 + 7)).unwrap();
    let b_media = UdpSocket::bind(lo(p.0 + 8)).unwrap();
    b_media
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut uac, invite) = invite_through_b(&bed, &caller, "shloc-udp-call", &mut bob);
    assert!(
        invite.starts_with(&format!("INVITE sip:bob@127.0.0.1:{} ", p.phone())),
        "{invite}"
    );
    assert!(
        p.b_media().contains(&sdp_port(&invite)),
        "offer not anchored on B's relay:\n{invite}"
    );
    let uas = Uas::new(
        lo(p.phone()),
        "b1",
        &format!("sip:bob@127.0.0.1:{}", p.phone()),
    );
    let relay = answer_and_ack(&bed, &caller, &mut uac, &mut bob, &uas, &invite);
    for seq in 0..5 {
        a_media.send_to(&pcmu(seq, 0x5eed), lo(relay)).unwrap();
    }
    let got = recv_n(&b_media, 5, Duration::from_secs(2));
    assert_eq!(got.len(), 5, "media did not flow through B's relay");
    assert!(got
        .iter()
        .all(|(_, from)| p.b_media().contains(&from.port())));
    hang_up(&bed, &caller, &mut uac, &mut bob, &uas);

    // Unregistered at A: B stops routing to it.
    let ok = bob.register(p.sip_a(), "bob", 2, 0);
    assert_eq!(status(&ok), 200, "{ok}");
    let gone = probe_until(
        &caller,
        BOB,
        p.sip_b(),
        &mut bob,
        Duration::from_secs(3),
        |s| matches!(s, 404 | 480),
    )
    .unwrap_or_else(|| panic!("B still routes to the unregistered phone\n{}", bed.logs()));
    eprintln!("propagation unregister A -> 404/480 at B: {gone:?}");
    assert!(gone < Duration::from_secs(1), "{gone:?}");
}

/// bob registers at front A over a TCP connection of his own (Call-ID `call_id`); A answers
/// 200 on it. The connection is his flow: requests for him come back on it. Returns it
/// and the Contact he registered.
fn register_bob_over_tcp(p: Ports, call_id: &str) -> (TcpPhone, String) {
    let mut bob = TcpPhone::connect(p.sip_a());
    let me = bob.local();
    let contact = format!("sip:bob@127.0.0.1:{};transport=tcp", me.port());
    let reg = String::from_utf8(register_bytes(
        "bob",
        &[&contact],
        &me.to_string(),
        call_id,
        1,
    ))
    .unwrap()
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    bob.send(reg.as_bytes());
    let ok = bob
        .next(Duration::from_secs(3))
        .expect("no 200 to REGISTER");
    assert_eq!(status(&ok), 200, "{ok}");
    (bob, contact)
}

#[test]
fn a_tcp_phone_registered_at_a_is_reached_through_a_on_its_connection() {
    let bed = Bed::start(6100, "rtpanchor-shloc-tcp");
    let p = Ports(bed.base);
    let (mut bob, contact) = register_bob_over_tcp(p, "reg-bob-tcp");
    let me = bob.local();
    let caller = Caller::bind(p.caller());
    let seen = bob_through_b(&bed, &caller, &mut bob);
    eprintln!("propagation register A (TCP) -> routable at B: {seen:?}");

    let (mut uac, invite) = invite_through_b(&bed, &caller, "shloc-tcp-call", &mut bob);
    assert!(
        invite.starts_with(&format!("INVITE {contact} ")),
        "{invite}"
    );
    // A's Via on top (it sent it on the connection), B's below it.
    let vias: Vec<&str> = invite.lines().filter(|l| l.starts_with("Via:")).collect();
    assert!(
        vias[0].contains(&format!("SIP/2.0/TCP {}", p.sip_a())),
        "{invite}"
    );
    assert!(vias[1].contains(&p.sip_b().to_string()), "{invite}");
    assert!(
        !invite.contains("\r\nRoute:"),
        "A removed its Route:\n{invite}"
    );
    let uas = Uas::new(me, "b1", &contact);
    answer_and_ack(&bed, &caller, &mut uac, &mut bob, &uas, &invite);
    hang_up(&bed, &caller, &mut uac, &mut bob, &uas);
}

#[test]
fn with_redis_stopped_each_front_serves_its_own_phones() {
    let mut bed = Bed::start(6200, "rtpanchor-shloc-down");
    let p = Ports(bed.base);
    let mut bob = UdpPhone::bind(p.phone());
    let mut carol = UdpPhone::bind(p.0 + 9);
    let caller = Caller::bind(p.caller());
    let ok = bob.register(p.sip_a(), "bob", 1, 600);
    assert_eq!(status(&ok), 200, "{ok}");
    bob_through_b(&bed, &caller, &mut bob);

    bed.redis.stop(Duration::from_secs(2));
    // Carol registers at B while Redis is away.
    let ok = carol.register(p.sip_b(), "carol", 1, 600);
    assert_eq!(status(&ok), 200, "{ok}");
    let carol_uri = "sip:carol@example.com";
    for (i, (front, target, on_carol)) in [
        (p.sip_a(), BOB, false),
        (p.sip_b(), carol_uri, true),
        // What B learnt before the outage stays.
        (p.sip_b(), BOB, false),
    ]
    .into_iter()
    .enumerate()
    {
        let phone: &mut dyn Phone = if on_carol { &mut carol } else { &mut bob };
        let mut uac = caller.uac(&format!("down-{i}"), target);
        assert_eq!(
            probe(&caller, &mut uac, front, phone),
            200,
            "{target} through {front} with Redis down\n{}",
            bed.logs()
        );
    }
    // A does not know carol yet.
    let mut uac = caller.uac("down-a-carol", carol_uri);
    assert_eq!(probe(&caller, &mut uac, p.sip_a(), &mut carol), 404);

    // Redis is back (empty: it saved nothing): B writes carol again, A reloads and sees her.
    bed.redis = start_redis(p.redis(), bed.dir.path());
    let back = until_reached(
        &bed,
        &caller,
        carol_uri,
        p.sip_a(),
        &mut carol,
        Duration::from_secs(10),
    );
    eprintln!("Redis back -> carol routable at A: {back:?}");
    // And bob, registered at A before the outage, is written again by A (the store lost
    // him) and reachable through B.
    let again = until_reached(
        &bed,
        &caller,
        BOB,
        p.sip_b(),
        &mut bob,
        Duration::from_secs(5),
    );
    eprintln!("Redis back -> bob routable at B again: {again:?}");
}

/// NAT evidence is shared with the binding: bob registers at A over UDP from behind a NAT
/// (his Via and Contact name 127.0.0.1:+10, his own view; the REGISTER comes from +5, the
/// NAT's mapping), and is reached through B at +5, where A would reach him, never at his
/// Contact (a socket there stays silent). Ports 61100-61199 (the layout of the others).
#[test]
fn a_natted_phone_registered_at_a_is_reached_by_b_at_its_source() {
    let bed = Bed::start(61100, "rtpanchor-shloc-nat");
    let p = Ports(bed.base);
    let private = p.0 + 10;
    let decoy = UdpSocket::bind(lo(private)).unwrap();
    decoy
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut bob = UdpPhone::bind(p.phone());
    let contact = format!("sip:bob@127.0.0.1:{private}");
    let reg = register_bytes(
        "bob",
        &[&contact],
        &format!("127.0.0.1:{private}"),
        "reg-bob-nat",
        1,
    );
    bob.sock.send_to(&reg, p.sip_a()).unwrap();
    let ok = bob
        .next(Duration::from_secs(3))
        .expect("no answer to REGISTER");
    assert_eq!(status(&ok), 200, "{ok}");
    let caller = Caller::bind(p.caller());
    // A reaches him at his source; so does B, once it has the binding.
    let mut uac = caller.uac("nat-at-a", BOB);
    assert_eq!(probe(&caller, &mut uac, p.sip_a(), &mut bob), 200);
    let seen = bob_through_b(&bed, &caller, &mut bob);
    eprintln!("propagation register A (NATed) -> reached at its source through B: {seen:?}");
    // An INVITE through B too, at the source, with the Contact as its Request-URI.
    let (mut uac, invite) = invite_through_b(&bed, &caller, "shloc-nat-call", &mut bob);
    assert!(
        invite.starts_with(&format!("INVITE {contact} ")),
        "{invite}"
    );
    // (Its 200 names where the NAT maps it: in-dialog requests follow the dialog's Contact.)
    let uas = Uas::new(
        lo(p.phone()),
        "b1",
        &format!("sip:bob@127.0.0.1:{}", p.phone()),
    );
    answer_and_ack(&bed, &caller, &mut uac, &mut bob, &uas, &invite);
    hang_up(&bed, &caller, &mut uac, &mut bob, &uas);
    let mut buf = [0u8; 2048];
    assert!(
        decoy.recv_from(&mut buf).is_err(),
        "a request went to the private Contact"
    );
}

/// A MESSAGE of 2,000 bytes through B to a phone registered over TCP at A: B forwards it to
/// A over TCP (RFC 3261 §18.1.1: over 1,300 bytes), A on the phone's connection; the phone's
/// 200 reaches the caller. Ports 61300-61399 (the layout of the others).
#[test]
fn a_large_message_reaches_a_tcp_phone_behind_the_other_front() {
    let bed = Bed::start(61300, "rtpanchor-shloc-bigmsg");
    let p = Ports(bed.base);
    let (mut bob, contact) = register_bob_over_tcp(p, "reg-bob-bigmsg");
    let me = bob.local();
    let caller = Caller::bind(p.caller());
    bob_through_b(&bed, &caller, &mut bob);

    // (The kit's requests carry no text body: a long header makes it large.)
    let text = "y".repeat(2000);
    let mut uac = caller.uac("shloc-bigmsg", BOB);
    let bytes = uac.request("MESSAGE", &format!("Subject: {text}\r\n"));
    assert!(bytes.len() > 2000);
    caller.sock.send_to(&bytes, p.sip_b()).unwrap();
    let got = expect_request(&mut bob, "MESSAGE", Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no MESSAGE at the phone\n{}", bed.logs()));
    assert!(got.contains(&format!("Subject: {text}\r\n")), "cut:\n{got}");
    // B's Via says it went to A over TCP.
    let vias: Vec<&str> = got.lines().filter(|l| l.starts_with("Via:")).collect();
    assert!(
        vias.get(1)
            .is_some_and(|v| v.contains(&format!("SIP/2.0/TCP {}", p.sip_b()))),
        "{got}"
    );
    let uas = Uas::new(me, "b1", &contact);
    bob.send(&uas.respond(got.as_bytes(), 200));
    let ok = caller
        .response(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer to the MESSAGE\n{}", bed.logs()));
    assert_eq!(status(&ok), 200, "{ok}");
}
