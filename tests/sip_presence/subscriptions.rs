//! Subscriptions, the PUBLISH compositor, rate limits, caps, policy and watcher info.

use super::*;

#[test]
fn subscribe_to_an_unregistered_user_gets_200_and_a_closed_notify() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "s1", 600),
        alice(),
        0,
    );
    assert_eq!(out.len(), 2);
    let ok = msg(&out[0]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.expires().unwrap(), Some(600));
    assert!(ok.header(HeaderName::Contact).is_some());
    let local_tag = ok.to_tag().unwrap().to_string();
    let n = msg(&out[1]);
    assert_eq!(n.method(), Some("NOTIFY"));
    assert_eq!(n.request_uri_str(), Some("sip:alice@127.0.0.1:5061"));
    assert_eq!(out[1].to, alice());
    assert_eq!(
        n.from_tag(),
        Some(local_tag.as_str()),
        "NOTIFY is in our dialog"
    );
    assert_eq!(n.to_tag(), Some("falice"));
    assert_eq!(n.call_id().unwrap(), "s1");
    assert_eq!(header(&out[1], "Event").as_deref(), Some("presence"));
    let state = header(&out[1], "Subscription-State").unwrap();
    assert!(state.starts_with("active;expires="), "{state}");
    assert_eq!(
        header(&out[1], "Content-Type").as_deref(),
        Some("application/pidf+xml")
    );
    assert!(body(&out[1]).contains("<basic>closed</basic>"));
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    // The NOTIFY is retransmitted (Timer E) until answered.
    let again = tick(&mut p, 600 * MS, &mut NoMedia);
    assert_eq!(notifies(&again).len(), 1);
    assert!(answer(&mut p, &out[1], alice(), 200, 700 * MS).is_empty());
    assert!(notifies(&tick(&mut p, 2 * SEC, &mut NoMedia)).is_empty());
}

#[test]
fn registration_opens_and_binding_expiry_closes_for_a_user_that_never_publishes() {
    let mut p = presence_proxy();
    let (_, doc) = watch(&mut p, "alice", alice(), "bob", 0);
    assert!(doc.contains("closed"));
    let out = send(&mut p, &bob_register(), bob(), SEC);
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "bob's REGISTER NOTIFYs alice");
    assert!(body(n[0]).contains("<basic>open</basic>"));
    answer(&mut p, n[0], alice(), 200, SEC);
    let tag = msg(n[0]).from_tag().unwrap().to_string();
    // The binding (600 s) expires; the subscription (600 s from 0) is renewed first.
    let refresh = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 3600\r\n");
    let out = send(&mut p, &refresh, alice(), 500 * SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(3600));
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "a refresh gets a NOTIFY");
    assert!(body(n[0]).contains("open"));
    answer(&mut p, n[0], alice(), 200, 500 * SEC);
    let mut closed = None;
    for s in 600..640 {
        let out = tick(&mut p, s * SEC, &mut NoMedia);
        if let Some(n) = notifies(&out).first() {
            closed = Some((*n).clone());
            break;
        }
    }
    let closed = closed.expect("a NOTIFY when the binding expired");
    assert!(body(&closed).contains("<basic>closed</basic>"));
    assert!(header(&closed, "Subscription-State")
        .unwrap()
        .starts_with("active"));
}

#[test]
fn publish_etags_refresh_modify_remove_and_412() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let away = pidf("bob", "t1", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 120\r\n", Some(&away), SEC);
    assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
    assert_eq!(
        out[0].to,
        bob(),
        "answered by us, not forwarded to bob's phone"
    );
    let etag1 = header(&out[0], "SIP-ETag").expect("SIP-ETag");
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(120));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].to, alice());
    assert!(body(n[0]).contains("<rpid:away/>"));
    answer(&mut p, n[0], alice(), 200, SEC);

    // Refresh: no body, a new tag, no NOTIFY.
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag1}\r\nExpires: 120\r\n"),
        None,
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let etag2 = header(&out[0], "SIP-ETag").unwrap();
    assert_ne!(etag1, etag2);
    assert!(notifies(&out).is_empty());
    // The old tag is gone.
    let out = publish_bob(
        &mut p,
        3,
        &format!("SIP-If-Match: {etag1}\r\n"),
        Some(&away),
        3 * SEC,
    );
    assert_eq!(status(&out[0]), Some(412));
    // Modify: busy.
    let busy = pidf("bob", "t1", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        4,
        &format!("SIP-If-Match: {etag2}\r\n"),
        Some(&busy),
        4 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let etag3 = header(&out[0], "SIP-ETag").unwrap();
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(body(n[0]).contains("<rpid:busy/>") && !body(n[0]).contains("away"));
    answer(&mut p, n[0], alice(), 200, 4 * SEC);
    // Remove: back to the registration-derived state (bob has no binding: closed).
    let out = publish_bob(
        &mut p,
        5,
        &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"),
        None,
        5 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(body(n[0]).contains("<basic>closed</basic>"));
    assert_eq!(p.presence().unwrap().stats().publications, 0);
}

#[test]
fn publish_rules_489_423_415_400() {
    let mut p = presence_proxy();
    let doc = pidf("bob", "t", "open", None);
    let wrong_event = request(
        "PUBLISH",
        "sip:bob@example.com",
        "bob",
        bob(),
        "pe",
        1,
        None,
        "Event: dialog\r\n",
        Some(("application/pidf+xml", &doc)),
    );
    let out = send(&mut p, &wrong_event, bob(), 0);
    assert_eq!(status(&out[0]), Some(489));
    assert!(header(&out[0], "Allow-Events").is_some());
    let out = publish_bob(&mut p, 1, "Expires: 5\r\n", Some(&doc), 0);
    assert_eq!(status(&out[0]), Some(423));
    assert_eq!(header(&out[0], "Min-Expires").as_deref(), Some("60"));
    let out = publish_bob(&mut p, 2, "", None, 0);
    assert_eq!(
        status(&out[0]),
        Some(400),
        "an initial PUBLISH needs a body"
    );
    let out = send(
        &mut p,
        &publish("bob", bob(), 3, "", Some(b"<nope/>")),
        bob(),
        0,
    );
    assert_eq!(status(&out[0]), Some(400), "not PIDF");
    let plain = request(
        "PUBLISH",
        "sip:bob@example.com",
        "bob",
        bob(),
        "pt",
        1,
        None,
        "Event: presence\r\n",
        Some(("text/plain", b"here")),
    );
    let out = send(&mut p, &plain, bob(), 0);
    assert_eq!(status(&out[0]), Some(415));
}

#[test]
fn publication_expiry_notifies_and_two_publishers_are_composed() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    let desk = pidf("bob", "desk", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "Expires: 60\r\n", Some(&desk), SEC);
    answer(&mut p, notifies(&out)[0], alice(), 200, SEC);
    let mobile = pidf("bob", "mobile", "open", Some("on-the-phone"));
    let out = send(
        &mut p,
        &publish("bob", bob2(), 1, "Expires: 600\r\n", Some(&mobile)),
        bob2(),
        2 * SEC,
    );
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    let doc = body(n[0]);
    assert!(
        doc.contains("tuple id=\"desk\"") && doc.contains("tuple id=\"mobile\""),
        "{doc}"
    );
    assert!(doc.contains("<rpid:away/>") && doc.contains("<rpid:on-the-phone/>"));
    assert_eq!(doc.matches("<presence").count(), 1, "one document");
    answer(&mut p, n[0], alice(), 200, 2 * SEC);
    // The desk's publication (60 s) expires: only the mobile's tuple is left.
    let out = tick(&mut p, 61 * SEC + 1, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    let doc = body(n[0]);
    assert!(!doc.contains("desk") && doc.contains("mobile"), "{doc}");
}

#[test]
fn unsubscribe_gets_a_final_terminated_notify() {
    let mut p = presence_proxy();
    let (n, _) = watch(&mut p, "alice", alice(), "bob", 0);
    let tag = Message::parse(&n).unwrap().from_tag().unwrap().to_string();
    let unsub = resubscribe("sub-alice", 2, &tag, "Event: presence\r\nExpires: 0\r\n");
    let out = send(&mut p, &unsub, alice(), SEC);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(msg(&out[0]).expires().unwrap(), Some(0));
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    answer(&mut p, n[0], alice(), 200, SEC);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    // The dialog is gone: a refresh gets 481.
    let again = resubscribe("sub-alice", 3, &tag, "Event: presence\r\nExpires: 600\r\n");
    let out = send(&mut p, &again, alice(), 2 * SEC);
    assert_eq!(status(&out[0]), Some(481));
}

#[test]
fn expiry_sends_terminated_timeout() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    assert!(notifies(&tick(&mut p, 599 * SEC, &mut NoMedia)).is_empty());
    let out = tick(&mut p, 600 * SEC, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(
        header(n[0], "Subscription-State").as_deref(),
        Some("terminated;reason=timeout")
    );
    answer(&mut p, n[0], alice(), 200, 600 * SEC);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
}

#[test]
fn bad_event_short_expiry_and_unknown_dialog() {
    let mut p = presence_proxy();
    let foo = new_subscribe("alice", "bob", "e1", "Event: foo\r\n");
    let out = send(&mut p, &foo, alice(), 0);
    assert_eq!(status(&out[0]), Some(489));
    assert_eq!(
        header(&out[0], "Allow-Events").as_deref(),
        Some("presence, presence.winfo")
    );
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "e2", 10),
        alice(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(423));
    assert_eq!(header(&out[0], "Min-Expires").as_deref(), Some("60"));
    let stray = request(
        "SUBSCRIBE",
        "sip:127.0.0.1:5060",
        "alice",
        alice(),
        "e3",
        1,
        Some("nosuch"),
        "Event: presence\r\n",
        None,
    );
    let out = send(&mut p, &stray, alice(), 0);
    assert_eq!(status(&out[0]), Some(481));
    // A package a registered phone may serve (dialog) is still routed to it.
    register_bob(&mut p);
    let dialog = new_subscribe("alice", "bob", "e4", "Event: dialog\r\n");
    let out = send(&mut p, &dialog, alice(), 0);
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("SUBSCRIBE"))
    );
}

#[test]
fn a_481_or_a_timeout_ends_the_subscription() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "g1", 600),
        alice(),
        0,
    );
    answer(&mut p, notifies(&out)[0], alice(), 481, 10 * MS);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    // carol never answers: Timer F (64·T1) ends it.
    let out = send(
        &mut p,
        &subscribe("carol", carol(), "bob", "g2", 600),
        carol(),
        0,
    );
    assert_eq!(notifies(&out).len(), 1);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    let mut t = 0;
    while t < 40 * SEC {
        t += 500 * MS;
        tick(&mut p, t, &mut NoMedia);
    }
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
    assert!(p.presence().unwrap().stats().notifies_failed >= 1);
}

#[test]
fn notify_waits_for_the_previous_one_and_carries_the_latest_state() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "o1", 600),
        alice(),
        0,
    );
    let first = notifies(&out)[0].clone();
    // Unanswered: bob publishes twice; nothing is sent to alice meanwhile.
    let away = pidf("bob", "t", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "", Some(&away), 10 * MS);
    assert_eq!(status(&out[0]), Some(200));
    assert!(notifies(&out).is_empty(), "previous NOTIFY unanswered");
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let busy = pidf("bob", "t", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        300 * MS,
    );
    assert!(notifies(&out).is_empty());
    let out = tick(&mut p, 600 * MS, &mut NoMedia);
    for n in notifies(&out) {
        assert_eq!(n.bytes, first.bytes, "only retransmissions of the first");
    }
    let out = answer(&mut p, &first, alice(), 200, 700 * MS);
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "the newest state once the first is answered");
    assert!(body(n[0]).contains("busy") && !body(n[0]).contains("away"));
    let cseq = |t: &Transmit| msg(t).cseq().unwrap().seq;
    assert_eq!(cseq(n[0]), cseq(&first) + 1);
}

#[test]
fn changes_are_rate_limited_per_presentity() {
    let mut p = presence_proxy();
    watch(&mut p, "alice", alice(), "bob", 0);
    watch(&mut p, "carol", carol(), "bob", 0);
    let away = pidf("bob", "t", "open", Some("away"));
    let out = publish_bob(&mut p, 1, "", Some(&away), SEC);
    let n = notifies(&out);
    assert_eq!(n.len(), 2, "every watcher");
    let (na, nc) = (n[0].clone(), n[1].clone());
    answer(&mut p, &na, na.to, 200, SEC);
    answer(&mut p, &nc, nc.to, 200, SEC);
    let etag = header(&out[0], "SIP-ETag").unwrap();
    let busy = pidf("bob", "t", "open", Some("busy"));
    let out = publish_bob(
        &mut p,
        2,
        &format!("SIP-If-Match: {etag}\r\n"),
        Some(&busy),
        SEC + 50 * MS,
    );
    assert!(notifies(&out).is_empty(), "within the interval");
    assert!(notifies(&tick(&mut p, SEC + 150 * MS, &mut NoMedia)).is_empty());
    let out = tick(&mut p, SEC + 200 * MS, &mut NoMedia);
    let n = notifies(&out);
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|t| body(t).contains("busy")));
}

#[test]
fn subscriptions_are_capped_per_presentity() {
    let mut cfg = presence_config();
    if let Some(p) = cfg.presence.as_mut() {
        p.max_watchers_per_presentity = 2;
    }
    let mut p = proxy_with(cfg);
    watch(&mut p, "alice", alice(), "bob", 0);
    watch(&mut p, "carol", carol(), "bob", 0);
    let out = send(
        &mut p,
        &subscribe("dave", bob2(), "bob", "c3", 600),
        bob2(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(503));
    assert!(header(&out[0], "Retry-After").is_some());
    // Another presentity still has room.
    watch(&mut p, "dave", bob2(), "erin", 0);
}

#[test]
fn foreign_watchers_follow_the_policy() {
    let mut p = presence_proxy();
    let mut foreign = subscribe("mallory", carol(), "bob", "f1", 600);
    let text = String::from_utf8(foreign.clone()).unwrap().replace(
        "<sip:mallory@example.com>;tag",
        "<sip:mallory@elsewhere.net>;tag",
    );
    foreign = text.into_bytes();
    let out = send(&mut p, &foreign, carol(), 0);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), Some(403));
    let mut cfg = presence_config();
    if let Some(pc) = cfg.presence.as_mut() {
        pc.foreign_watchers = rtpanchor::sip::presence::WatcherPolicy::Pending;
    }
    let mut p = proxy_with(cfg);
    let out = send(&mut p, &foreign, carol(), 0);
    assert_eq!(status(&out[0]), Some(200));
    let n = notifies(&out);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("pending"));
    assert!(
        msg(n[0]).body().is_empty(),
        "no state for a pending watcher"
    );
}

#[test]
fn watcher_info_lists_the_watchers_to_the_presentity_only() {
    let mut p = presence_proxy();
    let winfo = new_subscribe(
        "bob",
        "bob",
        "w1",
        "Event: presence.winfo\r\nExpires: 600\r\n",
    );
    let out = send(&mut p, &winfo, bob(), 0);
    assert_eq!(status(&out[0]), Some(200));
    assert_eq!(out[1].to, bob(), "served by us, not looped to bob's phone");
    assert_eq!(header(&out[1], "Event").as_deref(), Some("presence.winfo"));
    assert_eq!(
        header(&out[1], "Content-Type").as_deref(),
        Some("application/watcherinfo+xml")
    );
    assert!(!body(&out[1]).contains("<watcher "));
    let first = out[1].clone();
    answer(&mut p, &first, bob(), 200, 0);
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "w2", 600),
        alice(),
        SEC,
    );
    let to_bob: Vec<_> = notifies(&out)
        .into_iter()
        .filter(|t| t.to == bob())
        .collect();
    assert_eq!(to_bob.len(), 1);
    let doc = body(to_bob[0]);
    assert!(
        doc.contains("sip:alice@example.com") && doc.contains("status=\"active\""),
        "{doc}"
    );
    assert!(doc.contains("version=\"1\""));
    // alice may not see bob's watchers.
    let nosy = new_subscribe("alice", "bob", "w3", "Event: presence.winfo\r\n");
    let out = send(&mut p, &nosy, alice(), SEC);
    assert_eq!(status(&out[0]), Some(403));
}
