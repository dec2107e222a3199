//! Symmetric-RTP endpoint learning ("latching"), safe by default. Pure: source address and
//! time in, decision out.
//!
//! Policy (see issue 2, item 7, and the "RTP Bleed" advisories against rtpengine):
//! - Until media arrives, send to the address the SDP gave (`sdp`).
//! - After each signal (offer/answer that changes the SDP endpoint) a learning phase starts:
//!   packets from any source are accepted and the best source seen becomes the candidate.
//!   Ranking: exact SDP address+port > same address > anything else. An exact match is
//!   confirmed at once; otherwise the best candidate is confirmed once [`LEARN_WINDOW_NS`]
//!   has passed since the first candidate was seen.
//! - After confirmation, packets from any other source are dropped (no injection, no media
//!   pulled out by a third party). The endpoint is re-learned only when the confirmed source
//!   has been silent for [`RELEARN_SILENCE_NS`] (a NAT rebinding).
//! - `StrictSource` never re-learns; `MediaHandover` follows a new source at once;
//!   `Asymmetric` never learns (always sends to the SDP address, accepts any source).

use std::net::SocketAddr;

use crate::addr::PackedAddr;
use crate::time::{Nanos, NANOS_PER_MS};

/// How long the learning phase lasts after the first packet. rtpengine waits 3 s after the
/// signal; we confirm sooner because an exact SDP match confirms at once and the common NAT
/// case (one source only) gains nothing from waiting longer.
pub const LEARN_WINDOW_NS: Nanos = 2_000 * NANOS_PER_MS;
/// Silence after which a confirmed source may be replaced: longer than any normal gap in
/// RTP (DTX/comfort noise sends at least every few hundred ms), short enough that a phone
/// whose NAT binding changed gets its audio back quickly.
pub const RELEARN_SILENCE_NS: Nanos = 5_000 * NANOS_PER_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LatchMode {
    /// Learn, confirm, then lock; re-learn after silence.
    #[default]
    Symmetric,
    /// Learn and confirm once; never re-learn.
    StrictSource,
    /// Always follow the newest source (mobile handover, no protection).
    MediaHandover,
    /// Never learn: send to the SDP address, accept any source.
    Asymmetric,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// No candidate yet.
    None = 0,
    Other = 1,
    SameAddr = 2,
    Exact = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchEvent {
    /// First source seen in a learning phase (or a better one replaced it).
    Learned(SocketAddr),
    /// The source is now locked in.
    Confirmed(SocketAddr),
    /// A confirmed source fell silent and a new one took over (or handover).
    Relearned { old: SocketAddr, new: SocketAddr },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchVerdict {
    /// Forward the packet; the event (if any) should be reported once.
    Accept(Option<LatchEvent>),
    /// A source other than the confirmed one: drop and count.
    Reject,
}

/// Addresses are held packed: a latch sits in every relay socket's slot (memory per stream).
#[derive(Clone, Copy, Debug)]
pub struct Latch {
    mode: LatchMode,
    sdp: PackedAddr,
    /// The best source seen (`NONE` with `Rank::None`); locked in once `confirmed` (kept as
    /// one address, not two, to keep the per-socket state small).
    candidate: PackedAddr,
    /// The candidate's rank and whether it is confirmed, in one byte ([`Status`]).
    status: Status,
    /// Times kept as bytes ([`Stamp`]): the latch then needs no 8-byte alignment and a
    /// worker's slot, which holds one, fits in 112 bytes instead of 120 (memory per socket).
    learning_since_ns: Stamp,
    last_confirmed_packet_ns: Stamp,
}

/// The candidate's [`Rank`] (low two bits) and whether it is confirmed (top bit) in one byte:
/// a slot holds a latch, and a byte more takes a slot from 112 to 120 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Status(u8);

impl Status {
    const NEW: Status = Status(0);
    const CONFIRMED: u8 = 0x80;

    #[inline(always)]
    fn rank(self) -> Rank {
        match self.0 & 0x03 {
            0 => Rank::None,
            1 => Rank::Other,
            2 => Rank::SameAddr,
            _ => Rank::Exact,
        }
    }

    #[inline(always)]
    fn confirmed(self) -> bool {
        self.0 & Self::CONFIRMED != 0
    }

    #[inline(always)]
    fn set_rank(&mut self, r: Rank) {
        self.0 = (self.0 & Self::CONFIRMED) | r as u8;
    }

    #[inline(always)]
    fn set_confirmed(&mut self, c: bool) {
        self.0 = (self.0 & !Self::CONFIRMED) | if c { Self::CONFIRMED } else { 0 };
    }
}

/// A [`Nanos`] in eight bytes of alignment 1 (native byte order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stamp([u8; 8]);

impl Stamp {
    const ZERO: Stamp = Stamp([0; 8]);

    #[inline(always)]
    fn get(self) -> Nanos {
        Nanos::from_ne_bytes(self.0)
    }

    #[inline(always)]
    fn of(ns: Nanos) -> Stamp {
        Stamp(ns.to_ne_bytes())
    }
}

impl Latch {
    pub const fn new(mode: LatchMode, sdp: Option<SocketAddr>) -> Self {
        Latch {
            mode,
            sdp: PackedAddr::from_option(sdp),
            candidate: PackedAddr::NONE,
            status: Status::NEW,
            learning_since_ns: Stamp::ZERO,
            last_confirmed_packet_ns: Stamp::ZERO,
        }
    }

    pub fn mode(&self) -> LatchMode {
        self.mode
    }

    pub fn sdp_endpoint(&self) -> Option<SocketAddr> {
        self.sdp.get()
    }

    pub fn confirmed(&self) -> Option<SocketAddr> {
        if self.status.confirmed() {
            self.candidate.get()
        } else {
            None
        }
    }

    /// The one source this endpoint is locked to, while nothing but a new signal or a
    /// silence of [`RELEARN_SILENCE_NS`] can change it (`Symmetric`, `StrictSource`): the
    /// only address its socket may be connected to (`MediaHandover` follows any source and
    /// `Asymmetric` accepts any, so neither ever is).
    #[inline]
    pub fn locked_peer(&self) -> Option<SocketAddr> {
        match self.mode {
            LatchMode::Symmetric | LatchMode::StrictSource if self.status.confirmed() => {
                self.candidate.get()
            }
            _ => None,
        }
    }

    /// Whether at `now` a packet from another source could take the endpoint over (a
    /// `Symmetric` lock whose source has been silent for [`RELEARN_SILENCE_NS`]), or no
    /// lock holds at all: a socket connected to the locked peer must be disconnected then,
    /// or the kernel would keep the new source's packets from the latch.
    pub fn may_change(&self, now: Nanos) -> bool {
        if self.locked_peer().is_none() {
            return true;
        }
        self.mode == LatchMode::Symmetric
            && now.saturating_sub(self.last_confirmed_packet_ns.get()) >= RELEARN_SILENCE_NS
    }

    /// The learned source so far (confirmed or candidate).
    pub fn learned(&self) -> Option<SocketAddr> {
        self.candidate.get()
    }

    fn confirm(&mut self, addr: PackedAddr, now: Nanos) {
        self.candidate = addr;
        self.status.set_rank(self.rank(addr));
        self.status.set_confirmed(true);
        self.last_confirmed_packet_ns = Stamp::of(now);
    }

    /// Where packets for this endpoint go now.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.mode == LatchMode::Asymmetric || !self.candidate.is_some() {
            return self.sdp.get();
        }
        self.candidate.get()
    }

    /// A new offer/answer named `sdp` for this endpoint. A changed endpoint starts a new
    /// learning phase; a repeated signal (retransmission, re-INVITE without media change)
    /// keeps a confirmed source so it does not reopen the call to injection.
    ///
    /// The first address for an endpoint that had none (the answer reaching the relay after
    /// the callee's first packets, which happens: the callee sends media as soon as it sends
    /// its 200, and the proxy's answer command can arrive later) keeps what was learned from
    /// those packets, re-ranked against the new address. Dropping it would send the caller's
    /// media to a NATed callee's unreachable SDP address.
    pub fn on_signal(&mut self, mode: LatchMode, sdp: Option<SocketAddr>) {
        let sdp = PackedAddr::from_option(sdp);
        let first_address = !self.sdp.is_some() && sdp.is_some() && mode == self.mode;
        let changed = sdp != self.sdp || mode != self.mode;
        self.mode = mode;
        self.sdp = sdp;
        if first_address {
            if self.candidate.is_some() {
                self.status.set_rank(self.rank(self.candidate));
            }
        } else if changed {
            self.candidate = PackedAddr::NONE;
            self.status.set_rank(Rank::None);
            self.status.set_confirmed(false);
            self.learning_since_ns = Stamp::ZERO;
        }
    }

    fn rank(&self, src: PackedAddr) -> Rank {
        if !self.sdp.is_some() {
            Rank::Other
        } else if self.sdp == src {
            Rank::Exact
        } else if self.sdp.same_ip(src) {
            Rank::SameAddr
        } else {
            Rank::Other
        }
    }

    /// The confirmed source sent a packet at `at` that this latch did not see (the in-kernel
    /// fast path forwarded it): silence, and with it re-learning, counts from there.
    pub fn note_confirmed_packet(&mut self, at: Nanos) {
        if self.status.confirmed() {
            self.last_confirmed_packet_ns = Stamp::of(self.last_confirmed_packet_ns.get().max(at));
        }
    }

    /// One packet from `src_addr` at `now`.
    pub fn on_packet(&mut self, src_addr: SocketAddr, now: Nanos) -> LatchVerdict {
        let src = PackedAddr::new(src_addr);
        // What events report: the source as the packet came (the latch keeps it packed).
        let reported = |a: PackedAddr| a.get().unwrap_or(src_addr);
        match self.mode {
            LatchMode::Asymmetric => return LatchVerdict::Accept(None),
            LatchMode::MediaHandover => {
                if self.status.confirmed() && self.candidate == src {
                    return LatchVerdict::Accept(None);
                }
                let old = self.confirmed().map(|_| self.candidate);
                self.confirm(src, now);
                return LatchVerdict::Accept(Some(match old {
                    Some(old) => LatchEvent::Relearned {
                        old: reported(old),
                        new: src_addr,
                    },
                    None => LatchEvent::Confirmed(src_addr),
                }));
            }
            LatchMode::Symmetric | LatchMode::StrictSource => {}
        }

        if self.status.confirmed() && self.candidate.is_some() {
            let c = self.candidate;
            if c == src {
                self.last_confirmed_packet_ns = Stamp::of(now);
                return LatchVerdict::Accept(None);
            }
            let silent =
                now.saturating_sub(self.last_confirmed_packet_ns.get()) >= RELEARN_SILENCE_NS;
            if self.mode == LatchMode::Symmetric && silent {
                // NAT rebinding: the new source takes over, confirmed at once (a learning
                // phase here would reopen the window an attacker waits for).
                self.confirm(src, now);
                return LatchVerdict::Accept(Some(LatchEvent::Relearned {
                    old: reported(c),
                    new: src_addr,
                }));
            }
            return LatchVerdict::Reject;
        }

        // Learning phase.
        let rank = self.rank(src);
        let mut event = None;
        if !self.candidate.is_some() {
            self.candidate = src;
            self.status.set_rank(rank);
            self.learning_since_ns = Stamp::of(now);
            event = Some(LatchEvent::Learned(src_addr));
        } else if self.candidate != src {
            if rank > self.status.rank() {
                self.candidate = src;
                self.status.set_rank(rank);
                event = Some(LatchEvent::Learned(src_addr));
            } else if rank < self.status.rank() {
                // A worse source than the one we have: not ours to forward.
                return LatchVerdict::Reject;
            }
            // Equal rank: keep the first (an injector would have to win the race).
        }
        let cand = self.candidate;
        let window_over = now.saturating_sub(self.learning_since_ns.get()) >= LEARN_WINDOW_NS;
        if self.status.rank() == Rank::Exact || window_over {
            self.confirm(cand, now);
            if cand != src {
                // The window closed on a packet from a tied source: it is not the one we lock.
                return LatchVerdict::Reject;
            }
            return LatchVerdict::Accept(Some(LatchEvent::Confirmed(src_addr)));
        }
        // Still learning: forward (a tied source may be the endpoint as well).
        LatchVerdict::Accept(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const MS: u64 = NANOS_PER_MS;

    #[test]
    fn exact_sdp_source_confirms_at_once_and_locks_out_others() {
        let mut l = Latch::new(LatchMode::Symmetric, Some(a("10.0.0.1:4000")));
        assert_eq!(l.destination(), Some(a("10.0.0.1:4000")));
        assert_eq!(
            l.on_packet(a("10.0.0.1:4000"), 10 * MS),
            LatchVerdict::Accept(Some(LatchEvent::Confirmed(a("10.0.0.1:4000"))))
        );
        assert_eq!(l.confirmed(), Some(a("10.0.0.1:4000")));
        assert_eq!(
            l.on_packet(a("6.6.6.6:1234"), 20 * MS),
            LatchVerdict::Reject
        );
        assert_eq!(l.destination(), Some(a("10.0.0.1:4000")));
    }

    #[test]
    fn locked_peer_is_only_a_confirmed_source_that_cannot_change_yet() {
        let sdp = a("10.0.0.1:4000");
        let mut l = Latch::new(LatchMode::Symmetric, Some(sdp));
        assert_eq!(l.locked_peer(), None, "nothing learned");
        assert!(l.may_change(0));
        l.on_packet(sdp, 10 * MS);
        assert_eq!(l.locked_peer(), Some(sdp));
        assert!(!l.may_change(10 * MS + RELEARN_SILENCE_NS - 1));
        assert!(
            l.may_change(10 * MS + RELEARN_SILENCE_NS),
            "silent: re-learnable"
        );
        // A candidate still in its learning window is not a lock.
        let mut n = Latch::new(LatchMode::Symmetric, Some(a("192.168.1.5:4000")));
        n.on_packet(a("198.51.100.7:61000"), 0);
        assert_eq!(n.locked_peer(), None);
        // A new signal unlocks.
        l.on_signal(LatchMode::Symmetric, Some(a("10.0.0.2:4000")));
        assert_eq!(l.locked_peer(), None);
        // Strict never re-learns; handover and asymmetric never lock.
        let mut st = Latch::new(LatchMode::StrictSource, Some(sdp));
        st.on_packet(sdp, 0);
        assert_eq!(st.locked_peer(), Some(sdp));
        assert!(!st.may_change(100 * RELEARN_SILENCE_NS));
        for mode in [LatchMode::MediaHandover, LatchMode::Asymmetric] {
            let mut h = Latch::new(mode, Some(sdp));
            h.on_packet(sdp, 0);
            assert_eq!(h.locked_peer(), None, "{mode:?}");
        }
    }

    #[test]
    fn nat_source_is_learned_then_confirmed_after_window() {
        let mut l = Latch::new(LatchMode::Symmetric, Some(a("192.168.1.5:4000")));
        let nat = a("198.51.100.7:61000");
        assert_eq!(
            l.on_packet(nat, 0),
            LatchVerdict::Accept(Some(LatchEvent::Learned(nat)))
        );
        assert_eq!(l.destination(), Some(nat));
        assert_eq!(l.confirmed(), None);
        assert_eq!(l.on_packet(nat, 20 * MS), LatchVerdict::Accept(None));
        assert_eq!(
            l.on_packet(nat, LEARN_WINDOW_NS + 1),
            LatchVerdict::Accept(Some(LatchEvent::Confirmed(nat)))
        );
        assert_eq!(
            l.on_packet(a("203.0.113.66:5000"), LEARN_WINDOW_NS + 2),
            LatchVerdict::Reject
        );
    }

    #[test]
    fn better_ranked_source_replaces_candidate_and_worse_is_rejected() {
        let mut l = Latch::new(LatchMode::Symmetric, Some(a("198.51.100.7:4000")));
        let other = a("203.0.113.9:7000");
        let same_addr = a("198.51.100.7:4100");
        assert!(matches!(l.on_packet(other, 0), LatchVerdict::Accept(_)));
        assert_eq!(
            l.on_packet(same_addr, MS),
            LatchVerdict::Accept(Some(LatchEvent::Learned(same_addr)))
        );
        assert_eq!(l.on_packet(other, 2 * MS), LatchVerdict::Reject);
        assert_eq!(l.destination(), Some(same_addr));
    }

    #[test]
    fn relearn_only_after_silence() {
        let mut l = Latch::new(LatchMode::Symmetric, Some(a("10.0.0.1:4000")));
        let first = a("10.0.0.1:4000");
        let rebound = a("10.0.0.1:4444");
        l.on_packet(first, 0);
        assert_eq!(l.on_packet(rebound, 1_000 * MS), LatchVerdict::Reject);
        l.on_packet(first, 2_000 * MS);
        assert_eq!(
            l.on_packet(rebound, 2_000 * MS + RELEARN_SILENCE_NS - 1),
            LatchVerdict::Reject
        );
        assert_eq!(
            l.on_packet(rebound, 2_000 * MS + RELEARN_SILENCE_NS),
            LatchVerdict::Accept(Some(LatchEvent::Relearned {
                old: first,
                new: rebound
            }))
        );
        assert_eq!(l.destination(), Some(rebound));
        assert_eq!(
            l.on_packet(first, 2_000 * MS + RELEARN_SILENCE_NS + 1),
            LatchVerdict::Reject
        );
    }

    #[test]
    fn strict_source_never_relearns() {
        let mut l = Latch::new(LatchMode::StrictSource, Some(a("10.0.0.1:4000")));
        l.on_packet(a("10.0.0.1:4000"), 0);
        assert_eq!(
            l.on_packet(a("10.0.0.1:4444"), 3_600_000 * MS),
            LatchVerdict::Reject
        );
    }

    #[test]
    fn media_handover_follows_new_source() {
        let mut l = Latch::new(LatchMode::MediaHandover, Some(a("10.0.0.1:4000")));
        l.on_packet(a("10.0.0.1:4000"), 0);
        assert_eq!(
            l.on_packet(a("10.0.0.2:4000"), MS),
            LatchVerdict::Accept(Some(LatchEvent::Relearned {
                old: a("10.0.0.1:4000"),
                new: a("10.0.0.2:4000")
            }))
        );
        assert_eq!(l.destination(), Some(a("10.0.0.2:4000")));
    }

    #[test]
    fn asymmetric_never_learns() {
        let mut l = Latch::new(LatchMode::Asymmetric, Some(a("10.0.0.1:4000")));
        assert_eq!(l.on_packet(a("10.9.9.9:1"), 0), LatchVerdict::Accept(None));
        assert_eq!(l.destination(), Some(a("10.0.0.1:4000")));
    }

    #[test]
    fn signal_with_new_endpoint_restarts_learning_same_endpoint_keeps_lock() {
        let mut l = Latch::new(LatchMode::Symmetric, Some(a("10.0.0.1:4000")));
        l.on_packet(a("10.0.0.1:4000"), 0);
        l.on_signal(LatchMode::Symmetric, Some(a("10.0.0.1:4000")));
        assert_eq!(l.confirmed(), Some(a("10.0.0.1:4000")));
        l.on_signal(LatchMode::Symmetric, Some(a("10.0.0.7:5000")));
        assert_eq!(l.confirmed(), None);
        assert_eq!(l.destination(), Some(a("10.0.0.7:5000")));
    }

    #[test]
    fn media_before_the_answer_is_kept_when_the_answer_names_the_endpoint() {
        // The callee's packets arrive before the answer that gives its (NATed) SDP address.
        let mut l = Latch::new(LatchMode::Symmetric, None);
        let real = a("198.51.100.7:61000");
        l.on_packet(real, 0);
        l.on_signal(LatchMode::Symmetric, Some(a("10.0.0.5:4000")));
        assert_eq!(l.destination(), Some(real));
        assert_eq!(l.on_packet(real, MS), LatchVerdict::Accept(None));
        assert_eq!(
            l.on_packet(real, LEARN_WINDOW_NS + 1),
            LatchVerdict::Accept(Some(LatchEvent::Confirmed(real)))
        );
        // A later re-INVITE that moves the media does start over.
        l.on_signal(LatchMode::Symmetric, Some(a("10.0.0.9:5000")));
        assert_eq!(l.destination(), Some(a("10.0.0.9:5000")));
    }

    #[test]
    fn no_sdp_endpoint_means_no_destination_until_learned() {
        let mut l = Latch::new(LatchMode::Symmetric, None);
        assert_eq!(l.destination(), None);
        l.on_packet(a("10.0.0.3:9"), 0);
        assert_eq!(l.destination(), Some(a("10.0.0.3:9")));
    }
}
