//! A worker's spare records: what a direction needs only once it carries media, allocated
//! beforehand so that its first packet takes one without allocating.
//!
//! A held call that carries no media needs no RTP tracker and no RTCP record (memory per held
//! call, issue 19: 2 x 112 + 2 x 80 bytes less per silent call), but the packet path may not
//! allocate. So each worker keeps up to [`SPARES`] of each ready (two per stream it holds,
//! up to that: an idle worker keeps none); a direction's first RTP packet takes a tracker, a
//! side's first RTCP packet an RTCP record, and the command that adds a stream and the
//! housekeeping after each turn put back what was taken (allocating there, as the quality
//! cells' first publication does). A turn that meets more new directions than there are
//! spares (over [`SPARES`] calls starting media within one turn of the worker loop)
//! allocates the rest where it stands, and counts each ([`Spares::short`]).

use crate::rtp::stats::RtpStreamTracker;

use super::shared::RtcpCell;

/// Most records of each kind a worker keeps ready: 256 x (112 + 80) bytes, 48 KiB a worker.
pub const SPARES: usize = 256;

/// The spare records of one worker (single owner: the worker thread). Boxed in their lists:
/// each is handed out as the box it will live in, so taking one moves a pointer.
#[allow(clippy::vec_box)]
pub struct Spares {
    trackers: Vec<Box<RtpStreamTracker>>,
    rtcp: Vec<Box<RtcpCell>>,
    /// Records allocated on the packet path because none was left (see the module text).
    pub short: u64,
}

impl Default for Spares {
    fn default() -> Self {
        Self::new()
    }
}

impl Spares {
    /// None ready yet (room for [`SPARES`] of each reserved).
    pub fn new() -> Spares {
        Spares {
            trackers: Vec::with_capacity(SPARES),
            rtcp: Vec::with_capacity(SPARES),
            short: 0,
        }
    }

    /// Tops each kind up to `want` ready (at most [`SPARES`]); allocates only here (the
    /// command path and housekeeping), never when there are enough.
    pub fn refill(&mut self, want: usize) {
        let want = want.min(SPARES);
        while self.trackers.len() < want {
            self.trackers.push(Box::default());
        }
        while self.rtcp.len() < want {
            self.rtcp.push(Box::default());
        }
    }

    /// How many a worker holding `streams` streams keeps ready: two of each per stream
    /// (its two directions, its two sides), at most [`SPARES`].
    pub fn wanted(streams: usize) -> usize {
        streams.saturating_mul(2).min(SPARES)
    }

    /// A fresh tracker (a direction's first RTP packet).
    #[inline]
    pub fn tracker(&mut self) -> Box<RtpStreamTracker> {
        match self.trackers.pop() {
            Some(t) => t,
            None => self.short_tracker(),
        }
    }

    /// A fresh RTCP record (a side's first RTCP packet).
    #[inline]
    pub fn rtcp(&mut self) -> Box<RtcpCell> {
        match self.rtcp.pop() {
            Some(c) => c,
            None => self.short_rtcp(),
        }
    }

    #[cold]
    #[inline(never)]
    fn short_tracker(&mut self) -> Box<RtpStreamTracker> {
        self.short += 1;
        Box::default()
    }

    #[cold]
    #[inline(never)]
    fn short_rtcp(&mut self) -> Box<RtcpCell> {
        self.short += 1;
        Box::default()
    }

    /// Records ready now (trackers, RTCP records).
    pub fn ready(&self) -> (usize, usize) {
        (self.trackers.len(), self.rtcp.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_records_come_back_on_refill_and_a_shortage_is_counted() {
        let mut s = Spares::new();
        assert_eq!(s.ready(), (0, 0), "an idle worker keeps none");
        s.refill(Spares::wanted(3));
        assert_eq!(s.ready(), (6, 6));
        let t = s.tracker();
        assert_eq!(t.packets(), 0);
        let _c = s.rtcp();
        assert_eq!(s.ready(), (5, 5));
        s.refill(Spares::wanted(3));
        assert_eq!(s.ready(), (6, 6));
        assert_eq!(s.short, 0);
        s.refill(Spares::wanted(10_000));
        assert_eq!(s.ready(), (SPARES, SPARES));
        let taken: Vec<_> = (0..SPARES + 2).map(|_| s.tracker()).collect();
        assert_eq!(taken.len(), SPARES + 2);
        assert_eq!(s.short, 2, "two beyond the spares");
        s.refill(Spares::wanted(10_000));
        assert_eq!(s.ready().0, SPARES);
    }
}
