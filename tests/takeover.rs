//! Hitless upgrade: a relay started with `--takeover PATH` while another one serves calls
//! there takes its calls and sockets over (SCM_RIGHTS, no re-bind) and the old one exits.
//! Traffic runs throughout, both ways on every call, and ng pings go every 10 ms: every
//! packet sent arrives (none lost in the handover: they wait in the socket queues), every
//! call is there afterwards (ng `query`), and every ping is answered.
//!
//! The SIP and ng TCP listeners and the SIP TLS listener (`--listen-sips`, a test CA) are
//! handed over too: a SIP request, an ng ping over TCP and an OPTIONS over a new TLS
//! connection are answered by the new relay (and by the old one again after the takeover
//! that fails). A TLS connection open during the takeover is closed with the old relay. Run three times: io_uring and mmsg in user space, and io_uring with the kernel path.
//!
//! Ports: ng 15000 (UDP and TCP), phones 15001 (every call's side A) and 15002 (side B),
//! pinger 15003, SIP 15004, SIP client 15005, SIP TLS 19590; relay media 20000-20999 (a block no other test
//! uses): 200 calls, four ports each, as the upgrade test asks. `TAKEOVER_PPS=50000`
//! runs it at the rate (the default, 20,000, keeps CI's 2 cores unhurried).
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::media::rtp;
use common::ng::{client, ng, relay_port, sdp};
use common::peers::tail;
use common::streams::{count_by_ssrc, counters, open_calls};
use common::tls::{options_over_tls, relay_ca, relay_tls_args};
use common::TempDir;
use rtpanchor::control::bencode::Owned;

const NG_PORT: u16 = 15000;
const PHONE_A: u16 = 15001;
const PHONE_B: u16 = 15002;
const PINGER: u16 = 15003;
const SIP_PORT: u16 = 15004;
const SIP_CLIENT: u16 = 15005;
const SIPS_PORT: u16 = 19590;
const MEDIA_MIN: u16 = 20000;
const MEDIA_MAX: u16 = 20999;
const CALLS: usize = 200;
/// Packets per second, all streams together (overridable: TAKEOVER_PPS).
const DEFAULT_PPS: u64 = 20_000;
const PING_EVERY: Duration = Duration::from_millis(10);

fn start(path: &Path, log: &Path, engine: &str, kernel: bool, port_max: u16) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let dir = path.parent().expect("the takeover socket's directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    relay_tls_args(&mut cmd, dir, SIPS_PORT)
        .args(["--listen-ng", &format!("127.0.0.1:{NG_PORT}")])
        .args(["--listen-tcp-ng", &format!("127.0.0.1:{NG_PORT}")])
        .args(["--listen-sip", &format!("127.0.0.1:{SIP_PORT}")])
        .args(["--interface", "127.0.0.1", "--num-threads", "1"])
        .args(["--io-engine", engine])
        .args(if kernel {
            &[][..]
        } else {
            &["--no-kernel-forwarding"][..]
        })
        .args(["--port-min", &MEDIA_MIN.to_string()])
        .args(["--port-max", &port_max.to_string()])
        .args(["--log-level", "info"])
        .arg("--takeover")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start rtpanchor")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn phone(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Sends `pps` packets a second round-robin over the streams (stream 2i: A to B of call i,
/// 2i+1: B to A), counting each stream's packets.
fn send(
    a: UdpSocket,
    b: UdpSocket,
    dests: Vec<SocketAddr>,
    pps: u64,
    sent: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
) {
    let n = dests.len();
    let mut seq = vec![0u16; n];
    let mut k = 0usize;
    let start = Instant::now();
    let mut total: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start.elapsed().as_micros() as u64 * pps / 1_000_000;
        while total < due {
            let pkt = rtp(seq[k], u32::from(seq[k]) * 160, k as u32 + 1, &[0xff; 160]);
            let from = if k % 2 == 0 { &a } else { &b };
            if from.send_to(&pkt, dests[k]).is_ok() {
                sent[k].fetch_add(1, Ordering::Relaxed);
            }
            seq[k] = seq[k].wrapping_add(1);
            k = (k + 1) % n;
            total += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Pings every 10 ms with a fresh cookie; returns (sent, answered) once stopped (answers
/// awaited 1 s after the last ping).
fn pinger(stop: Arc<AtomicBool>) -> (u64, u64) {
    let s = UdpSocket::bind(("127.0.0.1", PINGER)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 512];
    let mut next = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) && stopped_at.is_none() {
            stopped_at = Some(Instant::now());
        }
        if let Some(t) = stopped_at {
            if waiting.is_empty() || t.elapsed() > Duration::from_secs(1) {
                break;
            }
        } else if Instant::now() >= next {
            let cookie = format!("p{sent}");
            s.send_to(format!("{cookie} d7:command4:pinge").as_bytes(), to)
                .unwrap();
            waiting.insert(cookie, Instant::now());
            sent += 1;
            next += PING_EVERY;
        }
        if let Ok(n) = s.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some((cookie, rest)) = text.split_once(' ') {
                if rest.contains("pong") && waiting.remove(cookie).is_some() {
                    answered += 1;
                }
            }
        }
    }
    (sent, answered)
}

fn pid_alive(c: &mut Child) -> bool {
    matches!(c.try_wait(), Ok(None))
}

/// A SIP request to the relay's SIP port; true when a response comes within 2 s.
fn sip_answers() -> bool {
    let s = UdpSocket::bind(("127.0.0.1", SIP_CLIENT)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = format!(
        "OPTIONS sip:127.0.0.1:{SIP_PORT} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{SIP_CLIENT};branch=z9hG4bK-takeover-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: takeover-sip@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(req.as_bytes(), ("127.0.0.1", SIP_PORT)).unwrap();
    let mut buf = [0u8; 4096];
    matches!(s.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 "))
}

#[test]
fn takeover_loses_no_packet_call_or_ping() {
    // Without the in-kernel path every packet crosses the sockets' queues (where a
    // handover could lose it); with it (where it runs) latched RTP bypasses them.
    // The first run begins with a takeover that fails (the new relay's port range lacks
    // half the calls' ports): the running relay must serve on, losing nothing.
    for (engine, kernel, failed_first) in [
        ("uring", false, true),
        ("mmsg", false, false),
        ("uring", true, false),
    ] {
        eprintln!("engine {engine}, kernel path asked: {kernel}");
        run(engine, kernel, failed_first);
    }
}

fn run(engine: &str, kernel: bool, failed_first: bool) {
    let dir = TempDir::new("rtpanchor-takeover").unwrap();
    let path = dir.path().join("takeover.sock");
    let log1 = dir.path().join("old.log");
    let log2 = dir.path().join("new.log");
    let pps: u64 = std::env::var("TAKEOVER_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PPS);
    relay_ca(dir.path());
    let ca = dir.path().join("ca.pem");
    let mut old = Killed(start(&path, &log1, engine, kernel, MEDIA_MAX));
    let ng_addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let mut c = client(ng_addr);
    if let Err(e) = c.wait_ready(Duration::from_secs(15)) {
        panic!("old relay not ready: {e}\n{}", tail(&log1, 30));
    }

    let a = phone(PHONE_A);
    let b = phone(PHONE_B);
    let (sdp_a, sdp_b) = (sdp(PHONE_A, 1), sdp(PHONE_B, 2));
    let dests = open_calls(
        &mut c,
        "takeover",
        CALLS,
        (&sdp_a, &sdp_b),
        relay_port,
        [127, 0, 0, 1].into(),
    );
    let streams = dests.len();
    let sent = counters(streams);
    let got = counters(streams);
    let stop_send = Arc::new(AtomicBool::new(false));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let stop_ping = Arc::new(AtomicBool::new(false));
    let rx_a = {
        let (s, g, st) = (a.try_clone().unwrap(), got.clone(), stop_rx.clone());
        std::thread::spawn(move || count_by_ssrc(s, g, st))
    };
    let rx_b = {
        let (s, g, st) = (b.try_clone().unwrap(), got.clone(), stop_rx.clone());
        std::thread::spawn(move || count_by_ssrc(s, g, st))
    };
    let tx = {
        let (s, t, st) = (sent.clone(), stop_send.clone(), stop_send.clone());
        let _ = t;
        let (a, b) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        std::thread::spawn(move || send(a, b, dests, pps, s, st))
    };
    let pings = {
        let st = stop_ping.clone();
        std::thread::spawn(move || pinger(st))
    };

    // Every stream latched and flowing before the upgrade.
    std::thread::sleep(Duration::from_secs(2));
    let before: u64 = got.iter().map(|g| g.load(Ordering::Relaxed)).sum();
    assert!(
        before > 0,
        "no media before the takeover\n{}",
        tail(&log1, 30)
    );

    if failed_first {
        let log_bad = dir.path().join("refused.log");
        let mut bad = Killed(start(&path, &log_bad, engine, kernel, MEDIA_MIN + 239));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(st)) = bad.0.try_wait() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "a relay that cannot restore every call still runs\n{}",
                tail(&log_bad, 30)
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success(), "{}", tail(&log_bad, 30));
        assert!(
            std::fs::read_to_string(&log_bad)
                .unwrap()
                .contains("takeover abandoned"),
            "{}",
            tail(&log_bad, 30)
        );
        assert!(
            pid_alive(&mut old.0),
            "old relay gone after a failed takeover\n{}",
            tail(&log1, 30)
        );
        let before_fail: u64 = got.iter().map(|g| g.load(Ordering::Relaxed)).sum();
        std::thread::sleep(Duration::from_secs(1));
        let after_fail: u64 = got.iter().map(|g| g.load(Ordering::Relaxed)).sum();
        assert!(
            after_fail > before_fail + pps / 2,
            "media stalled after a failed takeover\n{}",
            tail(&log1, 30)
        );
        assert_eq!(
            options_over_tls(&ca, SIPS_PORT).as_deref(),
            Ok("SIP/2.0 200 OK"),
            "TLS not served again after a failed takeover\n{}",
            tail(&log1, 30)
        );
    }
    // A TLS connection to the old relay: not handed over, it closes when the old relay exits.
    let mut held = common::tls::connect(&ca, SIPS_PORT).expect("TLS to the old relay");

    let t0 = Instant::now();
    let mut new = Killed(start(&path, &log2, engine, kernel, MEDIA_MAX));
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(&mut old.0) {
        assert!(
            Instant::now() < deadline,
            "old relay still running 30 s after the takeover began\nold:\n{}\nnew:\n{}",
            tail(&log1, 30),
            tail(&log2, 30)
        );
        assert!(pid_alive(&mut new.0), "new relay died\n{}", tail(&log2, 40));
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    let at_exit: u64 = got.iter().map(|g| g.load(Ordering::Relaxed)).sum();

    // Media keeps flowing through the new relay alone.
    std::thread::sleep(Duration::from_secs(2));
    stop_send.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    // What is in flight arrives.
    std::thread::sleep(Duration::from_millis(500));
    stop_rx.store(true, Ordering::Relaxed);
    stop_ping.store(true, Ordering::Relaxed);
    rx_a.join().unwrap();
    rx_b.join().unwrap();
    let (pings_sent, pongs) = pings.join().unwrap();

    let total_sent: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let total_got: u64 = got.iter().map(|g| g.load(Ordering::Relaxed)).sum();
    eprintln!(
        "takeover ({engine}, kernel path asked: {kernel}): {CALLS} calls, {pps} packets/s offered, old relay gone {took:?} after the \
         new one started; sent {total_sent}, received {total_got} ({} after the old relay \
         exited); pings {pings_sent}, answered {pongs}",
        total_got - at_exit
    );
    assert!(
        total_got > at_exit + pps,
        "media did not continue through the new relay\n{}",
        tail(&log2, 30)
    );
    let lossy: Vec<(usize, u64, u64)> = (0..streams)
        .map(|k| {
            (
                k,
                sent[k].load(Ordering::Relaxed),
                got[k].load(Ordering::Relaxed),
            )
        })
        .filter(|(_, s, g)| s != g)
        .collect();
    assert!(
        lossy.is_empty(),
        "{} streams lost or duplicated packets (stream, sent, received): {:?}\nold:\n{}\nnew:\n{}",
        lossy.len(),
        &lossy[..lossy.len().min(10)],
        tail(&log1, 30),
        tail(&log2, 30)
    );
    assert_eq!(total_got, total_sent);
    assert!(pings_sent > 100, "too few pings: {pings_sent}");
    assert_eq!(pongs, pings_sent, "ng pings unanswered");

    // The SIP and ng TCP listeners and the TLS listener are the new relay's too.
    assert!(
        sip_answers(),
        "SIP not answered after the takeover\n{}",
        tail(&log2, 30)
    );
    assert_eq!(
        options_over_tls(&ca, SIPS_PORT).as_deref(),
        Ok("SIP/2.0 200 OK"),
        "TLS not served after the takeover\n{}",
        tail(&log2, 30)
    );
    let closed = common::tls::read_message(&mut held, &mut Vec::new());
    // Closed (an end of stream or a reset), not merely silent until the read timeout.
    assert!(
        matches!(&closed, Err(e) if e.contains("closed") || e.contains("reset")),
        "the old relay's TLS connection was not closed: {closed:?}"
    );
    let mut tcp = rtpanchor::client::ng::NgClient::tcp(ng_addr, Duration::from_secs(2))
        .expect("ng TCP connect after the takeover");
    tcp.wait_ready(Duration::from_secs(2))
        .expect("ng TCP ping after the takeover");

    // Every call is the new relay's.
    let mut c = client(ng_addr);
    for i in 0..CALLS {
        let id = format!("takeover-{i}");
        let q = ng(
            &mut c,
            &format!("q{i}"),
            &Owned::dict()
                .with("call-id", id.as_str())
                .with("command", "query"),
        );
        assert_eq!(
            q.get("result").and_then(Owned::as_str),
            Some("ok"),
            "call {id} lost: {q:?}"
        );
    }
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains("took over the running relay's calls"),
        "{}",
        tail(&log2, 30)
    );
    for i in 0..CALLS {
        let id = format!("takeover-{i}");
        ng(
            &mut c,
            &format!("d{i}"),
            &Owned::dict()
                .with("call-id", id.as_str())
                .with("from-tag", "ta")
                .with("command", "delete"),
        );
    }
    drop(new);
}
