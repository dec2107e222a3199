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
use crate::sip::presence::PersistRecord;
use crate::sip::proxy::Proxy;
use crate::store::presence::PresencePersistence;
use crate::store::Change;
use crate::time;

/// How often changes are taken (what a `kill -9` can lose, plus the commit).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

fn at_zero_ns(p: &PresencePersistence) -> u64 {
    super::remote::at_zero_ns(p.unix_at_zero)
}

/// Loads what the store held into the proxy's presence services: this front's own records
/// when the store is shared (`PresencePersistence::own_records`). Records written before
/// keys were scoped by front are taken, written again under this front's name and deleted.
pub(super) fn restore(proxy: &mut Proxy<StoredLocations>, p: &PresencePersistence) {
    let (own, legacy) = p.own_records();
    let restored = proxy.restore_presence(&own, time::now_ns(), at_zero_ns(p));
    if p.front.is_some() {
        proxy.share_presence();
    }
    if let Some(c) = restored {
        tracing::info!(
            publications = c.publications,
            subscriptions = c.subscriptions,
            messages = c.messages,
            expired = c.expired,
            dropped = c.dropped,
            "presence state restored"
        );
    }
    if legacy.is_empty() {
        return;
    }
    proxy.presence_persist_all();
    let refused = offer(proxy.take_presence_records(at_zero_ns(p)), p);
    for k in &refused {
        proxy.presence_persist_again(k);
    }
    for key in legacy {
        let _ = p.sink.offer(Change::DeletePresence { key });
    }
}

/// Offers records to the store under this front's keys; the (unscoped) keys refused.
fn offer(records: Vec<PersistRecord>, p: &PresencePersistence) -> Vec<String> {
    let mut refused = Vec::new();
    for r in records {
        let key = p.store_key(&r.key);
        let change = match r.value {
            Some((json, expires_unix_ns)) => Change::PutPresence {
                key,
                json,
                expires_unix_ns,
            },
            None => Change::DeletePresence { key },
        };
        if !p.sink.offer(change) {
            refused.push(r.key);
        }
    }
    refused
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
    let refused = offer(records, p);
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
