//! End-to-end interop with real peers (issue 3): a SIPp UAC calls a SIPp UAS through Debian's
//! Kamailio, whose rtpengine module anchors every call's media on the relay under test over the
//! ng protocol; the UAC plays the RTP pcap SIPp ships.
//!
//! ```text
//!  SIPp UAC ──SIP──▶ Kamailio ──SIP──▶ SIPp UAS             (tools/sipp/*.xml, tools/kamailio/kamailio.cfg)
//!                       │ ng (offer/answer/delete)
//!                       ▼
//!  UAC media ──RTP──▶ relay ──RTP──▶ counting echo (this test, on the port the UAS's SDP names)
//!            ◀──────────────◀──────
//! ```
//!
//! Asserted, for `CALLS` calls: SIPp's exit codes and statistics (all calls successful, none
//! failed); the SDP the UAS received (and the SDP the UAC got back) names the relay's address
//! and an even port in its media range; the RTP arrived at the callee's media port from exactly
//! those relay ports (symmetric RTP), with the pcap's SSRC and payload type and nearly all of
//! its packets; the relay listed calls while they ran and lists none after the BYEs; Kamailio
//! logged no rtpengine error. When the relay's ng `statistics` reply carries `relayedpackets`
//! (rtpengine's shape), its growth must cover what the echo received.
//!
//! The relay is rtpanchor by default; `INTEROP_RELAY=rtpengine` runs the same test against
//! Debian's rtpengine-daemon for comparison; `INTEROP_KEEP_LOGS=1` keeps the work directory (all
//! peers' logs, SIPp's traces) after a passing run too. The test skips (passes with a note) only when the
//! `kamailio` or `sipp` program is missing. pcap play uses raw sockets, so it needs root (or
//! CAP_NET_RAW), as in CI. Every listening port is below the ephemeral range (32768-60999)
//! and in a block no other test uses, so the suite can run in parallel.

// An I/O edge through and through: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use common::ng::{answering_client, relayed_packets};
use common::peers::{find_program, kamailio_args, udp_bound, wait_udp_bound, Peer};
use common::{pcap_uac_command, sipp_call_counts, PcapUac, TempDir};

/// Calls placed (at `CALL_RATE` per second, all may overlap).
const CALLS: usize = 20;
const CALL_RATE: usize = 10;
/// RTP packets in /usr/share/sip-tester/g711a.pcap, their SSRC and payload type (PCMA).
const PCAP_PACKETS: u64 = 236;
const PCAP_SSRC: u32 = 0xDEE0_EE8F;
const PCAP_PT: u8 = 8;
/// Minimum share of the pcap each call must deliver (loopback loses nothing on a quiet
/// machine; this leaves room for a busy 2-core CI box).
const MIN_DELIVERED_PERCENT: u64 = 90;

/// Every port the test uses; all in 17000-17999: below the ephemeral range and outside the
/// blocks other tests in this suite bind (21000-53999 data plane, 22000-26999 ng end-to-end).
struct Ports {
    /// The relay's ng control socket.
    ng: u16,
    /// Kamailio's SIP listener.
    proxy_sip: u16,
    uas_sip: u16,
    uac_sip: u16,
    /// SIPp's UDP control ports (`-cp`); the default 8888 would collide between instances.
    uac_cp: u16,
    uas_cp: u16,
    /// UAC `-mp`: the offer names `[auto_media_port]` = this + 4 * call index.
    uac_media: u16,
    /// UAS `-mp`: SIPp binds it (and +2) even without `-rtp_echo`; the SDP does not use it.
    uas_media: u16,
    /// The test's counting RTP echo: the port the UAS's answer names (`-key rtp_port`).
    sink: u16,
    /// The relay's media port range.
    media_min: u16,
    media_max: u16,
}

const PORTS: Ports = Ports {
    ng: 17022,
    proxy_sip: 17060,
    uas_sip: 17070,
    uac_sip: 17080,
    uac_cp: 17090,
    uas_cp: 17091,
    uac_media: 17200,
    uas_media: 17300,
    sink: 17310,
    media_min: 17400,
    media_max: 17799,
};

const LOOPBACK: &str = "127.0.0.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Rtpanchor,
    Rtpengine,
}

impl Relay {
    /// `INTEROP_RELAY=rtpengine` selects Debian's rtpengine; anything else (or unset) rtpanchor.
    fn from_env() -> Relay {
        match std::env::var("INTEROP_RELAY").as_deref() {
            Ok("rtpengine") => Relay::Rtpengine,
            _ => Relay::Rtpanchor,
        }
    }
}

/// The one place that knows how to start each relay: loopback media in `p.media_min..=max`,
/// ng on `p.ng`, userspace only, calls freed at once on delete.
fn relay_command(relay: Relay, p: &Ports) -> Command {
    match relay {
        Relay::Rtpanchor => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
            // Plain log lines: they end up in failure messages.
            c.env("NO_COLOR", "1");
            c.args(["--interface", LOOPBACK])
                .args(["--listen-ng", &format!("{LOOPBACK}:{}", p.ng)])
                .args(["--port-min", &p.media_min.to_string()])
                .args(["--port-max", &p.media_max.to_string()])
                .arg("--no-sip")
                .args(["--log-level", "info"]);
            c
        }
        Relay::Rtpengine => {
            let bin = find_program("rtpengine").unwrap_or_else(|| PathBuf::from("rtpengine"));
            let mut c = Command::new(bin);
            c.args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
            ])
            .arg(format!("--interface={LOOPBACK}"))
            .arg(format!("--listen-ng={LOOPBACK}:{}", p.ng))
            .arg(format!("--port-min={}", p.media_min))
            .arg(format!("--port-max={}", p.media_max))
            .arg("--delete-delay=0");
            c
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The callee's media endpoint: counts what the relay forwards and echoes it back.

#[derive(Debug, Default)]
struct SourceStats {
    packets: u64,
    ssrcs: BTreeSet<u32>,
    payload_types: BTreeSet<u8>,
}

#[derive(Debug, Default)]
struct SinkReport {
    rtp: BTreeMap<SocketAddr, SourceStats>,
    not_rtp: u64,
}

fn spawn_sink(sock: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<SinkReport> {
    std::thread::spawn(move || {
        let mut report = SinkReport::default();
        let mut buf = [0u8; 2048];
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        // Bounded even if nobody sets `stop`.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let pkt = &buf[..n];
            // RTP version 2, not RTCP (PT 72-76 with the marker bit).
            if n >= 12 && pkt[0] >> 6 == 2 && !(200..=204).contains(&pkt[1]) {
                let s = report.rtp.entry(from).or_default();
                s.packets += 1;
                s.ssrcs
                    .insert(u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]));
                s.payload_types.insert(pkt[1] & 0x7f);
            } else {
                report.not_rtp += 1;
            }
            // Echo, like SIPp's -rtp_echo: media then flows both ways through the relay.
            let _ = sock.send_to(pkt, from);
        }
        report
    })
}

// ---------------------------------------------------------------------------------------------
// SIP readiness probe and SIPp output parsing.

/// Sends OPTIONS to Kamailio until it answers 200 (its REQINIT route answers keepalives).
fn wait_proxy_ready(kam: &mut Peer, port: u16, limit: Duration) -> Result<(), String> {
    let sock = UdpSocket::bind((LOOPBACK, 0)).map_err(|e| e.to_string())?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    let mut n = 0;
    while Instant::now() < deadline {
        if let Some(s) = kam.try_status() {
            return Err(format!("kamailio exited ({s}):\n{}", kam.log_tail(40)));
        }
        n += 1;
        let msg = format!(
            "OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-probe-{n}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@{LOOPBACK}>;tag=probe{n}\r\n\
             To: <sip:{LOOPBACK}:{port}>\r\n\
             Call-ID: probe-{n}-{}@{LOOPBACK}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            std::process::id()
        );
        let _ = sock.send_to(msg.as_bytes(), (LOOPBACK, port));
        let mut buf = [0u8; 4096];
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                return Ok(());
            }
        }
    }
    Err(format!(
        "kamailio did not answer OPTIONS within {limit:?}:\n{}",
        kam.log_tail(40)
    ))
}

/// One SDP summary line logged by the scenarios:
/// `<TAG> call-id=<id> c=IN IP4 <addr> m=audio <port>`.
#[derive(Debug)]
struct SdpSeen {
    call_id: String,
    addr: String,
    port: u16,
}

fn sdp_lines(log: &Path, tag: &str) -> Result<Vec<SdpSeen>, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(tag)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("unexpected SDP log line {line:?}");
        // [tag, call-id=X, c=IN, IP4, ADDR, m=audio, PORT]
        if words.len() != 7 || words[2] != "c=IN" || words[3] != "IP4" || words[5] != "m=audio" {
            return Err(bad());
        }
        let call_id = words[1].strip_prefix("call-id=").ok_or_else(bad)?;
        out.push(SdpSeen {
            call_id: call_id.to_string(),
            addr: words[4].to_string(),
            port: words[6].parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// Checks that every logged SDP names the relay, for `CALLS` distinct calls with distinct
/// even media ports in the relay's range; returns the ports.
fn check_sdp_names_relay(seen: &[SdpSeen], who: &str) -> BTreeSet<u16> {
    let calls: BTreeSet<&str> = seen.iter().map(|s| s.call_id.as_str()).collect();
    assert_eq!(
        calls.len(),
        CALLS,
        "{who}: SDP of {} distinct calls logged, want {CALLS}: {seen:?}",
        calls.len()
    );
    let mut ports = BTreeSet::new();
    for s in seen {
        assert_eq!(
            s.addr, LOOPBACK,
            "{who}: SDP c= does not name the relay: {s:?}"
        );
        assert!(
            (PORTS.media_min..=PORTS.media_max).contains(&s.port) && s.port % 2 == 0,
            "{who}: SDP m= port is not an even port of the relay's range {}-{}: {s:?}",
            PORTS.media_min,
            PORTS.media_max
        );
        ports.insert(s.port);
    }
    assert_eq!(
        ports.len(),
        CALLS,
        "{who}: media ports reused across calls: {seen:?}"
    );
    ports
}

// ---------------------------------------------------------------------------------------------

#[test]
fn sipp_calls_through_kamailio_anchor_media_on_relay() {
    let (Some(kamailio), Some(sipp)) = (find_program("kamailio"), find_program("sipp")) else {
        eprintln!(
            "SKIP sipp_calls_through_kamailio_anchor_media_on_relay: `kamailio` and/or `sipp` \
             not installed (apt-get install kamailio sip-tester; .ci/run does this)"
        );
        return;
    };
    let relay = Relay::from_env();
    // A taken port would fail a peer later with a murkier message.
    let fixed = [
        PORTS.ng,
        PORTS.proxy_sip,
        PORTS.uas_sip,
        PORTS.uac_sip,
        PORTS.uac_cp,
        PORTS.uas_cp,
        PORTS.uas_media,
        PORTS.uas_media + 2,
        PORTS.sink,
    ];
    let taken: Vec<u16> = fixed.into_iter().filter(|&p| udp_bound(p)).collect();
    assert!(
        taken.is_empty(),
        "UDP ports already in use on loopback: {taken:?}"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dir = TempDir::new("rtpanchor-interop").expect("temp dir");
    if std::env::var_os("INTEROP_KEEP_LOGS").is_some() {
        dir.keep();
    }
    let d = dir.path();
    let started = Instant::now();
    eprintln!("interop: relay {relay:?}, work dir {}", d.display());

    // 1. The relay, and its ng socket answering before Kamailio's workers ping it at start
    //    (a node that fails that ping is disabled for 60 s).
    let mut relay_peer = Peer::spawn(
        "relay",
        &mut relay_command(relay, &PORTS),
        &d.join("relay.log"),
    )
    .expect("start relay");
    let mut ng = answering_client(PORTS.ng, "interop");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ng.ping().is_ok() {
            break;
        }
        if let Some(s) = relay_peer.try_status() {
            panic!("relay exited ({s}):\n{}", relay_peer.log_tail(40));
        }
        if Instant::now() >= deadline {
            panic!(
                "relay's ng socket 127.0.0.1:{} did not answer ping within 10 s; log:\n{}",
                PORTS.ng,
                relay_peer.log_tail(40)
            );
        }
    }

    // 2. Kamailio, with the operator config from tools/ (copied; ports set by -A defines).
    let cfg = d.join("kamailio.cfg");
    std::fs::copy(repo.join("tools/kamailio/kamailio.cfg"), &cfg).expect("copy kamailio.cfg");
    let kam_run = d.join("kamailio-run");
    std::fs::create_dir(&kam_run).expect("kamailio runtime dir");
    let mut kam_cmd = Command::new(&kamailio);
    kamailio_args(&mut kam_cmd, &cfg, &kam_run, d)
        .args(["-A", &format!("LISTEN_IP={LOOPBACK}")])
        .args(["-A", &format!("SIP_PORT={}", PORTS.proxy_sip)])
        .args([
            "-A",
            &format!("RTPENGINE_SOCK=\"udp:{LOOPBACK}:{}\"", PORTS.ng),
        ])
        .args([
            "-A",
            &format!("NEXT_HOP=\"sip:{LOOPBACK}:{}\"", PORTS.uas_sip),
        ])
        .args(["-A", "WORKERS=2"]);
    let mut kam =
        Peer::spawn("kamailio", &mut kam_cmd, &d.join("kamailio.log")).expect("start kamailio");
    wait_proxy_ready(&mut kam, PORTS.proxy_sip, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    // 3. The callee's media endpoint, then the SIPp UAS.
    let sink_sock = UdpSocket::bind((LOOPBACK, PORTS.sink)).expect("bind RTP sink");
    let stop_sink = Arc::new(AtomicBool::new(false));
    let sink = spawn_sink(sink_sock, Arc::clone(&stop_sink));

    let uas_log = d.join("uas_sdp.log");
    let mut uas_cmd = Command::new(&sipp);
    uas_cmd
        .current_dir(d)
        .arg("-sf")
        .arg(repo.join("tools/sipp/uas_rr_sdp.xml"))
        .args(["-i", LOOPBACK, "-mi", LOOPBACK])
        .args(["-p", &PORTS.uas_sip.to_string()])
        .args(["-mp", &PORTS.uas_media.to_string()])
        .args(["-key", "rtp_port", &PORTS.sink.to_string()])
        .args(["-cp", &PORTS.uas_cp.to_string()])
        .args(["-m", &CALLS.to_string()])
        .args(["-nostdin", "-trace_logs", "-trace_err"])
        .arg("-log_file")
        .arg(&uas_log)
        .arg("-error_file")
        .arg(d.join("uas_errors.log"));
    let mut uas =
        Peer::spawn("sipp-uas", &mut uas_cmd, &d.join("uas.out")).expect("start sipp uas");
    wait_udp_bound(&mut uas, PORTS.uas_sip, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));

    // 4. The SIPp UAC: CALLS calls, RTP from the pcap, then BYE.
    let ng_before = relayed_packets(&mut ng);
    let uac_log = d.join("uac_sdp.log");
    let uac_csv = d.join("uac_stats.csv");
    let mut uac_cmd = pcap_uac_command(
        &sipp,
        d,
        &repo.join("tools/sipp/uac_rr_pcap.xml"),
        &PcapUac {
            target: format!("{LOOPBACK}:{}", PORTS.proxy_sip),
            service: None,
            sip_port: PORTS.uac_sip,
            media_port: PORTS.uac_media,
            control_port: PORTS.uac_cp,
            calls: CALLS,
            rate: CALL_RATE,
            limit: CALLS,
        },
    );
    let mut uac =
        Peer::spawn("sipp-uac", &mut uac_cmd, &d.join("uac.out")).expect("start sipp uac");

    // While the calls run, the relay must list them.
    let mut most_listed = 0usize;
    let uac_deadline = Instant::now() + Duration::from_secs(40);
    let uac_status = loop {
        if let Some(s) = uac.try_status() {
            break s;
        }
        assert!(
            Instant::now() < uac_deadline,
            "SIPp UAC still running after 40 s; its screen:\n{}\nkamailio:\n{}\nrelay:\n{}",
            uac.log_tail(40),
            kam.log_tail(20),
            relay_peer.log_tail(20)
        );
        if let Ok(calls) = ng.list() {
            most_listed = most_listed.max(calls.len());
        }
        sleep(Duration::from_millis(500));
    };
    let uas_status = uas.wait_timeout(Duration::from_secs(5));
    // Late echoes are harmless; give the last packets a moment, then stop counting.
    sleep(Duration::from_millis(200));
    stop_sink.store(true, Ordering::Relaxed);
    let report = sink.join().expect("sink thread");
    let calls_elapsed = started.elapsed();

    // --- SIP: every call completed.
    let (ok, failed) =
        sipp_call_counts(&uac_csv).unwrap_or_else(|e| panic!("{e}\n{}", uac.log_tail(40)));
    eprintln!(
        "interop: UAC exit {uac_status}, successful {ok}, failed {failed}; UAS exit {uas_status:?}"
    );
    assert!(
        uac_status.success() && ok == CALLS as u64 && failed == 0,
        "SIPp UAC: exit {uac_status}, {ok} successful / {failed} failed calls (want {CALLS}/0); \
         screen:\n{}\nerrors:\n{}\nkamailio:\n{}\nrelay:\n{}",
        uac.log_tail(30),
        common::peers::tail(&d.join("uac_errors.log"), 30),
        kam.log_tail(30),
        relay_peer.log_tail(30)
    );
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "SIPp UAS did not finish {CALLS} calls cleanly ({uas_status:?}):\n{}",
        uas.log_tail(30)
    );

    // --- SDP: the callee was offered the relay, and so was the caller in the answer.
    let uas_seen = sdp_lines(&uas_log, "UAS-OFFER-SDP").unwrap_or_else(|e| panic!("{e}"));
    let offer_ports = check_sdp_names_relay(&uas_seen, "UAS offer");
    let uac_seen = sdp_lines(&uac_log, "UAC-ANSWER-SDP").unwrap_or_else(|e| panic!("{e}"));
    let answer_ports = check_sdp_names_relay(&uac_seen, "UAC answer");
    assert!(
        offer_ports.is_disjoint(&answer_ports),
        "the relay gave both legs the same port: {offer_ports:?} / {answer_ports:?}"
    );

    // --- RTP: the callee's endpoint got the pcap from the relay ports it was offered.
    assert!(
        !report.rtp.is_empty(),
        "no RTP reached the callee's media port {} ({} non-RTP datagrams){}; relay log:\n{}",
        PORTS.sink,
        report.not_rtp,
        if common::netns::is_root() {
            ""
        } else {
            " -- SIPp's pcap play needs a raw socket: run as root or with CAP_NET_RAW"
        },
        relay_peer.log_tail(30)
    );
    let mut delivered = 0u64;
    let mut from_ports = BTreeSet::new();
    for (from, s) in &report.rtp {
        eprintln!(
            "interop: RTP from {from}: {} packets, SSRC {:x?}, PT {:?}",
            s.packets, s.ssrcs, s.payload_types
        );
        assert_eq!(
            from.ip().to_string(),
            LOOPBACK,
            "RTP from a foreign address {from}"
        );
        assert_eq!(
            s.ssrcs,
            BTreeSet::from([PCAP_SSRC]),
            "RTP from {from}: wrong SSRC"
        );
        assert_eq!(
            s.payload_types,
            BTreeSet::from([PCAP_PT]),
            "RTP from {from}: wrong PT"
        );
        assert!(
            s.packets * 100 >= PCAP_PACKETS * MIN_DELIVERED_PERCENT && s.packets <= PCAP_PACKETS,
            "RTP from {from}: {} packets, want {PCAP_PACKETS} (at least {MIN_DELIVERED_PERCENT}%)",
            s.packets
        );
        delivered += s.packets;
        from_ports.insert(from.port());
    }
    eprintln!(
        "interop: callee endpoint got {delivered} RTP packets (of {}) from {} relay ports, {} non-RTP",
        PCAP_PACKETS * CALLS as u64,
        from_ports.len(),
        report.not_rtp
    );
    assert_eq!(
        from_ports, offer_ports,
        "RTP must come from exactly the relay ports offered to the callee (symmetric RTP)"
    );

    // --- Relay: listed the calls while they ran, counted the forwarding, holds nothing now.
    eprintln!("interop: relay listed at most {most_listed} calls during the run");
    assert!(
        most_listed >= 1,
        "the relay never listed a call while {CALLS} calls ran"
    );
    let ng_after = relayed_packets(&mut ng);
    match (ng_before, ng_after) {
        (Some(b), Some(a)) => {
            eprintln!("interop: relay statistics relayedpackets {b} -> {a} (+{})", a - b);
            assert!(
                a - b >= delivered as i64,
                "relay says it relayed {} packets, the callee alone received {delivered}",
                a - b
            );
        }
        _ => eprintln!(
            "interop: relay's statistics reply has no `relayedpackets`; forwarding checked at the callee only"
        ),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = ng.list().expect("a well-formed list reply");
    while !left.is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
        left = ng.list().expect("a well-formed list reply");
    }
    assert!(
        left.is_empty(),
        "calls left in the relay after the BYEs: {left:?}"
    );

    // --- Kamailio: the rtpengine module never reported a failure.
    let kam_log = std::fs::read_to_string(kam.log_path()).unwrap_or_default();
    let module_errors: Vec<&str> = kam_log
        .lines()
        .filter(|l| l.contains("ERROR: rtpengine"))
        .collect();
    assert!(
        module_errors.is_empty(),
        "Kamailio's rtpengine module logged errors:\n{}",
        module_errors.join("\n")
    );

    eprintln!(
        "interop: {CALLS} calls through Kamailio and {relay:?} OK in {:.1} s (calls phase {:.1} s)",
        started.elapsed().as_secs_f64(),
        calls_elapsed.as_secs_f64()
    );
    drop(uac);
    drop(uas);
    drop(kam);
    drop(relay_peer);
}
