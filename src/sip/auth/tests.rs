//! The policy and the digest exchange, without sockets: messages are parsed from text and
//! answered the way a phone would.

use super::*;
use crate::sip::parse::Message;
use crate::sip::uri::Host;

const S: u64 = 1_000_000_000;
const DOMAIN: &str = "example.org";
const AOR: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const REG_URI: &str = "sip:example.org";

fn ours(u: &SipUri<'_>) -> bool {
    matches!(u.host, Host::Name(n) if n.eq_ignore_ascii_case(DOMAIN))
}

fn our_route(u: &SipUri<'_>) -> bool {
    u.host_raw == "192.0.2.1"
}

fn users() -> UserFile {
    let text = [
        passwd_line("alice", DOMAIN, "alice-pw"),
        passwd_line("bob", DOMAIN, "bob-pw"),
    ]
    .join("\n");
    UserFile::parse(&text).unwrap()
}

fn auth(algorithms: Vec<Algorithm>) -> Authenticator {
    let cfg = AuthConfig {
        algorithms,
        trusted: vec!["198.51.100.0/24".parse().unwrap()],
        ..AuthConfig::default()
    };
    Authenticator::new(cfg, [42; 32], users())
}

fn md5() -> Authenticator {
    auth(vec![Algorithm::Md5])
}

fn src() -> IpAddr {
    "203.0.113.7".parse().unwrap()
}

/// A request; `extra` holds whole header lines.
fn request(method: &str, ruri: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=f1\r\nTo: <{to}>\r\nCall-ID: c1\r\n\
         CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// A REGISTER from alice's phone for `to`, with a credentials line or none.
fn register(to: &str, creds: Option<&str>) -> String {
    let extra = creds.map_or(String::new(), |c| format!("Authorization: {c}\r\n"));
    request("REGISTER", REG_URI, AOR, to, &extra)
}

fn check(a: &mut Authenticator, text: &str, from: IpAddr, now: u64) -> AuthVerdict {
    let msg = Message::parse(text.as_bytes()).unwrap();
    let req = AuthRequest::from_message(&msg, from, &ours, &our_route);
    a.check(&req, now)
}

/// What a phone sends back for the first challenge of `verdict` it supports.
fn answer(
    verdict: &AuthVerdict,
    supported: &[Algorithm],
    (user, password): (&str, &str),
    (method, uri): (&str, &str),
    nc: u32,
) -> String {
    let AuthVerdict::Challenge { values, .. } = verdict else {
        panic!("not a challenge: {verdict:?}");
    };
    let value = values
        .iter()
        .find(|v| supported.contains(&Challenge::parse(v).unwrap().2))
        .expect("a supported algorithm");
    client::answer_challenge(value, user, password, method, uri, nc, "cn0").unwrap()
}

/// Challenges a REGISTER for `to` at `now` and answers it as `who` (MD5, count `nc`).
fn registered(a: &mut Authenticator, to: &str, who: (&str, &str), nc: u32, now: u64) -> String {
    let v = check(a, &register(to, None), src(), now);
    let creds = answer(&v, &[Algorithm::Md5], who, ("REGISTER", REG_URI), nc);
    register(to, Some(&creds))
}

fn is_challenge(v: &AuthVerdict, want: u16) -> bool {
    matches!(v, AuthVerdict::Challenge { status, .. } if *status == want)
}

#[test]
fn register_challenge_then_accept_with_either_algorithm() {
    for supported in [vec![Algorithm::Sha256], vec![Algorithm::Md5]] {
        let mut a = auth(vec![Algorithm::Sha256, Algorithm::Md5]);
        let v = check(&mut a, &register(AOR, None), src(), S);
        let AuthVerdict::Challenge {
            status,
            header,
            values,
        } = &v
        else {
            panic!("{v:?}");
        };
        assert_eq!((*status, *header), (401, "WWW-Authenticate"));
        assert!(values[0].contains("algorithm=SHA-256") && values[1].contains("algorithm=MD5"));
        let creds = answer(
            &v,
            &supported,
            ("alice", "alice-pw"),
            ("REGISTER", REG_URI),
            1,
        );
        let with = register(AOR, Some(&creds));
        assert_eq!(check(&mut a, &with, src(), 2 * S), AuthVerdict::Pass);
        assert_eq!(a.stats().accepted, 1);
    }
}

#[test]
fn wrong_password_replay_and_other_source_are_challenged_again() {
    let mut a = md5();
    let wrong = registered(&mut a, AOR, ("alice", "guess"), 1, S);
    assert!(is_challenge(&check(&mut a, &wrong, src(), S), 401));
    assert!(a.last_failed());
    assert_eq!(a.stats().failed, 1);

    let v = check(&mut a, &register(AOR, None), src(), S);
    let alice = ("alice", "alice-pw");
    let creds = |nc| answer(&v, &[Algorithm::Md5], alice, ("REGISTER", REG_URI), nc);
    let good = register(AOR, Some(&creds(1)));
    // Captured and sent from elsewhere: the nonce is bound to the source.
    let elsewhere: IpAddr = "203.0.113.99".parse().unwrap();
    assert!(is_challenge(&check(&mut a, &good, elsewhere, S), 401));
    assert_eq!(check(&mut a, &good, src(), S), AuthVerdict::Pass);
    assert!(!a.last_failed());
    // The same nonce count again: a replay.
    assert!(is_challenge(&check(&mut a, &good, src(), S), 401));
    assert_eq!(a.stats().replayed, 1);
    // A higher count with the same nonce is fine.
    let next = register(AOR, Some(&creds(2)));
    assert_eq!(check(&mut a, &next, src(), S), AuthVerdict::Pass);
}

#[test]
fn expired_nonce_is_stale_not_a_failure() {
    let mut a = md5();
    let good = registered(&mut a, AOR, ("alice", "alice-pw"), 1, S);
    let later = check(&mut a, &good, src(), 400 * S);
    let AuthVerdict::Challenge { values, .. } = &later else {
        panic!("{later:?}");
    };
    assert!(values[0].ends_with("stale=true"));
    assert!(!a.last_failed());
    assert_eq!(a.stats().stale, 1);
}

#[test]
fn foreign_aor_and_binding_query_for_another_user_are_forbidden() {
    let mut a = md5();
    // alice authenticates (correctly) but registers bob's AoR — or asks for its bindings
    // (the request is the same without Contact).
    let msg = registered(&mut a, BOB, ("alice", "alice-pw"), 1, S);
    assert!(matches!(
        check(&mut a, &msg, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    assert_eq!(a.stats().forbidden, 1);
}

#[test]
fn local_from_must_authenticate_as_itself() {
    let mut a = md5();
    let v = check(&mut a, &request("INVITE", BOB, AOR, BOB, ""), src(), S);
    assert!(matches!(
        &v,
        AuthVerdict::Challenge {
            status: 407,
            header: "Proxy-Authenticate",
            ..
        }
    ));
    let with = |method: &str, who: (&str, &str), nc: u32, header: &str| {
        let c = answer(&v, &[Algorithm::Md5], who, (method, BOB), nc);
        request(method, BOB, AOR, BOB, &format!("{header}: {c}\r\n"))
    };
    // Authenticated as alice, From alice: passes.
    let ok = with("INVITE", ("alice", "alice-pw"), 1, "Proxy-Authorization");
    assert_eq!(check(&mut a, &ok, src(), S), AuthVerdict::Pass);
    // Authenticated as bob but From alice (forged From): forbidden.
    let forged = with("MESSAGE", ("bob", "bob-pw"), 2, "Proxy-Authorization");
    assert!(matches!(
        check(&mut a, &forged, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    // Credentials in the wrong header (Authorization on an INVITE) do not count.
    let wrong_hdr = with("INVITE", ("alice", "alice-pw"), 3, "Authorization");
    assert!(is_challenge(&check(&mut a, &wrong_hdr, src(), S), 407));
}

#[test]
fn foreign_callers_trusted_peers_and_dialogs() {
    let mut a = md5();
    // A call from another domain to a local user: no challenge.
    let inbound = request("INVITE", BOB, "sip:carol@elsewhere.net", BOB, "");
    assert_eq!(check(&mut a, &inbound, src(), S), AuthVerdict::Pass);
    // Foreign to foreign: not relayed.
    let x = "sip:x@elsewhere.net";
    let relay = request("INVITE", x, "sip:carol@elsewhere.net", x, "");
    assert!(matches!(
        check(&mut a, &relay, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    // A trusted peer skips the challenge even for a local From.
    let trusted: IpAddr = "198.51.100.20".parse().unwrap();
    let inv = request("INVITE", BOB, AOR, BOB, "");
    assert_eq!(check(&mut a, &inv, trusted, S), AuthVerdict::Pass);
    assert_eq!(a.stats().trusted, 1);
    // An in-dialog request through our Record-Route passes; one with a To tag but no
    // Route to us is treated as new (so a made-up To tag does not bypass the check).
    let dialog = format!(
        "BYE {BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n\
         Route: <sip:192.0.2.1;lr>\r\nFrom: <{AOR}>;tag=f\r\nTo: <{BOB}>;tag=t\r\nCall-ID: c\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(check(&mut a, &dialog, src(), S), AuthVerdict::Pass);
    let fake = dialog.replace("Route: <sip:192.0.2.1;lr>\r\n", "");
    assert!(is_challenge(&check(&mut a, &fake, src(), S), 407));
}

#[test]
fn unknown_user_and_garbage_credentials_fail_without_panic() {
    let mut a = md5();
    let mallory = "sip:mallory@example.org";
    let v = check(
        &mut a,
        &request("REGISTER", REG_URI, mallory, mallory, ""),
        src(),
        S,
    );
    let creds = answer(
        &v,
        &[Algorithm::Md5],
        ("mallory", "x"),
        ("REGISTER", REG_URI),
        1,
    );
    let extra = format!("Authorization: {creds}\r\n");
    let msg = request("REGISTER", REG_URI, mallory, mallory, &extra);
    assert!(is_challenge(&check(&mut a, &msg, src(), S), 401));
    assert!(a.last_failed());
    for junk in [
        "Digest",
        "Digest realm=\"example.org\"",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Digest realm=\"example.org\", nonce=\"zz\", username=\"alice\", uri=\"x\", response=\"00\"",
    ] {
        let msg = register(AOR, Some(junk));
        assert!(is_challenge(&check(&mut a, &msg, src(), S), 401), "{junk}");
    }
}

#[test]
fn reloading_users_keeps_nonces_and_changes_who_can_log_in() {
    let mut a = md5();
    let v = check(&mut a, &register(AOR, None), src(), S);
    a.replace_store(UserFile::parse(&passwd_line("alice", DOMAIN, "new-pw")).unwrap());
    let old = answer(
        &v,
        &[Algorithm::Md5],
        ("alice", "alice-pw"),
        ("REGISTER", REG_URI),
        1,
    );
    assert!(is_challenge(
        &check(&mut a, &register(AOR, Some(&old)), src(), S),
        401
    ));
    let new = answer(
        &v,
        &[Algorithm::Md5],
        ("alice", "new-pw"),
        ("REGISTER", REG_URI),
        2,
    );
    assert_eq!(
        check(&mut a, &register(AOR, Some(&new)), src(), S),
        AuthVerdict::Pass
    );
}

#[test]
fn nonce_table_stays_bounded_under_many_clients() {
    let cfg = AuthConfig {
        algorithms: vec![Algorithm::Md5],
        max_nonces: 50,
        ..AuthConfig::default()
    };
    let mut a = Authenticator::new(cfg, [1; 32], users());
    let mut sent = Vec::new();
    for i in 0..200u64 {
        let msg = registered(&mut a, AOR, ("alice", "alice-pw"), 1, S + i);
        assert_eq!(
            check(&mut a, &msg, src(), S + i),
            AuthVerdict::Pass,
            "client {i}"
        );
        assert!(a.nonces_tracked() <= 50);
        sent.push(msg);
    }
    // Every client got in although four times the table's size of nonces were in use; the
    // requests whose nonces were forgotten cannot be replayed: they are challenged again.
    assert_eq!(a.stats().accepted, 200);
    for msg in &sent {
        assert!(is_challenge(&check(&mut a, msg, src(), S + 300), 401));
    }
    assert_eq!(a.stats().accepted, 200);
}
