//! The ng request target: bencode and JSON decoding, and the request parser, with the reply
//! a relay would send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::control::bencode::{self, Owned};
use crate::control::ng::{self, BodyFormat};
use crate::control::{handler, json, reply};
use crate::session::fake::FakeBackend;
use crate::session::manager::{ManagerConfig, SessionManager};
use crate::session::negotiate::RelayInterface;
use crate::time::NANOS_PER_SEC;

/// The first relay port of the fuzzing managers (nothing is bound: the backend is fake).
pub const PORT_MIN: u16 = 30_000;
/// The last one: 50 pairs, so a sequence can run the range out.
pub const PORT_MAX: u16 = 30_099;

/// A session manager over the fake backend, with an IPv4 and an IPv6 interface, a delete
/// delay of 2 s and a media timeout of 60 s.
pub fn manager() -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: vec![
            RelayInterface::new("pub", IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
            RelayInterface::new("priv", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ],
        delete_delay_ns: 2 * NANOS_PER_SEC,
        port_min: PORT_MIN,
        port_max: PORT_MAX,
        ..ManagerConfig::default()
    };
    let backend = match FakeBackend::new(PORT_MIN, PORT_MAX) {
        Ok(b) => b,
        Err(e) => panic!("fake backend: {e}"),
    };
    SessionManager::new(backend, cfg, NANOS_PER_SEC)
}

/// Checks that `reply`, framed in `fmt` as the server sends it, decodes back to itself and
/// carries a `result` of ok, error (with an `error-reason`), pong or load limit.
pub fn check_reply(reply: &Owned, fmt: BodyFormat) {
    let dgram = ng::frame_reply(b"cookie", fmt, reply);
    let Some((cookie, body)) = ng::split_datagram(&dgram) else {
        panic!("reply datagram has no cookie");
    };
    assert_eq!(cookie, b"cookie");
    let decoded = match fmt {
        BodyFormat::Bencode => bencode::decode(body).map(|v| Owned::from(&v)).ok(),
        BodyFormat::Json => json::parse(body).ok(),
    };
    assert_eq!(
        decoded.as_ref(),
        Some(reply),
        "reply does not decode to itself"
    );
    let result = reply.get("result").and_then(Owned::as_str);
    match result {
        Some("ok" | "pong" | "load limit") => {}
        Some("error") => assert!(
            reply.get("error-reason").and_then(Owned::as_str).is_some(),
            "error without a reason: {reply}"
        ),
        other => panic!("reply result {other:?}: {reply}"),
    }
}

/// `data` as an ng datagram (`<cookie> <body>`), and as a bare bencode and JSON document.
///
/// Invariants: a decoded bencode tree encodes to bytes that decode to the same tree; a JSON
/// tree written out parses to the same tree; a request that parses is handled against a
/// fresh session manager and, like the error reply of one that does not, gives a
/// well-formed reply.
pub fn request(data: &[u8]) {
    if let Ok(v) = bencode::decode(data) {
        let once = Owned::from(&v);
        let bytes = once.to_bencode();
        let twice = bencode::decode(&bytes).map(|v| Owned::from(&v));
        assert_eq!(twice.as_ref(), Ok(&once), "bencode round trip");
    }
    if let Ok(once) = json::parse(data) {
        let twice = json::parse(&json::to_json(&once));
        assert_eq!(twice.as_ref(), Ok(&once), "JSON round trip");
    }
    let body = ng::split_datagram(data).map_or(data, |(_, body)| body);
    match ng::parse_request(body) {
        Ok((req, fmt)) => {
            let mut mgr = manager();
            let out = handler::handle(&mut mgr, req, 2 * NANOS_PER_SEC);
            check_reply(&out, fmt);
        }
        Err((e, fmt)) => check_reply(&reply::from_error(&e), fmt),
    }
}
