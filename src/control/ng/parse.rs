//! The request parser: walks a decoded dictionary, applies each key (first occurrence wins)
//! and each flag token (in order), then checks the keys the command requires.

use super::keys::{
    codec_key, lookup_key, Key, Lookup, PREFIXED_FLAGS, SILENT_FLAGS, TRANSCODE_FLAGS, WARN_FLAGS,
};
use super::request::{Command, NgError, NgRequest, MAX_WARNINGS};
use super::value::{
    invalid, list_items, parse_ip, parse_received_from, snippet, want_bytes, want_ident,
    want_ranged, want_text, wrong_type,
};
use crate::control::bencode::Value;
use crate::control::flags::{
    self, AddressFamily, DtlsMode, EndpointLearning, IceMode, Norm, RtppItem, TransportBits,
};

/// Parses a decoded request dictionary (bencode, or JSON via
/// [`Owned::as_value`](crate::control::bencode::Owned::as_value)).
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

    let mut p = ReqParser::new(command);
    for (raw_key, value) in entries {
        let norm = Norm::new(raw_key);
        match lookup_key(norm.name()) {
            Lookup::Known(Key::Command) => {}
            Lookup::Known(key) => {
                // First occurrence wins, whatever the spelling.
                if p.seen & key.bit() == 0 {
                    p.seen |= key.bit();
                    p.apply_key(key, value)?;
                }
            }
            Lookup::Unsupported(name) => p.warn(format!("{name} is not supported")),
            Lookup::Unknown => p.warn(format!("Unknown key: {}", snippet(raw_key))),
        }
    }
    p.finish()
}

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
    fn new(command: Command) -> ReqParser {
        ReqParser {
            req: NgRequest::new(command),
            seen: 0,
            transport: None,
            suppressed: 0,
        }
    }

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
            Command::Ping
            | Command::List
            | Command::Statistics
            | Command::Terminate
            | Command::Drain
            | Command::Active
            | Command::Set => {}
        }
        Ok(r)
    }

    fn apply_key(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        self.apply_key_from(key, v, Source::Dict)
    }

    /// One key and its value: one line per key, the work in the methods below.
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
            Key::Flags => self.apply_flags_list(key, v)?,
            Key::RtppFlags => self.apply_rtpp_flags(key, v)?,
            Key::Replace => self.each_string(key, v, Self::apply_replace)?,
            Key::Ice => self.apply_ice(want_bytes(key, v)?),
            Key::IceLite => self.apply_ice_lite(want_bytes(key, v)?),
            Key::RtcpMux => self.each_string(key, v, Self::apply_rtcp_mux)?,
            Key::Direction => self.apply_direction(key, v)?,
            Key::FromInterface | Key::ToInterface => self.apply_interface(key, v)?,
            Key::Interface => r.interface = Some(want_text(key, v)?),
            Key::ReceivedFrom => r.received_from = Some(parse_received_from(key, v)?),
            Key::MediaAddress => r.media_address = Some(parse_ip(key, want_bytes(key, v)?)?),
            Key::AddressFamily => r.address_family = Some(address_family(key, v)?),
            Key::TransportProtocol => self.apply_transport_protocol(key, v)?,
            Key::Label => r.label = Some(want_text(key, v)?),
            Key::ToLabel => r.to_label = Some(want_text(key, v)?),
            Key::DeleteDelay => r.delete_delay = Some(want_ranged(key, v)?),
            Key::Limit => r.limit = Some(want_ranged(key, v)?),
            Key::MaxSessions => r.max_sessions = Some(want_ranged(key, v)?),
            Key::LogLevel => r.log_level = Some(want_text(key, v)?),
            Key::Tos => r.tos = Some(want_ranged(key, v)?),
            Key::Supports => r.supports_load_limit |= supports_load_limit(key, v)?,
            Key::Dtls => self.apply_dtls(want_bytes(key, v)?)?,
            Key::Sdes => {
                self.each_string(key, v, |p, opt| p.req.sdes.push(flags::normalize(opt)))?
            }
            Key::Osrtp => self.apply_osrtp(key, v)?,
            Key::Codec => self.apply_codec_dict(key, v, src)?,
            Key::CodecStrip | Key::CodecOffer | Key::CodecExcept => self.push_codecs(key, v)?,
            Key::CodecTranscode => refuse_transcode(key, v)?,
            Key::CodecMask | Key::CodecSet | Key::CodecAccept | Key::CodecConsume => {
                self.warn_unless_empty(key, v)?;
            }
            Key::Ptime => self.warn("ptime is not supported".into()),
            Key::RecordCall => self.apply_record_call(key, v)?,
            Key::EndpointLearning => self.apply_endpoint_learning(want_bytes(key, v)?),
        }
        Ok(())
    }

    /// Calls `f` with each string of a list value (or the one string of a scalar).
    fn each_string(
        &mut self,
        key: Key,
        v: &Value<'_>,
        mut f: impl FnMut(&mut Self, &[u8]),
    ) -> Result<(), NgError> {
        for item in list_items(key, v)? {
            f(self, want_bytes(key, item)?);
        }
        Ok(())
    }

    /// The `flags` list: each item a flag token or `key=value`.
    fn apply_flags_list(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        for item in list_items(key, v)? {
            let token = want_bytes(key, item)?;
            self.apply_flag_item(token)?;
        }
        Ok(())
    }

    /// The `rtpp-flags` string: whitespace-separated tokens, as in the `flags` list.
    fn apply_rtpp_flags(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
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
        Ok(())
    }

    fn apply_direction(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        for item in list_items(key, v)? {
            let iface = want_text(key, item)?;
            self.req.direction.push(iface);
        }
        Ok(())
    }

    /// `from-interface` sets the first `direction` entry, `to-interface` the second.
    fn apply_interface(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        let iface = want_text(key, v)?;
        let slot = usize::from(key == Key::ToInterface);
        let direction = &mut self.req.direction;
        if direction.len() <= slot {
            direction.resize(slot + 1, String::new());
        }
        direction[slot] = iface;
        Ok(())
    }

    fn apply_transport_protocol(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        self.req.transport_protocol = Some(want_text(key, v)?);
        // An explicit key overrides tokens seen so far.
        self.transport = None;
        Ok(())
    }

    /// The `codec` dictionary: its sub-keys apply like the `codec-*` keys.
    fn apply_codec_dict(&mut self, key: Key, v: &Value<'_>, src: Source) -> Result<(), NgError> {
        let entries = v.as_dict().ok_or_else(|| wrong_type(key, "dictionary"))?;
        // First occurrence of each sub-key wins, as for the top level.
        let mut seen = 0u64;
        for (sub, val) in entries {
            match codec_key(Norm::new(sub).name()) {
                Some(k) => {
                    if seen & k.bit() == 0 {
                        seen |= k.bit();
                        self.apply_key_from(k, val, src)?;
                    }
                }
                None => self.warn(format!("Unknown codec option: {}", snippet(sub))),
            }
        }
        Ok(())
    }

    fn push_codecs(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        for item in list_items(key, v)? {
            let name = want_text(key, item)?;
            self.push_codec(key, name);
        }
        Ok(())
    }

    /// Codec options we do not implement: a warning, unless the list asks for nothing.
    fn warn_unless_empty(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        if !list_items(key, v)?.is_empty() {
            self.warn(format!("{} is not supported", key.name()));
        }
        Ok(())
    }

    fn apply_osrtp(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        if list_items(key, v)?.iter().any(|i| {
            i.as_bytes()
                .is_some_and(|b| !matches!(Norm::new(b).name(), "off" | ""))
        }) {
            self.warn("OSRTP is not supported".into());
        }
        Ok(())
    }

    fn apply_record_call(&mut self, key: Key, v: &Value<'_>) -> Result<(), NgError> {
        let on = match v {
            Value::Int(i) => *i != 0,
            Value::Bytes(b) => !matches!(Norm::new(b).name(), "no" | "off" | "false" | "0" | ""),
            _ => return Err(wrong_type(key, "string")),
        };
        if on {
            self.record_call();
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

    /// A bare flag token: a boolean flag, a transport token, a flag with a meaning of its
    /// own, a prefixed flag carrying a value, or else unknown (a warning).
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
        if self.apply_named_flag(name)? {
            return Ok(());
        }
        let prefixed = PREFIXED_FLAGS
            .iter()
            .find_map(|&(prefix, key)| Some((prefix, key, norm.after_prefix(prefix)?)));
        match prefixed {
            Some((_, Some(key), at)) => {
                self.apply_key_from(key, &Value::Bytes(&token[at..]), Source::Token)
            }
            Some((prefix, None, _)) => {
                self.warn(format!("{} is not supported", prefix.trim_end_matches('-')));
                Ok(())
            }
            None => {
                self.warn(format!("Unknown flag: {}", snippet(token)));
                Ok(())
            }
        }
    }

    /// Flags with a meaning of their own, and the lists of known flags we do not implement.
    /// `Ok(false)` if `name` is none of them.
    fn apply_named_flag(&mut self, name: &str) -> Result<bool, NgError> {
        match name {
            "internal" | "external" => self.req.direction.push(name.to_owned()),
            "webrtc" => self.apply_webrtc(),
            n if TRANSCODE_FLAGS.contains(&n) => {
                return Err(NgError::TranscodingUnsupported(n.to_owned()))
            }
            n if SILENT_FLAGS.contains(&n) => {}
            n if WARN_FLAGS.contains(&n) => self.warn(format!("{n} is not supported")),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// rtpengine's shorthand for the WebRTC side of a call; whether it means a conversion
    /// depends on the SDP, so it is recorded for the session layer.
    fn apply_webrtc(&mut self) {
        self.req.transport_protocol = Some("UDP/TLS/RTP/SAVPF".into());
        self.transport = None;
        self.req.ice = Some(IceMode::Force);
        self.req.rtcp_mux.offer = true;
        self.req.sdes.push("off".into());
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

    fn apply_ice_lite(&mut self, val: &[u8]) {
        if !matches!(Norm::new(val).name(), "off" | "no" | "none") {
            self.warn("ICE-lite is not supported".into());
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

fn address_family(key: Key, v: &Value<'_>) -> Result<AddressFamily, NgError> {
    let val = want_bytes(key, v)?;
    AddressFamily::from_name(Norm::new(val).name()).ok_or_else(|| invalid(key, val))
}

/// Whether a `supports` list names `load limit` (items that are not strings are skipped).
fn supports_load_limit(key: Key, v: &Value<'_>) -> Result<bool, NgError> {
    Ok(list_items(key, v)?
        .iter()
        .filter_map(Value::as_bytes)
        .any(|b| Norm::new(b).name() == "load-limit"))
}

/// `codec-transcode` with any codec asks for transcoding, which we refuse; an empty list asks
/// for nothing.
fn refuse_transcode(key: Key, v: &Value<'_>) -> Result<(), NgError> {
    if list_items(key, v)?.is_empty() {
        Ok(())
    } else {
        Err(NgError::TranscodingUnsupported("codec-transcode".into()))
    }
}
