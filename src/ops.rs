//! Wiring of the operations endpoint: what `/metrics` reads (one [`MetricsSnapshot`] from the
//! session manager, the data plane, the ng and SIP servers) and what `/health` checks (an ng
//! ping answered over the real socket, and every data-plane worker answering a wake-up).
//! Everything here runs on the control plane at scrape time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::dataplane::DataPlane;
use crate::metrics::{ClosedSessions, KernelPathState, MetricsSnapshot, SampleTriple, SipMetrics};
use crate::server::http::HttpHandlers;
use crate::server::ng::NgShared;
use crate::server::sip::SipShared;
use crate::session::backend::KernelStatus;
use crate::session::manager::SessionManager;
use crate::session::quality::{SampleSums, SampleTotals};
use crate::time;

/// How long `/health` waits for the ng pong and for each worker's wake-up. Prometheus'
/// default scrape timeout is 10 s; a healthy relay answers both in well under a millisecond.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

type Manager = Arc<Mutex<SessionManager<DataPlane>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// rtpengine's sample triples (sum, sum of squares, count) from the relay's quality samples.
fn sample_triples(t: &SampleTotals) -> Vec<SampleTriple> {
    let triple = |name, help, s: &SampleSums| SampleTriple {
        name,
        help,
        total: s.total,
        total2: s.total2,
        samples: s.count,
    };
    vec![
        triple("mos", "Sum of the MOS samples.", &t.mos),
        triple("jitter", "Sum of the jitter samples (ms).", &t.jitter_ms),
        triple(
            "packetloss",
            "Sum of the packet loss samples (percent).",
            &t.packetloss_percent,
        ),
        triple(
            "rtt_e2e",
            "Sum of the end-to-end round-trip samples (microseconds).",
            &t.rtt_e2e_us,
        ),
    ]
}

/// What the operations endpoint reads.
#[derive(Clone)]
pub struct OpsSources {
    pub manager: Manager,
    pub ng: Arc<NgShared<DataPlane>>,
    pub sip: Option<Arc<SipShared<DataPlane>>>,
    pub kernel_disabled: bool,
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Where `/health` sends its ng ping (the ng UDP listener).
    pub ng_addr: SocketAddr,
}

/// One scrape's figures. The manager's lock is held only for one pass over the streams
/// reading a few published atomics each (ng and the sweep wait for the lock meanwhile).
pub fn snapshot(src: &OpsSources) -> MetricsSnapshot {
    let mut snap = {
        let m = lock(&src.manager);
        let f = m.scrape_figures(time::now_ns());
        let dp = m.backend();
        let dataplane = dp.totals();
        MetricsSnapshot {
            uptime_secs: f.uptime_secs,
            sessions: f.sessions,
            sessions_total: f.managed,
            closed: ClosedSessions {
                rejected: f.rejected,
                timeout: f.timeouts,
                terminated: f.terminated,
            },
            directions: 2 * f.streams,
            kernel_directions: dataplane.kernel_streams,
            kernel: if dp.kernel_forwarding() {
                KernelPathState::Running
            } else if let Some(why) = dp.kernel_unavailable() {
                KernelPathState::Unavailable(why.to_owned())
            } else {
                KernelPathState::Disabled
            },
            dataplane,
            worker_packets: dp.worker_packets(),
            quality: f.quality,
            samples: sample_triples(&m.sample_totals()),
            kernel_status: KernelStatus::ALL
                .iter()
                .map(|s| s.name())
                .zip(f.kernel)
                .collect(),
            ports_used: 2 * f.pairs_used,
            ports_free: 2 * f.pairs_total.saturating_sub(f.pairs_used),
            ..MetricsSnapshot::default()
        }
    };
    if src.kernel_disabled && snap.kernel == KernelPathState::Running {
        snap.kernel = KernelPathState::Disabled;
    }
    let ng = src.ng.stats.snapshot();
    snap.requests = src.ng.requests.snapshot();
    snap.ng_errors = ng.errors;
    snap.ng_received = ng.received;
    snap.ng_duplicates = ng.duplicates;
    snap.draining = src.lifecycle.is_draining();
    snap.media_relays = src
        .sip
        .as_ref()
        .map(|s| s.relay_stats())
        .unwrap_or_default();
    snap.sip = src.sip.as_ref().map(|s| {
        let p = s.proxy_stats();
        let t = s.snapshot();
        SipMetrics {
            received: p.received,
            requests: p.requests,
            responses: p.responses,
            server_transactions: p.server_transactions as u64,
            client_transactions: p.client_transactions as u64,
            responses_by_class: p.responses_sent,
            registrations: p.registrations,
            timeouts: p.timeouts,
            rejected: vec![
                ("parse_error", p.parse_errors),
                ("invalid", p.rejected),
                ("dropped", p.dropped),
                ("loop", p.loops),
                ("too_many_hops", p.too_many_hops),
                ("overload", p.overload_rejects),
                ("overload_shed", p.overload_invites_refused),
                ("too_large", t.too_large),
                ("input_full", t.input_dropped),
                ("framing", t.framing_errors),
                ("tcp_refused", t.tcp_refused),
                ("slow_message", t.slow_closed),
            ],
            connections_open: vec![("tcp", t.tcp_open), ("tls", t.tls_open)],
            connections_made: vec![
                ("tcp_accepted", t.tcp_accepted),
                ("tcp_opened", t.tcp_connected),
                ("tls_accepted", t.tls_accepted),
                ("tls_opened", t.tls_connected),
            ],
            tls_handshake_failures: t.tls_handshake_failed,
            transport_errors: p.transport_errors,
            flows_failed: p.flows_failed,
            forwarded: vec![
                ("request", p.forwarded_requests),
                ("response", p.forwarded_responses),
                ("stateless", p.stateless_forwards),
            ],
            retransmissions: vec![
                ("absorbed", p.retransmissions_absorbed),
                ("sent", p.retransmissions_sent),
            ],
            keepalives: t.keepalives,
            sent: vec![
                ("udp", t.udp_sent),
                ("tcp", t.tcp_sent),
                ("tls", t.tls_sent),
            ],
            send_errors: t.send_errors,
            auth: vec![
                ("challenge", p.auth_challenges),
                ("forbidden", p.auth_forbidden),
            ],
            media: vec![("failed", p.media_failures), ("parked", p.media_parked)],
            short_lingers: p.short_lingers,
            shed_starts: t.shed_starts,
            idle_closed: t.tcp_idle_closed,
            panics: t.panics,
        }
    });
    snap
}

/// Sends an ng ping to `addr` from a fresh loopback-side socket and waits for the pong.
async fn ng_pings(addr: SocketAddr) -> Result<(), String> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("ng check: bind: {e}"))?;
    let cookie = format!("health{}", time::now_ns());
    let msg = format!("{cookie} d7:command4:pinge");
    sock.send_to(msg.as_bytes(), target)
        .await
        .map_err(|e| format!("ng check: send: {e}"))?;
    let mut buf = [0u8; 256];
    let wait = async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if from == target
                && buf
                    .get(..n)
                    .is_some_and(|r| r.starts_with(cookie.as_bytes()))
            {
                return Ok::<bool, std::io::Error>(
                    buf.get(..n)
                        .is_some_and(|r| r.windows(4).any(|w| w == b"pong")),
                );
            }
        }
    };
    match tokio::time::timeout(HEALTH_TIMEOUT, wait).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("ng answered the ping without pong".into()),
        Ok(Err(e)) => Err(format!("ng check: {e}")),
        Err(_) => Err(format!(
            "ng did not answer a ping within {HEALTH_TIMEOUT:?}"
        )),
    }
}

/// Wakes every worker and waits until each has run a loop since.
async fn workers_answer(manager: &Manager) -> Result<(), String> {
    let before = {
        let m = lock(manager);
        let loops = m.backend().worker_loops();
        m.backend().wake_workers();
        loops
    };
    let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    loop {
        let now = lock(manager).backend().worker_loops();
        let stuck: Vec<usize> = before
            .iter()
            .zip(&now)
            .enumerate()
            .filter(|(_, (b, n))| n <= b)
            .map(|(i, _)| i)
            .collect();
        if stuck.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "data-plane worker(s) {stuck:?} did not answer within {HEALTH_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `/metrics` and `/health` handlers over `src`.
pub fn handlers(src: OpsSources) -> HttpHandlers {
    let lifecycle = src.lifecycle.clone();
    let for_metrics = src.clone();
    HttpHandlers {
        metrics: Box::new(move || crate::metrics::render(snapshot(&for_metrics))),
        health: Box::new(move || {
            let src = src.clone();
            Box::pin(async move {
                ng_pings(src.ng_addr).await?;
                workers_answer(&src.manager).await
            })
        }),
        lifecycle,
    }
}
