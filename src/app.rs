//! Wiring: the data plane, the session manager and the control servers, started together and
//! stopped together on SIGINT/SIGTERM.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::server::ng::{serve_ng, NgServerConfig};
use crate::server::sip::{SipServer, SipServerConfig, SipShared};
use crate::session::manager::{ManagerConfig, SessionManager};
use crate::session::negotiate::RelayInterface;
use crate::sip::auth::{AuthConfig, Authenticator, UserFile};
use crate::sip::flood::{FloodConfig, FloodGuard};
use crate::sip::proxy::ProxyConfig;
use crate::time::{self, NANOS_PER_SEC};

pub fn run(config: Config) -> anyhow::Result<()> {
    let dataplane = DataPlane::start(&config)?;
    tracing::info!(
        interface = %config.interface.local,
        advertised = %config.interface.advertised,
        ports = format!("{}-{}", config.port_min, config.port_max),
        threads = config.num_threads,
        engine = dataplane.engine().name(),
        "rtpanchor media relay started"
    );
    let now = time::now_ns();
    let unix_at_zero = time::unix_now().saturating_sub(Duration::from_nanos(now));
    let advertised = (config.interface.advertised != config.interface.local)
        .then_some(config.interface.advertised);
    let manager = SessionManager::new(
        dataplane,
        ManagerConfig {
            interfaces: vec![RelayInterface {
                name: "default".into(),
                local: config.interface.local,
                advertised,
            }],
            max_sessions: config.max_sessions,
            timeout_ns: config.timeout_secs.saturating_mul(NANOS_PER_SEC),
            delete_delay_ns: 0,
            port_min: config.port_min,
            port_max: config.port_max,
            unix_at_zero,
        },
        now,
    );
    let manager = Arc::new(Mutex::new(manager));
    let ng = NgServerConfig {
        listen_udp: config.listen_ng,
        listen_tcp: config.listen_tcp_ng,
        allow: config.ng_allow.clone(),
        ..NgServerConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("rtpanchor-ctl")
        .on_thread_start(crate::dataplane::prioritize_control_thread)
        .build()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (sip, sip_shared) = match start_sip(&config, manager.clone(), stop_rx.clone()).await? {
            Some((task, shared)) => (task, Some(shared)),
            // No SIP: a task that never ends keeps the select below uniform.
            None => (
                tokio::spawn(std::future::pending::<anyhow::Result<()>>()),
                None,
            ),
        };
        let reload = tokio::spawn(reload_on_sighup(config.clone(), sip_shared));
        let server = tokio::spawn(serve_ng(ng, manager.clone(), stop_rx));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
            r = server => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("ng server task failed: {e}")),
            },
            r = sip => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("SIP server task failed: {e}")),
            },
        };
        tracing::info!("shutting down");
        reload.abort();
        let _ = stop_tx.send(true);
        outcome
    })
}

/// Binds the built-in SIP proxy (unless `--no-sip`) and starts it. The default listener is
/// best-effort (a taken port is a warning); an explicit `--listen-sip` must bind.
#[allow(clippy::type_complexity)]
async fn start_sip(
    config: &Config,
    manager: Arc<Mutex<SessionManager<DataPlane>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<
    Option<(
        tokio::task::JoinHandle<anyhow::Result<()>>,
        Arc<SipShared<DataPlane>>,
    )>,
> {
    let Some(listen) = config.listen_sip else {
        return Ok(None);
    };
    // The address the proxy writes into Via and Record-Route: a wildcard listener is known
    // to peers by the advertised media address.
    let local = if listen.ip().is_unspecified() {
        std::net::SocketAddr::new(config.interface.advertised, listen.port())
    } else {
        listen
    };
    let mut proxy = ProxyConfig::new(local);
    proxy.domains = config.domains.clone();
    proxy.outbound = config.sip_outbound;
    // Branch and tag hashes must not be predictable from outside: a per-process secret.
    proxy.secret = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (std::process::id(), time::now_ns()),
    );
    let cfg = SipServerConfig {
        listen,
        max_message: config.sip_max_message,
        ..SipServerConfig::default()
    };
    let auth = sip_authenticator(config)?;
    match SipServer::bind(cfg, proxy, manager).await {
        Ok(server) => {
            tracing::info!(
                listen = %server.local_addr(),
                domains = ?config.domains,
                outbound = ?config.sip_outbound,
                authentication = auth.is_some(),
                "SIP proxy listening (UDP and TCP)"
            );
            let shared = server.shared();
            shared.set_auth(auth);
            // A public server gets scanned within minutes: flood control is on whenever
            // SIP is served beyond loopback or passwords are checked.
            if config.sip_users.is_some() || !listen.ip().is_loopback() {
                let flood = FloodConfig {
                    max_requests: config.sip_max_rate,
                    max_failed_auths: config.sip_max_auth_failures,
                    ban_ns: config.sip_ban_secs.saturating_mul(NANOS_PER_SEC),
                    ..FloodConfig::default()
                };
                shared.set_flood(Some(FloodGuard::new(flood)), config.sip_trusted.clone());
            }
            Ok(Some((tokio::spawn(server.run(stop)), shared)))
        }
        Err(e) if !config.listen_sip_explicit => {
            tracing::warn!(
                error = format!("{e:#}"),
                "built-in SIP proxy not started (default --listen-sip {listen} unavailable); \
                 give --listen-sip or --no-sip"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The digest authenticator for `--sip-users` (`None` without it).
fn sip_authenticator(config: &Config) -> anyhow::Result<Option<Authenticator>> {
    let Some(path) = &config.sip_users else {
        return Ok(None);
    };
    let users = UserFile::load(path).map_err(|e| anyhow::anyhow!("--sip-users {e}"))?;
    tracing::info!(users = users.len(), file = %path.display(), "SIP users loaded");
    let cfg = AuthConfig {
        algorithms: config.sip_auth_algorithms.clone(),
        trusted: config.sip_trusted.clone(),
        ..AuthConfig::default()
    };
    Ok(Some(Authenticator::new(cfg, random_secret(), users)))
}

/// 32 bytes from the kernel's random source, for keying nonces. Without it (no /dev/urandom)
/// the start fails: predictable nonces would let captured credentials be replayed.
fn random_secret() -> [u8; 32] {
    use std::io::Read;
    let mut out = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut out).is_ok() {
            return out;
        }
    }
    // Fallback: std's per-process random hasher keys, hashed with time and pid.
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let h = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (i, std::process::id(), time::now_ns()),
        );
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// On SIGHUP: re-reads `--sip-users` (a bad file is logged and the old users kept).
/// Registrations, dialogs and nonces in use are untouched.
async fn reload_on_sighup(config: Config, sip: Option<Arc<SipShared<DataPlane>>>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        reload_sip_users(&config, sip.as_deref());
    }
}

/// Re-reads `--sip-users` into the running proxy; a small function so other SIGHUP work
/// can call it too.
pub fn reload_sip_users(config: &Config, sip: Option<&SipShared<DataPlane>>) {
    let (Some(path), Some(sip)) = (&config.sip_users, sip) else {
        return;
    };
    match UserFile::load(path) {
        Ok(users) => {
            let n = users.len();
            if sip.reload_users(users) {
                tracing::info!(users = n, file = %path.display(), "SIP users reloaded");
            }
        }
        Err(e) => tracing::error!(error = %e, "SIP users not reloaded; keeping the old ones"),
    }
}
