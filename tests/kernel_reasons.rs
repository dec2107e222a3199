// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! Why media is not in the kernel, by reason: every packet a worker receives is counted under
//! one reason (ng `statistics` `dataplane.user_*`, `/metrics`
//! `rtpanchor_kernel_path_user_packets_total{reason}`), and every direction taken back under
//! why (`kernel_back_*`, `rtpanchor_kernel_path_takebacks_total{reason}`). Each reason the
//! test can provoke on loopback is provoked and counted exactly.
//!
//! Ports: ng 4010-4019, HTTP 4020, media 4300-4499 (this file's block).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::http::{exposed, http_get};
use common::kernel::cannot_run;
use common::media::{endpoint, pcmu, recv_n, relay, sock, wait_for};
use common::ng::{client, find_int, ng, relay_port, sdp, start_relay_in};
use rtpanchor::client::ng::NgClient;
use rtpanchor::config::{Config, IoEngine};
use rtpanchor::control::bencode::Owned;
use rtpanchor::dataplane::kernel::reasons::UserReason;
use rtpanchor::dataplane::DataPlane;
use rtpanchor::session::backend::{MediaBackend, StreamSpec};

const HTTP: u16 = 4020;

/// A fresh cookie per request (the relay answers a repeated one from its cache).
struct Ng {
    c: NgClient,
    n: u32,
}

impl Ng {
    fn ask(&mut self, req: &Owned) -> Owned {
        self.n += 1;
        ng(&mut self.c, &format!("r{}", self.n), req)
    }

    /// A figure of `statistics`' dataplane block (0 when absent would hide a missing key:
    /// absent fails).
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
                .with("call-id", "reasons")
                .with("from-tag", "tagA")
                .with("command", cmd);
            if cmd == "answer" {
                req = req.with("to-tag", "tagB");
            }
            let r = self.ask(&req);
            assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
            ports[k] = relay_port(r.get("sdp").and_then(Owned::as_str).unwrap());
        }
        (ports[1], ports[0])
    }
}

/// RTP with payload type `pt` (else as [`pcmu`]).
fn rtp_pt(seq: u16, ssrc: u32, pt: u8) -> Vec<u8> {
    let mut p = pcmu(seq, ssrc);
    p[1] = pt;
    p
}

/// Sends `seqs` from `from` to `to` 3 ms apart (a phone's pace, faster).
fn paced(from: &UdpSocket, to: SocketAddr, seqs: std::ops::Range<u16>, ssrc: u32, pt: u8) {
    for q in seqs {
        from.send_to(&rtp_pt(q, ssrc, pt), to).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn every_packet_kept_in_user_space_is_counted_under_its_reason() {
    if let Some(why) = cannot_run() {
        eprintln!("kernel path not tested here: {why}");
        return;
    }
    let process = start_relay_in(
        4010,
        (4300, 4399),
        "auto",
        &["--listen-http", &format!("127.0.0.1:{HTTP}")],
    );
    let mut c = Ng {
        c: client(process.ng),
        n: 0,
    };
    let (a, b) = (sock(), sock());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let (to_a, to_b) = c.call(port(&a), port(&b));
    let (at_a, at_b) = (relay(to_a), relay(to_b));

    // A alone: B never latched, so A's packets stay with the worker, first as not looked
    // at yet, then as waiting for the other end.
    paced(&a, at_a, 0..40, 0xa, 0);
    assert_eq!(recv_n(&b, 40, Duration::from_secs(2)).len(), 40);
    let (pending, not_latched) = (c.stat("user_pending"), c.stat("user_not_latched"));
    assert_eq!(pending + not_latched, 40, "{pending} + {not_latched}");
    assert!(not_latched > 0, "B is not latched: {not_latched}");
    assert_eq!(c.stat("user_disabled") + c.stat("user_unavailable"), 0);

    // B too: both directions go to the kernel.
    let mut seq = 40u16;
    assert!(
        wait_for(Duration::from_secs(10), || {
            for _ in 0..5 {
                a.send_to(&pcmu(seq, 0xa), at_a).unwrap();
                b.send_to(&pcmu(seq, 0xb), at_b).unwrap();
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
            c.stat("kernel_streams") == 2
        }),
        "both directions handed over"
    );
    std::thread::sleep(Duration::from_millis(50));
    while recv_n(&b, 100, Duration::from_millis(50)).len() == 100 {}
    while recv_n(&a, 100, Duration::from_millis(50)).len() == 100 {}

    // RTCP on the RTP port (as rtcp-mux sends it), STUN, and RTP with a bad padding count:
    // the worker's, each under its reason, and the directions stay in the kernel.
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 0xa];
    let stun = [
        0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let mut bad = pcmu(seq, 0xa);
    bad[0] |= 0x20;
    if let Some(last) = bad.last_mut() {
        *last = 0;
    }
    for _ in 0..5 {
        a.send_to(&rr, at_a).unwrap();
    }
    for _ in 0..3 {
        a.send_to(&stun, at_a).unwrap();
    }
    a.send_to(&bad, at_a).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || c.stat("user_malformed") == 1),
        "the malformed packet"
    );
    assert_eq!(c.stat("user_rtcp"), 5);
    assert_eq!(c.stat("user_not_rtp"), 3);
    assert_eq!(
        c.stat("kernel_streams"),
        2,
        "RTCP, STUN and junk leave it there"
    );
    assert_eq!(c.stat("kernel_takebacks"), 0);

    // What the tracker or the latch must judge takes the direction back, each reason once;
    // in between, A goes on until its direction is back in the kernel.
    let back_in_kernel = |c: &mut Ng, seq: &mut u16, ssrc: u32, pt: u8| {
        assert!(
            wait_for(Duration::from_secs(10), || {
                paced(&a, at_a, *seq..*seq + 10, ssrc, pt);
                *seq += 10;
                c.stat("kernel_streams") >= 1
            }),
            "A's direction is offered again"
        );
    };
    let user_rtp_before = c.stat("user_taken_back");
    // A new SSRC (the phone restarted its stream).
    paced(&a, at_a, seq..seq + 1, 0xa2, 0);
    seq += 1;
    assert!(wait_for(Duration::from_secs(2), || c
        .stat("kernel_back_ssrc")
        == 1));
    assert_eq!(
        c.stat("kernel_back_pair"),
        1,
        "B's direction came back with it"
    );
    assert_eq!(c.stat("user_handed_back"), 1);
    back_in_kernel(&mut c, &mut seq, 0xa2, 0);
    assert!(
        c.stat("user_taken_back") > user_rtp_before,
        "packets before the direction was offered again"
    );
    // A jump of 5,000.
    seq += 5000;
    paced(&a, at_a, seq..seq + 1, 0xa2, 0);
    seq += 1;
    assert!(wait_for(Duration::from_secs(2), || c
        .stat("kernel_back_jump")
        == 1));
    back_in_kernel(&mut c, &mut seq, 0xa2, 0);
    // Telephone events (payload type 101) in the middle of the call.
    paced(&a, at_a, seq..seq + 1, 0xa2, 101);
    seq += 1;
    assert!(wait_for(Duration::from_secs(2), || c
        .stat("kernel_back_payload_type")
        == 1));
    back_in_kernel(&mut c, &mut seq, 0xa2, 101);
    // A stranger on A's port (the worker's latch refuses it).
    let stranger = sock();
    stranger.send_to(&pcmu(seq, 0xa2), at_a).unwrap();
    assert!(wait_for(Duration::from_secs(2), || c
        .stat("kernel_back_source")
        == 1));
    assert_eq!(c.stat("user_handed_back"), 4);
    assert_eq!(c.stat("kernel_back_unmarked"), 0);

    // The same figures in /metrics.
    let text = http_get(HTTP, "/metrics").1;
    let series = |name: &str, reason: &str| {
        exposed(
            &text,
            &format!("rtpanchor_kernel_path_{name}_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(series("user_packets", "rtcp"), Some(5.0), "{text}");
    assert_eq!(series("user_packets", "not_rtp"), Some(3.0));
    assert_eq!(series("user_packets", "malformed"), Some(1.0));
    assert_eq!(series("user_packets", "handed_back"), Some(4.0));
    for reason in ["ssrc", "jump", "payload_type", "source"] {
        assert_eq!(series("takebacks", reason), Some(1.0), "{reason}");
    }
    assert_eq!(series("user_packets", "disabled"), Some(0.0));
}

/// Without the program every packet is counted under why there is none: turned off here
/// (`--no-kernel-forwarding`); an address the program cannot attach for (the unspecified
/// one) counts as unavailable.
#[test]
fn without_the_program_packets_are_counted_as_disabled_or_unavailable() {
    for (k, (local, kernel, why)) in [
        ("127.0.0.1", false, UserReason::Disabled),
        ("0.0.0.0", true, UserReason::Unavailable),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = Config {
            io_engine: IoEngine::Auto,
            num_threads: 1,
            port_min: 4400 + 50 * k as u16,
            port_max: 4449 + 50 * k as u16,
            kernel_forwarding: kernel,
            ..Config::default()
        };
        cfg.interface.local = local.parse().unwrap();
        let mut dp = DataPlane::start(&cfg).unwrap();
        assert!(!dp.kernel_forwarding());
        assert_eq!(dp.kernel_unavailable().is_some(), kernel, "{local}");
        let (a, b) = (sock(), sock());
        let o = dp
            .open(
                StreamSpec {
                    call_id: "off".into(),
                    a: endpoint(&a),
                    b: endpoint(&b),
                    locals: [None; 2],
                },
                0,
            )
            .unwrap();
        for q in 0..20u16 {
            a.send_to(&pcmu(q, 1), relay(o.a_ports.rtp)).unwrap();
        }
        assert_eq!(recv_n(&b, 20, Duration::from_secs(3)).len(), 20);
        let t = dp.totals();
        assert_eq!(t.reasons.user_packets(why), 20, "{local}: {why:?}");
        let other = if kernel {
            UserReason::Disabled
        } else {
            UserReason::Unavailable
        };
        assert_eq!(t.reasons.user_packets(other), 0);
        let named: Vec<_> = t.named().into_iter().filter(|(_, v)| *v == 20).collect();
        assert!(
            named.contains(&(why.stat_name(), 20)),
            "statistics carries it: {named:?}"
        );
        dp.close(o.id);
    }
}
