//! What an offer or an answer asks for, worked out from its SDP and the call as it stands,
//! with nothing allocated and nothing changed (no backend here): the dialogue it goes to, who
//! offers, the relay addresses for the leg the SDP goes to and, per m= line, the stream to
//! keep, open or close; and the SDP each plan renders once its streams are known.

use std::net::IpAddr;

use crate::addr::PackedAddr;
use crate::sdp::{MediaRewrite, Sdp};
use crate::session::backend::{EndpointSpec, OpenedStream, Side};
use crate::session::interfaces;
use crate::session::manager::{side_ports, Negotiated, SessionError, Signal};
use crate::session::model::{
    Call, Dialogue, MediaSlot, RtcpMuxPolicy, MAX_DIALOGUES, MAX_TOKEN_LEN,
};
use crate::session::negotiate::{
    self, MediaDesc, NegotiateError, NegotiateOptions, RelayInterface, StreamOp,
};

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

fn check_token(value: &str, what: &'static str) -> Result<(), SessionError> {
    if value.is_empty() {
        return Err(SessionError::Empty(what));
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(SessionError::TooLong(what));
    }
    Ok(())
}

fn branch_eq(d: &Dialogue, via: Option<&str>) -> bool {
    d.via_branch() == via
}

/// A pending dialogue (side B unnamed) offered by `tag`: exact branch first, then (when the
/// signal has no branch, or the offer had none) any.
fn find_pending(call: &Call, tag: &str, via: Option<&str>) -> Option<usize> {
    let pending = |d: &&Dialogue| d.b_tag.is_none() && d.a_tag() == tag;
    let ds = &call.dialogues;
    ds.iter()
        .position(|d| pending(&d) && branch_eq(d, via))
        .or_else(|| {
            ds.iter()
                .position(|d| pending(&d) && (via.is_none() || d.via_branch().is_none()))
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
        .position(|d| d.a_tag() == from && branch_eq(d, via))
        .or_else(|| {
            via.is_none()
                .then(|| ds.iter().position(|d| d.a_tag() == from))
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
                d.a_tag() == offerer
                    && d.offerer == Side::A
                    && (branch_eq(d, via) || d.via_branch().is_none())
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

impl RelayAddrs {
    fn of(iface: &RelayInterface) -> RelayAddrs {
        RelayAddrs {
            sdp: iface.sdp_addr(),
            local: iface.local,
        }
    }

    /// The addresses of a side already bound on `local` (its interface's advertised one, or
    /// `local` itself when no interface has it any more).
    fn bound(interfaces: &[RelayInterface], local: IpAddr) -> RelayAddrs {
        interfaces::owner(interfaces, local)
            .map_or(RelayAddrs { sdp: local, local }, RelayAddrs::of)
    }
}

/// The relay address `side`'s streams among `slots` are bound on (the first such stream's;
/// one offer binds all its lines of a side on one address).
fn bound_on(slots: &[MediaSlot], side: Side, kept: impl Fn(usize) -> bool) -> Option<IpAddr> {
    slots
        .iter()
        .enumerate()
        .filter(|(i, s)| s.stream.is_some() && kept(*i))
        .find_map(|(_, s)| s.end(side).relay_local.get())
}

impl<'s> Outgoing<'s> {
    fn new(sdp: Sdp<'s>, relay: RelayAddrs, warnings: Vec<String>) -> Outgoing<'s> {
        Outgoing {
            sdp,
            relay,
            warnings,
        }
    }

    /// The body rewritten: per m= line, (the stream relaying it, rtcp-mux toward the leg,
    /// whether `a=rtcp` keeps naming the separate RTCP port beside the mux); a relayed line
    /// names the ports `side` sends to, any other passes unchanged.
    fn render(
        &self,
        lines: impl Iterator<Item = (Option<OpenedStream>, bool, bool)>,
        side: Side,
        opts: &NegotiateOptions,
    ) -> Result<Vec<u8>, NegotiateError> {
        let rewrites = lines
            .map(|(stream, rtcp_mux, rtcp_fallback)| match stream {
                Some(s) => {
                    let p = side_ports(&s, side);
                    MediaRewrite::Relay {
                        rtp_port: p.rtp,
                        rtcp_port: p.rtcp(),
                        rtcp_mux,
                        rtcp_fallback,
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
    /// The relay addresses side A's and B's sockets are bound on.
    pub(super) locals: [Option<IpAddr>; 2],
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
    /// The receiving leg already muxes RTCP on this line's kept stream (it accepted mux in
    /// an earlier answer): a re-offer needs no RTCP fallback port.
    pub(super) receiver_muxes: bool,
}

impl OfferLine {
    /// Whether the SDP toward the receiver offers rtcp-mux, and whether its `a=rtcp` still
    /// names the separate RTCP port beside it. Until the answer accepts mux, its RTCP may
    /// come apart: the RTCP port stays offered (and bound), unless `require` asks for
    /// mux-only on purpose or the receiver muxes already (a re-offer in a dialogue that
    /// negotiated mux).
    pub(super) fn toward_receiver(&self, opts: &NegotiateOptions) -> (bool, bool) {
        let mux = opts.rtcp_mux.toward_answerer(self.desc.end.mux_in_sdp);
        let fallback = mux && opts.rtcp_mux != RtcpMuxPolicy::Require && !self.receiver_muxes;
        (mux, fallback)
    }

    /// Whether the receiver may send RTCP to the separate RTCP port after this offer.
    pub(super) fn receiver_rtcp_port(&self, opts: &NegotiateOptions) -> bool {
        let (mux, fallback) = self.toward_receiver(opts);
        !mux || fallback
    }
}

/// What an offer asks of the call, worked out from the SDP and the call as it stands, with
/// nothing allocated and nothing changed: the dialogue it goes to, who offers, the relay
/// addresses for the receiving leg and, per m= line, the stream to keep, open or close.
pub(super) struct OfferPlan<'s> {
    /// The SDP for the receiving leg.
    pub(super) out: Outgoing<'s>,
    pub(super) target: OfferTarget,
    pub(super) offerer: Side,
    /// The relay address the offerer's side is bound on (the receiver's is in `out`).
    pub(super) offerer_local: IpAddr,
    pub(super) lines: Vec<OfferLine>,
}

impl<'s> OfferPlan<'s> {
    /// Plans an offer into `call` (`None`: a new call). `turn`: the round-robin turn for an
    /// interface name with several addresses (one per call).
    pub(super) fn new(
        call: Option<&Call>,
        sig: &Signal<'_>,
        described: Described<'s>,
        opts: &NegotiateOptions,
        interfaces: &[RelayInterface],
        turn: usize,
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
                call.dialogues.get(*idx).map_or(no_slots, |d| &d.media[..]),
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
        let offerer_v6 = descs
            .iter()
            .find(|d| d.relayed())
            .is_some_and(|d| d.end.ipv6);
        // Each side on the interface `direction` names for it (the offer's SDP comes from the
        // from-tag side: the first name is the offerer's). Streams this offer keeps stay on
        // the addresses they are bound on, and new lines of the dialogue join them.
        let [offerer_name, receiver_name] = interfaces::sides(&opts.direction, true);
        let kept = |i: usize| ops.get(i) == Some(&StreamOp::Update);
        let relay = match bound_on(existing, receiver, kept) {
            Some(ip) => RelayAddrs::bound(interfaces, ip),
            None => RelayAddrs::of(interfaces::select(
                interfaces,
                receiver_name,
                opts.family,
                receiver_v6,
                turn,
            )?),
        };
        let offerer_local = match bound_on(existing, offerer, kept) {
            Some(ip) => ip,
            None => interfaces::select(interfaces, offerer_name, None, offerer_v6, turn)?.local,
        };
        let mut locals = [None; 2];
        locals[side_index(offerer)] = Some(offerer_local);
        locals[side_index(receiver)] = Some(relay.local);
        let lines = descs
            .into_iter()
            .zip(ops)
            .enumerate()
            .map(|(i, (desc, op))| {
                let stream = match op {
                    StreamOp::Open | StreamOp::Reopen => LineStream::Open(StreamEnds {
                        locals,
                        ..new_stream_ends(&desc, offerer, opts)
                    }),
                    StreamOp::Update => existing
                        .get(i)
                        .and_then(|s| s.stream)
                        .map_or(LineStream::None, LineStream::Keep),
                    StreamOp::Skip | StreamOp::Close => LineStream::None,
                };
                let receiver_muxes = matches!(stream, LineStream::Keep(_))
                    && existing
                        .get(i)
                        .map(|s| s.end(receiver))
                        .is_some_and(|e| e.known && e.endpoint.rtcp_mux);
                OfferLine {
                    desc,
                    stream,
                    receiver_muxes,
                }
            })
            .collect();
        Ok(OfferPlan {
            out: Outgoing::new(sdp, relay, warnings),
            target,
            offerer,
            offerer_local,
            lines,
        })
    }

    /// The SDP for the receiving leg: each relayed line names the relay ports that leg sends
    /// to (the streams must be allocated by now).
    pub(super) fn render(&self, opts: &NegotiateOptions) -> Result<Vec<u8>, NegotiateError> {
        let lines = self.lines.iter().map(|l| {
            let (mux, fallback) = l.toward_receiver(opts);
            (l.stream.relayed(), mux, fallback)
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
    StreamEnds {
        a,
        b,
        locals: [None; 2],
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
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
        // The SDP for the offerer names the address its side was bound on at the offer.
        // `direction` in an answer names the from-tag side first, and the answer's SDP comes
        // from the other side (the to-tag's): its sender takes the second name.
        let answerer_tag = target.name_b.as_deref().or_else(|| d.tag(target.answerer));
        let [answerer_name, offerer_name] =
            interfaces::sides(&opts.direction, answerer_tag == Some(sig.from_tag));
        let relay = match bound_on(&d.media, offerer, |_| true) {
            Some(ip) => RelayAddrs::bound(interfaces, ip),
            None => RelayAddrs::of(interfaces::select(
                interfaces,
                offerer_name,
                opts.family,
                offerer_v6,
                0,
            )?),
        };
        if let (Some(name), Some(ip)) =
            (answerer_name, bound_on(&d.media, target.answerer, |_| true))
        {
            let on = interfaces::owner(interfaces, ip).map(|i| i.name.as_str());
            if interfaces::is_known(interfaces, name)
                && !on.is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                warnings.push(format!(
                    "direction names {name} for the answerer; its media stays on {} ({ip}), chosen at the offer",
                    on.unwrap_or("?")
                ));
            }
        }
        let mut lines = Vec::with_capacity(descs.len());
        for desc in descs {
            let slot = d.media.get(desc.index as usize - 1);
            let stream = match slot.and_then(|s| s.stream.map(|st| (s, st))) {
                None => AnswerStream::None,
                Some((s, st)) if desc.relayed() && s.kind().eq_ignore_ascii_case(&desc.kind) => {
                    AnswerStream::Keep(st)
                }
                Some((s, st)) => {
                    if !desc.rejected {
                        warnings.push(format!(
                            "answer m= line {} ({}) does not match the offer ({}): stream closed",
                            desc.index,
                            desc.kind,
                            s.kind()
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
            out: Outgoing::new(sdp, relay, warnings),
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
            (kept, l.offerer_mux, false)
        });
        self.out.render(lines, self.target.answerer.other(), opts)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::backend::StreamId;
    use crate::session::manager::tests::{sig, ANSWER, OFFER, S};
    use crate::session::model::{MediaEnd, RtcpMuxPolicy};
    use crate::session::ports::PortPair;

    pub(in crate::session::manager) fn described(sdp: &str) -> Described<'_> {
        let sdp = Sdp::parse(sdp.as_bytes()).unwrap();
        Described::new(sdp, &NegotiateOptions::default()).unwrap()
    }

    pub(in crate::session::manager) fn interfaces() -> Vec<RelayInterface> {
        vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())]
    }

    fn opened(id: u64, a: u16, b: u16) -> OpenedStream {
        let id = StreamId::from_raw(id);
        OpenedStream::new(id, PortPair { rtp: a }, PortPair { rtp: b })
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
                names: crate::session::model::MediaNames::new(&d.kind, &d.proto),
                stream: Some(st),
                a: d.end,
                b: MediaEnd::default(),
                mux_policy: RtcpMuxPolicy::Passthrough,
                mux_offered: false,
            })
            .collect();
        let mut call = Call::new(Arc::from("c"), S);
        let mut d = Dialogue::new("a", None, Side::A, S);
        d.b_tag = b_tag.map(Into::into);
        d.answered = b_tag.is_some();
        d.media = media;
        call.dialogues.push(d);
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
        let plan = OfferPlan::new(None, &s, described(&sdp), &opts, &interfaces(), 0).unwrap();
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
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &interfaces(), 0).unwrap();
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
        let plan =
            OfferPlan::new(Some(&call), &s, described(&reoffer), &o, &interfaces(), 0).unwrap();
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
            .map(|n| {
                let mut d = Dialogue::new(
                    first.a_tag(),
                    Some(&format!("br{n}")),
                    first.offerer,
                    first.created_ns,
                );
                d.b_tag = first.b_tag.clone();
                d.answered = first.answered;
                d.media = first.media.clone();
                d
            })
            .collect();
        let s = Signal {
            via_branch: Some("one-too-many"),
            ..sig("a", None, OFFER)
        };
        let o = NegotiateOptions::default();
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &interfaces(), 0);
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
        let plan = OfferPlan::new(Some(&call), &s, described(OFFER), &o, &ifs, 0).unwrap();
        assert_eq!(plan.out.relay.sdp, v6);
        // A new call has only the offerer's family to go by.
        let plan = OfferPlan::new(None, &s, described(OFFER), &o, &ifs, 0).unwrap();
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
}
