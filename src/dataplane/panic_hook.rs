//! Rate-limited panic messages for the data-plane workers. A worker contains a panic on its
//! packet path (see [`super::core::WorkerCore::receive`]) and counts it; if one kind of
//! datagram triggers it, a flood of them would otherwise print Rust's panic message (and a
//! backtrace, with `RUST_BACKTRACE`) to stderr once per packet, a write per packet on the
//! worker's core. With this hook installed a worker thread reports at most one panic a
//! second; the counters (`drop_panic`, `worker_panics`) have the rest. Every other thread
//! reports through the previous hook as before.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::{now_ns, NANOS_PER_SEC};

/// Data-plane worker threads are named with this prefix.
pub const WORKER_THREAD_PREFIX: &str = "rtpanchor-dp";

/// When a worker last reported a panic (monotonic ns; 0: never).
static LAST_REPORT_NS: AtomicU64 = AtomicU64::new(0);

/// Installs the hook (once, at start, before the workers run).
pub fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(WORKER_THREAD_PREFIX));
        if worker && !take_report_turn(now_ns()) {
            return;
        }
        previous(info);
    }));
}

/// True when a report is due at `now`: the first, or a second after the last one.
fn take_report_turn(now: u64) -> bool {
    let last = LAST_REPORT_NS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < NANOS_PER_SEC {
        return false;
    }
    LAST_REPORT_NS
        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_report_a_second() {
        let t0 = 5 * NANOS_PER_SEC;
        assert!(take_report_turn(t0));
        assert!(!take_report_turn(t0 + 1));
        assert!(!take_report_turn(t0 + NANOS_PER_SEC - 1));
        assert!(take_report_turn(t0 + NANOS_PER_SEC));
        assert!(!take_report_turn(t0 + NANOS_PER_SEC + 10));
    }
}
