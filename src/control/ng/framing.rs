//! Datagram framing (`<cookie> <body>`), the body format (bencode or JSON) and the reply
//! datagram.

use super::parse::parse_request_value;
use super::request::{NgError, NgRequest};
use crate::control::bencode::{self, Owned};
use crate::control::json;

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
