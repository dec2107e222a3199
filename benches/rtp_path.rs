//! Per-packet cost of the RTP receive path: `classify` + `RtpPacket::new_checked` +
//! `RtpStreamTracker::on_rtp`, for an in-order stream and one with 1 % reordering.
//!
//! Each iteration handles a batch of `BATCH` packets (throughput is reported in packets), so
//! ns/packet = time per iteration / `BATCH`. One 172-byte buffer (PCMU, 20 ms) is rewritten
//! in place with the next sequence number and timestamp, as a freshly received packet would
//! sit in cache.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtpanchor::rtp::stats::RtpHeader;
use rtpanchor::rtp::{classify, PacketKind, RtpPacket, RtpStreamTracker, SeqVerdict};
use std::hint::black_box;

const BATCH: u64 = 1000;
const PERIOD_NS: u64 = 20_000_000;

struct Stream {
    buf: [u8; 172],
    tracker: RtpStreamTracker,
    /// Packet index; the sequence number is derived from it and `order`.
    n: u64,
    /// Send order within each block of 100 packets.
    order: [u64; 100],
}

impl Stream {
    fn new(reorder: bool) -> Self {
        let mut buf = [0u8; 172];
        {
            let mut p = RtpPacket::new_unchecked(&mut buf[..]);
            p.set_version(2);
            p.set_payload_type(0);
            p.set_ssrc(0x1234_5678);
        }
        let mut order = [0u64; 100];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u64;
        }
        if reorder {
            // One packet in a hundred arrives after its successor.
            order.swap(50, 51);
        }
        Stream {
            buf,
            tracker: RtpStreamTracker::new(),
            n: 0,
            order,
        }
    }

    #[inline]
    fn next_packet(&mut self) -> u64 {
        let i = self.n;
        self.n += 1;
        let ext = i / 100 * 100 + self.order[(i % 100) as usize];
        let mut p = RtpPacket::new_unchecked(&mut self.buf[..]);
        p.set_sequence_number(ext as u16);
        p.set_timestamp((ext as u32).wrapping_mul(160));
        // Arrival: 20 ms pacing plus a small repeating jitter pattern.
        i * PERIOD_NS + (i * 7 % 5) * 1_000_000
    }
}

#[inline]
fn receive(buf: &[u8], tracker: &mut RtpStreamTracker, arrival_ns: u64) -> Option<SeqVerdict> {
    if classify(buf) != PacketKind::Rtp {
        return None;
    }
    let p = RtpPacket::new_checked(buf).ok()?;
    Some(tracker.on_rtp(RtpHeader::of(&p), arrival_ns, 8_000))
}

fn run(c: &mut Criterion, name: &str, reorder: bool) {
    let mut group = c.benchmark_group("rtp_path");
    group.throughput(Throughput::Elements(BATCH));
    let mut s = Stream::new(reorder);
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut in_order = 0u32;
            for _ in 0..BATCH {
                let arrival = s.next_packet();
                let v = receive(black_box(&s.buf[..]), &mut s.tracker, arrival);
                in_order += u32::from(v == Some(SeqVerdict::InOrder));
            }
            black_box(in_order)
        })
    });
    group.finish();
    let stats = s.tracker.snapshot();
    assert!((0..=1).contains(&stats.lost), "{stats:?}"); // 1 while a swapped pair is half-way
    assert_eq!(stats.reordered > 0, reorder, "{stats:?}");
}

fn benches(c: &mut Criterion) {
    run(c, "in_order", false);
    run(c, "reorder_1pct", true);
}

criterion_group!(rtp_path, benches);
criterion_main!(rtp_path);
