//! Containment of a panic on the packet path, end to end, under both data-plane engines: a
//! datagram that makes the worker's decision panic (the test-only hook of feature
//! `fault-injection`, on in test builds) is dropped and counted in ng `statistics` and
//! `/metrics`, and the worker goes on relaying every call, the one that carried it too.
//!
//! Ports (this test's block, 7600-7999): io_uring relay ng 7600, HTTP 7601, media
//! 7610-7699; mmsg relay ng 7700, HTTP 7701, media 7710-7799.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::calls::call;
use common::media::{count_rx, media_sock, pcmu, relay};
use common::ng::{client, find_int, ng, start_relay_in};
use rtpanchor::control::bencode::Owned;
use rtpanchor::dataplane::fault::PANIC_PACKET;

const PACKETS: u16 = 10;

/// `PACKETS` RTP packets each way (sequence numbers from `first`), and how many arrived at
/// (A, B).
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

fn contained(engine: &str, ng_port: u16, http: u16, media: (u16, u16)) {
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
    let call1 = call(&mut c, "panic-1", &a1, &b1);
    let call2 = call(&mut c, "panic-2", &a2, &b2);
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

    // The poisoned datagram, from call 1's own (latched) endpoint.
    a1.send_to(PANIC_PACKET, call1.0).unwrap();
    assert_eq!(
        count_rx(&b1, 1, Duration::from_millis(300)),
        0,
        "{engine}: the datagram that panicked was relayed"
    );

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

    let stats = ng(
        &mut c,
        "stats",
        &Owned::dict().with("command", "statistics"),
    );
    assert_eq!(find_int(&stats, "drop_panic"), Some(1), "{engine}: {stats}");
    assert_eq!(
        find_int(&stats, "worker_panics"),
        Some(1),
        "{engine}: {stats}"
    );
    let text = metrics(http);
    assert_eq!(
        exposed(&text, "rtpanchor_dataplane_drops_total{reason=\"panic\"}"),
        Some(1.0),
        "{engine}:\n{text}"
    );
    assert_eq!(
        exposed(&text, "rtpanchor_worker_panics_total"),
        Some(1.0),
        "{engine}:\n{text}"
    );
}

#[test]
fn a_worker_panic_is_contained_under_io_uring() {
    contained("uring", 7600, 7601, (7610, 7699));
}

#[test]
fn a_worker_panic_is_contained_under_mmsg() {
    contained("mmsg", 7700, 7701, (7710, 7799));
}
