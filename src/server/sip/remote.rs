//! What other SIP fronts sharing the store changed (`store::share`), applied here: their
//! registrations to the location service, then what those mean for presence (the
//! registration-derived state our watchers get, stored messages for a user who registered
//! there), and their publications to the presence services. The subscriber thread calls in
//! ([`SipShared::apply_remote`]); the proxy is changed under its lock, and what it sends
//! (NOTIFYs, stored MESSAGEs) goes to the outbox the timer task sends from.

use std::sync::atomic::Ordering;

use super::{lock, SipShared};
use crate::session::backend::MediaBackend;
use crate::sip::presence::{shared_record, RemoteRecord};
use crate::sip::transport::Transmit;
use crate::store::presence::split_scoped;
use crate::store::share::RemoteChange;
use crate::time;

/// Most transmits waiting in the outbox.
const OUTBOX_CAP: usize = 100_000;

/// The (front, record key) of another front's shared presence record (see
/// `sip::presence::shared_record`); `None` for this front's own (`own`) and other records.
fn other_front<'k>(key: &'k str, own: &str) -> Option<(&'k str, &'k str)> {
    let (front, rest) = split_scoped(key)?;
    shared_record(rest)?;
    (front != own).then_some((front, rest))
}

impl<B: MediaBackend + 'static> SipShared<B> {
    /// Applies a change made at another front sharing the store (see `store::share`).
    pub fn apply_remote(&self, change: RemoteChange) {
        let now = time::now_ns();
        // This front's name and clock for presence records (none: presence is not served
        // or not shared).
        let presence = self
            .cfg
            .presence_store
            .as_ref()
            .and_then(|p| Some((p.front.clone()?, at_zero_ns(p.unix_at_zero))));
        let reconnect = matches!(change, RemoteChange::Snapshot(_))
            && self.resubscribed.fetch_add(1, Ordering::Relaxed) > 0;
        let out = self.with_proxy("remote change", |core| {
            let (proxy, media) = (&mut core.proxy, &mut core.media);
            match change {
                RemoteChange::Changed { aor, record } => {
                    let store = &mut proxy.registrar_mut().store;
                    if let Err(e) = store.apply_remote(&aor, record.as_deref(), now) {
                        tracing::warn!(aor, error = %e, "shared locations: change not applied");
                        return Vec::new();
                    }
                    proxy.remote_bindings(Some(&[aor]), now, media)
                }
                RemoteChange::Reading => {
                    proxy.registrar_mut().store.snapshot_reading();
                    Vec::new()
                }
                RemoteChange::Snapshot(all) => {
                    let c = proxy.registrar_mut().store.reload(&all, now);
                    tracing::info!(
                        applied = c.applied,
                        unreadable = c.bad,
                        rewritten = c.rewritten,
                        "shared locations: reloaded"
                    );
                    if reconnect {
                        // The store may have lost what this front wrote (a Redis
                        // restarted empty): every presence record is written again.
                        proxy.presence_persist_all();
                    }
                    proxy.remote_bindings(None, now, media)
                }
                RemoteChange::Presence { key, record } => {
                    let Some((own, zero)) = &presence else {
                        return Vec::new();
                    };
                    let Some((front, rec)) = other_front(&key, own) else {
                        return Vec::new();
                    };
                    let r = RemoteRecord {
                        front,
                        key: rec,
                        json: record.as_deref(),
                    };
                    proxy
                        .remote_presence(r, now, *zero, media)
                        .unwrap_or_else(|e| {
                            tracing::warn!(key, error = %e, "shared presence: change not applied");
                            Vec::new()
                        })
                }
                RemoteChange::PresenceSnapshot(all) => {
                    let Some((own, zero)) = &presence else {
                        return Vec::new();
                    };
                    let records: Vec<(String, String, String)> = all
                        .iter()
                        .filter_map(|(k, v)| {
                            let (f, rec) = other_front(k, own)?;
                            Some((f.to_owned(), rec.to_owned(), v.clone()))
                        })
                        .collect();
                    let (out, bad) = proxy.reload_remote_presence(&records, now, *zero, media);
                    tracing::info!(
                        records = records.len(),
                        unreadable = bad,
                        "shared presence: reloaded"
                    );
                    out
                }
            }
        });
        self.post(out);
    }

    /// Queues transmits made outside the server's tasks for the timer task to send (at
    /// most [`OUTBOX_CAP`] waiting: beyond, they are dropped, and the requests among them
    /// end as timeouts).
    fn post(&self, out: Vec<Transmit>) {
        if out.is_empty() {
            return;
        }
        {
            let mut q = lock(&self.outbox);
            let room = OUTBOX_CAP.saturating_sub(q.len());
            if out.len() > room {
                tracing::warn!(
                    dropped = out.len() - room,
                    "shared presence: outbox full; messages dropped"
                );
            }
            q.extend(out.into_iter().take(room));
        }
        self.wake.notify_one();
    }

    /// What was queued with [`SipShared::post`].
    pub(super) fn take_outbox(&self) -> Vec<Transmit> {
        std::mem::take(&mut *lock(&self.outbox))
    }
}

pub(super) fn at_zero_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_fronts_shared_records_are_applied() {
        let own = "sip:192.0.2.1:5060";
        assert_eq!(
            other_front("front/sip:192.0.2.2:5060/presentity:sip:bob@x", own),
            Some(("sip:192.0.2.2:5060", "presentity:sip:bob@x"))
        );
        assert_eq!(
            other_front("front/sip:192.0.2.2:5060/watchers:sip:bob@x", own),
            Some(("sip:192.0.2.2:5060", "watchers:sip:bob@x"))
        );
        assert_eq!(
            other_front("front/sip:192.0.2.1:5060/presentity:sip:bob@x", own),
            None
        );
        assert_eq!(
            other_front("front/sip:192.0.2.2:5060/subscription:1", own),
            None
        );
        assert_eq!(other_front("presentity:sip:bob@x", own), None);
    }
}
