//! `--ng-allow`: ng requests from addresses outside the list are dropped unanswered, those
//! from inside are served. Ports 12600-12699.

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{wait_udp_bound, Peer};
use common::TempDir;

/// Sends an ng ping from `from` and waits up to `wait` for the reply.
fn ping(from: &str, ng: u16, wait: Duration) -> Option<String> {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        s.send_to(b"c1 d7:command4:pinge", ("127.0.0.1", ng))
            .unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

#[test]
fn ng_requests_from_outside_the_allow_list_are_dropped() {
    let tmp = TempDir::new("ng-allow").unwrap();
    let ng = 12622;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.args([
        "--interface",
        "127.0.0.1",
        "--listen-ng",
        &format!("127.0.0.1:{ng}"),
    ])
    .args(["--ng-allow", "127.0.0.2", "--no-sip", "--num-threads", "1"])
    .args([
        "--port-min",
        "12630",
        "--port-max",
        "12699",
        "--no-kernel-forwarding",
    ]);
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &tmp.path().join("relay.log")).unwrap();
    wait_udp_bound(&mut relay, ng, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let allowed = ping("127.0.0.2", ng, Duration::from_secs(5));
    assert_eq!(allowed.as_deref(), Some("c1 d6:result4:ponge"));
    assert_eq!(ping("127.0.0.1", ng, Duration::from_millis(700)), None);
    relay.stop(Duration::from_secs(5));
}
