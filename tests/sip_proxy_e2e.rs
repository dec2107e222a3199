//! End to end through rtpanchor's built-in SIP proxy (`--listen-sip`) with SIPp as the phones:
//! the real binary, real sockets on 127.0.0.1, RTP from the pcap SIPp ships.
//!
//! ```text
//!  SIPp REGISTER ──▶ rtpanchor (registrar)
//!  SIPp UAC ──SIP──▶ rtpanchor (proxy, Record-Route) ──SIP──▶ SIPp UAS (echoes RTP)
//!  UAC media ──RTP──▶ rtpanchor relay ports ──RTP──▶ UAS media, and back
//! ```
//!
//! - [`calls_through_builtin_proxy_anchor_media`]: a third-party REGISTER binds `sip:uas@127.0.0.1`
//!   to the UAS's port; 100 calls to that AOR through the proxy, all successful (SIPp exit code
//!   and its statistics); the SDP each side received names the relay (`c=127.0.0.1`, an even
//!   `m=` port in the relay's range); the relay counted the RTP it forwarded (ng `statistics`),
//!   listed calls while they ran, and after the BYEs holds no call and no port.
//! - [`nat_callee_reached_at_its_source_address`]: the callee registers from its SIP port X
//!   while its Via and Contact name port Y where nothing listens; the call still reaches it (at
//!   X, the source the registrar stored) and the media flows.
//! - [`malformed_udp_gets_400_or_silence_and_server_keeps_serving`]: a bad request gets a 400
//!   whose reason says what is wrong, garbage gets nothing, and a REGISTER afterwards is served.
//!
//! Each test has its own port block below the ephemeral range (32768-60999) and outside the
//! other tests' blocks (17000-17999 Kamailio interop, 21000-53999 data plane and ng): 18000-18999,
//! 19000-19499, 19500-19999. Every process is stopped by pid (`common::peers::Peer`), every
//! wait is bounded. The SIPp tests skip (pass with a note) only when `sipp` is missing; pcap
//! play uses a raw socket, so they need root or CAP_NET_RAW (as in CI).

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::ng::{answering_client, relayed_and_ports_used};
use common::peers::{find_program, tail, udp_bound, wait_udp_bound, Peer};
use common::{pcap_uac_command, sipp_call_counts, PcapUac, TempDir};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

const LOOPBACK: &str = "127.0.0.1";
/// RTP packets in /usr/share/sip-tester/g711a.pcap.
const PCAP_PACKETS: i64 = 236;

/// The ports one test uses.
struct Block {
    ng: u16,
    sip: u16,
    uas_sip: u16,
    uac_sip: u16,
    /// The REGISTER sender (third-party registration).
    reg_sip: u16,
    uac_cp: u16,
    uas_cp: u16,
    reg_cp: u16,
    /// UAC `-mp`: calls use this + 4 * (n - 1).
    uac_media: u16,
    /// UAS `-mp` and its echo port (the answer's m= port); SIPp also binds +2.
    uas_media: u16,
    media_min: u16,
    media_max: u16,
}

impl Block {
    fn fixed_udp(&self) -> Vec<u16> {
        vec![
            self.ng,
            self.sip,
            self.uas_sip,
            self.uac_sip,
            self.reg_sip,
            self.uac_cp,
            self.uas_cp,
            self.reg_cp,
            self.uas_media,
            self.uas_media + 2,
        ]
    }
}

const CALLS_BLOCK: Block = Block {
    ng: 18022,
    sip: 18060,
    uas_sip: 18070,
    uac_sip: 18080,
    reg_sip: 18085,
    uac_cp: 18090,
    uas_cp: 18091,
    reg_cp: 18092,
    uac_media: 18100, // .. 18499 for 100 calls
    uas_media: 18500,
    media_min: 18600,
    media_max: 18999,
};

const NAT_BLOCK: Block = Block {
    ng: 19022,
    sip: 19060,
    uas_sip: 19070,
    uac_sip: 19080,
    reg_sip: 19070, // the callee registers from its own SIP port
    uac_cp: 19090,
    uas_cp: 19091,
    reg_cp: 19092,
    uac_media: 19100,
    uas_media: 19200,
    media_min: 19300,
    media_max: 19499,
};

/// Where the NATed callee's Via and Contact claim it is: nothing listens there.
const NAT_CLAIMED_PORT: u16 = 19075;

const MALFORMED_BLOCK: Block = Block {
    ng: 19522,
    sip: 19560,
    uas_sip: 19570,
    uac_sip: 19580,
    reg_sip: 19585,
    uac_cp: 19590,
    uas_cp: 19591,
    reg_cp: 19592,
    uac_media: 19600,
    uas_media: 19700,
    media_min: 19800,
    media_max: 19999,
};

fn sipp_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_program("sipp");
    if found.is_none() {
        eprintln!(
            "SKIP {test}: `sipp` not installed (apt-get install sip-tester; .ci/run does this)"
        );
    }
    found
}

fn assert_ports_free(b: &Block) {
    let taken: Vec<u16> = b
        .fixed_udp()
        .into_iter()
        .filter(|&p| udp_bound(p))
        .collect();
    assert!(
        taken.is_empty(),
        "UDP ports already in use on loopback: {taken:?}"
    );
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The relay and its ng socket.

/// Starts rtpanchor with SIP on `b.sip`; returns once ng answers ping and SIP is bound.
fn start_relay(dir: &Path, b: &Block, log_level: &str) -> (Peer, NgClient) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LOOPBACK])
        .args(["--listen-ng", &format!("{LOOPBACK}:{}", b.ng)])
        .args(["--listen-sip", &format!("{LOOPBACK}:{}", b.sip)])
        .args(["--port-min", &b.media_min.to_string()])
        .args(["--port-max", &b.media_max.to_string()])
        .args(["--num-threads", "1"])
        .args(["--log-level", log_level]);
    let mut relay =
        Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("start relay");
    let mut ng = answering_client(b.ng, "sipe2e");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = ng.request(&Owned::dict().with("command", "ping")) {
            assert_eq!(r.get("result").and_then(Owned::as_str), Some("pong"), "{r}");
            break;
        }
        if let Some(s) = relay.try_status() {
            panic!("relay exited ({s}):\n{}", relay.log_tail(40));
        }
        assert!(
            Instant::now() < deadline,
            "relay's ng socket did not answer in 10 s:\n{}",
            relay.log_tail(40)
        );
    }
    wait_udp_bound(&mut relay, b.sip, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    (relay, ng)
}

// ---------------------------------------------------------------------------------------------
// SIPp helpers.

/// Runs proxy_register.xml once from `from_port` and waits for it (at most 15 s).
#[allow(clippy::too_many_arguments)]
fn register(
    sipp: &Path,
    dir: &Path,
    proxy: u16,
    from_port: u16,
    cp: u16,
    contact: (&str, u16),
    via: (&str, u16),
    name: &str,
) -> (ExitStatus, String) {
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/proxy_register.xml"))
        .arg(format!("{LOOPBACK}:{proxy}"))
        .args(["-i", LOOPBACK, "-p", &from_port.to_string()])
        .args(["-cp", &cp.to_string()])
        .args(["-m", "1", "-nostdin", "-recv_timeout", "5000"])
        .args(["-key", "aor_user", "uas", "-key", "aor_host", LOOPBACK])
        .args(["-key", "contact_host", contact.0])
        .args(["-key", "contact_port", &contact.1.to_string()])
        .args(["-key", "via_host", via.0])
        .args(["-key", "via_port", &via.1.to_string()])
        .args(["-key", "expires", "600"])
        .args(["-trace_logs", "-trace_msg"])
        .arg("-log_file")
        .arg(&log)
        .arg("-message_file")
        .arg(dir.join(format!("{name}_msg.log")));
    let mut p = Peer::spawn(name, &mut cmd, &dir.join(format!("{name}.out"))).expect("sipp");
    let status = p
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{name}: SIPp REGISTER still running after 15 s"));
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The SIPp UAS answering on `b.uas_sip`, RTP echoed on `b.uas_media`.
fn start_uas(sipp: &Path, dir: &Path, b: &Block, calls: usize) -> Peer {
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/uas_rr_sdp.xml"))
        .args(["-i", LOOPBACK, "-mi", LOOPBACK])
        .args(["-p", &b.uas_sip.to_string()])
        .args(["-mp", &b.uas_media.to_string(), "-rtp_echo"])
        .args(["-key", "rtp_port", &b.uas_media.to_string()])
        .args(["-cp", &b.uas_cp.to_string()])
        .args(["-m", &calls.to_string()])
        .args(["-nostdin", "-trace_logs", "-trace_err"])
        .arg("-log_file")
        .arg(dir.join("uas_sdp.log"))
        .arg("-error_file")
        .arg(dir.join("uas_errors.log"));
    let mut uas = Peer::spawn("sipp-uas", &mut cmd, &dir.join("uas.out")).expect("sipp uas");
    wait_udp_bound(&mut uas, b.uas_sip, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    uas
}

/// The SIPp UAC with the pcap scenario: `calls` calls at `rate`/s, at most `limit` at once.
fn start_uac(sipp: &Path, dir: &Path, b: &Block, calls: usize, rate: usize, limit: usize) -> Peer {
    let mut cmd = pcap_uac_command(
        sipp,
        dir,
        &repo().join("tools/sipp/uac_rr_pcap.xml"),
        &PcapUac {
            target: format!("{LOOPBACK}:{}", b.sip),
            service: Some("uas"),
            sip_port: b.uac_sip,
            media_port: b.uac_media,
            control_port: b.uac_cp,
            calls,
            rate,
            limit,
        },
    );
    Peer::spawn("sipp-uac", &mut cmd, &dir.join("uac.out")).expect("sipp uac")
}

/// `(call-id, c= address, m= port)` of every `<tag> call-id=X c=IN IP4 A m=audio P` line.
fn sdp_lines(log: &Path, tag: &str) -> Vec<(String, String, u16)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(tag))
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            assert!(
                w.len() == 7 && w[2] == "c=IN" && w[3] == "IP4" && w[5] == "m=audio",
                "unexpected SDP log line {line:?}"
            );
            let port = w[6].parse().unwrap_or_else(|_| panic!("port in {line:?}"));
            (
                w[1].trim_start_matches("call-id=").to_owned(),
                w[4].to_owned(),
                port,
            )
        })
        .collect()
}

/// Every logged SDP names the relay: 127.0.0.1 and an even port of `b`'s media range.
fn assert_sdp_names_relay(seen: &[(String, String, u16)], b: &Block, calls: usize, who: &str) {
    let ids: std::collections::BTreeSet<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        ids.len(),
        calls,
        "{who}: SDP of {} calls logged, want {calls}",
        ids.len()
    );
    for (id, addr, port) in seen {
        assert_eq!(addr, LOOPBACK, "{who}: c= of {id} does not name the relay");
        assert!(
            (b.media_min..=b.media_max).contains(port) && port % 2 == 0,
            "{who}: m= port {port} of {id} is not an even port of the relay's range {}-{}",
            b.media_min,
            b.media_max
        );
    }
}

/// Waits for the UAC (polling `list` meanwhile); returns its status and the most calls listed.
fn run_calls(
    uac: &mut Peer,
    ng: &mut NgClient,
    limit: Duration,
    relay: &Peer,
) -> (ExitStatus, usize) {
    let deadline = Instant::now() + limit;
    let mut most = 0;
    loop {
        if let Some(s) = uac.try_status() {
            return (s, most);
        }
        assert!(
            Instant::now() < deadline,
            "SIPp UAC still running after {limit:?}:\n{}\nrelay:\n{}",
            uac.log_tail(30),
            relay.log_tail(30)
        );
        if let Ok(r) = ng.request(&Owned::dict().with("command", "list")) {
            most = most.max(
                r.get("calls")
                    .and_then(Owned::as_list)
                    .map_or(0, |l| l.len()),
            );
        }
        sleep(Duration::from_millis(300));
    }
}

/// After the calls: no call and no port left (waits up to 5 s for the last deletes).
fn assert_relay_empty(ng: &mut NgClient) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let calls = ng.list().expect("a well-formed list reply");
        let (_, used) = relayed_and_ports_used(ng);
        if calls.is_empty() && used == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay still holds calls {calls:?} / {used} ports after the BYEs"
        );
        sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn calls_through_builtin_proxy_anchor_media() {
    const CALLS: usize = 100;
    let Some(sipp) = sipp_or_skip("calls_through_builtin_proxy_anchor_media") else {
        return;
    };
    let b = &CALLS_BLOCK;
    assert_ports_free(b);
    let dir = TempDir::new("rtpanchor-sip-e2e").expect("temp dir");
    let d = dir.path();
    let started = Instant::now();
    let (relay, mut ng) = start_relay(d, b, "info");

    // Third-party registration: sent from reg_sip, Contact and AOR name the UAS.
    let (st, log) = register(
        &sipp,
        d,
        b.sip,
        b.reg_sip,
        b.reg_cp,
        (LOOPBACK, b.uas_sip),
        (LOOPBACK, b.reg_sip),
        "register",
    );
    assert!(
        st.success(),
        "REGISTER failed ({st}):\n{}\nrelay:\n{}",
        tail(&d.join("register.out"), 20),
        relay.log_tail(20)
    );
    let bound = format!("sip:uas@{LOOPBACK}:{}", b.uas_sip);
    assert!(
        log.contains(&format!("REGISTER-OK contact={bound}")),
        "200 lists {bound}: {log}"
    );

    let mut uas = start_uas(&sipp, d, b, CALLS);
    let (relayed_before, _) = relayed_and_ports_used(&mut ng);
    let mut uac = start_uac(&sipp, d, b, CALLS, 20, 40);
    let (uac_status, most_listed) = run_calls(&mut uac, &mut ng, Duration::from_secs(90), &relay);
    let uas_status = uas.wait_timeout(Duration::from_secs(10));

    let (ok, failed) = sipp_call_counts(&d.join("uac_stats.csv"))
        .unwrap_or_else(|e| panic!("{e}\n{}", uac.log_tail(30)));
    eprintln!(
        "sip e2e: UAC exit {uac_status}, {ok} successful, {failed} failed; UAS exit {uas_status:?}; \
         at most {most_listed} calls listed"
    );
    assert!(
        uac_status.success() && ok == CALLS as u64 && failed == 0,
        "SIPp UAC: exit {uac_status}, {ok}/{failed} successful/failed (want {CALLS}/0):\n{}\n\
         errors:\n{}\nrelay:\n{}",
        uac.log_tail(30),
        tail(&d.join("uac_errors.log"), 30),
        relay.log_tail(30)
    );
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "SIPp UAS did not finish {CALLS} calls cleanly ({uas_status:?}):\n{}",
        uas.log_tail(30)
    );

    // The callee was offered the relay, and the caller was answered with the relay.
    let offers = sdp_lines(&d.join("uas_sdp.log"), "UAS-OFFER-SDP");
    assert_sdp_names_relay(&offers, b, CALLS, "UAS offer");
    let answers = sdp_lines(&d.join("uac_sdp.log"), "UAC-ANSWER-SDP");
    assert_sdp_names_relay(&answers, b, CALLS, "UAC answer");

    // The relay forwarded the pcap (caller -> callee, and the echo back).
    let (relayed_after, _) = relayed_and_ports_used(&mut ng);
    let relayed = relayed_after - relayed_before;
    eprintln!(
        "sip e2e: relay forwarded {relayed} packets ({} per direction per call expected)",
        PCAP_PACKETS
    );
    assert!(
        relayed >= PCAP_PACKETS * CALLS as i64 * 9 / 10,
        "relay forwarded {relayed} packets for {CALLS} calls of {PCAP_PACKETS} packets each way{}",
        if common::netns::is_root() {
            ""
        } else {
            " (pcap play needs root or CAP_NET_RAW)"
        }
    );
    assert!(most_listed >= 1, "no call was ever listed while they ran");
    assert_relay_empty(&mut ng);
    eprintln!("sip e2e: done in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn nat_callee_reached_at_its_source_address() {
    const CALLS: usize = 5;
    let Some(sipp) = sipp_or_skip("nat_callee_reached_at_its_source_address") else {
        return;
    };
    let b = &NAT_BLOCK;
    assert_ports_free(b);
    assert!(
        !udp_bound(NAT_CLAIMED_PORT),
        "port {NAT_CLAIMED_PORT} in use"
    );
    // A trap on the address the callee claims: nothing may ever arrive there.
    let trap = UdpSocket::bind((LOOPBACK, NAT_CLAIMED_PORT)).expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let dir = TempDir::new("rtpanchor-sip-nat").expect("temp dir");
    let d = dir.path();
    // Every transmit is logged with its destination.
    let (relay, mut ng) = start_relay(d, b, "info,rtpanchor::server::sip=debug");

    // The callee registers from its own SIP port, but its Via and Contact name another port
    // (a NAT rewrote the source): the proxy has evidence of NAT and keeps the source.
    let (st, log) = register(
        &sipp,
        d,
        b.sip,
        b.uas_sip,
        b.reg_cp,
        (LOOPBACK, NAT_CLAIMED_PORT),
        (LOOPBACK, NAT_CLAIMED_PORT),
        "register_nat",
    );
    assert!(
        st.success(),
        "NATed REGISTER failed ({st}):\n{}\nrelay:\n{}",
        tail(&d.join("register_nat.out"), 20),
        relay.log_tail(20)
    );
    assert!(log.contains("REGISTER-OK contact="), "{log}");

    let mut uas = start_uas(&sipp, d, b, CALLS);
    let (relayed_before, _) = relayed_and_ports_used(&mut ng);
    let mut uac = start_uac(&sipp, d, b, CALLS, CALLS, CALLS);
    let (uac_status, _) = run_calls(&mut uac, &mut ng, Duration::from_secs(40), &relay);
    let uas_status = uas.wait_timeout(Duration::from_secs(10));
    let (ok, failed) = sipp_call_counts(&d.join("uac_stats.csv"))
        .unwrap_or_else(|e| panic!("{e}\n{}", uac.log_tail(30)));
    assert!(
        uac_status.success() && ok == CALLS as u64 && failed == 0,
        "calls to the NATed callee: exit {uac_status}, {ok}/{failed} successful/failed:\n{}\n\
         relay:\n{}",
        uac.log_tail(30),
        relay.log_tail(30)
    );
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "UAS: {uas_status:?}"
    );
    assert_sdp_names_relay(
        &sdp_lines(&d.join("uas_sdp.log"), "UAS-OFFER-SDP"),
        b,
        CALLS,
        "UAS offer",
    );

    let (relayed_after, _) = relayed_and_ports_used(&mut ng);
    let relayed = relayed_after - relayed_before;
    eprintln!("sip nat: {ok} calls to the NATed callee, relay forwarded {relayed} packets");
    assert!(
        relayed >= PCAP_PACKETS * CALLS as i64 * 9 / 10,
        "relay forwarded only {relayed} packets to/from the NATed callee"
    );

    // Nothing went to the claimed address: not the trap, not in the proxy's transmit log.
    let mut buf = [0u8; 2048];
    let trapped = trap.recv_from(&mut buf).ok();
    assert!(
        trapped.is_none(),
        "the proxy sent to the Contact's port: {trapped:?}"
    );
    let text = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
    let sends: Vec<&str> = text.lines().filter(|l| l.contains("sip send")).collect();
    let claimed = format!("to={LOOPBACK}:{NAT_CLAIMED_PORT}");
    let source = format!("to={LOOPBACK}:{}", b.uas_sip);
    assert!(
        sends.iter().all(|l| !l.contains(&claimed)),
        "transmits to {claimed}:\n{}",
        sends.join("\n")
    );
    let invites = sends
        .iter()
        .filter(|l| l.contains(&source) && l.contains("INVITE sip:"))
        .count();
    assert!(
        invites >= CALLS,
        "{invites} INVITEs sent to the callee's source {source}; transmit log:\n{}",
        sends
            .iter()
            .take(40)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_relay_empty(&mut ng);
}

#[test]
fn malformed_udp_gets_400_or_silence_and_server_keeps_serving() {
    let b = &MALFORMED_BLOCK;
    assert_ports_free(b);
    let dir = TempDir::new("rtpanchor-sip-bad").expect("temp dir");
    let (relay, _ng) = start_relay(dir.path(), b, "info");
    let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let me = sock.local_addr().expect("addr");
    let proxy = SocketAddr::from(([127, 0, 0, 1], b.sip));
    let recv_within = |limit: Duration| -> Option<String> {
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    };

    // A request with a broken CSeq: answerable (it has a Via), so 400 with a reason.
    let bad = format!(
        "OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{LOOPBACK}>;tag=b1\r\nTo: <sip:{LOOPBACK}>\r\n\
         Call-ID: bad-1@{LOOPBACK}\r\nCSeq: notanumber OPTIONS\r\nContent-Length: 0\r\n\r\n",
        port = b.sip
    );
    sock.send_to(bad.as_bytes(), proxy).expect("send");
    let r = recv_within(Duration::from_secs(2)).unwrap_or_else(|| {
        panic!(
            "no response to a malformed request:\n{}",
            relay.log_tail(20)
        )
    });
    let status_line = r.lines().next().unwrap_or_default().to_owned();
    assert!(status_line.starts_with("SIP/2.0 400 "), "{r}");
    assert!(
        status_line.len() > "SIP/2.0 400 Bad Request".len(),
        "the 400 should say what is wrong: {status_line:?}"
    );
    assert!(r.contains("branch=z9hG4bK-bad-1"), "{r}");
    assert!(r.contains("CSeq: notanumber OPTIONS"), "{r}");

    // Garbage, binary junk, an empty datagram, a stray response, a 64 KiB+ datagram of junk:
    // no answer to any of them.
    let mut junk: Vec<Vec<u8>> = vec![
        b"hello world".to_vec(),
        (0u8..=255).cycle().take(1500).collect(),
        Vec::new(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
    ];
    junk.push(vec![b'x'; 65_000]);
    for j in &junk {
        let _ = sock.send_to(j, proxy);
    }
    if let Some(r) = recv_within(Duration::from_millis(700)) {
        panic!("garbage was answered: {r:?}");
    }

    // Still serving: a REGISTER gets its 200.
    let reg = format!(
        "REGISTER sip:{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK-reg-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{LOOPBACK}>;tag=r1\r\nTo: <sip:probe@{LOOPBACK}>\r\n\
         Call-ID: reg-1@{LOOPBACK}\r\nCSeq: 1 REGISTER\r\nContact: <sip:probe@{me}>\r\n\
         Expires: 60\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(reg.as_bytes(), proxy).expect("send");
    let r = recv_within(Duration::from_secs(2)).unwrap_or_else(|| {
        panic!(
            "no answer to REGISTER after garbage:\n{}",
            relay.log_tail(20)
        )
    });
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let mut relay = relay;
    assert!(relay.is_running(), "relay died:\n{}", relay.log_tail(20));
}
