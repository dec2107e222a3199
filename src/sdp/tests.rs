//! Unit tests for the SDP parser and rewriter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

const ASTERISK: &str = "v=0\r\n\
o=- 1907415262 1907415263 IN IP4 192.168.1.20\r\n\
s=Asterisk\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
m=audio 17014 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

fn relay(rtp: u16) -> MediaRewrite {
    MediaRewrite::Relay {
        rtp_port: rtp,
        rtcp_port: rtp + 1,
        rtcp_mux: false,
        rtcp_fallback: false,
    }
}

fn rw(input: &str, params: &RewriteParams) -> String {
    let sdp = Sdp::parse(input.as_bytes()).expect("parse");
    String::from_utf8(rewrite(&sdp, params).expect("rewrite")).expect("utf8")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn err(input: &[u8]) -> SdpError {
    Sdp::parse(input).expect_err("should be rejected")
}

// ---- parsing -------------------------------------------------------------------------------

#[test]
fn parses_typical_offer() {
    let sdp = Sdp::parse(ASTERISK.as_bytes()).expect("parse");
    let o = sdp.origin.expect("origin");
    assert_eq!(o.username, "-");
    assert_eq!(o.session_id, "1907415262");
    assert_eq!(o.session_version, "1907415263");
    assert_eq!(o.addr, "192.168.1.20");
    assert_eq!(
        sdp.session_connection,
        Some(Connection {
            addr: v4(192, 168, 1, 20)
        })
    );
    assert_eq!(sdp.session_direction, None);
    assert_eq!(sdp.media.len(), 1);
    let m = &sdp.media[0];
    assert_eq!(m.kind, "audio");
    assert_eq!(m.port, 17014);
    assert_eq!(m.port_count, None);
    assert_eq!(m.proto, "RTP/AVP");
    assert_eq!(m.formats, vec!["0", "8", "101"]);
    assert_eq!(m.connection, None);
    assert_eq!(m.rtcp, None);
    assert!(!m.rtcp_mux);
    assert_eq!(m.direction, Some(Direction::SendRecv));
    assert_eq!(
        m.rtpmap,
        vec![
            (0, "PCMU", 8000),
            (8, "PCMA", 8000),
            (101, "telephone-event", 8000)
        ]
    );
    assert!(!m.has_ice && !m.has_crypto && !m.has_fingerprint);
    assert!(m.is_rtp());
    assert_eq!(sdp.line_count(), 12);
    assert_eq!(sdp.raw(), ASTERISK.as_bytes());
}

#[test]
fn origin_username_with_spaces_and_extra_blanks() {
    let sdp = Sdp::parse(b"v=0\r\no=Some Phone  12 34 IN IP4 10.0.0.1\r\ns=-\r\n").expect("parse");
    let o = sdp.origin.expect("origin");
    assert_eq!(o.username, "Some Phone");
    assert_eq!(o.session_id, "12");
    assert_eq!(o.session_version, "34");
    assert_eq!(o.addr, "10.0.0.1");
    assert_eq!(
        err(b"v=0\r\no=- 1 IN IP4 10.0.0.1\r\n"),
        SdpError::BadOrigin { line: 2 }
    );
}

#[test]
fn media_line_variants() {
    let sdp = Sdp::parse(
        b"v=0\nm=audio 49170/2 RTP/AVP 0\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\n\
m=video 0 RTP/AVP\nm=image  4402\tudptl t38 \n",
    )
    .expect("parse");
    assert_eq!(sdp.media[0].port_count, Some(2));
    assert_eq!(sdp.media[1].kind, "application");
    assert!(!sdp.media[1].is_rtp());
    assert!(sdp.media[2].formats.is_empty());
    assert!(sdp.media[2].is_rejected());
    assert_eq!(sdp.media[3].port, 4402);
    assert_eq!(sdp.media[3].formats, vec!["t38"]);
    for bad in [
        &b"v=0\nm=audio\n"[..],
        b"v=0\nm=audio 5004\n",
        b"v=0\nm=audio 70000 RTP/AVP 0\n",
        b"v=0\nm=audio -1 RTP/AVP 0\n",
        b"v=0\nm=audio +5 RTP/AVP 0\n",
        b"v=0\nm=audio 5004/ RTP/AVP 0\n",
        b"v=0\nm=audio 5004/x RTP/AVP 0\n",
    ] {
        assert_eq!(err(bad), SdpError::BadMedia { line: 2 }, "{bad:?}");
    }
}

#[test]
fn connection_variants() {
    let conn = |c: &str| {
        let body = format!("v=0\r\nc={c}\r\n");
        Sdp::parse(body.as_bytes()).map(|s| s.session_connection.map(|c| c.addr))
    };
    assert_eq!(conn("IN IP4 10.1.2.3"), Ok(Some(v4(10, 1, 2, 3))));
    assert_eq!(conn("IN IP4 224.2.1.1/127"), Ok(Some(v4(224, 2, 1, 1))));
    assert_eq!(conn("IN IP4 224.2.1.1/127/3"), Ok(Some(v4(224, 2, 1, 1))));
    assert_eq!(
        conn("IN IP6 2001:DB8::1"),
        Ok(Some(IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0, 0, 1
        ))))
    );
    assert_eq!(conn("IN IP4 10.1.2.3 "), Ok(Some(v4(10, 1, 2, 3))));
    for bad in [
        "IN IP4 host.example.com",
        "IN IP4 2001:db8::1",
        "IN IP6 10.1.2.3",
        "ATM NSAP 47.0091.8100.0000.0060.3e64.fd01",
        "IN IP4",
        "IN IP4 10.1.2.3 extra",
        "IN IP4 10.1.2.3/x",
        "IN IP4 10.1.2.3/1/2/3",
        "IN IP4 10.1.2.3/",
        "",
    ] {
        assert_eq!(
            conn(bad),
            Err(SdpError::BadConnection { line: 2 }),
            "{bad:?}"
        );
    }
}

#[test]
fn rtcp_attribute() {
    let rtcp = |a: &str| {
        let body = format!("v=0\r\nm=audio 5004 RTP/AVP 0\r\na=rtcp:{a}\r\n");
        Sdp::parse(body.as_bytes()).map(|s| s.media[0].rtcp)
    };
    assert_eq!(rtcp("5005"), Ok(Some((5005, None))));
    assert_eq!(
        rtcp("53020 IN IP4 126.16.64.4"),
        Ok(Some((53020, Some(v4(126, 16, 64, 4)))))
    );
    assert_eq!(
        rtcp("9 IN IP6 ::"),
        Ok(Some((9, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))))
    );
    for bad in [
        "",
        "x",
        "70000",
        "5005 IN",
        "5005 IN IP4",
        "5005 IN IP4 1.2.3.4/5",
        "5005 IN IP4 1.2.3.4 x",
    ] {
        assert_eq!(
            rtcp(bad),
            Err(SdpError::BadAttribute {
                line: 3,
                attr: "rtcp"
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn rtpmap_attribute() {
    let rtpmap = |a: &str| {
        let body = format!("v=0\r\nm=audio 5004 RTP/AVP 96\r\na=rtpmap:{a}\r\n");
        Sdp::parse(body.as_bytes()).map(|s| {
            s.media[0]
                .rtpmap
                .iter()
                .map(|&(pt, name, clock)| (pt, name.to_owned(), clock))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        rtpmap("96 opus/48000/2"),
        Ok(vec![(96, "opus".into(), 48000)])
    );
    assert_eq!(rtpmap("96 L16/44100 "), Ok(vec![(96, "L16".into(), 44100)]));
    for bad in [
        "96",
        "96 opus",
        "96 opus/",
        "96 /8000",
        "128 PCMU/8000",
        "x PCMU/8000",
        "96 PCMU/8000 extra",
        "96 PCMU/99999999999",
    ] {
        assert_eq!(
            rtpmap(bad),
            Err(SdpError::BadAttribute {
                line: 3,
                attr: "rtpmap"
            }),
            "{bad:?}"
        );
    }
    // Session-level rtpmap is not ours to interpret.
    assert!(Sdp::parse(b"v=0\r\na=rtpmap:garbage\r\n").is_ok());
}

#[test]
fn attributes_flags_and_names() {
    let sdp = Sdp::parse(
        b"v=0\r\n\
a=ice-ufrag:abcd\r\n\
a=fingerprint:sha-256 AA:BB\r\n\
a=inactive\r\n\
m=audio 5004 RTP/SAVP 0\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xyz\r\n\
a=label:caller\r\n\
a=mid:audio0\r\n\
a=RTCP-MUX\r\n\
a=sendonly \r\n\
m=video 5006 RTP/AVP 96\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-xr:voip-metrics\r\n",
    )
    .expect("parse");
    assert_eq!(sdp.session_direction, Some(Direction::Inactive));
    let (a, v) = (&sdp.media[0], &sdp.media[1]);
    assert!(
        a.has_ice && v.has_ice,
        "session-level ICE applies to all media"
    );
    assert!(a.has_fingerprint && v.has_fingerprint);
    assert!(a.has_crypto && !v.has_crypto);
    assert_eq!(a.label, Some("caller"));
    assert_eq!(a.mid, Some("audio0"));
    assert!(a.rtcp_mux, "attribute names are case-insensitive");
    assert!(
        !v.rtcp_mux,
        "a=rtcp-fb / a=rtcp-xr are not rtcp or rtcp-mux"
    );
    assert_eq!(v.rtcp, None);
    assert_eq!(a.direction, Some(Direction::SendOnly));
    assert_eq!(a.effective_direction, Direction::SendOnly);
    assert_eq!(v.direction, None);
    assert_eq!(v.effective_direction, Direction::Inactive);
    assert_eq!(
        err(b"v=0\r\nm=audio 5004 RTP/AVP 0\r\na=label:\r\n"),
        SdpError::BadAttribute {
            line: 3,
            attr: "label"
        }
    );
}

#[test]
fn rejects_bad_bodies() {
    assert_eq!(err(b""), SdpError::Empty);
    let big = vec![b'a'; MAX_SDP_LEN + 1];
    assert_eq!(
        err(&big),
        SdpError::TooLarge {
            len: MAX_SDP_LEN + 1,
            limit: MAX_SDP_LEN
        }
    );
    assert_eq!(
        err(b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n"),
        SdpError::MissingVersion
    );
    assert_eq!(err(b"v=1\r\n"), SdpError::MissingVersion);
    assert_eq!(err(b"\r\nv=0\r\n"), SdpError::MissingVersion);
    assert_eq!(err(b"V=0\r\n"), SdpError::MissingVersion);
    assert_eq!(
        err(b"v=0\r\ngarbage\r\n"),
        SdpError::MalformedLine { line: 2 }
    );
    assert_eq!(err(b"v=0\r\n =x\r\n"), SdpError::MalformedLine { line: 2 });
    assert_eq!(err(b"v=0\r\n1=x\r\n"), SdpError::MalformedLine { line: 2 });
    assert_eq!(err(b"v=0\r\na\r\n"), SdpError::MalformedLine { line: 2 });
    assert_eq!(
        err(b"v=0\r\nv=0\r\n"),
        SdpError::Unexpected {
            line: 2,
            what: "v="
        }
    );
    assert_eq!(
        err(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n"),
        SdpError::Unexpected {
            line: 3,
            what: "o="
        }
    );
    let mut lines = b"v=0\n".to_vec();
    // v=0 plus MAX_LINES - 1 blank lines.
    lines.extend(std::iter::repeat_n(b'\n', MAX_LINES - 1));
    assert_eq!(Sdp::parse(&lines).map(|s| s.line_count()), Ok(MAX_LINES));
    lines.push(b'\n');
    assert_eq!(err(&lines), SdpError::TooManyLines { limit: MAX_LINES });
    let mut many = b"v=0\r\n".to_vec();
    for _ in 0..MAX_MEDIA {
        many.extend_from_slice(b"m=audio 5004 RTP/AVP 0\r\n");
    }
    assert_eq!(Sdp::parse(&many).map(|s| s.media.len()), Ok(MAX_MEDIA));
    many.extend_from_slice(b"m=audio 5004 RTP/AVP 0\r\n");
    assert_eq!(err(&many), SdpError::TooManyMedia { limit: MAX_MEDIA });
}

#[test]
fn non_utf8_only_matters_where_interpreted() {
    // Latin-1 session name and an unknown attribute: fine, and copied through.
    let input =
        b"v=0\r\ns=Caf\xe9\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=x-note:\xff\xfe\r\n";
    let sdp = Sdp::parse(input).expect("parse");
    let params = RewriteParams::new(RELAY, vec![relay(30000)]);
    let out = rewrite(&sdp, &params).expect("rewrite");
    assert!(out.starts_with(b"v=0\r\ns=Caf\xe9\r\nc=IN IP4 203.0.113.1\r\n"));
    assert!(contains(&out, b"a=x-note:\xff\xfe\r\n"));
    // In a line we must interpret: typed error.
    assert_eq!(
        err(b"v=0\r\nc=IN IP4 10.0.0.\xff\r\n"),
        SdpError::NonUtf8 { line: 2 }
    );
    assert_eq!(
        err(b"v=0\r\nm=audio 5004 RTP/AVP 0\r\na=rtcp:\xc3\r\n"),
        SdpError::NonUtf8 { line: 3 }
    );
    assert_eq!(
        err(b"v=0\r\nm=audio\xa0 5004 RTP/AVP 0\r\n"),
        SdpError::NonUtf8 { line: 2 }
    );
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(
        SdpError::BadConnection { line: 4 }.to_string(),
        "invalid or unsupported c= line in SDP (line 4)"
    );
    assert_eq!(
        SdpError::MediaCountMismatch {
            expected: 2,
            got: 1
        }
        .to_string(),
        "media rewrite list has 1 entries but the SDP has 2 m= lines"
    );
}

#[test]
fn blank_lines_and_bare_lf_are_tolerated() {
    let input = "v=0\n\r\nc=IN IP4 10.0.0.1\n\nm=audio 5004 RTP/AVP 0\r\n\r\n";
    let sdp = Sdp::parse(input.as_bytes()).expect("parse");
    assert_eq!(sdp.media.len(), 1);
    assert_eq!(sdp.line_count(), 6);
}

// ---- endpoints and hold --------------------------------------------------------------------

#[test]
fn endpoints() {
    let sdp = Sdp::parse(
        b"v=0\r\nc=IN IP4 10.0.0.1\r\n\
m=audio 5004 RTP/AVP 0\r\n\
m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\na=rtcp:7000\r\n\
m=audio 6002 RTP/AVP 0\r\na=rtcp:7002 IN IP4 10.0.0.3\r\n\
m=audio 6004 RTP/AVP 0\r\na=rtcp-mux\r\na=rtcp:6004\r\n\
m=audio 0 RTP/AVP 0\r\n\
m=audio 65535 RTP/AVP 0\r\n",
    )
    .expect("parse");
    let s = sdp.session_connection;
    let sa = |a: IpAddr, p: u16| Some(SocketAddr::new(a, p));
    let m = &sdp.media;
    assert_eq!(m[0].rtp_endpoint(s), sa(v4(10, 0, 0, 1), 5004));
    assert_eq!(m[0].rtcp_endpoint(s), sa(v4(10, 0, 0, 1), 5005));
    assert_eq!(m[1].rtp_endpoint(s), sa(v4(10, 0, 0, 2), 6000));
    assert_eq!(m[1].rtcp_endpoint(s), sa(v4(10, 0, 0, 2), 7000));
    assert_eq!(m[2].rtcp_endpoint(s), sa(v4(10, 0, 0, 3), 7002));
    assert_eq!(m[3].rtcp_endpoint(s), sa(v4(10, 0, 0, 1), 6004));
    assert_eq!(m[4].rtp_endpoint(s), None);
    assert_eq!(m[4].rtcp_endpoint(s), None);
    assert!(m[4].is_rejected());
    assert_eq!(m[5].rtcp_endpoint(s), None, "no port 65536");
    assert_eq!(m[0].rtp_endpoint(None), None, "no address anywhere");
}

#[test]
fn hold_detection() {
    let held = |body: &str| {
        let sdp = Sdp::parse(body.as_bytes()).expect("parse");
        sdp.media[0].is_hold(sdp.session_connection)
    };
    assert!(held(
        "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5004 RTP/AVP 0\r\n"
    ));
    assert!(held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n"
    ));
    assert!(held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=sendonly\r\n"
    ));
    assert!(held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 5004 RTP/AVP 0\r\n"
    ));
    assert!(!held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 5004 RTP/AVP 0\r\na=sendrecv\r\n"
    ));
    assert!(!held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=recvonly\r\n"
    ));
    assert!(!held(
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n"
    ));
}

// ---- rewriting -----------------------------------------------------------------------------

#[test]
fn rewrite_basic_offer() {
    let mut p = RewriteParams::new(RELAY, vec![relay(30000)]);
    p.replace_origin = true;
    let out = rw(ASTERISK, &p);
    assert_eq!(
        out,
        ASTERISK
            .replace("IN IP4 192.168.1.20", "IN IP4 203.0.113.1")
            .replace("m=audio 17014", "m=audio 30000")
            + "a=rtcp:30001\r\n"
    );
}

#[test]
fn rewrite_rejects_mismatched_params() {
    let sdp = Sdp::parse(ASTERISK.as_bytes()).expect("parse");
    let p = RewriteParams::new(RELAY, vec![]);
    assert_eq!(
        rewrite(&sdp, &p),
        Err(SdpError::MediaCountMismatch {
            expected: 1,
            got: 0
        })
    );
    let mut p = RewriteParams::new(RELAY, vec![relay(30000)]);
    p.replace_session_name = true;
    for bad in ["a\r\nc=IN IP4 6.6.6.6", "x\ny", "nul\0"] {
        p.session_name = Some(bad.into());
        assert_eq!(rewrite(&sdp, &p), Err(SdpError::BadSessionName));
    }
    p.session_name = Some("My call".into());
    let out = rewrite(&sdp, &p).expect("rewrite");
    assert!(contains(&out, b"s=My call\r\n"));
}

#[test]
fn rewrite_rtcp_modes_and_mux() {
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=rtcp:5005\r\na=rtcp:5007\r\na=ptime:20\r\n";
    let mut p = RewriteParams::new(RELAY, vec![relay(30000)]);
    let base = "v=0\r\nc=IN IP4 203.0.113.1\r\nm=audio 30000 RTP/AVP 0\r\n";
    assert_eq!(
        rw(input, &p),
        format!("{base}a=rtcp:30001\r\na=ptime:20\r\n"),
        "duplicate a=rtcp dropped"
    );
    p.rtcp_attr = RtcpAttr::Omit;
    assert_eq!(rw(input, &p), format!("{base}a=ptime:20\r\n"));
    p.rtcp_attr = RtcpAttr::Full;
    assert_eq!(
        rw(input, &p),
        format!("{base}a=rtcp:30001 IN IP4 203.0.113.1\r\na=ptime:20\r\n")
    );
    // rtcp-mux requested but not offered: a=rtcp-mux appended, a=rtcp carries the RTP port.
    p.rtcp_attr = RtcpAttr::Auto;
    p.media = vec![MediaRewrite::Relay {
        rtp_port: 30000,
        rtcp_port: 30001,
        rtcp_mux: true,
        rtcp_fallback: false,
    }];
    assert_eq!(
        rw(input, &p),
        format!("{base}a=rtcp:30000\r\na=ptime:20\r\na=rtcp-mux\r\n")
    );
    // Nothing at all: a=rtcp and a=rtcp-mux inserted, in that order.
    let bare = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n";
    assert_eq!(
        rw(bare, &p),
        format!("{base}a=rtcp:30000\r\na=rtcp-mux\r\n")
    );
    // Mux offered with the fallback kept: a=rtcp names the RTCP port beside a=rtcp-mux.
    p.media = vec![MediaRewrite::Relay {
        rtp_port: 30000,
        rtcp_port: 30001,
        rtcp_mux: true,
        rtcp_fallback: true,
    }];
    assert_eq!(
        rw(bare, &p),
        format!("{base}a=rtcp:30001\r\na=rtcp-mux\r\n")
    );
}

#[test]
fn rewrite_inserts_before_trailing_blank_lines_and_next_media() {
    let input =
        "v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/AVP 0\na=x\n\nm=video 5006 RTP/AVP 96\n\n";
    let p = RewriteParams::new(RELAY, vec![relay(30000), relay(30002)]);
    assert_eq!(
        rw(input, &p),
        "v=0\nc=IN IP4 203.0.113.1\nm=audio 30000 RTP/AVP 0\na=x\na=rtcp:30001\n\n\
m=video 30002 RTP/AVP 96\na=rtcp:30003\n\n"
    );
}

#[test]
fn rewrite_direction_replace_and_dedupe() {
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\na=sendrecv\r\nm=audio 5004 RTP/AVP 0\r\na=sendrecv\r\na=recvonly\r\n";
    let mut p = RewriteParams::new(RELAY, vec![relay(30000)]);
    p.direction = Some(Direction::Inactive);
    p.rtcp_attr = RtcpAttr::Omit;
    assert_eq!(
        rw(input, &p),
        "v=0\r\nc=IN IP4 203.0.113.1\r\na=sendrecv\r\nm=audio 30000 RTP/AVP 0\r\na=inactive\r\n"
    );
}

#[test]
fn rewrite_remove_ice_session_and_relayed_only() {
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\na=ice-lite\r\na=ice-ufrag:u\r\n\
m=audio 5004 RTP/AVP 0\r\na=candidate:1 1 UDP 1 10.0.0.1 5004 typ host\r\na=end-of-candidates\r\n\
a=remote-candidates:1 10.0.0.9 4000\r\na=ice-options:trickle\r\na=ice-pwd:p\r\n\
m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\na=candidate:1 1 UDP 1 10.0.0.1 6000 typ host\r\n";
    let mut p = RewriteParams::new(RELAY, vec![relay(30000), MediaRewrite::Keep]);
    p.remove_ice = true;
    p.rtcp_attr = RtcpAttr::Omit;
    assert_eq!(
        rw(input, &p),
        "v=0\r\nc=IN IP4 203.0.113.1\r\nm=audio 30000 RTP/AVP 0\r\n\
m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\na=candidate:1 1 UDP 1 10.0.0.1 6000 typ host\r\n"
    );
}

#[test]
fn rewrite_keeps_port_count_and_media_c_hold() {
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004/2 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";
    let p = RewriteParams::new(RELAY, vec![relay(30000)]);
    assert_eq!(
        rw(input, &p),
        "v=0\r\nc=IN IP4 203.0.113.1\r\nm=audio 30000/2 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:30001\r\n"
    );
}

#[test]
fn rewrite_relay_without_any_connection_is_tolerated() {
    let input = "v=0\r\nm=audio 5004 RTP/AVP 0\r\n";
    let p = RewriteParams::new(RELAY, vec![relay(30000)]);
    assert_eq!(
        rw(input, &p),
        "v=0\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp:30001\r\n"
    );
}

#[test]
fn rewrite_multicast_ttl_and_family_switch() {
    let input =
        "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\nc=IN IP4 224.2.1.1/127\r\nm=audio 5004 RTP/AVP 0\r\n";
    let relay6: IpAddr = "2001:db8::1".parse().expect("v6");
    let mut p = RewriteParams::new(relay6, vec![relay(30000)]);
    p.replace_origin = true;
    p.rtcp_attr = RtcpAttr::Full;
    assert_eq!(
        rw(input, &p),
        "v=0\r\no=- 1 2 IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::1\r\nm=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30001 IN IP6 2001:db8::1\r\n"
    );
}

#[test]
fn rewrite_non_rtp_media_keeps_its_lines() {
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n";
    let p = RewriteParams::new(RELAY, vec![relay(30000)]);
    assert_eq!(
        rw(input, &p),
        "v=0\r\nc=IN IP4 203.0.113.1\r\nm=application 30000 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n"
    );
}

#[test]
fn rewrite_identity_without_edits() {
    let inputs = [
        ASTERISK,
        "v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/AVP 0\na=rtcp:9 IN IP4 0.0.0.0\n\n\n",
        "v=0\r\nm=audio 0 RTP/AVP 0\r\nm=video 5004 RTP/AVP 0\r\nc=IN IP4 1.2.3.4\r\na=sendonly",
    ];
    for input in inputs {
        let sdp = Sdp::parse(input.as_bytes()).expect("parse");
        let relay = sdp.session_connection.map_or(v4(192, 0, 2, 1), |c| c.addr);
        let p = RewriteParams::new(relay, vec![MediaRewrite::Keep; sdp.media.len()]);
        assert_eq!(rewrite(&sdp, &p).expect("rewrite"), input.as_bytes());
    }
}

/// Regression (fuzzing, issue 21): a second session-level c= after one that already names the
/// relay was rewritten although every media line was kept; the first decides for both.
#[test]
fn rewrite_keeps_a_duplicate_session_c_when_the_first_names_the_relay() {
    let input = "v=0\r\nc=IN IP4 192.0.2.1\r\nc=IN IP4 10.9.9.9\r\nm=audio 5004 RTP/AVP 0\r\n";
    let sdp = Sdp::parse(input.as_bytes()).expect("parse");
    let p = RewriteParams::new(v4(192, 0, 2, 1), vec![MediaRewrite::Keep]);
    assert_eq!(rewrite(&sdp, &p).expect("rewrite"), input.as_bytes());
    // When the first names the phone, both move to the relay when media is relayed.
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\nc=IN IP4 10.9.9.9\r\nm=audio 5004 RTP/AVP 0\r\n";
    let sdp = Sdp::parse(input.as_bytes()).expect("parse");
    let p = RewriteParams::new(v4(192, 0, 2, 1), vec![relay(30000)]);
    let out = String::from_utf8(rewrite(&sdp, &p).expect("rewrite")).expect("utf8");
    assert!(
        !out.contains("10.0.0.1") && !out.contains("10.9.9.9"),
        "{out}"
    );
    assert_eq!(out.matches("c=IN IP4 192.0.2.1").count(), 2, "{out}");
}

/// Regression (fuzzing, 2026-12-06, `fuzz/corpus/sdp/regress-final-cr-mid`): a body cut
/// after the CR of its last CRLF kept that CR as content, so `a=mid:` with only blanks
/// before it parsed as a mid of "\r"; a line inserted after it completed the CRLF and the
/// rewritten body no longer parsed. The CR now ends the line.
#[test]
fn a_final_lone_cr_ends_the_last_line() {
    let input = b"v=0\nm=ao 50456 *\x0bP5E:;\x00\r\na=mid:\t\t\t\r";
    assert!(
        Sdp::parse(input).is_err(),
        "a mid of only blanks must not parse"
    );
    let input = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=mid:0\r";
    let sdp = Sdp::parse(input.as_bytes()).expect("parse");
    assert_eq!(sdp.media[0].mid, Some("0"));
    // Kept as it is, byte for byte; with a line inserted after it, it parses again with
    // the same mid and the new line, and still ends with a lone CR.
    let keep = RewriteParams::new(v4(10, 0, 0, 1), vec![MediaRewrite::Keep]);
    assert_eq!(rewrite(&sdp, &keep).expect("rewrite"), input.as_bytes());
    let mut p = RewriteParams::new(v4(192, 0, 2, 1), vec![relay(30000)]);
    p.direction = Some(Direction::SendRecv);
    let out = rewrite(&sdp, &p).expect("rewrite");
    let text = String::from_utf8(out.clone()).expect("utf8");
    assert!(text.contains("a=mid:0\r\na=sendrecv\r\n"), "{text:?}");
    assert!(text.ends_with("\r") && !text.ends_with("\r\n"), "{text:?}");
    let again = Sdp::parse(&out).expect("the rewritten body parses");
    assert_eq!(again.media[0].mid, Some("0"));
    assert_eq!(again.media[0].direction, Some(Direction::SendRecv));
}

// ---- robustness ----------------------------------------------------------------------------

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sdp");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            name.ends_with(".in.sdp")
                .then(|| Some((name, std::fs::read(e.path()).ok()?)))
                .flatten()
        })
        .collect();
    files.sort();
    files
}

/// Parameter sets exercising every rewrite path for a body with `n` media.
fn param_sets(n: usize) -> Vec<RewriteParams> {
    let relay_all: Vec<MediaRewrite> = (0..n)
        .map(|i| MediaRewrite::Relay {
            rtp_port: 30000 + 2 * i as u16,
            rtcp_port: 30001 + 2 * i as u16,
            rtcp_mux: i % 2 == 1,
            rtcp_fallback: i % 4 == 1,
        })
        .collect();
    let mut everything = RewriteParams::new(RELAY, relay_all.clone());
    everything.replace_origin = true;
    everything.replace_session_name = true;
    everything.remove_ice = true;
    everything.rtcp_attr = RtcpAttr::Full;
    everything.direction = Some(Direction::SendOnly);
    let mut v6 = RewriteParams::new("2001:db8::1".parse().expect("v6"), relay_all);
    v6.rtcp_attr = RtcpAttr::Omit;
    let alternating: Vec<MediaRewrite> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                relay(40000)
            } else {
                MediaRewrite::Keep
            }
        })
        .collect();
    vec![everything, v6, RewriteParams::new(RELAY, alternating)]
}

/// Parse must return Ok or Err (never panic); a successful parse must rewrite without error
/// (under the parameter set picked by `which`), and what we emit must itself parse with the
/// same media count. Returns whether the input parsed.
fn check_no_panic(input: &[u8], which: usize) -> bool {
    let Ok(sdp) = Sdp::parse(input) else {
        return false;
    };
    let sets = param_sets(sdp.media.len());
    let n = sets.len();
    if let Some(p) = sets.into_iter().nth(which % n) {
        let out = rewrite(&sdp, &p).expect("rewrite of a parsed body");
        let again = Sdp::parse(&out).unwrap_or_else(|e| {
            panic!(
                "output does not parse ({e}):\n{}\nfrom input:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(input)
            )
        });
        assert_eq!(again.media.len(), sdp.media.len());
    }
    assert!(rewrite(
        &sdp,
        &RewriteParams::new(RELAY, vec![MediaRewrite::Keep; sdp.media.len() + 1])
    )
    .is_err());
    true
}

#[test]
fn mutation_truncate_and_flip_never_panics() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus missing: {} files", files.len());
    let mut parsed_ok = 0usize;
    let mut rejected = 0usize;
    for (_, data) in &files {
        for cut in 0..=data.len() {
            check_no_panic(&data[..cut], cut);
        }
        let mut buf = data.clone();
        for i in 0..buf.len() {
            let orig = buf[i];
            let flips = [
                orig ^ 0xff,
                orig ^ 0x20,
                b'\n',
                b' ',
                b'/',
                b'0',
                b':',
                0x80,
            ];
            for (k, b) in flips.into_iter().enumerate() {
                buf[i] = b;
                if check_no_panic(&buf, i + k) {
                    parsed_ok += 1;
                } else {
                    rejected += 1;
                }
            }
            buf[i] = orig;
        }
    }
    // Both outcomes must actually occur, or the test is not exercising anything.
    assert!(
        parsed_ok > 1000 && rejected > 1000,
        "{parsed_ok} ok / {rejected} rejected"
    );
}

#[test]
fn pseudo_random_garbage_never_panics() {
    // Deterministic xorshift; bodies built from SDP-ish fragments and random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const PIECES: [&[u8]; 16] = [
        b"v=0\r\n",
        b"c=IN IP4 10.0.0.1\r\n",
        b"c=IN IP6 ::1\n",
        b"c=IN IP4 0.0.0.0\r\n",
        b"m=audio 5004 RTP/AVP 0\r\n",
        b"m=image 0 udptl t38\n",
        b"a=rtcp:5005\r\n",
        b"a=rtcp-mux\r\n",
        b"a=sendonly\r\n",
        b"a=candidate:1 1 UDP 1 1.2.3.4 5 typ host\r\n",
        b"o=- 1 1 IN IP4 1.2.3.4\r\n",
        b"s=-\r\n",
        b"\r\n",
        b"a=rtpmap:96 opus/48000/2\r\n",
        b"i=x\n",
        b"a=x",
    ];
    for _ in 0..3000 {
        let mut body = b"v=0\r\n".to_vec();
        for _ in 0..(next() % 12) {
            let r = next();
            if r % 5 == 0 {
                body.push((r >> 8) as u8);
            } else {
                body.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
            }
        }
        check_no_panic(&body, next() as usize);
    }
}
