// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! RTP as people really send it, in the kernel: header extensions (RFC 8285 one-byte and
//! two-byte, and a plain RFC 3550 one), CSRCs and padding. The relay binary, driven over ng,
//! relays such a call in the kernel (`kernel_forwarded` grows, the worker receives nothing)
//! with the same figures (`query`: packets, bytes, lost, duplicates, reordered, jitter) as the
//! same relay with `--no-kernel-forwarding` reports for the same packets.
//!
//! Ports: ng 4000-4009, media 4100-4299 (this file's block).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::kernel::cannot_run;
use common::media::{recv_n, relay, sock, wait_for};
use common::ng::{client, find_int, ng, relay_port, sdp, start_relay_in, Relay};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

/// The shapes of RTP the test sends, each with 160 payload bytes.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// RFC 8285 one-byte headers (0xBEDE): audio level and abs-send-time, as WebRTC sends.
    OneByte,
    /// RFC 8285 two-byte headers (0x1000): one element of 4 bytes.
    TwoByte,
    /// An RFC 3550 extension of another profile, 3 words long.
    Plain3550,
    /// Two CSRCs (a mixer's packet).
    Csrcs,
    /// 4 bytes of padding (P bit, count in the last byte).
    Padding,
    /// One CSRC, a one-byte extension and padding at once.
    All,
}

const FORMS: [Form; 6] = [
    Form::OneByte,
    Form::TwoByte,
    Form::Plain3550,
    Form::Csrcs,
    Form::Padding,
    Form::All,
];

/// Packet `seq` of `ssrc` (PT 0, timestamp `seq * 160`) in `form`.
fn packet(form: Form, seq: u16, ssrc: u32) -> Vec<u8> {
    let (csrcs, ext, pad): (&[u32], &[u8], usize) = match form {
        Form::OneByte => (&[], &[0xbe, 0xde, 0, 2, 0x10, 0x85, 0x22, 1, 2, 3, 0, 0], 0),
        Form::TwoByte => (&[], &[0x10, 0x00, 0, 2, 3, 4, 9, 8, 7, 6, 0, 0], 0),
        Form::Plain3550 => (
            &[],
            &[0x12, 0x34, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            0,
        ),
        Form::Csrcs => (&[0x1111_1111, 0x2222_2222], &[], 0),
        Form::Padding => (&[], &[], 4),
        Form::All => (&[0x3333_3333], &[0xbe, 0xde, 0, 1, 0x10, 0x7f, 0, 0], 8),
    };
    let mut b0 = 0x80 | csrcs.len() as u8;
    if !ext.is_empty() {
        b0 |= 0x10;
    }
    if pad > 0 {
        b0 |= 0x20;
    }
    let mut p = vec![b0, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(ext);
    p.extend_from_slice(&[seq as u8; 160]);
    if pad > 0 {
        p.resize(p.len() + pad - 1, 0);
        p.push(pad as u8);
    }
    p
}

/// The sequence numbers sent in `form`'s round (`k`-th form): 50 from `60 + 50 k` with one
/// lost, one duplicated and two swapped.
fn round(k: usize) -> Vec<u16> {
    let start = 60 + 50 * k as u16;
    let mut seqs: Vec<u16> = (start..start + 50).filter(|&q| q != start + 10).collect();
    let at = seqs.iter().position(|&q| q == start + 20).unwrap();
    seqs.insert(at, start + 20);
    let at = seqs.iter().position(|&q| q == start + 30).unwrap();
    seqs.swap(at, at + 1);
    seqs
}

/// A fresh cookie per request (the relay answers a repeated one from its cache).
struct Ng {
    c: NgClient,
    n: u32,
}

impl Ng {
    fn ask(&mut self, req: &Owned) -> Owned {
        self.n += 1;
        ng(&mut self.c, &format!("c{}", self.n), req)
    }

    /// A figure of `statistics`' dataplane block.
    fn stat(&mut self, key: &str) -> i64 {
        let r = self.ask(&Owned::dict().with("command", "statistics"));
        find_int(&r, key).unwrap_or_else(|| panic!("no {key} in {r}"))
    }

    /// Offer (A at `a_port`) and answer (B at `b_port`): the relay ports A and B send to.
    fn call(&mut self, a_port: u16, b_port: u16) -> (u16, u16) {
        let mut ports = [0; 2];
        for (k, (cmd, port)) in [("offer", a_port), ("answer", b_port)]
            .into_iter()
            .enumerate()
        {
            let mut req = Owned::dict()
                .with("sdp", sdp(port, k as u64 + 1).as_str())
                .with("call-id", "forms")
                .with("from-tag", "tagA")
                .with("command", cmd);
            if cmd == "answer" {
                req = req.with("to-tag", "tagB");
            }
            let r = self.ask(&req);
            assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
            ports[k] = relay_port(r.get("sdp").and_then(Owned::as_str).unwrap());
        }
        // The offer's SDP goes to B (where B sends); the answer's to A.
        (ports[1], ports[0])
    }

    /// The `query` figures of the RTP stream on the relay's `port`: packets, bytes, lost,
    /// duplicates, reordered, jitter (µs), max jitter (µs).
    fn figures(&mut self, port: u16) -> [i64; 7] {
        let q = self.ask(
            &Owned::dict()
                .with("call-id", "forms")
                .with("command", "query"),
        );
        let tags = q.get("tags").unwrap_or_else(|| panic!("no tags: {q}"));
        for tag in ["tagA", "tagB"] {
            let Some(streams) = tags
                .get(tag)
                .and_then(|t| t.get("medias"))
                .and_then(Owned::as_list)
                .and_then(|m| m.first())
                .and_then(|m| m.get("streams"))
                .and_then(Owned::as_list)
            else {
                continue;
            };
            for s in streams {
                if s.get("local port").and_then(Owned::as_int) != Some(i64::from(port)) {
                    continue;
                }
                let i = |v: &Owned, k: &str| {
                    v.get(k)
                        .and_then(Owned::as_int)
                        .unwrap_or_else(|| panic!("no {k} in {v}"))
                };
                let st = s.get("stats").unwrap();
                return [
                    i(st, "packets"),
                    i(st, "bytes"),
                    i(s, "packets lost"),
                    i(s, "duplicates"),
                    i(s, "reordered"),
                    i(s, "jitter us"),
                    i(s, "max jitter us"),
                ];
            }
        }
        panic!("no stream on port {port}: {q}");
    }
}

/// What one run measured.
struct Run {
    figures: [i64; 7],
    malformed: i64,
}

/// Runs the whole sequence through a relay (in the kernel unless `extra` turns it off) on
/// ng port `ng_port` and media ports `media`.
fn run(ng_port: u16, media: (u16, u16), extra: &[&str], kernel: bool) -> Run {
    let process: Relay = start_relay_in(ng_port, media, "auto", extra);
    let mut c = Ng {
        c: client(process.ng),
        n: 0,
    };
    let (a, b) = (sock(), sock());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let (to_a, to_b) = c.call(port(&a), port(&b));
    let (at_a, at_b): (SocketAddr, SocketAddr) = (relay(to_a), relay(to_b));

    // Both ends latch on plain RTP paced as a phone sends it (20 ms apart: jitter stays
    // near zero), which the worker relays.
    for q in 0..60u16 {
        a.send_to(&packet_plain(q, 0xa), at_a).unwrap();
        b.send_to(&packet_plain(q, 0xb), at_b).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rounds start 3 s after the last of these in both runs, whatever the waits below
    // took: the pause moves jitter (and max jitter) the same way in both.
    let resume = std::time::Instant::now() + Duration::from_secs(3);
    assert_eq!(recv_n(&b, 60, Duration::from_secs(3)).len(), 60);
    assert_eq!(recv_n(&a, 60, Duration::from_secs(3)).len(), 60);
    if kernel {
        assert!(
            wait_for(Duration::from_secs(5), || c.stat("kernel_streams") == 2),
            "both directions handed to the kernel"
        );
    }
    // The kernel may have relayed the end of the latch phase: wait until that is folded in.
    assert!(wait_for(Duration::from_secs(3), || {
        c.figures(to_a)[0] == 60 && c.figures(to_b)[0] == 60
    }));
    let kernel_before = c.stat("kernel_forwarded");
    let user_before = c.stat("rx_packets") - kernel_before;
    let pause = resume.saturating_duration_since(std::time::Instant::now());
    assert!(!pause.is_zero(), "the latch phase's waits took over 3 s");
    std::thread::sleep(pause);

    // Then every form from A, back to back (jitter climbs towards 160 units): each
    // arrives at B byte for byte, from the relay's port.
    let mut sent = 0;
    for (k, form) in FORMS.into_iter().enumerate() {
        let seqs = round(k);
        for chunk in seqs.chunks(25) {
            let want: Vec<Vec<u8>> = chunk.iter().map(|&q| packet(form, q, 0xa)).collect();
            for p in &want {
                a.send_to(p, at_a).unwrap();
            }
            let got = recv_n(&b, want.len(), Duration::from_secs(3));
            let mut have: Vec<Vec<u8>> = got
                .into_iter()
                .map(|(p, from)| {
                    assert_eq!(from, at_b, "{form:?}: from the relay's port");
                    p
                })
                .collect();
            let mut want = want;
            have.sort();
            want.sort();
            assert_eq!(have, want, "{form:?}: relayed intact");
            sent += chunk.len() as i64;
        }
    }
    if kernel {
        assert!(
            wait_for(Duration::from_secs(3), || c.stat("kernel_forwarded")
                == kernel_before + sent),
            "every packet of every form went through the kernel: {} of {sent}",
            c.stat("kernel_forwarded") - kernel_before
        );
        assert_eq!(
            c.stat("rx_packets") - c.stat("kernel_forwarded"),
            user_before,
            "the worker received none of them"
        );
        assert_eq!(c.stat("kernel_takebacks"), 0, "nothing went back");
    } else {
        assert_eq!(c.stat("kernel_forwarded"), 0);
    }

    // A malformed packet (padding count 0) is the worker's, with or without the kernel: it
    // counts it and the tracker never sees it; the stream stays where it was.
    let mut bad = packet(Form::Padding, 400, 0xa);
    if let Some(last) = bad.last_mut() {
        *last = 0;
    }
    a.send_to(&bad, at_a).unwrap();
    assert_eq!(recv_n(&b, 1, Duration::from_secs(2)).len(), 1, "relayed on");
    assert!(wait_for(Duration::from_secs(3), || c.stat("malformed_rtp") >= 1));
    if kernel {
        assert_eq!(c.stat("kernel_streams"), 2, "still in the kernel");
    }
    // The kernel's figures are folded in within a second.
    let total = 60 + sent;
    assert!(
        wait_for(Duration::from_secs(3), || c.figures(to_a)[0] > total),
        "{:?}",
        c.figures(to_a)
    );
    // Quality is published a little after the socket counts (every 100 ms by the worker,
    // every second from the kernel's map): read it once both had their turn.
    std::thread::sleep(Duration::from_millis(1500));
    Run {
        figures: c.figures(to_a),
        malformed: c.stat("malformed_rtp"),
    }
}

/// A plain PCMU packet for the latch phase.
fn packet_plain(seq: u16, ssrc: u32) -> Vec<u8> {
    common::media::pcmu(seq, ssrc)
}

#[test]
fn extensions_csrcs_and_padding_are_relayed_in_the_kernel_with_the_workers_figures() {
    if let Some(why) = cannot_run() {
        // The comparison needs the kernel path; where it cannot run, the relay must say so
        // (tested in kernel_path.rs).
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let kernel = run(4000, (4100, 4199), &[], true);
    let user = run(4001, (4200, 4299), &["--no-kernel-forwarding"], false);
    let [kp, kb, kl, kd, kr, kj, kmj] = kernel.figures;
    let [up, ub, ul, ud, ur, uj, umj] = user.figures;
    // Counts: exactly the worker's. 60 latch packets, 6 rounds of 50 (one lost, one
    // duplicated) and the malformed one (counted on the socket, not tracked).
    assert_eq!((kp, kb), (up, ub), "packets and bytes");
    assert_eq!(kp, 60 + 6 * 50 + 1);
    assert_eq!((kl, kd, kr), (ul, ud, ur), "lost, duplicates, reordered");
    assert_eq!((kl, kd, kr), (6, 6, 6));
    assert_eq!((kernel.malformed, user.malformed), (1, 1));
    // Jitter depends on arrival times, which differ between runs by scheduling noise only.
    // Max jitter comes from the 3 s pause (|D| of 3 s: about 190 ms), the final jitter from
    // the rounds sent back to back (|D| of 160 units each: towards 20 ms). Without the
    // kernel's tracking both would have stayed near the latch phase's, near zero. A stall
    // of the sending thread on a busy machine moves them by a few per cent.
    for (what, k, u) in [("jitter", kj, uj), ("max jitter", kmj, umj)] {
        assert!(
            k > 10_000 && u > 10_000,
            "{what}: kernel {k} µs, user {u} µs"
        );
        let tolerance = (k.max(u) / 10).max(2_000);
        assert!(
            (k - u).abs() <= tolerance,
            "{what}: kernel {k} µs, user {u} µs"
        );
    }
}
