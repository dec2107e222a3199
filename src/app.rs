//! Wiring: the data plane, the session manager and the control servers, started together and
//! stopped together on SIGINT/SIGTERM.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Cli, Config};
use crate::dataplane::DataPlane;
use crate::lifecycle::Lifecycle;
use crate::server::cdr::CdrWriter;
use crate::server::http::HttpServer;
use crate::server::ng::{NgServer, NgServerConfig};
use crate::server::sip::{SipServer, SipServerConfig, SipShared, TlsSettings};
use crate::session::manager::{ManagerConfig, SessionManager};
use crate::session::record::EndReason;
use crate::sip::auth::{AuthConfig, Authenticator, UserFile};
use crate::sip::flood::{FloodConfig, FloodGuard};
use crate::sip::presence::PresenceConfig;
use crate::sip::proxy::ProxyConfig;
use crate::store::locations::LocationPersistence;
use crate::store::presence::PresencePersistence;
use crate::time::{self, NANOS_PER_SEC};

/// How long a drained relay with the SIP proxy on keeps serving after its last call ended,
/// so the final responses to the last BYEs still reach the callers.
const SIP_DRAIN_LINGER_NS: u64 = NANOS_PER_SEC;

/// Says so when the media timeout is shorter than how old a flowing in-kernel call's
/// newest-packet time can be at scale (README, `--timeout`).
fn warn_if_timeout_short(timeout_secs: u64, kernel: bool) {
    let safe = crate::dataplane::kernel::pace::SHORTEST_SAFE_TIMEOUT_SECS;
    if kernel && timeout_secs < safe {
        tracing::warn!(
            timeout = timeout_secs,
            shortest_safe = safe,
            "media timeout (s) shorter than how old a flowing in-kernel call's newest packet \
             time can be with many calls in the kernel: such calls may be ended while their \
             media flows"
        );
    }
}

pub fn run(config: Config) -> anyhow::Result<()> {
    run_with(config, Lifecycle::new(), None)
}

/// [`run`] with the process's run state (draining, live log level; `/health` reads the same
/// flag) and the command line, which SIGHUP reads again (with the `--config` file it names).
pub fn run_with(config: Config, lifecycle: Arc<Lifecycle>, cli: Option<Cli>) -> anyhow::Result<()> {
    let mut dataplane = DataPlane::start(&config)?;
    // A later takeover hands every media socket over: keep a copy of each.
    dataplane.keep_sockets_for_handover(config.takeover.is_some());
    tracing::info!(
        interface = %config.interface.local,
        advertised = %config.interface.advertised,
        ports = format!("{}-{}", config.port_min, config.port_max),
        threads = config.num_threads,
        engine = dataplane.engine().name(),
        "rtpanchor media relay started"
    );
    warn_if_timeout_short(config.timeout_secs, dataplane.kernel_forwarding());
    let now = time::now_ns();
    let unix_at_zero = time::unix_now().saturating_sub(Duration::from_nanos(now));
    let manager = SessionManager::new(
        dataplane,
        ManagerConfig {
            interfaces: config.interfaces.clone(),
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
    // Hitless upgrade: the running relay's calls and sockets come over first.
    let mut taken = match &config.takeover {
        Some(path) => crate::upgrade::take_over(path, &mut manager)?,
        None => None,
    };
    if config.standby {
        anyhow::ensure!(config.redis.is_some(), "--standby needs --redis");
        anyhow::ensure!(
            config.listen_sip.is_none(),
            "--standby runs without the SIP proxy: give --no-sip"
        );
        lifecycle.set_standby(true);
    }
    let mut presence_loaded = Vec::new();
    // The addresses this relay binds media on: the stored calls it may restore.
    let own_addresses: Vec<std::net::IpAddr> = config.interfaces.iter().map(|i| i.local).collect();
    let (locations, store) = match &config.redis {
        // A standby attaches the store when it takes over.
        Some(_) if config.standby => (None, None),
        Some(url) => {
            // Calls taken over are the stored ones, already restored.
            let (l, p, s) = open_store(
                url,
                &mut manager,
                unix_at_zero,
                taken.is_none(),
                &own_addresses,
            )?;
            presence_loaded = p;
            (Some(l), Some(s))
        }
        None => (None, None),
    };
    let presence_store =
        presence_persistence(&config, locations.as_ref(), presence_loaded, unix_at_zero)?;
    manager.set_lifecycle(lifecycle.clone());
    let cdr = match &config.cdr_file {
        Some(path) => {
            let (tx, writer) = CdrWriter::start(path)
                .map_err(|e| anyhow::anyhow!("cannot open --cdr-file {}: {e}", path.display()))?;
            manager.set_record_sink(tx);
            tracing::info!(path = %path.display(), "call records on");
            Some(writer)
        }
        None => None,
    };
    let kept_in_store = config.redis.is_some();
    let mut store = store;
    // The active relay's heartbeat, or the standby's watch of it.
    let mut heartbeat = match &config.redis {
        Some(url) if config.standby => {
            crate::store::standby::watch(url, lifecycle.clone())?;
            tracing::info!("standby: following the active relay's heartbeat in Redis");
            None
        }
        Some(url) => Some(crate::store::standby::Heartbeat::start(
            url,
            crate::store::standby::node_name(),
        )?),
        None => None,
    };
    // Set once a takeover has moved every call to the new process.
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handed_over_exit = handed_over.clone();
    let manager = Arc::new(Mutex::new(manager));
    let for_exit = manager.clone();
    let hup_cdr = cdr.as_ref().map(CdrWriter::reopen_flag);
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
        // The ng and SIP servers stop on their own signal: a takeover stops them first, and
        // one that fails starts them again.
        let (mut serve_tx, serve_rx) = tokio::sync::watch::channel(false);
        let sip_adopted = taken.as_mut().and_then(crate::upgrade::Taken::sip_sockets);
        let (sip, sip_shared, sip_fds) = match start_sip(&config, manager.clone(), serve_rx.clone(), (locations, presence_store), sip_adopted).await? {
            Some((task, shared, fds)) => (task, Some(shared), fds),
            // No SIP: a task that never ends keeps the select below uniform.
            None => (
                tokio::spawn(std::future::pending::<anyhow::Result<()>>()),
                None,
                None,
            ),
        };
        if let (Some(s), Some(shared)) = (store.as_ref(), sip_shared.as_ref()) {
            // The location service shared with the other fronts on this Redis.
            let weak = Arc::downgrade(shared);
            s.share_locations(Box::new(move |change| match weak.upgrade() {
                Some(sip) => {
                    sip.apply_remote(change);
                    true
                }
                None => false,
            }))?;
        }
        let ng_server = match taken.as_mut().and_then(crate::upgrade::Taken::ng_sockets) {
            Some((udp, tcp)) => NgServer::from_sockets(&ng, manager.clone(), udp, tcp)?,
            None => NgServer::bind(&ng, manager.clone()).await?,
        };
        let ng_fds = if config.takeover.is_some() {
            Some(ng_server.handover_sockets()?)
        } else {
            None
        };
        if let Some(t) = taken.take() {
            t.ready()?;
            crate::upgrade::notify_main_pid();
        }
        let mut takeovers = match &config.takeover {
            Some(path) => Some(crate::server::takeover::listen(path.clone())?),
            None => None,
        };
        tracing::info!(udp = %ng.listen_udp, tcp = ?ng.listen_tcp, "ng control listening");
        let ng_shared = ng_server.shared();
        if let Some(addr) = config.listen_http {
            let sources = crate::ops::OpsSources {
                manager: manager.clone(),
                ng: ng_shared.clone(),
                sip: sip_shared.clone(),
                kernel_disabled: !config.kernel_forwarding,
                lifecycle: lifecycle.clone(),
                ng_addr: config.listen_ng,
            };
            let http = HttpServer::bind(addr, crate::ops::handlers(sources)).await?;
            tracing::info!(listen = %addr, "HTTP /metrics and /health listening");
            tokio::spawn(http.run(stop_rx.clone()));
        }
        let mut server = tokio::spawn(ng_server.run(serve_rx));
        let mut sip = sip;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
        let mut running = config.clone();
        // How often a drain looks whether the last call has ended.
        let mut drain_check = tokio::time::interval(Duration::from_millis(100));
        let mut drain_started: Option<u64> = None;
        let mut drained_at: Option<u64> = None;
        let outcome = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break Ok(()),
                Some(conn) = crate::upgrade::next_takeover(&mut takeovers) => {
                    tracing::info!("takeover asked: handing calls and sockets over");
                    // The servers answer what they already read, then stop reading.
                    let _ = serve_tx.send(true);
                    crate::upgrade::stopped_in_time(&mut server).await;
                    if sip_shared.is_some() {
                        crate::upgrade::stopped_in_time(&mut sip).await;
                    }
                    if crate::upgrade::hand_over(conn, &manager, ng_fds.as_ref(), sip_fds.as_ref()).await {
                        handed_over.store(true, std::sync::atomic::Ordering::Relaxed);
                        break Ok(());
                    }
                    // The new relay failed: this one serves on, on the same sockets.
                    tracing::warn!("takeover failed: serving on");
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    serve_tx = tx;
                    match crate::upgrade::resume(&ng_shared, ng_fds.as_ref(), ng.tick_interval, sip_shared.as_ref(), sip_fds.as_ref()) {
                        Ok((n, s)) => {
                            server = tokio::spawn(n.run(rx.clone()));
                            if let Some(s) = s {
                                sip = tokio::spawn(s.run(rx));
                            }
                        }
                        Err(e) => break Err(e.context("serving again after a failed takeover")),
                    }
                }
                _ = term.recv() => {
                    if lifecycle.start_drain() {
                        tracing::warn!("second SIGTERM: exiting now");
                        break Ok(());
                    }
                    let calls = manager.lock().map_or(0, |m| m.call_count());
                    tracing::info!(calls, "SIGTERM: draining (no new calls; a second SIGTERM exits at once)");
                }
                _ = usr2.recv() => crate::upgrade::start_successor(config.takeover.is_some()),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP");
                    if let Some(f) = &hup_cdr {
                        f.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(cli) = &cli {
                        reload(cli, &mut running, &manager, &lifecycle);
                    }
                    reload_sip_users(&config, sip_shared.as_deref());
                    reload_sip_tls(sip_shared.as_deref());
                }
                _ = drain_check.tick() => {
                    if lifecycle.take_activation() && lifecycle.is_standby() {
                        if let Some(url) = &config.redis {
                            let mut m = manager.lock().unwrap_or_else(|e| e.into_inner());
                            // Loading blocks (a runtime of the store's own): off this one.
                            let opened = tokio::task::block_in_place(|| {
                                open_store(url, &mut m, unix_at_zero, true, &own_addresses)
                            });
                            match opened {
                                Ok((_, _, s)) => {
                                    store = Some(s);
                                    lifecycle.set_standby(false);
                                    heartbeat = Some(crate::store::standby::Heartbeat::start(
                                        url,
                                        crate::store::standby::node_name(),
                                    )?);
                                    tracing::warn!(calls = m.call_count(), "standby took over: active now");
                                }
                                Err(e) => {
                                    tracing::error!(error = format!("{e:#}"), "standby cannot take over; asking again in 1 s");
                                    let l = lifecycle.clone();
                                    tokio::spawn(async move {
                                        tokio::time::sleep(Duration::from_secs(1)).await;
                                        l.request_activation();
                                    });
                                }
                            }
                        }
                    }
                    if !lifecycle.is_draining() {
                        continue;
                    }
                    let started = *drain_started.get_or_insert_with(|| {
                        tracing::info!("draining");
                        time::now_ns()
                    });
                    let Ok(mut m) = manager.lock() else { break Ok(()) };
                    if m.call_count() == 0 {
                        // Through the SIP proxy the last call ends when its BYE is forwarded:
                        // the BYE's final response still has to come back through us.
                        let emptied = *drained_at.get_or_insert_with(time::now_ns);
                        if sip_shared.is_none()
                            || time::now_ns().saturating_sub(emptied) >= SIP_DRAIN_LINGER_NS
                        {
                            tracing::info!("drained: the last call has ended");
                            break Ok(());
                        }
                        continue;
                    }
                    let limit = running.drain_timeout_secs;
                    if limit > 0
                        && time::now_ns().saturating_sub(started) >= limit.saturating_mul(NANOS_PER_SEC)
                    {
                        let n = m.terminate_all(EndReason::Drain, time::now_ns());
                        tracing::warn!(calls = n, "drain timeout: calls ended");
                        break Ok(());
                    }
                }
                r = &mut server => break match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("ng server task failed: {e}")),
                },
                r = &mut sip => break match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("SIP server task failed: {e}")),
                },
            }
        };
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = serve_tx.send(true);
        // No heartbeat from a relay that stops: a standby takes over once the key expires.
        drop(heartbeat);
        if handed_over.load(std::sync::atomic::Ordering::Relaxed) {
            // The new relay writes the calls' store records from now on.
            return outcome;
        }
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
    })?;
    // Calls still up get their records too, then the writer finishes the queue. With a state
    // store they are not ended: they stay stored for the next start, whose records end them.
    if handed_over_exit.load(std::sync::atomic::Ordering::Relaxed) {
        // The calls live on in the new process, which writes their records when they end.
        tracing::info!("calls handed over; exiting");
        if let Some(w) = cdr {
            w.finish(Duration::from_secs(5));
        }
        return Ok(());
    }
    if let Ok(mut m) = for_exit.lock() {
        if !kept_in_store {
            let n = m.terminate_all(EndReason::Shutdown, time::now_ns());
            if n > 0 {
                tracing::info!(calls = n, "calls ended at shutdown");
            }
        } else {
            tracing::info!(
                calls = m.call_count(),
                "calls left in the state store for the next start"
            );
        }
        drop(m.take_record_sink());
    }
    if let Some(w) = cdr {
        w.finish(Duration::from_secs(5));
    }
    Ok(())
}

/// Further tries for stored calls whose ports are still taken at start, and the pause
/// between them (2 s in all).
const RESTORE_RETRIES: usize = 10;
const RESTORE_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Connects the state store, restores the calls it holds (a call whose ports cannot be
/// bound is reported and removed from the store), and sends later changes to it. Returns
/// what the registrar needs to do the same with registrations.
/// What `open_store` hands on: the registrar's persistence, the presence records loaded,
/// and the store.
type StoreOpened = (
    LocationPersistence,
    Vec<(String, String)>,
    Arc<crate::store::redis::RedisStore>,
);

fn open_store(
    url: &str,
    manager: &mut SessionManager<DataPlane>,
    unix_at_zero: Duration,
    restore_calls: bool,
    own: &[std::net::IpAddr],
) -> anyhow::Result<StoreOpened> {
    let (store, loaded) = crate::store::redis::RedisStore::open(url)?;
    let store = Arc::new(store);
    let (mut restored, mut dropped) = (0usize, 0usize);
    // Relays of a set may share one store: each restores only the calls bound on its own
    // addresses, and leaves the others' records alone (never drops them).
    let elsewhere = |record: &str| {
        crate::store::record::CallRecord::parse(record).is_ok_and(|r| r.relayed_elsewhere(own))
    };
    let mut pending: Vec<&(String, String, Option<String>)> = if restore_calls {
        loaded
            .calls
            .iter()
            .filter(|(_, record, _)| !elsewhere(record))
            .collect()
    } else {
        Vec::new()
    };
    let others = if restore_calls {
        loaded.calls.len() - pending.len()
    } else {
        0
    };
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
    tracing::info!(restored, dropped, others, "state store attached");
    manager.set_store(store.clone());
    let locations = LocationPersistence {
        sink: store.clone(),
        loaded: loaded.registrations,
        unix_at_zero,
        front: None,
    };
    Ok((locations, loaded.presence, store))
}

/// Where the SIP server keeps presence state: Redis with `--redis` (the records it held
/// were loaded with the rest), else the embedded database (`store::presence`).
fn presence_persistence(
    config: &Config,
    locations: Option<&LocationPersistence>,
    loaded: Vec<(String, String)>,
    unix_at_zero: Duration,
) -> anyhow::Result<Option<PresencePersistence>> {
    if !config.sip_presence || config.listen_sip.is_none() || config.standby {
        return Ok(None);
    }
    match locations {
        Some(l) => Ok(Some(PresencePersistence::new(
            l.sink.clone(),
            loaded,
            unix_at_zero,
        ))),
        None => {
            crate::store::presence::open_embedded(config.sip_state_dir.as_deref(), unix_at_zero)
        }
    }
}

/// The SIP server's task and its shared state (counters for `/metrics`).
type SipStarted = (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<crate::server::sip::SipShared<DataPlane>>,
    Option<crate::server::sip::SipFds>,
);

/// The networks the SIP proxy bridges: one per interface name, each interface address
/// served on `port`, its subnet the prefix the OS has configured on it (`getifaddrs`).
fn sip_networks(config: &Config, port: u16) -> crate::sip::networks::SipNetworks {
    use crate::sip::networks::{SipAddr, SipNetworks};
    let default = crate::session::interfaces::default_name(&config.interfaces).unwrap_or("");
    let mut n = SipNetworks::new(default, config.sip_networks.clone());
    for i in &config.interfaces {
        let found = crate::dataplane::ifaddrs::find(i.local);
        let subnet = found
            .as_ref()
            .and_then(|f| f.prefix_len)
            .and_then(|len| crate::cidr::Cidr::new(i.local, len));
        tracing::info!(
            interface = %i.name,
            address = %i.local,
            device = found.as_ref().map_or("?", |f| f.device.as_str()),
            subnet = subnet.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            "SIP network"
        );
        n.add_address(
            SipAddr {
                name: i.name.clone(),
                local: std::net::SocketAddr::new(i.local, port),
                advertised: std::net::SocketAddr::new(i.sdp_addr(), port),
            },
            subnet,
        );
    }
    n
}

/// Binds the built-in SIP proxy (unless `--no-sip`) and starts it. The default listener is
/// best-effort (a taken port is a warning); an explicit `--listen-sip` must bind.
async fn start_sip(
    config: &Config,
    manager: Arc<Mutex<SessionManager<DataPlane>>>,
    stop: tokio::sync::watch::Receiver<bool>,
    (locations, presence_store): (Option<LocationPersistence>, Option<PresencePersistence>),
    adopted: Option<crate::server::sip::AdoptedSip>,
) -> anyhow::Result<Option<SipStarted>> {
    let Some(listen) = config.listen_sip else {
        return Ok(None);
    };
    // The address the proxy writes into Via and Record-Route: a wildcard listener is known
    // to peers by the advertised media address.
    let mut local = if listen.ip().is_unspecified() {
        std::net::SocketAddr::new(config.interface.advertised, listen.port())
    } else {
        listen
    };
    let (mut listen, mut also_listen) = (listen, Vec::new());
    let networks = if config.bridges_networks() {
        let n = sip_networks(config, listen.port());
        // Every interface address is served, on the port of --listen-sip.
        if let Some((first, rest)) = n.addresses().split_first() {
            listen = first.local;
            local = first.advertised;
            also_listen = rest.iter().map(|a| a.local.ip()).collect();
        }
        n
    } else {
        crate::sip::networks::SipNetworks::default()
    };
    let mut proxy = ProxyConfig::new(local);
    proxy.networks = networks;
    proxy.domains = config.domains.clone();
    proxy.outbound = config.sip_outbound;
    if config.sip_presence {
        let mut p = PresenceConfig::new(local);
        p.foreign_watchers = config.sip_presence_foreign;
        proxy.presence = Some(p);
    }
    // Branch and tag hashes must not be predictable from outside: a per-process secret.
    proxy.secret = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (std::process::id(), time::now_ns()),
    );
    if let Some(sips) = config.listen_sips {
        // As for UDP/TCP: a wildcard listener is named by the advertised address.
        let ip = if sips.ip().is_unspecified() {
            config.interface.advertised
        } else {
            sips.ip()
        };
        proxy.local_tls = Some(std::net::SocketAddr::new(ip, sips.port()));
        if let Some(p) = proxy.presence.as_mut() {
            p.local_tls = proxy.local_tls;
        }
    }
    let tls = match (config.listen_sips, &config.sips_cert, &config.sips_key) {
        (Some(at), Some(cert), Some(key)) => {
            let mut t = TlsSettings::new(at, cert.clone(), key.clone());
            t.ca = config.sips_ca.clone();
            Some(t)
        }
        _ => None,
    };
    let cfg = SipServerConfig {
        listen,
        max_message: config.sip_max_message,
        locations,
        presence_store,
        tls,
        media_relays: config.media_relays.clone(),
        also_listen,
        ..SipServerConfig::default()
    };
    let auth = sip_authenticator(config)?;
    match SipServer::bind_or_adopt(cfg, proxy, manager, adopted).await {
        Ok(server) => {
            let fds = if config.takeover.is_some() {
                Some(server.handover_sockets()?)
            } else {
                None
            };
            tracing::info!(
                listen = %server.local_addr(),
                domains = ?config.domains,
                outbound = ?config.sip_outbound,
                authentication = auth.is_some(),
                tls = ?server.tls_addr(),
                "SIP proxy listening (UDP and TCP; TLS if given)"
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
            Ok(Some((tokio::spawn(server.run(stop)), shared, fds)))
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

/// SIGHUP: reads the configuration again and applies what can change live (log level, session
/// limit, media timeout, drain timeout); says what else changed and needs a restart. A file
/// that does not load changes nothing.
fn reload(
    cli: &Cli,
    running: &mut Config,
    manager: &Mutex<SessionManager<DataPlane>>,
    lifecycle: &Lifecycle,
) {
    let new = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload failed: configuration unchanged"
            );
            return;
        }
    };
    let plan = crate::reload::plan(running, &new);
    if plan.is_empty() {
        tracing::info!("reload: nothing changed");
        return;
    }
    if let Some(l) = &plan.log_level {
        match lifecycle.set_log_level(l) {
            Ok(()) => {
                tracing::info!(old = %running.log_level, new = %l, "reload: log level");
                running.log_level = l.clone();
            }
            Err(e) => tracing::error!(level = %l, error = %e, "reload: log level not changed"),
        }
    }
    if let Ok(mut m) = manager.lock() {
        if let Some(n) = plan.max_sessions {
            tracing::info!(old = running.max_sessions, new = n, "reload: max sessions");
            m.set_max_sessions(n);
            running.max_sessions = n;
        }
        if let Some(t) = plan.timeout_secs {
            tracing::info!(
                old = running.timeout_secs,
                new = t,
                "reload: media timeout (s)"
            );
            m.set_timeout_ns(t.saturating_mul(NANOS_PER_SEC));
            running.timeout_secs = t;
            warn_if_timeout_short(t, m.backend().kernel_forwarding());
        }
    }
    if let Some(t) = plan.drain_timeout_secs {
        tracing::info!(
            old = running.drain_timeout_secs,
            new = t,
            "reload: drain timeout (s)"
        );
        running.drain_timeout_secs = t;
    }
    if !plan.restart_needed.is_empty() {
        tracing::warn!(settings = ?plan.restart_needed, "reload: changed, but only a restart applies them");
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

/// Re-reads the `--sips-cert`/`--sips-key`/`--sips-ca` files (SIGHUP); on an error the
/// old ones stay.
fn reload_sip_tls(sip: Option<&SipShared<DataPlane>>) {
    match sip.map(SipShared::reload_tls) {
        Some(Ok(true)) => tracing::info!("SIP TLS certificate reloaded"),
        Some(Err(e)) => tracing::error!(
            error = format!("{e:#}"),
            "SIP TLS certificate not reloaded; keeping the old one"
        ),
        _ => {}
    }
}

/// Re-reads `--sip-users` into the running proxy; called from the SIGHUP handling in
/// [`run_with`].
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
