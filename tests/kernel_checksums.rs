// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! The TC program's rewrite leaves every checksum valid. Three calls through one relay on
//! 127.0.0.1, each relayed in the kernel once latched, every packet captured on `lo` and
//! checked (tests/data/udp_checksums.py: an AF_PACKET socket, from python3):
//! - `moved`: endpoints on 127.0.0.2 and 127.0.0.3, so the rewrite changes the addresses (the
//!   pseudo-header's sum moves) as well as the ports;
//! - `same`: endpoints on 127.0.0.1, as the relay (only the ports move the sum);
//! - `whole`: one endpoint (127.0.0.4) sends through a raw socket, so its packets enter with
//!   a whole UDP checksum computed (no CHECKSUM_PARTIAL), every fourth with none (0); the
//!   other end's stack verifies them and drops any whose checksum is wrong.
//!
//! A local socket's packet on loopback leaves the UDP checksum to the device
//! (CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, which no receiver on `lo`
//! checks), so the capture checks that field against the rewritten addresses, and a whole
//! checksum by summing the datagram. Ports: ng 61000, relay media 61100-61199 (block
//! 61000-61799).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::kernel::cannot_run;
use common::media::{pcmu, recv_n, wait_for};
use common::ng::{client, find_int, ng, start_relay_in};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;
use rtpanchor::sdp::AudioSdp;

const NG_PORT: u16 = 61000;
const MEDIA: (u16, u16) = (61100, 61199);
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/udp_checksums.py");

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn bind(last: u8) -> UdpSocket {
    let s = UdpSocket::bind((v4(last), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// A flow (relay port, endpoint port) and the script's counts for it.
type Flow = ((u16, u16), Vec<(String, u64)>);

/// The AF_PACKET capture on `lo`, stopped (and its verdicts read) by closing its stdin.
struct Capture {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Capture {
    fn start() -> Capture {
        let mut child = Command::new("python3")
            .args([SCRIPT, "capture"])
            .args([MEDIA.0.to_string(), MEDIA.1.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the capture");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("capture stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("capture starts");
        assert_eq!(line.trim(), "ready", "the capture listens on lo");
        Capture { child, stdin, out }
    }

    /// Per flow (relay port, endpoint port): the counts the script printed.
    fn finish(mut self) -> Vec<Flow> {
        drop(self.stdin.take());
        let mut flows = Vec::new();
        for line in (&mut self.out).lines() {
            let line = line.expect("capture output");
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() != Some(&"flow") || w.len() < 3 {
                continue;
            }
            let key = (w[1].parse().unwrap(), w[2].parse().unwrap());
            let counts = w[3..]
                .chunks(2)
                .map(|p| (p[0].to_string(), p[1].parse().unwrap()))
                .collect();
            flows.push((key, counts));
        }
        let _ = self.child.wait();
        flows
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay's socket for `cmd`'s party: offer (A's SDP at `at`) and answer (B's).
fn offer_answer(c: &mut NgClient, call: &str, a: SocketAddr, b: SocketAddr) -> (u16, u16) {
    let mut ports = [0u16; 2];
    for (k, (cmd, at)) in [("offer", a), ("answer", b)].into_iter().enumerate() {
        let mut req = Owned::dict()
            .with("sdp", AudioSdp::new(at, k as u64 + 1).to_string().as_str())
            .with("call-id", call)
            .with("from-tag", "tagA")
            .with("command", cmd);
        if cmd == "answer" {
            req = req.with("to-tag", "tagB");
        }
        let r = ng(c, &format!("{call}-{cmd}"), &req);
        assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
        let sdp = r.get("sdp").and_then(Owned::as_str).unwrap();
        ports[k] = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|m| m.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no m= port: {sdp}"));
    }
    // The offer's SDP goes to B: its port is where B sends; the answer's is where A sends.
    (ports[1], ports[0])
}

/// (kernel_streams, kernel_forwarded) from `statistics`.
fn kernel(c: &mut NgClient, n: &mut u32) -> (i64, i64) {
    *n += 1;
    let r = ng(
        c,
        &format!("st{n}"),
        &Owned::dict().with("command", "statistics"),
    );
    (
        find_int(&r, "kernel_streams").unwrap_or(-1),
        find_int(&r, "kernel_forwarded").unwrap_or(-1),
    )
}

/// Sends `seqs` from A to the relay's `to` (through the raw socket of the script when `raw`),
/// and counts what reaches `at`.
fn one_way(
    from: &UdpSocket,
    raw: bool,
    to: SocketAddr,
    at: &UdpSocket,
    seqs: std::ops::Range<u16>,
) -> usize {
    let mut got = 0;
    for first in seqs.clone().step_by(25) {
        let n = 25.min(seqs.end - first);
        if raw {
            let a = from.local_addr().unwrap();
            let st = Command::new("python3")
                .args([SCRIPT, "send"])
                .args([a.ip().to_string(), a.port().to_string()])
                .args([to.ip().to_string(), to.port().to_string()])
                .args(["4660".to_string(), first.to_string(), n.to_string()])
                .status();
            assert!(st.is_ok_and(|s| s.success()), "raw send (python3)");
        } else {
            for q in first..first + n {
                from.send_to(&pcmu(q, 0xb0b), to).unwrap();
            }
        }
        got += recv_n(at, usize::from(n), Duration::from_secs(2)).len();
    }
    got
}

#[test]
fn rewritten_packets_carry_valid_checksums() {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let relay = start_relay_in(NG_PORT, MEDIA, "uring", &[]);
    let mut c = client(relay.ng);
    let mut n = 0;
    let capture = Capture::start();
    let relay_ip = IpAddr::V4(v4(1));
    // (name, A's address, B's address, A sends raw).
    let calls = [
        ("moved", 2, 3, false),
        ("same", 1, 1, false),
        ("whole", 4, 5, true),
    ];
    let mut checked = Vec::new();
    for (k, &(name, la, lb, raw)) in calls.iter().enumerate() {
        let (a, b) = (bind(la), bind(lb));
        let (a_at, b_at) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (to_a, to_b) = offer_answer(&mut c, name, a_at, b_at);
        let (to_a, to_b) = (
            SocketAddr::new(relay_ip, to_a),
            SocketAddr::new(relay_ip, to_b),
        );
        // Through the worker until both ends are latched and the call is in the kernel.
        assert_eq!(
            one_way(&a, raw, to_a, &b, 0..60),
            60,
            "{name}: A to B, worker"
        );
        assert_eq!(
            one_way(&b, false, to_b, &a, 0..60),
            60,
            "{name}: B to A, worker"
        );
        let streams = 2 * (k as i64 + 1);
        assert!(
            wait_for(Duration::from_secs(5), || kernel(&mut c, &mut n).0
                == streams),
            "{name}: the call went to the kernel: {:?}",
            kernel(&mut c, &mut n)
        );
        let before = kernel(&mut c, &mut n).1;
        assert_eq!(
            one_way(&a, raw, to_a, &b, 60..160),
            100,
            "{name}: A to B, kernel"
        );
        assert_eq!(
            one_way(&b, false, to_b, &a, 60..160),
            100,
            "{name}: B to A, kernel"
        );
        // The workers fold the kernel's counts in every second or so.
        assert!(
            wait_for(Duration::from_secs(5), || kernel(&mut c, &mut n).1 - before
                >= 200),
            "{name}: the kernel relayed {} of 200",
            kernel(&mut c, &mut n).1 - before
        );
        checked.push((
            name,
            raw,
            (to_b.port(), b_at.port()),
            (to_a.port(), a_at.port()),
        ));
    }
    let flows = capture.finish();
    eprintln!("capture: {flows:?}");
    let count = |flow: (u16, u16), what: &str| -> u64 {
        flows
            .iter()
            .filter(|(f, _)| *f == flow)
            .flat_map(|(_, c)| c.iter())
            .filter(|(k, _)| k == what)
            .map(|(_, v)| *v)
            .sum()
    };
    for (flow, counts) in &flows {
        for (k, v) in counts {
            if k.ends_with("_bad") {
                assert_eq!(*v, 0, "flow {flow:?}: {counts:?}");
            }
        }
    }
    for (name, raw, a_to_b, b_to_a) in checked {
        for flow in [a_to_b, b_to_a] {
            let all = count(flow, "partial_ok") + count(flow, "full_ok") + count(flow, "zero");
            assert!(
                all >= 160,
                "{name} {flow:?}: {all} packets checked: {flows:?}"
            );
        }
        if raw {
            // The kernel relayed 100 of A's packets as they came, 25 without a checksum;
            // the worker's 60 left with a partial one, as any socket's.
            assert!(count(a_to_b, "full_ok") >= 75, "{name}: {flows:?}");
            assert!(count(a_to_b, "zero") >= 25, "{name}: {flows:?}");
        }
    }
}
