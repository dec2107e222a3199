// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! "Nothing on the packet path allocates", checked: this test binary counts every heap
//! allocation of the process (dhat's testing mode), and steady two-way forwarding through
//! 20 streams, bursts that leave as UDP GSO sends, and the workers' housekeeping (quality
//! publication, the stall watchdog) must make none. Once per engine.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rtpanchor::config::{Config, IoEngine};
use rtpanchor::dataplane::DataPlane;
use rtpanchor::rtp::RtpRepr;
use rtpanchor::session::backend::{EndpointSpec, MediaBackend, StreamSpec};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const STREAMS: usize = 20;
const ROUNDS: u16 = 100;
const BURST: u16 = 16;
/// Datagrams one call of `traffic` forwards.
const PER_CALL: usize = STREAMS * (2 * ROUNDS as usize + BURST as usize);

/// Writes the header of PCMU packet `seq` of `ssrc` into `out` (emit allocates nothing).
fn rtp(seq: u16, ssrc: u32, out: &mut [u8; 172]) {
    RtpRepr::new(0, seq, u32::from(seq) * 160, ssrc)
        .emit(out)
        .unwrap();
}

fn relay(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads datagrams from every socket until `want` arrived in all or `limit` passed, without
/// allocating (the count is the whole point).
fn drain(socks: &[&UdpSocket], want: usize, limit: Duration) -> usize {
    let mut buf = [0u8; 2048];
    let mut got = 0;
    let deadline = Instant::now() + limit;
    while got < want && Instant::now() < deadline {
        for s in socks {
            while s.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// Sends one packet each way through every stream, `ROUNDS` times, and receives them on
/// `socks` (the same sockets, listed up front so this allocates nothing).
fn traffic(
    pairs: &[(UdpSocket, UdpSocket, u16, u16)],
    socks: &[&UdpSocket],
    first_seq: u16,
) -> usize {
    let mut pkt = [0u8; 172];
    for r in 0..ROUNDS {
        for (i, (a, b, pa, pb)) in pairs.iter().enumerate() {
            rtp(first_seq + r, 2 * i as u32, &mut pkt);
            let _ = a.send_to(&pkt, relay(*pa));
            rtp(first_seq + r, 2 * i as u32 + 1, &mut pkt);
            let _ = b.send_to(&pkt, relay(*pb));
        }
        if r % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Video-like: BURST packets back to back per stream, A to B (gathered into GSO sends).
    for (i, (a, _, pa, _)) in pairs.iter().enumerate() {
        for k in 0..BURST {
            rtp(first_seq + ROUNDS + k, 2 * i as u32, &mut pkt);
            let _ = a.send_to(&pkt, relay(*pa));
        }
    }
    drain(socks, PER_CALL, Duration::from_secs(5))
}

#[test]
fn steady_forwarding_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // io_uring once more with `--connect-latched` (sockets connected once latched, sends
    // without an address), in ports 63400-64199.
    for (engine, connect, base) in [
        (IoEngine::Mmsg, false, 21000),
        (IoEngine::Uring, false, 22000),
        (IoEngine::Uring, true, 63400),
    ] {
        let mut dp = DataPlane::start(&Config {
            io_engine: engine,
            num_threads: 2,
            port_min: base,
            port_max: base + 799,
            // The premise: every packet goes through the user-space worker (the in-kernel
            // path, on by default, would take the latched streams mid-test, and its bursts
            // would then never reach the GSO batching asserted below), with GSO on.
            kernel_forwarding: false,
            gso: true,
            connect_latched: connect,
            ..Config::default()
        })
        .unwrap();
        let mut pairs = Vec::new();
        for i in 0..STREAMS {
            let (a, b) = (
                UdpSocket::bind("127.0.0.1:0").unwrap(),
                UdpSocket::bind("127.0.0.1:0").unwrap(),
            );
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            let spec = |s: &UdpSocket| {
                let addr = s.local_addr().unwrap();
                EndpointSpec::new(
                    Some(addr),
                    Some(SocketAddr::new(addr.ip(), addr.port() + 1)),
                )
            };
            let o = dp
                .open(
                    StreamSpec {
                        call_id: format!("alloc-{i}").into(),
                        a: spec(&a),
                        b: spec(&b),
                        locals: [None; 2],
                    },
                    0,
                )
                .unwrap();
            pairs.push((a, b, o.a_ports.rtp, o.b_ports.rtp));
        }
        let socks: Vec<&UdpSocket> = pairs.iter().flat_map(|(a, b, _, _)| [a, b]).collect();
        // Warm-up: endpoints learned and confirmed, first publications made.
        let warm = traffic(&pairs, &socks, 0);
        assert_eq!(warm, PER_CALL, "{engine:?}: warm-up");
        std::thread::sleep(Duration::from_millis(300));

        let before = dhat::HeapStats::get();
        let got = traffic(&pairs, &socks, ROUNDS + BURST);
        // Housekeeping turns with nothing to forward: publication rounds and a watchdog pass.
        std::thread::sleep(Duration::from_millis(1200));
        let after = dhat::HeapStats::get();

        assert_eq!(got, PER_CALL, "{engine:?}: all forwarded");
        assert_eq!(
            after.total_blocks - before.total_blocks,
            0,
            "{engine:?}: {} allocations ({} bytes) while forwarding",
            after.total_blocks - before.total_blocks,
            after.total_bytes - before.total_bytes
        );
        let t = dp.totals();
        assert_eq!(
            t.tx_packets,
            2 * PER_CALL as u64,
            "warm-up and measured traffic"
        );
        assert!(
            t.gso_sends > 0,
            "{engine:?}: the bursts went out as GSO sends"
        );
        if connect {
            assert_eq!(t.connects, 2 * STREAMS as u64, "every RTP socket connected");
        }
        drop(dp);
    }
}
