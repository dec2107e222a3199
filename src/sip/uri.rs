//! Zero-copy views of URIs: SIP/SIPS (RFC 3261 §19.1, grammar §25.1), `tel:` (RFC 3966) and
//! any other `absoluteURI` (kept opaque, syntax-checked only).
//!
//! Parsing is strict about what the grammar forbids: unescaped spaces or angle brackets,
//! malformed `%` escapes, bad IPv6 references, ports above 65535, empty parameter names.
//! Escapes are kept in the views; `*_decoded` helpers and parameter lookups decode them.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lex::{escaped_eq_ignore_case, is_unreserved, unescape, valid_escaped};

/// Why a URI was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriError {
    Scheme,
    User,
    Password,
    Host,
    Port,
    Param,
    Headers,
    /// Headers (`?...`) where the context forbids them (Request-URI, unbracketed addr-spec).
    HeadersNotAllowed,
    Number,
    Syntax,
}

/// A host: name or address literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a str),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, if the host is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(a)),
            Host::V6(a) => Some(IpAddr::V6(a)),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

fn is_alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// `host` = hostname / IPv4address / IPv6reference. Leading zeros in IPv4 octets are
/// rejected (the `dec-octet` rule), as is an IPv6 literal without brackets.
pub fn parse_host(s: &str) -> Result<Host<'_>, UriError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
        return inner
            .parse::<Ipv6Addr>()
            .map(Host::V6)
            .map_err(|_| UriError::Host);
    }
    if s.is_empty() || s.len() > 255 {
        return Err(UriError::Host);
    }
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let labels = trimmed.split('.');
    let mut last = "";
    for label in labels {
        let b = label.as_bytes();
        if b.is_empty()
            || !b.iter().all(|&c| is_alnum_dash(c))
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
        {
            return Err(UriError::Host);
        }
        last = label;
    }
    // toplabel starts with ALPHA; anything else must be a dotted-quad.
    if last.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
        return Ok(Host::Name(s));
    }
    if s.ends_with('.') {
        return Err(UriError::Host);
    }
    s.parse::<Ipv4Addr>()
        .map(Host::V4)
        .map_err(|_| UriError::Host)
}

/// `port` = 1*DIGIT within 1..=65535. Port 0 is syntactically a port but nothing can be
/// sent to it: a Via or URI naming it is malformed here, so a reply goes to the request's
/// source instead of to port 0.
pub fn parse_port(s: &str) -> Result<u16, UriError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::Port);
    }
    match s.parse() {
        Ok(0) | Err(_) => Err(UriError::Port),
        Ok(p) => Ok(p),
    }
}

/// Splits `host[:port]`, minding IPv6 brackets.
pub(crate) fn split_hostport(s: &str) -> Result<(Host<'_>, &str, Option<u16>), UriError> {
    let (h, p) = if s.starts_with('[') {
        let close = s.find(']').ok_or(UriError::Host)?;
        let (h, rest) = s.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return Err(UriError::Host),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = parse_host(h)?;
    let port = p.map(parse_port).transpose()?;
    Ok((host, h, port))
}

/// The URI scheme of a SIP URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

/// A parsed `sip:`/`sips:` URI; every field borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub raw: &'a str,
    pub scheme: Scheme,
    /// The user part, still escaped (`%41`); may be a telephone-subscriber.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    /// The host as written (with brackets for IPv6).
    pub host_raw: &'a str,
    pub port: Option<u16>,
    /// `uri-parameters` as written, starting with `;` (empty if none).
    pub params: &'a str,
    /// The `headers` component without its `?`.
    pub headers: Option<&'a str>,
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

impl<'a> SipUri<'a> {
    /// Parses a `sip:`/`sips:` URI (scheme case-insensitive).
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        let (scheme_s, rest) = s.split_once(':').ok_or(UriError::Scheme)?;
        let scheme = if scheme_s.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_s.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            return Err(UriError::Scheme);
        };
        // Neither user, password, params nor headers may hold an unescaped '@', so the
        // first '@' (if any) ends the userinfo.
        let (user, password, rest) = match rest.find('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let (u, p) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                if u.is_empty() || !valid_escaped(u.as_bytes(), is_user_char) {
                    return Err(UriError::User);
                }
                if let Some(p) = p {
                    if !valid_escaped(p.as_bytes(), is_password_char) {
                        return Err(UriError::Password);
                    }
                }
                (Some(u), p, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        let (before_headers, headers) = match rest.split_once('?') {
            Some((a, h)) => (a, Some(h)),
            None => (rest, None),
        };
        let (hostport, params) = match before_headers.find(';') {
            Some(i) => before_headers.split_at(i),
            None => (before_headers, ""),
        };
        let (host, host_raw, port) = split_hostport(hostport)?;
        if !params.is_empty() {
            for p in params[1..].split(';') {
                let (name, value) = match p.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (p, None),
                };
                let ok = !name.is_empty()
                    && valid_escaped(name.as_bytes(), is_param_char)
                    && value.is_none_or(|v| {
                        !v.is_empty() && valid_escaped(v.as_bytes(), is_param_char)
                    });
                if !ok {
                    return Err(UriError::Param);
                }
            }
        }
        if let Some(h) = headers {
            for hdr in h.split('&') {
                let (name, value) = hdr.split_once('=').ok_or(UriError::Headers)?;
                if name.is_empty()
                    || !valid_escaped(name.as_bytes(), is_hnv_char)
                    || !valid_escaped(value.as_bytes(), is_hnv_char)
                {
                    return Err(UriError::Headers);
                }
            }
        }
        Ok(SipUri {
            raw: s,
            scheme,
            user,
            password,
            host,
            host_raw,
            port,
            params,
            headers,
        })
    }

    /// The user part with escapes decoded (may contain any byte, even NUL).
    pub fn user_decoded(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(unescape)
    }

    /// Iterates `(name, value)` of the URI parameters, still escaped.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let p = self.params;
        p.get(1..)
            .unwrap_or("")
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (s, None),
            })
    }

    /// Looks a parameter up by name (escapes decoded, case-insensitive). `Some(None)` is a
    /// flag parameter such as `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params()
            .find(|(n, _)| escaped_eq_ignore_case(n, name))
            .map(|(_, v)| v)
    }

    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }

    pub fn maddr(&self) -> Option<&'a str> {
        self.param("maddr").flatten()
    }

    /// The loose-routing flag (RFC 3261 §19.1.1).
    pub fn lr(&self) -> bool {
        self.param("lr").is_some()
    }

    /// Iterates the `?name=value` headers, still escaped.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.headers
            .unwrap_or("")
            .split('&')
            .filter_map(|h| h.split_once('='))
    }

    /// The port, or the default for the scheme (5060, 5061 for sips).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            Scheme::Sip => 5060,
            Scheme::Sips => 5061,
        })
    }
}

/// A `tel:` URI (RFC 3966): the number as written plus its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelUri<'a> {
    pub raw: &'a str,
    /// `+` global number or local number, visual separators included.
    pub number: &'a str,
    pub params: &'a str,
}

impl<'a> TelUri<'a> {
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        let (scheme, rest) = s.split_once(':').ok_or(UriError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("tel") {
            return Err(UriError::Scheme);
        }
        let (number, params) = match rest.find(';') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let visual = |b: u8| matches!(b, b'-' | b'.' | b'(' | b')');
        let ok = if let Some(global) = number.strip_prefix('+') {
            global.bytes().all(|b| b.is_ascii_digit() || visual(b))
                && global.bytes().any(|b| b.is_ascii_digit())
        } else {
            number
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#' || visual(b))
                && number
                    .bytes()
                    .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
        };
        if !ok {
            return Err(UriError::Number);
        }
        if !params.is_empty() {
            for p in params[1..].split(';') {
                let (n, v) = match p.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (p, None),
                };
                if n.is_empty()
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    || v.is_some_and(|v| {
                        v.is_empty() || !valid_escaped(v.as_bytes(), is_param_char)
                    })
                {
                    return Err(UriError::Param);
                }
            }
        }
        Ok(TelUri {
            raw: s,
            number,
            params,
        })
    }

    /// Local numbers (without `+`) need a `phone-context` to be meaningful.
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
}

fn is_uric(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',' | b'[' | b']'
        )
}

/// Checks `absoluteURI` syntax (RFC 3261 §25.1 / RFC 2396) and returns its scheme.
pub fn absolute_uri_scheme(s: &str) -> Result<&str, UriError> {
    let (scheme, rest) = s.split_once(':').ok_or(UriError::Scheme)?;
    let b = scheme.as_bytes();
    if b.is_empty()
        || !b[0].is_ascii_alphabetic()
        || !b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return Err(UriError::Scheme);
    }
    if rest.is_empty() || !valid_escaped(rest.as_bytes(), is_uric) {
        return Err(UriError::Syntax);
    }
    Ok(scheme)
}

/// Any URI found in SIP: the schemes a proxy routes on are parsed, others kept opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    Sip(SipUri<'a>),
    Tel(TelUri<'a>),
    Other { scheme: &'a str, raw: &'a str },
}

impl<'a> Uri<'a> {
    /// Parses any `absoluteURI`; `sip`, `sips` and `tel` are validated in full.
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        let scheme = absolute_uri_scheme(s)?;
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse(s).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse(s).map(Uri::Tel)
        } else {
            Ok(Uri::Other { scheme, raw: s })
        }
    }

    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Tel(u) => u.raw,
            Uri::Other { raw, .. } => raw,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// True for the URI headers component (`?...`) in any scheme.
    pub fn has_headers(&self) -> bool {
        match self {
            Uri::Sip(u) => u.headers.is_some(),
            Uri::Tel(_) => false,
            Uri::Other { raw, .. } => raw.contains('?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_sip_uri() {
        let u = SipUri::parse("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi&x=")
            .unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, Host::Name("example.com"));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(
            u.headers().collect::<Vec<_>>(),
            vec![("subject", "hi"), ("x", "")]
        );
    }

    #[test]
    fn bare_host_and_phone_user() {
        let u = SipUri::parse("SIPS:example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, None);
        assert_eq!(u.port_or_default(), 5061);
        let u = SipUri::parse("sip:+19725552222@gw1.example.net;user=phone").unwrap();
        assert_eq!(u.user, Some("+19725552222"));
        assert_eq!(u.param("USER"), Some(Some("phone")));
    }

    #[test]
    fn address_literals() {
        let u = SipUri::parse("sip:[2001:db8::1]:5060").unwrap();
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5060));
        let u = SipUri::parse("sip:bob@192.0.2.4").unwrap();
        assert_eq!(u.host, Host::V4(Ipv4Addr::new(192, 0, 2, 4)));
        for bad in [
            "sip:[2001:db8::1",
            "sip:2001:db8::1",
            "sip:[zz::1]",
            "sip:1.2.3",
            "sip:256.1.1.1",
            "sip:host:65536",
            "sip:host:",
            "sip:-host.com",
            "sip:ho_st.com",
            "sip:a b@host",
            "sip:a@",
            "sip:@host",
            "sip:host;=x",
            "sip:host;a=",
            "sip:u%4@host",
            "sip:host?noequals",
            "http:host",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_are_decoded_on_demand() {
        let u = SipUri::parse("sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(&*u.user_decoded().unwrap(), b"sips:user@example.com");
        assert_eq!(u.host, Host::Name("example.net"));
        let u =
            SipUri::parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31").unwrap();
        assert!(u.lr());
        assert_eq!(u.param("name"), Some(Some("v%61lue%25%34%31")));
        assert_eq!(&*unescape(u.param("name").flatten().unwrap()), b"value%41");
    }

    #[test]
    fn user_may_hold_semicolons() {
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Name("example.com"));
        assert_eq!(u.params, "");
    }

    #[test]
    fn tel_uris() {
        let t = TelUri::parse("tel:+1-201-555-0123;ext=42").unwrap();
        assert_eq!(t.number, "+1-201-555-0123");
        assert!(t.is_global());
        assert!(TelUri::parse("tel:7042;phone-context=example.com").is_ok());
        assert!(TelUri::parse("tel:+").is_err());
        assert!(TelUri::parse("tel:+1 555").is_err());
        assert!(matches!(Uri::parse("tel:+15551234"), Ok(Uri::Tel(_))));
    }

    #[test]
    fn other_schemes_are_opaque_but_checked() {
        assert_eq!(
            Uri::parse("soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other {
                scheme: "soap.beep",
                raw: "soap.beep://192.0.2.103:3002"
            })
        );
        assert!(Uri::parse("name:John_Smith").is_ok());
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("x:has space").is_err());
        assert!(Uri::parse("1x:y").is_err());
        assert!(Uri::parse("x:").is_err());
    }
}
