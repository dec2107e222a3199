//! Media for the data-plane tests: RTP packets (built with the library's `RtpRepr`), loopback
//! sockets, the relay's address, and bounded waits for datagrams and conditions.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rtpanchor::rtp::RtpRepr;
use rtpanchor::session::backend::EndpointSpec;

/// An RTP packet: PT 0 (PCMU), no marker, `seq`, `ts` and `ssrc`, then `payload`.
pub fn rtp(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    RtpRepr::new(0, seq, ts, ssrc)
        .to_vec(payload)
        .expect("a plain header always fits")
}

/// 20 ms of PCMU (160 bytes of 0xd5) with packet `seq` of source `ssrc`: timestamp
/// `seq * 160`, 172 bytes in all.
pub fn pcmu(seq: u16, ssrc: u32) -> Vec<u8> {
    rtp(seq, u32::from(seq) * 160, ssrc, &[0xd5; 160])
}

/// A socket on 127.0.0.1 that waits 20 ms at most per receive.
pub fn sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// The endpoint `sock` is, as SDP would name it (RTCP on the next port).
pub fn endpoint(sock: &UdpSocket) -> EndpointSpec {
    let a = sock.local_addr().unwrap();
    EndpointSpec::new(Some(a), Some(SocketAddr::new(a.ip(), a.port() + 1)))
}

/// The relay's socket on 127.0.0.1 at `port`.
pub fn relay(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A socket on 127.0.0.1 that waits 50 ms at most per receive.
pub fn media_sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Counts datagrams until `want` arrived or `limit` passed.
pub fn count_rx(s: &UdpSocket, want: usize, limit: Duration) -> usize {
    recv_n(s, want, limit).len()
}

/// Receives until `want` datagrams arrived or `limit` passed; returns them.
pub fn recv_n(s: &UdpSocket, want: usize, limit: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + limit;
    while out.len() < want && Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((buf[..n].to_vec(), from));
        }
    }
    out
}

/// Polls `f` every 10 ms until it holds or `limit` passed; its last answer.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A phone's echo: sends every datagram on `s` back to its source (an RTP one with `ssrc`
/// written in, if given) for at most `limit`, stopping `quiet` after the last one once
/// something came. Returns how many came and from where.
pub fn echo_until_quiet(
    s: &UdpSocket,
    limit: Duration,
    quiet: Duration,
    ssrc: Option<u32>,
) -> (usize, BTreeSet<SocketAddr>) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut last = None::<Instant>;
    let mut got = 0usize;
    let mut sources = BTreeSet::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit && last.is_none_or(|t| t.elapsed() < quiet) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            got += 1;
            sources.insert(from);
            last = Some(Instant::now());
            if let (Some(ssrc), true) = (ssrc, n >= 12) {
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            }
            let _ = s.send_to(&buf[..n], from);
        }
    }
    (got, sources)
}

/// Sends `seqs` of `ssrc` ([`pcmu`]) from `from` to `to` and checks that `at` gets exactly
/// those, intact, from `back_from`, 25 at a time.
pub fn relay_round(
    from: &UdpSocket,
    to: SocketAddr,
    at: &UdpSocket,
    back_from: SocketAddr,
    seqs: &[u16],
    ssrc: u32,
) {
    for chunk in seqs.chunks(25) {
        let mut want: Vec<Vec<u8>> = chunk.iter().map(|&q| pcmu(q, ssrc)).collect();
        for p in &want {
            from.send_to(p, to).unwrap();
        }
        let mut got: Vec<Vec<u8>> = recv_n(at, chunk.len(), Duration::from_secs(3))
            .into_iter()
            .map(|(p, src)| {
                assert_eq!(src, back_from, "from the relay's port");
                p
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "relayed intact");
    }
}
