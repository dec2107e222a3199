//! ng control-message decoding: bencode of a ~1 KB Kamailio-style offer, and the full request
//! parse (keys, flags, SDP) the handler starts from.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use rtpanchor::control::bencode::{decode, Owned};
use rtpanchor::control::ng::parse_request;

fn offer() -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
               m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        .repeat(8);
    Owned::dict()
        .with("supports", Owned::List(vec![Owned::str("load limit")]))
        .with("sdp", sdp.as_str())
        .with(
            "flags",
            Owned::List(vec![Owned::str("trust-address"), Owned::str("symmetric")]),
        )
        .with(
            "replace",
            Owned::List(vec![Owned::str("origin"), Owned::str("session-connection")]),
        )
        .with("call-id", "1-25725@127.0.0.1")
        .with(
            "received-from",
            Owned::List(vec![Owned::str("IP4"), Owned::str("127.0.0.1")]),
        )
        .with("from-tag", "25725SIPpTag09")
        .with("command", "offer")
        .to_bencode()
}

fn bench(c: &mut Criterion) {
    let req = offer();
    assert!(req.len() > 1000);
    assert!(decode(&req).is_ok() && parse_request(&req).is_ok());
    c.bench_function("ng/bencode_decode_1k_offer", |b| {
        b.iter(|| decode(black_box(&req)).is_ok())
    });
    c.bench_function("ng/parse_request_1k_offer", |b| {
        b.iter(|| parse_request(black_box(&req)).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
