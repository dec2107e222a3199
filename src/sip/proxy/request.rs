//! Requests (RFC 3261 §16.3–16.6): validity checks, retransmissions, overload, CANCEL,
//! loop detection, the routing decision, and forwarding a copy per target.
//!
//! The order a new request goes through, in [`Proxy::on_request`]:
//! 1. §16.3 validity ([`check_request`]): failures are answered statelessly (an OPTIONS
//!    with Max-Forwards 0 gets 200, §11); an ACK that fails is dropped.
//! 2. ACK: absorbed by the INVITE's server transaction after a non-2xx final, otherwise
//!    routed end to end without a transaction (the ACK of a 2xx).
//! 3. A retransmission is answered from its server transaction, never forwarded again.
//! 4. Beyond the transaction cap: 503 with Retry-After. A new INVITE gets it earlier, at
//!    the high-water mark or while the driver says it is shedding load (overload control).
//! 5. CANCEL: see `cancel`.
//! 6. §16.3 item 4: a loop (our Via with this request's loop hash) gets 482.
//! 7. **The interception point** (see below).
//! 8. §16.4/§16.5 routing (`route`): register, answer OPTIONS, reject, or forward
//!    statefully to every target (§16.6: Via with our branch, Max-Forwards, Record-Route,
//!    Route popped, RFC 3581 on the received Via, the media hook's body).
//!
//! ## The interception point
//!
//! A module that acts on requests itself rather than routing them (authentication
//! challenging a request with 401/407, a presence server taking SUBSCRIBE and PUBLISH, a
//! relay set choosing the media relay) hooks in at step 7 of `on_request`. A request that
//! reaches it is a new, valid, non-ACK, non-CANCEL request that is not a retransmission and
//! not looped, and the transaction cap has room; `key` is its server transaction key. The
//! module either answers it there (`answer_locally` creates the server transaction and
//! sends the final response, so retransmissions are absorbed like any other) and returns,
//! or lets it fall through to routing. A module that only serves requests addressed to one
//! of our domains (as the registrar does for REGISTER) instead adds a [`Decision`] variant
//! in `route` and a handler beside `on_register`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::ident::names;
use super::nat::{contact_key, via_mismatch};
use super::route::{to_front_over_tcp, Decision, Hop, PopRoute};
use super::services::Served;
use super::state::{Cx, Proxy};
use crate::sip::auth::{AuthRequest, AuthVerdict};
use crate::sip::edit::{EditError, Editor};
use crate::sip::media::{decide, has_sdp, media_tags, MediaCtx, MediaEvent, MediaOp, MediaResult};
use crate::sip::message::check_request;
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::{canonical_aor, LocationStore};
use crate::sip::transaction::{server_key, ServerState, Slot, Target};
use crate::sip::transport::{fixed_via_value, Transport};
use crate::sip::uri::{Scheme, SipUri};

/// What we answer or route ourselves. SUBSCRIBE and PUBLISH only while we serve them
/// (`sip::presence`); NOTIFY never (we send them; a phone's are routed in their dialog).
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, REFER, MESSAGE";
const ALLOW_PRESENCE: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, REFER, MESSAGE, SUBSCRIBE, PUBLISH";

/// The headers of our 200 to an OPTIONS (§11.2): exactly what this server does.
fn options_headers(presence: bool) -> Vec<(&'static str, &'static str)> {
    if presence {
        vec![
            ("Allow", ALLOW_PRESENCE),
            ("Allow-Events", crate::sip::presence::ALLOW_EVENTS),
            ("Accept", "application/sdp, application/pidf+xml"),
            ("Supported", ""),
        ]
    } else {
        vec![
            ("Allow", ALLOW),
            ("Accept", "application/sdp"),
            ("Supported", ""),
        ]
    }
}

/// What changes in one forwarded copy of a request (§16.6).
struct Outgoing<'a> {
    hop: &'a Hop,
    /// The branch of the Via we push.
    branch: &'a str,
    /// Our own top Route, to be removed.
    pop: Option<&'a PopRoute>,
    /// Record-Route, given the transport the request arrived on (`None`: no Record-Route).
    record_route: Option<Transport>,
    /// A new body from the media layer.
    body: Option<&'a [u8]>,
    /// Remove the Proxy-Authorization credentials for our own realms (we checked them;
    /// the next hop has no use for them).
    consume_credentials: bool,
}

impl<S: LocationStore> Proxy<S> {
    /// A parsed request from `cx.src` (the steps are in the module docs).
    pub(super) fn on_request(&mut self, msg: &Message<'_>, cx: &mut Cx<'_>) {
        // 1. §16.3 validity.
        if let Err(rej) = check_request(msg) {
            let method = msg.method().unwrap_or("");
            if method == "ACK" {
                self.stats.dropped += 1;
            } else if rej.status == 483 && method == "OPTIONS" {
                // §11 / §16.3 item 3: an OPTIONS with Max-Forwards 0 may be answered by
                // the proxy itself.
                self.answer_stateless(
                    msg,
                    200,
                    "OK",
                    &options_headers(self.presence.is_some()),
                    cx,
                );
            } else {
                if rej.status == 483 {
                    self.stats.too_many_hops += 1;
                }
                self.stats.rejected += 1;
                let list = rej.unsupported.join(", ");
                let extra: Vec<(&str, &str)> = if rej.status == 420 {
                    vec![("Unsupported", list.as_str())]
                } else {
                    Vec::new()
                };
                self.answer_stateless(msg, rej.status, rej.reason, &extra, cx);
            }
            return;
        }
        let method = msg.method().unwrap_or("");
        let Ok(key) = server_key(msg) else {
            self.stats.dropped += 1;
            return;
        };
        // 2. ACK.
        if method == "ACK" {
            self.on_ack(msg, &key, cx);
            return;
        }
        // 3. Retransmission: answer from the transaction (§17.2.1, §17.2.2).
        if let Some(&sid) = self.server_index.get(&key) {
            self.stats.retransmissions_absorbed += 1;
            if let Some(tx) = self.servers.get(&sid) {
                if matches!(tx.state, ServerState::Proceeding | ServerState::Completed) {
                    if let Some(b) = tx.last_response.clone() {
                        let (to, tr) = (tx.reply_to, tx.transport);
                        self.emit(cx, to, tr, b);
                    }
                }
            }
            return;
        }
        // 4. Overload.
        if self.live() >= self.cfg.max_transactions {
            self.stats.overload_rejects += 1;
            self.answer_stateless(msg, 503, "Service Unavailable", &[("Retry-After", "5")], cx);
            return;
        }
        // 4b. Overload control: a new INVITE is refused before its SDP is looked at or a
        // port is taken; its server transaction absorbs the retransmissions and the ACK.
        if method == "INVITE" && msg.to_tag().is_none() && self.refusing_invites() {
            self.stats.overload_invites_refused += 1;
            let after = self.cfg.overload_retry_after_secs.to_string();
            let extra = [("Retry-After", after.as_str())];
            if self.in_reserve() {
                // No transaction left to spare: a stateless 503 (its retransmissions get
                // the same answer, its ACK is recognised by our To tag and absorbed).
                self.answer_stateless(msg, 503, "Service Unavailable", &extra, cx);
            } else {
                self.answer_locally(msg, key, 503, "Service Unavailable", &extra, cx);
            }
            return;
        }
        // 5. CANCEL.
        if method == "CANCEL" {
            let branches = self.on_cancel(msg, key, cx);
            self.cancel_branches(branches, cx);
            return;
        }
        // 6. Loops.
        let loop_hash = self.loop_hash(msg);
        if self.is_loop(msg, loop_hash) {
            self.stats.loops += 1;
            self.answer_locally(msg, key, 482, "Loop Detected", &[], cx);
            return;
        }
        // 7. The interception point (module docs): authentication.
        if let Some(hook) = cx.auth.as_deref_mut() {
            let req = AuthRequest::from_message(msg, cx.src.ip(), &|u| self.is_our_uri(u), &|u| {
                self.is_our_route(u)
            });
            match hook.check(&req, cx.now) {
                AuthVerdict::Pass => {}
                AuthVerdict::Challenge {
                    status,
                    header,
                    values,
                } => {
                    self.stats.auth_challenges += 1;
                    let extra: Vec<(&str, &str)> =
                        values.iter().map(|v| (header, v.as_str())).collect();
                    let reason = AuthVerdict::reason(status);
                    self.answer_locally(msg, key, status, reason, &extra, cx);
                    return;
                }
                AuthVerdict::Forbidden(reason) => {
                    self.stats.auth_forbidden += 1;
                    self.answer_locally(msg, key, 403, reason, &[], cx);
                    return;
                }
            }
        }
        // 7b. Presence, publications and messages for our users (`services`).
        match self.offer_to_services(msg, &key, cx) {
            Served::Answered => return,
            Served::ToFront(hop) => {
                self.forward_stateful(msg, key, vec![hop], None, loop_hash, cx);
                return;
            }
            Served::Route => {}
        }
        // 8. Routing.
        let (decision, pop) = self.route(msg, cx.now);
        match decision {
            Decision::Reject(status, reason) => {
                if status == 430 {
                    // RFC 5626 §5.3: the binding's flow is gone; the phone makes a new one.
                    self.stats.flows_failed += 1;
                    if let Some(Ok(ruri)) = msg.request_uri() {
                        self.drop_failed_flows(&ruri, cx.now);
                    }
                }
                self.answer_locally(msg, key, status, reason, &[], cx);
            }
            Decision::Options => {
                self.answer_locally(
                    msg,
                    key,
                    200,
                    "OK",
                    &options_headers(self.presence.is_some()),
                    cx,
                );
            }
            Decision::Register => self.on_register(msg, key, cx),
            Decision::Forward(hops) => {
                if let Ok(via) = msg.top_via() {
                    let evidence = via_mismatch(&via, cx.src);
                    if method != "REGISTER" {
                        self.learn_contact(msg, cx.src, cx.transport, evidence, cx.now);
                    }
                }
                self.forward_stateful(msg, key, hops, pop, loop_hash, cx);
            }
        }
    }

    /// A REGISTER for one of our domains: the registrar answers; the bindings it made from
    /// this source are remembered as NATed (or forgotten) per the Via evidence.
    fn on_register(&mut self, msg: &Message<'_>, key: String, cx: &mut Cx<'_>) {
        let (src, now) = (cx.src, cx.now);
        let resp = self
            .registrar
            .handle_register_on(msg, src, cx.transport, now);
        self.stats.registrations += 1;
        if resp.status == 200 {
            if let Some(aor) = msg.to().ok().and_then(|t| canonical_aor(&t.uri)) {
                let evidence = msg.top_via().is_ok_and(|v| via_mismatch(&v, src));
                let call_id = msg.call_id().unwrap_or("");
                for b in self.registrar.lookup(&aor, now) {
                    if b.call_id != call_id || b.source != src {
                        continue;
                    }
                    let Ok(u) = SipUri::parse(&b.uri) else {
                        continue;
                    };
                    let k = contact_key(&u);
                    // Over TCP/TLS the phone is reached on the connection it registered
                    // over (RFC 5626 §5.3: its flow), which a NAT or firewall lets through
                    // and on which it may be the only listener.
                    if evidence || cx.transport.reliable() {
                        self.remember_nat(k, src, cx.transport, b.expires_at_ns);
                    } else {
                        self.nat.remove(&k);
                    }
                }
                if self.known_aors.len() < self.cfg.max_table_entries {
                    self.known_aors.insert(aor);
                }
            }
        }
        let extra: Vec<(&str, &str)> = resp.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.answer_locally(msg, key, resp.status, resp.reason, &extra, cx);
        if resp.status == 200 {
            if let Some(to) = msg.to().ok().as_ref().and_then(|t| t.sip_uri()) {
                self.service_bindings(to, cx);
            }
        }
    }

    /// Builds the request for one hop (§16.6).
    fn build_request(
        &self,
        msg: &Message<'_>,
        src: SocketAddr,
        copy: &Outgoing<'_>,
    ) -> Result<Vec<u8>, EditError> {
        let mut e = Editor::new(msg);
        if let Some(r) = &copy.hop.ruri {
            e.set_request_uri(r)?;
        }
        e.decrement_max_forwards()?;
        if copy.consume_credentials {
            for (i, h) in msg.headers.iter().enumerate() {
                if h.kind == HeaderName::ProxyAuthorization && self.is_our_realm(h.value) {
                    e.remove_header(i)?;
                }
            }
        }
        for (header, rest) in copy.pop.map(|p| p.edits.as_slice()).unwrap_or_default() {
            match rest {
                Some(rest) => e.replace_value(*header, rest)?,
                None => e.remove_header(*header)?,
            }
        }
        if let Some(route) = &copy.hop.route {
            // Above every Route left (not at a line just removed): the first hop.
            let removed = |i: usize| {
                copy.pop
                    .is_some_and(|p| p.edits.iter().any(|(h, rest)| *h == i && rest.is_none()))
            };
            let at = msg
                .headers
                .iter()
                .enumerate()
                .position(|(i, h)| h.kind == HeaderName::Route && !removed(i))
                .unwrap_or(msg.headers.len());
            e.insert_header_before(at, "Route", route)?;
        }
        if let Some(arrived) = copy.record_route {
            let at = msg
                .headers
                .iter()
                .position(|h| h.kind == HeaderName::RecordRoute)
                .unwrap_or(msg.headers.len());
            let sips = matches!(msg.request_uri(), Some(Ok(u)) if u.as_sip().is_some_and(|u| u.scheme == Scheme::Sips));
            let out = self.record_route_for(copy.hop.transport, sips, copy.hop.to.ip());
            let back = self.record_route_for(arrived, sips, src.ip());
            // RFC 5658 double record-routing when the two sides reach us differently (by
            // transport, or on two networks, RFC 3261 §16.6 item 4): the callee's route set
            // starts at the entry facing it, the caller's (reversed) at the one facing the
            // caller.
            let value = if out == back {
                out
            } else {
                format!("{out}, {back}")
            };
            e.insert_header_before(at, "Record-Route", &value)?;
        }
        // RFC 3581 on the received top Via, then ours above it.
        if let Some((idx, h)) = msg
            .headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.kind == HeaderName::Via)
        {
            if let Some(v) = fixed_via_value(h.value, src) {
                e.replace_value(idx, &v)?;
            }
        }
        e.push_via(&format!(
            "SIP/2.0/{} {};branch={}",
            copy.hop.transport.via_name(),
            self.local_for(copy.hop.transport, copy.hop.to.ip()),
            copy.branch
        ));
        if let Some(b) = copy.body {
            e.set_body(b);
        }
        e.finish()
    }

    /// Forwards a request to every hop with a server transaction and a client transaction
    /// per branch (§16.6); the media layer offers per branch.
    fn forward_stateful(
        &mut self,
        msg: &Message<'_>,
        key: String,
        hops: Vec<Hop>,
        pop: Option<PopRoute>,
        loop_hash: u64,
        cx: &mut Cx<'_>,
    ) {
        let (src, now) = (cx.src, cx.now);
        let method = msg.method().unwrap_or("").to_owned();
        let invite = method == "INVITE";
        let sdp = has_sdp(msg);
        let op = decide(MediaEvent::Request { method: &method }, sdp);
        let call_id = msg.call_id().unwrap_or("").to_owned();
        let from_tag = msg.from_tag().unwrap_or("").to_owned();
        let to_tag = msg.to_tag().map(str::to_owned);
        let initial = to_tag.is_none();
        let record_route = (self.cfg.record_route
            && initial
            && matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER" | "NOTIFY"))
        .then_some(cx.transport);
        // A remote relay's answer first: nothing below runs until every step is ready.
        let hop_count = hops.len().min(self.cfg.max_bindings.max(1));
        let first_to = hops.first().map_or(src.ip(), |h| h.to.ip());
        let answer_dir = self.media_direction(MediaOp::Answer, src.ip(), first_to);
        let mut ready = true;
        if let Some(MediaOp::Answer) = op {
            let (f, t) = media_tags(MediaOp::Answer, true, &from_tag, to_tag.as_deref());
            let ctx = MediaCtx {
                op: MediaOp::Answer,
                call_id: &call_id,
                from_tag: f,
                to_tag: t,
                via_branch: None,
                source: src,
                direction: names(&answer_dir),
            };
            ready &= cx.media_ready(&ctx, msg.body());
        }
        if op == Some(MediaOp::Offer) {
            for (i, hop) in hops.iter().enumerate().take(hop_count) {
                let branch = self.branch(loop_hash, &key, &method, i);
                let dir = self.media_direction(MediaOp::Offer, src.ip(), hop.to.ip());
                let ctx = MediaCtx {
                    op: MediaOp::Offer,
                    call_id: &call_id,
                    from_tag: &from_tag,
                    to_tag: to_tag.as_deref(),
                    via_branch: Some(&branch),
                    source: src,
                    direction: names(&dir),
                };
                ready &= cx.media_ready(&ctx, msg.body());
            }
        }
        if !ready {
            self.stats.media_parked += 1;
            return;
        }
        // Whole-request media ops (answer in PRACK, delete on BYE) happen once.
        let mut shared_body: Option<Vec<u8>> = None;
        if let Some(o @ (MediaOp::Answer | MediaOp::Delete)) = op {
            let (f, t) = media_tags(o, true, &from_tag, to_tag.as_deref());
            let ctx = MediaCtx {
                op: o,
                call_id: &call_id,
                from_tag: f,
                to_tag: t,
                via_branch: None,
                source: src,
                direction: names(&answer_dir).filter(|_| o == MediaOp::Answer),
            };
            match cx.ask_media(&ctx, msg.body()) {
                MediaResult::NewBody(b) if o == MediaOp::Answer => shared_body = Some(b),
                MediaResult::Failed { .. } | MediaResult::Pending if o == MediaOp::Answer => {
                    self.stats.media_failures += 1
                }
                _ => {}
            }
        }
        let incoming = key.clone();
        let sid = self.new_server_tx(msg, key, cx);
        if invite {
            let trying = self.local_response(sid, 100, "Trying", &[]);
            self.server_send_provisional(sid, trying, cx);
        }
        let mut failure: Option<(u16, String)> = None;
        let mut created = Vec::new();
        for (i, hop) in hops.iter().enumerate().take(hop_count) {
            let branch = self.branch(loop_hash, &incoming, &method, i);
            let mut body = shared_body.clone();
            if op == Some(MediaOp::Offer) {
                let dir = self.media_direction(MediaOp::Offer, src.ip(), hop.to.ip());
                let ctx = MediaCtx {
                    op: MediaOp::Offer,
                    call_id: &call_id,
                    from_tag: &from_tag,
                    to_tag: to_tag.as_deref(),
                    via_branch: Some(&branch),
                    source: src,
                    direction: names(&dir),
                };
                match cx.ask_media(&ctx, msg.body()) {
                    MediaResult::Unchanged => {}
                    MediaResult::Pending => self.stats.media_failures += 1,
                    MediaResult::NewBody(b) => body = Some(b),
                    MediaResult::Failed { status, reason } => {
                        self.stats.media_failures += 1;
                        failure.get_or_insert((status, reason));
                        continue;
                    }
                }
                if let Some(tx) = self.servers.get_mut(&sid) {
                    tx.media_engaged = true;
                }
            }
            let copy = Outgoing {
                hop,
                branch: &branch,
                pop: pop.as_ref(),
                record_route,
                body: body.as_deref(),
                consume_credentials: cx.auth.is_some(),
            };
            let Ok(mut bytes) = self.build_request(msg, src, &copy) else {
                continue;
            };
            let over_tcp;
            let hop = match to_front_over_tcp(hop, bytes.len()) {
                Some(h) => {
                    over_tcp = h;
                    let copy = Outgoing {
                        hop: &over_tcp,
                        ..copy
                    };
                    let Ok(b) = self.build_request(msg, src, &copy) else {
                        continue;
                    };
                    bytes = b;
                    &over_tcp
                }
                None => hop,
            };
            let cid = self.new_client_tx(Some(sid), &branch, &method, hop, bytes.clone(), now);
            created.push(cid);
            self.stats.forwarded_requests += 1;
            cx.push(hop.to, hop.transport, bytes);
        }
        if created.is_empty() {
            let (status, reason) = failure.unwrap_or((500, "Server Internal Error".to_owned()));
            // Nothing was offered successfully: no delete is needed.
            if let Some(tx) = self.servers.get_mut(&sid) {
                tx.media_engaged = false;
            }
            // A relay out of capacity (or draining) says when to try again (RFC 3261 §21.5.4).
            let retry: &[(&str, &str)] = if status == 503 {
                &[("Retry-After", "5")]
            } else {
                &[]
            };
            let bytes = self.local_response(sid, status, &reason, retry);
            self.server_send_final(sid, bytes, status, cx);
            return;
        }
        if let Some(tx) = self.servers.get_mut(&sid) {
            tx.pending = created.len();
            tx.branches = created;
        }
    }

    /// An ACK: absorbed by the INVITE's server transaction after our non-2xx final (§17.2.1),
    /// otherwise (the ACK of a 2xx) routed end to end without a transaction.
    fn on_ack(&mut self, msg: &Message<'_>, key: &str, cx: &mut Cx<'_>) {
        let (src, now) = (cx.src, cx.now);
        if let Some(&sid) = self.server_index.get(key) {
            let t = self.cfg.timers;
            if let Some(tx) = self.servers.get_mut(&sid) {
                match tx.state {
                    ServerState::Completed => {
                        // §17.2.1: ACK of our non-2xx final; Timer I absorbs retransmissions.
                        tx.state = ServerState::Confirmed;
                        tx.timers.disarm(Slot::Retransmit);
                        tx.timers.disarm(Slot::Timeout);
                        let i = t.timer_ik(tx.reliable);
                        tx.timers.arm(
                            Slot::End,
                            now.saturating_add(i),
                            &mut self.timers,
                            Target::Server(sid),
                        );
                        return;
                    }
                    ServerState::Confirmed | ServerState::Proceeding | ServerState::Trying => {
                        self.stats.retransmissions_absorbed += 1;
                        return;
                    }
                    // An RFC 2543 ACK of a 2xx matches the INVITE: route it end to end.
                    ServerState::Accepted => {}
                }
            }
        }
        // The ACK of a final we sent statelessly (overload, cap): it carries the To tag we
        // made for that response; absorbed, as Kamailio's sl module does.
        if self.acks_stateless_reply(msg, cx.src) {
            self.stats.retransmissions_absorbed += 1;
            return;
        }
        // ACK of a 2xx: end to end, stateless (§16.11 behaviour for the one request that
        // has no transaction).
        let loop_hash = self.loop_hash(msg);
        let (decision, pop) = self.route(msg, now);
        let Decision::Forward(hops) = decision else {
            self.stats.dropped += 1;
            return;
        };
        let Some(hop) = hops.into_iter().next() else {
            self.stats.dropped += 1;
            return;
        };
        let mut body = None;
        if let Some(MediaOp::Answer) = decide(MediaEvent::Request { method: "ACK" }, has_sdp(msg)) {
            let from_tag = msg.from_tag().unwrap_or("");
            let (f, t) = media_tags(MediaOp::Answer, true, from_tag, msg.to_tag());
            let dir = self.media_direction(MediaOp::Answer, src.ip(), hop.to.ip());
            let ctx = MediaCtx {
                op: MediaOp::Answer,
                call_id: msg.call_id().unwrap_or(""),
                from_tag: f,
                to_tag: t,
                via_branch: None,
                source: src,
                direction: names(&dir),
            };
            if !cx.media_ready(&ctx, msg.body()) {
                self.stats.media_parked += 1;
                return;
            }
            match cx.ask_media(&ctx, msg.body()) {
                MediaResult::NewBody(b) => body = Some(b),
                MediaResult::Failed { .. } | MediaResult::Pending => self.stats.media_failures += 1,
                MediaResult::Unchanged => {}
            }
        }
        let branch = self.branch(loop_hash, key, "ACK", 0);
        let copy = Outgoing {
            hop: &hop,
            branch: &branch,
            pop: pop.as_ref(),
            record_route: None,
            body: body.as_deref(),
            consume_credentials: cx.auth.is_some(),
        };
        if let Ok(bytes) = self.build_request(msg, src, &copy) {
            self.stats.stateless_forwards += 1;
            cx.push(hop.to, hop.transport, bytes);
        }
    }
}
