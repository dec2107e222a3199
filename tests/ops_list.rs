//! ng `list` with more call-ids than one UDP datagram carries (sans-IO: the ng server's
//! message handling over the FakeBackend, no sockets). Over UDP the reply holds as many
//! call-ids as fit, oldest first, and a warning that says the list was cut; over TCP (no
//! datagram limit) the same request returns every call.

use std::sync::{Arc, Mutex};

use rtpanchor::control::bencode::{self, Owned};
use rtpanchor::control::ng::MAX_UDP_REPLY;
use rtpanchor::server::ng::{NgServerConfig, NgShared};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::manager::{ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;

const CALLS: usize = 2_500;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

fn call_id(i: usize) -> String {
    format!("list-test-call-{i:06}-0123456789abcdef@pbx.example.org")
}

fn body(req: &Owned) -> Vec<u8> {
    req.to_bencode()
}

#[test]
fn list_larger_than_a_datagram_is_cut_with_a_warning() {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("lo", "127.0.0.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    // The fake hands out port numbers without binding anything; 4 ports per call.
    let backend = FakeBackend::new(10_000, 20_999).unwrap();
    let manager = Arc::new(Mutex::new(SessionManager::new(backend, cfg, 1)));
    let shared = NgShared::new(manager.clone(), &NgServerConfig::default());
    for i in 0..CALLS {
        let req = Owned::dict()
            .with("command", "offer")
            .with("call-id", call_id(i).as_str())
            .with("from-tag", "a")
            .with("sdp", OFFER);
        // Creation order is list order: one call per nanosecond.
        let reply = shared
            .process(format!("o{i}").as_bytes(), &body(&req), 10 + i as u64)
            .expect("offer reply");
        assert!(
            reply.windows(8).any(|w| w == b"result2:"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(manager.lock().unwrap().call_count(), CALLS);

    let list = Owned::dict()
        .with("command", "list")
        .with("limit", CALLS as i64);
    let mut dgram = b"l1 ".to_vec();
    dgram.extend_from_slice(&body(&list));
    let now = 10 + CALLS as u64;
    let reply = shared
        .process_datagram(&dgram, now)
        .expect("a reply, never silence");
    assert!(reply.len() <= MAX_UDP_REPLY, "{} bytes", reply.len());
    let doc = bencode::decode(&reply[3..]).expect("bencode reply");
    assert_eq!(doc.get("result").and_then(|v| v.as_str()), Some("ok"));
    let calls = doc.get("calls").and_then(|v| v.as_list()).unwrap();
    assert!(
        calls.len() > 100 && calls.len() < CALLS,
        "{} call-ids",
        calls.len()
    );
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.as_str(), Some(call_id(i).as_str()), "oldest first");
    }
    let warning = doc.get("warning").and_then(|v| v.as_str()).unwrap_or("");
    assert!(
        warning.contains(&format!("truncated to {} of {CALLS}", calls.len()))
            && warning.contains("TCP"),
        "{warning}"
    );

    // The stream transport has no datagram bound: every call-id.
    let full = shared.process(b"l2", &body(&list), now).expect("TCP reply");
    let doc = bencode::decode(&full[3..]).unwrap();
    let all = doc.get("calls").and_then(|v| v.as_list()).unwrap();
    assert_eq!(all.len(), CALLS);
    assert!(doc.get("warning").is_none());
}
