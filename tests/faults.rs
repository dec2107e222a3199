//! Fault injection against the relay binary (issue 21): each fault keeps the relay serving,
//! its effect counted, and everything back to normal after.
//! - the media port range exhausted, then freed;
//! - the descriptor limit reached (`prlimit` on the relay), then freed;
//! - the whole relay stopped (`SIGSTOP`) for 5 s under load, then continued;
//! - an ng client vanishing mid-offer (UDP: never reads its reply; TCP: half a request);
//! - a SIP peer sending half a TCP message and going silent.
//!
//! Ports (block 15500-15999, beside `worker_restart` and `worker_stall`): ports 15700-15725
//! and 15550-15575;
//! descriptors 15730-15769; SIGSTOP 15770-15829; ng client 15830-15869; SIP 15870-15899.

// Real-socket tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::calls::{call, delete, exchange, offer, EXCHANGED};
use common::media::{count_rx, media_sock, pcmu, relay, wait_for};
use common::ng::{client, relayed_and_ports_used, start_relay_in, Relay};
use common::peers::stop_and_wait;
use common::scrape::{metrics, series};
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;

fn result(r: &Owned) -> String {
    r.get("result")
        .and_then(Owned::as_str)
        .unwrap_or("")
        .to_owned()
}

fn ports_used(c: &mut NgClient) -> i64 {
    relayed_and_ports_used(c).1
}

fn sessions(c: &mut NgClient) -> i64 {
    c.list().map_or(-1, |l| l.len() as i64)
}

/// The relay binary with the test's own flags; killed by pid when dropped.
fn spawn_relay(ng_port: u16, args: &[&str]) -> (Relay, u32) {
    let ng = relay(ng_port);
    let child = Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
        .args(["--interface", "127.0.0.1", "--listen-ng", &ng.to_string()])
        .args(["--log-level", "warn"])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start rtpanchor");
    let pid = child.id();
    let r = Relay::new(child, ng);
    if let Err(e) = client(ng).wait_ready(Duration::from_secs(10)) {
        panic!("relay did not answer ping in 10 s: {e}");
    }
    (r, pid)
}

#[test]
fn the_port_range_exhausted_refuses_offers_and_serves_again_once_freed_io_uring() {
    ports_exhausted("uring", 15700, (15710, 15725));
}

#[test]
fn the_port_range_exhausted_refuses_offers_and_serves_again_once_freed_mmsg() {
    ports_exhausted("mmsg", 15550, (15560, 15575));
}

fn ports_exhausted(engine: &str, ng_port: u16, media: (u16, u16)) {
    // 16 ports: 8 RTP/RTCP pairs, two per call.
    let _relay = start_relay_in(ng_port, media, engine, &["--no-kernel-forwarding"]);
    let mut c = client(relay(ng_port));
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..5).map(|_| (media_sock(), media_sock())).collect();
    let calls: Vec<_> = (0..4)
        .map(|i| call(&mut c, &format!("ports-{i}"), &socks[i].0, &socks[i].1))
        .collect();
    assert_eq!(ports_used(&mut c), 16);
    // rtpengine's answer to a client that `supports` it, on which Kamailio fails over.
    let refused = offer(&mut c, "ports-4", &socks[4].0);
    assert_eq!(result(&refused), "load limit", "{refused}");
    assert!(
        refused.to_string().contains("Ran out of ports"),
        "{refused}"
    );
    // Nothing of the refused offer is held; every call still relays.
    assert_eq!((ports_used(&mut c), sessions(&mut c)), (16, 4));
    for (i, (a, b)) in socks.iter().take(4).enumerate() {
        assert_eq!(
            exchange(a, b, calls[i], 1),
            EXCHANGED,
            "call {i} while exhausted"
        );
    }
    assert_eq!(delete(&mut c, "ports-0"), "ok");
    assert!(wait_for(Duration::from_secs(3), || ports_used(&mut c) == 12));
    // The freed pairs are offered again at once. (They used to be refused for up to the
    // worker's 100 ms idle timeout: a port went back to the allocator at the delete, but its
    // socket was closed only after the worker's next sleep, and binding it failed until then.)
    let t0 = Instant::now();
    let mut refused = 0;
    while result(&offer(&mut c, "ports-4", &socks[4].0)) != "ok" {
        refused += 1;
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "{engine}: freed ports still refused after {:?} ({refused} offers)",
            t0.elapsed()
        );
        sleep(Duration::from_millis(2));
    }
    let again = call(&mut c, "ports-4", &socks[4].0, &socks[4].1);
    assert_eq!(
        exchange(&socks[4].0, &socks[4].1, again, 1),
        EXCHANGED,
        "call after"
    );
    assert_eq!((ports_used(&mut c), sessions(&mut c)), (16, 4));
    for i in 1..5 {
        assert_eq!(delete(&mut c, &format!("ports-{i}")), "ok");
    }
    assert!(wait_for(Duration::from_secs(3), || ports_used(&mut c) == 0));
    assert_eq!(sessions(&mut c), 0);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn the_descriptor_limit_reached_refuses_offers_keeps_calls_and_recovers() {
    // The mmsg engine keeps a descriptor per media socket (io_uring moves them into its
    // fixed-file table and closes them), so its limit is reached by calls.
    let (_relay, pid) = spawn_relay(
        15730,
        &[
            "--no-sip",
            "--num-threads",
            "1",
            "--io-engine",
            "mmsg",
            "--no-kernel-forwarding",
            "--port-min",
            "15740",
            "--port-max",
            "15769",
        ],
    );
    let mut c = client(relay(15730));
    let base = open_fds(pid);
    assert!(base > 0);
    // Room for two calls (4 sockets each) and one descriptor to spare.
    let limit = base + 9;
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(st.success());
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..3).map(|_| (media_sock(), media_sock())).collect();
    let c0 = call(&mut c, "fd-0", &socks[0].0, &socks[0].1);
    let c1 = call(&mut c, "fd-1", &socks[1].0, &socks[1].1);
    assert_eq!(open_fds(pid), base + 8);
    // No socket can be made: answered as a full port range (rtpengine's wording, on which
    // Kamailio fails over to another relay).
    let refused = offer(&mut c, "fd-2", &socks[2].0);
    assert_eq!(result(&refused), "load limit", "{refused}");
    assert!(
        refused.to_string().contains("Ran out of ports"),
        "{refused}"
    );
    // The refused offer released the sockets it had opened, and held no call.
    assert_eq!(open_fds(pid), base + 8);
    assert_eq!((ports_used(&mut c), sessions(&mut c)), (8, 2));
    assert_eq!(
        exchange(&socks[0].0, &socks[0].1, c0, 1),
        EXCHANGED,
        "call 0 at the limit"
    );
    assert_eq!(
        exchange(&socks[1].0, &socks[1].1, c1, 1),
        EXCHANGED,
        "call 1 at the limit"
    );
    assert_eq!(delete(&mut c, "fd-0"), "ok");
    assert!(
        wait_for(Duration::from_secs(3), || open_fds(pid) == base + 4),
        "sockets of the deleted call not closed: {} open, {base} at start",
        open_fds(pid)
    );
    let c2 = call(&mut c, "fd-2", &socks[2].0, &socks[2].1);
    assert_eq!(
        exchange(&socks[2].0, &socks[2].1, c2, 1),
        EXCHANGED,
        "call 2 after"
    );
    assert_eq!(
        exchange(&socks[1].0, &socks[1].1, c1, 100),
        EXCHANGED,
        "call 1 after"
    );
    for id in ["fd-1", "fd-2"] {
        assert_eq!(delete(&mut c, id), "ok");
    }
    assert!(wait_for(Duration::from_secs(3), || open_fds(pid) == base));
    assert_eq!((ports_used(&mut c), sessions(&mut c)), (0, 0));
}

#[test]
fn sigstop_for_five_seconds_under_load_then_sigcont_resumes_with_nothing_lost() {
    let (_relay, pid) = spawn_relay(
        15770,
        &[
            "--no-sip",
            "--num-threads",
            "1",
            "--no-kernel-forwarding",
            "--port-min",
            "15780",
            "--port-max",
            "15829",
        ],
    );
    let mut c = client(relay(15770));
    let (a, b) = (media_sock(), media_sock());
    let (to_a, to_b) = call(&mut c, "stop-1", &a, &b);
    assert_eq!(exchange(&a, &b, (to_a, to_b), 1), EXCHANGED, "before");
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig}");
    };
    // Stopped for real (every thread) before the load starts: the signal is asynchronous.
    stop_and_wait(pid);
    // Load while it is stopped: 100 packets each way over 5 s (20 a second), well inside a
    // socket's receive buffer, so the kernel keeps every one for the relay.
    let t0 = Instant::now();
    for seq in 100..200u16 {
        a.send_to(&pcmu(seq, 0xa), to_a).unwrap();
        b.send_to(&pcmu(seq, 0xb), to_b).unwrap();
        sleep(Duration::from_millis(50));
    }
    assert_eq!(
        count_rx(&b, 1, Duration::from_millis(100)),
        0,
        "relayed while stopped"
    );
    assert!(t0.elapsed() >= Duration::from_secs(5));
    signal("-CONT");
    // Everything queued meanwhile is relayed, then the call goes on.
    assert_eq!(
        count_rx(&b, 100, Duration::from_secs(5)),
        100,
        "queued A->B"
    );
    assert_eq!(
        count_rx(&a, 100, Duration::from_secs(5)),
        100,
        "queued B->A"
    );
    assert_eq!(exchange(&a, &b, (to_a, to_b), 300), EXCHANGED, "after");
    // Control is served again, and nothing is left once the calls end.
    let (a2, b2) = (media_sock(), media_sock());
    let second = call(&mut c, "stop-2", &a2, &b2);
    assert_eq!(exchange(&a2, &b2, second, 1), EXCHANGED, "new call after");
    for id in ["stop-1", "stop-2"] {
        assert_eq!(delete(&mut c, id), "ok");
    }
    assert!(wait_for(Duration::from_secs(3), || ports_used(&mut c) == 0));
    assert_eq!(sessions(&mut c), 0);
}

/// An offer request as ng bytes (`cookie SP bencode`).
fn offer_bytes(cookie: &str, id: &str, media: &UdpSocket) -> Vec<u8> {
    let sdp = common::ng::sdp(media.local_addr().unwrap().port(), 1);
    let mut out = format!("{cookie} ").into_bytes();
    Owned::dict()
        .with("command", "offer")
        .with("call-id", id)
        .with("from-tag", "ta")
        .with("sdp", sdp.as_str())
        .encode(&mut out);
    out
}

#[test]
fn an_ng_client_vanishing_mid_offer_leaves_the_relay_serving() {
    let _relay = start_relay_in(
        15830,
        (15840, 15869),
        "uring",
        &[
            "--no-kernel-forwarding",
            "--listen-tcp-ng",
            "127.0.0.1:15831",
        ],
    );
    let mut c = client(relay(15830));
    let a = media_sock();
    // UDP: the offer is sent and the client's socket closed before the reply comes back.
    {
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        gone.send_to(&offer_bytes("vanish1", "ng-udp", &a), relay(15830))
            .unwrap();
    }
    // The offer was carried out; Kamailio's retransmission from another socket (the same
    // cookie) gets the cached reply, and the call is as offered once.
    assert!(wait_for(Duration::from_secs(3), || sessions(&mut c) == 1));
    let retry = UdpSocket::bind("127.0.0.1:0").unwrap();
    retry
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    retry
        .send_to(&offer_bytes("vanish1", "ng-udp", &a), relay(15830))
        .unwrap();
    let mut buf = [0u8; 65536];
    let n = retry.recv(&mut buf).expect("cached reply");
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        reply.starts_with("vanish1 ") && reply.contains("6:result2:ok"),
        "{reply}"
    );
    assert_eq!((sessions(&mut c), ports_used(&mut c)), (1, 4));

    // TCP: half an offer, then the connection is dropped.
    {
        let mut s = TcpStream::connect(("127.0.0.1", 15831)).unwrap();
        let whole = offer_bytes("vanish2", "ng-tcp-half", &a);
        s.write_all(&whole[..whole.len() / 2]).unwrap();
    }
    // TCP: a whole offer, and the connection dropped before the reply is read.
    {
        let mut s = TcpStream::connect(("127.0.0.1", 15831)).unwrap();
        s.write_all(&offer_bytes("vanish3", "ng-tcp-whole", &a))
            .unwrap();
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    // The half offer made nothing; the whole one was carried out; both connections are gone.
    assert!(wait_for(Duration::from_secs(3), || sessions(&mut c) == 2));
    let listed = c.list().unwrap();
    assert!(
        listed.iter().any(|id| id == "ng-tcp-whole")
            && !listed.iter().any(|id| id == "ng-tcp-half"),
        "{listed:?}"
    );
    // Another TCP client is served at once.
    let mut t = NgClient::tcp(relay(15831), Duration::from_secs(2)).unwrap();
    let pong = t.request(&Owned::dict().with("command", "ping")).unwrap();
    assert_eq!(result(&pong), "pong", "{pong}");
    for id in ["ng-udp", "ng-tcp-whole"] {
        assert_eq!(delete(&mut c, id), "ok");
    }
    assert!(wait_for(Duration::from_secs(3), || ports_used(&mut c) == 0));
    assert_eq!(sessions(&mut c), 0);
}

#[test]
fn a_sip_peer_sending_half_a_tcp_message_is_closed_after_the_message_timeout() {
    let (_relay, _pid) = spawn_relay(
        15870,
        &[
            "--listen-sip",
            "127.0.0.1:15871",
            "--listen-http",
            "127.0.0.1:15872",
            "--port-min",
            "15880",
            "--port-max",
            "15899",
        ],
    );
    let mut s = TcpStream::connect(("127.0.0.1", 15871)).unwrap();
    s.write_all(
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:15873;branch=z9hG4bKhalf\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n",
    )
    .unwrap();
    let open = "rtpanchor_sip_connections{transport=\"tcp\"}";
    assert!(
        wait_for(Duration::from_secs(3), || series(&metrics(15872), open)
            == Some(1.0)),
        "{}",
        metrics(15872)
    );
    // Silent from here: the relay closes the connection once the message's time (10 s) is up.
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    let waited = t0.elapsed();
    assert_eq!(n, 0, "got {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(14),
        "closed after {waited:?}"
    );
    let text = metrics(15872);
    assert_eq!(series(&text, open), Some(0.0), "{text}");
    assert_eq!(
        series(
            &text,
            "rtpanchor_sip_rejected_total{reason=\"slow_message\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // A whole message on a new connection is answered.
    let mut s2 = TcpStream::connect(("127.0.0.1", 15871)).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s2.write_all(b"OPTIONS sip:127.0.0.1:15871 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:15873;branch=z9hG4bKwhole\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: half-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
    let n = s2.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("SIP/2.0 200"), "{head}");
}
