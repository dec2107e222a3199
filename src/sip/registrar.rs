//! Registrar: a sans-IO location service (RFC 3261 §10.3).
//!
//! [`Registrar::handle_register`] takes a REGISTER already accepted by
//! [`check_request`](super::check_request), the source address it came from and the current
//! time, updates the bindings of the address-of-record (AOR) atomically (all contacts or
//! none) and returns the response to send: 200 listing every current binding with its
//! remaining lifetime, 423 with Min-Expires, or an error. Bindings live behind the small
//! [`LocationStore`] trait; [`MemoryStore`] keeps them in a map.
//!
//! - AOR: the To URI in canonical form (§10.3 step 5): scheme, unescaped user, lower-case
//!   host and port, no parameters.
//! - Lifetime: the contact's `expires` parameter, else the Expires header, else the default;
//!   non-zero values below the minimum are refused with 423 (§10.3 step 7), values above
//!   the maximum are shortened; unparseable values fall back to the default (RFC 4475
//!   §3.1.2.4 allows this).
//! - Refresh and removal follow the Call-ID/CSeq rules of §10.3 step 7; `Contact: *` needs
//!   `Expires: 0` and no other contact.
//! - The source address is stored per binding, so requests can reach a UA behind NAT.
//!
//! Time is `u64` nanoseconds supplied by the caller; nothing here reads a clock.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::header::{parse_delta_seconds, parse_qvalue, Contact};
use super::message::{build_response, ReplyContext};
use super::parse::Message;
use super::transport::Transport;
use super::uri::Uri;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One registered contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as the UA wrote it.
    pub uri: String,
    /// `q` in thousandths, if given.
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (the UA's public address when behind NAT).
    pub source: SocketAddr,
    pub expires_at_ns: u64,
    /// The transport the REGISTER came over.
    pub transport: Transport,
    /// `None`: made here. Else the SIP URI of the front that took the REGISTER (a shared
    /// location service, `store::share`), through which a TCP/TLS binding is reached.
    pub path: Option<String>,
    /// Registered with RFC 5626 outbound: its Contact carried `reg-id` and `+sip.instance`.
    /// Its flow (the connection it came over) is the only way to it: when that is gone,
    /// requests get 430 Flow Failed (§5.3) and the binding is dropped.
    pub outbound: bool,
    /// NAT evidence when it was made (the REGISTER's top Via differed from its source):
    /// the phone is reached at `source`, not at its Contact. Stored with the binding, so
    /// another front sharing the location service reaches it there too.
    pub nat: bool,
}

impl Binding {
    /// Whole seconds left (rounded up), 0 once expired.
    pub fn remaining_secs(&self, now_ns: u64) -> u64 {
        self.expires_at_ns
            .saturating_sub(now_ns)
            .div_ceil(NANOS_PER_SEC)
    }
}

/// Storage for bindings, keyed by canonical AOR.
pub trait LocationStore {
    /// Current bindings of an AOR, possibly including expired ones.
    fn get(&self, aor: &str) -> Vec<Binding>;
    /// Replaces the bindings of an AOR; an empty list removes the AOR.
    fn put(&mut self, aor: &str, bindings: Vec<Binding>);
    /// Drops every binding that has expired by `now_ns`; returns how many.
    fn expire(&mut self, now_ns: u64) -> usize;
    /// Number of AORs with at least one binding.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-memory [`LocationStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: HashMap<String, Vec<Binding>>,
}

impl MemoryStore {
    /// The addresses of record held.
    pub fn aors(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

impl LocationStore for MemoryStore {
    fn get(&self, aor: &str) -> Vec<Binding> {
        self.map.get(aor).cloned().unwrap_or_default()
    }

    fn put(&mut self, aor: &str, bindings: Vec<Binding>) {
        if bindings.is_empty() {
            self.map.remove(aor);
        } else {
            self.map.insert(aor.to_owned(), bindings);
        }
    }

    fn expire(&mut self, now_ns: u64) -> usize {
        let mut removed = 0;
        self.map.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at_ns > now_ns);
            removed += before - list.len();
            !list.is_empty()
        });
        removed
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Registrar limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Lifetime when the request names none (seconds).
    pub default_expires: u32,
    /// Shortest non-zero lifetime accepted; shorter gets 423.
    pub min_expires: u32,
    /// Longer lifetimes are cut to this.
    pub max_expires: u32,
    /// Most contacts one AOR may hold.
    pub max_bindings: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_bindings: 16,
        }
    }
}

/// The response a REGISTER gets, as status, reason and extra header lines; turn it into
/// bytes with [`RegisterResponse::to_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterResponse {
    pub status: u16,
    pub reason: &'static str,
    /// Extra headers in order (`Contact` per binding, `Min-Expires`, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl RegisterResponse {
    fn error(status: u16, reason: &'static str) -> Self {
        RegisterResponse {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    /// Serialises the response to `req`, adding `to_tag` to To.
    pub fn to_bytes(&self, req: &Message<'_>, to_tag: &str) -> Vec<u8> {
        let extra: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        build_response(
            &ReplyContext::from_message(req),
            self.status,
            self.reason,
            Some(to_tag),
            &extra,
        )
    }
}

/// Canonical AOR of a URI (RFC 3261 §10.3 step 5), or `None` if it is not SIP/SIPS.
pub fn canonical_aor(uri: &Uri<'_>) -> Option<String> {
    let u = uri.as_sip()?;
    let scheme = match u.scheme {
        super::uri::Scheme::Sip => "sip",
        super::uri::Scheme::Sips => "sips",
    };
    let mut s = String::with_capacity(u.raw.len());
    s.push_str(scheme);
    s.push(':');
    // A number (`user=phone`, RFC 3966) is stored without its visual separators.
    if let Some(number) = super::number::sip_phone_number(u) {
        s.push_str(&number);
        s.push('@');
    } else if let Some(user) = u.user_decoded() {
        s.push_str(&String::from_utf8_lossy(&user));
        s.push('@');
    }
    s.push_str(&u.host_raw.to_ascii_lowercase());
    if let Some(p) = u.port {
        s.push(':');
        s.push_str(&p.to_string());
    }
    Some(s)
}

/// Contact URIs compare case-insensitively here: a simplification of RFC 3261 §19.1.4 that
/// matches what UAs send back when refreshing.
fn same_contact(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The registrar: configuration plus a store.
#[derive(Debug, Default)]
pub struct Registrar<S: LocationStore = MemoryStore> {
    pub config: RegistrarConfig,
    pub store: S,
}

impl<S: LocationStore> Registrar<S> {
    pub fn new(config: RegistrarConfig, store: S) -> Self {
        Registrar { config, store }
    }

    /// Active bindings of an AOR, highest `q` first.
    pub fn lookup(&self, aor: &str, now_ns: u64) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .store
            .get(aor)
            .into_iter()
            .filter(|b| b.expires_at_ns > now_ns)
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        v
    }

    /// Drops expired bindings; call periodically.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        self.store.expire(now_ns)
    }

    fn ok_listing(&self, bindings: &[Binding], now_ns: u64) -> RegisterResponse {
        let headers = bindings
            .iter()
            .filter(|b| b.expires_at_ns > now_ns)
            .map(|b| {
                let mut v = format!("<{}>;expires={}", b.uri, b.remaining_secs(now_ns));
                if let Some(q) = b.q {
                    v.push_str(&format!(";q={}.{:03}", q / 1000, q % 1000));
                }
                ("Contact", v)
            })
            .collect();
        RegisterResponse {
            status: 200,
            reason: "OK",
            headers,
        }
    }

    /// Processes one REGISTER that came over UDP (see [`Registrar::handle_register_on`]).
    pub fn handle_register(
        &mut self,
        req: &Message<'_>,
        source: SocketAddr,
        now_ns: u64,
    ) -> RegisterResponse {
        self.handle_register_on(req, source, Transport::Udp, now_ns)
    }

    /// Processes one REGISTER (RFC 3261 §10.3 steps 5–8) that came over `transport`.
    pub fn handle_register_on(
        &mut self,
        req: &Message<'_>,
        source: SocketAddr,
        transport: Transport,
        now_ns: u64,
    ) -> RegisterResponse {
        if req.method() != Some("REGISTER") {
            return RegisterResponse::error(400, "Bad Request - Not a REGISTER");
        }
        let (Ok(to), Ok(call_id), Ok(cseq)) = (req.to(), req.call_id(), req.cseq()) else {
            return RegisterResponse::error(400, "Bad Request - Malformed To, Call-ID or CSeq");
        };
        let Some(aor) = canonical_aor(&to.uri) else {
            return RegisterResponse::error(404, "Not Found - AOR is not a SIP URI");
        };
        let contacts = match req.contacts() {
            Ok(c) => c,
            Err(e) => return RegisterResponse::error(400, e.reason_phrase()),
        };
        let header_expires = match req.expires() {
            Ok(e) => e,
            Err(e) => return RegisterResponse::error(400, e.reason_phrase()),
        };
        let nat = req
            .top_via()
            .is_ok_and(|v| crate::sip::proxy::via_mismatch(&v, source));
        let mut bindings: Vec<Binding> = self
            .store
            .get(&aor)
            .into_iter()
            .filter(|b| b.expires_at_ns > now_ns)
            .collect();

        // A binding with the same Call-ID may only be changed by a higher CSeq (step 7).
        let out_of_order = |b: &Binding| b.call_id == call_id && cseq.seq <= b.cseq;

        match contacts {
            Contact::Star => {
                if header_expires != Some(0) {
                    return RegisterResponse::error(
                        400,
                        "Bad Request - Contact * requires Expires: 0",
                    );
                }
                if bindings.iter().any(out_of_order) {
                    return RegisterResponse::error(
                        500,
                        "Server Internal Error - Out-of-order CSeq",
                    );
                }
                self.store.put(&aor, Vec::new());
                return self.ok_listing(&[], now_ns);
            }
            Contact::List(list) if list.is_empty() => {
                // A query: list the current bindings.
                return self.ok_listing(&self.lookup(&aor, now_ns), now_ns);
            }
            Contact::List(list) => {
                for c in &list {
                    let requested = match c.params.get("expires") {
                        Some(v) => v.and_then(|v| parse_delta_seconds(v).ok()),
                        None => header_expires,
                    };
                    let secs = requested.unwrap_or(self.config.default_expires);
                    if secs != 0 && secs < self.config.min_expires {
                        return RegisterResponse {
                            status: 423,
                            reason: "Interval Too Brief",
                            headers: vec![("Min-Expires", self.config.min_expires.to_string())],
                        };
                    }
                    let secs = secs.min(self.config.max_expires);
                    let uri = c.uri.as_str();
                    let q = c
                        .params
                        .get("q")
                        .flatten()
                        .and_then(|q| parse_qvalue(q).ok());
                    let existing = bindings.iter().position(|b| same_contact(&b.uri, uri));
                    if let Some(i) = existing {
                        if out_of_order(&bindings[i]) {
                            return RegisterResponse::error(
                                500,
                                "Server Internal Error - Out-of-order CSeq",
                            );
                        }
                        if secs == 0 {
                            bindings.remove(i);
                            continue;
                        }
                    } else if secs == 0 {
                        continue;
                    }
                    let b = Binding {
                        uri: uri.to_owned(),
                        q,
                        call_id: call_id.to_owned(),
                        cseq: cseq.seq,
                        source,
                        expires_at_ns: now_ns.saturating_add(u64::from(secs) * NANOS_PER_SEC),
                        transport,
                        path: None,
                        outbound: c.params.get("reg-id").is_some()
                            && c.params.get("+sip.instance").is_some(),
                        nat,
                    };
                    match existing {
                        Some(i) => bindings[i] = b,
                        None => bindings.push(b),
                    }
                }
            }
        }
        if bindings.len() > self.config.max_bindings {
            return RegisterResponse::error(403, "Forbidden - Too many contacts");
        }
        let resp = self.ok_listing(&bindings, now_ns);
        self.store.put(&aor, bindings);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::check_request;

    const SEC: u64 = NANOS_PER_SEC;

    fn src() -> SocketAddr {
        "198.51.100.7:40123".parse().unwrap()
    }

    fn register(call_id: &str, cseq: u32, contact: &str, expires: Option<&str>) -> Vec<u8> {
        let mut s = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK{cseq}x;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@Example.COM>\r\n\
From: <sip:alice@example.com>;tag=f1\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n"
        );
        if !contact.is_empty() {
            s.push_str(&format!("Contact: {contact}\r\n"));
        }
        if let Some(e) = expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn run(r: &mut Registrar, raw: &[u8], now: u64) -> RegisterResponse {
        let m = Message::parse(raw).unwrap();
        check_request(&m).unwrap();
        r.handle_register(&m, src(), now)
    }

    const AOR: &str = "sip:alice@example.com";

    #[test]
    fn register_refresh_expire() {
        let mut r: Registrar = Registrar::default();
        let resp = run(
            &mut r,
            &register("c1", 1, "<sip:alice@10.0.0.2:5060>", Some("600")),
            0,
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.headers,
            vec![(
                "Contact",
                "<sip:alice@10.0.0.2:5060>;expires=600".to_string()
            )]
        );
        let b = r.lookup(AOR, 10 * SEC);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].source, src());
        assert_eq!(b[0].remaining_secs(10 * SEC), 590);
        // Refresh from the same Call-ID with a higher CSeq extends it.
        let resp = run(
            &mut r,
            &register("c1", 2, "<sip:alice@10.0.0.2:5060>", Some("600")),
            300 * SEC,
        );
        assert_eq!(resp.status, 200);
        assert_eq!(r.lookup(AOR, 800 * SEC).len(), 1);
        assert_eq!(r.lookup(AOR, 900 * SEC).len(), 0);
        assert_eq!(r.expire(900 * SEC), 1);
        assert!(r.store.is_empty());
    }

    #[test]
    fn several_contacts_params_and_listing() {
        let mut r: Registrar = Registrar::default();
        let resp = run(
            &mut r,
            &register(
                "c1",
                1,
                "<sip:a@10.0.0.2>;expires=120;q=0.5, <sip:a@10.0.0.3>;q=1",
                Some("300"),
            ),
            0,
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.headers,
            vec![
                (
                    "Contact",
                    "<sip:a@10.0.0.2>;expires=120;q=0.500".to_string()
                ),
                (
                    "Contact",
                    "<sip:a@10.0.0.3>;expires=300;q=1.000".to_string()
                ),
            ]
        );
        let l = r.lookup(AOR, SEC);
        assert_eq!(l[0].uri, "sip:a@10.0.0.3", "highest q first");
        // Another device adds a binding with its own Call-ID; the listing shows all three
        // with their remaining time.
        let resp = run(
            &mut r,
            &register("c2", 1, "<sip:a@10.0.0.4>", None),
            100 * SEC,
        );
        assert_eq!(resp.headers.len(), 3);
        assert_eq!(resp.headers[0].1, "<sip:a@10.0.0.2>;expires=20;q=0.500");
        assert_eq!(resp.headers[2].1, "<sip:a@10.0.0.4>;expires=3600");
        // A query (no Contact) lists without changing anything.
        let resp = run(&mut r, &register("c3", 1, "", None), 130 * SEC);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers.len(), 2, "the 120 s binding has expired");
    }

    #[test]
    fn expiry_bounds() {
        let mut r: Registrar = Registrar::default();
        let resp = run(
            &mut r,
            &register("c1", 1, "<sip:a@10.0.0.2>", Some("30")),
            0,
        );
        assert_eq!(resp.status, 423);
        assert_eq!(resp.headers, vec![("Min-Expires", "60".to_string())]);
        assert!(r.store.is_empty(), "nothing stored on 423");
        let resp = run(
            &mut r,
            &register("c1", 2, "<sip:a@10.0.0.2>;expires=99999", None),
            0,
        );
        assert_eq!(resp.headers[0].1, "<sip:a@10.0.0.2>;expires=7200");
        // Overlarge values fall back to the default (RFC 4475 §3.1.2.4).
        let resp = run(
            &mut r,
            &register("c1", 3, "<sip:a@10.0.0.2>;expires=280297596632815", None),
            0,
        );
        assert_eq!(resp.headers[0].1, "<sip:a@10.0.0.2>;expires=3600");
    }

    #[test]
    fn removal_single_and_star() {
        let mut r: Registrar = Registrar::default();
        run(
            &mut r,
            &register("c1", 1, "<sip:a@10.0.0.2>, <sip:a@10.0.0.3>", None),
            0,
        );
        let resp = run(
            &mut r,
            &register("c1", 2, "<sip:a@10.0.0.2>;expires=0", None),
            SEC,
        );
        assert_eq!(
            resp.headers,
            vec![("Contact", "<sip:a@10.0.0.3>;expires=3599".to_string())]
        );
        // `*` without Expires: 0 is refused; with it, everything goes.
        let resp = run(&mut r, &register("c1", 3, "*", None), SEC);
        assert_eq!(resp.status, 400);
        let resp = run(&mut r, &register("c1", 4, "*", Some("0")), SEC);
        assert_eq!((resp.status, resp.headers.len()), (200, 0));
        assert!(r.lookup(AOR, SEC).is_empty());
    }

    #[test]
    fn out_of_order_cseq_is_refused_atomically() {
        let mut r: Registrar = Registrar::default();
        run(&mut r, &register("c1", 5, "<sip:a@10.0.0.2>", None), 0);
        let resp = run(
            &mut r,
            &register(
                "c1",
                5,
                "<sip:a@10.0.0.9>, <sip:a@10.0.0.2>;expires=0",
                None,
            ),
            SEC,
        );
        assert_eq!(resp.status, 500);
        let l = r.lookup(AOR, SEC);
        assert_eq!(l.len(), 1, "no partial update");
        assert_eq!(l[0].uri, "sip:a@10.0.0.2");
        // A different Call-ID may replace it regardless of CSeq.
        let resp = run(
            &mut r,
            &register("c2", 1, "<sip:a@10.0.0.2>;expires=0", None),
            SEC,
        );
        assert_eq!((resp.status, resp.headers.len()), (200, 0));
    }

    #[test]
    fn aor_canonical_form_and_errors() {
        let u = Uri::parse("sip:%61lice@EXAMPLE.com:5070;transport=tcp").unwrap();
        assert_eq!(
            canonical_aor(&u).as_deref(),
            Some("sip:alice@example.com:5070")
        );
        assert_eq!(canonical_aor(&Uri::parse("tel:+123").unwrap()), None);
        let mut r: Registrar = Registrar::default();
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/rfc4475/unksm2.dat"
        ))
        .unwrap();
        let m = Message::parse(&raw).unwrap();
        assert_eq!(r.handle_register(&m, src(), 0).status, 404);
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        assert_eq!(r.handle_register(&m, src(), 0).status, 400);
    }

    #[test]
    fn response_bytes() {
        let mut r: Registrar = Registrar::default();
        let raw = register("c1", 1, "<sip:a@10.0.0.2>", None);
        let m = Message::parse(&raw).unwrap();
        let resp = r.handle_register(&m, src(), 0);
        let bytes = resp.to_bytes(&m, "reg1");
        let p = Message::parse(&bytes).unwrap();
        assert_eq!(p.status(), Some(200));
        assert_eq!(p.to_tag(), Some("reg1"));
        assert_eq!(p.cseq().unwrap().method, "REGISTER");
        match p.contacts().unwrap() {
            Contact::List(l) => assert_eq!(l[0].expires(), Ok(Some(3600))),
            Contact::Star => panic!("list expected"),
        }
    }

    #[test]
    fn too_many_bindings() {
        let mut r = Registrar::new(
            RegistrarConfig {
                max_bindings: 2,
                ..RegistrarConfig::default()
            },
            MemoryStore::default(),
        );
        let resp = run(
            &mut r,
            &register("c1", 1, "<sip:a@h1>, <sip:a@h2>, <sip:a@h3>", None),
            0,
        );
        assert_eq!(resp.status, 403);
        assert!(r.store.is_empty());
    }
}
