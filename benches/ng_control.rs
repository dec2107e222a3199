//! ng control cost per call: offer + answer + delete through the handler (parse, session
//! manager, SDP rewrite, reply encode) with the FakeBackend, with 1k other calls live so map
//! lookups see a realistic table. Also the retransmission path (reply cache hit).

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};

use rtpanchor::control::bencode::Owned;
use rtpanchor::control::handler::handle_body;
use rtpanchor::server::ng::{NgServerConfig, NgShared};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::manager::{ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;

const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 192.0.2.10\r\ns=-\r\n\
c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";
const ANSWER: &str = "v=0\r\no=user1 1 1 IN IP4 198.51.100.20\r\ns=-\r\n\
c=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn manager() -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("pub", "203.0.113.1".parse().unwrap())],
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(20000, 60000).unwrap(), cfg, 1)
}

fn kamailio_req(
    command: &str,
    call: &str,
    from: &str,
    to: Option<&str>,
    sdp: Option<&str>,
) -> Vec<u8> {
    let mut d = Owned::dict().with("supports", Owned::List(vec![Owned::str("load limit")]));
    if let Some(sdp) = sdp {
        d.insert("sdp", sdp);
        d.insert(
            "replace",
            Owned::List(vec![Owned::str("origin"), Owned::str("session-connection")]),
        );
    }
    d.insert("call-id", call);
    d.insert(
        "received-from",
        Owned::List(vec![Owned::str("IP4"), Owned::str("127.0.0.1")]),
    );
    d.insert("from-tag", from);
    if let Some(to) = to {
        d.insert("to-tag", to);
    }
    d.with("command", command).to_bencode()
}

fn result_ok(r: &Owned) -> bool {
    r.get("result").and_then(Owned::as_str) == Some("ok")
}

fn bench(c: &mut Criterion) {
    let mut m = manager();
    for n in 0..1000 {
        let call = format!("bg-{n}");
        let (r, _) = handle_body(
            &mut m,
            &kamailio_req("offer", &call, "a", None, Some(OFFER)),
            1,
        );
        assert!(result_ok(&r));
    }
    let offer = kamailio_req("offer", "bench-call", "tagA", None, Some(OFFER));
    let answer = kamailio_req("answer", "bench-call", "tagA", Some("tagB"), Some(ANSWER));
    let delete = kamailio_req("delete", "bench-call", "tagA", None, None);
    let mut now = 2;
    c.bench_function("ng/offer_answer_delete_cycle", |b| {
        b.iter(|| {
            now += 1;
            let (o, _) = handle_body(&mut m, black_box(&offer), now);
            let (a, _) = handle_body(&mut m, black_box(&answer), now);
            let (d, _) = handle_body(&mut m, black_box(&delete), now);
            debug_assert!(result_ok(&o) && result_ok(&a) && result_ok(&d));
            black_box((o, a, d))
        })
    });
    assert_eq!(m.call_count(), 1000, "every cycle cleaned up after itself");

    // Retransmission: served from the reply cache without touching the manager.
    let shared = NgShared::new(Arc::new(Mutex::new(manager())), &NgServerConfig::default());
    let first = shared.process(b"0_123_1", &offer, 1);
    assert!(first.is_some());
    c.bench_function("ng/retransmit_cache_hit", |b| {
        b.iter(|| black_box(shared.process(black_box(b"0_123_1"), &offer, 2)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
