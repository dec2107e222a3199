//! Where call and registration state is kept so that a restarted relay can pick it up.
//!
//! The session manager and the registrar produce [`Change`]s (sans-IO: a key and a serialised
//! record, see [`record`]); a [`ChangeSink`] takes them without ever waiting. Two sinks:
//!
//! - [`MemoryStore`]: the embedded default, in this process's memory (what the relay does
//!   without `--redis`: nothing survives the process; tests read it back);
//! - [`redis::RedisStore`]: a bounded write-behind queue drained by a thread of its own that
//!   pipelines the changes to Redis (or Valkey), reconnecting as needed. A full queue refuses
//!   the change and counts it; the producer keeps the call marked and offers it again later.
//!
//! Loading (on start) is the only blocking operation, and it happens before any server runs.

pub mod embedded;
pub mod locations;
pub mod presence;
pub mod record;
pub mod redis;
pub mod share;
pub mod standby;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// One write to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The call's [`record::CallRecord`] (JSON) under its call key.
    PutCall { call_id: String, json: String },
    /// The call's [`record::StatsRecord`] (JSON) under its call key.
    PutStats { call_id: String, json: String },
    /// The call is gone.
    DeleteCall { call_id: String },
    /// The bindings of an address of record ([`record::RegistrationRecord`], JSON), kept until
    /// `expires_unix_ns` (the last binding's expiry).
    PutRegistration {
        aor: String,
        json: String,
        expires_unix_ns: u64,
    },
    /// The address of record has no binding left.
    DeleteRegistration { aor: String },
    /// A presence or stored-message record (`sip::presence::PersistRecord`), of no use after
    /// `expires_unix_ns`.
    PutPresence {
        key: String,
        json: String,
        expires_unix_ns: u64,
    },
    /// The presence entry is gone.
    DeletePresence { key: String },
}

/// Takes changes without waiting (called with the session manager's lock held).
pub trait ChangeSink: Send + Sync {
    /// Queues a change; `false` when the queue is full (the change was not taken and has been
    /// counted).
    fn offer(&self, change: Change) -> bool;
    /// Changes refused because the queue was full, since start.
    fn refused(&self) -> u64;
}

/// Counters of a write-behind queue and the thread that drains it (Redis, the embedded
/// database), for logs, `statistics` and a clean stop.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Changes taken into the queue.
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub written: AtomicU64,
    pub failures: AtomicU64,
}

impl WriterCounters {
    /// Counts an offer: `taken` or refused (the first refusal and then every power of two
    /// are logged as `what`). Returns `taken`.
    pub fn offered(&self, taken: bool, what: &'static str) -> bool {
        if taken {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = self.refused.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(refused = n + 1, "{what}");
            }
        }
        taken
    }

    /// Waits (at most `limit`) until every change taken so far is written; false if some
    /// are not. For a clean stop, after the last changes were offered.
    pub fn wait_written(&self, limit: Duration) -> bool {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let deadline = crate::time::now_ns().saturating_add(limit_ns);
        loop {
            if self.written.load(Ordering::Relaxed) >= self.accepted.load(Ordering::Relaxed) {
                return true;
            }
            if crate::time::now_ns() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A writer thread and the sending end of its queue; dropping it closes the queue and waits
/// for the thread to write what it holds (each writer bounds its own last tries).
#[derive(Debug)]
pub struct Writer<T> {
    tx: Option<T>,
    thread: Option<JoinHandle<()>>,
    counters: std::sync::Arc<WriterCounters>,
}

impl<T> Writer<T> {
    pub fn new(tx: T, thread: JoinHandle<()>, counters: std::sync::Arc<WriterCounters>) -> Self {
        Writer {
            tx: Some(tx),
            thread: Some(thread),
            counters,
        }
    }

    /// The queue (`None` once closed).
    pub fn tx(&self) -> Option<&T> {
        self.tx.as_ref()
    }

    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// The counters, to share with another thread.
    pub fn counters_arc(&self) -> std::sync::Arc<WriterCounters> {
        self.counters.clone()
    }

    /// Queues a change with `send` (a non-blocking send: false when the queue is full),
    /// counting the outcome; a refusal is logged as `what`.
    pub fn offer(&self, what: &'static str, send: impl FnOnce(&T) -> bool) -> bool {
        match &self.tx {
            Some(tx) => self.counters.offered(send(tx), what),
            None => false,
        }
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a store held at start: records as stored (JSON), parsed by their owners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// (call id, `record` field, `stats` field).
    pub calls: Vec<(String, String, Option<String>)>,
    /// (address of record, record).
    pub registrations: Vec<(String, String)>,
    /// (presence key, record).
    pub presence: Vec<(String, String)>,
}

/// The embedded store: the latest record of every key, in memory, with an optional bound on
/// queued changes (for tests of the full-queue path: `capacity` changes are taken, then
/// refused until [`MemoryStore::take_pending`] empties it).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
    refused: AtomicU64,
    capacity: Option<usize>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    calls: HashMap<String, (Option<String>, Option<String>)>,
    registrations: HashMap<String, String>,
    presence: HashMap<String, String>,
    pending: usize,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store that takes at most `capacity` changes until they are taken out.
    pub fn bounded(capacity: usize) -> MemoryStore {
        MemoryStore {
            capacity: Some(capacity),
            ..MemoryStore::default()
        }
    }

    /// Marks the queued changes written (frees the bound).
    pub fn take_pending(&self) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut g.pending)
    }

    /// Everything held, as a restart would load it.
    pub fn load(&self) -> Loaded {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Loaded::default();
        for (id, (rec, stats)) in &g.calls {
            if let Some(rec) = rec {
                out.calls.push((id.clone(), rec.clone(), stats.clone()));
            }
        }
        for (aor, rec) in &g.registrations {
            out.registrations.push((aor.clone(), rec.clone()));
        }
        for (key, rec) in &g.presence {
            out.presence.push((key.clone(), rec.clone()));
        }
        out.calls.sort();
        out.registrations.sort();
        out.presence.sort();
        out
    }
}

impl ChangeSink for MemoryStore {
    fn offer(&self, change: Change) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.capacity.is_some_and(|c| g.pending >= c) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        g.pending += 1;
        match change {
            Change::PutCall { call_id, json } => g.calls.entry(call_id).or_default().0 = Some(json),
            Change::PutStats { call_id, json } => {
                g.calls.entry(call_id).or_default().1 = Some(json)
            }
            Change::DeleteCall { call_id } => {
                g.calls.remove(&call_id);
            }
            Change::PutRegistration { aor, json, .. } => {
                g.registrations.insert(aor, json);
            }
            Change::DeleteRegistration { aor } => {
                g.registrations.remove(&aor);
            }
            Change::PutPresence { key, json, .. } => {
                g.presence.insert(key, json);
            }
            Change::DeletePresence { key } => {
                g.presence.remove(&key);
            }
        }
        true
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
