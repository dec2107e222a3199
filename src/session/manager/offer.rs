//! `offer`: read the SDP, plan, open the new streams under a guard, render, commit.

use crate::session::local_ip::LocalIp;
use std::net::IpAddr;
use std::sync::Arc;

use crate::session::backend::{BackendError, MediaBackend, Side, StreamId};
use crate::session::manager::allocation::Allocation;
use crate::session::manager::plan::{
    read_offer, LineStream, OfferLine, OfferPlan, OfferSdp, OfferTarget, Outgoing,
};
use crate::session::manager::{Negotiated, SessionError, SessionManager, Signal};
use crate::session::model::{Call, Dialogue, MediaEnd, MediaNames, MediaSlot};
use crate::session::negotiate::{MediaDesc, NegotiateOptions};
use crate::session::ports::PortError;
use crate::time::Nanos;

impl<B: MediaBackend> SessionManager<B> {
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
        let existing_call = self.calls.get(sig.call_id);
        if existing_call.is_none() && self.lifecycle.is_draining() {
            self.rejected += 1;
            return Err(SessionError::Draining);
        }
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
        // One round-robin turn per call: the calls managed so far. Each address has its own
        // ports, so when the turn's address has run out, the next turns try the name's other
        // addresses (at most one try per configured address).
        let first_turn = self.managed as usize;
        let tries = self.cfg.interfaces.len().max(1);
        let mut attempt = 0;
        let mut described = Some(described);
        let (mut plan, allocation) = loop {
            // A retry reads the SDP again (the failed plan took it): no copy on the usual path.
            let described = match described.take() {
                Some(d) => d,
                None => match read_offer(sig, opts, &self.cfg.interfaces)? {
                    OfferSdp::Loop(passed) => return Ok(passed),
                    OfferSdp::Media(d) => d,
                },
            };
            let mut plan = OfferPlan::new(
                existing_call,
                sig,
                described,
                opts,
                &self.cfg.interfaces,
                first_turn.wrapping_add(attempt),
            )?;
            // Everything is allocated before anything is committed: until `commit`, the guard
            // closes what it opened when an allocation or the rendering fails.
            match Allocation::open(&mut self.backend, &call_id, &mut plan.lines, now) {
                Ok(allocation) => break (plan, allocation),
                Err(BackendError::Ports(PortError::Exhausted)) if attempt + 1 < tries => {
                    attempt += 1;
                }
                Err(e) => {
                    if new_call {
                        self.rejected += 1;
                    }
                    tracing::warn!(call_id = %call_id, error = %e, "offer: stream allocation failed");
                    return Err(e.into());
                }
            }
        };
        let sdp = plan.render(opts)?;
        allocation.commit();
        let warnings = std::mem::take(&mut plan.out.warnings);
        self.commit_offer(&call_id, sig, plan, opts, now);
        self.mark_dirty(&call_id);
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
        opts: &NegotiateOptions,
        now: Nanos,
    ) {
        let OfferPlan {
            target,
            offerer,
            offerer_local,
            out: Outgoing { relay, .. },
            lines,
        } = plan;
        let (call, new) = self
            .calls
            .get_or_insert_with(call_id, || Box::new(Call::new(call_id.clone(), now)));
        if new {
            self.managed += 1;
        }
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
                let mut d = Dialogue::new(sig.from_tag, sig.via_branch, Side::A, now);
                d.b_tag = b_tag.map(String::into_boxed_str);
                call.dialogues.push(d);
                call.dialogues.len() - 1
            }
        };
        let mut to_close = Vec::new();
        if let Some(d) = call.dialogues.get_mut(idx) {
            d.offerer = offerer;
            d.answered = false;
            let mut old = std::mem::take(&mut d.media).into_iter();
            // Exactly one slot per m= line: a grown Vec would reserve four (~1.9 KB a call).
            let mut media = Vec::with_capacity(lines.len());
            for line in lines {
                let prev = old.next();
                if let (LineStream::Keep(_), Some(p), Some(st)) =
                    (&line.stream, &prev, prev.as_ref().and_then(|p| p.stream))
                {
                    let endpoint = &line.desc.end.endpoint;
                    self.backend.update(st.id, offerer, endpoint.clone(), now);
                    // A side whose RTCP socket was closed (it muxed) gets it back as soon as
                    // its RTCP may come apart again: the offerer drops mux, or the SDP toward
                    // the receiver names the RTCP port. Mux is settled again by the answer.
                    if !endpoint.rtcp_mux {
                        self.backend.settle_rtcp(st.id, offerer, endpoint, false);
                    }
                    if line.receiver_rtcp_port(opts) {
                        let receiver = &p.end(offerer.other()).endpoint;
                        self.backend
                            .settle_rtcp(st.id, offerer.other(), receiver, false);
                    }
                }
                let locals = [offerer_local, relay.local];
                let (slot, replaced) = offered_slot(prev, line, offerer, locals, opts);
                to_close.extend(replaced);
                media.push(slot);
            }
            d.media = media.into();
            // A shorter re-offer (not RFC 3264 compliant): drop the extra lines.
            for s in old {
                if let Some(st) = s.stream {
                    to_close.push(st.id);
                }
            }
        }
        self.close_streams(to_close);
    }
}

/// The media slot an offered line leaves in the dialogue, from the slot it had (`prev`), and
/// the stream it had that closes now (replaced, or no longer relayed).
fn offered_slot(
    prev: Option<MediaSlot>,
    line: OfferLine,
    offerer: Side,
    [offerer_local, receiver_local]: [IpAddr; 2],
    opts: &NegotiateOptions,
) -> (MediaSlot, Option<StreamId>) {
    let receiver = offerer.other();
    let OfferLine { desc, stream, .. } = line;
    let MediaDesc {
        index,
        kind,
        proto,
        end,
        label,
        ..
    } = desc;
    let (mut slot, replaced) = match (stream, prev) {
        (LineStream::Keep(_), Some(mut s)) => {
            s.names = MediaNames::new(&kind, &proto);
            (s, None)
        }
        (stream, prev) => {
            let replaced = prev.as_ref().and_then(|p| p.stream).map(|st| st.id);
            // A closed line keeps what the receiver said about it; a new stream starts with
            // nothing known about the receiver.
            let keep_receiver = stream == LineStream::None;
            let receiver_end = prev
                .filter(|_| keep_receiver)
                .map(|p| p.end(receiver).clone())
                .unwrap_or_default();
            let mut s = MediaSlot {
                index,
                names: MediaNames::new(&kind, &proto),
                stream: stream.relayed(),
                a: MediaEnd::default(),
                b: MediaEnd::default(),
                mux_policy: opts.rtcp_mux,
                mux_offered: false,
            };
            *s.end_mut(receiver) = receiver_end;
            (s, replaced)
        }
    };
    slot.index = index;
    if slot.label() != label.as_deref() {
        slot.names = slot.names.with_label(label.as_deref());
    }
    slot.mux_policy = opts.rtcp_mux;
    slot.mux_offered = end.mux_in_sdp;
    let prev_relay = slot.end(offerer).relay_local;
    *slot.end_mut(offerer) = MediaEnd {
        relay_local: prev_relay,
        ..end
    };
    if slot.stream.is_some() {
        // Both sides' bound addresses are known from the offer on (`query` shows them).
        slot.end_mut(offerer).relay_local = LocalIp::of(offerer_local);
        slot.end_mut(receiver).relay_local = LocalIp::of(receiver_local);
    }
    (slot, replaced)
}
