//! Calls survive `kill -9`: a relay with `--redis` (a real `redis-server` started here) is
//! killed while 100 calls relay RTP both ways (a fifth of them NATed: the phone sends from
//! another port than its SDP names), and a new relay started with the same Redis restores
//! them on the same ports. Every stream's media gap is measured (< 1 s), NATed phones that
//! stay silent after the restart still get their media (the latched endpoint was restored,
//! not relearned), ng `query` counters continue from before, and `delete` frees every port.
//!
//! Port block 14000-14999: Redis 14000, ng 14001, NATed SDP ports 14010-14029 (never bound),
//! relay media 14200-14699, phones 14700-14899.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::media::pcmu;
use common::ng::{client, find_int, ng, relay_port, sdp};
use common::store::{redis_con, redis_keys, start_redis, CrashableRelay};
use common::TempDir;
use rtpanchor::control::bencode::Owned;
use rtpanchor::store::record::CallRecord;

const REDIS_PORT: u16 = 14000;
const NG_PORT: u16 = 14001;
const NAT_SDP_BASE: u16 = 14010;
const MEDIA_MIN: u16 = 14200;
const MEDIA_MAX: u16 = 14699;
const PHONE_A_BASE: u16 = 14700;
const PHONE_B_BASE: u16 = 14800;
const CALLS: usize = 100;
/// Every fifth call is NATed on side A.
const NAT_EVERY: usize = 5;
/// A relay port pair another program (this test) holds: a stored call on it cannot be
/// restored.
const BLOCKED_PORT: u16 = MEDIA_MAX - 1;
const GHOST: &str = "restore-ghost";
/// One packet per direction per stream this often.
const PACKET_INTERVAL: Duration = Duration::from_millis(40);

fn relay_args() -> Vec<String> {
    [
        "--interface",
        "127.0.0.1",
        "--port-min",
        &MEDIA_MIN.to_string(),
        "--port-max",
        &MEDIA_MAX.to_string(),
        "--no-sip",
        "--num-threads",
        "1",
        "--log-level",
        "info",
        "--redis",
        &format!("redis://127.0.0.1:{REDIS_PORT}/0"),
    ]
    .map(String::from)
    .to_vec()
}

fn redis_call_keys() -> usize {
    redis_keys(REDIS_PORT, "rtpanchor:call:*")
}

/// Stores a copy of call 0 under another Call-ID whose side A is on the port pair this test
/// holds (as if another program had taken it while the relay was down).
fn store_ghost_call() {
    let mut con = redis_con(REDIS_PORT);
    let json: String = redis::cmd("HGET")
        .arg(format!("rtpanchor:call:{}", call_id(0)))
        .arg("record")
        .query(&mut con)
        .unwrap();
    let mut rec = CallRecord::parse(&json).unwrap();
    rec.call_id = GHOST.into();
    let stream = rec.dialogues[0].media[0].stream.as_mut().unwrap();
    stream.a_port = BLOCKED_PORT;
    stream.b_port = BLOCKED_PORT - 2;
    let _: () = redis::cmd("HSET")
        .arg(format!("rtpanchor:call:{GHOST}"))
        .arg("record")
        .arg(rec.emit())
        .query(&mut con)
        .unwrap();
}

struct Phone {
    a: UdpSocket,
    b: UdpSocket,
    /// Relay ports A and B send to.
    to_a_side: SocketAddr,
    to_b_side: SocketAddr,
    nat: bool,
}

fn bind(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    s.set_nonblocking(true).unwrap();
    s
}

fn call_id(i: usize) -> String {
    format!("restore-{i}")
}

fn set_up(c: &mut rtpanchor::client::ng::NgClient, i: usize) -> Phone {
    let a = bind(PHONE_A_BASE + i as u16);
    let b = bind(PHONE_B_BASE + i as u16);
    let nat = i % NAT_EVERY == 0;
    let a_sdp_port = if nat {
        NAT_SDP_BASE + (i / NAT_EVERY) as u16
    } else {
        a.local_addr().unwrap().port()
    };
    let id = call_id(i);
    let offer = ng(
        c,
        &format!("o{i}"),
        &Owned::dict()
            .with("sdp", sdp(a_sdp_port, 1).as_str())
            .with("call-id", id.as_str())
            .with("from-tag", "ta")
            .with("command", "offer"),
    );
    let to_b = relay_port(offer.get("sdp").and_then(Owned::as_str).unwrap());
    let answer = ng(
        c,
        &format!("a{i}"),
        &Owned::dict()
            .with("sdp", sdp(b.local_addr().unwrap().port(), 2).as_str())
            .with("call-id", id.as_str())
            .with("from-tag", "ta")
            .with("to-tag", "tb")
            .with("command", "answer"),
    );
    let to_a = relay_port(answer.get("sdp").and_then(Owned::as_str).unwrap());
    Phone {
        a,
        b,
        to_a_side: SocketAddr::from(([127, 0, 0, 1], to_a)),
        to_b_side: SocketAddr::from(([127, 0, 0, 1], to_b)),
        nat,
    }
}

/// Per receiving socket (2 per call: A's, B's): packets and the longest gap between two
/// arrivals since `measure` was set.
#[derive(Clone, Copy, Default)]
struct Rx {
    packets: u64,
    last: Option<Instant>,
    max_gap: Duration,
}

fn traffic(
    phones: Arc<Vec<Phone>>,
    stop: Arc<AtomicBool>,
    nat_silent: Arc<AtomicBool>,
    rx: Arc<Mutex<Vec<Rx>>>,
) {
    let mut seq: u16 = 0;
    let mut buf = [0u8; 2048];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let silent = nat_silent.load(Ordering::Relaxed);
        for (i, p) in phones.iter().enumerate() {
            if !(p.nat && silent) {
                let _ = p.a.send_to(&pcmu(seq, 0xa000 + i as u32), p.to_a_side);
            }
            let _ = p.b.send_to(&pcmu(seq, 0xb000 + i as u32), p.to_b_side);
        }
        seq = seq.wrapping_add(1);
        next += PACKET_INTERVAL;
        // Drain until the next send time.
        loop {
            let mut got = false;
            let now = Instant::now();
            {
                let mut rx = rx.lock().unwrap();
                for (i, p) in phones.iter().enumerate() {
                    for (k, s) in [&p.a, &p.b].into_iter().enumerate() {
                        while s.recv_from(&mut buf).is_ok() {
                            got = true;
                            let r = &mut rx[2 * i + k];
                            r.packets += 1;
                            if let Some(l) = r.last {
                                r.max_gap = r.max_gap.max(now - l);
                            }
                            r.last = Some(now);
                        }
                    }
                }
            }
            if Instant::now() >= next {
                break;
            }
            if !got {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn query_packets(c: &mut rtpanchor::client::ng::NgClient, i: usize, cookie: &str) -> i64 {
    let q = ng(
        c,
        cookie,
        &Owned::dict()
            .with("call-id", call_id(i).as_str())
            .with("command", "query"),
    );
    assert_eq!(q.get("result").and_then(Owned::as_str), Some("ok"), "{q}");
    q.get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|t| t.get("packets"))
        .and_then(Owned::as_int)
        .unwrap_or_else(|| panic!("query without totals.RTP.packets: {q}"))
}

#[test]
fn calls_survive_kill_9_with_redis() {
    let dir = TempDir::new("rtpanchor-store-restore").unwrap();
    let mut redis = start_redis(REDIS_PORT, dir.path());
    let log = dir.path().join("relay.log");
    let blocker = UdpSocket::bind(("127.0.0.1", BLOCKED_PORT)).expect("take a relay port");
    let mut relay = CrashableRelay::start(&relay_args(), NG_PORT, &log);
    let ng_addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let mut c = client(ng_addr);

    let phones: Arc<Vec<Phone>> = Arc::new((0..CALLS).map(|i| set_up(&mut c, i)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let nat_silent = Arc::new(AtomicBool::new(false));
    let rx = Arc::new(Mutex::new(vec![Rx::default(); 2 * CALLS]));
    let t = {
        let (p, s, n, r) = (phones.clone(), stop.clone(), nat_silent.clone(), rx.clone());
        std::thread::spawn(move || traffic(p, s, n, r))
    };

    // Every direction flows, NATed phones latched (the learning phase confirms within 2 s).
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<i64> = (0..CALLS)
        .map(|i| query_packets(&mut c, i, &format!("q1-{i}")))
        .collect();
    {
        let rx = rx.lock().unwrap();
        for (k, r) in rx.iter().enumerate() {
            assert!(
                r.packets > 10,
                "socket {k} got {} packets before the kill",
                r.packets
            );
        }
    }
    for i in (0..CALLS).step_by(NAT_EVERY) {
        let q = ng(
            &mut c,
            &format!("qn-{i}"),
            &Owned::dict()
                .with("call-id", call_id(i).as_str())
                .with("command", "query"),
        );
        let nat_src = phones[i].a.local_addr().unwrap().port().to_string();
        assert!(q.to_string().contains(&nat_src), "call {i} latched: {q}");
    }
    // Let the stored counters catch up with what was just queried (written each round).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(redis_call_keys(), CALLS, "every call is in Redis");
    store_ghost_call();

    // The crash. NATed phones say nothing from now until well after the restart: only a
    // restored latch sends their media to the port they really use.
    let gap_window_start = Instant::now();
    rx.lock()
        .unwrap()
        .iter_mut()
        .for_each(|r| r.max_gap = Duration::ZERO);
    nat_silent.store(true, Ordering::Relaxed);
    relay.kill9();
    let killed = Instant::now();
    let relay = CrashableRelay::start(&relay_args(), NG_PORT, &log);
    let restart = killed.elapsed();
    std::thread::sleep(Duration::from_millis(1200));
    nat_silent.store(false, Ordering::Relaxed);
    let resumed = Instant::now();
    std::thread::sleep(Duration::from_millis(1300));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();

    let rx = rx.lock().unwrap().clone();
    // Gaps of streams that flowed throughout (not B hearing a NATed A, silent on purpose).
    let worst = rx
        .iter()
        .enumerate()
        .filter(|(k, _)| !(phones[k / 2].nat && k % 2 == 1))
        .map(|(_, r)| r.max_gap)
        .max()
        .unwrap();
    eprintln!(
        "ng answered {restart:?} after the kill; worst media gap {worst:?} over {:?}",
        gap_window_start.elapsed()
    );
    for (k, r) in rx.iter().enumerate() {
        let call = k / 2;
        let side = if k % 2 == 0 { "A" } else { "B" };
        if phones[call].nat && k % 2 == 1 {
            // B hears a NATed A only once A speaks again.
            assert!(
                r.last.is_some_and(|l| l > resumed),
                "call {call}: B heard nothing from the NATed A after it spoke again"
            );
            continue;
        }
        assert!(
            r.max_gap < Duration::from_secs(1),
            "call {call} side {side} (NAT {}): media gap {:?}\n{}",
            phones[call].nat,
            r.max_gap,
            common::peers::tail(&log, 20)
        );
        assert!(
            r.last.is_some_and(|l| l > killed + restart),
            "call {call} side {side}: nothing after the restart"
        );
    }

    // Counters continue from what they were (they would be smaller had they restarted).
    let mut c = client(ng_addr);
    for (i, b) in before.iter().enumerate() {
        let after = query_packets(&mut c, i, &format!("q2-{i}"));
        assert!(
            after > *b,
            "call {i}: {after} packets after, {b} before the kill"
        );
    }

    // The restored calls take the in-kernel path again where it runs.
    if common::kernel::cannot_run().is_none() {
        let s = c.command("statistics").unwrap();
        let kernel_streams = find_int(&s, "kernel_streams").unwrap_or(-1);
        eprintln!("kernel streams after restore: {kernel_streams}");
        assert!(kernel_streams > 0, "no restored stream in the kernel: {s}");
    }

    // The call whose port is taken was reported and dropped: unknown to ng, gone from Redis.
    let q = ng(
        &mut c,
        "q-blocked",
        &Owned::dict()
            .with("call-id", GHOST)
            .with("command", "query"),
    );
    assert_eq!(
        q.get("result").and_then(Owned::as_str),
        Some("error"),
        "{q}"
    );
    let reported = std::fs::read_to_string(&log).unwrap_or_default();
    let id = format!("call_id=\"{GHOST}\"");
    assert!(
        reported
            .lines()
            .any(|l| l.contains("stored call not restored") && l.contains(&id)),
        "the dropped call was not reported"
    );
    assert!(
        common::media::wait_for(Duration::from_secs(3), || redis_call_keys() == CALLS),
        "the dropped call is still in Redis"
    );
    drop(blocker);

    // Delete frees every port, and the store forgets the calls.
    for i in 0..CALLS {
        let d = ng(
            &mut c,
            &format!("d{i}"),
            &Owned::dict()
                .with("call-id", call_id(i).as_str())
                .with("from-tag", "ta")
                .with("command", "delete"),
        );
        assert_eq!(d.get("result").and_then(Owned::as_str), Some("ok"), "{d}");
    }
    let (_, used) = common::ng::relayed_and_ports_used(&mut c);
    assert_eq!(used, 0, "ports still in use after deleting every call");
    assert!(
        common::media::wait_for(Duration::from_secs(3), || redis_call_keys() == 0),
        "calls left in Redis after delete"
    );
    drop(relay);
    redis.stop(Duration::from_secs(2));
}
