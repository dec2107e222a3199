//! ng command handler: a parsed [`NgRequest`] in, the reply dictionary out, with the session
//! layer ([`SessionManager`]) doing the work. Pure: no sockets, the clock comes in as `now`.
//!
//! Reply shapes follow rtpengine (docs and the 10.5 run in the ng-protocol notes):
//! - `ping` -> `{result: pong}`.
//! - `offer`/`answer` -> `{sdp, result: ok}` plus `warning` (unknown flags, lines not relayed).
//!   Capacity failures ("Parallel session limit reached", "Ran out of ports") answer
//!   `{result: "load limit", message}` when the client sent `supports: ["load limit"]`, else
//!   `{result: error, error-reason}` with the same text (Kamailio fails over on both).
//! - `delete` -> the final report (query shape) with `result: ok`, or just `result: ok` with
//!   flag `fast`. An unknown call or tags: `ok` + warning "Call-ID not found or tags didn't
//!   match", or that as an error with flag `fatal`. The to-tag limits the delete to one
//!   dialogue unless flag `all` is given.
//! - `query` -> `created`, `created_us`, `last signal`, `SSRC`, `tags` ({tag -> {tag, label,
//!   created, in dialogue with, subscriptions, medias: [{index, type, protocol, streams: [RTP,
//!   RTCP], flags}]}}), `totals` {RTP, RTCP}. Each stream has rtpengine's `local port`,
//!   `local address`, `family`, `endpoint`, `advertised endpoint`, `last packet`, `flags`,
//!   `stats` {packets, bytes, errors} (ingress: what that tag sends) and, on the RTP stream,
//!   our extras `SSRC`, `jitter` / `max jitter` (ms, rounded), `jitter us` / `max jitter us`,
//!   `packets lost`, `duplicates`, `reordered`. `SSRC` holds per SSRC the MOS samples of
//!   what that endpoint hears (rtpengine's shape; see `ssrc_block`).
//! - `list` -> `{calls: [...], result: ok}` (oldest first, `limit` default 32).
//! - `statistics` -> `{statistics: {currentstatistics, totalstatistics, interfaces,
//!   controlstatistics, transcoders}}` plus our `dataplane` counters.
//! - Media `send`/`recv` flags say what the relay does toward the leg (a leg that is
//!   `sendonly` is only received from); RTCP streams list the RTCP port even while RTCP is
//!   muxed (flags `RTCP` on the RTP stream and `fallback RTCP` on the RTCP stream then).
//!
//! Policy choices (documented here because the ng client sees them):
//! - Endpoints come from the SDP (`trust address` is the default); `SIP source address`
//!   uses `received-from`'s IP with the SDP port; `media address` overrides both.
//! - Latching: `asymmetric` (or `endpoint-learning=off`) -> never learn, `strict source` ->
//!   learn once, `media handover` -> follow new sources, else symmetric (safe default).
//! - ICE attributes are always removed from relayed media: we do not terminate ICE, and the
//!   endpoint's candidates would route media around the relay. Unless `ICE=remove` asked for
//!   it, the reply warns (rtpengine would offer its own candidates); SDES `a=crypto` passed
//!   end to end is warned about too (rtpengine terminates SDES).
//! - The `label` names the leg that sent the SDP (offer: from-tag, answer: the answerer;
//!   `to-label` takes precedence in an answer).
//! - Direction attributes pass through as offered (`original sendrecv` is always in effect);
//!   relay ports are always kept across re-offers (`port latching` is always in effect).
//! - `direction` names an interface per side; with one interface per address family, a name
//!   that is not configured gets a warning and the default is used.
//! - A delete's to-tag (Kamailio sends one only with its `to-tag` flag) limits it to that
//!   dialogue; `all` ignores it.

use std::net::{IpAddr, SocketAddr};

use super::bencode::Owned;
use super::flags::{AddressFamily, EndpointLearning, IceMode};
use super::ng::{self, BodyFormat, Command, NgRequest};
use super::reply;
use crate::sdp::{Direction, RtcpAttr};
use crate::session::backend::MediaBackend;
use crate::session::latch::LatchMode;
use crate::session::manager::control::{ControlStats, COMMANDS};
use crate::session::manager::{
    CallReport, Counters, DeleteRequest, MediaReport, SessionError, SessionManager, Signal,
    Statistics, TagReport,
};
use crate::session::model::RtcpMuxPolicy;
use crate::session::negotiate::{Family, NegotiateOptions};
use crate::session::quality::QualitySample;
use crate::session::record::EndReason;
use crate::time::{Nanos, NANOS_PER_SEC};

/// `list` without a `limit` key returns at most this many call-ids (rtpengine's default).
pub const DEFAULT_LIST_LIMIT: usize = 32;
/// Upper bound for `limit`, so one reply stays a sane size.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Parses `body` and handles it: the reply and the format to encode it in.
pub fn handle_body<B: MediaBackend>(
    mgr: &mut SessionManager<B>,
    body: &[u8],
    now: Nanos,
) -> (Owned, BodyFormat) {
    match ng::parse_request(body) {
        Ok((req, fmt)) => (handle(mgr, req, now), fmt),
        Err((e, fmt)) => (reply::from_error(&e), fmt),
    }
}

/// Runs one command against the session manager.
pub fn handle<B: MediaBackend>(mgr: &mut SessionManager<B>, req: NgRequest, now: Nanos) -> Owned {
    match req.command {
        Command::Ping => reply::pong(),
        Command::Offer | Command::Answer => offer_answer(mgr, req, now),
        Command::Delete => delete(mgr, req, now),
        Command::Query => query(mgr, &req),
        Command::List => list(mgr, &req),
        Command::Statistics => statistics(mgr, now),
        Command::Terminate => terminate(mgr, &req, now),
        Command::Drain => drain(mgr),
        Command::Set => set(mgr, &req),
        Command::Active => active(mgr),
    }
}

/// `active` (ours): a standby relay takes the calls over from the state store now (the app
/// watches the flag); on an active relay it changes nothing. Replies whether it was a
/// standby.
fn active<B: MediaBackend>(mgr: &mut SessionManager<B>) -> Owned {
    let standby = mgr.lifecycle().request_activation();
    if standby {
        tracing::warn!("ng active: this standby takes over");
    }
    reply::ok().with("was standby", i64::from(standby))
}

/// `terminate` (ours): the call named by `call-id`, or every call with flag `all`. Replies
/// `terminated` (how many).
fn terminate<B: MediaBackend>(mgr: &mut SessionManager<B>, req: &NgRequest, now: Nanos) -> Owned {
    if req.flags.all {
        let n = mgr.terminate_all(EndReason::Terminate, now);
        return reply::ok().with("terminated", n as u64);
    }
    let Some(call_id) = nonempty(&req.call_id) else {
        return reply::from_error(&ng::NgError::NoCallId);
    };
    match mgr.terminate(call_id, EndReason::Terminate, now) {
        Ok(()) => reply::ok().with("terminated", 1u64),
        Err(e) => reply::error(&e.to_string()),
    }
}

/// `drain` (ours): from now on no new call; the process exits when the last one ends (the
/// app watches the flag). Replies the calls still up.
fn drain<B: MediaBackend>(mgr: &mut SessionManager<B>) -> Owned {
    let already = mgr.lifecycle().start_drain();
    if !already {
        tracing::info!(calls = mgr.call_count(), "draining (ng drain)");
    }
    reply::ok()
        .with("calls", mgr.call_count() as u64)
        .with("already draining", i64::from(already))
}

/// `set` (ours, after `rtpengine-ctl set`): `max-sessions` and/or `log-level`, live. Replies
/// what changed.
fn set<B: MediaBackend>(mgr: &mut SessionManager<B>, req: &NgRequest) -> Owned {
    if req.max_sessions.is_none() && req.log_level.is_none() {
        return reply::error("Nothing to set: give max-sessions or log-level");
    }
    if let Some(l) = &req.log_level {
        if let Err(e) = mgr.lifecycle().set_log_level(l) {
            return reply::error(&format!("Bad log-level: {e}"));
        }
        tracing::warn!(log_level = %l, "log level changed (ng set)");
    }
    let mut out = reply::ok();
    if let Some(n) = req.max_sessions {
        let old = mgr.config().max_sessions;
        mgr.set_max_sessions(n);
        tracing::info!(old, new = n, "max sessions changed (ng set)");
        out.insert("max-sessions", n as u64);
    }
    if let Some(l) = &req.log_level {
        out.insert("log-level", l.as_str());
    }
    out
}

/// The negotiation options a request asks for; warnings for what we only partly honour.
pub fn negotiate_options(req: &NgRequest, warnings: &mut Vec<String>) -> NegotiateOptions {
    let f = &req.flags;
    let latch = if f.asymmetric || req.endpoint_learning == Some(EndpointLearning::Off) {
        LatchMode::Asymmetric
    } else if f.strict_source {
        LatchMode::StrictSource
    } else if f.media_handover {
        LatchMode::MediaHandover
    } else {
        LatchMode::Symmetric
    };
    let sip_source = if f.sip_source_address {
        if req.received_from.is_none() {
            warnings.push("SIP-source-address without received-from: SDP address used".into());
        }
        req.received_from
    } else {
        None
    };
    let m = &req.rtcp_mux;
    let rtcp_mux = if m.reject {
        RtcpMuxPolicy::Reject
    } else if m.demux {
        RtcpMuxPolicy::Demux
    } else if m.require {
        RtcpMuxPolicy::Require
    } else if m.offer {
        RtcpMuxPolicy::Offer
    } else if m.accept {
        RtcpMuxPolicy::Accept
    } else {
        RtcpMuxPolicy::Passthrough
    };
    let rtcp_attr = if f.no_rtcp_attribute {
        RtcpAttr::Omit
    } else if f.full_rtcp_attribute {
        RtcpAttr::Full
    } else {
        RtcpAttr::Auto
    };
    if matches!(req.ice, Some(IceMode::Force | IceMode::ForceRelay)) {
        warnings.push("ICE is not terminated by this relay: ICE attributes removed".into());
    }
    if !req.codec.strip.is_empty() || !req.codec.offer.is_empty() {
        warnings.push("Codec manipulation is not supported: codecs passed unchanged".into());
    }
    NegotiateOptions {
        latch,
        sip_source,
        media_address: req.media_address,
        family: req.address_family.map(|a| match a {
            AddressFamily::Ip4 => Family::V4,
            AddressFamily::Ip6 => Family::V6,
        }),
        transport_protocol: req.transport_protocol.clone(),
        rtcp_mux,
        rtcp_attr,
        replace_origin: req.replace_origin || req.replace_origin_full,
        replace_session_name: req.replace_session_name,
        remove_ice: true,
        loop_protect: f.loop_protect,
        // ICE=remove asks for what we do; force/force-relay were warned about above.
        ice_expected: matches!(
            req.ice,
            Some(IceMode::Remove | IceMode::Force | IceMode::ForceRelay)
        ),
        sdes_expected: !req.sdes.is_empty(),
        direction: req.interfaces(),
    }
}

fn session_error(e: &SessionError, supports_load_limit: bool) -> Owned {
    if e.is_load_limit() && supports_load_limit {
        reply::load_limit(&e.to_string())
    } else {
        reply::error(&e.to_string())
    }
}

fn offer_answer<B: MediaBackend>(mgr: &mut SessionManager<B>, req: NgRequest, now: Nanos) -> Owned {
    // A standby has no calls until it takes over; the proxy tries its next relay.
    if mgr.lifecycle().is_standby() {
        return reply::error("standby relay: not active");
    }
    let mut warnings = req.warnings.clone();
    let opts = negotiate_options(&req, &mut warnings);
    let interfaces = &mgr.config().interfaces;
    for (n, name) in opts
        .direction
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
    {
        if opts.direction[..n].contains(name) {
            continue;
        }
        if !interfaces.iter().any(|i| i.name.eq_ignore_ascii_case(name)) {
            warnings.push(format!("Unknown interface {name}: default interface used"));
        }
    }
    let (Some(call_id), Some(from_tag), Some(sdp)) = (&req.call_id, &req.from_tag, &req.sdp) else {
        // The parser refuses these already; kept for requests built by hand.
        return reply::error("Missing call-id, from-tag or SDP");
    };
    let label = match req.command {
        Command::Answer => req.to_label.as_deref().or(req.label.as_deref()),
        _ => req.label.as_deref(),
    };
    let sig = Signal {
        call_id,
        from_tag,
        to_tag: req.to_tag.as_deref().filter(|t| !t.is_empty()),
        via_branch: req.via_branch.as_deref().filter(|t| !t.is_empty()),
        label,
        sdp,
    };
    let result = if req.command == Command::Answer {
        mgr.answer(&sig, &opts, now)
    } else {
        mgr.offer(&sig, &opts, now)
    };
    match result {
        Ok(n) => {
            warnings.extend(n.warnings);
            reply::with_warnings(reply::sdp_ok(&n.sdp), &warnings)
        }
        Err(e) => {
            tracing::debug!(call_id = %call_id, command = req.command.as_str(), error = %e, "refused");
            session_error(&e, req.supports_load_limit)
        }
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|t| !t.is_empty())
}

fn delete<B: MediaBackend>(mgr: &mut SessionManager<B>, req: NgRequest, now: Nanos) -> Owned {
    let Some(call_id) = req.call_id.as_deref() else {
        return reply::from_error(&ng::NgError::NoCallId);
    };
    let dreq = DeleteRequest {
        call_id,
        from_tag: nonempty(&req.from_tag),
        to_tag: if req.flags.all {
            None
        } else {
            nonempty(&req.to_tag)
        },
        via_branch: nonempty(&req.via_branch),
        delay_ns: req
            .delete_delay
            .map(|s| u64::from(s).saturating_mul(NANOS_PER_SEC)),
        reason: EndReason::Delete,
    };
    match mgr.delete(&dreq, !req.flags.fast, now) {
        Ok(Some(report)) => {
            reply::with_warnings(call_report(&report).with("result", "ok"), &req.warnings)
        }
        Ok(None) => reply::with_warnings(reply::ok(), &req.warnings),
        Err(SessionError::NotFound) if !req.flags.fatal => reply::with_warnings(
            reply::ok_with_warning(&SessionError::NotFound.to_string()),
            &req.warnings,
        ),
        Err(e) => reply::error(&e.to_string()),
    }
}

fn query<B: MediaBackend>(mgr: &SessionManager<B>, req: &NgRequest) -> Owned {
    let Some(call_id) = req.call_id.as_deref() else {
        return reply::from_error(&ng::NgError::NoCallId);
    };
    match mgr.query(call_id) {
        Ok(report) => call_report(&report).with("result", "ok"),
        Err(e) => reply::error(&e.to_string()),
    }
}

fn list<B: MediaBackend>(mgr: &SessionManager<B>, req: &NgRequest) -> Owned {
    let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let calls: Vec<Owned> = mgr.list(limit).iter().map(|c| Owned::str(c)).collect();
    Owned::dict()
        .with("calls", Owned::List(calls))
        .with("result", "ok")
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn endpoint(a: SocketAddr) -> Owned {
    Owned::dict()
        .with("family", family_name(a.ip()))
        .with("address", a.ip().to_string())
        .with("port", a.port())
}

fn counters(c: &Counters) -> Owned {
    Owned::dict()
        .with("packets", c.packets)
        .with("bytes", c.bytes)
        .with("errors", c.errors)
}

fn ms_rounded(ms: f64) -> i64 {
    if ms.is_finite() && ms > 0.0 {
        ms.round().min(i64::MAX as f64) as i64
    } else {
        0
    }
}

fn us_rounded(ms: f64) -> i64 {
    ms_rounded(ms * 1000.0)
}

fn media(m: &MediaReport) -> Owned {
    let mut streams = Owned::list();
    if let Some(ports) = m.ports {
        let local = m.local_addr;
        let st = &m.stats;
        let mut rtp = Owned::dict().with("local port", ports.rtp);
        // The RTCP port stays bound while RTCP is muxed (the fallback): it is listed, and
        // the flags say which of the two carries RTCP, as rtpengine's do.
        let mut rtcp = Owned::dict().with("local port", ports.rtcp());
        if let Some(ip) = local {
            for s in [&mut rtp, &mut rtcp] {
                s.insert("local address", ip.to_string());
                s.insert("family", family_name(ip));
                if let Some(name) = &m.interface {
                    s.insert("interface", name.as_str());
                }
            }
        }
        if let Some(e) = m.endpoint {
            rtp.insert("endpoint", endpoint(e));
        }
        if let Some(e) = m.advertised {
            rtp.insert("advertised endpoint", endpoint(e));
        }
        if let Some(e) = m.rtcp_endpoint {
            rtcp.insert("endpoint", endpoint(e));
        }
        if let Some(e) = m.rtcp_advertised {
            rtcp.insert("advertised endpoint", endpoint(e));
        }
        rtp.insert("last packet", m.last_rtp_unix);
        rtcp.insert("last packet", m.last_rtcp_unix);
        let mut rtp_flags = vec![Owned::str("RTP")];
        let mut rtcp_flags = vec![Owned::str("RTCP")];
        if m.rtcp_mux {
            rtp_flags.push(Owned::str("RTCP"));
            rtcp_flags.push(Owned::str("fallback RTCP"));
        }
        if m.endpoint.is_some() {
            rtp_flags.push(Owned::str("filled"));
        }
        if m.rtcp_endpoint.is_some() {
            rtcp_flags.push(Owned::str("filled"));
        }
        if st.confirmed {
            rtp_flags.push(Owned::str("confirmed"));
        }
        if m.latch == LatchMode::StrictSource {
            for f in [&mut rtp_flags, &mut rtcp_flags] {
                f.push(Owned::str("strict source address"));
            }
        }
        rtp.insert("flags", Owned::List(rtp_flags));
        rtcp.insert("flags", Owned::List(rtcp_flags));
        let q = &st.quality;
        rtp.insert("SSRC", q.ssrc);
        rtp.insert(
            "stats",
            counters(&Counters {
                packets: st.rtp.packets,
                bytes: st.rtp.bytes,
                errors: st.rtp.errors,
            }),
        );
        // Ours (rtpengine has no such key): where this direction is relayed now (`in_kernel`,
        // or why it is not) and how many of its packets the in-kernel path relayed.
        rtp.insert("kernel", st.kernel.name());
        rtp.insert("kernel packets", st.kernel_packets);
        rtp.insert("jitter", ms_rounded(q.jitter_ms));
        rtp.insert("max jitter", ms_rounded(q.max_jitter_ms));
        rtp.insert("jitter us", us_rounded(q.jitter_ms));
        rtp.insert("max jitter us", us_rounded(q.max_jitter_ms));
        rtp.insert("packets lost", q.lost);
        rtp.insert("duplicates", q.duplicates);
        rtp.insert("reordered", q.reordered);
        let r = &st.rtcp_report;
        if r.reports > 0 {
            rtcp.insert(
                "report",
                Owned::dict()
                    .with("fraction lost", u32::from(r.fraction_lost))
                    .with("cumulative lost", i64::from(r.cumulative_lost))
                    .with("jitter", r.jitter_rtp_units)
                    .with("reports", r.reports),
            );
        }
        rtcp.insert(
            "stats",
            counters(&Counters {
                packets: st.rtcp.packets,
                bytes: st.rtcp.bytes,
                errors: st.rtcp.errors,
            }),
        );
        streams.push(rtp);
        streams.push(rtcp);
    }
    let mut flags = Vec::new();
    if m.ports.is_some() {
        flags.push(Owned::str("initialized"));
    }
    if m.rtcp_mux {
        flags.push(Owned::str("rtcp-mux"));
    }
    if m.latch == LatchMode::Asymmetric {
        flags.push(Owned::str("asymmetric"));
    }
    if m.proto.to_ascii_uppercase().starts_with("UDP/TLS/") {
        flags.push(Owned::str("DTLS-SRTP"));
    }
    // rtpengine's `send`/`recv` say what the relay does toward this leg: it sends to a
    // leg that receives (a=recvonly) and receives from a leg that sends (a=sendonly).
    let (send, recv) = match m.direction.unwrap_or(Direction::SendRecv) {
        Direction::SendRecv => (true, true),
        Direction::SendOnly => (false, true),
        Direction::RecvOnly => (true, false),
        Direction::Inactive => (false, false),
    };
    if send {
        flags.push(Owned::str("send"));
    }
    if recv {
        flags.push(Owned::str("recv"));
    }
    let mut d = Owned::dict()
        .with("index", m.index)
        .with("type", m.kind.as_str())
        .with("protocol", m.proto.as_str());
    if let Some(l) = &m.label {
        d.insert("label", l.as_str());
    }
    d.with("streams", streams).with("flags", Owned::List(flags))
}

fn tag(t: &TagReport) -> Owned {
    let mut d = Owned::dict().with("tag", t.tag.as_str());
    if let Some(l) = &t.label {
        d.insert("label", l.as_str());
    }
    d.insert("created", t.created_unix);
    if let Some(v) = &t.via_branch {
        d.insert("via-branch", v.as_str());
    }
    if let Some(p) = t.peers.first() {
        d.insert("in dialogue with", p.as_str());
    }
    let subs: Vec<Owned> = t
        .peers
        .iter()
        .map(|p| {
            Owned::dict()
                .with("tag", p.as_str())
                .with("type", "offer/answer")
        })
        .collect();
    d.insert("subscriptions", Owned::List(subs.clone()));
    d.insert("subscribers", Owned::List(subs));
    d.with("medias", Owned::List(t.medias.iter().map(media).collect()))
}

/// The query/delete body (without `result`).
pub fn call_report(r: &CallReport) -> Owned {
    let mut tags = Owned::dict();
    for t in &r.tags {
        tags.insert(&t.tag, tag(t));
    }
    Owned::dict()
        .with("created", r.created.as_secs())
        .with("created_us", r.created.subsec_micros())
        .with("last signal", r.last_signal_unix)
        .with("SSRC", ssrc_block(r))
        .with("tags", tags)
        .with(
            "totals",
            Owned::dict()
                .with("RTP", counters(&r.totals.rtp))
                .with("RTCP", counters(&r.totals.rtcp)),
        )
}

/// The `SSRC` block in rtpengine's shape: per SSRC (decimal key) its RTP counters and the MOS
/// samples of what the endpoint sending it hears (`session::quality`). `MOS` is × 10 (43 =
/// 4.3), `round-trip time` (end to end) and `round-trip time leg` in µs, `jitter` in ms,
/// `packet loss` in percent, `reported at` in Unix seconds.
fn ssrc_block(r: &CallReport) -> Owned {
    let unix = |ns: Nanos| (r.unix_at_zero + std::time::Duration::from_nanos(ns)).as_secs();
    let common = |mos: u8, rtt: u64, leg: u64, jitter: u32, loss: u32| {
        Owned::dict()
            .with("MOS", u64::from(mos))
            .with("round-trip time", rtt)
            .with("round-trip time leg", leg)
            .with("jitter", u64::from(jitter))
            .with("packet loss", u64::from(loss))
    };
    let sample = |s: &QualitySample| {
        common(s.mos.0, s.rtt_us, s.rtt_leg_us, s.jitter_ms, s.loss_percent)
            .with("reported at", unix(s.at_ns))
    };
    let mut block = Owned::dict();
    for d in &r.quality {
        let a = &d.average;
        let first = d.progression.first().map_or(0, |s| unix(s.at_ns));
        let last = d.progression.last().map_or(0, |s| unix(s.at_ns));
        let entries: Vec<Owned> = d.progression.iter().map(sample).collect();
        let entry = Owned::dict()
            .with("bytes", d.bytes)
            .with("packets", d.packets)
            .with("last RTP seq", d.last_seq)
            .with("cumulative loss", d.cumulative_loss)
            .with(
                "average MOS",
                common(a.mos.0, a.rtt_us, a.rtt_leg_us, a.jitter_ms, a.loss_percent)
                    .with("samples", u64::from(a.samples)),
            )
            .with("lowest MOS", sample(&d.lowest))
            .with("highest MOS", sample(&d.highest))
            .with(
                "MOS progression",
                Owned::dict()
                    .with("interval", last.saturating_sub(first) / 10)
                    .with("entries", Owned::List(entries)),
            );
        block.insert(&d.ssrc.to_string(), entry);
    }
    block
}

fn statistics<B: MediaBackend>(mgr: &SessionManager<B>, now: Nanos) -> Owned {
    statistics_reply(&mgr.statistics(now))
}

/// The `statistics` reply for `s`.
pub fn statistics_reply(s: &Statistics) -> Owned {
    let current = Owned::dict()
        .with("sessionsown", s.sessions as u64)
        .with("sessionsforeign", 0u64)
        .with("sessionstotal", s.sessions as u64)
        .with("sessionslingering", s.lingering as u64)
        .with("transcodedmedia", 0u64)
        .with("packetrate", s.packet_rate)
        .with("byterate", s.byte_rate)
        .with("errorrate", s.error_rate);
    let total = Owned::dict()
        .with("uptime", s.uptime_secs)
        .with("managedsessions", s.managed_sessions)
        .with("rejectedsessions", s.rejected_sessions)
        .with("timeoutsessions", s.timeout_sessions)
        .with("regularterminatedsessions", s.terminated_sessions)
        .with("forcedterminatedsessions", 0u64)
        .with("relayedpackets", s.relayed.packets)
        .with("relayedbytes", s.relayed.bytes)
        .with("relayedpacketerrors", s.relayed.errors);
    let interfaces: Vec<Owned> = s
        .interfaces
        .iter()
        .enumerate()
        .map(|(n, i)| {
            // This address's own ports: each address has the whole range (ports are counted
            // one by one like rtpengine, each pair is two).
            let p = s.interface_ports.get(n).copied().unwrap_or_default();
            let used_pct = (p.used * 100).checked_div(p.total).unwrap_or(0);
            Owned::dict()
                .with("name", i.name.as_str())
                .with("address", i.sdp_addr().to_string())
                .with("local address", i.local.to_string())
                .with(
                    "ports",
                    Owned::dict()
                        .with("min", s.port_min)
                        .with("max", s.port_max)
                        .with("used", p.used)
                        .with("used_pct", used_pct)
                        .with("free", p.total.saturating_sub(p.used))
                        .with("totals", p.total),
                )
        })
        .collect();
    // Ours, not rtpengine's: what the workers counted, one key per drop reason.
    let mut dataplane = Owned::dict();
    for (name, v) in &s.dataplane {
        dataplane.insert(name, *v);
    }
    Owned::dict()
        .with(
            "statistics",
            Owned::dict()
                .with("currentstatistics", current)
                .with("totalstatistics", total)
                .with("interfaces", Owned::List(interfaces))
                .with("controlstatistics", control_statistics(&s.control))
                // rtpengine lists its transcoders here; this relay never transcodes.
                .with("transcoders", Owned::list())
                .with("dataplane", dataplane)
                .with("mediarelays", media_relays(&s.media_relays)),
        )
        .with("result", "ok")
}

/// Ours: the SIP proxy's relay set, one dictionary per relay (an empty list without one).
fn media_relays(relays: &[crate::relayset::RelaySnapshot]) -> Owned {
    let list = relays
        .iter()
        .map(|r| {
            let c = &r.counters;
            Owned::dict()
                .with("relay", r.name.as_str())
                .with("weight", r.weight)
                .with("state", if r.up { "up" } else { "down" })
                .with("activecalls", r.active_calls)
                .with("calls", c.calls)
                .with("offers", c.offers)
                .with("answers", c.answers)
                .with("deletes", c.deletes)
                .with("errors", c.errors)
                .with("timeouts", c.timeouts)
                .with("failovers", c.failovers)
                .with("pings", c.pings)
                .with("pongs", c.pongs)
                .with("downs", c.downs)
                .with("strandedcalls", c.calls_stranded)
                .with("rttus", c.last_rtt_us)
                .with("requestrtts", c.request_rtts)
                .with("requestrttmedianus", c.request_rtt_median_us)
                .with("requestrttp99us", c.request_rtt_p99_us)
        })
        .collect();
    Owned::List(list)
}

/// Seconds with six decimals, as a string (rtpengine's duration format).
fn seconds_text(ns: Nanos) -> String {
    format!("{}.{:06}", ns / NANOS_PER_SEC, (ns % NANOS_PER_SEC) / 1_000)
}

/// rtpengine's `controlstatistics`: per proxy `<stem>count`, `<stem>duration` (seconds, summed)
/// and `errorcount`; then `total<stem>count` over all senders.
fn control_statistics(c: &ControlStats) -> Owned {
    let proxies: Vec<Owned> = c
        .proxies
        .iter()
        .map(|(ip, f)| {
            let mut d = Owned::dict().with("proxy", ip.to_string());
            for ((_, stem), fig) in COMMANDS.iter().zip(&f.commands) {
                d.insert(&format!("{stem}count"), fig.count);
                d.insert(&format!("{stem}duration"), seconds_text(fig.total_ns));
            }
            d.with("errorcount", f.errors)
        })
        .collect();
    let mut d = Owned::dict().with("proxies", Owned::List(proxies));
    for ((_, stem), fig) in COMMANDS.iter().zip(&c.totals.commands) {
        d.insert(&format!("total{stem}count"), fig.count);
    }
    d
}
