//! `answer`: read the SDP, plan, render, commit (an answer opens no stream).

use crate::session::backend::MediaBackend;
use crate::session::local_ip::LocalIp;
use crate::session::manager::plan::{
    read_answer, AnswerPlan, AnswerStream, AnswerTarget, Outgoing,
};
use crate::session::manager::{Negotiated, SessionError, SessionManager, Signal};
use crate::session::model::MediaEnd;
use crate::session::negotiate::NegotiateOptions;
use crate::time::Nanos;

impl<B: MediaBackend> SessionManager<B> {
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
        self.mark_dirty(sig.call_id);
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
                // One clock-rate list for both ends when they map the same types.
                end.endpoint
                    .clock_rates
                    .share_with(&slot.end(offerer).endpoint.clock_rates);
                match line.stream {
                    AnswerStream::Keep(s) => {
                        self.backend
                            .update(s.id, answerer, end.endpoint.clone(), now);
                        let off = slot.end_mut(offerer);
                        off.relay_local = LocalIp::of(relay.local);
                        if off.endpoint.rtcp_mux != line.offerer_mux {
                            off.set_mux(line.offerer_mux);
                            self.backend
                                .update(s.id, offerer, off.endpoint.clone(), now);
                        }
                        // The answer settles rtcp-mux for both ends: a side that muxes keeps
                        // one socket (its RTCP port stays reserved, unbound).
                        self.backend
                            .settle_rtcp(s.id, offerer, &off.endpoint, line.offerer_mux);
                        self.backend
                            .settle_rtcp(s.id, answerer, &end.endpoint, line.answerer_mux);
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
}
