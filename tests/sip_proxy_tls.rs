//! TLS in the sans-IO proxy (RFC 3261 §26, RFC 5630, RFC 5658): a phone registered over
//! TLS (or TCP) is reached on the connection it registered from (its flow), our Via and
//! Record-Route name our TLS port with `transport=tls` for the TLS side, a call between a
//! UDP and a TLS phone is double record-routed, and in-dialog requests from either side
//! have both our Route entries removed.

#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::{Transmit, Transport};
use rtpanchor::sip::HeaderName;

fn tls_addr() -> std::net::SocketAddr {
    addr("127.0.0.1:5081")
}

/// Bob's connection: an ephemeral source port, not his Contact's port.
fn bob_flow() -> std::net::SocketAddr {
    addr("127.0.0.1:40001")
}

fn tls_proxy() -> Proxy {
    let mut c = config();
    c.local_tls = Some(tls_addr());
    proxy_with(c)
}

fn over(
    p: &mut Proxy,
    data: &[u8],
    src: std::net::SocketAddr,
    tr: Transport,
    now: u64,
) -> Vec<Transmit> {
    check(p.handle_incoming(data, src, tr, now, &mut NoMedia))
}

/// Bob registers over `tr` from [`bob_flow`], Contact at :5062 with `;transport=`.
fn register_bob_over(p: &mut Proxy, tr: Transport) {
    let name = tr.via_name();
    let reg = String::from_utf8(register_bytes(
        "bob",
        &[&format!(
            "sip:bob@127.0.0.1:5062;transport={}",
            name.to_lowercase()
        )],
        "127.0.0.1:5062",
        "reg-bob",
        1,
    ))
    .unwrap()
    .replace("SIP/2.0/UDP", &format!("SIP/2.0/{name}"));
    let out = over(p, reg.as_bytes(), bob_flow(), tr, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!((out[0].to, out[0].transport), (bob_flow(), tr));
}

fn headers(t: &Transmit, h: HeaderName) -> Vec<String> {
    msg(t)
        .headers
        .iter()
        .filter(|x| x.kind == h)
        .map(|x| x.value.to_string())
        .collect()
}

/// A TLS proxy, Bob registered over TLS, and Alice's INVITE (Call-ID `call_id`, at 1 ms)
/// sent: the proxy, Alice, and the INVITE it forwarded.
fn alice_calls_tls_bob(call_id: &str) -> (Proxy, Uac, Transmit) {
    let mut p = tls_proxy();
    register_bob_over(&mut p, Transport::Tls);
    let mut a = Uac::alice(call_id);
    let out = feed(&mut p, &a.invite(None), alice(), MS, &mut NoMedia);
    let inv = out
        .into_iter()
        .find(|t| method(t).as_deref() == Some("INVITE"))
        .expect("INVITE forwarded");
    (p, a, inv)
}

#[test]
fn call_from_udp_to_a_tls_registered_phone_uses_its_flow_and_double_record_routes() {
    let (mut p, mut a, inv) = alice_calls_tls_bob("tls1");
    let inv = &inv;
    // Bob's flow, over TLS: not a new connection to his Contact's port.
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tls));
    assert!(
        vias(inv)[0].starts_with("SIP/2.0/TLS 127.0.0.1:5081;branch="),
        "{:?}",
        vias(inv)
    );
    // The entry facing Bob (TLS) first, then the one facing Alice (UDP).
    assert_eq!(
        headers(inv, HeaderName::RecordRoute),
        vec!["<sip:127.0.0.1:5081;transport=tls;lr>, <sip:127.0.0.1:5060;lr>".to_string()]
    );

    // Bob answers over his connection; the 200 goes to Alice over UDP.
    let b = Uas::new(bob_flow(), "b1", "sip:bob@127.0.0.1:5062;transport=tls");
    let ok = b.respond(&inv.bytes, 200);
    let out = over(&mut p, &ok, bob_flow(), Transport::Tls, 2 * MS);
    let to_alice = to(&out, alice());
    assert_eq!(to_alice.len(), 1);
    assert_eq!(to_alice[0].transport, Transport::Udp);
    assert_eq!(status(to_alice[0]), Some(200));
    a.learn(&to_alice[0].bytes);

    // Alice's BYE carries both our entries; both go, and it leaves on Bob's flow.
    let out = feed(&mut p, &a.bye(), alice(), 3 * MS, &mut NoMedia);
    let bye = out
        .iter()
        .find(|t| method(t).as_deref() == Some("BYE"))
        .expect("BYE forwarded");
    assert_eq!((bye.to, bye.transport), (bob_flow(), Transport::Tls));
    assert!(headers(bye, HeaderName::Route).is_empty(), "{}", text(bye));
    assert!(vias(bye)[0].starts_with("SIP/2.0/TLS 127.0.0.1:5081;"));
}

#[test]
fn call_from_a_tls_phone_reaches_a_udp_phone_and_the_callee_bye_comes_back() {
    let mut p = tls_proxy();
    register_bob(&mut p);
    // Alice over TLS from an ephemeral port; her Contact names her TLS listener.
    let mut a = Uac::new(addr("127.0.0.1:40002"), "127.0.0.1:5061", "tls2");
    let inv = String::from_utf8(a.invite(None))
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS")
        .replace(
            "Contact: <sip:alice@127.0.0.1:5061>",
            "Contact: <sip:alice@127.0.0.1:5061;transport=tls>",
        );
    let out = over(&mut p, inv.as_bytes(), a.addr, Transport::Tls, MS);
    let trying = out.iter().find(|t| status(t) == Some(100)).unwrap();
    assert_eq!((trying.to, trying.transport), (a.addr, Transport::Tls));
    let fwd = out
        .iter()
        .find(|t| method(t).as_deref() == Some("INVITE"))
        .unwrap();
    assert_eq!((fwd.to, fwd.transport), (bob(), Transport::Udp));
    assert!(vias(fwd)[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;"));
    assert_eq!(
        headers(fwd, HeaderName::RecordRoute),
        vec!["<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5081;transport=tls;lr>".to_string()]
    );
    // Bob's 200 returns to Alice's connection.
    let ok = Uas::bob().respond(&fwd.bytes, 200);
    let out = feed(&mut p, &ok, bob(), 2 * MS, &mut NoMedia);
    let back = out.iter().find(|t| status(t) == Some(200)).unwrap();
    assert_eq!((back.to, back.transport), (a.addr, Transport::Tls));

    // Bob hangs up: his route set is the Record-Route as received (UDP entry first).
    let bye = "BYE sip:alice@127.0.0.1:5061;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbye1\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5081;transport=tls;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
Call-ID: tls2\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n";
    let out = feed(&mut p, bye.as_bytes(), bob(), 3 * MS, &mut NoMedia);
    let fwd = out
        .iter()
        .find(|t| method(t).as_deref() == Some("BYE"))
        .expect("BYE forwarded");
    // To Alice's connection (learnt from her INVITE), not a new one to :5061.
    assert_eq!((fwd.to, fwd.transport), (a.addr, Transport::Tls));
    assert!(headers(fwd, HeaderName::Route).is_empty(), "{}", text(fwd));
}

#[test]
fn tcp_registered_phone_is_reached_on_its_connection_too() {
    let mut p = tls_proxy();
    register_bob_over(&mut p, Transport::Tcp);
    let mut a = Uac::alice("tcp1");
    let out = feed(&mut p, &a.invite(None), alice(), MS, &mut NoMedia);
    let inv = out
        .iter()
        .find(|t| method(t).as_deref() == Some("INVITE"))
        .unwrap();
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tcp));
    // UDP and TCP share the plain entry: one Record-Route.
    assert_eq!(
        headers(inv, HeaderName::RecordRoute),
        vec!["<sip:127.0.0.1:5060;lr>".to_string()]
    );
}

#[test]
fn a_sips_request_uri_gets_a_sips_record_route_and_tls_keepalive_pong() {
    let mut p = tls_proxy();
    register_bob_over(&mut p, Transport::Tls);
    let mut a = Uac::alice("tls3").calling("sips:bob@example.com");
    let inv = String::from_utf8(a.invite(None))
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    let src = addr("127.0.0.1:40003");
    let out = over(&mut p, inv.as_bytes(), src, Transport::Tls, MS);
    let fwd = out
        .iter()
        .find(|t| method(t).as_deref() == Some("INVITE"))
        .expect("INVITE forwarded");
    assert_eq!(fwd.transport, Transport::Tls);
    assert_eq!(
        headers(fwd, HeaderName::RecordRoute),
        vec!["<sips:127.0.0.1:5081;lr>".to_string()]
    );
    // RFC 5626 §4.4.1 over TLS: a double-CRLF ping gets a CRLF pong on the connection.
    let pong = p.handle_incoming(b"\r\n\r\n", src, Transport::Tls, 2 * MS, &mut NoMedia);
    assert_eq!(
        pong,
        vec![Transmit {
            to: src,
            transport: Transport::Tls,
            bytes: b"\r\n".to_vec()
        }]
    );
}

/// RFC 3261 §16.9: the INVITE to Bob's TLS flow cannot be sent (no connection could be
/// made): the branch ends as a 503 from Bob, Alice gets the final response at once (500,
/// §16.7), and no ACK is sent toward the connection that does not exist.
#[test]
fn a_request_the_transport_cannot_send_ends_its_branch_as_a_503() {
    let (mut p, a, inv) = alice_calls_tls_bob("tls-err");
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tls));
    let out =
        check(p.handle_transport_error(&inv.bytes, inv.to, inv.transport, 2 * MS, &mut NoMedia));
    let fin = out
        .iter()
        .find(|t| status(t).is_some_and(|s| s >= 200))
        .expect("a final response to Alice");
    assert_eq!((status(fin), fin.to), (Some(500), alice()), "{}", text(fin));
    assert!(
        out.iter().all(|t| t.to != bob_flow()),
        "nothing goes to the dead flow"
    );
    assert_eq!(p.stats().transport_errors, 1);
    // A response or an ACK that could not be sent is forgotten.
    let ack = a.ack_failure(&fin.bytes);
    assert!(p
        .handle_transport_error(&ack, bob_flow(), Transport::Tls, 3 * MS, &mut NoMedia)
        .is_empty());
    assert_eq!(p.stats().transport_errors, 1);
}
