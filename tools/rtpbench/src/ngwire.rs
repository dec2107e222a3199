//! TEMPORARY bencode shim for the ng client, mirroring the API of the crate's codec
//! (`rtpanchor::control::bencode`) that is being written in parallel. Delete this file and
//! switch `ng.rs`/`reflector.rs` to the crate's codec as soon as it lands: the project keeps
//! one bencode implementation.
//!
//! Bencode (BEP 3): `i<int>e`, `<len>:<bytes>`, `l...e`, `d<key><value>...e`. Keys need not be
//! sorted (rtpengine does not sort them). Nesting and sizes are bounded; hostile input
//! returns an error, never panics.

use std::fmt;

const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A decoded value borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// Decodes exactly one value spanning the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let (v, rest) = value(input, 0)?;
    if !rest.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(v)
}

fn value(input: &[u8], depth: usize) -> Result<(Value<'_>, &[u8]), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError("nested too deeply"));
    }
    match input.first() {
        Some(b'i') => {
            let end = find(input, b'e')?;
            let s = std::str::from_utf8(&input[1..end]).map_err(|_| DecodeError("bad int"))?;
            let i = s.parse::<i64>().map_err(|_| DecodeError("bad int"))?;
            Ok((Value::Int(i), &input[end + 1..]))
        }
        Some(b'l') => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            while rest.first() != Some(&b'e') {
                let (v, r) = value(rest, depth + 1)?;
                items.push(v);
                rest = r;
            }
            Ok((Value::List(items), &rest[1..]))
        }
        Some(b'd') => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            while rest.first() != Some(&b'e') {
                let (k, r) = bytes(rest)?;
                let (v, r) = value(r, depth + 1)?;
                items.push((k, v));
                rest = r;
            }
            Ok((Value::Dict(items), &rest[1..]))
        }
        Some(b'0'..=b'9') => {
            let (b, r) = bytes(input)?;
            Ok((Value::Bytes(b), r))
        }
        Some(_) => Err(DecodeError("unexpected byte")),
        None => Err(DecodeError("truncated")),
    }
}

fn find(input: &[u8], c: u8) -> Result<usize, DecodeError> {
    input
        .iter()
        .position(|&b| b == c)
        .ok_or(DecodeError("truncated"))
}

fn bytes(input: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let colon = find(input, b':')?;
    let s = std::str::from_utf8(&input[..colon]).map_err(|_| DecodeError("bad length"))?;
    let len = s.parse::<usize>().map_err(|_| DecodeError("bad length"))?;
    let body = &input[colon + 1..];
    if body.len() < len {
        return Err(DecodeError("truncated string"));
    }
    Ok((&body[..len], &body[len..]))
}

/// An owned value for building messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Owned>),
    Dict(Vec<(Vec<u8>, Owned)>),
}

impl Owned {
    pub fn str(s: impl AsRef<[u8]>) -> Owned {
        Owned::Str(s.as_ref().to_vec())
    }
    pub fn dict() -> Owned {
        Owned::Dict(Vec::new())
    }
    /// Appends `key: value` to a dict (no-op on other variants).
    pub fn with(mut self, key: &str, value: Owned) -> Owned {
        if let Owned::Dict(items) = &mut self {
            items.push((key.as_bytes().to_vec(), value));
        }
        self
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Owned::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Owned::Str(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            Owned::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Owned::Dict(items) => {
                out.push(b'd');
                for (k, v) in items {
                    out.extend_from_slice(format!("{}:", k.len()).as_bytes());
                    out.extend_from_slice(k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unsorted_keys() {
        let mut out = Vec::new();
        Owned::dict()
            .with("sdp", Owned::str("v=0"))
            .with("result", Owned::str("ok"))
            .encode(&mut out);
        assert_eq!(out, b"d3:sdp3:v=06:result2:oke");
        let v = decode(&out).unwrap();
        assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
        assert_eq!(v.get("sdp").and_then(Value::as_str), Some("v=0"));
    }

    #[test]
    fn hostile_input_is_an_error() {
        for bad in [
            &b"d3:sdp"[..],
            b"5:ab",
            b"i12",
            b"x",
            b"",
            b"l",
            b"99999999999999999999:",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let deep = vec![b'l'; 1000];
        assert!(decode(&deep).is_err());
    }
}
