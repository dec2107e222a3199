//! For the state-store tests: a real `redis-server` on a port of the test's own, counting
//! its keys, and a relay that can be crashed (`kill -9`) and started again.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ng::client;
use super::peers::{find_program, tail, Peer};
use super::TempDir;

/// Starts `redis-server` on 127.0.0.1:`port` with nothing saved to disk (its working
/// directory is `dir`), and waits (10 s at most) until it accepts connections.
pub fn start_redis(port: u16, dir: &Path) -> Peer {
    start_redis_on("127.0.0.1", port, dir)
}

/// As [`start_redis`], listening on `ip` (e.g. the test bed's bridge address, which its
/// namespaces reach).
pub fn start_redis_on(ip: &str, port: u16, dir: &Path) -> Peer {
    let bin = find_program("redis-server").expect("redis-server is not installed");
    let mut peer = Peer::spawn(
        "redis-server",
        Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", ip])
            .args(["--save", "", "--appendonly", "no"])
            // Reached from the test's namespaces too (no password: the test's own).
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir),
        &dir.join("redis.log"),
    )
    .expect("start redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(
            Instant::now() < deadline && peer.is_running(),
            "redis-server did not listen on {ip}:{port}:\n{}",
            peer.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    peer
}

/// A connection to the test's Redis.
pub fn redis_con(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// How many keys match `pattern`.
pub fn redis_keys(port: u16, pattern: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis_con(port))
        .unwrap();
    keys.len()
}

/// The arguments of a SIP front on loopback sharing the Redis on `redis` (`tests/shared_*`):
/// SIP on `sip`, domain `example.com`, media ports `media`..`media`+39, one worker.
pub fn front_args(sip: u16, media: u16, redis: u16) -> Vec<String> {
    [
        "--interface",
        "127.0.0.1",
        "--listen-sip",
        &format!("127.0.0.1:{sip}"),
        "--domain",
        "example.com",
        "--port-min",
        &media.to_string(),
        "--port-max",
        &(media + 39).to_string(),
        "--num-threads",
        "1",
        "--log-level",
        "info",
        "--redis",
        &format!("redis://127.0.0.1:{redis}/0"),
    ]
    .map(String::from)
    .to_vec()
}

/// Two SIP fronts (A and B) sharing one `redis-server`, for `tests/shared_*`; stopped (by
/// pid) when dropped. Ports from `base`: Redis +0, ng A +1, ng B +2, SIP A +3, SIP B +4,
/// relay media A +20..+59, B +60..+99; logs `a.log`, `b.log` in `dir`.
pub struct Fronts {
    pub dir: TempDir,
    pub redis: Peer,
    pub a: CrashableRelay,
    pub b: CrashableRelay,
    pub base: u16,
}

impl Fronts {
    /// Starts Redis and both fronts; `name` names the directory.
    pub fn start(base: u16, name: &str) -> Fronts {
        let dir = TempDir::new(name).unwrap();
        let redis = start_redis(base, dir.path());
        let front = |i: u16| {
            let args = front_args(base + 3 + i, base + 20 + 40 * i, base);
            let log = dir.path().join(if i == 0 { "a.log" } else { "b.log" });
            CrashableRelay::start(&args, base + 1 + i, &log)
        };
        let (a, b) = (front(0), front(1));
        Fronts {
            dir,
            redis,
            a,
            b,
            base,
        }
    }

    pub fn sip_a(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + 3))
    }

    pub fn sip_b(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + 4))
    }

    /// The ends of both fronts' logs.
    pub fn logs(&self) -> String {
        let p = self.dir.path();
        format!(
            "--- A:\n{}\n--- B:\n{}",
            tail(&p.join("a.log"), 25),
            tail(&p.join("b.log"), 25)
        )
    }
}

impl Drop for Fronts {
    fn drop(&mut self) {
        self.a.kill9();
        self.b.kill9();
        self.redis.stop(Duration::from_secs(2));
    }
}

/// A relay process; dropping it or [`CrashableRelay::kill9`] sends SIGKILL (std's
/// `Child::kill`), like a crash.
pub struct CrashableRelay {
    child: Child,
}

impl CrashableRelay {
    /// Starts the relay with `args` (its output appended to `log`) and waits (15 s at most)
    /// until it answers ng pings on 127.0.0.1:`ng_port`.
    pub fn start(args: &[String], ng_port: u16, log: &Path) -> CrashableRelay {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
            .args(["--listen-ng", &format!("127.0.0.1:{ng_port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start rtpanchor");
        let relay = CrashableRelay { child };
        let ng = SocketAddr::from(([127, 0, 0, 1], ng_port));
        if let Err(e) = client(ng).wait_ready(Duration::from_secs(15)) {
            panic!("relay did not answer ping in 15 s: {e}\n{}", tail(log, 30));
        }
        relay
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CrashableRelay {
    fn drop(&mut self) {
        self.kill9();
    }
}
