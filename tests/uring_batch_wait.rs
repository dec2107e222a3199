// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! `--uring-batch-wait-us`: a sleeping io_uring worker gathers completions before it wakes.
//! A lone packet still goes out (after at most the wait), a stream of them arrives whole,
//! and the worker wakes fewer times than it relays packets. Ports 63800-63899.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::media::{endpoint, recv_n, relay, rtp, sock};
use rtpanchor::config::{Config, IoEngine};
use rtpanchor::dataplane::DataPlane;
use rtpanchor::session::backend::{MediaBackend, StreamSpec};

#[test]
fn a_batching_worker_relays_lone_packets_and_streams() {
    let cfg = Config {
        io_engine: IoEngine::Uring,
        num_threads: 1,
        port_min: 63800,
        port_max: 63899,
        kernel_forwarding: false,
        uring_batch_wait_us: 2_000,
        ..Config::default()
    };
    let mut dp = DataPlane::start(&cfg).unwrap();
    if std::env::var_os("RTPANCHOR_NO_URING").is_none() {
        assert_eq!(dp.engine().name(), "io_uring");
    }
    let (a, b) = (sock(), sock());
    let o = dp
        .open(
            StreamSpec {
                call_id: "batch".into(),
                a: endpoint(&a),
                b: endpoint(&b),
                locals: [None; 2],
            },
            0,
        )
        .unwrap();
    // Lone packets, 150 ms apart (the worker sleeps between them): each is relayed after
    // the wait (2 ms) plus scheduling, not held until the idle timeout (100 ms) or until
    // more completions come. The median is held to 50 ms (a busy machine delays some).
    let mut took = Vec::new();
    for i in 0..5u16 {
        std::thread::sleep(Duration::from_millis(150));
        let sent = Instant::now();
        a.send_to(&rtp(i, 0, 7, &[1; 40]), relay(o.a_ports.rtp))
            .unwrap();
        let got = recv_n(&b, 1, Duration::from_secs(2));
        took.push(sent.elapsed());
        assert_eq!(got.len(), 1, "lone packet {i} relayed");
    }
    took.sort();
    assert!(
        took[2] < Duration::from_millis(50),
        "lone packets took {took:?}"
    );
    // A stream of one packet every 200 µs (far apart for a worker that wakes per packet):
    // all arrive, in less than half as many turns of the worker as packets.
    let loops_before: u64 = dp.worker_loops().iter().sum();
    let n = 1_000u16;
    // Read while sending: 1,000 datagrams would overflow the receiver's buffer if left.
    let rx = b.try_clone().unwrap();
    let reader =
        std::thread::spawn(move || recv_n(&rx, usize::from(n), Duration::from_secs(5)).len());
    for i in 0..n {
        a.send_to(&rtp(100 + i, 0, 7, &[2; 160]), relay(o.a_ports.rtp))
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
    }
    let got = reader.join().unwrap();
    assert_eq!(
        got,
        usize::from(n),
        "the stream arrived whole: {:?}",
        dp.totals()
    );
    let loops = dp.worker_loops().iter().sum::<u64>() - loops_before;
    assert!(
        loops < u64::from(n) / 2,
        "{loops} turns for {n} packets: completions were batched"
    );
}
