//! The stall watchdog. In one of ~220 forwarding runs measured on Linux 6.18, a multishot
//! receive stopped posting completions while packets kept arriving, with no error (it did not
//! recur). Every second, each RTP socket that has been silent for half a second is
//! asked how much data it holds; data queued at two checks in a row with no completion in
//! between means a stalled receive, which is cancelled (its final completion re-arms it).
//! Queued data is never lost meanwhile.

use std::sync::atomic::Ordering;

use crate::dataplane::shared::{bump, WorkerCounters};
use crate::dataplane::slot::{Slot, SlotIdx, SlotKind};
use crate::time::NANOS_PER_MS;

use super::ring::Ring;

const WATCHDOG_EVERY_NS: u64 = 1_000 * NANOS_PER_MS;
const STALL_SILENCE_NS: u64 = 500 * NANOS_PER_MS;
/// Sockets silent for longer than this are not checked (ended or held media), except those
/// that never received anything (a receive stalled from the start).
const STALL_WATCH_WINDOW_NS: u64 = 60_000 * NANOS_PER_MS;
/// For a socket whose RTP the in-kernel path relays: its newest-packet time is the kernel's,
/// published by the worker's fold a few seconds apart at scale (`kernel::pace`), and the
/// socket itself sees only what the program passes up (RTCP, or RTP it hands back, after
/// which the direction's packets all come to the socket). Asked only once that long silent,
/// so flowing in-kernel directions cost no query (at 25,000 calls they were ~3,000 a
/// second); a stalled receive under one is found this much later. Above the longest fold
/// gap (`kernel::pace::MAX_FOLD_GAP` passes of about a second, and one more) with room.
const KERNEL_STALL_SILENCE_NS: u64 = 20_000 * NANOS_PER_MS;
// The relation above, checked where it is stated: a longer fold gap needs a longer silence.
const _: () = assert!(
    KERNEL_STALL_SILENCE_NS
        > (crate::dataplane::kernel::pace::MAX_FOLD_GAP as u64 + 1) * crate::time::NANOS_PER_SEC
);
/// Slots looked at per watchdog pass (a look reads the socket's counters: a cache miss at
/// scale). When few sockets qualify, as with calls in the kernel, an unbounded pass read
/// every slot each second (13% of the relay at 25,000 calls); bounded, each socket is
/// looked at every `slots / 1,024` passes (at 25,000 calls, ~8,300 sockets a worker ring,
/// every 8 s; at 4,096 the looks were still a fifth of the data-plane threads' CPU there,
/// at 2,048 a sixth of what those threads spent beyond what they spend at 100 calls).
const WATCHDOG_SCAN: usize = 1024;
/// Queries per watchdog pass, taken round-robin from where the last pass stopped. Streams
/// at a packet a second (10,000 calls at 20k packets/s) all look silent: unbounded, the
/// watchdog cost as much as the forwarding. A stall is then found within a few passes of
/// `slots / budget` seconds, still far sooner than anyone would hang up.
const WATCHDOG_BUDGET: usize = 512;

/// When the last pass ran, and where the next one starts.
pub struct Watchdog {
    last_ns: u64,
    cursor: usize,
}

impl Watchdog {
    pub fn new(now: u64) -> Watchdog {
        Watchdog {
            last_ns: now,
            cursor: 0,
        }
    }

    /// Runs a pass when one is due (after every turn of the thread).
    pub fn tick(&mut self, now: u64, slots: &mut [Slot], ring: &mut Ring, c: &WorkerCounters) {
        if now.saturating_sub(self.last_ns) >= WATCHDOG_EVERY_NS {
            self.pass(now, slots, ring, c);
            self.last_ns = now;
        }
    }

    /// Not on the packet path: once a second, one `FIONREAD` (or, for a socket held in the
    /// fixed-file table, one SIOCINQ through the ring) per silent RTP socket.
    fn pass(&mut self, now: u64, slots: &mut [Slot], ring: &mut Ring, c: &WorkerCounters) {
        let n = slots.len();
        let mut budget = WATCHDOG_BUDGET;
        let start = self.cursor;
        let scan = n.min(WATCHDOG_SCAN);
        // Where the next pass starts when this one looks at its whole share.
        self.cursor = if n == 0 { 0 } else { (start + scan) % n };
        for k in 0..scan {
            if budget == 0 {
                self.cursor = (start + k) % n;
                return;
            }
            let i = (start + k) % n;
            let idx = SlotIdx::new(i as u32);
            let Some(s) = slots.get_mut(i) else {
                break;
            };
            if !s.is_live() || !s.armed || s.kind != SlotKind::Rtp {
                continue;
            }
            let last = s
                .counters()
                .map_or(0, |c| c.last_packet_ns.load(Ordering::Relaxed));
            if !watched(s.kernel, last, now) {
                s.stall_suspect = false;
                continue;
            }
            budget -= 1;
            bump(&c.watch_queries, 1);
            if s.fixed {
                // No descriptor to ioctl: ask through the ring; the answer comes back as a
                // completion (see `on_answer`).
                let _ = ring.ask_queued(idx, s.generation);
                continue;
            }
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int into `queued`, which outlives the call; `fd` is
            // the slot's open socket.
            let rc = unsafe { libc::ioctl(s.fd(), libc::FIONREAD, &mut queued) };
            on_queued(slots, idx, rc == 0 && queued > 0, ring, c);
        }
    }
}

/// Whether a live, armed RTP socket whose newest packet came at `last` (0: none yet) is
/// asked at `now`: silent long enough for its path (`kernel`: its RTP is relayed in the
/// kernel), and not so long that its media has ended (except one that never received).
fn watched(kernel: bool, last: u64, now: u64) -> bool {
    let silent = now.saturating_sub(last);
    let quiet = if kernel {
        KERNEL_STALL_SILENCE_NS
    } else {
        STALL_SILENCE_NS
    };
    silent >= quiet && (last == 0 || silent <= STALL_WATCH_WINDOW_NS)
}

/// The answer `res` to the watchdog's cancellation of slot `idx`'s stalled receive. A
/// cancelled receive re-arms through its own final completion; one the kernel no longer has
/// (-ENOENT: it ended without a completion the worker saw) is re-armed here, or the socket
/// would never be read again.
pub fn on_cancelled(slots: &mut [Slot], idx: SlotIdx, current: bool, res: i32, ring: &mut Ring) {
    if res != -libc::ENOENT || !current {
        return;
    }
    if let Some(s) = slots.get_mut(idx.index()) {
        if s.is_live() && s.armed {
            s.armed = false;
            let closing = s.closing;
            ring.on_recv_ended(idx, closing);
        }
    }
}

/// The answer `res` (bytes queued, or -errno) to the query for slot `idx` through the ring;
/// `current`: the slot still has the owner it had when asked.
pub fn on_answer(
    slots: &mut [Slot],
    idx: SlotIdx,
    current: bool,
    res: i32,
    ring: &mut Ring,
    c: &WorkerCounters,
) {
    let watched = current
        && slots
            .get(idx.index())
            .is_some_and(|s| s.is_live() && s.armed);
    // A kernel without socket uring_cmd answers with an error: no verdict.
    if res < 0 {
        bump(&c.watch_failed, 1);
    } else if watched {
        on_queued(slots, idx, res > 0, ring, c);
    }
}

/// The verdict for slot `i`: data queued at two checks in a row with no completion in
/// between means a stalled receive, which is cancelled (and re-armed).
fn on_queued(slots: &mut [Slot], i: SlotIdx, has_data: bool, ring: &mut Ring, c: &WorkerCounters) {
    let Some(s) = slots.get_mut(i.index()) else {
        return;
    };
    let suspect = s.stall_suspect;
    s.stall_suspect = has_data && !suspect;
    if has_data && suspect {
        bump(&c.recv_stalls, 1);
        let _ = ring.cancel_stalled(i, s.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flowing_in_kernel_socket_is_not_asked_and_a_silent_one_is() {
        let s = 1_000 * NANOS_PER_MS;
        let now = 100 * s;
        // User space: asked after half a second of silence, up to the watch window.
        assert!(!watched(false, now - s / 4, now));
        assert!(watched(false, now - s, now));
        assert!(watched(false, now - 60 * s, now));
        assert!(!watched(false, now - 61 * s, now), "media ended");
        assert!(watched(false, 0, now), "never received");
        // In the kernel: figures folded seconds apart do not make it look silent.
        // Published by folds up to MAX_FOLD_GAP (16) passes and one apart.
        assert!(!watched(true, now - 17 * s, now));
        assert!(watched(true, now - 20 * s, now));
        assert!(!watched(true, now - 61 * s, now));
        assert!(watched(true, 0, now));
    }
}
