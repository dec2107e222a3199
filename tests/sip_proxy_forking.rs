//! Parallel forking through the sans-IO proxy (RFC 3261 §16.7): the first 2xx wins and
//! cancels the other branches, further 2xx are forwarded too, and when every branch fails
//! the best final goes upstream (6xx first, then the lowest class, 503 as 500).

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::{MediaHook, MediaOp, NoMedia};
use rtpanchor::sip::proxy::Proxy;

/// Bob's two contacts as user agents (To tags `x1` and `x2`).
fn bobs() -> (Uas, Uas) {
    (
        Uas::new(bob(), "x1", "sip:bob@127.0.0.1:5062"),
        Uas::new(bob2(), "x2", "sip:bob@127.0.0.1:5063"),
    )
}

/// Bob registered at two contacts and alice's INVITE (`call_id`, `body`) forked to both:
/// returns the proxy and the INVITEs bob's two contacts got (after checking 100 + 2).
fn forked_call(
    call_id: &str,
    body: Option<&[u8]>,
    m: &mut dyn MediaHook,
) -> (Proxy, Vec<u8>, Vec<u8>) {
    let mut p = new_proxy();
    register_bob_twice(&mut p);
    let inv = Uac::alice(call_id).invite(body);
    let out = feed(&mut p, &inv, alice(), 0, m);
    assert_eq!(out.len(), 3);
    let b1 = to(&out, bob())[0].bytes.clone();
    let b2 = to(&out, bob2())[0].bytes.clone();
    (p, b1, b2)
}

#[test]
fn forking_first_2xx_wins_and_cancels_the_other_branch() {
    let mut rec = Rec::default();
    let (mut p, b1, b2) = forked_call("fork1", Some(&sdp("10.0.0.1", 6000)), &mut rec);
    let (u1, u2) = bobs();
    let br1 = branch_of(&b1);
    let br2 = branch_of(&b2);
    assert_ne!(br1, br2);
    // One offer per branch, each with its branch.
    let offers: Vec<_> = rec
        .calls
        .iter()
        .filter(|c| c.0 == MediaOp::Offer)
        .map(|c| c.4.clone().unwrap())
        .collect();
    assert_eq!(offers, vec![br1.clone(), br2.clone()]);
    feed(&mut p, &u2.respond(&b2, 180), bob2(), 10 * MS, &mut rec);
    let ok = u1.respond_sdp(&b1, 200, &sdp("10.0.0.2", 7000));
    let out = feed(&mut p, &ok, bob(), 20 * MS, &mut rec);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(to(&out, alice())[0]), Some(200));
    let c = to(&out, bob2())[0];
    assert_eq!(method(c).as_deref(), Some("CANCEL"));
    assert_eq!(top_branch(c), br2);
    let ans = rec.calls.iter().find(|c| c.0 == MediaOp::Answer).unwrap();
    assert_eq!(
        ans.4.as_deref(),
        Some(br1.as_str()),
        "answer carries the winning branch"
    );
    // The other branch answers 487: ACKed, not forwarded.
    let out = feed(&mut p, &u2.respond(&b2, 487), bob2(), 30 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob2(), Some("ACK"))
    );
}

/// A second 2xx (say the other branch had answered too) is forwarded as well (§16.7).
#[test]
fn forking_a_second_2xx_is_forwarded_too() {
    let (mut p, b1, b2) = forked_call("fork2", None, &mut NoMedia);
    let (u1, u2) = bobs();
    let o1 = feed(&mut p, &u1.respond(&b1, 200), bob(), 10 * MS, &mut NoMedia);
    assert_eq!(to(&o1, alice()).len(), 1);
    let o2 = feed(&mut p, &u2.respond(&b2, 200), bob2(), 20 * MS, &mut NoMedia);
    assert_eq!(o2.len(), 1);
    assert_eq!((o2[0].to, msg(&o2[0]).to_tag()), (alice(), Some("x2")));
}

#[test]
fn best_response_when_all_branches_fail() {
    fn run(c1: (u16, &str), c2: (u16, &str)) -> (u16, usize) {
        let mut rec = Rec::default();
        let (mut p, b1, b2) = forked_call("best", Some(&sdp("10.0.0.1", 6000)), &mut rec);
        let (u1, u2) = bobs();
        let out = feed(
            &mut p,
            &u1.reply(&b1, c1.0, c1.1, None),
            bob(),
            10 * MS,
            &mut rec,
        );
        let mut upstream: Vec<u16> = to(&out, alice()).iter().filter_map(|t| status(t)).collect();
        let out2 = feed(
            &mut p,
            &u2.reply(&b2, c2.0, c2.1, None),
            bob2(),
            20 * MS,
            &mut rec,
        );
        assert_eq!(to(&out2, bob2()).len(), 1, "ACK to the failed branch");
        upstream.extend(to(&out2, alice()).iter().filter_map(|t| status(t)));
        assert_eq!(upstream.len(), 1, "one final upstream: {upstream:?}");
        let deletes = rec.calls.iter().filter(|c| c.0 == MediaOp::Delete).count();
        (upstream[0], deletes)
    }
    assert_eq!(run((503, "Unavailable"), (486, "Busy Here")), (486, 1));
    assert_eq!(
        run((486, "Busy Here"), (404, "Not Found")).0,
        486,
        "same class: first"
    );
    assert_eq!(run((302, "Moved"), (404, "Not Found")).0, 302);
    assert_eq!(
        run((503, "A"), (503, "B")).0,
        500,
        "503 is not forwarded as such"
    );
}

/// 6xx wins, and cancels the other branch at once.
#[test]
fn a_6xx_cancels_the_other_branch_and_wins() {
    let (mut p, b1, b2) = forked_call("six", None, &mut NoMedia);
    let (u1, u2) = bobs();
    feed(&mut p, &u2.respond(&b2, 180), bob2(), 5 * MS, &mut NoMedia);
    let out = feed(&mut p, &u1.respond(&b1, 603), bob(), 10 * MS, &mut NoMedia);
    assert_eq!(method(to(&out, bob2())[0]).as_deref(), Some("CANCEL"));
    let out = feed(&mut p, &u2.respond(&b2, 487), bob2(), 20 * MS, &mut NoMedia);
    assert_eq!(status(to(&out, alice())[0]), Some(603));
}
