//! Span-preserving rewrite of a parsed SDP (rules in the module doc of `sdp`).

use std::net::IpAddr;

use super::parse::{Kind, Line};
use super::{Direction, Sdp, SdpError};

/// What to do with one media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRewrite {
    /// Rejected (port 0) or not relayed: copied unchanged.
    Keep,
    /// Relayed: the relay's ports go into `m=` and `a=rtcp`.
    Relay {
        rtp_port: u16,
        rtcp_port: u16,
        rtcp_mux: bool,
        /// With `rtcp_mux`: `a=rtcp` still names `rtcp_port`, the separate RTCP port an
        /// offer keeps as the fallback until the answer accepts mux (RFC 5761 §5.1.1: the
        /// offerer must be able to receive RTCP apart when the answerer declines).
        rtcp_fallback: bool,
    },
}

/// How to write `a=rtcp` on relayed media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpAttr {
    /// `a=rtcp:PORT`, always (as rtpengine does), replacing any existing `a=rtcp`.
    Auto,
    /// Remove every `a=rtcp` line.
    Omit,
    /// `a=rtcp:PORT IN IP4|IP6 <relay>`.
    Full,
}

/// Everything [`rewrite`] needs besides the parsed SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteParams {
    /// Put into `c=` (session and relayed media) and, with `replace_origin`, `o=`.
    pub relay_addr: IpAddr,
    /// One entry per `m=` line, in order.
    pub media: Vec<MediaRewrite>,
    /// `o=` address type and address := relay.
    pub replace_origin: bool,
    /// `s=` := `session_name`, or `-` when `None`.
    pub replace_session_name: bool,
    pub session_name: Option<String>,
    /// Drop ICE attributes at session level and in relayed media.
    pub remove_ice: bool,
    pub rtcp_attr: RtcpAttr,
    /// When `Some`, the direction attribute of relayed media is replaced or inserted.
    pub direction: Option<Direction>,
}

impl RewriteParams {
    /// Relay address and per-media actions; every flag off, `RtcpAttr::Auto`.
    pub fn new(relay_addr: IpAddr, media: Vec<MediaRewrite>) -> RewriteParams {
        RewriteParams {
            relay_addr,
            media,
            replace_origin: false,
            replace_session_name: false,
            session_name: None,
            remove_ice: false,
            rtcp_attr: RtcpAttr::Auto,
            direction: None,
        }
    }
}

/// Output buffer that tracks the line ending to give inserted lines.
struct Out<'b> {
    buf: Vec<u8>,
    raw: &'b [u8],
    /// Ending of the last line written.
    prev_eol: &'b [u8],
    /// Separator used when inserting after a final line that has no ending.
    default_eol: &'b [u8],
}

impl<'b> Out<'b> {
    fn span(&self, a: u32, b: u32) -> &'b [u8] {
        self.raw.get(a as usize..b as usize).unwrap_or_default()
    }

    fn copy(&mut self, l: &Line) {
        self.buf.extend_from_slice(self.span(l.start, l.end));
        self.prev_eol = self.span(l.content_end, l.end);
    }

    /// Whole new content, original ending.
    fn replace(&mut self, l: &Line, parts: &[&[u8]]) {
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.prev_eol = self.span(l.content_end, l.end);
        self.buf.extend_from_slice(self.prev_eol);
    }

    /// Replace only the line's edit span.
    fn splice(&mut self, l: &Line, parts: &[&[u8]]) {
        self.buf.extend_from_slice(self.span(l.start, l.edit.0));
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.extend_from_slice(self.span(l.edit.1, l.end));
        self.prev_eol = self.span(l.content_end, l.end);
    }

    /// A new line after the last one written, with that line's ending.
    fn insert(&mut self, parts: &[&[u8]]) {
        let eol = self.prev_eol;
        if eol.is_empty() {
            // The previous line ended the body without a terminator: separate, and keep the
            // body unterminated.
            self.buf.extend_from_slice(self.default_eol);
        } else if !eol.ends_with(b"\n") {
            // It ended the body with the CR of a cut CRLF: complete that, and end the new
            // last line the same way.
            self.buf.push(b'\n');
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.extend_from_slice(eol);
    }
}

fn port_text(port: u16) -> ([u8; 5], usize) {
    let mut digits = [0u8; 5];
    let mut n = port;
    let mut i = 5;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (digits, i)
}

/// Rewrite `sdp` for the relay per `params` (rules in the `sdp` module doc).
pub fn rewrite(sdp: &Sdp<'_>, params: &RewriteParams) -> Result<Vec<u8>, SdpError> {
    if params.media.len() != sdp.media.len() {
        return Err(SdpError::MediaCountMismatch {
            expected: sdp.media.len(),
            got: params.media.len(),
        });
    }
    let session_name: &[u8] = match &params.session_name {
        Some(n) if n.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) => {
            return Err(SdpError::BadSessionName)
        }
        Some(n) => n.as_bytes(),
        None => b"-",
    };
    let raw = sdp.raw;
    let default_eol: &[u8] = match sdp.lines.first() {
        Some(l) if l.end > l.content_end => raw
            .get(l.content_end as usize..l.end as usize)
            .filter(|e| e.ends_with(b"\n"))
            .unwrap_or(b"\r\n"),
        _ => b"\r\n",
    };
    let relay = params.relay_addr;
    let relay_text = relay.to_string();
    let relay_at: &[u8] = if relay.is_ipv4() { b"IP4 " } else { b"IP6 " };
    let net_addr: [&[u8]; 2] = [relay_at, relay_text.as_bytes()];

    let mut out = Out {
        buf: Vec::with_capacity(raw.len() + 160),
        raw,
        prev_eol: default_eol,
        default_eol,
    };
    // `c=`/`o=` lines that already hold the relay address (or hold) stay byte-identical.
    let needs_relay = |addr: IpAddr| !addr.is_unspecified() && addr != relay;

    let first_media = sdp
        .media_lines
        .first()
        .map_or(sdp.lines.len(), |&i| i as usize);
    let session_lines = sdp.lines.get(..first_media).unwrap_or_default();

    // The original session c= line, when the rewrite changes it (see Keep media below). The
    // first session c= is the session's connection (the parser keeps only that one) and
    // decides for any duplicate after it (RFC 8866 allows one): all are moved to the relay or
    // none is, so an SDP whose first c= already names the relay stays byte-identical.
    let moves_session_c = session_lines.iter().find_map(|l| match l.kind {
        Kind::Connection(addr) => Some(needs_relay(addr)),
        _ => None,
    }) == Some(true);
    let mut moved_session_c: Option<&Line> = None;
    for l in session_lines {
        match l.kind {
            Kind::Origin if params.replace_origin => out.splice(l, &net_addr),
            Kind::SessionName if params.replace_session_name => {
                out.replace(l, &[b"s=", session_name])
            }
            Kind::Connection(addr) if moves_session_c && !addr.is_unspecified() => {
                if moved_session_c.is_none() {
                    moved_session_c = Some(l);
                }
                out.splice(l, &net_addr);
            }
            Kind::Ice if params.remove_ice => {}
            _ => out.copy(l),
        }
    }

    for (i, action) in params.media.iter().enumerate() {
        let ms = sdp.media_lines.get(i).map_or(0, |&x| x as usize);
        let me = sdp
            .media_lines
            .get(i + 1)
            .map_or(sdp.lines.len(), |&x| x as usize);
        let section = sdp.lines.get(ms..me).unwrap_or_default();
        let media = sdp.media.get(i);
        let rejected = media.is_none_or(|m| m.is_rejected());
        // a=rtcp / a=rtcp-mux only mean something for RTP (not udptl, TCP, DTLS/SCTP).
        let is_rtp = media.is_some_and(|m| m.is_rtp());
        match *action {
            MediaRewrite::Relay {
                rtp_port,
                rtcp_port,
                rtcp_mux,
                rtcp_fallback,
            } if !rejected => relay_section(
                &mut out,
                section,
                params,
                &net_addr,
                is_rtp,
                (rtp_port, rtcp_port, rtcp_mux),
                rtcp_fallback,
            ),
            _ => keep_section(&mut out, section, moved_session_c.filter(|_| !rejected)),
        }
    }
    Ok(out.buf)
}

/// Copy a section unchanged; when the session `c=` moved and the section has no `c=` of its
/// own, pin it to the original address with a copy of the old session `c=` line.
fn keep_section(out: &mut Out<'_>, section: &[Line], old_session_c: Option<&Line>) {
    let has_own_c = section
        .iter()
        .any(|l| matches!(l.kind, Kind::Connection(_)));
    // c= goes after m= and any i= (RFC 8866 §5 order).
    let after = section
        .iter()
        .skip(1)
        .take_while(|l| l.kind == Kind::Info)
        .count();
    for (j, l) in section.iter().enumerate() {
        out.copy(l);
        if j == after && !has_own_c {
            if let Some(c) = old_session_c {
                let text = out.span(c.start, c.content_end);
                out.insert(&[text]);
            }
        }
    }
}

fn relay_section(
    out: &mut Out<'_>,
    section: &[Line],
    params: &RewriteParams,
    net_addr: &[&[u8]; 2],
    is_rtp: bool,
    (rtp_port, rtcp_port, rtcp_mux): (u16, u16, bool),
    rtcp_fallback: bool,
) {
    let relay = params.relay_addr;
    let (rtp_digits, rtp_from) = port_text(rtp_port);
    let rtp_text = rtp_digits.get(rtp_from..).unwrap_or_default();
    let rtcp_on_rtp = rtcp_mux && !rtcp_fallback;
    let (rtcp_digits, rtcp_from) = port_text(if rtcp_on_rtp { rtp_port } else { rtcp_port });
    let rtcp_text = rtcp_digits.get(rtcp_from..).unwrap_or_default();
    let rtcp_line: Option<[&[u8]; 5]> = match params.rtcp_attr {
        _ if !is_rtp => None,
        RtcpAttr::Omit => None,
        RtcpAttr::Auto => Some([b"a=rtcp:", rtcp_text, b"", b"", b""]),
        RtcpAttr::Full => Some([b"a=rtcp:", rtcp_text, b" IN ", net_addr[0], net_addr[1]]),
    };
    let dir_line: Option<[&[u8]; 2]> = params
        .direction
        .map(|d| [&b"a="[..], d.as_str().as_bytes()]);

    let has = |k: Kind| section.iter().any(|l| l.kind == k);
    let (has_rtcp, has_mux, has_dir) = (has(Kind::Rtcp), has(Kind::RtcpMux), has(Kind::Direction));
    // Insertions go after the last non-blank line of the section (the m= line at least).
    let last = section
        .iter()
        .rposition(|l| l.kind != Kind::Blank)
        .unwrap_or(0);
    let (mut rtcp_done, mut dir_done) = (false, false);

    for (j, l) in section.iter().enumerate() {
        match l.kind {
            Kind::Media => out.splice(l, &[rtp_text]),
            Kind::Connection(addr) if !addr.is_unspecified() && addr != relay => {
                out.splice(l, net_addr)
            }
            Kind::Rtcp | Kind::RtcpMux if !is_rtp => out.copy(l),
            Kind::Rtcp => {
                if let (Some(parts), false) = (rtcp_line, rtcp_done) {
                    out.replace(l, &parts);
                }
                rtcp_done = true;
            }
            Kind::RtcpMux if !rtcp_mux => {}
            Kind::Direction => {
                match (dir_line, dir_done) {
                    (None, _) => out.copy(l),
                    (Some(parts), false) => out.replace(l, &parts),
                    (Some(_), true) => {}
                }
                dir_done = true;
            }
            Kind::Ice if params.remove_ice => {}
            _ => out.copy(l),
        }
        if j == last {
            if let (Some(parts), false) = (dir_line, has_dir) {
                out.insert(&parts);
            }
            if let (Some(parts), false) = (rtcp_line, has_rtcp) {
                out.insert(&parts);
            }
            if is_rtp && rtcp_mux && !has_mux {
                out.insert(&[b"a=rtcp-mux"]);
            }
        }
    }
}
