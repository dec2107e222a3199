//! The sans-IO proxy bridging two networks (named interfaces, `--sip-network`): the media
//! interface of each side comes from where that side's peer is, a request that crosses
//! from one network to the other is record-routed twice (RFC 3261 §16.6 item 4) with our
//! Via on the outbound network, one that stays inside a network once, and in-dialog
//! requests from either side have both our Route entries removed (§16.4, §16.12).

#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult, NoMedia};
use rtpanchor::sip::networks::{parse_rule, SipAddr, SipNetworks};
use rtpanchor::sip::proxy::Proxy;
use rtpanchor::sip::transport::Transmit;
use rtpanchor::sip::HeaderName;

fn lan_phone() -> std::net::SocketAddr {
    addr("10.0.0.10:5060")
}
fn lan_phone2() -> std::net::SocketAddr {
    addr("10.0.0.11:5060")
}
fn net_phone() -> std::net::SocketAddr {
    addr("203.0.113.20:5060")
}

const RR_OUT_EXTERNAL: &str = "<sip:203.0.113.1:5060;lr>, <sip:10.0.0.1:5060;lr>";
const RR_OUT_INTERNAL: &str = "<sip:10.0.0.1:5060;lr>, <sip:203.0.113.1:5060;lr>";

/// internal 10.0.0.1 (subnet 10.0.0.0/24), external 203.0.113.1 (203.0.113.0/24), plus
/// `rules`; `default` is internal.
fn bridge(rules: &[&str]) -> Proxy {
    let rules = rules.iter().map(|r| parse_rule(r).unwrap()).collect();
    let mut n = SipNetworks::new("internal", rules);
    for (name, ip, subnet) in [
        ("internal", "10.0.0.1:5060", "10.0.0.0/24"),
        ("external", "203.0.113.1:5060", "203.0.113.0/24"),
    ] {
        n.add_address(
            SipAddr {
                name: name.into(),
                local: addr(ip),
                advertised: addr(ip),
            },
            Some(subnet.parse().unwrap()),
        );
    }
    let mut c = rtpanchor::sip::proxy::ProxyConfig::new(addr("10.0.0.1:5060"));
    c.domains = vec!["example.com".to_string()];
    c.networks = n;
    proxy_with(c)
}

/// Records the op and the interface names of every media step.
#[derive(Default)]
struct Dirs(Vec<(MediaOp, Option<[String; 2]>)>);

impl MediaHook for Dirs {
    fn media(&mut self, ctx: &MediaCtx<'_>, _body: &[u8], _now: u64) -> MediaResult {
        self.0.push((
            ctx.op,
            ctx.direction.map(|[a, b]| [a.to_string(), b.to_string()]),
        ));
        match ctx.op {
            MediaOp::Delete => MediaResult::Unchanged,
            _ => MediaResult::NewBody(sdp("192.0.2.99", 40000)),
        }
    }
}

fn names(a: &str, b: &str) -> Option<[String; 2]> {
    Some([a.to_string(), b.to_string()])
}

fn record_route(t: &Transmit) -> Vec<String> {
    msg(t)
        .headers
        .iter()
        .filter(|h| h.kind == HeaderName::RecordRoute)
        .map(|h| h.value.to_string())
        .collect()
}

fn routes(t: &Transmit) -> usize {
    msg(t)
        .headers
        .iter()
        .filter(|h| h.kind == HeaderName::Route)
        .count()
}

fn forwarded<'a>(out: &'a [Transmit], m: &str) -> &'a Transmit {
    out.iter()
        .find(|t| method(t).as_deref() == Some(m))
        .unwrap_or_else(|| panic!("no {m} forwarded: {out:?}"))
}

/// Bob registered from the internet at 203.0.113.20.
fn register_net_bob(p: &mut Proxy) {
    register(
        p,
        "bob",
        &["sip:bob@203.0.113.20:5060"],
        net_phone(),
        "203.0.113.20:5060",
    );
}

/// Carol registered on the LAN at 10.0.0.11.
fn register_lan_carol(p: &mut Proxy) {
    let contact = "sip:carol@10.0.0.11:5060";
    register(p, "carol", &[contact], lan_phone2(), "10.0.0.11:5060");
}

/// Bob registers from the internet and a LAN phone calls him with SDP: the caller and
/// what the proxy sent.
fn lan_calls_net(p: &mut Proxy, m: &mut Dirs, call_id: &str) -> (Uac, Vec<Transmit>) {
    register_net_bob(p);
    let mut a = Uac::new(lan_phone(), "10.0.0.10:5060", call_id);
    let out = feed(p, &a.invite(Some(&sdp("10.0.0.10", 7000))), a.addr, MS, m);
    (a, out)
}

#[test]
fn each_side_gets_the_interface_of_its_peers_network() {
    let mut p = bridge(&[]);
    let mut m = Dirs::default();
    let (_, out) = lan_calls_net(&mut p, &mut m, "n1");
    let inv = forwarded(&out, "INVITE");
    assert_eq!(inv.to, net_phone());
    // The offer: its sender (the LAN caller) on internal, its receiver on external.
    assert_eq!(m.0, vec![(MediaOp::Offer, names("internal", "external"))]);
    let b = Uas::new(net_phone(), "b1", "sip:bob@203.0.113.20:5060");
    let ok = b.respond_sdp(&inv.bytes, 200, &sdp("203.0.113.20", 8000));
    feed(&mut p, &ok, net_phone(), 2 * MS, &mut m);
    // The answer from the internet callee: the from-tag side (the caller) still first.
    assert_eq!(m.0[1], (MediaOp::Answer, names("internal", "external")));

    // The other way round: a call from the internet to a LAN phone.
    register_lan_carol(&mut p);
    let mut m = Dirs::default();
    let mut c = Uac::new(net_phone(), "203.0.113.20:5060", "n2").calling("sip:carol@example.com");
    let out = feed(
        &mut p,
        &c.invite(Some(&sdp("203.0.113.20", 8002))),
        c.addr,
        3 * MS,
        &mut m,
    );
    assert_eq!(forwarded(&out, "INVITE").to, lan_phone2());
    assert_eq!(m.0, vec![(MediaOp::Offer, names("external", "internal"))]);

    // `--sip-network` wins over the subnets: a peer outside both subnets is external here,
    // and internal (the default) without the rule.
    for (rules, want) in [
        (
            &["external=0.0.0.0/0", "internal=10.0.0.0/8"][..],
            "external",
        ),
        (&[][..], "internal"),
    ] {
        let mut p = bridge(rules);
        register(
            &mut p,
            "dave",
            &["sip:dave@198.51.100.9:5060"],
            addr("198.51.100.9:5060"),
            "198.51.100.9:5060",
        );
        let mut m = Dirs::default();
        let mut a = Uac::new(lan_phone(), "10.0.0.10:5060", "n3").calling("sip:dave@example.com");
        feed(
            &mut p,
            &a.invite(Some(&sdp("10.0.0.10", 7000))),
            a.addr,
            MS,
            &mut m,
        );
        assert_eq!(
            m.0,
            vec![(MediaOp::Offer, names("internal", want))],
            "{rules:?}"
        );
    }
}

#[test]
fn a_crossing_request_is_record_routed_twice_with_our_outbound_via() {
    let mut p = bridge(&[]);
    register_net_bob(&mut p);
    let mut a = Uac::new(lan_phone(), "10.0.0.10:5060", "rr1");
    let out = feed(&mut p, &a.invite(None), a.addr, MS, &mut NoMedia);
    // The 100 goes back to the caller as before.
    let trying = out.iter().find(|t| status(t) == Some(100)).unwrap();
    assert_eq!(trying.to, lan_phone());
    let inv = forwarded(&out, "INVITE");
    assert_eq!(inv.to, net_phone());
    // The entry facing the callee (external) first, then the one facing the caller.
    assert_eq!(record_route(inv), vec![RR_OUT_EXTERNAL.to_string()]);
    assert!(
        vias(inv)[0].starts_with("SIP/2.0/UDP 203.0.113.1:5060;branch="),
        "{:?}",
        vias(inv)
    );
    // The 200 (to our external Via) goes back to the caller.
    let ok = Uas::new(net_phone(), "b1", "sip:bob@203.0.113.20:5060").respond(&inv.bytes, 200);
    let out = feed(&mut p, &ok, net_phone(), 2 * MS, &mut NoMedia);
    assert_eq!(to(&out, lan_phone()).len(), 1);
    assert_eq!(status(to(&out, lan_phone())[0]), Some(200));

    // The reverse crossing.
    register_lan_carol(&mut p);
    let mut c = Uac::new(net_phone(), "203.0.113.20:5060", "rr2").calling("sip:carol@example.com");
    let out = feed(&mut p, &c.invite(None), c.addr, 3 * MS, &mut NoMedia);
    let inv = forwarded(&out, "INVITE");
    assert_eq!(record_route(inv), vec![RR_OUT_INTERNAL.to_string()]);
    assert!(vias(inv)[0].starts_with("SIP/2.0/UDP 10.0.0.1:5060;branch="));
}

#[test]
fn a_request_inside_one_network_is_record_routed_once() {
    let mut p = bridge(&[]);
    register_lan_carol(&mut p);
    let mut a = Uac::new(lan_phone(), "10.0.0.10:5060", "one1").calling("sip:carol@example.com");
    let out = feed(&mut p, &a.invite(None), a.addr, MS, &mut NoMedia);
    let inv = forwarded(&out, "INVITE");
    assert_eq!(
        record_route(inv),
        vec!["<sip:10.0.0.1:5060;lr>".to_string()]
    );
    assert!(vias(inv)[0].starts_with("SIP/2.0/UDP 10.0.0.1:5060;branch="));
    // Without bridging nothing changes: a proxy with no networks is record-routed once.
    let mut plain = new_proxy();
    register_bob(&mut plain);
    let out = feed(
        &mut plain,
        &Uac::alice("one2").invite(None),
        alice(),
        MS,
        &mut NoMedia,
    );
    assert_eq!(
        record_route(forwarded(&out, "INVITE")),
        vec!["<sip:127.0.0.1:5060;lr>".to_string()]
    );
}

#[test]
fn bye_from_either_side_passes_both_route_entries() {
    for callee_hangs_up in [false, true] {
        let mut p = bridge(&[]);
        let mut m = Dirs::default();
        let (mut a, out) = lan_calls_net(&mut p, &mut m, "bye1");
        let inv = forwarded(&out, "INVITE");
        let b = Uas::new(net_phone(), "b1", "sip:bob@203.0.113.20:5060");
        let ok = b.respond_sdp(&inv.bytes, 200, &sdp("203.0.113.20", 8000));
        let out = feed(&mut p, &ok, net_phone(), 2 * MS, &mut m);
        a.learn(&to(&out, lan_phone())[0].bytes);
        // The caller's route set: the entry facing it first.
        assert_eq!(
            a.route,
            vec!["<sip:10.0.0.1:5060;lr>", "<sip:203.0.113.1:5060;lr>"]
        );
        let out = feed(&mut p, &a.ack(None), a.addr, 3 * MS, &mut m);
        let ack = forwarded(&out, "ACK");
        assert_eq!((ack.to, routes(ack)), (net_phone(), 0), "{}", text(ack));
        assert!(vias(ack)[0].starts_with("SIP/2.0/UDP 203.0.113.1:5060;"));
        // The callee's route set is the Record-Route as received: external first.
        let callee_bye = "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bKbyeb\r\n\
Route: <sip:203.0.113.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
Call-ID: bye1\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n";
        let lan = Uas::new(lan_phone(), "a1", "sip:alice@10.0.0.10:5060");
        let net = Uas::new(net_phone(), "b1", "sip:bob@203.0.113.20:5060");
        let (bye, from, dest, our_via) = if callee_hangs_up {
            let b = callee_bye.as_bytes().to_vec();
            (b, net_phone(), lan_phone(), "10.0.0.1:5060")
        } else {
            (a.bye(), lan_phone(), net_phone(), "203.0.113.1:5060")
        };
        let out = feed(&mut p, &bye, from, 4 * MS, &mut m);
        let fwd = forwarded(&out, "BYE");
        assert_eq!((fwd.to, routes(fwd)), (dest, 0), "{}", text(fwd));
        assert!(vias(fwd)[0].starts_with(&format!("SIP/2.0/UDP {our_via};")));
        let peer = if callee_hangs_up { &lan } else { &net };
        let out = feed(&mut p, &peer.respond(&fwd.bytes, 200), dest, 5 * MS, &mut m);
        assert_eq!(status(to(&out, from)[0]), Some(200));
        assert_eq!(m.0.last().map(|c| c.0), Some(MediaOp::Delete));
    }
}
