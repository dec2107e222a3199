//! Registrations survive `kill -9`: a phone registers with the relay's SIP registrar (state
//! in a real `redis-server` started here), the relay is killed and started again with the
//! same Redis, and a call to the phone's address of record reaches the phone without a new
//! REGISTER.
//!
//! Port block 14000-14999: Redis 14030, ng 14031, SIP 14032, Bob 14033, Alice 14034, relay
//! media 14900-14999.
#![allow(clippy::disallowed_methods)]

// Shared with the other end-to-end tests; this one uses a subset.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::peers::tail;
use common::sip::{register_bytes, Uac};
use common::store::{redis_keys, start_redis, CrashableRelay};
use common::TempDir;

const REDIS_PORT: u16 = 14030;
const NG_PORT: u16 = 14031;
const SIP_PORT: u16 = 14032;
const BOB_PORT: u16 = 14033;
const ALICE_PORT: u16 = 14034;

fn relay_args() -> Vec<String> {
    [
        "--interface",
        "127.0.0.1",
        "--listen-sip",
        &format!("127.0.0.1:{SIP_PORT}"),
        "--domain",
        "example.com",
        "--port-min",
        "14900",
        "--port-max",
        "14999",
        "--num-threads",
        "1",
        "--log-level",
        "info",
        "--redis",
        &format!("redis://127.0.0.1:{REDIS_PORT}/0"),
    ]
    .map(String::from)
    .to_vec()
}

fn recv_text(s: &UdpSocket, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

fn reg_keys() -> usize {
    redis_keys(REDIS_PORT, "rtpanchor:reg:*")
}

/// Alice calls Bob; what Bob's socket receives within 3 s (None: nothing), and what Alice
/// got back.
fn call_bob(alice: &UdpSocket, bob: &UdpSocket, call_id: &str) -> (Option<String>, String) {
    let mut uac = Uac::new(
        alice.local_addr().unwrap(),
        &format!("127.0.0.1:{ALICE_PORT}"),
        call_id,
    );
    let sip = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
    alice.send_to(&uac.invite(None), sip).unwrap();
    let at_bob = recv_text(bob, Duration::from_secs(3));
    let mut replies = String::new();
    while let Some(t) = recv_text(alice, Duration::from_millis(300)) {
        replies.push_str(t.lines().next().unwrap_or(""));
        replies.push('\n');
    }
    (at_bob, replies)
}

#[test]
fn a_phone_registered_before_a_crash_is_called_after_it() {
    let dir = TempDir::new("rtpanchor-store-reg").unwrap();
    let mut redis = start_redis(REDIS_PORT, dir.path());
    let log = dir.path().join("relay.log");
    let relay = CrashableRelay::start(&relay_args(), NG_PORT, &log);

    let bob = UdpSocket::bind(("127.0.0.1", BOB_PORT)).unwrap();
    bob.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let alice = UdpSocket::bind(("127.0.0.1", ALICE_PORT)).unwrap();
    alice
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let sip = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
    let contact = format!("sip:bob@127.0.0.1:{BOB_PORT}");
    bob.send_to(
        &register_bytes(
            "bob",
            &[&contact],
            &format!("127.0.0.1:{BOB_PORT}"),
            "reg-bob",
            1,
        ),
        sip,
    )
    .unwrap();
    let ok = recv_text(&bob, Duration::from_secs(3)).expect("no reply to REGISTER");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        common::media::wait_for(Duration::from_secs(3), || reg_keys() == 1),
        "the registration did not reach Redis"
    );

    drop(relay);
    let relay = CrashableRelay::start(&relay_args(), NG_PORT, &log);
    let (at_bob, replies) = call_bob(&alice, &bob, "after-crash");
    let invite = at_bob.unwrap_or_else(|| {
        panic!(
            "the INVITE did not reach Bob after the restart; Alice got:\n{replies}\n{}",
            tail(&log, 20)
        )
    });
    assert!(
        invite.starts_with(&format!("INVITE {contact} SIP/2.0")),
        "{invite}"
    );
    assert!(invite.contains("Call-ID: after-crash"), "{invite}");
    drop(relay);
    redis.stop(Duration::from_secs(2));
}
