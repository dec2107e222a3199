//! RTP quality summed over every stream the manager has carried, for the metrics endpoint:
//! live streams are read at call time, closed ones were folded in when they closed.

use crate::session::backend::{KernelStatus, MediaBackend, SideStats};
use crate::session::manager::SessionManager;

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
    pub(super) fn add_side(&mut self, s: &SideStats) {
        let q = &s.quality;
        self.lost = self.lost.saturating_add(q.lost.max(0) as u64);
        self.duplicates = self.duplicates.saturating_add(q.duplicates);
        self.reordered = self.reordered.saturating_add(q.reordered);
    }
}

impl<B: MediaBackend> SessionManager<B> {
    /// Quality totals of every stream so far. Reads each live stream's published figures
    /// (atomics, no wait on the data plane): O(streams), for a scrape.
    pub fn quality_totals(&self) -> QualityTotals {
        let mut t = self.closed_quality;
        for id in self.live_stream_ids() {
            if let Some(st) = self.backend.stats(id) {
                t.add_side(&st.a);
                t.add_side(&st.b);
            }
        }
        t
    }

    /// Every MOS / jitter / loss / round-trip sample taken so far, summed.
    pub fn sample_totals(&self) -> crate::session::quality::SampleTotals {
        self.sample_totals
    }

    /// Directions relayed now (two per stream) by where the data plane relays them and, when
    /// not in the kernel, why not: one count per [`KernelStatus::ALL`] entry, in that order.
    pub fn kernel_statuses(&self) -> [u64; KernelStatus::ALL.len()] {
        let mut counts = [0u64; KernelStatus::ALL.len()];
        for id in self.live_stream_ids() {
            if let Some(st) = self.backend.stats(id) {
                for side in [&st.a, &st.b] {
                    if let Some(c) = counts.get_mut(side.kernel.code() as usize) {
                        *c += 1;
                    }
                }
            }
        }
        counts
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
    use crate::rtp::stats::RtpStreamStats;

    #[test]
    fn negative_loss_counts_as_none() {
        let mut t = QualityTotals::default();
        let side = |lost, duplicates| SideStats {
            quality: RtpStreamStats {
                lost,
                duplicates,
                reordered: 1,
                ..RtpStreamStats::default()
            },
            ..SideStats::default()
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
