// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! One relay socket per side for rtcp-mux calls (issue 19): once the answer accepts mux,
//! each side's RTCP port stays reserved but its socket is closed. A few hundred muxed calls
//! spread over two interface addresses add exactly 2 sockets each (unmuxed calls 4): counted
//! as descriptors in /proc/PID/fd under the mmsg engine and under io_uring without fixed
//! files, and as fixed-file table entries under io_uring (where they hold no descriptor).
//! RTP and RTCP both flow on the RTP ports of a muxed call, in user space and with the
//! in-kernel path where it runs (the default start), and its RTCP report blocks still reach
//! the call's figures; the odd port is free to bind from outside. A re-offer without mux
//! binds the RTCP ports again (the same ports) and RTCP flows on them.
//!
//! Ports (block 17000-17999): ng 17000-17002 on 127.0.0.1; relay media 17100-17799 on
//! 127.0.0.{1,2}, 127.0.0.{3,4} and 127.0.0.{5,6} (one pair of addresses per test);
//! endpoints 17900-17951 on 127.0.0.1 (17990-17996 are named in SDP, never bound).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::kernel::cannot_run;
use common::media::{pcmu, recv_n, wait_for};
use common::ng::{client, find_int, ng, relay_end, Relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;
use rtpanchor::rtp::rtcp::emit_header;
use rtpanchor::sdp::AudioSdp;

const MEDIA: (u16, u16) = (17100, 17799);
/// Muxed calls set up besides the one that carries media.
const MUXED: usize = 300;
/// Unmuxed calls set up after them.
const PLAIN: usize = 20;

/// A receiver report from `ssrc` with one report block (24 bytes): what the relay reads
/// into the call's figures.
fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 32];
    emit_header(&mut p, 1, 201, 32).expect("a 32-byte RR header fits");
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p[8..12].copy_from_slice(&0x5eed_u32.to_be_bytes());
    p
}

fn bind(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

fn sdp(port: u16, sess: u64, mux: bool) -> String {
    AudioSdp::new(SocketAddr::from(([127, 0, 0, 1], port)), sess)
        .rtcp_mux(mux)
        .to_string()
}

/// Offer and answer of one call between endpoints at `a` and `b`; the relay ends A and B
/// send to (from the answer's and the offer's SDP).
fn call(c: &mut NgClient, id: &str, ends: (u16, u16), mux: bool) -> (SocketAddr, SocketAddr) {
    signal(c, id, "", ends, mux)
}

/// [`call`], or a later offer and answer of the same call (`round` tells their cookies
/// apart).
fn signal(
    c: &mut NgClient,
    id: &str,
    round: &str,
    (a, b): (u16, u16),
    mux: bool,
) -> (SocketAddr, SocketAddr) {
    let offer = ng(
        c,
        &format!("{id}-o{round}"),
        &Owned::dict()
            .with("command", "offer")
            .with("call-id", id)
            .with("from-tag", "caller")
            .with("sdp", sdp(a, 1, mux).as_str()),
    );
    let to_b = relay_end(offer.get("sdp").and_then(Owned::as_str).expect("offer sdp"));
    let answer = ng(
        c,
        &format!("{id}-a{round}"),
        &Owned::dict()
            .with("command", "answer")
            .with("call-id", id)
            .with("from-tag", "caller")
            .with("to-tag", "callee")
            .with("sdp", sdp(b, 2, mux).as_str()),
    );
    let answer_sdp = answer
        .get("sdp")
        .and_then(Owned::as_str)
        .expect("answer sdp");
    assert_eq!(answer_sdp.contains("a=rtcp-mux"), mux, "{answer_sdp}");
    (relay_end(answer_sdp), to_b)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("relay's fd directory")
        .count()
}

fn statistic(c: &mut NgClient, key: &str) -> Option<i64> {
    find_int(&c.command("statistics").ok()?, key)
}

/// A relay on two media addresses `ips` (calls take them in turn), with its pid.
fn start(ng_port: u16, ips: [&str; 2], args: &[&str]) -> (Relay, u32) {
    let ng_at = SocketAddr::from(([127, 0, 0, 1], ng_port));
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", ips[0], "--interface", ips[1]])
        .args(["--listen-ng", &ng_at.to_string()])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--no-sip", "--num-threads", "1", "--log-level", "warn"])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let pid = child.id();
    let relay = Relay::new(child, ng_at);
    if let Err(e) = client(ng_at).wait_ready(Duration::from_secs(10)) {
        panic!("relay did not answer ping in 10 s: {e}");
    }
    (relay, pid)
}

/// `k` datagrams made by `make` from `from` to the relay end `to`, received unchanged,
/// exactly `k`, at `at` from the relay end `out`.
fn one_way(
    from: &UdpSocket,
    to: SocketAddr,
    (at, out): (&UdpSocket, SocketAddr),
    k: u16,
    make: impl Fn(u16) -> Vec<u8>,
    what: &str,
) {
    for i in 0..k {
        from.send_to(&make(i), to).unwrap();
    }
    let mut got = recv_n(at, k.into(), Duration::from_secs(3));
    got.extend(recv_n(at, 1, Duration::from_millis(200)));
    assert_eq!(got.len(), usize::from(k), "{what}: count");
    for (i, (p, src)) in got.iter().enumerate() {
        assert_eq!(p, &make(i as u16), "{what} #{i} unchanged");
        assert_eq!(*src, out, "{what} #{i} leaves by the RTP port");
    }
}

/// RTP and RTCP of one muxed call between endpoints at 127.0.0.1:`ends` and `ends + 10`:
/// both on the RTP ports both ways, RTCP's report blocks counted in `query`, the RTCP ports
/// unbound; then a re-offer without mux binds them again and RTCP flows there (endpoints'
/// RTCP at `ends + 1` and `ends + 11`).
fn media_on_the_rtp_ports(c: &mut NgClient, label: &str, ends: u16) {
    let (a, b) = (bind(ends), bind(ends + 10));
    let id = format!("mux-media-{label}");
    let (to_a, to_b) = call(c, &id, (ends, ends + 10), true);
    // A first exchange both ways latches the ends. Where the in-kernel path runs, it takes
    // each direction over during that exchange: datagrams still queued for the worker then
    // leave after newer ones the kernel already relayed (reordering at the hand-over, seen
    // under load), so the exact checks below start once both directions are in the kernel.
    let w = 5u16;
    for (from, to, at, ssrc) in [(&a, to_a, &b, 0xa), (&b, to_b, &a, 0xb)] {
        for i in 0..w {
            from.send_to(&pcmu(i, ssrc), to).unwrap();
        }
        let got = recv_n(at, w.into(), Duration::from_secs(3));
        assert!(
            !got.is_empty(),
            "{label}: nothing relayed in the first exchange"
        );
    }
    match cannot_run() {
        None if !label.contains("no-kernel") => {
            let both = wait_for(Duration::from_secs(5), || {
                statistic(c, "kernel_streams") == Some(2)
            });
            assert!(both, "both RTP directions in the kernel ({label})");
        }
        None => {}
        Some(why) => eprintln!("in-kernel path not running here ({why}): user space only"),
    }
    let n = 20u16;
    one_way(&a, to_a, (&b, to_b), n, |i| pcmu(w + i, 0xa), "A->B RTP");
    one_way(&b, to_b, (&a, to_a), n, |i| pcmu(w + i, 0xb), "B->A RTP");
    let k = 3u16;
    let rr = |base: u32| move |i: u16| rtcp_rr(base + u32::from(i));
    one_way(&a, to_a, (&b, to_b), k, rr(0xa00), "A->B RTCP");
    one_way(&b, to_b, (&a, to_a), k, rr(0xb00), "B->A RTCP");
    one_way(
        &a,
        to_a,
        (&b, to_b),
        n,
        |i| pcmu(w + n + i, 0xa),
        "A->B RTP after",
    );
    // Each end's report blocks are the figures of its side.
    let q = ng(
        c,
        &format!("{id}-q"),
        &Owned::dict()
            .with("command", "query")
            .with("call-id", id.as_str()),
    );
    for tag in ["caller", "callee"] {
        let streams = q
            .get("tags")
            .and_then(|t| t.get(tag))
            .and_then(|t| t.get("medias"))
            .and_then(Owned::as_list)
            .and_then(|l| l.first())
            .and_then(|m| m.get("streams"))
            .and_then(Owned::as_list)
            .unwrap_or_else(|| panic!("no streams for {tag}: {q}"));
        let reports = streams[1]
            .get("report")
            .and_then(|r| r.get("reports"))
            .and_then(Owned::as_int);
        assert_eq!(reports, Some(i64::from(k)), "{tag}: {}", streams[1]);
    }
    // The RTCP ports hold no socket of the relay: anyone may bind them now.
    let odd = |end: SocketAddr| SocketAddr::new(end.ip(), end.port() + 1);
    for end in [to_a, to_b] {
        let odd = odd(end);
        assert!(
            UdpSocket::bind(odd).is_ok(),
            "{odd} is still bound ({label})"
        );
    }
    // A re-offer and answer without mux bind them again, same ports: RTCP flows there.
    let again = signal(c, &id, "2", (ends, ends + 10), false);
    assert_eq!(again, (to_a, to_b), "same relay ends");
    for end in [to_a, to_b] {
        let odd = odd(end);
        assert!(
            UdpSocket::bind(odd).is_err(),
            "{odd} not bound again ({label})"
        );
    }
    let (a_rtcp, b_rtcp) = (bind(ends + 1), bind(ends + 11));
    one_way(
        &a_rtcp,
        odd(to_a),
        (&b_rtcp, odd(to_b)),
        k,
        rr(0xa10),
        "A->B RTCP apart",
    );
    one_way(
        &b_rtcp,
        odd(to_b),
        (&a_rtcp, odd(to_a)),
        k,
        rr(0xb10),
        "B->A RTCP apart",
    );
    one_way(
        &a,
        to_a,
        (&b, to_b),
        n,
        |i| pcmu(w + 2 * n + i, 0xa),
        "A->B RTP apart",
    );
}

/// Sets up the media call (unmuxed again at its end), then `MUXED` muxed and `PLAIN` unmuxed
/// calls, and checks the relay's sockets grow by exactly 2 per muxed call and 4 per unmuxed
/// one, read by `count`.
fn sockets_per_call(
    ng_port: u16,
    ips: [&str; 2],
    args: &[&str],
    label: &str,
    ends: u16,
    count: fn(&mut NgClient, u32) -> usize,
) {
    let (relay, pid) = start(ng_port, ips, args);
    let mut c = client(relay.ng);
    let before = count(&mut c, pid);
    media_on_the_rtp_ports(&mut c, label, ends);
    let mut used: Vec<IpAddr> = Vec::new();
    for i in 0..MUXED {
        let (to_a, _) = call(&mut c, &format!("{label}-m{i}"), (17990, 17992), true);
        if !used.contains(&to_a.ip()) {
            used.push(to_a.ip());
        }
    }
    assert_eq!(used.len(), 2, "calls on both addresses: {used:?}");
    let muxed = 4 + 2 * MUXED;
    let settled = wait_for(Duration::from_secs(5), || {
        count(&mut c, pid) == before + muxed
    });
    let now = count(&mut c, pid);
    assert!(
        settled,
        "{label}: {} sockets for {MUXED} muxed calls and one unmuxed, want 2 each and 4",
        now - before,
    );
    for i in 0..PLAIN {
        call(&mut c, &format!("{label}-p{i}"), (17994, 17996), false);
    }
    let want = muxed + 4 * PLAIN;
    let settled = wait_for(Duration::from_secs(5), || {
        count(&mut c, pid) == before + want
    });
    let now = count(&mut c, pid);
    assert!(
        settled,
        "{label}: {} sockets for {MUXED} muxed and {} unmuxed calls, want {want}",
        now - before,
        PLAIN + 1
    );
    drop(relay);
}

fn descriptors(_: &mut NgClient, pid: u32) -> usize {
    fd_count(pid)
}

fn fixed_files(c: &mut NgClient, _: u32) -> usize {
    statistic(c, "fixed_files").map_or(0, |n| n as usize)
}

#[test]
fn muxed_calls_hold_two_descriptors_each_mmsg() {
    let args = ["--io-engine", "mmsg"];
    let ips = ["127.0.0.1", "127.0.0.2"];
    sockets_per_call(17000, ips, &args, "mmsg", 17900, descriptors);
}

#[test]
fn muxed_calls_hold_two_descriptors_each_uring_without_fixed_files() {
    let args = ["--io-engine", "uring", "--uring-fixed-files", "0"];
    let ips = ["127.0.0.3", "127.0.0.4"];
    sockets_per_call(17001, ips, &args, "uring-fds", 17920, descriptors);
}

#[test]
fn muxed_calls_hold_two_fixed_files_each_uring_no_kernel() {
    let args = ["--io-engine", "uring", "--no-kernel-forwarding"];
    let ips = ["127.0.0.5", "127.0.0.6"];
    sockets_per_call(
        17002,
        ips,
        &args,
        "uring-fixed-no-kernel",
        17940,
        fixed_files,
    );
}
