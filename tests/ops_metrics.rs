//! `/metrics` and `/health` end to end, with a real Prometheus (Debian `prometheus`) scraping
//! the relay every second from its own temporary storage, on loopback ports of this test's
//! block (10000-10999: ng 10000, HTTP 10002, Prometheus 10003, media 10100-10499).
//!
//! Premise of the packet check: the relay runs with `--no-kernel-forwarding`, so every packet
//! is handled in user space; `rtpanchor_packets_total{type="userspace"}` counts datagrams
//! received on relay ports (RTP and RTCP, as rtpengine's counter), and the test sends only
//! RTP, so it must equal exactly the packets the test sent, and `{type="kernel"}` stay 0.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{exposed, http_get};
use common::kernel::cannot_run;
use common::media::{count_rx, media_sock, pcmu, wait_for};
use common::ng::{client, ng, relay_port, sdp, Relay};
use common::peers::{find_program, Peer};
use common::TempDir;
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

const NG: u16 = 10_000;
const HTTP: u16 = 10_002;
const PROM: u16 = 10_003;
const PORT_MIN: u16 = 10_100;
const PORT_MAX: u16 = 10_499;
const CALLS: usize = 3;
const PACKETS: u16 = 40;

fn start_relay(ng: u16, http: u16, ports: (u16, u16), extra: &[&str]) -> Relay {
    let ng: SocketAddr = SocketAddr::from(([127, 0, 0, 1], ng));
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", "127.0.0.1", "--listen-ng", &ng.to_string()])
        .args(["--port-min", &ports.0.to_string()])
        .args(["--port-max", &ports.1.to_string()])
        .args(["--listen-http", &format!("127.0.0.1:{http}")])
        .args(["--no-sip", "--num-threads", "1"])
        .args(extra)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let relay = Relay::new(child, ng);
    if let Err(e) = client(ng).wait_ready(Duration::from_secs(10)) {
        panic!("relay did not answer ping with pong in 10 s: {e}");
    }
    relay
}

/// Prometheus' instant query `q`, as a number; `None` while it has no sample.
fn prom_value(q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(PROM, &format!("/api/v1/query?query={enc}"));
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let sample = v
        .get("data")?
        .get("result")?
        .as_array()?
        .first()?
        .get("value")?;
    sample.get(1)?.as_str()?.parse().ok()
}

/// Polls Prometheus until `q` equals `want` or `limit` passes; the last value seen.
fn prom_wait(q: &str, want: f64, limit: Duration) -> Option<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let v = prom_value(q);
        if v == Some(want) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_prometheus(dir: &TempDir) -> Peer {
    let prom = find_program("prometheus").expect(
        "prometheus not installed (Debian package `prometheus`; tools/test.sh installs it)",
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: rtpanchor\n    static_configs:\n      \
             - targets: ['127.0.0.1:{HTTP}']\n"
        ),
    )
    .unwrap();
    let mut peer = Peer::spawn(
        "prometheus",
        Command::new(prom)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROM}"))
            .arg("--log.level=warn"),
        &dir.path().join("prometheus.log"),
    )
    .expect("start prometheus");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get_ready(PROM).is_none() {
        assert!(
            peer.is_running(),
            "prometheus exited:\n{}",
            peer.log_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 20 s:\n{}",
            peer.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peer
}

fn http_get_ready(port: u16) -> Option<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    out.starts_with(b"HTTP/1.1 200").then_some(())
}

/// Offer (A) and answer (B) for call `id`: the relay ports A and B send to.
fn set_up(c: &mut NgClient, id: &str, a: &UdpSocket, b: &UdpSocket) -> (u16, u16) {
    let offer = ng(
        c,
        &format!("o-{id}"),
        &Owned::dict()
            .with("sdp", sdp(a.local_addr().unwrap().port(), 1).as_str())
            .with("call-id", id)
            .with("from-tag", "A")
            .with("command", "offer"),
    );
    let to_b = relay_port(offer.get("sdp").and_then(Owned::as_str).unwrap());
    let answer = ng(
        c,
        &format!("a-{id}"),
        &Owned::dict()
            .with("sdp", sdp(b.local_addr().unwrap().port(), 2).as_str())
            .with("call-id", id)
            .with("from-tag", "A")
            .with("to-tag", "B")
            .with("command", "answer"),
    );
    let to_a = relay_port(answer.get("sdp").and_then(Owned::as_str).unwrap());
    (to_a, to_b)
}

#[test]
fn prometheus_sees_the_packets_sent_and_sessions_back_to_zero() {
    let relay = start_relay(NG, HTTP, (PORT_MIN, PORT_MAX), &["--no-kernel-forwarding"]);
    let mut tmp = TempDir::new("rtpanchor-prom").unwrap();
    let mut prom = start_prometheus(&tmp);
    let mut c = client(relay.ng);

    // /health: ng answers a ping, the worker answers a wake-up.
    let (status, body) = http_get(HTTP, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(HTTP, "/nope").0, 404);

    let mut sent = 0u64;
    let mut sockets = Vec::new();
    for call in 0..CALLS {
        let a = media_sock();
        let b = media_sock();
        let (to_a, to_b) = set_up(&mut c, &format!("prom-call-{call}"), &a, &b);
        for i in 0..PACKETS {
            a.send_to(&pcmu(i, 0xa0 + call as u32), ("127.0.0.1", to_a))
                .unwrap();
            b.send_to(&pcmu(i, 0xb0 + call as u32), ("127.0.0.1", to_b))
                .unwrap();
        }
        sent += 2 * u64::from(PACKETS);
        assert_eq!(
            count_rx(&b, PACKETS.into(), Duration::from_secs(3)),
            PACKETS as usize
        );
        assert_eq!(
            count_rx(&a, PACKETS.into(), Duration::from_secs(3)),
            PACKETS as usize
        );
        sockets.push((a, b));
    }

    // The exposition itself: promtool accepts it, and it carries what was done.
    let (status, text) = http_get(HTTP, "/metrics");
    assert_eq!(status, 200);
    let promtool = find_program("promtool").expect("promtool (Debian package `prometheus`)");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exposed(&text, "rtpanchor_sessions"), Some(CALLS as f64));
    assert_eq!(
        exposed(&text, "rtpanchor_requests_total{request=\"offer\"}"),
        Some(CALLS as f64)
    );
    assert_eq!(
        exposed(&text, "rtpanchor_mediastreams{type=\"userspace\"}"),
        Some(2.0 * CALLS as f64)
    );
    assert_eq!(
        exposed(&text, "rtpanchor_kernel_path{state=\"disabled\"}"),
        Some(1.0)
    );
    assert_eq!(
        exposed(&text, "rtpanchor_ports_used"),
        Some(4.0 * CALLS as f64)
    );

    // Prometheus, scraping every second, sees exactly the packets sent.
    let user = prom_wait(
        "rtpanchor_packets_total{type=\"userspace\"}",
        sent as f64,
        Duration::from_secs(20),
    );
    assert_eq!(user, Some(sent as f64), "{}", prom.log_tail(20));
    assert_eq!(
        prom_value("rtpanchor_packets_total{type=\"kernel\"}"),
        Some(0.0)
    );
    assert_eq!(
        prom_value("rtpanchor_sessions"),
        Some(CALLS as f64),
        "sessions while the calls are up"
    );

    for call in 0..CALLS {
        let r = ng(
            &mut c,
            &format!("d{call}"),
            &Owned::dict()
                .with("call-id", format!("prom-call-{call}").as_str())
                .with("from-tag", "A")
                .with("command", "delete"),
        );
        assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
    }
    let sessions = prom_wait("rtpanchor_sessions", 0.0, Duration::from_secs(20));
    assert_eq!(sessions, Some(0.0), "sessions after delete");
    assert_eq!(
        prom_value("rtpanchor_closed_sessions_total{reason=\"terminated\"}"),
        Some(CALLS as f64)
    );
    // Counters survive the calls that made them.
    assert_eq!(
        prom_value("rtpanchor_packets_total{type=\"userspace\"}"),
        Some(sent as f64)
    );
    prom.stop(Duration::from_secs(5));
    drop(sockets);
    if std::thread::panicking() {
        tmp.keep();
    }
}

/// With the fast path on, `/metrics` says where each direction is relayed and, when not in
/// the kernel, why: before media both directions of a call are `pending`, after both ends
/// latched they are in the kernel. Where the program cannot run here, every direction is
/// under `unavailable` instead (what an operator must see rather than a silent fall-back).
/// Ports: ng 10004, HTTP 10005, media 10500-10599.
#[test]
fn metrics_say_why_a_direction_is_not_in_the_kernel() {
    let relay = start_relay(10_004, 10_005, (10_500, 10_599), &[]);
    let mut c = client(relay.ng);
    let a = media_sock();
    let b = media_sock();
    let (to_a, to_b) = set_up(&mut c, "kernel-why", &a, &b);
    let metric = |series: &str| exposed(&http_get(10_005, "/metrics").1, series);
    if let Some(why) = cannot_run() {
        eprintln!("fast path cannot run here ({why}): checking that /metrics says so");
        assert_eq!(
            metric("rtpanchor_kernel_path{state=\"unavailable\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric("rtpanchor_kernel_path_excluded{reason=\"unavailable\"}"),
            Some(2.0)
        );
        return;
    }
    assert_eq!(
        metric("rtpanchor_kernel_path{state=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric("rtpanchor_kernel_path_excluded{reason=\"pending\"}"),
        Some(2.0),
        "no media yet"
    );
    // Media both ways, paced, until both directions are handed over (the workers offer a
    // direction on their housekeeping turn once both ends are latched).
    let mut seq = 0u16;
    let handed = wait_for(Duration::from_secs(10), || {
        for _ in 0..5 {
            a.send_to(&pcmu(seq, 0xa), ("127.0.0.1", to_a)).unwrap();
            b.send_to(&pcmu(seq, 0xb), ("127.0.0.1", to_b)).unwrap();
            seq = seq.wrapping_add(1);
        }
        std::thread::sleep(Duration::from_millis(20));
        metric("rtpanchor_mediastreams{type=\"kernel\"}") == Some(2.0)
    });
    let text = http_get(10_005, "/metrics").1;
    assert!(handed, "directions never reached the kernel:\n{text}");
    for line in text
        .lines()
        .filter(|l| l.starts_with("rtpanchor_kernel_path_excluded{"))
    {
        assert!(line.ends_with(" 0"), "{line}");
    }
    assert!(exposed(&text, "rtpanchor_kernel_handovers_total") >= Some(2.0));
}

/// rtpengine's sample triples end to end: a clean call whose endpoints send 20 ms PCMU and an
/// RTCP SR with a reception report every second (as phones do) leaves MOS samples in
/// `/metrics`, and their mean (`mos_total / mos_samples_total`) is a clean call's, 4.0-4.5;
/// the packet-loss samples add up to 0 and the jitter samples are counted alongside.
/// Ports: ng 16800, HTTP 16802, endpoints 16804-16807, media 16810-16899.
#[test]
fn metrics_carry_the_mos_of_a_clean_call() {
    use common::rtcp_talk::Talk;
    const HTTP2: u16 = 16_802;
    let relay = start_relay(16_800, HTTP2, (16_810, 16_899), &[]);
    let mut c = client(relay.ng);
    let metric = |series: &str| exposed(&http_get(HTTP2, "/metrics").1, series);
    assert_eq!(metric("rtpanchor_mos_samples_total"), Some(0.0));
    let (a_port, b_port) = (16_804, 16_806);
    let bind = |p: u16| UdpSocket::bind(("127.0.0.1", p)).unwrap();
    let (a, b) = (bind(a_port), bind(b_port));
    let (to_a, to_b) = set_up(&mut c, "mos-metrics", &a, &b);
    let mut talkers = Vec::new();
    // b's reports run half an interval behind a's.
    for (rtp, to, ssrc, first_ms) in [(a, to_a, 0x5a, 1000), (b, to_b, 0x5b, 1500)] {
        let rtcp = bind(rtp.local_addr().unwrap().port() + 1);
        let talk = Talk {
            to: SocketAddr::from(([127, 0, 0, 1], to)),
            ssrc,
            lossy: false,
            duration: Duration::from_millis(4500),
            rtcp_every: Duration::from_secs(1),
            rtcp_first: Duration::from_millis(first_ms),
        };
        talkers.push(std::thread::spawn(move || talk.run(rtp, rtcp)));
    }
    for t in talkers {
        let rep = t.join().unwrap();
        assert!(
            rep.received >= rep.sent - 5 && rep.srs_received >= 3,
            "media: {rep:?}"
        );
    }
    // The manager samples on its once-a-second sweep.
    let text = {
        let mut text = String::new();
        wait_for(Duration::from_secs(5), || {
            text = http_get(HTTP2, "/metrics").1;
            exposed(&text, "rtpanchor_mos_samples_total") >= Some(4.0)
        });
        text
    };
    let samples = exposed(&text, "rtpanchor_mos_samples_total").unwrap_or(0.0);
    assert!(samples >= 4.0, "a sample per report and direction:\n{text}");
    let mean = exposed(&text, "rtpanchor_mos_total").unwrap() / samples;
    eprintln!("{samples} MOS samples, mean {mean:.3}");
    assert!((4.0..=4.5).contains(&mean), "mean MOS {mean}:\n{text}");
    let mos2 = exposed(&text, "rtpanchor_mos2_total").unwrap();
    assert!(
        (mos2 / samples - mean * mean).abs() < 0.05,
        "a clean call's samples hardly vary: {mos2}"
    );
    assert_eq!(exposed(&text, "rtpanchor_packetloss_total"), Some(0.0));
    assert_eq!(
        exposed(&text, "rtpanchor_jitter_samples_total"),
        Some(samples)
    );
    assert_eq!(
        exposed(&text, "rtpanchor_packetloss_samples_total"),
        Some(samples)
    );
}
