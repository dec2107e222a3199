//! The framer: splits one SIP message into start line, header lines and body without
//! copying (RFC 3261 §7, grammar §25.1), in the style of `httparse`.
//!
//! The framer checks the start line, the shape of every header line (`name HCOLON value`,
//! folds), UTF-8 in the header section, and Content-Length; header values are interpreted
//! later, lazily and strictly, by `header`. Limits bound the work per message.
//!
//! Datagrams (RFC 3261 §18.3): without Content-Length the body is the rest of the datagram; a
//! Content-Length larger than what arrived is an error; bytes after the body are ignored.
//! Streams: [`frame`] finds where a message ends; Content-Length is mandatory.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::ops::Range;

use super::lex::is_token;

/// Largest message accepted (bytes, start line to end of body).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 128;
/// Longest header line, folds included.
pub const MAX_HEADER_LINE: usize = 8_192;

/// Recognises a header name (case-insensitive, long or compact form): dispatch on the
/// length, then compare, so each lookup is one jump and one or two comparisons.
fn lookup_name(name: &str) -> HeaderName {
    lookup_name_bytes(name.as_bytes())
}

fn lookup_name_bytes(n: &[u8]) -> HeaderName {
    let eq = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    match n.len() {
        1 => match n[0].to_ascii_lowercase() {
            b'v' => HeaderName::Via,
            b'f' => HeaderName::From,
            b't' => HeaderName::To,
            b'i' => HeaderName::CallId,
            b'm' => HeaderName::Contact,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'e' => HeaderName::ContentEncoding,
            b'k' => HeaderName::Supported,
            b's' => HeaderName::Subject,
            b'o' => HeaderName::Event,
            b'r' => HeaderName::ReferTo,
            _ => HeaderName::Other,
        },
        2 => {
            if eq("To") {
                HeaderName::To
            } else {
                HeaderName::Other
            }
        }
        3 => {
            if eq("Via") {
                HeaderName::Via
            } else {
                HeaderName::Other
            }
        }
        4 => {
            if eq("From") {
                HeaderName::From
            } else if eq("CSeq") {
                HeaderName::CSeq
            } else if eq("Path") {
                HeaderName::Path
            } else if eq("Date") {
                HeaderName::Date
            } else {
                HeaderName::Other
            }
        }
        5 => {
            if eq("Route") {
                HeaderName::Route
            } else if eq("Allow") {
                HeaderName::Allow
            } else if eq("Event") {
                HeaderName::Event
            } else {
                HeaderName::Other
            }
        }
        6 => {
            if eq("Accept") {
                HeaderName::Accept
            } else if eq("Server") {
                HeaderName::Server
            } else {
                HeaderName::Other
            }
        }
        7 => {
            if eq("Call-ID") {
                HeaderName::CallId
            } else if eq("Contact") {
                HeaderName::Contact
            } else if eq("Expires") {
                HeaderName::Expires
            } else if eq("Require") {
                HeaderName::Require
            } else if eq("Subject") {
                HeaderName::Subject
            } else {
                HeaderName::Other
            }
        }
        8 => {
            if eq("Refer-To") {
                HeaderName::ReferTo
            } else {
                HeaderName::Other
            }
        }
        9 => {
            if eq("Supported") {
                HeaderName::Supported
            } else {
                HeaderName::Other
            }
        }
        10 => {
            if eq("User-Agent") {
                HeaderName::UserAgent
            } else {
                HeaderName::Other
            }
        }
        11 => {
            if eq("Min-Expires") {
                HeaderName::MinExpires
            } else if eq("Unsupported") {
                HeaderName::Unsupported
            } else {
                HeaderName::Other
            }
        }
        12 => {
            if eq("Max-Forwards") {
                HeaderName::MaxForwards
            } else if eq("Record-Route") {
                HeaderName::RecordRoute
            } else if eq("Content-Type") {
                HeaderName::ContentType
            } else {
                HeaderName::Other
            }
        }
        13 => {
            if eq("Proxy-Require") {
                HeaderName::ProxyRequire
            } else if eq("Authorization") {
                HeaderName::Authorization
            } else {
                HeaderName::Other
            }
        }
        14 => {
            if eq("Content-Length") {
                HeaderName::ContentLength
            } else {
                HeaderName::Other
            }
        }
        16 => {
            if eq("Content-Encoding") {
                HeaderName::ContentEncoding
            } else if eq("WWW-Authenticate") {
                HeaderName::WwwAuthenticate
            } else {
                HeaderName::Other
            }
        }
        18 => {
            if eq("Proxy-Authenticate") {
                HeaderName::ProxyAuthenticate
            } else {
                HeaderName::Other
            }
        }
        19 => {
            if eq("Proxy-Authorization") {
                HeaderName::ProxyAuthorization
            } else {
                HeaderName::Other
            }
        }
        _ => HeaderName::Other,
    }
}

macro_rules! header_names {
    ($( $var:ident => $canon:literal $(| $compact:literal)? ;)*) => {
        /// Header names a SIP element interprets, with their compact forms (RFC 3261 §7.3.3).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $var, )*
            /// Any other (extension) header.
            Other,
        }

        impl HeaderName {
            /// Every known header name.
            pub const ALL: &'static [HeaderName] = &[$(HeaderName::$var,)*];

            /// Recognises a name, case-insensitively, in long or compact form.
            pub fn from_name(name: &str) -> HeaderName {
                lookup_name(name)
            }

            /// The canonical long name (`"Other"` for extensions).
            pub fn canonical(self) -> &'static str {
                match self {
                    $( HeaderName::$var => $canon, )*
                    HeaderName::Other => "Other",
                }
            }

            pub(crate) fn malformed_phrase(self) -> &'static str {
                match self {
                    $( HeaderName::$var => concat!("Bad Request - Malformed ", $canon, " header"), )*
                    HeaderName::Other => "Bad Request - Malformed header",
                }
            }

            pub(crate) fn missing_phrase(self) -> &'static str {
                match self {
                    $( HeaderName::$var => concat!("Bad Request - Missing ", $canon, " header"), )*
                    HeaderName::Other => "Bad Request - Missing header",
                }
            }

            pub(crate) fn duplicate_phrase(self) -> &'static str {
                match self {
                    $( HeaderName::$var => concat!("Bad Request - Multiple ", $canon, " headers"), )*
                    HeaderName::Other => "Bad Request - Repeated header",
                }
            }
        }
    };
}

header_names! {
    Via => "Via" | "v";
    From => "From" | "f";
    To => "To" | "t";
    CallId => "Call-ID" | "i";
    CSeq => "CSeq";
    Contact => "Contact" | "m";
    MaxForwards => "Max-Forwards";
    Route => "Route";
    RecordRoute => "Record-Route";
    ContentLength => "Content-Length" | "l";
    ContentType => "Content-Type" | "c";
    ContentEncoding => "Content-Encoding" | "e";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported" | "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Subject => "Subject" | "s";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    Path => "Path";
    Event => "Event" | "o";
    ReferTo => "Refer-To" | "r";
    Accept => "Accept";
    Date => "Date";
    UserAgent => "User-Agent";
    Server => "Server";
}

/// Why a message was refused. Small and `Copy` so it can be counted and logged cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CRLFs (a keep-alive) or no bytes at all.
    Empty,
    TooLarge,
    TooManyHeaders,
    HeaderLineTooLong,
    /// Datagram ended inside the start line or a header line.
    Truncated,
    InvalidUtf8,
    BadRequestLine,
    BadRequestUri,
    BadStatusLine,
    VersionNotSupported,
    BadHeaderLine,
    BadContentLength,
    MultipleContentLength,
    /// Content-Length larger than the bytes that arrived (datagram).
    ContentLengthTooLarge,
    /// Stream message without Content-Length.
    MissingContentLength,
    /// A header whose value does not follow its grammar.
    Malformed(HeaderName),
    Missing(HeaderName),
    Duplicate(HeaderName),
    CSeqMethodMismatch,
    RequestUriHeaders,
}

impl ParseError {
    /// The status a request with this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::VersionNotSupported => 505,
            ParseError::TooLarge => 513,
            _ => 400,
        }
    }

    /// A reason phrase saying what is wrong, for the response line.
    pub fn reason_phrase(self) -> &'static str {
        match self {
            ParseError::Empty => "Bad Request - Empty message",
            ParseError::TooLarge => "Message Too Large",
            ParseError::TooManyHeaders => "Bad Request - Too many headers",
            ParseError::HeaderLineTooLong => "Bad Request - Header line too long",
            ParseError::Truncated => "Bad Request - Truncated message",
            ParseError::InvalidUtf8 => "Bad Request - Invalid UTF-8 in header section",
            ParseError::BadRequestLine => "Bad Request - Malformed Request-Line",
            ParseError::BadRequestUri => "Bad Request - Malformed Request-URI",
            ParseError::BadStatusLine => "Bad Request - Malformed Status-Line",
            ParseError::VersionNotSupported => "Version Not Supported",
            ParseError::BadHeaderLine => "Bad Request - Malformed header line",
            ParseError::BadContentLength => "Bad Request - Malformed Content-Length header",
            ParseError::MultipleContentLength => "Bad Request - Multiple Content-Length headers",
            ParseError::ContentLengthTooLarge => "Bad Request - Content-Length larger than message",
            ParseError::MissingContentLength => "Bad Request - Missing Content-Length header",
            ParseError::Malformed(h) => h.malformed_phrase(),
            ParseError::Missing(h) => h.missing_phrase(),
            ParseError::Duplicate(h) => h.duplicate_phrase(),
            ParseError::CSeqMethodMismatch => {
                "Bad Request - CSeq method does not match Request-Line"
            }
            ParseError::RequestUriHeaders => "Bad Request - Request-URI must not contain headers",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason_phrase())
    }
}

impl std::error::Error for ParseError {}

/// How the message was framed on arrival: decides what a missing Content-Length means
/// (RFC 3261 §18.3). The network transport a message travels by (UDP, TCP) is the
/// transport module's business, not the parser's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

/// `Request-Line` (RFC 3261 §7.1). The URI is only checked for `absoluteURI` syntax here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// Offsets of the URI within the message.
    pub uri_range: (u32, u32),
}

/// `Status-Line` (RFC 3261 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusLine<'a> {
    pub code: u16,
    /// May be empty; may hold any UTF-8.
    pub reason: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request(RequestLine<'a>),
    Response(StatusLine<'a>),
}

/// One header line. `value` has leading/trailing whitespace removed but keeps inner folds;
/// use [`Header::value_unfolded`] to see it as the RFC interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub kind: HeaderName,
    pub value: &'a str,
    /// The whole line within the message, including folds and the final CRLF.
    pub(crate) line: (u32, u32),
    /// The value within the message.
    pub(crate) value_at: (u32, u32),
    /// Where the name ends within the message.
    pub(crate) name_end: u32,
}

impl<'a> Header<'a> {
    /// The value with each fold replaced by a single SP.
    pub fn value_unfolded(&self) -> std::borrow::Cow<'a, str> {
        super::lex::unfold(self.value)
    }

    /// Byte range of the whole line (incl. CRLF) within [`Message::as_bytes`].
    pub fn line_range(&self) -> Range<usize> {
        self.line.0 as usize..self.line.1 as usize
    }

    /// Byte range of the value within [`Message::as_bytes`].
    pub fn value_range(&self) -> Range<usize> {
        self.value_at.0 as usize..self.value_at.1 as usize
    }
}

/// A framed SIP message borrowing the received bytes.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    pub start: StartLine<'a>,
    pub headers: Vec<Header<'a>>,
    /// Offset of the first header line (just after the start line's CRLF).
    pub(crate) headers_start: usize,
    /// Offset where the header section ends (where the empty line starts, or the end of the
    /// datagram if the sender omitted it).
    pub(crate) headers_end: usize,
    pub(crate) body_start: usize,
    /// Whether the empty line separating headers and body was present.
    pub(crate) has_blank_line: bool,
    pub content_length: Option<usize>,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first CR or LF at or after `from`, eight bytes at a time (the lowest flagged
/// byte of the classic "has zero byte" test is always exact).
#[inline]
fn find_cr_or_lf(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        let cr = w ^ (LO * u64::from(b'\r'));
        let lf = w ^ (LO * u64::from(b'\n'));
        let m = ((cr.wrapping_sub(LO) & !cr) | (lf.wrapping_sub(LO) & !lf)) & HI;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .map(|p| i + p)
}

/// The CR of the CRLF ending the line that contains `from`; `Ok(None)` if the buffer ends
/// first; an error for a bare CR or LF.
#[inline]
fn line_end(b: &[u8], from: usize) -> Result<Option<usize>, ParseError> {
    match find_cr_or_lf(b, from) {
        None => Ok(None),
        Some(i) if b[i] == b'\r' => match b.get(i + 1) {
            Some(b'\n') => Ok(Some(i)),
            None => Ok(None),
            Some(_) => Err(ParseError::BadHeaderLine),
        },
        Some(_) => Err(ParseError::BadHeaderLine),
    }
}

/// Skips the CRLFs allowed before a start line (RFC 3261 §7.5, RFC 5626 keep-alives).
fn leading_crlfs(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

/// Stream framing result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// The buffer starts with this many bytes of CRLF keep-alive (RFC 5626 §4.4.1); consume
    /// them (and answer a double CRLF with a single CRLF).
    KeepAlive(usize),
    /// A complete message occupies `buf[..len]`.
    Message { len: usize },
}

/// Finds the end of the first message in a stream buffer (RFC 3261 §18.3). The header
/// section is re-scanned on each call, so the cost of a message trickling in is bounded by
/// [`MAX_MESSAGE_LEN`].
pub fn frame(buf: &[u8]) -> Result<Frame, ParseError> {
    let skip = leading_crlfs(buf);
    if skip > 0 {
        return Ok(Frame::KeepAlive(skip));
    }
    if buf.is_empty() {
        return Ok(Frame::Incomplete);
    }
    let head = match parse_head(buf, false) {
        Ok(h) => h,
        Err(ParseError::Truncated) if buf.len() > MAX_MESSAGE_LEN => {
            return Err(ParseError::TooLarge)
        }
        Err(ParseError::Truncated) => return Ok(Frame::Incomplete),
        Err(e) => return Err(e),
    };
    // Content-Length is mandatory on streams.
    let cl = head
        .content_length
        .ok_or(ParseError::MissingContentLength)?;
    let len = head.body_start + cl;
    if len > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < len {
        Ok(Frame::Incomplete)
    } else {
        Ok(Frame::Message { len })
    }
}

impl<'a> Message<'a> {
    /// Parses one datagram. Leading CRLFs are skipped; bytes after the body announced by
    /// Content-Length are ignored (RFC 3261 §18.3).
    pub fn parse(datagram: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Self::parse_with(datagram, Framing::Datagram)
    }

    /// Parses one message; for [`Framing::Stream`] pass exactly the bytes [`frame`] found.
    pub fn parse_with(buf: &'a [u8], framing: Framing) -> Result<Message<'a>, ParseError> {
        let buf = &buf[leading_crlfs(buf)..];
        if buf.is_empty() {
            return Err(ParseError::Empty);
        }
        if buf.len() > MAX_MESSAGE_LEN && framing == Framing::Datagram {
            return Err(ParseError::TooLarge);
        }
        // A datagram whose header section ends at the end of the datagram without the empty
        // line is unambiguous over UDP (no body), so it is accepted.
        let mut msg = parse_head(buf, framing == Framing::Datagram)?;
        let body_start = msg.body_start;
        let available = buf.len().saturating_sub(body_start);
        let body_len = match (msg.content_length, framing) {
            (Some(cl), _) if cl > available => return Err(ParseError::ContentLengthTooLarge),
            (Some(cl), _) => cl,
            (None, Framing::Datagram) => available,
            (None, Framing::Stream) => return Err(ParseError::MissingContentLength),
        };
        let end = body_start + body_len;
        if end > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        msg.raw = buf.get(..end).ok_or(ParseError::Truncated)?;
        Ok(msg)
    }

    /// The message bytes, start line to end of body.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn body(&self) -> &'a [u8] {
        self.raw.get(self.body_start..).unwrap_or(&[])
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The request method, for requests.
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request(r) => Some(r.method),
            StartLine::Response(_) => None,
        }
    }

    /// The status code, for responses.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response(s) => Some(s.code),
            StartLine::Request(_) => None,
        }
    }

    /// The first header of this kind.
    pub fn header(&self, kind: HeaderName) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| h.kind == kind)
    }

    /// All headers of this kind, in order.
    pub fn headers_of(&self, kind: HeaderName) -> impl Iterator<Item = &Header<'a>> + '_ {
        self.headers.iter().filter(move |h| h.kind == kind)
    }

    /// Looks an extension header up by its exact name (case-insensitive).
    pub fn header_by_name(&self, name: &str) -> Option<&Header<'a>> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }
}

fn is_version(v: &str) -> bool {
    let Some(rest) = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and(v.get(4..))
    else {
        return false;
    };
    match rest.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

fn is_sip20(v: &str) -> bool {
    v.eq_ignore_ascii_case("SIP/2.0")
}

fn parse_start_line(line: &str, is_response: bool) -> Result<StartLine<'_>, ParseError> {
    if is_response {
        let (version, rest) = line.split_once(' ').ok_or(ParseError::BadStatusLine)?;
        if !is_version(version) {
            return Err(ParseError::BadStatusLine);
        }
        if !is_sip20(version) {
            return Err(ParseError::VersionNotSupported);
        }
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatusLine);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::BadStatusLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusLine);
        }
        // Reason-Phrase: printable text and UTF-8; no control characters.
        if reason
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(ParseError::BadStatusLine);
        }
        return Ok(StartLine::Response(StatusLine { code, reason }));
    }
    // Method SP Request-URI SP SIP-Version: exactly one SP between the three elements.
    let mut parts = line.splitn(3, ' ');
    let method = parts.next().unwrap_or("");
    let uri = parts.next().ok_or(ParseError::BadRequestLine)?;
    let version = parts.next().ok_or(ParseError::BadRequestLine)?;
    if method.is_empty() || !method.bytes().all(is_token) || uri.is_empty() {
        return Err(ParseError::BadRequestLine);
    }
    if !is_version(version) {
        return Err(ParseError::BadRequestLine);
    }
    if !is_sip20(version) {
        return Err(ParseError::VersionNotSupported);
    }
    if super::uri::absolute_uri_scheme(uri).is_err() {
        return Err(ParseError::BadRequestUri);
    }
    let start = method.len() as u32 + 1;
    Ok(StartLine::Request(RequestLine {
        method,
        uri,
        uri_range: (start, start + uri.len() as u32),
    }))
}

/// Parses the start line and the header lines of `buf` up to the empty line (or, with
/// `open_end`, up to the end of `buf` after a complete line). `Truncated` means more bytes
/// are needed.
fn parse_head(buf: &[u8], open_end: bool) -> Result<Message<'_>, ParseError> {
    let b = buf;
    let is_response = b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"SIP/");
    let line_end0 = match line_end(b, 0) {
        Ok(Some(e)) => e,
        Ok(None) => return Err(ParseError::Truncated),
        Err(_) if is_response => return Err(ParseError::BadStatusLine),
        Err(_) => return Err(ParseError::BadRequestLine),
    };
    let first = std::str::from_utf8(&b[..line_end0]).map_err(|_| ParseError::InvalidUtf8)?;
    let start = parse_start_line(first, is_response)?;

    let mut headers = Vec::with_capacity(20);
    let mut content_length = None;
    let mut pos = line_end0 + 2;
    let headers_start = pos;
    let (headers_end, blank) = loop {
        if pos > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        match b.get(pos) {
            None if open_end => break (pos, false),
            None => return Err(ParseError::Truncated),
            Some(b'\r') => match b.get(pos + 1) {
                Some(b'\n') => break (pos, true),
                None => return Err(ParseError::Truncated),
                Some(_) => return Err(ParseError::BadHeaderLine),
            },
            Some(_) => {}
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let line_start = pos;
        // field-name *(SP/HT) ":"
        while pos < b.len() && is_token(b[pos]) {
            pos += 1;
        }
        let name_end = pos;
        while pos < b.len() && (b[pos] == b' ' || b[pos] == b'\t') {
            pos += 1;
        }
        match b.get(pos) {
            Some(b':') if name_end > line_start => pos += 1,
            None => return Err(ParseError::Truncated),
            Some(_) => return Err(ParseError::BadHeaderLine),
        }
        // The value runs to a CRLF not followed by SP/HT (a fold continues it).
        let value_start = pos;
        let value_end = loop {
            let e = line_end(b, pos)?.ok_or(ParseError::Truncated)?;
            pos = e + 2;
            if pos - line_start > MAX_HEADER_LINE {
                return Err(ParseError::HeaderLineTooLong);
            }
            if !matches!(b.get(pos), Some(b' ' | b'\t')) {
                break e;
            }
        };
        if pos - line_start > MAX_HEADER_LINE {
            return Err(ParseError::HeaderLineTooLong);
        }
        let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        let region = &b[value_start..value_end];
        let lead = region.iter().take_while(|c| ws(c)).count();
        let trail = region[lead..].iter().rev().take_while(|c| ws(c)).count();
        let vs = value_start + lead;
        let ve = value_end - trail;
        // Names are ASCII tokens; values are validated as UTF-8 once, after the loop.
        // Names are token characters, hence ASCII.
        let name_bytes = &b[line_start..name_end];
        let value_bytes = &b[vs..ve];
        let kind = lookup_name_bytes(name_bytes);
        if kind == HeaderName::ContentLength {
            if content_length.is_some() {
                return Err(ParseError::MultipleContentLength);
            }
            if value_bytes.is_empty()
                || value_bytes.len() > 10
                || !value_bytes.iter().all(u8::is_ascii_digit)
            {
                return Err(ParseError::BadContentLength);
            }
            let n = value_bytes
                .iter()
                .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
            if n > MAX_MESSAGE_LEN {
                return Err(ParseError::TooLarge);
            }
            content_length = Some(n);
        }
        headers.push(Header {
            name: "",
            kind,
            value: "",
            name_end: name_end as u32,
            line: (line_start as u32, pos as u32),
            value_at: (vs as u32, ve as u32),
        });
    };
    let head = std::str::from_utf8(&b[..headers_end]).map_err(|_| ParseError::InvalidUtf8)?;
    for h in &mut headers {
        h.name = head
            .get(h.line.0 as usize..h.name_end as usize)
            .unwrap_or("");
        h.value = head
            .get(h.value_at.0 as usize..h.value_at.1 as usize)
            .ok_or(ParseError::InvalidUtf8)?;
    }
    let body_start = if blank { headers_end + 2 } else { headers_end };
    Ok(Message {
        raw: buf,
        start,
        headers,
        headers_start,
        headers_end,
        body_start,
        has_blank_line: blank,
        content_length,
    })
}

#[cfg(test)]
mod tests;
