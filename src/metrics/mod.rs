//! Prometheus metrics: what the relay exposes on `/metrics`, in rtpengine's names with the
//! prefix `rtpanchor_`, so an rtpengine dashboard needs only the prefix changed.
//!
//! The model is sans-IO: the HTTP edge fills one plain [`MetricsSnapshot`] at scrape time
//! (from the session manager, the data plane's summed single-writer counters and the servers'
//! own counters) and [`render`] turns it into the Prometheus text exposition (format 0.0.4)
//! through a `prometheus-client` collector. Nothing here runs on the packet path: scrapes read
//! counters the workers already keep.
//!
//! Extending: a new figure is a field of the snapshot (or an entry of one of its lists) and a
//! line in `collector.rs`. Sampled quality (MOS, jitter, packet loss, round-trip time) comes as
//! [`SampleTriple`]s in [`MetricsSnapshot::samples`], exposed as rtpengine's sum / sum of
//! squares / count triple only for the figures whose producer filled them in.
#![forbid(unsafe_code)]

mod collector;
pub mod requests;

use crate::dataplane::shared::DataPlaneTotals;

pub use requests::{RequestMetrics, RequestStat, LATENCY_BUCKETS_SECS};

/// Calls closed so far, by rtpengine's `closed_sessions_total` reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedSessions {
    /// Offers refused (load limit, no ports, bad SDP).
    pub rejected: u64,
    /// Torn down by the media timeout.
    pub timeout: u64,
    /// Ended by signalling (`delete`, BYE) or by an operator.
    pub terminated: u64,
}

pub use crate::session::manager::QualityTotals;

/// Sum, sum of squares and count of a sampled figure: mean and standard deviation follow in
/// PromQL (`rate(x_total)/rate(x_samples_total)`), as with rtpengine's `mos_total`,
/// `mos2_total`, `mos_samples_total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleTriple {
    /// The metric stem without prefix: `mos`, `jitter`, `packetloss`, `rtt_e2e`.
    pub name: &'static str,
    pub help: &'static str,
    pub total: f64,
    pub total2: f64,
    pub samples: u64,
}

/// The built-in SIP proxy's figures (absent with `--no-sip`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipMetrics {
    pub received: u64,
    pub requests: u64,
    pub responses: u64,
    pub server_transactions: u64,
    pub client_transactions: u64,
    /// Responses sent or forwarded, by class: index 1 = 1xx ... 6 = 6xx (0 unused).
    pub responses_by_class: [u64; 7],
    pub registrations: u64,
    /// Transactions that timed out (Timers B, F, C).
    pub timeouts: u64,
    /// Messages rejected or dropped, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// TCP/TLS connections open now, by transport.
    pub connections_open: Vec<(&'static str, u64)>,
    /// Connections made since start, by how (`tcp_accepted`, `tls_opened`, ...).
    pub connections_made: Vec<(&'static str, u64)>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
    /// Requests the transport could not deliver (no connection to the next hop), each
    /// answered as a 503 from it.
    pub transport_errors: u64,
    /// Requests answered 430 Flow Failed: the RFC 5626 flow of the binding was gone.
    pub flows_failed: u64,
    /// Messages forwarded, by kind (`request`, `response`, `stateless`).
    pub forwarded: Vec<(&'static str, u64)>,
    /// Retransmissions, by direction (`absorbed`: of requests, answered from a transaction;
    /// `sent`: ours, Timers A, E, G).
    pub retransmissions: Vec<(&'static str, u64)>,
    /// CRLF keep-alives received (UDP and TCP/TLS).
    pub keepalives: u64,
    /// Messages sent, by transport (`udp`, `tcp`, `tls`).
    pub sent: Vec<(&'static str, u64)>,
    /// Sends that failed or were dropped (full queue, connect failure, write error).
    pub send_errors: u64,
    /// Requests answered by digest authentication, by result (`challenge`: 401/407,
    /// `forbidden`: 403).
    pub auth: Vec<(&'static str, u64)>,
    /// Media steps that failed (the call got an error) and messages parked until a remote
    /// media relay answered, by what (`failed`, `parked`).
    pub media: Vec<(&'static str, u64)>,
    /// Finished transactions that lingered T4 instead of 64·T1 (half the cap taken).
    pub short_lingers: u64,
    /// Times overload control began refusing new INVITEs (the UDP input queue stood).
    pub shed_starts: u64,
    /// TCP/TLS connections closed because they were idle.
    pub idle_closed: u64,
    /// Panics caught inside the proxy (should stay 0).
    pub panics: u64,
}

/// What the kernel fast path is doing, and why it is not used when it is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KernelPathState {
    /// Running: latched RTP is handed to it.
    #[default]
    Running,
    /// Turned off by `--no-kernel-forwarding`.
    Disabled,
    /// Asked for and not available (the reason as logged at start).
    Unavailable(String),
}

/// Everything one scrape exposes. Plain values, filled by the caller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub uptime_secs: u64,
    /// Calls now (deleted calls still in their delete delay not counted).
    pub sessions: u64,
    /// Calls set up since start.
    pub sessions_total: u64,
    pub closed: ClosedSessions,
    /// Media directions relayed now (one per stream side, as rtpengine's packet streams).
    pub directions: u64,
    /// Of those, directions the kernel fast path relays.
    pub kernel_directions: u64,
    pub kernel: KernelPathState,
    /// Directions by kernel status name (`in_kernel`, `not_latched`, ...), as the workers last
    /// decided; meaningful while the fast path runs.
    pub kernel_status: Vec<(&'static str, u64)>,
    /// The data plane's counters summed over its workers.
    pub dataplane: DataPlaneTotals,
    /// Packets received per worker (ring), in worker order.
    pub worker_packets: Vec<u64>,
    pub quality: QualityTotals,
    pub samples: Vec<SampleTriple>,
    /// ng requests by command.
    pub requests: Vec<RequestStat>,
    /// ng replies with `result: error` (malformed requests included).
    pub ng_errors: u64,
    /// ng requests received (datagrams and TCP messages) and answered from the reply cache.
    pub ng_received: u64,
    pub ng_duplicates: u64,
    pub ports_used: u64,
    pub ports_free: u64,
    pub sip: Option<SipMetrics>,
    /// The SIP proxy's relay set (`--media-relay`; empty without one).
    pub media_relays: Vec<crate::relayset::RelaySnapshot>,
    /// Draining: no new sessions taken.
    pub draining: bool,
}

/// The Prometheus text exposition (format 0.0.4) of `snapshot`, every name prefixed
/// `rtpanchor_`.
pub fn render(snapshot: MetricsSnapshot) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("rtpanchor");
    registry.register_collector(Box::new(collector::SnapshotCollector(snapshot)));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an encoder error would be a bug in the collector,
    // and then the partial text is still the best answer.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests;
