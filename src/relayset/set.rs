//! The relays of a set and what is known of them: weights, health, which call is on which
//! relay, per-relay counters. Pure state over a caller-supplied clock.
//!
//! - **Choice**: smooth weighted round robin over the relays that are up (each pick adds
//!   every candidate's weight to its credit and takes the total from the winner's), so 300
//!   calls over weights 3:2:1 land 150/100/50 exactly, interleaved, not in bursts.
//! - **Stickiness**: a call (by Call-ID) stays on the relay its first offer went to, for
//!   every later offer, answer and delete, until deleted or idle for `sticky_ttl_ns`
//!   (Kamailio keeps its call-id table an hour). Calls on a relay that goes down stay
//!   where they are: they are counted and named in the down event, never moved (the relay
//!   holds their ports; another relay cannot take them over without the state store).
//! - **Health**: pings go out every `ping_every_ns` from the I/O side; a relay is down when
//!   `misses_to_down` pings in a row had no reply within `ping_timeout_ns` (by default two
//!   pings 500 ms apart, 600 ms each: within 1.6 s of dying), and at once when a request
//!   to it was given up after its retransmissions. A down relay keeps being pinged; its first answer brings it
//!   back.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;

use super::rtt::RttHistogram;
use super::spec::{RelaySpec, RelayTarget};
use crate::time::{Nanos, NANOS_PER_MS, NANOS_PER_SEC};

/// A relay's index in its set (the order of `--media-relay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u16);

#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    pub ping_every_ns: Nanos,
    /// A ping without a reply after this long is missed.
    pub ping_timeout_ns: Nanos,
    /// Consecutive missed pings that mark a relay down (one miss can be a stall of ours).
    pub misses_to_down: u32,
    /// [`RelaySet::tick`]: a relay silent for this long is down.
    pub dead_after_ns: Nanos,
    pub sticky_ttl_ns: Nanos,
    /// Most calls remembered (the oldest beyond are forgotten).
    pub max_calls: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ping_every_ns: 500 * NANOS_PER_MS,
            ping_timeout_ns: 600 * NANOS_PER_MS,
            misses_to_down: 2,
            dead_after_ns: 1200 * NANOS_PER_MS,
            sticky_ttl_ns: 3600 * NANOS_PER_SEC,
            max_calls: 1_000_000,
        }
    }
}

/// Per-relay counters (monotonic) and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Calls whose first offer chose this relay.
    pub calls: u64,
    pub offers: u64,
    pub answers: u64,
    pub deletes: u64,
    /// Requests answered with `result: error`.
    pub errors: u64,
    /// Requests given up after their retransmissions.
    pub timeouts: u64,
    /// Offers moved to another relay after this one did not answer.
    pub failovers: u64,
    pub pings: u64,
    pub pongs: u64,
    /// Times the relay was found down.
    pub downs: u64,
    /// Calls it held when it went down (summed over downs).
    pub calls_stranded: u64,
    /// The last ng round trip, microseconds.
    pub last_rtt_us: u64,
    /// Round trips of the calls' requests (offer, answer, delete; not pings): how many,
    /// their median and 99th percentile in microseconds (filled by [`RelaySet::snapshot`]).
    pub request_rtts: u64,
    pub request_rtt_median_us: u64,
    pub request_rtt_p99_us: u64,
}

/// One relay's figures for `statistics` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySnapshot {
    pub id: RelayId,
    /// `ng:ADDR` or `embedded`.
    pub name: String,
    pub weight: u32,
    pub up: bool,
    /// Calls on it now.
    pub active_calls: u64,
    pub counters: RelayCounters,
}

/// A relay going down or coming back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    Down {
        id: RelayId,
        /// How many calls it holds (left where they are).
        calls: usize,
        /// Their Call-IDs, at most [`NAMED_CALLS`].
        named: Vec<String>,
    },
    Up {
        id: RelayId,
    },
}

/// Call-IDs named in a down event (the count is always exact).
pub const NAMED_CALLS: usize = 20;

struct Relay {
    spec: RelaySpec,
    up: bool,
    last_ok: Nanos,
    missed: u32,
    credit: i64,
    active: u64,
    counters: RelayCounters,
    rtts: RttHistogram,
}

struct Sticky {
    relay: RelayId,
    used: Nanos,
}

/// The set (see the module docs).
pub struct RelaySet {
    relays: Vec<Relay>,
    calls: HashMap<String, Sticky>,
    cfg: HealthConfig,
    next_expiry: Nanos,
}

impl RelaySet {
    /// Every relay starts up (as if it had just answered): a dead one is found by its
    /// first pings or requests.
    pub fn new(specs: Vec<RelaySpec>, cfg: HealthConfig, now: Nanos) -> RelaySet {
        let relays = specs
            .into_iter()
            .map(|spec| Relay {
                spec,
                up: true,
                last_ok: now,
                missed: 0,
                credit: 0,
                active: 0,
                counters: RelayCounters::default(),
                rtts: RttHistogram::default(),
            })
            .collect();
        RelaySet {
            relays,
            calls: HashMap::new(),
            cfg,
            next_expiry: now.saturating_add(NANOS_PER_SEC),
        }
    }

    pub fn config(&self) -> HealthConfig {
        self.cfg
    }

    pub fn len(&self) -> usize {
        self.relays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = RelayId> + '_ {
        (0..self.relays.len()).map(|i| RelayId(i as u16))
    }

    fn relay(&self, id: RelayId) -> Option<&Relay> {
        self.relays.get(usize::from(id.0))
    }

    fn relay_mut(&mut self, id: RelayId) -> Option<&mut Relay> {
        self.relays.get_mut(usize::from(id.0))
    }

    pub fn target(&self, id: RelayId) -> Option<&RelayTarget> {
        self.relay(id).map(|r| &r.spec.target)
    }

    pub fn is_up(&self, id: RelayId) -> bool {
        self.relay(id).is_some_and(|r| r.up)
    }

    pub fn counters_mut(&mut self, id: RelayId) -> Option<&mut RelayCounters> {
        self.relay_mut(id).map(|r| &mut r.counters)
    }

    /// A relay for a new call: smooth weighted round robin over those up.
    pub fn choose(&mut self) -> Option<RelayId> {
        let total: i64 = self
            .relays
            .iter()
            .filter(|r| r.up)
            .map(|r| i64::from(r.spec.weight))
            .sum();
        for r in self.relays.iter_mut().filter(|r| r.up) {
            r.credit += i64::from(r.spec.weight);
        }
        // The highest credit wins (the first on ties).
        let winner = self
            .relays
            .iter()
            .enumerate()
            .filter(|(_, r)| r.up)
            .max_by(|(ia, a), (ib, b)| a.credit.cmp(&b.credit).then(ib.cmp(ia)))
            .map(|(i, _)| i)?;
        if let Some(r) = self.relays.get_mut(winner) {
            r.credit -= total;
        }
        Some(RelayId(winner as u16))
    }

    /// The relay holding `call_id`, if any (touches it).
    pub fn sticky(&mut self, call_id: &str, now: Nanos) -> Option<RelayId> {
        let s = self.calls.get_mut(call_id)?;
        s.used = now;
        Some(s.relay)
    }

    /// The relay of an offer of `call_id`: the one it sticks to, or a new choice it now
    /// sticks to. A call whose relay is down moves to one that is up (an offer sets up both
    /// of its legs anew, e.g. a re-INVITE: the media follow), counted as a fail-over of the
    /// dead one, instead of waiting for the dead relay's timeout first.
    pub fn assign(&mut self, call_id: &str, now: Nanos) -> Option<RelayId> {
        self.expire(now);
        if let Some(id) = self.sticky(call_id, now) {
            if self.is_up(id) || !self.relays.iter().any(|r| r.up) {
                return Some(id);
            }
            self.forget(call_id);
            if let Some(c) = self.counters_mut(id) {
                c.failovers += 1;
            }
        }
        let id = self.choose()?;
        self.stick(call_id, id, now);
        Some(id)
    }

    fn stick(&mut self, call_id: &str, id: RelayId, now: Nanos) {
        if self.calls.len() >= self.cfg.max_calls {
            self.expire_oldest();
        }
        if let Some(old) = self.calls.insert(
            call_id.to_owned(),
            Sticky {
                relay: id,
                used: now,
            },
        ) {
            self.release(old.relay);
        }
        if let Some(r) = self.relay_mut(id) {
            r.active += 1;
            r.counters.calls += 1;
        }
    }

    fn release(&mut self, id: RelayId) {
        if let Some(r) = self.relay_mut(id) {
            r.active = r.active.saturating_sub(1);
        }
    }

    /// The call ended (a delete of the whole call).
    pub fn forget(&mut self, call_id: &str) {
        if let Some(s) = self.calls.remove(call_id) {
            self.release(s.relay);
        }
    }

    /// An offer to `failed` was given up: the relay is down, the call goes elsewhere (a new
    /// call: it has nothing on `failed` yet). The new relay, if any is up.
    pub fn fail_over(
        &mut self,
        call_id: &str,
        failed: RelayId,
        now: Nanos,
    ) -> (Option<RelayId>, Option<HealthEvent>) {
        if let Some(c) = self.counters_mut(failed) {
            c.failovers += 1;
        }
        if self.calls.get(call_id).is_some_and(|s| s.relay == failed) {
            self.forget(call_id);
        }
        let ev = self.mark_down(failed);
        let id = self.choose();
        if let Some(id) = id {
            self.stick(call_id, id, now);
        }
        (id, ev)
    }

    /// Something the relay sent answered (a pong or any reply) after `rtt_ns`.
    pub fn on_answer(&mut self, id: RelayId, now: Nanos, rtt_ns: Nanos) -> Option<HealthEvent> {
        let r = self.relay_mut(id)?;
        r.last_ok = r.last_ok.max(now);
        r.missed = 0;
        r.counters.last_rtt_us = rtt_ns / 1000;
        if r.up {
            return None;
        }
        r.up = true;
        // Back with no head start over the others.
        r.credit = 0;
        Some(HealthEvent::Up { id })
    }

    /// A call's request (offer, answer, delete) was answered after `rtt_ns`.
    pub fn on_request_rtt(&mut self, id: RelayId, rtt_ns: Nanos) {
        if let Some(r) = self.relay_mut(id) {
            r.rtts.record(rtt_ns / 1000);
        }
    }

    /// A request to the relay was given up after its retransmissions.
    pub fn on_given_up(&mut self, id: RelayId) -> Option<HealthEvent> {
        if let Some(c) = self.counters_mut(id) {
            c.timeouts += 1;
        }
        self.mark_down(id)
    }

    /// A ping had no reply within `ping_timeout_ns`.
    pub fn on_ping_missed(&mut self, id: RelayId) -> Option<HealthEvent> {
        let need = self.cfg.misses_to_down.max(1);
        let r = self.relay_mut(id)?;
        r.missed = r.missed.saturating_add(1);
        if r.missed < need {
            return None;
        }
        self.mark_down(id)
    }

    /// Relays silent for longer than `dead_after_ns` go down (for a caller that judges
    /// health by silence rather than by missed pings).
    pub fn tick(&mut self, now: Nanos) -> Vec<HealthEvent> {
        let dead_after = self.cfg.dead_after_ns;
        let silent: Vec<RelayId> = self
            .ids()
            .filter(|&id| {
                self.relay(id).is_some_and(|r| {
                    r.up && !matches!(r.spec.target, RelayTarget::Embedded)
                        && now.saturating_sub(r.last_ok) > dead_after
                })
            })
            .collect();
        silent
            .into_iter()
            .filter_map(|id| self.mark_down(id))
            .collect()
    }

    fn mark_down(&mut self, id: RelayId) -> Option<HealthEvent> {
        let r = self.relay(id)?;
        if !r.up || matches!(r.spec.target, RelayTarget::Embedded) {
            return None;
        }
        let mut named: Vec<String> = Vec::new();
        let mut calls = 0usize;
        for (call, s) in &self.calls {
            if s.relay == id {
                calls += 1;
                if named.len() < NAMED_CALLS {
                    named.push(call.clone());
                }
            }
        }
        named.sort();
        let r = self.relay_mut(id)?;
        r.up = false;
        r.counters.downs += 1;
        r.counters.calls_stranded += calls as u64;
        Some(HealthEvent::Down { id, calls, named })
    }

    /// Forgets calls idle for longer than the stickiness lifetime (at most once a second).
    fn expire(&mut self, now: Nanos) {
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now.saturating_add(NANOS_PER_SEC);
        let ttl = self.cfg.sticky_ttl_ns;
        let old: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.used) > ttl)
            .map(|(c, _)| c.clone())
            .collect();
        for c in old {
            self.forget(&c);
        }
    }

    fn expire_oldest(&mut self) {
        if let Some(c) = self
            .calls
            .iter()
            .min_by_key(|(_, s)| s.used)
            .map(|(c, _)| c.clone())
        {
            self.forget(&c);
        }
    }

    /// Every relay's figures.
    pub fn snapshot(&self) -> Vec<RelaySnapshot> {
        self.relays
            .iter()
            .enumerate()
            .map(|(i, r)| RelaySnapshot {
                id: RelayId(i as u16),
                name: match &r.spec.target {
                    RelayTarget::Embedded => "embedded".to_owned(),
                    RelayTarget::Ng { addr, .. } => format!("ng:{addr}"),
                },
                weight: r.spec.weight,
                up: r.up,
                active_calls: r.active,
                counters: RelayCounters {
                    request_rtts: r.rtts.samples(),
                    request_rtt_median_us: r.rtts.quantile_us(0.5),
                    request_rtt_p99_us: r.rtts.quantile_us(0.99),
                    ..r.counters.clone()
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relayset::spec::parse_relay;

    fn set(specs: &[&str]) -> RelaySet {
        let specs = specs.iter().map(|s| parse_relay(s).unwrap()).collect();
        RelaySet::new(specs, HealthConfig::default(), 0)
    }

    const THREE: [&str; 3] = [
        "ng:127.0.0.1:1;weight=3",
        "ng:127.0.0.2:1;weight=2",
        "ng:127.0.0.3:1",
    ];

    #[test]
    fn weights_spread_calls_interleaved() {
        let mut s = set(&THREE);
        let mut n = [0u32; 3];
        let mut first_six = Vec::new();
        for i in 0..300 {
            let id = s.assign(&format!("c{i}"), 1).unwrap();
            n[usize::from(id.0)] += 1;
            if i < 6 {
                first_six.push(id.0);
            }
        }
        assert_eq!(n, [150, 100, 50]);
        // Smooth: not three in a row on the heaviest.
        assert_ne!(&first_six[..3], &[0, 0, 0]);
        assert_eq!(s.snapshot()[0].active_calls, 150);
    }

    #[test]
    fn a_call_sticks_until_forgotten() {
        let mut s = set(&THREE);
        let a = s.assign("x", 1).unwrap();
        for _ in 0..10 {
            s.assign("other", 1);
            s.forget("other");
            assert_eq!(s.assign("x", 2), Some(a));
        }
        s.forget("x");
        assert_eq!(s.sticky("x", 3), None);
        assert_eq!(s.snapshot().iter().map(|r| r.active_calls).sum::<u64>(), 0);
    }

    #[test]
    fn silent_relay_goes_down_and_comes_back() {
        let mut s = set(&THREE);
        for i in 0..6 {
            s.assign(&format!("c{i}"), 1);
        }
        let ms = NANOS_PER_MS;
        // Relays 0 and 2 answer; 1 stays silent.
        for t in [400, 800, 1200] {
            s.on_answer(RelayId(0), t * ms, 100_000);
            s.on_answer(RelayId(2), t * ms, 100_000);
            assert!(s.tick(t * ms).is_empty());
        }
        let ev = s.tick(1300 * ms);
        assert_eq!(ev.len(), 1);
        let HealthEvent::Down { id, calls, named } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(*id, RelayId(1));
        assert_eq!(*calls, 2);
        assert_eq!(named.len(), 2);
        // Its calls stay; new calls avoid it.
        assert_eq!(s.sticky(&named[0], 1400 * ms), Some(RelayId(1)));
        for i in 0..40 {
            assert_ne!(s.assign(&format!("n{i}"), 1400 * ms), Some(RelayId(1)));
        }
        assert_eq!(s.snapshot()[1].counters.calls_stranded, 2);
        // Back on its next answer, and chosen again.
        assert_eq!(
            s.on_answer(RelayId(1), 1500 * ms, 1),
            Some(HealthEvent::Up { id: RelayId(1) })
        );
        let back = (0..12)
            .filter(|i| s.assign(&format!("b{i}"), 1600 * ms) == Some(RelayId(1)))
            .count();
        assert_eq!(back, 4);
    }

    #[test]
    fn two_missed_pings_in_a_row_mark_a_relay_down() {
        let mut s = set(&THREE);
        assert_eq!(s.on_ping_missed(RelayId(0)), None);
        s.on_answer(RelayId(0), 1, 1);
        assert_eq!(s.on_ping_missed(RelayId(0)), None);
        assert!(matches!(
            s.on_ping_missed(RelayId(0)),
            Some(HealthEvent::Down { .. })
        ));
        assert!(!s.is_up(RelayId(0)));
    }

    #[test]
    fn fail_over_moves_a_new_call() {
        let mut s = set(&THREE);
        let first = s.assign("x", 1).unwrap();
        let (next, ev) = s.fail_over("x", first, 2);
        assert!(matches!(ev, Some(HealthEvent::Down { calls: 0, .. })));
        let next = next.unwrap();
        assert_ne!(next, first);
        assert_eq!(s.sticky("x", 3), Some(next));
        // Nobody up: no relay.
        for id in [RelayId(0), RelayId(1), RelayId(2)] {
            s.on_given_up(id);
        }
        assert_eq!(s.assign("y", 4), None);
    }

    #[test]
    fn an_offer_on_a_call_whose_relay_died_moves_at_once() {
        let mut s = set(&THREE);
        let first = s.assign("x", 1).unwrap();
        assert!(matches!(
            s.on_given_up(first),
            Some(HealthEvent::Down { calls: 1, .. })
        ));
        // A re-INVITE's offer: another relay, the call sticks there, counted.
        let next = s.assign("x", 2).unwrap();
        assert_ne!(next, first);
        assert_eq!(s.sticky("x", 3), Some(next));
        let snap = s.snapshot();
        assert_eq!(snap[usize::from(first.0)].counters.failovers, 1);
        assert_eq!(snap[usize::from(first.0)].active_calls, 0);
        assert_eq!(snap[usize::from(next.0)].active_calls, 1);
        // Nobody up: it stays where it is (the request tells).
        for id in [RelayId(0), RelayId(1), RelayId(2)] {
            s.on_given_up(id);
        }
        assert_eq!(s.assign("x", 4), Some(next));
    }

    #[test]
    fn embedded_never_goes_down() {
        let mut s = set(&["embedded", "ng:127.0.0.1:1"]);
        assert!(s.on_given_up(RelayId(0)).is_none());
        let ev = s.tick(10 * NANOS_PER_SEC);
        assert_eq!(ev.len(), 1);
        assert!(s.is_up(RelayId(0)));
        assert_eq!(s.assign("x", 1), Some(RelayId(0)));
    }
}
