//! Digest authentication and authorization through rtpanchor's built-in proxy
//! (`--sip-users`), the real binary on 127.0.0.1.
//!
//! - [`sipp_registers_and_calls_with_passwords`]: SIPp phones with `-au`/`-ap`
//!   (`[authentication]`): bob and alice register after a 401 challenge; a wrong password is
//!   challenged again (401) and learns no binding; alice's valid credentials for bob's AoR get
//!   403; alice calls bob after a 407 challenge, the call completes and both SDPs name the
//!   relay.
//! - [`replay_foreign_queries_and_forged_from_are_refused`]: a raw UDP client computing its
//!   own digests: a captured Authorization reused in a new request is 401 (nonce count);
//!   a binding query for another user's AoR is 403 and shows nothing, one for your own shows
//!   only yours; a MESSAGE with alice's From and bob's credentials is 403, without credentials
//!   407, and bob receives neither, while alice's own MESSAGE reaches him (without her
//!   credentials, which the proxy consumed).
//! - [`public_sip_without_users_refuses_to_start`]: the secure default.
//!
//! Port block 12000-12299 (SIP, ng, SIPp, media). Every process is stopped by pid, every wait
//! bounded.

// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::cell::Cell;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{find_program, wait_udp_bound, Peer};
use common::TempDir;
use rtpanchor::sip::auth::{client, passwd_line};

const LO: &str = "127.0.0.1";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sipp() -> PathBuf {
    // CI installs sip-tester (.ci/run); a missing SIPp is a failure, not a skip.
    find_program("sipp").expect("sipp (Debian sip-tester) is required")
}

/// Writes the users file (alice, bob in realm 127.0.0.1) and starts the relay.
fn start_relay(dir: &Path, sip: u16, ng: u16, media: (u16, u16), extra: &[&str]) -> Peer {
    let users = common::users_file(dir, LO, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO])
        .args(["--listen-ng", &format!("{LO}:{ng}")])
        .args(["--listen-sip", &format!("{LO}:{sip}")])
        .args(["--port-min", &media.0.to_string()])
        .args(["--port-max", &media.1.to_string()])
        .args(["--num-threads", "1", "--no-kernel-forwarding"])
        .arg("--sip-users")
        .arg(&users)
        .args(extra);
    let mut relay = Peer::spawn("rtpanchor", &mut cmd, &dir.join("relay.log")).expect("relay");
    wait_udp_bound(&mut relay, sip, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    relay
}

// ---------------------------------------------------------------------------------------------
// SIPp

/// Runs auth_register.xml once; returns its `REGISTER-RESULT` line.
/// `ports` are SIPp's SIP and control ports.
fn sipp_register(
    dir: &Path,
    sip: u16,
    name: &str,
    creds: (&str, &str),
    aor: &str,
    contact: u16,
    ports: (u16, u16),
) -> String {
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/auth_register.xml"))
        .arg(format!("{LO}:{sip}"))
        .args(["-i", LO, "-p", &ports.0.to_string()])
        .args(["-cp", &ports.1.to_string()])
        .args(["-m", "1", "-nostdin", "-recv_timeout", "5000"])
        .args(["-au", creds.0, "-ap", creds.1])
        .args(["-key", "aor_user", aor, "-key", "aor_host", LO])
        .args(["-key", "from_user", creds.0])
        .args(["-key", "contact_port", &contact.to_string()])
        .args(["-key", "expires", "600", "-trace_logs"])
        .arg("-log_file")
        .arg(&log);
    let mut p = Peer::spawn(name, &mut cmd, &dir.join(format!("{name}.out"))).expect("sipp");
    let status = p
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{name}: SIPp still running after 15 s"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "{name}: SIPp failed ({status}):\n{text}\n{}",
        p.log_tail(20)
    );
    text.lines()
        .find(|l| l.starts_with("REGISTER-RESULT"))
        .unwrap_or_else(|| panic!("{name}: no result logged:\n{text}"))
        .to_owned()
}

/// `c=` address and `m=` port of the first `<tag> ...` line in a SIPp log.
fn logged_sdp(path: &Path, tag: &str) -> (String, u16) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} in {}:\n{text}", path.display()));
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.len(), 7, "{line}");
    (w[4].to_owned(), w[6].parse().unwrap())
}

/// SIPp SIP, media and control ports of a call's two sides.
struct CallPorts {
    uas: (u16, u16, u16),
    uac: (u16, u16, u16),
}

const REG_PORTS: (u16, u16) = (12085, 12092);
const CALL_PORTS: CallPorts = CallPorts {
    uas: (12070, 12050, 12091),
    uac: (12080, 12030, 12090),
};

/// alice (authenticating with -au/-ap) calls bob (a SIPp UAS on `p.uas`, registered there)
/// through the proxy; the call must complete and both SDPs name the relay (`media`).
fn sipp_call(dir: &Path, sip: u16, p: &CallPorts, media: (u16, u16), relay: &mut Peer) {
    let s = |n: u16| n.to_string();
    let mut uas_cmd = Command::new(sipp());
    uas_cmd
        .current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/uas_rr_sdp.xml"))
        .args(["-i", LO, "-mi", LO, "-p", &s(p.uas.0)])
        .args([
            "-mp",
            &s(p.uas.1),
            "-rtp_echo",
            "-key",
            "rtp_port",
            &s(p.uas.1),
        ])
        .args(["-cp", &s(p.uas.2), "-m", "1", "-nostdin", "-trace_logs"])
        .arg("-log_file")
        .arg(dir.join("uas.log"));
    let mut uas = Peer::spawn("sipp-uas", &mut uas_cmd, &dir.join("uas.out")).expect("uas");
    wait_udp_bound(&mut uas, p.uas.0, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let mut uac_cmd = Command::new(sipp());
    uac_cmd
        .current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/auth_uac.xml"))
        .arg(format!("{LO}:{sip}"))
        .args(["-i", LO, "-mi", LO, "-p", &s(p.uac.0), "-mp", &s(p.uac.1)])
        .args([
            "-cp",
            &s(p.uac.2),
            "-m",
            "1",
            "-nostdin",
            "-recv_timeout",
            "5000",
        ])
        .args(["-au", "alice", "-ap", "alice-pw", "-s", "bob"])
        .args([
            "-key",
            "from_user",
            "alice",
            "-key",
            "domain",
            LO,
            "-trace_logs",
        ])
        .arg("-log_file")
        .arg(dir.join("uac.log"));
    let mut uac = Peer::spawn("sipp-uac", &mut uac_cmd, &dir.join("uac.out")).expect("uac");
    let status = uac
        .wait_timeout(Duration::from_secs(20))
        .expect("UAC still running after 20 s");
    assert!(
        status.success(),
        "authenticated call failed ({status}):\n{}\n{}",
        uac.log_tail(30),
        relay.log_tail(20)
    );
    uas.wait_timeout(Duration::from_secs(5));
    uas.stop(Duration::from_secs(2));
    // Media anchored: both sides were told to send to the relay.
    for (log, tag) in [("uac.log", "UAC-ANSWER-SDP"), ("uas.log", "UAS-OFFER-SDP")] {
        let (addr, port) = logged_sdp(&dir.join(log), tag);
        assert_eq!(addr, LO, "{tag}");
        assert!(
            (media.0..=media.1).contains(&port),
            "{tag}: port {port} not the relay's"
        );
    }
}

#[test]
fn sipp_registers_and_calls_with_passwords() {
    let tmp = TempDir::new("sip-auth-sipp").unwrap();
    let dir = tmp.path();
    let (sip, ng, media) = (12060, 12022, (12100u16, 12199u16));
    let mut relay = start_relay(dir, sip, ng, media, &[]);

    // bob (the SIPp UAS on 12070) registers with his password; a wrong password is
    // challenged again and learns no binding; alice's own, valid credentials for bob's AoR
    // are forbidden; alice registers.
    let cases = [
        (
            "reg-bob",
            ("bob", "bob-pw"),
            "bob",
            12070,
            "REGISTER-RESULT 200",
        ),
        (
            "reg-wrong",
            ("alice", "guess"),
            "alice",
            12071,
            "REGISTER-RESULT 401",
        ),
        (
            "reg-foreign",
            ("alice", "alice-pw"),
            "bob",
            12072,
            "REGISTER-RESULT 403",
        ),
        (
            "reg-alice",
            ("alice", "alice-pw"),
            "alice",
            12080,
            "REGISTER-RESULT 200",
        ),
    ];
    for (name, creds, aor, contact, want) in cases {
        let r = sipp_register(dir, sip, name, creds, aor, contact, REG_PORTS);
        assert!(r.starts_with(want), "{name}: {r}");
        if want.ends_with("200") {
            assert!(r.contains(&format!(":{contact}>")), "{name}: {r}");
        } else {
            assert_eq!(r, want, "{name}: a refusal shows no binding");
        }
    }

    // bob answers; alice calls him and authenticates to the proxy.
    sipp_call(dir, sip, &CALL_PORTS, media, &mut relay);
    relay.stop(Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// A raw client

struct Phone {
    sock: UdpSocket,
    proxy: String,
    n: Cell<u32>,
}

/// A response: status and header lines.
struct Resp {
    status: u16,
    text: String,
}

impl Resp {
    fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.text.lines().filter_map(move |l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Phone {
    fn new(port: u16, proxy: u16) -> Phone {
        let sock = UdpSocket::bind((LO, port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Phone {
            sock,
            proxy: format!("{LO}:{proxy}"),
            n: Cell::new(0),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// A request with a fresh branch; `extra` are whole header lines.
    fn request(&self, method: &str, ruri: &str, from: &str, to: &str, extra: &str) -> String {
        self.n.set(self.n.get() + 1);
        let port = self.port();
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {LO}:{port};rport;branch=z9hG4bKauth{port}x{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from}@{LO}>;tag=t{port}\r\nTo: <sip:{to}@{LO}>\r\n\
             Call-ID: auth-{port}-{n}\r\nCSeq: {n} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
            n = self.n.get()
        )
    }

    /// Sends `req` and returns the first final response (bounded: 3 s).
    fn send(&self, req: &str) -> Resp {
        self.sock.send_to(req.as_bytes(), &self.proxy).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let Some(code) = text.strip_prefix("SIP/2.0 ").and_then(|s| s.get(..3)) else {
                continue;
            };
            let status: u16 = code.parse().unwrap();
            if status >= 200 {
                return Resp { status, text };
            }
        }
        panic!("no final response to:\n{req}");
    }

    /// Anything that arrives within `wait` (requests the proxy forwards to us).
    fn inbox(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }
}

/// The credentials line answering `challenge` (a 401/407) as `user` with `password`.
fn credentials(
    challenge: &Resp,
    header: &str,
    (user, password): (&str, &str),
    (method, uri): (&str, &str),
    nc: u32,
) -> String {
    let name = if header == "Authorization" {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    };
    let value = challenge
        .headers(name)
        .next()
        .unwrap_or_else(|| panic!("no challenge in:\n{}", challenge.text));
    let c = client::answer_challenge(value, user, password, method, uri, nc, "e2e").unwrap();
    format!("{header}: {c}\r\n")
}

#[test]
fn replay_foreign_queries_and_forged_from_are_refused() {
    let tmp = TempDir::new("sip-auth-raw").unwrap();
    let (sip, ng) = (12260, 12222);
    // SHA-256 first here: this client supports it (SIPp's test covers MD5).
    let mut relay = start_relay(
        tmp.path(),
        sip,
        ng,
        (12230, 12259),
        &["--sip-auth-algorithms", "SHA-256,MD5"],
    );
    let reg_uri = format!("sip:{LO}");
    let alice = Phone::new(12270, sip);
    let bob = Phone::new(12271, sip);

    // bob registers: challenge (SHA-256 first, as configured), then credentials.
    let ch = bob.send(&bob.request("REGISTER", &reg_uri, "bob", "bob", ""));
    let first = ch.headers("WWW-Authenticate").next().unwrap_or_default();
    assert!(first.contains("algorithm=SHA-256"), "{}", ch.text);
    let ok = register_raw(&bob, "bob", "bob-pw");
    assert_eq!(ok.status, 200, "{}", ok.text);

    // alice registers; her Authorization, captured and reused in a new request: 401.
    let contact_a = format!("Contact: <sip:alice@{LO}:12270>\r\nExpires: 600\r\n");
    let ch = alice.send(&alice.request("REGISTER", &reg_uri, "alice", "alice", &contact_a));
    let auth_a = credentials(
        &ch,
        "Authorization",
        ("alice", "alice-pw"),
        ("REGISTER", &reg_uri),
        1,
    );
    let ok = alice.send(&alice.request(
        "REGISTER",
        &reg_uri,
        "alice",
        "alice",
        &format!("{contact_a}{auth_a}"),
    ));
    assert_eq!(ok.status, 200, "{}", ok.text);
    let replay = alice.send(&alice.request(
        "REGISTER",
        &reg_uri,
        "alice",
        "alice",
        &format!("{contact_a}{auth_a}"),
    ));
    assert_eq!(
        replay.status, 401,
        "replayed nonce count accepted:\n{}",
        replay.text
    );

    // Binding query for bob's AoR with alice's valid credentials: 403, nothing shown.
    let ch = alice.send(&alice.request("REGISTER", &reg_uri, "alice", "bob", ""));
    assert_eq!(ch.status, 401);
    let as_alice = |nc| {
        credentials(
            &ch,
            "Authorization",
            ("alice", "alice-pw"),
            ("REGISTER", &reg_uri),
            nc,
        )
    };
    let q = alice.send(&alice.request("REGISTER", &reg_uri, "alice", "bob", &as_alice(1)));
    assert_eq!(q.status, 403, "{}", q.text);
    assert!(
        !q.text.contains("12271"),
        "bob's binding leaked:\n{}",
        q.text
    );
    // Her own query shows her binding and not bob's.
    let q = alice.send(&alice.request("REGISTER", &reg_uri, "alice", "alice", &as_alice(2)));
    assert_eq!(q.status, 200, "{}", q.text);
    let shows = q.text.contains(":12270") && !q.text.contains("12271");
    assert!(shows, "{}", q.text);

    // A MESSAGE claiming to be from alice: without credentials 407; with bob's 403; bob
    // receives neither.
    let bob_uri = format!("sip:bob@{LO}");
    let ch = bob.send(&bob.request("MESSAGE", &bob_uri, "alice", "bob", ""));
    assert_eq!(ch.status, 407, "{}", ch.text);
    let auth = credentials(
        &ch,
        "Proxy-Authorization",
        ("bob", "bob-pw"),
        ("MESSAGE", &bob_uri),
        1,
    );
    let attacker = Phone::new(12272, sip);
    let ch = attacker.send(&attacker.request("MESSAGE", &bob_uri, "alice", "bob", ""));
    assert_eq!(ch.status, 407, "{}", ch.text);
    let forged = bob.send(&bob.request("MESSAGE", &bob_uri, "alice", "bob", &auth));
    assert_eq!(forged.status, 403, "{}", forged.text);
    // alice's own MESSAGE, authenticated, is delivered (so the check above can fail).
    message_as_alice(&alice, &bob_uri);
    let got = bob.inbox(Duration::from_millis(800));
    // Only alice's MESSAGE (bob does not answer, so it may come again: Timer E).
    let call_ids: std::collections::BTreeSet<&str> = got
        .iter()
        .filter(|m| m.starts_with("MESSAGE "))
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Call-ID: ")))
        .collect();
    // The proxy consumed the credentials for its realm: bob never sees alice's.
    assert!(
        !got.iter().any(|m| m.contains("Proxy-Authorization")),
        "{got:?}"
    );
    let want = format!("auth-12270-{}", alice.n.get());
    assert_eq!(
        call_ids.into_iter().collect::<Vec<_>>(),
        vec![want.as_str()],
        "bob got {got:?}"
    );
    relay.stop(Duration::from_secs(5));
}

#[test]
fn public_sip_without_users_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args([
            "--listen-sip",
            "192.0.2.1:12290",
            "--listen-ng",
            "127.0.0.1:12291",
        ])
        .args(["--port-min", "12292", "--port-max", "12299"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--sip-users"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--no-sip", "--listen-ng", "192.0.2.1:12291"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ng-allow"));
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const FLOOD: usize = 50_000;

#[test]
fn wrong_password_flood_is_banned_while_a_phone_keeps_working() {
    let tmp = TempDir::new("sip-auth-flood").unwrap();
    let dir = tmp.path();
    let (sip, ng, media) = (12460, 12422, (12500u16, 12599u16));
    let mut relay = start_relay(dir, sip, ng, media, &["--sip-ban-secs", "3"]);
    let ports = CallPorts {
        uas: (12471, 12450, 12491),
        uac: (12481, 12430, 12490),
    };
    let r = sipp_register(
        dir,
        sip,
        "reg-bob",
        ("bob", "bob-pw"),
        "bob",
        ports.uas.0,
        (12485, 12492),
    );
    assert!(r.starts_with("REGISTER-RESULT 200"), "{r}");
    let rss_before = rss_kib(relay.pid());

    // The attacker, on another address: one challenge, then 50,000 wrong answers.
    let attacker = UdpSocket::bind(("127.0.0.2", 12475)).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let proxy = format!("{LO}:{sip}");
    let reg = |n: usize, auth: &str| {
        format!(
            "REGISTER sip:{LO} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:12475;branch=z9hG4bKfl{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{LO}>;tag=fl\r\nTo: <sip:alice@{LO}>\r\n\
             Call-ID: flood-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.2:12475>\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    attacker.send_to(reg(0, "").as_bytes(), &proxy).unwrap();
    let mut buf = [0u8; 65536];
    let (n, _) = attacker
        .recv_from(&mut buf)
        .expect("the first REGISTER is challenged");
    let challenge = Resp {
        status: 401,
        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
    };
    let auth = credentials(
        &challenge,
        "Authorization",
        ("alice", "guess"),
        ("REGISTER", &format!("sip:{LO}")),
        1,
    );
    let receiver = attacker.try_clone().unwrap();
    let start = Instant::now();
    let listen = std::thread::spawn(move || {
        // Responses the attacker gets, and when the last came; ends 1.5 s after the last.
        let mut got = 0usize;
        let mut last = None;
        let mut buf = [0u8; 65536];
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(1500)
            && start.elapsed() < Duration::from_secs(30)
        {
            if receiver.recv_from(&mut buf).is_ok() {
                got += 1;
                last = Some(start.elapsed());
                quiet = Instant::now();
            }
        }
        (got, last)
    });
    let flood = std::thread::spawn(move || {
        for i in 1..=FLOOD {
            let _ = attacker.send_to(reg(i, &auth).as_bytes(), &proxy);
        }
        start.elapsed()
    });

    // Meanwhile alice registers and calls bob.
    let r = sipp_register(
        dir,
        sip,
        "reg-alice",
        ("alice", "alice-pw"),
        "alice",
        ports.uac.0,
        (12486, 12493),
    );
    assert!(
        r.starts_with("REGISTER-RESULT 200"),
        "during the flood: {r}"
    );
    sipp_call(dir, sip, &ports, media, &mut relay);

    let sent_in = flood.join().unwrap();
    let (answered, last) = listen.join().unwrap();
    let rss_after = rss_kib(relay.pid());
    eprintln!(
        "flood: {FLOOD} sent in {sent_in:?}; attacker got {answered} responses, the last at \
         {last:?}; relay RSS {rss_before} -> {rss_after} KiB"
    );
    let last = last.unwrap_or_default();
    assert!(
        last < Duration::from_secs(1),
        "attacker still answered {last:?} after it began"
    );
    assert!(answered < 1000, "attacker got {answered} responses");
    // Without the ban each request would hold a transaction (~2 KiB, 50,000 of them).
    assert!(
        rss_after < rss_before + 20 * 1024,
        "relay memory grew {rss_before} -> {rss_after} KiB"
    );
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    let bans: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIP source banned"))
        .collect();
    assert_eq!(bans.len(), 1, "one log line per ban: {bans:?}");
    assert!(bans[0].contains("127.0.0.2"), "{}", bans[0]);

    // After the ban window (3 s from the ban) the address is served again.
    let again = UdpSocket::bind(("127.0.0.2", 12476)).unwrap();
    again
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let unbanned = loop {
        let probe = reg(FLOOD + 1, "").replace("12475", "12476");
        again
            .send_to(probe.as_bytes(), format!("{LO}:{sip}"))
            .unwrap();
        if let Ok((n, _)) = again.recv_from(&mut buf) {
            break Some((
                start.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let (at, text) = unbanned.expect("the attacker's address was never unbanned");
    assert!(at >= Duration::from_secs(3), "unbanned too early ({at:?})");
    assert!(text.starts_with("SIP/2.0 401"), "{text}");
    relay.stop(Duration::from_secs(5));
}

/// alice sends a MESSAGE to `to`: challenged (407), then again with her credentials (its
/// response is left to the caller's socket).
fn message_as_alice(alice: &Phone, to: &str) {
    let ch = alice.send(&alice.request("MESSAGE", to, "alice", "bob", ""));
    assert_eq!(ch.status, 407, "{}", ch.text);
    let who = ("alice", "alice-pw");
    let auth = credentials(&ch, "Proxy-Authorization", who, ("MESSAGE", to), 1);
    let m = alice.request("MESSAGE", to, "alice", "bob", &auth);
    alice.sock.send_to(m.as_bytes(), &alice.proxy).unwrap();
}

/// Challenges a REGISTER of `user`'s own AoR from `phone` and answers it with `password`;
/// returns the final response.
fn register_raw(phone: &Phone, user: &str, password: &str) -> Resp {
    let reg_uri = format!("sip:{LO}");
    let contact = format!(
        "Contact: <sip:{user}@{LO}:{}>\r\nExpires: 600\r\n",
        phone.port()
    );
    let ch = phone.send(&phone.request("REGISTER", &reg_uri, user, user, &contact));
    assert_eq!(ch.status, 401, "{}", ch.text);
    let auth = credentials(
        &ch,
        "Authorization",
        (user, password),
        ("REGISTER", &reg_uri),
        1,
    );
    phone.send(&phone.request(
        "REGISTER",
        &reg_uri,
        user,
        user,
        &format!("{contact}{auth}"),
    ))
}

#[test]
fn sighup_reloads_users_and_keeps_registrations() {
    let tmp = TempDir::new("sip-auth-hup").unwrap();
    let dir = tmp.path();
    let sip = 12760;
    let mut relay = start_relay(dir, sip, 12722, (12730, 12759), &[]);
    let bob = Phone::new(12771, sip);
    assert_eq!(register_raw(&bob, "bob", "bob-pw").status, 200);
    let carol = Phone::new(12772, sip);
    assert_ne!(register_raw(&carol, "carol", "carol-pw").status, 200);

    // bob's password changes and carol is added; SIGHUP.
    let text = format!(
        "{}\n{}\n{}\n",
        passwd_line("alice", LO, "alice-pw"),
        passwd_line("bob", LO, "bob-new"),
        passwd_line("carol", LO, "carol-pw")
    );
    std::fs::write(dir.join("users.toml"), text).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &relay.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(dir.join("relay.log"))
        .unwrap_or_default()
        .contains("SIP users reloaded")
    {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            relay.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(relay.is_running(), "SIGHUP must not stop the relay");
    assert_eq!(register_raw(&carol, "carol", "carol-pw").status, 200);
    assert_eq!(register_raw(&bob, "bob", "bob-pw").status, 401);

    // bob's registration from before the reload still routes: alice's MESSAGE reaches him.
    let alice = Phone::new(12770, sip);
    let bob_uri = format!("sip:bob@{LO}");
    message_as_alice(&alice, &bob_uri);
    let got = bob.inbox(Duration::from_millis(800));
    assert!(
        got.iter()
            .any(|m| m.starts_with("MESSAGE ") && m.contains("From: <sip:alice@")),
        "bob got {got:?}"
    );
    relay.stop(Duration::from_secs(5));
}
