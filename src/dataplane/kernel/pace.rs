//! When the sync folds a direction the kernel moved: the per-position marks a worker's sync
//! pass reads instead of the direction's records (sans-IO, unit-tested).
//!
//! A pass looks at every in-kernel direction about once a second; looking costs one load
//! from a dense array of [`Look`]s, in entry order, and one from the mapped entry unless the
//! direction is already known to have moved, or was folded (so flowing) less than a gap ago,
//! and waits for its fold ([`Look::waiting`]). A fold
//! (reading the whole entry, the tracker's hand-over record, the slot, publishing counts,
//! the latch's last packet and quality) is what costs, so a worker with many directions
//! folds a flowing one at most every [`fold_gap`] passes (1 up to [`FOLDS_PER_PASS`]
//! directions, so small relays publish as before). A direction that moved after it was
//! last folded and for that long (resumed after a silence, or a lone packet) is folded at
//! the first pass that sees it, so the published newest-packet time of a silent call is
//! never older than a pass once media resumes, and a timeout is neither missed nor taken
//! early for a call whose media resumed; a direction that stopped is folded within the gap.

/// Directions a worker (one io_uring ring's) folds per pass before it spaces the folds of
/// flowing ones over several passes (a fold is a few hundred ns of cache misses; a worker
/// thread drives up to 3 rings at 25,000 calls).
pub const FOLDS_PER_PASS: u64 = 500;

/// The most passes between two folds of a flowing direction: what `query`, `/metrics` and
/// the timeout sweep see of it is at most this many passes (seconds) and one more old. At
/// 4, a worker ring's folds grew with its directions up to 4,000 of them; at 25,000 calls
/// (~8,300 directions a ring) 12,500 folds a second were a third of what the relay spent
/// beyond what it spends at 100 calls, and at 8 (1,000 a ring a pass) the ~6,000 a second
/// were still more than half of what its data-plane threads spent there. At 16 they stay
/// at about 500 a ring a pass up to 8,000 directions a ring. The timeout sweep visits a
/// call every 10 s at that scale, so a visit finds fresh figures about every other time.
pub const MAX_FOLD_GAP: u32 = 16;

/// The shortest media timeout (s) longer than how old a flowing in-kernel direction's
/// published newest-packet time can be (a fold gap of passes about a second apart, and one
/// more): with a shorter one, a relay holding many directions in the kernel may end calls
/// whose media flows.
pub const SHORTEST_SAFE_TIMEOUT_SECS: u64 = MAX_FOLD_GAP as u64 + 2;

/// Passes between folds of a flowing direction for a worker holding `in_kernel`
/// directions in the kernel.
pub fn fold_gap(in_kernel: u64) -> u32 {
    let gap = in_kernel.div_ceil(FOLDS_PER_PASS).max(1);
    u32::try_from(gap).unwrap_or(MAX_FOLD_GAP).min(MAX_FOLD_GAP)
}

/// One entry position's marks: what the last pass saw of it and when it was last folded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// The entry's packet count (low 32 bits) at the last look.
    seen: u32,
    /// The pass that last folded it.
    folded_pass: u32,
    /// Packets (or worker-counted ones) not folded yet.
    pending: bool,
    /// Folded (or handed over) less than a gap ago, so presumed flowing: the passes before
    /// the next fold is due do not read the entry; the pass when it is due does, and folds
    /// it if it moved (else the direction is idle from there, read every pass).
    presumed: bool,
}

impl Look {
    /// A direction handed over on pass `pass` with the entry's packet count `packets`: its
    /// figures are published as handed over.
    pub fn handed(packets: u64, pass: u32) -> Look {
        Look {
            seen: packets as u32,
            folded_pass: pass,
            pending: false,
            presumed: true,
        }
    }

    /// The worker counted packets for the direction (queued before the hand-over): the next
    /// look folds them, however recent the last fold.
    pub fn force(&mut self) {
        self.pending = true;
        self.folded_pass = self.folded_pass.wrapping_sub(MAX_FOLD_GAP);
    }

    /// True when pass `pass` need not read the entry at all: the direction has moved since
    /// its last fold (seen on an earlier pass, or worker-counted) or was folded less than
    /// `gap` passes ago, and is not due yet, so whatever its count now, this pass would not
    /// fold it. A flowing direction's entry is then read once every `gap` passes (at its
    /// next fold) instead of every pass (at 25,000 calls each read is a cache miss); an idle
    /// one's, which may resume at any time, every pass once a gap has passed since its last
    /// fold.
    pub fn waiting(&self, pass: u32, gap: u32) -> bool {
        (self.pending || self.presumed) && pass.wrapping_sub(self.folded_pass) < gap
    }

    /// Pass `pass` sees the entry's packet count `packets`; true when the direction is to be
    /// folded now (then [`Look::folded`]). `gap`: [`fold_gap`] of the worker's directions.
    pub fn visit(&mut self, packets: u64, pass: u32, gap: u32) -> bool {
        let low = packets as u32;
        if low != self.seen {
            self.seen = low;
            self.pending = true;
        }
        let due = pass.wrapping_sub(self.folded_pass) >= gap;
        if due {
            // Presumed flowing until its fold was due: from here it is read every pass.
            self.presumed = false;
        }
        self.pending && due
    }

    /// The direction was folded (or found with nothing to fold) on pass `pass`: presumed
    /// flowing until its next fold is due.
    pub fn folded(&mut self, pass: u32) {
        self.pending = false;
        self.presumed = true;
        self.folded_pass = pass;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `passes` passes over one direction whose entry count is `count(pass)`; returns
    /// the passes that folded and the count each fold published.
    fn run(
        look: &mut Look,
        passes: std::ops::Range<u32>,
        gap: u32,
        count: impl Fn(u32) -> u64,
    ) -> Vec<(u32, u64)> {
        run_counting(look, passes, gap, count).0
    }

    /// As `run`, as the sync does it: a pass where the look is `waiting` reads no count.
    /// Also returns how many passes read the count.
    fn run_counting(
        look: &mut Look,
        passes: std::ops::Range<u32>,
        gap: u32,
        count: impl Fn(u32) -> u64,
    ) -> (Vec<(u32, u64)>, u32) {
        let mut folds = Vec::new();
        let mut reads = 0;
        for pass in passes {
            if look.waiting(pass, gap) {
                continue;
            }
            reads += 1;
            let c = count(pass);
            if look.visit(c, pass, gap) {
                look.folded(pass);
                folds.push((pass, c));
            }
        }
        (folds, reads)
    }

    #[test]
    fn the_gap_is_one_for_small_workers_and_capped() {
        assert_eq!(fold_gap(0), 1);
        assert_eq!(fold_gap(FOLDS_PER_PASS), 1);
        assert_eq!(fold_gap(FOLDS_PER_PASS + 1), 2);
        assert_eq!(fold_gap(8_000), MAX_FOLD_GAP);
        assert_eq!(fold_gap(u64::MAX), MAX_FOLD_GAP);
    }

    #[test]
    fn the_default_timeout_outlasts_the_oldest_published_newest_packet() {
        // A longer fold gap must not make the default media timeout end flowing calls.
        assert!(crate::config::Config::default().timeout_secs >= SHORTEST_SAFE_TIMEOUT_SECS);
    }

    #[test]
    fn with_a_gap_of_one_every_moved_pass_folds_and_idle_ones_never() {
        let mut l = Look::handed(10, 0);
        // Moves on passes 1-3, idle 4-6, moves on 7.
        let folds = run(&mut l, 1..9, 1, |p| match p {
            1..=3 => 10 + u64::from(p),
            4..=6 => 13,
            _ => 20,
        });
        assert_eq!(folds, vec![(1, 11), (2, 12), (3, 13), (7, 20),]);
    }

    #[test]
    fn a_flowing_direction_is_folded_every_gap_passes_and_its_last_packets_within_one() {
        let gap = 4;
        let mut l = Look::handed(0, 0);
        // One packet a pass up to pass 13, then silent.
        let folds = run(&mut l, 1..30, gap, |p| u64::from(p.min(13)));
        assert_eq!(folds, vec![(4, 4), (8, 8), (12, 12), (16, 13)]);
        // Every packet's count was published, the last within `gap` passes of arriving.
        assert_eq!(folds.last().map(|f| f.1), Some(13));
    }

    #[test]
    fn skipping_the_reads_of_waiting_directions_folds_at_the_same_passes() {
        // Every pattern, folded by a look that reads the count every pass and by one that
        // skips the passes where it is waiting: the same folds, publishing the same counts.
        let patterns: [&dyn Fn(u32) -> u64; 4] = [
            &|p| u64::from(p.min(13)),
            &|p| u64::from(p / 3),
            // A lone packet every 7 passes (an entry's count never goes back).
            &|p| u64::from(p / 7),
            &|p| match p {
                0..=5 => u64::from(p),
                6..=30 => 5,
                _ => 5 + u64::from(p - 30),
            },
        ];
        for gap in 1..=MAX_FOLD_GAP {
            for count in patterns {
                let mut every = Look::handed(0, 0);
                let mut folds = Vec::new();
                for pass in 1..60 {
                    let c = count(pass);
                    if every.visit(c, pass, gap) {
                        every.folded(pass);
                        folds.push((pass, c));
                    }
                }
                let mut skipping = Look::handed(0, 0);
                let (skipped, _) = run_counting(&mut skipping, 1..60, gap, count);
                assert_eq!(skipped, folds, "gap {gap}");
            }
        }
        // A flowing direction's entry is read once a gap (at its fold), an idle one's every
        // pass once a gap has passed since the hand-over.
        let (_, reads) = run_counting(&mut Look::handed(0, 0), 1..41, 4, u64::from);
        assert_eq!(reads, 10);
        let (_, reads) = run_counting(&mut Look::handed(0, 0), 1..41, 4, |_| 0);
        assert_eq!(reads, 37);
        // Worker-counted packets are folded at the next pass, without waiting.
        let mut l = Look::handed(5, 0);
        l.force();
        assert!(!l.waiting(1, 4));
    }

    #[test]
    fn a_direction_resuming_after_a_silence_is_folded_at_the_first_look() {
        let gap = 4;
        let mut l = Look::handed(0, 0);
        let folds = run(&mut l, 1..40, gap, |p| match p {
            0..=5 => u64::from(p),
            6..=30 => 5,
            // Resumes on pass 31: the newest-packet time must be published at once (a
            // timeout sweep reads it).
            _ => 5 + u64::from(p - 30),
        });
        assert_eq!(folds, vec![(4, 4), (8, 5), (31, 6), (35, 10), (39, 14)]);
    }

    #[test]
    fn a_direction_presumed_flowing_that_stopped_is_read_every_pass_once_its_fold_was_due() {
        let gap = 4;
        let mut l = Look::handed(0, 0);
        // Flows up to pass 4, silent 5-20, flows again from 21.
        let (folds, reads) = run_counting(&mut l, 1..30, gap, |p| match p {
            0..=4 => u64::from(p),
            5..=20 => 4,
            _ => 4 + u64::from(p - 20),
        });
        // The resumed packet is published at the first pass that has it.
        assert_eq!(folds, vec![(4, 4), (21, 5), (25, 9), (29, 13)]);
        // Read at the folds (4, 21, 25, 29), at the due pass that found it stopped (8) and
        // every pass of the silence after it (9-20).
        assert_eq!(reads, 17);
    }

    #[test]
    fn a_lone_packet_after_a_fold_waits_at_most_the_gap_and_a_forced_look_none() {
        let gap = 3;
        let mut l = Look::handed(0, 0);
        assert!(!l.visit(1, 1, gap), "one pass after the hand-over");
        assert!(!l.visit(1, 2, gap));
        assert!(l.visit(1, 3, gap), "within the gap");
        l.folded(3);
        l.force();
        assert!(
            l.visit(1, 4, gap),
            "worker-counted packets fold at the next look"
        );
        l.folded(4);
        assert!(!l.visit(1, 5, gap), "nothing new");
        // A count that wraps its low 32 bits still reads as moved.
        let mut w = Look::handed(u64::from(u32::MAX), 0);
        assert!(w.visit(u64::from(u32::MAX) + 1, 1, 1));
    }
}
