//! Character classes (RFC 3261 §25.1) and a cursor over header values that treats folded
//! line breaks as whitespace.
//!
//! The framer guarantees that inside a header value every CR LF is followed by SP/HT (a fold),
//! so the cursor can treat CR and LF as plain linear whitespace (RFC 3261 §7.3.1: a fold is
//! equivalent to SP).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::borrow::Cow;

const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = token_table();

/// `token` characters.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `unreserved` = alphanum / mark.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// `word` characters (Call-ID).
pub(crate) fn is_word(b: u8) -> bool {
    is_token(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// Linear whitespace inside a header value (CR/LF only ever appear as part of a fold).
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// True if every byte is `allowed` or part of a well-formed `%XX` escape.
pub(crate) fn valid_escaped(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let ok = s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes. A `%` not followed by two hex digits is kept as is (callers that
/// need strictness validate first). Borrows when there is nothing to decode.
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Compares an escaped string with a plain ASCII name, case-insensitively, decoding escapes
/// on the fly (so `%6C%72` equals `lr`).
pub(crate) fn escaped_eq_ignore_case(escaped: &str, name: &str) -> bool {
    let e = escaped.as_bytes();
    let n = name.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < e.len() {
        let c = if e[i] == b'%' {
            match (
                e.get(i + 1).copied().and_then(hex),
                e.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    i += 3;
                    h << 4 | l
                }
                _ => {
                    i += 1;
                    b'%'
                }
            }
        } else {
            i += 1;
            e[i - 1]
        };
        match n.get(j) {
            Some(&m) if m.eq_ignore_ascii_case(&c) => j += 1,
            _ => return false,
        }
    }
    j == n.len()
}

/// Replaces each fold (`*WSP CRLF 1*WSP`) with a single SP (RFC 3261 §7.3.1). Borrows when
/// the value holds no line break.
pub fn unfold(s: &str) -> Cow<'_, str> {
    if !s.contains('\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\r\n") {
        out.push_str(rest[..i].trim_end_matches([' ', '\t']));
        out.push(' ');
        rest = rest[i + 2..].trim_start_matches([' ', '\t']);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Removes the quotes of a `quoted-string` and resolves `quoted-pair`s and folds.
/// Input that is not quoted is returned unfolded.
pub fn unquote(raw: &str) -> Cow<'_, str> {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return unfold(raw);
    };
    if !inner.contains('\\') && !inner.contains('\n') {
        return Cow::Borrowed(inner);
    }
    let unfolded = unfold(inner);
    let mut out = String::with_capacity(unfolded.len());
    let mut chars = unfolded.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Parses `1*DIGIT` into a `u64`, failing on overflow or on anything else.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    // 19 digits always fit in a u64.
    if t.len() > 19 {
        return None;
    }
    if t.is_empty() {
        Some(0)
    } else {
        t.parse().ok()
    }
}

/// A cursor over one header value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.s.len());
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn slice(&self, a: usize, b: usize) -> &'a str {
        self.s.get(a..b).unwrap_or("")
    }

    #[cfg(test)]
    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// Skips linear whitespace; returns whether any was skipped.
    pub(crate) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos != start
    }

    /// Consumes `c` if it is next (no whitespace skipping).
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `SWS c SWS` (the RFC's SEMI, COMMA, EQUAL, SLASH, COLON); restores the
    /// position if `c` is not there.
    pub(crate) fn eat_sep(&mut self, c: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.eat(c) {
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// One or more token characters.
    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token);
        (!t.is_empty()).then_some(t)
    }

    /// A `quoted-string` starting at the cursor; returns it with its quotes.
    pub(crate) fn quoted_string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Some(self.slice(start, self.pos));
                }
                b'\\' => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    match b.get(i + 1) {
                        Some(&n) if n <= 0x7f && n != b'\n' && n != b'\r' => i += 2,
                        _ => break,
                    }
                }
                // qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
                c if is_lws(c) || c >= 0x21 => i += 1,
                _ => break,
            }
        }
        self.pos = start;
        None
    }

    /// `gen-value` = token / host / quoted-string.
    pub(crate) fn gen_value(&mut self) -> Option<&'a str> {
        match self.peek() {
            Some(b'"') => self.quoted_string(),
            Some(b'[') => {
                let start = self.pos;
                self.pos += 1;
                self.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if self.eat(b']') {
                    Some(self.slice(start, self.pos))
                } else {
                    self.pos = start;
                    None
                }
            }
            _ => {
                let start = self.pos;
                let t = self.token()?;
                // An unbracketed IPv6address (Via `received`, RFC 3261 §18.2.1) is not a
                // token; accept it when the whole run parses as one.
                if self.peek() == Some(b':') {
                    self.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                    let cand = self.slice(start, self.pos);
                    if cand.parse::<std::net::Ipv6Addr>().is_ok() {
                        return Some(cand);
                    }
                    self.pos = start + t.len();
                }
                Some(t)
            }
        }
    }

    /// `*( SEMI generic-param )`, calling `f(name, value)` for each; returns the raw span
    /// (from the first `;`, empty if there are none). Fails on a malformed parameter.
    pub(crate) fn params(
        &mut self,
        mut f: impl FnMut(&'a str, Option<&'a str>) -> Result<(), ()>,
    ) -> Result<&'a str, ()> {
        let mut start = None;
        let mut end = self.pos;
        loop {
            let save = self.pos;
            self.skip_lws();
            if self.peek() != Some(b';') {
                self.pos = save;
                break;
            }
            start.get_or_insert(self.pos);
            self.pos += 1;
            self.skip_lws();
            let name = self.token().ok_or(())?;
            let value = if self.eat_sep(b'=') {
                Some(self.gen_value().ok_or(())?)
            } else {
                None
            };
            f(name, value)?;
            end = self.pos;
        }
        Ok(start.map_or("", |s| self.slice(s, end)))
    }
}

/// Generic parameters (`;name[=value]`) of a header value, kept as their raw, already
/// validated span and re-lexed on access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a>(pub(crate) &'a str);

impl<'a> Params<'a> {
    /// The raw span, starting with `;` (empty if there are no parameters).
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Iterates `(name, value)`; values keep their quotes.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let mut cur = Cursor::new(self.0);
        std::iter::from_fn(move || {
            cur.skip_lws();
            if !cur.eat(b';') {
                return None;
            }
            cur.skip_lws();
            let name = cur.token()?;
            let value = if cur.eat_sep(b'=') {
                cur.gen_value()
            } else {
                None
            };
            Some((name, value))
        })
    }

    /// `Some(value)` if the parameter is present (`Some(None)` for a flag); names compare
    /// case-insensitively.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfold_replaces_folds_with_one_space() {
        assert_eq!(unfold("a  \r\n   b"), "a b");
        assert_eq!(unfold("a\r\n\tb\r\n c"), "a b c");
        assert!(matches!(unfold("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn unquote_resolves_pairs() {
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        assert_eq!(unquote(r#""Quoted string \"\"""#), r#"Quoted string """#);
        assert_eq!(unquote("\"a\r\n b\""), "a b");
        assert_eq!(unquote("token"), "token");
    }

    #[test]
    fn unescape_and_compare() {
        assert_eq!(&*unescape("%75se%72"), b"user");
        assert_eq!(&*unescape("null-%00-null"), b"null-\0-null");
        assert_eq!(&*unescape("100%"), b"100%");
        assert!(escaped_eq_ignore_case("%6C%72", "lr"));
        assert!(escaped_eq_ignore_case("n%61me", "NAME"));
        assert!(!escaped_eq_ignore_case("n%61me", "nam"));
        assert!(!escaped_eq_ignore_case("na", "name"));
        assert!(valid_escaped(b"a%20b", is_unreserved));
        assert!(!valid_escaped(b"a%2", is_unreserved));
        assert!(!valid_escaped(b"a b", is_unreserved));
    }

    #[test]
    fn quoted_string_rules() {
        let mut c = Cursor::new(r#""a \" b" rest"#);
        assert_eq!(c.quoted_string(), Some(r#""a \" b""#));
        assert_eq!(c.rest(), " rest");
        let mut c = Cursor::new("\"unterminated");
        assert_eq!(c.quoted_string(), None);
        assert_eq!(c.pos(), 0);
        let mut c = Cursor::new("\"BEL:\\\x07 NUL:\\\0\"");
        assert!(c.quoted_string().is_some());
        let mut c = Cursor::new("\"raw\x07ctl\"");
        assert_eq!(c.quoted_string(), None);
    }

    #[test]
    fn params_lexing() {
        let mut c = Cursor::new(" ; tag = x ;lr; q=\"a;b\" ,next");
        let mut seen = Vec::new();
        let raw = c
            .params(|n, v| {
                seen.push((n, v));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![("tag", Some("x")), ("lr", None), ("q", Some("\"a;b\""))]
        );
        assert_eq!(raw, "; tag = x ;lr; q=\"a;b\"");
        assert_eq!(c.rest(), " ,next");
        let p = Params(raw);
        assert_eq!(p.get("TAG"), Some(Some("x")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("nope"), None);
        assert!(Cursor::new(";;").params(|_, _| Ok(())).is_err());
        assert!(Cursor::new("; a=").params(|_, _| Ok(())).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0068"), Some(68));
        assert_eq!(parse_u64("000000000000000000000000001"), Some(1));
        assert_eq!(parse_u64("36893488147419103232"), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64(""), None);
    }
}
