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

pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
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
