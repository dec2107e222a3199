//! `tick`: ends lingering deletes, sweeps the calls for media timeouts in slices, and
//! updates the rates when a sweep round ends.

use crate::session::backend::{MediaBackend, SocketCounters, StreamId};
use crate::session::manager::{
    sweep_round_ns, CloseReason, ClosedCall, SessionManager, Totals, SWEEP_PER_TICK, WARM_AT_ONCE,
};
use crate::session::quality::StreamQuality;
use crate::session::record::EndReason;
use crate::time::{Nanos, NANOS_PER_SEC};

impl<B: MediaBackend> SessionManager<B> {
    /// Called every 10 ms or so: ends lingering deletes, sweeps up to [`SWEEP_PER_TICK`]
    /// calls for media timeouts, and updates the rates when a sweep round ends. A round
    /// starts at most once per [`sweep_round_ns`] of the calls at its start (1 s up to
    /// 2,500 calls, 5 s at 12,500, 10 s beyond); with up to 100 calls it ends in one tick.
    /// Returns the calls closed, for the caller to log with their final counters.
    pub fn tick(&mut self, now: Nanos) -> Vec<ClosedCall> {
        let mut closed = Vec::new();
        let mut expired = Vec::new();
        self.lingering.retain_mut(|l| {
            if l.deadline <= now {
                expired.push(std::mem::take(l));
                false
            } else {
                true
            }
        });
        for l in expired {
            let mut totals = Totals::default();
            for &id in &l.streams {
                if let Some(st) = self.backend.stats(id) {
                    totals.add_side(&st.a);
                    totals.add_side(&st.b);
                }
                self.close_stream(id);
            }
            closed.push(ClosedCall {
                call_id: l.call_id,
                reason: CloseReason::DeleteDelayExpired,
                age_ns: now.saturating_sub(l.created_ns),
                totals,
            });
        }

        // The timeout sweep, in slices of SWEEP_PER_TICK calls, over the call table's order.
        // A call added during a round is visited in it if the round has not ended yet; one
        // added after it ended waits for the next. A removal keeps the visited calls below
        // `pos` and moves calls only down (see `table`): none is visited twice in a round,
        // none skipped, and none later in a round than in the round before, so a call's
        // visits are at most a round period apart (or a round's length, beyond 50,000 calls).
        if self.sweep.done || self.sweep.started_ns.is_none() {
            if self
                .sweep
                .started_ns
                .is_some_and(|t| now.saturating_sub(t) < self.sweep.round_ns)
            {
                return closed;
            }
            self.calls.compact();
            self.sweep.pos = 0;
            self.sweep.done = false;
            self.sweep.live = Totals::default();
            self.sweep.started_ns = Some(now);
            self.sweep.round_ns = sweep_round_ns(self.calls.len());
        }
        let end = self
            .sweep
            .pos
            .saturating_add(SWEEP_PER_TICK)
            .min(self.calls.slot_count());
        let mut live = self.sweep.live;
        let mut dead = Vec::new();
        let mut moved = Vec::new();
        let persist = self.store.sink.is_some();
        // The slice's records into the cache first, their misses overlapped (in perf at
        // 25,000 calls the look-ups' misses were most of the sweep). A level at a time: each
        // pass's loads depend on the one before, not on one another, so the misses of a
        // whole slice are in flight together rather than a few calls' chains (call, then
        // its dialogues, then their media lists, then the stream and quality records).
        for call in self.calls.slice(self.sweep.pos, end) {
            std::hint::black_box(call.dialogues.as_ptr());
        }
        for call in self.calls.slice(self.sweep.pos, end) {
            for d in call.dialogues.iter() {
                std::hint::black_box(d.media.as_ptr());
            }
        }
        let ids = || {
            self.calls
                .slice(self.sweep.pos, end)
                .flat_map(|c| c.streams().map(|s| s.id))
        };
        self.backend.warm(ids());
        let mut boxes = [None; WARM_AT_ONCE];
        for (b, id) in boxes.iter_mut().zip(ids()) {
            *b = self.quality.get(&id).map(|q| &**q);
        }
        for q in boxes.iter().flatten() {
            std::hint::black_box(q.packets_seen());
        }
        for call in self.calls.slice(self.sweep.pos, end) {
            let mut last = call.last_signal_ns;
            for s in call.streams() {
                // One look-up of the stream for its counters and, when a quality sample is
                // due, its full figures. A stream that has carried nothing has nothing to
                // sample: its quality entry is made when the sweep first finds packets, not
                // kept for every silent stream (memory per call).
                let quality = &mut self.quality;
                let mut sampled: Option<&mut StreamQuality> = None;
                let sampled_at = &mut sampled;
                let due = move |c: &[SocketCounters; 4]| {
                    // Moved in whole (called once), so the entry outlives the call.
                    let quality = quality;
                    if c.iter().all(|c| c.packets == 0) {
                        return false;
                    }
                    let q = quality.entry(s.id).or_default();
                    let packets = c.iter().fold(0u64, |n, c| n.wrapping_add(c.packets));
                    let due = q.due(c[1].packets.wrapping_add(c[3].packets), packets, now);
                    *sampled_at = Some(q);
                    due
                };
                let Some((c, whole)) = self.backend.sweep_read(s.id, due) else {
                    continue;
                };
                let [a_rtp, a_rtcp, b_rtp, b_rtcp] = c;
                for c in [a_rtp, a_rtcp, b_rtp, b_rtcp] {
                    last = last.max(c.last_packet_ns);
                }
                live.rtp.add(&a_rtp);
                live.rtp.add(&b_rtp);
                live.rtcp.add(&a_rtcp);
                live.rtcp.add(&b_rtcp);
                if let (Some(st), Some(q)) = (whole, sampled) {
                    let taken = q.observe(&st, now, false);
                    for t in taken.iter().flatten() {
                        self.sample_totals.add(t);
                    }
                }
            }
            let mut idle = now.saturating_sub(last);
            let times = call.store_times();
            if last <= times.restored_ns {
                idle = idle.saturating_add(times.restored_idle_ns);
            }
            if self.cfg.timeout_ns > 0 && idle >= self.cfg.timeout_ns {
                dead.push(call.id.clone());
            } else if persist && last > times.stored_seen_ns {
                moved.push(call.id.clone());
            }
        }
        self.sweep.pos = end;
        self.sweep.live = live;
        for id in &moved {
            self.mark_stats_dirty(id);
        }
        let round_done = self.sweep.pos >= self.calls.slot_count();
        self.sweep.done = round_done;
        for id in dead {
            let Some(call) = self.remove_call(&id) else {
                continue;
            };
            let totals = self.call_totals(&call);
            let record = self
                .records
                .is_some()
                .then(|| self.build_record(&call, EndReason::Timeout, now));
            let ids: Vec<StreamId> = call.streams().map(|s| s.id).collect();
            self.close_streams(ids);
            self.timeouts += 1;
            tracing::info!(call_id = %id, "call timed out (no media)");
            if let Some(r) = record {
                self.send_record(r);
            }
            closed.push(ClosedCall {
                call_id: id,
                reason: CloseReason::Timeout,
                age_ns: now.saturating_sub(call.created_ns),
                totals,
            });
        }

        // Rates over the interval since the last finished sweep (live streams of calls still
        // open plus everything closed; lingering streams count once they close).
        if !round_done {
            return closed;
        }
        let mut total = self.closed;
        total.add(&live);
        let cur = total.sum();
        let dt = now.saturating_sub(self.rates.last_ns);
        if dt > 0 {
            let per_sec = |a: u64, b: u64| {
                (u128::from(a.saturating_sub(b)) * u128::from(NANOS_PER_SEC) / u128::from(dt))
                    as u64
            };
            self.rates.packet = per_sec(cur.packets, self.rates.last.packets);
            self.rates.byte = per_sec(cur.bytes, self.rates.last.bytes);
            self.rates.error = per_sec(cur.errors, self.rates.last.errors);
            self.rates.last = cur;
            self.rates.last_ns = now;
        }
        closed
    }
}
