//! Extended RTP sequence numbers (RFC 3550 §A.1) with duplicate detection.
//!
//! The 16-bit sequence number is extended to 64 bits by counting wrap-arounds. Relative to
//! the highest sequence number seen (`max_seq`), a new number is:
//!
//! - equal: a duplicate;
//! - 1..`MAX_DROPOUT` ahead: in order (1) or a forward gap (more); a wrap past 65535 bumps
//!   the cycle count;
//! - 1..=`MAX_MISORDER` behind: late. A 128-bit window of recently seen numbers tells a
//!   late packet (first copy) from a duplicate (RFC 4733 DTMF end packets repeat their
//!   sequence number on purpose; they are classified as duplicates like any other);
//! - anything else: a big jump. As in A.1 it is not accepted until the next packet follows
//!   it directly; then the state re-syncs on that packet (`Restart`).
//!
//! Unlike A.1 there is no probation for a new source: a relay sees a source that signalling
//! announced, and must count from its first packet.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// Largest forward jump accepted as a gap (RFC 3550 A.1 `MAX_DROPOUT`).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward distance accepted as a late packet (RFC 3550 A.1 `MAX_MISORDER`).
/// Must stay below the 128-bit window so every late packet can be checked for duplication.
pub const MAX_MISORDER: u16 = 100;

const SEQ_MOD: u32 = 1 << 16;
/// `bad_seq` value meaning "no big jump pending" (A.1 uses `RTP_SEQ_MOD + 1`).
const NO_BAD_SEQ: u32 = SEQ_MOD + 1;

/// How the sequence number relates to the ones seen before (the public, caller-facing view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next number (or the first packet of the stream).
    InOrder,
    /// A forward jump: the packets in between are lost or will arrive late. Also the first
    /// packet of a big jump that is not (yet) accepted.
    Gap,
    /// Seen before (within the window, or equal to the highest).
    Duplicate,
    /// Older than the highest seen and not a duplicate.
    Reordered,
    /// Big jump confirmed by a second consecutive packet, or SSRC change: stats re-based.
    Restart,
}

/// Detailed outcome of [`ExtendedSeq::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqEvent {
    /// First packet: the state is initialised on it.
    First,
    /// `max_seq + 1`.
    InOrder,
    /// Forward jump of `skipped + 1`.
    Gap { skipped: u16 },
    /// Already seen.
    Duplicate,
    /// Behind `max_seq` by at most `MAX_MISORDER`, not seen before.
    Late,
    /// Out of range, not accepted; `behind` if it is behind `max_seq` in 16-bit signed terms.
    JumpPending { behind: bool },
    /// Second consecutive out-of-range packet: the state re-synced on it.
    Restart,
}

impl SeqEvent {
    /// The caller-facing verdict.
    #[inline]
    pub const fn verdict(self) -> SeqVerdict {
        match self {
            SeqEvent::First | SeqEvent::InOrder => SeqVerdict::InOrder,
            SeqEvent::Gap { .. } | SeqEvent::JumpPending { behind: false } => SeqVerdict::Gap,
            SeqEvent::Duplicate => SeqVerdict::Duplicate,
            SeqEvent::Late | SeqEvent::JumpPending { behind: true } => SeqVerdict::Reordered,
            SeqEvent::Restart => SeqVerdict::Restart,
        }
    }

    /// Whether the packet counts as received for the loss figure (A.1 `received`): unique
    /// packets that the state accepted.
    #[inline]
    pub const fn is_received(self) -> bool {
        !matches!(self, SeqEvent::Duplicate | SeqEvent::JumpPending { .. })
    }
}

/// Sequence state of one source (A.1 `source` minus the counters). `Copy`, 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedSeq {
    /// Bit `i` set: `max_seq - i` was seen. Bit 0 is `max_seq` itself.
    /// Held as two halves so the tracker needs only 8-byte alignment (a u128 field pads
    /// every tracker to 16; memory per stream).
    window: [u64; 2],
    /// Wrap-arounds of `max_seq` since (re)initialisation.
    cycles: u32,
    /// `NO_BAD_SEQ`, or the sequence number that would confirm a pending big jump.
    bad_seq: u32,
    max_seq: u16,
    initialized: bool,
}

impl Default for ExtendedSeq {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtendedSeq {
    #[inline]
    fn window(&self) -> u128 {
        u128::from(self.window[0]) | (u128::from(self.window[1]) << 64)
    }

    #[inline]
    fn set_window(&mut self, w: u128) {
        self.window = [w as u64, (w >> 64) as u64];
    }

    pub const fn new() -> Self {
        ExtendedSeq {
            window: [0, 0],
            cycles: 0,
            bad_seq: NO_BAD_SEQ,
            max_seq: 0,
            initialized: false,
        }
    }

    /// Whether a packet has been seen.
    #[inline]
    pub const fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// Re-initialises on `seq` (A.1 `init_seq`): `seq` is the new highest, no cycles.
    #[inline]
    pub fn reset_to(&mut self, seq: u16) {
        *self = ExtendedSeq {
            window: [1, 0],
            cycles: 0,
            bad_seq: NO_BAD_SEQ,
            max_seq: seq,
            initialized: true,
        };
    }

    /// Highest sequence number seen.
    #[inline]
    pub const fn max_seq(&self) -> u16 {
        self.max_seq
    }

    /// Wrap-arounds since (re)initialisation.
    #[inline]
    pub const fn cycles(&self) -> u32 {
        self.cycles
    }

    /// Highest extended sequence number: `cycles * 65536 + max_seq`.
    #[inline]
    pub const fn extended_max(&self) -> u64 {
        ((self.cycles as u64) << 16) | self.max_seq as u64
    }

    /// The state as plain figures, for the in-kernel fast path: `(window, cycles, max_seq)`,
    /// or `None` before the first packet or while a big jump waits for confirmation (the
    /// kernel does not model that wait; such a stream stays with the worker).
    pub fn export(&self) -> Option<([u64; 2], u32, u16)> {
        (self.initialized && self.bad_seq == NO_BAD_SEQ).then_some((
            self.window,
            self.cycles,
            self.max_seq,
        ))
    }

    /// Rebuilds the state [`export`](Self::export) gave, as the kernel advanced it.
    pub fn import(window: [u64; 2], cycles: u32, max_seq: u16) -> ExtendedSeq {
        ExtendedSeq {
            window,
            cycles,
            bad_seq: NO_BAD_SEQ,
            max_seq,
            initialized: true,
        }
    }

    /// Feeds one sequence number.
    #[inline]
    pub fn update(&mut self, seq: u16) -> SeqEvent {
        if !self.initialized {
            self.reset_to(seq);
            return SeqEvent::First;
        }
        let ahead = seq.wrapping_sub(self.max_seq);
        if ahead == 0 {
            SeqEvent::Duplicate
        } else if ahead < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1);
            }
            self.max_seq = seq;
            self.set_window(self.window().checked_shl(u32::from(ahead)).unwrap_or(0) | 1);
            if ahead == 1 {
                SeqEvent::InOrder
            } else {
                SeqEvent::Gap { skipped: ahead - 1 }
            }
        } else if ahead.wrapping_neg() <= MAX_MISORDER {
            let bit = 1u128 << ahead.wrapping_neg();
            let window = self.window();
            if window & bit != 0 {
                SeqEvent::Duplicate
            } else {
                self.set_window(window | bit);
                SeqEvent::Late
            }
        } else if u32::from(seq) == self.bad_seq {
            // Two sequential packets after a big jump: assume the sender restarted.
            self.reset_to(seq);
            SeqEvent::Restart
        } else {
            self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
            SeqEvent::JumpPending {
                behind: (ahead as i16) < 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut ExtendedSeq, seqs: &[u16]) -> Vec<SeqEvent> {
        seqs.iter().map(|&q| s.update(q)).collect()
    }

    #[test]
    fn in_order_and_wrap() {
        let mut s = ExtendedSeq::new();
        assert!(!s.is_initialized());
        let ev = feed(&mut s, &[65534, 65535, 0, 1]);
        assert_eq!(
            ev,
            [
                SeqEvent::First,
                SeqEvent::InOrder,
                SeqEvent::InOrder,
                SeqEvent::InOrder
            ]
        );
        assert_eq!(s.cycles(), 1);
        assert_eq!(s.max_seq(), 1);
        assert_eq!(s.extended_max(), 65536 + 1);
    }

    #[test]
    fn several_wraps() {
        let mut s = ExtendedSeq::new();
        let mut seq = 60_000u16;
        s.update(seq);
        // 3 full cycles plus some, in steps that include gaps.
        let mut expected_ext = 60_000u64;
        for i in 0..(3 * 65536 / 4 + 100) {
            let step = if i % 5 == 0 { 20 } else { 1 };
            seq = seq.wrapping_add(step);
            expected_ext += u64::from(step);
            let ev = s.update(seq);
            assert!(matches!(ev, SeqEvent::InOrder | SeqEvent::Gap { .. }));
            assert_eq!(s.extended_max(), expected_ext);
        }
        assert!(s.cycles() >= 3);
    }

    #[test]
    fn late_packet_from_before_wrap_is_late_not_a_gap() {
        let mut s = ExtendedSeq::new();
        feed(&mut s, &[65533, 65535, 0, 1, 2]);
        assert_eq!(s.update(65534), SeqEvent::Late);
        assert_eq!(s.update(65534), SeqEvent::Duplicate);
        assert_eq!(s.update(0), SeqEvent::Duplicate);
        assert_eq!(s.cycles(), 1, "late packet does not touch cycles");
        assert_eq!(s.extended_max(), 65536 + 2);
        assert_eq!(s.update(3), SeqEvent::InOrder);
    }

    #[test]
    fn duplicates_and_late_in_window() {
        let mut s = ExtendedSeq::new();
        feed(&mut s, &[100, 101, 105]);
        assert_eq!(s.update(105), SeqEvent::Duplicate);
        assert_eq!(s.update(101), SeqEvent::Duplicate);
        assert_eq!(s.update(103), SeqEvent::Late);
        assert_eq!(s.update(103), SeqEvent::Duplicate);
        assert_eq!(s.update(102), SeqEvent::Late);
        // 104 was never seen; exactly MAX_MISORDER behind it is still late.
        for q in 106..=204 {
            s.update(q);
        }
        assert_eq!(s.update(104), SeqEvent::Late);
        assert_eq!(s.update(205), SeqEvent::InOrder);
        // 100 behind is still in the window and checked.
        assert_eq!(s.update(105), SeqEvent::Duplicate);
        // 102 behind is out of range: a pending jump, reported as behind.
        assert_eq!(s.update(103), SeqEvent::JumpPending { behind: true });
    }

    #[test]
    fn big_jump_needs_two_consecutive_packets() {
        let mut s = ExtendedSeq::new();
        feed(&mut s, &[1000, 1001]);
        assert_eq!(
            s.update(1001 + MAX_DROPOUT),
            SeqEvent::JumpPending { behind: false }
        );
        assert_eq!(s.max_seq(), 1001, "not accepted yet");
        assert_eq!(s.update(1002), SeqEvent::InOrder, "old stream continues");
        assert_eq!(s.update(30_000), SeqEvent::JumpPending { behind: false });
        assert_eq!(s.update(30_001), SeqEvent::Restart);
        assert_eq!(s.max_seq(), 30_001);
        assert_eq!(s.extended_max(), 30_001);
        assert_eq!(s.update(30_002), SeqEvent::InOrder);
        // A jump just below MAX_DROPOUT is a gap.
        assert_eq!(
            s.update(30_002 + MAX_DROPOUT - 1),
            SeqEvent::Gap {
                skipped: MAX_DROPOUT - 2
            }
        );
    }

    #[test]
    fn verdict_mapping() {
        let table = [
            (SeqEvent::First, SeqVerdict::InOrder, true),
            (SeqEvent::InOrder, SeqVerdict::InOrder, true),
            (SeqEvent::Gap { skipped: 3 }, SeqVerdict::Gap, true),
            (SeqEvent::Duplicate, SeqVerdict::Duplicate, false),
            (SeqEvent::Late, SeqVerdict::Reordered, true),
            (
                SeqEvent::JumpPending { behind: false },
                SeqVerdict::Gap,
                false,
            ),
            (
                SeqEvent::JumpPending { behind: true },
                SeqVerdict::Reordered,
                false,
            ),
            (SeqEvent::Restart, SeqVerdict::Restart, true),
        ];
        for (ev, verdict, received) in table {
            assert_eq!(ev.verdict(), verdict, "{ev:?}");
            assert_eq!(ev.is_received(), received, "{ev:?}");
        }
        assert!(core::mem::size_of::<ExtendedSeq>() <= 32);
    }
}
