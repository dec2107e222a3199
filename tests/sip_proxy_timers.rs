//! The sans-IO proxy's timers on a fake clock (RFC 3261 §17): Timers A/B and E/F with the
//! 408 that follows, Timer G until the ACK, how long finished transactions linger, and
//! `poll_timeout`.

// Shared with the other integration tests; this one uses the SIP kit.
#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;

#[test]
fn timer_a_retransmits_then_b_gives_408() {
    let mut rec = Rec::default();
    let (mut p, a, inv) = call_to_bob(&mut rec, None);
    let mut sent = Vec::new();
    let mut now = 0;
    while now < 31 * SEC {
        now += 50 * MS;
        for t in tick(&mut p, now, &mut rec) {
            assert_eq!(t.to, bob());
            assert_eq!(t.bytes, inv, "retransmission is the same request");
            sent.push(now);
        }
    }
    // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s after sending; the last one is past 31 s.
    assert_eq!(
        sent,
        vec![500 * MS, 1500 * MS, 3500 * MS, 7500 * MS, 15500 * MS]
    );
    let out = tick(&mut p, 31_500 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    let out = tick(&mut p, 32 * SEC, &mut rec);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(408)));
    assert!(msg(&out[0]).to_tag().is_some());
    assert_eq!(p.stats().timeouts, 1);
    // Timer G retransmits the 408 until the ACK comes; the ACK is absorbed.
    let out = tick(&mut p, 32 * SEC + 500 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(408));
    let ack = a.ack_failure(&out[0].bytes);
    let out = feed(&mut p, &ack, alice(), 33 * SEC, &mut rec);
    assert!(out.is_empty(), "ACK of a non-2xx is absorbed");
    assert!(
        tick(&mut p, 34 * SEC, &mut rec).is_empty(),
        "no more Timer G"
    );
}

#[test]
fn non_invite_timer_e_then_f_gives_408() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let m = Uac::alice("msg1").request("MESSAGE", "");
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1, "no 100 for non-INVITE");
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("MESSAGE"))
    );
    let mut sent = Vec::new();
    let mut now = 0;
    while now < 31_900 * MS {
        now += 100 * MS;
        for t in tick(&mut p, now, &mut NoMedia) {
            assert_eq!(t.to, bob());
            sent.push(now / MS);
        }
    }
    // Timer E: 0.5, 1, 2, 4, 4, 4... (capped at T2).
    assert_eq!(&sent[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
    let out = tick(&mut p, 32 * SEC, &mut NoMedia);
    let fin: Vec<_> = out.iter().filter(|t| t.to == alice()).collect();
    assert_eq!(fin.len(), 1);
    assert_eq!(status(fin[0]), Some(408));
    // A retransmitted MESSAGE gets the 408 again from the server transaction.
    let out = feed(&mut p, &m, alice(), 33 * SEC, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(408));
}

/// Finished transactions linger 64·T1 (Timer J) normally and T4 once half the transaction
/// cap is taken; a retransmission inside the window is absorbed either way.
#[test]
fn finished_transactions_linger_shorter_under_pressure() {
    // (cap, expected lifetime of the REGISTER's server transaction)
    for (cap, lifetime) in [(100, 32_000 * MS), (2, 5_000 * MS)] {
        let mut c = config();
        c.max_transactions = cap;
        let mut p = proxy_with(c);
        register_bob(&mut p);
        assert_eq!(p.stats().server_transactions, 1, "cap {cap}");
        // A retransmission just inside the window is answered from the transaction.
        let again = register_bytes(
            "bob",
            &["sip:bob@127.0.0.1:5062"],
            "127.0.0.1:5062",
            "reg-bob",
            1,
        );
        tick(&mut p, lifetime - MS, &mut NoMedia);
        let out = feed(&mut p, &again, bob(), lifetime - MS, &mut NoMedia);
        assert_eq!(out.len(), 1, "cap {cap}");
        assert_eq!(p.stats().retransmissions_absorbed, 1, "cap {cap}");
        assert_eq!(p.stats().server_transactions, 1, "cap {cap}");
        tick(&mut p, lifetime, &mut NoMedia);
        assert_eq!(p.stats().server_transactions, 0, "cap {cap}");
        assert_eq!(p.stats().short_lingers, u64::from(cap == 2), "cap {cap}");
    }
}

#[test]
fn poll_timeout_tracks_the_next_timer() {
    let mut rec = Rec::default();
    let (p, _, _) = call_to_bob(&mut rec, None);
    let next = p.poll_timeout().unwrap();
    assert!(next <= 500 * MS, "Timer A at T1: {next}");
}
