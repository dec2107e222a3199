//! CANCEL through the sans-IO proxy (RFC 3261 §9, §16.10): racing a 200, before any final
//! answer, and before any provisional (deferred until the branch rings).

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::MediaOp;
use rtpanchor::sip::Message;

#[test]
fn cancel_racing_a_200_the_200_wins() {
    let mut rec = Rec::default();
    let (mut p, mut a, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    let b = Uas::bob();
    feed(&mut p, &b.respond(&inv, 180), bob(), 10 * MS, &mut rec);
    let out = feed(&mut p, &a.cancel(), alice(), 20 * MS, &mut rec);
    assert_eq!(out.len(), 2, "{out:?}");
    let to_alice = to(&out, alice());
    assert_eq!(status(to_alice[0]), Some(200));
    assert_eq!(msg(to_alice[0]).cseq().unwrap().method, "CANCEL");
    let fwd = to(&out, bob());
    assert_eq!(method(fwd[0]).as_deref(), Some("CANCEL"));
    assert_eq!(top_branch(fwd[0]), branch_of(&inv));
    // Bob's 200 to the INVITE crossed the CANCEL: it is forwarded.
    let ok = b.respond_sdp(&inv, 200, &sdp("10.0.0.2", 7000));
    let out = feed(&mut p, &ok, bob(), 30 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    a.learn(&out[0].bytes);
    // Bob's 200 to the CANCEL is absorbed.
    let cok = b.respond(&fwd[0].bytes, 200);
    assert!(feed(&mut p, &cok, bob(), 40 * MS, &mut rec).is_empty());
    // ACK and BYE then work.
    let out = feed(&mut p, &a.ack(None), alice(), 50 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
    let out = feed(&mut p, &a.bye(), alice(), 60 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("BYE"))
    );
}

#[test]
fn cancel_before_any_final_answer() {
    let mut rec = Rec::default();
    let (mut p, a, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    let b = Uas::bob();
    // Bob's 100 is not forwarded, but lets a CANCEL go out (§9.1).
    let out = feed(&mut p, &b.respond(&inv, 100), bob(), 10 * MS, &mut rec);
    assert!(out.is_empty());
    let cancel = a.cancel();
    let out = feed(&mut p, &cancel, alice(), 20 * MS, &mut rec);
    assert_eq!(status(to(&out, alice())[0]), Some(200));
    let fwd = to(&out, bob())[0].bytes.clone();
    assert_eq!(Message::parse(&fwd).unwrap().method(), Some("CANCEL"));
    assert_eq!(rec.calls.last().unwrap().0, MediaOp::Delete);
    // A retransmitted CANCEL is answered from its transaction, not forwarded again.
    let out = feed(&mut p, &cancel, alice(), 25 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200));
    // Bob: 200 to the CANCEL (absorbed), 487 to the INVITE (ACKed, forwarded).
    assert!(feed(&mut p, &b.respond(&fwd, 200), bob(), 30 * MS, &mut rec).is_empty());
    let out = feed(&mut p, &b.respond(&inv, 487), bob(), 40 * MS, &mut rec);
    assert_eq!(out.len(), 2, "{out:?}");
    let ack = to(&out, bob())[0];
    assert_eq!(method(ack).as_deref(), Some("ACK"));
    assert_eq!(msg(ack).to_tag(), Some("b1"));
    assert_eq!(top_branch(ack), branch_of(&inv));
    let terminated = to(&out, alice())[0];
    assert_eq!(status(terminated), Some(487));
    // Alice's ACK for the 487 is absorbed.
    let ack = a.ack_failure(&terminated.bytes);
    assert_eq!(Message::parse(&ack).unwrap().to_tag(), Some("b1"));
    assert!(feed(&mut p, &ack, alice(), 50 * MS, &mut rec).is_empty());
    // A retransmitted 487 from bob is re-ACKed, not forwarded.
    let out = feed(&mut p, &b.respond(&inv, 487), bob(), 60 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
}

#[test]
fn cancel_before_a_provisional_is_deferred() {
    let mut rec = Rec::default();
    let (mut p, a, inv) = call_to_bob(&mut rec, None);
    let out = feed(&mut p, &a.cancel(), alice(), 20 * MS, &mut rec);
    // No CANCEL toward bob yet; alice gets 200 (CANCEL) and 487 (INVITE) at once.
    assert!(to(&out, bob()).is_empty());
    let mut codes: Vec<_> = out.iter().map(|t| status(t).unwrap()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // The INVITE is no longer retransmitted (only the 487 is, until alice ACKs).
    let out = tick(&mut p, 2 * SEC, &mut rec);
    assert!(to(&out, bob()).is_empty());
    assert!(out.iter().all(|t| status(t) == Some(487)));
    // Bob rings late: now the CANCEL goes out, and the 180 is not forwarded.
    let out = feed(
        &mut p,
        &Uas::bob().respond(&inv, 180),
        bob(),
        3 * SEC,
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("CANCEL"))
    );
}
