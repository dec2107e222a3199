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

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::peers::{find_program, sipp_program, sipp_scenario, wait_udp_bound, Peer};
use common::TempDir;

const LO: &str = "127.0.0.1";

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
    sipp_start_with(dir, sip, scenario, service, port, &[])
}

fn sipp_start_with(
    dir: &Path,
    sip: u16,
    scenario: &str,
    service: &str,
    port: u16,
    extra: &[&str],
) -> Peer {
    let mut cmd = Command::new(sipp_program());
    // Keys come before the scenario, which SIPp checks as it reads it.
    cmd.current_dir(dir)
        .args(extra)
        .arg("-sf")
        .arg(sipp_scenario(scenario))
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
    let publisher = sipp_start_with(
        dir.path(),
        sip,
        "presence_publish.xml",
        "bob",
        9071,
        &["-key", "activity", "away"],
    );
    sipp_done(publisher, Duration::from_secs(20));
    sipp_done(watcher, Duration::from_secs(20));

    let sender = sipp_start(dir.path(), sip, "message_offline.xml", "carol", 9072);
    sipp_done(sender, Duration::from_secs(10));
    // carol's phone waits at 9074; she registers it from 9073 and the stored MESSAGE is
    // delivered there.
    let mut phone = sipp_start(dir.path(), sip, "message_receive.xml", "carol", 9074);
    wait_udp_bound(&mut phone, 9074, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(sipp_program());
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(sipp_scenario("proxy_register.xml"))
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

/// One baresip user agent with its own config dir: registers `user` at the relay, watches
/// `buddy` (`presence=p2p` contact, also the current contact for `message`), publishes
/// when `publish` is set, and takes commands on its `ctrl_tcp` port.
struct Baresip {
    peer: Peer,
    ctrl: u16,
}

impl Baresip {
    fn start(dir: &Path, user: &str, buddy: &str, relay: u16, sip: u16, publish: bool) -> Baresip {
        let conf = dir.join(user);
        std::fs::create_dir_all(&conf).unwrap();
        let ctrl = sip + 5; // sip+1 is its TLS listener
        std::fs::write(
            conf.join("config"),
            format!(
                "sip_listen {LO}:{sip}\nnet_interface 127.0.0.1\nmodule_path /usr/lib/baresip/modules\n\
module g711.so\nmodule_app account.so\nmodule_app contact.so\nmodule_app menu.so\n\
module_app presence.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen {LO}:{ctrl}\n"
            ),
        )
        .unwrap();
        let pubint = if publish { ";pubint=60" } else { ";pubint=0" };
        std::fs::write(
            conf.join("accounts"),
            format!("<sip:{user}@{LO}:{relay}>;regint=120{pubint};answermode=manual\n"),
        )
        .unwrap();
        std::fs::write(
            conf.join("contacts"),
            format!("\"{buddy}\" <sip:{buddy}@{LO}:{relay}>;presence=p2p\n"),
        )
        .unwrap();
        std::fs::write(
            conf.join("current_contact"),
            format!("sip:{buddy}@{LO}:{relay}"),
        )
        .unwrap();
        let baresip = find_program("baresip").expect("baresip (Debian package) is required");
        let mut cmd = Command::new(baresip);
        // -s: the SIP trace, where a received MESSAGE shows (baresip 1.0 prints it only to
        // a UI module, and none runs headless).
        cmd.arg("-f").arg(&conf).args(["-s", "-t", "120"]);
        let mut peer =
            Peer::spawn(user, &mut cmd, &dir.join(format!("{user}.log"))).expect("baresip");
        wait_tcp(&mut peer, ctrl);
        Baresip { peer, ctrl }
    }

    /// Sends one command over ctrl_tcp (a netstring with a JSON object) and returns the
    /// response (bounded by a read timeout).
    fn command(&self, command: &str, params: &str) -> String {
        use std::io::{Read, Write};
        let json = format!("{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t\"}}");
        let mut s = std::net::TcpStream::connect((LO, self.ctrl)).expect("ctrl_tcp");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(format!("{}:{json},", json.len()).as_bytes())
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"},") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits (bounded) until the `contacts` listing shows `buddy` with `status`.
    fn wait_status(&self, buddy: &str, status: &str, limit: Duration) {
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            last = self.command("contacts", "");
            let line = last
                .split("\\n")
                .find(|l| l.contains(&format!("{buddy} <sip:")))
                .unwrap_or("");
            if line.contains(status) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{}: {buddy} not {status} within {limit:?}; contacts: {last}\n{}",
            self.peer.name(),
            self.peer.log_tail(40)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.peer.log_path()).unwrap_or_default()
    }

    /// Waits (bounded) for `needle` to appear in the log after `from` bytes.
    fn wait_log(&self, from: usize, needle: &str, limit: Duration) -> usize {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let text = self.log();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + i + needle.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{}: no {needle:?} within {limit:?}:\n{}",
            self.peer.name(),
            self.peer.log_tail(40)
        );
    }
}

fn wait_tcp(peer: &mut Peer, port: u16) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect((LO, port)).is_ok() {
            return;
        }
        assert!(
            peer.is_running(),
            "{} exited:\n{}",
            peer.name(),
            peer.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{}: ctrl_tcp {port} not listening:\n{}",
        peer.name(),
        peer.log_tail(30)
    );
}

#[test]
fn baresip_presence_and_messages() {
    let dir = TempDir::new("rtpanchor-presence-baresip").unwrap();
    let (sip, ng) = (9260, 9261);
    let mut relay = start_relay(dir.path(), sip, ng, (9300, 9399));
    // alice watches bob; bob is not there yet.
    let mut alice = Baresip::start(dir.path(), "alice", "bob", sip, 9270, false);
    alice.wait_log(0, "binding]", Duration::from_secs(10));
    alice.wait_status("bob", "Offline", Duration::from_secs(10));
    // bob comes online (registers, publishes "open"): alice sees it.
    let mut bob = Baresip::start(dir.path(), "bob", "alice", sip, 9280, true);
    alice.wait_status("bob", "Online", Duration::from_secs(10));
    // bob is on the phone (published by SIPp beside his phone's own document, as baresip
    // 1.0 cannot publish activities): alice sees him busy, then online again when that
    // publication is removed. (baresip 1.0 shows RPID "away" as Offline, so "away" is
    // checked by the SIPp watcher above.)
    let publisher = sipp_start_with(
        dir.path(),
        sip,
        "presence_publish.xml",
        "bob",
        9290,
        &["-key", "activity", "on-the-phone"],
    );
    alice.wait_status("bob", "Busy", Duration::from_secs(10));
    sipp_done(publisher, Duration::from_secs(10));
    alice.wait_status("bob", "Online", Duration::from_secs(10));
    // A MESSAGE from alice reaches bob.
    alice.command("message", "hello bob");
    let at = bob.wait_log(0, "\nMESSAGE sip:bob", Duration::from_secs(10));
    bob.wait_log(at, "hello bob", Duration::from_secs(2));
    // bob sets himself offline: alice sees it.
    bob.command("presence_offline", "");
    alice.wait_status("bob", "Offline", Duration::from_secs(10));
    // bob quits (un-registers); a MESSAGE meanwhile is stored (202) and reaches him when
    // he is back.
    bob.peer.stop(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    alice.command("message", "while you were away");
    alice.wait_log(0, "SIP/2.0 202 Accepted", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let mut bob2 = Baresip::start(dir.path(), "bob", "alice", sip, 9280, true);
    let at = bob2.wait_log(0, "\nMESSAGE sip:bob", Duration::from_secs(10));
    bob2.wait_log(at, "while you were away", Duration::from_secs(2));
    alice.wait_status("bob", "Online", Duration::from_secs(10));
    bob2.peer.stop(Duration::from_secs(5));
    alice.peer.stop(Duration::from_secs(5));
    relay.stop(Duration::from_secs(5));
}
