//! Reading the relay's `/metrics` in end-to-end tests.
#![allow(dead_code)]
// An I/O edge: every wait here is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `/metrics` text of the relay's HTTP listener on 127.0.0.1:`port` (empty if it does
/// not answer within 2 s).
pub fn metrics(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the series `name` (labels included, as exposed) in a `/metrics` text.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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
