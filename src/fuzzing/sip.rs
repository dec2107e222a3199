//! SIP targets: the message parser with its header and URI accessors, and the sans-IO
//! proxy fed a sequence of messages and timeouts on a fixed clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::input::split;
use crate::sip::header::Rport;
use crate::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult};
use crate::sip::message::{check_request, check_response, ReplyContext};
use crate::sip::parse::{frame, Frame, Framing};
use crate::sip::proxy::{Proxy, ProxyConfig};
use crate::sip::transport::{Transmit, Transport};
use crate::sip::uri::{SipUri, TelUri, Uri};
use crate::sip::{HeaderName, Message};

/// Parses `data` as a datagram and as a stream, and runs every accessor on what parses.
///
/// Invariants: parsing is deterministic (the bytes a message keeps parse again to the same
/// start line and header count); no parsed Via or SIP URI names port 0 or `rport=0` (a
/// reply must never go there); a request that fails the proxy's checks gets a rejection
/// whose response parses with that status; stream framing never reports a message longer
/// than the buffer.
pub fn message(data: &[u8]) {
    match frame(data) {
        Ok(Frame::Message { len }) => {
            assert!(len <= data.len(), "frame {len} beyond {}", data.len());
            if let Some(head) = data.get(..len) {
                let _ = Message::parse_with(head, Framing::Stream).map(|m| accessors(&m));
            }
        }
        Ok(Frame::KeepAlive(n)) => assert!(n <= data.len()),
        Ok(Frame::Incomplete) | Err(_) => {}
    }
    let msg = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            // Salvaging an unparseable request for a reply must not fail either.
            let ctx = ReplyContext::salvage(data);
            let reply =
                crate::sip::message::build_response(&ctx, e.status(), e.reason_phrase(), None, &[]);
            assert!(!reply.is_empty());
            return;
        }
    };
    let again = Message::parse(msg.as_bytes()).map(|m| (m.method(), m.status()));
    assert_eq!(again, Ok((msg.method(), msg.status())), "reparse differs");
    accessors(&msg);
}

fn accessors(msg: &Message<'_>) {
    if let Some(Ok(uri)) = msg.request_uri() {
        uri_checks(&uri);
    }
    if let Some(raw) = msg.request_uri_str() {
        let _ = TelUri::parse(raw);
    }
    for via in msg.vias().flatten() {
        let (_, via) = via;
        assert_ne!(via.port, Some(0), "Via port 0 accepted: {}", via.raw);
        assert_ne!(via.rport, Rport::Port(0), "rport=0 accepted: {}", via.raw);
        let _ = via.has_rfc3261_branch();
        let _ = via.host.to_string();
    }
    let _ = msg.top_via();
    let _ = msg.call_id();
    let _ = msg.cseq();
    for na in [msg.from(), msg.to()].into_iter().flatten() {
        let _ = na.display_name_text();
        let _ = na.tag();
        let _ = na.expires();
        if let Some(u) = na.sip_uri() {
            sip_uri_checks(u);
        }
    }
    let _ = (msg.from_tag(), msg.to_tag());
    let _ = msg.max_forwards();
    let _ = msg.expires();
    if let Ok(crate::sip::header::Contact::List(list)) = msg.contacts() {
        for c in list {
            let _ = c.expires();
            let _ = c.param("q");
        }
    }
    for kind in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        for na in msg.route_set(kind).into_iter().flatten() {
            if let Some(u) = na.sip_uri() {
                sip_uri_checks(u);
            }
        }
    }
    let _ = msg.content_type();
    for kind in [
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Supported,
    ] {
        let _ = msg.option_tags(kind);
    }
    for &kind in HeaderName::ALL {
        for h in msg.headers_of(kind) {
            let _ = h.value_unfolded();
            let bytes = msg.as_bytes();
            assert!(h.line_range().end <= bytes.len() && h.value_range().end <= bytes.len());
        }
    }
    let ctx = ReplyContext::from_message(msg);
    if msg.is_request() {
        if let Err(rej) = check_request(msg) {
            let reply = rej.response(&ctx, Some("fz"));
            let parsed = Message::parse(&reply).map(|m| m.status());
            assert_eq!(
                parsed,
                Ok(Some(rej.status)),
                "rejection does not parse: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    } else {
        let _ = check_response(msg);
    }
}

fn uri_checks(uri: &Uri<'_>) {
    let _ = uri.as_str();
    let _ = uri.has_headers();
    if let Some(u) = uri.as_sip() {
        sip_uri_checks(u);
    }
}

fn sip_uri_checks(u: &SipUri<'_>) {
    assert_ne!(u.port, Some(0), "URI port 0 accepted: {}", u.raw);
    let _ = u.user_decoded();
    let _ = u.params().count();
    let _ = (u.transport(), u.maddr(), u.lr(), u.port_or_default());
    let _ = u.headers().count();
    let _ = u.host.ip();
    // The URI as written parses again to the same thing.
    assert_eq!(SipUri::parse(u.raw).ok().as_ref(), Some(u), "{}", u.raw);
}

/// Separates the messages of one `sip_proxy` input (never inside the seed messages).
pub const PROXY_SEPARATOR: &[u8] = b"\n%%\n";

/// Most messages one input feeds the proxy.
const MAX_STEPS: usize = 64;

/// The proxy's listen address and the peers a message may come from.
fn peer(i: u8) -> SocketAddr {
    let port = match i & 3 {
        0 => 5061,
        1 => 5062,
        2 => 5063,
        _ => 5070,
    };
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Answers every offer and answer with a fixed relay SDP, as the session layer would.
struct FixedMedia;

impl MediaHook for FixedMedia {
    fn media(&mut self, ctx: &MediaCtx<'_>, _body: &[u8], _now: u64) -> MediaResult {
        let sdp = |port: u16| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\n\
                 t=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            )
            .into_bytes()
        };
        match ctx.op {
            MediaOp::Offer => MediaResult::NewBody(sdp(40000)),
            MediaOp::Answer => MediaResult::NewBody(sdp(40002)),
            MediaOp::Delete => MediaResult::Unchanged,
        }
    }
}

/// Feeds the proxy the messages of `data` (split at [`PROXY_SEPARATOR`]). The first byte
/// of each part is a control byte: bits 0-1 pick the source, bit 2 TCP, bits 3-7 advance
/// the clock by that many 100 ms first (firing the timers then due). After the last message
/// the clock runs on for 5 minutes, firing every timer.
///
/// Invariants: everything sent parses as SIP (or is a CRLF keep-alive pong) and goes to a
/// sendable address, never port 0 or an unspecified address; after `handle_timeout(now)`
/// nothing is due at or before `now` (else the server would spin).
pub fn proxy(data: &[u8]) {
    let mut cfg = ProxyConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060));
    cfg.domains = vec!["example.com".to_string()];
    let mut p: Proxy = Proxy::new(cfg, Default::default());
    let mut media = FixedMedia;
    let mut now: u64 = 1_000_000_000;
    for part in split(data, PROXY_SEPARATOR, MAX_STEPS) {
        let Some((&ctl, msg)) = part.split_first() else {
            continue;
        };
        let advance = u64::from(ctl >> 3) * 100_000_000;
        if advance > 0 {
            now += advance;
            fire(&mut p, now, &mut media);
        }
        let transport = if ctl & 4 != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let out = p.handle_incoming(msg, peer(ctl), transport, now, &mut media);
        check_out(&out);
    }
    let end = now + 300_000_000_000;
    for _ in 0..10_000 {
        match p.poll_timeout() {
            Some(t) if t <= end => {
                now = now.max(t);
                fire(&mut p, now, &mut media);
            }
            _ => break,
        }
    }
}

fn fire(p: &mut Proxy, now: u64, media: &mut FixedMedia) {
    let out = p.handle_timeout(now, media);
    check_out(&out);
    if let Some(next) = p.poll_timeout() {
        assert!(next > now, "timer due at {next} still pending at {now}");
    }
}

fn check_out(out: &[Transmit]) {
    for t in out {
        assert!(
            t.to.port() != 0 && !t.to.ip().is_unspecified(),
            "sent to {}: {}",
            t.to,
            String::from_utf8_lossy(&t.bytes)
        );
        if t.bytes == b"\r\n" {
            continue;
        }
        let framing = match t.transport {
            Transport::Udp => Framing::Datagram,
            Transport::Tcp | Transport::Tls => Framing::Stream,
        };
        if let Err(e) = Message::parse_with(&t.bytes, framing) {
            panic!(
                "unparseable output {e:?}:\n{}",
                String::from_utf8_lossy(&t.bytes)
            );
        }
    }
}
