//! Bencode, as spoken by the rtpengine ng protocol.
//!
//! Decoding is zero-copy: [`decode`] returns a [`Value`] tree whose strings borrow from the
//! input datagram. Replies are built as an [`Owned`] tree and serialised with
//! [`Owned::encode`].
//!
//! Grammar (the BitTorrent encoding that ng uses): `i<int>e`, `<len>:<bytes>`, `l<values>e`,
//! `d<key value pairs>e` with byte-string keys. Differences from strict bencode, all needed to
//! interoperate with real ng peers:
//! - **Dictionary keys may come in any order.** Kamailio puts `command` last and rtpengine's
//!   own replies are unsorted, so neither decoding nor encoding sorts.
//! - **Duplicate keys are kept** in the decoded entry list; lookups ([`Value::get`]) return the
//!   *first* occurrence, so the first value wins.
//! - Strings are arbitrary bytes ([`Value::Bytes`]); UTF-8 is only checked on request
//!   ([`Value::as_str`]).
//!
//! Strictness where it costs nothing: integers reject `-0`, leading zeros, an empty body and
//! overflow; lengths reject leading zeros and are checked against the remaining input before
//! anything is sliced or allocated; nesting deeper than [`MAX_DEPTH`] is refused *before*
//! descending, so hostile input (e.g. 60 KB of `l`) fails fast and cannot exhaust the stack.
//! Memory use is proportional to the input: every allocated node consumed at least one byte.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;

/// Deepest nesting of lists/dictionaries accepted. A real ng request nests 3 levels at most
/// (`codec` → `strip` → list); 32 leaves ample room while bounding recursion.
pub const MAX_DEPTH: usize = 32;

/// A decoded bencode value borrowing from the input buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in wire order, duplicates included (lookups return the first).
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

/// Why a byte string is not one well-formed bencode value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value (or a declared string length exceeds what is left).
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// An integer is empty, `-0`, has leading zeros, non-digits or overflows `i64`.
    #[error("invalid integer")]
    InvalidInt,
    /// A string length has no digits, leading zeros or a non-digit before `:`.
    #[error("invalid string length")]
    InvalidLength,
    /// A string length does not fit in `usize`.
    #[error("string length overflows")]
    LengthOverflow,
    /// Lists/dictionaries nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes follow the one top-level value.
    #[error("trailing data after the value")]
    TrailingData,
    /// A byte that cannot start a value here (or a non-string dictionary key).
    #[error("unexpected byte 0x{0:02x}")]
    UnexpectedByte(u8),
}

/// Decodes `input`, which must hold exactly one bencode value.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let (value, rest) = decode_prefix(input)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingData)
    }
}

/// Decodes one value from the start of `input` and returns it with the unread remainder.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, &[u8]), DecodeError> {
    let mut p = Parser { input, pos: 0 };
    let value = p.value(0)?;
    Ok((value, &input[p.pos..]))
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEnd)
    }

    /// Parses one value; `depth` is the number of enclosing containers.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                self.int().map(Value::Int)
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                // Refuse before descending: recursion depth never exceeds MAX_DEPTH.
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek()? == b'e' {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    match self.peek()? {
                        b'e' => {
                            self.pos += 1;
                            return Ok(Value::Dict(entries));
                        }
                        b'0'..=b'9' => {
                            let key = self.bytes()?;
                            let value = self.value(depth + 1)?;
                            entries.push((key, value));
                        }
                        other => return Err(DecodeError::UnexpectedByte(other)),
                    }
                }
            }
            other => Err(DecodeError::UnexpectedByte(other)),
        }
    }

    /// Parses the body of `i…e` (the `i` already consumed).
    fn int(&mut self) -> Result<i64, DecodeError> {
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        let mut magnitude: u64 = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    magnitude = magnitude
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(b - b'0')))
                        .ok_or(DecodeError::InvalidInt)?;
                    self.pos += 1;
                }
                b'e' => break,
                _ => return Err(DecodeError::InvalidInt),
            }
        }
        let digits = &self.input[start..self.pos];
        // Canonical form only: "ie", "i-e", "i03e" and "i-0e" are all malformed.
        if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || negative)) {
            return Err(DecodeError::InvalidInt);
        }
        self.pos += 1; // the 'e'
        if negative {
            0i64.checked_sub_unsigned(magnitude)
                .ok_or(DecodeError::InvalidInt)
        } else {
            i64::try_from(magnitude).map_err(|_| DecodeError::InvalidInt)
        }
    }

    /// Parses `<len>:<bytes>` and returns the bytes, borrowed.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let mut len: usize = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(usize::from(b - b'0')))
                        .ok_or(DecodeError::LengthOverflow)?;
                    self.pos += 1;
                }
                b':' => break,
                _ => return Err(DecodeError::InvalidLength),
            }
        }
        let digits = self.pos - start;
        if digits == 0 || (digits > 1 && self.input[start] == b'0') {
            return Err(DecodeError::InvalidLength);
        }
        self.pos += 1; // the ':'
        let remaining = self.input.len() - self.pos;
        if len > remaining {
            return Err(DecodeError::UnexpectedEnd);
        }
        let s = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
}

impl<'a> Value<'a> {
    /// The value of the first entry named `key`, if `self` is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.get_bytes(key.as_bytes())
    }

    /// [`Value::get`] with a byte-string key.
    pub fn get_bytes(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// A short name of the variant, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
}

/// An owned bencode tree, used to build replies. Dictionaries keep insertion order (rtpengine
/// replies are unsorted too, and clients must not care). Keys are text because every reply key
/// is; decoded non-UTF-8 keys are converted lossily.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Owned>),
    Dict(Vec<(String, Owned)>),
}

impl Owned {
    /// A byte string holding `s`.
    pub fn str(s: &str) -> Owned {
        Owned::Str(s.as_bytes().to_vec())
    }

    /// A byte string holding `b` (need not be UTF-8).
    pub fn bytes(b: &[u8]) -> Owned {
        Owned::Str(b.to_vec())
    }

    pub fn int(i: i64) -> Owned {
        Owned::Int(i)
    }

    /// An empty dictionary.
    pub fn dict() -> Owned {
        Owned::Dict(Vec::new())
    }

    /// An empty list.
    pub fn list() -> Owned {
        Owned::List(Vec::new())
    }

    /// Builder form of [`Owned::insert`].
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Owned>) -> Owned {
        self.insert(key, value);
        self
    }

    /// Sets `key` in a dictionary: replaces the first entry with that key in place, or appends.
    /// Has no effect on a non-dictionary (a programming error, caught by a debug assertion).
    pub fn insert(&mut self, key: &str, value: impl Into<Owned>) {
        let value = value.into();
        match self {
            Owned::Dict(entries) => match entries.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key.to_owned(), value)),
            },
            _ => debug_assert!(false, "Owned::insert on a non-dictionary"),
        }
    }

    /// Appends to a list. Has no effect on a non-list (debug assertion).
    pub fn push(&mut self, value: impl Into<Owned>) {
        match self {
            Owned::List(items) => items.push(value.into()),
            _ => debug_assert!(false, "Owned::push on a non-list"),
        }
    }

    /// The value of the first entry named `key`, if `self` is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Owned> {
        match self {
            Owned::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Owned::Str(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Owned::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Owned]> {
        match self {
            Owned::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(String, Owned)]> {
        match self {
            Owned::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// A borrowed [`Value`] view of this tree, so owned documents (JSON requests) go through
    /// the same request parser as decoded bencode.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            Owned::Int(i) => Value::Int(*i),
            Owned::Str(b) => Value::Bytes(b),
            Owned::List(items) => Value::List(items.iter().map(Owned::as_value).collect()),
            Owned::Dict(entries) => Value::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_value()))
                    .collect(),
            ),
        }
    }

    /// Appends the bencode serialisation to `out`, in insertion order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Owned::Int(i) => {
                out.push(b'i');
                push_i64(out, *i);
                out.push(b'e');
            }
            Owned::Str(b) => push_bytes(out, b),
            Owned::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Owned::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    push_bytes(out, k.as_bytes());
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The bencode serialisation as a new buffer.
    pub fn to_bencode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    push_u64(out, b.len() as u64);
    out.push(b':');
    out.extend_from_slice(b);
}

fn push_i64(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.push(b'-');
    }
    push_u64(out, i.unsigned_abs());
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

impl From<&Value<'_>> for Owned {
    fn from(v: &Value<'_>) -> Owned {
        match v {
            Value::Int(i) => Owned::Int(*i),
            Value::Bytes(b) => Owned::Str(b.to_vec()),
            Value::List(items) => Owned::List(items.iter().map(Owned::from).collect()),
            Value::Dict(entries) => Owned::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), Owned::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Owned {
    fn from(s: &str) -> Owned {
        Owned::str(s)
    }
}

impl From<String> for Owned {
    fn from(s: String) -> Owned {
        Owned::Str(s.into_bytes())
    }
}

impl From<&[u8]> for Owned {
    fn from(b: &[u8]) -> Owned {
        Owned::bytes(b)
    }
}

impl From<Vec<u8>> for Owned {
    fn from(b: Vec<u8>) -> Owned {
        Owned::Str(b)
    }
}

impl From<i64> for Owned {
    fn from(i: i64) -> Owned {
        Owned::Int(i)
    }
}

impl From<u32> for Owned {
    fn from(i: u32) -> Owned {
        Owned::Int(i64::from(i))
    }
}

impl From<u16> for Owned {
    fn from(i: u16) -> Owned {
        Owned::Int(i64::from(i))
    }
}

impl From<u64> for Owned {
    /// Saturates at `i64::MAX` (bencode integers are signed 64-bit for every peer we know).
    fn from(i: u64) -> Owned {
        Owned::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Owned {
    fn from(b: bool) -> Owned {
        Owned::Int(i64::from(b))
    }
}

impl From<Vec<Owned>> for Owned {
    fn from(items: Vec<Owned>) -> Owned {
        Owned::List(items)
    }
}

impl fmt::Display for Owned {
    /// Bencode, with non-printable bytes escaped; for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = self.to_bencode();
        write!(f, "{}", enc.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_scalars() {
        assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(decode(b"i42e"), Ok(Value::Int(42)));
        assert_eq!(decode(b"i-7e"), Ok(Value::Int(-7)));
        assert_eq!(decode(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(decode(b"0:"), Ok(Value::Bytes(b"")));
        assert_eq!(decode(b"4:spam"), Ok(Value::Bytes(b"spam")));
        assert_eq!(decode(b"le"), Ok(Value::List(vec![])));
        assert_eq!(decode(b"de"), Ok(Value::Dict(vec![])));
    }

    #[test]
    fn rejects_malformed_integers() {
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i-03e",
            b"i00e",
            b"i1x2e",
            b"i+1e",
            b"i 1e",
            b"i9223372036854775808e",
            b"i-9223372036854775809e",
            b"i99999999999999999999999e",
        ] {
            assert_eq!(
                decode(bad),
                Err(DecodeError::InvalidInt),
                "{}",
                bad.escape_ascii()
            );
        }
        assert_eq!(decode(b"i12"), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode(b"i"), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn rejects_malformed_lengths() {
        assert_eq!(decode(b"01:a"), Err(DecodeError::InvalidLength));
        assert_eq!(decode(b"00:"), Err(DecodeError::InvalidLength));
        assert_eq!(decode(b"1x:a"), Err(DecodeError::InvalidLength));
        assert_eq!(decode(b"5:abc"), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode(b"3"), Err(DecodeError::UnexpectedEnd));
        // Larger than usize: refused while reading the digits, nothing allocated.
        assert_eq!(
            decode(b"99999999999999999999:x"),
            Err(DecodeError::LengthOverflow)
        );
        assert_eq!(
            decode(b"d3:sdp99999999999999999999:v=0e"),
            Err(DecodeError::LengthOverflow)
        );
        // Fits in usize but exceeds the input: checked before slicing.
        assert_eq!(
            decode(b"d3:sdp9999999999:v=0e"),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(
            decode(b"18446744073709551615:"),
            Err(DecodeError::UnexpectedEnd)
        );
    }

    #[test]
    fn rejects_bad_structure() {
        assert_eq!(decode(b""), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode(b"x"), Err(DecodeError::UnexpectedByte(b'x')));
        assert_eq!(decode(b"e"), Err(DecodeError::UnexpectedByte(b'e')));
        assert_eq!(decode(b"di1ei2ee"), Err(DecodeError::UnexpectedByte(b'i')));
        assert_eq!(decode(b"dlei1ee"), Err(DecodeError::UnexpectedByte(b'l')));
        assert_eq!(decode(b"d1:ae"), Err(DecodeError::UnexpectedByte(b'e')));
        assert_eq!(decode(b"l"), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode(b"d"), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode(b"i1ei2e"), Err(DecodeError::TrailingData));
        assert_eq!(decode(b"de\n"), Err(DecodeError::TrailingData));
    }

    #[test]
    fn decode_prefix_returns_rest() {
        let (v, rest) = decode_prefix(b"4:spamXYZ").unwrap();
        assert_eq!(v, Value::Bytes(b"spam"));
        assert_eq!(rest, b"XYZ");
    }

    #[test]
    fn unsorted_keys_are_accepted_and_order_is_kept() {
        let v = decode(b"d7:command4:ping3:abci1e1:a0:e").unwrap();
        let keys: Vec<&[u8]> = v.as_dict().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![&b"command"[..], b"abc", b"a"]);
        assert_eq!(v.get("command").and_then(Value::as_str), Some("ping"));
        assert_eq!(v.get("abc").and_then(Value::as_int), Some(1));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn duplicate_keys_first_wins() {
        let v = decode(b"d1:k5:first1:k6:seconde").unwrap();
        assert_eq!(v.as_dict().unwrap().len(), 2);
        assert_eq!(v.get("k").and_then(Value::as_str), Some("first"));
    }

    #[test]
    fn non_utf8_strings_are_bytes() {
        let v = decode(b"d3:bin3:\xff\x00\xfee").unwrap();
        let bin = v.get("bin").unwrap();
        assert_eq!(bin.as_bytes(), Some(&b"\xff\x00\xfe"[..]));
        assert_eq!(bin.as_str(), None);
        // Non-UTF-8 keys decode too.
        let v = decode(b"d2:\xc3\x28i1ee").unwrap();
        assert_eq!(v.get_bytes(b"\xc3\x28"), Some(&Value::Int(1)));
    }

    #[test]
    fn accessors_reject_other_types() {
        let v = decode(b"li1e3:abclee").unwrap();
        let items = v.as_list().unwrap();
        assert_eq!(items[0].as_str(), None);
        assert_eq!(items[1].as_int(), None);
        assert_eq!(items[2].as_bytes(), None);
        assert_eq!(items[2].as_list(), Some(&[][..]));
        assert_eq!(v.as_dict(), None);
        assert_eq!(v.get("x"), None);
        assert_eq!(items[0].type_name(), "integer");
        assert_eq!(items[1].type_name(), "string");
        assert_eq!(v.type_name(), "list");
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "l".repeat(MAX_DEPTH), "e".repeat(MAX_DEPTH));
        assert!(decode(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "l".repeat(MAX_DEPTH + 1), "e".repeat(MAX_DEPTH + 1));
        assert_eq!(decode(deep.as_bytes()), Err(DecodeError::TooDeep));
        let mut dicts = Vec::new();
        for _ in 0..=MAX_DEPTH {
            dicts.extend_from_slice(b"d1:k");
        }
        dicts.extend_from_slice(b"i1e");
        dicts.extend(std::iter::repeat_n(b'e', MAX_DEPTH + 1));
        assert_eq!(decode(&dicts), Err(DecodeError::TooDeep));
    }

    #[test]
    fn sixty_kb_of_l_is_too_deep_not_a_crash() {
        let input = vec![b'l'; 60 * 1024];
        assert_eq!(decode(&input), Err(DecodeError::TooDeep));
        let input = vec![b'd'; 60 * 1024];
        // "dd": the inner 'd' is not a string key.
        assert_eq!(decode(&input), Err(DecodeError::UnexpectedByte(b'd')));
        let mut input = Vec::new();
        for _ in 0..10_000 {
            input.extend_from_slice(b"d1:a");
        }
        assert_eq!(decode(&input), Err(DecodeError::TooDeep));
    }

    #[test]
    fn long_digit_runs_fail_fast() {
        let mut input = vec![b'9'; 60 * 1024];
        input.push(b':');
        assert_eq!(decode(&input), Err(DecodeError::LengthOverflow));
        let mut input = vec![b'i'];
        input.extend(std::iter::repeat_n(b'1', 60 * 1024));
        input.push(b'e');
        assert_eq!(decode(&input), Err(DecodeError::InvalidInt));
    }

    fn sample_tree() -> Owned {
        Owned::dict()
            .with("sdp", Owned::bytes(b"v=0\r\n\xff"))
            .with("result", "ok")
            .with("n", -12i64)
            .with("zero", 0i64)
            .with("max", Owned::Int(i64::MAX))
            .with("min", Owned::Int(i64::MIN))
            .with(
                "list",
                Owned::List(vec![
                    Owned::str("a"),
                    Owned::Int(1),
                    Owned::list(),
                    Owned::dict().with("inner", Owned::str("")),
                ]),
            )
            .with("empty", Owned::dict())
    }

    #[test]
    fn encode_keeps_insertion_order() {
        let r = Owned::dict().with("sdp", "v=0").with("result", "ok");
        assert_eq!(r.to_bencode(), b"d3:sdp3:v=06:result2:oke");
        let r = Owned::dict()
            .with("result", "error")
            .with("error-reason", "Unknown call-id");
        assert_eq!(
            r.to_bencode(),
            b"d6:result5:error12:error-reason15:Unknown call-ide"
        );
        assert_eq!(Owned::Int(-5).to_bencode(), b"i-5e");
        assert_eq!(Owned::Int(i64::MIN).to_bencode(), b"i-9223372036854775808e");
    }

    #[test]
    fn round_trip() {
        let tree = sample_tree();
        let bytes = tree.to_bencode();
        let decoded = decode(&bytes).unwrap();
        assert_eq!(Owned::from(&decoded), tree);
        // And the Value view of the owned tree equals the decoded one.
        assert_eq!(tree.as_value(), decoded);
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut d = Owned::dict().with("a", 1i64).with("b", 2i64);
        d.insert("a", 3i64);
        assert_eq!(d.to_bencode(), b"d1:ai3e1:bi2ee");
        assert_eq!(d.get("a").and_then(Owned::as_int), Some(3));
        let mut l = Owned::list();
        l.push("x");
        l.push(7u32);
        assert_eq!(l.to_bencode(), b"l1:xi7ee");
        assert_eq!(l.as_list().map(<[Owned]>::len), Some(2));
        assert_eq!(Owned::from(u64::MAX), Owned::Int(i64::MAX));
        assert_eq!(Owned::from(true), Owned::Int(1));
        assert_eq!(format!("{}", Owned::bytes(b"\x01")), "1:\\x01");
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let full = sample_tree().to_bencode();
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&full).is_ok());
    }
}
