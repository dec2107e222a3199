//! Transactions as the proxy runs them (RFC 3261 §17 used by §16): creating a server
//! transaction for a request and a client transaction per branch, sending responses
//! through the server transaction (provisional, final, and the local answers), and removing
//! them. The state, keys and timer values are `sip::transaction`'s.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::route::Hop;
use super::state::{Cx, Proxy};
use crate::sip::media::{has_sdp, MediaCtx, MediaOp};
use crate::sip::message::{build_response, ReplyContext};
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::LocationStore;
use crate::sip::transaction::{
    client_key, ClientId, ClientState, ClientTx, Deadlines, OwnedReply, ServerId, ServerState,
    ServerTx, Slot, Target,
};
use crate::sip::transport::{fixed_via_value, reply_address};

/// The reply context of a request, its top Via given received/rport.
pub(super) fn owned_reply(msg: &Message<'_>, src: SocketAddr) -> OwnedReply {
    let ctx = ReplyContext::from_message(msg);
    let mut vias: Vec<String> = ctx.vias.iter().map(|v| (*v).to_owned()).collect();
    if let (Some(first), Some(h)) = (vias.first_mut(), msg.header(HeaderName::Via)) {
        if let Some(v) = fixed_via_value(h.value, src) {
            *first = v;
        }
    }
    OwnedReply {
        vias,
        from: ctx.from.map(str::to_owned),
        to: ctx.to.map(str::to_owned),
        call_id: ctx.call_id.map(str::to_owned),
        cseq: ctx.cseq.map(str::to_owned),
    }
}

impl<S: LocationStore> Proxy<S> {
    /// Answers a request without a transaction (validity failures, overload).
    pub(super) fn answer_stateless(
        &mut self,
        msg: &Message<'_>,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        cx: &mut Cx<'_>,
    ) {
        let reply = owned_reply(msg, cx.src);
        let tag = self.stateless_tag(&reply);
        let bytes = build_response(&reply.as_ctx(), status, reason, Some(&tag), extra);
        let to = reply_address(msg.top_via().ok().as_ref(), cx.src, cx.transport);
        let transport = cx.transport;
        self.emit(cx, to, transport, bytes);
    }

    /// The To tag of a stateless final to the request `reply` was made from: the same for
    /// the request's retransmissions and for the ACK of that final (same top Via, source).
    fn stateless_tag(&self, reply: &OwnedReply) -> String {
        self.tag_for(&format!("{:?}", reply.vias.first()))
    }

    /// Whether `ack` (from `src`) acknowledges a final this proxy sent statelessly.
    pub(super) fn acks_stateless_reply(&self, ack: &Message<'_>, src: SocketAddr) -> bool {
        match ack.to_tag() {
            // Our tags are 12 hex digits (`tag_for`); others are not worth the hash.
            Some(tag) if tag.len() == 12 => tag == self.stateless_tag(&owned_reply(ack, src)),
            _ => false,
        }
    }

    /// Creates the server transaction for `msg` (matched by `key`), from `cx.src`.
    pub(super) fn new_server_tx(
        &mut self,
        msg: &Message<'_>,
        key: String,
        cx: &Cx<'_>,
    ) -> ServerId {
        let (src, transport, now) = (cx.src, cx.transport, cx.now);
        let id = self.ids.server();
        let method = msg.method().unwrap_or("").to_owned();
        let invite = method == "INVITE";
        let via = msg.top_via().ok();
        let mut timers = Deadlines::default();
        // Safety net: a server transaction whose branches somehow never finish still ends.
        let t = self.cfg.timers;
        let life = if invite {
            t.timer_c + 3 * t.t64()
        } else {
            2 * t.t64()
        };
        timers.arm(
            Slot::Timeout,
            now.saturating_add(life),
            &mut self.timers,
            Target::Server(id),
        );
        let tx = ServerTx {
            to_tag: self.tag_for(&key),
            key: key.clone(),
            invite,
            method,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            reply_to: reply_address(via.as_ref(), src, transport),
            reliable: transport.reliable(),
            transport,
            reply: owned_reply(msg, src),
            last_response: None,
            last_status: 0,
            timers,
            call_id: msg.call_id().unwrap_or("").to_owned(),
            from_tag: msg.from_tag().unwrap_or("").to_owned(),
            branches: Vec::new(),
            pending: 0,
            best: None,
            got_2xx: false,
            cancelled: false,
            request_had_sdp: has_sdp(msg),
            media_engaged: false,
            finished: false,
        };
        self.servers.insert(id, tx);
        self.server_index.insert(key, id);
        id
    }

    /// A response of our own to the request of server transaction `sid` (its To tag).
    pub(super) fn local_response(
        &self,
        sid: ServerId,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        match self.servers.get(&sid) {
            Some(tx) => build_response(&tx.reply.as_ctx(), status, reason, Some(&tx.to_tag), extra),
            None => Vec::new(),
        }
    }

    pub(super) fn server_send_provisional(
        &mut self,
        sid: ServerId,
        bytes: Vec<u8>,
        cx: &mut Cx<'_>,
    ) {
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        if !matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            return;
        }
        tx.state = ServerState::Proceeding;
        tx.last_response = Some(bytes.clone());
        let (to, tr) = (tx.reply_to, tx.transport);
        self.emit(cx, to, tr, bytes);
    }

    /// Sends a final response through the server transaction and moves it on (§17.2).
    pub(super) fn server_send_final(
        &mut self,
        sid: ServerId,
        bytes: Vec<u8>,
        status: u16,
        cx: &mut Cx<'_>,
    ) {
        let now = cx.now;
        let t = self.cfg.timers;
        // Timer L (INVITE after a 2xx) or J (non-INVITE), for a transaction this final ends.
        let end = match self.servers.get(&sid) {
            Some(tx) if matches!(tx.state, ServerState::Trying | ServerState::Proceeding) => {
                match (tx.invite, tx.reliable) {
                    (true, _) if status < 300 => self.linger(t.t64()),
                    (true, _) => 0,
                    (false, reliable) => self.linger(t.timer_j(reliable)),
                }
            }
            _ => 0,
        };
        let Some(tx) = self.servers.get_mut(&sid) else {
            return;
        };
        if !tx.finished && matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            tx.finished = true;
            self.finished_servers += 1;
        }
        let (to, tr) = (tx.reply_to, tx.transport);
        match tx.state {
            ServerState::Trying | ServerState::Proceeding => {}
            ServerState::Accepted if status < 300 => {
                // Further 2xx from other branches (§16.7 item 5).
                self.emit(cx, to, tr, bytes);
                return;
            }
            _ => return,
        }
        tx.last_response = Some(bytes.clone());
        tx.last_status = status;
        tx.timers.disarm(Slot::Timeout);
        let target = Target::Server(sid);
        let mut delete = None;
        if tx.invite && status < 300 {
            tx.state = ServerState::Accepted;
            tx.got_2xx = true;
            tx.timers
                .arm(Slot::End, now.saturating_add(end), &mut self.timers, target);
        } else if tx.invite {
            tx.state = ServerState::Completed;
            if !tx.reliable {
                tx.timers.interval = t.t1;
                tx.timers.arm(
                    Slot::Retransmit,
                    now.saturating_add(t.t1),
                    &mut self.timers,
                    target,
                );
            }
            tx.timers.arm(
                Slot::Timeout,
                now.saturating_add(t.t64()),
                &mut self.timers,
                target,
            );
            if tx.media_engaged {
                delete = Some((tx.call_id.clone(), tx.from_tag.clone(), tx.to_tag.clone()));
            }
        } else {
            tx.state = ServerState::Completed;
            tx.timers
                .arm(Slot::End, now.saturating_add(end), &mut self.timers, target);
        }
        self.emit(cx, to, tr, bytes);
        if let Some((call_id, from_tag, _)) = delete {
            let ctx = MediaCtx {
                op: MediaOp::Delete,
                call_id: &call_id,
                from_tag: &from_tag,
                to_tag: None,
                via_branch: None,
                source: cx.src,
                direction: None,
            };
            let _ = cx.ask_media(&ctx, &[]);
        }
    }

    /// Creates a server transaction and answers it at once (local final response).
    pub(super) fn answer_locally(
        &mut self,
        msg: &Message<'_>,
        key: String,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        cx: &mut Cx<'_>,
    ) -> ServerId {
        let sid = self.new_server_tx(msg, key, cx);
        let bytes = self.local_response(sid, status, reason, extra);
        self.server_send_final(sid, bytes, status, cx);
        sid
    }

    pub(super) fn remove_server(&mut self, sid: ServerId) {
        if let Some(tx) = self.servers.remove(&sid) {
            if tx.finished {
                self.finished_servers = self.finished_servers.saturating_sub(1);
            }
            if self.server_index.get(&tx.key) == Some(&sid) {
                self.server_index.remove(&tx.key);
            }
        }
    }

    /// Creates the client transaction of one branch of server transaction `server` (or,
    /// with `None`, of a CANCEL we send, whose responses are absorbed) and arms its timers:
    /// A/E unless reliable, B/F, and C for an INVITE.
    pub(super) fn new_client_tx(
        &mut self,
        server: Option<ServerId>,
        branch: &str,
        method: &str,
        hop: &Hop,
        request: Vec<u8>,
        now: u64,
    ) -> ClientId {
        let id = self.ids.client();
        let t = self.cfg.timers;
        let invite = method == "INVITE";
        let reliable = hop.transport.reliable();
        let target = Target::Client(id);
        let mut timers = Deadlines::default();
        if !reliable {
            timers.interval = t.t1.max(1);
            timers.arm(
                Slot::Retransmit,
                now.saturating_add(t.t1.max(1)),
                &mut self.timers,
                target,
            );
        }
        timers.arm(
            Slot::Timeout,
            now.saturating_add(t.t64()),
            &mut self.timers,
            target,
        );
        if invite {
            timers.arm(
                Slot::TimerC,
                now.saturating_add(t.timer_c),
                &mut self.timers,
                target,
            );
        }
        let key = client_key(branch, method);
        let ct = ClientTx {
            key: key.clone(),
            branch: branch.to_owned(),
            method: method.to_owned(),
            invite,
            state: ClientState::Calling,
            server,
            to: hop.to,
            transport: hop.transport,
            reliable,
            request,
            ack: None,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            final_done: false,
            timers,
        };
        self.clients.insert(id, ct);
        self.client_index.insert(key, id);
        id
    }

    pub(super) fn remove_client(&mut self, cid: ClientId) -> Option<ClientTx> {
        let ct = self.clients.remove(&cid)?;
        if ct.final_done {
            self.finished_clients = self.finished_clients.saturating_sub(1);
        }
        if self.client_index.get(&ct.key) == Some(&cid) {
            self.client_index.remove(&ct.key);
        }
        Some(ct)
    }
}
