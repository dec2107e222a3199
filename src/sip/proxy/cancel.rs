//! CANCEL (RFC 3261 §9, §16.10): answering a CANCEL from upstream, cancelling a branch
//! (now if it has had a provisional response, otherwise once it has one, §9.1), and
//! building the CANCEL, or the ACK of a non-2xx final (§17.1.1.3), for a request we sent.
//!
//! A branch cancelled before any response is finished here with a local 487; that 487 is
//! handed back to the caller, which accounts it in the response context (`response`), so
//! this file never calls back up into response handling.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::route::Hop;
use super::state::{Cx, Proxy};
use crate::sip::media::{MediaCtx, MediaOp};
use crate::sip::parse::{HeaderName, Message};
use crate::sip::registrar::LocationStore;
use crate::sip::transaction::{
    server_key_for_method, ClientId, ClientState, ServerId, ServerState, Slot,
};

/// A branch finished locally with 487: its server transaction and the 487, still to be
/// accounted in the response context.
pub(super) type LocalFinal = (ServerId, Vec<u8>);

impl<S: LocationStore> Proxy<S> {
    /// A CANCEL from upstream (§16.10): 481 if it matches no INVITE; otherwise 200, the
    /// media layer told, and the INVITE marked cancelled. Returns the INVITE's branches,
    /// which the caller cancels (empty if nothing is left to cancel).
    pub(super) fn on_cancel(
        &mut self,
        msg: &Message<'_>,
        key: String,
        cx: &mut Cx<'_>,
    ) -> Vec<ClientId> {
        let invite_sid = server_key_for_method(msg, "INVITE")
            .ok()
            .and_then(|k| self.server_index.get(&k).copied());
        let Some(isid) = invite_sid else {
            self.answer_locally(msg, key, 481, "Call/Transaction Does Not Exist", &[], cx);
            return Vec::new();
        };
        self.answer_locally(msg, key, 200, "OK", &[], cx);
        let call_id = msg.call_id().unwrap_or("");
        let from_tag = msg.from_tag().unwrap_or("");
        let ctx = MediaCtx {
            op: MediaOp::Delete,
            call_id,
            from_tag,
            to_tag: None,
            via_branch: None,
            source: cx.src,
            direction: None,
        };
        let _ = cx.ask_media(&ctx, &[]);
        let Some(tx) = self.servers.get_mut(&isid) else {
            return Vec::new();
        };
        if tx.state != ServerState::Proceeding {
            return Vec::new();
        }
        tx.cancelled = true;
        tx.media_engaged = false;
        tx.branches.clone()
    }

    /// Cancels one branch: CANCEL now if it has had a provisional response, otherwise
    /// stop retransmitting, finish it locally with 487 (returned, for the caller to
    /// account), and CANCEL it should it answer later (§9.1).
    pub(super) fn cancel_branch(&mut self, cid: ClientId, cx: &mut Cx<'_>) -> Option<LocalFinal> {
        let ct = self.clients.get_mut(&cid)?;
        if ct.state == ClientState::Completed || ct.cancel_sent || ct.cancel_pending {
            return None;
        }
        if ct.got_provisional {
            self.send_cancel(cid, cx);
            return None;
        }
        ct.cancel_pending = true;
        ct.timers.disarm(Slot::Retransmit);
        let sid = ct.server?;
        if ct.final_done {
            return None;
        }
        let bytes = self.local_response(sid, 487, "Request Terminated", &[]);
        Some((sid, bytes))
    }

    /// Sends the CANCEL of branch `cid` (once), with a client transaction of its own whose
    /// responses are absorbed.
    pub(super) fn send_cancel(&mut self, cid: ClientId, cx: &mut Cx<'_>) {
        let Some(ct) = self.clients.get_mut(&cid) else {
            return;
        };
        if ct.cancel_sent {
            return;
        }
        ct.cancel_sent = true;
        ct.cancel_pending = false;
        let Some(bytes) = build_cancel_or_ack(&ct.request, "CANCEL", None) else {
            return;
        };
        let hop = Hop {
            ruri: None,
            to: ct.to,
            transport: ct.transport,
            route: None,
        };
        let branch = ct.branch.clone();
        self.new_client_tx(None, &branch, "CANCEL", &hop, bytes.clone(), cx.now);
        self.stats.forwarded_requests += 1;
        cx.push(hop.to, hop.transport, bytes);
    }
}

/// Builds the CANCEL (§9.1) or the ACK of a non-2xx final (§17.1.1.3) for a request we
/// sent: same Request-URI, top Via, Call-ID, From, CSeq number and Route; the ACK takes the
/// response's To.
pub(super) fn build_cancel_or_ack(
    request: &[u8],
    method: &str,
    to: Option<&str>,
) -> Option<Vec<u8>> {
    let m = Message::parse(request).ok()?;
    let ruri = m.request_uri_str()?;
    let via = m.top_via().ok()?.raw;
    let cseq = m.cseq().ok()?.seq;
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
    );
    for kind in [HeaderName::From, HeaderName::CallId] {
        let h = m.header(kind)?;
        let _ = write!(s, "{}: {}\r\n", h.name, h.value);
    }
    let to = match to {
        Some(t) => t,
        None => m.header(HeaderName::To)?.value,
    };
    let _ = write!(s, "To: {to}\r\nCSeq: {cseq} {method}\r\n");
    for h in m.headers_of(HeaderName::Route) {
        let _ = write!(s, "Route: {}\r\n", h.value);
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Some(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_and_ack_building() {
        let req = b"INVITE sip:bob@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\r\nRoute: <sip:r@1.2.3.4;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        let c = build_cancel_or_ack(req, "CANCEL", None).unwrap();
        let m = Message::parse(&c).unwrap();
        assert_eq!(m.method(), Some("CANCEL"));
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKp"));
        assert_eq!(m.vias().count(), 1);
        assert_eq!(m.cseq().unwrap().seq, 7);
        assert_eq!(m.route_set(HeaderName::Route).unwrap().len(), 1);
        let a = build_cancel_or_ack(req, "ACK", Some("<sip:bob@x>;tag=b9")).unwrap();
        let m = Message::parse(&a).unwrap();
        assert_eq!(m.to_tag(), Some("b9"));
        assert_eq!(m.cseq().unwrap().method, "ACK");
    }
}
