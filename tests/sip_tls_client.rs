//! The proxy's TLS client side (`--sips-ca`): the real binary on 127.0.0.1 opening TLS
//! connections itself, to callees that have no connection to it, verified against a test
//! CA (rcgen); the callees are rustls servers in this test.
//!
//! [`a_call_reaches_a_tls_callee_over_a_connection_the_proxy_opens`]: bob registers over
//! UDP with a `transport=tls` Contact; alice (UDP) calls him. The proxy connects to bob's
//! Contact over TLS, verifies his certificate, and the INVITE (Via `SIP/2.0/TLS`, SDP
//! naming the relay's media port), the ACK and the BYE all go over that one connection.
//!
//! [`a_tls_peer_of_an_unknown_ca_is_refused_and_the_caller_told_at_once`]: alice's INVITE
//! carries a Route to a `sips:` next hop whose certificate comes from a CA the proxy does
//! not trust. The proxy aborts the handshake (the peer sees the `unknown CA` alert and no
//! SIP), counts and logs it, and answers alice at once as for a 503 from that hop (RFC 3261
//! §16.9), instead of leaving her to time out after 32 s.
//!
//! Port block 19500-19599 (the first test 19500-19529, the second 19550-19579), relay
//! media 19600-19699. Every process is stopped by pid, every wait bounded.

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::ng::answering_client;
use common::peers::{sip_relay_command, Peer};
use common::scrape::{metrics, series};
use common::sip::{final_answer, methods, register_bytes, sdp, status_of, until_final, Uac, Uas};
use common::tls::{call_and_hang_up, relay_ca, relay_tls_args, server_config, sip_callee, TestCa};
use common::TempDir;

const LO: &str = "127.0.0.1";

/// One relay's ports and its callee's.
struct Ports {
    sip: u16,
    sips: u16,
    ng: u16,
    http: u16,
    alice: u16,
    bob_udp: u16,
    callee_tls: u16,
    media: (u16, u16),
}

impl Ports {
    /// SIP on `base`, TLS +1, ng +2, HTTP +3, alice +10, bob's UDP +11, the callee's TLS
    /// +20; relay media `media`.
    fn from(base: u16, media: (u16, u16)) -> Ports {
        Ports {
            sip: base,
            sips: base + 1,
            ng: base + 2,
            http: base + 3,
            alice: base + 10,
            bob_udp: base + 11,
            callee_tls: base + 20,
            media,
        }
    }
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The relay with SIP over UDP and TLS for the domain `example.com`, trusting `dir/ca.pem`
/// for the connections it opens (its own certificate: `dir/relay.pem`).
fn start_relay(dir: &Path, p: &Ports) -> Peer {
    let mut cmd = sip_relay_command(p.ng, p.sip);
    cmd.args(["--domain", "example.com"]);
    relay_tls_args(&mut cmd, dir, p.sips)
        .args(["--listen-http", &format!("{LO}:{}", p.http)])
        .args(["--port-min", &p.media.0.to_string()])
        .args(["--port-max", &p.media.1.to_string()])
        .args(["--no-kernel-forwarding", "--log-level", "info"]);
    let relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    // ng answers once SIP is bound (the relay starts it first); a ping is a surer sign
    // than /proc/net/udp on a machine whose UDP table is huge.
    answering_client(p.ng, "tls-client-ready")
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("relay not ready: {e}\n{}", relay.log_tail(20)));
    relay
}

/// A TLS callee on `listener` with `cert` (see [`sip_callee`]).
fn tls_callee(
    listener: TcpListener,
    cert: (&Path, &Path),
    uas: Uas,
    answer: Vec<u8>,
) -> JoinHandle<Result<Vec<Vec<u8>>, String>> {
    sip_callee(listener, Some(server_config(cert.0, cert.1)), uas, answer)
}

fn connections_made(text: &str, how: &str) -> f64 {
    series(
        text,
        &format!("rtpanchor_sip_connections_made_total{{how=\"{how}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// The port of the first `m=audio` line of a message's SDP.
fn audio_port(msg: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(msg);
    let line = text.lines().find(|l| l.starts_with("m=audio "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_call_reaches_a_tls_callee_over_a_connection_the_proxy_opens() {
    let p = Ports::from(19500, (19600, 19649));
    let tmp = TempDir::new("sip-tls-client").unwrap();
    let dir = tmp.path();
    let ca = relay_ca(dir);
    let (cert, key) = ca.issue(dir, "bob");
    let mut relay = start_relay(dir, &p);

    let contact = format!("sip:bob@{LO}:{};transport=tls", p.callee_tls);
    let listener = TcpListener::bind(at(p.callee_tls)).unwrap();
    let uas = Uas::new(at(p.callee_tls), "b1", &contact);
    let bob = tls_callee(listener, (&cert, &key), uas, sdp(LO, 19530));

    // Bob registers over UDP: the proxy holds no connection to him.
    let reg_sock = UdpSocket::bind(at(p.bob_udp)).unwrap();
    let via = format!("{LO}:{}", p.bob_udp);
    reg_sock
        .send_to(
            &register_bytes("bob", &[&contact], &via, "reg-bob", 1),
            at(p.sip),
        )
        .unwrap();
    let reg = until_final(&reg_sock);
    assert_eq!(
        reg.last().and_then(|m| status_of(m)),
        Some(200),
        "REGISTER not accepted:\n{}",
        relay.log_tail(20)
    );

    // Alice calls bob.
    let alice = UdpSocket::bind(at(p.alice)).unwrap();
    let mut uac = Uac::new(at(p.alice), &format!("{LO}:{}", p.alice), "tls-client-1");
    let got = call_and_hang_up(&alice, &mut uac, at(p.sip), &sdp(LO, 19512), &relay, bob);
    assert_eq!(
        methods(&got),
        ["INVITE", "ACK", "BYE"],
        "one connection for the dialog"
    );
    let invite = String::from_utf8_lossy(&got[0]).into_owned();
    let top_via = invite.lines().find(|l| l.starts_with("Via:")).unwrap_or("");
    assert!(
        top_via.starts_with(&format!("Via: SIP/2.0/TLS {LO}:{};", p.sips)),
        "{invite}"
    );
    let port = audio_port(&got[0]).unwrap_or(0);
    assert!(
        (p.media.0..=p.media.1).contains(&port),
        "the INVITE's SDP does not name the relay's media ports:\n{invite}"
    );
    let text = metrics(p.http);
    assert_eq!(connections_made(&text, "tls_opened"), 1.0, "{text}");
    assert_eq!(connections_made(&text, "tls_accepted"), 0.0, "{text}");
    assert_eq!(
        series(&text, "rtpanchor_sip_tls_handshake_failures_total"),
        Some(0.0),
        "{text}"
    );
    relay.stop(Duration::from_secs(5));
}

#[test]
fn a_tls_peer_of_an_unknown_ca_is_refused_and_the_caller_told_at_once() {
    let p = Ports::from(19550, (19650, 19699));
    let tmp = TempDir::new("sip-tls-client-rogue").unwrap();
    let dir = tmp.path();
    relay_ca(dir);
    // The next hop's certificate is good, but from a CA the relay was not given.
    let other = TestCa::new("some other CA");
    let (cert, key) = other.issue(dir, "rogue");
    let mut relay = start_relay(dir, &p);
    let listener = TcpListener::bind(at(p.callee_tls)).unwrap();
    let uas = Uas::new(
        at(p.callee_tls),
        "r1",
        &format!("sips:carol@{LO}:{}", p.callee_tls),
    );
    let rogue = tls_callee(listener, (&cert, &key), uas, sdp(LO, 19580));

    // A pre-loaded route: through the relay, then to a sips: next hop.
    let alice = UdpSocket::bind(at(p.alice)).unwrap();
    let mut uac = Uac::new(at(p.alice), &format!("{LO}:{}", p.alice), "tls-client-2")
        .calling("sip:carol@example.net");
    let route = format!(
        "Route: <sip:{LO}:{};lr>, <sips:{LO}:{};lr>\r\n",
        p.sip, p.callee_tls
    );
    let invite = String::from_utf8(uac.invite(Some(&sdp(LO, 19562))))
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{route}"),
            1,
        );
    let sent = Instant::now();
    alice.send_to(invite.as_bytes(), at(p.sip)).unwrap();
    let (status, last) = final_answer(&alice, &relay);
    let took = sent.elapsed();
    assert!(
        (500..600).contains(&status),
        "{}",
        String::from_utf8_lossy(&last)
    );
    assert!(
        took < Duration::from_secs(5),
        "the caller heard only after {took:?}"
    );
    let ack = uac.ack_failure(&last);
    alice.send_to(&ack, at(p.sip)).unwrap();

    let seen = rogue.join().expect("callee thread");
    let err = seen.expect_err("the rogue next hop got SIP over an unverified connection");
    assert!(err.contains("UnknownCA"), "the next hop saw: {err}");
    let text = metrics(p.http);
    assert_eq!(
        series(&text, "rtpanchor_sip_tls_handshake_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(connections_made(&text, "tls_opened"), 0.0, "{text}");
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    assert!(
        log.contains("SIP TLS handshake (outgoing) failed") && log.contains("UnknownIssuer"),
        "not logged:\n{}",
        relay.log_tail(30)
    );
    relay.stop(Duration::from_secs(5));
}
