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
//!   A call holds at most [`MAX_DIALOGUES`] dialogues.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::addr::PackedAddr;
use crate::sdp::{Direction, MediaRewrite, Sdp};
use crate::session::backend::{
    BackendError, EndpointSpec, LatchEventKind, MediaBackend, OpenedStream, Side, SideStats,
    SocketCounters, StreamId, StreamSpec,
};
use crate::session::model::{Call, Dialogue, MediaEnd, MediaSlot, MAX_DIALOGUES, MAX_TOKEN_LEN};
use crate::session::negotiate::{
    self, MediaDesc, NegotiateError, NegotiateOptions, RelayInterface, StreamOp,
};
use crate::session::ports::{PortError, PortPair};
use crate::time::{Nanos, NANOS_PER_SEC};

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
        matches!(self, SessionError::SessionLimit | SessionError::OutOfPorts)
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
    /// Where media for this leg goes now: learned source, else the SDP endpoint.
    pub endpoint: Option<SocketAddr>,
    /// What the leg's SDP said (hold address included).
    pub advertised: Option<SocketAddr>,
    /// Where RTCP for this leg goes (from signalling).
    pub rtcp_endpoint: Option<SocketAddr>,
    pub rtcp_mux: bool,
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
    pub port_min: u16,
    pub port_max: u16,
    /// Port pairs in use and in total (from the backend).
    pub pairs_used: usize,
    pub pairs_total: usize,
    /// The data plane's own counters (drops by reason and so on).
    pub dataplane: Vec<(&'static str, u64)>,
}

#[derive(Debug)]
struct Lingering {
    call_id: Arc<str>,
    deadline: Nanos,
    created_ns: Nanos,
    streams: Vec<StreamId>,
}

/// Calls the timeout sweep visits per tick at most. The sweep reads four counters of each
/// stream in cold memory: ~0.25 µs a call in one pass, ~0.8 µs in slices (packets evict it
/// between slices). At 10,000 calls a single pass took ~2.5 ms on the control thread, and on
/// a core shared with a data-plane worker every packet arriving meanwhile waited for it; in
/// slices of 500 every 50 ms, 0.4 ms stalls still held up ~1% of packets (p99). Slices of
/// 100 every 10 ms keep each stall under ~0.1 ms, and a sweep of 10,000 calls still
/// completes once a second.
pub const SWEEP_PER_TICK: usize = 100;

/// A sweep round starts at most this often. Timeouts are tens of seconds and rates are per
/// second, so once a second is enough; sweeping 100 calls on every 10 ms tick cost ~3% of a
/// relay core at 20k packets/s (`perf`: the control thread, 2.7% of the relay's CPU).
pub const SWEEP_ROUND_NS: Nanos = NANOS_PER_SEC;

/// Where the timeout sweep stands in the manager's call order, and the live counters summed
/// so far in this round (for the rates, computed when a round ends).
#[derive(Debug, Default)]
struct Sweep {
    pos: usize,
    live: Totals,
    /// When the current (or last) round started; `None` before the first.
    started_ns: Option<Nanos>,
}

#[derive(Debug, Default)]
struct Rates {
    last_ns: Nanos,
    last: Counters,
    packet: u64,
    byte: u64,
    error: u64,
}

/// Where an offer goes in the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum OfferTarget {
    /// Existing dialogue `idx`; the offerer is on `side`; `name_b` names side B on commit.
    Existing {
        idx: usize,
        side: Side,
        name_b: Option<String>,
    },
    /// A new dialogue with this side B tag (late offer: known at once).
    New { b_tag: Option<String> },
}

pub struct SessionManager<B: MediaBackend> {
    backend: B,
    cfg: ManagerConfig,
    /// Boxed values: the table's buckets stay small, so its spare capacity (up to half the
    /// buckets after a resize) costs 24 bytes a bucket, not 96 (memory per call).
    calls: HashMap<Arc<str>, Box<Call>>,
    /// Stream -> call, for event logs (live and lingering streams).
    stream_calls: HashMap<StreamId, Arc<str>>,
    lingering: Vec<Lingering>,
    started_ns: Nanos,
    managed: u64,
    rejected: u64,
    timeouts: u64,
    terminated: u64,
    /// Counters of streams already closed.
    closed: Totals,
    rates: Rates,
    /// Every call, in the order the sweep visits them. Kept as calls come and go (a removed
    /// call's slot takes the last one), so a round needs no snapshot: cloning 10,000 ids at
    /// the start of each round cost ~1 ms of cold refcount updates on the workers' core.
    order: Vec<Arc<str>>,
    sweep: Sweep,
}

fn check_token(value: &str, what: &'static str) -> Result<(), SessionError> {
    if value.is_empty() {
        return Err(SessionError::Empty(what));
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(SessionError::TooLong(what));
    }
    Ok(())
}

fn side_ports(s: &OpenedStream, side: Side) -> PortPair {
    match side {
        Side::A => s.a_ports,
        Side::B => s.b_ports,
    }
}

fn branch_eq(d: &Dialogue, via: Option<&str>) -> bool {
    d.via_branch.as_deref() == via
}

/// A pending dialogue (side B unnamed) offered by `tag`: exact branch first, then (when the
/// signal has no branch, or the offer had none) any.
fn find_pending(call: &Call, tag: &str, via: Option<&str>) -> Option<usize> {
    let pending = |d: &&Dialogue| d.b_tag.is_none() && &*d.a_tag == tag;
    let ds = &call.dialogues;
    ds.iter()
        .position(|d| pending(&d) && branch_eq(d, via))
        .or_else(|| {
            ds.iter()
                .position(|d| pending(&d) && (via.is_none() || d.via_branch.is_none()))
        })
}

fn find_offer_target(call: &Call, sig: &Signal<'_>) -> OfferTarget {
    let from = sig.from_tag;
    let ds = &call.dialogues;
    if let Some(to) = sig.to_tag {
        if let Some(idx) = ds.iter().position(|d| d.joins(from, to)) {
            let side = ds[idx].side_of(from).unwrap_or(Side::A);
            return OfferTarget::Existing {
                idx,
                side,
                name_b: None,
            };
        }
        // An early-dialog offer (UPDATE) naming the callee before any answer did.
        if let Some(idx) = find_pending(call, from, sig.via_branch) {
            return OfferTarget::Existing {
                idx,
                side: Side::A,
                name_b: Some(to.to_owned()),
            };
        }
        // The callee offering into a pending dialogue of the caller.
        if let Some(idx) = find_pending(call, to, sig.via_branch) {
            return OfferTarget::Existing {
                idx,
                side: Side::B,
                name_b: Some(from.to_owned()),
            };
        }
        // Late offer (SDP in the 200): both tags known from the start.
        return OfferTarget::New {
            b_tag: Some(to.to_owned()),
        };
    }
    let via = sig.via_branch;
    let found = ds
        .iter()
        .position(|d| &*d.a_tag == from && branch_eq(d, via))
        .or_else(|| {
            via.is_none()
                .then(|| ds.iter().position(|d| &*d.a_tag == from))
                .flatten()
        });
    if let Some(idx) = found {
        return OfferTarget::Existing {
            idx,
            side: Side::A,
            name_b: None,
        };
    }
    // A callee re-offer from a client that sends no to-tag.
    if let Some(idx) = ds.iter().position(|d| d.b_tag.as_deref() == Some(from)) {
        return OfferTarget::Existing {
            idx,
            side: Side::B,
            name_b: None,
        };
    }
    OfferTarget::New { b_tag: None }
}

/// The dialogue an answer from one of the two tags goes to (either order).
fn find_answer_target(
    call: &Call,
    from: &str,
    to: &str,
    via: Option<&str>,
) -> Option<AnswerTarget> {
    let target = |idx, answerer, name_b: Option<&str>, retarget| AnswerTarget {
        idx,
        answerer,
        name_b: name_b.map(str::to_owned),
        retarget,
    };
    let ds = &call.dialogues;
    if let Some(idx) = ds.iter().position(|d| d.joins(from, to)) {
        return Some(target(idx, ds[idx].offerer.other(), None, false));
    }
    if let Some(idx) = find_pending(call, from, via) {
        return Some(target(idx, Side::B, Some(to), false));
    }
    if let Some(idx) = find_pending(call, to, via) {
        return Some(target(idx, Side::B, Some(from), false));
    }
    // Another fork answering an offer made without via-branch: re-target side B.
    let retarget = |offerer: &str, answerer: &str| {
        ds.iter()
            .position(|d| {
                &*d.a_tag == offerer
                    && d.offerer == Side::A
                    && (branch_eq(d, via) || d.via_branch.is_none())
            })
            .map(|idx| target(idx, Side::B, Some(answerer), true))
    };
    retarget(from, to).or_else(|| retarget(to, from))
}

/// Refuses an empty or over-long token among `tokens` (checked in order; `None` is fine).
fn check_tokens(tokens: &[(Option<&str>, &'static str)]) -> Result<(), SessionError> {
    for &(v, what) in tokens {
        if let Some(v) = v {
            check_token(v, what)?;
        }
    }
    Ok(())
}

/// An SDP body as its sender described it: the parsed body, one [`MediaDesc`] per m= line,
/// and the warnings so far.
pub(super) struct Described<'s> {
    pub(super) sdp: Sdp<'s>,
    pub(super) descs: Vec<MediaDesc>,
    pub(super) warnings: Vec<String>,
}

impl<'s> Described<'s> {
    fn new(sdp: Sdp<'s>, opts: &NegotiateOptions) -> Result<Described<'s>, SessionError> {
        let mut warnings = Vec::new();
        let descs = negotiate::describe(&sdp, opts, &mut warnings)?;
        Ok(Described {
            sdp,
            descs,
            warnings,
        })
    }
}

/// An offer as read, before the call is looked up.
pub(super) enum OfferSdp<'s> {
    /// The SDP already points at this relay and loop protection is on: passed on unchanged.
    Loop(Negotiated),
    Media(Described<'s>),
}

/// Checks an offer's tokens and reads its SDP.
pub(super) fn read_offer<'s>(
    sig: &Signal<'s>,
    opts: &NegotiateOptions,
    interfaces: &[RelayInterface],
) -> Result<OfferSdp<'s>, SessionError> {
    check_tokens(&[
        (Some(sig.call_id), "call-id"),
        (Some(sig.from_tag), "from-tag"),
        (sig.to_tag, "to-tag"),
        (sig.via_branch, "via-branch"),
        (sig.label, "label"),
    ])?;
    let sdp = Sdp::parse(sig.sdp).map_err(NegotiateError::from)?;
    if opts.loop_protect && negotiate::points_at_relay(&sdp, interfaces) {
        return Ok(OfferSdp::Loop(Negotiated {
            sdp: sig.sdp.to_vec(),
            warnings: vec!["SDP already points at this relay (loop): passed on unchanged".into()],
        }));
    }
    Ok(OfferSdp::Media(Described::new(sdp, opts)?))
}

/// Checks an answer's tokens (a to-tag is required) and reads its SDP. Returns the to-tag.
pub(super) fn read_answer<'s>(
    sig: &Signal<'s>,
    opts: &NegotiateOptions,
) -> Result<(&'s str, Described<'s>), SessionError> {
    check_tokens(&[
        (Some(sig.call_id), "call-id"),
        (Some(sig.from_tag), "from-tag"),
    ])?;
    let to_tag = sig.to_tag.ok_or(SessionError::NoToTag)?;
    check_tokens(&[(Some(to_tag), "to-tag"), (sig.label, "label")])?;
    let sdp = Sdp::parse(sig.sdp).map_err(NegotiateError::from)?;
    Ok((to_tag, Described::new(sdp, opts)?))
}

/// The relay's addresses for the leg an SDP goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RelayAddrs {
    /// What goes into `c=`.
    pub(super) sdp: IpAddr,
    /// The bound address that leg sends to.
    pub(super) local: IpAddr,
}

/// The SDP a plan passes on: the body as received, the relay addresses for the leg it goes
/// to, and the warnings for the client.
pub(super) struct Outgoing<'s> {
    pub(super) sdp: Sdp<'s>,
    pub(super) relay: RelayAddrs,
    pub(super) warnings: Vec<String>,
}

impl<'s> Outgoing<'s> {
    fn new(sdp: Sdp<'s>, iface: &RelayInterface, warnings: Vec<String>) -> Outgoing<'s> {
        Outgoing {
            sdp,
            relay: RelayAddrs {
                sdp: iface.sdp_addr(),
                local: iface.local,
            },
            warnings,
        }
    }

    /// The body rewritten: per m= line, (the stream relaying it, rtcp-mux toward the leg);
    /// a relayed line names the ports `side` sends to, any other passes unchanged.
    fn render(
        &self,
        lines: impl Iterator<Item = (Option<OpenedStream>, bool)>,
        side: Side,
        opts: &NegotiateOptions,
    ) -> Result<Vec<u8>, NegotiateError> {
        let rewrites = lines
            .map(|(stream, rtcp_mux)| match stream {
                Some(s) => {
                    let p = side_ports(&s, side);
                    MediaRewrite::Relay {
                        rtp_port: p.rtp,
                        rtcp_port: p.rtcp(),
                        rtcp_mux,
                    }
                }
                None => MediaRewrite::Keep,
            })
            .collect();
        negotiate::render(&self.sdp, rewrites, self.relay.sdp, opts)
    }
}

/// The two ends a new stream starts with.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct StreamEnds {
    pub(super) a: EndpointSpec,
    pub(super) b: EndpointSpec,
}

/// What an offer's m= line does with the backend.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum LineStream {
    /// Not relayed (rejected, or a protocol we do not relay); a stream the line had closes.
    None,
    /// The line's open stream stays, ports and all; the offerer's end is updated.
    Keep(OpenedStream),
    /// A new stream is to be opened with these ends (a new line, one brought back, or one
    /// whose kind changed; the old stream of a changed line closes).
    Open(StreamEnds),
    /// The stream opened for this offer (what an `Open` line becomes once allocated).
    Opened(OpenedStream),
}

impl LineStream {
    /// The stream the outgoing SDP names for this line.
    pub(super) fn relayed(&self) -> Option<OpenedStream> {
        match self {
            LineStream::Keep(s) | LineStream::Opened(s) => Some(*s),
            LineStream::None | LineStream::Open(_) => None,
        }
    }
}

/// One m= line of an offer and what it asks for.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct OfferLine {
    pub(super) desc: MediaDesc,
    pub(super) stream: LineStream,
}

/// What an offer asks of the call, worked out from the SDP and the call as it stands, with
/// nothing allocated and nothing changed: the dialogue it goes to, who offers, the relay
/// addresses for the receiving leg and, per m= line, the stream to keep, open or close.
pub(super) struct OfferPlan<'s> {
    /// The SDP for the receiving leg.
    pub(super) out: Outgoing<'s>,
    pub(super) target: OfferTarget,
    pub(super) offerer: Side,
    pub(super) lines: Vec<OfferLine>,
}

impl<'s> OfferPlan<'s> {
    /// Plans an offer into `call` (`None`: a new call).
    pub(super) fn new(
        call: Option<&Call>,
        sig: &Signal<'_>,
        described: Described<'s>,
        opts: &NegotiateOptions,
        interfaces: &[RelayInterface],
    ) -> Result<OfferPlan<'s>, SessionError> {
        let Described {
            sdp,
            descs,
            warnings,
        } = described;
        let target = match call {
            Some(call) => find_offer_target(call, sig),
            None => OfferTarget::New {
                b_tag: sig.to_tag.map(str::to_owned),
            },
        };
        let no_slots: &[MediaSlot] = &[];
        let (offerer, existing) = match (&target, call) {
            (OfferTarget::Existing { idx, side, .. }, Some(call)) => (
                *side,
                call.dialogues
                    .get(*idx)
                    .map_or(no_slots, |d| d.media.as_slice()),
            ),
            (OfferTarget::New { .. }, Some(call)) if call.dialogues.len() >= MAX_DIALOGUES => {
                return Err(SessionError::TooManyBranches(MAX_DIALOGUES));
            }
            _ => (Side::A, no_slots),
        };
        let receiver = offerer.other();
        let ops = negotiate::plan_streams(existing, &descs);
        // Answer the receiving leg in its own family when we know it, else in the offerer's.
        let receiver_v6 = existing
            .iter()
            .map(|s| s.end(receiver))
            .find(|e| e.known)
            .map(|e| e.ipv6)
            .unwrap_or_else(|| {
                descs
                    .iter()
                    .find(|d| d.relayed())
                    .is_some_and(|d| d.end.ipv6)
            });
        let iface = negotiate::pick_interface(interfaces, opts.family, receiver_v6)?;
        let lines = descs
            .into_iter()
            .zip(ops)
            .enumerate()
            .map(|(i, (desc, op))| {
                let stream = match op {
                    StreamOp::Open | StreamOp::Reopen => {
                        LineStream::Open(new_stream_ends(&desc, offerer, opts))
                    }
                    StreamOp::Update => existing
                        .get(i)
                        .and_then(|s| s.stream)
                        .map_or(LineStream::None, LineStream::Keep),
                    StreamOp::Skip | StreamOp::Close => LineStream::None,
                };
                OfferLine { desc, stream }
            })
            .collect();
        Ok(OfferPlan {
            out: Outgoing::new(sdp, iface, warnings),
            target,
            offerer,
            lines,
        })
    }

    /// The SDP for the receiving leg: each relayed line names the relay ports that leg sends
    /// to (the streams must be allocated by now).
    pub(super) fn render(&self, opts: &NegotiateOptions) -> Result<Vec<u8>, NegotiateError> {
        let lines = self.lines.iter().map(|l| {
            let mux = opts.rtcp_mux.toward_answerer(l.desc.end.mux_in_sdp);
            (l.stream.relayed(), mux)
        });
        self.out.render(lines, self.offerer.other(), opts)
    }
}

/// The ends of a stream opened for an offered line: the offerer's from its SDP; the
/// receiver's unknown until it answers, with the rtcp-mux we offer it and the offerer's
/// clock rates.
fn new_stream_ends(desc: &MediaDesc, offerer: Side, opts: &NegotiateOptions) -> StreamEnds {
    let offerer_end = desc.end.endpoint.clone();
    let receiver_end = EndpointSpec {
        rtp: PackedAddr::NONE,
        rtcp: PackedAddr::NONE,
        rtcp_mux: opts.rtcp_mux.toward_answerer(desc.end.mux_in_sdp),
        latch: opts.latch,
        clock_rates: offerer_end.clock_rates.clone(),
    };
    let (a, b) = match offerer {
        Side::A => (offerer_end, receiver_end),
        Side::B => (receiver_end, offerer_end),
    };
    StreamEnds { a, b }
}

/// The streams opened for one offer, closed again when the guard is dropped: whatever fails
/// between opening and commit (an allocation half-way through the lines, an SDP that does not
/// render) leaves nothing open. [`Allocation::commit`] disarms it.
struct Allocation<'b, B: MediaBackend> {
    backend: &'b mut B,
    opened: Vec<StreamId>,
}

impl<'b, B: MediaBackend> Allocation<'b, B> {
    /// Opens a stream for each `Open` line, which becomes `Opened`. On failure, the streams
    /// opened so far are closed and the lines are not to be used.
    fn open(
        backend: &'b mut B,
        call_id: &Arc<str>,
        lines: &mut [OfferLine],
        now: Nanos,
    ) -> Result<Allocation<'b, B>, BackendError> {
        let mut guard = Allocation {
            backend,
            opened: Vec::new(),
        };
        for line in lines {
            let LineStream::Open(ends) = &mut line.stream else {
                continue;
            };
            let StreamEnds { a, b } = std::mem::take(ends);
            let spec = StreamSpec {
                call_id: call_id.clone(),
                a,
                b,
            };
            let s = guard.backend.open(spec, now)?;
            guard.opened.push(s.id);
            line.stream = LineStream::Opened(s);
        }
        Ok(guard)
    }

    /// Keeps the streams: the guard closes nothing when dropped. Returns their ids.
    fn commit(mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.opened)
    }
}

impl<B: MediaBackend> Drop for Allocation<'_, B> {
    fn drop(&mut self) {
        for &id in &self.opened {
            self.backend.close(id);
        }
    }
}

/// What an answer does with the stream of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AnswerStream {
    /// The line had no stream.
    None,
    /// Relayed by both legs with the same kind: the stream stays.
    Keep(OpenedStream),
    /// Refused by the answer or answered with another kind: the stream closes.
    Close(OpenedStream),
}

/// One m= line of an answer and what it asks for.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AnswerLine {
    pub(super) desc: MediaDesc,
    pub(super) stream: AnswerStream,
    /// Whether the answerer muxes RTCP (it said so and was offered it).
    pub(super) answerer_mux: bool,
    /// Whether the offerer muxes, as our answer tells it.
    pub(super) offerer_mux: bool,
}

/// Where an answer goes in the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AnswerTarget {
    pub(super) idx: usize,
    pub(super) answerer: Side,
    /// A new tag for side B.
    pub(super) name_b: Option<String>,
    /// The new tag replaces a named side B (another fork answered an offer without branch).
    pub(super) retarget: bool,
}

/// What an answer asks of the call, worked out with nothing changed: the dialogue, the relay
/// addresses for the offerer and, per m= line, the stream kept or closed and rtcp-mux.
pub(super) struct AnswerPlan<'s> {
    /// The SDP for the offerer.
    pub(super) out: Outgoing<'s>,
    pub(super) target: AnswerTarget,
    pub(super) lines: Vec<AnswerLine>,
}

impl<'s> AnswerPlan<'s> {
    /// Plans an answer from `sig` (the two tags in `sig.from_tag` and `to_tag`) into `call`.
    pub(super) fn new(
        call: &Call,
        sig: &Signal<'_>,
        to_tag: &str,
        described: Described<'s>,
        opts: &NegotiateOptions,
        interfaces: &[RelayInterface],
    ) -> Result<AnswerPlan<'s>, SessionError> {
        let Described {
            sdp,
            descs,
            mut warnings,
        } = described;
        let target = find_answer_target(call, sig.from_tag, to_tag, sig.via_branch)
            .ok_or(SessionError::NoOffer)?;
        let offerer = target.answerer.other();
        let d = call
            .dialogues
            .get(target.idx)
            .ok_or(SessionError::NoOffer)?;
        if descs.len() != d.media.len() {
            warnings.push(format!(
                "answer has {} m= lines, the offer had {}",
                descs.len(),
                d.media.len()
            ));
        }
        let offerer_v6 = d
            .media
            .iter()
            .map(|s| s.end(offerer))
            .find(|e| e.known)
            .is_some_and(|e| e.ipv6);
        let iface = negotiate::pick_interface(interfaces, opts.family, offerer_v6)?;
        let mut lines = Vec::with_capacity(descs.len());
        for desc in descs {
            let slot = d.media.get(desc.index as usize - 1);
            let stream = match slot.and_then(|s| s.stream.map(|st| (s, st))) {
                None => AnswerStream::None,
                Some((s, st)) if desc.relayed() && s.kind.eq_ignore_ascii_case(&desc.kind) => {
                    AnswerStream::Keep(st)
                }
                Some((s, st)) => {
                    if !desc.rejected {
                        warnings.push(format!(
                            "answer m= line {} ({}) does not match the offer ({}): stream closed",
                            desc.index, desc.kind, s.kind
                        ));
                    }
                    AnswerStream::Close(st)
                }
            };
            let (answerer_mux, offerer_mux) = match slot {
                Some(s) => {
                    let offered_to_answerer = s.mux_policy.toward_answerer(s.mux_offered);
                    let ans = desc.end.mux_in_sdp && offered_to_answerer;
                    (ans, s.mux_policy.offerer_final(s.mux_offered, ans))
                }
                None => (false, false),
            };
            lines.push(AnswerLine {
                desc,
                stream,
                answerer_mux,
                offerer_mux,
            });
        }
        Ok(AnswerPlan {
            out: Outgoing::new(sdp, iface, warnings),
            target,
            lines,
        })
    }

    /// The SDP for the offerer: each kept line names the relay ports the offerer sends to.
    pub(super) fn render(&self, opts: &NegotiateOptions) -> Result<Vec<u8>, NegotiateError> {
        let lines = self.lines.iter().map(|l| {
            let kept = match l.stream {
                AnswerStream::Keep(s) => Some(s),
                AnswerStream::None | AnswerStream::Close(_) => None,
            };
            (kept, l.offerer_mux)
        });
        self.out.render(lines, self.target.answerer.other(), opts)
    }
}

impl<B: MediaBackend> SessionManager<B> {
    pub fn new(backend: B, cfg: ManagerConfig, now: Nanos) -> Self {
        SessionManager {
            backend,
            cfg,
            calls: HashMap::new(),
            stream_calls: HashMap::new(),
            lingering: Vec::new(),
            started_ns: now,
            managed: 0,
            rejected: 0,
            timeouts: 0,
            terminated: 0,
            closed: Totals::default(),
            rates: Rates {
                last_ns: now,
                ..Rates::default()
            },
            order: Vec::new(),
            sweep: Sweep::default(),
        }
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

    /// Live calls (not counting deleted ones lingering in their delete delay).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.calls.get(call_id).map(|c| &**c)
    }

    fn unix(&self, mono: Nanos) -> Duration {
        self.cfg.unix_at_zero + Duration::from_nanos(mono)
    }

    fn unix_secs_or_zero(&self, mono: Nanos) -> u64 {
        if mono == 0 {
            0
        } else {
            self.unix(mono).as_secs()
        }
    }

    /// Closes a stream, keeping its final counters in the totals.
    fn close_stream(&mut self, id: StreamId) {
        if let Some(st) = self.backend.stats(id) {
            self.closed.add_side(&st.a);
            self.closed.add_side(&st.b);
        }
        self.backend.close(id);
        self.stream_calls.remove(&id);
    }

    fn close_streams(&mut self, ids: impl IntoIterator<Item = StreamId>) {
        for id in ids {
            self.close_stream(id);
        }
    }

    fn call_totals(&self, call: &Call) -> Totals {
        let mut t = Totals::default();
        for s in call.streams() {
            if let Some(st) = self.backend.stats(s.id) {
                t.add_side(&st.a);
                t.add_side(&st.b);
            }
        }
        t
    }

    /// An SDP offer from `sig.from_tag`. Returns the SDP for the other leg.
    pub fn offer(
        &mut self,
        sig: &Signal<'_>,
        opts: &NegotiateOptions,
        now: Nanos,
    ) -> Result<Negotiated, SessionError> {
        let described = match read_offer(sig, opts, &self.cfg.interfaces)? {
            OfferSdp::Loop(passed) => return Ok(passed),
            OfferSdp::Media(described) => described,
        };
        let existing_call = self.calls.get(sig.call_id).map(|c| &**c);
        if existing_call.is_none()
            && self.cfg.max_sessions > 0
            && self.calls.len() >= self.cfg.max_sessions
        {
            self.rejected += 1;
            return Err(SessionError::SessionLimit);
        }
        let new_call = existing_call.is_none();
        let call_id: Arc<str> = match existing_call {
            Some(c) => c.id.clone(),
            None => Arc::from(sig.call_id),
        };
        let mut plan = OfferPlan::new(existing_call, sig, described, opts, &self.cfg.interfaces)?;

        // Everything is allocated before anything is committed: until `commit`, the guard
        // closes what it opened when an allocation or the rendering fails.
        let allocation = match Allocation::open(&mut self.backend, &call_id, &mut plan.lines, now) {
            Ok(allocation) => allocation,
            Err(e) => {
                if new_call {
                    self.rejected += 1;
                }
                tracing::warn!(call_id = %call_id, error = %e, "offer: stream allocation failed");
                return Err(e.into());
            }
        };
        let sdp = plan.render(opts)?;
        let opened = allocation.commit();
        let warnings = std::mem::take(&mut plan.out.warnings);
        self.commit_offer(&call_id, sig, plan, &opened, opts, now);
        Ok(Negotiated { sdp, warnings })
    }

    /// Records an allocated offer in the call (created if new): the dialogue, its legs, one
    /// media slot per m= line; updates the offerer's end of kept streams and closes the
    /// streams the offer replaced or dropped.
    fn commit_offer(
        &mut self,
        call_id: &Arc<str>,
        sig: &Signal<'_>,
        plan: OfferPlan<'_>,
        opened: &[StreamId],
        opts: &NegotiateOptions,
        now: Nanos,
    ) {
        let OfferPlan {
            target,
            offerer,
            out: Outgoing { relay, .. },
            lines,
            ..
        } = plan;
        let receiver = offerer.other();
        let call = match self.calls.entry(call_id.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                self.managed += 1;
                let mut call = Box::new(Call::new(call_id.clone(), now));
                call.sweep_slot = self.order.len();
                self.order.push(call_id.clone());
                v.insert(call)
            }
        };
        call.last_signal_ns = now;
        call.touch_leg(sig.from_tag, sig.label, now);
        if let Some(to) = sig.to_tag {
            call.touch_leg(to, None, now);
        }
        let idx = match target {
            OfferTarget::Existing { idx, name_b, .. } => {
                if let (Some(b), Some(d)) = (name_b, call.dialogues.get_mut(idx)) {
                    d.b_tag = Some(b.into());
                }
                idx
            }
            OfferTarget::New { b_tag } => {
                call.dialogues.reserve_exact(1);
                call.dialogues.push(Dialogue {
                    a_tag: sig.from_tag.into(),
                    b_tag: b_tag.map(String::into_boxed_str),
                    via_branch: sig.via_branch.map(Into::into),
                    offerer: Side::A,
                    answered: false,
                    media: Vec::new(),
                    created_ns: now,
                });
                call.dialogues.len() - 1
            }
        };
        let mut to_close = Vec::new();
        if let Some(d) = call.dialogues.get_mut(idx) {
            d.offerer = offerer;
            d.answered = false;
            let mut old = std::mem::take(&mut d.media).into_iter();
            // Exactly one slot per m= line: a grown Vec would reserve four (~1.9 KB a call).
            d.media.reserve_exact(lines.len());
            for OfferLine { desc, stream } in lines {
                let prev = old.next();
                let MediaDesc {
                    index,
                    kind,
                    proto,
                    end,
                    label,
                    ..
                } = desc;
                let mut slot = match (&stream, prev) {
                    (LineStream::Keep(_), Some(mut s)) => {
                        if let Some(st) = s.stream {
                            self.backend
                                .update(st.id, offerer, end.endpoint.clone(), now);
                        }
                        s.kind = kind.into();
                        s.proto = proto.into();
                        s
                    }
                    (stream, prev) => {
                        if let Some(st) = prev.as_ref().and_then(|p| p.stream) {
                            to_close.push(st.id);
                        }
                        // A closed line keeps what the receiver said about it; a new stream
                        // starts with nothing known about the receiver.
                        let keep_receiver = *stream == LineStream::None;
                        let receiver_end = prev
                            .filter(|_| keep_receiver)
                            .map(|p| p.end(receiver).clone())
                            .unwrap_or_default();
                        let mut s = MediaSlot {
                            index,
                            kind: kind.into(),
                            proto: proto.into(),
                            stream: stream.relayed(),
                            a: MediaEnd::default(),
                            b: MediaEnd::default(),
                            mux_policy: opts.rtcp_mux,
                            mux_offered: false,
                            label: None,
                        };
                        *s.end_mut(receiver) = receiver_end;
                        s
                    }
                };
                slot.index = index;
                slot.label = label.map(String::into_boxed_str);
                slot.mux_policy = opts.rtcp_mux;
                slot.mux_offered = end.mux_in_sdp;
                let prev_relay = slot.end(offerer).relay_local;
                *slot.end_mut(offerer) = MediaEnd {
                    relay_local: prev_relay,
                    ..end
                };
                if slot.stream.is_some() {
                    slot.end_mut(receiver).relay_local = Some(relay.local);
                }
                d.media.push(slot);
            }
            // A shorter re-offer (not RFC 3264 compliant): drop the extra lines.
            for s in old {
                if let Some(st) = s.stream {
                    to_close.push(st.id);
                }
            }
        }
        for &id in opened {
            self.stream_calls.insert(id, call_id.clone());
        }
        self.close_streams(to_close);
    }

    /// An SDP answer. `sig.from_tag`/`sig.to_tag` name the two legs (either order; the leg
    /// that did not make the pending offer is the answerer). Returns the SDP for the offerer.
    pub fn answer(
        &mut self,
        sig: &Signal<'_>,
        opts: &NegotiateOptions,
        now: Nanos,
    ) -> Result<Negotiated, SessionError> {
        let (to_tag, described) = read_answer(sig, opts)?;
        let call = self
            .calls
            .get(sig.call_id)
            .ok_or(SessionError::UnknownCall)?;
        let mut plan = AnswerPlan::new(call, sig, to_tag, described, opts, &self.cfg.interfaces)?;
        let sdp = plan.render(opts)?;
        let warnings = std::mem::take(&mut plan.out.warnings);
        self.commit_answer(sig, to_tag, plan, now)?;
        Ok(Negotiated { sdp, warnings })
    }

    /// Records an answer in its dialogue: names or re-targets side B, updates both ends of
    /// kept streams and closes the streams the answer refused.
    fn commit_answer(
        &mut self,
        sig: &Signal<'_>,
        to_tag: &str,
        plan: AnswerPlan<'_>,
        now: Nanos,
    ) -> Result<(), SessionError> {
        let AnswerPlan {
            target:
                AnswerTarget {
                    idx,
                    answerer,
                    name_b,
                    retarget,
                },
            out: Outgoing { relay, .. },
            lines,
            ..
        } = plan;
        let offerer = answerer.other();
        let mut to_close = Vec::new();
        let Some(call) = self.calls.get_mut(sig.call_id) else {
            return Err(SessionError::UnknownCall);
        };
        call.last_signal_ns = now;
        let answerer_tag = match &name_b {
            Some(b) => b.clone(),
            None => call
                .dialogues
                .get(idx)
                .and_then(|d| d.tag(answerer))
                .unwrap_or(to_tag)
                .to_owned(),
        };
        call.touch_leg(&answerer_tag, sig.label, now);
        if let Some(d) = call.dialogues.get_mut(idx) {
            if let Some(b) = name_b {
                if retarget {
                    tracing::info!(call_id = %call.id, old = ?d.b_tag, new = %b,
                        "answer from another fork: callee side re-targeted");
                    for s in &mut d.media {
                        s.b = MediaEnd {
                            relay_local: s.b.relay_local,
                            ..MediaEnd::default()
                        };
                    }
                }
                d.b_tag = Some(b.into());
            }
            d.answered = true;
            for line in lines {
                let Some(slot) = d.media.get_mut(line.desc.index as usize - 1) else {
                    continue;
                };
                let prev_relay = slot.end(answerer).relay_local;
                let mut end = MediaEnd {
                    relay_local: prev_relay,
                    ..line.desc.end
                };
                end.set_mux(line.answerer_mux);
                match line.stream {
                    AnswerStream::Keep(s) => {
                        self.backend
                            .update(s.id, answerer, end.endpoint.clone(), now);
                        let off = slot.end_mut(offerer);
                        off.relay_local = Some(relay.local);
                        if off.endpoint.rtcp_mux != line.offerer_mux {
                            off.set_mux(line.offerer_mux);
                            self.backend
                                .update(s.id, offerer, off.endpoint.clone(), now);
                        }
                    }
                    AnswerStream::Close(s) => {
                        to_close.push(s.id);
                        slot.stream = None;
                    }
                    AnswerStream::None => {}
                }
                *slot.end_mut(answerer) = end;
            }
        }
        call.prune_legs();
        self.close_streams(to_close);
        Ok(())
    }

    /// Deletes a call, or one of its dialogues (see the module doc). Returns the call's report
    /// as it was just before (when `want_report`).
    pub fn delete(
        &mut self,
        req: &DeleteRequest<'_>,
        want_report: bool,
        now: Nanos,
    ) -> Result<Option<CallReport>, SessionError> {
        let call = self.calls.get(req.call_id).ok_or(SessionError::NotFound)?;
        let known = |t: &str| call.has_tag(t) || call.leg(t).is_some();
        if req.from_tag.is_some_and(|t| !known(t)) || req.to_tag.is_some_and(|t| !known(t)) {
            return Err(SessionError::NotFound);
        }
        let victims: Vec<usize> = if let Some(to) = req.to_tag {
            let v: Vec<usize> = call
                .dialogues
                .iter()
                .enumerate()
                .filter(|(_, d)| match req.from_tag {
                    Some(from) => d.joins(from, to),
                    None => d.side_of(to).is_some(),
                })
                .map(|(i, _)| i)
                .collect();
            if v.is_empty() {
                return Err(SessionError::NotFound);
            }
            v
        } else {
            let by_branch: Vec<usize> = match req.via_branch {
                Some(via) => call
                    .dialogues
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| {
                        d.via_branch.as_deref() == Some(via)
                            && req.from_tag.is_none_or(|f| d.side_of(f).is_some())
                    })
                    .map(|(i, _)| i)
                    .collect(),
                None => Vec::new(),
            };
            if by_branch.is_empty() {
                (0..call.dialogues.len()).collect()
            } else {
                by_branch
            }
        };
        let report = want_report.then(|| self.report(call));
        let delay = req.delay_ns.unwrap_or(self.cfg.delete_delay_ns);
        let Some(call) = self.calls.get_mut(req.call_id) else {
            return Err(SessionError::NotFound);
        };
        let mut streams = Vec::new();
        for &i in victims.iter().rev() {
            if i < call.dialogues.len() {
                let d = call.dialogues.remove(i);
                streams.extend(d.streams().map(|s| s.id));
            }
        }
        let call_id = call.id.clone();
        let created_ns = call.created_ns;
        if call.dialogues.is_empty() {
            self.remove_call(req.call_id);
            self.terminated += 1;
            tracing::info!(call_id = %call_id, "call deleted");
        } else {
            call.prune_legs();
            tracing::info!(call_id = %call_id, dialogues = victims.len(), "branch deleted");
        }
        if delay > 0 && !streams.is_empty() {
            self.lingering.push(Lingering {
                call_id,
                deadline: now.saturating_add(delay),
                created_ns,
                streams,
            });
        } else {
            self.close_streams(streams);
        }
        Ok(report)
    }

    /// The call's state and counters.
    pub fn query(&self, call_id: &str) -> Result<CallReport, SessionError> {
        let call = self.calls.get(call_id).ok_or(SessionError::UnknownCall)?;
        Ok(self.report(call))
    }

    /// Call-IDs, oldest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<Arc<str>> {
        let mut v: Vec<(&Nanos, &Arc<str>)> = self
            .calls
            .values()
            .map(|c| (&c.created_ns, &c.id))
            .collect();
        v.sort();
        v.into_iter()
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn live_totals(&self) -> Totals {
        let mut t = Totals::default();
        let lingering = self
            .lingering
            .iter()
            .flat_map(|l| l.streams.iter().copied());
        let live = self.calls.values().flat_map(|c| c.streams().map(|s| s.id));
        for id in live.chain(lingering) {
            if let Some(st) = self.backend.stats(id) {
                t.add_side(&st.a);
                t.add_side(&st.b);
            }
        }
        t
    }

    pub fn statistics(&self, now: Nanos) -> Statistics {
        let mut relayed = self.closed;
        relayed.add(&self.live_totals());
        let (pairs_used, pairs_total) = self.backend.port_usage();
        Statistics {
            sessions: self.calls.len(),
            lingering: self.lingering.len(),
            packet_rate: self.rates.packet,
            byte_rate: self.rates.byte,
            error_rate: self.rates.error,
            uptime_secs: now.saturating_sub(self.started_ns) / NANOS_PER_SEC,
            managed_sessions: self.managed,
            rejected_sessions: self.rejected,
            timeout_sessions: self.timeouts,
            terminated_sessions: self.terminated,
            relayed: relayed.sum(),
            interfaces: self.cfg.interfaces.clone(),
            port_min: self.cfg.port_min,
            port_max: self.cfg.port_max,
            pairs_used,
            pairs_total,
            dataplane: self.backend.counters(),
        }
    }

    /// Removes a call from the table and from the sweep order (its slot takes the last call).
    fn remove_call(&mut self, id: &str) -> Option<Box<Call>> {
        let call = self.calls.remove(id)?;
        let slot = call.sweep_slot;
        if slot < self.order.len() {
            self.order.swap_remove(slot);
            if let Some(moved) = self.order.get(slot) {
                if let Some(c) = self.calls.get_mut(moved) {
                    c.sweep_slot = slot;
                }
            }
        }
        Some(call)
    }

    /// Called every 10 ms or so: ends lingering deletes, sweeps up to [`SWEEP_PER_TICK`]
    /// calls for media timeouts, and updates the rates when a sweep round ends. A round
    /// starts at most once per [`SWEEP_ROUND_NS`]; with up to 100 calls it ends in one tick. Returns the calls closed, for the caller to
    /// log with their final counters.
    pub fn tick(&mut self, now: Nanos) -> Vec<ClosedCall> {
        let mut closed = Vec::new();
        let mut expired = Vec::new();
        self.lingering.retain_mut(|l| {
            if l.deadline <= now {
                expired.push(std::mem::take(l));
                false
            } else {
                true
            }
        });
        for l in expired {
            let mut totals = Totals::default();
            for &id in &l.streams {
                if let Some(st) = self.backend.stats(id) {
                    totals.add_side(&st.a);
                    totals.add_side(&st.b);
                }
                self.close_stream(id);
            }
            closed.push(ClosedCall {
                call_id: l.call_id,
                reason: CloseReason::DeleteDelayExpired,
                age_ns: now.saturating_sub(l.created_ns),
                totals,
            });
        }

        // The timeout sweep, in slices of SWEEP_PER_TICK calls, over `order`. A call added
        // during a round is visited in it if the sweep has not passed the end yet; a call
        // moved into a visited slot by a removal waits for the next round. None is visited
        // twice in a round.
        if self.sweep.pos >= self.order.len() {
            if self
                .sweep
                .started_ns
                .is_some_and(|t| now.saturating_sub(t) < SWEEP_ROUND_NS)
            {
                return closed;
            }
            self.sweep.pos = 0;
            self.sweep.live = Totals::default();
        }
        if self.sweep.pos == 0 {
            self.sweep.started_ns = Some(now);
        }
        let end = self
            .sweep
            .pos
            .saturating_add(SWEEP_PER_TICK)
            .min(self.order.len());
        let mut live = self.sweep.live;
        let mut dead = Vec::new();
        for id in self.order.get(self.sweep.pos..end).unwrap_or_default() {
            let Some(call) = self.calls.get(id) else {
                continue;
            };
            let mut last = call.last_signal_ns;
            for s in call.streams() {
                if let Some([a_rtp, a_rtcp, b_rtp, b_rtcp]) = self.backend.socket_counters(s.id) {
                    for c in [a_rtp, a_rtcp, b_rtp, b_rtcp] {
                        last = last.max(c.last_packet_ns);
                    }
                    live.rtp.add(&a_rtp);
                    live.rtp.add(&b_rtp);
                    live.rtcp.add(&a_rtcp);
                    live.rtcp.add(&b_rtcp);
                }
            }
            if self.cfg.timeout_ns > 0 && now.saturating_sub(last) >= self.cfg.timeout_ns {
                dead.push(call.id.clone());
            }
        }
        self.sweep.pos = end;
        self.sweep.live = live;
        let round_done = self.sweep.pos >= self.order.len();
        for id in dead {
            let Some(call) = self.remove_call(&id) else {
                continue;
            };
            let totals = self.call_totals(&call);
            let ids: Vec<StreamId> = call.streams().map(|s| s.id).collect();
            self.close_streams(ids);
            self.timeouts += 1;
            tracing::info!(call_id = %id, "call timed out (no media)");
            closed.push(ClosedCall {
                call_id: id,
                reason: CloseReason::Timeout,
                age_ns: now.saturating_sub(call.created_ns),
                totals,
            });
        }

        // Rates over the interval since the last finished sweep (live streams of calls still
        // open plus everything closed; lingering streams count once they close).
        if !round_done {
            return closed;
        }
        let mut total = self.closed;
        total.add(&live);
        let cur = total.sum();
        let dt = now.saturating_sub(self.rates.last_ns);
        if dt > 0 {
            let per_sec = |a: u64, b: u64| {
                (u128::from(a.saturating_sub(b)) * u128::from(NANOS_PER_SEC) / u128::from(dt))
                    as u64
            };
            self.rates.packet = per_sec(cur.packets, self.rates.last.packets);
            self.rates.byte = per_sec(cur.bytes, self.rates.last.bytes);
            self.rates.error = per_sec(cur.errors, self.rates.last.errors);
            self.rates.last = cur;
            self.rates.last_ns = now;
        }
        closed
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
            let call_id = self
                .stream_calls
                .get(&ev.stream)
                .map_or("?", |c| c.as_ref());
            let what = match ev.kind {
                LatchEventKind::Learned => "learned peer address",
                LatchEventKind::Confirmed => "confirmed peer address",
                LatchEventKind::Relearned => "peer address changed",
            };
            tracing::info!(
                call_id,
                stream = ev.stream,
                side = ?ev.side,
                rtcp = ev.rtcp,
                addr = %ev.addr,
                "{what}"
            );
        }
        n
    }

    fn report(&self, call: &Call) -> CallReport {
        let mut totals = Totals::default();
        let mut tags: Vec<TagReport> = Vec::new();
        let mut pending: Option<TagReport> = None;
        for leg in &call.legs {
            tags.push(TagReport {
                tag: leg.tag.to_string(),
                label: leg.label.as_deref().map(str::to_owned),
                created_unix: self.unix(leg.created_ns).as_secs(),
                via_branch: None,
                peers: Vec::new(),
                medias: Vec::new(),
            });
        }
        for d in &call.dialogues {
            let stats: Vec<_> = d
                .media
                .iter()
                .map(|m| m.stream.and_then(|s| self.backend.stats(s.id)))
                .collect();
            for st in stats.iter().flatten() {
                totals.add_side(&st.a);
                totals.add_side(&st.b);
            }
            for side in [Side::A, Side::B] {
                let medias: Vec<MediaReport> = d
                    .media
                    .iter()
                    .zip(&stats)
                    .map(|(m, st)| self.media_report(m, side, st.map(|s| *s.side(side))))
                    .collect();
                let peer = d.tag(side.other()).unwrap_or_default().to_owned();
                let entry = match d.tag(side) {
                    Some(tag) => {
                        if !tags.iter().any(|t| t.tag == tag) {
                            tags.push(TagReport {
                                tag: tag.to_owned(),
                                label: None,
                                created_unix: self.unix(d.created_ns).as_secs(),
                                via_branch: None,
                                peers: Vec::new(),
                                medias: Vec::new(),
                            });
                        }
                        tags.iter_mut().find(|t| t.tag == tag)
                    }
                    None => Some(pending.get_or_insert_with(|| TagReport {
                        tag: String::new(),
                        label: None,
                        created_unix: self.unix(d.created_ns).as_secs(),
                        via_branch: None,
                        peers: Vec::new(),
                        medias: Vec::new(),
                    })),
                };
                if let Some(t) = entry {
                    if side == Side::B && d.via_branch.is_some() {
                        t.via_branch = d.via_branch.as_deref().map(str::to_owned);
                    }
                    if !peer.is_empty() && !t.peers.contains(&peer) {
                        t.peers.push(peer);
                    }
                    t.medias.extend(medias);
                }
            }
        }
        tags.extend(pending);
        CallReport {
            call_id: call.id.clone(),
            created: self.unix(call.created_ns),
            last_signal_unix: self.unix(call.last_signal_ns).as_secs(),
            tags,
            totals,
        }
    }

    fn media_report(&self, m: &MediaSlot, side: Side, stats: Option<SideStats>) -> MediaReport {
        let end = m.end(side);
        let stats = stats.unwrap_or_default();
        MediaReport {
            index: m.index,
            kind: m.kind.to_string(),
            proto: m.proto.to_string(),
            label: m.label.as_deref().map(str::to_owned),
            ports: m.stream.map(|s| side_ports(&s, side)),
            local_addr: m.stream.and(end.relay_local),
            endpoint: stats.learned_rtp.or(end.endpoint.rtp()),
            advertised: end.advertised.get(),
            rtcp_endpoint: end.endpoint.rtcp_dest(),
            rtcp_mux: end.endpoint.rtcp_mux,
            direction: end.direction,
            last_rtp_unix: self.unix_secs_or_zero(stats.rtp.last_packet_ns),
            last_rtcp_unix: self.unix_secs_or_zero(stats.rtcp.last_packet_ns),
            stats,
        }
    }
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

/// What `delete` names.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteRequest<'a> {
    pub call_id: &'a str,
    pub from_tag: Option<&'a str>,
    pub to_tag: Option<&'a str>,
    pub via_branch: Option<&'a str>,
    /// Overrides the configured delete delay.
    pub delay_ns: Option<Nanos>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fake::FakeBackend;
    use crate::session::model::RtcpMuxPolicy;

    const S: Nanos = NANOS_PER_SEC;
    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\nm=video 6002 RTP/AVP 96\r\n";
    const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";

    fn mgr() -> SessionManager<FakeBackend> {
        let cfg = ManagerConfig {
            interfaces: vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())],
            ..ManagerConfig::default()
        };
        SessionManager::new(FakeBackend::new(30000, 30999).unwrap(), cfg, S)
    }

    fn sig<'a>(from: &'a str, to: Option<&'a str>, sdp: &'a str) -> Signal<'a> {
        Signal {
            call_id: "c",
            from_tag: from,
            to_tag: to,
            sdp: sdp.as_bytes(),
            ..Signal::default()
        }
    }

    #[test]
    fn answer_rejecting_a_stream_closes_it() {
        let mut m = mgr();
        let o = NegotiateOptions::default();
        m.offer(&sig("a", None, OFFER), &o, S).unwrap();
        assert_eq!(m.backend().open_count(), 2);
        let out = m.answer(&sig("a", Some("b"), ANSWER), &o, S).unwrap();
        let text = String::from_utf8(out.sdp).unwrap();
        assert!(text.contains("m=audio 30000 RTP/AVP 0\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
        assert_eq!(m.backend().open_count(), 1);
        let call = m.call("c").unwrap();
        assert!(call.dialogues[0].answered);
        assert!(call.dialogues[0].media[1].stream.is_none());
    }

    #[test]
    fn callee_update_before_answer_names_side_b() {
        let mut m = mgr();
        let o = NegotiateOptions::default();
        m.offer(&sig("a", None, OFFER), &o, S).unwrap();
        // Early-dialog UPDATE from the callee: from-tag b, to-tag a, no answer yet.
        let out = m.offer(&sig("b", Some("a"), ANSWER), &o, 2 * S).unwrap();
        assert!(String::from_utf8(out.sdp)
            .unwrap()
            .contains("m=audio 30000 "));
        let d = &m.call("c").unwrap().dialogues[0];
        assert_eq!((d.b_tag.as_deref(), d.offerer), (Some("b"), Side::B));
        assert_eq!(m.call("c").unwrap().dialogues.len(), 1);
    }

    #[test]
    fn shorter_reoffer_closes_dropped_lines() {
        let mut m = mgr();
        let o = NegotiateOptions::default();
        m.offer(&sig("a", None, OFFER), &o, S).unwrap();
        let audio_only = OFFER.replace("m=video 6002 RTP/AVP 96\r\n", "");
        m.offer(&sig("a", None, &audio_only), &o, S).unwrap();
        assert_eq!(m.backend().open_count(), 1);
        assert_eq!(m.call("c").unwrap().dialogues[0].media.len(), 1);
    }

    #[test]
    fn branches_per_call_are_bounded() {
        let mut m = mgr();
        let o = NegotiateOptions::default();
        for n in 0..MAX_DIALOGUES {
            let b = format!("br{n}");
            let s = Signal {
                via_branch: Some(&b),
                ..sig("a", None, OFFER)
            };
            m.offer(&s, &o, S).unwrap();
        }
        let s = Signal {
            via_branch: Some("one-too-many"),
            ..sig("a", None, OFFER)
        };
        assert_eq!(
            m.offer(&s, &o, S),
            Err(SessionError::TooManyBranches(MAX_DIALOGUES))
        );
        assert_eq!(m.backend().open_count(), 2 * MAX_DIALOGUES);
    }

    #[test]
    fn hostile_tokens_are_refused_before_any_allocation() {
        let mut m = mgr();
        let o = NegotiateOptions::default();
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            m.offer(&sig(&long, None, OFFER), &o, S),
            Err(SessionError::TooLong("from-tag"))
        );
        assert_eq!(
            m.offer(&sig("", None, OFFER), &o, S),
            Err(SessionError::Empty("from-tag"))
        );
        assert!(m.offer(&sig("a", None, "v=1\r\n"), &o, S).is_err());
        assert_eq!(m.backend().opens, 0);
        assert_eq!(m.call_count(), 0);
    }

    #[test]
    fn backend_failure_other_than_ports_is_an_error_not_a_load_limit() {
        let mut m = mgr();
        m.backend_mut().fail_next_open = Some(BackendError::Unavailable("worker gone".into()));
        let e = m
            .offer(&sig("a", None, OFFER), &NegotiateOptions::default(), S)
            .unwrap_err();
        assert!(!e.is_load_limit());
        assert_eq!(
            e.to_string(),
            "Media backend failure: data plane unavailable: worker gone"
        );
        assert_eq!(m.backend().open_count(), 0);
    }

    // The plans on their own: a call built by hand, no backend.

    fn described(sdp: &str) -> Described<'_> {
        let sdp = Sdp::parse(sdp.as_bytes()).unwrap();
        Described::new(sdp, &NegotiateOptions::default()).unwrap()
    }

    fn interfaces() -> Vec<RelayInterface> {
        vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())]
    }

    fn opened(id: StreamId, a: u16, b: u16) -> OpenedStream {
        OpenedStream {
            id,
            a_ports: PortPair { rtp: a },
            b_ports: PortPair { rtp: b },
        }
    }

    /// Call "c" with one dialogue offered by "a" (side B named `b_tag`, if any) relaying
    /// OFFER's two lines on streams 1 (ports 30000/30002) and 2 (30004/30006).
    fn offered_call(b_tag: Option<&str>) -> Call {
        let streams = [opened(1, 30000, 30002), opened(2, 30004, 30006)];
        let media = described(OFFER)
            .descs
            .into_iter()
            .zip(streams)
            .map(|(d, st)| MediaSlot {
                index: d.index,
                kind: d.kind.into(),
                proto: d.proto.into(),
                stream: Some(st),
                a: d.end,
                b: MediaEnd::default(),
                mux_policy: RtcpMuxPolicy::Passthrough,
                mux_offered: false,
                label: None,
            })
            .collect();
        let mut call = Call::new(Arc::from("c"), S);
        call.dialogues.push(Dialogue {
            a_tag: "a".into(),
            b_tag: b_tag.map(Into::into),
            via_branch: None,
            offerer: Side::A,
            answered: b_tag.is_some(),
            media,
            created_ns: S,
        });
        call
    }

    fn text(out: Result<Vec<u8>, NegotiateError>) -> String {
        String::from_utf8(out.unwrap()).unwrap()
    }

    #[test]
    fn offer_plan_for_a_new_call_opens_each_relayed_line() {
        let sdp = format!("{OFFER}m=image 0 udptl t38\r\n");
        let opts = NegotiateOptions {
            rtcp_mux: RtcpMuxPolicy::Offer,
            ..NegotiateOptions::default()
        };
        let s = sig("a", None, &sdp);
        let plan = OfferPlan::new(None, &s, described(&sdp), &opts, &interfaces()).unwrap();
        assert_eq!(plan.target, OfferTarget::New { b_tag: None });
        assert_eq!(plan.offerer, Side::A);
        let relay_ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            plan.out.relay,
            RelayAddrs {
                sdp: relay_ip,
                local: relay_ip
            }
        );
        assert_eq!(plan.lines.len(), 3);
        let LineStream::Open(ends) = &plan.lines[0].stream else {
            panic!("{:?}", plan.lines[0].stream);
        };
        assert_eq!(ends.a.rtp(), Some("192.0.2.10:6000".parse().unwrap()));
        assert_eq!(ends.a, plan.lines[0].desc.end.endpoint);
        // The receiver is unknown until it answers; it is offered rtcp-mux (policy Offer).
        assert_eq!((ends.b.rtp(), ends.b.rtcp_dest()), (None, None));
        assert!(ends.b.rtcp_mux && !ends.a.rtcp_mux);
        assert_eq!(ends.b.clock_rates, ends.a.clock_rates);
        assert!(matches!(plan.lines[1].stream, LineStream::Open(_)));
        assert_eq!(plan.lines[2].stream, LineStream::None);
    }

    #[test]
    fn offer_plan_keeps_the_streams_of_an_unchanged_reoffer() {
        let call = offered_call(Some("b"));
        let o = NegotiateOptions::default();
        let s = sig("a", Some("b"), OFFER);
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &interfaces()).unwrap();
        assert_eq!(
            plan.target,
            OfferTarget::Existing {
                idx: 0,
                side: Side::A,
                name_b: None
            }
        );
        let streams: Vec<_> = plan.lines.iter().map(|l| l.stream.clone()).collect();
        assert_eq!(
            streams,
            [
                LineStream::Keep(opened(1, 30000, 30002)),
                LineStream::Keep(opened(2, 30004, 30006))
            ]
        );
        // The callee is told the ports of side B.
        let out = text(plan.render(&o));
        assert!(out.contains("c=IN IP4 203.0.113.1\r\n"), "{out}");
        assert!(out.contains("m=audio 30002 RTP/AVP 0\r\n"), "{out}");
        assert!(out.contains("m=video 30006 RTP/AVP 96\r\n"), "{out}");
    }

    #[test]
    fn callee_reoffer_plan_puts_the_callee_on_side_b() {
        let call = offered_call(Some("b"));
        let o = NegotiateOptions::default();
        let reoffer = ANSWER.replace("m=video 0 RTP/AVP 96", "m=text 16002 RTP/AVP 98");
        let s = sig("b", Some("a"), &reoffer);
        let plan = OfferPlan::new(Some(&call), &s, described(&reoffer), &o, &interfaces()).unwrap();
        assert_eq!(plan.offerer, Side::B);
        assert_eq!(
            plan.lines[0].stream,
            LineStream::Keep(opened(1, 30000, 30002))
        );
        // A line that changed kind is re-opened; the callee's end is side B.
        let LineStream::Open(ends) = &plan.lines[1].stream else {
            panic!("{:?}", plan.lines[1].stream);
        };
        assert_eq!(ends.b.rtp(), Some("198.51.100.20:16002".parse().unwrap()));
        assert_eq!(ends.a.rtp(), None);
        // The caller is told the ports of side A.
        let out = text(plan.render(&o));
        assert!(out.contains("m=audio 30000 RTP/AVP 0\r\n"), "{out}");
    }

    #[test]
    fn offer_plan_refuses_a_branch_beyond_the_limit() {
        let mut call = offered_call(None);
        let first = call.dialogues[0].clone();
        call.dialogues = (0..MAX_DIALOGUES)
            .map(|n| Dialogue {
                via_branch: Some(format!("br{n}").into()),
                ..first.clone()
            })
            .collect();
        let s = Signal {
            via_branch: Some("one-too-many"),
            ..sig("a", None, OFFER)
        };
        let o = NegotiateOptions::default();
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &interfaces());
        assert_eq!(
            plan.err(),
            Some(SessionError::TooManyBranches(MAX_DIALOGUES))
        );
    }

    #[test]
    fn offer_plan_answers_the_receiver_in_its_own_family() {
        let mut call = offered_call(Some("b"));
        for m in &mut call.dialogues[0].media {
            m.b.known = true;
            m.b.ipv6 = true;
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut ifs = interfaces();
        ifs.push(RelayInterface::new("y", v6));
        let o = NegotiateOptions::default();
        let s = sig("a", Some("b"), OFFER);
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &ifs).unwrap();
        assert_eq!(plan.out.relay.sdp, v6);
        // A new call has only the offerer's family to go by.
        let plan = OfferPlan::new(None, &s, described(OFFER), &o, &ifs).unwrap();
        assert_eq!(plan.out.relay.sdp, "203.0.113.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn answer_plan_keeps_relayed_lines_and_closes_refused_ones() {
        let call = offered_call(None);
        let o = NegotiateOptions::default();
        let s = sig("a", Some("b"), ANSWER);
        let plan = AnswerPlan::new(&call, &s, "b", described(ANSWER), &o, &interfaces()).unwrap();
        assert_eq!(
            plan.target,
            AnswerTarget {
                idx: 0,
                answerer: Side::B,
                name_b: Some("b".into()),
                retarget: false
            }
        );
        let streams: Vec<_> = plan.lines.iter().map(|l| l.stream).collect();
        assert_eq!(
            streams,
            [
                AnswerStream::Keep(opened(1, 30000, 30002)),
                AnswerStream::Close(opened(2, 30004, 30006))
            ]
        );
        assert!(plan.out.warnings.is_empty(), "{:?}", plan.out.warnings);
        // The caller is told the ports of side A; the refused line keeps port 0.
        let out = text(plan.render(&o));
        assert!(out.contains("m=audio 30000 RTP/AVP 0\r\n"), "{out}");
        assert!(out.contains("m=video 0 RTP/AVP 96\r\n"), "{out}");
    }

    #[test]
    fn answer_plan_closes_a_line_answered_with_another_kind() {
        let call = offered_call(None);
        let answer = ANSWER.replace("m=video 0 RTP/AVP 96", "m=text 16002 RTP/AVP 98");
        let s = sig("b", Some("a"), &answer);
        let o = NegotiateOptions::default();
        let plan = AnswerPlan::new(&call, &s, "a", described(&answer), &o, &interfaces()).unwrap();
        assert_eq!(plan.target.name_b.as_deref(), Some("b"));
        assert_eq!(
            plan.lines[1].stream,
            AnswerStream::Close(opened(2, 30004, 30006))
        );
        assert_eq!(plan.out.warnings.len(), 1);
        assert!(plan.out.warnings[0].contains("does not match the offer (video)"));
    }

    #[test]
    fn answer_plan_muxes_only_what_was_offered() {
        let mut call = offered_call(None);
        call.dialogues[0].media[0].mux_offered = true;
        let answer = ANSWER.replace(
            "m=audio 16000 RTP/AVP 0\r\n",
            "m=audio 16000 RTP/AVP 0\r\na=rtcp-mux\r\n",
        );
        let s = sig("a", Some("b"), &answer);
        let o = NegotiateOptions::default();
        let plan = AnswerPlan::new(&call, &s, "b", described(&answer), &o, &interfaces()).unwrap();
        assert!(plan.lines[0].answerer_mux && plan.lines[0].offerer_mux);
        call.dialogues[0].media[0].mux_offered = false;
        let plan = AnswerPlan::new(&call, &s, "b", described(&answer), &o, &interfaces()).unwrap();
        assert!(!plan.lines[0].answerer_mux && !plan.lines[0].offerer_mux);
    }

    #[test]
    fn answer_plan_from_another_fork_retargets_side_b() {
        let call = offered_call(Some("b"));
        let s = sig("a", Some("c"), ANSWER);
        let o = NegotiateOptions::default();
        let plan = AnswerPlan::new(&call, &s, "c", described(ANSWER), &o, &interfaces()).unwrap();
        assert_eq!(
            plan.target,
            AnswerTarget {
                idx: 0,
                answerer: Side::B,
                name_b: Some("c".into()),
                retarget: true
            }
        );
        let stranger = sig("x", Some("y"), ANSWER);
        let plan = AnswerPlan::new(&call, &stranger, "y", described(ANSWER), &o, &interfaces());
        assert_eq!(plan.err(), Some(SessionError::NoOffer));
    }

    fn planned_offer(sdp: &str) -> OfferPlan<'_> {
        let s = sig("a", None, sdp);
        let o = NegotiateOptions::default();
        OfferPlan::new(None, &s, described(sdp), &o, &interfaces()).unwrap()
    }

    #[test]
    fn allocation_closes_what_it_opened_unless_committed() {
        let call_id: Arc<str> = Arc::from("c");
        // Ports for one stream only: the second line fails, the first is closed again.
        let mut backend = FakeBackend::new(30000, 30003).unwrap();
        let mut plan = planned_offer(OFFER);
        let failed = Allocation::open(&mut backend, &call_id, &mut plan.lines, S).err();
        assert_eq!(failed, Some(BackendError::Ports(PortError::Exhausted)));
        assert_eq!((backend.opens, backend.closes), (1, 1));
        assert_eq!(backend.open_count(), 0);

        let mut backend = FakeBackend::new(30000, 30999).unwrap();
        let mut plan = planned_offer(OFFER);
        drop(Allocation::open(&mut backend, &call_id, &mut plan.lines, S).unwrap());
        assert_eq!((backend.opens, backend.closes), (2, 2));

        let mut plan = planned_offer(OFFER);
        let allocation = Allocation::open(&mut backend, &call_id, &mut plan.lines, S).unwrap();
        let ids = allocation.commit();
        assert_eq!(ids.len(), 2);
        assert_eq!(backend.open_count(), 2);
        let streams: Vec<_> = plan.lines.iter().map(|l| l.stream.relayed()).collect();
        assert_eq!(
            streams.iter().flatten().map(|s| s.id).collect::<Vec<_>>(),
            ids
        );
        assert!(plan
            .lines
            .iter()
            .all(|l| matches!(l.stream, LineStream::Opened(_))));
    }
}
