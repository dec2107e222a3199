//! The ng keys that choose interfaces, through the handler over the fake data plane:
//! `interface` (one name for both sides, where `direction` names none), `from-interface` and
//! `to-interface` (one side each), their mixes, as key and as `rtpp-flags` token, and
//! `query` naming each side's interface.

use rtpanchor::control::bencode::Owned;
use rtpanchor::control::handler::handle_body;
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::interfaces::parse_interfaces;
use rtpanchor::session::manager::{ManagerConfig, SessionManager};
use rtpanchor::time::NANOS_PER_SEC as SEC;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n";

fn mgr() -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: parse_interfaces(&[
            "internal/10.0.0.1",
            "external/203.0.113.1",
            "dmz/192.0.2.1",
        ])
        .unwrap(),
        port_min: 30000,
        port_max: 30099,
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(30000, 30099).unwrap(), cfg, SEC)
}

fn run(m: &mut SessionManager<FakeBackend>, req: &Owned) -> Owned {
    handle_body(m, &req.to_bencode(), SEC).0
}

fn offer(call: &str) -> Owned {
    Owned::dict()
        .with("command", "offer")
        .with("call-id", call)
        .with("from-tag", "a")
        .with("sdp", OFFER)
}

fn c_line(r: &Owned) -> String {
    assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
    let sdp = r.get("sdp").and_then(Owned::as_str).unwrap_or_default();
    sdp.lines()
        .find(|l| l.starts_with("c="))
        .unwrap_or_default()
        .to_owned()
}

/// The local addresses side A and side B of the call's one stream are bound on.
fn locals(m: &SessionManager<FakeBackend>, call: &str) -> [String; 2] {
    let (_, s) = m
        .backend()
        .streams()
        .find(|(_, s)| &*s.spec.call_id == call)
        .unwrap_or_else(|| panic!("no stream of {call}"));
    s.spec
        .locals
        .map(|l| l.map(|a| a.to_string()).unwrap_or_default())
}

#[test]
fn interface_names_both_sides() {
    let mut m = mgr();
    let r = run(&mut m, &offer("one").with("interface", "external"));
    assert_eq!(c_line(&r), "c=IN IP4 203.0.113.1");
    assert_eq!(locals(&m, "one"), ["203.0.113.1", "203.0.113.1"]);
    // The answer (without any name) tells the caller the same network's address.
    let a = run(
        &mut m,
        &Owned::dict()
            .with("command", "answer")
            .with("call-id", "one")
            .with("from-tag", "a")
            .with("to-tag", "b")
            .with("sdp", ANSWER),
    );
    assert_eq!(c_line(&a), "c=IN IP4 203.0.113.1");
    // query names the interface of each side.
    let q = run(
        &mut m,
        &Owned::dict()
            .with("command", "query")
            .with("call-id", "one"),
    );
    let text = q.to_string();
    assert!(text.contains("external"), "{q}");
    assert!(!text.contains("internal"), "{q}");
}

#[test]
fn direction_wins_and_interface_fills_the_unnamed_side() {
    let mut m = mgr();
    // Both named by from-/to-interface: `interface` changes nothing.
    let r = run(
        &mut m,
        &offer("both")
            .with("from-interface", "internal")
            .with("to-interface", "external")
            .with("interface", "dmz"),
    );
    assert_eq!(c_line(&r), "c=IN IP4 203.0.113.1");
    assert_eq!(locals(&m, "both"), ["10.0.0.1", "203.0.113.1"]);
    // Only the offerer's side named: the receiver's comes from `interface`.
    let r = run(
        &mut m,
        &offer("from")
            .with("from-interface", "internal")
            .with("interface", "dmz"),
    );
    assert_eq!(c_line(&r), "c=IN IP4 192.0.2.1");
    assert_eq!(locals(&m, "from"), ["10.0.0.1", "192.0.2.1"]);
    // Only the receiver's side named.
    let r = run(&mut m, &offer("to").with("to-interface", "external"));
    assert_eq!(c_line(&r), "c=IN IP4 203.0.113.1");
    assert_eq!(locals(&m, "to"), ["10.0.0.1", "203.0.113.1"]);
    // As rtpp-flags tokens, as Kamailio's module passes them.
    let r = run(
        &mut m,
        &offer("tokens").with("rtpp-flags", "from-interface=dmz interface=external"),
    );
    assert_eq!(c_line(&r), "c=IN IP4 203.0.113.1");
    assert_eq!(locals(&m, "tokens"), ["192.0.2.1", "203.0.113.1"]);
}

#[test]
fn an_unknown_interface_is_warned_once_and_the_default_used() {
    let mut m = mgr();
    let r = run(&mut m, &offer("x").with("interface", "lab"));
    // No `default` name: the first configured one.
    assert_eq!(c_line(&r), "c=IN IP4 10.0.0.1");
    assert_eq!(
        r.get("warning").and_then(Owned::as_str),
        Some("Unknown interface lab: default interface used")
    );
    // A name that is not text is refused.
    let r = run(&mut m, &offer("y").with("interface", Owned::list()));
    assert_eq!(
        r.get("result").and_then(Owned::as_str),
        Some("error"),
        "{r}"
    );
}
