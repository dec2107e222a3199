//! Presence and store-and-forward MESSAGE through the running relay, with real peers on
//! loopback ports 9000-9999:
//! - SIPp (`tools/sipp/presence_*.xml`, `message_*.xml`): a watcher SUBSCRIBEs to bob
//!   (200 + NOTIFY closed), a publisher PUBLISHes "away" (200 + SIP-ETag; the watcher gets
//!   a NOTIFY with it), refreshes (a new tag), gets 412 for a stale tag and removes the
//!   publication (the watcher gets closed), the watcher un-subscribes (NOTIFY terminated);
//!   a MESSAGE to bob while he has no binding gets 202 and reaches him, with its original
//!   Date, when he registers.
//! - baresip (its `presence` module): see `baresip_presence_and_messages`.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::peers::{find_program, wait_udp_bound, Peer};
use common::TempDir;

const LO: &str = "127.0.0.1";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sipp() -> PathBuf {
    // CI installs sip-tester (.ci/run); a missing SIPp is a failure, not a skip.
    find_program("sipp").expect("sipp (Debian sip-tester) is required")
}

fn start_relay(dir: &Path, sip: u16, ng: u16, media: (u16, u16)) -> Peer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO])
        .args(["--listen-ng", &format!("{LO}:{ng}")])
        .args(["--listen-sip", &format!("{LO}:{sip}")])
        .args(["--port-min", &media.0.to_string()])
        .args(["--port-max", &media.1.to_string()])
        .args(["--num-threads", "1", "--no-kernel-forwarding"]);
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    wait_udp_bound(&mut relay, sip, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    relay
}

/// Starts one SIPp scenario as `service` from `port`.
fn sipp_start(dir: &Path, sip: u16, scenario: &str, service: &str, port: u16) -> Peer {
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp").join(scenario))
        .arg(format!("{LO}:{sip}"))
        .args(["-s", service, "-i", LO, "-p", &port.to_string()])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-recv_timeout",
            "15000",
            "-trace_err",
        ]);
    Peer::spawn(scenario, &mut cmd, &dir.join(format!("{scenario}.out"))).expect("sipp")
}

fn sipp_done(mut p: Peer, limit: Duration) {
    let name = p.name().to_owned();
    let status = p
        .wait_timeout(limit)
        .unwrap_or_else(|| panic!("{name}: SIPp still running after {limit:?}"));
    assert!(
        status.success(),
        "{name}: SIPp failed ({status}):\n{}",
        p.log_tail(30)
    );
}

#[test]
fn sipp_subscribe_publish_notify_and_offline_message() {
    let dir = TempDir::new("rtpanchor-presence-sipp").unwrap();
    let (sip, ng) = (9060, 9061);
    let mut relay = start_relay(dir.path(), sip, ng, (9100, 9199));
    let watcher = sipp_start(dir.path(), sip, "presence_watcher.xml", "bob", 9070);
    // The watcher has its first NOTIFY before anything is published.
    std::thread::sleep(Duration::from_millis(800));
    let publisher = sipp_start(dir.path(), sip, "presence_publish.xml", "bob", 9071);
    sipp_done(publisher, Duration::from_secs(20));
    sipp_done(watcher, Duration::from_secs(20));

    let sender = sipp_start(dir.path(), sip, "message_offline.xml", "carol", 9072);
    sipp_done(sender, Duration::from_secs(10));
    // carol's phone waits at 9074; she registers it from 9073 and the stored MESSAGE is
    // delivered there.
    let mut phone = sipp_start(dir.path(), sip, "message_receive.xml", "carol", 9074);
    wait_udp_bound(&mut phone, 9074, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(repo().join("tools/sipp/proxy_register.xml"))
        .arg(format!("{LO}:{sip}"))
        .args(["-i", LO, "-p", "9073", "-m", "1", "-nostdin"])
        .args(["-key", "aor_user", "carol", "-key", "aor_host", LO])
        .args(["-key", "contact_host", LO, "-key", "contact_port", "9074"])
        .args(["-key", "via_host", LO, "-key", "via_port", "9073"])
        .args(["-key", "expires", "120"]);
    let register = Peer::spawn("register", &mut cmd, &dir.path().join("register.out")).unwrap();
    sipp_done(register, Duration::from_secs(10));
    sipp_done(phone, Duration::from_secs(10));
    relay.stop(Duration::from_secs(5));
}
