//! A phone for presence and message tests through a running relay: a UDP socket of its
//! own that sends requests (retransmitted until answered), answers every request it
//! receives with 200 and keeps what it received until the test asks for it.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rtpanchor::sip::Message;

use super::sip::Uas;

const LO: &str = "127.0.0.1";
/// How long a phone waits for what it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A phone on a UDP port of its own: sends requests, answers the requests it receives with
/// 200, and keeps what it received until a test asks for it.
pub struct Phone {
    pub user: &'static str,
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    /// Where [`Phone::transact`] sends.
    pub relay: SocketAddr,
    inbox: RefCell<Vec<Vec<u8>>>,
}

impl Phone {
    pub fn new(user: &'static str, port: u16, relay: u16) -> Phone {
        let sock = UdpSocket::bind((LO, port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Phone {
            user,
            addr: sock.local_addr().unwrap(),
            sock,
            relay: SocketAddr::from(([127, 0, 0, 1], relay)),
            inbox: RefCell::new(Vec::new()),
        }
    }

    /// A request to the relay from this phone; `extra` ends with CRLF.
    pub fn request(&self, method: &str, ruri: &str, call: &str, cseq: u32, extra: &str) -> Vec<u8> {
        self.request_with(method, ruri, call, cseq, extra, None)
    }

    pub fn request_with(
        &self,
        method: &str,
        ruri: &str,
        call: &str,
        cseq: u32,
        extra: &str,
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let (u, a) = (self.user, self.addr);
        let to = if ruri.contains('@') {
            ruri.to_owned()
        } else {
            format!("sip:{u}@example.com")
        };
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{call}-{cseq};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{u}@example.com>;tag=t{u}\r\nTo: <{to}>\r\nCall-ID: {call}\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:{u}@{a}>\r\n{extra}"
        );
        match body {
            Some((ty, b)) => s.push_str(&format!(
                "Content-Type: {ty}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.into_bytes()
    }

    /// Receives one datagram (100 ms at most); requests are answered 200 and kept.
    pub fn receive(&self) {
        let mut buf = vec![0u8; 65_536];
        let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
            return;
        };
        buf.truncate(n);
        let Ok(m) = Message::parse(&buf) else {
            return;
        };
        if m.method().is_some() {
            let ua = Uas::new(self.addr, "x", &format!("sip:{}@{}", self.user, self.addr));
            let _ = self.sock.send_to(&ua.respond(&buf, 200), from);
        }
        self.inbox.borrow_mut().push(buf);
    }

    /// The first message received (before or within `WAIT`) that `pred` accepts.
    pub fn wait(&self, what: &str, pred: impl Fn(&Message<'_>) -> bool) -> Vec<u8> {
        self.poll(WAIT, pred)
            .unwrap_or_else(|| panic!("{}: no {what} in {WAIT:?}", self.user))
    }

    /// The first message received (before or within `limit`) that `pred` accepts.
    pub fn poll(&self, limit: Duration, pred: impl Fn(&Message<'_>) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        loop {
            let found = {
                let inbox = self.inbox.borrow();
                inbox
                    .iter()
                    .position(|b| Message::parse(b).is_ok_and(|m| pred(&m)))
            };
            if let Some(i) = found {
                return Some(self.inbox.borrow_mut().remove(i));
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.receive();
        }
    }

    /// Sends `req` (again every 500 ms, as UDP does) until its final response arrives.
    pub fn transact(&self, req: &[u8]) -> Vec<u8> {
        self.transact_at(req, self.relay)
    }

    /// [`Phone::transact`] with the proxy at `relay`.
    pub fn transact_at(&self, req: &[u8], relay: SocketAddr) -> Vec<u8> {
        self.transact_with(req, relay, &[])
    }

    /// [`Phone::transact_at`] while `others` receive (and answer) too: for a request one
    /// of them is to answer.
    pub fn transact_with(&self, req: &[u8], relay: SocketAddr, others: &[&Phone]) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        let call = m.call_id().unwrap().to_owned();
        let seq = m.cseq().unwrap().seq;
        let deadline = Instant::now() + WAIT;
        let mut next_send = Instant::now();
        loop {
            if Instant::now() >= next_send {
                self.sock.send_to(req, relay).unwrap();
                next_send += Duration::from_millis(500);
            }
            let hit = {
                let inbox = self.inbox.borrow();
                inbox.iter().position(|b| {
                    Message::parse(b).is_ok_and(|r| {
                        r.status().is_some_and(|s| s >= 200)
                            && r.call_id().is_ok_and(|c| c == call)
                            && r.cseq().is_ok_and(|c| c.seq == seq)
                    })
                })
            };
            if let Some(i) = hit {
                return self.inbox.borrow_mut().remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no final response to {} in {WAIT:?}",
                self.user,
                m.method().unwrap_or("?")
            );
            self.receive();
            for o in others {
                o.receive();
            }
        }
    }
}

pub fn header(b: &[u8], name: &str) -> Option<String> {
    Message::parse(b)
        .ok()?
        .header_by_name(name)
        .map(|h| h.value.to_owned())
}

pub fn status(b: &[u8]) -> Option<u16> {
    Message::parse(b).ok()?.status()
}

pub fn body(b: &[u8]) -> String {
    Message::parse(b)
        .map(|m| String::from_utf8_lossy(m.body()).into_owned())
        .unwrap_or_default()
}

pub fn is_notify(m: &Message<'_>) -> bool {
    m.method() == Some("NOTIFY")
}

pub fn pidf(user: &str, activity: &str) -> String {
    pidf_status(user, "open", activity)
}

/// A PIDF document of `user`: one tuple with `basic` status, one person with `activity`.
pub fn pidf_status(user: &str, basic: &str, activity: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" \
entity=\"sip:{user}@example.com\"><tuple id=\"t1\"><status><basic>{basic}</basic></status></tuple>\
<dm:person id=\"p1\"><rpid:activities><rpid:{activity}/></rpid:activities></dm:person></presence>"
    )
}
