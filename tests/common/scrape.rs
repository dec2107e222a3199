//! Reading the relay's `/metrics` in end-to-end tests.
#![allow(dead_code)]
// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

pub use super::http::exposed as series;

/// The `/metrics` text of the relay's HTTP listener on 127.0.0.1:`port` (empty if it does
/// not answer).
pub fn metrics(port: u16) -> String {
    super::http::try_get(port, "/metrics").map_or_else(String::new, |(_, body)| body)
}

/// Waits (bounded by `limit`) until `name` reaches `at_least`.
pub fn wait_series(port: u16, name: &str, at_least: f64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if series(&metrics(port), name).is_some_and(|v| v >= at_least) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
