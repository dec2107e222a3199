//! Presence state and stored messages survive a crash of the relay (`kill -9`, then a new
//! process on the same store), through the running relay over UDP on loopback ports
//! 14700-14999, with the embedded store (`--sip-state-dir`) and with Redis (`--redis`, a
//! real `redis-server` started here):
//! - a MESSAGE stored for an offline user is delivered on the user's next REGISTER, with its
//!   original Date and body;
//! - a publication (PIDF, "away") is the state a new SUBSCRIBE sees, and its entity tag
//!   still matches a SIP-If-Match;
//! - a subscription made before the crash gets the NOTIFY of the next PUBLISH, in its old
//!   dialog (same Call-ID and tags, a higher CSeq).
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::presence::{body, header, is_notify, pidf, status, Phone, WAIT};
use common::sip::register_bytes;
use common::store::{redis_keys, start_redis, CrashableRelay};
use common::TempDir;
use rtpanchor::sip::Message;

const LO: &str = "127.0.0.1";
const DATE: &str = "Sat, 05 Dec 2026 10:00:00 GMT";

/// The ports of one relay and its phones (all inside 14700-14999).
struct Ports {
    sip: u16,
    ng: u16,
    media: (u16, u16),
    /// alice, bob, carol, dave.
    phones: [u16; 4],
}

fn relay_args(p: &Ports, store: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--interface",
        LO,
        "--listen-sip",
        &format!("{LO}:{}", p.sip),
        "--port-min",
        &p.media.0.to_string(),
        "--port-max",
        &p.media.1.to_string(),
        "--num-threads",
        "1",
        "--no-kernel-forwarding",
        "--domain",
        "example.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(store.iter().cloned());
    a
}

/// What the first relay left for the second: alice's first NOTIFY and bob's entity tag.
struct Before {
    notify: Vec<u8>,
    etag: String,
}

/// Before the crash: alice watches bob, bob publishes "away", alice's MESSAGE to carol
/// (not registered) is stored.
fn before_crash(alice: &Phone, bob: &Phone) -> Before {
    let sub = alice.request(
        "SUBSCRIBE",
        "sip:bob@example.com",
        "sub-alice",
        1,
        "Event: presence\r\nAccept: application/pidf+xml\r\nExpires: 600\r\n",
    );
    // The relay may still be binding SIP: the first request is retransmitted until answered.
    let ok = alice.transact(&sub);
    assert_eq!(status(&ok), Some(200), "{}", String::from_utf8_lossy(&ok));
    let first = alice.wait("first NOTIFY", is_notify);
    assert!(body(&first).contains("closed"), "{}", body(&first));
    let publ = bob.request_with(
        "PUBLISH",
        "sip:bob@example.com",
        "pub-bob",
        1,
        "Event: presence\r\nExpires: 600\r\n",
        Some(("application/pidf+xml", &pidf("bob", "away"))),
    );
    let ok = bob.transact(&publ);
    assert_eq!(status(&ok), Some(200));
    let etag = header(&ok, "SIP-ETag").expect("SIP-ETag");
    let n = alice.wait("NOTIFY away", |m| {
        is_notify(m) && String::from_utf8_lossy(m.body()).contains("<rpid:away/>")
    });
    let msg = alice.request_with(
        "MESSAGE",
        "sip:carol@example.com",
        "msg-1",
        1,
        &format!("Date: {DATE}\r\n"),
        Some(("text/plain", "are you back?")),
    );
    assert_eq!(status(&alice.transact(&msg)), Some(202));
    Before { notify: n, etag }
}

/// After the restart: the publication, the subscription and the message are all there.
fn after_restart(before: &Before, phones: [&Phone; 4]) {
    let [alice, bob, carol, dave] = phones;
    // A new watcher sees bob's published state.
    let sub = dave.request(
        "SUBSCRIBE",
        "sip:bob@example.com",
        "sub-dave",
        1,
        "Event: presence\r\nExpires: 600\r\n",
    );
    assert_eq!(status(&dave.transact(&sub)), Some(200));
    let n = dave.wait("NOTIFY", is_notify);
    assert!(body(&n).contains("<rpid:away/>"), "{}", body(&n));
    // bob's entity tag still matches; alice is NOTIFYed in her old dialog.
    let publ = bob.request_with(
        "PUBLISH",
        "sip:bob@example.com",
        "pub-bob",
        2,
        &format!("Event: presence\r\nSIP-If-Match: {}\r\n", before.etag),
        Some(("application/pidf+xml", &pidf("bob", "busy"))),
    );
    let ok = bob.transact(&publ);
    assert_eq!(status(&ok), Some(200), "{}", String::from_utf8_lossy(&ok));
    let n = alice.wait("NOTIFY busy after the restart", |m| {
        is_notify(m) && String::from_utf8_lossy(m.body()).contains("<rpid:busy/>")
    });
    let (old, new) = (
        Message::parse(&before.notify).unwrap(),
        Message::parse(&n).unwrap(),
    );
    assert_eq!(new.call_id(), old.call_id());
    assert_eq!(new.from_tag(), old.from_tag());
    assert_eq!(new.to_tag(), old.to_tag());
    assert!(new.cseq().unwrap().seq > old.cseq().unwrap().seq);
    // carol registers: the stored message arrives with its original Date.
    let reg = register_bytes(
        "carol",
        &[&format!("sip:carol@{}", carol.addr)],
        &carol.addr.to_string(),
        "reg-carol",
        1,
    );
    assert_eq!(status(&carol.transact(&reg)), Some(200));
    let m = carol.wait("stored MESSAGE", |m| m.method() == Some("MESSAGE"));
    assert_eq!(body(&m), "are you back?");
    assert_eq!(header(&m, "Date").as_deref(), Some(DATE));
    assert!(header(&m, "From")
        .unwrap()
        .contains("sip:alice@example.com"));
}

/// Both halves around a `kill -9`, with `store` arguments naming the store.
fn crash_and_restore(dir: &Path, p: &Ports, store: &[String], persisted: &dyn Fn() -> bool) {
    let [a, b, c, d] = p.phones;
    let (alice, bob) = (Phone::new("alice", a, p.sip), Phone::new("bob", b, p.sip));
    let (carol, dave) = (Phone::new("carol", c, p.sip), Phone::new("dave", d, p.sip));
    let log = dir.join("relay.log");
    let mut relay = CrashableRelay::start(&relay_args(p, store), p.ng, &log);
    let before = before_crash(&alice, &bob);
    // Written behind (every 100 ms): wait until the store has it (bounded).
    let deadline = Instant::now() + WAIT;
    while !persisted() {
        assert!(
            Instant::now() < deadline,
            "presence state not written in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.kill9();
    let _relay = CrashableRelay::start(&relay_args(p, store), p.ng, &log);
    after_restart(&before, [&alice, &bob, &carol, &dave]);
}

#[test]
fn presence_and_messages_survive_kill9_with_the_embedded_store() {
    let dir = TempDir::new("rtpanchor-presence-restart").unwrap();
    let state = dir.path().join("state");
    let p = Ports {
        sip: 14710,
        ng: 14711,
        media: (14800, 14849),
        phones: [14720, 14721, 14722, 14723],
    };
    let store = vec!["--sip-state-dir".to_owned(), state.display().to_string()];
    // The database file is held by the relay: the server takes changes every 100 ms and
    // the writer commits them at once, so a second is ten times what they need.
    let persisted = || {
        std::thread::sleep(Duration::from_secs(1));
        true
    };
    crash_and_restore(dir.path(), &p, &store, &persisted);
    assert!(state.join("presence.redb").is_file());
}

#[test]
fn presence_and_messages_survive_kill9_with_redis() {
    let dir = TempDir::new("rtpanchor-presence-redis").unwrap();
    let redis_port = 14712;
    let mut redis = start_redis(redis_port, dir.path());
    let p = Ports {
        sip: 14730,
        ng: 14731,
        media: (14900, 14999),
        phones: [14740, 14741, 14742, 14743],
    };
    let store = vec![
        "--redis".to_owned(),
        format!("redis://127.0.0.1:{redis_port}/0"),
    ];
    // The publication, alice's subscription and carol's messages, each by its own key
    // (a count is not enough: with Redis the front also writes bob's watchers record, so
    // three keys can be there before carol's messages are).
    let persisted = || {
        [
            "presentity:sip:bob@",
            "subscription:",
            "messages:sip:carol@",
        ]
        .iter()
        .all(|k| redis_keys(redis_port, &format!("rtpanchor:presence:*{k}*")) >= 1)
    };
    crash_and_restore(dir.path(), &p, &store, &persisted);
    redis.stop(Duration::from_secs(2));
}
