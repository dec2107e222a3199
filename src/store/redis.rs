//! The Redis (or Valkey) store: `--redis redis://HOST:PORT/DB`.
//!
//! Writes are write-behind: [`RedisStore::offer`] puts a change on a bounded queue and
//! returns at once; a thread of its own (a single-threaded tokio runtime, so the control
//! plane's runtime never runs Redis I/O) takes up to [`BATCH`] changes at a time and sends
//! them as one pipeline. While Redis is unreachable the batch is retried every
//! [`RETRY_DELAY`] and new changes wait in the queue; once it is full they are refused and
//! counted (the producer offers them again later).
//!
//! Each registration change, and each change of a front's presentity record, is followed,
//! in the same pipeline, by a PUBLISH of it (see [`super::share`]);
//! [`RedisStore::share_locations`] subscribes to the other fronts'.
//!
//! Every call key expires [`CALL_TTL_SECS`] after its last write, so a call whose delete
//! never reached the store (a crash) does not stay there for ever.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::record::{
    CALL_KEY_PREFIX, FIELD_RECORD, FIELD_STATS, PRESENCE_KEY_PREFIX, REG_KEY_PREFIX,
};
use super::{Change, ChangeSink, Loaded, Writer};

/// Changes the queue holds before it refuses more.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most changes sent in one pipeline.
pub const BATCH: usize = 512;
/// Pause before retrying a failed pipeline or connection.
pub const RETRY_DELAY: Duration = Duration::from_millis(200);
/// A call key's lifetime after its last write (a day, as rtpengine keeps its calls).
pub const CALL_TTL_SECS: i64 = 86_400;

/// Counters of the writer, for logs and `statistics`.
pub type RedisCounters = super::WriterCounters;

pub struct RedisStore {
    writer: Writer<mpsc::Sender<Change>>,
    client: redis::Client,
    /// This process in its published notices.
    origin: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

impl RedisStore {
    /// Connects (to fail early on a wrong URL or an unreachable server), loads what the store
    /// holds, and starts the writer. Blocking: called once at start, before the servers run.
    pub fn open(url: &str) -> anyhow::Result<(RedisStore, Loaded)> {
        let client = redis::Client::open(url).with_context(|| format!("bad --redis URL {url}"))?;
        let rt = runtime()?;
        let loaded = rt.block_on(async {
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("cannot reach Redis at {url}"))?;
            load(&mut con).await
        })?;
        drop(rt);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(RedisCounters::default());
        let c = counters.clone();
        let origin = super::share::origin_token();
        let (w_client, w_origin) = (client.clone(), origin.clone());
        let thread = std::thread::Builder::new()
            .name("rtpanchor-store".into())
            .spawn(move || match runtime() {
                Ok(rt) => rt.block_on(writer(w_client, rx, c, w_origin)),
                Err(e) => tracing::error!(error = %e, "store writer not started"),
            })?;
        Ok((
            RedisStore {
                writer: Writer::new(tx, thread, counters),
                client,
                origin,
            },
            loaded,
        ))
    }

    /// Starts applying the registration and presence changes other fronts publish (and a
    /// full reload after every reconnect) with `apply`: see [`super::share`].
    pub fn share_locations(&self, apply: super::share::ApplyRemote) -> std::io::Result<()> {
        super::share::spawn_subscriber(
            self.client.clone(),
            self.origin.clone(),
            self.writer.counters_arc(),
            apply,
        )
    }

    pub fn counters(&self) -> &RedisCounters {
        self.writer.counters()
    }

    /// Waits (at most `limit`) until every change taken so far is written; false if some
    /// are not. For a clean stop, after the last changes were offered.
    pub fn wait_written(&self, limit: Duration) -> bool {
        self.writer.counters().wait_written(limit)
    }

    /// Changes waiting to be written.
    pub fn queued(&self) -> usize {
        self.writer
            .tx()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }
}

impl ChangeSink for RedisStore {
    fn offer(&self, change: Change) -> bool {
        self.writer.offer("store queue full; changes wait", |tx| {
            tx.try_send(change).is_ok()
        })
    }

    fn refused(&self) -> u64 {
        self.writer.counters().refused.load(Ordering::Relaxed)
    }
}

fn call_key(call_id: &str) -> String {
    format!("{CALL_KEY_PREFIX}{call_id}")
}

fn reg_key(aor: &str) -> String {
    format!("{REG_KEY_PREFIX}{aor}")
}

fn add_to_pipe(p: &mut redis::Pipeline, change: &Change, origin: &str) {
    add_write(p, change);
    // After the write, on the same connection: a front that reads the record on the
    // notice finds it.
    if let Some((channel, notice)) = super::share::notice_for(change, origin) {
        p.publish(channel, notice).ignore();
    }
}

fn add_write(p: &mut redis::Pipeline, change: &Change) {
    match change {
        Change::PutCall { call_id, json } => {
            let k = call_key(call_id);
            p.hset(&k, FIELD_RECORD, json).ignore();
            p.expire(&k, CALL_TTL_SECS).ignore();
        }
        Change::PutStats { call_id, json } => {
            let k = call_key(call_id);
            // Only for a call whose record is there: stats after a delete must not bring
            // back a key without a record.
            p.cmd("EVAL")
                .arg(
                    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then \
                     return redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end return 0",
                )
                .arg(1)
                .arg(&k)
                .arg(FIELD_RECORD)
                .arg(FIELD_STATS)
                .arg(json)
                .ignore();
        }
        Change::DeleteCall { call_id } => {
            p.del(call_key(call_id)).ignore();
        }
        Change::PutRegistration {
            aor,
            json,
            expires_unix_ns,
        } => {
            let k = reg_key(aor);
            p.set(&k, json).ignore();
            let ms = (expires_unix_ns / 1_000_000).max(1);
            p.cmd("PEXPIREAT").arg(&k).arg(ms).ignore();
        }
        Change::DeleteRegistration { aor } => {
            p.del(reg_key(aor)).ignore();
        }
        Change::PutPresence {
            key,
            json,
            expires_unix_ns,
        } => {
            // Redis drops the record when the last thing in it expires.
            let k = format!("{PRESENCE_KEY_PREFIX}{key}");
            p.set(&k, json).ignore();
            let ms = (expires_unix_ns / 1_000_000).max(1);
            p.cmd("PEXPIREAT").arg(&k).arg(ms).ignore();
        }
        Change::DeletePresence { key } => {
            p.del(format!("{PRESENCE_KEY_PREFIX}{key}")).ignore();
        }
    }
}

async fn writer(
    client: redis::Client,
    mut rx: mpsc::Receiver<Change>,
    counters: Arc<RedisCounters>,
    origin: String,
) {
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut batch: Vec<Change> = Vec::with_capacity(BATCH);
    let mut closed = false;
    let mut tries_after_close = 0u32;
    loop {
        if batch.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(c) => batch.push(c),
                None => return,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if con.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => con = Some(c),
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "store: Redis unreachable; retrying");
                }
            }
        }
        let mut sent = false;
        if let Some(c) = con.as_mut() {
            let mut p = redis::pipe();
            for ch in &batch {
                add_to_pipe(&mut p, ch, &origin);
            }
            match p.query_async::<()>(c).await {
                Ok(()) => sent = true,
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "store: Redis write failed; retrying");
                    con = None;
                }
            }
        }
        if sent {
            counters
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            continue;
        }
        if rx.is_closed() {
            closed = true;
            tries_after_close += 1;
            if tries_after_close > 3 {
                return;
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

/// Every key matching the glob `pattern`.
async fn scan_keys(
    con: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, mut found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        keys.append(&mut found);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

async fn load(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Loaded> {
    let mut out = Loaded::default();
    for key in scan_keys(con, &format!("{CALL_KEY_PREFIX}*")).await? {
        let mut h: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(con).await?;
        let Some(rec) = h.remove(FIELD_RECORD) else {
            continue;
        };
        let id = key.get(CALL_KEY_PREFIX.len()..).unwrap_or_default();
        out.calls.push((id.to_owned(), rec, h.remove(FIELD_STATS)));
    }
    out.registrations = load_prefix(con, REG_KEY_PREFIX).await?;
    out.presence = load_prefix(con, PRESENCE_KEY_PREFIX).await?;
    Ok(out)
}

/// Every string key under `prefix`: (the key without it, the value).
pub(super) async fn load_prefix(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    load_matching(con, prefix, "*").await
}

/// Every string key under `prefix` whose rest matches the glob `rest`: (the key without
/// the prefix, the value).
pub(super) async fn load_matching(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    rest: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for key in scan_keys(con, &format!("{prefix}{rest}")).await? {
        let v: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await?;
        if let Some(v) = v {
            let k = key.get(prefix.len()..).unwrap_or_default();
            out.push((k.to_owned(), v));
        }
    }
    Ok(out)
}
