//! Unit tests of the ng framing and request parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::control::bencode::Owned;
use crate::control::flags::{AddressFamily, DtlsMode, EndpointLearning, Flags, IceMode};

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
    assert_eq!(r.interfaces(), ["", "pub"]);
    // `interface` fills the sides `direction` leaves unnamed.
    let r = parse_ok(&offer_with("9:interface3:dmz12:to-interface3:pub"));
    assert_eq!(r.interface.as_deref(), Some("dmz"));
    assert_eq!(r.interfaces(), ["dmz", "pub"]);
    let r = parse_ok(&offer_with("9:interface3:dmz"));
    assert_eq!(r.interfaces(), ["dmz", "dmz"]);
    let r = parse_ok(&offer_with("9:directionl4:priv3:pube9:interface3:dmz"));
    assert_eq!(r.interfaces(), ["priv", "pub"]);
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
