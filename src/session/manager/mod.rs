//! The session manager: calls by Call-ID, offer/answer/delete/query/list/statistics, media
//! timeouts. One instance per process, behind one mutex held for one command at a time; the
//! data plane is reached only through the non-blocking [`MediaBackend`].
//!
//! # Semantics
//!
//! - **Legs by tag, never by message direction.** An offer from tag X makes X the offerer of
//!   the dialogue it belongs to; the reply SDP goes to the other leg and carries the relay
//!   ports that leg sends to. The answer names both tags (`from-tag` = the offerer, `to-tag` =
//!   the answerer, as Kamailio's module sends them, also swapped for a late offer); the
//!   manager remembers who made the pending offer, so the answerer is "the other one" in
//!   whichever order the tags come. A re-INVITE from the callee is an offer whose from-tag is
//!   the callee's: the callee becomes the offerer of the same dialogue, same ports.
//! - **Idempotent.** A repeated offer or answer (retransmission with a new cookie, several
//!   proxy workers) finds the same dialogue, keeps every stream (same index and kind) and
//!   renders the same SDP; nothing is allocated twice.
//! - **Re-offer** (RFC 3264 §8): an unchanged stream keeps its ports and gets the new remote
//!   address; an added m= line opens a stream; a line whose port became 0 closes its stream
//!   (the SDP keeps port 0); a line that changed kind is re-opened.
//! - **Forks.** With `via-branch`, each branch's offer is its own dialogue (own ports) and the
//!   answer picks its dialogue by branch. Without it, all forks got the same SDP and ports, so
//!   the last answering to-tag re-targets the callee side (its endpoint replaces the earlier
//!   fork's).
//! - **Delete**: call-id (+ from-tag of either leg) removes the whole call; with a to-tag, only
//!   the dialogue between the two tags; with a via-branch that names a branch's dialogue, only
//!   that one (a via-branch matching nothing, e.g. the BYE's own branch, deletes the call).
//! - **Delete delay**: default 0 (close at once). Our port allocator hands a freed pair out
//!   again as late as possible, which is what rtpengine's 30 s default protects against;
//!   a per-request `delete delay` still keeps the streams relaying for that long.
//! - **Media timeout** ([`SessionManager::tick`]): a call whose newest packet (any stream, any
//!   side) — or, without packets, whose last signal — is older than `timeout_ns` is closed.
//! - **Limits.** A new call beyond `max_sessions` or an allocation failure ("Ran out of
//!   ports") leaves nothing half-open: streams opened for the failing signal are closed again.
//!   A call holds at most [`MAX_DIALOGUES`](crate::session::model::MAX_DIALOGUES) dialogues.
//!
//! # Layout
//!
//! This file holds the manager's vocabulary (configuration, requests, replies, errors, the
//! figures it reports) and its state. Each operation is a file of its own:
//!
//! - `plan`: what an offer or an answer asks for, worked out from the SDP and the call as it
//!   stands, with nothing allocated or changed;
//! - `allocation`: an offer's new streams, opened under a guard that closes them again unless
//!   the offer is committed;
//! - `offer`, `answer`: read, plan, (allocate), render, commit;
//! - `delete`; `report` (`query`, `list`, `statistics`); `sweep` (`tick`: delete delays,
//!   media timeouts, rates); `record` (call records, terminate).
//!
//! They use this file; this file uses none of them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::lifecycle::Lifecycle;
use crate::sdp::Direction;
use crate::session::backend::{
    BackendError, LatchEventKind, MediaBackend, OpenedStream, Side, SideBrief, SideStats,
    SocketCounters, StreamId,
};
use crate::session::model::{Call, MAX_TOKEN_LEN};
use crate::session::negotiate::{NegotiateError, RelayInterface};
use crate::session::ports::{PortError, PortPair};
use crate::session::quality::{DirectionSummary, StreamQuality};
use crate::session::record::{CallRecord, EndReason};
use crate::time::{Nanos, NANOS_PER_SEC};

mod allocation;
mod answer;
mod audit;
pub mod control;
mod delete;
#[cfg(test)]
mod interface_tests;
mod offer;
mod persist;
#[cfg(test)]
mod persist_tests;
mod plan;
mod record;
mod report;
mod sweep;
#[cfg(test)]
mod sweep_tests;
mod table;
#[cfg(test)]
mod tests;
mod totals;

pub use audit::OwnedStreams;
pub use persist::{RestoreError, MAX_FLUSH};
pub use totals::{QualityTotals, ScrapeFigures};

/// Most backend events logged per [`SessionManager::drain_events`] call (bounds the time the
/// manager's lock is held; the rest wait for the next drain).
pub const MAX_EVENTS_PER_DRAIN: usize = 4096;

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub interfaces: Vec<RelayInterface>,
    /// Most concurrent calls; 0 = unlimited.
    pub max_sessions: usize,
    /// Media timeout; 0 disables it.
    pub timeout_ns: Nanos,
    /// Default delete delay (a request's `delete delay` overrides it).
    pub delete_delay_ns: Nanos,
    /// The configured port range, reported by `statistics`.
    pub port_min: u16,
    pub port_max: u16,
    /// Unix time at monotonic 0 (`time::unix_now() - time::now_ns()` at start), so reports
    /// show wall-clock seconds while the logic only sees monotonic time.
    pub unix_at_zero: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            interfaces: Vec::new(),
            max_sessions: 0,
            timeout_ns: 60 * NANOS_PER_SEC,
            delete_delay_ns: 0,
            port_min: 30000,
            port_max: 40000,
            unix_at_zero: Duration::ZERO,
        }
    }
}

/// Who an offer or answer is about.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signal<'a> {
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub to_tag: Option<&'a str>,
    pub via_branch: Option<&'a str>,
    /// Label of the leg that sent this SDP.
    pub label: Option<&'a str>,
    pub sdp: &'a [u8],
}

/// The SDP to pass on, and anything worth telling the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub sdp: Vec<u8>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// rtpengine's wording (Kamailio fails over to the next node on it).
    #[error("Parallel session limit reached")]
    SessionLimit,
    /// rtpengine's wording (Kamailio fails over to the next node on it).
    #[error("Ran out of ports")]
    OutOfPorts,
    /// The relay is draining (SIGTERM or ng `drain`): calls up keep going, no new ones.
    #[error("Draining: no new sessions")]
    Draining,
    #[error("Unknown call-id")]
    UnknownCall,
    #[error("Unknown call-id or tag: no offer to answer")]
    NoOffer,
    /// delete/query of an unknown call, or tags that are not in it (rtpengine's wording).
    #[error("Call-ID not found or tags didn't match")]
    NotFound,
    #[error("No to-tag in message")]
    NoToTag,
    #[error("Too many branches in call (limit {0})")]
    TooManyBranches(usize),
    #[error("{0} is too long (limit {MAX_TOKEN_LEN} bytes)")]
    TooLong(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
    #[error("Media backend failure: {0}")]
    Backend(String),
}

impl SessionError {
    /// Capacity problems: answered with `result: load limit` where the client supports it.
    pub fn is_load_limit(&self) -> bool {
        matches!(
            self,
            SessionError::SessionLimit | SessionError::OutOfPorts | SessionError::Draining
        )
    }
}

impl From<BackendError> for SessionError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Ports(PortError::Exhausted) => SessionError::OutOfPorts,
            other => SessionError::Backend(other.to_string()),
        }
    }
}

/// Packet counters summed over sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl Counters {
    fn add(&mut self, c: &SocketCounters) {
        self.packets = self.packets.saturating_add(c.packets);
        self.bytes = self.bytes.saturating_add(c.bytes);
        self.errors = self.errors.saturating_add(c.errors);
    }

    fn add_counters(&mut self, c: &Counters) {
        self.packets = self.packets.saturating_add(c.packets);
        self.bytes = self.bytes.saturating_add(c.bytes);
        self.errors = self.errors.saturating_add(c.errors);
    }
}

/// RTP and RTCP counters of a call (ingress, both sides, every stream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub rtp: Counters,
    pub rtcp: Counters,
}

impl Totals {
    fn add_side(&mut self, s: &SideStats) {
        self.rtp.add(&s.rtp);
        self.rtcp.add(&s.rtcp);
    }

    fn add(&mut self, t: &Totals) {
        self.rtp.add_counters(&t.rtp);
        self.rtcp.add_counters(&t.rtcp);
    }

    /// RTP and RTCP together.
    pub fn sum(&self) -> Counters {
        let mut c = self.rtp;
        c.add_counters(&self.rtcp);
        c
    }
}

/// One leg's view of one m= line.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaReport {
    pub index: u32,
    pub kind: String,
    pub proto: String,
    pub label: Option<String>,
    /// The relay ports this leg sends to; `None` when not relayed.
    pub ports: Option<PortPair>,
    /// The relay's bound address for this leg.
    pub local_addr: Option<IpAddr>,
    /// The name of the interface that address belongs to.
    pub interface: Option<String>,
    /// Where media for this leg goes now: learned source, else the SDP endpoint.
    pub endpoint: Option<SocketAddr>,
    /// What the leg's SDP said (hold address included).
    pub advertised: Option<SocketAddr>,
    /// This leg's separate RTCP address (from signalling): where RTCP goes without mux, the
    /// fallback while it muxes.
    pub rtcp_endpoint: Option<SocketAddr>,
    /// The RTCP address as the leg's SDP named it (hold address included).
    pub rtcp_advertised: Option<SocketAddr>,
    /// RTCP for this leg travels on the RTP ports now (the fallback port stays bound).
    pub rtcp_mux: bool,
    /// How the relay learns this leg's source (`asymmetric`, `strict source` in query).
    pub latch: crate::session::latch::LatchMode,
    pub direction: Option<Direction>,
    /// Ingress counters and quality of what this leg sends.
    pub stats: SideStats,
    /// Unix seconds of the newest RTP / RTCP packet from this leg (0 = never).
    pub last_rtp_unix: u64,
    pub last_rtcp_unix: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TagReport {
    /// Empty for a callee leg not yet named by an answer.
    pub tag: String,
    pub label: Option<String>,
    pub created_unix: u64,
    pub via_branch: Option<String>,
    /// Tags this leg is in a dialogue with.
    pub peers: Vec<String>,
    pub medias: Vec<MediaReport>,
}

/// A call as `query` and `delete` report it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallReport {
    pub call_id: Arc<str>,
    pub created: Duration,
    pub last_signal_unix: u64,
    pub tags: Vec<TagReport>,
    pub totals: Totals,
    /// Quality per stream direction (the `SSRC` block), and the Unix time at monotonic 0 to
    /// date its samples.
    pub quality: Vec<DirectionSummary>,
    pub unix_at_zero: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No media (and no signal) for the timeout.
    Timeout,
    /// A deleted call's delete delay ran out.
    DeleteDelayExpired,
}

/// A call closed by [`SessionManager::tick`], for the caller's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedCall {
    pub call_id: Arc<str>,
    pub reason: CloseReason,
    pub age_ns: Nanos,
    pub totals: Totals,
}

/// Figures for `statistics`.
/// Ports of one interface address in `statistics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfacePorts {
    pub used: u64,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statistics {
    pub sessions: usize,
    /// Deleted calls still relaying during their delete delay.
    pub lingering: usize,
    pub packet_rate: u64,
    pub byte_rate: u64,
    pub error_rate: u64,
    pub uptime_secs: u64,
    pub managed_sessions: u64,
    pub rejected_sessions: u64,
    pub timeout_sessions: u64,
    pub terminated_sessions: u64,
    /// Every packet relayed so far (closed calls and live ones).
    pub relayed: Counters,
    pub interfaces: Vec<RelayInterface>,
    /// Ports on each of `interfaces` (same order; RTP and RTCP counted one by one): each
    /// address has the whole range to itself.
    pub interface_ports: Vec<InterfacePorts>,
    pub port_min: u16,
    pub port_max: u16,
    /// Port pairs in use and in total (from the backend).
    pub pairs_used: usize,
    pub pairs_total: usize,
    /// The data plane's own counters (drops by reason and so on).
    pub dataplane: Vec<(&'static str, u64)>,
    /// ng commands handled, by kind and sender.
    pub control: control::ControlStats,
    /// The SIP proxy's relay set (`--media-relay`), relay by relay; empty without one.
    pub media_relays: Vec<crate::relayset::RelaySnapshot>,
}

#[derive(Debug)]
struct Lingering {
    call_id: Arc<str>,
    deadline: Nanos,
    created_ns: Nanos,
    streams: Vec<StreamId>,
}

impl Default for Lingering {
    fn default() -> Self {
        Lingering {
            call_id: Arc::from(""),
            deadline: 0,
            created_ns: 0,
            streams: Vec::new(),
        }
    }
}

/// Calls the timeout sweep visits per tick at most. The sweep reads four counters of each
/// stream in cold memory: ~0.25 µs a call in one pass, ~0.8 µs in slices (packets evict it
/// between slices). At 10,000 calls a single pass took ~2.5 ms on the control thread, and on
/// a core shared with a data-plane worker every packet arriving meanwhile waited for it; in
/// slices of 500 every 50 ms, 0.4 ms stalls still held up ~1% of packets (p99). Slices of
/// 100 every 10 ms keep each stall under ~0.1 ms.
pub const SWEEP_PER_TICK: usize = 100;

/// Stream records the sweep (and its backend's `warm`) brings into the cache a level at a
/// time: a slice's streams, [`SWEEP_PER_TICK`] calls of one or two each. Beyond, the rest
/// are read cold.
pub const WARM_AT_ONCE: usize = 2 * SWEEP_PER_TICK;

/// A sweep round starts at most this often (the shortest round period, [`sweep_round_ns`]).
/// Timeouts are tens of seconds and rates are per second, so once a second is enough;
/// sweeping 100 calls on every 10 ms tick cost ~3% of a relay core at 20k packets/s
/// (`perf`: the control thread, 2.7% of the relay's CPU).
pub const SWEEP_ROUND_NS: Nanos = NANOS_PER_SEC;

/// Call visits per second the sweep spreads its rounds to, up to [`SWEEP_ROUND_MAX_NS`]: at
/// 25,000 calls back-to-back rounds of 100 calls a tick visited 10,000 calls a second, a
/// quarter of the relay's CPU on the in-kernel path (each visit ~1.2 µs of cold memory); at
/// 5,000 a second the visits and their quality samples were still most of what the relay
/// spent at 25,000 calls beyond what it spent at 100 (issue 19: the relay's cost per packet
/// at 25,000 calls within 1.1× of 100 calls, same traffic). A fixed budget of visits a
/// second keeps that cost flat as calls grow; what grows instead is how late a timeout may
/// fire and how far apart the relay's quality samples are.
pub const SWEEP_VISITS_PER_SEC: u64 = 2_500;

/// The longest round period: a media timeout fires at most this much (plus a tick) after it
/// is due, up to 100,000 calls; beyond, rounds run back to back at [`SWEEP_PER_TICK`] a tick
/// and a round takes calls / 10,000 seconds. Twice the relay's own quality sample interval
/// ([`RELAY_SAMPLE_NS`](crate::session::quality::RELAY_SAMPLE_NS)): a round period either
/// divides the sample interval (a stream is looked at a whole number of times per sample)
/// or is this, when a stream is sampled at every look, 10 s apart.
pub const SWEEP_ROUND_MAX_NS: Nanos = 2 * crate::session::quality::RELAY_SAMPLE_NS;

/// The period of a sweep round over `calls` calls: at least [`SWEEP_ROUND_NS`], long enough to
/// visit no more than [`SWEEP_VISITS_PER_SEC`] calls a second, at most [`SWEEP_ROUND_MAX_NS`].
/// Up to the sample interval it is a whole fraction of it (5 s, 2.5 s, 1.67 s, 1.25 s, 1 s
/// with the defaults), so the quality samples every 5 s find a look 5 s after the last;
/// beyond (over 12,500 calls with the defaults) it is [`SWEEP_ROUND_MAX_NS`].
pub fn sweep_round_ns(calls: usize) -> Nanos {
    let sample = crate::session::quality::RELAY_SAMPLE_NS;
    let wanted = (calls as u64)
        .saturating_mul(NANOS_PER_SEC)
        .checked_div(SWEEP_VISITS_PER_SEC)
        .unwrap_or(0)
        .clamp(SWEEP_ROUND_NS, SWEEP_ROUND_MAX_NS);
    if wanted > sample {
        return SWEEP_ROUND_MAX_NS;
    }
    let parts = (sample / wanted.max(1)).max(1);
    // Rounded up: `parts` rounds take no less than the sample interval.
    sample.div_ceil(parts)
}

/// Where the timeout sweep stands in the manager's call order, and the live counters summed
/// so far in this round (for the rates, computed when a round ends).
#[derive(Debug, Default)]
struct Sweep {
    /// Slots visited in this round (every call before it, none after it).
    pos: usize,
    /// The round ended: calls added since wait for the next one.
    done: bool,
    live: Totals,
    /// When the current (or last) round started; `None` before the first.
    started_ns: Option<Nanos>,
    /// The current round's period ([`sweep_round_ns`] of the calls at its start).
    round_ns: Nanos,
}

#[derive(Debug, Default)]
struct Rates {
    last_ns: Nanos,
    last: Counters,
    packet: u64,
    byte: u64,
    error: u64,
}

pub struct SessionManager<B: MediaBackend> {
    backend: B,
    cfg: ManagerConfig,
    /// Every call, by Call-ID and in the order the timeout sweep visits them.
    calls: table::CallTable,
    lingering: Vec<Lingering>,
    started_ns: Nanos,
    managed: u64,
    rejected: u64,
    timeouts: u64,
    terminated: u64,
    /// Counters of streams already closed.
    closed: Totals,
    /// Their quality figures.
    closed_quality: QualityTotals,
    rates: Rates,
    sweep: Sweep,
    control: control::ControlStats,
    /// The state store's sink and the calls waiting to be written to it.
    store: persist::StoreState,
    /// Quality samples of live streams (taken by the sweep; see `session::quality`).
    /// Boxed values (~0.5 KB each): the table's spare buckets then cost 16 bytes, not a
    /// whole record (memory per call).
    quality: crate::session::backend::StreamIdMap<Box<StreamQuality>>,
    /// Every quality sample taken so far, summed (`/metrics`).
    sample_totals: crate::session::quality::SampleTotals,
    /// Where call records go (`record.rs`), and how many a full queue cost.
    records: Option<std::sync::mpsc::SyncSender<CallRecord>>,
    records_dropped: u64,
    /// Draining and live log level (shared with the app's signal handling).
    lifecycle: Arc<Lifecycle>,
    /// The SIP proxy's relay set (statistics only; the proxy's hook drives it).
    relay_set: Option<Arc<std::sync::Mutex<crate::relayset::RelaySet>>>,
}

/// What `delete` names.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteRequest<'a> {
    pub call_id: &'a str,
    pub from_tag: Option<&'a str>,
    pub to_tag: Option<&'a str>,
    pub via_branch: Option<&'a str>,
    /// Overrides the configured delete delay.
    pub delay_ns: Option<Nanos>,
    /// What the call record says ended the call (when this deletes it whole).
    pub reason: EndReason,
}

/// The relay ports the endpoint on `side` sends to.
fn side_ports(s: &OpenedStream, side: Side) -> PortPair {
    match side {
        Side::A => s.a_ports,
        Side::B => s.b_ports,
    }
}

impl<B: MediaBackend> SessionManager<B> {
    pub fn new(backend: B, cfg: ManagerConfig, now: Nanos) -> Self {
        SessionManager {
            backend,
            cfg,
            calls: table::CallTable::default(),
            lingering: Vec::new(),
            started_ns: now,
            managed: 0,
            rejected: 0,
            timeouts: 0,
            terminated: 0,
            closed: Totals::default(),
            closed_quality: QualityTotals::default(),
            rates: Rates {
                last_ns: now,
                ..Rates::default()
            },
            sweep: Sweep::default(),
            control: control::ControlStats::default(),
            store: persist::StoreState::default(),
            quality: Default::default(),
            sample_totals: Default::default(),
            records: None,
            records_dropped: 0,
            lifecycle: Lifecycle::new(),
            relay_set: None,
        }
    }

    /// The SIP proxy's relay set, reported by `statistics`.
    pub fn set_relay_set(&mut self, set: Arc<std::sync::Mutex<crate::relayset::RelaySet>>) {
        self.relay_set = Some(set);
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// Shares the process's run state (draining, log level) with this manager.
    pub fn set_lifecycle(&mut self, l: Arc<Lifecycle>) {
        self.lifecycle = l;
    }

    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// Changes the session limit live (0 = none); calls beyond it keep going.
    pub fn set_max_sessions(&mut self, n: usize) {
        self.cfg.max_sessions = n;
    }

    /// Changes the media timeout live (0 disables it).
    pub fn set_timeout_ns(&mut self, ns: Nanos) {
        self.cfg.timeout_ns = ns;
    }

    /// Live calls (not counting deleted ones lingering in their delete delay).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.calls.get(call_id)
    }

    /// Closes a stream, keeping its final counters in the totals.
    fn close_stream(&mut self, id: StreamId) {
        if let Some(st) = self.backend.stats(id) {
            self.closed.add_side(&st.a);
            self.closed.add_side(&st.b);
            self.closed_quality.add_side(&SideBrief::of(&st.a));
            self.closed_quality.add_side(&SideBrief::of(&st.b));
        }
        self.backend.close(id);
        self.quality.remove(&id);
    }

    fn close_streams(&mut self, ids: impl IntoIterator<Item = StreamId>) {
        for id in ids {
            self.close_stream(id);
        }
    }

    /// Removes a call from the table, keeping the sweep's place (see `table`).
    fn remove_call(&mut self, id: &str) -> Option<Box<Call>> {
        let call = self.calls.remove(id, &mut self.sweep.pos)?;
        self.mark_dirty(id);
        Some(call)
    }

    /// Logs pending data-plane events (latching), once each, with their call id. Returns how
    /// many were logged.
    pub fn drain_events(&mut self) -> usize {
        let mut n = 0;
        while n < MAX_EVENTS_PER_DRAIN {
            let Some(ev) = self.backend.poll_event() else {
                break;
            };
            n += 1;
            // The backend keeps each open stream's Call-ID (live and lingering streams).
            let owner = self.backend.call_of(ev.stream);
            if let Some(c) = &owner {
                // A learned or confirmed endpoint is part of the stored record.
                self.mark_dirty(c);
            }
            let call_id = owner.as_deref().unwrap_or("?");
            let what = match ev.kind {
                LatchEventKind::Learned => "learned peer address",
                LatchEventKind::Confirmed => "confirmed peer address",
                LatchEventKind::Relearned => "peer address changed",
            };
            tracing::info!(
                call_id,
                stream = %ev.stream,
                side = ?ev.side,
                rtcp = ev.rtcp,
                addr = %ev.addr,
                "{what}"
            );
        }
        n
    }
}
