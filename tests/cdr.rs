//! Call records (issue 15): `--cdr-file` gets one JSON line per ended call, with the figures
//! the test sent. Four calls through the relay binary over ng: one deleted (ng `delete`), one
//! left to the media timeout, one deleted after the file was moved away and SIGHUP sent
//! (logrotate: it lands in a new file), one still up at SIGTERM (ended by the drain timeout).
//! Ports: ng 11122, media 11600-11699, endpoints on ephemeral loopback ports.
//!
//! A fifth call, on a relay with the in-kernel fast path on (as it runs by default), checks
//! the record's per-direction kernel share: ng 16700, media 16710-16799.

#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::calls::{call, delete, send};
use common::kernel::cannot_run;
use common::media::{pcmu, sock};
use common::ng::answering_client;
use common::peers::{send_signal, spawn_relay, Peer};
use common::TempDir;
use rtpanchor::control::bencode::Owned;
use serde_json::Value;

const NG: u16 = 11122;

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn wait_records(path: &Path, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let r = records(path);
        if r.len() >= n || Instant::now() >= deadline {
            return r;
        }
        sleep(Duration::from_millis(50));
    }
}

fn direction<'a>(rec: &'a Value, from: &str) -> &'a Value {
    rec["streams"][0]["directions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["from_tag"] == from)
        .unwrap_or_else(|| panic!("no direction from {from}: {rec}"))
}

/// A relay writing call records to `cdr`, with ng on `ng` and media ports `ports`.
fn start(dir: &Path, cdr: &Path, ng: u16, ports: (u16, u16), extra: &[&str]) -> Peer {
    let cdr = cdr.to_string_lossy();
    let mut args = vec!["--log-level", "info"];
    args.extend_from_slice(extra);
    args.extend(["--cdr-file", &cdr]);
    spawn_relay(dir, ng, ports, &args)
}

#[test]
fn one_record_per_call_with_the_figures_sent() {
    let dir = TempDir::new("rtpanchor-cdr").unwrap();
    let cdr = dir.path().join("calls.json");
    let extra = ["--timeout", "2", "--drain-timeout", "1"];
    let mut relay = start(dir.path(), &cdr, NG, (11600, 11699), &extra);
    let mut c = answering_client(NG, "cdr");

    // 1. Deleted: A sends 50 with seq 10 and 20 missing, B sends 30.
    let (a, b) = (sock(), sock());
    let (to_a, to_b) = call(&mut c, "cdr-1", &a, &b);
    let a_sent = send(&a, to_a, 0xaa01, 50, &[10, 20]);
    let b_sent = send(&b, to_b, 0xbb01, 30, &[]);
    // The workers publish figures every 100 ms (a direction in the kernel once a second).
    sleep(Duration::from_millis(1500));
    assert_eq!(records(&cdr).len(), 0, "no record while the call is up");
    let del = c
        .request(
            &Owned::dict()
                .with("call-id", "cdr-1")
                .with("from-tag", "ta")
                .with("command", "delete"),
        )
        .unwrap();
    assert_eq!(del.get("result").and_then(Owned::as_str), Some("ok"));
    let r = wait_records(&cdr, 1, Duration::from_secs(3));
    assert_eq!(r.len(), 1, "{r:?}");
    let rec = &r[0];
    assert_eq!(rec["call_id"], "cdr-1");
    assert_eq!(rec["end_reason"], "delete");
    assert_eq!(rec["tags"], serde_json::json!(["ta", "tb"]));
    let dur = rec["duration"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&dur), "duration {dur}");
    assert!(rec["end"].as_f64().unwrap() >= rec["start"].as_f64().unwrap());
    let from_a = direction(rec, "ta");
    assert_eq!(from_a["to_tag"], "tb");
    assert_eq!(from_a["packets"], a_sent);
    assert_eq!(from_a["bytes"], a_sent * 172);
    assert_eq!(from_a["packets_lost"], 2);
    assert_eq!(from_a["loss_percent"], 4.0);
    assert_eq!(from_a["ssrc"], 0xaa01);
    assert_eq!(from_a["from_endpoint"], a.local_addr().unwrap().to_string());
    assert_eq!(from_a["relay_port"], to_a.port());
    // MOS of what B heard: a single relay sample of 4 % loss.
    let mos = from_a["mos_average"].as_f64().unwrap();
    assert!((3.5..4.4).contains(&mos), "MOS with 4 % loss: {mos}");
    let from_b = direction(rec, "tb");
    assert_eq!(from_b["packets"], b_sent);
    assert_eq!(from_b["bytes"], b_sent * 172);
    assert_eq!(from_b["packets_lost"], 0);
    assert_eq!(from_b["ssrc"], 0xbb01);
    assert_eq!(from_b["mos_average"], 4.4);

    // 2. Timed out: 10 packets from A, then silence past the 2 s timeout.
    let (a2, b2) = (sock(), sock());
    let (to_a2, _) = call(&mut c, "cdr-2", &a2, &b2);
    let sent2 = send(&a2, to_a2, 0xaa02, 10, &[]);
    let r = wait_records(&cdr, 2, Duration::from_secs(8));
    assert_eq!(r.len(), 2, "timeout record: {r:?}\n{}", relay.log_tail(20));
    assert_eq!(r[1]["call_id"], "cdr-2");
    assert_eq!(r[1]["end_reason"], "timeout");
    assert_eq!(direction(&r[1], "ta")["packets"], sent2);
    assert_eq!(direction(&r[1], "tb")["packets"], 0);

    // 3. logrotate: move the file, SIGHUP, the next record goes to a new file.
    let rotated = dir.path().join("calls.json.1");
    std::fs::rename(&cdr, &rotated).unwrap();
    send_signal(relay.pid(), "HUP");
    sleep(Duration::from_millis(500));
    let (a3, b3) = (sock(), sock());
    let (to_a3, _) = call(&mut c, "cdr-3", &a3, &b3);
    let sent3 = send(&a3, to_a3, 0xaa03, 5, &[]);
    sleep(Duration::from_millis(1500));
    c.request(
        &Owned::dict()
            .with("call-id", "cdr-3")
            .with("from-tag", "ta")
            .with("command", "delete"),
    )
    .unwrap();
    let r = wait_records(&cdr, 1, Duration::from_secs(3));
    assert_eq!(r.len(), 1, "new file after SIGHUP: {r:?}");
    assert_eq!(r[0]["call_id"], "cdr-3");
    assert_eq!(direction(&r[0], "ta")["packets"], sent3);
    assert_eq!(records(&rotated).len(), 2, "the rotated file keeps its two");

    // 4. Up at SIGTERM: the drain waits --drain-timeout (1 s), then ends it (recorded as
    //    `drain`); the relay exits 0.
    let (a4, b4) = (sock(), sock());
    call(&mut c, "cdr-4", &a4, &b4);
    send_signal(relay.pid(), "TERM");
    let status = relay.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        relay.log_tail(20)
    );
    let r = records(&cdr);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[1]["call_id"], "cdr-4");
    assert_eq!(r[1]["end_reason"], "drain");
}

/// Sends `n` packets each way, one pair every 10 ms, reading what the relay delivers as it
/// goes; returns what each side received.
fn talk_paced(
    a: &UdpSocket,
    to_a: SocketAddr,
    b: &UdpSocket,
    to_b: SocketAddr,
    n: u16,
) -> (u64, u64) {
    let mut got = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let mut drain = |got: &mut (u64, u64)| {
        while a.recv_from(&mut buf).is_ok() {
            got.0 += 1;
        }
        while b.recv_from(&mut buf).is_ok() {
            got.1 += 1;
        }
    };
    for seq in 1..=n {
        a.send_to(&pcmu(seq, 0xaa05), to_a).unwrap();
        b.send_to(&pcmu(seq, 0xbb05), to_b).unwrap();
        sleep(Duration::from_millis(10));
        drain(&mut got);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while (got.0 < u64::from(n) || got.1 < u64::from(n)) && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
        drain(&mut got);
    }
    got
}

/// The in-kernel share per direction: with the fast path running here, both directions of a
/// call that talked for 3 s are handed to the kernel once both ends latched, so the record
/// says most of their packets were relayed there (and the first ones in user space). Where
/// the program cannot run (not root, Linux < 6.6, built without clang) the record must say
/// 0 and why instead.
#[test]
fn record_says_how_much_the_kernel_relayed() {
    const NG5: u16 = 16700;
    const N: u16 = 300;
    let dir = TempDir::new("rtpanchor-cdr-kernel").unwrap();
    let cdr = dir.path().join("calls.json");
    let mut relay = start(dir.path(), &cdr, NG5, (16710, 16799), &[]);
    let mut c = answering_client(NG5, "cdr-k");
    let (a, b) = (sock(), sock());
    let (to_a, to_b) = call(&mut c, "cdr-5", &a, &b);
    let (at_a, at_b) = talk_paced(&a, to_a, &b, to_b, N);
    assert_eq!((at_a, at_b), (N.into(), N.into()), "every packet relayed");
    // The kernel's counts are folded into the published figures once a second.
    sleep(Duration::from_millis(1500));
    assert_eq!(delete(&mut c, "cdr-5"), "ok");
    let r = wait_records(&cdr, 1, Duration::from_secs(3));
    assert_eq!(r.len(), 1, "{r:?}");
    for from in ["ta", "tb"] {
        let d = direction(&r[0], from);
        assert_eq!(d["packets"], N, "{d}");
        let kernel = d["kernel_packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("{d}"));
        let share = d["kernel_percent"]
            .as_f64()
            .unwrap_or_else(|| panic!("{d}"));
        eprintln!("from {from}: {kernel} of {N} packets in the kernel ({share} %)");
        match cannot_run() {
            None => {
                assert!(
                    kernel > 0 && kernel < u64::from(N),
                    "from {from}: the kernel path runs here, yet it relayed {kernel} of {N} \
                     (status {}):\n{d}\n{}",
                    d["kernel"],
                    relay.log_tail(20)
                );
                let want = (kernel as f64 * 10_000.0 / f64::from(N)).round() / 100.0;
                assert_eq!(share, want, "{d}");
                assert_eq!(d["kernel"], "in_kernel", "{d}");
            }
            Some(why) => {
                eprintln!("kernel path cannot run here ({why}): the record must say 0");
                assert_eq!((kernel, share), (0, 0.0), "{d}");
                assert_ne!(d["kernel"], "in_kernel", "{d}");
            }
        }
    }
    relay.stop(Duration::from_secs(3));
}
