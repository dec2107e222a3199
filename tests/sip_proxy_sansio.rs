//! The sans-IO proxy core driven by fake UAs: bytes in, `Transmit`s out, a fake clock, no
//! sockets. Every transmitted message must parse with our own parser.

use std::net::SocketAddr;
use std::path::Path;

use rtpanchor::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult, NoMedia};
use rtpanchor::sip::proxy::{Proxy, ProxyConfig};
use rtpanchor::sip::transport::{Transmit, Transport};
use rtpanchor::sip::{HeaderName, Message};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn proxy_addr() -> SocketAddr {
    addr("127.0.0.1:5060")
}
fn alice() -> SocketAddr {
    addr("127.0.0.1:5061")
}
fn bob() -> SocketAddr {
    addr("127.0.0.1:5062")
}
fn bob2() -> SocketAddr {
    addr("127.0.0.1:5063")
}

fn config() -> ProxyConfig {
    let mut c = ProxyConfig::new(proxy_addr());
    c.domains = vec!["example.com".to_string()];
    c
}

fn new_proxy() -> Proxy {
    Proxy::new(config(), Default::default())
}

/// Records every media call and returns a recognisable body.
/// (op, call-id, from-tag, to-tag, via-branch) of one media call.
type Call = (MediaOp, String, String, Option<String>, Option<String>);

#[derive(Default)]
struct Rec {
    calls: Vec<Call>,
    fail: Option<(u16, String)>,
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
    fn ops(&self) -> Vec<MediaOp> {
        self.calls.iter().map(|c| c.0).collect()
    }
}

fn sdp(ip: &str, port: u16) -> Vec<u8> {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
        .into_bytes()
}

/// Asserts every transmit parses and returns them.
fn check(out: Vec<Transmit>) -> Vec<Transmit> {
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

fn feed(
    p: &mut Proxy,
    data: &[u8],
    src: SocketAddr,
    now: u64,
    m: &mut dyn MediaHook,
) -> Vec<Transmit> {
    check(p.handle_incoming(data, src, Transport::Udp, now, m))
}

fn tick(p: &mut Proxy, now: u64, m: &mut dyn MediaHook) -> Vec<Transmit> {
    check(p.handle_timeout(now, m))
}

fn msg(t: &Transmit) -> Message<'_> {
    Message::parse(&t.bytes).unwrap()
}

fn status(t: &Transmit) -> Option<u16> {
    msg(t).status()
}

fn method(t: &Transmit) -> Option<String> {
    msg(t).method().map(str::to_string)
}

fn to(out: &[Transmit], dst: SocketAddr) -> Vec<&Transmit> {
    out.iter().filter(|t| t.to == dst).collect()
}

fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

fn register_bytes(user: &str, contacts: &[&str], via: &str, call_id: &str, cseq: u32) -> Vec<u8> {
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

fn register(p: &mut Proxy, user: &str, contacts: &[&str], src: SocketAddr, via: &str) {
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
fn register_bob(p: &mut Proxy) {
    register(
        p,
        "bob",
        &["sip:bob@127.0.0.1:5062"],
        bob(),
        "127.0.0.1:5062",
    );
}

/// A request from a UA at `via` (host:port).
#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    ruri: &str,
    via: &str,
    branch: &str,
    call_id: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let mut s = format!(
        "{method} {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP {via};branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>{to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@{via}>\r\n\
{extra}"
    );
    let mut out;
    match body {
        Some(b) => {
            s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            out = s.into_bytes();
            out.extend_from_slice(b);
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            out = s.into_bytes();
        }
    }
    out
}

fn invite(branch: &str, call_id: &str, body: Option<&[u8]>) -> Vec<u8> {
    request(
        "INVITE",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        branch,
        call_id,
        1,
        None,
        "",
        body,
    )
}

/// A UAS response to a request it received: Vias, Record-Route, From, To (+tag),
/// Call-ID, CSeq copied; Contact and body added.
fn respond(
    req: &[u8],
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
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
            HeaderName::To => match to_tag {
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
    let mut out;
    match body {
        Some(b) => {
            s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            out = s.into_bytes();
            out.extend_from_slice(b);
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            out = s.into_bytes();
        }
    }
    out
}

fn vias(t: &Transmit) -> Vec<String> {
    msg(t)
        .vias()
        .map(|v| v.unwrap().1.raw.to_string())
        .collect()
}

fn top_branch(t: &Transmit) -> String {
    msg(t).top_via().unwrap().branch.unwrap().to_string()
}

/// Sets up bob registered at 127.0.0.1:5062 and an INVITE from alice forwarded to bob.
/// Returns (proxy, forwarded INVITE bytes).
fn call_to_bob(rec: &mut Rec, body: Option<&[u8]>) -> (Proxy, Vec<u8>) {
    let mut p = new_proxy();
    register_bob(&mut p);
    let out = feed(&mut p, &invite("z9hG4bKa1", "call1", body), alice(), 0, rec);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0]), Some(100));
    assert_eq!(out[0].to, alice());
    assert_eq!(out[1].to, bob());
    assert_eq!(method(&out[1]).as_deref(), Some("INVITE"));
    let inv = out[1].bytes.clone();
    (p, inv)
}

#[test]
fn register_invite_ack_bye_end_to_end() {
    let mut rec = Rec::default();
    let offer = sdp("10.0.0.1", 6000);
    let (mut p, inv) = call_to_bob(&mut rec, Some(&offer));
    let m = Message::parse(&inv).unwrap();
    assert_eq!(m.request_uri_str(), Some("sip:bob@127.0.0.1:5062"));
    let v: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].host.to_string(), "127.0.0.1");
    assert_eq!(v[0].port, Some(5060));
    assert!(v[0].has_rfc3261_branch());
    assert_eq!(v[1].branch, Some("z9hG4bKa1"));
    assert_eq!(m.max_forwards().unwrap(), Some(69));
    let rr = m.route_set(HeaderName::RecordRoute).unwrap();
    assert_eq!(rr.len(), 1);
    assert_eq!(rr[0].raw, "<sip:127.0.0.1:5060;lr>");
    assert_eq!(
        m.body(),
        sdp("203.0.113.1", 40000).as_slice(),
        "offer body replaced"
    );
    assert_eq!(m.content_length, Some(m.body().len()));
    let our_branch = v[0].branch.unwrap().to_string();
    assert_eq!(rec.calls.len(), 1);
    assert_eq!(rec.calls[0].0, MediaOp::Offer);
    assert_eq!(rec.calls[0].1, "call1");
    assert_eq!(rec.calls[0].2, "a1");
    assert_eq!(rec.calls[0].3, None);
    assert_eq!(rec.calls[0].4.as_deref(), Some(our_branch.as_str()));

    // 180 and 200 from bob travel back with our Via popped.
    let ringing = respond(
        &inv,
        180,
        "Ringing",
        Some("b1"),
        Some("sip:bob@127.0.0.1:5062"),
        None,
    );
    let out = feed(&mut p, &ringing, bob(), 10 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(180)));
    assert_eq!(vias(&out[0]).len(), 1);
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("b1"),
        Some("sip:bob@127.0.0.1:5062"),
        Some(&sdp("10.0.0.2", 7000)),
    );
    let out = feed(&mut p, &ok, bob(), 20 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    let r = msg(&out[0]);
    assert_eq!(r.vias().count(), 1);
    assert_eq!(r.top_via().unwrap().branch, Some("z9hG4bKa1"));
    assert_eq!(
        r.body(),
        sdp("203.0.113.1", 40002).as_slice(),
        "answer body replaced"
    );
    assert_eq!(r.content_length, Some(r.body().len()));
    assert_eq!(r.route_set(HeaderName::RecordRoute).unwrap().len(), 1);
    let last = rec.calls.last().unwrap();
    assert_eq!(last.0, MediaOp::Answer);
    assert_eq!((last.2.as_str(), last.3.as_deref()), ("a1", Some("b1")));
    assert_eq!(last.4.as_deref(), Some(our_branch.as_str()));

    // ACK and BYE follow the Record-Route: Route naming us, R-URI = bob's Contact.
    let route = "Route: <sip:127.0.0.1:5060;lr>\r\n";
    let ack = request(
        "ACK",
        "sip:bob@127.0.0.1:5062",
        "127.0.0.1:5061",
        "z9hG4bKack1",
        "call1",
        1,
        Some("b1"),
        route,
        None,
    );
    let out = feed(&mut p, &ack, alice(), 30 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
    let a = msg(&out[0]);
    assert!(
        a.route_set(HeaderName::Route).unwrap().is_empty(),
        "our Route popped"
    );
    assert_eq!(a.vias().count(), 2);
    assert_eq!(a.max_forwards().unwrap(), Some(69));
    // A retransmitted ACK gets the same branch (stateless, derived from the incoming one).
    let again = feed(&mut p, &ack, alice(), 40 * MS, &mut rec);
    assert_eq!(top_branch(&again[0]), top_branch(&out[0]));

    let bye = request(
        "BYE",
        "sip:bob@127.0.0.1:5062",
        "127.0.0.1:5061",
        "z9hG4bKbye1",
        "call1",
        2,
        Some("b1"),
        route,
        None,
    );
    let out = feed(&mut p, &bye, alice(), SEC, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("BYE"))
    );
    assert!(msg(&out[0])
        .route_set(HeaderName::Route)
        .unwrap()
        .is_empty());
    assert_eq!(rec.calls.last().unwrap().0, MediaOp::Delete);
    let bye_ok = respond(&out[0].bytes, 200, "OK", None, None, None);
    let out = feed(&mut p, &bye_ok, bob(), SEC + MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    assert_eq!(
        rec.ops(),
        vec![MediaOp::Offer, MediaOp::Answer, MediaOp::Delete]
    );
    let s = p.stats();
    assert_eq!(s.responses_sent[1], 2, "100 + 180");
    assert!(s.responses_sent[2] >= 3);
    assert_eq!(s.stateless_forwards, 2, "two ACKs");
    // Everything ends by a timer.
    tick(&mut p, 100 * SEC, &mut rec);
    let s = p.stats();
    assert_eq!((s.server_transactions, s.client_transactions), (0, 0));
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, None);
    let again = feed(
        &mut p,
        &invite("z9hG4bKa1", "call1", None),
        alice(),
        100 * MS,
        &mut rec,
    );
    assert_eq!(again.len(), 1, "answered, not forwarded");
    assert_eq!((again[0].to, status(&again[0])), (alice(), Some(100)));
    // After a 180 the retransmission gets the 180.
    let ringing = respond(&inv, 180, "Ringing", Some("b1"), None, None);
    feed(&mut p, &ringing, bob(), 200 * MS, &mut rec);
    let again = feed(
        &mut p,
        &invite("z9hG4bKa1", "call1", None),
        alice(),
        300 * MS,
        &mut rec,
    );
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0]), Some(180));
    assert_eq!(p.stats().retransmissions_absorbed, 2);
    assert_eq!(p.stats().forwarded_requests, 1);
}

#[test]
fn timer_a_retransmits_then_b_gives_408() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, None);
    let mut sent = Vec::new();
    let mut now = 0;
    while now < 31 * SEC {
        now += 50 * MS;
        for t in tick(&mut p, now, &mut rec) {
            assert_eq!(t.to, bob());
            assert_eq!(t.bytes, inv, "retransmission is the same request");
            sent.push(now);
        }
    }
    // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s after sending; the last one is past 31 s.
    assert_eq!(
        sent,
        vec![500 * MS, 1500 * MS, 3500 * MS, 7500 * MS, 15500 * MS]
    );
    let out = tick(&mut p, 31_500 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    let out = tick(&mut p, 32 * SEC, &mut rec);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(408)));
    assert!(msg(&out[0]).to_tag().is_some());
    assert_eq!(p.stats().timeouts, 1);
    // Timer G retransmits the 408 until the ACK comes; the ACK is absorbed.
    let out = tick(&mut p, 32 * SEC + 500 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(408));
    let ack = request(
        "ACK",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKa1",
        "call1",
        1,
        msg(&out[0]).to_tag(),
        "",
        None,
    );
    let out = feed(&mut p, &ack, alice(), 33 * SEC, &mut rec);
    assert!(out.is_empty(), "ACK of a non-2xx is absorbed");
    assert!(
        tick(&mut p, 34 * SEC, &mut rec).is_empty(),
        "no more Timer G"
    );
}

#[test]
fn non_invite_timer_e_then_f_gives_408() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let m = request(
        "MESSAGE",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKm1",
        "msg1",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1, "no 100 for non-INVITE");
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("MESSAGE"))
    );
    let mut sent = Vec::new();
    let mut now = 0;
    while now < 31_900 * MS {
        now += 100 * MS;
        for t in tick(&mut p, now, &mut NoMedia) {
            assert_eq!(t.to, bob());
            sent.push(now / MS);
        }
    }
    // Timer E: 0.5, 1, 2, 4, 4, 4... (capped at T2).
    assert_eq!(&sent[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
    let out = tick(&mut p, 32 * SEC, &mut NoMedia);
    let fin: Vec<_> = out.iter().filter(|t| t.to == alice()).collect();
    assert_eq!(fin.len(), 1);
    assert_eq!(status(fin[0]), Some(408));
    // A retransmitted MESSAGE gets the 408 again from the server transaction.
    let out = feed(&mut p, &m, alice(), 33 * SEC, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(408));
}

#[test]
fn non_invite_provisional_then_final() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let m = request(
        "SUBSCRIBE",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKs1",
        "sub1",
        1,
        None,
        "Event: presence\r\n",
        None,
    );
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(
        msg(&out[0])
            .route_set(HeaderName::RecordRoute)
            .unwrap()
            .len(),
        1
    );
    let ok = respond(
        &out[0].bytes,
        202,
        "Accepted",
        Some("n1"),
        Some("sip:bob@127.0.0.1:5062"),
        None,
    );
    let out = feed(&mut p, &ok, bob(), 10 * MS, &mut NoMedia);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(202)));
    // Retransmission of the response from bob (client transaction Completed) is absorbed.
    let out = feed(&mut p, &ok, bob(), 20 * MS, &mut NoMedia);
    assert!(out.is_empty());
}

#[test]
fn cancel_racing_a_200_the_200_wins() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    feed(
        &mut p,
        &respond(&inv, 180, "Ringing", Some("b1"), None, None),
        bob(),
        10 * MS,
        &mut rec,
    );
    let cancel = request(
        "CANCEL",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKa1",
        "call1",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &cancel, alice(), 20 * MS, &mut rec);
    assert_eq!(out.len(), 2, "{out:?}");
    let to_alice = to(&out, alice());
    assert_eq!(status(to_alice[0]), Some(200));
    assert_eq!(msg(to_alice[0]).cseq().unwrap().method, "CANCEL");
    let fwd = to(&out, bob());
    assert_eq!(method(fwd[0]).as_deref(), Some("CANCEL"));
    assert_eq!(
        top_branch(fwd[0]),
        msg(&Transmit {
            to: bob(),
            transport: Transport::Udp,
            bytes: inv.clone()
        })
        .top_via()
        .unwrap()
        .branch
        .unwrap()
    );
    // Bob's 200 to the INVITE crossed the CANCEL: it is forwarded.
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("b1"),
        Some("sip:bob@127.0.0.1:5062"),
        Some(&sdp("10.0.0.2", 7000)),
    );
    let out = feed(&mut p, &ok, bob(), 30 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    // Bob's 200 to the CANCEL is absorbed.
    let cok = respond(&fwd[0].bytes, 200, "OK", Some("b1"), None, None);
    assert!(feed(&mut p, &cok, bob(), 40 * MS, &mut rec).is_empty());
    // ACK and BYE then work.
    let route = "Route: <sip:127.0.0.1:5060;lr>\r\n";
    let ack = request(
        "ACK",
        "sip:bob@127.0.0.1:5062",
        "127.0.0.1:5061",
        "z9hG4bKack",
        "call1",
        1,
        Some("b1"),
        route,
        None,
    );
    let out = feed(&mut p, &ack, alice(), 50 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
    let bye = request(
        "BYE",
        "sip:bob@127.0.0.1:5062",
        "127.0.0.1:5061",
        "z9hG4bKbye",
        "call1",
        2,
        Some("b1"),
        route,
        None,
    );
    let out = feed(&mut p, &bye, alice(), 60 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("BYE"))
    );
}

#[test]
fn cancel_before_any_final_answer() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    // Bob's 100 is not forwarded, but lets a CANCEL go out (§9.1).
    let out = feed(
        &mut p,
        &respond(&inv, 100, "Trying", None, None, None),
        bob(),
        10 * MS,
        &mut rec,
    );
    assert!(out.is_empty());
    let cancel = request(
        "CANCEL",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKa1",
        "call1",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &cancel, alice(), 20 * MS, &mut rec);
    assert_eq!(status(to(&out, alice())[0]), Some(200));
    let fwd = to(&out, bob())[0].bytes.clone();
    assert_eq!(Message::parse(&fwd).unwrap().method(), Some("CANCEL"));
    assert_eq!(rec.calls.last().unwrap().0, MediaOp::Delete);
    // A retransmitted CANCEL is answered from its transaction, not forwarded again.
    let out = feed(&mut p, &cancel, alice(), 25 * MS, &mut rec);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200));
    // Bob: 200 to the CANCEL (absorbed), 487 to the INVITE (ACKed, forwarded).
    assert!(feed(
        &mut p,
        &respond(&fwd, 200, "OK", Some("b1"), None, None),
        bob(),
        30 * MS,
        &mut rec
    )
    .is_empty());
    let out = feed(
        &mut p,
        &respond(&inv, 487, "Request Terminated", Some("b1"), None, None),
        bob(),
        40 * MS,
        &mut rec,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    let ack = to(&out, bob())[0];
    assert_eq!(method(ack).as_deref(), Some("ACK"));
    assert_eq!(msg(ack).to_tag(), Some("b1"));
    assert_eq!(
        top_branch(ack),
        Message::parse(&inv)
            .unwrap()
            .top_via()
            .unwrap()
            .branch
            .unwrap()
    );
    assert_eq!(status(to(&out, alice())[0]), Some(487));
    // Alice's ACK for the 487 is absorbed.
    let ack = request(
        "ACK",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKa1",
        "call1",
        1,
        Some("b1"),
        "",
        None,
    );
    assert!(feed(&mut p, &ack, alice(), 50 * MS, &mut rec).is_empty());
    // A retransmitted 487 from bob is re-ACKed, not forwarded.
    let out = feed(
        &mut p,
        &respond(&inv, 487, "Request Terminated", Some("b1"), None, None),
        bob(),
        60 * MS,
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("ACK"))
    );
}

#[test]
fn cancel_before_a_provisional_is_deferred() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, None);
    let cancel = request(
        "CANCEL",
        "sip:bob@example.com",
        "127.0.0.1:5061",
        "z9hG4bKa1",
        "call1",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &cancel, alice(), 20 * MS, &mut rec);
    // No CANCEL toward bob yet; alice gets 200 (CANCEL) and 487 (INVITE) at once.
    assert!(to(&out, bob()).is_empty());
    let mut codes: Vec<_> = out.iter().map(|t| status(t).unwrap()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // The INVITE is no longer retransmitted (only the 487 is, until alice ACKs).
    let out = tick(&mut p, 2 * SEC, &mut rec);
    assert!(to(&out, bob()).is_empty());
    assert!(out.iter().all(|t| status(t) == Some(487)));
    // Bob rings late: now the CANCEL goes out, and the 180 is not forwarded.
    let out = feed(
        &mut p,
        &respond(&inv, 180, "Ringing", Some("b1"), None, None),
        bob(),
        3 * SEC,
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("CANCEL"))
    );
}

#[test]
fn retransmitted_2xx_is_forwarded_statelessly() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, Some(&sdp("10.0.0.1", 6000)));
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("b1"),
        Some("sip:bob@127.0.0.1:5062"),
        Some(&sdp("10.0.0.2", 7000)),
    );
    let first = feed(&mut p, &ok, bob(), 10 * MS, &mut rec);
    assert_eq!(
        p.stats().client_transactions,
        0,
        "INVITE client transaction ended on 2xx"
    );
    let calls = rec.calls.len();
    let again = feed(&mut p, &ok, bob(), 510 * MS, &mut rec);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].to, alice());
    assert_eq!(
        again[0].bytes, first[0].bytes,
        "same bytes as the first 2xx"
    );
    assert_eq!(rec.calls.len(), calls, "the media layer is not asked again");
    // Much later (cache expired) it is still forwarded, by the Via.
    tick(&mut p, 40 * SEC, &mut rec);
    let late = feed(&mut p, &ok, bob(), 41 * SEC, &mut rec);
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].to, status(&late[0])), (alice(), Some(200)));
    assert_eq!(vias(&late[0]).len(), 1);
}

#[test]
fn forking_first_2xx_wins_and_cancels_the_other_branch() {
    let mut rec = Rec::default();
    let mut p = new_proxy();
    register(
        &mut p,
        "bob",
        &["sip:bob@127.0.0.1:5062", "sip:bob@127.0.0.1:5063"],
        bob(),
        "127.0.0.1:5062",
    );
    let out = feed(
        &mut p,
        &invite("z9hG4bKf1", "fork1", Some(&sdp("10.0.0.1", 6000))),
        alice(),
        0,
        &mut rec,
    );
    assert_eq!(out.len(), 3);
    let b1 = to(&out, bob())[0].bytes.clone();
    let b2 = to(&out, bob2())[0].bytes.clone();
    let br1 = Message::parse(&b1)
        .unwrap()
        .top_via()
        .unwrap()
        .branch
        .unwrap()
        .to_string();
    let br2 = Message::parse(&b2)
        .unwrap()
        .top_via()
        .unwrap()
        .branch
        .unwrap()
        .to_string();
    assert_ne!(br1, br2);
    // One offer per branch, each with its branch.
    let offers: Vec<_> = rec
        .calls
        .iter()
        .filter(|c| c.0 == MediaOp::Offer)
        .map(|c| c.4.clone().unwrap())
        .collect();
    assert_eq!(offers, vec![br1.clone(), br2.clone()]);
    feed(
        &mut p,
        &respond(&b2, 180, "Ringing", Some("x2"), None, None),
        bob2(),
        10 * MS,
        &mut rec,
    );
    let out = feed(
        &mut p,
        &respond(
            &b1,
            200,
            "OK",
            Some("x1"),
            Some("sip:bob@127.0.0.1:5062"),
            Some(&sdp("10.0.0.2", 7000)),
        ),
        bob(),
        20 * MS,
        &mut rec,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(to(&out, alice())[0]), Some(200));
    let c = to(&out, bob2())[0];
    assert_eq!(method(c).as_deref(), Some("CANCEL"));
    assert_eq!(top_branch(c), br2);
    let ans = rec.calls.iter().find(|c| c.0 == MediaOp::Answer).unwrap();
    assert_eq!(
        ans.4.as_deref(),
        Some(br1.as_str()),
        "answer carries the winning branch"
    );
    // The other branch answers 487: ACKed, not forwarded.
    let out = feed(
        &mut p,
        &respond(&b2, 487, "Request Terminated", Some("x2"), None, None),
        bob2(),
        30 * MS,
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob2(), Some("ACK"))
    );
    // A second 2xx (say the other branch had answered too) is forwarded as well (§16.7).
    let mut p2 = new_proxy();
    register(
        &mut p2,
        "bob",
        &["sip:bob@127.0.0.1:5062", "sip:bob@127.0.0.1:5063"],
        bob(),
        "127.0.0.1:5062",
    );
    let out = feed(
        &mut p2,
        &invite("z9hG4bKf2", "fork2", None),
        alice(),
        0,
        &mut NoMedia,
    );
    let b1 = to(&out, bob())[0].bytes.clone();
    let b2 = to(&out, bob2())[0].bytes.clone();
    let o1 = feed(
        &mut p2,
        &respond(&b1, 200, "OK", Some("x1"), None, None),
        bob(),
        10 * MS,
        &mut NoMedia,
    );
    assert_eq!(to(&o1, alice()).len(), 1);
    let o2 = feed(
        &mut p2,
        &respond(&b2, 200, "OK", Some("x2"), None, None),
        bob2(),
        20 * MS,
        &mut NoMedia,
    );
    assert_eq!(o2.len(), 1);
    assert_eq!((o2[0].to, msg(&o2[0]).to_tag()), (alice(), Some("x2")));
}

#[test]
fn best_response_when_all_branches_fail() {
    fn run(c1: (u16, &str), c2: (u16, &str)) -> (u16, usize) {
        let mut p = new_proxy();
        register(
            &mut p,
            "bob",
            &["sip:bob@127.0.0.1:5062", "sip:bob@127.0.0.1:5063"],
            bob(),
            "127.0.0.1:5062",
        );
        let mut rec = Rec::default();
        let out = feed(
            &mut p,
            &invite("z9hG4bKb1", "best", Some(&sdp("10.0.0.1", 6000))),
            alice(),
            0,
            &mut rec,
        );
        let b1 = to(&out, bob())[0].bytes.clone();
        let b2 = to(&out, bob2())[0].bytes.clone();
        let out = feed(
            &mut p,
            &respond(&b1, c1.0, c1.1, Some("x1"), None, None),
            bob(),
            10 * MS,
            &mut rec,
        );
        let mut upstream: Vec<u16> = to(&out, alice()).iter().filter_map(|t| status(t)).collect();
        let out2 = feed(
            &mut p,
            &respond(&b2, c2.0, c2.1, Some("x2"), None, None),
            bob2(),
            20 * MS,
            &mut rec,
        );
        assert_eq!(to(&out2, bob2()).len(), 1, "ACK to the failed branch");
        upstream.extend(to(&out2, alice()).iter().filter_map(|t| status(t)));
        assert_eq!(upstream.len(), 1, "one final upstream: {upstream:?}");
        let deletes = rec.calls.iter().filter(|c| c.0 == MediaOp::Delete).count();
        (upstream[0], deletes)
    }
    assert_eq!(run((503, "Unavailable"), (486, "Busy Here")), (486, 1));
    assert_eq!(
        run((486, "Busy Here"), (404, "Not Found")).0,
        486,
        "same class: first"
    );
    assert_eq!(run((302, "Moved"), (404, "Not Found")).0, 302);
    assert_eq!(
        run((503, "A"), (503, "B")).0,
        500,
        "503 is not forwarded as such"
    );
    // 6xx wins, and cancels the other branch at once.
    let mut p = new_proxy();
    register(
        &mut p,
        "bob",
        &["sip:bob@127.0.0.1:5062", "sip:bob@127.0.0.1:5063"],
        bob(),
        "127.0.0.1:5062",
    );
    let out = feed(
        &mut p,
        &invite("z9hG4bKb6", "six", None),
        alice(),
        0,
        &mut NoMedia,
    );
    let b1 = to(&out, bob())[0].bytes.clone();
    let b2 = to(&out, bob2())[0].bytes.clone();
    feed(
        &mut p,
        &respond(&b2, 180, "Ringing", Some("x2"), None, None),
        bob2(),
        5 * MS,
        &mut NoMedia,
    );
    let out = feed(
        &mut p,
        &respond(&b1, 603, "Decline", Some("x1"), None, None),
        bob(),
        10 * MS,
        &mut NoMedia,
    );
    assert_eq!(method(to(&out, bob2())[0]).as_deref(), Some("CANCEL"));
    let out = feed(
        &mut p,
        &respond(&b2, 487, "Request Terminated", Some("x2"), None, None),
        bob2(),
        20 * MS,
        &mut NoMedia,
    );
    assert_eq!(status(to(&out, alice())[0]), Some(603));
}

#[test]
fn loop_gets_482_and_spiral_does_not() {
    // outbound = ourselves: the forwarded request comes straight back.
    let mut c = config();
    c.outbound = Some(proxy_addr());
    let mut p: Proxy = Proxy::new(c.clone(), Default::default());
    let m = request(
        "MESSAGE",
        "sip:carol@elsewhere.test",
        "127.0.0.1:5061",
        "z9hG4bKl1",
        "loop1",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &m, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, proxy_addr());
    let back = feed(&mut p, &out[0].bytes, proxy_addr(), MS, &mut NoMedia);
    assert_eq!(back.len(), 1);
    assert_eq!(status(&back[0]), Some(482));
    assert_eq!(
        back[0].to,
        proxy_addr(),
        "answered to the previous hop (us)"
    );
    assert_eq!(p.stats().loops, 1);
    // Spiral: the same request with a changed Request-URI is not a loop.
    let spiral = String::from_utf8(out[0].bytes.clone())
        .unwrap()
        .replace("sip:carol@elsewhere.test", "sip:dave@elsewhere.test");
    // (A fresh instance with the same secret: the looped copy above already holds that
    // Via branch's server transaction here.)
    let mut p2: Proxy = Proxy::new(c, Default::default());
    let fwd = feed(
        &mut p2,
        spiral.as_bytes(),
        proxy_addr(),
        2 * MS,
        &mut NoMedia,
    );
    assert_eq!(method(&fwd[0]).as_deref(), Some("MESSAGE"));
    assert_eq!(vias(&fwd[0]).len(), 3);
}

#[test]
fn max_forwards_rules() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let zero = String::from_utf8(invite("z9hG4bKmf", "mf", None))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = feed(&mut p, zero.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(483)));
    // Absent: 70 is added.
    let none = String::from_utf8(invite("z9hG4bKmf2", "mf2", None))
        .unwrap()
        .replace("Max-Forwards: 70\r\n", "");
    let out = feed(&mut p, none.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(msg(&out[1]).max_forwards().unwrap(), Some(70));
    // One: forwarded with 0.
    let one = String::from_utf8(invite("z9hG4bKmf3", "mf3", None))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 1");
    let out = feed(&mut p, one.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(msg(&out[1]).max_forwards().unwrap(), Some(0));
    // RFC 4475 §3.1.4.11 (zeromf): OPTIONS with Max-Forwards 0 is answered by us.
    let z = rfc4475("zeromf");
    let out = feed(&mut p, &z, alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(200));
    assert!(msg(&out[0]).header(HeaderName::Allow).is_some());
}

#[test]
fn not_found_unavailable_forbidden() {
    let mut p = new_proxy();
    let call = |p: &mut Proxy, ruri: &str, br: &str| {
        let r = request("INVITE", ruri, "127.0.0.1:5061", br, br, 1, None, "", None);
        let out = feed(p, &r, alice(), 0, &mut NoMedia);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(msg(&out[0]).to_tag().is_some());
        status(&out[0]).unwrap()
    };
    assert_eq!(call(&mut p, "sip:nobody@example.com", "z9hG4bK1"), 404);
    assert_eq!(call(&mut p, "sip:bob@other.test", "z9hG4bK2"), 403);
    // Registered then unregistered: 480.
    register_bob(&mut p);
    let unreg = String::from_utf8(register_bytes(
        "bob",
        &["sip:bob@127.0.0.1:5062"],
        "127.0.0.1:5062",
        "reg-bob",
        2,
    ))
    .unwrap()
    .replace("Expires: 600", "Expires: 0");
    let out = feed(&mut p, unreg.as_bytes(), bob(), SEC, &mut NoMedia);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(call(&mut p, "sip:bob@example.com", "z9hG4bK3"), 480);
    // The listen address is a served domain too.
    assert_eq!(call(&mut p, "sip:nobody@127.0.0.1", "z9hG4bK4"), 404);
    // Outbound configured: foreign domains go there.
    let mut c = config();
    c.outbound = Some(addr("127.0.0.1:5099"));
    let mut p: Proxy = Proxy::new(c, Default::default());
    let r = request(
        "INVITE",
        "sip:bob@other.test",
        "127.0.0.1:5061",
        "z9hG4bK5",
        "ob",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &r, alice(), 0, &mut NoMedia);
    assert_eq!(out[1].to, addr("127.0.0.1:5099"));
    assert_eq!(msg(&out[1]).request_uri_str(), Some("sip:bob@other.test"));
}

#[test]
fn options_and_keepalives() {
    let mut p = new_proxy();
    for ruri in ["sip:127.0.0.1", "sip:example.com", "sip:127.0.0.1:5060"] {
        let r = request(
            "OPTIONS",
            ruri,
            "127.0.0.1:5061",
            &format!("z9hG4bKo{}", ruri.len()),
            "opt",
            1,
            None,
            "",
            None,
        );
        let out = feed(&mut p, &r, alice(), 0, &mut NoMedia);
        assert_eq!(out.len(), 1);
        let m = msg(&out[0]);
        assert_eq!(m.status(), Some(200));
        for h in [HeaderName::Allow, HeaderName::Accept, HeaderName::Supported] {
            assert!(m.header(h).is_some(), "{h:?}");
        }
        assert!(m
            .header(HeaderName::Allow)
            .unwrap()
            .value
            .contains("INVITE"));
    }
    // CRLF keep-alives: ignored on UDP, ponged on TCP (RFC 5626).
    assert!(p
        .handle_incoming(b"\r\n\r\n", alice(), Transport::Udp, 0, &mut NoMedia)
        .is_empty());
    let pong = p.handle_incoming(b"\r\n\r\n", alice(), Transport::Tcp, 0, &mut NoMedia);
    assert_eq!(
        pong,
        vec![Transmit {
            to: alice(),
            transport: Transport::Tcp,
            bytes: b"\r\n".to_vec()
        }]
    );
    assert_eq!(p.stats().keepalives, 2);
}

#[test]
fn rport_received_and_nated_callee() {
    let mut rec = Rec::default();
    let mut p = new_proxy();
    // Bob behind NAT: private Contact, registered from a different public port.
    let bob_public = addr("127.0.0.1:40000");
    register(
        &mut p,
        "bob",
        &["sip:bob@192.168.1.5:5060"],
        bob_public,
        "192.168.1.5:5060",
    );
    // Carol registers a third party's public contact from her own address: not NATed.
    register(
        &mut p,
        "carol",
        &["sip:carol@127.0.0.1:5070"],
        addr("127.0.0.1:5080"),
        "127.0.0.1:5080",
    );
    // Alice behind NAT too: Via private with rport; source is public.
    let alice_public = addr("127.0.0.1:41000");
    let inv = request(
        "INVITE",
        "sip:bob@example.com",
        "10.0.0.7:5060",
        "z9hG4bKn1;rport",
        "nat1",
        1,
        None,
        "",
        Some(&sdp("10.0.0.7", 6000)),
    );
    let out = feed(&mut p, &inv, alice_public, 0, &mut rec);
    assert_eq!(
        out[0].to, alice_public,
        "100 goes to the source port (rport)"
    );
    assert_eq!(out[1].to, bob_public, "NATed callee reached at its source");
    let m = msg(&out[1]);
    assert_eq!(m.request_uri_str(), Some("sip:bob@192.168.1.5:5060"));
    let v: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(v[1].received, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(v[1].rport, rtpanchor::sip::header::Rport::Port(41000));
    assert!(rec.calls[0].4.is_some());
    // Bob's 200 goes back to alice's public address and carries the filled Via.
    let ok = respond(
        &out[1].bytes,
        200,
        "OK",
        Some("b1"),
        Some("sip:bob@192.168.1.5:5060"),
        Some(&sdp("192.168.1.5", 7000)),
    );
    let out = feed(&mut p, &ok, bob_public, 10 * MS, &mut rec);
    assert_eq!(out[0].to, alice_public);
    let top = msg(&out[0]).top_via().unwrap();
    assert_eq!(top.rport, rtpanchor::sip::header::Rport::Port(41000));
    // In-dialog BYE to bob's private Contact goes to his source.
    let bye = request(
        "BYE",
        "sip:bob@192.168.1.5:5060",
        "10.0.0.7:5060",
        "z9hG4bKn2;rport",
        "nat1",
        2,
        Some("b1"),
        "Route: <sip:127.0.0.1:5060;lr>\r\n",
        None,
    );
    let out = feed(&mut p, &bye, alice_public, 20 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob_public, Some("BYE"))
    );
    // And bob's in-dialog request to alice's private Contact reaches her source.
    let rev = "BYE sip:alice@10.0.0.7:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKrev;rport\r\nMax-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:bob@example.com>;tag=b1\r\nTo: <sip:alice@example.com>;tag=a1\r\nCall-ID: nat1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    let out = feed(&mut p, rev.as_bytes(), bob_public, 30 * MS, &mut rec);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (alice_public, Some("BYE"))
    );
    // Carol (no NAT evidence) is reached at her Contact.
    let inv = request(
        "INVITE",
        "sip:carol@example.com",
        "127.0.0.1:5061",
        "z9hG4bKn3",
        "nat2",
        1,
        None,
        "",
        None,
    );
    let out = feed(&mut p, &inv, alice(), 40 * MS, &mut rec);
    assert_eq!(out[1].to, addr("127.0.0.1:5070"));
}

#[test]
fn late_offer_offer_on_200_answer_on_ack() {
    let mut rec = Rec::default();
    let (mut p, inv) = call_to_bob(&mut rec, None);
    assert!(rec.calls.is_empty(), "no SDP, no offer");
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("b1"),
        Some("sip:bob@127.0.0.1:5062"),
        Some(&sdp("10.0.0.2", 7000)),
    );
    let out = feed(&mut p, &ok, bob(), 10 * MS, &mut rec);
    assert_eq!(rec.calls.len(), 1);
    let c = &rec.calls[0];
    assert_eq!(c.0, MediaOp::Offer);
    assert_eq!((c.2.as_str(), c.3.as_deref()), ("a1", Some("b1")));
    assert!(c.4.is_some());
    assert_eq!(msg(&out[0]).body(), sdp("203.0.113.1", 40000).as_slice());
    let ack = request(
        "ACK",
        "sip:bob@127.0.0.1:5062",
        "127.0.0.1:5061",
        "z9hG4bKack",
        "call1",
        1,
        Some("b1"),
        "Route: <sip:127.0.0.1:5060;lr>\r\n",
        Some(&sdp("10.0.0.1", 6000)),
    );
    let out = feed(&mut p, &ack, alice(), 20 * MS, &mut rec);
    let c = &rec.calls[1];
    assert_eq!(c.0, MediaOp::Answer);
    assert_eq!(
        (c.2.as_str(), c.3.as_deref()),
        ("b1", Some("a1")),
        "tags swapped"
    );
    let a = msg(&out[0]);
    assert_eq!(a.body(), sdp("203.0.113.1", 40002).as_slice());
    assert_eq!(a.content_length, Some(a.body().len()));
}

#[test]
fn media_failure_rejects_the_invite() {
    let mut rec = Rec {
        fail: Some((503, "Ran out of ports".to_string())),
        ..Rec::default()
    };
    let mut p = new_proxy();
    register_bob(&mut p);
    let out = feed(
        &mut p,
        &invite("z9hG4bKmx", "mx", Some(&sdp("10.0.0.1", 6000))),
        alice(),
        0,
        &mut rec,
    );
    assert!(to(&out, bob()).is_empty(), "nothing forwarded");
    let last = out.last().unwrap();
    assert_eq!(last.to, alice());
    assert_eq!(status(last), Some(503));
    assert!(text(last).contains("503 Ran out of ports"));
    assert_eq!(p.stats().media_failures, 1);
    assert_eq!(p.stats().client_transactions, 0);
    assert!(!rec.ops().contains(&MediaOp::Delete), "nothing to delete");
}

#[test]
fn malformed_input_is_answered_or_dropped() {
    let mut p = new_proxy();
    // 400 with the message layer's reason phrase.
    let bad = String::from_utf8(invite("z9hG4bKbad", "bad", None))
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    let out = feed(&mut p, bad.as_bytes(), alice(), 0, &mut NoMedia);
    assert_eq!(out.len(), 1);
    assert!(text(&out[0]).starts_with("SIP/2.0 400 Bad Request - CSeq method does not match"));
    // Garbage and bad responses: dropped, counted.
    assert!(feed(&mut p, b"\x00\x01garbage", alice(), 0, &mut NoMedia).is_empty());
    assert!(feed(
        &mut p,
        b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
        alice(),
        0,
        &mut NoMedia
    )
    .is_empty());
    // A response not for us (top Via is someone else's): dropped.
    let stray = respond(
        &invite("z9hG4bKs", "stray", None),
        180,
        "Ringing",
        Some("t"),
        None,
        None,
    );
    assert!(feed(&mut p, &stray, bob(), 0, &mut NoMedia).is_empty());
    let s = p.stats();
    assert!(s.parse_errors >= 1);
    assert!(s.dropped >= 2);
    assert_eq!(s.rejected, 1);
}

#[test]
fn overload_gets_503_retry_after() {
    let mut c = config();
    c.max_transactions = 2;
    let mut p: Proxy = Proxy::new(c, Default::default());
    register_bob(&mut p);
    // The REGISTER's server transaction is live (Timer J) and the INVITE adds two more.
    let out = feed(
        &mut p,
        &invite("z9hG4bKo1", "o1", None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(out.len(), 2);
    let out = feed(
        &mut p,
        &invite("z9hG4bKo2", "o2", None),
        alice(),
        0,
        &mut NoMedia,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(503));
    assert!(msg(&out[0]).header_by_name("Retry-After").is_some());
    assert_eq!(p.stats().overload_rejects, 1);
}

/// Finished transactions linger 64·T1 (Timer J) normally and T4 once half the transaction
/// cap is taken; a retransmission inside the window is absorbed either way.
#[test]
fn finished_transactions_linger_shorter_under_pressure() {
    const MS: u64 = 1_000_000;
    // (cap, expected lifetime of the REGISTER's server transaction)
    for (cap, lifetime) in [(100, 32_000 * MS), (2, 5_000 * MS)] {
        let mut c = config();
        c.max_transactions = cap;
        let mut p: Proxy = Proxy::new(c, Default::default());
        register_bob(&mut p);
        assert_eq!(p.stats().server_transactions, 1, "cap {cap}");
        // A retransmission just inside the window is answered from the transaction.
        let again = register_bytes(
            "bob",
            &["sip:bob@127.0.0.1:5062"],
            "127.0.0.1:5062",
            "reg-bob",
            1,
        );
        tick(&mut p, lifetime - MS, &mut NoMedia);
        let out = feed(&mut p, &again, bob(), lifetime - MS, &mut NoMedia);
        assert_eq!(out.len(), 1, "cap {cap}");
        assert_eq!(p.stats().retransmissions_absorbed, 1, "cap {cap}");
        assert_eq!(p.stats().server_transactions, 1, "cap {cap}");
        tick(&mut p, lifetime, &mut NoMedia);
        assert_eq!(p.stats().server_transactions, 0, "cap {cap}");
        assert_eq!(p.stats().short_lingers, u64::from(cap == 2), "cap {cap}");
    }
}

#[test]
fn poll_timeout_tracks_the_next_timer() {
    let mut rec = Rec::default();
    let (p, _) = call_to_bob(&mut rec, None);
    let next = p.poll_timeout().unwrap();
    assert!(next <= 500 * MS, "Timer A at T1: {next}");
}

fn rfc4475(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/rfc4475")
            .join(format!("{name}.dat")),
    )
    .unwrap()
}

#[test]
fn rfc4475_semantic_cases_through_the_proxy() {
    let mut p = new_proxy();
    let mut st = |name: &str| {
        let out = feed(&mut p, &rfc4475(name), alice(), 0, &mut NoMedia);
        out.iter()
            .map(|t| status(t).unwrap_or(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(st("insuf"), vec![400]);
    assert_eq!(st("unkscm"), vec![416]);
    assert_eq!(st("bext01"), vec![420]);
    assert_eq!(st("mismatch01"), vec![400]);
    assert_eq!(st("badvers"), vec![505]);
    assert_eq!(st("multi01"), vec![400]);
    assert!(st("bigcode").is_empty());
    assert!(st("scalarlg").is_empty());
    // bcast (§3.1.4.10): a 200 whose next Via is the broadcast address is never sent there.
    let mut c = config();
    c.local = addr("192.0.2.198:5060");
    let mut p2: Proxy = Proxy::new(c, Default::default());
    let out = feed(&mut p2, &rfc4475("bcast"), alice(), 0, &mut NoMedia);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn no_panics_on_the_torture_corpus_and_truncations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut p = new_proxy();
    register_bob(&mut p);
    let mut rec = Rec::default();
    let mut now = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("dat") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        for cut in (0..=data.len()).step_by(7) {
            now += MS;
            for tr in [Transport::Udp, Transport::Tcp] {
                let out = p.handle_incoming(&data[..cut], alice(), tr, now, &mut rec);
                check(out);
            }
        }
    }
    let mut rec2 = Rec::default();
    let (mut p2, inv) = call_to_bob(&mut rec2, None);
    for cut in 0..inv.len() {
        let mut v = inv.clone();
        v[cut] ^= 0x20;
        check(p2.handle_incoming(&v, bob(), Transport::Udp, 0, &mut rec2));
        check(p2.handle_incoming(&v[..cut], bob(), Transport::Udp, 0, &mut rec2));
    }
    // Timers drain everything.
    check(p.handle_timeout(now + 400 * SEC, &mut rec));
    check(p.handle_timeout(now + 800 * SEC, &mut rec));
    assert_eq!(
        p.stats().server_transactions + p.stats().client_transactions,
        0
    );
}
