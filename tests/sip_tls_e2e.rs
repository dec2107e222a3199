//! SIP over TLS through rtpanchor's built-in proxy (`--listen-sips`), the real binary on
//! 127.0.0.1, with a CA and a certificate this test makes (rcgen), and baresip phones (the
//! Debian SIPp is built without TLS).
//!
//! [`tls_phones_register_and_call_over_their_own_connections`]: bob and alice register
//! over TLS (verifying the relay's certificate against the test CA); alice calls bob. The
//! call completes, bob is reached over the connection he registered on (the relay accepted
//! two TLS connections and opened none, though it could: it has a CA to verify with), and
//! the media went through the relay's ports (its packet counter; phones send where the
//! SDP tells them, so the SDPs named the relay).
//!
//! Port block 16100-16199 (SIP, TLS, ng, HTTP, phones, their RTP), relay media 16200-16299.
//! Every process is stopped by pid, every wait bounded.

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::baresip::Phone;
use common::peers::{wait_udp_bound, Peer};
use common::scrape::{metrics, series, wait_series};
use common::tls::{relay_ca, relay_tls_args};
use common::TempDir;

const LO: &str = "127.0.0.1";
const SIP: u16 = 16100;
const SIPS: u16 = 16101;
const NG: u16 = 16102;
const HTTP: u16 = 16103;
const MEDIA: (u16, u16) = (16200, 16299);

fn start_relay(dir: &Path) -> Peer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO])
        .args(["--listen-ng", &format!("{LO}:{NG}")])
        .args(["--listen-http", &format!("{LO}:{HTTP}")])
        .args(["--listen-sip", &format!("{LO}:{SIP}")]);
    // With a CA the relay could open TLS connections itself: the test shows it does not.
    relay_tls_args(&mut cmd, dir, SIPS)
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--no-kernel-forwarding"])
        .args(["--log-level", "debug"]);
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    wait_udp_bound(&mut relay, SIP, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    relay
}

/// A phone registering over TLS through the relay.
fn tls_phone<'a>(name: &'a str, sip: u16, rtp: (u16, u16), ca: &'a Path, extra: &str) -> Phone<'a> {
    Phone {
        name,
        sip_port: sip,
        rtp_ports: rtp,
        account: format!(
            "<sip:{name}@{LO};transport=tls>;outbound=\"sip:{LO}:{SIPS};transport=tls\";\
             regint=600{extra}"
        ),
        ca: Some(ca),
    }
}

#[test]
fn tls_phones_register_and_call_over_their_own_connections() {
    let tmp = TempDir::new("sip-tls").unwrap();
    let dir = tmp.path();
    relay_ca(dir);
    let ca = dir.join("ca.pem");
    let mut relay = start_relay(dir);

    let bob = tls_phone("bob", 16110, (16120, 16139), &ca, ";answermode=auto");
    let mut bob_p = bob.spawn(dir, 30, &[]);
    let reg = "rtpanchor_sip_registrations_total";
    assert!(
        wait_series(HTTP, reg, 1.0, Duration::from_secs(10)),
        "bob did not register over TLS:\n{}\nrelay:\n{}",
        bob_p.log_tail(40),
        relay.log_tail(30)
    );
    let alice = tls_phone("alice", 16140, (16150, 16169), &ca, "");
    let mut alice_p = alice.spawn(dir, 10, &[&format!("/dial sip:bob@{LO}")]);
    let status = alice_p
        .wait_timeout(Duration::from_secs(25))
        .expect("alice still running after 25 s");
    let text = metrics(HTTP);
    let alice_log = std::fs::read_to_string(dir.join("alice.log")).unwrap_or_default();
    assert!(
        alice_log.to_lowercase().contains("call established"),
        "alice's call was not established ({status}):\n{}\nbob:\n{}\nrelay:\n{}",
        alice_p.log_tail(60),
        bob_p.log_tail(60),
        relay.log_tail(40)
    );
    let made = |how: &str| {
        series(
            &text,
            &format!("rtpanchor_sip_connections_made_total{{how=\"{how}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(
        made("tls_accepted"),
        2.0,
        "one TLS connection per phone:\n{text}"
    );
    assert_eq!(
        made("tls_opened"),
        0.0,
        "bob was reached over his own connection"
    );
    assert_eq!(made("tcp_opened"), 0.0);
    // Media anchored: RTP (about 50 packets/s each way) arrived on the relay's ports.
    let packets = series(&text, "rtpanchor_packets_total{type=\"userspace\"}").unwrap_or(0.0);
    assert!(
        packets >= 200.0,
        "only {packets} packets reached the relay's ports:\n{text}"
    );
    bob_p.stop(Duration::from_secs(3));
    relay.stop(Duration::from_secs(5));
}
