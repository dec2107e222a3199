//! The sans-IO proxy core on a plain call: REGISTER, INVITE, 180, 200, ACK, BYE with the
//! media hook asked at each step; INVITE and 2xx retransmissions; a non-INVITE
//! transaction; late offers and a media failure. Bytes in, `Transmit`s out, a fake clock.

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::{MediaOp, NoMedia};
use rtpanchor::sip::{HeaderName, Message};

#[test]
fn register_invite_ack_bye_end_to_end() {
    let mut rec = Rec::default();
    let offer = sdp("10.0.0.1", 6000);
    let (mut p, mut a, inv) = call_to_bob(&mut rec, Some(&offer));
    let b = Uas::bob();
    let m = Message::parse(&inv).unwrap();
    assert_eq!(m.request_uri_str(), Some("sip:bob@127.0.0.1:5062"));
    let v: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].host.to_string(), "127.0.0.1");
    assert_eq!(v[0].port, Some(5060));
    assert!(v[0].has_rfc3261_branch());
    assert_eq!(v[1].branch, Some(a.branch.as_str()));
    assert_eq!(m.max_forwards().unwrap(), Some(69));
    let rr = m.route_set(HeaderName::RecordRoute).unwrap();
    assert_eq!(rr.len(), 1);
    assert_eq!(rr[0].raw, "<sip:127.0.0.1:5060;lr>");
    assert_eq!(
        m.body(),
        sdp("203.0.113.1", 40000).as_slice(),
        "offer body replaced"
    );
    assert_eq!(m.content_length, Some(m.body().len()));
    let our_branch = v[0].branch.unwrap().to_string();
    assert_eq!(rec.calls.len(), 1);
    assert_eq!(rec.calls[0].0, MediaOp::Offer);
    assert_eq!(rec.calls[0].1, "call1");
    assert_eq!(rec.calls[0].2, "a1");
    assert_eq!(rec.calls[0].3, None);
    assert_eq!(rec.calls[0].4.as_deref(), Some(our_branch.as_str()));

    // 180 and 200 from bob travel back with our Via popped.
    let out = feed(&mut p, &b.respond(&inv, 180), bob(), 10 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(180)));
    assert_eq!(vias(&out[0]).len(), 1);
    let ok = b.respond_sdp(&inv, 200, &sdp("10.0.0.2", 7000));
    let out = feed(&mut p, &ok, bob(), 20 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    let r = msg(&out[0]);
    assert_eq!(r.vias().count(), 1);
    assert_eq!(r.top_via().unwrap().branch, Some(a.branch.as_str()));
    assert_eq!(
        r.body(),
        sdp("203.0.113.1", 40002).as_slice(),
        "answer body replaced"
    );
    assert_eq!(r.content_length, Some(r.body().len()));
    assert_eq!(r.route_set(HeaderName::RecordRoute).unwrap().len(), 1);
    let last = rec.calls.last().unwrap();
    assert_eq!(last.0, MediaOp::Answer);
    assert_eq!((last.2.as_str(), last.3.as_deref()), ("a1", Some("b1")));
    assert_eq!(last.4.as_deref(), Some(our_branch.as_str()));

    // ACK and BYE follow the Record-Route: Route naming us, R-URI = bob's Contact.
    a.learn(&out[0].bytes);
    assert_eq!(a.route, ["<sip:127.0.0.1:5060;lr>"]);
    assert_eq!(a.remote_target.as_deref(), Some("sip:bob@127.0.0.1:5062"));
    let ack = a.ack(None);
    let out = feed(&mut p, &ack, alice(), 30 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
    let am = msg(&out[0]);
    assert!(
        am.route_set(HeaderName::Route).unwrap().is_empty(),
        "our Route popped"
    );
    assert_eq!(am.vias().count(), 2);
    assert_eq!(am.max_forwards().unwrap(), Some(69));
    // A retransmitted ACK gets the same branch (stateless, derived from the incoming one).
    let again = feed(&mut p, &ack, alice(), 40 * MS, &mut rec);
    assert_eq!(top_branch(&again[0]), top_branch(&out[0]));

    let out = feed(&mut p, &a.bye(), alice(), SEC, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("BYE"))
    );
    assert!(msg(&out[0])
        .route_set(HeaderName::Route)
        .unwrap()
        .is_empty());
    assert_eq!(rec.calls.last().unwrap().0, MediaOp::Delete);
    let bye_ok = b.respond(&out[0].bytes, 200);
    let out = feed(&mut p, &bye_ok, bob(), SEC + MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    assert_eq!(
        rec.ops(),
        vec![MediaOp::Offer, MediaOp::Answer, MediaOp::Delete]
    );
    let s = p.stats();
    assert_eq!(s.responses_sent[1], 2, "100 + 180");
    assert!(s.responses_sent[2] >= 3);
    assert_eq!(s.stateless_forwards, 2, "two ACKs");
    // Everything ends by a timer.
    tick(&mut p, 100 * SEC, &mut rec);
    let s = p.stats();
    assert_eq!((s.server_transactions, s.client_transactions), (0, 0));
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut rec = Rec::default();
    let (mut p, a, inv) = call_to_bob(&mut rec, None);
    let again = feed(&mut p, &a.last_invite, alice(), 100 * MS, &mut rec);
    assert_eq!(again.len(), 1, "answered, not forwarded");
    assert_eq!((again[0].to, status(&again[0])), (alice(), Some(100)));
    // After a 180 the retransmission gets the 180.
    feed(
        &mut p,
        &Uas::bob().respond(&inv, 180),
        bob(),
        200 * MS,
        &mut rec,
    );
    let again = feed(&mut p, &a.last_invite, alice(), 300 * MS, &mut rec);
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0]), Some(180));
    assert_eq!(p.stats().retransmissions_absorbed, 2);
    assert_eq!(p.stats().forwarded_requests, 1);
}

#[test]
fn non_invite_provisional_then_final() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let m = Uac::alice("sub1").request("SUBSCRIBE", "Event: presence\r\n");
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(
        msg(&out[0])
            .route_set(HeaderName::RecordRoute)
            .unwrap()
            .len(),
        1
    );
    let notifier = Uas::new(bob(), "n1", "sip:bob@127.0.0.1:5062");
    let ok = notifier.respond(&out[0].bytes, 202);
    let out = feed(&mut p, &ok, bob(), 10 * MS, &mut NoMedia);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(202)));
    // Retransmission of the response from bob (client transaction Completed) is absorbed.
    let out = feed(&mut p, &ok, bob(), 20 * MS, &mut NoMedia);
    assert!(out.is_empty());
}

#[test]
fn retransmitted_2xx_is_forwarded_statelessly() {
    let mut rec = Rec::default();
    let (mut p, _, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    let ok = Uas::bob().respond_sdp(&inv, 200, &sdp("10.0.0.2", 7000));
    let first = feed(&mut p, &ok, bob(), 10 * MS, &mut rec);
    assert_eq!(
        p.stats().client_transactions,
        0,
        "INVITE client transaction ended on 2xx"
    );
    let calls = rec.calls.len();
    let again = feed(&mut p, &ok, bob(), 510 * MS, &mut rec);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].to, alice());
    assert_eq!(
        again[0].bytes, first[0].bytes,
        "same bytes as the first 2xx"
    );
    assert_eq!(rec.calls.len(), calls, "the media layer is not asked again");
    // Much later (cache expired) it is still forwarded, by the Via.
    tick(&mut p, 40 * SEC, &mut rec);
    let late = feed(&mut p, &ok, bob(), 41 * SEC, &mut rec);
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].to, status(&late[0])), (alice(), Some(200)));
    assert_eq!(vias(&late[0]).len(), 1);
}

#[test]
fn late_offer_offer_on_200_answer_on_ack() {
    let mut rec = Rec::default();
    let (mut p, mut a, inv) = call_to_bob(&mut rec, None);
    assert!(rec.calls.is_empty(), "no SDP, no offer");
    let ok = Uas::bob().respond_sdp(&inv, 200, &sdp("10.0.0.2", 7000));
    let out = feed(&mut p, &ok, bob(), 10 * MS, &mut rec);
    assert_eq!(rec.calls.len(), 1);
    let c = &rec.calls[0];
    assert_eq!(c.0, MediaOp::Offer);
    assert_eq!((c.2.as_str(), c.3.as_deref()), ("a1", Some("b1")));
    assert!(c.4.is_some());
    assert_eq!(msg(&out[0]).body(), sdp("203.0.113.1", 40000).as_slice());
    a.learn(&out[0].bytes);
    let ack = a.ack(Some(&sdp("10.0.0.1", 6000)));
    let out = feed(&mut p, &ack, alice(), 20 * MS, &mut rec);
    let c = &rec.calls[1];
    assert_eq!(c.0, MediaOp::Answer);
    assert_eq!(
        (c.2.as_str(), c.3.as_deref()),
        ("b1", Some("a1")),
        "tags swapped"
    );
    let am = msg(&out[0]);
    assert_eq!(am.body(), sdp("203.0.113.1", 40002).as_slice());
    assert_eq!(am.content_length, Some(am.body().len()));
}

#[test]
fn media_failure_rejects_the_invite() {
    let mut rec = Rec {
        fail: Some((503, "Ran out of ports".to_string())),
        ..Rec::default()
    };
    let mut p = new_proxy();
    register_bob(&mut p);
    let inv = Uac::alice("mx").invite(Some(&sdp("10.0.0.1", 6000)));
    let out = feed(&mut p, &inv, alice(), 0, &mut rec);
    assert!(to(&out, bob()).is_empty(), "nothing forwarded");
    let last = out.last().unwrap();
    assert_eq!(last.to, alice());
    assert_eq!(status(last), Some(503));
    assert!(text(last).contains("503 Ran out of ports"));
    assert_eq!(p.stats().media_failures, 1);
    assert_eq!(p.stats().client_transactions, 0);
    assert!(!rec.ops().contains(&MediaOp::Delete), "nothing to delete");
}
