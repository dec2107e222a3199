//! An ng client for the end-to-end tests: start the relay binary, talk bencode over UDP, and
//! build the SDP and RTP the tests send.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtpanchor::control::bencode::{decode, Owned};

/// A relay process, killed by pid when dropped (also when a test panics).
pub struct Relay {
    child: Child,
    pub ng: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_relay(ng_port: u16, port_min: u16, engine: &str, extra: &[&str]) -> Relay {
    let ng: SocketAddr = SocketAddr::from(([127, 0, 0, 1], ng_port));
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", "127.0.0.1", "--listen-ng", &ng.to_string()])
        .args(["--port-min", &port_min.to_string()])
        .args(["--port-max", &(port_min + 999).to_string()])
        .arg("--no-sip")
        .args([
            "--num-threads",
            "1",
            "--io-engine",
            engine,
            "--log-level",
            "warn",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let relay = Relay { child, ng };
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = try_ng(&c, ng, "boot", &Owned::dict().with("command", "ping")) {
            assert_eq!(r.get("result").and_then(Owned::as_str), Some("pong"));
            return relay;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not answer ping in 10 s"
        );
    }
}

pub fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

pub fn try_ng(s: &UdpSocket, to: SocketAddr, cookie: &str, req: &Owned) -> Option<Owned> {
    let mut msg = format!("{cookie} ").into_bytes();
    req.encode(&mut msg);
    s.send_to(&msg, to).ok()?;
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let Ok(n) = s.recv(&mut buf) else { continue };
        let reply = &buf[..n];
        let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) else {
            continue; // a late reply to an earlier request
        };
        return Some(Owned::from(&decode(body).expect("reply is bencode")));
    }
    None
}

pub fn ng(s: &UdpSocket, to: SocketAddr, cookie: &str, req: &Owned) -> Owned {
    try_ng(s, to, cookie, req).unwrap_or_else(|| panic!("no reply to {cookie}"))
}

pub fn sdp(port: u16, sess: u64) -> String {
    format!(
        "v=0\r\no=- {sess} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=sendrecv\r\n"
    )
}

/// The relay's RTP port from a rewritten SDP (and a check that it names the relay).
pub fn relay_port(sdp: &str) -> u16 {
    assert!(sdp.contains("c=IN IP4 127.0.0.1"), "{sdp}");
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .expect("m= line");
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

pub fn media_sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

pub fn count_rx(s: &UdpSocket, want: usize, limit: Duration) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + limit;
    while n < want && Instant::now() < deadline {
        if s.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

pub fn int_at(v: &Owned, path: &[&str]) -> i64 {
    let mut cur = v;
    for k in path {
        cur = cur
            .get(k)
            .unwrap_or_else(|| panic!("missing {k} in {path:?}: {cur}"));
    }
    cur.as_int()
        .unwrap_or_else(|| panic!("{path:?} is not an int"))
}

/// An ng client with its own cookie sequence, for tests that only need answers: each request
/// is retransmitted with the same cookie (up to 3 tries of 500 ms), as Kamailio does.
pub struct NgClient {
    sock: UdpSocket,
    to: SocketAddr,
    prefix: String,
    seq: u32,
}

impl NgClient {
    /// A client of the relay's ng socket on 127.0.0.1:`port`; `prefix` names the test in cookies.
    pub fn new(port: u16, prefix: &str) -> NgClient {
        NgClient {
            sock: client(),
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            prefix: format!("{prefix}_{}", std::process::id()),
            seq: 0,
        }
    }

    pub fn try_request(&mut self, req: &Owned) -> Option<Owned> {
        self.seq += 1;
        let cookie = format!("{}_{}", self.prefix, self.seq);
        (0..3).find_map(|_| try_ng(&self.sock, self.to, &cookie, req))
    }

    /// `{command: X}` and its reply; panics when none comes.
    pub fn request(&mut self, command: &str) -> Owned {
        self.try_request(&Owned::dict().with("command", command))
            .unwrap_or_else(|| panic!("no ng reply to {command}"))
    }

    /// Whether the relay answers `ping` with `pong`.
    pub fn ping(&mut self) -> bool {
        self.try_request(&Owned::dict().with("command", "ping"))
            .is_some_and(|r| r.get("result").and_then(Owned::as_str) == Some("pong"))
    }

    /// The call-ids the relay holds (`list`), or `None` without a well-formed reply.
    pub fn try_list(&mut self) -> Option<Vec<String>> {
        let r = self.try_request(&Owned::dict().with("command", "list"))?;
        let calls = r.get("calls").and_then(Owned::as_list)?;
        Some(
            calls
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
        )
    }

    pub fn list(&mut self) -> Vec<String> {
        self.try_list()
            .unwrap_or_else(|| panic!("no well-formed list reply"))
    }

    /// rtpengine's `relayedpackets` total from `statistics`, wherever the relay nests it.
    pub fn relayed_packets(&mut self) -> Option<i64> {
        let r = self.try_request(&Owned::dict().with("command", "statistics"))?;
        find_int(&r, "relayedpackets")
    }

    /// `relayedpackets` and the ports used on the (only) interface, from `statistics`.
    pub fn relayed_and_ports_used(&mut self) -> (i64, i64) {
        let r = self.request("statistics");
        let relayed = find_int(&r, "relayedpackets")
            .unwrap_or_else(|| panic!("statistics without relayedpackets: {r}"));
        let used = r
            .get("statistics")
            .and_then(|s| s.get("interfaces"))
            .and_then(Owned::as_list)
            .and_then(|l| l.first())
            .and_then(|i| i.get("ports"))
            .and_then(|p| p.get("used"))
            .and_then(Owned::as_int)
            .unwrap_or_else(|| panic!("statistics without interfaces[0].ports.used: {r}"));
        (relayed, used)
    }
}

/// The first integer under `key` anywhere in the tree.
pub fn find_int(v: &Owned, key: &str) -> Option<i64> {
    match v {
        Owned::Dict(entries) => entries.iter().find_map(|(k, v)| match v {
            Owned::Int(i) if k == key => Some(*i),
            _ => find_int(v, key),
        }),
        Owned::List(items) => items.iter().find_map(|v| find_int(v, key)),
        _ => None,
    }
}
