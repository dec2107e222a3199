//! Why media stays in user space: every packet a worker receives is counted under one
//! reason it was not relayed in the kernel, and every direction the worker takes back from
//! the kernel under the reason it came back. Both are single-writer counters of the worker
//! (one relaxed add per packet), read by ng `statistics` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::abi::{BACK_JUMP, BACK_PAYLOAD_TYPE, BACK_SOURCE, BACK_SSRC, HANDED_BACK};
use crate::rtp::demux::PacketKind;
use crate::session::backend::KernelStatus;

/// Why a packet the worker received was not relayed in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserReason {
    /// The relay runs no program: `--no-kernel-forwarding`.
    Disabled,
    /// The relay could not attach the program (not root, no CAP_BPF, Linux < 6.6, built
    /// without clang); the log says which at start.
    Unavailable,
    /// The direction was not looked at yet (its first packets).
    Pending,
    /// One of the two ends is not latched yet.
    NotLatched,
    /// No RTP tracked yet in the direction.
    NoRtp,
    /// Taken back from the kernel lately (another source, SSRC, payload type, a jump) and
    /// not offered again yet.
    TakenBack,
    /// The payload type's clock rate differs from the tracked one.
    ClockRate,
    /// No route to the destination.
    NoRoute,
    /// Addresses the program does not carry together (IPv4 and IPv6, or loopback and real
    /// addresses mixed).
    Unsupported,
    /// The map refused the entry (full or out of memory).
    MapFull,
    /// RTCP: always the worker's.
    Rtcp,
    /// STUN, DTLS and anything else that is not RTP on a media port.
    NotRtp,
    /// RTP the parser refuses (CSRC list, extension or padding overrunning the packet).
    Malformed,
    /// The packet that made the kernel hand its direction back (see [`Back`]).
    HandedBack,
    /// RTP of a direction in the kernel that was queued before the hand-over.
    Queued,
}

impl UserReason {
    pub const ALL: [UserReason; 15] = [
        UserReason::Disabled,
        UserReason::Unavailable,
        UserReason::Pending,
        UserReason::NotLatched,
        UserReason::NoRtp,
        UserReason::TakenBack,
        UserReason::ClockRate,
        UserReason::NoRoute,
        UserReason::Unsupported,
        UserReason::MapFull,
        UserReason::Rtcp,
        UserReason::NotRtp,
        UserReason::Malformed,
        UserReason::HandedBack,
        UserReason::Queued,
    ];

    /// Its key in ng `statistics` (`dataplane`) and its `reason` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            UserReason::Disabled => "disabled",
            UserReason::Unavailable => "unavailable",
            UserReason::Pending => "pending",
            UserReason::NotLatched => "not_latched",
            UserReason::NoRtp => "no_rtp",
            UserReason::TakenBack => "taken_back",
            UserReason::ClockRate => "clock_rate",
            UserReason::NoRoute => "no_route",
            UserReason::Unsupported => "unsupported",
            UserReason::MapFull => "map_full",
            UserReason::Rtcp => "rtcp",
            UserReason::NotRtp => "not_rtp",
            UserReason::Malformed => "malformed",
            UserReason::HandedBack => "handed_back",
            UserReason::Queued => "queued",
        }
    }

    /// The key in ng `statistics`' `dataplane` block.
    pub fn stat_name(self) -> &'static str {
        match self {
            UserReason::Disabled => "user_disabled",
            UserReason::Unavailable => "user_unavailable",
            UserReason::Pending => "user_pending",
            UserReason::NotLatched => "user_not_latched",
            UserReason::NoRtp => "user_no_rtp",
            UserReason::TakenBack => "user_taken_back",
            UserReason::ClockRate => "user_clock_rate",
            UserReason::NoRoute => "user_no_route",
            UserReason::Unsupported => "user_unsupported",
            UserReason::MapFull => "user_map_full",
            UserReason::Rtcp => "user_rtcp",
            UserReason::NotRtp => "user_not_rtp",
            UserReason::Malformed => "user_malformed",
            UserReason::HandedBack => "user_handed_back",
            UserReason::Queued => "user_queued",
        }
    }

    /// A packet of a direction not in the kernel whose status is `status`.
    pub fn of_status(status: KernelStatus) -> UserReason {
        match status {
            // In the kernel by the cell, yet here: the status is published a turn late.
            KernelStatus::Pending | KernelStatus::InKernel => UserReason::Pending,
            KernelStatus::NotLatched => UserReason::NotLatched,
            KernelStatus::NoRtp => UserReason::NoRtp,
            KernelStatus::TakenBack => UserReason::TakenBack,
            KernelStatus::ClockRate => UserReason::ClockRate,
            KernelStatus::NoRoute => UserReason::NoRoute,
            KernelStatus::Unsupported => UserReason::Unsupported,
            KernelStatus::MapFull => UserReason::MapFull,
        }
    }

    /// RTCP and non-RTP by their kind; `None` for RTP (its reason is its direction's).
    pub fn of_kind(kind: PacketKind) -> Option<UserReason> {
        match kind {
            PacketKind::Rtp => None,
            PacketKind::Rtcp => Some(UserReason::Rtcp),
            _ => Some(UserReason::NotRtp),
        }
    }
}

/// Why the worker took a direction back from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Back {
    /// A packet from another source (the latch must judge it).
    Source,
    /// Another SSRC (the tracker restarts).
    Ssrc,
    /// Another payload type (clock rate and latch checks).
    PayloadType,
    /// A sequence jump beyond the reorder window (the tracker confirms it on the next).
    Jump,
    /// RTP the program did not mark (it reached the socket another way).
    Unmarked,
    /// Its opposite direction came back (the pair goes together).
    Pair,
    /// The call's signalling changed (new addresses, flags) or it closed.
    Signalling,
}

impl Back {
    pub const ALL: [Back; 7] = [
        Back::Source,
        Back::Ssrc,
        Back::PayloadType,
        Back::Jump,
        Back::Unmarked,
        Back::Pair,
        Back::Signalling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Back::Source => "source",
            Back::Ssrc => "ssrc",
            Back::PayloadType => "payload_type",
            Back::Jump => "jump",
            Back::Unmarked => "unmarked",
            Back::Pair => "pair",
            Back::Signalling => "signalling",
        }
    }

    /// The key in ng `statistics`' `dataplane` block.
    pub fn stat_name(self) -> &'static str {
        match self {
            Back::Source => "kernel_back_source",
            Back::Ssrc => "kernel_back_ssrc",
            Back::PayloadType => "kernel_back_payload_type",
            Back::Jump => "kernel_back_jump",
            Back::Unmarked => "kernel_back_unmarked",
            Back::Pair => "kernel_back_pair",
            Back::Signalling => "kernel_back_signalling",
        }
    }

    /// The reason the program's `flags` give (`Unmarked` without `HANDED_BACK`).
    pub fn of_flags(flags: u32) -> Back {
        if flags & HANDED_BACK == 0 {
            Back::Unmarked
        } else if flags & BACK_SOURCE != 0 {
            Back::Source
        } else if flags & BACK_SSRC != 0 {
            Back::Ssrc
        } else if flags & BACK_PAYLOAD_TYPE != 0 {
            Back::PayloadType
        } else if flags & BACK_JUMP != 0 {
            Back::Jump
        } else {
            Back::Unmarked
        }
    }
}

/// A worker's counters by reason. Single writer (the worker's thread).
#[derive(Debug, Default)]
pub struct ReasonCounters {
    pub user: [AtomicU64; UserReason::ALL.len()],
    pub back: [AtomicU64; Back::ALL.len()],
}

/// Adds one to a single-writer counter without a locked instruction.
#[inline(always)]
fn add_one(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

impl ReasonCounters {
    #[inline]
    pub fn user(&self, why: UserReason) {
        if let Some(c) = self.user.get(why as usize) {
            add_one(c);
        }
    }

    pub fn back(&self, why: Back) {
        if let Some(c) = self.back.get(why as usize) {
            add_one(c);
        }
    }
}

/// Summed [`ReasonCounters`] of all workers, in [`UserReason::ALL`] and [`Back::ALL`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonTotals {
    pub user: [u64; UserReason::ALL.len()],
    pub back: [u64; Back::ALL.len()],
}

impl ReasonTotals {
    pub fn add(&mut self, c: &ReasonCounters) {
        for (t, c) in self.user.iter_mut().zip(&c.user) {
            *t += c.load(Relaxed);
        }
        for (t, c) in self.back.iter_mut().zip(&c.back) {
            *t += c.load(Relaxed);
        }
    }

    /// Moves the packets a worker without the program counted (`Unavailable`: it cannot
    /// tell why) to the reason the data plane knows, `why`.
    pub fn kernel_off_because(&mut self, why: UserReason) {
        let (from, to) = (UserReason::Unavailable as usize, why as usize);
        if from == to {
            return;
        }
        let n = self.user.get_mut(from).map_or(0, std::mem::take);
        if let Some(t) = self.user.get_mut(to) {
            *t += n;
        }
    }

    /// Packets received in user space for `why`.
    pub fn user_packets(&self, why: UserReason) -> u64 {
        self.user.get(why as usize).copied().unwrap_or(0)
    }

    /// Directions taken back for `why`.
    pub fn taken_back(&self, why: Back) -> u64 {
        self.back.get(why as usize).copied().unwrap_or(0)
    }

    /// Every counter under its ng `statistics` key.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let user = UserReason::ALL
            .iter()
            .map(|r| (r.stat_name(), self.user_packets(*r)));
        let back = Back::ALL
            .iter()
            .map(|b| (b.stat_name(), self.taken_back(*b)));
        user.chain(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_discriminants_and_names_are_unique() {
        for (k, r) in UserReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, k);
            assert_eq!(r.stat_name(), format!("user_{}", r.name()));
        }
        for (k, b) in Back::ALL.iter().enumerate() {
            assert_eq!(*b as usize, k);
            assert_eq!(b.stat_name(), format!("kernel_back_{}", b.name()));
        }
        let mut names: Vec<&str> = ReasonTotals::default().named().map(|(n, _)| n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), UserReason::ALL.len() + Back::ALL.len());
    }

    #[test]
    fn flags_give_the_reason() {
        assert_eq!(Back::of_flags(0), Back::Unmarked);
        assert_eq!(Back::of_flags(HANDED_BACK | BACK_SOURCE), Back::Source);
        assert_eq!(Back::of_flags(HANDED_BACK | BACK_SSRC), Back::Ssrc);
        assert_eq!(
            Back::of_flags(HANDED_BACK | BACK_PAYLOAD_TYPE),
            Back::PayloadType
        );
        assert_eq!(Back::of_flags(HANDED_BACK | BACK_JUMP), Back::Jump);
        // Set without a reason by an older program: still the worker's, reason unknown.
        assert_eq!(Back::of_flags(HANDED_BACK), Back::Unmarked);
    }

    #[test]
    fn counters_sum_per_reason() {
        let c = ReasonCounters::default();
        c.user(UserReason::Rtcp);
        c.user(UserReason::Rtcp);
        c.back(Back::Jump);
        let mut t = ReasonTotals::default();
        t.add(&c);
        t.add(&c);
        assert_eq!(t.user_packets(UserReason::Rtcp), 4);
        assert_eq!(t.user_packets(UserReason::Pending), 0);
        assert_eq!(t.taken_back(Back::Jump), 2);
        let named: Vec<_> = t.named().filter(|(_, v)| *v > 0).collect();
        assert_eq!(named, [("user_rtcp", 4), ("kernel_back_jump", 2)]);
        c.user(UserReason::Unavailable);
        let mut t = ReasonTotals::default();
        t.add(&c);
        t.kernel_off_because(UserReason::Disabled);
        assert_eq!(t.user_packets(UserReason::Unavailable), 0);
        assert_eq!(t.user_packets(UserReason::Disabled), 1);
        t.kernel_off_because(UserReason::Unavailable);
        assert_eq!(t.user_packets(UserReason::Disabled), 1);
    }
}
