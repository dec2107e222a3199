//! Persistence: the records a restarted server starts from.

use super::messages::message;
use super::*;

/// Unix time (ns) at the first server's monotonic zero, and at the second's (it started
/// 50 s later in Unix time; its monotonic clock starts again at 0).
const FIRST_ZERO: u64 = 1_800_000_000 * SEC;
const SECOND_ZERO: u64 = FIRST_ZERO + 50 * SEC;

/// The records of `p` (persistence turned on before anything happened).
fn records(p: &mut Proxy) -> Vec<(String, Option<String>)> {
    let mut r: Vec<_> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .map(|r| (r.key, r.value.map(|(j, _)| j)))
        .collect();
    r.sort();
    r
}

/// A fresh proxy with persistence on and nothing loaded.
fn persisting_proxy() -> Proxy {
    let mut p = presence_proxy();
    let c = p.restore_presence(&[], 0, FIRST_ZERO).unwrap();
    assert_eq!(c, Default::default());
    p
}

#[test]
fn publication_subscription_and_stored_message_survive_a_restart() {
    let mut p = persisting_proxy();
    let (first, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let first = Message::parse(&first).unwrap();
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 3600\r\n", Some(&away), SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let n = notifies(&out);
    answer(&mut p, n[0], alice(), 200, SEC);
    let cseq_before = msg(n[0]).cseq().unwrap().seq;
    let out = send(
        &mut p,
        &message("sip:carol@example.com", "m1", "call me"),
        alice(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(202));
    let saved: Vec<(String, String)> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .filter_map(|r| Some((r.key, r.value?.0)))
        .collect();
    let keys: Vec<&str> = saved.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"presentity:sip:bob@example.com"), "{keys:?}");
    assert!(keys.contains(&"messages:sip:carol@example.com"), "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("subscription:"))
            .count(),
        1
    );

    // The restarted server: its clock starts at 0 again, 50 s of Unix time later.
    let mut q = presence_proxy();
    let c = q.restore_presence(&saved, 0, SECOND_ZERO).unwrap();
    assert_eq!(
        (
            c.publications,
            c.subscriptions,
            c.messages,
            c.expired,
            c.dropped
        ),
        (1, 1, 1, 0, 0)
    );
    // A new watcher sees the publication.
    let (_, doc) = watch(&mut q, "carol", carol(), "bob", SEC);
    assert!(doc.contains("<rpid:away/>"), "{doc}");
    // The old entity tag still matches; the change NOTIFYs alice in her old dialog.
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = send(
        &mut q,
        &publish(
            "bob",
            bob(),
            2,
            &format!("SIP-If-Match: {etag}\r\n"),
            Some(&busy),
        ),
        bob(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    let n: Vec<_> = notifies(&out)
        .into_iter()
        .filter(|t| t.to == alice())
        .collect();
    assert_eq!(n.len(), 1, "alice's restored subscription is NOTIFYed");
    let again = msg(n[0]);
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.from_tag(), first.from_tag());
    assert_eq!(again.to_tag(), first.to_tag());
    assert_eq!(again.cseq().unwrap().seq, cseq_before + 1);
    assert!(body(n[0]).contains("<rpid:busy/>"));
    // alice's refresh in the old dialog is accepted, not 481.
    let tag = first.from_tag().unwrap().to_string();
    let refresh = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 600\r\n");
    answer(&mut q, n[0], alice(), 200, 2 * SEC);
    let out = send(&mut q, &refresh, alice(), 3 * SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    // carol's phone registers: the message arrives with its original Date.
    let reg = register_bytes(
        "carol",
        &["sip:carol@127.0.0.1:5064"],
        "127.0.0.1:5064",
        "rc",
        1,
    );
    let out = send(&mut q, &reg, carol(), 4 * SEC);
    let m: Vec<_> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .collect();
    assert_eq!(m.len(), 1);
    assert_eq!(msg(m[0]).body(), b"call me");
    assert_eq!(
        header(m[0], "Date").as_deref(),
        Some("Sat, 05 Dec 2026 10:00:00 GMT")
    );
}

#[test]
fn records_follow_changes_and_ends() {
    let mut p = persisting_proxy();
    let (n, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, SEC);
    }
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        2 * SEC,
    );
    let etag2 = header(&out[0], "SIP-ETag").unwrap();
    // Two publications between takes: one record, the latest.
    let r = records(&mut p);
    let pres: Vec<_> = r
        .iter()
        .filter(|(k, _)| k.starts_with("presentity:"))
        .collect();
    assert_eq!(pres.len(), 1);
    let json = pres[0].1.as_deref().unwrap();
    assert!(json.contains(&etag2) && !json.contains(&etag), "{json}");
    // Nothing changed: nothing to write.
    assert!(records(&mut p).is_empty());
    // Removal and un-subscribe: the keys are deleted.
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, 2 * SEC);
    }
    let out = publish_bob(
        &mut p,
        3,
        &format!("SIP-If-Match: {etag2}\r\nExpires: 0\r\n"),
        None,
        3 * SEC,
    );
    for t in notifies(&out) {
        answer(&mut p, t, alice(), 200, 3 * SEC);
    }
    let tag = Message::parse(&n).unwrap().from_tag().unwrap().to_string();
    let unsub = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 0\r\n");
    let out = send(&mut p, &unsub, alice(), 4 * SEC);
    answer(&mut p, notifies(&out)[0], alice(), 200, 4 * SEC);
    let r = records(&mut p);
    assert!(
        r.iter()
            .any(|(k, v)| k == "presentity:sip:bob@example.com" && v.is_none()),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(k, v)| k.starts_with("subscription:") && v.is_none()),
        "{r:?}"
    );
    // A stored message: kept while it is being delivered, deleted once a device took it.
    send(
        &mut p,
        &message("sip:bob@example.com", "m1", "hello"),
        alice(),
        5 * SEC,
    );
    assert!(records(&mut p)
        .iter()
        .any(|(k, v)| k == "messages:sip:bob@example.com" && v.is_some()));
    let out = send(&mut p, &bob_register(), bob(), 6 * SEC);
    let m = out
        .iter()
        .find(|t| method(t).as_deref() == Some("MESSAGE"))
        .unwrap()
        .clone();
    let r = records(&mut p);
    let kept = r
        .iter()
        .find(|(k, _)| k == "messages:sip:bob@example.com")
        .and_then(|(_, v)| v.clone());
    assert!(kept.is_some_and(|j| j.contains("hello")), "{r:?}");
    answer(&mut p, &m, bob(), 200, 6 * SEC);
    let r = records(&mut p);
    assert!(
        r.iter()
            .any(|(k, v)| k == "messages:sip:bob@example.com" && v.is_none()),
        "{r:?}"
    );
}

#[test]
fn expired_and_unreadable_records_are_dropped_at_restore() {
    let mut p = persisting_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    send(
        &mut p,
        &message("sip:carol@example.com", "m1", "late"),
        alice(),
        2 * SEC,
    );
    let mut saved: Vec<(String, String)> = p
        .take_presence_records(FIRST_ZERO)
        .into_iter()
        .filter_map(|r| Some((r.key, r.value?.0)))
        .collect();
    saved.push(("presentity:sip:eve@example.com".into(), "{not json".into()));
    saved.push(("subscription:99".into(), "{\"v\":1}".into()));
    // Four days later: the publication (120 s), the subscription (600 s) and the message
    // (3 days) have all expired.
    let mut q = presence_proxy();
    let later = FIRST_ZERO + 4 * 24 * 3600 * SEC;
    let c = q.restore_presence(&saved, 0, later).unwrap();
    assert_eq!((c.publications, c.subscriptions, c.messages), (0, 0, 0));
    assert_eq!((c.expired, c.dropped), (3, 2));
    let (_, doc) = watch(&mut q, "carol", carol(), "bob", SEC);
    assert!(doc.contains("closed") && !doc.contains("away"), "{doc}");
}

#[test]
fn nothing_is_recorded_without_a_store() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    assert!(p.take_presence_records(FIRST_ZERO).is_empty());
}
