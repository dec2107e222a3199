//! SDP parse and rewrite, on two corpus offers: a small Asterisk offer and a 2.3 KB WebRTC
//! offer (ICE, DTLS, BUNDLE). Both run on every offer and answer the relay handles.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};

use rtpanchor::sdp::{rewrite, MediaRewrite, RewriteParams, Sdp};

fn corpus(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/golden/sdp/{name}.in.sdp",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bench(c: &mut Criterion) {
    for name in ["01-asterisk-offer", "11-webrtc-chrome-bundle-offer"] {
        let input = corpus(name);
        let sdp = Sdp::parse(&input).expect("corpus parses");
        let media = (0..sdp.media.len())
            .map(|i| MediaRewrite::Relay {
                rtp_port: 30000 + 2 * i as u16,
                rtcp_port: 30001 + 2 * i as u16,
                rtcp_mux: false,
                rtcp_fallback: false,
            })
            .collect();
        let mut params = RewriteParams::new(IpAddr::from([203, 0, 113, 1]), media);
        params.replace_origin = true;
        params.remove_ice = true;
        assert!(rewrite(&sdp, &params).is_ok());
        c.bench_function(&format!("sdp/parse/{name}"), |b| {
            b.iter(|| Sdp::parse(black_box(&input)).map(|s| s.media.len()))
        });
        c.bench_function(&format!("sdp/rewrite/{name}"), |b| {
            b.iter(|| rewrite(black_box(&sdp), &params).map(|o| o.len()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
