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
//! The stall watchdog, which no test had provoked: a test-only hook makes the worker lose one
//! socket's multishot receive (cancelled, its end unseen), so the worker believes it armed
//! while nothing reads the socket: data queued and no completion, the stall the watchdog
//! exists for. It is found (`recv_stalls`), the receive is re-armed, and every packet queued
//! meanwhile is relayed.
//!
//! Ports (block 15500-15999): stall ng 15900, media 15910-15959; watchdog ng 15960, media
//! 15970-15999.

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
use rtpanchor::dataplane::fault::{LOSE_RECEIVE_PACKET, STALL, STALL_PACKET};

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
        (15910, 15959),
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

#[test]
fn a_lost_receive_is_found_by_the_stall_watchdog_and_re_armed_with_nothing_lost() {
    let _relay = start_relay_in(15960, (15970, 15999), "uring", &["--no-kernel-forwarding"]);
    let mut c = client(relay(15960));
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..2).map(|_| (big_sock(), big_sock())).collect();
    let calls: Vec<(SocketAddr, SocketAddr)> = socks
        .iter()
        .enumerate()
        .map(|(i, (a, b))| call(&mut c, &format!("lost-{i}"), a, b))
        .collect();
    let ((a1, b1), (a2, b2)) = (&socks[0], &socks[1]);
    let ((to_a1, _), (to_a2, to_b2)) = (calls[0], calls[1]);
    for seq in 1..=5u16 {
        a1.send_to(&pcmu(seq, 0xa), to_a1).unwrap();
    }
    assert_eq!(count_rtp(b1, 5, Duration::from_secs(3)), 5, "before");
    let at = |v: &rtpanchor::control::bencode::Owned, k: &str| {
        find_int(v, k).unwrap_or_else(|| panic!("no {k}: {v}"))
    };
    let before = c.command("statistics").unwrap();
    assert_eq!(at(&before, "recv_stalls"), 0, "{before}");
    let rearms0 = at(&before, "recv_rearms");

    // The receive of A's relay socket is lost; A goes on sending 50 packets a second for 4 s,
    // and call 2 talks meanwhile.
    a1.send_to(LOSE_RECEIVE_PACKET, to_a1).unwrap();
    sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let mut relayed_early = 0;
    for seq in 100..300u16 {
        a1.send_to(&pcmu(seq, 0xa), to_a1).unwrap();
        a2.send_to(&pcmu(seq, 0xa), to_a2).unwrap();
        b2.send_to(&pcmu(seq, 0xb), to_b2).unwrap();
        if t0.elapsed() < Duration::from_millis(400) {
            relayed_early += count_rtp(b1, 1, Duration::from_millis(1));
        }
        sleep(Duration::from_millis(20));
    }
    assert_eq!(relayed_early, 0, "the hook did not take the receive away");
    // Found and re-armed: everything A sent is relayed, nothing lost.
    assert_eq!(
        count_rtp(b1, 200, Duration::from_secs(5)),
        200,
        "A->B of call 1"
    );
    assert_eq!(
        count_rtp(b2, 200, Duration::from_secs(3)),
        200,
        "A->B of call 2"
    );
    assert_eq!(
        count_rtp(a2, 200, Duration::from_secs(3)),
        200,
        "B->A of call 2"
    );
    let after = c.command("statistics").unwrap();
    assert_eq!(at(&after, "recv_stalls"), 1, "{after}");
    assert_eq!(at(&after, "recv_rearms") - rearms0, 1, "{after}");
    assert_eq!(at(&after, "watch_failed"), 0, "{after}");
    assert_eq!(at(&after, "drop_rcvbuf"), 0, "{after}");
    // And the socket is read at once again.
    for seq in 400..410u16 {
        a1.send_to(&pcmu(seq, 0xa), to_a1).unwrap();
    }
    assert_eq!(count_rtp(b1, 10, Duration::from_millis(500)), 10, "after");
}
