//! Many calls through one pair of phone sockets (every call's side A on one, side B on the
//! other) and per-stream packet counts keyed by SSRC: the handover tests (takeover,
//! standby), which count every packet of every stream across a change of relay process.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

use super::ng::ng;

/// Sets up `n` calls `<prefix>-<i>` (offer with `sdp_a`, answer with `sdp_b`) and returns
/// two destinations per call: stream 2i (A sends to the relay port the offer's rewrite
/// named) and 2i+1 (B sends to the answer's). `port` reads the relay port from a rewritten
/// SDP; `relay` is the relay's media address.
pub fn open_calls(
    c: &mut NgClient,
    prefix: &str,
    n: usize,
    (sdp_a, sdp_b): (&str, &str),
    port: impl Fn(&str) -> u16,
    relay: IpAddr,
) -> Vec<SocketAddr> {
    let mut dests = Vec::with_capacity(2 * n);
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let offer = ng(
            c,
            &format!("o{i}"),
            &Owned::dict()
                .with("sdp", sdp_a)
                .with("call-id", id.as_str())
                .with("from-tag", "ta")
                .with("command", "offer"),
        );
        let to_b = port(offer.get("sdp").and_then(Owned::as_str).unwrap());
        let answer = ng(
            c,
            &format!("a{i}"),
            &Owned::dict()
                .with("sdp", sdp_b)
                .with("call-id", id.as_str())
                .with("from-tag", "ta")
                .with("to-tag", "tb")
                .with("command", "answer"),
        );
        let to_a = port(answer.get("sdp").and_then(Owned::as_str).unwrap());
        dests.push(SocketAddr::new(relay, to_b));
        dests.push(SocketAddr::new(relay, to_a));
    }
    dests
}

/// One counter per stream.
pub fn counters(n: usize) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// The counters' values now.
pub fn snapshot(c: &[AtomicU64]) -> Vec<u64> {
    c.iter().map(|x| x.load(Ordering::Relaxed)).collect()
}

/// Counts what arrives on `s` per stream (stream k carries SSRC k+1) until `stop`.
pub fn count_by_ssrc(s: UdpSocket, counts: Arc<Vec<AtomicU64>>, stop: Arc<AtomicBool>) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(n) = s.recv(&mut buf) {
            if n >= 12 {
                let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
                if let Some(c) = ssrc.checked_sub(1).and_then(|k| counts.get(k)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
