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
    let used: Vec<u64> = st.interface_ports.iter().map(|p| p.used).collect();
    assert_eq!(used, vec![2, 2, 0]);
    // Each address has the fake's whole range (30000-30999: 500 pairs).
    assert_eq!(st.interface_ports[0].total, 1000);
    assert_eq!(st.interface_ports[1].total, 1000);
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

/// Two addresses under one name, 4 pairs each: each address takes two calls (a pair per side),
/// the fifth call is refused, and a delete frees the ports of the address its call was on,
/// which the next call then finds even when its turn names the full one.
#[test]
fn each_address_of_a_name_has_its_own_ports() {
    let cfg = ManagerConfig {
        interfaces: parse_interfaces(&["pool/10.0.0.1", "pool/10.0.0.2"]).unwrap(),
        port_min: 30000,
        port_max: 30007,
        ..ManagerConfig::default()
    };
    let mut m = SessionManager::new(FakeBackend::new(30000, 30007).unwrap(), cfg, S);
    let audio = OFFER.replace("m=video 6002 RTP/AVP 96\r\n", "");
    let o = NegotiateOptions::default();
    let offer = |m: &mut SessionManager<FakeBackend>, id: &str| {
        let s = Signal {
            call_id: id,
            ..sig("a", None, &audio)
        };
        m.offer(&s, &o, S).map(|n| c_line(&n.sdp))
    };
    let mut seen = Vec::new();
    for n in 0..4 {
        seen.push(offer(&mut m, &format!("call{n}")).unwrap());
    }
    assert_eq!(
        seen,
        [
            "c=IN IP4 10.0.0.1",
            "c=IN IP4 10.0.0.2",
            "c=IN IP4 10.0.0.1",
            "c=IN IP4 10.0.0.2"
        ]
    );
    // The same port numbers on both addresses.
    let mut ports: Vec<u16> = m
        .backend()
        .streams()
        .flat_map(|(_, s)| [s.opened.a_ports.rtp, s.opened.b_ports.rtp])
        .collect();
    ports.sort_unstable();
    assert_eq!(
        ports,
        [30000, 30000, 30002, 30002, 30004, 30004, 30006, 30006]
    );
    assert!(matches!(
        offer(&mut m, "call4"),
        Err(SessionError::OutOfPorts)
    ));
    let used = |m: &SessionManager<FakeBackend>| -> Vec<(u64, u64)> {
        m.statistics(S)
            .interface_ports
            .iter()
            .map(|p| (p.used, p.total))
            .collect()
    };
    assert_eq!(used(&m), [(8, 8), (8, 8)]);
    // call1 was on 10.0.0.2: its four ports (two pairs) are free there again.
    let del = DeleteRequest {
        call_id: "call1",
        from_tag: None,
        to_tag: None,
        via_branch: None,
        delay_ns: Some(0),
        reason: EndReason::Delete,
    };
    m.delete(&del, false, S).unwrap();
    m.tick(2 * S);
    assert_eq!(used(&m), [(8, 8), (4, 8)]);
    // The next call's turn names 10.0.0.1, which is full: it goes to 10.0.0.2.
    assert_eq!(offer(&mut m, "call5").unwrap(), "c=IN IP4 10.0.0.2");
    assert_eq!(used(&m), [(8, 8), (8, 8)]);
}
