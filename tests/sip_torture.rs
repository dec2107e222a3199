//! RFC 4475 torture messages against the verdicts in tests/data/rfc4475/INDEX.md: one table
//! row per file, with field-level checks for the valid ones; plus round trips through the
//! editor and no-panic sweeps (truncation at every offset, byte flips).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rtpanchor::sip::header::{parse_from_to, Contact, Rport};
use rtpanchor::sip::lex::unescape;
use rtpanchor::sip::message::ReplyContext;
use rtpanchor::sip::{
    classify, frame, Disposition, Editor, Header, HeaderName, Host, Message, ParseError, StartLine,
    Uri,
};

fn load(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A request the proxy handles.
    Request,
    /// A response the proxy forwards.
    Response,
    /// Answered with this status; the reason phrase contains the given text.
    Reject(u16, &'static str),
    /// Silently discarded, for this parse error.
    Drop(ParseError),
}
use Expect::*;

type Check = fn(&Message<'_>);

fn hdr<'a>(m: &'a Message<'_>, name: &str) -> &'a Header<'a> {
    m.header_by_name(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn sip_user(u: &Uri<'_>) -> Vec<u8> {
    u.as_sip()
        .and_then(|s| s.user_decoded())
        .expect("sip uri with user")
        .into_owned()
}

fn contacts<'a>(m: &Message<'a>) -> Vec<rtpanchor::sip::header::NameAddr<'a>> {
    match m.contacts().unwrap() {
        Contact::List(l) => l,
        Contact::Star => panic!("unexpected *"),
    }
}

fn check_wsinv(m: &Message<'_>) {
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(
        m.request_uri_str(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    let ruri = m.request_uri().unwrap().unwrap();
    assert_eq!(ruri.as_sip().unwrap().param("unknownparam"), Some(None));
    let to = m.to().unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    assert_eq!(
        to.uri.as_sip().unwrap().host,
        Host::Name("chair-dnrc.example.com")
    );
    let from = m.from().unwrap();
    assert_eq!(from.display_name_text().unwrap(), "J Rosenberg \\\"");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, "INVITE"));
    assert_eq!(m.content_length, Some(150));
    assert_eq!(m.body().len(), 150);
    assert_eq!(hdr(m, "s").value, "");
    assert_eq!(
        hdr(m, "NewFangledHeader").value_unfolded(),
        "newfangled value continued newfangled value"
    );
    assert_eq!(hdr(m, "UnknownHeaderWithUnusualValue").value, ";;,,;;,;");
    let vias: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport, vias[0].host, vias[0].branch),
        (
            "UDP",
            Host::V4(Ipv4Addr::new(192, 0, 2, 2)),
            Some("390skdjuw")
        )
    );
    assert_eq!(
        (vias[1].transport, vias[1].host, vias[1].branch),
        (
            "TCP",
            Host::Name("spindle.example.com"),
            Some("z9hG4bK9ikj8")
        )
    );
    assert_eq!(
        (vias[2].transport, vias[2].host, vias[2].branch),
        (
            "UDP",
            Host::V4(Ipv4Addr::new(192, 168, 255, 111)),
            Some("z9hG4bK30239")
        )
    );
    assert!(!vias[0].has_rfc3261_branch());
    let c = contacts(m);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].display_name_text().unwrap(), "Quoted string \"\"");
    assert_eq!(c[0].param("newparam"), Some(Some("newvalue")));
    assert_eq!(c[0].param("secondparam"), Some(None));
    assert_eq!(c[0].param("q"), Some(Some("0.33")));
    let route = m.route_set(HeaderName::Route).unwrap();
    let r = route[0].sip_uri().unwrap();
    assert!(r.lr());
    assert_eq!(r.param("unknownwith"), Some(Some("value")));
    assert_eq!(r.param("unknown-no-value"), Some(None));
}

fn check_intmeth(m: &Message<'_>) {
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(method));
    assert_eq!(m.cseq().unwrap().method, method);
    assert_eq!(m.cseq().unwrap().seq, 139122385);
    let ruri = m.request_uri().unwrap().unwrap();
    let u = ruri.as_sip().unwrap();
    assert_eq!(
        u.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        u.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(u.host, Host::Name("example.com"));
    let to = m.to().unwrap();
    assert_eq!(to.display_name_text().unwrap(), "BEL:\x07 NUL:\0 DEL:\x7f");
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        from.param("fromParam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(
        m.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    let ext = hdr(m, "extensionHeader-!.%*+_`'~");
    assert_eq!(ext.kind, HeaderName::Other);
    assert_eq!(ext.value, "\u{feff}大停電");
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK-.!%66*_+`'~"));
}

fn check_esc01(m: &Message<'_>) {
    let ruri = m.request_uri().unwrap().unwrap();
    assert_eq!(sip_user(&ruri), b"sips:user@example.com");
    assert_eq!(ruri.as_sip().unwrap().host, Host::Name("example.net"));
    assert_eq!(sip_user(&m.to().unwrap().uri), b"user");
    assert_eq!(sip_user(&m.from().unwrap().uri), b"I have spaces");
    let c = contacts(m);
    let u = c[0].sip_uri().unwrap();
    assert_eq!(u.user_decoded().unwrap().as_ref(), b"caller");
    assert!(u.lr(), "%6C%72 is lr");
    assert_eq!(
        unescape(u.param("name").unwrap().unwrap()).as_ref(),
        b"value%41"
    );
    assert_eq!(m.call_id().unwrap(), "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(m.content_type().unwrap().unwrap().subtype, "sdp");
}

fn check_escnull(m: &Message<'_>) {
    assert_eq!(sip_user(&m.to().unwrap().uri), b"null-\0-null");
    assert_eq!(sip_user(&m.from().unwrap().uri), b"null-\0-null");
    let c = contacts(m);
    assert_eq!(c.len(), 2);
    assert_eq!(sip_user(&c[0].uri), b"\0");
    assert_eq!(sip_user(&c[1].uri), b"\0\0");
    assert_eq!(m.content_length, Some(0));
}

fn check_esc02(m: &Message<'_>) {
    assert_eq!(m.method(), Some("RE%47IST%45R"));
    assert_eq!(m.cseq().unwrap().method, "RE%47IST%45R");
    assert_eq!(m.to().unwrap().display_name_text().unwrap(), "%Z%45");
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK209%fzsnel234"));
    // `C%6Fntact` is another header name, not Contact.
    assert_eq!(hdr(m, "C%6Fntact").kind, HeaderName::Other);
    let c = contacts(m);
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[1].sip_uri().unwrap().host,
        Host::Name("host3.example.com")
    );
}

fn check_lwsdisp(m: &Message<'_>) {
    let f = m.from().unwrap();
    assert_eq!(f.display_name, Some("caller"));
    assert!(f.bracketed);
    assert_eq!(f.tag(), Some("323"));
}

fn check_longreq(m: &Message<'_>) {
    let to = m.to().unwrap();
    assert!(to
        .display_name_text()
        .unwrap()
        .starts_with("I have a user name of extremeextreme"));
    let u = to.sip_uri().unwrap();
    assert_eq!(u.port, Some(6000));
    assert!(u
        .param("unknownparam1")
        .unwrap()
        .unwrap()
        .starts_with("verylonglong"));
    assert!(u
        .params()
        .any(|(n, v)| n.ends_with("ParameterNameWithNoValue") && v.is_none()));
    let from = m.from().unwrap();
    assert_eq!(from.tag().unwrap().len(), 155);
    assert!(from
        .sip_uri()
        .unwrap()
        .user
        .unwrap()
        .starts_with("amazinglylongcallername"));
    assert_eq!(m.call_id().unwrap().len(), 141);
    let vias: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host, Host::Name("sip33.example.com"));
    assert_eq!(vias[32].host, Host::Name("sip1.example.com"));
    let last = vias[33];
    assert_eq!(last.received, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 5))));
    assert!(last.branch.unwrap().len() > 200);
    assert_eq!(m.headers_of(HeaderName::Via).count(), 34);
    assert_eq!(m.body().len(), 150);
}

fn check_dblreq(m: &Message<'_>) {
    assert_eq!(m.method(), Some("REGISTER"));
    assert_eq!(
        m.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
    assert_eq!(m.body(), b"");
    // Only the first message: it ends right after the empty line.
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    assert_eq!(m.as_bytes().len(), 300);
}

fn check_semiuri(m: &Message<'_>) {
    let ruri = m.request_uri().unwrap().unwrap();
    let u = ruri.as_sip().unwrap();
    assert_eq!(u.user, Some("user;par=u%40example.net"));
    assert_eq!(u.host, Host::Name("example.com"));
    assert_eq!(u.params, "");
    assert_eq!(
        hdr(m, "Accept").value_unfolded(),
        "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag"
    );
}

fn check_transports(m: &Message<'_>) {
    let t: Vec<_> = m.vias().map(|v| v.unwrap().1.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

fn check_mpart01(m: &Message<'_>) {
    assert_eq!(m.method(), Some("MESSAGE"));
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0));
    let ct = m.content_type().unwrap().unwrap();
    assert!(ct.is("multipart", "mixed"));
    assert_eq!(ct.params.get("boundary"), Some(Some("7a9cbec02ceef655")));
    let v = m.top_via().unwrap();
    assert_eq!(v.rport, Rport::Requested);
    assert_eq!(v.port, Some(5070));
}

fn check_unreason(m: &Message<'_>) {
    let StartLine::Response(s) = m.start else {
        panic!("response expected")
    };
    assert_eq!(s.code, 200);
    assert_eq!(s.reason, "= 2**3 * 5**2 но сто девяносто девять - простое");
    assert_eq!(m.body().len(), 154);
}

fn check_noreason(m: &Message<'_>) {
    let StartLine::Response(s) = m.start else {
        panic!("response expected")
    };
    assert_eq!((s.code, s.reason), (100, ""));
}

fn check_baddate(m: &Message<'_>) {
    assert_eq!(hdr(m, "Date").value, "Fri, 01 Jan 2010 16:00:00 EST");
}

fn check_badbranch(m: &Message<'_>) {
    let v = m.top_via().unwrap();
    assert_eq!(v.branch, Some("z9hG4bK"));
    assert!(!v.has_rfc3261_branch(), "bare cookie: RFC 2543 matching");
}

fn check_unksm2(m: &Message<'_>) {
    assert!(matches!(
        m.to().unwrap().uri,
        Uri::Other { scheme: "isbn", .. }
    ));
    assert!(matches!(
        m.from().unwrap().uri,
        Uri::Other { scheme: "http", .. }
    ));
    assert!(matches!(
        contacts(m)[0].uri,
        Uri::Other { scheme: "name", .. }
    ));
}

fn check_invut(m: &Message<'_>) {
    let ct = m.content_type().unwrap().unwrap();
    assert!(ct.is("application", "unknownformat"));
    assert_eq!(m.body().len(), 40);
}

fn check_regaut01(m: &Message<'_>) {
    assert_eq!(
        m.header(HeaderName::Authorization).unwrap().value,
        "NoOneKnowsThisScheme opaque-data=here"
    );
}

fn check_bcast(m: &Message<'_>) {
    let vias: Vec<_> = m.vias().map(|v| v.unwrap().1).collect();
    // After the proxy strips its own Via, the next hop is the broadcast address: the
    // response must not be sent there.
    let next = vias[1].host.ip().unwrap();
    assert_eq!(next, IpAddr::V4(Ipv4Addr::BROADCAST));
    assert!(!rtpanchor::sip::message::is_sendable_destination(next));
    assert!(rtpanchor::sip::message::is_sendable_destination(
        vias[0].host.ip().unwrap()
    ));
}

fn check_cparam01(m: &Message<'_>) {
    let c = contacts(m);
    assert!(!c[0].bracketed);
    assert_eq!(c[0].param("unknownparam"), Some(None));
    let u = c[0].sip_uri().unwrap();
    assert_eq!(u.params, "", "addr-spec params belong to the header");
    assert_eq!(u.user, Some("+19725552222"));
}

fn check_cparam02(m: &Message<'_>) {
    let c = contacts(m);
    assert!(c[0].params.is_empty());
    assert_eq!(c[0].sip_uri().unwrap().param("unknownparam"), Some(None));
}

fn check_regescrt(m: &Message<'_>) {
    let c = contacts(m);
    let u = c[0].sip_uri().unwrap();
    assert_eq!(u.headers, Some("Route=%3Csip:sip.example.com%3E"));
    assert_eq!(
        unescape(u.headers().next().unwrap().1).as_ref(),
        b"<sip:sip.example.com>"
    );
}

fn check_sdp01(m: &Message<'_>) {
    assert_eq!(hdr(m, "Accept").value, "text/nobodyKnowsThis");
}

fn check_inv2543(m: &Message<'_>) {
    let v = m.top_via().unwrap();
    assert_eq!(v.branch, None);
    assert_eq!(v.host, Host::Name("iftgw.example.com"));
    assert_eq!(m.max_forwards().unwrap(), None);
    assert_eq!(m.from_tag(), None);
    assert_eq!(m.content_length, None);
    assert_eq!(m.body().len(), 105, "no Content-Length: rest of datagram");
    let rr = m.route_set(HeaderName::RecordRoute).unwrap();
    assert_eq!(rr[0].sip_uri().unwrap().maddr(), Some("ss1.example.com"));
}

fn no_check(_: &Message<'_>) {}

const M: fn(HeaderName) -> ParseError = ParseError::Malformed;

/// One row per file, in INDEX.md order.
fn table() -> Vec<(&'static str, Expect, Check)> {
    vec![
        ("wsinv", Request, check_wsinv as Check),
        ("intmeth", Request, check_intmeth),
        ("esc01", Request, check_esc01),
        ("escnull", Request, check_escnull),
        ("esc02", Request, check_esc02),
        ("lwsdisp", Request, check_lwsdisp),
        ("longreq", Request, check_longreq),
        ("dblreq", Request, check_dblreq),
        ("semiuri", Request, check_semiuri),
        ("transports", Request, check_transports),
        ("mpart01", Request, check_mpart01),
        ("unreason", Response, check_unreason),
        ("noreason", Response, check_noreason),
        ("badinv01", Reject(400, "Malformed Via header"), no_check),
        (
            "clerr",
            Reject(400, "Content-Length larger than message"),
            no_check,
        ),
        ("ncl", Reject(400, "Malformed Content-Length"), no_check),
        ("scalar02", Reject(400, "Malformed CSeq header"), no_check),
        ("scalarlg", Drop(M(HeaderName::CSeq)), no_check),
        ("quotbal", Reject(400, "Malformed To header"), no_check),
        ("ltgtruri", Reject(400, "Malformed Request-URI"), no_check),
        ("lwsruri", Reject(400, "Malformed Request-Line"), no_check),
        ("lwsstart", Reject(400, "Malformed Request-Line"), no_check),
        ("trws", Reject(400, "Malformed Request-Line"), no_check),
        (
            "escruri",
            Reject(400, "Request-URI must not contain headers"),
            no_check,
        ),
        ("baddate", Request, check_baddate),
        (
            "regbadct",
            Reject(400, "Malformed Contact header"),
            no_check,
        ),
        ("badaspec", Reject(400, "Malformed To header"), no_check),
        ("baddn", Reject(400, "Malformed From header"), no_check),
        ("badvers", Reject(505, "Version Not Supported"), no_check),
        (
            "mismatch01",
            Reject(400, "CSeq method does not match"),
            no_check,
        ),
        (
            "mismatch02",
            Reject(400, "CSeq method does not match"),
            no_check,
        ),
        ("bigcode", Drop(ParseError::BadStatusLine), no_check),
        ("badbranch", Request, check_badbranch),
        ("insuf", Reject(400, "Missing To header"), no_check),
        ("unkscm", Reject(416, "Unsupported URI Scheme"), no_check),
        ("novelsc", Reject(416, "Unsupported URI Scheme"), no_check),
        ("unksm2", Request, check_unksm2),
        ("bext01", Reject(420, "Bad Extension"), no_check),
        ("invut", Request, check_invut),
        ("regaut01", Request, check_regaut01),
        ("multi01", Reject(400, "Multiple To headers"), no_check),
        ("mcl01", Reject(400, "Multiple Content-Length"), no_check),
        ("bcast", Response, check_bcast),
        ("zeromf", Reject(483, "Too Many Hops"), no_check),
        ("cparam01", Request, check_cparam01),
        ("cparam02", Request, check_cparam02),
        ("regescrt", Request, check_regescrt),
        ("sdp01", Request, check_sdp01),
        ("inv2543", Request, check_inv2543),
        ("test", Drop(ParseError::BadRequestLine), no_check),
    ]
}

#[test]
fn table_covers_every_file_in_the_index() {
    let index = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475/INDEX.md"),
    )
    .unwrap();
    let listed: Vec<&str> = index
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter(|n| *n != "file" && !n.starts_with("---"))
        .collect();
    let rows: Vec<&str> = table().iter().map(|r| r.0).collect();
    assert_eq!(listed.len(), 50);
    assert_eq!(listed, rows);
}

#[test]
fn torture_verdicts() {
    let mut failures = Vec::new();
    for (name, expect, check) in table() {
        let buf = load(name);
        let got = match classify(&buf) {
            Disposition::Request(m) => {
                check(&m);
                Request
            }
            Disposition::Response(m) => {
                check(&m);
                Response
            }
            Disposition::Reject { rejection, reply } => {
                // The error response is well formed and carries the request's Via.
                let resp = rejection.response(&reply, Some("rtpanchor1"));
                let r = Message::parse(&resp).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(r.status(), Some(rejection.status), "{name}");
                assert_eq!(r.headers_of(HeaderName::Via).count(), reply.vias.len());
                if rejection.status == 420 {
                    assert_eq!(
                        rejection.unsupported,
                        ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
                    );
                    assert_eq!(
                        r.header(HeaderName::Unsupported).unwrap().value,
                        "noProxiesSupportThis, norDoAnyProxiesSupportThis"
                    );
                }
                match expect {
                    Reject(_, text) if !rejection.reason.contains(text) => {
                        failures.push(format!("{name}: reason {:?}", rejection.reason));
                    }
                    _ => {}
                }
                Reject(
                    rejection.status,
                    match expect {
                        Reject(_, t) => t,
                        _ => rejection.reason,
                    },
                )
            }
            Disposition::Drop(e) => Drop(e),
        };
        if got != expect {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn reject_responses_echo_the_request() {
    let buf = load("zeromf");
    let Disposition::Reject { rejection, reply } = classify(&buf) else {
        panic!("zeromf must be rejected")
    };
    let resp = rejection.response(&reply, Some("abc"));
    let r = Message::parse(&resp).unwrap();
    assert_eq!(r.status(), Some(483));
    assert_eq!(r.call_id().unwrap(), "zeromf.jfasdlfnm2o2l43r5u0asdfas");
    assert_eq!(r.cseq().unwrap().seq, 39234321);
    assert_eq!(r.to_tag(), Some("abc"));
    assert_eq!(r.from_tag(), Some("3ghsd41"));
    assert_eq!(r.top_via().unwrap().branch, Some("z9hG4bKkdjuw2349i"));
    // A request that failed framing still gets its headers salvaged (505 for badvers).
    let buf = load("badvers");
    let ctx = ReplyContext::salvage(&buf);
    assert_eq!(ctx.vias, ["SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw"]);
    assert_eq!(ctx.call_id, Some("badvers.31417@c.example.com"));
    assert_eq!(ctx.cseq, Some("1 OPTIONS"));
    assert!(parse_from_to(ctx.to.unwrap()).is_ok());
}

/// Files that frame successfully (whatever the later checks say).
fn framed() -> Vec<(&'static str, Vec<u8>)> {
    table()
        .into_iter()
        .map(|(n, _, _)| (n, load(n)))
        .filter(|(_, b)| Message::parse(b).is_ok())
        .collect()
}

#[test]
fn zero_edits_reproduce_the_input() {
    let files = framed();
    assert!(files.len() >= 40, "{}", files.len());
    for (name, buf) in &files {
        let m = Message::parse(buf).unwrap();
        let out = Editor::new(&m).finish().unwrap();
        if *name == "dblreq" {
            assert_eq!(out, &buf[..m.as_bytes().len()], "{name}");
        } else {
            assert_eq!(&out, buf, "{name}");
        }
    }
}

#[test]
fn one_edit_leaves_every_other_byte_intact() {
    for (name, buf) in framed() {
        let m = Message::parse(&buf).unwrap();
        for (i, h) in m.headers.iter().enumerate() {
            let mut e = Editor::new(&m);
            e.replace_value(i, "EDITED").unwrap();
            let out = e.finish().unwrap();
            let r = h.value_range();
            let orig = m.as_bytes();
            assert_eq!(&out[..r.start], &orig[..r.start], "{name} header {i}");
            assert_eq!(&out[r.start..r.start + 6], b"EDITED");
            assert_eq!(&out[r.start + 6..], &orig[r.end..], "{name} header {i}");
        }
    }
}

#[test]
fn proxy_edits_on_torture_requests() {
    let mut n = 0;
    for (name, buf) in framed() {
        let Disposition::Request(m) = classify(&buf) else {
            continue;
        };
        n += 1;
        let mut e = Editor::new(&m);
        e.push_via("SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKproxy");
        let mf = e.decrement_max_forwards();
        let out = e.finish().unwrap();
        let r = Message::parse(&out).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(r.top_via().unwrap().branch, Some("z9hG4bKproxy"), "{name}");
        assert_eq!(r.vias().count(), m.vias().count() + 1, "{name}");
        if let Ok(n) = mf {
            assert_eq!(r.max_forwards().unwrap(), Some(n), "{name}");
        }
        assert_eq!(r.body(), m.body(), "{name}");
        // Removing our Via again restores the original bytes except Max-Forwards.
        let mut e = Editor::new(&r);
        e.remove_top_via().unwrap();
        let back = e.finish().unwrap();
        let b = Message::parse(&back).unwrap();
        assert_eq!(
            b.headers.len(),
            m.headers.len() + usize::from(m.max_forwards().ok().flatten().is_none() && mf.is_ok())
        );
        assert_eq!(b.call_id().ok(), m.call_id().ok());
    }
    assert_eq!(n, 21);
}

fn exercise(buf: &[u8]) {
    let _ = frame(buf);
    match classify(buf) {
        Disposition::Request(m) | Disposition::Response(m) => {
            let _ = m.top_via();
            let _ = m.contacts();
            let _ = m.route_set(HeaderName::RecordRoute);
            let _ = m.request_uri();
            for h in &m.headers {
                let _ = h.value_unfolded();
            }
            let mut e = Editor::new(&m);
            let _ = e.remove_top_via();
            let _ = e.decrement_max_forwards();
            e.set_body(b"x");
            let _ = e.finish();
        }
        Disposition::Reject { rejection, reply } => {
            let _ = rejection.response(&reply, Some("t"));
        }
        Disposition::Drop(e) => {
            assert!(!e.reason_phrase().is_empty());
        }
    }
}

#[test]
fn truncation_at_every_offset_never_panics() {
    let mut n = 0;
    for (name, _, _) in table() {
        let buf = load(name);
        for i in 0..=buf.len() {
            exercise(&buf[..i]);
            n += 1;
        }
    }
    assert!(n > 20_000);
}

#[test]
fn byte_flips_never_panic() {
    let mut n = 0;
    for (name, _, _) in table() {
        let buf = load(name);
        let mut copy = buf.clone();
        for i in 0..buf.len() {
            for b in [
                0u8,
                b' ',
                b'\r',
                b'\n',
                b':',
                b';',
                b'"',
                b'<',
                b'%',
                0xff,
                buf[i] ^ 0x20,
            ] {
                copy[i] = b;
                exercise(&copy);
                n += 1;
            }
            copy[i] = buf[i];
        }
    }
    assert!(n > 150_000);
}
