//! A data-plane worker thread stalled for 2 s under load (the test-only hook of feature
//! `fault-injection` puts it to sleep in the io_uring engine's completion handling, as a
//! thread descheduled on a busy machine would be). Its sockets fill meanwhile with a backlog
//! larger than its provided-buffer ring (4,800 datagrams for 4,096 buffers). Shown, with exact
//! counters: every datagram queued during the stall is relayed once the worker runs again
//! (none lost, none dropped by the kernel), every multishot receive that ended for want of
//! buffers (ENOBUFS) was re-armed, no restart was needed, and the calls go on. (On Linux 6.18
//! the kernel hands a backlog to a multishot receive in bounded chunks, so the ring did not
//! run dry in our runs: ENOBUFS is allowed, not required.)
//!
//! Ports (block 15500-15999): ng 15900, media 15910-15999.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::calls::call;
use common::media::{count_rx, pcmu, relay, wait_for};
use common::ng::{client, find_int, start_relay_in};
use rtpanchor::dataplane::fault::{STALL, STALL_PACKET};

const CALLS: usize = 6;
/// Per direction of each call during the stall: 12 directions x 400 = 4,800 datagrams, more
/// than the ring's 4,096 buffers, fewer than each socket's receive buffer holds.
const BURST: u16 = 400;

/// A socket on 127.0.0.1 with room for a whole burst (4 MB receive buffer).
fn big_sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Counts the relayed RTP packets (172 bytes) arriving on `s` until `want` or `limit`.
fn count_rtp(s: &UdpSocket, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        if let Ok(len) = s.recv(&mut buf) {
            if len == 172 {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_worker_stalled_for_two_seconds_relays_its_backlog_and_re_arms_its_receives() {
    let _relay = start_relay_in(
        15900,
        (15910, 15999),
        "uring",
        &["--no-kernel-forwarding", "--socket-rcvbuf", "2097152"],
    );
    let mut c = client(relay(15900));
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..CALLS).map(|_| (big_sock(), big_sock())).collect();
    let calls: Vec<(SocketAddr, SocketAddr)> = socks
        .iter()
        .enumerate()
        .map(|(i, (a, b))| call(&mut c, &format!("stall-{i}"), a, b))
        .collect();
    for (i, ((a, b), &(to_a, to_b))) in socks.iter().zip(&calls).enumerate() {
        a.send_to(&pcmu(1, 0xa), to_a).unwrap();
        b.send_to(&pcmu(1, 0xb), to_b).unwrap();
        assert_eq!(
            count_rx(b, 1, Duration::from_secs(3)),
            1,
            "call {i} A->B before"
        );
        assert_eq!(
            count_rx(a, 1, Duration::from_secs(3)),
            1,
            "call {i} B->A before"
        );
    }
    let at = |v: &rtpanchor::control::bencode::Owned, k: &str| {
        find_int(v, k).unwrap_or_else(|| panic!("no {k}: {v}"))
    };
    // Worker counters are published on the worker's housekeeping rounds: wait for the 12.
    let warm = (2 * CALLS) as i64;
    assert!(wait_for(Duration::from_secs(3), || {
        let s = c.command("statistics").unwrap();
        at(&s, "rx_packets") == warm && at(&s, "tx_packets") == warm
    }));
    let before = c.command("statistics").unwrap();
    let (rx0, tx0) = (warm, warm);
    let enobufs0 = at(&before, "enobufs");
    let rearms0 = at(&before, "recv_rearms");

    // The stall, then the burst while the worker sleeps.
    let t0 = Instant::now();
    socks[0].0.send_to(STALL_PACKET, calls[0].0).unwrap();
    sleep(Duration::from_millis(200));
    for seq in 2..2 + BURST {
        for ((a, b), &(to_a, to_b)) in socks.iter().zip(&calls) {
            a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
            b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
        }
    }
    assert!(t0.elapsed() < STALL, "the burst took longer than the stall");
    let early = count_rtp(
        &socks[0].1,
        1,
        STALL - t0.elapsed() - Duration::from_millis(300),
    );
    assert_eq!(
        early, 0,
        "relayed during the stall: the hook did not stall the worker"
    );

    // Every packet of the backlog is relayed once the worker runs again.
    let want = usize::from(BURST);
    for (i, (a, b)) in socks.iter().enumerate() {
        assert_eq!(
            count_rtp(b, want, Duration::from_secs(10)),
            want,
            "call {i} A->B"
        );
        assert_eq!(
            count_rtp(a, want, Duration::from_secs(10)),
            want,
            "call {i} B->A"
        );
    }
    // The burst and the stall datagram itself (not RTP: relayed as such, after the stall).
    let backlog = (2 * CALLS * usize::from(BURST) + 1) as i64;
    wait_for(Duration::from_secs(3), || {
        let s = c.command("statistics").unwrap();
        at(&s, "rx_packets") - rx0 >= backlog && at(&s, "tx_packets") - tx0 >= backlog
    });
    let after = c.command("statistics").unwrap();
    assert_eq!(at(&after, "rx_packets") - rx0, backlog, "{after}");
    assert_eq!(at(&after, "tx_packets") - tx0, backlog, "{after}");
    assert_eq!(at(&after, "non_rtp"), 1, "{after}");
    let enobufs = at(&after, "enobufs") - enobufs0;
    let rearms = at(&after, "recv_rearms") - rearms0;
    assert!(
        rearms >= enobufs,
        "{rearms} re-arms for {enobufs} ENOBUFS ends: {after}"
    );
    assert_eq!(find_int(&after, "drop_rcvbuf"), Some(0), "{after}");
    assert_eq!(find_int(&after, "worker_restarts"), Some(0), "{after}");

    // And the calls go on.
    for (i, ((a, b), &(to_a, to_b))) in socks.iter().zip(&calls).enumerate() {
        for seq in 1000..1010u16 {
            a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
            b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
        }
        assert_eq!(
            count_rtp(b, 10, Duration::from_secs(3)),
            10,
            "call {i} A->B after"
        );
        assert_eq!(
            count_rtp(a, 10, Duration::from_secs(3)),
            10,
            "call {i} B->A after"
        );
    }
}
