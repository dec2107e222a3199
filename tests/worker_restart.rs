//! A panic in a data-plane engine's own I/O code (outside the packet decision's guard: the
//! io_uring completion handling, the mmsg receive loop) ends one pass of the worker's loop,
//! not the worker: the loop restarts on the same thread with the same sockets and slots,
//! counted as `worker_restarts` in ng `statistics` and `/metrics`, and every call on that
//! worker (one worker here) keeps being relayed, the one that carried the datagram too. The
//! panic comes from the test-only hook of feature `fault-injection` (on in test builds).
//!
//! Ports (block 15500-15999): io_uring relay ng 15500, HTTP 15501, media 15510-15549; mmsg
//! relay ng 15600, HTTP 15601, media 15610-15649.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::calls::call;
use common::media::{count_rx, media_sock, pcmu, relay, wait_for};
use common::ng::{client, find_int, ng, start_relay_in};
use rtpanchor::control::bencode::Owned;
use rtpanchor::dataplane::fault::IO_PANIC_PACKET;

const PACKETS: u16 = 10;

/// `PACKETS` RTP packets each way (sequence numbers from `first`); how many arrived at (A, B).
fn exchange(
    a: &UdpSocket,
    b: &UdpSocket,
    (to_a, to_b): (SocketAddr, SocketAddr),
    first: u16,
) -> (usize, usize) {
    for seq in first..first + PACKETS {
        a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
        b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
    }
    let got_b = count_rx(b, usize::from(PACKETS), Duration::from_secs(3));
    let got_a = count_rx(a, usize::from(PACKETS), Duration::from_secs(3));
    (got_a, got_b)
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("HTTP response");
    out
}

fn exposed(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn restarted(engine: &str, ng_port: u16, http: u16, media: (u16, u16)) {
    let _relay = start_relay_in(
        ng_port,
        media,
        engine,
        &[
            "--no-kernel-forwarding",
            "--listen-http",
            &format!("127.0.0.1:{http}"),
        ],
    );
    let mut c = client(relay(ng_port));
    let (a1, b1, a2, b2) = (media_sock(), media_sock(), media_sock(), media_sock());
    let call1 = call(&mut c, "restart-1", &a1, &b1);
    let call2 = call(&mut c, "restart-2", &a2, &b2);
    let full = (usize::from(PACKETS), usize::from(PACKETS));
    assert_eq!(
        exchange(&a1, &b1, call1, 1),
        full,
        "{engine}: call 1 before"
    );
    assert_eq!(
        exchange(&a2, &b2, call2, 1),
        full,
        "{engine}: call 2 before"
    );

    // Twice, from call 1's own (latched) endpoint: each ends one pass of the loop.
    for _ in 0..2 {
        a1.send_to(IO_PANIC_PACKET, call1.0).unwrap();
        assert_eq!(
            count_rx(&b1, 1, Duration::from_millis(300)),
            0,
            "{engine}: the datagram that panicked was relayed"
        );
    }

    // The worker reports the first panic through the panic hook (with a backtrace when
    // RUST_BACKTRACE is set, which takes seconds to resolve on a loaded machine): wait for both.
    let restarts = |c: &mut rtpanchor::client::ng::NgClient| {
        c.command("statistics")
            .ok()
            .and_then(|s| find_int(&s, "worker_restarts"))
    };
    assert!(
        wait_for(Duration::from_secs(30), || restarts(&mut c) == Some(2)),
        "{engine}: worker_restarts {:?}",
        restarts(&mut c)
    );
    // Both calls, on the one worker, are relayed as before: sockets and slots were kept.
    assert_eq!(
        exchange(&a1, &b1, call1, 100),
        full,
        "{engine}: call 1 after"
    );
    assert_eq!(
        exchange(&a2, &b2, call2, 100),
        full,
        "{engine}: call 2 after"
    );
    // A call set up after the restarts is served by the same worker too.
    let (a3, b3) = (media_sock(), media_sock());
    let call3 = call(&mut c, "restart-3", &a3, &b3);
    assert_eq!(exchange(&a3, &b3, call3, 1), full, "{engine}: call 3");

    let stats = ng(
        &mut c,
        "stats",
        &Owned::dict().with("command", "statistics"),
    );
    assert_eq!(
        find_int(&stats, "worker_restarts"),
        Some(2),
        "{engine}: {stats}"
    );
    // Not a panic the packet guard caught: the loop's own guard did.
    assert_eq!(find_int(&stats, "drop_panic"), Some(0), "{engine}: {stats}");
    let text = metrics(http);
    assert_eq!(
        exposed(&text, "rtpanchor_worker_restarts_total"),
        Some(2.0),
        "{engine}:\n{text}"
    );
}

#[test]
fn a_panic_in_the_io_uring_loop_restarts_the_worker_with_its_streams() {
    restarted("uring", 15500, 15501, (15510, 15549));
}

#[test]
fn a_panic_in_the_mmsg_loop_restarts_the_worker_with_its_streams() {
    restarted("mmsg", 15600, 15601, (15610, 15649));
}
