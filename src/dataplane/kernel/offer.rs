//! Two rules of the hand-over, alone over packet counts, sequence numbers and a clock (no
//! I/O; `handover.rs` applies them): when a direction that could not be handed to the kernel,
//! or was taken back, is offered again ([`Retry`]), and whether an RTP packet the program did
//! not mark, reaching the worker after the hand-over, was queued on the socket before it
//! ([`queued_before_handover`]).

use crate::time::{NANOS_PER_MS, NANOS_PER_SEC};

/// Packets a direction must see in user space after a miss (a failed offer or a take-back)
/// before it is offered again whatever the time: at 50 packets/s, a second.
pub const RETRY_AFTER_PACKETS: u64 = 50;
/// Fewer packets are enough once [`RETRY_AFTER_NS`] (doubled per miss in a row) has passed,
/// so a 1 packet/s stream is not left in user space for 50 s.
pub const RETRY_MIN_PACKETS: u64 = 2;
/// The wait after a first miss; each further miss in a row doubles it, up to
/// [`RETRY_MAX_SHIFT`] doublings (64 s), beyond which [`RETRY_AFTER_PACKETS`] decides: a source
/// or SSRC that keeps changing stays with the worker, as before.
pub const RETRY_AFTER_NS: u64 = NANOS_PER_SEC;
const RETRY_MAX_SHIFT: u32 = 6;
/// A direction that stayed in the kernel this long before it was taken back starts its
/// misses afresh (a re-INVITE now and then is not a stream that keeps changing).
pub const MISSES_FORGOTTEN_AFTER_NS: u64 = 60 * NANOS_PER_SEC;

/// Unmarked packets this soon after the hand-over were queued before it (as they always were).
pub const QUEUED_BEFORE_HANDOVER_NS: u64 = 20 * NANOS_PER_MS;
/// Later, while the program has relayed nothing of the direction since the hand-over, this
/// many unmarked packets are still taken as queued (a worker behind by seconds holds that many
/// of a slow stream); more, and the program is taken not to see the direction.
pub const QUEUED_UNPROVEN_MAX: u64 = 8;

/// When a direction is offered to the kernel again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    /// The tracker's packet count and the clock at the last miss.
    from_packets: u64,
    from_ns: u64,
    /// Misses in a row (0: none, offered at once).
    misses: u32,
}

impl Retry {
    /// A miss at tracker count `packets` and clock `now`: an offer that failed (no route, no
    /// entry), or a take-back after `stayed_ns` in the kernel (0 for a failed offer).
    pub fn missed(self, packets: u64, now: u64, stayed_ns: u64) -> Retry {
        let before = if stayed_ns >= MISSES_FORGOTTEN_AFTER_NS {
            0
        } else {
            self.misses
        };
        Retry {
            from_packets: packets,
            from_ns: now,
            misses: before.saturating_add(1),
        }
    }

    /// Misses in a row so far.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// How long after the last miss a few packets are enough.
    pub fn wait_ns(&self) -> u64 {
        RETRY_AFTER_NS << self.misses.saturating_sub(1).min(RETRY_MAX_SHIFT)
    }

    /// Whether the direction, whose tracker has counted `packets`, is offered again at `now`:
    /// [`RETRY_AFTER_PACKETS`] since the miss, or [`RETRY_MIN_PACKETS`] once
    /// [`Retry::wait_ns`] has passed.
    pub fn due(&self, packets: u64, now: u64) -> bool {
        if self.misses == 0 {
            return true;
        }
        let seen = packets.saturating_sub(self.from_packets);
        seen >= RETRY_AFTER_PACKETS
            || (seen >= RETRY_MIN_PACKETS && now.saturating_sub(self.from_ns) >= self.wait_ns())
    }
}

/// What the worker knows when an RTP packet from a direction's latched source reaches it
/// unmarked (the program did not pass it up) while the direction is in the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Unmarked {
    /// Since the hand-over.
    pub since_ns: u64,
    /// Whether the program has relayed any packet of the direction since the hand-over.
    pub relayed: bool,
    /// The highest sequence number the kernel's tracker has seen, and the packet's.
    pub kernel_max_seq: u16,
    pub seq: u16,
    /// Unmarked packets already taken as queued since the hand-over.
    pub carried: u64,
}

/// Whether such a packet reached the socket before the program had the direction's key (the
/// worker counts and relays it, the direction stays in the kernel), rather than passing a
/// program that does not see the direction (detached, or another device: taken back).
///
/// Within [`QUEUED_BEFORE_HANDOVER_NS`] always. Later, a worker that is behind (a burst of
/// signalling, a saturated core) may still be reading packets queued long before: once the
/// program has relayed a packet of the direction it sees the direction, so an unmarked packet
/// older than the kernel's highest sequence number came before the key, and a newer one did
/// not (the program was detached since); while the program has relayed nothing, up to
/// [`QUEUED_UNPROVEN_MAX`] are taken as queued.
pub fn queued_before_handover(u: &Unmarked) -> bool {
    if u.since_ns < QUEUED_BEFORE_HANDOVER_NS {
        return true;
    }
    if u.relayed {
        // Sequence numbers wrap: the signed distance says which came first.
        (u.kernel_max_seq.wrapping_sub(u.seq) as i16) > 0
    } else {
        u.carried < QUEUED_UNPROVEN_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn never_missed_is_due_at_once() {
        assert!(Retry::default().due(0, 0));
    }

    #[test]
    fn a_slow_stream_is_offered_again_after_a_second_and_a_few_packets() {
        // 1 packet/s: a take-back at packet 10, t = 10 s, after a short stay.
        let r = Retry::default().missed(10, 10 * S, S);
        assert_eq!(r.wait_ns(), S);
        assert!(!r.due(11, 11 * S), "one packet is not enough");
        assert!(!r.due(12, 11 * S - 1), "nor two within the second");
        assert!(
            r.due(12, 12 * S),
            "two packets and a second: offered again (not 50 s)"
        );
    }

    #[test]
    fn a_fast_stream_still_waits_for_its_packets_or_the_second() {
        // 50 packets/s: 50 packets come within the second anyway.
        let r = Retry::default().missed(100, 0, 0);
        assert!(!r.due(149, S - 1));
        assert!(r.due(150, S - 1));
        assert!(r.due(102, S));
    }

    #[test]
    fn misses_in_a_row_double_the_wait_until_packets_decide() {
        let mut r = Retry::default();
        let mut t = 0;
        for k in 0..10u32 {
            r = r.missed(0, t, S);
            assert_eq!(r.misses(), k + 1);
            assert_eq!(r.wait_ns(), S << k.min(6));
            t += 100 * S;
        }
        // Ten misses of a stream that keeps changing: 64 s, so at 1 packet/s the 50 packets
        // (50 s) decide, as before the time rule.
        let from = t - 100 * S;
        assert!(!r.due(49, from + 63 * S));
        assert!(r.due(50, from + 50 * S));
        assert!(r.due(2, from + 64 * S));
    }

    #[test]
    fn a_long_stay_forgets_the_misses() {
        let r = Retry::default()
            .missed(0, 0, 0)
            .missed(0, 0, 0)
            .missed(0, 0, 0);
        assert_eq!(r.wait_ns(), 4 * S);
        let r = r.missed(500, 100 * S, MISSES_FORGOTTEN_AFTER_NS);
        assert_eq!(r.misses(), 1);
        assert!(r.due(502, 101 * S));
    }

    fn unmarked(since_ns: u64, relayed: bool, kernel_max_seq: u16, seq: u16, carried: u64) -> bool {
        queued_before_handover(&Unmarked {
            since_ns,
            relayed,
            kernel_max_seq,
            seq,
            carried,
        })
    }

    #[test]
    fn soon_after_the_handover_unmarked_packets_were_queued() {
        assert!(unmarked(0, false, 10, 11, 0));
        assert!(unmarked(QUEUED_BEFORE_HANDOVER_NS - 1, true, 10, 500, 100));
    }

    #[test]
    fn a_worker_seconds_behind_keeps_its_streams_in_the_kernel() {
        // 1 packet/s, the worker 3 s behind: handed over after packet 10 was read, packets 11
        // to 13 were already queued; the program relays nothing before packet 14.
        for (k, seq) in (11..=13u16).enumerate() {
            assert!(unmarked(2 * S, false, 10, seq, k as u64), "seq {seq}");
        }
        // 50 packets/s, 200 ms behind: the program relayed up to 30, the socket still held
        // 21-29 (and wraps are seen through).
        assert!(unmarked(300 * NANOS_PER_MS, true, 30, 21, 0));
        assert!(unmarked(300 * NANOS_PER_MS, true, 3, 65533, 5));
    }

    #[test]
    fn a_program_that_does_not_see_the_direction_gets_it_taken_back() {
        // Detached after relaying up to 160: 161 is newer, it passed no program.
        assert!(!unmarked(10 * S, true, 160, 161, 0));
        assert!(!unmarked(10 * S, true, 160, 160, 0));
        // Never relayed a packet: after a few unmarked ones the direction goes back.
        assert!(!unmarked(S, false, 10, 19, QUEUED_UNPROVEN_MAX));
    }
}
