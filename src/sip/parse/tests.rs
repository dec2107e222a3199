//! Unit tests of the framer and parser.

use super::*;

const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r\n";

#[test]
fn frames_a_request() {
    let m = Message::parse(INVITE).unwrap();
    assert_eq!(m.method(), Some("INVITE"));
    match m.start {
        StartLine::Request(r) => {
            assert_eq!(r.uri, "sip:bob@example.com");
            assert_eq!(
                &INVITE[r.uri_range.0 as usize..r.uri_range.1 as usize],
                b"sip:bob@example.com"
            );
        }
        StartLine::Response(_) => panic!("not a request"),
    }
    assert_eq!(m.headers.len(), 9);
    assert_eq!(m.headers[0].kind, HeaderName::Via);
    assert_eq!(
        m.header(HeaderName::CallId).unwrap().value,
        "a84b4c76e66710@pc33.example.com"
    );
    assert_eq!(m.body(), b"v=0\r");
    assert_eq!(m.content_length, Some(4));
    // One trailing byte beyond Content-Length is ignored.
    assert_eq!(m.as_bytes().len(), INVITE.len() - 1);
    let h = &m.headers[1];
    assert_eq!(&INVITE[h.line_range()], b"Max-Forwards: 70\r\n");
    assert_eq!(&INVITE[h.value_range()], b"70");
}

#[test]
fn compact_and_case_insensitive_names() {
    for (n, k) in [
        ("v", HeaderName::Via),
        ("VIA", HeaderName::Via),
        ("f", HeaderName::From),
        ("t", HeaderName::To),
        ("i", HeaderName::CallId),
        ("m", HeaderName::Contact),
        ("l", HeaderName::ContentLength),
        ("c", HeaderName::ContentType),
        ("k", HeaderName::Supported),
        ("s", HeaderName::Subject),
        ("e", HeaderName::ContentEncoding),
        ("call-id", HeaderName::CallId),
        ("X-Foo", HeaderName::Other),
    ] {
        assert_eq!(HeaderName::from_name(n), k, "{n}");
    }
}

#[test]
fn every_canonical_name_round_trips() {
    for &h in HeaderName::ALL {
        let c = h.canonical();
        assert_eq!(HeaderName::from_name(c), h, "{c}");
        assert_eq!(HeaderName::from_name(&c.to_ascii_uppercase()), h, "{c}");
        assert_eq!(HeaderName::from_name(&c.to_ascii_lowercase()), h, "{c}");
    }
    assert_eq!(HeaderName::ALL.len(), 31);
    assert_eq!(HeaderName::from_name(""), HeaderName::Other);
    assert_eq!(HeaderName::from_name("x"), HeaderName::Other);
}

#[test]
fn responses() {
    let m = Message::parse(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(m.status(), Some(180));
    assert!(matches!(
        m.start,
        StartLine::Response(StatusLine {
            reason: "Ringing",
            ..
        })
    ));
    for bad in [
        &b"SIP/2.0 1800 Ringing\r\n\r\n"[..],
        b"SIP/2.0 099 x\r\n\r\n",
        b"SIP/2.0 abc x\r\n\r\n",
        b"SIP/2.0 200 a\x01b\r\n\r\n",
    ] {
        assert_eq!(Message::parse(bad).unwrap_err(), ParseError::BadStatusLine);
    }
    assert_eq!(
        Message::parse(b"SIP/3.0 200 OK\r\n\r\n").unwrap_err(),
        ParseError::VersionNotSupported
    );
}

#[test]
fn request_line_errors() {
    for (bad, err) in [
        (
            &b"INVITE  sip:a@b SIP/2.0\r\n\r\n"[..],
            ParseError::BadRequestLine,
        ),
        (
            b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
            ParseError::BadRequestLine,
        ),
        (b"INVITE sip:a@b\r\n\r\n", ParseError::BadRequestLine),
        (
            b"INVITE <sip:a@b> SIP/2.0\r\n\r\n",
            ParseError::BadRequestUri,
        ),
        (
            b"INV@TE sip:a@b SIP/2.0\r\n\r\n",
            ParseError::BadRequestLine,
        ),
        (
            b"INVITE sip:a@b SIP/2.1\r\n\r\n",
            ParseError::VersionNotSupported,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nA: b\nc\r\n\r\n",
            ParseError::BadHeaderLine,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nA: \xff\r\n\r\n",
            ParseError::InvalidUtf8,
        ),
        (b"INVITE sip:a@b SIP/2.0\r\nA: b", ParseError::Truncated),
        (b"\r\n\r\n", ParseError::Empty),
    ] {
        assert_eq!(
            Message::parse(bad).unwrap_err(),
            err,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn content_length_rules() {
    let base = "OPTIONS sip:a@b SIP/2.0\r\n";
    let p = |s: String| Message::parse(s.as_bytes()).map(|m| m.body().len());
    assert_eq!(p(format!("{base}l: 3\r\n\r\nabcdef")), Ok(3));
    assert_eq!(p(format!("{base}X: y\r\n\r\nabcdef")), Ok(6));
    assert_eq!(
        p(format!("{base}l: 7\r\n\r\nabcdef")),
        Err(ParseError::ContentLengthTooLarge)
    );
    assert_eq!(
        p(format!("{base}l: -1\r\n\r\n")),
        Err(ParseError::BadContentLength)
    );
    assert_eq!(
        p(format!("{base}l: 1\r\nl: 1\r\n\r\nx")),
        Err(ParseError::MultipleContentLength)
    );
    assert_eq!(
        p(format!("{base}l: 99999999999\r\n\r\n")),
        Err(ParseError::BadContentLength)
    );
    // Missing empty line at the end of a datagram: accepted with an empty body.
    assert_eq!(p(format!("{base}l: 0\r\n")), Ok(0));
}

#[test]
fn folded_values_are_trimmed_not_unfolded() {
    let m = Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX  :\r\n  one\r\n\ttwo  \r\nY:\r\n\r\n")
        .unwrap();
    assert_eq!(m.headers[0].value, "one\r\n\ttwo");
    assert_eq!(m.headers[0].value_unfolded(), "one two");
    assert_eq!(m.headers[1].value, "");
}

#[test]
fn limits() {
    let mut s = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
    for i in 0..=MAX_HEADERS {
        s.push_str(&format!("X-{i}: y\r\n"));
    }
    s.push_str("\r\n");
    assert_eq!(
        Message::parse(s.as_bytes()).unwrap_err(),
        ParseError::TooManyHeaders
    );
    let s = format!(
        "OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_LINE)
    );
    assert_eq!(
        Message::parse(s.as_bytes()).unwrap_err(),
        ParseError::HeaderLineTooLong
    );
    let s = vec![b'a'; MAX_MESSAGE_LEN + 1];
    assert_eq!(Message::parse(&s).unwrap_err(), ParseError::TooLarge);
}

#[test]
fn stream_framing() {
    assert_eq!(frame(b"\r\n\r\nINVITE"), Ok(Frame::KeepAlive(4)));
    assert_eq!(frame(b""), Ok(Frame::Incomplete));
    assert_eq!(frame(&INVITE[..50]), Ok(Frame::Incomplete));
    let len = INVITE.len() - 1;
    assert_eq!(frame(&INVITE[..len - 1]), Ok(Frame::Incomplete));
    assert_eq!(frame(INVITE), Ok(Frame::Message { len }));
    let m = Message::parse_with(&INVITE[..len], Framing::Stream).unwrap();
    assert_eq!(m.body(), b"v=0\r");
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"),
        Err(ParseError::MissingContentLength)
    );
}
