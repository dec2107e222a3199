//! ng flag vocabulary: name normalisation, the boolean [`Flags`], the option types the request
//! carries, and the lexer for the `rtpp-flags` string.
//!
//! **Names.** rtpengine treats spaces, dashes and underscores in key and flag names as the
//! same character (`trust address` == `trust-address` == `trust_address`), and peers vary in
//! case (`SIP-source-address`, `ICE`, `DTLS`). We normalise once: ASCII lowercase, and `' '`
//! and `'_'` become `'-'`. Normalisation maps byte for byte, so an offset in the normalised name
//! is the same offset in the raw token (used to cut values such as the codec in
//! `codec-strip-PCMU` from the original, case-preserved bytes).
//!
//! **`rtpp-flags`.** Newer Kamailio (two-argument `rtpengine_offer(flags, via)`) sends its flag
//! string unparsed. Syntax, as rtpengine's daemon reads it: whitespace-separated tokens, each
//! either a bare flag (`trust-address`, `RTP/AVP`, `codec-strip-PCMU`) or `key=value`, where the
//! value runs to the next whitespace or is a bracketed list `[a b c]`, possibly nested, whose
//! items may themselves be `k=v` (then the brackets form a dictionary, e.g.
//! `codec=[strip=[PCMU] offer=[PCMA]]`). rtpengine has no quoting; we additionally tolerate a
//! double-quoted value (`label="a b"`, quotes removed). [`lex_rtpp_flags`] turns the string into
//! [`RtppItem`]s whose values are [`Value`] trees borrowing from the string, so the request
//! parser handles them exactly like dictionary entries.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use super::bencode::{Value, MAX_DEPTH};

/// Longest name that [`Norm`] normalises in full. Longer keys/flags match no known name,
/// though their first `NORM_CAP` bytes can still match a prefix such as `codec-strip-`.
pub const NORM_CAP: usize = 48;

/// A normalised copy of a key or flag name, on the stack (no allocation per key).
#[derive(Clone, Copy)]
pub struct Norm {
    buf: [u8; NORM_CAP],
    /// Bytes of `buf` in use (`min(raw_len, NORM_CAP)`).
    len: usize,
    raw_len: usize,
}

impl Norm {
    pub fn new(raw: &[u8]) -> Norm {
        let mut buf = [0u8; NORM_CAP];
        let len = raw.len().min(NORM_CAP);
        for (dst, &b) in buf.iter_mut().zip(raw) {
            *dst = normalize_byte(b);
        }
        Norm {
            buf,
            len,
            raw_len: raw.len(),
        }
    }

    /// The normalised name; `""` if it was too long or is not UTF-8 (no known name is empty).
    pub fn name(&self) -> &str {
        if self.raw_len > NORM_CAP {
            return "";
        }
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// If the name starts with `prefix` (already normalised) and has more after it, the offset
    /// where the remainder starts in the raw token.
    pub fn after_prefix(&self, prefix: &str) -> Option<usize> {
        let p = prefix.as_bytes();
        (self.raw_len > p.len() && self.len >= p.len() && &self.buf[..p.len()] == p)
            .then_some(p.len())
    }
}

fn normalize_byte(b: u8) -> u8 {
    match b {
        b' ' | b'_' => b'-',
        _ => b.to_ascii_lowercase(),
    }
}

/// Normalises a name (see the module docs); non-UTF-8 bytes are replaced lossily.
pub fn normalize(name: &[u8]) -> String {
    let bytes: Vec<u8> = name.iter().map(|&b| normalize_byte(b)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Boolean flags of offer/answer/delete, from the `flags` list or bare `rtpp-flags` tokens.
/// Each field is named after its flag (normalised spelling in the doc comment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `trust-address`: use the SDP c=/m= address (the default behaviour anyway).
    pub trust_address: bool,
    /// `sip-source-address`: use `received-from` instead of the SDP address.
    pub sip_source_address: bool,
    /// `symmetric`: send to where packets come from (the default).
    pub symmetric: bool,
    /// `asymmetric`: never re-target to the learned source.
    pub asymmetric: bool,
    /// `strict-source`: after learning, drop packets from other sources.
    pub strict_source: bool,
    /// `media-handover`: after learning, accept and switch to a new source.
    pub media_handover: bool,
    /// `port-latching`: keep the local port across re-offers.
    pub port_latching: bool,
    /// `no-port-latching`.
    pub no_port_latching: bool,
    /// `no-rtcp-attribute`: do not add `a=rtcp:`.
    pub no_rtcp_attribute: bool,
    /// `full-rtcp-attribute`: `a=rtcp:PORT IN IP4 ADDR` instead of `a=rtcp:PORT`.
    pub full_rtcp_attribute: bool,
    /// `loop-protect`: detect an SDP we already rewrote and leave it alone.
    pub loop_protect: bool,
    /// `original-sendrecv`: keep the direction attribute as offered.
    pub original_sendrecv: bool,
    /// `fatal` (delete): an unknown call is an error, not a warning.
    pub fatal: bool,
    /// `fast` (delete): omit statistics from the reply.
    pub fast: bool,
    /// `to-tag` (delete): delete only the branch named by the to-tag.
    pub to_tag: bool,
    /// `all` (delete): delete every branch.
    pub all: bool,
    /// `record-call` (not supported; a warning is produced).
    pub record_call: bool,
    /// `early-media`.
    pub early_media: bool,
    /// `generate-mid`: add `a=mid:` to media sections.
    pub generate_mid: bool,
    /// `reset`: forget negotiated state (ICE etc.) for this offer.
    pub reset: bool,
    /// `unidirectional`: also forward media on a one-sided stream.
    pub unidirectional: bool,
    /// `nat-wait`.
    pub nat_wait: bool,
    /// `pierce-nat`: send keepalives to open the peer's NAT.
    pub pierce_nat: bool,
    /// `trickle-ice`.
    pub trickle_ice: bool,
    /// `directional`.
    pub directional: bool,
}

impl Flags {
    /// Sets the flag with normalised name `name`; false if it is not a boolean flag.
    pub fn set(&mut self, name: &str) -> bool {
        let slot = match name {
            "trust-address" => &mut self.trust_address,
            "sip-source-address" => &mut self.sip_source_address,
            "symmetric" => &mut self.symmetric,
            "asymmetric" => &mut self.asymmetric,
            "strict-source" => &mut self.strict_source,
            "media-handover" => &mut self.media_handover,
            "port-latching" => &mut self.port_latching,
            "no-port-latching" => &mut self.no_port_latching,
            "no-rtcp-attribute" => &mut self.no_rtcp_attribute,
            "full-rtcp-attribute" => &mut self.full_rtcp_attribute,
            "loop-protect" => &mut self.loop_protect,
            "original-sendrecv" => &mut self.original_sendrecv,
            "fatal" => &mut self.fatal,
            "fast" => &mut self.fast,
            "to-tag" => &mut self.to_tag,
            "all" => &mut self.all,
            "record-call" => &mut self.record_call,
            "early-media" => &mut self.early_media,
            "generate-mid" => &mut self.generate_mid,
            "reset" => &mut self.reset,
            "unidirectional" => &mut self.unidirectional,
            "nat-wait" => &mut self.nat_wait,
            "pierce-nat" => &mut self.pierce_nat,
            "trickle-ice" => &mut self.trickle_ice,
            "directional" => &mut self.directional,
            _ => return false,
        };
        *slot = true;
        true
    }
}

/// `ICE` key values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceMode {
    /// Strip ICE attributes from the SDP.
    Remove,
    /// Add our own candidates (and strip the peer's).
    Force,
    /// Leave ICE as offered.
    Default,
    /// Like `Force`, but offer only relay candidates.
    ForceRelay,
    /// Offer ICE only if the other side did.
    Optional,
}

impl IceMode {
    /// Parses a normalised value.
    pub fn from_name(name: &str) -> Option<IceMode> {
        Some(match name {
            "remove" => IceMode::Remove,
            "force" => IceMode::Force,
            "default" => IceMode::Default,
            "force-relay" => IceMode::ForceRelay,
            "optional" => IceMode::Optional,
            _ => return None,
        })
    }
}

/// `rtcp-mux` list items (also `rtcp-mux-X` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpMuxOpts {
    pub offer: bool,
    pub accept: bool,
    pub demux: bool,
    pub require: bool,
    pub reject: bool,
}

impl RtcpMuxOpts {
    /// Sets the option with normalised name `name`; false if unknown.
    pub fn set(&mut self, name: &str) -> bool {
        let slot = match name {
            "offer" => &mut self.offer,
            "accept" => &mut self.accept,
            "demux" => &mut self.demux,
            "require" => &mut self.require,
            "reject" => &mut self.reject,
            _ => return false,
        };
        *slot = true;
        true
    }
}

/// `address-family` of the rewritten SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ip4,
    Ip6,
}

impl AddressFamily {
    /// Parses a normalised value (`ip4`/`ipv4`, `ip6`/`ipv6`).
    pub fn from_name(name: &str) -> Option<AddressFamily> {
        match name {
            "ip4" | "ipv4" => Some(AddressFamily::Ip4),
            "ip6" | "ipv6" => Some(AddressFamily::Ip6),
            _ => None,
        }
    }
}

/// The `DTLS` values we can honour while passing the transport through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsMode {
    /// `off` / `no` / `disable`.
    Off,
    /// `passive`.
    Passive,
}

/// `endpoint-learning` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointLearning {
    Delayed,
    Immediate,
    Off,
    Heuristic,
}

impl EndpointLearning {
    pub fn from_name(name: &str) -> Option<EndpointLearning> {
        Some(match name {
            "delayed" => EndpointLearning::Delayed,
            "immediate" => EndpointLearning::Immediate,
            "off" => EndpointLearning::Off,
            "heuristic" => EndpointLearning::Heuristic,
            _ => return None,
        })
    }
}

/// Codec manipulations that need no transcoding (`codec` dict / `codec-X-NAME` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecOpts {
    /// Codecs to remove from the SDP (`all` = every codec).
    pub strip: Vec<String>,
    /// Codecs to keep/re-add after a strip.
    pub offer: Vec<String>,
    /// Codecs exempt from `strip: all`.
    pub except: Vec<String>,
}

/// The transport-protocol building blocks of bare `rtpp-flags`/`flags` tokens (`RTP/AVP`,
/// `SRTP`, `AVPF`, `DTLS`, `RTP`, `AVP`, ...). They accumulate and the result becomes
/// `transport-protocol` once all tokens are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportBits {
    pub srtp: bool,
    pub avpf: bool,
    pub dtls: bool,
}

impl TransportBits {
    /// Applies one token (normalised); false if it is not a transport token.
    pub fn apply(&mut self, name: &str) -> bool {
        let t = |srtp, avpf, dtls| TransportBits { srtp, avpf, dtls };
        match name {
            "rtp/avp" => *self = t(false, false, false),
            "rtp/savp" => *self = t(true, false, false),
            "rtp/avpf" => *self = t(false, true, false),
            "rtp/savpf" => *self = t(true, true, false),
            "udp/tls/rtp/savp" => *self = t(true, false, true),
            "udp/tls/rtp/savpf" => *self = t(true, true, true),
            "rtp" => {
                self.srtp = false;
                self.dtls = false;
            }
            "avp" => self.avpf = false,
            "srtp" => self.srtp = true,
            "avpf" => self.avpf = true,
            "dtls" => {
                self.dtls = true;
                self.srtp = true;
            }
            _ => return false,
        }
        true
    }

    /// The SDP protocol name.
    pub fn protocol(self) -> &'static str {
        match (self.dtls, self.srtp, self.avpf) {
            (true, _, false) => "UDP/TLS/RTP/SAVP",
            (true, _, true) => "UDP/TLS/RTP/SAVPF",
            (false, true, false) => "RTP/SAVP",
            (false, true, true) => "RTP/SAVPF",
            (false, false, false) => "RTP/AVP",
            (false, false, true) => "RTP/AVPF",
        }
    }
}

/// One top-level item of an `rtpp-flags` string.
#[derive(Debug, Clone, PartialEq)]
pub enum RtppItem<'a> {
    /// A bare token (also `key=` with an empty value).
    Flag(&'a [u8]),
    /// `key=value`; the value is [`Value::Bytes`], or a [`Value::List`]/[`Value::Dict`] for
    /// bracketed values.
    KeyValue(&'a [u8], Value<'a>),
}

/// Brackets in an `rtpp-flags` value nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rtpp-flags lists nested deeper than {MAX_DEPTH}")]
pub struct RtppTooDeep;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits an `rtpp-flags` string into items (see the module docs for the syntax). Never fails
/// on odd input except for excessive bracket nesting: unterminated brackets and quotes end at
/// the end of the string, stray `]` are ordinary characters at the top level.
pub fn lex_rtpp_flags(s: &[u8]) -> Result<Vec<RtppItem<'_>>, RtppTooDeep> {
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < s.len() && is_ws(s[pos]) {
            pos += 1;
        }
        if pos >= s.len() {
            return Ok(items);
        }
        let start = pos;
        while pos < s.len() && !is_ws(s[pos]) && s[pos] != b'=' {
            pos += 1;
        }
        let key = &s[start..pos];
        if pos >= s.len() || s[pos] != b'=' {
            items.push(RtppItem::Flag(key));
            continue;
        }
        pos += 1; // '='
        let value = match s.get(pos) {
            Some(b'[') => bracket(s, &mut pos, 1)?,
            Some(b'"') => Value::Bytes(quoted(s, &mut pos)),
            _ => {
                let vs = pos;
                while pos < s.len() && !is_ws(s[pos]) {
                    pos += 1;
                }
                Value::Bytes(&s[vs..pos])
            }
        };
        if key.is_empty() {
            continue; // "=value": nothing to attach it to
        }
        match value {
            Value::Bytes([]) => items.push(RtppItem::Flag(key)),
            value => items.push(RtppItem::KeyValue(key, value)),
        }
    }
}

/// Reads `"…"` at `*pos` and returns the contents (to the end if unterminated).
fn quoted<'a>(s: &'a [u8], pos: &mut usize) -> &'a [u8] {
    *pos += 1;
    let vs = *pos;
    while *pos < s.len() && s[*pos] != b'"' {
        *pos += 1;
    }
    let v = &s[vs..*pos];
    if *pos < s.len() {
        *pos += 1;
    }
    v
}

/// One parsed item inside brackets: its key if `k=v`, its value, and its raw text.
type BracketItem<'a> = (Option<&'a [u8]>, Value<'a>, &'a [u8]);

/// Reads a bracketed list or dictionary starting at `s[*pos] == b'['`. It is a dictionary if
/// its first item is `k=v`; then bare items become keys with empty values. In a list, `k=v`
/// items become the raw text `k=v`.
fn bracket<'a>(s: &'a [u8], pos: &mut usize, depth: usize) -> Result<Value<'a>, RtppTooDeep> {
    if depth > MAX_DEPTH {
        return Err(RtppTooDeep);
    }
    *pos += 1; // '['
               // (key, value, raw span) per item
    let mut parsed: Vec<BracketItem<'a>> = Vec::new();
    loop {
        while *pos < s.len() && is_ws(s[*pos]) {
            *pos += 1;
        }
        match s.get(*pos) {
            None => break,
            Some(b']') => {
                *pos += 1;
                break;
            }
            Some(b'[') => {
                let start = *pos;
                let v = bracket(s, pos, depth + 1)?;
                parsed.push((None, v, &s[start..*pos]));
            }
            Some(_) => {
                let start = *pos;
                while *pos < s.len() && !is_ws(s[*pos]) && s[*pos] != b']' && s[*pos] != b'=' {
                    *pos += 1;
                }
                let atom = &s[start..*pos];
                if s.get(*pos) == Some(&b'=') {
                    *pos += 1;
                    let v = match s.get(*pos) {
                        Some(b'[') => bracket(s, pos, depth + 1)?,
                        Some(b'"') => Value::Bytes(quoted(s, pos)),
                        _ => {
                            let vs = *pos;
                            while *pos < s.len() && !is_ws(s[*pos]) && s[*pos] != b']' {
                                *pos += 1;
                            }
                            Value::Bytes(&s[vs..*pos])
                        }
                    };
                    parsed.push((Some(atom), v, &s[start..*pos]));
                } else {
                    parsed.push((None, Value::Bytes(atom), atom));
                }
            }
        }
    }
    let is_dict = matches!(parsed.first(), Some((Some(_), _, _)));
    Ok(if is_dict {
        Value::Dict(
            parsed
                .into_iter()
                .filter_map(|(k, v, _)| match (k, v) {
                    (Some(k), v) => Some((k, v)),
                    (None, Value::Bytes(atom)) => Some((atom, Value::Bytes(b""))),
                    (None, _) => None,
                })
                .collect(),
        )
    } else {
        Value::List(
            parsed
                .into_iter()
                .map(|(k, v, raw)| if k.is_some() { Value::Bytes(raw) } else { v })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_unifies_spellings() {
        for spelling in [
            &b"trust address"[..],
            b"trust-address",
            b"trust_address",
            b"Trust-Address",
            b"TRUST_ADDRESS",
        ] {
            assert_eq!(Norm::new(spelling).name(), "trust-address");
        }
        assert_eq!(
            Norm::new(b"SIP source address").name(),
            "sip-source-address"
        );
        assert_eq!(normalize(b"Call ID"), "call-id");
        assert_eq!(normalize(b"a\xffb"), "a\u{fffd}b");
        // Too long for the stack buffer: matches nothing, but prefixes still work.
        let long = [b'x'; NORM_CAP + 1];
        assert_eq!(Norm::new(&long).name(), "");
        let mut long_codec = b"codec-strip-".to_vec();
        long_codec.extend_from_slice(&[b'Q'; 60]);
        assert_eq!(
            Norm::new(&long_codec).after_prefix("codec-strip-"),
            Some(12)
        );
        // A prefix alone (nothing after it) is not a prefix match.
        assert_eq!(
            Norm::new(b"codec-strip-").after_prefix("codec-strip-"),
            None
        );
        assert_eq!(Norm::new(b"\xff\xfe").name(), "");
    }

    #[test]
    fn flags_set_by_name() {
        let mut f = Flags::default();
        assert!(f.set("strict-source"));
        assert!(f.set("sip-source-address"));
        assert!(!f.set("no-such-flag"));
        assert!(f.strict_source && f.sip_source_address && !f.asymmetric);
    }

    #[test]
    fn option_names() {
        assert_eq!(IceMode::from_name("force-relay"), Some(IceMode::ForceRelay));
        assert_eq!(IceMode::from_name("remove"), Some(IceMode::Remove));
        assert_eq!(IceMode::from_name("x"), None);
        assert_eq!(AddressFamily::from_name("ip6"), Some(AddressFamily::Ip6));
        assert_eq!(AddressFamily::from_name("ipv4"), Some(AddressFamily::Ip4));
        assert_eq!(AddressFamily::from_name("ip5"), None);
        assert_eq!(
            EndpointLearning::from_name("heuristic"),
            Some(EndpointLearning::Heuristic)
        );
        let mut m = RtcpMuxOpts::default();
        assert!(m.set("demux") && m.set("offer") && !m.set("mux"));
        assert_eq!(
            m,
            RtcpMuxOpts {
                offer: true,
                demux: true,
                ..RtcpMuxOpts::default()
            }
        );
    }

    #[test]
    fn transport_tokens_compose() {
        let proto = |tokens: &[&str]| {
            let mut t = TransportBits::default();
            for tok in tokens {
                assert!(t.apply(tok), "{tok}");
            }
            t.protocol()
        };
        assert_eq!(proto(&["rtp/avp"]), "RTP/AVP");
        assert_eq!(proto(&["srtp"]), "RTP/SAVP");
        assert_eq!(proto(&["srtp", "avpf"]), "RTP/SAVPF");
        assert_eq!(proto(&["dtls", "avpf"]), "UDP/TLS/RTP/SAVPF");
        assert_eq!(proto(&["dtls"]), "UDP/TLS/RTP/SAVP");
        assert_eq!(proto(&["rtp/savpf", "rtp"]), "RTP/AVPF");
        assert_eq!(proto(&["rtp/savpf", "avp"]), "RTP/SAVP");
        assert_eq!(proto(&["udp/tls/rtp/savpf"]), "UDP/TLS/RTP/SAVPF");
        assert!(!TransportBits::default().apply("rtp/foo"));
    }

    fn lex(s: &str) -> Vec<RtppItem<'_>> {
        lex_rtpp_flags(s.as_bytes()).unwrap()
    }

    #[test]
    fn lexes_kamailio_style_string() {
        let items = lex(
            "replace-origin replace-session-connection ICE=remove  trust-address \
             via-branch=auto-next\tdelete-delay=0 label=",
        );
        assert_eq!(
            items,
            vec![
                RtppItem::Flag(b"replace-origin"),
                RtppItem::Flag(b"replace-session-connection"),
                RtppItem::KeyValue(b"ICE", Value::Bytes(b"remove")),
                RtppItem::Flag(b"trust-address"),
                RtppItem::KeyValue(b"via-branch", Value::Bytes(b"auto-next")),
                RtppItem::KeyValue(b"delete-delay", Value::Bytes(b"0")),
                RtppItem::Flag(b"label"),
            ]
        );
        assert_eq!(lex(""), vec![]);
        assert_eq!(lex("   \t "), vec![]);
    }

    #[test]
    fn lexes_brackets_and_quotes() {
        let items = lex(
            "replace=[origin session-connection] received-from=[IP4 1.2.3.4] \
             codec=[strip=[PCMU G722] offer=PCMA] label=\"a b\" x=[a k=v] e=[] u=[a b",
        );
        assert_eq!(
            items,
            vec![
                RtppItem::KeyValue(
                    b"replace",
                    Value::List(vec![
                        Value::Bytes(b"origin"),
                        Value::Bytes(b"session-connection")
                    ])
                ),
                RtppItem::KeyValue(
                    b"received-from",
                    Value::List(vec![Value::Bytes(b"IP4"), Value::Bytes(b"1.2.3.4")])
                ),
                RtppItem::KeyValue(
                    b"codec",
                    Value::Dict(vec![
                        (
                            &b"strip"[..],
                            Value::List(vec![Value::Bytes(b"PCMU"), Value::Bytes(b"G722")])
                        ),
                        (&b"offer"[..], Value::Bytes(b"PCMA")),
                    ])
                ),
                RtppItem::KeyValue(b"label", Value::Bytes(b"a b")),
                RtppItem::KeyValue(
                    b"x",
                    Value::List(vec![Value::Bytes(b"a"), Value::Bytes(b"k=v")])
                ),
                RtppItem::KeyValue(b"e", Value::List(vec![])),
                RtppItem::KeyValue(
                    b"u",
                    Value::List(vec![Value::Bytes(b"a"), Value::Bytes(b"b")])
                ),
            ]
        );
        // Unterminated quote runs to the end; "=x" is dropped; ']' at top level is literal.
        assert_eq!(
            lex("=x a] l=\"open"),
            vec![
                RtppItem::Flag(b"a]"),
                RtppItem::KeyValue(b"l", Value::Bytes(b"open")),
            ]
        );
        // Dictionary with a bare item: the item becomes a key with an empty value.
        assert_eq!(
            lex("d=[k=v bare [nested]]"),
            vec![RtppItem::KeyValue(
                b"d",
                Value::Dict(vec![
                    (&b"k"[..], Value::Bytes(b"v")),
                    (&b"bare"[..], Value::Bytes(b"")),
                ])
            )]
        );
    }

    #[test]
    fn lexer_bounds_nesting() {
        let ok = format!("k={}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(lex_rtpp_flags(ok.as_bytes()).is_ok());
        let deep = format!("k={}", "[".repeat(60 * 1024));
        assert_eq!(lex_rtpp_flags(deep.as_bytes()), Err(RtppTooDeep));
    }

    #[test]
    fn lexer_survives_every_prefix() {
        let s = "a=[b c=[d e] \"f g\"] h=\"i j\" k l=m";
        for cut in 0..=s.len() {
            assert!(lex_rtpp_flags(&s.as_bytes()[..cut]).is_ok(), "cut {cut}");
        }
    }
}
