//! The sans-IO proxy on bad input and under load: malformed messages answered or dropped,
//! the transaction cap's 503, the RFC 4475 semantic cases, and no panic on the torture
//! corpus cut at every few bytes or with flipped bits.

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use std::path::Path;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::{Transmit, Transport};

#[test]
fn malformed_input_is_answered_or_dropped() {
    let mut p = new_proxy();
    // 400 with the message layer's reason phrase.
    let bad = String::from_utf8(Uac::alice("bad").invite(None))
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    let out = feed(&mut p, bad.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert!(text(&out[0]).starts_with("SIP/2.0 400 Bad Request - CSeq method does not match"));
    // Garbage and bad responses: dropped, counted.
    assert!(feed(&mut p, b"\x00\x01garbage", alice(), 0, &mut NoMedia).is_empty());
    assert!(feed(
        &mut p,
        b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
        alice(),
        0,
        &mut NoMedia
    )
    .is_empty());
    // A response not for us (top Via is someone else's): dropped.
    let stray = Uas::new(bob(), "t", "sip:bob@127.0.0.1:5062")
        .respond(&Uac::alice("stray").invite(None), 180);
    assert!(feed(&mut p, &stray, bob(), 0, &mut NoMedia).is_empty());
    let s = p.stats();
    assert!(s.parse_errors >= 1);
    assert!(s.dropped >= 2);
    assert_eq!(s.rejected, 1);
}

/// Regression (fuzzing, issue 21): a Via naming port 0 (or `rport=0`) is malformed, and the
/// 400 goes to where the request came from, never to port 0.
#[test]
fn a_via_with_port_zero_is_answered_at_the_source() {
    for via in [
        "SIP/2.0/UDP a:0",
        "SIP/2.0/UDP a;rport=0",
        "SIP/2.0/UDP 127.0.0.1:0;branch=z9hG4bKp0",
    ] {
        let mut p = new_proxy();
        let msg = format!("OPTIONS sip:x SIP/2.0\r\nVia: {via}\r\n\r\n");
        let out = feed(&mut p, msg.as_bytes(), alice(), 0, &mut NoMedia);
        assert_eq!(out.len(), 1, "{via}: one answer");
        assert!(
            text(&out[0]).starts_with("SIP/2.0 400"),
            "{via}: {}",
            text(&out[0])
        );
        assert_eq!(out[0].to, alice(), "{via}: answered at the source");
    }
}

#[test]
fn overload_gets_503_retry_after() {
    let mut c = config();
    c.max_transactions = 2;
    let mut p = proxy_with(c);
    register_bob(&mut p);
    // The REGISTER's server transaction is live (Timer J) and the INVITE adds two more.
    let out = feed(
        &mut p,
        &Uac::alice("o1").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(out.len(), 2);
    let out = feed(
        &mut p,
        &Uac::alice("o2").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(503));
    assert!(msg(&out[0]).header_by_name("Retry-After").is_some());
    assert_eq!(p.stats().overload_rejects, 1);
}

#[test]
fn rfc4475_semantic_cases_through_the_proxy() {
    let mut p = new_proxy();
    let mut st = |name: &str| {
        let out = feed(&mut p, &rfc4475(name), alice(), 0, &mut NoMedia);
        out.iter()
            .map(|t| status(t).unwrap_or(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(st("insuf"), vec![400]);
    assert_eq!(st("unkscm"), vec![416]);
    assert_eq!(st("bext01"), vec![420]);
    assert_eq!(st("mismatch01"), vec![400]);
    assert_eq!(st("badvers"), vec![505]);
    assert_eq!(st("multi01"), vec![400]);
    assert!(st("bigcode").is_empty());
    assert!(st("scalarlg").is_empty());
    // bcast (§3.1.4.10): a 200 whose next Via is the broadcast address is never sent there.
    let mut c = config();
    c.local = addr("192.0.2.198:5060");
    let mut p2 = proxy_with(c);
    let out = feed(&mut p2, &rfc4475("bcast"), alice(), 0, &mut NoMedia);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn no_panics_on_the_torture_corpus_and_truncations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut p = new_proxy();
    register_bob(&mut p);
    let mut rec = Rec::default();
    let mut now = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("dat") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        for cut in (0..=data.len()).step_by(7) {
            now += MS;
            for tr in [Transport::Udp, Transport::Tcp] {
                let out = p.handle_incoming(&data[..cut], alice(), tr, now, &mut rec);
                check(out);
            }
        }
    }
    let mut rec2 = Rec::default();
    let (mut p2, _, inv) = call_to_bob(&mut rec2, None);
    for cut in 0..inv.len() {
        let mut v = inv.clone();
        v[cut] ^= 0x20;
        check(p2.handle_incoming(&v, bob(), Transport::Udp, 0, &mut rec2));
        check(p2.handle_incoming(&v[..cut], bob(), Transport::Udp, 0, &mut rec2));
    }
    // Timers drain everything.
    check(p.handle_timeout(now + 400 * SEC, &mut rec));
    check(p.handle_timeout(now + 800 * SEC, &mut rec));
    assert_eq!(
        p.stats().server_transactions + p.stats().client_transactions,
        0
    );
}

/// Alice's INVITE `id`, admitted: the call and the copy forwarded to bob.
fn admitted_invite(p: &mut Proxy, id: &str, now: u64) -> (Uac, Transmit) {
    let mut call = Uac::alice(id);
    let out = feed(p, &call.invite(None), alice(), now, &mut NoMedia);
    let mut fwd: Vec<Transmit> = to(&out, bob()).into_iter().cloned().collect();
    assert_eq!(fwd.len(), 1, "call {id} was not admitted: {out:?}");
    (call, fwd.remove(0))
}

/// One call through the proxy, set up and torn down; its transactions then linger.
fn call_and_hang_up(p: &mut Proxy, id: &str, now: u64) {
    let (mut call, fwd) = admitted_invite(p, id, now);
    let ok = Uas::bob().respond(&fwd.bytes, 200);
    let out = feed(p, &ok, bob(), now + 1_000, &mut NoMedia);
    call.learn(&to(&out, alice())[0].bytes);
    feed(p, &call.ack(None), alice(), now + 2_000, &mut NoMedia);
    let out = feed(p, &call.bye(), alice(), now + 3_000, &mut NoMedia);
    let bye: Vec<_> = to(&out, bob()).into_iter().cloned().collect();
    assert_eq!(bye.len(), 1, "call {id}: BYE not forwarded");
    let ok = Uas::bob().respond(&bye[0].bytes, 200);
    feed(p, &ok, bob(), now + 4_000, &mut NoMedia);
}

#[test]
fn finished_transactions_that_linger_do_not_count_towards_the_overload_mark() {
    let mut c = config();
    c.invite_high_water = 2;
    let mut p = proxy_with(c);
    register_bob(&mut p);
    // Twenty calls set up and torn down: their INVITE (Timer L) and BYE (Timer J) server
    // transactions linger for 32 s, far more than the mark, yet each new call is admitted.
    for i in 0..20u64 {
        call_and_hang_up(&mut p, &format!("c{i}"), i * 10_000_000);
    }
    assert_eq!(p.stats().overload_invites_refused, 0);
    assert!(
        p.stats().server_transactions >= 20,
        "the finished transactions still linger: {:?}",
        p.stats()
    );
}

#[test]
fn near_the_cap_new_invites_are_refused_statelessly_and_admitted_calls_keep_the_reserve() {
    let mut c = config();
    c.max_transactions = 100;
    c.invite_high_water = 1_000;
    let mut p = proxy_with(c);
    register_bob(&mut p);
    // A call admitted and answered, not hung up yet.
    let (mut admitted, fwd) = admitted_invite(&mut p, "adm", 0);
    let ok = Uas::bob().respond(&fwd.bytes, 200);
    let out = feed(&mut p, &ok, bob(), 1_000, &mut NoMedia);
    admitted.learn(&to(&out, alice())[0].bytes);
    feed(&mut p, &admitted.ack(None), alice(), 2_000, &mut NoMedia);
    // Finished calls' lingering transactions (up to 6 per call) fill the cap up to its
    // reserve (90 of 100).
    let live = |p: &Proxy| p.stats().server_transactions + p.stats().client_transactions;
    let mut n = 0u64;
    while live(&p) < 90 {
        assert!(n < 40, "the table never filled: {:?}", p.stats());
        call_and_hang_up(&mut p, &format!("fill{n}"), 10_000 + n * 10_000);
        n += 1;
    }
    assert!(live(&p) < 98, "no room left for the BYE: {:?}", p.stats());
    // A new INVITE: 503 + Retry-After at once, no transaction made for it.
    let before = p.stats();
    let mut refused = Uac::alice("ref");
    let inv = refused.invite(None);
    let out = feed(&mut p, &inv, alice(), 500_000, &mut NoMedia);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0]), Some(503));
    assert!(msg(&out[0]).header_by_name("Retry-After").is_some());
    assert_eq!(
        (p.stats().server_transactions, p.stats().client_transactions),
        (before.server_transactions, before.client_transactions),
        "a transaction was made for the refused INVITE"
    );
    assert_eq!(
        p.stats().overload_invites_refused,
        before.overload_invites_refused + 1
    );
    let tag = msg(&out[0]).to_tag().map(str::to_owned);
    // Its retransmission gets the same answer, with the same To tag.
    let again = feed(&mut p, &inv, alice(), 600_000, &mut NoMedia);
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0]), Some(503));
    assert_eq!(msg(&again[0]).to_tag().map(str::to_owned), tag);
    // Its ACK is recognised and absorbed, not routed to bob.
    let forwarded = p.stats().forwarded_requests;
    assert!(feed(
        &mut p,
        &refused.ack_failure(&out[0].bytes),
        alice(),
        700_000,
        &mut NoMedia
    )
    .is_empty());
    assert_eq!(p.stats().forwarded_requests, forwarded);
    // The admitted call still hangs up through the reserve.
    let out = feed(&mut p, &admitted.bye(), alice(), 800_000, &mut NoMedia);
    assert_eq!(
        method(to(&out, bob())[0]).as_deref(),
        Some("BYE"),
        "{out:?}"
    );
}

#[test]
fn overload_control_refuses_new_invites_and_admitted_calls_complete() {
    let mut c = config();
    c.invite_high_water = 2;
    let mut p = proxy_with(c);
    register_bob(&mut p);
    // Below the mark (the REGISTER's finished transaction lingers but is not at work, so
    // it does not count): admitted and forwarded.
    let (mut admitted, fwd) = admitted_invite(&mut p, "adm", 0);
    // At the mark: a new INVITE gets 503 + Retry-After and goes nowhere.
    let mut refused = Uac::alice("ref");
    let inv = refused.invite(None);
    let out = feed(&mut p, &inv, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0]), Some(503));
    let ra = msg(&out[0])
        .header_by_name("Retry-After")
        .map(|h| h.value.to_owned());
    assert_eq!(ra.as_deref(), Some("5"));
    // Its retransmission is absorbed by the transaction: the same 503 again, nothing new.
    let before = p.stats();
    let out = feed(&mut p, &inv, alice(), 1_000_000, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(503));
    assert_eq!(
        p.stats().retransmissions_absorbed,
        before.retransmissions_absorbed + 1
    );
    assert_eq!(p.stats().overload_invites_refused, 1);
    assert_eq!(p.stats().forwarded_requests, before.forwarded_requests);
    // The ACK of the 503 is absorbed too.
    assert!(feed(
        &mut p,
        &refused.ack_failure(&out[0].bytes),
        alice(),
        2_000_000,
        &mut NoMedia
    )
    .is_empty());
    // The admitted call completes: bob's 200 reaches alice, her ACK and BYE reach bob.
    let ok = Uas::bob().respond(&fwd.bytes, 200);
    let out = feed(&mut p, &ok, bob(), 3_000_000, &mut NoMedia);
    let to_alice = to(&out, alice());
    assert_eq!(to_alice.len(), 1);
    assert_eq!(status(to_alice[0]), Some(200));
    admitted.learn(&to_alice[0].bytes);
    let out = feed(
        &mut p,
        &admitted.ack(None),
        alice(),
        4_000_000,
        &mut NoMedia,
    );
    assert_eq!(method(to(&out, bob())[0]).as_deref(), Some("ACK"));
    let out = feed(&mut p, &admitted.bye(), alice(), 5_000_000, &mut NoMedia);
    assert_eq!(method(to(&out, bob())[0]).as_deref(), Some("BYE"));
}

#[test]
fn shedding_refuses_new_invites_until_it_ends() {
    let mut p = new_proxy();
    register_bob(&mut p);
    p.set_shedding(true);
    let out = feed(
        &mut p,
        &Uac::alice("s1").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![Some(503)]);
    // Requests other than a new INVITE are still served.
    let out = feed(
        &mut p,
        &Uac::alice("s2").request("OPTIONS", ""),
        alice(),
        0,
        &mut NoMedia,
    );
    assert!(!out.iter().any(|t| status(t) == Some(503)), "{out:?}");
    p.set_shedding(false);
    let out = feed(
        &mut p,
        &Uac::alice("s3").invite(None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(to(&out, bob()).len(), 1, "{out:?}");
}
