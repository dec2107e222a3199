//! Presence and messages shared by two SIP fronts (two rtpanchor processes with the built-in
//! proxy, presence served) on one real `redis-server`:
//! - a PUBLISH at front A reaches a watcher subscribed at front B (a NOTIFY from B with the
//!   composed PIDF document), a modification and a removal too; a new SUBSCRIBE at B gets
//!   A's state in its first NOTIFY; a REGISTER at A turns B's watcher's state `open`; the
//!   watcher at B is listed in the watcher information (`presence.winfo`) bob gets from A;
//! - a MESSAGE through B to a user registered at A is delivered; one to a user registered
//!   nowhere is stored at B (202) and delivered, once, when the user registers at A;
//! - a message stored at B reaches a phone registered at A over TCP through A, on the
//!   phone's connection;
//! - with Redis stopped each front serves alone; a PUBLISH at A made meanwhile reaches B's
//!   watcher once Redis is back (restarted empty).
//!
//! How fast a PUBLISH at A is NOTIFYed by B is measured (printed as `propagation`): the
//! PUBLISH sent → the NOTIFY at the watcher.
//!
//! Port block 19000-19499, a block of 100 per test: Redis +0, ng A +1, ng B +2, SIP A +3,
//! SIP B +4, phones +10..+19; relay media A +20..+59, B +60..+99 (`common::store::Fronts`).
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::presence::{body, header, is_notify, pidf, pidf_status, status, Phone};
use common::sip::{register_bytes, Uas};
use common::store::{redis_keys, start_redis, Fronts as Bed};
use common::tcp_phone::TcpPhone;
use rtpanchor::sip::Message;

/// A phone on port `+n` of the block, sending to `front` by default.
fn phone(bed: &Bed, user: &'static str, n: u16, front: SocketAddr) -> Phone {
    Phone::new(user, bed.base + n, front.port())
}

const BOB: &str = "sip:bob@example.com";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `watcher` subscribes to bob through its front: 200, and the first NOTIFY's body.
fn watch_bob(watcher: &Phone) -> String {
    let sub = watcher.request(
        "SUBSCRIBE",
        BOB,
        &format!("sub-{}", watcher.user),
        1,
        "Event: presence\r\nAccept: application/pidf+xml\r\nExpires: 600\r\n",
    );
    let ok = watcher.transact(&sub);
    assert_eq!(status(&ok), Some(200), "{}", text(&ok));
    body(&watcher.wait("first NOTIFY", is_notify))
}

/// bob's PUBLISH (CSeq `cseq`, `extra` header lines, a PIDF `doc`) through `front`: the
/// entity tag of the 200.
fn publish(bob: &Phone, front: SocketAddr, cseq: u32, extra: &str, doc: Option<&str>) -> String {
    let req = bob.request_with(
        "PUBLISH",
        BOB,
        "pub-bob",
        cseq,
        &format!("Event: presence\r\n{extra}"),
        doc.map(|d| ("application/pidf+xml", d)),
    );
    let ok = bob.transact_at(&req, front);
    assert_eq!(status(&ok), Some(200), "{}", text(&ok));
    header(&ok, "SIP-ETag").expect("SIP-ETag")
}

/// A NOTIFY whose PIDF body holds every one of `has` and none of `lacks`.
fn notify_with<'a>(has: &'a [&'a str], lacks: &'a [&'a str]) -> impl Fn(&Message<'_>) -> bool + 'a {
    move |m| {
        let b = String::from_utf8_lossy(m.body());
        is_notify(m) && has.iter().all(|h| b.contains(h)) && !lacks.iter().any(|l| b.contains(l))
    }
}

/// `phone` registers its own address as `user`'s contact through `front` (CSeq `cseq`).
fn register(phone: &Phone, front: SocketAddr, cseq: u32) {
    let reg = register_bytes(
        phone.user,
        &[&format!("sip:{}@{}", phone.user, phone.addr)],
        &phone.addr.to_string(),
        &format!("reg-{}", phone.user),
        cseq,
    );
    let ok = phone.transact_at(&reg, front);
    assert_eq!(status(&ok), Some(200), "{}", text(&ok));
}

/// Waits (5 s at most) until keys matching `pattern` exist in the test's Redis, or
/// (`present` false) until none does.
fn wait_keys(bed: &Bed, pattern: &str, present: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while (redis_keys(bed.base, pattern) > 0) != present {
        assert!(Instant::now() < deadline, "{what}\n{}", bed.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The key of the messages front `front` stores for dave.
fn daves_messages(front: SocketAddr) -> String {
    format!("rtpanchor:presence:front/sip:{front}/messages:sip:dave@example.com")
}

#[test]
fn a_publish_at_a_is_notified_to_watchers_at_b() {
    let bed = Bed::start(19000, "rtpanchor-shpres-publish");
    let (a, b) = (bed.sip_a(), bed.sip_b());
    let carol = phone(&bed, "carol", 10, b);
    let bob = phone(&bed, "bob", 11, a);
    let dave = phone(&bed, "dave", 12, b);

    // bob watches his watchers at A (RFC 3857): none yet.
    let winfo = bob.request(
        "SUBSCRIBE",
        BOB,
        "winfo-bob",
        1,
        "Event: presence.winfo\r\nExpires: 600\r\n",
    );
    assert_eq!(status(&bob.transact_at(&winfo, a)), Some(200));
    let list = body(&bob.wait("first watcher-info NOTIFY", is_notify));
    assert!(
        list.contains("<watcher-list") && !list.contains("<watcher "),
        "{list}"
    );

    let first = watch_bob(&carol);
    assert!(first.contains("<basic>closed</basic>"), "{first}");
    // carol, subscribed at B, is in bob's watcher info at A.
    let list = bob
        .poll(Duration::from_secs(3), |m| {
            is_notify(m)
                && String::from_utf8_lossy(m.body()).contains(">sip:carol@example.com</watcher>")
        })
        .unwrap_or_else(|| panic!("B's watcher not in A's watcher info\n{}", bed.logs()));
    assert!(body(&list).contains("status=\"active\""), "{}", body(&list));

    // bob publishes "away" at A: carol, watching at B, is told by B.
    let sent = Instant::now();
    let etag = publish(&bob, a, 1, "Expires: 600\r\n", Some(&pidf("bob", "away")));
    let n = carol
        .poll(
            Duration::from_secs(3),
            notify_with(&["<basic>open</basic>", "<rpid:away/>"], &[]),
        )
        .unwrap_or_else(|| panic!("no NOTIFY of A's PUBLISH at B's watcher\n{}", bed.logs()));
    let propagation = sent.elapsed();
    eprintln!("propagation PUBLISH at A -> NOTIFY from B: {propagation:?}");
    assert!(propagation < Duration::from_secs(1), "{propagation:?}");
    let raw = text(&n);
    let n = Message::parse(&n).unwrap();
    assert_eq!(
        n.call_id().unwrap(),
        "sub-carol",
        "in carol's dialog with B"
    );
    assert!(
        raw.contains(&format!("Via: SIP/2.0/UDP {b};")),
        "not sent by B:\n{raw}"
    );

    // A new watcher at B gets A's state in its first NOTIFY.
    let first = watch_bob(&dave);
    assert!(
        first.contains("<basic>open</basic>") && first.contains("<rpid:away/>"),
        "{first}"
    );

    // Modified at A: closed and busy.
    let busy = pidf_status("bob", "closed", "busy");
    let etag = publish(
        &bob,
        a,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
    );
    for w in [&carol, &dave] {
        w.wait(
            "NOTIFY busy",
            notify_with(
                &["<basic>closed</basic>", "<rpid:busy/>"],
                &["<rpid:away/>"],
            ),
        );
    }
    // Removed at A: back to the registration-derived state (bob has no binding: closed).
    publish(
        &bob,
        a,
        3,
        &format!("SIP-If-Match: {etag}\r\nExpires: 0\r\n"),
        None,
    );
    carol.wait(
        "NOTIFY after the removal",
        notify_with(&["<basic>closed</basic>"], &["<rpid:"]),
    );
    // bob registers at A: B's watcher sees him open (registration-derived, across fronts).
    register(&bob, a, 4);
    carol.wait(
        "NOTIFY open after bob registered at A",
        notify_with(&["<basic>open</basic>"], &["<rpid:"]),
    );
}

#[test]
fn messages_through_b_reach_a_phone_at_a_and_stored_ones_are_delivered_once() {
    let bed = Bed::start(19100, "rtpanchor-shpres-message");
    let (a, b) = (bed.sip_a(), bed.sip_b());
    let alice = phone(&bed, "alice", 10, b);
    let bob = phone(&bed, "bob", 11, a);
    let dave = phone(&bed, "dave", 12, a);

    // bob is registered at A; once B routes to him (OPTIONS answered by his phone), a
    // MESSAGE through B reaches him.
    register(&bob, a, 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut probe = 0;
    loop {
        probe += 1;
        let opt = alice.request("OPTIONS", BOB, &format!("opt-{probe}"), 1, "");
        if status(&alice.transact_with(&opt, b, &[&bob])) == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never routed to bob\n{}",
            bed.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let msg = alice.request_with(
        "MESSAGE",
        BOB,
        "msg-bob",
        1,
        "",
        Some(("text/plain", "hello via B")),
    );
    let ok = alice.transact_with(&msg, b, &[&bob]);
    assert_eq!(status(&ok), Some(200), "{}", text(&ok));
    let got = bob.wait("MESSAGE through B", |m| m.method() == Some("MESSAGE"));
    assert_eq!(body(&got), "hello via B");

    // dave is registered nowhere: B stores the message.
    let msg = alice.request_with(
        "MESSAGE",
        "sip:dave@example.com",
        "msg-dave",
        1,
        "Date: Sun, 06 Dec 2026 10:00:00 GMT\r\n",
        Some(("text/plain", "stored at B")),
    );
    assert_eq!(status(&alice.transact(&msg)), Some(202));
    wait_keys(&bed, &daves_messages(b), true, "not written under B's name");
    // dave registers at A: B delivers it.
    let sent = Instant::now();
    register(&dave, a, 1);
    let got = dave
        .poll(Duration::from_secs(3), |m| m.method() == Some("MESSAGE"))
        .unwrap_or_else(|| panic!("stored MESSAGE not delivered\n{}", bed.logs()));
    eprintln!(
        "REGISTER at A -> stored MESSAGE from B: {:?}",
        sent.elapsed()
    );
    assert_eq!(body(&got), "stored at B");
    assert!(
        text(&got).contains(&format!("Via: SIP/2.0/UDP {b};")),
        "not sent by B:\n{}",
        text(&got)
    );
    assert_eq!(
        header(&got, "Date").as_deref(),
        Some("Sun, 06 Dec 2026 10:00:00 GMT")
    );
    assert!(header(&got, "From")
        .unwrap()
        .contains("sip:alice@example.com"));
    // Once only: refreshed at A and registered at B too, dave gets nothing more, and the
    // record is gone from the store.
    register(&dave, a, 2);
    register(&dave, b, 3);
    let again = dave.poll(Duration::from_millis(1500), |m| {
        m.method() == Some("MESSAGE")
    });
    assert!(
        again.is_none(),
        "delivered twice:\n{}",
        text(&again.unwrap())
    );
    wait_keys(
        &bed,
        &daves_messages(b),
        false,
        "delivered message still stored",
    );
}

#[test]
fn a_message_stored_at_b_reaches_a_tcp_phone_at_a_through_a() {
    let bed = Bed::start(19300, "rtpanchor-shpres-tcp");
    let (a, b) = (bed.sip_a(), bed.sip_b());
    let alice = phone(&bed, "alice", 10, b);
    let msg = alice.request_with(
        "MESSAGE",
        "sip:dave@example.com",
        "msg-dave-tcp",
        1,
        "",
        Some(("text/plain", "to your TCP phone")),
    );
    assert_eq!(status(&alice.transact(&msg)), Some(202));
    wait_keys(&bed, &daves_messages(b), true, "not written under B's name");

    // dave registers at A over TCP: B sends the message to A, which forwards it on
    // dave's connection.
    let mut dave = TcpPhone::connect(a);
    let me = dave.local();
    let contact = format!("sip:dave@127.0.0.1:{};transport=tcp", me.port());
    let reg = text(&register_bytes(
        "dave",
        &[&contact],
        &me.to_string(),
        "reg-dave-tcp",
        1,
    ))
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    dave.send(reg.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(3);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "no MESSAGE on dave's connection\n{}",
            bed.logs()
        );
        match dave.next(Duration::from_millis(50)) {
            Some(m) if m.starts_with("MESSAGE ") => break m,
            _ => {}
        }
    };
    assert!(got.starts_with(&format!("MESSAGE {contact} ")), "{got}");
    assert!(got.ends_with("to your TCP phone"), "{got}");
    let vias: Vec<&str> = got.lines().filter(|l| l.starts_with("Via:")).collect();
    assert!(vias[0].contains(&format!("SIP/2.0/TCP {a}")), "{got}");
    assert!(vias[1].contains(&format!("SIP/2.0/UDP {b}")), "{got}");
    assert!(!got.contains("\r\nRoute:"), "A removed its Route:\n{got}");
    // dave's 200 goes back through A to B, which forgets the message.
    let uas = Uas::new(me, "d1", &contact);
    dave.send(&uas.respond(got.as_bytes(), 200));
    wait_keys(
        &bed,
        &daves_messages(b),
        false,
        "B kept the delivered message",
    );
}

#[test]
fn with_redis_stopped_fronts_serve_alone_and_resync_when_it_is_back() {
    let mut bed = Bed::start(19200, "rtpanchor-shpres-down");
    let (a, b) = (bed.sip_a(), bed.sip_b());
    let carol = phone(&bed, "carol", 10, b);
    let bob = phone(&bed, "bob", 11, a);
    let eve = phone(&bed, "eve", 12, a);
    let first = watch_bob(&carol);
    assert!(first.contains("<basic>closed</basic>"), "{first}");

    // B's records are in the store before it stops.
    let watchers_key = format!("rtpanchor:presence:front/sip:{b}/watchers:sip:bob@example.com");
    wait_keys(&bed, &watchers_key, true, "B's watcher list not written");
    bed.redis.stop(Duration::from_secs(2));
    // A serves alone: the PUBLISH is taken and a watcher at A sees it.
    publish(&bob, a, 1, "Expires: 600\r\n", Some(&pidf("bob", "away")));
    let at_a = watch_bob(&eve);
    assert!(at_a.contains("<rpid:away/>"), "{at_a}");
    // B cannot know yet.
    let early = carol.poll(
        Duration::from_millis(500),
        notify_with(&["<rpid:away/>"], &[]),
    );
    assert!(early.is_none(), "B learnt A's PUBLISH without Redis?");

    // Redis is back, empty: A's publication reaches B's watcher.
    bed.redis = start_redis(bed.base, bed.dir.path());
    let back = Instant::now();
    carol
        .poll(Duration::from_secs(10), notify_with(&["<rpid:away/>"], &[]))
        .unwrap_or_else(|| panic!("no NOTIFY at B after Redis came back\n{}", bed.logs()));
    eprintln!(
        "Redis back -> A's PUBLISH NOTIFYed by B: {:?}",
        back.elapsed()
    );
    // And B's records the store lost are written again, even those nothing changed since
    // (its watcher list of bob, written when carol subscribed before the outage).
    wait_keys(
        &bed,
        &watchers_key,
        true,
        "B's watcher list not written again",
    );
    let key = format!("rtpanchor:presence:front/sip:{b}/subscription:*");
    wait_keys(&bed, &key, true, "B's subscription not written again");
}

/// An entity tag front A issued is honoured at front B (RFC 3903 `SIP-If-Match`): B hands
/// the PUBLISH to A, which holds the publication, and the answer (a new tag) comes back
/// through B. Modify, refresh and removal at B; B's watcher sees each change. Ports
/// 61200-61299 (the layout of the others).
#[test]
fn an_entity_tag_from_a_is_honoured_at_b() {
    let bed = Bed::start(61200, "rtpanchor-shpres-etag");
    let (a, b) = (bed.sip_a(), bed.sip_b());
    let carol = phone(&bed, "carol", 10, b);
    let bob = phone(&bed, "bob", 11, a);
    watch_bob(&carol);
    let etag = publish(&bob, a, 1, "Expires: 600\r\n", Some(&pidf("bob", "away")));
    carol.wait(
        "NOTIFY away",
        notify_with(&["<basic>open</basic>", "<rpid:away/>"], &[]),
    );

    // Modified at B with A's tag.
    let busy = pidf_status("bob", "closed", "busy");
    let etag = publish(
        &bob,
        b,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
    );
    carol.wait(
        "NOTIFY busy",
        notify_with(
            &["<basic>closed</basic>", "<rpid:busy/>"],
            &["<rpid:away/>"],
        ),
    );
    // Refreshed at B (its watcher's NOTIFY above says B holds A's record with this tag).
    let etag = publish(
        &bob,
        b,
        3,
        &format!("SIP-If-Match: {etag}\r\nExpires: 600\r\n"),
        None,
    );
    // Removed at B, once A's record with the refreshed tag has reached B (written every
    // 100 ms: a few tries).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut cseq = 4;
    let removed = loop {
        let req = bob.request_with(
            "PUBLISH",
            BOB,
            "pub-bob",
            cseq,
            &format!("Event: presence\r\nSIP-If-Match: {etag}\r\nExpires: 0\r\n"),
            None,
        );
        let got = status(&bob.transact_at(&req, b));
        if got != Some(412) || Instant::now() >= deadline {
            break got;
        }
        cseq += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(removed, Some(200), "{}", bed.logs());
    carol.wait(
        "NOTIFY after the removal",
        notify_with(&["<basic>closed</basic>"], &["<rpid:"]),
    );
    // A tag nobody issued is still refused.
    let req = bob.request_with(
        "PUBLISH",
        BOB,
        "pub-bob",
        cseq + 1,
        "Event: presence\r\nSIP-If-Match: nosuchtag\r\nExpires: 600\r\n",
        None,
    );
    assert_eq!(status(&bob.transact_at(&req, b)), Some(412));
}
