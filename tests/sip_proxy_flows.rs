//! The sans-IO proxy's transports toward a next hop it is configured with, and toward
//! phones whose connection is gone:
//! - `--sip-outbound` names its transport (`sips:`, `;transport=tcp|tls`); a request that
//!   must go over TLS (`sips:` Request-URI or `;transport=tls`, RFC 3261 §26.2) leaves over
//!   TLS, or is refused at once when the next hop is not reached over TLS: never
//!   downgraded to UDP;
//! - a phone registered over TLS/TCP whose flow is gone ([`Proxy::flow_closed`]): with
//!   outbound (`reg-id` + `+sip.instance`, RFC 5626 §5.3) 430 Flow Failed and the binding
//!   dropped; without, a new connection to its Contact's address; a message over a new
//!   connection from the same address makes the flow live again.

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::{NextHop, Transmit, Transport};

fn tls_addr() -> SocketAddr {
    addr("127.0.0.1:5081")
}

fn next_hop() -> SocketAddr {
    addr("127.0.0.1:5099")
}

/// Bob's connection: an ephemeral source port, not his Contact's port.
fn bob_flow() -> SocketAddr {
    addr("127.0.0.1:40001")
}

/// A proxy with a TLS listener and `outbound` (if any).
fn proxy(outbound: Option<&str>) -> Proxy {
    let mut c = config();
    c.local_tls = Some(tls_addr());
    c.outbound = outbound.map(|s| s.parse::<NextHop>().unwrap());
    proxy_with(c)
}

/// Alice's INVITE for `target`: what the proxy sent.
fn alice_calls(p: &mut Proxy, target: &str, call_id: &str, now: u64) -> Vec<Transmit> {
    let mut a = Uac::alice(call_id).calling(target);
    feed(p, &a.invite(None), alice(), now, &mut NoMedia)
}

fn invite(out: &[Transmit]) -> Option<&Transmit> {
    out.iter().find(|t| method(t).as_deref() == Some("INVITE"))
}

/// The final response Alice got, if any.
fn final_to_alice(out: &[Transmit]) -> Option<u16> {
    to(out, alice())
        .into_iter()
        .filter_map(status)
        .find(|&s| s >= 200)
}

#[test]
fn a_sips_request_for_another_domain_goes_to_a_tls_outbound_and_never_over_udp() {
    // Reached over TLS: sips, transport=tls and plain requests all leave over TLS.
    let mut p = proxy(Some("sips:127.0.0.1:5099"));
    for (i, target) in [
        "sips:carol@other.test",
        "sip:carol@other.test;transport=tls",
        "sip:carol@other.test",
    ]
    .into_iter()
    .enumerate()
    {
        let out = alice_calls(&mut p, target, &format!("ob-tls-{i}"), MS);
        let inv = invite(&out).unwrap_or_else(|| panic!("{target}: not forwarded: {out:?}"));
        assert_eq!(
            (inv.to, inv.transport),
            (next_hop(), Transport::Tls),
            "{target}"
        );
        assert!(
            vias(inv)[0].starts_with("SIP/2.0/TLS 127.0.0.1:5081;branch="),
            "{target}: {:?}",
            vias(inv)
        );
    }

    // Reached over UDP (the old form) or TCP: a request that must go over TLS is refused
    // at once with 503; nothing is sent toward the next hop.
    for outbound in ["127.0.0.1:5099", "127.0.0.1:5099;transport=tcp"] {
        let mut p = proxy(Some(outbound));
        for target in [
            "sips:carol@other.test",
            "sip:carol@other.test;transport=tls",
        ] {
            let out = alice_calls(&mut p, target, "ob-refused", MS);
            assert!(
                out.iter().all(|t| t.to != next_hop()),
                "{outbound} / {target}: sent to the next hop: {out:?}"
            );
            assert_eq!(final_to_alice(&out), Some(503), "{outbound} / {target}");
        }
        // A plain request goes, over the configured transport.
        let out = alice_calls(&mut p, "sip:carol@other.test", "ob-plain", MS);
        let inv = invite(&out).expect("plain request forwarded");
        let want = if outbound.ends_with("tcp") {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        assert_eq!((inv.to, inv.transport), (next_hop(), want), "{outbound}");
    }
}

/// Bob registers over `tr` from [`bob_flow`] with `contact`; with `outbound`, the Contact
/// carries `reg-id` and `+sip.instance` (RFC 5626).
fn register_bob(p: &mut Proxy, tr: Transport, contact: &str, outbound: bool) {
    let name = tr.via_name();
    let mut reg = String::from_utf8(register_bytes(
        "bob",
        &[contact],
        "127.0.0.1:5062",
        "reg-bob",
        1,
    ))
    .unwrap()
    .replace("SIP/2.0/UDP", &format!("SIP/2.0/{name}"));
    if outbound {
        reg = reg.replace(
            &format!("Contact: <{contact}>"),
            &format!(
                "Contact: <{contact}>;reg-id=1;\
                 +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\""
            ),
        );
    }
    let out = check(p.handle_incoming(reg.as_bytes(), bob_flow(), tr, 0, &mut NoMedia));
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
}

#[test]
fn an_outbound_binding_whose_flow_is_gone_gets_430_at_once_and_is_dropped() {
    let mut p = proxy(None);
    let contact = "sip:bob@127.0.0.1:5062;transport=tls";
    register_bob(&mut p, Transport::Tls, contact, true);
    let bindings = p.registrar().lookup("sip:bob@example.com", MS);
    assert!(bindings.len() == 1 && bindings[0].outbound, "{bindings:?}");
    // While the flow is up, the INVITE goes on it.
    let out = alice_calls(&mut p, "sip:bob@example.com", "fl-1", MS);
    let inv = invite(&out).expect("forwarded");
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tls));

    p.flow_closed(Transport::Tls, bob_flow(), 2 * MS);
    let out = alice_calls(&mut p, "sip:bob@example.com", "fl-2", 3 * MS);
    assert!(invite(&out).is_none(), "forwarded on a dead flow: {out:?}");
    assert!(out
        .iter()
        .all(|t| t.to != bob_flow() && t.to.port() != 5062));
    assert_eq!(final_to_alice(&out), Some(430));
    let four30 = to(&out, alice())[0];
    assert!(text(four30).starts_with("SIP/2.0 430 Flow Failed\r\n"));
    assert_eq!(p.stats().flows_failed, 1);
    // The binding is gone: the next call finds none.
    assert!(p
        .registrar()
        .lookup("sip:bob@example.com", 4 * MS)
        .is_empty());
    let out = alice_calls(&mut p, "sip:bob@example.com", "fl-3", 4 * MS);
    assert_eq!(final_to_alice(&out), Some(480));
    assert_eq!(p.stats().flows_failed, 1);
}

#[test]
fn a_binding_without_outbound_whose_flow_is_gone_is_reached_at_its_contact() {
    for (tr, contact, port) in [
        (Transport::Tls, "sip:bob@127.0.0.1:5062;transport=tls", 5062),
        // No transport in the Contact: the one it registered over; no port: its default.
        (Transport::Tcp, "sip:bob@127.0.0.1", 5060),
        (Transport::Tls, "sips:bob@127.0.0.1", 5061),
    ] {
        let mut p = proxy(None);
        register_bob(&mut p, tr, contact, false);
        p.flow_closed(tr, bob_flow(), MS);
        let out = alice_calls(&mut p, "sip:bob@example.com", "fc-1", 2 * MS);
        let inv = invite(&out).unwrap_or_else(|| panic!("{contact}: {out:?}"));
        let at = SocketAddr::new(bob_flow().ip(), port);
        assert_eq!((inv.to, inv.transport), (at, tr), "{contact}");
        assert_eq!(msg(inv).request_uri_str(), Some(contact));
        // No connection can be made there either: Alice hears at once (RFC 3261 §16.9:
        // a 503 from that hop, forwarded as 500), not after Timer B.
        let out = check(p.handle_transport_error(
            &inv.bytes,
            inv.to,
            inv.transport,
            3 * MS,
            &mut NoMedia,
        ));
        assert_eq!(final_to_alice(&out), Some(500), "{contact}: {out:?}");
        assert_eq!(p.stats().flows_failed, 0);
        // The binding stays (the phone may listen later).
        assert_eq!(p.registrar().lookup("sip:bob@example.com", 4 * MS).len(), 1);
    }
}

#[test]
fn a_message_over_a_new_connection_from_the_flow_address_makes_it_live_again() {
    let mut p = proxy(None);
    let contact = "sip:bob@127.0.0.1:5062;transport=tls";
    register_bob(&mut p, Transport::Tls, contact, true);
    p.flow_closed(Transport::Tls, bob_flow(), MS);
    // A closed UDP "flow" means nothing.
    p.flow_closed(Transport::Udp, alice(), MS);
    // A keep-alive from the same address over TLS: a new connection, the flow is live.
    let pong = p.handle_incoming(
        b"\r\n\r\n",
        bob_flow(),
        Transport::Tls,
        2 * MS,
        &mut NoMedia,
    );
    assert_eq!(pong.len(), 1);
    let out = alice_calls(&mut p, "sip:bob@example.com", "fr-1", 3 * MS);
    let inv = invite(&out).expect("forwarded");
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tls));
    assert_eq!(p.stats().flows_failed, 0);
}

/// In a dialog: Bob answered over his flow, which then closed; Alice's BYE goes over a new
/// connection to his Contact's address instead of the flow that is gone.
#[test]
fn an_in_dialog_request_to_a_gone_flow_goes_to_the_contact() {
    let mut p = proxy(None);
    let contact = "sip:bob@127.0.0.1:5062;transport=tls";
    register_bob(&mut p, Transport::Tls, contact, false);
    let mut a = Uac::alice("fd-1");
    let out = feed(&mut p, &a.invite(None), alice(), MS, &mut NoMedia);
    let inv = invite(&out).expect("forwarded").clone();
    assert_eq!((inv.to, inv.transport), (bob_flow(), Transport::Tls));
    let ok = Uas::new(bob_flow(), "b1", contact).respond(&inv.bytes, 200);
    let out = check(p.handle_incoming(&ok, bob_flow(), Transport::Tls, 2 * MS, &mut NoMedia));
    let ok = to(&out, alice())[0].bytes.clone();
    a.learn(&ok);
    p.flow_closed(Transport::Tls, bob_flow(), 3 * MS);
    let out = feed(&mut p, &a.bye(), alice(), 4 * MS, &mut NoMedia);
    let bye = out
        .iter()
        .find(|t| method(t).as_deref() == Some("BYE"))
        .expect("BYE forwarded");
    assert_eq!(
        (bye.to, bye.transport),
        (addr("127.0.0.1:5062"), Transport::Tls)
    );
}
