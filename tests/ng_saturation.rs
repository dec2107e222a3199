//! ng replies stay fast while a flood of media hits the relay (issue 3: every ping answered,
//! p99 under 5 ms), in the two situations a flood meets:
//! - the user-space workers saturated (`--no-kernel-forwarding`, so the worker must read
//!   every packet and cannot: the kernel drops the rest at the socket);
//! - the default start, where the latched calls are relayed by the in-kernel fast path.
//!
//! In its own test binary so no other test shares the CPU with the measurement; the two cases
//! take turns (a lock), never overlap.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kernel::cannot_run;
use common::media::{count_rx, media_sock, pcmu, wait_for};
use common::ng::{client, find_int, ng, relay_port, sdp, start_relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

/// The two cases measure one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const CALLS: usize = 10;
const PINGS: usize = 400;

/// Opens `CALLS` calls on the relay, both sides on sockets of ours; returns each side's
/// socket with the relay address it sends to.
fn calls(c: &mut NgClient, tag: &str) -> Vec<(UdpSocket, SocketAddr)> {
    let mut targets = Vec::new();
    for i in 0..CALLS {
        let a = media_sock();
        let b = media_sock();
        let id = format!("{tag}-{i}");
        let o = ng(
            c,
            &format!("{tag}o{i}"),
            &Owned::dict()
                .with("sdp", sdp(a.local_addr().unwrap().port(), 1).as_str())
                .with("call-id", id.as_str())
                .with("from-tag", "x")
                .with("command", "offer"),
        );
        let to_b = relay_port(o.get("sdp").and_then(Owned::as_str).unwrap());
        let an = ng(
            c,
            &format!("{tag}a{i}"),
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
    targets
}

/// What a flood did: packets sent, the ping round trips (all answered, sorted).
struct Flood {
    sent: u64,
    rtts: Vec<Duration>,
}

impl Flood {
    fn p50(&self) -> Duration {
        self.rtts[self.rtts.len() / 2]
    }
    fn p99(&self) -> Duration {
        self.rtts[self.rtts.len() * 99 / 100]
    }
}

/// Blaster threads, all on the worker's core: each gets about as much of that core as the
/// worker, and a packet costs a blaster one send where it costs the worker a receive and a
/// send, so the worker is offered several times what it can read: saturated by construction,
/// not by how fast this machine happens to be.
const BLASTERS: usize = 3;

/// Blasts RTP into every call from `BLASTERS` threads on the core of the relay's one
/// data-plane worker (`--num-threads 1` pins it to the first core), while this thread, which
/// plays the SIP proxy (on a real deployment another host), pings the ng port every 10 ms,
/// `PINGS` times, on the other core. Each ping must be answered.
fn flood_and_ping(c: &mut NgClient, tag: &str, targets: Vec<(UdpSocket, SocketAddr)>) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let worker_core = core_affinity::get_core_ids()
        .and_then(|ids| ids.first().copied())
        .expect("core ids");
    let targets = Arc::new(targets);
    let blasters: Vec<_> = (0..BLASTERS)
        .map(|k| {
            let stop = stop.clone();
            let targets = targets.clone();
            std::thread::spawn(move || {
                core_affinity::set_for_current(worker_core);
                let pkt = pcmu(1000 + k as u16, 5);
                let mut sent = 0u64;
                let deadline = Instant::now() + Duration::from_secs(8);
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    for (s, to) in targets.iter() {
                        if s.send_to(&pkt, *to).is_ok() {
                            sent += 1;
                        }
                    }
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let rtts = ping_round(c, tag);
    stop.store(true, Relaxed);
    let sent = blasters
        .into_iter()
        .map(|b| b.join().expect("blaster"))
        .sum();
    Flood { sent, rtts }
}

/// Pings the ng port every 10 ms, `PINGS` times; every ping must be answered. The round trips,
/// sorted.
fn ping_round(c: &mut NgClient, tag: &str) -> Vec<Duration> {
    // This thread stands in for the SIP proxy on another host: give it the short scheduler
    // slice the relay's control threads have, so that on a loaded machine the round trip
    // measures the relay more than how long this thread waits for a core to read the reply.
    rtpanchor::dataplane::prioritize_control_thread();
    let mut rtts = Vec::with_capacity(PINGS);
    for i in 0..PINGS {
        let t = Instant::now();
        let r = ng(
            c,
            &format!("{tag}p{i}"),
            &Owned::dict().with("command", "ping"),
        );
        rtts.push(t.elapsed());
        assert_eq!(r.get("result").and_then(Owned::as_str), Some("pong"));
        std::thread::sleep(Duration::from_millis(10));
    }
    rtts.sort();
    rtts
}

/// Round trips before the flood above this mean the machine is busy with other work.
const QUIET_P99: Duration = Duration::from_millis(1);

/// The goal: ping p99 under 5 ms while the flood runs. A round trip also measures this
/// machine, so the pings before the flood are the precondition, measured in the same run and
/// reported: with their p99 under 1 ms (an otherwise idle machine, as in CI: about 0.5 ms
/// here) the flood's p99 must stay under 5 ms; where other work already makes the pings
/// slower without any flood, the goal cannot be told apart from that noise, and the test says
/// so instead of asserting it (every ping must still have been answered).
fn check_latency(flood: &Flood, quiet: &[Duration], what: &str) {
    let quiet_p99 = quiet[quiet.len() * 99 / 100];
    if quiet_p99 > QUIET_P99 {
        eprintln!(
            "{what}: NOT MEASURED: this machine is busy (ping p99 {quiet_p99:?} before the \
             flood, over {QUIET_P99:?}); p99 {:?} during the flood is not held to 5 ms",
            flood.p99()
        );
        return;
    }
    assert!(
        flood.p99() < Duration::from_millis(5),
        "{what}: ping p99 {:?} during the flood ({quiet_p99:?} before it)",
        flood.p99()
    );
}

/// `statistics` with a fresh cookie (the relay answers a repeated cookie from its cache).
fn statistic(c: &mut NgClient, cookie: &str, key: &str) -> i64 {
    let st = ng(c, cookie, &Owned::dict().with("command", "statistics"));
    find_int(&st, key).unwrap_or_else(|| panic!("statistics without {key}: {st}"))
}

#[test]
fn pings_stay_fast_while_the_user_space_data_plane_is_saturated() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The premise: every packet must go through the one user-space worker.
    let relay = start_relay(21303, 26000, "auto", &["--no-kernel-forwarding"]);
    let mut c = client(relay.ng);
    let targets = calls(&mut c, "sat");
    let quiet = ping_round(&mut c, "satq");
    let flood = flood_and_ping(&mut c, "sat", targets);
    std::thread::sleep(Duration::from_millis(300)); // the worker drains its socket queues
    let received = statistic(&mut c, "st", "rx_packets");
    let in_kernel = statistic(&mut c, "st2", "kernel_forwarded");
    eprintln!(
        "user space saturated: {} packets sent, {received} read by the relay; ping p50 {:?} p99 {:?}",
        flood.sent,
        flood.p50(),
        flood.p99()
    );
    assert_eq!(
        in_kernel, 0,
        "--no-kernel-forwarding: nothing in the kernel"
    );
    assert!(
        flood.sent > 50_000,
        "the blaster must really load the relay ({})",
        flood.sent
    );
    // Saturated: the worker read well under what arrived; the kernel dropped the rest.
    assert!(
        (received as u64) < flood.sent * 9 / 10,
        "the data plane kept up ({received} of {} read): not saturated",
        flood.sent
    );
    check_latency(&flood, &quiet, "user space saturated");
}

#[test]
fn pings_stay_fast_while_the_kernel_path_relays_a_flood() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The default start: the in-kernel fast path on where it can run.
    let relay = start_relay(21306, 27000, "auto", &[]);
    let mut c = client(relay.ng);
    let targets = calls(&mut c, "kfl");
    // Latch every side (a few packets each way, each received), so the calls can go to the
    // kernel; then wait until all 20 directions are there: the flood meets the kernel path.
    for (s, to) in &targets {
        for seq in 0..5 {
            s.send_to(&pcmu(seq, 5), *to).expect("send");
        }
    }
    for (s, _) in &targets {
        assert_eq!(count_rx(s, 5, Duration::from_secs(3)), 5, "latching round");
    }
    let why_not = cannot_run();
    let mut asked = 0;
    let handed = wait_for(Duration::from_secs(5), || {
        asked += 1;
        statistic(&mut c, &format!("ks{asked}"), "kernel_streams") == 2 * CALLS as i64
    });
    match &why_not {
        Some(why) => {
            assert!(
                !handed,
                "cannot run here ({why}), yet streams were handed over"
            );
            eprintln!("kernel path cannot run here ({why}): the flood meets the user-space path");
        }
        None => assert!(
            handed,
            "the latched calls did not go to the kernel within 5 s"
        ),
    }
    let before = statistic(&mut c, "kb", "kernel_forwarded");
    let quiet = ping_round(&mut c, "kflq");
    let flood = flood_and_ping(&mut c, "kfl", targets);
    // The kernel's figures reach the statistics once a second.
    let mut grew = 0;
    wait_for(Duration::from_secs(4), || {
        asked += 1;
        grew = statistic(&mut c, &format!("ka{asked}"), "kernel_forwarded") - before;
        why_not.is_some() || grew as u64 >= flood.sent * 9 / 10
    });
    eprintln!(
        "kernel path: {} packets sent, {grew} relayed in the kernel; ping p50 {:?} p99 {:?}",
        flood.sent,
        flood.p50(),
        flood.p99()
    );
    assert!(
        flood.sent > 50_000,
        "the blaster must really load the relay ({})",
        flood.sent
    );
    if why_not.is_none() {
        assert!(
            grew as u64 >= flood.sent * 9 / 10,
            "the kernel relayed {grew} of {} flood packets",
            flood.sent
        );
    }
    check_latency(&flood, &quiet, "kernel path");
}
