//! The ng server over real loopback sockets, with the FakeBackend behind it: ping, the reply
//! cache (a retransmitted cookie gets identical bytes and no second allocation), garbage
//! handling, TCP framing, shutdown. Every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtpanchor::server::ng::{NgServer, NgServerConfig};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::manager::{ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(3);

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

fn bstr(s: &str) -> String {
    format!("{}:{}", s.len(), s)
}

fn offer_body(call: &str) -> String {
    format!(
        "d7:command5:offer7:call-id{}8:from-tag1:a3:sdp{}e",
        bstr(call),
        bstr(OFFER)
    )
}

struct Running {
    manager: Arc<Mutex<SessionManager<FakeBackend>>>,
    udp: std::net::SocketAddr,
    tcp: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    shared: Arc<rtpanchor::server::ng::NgShared<FakeBackend>>,
}

async fn start() -> Running {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    let backend = FakeBackend::new(40000, 40999).unwrap();
    let manager = Arc::new(Mutex::new(SessionManager::new(backend, cfg, 1)));
    let scfg = NgServerConfig {
        listen_udp: "127.0.0.1:0".parse().unwrap(),
        listen_tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..NgServerConfig::default()
    };
    let server = NgServer::bind(&scfg, manager.clone()).await.unwrap();
    let udp = server.local_udp_addr().unwrap();
    let tcp = server.local_tcp_addr().unwrap().unwrap();
    let shared = server.shared();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server.run(rx));
    Running {
        manager,
        udp,
        tcp,
        stop,
        task,
        shared,
    }
}

async fn client(server: std::net::SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(server).await.unwrap();
    s
}

async fn ask(sock: &UdpSocket, msg: &[u8]) -> Vec<u8> {
    sock.send(msg).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("reply in time")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn ping_retransmission_garbage_and_shutdown() {
    let r = start().await;
    let c = client(r.udp).await;
    assert_eq!(
        ask(&c, b"f1e73f40_1 d7:command4:pinge").await,
        b"f1e73f40_1 d6:result4:ponge"
    );

    // The same offer cookie twice: identical bytes, one allocation.
    let msg = format!("offer_cookie_1 {}", offer_body("call-1"));
    let first = ask(&c, msg.as_bytes()).await;
    let second = ask(&c, msg.as_bytes()).await;
    assert_eq!(first, second);
    assert!(
        first.starts_with(b"offer_cookie_1 d3:sdp"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert_eq!(r.manager.lock().unwrap().backend().opens, 1);
    // A new cookie for the same offer (another proxy worker) is idempotent too.
    let third = ask(
        &c,
        format!("offer_cookie_2 {}", offer_body("call-1")).as_bytes(),
    )
    .await;
    assert_eq!(&third[14..], &first[14..]);
    assert_eq!(r.manager.lock().unwrap().backend().opens, 1);

    // Garbage burst: bodies that are not ng get error replies; no-cookie datagrams get none.
    let garbage: [&[u8]; 6] = [b"xx", b"d", b"de", b"{", b"i5e", b"d7:command5:offere"];
    for round in 0..20 {
        for (k, g) in garbage.iter().enumerate() {
            let mut m = format!("g{round}_{k} ").into_bytes();
            m.extend_from_slice(g);
            let reply = ask(&c, &m).await;
            assert!(reply.starts_with(format!("g{round}_{k} ").as_bytes()));
            assert!(
                reply.windows(5).any(|w| w == b"error"),
                "{}",
                String::from_utf8_lossy(&reply)
            );
        }
        c.send(b"no-cookie-here").await.unwrap();
        c.send(b" leading-space").await.unwrap();
    }
    assert_eq!(
        ask(&c, b"p2 d7:command4:pinge").await,
        b"p2 d6:result4:ponge"
    );
    let st = r.shared.stats.snapshot();
    assert_eq!(st.no_cookie, 40);
    assert_eq!(st.duplicates, 1);
    assert_eq!(st.panics, 0);
    assert!(st.errors >= 120);

    r.stop.send(true).unwrap();
    timeout(WAIT, r.task)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tcp_messages_are_framed_by_bencode() {
    let r = start().await;
    let mut s = timeout(WAIT, TcpStream::connect(r.tcp))
        .await
        .unwrap()
        .unwrap();
    // Two messages in one write, then one split across writes.
    s.write_all(b"t1 d7:command4:pinge\nt2 d7:command4:pinge")
        .await
        .unwrap();
    let body = offer_body("tcp-call");
    let msg = format!("t3 {body}");
    let (a, b) = msg.as_bytes().split_at(40);
    s.write_all(a).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(9).any(|w| w == b"6:result2") {
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("t1 d6:result4:ponget2 d6:result4:ponget3 d3:sdp"),
        "{text}"
    );
    assert!(text.contains("m=audio 40002 RTP/AVP 0"), "{text}");

    // A JSON body cannot be framed on TCP: error reply, connection closed.
    s.write_all(b"t4 {\"command\":\"ping\"}").await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("t4 d6:result5:error"), "{rest}");
    r.stop.send(true).unwrap();
    timeout(WAIT, r.task).await.unwrap().unwrap().unwrap();
}
