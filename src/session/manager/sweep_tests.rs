//! The timeout sweep at scale, through the fake backend and a clock: rounds paced to
//! [`SWEEP_VISITS_PER_SEC`], every call visited exactly once a round while calls come and go,
//! and media timeouts no later than one round period (plus a tick) after they are due.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::tests::S;
use super::*;
use crate::session::backend::StreamStats;
use crate::session::fake::FakeBackend;
use crate::session::interfaces::parse_interfaces;
use crate::session::negotiate::NegotiateOptions;

const MS: Nanos = S / 1000;
const TICK: Nanos = 10 * MS;
const AUDIO: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// Four addresses of one interface (round-robin), 25,000 port pairs each.
fn big_mgr(timeout_ns: Nanos) -> SessionManager<FakeBackend> {
    let cfg = ManagerConfig {
        interfaces: parse_interfaces(&["x/10.0.0.1", "x/10.0.0.2", "x/10.0.0.3", "x/10.0.0.4"])
            .unwrap(),
        timeout_ns,
        ..ManagerConfig::default()
    };
    SessionManager::new(FakeBackend::new(10000, 59999).unwrap(), cfg, S)
}

fn add_call(m: &mut SessionManager<FakeBackend>, id: &str, now: Nanos) -> StreamId {
    let sig = Signal {
        call_id: id,
        from_tag: "a",
        sdp: AUDIO.as_bytes(),
        ..Signal::default()
    };
    m.offer(&sig, &NegotiateOptions::default(), now).unwrap();
    m.call(id).unwrap().streams().next().unwrap().id
}

/// A stream that carried `packets` on side A's RTP socket, the last at `last_ns`.
fn heard(packets: u64, last_ns: Nanos) -> StreamStats {
    let mut st = StreamStats::default();
    st.a.rtp.packets = packets;
    st.a.rtp.bytes = packets * 172;
    st.a.rtp.last_packet_ns = last_ns;
    st
}

#[test]
fn round_period_follows_the_call_count() {
    use crate::session::quality::RELAY_SAMPLE_NS;
    assert_eq!(sweep_round_ns(0), S);
    assert_eq!(sweep_round_ns(2_500), S);
    assert_eq!(sweep_round_ns(3_000), 5 * S / 4);
    assert_eq!(sweep_round_ns(3_750), (5 * S).div_ceil(3));
    assert_eq!(sweep_round_ns(5_000), 5 * S / 2);
    assert_eq!(sweep_round_ns(12_500), 5 * S);
    assert_eq!(sweep_round_ns(12_501), 10 * S);
    assert_eq!(sweep_round_ns(25_000), 10 * S);
    assert_eq!(sweep_round_ns(1_000_000), SWEEP_ROUND_MAX_NS);
    for n in (0..60_000).step_by(250) {
        let r = sweep_round_ns(n);
        if r <= RELAY_SAMPLE_NS {
            // A whole number of rounds spans the sample interval (to the nanosecond).
            let parts = RELAY_SAMPLE_NS.div_ceil(r);
            assert!(parts * r >= RELAY_SAMPLE_NS && parts * r < RELAY_SAMPLE_NS + parts);
        } else {
            assert_eq!(r, SWEEP_ROUND_MAX_NS, "{n} calls");
        }
        assert!(n as u64 * S / r <= SWEEP_VISITS_PER_SEC.max(n as u64 * S / SWEEP_ROUND_MAX_NS));
    }
}

/// 25,000 calls: two rounds in twenty seconds (each stream read exactly twice: 2,500 visits
/// a second, not the 10,000 of back-to-back rounds), and every silent call closed no earlier
/// than its timeout and no later than one round period plus a tick after it, with a tenth of
/// the calls deleted meanwhile (which moves others in the sweep order).
#[test]
fn timeouts_fire_within_a_round_period_at_25000_calls() {
    let n = 25_000;
    let timeout = 30 * S;
    let mut m = big_mgr(timeout);
    let mut silent_since: BTreeMap<String, Nanos> = BTreeMap::new();
    for k in 0..n {
        let id = format!("c{k}");
        let stream = add_call(&mut m, &id, S);
        // Calls fall silent over 9.7 s, in an order unrelated to the sweep's.
        let last = S + (k as u64 * 7 % 97) * 100 * MS;
        assert!(m.backend_mut().set_stats(stream, heard(50, last)));
        silent_since.insert(id, last);
    }
    assert_eq!(m.call_count(), n);
    m.backend().take_counter_reads();

    let mut t = 2 * S;
    while t < 22 * S {
        assert!(m.tick(t).is_empty(), "nothing is silent for 30 s yet");
        t += TICK;
    }
    let reads = m.backend().take_counter_reads();
    assert_eq!(reads.len(), n, "every stream read in 20 s");
    assert!(
        reads.values().all(|&r| r == 2),
        "each stream read exactly twice in two rounds: {:?}",
        reads.values().copied().collect::<HashSet<_>>()
    );

    let mut deleted = HashSet::new();
    let mut closed_at: HashMap<String, Nanos> = HashMap::new();
    while t <= 60 * S {
        if t == 25 * S {
            for k in (0..n).step_by(10) {
                let id = format!("c{k}");
                let req = DeleteRequest {
                    call_id: &id,
                    ..DeleteRequest::default()
                };
                m.delete(&req, false, t).unwrap();
                deleted.insert(id);
            }
        }
        let closed = m.tick(t);
        for c in closed {
            assert_eq!(c.reason, CloseReason::Timeout);
            let prev = closed_at.insert(c.call_id.to_string(), t);
            assert!(prev.is_none(), "{} closed twice", c.call_id);
        }
        t += TICK;
    }
    assert_eq!(m.call_count(), 0);
    // A visit a round period after the last (and the tick that finds it due).
    let bound = SWEEP_ROUND_MAX_NS + TICK;
    let mut latest = 0;
    for (id, last) in &silent_since {
        if deleted.contains(id) {
            assert!(!closed_at.contains_key(id), "{id} deleted and timed out");
            continue;
        }
        let due = last + timeout;
        let at = *closed_at
            .get(id)
            .unwrap_or_else(|| panic!("{id} never timed out"));
        assert!(at >= due, "{id} closed at {at}, due at {due}");
        assert!(at <= due + bound, "{id} closed {} ms late", (at - due) / MS);
        latest = latest.max(at - due);
    }
    assert_eq!(closed_at.len() + deleted.len(), n);
    // The sweep is paced, not instant: some call waited most of a round.
    assert!(latest > SWEEP_ROUND_MAX_NS / 2, "latest {latest}");
}

/// Calls deleted and added between slices of a round: each call present for the whole round
/// is read exactly once in it, one added or deleted during it at most once; over two rounds.
#[test]
fn a_round_visits_each_call_once_while_calls_come_and_go() {
    let n = 2_537;
    let mut m = big_mgr(0);
    let mut next = 0usize;
    let mut stream_of: HashMap<String, StreamId> = HashMap::new();
    for _ in 0..n {
        let id = format!("c{next}");
        next += 1;
        let st = add_call(&mut m, &id, S);
        stream_of.insert(id, st);
    }
    let mut t = 2 * S;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2 {
        // Wait for the next round to start (the first tick after `done`).
        while m.sweep.started_ns.is_some() && m.sweep.done {
            m.tick(t);
            t += TICK;
        }
        assert!(!m.sweep.done, "round {round} started");
        let before: HashSet<String> = m.calls.values().map(|c| c.id.to_string()).collect();
        // The first tick of this round already read its first slice.
        let mut reads = m.backend().take_counter_reads();
        let mut touched: HashSet<String> = HashSet::new();
        let mut ticks = 0;
        while !m.sweep.done {
            // Delete three pseudo-random calls and add two between slices.
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let live: Vec<String> = m.calls.values().map(|c| c.id.to_string()).collect();
                let victim = &live[(rng % live.len() as u64) as usize];
                let req = DeleteRequest {
                    call_id: victim,
                    ..DeleteRequest::default()
                };
                m.delete(&req, false, t).unwrap();
                touched.insert(victim.clone());
            }
            for _ in 0..2 {
                let id = format!("c{next}");
                next += 1;
                let st = add_call(&mut m, &id, t);
                stream_of.insert(id.clone(), st);
                touched.insert(id);
            }
            m.tick(t);
            t += TICK;
            ticks += 1;
            assert!(ticks < 1_000, "round {round} never ended");
            for (id, r) in m.backend().take_counter_reads() {
                *reads.entry(id).or_default() += r;
            }
        }
        for id in &before {
            let st = stream_of[id];
            let r = reads.get(&st).copied().unwrap_or(0);
            if touched.contains(id) {
                assert!(r <= 1, "round {round}: {id} read {r} times");
            } else {
                assert_eq!(r, 1, "round {round}: {id} read {r} times");
            }
        }
        assert!(
            reads.values().all(|&r| r <= 1),
            "round {round}: a stream read twice"
        );
    }
}

/// Moving streams sampled for quality (their full figures read when a sample is due) and
/// silent ones timed out, from the same sweep: 100 calls, half fall silent at 3 s; each
/// moving stream gets a relay sample every [`RELAY_SAMPLE_NS`] after its first look and
/// never times out; each silent one times out within a round period and a tick of its due
/// time, with its counters read once a round.
#[test]
fn quality_samples_and_timeouts_come_from_the_same_sweep_reads() {
    use crate::session::quality::RELAY_SAMPLE_NS;
    let n = 100;
    let timeout = 10 * S;
    let mut m = big_mgr(timeout);
    let ids: Vec<(String, StreamId)> = (0..n)
        .map(|k| {
            let id = format!("q{k}");
            let s = add_call(&mut m, &id, 0);
            (id, s)
        })
        .collect();
    let stops = |k: usize| k % 2 == 0;
    let mut closed_at: HashMap<String, Nanos> = HashMap::new();
    let mut t = S;
    while t <= 30 * S {
        if t % S == 0 {
            for (k, (_, s)) in ids.iter().enumerate() {
                let secs = if stops(k) { (t / S).min(3) } else { t / S };
                let mut st = heard(50 * secs, secs * S);
                st.a.quality.expected = 50 * secs;
                st.a.quality.packets = 50 * secs;
                m.backend_mut().set_stats(*s, st);
            }
        }
        for c in m.tick(t) {
            assert_eq!(c.reason, CloseReason::Timeout);
            assert!(closed_at.insert(c.call_id.to_string(), t).is_none());
        }
        t += TICK;
    }
    for (k, (id, _)) in ids.iter().enumerate() {
        if stops(k) {
            let due = 3 * S + timeout;
            let at = closed_at[id.as_str()];
            assert!(
                at >= due && at <= due + SWEEP_ROUND_NS + TICK,
                "{id} at {at}"
            );
        } else {
            assert!(!closed_at.contains_key(id), "{id} moved and timed out");
        }
    }
    // Looked at first at 1 s (no relay sample off the first packets), then every 5 s while
    // the heard count moves: moving streams at 6, 11, 16, 21 and 26 s; silent ones once, at
    // 6 s, for their media of 1 to 3 s. One receiver each (B hears A).
    let half = (n / 2) as u64;
    let moving = (26 * S - S) / RELAY_SAMPLE_NS;
    assert_eq!(moving, 5);
    assert_eq!(m.sample_totals().mos.count, half * moving + half);
}
