//! TLS for end-to-end tests: a test CA (rcgen) that issues certificates for 127.0.0.1 as
//! PEM files, and the blocking pieces of a TLS SIP peer (a rustls server configuration,
//! framed reads of SIP messages).
#![allow(dead_code)]
// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rtpanchor::sip::{frame, Frame, Message};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA's certificate (PEM) to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write CA certificate");
    }

    /// A certificate for 127.0.0.1 named `name`, signed by this CA: `dir/NAME.pem` (the
    /// certificate) and `dir/NAME.key` (its key), returned in that order.
    pub fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &self.issuer).expect("certificate");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write certificate");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

/// A test CA written to `dir/ca.pem` with the relay's certificate issued by it
/// (`dir/relay.pem`, `dir/relay.key`).
pub fn relay_ca(dir: &Path) -> TestCa {
    let ca = TestCa::new("rtpanchor test CA");
    ca.write(&dir.join("ca.pem"));
    ca.issue(dir, "relay");
    ca
}

/// The relay's TLS flags for the files of [`relay_ca`]: `--listen-sips` on 127.0.0.1:`port`,
/// its certificate and key, and that CA as `--sips-ca`.
pub fn relay_tls_args<'c>(cmd: &'c mut Command, dir: &Path, port: u16) -> &'c mut Command {
    cmd.args(["--listen-sips", &format!("127.0.0.1:{port}")])
        .arg("--sips-cert")
        .arg(dir.join("relay.pem"))
        .arg("--sips-key")
        .arg(dir.join("relay.key"))
        .arg("--sips-ca")
        .arg(dir.join("ca.pem"))
}

/// A rustls server configuration from a certificate and key file (ring, as the relay).
#[allow(deprecated)]
pub fn server_config(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    Arc::new(cfg)
}

/// A TLS connection to 127.0.0.1:`port` whose certificate is verified against the CA in
/// `ca` (PEM), its handshake done; reads time out after 5 s.
#[allow(deprecated)]
pub fn connect(
    ca: &Path,
    port: u16,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// An OPTIONS to the relay over a new TLS connection to 127.0.0.1:`port` (verified with
/// `ca`): the response's first line, or what went wrong.
pub fn options_over_tls(ca: &Path, port: u16) -> Result<String, String> {
    use std::io::Write;
    let mut tls = connect(ca, port)?;
    let me = tls.sock.local_addr().map_err(|e| e.to_string())?;
    let req = format!(
        "OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {me};branch=z9hG4bK-tls-options-{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: tls-options-{}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        me.port(),
        me.port()
    );
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let msg = read_message(&mut tls, &mut Vec::new())?;
    let text = String::from_utf8_lossy(&msg);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// The next SIP message from a stream (keep-alives skipped), with `buf` holding what was
/// read past it; `Err` with what went wrong when the stream ends, fails or times out (the
/// caller sets the stream's read timeout) first.
pub fn read_message(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        match frame(buf) {
            Ok(Frame::KeepAlive(n)) => {
                buf.drain(..n);
                continue;
            }
            Ok(Frame::Message { len }) => return Ok(buf.drain(..len).collect()),
            Ok(Frame::Incomplete) => {}
            Err(e) => return Err(format!("unframable: {e:?}")),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A byte stream a callee reads and writes (TCP, or TLS over it).
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A SIP callee on `listener`: takes one connection (within 10 s), does the server
/// handshake with `tls` (plain TCP without), and answers what comes (200 with `answer` to
/// an INVITE, 200 to a BYE) until the BYE or the connection's end. Returns what it read, or
/// how it failed before reading anything (the handshake's error, say).
pub fn sip_callee(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    uas: super::sip::Uas,
    answer: Vec<u8>,
) -> JoinHandle<Result<Vec<Vec<u8>>, String>> {
    thread::spawn(move || {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let tcp = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("no connection: {e}")),
            }
        };
        tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let conn = rustls::ServerConnection::new(cfg).map_err(|e| e.to_string())?;
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| format!("handshake: {e}"))?;
                }
                Box::new(tls)
            }
        };
        let mut got = Vec::new();
        let mut buf = Vec::new();
        loop {
            let m = match read_message(&mut stream, &mut buf) {
                Ok(m) => m,
                Err(e) if got.is_empty() => return Err(e),
                Err(_) => break,
            };
            let reply = match Message::parse(&m).ok().and_then(|r| r.method()) {
                Some("INVITE") => Some(uas.respond_sdp(&m, 200, &answer)),
                Some("BYE") => Some(uas.respond(&m, 200)),
                _ => None,
            };
            let bye = m.starts_with(b"BYE ");
            got.push(m);
            if let Some(r) = reply {
                stream.write_all(&r).map_err(|e| e.to_string())?;
                stream.flush().map_err(|e| e.to_string())?;
            }
            if bye {
                break;
            }
        }
        Ok(got)
    })
}

/// Alice's call through the relay at `relay_sip` to a [`sip_callee`]: the INVITE with
/// `offer`, a 200 (the test fails without one, showing `relay`'s log), ACK, BYE and its
/// 200. Returns what the callee read.
pub fn call_and_hang_up(
    alice: &std::net::UdpSocket,
    uac: &mut super::sip::Uac,
    relay_sip: std::net::SocketAddr,
    offer: &[u8],
    relay: &super::peers::Peer,
    callee: JoinHandle<Result<Vec<Vec<u8>>, String>>,
) -> Vec<Vec<u8>> {
    use super::sip::{final_answer, status_of, until_final};
    alice.send_to(&uac.invite(Some(offer)), relay_sip).unwrap();
    let (status, ok) = final_answer(alice, relay);
    assert_eq!(
        status,
        200,
        "{}\nrelay:\n{}",
        String::from_utf8_lossy(&ok),
        relay.log_tail(30)
    );
    uac.learn(&ok);
    alice.send_to(&uac.ack(None), relay_sip).unwrap();
    alice.send_to(&uac.bye(), relay_sip).unwrap();
    let bye_ok = until_final(alice);
    assert_eq!(bye_ok.last().and_then(|m| status_of(m)), Some(200));
    callee
        .join()
        .expect("callee thread")
        .unwrap_or_else(|e| panic!("callee: {e}\nrelay:\n{}", relay.log_tail(30)))
}
