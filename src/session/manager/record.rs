//! Call records (`session::record`) at every end of a call, handed to a bounded channel the
//! writer drains off the manager's lock; and ending calls on an operator's or the process's
//! behalf (terminate, drain timeout, shutdown).

use std::sync::mpsc::{SyncSender, TrySendError};

use crate::session::backend::{MediaBackend, Side};
use crate::session::manager::{SessionError, SessionManager};
use crate::session::model::Call;
use crate::session::quality::StreamQuality;
use crate::session::record::{CallRecord, DirectionRecord, EndReason, StreamRecord};
use crate::time::Nanos;

/// `part` of `whole` in percent, to two decimals (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    ((part.min(whole) as f64) * 10_000.0 / whole as f64).round() / 100.0
}

impl<B: MediaBackend> SessionManager<B> {
    /// Sends a record of every call that ends from now on to `tx` (a bounded channel: when it
    /// is full the record is dropped and counted, never waited for).
    pub fn set_record_sink(&mut self, tx: SyncSender<CallRecord>) {
        self.records = Some(tx);
    }

    /// Stops recording; the writer ends once it has written what is queued.
    pub fn take_record_sink(&mut self) -> Option<SyncSender<CallRecord>> {
        self.records.take()
    }

    /// Records dropped because the writer's queue was full.
    pub fn records_dropped(&self) -> u64 {
        self.records_dropped
    }

    fn unix_secs_f64(&self, mono: Nanos) -> f64 {
        let d = self.cfg.unix_at_zero + std::time::Duration::from_nanos(mono);
        (d.as_millis() as f64) / 1000.0
    }

    /// The record of `call` ending now (counters as the data plane last published them).
    pub(super) fn build_record(&self, call: &Call, reason: EndReason, now: Nanos) -> CallRecord {
        let mut streams = Vec::new();
        for d in &call.dialogues {
            for m in &d.media {
                let Some(opened) = m.stream else {
                    continue;
                };
                let Some(st) = self.backend.stats(opened.id) else {
                    continue;
                };
                let mut q = self
                    .quality
                    .get(&opened.id)
                    .map(|q| StreamQuality::clone(q))
                    .unwrap_or_default();
                q.observe(&st, now, true);
                let mut directions = Vec::new();
                for from in [Side::A, Side::B] {
                    let to = from.other();
                    let s = st.side(from);
                    let heard = q.summary(&st, to);
                    let port = match from {
                        Side::A => opened.a_ports.rtp,
                        Side::B => opened.b_ports.rtp,
                    };
                    directions.push(DirectionRecord {
                        from_tag: d.tag(from).unwrap_or_default().to_owned(),
                        to_tag: d.tag(to).unwrap_or_default().to_owned(),
                        from_endpoint: s
                            .learned_rtp
                            .or(m.end(from).endpoint.rtp())
                            .map(|a| a.to_string()),
                        relay_port: Some(port),
                        ssrc: s.quality.ssrc,
                        packets: s.rtp.packets,
                        bytes: s.rtp.bytes,
                        packets_lost: s.quality.lost,
                        loss_percent: (s.quality.loss_fraction * 10_000.0).round() / 100.0,
                        jitter_ms: (s.quality.jitter_ms * 1000.0).round() / 1000.0,
                        max_jitter_ms: (s.quality.max_jitter_ms * 1000.0).round() / 1000.0,
                        rtcp_packets: s.rtcp.packets,
                        errors: s.rtp.errors.saturating_add(s.rtcp.errors),
                        kernel_packets: s.kernel_packets,
                        kernel_percent: percent(s.kernel_packets, s.rtp.packets),
                        kernel: s.kernel.name(),
                        mos_average: heard.as_ref().map(|h| h.average.mos.as_f64()),
                        mos_lowest: heard.as_ref().map(|h| h.lowest.mos.as_f64()),
                        mos_samples: heard.as_ref().map_or(0, |h| h.average.samples),
                    });
                }
                streams.push(StreamRecord {
                    index: m.index,
                    kind: m.kind().to_string(),
                    directions,
                });
            }
        }
        let start = self.unix_secs_f64(call.created_ns);
        let end = self.unix_secs_f64(now);
        CallRecord {
            call_id: call.id.to_string(),
            tags: call.legs.iter().map(|l| l.tag().to_string()).collect(),
            start,
            end,
            duration: ((end - start).max(0.0) * 1000.0).round() / 1000.0,
            end_reason: reason,
            streams,
        }
    }

    /// Queues a record for the writer; counts it when the queue is full.
    pub(super) fn send_record(&mut self, record: CallRecord) {
        let Some(tx) = &self.records else {
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => {
                self.records_dropped += 1;
                // Logged at 1, 2, 4, 8... drops: visible without flooding the log.
                if self.records_dropped.is_power_of_two() {
                    tracing::warn!(
                        call_id = %r.call_id,
                        dropped = self.records_dropped,
                        "call record queue full: record dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("call record writer gone: records off");
                self.records = None;
            }
        }
    }

    /// Ends a call at once (its streams closed, a record written with `reason`).
    pub fn terminate(
        &mut self,
        call_id: &str,
        reason: EndReason,
        now: Nanos,
    ) -> Result<(), SessionError> {
        let call = self.calls.get(call_id).ok_or(SessionError::UnknownCall)?;
        let record = self
            .records
            .is_some()
            .then(|| self.build_record(call, reason, now));
        let Some(call) = self.remove_call(call_id) else {
            return Err(SessionError::UnknownCall);
        };
        let ids: Vec<_> = call.streams().map(|s| s.id).collect();
        self.close_streams(ids);
        self.terminated += 1;
        tracing::info!(call_id, reason = reason.as_str(), "call terminated");
        if let Some(r) = record {
            self.send_record(r);
        }
        Ok(())
    }

    /// Ends every call (see [`Self::terminate`]); returns how many.
    pub fn terminate_all(&mut self, reason: EndReason, now: Nanos) -> usize {
        let ids: Vec<_> = self.calls.values().map(|c| c.id.clone()).collect();
        ids.iter()
            .filter(|id| self.terminate(id, reason, now).is_ok())
            .count()
    }
}
