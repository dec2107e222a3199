//! The policy and the digest exchange, without sockets: messages are parsed from text and
//! answered the way a phone would.

use super::*;
use crate::sip::parse::Message;
use crate::sip::uri::Host;

const S: u64 = 1_000_000_000;
const DOMAIN: &str = "example.org";

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

fn src() -> IpAddr {
    "203.0.113.7".parse().unwrap()
}

/// A request with optional credentials header lines.
fn request(method: &str, ruri: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=f1\r\nTo: <{to}>\r\nCall-ID: c1\r\n\
         CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
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
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let AuthVerdict::Challenge { values, .. } = verdict else {
        panic!("not a challenge: {verdict:?}");
    };
    let (realm, nonce, alg, _) = values
        .iter()
        .map(|v| Challenge::parse(v).unwrap())
        .find(|(_, _, a, _)| supported.contains(a))
        .expect("a supported algorithm");
    let ha1 = digest::ha1(alg, user, &realm, password);
    let response = digest::response(alg, &ha1, &nonce, Some((nc, "cn0")), method, uri);
    Credentials {
        username: user.into(),
        realm: realm.into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: response.into(),
        algorithm: alg,
        opaque: None,
        qop: Some((Qop::Auth, nc, "cn0".into())),
    }
    .emit()
}

const AOR: &str = "sip:alice@example.org";
const REG_URI: &str = "sip:example.org";

#[test]
fn register_challenge_then_accept_with_either_algorithm() {
    for supported in [vec![Algorithm::Sha256], vec![Algorithm::Md5]] {
        let mut a = auth(vec![Algorithm::Sha256, Algorithm::Md5]);
        let bare = request("REGISTER", REG_URI, AOR, AOR, "");
        let v = check(&mut a, &bare, src(), S);
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
        let creds = answer(&v, &supported, "alice", "alice-pw", "REGISTER", REG_URI, 1);
        let with = request(
            "REGISTER",
            REG_URI,
            AOR,
            AOR,
            &format!("Authorization: {creds}\r\n"),
        );
        assert_eq!(
            check(&mut a, &with, src(), 2 * S),
            AuthVerdict::Pass,
            "{supported:?}"
        );
        assert_eq!(a.stats().accepted, 1);
    }
}

#[test]
fn wrong_password_replay_and_other_source_are_challenged_again() {
    let mut a = auth(vec![Algorithm::Md5]);
    let v = check(
        &mut a,
        &request("REGISTER", REG_URI, AOR, AOR, ""),
        src(),
        S,
    );
    let wrong = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "guess",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {wrong}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &msg, src(), S),
        AuthVerdict::Challenge { status: 401, .. }
    ));
    assert!(a.last_failed());
    assert_eq!(a.stats().failed, 1);

    let good = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "alice-pw",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {good}\r\n"),
    );
    // Captured and sent from elsewhere: the nonce is bound to the source.
    let elsewhere: IpAddr = "203.0.113.99".parse().unwrap();
    assert!(matches!(
        check(&mut a, &msg, elsewhere, S),
        AuthVerdict::Challenge { .. }
    ));
    assert_eq!(check(&mut a, &msg, src(), S), AuthVerdict::Pass);
    assert!(!a.last_failed());
    // The same nonce count again: a replay.
    let v2 = check(&mut a, &msg, src(), S);
    assert!(matches!(v2, AuthVerdict::Challenge { status: 401, .. }));
    assert_eq!(a.stats().replayed, 1);
    // A higher count with the same nonce is fine.
    let next = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "alice-pw",
        "REGISTER",
        REG_URI,
        2,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {next}\r\n"),
    );
    assert_eq!(check(&mut a, &msg, src(), S), AuthVerdict::Pass);
}

#[test]
fn expired_nonce_is_stale_not_a_failure() {
    let mut a = auth(vec![Algorithm::Md5]);
    let v = check(
        &mut a,
        &request("REGISTER", REG_URI, AOR, AOR, ""),
        src(),
        S,
    );
    let good = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "alice-pw",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {good}\r\n"),
    );
    let later = check(&mut a, &msg, src(), 400 * S);
    let AuthVerdict::Challenge { values, .. } = &later else {
        panic!("{later:?}");
    };
    assert!(values[0].ends_with("stale=true"));
    assert!(!a.last_failed());
    assert_eq!(a.stats().stale, 1);
}

#[test]
fn foreign_aor_and_binding_query_for_another_user_are_forbidden() {
    let mut a = auth(vec![Algorithm::Md5]);
    let bob_aor = "sip:bob@example.org";
    // alice authenticates (correctly) but registers bob's AoR — or asks for its bindings
    // (the request is the same without Contact).
    let v = check(
        &mut a,
        &request("REGISTER", REG_URI, AOR, bob_aor, ""),
        src(),
        S,
    );
    let creds = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "alice-pw",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        bob_aor,
        &format!("Authorization: {creds}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &msg, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    assert_eq!(a.stats().forbidden, 1);
}

#[test]
fn local_from_must_authenticate_as_itself() {
    let mut a = auth(vec![Algorithm::Md5]);
    let bob = "sip:bob@example.org";
    let inv = request("INVITE", bob, AOR, bob, "");
    let v = check(&mut a, &inv, src(), S);
    assert!(matches!(
        &v,
        AuthVerdict::Challenge {
            status: 407,
            header: "Proxy-Authenticate",
            ..
        }
    ));
    // Authenticated as alice, From alice: passes.
    let creds = answer(&v, &[Algorithm::Md5], "alice", "alice-pw", "INVITE", bob, 1);
    let ok = request(
        "INVITE",
        bob,
        AOR,
        bob,
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    assert_eq!(check(&mut a, &ok, src(), S), AuthVerdict::Pass);
    // Authenticated as bob but From alice (forged From): forbidden.
    let creds = answer(&v, &[Algorithm::Md5], "bob", "bob-pw", "MESSAGE", bob, 2);
    let forged = request(
        "MESSAGE",
        bob,
        AOR,
        bob,
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &forged, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    // Credentials in the wrong header (Authorization on an INVITE) do not count.
    let creds = answer(&v, &[Algorithm::Md5], "alice", "alice-pw", "INVITE", bob, 3);
    let wrong_hdr = request(
        "INVITE",
        bob,
        AOR,
        bob,
        &format!("Authorization: {creds}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &wrong_hdr, src(), S),
        AuthVerdict::Challenge { status: 407, .. }
    ));
}

#[test]
fn foreign_callers_trusted_peers_and_dialogs() {
    let mut a = auth(vec![Algorithm::Md5]);
    let bob = "sip:bob@example.org";
    // A call from another domain to a local user: no challenge.
    let inbound = request("INVITE", bob, "sip:carol@elsewhere.net", bob, "");
    assert_eq!(check(&mut a, &inbound, src(), S), AuthVerdict::Pass);
    // Foreign to foreign: not relayed.
    let relay = request(
        "INVITE",
        "sip:x@elsewhere.net",
        "sip:carol@elsewhere.net",
        "sip:x@elsewhere.net",
        "",
    );
    assert!(matches!(
        check(&mut a, &relay, src(), S),
        AuthVerdict::Forbidden(_)
    ));
    // A trusted peer skips the challenge even for a local From.
    let trusted: IpAddr = "198.51.100.20".parse().unwrap();
    let inv = request("INVITE", bob, AOR, bob, "");
    assert_eq!(check(&mut a, &inv, trusted, S), AuthVerdict::Pass);
    assert_eq!(a.stats().trusted, 1);
    // An in-dialog request through our Record-Route passes; one with a To tag but no
    // Route to us is treated as new (so a made-up To tag does not bypass the check).
    let dialog = format!(
        "BYE {bob} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n\
         Route: <sip:192.0.2.1;lr>\r\nFrom: <{AOR}>;tag=f\r\nTo: <{bob}>;tag=t\r\nCall-ID: c\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(check(&mut a, &dialog, src(), S), AuthVerdict::Pass);
    let fake = dialog.replace("Route: <sip:192.0.2.1;lr>\r\n", "");
    assert!(matches!(
        check(&mut a, &fake, src(), S),
        AuthVerdict::Challenge { status: 407, .. }
    ));
}

#[test]
fn unknown_user_and_garbage_credentials_fail_without_panic() {
    let mut a = auth(vec![Algorithm::Md5]);
    let v = check(
        &mut a,
        &request(
            "REGISTER",
            REG_URI,
            "sip:mallory@example.org",
            "sip:mallory@example.org",
            "",
        ),
        src(),
        S,
    );
    let creds = answer(
        &v,
        &[Algorithm::Md5],
        "mallory",
        "x",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        "sip:mallory@example.org",
        "sip:mallory@example.org",
        &format!("Authorization: {creds}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &msg, src(), S),
        AuthVerdict::Challenge { status: 401, .. }
    ));
    assert!(a.last_failed());
    for junk in ["Digest", "Digest realm=\"example.org\"", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Digest realm=\"example.org\", nonce=\"zz\", username=\"alice\", uri=\"x\", response=\"00\""] {
        let msg = request("REGISTER", REG_URI, AOR, AOR, &format!("Authorization: {junk}\r\n"));
        assert!(matches!(check(&mut a, &msg, src(), S), AuthVerdict::Challenge { status: 401, .. }), "{junk}");
    }
}

#[test]
fn reloading_users_keeps_nonces_and_changes_who_can_log_in() {
    let mut a = auth(vec![Algorithm::Md5]);
    let v = check(
        &mut a,
        &request("REGISTER", REG_URI, AOR, AOR, ""),
        src(),
        S,
    );
    a.replace_store(UserFile::parse(&passwd_line("alice", DOMAIN, "new-pw")).unwrap());
    let old = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "alice-pw",
        "REGISTER",
        REG_URI,
        1,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {old}\r\n"),
    );
    assert!(matches!(
        check(&mut a, &msg, src(), S),
        AuthVerdict::Challenge { .. }
    ));
    let new = answer(
        &v,
        &[Algorithm::Md5],
        "alice",
        "new-pw",
        "REGISTER",
        REG_URI,
        2,
    );
    let msg = request(
        "REGISTER",
        REG_URI,
        AOR,
        AOR,
        &format!("Authorization: {new}\r\n"),
    );
    assert_eq!(check(&mut a, &msg, src(), S), AuthVerdict::Pass);
}

#[test]
fn nonce_table_stays_bounded_under_many_clients() {
    let cfg = AuthConfig {
        algorithms: vec![Algorithm::Md5],
        max_nonces: 50,
        ..AuthConfig::default()
    };
    let mut a = Authenticator::new(cfg, [1; 32], users());
    for i in 0..200u32 {
        let v = check(
            &mut a,
            &request("REGISTER", REG_URI, AOR, AOR, ""),
            src(),
            S + u64::from(i),
        );
        let c = answer(
            &v,
            &[Algorithm::Md5],
            "alice",
            "alice-pw",
            "REGISTER",
            REG_URI,
            1,
        );
        let msg = request(
            "REGISTER",
            REG_URI,
            AOR,
            AOR,
            &format!("Authorization: {c}\r\n"),
        );
        let _ = check(&mut a, &msg, src(), S + u64::from(i));
    }
    assert!(a.nonces_tracked() <= 50);
    assert_eq!(a.stats().accepted, 50);
}
