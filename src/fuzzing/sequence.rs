//! The structured target: the input decoded into a sequence of ng commands (offer, answer,
//! re-offer, delete, query, list, statistics, terminate, time passing) with tags, SDPs and
//! flags drawn from small sets, so that they meet the same calls, run against one session
//! manager over the fake data plane.

use std::collections::BTreeSet;

use super::input::Input;
use super::ng::{check_reply, manager};
use crate::control::bencode::Owned;
use crate::control::handler;
use crate::sdp::Sdp;
use crate::session::backend::MediaBackend;
use crate::session::fake::FakeBackend;
use crate::session::manager::SessionManager;
use crate::time::{Nanos, NANOS_PER_SEC};

/// Most commands one input runs.
const MAX_STEPS: usize = 96;

const CALLS: &[&str] = &["call-a", "call-b", "call-c", "call-d"];
const TAGS: &[&str] = &["tag-1", "tag-2", "tag-3", "tag-4", "tag-5"];
const ADDRS: &[&str] = &[
    "IP4 10.0.0.1",
    "IP4 192.0.2.5",
    "IP4 0.0.0.0",
    "IP6 2001:db8::1",
    "IP4 127.0.0.1",
];
const KINDS: &[&str] = &["audio", "video", "image"];
const PROTOS: &[&str] = &[
    "RTP/AVP",
    "RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
    "udptl",
    "RTP/AVPF",
];
const ATTRS: &[&str] = &[
    "a=rtcp-mux",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=candidate:1 1 UDP 2130706431 10.0.0.1 4000 typ host",
    "a=ice-ufrag:abcd",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "a=rtpmap:101 telephone-event/8000",
    "a=label:1",
    "a=mid:0",
];
const FLAGS: &[&str] = &[
    "trust-address",
    "symmetric",
    "asymmetric",
    "strict-source",
    "port-latching",
    "no-rtcp-attribute",
    "full-rtcp-attribute",
    "record-call",
    "early-media",
    "generate-mid",
    "reset",
    "all",
    "to-tag",
    "unidirectional",
];
const ICE: &[&str] = &["remove", "force", "default", "optional"];
const RTCP_MUX: &[&str] = &["offer", "accept", "demux", "require", "reject"];
const REPLACE: &[&str] = &[
    "origin",
    "session-connection",
    "session-name",
    "zero-address",
];
const DIRECTIONS: &[&str] = &["pub", "priv", "external", "internal", "nowhere"];

/// Runs the decoded commands. Invariants, after every step: nothing panicked; the reply is
/// well-formed (and an offer's or answer's SDP parses); every relay port is either free or
/// owned by exactly one open stream, and every open stream belongs to a live call or to a
/// deleted one lingering in its delete delay, once. At the end every call is deleted and
/// the delete delays run out: no call, stream or port is left.
pub fn check(data: &[u8]) {
    let _ = run_sequence(data);
}

/// What one sequence did (for tests that the decoding reaches the manager's real paths).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Replies with `result: ok` (or pong).
    pub ok: usize,
    /// Error replies.
    pub errors: usize,
    /// Most streams open at once.
    pub max_open: usize,
}

/// [`check`], returning what happened.
pub fn run_sequence(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let mut input = Input::new(data);
    let mut mgr = manager();
    let mut now: Nanos = 2 * NANOS_PER_SEC;
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        match op % 10 {
            0..=2 => {
                let req = offer_answer(&mut input, "offer");
                run(&mut mgr, &req, now, &mut out);
            }
            3 | 4 => {
                let req = offer_answer(&mut input, "answer");
                run(&mut mgr, &req, now, &mut out);
            }
            5 => {
                let req = delete(&mut input);
                run(&mut mgr, &req, now, &mut out);
            }
            6 => {
                let call = input.pick(CALLS).unwrap_or("call-a");
                let req = Owned::dict().with("command", "query").with("call-id", call);
                run(&mut mgr, &req, now, &mut out);
            }
            7 => {
                let cmd = input
                    .pick(&["list", "statistics", "ping"])
                    .unwrap_or("list");
                run(&mut mgr, &Owned::dict().with("command", cmd), now, &mut out);
            }
            8 => {
                let mut req = Owned::dict().with("command", "terminate");
                if input.bool() {
                    req.insert("call-id", input.pick(CALLS).unwrap_or("call-a"));
                } else {
                    req.insert("flags", Owned::from(vec![Owned::str("all")]));
                }
                run(&mut mgr, &req, now, &mut out);
            }
            _ => {
                // Time passes: up to ~76 s, past the delete delay and the media timeout.
                now += u64::from(input.byte()) * 300_000_000;
                let _ = mgr.tick(now);
            }
        }
        audit(&mgr);
        out.max_open = out.max_open.max(mgr.backend().open_count());
    }
    for call in mgr.list(usize::MAX) {
        let req = Owned::dict()
            .with("command", "delete")
            .with("call-id", &*call);
        run(&mut mgr, &req, now, &mut out);
        audit(&mgr);
    }
    now += 3600 * NANOS_PER_SEC;
    let _ = mgr.tick(now);
    audit(&mgr);
    let owned = mgr.owned_streams();
    assert_eq!(mgr.call_count(), 0, "calls left after deleting every call");
    assert!(
        owned.live.is_empty() && owned.lingering.is_empty(),
        "streams left: {owned:?}"
    );
    assert_eq!(mgr.backend().open_count(), 0, "open streams left");
    assert_eq!(mgr.backend().port_usage().0, 0, "ports left in use");
    out
}

/// One request through the parser and the handler, as the ng server runs it.
fn run(mgr: &mut SessionManager<FakeBackend>, req: &Owned, now: Nanos, out: &mut Outcome) {
    let body = req.to_bencode();
    let (reply, fmt) = handler::handle_body(mgr, &body, now);
    check_reply(&reply, fmt);
    match reply.get("result").and_then(Owned::as_str) {
        Some("error") => out.errors += 1,
        _ => out.ok += 1,
    }
    if let Some(sdp) = reply.get("sdp").and_then(Owned::as_bytes) {
        if let Err(e) = Sdp::parse(sdp) {
            panic!(
                "reply SDP does not parse ({e}):\n{}",
                String::from_utf8_lossy(sdp)
            );
        }
    }
}

fn offer_answer(input: &mut Input<'_>, command: &str) -> Owned {
    let call = input.pick(CALLS).unwrap_or("call-a");
    let from = input.pick(TAGS).unwrap_or("tag-1");
    let mut req = Owned::dict()
        .with("command", command)
        .with("call-id", call)
        .with("from-tag", from);
    let shape = input.byte();
    if command == "answer" || shape & 1 != 0 {
        req.insert("to-tag", input.pick(TAGS).unwrap_or("tag-2"));
    }
    if shape & 2 != 0 {
        req.insert("via-branch", "z9hG4bK-fz");
    }
    if shape & 4 != 0 {
        let n = input.below(4);
        let flags: Vec<Owned> = (0..n)
            .filter_map(|_| input.pick(FLAGS))
            .map(Owned::str)
            .collect();
        req.insert("flags", Owned::from(flags));
    }
    if shape & 8 != 0 {
        req.insert("ICE", input.pick(ICE).unwrap_or("remove"));
    }
    if shape & 16 != 0 {
        let v = input.pick(RTCP_MUX).unwrap_or("offer");
        req.insert("rtcp-mux", Owned::from(vec![Owned::str(v)]));
    }
    if shape & 32 != 0 {
        let v = input.pick(REPLACE).unwrap_or("origin");
        req.insert("replace", Owned::from(vec![Owned::str(v)]));
    }
    if shape & 64 != 0 {
        let a = input.pick(DIRECTIONS).unwrap_or("pub");
        let b = input.pick(DIRECTIONS).unwrap_or("priv");
        req.insert("direction", Owned::from(vec![Owned::str(a), Owned::str(b)]));
    }
    if shape & 128 != 0 {
        req.insert("label", "caller");
    }
    req.insert("sdp", sdp(input).into_bytes());
    req
}

fn delete(input: &mut Input<'_>) -> Owned {
    let mut req = Owned::dict()
        .with("command", "delete")
        .with("call-id", input.pick(CALLS).unwrap_or("call-a"));
    let shape = input.byte();
    if shape & 1 != 0 {
        req.insert("from-tag", input.pick(TAGS).unwrap_or("tag-1"));
    }
    if shape & 2 != 0 {
        req.insert("to-tag", input.pick(TAGS).unwrap_or("tag-2"));
    }
    if shape & 4 != 0 {
        req.insert("via-branch", "z9hG4bK-fz");
    }
    if shape & 8 != 0 {
        req.insert("delete-delay", i64::from(input.byte() % 8));
    }
    req
}

/// An SDP of 0 to 3 media sections with addresses, ports, protocols and attributes drawn
/// from the tables above (sometimes without a session `c=`, sometimes rejected media).
fn sdp(input: &mut Input<'_>) -> String {
    let addr = input.pick(ADDRS).unwrap_or("IP4 10.0.0.1");
    let version = input.byte();
    let mut s = format!("v=0\r\no=- 1 {version} IN {addr}\r\ns=-\r\n");
    if input.byte() % 4 != 0 {
        s.push_str(&format!("c=IN {addr}\r\n"));
    }
    s.push_str("t=0 0\r\n");
    let media = input.below(4);
    for _ in 0..media {
        let kind = input.pick(KINDS).unwrap_or("audio");
        let proto = input.pick(PROTOS).unwrap_or("RTP/AVP");
        let port = match input.byte() {
            0..=24 => 0,
            b => 4000 + 2 * u16::from(b),
        };
        let fmt = if proto == "udptl" { "t38" } else { "0 8 101" };
        s.push_str(&format!("m={kind} {port} {proto} {fmt}\r\n"));
        let attrs = input.byte();
        if attrs & 1 != 0 {
            let a = input.pick(ADDRS).unwrap_or("IP4 10.0.0.1");
            s.push_str(&format!("c=IN {a}\r\n"));
        }
        if attrs & 2 != 0 {
            s.push_str(&format!("a=rtcp:{}\r\n", port.saturating_add(1)));
        }
        for bit in 2..8 {
            if attrs & (1 << bit) != 0 {
                if let Some(a) = input.pick(ATTRS) {
                    s.push_str(a);
                    s.push_str("\r\n");
                }
            }
        }
    }
    s
}

/// The port and stream invariants of one moment.
fn audit(mgr: &SessionManager<FakeBackend>) {
    let owned = mgr.owned_streams();
    let mut held: Vec<_> = owned.live.iter().chain(&owned.lingering).copied().collect();
    held.sort();
    let n = held.len();
    held.dedup();
    assert_eq!(held.len(), n, "a stream held twice: {owned:?}");
    let open: Vec<_> = mgr.backend().streams().map(|(id, _)| *id).collect();
    assert_eq!(open, held, "open streams differ from the streams held");
    // Ports are per local address: the same number may be owned once on each.
    let mut ports = BTreeSet::new();
    for (_, s) in mgr.backend().streams() {
        for (pool, p) in s.pools.iter().zip([s.opened.a_ports, s.opened.b_ports]) {
            let addr = mgr.backend().pool_addr(*pool);
            assert!(addr.is_some(), "a stream's pool has no address");
            assert!(
                ports.insert((addr, p.rtp)),
                "port {} owned twice on {addr:?}",
                p.rtp
            );
        }
    }
    let (used, _) = mgr.backend().port_usage();
    assert_eq!(used, ports.len(), "ports in use that no stream owns");
    for u in mgr.backend().address_usage() {
        let owned = ports.iter().filter(|(a, _)| *a == Some(u.addr)).count();
        assert_eq!(
            u.used_pairs, owned,
            "ports in use on {} that no stream owns",
            u.addr
        );
    }
    assert_eq!(mgr.stream_count(), n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoding reaches the real paths: an offer and an answer open streams, a delete
    /// and the delete delay close them, and the invariants hold throughout.
    #[test]
    fn an_offer_answer_delete_sequence_opens_and_closes_streams() {
        // offer call-a tag-1 (no extras), SDP: IP4 10.0.0.1, session c=, one audio RTP/AVP
        // on 4000+2*100, no attributes.
        // (op, call, tag, shape, addr, o= version, c=, media count, kind, proto, port, attrs)
        let offer = [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 100, 0];
        // answer call-a from tag-1, to tag-2 (after the shape byte), same SDP shape.
        let answer = [3, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 101, 0];
        let data: Vec<u8> = offer.iter().chain(&answer).copied().collect();
        let out = run_sequence(&data);
        // The offer, the answer, and the final delete of the call.
        assert_eq!((out.ok, out.errors), (3, 0), "{out:?}");
        assert_eq!(out.max_open, 1, "{out:?}");
    }

    #[test]
    fn random_sequences_keep_the_invariants() {
        let mut x: u32 = 21;
        for _ in 0..200 {
            let data: Vec<u8> = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            check(&data);
        }
    }
}
