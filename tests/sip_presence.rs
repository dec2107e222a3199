//! Presence, PUBLISH and store-and-forward MESSAGE through the sans-IO proxy (no sockets):
//! RFC 6665 subscriptions (200 + immediate NOTIFY, refresh, un-subscribe, expiry, 481 and
//! timeouts, NOTIFY ordering, caps), the RFC 3903 compositor (ETags, 412, expiry,
//! composition, rate limit), watcher info, MESSAGE stored for an offline user and delivered
//! on REGISTER, numbers (tel: and visual separators) and a truthful OPTIONS.

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;

use common::sip::*;
use rtpanchor::sip::media::NoMedia;
use rtpanchor::sip::presence::PresenceConfig;
use rtpanchor::sip::proxy::{Proxy, ProxyConfig};
use rtpanchor::sip::transport::Transmit;
use rtpanchor::sip::{HeaderName, Message};

fn carol() -> SocketAddr {
    addr("127.0.0.1:5064")
}

fn presence_config() -> ProxyConfig {
    let mut c = config();
    let mut p = PresenceConfig::new(proxy_addr());
    p.notify_interval_ns = 200 * MS;
    c.presence = Some(p);
    c
}

fn presence_proxy() -> Proxy {
    proxy_with(presence_config())
}

/// A request from `user` at `src` (Contact and Via there) to `ruri`.
#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    ruri: &str,
    user: &str,
    src: SocketAddr,
    call_id: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    // In a dialog with the server (Request-URI = our Contact), To is still bob.
    let to = if ruri.starts_with("sip:127") {
        "sip:bob@example.com".to_string()
    } else {
        ruri.to_string()
    };
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let mut s = format!(
        "{method} {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bK{call_id}.{cseq}.{method}\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@example.com>;tag=f{user}\r\n\
To: <{to}>{to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:{user}@{src}>\r\n\
{extra}"
    );
    match body {
        Some((ty, b)) => {
            s.push_str(&format!(
                "Content-Type: {ty}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut v = s.into_bytes();
            v.extend_from_slice(b);
            v
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            s.into_bytes()
        }
    }
}

/// One UDP datagram from `src` at `now` (no media hook).
fn send(p: &mut Proxy, data: &[u8], src: SocketAddr, now: u64) -> Vec<Transmit> {
    feed(p, data, src, now, &mut NoMedia)
}

/// bob's phone registering at 127.0.0.1:5062.
fn bob_register() -> Vec<u8> {
    register_bytes(
        "bob",
        &["sip:bob@127.0.0.1:5062"],
        "127.0.0.1:5062",
        "rb",
        1,
    )
}

/// A PUBLISH from bob's phone at `now`.
fn publish_bob(
    p: &mut Proxy,
    cseq: u32,
    extra: &str,
    body: Option<&[u8]>,
    now: u64,
) -> Vec<Transmit> {
    send(p, &publish("bob", bob(), cseq, extra, body), bob(), now)
}

/// Where each user of these tests sends from.
fn src_of(user: &str) -> SocketAddr {
    match user {
        "alice" => alice(),
        "bob" => bob(),
        _ => carol(),
    }
}

/// A SUBSCRIBE from `user` to `target` outside a dialog, with `extra` header lines.
fn new_subscribe(user: &str, target: &str, call_id: &str, extra: &str) -> Vec<u8> {
    let ruri = format!("sip:{target}@example.com");
    request(
        "SUBSCRIBE",
        &ruri,
        user,
        src_of(user),
        call_id,
        1,
        None,
        extra,
        None,
    )
}

/// alice's SUBSCRIBE in her dialog `call_id` with the server (our tag `tag`).
fn resubscribe(call_id: &str, cseq: u32, tag: &str, extra: &str) -> Vec<u8> {
    let ruri = "sip:127.0.0.1:5060";
    request(
        "SUBSCRIBE",
        ruri,
        "alice",
        alice(),
        call_id,
        cseq,
        Some(tag),
        extra,
        None,
    )
}

fn subscribe(user: &str, src: SocketAddr, target: &str, call_id: &str, expires: u32) -> Vec<u8> {
    request(
        "SUBSCRIBE",
        &format!("sip:{target}@example.com"),
        user,
        src,
        call_id,
        1,
        None,
        &format!("Event: presence\r\nExpires: {expires}\r\n"),
        None,
    )
}

fn pidf(user: &str, tuple: &str, basic: &str, activity: Option<&str>) -> Vec<u8> {
    let person = activity
        .map(|a| {
            format!("<dm:person id=\"p{tuple}\"><rpid:activities><rpid:{a}/></rpid:activities></dm:person>")
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" \
entity=\"sip:{user}@example.com\"><tuple id=\"{tuple}\"><status><basic>{basic}</basic></status></tuple>{person}</presence>"
    )
    .into_bytes()
}

fn publish(user: &str, src: SocketAddr, cseq: u32, extra: &str, body: Option<&[u8]>) -> Vec<u8> {
    request(
        "PUBLISH",
        &format!("sip:{user}@example.com"),
        user,
        src,
        &format!("pub-{user}-{}", src.port()),
        cseq,
        None,
        &format!("Event: presence\r\n{extra}"),
        body.map(|b| ("application/pidf+xml", b)),
    )
}

fn header(t: &Transmit, name: &str) -> Option<String> {
    msg(t).header_by_name(name).map(|h| h.value.to_string())
}

fn body(t: &Transmit) -> String {
    String::from_utf8_lossy(msg(t).body()).into_owned()
}

fn notifies(out: &[Transmit]) -> Vec<&Transmit> {
    out.iter()
        .filter(|t| method(t).as_deref() == Some("NOTIFY"))
        .collect()
}

/// The 200 and NOTIFY of a new subscription; the NOTIFY is answered 200.
fn watch(p: &mut Proxy, user: &str, src: SocketAddr, target: &str, now: u64) -> (Vec<u8>, String) {
    let out = feed(
        p,
        &subscribe(user, src, target, &format!("sub-{user}"), 600),
        src,
        now,
        &mut NoMedia,
    );
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(text).collect::<Vec<_>>()
    );
    assert_eq!((out[0].to, status(&out[0])), (src, Some(200)));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].to, src);
    let doc = body(n[0]);
    answer(p, n[0], src, 200, now);
    (n[0].bytes.clone(), doc)
}

fn answer(p: &mut Proxy, req: &Transmit, from: SocketAddr, code: u16, now: u64) -> Vec<Transmit> {
    let ua = Uas::new(from, "x", "sip:x@127.0.0.1");
    feed(p, &ua.respond(&req.bytes, code), from, now, &mut NoMedia)
}

#[test]
fn subscribe_to_an_unregistered_user_gets_200_and_a_closed_notify() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "s1", 600),
        alice(),
        0,
    );
    assert_eq!(out.len(), 2);
    let ok = msg(&out[0]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.expires().unwrap(), Some(600));
    assert!(ok.header(HeaderName::Contact).is_some());
    let local_tag = ok.to_tag().unwrap().to_string();
    let n = msg(&out[1]);
    assert_eq!(n.method(), Some("NOTIFY"));
    assert_eq!(n.request_uri_str(), Some("sip:alice@127.0.0.1:5061"));
    assert_eq!(out[1].to, alice());
    assert_eq!(
        n.from_tag(),
        Some(local_tag.as_str()),
        "NOTIFY is in our dialog"
    );
    assert_eq!(n.to_tag(), Some("falice"));
    assert_eq!(n.call_id().unwrap(), "s1");
    assert_eq!(header(&out[1], "Event").as_deref(), Some("presence"));
    let state = header(&out[1], "Subscription-State").unwrap();
    assert!(state.starts_with("active;expires="), "{state}");
    assert_eq!(
        header(&out[1], "Content-Type").as_deref(),
        Some("application/pidf+xml")
    );
    assert!(body(&out[1]).contains("<basic>closed</basic>"));
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    // The NOTIFY is retransmitted (Timer E) until answered.
    let again = tick(&mut p, 600 * MS, &mut NoMedia);
    assert_eq!(notifies(&again).len(), 1);
    assert!(answer(&mut p, &out[1], alice(), 200, 700 * MS).is_empty());
    assert!(notifies(&tick(&mut p, 2 * SEC, &mut NoMedia)).is_empty());
}

#[test]
fn registration_opens_and_binding_expiry_closes_for_a_user_that_never_publishes() {
    let mut p = presence_proxy();
    let (_, doc) = watch(&mut p, "alice", alice(), "bob", 0);
    assert!(doc.contains("closed"));
    let out = send(&mut p, &bob_register(), bob(), SEC);
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "bob's REGISTER NOTIFYs alice");
    assert!(body(n[0]).contains("<basic>open</basic>"));
    answer(&mut p, n[0], alice(), 200, SEC);
    let tag = msg(n[0]).from_tag().unwrap().to_string();
    // The binding (600 s) expires; the subscription (600 s from 0) is renewed first.
    let refresh = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 3600\r\n");
    let out = send(&mut p, &refresh, alice(), 500 * SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(3600));
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "a refresh gets a NOTIFY");
    assert!(body(n[0]).contains("open"));
    answer(&mut p, n[0], alice(), 200, 500 * SEC);
    let mut closed = None;
    for s in 600..640 {
        let out = tick(&mut p, s * SEC, &mut NoMedia);
        if let Some(n) = notifies(&out).first() {
            closed = Some((*n).clone());
            break;
        }
    }
    let closed = closed.expect("a NOTIFY when the binding expired");
    assert!(body(&closed).contains("<basic>closed</basic>"));
    assert!(header(&closed, "Subscription-State")
        .unwrap()
        .starts_with("active"));
}

#[test]
fn publish_etags_refresh_modify_remove_and_412() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!(
        out[0].to,
        bob(),
        "answered by us, not forwarded to bob's phone"
    );
    let etag1 = header(&out[0], "SIP-ETag").expect("SIP-ETag");
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(120));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].to, alice());
    assert!(body(n[0]).contains("<rpid:away/>"));
    answer(&mut p, n[0], alice(), 200, SEC);

    // Refresh: no body, a new tag, no NOTIFY.
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag1}\r\nExpires: 120\r\n"),
        None,
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let etag2 = header(&out[0], "SIP-ETag").unwrap();
    assert_ne!(etag1, etag2);
    assert!(notifies(&out).is_empty());
    // The old tag is gone.
    let out = publish_bob(
        &mut p,
        3,
        &format!("SIP-If-Match: {etag1}\r\n"),
        Some(&away),
        3 * SEC,
    );
    assert_eq!(status(&out[0]), Some(412));
    // Modify: busy.
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        4,
        &format!("SIP-If-Match: {etag2}\r\n"),
        Some(&busy),
        4 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let etag3 = header(&out[0], "SIP-ETag").unwrap();
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(body(n[0]).contains("<rpid:busy/>") && !body(n[0]).contains("away"));
    answer(&mut p, n[0], alice(), 200, 4 * SEC);
    // Remove: back to the registration-derived state (bob has no binding: closed).
    let out = publish_bob(
        &mut p,
        5,
        &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"),
        None,
        5 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(body(n[0]).contains("<basic>closed</basic>"));
    assert_eq!(p.presence().unwrap().stats().publications, 0);
}

#[test]
fn publish_rules_489_423_415_400() {
    let mut p = presence_proxy();
    let doc = pidf("bob", "t", "open", None);
    let wrong_event = request(
        "PUBLISH",
        "sip:bob@example.com",
        "bob",
        bob(),
        "pe",
        1,
        None,
        "Event: dialog\r\n",
        Some(("application/pidf+xml", &doc)),
    );
    let out = send(&mut p, &wrong_event, bob(), 0);
    assert_eq!(status(&out[0]), Some(489));
    assert!(header(&out[0], "Allow-Events").is_some());
    let out = publish_bob(&mut p, 1, "Expires: 5\r\n", Some(&doc), 0);
    assert_eq!(status(&out[0]), Some(423));
    assert_eq!(header(&out[0], "Min-Expires").as_deref(), Some("60"));
    let out = publish_bob(&mut p, 2, "", None, 0);
    assert_eq!(
        status(&out[0]),
        Some(400),
        "an initial PUBLISH needs a body"
    );
    let out = send(
        &mut p,
        &publish("bob", bob(), 3, "", Some(b"<nope/>")),
        bob(),
        0,
    );
    assert_eq!(status(&out[0]), Some(400), "not PIDF");
    let plain = request(
        "PUBLISH",
        "sip:bob@example.com",
        "bob",
        bob(),
        "pt",
        1,
        None,
        "Event: presence\r\n",
        Some(("text/plain", b"here")),
    );
    let out = send(&mut p, &plain, bob(), 0);
    assert_eq!(status(&out[0]), Some(415));
}

#[test]
fn publication_expiry_notifies_and_two_publishers_are_composed() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let desk = pidf("bob", "desk", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 60\r\n", Some(&desk), SEC);
    answer(&mut p, notifies(&out)[0], alice(), 200, SEC);
    let mobile = pidf("bob", "mobile", "open", Some("on-the-phone"));
    let out = send(
        &mut p,
        &publish("bob", bob2(), 1, "Expires: 600\r\n", Some(&mobile)),
        bob2(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    let doc = body(n[0]);
    assert!(
        doc.contains("tuple id=\"desk\"") && doc.contains("tuple id=\"mobile\""),
        "{doc}"
    );
    assert!(doc.contains("<rpid:away/>") && doc.contains("<rpid:on-the-phone/>"));
    assert_eq!(doc.matches("<presence").count(), 1, "one document");
    answer(&mut p, n[0], alice(), 200, 2 * SEC);
    // The desk's publication (60 s) expires: only the mobile's tuple is left.
    let out = tick(&mut p, 61 * SEC + 1, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    let doc = body(n[0]);
    assert!(!doc.contains("desk") && doc.contains("mobile"), "{doc}");
}

#[test]
fn unsubscribe_gets_a_final_terminated_notify() {
    let mut p = presence_proxy();
    let (n, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let tag = Message::parse(&n).unwrap().from_tag().unwrap().to_string();
    let unsub = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 0\r\n");
    let out = send(&mut p, &unsub, alice(), SEC);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(0));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    answer(&mut p, n[0], alice(), 200, SEC);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    // The dialog is gone: a refresh gets 481.
    let again = resubscribe("sub-alice", 3, &tag, "Event: presence\r\nExpires: 600\r\n");
    let out = send(&mut p, &again, alice(), 2 * SEC);
    assert_eq!(status(&out[0]), Some(481));
}

#[test]
fn expiry_sends_terminated_timeout() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    assert!(notifies(&tick(&mut p, 599 * SEC, &mut NoMedia)).is_empty());
    let out = tick(&mut p, 600 * SEC, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(
        header(n[0], "Subscription-State").as_deref(),
        Some("terminated;reason=timeout")
    );
    answer(&mut p, n[0], alice(), 200, 600 * SEC);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
}

#[test]
fn bad_event_short_expiry_and_unknown_dialog() {
    let mut p = presence_proxy();
    let foo = new_subscribe("alice", "bob", "e1", "Event: foo\r\n");
    let out = send(&mut p, &foo, alice(), 0);
    assert_eq!(status(&out[0]), Some(489));
    assert_eq!(
        header(&out[0], "Allow-Events").as_deref(),
        Some("presence, presence.winfo")
    );
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "e2", 10),
        alice(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(423));
    assert_eq!(header(&out[0], "Min-Expires").as_deref(), Some("60"));
    let stray = request(
        "SUBSCRIBE",
        "sip:127.0.0.1:5060",
        "alice",
        alice(),
        "e3",
        1,
        Some("nosuch"),
        "Event: presence\r\n",
        None,
    );
    let out = send(&mut p, &stray, alice(), 0);
    assert_eq!(status(&out[0]), Some(481));
    // A package a registered phone may serve (dialog) is still routed to it.
    register_bob(&mut p);
    let dialog = new_subscribe("alice", "bob", "e4", "Event: dialog\r\n");
    let out = send(&mut p, &dialog, alice(), 0);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("SUBSCRIBE"))
    );
}

#[test]
fn a_481_or_a_timeout_ends_the_subscription() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "g1", 600),
        alice(),
        0,
    );
    answer(&mut p, notifies(&out)[0], alice(), 481, 10 * MS);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    // carol never answers: Timer F (64·T1) ends it.
    let out = send(
        &mut p,
        &subscribe("carol", carol(), "bob", "g2", 600),
        carol(),
        0,
    );
    assert_eq!(notifies(&out).len(), 1);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    let mut t = 0;
    while t < 40 * SEC {
        t += 500 * MS;
        tick(&mut p, t, &mut NoMedia);
    }
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    assert!(p.presence().unwrap().stats().notifies_failed >= 1);
}

#[test]
fn notify_waits_for_the_previous_one_and_carries_the_latest_state() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "o1", 600),
        alice(),
        0,
    );
    let first = notifies(&out)[0].clone();
    // Unanswered: bob publishes twice; nothing is sent to alice meanwhile.
    let away = pidf("bob", "t", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "", Some(&away), 10 * MS);
    assert_eq!(status(&out[0]), Some(200));
    assert!(notifies(&out).is_empty(), "previous NOTIFY unanswered");
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let busy = pidf("bob", "t", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        300 * MS,
    );
    assert!(notifies(&out).is_empty());
    let out = tick(&mut p, 600 * MS, &mut NoMedia);
    for n in notifies(&out) {
        assert_eq!(n.bytes, first.bytes, "only retransmissions of the first");
    }
    let out = answer(&mut p, &first, alice(), 200, 700 * MS);
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "the newest state once the first is answered");
    assert!(body(n[0]).contains("busy") && !body(n[0]).contains("away"));
    let cseq = |t: &Transmit| msg(t).cseq().unwrap().seq;
    assert_eq!(cseq(n[0]), cseq(&first) + 1);
}

#[test]
fn changes_are_rate_limited_per_presentity() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    watch(&mut p, "carol", carol(), "bob", 0);
    let away = pidf("bob", "t", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "", Some(&away), SEC);
    let n = notifies(&out);
    assert_eq!(n.len(), 2, "every watcher");
    let (na, nc) = (n[0].clone(), n[1].clone());
    answer(&mut p, &na, na.to, 200, SEC);
    answer(&mut p, &nc, nc.to, 200, SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let busy = pidf("bob", "t", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        SEC + 50 * MS,
    );
    assert!(notifies(&out).is_empty(), "within the interval");
    assert!(notifies(&tick(&mut p, SEC + 150 * MS, &mut NoMedia)).is_empty());
    let out = tick(&mut p, SEC + 200 * MS, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|t| body(t).contains("busy")));
}

#[test]
fn subscriptions_are_capped_per_presentity() {
    let mut cfg = presence_config();
    if let Some(p) = cfg.presence.as_mut() {
        p.max_watchers_per_presentity = 2;
    }
    let mut p = proxy_with(cfg);
    watch(&mut p, "alice", alice(), "bob", 0);
    watch(&mut p, "carol", carol(), "bob", 0);
    let out = send(
        &mut p,
        &subscribe("dave", bob2(), "bob", "c3", 600),
        bob2(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(503));
    assert!(header(&out[0], "Retry-After").is_some());
    // Another presentity still has room.
    watch(&mut p, "dave", bob2(), "erin", 0);
}

#[test]
fn foreign_watchers_follow_the_policy() {
    let mut p = presence_proxy();
    let mut foreign = subscribe("mallory", carol(), "bob", "f1", 600);
    let text = String::from_utf8(foreign.clone()).unwrap().replace(
        "<sip:mallory@example.com>;tag",
        "<sip:mallory@elsewhere.net>;tag",
    );
    foreign = text.into_bytes();
    let out = send(&mut p, &foreign, carol(), 0);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(403));
    let mut cfg = presence_config();
    if let Some(pc) = cfg.presence.as_mut() {
        pc.foreign_watchers = rtpanchor::sip::presence::WatcherPolicy::Pending;
    }
    let mut p = proxy_with(cfg);
    let out = send(&mut p, &foreign, carol(), 0);
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("pending"));
    assert!(
        msg(n[0]).body().is_empty(),
        "no state for a pending watcher"
    );
}

#[test]
fn watcher_info_lists_the_watchers_to_the_presentity_only() {
    let mut p = presence_proxy();
    let winfo = new_subscribe(
        "bob",
        "bob",
        "w1",
        "Event: presence.winfo\r\nExpires: 600\r\n",
    );
    let out = send(&mut p, &winfo, bob(), 0);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(out[1].to, bob(), "served by us, not looped to bob's phone");
    assert_eq!(header(&out[1], "Event").as_deref(), Some("presence.winfo"));
    assert_eq!(
        header(&out[1], "Content-Type").as_deref(),
        Some("application/watcherinfo+xml")
    );
    assert!(!body(&out[1]).contains("<watcher "));
    let first = out[1].clone();
    answer(&mut p, &first, bob(), 200, 0);
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "w2", 600),
        alice(),
        SEC,
    );
    let to_bob: Vec<_> = notifies(&out)
        .into_iter()
        .filter(|t| t.to == bob())
        .collect();
    assert_eq!(to_bob.len(), 1);
    let doc = body(to_bob[0]);
    assert!(
        doc.contains("sip:alice@example.com") && doc.contains("status=\"active\""),
        "{doc}"
    );
    assert!(doc.contains("version=\"1\""));
    // alice may not see bob's watchers.
    let nosy = new_subscribe("alice", "bob", "w3", "Event: presence.winfo\r\n");
    let out = send(&mut p, &nosy, alice(), SEC);
    assert_eq!(status(&out[0]), Some(403));
}

fn message(to: &str, call_id: &str, text: &str) -> Vec<u8> {
    request(
        "MESSAGE",
        to,
        "alice",
        alice(),
        call_id,
        1,
        None,
        "Date: Sat, 05 Dec 2026 10:00:00 GMT\r\n",
        Some(("text/plain", text.as_bytes())),
    )
}

#[test]
fn message_to_an_offline_user_is_stored_and_delivered_on_register() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "m1", "are you there?"),
        alice(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(202)));
    let stored = p.presence().unwrap().stored_for("sip:bob@example.com");
    assert_eq!(stored.len(), 1);
    let out = send(&mut p, &bob_register(), bob(), 5 * SEC);
    assert_eq!(status(&out[0]), Some(200));
    let m: Vec<_> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .collect();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].to, bob());
    let d = msg(m[0]);
    assert_eq!(d.request_uri_str(), Some("sip:bob@127.0.0.1:5062"));
    assert_eq!(d.body(), b"are you there?");
    assert!(d.from().unwrap().raw.contains("sip:alice@example.com"));
    assert_eq!(
        header(m[0], "Date").as_deref(),
        Some("Sat, 05 Dec 2026 10:00:00 GMT")
    );
    // Delivered once bob's phone says 200; the store is empty.
    let delivery = m[0].clone();
    answer(&mut p, &delivery, bob(), 200, 5 * SEC);
    assert_eq!(p.presence().unwrap().stats().messages_delivered, 1);
    assert_eq!(p.presence().unwrap().stats().stored_messages, 0);
    // Now online: a MESSAGE is forwarded to his phone as before.
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "m2", "hi"),
        alice(),
        6 * SEC,
    );
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("MESSAGE"))
    );
}

#[test]
fn a_failed_delivery_is_kept_and_the_store_is_bounded() {
    let mut cfg = presence_config();
    if let Some(pc) = cfg.presence.as_mut() {
        pc.messages.max_per_user = 2;
    }
    let mut p = proxy_with(cfg);
    for (i, cid) in ["k1", "k2", "k3"].iter().enumerate() {
        let out = send(
            &mut p,
            &message("sip:bob@example.com", cid, "x"),
            alice(),
            0,
        );
        let want = if i < 2 { 202 } else { 480 };
        assert_eq!(status(&out[0]), Some(want));
    }
    let out = send(&mut p, &bob_register(), bob(), SEC);
    let m: Vec<Transmit> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .cloned()
        .collect();
    assert_eq!(m.len(), 2);
    answer(&mut p, &m[0], bob(), 200, SEC);
    answer(&mut p, &m[1], bob(), 486, SEC);
    assert_eq!(
        p.presence().unwrap().stats().stored_messages,
        1,
        "the refused one is back"
    );
    // Stored messages expire (3 days).
    tick(&mut p, 3 * 24 * 3600 * SEC + 10 * SEC, &mut NoMedia);
    assert_eq!(p.presence().unwrap().stats().stored_messages, 0);
}

#[test]
fn a_large_message_over_udp_gets_513() {
    let mut p = presence_proxy();
    let big = "x".repeat(1400);
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "big", &big),
        alice(),
        0,
    );
    assert_eq!(status(&out[0]), Some(513));
    register_bob(&mut p);
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "big2", &big),
        alice(),
        0,
    );
    assert_eq!(status(&out[0]), Some(513), "bob is reached over UDP");
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "small", "ok"),
        alice(),
        0,
    );
    assert_eq!(method(&out[0]).as_deref(), Some("MESSAGE"));
}

#[test]
fn numbers_tel_uris_and_visual_separators() {
    for presence in [false, true] {
        let cfg = if presence {
            presence_config()
        } else {
            config()
        };
        let mut p = proxy_with(cfg);
        let reg = String::from_utf8(register_bytes(
            "+81-3-1234-5678",
            &["sip:phone@127.0.0.1:5062"],
            "127.0.0.1:5062",
            "rn",
            1,
        ))
        .unwrap()
        .replace("@example.com>", "@example.com;user=phone>");
        let out = send(&mut p, reg.as_bytes(), bob(), 0);
        assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
        for (i, target) in [
            "tel:+81312345678",
            "tel:+81-3-1234-5678",
            "sip:+81.3.1234.5678@example.com;user=phone",
        ]
        .into_iter()
        .enumerate()
        {
            let mut a = Uac::alice(&format!("num{i}")).calling(target);
            let out = send(&mut p, &a.invite(None), alice(), 0);
            let fwd: Vec<_> = out.iter().filter(|t| t.to == bob()).collect();
            assert_eq!(
                fwd.len(),
                1,
                "{target}: {:?}",
                out.iter().map(text).collect::<Vec<_>>()
            );
            assert_eq!(
                msg(fwd[0]).request_uri_str(),
                Some("sip:phone@127.0.0.1:5062")
            );
        }
        let mut a = Uac::alice("nx").calling("tel:+15550100");
        let out = send(&mut p, &a.invite(None), alice(), 0);
        assert_eq!(
            status(out.last().unwrap()),
            Some(404),
            "not ours, no outbound"
        );
    }
    let mut cfg = config();
    cfg.outbound = Some(rtpanchor::sip::transport::NextHop::udp(carol()));
    let mut p = proxy_with(cfg);
    let mut a = Uac::alice("ny").calling("tel:+15550100");
    let out = send(&mut p, &a.invite(None), alice(), 0);
    assert!(out
        .iter()
        .any(|t| t.to == carol() && method(t).as_deref() == Some("INVITE")));
}

#[test]
fn options_lists_exactly_what_is_served() {
    for presence in [false, true] {
        let mut p = proxy_with(if presence {
            presence_config()
        } else {
            config()
        });
        let mut a = Uac::alice("opt").calling("sip:example.com");
        let out = send(&mut p, &a.request("OPTIONS", ""), alice(), 0);
        let allow = header(&out[0], "Allow").unwrap();
        let methods: Vec<&str> = allow.split(", ").collect();
        assert!(!methods.contains(&"NOTIFY"));
        assert_eq!(methods.contains(&"SUBSCRIBE"), presence, "{allow}");
        assert_eq!(methods.contains(&"PUBLISH"), presence, "{allow}");
        assert_eq!(
            header(&out[0], "Allow-Events").as_deref(),
            presence.then_some("presence, presence.winfo")
        );
    }
}

#[test]
fn local_users_authenticate_before_presence_and_messages_are_served() {
    use rtpanchor::sip::auth::{passwd_line, AuthConfig, Authenticator, UserFile};
    use rtpanchor::sip::transport::Transport;
    let users = UserFile::parse(&passwd_line("alice", "example.com", "pw")).unwrap();
    let mut auth = Authenticator::new(AuthConfig::default(), [7; 32], users);
    let mut p = presence_proxy();
    let doc = pidf("alice", "t", "open", None);
    let requests = [
        subscribe("alice", alice(), "bob", "a1", 600),
        request(
            "PUBLISH",
            "sip:alice@example.com",
            "alice",
            alice(),
            "a2",
            1,
            None,
            "Event: presence\r\n",
            Some(("application/pidf+xml", &doc)),
        ),
        message("sip:bob@example.com", "a3", "unauthenticated"),
    ];
    for r in &requests {
        let out = check(p.handle_incoming_with_auth(
            r,
            alice(),
            Transport::Udp,
            0,
            &mut NoMedia,
            Some(&mut auth),
        ));
        assert_eq!(out.len(), 1, "{}", text(&out[0]));
        assert_eq!(status(&out[0]), Some(407), "{}", text(&out[0]));
    }
    let s = p.presence().unwrap().stats();
    assert_eq!(
        (s.subscriptions, s.publications, s.stored_messages),
        (0, 0, 0)
    );
}

#[test]
fn the_final_notify_waits_for_the_unanswered_one() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "u1", 600),
        alice(),
        0,
    );
    let first = notifies(&out)[0].clone();
    let tag = msg(&first).from_tag().unwrap().to_string();
    let out = send(
        &mut p,
        &resubscribe("u1", 2, &tag, "Event: presence\r\nExpires: 0\r\n"),
        alice(),
        100 * MS,
    );
    assert_eq!(status(&out[0]), Some(200));
    assert!(notifies(&out).is_empty(), "the first NOTIFY is unanswered");
    let out = answer(&mut p, &first, alice(), 200, 200 * MS);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    answer(&mut p, n[0], alice(), 200, 300 * MS);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
}

// ---- Persistence: the records a restarted server starts from ----

/// Unix time (ns) at the first server's monotonic zero, and at the second's (it started
/// 50 s later in Unix time; its monotonic clock starts again at 0).
const FIRST_ZERO: u64 = 1_800_000_000 * SEC;
const SECOND_ZERO: u64 = FIRST_ZERO + 50 * SEC;

/// The records of `p` (persistence turned on before anything happened).
fn records(p: &mut Proxy) -> Vec<(String, Option<String>)> {
    let mut r: Vec<_> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .map(|r| (r.key, r.value.map(|(j, _)| j)))
        .collect();
    r.sort();
    r
}

/// A fresh proxy with persistence on and nothing loaded.
fn persisting_proxy() -> Proxy {
    let mut p = presence_proxy();
    let c = p.restore_presence(&[], 0, FIRST_ZERO).unwrap();
    assert_eq!(c, Default::default());
    p
}

#[test]
fn publication_subscription_and_stored_message_survive_a_restart() {
    let mut p = persisting_proxy();
    let (first, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let first = Message::parse(&first).unwrap();
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 3600\r\n", Some(&away), SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let n = notifies(&out);
    answer(&mut p, n[0], alice(), 200, SEC);
    let cseq_before = msg(n[0]).cseq().unwrap().seq;
    let out = send(
        &mut p,
        &message("sip:carol@example.com", "m1", "call me"),
        alice(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(202));
    let saved: Vec<(String, String)> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .filter_map(|r| Some((r.key, r.value?.0)))
        .collect();
    let keys: Vec<&str> = saved.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"presentity:sip:bob@example.com"), "{keys:?}");
    assert!(keys.contains(&"messages:sip:carol@example.com"), "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("subscription:"))
            .count(),
        1
    );

    // The restarted server: its clock starts at 0 again, 50 s of Unix time later.
    let mut q = presence_proxy();
    let c = q.restore_presence(&saved, 0, SECOND_ZERO).unwrap();
    assert_eq!(
        (
            c.publications,
            c.subscriptions,
            c.messages,
            c.expired,
            c.dropped
        ),
        (1, 1, 1, 0, 0)
    );
    // A new watcher sees the publication.
    let (_, doc) = watch(&mut q, "carol", carol(), "bob", SEC);
    assert!(doc.contains("<rpid:away/>"), "{doc}");
    // The old entity tag still matches; the change NOTIFYs alice in her old dialog.
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = send(
        &mut q,
        &publish(
            "bob",
            bob(),
            2,
            &format!("SIP-If-Match: {etag}\r\n"),
            Some(&busy),
        ),
        bob(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    let n: Vec<_> = notifies(&out)
        .into_iter()
        .filter(|t| t.to == alice())
        .collect();
    assert_eq!(n.len(), 1, "alice's restored subscription is NOTIFYed");
    let again = msg(n[0]);
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.from_tag(), first.from_tag());
    assert_eq!(again.to_tag(), first.to_tag());
    assert_eq!(again.cseq().unwrap().seq, cseq_before + 1);
    assert!(body(n[0]).contains("<rpid:busy/>"));
    // alice's refresh in the old dialog is accepted, not 481.
    let tag = first.from_tag().unwrap().to_string();
    let refresh = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 600\r\n");
    answer(&mut q, n[0], alice(), 200, 2 * SEC);
    let out = send(&mut q, &refresh, alice(), 3 * SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    // carol's phone registers: the message arrives with its original Date.
    let reg = register_bytes(
        "carol",
        &["sip:carol@127.0.0.1:5064"],
        "127.0.0.1:5064",
        "rc",
        1,
    );
    let out = send(&mut q, &reg, carol(), 4 * SEC);
    let m: Vec<_> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .collect();
    assert_eq!(m.len(), 1);
    assert_eq!(msg(m[0]).body(), b"call me");
    assert_eq!(
        header(m[0], "Date").as_deref(),
        Some("Sat, 05 Dec 2026 10:00:00 GMT")
    );
}

#[test]
fn records_follow_changes_and_ends() {
    let mut p = persisting_proxy();
    let (n, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, SEC);
    }
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        2 * SEC,
    );
    let etag2 = header(&out[0], "SIP-ETag").unwrap();
    // Two publications between takes: one record, the latest.
    let r = records(&mut p);
    let pres: Vec<_> = r
        .iter()
        .filter(|(k, _)| k.starts_with("presentity:"))
        .collect();
    assert_eq!(pres.len(), 1);
    let json = pres[0].1.as_deref().unwrap();
    assert!(json.contains(&etag2) && !json.contains(&etag), "{json}");
    // Nothing changed: nothing to write.
    assert!(records(&mut p).is_empty());
    // Removal and un-subscribe: the keys are deleted.
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, 2 * SEC);
    }
    let out = publish_bob(
        &mut p,
        3,
        &format!("SIP-If-Match: {etag2}\r\nExpires: 0\r\n"),
        None,
        3 * SEC,
    );
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, 3 * SEC);
    }
    let tag = Message::parse(&n).unwrap().from_tag().unwrap().to_string();
    let unsub = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 0\r\n");
    let out = send(&mut p, &unsub, alice(), 4 * SEC);
    answer(&mut p, notifies(&out)[0], alice(), 200, 4 * SEC);
    let r = records(&mut p);
    assert!(
        r.iter()
            .any(|(k, v)| k == "presentity:sip:bob@example.com" && v.is_none()),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(k, v)| k.starts_with("subscription:") && v.is_none()),
        "{r:?}"
    );
    // A stored message: kept while it is being delivered, deleted once a device took it.
    send(
        &mut p,
        &message("sip:bob@example.com", "m1", "hello"),
        alice(),
        5 * SEC,
    );
    assert!(records(&mut p)
        .iter()
        .any(|(k, v)| k == "messages:sip:bob@example.com" && v.is_some()));
    let out = send(&mut p, &bob_register(), bob(), 6 * SEC);
    let m = out
        .iter()
        .find(|t| method(t).as_deref() == Some("MESSAGE"))
        .unwrap()
        .clone();
    let r = records(&mut p);
    let kept = r
        .iter()
        .find(|(k, _)| k == "messages:sip:bob@example.com")
        .and_then(|(_, v)| v.clone());
    assert!(kept.is_some_and(|j| j.contains("hello")), "{r:?}");
    answer(&mut p, &m, bob(), 200, 6 * SEC);
    let r = records(&mut p);
    assert!(
        r.iter()
            .any(|(k, v)| k == "messages:sip:bob@example.com" && v.is_none()),
        "{r:?}"
    );
}

#[test]
fn expired_and_unreadable_records_are_dropped_at_restore() {
    let mut p = persisting_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    send(
        &mut p,
        &message("sip:carol@example.com", "m1", "late"),
        alice(),
        2 * SEC,
    );
    let mut saved: Vec<(String, String)> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .filter_map(|r| Some((r.key, r.value?.0)))
        .collect();
    saved.push(("presentity:sip:eve@example.com".into(), "{not json".into()));
    saved.push(("subscription:99".into(), "{\"v\":1}".into()));
    // Four days later: the publication (120 s), the subscription (600 s) and the message
    // (3 days) have all expired.
    let mut q = presence_proxy();
    let later = FIRST_ZERO + 4 * 24 * 3600 * SEC;
    let c = q.restore_presence(&saved, 0, later).unwrap();
    assert_eq!((c.publications, c.subscriptions, c.messages), (0, 0, 0));
    assert_eq!((c.expired, c.dropped), (3, 2));
    let (_, doc) = watch(&mut q, "carol", carol(), "bob", SEC);
    assert!(doc.contains("closed") && !doc.contains("away"), "{doc}");
}

#[test]
fn nothing_is_recorded_without_a_store() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    assert!(p.take_presence_records(FIRST_ZERO).is_empty());
}
