//! The proxy's media hook over a relay set: the embedded relay answers at once; a remote
//! relay's step becomes an ng request the I/O side sends ([`RelayMedia::take_jobs`]), the
//! hook answers [`MediaResult::Pending`] (the proxy drops the message without changing any
//! state), and when the reply is fed back ([`RelayMedia::complete`]) the I/O side hands the
//! same message to the proxy again, which now finds the result here. Results are kept for
//! [`RESULT_TTL_NS`] so retransmissions of the message get the same body without a second
//! round trip. Deletes are sent without waiting (nothing in the SIP message depends on
//! them).
//!
//! An offer whose relay did not answer goes to another relay that is up (the call had
//! nothing there yet); an answer whose relay did not answer fails (the call's media is on
//! that relay), and the proxy forwards the SIP message unchanged.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ng;
use super::set::{HealthEvent, RelayId, RelaySet};
use super::spec::RelayTarget;
use crate::control::bencode::Owned;
use crate::session::backend::MediaBackend;
use crate::session::sip_media::SharedMedia;
use crate::sip::hash::fnv;
use crate::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult};
use crate::time::{Nanos, NANOS_PER_SEC};

/// How long a relay's answer for one message is kept (a transaction's lifetime, 64·T1).
pub const RESULT_TTL_NS: Nanos = 32 * NANOS_PER_SEC;

/// Most results and requests in flight kept (beyond, new remote steps fail with 503).
pub const MAX_PENDING: usize = 100_000;

/// Names one ng request the I/O side carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// One ng request to send to a remote relay.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: JobId,
    pub relay: RelayId,
    pub request: Owned,
    /// A delete: nobody waits for its reply (no message to hand back).
    pub detached: bool,
}

/// What came back for a job.
#[derive(Clone, Debug)]
pub enum Outcome {
    Reply {
        reply: Owned,
        rtt_ns: Nanos,
    },
    /// No reply after the retransmissions (or the relay could not be reached).
    GaveUp,
}

/// What the I/O side does after [`RelayMedia::complete`].
#[derive(Debug, Default)]
pub struct Completion {
    /// The message's step has its result: hand the message to the proxy again (unless
    /// another job of the same message is still out).
    pub ready: bool,
    /// A job that replaces this one (the offer moved to another relay).
    pub retry: Option<Job>,
    pub events: Vec<HealthEvent>,
}

/// The identity of one media step: the same message (or its retransmission) asks the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StepKey {
    op: u8,
    call_id: String,
    from_tag: String,
    to_tag: String,
    via_branch: String,
    body: u64,
}

impl StepKey {
    fn new(ctx: &MediaCtx<'_>, body: &[u8]) -> StepKey {
        StepKey {
            op: match ctx.op {
                MediaOp::Offer => 0,
                MediaOp::Answer => 1,
                MediaOp::Delete => 2,
            },
            call_id: ctx.call_id.to_owned(),
            from_tag: ctx.from_tag.to_owned(),
            to_tag: ctx.to_tag.unwrap_or("").to_owned(),
            via_branch: ctx.via_branch.unwrap_or("").to_owned(),
            body: fnv(0, &[body]),
        }
    }
}

struct InFlight {
    key: StepKey,
    relay: RelayId,
    request: Owned,
    tries: u32,
}

/// Relays tried for one offer before it fails.
const MAX_TRIES: u32 = 3;

/// The hook (see the module docs). Without a set it is the embedded relay's hook alone.
pub struct RelayMedia<B: MediaBackend> {
    embedded: Option<SharedMedia<B>>,
    set: Option<Arc<Mutex<RelaySet>>>,
    done: HashMap<StepKey, MediaResult>,
    done_order: VecDeque<(Nanos, StepKey)>,
    waiting: HashSet<StepKey>,
    in_flight: HashMap<JobId, InFlight>,
    /// Deletes sent without waiting, by the relay they went to.
    detached: HashMap<JobId, RelayId>,
    outbox: Vec<Job>,
    next_job: u64,
    /// Remote steps refused because too many were pending.
    pub overflow: u64,
}

fn lock(set: &Mutex<RelaySet>) -> MutexGuard<'_, RelaySet> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B: MediaBackend> RelayMedia<B> {
    /// The embedded relay alone (no `--media-relay`).
    pub fn embedded(media: SharedMedia<B>) -> Self {
        Self::with_set(Some(media), None)
    }

    /// A set; `embedded` serves its `embedded` entries.
    pub fn with_set(embedded: Option<SharedMedia<B>>, set: Option<Arc<Mutex<RelaySet>>>) -> Self {
        RelayMedia {
            embedded,
            set,
            done: HashMap::new(),
            done_order: VecDeque::new(),
            waiting: HashSet::new(),
            in_flight: HashMap::new(),
            detached: HashMap::new(),
            outbox: Vec::new(),
            next_job: 0,
            overflow: 0,
        }
    }

    pub fn set(&self) -> Option<&Arc<Mutex<RelaySet>>> {
        self.set.as_ref()
    }

    /// Requests to send, in order.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.outbox)
    }

    /// Steps waiting for a relay.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    fn job(&mut self, relay: RelayId, request: Owned, detached: bool) -> Job {
        self.next_job += 1;
        Job {
            id: JobId(self.next_job),
            relay,
            request,
            detached,
        }
    }

    fn on_embedded(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now: Nanos) -> MediaResult {
        match self.embedded.as_mut() {
            Some(m) => m.media(ctx, body, now),
            None => MediaResult::Unchanged,
        }
    }

    fn expire(&mut self, now: Nanos) {
        while let Some((at, _)) = self.done_order.front() {
            if now.saturating_sub(*at) <= RESULT_TTL_NS && self.done.len() <= MAX_PENDING {
                break;
            }
            if let Some((_, k)) = self.done_order.pop_front() {
                self.done.remove(&k);
            }
        }
    }

    fn finish(&mut self, key: StepKey, result: MediaResult, now: Nanos) {
        self.waiting.remove(&key);
        self.done_order.push_back((now, key.clone()));
        self.done.insert(key, result);
    }

    /// The reply (or give-up) of job `id`, at `now`.
    pub fn complete(&mut self, id: JobId, outcome: Outcome, now: Nanos) -> Completion {
        let mut out = Completion::default();
        let Some(set) = self.set.clone() else {
            return out;
        };
        let Some(mut f) = self.in_flight.remove(&id) else {
            // A detached delete: only its relay's health learns from it.
            if let Some(relay) = self.detached.remove(&id) {
                let mut set = lock(&set);
                match outcome {
                    Outcome::Reply { rtt_ns, .. } => {
                        set.on_request_rtt(relay, rtt_ns);
                        out.events.extend(set.on_answer(relay, now, rtt_ns))
                    }
                    Outcome::GaveUp => out.events.extend(set.on_given_up(relay)),
                }
            }
            return out;
        };
        match outcome {
            Outcome::Reply { reply, rtt_ns } => {
                let result = ng::interpret(&reply);
                {
                    let mut set = lock(&set);
                    set.on_request_rtt(f.relay, rtt_ns);
                    out.events.extend(set.on_answer(f.relay, now, rtt_ns));
                    if matches!(result, MediaResult::Failed { .. }) {
                        if let Some(c) = set.counters_mut(f.relay) {
                            c.errors += 1;
                        }
                    }
                }
                self.finish(f.key, result, now);
                out.ready = true;
            }
            Outcome::GaveUp => {
                let mut set = lock(&set);
                let offer = f.key.op == 0;
                if !offer || f.tries >= MAX_TRIES {
                    out.events.extend(set.on_given_up(f.relay));
                    drop(set);
                    let result = MediaResult::Failed {
                        status: 503,
                        reason: "Media relay not answering".to_owned(),
                    };
                    self.finish(f.key, result, now);
                    out.ready = true;
                    return out;
                }
                if let Some(c) = set.counters_mut(f.relay) {
                    c.timeouts += 1;
                }
                let (next, ev) = set.fail_over(&f.key.call_id, f.relay, now);
                out.events.extend(ev);
                let target = next.and_then(|n| set.target(n).cloned());
                if let Some(c) = next.and_then(|n| set.counters_mut(n)) {
                    c.offers += 1;
                }
                drop(set);
                match (next, target) {
                    (Some(n), Some(RelayTarget::Ng { .. })) => {
                        f.relay = n;
                        f.tries += 1;
                        let job = self.job(n, f.request.clone(), false);
                        self.in_flight.insert(job.id, f);
                        out.retry = Some(job);
                    }
                    (Some(_), Some(RelayTarget::Embedded)) => {
                        // The embedded relay answers when the message comes back: the
                        // call now sticks to it.
                        self.waiting.remove(&f.key);
                        out.ready = true;
                    }
                    _ => {
                        let result = MediaResult::Failed {
                            status: 503,
                            reason: "No media relay available".to_owned(),
                        };
                        self.finish(f.key, result, now);
                        out.ready = true;
                    }
                }
            }
        }
        out
    }
}

impl<B: MediaBackend> RelayMedia<B> {
    /// An offer's or answer's result when a remote relay serves (or served) it, `Pending`
    /// while its request is out; `None` when the embedded relay serves it.
    fn remote_step(
        &mut self,
        set: &Mutex<RelaySet>,
        ctx: &MediaCtx<'_>,
        body: &[u8],
        now: Nanos,
    ) -> Option<MediaResult> {
        if body.is_empty() {
            return Some(MediaResult::Unchanged);
        }
        self.expire(now);
        let key = StepKey::new(ctx, body);
        if let Some(r) = self.done.get(&key) {
            return Some(r.clone());
        }
        if self.waiting.contains(&key) {
            return Some(MediaResult::Pending);
        }
        let mut s = lock(set);
        let relay = match ctx.op {
            MediaOp::Offer => s.assign(ctx.call_id, now),
            _ => s.sticky(ctx.call_id, now),
        };
        let Some(relay) = relay else {
            return Some(match ctx.op {
                MediaOp::Offer => MediaResult::Failed {
                    status: 503,
                    reason: "No media relay available".to_owned(),
                },
                // An answer for a call no relay of the set holds.
                _ => MediaResult::Unchanged,
            });
        };
        if !matches!(s.target(relay), Some(RelayTarget::Ng { .. })) {
            return None;
        }
        if self.waiting.len() >= MAX_PENDING {
            self.overflow += 1;
            return Some(MediaResult::Failed {
                status: 503,
                reason: "Media relays overloaded".to_owned(),
            });
        }
        if let Some(c) = s.counters_mut(relay) {
            match ctx.op {
                MediaOp::Offer => c.offers += 1,
                _ => c.answers += 1,
            }
        }
        drop(s);
        let request = ng::request(ctx, body);
        let job = self.job(relay, request.clone(), false);
        self.in_flight.insert(
            job.id,
            InFlight {
                key: key.clone(),
                relay,
                request,
                tries: 1,
            },
        );
        self.waiting.insert(key);
        self.outbox.push(job);
        Some(MediaResult::Pending)
    }
}

impl<B: MediaBackend> MediaHook for RelayMedia<B> {
    fn ready(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now_ns: u64) -> bool {
        let Some(set) = self.set.clone() else {
            return true;
        };
        if ctx.op == MediaOp::Delete {
            return true;
        }
        !matches!(
            self.remote_step(&set, ctx, body, now_ns),
            Some(MediaResult::Pending)
        )
    }

    fn media(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now_ns: u64) -> MediaResult {
        let Some(set) = self.set.clone() else {
            return self.on_embedded(ctx, body, now_ns);
        };
        match ctx.op {
            MediaOp::Delete => {
                let (relay, target) = {
                    let mut s = lock(&set);
                    let relay = s.sticky(ctx.call_id, now_ns);
                    let target = relay.and_then(|r| s.target(r).cloned());
                    if ctx.via_branch.is_none() {
                        s.forget(ctx.call_id);
                    }
                    if let Some(c) = relay.and_then(|r| s.counters_mut(r)) {
                        c.deletes += 1;
                    }
                    (relay, target)
                };
                match (relay, target) {
                    (Some(r), Some(RelayTarget::Ng { .. })) => {
                        let job = self.job(r, ng::request(ctx, body), true);
                        if self.detached.len() < MAX_PENDING {
                            self.detached.insert(job.id, r);
                        }
                        self.outbox.push(job);
                        MediaResult::Unchanged
                    }
                    _ => self.on_embedded(ctx, body, now_ns),
                }
            }
            MediaOp::Offer | MediaOp::Answer => match self.remote_step(&set, ctx, body, now_ns) {
                Some(r) => r,
                None => {
                    {
                        let mut s = lock(&set);
                        let relay = s.sticky(ctx.call_id, now_ns);
                        if let Some(c) = relay.and_then(|r| s.counters_mut(r)) {
                            match ctx.op {
                                MediaOp::Offer => c.offers += 1,
                                _ => c.answers += 1,
                            }
                        }
                    }
                    self.on_embedded(ctx, body, now_ns)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relayset::set::HealthConfig;
    use crate::relayset::spec::parse_relay;
    use crate::session::fake::FakeBackend;
    use std::net::SocketAddr;

    fn hook(specs: &[&str]) -> RelayMedia<FakeBackend> {
        let specs = specs.iter().map(|s| parse_relay(s).unwrap()).collect();
        let set = RelaySet::new(specs, HealthConfig::default(), 0);
        RelayMedia::with_set(None, Some(Arc::new(Mutex::new(set))))
    }

    fn ctx(op: MediaOp) -> MediaCtx<'static> {
        MediaCtx {
            op,
            call_id: "c1",
            from_tag: "ft",
            to_tag: None,
            via_branch: Some("z9hG4bK1"),
            source: "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
            direction: None,
        }
    }

    const SDP: &[u8] = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn ok(sdp: &str) -> Outcome {
        Outcome::Reply {
            reply: Owned::dict().with("result", "ok").with("sdp", sdp),
            rtt_ns: 1000,
        }
    }

    /// A two-relay hook with the call's offer sent at t=1: the hook and that offer's job.
    fn offered() -> (RelayMedia<FakeBackend>, Job) {
        let mut h = hook(&["ng:127.0.0.1:1", "ng:127.0.0.2:1"]);
        assert!(!h.ready(&ctx(MediaOp::Offer), SDP, 1));
        let offer = h.take_jobs().remove(0);
        (h, offer)
    }

    /// As `offered`, the offer answered at t=2: the call is up on `offer.relay`.
    fn call_up() -> (RelayMedia<FakeBackend>, Job) {
        let (mut h, offer) = offered();
        assert!(h.complete(offer.id, ok("v=0 a"), 2).ready);
        (h, offer)
    }

    /// The BYE of the call (no Via branch of its own matters to the hook).
    fn bye() -> MediaCtx<'static> {
        MediaCtx {
            via_branch: None,
            ..ctx(MediaOp::Delete)
        }
    }

    /// The set's figures, relay by relay.
    fn snapshot(h: &RelayMedia<FakeBackend>) -> Vec<crate::relayset::set::RelaySnapshot> {
        let set = h.set().unwrap().clone();
        let snap = set.lock().unwrap().snapshot();
        snap
    }

    #[test]
    fn a_remote_step_waits_for_its_reply_then_answers_at_once() {
        let mut h = hook(&["ng:127.0.0.1:1", "ng:127.0.0.2:1"]);
        let c = ctx(MediaOp::Offer);
        assert!(!h.ready(&c, SDP, 1));
        let jobs = h.take_jobs();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].request.get("command").and_then(Owned::as_str),
            Some("offer")
        );
        // A retransmission while it is out: still waiting, no second request.
        assert!(!h.ready(&c, SDP, 2));
        assert_eq!(h.media(&c, SDP, 2), MediaResult::Pending);
        assert!(h.take_jobs().is_empty());
        let done = h.complete(jobs[0].id, ok("v=0 relayed"), 3);
        assert!(done.ready && done.retry.is_none());
        assert!(h.ready(&c, SDP, 4));
        assert_eq!(
            h.media(&c, SDP, 4),
            MediaResult::NewBody(b"v=0 relayed".to_vec())
        );
        // The answer goes to the same relay.
        let a = MediaCtx {
            op: MediaOp::Answer,
            to_tag: Some("tt"),
            ..ctx(MediaOp::Answer)
        };
        assert!(!h.ready(&a, SDP, 5));
        let answer = h.take_jobs();
        assert_eq!(answer[0].relay, jobs[0].relay);
        // The delete too, without waiting.
        assert_eq!(
            h.media(&ctx(MediaOp::Delete), b"", 6),
            MediaResult::Unchanged
        );
        let del = h.take_jobs();
        assert!(del[0].detached);
        assert_eq!(del[0].relay, jobs[0].relay);
        // The call's three round trips (1 µs each) are counted on its relay, pings aside.
        h.complete(answer[0].id, ok("v=0 relayed"), 7);
        h.complete(del[0].id, ok(""), 8);
        let snap = snapshot(&h);
        let c = &snap[usize::from(jobs[0].relay.0)].counters;
        assert_eq!(
            (
                c.request_rtts,
                c.request_rtt_median_us,
                c.request_rtt_p99_us
            ),
            (3, 1, 1)
        );
    }

    /// A relay dies mid-call: nothing in the dialog hangs on it.
    #[test]
    fn in_dialog_requests_of_a_call_whose_relay_died() {
        let (mut h, offer) = call_up();
        let dead = offer.relay;
        // A re-INVITE before anyone knows: its offer waits for the dead relay, is given up
        // and goes to the other relay; the re-INVITE then carries the other relay's SDP.
        let reinvite = MediaCtx {
            to_tag: Some("tt"),
            via_branch: Some("z9hG4bK2"),
            ..ctx(MediaOp::Offer)
        };
        const SDP2: &[u8] = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4002 RTP/AVP 0\r\n";
        assert!(!h.ready(&reinvite, SDP2, 3));
        let job = h.take_jobs().remove(0);
        assert_eq!(job.relay, dead);
        let done = h.complete(job.id, Outcome::GaveUp, 4);
        assert!(matches!(done.events[..], [HealthEvent::Down { .. }]));
        let retry = done.retry.expect("the offer moves");
        assert_ne!(retry.relay, dead);
        assert!(h.complete(retry.id, ok("v=0 b"), 5).ready);
        assert_eq!(
            h.media(&reinvite, SDP2, 5),
            MediaResult::NewBody(b"v=0 b".to_vec())
        );
        // Another re-INVITE once it is known down: straight to the live relay.
        let third = MediaCtx {
            via_branch: Some("z9hG4bK3"),
            ..reinvite
        };
        assert!(!h.ready(&third, SDP, 6));
        assert_eq!(h.take_jobs()[0].relay, retry.relay);
        // BYE: forwarded at once (its delete does not wait) to the relay the call is on.
        assert_eq!(h.media(&bye(), b"", 7), MediaResult::Unchanged);
        let del = h.take_jobs().remove(0);
        assert!(del.detached);
        assert_eq!(del.relay, retry.relay);
    }

    /// A BYE whose relay is dead and the call never moved: forwarded at once, the lost
    /// delete counted as a timeout of that relay.
    #[test]
    fn a_bye_on_a_dead_relay_is_forwarded_and_counted() {
        let (mut h, offer) = call_up();
        assert!(h.ready(&bye(), b"", 3));
        assert_eq!(h.media(&bye(), b"", 3), MediaResult::Unchanged);
        let del = h.take_jobs().remove(0);
        assert_eq!((del.relay, del.detached), (offer.relay, true));
        let done = h.complete(del.id, Outcome::GaveUp, 4);
        assert!(!done.ready && done.retry.is_none());
        assert!(matches!(
            done.events[..],
            [HealthEvent::Down { calls: 0, .. }]
        ));
        let snap = snapshot(&h);
        let r = &snap[usize::from(offer.relay.0)];
        assert_eq!((r.counters.deletes, r.counters.timeouts), (1, 1));
        assert_eq!(r.active_calls, 0);
    }

    #[test]
    fn an_offer_nobody_answers_moves_to_another_relay() {
        let (mut h, first) = offered();
        let c = ctx(MediaOp::Offer);
        let done = h.complete(first.id, Outcome::GaveUp, 2);
        assert!(!done.ready);
        assert!(matches!(done.events[..], [HealthEvent::Down { .. }]));
        let retry = done.retry.unwrap();
        assert_ne!(retry.relay, first.relay);
        let done = h.complete(retry.id, ok("v=0 second"), 3);
        assert!(done.ready);
        assert_eq!(
            h.media(&c, SDP, 4),
            MediaResult::NewBody(b"v=0 second".to_vec())
        );
        // Nothing up any more: a new offer is refused with 503.
        let again = h.complete(JobId(999), Outcome::GaveUp, 5);
        assert!(!again.ready);
        {
            let set = h.set().unwrap().clone();
            let mut s = set.lock().unwrap();
            s.on_given_up(retry.relay);
        }
        let other = MediaCtx {
            call_id: "c2",
            ..ctx(MediaOp::Offer)
        };
        assert!(matches!(
            h.media(&other, SDP, 6),
            MediaResult::Failed { status: 503, .. }
        ));
    }
}
