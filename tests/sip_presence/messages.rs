//! Store-and-forward MESSAGE, numbers, OPTIONS, authentication before service, NOTIFY order.

use super::*;

pub(crate) fn message(to: &str, call_id: &str, text: &str) -> Vec<u8> {
    request(
        "MESSAGE",
        to,
        "alice",
        alice(),
        call_id,
        1,
        None,
        "Date: Sat, 05 Dec 2026 10:00:00 GMT\r\n",
        Some(("text/plain", text.as_bytes())),
    )
}

#[test]
fn message_to_an_offline_user_is_stored_and_delivered_on_register() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "m1", "are you there?"),
        alice(),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(202)));
    let stored = p.presence().unwrap().stored_for("sip:bob@example.com");
    assert_eq!(stored.len(), 1);
    let out = send(&mut p, &bob_register(), bob(), 5 * SEC);
    assert_eq!(status(&out[0]), Some(200));
    let m: Vec<_> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .collect();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].to, bob());
    let d = msg(m[0]);
    assert_eq!(d.request_uri_str(), Some("sip:bob@127.0.0.1:5062"));
    assert_eq!(d.body(), b"are you there?");
    assert!(d.from().unwrap().raw.contains("sip:alice@example.com"));
    assert_eq!(
        header(m[0], "Date").as_deref(),
        Some("Sat, 05 Dec 2026 10:00:00 GMT")
    );
    // Delivered once bob's phone says 200; the store is empty.
    let delivery = m[0].clone();
    answer(&mut p, &delivery, bob(), 200, 5 * SEC);
    assert_eq!(p.presence().unwrap().stats().messages_delivered, 1);
    assert_eq!(p.presence().unwrap().stats().stored_messages, 0);
    // Now online: a MESSAGE is forwarded to his phone as before.
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "m2", "hi"),
        alice(),
        6 * SEC,
    );
    assert_eq!(
        (out[0].to, method(&out[0]).as_deref()),
        (bob(), Some("MESSAGE"))
    );
}

#[test]
fn a_failed_delivery_is_kept_and_the_store_is_bounded() {
    let mut cfg = presence_config();
    if let Some(pc) = cfg.presence.as_mut() {
        pc.messages.max_per_user = 2;
    }
    let mut p = proxy_with(cfg);
    for (i, cid) in ["k1", "k2", "k3"].iter().enumerate() {
        let out = send(
            &mut p,
            &message("sip:bob@example.com", cid, "x"),
            alice(),
            0,
        );
        let want = if i < 2 { 202 } else { 480 };
        assert_eq!(status(&out[0]), Some(want));
    }
    let out = send(&mut p, &bob_register(), bob(), SEC);
    let m: Vec<Transmit> = out
        .iter()
        .filter(|t| method(t).as_deref() == Some("MESSAGE"))
        .cloned()
        .collect();
    assert_eq!(m.len(), 2);
    answer(&mut p, &m[0], bob(), 200, SEC);
    answer(&mut p, &m[1], bob(), 486, SEC);
    assert_eq!(
        p.presence().unwrap().stats().stored_messages,
        1,
        "the refused one is back"
    );
    // Stored messages expire (3 days).
    tick(&mut p, 3 * 24 * 3600 * SEC + 10 * SEC, &mut NoMedia);
    assert_eq!(p.presence().unwrap().stats().stored_messages, 0);
}

#[test]
fn a_large_message_over_udp_gets_513() {
    let mut p = presence_proxy();
    let big = "x".repeat(1400);
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "big", &big),
        alice(),
        0,
    );
    assert_eq!(status(&out[0]), Some(513));
    register_bob(&mut p);
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "big2", &big),
        alice(),
        0,
    );
    assert_eq!(status(&out[0]), Some(513), "bob is reached over UDP");
    let out = send(
        &mut p,
        &message("sip:bob@example.com", "small", "ok"),
        alice(),
        0,
    );
    assert_eq!(method(&out[0]).as_deref(), Some("MESSAGE"));
}

#[test]
fn numbers_tel_uris_and_visual_separators() {
    for presence in [false, true] {
        let cfg = if presence {
            presence_config()
        } else {
            config()
        };
        let mut p = proxy_with(cfg);
        let reg = String::from_utf8(register_bytes(
            "+81-3-1234-5678",
            &["sip:phone@127.0.0.1:5062"],
            "127.0.0.1:5062",
            "rn",
            1,
        ))
        .unwrap()
        .replace("@example.com>", "@example.com;user=phone>");
        let out = send(&mut p, reg.as_bytes(), bob(), 0);
        assert_eq!(status(&out[0]), Some(200), "{}", text(&out[0]));
        for (i, target) in [
            "tel:+81312345678",
            "tel:+81-3-1234-5678",
            "sip:+81.3.1234.5678@example.com;user=phone",
        ]
        .into_iter()
        .enumerate()
        {
            let mut a = Uac::alice(&format!("num{i}")).calling(target);
            let out = send(&mut p, &a.invite(None), alice(), 0);
            let fwd: Vec<_> = out.iter().filter(|t| t.to == bob()).collect();
            assert_eq!(
                fwd.len(),
                1,
                "{target}: {:?}",
                out.iter().map(text).collect::<Vec<_>>()
            );
            assert_eq!(
                msg(fwd[0]).request_uri_str(),
                Some("sip:phone@127.0.0.1:5062")
            );
        }
        let mut a = Uac::alice("nx").calling("tel:+15550100");
        let out = send(&mut p, &a.invite(None), alice(), 0);
        assert_eq!(
            status(out.last().unwrap()),
            Some(404),
            "not ours, no outbound"
        );
    }
    let mut cfg = config();
    cfg.outbound = Some(rtpanchor::sip::transport::NextHop::udp(carol()));
    let mut p = proxy_with(cfg);
    let mut a = Uac::alice("ny").calling("tel:+15550100");
    let out = send(&mut p, &a.invite(None), alice(), 0);
    assert!(out
        .iter()
        .any(|t| t.to == carol() && method(t).as_deref() == Some("INVITE")));
}

#[test]
fn options_lists_exactly_what_is_served() {
    for presence in [false, true] {
        let mut p = proxy_with(if presence {
            presence_config()
        } else {
            config()
        });
        let mut a = Uac::alice("opt").calling("sip:example.com");
        let out = send(&mut p, &a.request("OPTIONS", ""), alice(), 0);
        let allow = header(&out[0], "Allow").unwrap();
        let methods: Vec<&str> = allow.split(", ").collect();
        assert!(!methods.contains(&"NOTIFY"));
        assert_eq!(methods.contains(&"SUBSCRIBE"), presence, "{allow}");
        assert_eq!(methods.contains(&"PUBLISH"), presence, "{allow}");
        assert_eq!(
            header(&out[0], "Allow-Events").as_deref(),
            presence.then_some("presence, presence.winfo")
        );
    }
}

#[test]
fn local_users_authenticate_before_presence_and_messages_are_served() {
    use rtpanchor::sip::auth::{passwd_line, AuthConfig, Authenticator, UserFile};
    use rtpanchor::sip::transport::Transport;
    let users = UserFile::parse(&passwd_line("alice", "example.com", "pw")).unwrap();
    let mut auth = Authenticator::new(AuthConfig::default(), [7; 32], users);
    let mut p = presence_proxy();
    let doc = pidf("alice", "t", "open", None);
    let requests = [
        subscribe("alice", alice(), "bob", "a1", 600),
        request(
            "PUBLISH",
            "sip:alice@example.com",
            "alice",
            alice(),
            "a2",
            1,
            None,
            "Event: presence\r\n",
            Some(("application/pidf+xml", &doc)),
        ),
        message("sip:bob@example.com", "a3", "unauthenticated"),
    ];
    for r in &requests {
        let out = check(p.handle_incoming_with_auth(
            r,
            alice(),
            Transport::Udp,
            0,
            &mut NoMedia,
            Some(&mut auth),
        ));
        assert_eq!(out.len(), 1, "{}", text(&out[0]));
        assert_eq!(status(&out[0]), Some(407), "{}", text(&out[0]));
    }
    let s = p.presence().unwrap().stats();
    assert_eq!(
        (s.subscriptions, s.publications, s.stored_messages),
        (0, 0, 0)
    );
}

#[test]
fn the_final_notify_waits_for_the_unanswered_one() {
    let mut p = presence_proxy();
    let out = send(
        &mut p,
        &subscribe("alice", alice(), "bob", "u1", 600),
        alice(),
        0,
    );
    let first = notifies(&out)[0].clone();
    let tag = msg(&first).from_tag().unwrap().to_string();
    let out = send(
        &mut p,
        &resubscribe("u1", 2, &tag, "Event: presence\r\nExpires: 0\r\n"),
        alice(),
        100 * MS,
    );
    assert_eq!(status(&out[0]), Some(200));
    assert!(notifies(&out).is_empty(), "the first NOTIFY is unanswered");
    let out = answer(&mut p, &first, alice(), 200, 200 * MS);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert!(header(n[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(p.presence().unwrap().stats().subscriptions, 1);
    answer(&mut p, n[0], alice(), 200, 300 * MS);
    assert_eq!(p.presence().unwrap().stats().subscriptions, 0);
}
