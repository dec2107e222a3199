//! SIP message layer cost per message: framing a typical INVITE with SDP, then the lookups a
//! proxy does on every request (top Via, Call-ID, CSeq), the full validity check, and the
//! splice editor's forwarding edits. Criterion reports time per iteration = ns/message.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtpanchor::sip::{check_request, Editor, Message};
use std::hint::black_box;

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Supported: replaces, timer\r\n\
User-Agent: ExamplePhone/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 136\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

fn bench(c: &mut Criterion) {
    let m = Message::parse(INVITE).expect("bench message parses");
    assert!(check_request(&m).is_ok());
    assert_eq!(m.body().len(), 136);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_invite", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(INVITE));
            black_box(m.map(|m| m.headers.len()).unwrap_or(0))
        })
    });
    g.bench_function("frame_plus_via_callid_cseq", |b| {
        b.iter(|| {
            let Ok(m) = Message::parse(black_box(INVITE)) else {
                return 0;
            };
            let via = m
                .top_via()
                .map(|v| v.branch.map_or(0, str::len))
                .unwrap_or(0);
            let cid = m.call_id().map_or(0, str::len);
            let seq = m.cseq().map_or(0, |c| c.seq as usize);
            black_box(via + cid + seq)
        })
    });
    g.bench_function("frame_plus_check_request", |b| {
        b.iter(|| {
            let Ok(m) = Message::parse(black_box(INVITE)) else {
                return false;
            };
            black_box(check_request(&m).is_ok())
        })
    });
    g.bench_function("frame_plus_forward_edits", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            out.clear();
            let Ok(m) = Message::parse(black_box(INVITE)) else {
                return 0;
            };
            let mut e = Editor::new(&m);
            e.push_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy1");
            let _ = e.decrement_max_forwards();
            let _ = e.write_to(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
