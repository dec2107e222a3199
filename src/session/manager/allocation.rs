//! Opening an offer's streams under a guard: until the offer is committed, a failure closes
//! whatever was opened for it.

use std::sync::Arc;

use crate::session::backend::{BackendError, MediaBackend, StreamId, StreamSpec};
use crate::session::manager::plan::{LineStream, OfferLine, StreamEnds};
use crate::time::Nanos;

/// The streams opened for one offer, closed again when the guard is dropped: whatever fails
/// between opening and commit (an allocation half-way through the lines, an SDP that does not
/// render) leaves nothing open. [`Allocation::commit`] disarms it.
pub(super) struct Allocation<'b, B: MediaBackend> {
    backend: &'b mut B,
    opened: Vec<StreamId>,
}

impl<'b, B: MediaBackend> Allocation<'b, B> {
    /// Opens a stream for each `Open` line, which becomes `Opened`. On failure, the streams
    /// opened so far are closed and the lines are not to be used.
    pub(super) fn open(
        backend: &'b mut B,
        call_id: &Arc<str>,
        lines: &mut [OfferLine],
        now: Nanos,
    ) -> Result<Allocation<'b, B>, BackendError> {
        let mut guard = Allocation {
            backend,
            opened: Vec::new(),
        };
        for line in lines {
            let LineStream::Open(ends) = &mut line.stream else {
                continue;
            };
            let StreamEnds { a, b, locals } = std::mem::take(ends);
            let spec = StreamSpec {
                call_id: call_id.clone(),
                a,
                b,
                locals,
            };
            let s = guard.backend.open(spec, now)?;
            guard.opened.push(s.id);
            line.stream = LineStream::Opened(s);
        }
        Ok(guard)
    }

    /// Keeps the streams: the guard closes nothing when dropped. Returns their ids.
    pub(super) fn commit(mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.opened)
    }
}

impl<B: MediaBackend> Drop for Allocation<'_, B> {
    fn drop(&mut self) {
        for &id in &self.opened {
            self.backend.close(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fake::FakeBackend;
    use crate::session::manager::plan::tests::{described, interfaces};
    use crate::session::manager::plan::OfferPlan;
    use crate::session::manager::tests::{sig, OFFER, S};
    use crate::session::negotiate::NegotiateOptions;
    use crate::session::ports::PortError;

    fn planned_offer(sdp: &str) -> OfferPlan<'_> {
        let s = sig("a", None, sdp);
        let o = NegotiateOptions::default();
        OfferPlan::new(None, &s, described(sdp), &o, &interfaces(), 0).unwrap()
    }

    #[test]
    fn allocation_closes_what_it_opened_unless_committed() {
        let call_id: Arc<str> = Arc::from("c");
        // Ports for one stream only: the second line fails, the first is closed again.
        let mut backend = FakeBackend::new(30000, 30003).unwrap();
        let mut plan = planned_offer(OFFER);
        let failed = Allocation::open(&mut backend, &call_id, &mut plan.lines, S).err();
        assert_eq!(failed, Some(BackendError::Ports(PortError::Exhausted)));
        assert_eq!((backend.opens, backend.closes), (1, 1));
        assert_eq!(backend.open_count(), 0);

        let mut backend = FakeBackend::new(30000, 30999).unwrap();
        let mut plan = planned_offer(OFFER);
        drop(Allocation::open(&mut backend, &call_id, &mut plan.lines, S).unwrap());
        assert_eq!((backend.opens, backend.closes), (2, 2));

        let mut plan = planned_offer(OFFER);
        let allocation = Allocation::open(&mut backend, &call_id, &mut plan.lines, S).unwrap();
        let ids = allocation.commit();
        assert_eq!(ids.len(), 2);
        assert_eq!(backend.open_count(), 2);
        let streams: Vec<_> = plan.lines.iter().map(|l| l.stream.relayed()).collect();
        assert_eq!(
            streams.iter().flatten().map(|s| s.id).collect::<Vec<_>>(),
            ids
        );
        assert!(plan
            .lines
            .iter()
            .all(|l| matches!(l.stream, LineStream::Opened(_))));
    }
}
