//! The client side of the ng protocol, sans-IO: cookies, request datagrams, reply matching
//! and the retransmission schedule. The socket that carries them is
//! [`crate::client::ng::NgClient`]; this module never touches it, and takes the time as an
//! argument.
//!
//! A request is `<cookie> <bencode dict>` and its reply echoes the cookie, one space, then the
//! reply dictionary. Over UDP a request without a reply after `timeout_ns` is sent again with
//! the same bytes, so the same cookie, until `attempts` sends were made ([`RetryPolicy`]): a
//! relay answers a repeated cookie from its reply cache instead of running the command twice,
//! which is what makes retransmission safe (Kamailio's rtpengine module retries the same way).
//! The relay's cache is keyed by the cookie alone, so cookies must be unique across every
//! client of one relay: [`NgExchange::new`] takes a prefix that names this client, and each
//! request gets `<prefix>_<n>`.
//!
//! Several requests may be in flight at once (pipelining); each carries a caller-chosen
//! [`Token`] that comes back with its reply or its give-up. A reply whose cookie is not in
//! flight (late, duplicated, someone else's) is ignored.

use std::ops::Range;

use super::bencode::{self, DecodeError, Owned};
use crate::time::{Nanos, NANOS_PER_MS};

/// How often and how patiently a request is sent: `attempts` sends in all (at least 1),
/// `timeout_ns` apart, the last one given up `timeout_ns` after it went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub timeout_ns: Nanos,
    pub attempts: u32,
}

impl RetryPolicy {
    /// Sends of `timeout_ms` milliseconds each.
    pub const fn millis(timeout_ms: u64, attempts: u32) -> RetryPolicy {
        RetryPolicy {
            timeout_ns: timeout_ms * NANOS_PER_MS,
            attempts,
        }
    }

    /// How long a request may take in all before it is given up.
    pub fn total_ns(&self) -> Nanos {
        self.timeout_ns
            .saturating_mul(Nanos::from(self.attempts.max(1)))
    }
}

impl Default for RetryPolicy {
    /// Three sends a second apart.
    fn default() -> RetryPolicy {
        RetryPolicy::millis(1000, 3)
    }
}

/// The caller's name for one request in flight (an index into its list of requests, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub usize);

/// A reply that matched a request but cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("ng reply is not bencode: {0}")]
    Decode(#[from] DecodeError),
    #[error("ng reply is not a dictionary")]
    NotDict,
}

/// A cookie the wire cannot carry: empty, or holding a space (the separator) or whitespace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ng cookie {0:?}: it must be non-empty, without spaces")]
pub struct InvalidCookie(pub String);

/// What a deadline asks of the caller (see [`NgExchange::poll_due`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Due<'a> {
    /// Send this datagram again (the same cookie).
    Resend(&'a [u8]),
    /// The request had all its attempts without a reply; it is no longer in flight.
    GaveUp(Token),
}

struct Pending {
    token: Token,
    /// The datagram starts with the cookie, this long, then a space.
    cookie_len: usize,
    datagram: Vec<u8>,
    sends: u32,
    deadline: Nanos,
}

/// The requests of one client in flight, and the cookie counter.
pub struct NgExchange {
    prefix: String,
    next: u64,
    policy: RetryPolicy,
    pending: Vec<Pending>,
}

impl NgExchange {
    /// A client whose cookies are `<prefix>_1`, `<prefix>_2`, …
    pub fn new(prefix: impl Into<String>, policy: RetryPolicy) -> NgExchange {
        NgExchange {
            prefix: prefix.into(),
            next: 0,
            policy,
            pending: Vec::new(),
        }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Applies to requests started from now on.
    pub fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// Requests sent and neither answered nor given up.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Starts `request` under the next cookie of this client; returns the datagram to send.
    pub fn start(&mut self, token: Token, request: &Owned, now: Nanos) -> &[u8] {
        self.next += 1;
        let cookie = format!("{}_{}", self.prefix, self.next);
        self.push(token, &cookie, request, now)
    }

    /// Starts `request` under a cookie of the caller's (a test that wants to send the same
    /// command twice as two requests, or once as a retransmission, names its cookies).
    pub fn start_with_cookie(
        &mut self,
        token: Token,
        cookie: &str,
        request: &Owned,
        now: Nanos,
    ) -> Result<&[u8], InvalidCookie> {
        if cookie.is_empty() || cookie.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(InvalidCookie(cookie.to_owned()));
        }
        Ok(self.push(token, cookie, request, now))
    }

    fn push(&mut self, token: Token, cookie: &str, request: &Owned, now: Nanos) -> &[u8] {
        let mut datagram = Vec::with_capacity(cookie.len() + 256);
        datagram.extend_from_slice(cookie.as_bytes());
        datagram.push(b' ');
        request.encode(&mut datagram);
        self.pending.push(Pending {
            token,
            cookie_len: cookie.len(),
            datagram,
            sends: 1,
            deadline: now.saturating_add(self.policy.timeout_ns),
        });
        match self.pending.last() {
            Some(p) => &p.datagram,
            None => &[],
        }
    }

    /// A received datagram (or one message cut from a stream by [`stream_message`]): the
    /// request it answers, now out of flight, and the reply; `None` if it answers nothing in
    /// flight.
    pub fn on_datagram(&mut self, datagram: &[u8]) -> Option<(Token, Result<Owned, ReplyError>)> {
        let i = self.pending.iter().position(|p| {
            let cookie = &p.datagram[..=p.cookie_len]; // the cookie and its space
            datagram.starts_with(cookie)
        })?;
        let p = self.pending.swap_remove(i);
        let body = &datagram[p.cookie_len + 1..];
        let reply = match bencode::decode(body) {
            Ok(v @ bencode::Value::Dict(_)) => Ok(Owned::from(&v)),
            Ok(_) => Err(ReplyError::NotDict),
            Err(e) => Err(ReplyError::Decode(e)),
        };
        Some((p.token, reply))
    }

    /// The earliest deadline in flight: when to call [`NgExchange::poll_due`] next.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// One request whose deadline passed at `now`, if any: to be sent again, or given up.
    /// Call until it returns `None`.
    pub fn poll_due(&mut self, now: Nanos) -> Option<Due<'_>> {
        let i = self.pending.iter().position(|p| p.deadline <= now)?;
        if self.pending[i].sends < self.policy.attempts {
            let p = &mut self.pending[i];
            p.sends += 1;
            p.deadline = now.saturating_add(self.policy.timeout_ns);
            Some(Due::Resend(&p.datagram))
        } else {
            Some(Due::GaveUp(self.pending.swap_remove(i).token))
        }
    }

    /// Forgets every request in flight (the caller stops waiting); their tokens.
    pub fn abandon(&mut self) -> Vec<Token> {
        self.pending.drain(..).map(|p| p.token).collect()
    }
}

/// On a stream (ng over TCP), where the first message of `buf` lies: `cookie SP bencode`
/// after any whitespace, ending where the bencode value ends. `Ok(None)`: not complete yet.
/// The range is for [`NgExchange::on_datagram`]; consume up to its end.
pub fn stream_message(buf: &[u8]) -> Result<Option<Range<usize>>, ReplyError> {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    let Some(space) = buf[start..].iter().position(|&b| b == b' ') else {
        return Ok(None);
    };
    let body = &buf[start + space + 1..];
    if body.is_empty() {
        return Ok(None);
    }
    match bencode::decode_prefix(body) {
        Ok((_, rest)) => Ok(Some(start..buf.len() - rest.len())),
        Err(DecodeError::UnexpectedEnd) => Ok(None),
        Err(e) => Err(ReplyError::Decode(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> Owned {
        Owned::dict().with("command", "ping")
    }

    #[test]
    fn cookies_frame_and_match() {
        let mut x = NgExchange::new("t", RetryPolicy::millis(100, 2));
        assert_eq!(x.start(Token(7), &ping(), 0), b"t_1 d7:command4:pinge");
        assert_eq!(x.start(Token(8), &ping(), 0), b"t_2 d7:command4:pinge");
        assert_eq!(x.in_flight(), 2);
        // Someone else's cookie, a prefix of ours without the space, a late duplicate: ignored.
        assert_eq!(x.on_datagram(b"t_3 d6:result4:ponge"), None);
        assert_eq!(x.on_datagram(b"t_ d6:result4:ponge"), None);
        let (t, r) = x.on_datagram(b"t_2 d6:result4:ponge").unwrap();
        assert_eq!(t, Token(8));
        assert_eq!(
            r.unwrap().get("result").and_then(Owned::as_str),
            Some("pong")
        );
        assert_eq!(x.on_datagram(b"t_2 d6:result4:ponge"), None);
        // A matched reply that cannot be read still ends its request.
        assert_eq!(
            x.on_datagram(b"t_1 i5e"),
            Some((Token(7), Err(ReplyError::NotDict)))
        );
        assert_eq!(x.in_flight(), 0);
    }

    #[test]
    fn retransmits_the_same_bytes_then_gives_up() {
        let mut x = NgExchange::new("r", RetryPolicy::millis(100, 2));
        let first = x.start(Token(0), &ping(), 1_000).to_vec();
        assert_eq!(x.next_deadline(), Some(1_000 + 100 * NANOS_PER_MS));
        assert_eq!(x.poll_due(1_000 + 99 * NANOS_PER_MS), None);
        let at = 1_000 + 100 * NANOS_PER_MS;
        assert_eq!(x.poll_due(at), Some(Due::Resend(&first[..])));
        assert_eq!(x.poll_due(at), None, "rescheduled");
        assert_eq!(
            x.poll_due(at + 100 * NANOS_PER_MS),
            Some(Due::GaveUp(Token(0)))
        );
        assert_eq!(x.in_flight(), 0);
        assert_eq!(x.next_deadline(), None);
        assert_eq!(RetryPolicy::millis(100, 2).total_ns(), 200 * NANOS_PER_MS);
    }

    #[test]
    fn named_cookies_and_abandon() {
        let mut x = NgExchange::new("n", RetryPolicy::default());
        assert_eq!(
            x.start_with_cookie(Token(1), "o1", &ping(), 0).unwrap(),
            b"o1 d7:command4:pinge"
        );
        for bad in ["", "a b", "a\tb"] {
            assert_eq!(
                x.start_with_cookie(Token(2), bad, &ping(), 0),
                Err(InvalidCookie(bad.to_owned()))
            );
        }
        assert_eq!(x.abandon(), vec![Token(1)]);
        assert_eq!(x.on_datagram(b"o1 de"), None);
    }

    #[test]
    fn stream_messages_are_cut_where_the_bencode_ends() {
        let two = b"\r\n a_1 d6:result4:ponge a_2 d6:result2:oke";
        let r = stream_message(two).unwrap().unwrap();
        assert_eq!(&two[r.clone()], b"a_1 d6:result4:ponge");
        let rest = &two[r.end..];
        let r2 = stream_message(rest).unwrap().unwrap();
        assert_eq!(&rest[r2], b"a_2 d6:result2:oke");
        for partial in [&b""[..], b"  ", b"a_1", b"a_1 ", b"a_1 d6:resu"] {
            assert_eq!(stream_message(partial), Ok(None), "{partial:?}");
        }
        assert_eq!(stream_message(b" x"), Ok(None));
        assert_eq!(
            stream_message(b"a_1 q"),
            Err(ReplyError::Decode(DecodeError::UnexpectedByte(b'q')))
        );
    }
}
