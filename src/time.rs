//! Time as plain `u64` nanoseconds.
//!
//! Protocol logic never reads the clock: callers pass `now` in. This module holds the only
//! reads of the OS clock, used at the I/O edges (data-plane workers once per batch, control
//! servers once per message or tick). A `u64` fits an `AtomicU64`, so the data plane can
//! publish "last packet seen" without locks.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since an arbitrary process-wide origin (monotonic).
pub type Nanos = u64;

pub const NANOS_PER_SEC: u64 = 1_000_000_000;
pub const NANOS_PER_MS: u64 = 1_000_000;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    *ORIGIN.get_or_init(Instant::now)
}

/// Monotonic nanoseconds since process start. Never 0 after the first call returns (the
/// origin is taken before the first reading), so 0 can mean "never".
pub fn now_ns() -> Nanos {
    let origin = origin();
    #[allow(clippy::disallowed_methods)]
    let elapsed = Instant::now().duration_since(origin);
    (elapsed.as_nanos() as u64).max(1)
}

/// Seconds since the Unix epoch, for reports (ng `created`, `last packet`).
pub fn unix_now() -> Duration {
    #[allow(clippy::disallowed_methods)]
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Converts a monotonic reading into Unix seconds, given a pair of readings taken together.
pub fn mono_to_unix_secs(mono: Nanos, now_mono: Nanos, now_unix: Duration) -> u64 {
    let age = now_mono.saturating_sub(mono);
    now_unix.as_secs().saturating_sub(age / NANOS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_nonzero() {
        let a = now_ns();
        let b = now_ns();
        assert!(a >= 1);
        assert!(b >= a);
    }

    #[test]
    fn mono_to_unix_subtracts_age() {
        let now_unix = Duration::from_secs(1_000);
        assert_eq!(
            mono_to_unix_secs(5 * NANOS_PER_SEC, 15 * NANOS_PER_SEC, now_unix),
            990
        );
        assert_eq!(
            mono_to_unix_secs(20 * NANOS_PER_SEC, 15 * NANOS_PER_SEC, now_unix),
            1_000
        );
    }
}
