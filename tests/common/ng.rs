//! The relay binary for the end-to-end tests and what they ask it over ng: start it, a client
//! (the library's, `rtpanchor::client::ng`) with the tests' timeouts, figures out of replies,
//! and the SDP the tests offer.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rtpanchor::client::ng::{NgClient, RetryPolicy};
use rtpanchor::control::bencode::Owned;
use rtpanchor::sdp::AudioSdp;

/// A relay process, killed by pid when dropped (also when a test panics).
pub struct Relay {
    child: Child,
    pub ng: SocketAddr,
}

impl Relay {
    /// A relay the test started itself (flags of its own), answering ng at `ng`.
    pub fn new(child: Child, ng: SocketAddr) -> Relay {
        Relay { child, ng }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_relay(ng_port: u16, port_min: u16, engine: &str, extra: &[&str]) -> Relay {
    start_relay_in(ng_port, (port_min, port_min + 999), engine, extra)
}

/// A client of the relay's ng socket at `ng` for tests that name their cookies ([`ng`]): each
/// request is sent once and its reply awaited 500 ms (a test that times replies must see a
/// lost one, not its retransmission).
pub fn client(ng: SocketAddr) -> NgClient {
    NgClient::udp(ng)
        .expect("ng client socket")
        .with_policy(RetryPolicy::millis(500, 1))
}

/// `req` under `cookie`, or `None` without a reply.
pub fn try_ng(c: &mut NgClient, cookie: &str, req: &Owned) -> Option<Owned> {
    c.request_with_cookie(cookie, req).ok()
}

/// `req` under `cookie` and its reply; panics without one.
pub fn ng(c: &mut NgClient, cookie: &str, req: &Owned) -> Owned {
    c.request_with_cookie(cookie, req)
        .unwrap_or_else(|e| panic!("no reply to {cookie}: {e}"))
}

/// A client of the relay's ng socket on 127.0.0.1:`port` for tests that only need answers:
/// its cookies are `<prefix>_<pid>_<n>`, and each request is sent up to 3 times 500 ms apart
/// with the same cookie, as Kamailio does.
pub fn answering_client(port: u16, prefix: &str) -> NgClient {
    NgClient::udp(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("ng client socket")
        .with_cookie_prefix(format!("{prefix}_{}", std::process::id()))
        .with_policy(RetryPolicy::millis(500, 3))
}

/// rtpengine's `relayedpackets` total from `statistics`, wherever the relay nests it.
pub fn relayed_packets(c: &mut NgClient) -> Option<i64> {
    find_int(&c.command("statistics").ok()?, "relayedpackets")
}

/// `relayedpackets` and the ports used on the (only) interface, from `statistics`.
pub fn relayed_and_ports_used(c: &mut NgClient) -> (i64, i64) {
    let r = c
        .command("statistics")
        .unwrap_or_else(|e| panic!("no ng reply to statistics: {e}"));
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

/// The tests' offer and answer: PCMU and telephone events (PT 101) at 127.0.0.1:`port`.
pub fn sdp(port: u16, sess: u64) -> String {
    AudioSdp::new(SocketAddr::from(([127, 0, 0, 1], port)), sess)
        .telephone_event(101)
        .to_string()
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

/// The relay address and RTP port an SDP names (its `c=` line and first `m=audio` port).
pub fn relay_end(sdp: &str) -> SocketAddr {
    let c = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= line: {sdp}"));
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m= port: {sdp}"));
    SocketAddr::new(c.trim().parse().expect("c= address"), port)
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

/// A relay as [`start_relay`] starts it, with media ports `port_min..=port_max` only (for
/// tests in a small port block of their own).
pub fn start_relay_in(
    ng_port: u16,
    (port_min, port_max): (u16, u16),
    engine: &str,
    extra: &[&str],
) -> Relay {
    let ng: SocketAddr = SocketAddr::from(([127, 0, 0, 1], ng_port));
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", "127.0.0.1", "--listen-ng", &ng.to_string()])
        .args(["--port-min", &port_min.to_string()])
        .args(["--port-max", &port_max.to_string()])
        .args(["--no-sip", "--num-threads", "1", "--io-engine", engine])
        .args(["--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let relay = Relay { child, ng };
    if let Err(e) = client(ng).wait_ready(Duration::from_secs(10)) {
        panic!("relay did not answer ping with pong in 10 s: {e}");
    }
    relay
}
