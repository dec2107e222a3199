// Real-process tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! One call through Kamailio (its `rtpengine` module, the operator config in
//! `tools/kamailio/`) to rtpanchor with the flag `rtcp-mux-offer` (issue 23): the callee is
//! offered rtcp-mux with the RTCP fallback port (`a=rtcp:<RTP port + 1>`), declines it, and
//! RTCP flows both ways on the separate ports, counted exactly; the BYE frees the call.
//!
//! Ports (all in 13500-13599 and 13960-13979): relay ng 13500, relay media 13510-13549,
//! Kamailio 13560, the caller's SIP 13561, the callee's SIP 13562; the caller's media
//! 13960/13961, the callee's 13970/13971.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod common;

use common::media::{pcmu, recv_n, relay};
use common::ng::{client, start_relay_in};
use common::peers::{find_program, kamailio_args, udp_bound, wait_udp_bound, Peer};
use common::sip::{Uac, Uas};
use common::TempDir;
use rtpanchor::rtp::rtcp::emit_header;
use rtpanchor::sip::Message;

const NG: u16 = 13500;
const MEDIA: (u16, u16) = (13510, 13549);
const KAMAILIO: u16 = 13560;
const UAC_SIP: u16 = 13561;
const UAS_SIP: u16 = 13562;
const A_MEDIA: u16 = 13960;
const B_MEDIA: u16 = 13970;
const LOOPBACK: &str = "127.0.0.1";

fn bind(port: u16, wait: Duration) -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    s.set_read_timeout(Some(wait)).unwrap();
    s
}

fn sdp(port: u16, sess: u64) -> Vec<u8> {
    format!(
        "v=0\r\no=- {sess} 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    emit_header(&mut p, 0, 201, 8).expect("an 8-byte RR header fits");
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// The next SIP message at `sock` that `want` accepts, within `limit` (others are skipped:
/// 100 Trying, retransmissions).
fn next_sip(sock: &UdpSocket, limit: Duration, want: impl Fn(&Message<'_>) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let bytes = buf[..n].to_vec();
            if Message::parse(&bytes).is_ok_and(|m| want(&m)) {
                return bytes;
            }
        }
    }
    panic!("no wanted SIP message within {limit:?}");
}

fn body_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn m_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in {sdp}"))
}

fn rtcp_attr(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|l| l.strip_prefix("a=rtcp:"))
}

#[test]
fn rtcp_mux_offer_through_kamailio_falls_back_when_declined() {
    let kamailio = find_program("kamailio")
        .expect("kamailio is not installed (apt-get install kamailio; tools/test.sh does this)");
    for p in [NG, KAMAILIO, UAC_SIP, UAS_SIP] {
        assert!(!udp_bound(p), "UDP port {p} is already in use on loopback");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("kamailio-rtcp-mux").expect("temp dir");
    let d = dir.path();
    let relay_proc = start_relay_in(NG, MEDIA, "uring", &[]);
    let mut ng = client(relay_proc.ng);

    let cfg = d.join("kamailio.cfg");
    std::fs::copy(repo.join("tools/kamailio/kamailio.cfg"), &cfg).expect("copy kamailio.cfg");
    let run = d.join("run");
    std::fs::create_dir(&run).expect("kamailio runtime dir");
    let mut cmd = Command::new(kamailio);
    kamailio_args(&mut cmd, &cfg, &run, d)
        .args(["-A", &format!("LISTEN_IP={LOOPBACK}")])
        .args(["-A", &format!("SIP_PORT={KAMAILIO}")])
        .args(["-A", &format!("RTPENGINE_SOCK=\"udp:{LOOPBACK}:{NG}\"")])
        .args(["-A", &format!("NEXT_HOP=\"sip:{LOOPBACK}:{UAS_SIP}\"")])
        .args([
            "-A",
            "RTP_FLAGS=\"replace-origin replace-session-connection ICE=remove rtcp-mux-offer\"",
        ])
        .args(["-A", "WORKERS=1"]);
    let mut kam = Peer::spawn("kamailio", &mut cmd, &d.join("kamailio.log")).expect("kamailio");
    wait_udp_bound(&mut kam, KAMAILIO, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));

    let uac_sock = bind(UAC_SIP, Duration::from_millis(100));
    let uas_sock = bind(UAS_SIP, Duration::from_millis(100));
    let kam_addr: SocketAddr = format!("{LOOPBACK}:{KAMAILIO}").parse().unwrap();
    let mut uac = Uac::new(
        format!("{LOOPBACK}:{UAC_SIP}").parse().unwrap(),
        &format!("{LOOPBACK}:{UAC_SIP}"),
        "rtcp-mux-kamailio-1",
    )
    .calling(&format!("sip:bob@{LOOPBACK}:{UAS_SIP}"));
    let uas = Uas::new(
        format!("{LOOPBACK}:{UAS_SIP}").parse().unwrap(),
        "b1",
        &format!("sip:bob@{LOOPBACK}:{UAS_SIP}"),
    );

    // INVITE without rtcp-mux; resent every 500 ms until Kamailio's workers take it.
    let invite = uac.invite(Some(&sdp(A_MEDIA, 1)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let forwarded = loop {
        assert!(
            Instant::now() < deadline,
            "Kamailio did not forward the INVITE in 10 s:\n{}",
            kam.log_tail(30)
        );
        uac_sock.send_to(&invite, kam_addr).unwrap();
        let got = recv_n(&uas_sock, 1, Duration::from_millis(500));
        if let Some((bytes, _)) = got.into_iter().next() {
            if Message::parse(&bytes).is_ok_and(|m| m.method() == Some("INVITE")) {
                break bytes;
            }
        }
    };
    let offer = body_text(&forwarded);
    let to_b = m_port(&offer);
    assert!((MEDIA.0..=MEDIA.1).contains(&to_b), "{offer}");
    assert!(offer.contains("a=rtcp-mux\r\n"), "rtcp-mux-offer: {offer}");
    let fallback = (to_b + 1).to_string();
    assert_eq!(
        rtcp_attr(&offer),
        Some(fallback.as_str()),
        "the offer keeps RTP + 1 as the RTCP fallback: {offer}"
    );

    // The callee declines mux.
    let ok = uas.respond_sdp(&forwarded, 200, &sdp(B_MEDIA, 2));
    uas_sock.send_to(&ok, kam_addr).unwrap();
    let ok_at_uac = next_sip(&uac_sock, Duration::from_secs(5), |m| {
        m.status() == Some(200)
    });
    let answer = body_text(&ok_at_uac);
    let to_a = m_port(&answer);
    assert!(!answer.contains("a=rtcp-mux"), "{answer}");
    let a_fallback = (to_a + 1).to_string();
    assert_eq!(rtcp_attr(&answer), Some(a_fallback.as_str()), "{answer}");
    uac.learn(&ok_at_uac);
    uac_sock.send_to(&uac.ack(None), kam_addr).unwrap();
    let _ = next_sip(&uas_sock, Duration::from_secs(5), |m| {
        m.method() == Some("ACK")
    });

    // Media: RTP both ways, then RTCP both ways on the separate ports.
    let wait = Duration::from_millis(20);
    let (a_rtp, a_rtcp) = (bind(A_MEDIA, wait), bind(A_MEDIA + 1, wait));
    let (b_rtp, b_rtcp) = (bind(B_MEDIA, wait), bind(B_MEDIA + 1, wait));
    for i in 0..20u16 {
        a_rtp.send_to(&pcmu(i, 0xa), relay(to_a)).unwrap();
        b_rtp.send_to(&pcmu(i, 0xb), relay(to_b)).unwrap();
    }
    assert_eq!(
        recv_n(&b_rtp, 20, Duration::from_secs(3)).len(),
        20,
        "A->B RTP"
    );
    assert_eq!(
        recv_n(&a_rtp, 20, Duration::from_secs(3)).len(),
        20,
        "B->A RTP"
    );
    for i in 0..3u32 {
        b_rtcp.send_to(&rtcp_rr(0xb0 + i), relay(to_b + 1)).unwrap();
        a_rtcp.send_to(&rtcp_rr(0xa0 + i), relay(to_a + 1)).unwrap();
    }
    let at_a = recv_n(&a_rtcp, 4, Duration::from_secs(2));
    let at_b = recv_n(&b_rtcp, 4, Duration::from_secs(2));
    assert_eq!(at_a.len(), 3, "B->A RTCP at A's RTCP port");
    assert_eq!(at_b.len(), 3, "A->B RTCP at B's RTCP port");
    assert!(at_a.iter().all(|(_, from)| from.port() == to_a + 1));
    assert!(at_b.iter().all(|(_, from)| from.port() == to_b + 1));

    // BYE through Kamailio: the relay deletes the call.
    uac_sock.send_to(&uac.bye(), kam_addr).unwrap();
    let bye = next_sip(&uas_sock, Duration::from_secs(5), |m| {
        m.method() == Some("BYE")
    });
    uas_sock.send_to(&uas.respond(&bye, 200), kam_addr).unwrap();
    let _ = next_sip(&uac_sock, Duration::from_secs(5), |m| {
        m.status() == Some(200)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = ng.list().expect("list");
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = ng.list().expect("list");
    }
    assert!(left.is_empty(), "calls left after the BYE: {left:?}");
    let log = std::fs::read_to_string(kam.log_path()).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR: rtpengine"))
        .collect();
    assert!(
        errors.is_empty(),
        "rtpengine module errors:\n{}",
        errors.join("\n")
    );
    kam.stop(Duration::from_secs(2));
}
