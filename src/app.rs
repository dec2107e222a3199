//! Wiring: the data plane, the session manager and the control servers, started together and
//! stopped together on SIGINT/SIGTERM.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::server::http::HttpServer;
use crate::server::ng::{NgServer, NgServerConfig};
use crate::server::sip::{SipServer, SipServerConfig};
use crate::session::manager::{ManagerConfig, SessionManager};
use crate::session::negotiate::RelayInterface;
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
        let ng_server = NgServer::bind(&ng, manager.clone()).await?;
        tracing::info!(udp = %ng.listen_udp, tcp = ?ng.listen_tcp, "ng control listening");
        let ng_shared = ng_server.shared();
        // Set by a drain: `/health` then answers 503.
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(addr) = config.listen_http {
            let sources = crate::ops::OpsSources {
                manager: manager.clone(),
                ng: ng_shared.clone(),
                sip: sip_shared,
                kernel_disabled: !config.kernel_forwarding,
                draining: draining.clone(),
                ng_addr: config.listen_ng,
                samples: Vec::new(),
            };
            let http = HttpServer::bind(addr, crate::ops::handlers(sources)).await?;
            tracing::info!(listen = %addr, "HTTP /metrics and /health listening");
            tokio::spawn(http.run(stop_rx.clone()));
        }
        let server = tokio::spawn(ng_server.run(stop_rx));
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
        let _ = stop_tx.send(true);
        outcome
    })
}

/// The SIP server's task and its shared state (counters for `/metrics`).
type SipStarted = (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<crate::server::sip::SipShared<DataPlane>>,
);

/// Binds the built-in SIP proxy (unless `--no-sip`) and starts it. The default listener is
/// best-effort (a taken port is a warning); an explicit `--listen-sip` must bind.
async fn start_sip(
    config: &Config,
    manager: Arc<Mutex<SessionManager<DataPlane>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<SipStarted>> {
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
    match SipServer::bind(cfg, proxy, manager).await {
        Ok(server) => {
            tracing::info!(
                listen = %server.local_addr(),
                domains = ?config.domains,
                outbound = ?config.sip_outbound,
                "SIP proxy listening (UDP and TCP)"
            );
            let shared = server.shared();
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
