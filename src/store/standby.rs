//! Active/standby over Redis (`--redis` with `--standby`).
//!
//! The active relay writes a heartbeat: the key [`HEARTBEAT_KEY`] set to its node name
//! (host name and process id) every [`HEARTBEAT_EVERY`], expiring after [`HEARTBEAT_TTL`].
//! A standby reads that key every [`POLL_EVERY`] (polling: one `GET`, nothing to subscribe
//! to or miss) and asks to take over once it is gone: expired (the active died or lost
//! Redis) or deleted. Taking over loads every call the active stored (one pipelined read, as
//! at a restart) and binds its ports, so the standby holds no copy that could drift; the
//! service address moves to it by the operator's means (keepalived/VRRP), before or after.
//! A standby that cannot reach Redis does not take over (it cannot tell a dead active from
//! a dead link).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::lifecycle::Lifecycle;
use crate::time::now_ns;

/// The heartbeat key.
pub const HEARTBEAT_KEY: &str = "rtpanchor:active";
/// How often the active relay writes it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Its lifetime: a standby takes over at most this long (plus a poll) after the active's
/// last write.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// How often a standby reads it.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// This relay's name in the heartbeat: host name and process id.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// Sleeps `d` in short steps; false as soon as `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    while now_ns() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !stop.load(Ordering::Relaxed)
}

/// The active relay's heartbeat writer (a thread of its own); stops when dropped (the key
/// then expires after [`HEARTBEAT_TTL`]).
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(url: &str, node: String) -> anyhow::Result<Heartbeat> {
        let client = redis::Client::open(url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ttl_ms = u64::try_from(HEARTBEAT_TTL.as_millis()).unwrap_or(u64::MAX);
        let thread = std::thread::Builder::new()
            .name("rtpanchor-heartbeat".into())
            .spawn(move || {
                let mut con = None;
                let mut failing = false;
                loop {
                    if con.is_none() {
                        con = client.get_connection_with_timeout(CONNECT_TIMEOUT).ok();
                    }
                    let ok = match con.as_mut() {
                        Some(c) => redis::cmd("SET")
                            .arg(HEARTBEAT_KEY)
                            .arg(&node)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query::<()>(c)
                            .is_ok(),
                        None => false,
                    };
                    if !ok {
                        con = None;
                        if !failing {
                            tracing::error!(
                                "heartbeat not written to Redis: a standby may take over"
                            );
                        }
                    } else if failing {
                        tracing::info!("heartbeat written again");
                    }
                    failing = !ok;
                    if !nap(HEARTBEAT_EVERY, &s) {
                        return;
                    }
                }
            })?;
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a standby concludes from one read of the heartbeat key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    TakeOver,
}

/// Sans-IO: the key's value (`None`: absent), whether a heartbeat was ever seen, and how
/// long the standby has watched. Never seen: the active may be starting, so it is given one
/// heartbeat lifetime first.
pub fn judge(value: Option<&str>, seen: bool, watched: Duration) -> Verdict {
    match value {
        Some(_) => Verdict::Wait,
        None if seen || watched >= HEARTBEAT_TTL => Verdict::TakeOver,
        None => Verdict::Wait,
    }
}

/// Starts the standby's watch of the heartbeat (a thread of its own): once the active's
/// heartbeat is gone it asks `lifecycle` to take over, and stops.
pub fn watch(url: &str, lifecycle: Arc<Lifecycle>) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let never = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("rtpanchor-standby".into())
        .spawn(move || {
            let started = now_ns();
            let mut con = None;
            let mut seen: Option<String> = None;
            while lifecycle.is_standby() {
                if con.is_none() {
                    con = client.get_connection_with_timeout(CONNECT_TIMEOUT).ok();
                }
                let read = con.as_mut().map(|c| {
                    redis::cmd("GET")
                        .arg(HEARTBEAT_KEY)
                        .query::<Option<String>>(c)
                });
                match read {
                    Some(Ok(value)) => {
                        if value.is_some() && value != seen {
                            tracing::info!(
                                active = value.as_deref(),
                                "standby: following the active relay"
                            );
                            seen = value.clone();
                        }
                        let watched = Duration::from_nanos(now_ns().saturating_sub(started));
                        if judge(value.as_deref(), seen.is_some(), watched) == Verdict::TakeOver {
                            tracing::warn!(
                                last = seen.as_deref(),
                                "standby: the active relay's heartbeat is gone; taking over"
                            );
                            lifecycle.request_activation();
                            return;
                        }
                    }
                    _ => {
                        con = None;
                        tracing::warn!("standby: Redis unreachable; not taking over");
                    }
                }
                nap(POLL_EVERY, &never);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_takes_over_only_once_the_heartbeat_is_gone() {
        let s = Duration::from_secs(1);
        assert_eq!(judge(Some("a:1"), true, s), Verdict::Wait);
        assert_eq!(judge(None, true, s), Verdict::TakeOver);
        // Never seen: the active gets one heartbeat lifetime to start.
        assert_eq!(judge(None, false, s), Verdict::Wait);
        assert_eq!(judge(None, false, HEARTBEAT_TTL), Verdict::TakeOver);
    }
}
