//! ng replies stay fast while the data plane is saturated (issue 3: every ping answered, p99
//! under 5 ms). In its own test binary so no other test shares the CPU with the measurement.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ng::{client, media_sock, ng, relay_port, rtp, sdp, start_relay};
use rtpanchor::control::bencode::Owned;

#[test]
fn pings_stay_fast_while_the_data_plane_is_saturated() {
    let relay = start_relay(21303, 26000, "auto", &[]);
    let c = client();
    // Ten calls, both sides on our sockets.
    let mut targets = Vec::new();
    for i in 0..10 {
        let a = media_sock();
        let b = media_sock();
        let id = format!("sat-{i}");
        let o = ng(
            &c,
            relay.ng,
            &format!("so{i}"),
            &Owned::dict()
                .with("sdp", sdp(a.local_addr().unwrap().port(), 1).as_str())
                .with("call-id", id.as_str())
                .with("from-tag", "x")
                .with("command", "offer"),
        );
        let to_b = relay_port(o.get("sdp").and_then(Owned::as_str).unwrap());
        let an = ng(
            &c,
            relay.ng,
            &format!("sa{i}"),
            &Owned::dict()
                .with("sdp", sdp(b.local_addr().unwrap().port(), 2).as_str())
                .with("call-id", id.as_str())
                .with("from-tag", "x")
                .with("to-tag", "y")
                .with("command", "answer"),
        );
        let to_a = relay_port(an.get("sdp").and_then(Owned::as_str).unwrap());
        targets.push((a, SocketAddr::from(([127, 0, 0, 1], to_a))));
        targets.push((b, SocketAddr::from(([127, 0, 0, 1], to_b))));
    }
    // Blast from another thread, as fast as one core sends, on the core of the relay's one
    // data-plane worker (`--num-threads 1` pins it to the first core): the worker then gets at
    // most half a core for a flood that needs several, so the data plane is saturated (checked
    // below), while the blaster, which stands in for the network, does not also take the
    // other core from the relay's control thread and from this test's pinging thread (which
    // plays the SIP proxy, on a real deployment another host).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let worker_core = core_affinity::get_core_ids()
        .and_then(|ids| ids.first().copied())
        .expect("core ids");
    let blaster = std::thread::spawn(move || {
        core_affinity::set_for_current(worker_core);
        let pkt = rtp(1, 5);
        let mut sent = 0u64;
        let deadline = Instant::now() + Duration::from_secs(6);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            for (s, to) in &targets {
                let _ = s.send_to(&pkt, *to);
                sent += 1;
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut rtts = Vec::new();
    for i in 0..400 {
        let t = Instant::now();
        let r = ng(
            &c,
            relay.ng,
            &format!("sp{i}"),
            &Owned::dict().with("command", "ping"),
        );
        rtts.push(t.elapsed());
        assert_eq!(r.get("result").and_then(Owned::as_str), Some("pong"));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = blaster.join().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the worker drains its socket queues
    let st = ng(
        &c,
        relay.ng,
        "st",
        &Owned::dict().with("command", "statistics"),
    );
    let received = common::ng::find_int(&st, "rx_packets").expect("dataplane rx_packets");
    rtts.sort();
    let p99 = rtts[rtts.len() * 99 / 100];
    eprintln!(
        "saturation: {sent} packets sent, {received} read by the relay; ping p50 {:?} p99 {p99:?}",
        rtts[rtts.len() / 2]
    );
    assert!(
        sent > 50_000,
        "the blaster must really load the relay ({sent})"
    );
    // Saturated: the worker read well under what arrived; the kernel dropped the rest.
    assert!(
        (received as u64) < sent * 9 / 10,
        "the data plane kept up ({received} of {sent} read): not saturated"
    );
    assert!(
        p99 < Duration::from_millis(5),
        "ping p99 {p99:?} under load"
    );
}
