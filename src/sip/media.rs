//! What the proxy asks the media layer, and when: the decision table Kamailio's
//! `rtpengine_manage()` (5.6) applies, written out below.
//!
//! The proxy calls [`MediaHook::media`] for every message that carries or ends a media
//! session; the hook answers with a replacement body, "leave it", or a failure that rejects
//! an INVITE. The decision itself is the pure function [`decide`], so it can be tested
//! without a proxy:
//!
//! | message | op |
//! | --- | --- |
//! | INVITE or UPDATE request with SDP | `Offer` |
//! | ACK or PRACK request with SDP | `Answer`, tags swapped (from = To-tag, to = From-tag) |
//! | 1xx/2xx to INVITE/UPDATE with SDP | `Answer` if the request had SDP, else `Offer` (late offer) |
//! | BYE, CANCEL | `Delete` |
//! | final >= 300 to INVITE, no other branch pending | `Delete` |
//! | anything else | nothing |
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::parse::Message;

/// The media operation for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaOp {
    Offer,
    Answer,
    Delete,
}

/// Identifies the call and leg for the media layer (ng `call-id`, `from-tag`, `to-tag`,
/// `via-branch`, `received-from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaCtx<'a> {
    pub op: MediaOp,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub to_tag: Option<&'a str>,
    /// The branch of the proxy's own Via toward the callee for offers/answers made per
    /// forked branch; `None` for end-to-end requests (ACK, BYE...) and deletes.
    pub via_branch: Option<&'a str>,
    /// Where the SIP message came from.
    pub source: SocketAddr,
    /// The interface names media is anchored on, as ng `direction` reads them (for an
    /// offer the SDP's sender first, for an answer its receiver first); `None`: the default
    /// for both sides (the proxy does not bridge networks).
    pub direction: Option<[&'a str; 2]>,
}

/// What the media layer did with a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaResult {
    /// Forward the body as it is.
    Unchanged,
    /// Forward this body instead (the proxy fixes Content-Length).
    NewBody(Vec<u8>),
    /// The media layer cannot serve the call (e.g. 503 "Ran out of ports"): an INVITE or
    /// UPDATE offer is rejected with this status; for other messages the proxy forwards the
    /// message unchanged and counts the failure.
    Failed { status: u16, reason: String },
    /// The media layer asked a remote relay and has no answer yet: the proxy drops the
    /// message without changing any state; the caller hands it in again once the answer
    /// is there (a retransmission meanwhile gets `Pending` again). Only for offers and
    /// answers; never from a timer-driven delete.
    Pending,
}

/// The media layer as the proxy sees it.
pub trait MediaHook {
    fn media(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now_ns: u64) -> MediaResult;

    /// Whether [`MediaHook::media`] can answer `ctx` now. The proxy asks before it changes
    /// any state for a message, for every offer and answer the message will cause; on
    /// `false` it drops the message (the hook has started what it needs and the caller
    /// hands the message in again later). A synchronous hook is always ready.
    fn ready(&mut self, _ctx: &MediaCtx<'_>, _body: &[u8], _now_ns: u64) -> bool {
        true
    }
}

/// A media layer that does nothing (signalling-only proxy).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMedia;

impl MediaHook for NoMedia {
    fn media(&mut self, _ctx: &MediaCtx<'_>, _body: &[u8], _now_ns: u64) -> MediaResult {
        MediaResult::Unchanged
    }
}

/// The message being decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent<'a> {
    Request {
        method: &'a str,
    },
    Response {
        /// The CSeq method (the request this answers).
        method: &'a str,
        status: u16,
        /// Whether that request carried SDP.
        request_had_sdp: bool,
        /// Whether another forked branch of the same request may still answer.
        other_branches_pending: bool,
    },
}

/// The decision table of the module docs. `has_sdp` is whether this message carries SDP.
pub fn decide(event: MediaEvent<'_>, has_sdp: bool) -> Option<MediaOp> {
    match event {
        MediaEvent::Request { method } => {
            let m = |s: &str| method.eq_ignore_ascii_case(s);
            if m("BYE") || m("CANCEL") {
                Some(MediaOp::Delete)
            } else if has_sdp && (m("INVITE") || m("UPDATE")) {
                Some(MediaOp::Offer)
            } else if has_sdp && (m("ACK") || m("PRACK")) {
                Some(MediaOp::Answer)
            } else {
                None
            }
        }
        MediaEvent::Response {
            method,
            status,
            request_had_sdp,
            other_branches_pending,
        } => {
            let invite = method.eq_ignore_ascii_case("INVITE");
            let update = method.eq_ignore_ascii_case("UPDATE");
            if status >= 300 {
                (invite && !other_branches_pending).then_some(MediaOp::Delete)
            } else if status > 100 && has_sdp && (invite || update) {
                Some(if request_had_sdp {
                    MediaOp::Answer
                } else {
                    MediaOp::Offer
                })
            } else {
                None
            }
        }
    }
}

/// The (from-tag, to-tag) pair the media layer gets: swapped for an answer carried by a
/// request (ACK/PRACK of a late offer), as the request flows from callee's perspective.
pub fn media_tags<'a>(
    op: MediaOp,
    is_request: bool,
    from_tag: &'a str,
    to_tag: Option<&'a str>,
) -> (&'a str, Option<&'a str>) {
    match (op, is_request, to_tag) {
        (MediaOp::Answer, true, Some(t)) => (t, Some(from_tag)),
        _ => (from_tag, to_tag),
    }
}

/// Whether a message body is SDP: non-empty and `application/sdp`, or non-empty with no
/// Content-Type but starting like SDP. Multipart bodies are left alone.
pub fn has_sdp(msg: &Message<'_>) -> bool {
    let body = msg.body();
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return false;
    }
    match msg.content_type() {
        Ok(Some(ct)) => ct.is("application", "sdp"),
        Ok(None) => body.starts_with(b"v="),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(m: &str, sdp: bool) -> Option<MediaOp> {
        decide(MediaEvent::Request { method: m }, sdp)
    }

    fn resp(m: &str, status: u16, sdp: bool, req_sdp: bool, pending: bool) -> Option<MediaOp> {
        decide(
            MediaEvent::Response {
                method: m,
                status,
                request_had_sdp: req_sdp,
                other_branches_pending: pending,
            },
            sdp,
        )
    }

    #[test]
    fn request_table() {
        assert_eq!(req("INVITE", true), Some(MediaOp::Offer));
        assert_eq!(req("INVITE", false), None);
        assert_eq!(req("UPDATE", true), Some(MediaOp::Offer));
        assert_eq!(req("ACK", true), Some(MediaOp::Answer));
        assert_eq!(req("ACK", false), None);
        assert_eq!(req("PRACK", true), Some(MediaOp::Answer));
        assert_eq!(req("BYE", false), Some(MediaOp::Delete));
        assert_eq!(req("CANCEL", false), Some(MediaOp::Delete));
        assert_eq!(req("MESSAGE", true), None);
        assert_eq!(req("OPTIONS", true), None);
    }

    #[test]
    fn response_table() {
        assert_eq!(
            resp("INVITE", 200, true, true, false),
            Some(MediaOp::Answer)
        );
        assert_eq!(
            resp("INVITE", 183, true, true, false),
            Some(MediaOp::Answer)
        );
        assert_eq!(
            resp("INVITE", 200, true, false, false),
            Some(MediaOp::Offer)
        );
        assert_eq!(resp("INVITE", 180, false, true, false), None);
        assert_eq!(resp("INVITE", 100, true, true, false), None);
        assert_eq!(
            resp("UPDATE", 200, true, true, false),
            Some(MediaOp::Answer)
        );
        assert_eq!(
            resp("INVITE", 486, false, true, false),
            Some(MediaOp::Delete)
        );
        assert_eq!(resp("INVITE", 486, false, true, true), None);
        assert_eq!(resp("BYE", 200, false, false, false), None);
        assert_eq!(resp("MESSAGE", 404, false, false, false), None);
    }

    #[test]
    fn tags_swap_only_for_request_answers() {
        assert_eq!(
            media_tags(MediaOp::Answer, true, "f", Some("t")),
            ("t", Some("f"))
        );
        assert_eq!(
            media_tags(MediaOp::Answer, false, "f", Some("t")),
            ("f", Some("t"))
        );
        assert_eq!(
            media_tags(MediaOp::Offer, true, "f", Some("t")),
            ("f", Some("t"))
        );
    }

    #[test]
    fn sdp_detection() {
        let m = |s: &'static str| Message::parse(s.as_bytes()).unwrap();
        assert!(has_sdp(&m(
            "INVITE sip:a@b SIP/2.0\r\nContent-Type: application/SDP\r\n\r\nv=0\r\n"
        )));
        assert!(has_sdp(&m("INVITE sip:a@b SIP/2.0\r\n\r\nv=0\r\n")));
        assert!(!has_sdp(&m(
            "INVITE sip:a@b SIP/2.0\r\nContent-Type: text/plain\r\n\r\nv=0\r\n"
        )));
        assert!(!has_sdp(&m("INVITE sip:a@b SIP/2.0\r\n\r\n")));
    }
}
