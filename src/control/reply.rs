//! Builders for ng reply dictionaries.
//!
//! Every reply carries `result`: `ok`, `pong` (ping only), `error` (with `error-reason`) or
//! `load limit` (with `message`; Kamailio then tries its next node). Non-fatal problems ride
//! on an `ok` reply as one `warning` string. Key order follows what rtpengine 10.5 was seen to
//! send (`result` before `error-reason`; `warning` and `sdp` before `result`); peers must not
//! depend on it, but matching it makes byte-level comparisons with rtpengine easy.

use super::bencode::Owned;
use super::ng::NgError;

/// `{"result":"error","error-reason":reason}`.
pub fn error(reason: &str) -> Owned {
    Owned::dict()
        .with("result", "error")
        .with("error-reason", reason)
}

/// [`error`] with the `Display` text of `e` (the rtpengine reason string).
pub fn from_error(e: &NgError) -> Owned {
    error(&e.to_string())
}

/// `{"result":"ok"}`.
pub fn ok() -> Owned {
    Owned::dict().with("result", "ok")
}

/// `{"warning":w,"result":"ok"}`, e.g. for the delete of an unknown call.
pub fn ok_with_warning(w: &str) -> Owned {
    Owned::dict().with("warning", w).with("result", "ok")
}

/// `{"result":"pong"}`.
pub fn pong() -> Owned {
    Owned::dict().with("result", "pong")
}

/// `{"result":"load limit","message":message}`.
pub fn load_limit(message: &str) -> Owned {
    Owned::dict()
        .with("result", "load limit")
        .with("message", message)
}

/// `{"sdp":sdp,"result":"ok"}`: the offer/answer reply.
pub fn sdp_ok(sdp: &[u8]) -> Owned {
    Owned::dict().with("sdp", sdp).with("result", "ok")
}

/// Adds `warnings` to a reply as its one `warning` string, joined with `"; "` (appended to an
/// existing `warning`). New keys go first, like rtpengine's. No change if `warnings` is empty
/// or `reply` is not a dictionary.
pub fn with_warnings(mut reply: Owned, warnings: &[String]) -> Owned {
    if warnings.is_empty() {
        return reply;
    }
    let joined = warnings.join("; ");
    if let Owned::Dict(entries) = &mut reply {
        match entries.iter_mut().find(|(k, _)| k == "warning") {
            Some((_, Owned::Str(existing))) => {
                existing.extend_from_slice(b"; ");
                existing.extend_from_slice(joined.as_bytes());
            }
            Some((_, other)) => *other = Owned::from(joined),
            None => entries.insert(0, ("warning".to_owned(), Owned::from(joined))),
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ng::{frame_reply, BodyFormat};

    #[test]
    fn byte_exact_like_rtpengine() {
        // The exchanges recorded from rtpengine 10.5 (docs: ng-protocol notes §1.3).
        assert_eq!(
            frame_reply(b"f1e73f40_1", BodyFormat::Bencode, &pong()),
            b"f1e73f40_1 d6:result4:ponge"
        );
        assert_eq!(
            frame_reply(
                b"8c5cd424_7",
                BodyFormat::Bencode,
                &error("Unknown call-id")
            ),
            &b"8c5cd424_7 d6:result5:error12:error-reason15:Unknown call-ide"[..]
        );
        assert_eq!(
            frame_reply(
                b"a0bc19be_11",
                BodyFormat::Bencode,
                &ok_with_warning("Call-ID not found or tags didn't match")
            ),
            &b"a0bc19be_11 d7:warning38:Call-ID not found or tags didn't match6:result2:oke"[..]
        );
        assert_eq!(
            frame_reply(b"ed15dc29_10", BodyFormat::Json, &pong()),
            br#"ed15dc29_10 {"result":"pong"}"#
        );
    }

    #[test]
    fn builders() {
        assert_eq!(ok().to_bencode(), b"d6:result2:oke");
        assert_eq!(
            load_limit("Parallel session limit reached").to_bencode(),
            &b"d6:result10:load limit7:message30:Parallel session limit reachede"[..]
        );
        assert_eq!(
            sdp_ok(b"v=0\r\n").to_bencode(),
            b"d3:sdp5:v=0\r\n6:result2:oke"
        );
        assert_eq!(
            from_error(&NgError::NoCallId),
            error("No call-id in message")
        );
    }

    #[test]
    fn warnings_are_joined() {
        let w = vec![
            "Unknown flag: x".to_owned(),
            "Recording is not supported".to_owned(),
        ];
        let r = with_warnings(ok(), &w);
        assert_eq!(
            r.to_bencode(),
            &b"d7:warning43:Unknown flag: x; Recording is not supported6:result2:oke"[..]
        );
        let r = with_warnings(ok_with_warning("first"), &w[..1]);
        assert_eq!(
            r.get("warning").and_then(Owned::as_str),
            Some("first; Unknown flag: x")
        );
        assert_eq!(with_warnings(ok(), &[]), ok());
        // Not a dictionary: unchanged.
        assert_eq!(with_warnings(Owned::Int(1), &w), Owned::Int(1));
        // A non-string warning is replaced.
        let odd = Owned::dict().with("warning", 5i64);
        assert_eq!(
            with_warnings(odd, &w[..1]).get("warning"),
            Some(&Owned::str("Unknown flag: x"))
        );
    }
}
