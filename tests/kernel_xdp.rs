//! XDP at the ingress of real devices, TC as the fallback. The two-network bed of
//! `two_networks.rs`: a LAN phone (10.0.0.10) and an internet phone (203.0.113.20) in
//! namespaces of their own, the relay in a third with one veth on each network, so a packet
//! the relay relays comes in on one veth and leaves by the other (XDP_REDIRECT).
//!
//! Three cases, the same call and traffic each time (60 packets through the worker, then 200
//! each way once both directions are in the kernel), every packet counted at the far phone:
//! - `xdp`: forwarding on for the relay's veths (XDP's FIB lookup needs it) and an XDP
//!   program on each phone's veth (a veth takes redirected frames only when its peer runs
//!   XDP): `--kernel-mode xdp` attaches XDP to both relay veths, and the XDP program
//!   relays the call (`kernel_xdp_forwarded` grows by the packets, the workers receive none).
//!   The phones' veths compute UDP checksums in software there, as packets from a wire
//!   carry them: a local socket's packet on a veth carries only the pseudo-header's sum
//!   (CHECKSUM_PARTIAL), which the XDP program passes to TC.
//! - `no_napi`: the same without the phones' programs (and with their checksum offload on),
//!   `--kernel-mode xdp`: XDP is attached but may not send out of either veth, so it passes
//!   every packet on and the TC program relays them (none lost, none through XDP).
//! - `forwarding_off`: `auto` on a relay whose veths do not forward attaches TC only and says
//!   why; TC relays the call.
//! - `auto_veth`: as `xdp` but with the default `auto`, which attaches XDP only to devices a
//!   driver backs: on a veth TC costs less (BENCHMARKS.md), so it attaches TC and says why;
//!   TC relays the call.
//!
//! And IPv6 over one veth (`xdp_relays_ipv6_back_out_of_its_veth`): both endpoints behind
//! the relay's one veth, so XDP sends each packet back out of the device it came in on
//! (XDP_TX), with the IPv6 FIB lookup and checksum.
//!
//! Names (prefix ra31x-, h5- for `auto_veth`; C is the case's initial): namespaces ra31x-lan-CPID,
//! ra31x-inet-CPID, ra31x-relay-CPID; veths ra31xlCNNNNN/ra31xLCNNNNN and
//! ra31xiCNNNNN/ra31xICNNNNN. Ports (block 18000-18999, inside the namespaces): ng 18000, LAN
//! phone 18010, internet phone 18020, relay media 18100-18199. IPv6: namespaces
//! ra31x-r6-PID/ra31x-e6-PID, veths ra31x6aNNNNN/ra31x6bNNNNN, fd31:31::1 (relay) and
//! fd31:31::2 (endpoints); ng 18600, relay media 18610-18699.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kernel::cannot_run;
use common::media::{relay_round, rtp, wait_for};
use common::netns::{
    echo_result, inner_test, ip, lan_inet_call, routed6_call, run_echo_phone, spawn_in,
    two_networks, veth_pair6, INET_PHONE, INET_RELAY, LAN_PHONE, LAN_RELAY,
};
use common::ng::{client, find_int, ng};
use common::TempDir;
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

const NG_PORT: u16 = 18000;
const LAN_PORT: u16 = 18010;
const INET_PORT: u16 = 18020;
const MEDIA: (u16, u16) = (18100, 18199);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Xdp,
    NoNapi,
    ForwardingOff,
    AutoVeth,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Xdp => "xdp",
            Case::NoNapi => "no_napi",
            Case::ForwardingOff => "forwarding_off",
            Case::AutoVeth => "auto_veth",
        }
    }

    /// Names of namespaces and veths start with it.
    fn prefix(self) -> &'static str {
        match self {
            Case::AutoVeth => "h5",
            _ => "ra31x",
        }
    }

    fn of(name: &str) -> Case {
        match name {
            "xdp" => Case::Xdp,
            "no_napi" => Case::NoNapi,
            "auto_veth" => Case::AutoVeth,
            _ => Case::ForwardingOff,
        }
    }
}

fn run(case: Case) {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let tag = case.name().chars().next().unwrap_or('x');
    let id = std::process::id();
    let dev = format!("{tag}{}", id % 100_000);
    let pre = case.prefix();
    let (_ns, lan, inet, relay) = two_networks(
        pre,
        &format!("{tag}{id}"),
        &dev,
        [(LAN_PHONE, LAN_RELAY), (INET_PHONE, INET_RELAY)],
    );
    let relay_devs = [format!("{pre}L{dev}"), format!("{pre}I{dev}")];
    if case != Case::ForwardingOff {
        for d in &relay_devs {
            let st = Command::new("ip")
                .args(["netns", "exec", &relay, "sysctl", "-qw"])
                .arg(format!("net.ipv4.conf.{d}.forwarding=1"))
                .status();
            assert!(st.is_ok_and(|s| s.success()), "forwarding on for {d}");
        }
    }
    if matches!(case, Case::Xdp | Case::AutoVeth) {
        // Any native XDP program on the phones' veths gives them the NAPI ring redirected
        // frames land in; ours, with its maps empty here, passes every packet. And the
        // phones compute their UDP checksums themselves, as a packet from a wire has them
        // (with the veth's offload a local socket's packet carries only the pseudo-header's
        // sum, which the XDP program leaves to TC).
        let object = env!("RTPANCHOR_BPF_OBJECT");
        for (ns, d) in [
            (&lan, format!("{pre}l{dev}")),
            (&inet, format!("{pre}i{dev}")),
        ] {
            ip(&[
                "-n", ns, "link", "set", "dev", &d, "xdpdrv", "obj", object, "sec", "xdp",
            ]);
            tx_checksum_off(ns, &d);
        }
    }
    let dir = TempDir::new("rtpanchor-kernel-xdp").unwrap();
    let relay_log = dir.path().join("relay.log");
    let echo_log = dir.path().join("echo.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.args(["--interface", &format!("internal/{LAN_RELAY}")])
        .args(["--interface", &format!("external/{INET_RELAY}")])
        .args(["--listen-ng", &format!("{LAN_RELAY}:{NG_PORT}")])
        .args(["--ng-allow", "10.0.0.0/24", "--no-sip"])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--log-level", "info"]);
    if matches!(case, Case::Xdp | Case::NoNapi) {
        cmd.args(["--kernel-mode", "xdp"]);
    }
    let relay_proc = spawn_in(&relay, &mut cmd, &relay_log);
    let echo = spawn_in(&inet, &mut inner_test("xdp_echo_phone"), &echo_log);
    let mut wrapper = Command::new("ip");
    wrapper.args(["netns", "exec", &lan]);
    common::run_inner_test(wrapper, "xdp_lan_side", &[("RA31X_CASE", case.name())]);
    let (packets, sources) = echo_result(echo, &echo_log, &relay_log);
    drop(relay_proc);
    let log = std::fs::read_to_string(&relay_log).unwrap_or_default();
    // The start log says which program relays on each device, and why not XDP.
    for d in &relay_devs {
        let line = log
            .lines()
            .find(|l| l.contains("in-kernel path") && l.contains(d.as_str()))
            .unwrap_or_else(|| panic!("no line for {d}:\n{log}"));
        if case == Case::AutoVeth {
            assert!(line.contains("a virtual device"), "{line}");
        }
        if case == Case::NoNapi {
            // And says why XDP does not send there.
            assert!(
                log.lines()
                    .any(|l| l.contains(d.as_str()) && l.contains("cannot take redirected frames")),
                "{log}"
            );
        }
        match case {
            Case::Xdp | Case::NoNapi => assert!(line.contains("mode=\"xdp\""), "{line}"),
            Case::AutoVeth => assert!(line.contains("mode=\"tc\""), "{line}"),
            Case::ForwardingOff => {
                assert!(line.contains("mode=\"tc\""), "{line}");
                assert!(line.contains("forwarding is off"), "{line}");
            }
        }
    }
    // All it got came from the relay's external address.
    let line = format!("{packets} packets from {sources:?}");
    assert!(packets >= 260, "{line}");
    assert_eq!(sources.len(), 1, "{line}");
    assert!(
        sources.iter().all(|s| s.ip().to_string() == INET_RELAY),
        "{line}"
    );
}

const ETHTOOL_STXCSUM: u32 = 0x17;

/// Sets the ethtool value `cmd` (an `ETHTOOL_S*` of `struct ethtool_value`) of device `dev` in
/// namespace `ns` to `value` (what `ethtool -K` does; ethtool is not installed here): the
/// SIOCETHTOOL ioctl, from python3.
fn ethtool(ns: &str, dev: &str, cmd: u32, value: u32) {
    const SCRIPT: &str = "import ctypes, fcntl, socket, struct, sys\n\
        data = ctypes.create_string_buffer(struct.pack('II', int(sys.argv[2]), int(sys.argv[3])))\n\
        ifr = struct.pack('16sP16x', sys.argv[1].encode(), ctypes.addressof(data))\n\
        fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)\n";
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", SCRIPT, dev])
        .args([cmd.to_string(), value.to_string()])
        .status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "ethtool {cmd:#x} {value} for {dev} (needs python3)"
    );
}

/// Turns the transmit checksum offload of device `dev` in namespace `ns` off (`ethtool -K DEV
/// tx off`).
fn tx_checksum_off(ns: &str, dev: &str) {
    ethtool(ns, dev, ETHTOOL_STXCSUM, 0);
}

#[test]
fn xdp_relays_a_call_between_two_veths() {
    run(Case::Xdp);
}

#[test]
fn tc_relays_what_xdp_cannot_send() {
    run(Case::NoNapi);
}

#[test]
fn tc_relays_where_auto_does_not_attach_xdp() {
    run(Case::ForwardingOff);
}

#[test]
fn auto_attaches_tc_to_veths() {
    run(Case::AutoVeth);
}

/// The internet phone, for at most 40 s ([`run_echo_phone`]).
#[test]
#[ignore = "the internet phone, run by the tests above in its namespace"]
fn xdp_echo_phone() {
    run_echo_phone(INET_PORT, Duration::from_secs(40));
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find(|l| l.starts_with("m=audio "))
        .and_then(|m| m.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m= line: {sdp}"))
}

/// Sends `count` packets (seq from `first`) to `to`, 5 ms apart, and returns how many echoes
/// came back from `to` within a second of the last send.
fn round(s: &UdpSocket, to: SocketAddr, first: u16, count: u16) -> usize {
    let mut back = 0;
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    for seq in first..first + count {
        s.send_to(&rtp(seq, u32::from(seq) * 160, 0x1A7, &[0xff; 160]), to)
            .unwrap();
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            back += usize::from(from == to);
        }
    }
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            back += usize::from(from == to);
        }
    }
    back
}

/// The relay's figures this side reads.
struct Figures {
    rx: i64,
    kernel: i64,
    tc: i64,
    xdp: i64,
    xdp_devices: i64,
}

fn figures(c: &mut NgClient, n: &mut u32) -> Figures {
    *n += 1;
    let r = ng(
        c,
        &format!("st{n}"),
        &Owned::dict().with("command", "statistics"),
    );
    let get = |k: &str| find_int(&r, k).unwrap_or(-1);
    Figures {
        rx: get("rx_packets"),
        kernel: get("kernel_forwarded"),
        tc: get("kernel_tc_forwarded"),
        xdp: get("kernel_xdp_forwarded"),
        xdp_devices: get("kernel_xdp_devices"),
    }
}

#[test]
#[ignore = "the LAN side, run by the tests above in the LAN namespace"]
fn xdp_lan_side() {
    let case = Case::of(&std::env::var("RA31X_CASE").unwrap_or_default());
    let ng_at = SocketAddr::new(LAN_RELAY.parse().unwrap(), NG_PORT);
    let mut c = client(ng_at);
    c.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let phone = UdpSocket::bind((LAN_PHONE, LAN_PORT)).unwrap();
    let (_, answer) = lan_inet_call(&mut c, "xdp", LAN_PORT, INET_PORT);
    let to_lan = answer
        .get("sdp")
        .and_then(Owned::as_str)
        .unwrap_or_default();
    let relay_lan = SocketAddr::new(LAN_RELAY.parse().unwrap(), media_port(to_lan));

    // Through a worker first (nothing is latched yet).
    let back = round(&phone, relay_lan, 100, 60);
    assert!(back >= 55, "{back} of 60 came back");
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut handed = false;
    while Instant::now() < deadline && !handed {
        round(&phone, relay_lan, 200, 10);
        n += 1;
        let r = ng(
            &mut c,
            &format!("ks{n}"),
            &Owned::dict().with("command", "statistics"),
        );
        handed = find_int(&r, "kernel_streams") == Some(2);
    }
    assert!(handed, "both directions were not handed to the kernel");
    // Anything still folding from the hand-over rounds settles first.
    std::thread::sleep(Duration::from_millis(1200));
    let before = figures(&mut c, &mut n);
    let back = round(&phone, relay_lan, 300, 200);
    assert_eq!(back, 200, "every packet came back");
    assert!(
        wait_for(Duration::from_secs(3), || figures(&mut c, &mut n).kernel
            - before.kernel
            >= 400),
        "the kernel relayed the 400 packets"
    );
    let after = figures(&mut c, &mut n);
    let (tc, xdp) = (after.tc - before.tc, after.xdp - before.xdp);
    assert_eq!(
        after.rx - after.kernel,
        before.rx - before.kernel,
        "no packet reached the worker"
    );
    eprintln!(
        "{case:?}: tc relayed {tc}, xdp {xdp}, xdp devices {}",
        after.xdp_devices
    );
    match case {
        Case::Xdp => {
            assert_eq!(after.xdp_devices, 2);
            assert_eq!((xdp, tc), (400, 0), "XDP relayed every packet");
        }
        Case::NoNapi => {
            assert_eq!(after.xdp_devices, 2);
            assert_eq!((xdp, tc), (0, 400), "TC relayed what XDP could not send");
        }
        Case::ForwardingOff | Case::AutoVeth => {
            assert_eq!(after.xdp_devices, 0);
            assert_eq!((xdp, tc), (0, 400), "TC relayed every packet");
        }
    }
    ng(
        &mut c,
        "delete",
        &Owned::dict()
            .with("command", "delete")
            .with("call-id", "xdp"),
    );
}

const RELAY6: &str = "fd31:31::1";
const PEERS6: &str = "fd31:31::2";

#[test]
fn xdp_relays_ipv6_back_out_of_its_veth() {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let id = std::process::id() % 100_000;
    let (nr, ne) = (format!("ra31x-r6-{id}"), format!("ra31x-e6-{id}"));
    let (vr, ve) = (format!("ra31x6a{id}"), format!("ra31x6b{id}"));
    let _ns = veth_pair6([&nr, &ne], [&vr, &ve], [RELAY6, PEERS6]);
    let st = Command::new("ip")
        .args(["netns", "exec", &nr, "sysctl", "-qw"])
        .arg(format!("net.ipv6.conf.{vr}.forwarding=1"))
        .status();
    assert!(st.is_ok_and(|s| s.success()), "forwarding on for {vr}");
    let object = env!("RTPANCHOR_BPF_OBJECT");
    ip(&[
        "-n", &ne, "link", "set", "dev", &ve, "xdpdrv", "obj", object, "sec", "xdp",
    ]);
    tx_checksum_off(&ne, &ve);
    let dir = TempDir::new("rtpanchor-kernel-xdp6").unwrap();
    let relay_log = dir.path().join("relay.log");
    let ng_addr = format!("[{RELAY6}]:18600");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.args(["--interface", RELAY6, "--listen-ng", &ng_addr])
        .args(["--ng-allow", PEERS6, "--no-sip", "--kernel-mode", "xdp"])
        .args(["--port-min", "18610", "--port-max", "18699"])
        .args(["--num-threads", "1", "--log-level", "info"]);
    let _relay = spawn_in(&nr, &mut cmd, &relay_log);
    let mut wrapper = Command::new("ip");
    wrapper.args(["netns", "exec", &ne]);
    common::run_inner_test(wrapper, "xdp6_inner", &[("RA31X_NG6", &ng_addr)]);
    let log = std::fs::read_to_string(&relay_log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("mode=\"xdp\"") && l.contains(vr.as_str())),
        "{log}"
    );
}

#[test]
#[ignore = "run by xdp_relays_ipv6_back_out_of_its_veth in the endpoints' namespace"]
fn xdp6_inner() {
    let (mut c, [a, b], [at_a, at_b]) = routed6_call("RA31X_NG6", RELAY6, PEERS6, "xdp6");
    let first: Vec<u16> = (0..60).collect();
    relay_round(&a, at_a, &b, at_b, &first, 0xa);
    relay_round(&b, at_b, &a, at_a, &first, 0xb);
    let mut n = 0;
    assert!(
        wait_for(Duration::from_secs(5), || {
            n += 1;
            let r = ng(
                &mut c,
                &format!("k{n}"),
                &Owned::dict().with("command", "statistics"),
            );
            find_int(&r, "kernel_streams") == Some(2)
        }),
        "both directions handed over"
    );
    let before = figures(&mut c, &mut n);
    let second: Vec<u16> = (60..260).collect();
    relay_round(&a, at_a, &b, at_b, &second, 0xa);
    relay_round(&b, at_b, &a, at_a, &second, 0xb);
    let after = figures(&mut c, &mut n);
    assert_eq!(after.xdp_devices, 1);
    assert_eq!(
        (after.xdp - before.xdp, after.tc - before.tc),
        (400, 0),
        "XDP relayed every packet of the second round"
    );
}
