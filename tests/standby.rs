//! Active/standby: two relays in network namespaces of their own share a real `redis-server`
//! (in a third namespace, with the phones and this test's client). The active relay serves
//! calls on a service address; the standby (`--standby`) refuses offers and follows the
//! active's heartbeat. The test kills the active (`kill -9`) and moves the service address to
//! the standby's namespace, as keepalived would; once the heartbeat expires the standby loads
//! the calls from Redis, binds their ports on the address, and media flows again on every
//! call, which ng `query` on the standby knows.
//!
//! Namespaces (made here, deleted on drop): `p` (phones, Redis, the client), `a` and `b`
//! (the relays), veth p-a (10.27.1.1/10.27.1.2) and p-b (10.27.2.1/10.27.2.2); the service
//! address 10.27.9.1 is routed from `p` to whichever relay holds it. Ports (block
//! 15000-15499): Redis 15400, ng 15401, phones 15410/15411, relay media 15420-15499.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::media::rtp;
use common::netns::{ip, Namespaces};
use common::ng::{client, ng, try_ng};
use common::peers::{find_program, tail, Peer};
use common::streams::{count_by_ssrc, counters, open_calls, snapshot};
use common::TempDir;
use rtpanchor::control::bencode::Owned;
use rtpanchor::sdp::AudioSdp;

const P_A: &str = "10.27.1.1";
const A: &str = "10.27.1.2";
const P_B: &str = "10.27.2.1";
const B: &str = "10.27.2.2";
const VIP: &str = "10.27.9.1";
const REDIS_PORT: u16 = 15400;
const NG_PORT: u16 = 15401;
const PHONE_A: u16 = 15410;
const PHONE_B: u16 = 15411;
const MEDIA_MIN: u16 = 15420;
const MEDIA_MAX: u16 = 15499;
const CALLS: usize = 20;
const PACKET_EVERY: Duration = Duration::from_millis(20);

/// A relay process, killed by pid when dropped.
struct Relay(std::process::Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(ns: &str, ng_ip: &str, standby: bool, log: &std::path::Path) -> Relay {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_rtpanchor")])
        .args([
            "--interface",
            VIP,
            "--listen-ng",
            &format!("{ng_ip}:{NG_PORT}"),
        ])
        .args([
            "--ng-allow",
            "10.27.0.0/16",
            "--no-sip",
            "--no-kernel-forwarding",
        ])
        .args(["--port-min", &MEDIA_MIN.to_string()])
        .args(["--port-max", &MEDIA_MAX.to_string()])
        .args(["--num-threads", "1", "--log-level", "info"]);
    // Each relay reaches Redis over its own link.
    let redis = if standby { P_B } else { P_A };
    cmd.args(["--redis", &format!("redis://{redis}:{REDIS_PORT}/0")]);
    if standby {
        cmd.arg("--standby");
    }
    Relay(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start rtpanchor in its namespace"),
    )
}

#[test]
fn the_standby_takes_the_calls_over_when_the_active_dies() {
    let id = std::process::id();
    let (np, na, nb) = (
        format!("rtpa-sp{id}"),
        format!("rtpa-sa{id}"),
        format!("rtpa-sb{id}"),
    );
    let (pa, ap, pb, bp) = (
        format!("sp{}", id % 100_000),
        format!("sa{}", id % 100_000),
        format!("tp{}", id % 100_000),
        format!("tb{}", id % 100_000),
    );
    ip(&["netns", "add", &np]);
    let _ns = Namespaces(vec![np.clone(), na.clone(), nb.clone()]);
    ip(&["netns", "add", &na]);
    ip(&["netns", "add", &nb]);
    for (peer_ns, p_dev, r_dev, p_ip, r_ip) in [(&na, &pa, &ap, P_A, A), (&nb, &pb, &bp, P_B, B)] {
        ip(&["link", "add", p_dev, "type", "veth", "peer", "name", r_dev]);
        ip(&["link", "set", p_dev, "netns", &np]);
        ip(&["link", "set", r_dev, "netns", peer_ns]);
        ip(&[
            "-n",
            &np,
            "addr",
            "add",
            &format!("{p_ip}/24"),
            "dev",
            p_dev,
        ]);
        ip(&["-n", &np, "link", "set", p_dev, "up"]);
        ip(&[
            "-n",
            peer_ns,
            "addr",
            "add",
            &format!("{r_ip}/24"),
            "dev",
            r_dev,
        ]);
        ip(&["-n", peer_ns, "link", "set", r_dev, "up"]);
        ip(&["-n", peer_ns, "link", "set", "lo", "up"]);
        ip(&["-n", peer_ns, "route", "add", "default", "via", p_ip]);
    }
    ip(&["-n", &np, "link", "set", "lo", "up"]);
    // The service address starts on the active relay.
    ip(&["-n", &na, "addr", "add", &format!("{VIP}/32"), "dev", &ap]);
    ip(&["-n", &np, "route", "add", &format!("{VIP}/32"), "via", A]);

    let dir = TempDir::new("rtpanchor-standby").unwrap();
    let redis_bin = find_program("redis-server").expect("redis-server is not installed");
    let mut redis = Peer::spawn(
        "redis-server",
        Command::new("ip")
            .args(["netns", "exec", &np])
            .arg(redis_bin)
            .args(["--port", &REDIS_PORT.to_string(), "--bind", P_A, P_B])
            // Reached over the test's own veths, not loopback.
            .args(["--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path()),
        &dir.path().join("redis.log"),
    )
    .expect("start redis-server");
    let log_a = dir.path().join("active.log");
    let log_b = dir.path().join("standby.log");
    // Redis first (the relays connect at start).
    let mut wrapper = Command::new("ip");
    wrapper.args(["netns", "exec", &np]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = Command::new("ip")
            .args(["netns", "exec", &np, "redis-cli", "-h", P_A])
            .args(["-p", &REDIS_PORT.to_string(), "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "redis: {}", redis.log_tail(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    let active = relay(&na, A, false, &log_a);
    let standby = relay(&nb, B, true, &log_b);
    common::run_inner_test(
        wrapper,
        "standby_inner",
        &[
            ("RTPANCHOR_SB_ACTIVE_PID", &active.0.id().to_string()),
            ("RTPANCHOR_SB_STANDBY_PID", &standby.0.id().to_string()),
            ("RTPANCHOR_SB_DIR", &dir.path().display().to_string()),
            ("RTPANCHOR_SB_NS", &format!("{na} {nb} {ap} {bp}")),
            (
                "RTPANCHOR_SB_LOGS",
                &format!("{} {}", log_a.display(), log_b.display()),
            ),
        ],
    );
    drop(standby);
    drop(active);
    redis.stop(Duration::from_secs(2));
}

fn sdp(port: u16, sess: u64) -> String {
    AudioSdp::new(SocketAddr::new(P_A.parse().unwrap(), port), sess).to_string()
}

fn relay_port(sdp: &str) -> u16 {
    assert!(sdp.contains(&format!("c=IN IP4 {VIP}")), "{sdp}");
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits (15 s at most) until every stream got more than 10 packets more than it had.
fn wait_resumed(got: &[std::sync::atomic::AtomicU64], log: &std::path::Path) {
    let at_kill = snapshot(got);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !snapshot(got)
        .iter()
        .zip(&at_kill)
        .all(|(n, k)| *n > *k + 10)
    {
        assert!(
            Instant::now() < deadline,
            "media did not resume on every stream through the standby\n{}",
            tail(log, 40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs in namespace `p` (started by the test above).
#[test]
#[ignore = "run by the_standby_takes_the_calls_over_when_the_active_dies in its namespace"]
fn standby_inner() {
    let active_pid: i32 = std::env::var("RTPANCHOR_SB_ACTIVE_PID")
        .unwrap()
        .parse()
        .unwrap();
    let ns = std::env::var("RTPANCHOR_SB_NS").unwrap();
    let [na, nb, ap, bp]: [&str; 4] = ns.split(' ').collect::<Vec<_>>().try_into().unwrap();
    let logs = std::env::var("RTPANCHOR_SB_LOGS").unwrap();
    let (log_a, log_b) = logs.split_once(' ').unwrap();
    let (log_a, log_b) = (std::path::Path::new(log_a), std::path::Path::new(log_b));
    let ng_a = SocketAddr::new(A.parse().unwrap(), NG_PORT);
    let ng_b = SocketAddr::new(B.parse().unwrap(), NG_PORT);
    let mut ca = client(ng_a);
    ca.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("active: {e}\n{}", tail(log_a, 30)));
    let mut cb = client(ng_b);
    cb.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("standby: {e}\n{}", tail(log_b, 30)));

    // The standby refuses calls; the active says it is not a standby.
    let refused = ng(
        &mut cb,
        "sb-offer",
        &Owned::dict()
            .with("sdp", sdp(PHONE_A, 1).as_str())
            .with("call-id", "standby-refused")
            .with("from-tag", "ta")
            .with("command", "offer"),
    );
    assert_eq!(
        refused.get("result").and_then(Owned::as_str),
        Some("error"),
        "{refused:?}"
    );
    let act = ng(&mut ca, "act-a", &Owned::dict().with("command", "active"));
    assert_eq!(
        act.get("was standby").and_then(Owned::as_int),
        Some(0),
        "{act:?}"
    );

    let a = UdpSocket::bind((P_A, PHONE_A)).unwrap();
    let b = UdpSocket::bind((P_A, PHONE_B)).unwrap();
    let (sdp_a, sdp_b) = (sdp(PHONE_A, 1), sdp(PHONE_B, 2));
    let vip: std::net::IpAddr = VIP.parse().unwrap();
    let dests = open_calls(&mut ca, "standby", CALLS, (&sdp_a, &sdp_b), relay_port, vip);
    let streams = dests.len();
    let got = counters(streams);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for s in [&a, &b] {
        let (s, g, st) = (s.try_clone().unwrap(), got.clone(), stop.clone());
        threads.push(std::thread::spawn(move || count_by_ssrc(s, g, st)));
    }
    {
        let (a, b, st) = (a.try_clone().unwrap(), b.try_clone().unwrap(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut seq = 0u16;
            while !st.load(Ordering::Relaxed) {
                for (k, d) in dests.iter().enumerate() {
                    let from = if k % 2 == 0 { &a } else { &b };
                    let _ = from.send_to(
                        &rtp(seq, u32::from(seq) * 160, k as u32 + 1, &[0xff; 160]),
                        d,
                    );
                }
                seq = seq.wrapping_add(1);
                std::thread::sleep(PACKET_EVERY);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = snapshot(&got);
    assert!(
        before.iter().all(|&n| n > 0),
        "media not flowing on every stream: {before:?}\n{}",
        tail(log_a, 20)
    );

    // The active dies; the address moves to the standby (what keepalived would do).
    let killed = Command::new("kill")
        .args(["-9", &active_pid.to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let t0 = Instant::now();
    ip(&["-n", na, "addr", "del", &format!("{VIP}/32"), "dev", ap]);
    ip(&["-n", nb, "addr", "add", &format!("{VIP}/32"), "dev", bp]);
    ip(&["route", "replace", &format!("{VIP}/32"), "via", B]);

    // Every stream flows again, through the standby.
    wait_resumed(&got, log_b);
    let resumed = t0.elapsed();
    eprintln!("standby: media resumed on all {streams} streams {resumed:?} after the kill");
    let log = std::fs::read_to_string(log_b).unwrap();
    assert!(log.contains("standby took over"), "{}", tail(log_b, 30));

    // The standby has every call now.
    for i in 0..CALLS {
        let id = format!("standby-{i}");
        let q = try_ng(
            &mut cb,
            &format!("q{i}"),
            &Owned::dict()
                .with("call-id", id.as_str())
                .with("command", "query"),
        );
        assert_eq!(
            q.as_ref()
                .and_then(|q| q.get("result"))
                .and_then(Owned::as_str),
            Some("ok"),
            "call {id} not on the standby: {q:?}"
        );
    }
    let act = ng(&mut cb, "act-b", &Owned::dict().with("command", "active"));
    assert_eq!(
        act.get("was standby").and_then(Owned::as_int),
        Some(0),
        "{act:?}"
    );

    // And back: a new standby in `a`; the operator stops `b`, moves the address and tells
    // the standby at once (`rtpanchor ctl active`) instead of waiting for the heartbeat.
    let dir = std::path::PathBuf::from(std::env::var("RTPANCHOR_SB_DIR").unwrap());
    let log_c = dir.join("standby2.log");
    let _standby2 = relay(na, A, true, &log_c);
    let mut cc = client(ng_a);
    cc.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("second standby: {e}\n{}", tail(&log_c, 30)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log_c)
        .unwrap_or_default()
        .contains("following the active relay active=")
    {
        assert!(Instant::now() < deadline, "{}", tail(&log_c, 20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let b_pid = std::env::var("RTPANCHOR_SB_STANDBY_PID").unwrap();
    let killed = Command::new("kill").args(["-9", &b_pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let t1 = Instant::now();
    ip(&["-n", nb, "addr", "del", &format!("{VIP}/32"), "dev", bp]);
    ip(&["-n", na, "addr", "add", &format!("{VIP}/32"), "dev", ap]);
    ip(&["route", "replace", &format!("{VIP}/32"), "via", A]);
    let out = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["ctl", "--ng", &ng_a.to_string(), "active"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "taking over\n");
    wait_resumed(&got, &log_c);
    eprintln!(
        "standby (ctl active): media resumed on all {streams} streams {:?} after the kill",
        t1.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let log = std::fs::read_to_string(&log_c).unwrap();
    assert!(
        log.contains("ng active: this standby takes over"),
        "{}",
        tail(&log_c, 30)
    );
    for i in 0..CALLS {
        let id = format!("standby-{i}");
        ng(
            &mut cc,
            &format!("d{i}"),
            &Owned::dict()
                .with("call-id", id.as_str())
                .with("from-tag", "ta")
                .with("command", "delete"),
        );
    }
}
