//! Responses (RFC 3261 §16.7) and the response context of a forked request.
//!
//! A response is matched to its client transaction by our Via's branch (§17.1.3); our Via is
//! popped and the rest goes to the request's source (rport). 100 is not forwarded; other
//! provisionals are. The first and every further 2xx is forwarded (§16.7 item 5) and the
//! other branches cancelled; non-2xx finals are collected and the best one (6xx first, then
//! the lowest class; 503 becomes 500) forwarded when every branch is done, a 6xx cancelling
//! the others at once. 2xx retransmissions, which have no transaction, are forwarded
//! statelessly from a short cache of what was sent, or by the next Via.
#![forbid(unsafe_code)]

use super::ident::names;
use super::state::{Cached2xx, Cx, Proxy};
use crate::sip::edit::{EditError, Editor};
use crate::sip::header::Contact;
use crate::sip::media::{decide, has_sdp, MediaCtx, MediaEvent, MediaOp, MediaResult};
use crate::sip::message::check_response;
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::LocationStore;
use crate::sip::transaction::{
    client_key, ClientId, ClientState, ServerId, ServerState, Slot, Target,
};
use crate::sip::transport::via_destination;

use super::cancel::build_cancel_or_ack;

/// §16.7 item 6: 6xx beats everything, then the lowest class; earlier wins ties.
fn better(new: u16, old: u16) -> bool {
    let rank = |s: u16| if s >= 600 { 0 } else { s / 100 };
    rank(new) < rank(old)
}

/// Replaces the status line of a response (503 → 500 when forwarded, §16.7 item 6).
fn with_status_line(bytes: &[u8], line: &str) -> Vec<u8> {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len());
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(bytes.get(end..).unwrap_or(&[]));
    out
}

/// Removes the top Via of a response.
fn pop_via(msg: &Message<'_>) -> Result<Vec<u8>, EditError> {
    let mut e = Editor::new(msg);
    e.remove_top_via()?;
    e.finish()
}

impl<S: LocationStore> Proxy<S> {
    /// A parsed response from `cx.src`.
    pub(super) fn on_response(&mut self, msg: &Message<'_>, cx: &mut Cx<'_>) {
        if check_response(msg).is_err() {
            self.stats.dropped += 1;
            return;
        }
        let (Ok(via), Ok(cseq), Some(status)) = (msg.top_via(), msg.cseq(), msg.status()) else {
            self.stats.dropped += 1;
            return;
        };
        if !self.is_our_via(&via) {
            self.stats.dropped += 1;
            return;
        }
        let branch = via.branch.unwrap_or("");
        if let Some(&cid) = self.client_index.get(&client_key(branch, cseq.method)) {
            if !self.response_media_ready(cid, msg, status, branch, cx) {
                self.stats.media_parked += 1;
                return;
            }
            self.on_client_response(cid, msg, status, cx);
            return;
        }
        if cseq.method == "INVITE" && (200..300).contains(&status) {
            // A 2xx retransmission (the client transaction ended on the first 2xx) or a
            // 2xx from a branch we no longer track: forward statelessly (§16.7, §17.1.1.2).
            let ck = format!("{branch}|{}", msg.to_tag().unwrap_or(""));
            if let Some(c) = self.ok_cache.get(&ck).cloned() {
                self.stats.stateless_forwards += 1;
                self.emit(cx, c.to, c.transport, c.bytes);
                return;
            }
            let next = msg.vias().nth(1).and_then(|v| v.ok()).map(|(_, v)| v);
            let (Some(dest), Ok(bytes)) = (next.as_ref().and_then(via_destination), pop_via(msg))
            else {
                self.stats.dropped += 1;
                return;
            };
            self.stats.stateless_forwards += 1;
            self.emit(cx, dest.0, dest.1, bytes);
            return;
        }
        self.stats.dropped += 1;
    }

    /// Whether the media step `upstream_response` will take for this response can be
    /// answered now (see `MediaHook::ready`); asked before any transaction state changes.
    fn response_media_ready(
        &mut self,
        cid: ClientId,
        msg: &Message<'_>,
        status: u16,
        branch: &str,
        cx: &mut Cx<'_>,
    ) -> bool {
        let Some(sid) = self.clients.get(&cid).and_then(|c| c.server) else {
            return true;
        };
        let had_sdp = self.servers.get(&sid).is_none_or(|tx| tx.request_had_sdp);
        let method = msg.cseq().map(|c| c.method).unwrap_or("");
        let op = decide(
            MediaEvent::Response {
                method,
                status,
                request_had_sdp: had_sdp,
                other_branches_pending: true,
            },
            has_sdp(msg),
        );
        let Some(o @ (MediaOp::Offer | MediaOp::Answer)) = op else {
            return true;
        };
        let upstream = self.servers.get(&sid).map_or(cx.src, |tx| tx.reply_to);
        let dir = self.media_direction(o, cx.src.ip(), upstream.ip());
        let ctx = MediaCtx {
            op: o,
            call_id: msg.call_id().unwrap_or(""),
            from_tag: msg.from_tag().unwrap_or(""),
            to_tag: msg.to_tag(),
            via_branch: Some(branch),
            source: cx.src,
            direction: names(&dir),
        };
        cx.media_ready(&ctx, msg.body())
    }

    /// Pops our Via and runs the media hook for a response to be forwarded upstream.
    fn upstream_response(
        &mut self,
        msg: &Message<'_>,
        sid: ServerId,
        branch: &str,
        status: u16,
        others_pending: bool,
        cx: &mut Cx<'_>,
    ) -> Option<Vec<u8>> {
        let mut e = Editor::new(msg);
        e.remove_top_via().ok()?;
        let (had_sdp, method, upstream) = match self.servers.get(&sid) {
            Some(tx) => (tx.request_had_sdp, tx.method.clone(), tx.reply_to),
            None => (true, String::new(), cx.src),
        };
        let method = msg
            .cseq()
            .map(|c| c.method)
            .unwrap_or(method.as_str())
            .to_owned();
        let op = decide(
            MediaEvent::Response {
                method: &method,
                status,
                request_had_sdp: had_sdp,
                other_branches_pending: others_pending,
            },
            has_sdp(msg),
        );
        if let Some(o @ (MediaOp::Offer | MediaOp::Answer)) = op {
            let dir = self.media_direction(o, cx.src.ip(), upstream.ip());
            let ctx = MediaCtx {
                op: o,
                call_id: msg.call_id().unwrap_or(""),
                from_tag: msg.from_tag().unwrap_or(""),
                to_tag: msg.to_tag(),
                via_branch: Some(branch),
                source: cx.src,
                direction: names(&dir),
            };
            match cx.ask_media(&ctx, msg.body()) {
                MediaResult::NewBody(b) => e.set_body(&b),
                MediaResult::Failed { .. } | MediaResult::Pending => self.stats.media_failures += 1,
                MediaResult::Unchanged => {}
            }
            if o == MediaOp::Offer {
                if let Some(tx) = self.servers.get_mut(&sid) {
                    tx.media_engaged = true;
                }
            }
        }
        e.finish().ok()
    }

    fn on_client_response(
        &mut self,
        cid: ClientId,
        msg: &Message<'_>,
        status: u16,
        cx: &mut Cx<'_>,
    ) {
        let now = cx.now;
        let t = self.cfg.timers;
        let Some(ct) = self.clients.get_mut(&cid) else {
            return;
        };
        let target = Target::Client(cid);
        // Our own CANCELs and the services' requests: absorb the responses (the services
        // are told the final status).
        let Some(sid) = ct.server else {
            if status >= 200 && ct.state != ClientState::Completed {
                ct.state = ClientState::Completed;
                ct.timers.disarm(Slot::Retransmit);
                ct.timers.disarm(Slot::Timeout);
                let k = t.timer_ik(ct.reliable);
                ct.timers
                    .arm(Slot::End, now.saturating_add(k), &mut self.timers, target);
                let branch = ct.branch.clone();
                self.service_result(&branch, status, cx);
            } else if status < 200 {
                ct.state = ClientState::Proceeding;
            }
            return;
        };
        let branch = ct.branch.clone();
        if ct.state == ClientState::Completed {
            // Retransmitted final: the INVITE transaction re-sends its ACK (§17.1.1.2).
            if let (true, Some(ack)) = (ct.invite && status >= 300, ct.ack.clone()) {
                cx.push(ct.to, ct.transport, ack);
            }
            return;
        }
        if status < 200 {
            ct.state = ClientState::Proceeding;
            ct.got_provisional = true;
            if ct.invite {
                ct.timers.disarm(Slot::Retransmit);
                ct.timers.disarm(Slot::Timeout);
                if status > 100 {
                    ct.timers.arm(
                        Slot::TimerC,
                        now.saturating_add(t.timer_c),
                        &mut self.timers,
                        target,
                    );
                }
            }
            let cancel_now = ct.cancel_pending && !ct.cancel_sent;
            let final_done = ct.final_done;
            if cancel_now {
                self.send_cancel(cid, cx);
            }
            if status > 100 && !final_done {
                if let Ok(Some(_)) = msg
                    .contacts()
                    .map(|c| matches!(c, Contact::List(ref l) if !l.is_empty()).then_some(()))
                {
                    self.learn_contact(msg, cx.src, cx.transport, false, now);
                }
                let pending = self.servers.get(&sid).is_some_and(|s| s.pending > 1);
                if let Some(bytes) = self.upstream_response(msg, sid, &branch, status, pending, cx)
                {
                    self.stats.forwarded_responses += 1;
                    self.server_send_provisional(sid, bytes, cx);
                }
            }
            return;
        }
        if ct.invite && status < 300 {
            // 2xx: the INVITE client transaction ends (§17.1.1.2); retransmissions of the
            // 2xx take the stateless path (served from the cache below).
            let final_done = ct.final_done;
            self.remove_client(cid);
            self.learn_contact(msg, cx.src, cx.transport, false, now);
            let Some(bytes) = self.upstream_response(msg, sid, &branch, status, false, cx) else {
                return;
            };
            if let Some(tx) = self.servers.get(&sid) {
                if self.ok_cache.len() < self.cfg.max_table_entries {
                    let ck = format!("{branch}|{}", msg.to_tag().unwrap_or(""));
                    self.ok_cache.insert(
                        ck,
                        Cached2xx {
                            bytes: bytes.clone(),
                            to: tx.reply_to,
                            transport: tx.transport,
                            expires_at_ns: now.saturating_add(t.t64()),
                        },
                    );
                }
            }
            self.stats.forwarded_responses += 1;
            if final_done {
                // The branch was already finished locally (cancelled before it answered);
                // the 2xx must still reach the caller, who will ACK and BYE it.
                if let Some(tx) = self.servers.get(&sid) {
                    let (to, tr) = (tx.reply_to, tx.transport);
                    self.emit(cx, to, tr, bytes);
                }
                return;
            }
            self.branch_final(sid, cid, status, bytes, cx);
            return;
        }
        // Final non-2xx (INVITE: ACK it, Timer D) or any final (non-INVITE: Timer K).
        ct.state = ClientState::Completed;
        ct.timers.disarm(Slot::Retransmit);
        ct.timers.disarm(Slot::Timeout);
        ct.timers.disarm(Slot::TimerC);
        let final_done = ct.final_done;
        if ct.invite {
            if let Some(ack) = build_cancel_or_ack(
                &ct.request,
                "ACK",
                msg.header(HeaderName::To).map(|h| h.value),
            ) {
                ct.ack = Some(ack.clone());
                cx.push(ct.to, ct.transport, ack);
            }
            let d = t.timer_d(ct.reliable);
            ct.timers
                .arm(Slot::End, now.saturating_add(d), &mut self.timers, target);
        } else {
            let k = t.timer_ik(ct.reliable);
            ct.timers
                .arm(Slot::End, now.saturating_add(k), &mut self.timers, target);
        }
        if final_done {
            return;
        }
        let Some(bytes) = self.upstream_response(msg, sid, &branch, status, true, cx) else {
            return;
        };
        self.branch_final(sid, cid, status, bytes, cx);
    }

    /// Cancels the branches `cids` of a request (see `cancel_branch`), accounting those
    /// finished locally with 487 in the response context as it goes.
    pub(super) fn cancel_branches(&mut self, cids: Vec<ClientId>, cx: &mut Cx<'_>) {
        for cid in cids {
            if let Some((sid, bytes)) = self.cancel_branch(cid, cx) {
                self.branch_final(sid, cid, 487, bytes, cx);
            }
        }
    }

    /// Accounts a branch's final response in the response context (§16.7 items 5–10).
    pub(super) fn branch_final(
        &mut self,
        sid: ServerId,
        cid: ClientId,
        status: u16,
        bytes: Vec<u8>,
        cx: &mut Cx<'_>,
    ) {
        if let Some(ct) = self.clients.get_mut(&cid) {
            if ct.final_done {
                return;
            }
            ct.final_done = true;
            self.finished_clients += 1;
        }
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        tx.pending = tx.pending.saturating_sub(1);
        let invite = tx.invite;
        if (200..300).contains(&status) {
            let first = !tx.got_2xx;
            let others: Vec<ClientId> = tx.branches.iter().copied().filter(|&b| b != cid).collect();
            self.server_send_final(sid, bytes, status, cx);
            if invite && first {
                self.cancel_branches(others, cx);
            }
            return;
        }
        if tx.got_2xx || !matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            return;
        }
        if tx.best.as_ref().is_none_or(|(s, _)| better(status, *s)) {
            tx.best = Some((status, bytes));
        }
        if invite && status >= 600 {
            let others: Vec<ClientId> = tx.branches.iter().copied().filter(|&b| b != cid).collect();
            self.cancel_branches(others, cx);
        }
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        if tx.pending > 0 {
            return;
        }
        let Some((mut st, mut b)) = tx.best.take() else {
            return;
        };
        if tx.cancelled && st == 408 {
            st = 487;
            b = self.local_response(sid, 487, "Request Terminated", &[]);
        }
        if st == 503 {
            // §16.7 item 6: a 503 is not passed upstream as such.
            st = 500;
            b = with_status_line(&b, "SIP/2.0 500 Server Internal Error");
        }
        self.stats.forwarded_responses += 1;
        self.server_send_final(sid, b, st, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::status_of;
    use super::*;

    #[test]
    fn response_selection() {
        assert!(better(486, 503));
        assert!(better(302, 404));
        assert!(better(603, 302));
        assert!(!better(404, 486), "same class: the first stays");
        assert!(!better(500, 600));
        assert_eq!(
            with_status_line(
                b"SIP/2.0 503 Busy\r\nX: y\r\n\r\n",
                "SIP/2.0 500 Server Internal Error"
            ),
            b"SIP/2.0 500 Server Internal Error\r\nX: y\r\n\r\n"
        );
        assert_eq!(status_of(b"SIP/2.0 487 x"), Some(487));
        assert_eq!(status_of(b"INVITE x"), None);
    }
}
