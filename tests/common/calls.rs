//! Calls set up over ng against a running relay binary, and RTP sent through them (the
//! operations tests: call records, ctl, drain, reload).
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::Duration;

use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

use super::media::{count_rx, pcmu};
use super::ng::{relay_port, sdp};

/// The offer's reply as it came (`result` may be `load limit`).
pub fn offer(c: &mut NgClient, id: &str, a: &UdpSocket) -> Owned {
    c.request(
        &Owned::dict()
            .with("supports", Owned::List(vec![Owned::str("load limit")]))
            .with("sdp", sdp(a.local_addr().unwrap().port(), 1).as_str())
            .with("call-id", id)
            .with("from-tag", "ta")
            .with("command", "offer"),
    )
    .unwrap()
}

/// Offers from `a` (tag `ta`) and answers from `b` (tag `tb`): returns (where A sends, where
/// B sends).
pub fn call(c: &mut NgClient, id: &str, a: &UdpSocket, b: &UdpSocket) -> (SocketAddr, SocketAddr) {
    let o = offer(c, id, a);
    let to_b = relay_port(
        o.get("sdp")
            .and_then(Owned::as_str)
            .unwrap_or_else(|| panic!("offer refused: {o}")),
    );
    let answer = c
        .request(
            &Owned::dict()
                .with("sdp", sdp(b.local_addr().unwrap().port(), 2).as_str())
                .with("call-id", id)
                .with("from-tag", "ta")
                .with("to-tag", "tb")
                .with("command", "answer"),
        )
        .unwrap();
    let to_a = relay_port(answer.get("sdp").and_then(Owned::as_str).unwrap());
    (
        SocketAddr::from(([127, 0, 0, 1], to_a)),
        SocketAddr::from(([127, 0, 0, 1], to_b)),
    )
}

/// ng `delete` of call `id` (from tag `ta`): the reply's `result`.
pub fn delete(c: &mut NgClient, id: &str) -> String {
    let r = c
        .request(
            &Owned::dict()
                .with("call-id", id)
                .with("from-tag", "ta")
                .with("command", "delete"),
        )
        .unwrap();
    r.get("result")
        .and_then(Owned::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Sends packets `1..=n` but those in `skip` from `s` to `to`; returns how many were sent.
pub fn send(s: &UdpSocket, to: SocketAddr, ssrc: u32, n: u16, skip: &[u16]) -> u64 {
    let mut sent = 0;
    for seq in 1..=n {
        if !skip.contains(&seq) {
            s.send_to(&pcmu(seq, ssrc), to).unwrap();
            sent += 1;
            // A gentle pace: nothing is lost to a full socket buffer.
            sleep(Duration::from_micros(300));
        }
    }
    sent
}

/// Packets each way of an [`exchange`].
pub const EXCHANGE: u16 = 10;

/// [`EXCHANGE`] RTP packets each way through a call set up by [`call`] (sequence numbers
/// from `first`): how many arrived at (A, B), each side waited for up to 3 s.
pub fn exchange(
    a: &UdpSocket,
    b: &UdpSocket,
    (to_a, to_b): (SocketAddr, SocketAddr),
    first: u16,
) -> (usize, usize) {
    for seq in first..first + EXCHANGE {
        a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
        b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
    }
    let got_b = count_rx(b, usize::from(EXCHANGE), Duration::from_secs(3));
    let got_a = count_rx(a, usize::from(EXCHANGE), Duration::from_secs(3));
    (got_a, got_b)
}

/// What a whole [`exchange`] delivers.
pub const EXCHANGED: (usize, usize) = (EXCHANGE as usize, EXCHANGE as usize);
