//! The store side of the manager: records written on change, restored on the same ports.

use std::sync::Arc;

use super::tests::{sig, ANSWER, OFFER, S};
use super::*;
use crate::session::backend::{LatchEventKind, MediaEvent, StreamStats};
use crate::session::fake::FakeBackend;
use crate::session::negotiate::NegotiateOptions;
use crate::store::record::{CallRecord, StatsRecord};
use crate::store::{ChangeSink, MemoryStore};

const UNIX0: Duration = Duration::from_secs(1_700_000_000);

fn mgr(min: u16) -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())],
        unix_at_zero: UNIX0,
        timeout_ns: 60 * S,
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(min, min + 999).unwrap(), cfg, S)
}

fn unix_ns(mono: Nanos) -> u64 {
    UNIX0.as_nanos() as u64 + mono
}

/// A call with one relayed stream (the answer rejects video), side A latched to a NATed
/// source, and some counters.
fn call_with_media(store: &Arc<MemoryStore>) -> SessionManager<FakeBackend> {
    let mut m = mgr(30000);
    m.set_store(store.clone());
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    m.answer(&sig("a", Some("b"), ANSWER), &o, 2 * S).unwrap();
    let id = m.call("c").unwrap().streams().next().unwrap().id;
    let nat: std::net::SocketAddr = "198.18.0.7:41000".parse().unwrap();
    let mut st = StreamStats::default();
    st.a.rtp.packets = 100;
    st.a.rtp.bytes = 17_200;
    st.b.rtp.packets = 90;
    st.a.rtp.last_packet_ns = 3 * S;
    st.a.learned_rtp = Some(nat);
    st.a.confirmed = true;
    m.backend_mut().set_stats(id, st);
    m.backend_mut().push_event(MediaEvent {
        stream: id,
        side: Side::A,
        rtcp: false,
        kind: LatchEventKind::Confirmed,
        addr: nat,
    });
    m.drain_events();
    m
}

#[test]
fn changes_are_written_once_per_flush_and_deletes_remove_the_call() {
    let store = Arc::new(MemoryStore::new());
    let mut m = call_with_media(&store);
    assert_eq!(m.pending_changes(), 1, "offer, answer and latch coalesce");
    assert_eq!(m.flush_changes(), 2, "the record and its first stats");
    assert_eq!(m.pending_changes(), 0);
    let loaded = store.load();
    assert_eq!(loaded.calls.len(), 1);
    let (id, rec, stats) = &loaded.calls[0];
    assert_eq!(id, "c");
    let rec = CallRecord::parse(rec).unwrap();
    let media = &rec.dialogues[0].media[0];
    assert_eq!(media.stream.unwrap().a_port, 30000);
    assert_eq!(media.a.learned, Some("198.18.0.7:41000".parse().unwrap()));
    assert!(media.a.confirmed && !media.b.confirmed);
    assert_eq!(media.a.rtp, Some("192.0.2.10:6000".parse().unwrap()));
    assert_eq!(rec.created_unix_ns, unix_ns(S));
    let stats = StatsRecord::parse(stats.as_deref().unwrap()).unwrap();
    assert_eq!(stats.streams[0].1[0].packets, 100);
    assert_eq!(stats.last_packet_unix_ns, unix_ns(3 * S));
    m.delete(
        &DeleteRequest {
            call_id: "c",
            ..DeleteRequest::default()
        },
        false,
        4 * S,
    )
    .unwrap();
    assert_eq!(m.flush_changes(), 1);
    assert!(store.load().calls.is_empty());
}

#[test]
fn nothing_is_tracked_without_a_store() {
    let mut m = mgr(30000);
    let o = NegotiateOptions::default();
    m.offer(&sig("a", None, OFFER), &o, S).unwrap();
    assert_eq!((m.pending_changes(), m.flush_changes()), (0, 0));
}

#[test]
fn restore_rebinds_the_ports_latched_endpoints_and_counters() {
    let store = Arc::new(MemoryStore::new());
    let mut old = call_with_media(&store);
    old.flush_changes();
    let before = old.query("c").unwrap();
    let loaded = store.load();
    let (_, rec, stats) = &loaded.calls[0];

    let mut m = mgr(30000);
    let now = 5 * S;
    m.restore(rec, stats.as_deref(), now, unix_ns(now)).unwrap();
    let after = m.query("c").unwrap();
    // Packet times are this process's own (none yet); everything else is as it was.
    let strip = |mut tags: Vec<TagReport>| {
        for t in &mut tags {
            for m in &mut t.medias {
                m.stats.rtp.last_packet_ns = 0;
                m.last_rtp_unix = 0;
            }
        }
        tags
    };
    assert_eq!(
        strip(after.tags),
        strip(before.tags),
        "same tags, ports, endpoints"
    );
    assert_eq!(after.totals.rtp.packets, 190);
    let s = m.call("c").unwrap().streams().next().copied().unwrap();
    assert_eq!((s.a_ports.rtp, s.b_ports.rtp), (30000, 30002));
    // The data plane starts at the latched source, not the SDP address.
    let spec = m.backend().stream(s.id).unwrap().spec.clone();
    assert_eq!(spec.a.rtp(), Some("198.18.0.7:41000".parse().unwrap()));
    assert_eq!(spec.b.rtp(), Some("198.51.100.20:16000".parse().unwrap()));
    // Query/delete answer for it; delete frees the ports.
    m.delete(
        &DeleteRequest {
            call_id: "c",
            ..DeleteRequest::default()
        },
        false,
        now,
    )
    .unwrap();
    assert_eq!(m.backend().port_usage().0, 0);
}

#[test]
fn a_call_whose_ports_are_taken_is_refused_and_leaves_nothing_open() {
    let store = Arc::new(MemoryStore::new());
    call_with_media(&store).flush_changes();
    let loaded = store.load();
    let (_, rec, stats) = &loaded.calls[0];
    let mut m = mgr(30000);
    // Another call holds 30000/30002 now.
    let o = NegotiateOptions::default();
    let other = Signal {
        call_id: "other",
        ..sig("x", None, OFFER)
    };
    m.offer(&other, &o, S).unwrap();
    let used = m.backend().port_usage().0;
    let e = m.restore(rec, stats.as_deref(), 2 * S, unix_ns(2 * S));
    assert!(
        matches!(e, Err(RestoreError::Ports(30000, 30002, _))),
        "{e:?}"
    );
    assert!(m.call("c").is_none());
    assert_eq!(m.backend().port_usage().0, used);
    // A record of another version or garbage is refused too.
    let newer = rec.replacen("{\"v\":1,", "{\"v\":9,", 1);
    assert!(matches!(
        m.restore(&newer, None, 2 * S, 0),
        Err(RestoreError::Record(_))
    ));
}

#[test]
fn timeout_counts_from_the_stored_last_packet() {
    let store = Arc::new(MemoryStore::new());
    call_with_media(&store).flush_changes();
    let loaded = store.load();
    let (_, rec, stats) = &loaded.calls[0];
    let mut m = mgr(30000);
    // The last packet (mono 3 s of the old process) was 50 s before the restore.
    let now = 2 * S;
    m.restore(rec, stats.as_deref(), now, unix_ns(3 * S) + 50 * S)
        .unwrap();
    assert!(m.tick(now + 5 * S).is_empty(), "55 s idle: still open");
    let closed = m.tick(now + 11 * S);
    assert_eq!(closed.len(), 1, "61 s idle: timed out");
    assert_eq!(closed[0].reason, CloseReason::Timeout);
}

#[test]
fn a_full_queue_is_counted_and_the_rest_waits() {
    let store = Arc::new(MemoryStore::bounded(1));
    let mut m = mgr(30000);
    m.set_store(store.clone());
    let o = NegotiateOptions::default();
    for id in ["c1", "c2"] {
        let s = Signal {
            call_id: id,
            ..sig("a", None, OFFER)
        };
        m.offer(&s, &o, S).unwrap();
    }
    assert_eq!(m.flush_changes(), 1);
    assert_eq!(store.refused(), 1);
    assert!(m.pending_changes() >= 1);
    store.take_pending();
    let mut rounds = 0;
    while m.pending_changes() > 0 && rounds < 10 {
        m.flush_changes();
        store.take_pending();
        rounds += 1;
    }
    assert_eq!(store.load().calls.len(), 2);
}

#[test]
fn media_refreshes_the_stored_counters() {
    let store = Arc::new(MemoryStore::new());
    let mut m = call_with_media(&store);
    m.flush_changes();
    let id = m.call("c").unwrap().streams().next().unwrap().id;
    let mut st = m.backend().stats(id).unwrap();
    st.a.rtp.packets = 500;
    st.a.rtp.last_packet_ns = 7 * S;
    m.backend_mut().set_stats(id, st);
    m.tick(8 * S);
    assert_eq!(m.flush_changes(), 1);
    let loaded = store.load();
    let stats = StatsRecord::parse(loaded.calls[0].2.as_deref().unwrap()).unwrap();
    assert_eq!(stats.streams[0].1[0].packets, 500);
    // Unchanged counters are not written again.
    m.tick(10 * S);
    assert_eq!(m.flush_changes(), 0);
}
