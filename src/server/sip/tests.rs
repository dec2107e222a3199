//! The SIP transport against real sockets on loopback, with a fake media backend.

use super::*;
use crate::session::fake::FakeBackend;
use crate::session::manager::ManagerConfig;
use crate::session::negotiate::RelayInterface;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LO: [u8; 4] = [127, 0, 0, 1];

/// A server on a free loopback port with a fake media backend; returns its address, its
/// shared state and the stop sender (dropping it stops the server).
async fn start(
    cfg: SipServerConfig,
) -> (SocketAddr, Arc<SipShared<FakeBackend>>, watch::Sender<bool>) {
    let mgr = SessionManager::new(
        FakeBackend::new(30000, 30999).unwrap(),
        ManagerConfig {
            interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
            ..ManagerConfig::default()
        },
        time::now_ns(),
    );
    let mut proxy_cfg = ProxyConfig::new(SocketAddr::from((LO, 0)));
    proxy_cfg.domains = vec!["127.0.0.1".into()];
    let server = SipServer::bind(cfg, proxy_cfg, Arc::new(Mutex::new(mgr)))
        .await
        .unwrap();
    let addr = server.local_addr();
    let shared = server.shared();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(server.run(rx));
    (addr, shared, tx)
}

fn test_cfg() -> SipServerConfig {
    SipServerConfig {
        listen: SocketAddr::from((LO, 0)),
        ..SipServerConfig::default()
    }
}

fn register(transport: &str, me: SocketAddr, n: u32) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {me};rport;branch=z9hG4bK-t{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:u{n}@127.0.0.1>;tag=f{n}\r\nTo: <sip:u{n}@127.0.0.1>\r\n\
         Call-ID: reg-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{n}@{me}>\r\nExpires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

async fn read_some(s: &mut TcpStream, want: &[u8], limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        while !got.windows(want.len()).any(|w| w == want) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    got
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test]
async fn udp_register_and_oversize() {
    let (addr, shared, _stop) = start(SipServerConfig {
        max_message: 2000,
        ..test_cfg()
    })
    .await;
    let sock = UdpSocket::bind(SocketAddr::from((LO, 0))).await.unwrap();
    let me = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    sock.send_to(register("UDP", me, 1).as_bytes(), addr)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Above max_message: 513 from the transport, the proxy never sees it.
    let mut big = register("UDP", me, 2).replace("Content-Length: 0\r\n\r\n", "");
    big.push_str(&format!(
        "X-Pad: {}\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(3000)
    ));
    sock.send_to(big.as_bytes(), addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 513 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Keep-alives are not messages.
    sock.send_to(b"\r\n\r\n", addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = shared.snapshot();
    assert_eq!(
        (s.udp_received, s.too_large, s.keepalives),
        (1, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.udp_sent, 2, "{s:?}");
    assert_eq!(s.panics, 0);
}

#[tokio::test]
async fn tcp_framing_keepalive_and_replies_on_the_same_connection() {
    let (addr, shared, _stop) = start(test_cfg()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let me = c.local_addr().unwrap();
    // Two messages in one write, then one split in three writes with a keep-alive first.
    let two = format!("{}{}", register("TCP", me, 1), register("TCP", me, 2));
    c.write_all(two.as_bytes()).await.unwrap();
    let got = read_some(&mut c, b"reg-2", Duration::from_secs(2)).await;
    assert_eq!(
        count(&got, b"SIP/2.0 200 "),
        2,
        "{}",
        String::from_utf8_lossy(&got)
    );
    c.write_all(b"\r\n\r\n").await.unwrap();
    let pong = read_some(&mut c, b"\r\n", Duration::from_secs(2)).await;
    assert_eq!(pong, b"\r\n");
    let third = register("TCP", me, 3);
    let (a, rest) = third.as_bytes().split_at(10);
    let (b, d) = rest.split_at(rest.len() - 3);
    for part in [a, b, d] {
        c.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = read_some(&mut c, b"reg-3", Duration::from_secs(2)).await;
    assert!(
        got.starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let s = shared.snapshot();
    assert_eq!(
        (s.tcp_received, s.tcp_accepted, s.tcp_open),
        (3, 1, 1),
        "{s:?}"
    );

    // No Content-Length on a stream: 400 saying so, then the connection is closed.
    let broken = register("TCP", me, 4).replace("Content-Length: 0\r\n", "");
    c.write_all(broken.as_bytes()).await.unwrap();
    let got = read_some(&mut c, b"\r\n\r\n", Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request - Missing Content-Length"),
        "{text}"
    );
    let mut rest = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(2), c.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = shared.snapshot();
    assert_eq!((s.framing_errors, s.tcp_open), (1, 0), "{s:?}");
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let (addr, shared, _stop) = start(SipServerConfig {
        tcp_idle: Duration::from_millis(200),
        ..test_cfg()
    })
    .await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = shared.snapshot();
    assert_eq!((s.tcp_idle_closed, s.tcp_open), (1, 0), "{s:?}");
}

#[tokio::test]
async fn a_message_dribbled_slower_than_message_timeout_is_closed() {
    let (addr, shared, _stop) = start(SipServerConfig {
        message_timeout: Duration::from_millis(300),
        ..test_cfg()
    })
    .await;
    // Half a request, then a byte every 100 ms: each read is prompt, the message never ends.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKs\r\n",
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 8];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), c.read(&mut b)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dribbled message held its connection for 3 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    let s = shared.snapshot();
    assert_eq!((s.slow_closed, s.tcp_open), (1, 0), "{s:?}");
}

#[tokio::test]
async fn huge_tcp_message_is_refused() {
    let (addr, shared, _stop) = start(SipServerConfig {
        max_message: 4096,
        ..test_cfg()
    })
    .await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let me = c.local_addr().unwrap();
    let big = register("TCP", me, 1).replace(
        "Content-Length: 0\r\n",
        &format!("X-Pad: {}\r\nContent-Length: 0\r\n", "p".repeat(5000)),
    );
    c.write_all(big.as_bytes()).await.unwrap();
    let got = read_some(&mut c, b"\r\n\r\n", Duration::from_secs(2)).await;
    assert!(
        got.starts_with(b"SIP/2.0 513 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(shared.snapshot().too_large, 1);
}

mod over_tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::path::{Path, PathBuf};

    /// A fresh CA (written as `<tag>-ca.pem`) and a certificate for 127.0.0.1 signed by it
    /// (`cert.pem`, `key.pem`, replacing the previous ones) in `dir`.
    fn issue(dir: &Path, tag: &str) -> PathBuf {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let ca_path = dir.join(format!("{tag}-ca.pem"));
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        ca_path
    }

    fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(crate::server::sip::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    async fn handshake(
        tls: SocketAddr,
        ca: &Path,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(tls).await?;
        let name = ServerName::IpAddress(tls.ip().into());
        connector(ca).connect(name, tcp).await
    }

    #[tokio::test]
    async fn register_keepalive_handshake_timeout_and_certificate_reload() {
        let dir = std::env::temp_dir().join(format!("rtpanchor-sip-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca1 = issue(&dir, "one");
        let mut t = TlsSettings::new(
            SocketAddr::from((LO, 0)),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        t.handshake_timeout = Duration::from_millis(300);
        let cfg = SipServerConfig {
            tls: Some(t),
            ..test_cfg()
        };
        let mgr = SessionManager::new(
            FakeBackend::new(30000, 30999).unwrap(),
            ManagerConfig::default(),
            time::now_ns(),
        );
        let mut proxy_cfg = ProxyConfig::new(SocketAddr::from((LO, 0)));
        proxy_cfg.domains = vec!["127.0.0.1".into()];
        let server = SipServer::bind(cfg, proxy_cfg, Arc::new(Mutex::new(mgr)))
            .await
            .unwrap();
        let tls = server.tls_addr().unwrap();
        let shared = server.shared();
        let (_stop, rx) = watch::channel(false);
        tokio::spawn(server.run(rx));

        // A REGISTER over TLS is answered on the connection; a ping gets its pong.
        let mut c = handshake(tls, &ca1).await.unwrap();
        let me = c.get_ref().0.local_addr().unwrap();
        c.write_all(register("TLS", me, 1).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while !got.windows(6).any(|w| w == b"200 OK") {
                match c.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(
            got.windows(6).any(|w| w == b"200 OK"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        c.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut pong))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&pong, b"\r\n");
        let s = shared.snapshot();
        assert_eq!(
            (s.tls_received, s.tls_open, s.tls_accepted),
            (1, 1, 1),
            "{s:?}"
        );

        // A connection that never says hello is dropped at the handshake timeout.
        let mut silent = TcpStream::connect(tls).await.unwrap();
        let mut b = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(shared.snapshot().tls_handshake_failed, 1);

        // Reload: a new certificate from another CA serves new handshakes.
        let ca2 = issue(&dir, "two");
        assert!(shared.reload_tls().unwrap());
        assert!(handshake(tls, &ca1).await.is_err(), "old CA still accepted");
        assert!(handshake(tls, &ca2).await.is_ok());
        // A broken file is refused and the running certificate kept.
        std::fs::write(dir.join("key.pem"), "not a key").unwrap();
        assert!(shared.reload_tls().is_err());
        assert!(handshake(tls, &ca2).await.is_ok());
        // The first connection lives on through the reloads.
        c.write_all(b"\r\n\r\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut pong))
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn keepalive_and_blank_line() {
    assert!(is_keepalive(b"\r\n\r\n"));
    assert!(!is_keepalive(b""));
    assert!(!is_keepalive(b"\r\nX"));
    assert_eq!(find_blank_line(b"ab\r\n\r\ncd", 0), Some(2));
    assert_eq!(find_blank_line(b"ab\r\n\r\ncd", 3), None);
    assert_eq!(find_blank_line(b"ab", 10), None);
}

#[test]
fn transport_rejects_only_requests_with_via() {
    let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\n\r\n";
    let r = transport_reject(req, ParseError::MissingContentLength).unwrap();
    let text = String::from_utf8(r).unwrap();
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request - Missing Content-Length"),
        "{text}"
    );
    assert!(text.contains("Via: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKx\r\n"));
    let r = transport_reject(req, ParseError::TooLarge).unwrap();
    assert!(r.starts_with(b"SIP/2.0 513 "));
    assert!(transport_reject(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", ParseError::TooLarge).is_none());
    assert!(transport_reject(b"garbage\r\n\r\n", ParseError::BadRequestLine).is_none());
    assert!(transport_reject(b"", ParseError::Empty).is_none());
}
