//! Request checks and routing in the sans-IO proxy (RFC 3261 §16.3–16.5): loops and
//! spirals, Max-Forwards, 404/480/403 and the outbound proxy, OPTIONS answered here and
//! CRLF keep-alives, bindings held by another front (a shared location service).

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::{NextHop, Transmit, Transport};
use rtpanchor::sip::HeaderName;

#[test]
fn loop_gets_482_and_spiral_does_not() {
    // outbound = ourselves: the forwarded request comes straight back.
    let mut c = config();
    c.outbound = Some(NextHop::udp(proxy_addr()));
    let mut p = proxy_with(c.clone());
    let m = Uac::alice("loop1")
        .calling("sip:carol@elsewhere.test")
        .request("MESSAGE", "");
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, proxy_addr());
    let back = feed(&mut p, &out[0].bytes, proxy_addr(), MS, &mut NoMedia);
    assert_eq!(back.len(), 1);
    assert_eq!(status(&back[0]), Some(482));
    assert_eq!(
        back[0].to,
        proxy_addr(),
        "answered to the previous hop (us)"
    );
    assert_eq!(p.stats().loops, 1);
    // Spiral: the same request with a changed Request-URI is not a loop.
    let spiral = String::from_utf8(out[0].bytes.clone())
        .unwrap()
        .replace("sip:carol@elsewhere.test", "sip:dave@elsewhere.test");
    // (A fresh instance with the same secret: the looped copy above already holds that
    // Via branch's server transaction here.)
    let mut p2 = proxy_with(c);
    let fwd = feed(
        &mut p2,
        spiral.as_bytes(),
        proxy_addr(),
        2 * MS,
        &mut NoMedia,
    );
    assert_eq!(method(&fwd[0]).as_deref(), Some("MESSAGE"));
    assert_eq!(vias(&fwd[0]).len(), 3);
}

#[test]
fn max_forwards_rules() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let zero = String::from_utf8(Uac::alice("mf").invite(None))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = feed(&mut p, zero.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(483)));
    // Absent: 70 is added.
    let none = String::from_utf8(Uac::alice("mf2").invite(None))
        .unwrap()
        .replace("Max-Forwards: 70\r\n", "");
    let out = feed(&mut p, none.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(msg(&out[1]).max_forwards().unwrap(), Some(70));
    // One: forwarded with 0.
    let one = String::from_utf8(Uac::alice("mf3").invite(None))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 1");
    let out = feed(&mut p, one.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(msg(&out[1]).max_forwards().unwrap(), Some(0));
    // RFC 4475 §3.1.4.11 (zeromf): OPTIONS with Max-Forwards 0 is answered by us.
    let z = rfc4475("zeromf");
    let out = feed(&mut p, &z, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200));
    assert!(msg(&out[0]).header(HeaderName::Allow).is_some());
}

#[test]
fn not_found_unavailable_forbidden() {
    let mut p = new_proxy();
    let call = |p: &mut Proxy, ruri: &str, call_id: &str| {
        let r = Uac::alice(call_id).calling(ruri).invite(None);
        let out = feed(p, &r, alice(), 0, &mut NoMedia);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(msg(&out[0]).to_tag().is_some());
        status(&out[0]).unwrap()
    };
    assert_eq!(call(&mut p, "sip:nobody@example.com", "nf1"), 404);
    assert_eq!(call(&mut p, "sip:bob@other.test", "nf2"), 403);
    // Registered then unregistered: 480.
    register_bob(&mut p);
    let unreg = String::from_utf8(register_bytes(
        "bob",
        &["sip:bob@127.0.0.1:5062"],
        "127.0.0.1:5062",
        "reg-bob",
        2,
    ))
    .unwrap()
    .replace("Expires: 600", "Expires: 0");
    let out = feed(&mut p, unreg.as_bytes(), bob(), SEC, &mut NoMedia);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(call(&mut p, "sip:bob@example.com", "nf3"), 480);
    // The listen address is a served domain too.
    assert_eq!(call(&mut p, "sip:nobody@127.0.0.1", "nf4"), 404);
    // Outbound configured: foreign domains go there.
    let mut c = config();
    c.outbound = Some(NextHop::udp(addr("127.0.0.1:5099")));
    let mut p = proxy_with(c);
    let r = Uac::alice("ob").calling("sip:bob@other.test").invite(None);
    let out = feed(&mut p, &r, alice(), 0, &mut NoMedia);
    assert_eq!(out[1].to, addr("127.0.0.1:5099"));
    assert_eq!(msg(&out[1]).request_uri_str(), Some("sip:bob@other.test"));
}

#[test]
fn options_and_keepalives() {
    let mut p = new_proxy();
    let mut a = Uac::alice("opt");
    for ruri in ["sip:127.0.0.1", "sip:example.com", "sip:127.0.0.1:5060"] {
        a.target = ruri.to_string();
        let r = a.request("OPTIONS", "");
        let out = feed(&mut p, &r, alice(), 0, &mut NoMedia);
        assert_eq!(out.len(), 1);
        let m = msg(&out[0]);
        assert_eq!(m.status(), Some(200));
        for h in [HeaderName::Allow, HeaderName::Accept, HeaderName::Supported] {
            assert!(m.header(h).is_some(), "{h:?}");
        }
        assert!(m
            .header(HeaderName::Allow)
            .unwrap()
            .value
            .contains("INVITE"));
    }
    // CRLF keep-alives: ignored on UDP, ponged on TCP (RFC 5626).
    assert!(p
        .handle_incoming(b"\r\n\r\n", alice(), Transport::Udp, 0, &mut NoMedia)
        .is_empty());
    let pong = p.handle_incoming(b"\r\n\r\n", alice(), Transport::Tcp, 0, &mut NoMedia);
    assert_eq!(
        pong,
        vec![Transmit {
            to: alice(),
            transport: Transport::Tcp,
            bytes: b"\r\n".to_vec()
        }]
    );
    assert_eq!(p.stats().keepalives, 2);
}

/// A shared location service (`store::share`): a binding another front took over TCP is
/// reached through that front (a Route naming it on top, the contact as Request-URI); that
/// front pops its Route and sends the request on the phone's connection. A UDP binding from
/// another front is reached directly.
#[test]
fn bindings_held_by_another_front() {
    use rtpanchor::sip::registrar::{Binding, LocationStore};
    let front_a = addr("127.0.0.1:5070");
    let phone = addr("127.0.0.1:40001");
    let contact = "sip:bob@127.0.0.1:40001;transport=tcp";
    let held_by_a = |transport, uri: &str| Binding {
        uri: uri.to_owned(),
        q: None,
        call_id: "reg-bob".into(),
        cseq: 1,
        source: phone,
        expires_at_ns: 600 * SEC,
        transport,
        path: Some(format!("sip:{front_a}")),
        outbound: false,
        nat: false,
    };
    // Front B (the kit's proxy) learnt bob's TCP binding from A.
    let mut b = new_proxy();
    b.registrar_mut().store.put(
        "sip:bob@example.com",
        vec![held_by_a(Transport::Tcp, contact)],
    );
    let out = feed(
        &mut b,
        &Uac::alice("via-a").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    let inv = out.iter().find(|t| method(t).as_deref() == Some("INVITE"));
    let inv = inv.expect("INVITE forwarded");
    assert_eq!((inv.to, inv.transport), (front_a, Transport::Udp));
    let m = msg(inv);
    assert_eq!(m.request_uri_str(), Some(contact));
    let routes = m.route_set(HeaderName::Route).unwrap();
    assert_eq!(routes[0].raw, format!("<sip:{front_a};lr>"));
    // A request over 1,300 bytes to that front goes over TCP (RFC 3261 §18.1.1), its Via
    // saying so; a small one over UDP.
    for (name, size, transport) in [("big", 1500, Transport::Tcp), ("small", 10, Transport::Udp)] {
        let mut uac = Uac::alice(&format!("msg-{name}"));
        let bytes = uac.request("MESSAGE", &format!("Subject: {}\r\n", "x".repeat(size)));
        let out = feed(&mut b, &bytes, alice(), 0, &mut NoMedia);
        let fwd = out
            .iter()
            .find(|t| method(t).as_deref() == Some("MESSAGE"))
            .unwrap_or_else(|| panic!("{name} MESSAGE not forwarded: {out:?}"));
        assert_eq!((fwd.to, fwd.transport), (front_a, transport), "{name}");
        assert!(
            vias(fwd)[0].starts_with(&format!("SIP/2.0/{}", transport.via_name())),
            "{}",
            text(fwd)
        );
    }

    // Front A took the REGISTER over TCP: it sends B's INVITE on that connection.
    let mut cfg = config();
    cfg.local = front_a;
    let mut a = proxy_with(cfg);
    let reg = String::from_utf8(register_bytes(
        "bob",
        &[contact],
        "127.0.0.1:40001",
        "reg-bob",
        1,
    ))
    .unwrap()
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let ok = check(a.handle_incoming(reg.as_bytes(), phone, Transport::Tcp, 0, &mut NoMedia));
    assert_eq!(status(&ok[0]), Some(200));
    let from_b =
        check(a.handle_incoming(&inv.bytes, proxy_addr(), Transport::Udp, MS, &mut NoMedia));
    let fwd = from_b
        .iter()
        .find(|t| method(t).as_deref() == Some("INVITE"))
        .expect("A forwards it");
    assert_eq!((fwd.to, fwd.transport), (phone, Transport::Tcp));
    assert!(msg(fwd).route_set(HeaderName::Route).unwrap().is_empty());

    // A UDP binding from another front: B goes straight to the phone.
    let mut b = new_proxy();
    b.registrar_mut().store.put(
        "sip:bob@example.com",
        vec![held_by_a(Transport::Udp, "sip:bob@127.0.0.1:40001")],
    );
    let out = feed(
        &mut b,
        &Uac::alice("direct").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    let inv = out.iter().find(|t| method(t).as_deref() == Some("INVITE"));
    assert_eq!(
        inv.map(|t| (t.to, t.transport)),
        Some((phone, Transport::Udp))
    );

    // A UDP binding A made with NAT evidence (the REGISTER's Via differed from its source),
    // its Contact a public address: B reaches it at the source too, as A would.
    let mut b = new_proxy();
    let natted = Binding {
        nat: true,
        ..held_by_a(Transport::Udp, "sip:bob@198.51.100.7:5062")
    };
    b.registrar_mut()
        .store
        .put("sip:bob@example.com", vec![natted.clone()]);
    let out = feed(
        &mut b,
        &Uac::alice("natted").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    let inv = out.iter().find(|t| method(t).as_deref() == Some("INVITE"));
    assert_eq!(
        inv.map(|t| (t.to, t.transport)),
        Some((phone, Transport::Udp)),
        "B must reach a NATed binding at its source"
    );
    // Without the evidence, the same public Contact is reached as written.
    let mut b = new_proxy();
    b.registrar_mut().store.put(
        "sip:bob@example.com",
        vec![Binding {
            nat: false,
            ..natted
        }],
    );
    let out = feed(
        &mut b,
        &Uac::alice("public").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    let inv = out.iter().find(|t| method(t).as_deref() == Some("INVITE"));
    assert_eq!(inv.map(|t| t.to), Some(addr("198.51.100.7:5062")));
}
