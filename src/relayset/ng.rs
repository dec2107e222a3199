//! The ng requests the proxy's media steps become on a remote relay, and what its replies
//! mean for the proxy. The flags are the ones the embedded relay applies to SIP-driven
//! calls (`session::sip_media`): origin and session connection replaced, ICE removed, and
//! the SIP source address for media behind NAT; so a call looks the same whichever relay of
//! the set anchors it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::IpAddr;

use crate::control::bencode::Owned;
use crate::session::sip_media::options_for;
use crate::sip::media::{MediaCtx, MediaOp, MediaResult};

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.filter(|t| !t.is_empty())
}

/// The ng request for one media step.
pub fn request(ctx: &MediaCtx<'_>, body: &[u8]) -> Owned {
    let command = match ctx.op {
        MediaOp::Offer => "offer",
        MediaOp::Answer => "answer",
        MediaOp::Delete => "delete",
    };
    let mut d = Owned::dict()
        .with("command", command)
        .with("call-id", ctx.call_id)
        .with("from-tag", ctx.from_tag);
    if let Some(b) = nonempty(ctx.via_branch) {
        d.insert("via-branch", b);
    }
    if ctx.op == MediaOp::Delete {
        return d;
    }
    if let Some(t) = nonempty(ctx.to_tag) {
        d.insert("to-tag", t);
    }
    d.insert("sdp", Owned::bytes(body));
    let mut replace = Owned::list();
    replace.push("origin");
    replace.push("session-connection");
    d.insert("replace", replace);
    d.insert("ICE", "remove");
    if let Some(names) = ctx.direction {
        let mut dir = Owned::list();
        for n in names {
            dir.push(n);
        }
        d.insert("direction", dir);
    }
    if let Some(ip) = options_for(body, ctx.source.ip()).sip_source {
        let mut flags = Owned::list();
        flags.push("SIP-source-address");
        d.insert("flags", flags);
        let mut from = Owned::list();
        from.push(match ip {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        });
        from.push(ip.to_string().as_str());
        d.insert("received-from", from);
    }
    d
}

/// What a relay's reply to an offer or answer means for the SIP message.
pub fn interpret(reply: &Owned) -> MediaResult {
    match reply.get("result").and_then(Owned::as_str) {
        Some("ok") => match reply.get("sdp").and_then(Owned::as_bytes) {
            Some(sdp) if !sdp.is_empty() => MediaResult::NewBody(sdp.to_vec()),
            _ => MediaResult::Unchanged,
        },
        Some("error") => {
            let reason = reply
                .get("error-reason")
                .and_then(Owned::as_str)
                .unwrap_or("error");
            refusal(reason)
        }
        _ => MediaResult::Failed {
            status: 500,
            reason: "Server Internal Error".to_owned(),
        },
    }
}

/// rtpengine's and our error reasons, as SIP statuses (the embedded relay's mapping).
fn refusal(reason: &str) -> MediaResult {
    let r = reason.to_ascii_lowercase();
    if r.contains("unknown call") || r.contains("not found") || r.contains("no offer") {
        // An answer for a call the relay does not hold: pass the SDP through.
        MediaResult::Unchanged
    } else if r.contains("port")
        || r.contains("limit")
        || r.contains("capacity")
        || r.contains("drain")
        || r.contains("load")
    {
        let mut reason = reason.to_owned();
        reason.truncate(100);
        MediaResult::Failed {
            status: 503,
            reason: reason.replace(['\r', '\n'], " "),
        }
    } else {
        MediaResult::Failed {
            status: 488,
            reason: "Not Acceptable Here".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ctx(op: MediaOp, src: &str) -> MediaCtx<'static> {
        MediaCtx {
            op,
            call_id: "c1",
            from_tag: "ft",
            to_tag: Some("tt"),
            via_branch: Some("z9hG4bKx"),
            source: src.parse::<SocketAddr>().unwrap(),
            direction: None,
        }
    }

    const NATED: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

    #[test]
    fn offer_carries_the_sip_policy() {
        let r = request(&ctx(MediaOp::Offer, "198.51.100.1:5060"), NATED);
        assert_eq!(r.get("command").and_then(Owned::as_str), Some("offer"));
        assert_eq!(
            r.get("via-branch").and_then(Owned::as_str),
            Some("z9hG4bKx")
        );
        assert_eq!(r.get("to-tag").and_then(Owned::as_str), Some("tt"));
        assert_eq!(r.get("ICE").and_then(Owned::as_str), Some("remove"));
        assert_eq!(r.get("sdp").and_then(Owned::as_bytes), Some(NATED));
        let from = r.get("received-from").and_then(Owned::as_list).unwrap();
        assert_eq!(from[1].as_str(), Some("198.51.100.1"));
        // From a private source the SDP's own address is kept.
        let r = request(&ctx(MediaOp::Answer, "10.0.0.9:5060"), NATED);
        assert_eq!(r.get("command").and_then(Owned::as_str), Some("answer"));
        assert!(r.get("received-from").is_none());
    }

    #[test]
    fn the_proxys_interface_names_go_as_direction() {
        let plain = request(&ctx(MediaOp::Offer, "10.0.0.9:5060"), NATED);
        assert!(plain.get("direction").is_none());
        let bridged = MediaCtx {
            direction: Some(["internal", "external"]),
            ..ctx(MediaOp::Offer, "10.0.0.9:5060")
        };
        let r = request(&bridged, NATED);
        let d = r.get("direction").and_then(Owned::as_list).unwrap();
        let names: Vec<_> = d.iter().filter_map(Owned::as_str).collect();
        assert_eq!(names, ["internal", "external"]);
    }

    #[test]
    fn delete_names_only_the_call() {
        let r = request(&ctx(MediaOp::Delete, "198.51.100.1:5060"), b"");
        assert_eq!(r.get("command").and_then(Owned::as_str), Some("delete"));
        assert!(r.get("sdp").is_none());
        assert!(r.get("to-tag").is_none());
    }

    #[test]
    fn replies_become_sip_outcomes() {
        let ok = Owned::dict().with("result", "ok").with("sdp", "v=0\r\n");
        assert_eq!(interpret(&ok), MediaResult::NewBody(b"v=0\r\n".to_vec()));
        let ports = Owned::dict()
            .with("result", "error")
            .with("error-reason", "Ran out of ports");
        assert!(matches!(
            interpret(&ports),
            MediaResult::Failed { status: 503, .. }
        ));
        let unknown = Owned::dict()
            .with("result", "error")
            .with("error-reason", "Unknown call-id");
        assert_eq!(interpret(&unknown), MediaResult::Unchanged);
        let bad = Owned::dict()
            .with("result", "error")
            .with("error-reason", "Failed to parse SDP");
        assert!(matches!(
            interpret(&bad),
            MediaResult::Failed { status: 488, .. }
        ));
        assert!(matches!(
            interpret(&Owned::dict().with("result", "pong")),
            MediaResult::Failed { status: 500, .. }
        ));
    }
}
