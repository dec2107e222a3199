//! RTP quality summed over every stream the manager has carried, for the metrics endpoint:
//! live streams are read at call time, closed ones were folded in when they closed.

use crate::session::backend::{KernelStatus, MediaBackend, SideBrief};
use crate::session::manager::SessionManager;
use crate::time::{Nanos, NANOS_PER_SEC};

/// Everything a metrics scrape needs from the manager, gathered in one pass over the streams
/// (the manager's lock is held meanwhile, and ng and the sweep wait for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeFigures {
    pub uptime_secs: u64,
    pub sessions: u64,
    /// Calls ever admitted; refused offers; calls ended by the media timeout, and by
    /// delete/BYE/terminate.
    pub managed: u64,
    pub rejected: u64,
    pub timeouts: u64,
    pub terminated: u64,
    /// Relay port pairs in use and in all.
    pub pairs_used: u64,
    pub pairs_total: u64,
    /// Open streams: of live calls and of calls lingering in their delete delay.
    pub streams: u64,
    pub quality: QualityTotals,
    /// Directions by [`KernelStatus::ALL`] entry, in that order.
    pub kernel: [u64; KernelStatus::ALL.len()],
}

/// Loss, duplicates and reordering summed over streams and directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QualityTotals {
    /// Packets lost before reaching the relay (RFC 3550 A.3: expected - received), counted
    /// per direction and never below zero (duplicates do not cancel losses elsewhere).
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
}

impl QualityTotals {
    pub(super) fn add_side(&mut self, s: &SideBrief) {
        self.lost = self.lost.saturating_add(s.lost.max(0) as u64);
        self.duplicates = self.duplicates.saturating_add(s.duplicates);
        self.reordered = self.reordered.saturating_add(s.reordered);
    }
}

impl<B: MediaBackend> SessionManager<B> {
    /// What a scrape reads (see [`ScrapeFigures`]): one pass over the live streams, reading
    /// a few published atomics of each (no wait on the data plane).
    pub fn scrape_figures(&self, now: Nanos) -> ScrapeFigures {
        let (pairs_used, pairs_total) = self.backend.port_usage();
        let mut f = ScrapeFigures {
            uptime_secs: now.saturating_sub(self.started_ns) / NANOS_PER_SEC,
            sessions: self.calls.len() as u64,
            managed: self.managed,
            rejected: self.rejected,
            timeouts: self.timeouts,
            terminated: self.terminated,
            pairs_used: pairs_used as u64,
            pairs_total: pairs_total as u64,
            quality: self.closed_quality,
            ..ScrapeFigures::default()
        };
        for id in self.live_stream_ids() {
            let Some(sides) = self.backend.briefs(id) else {
                continue;
            };
            f.streams += 1;
            for side in &sides {
                f.quality.add_side(side);
                if let Some(c) = f.kernel.get_mut(side.kernel.code() as usize) {
                    *c += 1;
                }
            }
        }
        f
    }

    /// Every MOS / jitter / loss / round-trip sample taken so far, summed.
    pub fn sample_totals(&self) -> crate::session::quality::SampleTotals {
        self.sample_totals
    }

    /// Streams relayed now (live calls and those lingering in their delete delay).
    pub fn stream_count(&self) -> usize {
        self.live_stream_ids().count()
    }

    fn live_stream_ids(&self) -> impl Iterator<Item = crate::session::backend::StreamId> + '_ {
        let lingering = self
            .lingering
            .iter()
            .flat_map(|l| l.streams.iter().copied());
        self.calls
            .values()
            .flat_map(|c| c.streams().map(|s| s.id))
            .chain(lingering)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_loss_counts_as_none() {
        let mut t = QualityTotals::default();
        let side = |lost, duplicates| SideBrief {
            lost,
            duplicates,
            reordered: 1,
            ..SideBrief::default()
        };
        t.add_side(&side(5, 0));
        t.add_side(&side(-3, 3));
        assert_eq!(
            t,
            QualityTotals {
                lost: 5,
                duplicates: 3,
                reordered: 2
            }
        );
    }
}
