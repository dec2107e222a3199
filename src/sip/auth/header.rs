//! The Digest header grammar (RFC 3261 §25.1 `credentials`/`challenge`, RFC 7616 §3.3–3.4,
//! RFC 8760 for the SHA-256 algorithm names): [`Credentials::parse`] reads an
//! `Authorization`/`Proxy-Authorization` value, [`Challenge::emit`] writes a
//! `WWW-Authenticate`/`Proxy-Authenticate` value, and [`Credentials::emit`] writes what a
//! client would send (the parser's round-trip partner, used by tests and tools).
//!
//! Input is hostile: every parameter is checked, duplicates are an error, quoted strings are
//! unescaped (`\"`), and nothing here panics.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::borrow::Cow;

use super::digest::Algorithm;

/// Why a credentials value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not the `Digest` scheme.
    Scheme,
    /// Bad syntax: a parameter without `=`, an unterminated quoted string, stray bytes.
    Syntax,
    /// The same parameter twice.
    Duplicate,
    /// `username`, `realm`, `nonce`, `uri` or `response` is missing.
    Missing,
    /// An `algorithm` we do not know.
    Algorithm,
    /// `qop` other than `auth`, or `qop` without `nc`/`cnonce`, or a bad `nc`.
    Qop,
}

/// The `qop` a client chose; only `auth` is offered (no `auth-int`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop {
    Auth,
}

/// Parsed Digest credentials; strings borrow from the header unless they held escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: Cow<'a, str>,
    pub realm: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    /// The `uri` parameter (`digest-uri`) as sent.
    pub uri: Cow<'a, str>,
    /// The response, lower-case hex as sent (compared case-insensitively).
    pub response: Cow<'a, str>,
    pub algorithm: Algorithm,
    pub opaque: Option<Cow<'a, str>>,
    /// `qop=auth` with its nonce count and client nonce; `None` for RFC 2069 clients.
    pub qop: Option<(Qop, u32, Cow<'a, str>)>,
}

/// Splits `a="b", c=d` into name/value pairs; quoted values are unescaped.
fn params(mut s: &str) -> Result<Vec<(&str, Cow<'_, str>)>, HeaderError> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t', '\r', '\n']);
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s.find('=').ok_or(HeaderError::Syntax)?;
        let name = s.get(..eq).ok_or(HeaderError::Syntax)?.trim();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(HeaderError::Syntax);
        }
        let rest = s
            .get(eq + 1..)
            .ok_or(HeaderError::Syntax)?
            .trim_start_matches([' ', '\t']);
        let (value, after) = if let Some(q) = rest.strip_prefix('"') {
            let (v, after) = quoted(q)?;
            (v, after)
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            let v = rest.get(..end).ok_or(HeaderError::Syntax)?;
            if v.is_empty() || !v.bytes().all(is_token_char) {
                return Err(HeaderError::Syntax);
            }
            (
                Cow::Borrowed(v),
                rest.get(end..).ok_or(HeaderError::Syntax)?,
            )
        };
        out.push((name, value));
        let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
        s = match after.strip_prefix(',') {
            Some(r) => r,
            None if after.is_empty() => after,
            None => return Err(HeaderError::Syntax),
        };
    }
}

/// A quoted string's content (after the opening quote) and what follows its closing quote.
fn quoted(s: &str) -> Result<(Cow<'_, str>, &str), HeaderError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => {
                // quoted-pair (§25.1) never escapes CR, LF (or NUL): no line breaks in a
                // value, escaped or not.
                if matches!(bytes.get(i + 1), None | Some(b'\r' | b'\n' | 0)) {
                    return Err(HeaderError::Syntax);
                }
                escaped = true;
                i += 2;
                continue;
            }
            b'"' => break,
            b'\r' | b'\n' | 0 => return Err(HeaderError::Syntax),
            _ => {}
        }
        i += 1;
    }
    if bytes.get(i) != Some(&b'"') {
        return Err(HeaderError::Syntax);
    }
    let inner = s.get(..i).ok_or(HeaderError::Syntax)?;
    let after = s.get(i + 1..).ok_or(HeaderError::Syntax)?;
    if !escaped {
        return Ok((Cow::Borrowed(inner), after));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or(HeaderError::Syntax)?);
        } else {
            out.push(c);
        }
    }
    Ok((Cow::Owned(out), after))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Writes `s` as a quoted string (RFC 3261 §25.1 `quoted-pair` for `"` and `\`).
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

impl<'a> Credentials<'a> {
    /// Parses an `Authorization`/`Proxy-Authorization` value.
    pub fn parse(value: &'a str) -> Result<Self, HeaderError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).ok_or(HeaderError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(HeaderError::Scheme);
        }
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut opaque = None;
        let mut qop = None;
        let mut nc = None;
        let mut cnonce = None;
        for (name, v) in params(rest)? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "username" => &mut username,
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "uri" => &mut uri,
                "response" => &mut response,
                "algorithm" => &mut algorithm,
                "opaque" => &mut opaque,
                "qop" => &mut qop,
                "nc" => &mut nc,
                "cnonce" => &mut cnonce,
                // `username*` (RFC 7616 §3.4.4) and `userhash` are not offered; other
                // extension parameters are ignored (§25.1 `auth-param`).
                "username*" | "userhash" => return Err(HeaderError::Syntax),
                _ => continue,
            };
            if slot.is_some() {
                return Err(HeaderError::Duplicate);
            }
            *slot = Some(v);
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(HeaderError::Algorithm)?,
        };
        let qop = match (qop, nc, cnonce) {
            (None, None, None) => None,
            (Some(q), Some(nc), Some(cn)) if q.eq_ignore_ascii_case("auth") => {
                if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(HeaderError::Qop);
                }
                let n = u32::from_str_radix(&nc, 16).map_err(|_| HeaderError::Qop)?;
                Some((Qop::Auth, n, cn))
            }
            _ => return Err(HeaderError::Qop),
        };
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) =
            (username, realm, nonce, uri, response)
        else {
            return Err(HeaderError::Missing);
        };
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            opaque,
            qop,
        })
    }

    /// The value a client sends (for tests and tools).
    pub fn emit(&self) -> String {
        let mut s = String::from("Digest username=");
        push_quoted(&mut s, &self.username);
        s.push_str(", realm=");
        push_quoted(&mut s, &self.realm);
        s.push_str(", nonce=");
        push_quoted(&mut s, &self.nonce);
        s.push_str(", uri=");
        push_quoted(&mut s, &self.uri);
        s.push_str(", response=");
        push_quoted(&mut s, &self.response);
        s.push_str(", algorithm=");
        s.push_str(self.algorithm.name());
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            push_quoted(&mut s, o);
        }
        if let Some((Qop::Auth, nc, cnonce)) = &self.qop {
            s.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce="));
            push_quoted(&mut s, cnonce);
        }
        s
    }
}

/// A challenge we send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub algorithm: Algorithm,
    /// The credentials carried a nonce that was ours but too old (RFC 7616 §3.3).
    pub stale: bool,
}

impl Challenge<'_> {
    /// The `WWW-Authenticate`/`Proxy-Authenticate` value.
    pub fn emit(&self) -> String {
        let mut s = String::from("Digest realm=");
        push_quoted(&mut s, self.realm);
        s.push_str(", nonce=");
        push_quoted(&mut s, self.nonce);
        s.push_str(", qop=\"auth\", algorithm=");
        s.push_str(self.algorithm.name());
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// Reads back what [`Challenge::emit`] wrote (tests and clients): realm, nonce,
    /// algorithm, stale.
    pub fn parse(value: &str) -> Result<(String, String, Algorithm, bool), HeaderError> {
        let (scheme, rest) = value
            .trim()
            .split_once([' ', '\t'])
            .ok_or(HeaderError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(HeaderError::Scheme);
        }
        let (mut realm, mut nonce, mut alg, mut stale) = (None, None, Algorithm::Md5, false);
        for (n, v) in params(rest)? {
            match n.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v.into_owned()),
                "nonce" => nonce = Some(v.into_owned()),
                "algorithm" => alg = Algorithm::from_name(&v).ok_or(HeaderError::Algorithm)?,
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        match (realm, nonce) {
            (Some(r), Some(n)) => Ok((r, n, alg, stale)),
            _ => Err(HeaderError::Missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3261_example_and_round_trips() {
        // The shape of RFC 3261 §22.4's example, with qop=auth.
        let v = "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.realm, "biloxi.com");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.qop, Some((Qop::Auth, 1, Cow::Borrowed("0a4f113b"))));
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let again = c.emit();
        assert_eq!(Credentials::parse(&again).unwrap(), c);
    }

    #[test]
    fn an_escaped_line_break_is_refused() {
        // Found by the digest_header fuzz checks: `\<CR>` was unescaped into the value,
        // which then could not be re-emitted.
        for v in [
            "Digest username=\"a\\\rb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"",
            "Digest username=\"a\\\nb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"",
            "Digest username=\"a\\",
        ] {
            assert_eq!(Credentials::parse(v), Err(HeaderError::Syntax), "{v:?}");
        }
    }

    #[test]
    fn escapes_survive_a_round_trip() {
        let c = Credentials {
            username: Cow::Borrowed("a\"b\\c"),
            realm: Cow::Borrowed("r"),
            nonce: Cow::Borrowed("n"),
            uri: Cow::Borrowed("sip:r"),
            response: Cow::Borrowed("00"),
            algorithm: Algorithm::Sha256,
            opaque: None,
            qop: Some((Qop::Auth, 0xffff_fffe, Cow::Borrowed("c"))),
        };
        let text = c.emit();
        let parsed = Credentials::parse(&text).unwrap();
        assert_eq!(parsed.username, "a\"b\\c");
        assert_eq!(parsed.algorithm, Algorithm::Sha256);
        assert_eq!(parsed.qop.unwrap().1, 0xffff_fffe);
    }

    #[test]
    fn hostile_values_are_errors() {
        let ok = "username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"ab\"";
        assert!(Credentials::parse(&format!("Digest {ok}")).is_ok());
        assert_eq!(
            Credentials::parse(&format!("Basic {ok}")),
            Err(HeaderError::Scheme)
        );
        for bad in [
            "Digest",
            "Digest username=\"u",
            "Digest username",
            "Digest username=\"u\" realm=\"r\"",
            "Digest =x",
            "Digest a=\"\r\n\"",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Credentials::parse(&format!("Digest {ok}, realm=\"s\"")),
            Err(HeaderError::Duplicate)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"u\", realm=\"r\""),
            Err(HeaderError::Missing)
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {ok}, algorithm=SHA-512")),
            Err(HeaderError::Algorithm)
        );
        for q in [
            "qop=auth-int, nc=00000001, cnonce=\"c\"",
            "qop=auth",
            "qop=auth, nc=1, cnonce=\"c\"",
            "qop=auth, nc=0000000g, cnonce=\"c\"",
        ] {
            assert_eq!(
                Credentials::parse(&format!("Digest {ok}, {q}")),
                Err(HeaderError::Qop),
                "{q}"
            );
        }
        // Unknown extension parameters are ignored.
        assert!(Credentials::parse(&format!("Digest {ok}, foo=bar")).is_ok());
        // Arbitrary bytes never panic.
        for s in [
            "Digest \"",
            "Digest a=\"\\",
            "Digest a=\"\u{e9}\\\u{e9}\"",
            "Digest ,,,",
        ] {
            let _ = Credentials::parse(s);
        }
    }

    #[test]
    fn random_bytes_from_the_grammar_never_panic_and_round_trip() {
        // A bounded, deterministic fuzz: strings over the grammar's own characters, and
        // every accepted value must survive emit → parse unchanged.
        let alphabet: &[u8] = b"Digest usernamrlcoqpf=\",\\ \t0123456789abcdef-*\r\n\xc3\xa9";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 90) as usize;
            let mut bytes = b"Digest ".to_vec();
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(c) = Credentials::parse(text) {
                assert_eq!(Credentials::parse(&c.emit()).unwrap(), c, "{text:?}");
            }
        }
        let ok = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"s\", response=\"a\"";
        for cut in 0..ok.len() {
            let _ = Credentials::parse(&ok[..cut]);
            let _ = Challenge::parse(&ok[..cut]);
        }
    }

    #[test]
    fn challenge_emits_and_reads_back() {
        let ch = Challenge {
            realm: "example.org",
            nonce: "abc",
            algorithm: Algorithm::Sha256,
            stale: true,
        };
        let v = ch.emit();
        assert_eq!(
            v,
            "Digest realm=\"example.org\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256, stale=true"
        );
        assert_eq!(
            Challenge::parse(&v).unwrap(),
            ("example.org".into(), "abc".into(), Algorithm::Sha256, true)
        );
    }
}
