//! Timers (RFC 3261 §17, §16.6 item 11, §16.8): retransmissions (A, E, G), timeouts (B, F,
//! H, and C, which CANCELs a branch that has rung or times it out), the ends of
//! transactions (D, I, J, K, L), and housekeeping (2xx cache sweep, registrar expiry, NAT
//! table sweep). Durations are `sip::transaction::TimerConfig`'s.
#![forbid(unsafe_code)]

use super::state::{Cx, Proxy};
use crate::sip::registrar::LocationStore;
use crate::sip::transaction::{
    ClientId, ClientState, ClientTx, ServerState, Slot, Target, TimerRef,
};

impl<S: LocationStore> Proxy<S> {
    /// Fires every timer due at `cx.now`.
    pub(super) fn fire_due(&mut self, cx: &mut Cx<'_>) {
        // Bounded: every entry is popped once; re-armed entries lie in the future unless a
        // duration is zero, and zero-length timers never re-arm.
        let mut budget = self.timers.len() + 1024;
        while budget > 0 {
            budget -= 1;
            let Some((deadline, tref)) = self.timers.pop_due(cx.now) else {
                break;
            };
            self.on_timer(deadline, tref, cx);
        }
    }

    pub(super) fn housekeeping(&mut self, now: u64) {
        self.ticks += 1;
        self.ok_cache.retain(|_, c| c.expires_at_ns > now);
        if self.ticks % 10 == 1 {
            self.registrar.expire(now);
            self.nat.retain(|_, e| e.expires_at_ns > now);
            self.sweep_flows(now);
        }
    }

    fn on_timer(&mut self, deadline: u64, tref: TimerRef, cx: &mut Cx<'_>) {
        let now = cx.now;
        let t = self.cfg.timers;
        match tref.target {
            Target::Client(cid) => {
                let Some(ct) = self.clients.get_mut(&cid) else {
                    return;
                };
                if !ct.timers.take_if_current(tref.slot, deadline) {
                    return;
                }
                let target = tref.target;
                match tref.slot {
                    Slot::Retransmit => {
                        if ct.state == ClientState::Completed
                            || (ct.invite && ct.state != ClientState::Calling)
                        {
                            return;
                        }
                        // A: doubles; E: doubles up to T2, and T2 once provisional (§17.1.2.2).
                        ct.timers.interval = if !ct.invite && ct.state == ClientState::Proceeding {
                            t.t2
                        } else {
                            t.next_interval(ct.timers.interval, !ct.invite)
                        }
                        .max(1);
                        let next = now.saturating_add(ct.timers.interval);
                        ct.timers
                            .arm(Slot::Retransmit, next, &mut self.timers, target);
                        let (to, transport, bytes) = (ct.to, ct.transport, ct.request.clone());
                        self.stats.retransmissions_sent += 1;
                        cx.push(to, transport, bytes);
                    }
                    Slot::Timeout => {
                        if ct.state == ClientState::Completed {
                            return;
                        }
                        self.client_timed_out(cid, cx);
                    }
                    Slot::TimerC => {
                        if ct.state == ClientState::Completed {
                            return;
                        }
                        if ct.got_provisional {
                            // §16.8: CANCEL the branch; give it 64·T1 to answer, then 408.
                            ct.timers.arm(
                                Slot::Timeout,
                                now.saturating_add(t.t64()),
                                &mut self.timers,
                                target,
                            );
                            self.send_cancel(cid, cx);
                        } else {
                            self.client_timed_out(cid, cx);
                        }
                    }
                    Slot::End => {
                        self.remove_client(cid);
                    }
                }
            }
            Target::Server(sid) => {
                let Some(tx) = self.servers.get_mut(&sid) else {
                    return;
                };
                if !tx.timers.take_if_current(tref.slot, deadline) {
                    return;
                }
                match (tref.slot, tx.state) {
                    (Slot::Retransmit, ServerState::Completed) => {
                        // Timer G.
                        tx.timers.interval = t.next_interval(tx.timers.interval, true).max(1);
                        let next = now.saturating_add(tx.timers.interval);
                        tx.timers
                            .arm(Slot::Retransmit, next, &mut self.timers, tref.target);
                        if let Some(b) = tx.last_response.clone() {
                            let (to, tr) = (tx.reply_to, tx.transport);
                            self.stats.retransmissions_sent += 1;
                            self.emit(cx, to, tr, b);
                        }
                    }
                    (Slot::Timeout, ServerState::Trying | ServerState::Proceeding) => {
                        // Safety net: no branch answered in time.
                        let code = if tx.cancelled { 487 } else { 408 };
                        let reason = if tx.cancelled {
                            "Request Terminated"
                        } else {
                            "Request Timeout"
                        };
                        let b = self.local_response(sid, code, reason, &[]);
                        self.server_send_final(sid, b, code, cx);
                    }
                    (Slot::Timeout | Slot::End, _) => {
                        // Timer H (no ACK), I, J, L.
                        self.remove_server(sid);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Timer B/F (or C without a provisional): the branch counts as a 408 (§16.7 item 2...).
    fn client_timed_out(&mut self, cid: ClientId, cx: &mut Cx<'_>) {
        let Some(ct) = self.remove_client(cid) else {
            return;
        };
        self.stats.timeouts += 1;
        let Some(sid) = ct.server else {
            self.service_result(&ct.branch, 408, cx);
            return;
        };
        if ct.final_done {
            return;
        }
        // Re-insert a finished marker so branch_final can account it.
        let bytes = self.local_response(sid, 408, "Request Timeout", &[]);
        self.clients.insert(
            cid,
            ClientTx {
                final_done: false,
                ..ct
            },
        );
        self.branch_final(sid, cid, 408, bytes, cx);
        if self.clients.remove(&cid).is_some_and(|ct| ct.final_done) {
            self.finished_clients = self.finished_clients.saturating_sub(1);
        }
    }
}
