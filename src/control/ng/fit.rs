//! Replies that must fit one UDP datagram. A reply larger than a datagram can carry is never
//! sent: the client would wait for an answer that cannot arrive. `list` is cut to as many
//! call-ids as fit and says so in its `warning`; any other reply that does not fit becomes an
//! error naming the size (TCP ng has no such limit).

use super::framing::{frame_reply, BodyFormat};
use crate::control::bencode::Owned;
use crate::control::reply;

/// Largest UDP payload over IPv4: 65,535 bytes less the IP (20) and UDP (8) headers. IPv6
/// carries 20 bytes more; one bound for both keeps replies the same on either.
pub const MAX_UDP_REPLY: usize = 65_507;

/// The reply datagram for `reply`, at most `max` bytes (see the module doc). `max` below the
/// size of a short error reply gives that error reply anyway (the smallest answer there is).
pub fn frame_reply_within(cookie: &[u8], fmt: BodyFormat, reply: &Owned, max: usize) -> Vec<u8> {
    let full = frame_reply(cookie, fmt, reply);
    if full.len() <= max {
        return full;
    }
    if let Some(calls) = reply.get("calls").and_then(Owned::as_list) {
        let total = calls.len();
        let cut = |k: usize| frame_reply(cookie, fmt, &truncated(reply, k, total));
        // The largest k whose reply fits: fits(0) is checked first; then a binary search
        // over (0, total) (fits is monotone in k). At most log2(total) + 1 encodings.
        let first = cut(0);
        if first.len() <= max {
            let (mut lo, mut hi) = (0usize, total);
            let mut best = first;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let framed = cut(mid);
                if framed.len() <= max {
                    lo = mid;
                    best = framed;
                } else {
                    hi = mid;
                }
            }
            return best;
        }
    }
    let err = reply::error(&format!(
        "Reply too large for a UDP datagram ({} bytes); send the request over TCP ng",
        full.len()
    ));
    frame_reply(cookie, fmt, &err)
}

/// `reply` with its `calls` list cut to the first `keep` entries and a warning saying so.
fn truncated(reply: &Owned, keep: usize, total: usize) -> Owned {
    let mut out = match reply {
        Owned::Dict(entries) => Owned::Dict(
            entries
                .iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("calls", Owned::List(calls)) => (
                        k.clone(),
                        Owned::List(calls.iter().take(keep).cloned().collect()),
                    ),
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
        ),
        other => other.clone(),
    };
    out = reply::with_warnings(
        out,
        &[format!(
            "list truncated to {keep} of {total} call-ids: the full list does not fit one UDP \
             datagram; ask over TCP ng (--listen-tcp-ng)"
        )],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::bencode;

    fn list_reply(n: usize) -> Owned {
        let calls = (0..n)
            .map(|i| Owned::str(&format!("call-{i:05}-0123456789abcdef@host.example")))
            .collect();
        Owned::dict()
            .with("calls", Owned::List(calls))
            .with("result", "ok")
    }

    #[test]
    fn small_reply_is_unchanged() {
        let r = list_reply(3);
        let framed = frame_reply_within(b"c1", BodyFormat::Bencode, &r, MAX_UDP_REPLY);
        assert_eq!(framed, frame_reply(b"c1", BodyFormat::Bencode, &r));
    }

    #[test]
    fn big_list_is_cut_to_what_fits_with_a_warning() {
        for fmt in [BodyFormat::Bencode, BodyFormat::Json] {
            let r = list_reply(5_000);
            assert!(frame_reply(b"c1", fmt, &r).len() > MAX_UDP_REPLY);
            let framed = frame_reply_within(b"c1", fmt, &r, MAX_UDP_REPLY);
            assert!(framed.len() <= MAX_UDP_REPLY, "{}", framed.len());
            if fmt == BodyFormat::Json {
                let body = std::str::from_utf8(&framed[3..]).unwrap();
                assert!(body.contains("list truncated to "), "{body:.200}");
                continue;
            }
            let doc = bencode::decode(&framed[3..]).unwrap();
            assert_eq!(doc.get("result").and_then(|v| v.as_str()), Some("ok"));
            let calls = doc.get("calls").and_then(|v| v.as_list()).unwrap();
            let kept = calls.len();
            assert!(kept > 100 && kept < 5_000, "{kept}");
            // Oldest first, in order, none skipped.
            for (i, c) in calls.iter().enumerate() {
                assert!(c.as_str().unwrap().starts_with(&format!("call-{i:05}-")));
            }
            let warning = doc.get("warning").and_then(|v| v.as_str()).unwrap();
            assert!(
                warning.contains(&format!("truncated to {kept} of 5000")),
                "{warning}"
            );
            // As many as fit: one more would not.
            let one_more = frame_reply(b"c1", fmt, &truncated(&r, kept + 1, 5_000));
            assert!(one_more.len() > MAX_UDP_REPLY);
        }
    }

    #[test]
    fn other_oversized_replies_become_errors() {
        let big = Owned::dict()
            .with("sdp", vec![b'x'; 70_000].as_slice())
            .with("result", "ok");
        let framed = frame_reply_within(b"c1", BodyFormat::Bencode, &big, MAX_UDP_REPLY);
        let doc = bencode::decode(&framed[3..]).unwrap();
        assert_eq!(doc.get("result").and_then(|v| v.as_str()), Some("error"));
        let reason = doc.get("error-reason").and_then(|v| v.as_str()).unwrap();
        assert!(reason.contains("too large"), "{reason}");
    }
}
