// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! `--connect-latched` (io_uring engine, in-kernel path off): a socket is connected to its
//! endpoint's source once the latch locks it, sends leave it without an address, and it is
//! disconnected whenever the latch may take a new source (a new offer or answer, a silence
//! that allows re-learning). Ports 63400-64199 (this test's own block).

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::media::{endpoint, recv_n, relay, rtp, sock, wait_for};
use rtpanchor::config::{Config, IoEngine};
use rtpanchor::dataplane::DataPlane;
use rtpanchor::session::backend::{EndpointSpec, MediaBackend, OpenedStream, Side, StreamSpec};
use rtpanchor::session::latch::RELEARN_SILENCE_NS;

fn start(port_min: u16, connect: bool) -> DataPlane {
    let cfg = Config {
        io_engine: IoEngine::Uring,
        num_threads: 1,
        port_min,
        port_max: port_min + 99,
        kernel_forwarding: false,
        connect_latched: connect,
        ..Config::default()
    };
    let dp = DataPlane::start(&cfg).unwrap();
    if std::env::var_os("RTPANCHOR_NO_URING").is_none() {
        assert_eq!(dp.engine().name(), "io_uring", "the engine under test runs");
    }
    dp
}

fn open(dp: &mut DataPlane, a: EndpointSpec, b: EndpointSpec) -> OpenedStream {
    dp.open(
        StreamSpec {
            call_id: "connect".into(),
            a,
            b,
            locals: [None; 2],
        },
        0,
    )
    .unwrap()
}

/// Sends `n` packets from `from` to the relay port `to` and checks that `at` gets all `n`
/// from the relay port `out`.
fn through(from: &std::net::UdpSocket, to: u16, at: &std::net::UdpSocket, out: u16, n: u16) {
    for i in 0..n {
        from.send_to(&rtp(i, 0, 7, &[1; 40]), relay(to)).unwrap();
    }
    let got = recv_n(at, usize::from(n), Duration::from_secs(3));
    assert_eq!(got.len(), usize::from(n), "all {n} relayed");
    assert!(
        got.iter().all(|(_, f)| *f == relay(out)),
        "from the relay port"
    );
}

/// Locked sides get connected and media flows through connected sockets both ways; a third
/// party's packets never reach the other side (the kernel drops them: `drop_source` does not
/// count them, as documented); a new answer for a side disconnects its socket and the new
/// endpoint is learned and served.
#[test]
fn locked_sides_are_connected_and_disconnected_when_the_latch_may_change() {
    let mut dp = start(63400, true);
    let a = sock();
    let b = sock();
    let o = open(&mut dp, endpoint(&a), endpoint(&b));
    through(&a, o.a_ports.rtp, &b, o.b_ports.rtp, 5);
    through(&b, o.b_ports.rtp, &a, o.a_ports.rtp, 5);
    assert!(
        wait_for(Duration::from_secs(2), || dp.totals().connects == 2),
        "both RTP sockets connected: {:?}",
        dp.totals()
    );
    // Sends through the connected sockets (no address named) arrive, none fails.
    through(&a, o.a_ports.rtp, &b, o.b_ports.rtp, 50);
    through(&b, o.b_ports.rtp, &a, o.a_ports.rtp, 50);
    let t = dp.totals();
    assert_eq!(t.drop_send_failed, 0, "{t:?}");
    assert_eq!(t.connect_failed, 0, "{t:?}");

    // RTP Bleed: a stranger sending to A's port gets nothing through to B.
    let intruder = sock();
    for i in 0..5u16 {
        intruder
            .send_to(&rtp(100 + i, 0, 9, &[6; 20]), relay(o.a_ports.rtp))
            .unwrap();
    }
    assert!(
        recv_n(&b, 1, Duration::from_millis(300)).is_empty(),
        "injection blocked"
    );
    let t = dp.totals();
    assert_eq!(t.drop_source, 0, "filtered by the kernel, not seen: {t:?}");
    assert_eq!(
        t.rx_packets, 110,
        "the stranger's packets never reached the worker"
    );
    through(&a, o.a_ports.rtp, &b, o.b_ports.rtp, 5);

    // A new answer moves A elsewhere: A's socket is disconnected, the new source learned.
    let a2 = sock();
    dp.update(o.id, Side::A, endpoint(&a2), 0);
    assert!(
        wait_for(Duration::from_secs(2), || dp.totals().disconnects == 1),
        "A's socket disconnected: {:?}",
        dp.totals()
    );
    through(&a2, o.a_ports.rtp, &b, o.b_ports.rtp, 5);
    through(&b, o.b_ports.rtp, &a2, o.a_ports.rtp, 5);
    assert!(
        wait_for(Duration::from_secs(2), || dp.totals().connects == 3),
        "A's socket connected to the new source: {:?}",
        dp.totals()
    );
    // The old endpoint is a stranger now, and dropped.
    a.send_to(&rtp(200, 0, 7, &[1; 40]), relay(o.a_ports.rtp))
        .unwrap();
    assert!(recv_n(&b, 1, Duration::from_millis(300)).is_empty());
    assert_eq!(dp.totals().drop_send_failed, 0);
}

/// A locked source that falls silent for the re-learning time is disconnected, so a NAT
/// rebinding (a new source port) is learned as without connecting; meanwhile the other side
/// stays connected. Unconnected (the default), nothing is ever connected.
#[test]
fn a_silent_source_is_disconnected_so_a_new_one_can_take_over() {
    let mut dp = start(63600, true);
    let a = sock();
    let b = sock();
    let o = open(&mut dp, endpoint(&a), endpoint(&b));
    through(&a, o.a_ports.rtp, &b, o.b_ports.rtp, 3);
    through(&b, o.b_ports.rtp, &a, o.a_ports.rtp, 3);
    assert!(wait_for(Duration::from_secs(2), || dp.totals().connects == 2));
    // A falls silent; B goes on (its side stays locked and connected).
    let silence = Duration::from_nanos(RELEARN_SILENCE_NS);
    let until = std::time::Instant::now() + silence + Duration::from_millis(1500);
    let mut sent = 0u16;
    while std::time::Instant::now() < until && dp.totals().disconnects == 0 {
        b.send_to(&rtp(10 + sent, 0, 8, &[2; 40]), relay(o.b_ports.rtp))
            .unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = dp.totals();
    assert_eq!(t.disconnects, 1, "only A's silent socket: {t:?}");
    // A's NAT binding changed: a new source port takes over and gets B's media.
    let a_new = sock();
    through(&a_new, o.a_ports.rtp, &b, o.b_ports.rtp, 3);
    through(&b, o.b_ports.rtp, &a_new, o.a_ports.rtp, 3);
    assert!(wait_for(Duration::from_secs(2), || dp.totals().connects == 3));
    drop(dp);

    let mut plain = start(63700, false);
    let (c, d) = (sock(), sock());
    let o = open(&mut plain, endpoint(&c), endpoint(&d));
    through(&c, o.a_ports.rtp, &d, o.b_ports.rtp, 5);
    through(&d, o.b_ports.rtp, &c, o.a_ports.rtp, 5);
    let stranger = sock();
    stranger
        .send_to(&rtp(1, 0, 9, &[6; 20]), relay(o.a_ports.rtp))
        .unwrap();
    assert!(wait_for(Duration::from_secs(2), || plain
        .totals()
        .drop_source
        == 1));
    assert_eq!(plain.totals().connects, 0);
}
