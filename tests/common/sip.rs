//! A kit for driving the sans-IO SIP proxy from tests: fake user agents that remember their
//! dialog ([`Uac`], [`Uas`]), a media hook that records what it was asked ([`Rec`]), the
//! proxy fed bytes and ticked on a fake clock ([`feed`], [`tick`]), and short accessors
//! for what came out. Every transmitted message must parse with our own parser.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use rtpanchor::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult, NoMedia};
use rtpanchor::sip::proxy::{Proxy, ProxyConfig};
use rtpanchor::sip::transport::{Transmit, Transport};
use rtpanchor::sip::{HeaderName, Message};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The proxy's listen address.
pub fn proxy_addr() -> SocketAddr {
    addr("127.0.0.1:5060")
}
pub fn alice() -> SocketAddr {
    addr("127.0.0.1:5061")
}
pub fn bob() -> SocketAddr {
    addr("127.0.0.1:5062")
}
pub fn bob2() -> SocketAddr {
    addr("127.0.0.1:5063")
}

/// The proxy at [`proxy_addr`], serving `example.com`.
pub fn config() -> ProxyConfig {
    let mut c = ProxyConfig::new(proxy_addr());
    c.domains = vec!["example.com".to_string()];
    c
}

pub fn new_proxy() -> Proxy {
    proxy_with(config())
}

/// A proxy with its own configuration and an empty location store.
pub fn proxy_with(cfg: ProxyConfig) -> Proxy {
    Proxy::new(cfg, Default::default())
}

// ---------------------------------------------------------------------------------------
// Media

/// (op, call-id, from-tag, to-tag, via-branch) of one media call.
pub type Call = (MediaOp, String, String, Option<String>, Option<String>);

/// Records every media call and returns a recognisable body; with `fail` set, offers fail.
#[derive(Default)]
pub struct Rec {
    pub calls: Vec<Call>,
    pub fail: Option<(u16, String)>,
}

impl MediaHook for Rec {
    fn media(&mut self, ctx: &MediaCtx<'_>, _body: &[u8], _now: u64) -> MediaResult {
        self.calls.push((
            ctx.op,
            ctx.call_id.to_string(),
            ctx.from_tag.to_string(),
            ctx.to_tag.map(str::to_string),
            ctx.via_branch.map(str::to_string),
        ));
        if let (MediaOp::Offer, Some((status, reason))) = (ctx.op, &self.fail) {
            return MediaResult::Failed {
                status: *status,
                reason: reason.clone(),
            };
        }
        match ctx.op {
            MediaOp::Offer => MediaResult::NewBody(sdp("203.0.113.1", 40000)),
            MediaOp::Answer => MediaResult::NewBody(sdp("203.0.113.1", 40002)),
            MediaOp::Delete => MediaResult::Unchanged,
        }
    }
}

impl Rec {
    pub fn ops(&self) -> Vec<MediaOp> {
        self.calls.iter().map(|c| c.0).collect()
    }
}

pub fn sdp(ip: &str, port: u16) -> Vec<u8> {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
        .into_bytes()
}

// ---------------------------------------------------------------------------------------
// Driving the proxy

/// Asserts every transmit parses and returns them.
pub fn check(out: Vec<Transmit>) -> Vec<Transmit> {
    for t in &out {
        if t.bytes != b"\r\n" {
            if let Err(e) = Message::parse(&t.bytes) {
                panic!(
                    "unparseable output {e:?}:\n{}",
                    String::from_utf8_lossy(&t.bytes)
                );
            }
        }
    }
    out
}

/// One UDP datagram from `src` at `now`.
pub fn feed(
    p: &mut Proxy,
    data: &[u8],
    src: SocketAddr,
    now: u64,
    m: &mut dyn MediaHook,
) -> Vec<Transmit> {
    check(p.handle_incoming(data, src, Transport::Udp, now, m))
}

pub fn tick(p: &mut Proxy, now: u64, m: &mut dyn MediaHook) -> Vec<Transmit> {
    check(p.handle_timeout(now, m))
}

pub fn msg(t: &Transmit) -> Message<'_> {
    Message::parse(&t.bytes).unwrap()
}

pub fn status(t: &Transmit) -> Option<u16> {
    msg(t).status()
}

pub fn method(t: &Transmit) -> Option<String> {
    msg(t).method().map(str::to_string)
}

/// The transmits sent to `dst`.
pub fn to(out: &[Transmit], dst: SocketAddr) -> Vec<&Transmit> {
    out.iter().filter(|t| t.to == dst).collect()
}

pub fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

pub fn vias(t: &Transmit) -> Vec<String> {
    msg(t)
        .vias()
        .map(|v| v.unwrap().1.raw.to_string())
        .collect()
}

/// The branch of a message's top Via.
pub fn top_branch(t: &Transmit) -> String {
    branch_of(&t.bytes)
}

pub fn branch_of(bytes: &[u8]) -> String {
    Message::parse(bytes)
        .unwrap()
        .top_via()
        .unwrap()
        .branch
        .unwrap()
        .to_string()
}

/// A file of the RFC 4475 torture corpus.
pub fn rfc4475(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/rfc4475")
            .join(format!("{name}.dat")),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Registration

pub fn register_bytes(
    user: &str,
    contacts: &[&str],
    via: &str,
    call_id: &str,
    cseq: u32,
) -> Vec<u8> {
    let mut s = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP {via};branch=z9hG4bKreg{cseq}{user};rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:{user}@example.com>\r\n\
From: <sip:{user}@example.com>;tag=r{user}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n"
    );
    for c in contacts {
        s.push_str(&format!("Contact: <{c}>\r\n"));
    }
    s.push_str("Expires: 600\r\nContent-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// Registers `user` with `contacts`, sent from `src` with the Via `via`; asserts the 200.
pub fn register(p: &mut Proxy, user: &str, contacts: &[&str], src: SocketAddr, via: &str) {
    let out = feed(
        p,
        &register_bytes(user, contacts, via, &format!("reg-{user}"), 1),
        src,
        0,
        &mut NoMedia,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!(out[0].to, src);
}

/// Bob registered at his usual contact (the common start of a call test).
pub fn register_bob(p: &mut Proxy) {
    register(
        p,
        "bob",
        &["sip:bob@127.0.0.1:5062"],
        bob(),
        "127.0.0.1:5062",
    );
}

/// Bob registered at two contacts, 127.0.0.1:5062 and :5063 (a forking test's start).
pub fn register_bob_twice(p: &mut Proxy) {
    register(
        p,
        "bob",
        &["sip:bob@127.0.0.1:5062", "sip:bob@127.0.0.1:5063"],
        bob(),
        "127.0.0.1:5062",
    );
}

// ---------------------------------------------------------------------------------------
// User agents

/// The caller's side of one dialog ("Alice", From tag `a1`). It remembers the Call-ID, the
/// last CSeq, the INVITE's branch and CSeq (a CANCEL and the ACK of a non-2xx reuse them),
/// and, once told a response with [`Uac::learn`], the remote tag, the remote target
/// (Contact) and the route set (Record-Route), which in-dialog requests ([`Uac::ack`],
/// [`Uac::bye`]) follow. Every new transaction gets a fresh branch.
#[derive(Clone, Debug)]
pub struct Uac {
    /// Where its datagrams come from.
    pub addr: SocketAddr,
    /// The `host:port` of its Via and Contact (differs from `addr` behind NAT).
    pub via: String,
    /// Ask for `rport` in the Via (RFC 3581).
    pub rport: bool,
    pub call_id: String,
    /// Request-URI (and To) of requests outside the dialog.
    pub target: String,
    /// The last CSeq number used.
    pub cseq: u32,
    /// The branch and CSeq number of the last INVITE.
    pub branch: String,
    pub invite_cseq: u32,
    pub to_tag: Option<String>,
    pub remote_target: Option<String>,
    pub route: Vec<String>,
    /// The last INVITE as sent, for retransmitting it.
    pub last_invite: Vec<u8>,
    branches: u32,
}

/// One request as [`Uac`] writes it.
struct Req<'a> {
    method: &'a str,
    ruri: &'a str,
    branch: &'a str,
    cseq: u32,
    to_tag: Option<&'a str>,
    /// Header lines, each ending in CRLF.
    extra: &'a str,
    body: Option<&'a [u8]>,
}

impl Uac {
    /// A caller at `addr` whose Via says `via`, calling `sip:bob@example.com`.
    pub fn new(addr: SocketAddr, via: &str, call_id: &str) -> Uac {
        Uac {
            addr,
            via: via.to_string(),
            rport: false,
            call_id: call_id.to_string(),
            target: "sip:bob@example.com".to_string(),
            cseq: 0,
            branch: String::new(),
            invite_cseq: 0,
            to_tag: None,
            remote_target: None,
            route: Vec::new(),
            last_invite: Vec::new(),
            branches: 0,
        }
    }

    /// Alice at 127.0.0.1:5061 (no NAT), calling `sip:bob@example.com`.
    pub fn alice(call_id: &str) -> Uac {
        Uac::new(alice(), "127.0.0.1:5061", call_id)
    }

    /// The same caller, calling `target` instead.
    pub fn calling(mut self, target: &str) -> Uac {
        self.target = target.to_string();
        self
    }

    /// The same caller, asking for `rport`.
    pub fn with_rport(mut self) -> Uac {
        self.rport = true;
        self
    }

    fn new_branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK{}.{}", self.call_id, self.branches)
    }

    /// An INVITE outside any dialog (new CSeq and branch, both remembered).
    pub fn invite(&mut self, body: Option<&[u8]>) -> Vec<u8> {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.branch = self.new_branch();
        let bytes = self.build(Req {
            method: "INVITE",
            ruri: &self.target,
            branch: &self.branch,
            cseq: self.cseq,
            to_tag: None,
            extra: "",
            body,
        });
        self.last_invite = bytes.clone();
        bytes
    }

    /// A non-INVITE request outside any dialog (MESSAGE, SUBSCRIBE, OPTIONS...), with
    /// `extra` header lines (each ending in CRLF).
    pub fn request(&mut self, method: &str, extra: &str) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.new_branch();
        self.build(Req {
            method,
            ruri: &self.target,
            branch: &branch,
            cseq: self.cseq,
            to_tag: None,
            extra,
            body: None,
        })
    }

    /// The CANCEL of the last INVITE (§9.1: its branch, Request-URI and CSeq number).
    pub fn cancel(&self) -> Vec<u8> {
        self.build(Req {
            method: "CANCEL",
            ruri: &self.target,
            branch: &self.branch,
            cseq: self.invite_cseq,
            to_tag: None,
            extra: "",
            body: None,
        })
    }

    /// The ACK of a non-2xx final `response` to the last INVITE (§17.1.1.3: the INVITE's
    /// branch and Request-URI, the response's To tag).
    pub fn ack_failure(&self, response: &[u8]) -> Vec<u8> {
        let m = Message::parse(response).unwrap();
        self.build(Req {
            method: "ACK",
            ruri: &self.target,
            branch: &self.branch,
            cseq: self.invite_cseq,
            to_tag: m.to_tag(),
            extra: "",
            body: None,
        })
    }

    /// Learns the dialog from a response to the INVITE: the To tag, the Contact's URI as
    /// remote target, and the Record-Route, reversed, as route set (§12.1.2).
    pub fn learn(&mut self, response: &[u8]) {
        let m = Message::parse(response).unwrap();
        self.to_tag = m.to_tag().map(str::to_string);
        if let Some(c) = m.header(HeaderName::Contact) {
            let v = c.value;
            let uri = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => &v[a + 1..b],
                _ => v.trim(),
            };
            self.remote_target = Some(uri.to_string());
        }
        self.route = m
            .route_set(HeaderName::RecordRoute)
            .unwrap()
            .iter()
            .rev()
            .map(|r| r.raw.to_string())
            .collect();
    }

    /// The ACK of a 2xx: a transaction of its own in the dialog, with the INVITE's CSeq
    /// number, and an answer `body` for a late offer.
    pub fn ack(&mut self, body: Option<&[u8]>) -> Vec<u8> {
        let branch = self.new_branch();
        self.in_dialog("ACK", &branch, self.invite_cseq, body)
    }

    /// A BYE in the dialog.
    pub fn bye(&mut self) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.new_branch();
        self.in_dialog("BYE", &branch, self.cseq, None)
    }

    fn in_dialog(&self, method: &str, branch: &str, cseq: u32, body: Option<&[u8]>) -> Vec<u8> {
        let route: String = self
            .route
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        self.build(Req {
            method,
            ruri: self.remote_target.as_deref().unwrap_or(&self.target),
            branch,
            cseq,
            to_tag: self.to_tag.as_deref(),
            extra: &route,
            body,
        })
    }

    fn build(&self, r: Req<'_>) -> Vec<u8> {
        let Req {
            method,
            ruri,
            branch,
            cseq,
            to_tag,
            extra,
            body,
        } = r;
        let via = &self.via;
        let rport = if self.rport { ";rport" } else { "" };
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let call_id = &self.call_id;
        let to = &self.target;
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP {via};branch={branch}{rport}\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <{to}>{to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@{via}>\r\n\
{extra}"
        );
        with_body(&mut s, body)
    }
}

/// A callee that answers what the proxy forwards to it: Via, Record-Route, From, To (with
/// its tag), Call-ID and CSeq copied; its Contact on responses that make a dialog (1xx
/// and 2xx to INVITE or SUBSCRIBE, not 100).
#[derive(Clone, Debug)]
pub struct Uas {
    pub addr: SocketAddr,
    pub tag: String,
    pub contact: String,
}

impl Uas {
    pub fn new(addr: SocketAddr, tag: &str, contact: &str) -> Uas {
        Uas {
            addr,
            tag: tag.to_string(),
            contact: contact.to_string(),
        }
    }

    /// Bob at 127.0.0.1:5062, To tag `b1`.
    pub fn bob() -> Uas {
        Uas::new(bob(), "b1", "sip:bob@127.0.0.1:5062")
    }

    /// A response with the usual reason phrase and no body.
    pub fn respond(&self, req: &[u8], code: u16) -> Vec<u8> {
        self.reply(req, code, reason(code), None)
    }

    /// A response carrying SDP.
    pub fn respond_sdp(&self, req: &[u8], code: u16, body: &[u8]) -> Vec<u8> {
        self.reply(req, code, reason(code), Some(body))
    }

    /// Any response to `req`.
    pub fn reply(&self, req: &[u8], code: u16, reason: &str, body: Option<&[u8]>) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        let tag = (code > 100).then_some(self.tag.as_str());
        let dialog = matches!(m.method(), Some("INVITE" | "SUBSCRIBE"));
        let contact = (dialog && code > 100 && code < 300).then_some(self.contact.as_str());
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for h in &m.headers {
            match h.kind {
                HeaderName::Via
                | HeaderName::RecordRoute
                | HeaderName::From
                | HeaderName::CallId
                | HeaderName::CSeq => {
                    s.push_str(&format!("{}: {}\r\n", h.name, h.value));
                }
                HeaderName::To => match tag {
                    Some(t) if m.to_tag().is_none() => {
                        s.push_str(&format!("To: {};tag={t}\r\n", h.value))
                    }
                    _ => s.push_str(&format!("To: {}\r\n", h.value)),
                },
                _ => {}
            }
        }
        if let Some(c) = contact {
            s.push_str(&format!("Contact: <{c}>\r\n"));
        }
        with_body(&mut s, body)
    }
}

/// The reason phrase the kit's user agents use for `code`.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        302 => "Moved Temporarily",
        404 => "Not Found",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Whatever",
    }
}

/// Ends a message's header section with Content-Type (if a body) and Content-Length.
fn with_body(s: &mut String, body: Option<&[u8]>) -> Vec<u8> {
    match body {
        Some(b) => {
            s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut out = std::mem::take(s).into_bytes();
            out.extend_from_slice(b);
            out
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            std::mem::take(s).into_bytes()
        }
    }
}

/// Bob registered, and an INVITE from alice (`call_id`, with `body`) forwarded to bob:
/// returns (proxy, alice, the forwarded INVITE bytes), after checking the 100 to alice and
/// the INVITE to bob.
pub fn call_to_bob(rec: &mut Rec, body: Option<&[u8]>) -> (Proxy, Uac, Vec<u8>) {
    let mut p = new_proxy();
    register_bob(&mut p);
    let mut a = Uac::alice("call1");
    let out = feed(&mut p, &a.invite(body), alice(), 0, rec);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0]), Some(100));
    assert_eq!(out[0].to, alice());
    assert_eq!(out[1].to, bob());
    assert_eq!(method(&out[1]).as_deref(), Some("INVITE"));
    let inv = out[1].bytes.clone();
    (p, a, inv)
}

// ---------------------------------------------------------------------------------------
// Over real sockets

/// Datagrams on `sock` until a final response (status 200-699) comes, or 10 s; returns
/// them all, that final last.
#[allow(clippy::disallowed_methods)] // wall-clock bounded wait
pub fn until_final(sock: &UdpSocket) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 65_535];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let m = buf[..n].to_vec();
        let done = Message::parse(&m)
            .ok()
            .and_then(|r| r.status())
            .is_some_and(|s| s >= 200);
        got.push(m);
        if done {
            break;
        }
    }
    got
}

/// The final response alice's socket gets (within 10 s): its status and bytes; the test
/// fails, showing what came and the relay's log, without one.
pub fn final_answer(alice: &UdpSocket, relay: &super::peers::Peer) -> (u16, Vec<u8>) {
    let answers = until_final(alice);
    match answers
        .last()
        .and_then(|m| Some((status_of(m)?, m.clone())))
    {
        Some((s, m)) if s >= 200 => (s, m),
        _ => panic!(
            "no final response; alice got {:?}\nrelay:\n{}",
            answers
                .iter()
                .map(|m| String::from_utf8_lossy(m))
                .collect::<Vec<_>>(),
            relay.log_tail(30)
        ),
    }
}

/// The status of a response (`None` for a request or what does not parse).
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    Message::parse(bytes).ok().and_then(|m| m.status())
}

/// The methods of `got` (`?` for what is not a request).
pub fn methods(got: &[Vec<u8>]) -> Vec<String> {
    got.iter()
        .map(|m| {
            Message::parse(m)
                .ok()
                .and_then(|r| r.method())
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}
