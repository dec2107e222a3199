//! Strict, zero-copy parsers for the header values a proxy and registrar interpret
//! (RFC 3261 §20, grammar §25.1). Each works on one header value as framed by `parse`, with
//! folds treated as whitespace, and fails rather than guesses.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::borrow::Cow;
use std::net::IpAddr;

use super::lex::{is_token, is_word, parse_u64, unquote, Cursor, Params};
use super::uri::{absolute_uri_scheme, parse_host, parse_port, Host, SipUri, Uri, UriError};

/// The header value did not follow its grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl From<()> for Malformed {
    fn from(_: ()) -> Self {
        Malformed
    }
}

impl From<UriError> for Malformed {
    fn from(_: UriError) -> Self {
        Malformed
    }
}

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// `rport` (RFC 3581): absent, requested (flag) or filled in by a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rport {
    #[default]
    Absent,
    Requested,
    Port(u16),
}

/// One `via-parm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// This via-parm as written.
    pub raw: &'a str,
    /// Offsets of `raw` within the header value; `next` is where the following via-parm
    /// starts (or the value's end), so removing `start..next` drops this one with its comma.
    pub start: usize,
    pub next: usize,
    pub protocol: &'a str,
    pub version: &'a str,
    pub transport: &'a str,
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub branch: Option<&'a str>,
    pub received: Option<IpAddr>,
    pub rport: Rport,
    pub maddr: Option<Host<'a>>,
    pub ttl: Option<u8>,
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// True if the branch carries the RFC 3261 magic cookie followed by at least one
    /// character; otherwise transactions are matched the RFC 2543 way (§17.2.3, RFC 4475
    /// §3.1.3.1).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }

    /// The transport, upper-cased comparisons being the caller's business (`UDP`, `TCP`...).
    pub fn is_transport(&self, t: &str) -> bool {
        self.transport.eq_ignore_ascii_case(t)
    }
}

fn parse_via_parm<'a>(cur: &mut Cursor<'a>) -> Result<Via<'a>, Malformed> {
    let start = cur.pos();
    let protocol = cur.token().ok_or(Malformed)?;
    if !cur.eat_sep(b'/') {
        return Err(Malformed);
    }
    let version = cur.token().ok_or(Malformed)?;
    if !cur.eat_sep(b'/') {
        return Err(Malformed);
    }
    let transport = cur.token().ok_or(Malformed)?;
    if !cur.skip_lws() {
        return Err(Malformed);
    }
    let host_raw = if cur.peek() == Some(b'[') {
        let s = cur.pos();
        cur.take_while(|b| b != b']');
        if !cur.eat(b']') {
            return Err(Malformed);
        }
        cur.slice(s, cur.pos())
    } else {
        cur.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    let host = parse_host(host_raw)?;
    let port = if cur.eat_sep(b':') {
        Some(parse_port(cur.take_while(|b| b.is_ascii_digit()))?)
    } else {
        None
    };
    let (mut branch, mut received, mut rport, mut maddr, mut ttl) =
        (None, None, Rport::Absent, None, None);
    let params = cur.params(|name, value| {
        if name.eq_ignore_ascii_case("branch") {
            let v = value.filter(|v| v.bytes().all(is_token)).ok_or(())?;
            branch = Some(v);
        } else if name.eq_ignore_ascii_case("received") {
            let v = value.ok_or(())?;
            let v = v
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(v);
            received = Some(v.parse::<IpAddr>().map_err(|_| ())?);
        } else if name.eq_ignore_ascii_case("rport") {
            rport = match value {
                None => Rport::Requested,
                Some(v) => Rport::Port(parse_port(v).map_err(|_| ())?),
            };
        } else if name.eq_ignore_ascii_case("maddr") {
            maddr = Some(parse_host(value.ok_or(())?).map_err(|_| ())?);
        } else if name.eq_ignore_ascii_case("ttl") {
            let v = value.filter(|v| v.len() <= 3).ok_or(())?;
            ttl = Some(parse_u64(v).and_then(|n| u8::try_from(n).ok()).ok_or(())?);
        }
        Ok(())
    })?;
    let end = cur.pos();
    Ok(Via {
        raw: cur.slice(start, end),
        start,
        next: end,
        protocol,
        version,
        transport,
        host,
        port,
        branch,
        received,
        rport,
        maddr,
        ttl,
        params: Params(params),
    })
}

/// Parses every via-parm of one Via header value (`via-parm *(COMMA via-parm)`).
pub fn parse_vias(value: &str) -> Result<Vec<Via<'_>>, Malformed> {
    let mut out = Vec::with_capacity(2);
    for v in ViaIter::new(value) {
        out.push(v?);
    }
    Ok(out)
}

/// After one element of a comma-separated header value: consumes the separator and returns
/// where the next element starts, or checks that nothing trails the last element (then sets
/// `done`). A trailing comma with nothing after it is malformed.
fn list_item_end(cur: &mut Cursor<'_>, done: &mut bool) -> Result<usize, Malformed> {
    if cur.eat_sep(b',') {
        if cur.at_end() {
            return Err(Malformed);
        }
    } else {
        cur.skip_lws();
        if !cur.at_end() {
            return Err(Malformed);
        }
        *done = true;
    }
    Ok(cur.pos())
}

/// Iterates the via-parms of one Via header value; yields an error (then stops) on the
/// first malformed one.
pub struct ViaIter<'a> {
    cur: Cursor<'a>,
    done: bool,
}

impl<'a> ViaIter<'a> {
    pub fn new(value: &'a str) -> Self {
        ViaIter {
            cur: Cursor::new(value),
            done: false,
        }
    }
}

impl<'a> Iterator for ViaIter<'a> {
    type Item = Result<Via<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.cur.skip_lws();
        let r = parse_via_parm(&mut self.cur);
        let r = r.and_then(|mut v| {
            v.next = list_item_end(&mut self.cur, &mut self.done)?;
            Ok(v)
        });
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route, Path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// This element as written.
    pub raw: &'a str,
    /// Offsets within the header value (see [`Via::start`]).
    pub start: usize,
    pub next: usize,
    /// The display name as written (quoted-string with its quotes, or tokens).
    pub display_name: Option<&'a str>,
    /// True for the `<...>` form.
    pub bracketed: bool,
    pub uri: Uri<'a>,
    /// Header parameters (after the URI, outside `<>`): `tag`, `expires`, `q`...
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// The display name without quotes and escapes.
    pub fn display_name_text(&self) -> Option<Cow<'a, str>> {
        self.display_name.map(unquote)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }

    /// `expires` contact parameter; `Err` if present but not `delta-seconds`.
    pub fn expires(&self) -> Result<Option<u32>, Malformed> {
        match self.params.get("expires") {
            None => Ok(None),
            Some(v) => parse_delta_seconds(v.ok_or(Malformed)?).map(Some),
        }
    }

    pub fn sip_uri(&self) -> Option<&SipUri<'a>> {
        self.uri.as_sip()
    }
}

fn parse_name_addr<'a>(cur: &mut Cursor<'a>) -> Result<NameAddr<'a>, Malformed> {
    cur.skip_lws();
    let start = cur.pos();
    let mut display_name = None;
    let bracketed;
    let uri_s;
    if cur.peek() == Some(b'"') {
        display_name = Some(cur.quoted_string().ok_or(Malformed)?);
        cur.skip_lws();
        if !cur.eat(b'<') {
            return Err(Malformed);
        }
        bracketed = true;
    } else if cur.eat(b'<') {
        bracketed = true;
    } else {
        // Either `*(token LWS) "<"` or an addr-spec: try the display name first.
        let save = cur.pos();
        let mut last_end = save;
        while cur.token().is_some() {
            last_end = cur.pos();
            cur.skip_lws();
        }
        if last_end > save && cur.eat(b'<') {
            display_name = Some(cur.slice(save, last_end));
            bracketed = true;
        } else {
            cur.set_pos(save);
            bracketed = false;
        }
    }
    if bracketed {
        // LAQUOT addr-spec RAQUOT: no whitespace inside the brackets.
        let s = cur.pos();
        cur.take_while(|b| b != b'>' && !super::lex::is_lws(b));
        uri_s = cur.slice(s, cur.pos());
        if !cur.eat(b'>') {
            return Err(Malformed);
        }
    } else {
        // A bare addr-spec ends at ';', ',' or whitespace; any '?' must be bracketed.
        let s = cur.pos();
        cur.take_while(|b| !matches!(b, b';' | b',') && !super::lex::is_lws(b));
        uri_s = cur.slice(s, cur.pos());
        if uri_s.contains('?') {
            return Err(Malformed);
        }
    }
    absolute_uri_scheme(uri_s)?;
    let uri = Uri::parse(uri_s)?;
    let params = cur.params(|_, _| Ok(()))?;
    let end = cur.pos();
    Ok(NameAddr {
        raw: cur.slice(start, end),
        start,
        next: end,
        display_name,
        bracketed,
        uri,
        params: Params(params),
    })
}

/// From/To: exactly one name-addr/addr-spec.
pub fn parse_from_to(value: &str) -> Result<NameAddr<'_>, Malformed> {
    let mut cur = Cursor::new(value);
    let na = parse_name_addr(&mut cur)?;
    cur.skip_lws();
    if !cur.at_end() {
        return Err(Malformed);
    }
    Ok(na)
}

/// Iterates a comma-separated list of name-addrs (Contact, Route, Record-Route, Path).
pub struct NameAddrIter<'a> {
    cur: Cursor<'a>,
    done: bool,
}

impl<'a> NameAddrIter<'a> {
    pub fn new(value: &'a str) -> Self {
        NameAddrIter {
            cur: Cursor::new(value),
            done: false,
        }
    }
}

impl<'a> Iterator for NameAddrIter<'a> {
    type Item = Result<NameAddr<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = parse_name_addr(&mut self.cur).and_then(|mut na| {
            na.next = list_item_end(&mut self.cur, &mut self.done)?;
            Ok(na)
        });
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// Parses a whole name-addr list.
pub fn parse_name_addrs(value: &str) -> Result<Vec<NameAddr<'_>>, Malformed> {
    NameAddrIter::new(value).collect()
}

/// A Contact header value: `*` or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact<'a> {
    Star,
    List(Vec<NameAddr<'a>>),
}

pub fn parse_contact(value: &str) -> Result<Contact<'_>, Malformed> {
    if value == "*" {
        return Ok(Contact::Star);
    }
    let list = parse_name_addrs(value)?;
    // `q` = "0" [ "." 0*3DIGIT ] / ( "1" [ "." 0*3("0") ] ); `expires` = delta-seconds.
    for c in &list {
        if let Some(q) = c.params.get("q") {
            parse_qvalue(q.ok_or(Malformed)?)?;
        }
        if let Some(e) = c.params.get("expires") {
            // Out-of-range values are tolerated here (RFC 4475 §3.1.2.4 lets a registrar
            // fall back to its default); only the syntax is enforced.
            let e = e.ok_or(Malformed)?;
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed);
            }
        }
    }
    Ok(Contact::List(list))
}

/// `qvalue` in thousandths.
pub fn parse_qvalue(s: &str) -> Result<u16, Malformed> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed);
    }
    let f: u16 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u16>().map_err(|_| Malformed)? * 10u16.pow(3 - frac.len() as u32)
    };
    match int {
        "0" => Ok(f),
        "1" if f == 0 => Ok(1000),
        _ => Err(Malformed),
    }
}

/// `delta-seconds`, at most 2^32-1.
pub fn parse_delta_seconds(s: &str) -> Result<u32, Malformed> {
    parse_u64(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Malformed)
}

/// CSeq: sequence number and method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a str,
}

/// `CSeq = 1*DIGIT LWS Method`; the number must be below 2^31 (RFC 3261 §8.1.1.5).
pub fn parse_cseq(value: &str) -> Result<CSeq<'_>, Malformed> {
    let mut cur = Cursor::new(value);
    let digits = cur.take_while(|b| b.is_ascii_digit());
    let seq = parse_u64(digits)
        .filter(|&n| n < 1 << 31)
        .ok_or(Malformed)? as u32;
    if !cur.skip_lws() {
        return Err(Malformed);
    }
    let method = cur.token().ok_or(Malformed)?;
    if !cur.at_end() {
        return Err(Malformed);
    }
    Ok(CSeq { seq, method })
}

/// `Call-ID = word [ "@" word ]`.
pub fn parse_call_id(value: &str) -> Result<&str, Malformed> {
    let (a, b) = match value.split_once('@') {
        Some((a, b)) => (a, Some(b)),
        None => (value, None),
    };
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word);
    if word(a) && b.is_none_or(word) {
        Ok(value)
    } else {
        Err(Malformed)
    }
}

/// `Max-Forwards = 1*DIGIT`, 0..=255.
pub fn parse_max_forwards(value: &str) -> Result<u8, Malformed> {
    parse_u64(value)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(Malformed)
}

/// A comma-separated token list (Require, Proxy-Require, Supported, Unsupported, Allow).
/// An empty value is an empty list.
pub fn parse_token_list(value: &str) -> Result<Vec<&str>, Malformed> {
    let mut out = Vec::new();
    let mut cur = Cursor::new(value);
    cur.skip_lws();
    if cur.at_end() {
        return Ok(out);
    }
    loop {
        out.push(cur.token().ok_or(Malformed)?);
        if !cur.eat_sep(b',') {
            break;
        }
    }
    cur.skip_lws();
    if cur.at_end() {
        Ok(out)
    } else {
        Err(Malformed)
    }
}

/// Content-Type: `type/subtype` plus parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub ty: &'a str,
    pub subtype: &'a str,
    pub params: Params<'a>,
}

impl MediaType<'_> {
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

pub fn parse_media_type(value: &str) -> Result<MediaType<'_>, Malformed> {
    let mut cur = Cursor::new(value);
    let ty = cur.token().ok_or(Malformed)?;
    if !cur.eat_sep(b'/') {
        return Err(Malformed);
    }
    let subtype = cur.token().ok_or(Malformed)?;
    let params = cur.params(|_, _| Ok(()))?;
    cur.skip_lws();
    if !cur.at_end() {
        return Err(Malformed);
    }
    Ok(MediaType {
        ty,
        subtype,
        params: Params(params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn via_basic() {
        let v = parse_vias("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1;ttl=16;maddr=224.2.0.1").unwrap();
        assert_eq!(v.len(), 1);
        let v = v[0];
        assert_eq!((v.protocol, v.version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!(v.host, Host::Name("pc33.example.com"));
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch, Some("z9hG4bK776asdhds"));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.rport, Rport::Requested);
        assert_eq!(v.received, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(v.ttl, Some(16));
        assert_eq!(v.maddr, Some(Host::V4(Ipv4Addr::new(224, 2, 0, 1))));
    }

    #[test]
    fn via_rport_value_ipv6_and_lists() {
        let v = parse_vias("SIP/2.0/TCP [2001:db8::9]:5060;rport=5070;received=2001:db8::1 , SIP/2.0/UDP b.example.com").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].rport, Rport::Port(5070));
        assert_eq!(v[0].host, Host::V6("2001:db8::9".parse().unwrap()));
        assert_eq!(v[0].received, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(v[1].start, v[0].next);
        assert_eq!(v[1].raw, "SIP/2.0/UDP b.example.com");
        assert!(!v[1].has_rfc3261_branch());
    }

    #[test]
    fn via_rejects() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host;rport=99999",
            "SIP/2.0/UDP host;ttl=256",
            "SIP/2.0/UDP host;received=example.com",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host,",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(parse_vias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let na = parse_from_to("\"A \\\"B\\\"\" <sip:a@example.com;lr>;tag=x1").unwrap();
        assert_eq!(na.display_name_text().unwrap(), "A \"B\"");
        assert!(na.bracketed);
        assert_eq!(na.tag(), Some("x1"));
        assert!(na.sip_uri().unwrap().lr());

        // addr-spec: params belong to the header, not the URI.
        let na = parse_from_to("sip:+19725552222@gw1.example.net;unknownparam;tag=9").unwrap();
        assert!(!na.bracketed);
        assert_eq!(na.sip_uri().unwrap().params, "");
        assert_eq!(na.param("unknownparam"), Some(None));
        assert_eq!(na.tag(), Some("9"));

        let na = parse_from_to("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(na.display_name, Some("caller"));
        let na = parse_from_to("A. Bell <sip:a.g.bell@example.com>").unwrap();
        assert_eq!(na.display_name, Some("A. Bell"));
        let na = parse_from_to("isbn:2983792873").unwrap();
        assert!(matches!(na.uri, Uri::Other { scheme: "isbn", .. }));
    }

    #[test]
    fn name_addr_rejects() {
        for bad in [
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Mr. J. User <sip:j.user@example.com>",
            "< sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b>;;",
            "<sip:a@b",
            "<sip:a@b> junk",
            "<sip:a b@c>",
            "",
        ] {
            assert!(parse_from_to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contact_lists() {
        assert_eq!(parse_contact("*"), Ok(Contact::Star));
        let Contact::List(l) = parse_contact("<sip:a@b>;expires=60;q=0.5, sip:c@d ; q=1").unwrap()
        else {
            panic!("list expected")
        };
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].expires(), Ok(Some(60)));
        assert_eq!(l[1].param("q"), Some(Some("1")));
        assert!(parse_contact("<sip:a@b>;q=1.5").is_err());
        assert!(parse_contact("<sip:a@b>;expires=-1").is_err());
        assert!(parse_contact("<sip:a@b>,").is_err());
        assert_eq!(parse_qvalue("0.25"), Ok(250));
        assert_eq!(parse_qvalue("1.000"), Ok(1000));
        assert!(parse_qvalue("0.1234").is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(
            parse_cseq("0009\r\n  INVITE"),
            Ok(CSeq {
                seq: 9,
                method: "INVITE"
            })
        );
        assert!(parse_cseq("36893488147419103232 REGISTER").is_err());
        assert!(parse_cseq("2147483648 INVITE").is_err());
        assert!(parse_cseq("1INVITE").is_err());
        assert!(parse_cseq("1 INVITE x").is_err());
        assert_eq!(parse_max_forwards("0068"), Ok(68));
        assert!(parse_max_forwards("300").is_err());
        assert!(parse_max_forwards("").is_err());
        assert_eq!(parse_call_id("a84b@pc33"), Ok("a84b@pc33"));
        assert!(parse_call_id("a b").is_err());
        assert!(parse_call_id("a@").is_err());
        assert!(parse_call_id("a@b@c").is_err());
        assert_eq!(parse_delta_seconds("3600"), Ok(3600));
        assert!(parse_delta_seconds("4294967296").is_err());
        assert_eq!(parse_token_list("a, b ,c"), Ok(vec!["a", "b", "c"]));
        assert_eq!(parse_token_list(""), Ok(vec![]));
        assert!(parse_token_list("a,,b").is_err());
        let mt = parse_media_type("multipart/mixed;boundary=7a9c").unwrap();
        assert!(mt.is("Multipart", "MIXED"));
        assert_eq!(mt.params.get("boundary"), Some(Some("7a9c")));
        assert!(parse_media_type("text").is_err());
    }
}
