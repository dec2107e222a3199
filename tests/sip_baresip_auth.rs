//! baresip phones with passwords through rtpanchor's built-in proxy (`--sip-users`), the
//! real binary on 127.0.0.1.
//!
//! [`baresip_registers_and_calls_with_its_password_and_a_wrong_one_is_refused`]: a phone
//! with a wrong password is challenged and refused (401, no binding made); bob and alice
//! register with theirs and alice calls bob (authenticating her INVITE): the call is
//! established and its RTP crosses the relay's ports. The relay offers MD5 only, as an
//! operator with such phones must (see `start_relay`).
//!
//! Port block 16300-16399 (SIP, ng, HTTP, phones, their RTP), relay media 16400-16499.
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
use common::TempDir;

const LO: &str = "127.0.0.1";
const SIP: u16 = 16300;
const NG: u16 = 16302;
const HTTP: u16 = 16303;
const MEDIA: (u16, u16) = (16400, 16499);

fn start_relay(dir: &Path) -> Peer {
    let users = common::users_file(dir, LO, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO])
        .args(["--listen-ng", &format!("{LO}:{NG}")])
        .args(["--listen-http", &format!("{LO}:{HTTP}")])
        .args(["--listen-sip", &format!("{LO}:{SIP}")])
        .arg("--sip-users")
        .arg(&users)
        // Every phone here shares 127.0.0.1: the wrong password must not get it banned.
        .args(["--sip-max-auth-failures", "0"])
        // baresip 1.0 (libre 1.1) gives up ("Function not implemented") when any of the
        // challenges is SHA-256, even with an MD5 one beside it.
        .args(["--sip-auth-algorithms", "MD5"])
        .args(["--port-min", &MEDIA.0.to_string()])
        .args(["--port-max", &MEDIA.1.to_string()])
        .args(["--num-threads", "1", "--no-kernel-forwarding"]);
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    wait_udp_bound(&mut relay, SIP, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    relay
}

fn registrations() -> f64 {
    series(&metrics(HTTP), "rtpanchor_sip_registrations_total").unwrap_or(-1.0)
}

fn phone<'a>(
    name: &'a str,
    user: &str,
    pw: &str,
    sip: u16,
    rtp: (u16, u16),
    extra: &str,
) -> Phone<'a> {
    Phone {
        name,
        sip_port: sip,
        rtp_ports: rtp,
        account: format!(
            "<sip:{user}@{LO}>;auth_pass={pw};outbound=\"sip:{LO}:{SIP}\";regint=600{extra}"
        ),
        ca: None,
    }
}

#[test]
fn baresip_registers_and_calls_with_its_password_and_a_wrong_one_is_refused() {
    let tmp = TempDir::new("sip-baresip-auth").unwrap();
    let dir = tmp.path();
    let mut relay = start_relay(dir);
    assert_eq!(registrations(), 0.0);

    // A wrong password: challenged, answered, refused; no binding is made.
    let wrong = phone("mallory", "alice", "guess", 16310, (16320, 16329), "");
    let mut wrong_p = wrong.spawn(dir, 3, &[]);
    wrong_p
        .wait_timeout(Duration::from_secs(10))
        .expect("the wrong-password phone still running after 10 s");
    let log = std::fs::read_to_string(dir.join("mallory.log")).unwrap_or_default();
    assert!(
        log.contains("401 Unauthorized"),
        "the wrong password was not refused with 401:\n{}",
        wrong_p.log_tail(40)
    );
    assert!(
        log.contains("Authorization:"),
        "baresip never answered the challenge:\n{}",
        wrong_p.log_tail(40)
    );
    assert_eq!(registrations(), 0.0, "a wrong password made a binding");

    // The right passwords: bob registers and answers, alice registers and calls him.
    let bob = phone(
        "bob",
        "bob",
        "bob-pw",
        16330,
        (16340, 16359),
        ";answermode=auto",
    );
    let mut bob_p = bob.spawn(dir, 30, &[]);
    assert!(
        wait_series(
            HTTP,
            "rtpanchor_sip_registrations_total",
            1.0,
            Duration::from_secs(10)
        ),
        "bob did not register with his password:\n{}\nrelay:\n{}",
        bob_p.log_tail(40),
        relay.log_tail(30)
    );
    let alice = phone("alice", "alice", "alice-pw", 16360, (16370, 16389), "");
    let mut alice_p = alice.spawn(dir, 8, &[&format!("/dial sip:bob@{LO}")]);
    let status = alice_p
        .wait_timeout(Duration::from_secs(25))
        .expect("alice still running after 25 s");
    let text = metrics(HTTP);
    let alice_log = std::fs::read_to_string(dir.join("alice.log")).unwrap_or_default();
    assert!(
        alice_log.to_lowercase().contains("call established"),
        "alice's call was not established ({status}):\n{}\nbob:\n{}\nrelay:\n{}",
        alice_p.log_tail(60),
        bob_p.log_tail(40),
        relay.log_tail(40)
    );
    // Her INVITE was challenged (407) and went through with her credentials.
    assert!(
        alice_log.contains("407 Proxy Authentication Required"),
        "alice's INVITE was not challenged:\n{}",
        alice_p.log_tail(60)
    );
    assert!(
        series(&text, "rtpanchor_sip_registrations_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    let packets = series(&text, "rtpanchor_packets_total{type=\"userspace\"}").unwrap_or(0.0);
    assert!(
        packets >= 200.0,
        "only {packets} packets reached the relay's ports:\n{text}"
    );
    bob_p.stop(Duration::from_secs(3));
    relay.stop(Duration::from_secs(5));
}
