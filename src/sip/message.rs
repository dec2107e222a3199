//! Accessors a proxy needs, the RFC 3261 §8.2 / §16.3 validity checks, datagram
//! classification, and minimal responses built from a request (§8.2.6).
//!
//! [`classify`] is the entry point for a received datagram: it frames it, checks it, and says
//! whether to handle it, answer it with an error status, or drop it (responses that fail
//! parsing and requests without a usable Via are dropped; RFC 4475 §3.1.2.5, §3.1.2.19).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt::Write as _;

use super::header::{
    parse_call_id, parse_contact, parse_cseq, parse_from_to, parse_max_forwards, parse_media_type,
    parse_token_list, CSeq, Contact, MediaType, NameAddr, NameAddrIter, Via, ViaIter,
};
use super::parse::{Header, HeaderName, Message, ParseError, StartLine, MAX_HEADERS};
use super::uri::Uri;

impl<'a> Message<'a> {
    /// The Request-URI as written, for requests.
    pub fn request_uri_str(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request(r) => Some(r.uri),
            StartLine::Response(_) => None,
        }
    }

    /// The parsed Request-URI, for requests.
    pub fn request_uri(&self) -> Option<Result<Uri<'a>, ParseError>> {
        self.request_uri_str()
            .map(|u| Uri::parse(u).map_err(|_| ParseError::BadRequestUri))
    }

    /// The only header of a single-valued kind; `Duplicate` if there are several.
    pub fn single(&self, kind: HeaderName) -> Result<Option<&Header<'a>>, ParseError> {
        let mut it = self.headers_of(kind);
        let first = it.next();
        if it.next().is_some() {
            return Err(ParseError::Duplicate(kind));
        }
        Ok(first)
    }

    fn required(&self, kind: HeaderName) -> Result<&'a str, ParseError> {
        self.single(kind)?
            .map(|h| h.value)
            .ok_or(ParseError::Missing(kind))
    }

    /// Every via-parm of every Via header, top first, with the index of its header.
    pub fn vias(&self) -> impl Iterator<Item = Result<(usize, Via<'a>), ParseError>> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.kind == HeaderName::Via)
            .flat_map(|(i, h)| {
                ViaIter::new(h.value).map(move |r| {
                    r.map(|v| (i, v))
                        .map_err(|_| ParseError::Malformed(HeaderName::Via))
                })
            })
    }

    /// The topmost via-parm.
    pub fn top_via(&self) -> Result<Via<'a>, ParseError> {
        let h = self
            .header(HeaderName::Via)
            .ok_or(ParseError::Missing(HeaderName::Via))?;
        match ViaIter::new(h.value).next() {
            Some(Ok(v)) => Ok(v),
            _ => Err(ParseError::Malformed(HeaderName::Via)),
        }
    }

    pub fn call_id(&self) -> Result<&'a str, ParseError> {
        parse_call_id(self.required(HeaderName::CallId)?)
            .map_err(|_| ParseError::Malformed(HeaderName::CallId))
    }

    pub fn cseq(&self) -> Result<CSeq<'a>, ParseError> {
        parse_cseq(self.required(HeaderName::CSeq)?)
            .map_err(|_| ParseError::Malformed(HeaderName::CSeq))
    }

    pub fn from(&self) -> Result<NameAddr<'a>, ParseError> {
        parse_from_to(self.required(HeaderName::From)?)
            .map_err(|_| ParseError::Malformed(HeaderName::From))
    }

    pub fn to(&self) -> Result<NameAddr<'a>, ParseError> {
        parse_from_to(self.required(HeaderName::To)?)
            .map_err(|_| ParseError::Malformed(HeaderName::To))
    }

    pub fn from_tag(&self) -> Option<&'a str> {
        self.from().ok().and_then(|f| f.tag())
    }

    pub fn to_tag(&self) -> Option<&'a str> {
        self.to().ok().and_then(|t| t.tag())
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.single(HeaderName::MaxForwards)?
            .map(|h| {
                parse_max_forwards(h.value)
                    .map_err(|_| ParseError::Malformed(HeaderName::MaxForwards))
            })
            .transpose()
    }

    /// The Expires header, if present. Values above 2^32-1 are clamped to it.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::Expires)?
            .map(|h| {
                if h.value.is_empty() || !h.value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::Malformed(HeaderName::Expires));
                }
                Ok(super::lex::parse_u64(h.value)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(u32::MAX))
            })
            .transpose()
    }

    /// All Contact values across Contact headers; `Contact: *` alone yields `Star`.
    pub fn contacts(&self) -> Result<Contact<'a>, ParseError> {
        let mut list = Vec::new();
        let mut star = false;
        let mut n = 0;
        for h in self.headers_of(HeaderName::Contact) {
            n += 1;
            match parse_contact(h.value).map_err(|_| ParseError::Malformed(HeaderName::Contact))? {
                Contact::Star => star = true,
                Contact::List(l) => list.extend(l),
            }
        }
        if star {
            // `*` must stand alone (RFC 3261 §10.2.2).
            return if n == 1 {
                Ok(Contact::Star)
            } else {
                Err(ParseError::Malformed(HeaderName::Contact))
            };
        }
        Ok(Contact::List(list))
    }

    /// Route (or Record-Route) entries in order.
    pub fn route_set(&self, kind: HeaderName) -> Result<Vec<NameAddr<'a>>, ParseError> {
        let mut out = Vec::new();
        for h in self.headers_of(kind) {
            for r in NameAddrIter::new(h.value) {
                out.push(r.map_err(|_| ParseError::Malformed(kind))?);
            }
        }
        Ok(out)
    }

    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, ParseError> {
        self.single(HeaderName::ContentType)?
            .map(|h| {
                parse_media_type(h.value)
                    .map_err(|_| ParseError::Malformed(HeaderName::ContentType))
            })
            .transpose()
    }

    /// Option tags of all headers of `kind` (Require, Proxy-Require, Supported...).
    pub fn option_tags(&self, kind: HeaderName) -> Result<Vec<&'a str>, ParseError> {
        let mut out = Vec::new();
        for h in self.headers_of(kind) {
            out.extend(parse_token_list(h.value).map_err(|_| ParseError::Malformed(kind))?);
        }
        Ok(out)
    }
}

/// A request the proxy must answer with an error instead of handling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection<'a> {
    pub status: u16,
    pub reason: &'static str,
    /// For 420: the option tags to list in `Unsupported`.
    pub unsupported: Vec<&'a str>,
}

impl From<ParseError> for Rejection<'_> {
    fn from(e: ParseError) -> Self {
        Rejection {
            status: e.status(),
            reason: e.reason_phrase(),
            unsupported: Vec::new(),
        }
    }
}

/// What the element supports, for [`check_request_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions<'o> {
    /// Option tags accepted in Proxy-Require (RFC 3261 §16.3 item 5).
    pub proxy_options: &'o [&'o str],
}

const SINGLE_VALUED: [HeaderName; 8] = [
    HeaderName::To,
    HeaderName::From,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentType,
    HeaderName::Expires,
    HeaderName::MinExpires,
];

/// Checks shared by requests and responses: mandatory headers present once and well formed.
fn check_common<'a>(msg: &Message<'a>) -> Result<CSeq<'a>, ParseError> {
    for kind in [
        HeaderName::To,
        HeaderName::From,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::Via,
    ] {
        if msg.header(kind).is_none() {
            return Err(ParseError::Missing(kind));
        }
    }
    for kind in SINGLE_VALUED {
        msg.single(kind)?;
    }
    let cseq = msg.cseq()?;
    msg.call_id()?;
    msg.from()?;
    msg.to()?;
    for v in msg.vias() {
        v?;
    }
    Ok(cseq)
}

/// [`check_request_with`] for an element that supports no Proxy-Require extensions.
pub fn check_request<'a>(msg: &Message<'a>) -> Result<(), Rejection<'a>> {
    check_request_with(msg, &CheckOptions::default())
}

/// The validity checks of RFC 3261 §16.3 (and §8.2 where a proxy shares them), in the
/// RFC's order: syntax (400), URI scheme (416), Max-Forwards (483), Proxy-Require (420).
/// A Max-Forwards of 0 on an OPTIONS addressed to this element may instead be answered by it
/// (§16.3 item 3); that needs routing knowledge and is left to the caller.
pub fn check_request_with<'a>(
    msg: &Message<'a>,
    opts: &CheckOptions<'_>,
) -> Result<(), Rejection<'a>> {
    let StartLine::Request(rl) = msg.start else {
        return Err(ParseError::BadRequestLine.into());
    };
    let cseq = check_common(msg)?;
    if cseq.method != rl.method {
        return Err(ParseError::CSeqMethodMismatch.into());
    }
    let mf = msg.max_forwards()?;
    msg.expires()?;
    msg.contacts()?;
    msg.route_set(HeaderName::Route)?;
    msg.route_set(HeaderName::RecordRoute)?;
    msg.content_type()?;
    msg.option_tags(HeaderName::Require)?;
    let proxy_require = msg.option_tags(HeaderName::ProxyRequire)?;

    let uri = Uri::parse(rl.uri).map_err(|_| ParseError::BadRequestUri)?;
    match uri {
        Uri::Sip(u) if u.headers.is_some() => return Err(ParseError::RequestUriHeaders.into()),
        Uri::Sip(_) | Uri::Tel(_) => {}
        Uri::Other { .. } => {
            return Err(Rejection {
                status: 416,
                reason: "Unsupported URI Scheme",
                unsupported: Vec::new(),
            })
        }
    }
    if mf == Some(0) {
        return Err(Rejection {
            status: 483,
            reason: "Too Many Hops",
            unsupported: Vec::new(),
        });
    }
    let unsupported: Vec<&str> = proxy_require
        .into_iter()
        .filter(|t| !opts.proxy_options.iter().any(|o| o.eq_ignore_ascii_case(t)))
        .collect();
    if !unsupported.is_empty() {
        return Err(Rejection {
            status: 420,
            reason: "Bad Extension",
            unsupported,
        });
    }
    Ok(())
}

/// Checks a response before it is forwarded: the headers that route and match it must be
/// present and well formed. A failing response is dropped, never answered.
pub fn check_response(msg: &Message<'_>) -> Result<(), ParseError> {
    if msg.is_request() {
        return Err(ParseError::BadStatusLine);
    }
    check_common(msg).map(|_| ())
}

/// The header values needed to answer a request (RFC 3261 §8.2.6.2), as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyContext<'a> {
    pub vias: Vec<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub cseq: Option<&'a str>,
}

impl<'a> ReplyContext<'a> {
    pub fn from_message(msg: &Message<'a>) -> Self {
        let first = |k| msg.header(k).map(|h| h.value);
        ReplyContext {
            vias: msg.headers_of(HeaderName::Via).map(|h| h.value).collect(),
            from: first(HeaderName::From),
            to: first(HeaderName::To),
            call_id: first(HeaderName::CallId),
            cseq: first(HeaderName::CSeq),
        }
    }

    /// Best-effort scan of a message that failed to parse: reads `name: value` lines after
    /// the first line, skipping anything odd. Used only to address an error response.
    pub fn salvage(buf: &'a [u8]) -> Self {
        let mut ctx = ReplyContext::default();
        let mut i = 0;
        while buf.get(i..i + 2) == Some(b"\r\n") {
            i += 2;
        }
        let next_line = |from: usize| -> Option<usize> {
            let mut j = from;
            loop {
                let nl = j + buf.get(j..)?.iter().position(|&c| c == b'\n')?;
                j = nl + 1;
                if !matches!(buf.get(j), Some(b' ' | b'\t')) {
                    return Some(j);
                }
            }
        };
        let Some(mut pos) = next_line(i) else {
            return ctx;
        };
        for _ in 0..MAX_HEADERS {
            let Some(end) = next_line(pos) else { break };
            let line = &buf[pos..end];
            pos = end;
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t', '\r', '\n']);
            match HeaderName::from_name(name.trim_end_matches([' ', '\t'])) {
                HeaderName::Via => ctx.vias.push(value),
                HeaderName::From => {
                    ctx.from.get_or_insert(value);
                }
                HeaderName::To => {
                    ctx.to.get_or_insert(value);
                }
                HeaderName::CallId => {
                    ctx.call_id.get_or_insert(value);
                }
                HeaderName::CSeq => {
                    ctx.cseq.get_or_insert(value);
                }
                _ => {}
            }
        }
        ctx
    }
}

/// Builds a response to the request described by `ctx` (RFC 3261 §8.2.6): Via, From, To,
/// Call-ID and CSeq copied; `to_tag` added to To unless it has one (never for 100);
/// `extra` headers appended; no body.
pub fn build_response(
    ctx: &ReplyContext<'_>,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
    for v in &ctx.vias {
        let _ = write!(s, "Via: {v}\r\n");
    }
    if let Some(f) = ctx.from {
        let _ = write!(s, "From: {f}\r\n");
    }
    if let Some(t) = ctx.to {
        let has_tag = parse_from_to(t).ok().and_then(|n| n.tag()).is_some();
        match to_tag {
            Some(tag) if !has_tag && status > 100 => {
                let _ = write!(s, "To: {t};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(s, "To: {t}\r\n");
            }
        }
    }
    if let Some(c) = ctx.call_id {
        let _ = write!(s, "Call-ID: {c}\r\n");
    }
    if let Some(c) = ctx.cseq {
        let _ = write!(s, "CSeq: {c}\r\n");
    }
    for (n, v) in extra {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

impl Rejection<'_> {
    /// The response for this rejection, with `Unsupported` for a 420.
    pub fn response(&self, ctx: &ReplyContext<'_>, to_tag: Option<&str>) -> Vec<u8> {
        let list = self.unsupported.join(", ");
        let extra: &[(&str, &str)] = if self.status == 420 {
            &[("Unsupported", &list)]
        } else {
            &[]
        };
        build_response(ctx, self.status, self.reason, to_tag, extra)
    }
}

/// What to do with a received datagram.
#[derive(Debug)]
pub enum Disposition<'a> {
    /// A request that passed [`check_request`].
    Request(Message<'a>),
    /// A response that passed [`check_response`].
    Response(Message<'a>),
    /// Answer with `rejection` (e.g. [`Rejection::response`]) using `reply`.
    Reject {
        rejection: Rejection<'a>,
        reply: ReplyContext<'a>,
    },
    /// Discard (and count): a bad response, or a request that cannot be answered.
    Drop(ParseError),
}

fn looks_like_response(buf: &[u8]) -> bool {
    let mut i = 0;
    while buf.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    buf.get(i..i + 4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

/// Frames and checks one datagram (see the module docs).
pub fn classify(datagram: &[u8]) -> Disposition<'_> {
    classify_with(datagram, &CheckOptions::default())
}

pub fn classify_with<'a>(datagram: &'a [u8], opts: &CheckOptions<'_>) -> Disposition<'a> {
    match Message::parse(datagram) {
        Ok(msg) if msg.is_request() => match check_request_with(&msg, opts) {
            Ok(()) => Disposition::Request(msg),
            Err(rejection) => {
                let reply = ReplyContext::from_message(&msg);
                if reply.vias.is_empty() {
                    Disposition::Drop(ParseError::Missing(HeaderName::Via))
                } else {
                    Disposition::Reject { rejection, reply }
                }
            }
        },
        Ok(msg) => match check_response(&msg) {
            Ok(()) => Disposition::Response(msg),
            Err(e) => Disposition::Drop(e),
        },
        Err(e) => {
            if e == ParseError::Empty || looks_like_response(datagram) {
                return Disposition::Drop(e);
            }
            let reply = ReplyContext::salvage(datagram);
            if reply.vias.is_empty() {
                Disposition::Drop(e)
            } else {
                Disposition::Reject {
                    rejection: e.into(),
                    reply,
                }
            }
        }
    }
}

/// Whether a response may be sent to this address taken from a Via: never to the
/// unspecified or the limited-broadcast address (RFC 4475 §3.1.4.10).
pub fn is_sendable_destination(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
        std::net::IpAddr::V6(a) => !a.is_unspecified(),
    }
}
