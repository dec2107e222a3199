//! NAT through the sans-IO proxy: RFC 3581 `received`/`rport` on a NATed caller's Via,
//! a NATed callee reached at the address it registered from, in-dialog requests to private
//! Contacts both ways, and a contact registered without NAT evidence used as it is.

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::header::Rport;

#[test]
fn rport_received_and_nated_callee() {
    let mut rec = Rec::default();
    let mut p = new_proxy();
    // Bob behind NAT: private Contact, registered from a different public port.
    let bob_public = addr("127.0.0.1:40000");
    register(
        &mut p,
        "bob",
        &["sip:bob@192.168.1.5:5060"],
        bob_public,
        "192.168.1.5:5060",
    );
    // Alice behind NAT too: Via private with rport; source is public.
    let alice_public = addr("127.0.0.1:41000");
    let mut a = Uac::new(alice_public, "10.0.0.7:5060", "nat1").with_rport();
    let inv = a.invite(Some(&sdp("10.0.0.7", 6000)));
    let out = feed(&mut p, &inv, alice_public, 0, &mut rec);
    assert_eq!(
        out[0].to, alice_public,
        "100 goes to the source port (rport)"
    );
    assert_eq!(out[1].to, bob_public, "NATed callee reached at its source");
    let m = msg(&out[1]);
    assert_eq!(m.request_uri_str(), Some("sip:bob@192.168.1.5:5060"));
    let v: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(v[1].received, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(v[1].rport, Rport::Port(41000));
    assert!(rec.calls[0].4.is_some());
    // Bob's 200 goes back to alice's public address and carries the filled Via.
    let b = Uas::new(bob_public, "b1", "sip:bob@192.168.1.5:5060");
    let ok = b.respond_sdp(&out[1].bytes, 200, &sdp("192.168.1.5", 7000));
    let out = feed(&mut p, &ok, bob_public, 10 * MS, &mut rec);
    assert_eq!(out[0].to, alice_public);
    let top = msg(&out[0]).top_via().unwrap();
    assert_eq!(top.rport, Rport::Port(41000));
    // In-dialog BYE to bob's private Contact goes to his source.
    a.learn(&out[0].bytes);
    assert_eq!(a.remote_target.as_deref(), Some("sip:bob@192.168.1.5:5060"));
    let out = feed(&mut p, &a.bye(), alice_public, 20 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob_public, Some("BYE"))
    );
    // And bob's in-dialog request to alice's private Contact reaches her source.
    let rev = "BYE sip:alice@10.0.0.7:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKrev;rport\r\nMax-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:bob@example.com>;tag=b1\r\nTo: <sip:alice@example.com>;tag=a1\r\nCall-ID: nat1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    let out = feed(&mut p, rev.as_bytes(), bob_public, 30 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (alice_public, Some("BYE"))
    );
}

#[test]
fn a_contact_registered_without_nat_evidence_is_used_as_is() {
    let mut rec = Rec::default();
    let mut p = new_proxy();
    // Carol registers a third party's public contact from her own address: not NATed.
    register(
        &mut p,
        "carol",
        &["sip:carol@127.0.0.1:5070"],
        addr("127.0.0.1:5080"),
        "127.0.0.1:5080",
    );
    // Carol (no NAT evidence) is reached at her Contact.
    let inv = Uac::alice("nat2")
        .calling("sip:carol@example.com")
        .invite(None);
    let out = feed(&mut p, &inv, alice(), 40 * MS, &mut rec);
    assert_eq!(out[1].to, addr("127.0.0.1:5070"));
}
