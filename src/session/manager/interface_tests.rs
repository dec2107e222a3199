//! Named interfaces through the manager: each side bound on the interface `direction` names
//! for it, the SDP to each side naming that side's address, the answer's swap, round-robin.

use super::tests::{sig, ANSWER, OFFER, S};
use super::*;
use crate::session::fake::FakeBackend;
use crate::session::interfaces::parse_interfaces;
use crate::session::negotiate::NegotiateOptions;

fn two_networks() -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: parse_interfaces(&[
            "internal/10.0.0.1",
            "external/192.168.50.1!203.0.113.1",
            "external/192.168.50.2!203.0.113.2",
        ])
        .unwrap(),
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(30000, 30999).unwrap(), cfg, S)
}

fn dir(names: &[&str]) -> NegotiateOptions {
    NegotiateOptions {
        direction: names.iter().map(|n| n.to_string()).collect(),
        ..NegotiateOptions::default()
    }
}

fn c_line(sdp: &[u8]) -> String {
    let text = String::from_utf8(sdp.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with("c="))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn each_side_is_bound_and_named_on_its_own_interface() {
    let mut m = two_networks();
    let o = dir(&["internal", "external"]);
    let offer = m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    // The callee is on the external network: it is told the advertised external address.
    assert_eq!(c_line(&offer.sdp), "c=IN IP4 203.0.113.1");
    for (_, s) in m.backend().streams() {
        assert_eq!(
            s.spec.locals,
            [
                Some("10.0.0.1".parse().unwrap()),
                Some("192.168.50.1".parse().unwrap())
            ]
        );
    }
    // The answer carries the same direction (from-tag side first, as Kamailio sends it):
    // the caller is told its internal address.
    let answer = m.answer(&sig("a", Some("b"), ANSWER), &o, S).unwrap();
    assert_eq!(c_line(&answer.sdp), "c=IN IP4 10.0.0.1");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let q = m.query("c").unwrap();
    let seen: Vec<(String, Option<String>, Option<String>)> = q
        .tags
        .iter()
        .map(|t| {
            let m0 = &t.medias[0];
            (
                t.tag.clone(),
                m0.local_addr.map(|a| a.to_string()),
                m0.interface.clone(),
            )
        })
        .collect();
    assert!(seen.contains(&("a".into(), Some("10.0.0.1".into()), Some("internal".into()))));
    assert!(seen.contains(&(
        "b".into(),
        Some("192.168.50.1".into()),
        Some("external".into())
    )));
    // Only the audio line stays relayed after the answer: 2 ports on each side's address.
    let st = m.statistics(S);
    assert_eq!(st.interface_ports, vec![2, 2, 0]);
}

#[test]
fn an_answer_naming_other_sides_is_told_where_media_stays() {
    let mut m = two_networks();
    m.offer(&sig("a", None, OFFER), &dir(&["internal", "external"]), S)
        .unwrap();
    // Reversed names in the answer: the answerer (to-tag side) would be internal.
    let answer = m
        .answer(
            &sig("a", Some("b"), ANSWER),
            &dir(&["external", "internal"]),
            S,
        )
        .unwrap();
    assert_eq!(c_line(&answer.sdp), "c=IN IP4 10.0.0.1");
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(answer.warnings[0].contains("chosen at the offer"));
}

#[test]
fn a_callee_reoffer_keeps_each_side_on_its_network() {
    let mut m = two_networks();
    let o = dir(&["internal", "external"]);
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), ANSWER), &o, S).unwrap();
    // A re-INVITE from the callee without any direction: the caller stays internal.
    let re = m
        .offer(
            &sig("b", Some("a"), ANSWER),
            &NegotiateOptions::default(),
            2 * S,
        )
        .unwrap();
    assert_eq!(c_line(&re.sdp), "c=IN IP4 10.0.0.1");
}

#[test]
fn calls_take_the_addresses_of_a_name_in_turn() {
    let mut m = two_networks();
    let o = dir(&["internal", "external"]);
    let mut seen = Vec::new();
    for n in 0..4 {
        let id = format!("call{n}");
        let s = Signal {
            call_id: &id,
            ..sig("a", None, OFFER)
        };
        seen.push(c_line(&m.offer(&s, &o, S).unwrap().sdp));
    }
    assert_eq!(
        seen,
        [
            "c=IN IP4 203.0.113.1",
            "c=IN IP4 203.0.113.2",
            "c=IN IP4 203.0.113.1",
            "c=IN IP4 203.0.113.2"
        ]
    );
    // The unnamed default: the first name (internal here) for both sides.
    let s = Signal {
        call_id: "plain",
        ..sig("a", None, OFFER)
    };
    let out = m.offer(&s, &NegotiateOptions::default(), S).unwrap();
    assert_eq!(c_line(&out.sdp), "c=IN IP4 10.0.0.1");
}
