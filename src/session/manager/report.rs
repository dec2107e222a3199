//! What the manager reports: `query` (a call's tags, media and counters), `list` and
//! `statistics`.

use std::sync::Arc;
use std::time::Duration;

use crate::session::backend::{MediaBackend, Side, SideStats};
use crate::session::manager::{
    side_ports, CallReport, InterfacePorts, MediaReport, SessionError, SessionManager, Statistics,
    TagReport, Totals,
};
use crate::session::model::{Call, MediaSlot};
use crate::session::ports::pairs_in_range;
use crate::session::quality::{DirectionSummary, StreamQuality};
use crate::time::{Nanos, NANOS_PER_SEC};

impl<B: MediaBackend> SessionManager<B> {
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
            interface_ports: self.interface_ports(),
            port_min: self.cfg.port_min,
            port_max: self.cfg.port_max,
            pairs_used,
            pairs_total,
            dataplane: self.backend.counters(),
            control: self.control.clone(),
            media_relays: self
                .relay_set
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).snapshot())
                .unwrap_or_default(),
        }
    }

    /// Ports on each configured interface address, as the backend counts them by address
    /// (each pair is two ports). An address the backend has no pool for yet (the fake makes
    /// them on first use) has the configured range, none used.
    fn interface_ports(&self) -> Vec<InterfacePorts> {
        let by_address = self.backend.address_usage();
        let range = pairs_in_range(self.cfg.port_min, self.cfg.port_max) as u64;
        self.cfg
            .interfaces
            .iter()
            .map(|i| match by_address.iter().find(|u| u.addr == i.local) {
                Some(u) => InterfacePorts {
                    used: 2 * u.used_pairs as u64,
                    total: 2 * u.total_pairs as u64,
                },
                None => InterfacePorts {
                    used: 0,
                    total: 2 * range,
                },
            })
            .collect()
    }

    /// Counts one ng command handled for `source` in `elapsed_ns` (the ng server calls it).
    pub fn note_command(
        &mut self,
        source: Option<std::net::IpAddr>,
        command: &str,
        elapsed_ns: Nanos,
        error: bool,
    ) {
        self.control.note(source, command, elapsed_ns, error);
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

    pub(super) fn call_totals(&self, call: &Call) -> Totals {
        let mut t = Totals::default();
        for s in call.streams() {
            if let Some(st) = self.backend.stats(s.id) {
                t.add_side(&st.a);
                t.add_side(&st.b);
            }
        }
        t
    }

    pub(super) fn report(&self, call: &Call) -> CallReport {
        let mut totals = Totals::default();
        let mut tags: Vec<TagReport> = Vec::new();
        let mut pending: Option<TagReport> = None;
        for leg in &call.legs {
            tags.push(TagReport {
                tag: leg.tag().to_string(),
                label: leg.label().map(str::to_owned),
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
                    if side == Side::B && d.via_branch().is_some() {
                        t.via_branch = d.via_branch().map(str::to_owned);
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
            quality: self.quality_report(call),
            unix_at_zero: self.cfg.unix_at_zero,
        }
    }

    /// Every stream direction's quality, with a last sample of the media since the sweep's
    /// latest (taken on a copy, so a `query` changes nothing), dated by the newest packet.
    fn quality_report(&self, call: &Call) -> Vec<DirectionSummary> {
        let mut out: Vec<DirectionSummary> = Vec::new();
        for s in call.streams() {
            let Some(st) = self.backend.stats(s.id) else {
                continue;
            };
            let mut q = self
                .quality
                .get(&s.id)
                .map(|q| StreamQuality::clone(q))
                .unwrap_or_default();
            q.observe(&st, st.last_packet_ns(), true);
            for receiver in [Side::A, Side::B] {
                if let Some(d) = q.summary(&st, receiver) {
                    // One entry per SSRC, as rtpengine keys them.
                    if !out.iter().any(|o| o.ssrc == d.ssrc) {
                        out.push(d);
                    }
                }
            }
        }
        out
    }

    fn media_report(&self, m: &MediaSlot, side: Side, stats: Option<SideStats>) -> MediaReport {
        let end = m.end(side);
        let stats = stats.unwrap_or_default();
        MediaReport {
            index: m.index,
            kind: m.kind().to_string(),
            proto: m.proto().to_string(),
            label: m.label().map(str::to_owned),
            ports: m.stream.map(|s| side_ports(&s, side)),
            local_addr: m.stream.and(end.relay_local.get()),
            interface: m
                .stream
                .and(end.relay_local.get())
                .and_then(|ip| crate::session::interfaces::owner(&self.cfg.interfaces, ip))
                .map(|i| i.name.clone()),
            // A hold address (0.0.0.0) is shown as it is, as rtpengine does, though no
            // media goes there.
            endpoint: stats
                .learned_rtp
                .or(end.endpoint.rtp())
                .or(end.advertised.get()),
            advertised: end.advertised.get(),
            rtcp_endpoint: end.endpoint.rtcp.get().or(rtcp_advertised(end)),
            rtcp_advertised: rtcp_advertised(end),
            rtcp_mux: end.endpoint.rtcp_mux,
            latch: end.endpoint.latch,
            direction: end.direction,
            last_rtp_unix: self.unix_secs_or_zero(stats.rtp.last_packet_ns),
            last_rtcp_unix: self.unix_secs_or_zero(stats.rtcp.last_packet_ns),
            stats,
        }
    }
}

/// The RTCP address a leg's SDP named: its RTCP address on the advertised RTP address's host
/// (so hold shows as `0.0.0.0`), or port + 1 of the advertised address when the relay keeps
/// none (hold, or no address yet).
fn rtcp_advertised(end: &crate::session::model::MediaEnd) -> Option<std::net::SocketAddr> {
    let adv = end.advertised.get()?;
    match end.endpoint.rtcp.get() {
        Some(r) if r.ip() != adv.ip() && !adv.ip().is_unspecified() => Some(r),
        Some(r) => Some(std::net::SocketAddr::new(adv.ip(), r.port())),
        None => Some(std::net::SocketAddr::new(
            adv.ip(),
            adv.port().checked_add(1)?,
        )),
    }
}
