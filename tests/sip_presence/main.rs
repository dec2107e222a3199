//! Presence, PUBLISH and store-and-forward MESSAGE through the sans-IO proxy (no sockets):
//! RFC 6665 subscriptions (200 + immediate NOTIFY, refresh, un-subscribe, expiry, 481 and
//! timeouts, NOTIFY ordering, caps), the RFC 3903 compositor (ETags, 412, expiry,
//! composition, rate limit), watcher info, MESSAGE stored for an offline user and delivered
//! on REGISTER, numbers (tel: and visual separators) and a truthful OPTIONS.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
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

mod messages;
mod restart;
mod subscriptions;
