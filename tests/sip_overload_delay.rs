//! Overload control at the SIP server's edge: the kernel stamps each datagram, and new
//! INVITEs that waited in the input queue longer than the limit are refused at once with
//! `503` + `Retry-After`, while an INVITE that arrives once the queue has drained is served.
//! The wait is made real by stopping the relay (`SIGSTOP`) with INVITEs arriving meanwhile.
//!
//! Ports (block 7800-7899): SIP 7800, ng 7801, media 7810-7849, the phone 7850.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::peers::{send_signal, sip_relay_command, wait_udp_bound, Peer};
use common::TempDir;

const SIP: u16 = 7800;
const NG: u16 = 7801;

fn invite(n: usize, from: SocketAddr) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7860 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKdelay{n}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a{n}\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: delay-{n}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{from}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// The first final response (status >= 200) to each INVITE numbered in `ids` received
/// within `limit`, by Call-ID number, with whether it carried Retry-After (retransmitted
/// finals of earlier INVITEs, never ACKed here, are skipped).
fn finals(
    sock: &UdpSocket,
    ids: std::ops::RangeInclusive<usize>,
    limit: Duration,
) -> Vec<(usize, u16, bool)> {
    let want = ids.clone().count();
    let deadline = Instant::now() + limit;
    let mut got: Vec<(usize, u16, bool)> = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want && Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status: u16 = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if status < 200 {
            continue;
        }
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: delay-"))
            .and_then(|r| r.split('@').next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(usize::MAX);
        if !ids.contains(&id) || got.iter().any(|g| g.0 == id) {
            continue;
        }
        let retry = text.lines().any(|l| l.starts_with("Retry-After:"));
        got.push((id, status, retry));
    }
    got.sort_unstable();
    got
}

#[test]
fn invites_that_waited_in_the_input_queue_get_503_and_later_ones_are_served() {
    let dir = TempDir::new("sip-overload-delay").unwrap();
    let mut relay = Peer::spawn(
        "relay",
        sip_relay_command(NG, SIP)
            .args(["--port-min", "7810", "--port-max", "7849"])
            .args(["--log-level", "info"]),
        &dir.path().join("relay.log"),
    )
    .expect("start rtpanchor");
    wait_udp_bound(&mut relay, SIP, Duration::from_secs(10)).expect("SIP bound");
    let phone = UdpSocket::bind("127.0.0.1:7850").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{SIP}").parse().unwrap();
    let me = phone.local_addr().unwrap();

    // Served normally before: no one is registered as bob, so a final other than 503.
    phone.send_to(&invite(0, me), proxy).unwrap();
    let first = finals(&phone, 0..=0, Duration::from_secs(5));
    assert_eq!(first.len(), 1, "no final answer to the first INVITE");
    assert_ne!(first[0].1, 503, "refused with nothing queued: {first:?}");

    // The control thread cannot run for 400 ms while 20 INVITEs arrive: each waits at least
    // 200 ms (the limit) in the queue.
    send_signal(relay.pid(), "STOP");
    for n in 1..=20 {
        phone.send_to(&invite(n, me), proxy).unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    send_signal(relay.pid(), "CONT");
    let queued = finals(&phone, 1..=20, Duration::from_secs(5));
    assert_eq!(
        queued.len(),
        20,
        "not every queued INVITE was answered: {queued:?}"
    );
    for (n, status, retry) in &queued {
        assert_eq!(
            (*status, *retry),
            (503, true),
            "INVITE {n} waited 400 ms in the queue and was not refused with 503 + Retry-After: {queued:?}"
        );
    }

    // Once the queue has drained, a new INVITE is served again.
    std::thread::sleep(Duration::from_millis(200));
    phone.send_to(&invite(21, me), proxy).unwrap();
    let after = finals(&phone, 21..=21, Duration::from_secs(5));
    assert_eq!(after.len(), 1, "no final answer after the queue drained");
    assert_eq!(after[0].0, 21);
    assert_ne!(
        after[0].1, 503,
        "still refusing after the queue drained: {after:?}"
    );
    assert_eq!(
        first[0].1, after[0].1,
        "served the same way as before the stop"
    );
    relay.stop(Duration::from_secs(5));
}
