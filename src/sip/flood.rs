//! Per-source flood control, sans-IO (in the spirit of Kamailio's pike plus a failed-auth
//! ban): a source that sends more than `max_requests` messages in a one-second window, or
//! fails authentication more than `max_failed_auths` times in a one-minute window, is banned
//! for `ban_ns`: its messages are dropped unanswered before they are parsed (answering would
//! tell a scanner it found something). The caller logs a ban once, when [`Verdict::Banned`]
//! is returned with `new_ban`.
//!
//! Memory is bounded: at most `max_sources` addresses are tracked; when the table is full,
//! idle entries are swept, and if it is still full new sources are admitted untracked (and
//! counted) rather than growing the table. Scanner User-Agents are not looked at: they are
//! trivially changed.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::HashMap;
use std::net::IpAddr;

const SECOND_NS: u64 = 1_000_000_000;
const MINUTE_NS: u64 = 60 * SECOND_NS;

/// Limits. The defaults let a busy phone (a few requests a second, retransmissions
/// included) and a user mistyping a password a few times through; a carrier trunk that
/// sends more belongs in `--sip-trusted`, which the caller exempts.
#[derive(Clone, Copy, Debug)]
pub struct FloodConfig {
    /// Messages per one-second window from one address (0: no limit).
    pub max_requests: u32,
    /// Failed authentications per one-minute window from one address (0: no limit).
    pub max_failed_auths: u32,
    pub ban_ns: u64,
    pub max_sources: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            max_requests: 100,
            max_failed_auths: 10,
            ban_ns: 5 * MINUTE_NS,
            max_sources: 100_000,
        }
    }
}

/// What to do with a message from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Drop it; `new_ban` is true the first time (log it then).
    Banned {
        new_ban: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodStats {
    pub bans: u64,
    /// Messages dropped from banned sources.
    pub dropped: u64,
    /// Messages admitted untracked because the table was full.
    pub untracked: u64,
    pub tracked: usize,
}

/// Events counted in a fixed window.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start_ns: u64,
    events: u32,
}

impl Window {
    /// Counts one event at `now` in windows of `len_ns`; returns the window's count.
    fn count(&mut self, now: u64, len_ns: u64) -> u32 {
        if now.saturating_sub(self.start_ns) >= len_ns {
            self.start_ns = now;
            self.events = 0;
        }
        self.events = self.events.saturating_add(1);
        self.events
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Messages in the current second.
    requests: Window,
    /// Failed authentications in the current minute.
    failures: Window,
    banned_until_ns: u64,
    last_seen_ns: u64,
}

/// The per-source table (see the module docs).
#[derive(Debug, Default)]
pub struct FloodGuard {
    cfg: FloodConfig,
    sources: HashMap<IpAddr, Entry>,
    stats: FloodStats,
}

impl FloodGuard {
    pub fn new(cfg: FloodConfig) -> Self {
        FloodGuard {
            cfg,
            sources: HashMap::new(),
            stats: FloodStats::default(),
        }
    }

    pub fn stats(&self) -> FloodStats {
        let mut s = self.stats;
        s.tracked = self.sources.len();
        s
    }

    /// The entry for `ip`, made room for if needed; `None` when the table is full.
    fn entry(&mut self, ip: IpAddr, now: u64) -> Option<&mut Entry> {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.cfg.max_sources {
            self.sweep(now);
            if self.sources.len() >= self.cfg.max_sources {
                self.stats.untracked += 1;
                return None;
            }
        }
        Some(self.sources.entry(ip).or_default())
    }

    /// Forgets sources that are not banned and were idle for a minute.
    pub fn sweep(&mut self, now: u64) {
        self.sources.retain(|_, e| {
            e.banned_until_ns > now || now.saturating_sub(e.last_seen_ns) < MINUTE_NS
        });
    }

    /// One message from `ip` at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: u64) -> Verdict {
        let (limit, ban_ns) = (self.cfg.max_requests, self.cfg.ban_ns);
        let Some(e) = self.entry(ip, now) else {
            return Verdict::Admit;
        };
        e.last_seen_ns = now;
        if e.banned_until_ns > now {
            self.stats.dropped += 1;
            return Verdict::Banned { new_ban: false };
        }
        if e.requests.count(now, SECOND_NS) > limit && limit > 0 {
            e.banned_until_ns = now.saturating_add(ban_ns);
            self.stats.bans += 1;
            self.stats.dropped += 1;
            return Verdict::Banned { new_ban: true };
        }
        Verdict::Admit
    }

    /// A failed authentication from `ip`; true when it starts a ban (log it then).
    pub fn failed_auth(&mut self, ip: IpAddr, now: u64) -> bool {
        let (limit, ban_ns) = (self.cfg.max_failed_auths, self.cfg.ban_ns);
        let Some(e) = self.entry(ip, now) else {
            return false;
        };
        if e.banned_until_ns > now || limit == 0 || e.failures.count(now, MINUTE_NS) <= limit {
            return false;
        }
        e.banned_until_ns = now.saturating_add(ban_ns);
        self.stats.bans += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND_NS;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard() -> FloodGuard {
        FloodGuard::new(FloodConfig {
            max_requests: 10,
            max_failed_auths: 3,
            ban_ns: 60 * S,
            max_sources: 4,
        })
    }

    #[test]
    fn request_rate_bans_once_and_unbans_after_the_window() {
        let mut g = guard();
        let a = ip("192.0.2.1");
        for i in 0..10 {
            assert_eq!(g.admit(a, S + i), Verdict::Admit);
        }
        assert_eq!(g.admit(a, S + 10), Verdict::Banned { new_ban: true });
        assert_eq!(g.admit(a, S + 11), Verdict::Banned { new_ban: false });
        // Another source is unaffected.
        assert_eq!(g.admit(ip("192.0.2.2"), S + 12), Verdict::Admit);
        // Still banned just before the window ends, admitted after.
        assert!(matches!(g.admit(a, 60 * S), Verdict::Banned { .. }));
        assert_eq!(g.admit(a, 62 * S), Verdict::Admit);
        assert_eq!(g.stats().bans, 1);
        // A steady 10/s never bans.
        let b = ip("192.0.2.3");
        for sec in 0..5u64 {
            for i in 0..10 {
                assert_eq!(g.admit(b, (100 + sec) * S + i), Verdict::Admit);
            }
        }
    }

    #[test]
    fn failed_auths_ban() {
        let mut g = guard();
        let a = ip("192.0.2.1");
        assert!(!g.failed_auth(a, S));
        assert!(!g.failed_auth(a, 2 * S));
        assert!(!g.failed_auth(a, 3 * S));
        assert!(g.failed_auth(a, 4 * S));
        assert_eq!(g.admit(a, 5 * S), Verdict::Banned { new_ban: false });
        // Failures spread over minutes do not add up.
        let b = ip("192.0.2.2");
        for m in 0..10u64 {
            assert!(!g.failed_auth(b, m * 61 * S));
        }
    }

    #[test]
    fn table_is_bounded() {
        let mut g = guard();
        for i in 0..100u8 {
            let _ = g.admit(IpAddr::from([10, 0, 0, i]), S);
        }
        assert_eq!(g.stats().tracked, 4);
        assert_eq!(g.stats().untracked, 96);
        // After a minute idle, room again.
        assert_eq!(g.admit(ip("10.1.0.1"), 70 * S), Verdict::Admit);
        assert_eq!(g.stats().tracked, 1);
    }
}
