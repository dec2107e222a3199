//! Wiring: the data plane, the session manager and the control servers, started together and
//! stopped together on SIGINT/SIGTERM.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::server::ng::{serve_ng, NgServerConfig};
use crate::server::sip::{SipServer, SipServerConfig};
use crate::session::manager::{ManagerConfig, SessionManager};
use crate::session::negotiate::RelayInterface;
use crate::sip::proxy::ProxyConfig;
use crate::store::locations::LocationPersistence;
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
    let mut manager = manager;
    let (locations, store) = match &config.redis {
        Some(url) => {
            let (l, s) = open_store(url, &mut manager, unix_at_zero)?;
            (Some(l), Some(s))
        }
        None => (None, None),
    };
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
        let sip = match start_sip(&config, manager.clone(), stop_rx.clone(), locations).await? {
            Some(task) => task,
            // No SIP: a task that never ends keeps the select below uniform.
            None => tokio::spawn(std::future::pending::<anyhow::Result<()>>()),
        };
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
        let _ = stop_tx.send(true);
        // Calls stay in the store (a restart restores them); what changed last goes out now.
        if let Some(store) = &store {
            manager
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush_changes();
            if !store.wait_written(Duration::from_secs(2)) {
                tracing::warn!("state store: the last changes were not all written");
            }
        }
        outcome
    })
}

/// Further tries for stored calls whose ports are still taken at start, and the pause
/// between them (2 s in all).
const RESTORE_RETRIES: usize = 10;
const RESTORE_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Connects the state store, restores the calls it holds (a call whose ports cannot be
/// bound is reported and removed from the store), and sends later changes to it. Returns
/// what the registrar needs to do the same with registrations.
fn open_store(
    url: &str,
    manager: &mut SessionManager<DataPlane>,
    unix_at_zero: Duration,
) -> anyhow::Result<(LocationPersistence, Arc<crate::store::redis::RedisStore>)> {
    let (store, loaded) = crate::store::redis::RedisStore::open(url)?;
    let store = Arc::new(store);
    let (mut restored, mut dropped) = (0usize, 0usize);
    let mut pending: Vec<&(String, String, Option<String>)> = loaded.calls.iter().collect();
    // A crashed relay's sockets close a moment after it exits (io_uring tears its rings down
    // asynchronously): calls whose ports are still taken are tried again for a short while.
    for attempt in 0..=RESTORE_RETRIES {
        let last = attempt == RESTORE_RETRIES;
        let mut retry = Vec::new();
        for item in pending {
            let (call_id, record, stats) = item;
            let now = time::now_ns();
            let now_unix = u64::try_from(time::unix_now().as_nanos()).unwrap_or(u64::MAX);
            match manager.restore(record, stats.as_deref(), now, now_unix) {
                Ok(_) => restored += 1,
                Err(crate::session::manager::RestoreError::Ports(..)) if !last => retry.push(item),
                Err(e) => {
                    dropped += 1;
                    tracing::warn!(call_id, error = %e, "stored call not restored; dropped");
                    let _ = crate::store::ChangeSink::offer(
                        &*store,
                        crate::store::Change::DeleteCall {
                            call_id: call_id.clone(),
                        },
                    );
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        pending = retry;
        std::thread::sleep(RESTORE_RETRY_DELAY);
    }
    tracing::info!(restored, dropped, "state store attached");
    manager.set_store(store.clone());
    let locations = LocationPersistence {
        sink: store.clone(),
        loaded: loaded.registrations,
        unix_at_zero,
    };
    Ok((locations, store))
}

/// Binds the built-in SIP proxy (unless `--no-sip`) and starts it. The default listener is
/// best-effort (a taken port is a warning); an explicit `--listen-sip` must bind.
async fn start_sip(
    config: &Config,
    manager: Arc<Mutex<SessionManager<DataPlane>>>,
    stop: tokio::sync::watch::Receiver<bool>,
    locations: Option<LocationPersistence>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
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
        locations,
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
            Ok(Some(tokio::spawn(server.run(stop))))
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
