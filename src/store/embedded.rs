//! The embedded store: presence records (publications, subscriptions, stored messages; see
//! `sip::presence::PersistRecord`) in one database file, `DIR/presence.redb`, for a relay
//! without `--redis`.
//!
//! The database is `redb`: pure Rust (no C library to build or package), ACID with
//! copy-on-write B-trees, crash-safe by default (a commit is durable when it returns; a
//! `kill -9` loses at most the changes not yet committed), one file, and maintained (a
//! stable file format with an upgrade path). SQLite would need a C build or a system
//! library for a key-value job; sled has had no stable release for years.
//!
//! Writes are behind, as for Redis: [`EmbeddedStore::offer`] queues a change on a bounded
//! channel and returns at once; a thread of its own takes up to [`BATCH`] changes and
//! commits them in one transaction (one fsync per batch, however many changes a burst
//! brings). A full queue refuses the change and counts it; the producer offers it again. A
//! batch the disk keeps refusing is tried for 2 s, then dropped with an error in the log.
//! Each value is the record's expiry (8 bytes, Unix ns, big-endian) and its JSON; loading
//! skips and deletes expired ones. Only presence changes are kept here: call and
//! registration changes are not (they need `--redis`) and are ignored.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Change, ChangeSink, Writer};

/// The table: presence key → expiry (8 bytes) + record JSON.
const PRESENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("presence");

/// Changes the queue holds before it refuses more.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most changes committed in one transaction.
pub const BATCH: usize = 1024;
/// Pause before retrying a failed commit.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Tries of one batch before giving up on it (a disk that keeps failing: 2 s).
const MAX_TRIES: u32 = 10;

/// Counters of the writer.
pub type EmbeddedCounters = super::WriterCounters;

pub struct EmbeddedStore {
    writer: Writer<SyncSender<Change>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn encode(json: &str, expires_unix_ns: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + json.len());
    v.extend_from_slice(&expires_unix_ns.to_be_bytes());
    v.extend_from_slice(json.as_bytes());
    v
}

/// (expiry, JSON) of a stored value; `None` when it is not one of ours.
fn decode(v: &[u8]) -> Option<(u64, &str)> {
    let (head, json) = v.split_at_checked(8)?;
    let exp = u64::from_be_bytes(head.try_into().ok()?);
    Some((exp, std::str::from_utf8(json).ok()?))
}

impl EmbeddedStore {
    /// Opens (creating it if needed) the database at `path`, loads the records still valid
    /// at `now_unix_ns` (deleting the others), and starts the writer. Blocking: called once
    /// at start, before the servers run.
    pub fn open(
        path: &Path,
        now_unix_ns: u64,
    ) -> anyhow::Result<(EmbeddedStore, Vec<(String, String)>)> {
        let db = Database::create(path)
            .with_context(|| format!("cannot open the state database {}", path.display()))?;
        let loaded = load(&db, now_unix_ns)
            .with_context(|| format!("cannot read the state database {}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let counters = Arc::new(EmbeddedCounters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("rtpanchor-state".into())
            .spawn(move || writer(db, rx, c))?;
        Ok((
            EmbeddedStore {
                writer: Writer::new(tx, thread, counters),
            },
            loaded,
        ))
    }

    pub fn counters(&self) -> &EmbeddedCounters {
        self.writer.counters()
    }

    /// Waits (at most `limit`) until every change taken so far is committed; false if some
    /// are not.
    pub fn wait_written(&self, limit: Duration) -> bool {
        self.writer.counters().wait_written(limit)
    }
}

impl ChangeSink for EmbeddedStore {
    fn offer(&self, change: Change) -> bool {
        if !matches!(
            change,
            Change::PutPresence { .. } | Change::DeletePresence { .. }
        ) {
            // Not kept here (see the module docs): taken and dropped.
            return true;
        }
        self.writer
            .offer("state database queue full; changes wait", |tx| {
                tx.try_send(change).is_ok()
            })
    }

    fn refused(&self) -> u64 {
        self.writer.counters().refused.load(Ordering::Relaxed)
    }
}

fn load(db: &Database, now_unix_ns: u64) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stale = Vec::new();
    {
        let read = db.begin_read()?;
        let table = match read.open_table(PRESENCE) {
            Ok(t) => t,
            // A new database: nothing stored yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for row in table.iter()? {
            let (k, v) = row?;
            match decode(v.value()) {
                Some((exp, json)) if exp > now_unix_ns => {
                    out.push((k.value().to_owned(), json.to_owned()));
                }
                _ => stale.push(k.value().to_owned()),
            }
        }
    }
    if !stale.is_empty() {
        let w = db.begin_write()?;
        {
            let mut table = w.open_table(PRESENCE)?;
            for k in &stale {
                table.remove(k.as_str())?;
            }
        }
        w.commit()?;
        tracing::info!(expired = stale.len(), "expired presence records removed");
    }
    Ok(out)
}

fn commit(db: &Database, batch: &[Change]) -> anyhow::Result<()> {
    let w = db.begin_write()?;
    {
        let mut table = w.open_table(PRESENCE)?;
        for ch in batch {
            match ch {
                Change::PutPresence {
                    key,
                    json,
                    expires_unix_ns,
                } => {
                    table.insert(key.as_str(), encode(json, *expires_unix_ns).as_slice())?;
                }
                Change::DeletePresence { key } => {
                    table.remove(key.as_str())?;
                }
                _ => {}
            }
        }
    }
    w.commit()?;
    Ok(())
}

/// Takes a change, adds what else is queued (up to [`BATCH`]), commits them as one
/// transaction; returns when the queue is closed and empty.
fn writer(db: Database, rx: Receiver<Change>, counters: Arc<EmbeddedCounters>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        batch.extend(rx.try_iter().take(BATCH - 1));
        let mut tries = 0;
        while let Err(e) = commit(&db, &batch) {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tries += 1;
            if tries >= MAX_TRIES {
                tracing::error!(
                    error = format!("{e:#}"),
                    changes = batch.len(),
                    "state database write failed; these changes are lost"
                );
                break;
            }
            tracing::warn!(
                error = format!("{e:#}"),
                "state database write failed; retrying"
            );
            std::thread::sleep(RETRY_DELAY);
        }
        // Written or given up: either way no longer waited for.
        counters
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, json: &str, exp: u64) -> Change {
        Change::PutPresence {
            key: key.into(),
            json: json.into(),
            expires_unix_ns: exp,
        }
    }

    #[test]
    fn records_survive_reopening_and_expired_ones_are_dropped() {
        let dir = std::env::temp_dir().join(format!("rtpanchor-embedded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("presence.redb");
        {
            let (s, loaded) = EmbeddedStore::open(&path, 100).unwrap();
            assert!(loaded.is_empty());
            assert!(s.offer(put("presentity:sip:a@x", "{\"a\":1}", 1_000)));
            assert!(s.offer(put("messages:sip:b@x", "{\"b\":2}", 500)));
            assert!(s.offer(put("subscription:7", "{\"c\":3}", 1_000)));
            assert!(s.offer(Change::DeletePresence {
                key: "subscription:7".into()
            }));
            // Not kept here, but taken.
            assert!(s.offer(Change::DeleteCall {
                call_id: "x".into()
            }));
            assert!(s.wait_written(Duration::from_secs(5)));
            assert_eq!(s.counters().written.load(Ordering::Relaxed), 4);
        }
        {
            let (_s, mut loaded) = EmbeddedStore::open(&path, 600).unwrap();
            loaded.sort();
            assert_eq!(
                loaded,
                vec![("presentity:sip:a@x".to_owned(), "{\"a\":1}".to_owned())]
            );
        }
        // The expired record was deleted at the second opening, not only skipped.
        let (_s, loaded) = EmbeddedStore::open(&path, 0).unwrap();
        assert_eq!(loaded.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_value_that_is_not_ours_is_not_loaded() {
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&encode("{}", 9)), Some((9, "{}")));
    }
}
