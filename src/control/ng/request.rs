//! The typed request: the commands, the refusals ([`NgError`], whose text is the reply's
//! `error-reason`) and [`NgRequest`] with every setting the parser fills in.

use std::net::IpAddr;

use crate::control::flags::{
    AddressFamily, CodecOpts, DtlsMode, EndpointLearning, Flags, IceMode, Norm, RtcpMuxOpts,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Ping,
    Offer,
    Answer,
    Delete,
    Query,
    List,
    Statistics,
    /// Ours (rtpengine has these only on its CLI, `rtpengine-ctl`): end a call (`call-id`) or
    /// every call (flag `all`) at once.
    Terminate,
    /// Ours: stop taking new calls, exit once the last one ends (as SIGTERM).
    Drain,
    /// Ours (`rtpengine-ctl set`): `max-sessions` and/or `log-level`, live.
    Set,
    /// Ours: a standby relay (`--standby`) takes the calls over from Redis now.
    Active,
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
            Command::Terminate => "terminate",
            Command::Drain => "drain",
            Command::Set => "set",
            Command::Active => "active",
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
            "terminate" => Command::Terminate,
            "drain" => Command::Drain,
            "set" => Command::Set,
            "active" => Command::Active,
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
    /// `interface`: the interface of both sides, where `direction` (or `from-interface`,
    /// `to-interface`) leaves one unnamed. See [`NgRequest::interfaces`].
    pub interface: Option<String>,
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
    /// `set`: new session limit (0 = none) and log filter.
    pub max_sessions: Option<usize>,
    pub log_level: Option<String>,
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
            interface: None,
            received_from: None,
            media_address: None,
            address_family: None,
            transport_protocol: None,
            label: None,
            to_label: None,
            delete_delay: None,
            limit: None,
            max_sessions: None,
            log_level: None,
            supports_load_limit: false,
            dtls: None,
            sdes: Vec::new(),
            codec: CodecOpts::default(),
            endpoint_learning: None,
            tos: None,
            warnings: Vec::new(),
        }
    }

    /// The interface names of the two sides, from-side first: `direction` (or
    /// `from-interface`/`to-interface`), with `interface` for a side they leave unnamed.
    /// rtpengine reads `interface` only in its one-sided commands (`publish`, `subscribe`);
    /// here an offer or answer that names one network for its whole call can say so with it.
    pub fn interfaces(&self) -> Vec<String> {
        let Some(both) = self.interface.as_deref().filter(|i| !i.is_empty()) else {
            return self.direction.clone();
        };
        let mut out = self.direction.clone();
        if out.len() < 2 {
            out.resize(2, String::new());
        }
        for name in out.iter_mut().take(2).filter(|n| n.is_empty()) {
            *name = both.to_owned();
        }
        out
    }
}
