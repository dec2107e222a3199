//! Typed reads of a request value (string, identifier, integer, list, address) with the
//! error each wrong shape gets, and the message snippets that quote request bytes.

use std::net::IpAddr;

use super::keys::Key;
use super::request::NgError;
use crate::control::bencode::Value;
use crate::control::flags::{AddressFamily, Norm};

/// At most 64 characters of `b`, lossily decoded, for messages.
pub(super) fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.into_owned(),
    }
}

pub(super) fn wrong_type(key: Key, expected: &'static str) -> NgError {
    NgError::WrongType {
        key: key.name().into(),
        expected,
    }
}

pub(super) fn invalid(key: Key, val: &[u8]) -> NgError {
    NgError::InvalidValue {
        key: key.name().into(),
        reason: snippet(val),
    }
}

fn invalid_num(key: Key, n: i64) -> NgError {
    NgError::InvalidValue {
        key: key.name().into(),
        reason: format!("{n} is out of range"),
    }
}

pub(super) fn want_bytes<'a>(key: Key, v: &Value<'a>) -> Result<&'a [u8], NgError> {
    v.as_bytes().ok_or_else(|| wrong_type(key, "string"))
}

/// Identifiers (call-id, tags, branch) must be UTF-8: SIP restricts them to ASCII tokens, and
/// a lossy conversion could make two different ids collide.
pub(super) fn want_ident(key: Key, v: &Value<'_>) -> Result<String, NgError> {
    let b = want_bytes(key, v)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| NgError::InvalidValue {
            key: key.name().into(),
            reason: "not valid UTF-8".into(),
        })
}

/// Free text (labels, interface names): lossy.
pub(super) fn want_text(key: Key, v: &Value<'_>) -> Result<String, NgError> {
    want_bytes(key, v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer, given as one or as decimal text (flag tokens carry text).
fn want_int(key: Key, v: &Value<'_>) -> Result<i64, NgError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| invalid(key, b)),
        _ => Err(wrong_type(key, "integer")),
    }
}

/// An integer that must fit `T` (the key's range).
pub(super) fn want_ranged<T: TryFrom<i64>>(key: Key, v: &Value<'_>) -> Result<T, NgError> {
    let n = want_int(key, v)?;
    T::try_from(n).map_err(|_| invalid_num(key, n))
}

/// A list's items; a single string counts as a one-item list (JSON clients and `key=value`
/// tokens give scalars).
pub(super) fn list_items<'v, 'a>(key: Key, v: &'v Value<'a>) -> Result<&'v [Value<'a>], NgError> {
    match v {
        Value::List(items) => Ok(items),
        Value::Bytes(_) => Ok(std::slice::from_ref(v)),
        _ => Err(wrong_type(key, "list")),
    }
}

pub(super) fn parse_ip(key: Key, text: &[u8]) -> Result<IpAddr, NgError> {
    let s = std::str::from_utf8(text).map_err(|_| invalid(key, text))?;
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>().map_err(|_| invalid(key, text))
}

/// `received-from`: `["IP4", "1.2.3.4"]` (family checked against the address) or a bare
/// address.
pub(super) fn parse_received_from(key: Key, v: &Value<'_>) -> Result<IpAddr, NgError> {
    let items = list_items(key, v)?;
    match items {
        [addr] => parse_ip(key, want_bytes(key, addr)?),
        [family, addr] => {
            let fam_raw = want_bytes(key, family)?;
            let ip = parse_ip(key, want_bytes(key, addr)?)?;
            let family_ok = match AddressFamily::from_name(Norm::new(fam_raw).name()) {
                Some(AddressFamily::Ip4) => ip.is_ipv4(),
                Some(AddressFamily::Ip6) => ip.is_ipv6(),
                None => false,
            };
            if family_ok {
                Ok(ip)
            } else {
                Err(invalid(key, fam_raw))
            }
        }
        _ => Err(NgError::InvalidValue {
            key: key.name().into(),
            reason: "expected [family, address]".into(),
        }),
    }
}
