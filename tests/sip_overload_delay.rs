//! Overload control at the SIP server's edge: the kernel stamps each datagram, and new
//! INVITEs that waited in the input queue longer than the limit are refused at once with
//! `503` + `Retry-After`, while an INVITE that arrives once the queue has drained is served.
//! The wait is made real by stopping the relay (`SIGSTOP`) with INVITEs arriving meanwhile.
//!
//! In-dialog traffic is served ahead of new INVITEs that queued before it (`sip::admission`).
//!
//! Ports (block 7800-7899): SIP 7800, ng 7801, media 7810-7849, the phone 7850; the second
//! relay: SIP 7870, ng 7871, media 7852-7869, its phone 7899.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::peers::{send_signal, sip_relay_command, stop_and_wait, wait_udp_bound, Peer};
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

/// A BYE inside a dialog (it carries a To tag) the proxy does not know: it is answered
/// with a final all the same (no such user or dialog).
fn bye(n: usize, from: SocketAddr) -> Vec<u8> {
    format!(
        "BYE sip:bob@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKbye{n}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a{n}\r\n\
         To: <sip:bob@127.0.0.1>;tag=b{n}\r\n\
         Call-ID: delay-{n}@127.0.0.1\r\n\
         CSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A final response (status >= 200): the number of its Call-ID, its status, and whether it
/// carries Retry-After.
fn read_final(bytes: &[u8]) -> Option<(usize, u16, bool)> {
    let text = String::from_utf8_lossy(bytes);
    let status: u16 = text
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())?;
    if status < 200 {
        return None;
    }
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: delay-"))
        .and_then(|r| r.split('@').next())
        .and_then(|d| d.parse().ok())?;
    let retry = text.lines().any(|l| l.starts_with("Retry-After:"));
    Some((id, status, retry))
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
        let Some(f) = read_final(&buf[..n]) else {
            continue;
        };
        if ids.contains(&f.0) && !got.iter().any(|g| g.0 == f.0) {
            got.push(f);
        }
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
    stop_and_wait(relay.pid());
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

#[test]
fn a_bye_is_served_before_the_new_invites_queued_ahead_of_it() {
    const SIP2: u16 = 7870;
    let dir = TempDir::new("sip-overload-order").unwrap();
    let mut relay = Peer::spawn(
        "relay",
        sip_relay_command(7871, SIP2)
            .args(["--port-min", "7852", "--port-max", "7869"])
            .args(["--log-level", "info"]),
        &dir.path().join("relay.log"),
    )
    .expect("start rtpanchor");
    wait_udp_bound(&mut relay, SIP2, Duration::from_secs(10)).expect("SIP bound");
    let phone = UdpSocket::bind("127.0.0.1:7899").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{SIP2}").parse().unwrap();
    let me = phone.local_addr().unwrap();

    // Served once before the stop: the SIP loop runs and has turned receive timestamps on
    // (the port is bound a moment before; datagrams queued in between carry no stamp and
    // would look as if they had not waited).
    phone.send_to(&invite(0, me), proxy).unwrap();
    let first = finals(&phone, 0..=0, Duration::from_secs(5));
    assert_eq!(first.len(), 1, "no final answer to the first INVITE");

    // 100 new INVITEs, then a BYE of a dialog, all queued while the relay is stopped.
    stop_and_wait(relay.pid());
    for n in 1..=100 {
        phone.send_to(&invite(n, me), proxy).unwrap();
    }
    phone.send_to(&bye(101, me), proxy).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    send_signal(relay.pid(), "CONT");

    // Finals in the order they came back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut order: Vec<(usize, u16)> = Vec::new();
    let mut buf = [0u8; 4096];
    while order.len() < 101 && Instant::now() < deadline {
        let Ok(n) = phone.recv(&mut buf) else {
            continue;
        };
        if let Some((id, status, _)) = read_final(&buf[..n]) {
            if !order.iter().any(|o| o.0 == id) {
                order.push((id, status));
            }
        }
    }
    assert_eq!(order.len(), 101, "not everything was answered: {order:?}");
    let bye_at = order.iter().position(|o| o.0 == 101).unwrap();
    // Served within the first batch read after the stop, not after the 100 INVITEs.
    assert!(
        bye_at < 16,
        "the BYE was answered as number {bye_at} of 101: {order:?}"
    );
    let refused = order.iter().filter(|o| o.0 != 101 && o.1 == 503).count();
    assert_eq!(
        refused, 100,
        "the queued INVITEs were not all refused: {order:?}"
    );
    relay.stop(Duration::from_secs(5));
}
