//! Issue 17's presence benchmark, through the sans-IO proxy (no sockets): 10,000
//! presentities with 5 watchers each. Measures the heap each subscription holds once its
//! transactions are gone (dhat's counters) and how many NOTIFYs a second the proxy turns
//! out when every presentity publishes a change (each answered 200, as a phone would).
//! Ignored by default (a measurement, not a check): run with
//! `cargo test --test presence_load -- --ignored --nocapture` (the heap figure is the same in
//! a debug build; the rate is not). With `PRESENCE_LOAD_PERSIST=1` the presence records are
//! kept as with a state store: recorded on every change and taken (serialised) every
//! 200 PUBLISHes, about what the server's 100 ms flush takes at these rates, under the same
//! lock; the store's writing happens on a thread of its own and is not in the figure.

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::presence::PresenceConfig;
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::Transmit;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PRESENTITIES: usize = 10_000;
const WATCHERS: usize = 5;

fn watcher(w: usize) -> SocketAddr {
    addr(&format!("127.0.0.{}:5070", w + 2))
}

fn subscribe(user: usize, w: usize) -> Vec<u8> {
    let src = watcher(w);
    format!(
        "SUBSCRIBE sip:u{user}@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bKs{user}x{w}\r\n\
Max-Forwards: 70\r\n\
From: <sip:w{w}@example.com>;tag=w{w}\r\n\
To: <sip:u{user}@example.com>\r\n\
Call-ID: s{user}x{w}\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:w{w}@{src}>\r\n\
Event: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Round `round`'s PUBLISH of `user`: a new transaction each round, and a status that
/// changes every round (otherwise nothing is NOTIFYed).
fn publish(user: usize, round: usize) -> Vec<u8> {
    let basic = if round % 2 == 0 { "open" } else { "closed" };
    let cseq = round + 1;
    let body = format!(
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:u{user}@example.com\">\
<tuple id=\"t\"><status><basic>{basic}</basic></status></tuple></presence>"
    );
    format!(
        "PUBLISH sip:u{user}@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKp{user}r{round}\r\n\
Max-Forwards: 70\r\n\
From: <sip:u{user}@example.com>;tag=p{user}\r\n\
To: <sip:u{user}@example.com>\r\n\
Call-ID: p{user}\r\n\
CSeq: {cseq} PUBLISH\r\n\
Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers every NOTIFY in `out` with 200; returns how many there were.
fn answer_all(p: &mut Proxy, out: &[Transmit], now: u64) -> usize {
    let ua = Uas::new(watcher(0), "x", "sip:x@127.0.0.1");
    let mut n = 0;
    for t in out
        .iter()
        .filter(|t| method(t).as_deref() == Some("NOTIFY"))
    {
        n += 1;
        let r = p.handle_incoming(
            &ua.respond(&t.bytes, 200),
            t.to,
            rtpanchor::sip::transport::Transport::Udp,
            now,
            &mut NoMedia,
        );
        assert!(r.is_empty());
    }
    n
}

#[test]
#[ignore]
fn ten_thousand_presentities_five_watchers_each() {
    let profiler = dhat::Profiler::builder().testing().build();
    let mut cfg = config();
    cfg.presence = Some(PresenceConfig::new(proxy_addr()));
    let mut p = proxy_with(cfg);
    let persist = std::env::var_os("PRESENCE_LOAD_PERSIST").is_some_and(|v| v == "1");
    if persist {
        p.restore_presence(&[], 0, 0).unwrap();
    }
    let before = dhat::HeapStats::get().curr_bytes;
    let mut now = 0;
    let mut notifies = 0;
    for u in 0..PRESENTITIES {
        for w in 0..WATCHERS {
            let out = p.handle_incoming(
                &subscribe(u, w),
                watcher(w),
                rtpanchor::sip::transport::Transport::Udp,
                now,
                &mut NoMedia,
            );
            notifies += answer_all(&mut p, &out, now);
        }
        now += 10_000;
    }
    assert_eq!(notifies, PRESENTITIES * WATCHERS);
    // Let every transaction end (Timers J and K), so only the subscriptions remain.
    now += 40 * SEC;
    p.handle_timeout(now, &mut NoMedia);
    let records = p.take_presence_records(0).len();
    if persist {
        assert_eq!(records, PRESENTITIES * WATCHERS);
    }
    assert_eq!(
        p.stats().server_transactions + p.stats().client_transactions,
        0
    );
    let subs = p.presence().unwrap().stats().subscriptions;
    assert_eq!(subs, PRESENTITIES * WATCHERS);
    let held = dhat::HeapStats::get().curr_bytes.saturating_sub(before);
    println!(
        "subscriptions {subs}: heap {held} bytes, {} bytes per subscription",
        held / subs
    );

    // The allocator only counts while profiling: time the rest without it.
    drop(profiler);
    // Every presentity publishes: 200 + a NOTIFY to each watcher, each answered; three
    // rounds (40 s apart, past the NOTIFY rate limit and the transactions' ends), the
    // median reported.
    let mut rates = Vec::new();
    for round in 0..3 {
        // The previous round's transactions end first (Timers J and K), as they would in
        // the time between two changes of everyone's status.
        now += 40 * SEC;
        p.handle_timeout(now, &mut NoMedia);
        let start = rtpanchor::time::now_ns();
        let mut sent = 0;
        let mut taken = 0;
        for u in 0..PRESENTITIES {
            let out = p.handle_incoming(
                &publish(u, round),
                addr("127.0.0.1:5061"),
                rtpanchor::sip::transport::Transport::Udp,
                now,
                &mut NoMedia,
            );
            assert_eq!(status(&out[0]), Some(200));
            sent += answer_all(&mut p, &out, now);
            now += 1_000;
            if persist && u % 200 == 199 {
                taken += p.take_presence_records(0).len();
            }
        }
        let secs = rtpanchor::time::now_ns().saturating_sub(start) as f64 / 1e9;
        assert_eq!(sent, PRESENTITIES * WATCHERS);
        if persist {
            // Each PUBLISH changes its presentity and each NOTIFY its subscription.
            assert_eq!(taken, PRESENTITIES * (WATCHERS + 1));
        }
        let rate = sent as f64 / secs;
        println!(
            "persist={persist}: {sent} NOTIFYs (with {PRESENTITIES} PUBLISHes and the 200s to the NOTIFYs) in {secs:.3} s: {rate:.0} NOTIFYs/s"
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("persist={persist}: median {:.0} NOTIFYs/s", rates[1]);
}
