//! SIP over TLS (RFC 3261 §26.2, RFC 5630): the `--listen-sips` accept loop, the server
//! certificate (a PEM chain and key, re-read on SIGHUP: connections already open keep the
//! one they were made with, new handshakes get the new one), and TLS connections opened
//! to a peer that has none to us (verified against `--sips-ca`; without it none are
//! opened, and a TLS destination is reached only over a connection it made to us).
//!
//! After the handshake a TLS connection is a TCP connection like any other (`tcp`):
//! framed, bounded, registered under `(Transport::Tls, peer)` so responses, in-dialog
//! requests and calls to a phone registered over it are written on it. A handshake that
//! does not complete within `tls_handshake_timeout` is dropped (it holds a connection slot
//! meanwhile, and the slots are bounded).

use std::io::BufReader;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// `--listen-sips` and its files.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Where TLS is accepted (port 0: any free port).
    pub listen: SocketAddr,
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that the peers we connect to must chain to; `None`: we never
    /// open TLS connections.
    pub ca: Option<PathBuf>,
    /// A handshake must be done within this.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> Self {
        TlsSettings {
            listen,
            cert,
            key,
            ca: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The live TLS configuration (swapped whole on reload).
pub(super) struct TlsState {
    settings: TlsSettings,
    acceptor: Mutex<TlsAcceptor>,
    connector: Mutex<Option<TlsConnector>>,
}

/// The `ring` provider: no C build tool-chain beyond cc (aws-lc needs cmake). It lacks the
/// post-quantum key exchange (hence deprecated), which no SIP phone offers today.
#[allow(deprecated)]
pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The server side from the certificate chain and key files.
fn server_config(s: &TlsSettings) -> anyhow::Result<TlsAcceptor> {
    let pem = read_pem(&s.cert)?;
    let chain = CertificateDer::pem_reader_iter(BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", s.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate in it",
        s.cert.display()
    );
    let key_pem = read_pem(&s.key)?;
    let key = PrivateKeyDer::from_pem_reader(BufReader::new(key_pem.as_slice()))
        .map_err(|e| anyhow::anyhow!("{}: no private key: {e}", s.key.display()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable certificate",
                s.cert.display(),
                s.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The client side (for connections we open), verifying peers against `ca`.
fn client_config(s: &TlsSettings) -> anyhow::Result<Option<TlsConnector>> {
    let Some(ca) = &s.ca else {
        return Ok(None);
    };
    let pem = read_pem(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_reader_iter(BufReader::new(pem.as_slice())) {
        let cert = cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: a CA certificate is unusable", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{}: no certificate in it", ca.display());
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(TlsConnector::from(Arc::new(cfg))))
}

impl TlsState {
    pub(super) fn load(s: &TlsSettings) -> anyhow::Result<TlsState> {
        Ok(TlsState {
            acceptor: Mutex::new(server_config(s)?),
            connector: Mutex::new(client_config(s)?),
            settings: s.clone(),
        })
    }

    /// Re-reads the files; on any error nothing changes.
    fn reload(&self) -> anyhow::Result<()> {
        let acceptor = server_config(&self.settings)?;
        let connector = client_config(&self.settings)?;
        *lock(&self.acceptor) = acceptor;
        *lock(&self.connector) = connector;
        Ok(())
    }
}

impl<B: MediaBackend + 'static> SipShared<B> {
    /// Re-reads the TLS certificate, key and CA files (SIGHUP). `Ok(false)`: no TLS.
    pub fn reload_tls(&self) -> anyhow::Result<bool> {
        match &self.tls {
            Some(t) => t.reload().map(|()| true),
            None => Ok(false),
        }
    }
}

/// The TLS server handshake on a connection accepted from `peer`, bounded by the handshake
/// timeout; `None` (logged, counted) when it fails.
pub(super) async fn accept<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let state = shared.tls.as_ref()?;
    let acceptor = lock(&state.acceptor).clone();
    let limit = state.settings.handshake_timeout;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            bump(&shared.stats.tls_handshake_failed);
            tracing::debug!(%peer, error = %e, "SIP TLS handshake failed");
            None
        }
        Err(_) => {
            bump(&shared.stats.tls_handshake_failed);
            tracing::debug!(%peer, "SIP TLS handshake timed out");
            None
        }
    }
}

/// The TLS client handshake on a connection we opened to `to`, verifying its certificate
/// for the IP address (no DNS here). `None` (logged, counted) when it fails or there is no
/// `--sips-ca`.
pub(super) async fn connect<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    stream: TcpStream,
    to: SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let state = shared.tls.as_ref()?;
    let Some(connector) = lock(&state.connector).clone() else {
        tracing::debug!(%to, "no --sips-ca: TLS connections are not opened");
        return None;
    };
    let name = ServerName::IpAddress(to.ip().into());
    let limit = state.settings.handshake_timeout;
    match tokio::time::timeout(limit, connector.connect(name, stream)).await {
        Ok(Ok(tls)) => Some(tls),
        // Ours to fix (a CA missing from --sips-ca, a peer's expired certificate): said
        // at warn, unlike a stranger's failed handshake with us.
        Ok(Err(e)) => {
            bump(&shared.stats.tls_handshake_failed);
            tracing::warn!(%to, error = %e, "SIP TLS handshake (outgoing) failed");
            None
        }
        Err(_) => {
            bump(&shared.stats.tls_handshake_failed);
            tracing::warn!(%to, "SIP TLS handshake (outgoing) timed out");
            None
        }
    }
}
