//! The relay's per-packet user-space work: slot lookup by index, classification, RTP header
//! check, sequence/loss/jitter tracking, latching and destination choice
//! (`dataplane::core::WorkerCore::receive`), at 1 and at 10,000 streams, so the cost of a larger working
//! set (cache misses) shows. The kernel's UDP path is not included; `tools/rtpbench` measures
//! the whole relay.

use std::hint::black_box;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;
use rtpanchor::dataplane::core::WorkerCore;
use rtpanchor::dataplane::forward::{self, PacketCtx, PathConfig};
use rtpanchor::dataplane::shared::{StreamShared, WorkerCounters};
use rtpanchor::dataplane::slot::{DirtyList, SlotIdx};
use rtpanchor::dataplane::spares::Spares;
use rtpanchor::dataplane::table::SlotTable;
use rtpanchor::dataplane::worker::{NewStream, SideInit, WorkerShared};
use rtpanchor::rtp::clock::ClockRates;
use rtpanchor::rtp::RtpRepr;
use rtpanchor::session::backend::StreamId;
use rtpanchor::session::latch::LatchMode;

/// The packet path never touches the descriptors, and 40,000 real ones exceed the fd limit
/// of these machines, so every slot names the same eventfd. The workers are leaked at the end
/// (`mem::forget`) so the shared descriptor is never closed more than once.
fn dummy_fd(shared: i32) -> OwnedFd {
    // SAFETY: `shared` is a valid descriptor; the OwnedFds made from it are never dropped
    // (see above), so no double close happens.
    unsafe { OwnedFd::from_raw_fd(shared) }
}

fn side(port: u16) -> SideInit {
    let a: SocketAddr = SocketAddr::from(([10, 0, 0, 1], port));
    SideInit {
        rtp: Some(a),
        rtcp: Some(SocketAddr::from(([10, 0, 0, 1], port + 1))),
        rtcp_mux: false,
        latch: LatchMode::Symmetric,
        clock_rates: ClockRates::default(),
    }
}

fn fill(t: &mut SlotTable, streams: usize, fd: i32) -> Vec<(SlotIdx, SocketAddr)> {
    let mut targets = Vec::with_capacity(streams);
    for i in 0..streams {
        let port = 2000 + 4 * (i as u16 % 15000);
        let idx = t.add(NewStream {
            id: StreamId::from_raw(i as u64 + 1),
            sockets: [dummy_fd(fd), dummy_fd(fd), dummy_fd(fd), dummy_fd(fd)],
            ports: [0; 4],
            a: side(port),
            b: side(port + 2),
            shared: Arc::new(StreamShared::default()),
        });
        targets.push((idx[0], SocketAddr::from(([10, 0, 0, 1], port))));
    }
    targets
}

fn rtp(seq: u16, ts: u32) -> [u8; 172] {
    let mut p = [0u8; 172];
    let _ = RtpRepr::new(0, seq, ts, 0x1234_5678).emit(&mut p); // 12 bytes always fit
    p
}

fn bench(c: &mut Criterion) {
    // SAFETY: eventfd has no preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    let mut g = c.benchmark_group("packet_path");
    g.throughput(Throughput::Elements(1));
    for streams in [1usize, 10_000] {
        let shared = WorkerShared::new().expect("eventfd");
        let cfg = PathConfig {
            strict: false,
            gso: true,
            connect: false,
            batch_wait_us: 0,
        };
        let mut core = WorkerCore::new(shared, cfg, 0, 1);
        let targets = fill(&mut core.table, streams, fd);
        let mut seq: u16 = 0;
        let mut now: u64 = 1;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("process", streams), &streams, |b, _| {
            b.iter(|| {
                // Round-robin over the streams, as interleaved calls arrive at a relay.
                let (slot, src) = targets[i];
                i += 1;
                if i == targets.len() {
                    i = 0;
                    seq = seq.wrapping_add(1);
                }
                now += 20_000;
                let pkt = rtp(seq, u32::from(seq) * 160);
                let out = core.receive(slot, src, black_box(&pkt), now);
                if core.dirty.list.len() == core.dirty.list.capacity() {
                    core.dirty.list.clear();
                }
                while core.shared.events.pop().is_some() {}
                black_box(out)
            })
        });
        std::mem::forget(core);
    }
    // The forwarding decision alone (`forward::admit` then `forward::decide`), with the
    // counters, event queue and dirty list local to the loop: the harness of the sittings
    // before the worker core existed, so its figures compare with theirs. `process` above
    // adds what the worker core does around it (state behind the worker's shared handle).
    for streams in [1usize, 10_000] {
        let mut t = SlotTable::with_capacity(0);
        let targets = fill(&mut t, streams, fd);
        let counters = WorkerCounters::default();
        let events = ArrayQueue::new(1 << 16);
        let mut dirty = DirtyList::with_capacity(1 << 16);
        let mut spares = Spares::new();
        spares.refill(Spares::wanted(streams));
        let mut seq: u16 = 0;
        let mut now: u64 = 1;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("decide", streams), &streams, |b, _| {
            b.iter(|| {
                let (slot, src) = targets[i];
                i += 1;
                if i == targets.len() {
                    i = 0;
                    seq = seq.wrapping_add(1);
                }
                now += 20_000;
                let pkt = rtp(seq, u32::from(seq) * 160);
                let pkt = black_box(&pkt);
                let admitted = forward::admit(&t.slots, slot, pkt.len(), &counters).is_some();
                let mut ctx = PacketCtx {
                    cfg: PathConfig {
                        strict: false,
                        gso: true,
                        connect: false,
                        batch_wait_us: 0,
                    },
                    counters: &counters,
                    events: &events,
                    dirty: &mut dirty,
                    spares: &mut spares,
                };
                let out = if admitted {
                    forward::decide(&mut t.slots, slot, src, pkt, now, &mut ctx)
                } else {
                    None
                };
                if dirty.list.len() == dirty.list.capacity() {
                    dirty.list.clear();
                }
                while events.pop().is_some() {}
                black_box(out)
            })
        });
        std::mem::forget(t);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
