//! `delete`: a whole call, the dialogue between two tags, or a branch's dialogue; at once or
//! after a delete delay.

use crate::session::backend::MediaBackend;
use crate::session::manager::{CallReport, DeleteRequest, Lingering, SessionError, SessionManager};
use crate::time::Nanos;

impl<B: MediaBackend> SessionManager<B> {
    /// Deletes a call, or one of its dialogues (see the module doc). Returns the call's report
    /// as it was just before (when `want_report`).
    pub fn delete(
        &mut self,
        req: &DeleteRequest<'_>,
        want_report: bool,
        now: Nanos,
    ) -> Result<Option<CallReport>, SessionError> {
        let call = self.calls.get(req.call_id).ok_or(SessionError::NotFound)?;
        let known = |t: &str| call.has_tag(t) || call.leg(t).is_some();
        if req.from_tag.is_some_and(|t| !known(t)) || req.to_tag.is_some_and(|t| !known(t)) {
            return Err(SessionError::NotFound);
        }
        let victims: Vec<usize> = if let Some(to) = req.to_tag {
            let v: Vec<usize> = call
                .dialogues
                .iter()
                .enumerate()
                .filter(|(_, d)| match req.from_tag {
                    Some(from) => d.joins(from, to),
                    None => d.side_of(to).is_some(),
                })
                .map(|(i, _)| i)
                .collect();
            if v.is_empty() {
                return Err(SessionError::NotFound);
            }
            v
        } else {
            let by_branch: Vec<usize> = match req.via_branch {
                Some(via) => call
                    .dialogues
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| {
                        d.via_branch() == Some(via)
                            && req.from_tag.is_none_or(|f| d.side_of(f).is_some())
                    })
                    .map(|(i, _)| i)
                    .collect(),
                None => Vec::new(),
            };
            if by_branch.is_empty() {
                (0..call.dialogues.len()).collect()
            } else {
                by_branch
            }
        };
        let report = want_report.then(|| self.report(call));
        let record = (victims.len() == call.dialogues.len() && self.records.is_some())
            .then(|| self.build_record(call, req.reason, now));
        let delay = req.delay_ns.unwrap_or(self.cfg.delete_delay_ns);
        let Some(call) = self.calls.get_mut(req.call_id) else {
            return Err(SessionError::NotFound);
        };
        let mut streams = Vec::new();
        for &i in victims.iter().rev() {
            if i < call.dialogues.len() {
                let d = call.dialogues.remove(i);
                streams.extend(d.streams().map(|s| s.id));
            }
        }
        let call_id = call.id.clone();
        let created_ns = call.created_ns;
        if call.dialogues.is_empty() {
            self.remove_call(req.call_id);
            self.terminated += 1;
            tracing::info!(call_id = %call_id, "call deleted");
        } else {
            call.prune_legs();
            tracing::info!(call_id = %call_id, dialogues = victims.len(), "branch deleted");
        }
        self.mark_dirty(req.call_id);
        if delay > 0 && !streams.is_empty() {
            self.lingering.push(Lingering {
                call_id,
                deadline: now.saturating_add(delay),
                created_ns,
                streams,
            });
        } else {
            self.close_streams(streams);
        }
        if let Some(r) = record {
            self.send_record(r);
        }
        Ok(report)
    }
}
