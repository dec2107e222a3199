//! Relay sets (`--media-relay`): three rtpanchor relays, each in a network namespace of the
//! test bed (`tools/testbed.sh`, deleted by a Drop guard), behind one SIP front on loopback.
//! SIPp calls through the front's built-in proxy; the front's `/metrics` say where each call
//! went. Checks: 300 calls spread 3:2:1 by weight (±10%); a relay killed mid-run is skipped
//! by new calls within 2 s, no call fails, the calls it held are reported (log and metrics);
//! restarted, it restores those calls from the state store (the relays run with `--redis`,
//! one `redis-server` the test starts on the bridge address), the media of a restored call
//! flow through it again, the front's deletes at BYE reach the restored calls, and it gets
//! new calls again.
//!
//! Needs root, iproute2 and SIPp (`sip-tester`); fails without them (CI installs them).
//! Also, on loopback: a mixed set (rtpengine and rtpanchor) and a relay reached over TCP ng,
//! both carrying calls with RTP.
//!
//! Port block 3500-3999: relays' ng 3500 and media 3600-3999 inside their namespaces; the
//! front's ng 3501, HTTP 3502, SIP 3510, media 3700-3799; SIPp 3520-3570. The TCP ng test:
//! 6700-6799. The state store's Redis: 61000 on the bridge address. The tests run one at a
//! time (the fronts share a media range). `RELAYSET_NETNS` names the namespaces' prefix
//! (default `ra22`).

// Tests time their waits with the wall clock.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::is_root;
use common::peers::{find_program, send_signal, wait_udp_bound, Peer};
use common::{sipp_call_counts, TempDir};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

const LO: &str = "127.0.0.1";
const RELAY_NG: u16 = 3500;
const FRONT_NG: u16 = 3501;
const FRONT_HTTP: u16 = 3502;
const FRONT_SIP: u16 = 3510;
const UAC_SIP: u16 = 3520;
const UAC_CP: u16 = 3521;
const UAC_MEDIA: u16 = 3530;
const UAS_SIP: u16 = 3540;
const UAS_CP: u16 = 3541;
const REG_SIP: u16 = 3545;
const REG_CP: u16 = 3546;
const UAS_MEDIA: u16 = 3550;
const WEIGHTS: [u32; 3] = [3, 2, 1];
/// The state store the relays share, on the bridge address (`tools/testbed.sh`).
const BRIDGE: &str = "10.222.0.1";
const REDIS: u16 = 61000;

/// The test bed's namespaces' prefix.
fn netns_prefix() -> String {
    std::env::var("RELAYSET_NETNS").unwrap_or_else(|_| "ra22".to_owned())
}

/// The tests share the fronts' media range and the machine: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn box_ip(i: usize) -> String {
    format!("10.222.0.{}", 11 + i)
}

fn relay_name(i: usize) -> String {
    format!("ng:{}:{RELAY_NG}", box_ip(i))
}

/// The namespaces of `tools/testbed.sh`, deleted on drop (also when the test fails).
struct Testbed;

impl Testbed {
    fn up(n: usize) -> Testbed {
        let out = Command::new(repo().join("tools/testbed.sh"))
            .args(["up", &n.to_string()])
            .env("PREFIX", netns_prefix())
            .output()
            .expect("tools/testbed.sh");
        let bed = Testbed;
        assert!(
            out.status.success(),
            "testbed up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bed
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/testbed.sh"))
            .arg("down")
            .env("PREFIX", netns_prefix())
            .status();
    }
}

fn wait_pong(addr: &str, limit: Duration) -> Result<(), String> {
    let mut c = NgClient::udp(addr.parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?
        .with_cookie_prefix("relayset-test");
    c.wait_ready(limit).map_err(|e| e.to_string())
}

/// rtpanchor in namespace `PREFIX-n{i+1}`, ng on its box address, its calls kept in the
/// shared Redis.
fn start_box(dir: &Path, i: usize, run: usize) -> Peer {
    let ip = box_ip(i);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &format!("{}-n{}", netns_prefix(), i + 1)])
        .arg(env!("CARGO_BIN_EXE_rtpanchor"))
        .env("NO_COLOR", "1")
        .args(["--interface", &ip, "--no-sip", "--num-threads", "1"])
        .args(["--listen-ng", &format!("{ip}:{RELAY_NG}")])
        .args(["--port-min", "3600", "--port-max", "3999"])
        .args(["--ng-allow", "10.222.0.0/24"])
        .args(["--redis", &format!("redis://{BRIDGE}:{REDIS}/0")])
        .args(["--no-kernel-forwarding", "--log-level", "info"]);
    let relay = Peer::spawn(
        &format!("box{i}"),
        &mut cmd,
        &dir.join(format!("box{i}-{run}.log")),
    )
    .expect("start relay box");
    if let Err(e) = wait_pong(&format!("{ip}:{RELAY_NG}"), Duration::from_secs(10)) {
        panic!("box {i} not answering: {e}\n{}", relay.log_tail(20));
    }
    relay
}

fn start_front(dir: &Path, relays: &[String]) -> Peer {
    let run = MediaRun {
        front_ng: FRONT_NG,
        front_http: FRONT_HTTP,
        front_sip: FRONT_SIP,
        reg: (REG_SIP, REG_CP),
        uas: (UAS_SIP, UAS_CP, UAS_MEDIA),
        uac: (UAC_SIP, UAC_CP, UAC_MEDIA),
    };
    let front = start_loopback_front(dir, &run, relays);
    if let Err(e) = wait_pong(&format!("{LO}:{FRONT_NG}"), Duration::from_secs(10)) {
        panic!("front not answering: {e}\n{}", front.log_tail(30));
    }
    front
}

fn sipp() -> PathBuf {
    find_program("sipp").expect("sipp not installed (apt-get install sip-tester)")
}

/// Registers `uas` at the front with its contact on UAS_SIP.
fn register(dir: &Path) {
    register_at(dir, FRONT_SIP, (REG_SIP, REG_CP), UAS_SIP);
}

/// Registers `uas` at the front on `front_sip`, its contact on `uas_sip`, from SIPp on `reg`
/// (SIP, control).
fn register_at(dir: &Path, front_sip: u16, reg: (u16, u16), uas_sip: u16) {
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/proxy_register.xml"))
        .arg(format!("{LO}:{front_sip}"))
        .args(["-i", LO, "-p", &reg.0.to_string()])
        .args(["-cp", &reg.1.to_string()])
        .args(["-m", "1", "-nostdin", "-recv_timeout", "5000"])
        .args(["-key", "aor_user", "uas", "-key", "aor_host", LO])
        .args(["-key", "contact_host", LO])
        .args(["-key", "contact_port", &uas_sip.to_string()])
        .args(["-key", "via_host", LO])
        .args(["-key", "via_port", &reg.0.to_string()])
        .args(["-key", "expires", "600"]);
    let mut p = Peer::spawn("register", &mut cmd, &dir.join("register.out")).expect("sipp");
    let st = p
        .wait_timeout(Duration::from_secs(15))
        .expect("REGISTER still running after 15 s");
    assert!(st.success(), "REGISTER failed:\n{}", p.log_tail(20));
}

fn start_uas(dir: &Path) -> Peer {
    start_uas_at(dir, (UAS_SIP, UAS_CP, UAS_MEDIA), false)
}

/// The SIPp UAS on `at` (SIP, control, media), echoing RTP if `echo`.
fn start_uas_at(dir: &Path, at: (u16, u16, u16), echo: bool) -> Peer {
    let (sip, cp, media) = at;
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/uas_rr_sdp.xml"))
        .args(["-i", LO, "-mi", LO, "-p", &sip.to_string()])
        .args(["-mp", &media.to_string()])
        .args(["-key", "rtp_port", &media.to_string()])
        .args(["-cp", &cp.to_string(), "-nostdin"]);
    if echo {
        cmd.arg("-rtp_echo");
    }
    let mut uas = Peer::spawn("uas", &mut cmd, &dir.join("uas.out")).expect("sipp uas");
    wait_udp_bound(&mut uas, sip, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    uas
}

/// `calls` calls at `rate`/s, each held `hold_ms`; the UAC, to be waited for.
fn start_uac(dir: &Path, name: &str, calls: usize, rate: usize, hold_ms: u64) -> Peer {
    let mut cmd = Command::new(sipp());
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(repo().join("tools/sipp/proxy_uac_cps.xml"))
        .arg(format!("{LO}:{FRONT_SIP}"))
        .args(["-s", "uas", "-i", LO, "-mi", LO])
        .args(["-p", &UAC_SIP.to_string(), "-mp", &UAC_MEDIA.to_string()])
        .args(["-cp", &UAC_CP.to_string()])
        .args([
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
            "-l",
            "200",
        ])
        .args([
            "-d",
            &hold_ms.to_string(),
            "-recv_timeout",
            "10000",
            "-nostdin",
        ])
        .args(["-trace_stat", "-fd", "1", "-trace_err", "-stf"])
        .arg(dir.join(format!("{name}.csv")));
    Peer::spawn(name, &mut cmd, &dir.join(format!("{name}.out"))).expect("sipp uac")
}

fn finish_uac(dir: &Path, uac: Peer, name: &str, calls: usize, limit: Duration) {
    finish_uac_stats(uac, &dir.join(format!("{name}.csv")), name, calls, limit);
}

/// Waits (at most `limit`) for the SIPp UAC `uac` and checks that its statistics file
/// `stats` counts `calls` successful calls and none failed.
fn finish_uac_stats(mut uac: Peer, stats: &Path, name: &str, calls: usize, limit: Duration) {
    let st = uac.wait_timeout(limit);
    let counts = sipp_call_counts(stats);
    assert!(
        st.is_some_and(|s| s.success()),
        "{name}: SIPp failed or ran over ({st:?}, {counts:?}):\n{}",
        uac.log_tail(30)
    );
    assert_eq!(
        counts,
        Ok((calls as u64, 0)),
        "{name}: successful, failed calls"
    );
}

fn metrics() -> String {
    common::scrape::metrics(FRONT_HTTP)
}

fn relay_series(text: &str, family: &str, i: usize) -> f64 {
    let name = format!("rtpanchor_{family}{{relay=\"{}\"}}", relay_name(i));
    common::http::exposed(text, &name).unwrap_or_else(|| panic!("{name} not exposed:\n{text}"))
}

fn calls_on(i: usize) -> f64 {
    relay_series(&metrics(), "media_relay_calls_total", i)
}

#[test]
fn relay_set_spreads_by_weight_and_survives_a_dead_relay() {
    assert!(
        is_root(),
        "this test builds network namespaces: run it as root"
    );
    let _one = serial();
    let _bed = Testbed::up(3);
    let tmp = TempDir::new("relayset").expect("tempdir");
    let d = tmp.path();
    let mut redis = common::store::start_redis_on(BRIDGE, REDIS, d);
    let mut boxes: Vec<Peer> = (0..3).map(|i| start_box(d, i, 0)).collect();
    let specs: Vec<String> = (0..3)
        .map(|i| format!("{};weight={}", relay_name(i), WEIGHTS[i]))
        .collect();
    let mut front = start_front(d, &specs);
    register(d);
    let mut uas = start_uas(d);

    // 1. 300 calls: spread by weight.
    let uac = start_uac(d, "spread", 300, 10, 0);
    finish_uac(d, uac, "spread", 300, Duration::from_secs(90));
    let text = metrics();
    let total: f64 = WEIGHTS.iter().sum::<u32>().into();
    for (i, w) in WEIGHTS.iter().enumerate() {
        let got = relay_series(&text, "media_relay_calls_total", i);
        let want = 300.0 * f64::from(*w) / total;
        assert!(
            (got - want).abs() <= want * 0.1,
            "relay {i} (weight {w}) got {got} calls, want {want} ±10%\n{text}"
        );
        assert_eq!(relay_series(&text, "media_relay_up", i), 1.0);
        // Every call was deleted on its relay.
        assert_eq!(relay_series(&text, "media_relay_active_calls", i), 0.0);
    }
    // The relays themselves saw the calls (a relay counts the offers it served).
    let mut c = NgClient::udp(format!("{}:{RELAY_NG}", box_ip(0)).parse().unwrap())
        .unwrap()
        .with_cookie_prefix("relayset-stats");
    let stats = c.command("statistics").expect("statistics");
    assert_eq!(stats.get("result").and_then(Owned::as_str), Some("ok"));

    // 2. Box 1 killed 3 s into 120 calls held 12 s each (its calls outlive its absence).
    let uac = start_uac(d, "kill", 120, 10, 12_000);
    std::thread::sleep(Duration::from_secs(3));
    send_signal(boxes[1].pid(), "KILL");
    let killed_at = Instant::now();
    let _ = boxes[1].wait_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2).saturating_sub(killed_at.elapsed()));
    let after_2s = calls_on(1);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(killed_at.elapsed()));
    let text = metrics();
    assert_eq!(
        relay_series(&text, "media_relay_calls_total", 1),
        after_2s,
        "new calls still went to the dead relay more than 2 s after it died"
    );
    assert_eq!(relay_series(&text, "media_relay_up", 1), 0.0);
    assert!(relay_series(&text, "media_relay_downs_total", 1) >= 1.0);
    let stranded = relay_series(&text, "media_relay_stranded_calls_total", 1);
    assert!(
        stranded >= 1.0,
        "no call reported on the dead relay\n{text}"
    );
    let log = std::fs::read_to_string(d.join("front.log")).unwrap_or_default();
    let named = reported_calls(&log, &relay_name(1));
    assert!(
        !named.is_empty(),
        "the front did not report the dead relay's calls:\n{}",
        front.log_tail(30)
    );

    // 3. Back, with the store: it restores the calls it held (and only those: the other
    // relays' records in the same Redis are left alone), relays their media again, and the
    // front's deletes at BYE reach them.
    boxes[1] = start_box(d, 1, 1);
    let box_log = std::fs::read_to_string(d.join("box1-1.log")).unwrap_or_default();
    assert!(
        box_log.contains("state store attached") && box_log.contains("dropped=0"),
        "the restarted relay dropped stored calls:\n{}",
        boxes[1].log_tail(20)
    );
    let restored = box_calls(1, "restored");
    let missing: Vec<&String> = named.iter().filter(|c| !restored.contains(c)).collect();
    // A call answered in the last milliseconds before the kill may not have been written.
    assert!(
        missing.len() <= 1 && restored.len() + 1 >= named.len(),
        "calls reported on the dead relay not restored on it: {missing:?} (restored {restored:?})"
    );
    let probe = named
        .iter()
        .find(|c| restored.contains(c))
        .expect("a reported call restored");
    let (at_caller, at_callee) = media_round_trip(1, probe);
    assert!(
        at_caller >= 15 && at_callee >= 15,
        "RTP through restored call {probe}: {at_caller} and {at_callee} of 20 arrived"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while relay_series(&metrics(), "media_relay_up", 1) != 1.0 {
        assert!(Instant::now() < deadline, "relay not back within 3 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    finish_uac(d, uac, "kill", 120, Duration::from_secs(60));
    // Every restored call was ended by the front's delete at BYE (media timeouts are 60 s).
    let left = box_calls(1, "left");
    let lingering: Vec<&String> = restored.iter().filter(|c| left.contains(c)).collect();
    assert!(
        lingering.is_empty(),
        "restored calls still held after their BYE: {lingering:?}"
    );
    let text = metrics();
    assert_eq!(relay_series(&text, "media_relay_active_calls", 1), 0.0);
    // The others carried the rest.
    assert!(calls_on(0) > 150.0 && calls_on(2) > 50.0);

    // 4. It gets new calls again.
    let before = calls_on(1);
    let uac = start_uac(d, "back", 30, 10, 0);
    finish_uac(d, uac, "back", 30, Duration::from_secs(30));
    let got = calls_on(1) - before;
    assert!(
        (8.0..=12.0).contains(&got),
        "the relay that came back got {got} of 30 calls (weight 2 of 6)"
    );

    uas.stop(Duration::from_secs(2));
    front.stop(Duration::from_secs(5));
    for b in &mut boxes {
        b.stop(Duration::from_secs(5));
    }
    redis.stop(Duration::from_secs(2));
}

/// The Call-IDs the front's log names for `relay` going down.
fn reported_calls(log: &str, relay: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("media relay not answering") && l.contains(relay))
        .filter_map(|l| l.split("call_ids=[").nth(1))
        .filter_map(|rest| rest.split(']').next())
        .flat_map(|list| list.split(','))
        .map(|c| c.trim().trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The calls box `i` holds (ng `list`); `asking` names the ng cookies (the relay answers a
/// cookie it saw from its reply cache).
fn box_calls(i: usize, asking: &str) -> Vec<String> {
    let mut c = NgClient::udp(format!("{}:{RELAY_NG}", box_ip(i)).parse().unwrap())
        .unwrap()
        .with_cookie_prefix(format!("relayset-list-{asking}"));
    let list = c.command("list").expect("list");
    list.get("calls")
        .and_then(Owned::as_list)
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// RTP both ways through `call_id` on box `i`, from two sockets on the bridge address
/// standing in for its phones (their SDP addresses, on loopback, are not reachable from the
/// namespace): the caller's socket sends first, so the relay latches onto it, then 20 packets
/// each way. How many arrived at (the caller, the callee).
fn media_round_trip(i: usize, call_id: &str) -> (usize, usize) {
    let mut c = NgClient::udp(format!("{}:{RELAY_NG}", box_ip(i)).parse().unwrap())
        .unwrap()
        .with_cookie_prefix("relayset-query");
    let q = c
        .request(
            &Owned::dict()
                .with("command", "query")
                .with("call-id", call_id),
        )
        .expect("query");
    // The relay's RTP port for each party; SIPp's caller's tag is `<pid>cps<call number>`.
    let port_of = |caller: bool| {
        q.get("tags")
            .and_then(Owned::as_dict)
            .unwrap_or(&[])
            .iter()
            .filter(|(tag, _)| tag.contains("cps") == caller)
            .find_map(|(_, t)| {
                let m = t.get("medias")?.as_list()?.first()?;
                m.get("streams")?
                    .as_list()?
                    .first()?
                    .get("local port")?
                    .as_int()
            })
            .unwrap_or_else(|| panic!("no relay port for caller={caller} in {q}"))
    };
    let relay =
        |port: i64| -> std::net::SocketAddr { format!("{}:{port}", box_ip(i)).parse().unwrap() };
    let (to_a, to_b) = (relay(port_of(true)), relay(port_of(false)));
    let bind = || {
        let s = std::net::UdpSocket::bind((BRIDGE, 0)).expect("bind on the bridge");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    };
    let (a, b) = (bind(), bind());
    a.send_to(&common::media::pcmu(1, 0xa), to_a).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for seq in 2..22u16 {
        b.send_to(&common::media::pcmu(seq, 0xb), to_b).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_a = common::media::count_rx(&a, 20, Duration::from_secs(3));
    for seq in 2..22u16 {
        a.send_to(&common::media::pcmu(seq, 0xa), to_a).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_b = common::media::count_rx(&b, 20, Duration::from_secs(3));
    (at_a, at_b)
}

/// Where the front, the callee and the caller of a media run listen.
struct MediaRun {
    front_ng: u16,
    front_http: u16,
    front_sip: u16,
    /// The registering SIPp: SIP, control.
    reg: (u16, u16),
    /// The UAS: SIP, control, media.
    uas: (u16, u16, u16),
    /// The UAC: SIP, control, media.
    uac: (u16, u16, u16),
}

/// A front on loopback whose media go to `relays` (its `--media-relay` values).
fn start_loopback_front(d: &Path, run: &MediaRun, relays: &[String]) -> Peer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", LO, "--num-threads", "1"])
        .args(["--listen-ng", &format!("{LO}:{}", run.front_ng)])
        .args(["--listen-http", &format!("{LO}:{}", run.front_http)])
        .args(["--listen-sip", &format!("{LO}:{}", run.front_sip)])
        .args(["--port-min", "3700", "--port-max", "3799"])
        .args(["--no-kernel-forwarding", "--log-level", "info"]);
    for r in relays {
        cmd.args(["--media-relay", r]);
    }
    let mut front = Peer::spawn("front", &mut cmd, &d.join("front.log")).expect("front");
    wait_udp_bound(&mut front, run.front_sip, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    front
}

/// `calls` calls with RTP (SIPp's pcap, echoed by the UAS) through the front of `run`, spread
/// evenly over `relays` (the name the front's `/metrics` gives each, and the UDP ng port to
/// ask it on): mid-call each relay holds a call and relays its RTP; every call succeeds.
fn calls_with_media(d: &Path, run: &MediaRun, relays: &[(String, u16)], calls: usize) {
    let (uac_sip, uac_cp, uac_media) = run.uac;
    register_at(d, run.front_sip, run.reg, run.uas.0);
    let mut uas = start_uas_at(d, run.uas, true);

    let mut uac_cmd = common::pcap_uac_command(
        &sipp(),
        d,
        &repo().join("tools/sipp/uac_rr_pcap.xml"),
        &common::PcapUac {
            target: format!("{LO}:{}", run.front_sip),
            service: Some("uas"),
            sip_port: uac_sip,
            media_port: uac_media,
            control_port: uac_cp,
            calls,
            rate: 2,
            limit: calls,
        },
    );
    let uac = Peer::spawn("uac", &mut uac_cmd, &d.join("uac.out")).expect("uac");
    // Mid-call (the pcap plays for 7 s): each relay holds a call and relays its RTP.
    std::thread::sleep(Duration::from_secs(4));
    for (name, port) in relays {
        let mut c = NgClient::udp(format!("{LO}:{port}").parse().unwrap())
            .unwrap()
            .with_cookie_prefix("mediarun");
        let list = c.command("list").expect("list");
        let held: Vec<String> = list
            .get("calls")
            .and_then(Owned::as_list)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert!(!held.is_empty(), "{name} holds no call: {list}");
        let q = c
            .request(
                &Owned::dict()
                    .with("command", "query")
                    .with("call-id", held[0].as_str()),
            )
            .expect("query");
        let packets = common::ng::find_int(&q, "packets").unwrap_or(0);
        assert!(packets > 0, "{name} relayed no RTP for {}: {q}", held[0]);
    }
    finish_uac_stats(
        uac,
        &d.join("uac_stats.csv"),
        "uac",
        calls,
        Duration::from_secs(40),
    );
    let text = common::scrape::metrics(run.front_http);
    for (name, _) in relays {
        let s = format!("rtpanchor_media_relay_calls_total{{relay=\"{name}\"}}");
        let want = (calls / relays.len()) as f64;
        assert_eq!(common::http::exposed(&text, &s), Some(want), "{s}\n{text}");
    }
    uas.stop(Duration::from_secs(2));
}

/// Mixed set: Debian's rtpengine and an rtpanchor relay (both on loopback, ng 3503 and
/// 3504) behind one front (SIP 3511); four calls with RTP alternate between them, and each
/// relay is seen relaying packets of its call mid-call.
#[test]
fn mixed_set_of_rtpengine_and_rtpanchor_both_carry_media() {
    const RTPE_NG: u16 = 3503;
    const ANCHOR_NG: u16 = 3504;
    let _one = serial();
    let tmp = TempDir::new("relayset-mixed").expect("tempdir");
    let d = tmp.path();
    let bin = find_program("rtpengine")
        .expect("rtpengine (Debian package rtpengine-daemon) is not installed");
    let mut rtpe = Peer::spawn(
        "rtpengine",
        Command::new(bin)
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
            ])
            .arg("--interface=127.0.0.1")
            .arg(format!("--listen-ng=127.0.0.1:{RTPE_NG}"))
            .args(["--port-min=3800", "--port-max=3899", "--delete-delay=0"]),
        &d.join("rtpengine.log"),
    )
    .expect("rtpengine");
    wait_udp_bound(&mut rtpe, RTPE_NG, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let _anchor =
        common::peers::spawn_relay(d, ANCHOR_NG, (3900, 3999), &["--no-kernel-forwarding"]);
    let run = MediaRun {
        front_ng: 3505,
        front_http: 3506,
        front_sip: 3511,
        reg: (3547, 3548),
        uas: (3542, 3543, 3560),
        uac: (3522, 3523, 3570),
    };
    let relays: Vec<(String, u16)> = [RTPE_NG, ANCHOR_NG]
        .into_iter()
        .map(|p| (format!("ng:{LO}:{p}"), p))
        .collect();
    let specs: Vec<String> = relays.iter().map(|(n, _)| n.clone()).collect();
    let mut front = start_loopback_front(d, &run, &specs);
    calls_with_media(d, &run, &relays, 4);
    front.stop(Duration::from_secs(5));
    rtpe.stop(Duration::from_secs(5));
}

/// TCP ng in a set: an rtpanchor relay listening for ng over TCP (`--listen-tcp-ng`, port
/// 6701; its UDP ng 6700 only for the test's own queries) is the front's only relay,
/// `--media-relay 'ng:127.0.0.1:6701;transport=tcp'`; two calls with RTP go through it.
/// Nothing listens for UDP on 6701, so the calls can only have been set up over TCP. Ports
/// 6700-6799 (the front's ng 6702, HTTP 6703, SIP 6710; SIPp 6720-6760; relay media 6770-6799).
#[test]
fn a_tcp_ng_relay_carries_calls_with_media() {
    const UDP_NG: u16 = 6700;
    const TCP_NG: u16 = 6701;
    let _one = serial();
    let tmp = TempDir::new("relayset-tcp").expect("tempdir");
    let d = tmp.path();
    let tcp = format!("{LO}:{TCP_NG}");
    let mut relay = common::peers::spawn_relay(
        d,
        UDP_NG,
        (6770, 6799),
        &["--no-kernel-forwarding", "--listen-tcp-ng", &tcp],
    );
    let run = MediaRun {
        front_ng: 6702,
        front_http: 6703,
        front_sip: 6710,
        reg: (6720, 6721),
        uas: (6730, 6731, 6740),
        uac: (6750, 6751, 6760),
    };
    let mut front = start_loopback_front(d, &run, &[format!("ng:{tcp};transport=tcp")]);
    calls_with_media(d, &run, &[(format!("ng:{tcp}"), UDP_NG)], 2);
    // No request to it was given up.
    let text = common::scrape::metrics(run.front_http);
    let timeouts = format!("rtpanchor_media_relay_timeouts_total{{relay=\"ng:{tcp}\"}}");
    assert_eq!(common::http::exposed(&text, &timeouts), Some(0.0), "{text}");
    front.stop(Duration::from_secs(5));
    relay.stop(Duration::from_secs(5));
}
