//! Operating the relay (issue 15): every `rtpanchor ctl` subcommand against a running relay,
//! a graceful drain on SIGTERM (new offers get `load limit`, calls up lose no packet, exit 0
//! after the last), and a reload on SIGHUP. Ports: ng 11222/11232/11242, media 11700-11999.
//! The drain through the built-in SIP proxy (a new INVITE gets 503 with Retry-After) uses
//! 16500-16699: ng 16500, SIP 16502, HTTP 16504, phones 16510-16523, media 16600-16699.

#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use common::calls::{call, delete, offer, send};
use common::http::http_get;
use common::media::{pcmu, sock};
use common::ng::answering_client;
use common::peers::{send_signal, sip_relay_command, spawn_relay, Peer};
use common::TempDir;
use rtpanchor::control::bencode::Owned;

fn start(dir: &Path, ng: u16, media_min: u16, extra: &[&str]) -> Peer {
    spawn_relay(dir, ng, (media_min, media_min + 49), extra)
}

fn ctl(ng: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .arg("ctl")
        .args(["--ng", &format!("127.0.0.1:{ng}")])
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn ctl_every_subcommand() {
    const NG: u16 = 11222;
    let dir = TempDir::new("rtpanchor-ctl").unwrap();
    let mut relay = start(dir.path(), NG, 11700, &[]);
    let mut c = answering_client(NG, "ctl");
    let (a1, b1, a2, b2) = (sock(), sock(), sock(), sock());
    let (to_a, _) = call(&mut c, "ctl-1", &a1, &b1);
    call(&mut c, "ctl-2", &a2, &b2);
    let sent = send(&a1, to_a, 0x77, 40, &[5]);
    sleep(Duration::from_millis(1500));

    let o = ctl(NG, &["list"]);
    assert_eq!(code(&o), 0);
    assert_eq!(out(&o), "ctl-1\nctl-2\n");
    let o = ctl(NG, &["list", "--limit", "1"]);
    assert_eq!(out(&o), "ctl-1\n");
    let o = ctl(NG, &["--json", "list"]);
    let v: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert_eq!(v["calls"], serde_json::json!(["ctl-1", "ctl-2"]));

    let o = ctl(NG, &["show", "ctl-1"]);
    assert_eq!(code(&o), 0);
    let table = out(&o);
    let row = table
        .lines()
        .find(|l| l.starts_with("ta ") && l.contains("0x77"))
        .unwrap_or_else(|| panic!("no row for ta:\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[5], sent.to_string(), "{row}");
    assert_eq!(cols[6], (sent * 172).to_string(), "{row}");
    assert_eq!(cols[7], "1", "one lost: {row}");
    // Where the stream is relayed (ours beside rtpengine's keys): a status name, then the
    // packets the in-kernel path relayed, at most all of them.
    let names: Vec<&str> = rtpanchor::session::backend::KernelStatus::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert!(names.contains(&cols[11]), "kernel status: {row}");
    let in_kernel: u64 = cols[12].parse().unwrap_or(u64::MAX);
    assert!(in_kernel <= sent, "kernel packets: {row}");
    assert!(table.lines().any(|l| l.starts_with("tb ")), "{table}");
    let o = ctl(NG, &["show", "no-such-call"]);
    assert_eq!(code(&o), 1, "unknown call: refused");

    let o = ctl(NG, &["stats"]);
    assert_eq!(code(&o), 0);
    assert!(
        out(&o)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["sessionsown", "2"]),
        "{}",
        out(&o)
    );

    // set max-sessions: 2 calls up, limit 2: a third is refused with load limit.
    assert_eq!(code(&ctl(NG, &["set", "max-sessions", "2"])), 0);
    let a3 = sock();
    let r = offer(&mut c, "ctl-3", &a3);
    assert_eq!(r.get("result").and_then(Owned::as_str), Some("load limit"));
    assert_eq!(code(&ctl(NG, &["set", "max-sessions", "0"])), 0);
    assert_eq!(
        offer(&mut c, "ctl-3", &a3)
            .get("result")
            .and_then(Owned::as_str),
        Some("ok")
    );
    assert_eq!(code(&ctl(NG, &["set", "log-level", "debug"])), 0);
    assert_eq!(code(&ctl(NG, &["set", "log-level", "info,=[bad"])), 1);

    let o = ctl(NG, &["terminate", "ctl-1"]);
    assert_eq!((code(&o), out(&o).as_str()), (0, "terminated 1\n"));
    assert_eq!(out(&ctl(NG, &["list"])), "ctl-2\nctl-3\n");
    assert_eq!(code(&ctl(NG, &["terminate", "ctl-1"])), 1, "already gone");
    let o = ctl(NG, &["terminate", "all"]);
    assert_eq!(out(&o), "terminated 2\n");
    assert_eq!(out(&ctl(NG, &["list"])), "");

    // Usage errors and an unreachable relay.
    assert_eq!(code(&ctl(NG, &["frobnicate"])), 2);
    assert_eq!(code(&ctl(11299, &["--timeout", "1", "list"])), 3);

    // drain with no call up: the relay exits 0 at once.
    let o = ctl(NG, &["drain"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let st = relay.wait_timeout(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "{st:?}\n{}",
        relay.log_tail(20)
    );
}

/// Sends RTP both ways on a call until `stop`, counting what arrives; returns (sent, received).
fn talk(
    a: UdpSocket,
    b: UdpSocket,
    to_a: std::net::SocketAddr,
    to_b: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let (mut sent, mut got) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        let mut seq = 1u16;
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let drain = |s: &UdpSocket, got: &mut u64, buf: &mut [u8]| {
            while s.recv_from(buf).is_ok() {
                *got += 1;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
            b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
            sent += 2;
            seq = seq.wrapping_add(1);
            sleep(Duration::from_millis(10));
            drain(&a, &mut got, &mut buf);
            drain(&b, &mut got, &mut buf);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while got < sent && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
            drain(&a, &mut got, &mut buf);
            drain(&b, &mut got, &mut buf);
        }
        (sent, got)
    })
}

#[test]
fn sigterm_drains_then_exits() {
    const NG: u16 = 11232;
    let dir = TempDir::new("rtpanchor-drain").unwrap();
    let mut relay = start(dir.path(), NG, 11800, &[]);
    let mut c = answering_client(NG, "drain");
    let stop = Arc::new(AtomicBool::new(false));
    let mut talkers = Vec::new();
    for id in ["d-1", "d-2"] {
        let (a, b) = (sock(), sock());
        let (to_a, to_b) = call(&mut c, id, &a, &b);
        talkers.push(talk(a, b, to_a, to_b, stop.clone()));
    }
    sleep(Duration::from_millis(500));
    send_signal(relay.pid(), "TERM");
    sleep(Duration::from_millis(300));
    assert!(
        relay.is_running(),
        "exited with calls up:\n{}",
        relay.log_tail(20)
    );
    // New calls are refused the way Kamailio fails over on; ping still pongs.
    let r = offer(&mut c, "d-3", &sock());
    assert_eq!(
        r.get("result").and_then(Owned::as_str),
        Some("load limit"),
        "{r}"
    );
    assert!(c.ping().is_ok());
    sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for t in talkers {
        let (sent, got) = t.join().unwrap();
        assert!(sent > 100);
        assert_eq!(got, sent, "packets lost while draining");
    }
    assert_eq!(delete(&mut c, "d-1"), "ok");
    sleep(Duration::from_millis(500));
    assert!(relay.is_running(), "exited with a call still up");
    assert_eq!(delete(&mut c, "d-2"), "ok");
    let st = relay.wait_timeout(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "{st:?}\n{}",
        relay.log_tail(20)
    );
}

#[test]
fn drain_timeout_and_second_sigterm() {
    const NG: u16 = 11242;
    let dir = TempDir::new("rtpanchor-drain2").unwrap();
    // The timeout path: a call that never ends is ended after --drain-timeout.
    let mut relay = start(dir.path(), NG, 11900, &["--drain-timeout", "1"]);
    let mut c = answering_client(NG, "drain2");
    call(&mut c, "t-1", &sock(), &sock());
    let t0 = Instant::now();
    send_signal(relay.pid(), "TERM");
    let st = relay.wait_timeout(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "did not wait for the call"
    );
    drop(relay);

    // No timeout: a second SIGTERM exits at once.
    let mut relay = start(dir.path(), NG, 11900, &[]);
    let mut c = answering_client(NG, "drain3");
    call(&mut c, "t-2", &sock(), &sock());
    send_signal(relay.pid(), "TERM");
    sleep(Duration::from_millis(500));
    assert!(relay.is_running());
    send_signal(relay.pid(), "TERM");
    let st = relay.wait_timeout(Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

#[test]
fn sighup_reloads_what_can_change_live() {
    const NG: u16 = 11252;
    let dir = TempDir::new("rtpanchor-reload").unwrap();
    let cfg = dir.path().join("rtpanchor.toml");
    std::fs::write(&cfg, "max-sessions = 1\nlog-level = \"info\"\n").unwrap();
    let mut relay = start(dir.path(), NG, 11950, &["--config", cfg.to_str().unwrap()]);
    let mut c = answering_client(NG, "reload");
    call(&mut c, "r-1", &sock(), &sock());
    let r = offer(&mut c, "r-2", &sock());
    assert_eq!(r.get("result").and_then(Owned::as_str), Some("load limit"));
    // A broken file changes nothing.
    std::fs::write(&cfg, "max-sessions = \"many\"\n").unwrap();
    send_signal(relay.pid(), "HUP");
    sleep(Duration::from_millis(500));
    let r = offer(&mut c, "r-2", &sock());
    assert_eq!(r.get("result").and_then(Owned::as_str), Some("load limit"));
    // Live: max-sessions, timeout, log level; strict-rtp needs a restart.
    std::fs::write(
        &cfg,
        "max-sessions = 5\ntimeout = 30\nlog-level = \"debug\"\nstrict-rtp = true\n",
    )
    .unwrap();
    send_signal(relay.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut r = Owned::dict();
    while Instant::now() < deadline {
        r = offer(&mut c, "r-2", &sock());
        if r.get("result").and_then(Owned::as_str) == Some("ok") {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
    // The offer can succeed before the reload has logged its last line (the settings that
    // need a restart come after the live ones): the log is read until all are there, 3 s at
    // most.
    let wants = [
        "reload failed",
        "reload: max sessions",
        "reload: media timeout",
        "reload: log level",
        "only a restart applies them",
        "strict-rtp",
    ];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut log = std::fs::read_to_string(relay.log_path()).unwrap();
    while !wants.iter().all(|w| log.contains(w)) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
        log = std::fs::read_to_string(relay.log_path()).unwrap();
    }
    for want in wants {
        assert!(log.contains(want), "{want:?} not logged:\n{log}");
    }
    relay.stop(Duration::from_secs(3));
}

/// A SIP phone on a fixed loopback port: raw datagrams, bounded waits.
struct Phone {
    sock: UdpSocket,
}

impl Phone {
    fn bind(port: u16) -> Phone {
        let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Phone { sock }
    }

    fn send(&self, msg: &[u8], to: u16) {
        self.sock.send_to(msg, ("127.0.0.1", to)).unwrap();
    }

    /// The first message for which `want` holds, within 3 s (others are skipped).
    fn wait(&self, what: &str, want: impl Fn(&str) -> bool) -> Vec<u8> {
        self.try_wait(Duration::from_secs(3), want)
            .unwrap_or_else(|| panic!("no {what} within 3 s"))
    }

    fn try_wait(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                if want(&String::from_utf8_lossy(&buf[..n])) {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        None
    }
}

fn is_status(code: u16, method: &str) -> impl Fn(&str) -> bool + '_ {
    move |m: &str| {
        m.starts_with(&format!("SIP/2.0 {code} "))
            && m.lines()
                .any(|l| l.starts_with("CSeq:") && l.trim_end().ends_with(method))
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body_port(msg: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(msg);
    let (_, body) = text.split_once("\r\n\r\n").expect("a body");
    common::ng::relay_port(body)
}

/// The drain through the built-in SIP proxy: a call set up by INVITE with RTP both ways;
/// SIGTERM; a new INVITE gets `503` with `Retry-After` (and never reaches the callee),
/// `/health` says 503, ng ping still gets pong; the call's RTP loses nothing; its BYE ends
/// it (the BYE's 200 still reaches the caller) and the relay exits 0.
#[test]
fn sip_invite_refused_with_retry_after_while_draining() {
    use common::sip::{sdp as sip_sdp, Uac, Uas};
    const NG: u16 = 16500;
    const SIP: u16 = 16502;
    const HTTP: u16 = 16504;
    const ALICE: u16 = 16510;
    const CAROL: u16 = 16512;
    const BOB: u16 = 16514;
    const ALICE_RTP: u16 = 16520;
    const BOB_RTP: u16 = 16522;
    let dir = TempDir::new("rtpanchor-sip-drain").unwrap();
    let mut relay = Peer::spawn(
        "relay",
        sip_relay_command(NG, SIP)
            .args(["--sip-outbound", &format!("127.0.0.1:{BOB}")])
            .args(["--listen-http", &format!("127.0.0.1:{HTTP}")])
            .args(["--port-min", "16600", "--port-max", "16699"]),
        &dir.path().join("relay.log"),
    )
    .unwrap();
    let mut c = answering_client(NG, "sipdrain");
    c.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("relay not ready: {e}\n{}", relay.log_tail(20)));
    let (alice, carol, bob) = (Phone::bind(ALICE), Phone::bind(CAROL), Phone::bind(BOB));
    let callee = Uas::new(
        SocketAddr::from(([127, 0, 0, 1], BOB)),
        "b1",
        &format!("sip:bob@127.0.0.1:{BOB}"),
    );

    // The call: INVITE (offer) through the proxy to bob, 200 with the answer, ACK.
    let mut uac = Uac::new(
        SocketAddr::from(([127, 0, 0, 1], ALICE)),
        &format!("127.0.0.1:{ALICE}"),
        "sip-drain-1",
    );
    alice.send(&uac.invite(Some(&sip_sdp("127.0.0.1", ALICE_RTP))), SIP);
    let inv = bob.wait("the INVITE at bob", |m| m.starts_with("INVITE "));
    let to_bob_side = body_port(&inv);
    bob.send(
        &callee.respond_sdp(&inv, 200, &sip_sdp("127.0.0.1", BOB_RTP)),
        SIP,
    );
    let ok = alice.wait("the 200 to the INVITE", is_status(200, "INVITE"));
    let to_alice_side = body_port(&ok);
    uac.learn(&ok);
    alice.send(&uac.ack(None), SIP);
    bob.wait("the ACK at bob", |m| m.starts_with("ACK "));

    let stop = Arc::new(AtomicBool::new(false));
    let a_rtp = UdpSocket::bind(("127.0.0.1", ALICE_RTP)).unwrap();
    let b_rtp = UdpSocket::bind(("127.0.0.1", BOB_RTP)).unwrap();
    let talker = talk(
        a_rtp,
        b_rtp,
        common::media::relay(to_alice_side),
        common::media::relay(to_bob_side),
        stop.clone(),
    );
    sleep(Duration::from_millis(500));
    send_signal(relay.pid(), "TERM");
    sleep(Duration::from_millis(300));
    assert!(
        relay.is_running(),
        "exited with a call up:\n{}",
        relay.log_tail(20)
    );

    // A new call: 503 with Retry-After from the proxy itself; bob never sees it.
    let mut uac2 = Uac::new(
        SocketAddr::from(([127, 0, 0, 1], CAROL)),
        &format!("127.0.0.1:{CAROL}"),
        "sip-drain-2",
    );
    carol.send(&uac2.invite(Some(&sip_sdp("127.0.0.1", 16530))), SIP);
    let refused = carol.wait("a final response to the new INVITE", |m| {
        m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1")
    });
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(text.starts_with("SIP/2.0 503 "), "{text}");
    let after: u32 = header(&text, "Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After:\n{text}"))
        .parse()
        .unwrap();
    assert!(after > 0, "{text}");
    carol.send(&uac2.ack_failure(&refused), SIP);
    assert!(
        bob.try_wait(Duration::from_millis(300), |m| m.contains("sip-drain-2"))
            .is_none(),
        "the refused call reached the callee"
    );
    let (status, body) = http_get(HTTP, "/health");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert!(c.ping().is_ok(), "ng ping while draining");

    sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = talker.join().unwrap();
    assert!(sent > 100, "{sent}");
    assert_eq!(got, sent, "packets lost while draining");
    assert!(relay.is_running(), "exited with the call still up");

    // BYE through the proxy ends the call; its 200 comes back before the relay exits.
    alice.send(&uac.bye(), SIP);
    let bye = bob.wait("the BYE at bob", |m| m.starts_with("BYE "));
    // A far phone answers a moment later; the relay must still be there to pass it on.
    sleep(Duration::from_millis(300));
    bob.send(&callee.respond(&bye, 200), SIP);
    alice.wait("the 200 to the BYE", is_status(200, "BYE"));
    let st = relay.wait_timeout(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "{st:?}\n{}",
        relay.log_tail(20)
    );
}
