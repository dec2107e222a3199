//! The io_uring engine: one ring per pinned worker, one multishot `RecvMsg` per socket
//! drawing from a provided buffer ring, forwarded packets sent straight out of the receive
//! buffer (no copy in user space) with `Send` and the destination in the submission entry
//! (`sendto`: the kernel copies in no msghdr and imports no iovec), all sends of a completion
//! batch submitted with one `io_uring_enter`, buffers recycled when their send completes.
//! Consecutive datagrams of a batch that leave through one socket for one destination go as
//! one UDP GSO send (`SendMsg` with a segment size, [`super::gso`]): a video frame's packets
//! cross the kernel's send path once.
//!
//! Ring setup: SINGLE_ISSUER + DEFER_TASKRUN. Completion work then runs only inside our own
//! `io_uring_enter` with GETEVENTS, on this pinned thread, so the receive work is charged to
//! the worker rather than to whichever syscall the thread makes next; DEFER_TASKRUN needs
//! SINGLE_ISSUER, which lets only the creating thread submit, so each ring is built on its
//! worker thread. The completion queue is much larger than the submission queue: a multishot
//! receive posts one completion per datagram with no submission behind it, and a full
//! completion queue spills into the kernel's overflow list, which is slow.
//!
//! Sockets live in the ring's fixed-file table (registered files) where it has room: the
//! worker moves each new socket there and closes its descriptor, so a relay is not bounded by
//! the process's descriptor limit (each ring's table may hold as many as that limit) and the
//! kernel skips the per-operation descriptor lookup. Slots beyond the table keep their
//! descriptor.
//!
//! One worker thread may drive several rings ([`UringThread`]). Each ring's table is capped at
//! the descriptor limit, so a worker whose share of the port range holds more sockets than
//! that (and than the spare descriptors, see `placement`) gets a second ring instead of a
//! second thread on the same core, which would cost a thread's sleeps and wake-ups (20-40%
//! per packet measured). Every ring has an eventfd registered, which the kernel signals when
//! that ring gets work; the ring the thread sleeps on holds a read of the others'.
//!
//! Wake-ups: a thread that slept wakes for its first completion only after up to
//! `--uring-batch-wait-us` (400 µs by default; `min_wait_usec`, Linux 6.12+) or 32
//! completions, so at voice rates one wake-up handles several packets instead of one; the
//! commands that came meanwhile are applied before those packets. [`connect`] connects a
//! socket to its latch's locked source (`--connect-latched`).
//!
//! The engine is I/O only: commands, the per-datagram decision and housekeeping are the
//! worker core's ([`WorkerCore`](super::core::WorkerCore)), as under the mmsg engine. Here:
//! [`ring`] (the ring, receives, fixed files, submission), [`bufring`] (the provided
//! buffers), [`send`] (sends and GSO sends out of the receive buffers), [`token`] (what a
//! completion names), [`watchdog`] (stalled receives), [`worker`] (one ring's turn), and
//! [`UringThread`] below (the rings one thread drives).
//!
//! Overload: a multishot receive that ends (buffer ring empty: ENOBUFS, or any error) is
//! re-armed on the next turn, after sends have returned buffers, so every socket keeps being
//! read; a packet that finds no room in the submission queue is dropped and counted.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::types;

use crate::time::now_ns;

pub mod bufring;
pub mod connect;
pub mod ring;
pub mod send;
pub mod token;
pub mod watchdog;
pub mod worker;

pub use ring::probe;
pub use worker::UringWorker;

/// How long a thread sleeps on its ring with nothing to do (housekeeping runs at least this
/// often).
const IDLE_WAIT_NS: i64 = 100_000_000;

/// The rings one worker thread drives (see the module notes). The thread sleeps on one ring
/// at a time: the one with sends queued, so they go with the sleep's own enter (sleeping on
/// a fixed ring cost one more enter for each packet of the others: +17% at 60k packets/s).
/// It skips the sleep while another ring has work, and holds a read of every other ring's
/// work eventfd to wake when one gets some. Those eventfds are signalled only while the
/// thread sleeps, not for every batch of a busy ring.
pub struct UringThread {
    rings: Vec<UringWorker>,
    /// Passes in a row that took under [`SPIN_PASS_NS`] and handled nothing but the other
    /// rings' wake-up reads, and when the last pass ended.
    spinning: u32,
    last_pass_ns: u64,
    spin_logged: bool,
}

/// A pass this short that handled nothing did not sleep (or its sleep returned at once).
const SPIN_PASS_NS: u64 = crate::time::NANOS_PER_MS;
/// After this many such passes in a row (~20 ms of them) the thread pauses [`SPIN_PAUSE`]
/// after each further one until a pass handles something: issue 19 saw, in 2 of ~55
/// benchmark runs at 25,000 calls (3 rings a thread), one worker thread turning ~55,000
/// times a second without sleeping, each enter returning at once with nothing, for the whole
/// run (a whole core). The log line below named the condition (BENCHMARKS §30b): a ring the
/// thread does not sleep on kept IORING_SQ_TASKRUN set with nothing queued or completed, so
/// `has_work` said yes on every pass, the thread never slept, and entering that ring (with
/// GETEVENTS) did not clear the flag. The sleep decision now enters such a ring instead of
/// counting the flag ([`UringWorker::has_work_to_run`]); the guard stays for whatever else
/// might keep a thread turning. The first time, the thread logs what each ring's `has_work`
/// saw. A paused thread's packets and commands wait at most the pause.
const SPIN_PASSES: u32 = 1024;
const SPIN_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

impl UringThread {
    /// Links the rings (all built on this thread). Fails if a work eventfd cannot be made.
    pub fn new(mut rings: Vec<UringWorker>) -> io::Result<UringThread> {
        if rings.is_empty() {
            return Err(io::Error::other("a worker needs at least one ring"));
        }
        if rings.len() > 1 {
            let fds = rings
                .iter_mut()
                .map(UringWorker::make_work_fd)
                .collect::<io::Result<Vec<_>>>()?;
            for (k, ring) in rings.iter_mut().enumerate() {
                for (j, &fd) in fds.iter().enumerate() {
                    if j != k {
                        ring.watch(fd);
                    }
                }
            }
        }
        Ok(UringThread {
            rings,
            spinning: 0,
            last_pass_ns: 0,
            spin_logged: false,
        })
    }

    /// Whether every ring but `sleeper` is without work (a ring showing only
    /// IORING_SQ_TASKRUN is entered to tell: [`UringWorker::has_work_to_run`]).
    fn others_idle(&mut self, sleeper: usize) -> bool {
        self.rings
            .iter_mut()
            .enumerate()
            .all(|(k, ring)| k == sleeper || !ring.has_work_to_run())
    }

    /// Turns the other rings' work eventfds on (before a sleep) or off (after it).
    fn signal_others(&mut self, sleeper: usize, on: bool) {
        for (k, ring) in self.rings.iter_mut().enumerate() {
            if k != sleeper {
                ring.signal_work(on);
            }
        }
    }

    /// The thread's loop. A panic in a pass (a bug in the engine's I/O code: the packet
    /// decision, commands and housekeeping have guards of their own) ends that pass only:
    /// it is counted (`worker_restarts`) and the loop goes on with the same rings, sockets
    /// and slots. What the pass had in hand is lost: the completions it had not handled yet
    /// (their datagrams, and the provided buffers they held, until the ring is rebuilt).
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let ts = types::Timespec::new().nsec(IDLE_WAIT_NS as u32);
        let mut sleeper = 0;
        while !stop.load(Ordering::Relaxed) {
            match catch_unwind(AssertUnwindSafe(|| self.pass(&ts, &mut sleeper))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    if let Some(ring) = self.rings.first() {
                        ring.count_restart();
                    }
                }
            }
        }
    }

    /// One pass over the rings: submit, sleep if nothing is to do, handle completions, then
    /// housekeeping. False when a ring cannot be entered any more (the worker stops).
    fn pass(&mut self, ts: &types::Timespec, sleeper: &mut usize) -> bool {
        let n = self.rings.len();
        if let Some(k) = (0..n).find(|&k| self.rings[k].has_queued_submissions()) {
            *sleeper = k;
        }
        let sleeper = *sleeper;
        // Sleep only when no other ring has work (its sends would wait for the timeout).
        let mut wait = self.others_idle(sleeper);
        if wait && n > 1 {
            self.signal_others(sleeper, true);
            // The kernel signals a ring's eventfd only when it gets work with none pending
            // (and sets IORING_SQ_TASKRUN first): work that came before the signals were
            // on is seen here, work after them signals. A stale look costs one idle timeout.
            std::sync::atomic::fence(Ordering::SeqCst);
            wait = self.others_idle(sleeper);
            if wait && !self.rings[sleeper].arm_watches() {
                tracing::error!("cannot arm the reads of the rings' work eventfds");
                wait = false;
            }
            if !wait {
                self.signal_others(sleeper, false);
            }
        }
        let mut handled = 0;
        let mut now = None;
        // The sleeper first; the others after it, with what woke it.
        for k in std::iter::once(sleeper).chain((0..n).filter(|&k| k != sleeper)) {
            match self.rings[k].turn(wait && k == sleeper, ts, &mut now) {
                Ok(got) => handled += got,
                Err(e) => {
                    tracing::error!(error = %e, ring = k, "io_uring_enter failed; worker stops");
                    return false;
                }
            }
            if wait && k == sleeper && n > 1 {
                self.signal_others(sleeper, false);
            }
        }
        let now = now.unwrap_or_else(now_ns);
        for ring in &mut self.rings {
            ring.housekeeping(now, handled == 0);
        }
        let useful: usize = self.rings.iter().map(UringWorker::last_useful).sum();
        self.note_spin(useful, wait, sleeper, now);
        true
    }

    /// The spin guard (see [`SPIN_PASSES`]): counts short passes that handled nothing, and
    /// past the limit pauses the thread after each.
    /// `now`: the pass's time (read once a pass), so passes are measured from one to the next.
    fn note_spin(&mut self, useful: usize, waited: bool, sleeper: usize, now: u64) {
        let short = now.saturating_sub(self.last_pass_ns) < SPIN_PASS_NS;
        self.last_pass_ns = now;
        if useful > 0 || !short {
            self.spinning = 0;
            return;
        }
        self.spinning = self.spinning.saturating_add(1);
        if self.spinning < SPIN_PASSES {
            return;
        }
        if !self.spin_logged {
            self.spin_logged = true;
            let rings: Vec<String> = self
                .rings
                .iter_mut()
                .enumerate()
                .map(|(k, r)| format!("ring {k}: {}", r.work_state()))
                .collect();
            tracing::warn!(
                sleeper,
                waited,
                rings = %rings.join("; "),
                "a worker thread turned {SPIN_PASSES} times in a row without sleeping or handling anything; it now pauses between such turns"
            );
        }
        std::thread::sleep(SPIN_PAUSE);
    }
}
