//! TLS for end-to-end tests: a test CA (rcgen) that issues certificates for 127.0.0.1 as
//! PEM files, and the blocking pieces of a TLS SIP peer (a rustls server configuration,
//! framed reads of SIP messages).
#![allow(dead_code)]
// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rtpanchor::sip::{frame, Frame};
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
