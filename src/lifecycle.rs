//! The process's run state, shared by the ng handler, the SIP media hook, signal handling and
//! (for `/health`) the HTTP endpoint: whether the relay is draining, and how to change the log
//! filter live. One instance per process, behind an `Arc`; reads are one relaxed load.
//!
//! Draining (SIGTERM or ng `drain`): no new call is accepted (ng `result: load limit`, a SIP
//! INVITE gets 503 with Retry-After), calls already up keep relaying; the process exits once
//! the last one ends or `--drain-timeout` passes. Ping still answers `pong`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Applies a log filter (`info`, `debug`, a tracing filter): `Err` with the reason when it
/// does not parse.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

#[derive(Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    /// A standby relay (`--standby`): no calls until activated.
    standby: AtomicBool,
    /// Activation asked (ng `active`, or the active relay's heartbeat expired).
    activate: AtomicBool,
    log_level: OnceLock<LogLevelSetter>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("draining", &self.is_draining())
            .finish()
    }
}

impl Lifecycle {
    pub fn new() -> Arc<Lifecycle> {
        Arc::new(Lifecycle::default())
    }

    /// True from the first drain request on (it is never undone).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining; returns whether it was already.
    pub fn start_drain(&self) -> bool {
        self.draining.swap(true, Ordering::Relaxed)
    }

    /// Marks this relay a standby (or active again, once it took over).
    pub fn set_standby(&self, on: bool) {
        self.standby.store(on, Ordering::Relaxed);
    }

    pub fn is_standby(&self) -> bool {
        self.standby.load(Ordering::Relaxed)
    }

    /// Asks a standby to take over; returns whether this relay is a standby.
    pub fn request_activation(&self) -> bool {
        let standby = self.is_standby();
        if standby {
            self.activate.store(true, Ordering::Relaxed);
        }
        standby
    }

    /// Whether activation was asked since the last look (and clears it).
    pub fn take_activation(&self) -> bool {
        self.activate.swap(false, Ordering::Relaxed)
    }

    /// Installs how the log filter is changed (once, by `main`).
    pub fn set_log_level_setter(&self, f: LogLevelSetter) {
        let _ = self.log_level.set(f);
    }

    /// Changes the log filter live.
    pub fn set_log_level(&self, level: &str) -> Result<(), String> {
        match self.log_level.get() {
            Some(f) => f(level),
            None => Err("log level cannot be changed in this process".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_is_sticky_and_log_level_needs_a_setter() {
        let l = Lifecycle::new();
        assert!(!l.is_draining());
        assert!(!l.start_drain());
        assert!(l.start_drain());
        assert!(l.is_draining());
        assert!(l.set_log_level("debug").is_err());
        l.set_log_level_setter(Box::new(|s| {
            if s == "debug" {
                Ok(())
            } else {
                Err(format!("bad {s}"))
            }
        }));
        assert!(l.set_log_level("debug").is_ok());
        assert_eq!(l.set_log_level("x"), Err("bad x".into()));
    }

    #[test]
    fn only_a_standby_is_activated() {
        let l = Lifecycle::new();
        assert!(!l.request_activation());
        assert!(!l.take_activation());
        l.set_standby(true);
        assert!(l.request_activation());
        assert!(l.take_activation());
        assert!(!l.take_activation());
    }
}
