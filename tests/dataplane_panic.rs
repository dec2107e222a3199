//! Containment of panics in the data plane, end to end, under both engines (the test-only
//! hooks of feature `fault-injection`, on in test builds):
//! - a datagram that makes the worker's decision panic is dropped and counted in ng
//!   `statistics` and `/metrics` (`drop_panic`, `worker_panics`), and the worker goes on
//!   relaying every call, the one that carried it too;
//! - a panic in an engine's own I/O code (outside the decision's guard: the io_uring
//!   completion handling, the mmsg receive loop) ends one pass of the worker's loop, not the
//!   worker: the loop restarts on the same thread with the same sockets and slots, counted as
//!   `worker_restarts`, and every call on that worker (one worker here) keeps being relayed.
//!
//! Ports: decision panics (7600-7999): io_uring relay ng 7600, HTTP 7601, media 7610-7699;
//! mmsg relay ng 7700, HTTP 7701, media 7710-7799. Loop restarts (15500-15999): io_uring ng
//! 15500, HTTP 15501, media 15510-15549; mmsg ng 15600, HTTP 15601, media 15610-15649.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::calls::{call, exchange, EXCHANGED};
use common::media::{count_rx, media_sock, relay, wait_for};
use common::ng::{client, find_int, ng, start_relay_in, Relay};
use common::scrape::{metrics, series};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;
use rtpanchor::dataplane::fault::{IO_PANIC_PACKET, PANIC_PACKET};

/// A relay on one worker with two calls through it, each checked to relay both ways.
struct Setup {
    _relay: Relay,
    c: NgClient,
    socks: [(UdpSocket, UdpSocket); 2],
    calls: [(SocketAddr, SocketAddr); 2],
}

fn set_up(engine: &str, ng_port: u16, http: u16, media: (u16, u16)) -> Setup {
    let relay_proc = start_relay_in(
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
    let socks = [(media_sock(), media_sock()), (media_sock(), media_sock())];
    let calls = [0, 1].map(|i| call(&mut c, &format!("panic-{i}"), &socks[i].0, &socks[i].1));
    for i in 0..2 {
        let (a, b) = &socks[i];
        assert_eq!(
            exchange(a, b, calls[i], 1),
            EXCHANGED,
            "{engine}: call {i} before"
        );
    }
    Setup {
        _relay: relay_proc,
        c,
        socks,
        calls,
    }
}

impl Setup {
    /// `pkt` `times`, from call 0's own (latched) endpoint; none of them relayed.
    fn inject(&self, pkt: &[u8], times: usize, engine: &str) {
        let (a, b) = &self.socks[0];
        for _ in 0..times {
            a.send_to(pkt, self.calls[0].0).unwrap();
            assert_eq!(
                count_rx(b, 1, Duration::from_millis(300)),
                0,
                "{engine}: the datagram that panicked was relayed"
            );
        }
    }

    /// Both calls relay both ways (sequence numbers from `first`).
    fn both_relay(&self, first: u16, engine: &str) {
        for i in 0..2 {
            let (a, b) = &self.socks[i];
            let got = exchange(a, b, self.calls[i], first);
            assert_eq!(got, EXCHANGED, "{engine}: call {i} after");
        }
    }

    fn counter(&mut self, name: &str) -> Option<i64> {
        let r = self.c.command("statistics").ok()?;
        find_int(&r, name)
    }
}

fn contained(engine: &str, ng_port: u16, http: u16, media: (u16, u16)) {
    let mut s = set_up(engine, ng_port, http, media);
    s.inject(PANIC_PACKET, 1, engine);
    s.both_relay(100, engine);
    let stats = ng(
        &mut s.c,
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
        series(&text, "rtpanchor_dataplane_drops_total{reason=\"panic\"}"),
        Some(1.0),
        "{engine}:\n{text}"
    );
    assert_eq!(
        series(&text, "rtpanchor_worker_panics_total"),
        Some(1.0),
        "{engine}:\n{text}"
    );
}

fn restarted(engine: &str, ng_port: u16, http: u16, media: (u16, u16)) {
    let mut s = set_up(engine, ng_port, http, media);
    // Twice: each ends one pass of the loop.
    s.inject(IO_PANIC_PACKET, 2, engine);
    // The worker reports the first panic through the panic hook (with a backtrace when
    // RUST_BACKTRACE is set, which takes seconds to resolve on a loaded machine): wait for both.
    assert!(
        wait_for(Duration::from_secs(30), || s.counter("worker_restarts")
            == Some(2)),
        "{engine}: worker_restarts {:?}",
        s.counter("worker_restarts")
    );
    // Both calls, on the one worker, are relayed as before: sockets and slots were kept.
    s.both_relay(100, engine);
    // A call set up after the restarts is served by the same worker too.
    let (a3, b3) = (media_sock(), media_sock());
    let call3 = call(&mut s.c, "restart-3", &a3, &b3);
    assert_eq!(exchange(&a3, &b3, call3, 1), EXCHANGED, "{engine}: call 3");
    // Not a panic the decision's guard caught: the loop's own guard did.
    assert_eq!(s.counter("drop_panic"), Some(0), "{engine}");
    assert_eq!(s.counter("worker_panics"), Some(0), "{engine}");
    let text = metrics(http);
    assert_eq!(
        series(&text, "rtpanchor_worker_restarts_total"),
        Some(2.0),
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

#[test]
fn a_panic_in_the_io_uring_loop_restarts_the_worker_with_its_streams() {
    restarted("uring", 15500, 15501, (15510, 15549));
}

#[test]
fn a_panic_in_the_mmsg_loop_restarts_the_worker_with_its_streams() {
    restarted("mmsg", 15600, 15601, (15610, 15649));
}
