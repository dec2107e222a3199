//! Line splitter and the interpreters for the line types the relay needs.
//!
//! One pass over the input: each line is classified, the few we interpret are parsed, and
//! the byte span of every line (plus the span a rewrite would replace) is recorded.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    Connection, Direction, Media, Origin, Sdp, SdpError, MAX_LINES, MAX_MEDIA, MAX_SDP_LEN,
};

/// What a line is, as far as rewriting cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Blank,
    Version,
    Origin,
    SessionName,
    Info,
    /// A `c=` line and its address.
    Connection(IpAddr),
    Media,
    Rtcp,
    RtcpMux,
    Direction,
    Ice,
    Other,
}

/// One line: `raw[start..content_end]` is the text, `raw[content_end..end]` its ending
/// (`\r\n`, `\n` or nothing for a final unterminated line). `edit` is the absolute span a
/// rewrite replaces (`o=`/`c=`: address type and address; `m=`: port digits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub start: u32,
    pub content_end: u32,
    pub end: u32,
    pub kind: Kind,
    pub edit: (u32, u32),
}

/// Whitespace-separated tokens with their byte offsets (SP and HTAB; runs tolerated).
#[derive(Clone)]
struct Tokens<'s> {
    s: &'s str,
    pos: usize,
}

impl<'s> Iterator for Tokens<'s> {
    type Item = (usize, &'s str);
    fn next(&mut self) -> Option<(usize, &'s str)> {
        let b = self.s.as_bytes();
        while self.pos < b.len() && is_ws(b[self.pos]) {
            self.pos += 1;
        }
        if self.pos >= b.len() {
            return None;
        }
        let start = self.pos;
        while self.pos < b.len() && !is_ws(b[self.pos]) {
            self.pos += 1;
        }
        // Both ends sit on ASCII boundaries, so the slice cannot split a UTF-8 sequence.
        self.s.get(start..self.pos).map(|t| (start, t))
    }
}

fn tokens(s: &str) -> Tokens<'_> {
    Tokens { s, pos: 0 }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ws(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ws(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ws(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Decimal digits only (no sign, no blanks), at most 5 of them, fitting in u16.
pub(crate) fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `IN IP4 <addr>` / `IN IP6 <addr>` from a token iterator. Returns the address and the span
/// (relative to the tokenised string) from the address type to the end of the address token.
fn parse_net_addr<'s>(
    toks: &mut impl Iterator<Item = (usize, &'s str)>,
    allow_suffix: bool,
) -> Option<(IpAddr, (usize, usize))> {
    let (_, nettype) = toks.next()?;
    let (at_off, addrtype) = toks.next()?;
    let (addr_off, addr_tok) = toks.next()?;
    if !nettype.eq_ignore_ascii_case("IN") {
        return None;
    }
    let (addr_text, suffix) = match addr_tok.split_once('/') {
        Some((a, s)) => (a, Some(s)),
        None => (addr_tok, None),
    };
    if let Some(suffix) = suffix {
        // TTL and/or count (RFC 8866 §5.7): one or two decimal numbers.
        let ok = allow_suffix
            && suffix.split('/').count() <= 2
            && suffix.split('/').all(|n| parse_u32(n).is_some());
        if !ok {
            return None;
        }
    }
    let addr = if addrtype.eq_ignore_ascii_case("IP4") {
        IpAddr::V4(addr_text.parse::<Ipv4Addr>().ok()?)
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        IpAddr::V6(addr_text.parse::<Ipv6Addr>().ok()?)
    } else {
        return None;
    };
    Some((addr, (at_off, addr_off + addr_tok.len())))
}

fn to_str(b: &[u8], line: usize) -> Result<&str, SdpError> {
    std::str::from_utf8(b).map_err(|_| SdpError::NonUtf8 { line })
}

/// Known attribute names we act on.
#[derive(Clone, Copy)]
enum Attr {
    Rtcp,
    RtcpMux,
    Dir(Direction),
    Rtpmap,
    Ice,
    Crypto,
    Fingerprint,
    Label,
    Mid,
    Unknown,
}

fn classify_attr(name: &[u8]) -> Attr {
    const ICE: [&str; 7] = [
        "candidate",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "end-of-candidates",
        "remote-candidates",
    ];
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    if let Some(d) = Direction::from_name(name) {
        return Attr::Dir(d);
    }
    if eq("rtcp") {
        Attr::Rtcp
    } else if eq("rtcp-mux") {
        Attr::RtcpMux
    } else if eq("rtpmap") {
        Attr::Rtpmap
    } else if eq("crypto") {
        Attr::Crypto
    } else if eq("fingerprint") {
        Attr::Fingerprint
    } else if eq("label") {
        Attr::Label
    } else if eq("mid") {
        Attr::Mid
    } else if ICE.iter().any(|s| eq(s)) {
        Attr::Ice
    } else {
        Attr::Unknown
    }
}

/// Per-body state while parsing.
struct Parser<'a> {
    sdp: Sdp<'a>,
    session_ice: bool,
    session_fingerprint: bool,
}

pub(crate) fn parse(input: &[u8]) -> Result<Sdp<'_>, SdpError> {
    if input.is_empty() {
        return Err(SdpError::Empty);
    }
    if input.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge {
            len: input.len(),
            limit: MAX_SDP_LEN,
        });
    }
    let mut p = Parser {
        sdp: Sdp {
            origin: None,
            session_connection: None,
            session_direction: None,
            media: Vec::new(),
            raw: input,
            // A typical SDP line is 20-30 bytes.
            lines: Vec::with_capacity(input.len() / 20 + 2),
            media_lines: Vec::new(),
        },
        session_ice: false,
        session_fingerprint: false,
    };
    let mut pos = 0usize;
    let mut lineno = 0usize;
    while pos < input.len() {
        lineno += 1;
        if lineno > MAX_LINES {
            return Err(SdpError::TooManyLines { limit: MAX_LINES });
        }
        let rest = &input[pos..];
        let (clen, eol) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && rest[i - 1] == b'\r' => (i - 1, 2),
            Some(i) => (i, 1),
            // A body cut after the CR of its last CRLF: that CR ends the line, it is not
            // content (a value of only blanks before it would otherwise pass as "\r", and
            // turn empty once a line is inserted after it).
            None if rest.last() == Some(&b'\r') => (rest.len() - 1, 1),
            None => (rest.len(), 0),
        };
        let content = &rest[..clen];
        let (kind, edit) = p.line(content, lineno)?;
        // input.len() <= 64 KiB, so every offset fits in u32.
        let start = pos as u32;
        p.sdp.lines.push(Line {
            start,
            content_end: start + clen as u32,
            end: start + (clen + eol) as u32,
            kind,
            edit: (start + edit.0 as u32, start + edit.1 as u32),
        });
        if kind == Kind::Media {
            p.sdp.media_lines.push((p.sdp.lines.len() - 1) as u32);
        }
        pos += clen + eol;
    }
    let Parser {
        mut sdp,
        session_ice,
        session_fingerprint,
    } = p;
    let session_dir = sdp.session_direction;
    for m in &mut sdp.media {
        m.has_ice |= session_ice;
        m.has_fingerprint |= session_fingerprint;
        m.effective_direction = m.direction.or(session_dir).unwrap_or(Direction::SendRecv);
    }
    Ok(sdp)
}

impl<'a> Parser<'a> {
    /// Classify and interpret one line (without its ending). Returns its kind and the edit
    /// span relative to the line start.
    fn line(
        &mut self,
        content: &'a [u8],
        lineno: usize,
    ) -> Result<(Kind, (usize, usize)), SdpError> {
        const NO_EDIT: (usize, usize) = (0, 0);
        if lineno == 1 {
            // RFC 8866 §5: the body starts with v=0.
            if content.len() < 2 || &content[..2] != b"v=" || trim_ws(&content[2..]) != b"0" {
                return Err(SdpError::MissingVersion);
            }
            return Ok((Kind::Version, NO_EDIT));
        }
        if content.is_empty() {
            return Ok((Kind::Blank, NO_EDIT));
        }
        if content.len() < 2 || content[1] != b'=' || !content[0].is_ascii_alphabetic() {
            return Err(SdpError::MalformedLine { line: lineno });
        }
        let in_media = !self.sdp.media.is_empty();
        match content[0] {
            b'v' => Err(SdpError::Unexpected {
                line: lineno,
                what: "v=",
            }),
            b'o' => {
                if in_media || self.sdp.origin.is_some() {
                    return Err(SdpError::Unexpected {
                        line: lineno,
                        what: "o=",
                    });
                }
                let text = to_str(content, lineno)?;
                let (origin, edit) =
                    parse_origin(text).ok_or(SdpError::BadOrigin { line: lineno })?;
                self.sdp.origin = Some(origin);
                Ok((Kind::Origin, edit))
            }
            b's' if !in_media => Ok((Kind::SessionName, NO_EDIT)),
            b'i' => Ok((Kind::Info, NO_EDIT)),
            b'c' => {
                let text = to_str(content, lineno)?;
                let mut toks = tokens(&text[2..]);
                let (addr, (s, e)) = parse_net_addr(&mut toks, true)
                    .filter(|_| toks.next().is_none())
                    .ok_or(SdpError::BadConnection { line: lineno })?;
                let conn = Connection { addr };
                match self.sdp.media.last_mut() {
                    Some(m) => {
                        m.connection.get_or_insert(conn);
                    }
                    None => {
                        self.sdp.session_connection.get_or_insert(conn);
                    }
                }
                Ok((Kind::Connection(addr), (s + 2, e + 2)))
            }
            b'm' => {
                if self.sdp.media.len() >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia { limit: MAX_MEDIA });
                }
                let text = to_str(content, lineno)?;
                let (media, edit) =
                    parse_media(&text[2..]).ok_or(SdpError::BadMedia { line: lineno })?;
                self.sdp.media.push(media);
                Ok((Kind::Media, (edit.0 + 2, edit.1 + 2)))
            }
            b'a' => self.attribute(&content[2..], lineno).map(|k| (k, NO_EDIT)),
            _ => Ok((Kind::Other, NO_EDIT)),
        }
    }

    fn attribute(&mut self, body: &'a [u8], lineno: usize) -> Result<Kind, SdpError> {
        let (name, value) = match body.iter().position(|&b| b == b':') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (trim_ws(body), &body[body.len()..]),
        };
        let attr = classify_attr(name);
        let value_str = |attr_name: &'static str| -> Result<&'a str, SdpError> {
            let v = to_str(trim_ws(value), lineno)?;
            if v.is_empty() {
                return Err(SdpError::BadAttribute {
                    line: lineno,
                    attr: attr_name,
                });
            }
            Ok(v)
        };
        let Some(m) = self.sdp.media.last_mut() else {
            // Session level: only direction, ICE and fingerprint matter here.
            return Ok(match attr {
                Attr::Dir(d) => {
                    self.sdp.session_direction.get_or_insert(d);
                    Kind::Direction
                }
                Attr::Ice => {
                    self.session_ice = true;
                    Kind::Ice
                }
                Attr::Fingerprint => {
                    self.session_fingerprint = true;
                    Kind::Other
                }
                _ => Kind::Other,
            });
        };
        Ok(match attr {
            Attr::Rtcp => {
                let v = value_str("rtcp")?;
                let rtcp = parse_rtcp(v).ok_or(SdpError::BadAttribute {
                    line: lineno,
                    attr: "rtcp",
                })?;
                m.rtcp.get_or_insert(rtcp);
                Kind::Rtcp
            }
            Attr::RtcpMux => {
                m.rtcp_mux = true;
                Kind::RtcpMux
            }
            Attr::Dir(d) => {
                m.direction.get_or_insert(d);
                Kind::Direction
            }
            Attr::Rtpmap => {
                let v = value_str("rtpmap")?;
                let entry = parse_rtpmap(v).ok_or(SdpError::BadAttribute {
                    line: lineno,
                    attr: "rtpmap",
                })?;
                m.rtpmap.push(entry);
                Kind::Other
            }
            Attr::Ice => {
                m.has_ice = true;
                Kind::Ice
            }
            Attr::Crypto => {
                m.has_crypto = true;
                Kind::Other
            }
            Attr::Fingerprint => {
                m.has_fingerprint = true;
                Kind::Other
            }
            Attr::Label => {
                let v = value_str("label")?;
                m.label.get_or_insert(v);
                Kind::Other
            }
            Attr::Mid => {
                let v = value_str("mid")?;
                m.mid.get_or_insert(v);
                Kind::Other
            }
            Attr::Unknown => Kind::Other,
        })
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <addr>`, fields taken from the
/// end so a username with spaces still parses. Edit span: addrtype..end of addr.
fn parse_origin(text: &str) -> Option<(Origin<'_>, (usize, usize))> {
    let body = text.get(2..)?;
    let mut toks: [(usize, &str); 6] = [(0, ""); 6];
    let mut n = 0usize;
    for t in tokens(body) {
        // Keep the last six tokens in a ring; the username is whatever precedes them.
        toks[n % 6] = t;
        n += 1;
    }
    if n < 6 {
        return None;
    }
    let at = |i: usize| toks[(n - 6 + i) % 6];
    let (user_end_off, _) = at(1);
    let username = body.get(..user_end_off)?.trim_end_matches([' ', '\t']);
    let username = username.trim_start_matches([' ', '\t']);
    let (at_off, _) = at(4);
    let (addr_off, addr) = at(5);
    if username.is_empty() {
        return None;
    }
    Some((
        Origin {
            username,
            session_id: at(1).1,
            session_version: at(2).1,
            addr,
        },
        (at_off + 2, addr_off + addr.len() + 2),
    ))
}

/// `<media> <port>[/<count>] <proto> <fmt>...`; returns the media and the port digits span.
fn parse_media(body: &str) -> Option<(Media<'_>, (usize, usize))> {
    let mut toks = tokens(body);
    let (_, kind) = toks.next()?;
    let (port_off, port_tok) = toks.next()?;
    let (_, proto) = toks.next()?;
    let (port_text, count) = match port_tok.split_once('/') {
        Some((p, c)) => (p, Some(parse_u16(c)?)),
        None => (port_tok, None),
    };
    let port = parse_u16(port_text)?;
    let formats: Vec<&str> = toks.map(|(_, f)| f).collect();
    // Usually one rtpmap per dynamic format; reserve once instead of growing.
    let rtpmap = Vec::with_capacity(formats.len().min(32));
    Some((
        Media {
            kind,
            port,
            port_count: count,
            proto,
            formats,
            connection: None,
            rtcp: None,
            rtcp_mux: false,
            direction: None,
            effective_direction: Direction::SendRecv,
            rtpmap,
            has_ice: false,
            has_crypto: false,
            has_fingerprint: false,
            label: None,
            mid: None,
        },
        (port_off, port_off + port_text.len()),
    ))
}

/// `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605 §2.1).
fn parse_rtcp(v: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut toks = tokens(v);
    let port = parse_u16(toks.next()?.1)?;
    let mut rest = toks.clone();
    if rest.next().is_none() {
        return Some((port, None));
    }
    let (addr, _) = parse_net_addr(&mut toks, false)?;
    if toks.next().is_some() {
        return None;
    }
    Some((port, Some(addr)))
}

/// `a=rtpmap:<pt> <name>/<clock>[/<params>]` (RFC 8866 §6.6).
fn parse_rtpmap(v: &str) -> Option<(u8, &str, u32)> {
    let mut toks = tokens(v);
    let pt = parse_u16(toks.next()?.1)?;
    let enc = toks.next()?.1;
    if pt > 127 || toks.next().is_some() {
        return None;
    }
    let mut parts = enc.split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let clock = parse_u32(parts.next()?)?;
    Some((pt as u8, name, clock))
}
