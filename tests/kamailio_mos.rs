//! Call quality through Kamailio (issue 15): Kamailio's rtpengine module fills its `mos_*_pv`
//! variables from the `SSRC` block of the relay's `delete` reply. Two calls run at once
//! through Kamailio, signalled by this test's own user agents; their endpoints send 20 ms PCMU
//! both ways and an RTCP SR with a reception report every 1.2 s (as real phones do, with LSR and
//! DLSR, so the relay can measure round trips; the callee's half an interval after the
//! caller's, as endpoints' reports are not in step). One call is clean; in the other each endpoint
//! drops every tenth packet before sending. After the BYE Kamailio logs the variables.
//!
//! Asserted: the clean call's average, lowest and highest MOS are 4.3-4.4 with 0 % loss and a
//! round trip measured; the lossy one's are below 3.8 with about 10 % loss. The same traffic
//! through Debian's rtpengine-daemon must give a clean MOS in the same range
//! and a lossy one below 3.8, so the scale is rtpengine's. Ports: 11000-11999 only.

#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::ng::answering_client;
use common::peers::{find_program, kamailio_args, Peer};
use common::rtcp_talk::Talk;
use common::sip::{Uac, Uas};
use common::TempDir;

const LOOPBACK: &str = "127.0.0.1";
const NG: u16 = 11022;
const PROXY_SIP: u16 = 11060;
const UAS_SIP: u16 = 11070;
const UAC_SIP: u16 = 11080;
const MEDIA_MIN: u16 = 11400;
const MEDIA_MAX: u16 = 11599;
/// Endpoint RTP ports (RTCP on +1): caller and callee of call 0 and call 1.
const CALLER_MEDIA: [u16; 2] = [11200, 11210];
const CALLEE_MEDIA: [u16; 2] = [11300, 11310];
/// Media time per call: 5 RTCP rounds.
const TALK: Duration = Duration::from_millis(6500);
const RTCP_EVERY: Duration = Duration::from_millis(1200);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Relay {
    Rtpanchor,
    Rtpengine,
}

fn relay_command(relay: Relay) -> Command {
    match relay {
        Relay::Rtpanchor => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
            c.env("NO_COLOR", "1")
                .args(["--interface", LOOPBACK])
                .args(["--listen-ng", &format!("{LOOPBACK}:{NG}")])
                .args(["--port-min", &MEDIA_MIN.to_string()])
                .args(["--port-max", &MEDIA_MAX.to_string()])
                .arg("--no-sip")
                .args(["--log-level", "info"]);
            c
        }
        Relay::Rtpengine => {
            let mut c = Command::new(find_program("rtpengine").unwrap_or("rtpengine".into()));
            c.args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
                "--delete-delay=0",
            ])
            .arg(format!("--interface={LOOPBACK}"))
            .arg(format!("--listen-ng={LOOPBACK}:{NG}"))
            .arg(format!("--port-min={MEDIA_MIN}"))
            .arg(format!("--port-max={MEDIA_MAX}"));
            c
        }
    }
}

/// The `m=audio` port and `c=` address of an SDP body inside a SIP message.
fn sdp_media(msg: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(msg);
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .to_string();
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio line");
    format!("{ip}:{port}").parse().unwrap()
}

fn sdp(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// Receives on `sock` until a message for which `want` is true (bounded by 5 s).
fn recv_until(sock: &UdpSocket, want: impl Fn(&str) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = buf[..n].to_vec();
            if want(&String::from_utf8_lossy(&m)) {
                return m;
            }
        }
    }
    panic!("no matching SIP message within 5 s");
}

/// MOS values Kamailio logged for a call.
#[derive(Debug)]
struct Logged {
    avg: f64,
    min: f64,
    max: f64,
    avg_loss: f64,
    avg_rtt: f64,
}

fn logged(log: &Path, call_id: &str) -> Option<Logged> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains(&format!("MOS call-id={call_id} ")))?;
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Some(Logged {
        avg: field("avg"),
        min: field("min"),
        max: field("max"),
        avg_loss: field("avg_loss"),
        avg_rtt: field("avg_rtt"),
    })
}

/// Runs both calls through Kamailio and `relay`; returns what Kamailio logged, [clean, lossy].
fn run(relay: Relay, repo: &Path, kamailio: &Path, dir: &Path) -> [Logged; 2] {
    std::fs::create_dir_all(dir).unwrap();
    let mut relay_peer =
        Peer::spawn("relay", &mut relay_command(relay), &dir.join("relay.log")).expect("relay");
    let mut ng = answering_client(NG, "mos");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ng.ping().is_err() {
        assert!(
            relay_peer.is_running(),
            "relay exited:\n{}",
            relay_peer.log_tail(30)
        );
        assert!(Instant::now() < deadline, "relay never answered ping");
    }
    let cfg = dir.join("kamailio.cfg");
    std::fs::copy(repo.join("tools/kamailio/kamailio.cfg"), &cfg).unwrap();
    let run_dir = dir.join("kam-run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let log = dir.join("kamailio.log");
    let mut kam = Peer::spawn(
        "kamailio",
        kamailio_args(&mut Command::new(kamailio), &cfg, &run_dir, dir)
            .args(["-A", "WITH_MOS", "-A", "WORKERS=2"])
            .args(["-A", &format!("SIP_PORT={PROXY_SIP}")])
            .args(["-A", &format!("RTPENGINE_SOCK=\"udp:{LOOPBACK}:{NG}\"")])
            .args(["-A", &format!("NEXT_HOP=\"sip:{LOOPBACK}:{UAS_SIP}\"")]),
        &log,
    )
    .expect("kamailio");
    thread::sleep(Duration::from_millis(1500));
    assert!(kam.is_running(), "kamailio exited:\n{}", kam.log_tail(30));

    let proxy: SocketAddr = format!("{LOOPBACK}:{PROXY_SIP}").parse().unwrap();
    let uac_sock = UdpSocket::bind((LOOPBACK, UAC_SIP)).unwrap();
    let uas_sock = UdpSocket::bind((LOOPBACK, UAS_SIP)).unwrap();
    for s in [&uac_sock, &uas_sock] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let tag = format!("{relay:?}").to_lowercase();
    let mut uacs = Vec::new();
    let mut media = Vec::new();
    for call in 0..2 {
        let call_id = format!("mos-{tag}-{call}");
        let mut uac = Uac::new(
            uac_sock.local_addr().unwrap(),
            &format!("{LOOPBACK}:{UAC_SIP}"),
            &call_id,
        )
        .calling(&format!("sip:bob@{LOOPBACK}:{UAS_SIP}"));
        let uas = Uas::new(
            uas_sock.local_addr().unwrap(),
            &format!("b{call}"),
            &format!("sip:bob@{LOOPBACK}:{UAS_SIP}"),
        );
        uac_sock
            .send_to(&uac.invite(Some(&sdp(CALLER_MEDIA[call]))), proxy)
            .unwrap();
        let invite = recv_until(&uas_sock, |m| m.starts_with("INVITE "));
        let callee_to = sdp_media(&invite);
        uas_sock
            .send_to(
                &uas.respond_sdp(&invite, 200, &sdp(CALLEE_MEDIA[call])),
                proxy,
            )
            .unwrap();
        let ok = recv_until(&uac_sock, |m| m.starts_with("SIP/2.0 200"));
        let caller_to = sdp_media(&ok);
        uac.learn(&ok);
        uac_sock.send_to(&uac.ack(None), proxy).unwrap();
        media.push((call, caller_to, callee_to));
        uacs.push(uac);
    }
    let mut threads = Vec::new();
    for &(call, caller_to, callee_to) in &media {
        let lossy = call == 1;
        // The callee's reports run half an interval behind the caller's.
        for (port, to, ssrc, rtcp_first) in [
            (
                CALLER_MEDIA[call],
                caller_to,
                0x1000 + call as u32,
                RTCP_EVERY,
            ),
            (
                CALLEE_MEDIA[call],
                callee_to,
                0x2000 + call as u32,
                RTCP_EVERY * 3 / 2,
            ),
        ] {
            let rtp = UdpSocket::bind((LOOPBACK, port)).unwrap();
            let rtcp = UdpSocket::bind((LOOPBACK, port + 1)).unwrap();
            let talk = Talk {
                to,
                ssrc,
                lossy,
                duration: TALK,
                rtcp_every: RTCP_EVERY,
                rtcp_first,
            };
            threads.push(thread::spawn(move || talk.run(rtp, rtcp)));
        }
    }
    for t in threads {
        let rep = t.join().unwrap();
        assert!(
            rep.received > 200 && rep.srs_received >= 3,
            "{relay:?}: media: {rep:?}"
        );
    }
    for uac in &mut uacs {
        uac_sock.send_to(&uac.bye(), proxy).unwrap();
        let bye = recv_until(&uas_sock, |m| m.starts_with("BYE "));
        let uas = Uas::new(uas_sock.local_addr().unwrap(), "x", "sip:bob@127.0.0.1");
        uas_sock.send_to(&uas.respond(&bye, 200), proxy).unwrap();
        recv_until(&uac_sock, |m| m.starts_with("SIP/2.0 200"));
    }
    let mut out = Vec::new();
    for uac in &uacs {
        let deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            if let Some(l) = logged(&log, &uac.call_id) {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "{relay:?}: Kamailio logged no MOS for {}:\n{}",
                uac.call_id,
                kam.log_tail(30)
            );
            thread::sleep(Duration::from_millis(100));
        };
        eprintln!("{relay:?} {}: {l:?}", uac.call_id);
        out.push(l);
    }
    kam.stop(Duration::from_secs(3));
    relay_peer.stop(Duration::from_secs(3));
    let lossy = out.pop().unwrap();
    let clean = out.pop().unwrap();
    [clean, lossy]
}

#[test]
fn kamailio_reads_mos_after_delete() {
    let Some(kamailio) = find_program("kamailio") else {
        panic!("kamailio is not installed (tools/test.sh installs it)");
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("rtpanchor-mos").unwrap();
    let ours = run(
        Relay::Rtpanchor,
        &repo,
        &kamailio,
        &dir.path().join("rtpanchor"),
    );
    let [clean, lossy] = &ours;
    for (what, v) in [("avg", clean.avg), ("min", clean.min), ("max", clean.max)] {
        assert!(
            (4.3..=4.4).contains(&v),
            "clean call's {what} MOS {v}: {clean:?}"
        );
    }
    assert_eq!(clean.avg_loss, 0.0, "{clean:?}");
    assert!(
        clean.avg_rtt > 0.0,
        "round trip measured from RTCP: {clean:?}"
    );
    assert!(lossy.avg < 3.8 && lossy.max < 3.8, "lossy call: {lossy:?}");
    assert!(
        (8.0..=12.0).contains(&lossy.avg_loss),
        "lossy call's loss: {lossy:?}"
    );

    // The same traffic through rtpengine: the same scale.
    assert!(
        find_program("rtpengine").is_some(),
        "rtpengine is not installed (Debian rtpengine-daemon; tools/test.sh installs it)"
    );
    let [clean, lossy] = run(
        Relay::Rtpengine,
        &repo,
        &kamailio,
        &dir.path().join("rtpengine"),
    );
    assert!(
        (4.3..=4.4).contains(&clean.avg),
        "rtpengine clean: {clean:?}"
    );
    assert!(lossy.avg < 3.8, "rtpengine lossy: {lossy:?}");
    // In tenths, as both report them (4.4 - 4.3 is 0.1000000000000005 in f64).
    let tenths = |a: f64, b: f64| ((a - b) * 10.0).round().abs();
    assert!(
        tenths(ours[0].avg, clean.avg) <= 1.0 && tenths(ours[1].avg, lossy.avg) <= 3.0,
        "ours {ours:?} vs rtpengine {clean:?} / {lossy:?}"
    );
}
