// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! The user-space data plane (in-kernel path off) with real sockets on 127.0.0.1, driven
//! directly through `MediaBackend` (no signalling), once per engine: forwarding both ways
//! with exact counters, NAT latching, third-party rejection, and recovery after a burst far
//! above capacity.

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::media::{endpoint, recv_n, relay, rtp, sock, wait_for};
use rtpanchor::config::{Config, IoEngine};
use rtpanchor::dataplane::DataPlane;
use rtpanchor::session::backend::{EndpointSpec, MediaBackend, OpenedStream, Side, StreamSpec};

/// The user-space engines alone: every packet goes through a worker. The in-kernel fast path
/// (on by default) would take latched streams mid-test, after which the workers' own
/// mechanisms asserted here (GSO batching, receive-queue accounting, ring wake-ups, the
/// counters at the moment they are read) no longer see the packets; `kernel_path.rs` tests
/// that path, and the relay binary's end-to-end tests run with the default. GSO is on (the
/// default) unless a test says otherwise. Each test has port blocks of its own (1,000 ports
/// from `port_base`; the 500-stream test 4,000), so tests running side by side never compete
/// for a port: 21-22k, 30-37k, 38-39k, 40-41k, 42-43k, 44-45k, 46-47k, 54-55k (IPv6),
/// 56-59k, 60k, 61-64k (43-44k again in a network namespace of its own).
fn config(engine: IoEngine, port_base: u16) -> Config {
    Config {
        io_engine: engine,
        num_threads: 2,
        port_min: port_base,
        port_max: port_base + 999,
        kernel_forwarding: false,
        gso: true,
        ..Config::default()
    }
}

/// Opens one two-sided stream between the endpoints `a` and `b`.
fn open(dp: &mut DataPlane, call_id: &str, a: EndpointSpec, b: EndpointSpec) -> OpenedStream {
    dp.open(
        StreamSpec {
            call_id: call_id.into(),
            a,
            b,
            locals: [None; 2],
        },
        0,
    )
    .unwrap()
}

/// Sends `count` RTP packets from `a` to the relay's A port (sequence numbers from `first`,
/// each `size(seq)` bytes, payload filled with the low byte of `seq`) and checks that `b` gets
/// exactly those: all of them, in order, from the relay's B port, each with its size and
/// payload. `what` names the case in failures.
fn frame_through(
    a: &UdpSocket,
    b: &UdpSocket,
    o: &OpenedStream,
    first: u16,
    count: u16,
    size: impl Fn(u16) -> usize,
    what: &str,
) {
    frame_through_as(a, b, o, (first, count), size, what, true)
}

/// [`frame_through`]; with `in_order` false the packets may arrive in any order (each exactly
/// once): a GSO send the path refuses is resent datagram by datagram when its completion
/// comes back, and with io_uring a later send of the same stream may already have left.
fn frame_through_as(
    a: &UdpSocket,
    b: &UdpSocket,
    o: &OpenedStream,
    (first, count): (u16, u16),
    size: impl Fn(u16) -> usize,
    what: &str,
    in_order: bool,
) {
    for seq in first..first + count {
        a.send_to(
            &rtp(seq, 0, 5, &vec![seq as u8; size(seq) - 12]),
            relay(o.a_ports.rtp),
        )
        .unwrap();
    }
    let mut got = recv_n(b, usize::from(count), Duration::from_secs(3));
    if !in_order {
        got.sort_by_key(|(p, _)| p.get(2..4).map(|s| u16::from_be_bytes([s[0], s[1]])));
    }
    assert_eq!(
        got.len(),
        usize::from(count),
        "{what}: frame from {first} arrived whole"
    );
    for (k, (p, from)) in got.iter().enumerate() {
        let want = first + k as u16;
        assert_eq!(
            *from,
            relay(o.b_ports.rtp),
            "{what}: from the relay's B port"
        );
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), want, "{what}: in order");
        assert_eq!(p.len(), size(want), "{what}: packet {want} keeps its size");
        assert!(p[12..].iter().all(|&x| x == want as u8), "{what}: intact");
    }
}

/// The totals once the workers have counted `tx` sends: a datagram can reach its receiver
/// before the worker that sent it has counted the send (io_uring reaps the completion on a
/// later turn), so a count read the moment the last datagram arrived may trail by a few.
/// Waits up to 3 s, then returns whatever the totals are (the caller's assertion says).
fn totals_after_sends(dp: &DataPlane, tx: u64) -> rtpanchor::dataplane::shared::DataPlaneTotals {
    wait_for(Duration::from_secs(3), || dp.totals().tx_packets >= tx);
    dp.totals()
}

fn engines() -> Vec<IoEngine> {
    vec![IoEngine::Mmsg, IoEngine::Uring]
}

/// Starts a data plane and checks that the engine asked for is the one running, so a silent
/// fallback cannot make the io_uring runs test the mmsg engine twice. Set
/// RTPANCHOR_NO_URING=1 on a machine without io_uring to accept the fallback.
fn start(cfg: &Config) -> DataPlane {
    let dp = DataPlane::start(cfg).unwrap();
    let want = match cfg.io_engine {
        IoEngine::Uring if std::env::var_os("RTPANCHOR_NO_URING").is_none() => "io_uring",
        _ if cfg.io_engine == IoEngine::Mmsg => "recvmmsg/sendmmsg",
        _ => dp.engine().name(),
    };
    assert_eq!(dp.engine().name(), want, "{:?}", dp.engine());
    dp
}

#[test]
fn one_stream_both_ways_intact_with_exact_counters() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&config(engine, 21000 + 1000 * n as u16));
        let (a, b) = (sock(), sock());
        let opened = open(&mut dp, "c1", endpoint(&a), endpoint(&b));
        assert_eq!(opened.a_ports.rtp % 2, 0);
        let per_dir = 200u16;
        for i in 0..per_dir {
            let pa = rtp(i, u32::from(i) * 160, 0x1111, &[i as u8; 160]);
            a.send_to(&pa, relay(opened.a_ports.rtp)).unwrap();
            let pb = rtp(i, u32::from(i) * 160, 0x2222, &[!(i as u8); 160]);
            b.send_to(&pb, relay(opened.b_ports.rtp)).unwrap();
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let at_b = recv_n(&b, per_dir as usize, Duration::from_secs(5));
        let at_a = recv_n(&a, per_dir as usize, Duration::from_secs(5));
        assert_eq!(
            at_b.len(),
            per_dir as usize,
            "{engine:?}: A->B all forwarded"
        );
        assert_eq!(
            at_a.len(),
            per_dir as usize,
            "{engine:?}: B->A all forwarded"
        );
        // Intact and from the relay's own port for that side (symmetric RTP).
        let mut seqs: Vec<u16> = at_b
            .iter()
            .map(|(p, from)| {
                assert_eq!(*from, relay(opened.b_ports.rtp));
                assert_eq!(p.len(), 172);
                let seq = u16::from_be_bytes([p[2], p[3]]);
                assert_eq!(&p[12..], &[seq as u8; 160][..]);
                seq
            })
            .collect();
        seqs.sort();
        assert_eq!(seqs, (0..per_dir).collect::<Vec<_>>());
        for (_, from) in &at_a {
            assert_eq!(*from, relay(opened.a_ports.rtp));
        }
        assert!(wait_for(Duration::from_secs(2), || {
            let s = dp.stats(opened.id).unwrap();
            s.a.quality.packets == u64::from(per_dir) && s.b.quality.packets == u64::from(per_dir)
        }));
        let s = dp.stats(opened.id).unwrap();
        for side in [&s.a, &s.b] {
            assert_eq!(side.rtp.packets, u64::from(per_dir));
            assert_eq!(side.rtp.bytes, 172 * u64::from(per_dir));
            assert_eq!(side.rtp.errors, 0);
            assert_eq!(side.quality.lost, 0);
            assert_eq!(side.quality.duplicates, 0);
            assert_eq!(side.quality.extended_highest_seq, u64::from(per_dir - 1));
        }
        assert_eq!(s.a.quality.ssrc, 0x1111);
        let t = totals_after_sends(&dp, 2 * u64::from(per_dir));
        assert_eq!(t.tx_packets, 2 * u64::from(per_dir));
        assert_eq!(t.dropped(), 0);
        dp.close(opened.id);
        assert_eq!(dp.port_usage().0, 0);
    }
}

#[test]
fn five_hundred_streams_forward_every_packet() {
    // 2 workers take 250 streams (1,000 sockets) each. io_uring runs three times: every
    // socket in the fixed-file table (the default); a table of 301 slots on one ring per
    // worker, so 699 sockets a worker stay descriptors next to 301 fixed ones; and tables of
    // 301 with no descriptors to spare, so each worker fills ring after ring of the 7 chosen
    // for its 2,000 ports (75 streams a ring: 4 rings) and every socket is fixed again.
    let variants = [
        (IoEngine::Mmsg, None, None, None, 30000, 0),
        (IoEngine::Uring, None, None, None, 34000, 2000),
        (IoEngine::Uring, Some(301), Some(1), None, 56000, 602),
        (
            IoEngine::Uring,
            Some(301),
            None,
            Some(usize::MAX),
            61000,
            2000,
        ),
    ];
    for (engine, fixed, rings, spare, base, want_fixed) in variants {
        let uring = engine == IoEngine::Uring && std::env::var_os("RTPANCHOR_NO_URING").is_none();
        // Before Linux 6.7 the relay keeps descriptors (its watchdog needs socket uring_cmd).
        let fixed = if kernel_at_least(6, 7) {
            fixed
        } else {
            Some(0)
        };
        let mut dp = start(&Config {
            uring_fixed_files: fixed,
            uring_rings: rings,
            spare_descriptors: spare,
            // 2,000 ports for 500 streams, from a block of 4,000.
            port_max: base + 3999,
            ..config(engine, base)
        });
        let mut calls = Vec::new();
        for i in 0..500 {
            let (a, b) = (sock(), sock());
            let o = open(&mut dp, &format!("call-{i}"), endpoint(&a), endpoint(&b));
            calls.push((a, b, o));
        }
        let relay_ports: std::collections::HashSet<u16> = calls
            .iter()
            .flat_map(|(_, _, o)| [o.a_ports, o.b_ports])
            .flat_map(|p| [p.rtp, p.rtcp()])
            .collect();
        // Fixed sockets have no descriptor of their own.
        let want_fixed: u64 = if uring && fixed != Some(0) {
            want_fixed
        } else {
            0
        };
        let want_plain = 2000 - want_fixed;
        // Both counts settle once the workers have taken every socket (they do so on their
        // own turns, so wait for both rather than read one after the other settled).
        let want_fallbacks = if uring { want_plain } else { 0 };
        assert!(
            wait_for(Duration::from_secs(5), || {
                let t = dp.totals();
                t.fixed_files == want_fixed && t.fixed_fallbacks == want_fallbacks
            }),
            "{engine:?}/{fixed:?}: fixed files {} != {want_fixed} or fallbacks {} != {want_fallbacks}",
            dp.totals().fixed_files,
            dp.totals().fixed_fallbacks
        );
        // /proc/net/udp is read bucket by bucket, not as a snapshot: while the other tests
        // of this binary bind and close sockets, one read can miss entries. A count that
        // matches once is the relay's; a relay with another count never matches.
        let mut fds = 0;
        wait_for(Duration::from_secs(3), || {
            fds = relay_fds(&relay_ports);
            fds == want_plain as usize
        });
        assert_eq!(
            fds, want_plain as usize,
            "{engine:?}/{fixed:?}: descriptors of this process bound in the relay's range"
        );
        let rounds = 10u16;
        for r in 0..rounds {
            for (i, (a, b, o)) in calls.iter().enumerate() {
                let ssrc = i as u32;
                a.send_to(
                    &rtp(r, u32::from(r) * 160, ssrc, &[1; 160]),
                    relay(o.a_ports.rtp),
                )
                .unwrap();
                b.send_to(
                    &rtp(r, u32::from(r) * 160, ssrc, &[2; 160]),
                    relay(o.b_ports.rtp),
                )
                .unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut got: HashMap<usize, (usize, usize)> = HashMap::new();
        for (i, (a, b, o)) in calls.iter().enumerate() {
            let at_b = recv_n(b, rounds as usize, Duration::from_secs(3));
            let at_a = recv_n(a, rounds as usize, Duration::from_secs(3));
            for (p, _) in &at_b {
                assert_eq!(
                    u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                    i as u32,
                    "no cross-talk"
                );
                assert_eq!(p[12], 1);
            }
            for (p, _) in &at_a {
                assert_eq!(p[12], 2);
            }
            got.insert(i, (at_b.len(), at_a.len()));
            let _ = o;
        }
        let complete = got
            .values()
            .filter(|(x, y)| *x == rounds as usize && *y == rounds as usize)
            .count();
        assert_eq!(
            complete, 500,
            "{engine:?}: every stream got every packet both ways"
        );
        assert!(wait_for(Duration::from_secs(2), || calls.iter().all(
            |(_, _, o)| dp.stats(o.id).unwrap().a.quality.packets == u64::from(rounds)
        )));
        for (_, _, o) in &calls {
            let s = dp.stats(o.id).unwrap();
            assert_eq!(s.a.rtp.packets, u64::from(rounds));
            assert_eq!(s.b.rtp.packets, u64::from(rounds));
            assert_eq!(s.a.quality.lost, 0);
        }
        if uring {
            // The streams are silent now: the stall watchdog asks each RTP socket how much
            // it holds (through the ring for fixed ones) and the kernel must answer.
            assert!(
                wait_for(Duration::from_secs(4), || dp.totals().watch_queries >= 1000),
                "{fixed:?}: watchdog made {} queries",
                dp.totals().watch_queries
            );
            assert_eq!(dp.totals().watch_failed, 0, "{fixed:?}");
            assert_eq!(dp.totals().recv_stalls, 0, "{fixed:?}");
        }
        for (_, _, o) in &calls {
            dp.close(o.id);
        }
        assert_eq!(dp.port_usage().0, 0);
        assert!(
            wait_for(Duration::from_secs(3), || dp.totals().fixed_files == 0),
            "{engine:?}/{fixed:?}: {} sockets left in the fixed-file tables",
            dp.totals().fixed_files
        );
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// Descriptors of this process that are UDP/IPv4 sockets bound to one of `ports`: the
/// kernel's socket table gives the inodes of those sockets, `/proc/self/fd` our links to them.
fn relay_fds(ports: &std::collections::HashSet<u16>) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let inodes: std::collections::HashSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            ports.contains(&port).then_some(*f.get(9)?)
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| {
            let l = l.to_string_lossy();
            l.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .is_some_and(|i| inodes.contains(i))
        })
        .count()
}

#[test]
fn nat_endpoint_gets_return_media_and_third_party_is_dropped() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&config(engine, 38000 + 1000 * n as u16));
        let a = sock();
        let b = sock();
        // B's SDP names a port nobody listens on: B is behind NAT and really sends from `b`.
        let b_sdp: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut b_spec = endpoint(&b);
        b_spec.rtp = rtpanchor::addr::PackedAddr::new(b_sdp);
        let o = open(&mut dp, "nat", endpoint(&a), b_spec);
        // B sends first: learned as B's endpoint.
        for i in 0..5u16 {
            b.send_to(&rtp(i, 0, 7, &[3; 20]), relay(o.b_ports.rtp))
                .unwrap();
        }
        assert_eq!(recv_n(&a, 5, Duration::from_secs(3)).len(), 5);
        for i in 0..5u16 {
            a.send_to(&rtp(i, 0, 8, &[4; 20]), relay(o.a_ports.rtp))
                .unwrap();
        }
        let back = recv_n(&b, 5, Duration::from_secs(3));
        assert_eq!(
            back.len(),
            5,
            "{engine:?}: return media reaches the NATed source"
        );
        // A's exact SDP match confirmed A at once: a third party sending to A's port is dropped.
        let intruder = sock();
        for i in 0..5u16 {
            intruder
                .send_to(&rtp(100 + i, 0, 9, &[6; 20]), relay(o.a_ports.rtp))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            recv_n(&b, 1, Duration::from_millis(200)).is_empty(),
            "{engine:?}: injection blocked"
        );
        assert!(wait_for(Duration::from_secs(2), || dp.totals().drop_source == 5));
        // Media still flows from the real A.
        a.send_to(&rtp(50, 0, 8, &[4; 20]), relay(o.a_ports.rtp))
            .unwrap();
        assert_eq!(recv_n(&b, 1, Duration::from_secs(2)).len(), 1);
        // Latch events reached the control side.
        let mut learned = Vec::new();
        while let Some(ev) = dp.poll_event() {
            learned.push((ev.side, ev.addr));
        }
        assert!(
            learned.contains(&(Side::B, b.local_addr().unwrap())),
            "{learned:?}"
        );
        assert_eq!(
            dp.stats(o.id).unwrap().b.learned_rtp,
            Some(b.local_addr().unwrap())
        );
        dp.close(o.id);
    }
}

#[test]
fn burst_far_above_capacity_then_normal_load_every_call_forwards() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&Config {
            num_threads: 1,
            socket_rcvbuf: 64 * 1024,
            ..config(engine, 46000 + 1000 * n as u16)
        });
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let (a, b) = (sock(), sock());
                let o = open(&mut dp, &format!("burst-{i}"), endpoint(&a), endpoint(&b));
                (a, b, o)
            })
            .collect();
        // Burst: 20k packets as fast as we can into every call's A side, nobody reading B.
        let payload = rtp(0, 0, 1, &[0; 160]);
        let start = Instant::now();
        let mut sent = 0;
        'burst: for _ in 0..1000 {
            for (a, _, o) in &calls {
                let _ = a.send_to(&payload, relay(o.a_ports.rtp));
                sent += 1;
                if start.elapsed() > Duration::from_secs(5) {
                    break 'burst;
                }
            }
        }
        assert!(sent > 1000);
        // Drain what was queued at the receivers, then normal load: every call must forward.
        std::thread::sleep(Duration::from_millis(300));
        for (_, b, _) in &calls {
            let _ = recv_n(b, usize::MAX, Duration::from_millis(30));
        }
        for (i, (a, b, o)) in calls.iter().enumerate() {
            for s in 0..3u16 {
                a.send_to(&rtp(1000 + s, 0, 1, &[9; 160]), relay(o.a_ports.rtp))
                    .unwrap();
            }
            let got = recv_n(b, 3, Duration::from_secs(3));
            assert_eq!(
                got.len(),
                3,
                "{engine:?}: call {i} forwards after the burst"
            );
            assert!(got.iter().all(|(p, _)| p[12] == 9));
        }
    }
}

#[test]
fn ipv6_stream_forwards_both_ways() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skip: no IPv6 loopback here");
        return;
    }
    for (n, engine) in engines().into_iter().enumerate() {
        let mut cfg = config(engine, 54000 + 1000 * n as u16);
        cfg.interface = "::1".parse().unwrap();
        let mut dp = start(&cfg);
        let a = UdpSocket::bind("[::1]:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let o = open(&mut dp, "v6", endpoint(&a), endpoint(&b));
        let relay6 = |port: u16| SocketAddr::new("::1".parse().unwrap(), port);
        for i in 0..20u16 {
            a.send_to(&rtp(i, 0, 1, &[1; 40]), relay6(o.a_ports.rtp))
                .unwrap();
            b.send_to(&rtp(i, 0, 2, &[2; 40]), relay6(o.b_ports.rtp))
                .unwrap();
        }
        let at_b = recv_n(&b, 20, Duration::from_secs(3));
        let at_a = recv_n(&a, 20, Duration::from_secs(3));
        assert_eq!((at_b.len(), at_a.len()), (20, 20), "{engine:?}");
        assert!(at_b.iter().all(|(_, from)| *from == relay6(o.b_ports.rtp)));
        dp.close(o.id);
    }
}

/// A receive queue too small for a burst: what the kernel drops before the worker reads it
/// is counted (`drop_rcvbuf`, from SO_RXQ_OVFL), so every datagram sent is either received
/// by the relay or counted as dropped by the kernel, exactly.
#[test]
fn kernel_receive_queue_drops_are_counted_exactly() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&Config {
            num_threads: 1,
            // The kernel's floor (it doubles this): a handful of datagrams.
            socket_rcvbuf: 1024,
            ..config(engine, 40000 + 1000 * n as u16)
        });
        let (a, b) = (sock(), sock());
        let o = open(&mut dp, "rcvbuf", endpoint(&a), endpoint(&b));
        let payload = rtp(0, 0, 1, &[0; 160]);
        let mut sent = 0u64;
        let mut drops = 0;
        // Bursts until the kernel has dropped some (the first one nearly always does).
        for _ in 0..20 {
            for _ in 0..5000 {
                if a.send_to(&payload, relay(o.a_ports.rtp)).is_ok() {
                    sent += 1;
                }
            }
            // One datagram into an empty queue after the burst carries the final count.
            std::thread::sleep(Duration::from_millis(100));
            a.send_to(&payload, relay(o.a_ports.rtp)).unwrap();
            sent += 1;
            let settled = wait_for(Duration::from_secs(3), || {
                let t = dp.totals();
                t.rx_packets + t.drop_rcvbuf == sent
            });
            let t = dp.totals();
            assert!(
                settled,
                "{engine:?}: sent {sent}, received {} + kernel drops {}",
                t.rx_packets, t.drop_rcvbuf
            );
            drops = t.drop_rcvbuf;
            if drops > 0 {
                break;
            }
        }
        assert!(drops > 0, "{engine:?}: no burst overflowed a 2 KiB queue");
        eprintln!("{engine:?}: {sent} sent, {drops} dropped by the kernel, all accounted for");
        assert_eq!(
            dp.totals().dropped(),
            0,
            "{engine:?}: received means forwarded"
        );
        dp.close(o.id);
        let _ = b;
    }
}

/// Video-like bursts (runs of equal-size packets, a shorter one ending each frame, now and
/// then one too big to gather) leave the relay as UDP GSO sends where a batch holds several
/// for one destination; the far end still gets every datagram, intact, sized and in order.
#[test]
fn bursts_leave_as_gso_sends_and_arrive_as_the_same_datagrams() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&Config {
            num_threads: 1,
            ..config(engine, 42000 + 1000 * n as u16)
        });
        let (a, b) = (sock(), sock());
        let o = open(&mut dp, "video", endpoint(&a), endpoint(&b));
        let size = |i: u16| match i % 20 {
            19 => 300,
            7 if i % 60 == 7 => 1400,
            _ => 1000,
        };
        let mut seq = 0u16;
        let mut frames = 0;
        // Frames of 60 packets until the relay has gathered some (usually the first).
        while frames < 50 {
            frames += 1;
            frame_through(&a, &b, &o, seq, 60, size, &format!("{engine:?}"));
            seq += 60;
            if frames >= 3 && dp.totals().gso_sends > 0 {
                break;
            }
        }
        let t = totals_after_sends(&dp, u64::from(seq));
        assert!(
            t.gso_sends > 0,
            "{engine:?}: no batch was gathered in {frames} frames"
        );
        assert!(t.gso_segments >= 2 * t.gso_sends);
        assert_eq!(t.gso_failed, 0);
        assert_eq!(
            t.tx_packets,
            u64::from(seq),
            "{engine:?}: one datagram out per one in"
        );
        assert_eq!(t.rx_packets, u64::from(seq));
        eprintln!(
            "{engine:?}: {seq} packets in {frames} frames, {} GSO sends carried {}",
            t.gso_sends, t.gso_segments
        );
        dp.close(o.id);
    }
}

/// Runs `inner` (an ignored test of this binary) in a network namespace of its own, where it
/// may change the loopback device. Returns false (the caller skips) where namespaces cannot
/// be made here (no CAP_SYS_ADMIN, no `unshare` or `ip`).
fn run_in_own_netns(inner: &str) -> bool {
    let probe = std::process::Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skip: cannot make a network namespace here (unshare -n ip link)");
        return false;
    }
    let mut wrapper = std::process::Command::new("unshare");
    wrapper.args(["-n", "--"]);
    common::run_inner_test(wrapper, inner, &[("RTPANCHOR_IN_NETNS", "1")]);
    true
}

/// A path whose MTU is smaller than the gathered segment size refuses the GSO send as a
/// whole (EINVAL); the relay then sends each datagram by itself, which the kernel fragments
/// as it would have anyway. Nothing is lost, and the refusals are counted.
#[test]
fn gso_refused_by_a_small_mtu_falls_back_to_single_sends() {
    run_in_own_netns("gso_refused_inner");
}

#[test]
#[ignore = "run by gso_refused_by_a_small_mtu_falls_back_to_single_sends in its own netns"]
fn gso_refused_inner() {
    assert_eq!(
        std::env::var("RTPANCHOR_IN_NETNS").as_deref(),
        Ok("1"),
        "changes the loopback MTU: only in a namespace of its own"
    );
    let ip = std::process::Command::new("ip")
        .args(["link", "set", "lo", "mtu", "1000", "up"])
        .status()
        .unwrap();
    assert!(ip.success(), "ip link set lo");
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&Config {
            num_threads: 1,
            ..config(engine, 43000 + 1000 * n as u16)
        });
        let (a, b) = (sock(), sock());
        let o = open(&mut dp, "mtu", endpoint(&a), endpoint(&b));
        // 1,100 bytes: gathered (under 1,200) but over this path's 972-byte UDP payload.
        let mut seq = 0u16;
        for frame in 0..50 {
            let what = format!("{engine:?}");
            frame_through_as(&a, &b, &o, (seq, 40), |_| 1100, &what, false);
            seq += 40;
            if frame >= 2 && dp.totals().gso_failed > 0 {
                break;
            }
        }
        let t = totals_after_sends(&dp, u64::from(seq));
        assert!(t.gso_failed > 0, "{engine:?}: no GSO send was refused");
        assert_eq!(t.gso_sends, 0);
        assert_eq!(t.tx_packets, u64::from(seq));
        assert_eq!(t.drop_send_failed, 0);
        eprintln!(
            "{engine:?}: {seq} packets, {} GSO sends refused and resent singly",
            t.gso_failed
        );
        dp.close(o.id);
    }
}

/// `--no-gso`: the same bursts leave one datagram per send.
#[test]
fn without_gso_bursts_leave_one_by_one() {
    for (n, engine) in engines().into_iter().enumerate() {
        let mut dp = start(&Config {
            num_threads: 1,
            gso: false,
            ..config(engine, 44000 + 1000 * n as u16)
        });
        let (a, b) = (sock(), sock());
        let o = open(&mut dp, "no-gso", endpoint(&a), endpoint(&b));
        // Frames of 50, each read before the next (the receiver's buffer holds ~100).
        for frame in 0..6u16 {
            frame_through(&a, &b, &o, frame * 50, 50, |_| 1000, &format!("{engine:?}"));
        }
        let t = totals_after_sends(&dp, 300);
        assert_eq!(t.gso_sends, 0, "{engine:?}");
        assert_eq!(t.tx_packets, 300);
        dp.close(o.id);
    }
}

/// One worker driving three rings: a packet for a stream on any ring is forwarded as soon as
/// it arrives, not when the ring the thread sleeps on times out (100 ms), and a command for
/// any ring (opening, closing a stream) is taken at once too.
#[test]
fn a_worker_with_several_rings_wakes_for_each_of_them() {
    if std::env::var_os("RTPANCHOR_NO_URING").is_some() {
        return;
    }
    // Tables of 4 sockets and no descriptors to spare: one stream fills a ring.
    let cfg = Config {
        num_threads: 1,
        uring_rings: Some(3),
        uring_fixed_files: Some(4),
        spare_descriptors: Some(usize::MAX),
        ..config(IoEngine::Uring, 60000)
    };
    let mut dp = start(&cfg);
    let mut streams = Vec::new();
    for i in 0..3 {
        let (a, b) = (sock(), sock());
        let o = open(&mut dp, &format!("ring-{i}"), endpoint(&a), endpoint(&b));
        streams.push((a, b, o));
    }
    // All 12 sockets fixed: each stream has a ring (and its table) to itself. Before Linux
    // 6.7 sockets stay descriptors (the watchdog needs socket uring_cmd): 12 fallbacks.
    let want = if kernel_at_least(6, 7) {
        (12, 0)
    } else {
        (0, 12)
    };
    assert!(
        wait_for(Duration::from_secs(5), || {
            let t = dp.totals();
            (t.fixed_files, t.fixed_fallbacks) == want
        }),
        "fixed {} fallbacks {}",
        dp.totals().fixed_files,
        dp.totals().fixed_fallbacks
    );
    // The pings go round the rings: each arrives on a ring other than the one whose sends
    // the worker went to sleep with.
    let mut delays = vec![Vec::new(); streams.len()];
    for seq in 0..7u16 {
        for (ring, (a, b, o)) in streams.iter().enumerate() {
            // Let the worker go back to sleep.
            std::thread::sleep(Duration::from_millis(30));
            let sent = Instant::now();
            a.send_to(&rtp(seq, 0, 9, &[7; 40]), relay(o.a_ports.rtp))
                .unwrap();
            let got = recv_n(b, 1, Duration::from_secs(2));
            assert_eq!(got.len(), 1, "ring {ring}: packet {seq} forwarded");
            delays[ring].push(sent.elapsed());
        }
    }
    for (ring, d) in delays.iter_mut().enumerate() {
        d.sort();
        // Waiting for the timeout would put the median near 50 ms.
        assert!(
            d[3] < Duration::from_millis(25),
            "ring {ring}: median delay {:?} ({d:?})",
            d[3]
        );
    }
    for (_, _, o) in &streams {
        dp.close(o.id);
    }
    assert_eq!(dp.port_usage().0, 0);
}
