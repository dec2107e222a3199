//! ng request counts and latencies, recorded by the ng server once per handled request
//! (control plane only) and read at scrape time.

use std::sync::Mutex;

use crate::time::Nanos;

/// Upper bounds (seconds) of the request latency histogram. A request normally takes tens of
/// microseconds; Kamailio's rtpengine module gives up after `rtpengine_tout_ms` (1 s by
/// default), so the buckets span 50 µs to that timeout, roughly ×2-×5 apart.
pub const LATENCY_BUCKETS_SECS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0,
];

/// One command's figures: rtpengine's `requests_total` and `request_seconds_total`, and the
/// histogram (cumulative counts per bucket of [`LATENCY_BUCKETS_SECS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestStat {
    pub request: &'static str,
    pub count: u64,
    pub seconds: f64,
    /// Requests at or under each bound, not cumulative (the collector sums).
    pub buckets: [u64; LATENCY_BUCKETS_SECS.len()],
}

/// Per-command request figures. One short lock per request: the ng server already takes the
/// session manager's lock for each one, and this one is held for a few additions.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    by_command: Mutex<Vec<RequestStat>>,
}

impl RequestMetrics {
    /// Counts one handled request of `command` that took `elapsed_ns`.
    pub fn record(&self, command: &'static str, elapsed_ns: Nanos) {
        let secs = elapsed_ns as f64 / 1e9;
        let mut v = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
        let i = match v.iter().position(|s| s.request == command) {
            Some(i) => i,
            None => {
                v.push(RequestStat {
                    request: command,
                    ..RequestStat::default()
                });
                v.len() - 1
            }
        };
        if let Some(s) = v.get_mut(i) {
            s.count += 1;
            s.seconds += secs;
            if let Some(b) = LATENCY_BUCKETS_SECS.iter().position(|&le| secs <= le) {
                if let Some(c) = s.buckets.get_mut(b) {
                    *c += 1;
                }
            }
        }
    }

    /// The figures so far, commands in the order first seen.
    pub fn snapshot(&self) -> Vec<RequestStat> {
        self.by_command
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
