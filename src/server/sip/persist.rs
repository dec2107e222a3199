//! Presence state to the state store (`store::presence`): restored into the proxy before it
//! serves, then its changes are taken every [`FLUSH_EVERY`] and offered to the store's
//! write-behind queue, off the SIP loop (the proxy's lock is held only to take them). A
//! record the queue refuses is marked to be taken again. At a clean stop the last changes
//! are taken and the embedded backend is waited for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{lock, stopped, SipShared, StoredLocations};
use crate::session::backend::MediaBackend;
use crate::sip::proxy::Proxy;
use crate::store::presence::PresencePersistence;
use crate::store::Change;
use crate::time;

/// How often changes are taken (what a `kill -9` can lose, plus the commit).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

fn at_zero_ns(p: &PresencePersistence) -> u64 {
    u64::try_from(p.unix_at_zero.as_nanos()).unwrap_or(u64::MAX)
}

/// Loads what the store held into the proxy's presence services.
pub(super) fn restore(proxy: &mut Proxy<StoredLocations>, p: &PresencePersistence) {
    if let Some(c) = proxy.restore_presence(&p.loaded, time::now_ns(), at_zero_ns(p)) {
        tracing::info!(
            publications = c.publications,
            subscriptions = c.subscriptions,
            messages = c.messages,
            expired = c.expired,
            dropped = c.dropped,
            "presence state restored"
        );
    }
}

/// Takes the proxy's changed records and offers them to the store; how many were taken.
pub(super) fn flush<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    p: &PresencePersistence,
) -> usize {
    let records = lock(&shared.core)
        .proxy
        .take_presence_records(at_zero_ns(p));
    let n = records.len();
    let mut refused = Vec::new();
    for r in records {
        let change = match r.value {
            Some((json, expires_unix_ns)) => Change::PutPresence {
                key: r.key.clone(),
                json,
                expires_unix_ns,
            },
            None => Change::DeletePresence { key: r.key.clone() },
        };
        if !p.sink.offer(change) {
            refused.push(r.key);
        }
    }
    if !refused.is_empty() {
        let mut core = lock(&shared.core);
        for k in &refused {
            core.proxy.presence_persist_again(k);
        }
    }
    n
}

/// Flushes every [`FLUSH_EVERY`] until `shutdown`.
pub(super) async fn flush_loop<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    p: PresencePersistence,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        flush(&shared, &p);
    }
}

/// The last changes at a clean stop, committed (bounded wait).
pub(super) fn finish<B: MediaBackend + 'static>(shared: &SipShared<B>, p: &PresencePersistence) {
    flush(shared, p);
    if !p.wait_written(Duration::from_secs(2)) {
        tracing::warn!("presence state: the last changes were not all written at stop");
    }
}
