//! Sans-IO SDP parsing and span-preserving rewriting for the relay.
//!
//! # Contract
//!
//! [`Sdp::parse`] reads an SDP body (RFC 8866, formerly RFC 4566) received in an offer or answer
//! (RFC 3264) and keeps, next to the typed view, the byte span of every line. [`rewrite`] then
//! produces the body the relay sends on: the media addresses and ports are replaced by the
//! relay's, and **every other byte is copied from the input in its original order**. The body
//! is never re-serialised, so attributes we do not understand (and line types such as `y=` or
//! `k=`) survive unchanged.
//!
//! Input is hostile network data. Parsing never panics; it rejects with a typed [`SdpError`]
//! (whose `Display` text is suitable for an ng `error-reason`) anything it must interpret but
//! cannot: a first line other than `v=0`, a malformed `o=`, `c=` or `m=` line, an invalid
//! `a=rtcp` / `a=rtpmap`, non-UTF-8 bytes in a line it interprets, more than [`MAX_MEDIA`]
//! media sections, more than [`MAX_LINES`] lines, a body larger than [`MAX_SDP_LEN`] bytes, a
//! line that is not `<type>=<value>`.
//! Lines it does not interpret may hold any bytes (a Latin-1 `s=` line is fine).
//!
//! Lines end in CRLF or LF, independently per line; each output line keeps the ending of the
//! input line it came from. A line we insert takes the ending of the line emitted just before
//! it. A final line without an ending stays without one (an inserted line after it gets the
//! body's first line ending, or CRLF, as separator).
//!
//! # Parsing notes
//!
//! - `c=` must be `IN IP4 <v4>` or `IN IP6 <v6>` (RFC 8866 §5.7); a `/ttl[/count]` suffix is
//!   tolerated and ignored. FQDN addresses are rejected (a relay needs an address).
//! - `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605 §2.1), `a=rtcp-mux` (RFC 5761 §5.1.1).
//! - Direction attributes (RFC 3264 §5.1, RFC 8866 §6.7) at session and media level.
//!   [`Media::direction`] is the media-level attribute as written; [`Media::effective_direction`]
//!   folds in the session level and the RFC default (sendrecv).
//! - `has_ice` / `has_fingerprint` are also set when the attribute is at session level (it
//!   then applies to every media, RFC 8839 §5.4, RFC 8122 §5); `a=crypto` is media-level only
//!   (RFC 4568 §9.1).
//! - Attribute names are matched ASCII case-insensitively. Blank lines are tolerated and kept.
//!
//! # Rewrite rules ([`rewrite`])
//!
//! - **Session `c=`** -> relay address: the address-type and address tokens are replaced
//!   (`IP4`/`IP6` by the relay's family, any `/ttl` suffix dropped); `IN` and spacing are kept.
//!   A `c=` of `0.0.0.0` (or `::`) is RFC 2543-style hold and is left as is (RFC 3264 §8.4). A
//!   `c=` that already holds the relay address is left byte-identical.
//!   Because a changed session `c=` would silently move media the relay does not handle, a
//!   non-rejected [`MediaRewrite::Keep`] section without its own `c=` gets a copy of the
//!   original session `c=` line inserted after its `m=` (and any `i=`) line.
//! - **Media `c=`** of relayed media: as the session `c=` (hold stays hold).
//!   A relayed media with no `c=` at either level has nothing to replace (tolerated).
//! - **`m=` port** -> `rtp_port` for [`MediaRewrite::Relay`]; only the port digits change, a
//!   `/count` suffix is kept. A rejected media (port 0) always stays 0 and all its lines are
//!   copied unchanged, whatever its `MediaRewrite` says.
//! - **`a=rtcp`** (relayed media): the first `a=rtcp` line is replaced in place, later
//!   duplicates are dropped; if there was none, a new one is inserted at the end of the media
//!   section. [`RtcpAttr::Auto`] writes `a=rtcp:<port>` (like rtpengine, always),
//!   [`RtcpAttr::Full`] writes `a=rtcp:<port> IN IP4|IP6 <relay>`, [`RtcpAttr::Omit`] removes
//!   every `a=rtcp`. `<port>` is `rtcp_port`, or `rtp_port` when `rtcp_mux` is set without
//!   `rtcp_fallback` (an offer's mux keeps the separate RTCP port named until it is answered).
//! - `a=rtcp` and `a=rtcp-mux` are only written or removed for RTP media ([`Media::is_rtp`]);
//!   for `udptl` (T.38) and other non-RTP media those lines are copied as they are.
//! - **`a=rtcp-mux`** (relayed media): kept when `rtcp_mux` is true (inserted at the end of the
//!   section when missing), removed when false (the relay does not mux on this leg).
//! - **Direction** (relayed media): with `direction: Some(d)` the first media-level direction
//!   attribute becomes `a=<d>` (duplicates dropped; inserted at the end when absent). The
//!   session-level attribute is untouched.
//! - **ICE** with `remove_ice`: `a=candidate`, `a=ice-ufrag`, `a=ice-pwd`, `a=ice-options`,
//!   `a=ice-lite`, `a=end-of-candidates`, `a=remote-candidates` are dropped at session level
//!   and in relayed media; `Keep` media sections are copied untouched.
//! - **`o=`** with `replace_origin`: only the address type and address change; username,
//!   session id and version pass through (a re-offer's new version shows in the output).
//! - **`s=`** with `replace_session_name`: `s=<session_name>` or `s=-`.
//! - Lines inserted at the end of a media section go after its last non-blank line, in the
//!   order direction, `a=rtcp`, `a=rtcp-mux`.
//! - Everything else (`a=rtpmap`, `a=fmtp`, `a=crypto`, `a=fingerprint`, unknown `a=`, `b=`,
//!   `i=`, `k=`, `y=`, unknown types, blank lines) is copied byte for byte, in order.
//! - With every media `Keep`, no replace flags and the relay address equal to the session
//!   address, the output equals the input byte for byte.
//!
//! # Building
//!
//! [`AudioSdp`] writes the one-audio-stream body that tests, benchmarks and load generators
//! offer a relay; the relay itself only rewrites.
#![forbid(unsafe_code)]

mod build;
mod parse;
mod rewrite;

use std::net::{IpAddr, SocketAddr};

pub use build::AudioSdp;
pub use rewrite::{rewrite, MediaRewrite, RewriteParams, RtcpAttr};

/// Largest SDP body accepted, in bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Most media sections (`m=` lines) accepted.
pub const MAX_MEDIA: usize = 64;
/// Most lines accepted (bounds the per-body index; a 64-media WebRTC offer has ~2,000).
pub const MAX_LINES: usize = 8192;

/// Why an SDP body was rejected. The `Display` text is meant for an ng `error-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP body too large ({len} bytes, limit {limit})")]
    TooLarge { len: usize, limit: usize },
    #[error("SDP does not start with v=0")]
    MissingVersion,
    #[error("malformed SDP line {line} (expected <type>=<value>)")]
    MalformedLine { line: usize },
    #[error("unexpected {what} line in SDP (line {line})")]
    Unexpected { line: usize, what: &'static str },
    #[error("SDP line {line} is not valid UTF-8")]
    NonUtf8 { line: usize },
    #[error("invalid o= line in SDP (line {line})")]
    BadOrigin { line: usize },
    #[error("invalid or unsupported c= line in SDP (line {line})")]
    BadConnection { line: usize },
    #[error("invalid m= line in SDP (line {line})")]
    BadMedia { line: usize },
    #[error("invalid a={attr} attribute in SDP (line {line})")]
    BadAttribute { line: usize, attr: &'static str },
    #[error("too many lines in SDP (limit {limit})")]
    TooManyLines { limit: usize },
    #[error("too many media sections in SDP (limit {limit})")]
    TooManyMedia { limit: usize },
    #[error("media rewrite list has {got} entries but the SDP has {expected} m= lines")]
    MediaCountMismatch { expected: usize, got: usize },
    #[error("session name contains a line break or NUL")]
    BadSessionName,
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name, e.g. `sendrecv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Parse an attribute name (ASCII case-insensitive).
    pub fn from_name(name: &[u8]) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str().as_bytes()))
    }
}

/// `o=` line (RFC 8866 §5.2). The username may contain spaces in the wild; the other five
/// fields are taken from the end of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub username: &'a str,
    pub session_id: &'a str,
    pub session_version: &'a str,
    pub addr: &'a str,
}

/// `c=` line (RFC 8866 §5.7): `IN IP4 <addr>` or `IN IP6 <addr>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub addr: IpAddr,
}

impl Connection {
    /// `0.0.0.0` (RFC 2543 hold) or `::`.
    pub fn is_hold(&self) -> bool {
        self.addr.is_unspecified()
    }
}

/// One media section (`m=` line and what follows up to the next `m=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// audio, video, image, application, text, message, or anything else sent.
    pub kind: &'a str,
    pub port: u16,
    /// The `/count` of `m=audio 49170/2 ...`.
    pub port_count: Option<u16>,
    /// RTP/AVP, RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF, udptl, ...
    pub proto: &'a str,
    pub formats: Vec<&'a str>,
    /// Media-level `c=` (the first one).
    pub connection: Option<Connection>,
    /// `a=rtcp:port [IN IP4 addr]` (the first one).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    pub rtcp_mux: bool,
    /// Media-level direction attribute as written.
    pub direction: Option<Direction>,
    /// Media-level direction, else session-level, else sendrecv (RFC 8866 §6.7).
    pub effective_direction: Direction,
    /// (payload type, encoding name, clock rate) per `a=rtpmap`.
    pub rtpmap: Vec<(u8, &'a str, u32)>,
    pub has_ice: bool,
    pub has_crypto: bool,
    pub has_fingerprint: bool,
    /// `a=label` (RFC 4574).
    pub label: Option<&'a str>,
    /// `a=mid` (RFC 5888).
    pub mid: Option<&'a str>,
}

impl Media<'_> {
    fn effective_addr(&self, session: Option<Connection>) -> Option<IpAddr> {
        self.connection.or(session).map(|c| c.addr)
    }

    /// Effective RTP destination: media `c=` else session `c=`; `None` when the port is 0
    /// (rejected) or there is no address. A hold address (`0.0.0.0`) is returned as is.
    pub fn rtp_endpoint(&self, session: Option<Connection>) -> Option<SocketAddr> {
        if self.is_rejected() {
            return None;
        }
        Some(SocketAddr::new(self.effective_addr(session)?, self.port))
    }

    /// RTCP destination: `a=rtcp` (port and optional address) else RTP port + 1; the RTP
    /// address when `a=rtcp` has none; the RTP endpoint itself when rtcp-mux is offered.
    pub fn rtcp_endpoint(&self, session: Option<Connection>) -> Option<SocketAddr> {
        let rtp = self.rtp_endpoint(session)?;
        if self.rtcp_mux {
            return Some(rtp);
        }
        match self.rtcp {
            Some((port, addr)) => Some(SocketAddr::new(addr.unwrap_or(rtp.ip()), port)),
            None => Some(SocketAddr::new(rtp.ip(), self.port.checked_add(1)?)),
        }
    }

    /// An RTP profile (`RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, ...), as opposed to
    /// `udptl`, `TCP/...` or `UDP/DTLS/SCTP`.
    pub fn is_rtp(&self) -> bool {
        self.proto
            .as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"RTP/"))
    }

    /// Port 0 (RFC 3264 §6).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// On hold: the effective `c=` is `0.0.0.0`/`::` (RFC 2543) or the effective direction is
    /// sendonly or inactive (RFC 3264 §8.4).
    pub fn is_hold(&self, session: Option<Connection>) -> bool {
        self.effective_addr(session)
            .is_some_and(|a| a.is_unspecified())
            || matches!(
                self.effective_direction,
                Direction::SendOnly | Direction::Inactive
            )
    }
}

/// A parsed SDP body borrowing the input bytes, with the line spans needed by [`rewrite`].
#[derive(Debug, Clone)]
pub struct Sdp<'a> {
    pub origin: Option<Origin<'a>>,
    /// Session-level `c=` (the first one).
    pub session_connection: Option<Connection>,
    pub session_direction: Option<Direction>,
    pub media: Vec<Media<'a>>,
    raw: &'a [u8],
    lines: Vec<parse::Line>,
    /// Index into `lines` of each `m=` line.
    media_lines: Vec<u32>,
}

impl<'a> Sdp<'a> {
    /// Parse an SDP body. Never panics; see the module doc for what is rejected.
    pub fn parse(input: &'a [u8]) -> Result<Sdp<'a>, SdpError> {
        parse::parse(input)
    }

    /// The bytes this was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Number of lines (including blank ones).
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests;
