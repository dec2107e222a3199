//! TLS and TCP toward next hops and phones, the real binary on 127.0.0.1 (issue 16):
//!
//! - [`a_sips_call_to_another_domain_goes_over_tls_through_the_outbound_relay`]: relay A
//!   (`example.com`, `--sip-outbound sips:B`) and relay B (`other.test`) with a test CA;
//!   alice (UDP at A) calls `sips:carol@other.test`; A reaches B over TLS, B reaches carol
//!   (a rustls server) over TLS. Once B is gone, the next sips call is answered at once.
//! - [`a_udp_outbound_refuses_a_sips_request_at_once_and_carries_plain_ones`]: the old
//!   `--sip-outbound HOST:PORT` (UDP): a `sips:` request is refused at once with 503 and
//!   nothing reaches the next hop; a `sip:` one still goes there over UDP.
//! - Phones that registered over their own connection and closed it: without outbound, the
//!   relay opens a new TLS connection to the Contact (a rustls server) and the call goes
//!   through; with outbound (`reg-id` + `+sip.instance`) alice gets 430 at once and the
//!   binding is dropped; over TCP with nothing listening at the Contact, alice gets an
//!   error at once and `rtpanchor_sip_transport_errors_total` counts it.
//!
//! Port block 61800-62599: each test 61800 + 100·k (SIP +0, TLS +1, ng +2, HTTP +3; the
//! second relay +5..+8; alice +10, UDP phones +11, listening callees +20, next hop +21;
//! relay media +40..+69 and +70..+99). Every process is stopped by pid, every wait bounded.

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::ng::answering_client;
use common::peers::{sip_relay_command, Peer};
use common::scrape::{metrics, series};
use common::sip::{final_answer, methods, register_bytes, sdp, status_of, until_final, Uac, Uas};
use common::tls::{
    call_and_hang_up, connect, read_message, relay_ca, relay_tls_args, server_config, sip_callee,
};
use common::TempDir;

const LO: &str = "127.0.0.1";

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A relay with SIP on `base` (TLS +1, ng +2, HTTP +3) for `domain`, media `media`, with
/// the test CA's files in `dir` and `extra` flags; returns once ng answers.
fn start_relay(dir: &Path, base: u16, domain: &str, media: (u16, u16), extra: &[&str]) -> Peer {
    let mut cmd = sip_relay_command(base + 2, base);
    cmd.args(["--domain", domain]);
    relay_tls_args(&mut cmd, dir, base + 1)
        .args(["--listen-http", &format!("{LO}:{}", base + 3)])
        .args(["--port-min", &media.0.to_string()])
        .args(["--port-max", &media.1.to_string()])
        .args(["--no-kernel-forwarding", "--log-level", "debug"])
        .args(extra);
    let log = dir.join(format!("relay-{base}.log"));
    let relay = Peer::spawn("rtpanchor", &mut cmd, &log).expect("relay");
    answering_client(base + 2, "tls-flows-ready")
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("relay not ready: {e}\n{}", relay.log_tail(20)));
    relay
}

fn counter(http: u16, name: &str) -> f64 {
    let text = metrics(http);
    series(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Registers `user` of `domain` over UDP from `sock` with `contact`; asserts the 200.
fn register_udp(sock: &UdpSocket, relay_sip: u16, user: &str, domain: &str, contact: &str) {
    let via = format!("{LO}:{}", sock.local_addr().unwrap().port());
    let reg = String::from_utf8(register_bytes(user, &[contact], &via, "reg-udp", 1))
        .unwrap()
        .replace("example.com", domain);
    sock.send_to(reg.as_bytes(), at(relay_sip)).unwrap();
    let got = until_final(sock);
    assert_eq!(got.last().and_then(|m| status_of(m)), Some(200));
}

#[test]
fn a_sips_call_to_another_domain_goes_over_tls_through_the_outbound_relay() {
    let base = 61800;
    let (a_sips, b_sip, b_sips, b_http) = (base + 1, base + 5, base + 6, base + 8);
    let tmp = TempDir::new("sip-tls-outbound").unwrap();
    let dir = tmp.path();
    let ca = relay_ca(dir);
    let (cert, key) = ca.issue(dir, "carol");
    let outbound = format!("sips:{LO}:{b_sips}");
    let mut a = start_relay(
        dir,
        base,
        "example.com",
        (base + 40, base + 69),
        &["--sip-outbound", &outbound],
    );
    let mut b = start_relay(dir, b_sip, "other.test", (base + 70, base + 99), &[]);

    // Carol is at B, reached over TLS at her Contact (she registers over UDP).
    let carol_port = base + 20;
    let contact = format!("sip:carol@{LO}:{carol_port};transport=tls");
    let listener = TcpListener::bind(at(carol_port)).unwrap();
    let uas = Uas::new(at(carol_port), "c1", &contact);
    let carol = sip_callee(
        listener,
        Some(server_config(&cert, &key)),
        uas,
        sdp(LO, base + 30),
    );
    let reg = UdpSocket::bind(at(base + 11)).unwrap();
    register_udp(&reg, b_sip, "carol", "other.test", &contact);

    let alice = UdpSocket::bind(at(base + 10)).unwrap();
    let mut uac = Uac::new(at(base + 10), &format!("{LO}:{}", base + 10), "tls-ob-1")
        .calling("sips:carol@other.test");
    let got = call_and_hang_up(&alice, &mut uac, at(base), &sdp(LO, base + 12), &a, carol);
    assert_eq!(methods(&got), ["INVITE", "ACK", "BYE"]);
    let invite = String::from_utf8_lossy(&got[0]).into_owned();
    let vias: Vec<&str> = invite.lines().filter(|l| l.starts_with("Via:")).collect();
    // B's Via (TLS toward carol), then A's: A sent it to B over TLS.
    assert!(
        vias.len() >= 3 && vias[1].starts_with(&format!("Via: SIP/2.0/TLS {LO}:{a_sips};")),
        "{invite}"
    );
    let made = "rtpanchor_sip_connections_made_total";
    assert_eq!(
        counter(base + 3, &format!("{made}{{how=\"tls_opened\"}}")),
        1.0
    );
    assert_eq!(
        counter(base + 3, &format!("{made}{{how=\"tcp_opened\"}}")),
        0.0
    );
    assert_eq!(
        counter(b_http, &format!("{made}{{how=\"tls_accepted\"}}")),
        1.0
    );
    assert!(
        counter(
            base + 3,
            "rtpanchor_sip_messages_sent_total{transport=\"tls\"}"
        ) >= 3.0,
        "INVITE, ACK and BYE went to B over TLS"
    );

    // B is gone: the next sips call cannot go over TLS and is answered at once.
    b.stop(Duration::from_secs(5));
    let mut uac = Uac::new(at(base + 10), &format!("{LO}:{}", base + 10), "tls-ob-2")
        .calling("sips:carol@other.test");
    let sent = Instant::now();
    alice
        .send_to(&uac.invite(Some(&sdp(LO, base + 14))), at(base))
        .unwrap();
    let (status, last) = final_answer(&alice, &a);
    assert!(
        (500..600).contains(&status),
        "{}",
        String::from_utf8_lossy(&last)
    );
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    alice.send_to(&uac.ack_failure(&last), at(base)).unwrap();
    assert_eq!(
        counter(base + 3, "rtpanchor_sip_transport_errors_total"),
        1.0
    );
    a.stop(Duration::from_secs(5));
}

#[test]
fn a_udp_outbound_refuses_a_sips_request_at_once_and_carries_plain_ones() {
    let base = 61900;
    let tmp = TempDir::new("sip-udp-outbound").unwrap();
    let dir = tmp.path();
    relay_ca(dir);
    let next = UdpSocket::bind(at(base + 21)).unwrap();
    next.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let outbound = format!("{LO}:{}", base + 21);
    let mut relay = start_relay(
        dir,
        base,
        "example.com",
        (base + 40, base + 69),
        &["--sip-outbound", &outbound],
    );
    let alice = UdpSocket::bind(at(base + 10)).unwrap();
    let via = format!("{LO}:{}", base + 10);
    for (i, target) in [
        "sips:carol@other.test",
        "sip:carol@other.test;transport=tls",
    ]
    .into_iter()
    .enumerate()
    {
        let mut uac = Uac::new(at(base + 10), &via, &format!("udp-ob-{i}")).calling(target);
        let sent = Instant::now();
        alice.send_to(&uac.invite(None), at(base)).unwrap();
        let (status, last) = final_answer(&alice, &relay);
        assert_eq!(status, 503, "{target}: {}", String::from_utf8_lossy(&last));
        assert!(sent.elapsed() < Duration::from_secs(2));
        alice.send_to(&uac.ack_failure(&last), at(base)).unwrap();
    }
    let mut buf = [0u8; 65_535];
    assert!(
        next.recv(&mut buf).is_err(),
        "a sips request went to the UDP next hop"
    );
    // The old form still carries plain requests, over UDP.
    let mut uac = Uac::new(at(base + 10), &via, "udp-ob-plain").calling("sip:carol@other.test");
    alice.send_to(&uac.invite(None), at(base)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        match next.recv(&mut buf) {
            Ok(n) => break Some(buf[..n].to_vec()),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => break None,
        }
    };
    let got = got.unwrap_or_else(|| panic!("nothing at the next hop:\n{}", relay.log_tail(30)));
    assert!(got.starts_with(b"INVITE sip:carol@other.test SIP/2.0\r\n"));
    relay.stop(Duration::from_secs(5));
}

/// A phone's own connection to the relay: TLS (verified with `dir/ca.pem`) or TCP.
enum PhoneConn {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Tcp(TcpStream),
}

impl PhoneConn {
    fn open(dir: &Path, relay_base: u16, tls: bool) -> PhoneConn {
        if tls {
            PhoneConn::Tls(Box::new(
                connect(&dir.join("ca.pem"), relay_base + 1).expect("TLS connect"),
            ))
        } else {
            let s = TcpStream::connect(at(relay_base)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            PhoneConn::Tcp(s)
        }
    }

    fn local(&self) -> SocketAddr {
        match self {
            PhoneConn::Tls(t) => t.sock.local_addr().unwrap(),
            PhoneConn::Tcp(s) => s.local_addr().unwrap(),
        }
    }

    /// Registers bob with `contact` (plus `params` after it) and returns the status.
    fn register(&mut self, contact: &str, params: &str) -> Option<u16> {
        let (name, via) = match self {
            PhoneConn::Tls(_) => ("TLS", self.local()),
            PhoneConn::Tcp(_) => ("TCP", self.local()),
        };
        let reg = String::from_utf8(register_bytes(
            "bob",
            &[contact],
            &via.to_string(),
            "reg-flow",
            1,
        ))
        .unwrap()
        .replace("SIP/2.0/UDP", &format!("SIP/2.0/{name}"))
        .replace(&format!("<{contact}>"), &format!("<{contact}>{params}"));
        let mut buf = Vec::new();
        let answer = match self {
            PhoneConn::Tls(t) => {
                t.write_all(reg.as_bytes()).unwrap();
                t.flush().unwrap();
                read_message(t, &mut buf)
            }
            PhoneConn::Tcp(s) => {
                s.write_all(reg.as_bytes()).unwrap();
                read_message(s, &mut buf)
            }
        };
        answer.ok().and_then(|m| status_of(&m))
    }

    /// Closes the connection (TLS: close_notify first).
    fn close(self) {
        match self {
            PhoneConn::Tls(mut t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
                let _ = t.sock.shutdown(std::net::Shutdown::Both);
            }
            PhoneConn::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Bob registers over his own connection (TLS or TCP) with `contact` + `params`, then
/// closes it; returns once the relay has no connection open.
fn register_and_close(dir: &Path, base: u16, tls: bool, contact: &str, params: &str) {
    let mut phone = PhoneConn::open(dir, base, tls);
    assert_eq!(phone.register(contact, params), Some(200));
    phone.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = |t: &str| {
        series(
            &metrics(base + 3),
            &format!("rtpanchor_sip_connections{{transport=\"{t}\"}}"),
        )
    };
    while open("tls") != Some(0.0) || open("tcp") != Some(0.0) {
        assert!(Instant::now() < deadline, "the relay kept bob's connection");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A relay for `example.com` on `base` with the test CA's files in a new scratch dir.
fn relay_alone(name: &str, base: u16) -> (TempDir, Peer) {
    let tmp = TempDir::new(name).unwrap();
    relay_ca(tmp.path());
    let relay = start_relay(tmp.path(), base, "example.com", (base + 40, base + 69), &[]);
    (tmp, relay)
}

/// Alice (UDP, `base` + 10) calls bob through the relay on `base`: the final response,
/// which must come within 2 s (not after Timer B); a failure is ACKed.
fn alice_calls_bob(alice: &UdpSocket, base: u16, call_id: &str, relay: &Peer) -> (u16, Vec<u8>) {
    let mut uac = Uac::new(at(base + 10), &format!("{LO}:{}", base + 10), call_id);
    let sent = Instant::now();
    alice
        .send_to(&uac.invite(Some(&sdp(LO, base + 12))), at(base))
        .unwrap();
    let (status, last) = final_answer(alice, relay);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "{call_id}: answered after {took:?}"
    );
    if status >= 300 {
        alice.send_to(&uac.ack_failure(&last), at(base)).unwrap();
    }
    (status, last)
}

#[test]
fn a_phone_whose_tls_connection_closed_is_reached_over_a_new_connection_to_its_contact() {
    let base = 62000;
    let tmp = TempDir::new("sip-tls-flow-contact").unwrap();
    let dir = tmp.path();
    let ca = relay_ca(dir);
    let (cert, key) = ca.issue(dir, "bob");
    let mut relay = start_relay(dir, base, "example.com", (base + 40, base + 69), &[]);
    let bob_port = base + 20;
    let contact = format!("sip:bob@{LO}:{bob_port};transport=tls");
    register_and_close(dir, base, true, &contact, "");

    // Bob listens at his Contact.
    let listener = TcpListener::bind(at(bob_port)).unwrap();
    let uas = Uas::new(at(bob_port), "b1", &contact);
    let bob = sip_callee(
        listener,
        Some(server_config(&cert, &key)),
        uas,
        sdp(LO, base + 30),
    );
    let alice = UdpSocket::bind(at(base + 10)).unwrap();
    let mut uac = Uac::new(
        at(base + 10),
        &format!("{LO}:{}", base + 10),
        "flow-contact",
    );
    let got = call_and_hang_up(&alice, &mut uac, at(base), &sdp(LO, base + 12), &relay, bob);
    assert_eq!(
        methods(&got),
        ["INVITE", "ACK", "BYE"],
        "one new connection"
    );
    let made = "rtpanchor_sip_connections_made_total";
    assert_eq!(
        counter(base + 3, &format!("{made}{{how=\"tls_opened\"}}")),
        1.0
    );
    assert_eq!(
        counter(base + 3, &format!("{made}{{how=\"tls_accepted\"}}")),
        1.0
    );
    assert_eq!(counter(base + 3, "rtpanchor_sip_flows_failed_total"), 0.0);
    relay.stop(Duration::from_secs(5));
}

#[test]
fn an_outbound_phone_whose_tls_connection_closed_gets_430_at_once_and_is_dropped() {
    let base = 62100;
    let (tmp, mut relay) = relay_alone("sip-tls-flow-430", base);
    let dir = tmp.path();
    let bob_port = base + 20;
    let contact = format!("sip:bob@{LO}:{bob_port};transport=tls");
    register_and_close(
        dir,
        base,
        true,
        &contact,
        ";reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>\"",
    );
    // Something listens at the Contact: it must not be tried (only the flow reaches bob).
    let listener = TcpListener::bind(at(bob_port)).unwrap();
    listener.set_nonblocking(true).unwrap();

    let alice = UdpSocket::bind(at(base + 10)).unwrap();
    let (status, last) = alice_calls_bob(&alice, base, "flow-430", &relay);
    assert_eq!(status, 430, "{}", String::from_utf8_lossy(&last));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the relay connected to the Contact: {other:?}"),
    }
    assert_eq!(counter(base + 3, "rtpanchor_sip_flows_failed_total"), 1.0);
    // The binding was dropped: bob is unavailable until he registers a new flow.
    let (status, last) = alice_calls_bob(&alice, base, "flow-430-again", &relay);
    assert_eq!(status, 480, "{}", String::from_utf8_lossy(&last));
    assert_eq!(counter(base + 3, "rtpanchor_sip_flows_failed_total"), 1.0);
    relay.stop(Duration::from_secs(5));
}

#[test]
fn a_tcp_phone_whose_connection_closed_and_that_listens_nowhere_is_answered_at_once() {
    let base = 62200;
    let (tmp, mut relay) = relay_alone("sip-tcp-flow-gone", base);
    let dir = tmp.path();
    // Nothing listens at the Contact's port.
    let contact = format!("sip:bob@{LO}:{};transport=tcp", base + 20);
    register_and_close(dir, base, false, &contact, "");

    let alice = UdpSocket::bind(at(base + 10)).unwrap();
    let (status, last) = alice_calls_bob(&alice, base, "flow-gone", &relay);
    assert!(
        (500..600).contains(&status),
        "{}",
        String::from_utf8_lossy(&last)
    );
    assert_eq!(
        counter(base + 3, "rtpanchor_sip_transport_errors_total"),
        1.0
    );
    assert_eq!(counter(base + 3, "rtpanchor_sip_flows_failed_total"), 0.0);
    let log = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
    assert!(
        log.contains(&format!("to={LO}:{}", base + 20)),
        "the INVITE was not sent to the Contact:\n{}",
        relay.log_tail(30)
    );
    relay.stop(Duration::from_secs(5));
}
