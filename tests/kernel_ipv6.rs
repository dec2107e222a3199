// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! IPv6 in the kernel: a relay on ::1 hands latched RTP to the TC program as on 127.0.0.1,
//! with the same figures the worker would keep; a relay on a real IPv6 address (a veth pair
//! between two namespaces the test makes) relays through the IPv6 routing table and
//! neighbour cache.
//!
//! Ports: media 4500-4599, ng 4600 (this file's block).

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::kernel::cannot_run;
use common::media::{endpoint, pcmu, recv_n, relay_round, wait_for};
use common::netns::{routed6_call, veth_pair6};
use rtpanchor::config::{Config, IoEngine};
use rtpanchor::dataplane::DataPlane;
use rtpanchor::session::backend::{MediaBackend, StreamSpec};

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
}

fn sock6() -> UdpSocket {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

#[test]
fn ipv6_on_loopback_is_relayed_in_the_kernel_with_the_workers_figures() {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let mut cfg = Config {
        io_engine: IoEngine::Auto,
        num_threads: 1,
        port_min: 4500,
        port_max: 4599,
        kernel_forwarding: true,
        ..Config::default()
    };
    cfg.interface.local = Ipv6Addr::LOCALHOST.into();
    let mut dp = DataPlane::start(&cfg).unwrap();
    assert!(
        dp.kernel_forwarding(),
        "the program runs for ::1: {:?}",
        dp.kernel_unavailable()
    );
    let (a, b) = (sock6(), sock6());
    let o = dp
        .open(
            StreamSpec {
                call_id: "v6".into(),
                a: endpoint(&a),
                b: endpoint(&b),
                locals: [None; 2],
            },
            0,
        )
        .unwrap();
    let (at_a, at_b) = (v6(o.a_ports.rtp), v6(o.b_ports.rtp));
    // Both ends latch on their first packets, which the worker relays.
    let first: Vec<u16> = (0..60).collect();
    relay_round(&a, at_a, &b, at_b, &first, 0xa);
    relay_round(&b, at_b, &a, at_a, &first, 0xb);
    assert!(
        wait_for(Duration::from_secs(3), || dp.totals().kernel_streams == 2),
        "both directions handed over: {:?}",
        dp.totals()
    );
    assert!(wait_for(Duration::from_secs(3), || {
        let s = dp.stats(o.id).unwrap();
        s.a.rtp.packets == 60 && s.b.rtp.packets == 60
    }));
    let kernel_before = dp.totals().kernel_forwarded;
    let user_before = dp.totals().rx_packets - kernel_before;

    // Then the kernel: one lost (150), one duplicated (160), two swapped (201, 200).
    let mut second: Vec<u16> = (60..300).filter(|&q| q != 150).collect();
    let at = second.iter().position(|&q| q == 160).unwrap();
    second.insert(at, 160);
    let at = second.iter().position(|&q| q == 200).unwrap();
    second.swap(at, at + 1);
    relay_round(&a, at_a, &b, at_b, &second, 0xa);
    relay_round(&b, at_b, &a, at_a, &second, 0xb);
    let n = 2 * second.len() as u64;
    assert!(
        wait_for(Duration::from_secs(3), || dp.totals().kernel_forwarded
            == kernel_before + n),
        "every packet of the second round went through the kernel: {:?}",
        dp.totals()
    );
    let t = dp.totals();
    assert_eq!(
        t.rx_packets - t.kernel_forwarded,
        user_before,
        "none reached the worker"
    );
    assert_eq!(t.kernel_takebacks, 0);
    assert!(wait_for(Duration::from_secs(3), || {
        let s = dp.stats(o.id).unwrap();
        s.a.quality.packets == 300 && s.b.quality.packets == 300
    }));
    let s = dp.stats(o.id).unwrap();
    for (side, ssrc) in [(&s.a, 0xa), (&s.b, 0xb)] {
        assert_eq!((side.rtp.packets, side.rtp.bytes), (300, 300 * 172));
        let q = &side.quality;
        assert_eq!(q.ssrc, ssrc);
        assert_eq!(q.extended_highest_seq, 299);
        assert_eq!((q.expected, q.lost), (300, 1), "{q:?}");
        assert_eq!((q.duplicates, q.reordered), (1, 1), "{q:?}");
    }
    // Closed: nothing more reaches B.
    dp.close(o.id);
    std::thread::sleep(Duration::from_millis(20));
    a.send_to(&pcmu(400, 0xa), at_a).unwrap();
    assert!(recv_n(&b, 1, Duration::from_millis(200)).is_empty());
    assert_eq!(dp.totals().kernel_streams, 0);
}

/// A relay process, killed by pid when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RELAY6: &str = "fd19:19::1";
const PEERS6: &str = "fd19:19::2";

/// A relay on a real IPv6 address: its namespace and the endpoints' are joined by a veth
/// pair, so media crosses a device both ways; once latched, the program relays it through
/// the IPv6 routing table and neighbour cache (NDP).
#[test]
fn a_relay_on_a_real_ipv6_address_relays_in_the_kernel_over_a_veth_pair() {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let id = std::process::id() % 100_000;
    let (nr, ne) = (format!("ra19-r{id}"), format!("ra19-e{id}"));
    let (vr, ve) = (format!("ra19-a{id}"), format!("ra19-b{id}"));
    let _ns = veth_pair6([&nr, &ne], [&vr, &ve], [RELAY6, PEERS6]);
    let ng_addr = format!("[{RELAY6}]:4600");
    let _relay = Child(
        std::process::Command::new("ip")
            .args(["netns", "exec", &nr, env!("CARGO_BIN_EXE_rtpanchor")])
            .args(["--interface", RELAY6, "--listen-ng", &ng_addr])
            .args(["--ng-allow", PEERS6])
            .args(["--port-min", "4510", "--port-max", "4599", "--no-sip"])
            .args(["--num-threads", "1", "--log-level", "warn"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start rtpanchor in its namespace"),
    );
    let mut wrapper = std::process::Command::new("ip");
    wrapper.args(["netns", "exec", &ne]);
    common::run_inner_test(wrapper, "routed6_inner", &[("RA19_NG6", &ng_addr)]);
}

#[test]
#[ignore = "run by a_relay_on_a_real_ipv6_address_relays_in_the_kernel_over_a_veth_pair"]
fn routed6_inner() {
    use common::ng::{find_int, int_at, ng};
    use rtpanchor::client::ng::NgClient;
    use rtpanchor::control::bencode::Owned;

    let (mut c, [a, b], [at_a, at_b]) = routed6_call("RA19_NG6", RELAY6, PEERS6, "routed6");
    let asked = std::cell::Cell::new(0u32);
    let stat = |c: &mut NgClient, key: &str| {
        asked.set(asked.get() + 1);
        let r = ng(
            c,
            &format!("s{}", asked.get()),
            &Owned::dict().with("command", "statistics"),
        );
        find_int(&r, key).unwrap_or(-1)
    };
    let first: Vec<u16> = (0..60).collect();
    relay_round(&a, at_a, &b, at_b, &first, 0xa);
    relay_round(&b, at_b, &a, at_a, &first, 0xb);
    assert!(
        wait_for(Duration::from_secs(3), || stat(&mut c, "kernel_streams")
            == 2),
        "both directions handed over: {}",
        stat(&mut c, "kernel_streams")
    );
    let second: Vec<u16> = (60..260).collect();
    relay_round(&a, at_a, &b, at_b, &second, 0xa);
    relay_round(&b, at_b, &a, at_a, &second, 0xb);
    assert!(
        wait_for(Duration::from_secs(3), || stat(&mut c, "kernel_forwarded")
            >= 400),
        "the kernel relayed the second round: {}",
        stat(&mut c, "kernel_forwarded")
    );
    assert_eq!(stat(&mut c, "kernel_takebacks"), 0, "nothing went back");
    let q = ng(
        &mut c,
        "q",
        &Owned::dict()
            .with("call-id", "routed6")
            .with("command", "query"),
    );
    assert_eq!(int_at(&q, &["totals", "RTP", "packets"]), 2 * 260, "{q}");
}
