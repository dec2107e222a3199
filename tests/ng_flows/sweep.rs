//! The timeout sweep: sliced across ticks, rates per round, every call visited once.

use super::*;

/// The timeout sweep visits at most SWEEP_PER_TICK calls per tick, so one tick's work stays
/// short however many calls there are; the rest wait for the next ticks.
#[test]
fn timeout_sweep_is_sliced_across_ticks() {
    let n = 10 * rtpanchor::session::manager::SWEEP_PER_TICK + 37;
    let mut m = mgr_ports(30000, 40000);
    for k in 0..n {
        let r = run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
        assert_eq!(s(&r, "result"), "ok", "call {k}");
    }
    assert_eq!(m.call_count(), n);
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let round = rtpanchor::session::manager::SWEEP_ROUND_NS;
    let mut closed_per_tick = Vec::new();
    // Calls moved into visited slots by the removals wait for the next round, which starts a
    // round period after this one did: ticks every 10 ms over four round periods.
    for k in 0..4 * round / (SEC / 100) {
        let closed = m.tick(200 * SEC + k * SEC / 100);
        assert!(closed.iter().all(|c| c.reason == CloseReason::Timeout));
        closed_per_tick.push(closed.len());
        if m.call_count() == 0 {
            break;
        }
    }
    assert_eq!(closed_per_tick[0], per_tick, "{closed_per_tick:?}");
    assert!(
        closed_per_tick.iter().all(|&c| c <= per_tick),
        "{closed_per_tick:?}"
    );
    assert_eq!(closed_per_tick.iter().sum::<usize>(), n);
    assert_eq!(m.call_count(), 0);
    assert_eq!(m.backend().open_count(), 0);
}

/// With more calls than one tick sweeps, the rates are computed once per sweep round, over
/// the round's whole interval, with every stream counted once.
#[test]
fn rates_come_from_whole_sweep_rounds() {
    const MS: u64 = SEC / 1000;
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let n = per_tick + 1;
    let mut m = mgr_ports(30000, 31000);
    for k in 0..n {
        run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
    }
    let ids: Vec<StreamId> = m.backend().streams().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), n);
    let packet_rate = |m: &mut SessionManager<FakeBackend>, now| {
        let r = run(m, req("statistics"), now);
        let st = r.get("statistics").unwrap();
        i(st.get("currentstatistics").unwrap(), "packetrate")
    };
    // Round 1 (two ticks) ends 1.01 s after the manager started: 24 packets per stream.
    for &id in &ids {
        m.backend_mut().set_stats(id, stats_with(10, SEC));
    }
    m.tick(2 * SEC);
    m.tick(2 * SEC + 10 * MS);
    assert_eq!(
        packet_rate(&mut m, 2 * SEC + 20 * MS),
        (24 * n as i64) * 100 / 101
    );
    // Round 2: 200 more packets per stream, over 1.01 s again. Mid-round the rate stays.
    for &id in &ids {
        m.backend_mut().set_stats(id, stats_with(110, 3 * SEC));
    }
    m.tick(3 * SEC + 10 * MS);
    assert_eq!(
        packet_rate(&mut m, 3 * SEC + 15 * MS),
        (24 * n as i64) * 100 / 101
    );
    m.tick(3 * SEC + 20 * MS);
    assert_eq!(
        packet_rate(&mut m, 3 * SEC + 30 * MS),
        200 * n as i64 * 100 / 101
    );
}

/// With few calls a round ends in one tick, but the next starts only a round period after it
/// did: the sweep (and the rates it yields) runs once a second, not on every 10 ms tick.
#[test]
fn sweep_rounds_start_at_most_once_a_round_period() {
    const MS: u64 = SEC / 1000;
    let round = rtpanchor::session::manager::SWEEP_ROUND_NS;
    let mut m = mgr();
    run(&mut m, offer("c1", "tagA", OFFER), SEC);
    let id = only_stream(&m);
    let packet_rate = |m: &mut SessionManager<FakeBackend>, now| {
        let r = run(m, req("statistics"), now);
        let st = r.get("statistics").unwrap();
        i(st.get("currentstatistics").unwrap(), "packetrate")
    };
    // Round 1 at 2 s.
    m.backend_mut().set_stats(id, stats_with(10, 2 * SEC));
    m.tick(2 * SEC);
    let first = packet_rate(&mut m, 2 * SEC);
    assert!(first > 0);
    // 100 more packets (50 each way); ticks every 10 ms until just before the round period
    // is over leave the rate alone: no round starts.
    m.backend_mut()
        .set_stats(id, stats_with(60, 2 * SEC + 500 * MS));
    let mut t = 2 * SEC + 10 * MS;
    while t < 2 * SEC + round {
        m.tick(t);
        t += 10 * MS;
    }
    assert_eq!(packet_rate(&mut m, 2 * SEC + round - MS), first);
    // The first tick a round period after the last round began runs the next one.
    m.tick(2 * SEC + round);
    assert_eq!(
        packet_rate(&mut m, 2 * SEC + round),
        (100 * SEC / round) as i64
    );
    // Timeouts are found by those rounds: silent since 2.5 s, the call times out at the
    // first round 60 s later.
    let mut closed = Vec::new();
    let mut t = 3 * SEC;
    while t <= 64 * SEC && closed.is_empty() {
        closed = m.tick(t);
        t += 10 * MS;
    }
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, CloseReason::Timeout);
    let found = t - 10 * MS;
    assert!(
        (62 * SEC + 500 * MS..=62 * SEC + 500 * MS + round).contains(&found),
        "timed out at {found} ns"
    );
}

/// Calls deleted between sweep slices move other calls around in the sweep order; every
/// remaining call must still be visited (and timed out) exactly once.
#[test]
fn sweep_visits_every_call_once_despite_deletes() {
    let per_tick = rtpanchor::session::manager::SWEEP_PER_TICK;
    let n = 2 * per_tick + 50;
    let mut m = mgr_ports(30000, 33000);
    for k in 0..n {
        run(&mut m, offer(&format!("c{k}"), "tagA", OFFER), SEC);
    }
    // One slice, then delete every third call (some already visited, some not).
    let mut closed: Vec<String> = m
        .tick(2 * SEC)
        .into_iter()
        .map(|c| c.call_id.to_string())
        .collect();
    assert!(closed.is_empty(), "nothing is silent for 60 s yet");
    let mut deleted = std::collections::HashSet::new();
    for k in (0..n).step_by(3) {
        let r = run(
            &mut m,
            req("delete").with("call-id", format!("c{k}").as_str()),
            2 * SEC,
        );
        assert_eq!(s(&r, "result"), "ok");
        deleted.insert(format!("c{k}"));
    }
    for t in 0..(2 * n / per_tick + 4) as u64 {
        closed.extend(
            m.tick(200 * SEC + t * SEC / 100)
                .into_iter()
                .map(|c| c.call_id.to_string()),
        );
    }
    let unique: std::collections::HashSet<&String> = closed.iter().collect();
    assert_eq!(unique.len(), closed.len(), "a call closed twice");
    assert!(closed.iter().all(|c| !deleted.contains(c)));
    assert_eq!(closed.len(), n - deleted.len());
    assert_eq!(m.call_count(), 0);
}
