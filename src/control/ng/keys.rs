//! The key table: every dictionary key and flag name the parser knows, with its canonical
//! name, and the lists of flags that are accepted silently, warned about or refused.

/// Known keys. Fewer than 64, so a `u64` bitmask tracks which were seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Key {
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
    /// `interface`: one name for both sides where `direction` names none.
    Interface,
    ReceivedFrom,
    MediaAddress,
    AddressFamily,
    TransportProtocol,
    Label,
    ToLabel,
    DeleteDelay,
    Limit,
    /// `set` (ours): the new session limit and log filter.
    MaxSessions,
    LogLevel,
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
    /// This key's bit in a `seen` mask.
    pub(super) fn bit(self) -> u64 {
        1u64 << (self as u8)
    }

    /// Canonical name, for messages.
    pub(super) fn name(self) -> &'static str {
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
            Key::Interface => "interface",
            Key::ReceivedFrom => "received-from",
            Key::MediaAddress => "media-address",
            Key::AddressFamily => "address-family",
            Key::TransportProtocol => "transport-protocol",
            Key::Label => "label",
            Key::ToLabel => "to-label",
            Key::DeleteDelay => "delete-delay",
            Key::Limit => "limit",
            Key::MaxSessions => "max-sessions",
            Key::LogLevel => "log-level",
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

pub(super) enum Lookup {
    Known(Key),
    /// Known to rtpengine, harmless to ignore: a warning naming it.
    Unsupported(&'static str),
    Unknown,
}

/// Looks up a normalised key name (also the `key` of a `key=value` flag token).
pub(super) fn lookup_key(norm: &str) -> Lookup {
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
        "interface" => Key::Interface,
        "received-from" => Key::ReceivedFrom,
        "media-address" => Key::MediaAddress,
        "address-family" => Key::AddressFamily,
        "transport-protocol" => Key::TransportProtocol,
        "label" | "set-label" | "from-label" => Key::Label,
        "to-label" => Key::ToLabel,
        "delete-delay" => Key::DeleteDelay,
        "limit" => Key::Limit,
        "max-sessions" => Key::MaxSessions,
        "log-level" => Key::LogLevel,
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
pub(super) const SILENT_FLAGS: &[&str] = &["passthrough", "debug", "no-redis-update"];

/// Bare flags that rtpengine knows, which we do not implement, and whose absence does not
/// break a call: a warning "X is not supported".
pub(super) const WARN_FLAGS: &[&str] = &[
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
pub(super) const TRANSCODE_FLAGS: &[&str] = &["always-transcode", "allow-transcoding"];

/// Prefixed flags: the rest of the token is the key's value, with its original case. A prefix
/// without a key names an rtpengine option we ignore with a warning. Tried in this order.
pub(super) const PREFIXED_FLAGS: &[(&str, Option<Key>)] = &[
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

/// Sub-keys of the `codec` dictionary.
pub(super) fn codec_key(norm: &str) -> Option<Key> {
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
