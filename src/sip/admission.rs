//! Input scheduling for overload control, sans-IO: which received datagram the proxy serves
//! next, and when new calls are refused.
//!
//! A proxy that serves its input in arrival order makes the calls it already admitted wait
//! behind every new INVITE: past capacity their BYEs, ACKs and responses queue for as long as
//! the new calls do, get retransmitted, and the admitted calls time out while the proxy spends
//! its time refusing newcomers. Here the driver reads the socket empty into an [`InputQueue`]
//! and serves by [`Priority`]: first what belongs to a dialog or transaction already under way
//! (responses, requests with a To tag: ACK, BYE, re-INVITE, in-dialog NOTIFY...), then INVITEs
//! that carry credentials (the second half of a call the proxy already challenged), then new
//! requests (INVITEs without credentials, CANCELs (kept in order with their INVITE), and
//! out-of-dialog REGISTER, OPTIONS, SUBSCRIBE, MESSAGE...).
//!
//! Overload is judged on the new requests alone ([`Shedder`]): how long the one served now
//! waited since the kernel queued it. While on, the proxy refuses new INVITEs with 503 (see
//! [`crate::sip::proxy::Proxy::set_shedding`]); in-dialog traffic is served as before.
//!
//! The classification reads raw bytes before any parse and only orders work: a message it
//! misjudges is still parsed and validated in full when served, so nothing here is a
//! security decision.

use std::collections::VecDeque;

/// The order in which received messages are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A response, or a request inside a dialog (it has a To tag).
    Ongoing,
    /// An INVITE without a To tag that carries credentials (it answers our challenge).
    Answering,
    /// Any other request without a To tag: a new call, a CANCEL, REGISTER, OPTIONS, ...
    New,
}

/// Classifies a datagram by its first line and its To / Proxy-Authorization headers.
pub fn priority(bytes: &[u8]) -> Priority {
    if bytes.starts_with(b"SIP/") {
        return Priority::Ongoing;
    }
    let mut lines = HeaderLines::new(bytes);
    let Some(first) = lines.next() else {
        return Priority::New;
    };
    let invite = first.starts_with(b"INVITE ");
    let mut credentials = false;
    for line in lines {
        let Some((name, value)) = split_header(line) else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"to") || name.eq_ignore_ascii_case(b"t") {
            if has_tag(value) {
                return Priority::Ongoing;
            }
        } else if name.eq_ignore_ascii_case(b"proxy-authorization") {
            credentials = true;
        }
    }
    if invite && credentials {
        Priority::Answering
    } else {
        Priority::New
    }
}

/// The lines of a message head (folded continuation lines come out as lines of their own;
/// they start with white space, so they never look like a header name).
struct HeaderLines<'a> {
    rest: &'a [u8],
}

impl<'a> HeaderLines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        HeaderLines { rest: bytes }
    }
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.rest.len());
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The blank line: the body follows.
            self.rest = &[];
            return None;
        }
        Some(line)
    }
}

/// `Name: value` split at the colon, the name without trailing white space.
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = line.split_at(colon);
    let name = trim_end(name);
    if name.is_empty() || name.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some((name, value.get(1..).unwrap_or_default()))
}

fn trim_end(mut b: &[u8]) -> &[u8] {
    while let Some((last, rest)) = b.split_last() {
        if !last.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    b
}

/// Whether a From/To value has a `tag` header parameter (after the `>` of a name-addr, so a
/// `tag` inside the URI does not count).
fn has_tag(value: &[u8]) -> bool {
    let params = match value.iter().position(|&b| b == b'<') {
        Some(open) => match value.iter().skip(open).position(|&b| b == b'>') {
            Some(close) => value.get(open + close + 1..).unwrap_or_default(),
            None => return false,
        },
        None => value,
    };
    params.split(|&b| b == b';').skip(1).any(|p| {
        let name = p.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"tag")
    })
}

/// One received datagram waiting to be served.
#[derive(Debug)]
pub struct Queued<T> {
    pub item: T,
    pub priority: Priority,
    /// When the kernel queued it (ns since the Unix epoch, as the driver's clock gives it).
    pub queued_ns: u64,
}

/// What [`InputQueue::push`] had to give up to stay within its bound.
#[derive(Debug, PartialEq, Eq)]
pub enum Overflow {
    None,
    /// The oldest new request was dropped unanswered to make room.
    DroppedNew,
    /// The queue holds nothing but ongoing traffic: the arriving message was dropped.
    DroppedArriving,
}

/// Received datagrams by priority, each class in arrival order, at most `cap` in all.
#[derive(Debug)]
pub struct InputQueue<T> {
    classes: [VecDeque<Queued<T>>; 3],
    cap: usize,
}

fn slot(p: Priority) -> usize {
    match p {
        Priority::Ongoing => 0,
        Priority::Answering => 1,
        Priority::New => 2,
    }
}

impl<T> InputQueue<T> {
    pub fn new(cap: usize) -> Self {
        InputQueue {
            classes: Default::default(),
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.iter().all(VecDeque::is_empty)
    }

    /// Queues a datagram. At the bound, the oldest new request makes room (it has waited
    /// longest and would be refused anyway), then the oldest answering INVITE; when only
    /// ongoing traffic is queued, the arriving datagram is dropped.
    pub fn push(&mut self, q: Queued<T>) -> Overflow {
        let mut overflow = Overflow::None;
        if self.len() >= self.cap {
            let [_, answering, new] = &mut self.classes;
            if new.pop_front().is_some() || answering.pop_front().is_some() {
                overflow = Overflow::DroppedNew;
            } else {
                return Overflow::DroppedArriving;
            }
        }
        if let Some(c) = self.classes.get_mut(slot(q.priority)) {
            c.push_back(q);
        }
        overflow
    }

    /// The next datagram to serve: the oldest of the most urgent class.
    pub fn pop(&mut self) -> Option<Queued<T>> {
        self.classes.iter_mut().find_map(VecDeque::pop_front)
    }
}

/// Overload detection with hysteresis on how long new requests waited.
#[derive(Debug)]
pub struct Shedder {
    on_after_ns: u64,
    off_below_ns: u64,
    on: bool,
}

impl Shedder {
    /// Refusing starts when a new request waited `on_after_ns`, stops when one waited less
    /// than `off_below_ns` or the input ran dry.
    pub fn new(on_after_ns: u64, off_below_ns: u64) -> Self {
        Shedder {
            on_after_ns,
            off_below_ns: off_below_ns.min(on_after_ns),
            on: false,
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// A datagram of `priority` that waited `waited_ns` is about to be served. Returns the new
    /// state when it changes. Ongoing traffic does not move it: it is served first whatever
    /// the load, so its wait says nothing about whether new calls can be taken.
    pub fn serving(&mut self, priority: Priority, waited_ns: u64) -> Option<bool> {
        if priority == Priority::Ongoing {
            return None;
        }
        let on = if self.on {
            waited_ns >= self.off_below_ns
        } else {
            waited_ns > self.on_after_ns
        };
        self.set(on)
    }

    /// The input ran dry: nothing is waiting.
    pub fn idle(&mut self) -> Option<bool> {
        self.set(false)
    }

    fn set(&mut self, on: bool) -> Option<bool> {
        (on != self.on).then(|| {
            self.on = on;
            on
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.org SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
        From: <sip:alice@example.org>;tag=a1\r\n\
        To: <sip:bob@example.org>\r\n\
        Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    fn with_header(msg: &str, old: &str, new: &str) -> Vec<u8> {
        msg.replacen(old, new, 1).into_bytes()
    }

    #[test]
    fn a_new_invite_is_new_and_its_retry_with_credentials_is_answering() {
        assert_eq!(priority(INVITE.as_bytes()), Priority::New);
        let retry = with_header(
            INVITE,
            "Call-ID",
            "Proxy-Authorization: Digest username=\"alice\"\r\nCall-ID",
        );
        assert_eq!(priority(&retry), Priority::Answering);
        // Compact and lower-case header names, white space before the colon.
        let retry = with_header(
            INVITE,
            "Call-ID",
            "proxy-authorization : Digest username=\"alice\"\r\nCall-ID",
        );
        assert_eq!(priority(&retry), Priority::Answering);
    }

    #[test]
    fn responses_and_requests_with_a_to_tag_are_ongoing() {
        assert_eq!(
            priority(b"SIP/2.0 200 OK\r\nTo: <sip:b@x>\r\n\r\n"),
            Priority::Ongoing
        );
        let bye = with_header(INVITE, "INVITE sip", "BYE sip")
            .into_iter()
            .collect::<Vec<u8>>();
        let bye = String::from_utf8(bye).unwrap_or_default();
        let bye = with_header(&bye, "<sip:bob@example.org>\r\n", "<sip:bob@x>;tag=b2\r\n");
        assert_eq!(priority(&bye), Priority::Ongoing);
        let reinvite = with_header(
            INVITE,
            "To: <sip:bob@example.org>",
            "t: sip:bob@x ; TAG = 9",
        );
        assert_eq!(priority(&reinvite), Priority::Ongoing);
    }

    #[test]
    fn a_tag_inside_the_uri_or_the_body_does_not_count() {
        let in_uri = with_header(
            INVITE,
            "<sip:bob@example.org>",
            "<sip:bob@example.org;tag=x>",
        );
        assert_eq!(priority(&in_uri), Priority::New);
        let body = INVITE.replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Length: 9\r\n\r\nTo: ;tag=1",
        );
        assert_eq!(priority(body.as_bytes()), Priority::New);
        // Credentials on anything but an INVITE change nothing.
        let register = with_header(INVITE, "INVITE sip", "REGISTER sip");
        let register = String::from_utf8(register).unwrap_or_default();
        let register = with_header(&register, "Call-ID", "Proxy-Authorization: x\r\nCall-ID");
        assert_eq!(priority(&register), Priority::New);
    }

    #[test]
    fn garbage_is_new_and_never_panics() {
        for junk in [
            &b""[..],
            b"\r\n",
            b"INVITE",
            b"To: <sip:x;tag=1",
            b"x\nTo:\n:\n\r\n",
            b"\xff\xfe:;tag\n",
            b"OPTIONS sip:x SIP/2.0\nTo:<>;;;=;tag\n",
        ] {
            let _ = priority(junk);
        }
        assert_eq!(priority(b"To: <sip:x>;tag=1\r\n"), Priority::New);
        assert_eq!(
            priority(b"OPTIONS sip:x SIP/2.0\nTo:<>;;;=;tag\n"),
            Priority::Ongoing
        );
    }

    fn q(item: u32, priority: Priority) -> Queued<u32> {
        Queued {
            item,
            priority,
            queued_ns: u64::from(item),
        }
    }

    #[test]
    fn ongoing_traffic_is_served_first_each_class_in_order() {
        let mut iq = InputQueue::new(16);
        for (i, p) in [
            Priority::New,
            Priority::Ongoing,
            Priority::New,
            Priority::Answering,
            Priority::Ongoing,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(iq.push(q(i as u32, p)), Overflow::None);
        }
        let order: Vec<u32> = std::iter::from_fn(|| iq.pop().map(|q| q.item)).collect();
        assert_eq!(order, vec![1, 4, 3, 0, 2]);
        assert!(iq.is_empty());
    }

    #[test]
    fn at_the_bound_new_requests_make_room_and_ongoing_ones_are_kept() {
        let mut iq = InputQueue::new(3);
        assert_eq!(iq.push(q(0, Priority::New)), Overflow::None);
        assert_eq!(iq.push(q(1, Priority::Answering)), Overflow::None);
        assert_eq!(iq.push(q(2, Priority::New)), Overflow::None);
        assert_eq!(iq.push(q(3, Priority::Ongoing)), Overflow::DroppedNew);
        assert_eq!(iq.push(q(4, Priority::Ongoing)), Overflow::DroppedNew);
        assert_eq!(iq.push(q(5, Priority::Ongoing)), Overflow::DroppedNew);
        assert_eq!(iq.push(q(6, Priority::Ongoing)), Overflow::DroppedArriving);
        assert_eq!(iq.len(), 3);
        let order: Vec<u32> = std::iter::from_fn(|| iq.pop().map(|q| q.item)).collect();
        assert_eq!(order, vec![3, 4, 5]);
    }

    #[test]
    fn shedding_follows_the_wait_of_new_requests_only() {
        let ms = 1_000_000;
        let mut s = Shedder::new(250 * ms, 50 * ms);
        assert_eq!(s.serving(Priority::Ongoing, 900 * ms), None);
        assert!(!s.is_on());
        assert_eq!(s.serving(Priority::New, 200 * ms), None);
        assert_eq!(s.serving(Priority::Answering, 251 * ms), Some(true));
        // Stays on until a new request waited less than the lower mark.
        assert_eq!(s.serving(Priority::New, 100 * ms), None);
        assert_eq!(s.serving(Priority::Ongoing, 0), None);
        assert!(s.is_on());
        assert_eq!(s.serving(Priority::New, 49 * ms), Some(false));
        assert_eq!(s.serving(Priority::New, 300 * ms), Some(true));
        assert_eq!(s.idle(), Some(false));
        assert_eq!(s.idle(), None);
    }
}
