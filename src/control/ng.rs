//! ng datagram framing and the typed request.
//!
//! **Framing** (rtpengine `daemon/control_ng.c`): a datagram is `<cookie> <body>`, split at the
//! first space. No space, or an empty cookie (leading space), gets no reply at all
//! ([`split_datagram`] returns `None`). The reply echoes the cookie byte for byte, one space,
//! then the body ([`frame_reply`]). An empty body gets the error "Invalid data (no payload)".
//!
//! **Body format** is decided by its first byte: `d` → bencode dictionary, `{` → JSON object
//! (and the reply is then JSON), anything else → "Invalid NG data format". Both formats are
//! turned into one [`Value`] view (bencode zero-copy, JSON through [`Owned::as_value`]) and
//! parsed by the same code, [`parse_request_value`].
//!
//! **Keys and flags.** Names are matched after normalisation ([`super::flags`]): case-insensitive,
//! with spaces, dashes and underscores equivalent. Settings arrive three ways and all land in
//! the same [`NgRequest`] fields:
//! 1. dictionary keys (`"ICE": "remove"`, `"replace": ["origin"]`);
//! 2. items of the `flags` list: bare flags (`trust-address`), prefixed flags
//!    (`replace-origin`, `rtcp-mux-demux`, `codec-strip-PCMU`, `SDES-off`) and `key=value`
//!    items treated like dictionary keys (`ICE=remove`, `delete-delay=0`);
//! 3. the `rtpp-flags` string (newer Kamailio), the same tokens separated by whitespace, with
//!    bracketed list values ([`super::flags::lex_rtpp_flags`]).
//!
//! For dictionary keys the first occurrence wins (duplicates are ignored, also across spellings
//! such as `call-id`/`call id`). Flag tokens apply in order, so a later token overrides an
//! earlier scalar, as in rtpengine.
//!
//! **What is refused.** Unknown keys and flags, and known ones that we do not implement but that
//! do no harm when ignored, only add to [`NgRequest::warnings`] (capped at
//! [`MAX_WARNINGS`]). Requests that would need transcoding or a transport conversion we cannot
//! perform fail with an error naming the feature, so the proxy can react instead of getting a
//! silently wrong call. `transport-protocol` itself is only recorded: whether it differs from
//! the offered protocol is for the session layer to decide (it then uses
//! [`NgError::UnsupportedTransport`]).

use std::net::IpAddr;

use super::bencode::{self, Owned, Value};
use super::flags::{
    self, AddressFamily, CodecOpts, DtlsMode, EndpointLearning, Flags, IceMode, Norm, RtcpMuxOpts,
    RtppItem, TransportBits,
};
use super::json;

/// Encoding of a request body, and therefore of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Bencode,
    Json,
}

/// Splits `<cookie> <body>` at the first space. `None` if there is no space or the cookie is
/// empty (leading space): rtpengine drops those without a reply. The body may be empty.
pub fn split_datagram(dgram: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = dgram.iter().position(|&b| b == b' ')?;
    if sp == 0 {
        return None;
    }
    Some((&dgram[..sp], &dgram[sp + 1..]))
}

/// Serialises a reply body in `format`.
pub fn encode_body(format: BodyFormat, reply: &Owned) -> Vec<u8> {
    match format {
        BodyFormat::Bencode => reply.to_bencode(),
        BodyFormat::Json => json::to_json(reply),
    }
}

/// The reply datagram: the cookie, one space, the body in `format`.
pub fn frame_reply(cookie: &[u8], format: BodyFormat, reply: &Owned) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 1 + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    match format {
        BodyFormat::Bencode => reply.encode(&mut out),
        BodyFormat::Json => out.extend_from_slice(&json::to_json(reply)),
    }
    out
}

/// The commands rtpanchor implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Ping,
    Offer,
    Answer,
    Delete,
    Query,
    List,
    Statistics,
}

/// rtpengine commands that exist but that rtpanchor does not implement (normalised names).
const UNSUPPORTED_COMMANDS: &[&str] = &[
    "start-recording",
    "stop-recording",
    "pause-recording",
    "start-forwarding",
    "stop-forwarding",
    "block-dtmf",
    "unblock-dtmf",
    "block-media",
    "unblock-media",
    "play-media",
    "stop-media",
    "play-dtmf",
    "silence-media",
    "unsilence-media",
    "publish",
    "subscribe-request",
    "subscribe-answer",
    "unsubscribe",
    "inject-start",
    "inject-stop",
    "connect",
    "cli",
    "transform",
    "create",
    "create-answer",
    "mesh",
];

impl Command {
    /// The command's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
        }
    }

    /// Parses a command name (case-insensitive; `-`, `_` and space equivalent).
    pub fn from_name(raw: &[u8]) -> Result<Command, NgError> {
        let norm = Norm::new(raw);
        Ok(match norm.name() {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            name if UNSUPPORTED_COMMANDS.contains(&name) => {
                return Err(NgError::UnsupportedCommand(name.replace('-', " ")))
            }
            _ => return Err(NgError::UnrecognizedCommand),
        })
    }
}

/// Why a request is refused. `Display` is the `error-reason` string of the reply; where
/// rtpengine has a string for the case, it is the same text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    #[error("Invalid data (no payload)")]
    NoPayload,
    #[error("Could not decode bencode dictionary")]
    BencodeDecode,
    #[error("Failed to parse JSON document")]
    JsonParse,
    #[error("Invalid NG data format")]
    InvalidFormat,
    #[error("Dictionary contains no key \"command\"")]
    NoCommand,
    #[error("Unrecognized command")]
    UnrecognizedCommand,
    /// An rtpengine command that rtpanchor does not implement (name with spaces).
    #[error("Unsupported command: {0}")]
    UnsupportedCommand(String),
    #[error("No call-id in message")]
    NoCallId,
    #[error("No from-tag in message")]
    NoFromTag,
    /// Not raised by the parser; for the session layer (e.g. an answer without to-tag).
    #[error("No to-tag in message")]
    NoToTag,
    #[error("No SDP body in message")]
    NoSdp,
    /// A key's value has the wrong bencode/JSON type.
    #[error("Invalid type for key \"{key}\": expected {expected}")]
    WrongType { key: String, expected: &'static str },
    /// A key's value has the right type but cannot be used.
    #[error("Invalid value for key \"{key}\": {reason}")]
    InvalidValue { key: String, reason: String },
    /// The request asks for transcoding (names the flag or key).
    #[error("Transcoding is not supported: {0}")]
    TranscodingUnsupported(String),
    /// The request (or, from the session layer, the offer) needs a transport conversion.
    #[error("Unsupported transport protocol conversion: {0}")]
    UnsupportedTransport(String),
}

/// Most warnings kept per request; the rest are counted in one final entry.
pub const MAX_WARNINGS: usize = 16;

/// A parsed ng request. Fields not given in the request keep their defaults (`None`, empty,
/// `false`); validation of combinations against the SDP is the session layer's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgRequest {
    pub command: Command,
    pub call_id: Option<String>,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub via_branch: Option<String>,
    /// The SDP body, bytes as received.
    pub sdp: Option<Vec<u8>>,
    pub flags: Flags,
    /// `replace: origin`: rewrite the o= address.
    pub replace_origin: bool,
    /// `replace: origin-full`: rewrite the whole o= line.
    pub replace_origin_full: bool,
    /// `replace: session-connection`: rewrite the session-level c= line.
    pub replace_session_connection: bool,
    /// `replace: session-name`.
    pub replace_session_name: bool,
    /// `replace: SDP-version`.
    pub replace_sdp_version: bool,
    /// `replace: username`.
    pub replace_username: bool,
    /// `replace: zero-address`.
    pub replace_zero_address: bool,
    /// `replace: force-increment-sdp-ver`.
    pub replace_force_increment_sdp_version: bool,
    pub ice: Option<IceMode>,
    pub rtcp_mux: RtcpMuxOpts,
    /// Logical interface names, from-side first (`direction`, `from-interface`/`to-interface`,
    /// `internal`/`external` tokens). An empty string means "default".
    pub direction: Vec<String>,
    /// `received-from`: the source address of the SIP message.
    pub received_from: Option<IpAddr>,
    pub media_address: Option<IpAddr>,
    pub address_family: Option<AddressFamily>,
    /// Requested SDP protocol (`RTP/AVP`, `RTP/SAVPF`, ..., or `accept`), verbatim; from the key
    /// or composed from transport tokens.
    pub transport_protocol: Option<String>,
    pub label: Option<String>,
    pub to_label: Option<String>,
    /// Seconds; 0 = delete immediately.
    pub delete_delay: Option<u32>,
    /// `list`: most call-ids to return.
    pub limit: Option<usize>,
    /// `supports` contains `load limit`: the peer understands `result: load limit`.
    pub supports_load_limit: bool,
    pub dtls: Option<DtlsMode>,
    /// `SDES` options, normalised (e.g. `off`, `no-AES_CM_128_HMAC_SHA1_32` → `no-aes-cm-...`).
    pub sdes: Vec<String>,
    pub codec: CodecOpts,
    pub endpoint_learning: Option<EndpointLearning>,
    /// IP TOS/DSCP byte for our media packets.
    pub tos: Option<u8>,
    /// One entry per ignored key/flag, e.g. "Unknown flag: foo", "Recording is not supported".
    pub warnings: Vec<String>,
}

impl NgRequest {
    /// A request with only the command set.
    pub fn new(command: Command) -> NgRequest {
        NgRequest {
            command,
            call_id: None,
            from_tag: None,
            to_tag: None,
            via_branch: None,
            sdp: None,
            flags: Flags::default(),
            replace_origin: false,
            replace_origin_full: false,
            replace_session_connection: false,
            replace_session_name: false,
            replace_sdp_version: false,
            replace_username: false,
            replace_zero_address: false,
            replace_force_increment_sdp_version: false,
            ice: None,
            rtcp_mux: RtcpMuxOpts::default(),
            direction: Vec::new(),
            received_from: None,
            media_address: None,
            address_family: None,
            transport_protocol: None,
            label: None,
            to_label: None,
            delete_delay: None,
            limit: None,
            supports_load_limit: false,
            dtls: None,
            sdes: Vec::new(),
            codec: CodecOpts::default(),
            endpoint_learning: None,
            tos: None,
            warnings: Vec::new(),
        }
    }
}

/// Parses a request body (the part after the cookie). The format is returned on both paths
/// because the reply, error or not, must use it.
pub fn parse_request(body: &[u8]) -> Result<(NgRequest, BodyFormat), (NgError, BodyFormat)> {
    match body.first() {
        None => Err((NgError::NoPayload, BodyFormat::Bencode)),
        Some(b'd') => {
            let fmt = BodyFormat::Bencode;
            // Tolerate a trailing newline from hand-made requests (`echo … | nc -u`).
            let trimmed = trim_end_ws(body);
            let doc = bencode::decode(trimmed).map_err(|_| (NgError::BencodeDecode, fmt))?;
            parse_request_value(&doc)
                .map(|r| (r, fmt))
                .map_err(|e| (e, fmt))
        }
        Some(b'{') => {
            let fmt = BodyFormat::Json;
            let doc = json::parse(body).map_err(|_| (NgError::JsonParse, fmt))?;
            parse_request_value(&doc.as_value())
                .map(|r| (r, fmt))
                .map_err(|e| (e, fmt))
        }
        Some(_) => Err((NgError::InvalidFormat, BodyFormat::Bencode)),
    }
}

fn trim_end_ws(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// Parses a decoded request dictionary (bencode, or JSON via [`Owned::as_value`]).
pub fn parse_request_value(doc: &Value<'_>) -> Result<NgRequest, NgError> {
    let entries = doc.as_dict().ok_or(NgError::InvalidFormat)?;
    let command_value = entries
        .iter()
        .find(|(k, _)| Norm::new(k).name() == "command")
        .map(|(_, v)| v)
        .ok_or(NgError::NoCommand)?;
    let command_name = command_value.as_bytes().ok_or(NgError::WrongType {
        key: "command".into(),
        expected: "string",
    })?;
    let command = Command::from_name(command_name)?;
    if command == Command::Ping {
        // rtpengine answers ping without looking at anything else.
        return Ok(NgRequest::new(command));
    }

    let mut p = ReqParser {
        req: NgRequest::new(command),
        seen: 0,
        transport: None,
        suppressed: 0,
    };
    for (raw_key, value) in entries {
        let norm = Norm::new(raw_key);
        match lookup_key(norm.name()) {
            Lookup::Known(Key::Command) => {}
            Lookup::Known(key) => {
                // First occurrence wins, whatever the spelling.
                let bit = 1u64 << (key as u8);
                if p.seen & bit == 0 {
                    p.seen |= bit;
                    p.apply_key(key, value)?;
                }
            }
            Lookup::Unsupported(name) => p.warn(format!("{name} is not supported")),
            Lookup::Unknown => p.warn(format!("Unknown key: {}", snippet(raw_key))),
        }
    }
    p.finish()
}

/// Known keys. Fewer than 64, so a `u64` bitmask tracks which were seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Key {
    Command,
    CallId,
    FromTag,
    ToTag,
    ViaBranch,
    Sdp,
    Flags,
    RtppFlags,
    Replace,
    Ice,
    IceLite,
    RtcpMux,
    Direction,
    FromInterface,
    ToInterface,
    ReceivedFrom,
    MediaAddress,
    AddressFamily,
    TransportProtocol,
    Label,
    ToLabel,
    DeleteDelay,
    Limit,
    Supports,
    SipMessageType,
    Dtls,
    Sdes,
    Osrtp,
    Codec,
    CodecStrip,
    CodecOffer,
    CodecExcept,
    CodecTranscode,
    CodecMask,
    CodecSet,
    CodecAccept,
    CodecConsume,
    Ptime,
    Tos,
    RecordCall,
    EndpointLearning,
}

// The `seen` bitmasks are u64s.
const _: () = assert!((Key::EndpointLearning as u8) < 64);

impl Key {
    /// Canonical name, for messages.
    fn name(self) -> &'static str {
        match self {
            Key::Command => "command",
            Key::CallId => "call-id",
            Key::FromTag => "from-tag",
            Key::ToTag => "to-tag",
            Key::ViaBranch => "via-branch",
            Key::Sdp => "sdp",
            Key::Flags => "flags",
            Key::RtppFlags => "rtpp-flags",
            Key::Replace => "replace",
            Key::Ice => "ICE",
            Key::IceLite => "ICE-lite",
            Key::RtcpMux => "rtcp-mux",
            Key::Direction => "direction",
            Key::FromInterface => "from-interface",
            Key::ToInterface => "to-interface",
            Key::ReceivedFrom => "received-from",
            Key::MediaAddress => "media-address",
            Key::AddressFamily => "address-family",
            Key::TransportProtocol => "transport-protocol",
            Key::Label => "label",
            Key::ToLabel => "to-label",
            Key::DeleteDelay => "delete-delay",
            Key::Limit => "limit",
            Key::Supports => "supports",
            Key::SipMessageType => "sip-message-type",
            Key::Dtls => "DTLS",
            Key::Sdes => "SDES",
            Key::Osrtp => "OSRTP",
            Key::Codec => "codec",
            Key::CodecStrip => "codec-strip",
            Key::CodecOffer => "codec-offer",
            Key::CodecExcept => "codec-except",
            Key::CodecTranscode => "codec-transcode",
            Key::CodecMask => "codec-mask",
            Key::CodecSet => "codec-set",
            Key::CodecAccept => "codec-accept",
            Key::CodecConsume => "codec-consume",
            Key::Ptime => "ptime",
            Key::Tos => "TOS",
            Key::RecordCall => "record-call",
            Key::EndpointLearning => "endpoint-learning",
        }
    }
}

enum Lookup {
    Known(Key),
    /// Known to rtpengine, harmless to ignore: a warning naming it.
    Unsupported(&'static str),
    Unknown,
}

fn lookup_key(norm: &str) -> Lookup {
    let k = match norm {
        "command" => Key::Command,
        "call-id" | "callid" => Key::CallId,
        "from-tag" => Key::FromTag,
        "to-tag" => Key::ToTag,
        "via-branch" => Key::ViaBranch,
        "sdp" => Key::Sdp,
        "flags" => Key::Flags,
        "rtpp-flags" => Key::RtppFlags,
        "replace" => Key::Replace,
        "ice" => Key::Ice,
        "ice-lite" => Key::IceLite,
        "rtcp-mux" => Key::RtcpMux,
        "direction" => Key::Direction,
        "from-interface" => Key::FromInterface,
        "to-interface" => Key::ToInterface,
        "received-from" => Key::ReceivedFrom,
        "media-address" => Key::MediaAddress,
        "address-family" => Key::AddressFamily,
        "transport-protocol" => Key::TransportProtocol,
        "label" | "set-label" | "from-label" => Key::Label,
        "to-label" => Key::ToLabel,
        "delete-delay" => Key::DeleteDelay,
        "limit" => Key::Limit,
        "supports" => Key::Supports,
        "sip-message-type" => Key::SipMessageType,
        "dtls" => Key::Dtls,
        "sdes" => Key::Sdes,
        "osrtp" => Key::Osrtp,
        "codec" => Key::Codec,
        "codec-strip" => Key::CodecStrip,
        "codec-offer" => Key::CodecOffer,
        "codec-except" => Key::CodecExcept,
        "codec-transcode" | "transcode" => Key::CodecTranscode,
        "codec-mask" => Key::CodecMask,
        "codec-set" => Key::CodecSet,
        "codec-accept" => Key::CodecAccept,
        "codec-consume" => Key::CodecConsume,
        "ptime" | "ptime-reverse" | "repacketize" => Key::Ptime,
        "tos" => Key::Tos,
        "record-call" => Key::RecordCall,
        "endpoint-learning" => Key::EndpointLearning,
        "metadata" => return Lookup::Unsupported("metadata"),
        "xmlrpc-callback" => return Lookup::Unsupported("xmlrpc-callback"),
        "media-echo" => return Lookup::Unsupported("media-echo"),
        "t.38" | "t38" => return Lookup::Unsupported("T.38"),
        "sdp-attr" => return Lookup::Unsupported("sdp-attr"),
        "sdp-media-remove" => return Lookup::Unsupported("sdp-media-remove"),
        "template" => return Lookup::Unsupported("template"),
        "from-tags" => return Lookup::Unsupported("from-tags"),
        "dtls-fingerprint" => return Lookup::Unsupported("DTLS-fingerprint"),
        "dtls-reverse" => return Lookup::Unsupported("DTLS-reverse"),
        "output-destination" => return Lookup::Unsupported("output-destination"),
        "recording-file" | "recording-path" | "recording-pattern" => {
            return Lookup::Unsupported("recording")
        }
        "generate-rtcp" => return Lookup::Unsupported("generate-RTCP"),
        "frequency" | "volume" | "dtmf-log-dest" | "dtmf-delay" | "delay-buffer" => {
            return Lookup::Unsupported("DTMF/media options")
        }
        _ => return Lookup::Unknown,
    };
    Lookup::Known(k)
}

/// Bare flags that rtpengine knows and that we accept without effect (already our behaviour).
const SILENT_FLAGS: &[&str] = &["passthrough", "debug", "no-redis-update"];

/// Bare flags that rtpengine knows, which we do not implement, and whose absence does not
/// break a call: a warning "X is not supported".
const WARN_FLAGS: &[&str] = &[
    "inject-dtmf",
    "detect-dtmf",
    "single-codec",
    "symmetric-codecs",
    "asymmetric-codecs",
    "reorder-codecs",
    "no-codec-renegotiation",
    "pad-crypto",
    "siprec",
    "start-recording",
    "discard-recording",
    "no-passthrough",
    "no-jitter-buffer",
    "strip-extmap",
    "mirror-rtcp",
    "block-dtmf",
    "block-egress",
    "recrypt",
    "allow-asymmetric-codecs",
    "reuse-codecs",
];

/// Bare flags that demand transcoding.
const TRANSCODE_FLAGS: &[&str] = &["always-transcode", "allow-transcoding"];

struct ReqParser {
    req: NgRequest,
    /// Bit per [`Key`] seen as a dictionary key.
    seen: u64,
    /// Transport tokens seen (`RTP/AVP`, `SRTP`, ...), applied at the end.
    transport: Option<TransportBits>,
    /// Warnings dropped beyond [`MAX_WARNINGS`].
    suppressed: usize,
}

/// Where a value came from: dictionary entries may be nested dictionaries and lists; flag
/// tokens never recurse into `flags`/`rtpp-flags`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Dict,
    Token,
}

impl ReqParser {
    fn warn(&mut self, w: String) {
        if self.req.warnings.len() < MAX_WARNINGS {
            self.req.warnings.push(w);
        } else {
            self.suppressed += 1;
        }
    }

    fn finish(mut self) -> Result<NgRequest, NgError> {
        if self.suppressed > 0 {
            let n = self.suppressed;
            self.req
                .warnings
                .push(format!("{n} more warnings suppressed"));
        }
        if let Some(t) = self.transport {
            self.req.transport_protocol = Some(t.protocol().to_owned());
        }
        let r = self.req;
        let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
        match r.command {
            Command::Offer | Command::Answer => {
                // rtpengine's order of checks.
                if r.sdp.as_deref().is_none_or(<[u8]>::is_empty) {
                    return Err(NgError::NoSdp);
                }
                if empty(&r.call_id) {
                    return Err(NgError::NoCallId);
                }
                if empty(&r.from_tag) {
                    return Err(NgError::NoFromTag);
                }
            }
            Command::Delete | Command::Query => {
                if empty(&r.call_id) {
                    return Err(NgError::NoCallId);
                }
            }
            Command::Ping | Command::List | Command::Statistics => {}
        }
        Ok(r)
    }

    fn apply_key(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        self.apply_key_from(key, v, Source::Dict)
    }

    fn apply_key_from(&mut self, key: Key, v: &Value<'_>, src: Source) -> Result<(), NgError> {
        let r = &mut self.req;
        match key {
            Key::Command | Key::SipMessageType => {}
            Key::CallId => r.call_id = Some(want_ident(key, v)?),
            Key::FromTag => r.from_tag = Some(want_ident(key, v)?),
            Key::ToTag => r.to_tag = Some(want_ident(key, v)?),
            Key::ViaBranch => r.via_branch = Some(want_ident(key, v)?),
            Key::Sdp => r.sdp = Some(want_bytes(key, v)?.to_vec()),
            Key::Flags | Key::RtppFlags if src == Source::Token => {
                self.warn(format!("Nested {} ignored", key.name()));
            }
            Key::Flags => {
                for item in list_items(key, v)? {
                    let token = want_bytes(key, item)?;
                    self.apply_flag_item(token)?;
                }
            }
            Key::RtppFlags => {
                let s = want_bytes(key, v)?;
                let items = flags::lex_rtpp_flags(s).map_err(|e| NgError::InvalidValue {
                    key: key.name().into(),
                    reason: e.to_string(),
                })?;
                for item in &items {
                    match item {
                        RtppItem::Flag(token) => self.apply_flag(token)?,
                        RtppItem::KeyValue(k, val) => self.apply_key_value(k, val)?,
                    }
                }
            }
            Key::Replace => {
                for item in list_items(key, v)? {
                    let opt = want_bytes(key, item)?;
                    self.apply_replace(opt);
                }
            }
            Key::Ice => {
                let val = want_bytes(key, v)?;
                self.apply_ice(val);
            }
            Key::IceLite => {
                let val = want_bytes(key, v)?;
                if !matches!(Norm::new(val).name(), "off" | "no" | "none") {
                    self.warn("ICE-lite is not supported".into());
                }
            }
            Key::RtcpMux => {
                for item in list_items(key, v)? {
                    let opt = want_bytes(key, item)?;
                    self.apply_rtcp_mux(opt);
                }
            }
            Key::Direction => {
                for item in list_items(key, v)? {
                    let iface = want_text(key, item)?;
                    r.direction.push(iface);
                }
            }
            Key::FromInterface | Key::ToInterface => {
                let iface = want_text(key, v)?;
                let slot = usize::from(key == Key::ToInterface);
                if r.direction.len() <= slot {
                    r.direction.resize(slot + 1, String::new());
                }
                r.direction[slot] = iface;
            }
            Key::ReceivedFrom => r.received_from = Some(parse_received_from(key, v)?),
            Key::MediaAddress => {
                let text = want_bytes(key, v)?;
                r.media_address = Some(parse_ip(key, text)?);
            }
            Key::AddressFamily => {
                let val = want_bytes(key, v)?;
                r.address_family = Some(
                    AddressFamily::from_name(Norm::new(val).name())
                        .ok_or_else(|| invalid(key, val))?,
                );
            }
            Key::TransportProtocol => {
                r.transport_protocol = Some(want_text(key, v)?);
                // An explicit key overrides tokens seen so far.
                self.transport = None;
            }
            Key::Label => r.label = Some(want_text(key, v)?),
            Key::ToLabel => r.to_label = Some(want_text(key, v)?),
            Key::DeleteDelay => {
                let n = want_int(key, v)?;
                r.delete_delay = Some(u32::try_from(n).map_err(|_| invalid_num(key, n))?);
            }
            Key::Limit => {
                let n = want_int(key, v)?;
                r.limit = Some(usize::try_from(n).map_err(|_| invalid_num(key, n))?);
            }
            Key::Tos => {
                let n = want_int(key, v)?;
                r.tos = Some(u8::try_from(n).map_err(|_| invalid_num(key, n))?);
            }
            Key::Supports => {
                for item in list_items(key, v)? {
                    if let Some(b) = item.as_bytes() {
                        if Norm::new(b).name() == "load-limit" {
                            r.supports_load_limit = true;
                        }
                    }
                }
            }
            Key::Dtls => {
                let val = want_bytes(key, v)?;
                self.apply_dtls(val)?;
            }
            Key::Sdes => {
                for item in list_items(key, v)? {
                    let opt = want_bytes(key, item)?;
                    r.sdes.push(flags::normalize(opt));
                }
            }
            Key::Osrtp => {
                if list_items(key, v)?.iter().any(|i| {
                    i.as_bytes()
                        .is_some_and(|b| !matches!(Norm::new(b).name(), "off" | ""))
                }) {
                    self.warn("OSRTP is not supported".into());
                }
            }
            Key::Codec => {
                let entries = v.as_dict().ok_or_else(|| wrong_type(key, "dictionary"))?;
                // First occurrence of each sub-key wins, as for the top level.
                let mut seen = 0u64;
                for (sub, val) in entries {
                    match codec_key(Norm::new(sub).name()) {
                        Some(k) => {
                            let bit = 1u64 << (k as u8);
                            if seen & bit == 0 {
                                seen |= bit;
                                self.apply_key_from(k, val, src)?;
                            }
                        }
                        None => self.warn(format!("Unknown codec option: {}", snippet(sub))),
                    }
                }
            }
            Key::CodecStrip | Key::CodecOffer | Key::CodecExcept => {
                for item in list_items(key, v)? {
                    let name = want_text(key, item)?;
                    self.push_codec(key, name);
                }
            }
            Key::CodecTranscode => {
                // An empty list asks for nothing.
                if !list_items(key, v)?.is_empty() {
                    return Err(NgError::TranscodingUnsupported("codec-transcode".into()));
                }
            }
            Key::CodecMask | Key::CodecSet | Key::CodecAccept | Key::CodecConsume => {
                if !list_items(key, v)?.is_empty() {
                    self.warn(format!("{} is not supported", key.name()));
                }
            }
            Key::Ptime => self.warn("ptime is not supported".into()),
            Key::RecordCall => {
                let on = match v {
                    Value::Int(i) => *i != 0,
                    Value::Bytes(b) => {
                        !matches!(Norm::new(b).name(), "no" | "off" | "false" | "0" | "")
                    }
                    _ => return Err(wrong_type(key, "string")),
                };
                if on {
                    self.record_call();
                }
            }
            Key::EndpointLearning => {
                let val = want_bytes(key, v)?;
                self.apply_endpoint_learning(val);
            }
        }
        Ok(())
    }

    /// One item of the `flags` list: `key=value` or a flag token.
    fn apply_flag_item(&mut self, token: &[u8]) -> Result<(), NgError> {
        match token.iter().position(|&b| b == b'=') {
            Some(eq) if eq > 0 && eq + 1 < token.len() => {
                self.apply_key_value(&token[..eq], &Value::Bytes(&token[eq + 1..]))
            }
            // "key=" is the bare flag "key".
            Some(eq) if eq > 0 => self.apply_flag(&token[..eq]),
            _ => self.apply_flag(token),
        }
    }

    /// `key=value` from a flags token or `rtpp-flags`: like a dictionary entry, except that
    /// later tokens override (no first-wins) and flag lists cannot nest.
    fn apply_key_value(&mut self, raw_key: &[u8], v: &Value<'_>) -> Result<(), NgError> {
        let norm = Norm::new(raw_key);
        match lookup_key(norm.name()) {
            Lookup::Known(key) => self.apply_key_from(key, v, Source::Token),
            Lookup::Unsupported(name) => {
                self.warn(format!("{name} is not supported"));
                Ok(())
            }
            Lookup::Unknown => {
                self.warn(format!("Unknown flag: {}", snippet(raw_key)));
                Ok(())
            }
        }
    }

    /// A bare flag token.
    fn apply_flag(&mut self, token: &[u8]) -> Result<(), NgError> {
        let norm = Norm::new(token);
        let name = norm.name();
        if self.req.flags.set(name) {
            if name == "record-call" {
                self.record_call();
            }
            return Ok(());
        }
        let mut bits = self.transport.unwrap_or_default();
        if bits.apply(name) {
            self.transport = Some(bits);
            return Ok(());
        }
        match name {
            "internal" | "external" => {
                self.req.direction.push(name.to_owned());
                return Ok(());
            }
            "webrtc" => {
                // rtpengine's shorthand for the WebRTC side of a call; whether it means a
                // conversion depends on the SDP, so it is recorded for the session layer.
                self.req.transport_protocol = Some("UDP/TLS/RTP/SAVPF".into());
                self.transport = None;
                self.req.ice = Some(IceMode::Force);
                self.req.rtcp_mux.offer = true;
                self.req.sdes.push("off".into());
                return Ok(());
            }
            n if TRANSCODE_FLAGS.contains(&n) => {
                return Err(NgError::TranscodingUnsupported(n.to_owned()))
            }
            n if SILENT_FLAGS.contains(&n) => return Ok(()),
            n if WARN_FLAGS.contains(&n) => {
                self.warn(format!("{n} is not supported"));
                return Ok(());
            }
            _ => {}
        }
        // Prefixed flags: the rest of the token is the value, with its original case.
        let prefixed: &[(&str, Option<Key>)] = &[
            ("replace-", Some(Key::Replace)),
            ("rtcp-mux-", Some(Key::RtcpMux)),
            ("sdes-", Some(Key::Sdes)),
            ("osrtp-", Some(Key::Osrtp)),
            ("codec-strip-", Some(Key::CodecStrip)),
            ("codec-offer-", Some(Key::CodecOffer)),
            ("codec-except-", Some(Key::CodecExcept)),
            ("codec-transcode-", Some(Key::CodecTranscode)),
            ("transcode-", Some(Key::CodecTranscode)),
            ("codec-mask-", Some(Key::CodecMask)),
            ("codec-set-", Some(Key::CodecSet)),
            ("codec-accept-", Some(Key::CodecAccept)),
            ("codec-consume-", Some(Key::CodecConsume)),
            ("endpoint-learning-", Some(Key::EndpointLearning)),
            ("dtls-", Some(Key::Dtls)),
            ("ice-", Some(Key::Ice)),
            ("t38-", None),
            ("t.38-", None),
            ("from-tags-", None),
        ];
        for (prefix, key) in prefixed {
            if let Some(at) = norm.after_prefix(prefix) {
                let value = Value::Bytes(&token[at..]);
                return match key {
                    Some(key) => self.apply_key_from(*key, &value, Source::Token),
                    None => {
                        self.warn(format!("{} is not supported", prefix.trim_end_matches('-')));
                        Ok(())
                    }
                };
            }
        }
        self.warn(format!("Unknown flag: {}", snippet(token)));
        Ok(())
    }

    fn record_call(&mut self) {
        self.req.flags.record_call = true;
        self.warn("Recording is not supported".into());
    }

    fn apply_replace(&mut self, opt: &[u8]) {
        let r = &mut self.req;
        match Norm::new(opt).name() {
            "origin" => r.replace_origin = true,
            "origin-full" => r.replace_origin_full = true,
            "session-connection" => r.replace_session_connection = true,
            "session-name" => r.replace_session_name = true,
            "sdp-version" => r.replace_sdp_version = true,
            "username" => r.replace_username = true,
            "zero-address" => r.replace_zero_address = true,
            "force-increment-sdp-ver" => r.replace_force_increment_sdp_version = true,
            _ => self.warn(format!("Unknown replace option: {}", snippet(opt))),
        }
    }

    fn apply_rtcp_mux(&mut self, opt: &[u8]) {
        if !self.req.rtcp_mux.set(Norm::new(opt).name()) {
            self.warn(format!("Unknown rtcp-mux option: {}", snippet(opt)));
        }
    }

    fn apply_ice(&mut self, val: &[u8]) {
        match IceMode::from_name(Norm::new(val).name()) {
            Some(mode) => self.req.ice = Some(mode),
            None => self.warn(format!("Unknown ICE option: {}", snippet(val))),
        }
    }

    fn apply_dtls(&mut self, val: &[u8]) -> Result<(), NgError> {
        self.req.dtls = Some(match Norm::new(val).name() {
            "off" | "no" | "disable" | "disabled" => DtlsMode::Off,
            "passive" => DtlsMode::Passive,
            _ => {
                return Err(NgError::UnsupportedTransport(format!(
                    "DTLS={}",
                    snippet(val)
                )))
            }
        });
        Ok(())
    }

    fn apply_endpoint_learning(&mut self, val: &[u8]) {
        match EndpointLearning::from_name(Norm::new(val).name()) {
            Some(el) => self.req.endpoint_learning = Some(el),
            None => self.warn(format!(
                "Unknown endpoint-learning option: {}",
                snippet(val)
            )),
        }
    }

    fn push_codec(&mut self, key: Key, name: String) {
        let c = &mut self.req.codec;
        match key {
            Key::CodecStrip => c.strip.push(name),
            Key::CodecOffer => c.offer.push(name),
            _ => c.except.push(name),
        }
    }
}

/// Sub-keys of the `codec` dictionary.
fn codec_key(norm: &str) -> Option<Key> {
    Some(match norm {
        "strip" => Key::CodecStrip,
        "offer" => Key::CodecOffer,
        "except" => Key::CodecExcept,
        "transcode" => Key::CodecTranscode,
        "mask" => Key::CodecMask,
        "set" => Key::CodecSet,
        "accept" => Key::CodecAccept,
        "consume" => Key::CodecConsume,
        _ => return None,
    })
}

/// At most 64 characters of `b`, lossily decoded, for messages.
fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.into_owned(),
    }
}

fn wrong_type(key: Key, expected: &'static str) -> NgError {
    NgError::WrongType {
        key: key.name().into(),
        expected,
    }
}

fn invalid(key: Key, val: &[u8]) -> NgError {
    NgError::InvalidValue {
        key: key.name().into(),
        reason: snippet(val),
    }
}

fn invalid_num(key: Key, n: i64) -> NgError {
    NgError::InvalidValue {
        key: key.name().into(),
        reason: format!("{n} is out of range"),
    }
}

fn want_bytes<'a>(key: Key, v: &Value<'a>) -> Result<&'a [u8], NgError> {
    v.as_bytes().ok_or_else(|| wrong_type(key, "string"))
}

/// Identifiers (call-id, tags, branch) must be UTF-8: SIP restricts them to ASCII tokens, and
/// a lossy conversion could make two different ids collide.
fn want_ident(key: Key, v: &Value<'_>) -> Result<String, NgError> {
    let b = want_bytes(key, v)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| NgError::InvalidValue {
            key: key.name().into(),
            reason: "not valid UTF-8".into(),
        })
}

/// Free text (labels, interface names): lossy.
fn want_text(key: Key, v: &Value<'_>) -> Result<String, NgError> {
    want_bytes(key, v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer, given as one or as decimal text (flag tokens carry text).
fn want_int(key: Key, v: &Value<'_>) -> Result<i64, NgError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| invalid(key, b)),
        _ => Err(wrong_type(key, "integer")),
    }
}

/// A list's items; a single string counts as a one-item list (JSON clients and `key=value`
/// tokens give scalars).
fn list_items<'v, 'a>(key: Key, v: &'v Value<'a>) -> Result<&'v [Value<'a>], NgError> {
    match v {
        Value::List(items) => Ok(items),
        Value::Bytes(_) => Ok(std::slice::from_ref(v)),
        _ => Err(wrong_type(key, "list")),
    }
}

fn parse_ip(key: Key, text: &[u8]) -> Result<IpAddr, NgError> {
    let s = std::str::from_utf8(text).map_err(|_| invalid(key, text))?;
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>().map_err(|_| invalid(key, text))
}

/// `received-from`: `["IP4", "1.2.3.4"]` (family checked against the address) or a bare
/// address.
fn parse_received_from(key: Key, v: &Value<'_>) -> Result<IpAddr, NgError> {
    let items = list_items(key, v)?;
    match items {
        [addr] => parse_ip(key, want_bytes(key, addr)?),
        [family, addr] => {
            let fam_raw = want_bytes(key, family)?;
            let ip = parse_ip(key, want_bytes(key, addr)?)?;
            let family_ok = match AddressFamily::from_name(Norm::new(fam_raw).name()) {
                Some(AddressFamily::Ip4) => ip.is_ipv4(),
                Some(AddressFamily::Ip6) => ip.is_ipv6(),
                None => false,
            };
            if family_ok {
                Ok(ip)
            } else {
                Err(invalid(key, fam_raw))
            }
        }
        _ => Err(NgError::InvalidValue {
            key: key.name().into(),
            reason: "expected [family, address]".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A SIPp-style SDP (CRLF line ends).
    const SIPP_SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// The offer rtpengine 10.5 was probed with (ng-protocol notes §1.3).
    const PROBE_SDP: &str = "v=0\r\no=- 1795647323 1 IN IP4 127.0.0.1\r\ns=probe\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 51650 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\na=sendrecv\r\n";

    fn bstr(s: &str) -> String {
        format!("{}:{}", s.len(), s)
    }

    /// Kamailio 5.6 offer, key order as sent (peers notes §1.2).
    fn kamailio_offer() -> Vec<u8> {
        format!(
            "d8:supportsl10:load limite3:sdp{}7:replacel6:origin18:session-connectione\
             7:call-id17:1-25725@127.0.0.113:received-froml3:IP49:127.0.0.1e\
             8:from-tag15:25725SIPpTag0917:command5:offere",
            bstr(SIPP_SDP)
        )
        .into_bytes()
    }

    fn probe_offer() -> Vec<u8> {
        format!(
            "d7:command5:offer7:call-id21:probe-call-17956473238:from-tag4:tagA\
             10:via-branch9:z9hG4bK-13:sdp{}5:flagsl13:trust-addresse\
             7:replacel6:origin18:session-connectione3:ICE6:remove\
             13:received-froml3:IP49:127.0.0.1e5:label6:callere",
            bstr(PROBE_SDP)
        )
        .into_bytes()
    }

    fn parse(body: &[u8]) -> Result<NgRequest, NgError> {
        parse_request(body).map(|(r, _)| r).map_err(|(e, _)| e)
    }

    fn parse_ok(body: &[u8]) -> NgRequest {
        match parse_request(body) {
            Ok((r, _)) => r,
            Err((e, _)) => panic!("{e}: {}", body.escape_ascii()),
        }
    }

    /// An offer with the given extra bencoded entries.
    fn offer_with(extra: &str) -> Vec<u8> {
        format!(
            "d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp{}{extra}e",
            bstr(SIPP_SDP)
        )
        .into_bytes()
    }

    fn offer_flags(flags: &[&str]) -> Result<NgRequest, NgError> {
        let list: String = flags.iter().map(|f| bstr(f)).collect();
        parse(&offer_with(&format!("5:flagsl{list}e")))
    }

    fn offer_rtpp(s: &str) -> Result<NgRequest, NgError> {
        parse(&offer_with(&format!("10:rtpp-flags{}", bstr(s))))
    }

    #[test]
    fn split_datagram_rules() {
        assert_eq!(
            split_datagram(b"f1e73f40_1 d7:command4:pinge"),
            Some((&b"f1e73f40_1"[..], &b"d7:command4:pinge"[..]))
        );
        // Split at the first space only; the body may contain spaces.
        assert_eq!(
            split_datagram(b"c d3:a b1:xe"),
            Some((&b"c"[..], &b"d3:a b1:xe"[..]))
        );
        assert_eq!(split_datagram(b"cookie "), Some((&b"cookie"[..], &b""[..])));
        assert_eq!(split_datagram(b"nocookie"), None);
        assert_eq!(split_datagram(b" d7:command4:pinge"), None);
        assert_eq!(split_datagram(b""), None);
        assert_eq!(split_datagram(b" "), None);
    }

    #[test]
    fn ping_bencode_and_json() {
        let (r, fmt) = parse_request(b"d7:command4:pinge").unwrap();
        assert_eq!((r.command, fmt), (Command::Ping, BodyFormat::Bencode));
        let (r, fmt) = parse_request(br#"{"command":"ping"}"#).unwrap();
        assert_eq!((r.command, fmt), (Command::Ping, BodyFormat::Json));
        // The full exchanges, framed.
        let (cookie, body) = split_datagram(b"ed15dc29_10 {\"command\":\"ping\"}").unwrap();
        let (_, fmt) = parse_request(body).unwrap();
        assert_eq!(
            frame_reply(cookie, fmt, &super::super::reply::pong()),
            br#"ed15dc29_10 {"result":"pong"}"#
        );
        // Ping ignores everything else, even nonsense.
        let r = parse_ok(b"d5:flagsi5e7:command4:ping3:ICEle3:sdpi1ee");
        assert_eq!(r, NgRequest::new(Command::Ping));
    }

    #[test]
    fn kamailio_offer_parses() {
        let (r, fmt) = parse_request(&kamailio_offer()).unwrap();
        assert_eq!(fmt, BodyFormat::Bencode);
        assert_eq!(r.command, Command::Offer);
        assert_eq!(r.call_id.as_deref(), Some("1-25725@127.0.0.1"));
        assert_eq!(r.from_tag.as_deref(), Some("25725SIPpTag091"));
        assert_eq!(r.to_tag, None);
        assert_eq!(r.sdp.as_deref(), Some(SIPP_SDP.as_bytes()));
        assert!(r.supports_load_limit);
        assert!(r.replace_origin && r.replace_session_connection);
        assert!(!r.replace_session_name);
        assert_eq!(r.received_from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(r.flags, Flags::default());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn probe_offer_parses() {
        let r = parse_ok(&probe_offer());
        assert_eq!(r.call_id.as_deref(), Some("probe-call-1795647323"));
        assert_eq!(r.from_tag.as_deref(), Some("tagA"));
        assert_eq!(r.via_branch.as_deref(), Some("z9hG4bK-1"));
        assert_eq!(r.sdp.as_deref(), Some(PROBE_SDP.as_bytes()));
        assert!(r.flags.trust_address);
        assert!(r.replace_origin && r.replace_session_connection);
        assert_eq!(r.ice, Some(IceMode::Remove));
        assert_eq!(r.received_from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(r.label.as_deref(), Some("caller"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn query_and_delete_from_the_notes() {
        let r = parse_ok(b"d7:command5:query7:call-id12:no-such-calle");
        assert_eq!(r.command, Command::Query);
        assert_eq!(r.call_id.as_deref(), Some("no-such-call"));
        let r = parse_ok(b"d7:command6:delete7:call-id12:no-such-call8:from-tag1:xe");
        assert_eq!(r.command, Command::Delete);
        assert_eq!(r.from_tag.as_deref(), Some("x"));
        let r = parse_ok(
            b"d7:command6:delete7:call-id1:c5:flagsl5:fatal4:fast6:to-tag3:alle12:delete-delayi0ee",
        );
        assert!(r.flags.fatal && r.flags.fast && r.flags.to_tag && r.flags.all);
        assert_eq!(r.delete_delay, Some(0));
        let r = parse_ok(b"d7:command4:list5:limiti5ee");
        assert_eq!((r.command, r.limit), (Command::List, Some(5)));
        let r = parse_ok(b"d7:command10:statisticse");
        assert_eq!(r.command, Command::Statistics);
    }

    #[test]
    fn truncation_at_every_offset_never_panics() {
        for full in [
            kamailio_offer(),
            probe_offer(),
            b"d7:command4:pinge".to_vec(),
        ] {
            for cut in 0..full.len() {
                let err = parse(&full[..cut]).unwrap_err();
                let want = if cut == 0 {
                    NgError::NoPayload
                } else {
                    NgError::BencodeDecode
                };
                assert_eq!(err, want, "cut at {cut}");
            }
            assert!(parse(&full).is_ok());
            // The whole datagram too: framing + parsing never panic on any prefix.
            let mut dgram = b"0_25545_1 ".to_vec();
            dgram.extend_from_slice(&full);
            for cut in 0..=dgram.len() {
                if let Some((_, body)) = split_datagram(&dgram[..cut]) {
                    let _ = parse_request(body);
                }
            }
        }
        let json = br#"{"command":"offer","call-id":"c","from-tag":"f","sdp":"v=0","flags":["trust address"]}"#;
        for cut in 1..json.len() {
            assert_eq!(parse(&json[..cut]), Err(NgError::JsonParse), "cut {cut}");
        }
        assert!(parse(json).is_ok());
    }

    #[test]
    fn body_format_errors() {
        assert_eq!(
            parse_request(b""),
            Err((NgError::NoPayload, BodyFormat::Bencode))
        );
        assert_eq!(
            parse_request(b"garbage"),
            Err((NgError::InvalidFormat, BodyFormat::Bencode))
        );
        assert_eq!(parse(b"l7:commande"), Err(NgError::InvalidFormat));
        assert_eq!(parse(b"[1]"), Err(NgError::InvalidFormat));
        assert_eq!(parse(b" d7:command4:pinge"), Err(NgError::InvalidFormat));
        assert_eq!(
            parse_request(b"d7:command4:ping"),
            Err((NgError::BencodeDecode, BodyFormat::Bencode))
        );
        assert_eq!(parse(b"d7:command4:pingeXX"), Err(NgError::BencodeDecode));
        assert_eq!(
            parse_request(b"{\"command\":"),
            Err((NgError::JsonParse, BodyFormat::Json))
        );
        // Trailing whitespace (a hand-typed request) is fine.
        assert!(parse(b"d7:command4:pinge\r\n").is_ok());
        // Huge declared length and deep nesting: decode errors, instantly, no allocation.
        assert_eq!(
            parse(b"d7:command5:offer3:sdp99999999999999999999:v=0e"),
            Err(NgError::BencodeDecode)
        );
        assert_eq!(
            parse(b"d7:command5:offer3:sdp4294967296:v=0e"),
            Err(NgError::BencodeDecode)
        );
        let mut deep = b"d7:command5:offer5:flags".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 60 * 1024));
        assert_eq!(parse(&deep), Err(NgError::BencodeDecode));
        let mut deep = b"{\"command\":\"offer\",\"flags\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 60 * 1024));
        assert_eq!(parse(&deep), Err(NgError::JsonParse));
    }

    #[test]
    fn command_errors() {
        assert_eq!(parse(b"de"), Err(NgError::NoCommand));
        assert_eq!(parse(b"d7:call-id1:ce"), Err(NgError::NoCommand));
        assert_eq!(parse(b"{}"), Err(NgError::NoCommand));
        assert_eq!(
            parse(b"d7:commandi1ee"),
            Err(NgError::WrongType {
                key: "command".into(),
                expected: "string"
            })
        );
        assert!(matches!(
            parse(b"d7:commandl4:pingee"),
            Err(NgError::WrongType { .. })
        ));
        assert_eq!(
            parse(b"d7:command4:ponge"),
            Err(NgError::UnrecognizedCommand)
        );
        assert_eq!(parse(b"d7:command0:e"), Err(NgError::UnrecognizedCommand));
        assert_eq!(
            parse(b"d7:command15:start recordinge"),
            Err(NgError::UnsupportedCommand("start recording".into()))
        );
        assert_eq!(
            parse(br#"{"command":"block_media"}"#),
            Err(NgError::UnsupportedCommand("block media".into()))
        );
        // Command names are case-insensitive; the key may be spelled differently too.
        assert_eq!(parse_ok(b"d7:COMMAND4:PINGe").command, Command::Ping);
        // First "command" wins.
        assert_eq!(
            parse_ok(b"d7:command4:ping7:command5:offere").command,
            Command::Ping
        );
    }

    #[test]
    fn required_keys() {
        let sdp = bstr(SIPP_SDP);
        for cmd in ["offer", "answer"] {
            let c = bstr(cmd);
            assert_eq!(
                parse(format!("d7:command{c}7:call-id1:c8:from-tag1:fe").as_bytes()),
                Err(NgError::NoSdp)
            );
            assert_eq!(
                parse(format!("d7:command{c}7:call-id1:c8:from-tag1:f3:sdp0:e").as_bytes()),
                Err(NgError::NoSdp)
            );
            assert_eq!(
                parse(format!("d7:command{c}8:from-tag1:f3:sdp{sdp}e").as_bytes()),
                Err(NgError::NoCallId)
            );
            assert_eq!(
                parse(format!("d7:command{c}7:call-id0:8:from-tag1:f3:sdp{sdp}e").as_bytes()),
                Err(NgError::NoCallId)
            );
            assert_eq!(
                parse(format!("d7:command{c}7:call-id1:c3:sdp{sdp}e").as_bytes()),
                Err(NgError::NoFromTag)
            );
            // rtpengine checks the SDP first.
            assert_eq!(
                parse(format!("d7:command{c}e").as_bytes()),
                Err(NgError::NoSdp)
            );
        }
        for cmd in ["delete", "query"] {
            assert_eq!(
                parse(format!("d7:command{}e", bstr(cmd)).as_bytes()),
                Err(NgError::NoCallId)
            );
            // Only the call-id is required.
            assert!(parse(format!("d7:command{}7:call-id1:ce", bstr(cmd)).as_bytes()).is_ok());
        }
        assert!(parse(b"d7:command4:liste").is_ok());
    }

    #[test]
    fn wrong_types_are_typed_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("7:call-idi5e", "call-id", "string"),
            ("7:call-idl1:ae", "call-id", "string"),
            ("8:from-tagd1:a1:be", "from-tag", "string"),
            ("3:sdpi1e", "sdp", "string"),
            ("5:flagsi1e", "flags", "list"),
            ("5:flagsd1:a1:be", "flags", "list"),
            ("5:flagsli1ee", "flags", "string"),
            ("3:ICEl6:removee", "ICE", "string"),
            ("7:replaced1:a1:be", "replace", "list"),
            ("12:delete-delayl1:1e", "delete-delay", "integer"),
            ("5:codec5:strip", "codec", "dictionary"),
            ("10:rtpp-flagsi1e", "rtpp-flags", "string"),
            ("11:record-calll3:yese", "record-call", "string"),
            ("9:directionli1ee", "direction", "string"),
        ];
        // call-id/from-tag overrides come first so they are the ones seen (first wins).
        for (entry, key, expected) in cases {
            let body = format!(
                "d7:command5:offer{entry}7:call-id1:c8:from-tag1:f3:sdp{}e",
                bstr(SIPP_SDP)
            );
            assert_eq!(
                parse(body.as_bytes()),
                Err(NgError::WrongType {
                    key: (*key).into(),
                    expected
                }),
                "{entry}"
            );
        }
    }

    #[test]
    fn invalid_values() {
        let cases: &[(&str, &str)] = &[
            ("12:delete-delay3:abc", "delete-delay"),
            ("12:delete-delayi-1e", "delete-delay"),
            ("12:delete-delayi4294967296e", "delete-delay"),
            ("5:limiti-1e", "limit"),
            ("3:TOSi256e", "TOS"),
            ("13:received-froml3:IP47:1.2.3.xe", "received-from"),
            ("13:received-froml3:IP67:1.2.3.4e", "received-from"),
            ("13:received-froml3:IP57:1.2.3.4e", "received-from"),
            ("13:received-froml1:a1:b1:ce", "received-from"),
            ("13:received-fromle", "received-from"),
            ("13:media-address4:nope", "media-address"),
            ("14:address-family3:IP5", "address-family"),
            ("8:from-tag2:\u{ff}\u{fe}", "from-tag"),
        ];
        for (entry, key) in cases {
            let body = format!(
                "d7:command5:offer{entry}7:call-id1:c8:from-tag1:f3:sdp{}e",
                bstr(SIPP_SDP)
            );
            // U+00FF/U+00FE stand for the raw bytes 0xFF/0xFE; re-encode chars as bytes.
            let body: Vec<u8> = body
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap())
                .collect();
            match parse(&body) {
                Err(NgError::InvalidValue { key: k, .. }) => assert_eq!(k, *key, "{entry}"),
                other => panic!("{entry}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_utf8_and_odd_bytes() {
        // SDP bytes are opaque; labels are lossy; identifiers must be UTF-8.
        let body = b"d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp4:v\xff\x00\n5:label2:\xffxe";
        let r = parse_ok(body);
        assert_eq!(r.sdp.as_deref(), Some(&b"v\xff\x00\n"[..]));
        assert_eq!(r.label.as_deref(), Some("\u{fffd}x"));
        let body = b"d7:command5:query7:call-id2:\xc3\x28e";
        assert_eq!(
            parse(body),
            Err(NgError::InvalidValue {
                key: "call-id".into(),
                reason: "not valid UTF-8".into()
            })
        );
        // A non-UTF-8 unknown key is a warning, not an error.
        let r = parse_ok(b"d7:command4:list2:\xff\xfei1ee");
        assert_eq!(r.warnings, ["Unknown key: \u{fffd}\u{fffd}"]);
    }

    #[test]
    fn unsorted_duplicate_and_respelled_keys() {
        // First occurrence wins, across spellings.
        let r = parse_ok(b"d7:call-id5:first7:command5:query7:call id6:second7:call_id5:thirde");
        assert_eq!(r.call_id.as_deref(), Some("first"));
        let r = parse_ok(b"d7:CALL_ID1:x7:command5:querye");
        assert_eq!(r.call_id.as_deref(), Some("x"));
        let r = parse_ok(
            format!(
                "d3:sdp{}13:received froml3:IP49:127.0.0.1e7:command6:answer\
                 8:from tag1:a6:to tag1:b7:call id1:ce",
                bstr(SIPP_SDP)
            )
            .as_bytes(),
        );
        assert_eq!(r.command, Command::Answer);
        assert_eq!(r.received_from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            (r.from_tag.as_deref(), r.to_tag.as_deref()),
            (Some("a"), Some("b"))
        );
    }

    #[test]
    fn flag_spellings() {
        for spelling in [
            "trust address",
            "trust-address",
            "trust_address",
            "Trust-Address",
        ] {
            let r = offer_flags(&[spelling]).unwrap();
            assert!(r.flags.trust_address, "{spelling}");
            assert!(r.warnings.is_empty());
        }
        for spelling in [
            "SIP source address",
            "SIP-source-address",
            "sip_source_address",
        ] {
            assert!(offer_flags(&[spelling]).unwrap().flags.sip_source_address);
        }
        let all = [
            "symmetric",
            "asymmetric",
            "strict source",
            "media handover",
            "port latching",
            "no port latching",
            "no-rtcp-attribute",
            "full-rtcp-attribute",
            "loop protect",
            "original sendrecv",
            "early media",
            "generate mid",
            "reset",
            "unidirectional",
            "NAT-wait",
            "pierce NAT",
            "trickle ICE",
            "directional",
        ];
        let f = offer_flags(&all).unwrap();
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        let f = f.flags;
        assert!(f.symmetric && f.asymmetric && f.strict_source && f.media_handover);
        assert!(f.port_latching && f.no_port_latching && f.no_rtcp_attribute);
        assert!(f.full_rtcp_attribute && f.loop_protect && f.original_sendrecv);
        assert!(f.early_media && f.generate_mid && f.reset && f.unidirectional);
        assert!(f.nat_wait && f.pierce_nat && f.trickle_ice && f.directional);
        assert!(!f.trust_address && !f.fatal);
    }

    #[test]
    fn flag_items_with_values_map_to_keys() {
        let r = offer_flags(&[
            "replace-origin",
            "replace-session-connection",
            "replace_session_name",
            "ICE=remove",
            "rtcp-mux-demux",
            "rtcp-mux-offer",
            "via-branch=z9hG4bK.1",
            "delete-delay=0",
            "address-family=IP6",
            "transport-protocol=RTP/AVP",
            "label=x y",
            "codec-strip-PCMU",
            "codec-strip=G722",
            "codec-offer-PCMA",
            "codec-except-opus",
            "SDES-off",
            "DTLS=off",
            "media-address=2001:db8::1",
            "to-label=callee",
            "endpoint-learning-heuristic",
            "TOS=184",
            "internal",
            "external",
        ])
        .unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.replace_origin && r.replace_session_connection && r.replace_session_name);
        assert_eq!(r.ice, Some(IceMode::Remove));
        assert!(r.rtcp_mux.demux && r.rtcp_mux.offer && !r.rtcp_mux.require);
        assert_eq!(r.via_branch.as_deref(), Some("z9hG4bK.1"));
        assert_eq!(r.delete_delay, Some(0));
        assert_eq!(r.address_family, Some(AddressFamily::Ip6));
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/AVP"));
        assert_eq!(r.label.as_deref(), Some("x y"));
        assert_eq!(r.codec.strip, ["PCMU", "G722"]);
        assert_eq!(r.codec.offer, ["PCMA"]);
        assert_eq!(r.codec.except, ["opus"]);
        assert_eq!(r.sdes, ["off"]);
        assert_eq!(r.dtls, Some(DtlsMode::Off));
        assert_eq!(
            r.media_address,
            Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
        );
        assert_eq!(r.to_label.as_deref(), Some("callee"));
        assert_eq!(r.endpoint_learning, Some(EndpointLearning::Heuristic));
        assert_eq!(r.tos, Some(184));
        assert_eq!(r.direction, ["internal", "external"]);
    }

    #[test]
    fn structured_keys() {
        let r = parse_ok(&offer_with(
            "7:replacel6:origin11:origin-full18:session-connection12:session name\
             11:SDP-version8:username12:zero-address23:force-increment-sdp-vere\
             8:rtcp-muxl6:accept7:require6:rejecte\
             9:directionl4:priv3:pube\
             14:address family3:IP418:transport protocol8:RTP/SAVP\
             5:codecd5:stripl3:all4:PCMUe5:offerl4:PCMAe6:exceptl4:G722ee\
             4:SDESl3:offe4:DTLS7:passive3:ICE11:force-relay\
             17:endpoint-learning9:immediate12:delete delay2:105:limit2:10",
        ));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.replace_origin && r.replace_origin_full && r.replace_session_connection);
        assert!(r.replace_session_name && r.replace_sdp_version && r.replace_username);
        assert!(r.replace_zero_address && r.replace_force_increment_sdp_version);
        assert!(r.rtcp_mux.accept && r.rtcp_mux.require && r.rtcp_mux.reject);
        assert_eq!(r.direction, ["priv", "pub"]);
        assert_eq!(r.address_family, Some(AddressFamily::Ip4));
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/SAVP"));
        assert_eq!(r.codec.strip, ["all", "PCMU"]);
        assert_eq!(r.codec.offer, ["PCMA"]);
        assert_eq!(r.codec.except, ["G722"]);
        assert_eq!(r.sdes, ["off"]);
        assert_eq!(r.dtls, Some(DtlsMode::Passive));
        assert_eq!(r.ice, Some(IceMode::ForceRelay));
        assert_eq!(r.endpoint_learning, Some(EndpointLearning::Immediate));
        assert_eq!(r.delete_delay, Some(10));
        assert_eq!(r.limit, Some(10));
        let r = parse_ok(&offer_with("14:from-interface4:priv12:to-interface3:pub"));
        assert_eq!(r.direction, ["priv", "pub"]);
        let r = parse_ok(&offer_with("12:to-interface3:pub"));
        assert_eq!(r.direction, ["", "pub"]);
        let r = parse_ok(&offer_with("13:received-from7:2001::1"));
        assert!(r.received_from.is_some_and(|ip| ip.is_ipv6()));
        let r = parse_ok(&offer_with("13:received-froml3:IP65:[::1]e"));
        assert_eq!(r.received_from, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        for mode in ["remove", "force", "default", "force-relay", "optional"] {
            let r = parse_ok(&offer_with(&format!("3:ice{}", bstr(mode))));
            assert_eq!(r.ice, IceMode::from_name(mode));
        }
    }

    #[test]
    fn rtpp_flags_string() {
        let r = offer_rtpp(
            "replace-origin replace-session-connection ICE=remove trust-address via-branch=auto-next",
        )
        .unwrap();
        assert!(r.replace_origin && r.replace_session_connection && r.flags.trust_address);
        assert_eq!(r.ice, Some(IceMode::Remove));
        assert_eq!(r.via_branch.as_deref(), Some("auto-next"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        let r = offer_rtpp(
            " SIP-source-address  strict-source\tRTP/SAVPF AVP codec-strip-PCMU \
             codec=[strip=[G722] offer=[PCMA]] replace=[session-name] rtcp-mux=[demux require] \
             received-from=[IP6 ::1] direction=internal direction=external label=\"a b\" \
             delete-delay=5 DTLS=passive SDES-off address-family=IP4 codec-strip=all",
        )
        .unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.flags.sip_source_address && r.flags.strict_source);
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/SAVP"));
        assert_eq!(r.codec.strip, ["PCMU", "G722", "all"]);
        assert_eq!(r.codec.offer, ["PCMA"]);
        assert!(r.replace_session_name);
        assert!(r.rtcp_mux.demux && r.rtcp_mux.require);
        assert_eq!(r.received_from, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(r.direction, ["internal", "external"]);
        assert_eq!(r.label.as_deref(), Some("a b"));
        assert_eq!(r.delete_delay, Some(5));
        assert_eq!(r.dtls, Some(DtlsMode::Passive));
        assert_eq!(r.sdes, ["off"]);
        assert_eq!(r.address_family, Some(AddressFamily::Ip4));

        // Spelled with underscores, as `rtpp_flags` (rtpengine accepts both key spellings).
        let body = offer_with(&format!(
            "10:rtpp_flags{}",
            bstr("DTLS UDP/TLS/RTP/SAVP AVPF")
        ));
        let r = parse_ok(&body);
        assert_eq!(r.transport_protocol.as_deref(), Some("UDP/TLS/RTP/SAVPF"));
        // An explicit transport-protocol key after tokens wins.
        let r = offer_rtpp("SRTP transport-protocol=RTP/AVP").unwrap();
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/AVP"));
        // Identity keys can come from rtpp-flags too; later tokens override.
        let r = parse_ok(
            format!(
                "d7:command5:offer3:sdp{}10:rtpp-flags{}e",
                bstr(SIPP_SDP),
                bstr("call-id=abc from-tag=t1 from-tag=t2 to-tag")
            )
            .as_bytes(),
        );
        assert_eq!(r.call_id.as_deref(), Some("abc"));
        assert_eq!(r.from_tag.as_deref(), Some("t2"));
        assert!(r.flags.to_tag);
        // Unknown tokens and nested flags only warn; empty strings are fine.
        let r = offer_rtpp("frobnicate x=y flags=[a] rtpp-flags=b").unwrap();
        assert_eq!(
            r.warnings,
            [
                "Unknown flag: frobnicate",
                "Unknown flag: x",
                "Nested flags ignored",
                "Nested rtpp-flags ignored"
            ]
        );
        assert!(offer_rtpp("").unwrap().warnings.is_empty());
        // Brackets nested too deep are an error, not a crash.
        let deep = format!("x=[{}", "[".repeat(100));
        assert!(matches!(
            offer_rtpp(&deep),
            Err(NgError::InvalidValue { key, .. }) if key == "rtpp-flags"
        ));
    }

    #[test]
    fn webrtc_flag_is_recorded() {
        let r = offer_flags(&["WebRTC"]).unwrap();
        assert_eq!(r.transport_protocol.as_deref(), Some("UDP/TLS/RTP/SAVPF"));
        assert_eq!(r.ice, Some(IceMode::Force));
        assert!(r.rtcp_mux.offer);
        assert_eq!(r.sdes, ["off"]);
    }

    #[test]
    fn warnings_for_unknown_and_unsupported() {
        let r = offer_flags(&[
            "record call",
            "no-such-flag",
            "inject DTMF",
            "replace-nothing",
            "rtcp-mux-bogus",
            "ICE=bogus",
            "codec-mask-PCMA",
            "T38-decode",
            "passthrough",
            "endpoint-learning-sometimes",
        ])
        .unwrap();
        assert!(r.flags.record_call);
        assert_eq!(
            r.warnings,
            [
                "Recording is not supported",
                "Unknown flag: no-such-flag",
                "inject-dtmf is not supported",
                "Unknown replace option: nothing",
                "Unknown rtcp-mux option: bogus",
                "Unknown ICE option: bogus",
                "codec-mask is not supported",
                "t38 is not supported",
                "Unknown endpoint-learning option: sometimes",
            ]
        );
        let r = parse_ok(&offer_with(
            "8:metadata3:abc11:record-call3:yes6:frob-x1:18:ICE-lite7:forward5:ptimei30e\
             5:codecd4:maskl4:PCMAe5:bogusle9:transcodelee5:OSRTPl5:offere",
        ));
        assert_eq!(
            r.warnings,
            [
                "metadata is not supported",
                "Recording is not supported",
                "Unknown key: frob-x",
                "ICE-lite is not supported",
                "ptime is not supported",
                "codec-mask is not supported",
                "Unknown codec option: bogus",
                "OSRTP is not supported",
            ]
        );
        // record-call=no is silent.
        let r = parse_ok(&offer_with("11:record-call2:no"));
        assert!(r.warnings.is_empty() && !r.flags.record_call);
    }

    #[test]
    fn warnings_are_capped() {
        let flags: Vec<String> = (0..100).map(|i| format!("unknown-{i}")).collect();
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let r = offer_flags(&refs).unwrap();
        assert_eq!(r.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(r.warnings[0], "Unknown flag: unknown-0");
        assert_eq!(r.warnings[MAX_WARNINGS], "84 more warnings suppressed");
        // Long tokens are shortened in messages.
        let long = "z".repeat(500);
        let r = offer_flags(&[&long]).unwrap();
        assert_eq!(
            r.warnings[0],
            format!("Unknown flag: {}...", "z".repeat(64))
        );
    }

    #[test]
    fn transcoding_is_refused() {
        let t = |s: &str| NgError::TranscodingUnsupported(s.into());
        assert_eq!(
            offer_flags(&["always transcode"]),
            Err(t("always-transcode"))
        );
        assert_eq!(
            offer_flags(&["allow_transcoding"]),
            Err(t("allow-transcoding"))
        );
        assert_eq!(
            offer_flags(&["codec-transcode-PCMA"]),
            Err(t("codec-transcode"))
        );
        assert_eq!(offer_flags(&["transcode-G722"]), Err(t("codec-transcode")));
        assert_eq!(offer_flags(&["transcode=G722"]), Err(t("codec-transcode")));
        assert_eq!(
            offer_rtpp("codec=[transcode=[opus]]"),
            Err(t("codec-transcode"))
        );
        assert_eq!(
            parse(&offer_with("5:codecd9:transcodel4:PCMAee")),
            Err(t("codec-transcode"))
        );
        assert_eq!(
            parse(&offer_with("15:codec-transcode4:PCMA")),
            Err(t("codec-transcode"))
        );
        // An empty transcode list asks for nothing.
        assert!(parse(&offer_with("5:codecd9:transcodelee")).is_ok());
    }

    #[test]
    fn transport_conversions() {
        let u = |s: &str| NgError::UnsupportedTransport(s.into());
        assert_eq!(offer_flags(&["DTLS=active"]), Err(u("DTLS=active")));
        assert_eq!(offer_rtpp("DTLS=actpass"), Err(u("DTLS=actpass")));
        assert_eq!(parse(&offer_with("4:DTLS6:active")), Err(u("DTLS=active")));
        for off in ["off", "no", "disable"] {
            let r = offer_flags(&[&format!("DTLS={off}")]).unwrap();
            assert_eq!(r.dtls, Some(DtlsMode::Off));
        }
        assert_eq!(
            offer_flags(&["DTLS-passive"]).unwrap().dtls,
            Some(DtlsMode::Passive)
        );
        // transport-protocol is recorded verbatim for the session layer.
        let r = offer_flags(&["transport-protocol=RTP/SAVPF"]).unwrap();
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/SAVPF"));
        let r = offer_flags(&["ICE=force"]).unwrap();
        assert_eq!(r.ice, Some(IceMode::Force));
    }

    #[test]
    fn supports_list() {
        let r = parse_ok(b"d8:supportsl10:load limit5:othere7:command4:liste");
        assert!(r.supports_load_limit);
        let r = parse_ok(b"d8:supportsl10:load-limite7:command4:liste");
        assert!(r.supports_load_limit);
        let r = parse_ok(b"d8:supportsl5:otheri1ee7:command4:liste");
        assert!(!r.supports_load_limit);
        let r = parse_ok(b"d7:command4:liste");
        assert!(!r.supports_load_limit);
    }

    #[test]
    fn json_offer() {
        let body = format!(
            r#"{{"command":"offer","call-id":"c1","from-tag":"ft","sdp":{},
               "flags":["trust address","SIP_source_address"],"replace":["origin"],
               "ICE":"remove","received-from":["IP4","10.0.0.1"],"delete-delay":0,
               "rtcp-mux":"demux","supports":["load limit"],"label":null,
               "record call":false,"limit":7.0}}"#,
            serde_json::to_string(SIPP_SDP).unwrap()
        );
        let (r, fmt) = parse_request(body.as_bytes()).unwrap();
        assert_eq!(fmt, BodyFormat::Json);
        assert_eq!(r.call_id.as_deref(), Some("c1"));
        assert_eq!(r.sdp.as_deref(), Some(SIPP_SDP.as_bytes()));
        assert!(r.flags.trust_address && r.flags.sip_source_address);
        assert!(r.replace_origin);
        assert_eq!(r.ice, Some(IceMode::Remove));
        assert_eq!(
            r.received_from,
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(r.delete_delay, Some(0));
        assert!(r.rtcp_mux.demux);
        assert!(r.supports_load_limit);
        assert_eq!(r.label, None);
        assert!(!r.flags.record_call);
        assert_eq!(r.limit, Some(7));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // JSON errors report the JSON format, so the reply is JSON.
        assert_eq!(
            parse_request(br#"{"command":"offer","call-id":1}"#),
            Err((
                NgError::WrongType {
                    key: "call-id".into(),
                    expected: "string"
                },
                BodyFormat::Json
            ))
        );
        assert_eq!(
            parse_request(br#"{"call-id":"x"}"#),
            Err((NgError::NoCommand, BodyFormat::Json))
        );
    }

    #[test]
    fn every_error_string() {
        let cases: Vec<(NgError, &str)> = vec![
            (NgError::NoPayload, "Invalid data (no payload)"),
            (
                NgError::BencodeDecode,
                "Could not decode bencode dictionary",
            ),
            (NgError::JsonParse, "Failed to parse JSON document"),
            (NgError::InvalidFormat, "Invalid NG data format"),
            (NgError::NoCommand, "Dictionary contains no key \"command\""),
            (NgError::UnrecognizedCommand, "Unrecognized command"),
            (
                NgError::UnsupportedCommand("play media".into()),
                "Unsupported command: play media",
            ),
            (NgError::NoCallId, "No call-id in message"),
            (NgError::NoFromTag, "No from-tag in message"),
            (NgError::NoToTag, "No to-tag in message"),
            (NgError::NoSdp, "No SDP body in message"),
            (
                NgError::WrongType {
                    key: "call-id".into(),
                    expected: "string",
                },
                "Invalid type for key \"call-id\": expected string",
            ),
            (
                NgError::InvalidValue {
                    key: "limit".into(),
                    reason: "-1 is out of range".into(),
                },
                "Invalid value for key \"limit\": -1 is out of range",
            ),
            (
                NgError::TranscodingUnsupported("codec-transcode".into()),
                "Transcoding is not supported: codec-transcode",
            ),
            (
                NgError::UnsupportedTransport("DTLS=active".into()),
                "Unsupported transport protocol conversion: DTLS=active",
            ),
        ];
        for (e, s) in cases {
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn command_names_round_trip() {
        for c in [
            Command::Ping,
            Command::Offer,
            Command::Answer,
            Command::Delete,
            Command::Query,
            Command::List,
            Command::Statistics,
        ] {
            assert_eq!(Command::from_name(c.as_str().as_bytes()), Ok(c));
        }
    }

    #[test]
    fn frame_reply_formats() {
        let reply = Owned::dict().with("sdp", "v=0\r\n").with("result", "ok");
        assert_eq!(
            frame_reply(b"offer_cookie_1", BodyFormat::Bencode, &reply),
            b"offer_cookie_1 d3:sdp5:v=0\r\n6:result2:oke"
        );
        assert_eq!(
            frame_reply(b"c", BodyFormat::Json, &reply),
            br#"c {"sdp":"v=0\r\n","result":"ok"}"#
        );
        assert_eq!(encode_body(BodyFormat::Bencode, &reply), reply.to_bencode());
        assert_eq!(
            encode_body(BodyFormat::Json, &reply),
            br#"{"sdp":"v=0\r\n","result":"ok"}"#
        );
    }

    #[test]
    fn hostile_sizes_stay_bounded() {
        // 60 KB of flags, keys and list items: parsed, warnings capped, no blow-up.
        let mut body = b"d7:command5:query7:call-id1:c5:flagsl".to_vec();
        for _ in 0..5000 {
            body.extend_from_slice(b"3:abc");
        }
        body.push(b'e');
        for i in 0..2000 {
            let k = format!("k{i:05}");
            body.extend_from_slice(format!("{}:{k}i1e", k.len()).as_bytes());
        }
        body.push(b'e');
        let r = parse_ok(&body);
        assert_eq!(r.warnings.len(), MAX_WARNINGS + 1);
    }
}
