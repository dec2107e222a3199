//! The client against scripted peers on 127.0.0.1 (ephemeral ports only).

use std::net::{TcpListener, UdpSocket};
use std::thread;

use super::*;
use crate::control::bencode::{decode, Value};
use crate::control::client::stream_message;

/// `(cookie, n)` of a request `<cookie> d…1:ni<n>e…e`.
fn cookie_and_n(datagram: &[u8]) -> (Vec<u8>, i64) {
    let sp = datagram.iter().position(|&b| b == b' ').unwrap();
    let body = decode(&datagram[sp + 1..]).unwrap();
    let n = body.get("n").and_then(Value::as_int).unwrap_or(-1);
    (datagram[..sp].to_vec(), n)
}

fn reply(cookie: &[u8], n: i64) -> Vec<u8> {
    let mut out = cookie.to_vec();
    out.push(b' ');
    Owned::dict()
        .with("n", n)
        .with("result", "pong")
        .encode(&mut out);
    out
}

fn server() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[test]
fn a_lost_request_is_sent_again_with_the_same_cookie() {
    let (srv, at) = server();
    let peer = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (n1, _) = srv.recv_from(&mut buf).unwrap(); // "lost"
        let first = buf[..n1].to_vec();
        let (n2, from) = srv.recv_from(&mut buf).unwrap();
        assert_eq!(
            &buf[..n2],
            &first[..],
            "a retransmission is the same datagram"
        );
        let (cookie, _) = cookie_and_n(&first);
        srv.send_to(&reply(&cookie, 0), from).unwrap();
    });
    let mut c = NgClient::udp(at)
        .unwrap()
        .with_policy(RetryPolicy::millis(50, 3));
    c.ping().unwrap();
    peer.join().unwrap();
}

#[test]
fn pipelined_replies_are_matched_in_any_order() {
    let (srv, at) = server();
    let peer = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        let mut from = None;
        while got.len() < 5 {
            let (n, f) = srv.recv_from(&mut buf).unwrap();
            got.push(cookie_and_n(&buf[..n]));
            from = Some(f);
        }
        // A stranger's cookie first, then every reply, last request first.
        let from = from.unwrap();
        srv.send_to(b"nobody_1 d6:result4:ponge", from).unwrap();
        for (cookie, n) in got.iter().rev() {
            srv.send_to(&reply(cookie, *n), from).unwrap();
        }
    });
    let mut c = NgClient::udp(at).unwrap().with_cookie_prefix("pipe");
    let reqs: Vec<Owned> = (0..5)
        .map(|n| Owned::dict().with("command", "ping").with("n", n as i64))
        .collect();
    let replies = c.request_many(&reqs, 5, &|| false);
    let ns: Vec<i64> = replies
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .get("n")
                .and_then(Owned::as_int)
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [0, 1, 2, 3, 4]);
    peer.join().unwrap();
}

#[test]
fn silence_and_refusal_end_in_no_reply() {
    let (_mute, at) = server();
    let mut c = NgClient::udp(at)
        .unwrap()
        .with_policy(RetryPolicy::millis(30, 2));
    let t0 = time::now_ns();
    match c.command("ping") {
        Err(NgClientError::NoReply {
            attempts: 2,
            refused: false,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(time::now_ns() - t0 >= 60 * NANOS_PER_MS);

    let closed = server().1; // dropped at once: nothing listens there
    let mut c = NgClient::udp(closed)
        .unwrap()
        .with_policy(RetryPolicy::millis(50, 2));
    let e = c.ping().unwrap_err();
    assert!(
        matches!(e, NgClientError::NoReply { refused: true, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("refused"), "{e}");
}

#[test]
fn stop_and_bad_cookies_fail_alone() {
    let (_mute, at) = server();
    let mut c = NgClient::udp(at).unwrap();
    let reqs = vec![Owned::dict().with("command", "ping"); 3];
    let r = c.request_many(&reqs, 2, &|| true);
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|r| matches!(r, Err(NgClientError::Stopped))));
    assert!(matches!(
        c.request_with_cookie("a b", &reqs[0]),
        Err(NgClientError::Cookie(_))
    ));
}

#[test]
fn tcp_messages_are_cut_from_the_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut inbox = Vec::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 2 {
            let n = s.read(&mut buf).unwrap();
            inbox.extend_from_slice(&buf[..n]);
            while let Some(m) = stream_message(&inbox).unwrap() {
                got.push(cookie_and_n(&inbox[m.clone()]));
                inbox.drain(..m.end);
            }
        }
        // Both replies in one write, the second first, split by whitespace.
        let mut out = reply(&got[1].0, got[1].1);
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&reply(&got[0].0, got[0].1));
        s.write_all(&out).unwrap();
        // Then the connection ends.
    });
    let mut c = NgClient::tcp(at, Duration::from_secs(2)).unwrap();
    c.set_policy(RetryPolicy::millis(2000, 5));
    assert_eq!(c.policy().attempts, 1, "a stream is not retransmitted on");
    let reqs: Vec<Owned> = (7..9)
        .map(|n| Owned::dict().with("command", "ping").with("n", n as i64))
        .collect();
    let ns: Vec<Option<i64>> = c
        .request_many(&reqs, 2, &|| false)
        .into_iter()
        .map(|r| r.unwrap().get("n").and_then(Owned::as_int))
        .collect();
    assert_eq!(ns, [Some(7), Some(8)]);
    peer.join().unwrap();
    assert!(matches!(c.ping(), Err(NgClientError::Closed)));
}

#[test]
fn speaks_with_the_relays_own_server_over_udp_and_tcp() {
    use crate::server::ng::{NgServer, NgServerConfig};
    use crate::session::fake::FakeBackend;
    use crate::session::manager::{ManagerConfig, SessionManager};
    use crate::session::negotiate::RelayInterface;
    use std::sync::{Arc, Mutex};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    let manager = SessionManager::new(FakeBackend::new(40000, 40999).unwrap(), cfg, 1);
    let scfg = NgServerConfig {
        listen_udp: "127.0.0.1:0".parse().unwrap(),
        listen_tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..NgServerConfig::default()
    };
    let server = rt
        .block_on(NgServer::bind(&scfg, Arc::new(Mutex::new(manager))))
        .unwrap();
    let udp = server.local_udp_addr().unwrap();
    let tcp = server.local_tcp_addr().unwrap().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(server.run(rx));

    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 6000 RTP/AVP 0\r\n";
    let offer = Owned::dict()
        .with("command", "offer")
        .with("call-id", "c1")
        .with("from-tag", "a")
        .with("sdp", sdp);
    let mut u = NgClient::udp(udp).unwrap();
    u.wait_ready(Duration::from_secs(3)).unwrap();
    let first = u.request_with_cookie("same", &offer).unwrap();
    assert_eq!(
        first.get("result").and_then(Owned::as_str),
        Some("ok"),
        "{first}"
    );
    // The same cookie again: the server's cached reply.
    assert_eq!(u.request_with_cookie("same", &offer).unwrap(), first);
    let mut t = NgClient::tcp(tcp, Duration::from_secs(3)).unwrap();
    t.ping().unwrap();
    assert_eq!(t.list().unwrap(), ["c1"]);
    let replies = t.request_many(
        &[offer.clone(), Owned::dict().with("command", "ping")],
        2,
        &|| false,
    );
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");

    stop.send(true).unwrap();
    rt.block_on(task).unwrap().unwrap();
}
