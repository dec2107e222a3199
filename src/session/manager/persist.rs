//! The manager's side of the state store: which calls changed (a dirty set, so a burst of
//! signalling on one call becomes one write), their records (sans-IO snapshots in the
//! [`crate::store::record`] format), and restoring calls from records at start.
//!
//! Nothing here waits: [`SessionManager::flush_changes`] offers records to a
//! [`ChangeSink`] that only queues them; when it refuses (queue full) the rest stay marked
//! and are offered at the next flush.

use crate::session::local_ip::LocalIp;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::addr::PackedAddr;
use crate::sdp::Direction;
use crate::session::backend::{
    EndpointSpec, MediaBackend, OpenedStream, RestoredStream, Side, SocketCounters, StreamId,
    StreamSpec,
};
use crate::session::latch::LatchMode;
use crate::session::manager::SessionManager;
use crate::session::model::{
    Call, Dialogue, Leg, MediaEnd, MediaNames, MediaSlot, RtcpMuxPolicy, StoreTimes, MAX_DIALOGUES,
    MAX_TOKEN_LEN,
};
use crate::session::ports::PortPair;
use crate::store::record::{
    CallRecord, CounterRecord, DialogueRecord, EndRecord, LegRecord, MediaRecord, RecordError,
    StatsRecord, StreamRecord, RECORD_VERSION,
};
use crate::store::{Change, ChangeSink};
use crate::time::Nanos;

/// Most records offered per flush (bounds the time the manager's lock is held).
pub const MAX_FLUSH: usize = 1024;

/// What the manager keeps for the store.
#[derive(Default)]
pub(super) struct StoreState {
    pub sink: Option<Arc<dyn ChangeSink>>,
    /// Calls whose record changed (or that are gone: a delete).
    pub dirty: HashSet<Arc<str>>,
    /// Calls whose counters moved since their stats were last written.
    pub stats_dirty: HashSet<Arc<str>>,
}

/// Why a stored call was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    #[error("call already present")]
    Duplicate,
    #[error("ports {0}/{1} cannot be bound: {2}")]
    Ports(u16, u16, String),
}

fn latch_name(m: LatchMode) -> &'static str {
    match m {
        LatchMode::Symmetric => "symmetric",
        LatchMode::StrictSource => "strict-source",
        LatchMode::MediaHandover => "media-handover",
        LatchMode::Asymmetric => "asymmetric",
    }
}

fn latch_parse(s: &str) -> Option<LatchMode> {
    Some(match s {
        "symmetric" => LatchMode::Symmetric,
        "strict-source" => LatchMode::StrictSource,
        "media-handover" => LatchMode::MediaHandover,
        "asymmetric" => LatchMode::Asymmetric,
        _ => return None,
    })
}

fn mux_name(p: RtcpMuxPolicy) -> &'static str {
    match p {
        RtcpMuxPolicy::Passthrough => "passthrough",
        RtcpMuxPolicy::Offer => "offer",
        RtcpMuxPolicy::Require => "require",
        RtcpMuxPolicy::Demux => "demux",
        RtcpMuxPolicy::Accept => "accept",
        RtcpMuxPolicy::Reject => "reject",
    }
}

fn mux_parse(s: &str) -> Option<RtcpMuxPolicy> {
    Some(match s {
        "passthrough" => RtcpMuxPolicy::Passthrough,
        "offer" => RtcpMuxPolicy::Offer,
        "require" => RtcpMuxPolicy::Require,
        "demux" => RtcpMuxPolicy::Demux,
        "accept" => RtcpMuxPolicy::Accept,
        "reject" => RtcpMuxPolicy::Reject,
        _ => return None,
    })
}

fn direction_parse(s: &str) -> Option<Direction> {
    [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| d.as_str() == s)
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::A => "a",
        Side::B => "b",
    }
}

fn token(s: &str) -> Result<Box<str>, RestoreError> {
    if s.len() > MAX_TOKEN_LEN {
        return Err(RestoreError::Invalid("tag, label or branch too long"));
    }
    Ok(s.into())
}

fn opt_token(s: &Option<String>) -> Result<Option<Box<str>>, RestoreError> {
    s.as_deref().map(token).transpose()
}

fn counters(c: &SocketCounters) -> CounterRecord {
    CounterRecord {
        packets: c.packets,
        bytes: c.bytes,
        errors: c.errors,
    }
}

fn end_record(e: &MediaEnd, learned: Option<SocketAddr>, confirmed: bool) -> EndRecord {
    EndRecord {
        rtp: e.endpoint.rtp(),
        rtcp: e.endpoint.rtcp.get(),
        rtcp_mux: e.endpoint.rtcp_mux,
        latch: latch_name(e.endpoint.latch).into(),
        clock_rates: e.endpoint.clock_rates.to_vec(),
        advertised: e.advertised.get(),
        direction: e.direction.map(|d| d.as_str().into()),
        known: e.known,
        mux_in_sdp: e.mux_in_sdp,
        ipv6: e.ipv6,
        relay_local: e.relay_local.get(),
        learned,
        confirmed,
    }
}

fn end_from_record(r: &EndRecord) -> Result<MediaEnd, RestoreError> {
    if r.clock_rates.len() > 128 {
        return Err(RestoreError::Invalid("too many clock rates"));
    }
    Ok(MediaEnd {
        endpoint: EndpointSpec {
            rtp: PackedAddr::from_option(r.rtp),
            rtcp: PackedAddr::from_option(r.rtcp),
            rtcp_mux: r.rtcp_mux,
            latch: latch_parse(&r.latch).ok_or(RestoreError::Invalid("latch mode"))?,
            clock_rates: r.clock_rates.as_slice().into(),
        },
        advertised: PackedAddr::from_option(r.advertised),
        direction: match &r.direction {
            Some(d) => Some(direction_parse(d).ok_or(RestoreError::Invalid("direction"))?),
            None => None,
        },
        known: r.known,
        mux_in_sdp: r.mux_in_sdp,
        ipv6: r.ipv6,
        relay_local: LocalIp::from_option(r.relay_local),
    })
}

/// The endpoint the data plane starts with for a restored side: the latched source when
/// there was one, so a NATed phone gets media at once and its packets are accepted as the
/// expected source (an exact match confirms at once, no learning phase).
fn restored_endpoint(end: &MediaEnd, r: &EndRecord) -> EndpointSpec {
    let mut e = end.endpoint.clone();
    if let Some(learned) = r.learned.filter(|_| r.confirmed) {
        e.rtp = PackedAddr::new(learned);
    }
    e
}

impl<B: MediaBackend> SessionManager<B> {
    /// Sends every later change to `sink` (none is sent without one).
    pub fn set_store(&mut self, sink: Arc<dyn ChangeSink>) {
        self.store.sink = Some(sink);
    }

    /// Notes that a call's record changed (or that it is gone).
    pub(super) fn mark_dirty(&mut self, call_id: &str) {
        if self.store.sink.is_none() {
            return;
        }
        if let Some(c) = self.calls.get(call_id) {
            self.store.dirty.insert(c.id.clone());
        } else {
            self.store.dirty.insert(Arc::from(call_id));
        }
    }

    /// Notes that a call's counters moved (from the sweep).
    pub(super) fn mark_stats_dirty(&mut self, call_id: &Arc<str>) {
        if self.store.sink.is_some() {
            self.store.stats_dirty.insert(call_id.clone());
        }
    }

    /// Records (or deletes) waiting to be offered to the store.
    pub fn pending_changes(&self) -> usize {
        self.store.dirty.len() + self.store.stats_dirty.len()
    }

    fn unix_of_mono(&self, mono: Nanos) -> u64 {
        if mono == 0 {
            0
        } else {
            let at_zero = u64::try_from(self.cfg.unix_at_zero.as_nanos()).unwrap_or(u64::MAX);
            at_zero.saturating_add(mono)
        }
    }

    /// A Unix time as this process's monotonic time; times before this process started
    /// become 1 (the earliest reading), `0` stays "never".
    fn mono_of_unix(&self, unix_ns: u64) -> Nanos {
        if unix_ns == 0 {
            return 0;
        }
        let at_zero = u64::try_from(self.cfg.unix_at_zero.as_nanos()).unwrap_or(u64::MAX);
        unix_ns.saturating_sub(at_zero).max(1)
    }

    /// The call's record as it stands.
    pub fn call_record(&self, call: &Call) -> CallRecord {
        let legs = call
            .legs
            .iter()
            .map(|l| LegRecord {
                tag: l.tag().to_string(),
                label: l.label().map(str::to_owned),
                created_unix_ns: self.unix_of_mono(l.created_ns),
            })
            .collect();
        let dialogues = call
            .dialogues
            .iter()
            .map(|d| DialogueRecord {
                a_tag: d.a_tag().to_string(),
                b_tag: d.b_tag.as_deref().map(str::to_owned),
                via_branch: d.via_branch().map(str::to_owned),
                offerer: side_name(d.offerer).into(),
                answered: d.answered,
                created_unix_ns: self.unix_of_mono(d.created_ns),
                media: d.media.iter().map(|m| self.media_record(m)).collect(),
            })
            .collect();
        CallRecord {
            v: RECORD_VERSION,
            call_id: call.id.to_string(),
            created_unix_ns: self.unix_of_mono(call.created_ns),
            last_signal_unix_ns: self.unix_of_mono(call.last_signal_ns),
            legs,
            dialogues,
        }
    }

    fn media_record(&self, m: &MediaSlot) -> MediaRecord {
        let stats = m.stream.and_then(|s| self.backend.stats(s.id));
        let (la, ca, lb, cb) = match &stats {
            Some(s) => (
                s.a.learned_rtp,
                s.a.confirmed,
                s.b.learned_rtp,
                s.b.confirmed,
            ),
            None => (None, false, None, false),
        };
        MediaRecord {
            index: m.index,
            kind: m.kind().to_string(),
            proto: m.proto().to_string(),
            label: m.label().map(str::to_owned),
            mux_policy: mux_name(m.mux_policy).into(),
            mux_offered: m.mux_offered,
            a: end_record(&m.a, la, ca),
            b: end_record(&m.b, lb, cb),
            stream: m.stream.map(|s| StreamRecord {
                a_port: s.a_ports.rtp,
                b_port: s.b_ports.rtp,
            }),
        }
    }

    /// The call's counters and newest packet time.
    pub fn stats_record(&self, call: &Call) -> StatsRecord {
        let mut last = 0;
        let mut streams = Vec::new();
        for s in call.streams() {
            if let Some(c) = self.backend.socket_counters(s.id) {
                for x in &c {
                    last = last.max(x.last_packet_ns);
                }
                streams.push((s.a_ports.rtp, c.each_ref().map(counters)));
            }
        }
        StatsRecord {
            v: RECORD_VERSION,
            last_packet_unix_ns: self.unix_of_mono(last),
            streams,
        }
    }

    /// Offers the changed calls' records to the store (at most [`MAX_FLUSH`]); stops at the
    /// first refusal, leaving the rest marked. Returns how many were taken.
    pub fn flush_changes(&mut self) -> usize {
        let Some(sink) = self.store.sink.clone() else {
            return 0;
        };
        let mut taken = 0;
        let ids: Vec<Arc<str>> = self.store.dirty.iter().take(MAX_FLUSH).cloned().collect();
        for id in ids {
            let change = match self.calls.get(&id) {
                Some(call) => Change::PutCall {
                    call_id: id.to_string(),
                    json: self.call_record(call).emit(),
                },
                None => Change::DeleteCall {
                    call_id: id.to_string(),
                },
            };
            let put = matches!(change, Change::PutCall { .. });
            if !sink.offer(change) {
                return taken;
            }
            taken += 1;
            self.store.dirty.remove(&id);
            // A new record without counters gets them too (and a deleted call none).
            if put {
                self.store.stats_dirty.insert(id);
            } else {
                self.store.stats_dirty.remove(&id);
            }
        }
        let ids: Vec<Arc<str>> = self
            .store
            .stats_dirty
            .iter()
            .take(MAX_FLUSH.saturating_sub(taken))
            .cloned()
            .collect();
        for id in ids {
            let Some(call) = self.calls.get(&id) else {
                self.store.stats_dirty.remove(&id);
                continue;
            };
            let rec = self.stats_record(call);
            let seen = self.mono_of_unix(rec.last_packet_unix_ns);
            let change = Change::PutStats {
                call_id: id.to_string(),
                json: rec.emit(),
            };
            if !sink.offer(change) {
                return taken;
            }
            taken += 1;
            self.store.stats_dirty.remove(&id);
            if let Some(c) = self.calls.get_mut(&id) {
                c.store_times_mut().stored_seen_ns = seen;
            }
        }
        taken
    }

    /// Every call's record and counters as they stand, with the latch events still queued
    /// taken in first: what a process taking over restores.
    pub fn snapshot_calls(&mut self) -> Vec<(String, String, Option<String>)> {
        // Bounded: the events queue holds a few per call, and every pass takes up to its
        // batch.
        for _ in 0..64 {
            if self.drain_events() == 0 {
                break;
            }
        }
        self.calls
            .values()
            .map(|c| {
                (
                    c.id.to_string(),
                    self.call_record(c).emit(),
                    Some(self.stats_record(c).emit()),
                )
            })
            .collect()
    }

    /// Restores a stored call: re-binds its relay ports, starts its streams with the latched
    /// endpoints and counters it had, and adds it to the table. Media timeouts count from
    /// the stored newest packet (or signal). On failure nothing is left open.
    pub fn restore(
        &mut self,
        record: &str,
        stats: Option<&str>,
        now: Nanos,
        now_unix_ns: u64,
    ) -> Result<Arc<str>, RestoreError> {
        let rec = CallRecord::parse(record)?;
        let stats = match stats {
            Some(s) => StatsRecord::parse(s)?,
            None => StatsRecord::default(),
        };
        if rec.call_id.is_empty() || rec.call_id.len() > MAX_TOKEN_LEN {
            return Err(RestoreError::Invalid("call-id"));
        }
        if rec.dialogues.is_empty() || rec.dialogues.len() > MAX_DIALOGUES {
            return Err(RestoreError::Invalid("dialogue count"));
        }
        if rec
            .dialogues
            .iter()
            .any(|d| d.media.len() > crate::sdp::MAX_MEDIA)
            || rec.legs.len() > 2 * MAX_DIALOGUES
        {
            return Err(RestoreError::Invalid("too many legs or media"));
        }
        if self.calls.contains_key(rec.call_id.as_str()) {
            return Err(RestoreError::Duplicate);
        }
        let call_id: Arc<str> = Arc::from(rec.call_id.as_str());
        let mut call = Box::new(Call::new(call_id.clone(), now));
        call.created_ns = self.mono_of_unix(rec.created_unix_ns);
        for l in &rec.legs {
            call.legs.push(Leg::new(
                &token(&l.tag)?,
                opt_token(&l.label)?.as_deref(),
                self.mono_of_unix(l.created_unix_ns),
            ));
        }
        let mut opened: Vec<StreamId> = Vec::new();
        let result = self.restore_dialogues(&rec, &stats, &call_id, now, &mut call, &mut opened);
        if let Err(e) = result {
            for id in opened {
                self.backend.close(id);
            }
            return Err(e);
        }
        // Idle time before this process started: added to the timeout check until media or
        // a signal arrives.
        let last_unix = stats.last_packet_unix_ns.max(rec.last_signal_unix_ns);
        *call.store_times_mut() = StoreTimes {
            stored_seen_ns: now,
            restored_ns: now,
            restored_idle_ns: now_unix_ns.saturating_sub(last_unix),
        };
        call.last_signal_ns = now;
        self.calls.insert(call);
        self.managed += 1;
        Ok(call_id)
    }

    fn restore_dialogues(
        &mut self,
        rec: &CallRecord,
        stats: &StatsRecord,
        call_id: &Arc<str>,
        now: Nanos,
        call: &mut Call,
        opened: &mut Vec<StreamId>,
    ) -> Result<(), RestoreError> {
        for d in &rec.dialogues {
            let offerer = match d.offerer.as_str() {
                "a" => Side::A,
                "b" => Side::B,
                _ => return Err(RestoreError::Invalid("offerer")),
            };
            let a_tag: Box<str> = token(&d.a_tag)?;
            let via_branch: Option<Box<str>> = opt_token(&d.via_branch)?;
            let mut dialogue = Dialogue::new(
                &a_tag,
                via_branch.as_deref(),
                offerer,
                self.mono_of_unix(d.created_unix_ns),
            );
            dialogue.b_tag = opt_token(&d.b_tag)?;
            dialogue.answered = d.answered;
            for m in &d.media {
                let a = end_from_record(&m.a)?;
                let b = end_from_record(&m.b)?;
                let stream = match m.stream {
                    Some(s) => {
                        let base = stats
                            .streams
                            .iter()
                            .find(|(p, _)| *p == s.a_port)
                            .map(|(_, c)| {
                                c.map(|c| SocketCounters {
                                    packets: c.packets,
                                    bytes: c.bytes,
                                    errors: c.errors,
                                    last_packet_ns: 0,
                                })
                            })
                            .unwrap_or_default();
                        let spec = StreamSpec {
                            call_id: call_id.clone(),
                            a: restored_endpoint(&a, &m.a),
                            b: restored_endpoint(&b, &m.b),
                            locals: [a.relay_local.get(), b.relay_local.get()],
                        };
                        let r = RestoredStream {
                            a_ports: PortPair { rtp: s.a_port },
                            b_ports: PortPair { rtp: s.b_port },
                            learned: [m.a.learned, m.b.learned],
                            confirmed: [m.a.confirmed, m.b.confirmed],
                            base,
                        };
                        let o: OpenedStream = self
                            .backend
                            .restore(spec, &r, now)
                            .map_err(|e| RestoreError::Ports(s.a_port, s.b_port, e.to_string()))?;
                        opened.push(o.id);
                        // Sides that settled on mux keep one socket, as before the restart.
                        for (side, end) in [(Side::A, &a), (Side::B, &b)] {
                            if d.answered && end.known && end.endpoint.rtcp_mux {
                                self.backend.settle_rtcp(o.id, side, &end.endpoint, true);
                            }
                        }
                        Some(o)
                    }
                    None => None,
                };
                dialogue.media.push(MediaSlot {
                    index: m.index,
                    names: MediaNames::labelled(&m.kind, &m.proto, opt_token(&m.label)?.as_deref()),
                    stream,
                    a,
                    b,
                    mux_policy: mux_parse(&m.mux_policy).ok_or(RestoreError::Invalid("mux"))?,
                    mux_offered: m.mux_offered,
                });
            }
            call.dialogues.push(dialogue);
        }
        Ok(())
    }
}
