//! What of presence and instant messaging survives a restart, sans-IO: the services record
//! which entries changed (a presentity's publications, a subscription's dialog, a user's
//! stored messages), and [`Services::take_persist`] turns them into [`PersistRecord`]s: a
//! key and either the entry's current record (JSON, with the Unix time it is worthless
//! after) or "forget it". The server writes them to the state store behind the SIP loop;
//! several changes of one entry between two takes are one write. At start
//! [`Services::restore`] loads the records back, dropping what expired meanwhile.
//!
//! Times inside the services are monotonic (this process's clock); records carry Unix
//! times, converted with the Unix time at the monotonic zero the caller passes.
//!
//! What is kept: publications with their entity tags, bodies and expiry (a refresh after a
//! restart still matches its `SIP-If-Match`); subscriptions with their dialog (Call-ID,
//! tags, CSeqs, route set, remote target, where the watcher is reached) so the next change
//! is NOTIFYed in the same dialog; stored messages with their original From, To, Date and
//! body, including those being delivered that no device has taken yet (delivery is at
//! least once). What is not: a NOTIFY or MESSAGE in flight at the crash (its retransmission
//! state), registration-derived state (the registrar's own store has the bindings).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::im::{MsgId, StoredMessage};
use super::publish::Publication;
use super::remote::RemoteWatcher;
use super::subscribe::{Package, SubState, Subscription};
use super::{Due, PersistKey, Reach, Services, SubId};
use crate::sip::transport::Transport;

/// The version written in every record; others are not loaded.
pub const RECORD_VERSION: u32 = 1;

const PRESENTITY: &str = "presentity:";
const SUBSCRIPTION: &str = "subscription:";
const MESSAGES: &str = "messages:";
const WATCHERS: &str = "watchers:";

/// A record other SIP fronts read (`remote.rs`), by its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedRecord<'k> {
    /// `presentity:AOR`: the publications a front holds.
    Presentity(&'k str),
    /// `watchers:AOR`: the watchers subscribed at a front (written only when sharing).
    Watchers(&'k str),
}

/// What a record's key names, if it is one the other fronts read.
pub fn shared_record(key: &str) -> Option<SharedRecord<'_>> {
    if let Some(aor) = key.strip_prefix(PRESENTITY) {
        return Some(SharedRecord::Presentity(aor));
    }
    key.strip_prefix(WATCHERS).map(SharedRecord::Watchers)
}

#[derive(Serialize, Deserialize)]
struct WatchersRecord {
    v: u32,
    aor: String,
    watchers: Vec<WatcherRecord>,
}

#[derive(Serialize, Deserialize)]
struct WatcherRecord {
    id: u64,
    watcher: String,
    pending: bool,
    expires_unix_ns: u64,
}

/// The watchers of a watchers record (another front's) still live at `now`, in this
/// process's clock; `None` when it cannot be read or is not `aor`'s.
pub(super) fn read_watchers(
    aor: &str,
    json: &str,
    now: u64,
    zero: u64,
) -> Option<Vec<RemoteWatcher>> {
    let mut c = RestoreCounts::default();
    let rec = read(json, &mut c, |r: &WatchersRecord| {
        r.v == RECORD_VERSION && r.aor == aor
    })?;
    let t = Clock { now, zero };
    Some(
        rec.watchers
            .into_iter()
            .filter_map(|w| {
                live(w.expires_unix_ns, t, &mut c).map(|at| RemoteWatcher {
                    id: w.id,
                    watcher: w.watcher,
                    pending: w.pending,
                    expires_at: at,
                })
            })
            .collect(),
    )
}

/// The publications of a presentity record (another front's) still live at `now`, in this
/// process's clock (`zero`: the Unix time at its monotonic zero); `None` when the record
/// cannot be read or is not `aor`'s.
pub(super) fn read_publications(
    aor: &str,
    json: &str,
    now: u64,
    zero: u64,
) -> Option<Vec<Publication>> {
    let mut c = RestoreCounts::default();
    let rec = read(json, &mut c, |r: &PresentityRecord| {
        r.v == RECORD_VERSION && r.aor == aor
    })?;
    let t = Clock { now, zero };
    Some(
        rec.publications
            .into_iter()
            .filter_map(|p| {
                live(p.expires_unix_ns, t, &mut c).map(|at| Publication {
                    etag: p.etag,
                    body: p.body.into_bytes(),
                    expires_at: at,
                })
            })
            .collect(),
    )
}

/// One write for the state store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistRecord {
    /// `presentity:AOR`, `subscription:ID` or `messages:AOR`.
    pub key: String,
    /// The record (JSON) and the Unix time (ns) after which it is of no use; `None`: the
    /// entry is gone, delete the key.
    pub value: Option<(String, u64)>,
}

/// What [`Services::restore`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreCounts {
    pub publications: usize,
    pub subscriptions: usize,
    pub messages: usize,
    /// Entries past their expiry, dropped.
    pub expired: usize,
    /// Records that could not be read (or beyond a cap), dropped.
    pub dropped: usize,
}

/// A body: as text when it is UTF-8 (PIDF, text/plain), else as its bytes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BodyRecord {
    Text(String),
    Bytes(Vec<u8>),
}

impl BodyRecord {
    fn of(b: &[u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(t) => BodyRecord::Text(t.to_owned()),
            Err(_) => BodyRecord::Bytes(b.to_vec()),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            BodyRecord::Text(t) => t.into_bytes(),
            BodyRecord::Bytes(b) => b,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PresentityRecord {
    v: u32,
    aor: String,
    publications: Vec<PublicationRecord>,
}

#[derive(Serialize, Deserialize)]
struct PublicationRecord {
    etag: String,
    body: BodyRecord,
    expires_unix_ns: u64,
}

#[derive(Serialize, Deserialize)]
struct SubscriptionRecord {
    v: u32,
    id: u64,
    package: String,
    event_id: Option<String>,
    presentity: String,
    watcher: String,
    pending: bool,
    /// Call-ID, the watcher's tag and ours: how in-dialog requests are matched.
    dialog_key: String,
    call_id: String,
    local_uri: String,
    local_tag: String,
    remote: String,
    remote_target: String,
    route_set: Vec<String>,
    to: SocketAddr,
    transport: String,
    local_cseq: u32,
    remote_cseq: u32,
    expires_unix_ns: u64,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct MessagesRecord {
    v: u32,
    aor: String,
    messages: Vec<MessageRecord>,
}

#[derive(Serialize, Deserialize)]
struct MessageRecord {
    from: String,
    to: String,
    content_type: Option<String>,
    date: Option<String>,
    body: BodyRecord,
    expires_unix_ns: u64,
    attempts: u8,
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

fn transport_of(s: &str) -> Option<Transport> {
    match s {
        "udp" => Some(Transport::Udp),
        "tcp" => Some(Transport::Tcp),
        "tls" => Some(Transport::Tls),
        _ => None,
    }
}

/// The clocks of a restore: monotonic now, and the Unix time (ns) at the monotonic zero.
#[derive(Clone, Copy)]
struct Clock {
    now: u64,
    zero: u64,
}

/// A record's expiry (Unix ns) as this process's monotonic time, if it is still ahead of
/// now; an expired one is counted.
fn live(unix_ns: u64, t: Clock, c: &mut RestoreCounts) -> Option<u64> {
    let at = unix_ns.checked_sub(t.zero).filter(|m| *m > t.now);
    if at.is_none() {
        c.expired += 1;
    }
    at
}

/// A record of this version whose `fits` holds; anything else is counted as dropped.
fn read<T: DeserializeOwned>(
    json: &str,
    c: &mut RestoreCounts,
    fits: impl Fn(&T) -> bool,
) -> Option<T> {
    let rec = serde_json::from_str::<T>(json).ok().filter(|r| fits(r));
    if rec.is_none() {
        c.dropped += 1;
    }
    rec
}

impl Services {
    /// Starts recording changes for [`Services::take_persist`] (off by default: without a
    /// store nobody takes them).
    pub fn enable_persistence(&mut self) {
        self.dirty.get_or_insert_with(BTreeSet::new);
        self.store.track();
    }

    /// Marks an entry changed (when persistence is on).
    pub(super) fn touch(&mut self, key: PersistKey) {
        if let Some(d) = self.dirty.as_mut() {
            d.insert(key);
        }
    }

    /// The writes that bring a store up to date: one per entry changed since the last call.
    pub fn take_persist(&mut self, unix_at_zero_ns: u64) -> Vec<PersistRecord> {
        let keys = self.dirty.as_mut().map(std::mem::take).unwrap_or_default();
        let users = self.store.take_dirty();
        let mut out = Vec::with_capacity(keys.len() + users.len());
        for k in keys {
            out.push(match k {
                PersistKey::Presentity(aor) => self.presentity_record(&aor, unix_at_zero_ns),
                PersistKey::Subscription(id) => self.subscription_record(id, unix_at_zero_ns),
                PersistKey::Watchers(aor) => self.watchers_record(&aor, unix_at_zero_ns),
            });
        }
        for aor in users {
            out.push(self.messages_record(&aor, unix_at_zero_ns));
        }
        out
    }

    /// Marks every entry changed: all of them are written at the next take (the store
    /// lost them: a Redis restarted empty).
    pub fn persist_all(&mut self) {
        if self.dirty.is_none() {
            return;
        }
        let aors: Vec<String> = self
            .presentities
            .iter()
            .filter(|(_, p)| !p.publications.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for aor in aors {
            self.touch(PersistKey::Presentity(aor));
        }
        let ids: Vec<SubId> = self.subs.keys().copied().collect();
        for id in ids {
            self.touch(PersistKey::Subscription(id));
        }
        let watched: Vec<String> = self
            .presentities
            .iter()
            .filter(|(_, p)| !p.watchers.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for aor in watched {
            self.watchers_changed(&aor);
        }
        self.store.touch_all();
    }

    /// A record the store refused (its queue was full): written again at the next take.
    pub fn persist_again(&mut self, key: &str) {
        if let Some(aor) = key.strip_prefix(PRESENTITY) {
            self.touch(PersistKey::Presentity(aor.to_owned()));
        } else if let Some(id) = key.strip_prefix(SUBSCRIPTION) {
            if let Ok(n) = id.parse() {
                self.touch(PersistKey::Subscription(SubId(n)));
            }
        } else if let Some(aor) = key.strip_prefix(MESSAGES) {
            self.store.touch_user(aor);
        } else if let Some(aor) = key.strip_prefix(WATCHERS) {
            self.touch(PersistKey::Watchers(aor.to_owned()));
        }
    }

    /// Shares watcher lists with other fronts: every change of one is written too.
    pub fn enable_sharing(&mut self) {
        self.sharing = true;
        let watched: Vec<String> = self.presentities.keys().cloned().collect();
        for aor in watched {
            self.watchers_changed(&aor);
        }
    }

    /// The watchers of `aor` changed (when sharing: its watchers record is written).
    pub(super) fn watchers_changed(&mut self, aor: &str) {
        if self.sharing {
            self.touch(PersistKey::Watchers(aor.to_owned()));
        }
    }

    fn watchers_record(&self, aor: &str, zero: u64) -> PersistRecord {
        let key = format!("{WATCHERS}{aor}");
        let watchers: Vec<WatcherRecord> = self
            .presentities
            .get(aor)
            .map(|p| {
                p.watchers
                    .iter()
                    .filter_map(|id| {
                        let s = self.subs.get(id).filter(|s| s.ending.is_none())?;
                        Some(WatcherRecord {
                            id: id.0,
                            watcher: s.watcher.clone(),
                            pending: s.state == SubState::Pending,
                            expires_unix_ns: zero.saturating_add(s.expires_at),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(until) = watchers.iter().map(|w| w.expires_unix_ns).max() else {
            return PersistRecord { key, value: None };
        };
        let rec = WatchersRecord {
            v: RECORD_VERSION,
            aor: aor.to_owned(),
            watchers,
        };
        PersistRecord {
            key,
            value: serde_json::to_string(&rec).ok().map(|j| (j, until)),
        }
    }

    fn presentity_record(&self, aor: &str, zero: u64) -> PersistRecord {
        let key = format!("{PRESENTITY}{aor}");
        let publications: Vec<PublicationRecord> = self
            .presentities
            .get(aor)
            .map(|p| {
                p.publications
                    .iter()
                    .map(|x| PublicationRecord {
                        etag: x.etag.clone(),
                        body: BodyRecord::of(&x.body),
                        expires_unix_ns: zero.saturating_add(x.expires_at),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(until) = publications.iter().map(|x| x.expires_unix_ns).max() else {
            return PersistRecord { key, value: None };
        };
        let rec = PresentityRecord {
            v: RECORD_VERSION,
            aor: aor.to_owned(),
            publications,
        };
        PersistRecord {
            key,
            value: serde_json::to_string(&rec).ok().map(|j| (j, until)),
        }
    }

    fn subscription_record(&self, id: SubId, zero: u64) -> PersistRecord {
        let key = format!("{SUBSCRIPTION}{}", id.0);
        // A fetch or an ending subscription is gone after its last NOTIFY: nothing to resume.
        let Some(s) = self.subs.get(&id).filter(|s| s.ending.is_none()) else {
            return PersistRecord { key, value: None };
        };
        let until = zero.saturating_add(s.expires_at);
        let rec = SubscriptionRecord {
            v: RECORD_VERSION,
            id: id.0,
            package: s.package.name().to_owned(),
            event_id: s.event_id.clone(),
            presentity: s.presentity.clone(),
            watcher: s.watcher.clone(),
            pending: s.state == SubState::Pending,
            dialog_key: s.dialog_key.clone(),
            call_id: s.call_id.clone(),
            local_uri: s.local_uri.clone(),
            local_tag: s.local_tag.clone(),
            remote: s.remote.clone(),
            remote_target: s.remote_target.clone(),
            route_set: s.route_set.clone(),
            to: s.reach.to,
            transport: transport_name(s.reach.transport).to_owned(),
            local_cseq: s.local_cseq,
            remote_cseq: s.remote_cseq,
            expires_unix_ns: until,
            version: s.version,
        };
        PersistRecord {
            key,
            value: serde_json::to_string(&rec).ok().map(|j| (j, until)),
        }
    }

    fn messages_record(&self, aor: &str, zero: u64) -> PersistRecord {
        let key = format!("{MESSAGES}{aor}");
        let messages: Vec<MessageRecord> = self
            .store
            .kept_for(aor)
            .into_iter()
            .map(|m| MessageRecord {
                from: m.from,
                to: m.to,
                content_type: m.content_type,
                date: m.date,
                body: BodyRecord::of(&m.body),
                expires_unix_ns: zero.saturating_add(m.expires_at),
                attempts: m.attempts,
            })
            .collect();
        let Some(until) = messages.iter().map(|m| m.expires_unix_ns).max() else {
            return PersistRecord { key, value: None };
        };
        let rec = MessagesRecord {
            v: RECORD_VERSION,
            aor: aor.to_owned(),
            messages,
        };
        PersistRecord {
            key,
            value: serde_json::to_string(&rec).ok().map(|j| (j, until)),
        }
    }

    /// Loads stored records (key, JSON) at start: publications first, then subscriptions
    /// (watching them), then messages. Entries expired at `now` are dropped, and so are
    /// records that cannot be read or would exceed a cap; `registered` says whether an AoR
    /// has a binding (its registration-derived state). Call before any request.
    pub fn restore(
        &mut self,
        records: &[(String, String)],
        now: u64,
        unix_at_zero_ns: u64,
        registered: &dyn Fn(&str) -> bool,
    ) -> RestoreCounts {
        let mut c = RestoreCounts::default();
        let t = Clock {
            now,
            zero: unix_at_zero_ns,
        };
        let of = |prefix: &'static str| {
            records
                .iter()
                .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
        };
        for (aor, json) in of(PRESENTITY) {
            self.restore_presentity(aor, json, t, &mut c);
        }
        for (_, json) in of(SUBSCRIPTION) {
            self.restore_subscription(json, t, &mut c);
        }
        for (aor, json) in of(MESSAGES) {
            self.restore_messages(aor, json, t, &mut c);
        }
        let aors: Vec<String> = self.presentities.keys().cloned().collect();
        for aor in aors {
            if registered(&aor) {
                self.presentity_mut(&aor, now).registered = true;
            }
        }
        c
    }

    fn restore_presentity(&mut self, aor: &str, json: &str, t: Clock, c: &mut RestoreCounts) {
        let fits = |r: &PresentityRecord| r.v == RECORD_VERSION && r.aor == aor;
        let Some(rec) = read(json, c, fits) else {
            return;
        };
        for p in rec.publications {
            let Some(at) = live(p.expires_unix_ns, t, c) else {
                continue;
            };
            let per_aor = self
                .presentities
                .get(aor)
                .map_or(0, |x| x.publications.len());
            if self.publications >= self.cfg.max_publications
                || per_aor >= self.cfg.max_publications_per_aor
                || self.etags.contains_key(&p.etag)
            {
                c.dropped += 1;
                continue;
            }
            self.presentity_mut(aor, t.now)
                .publications
                .push(Publication {
                    etag: p.etag.clone(),
                    body: p.body.into_bytes(),
                    expires_at: at,
                });
            self.publications += 1;
            self.etags.insert(p.etag.clone(), aor.to_owned());
            self.arm(at, Due::PubExpires(p.etag));
            c.publications += 1;
        }
    }

    fn restore_subscription(&mut self, json: &str, t: Clock, c: &mut RestoreCounts) {
        let fits = |r: &SubscriptionRecord| {
            r.v == RECORD_VERSION
                && Package::parse(&r.package).is_some()
                && transport_of(&r.transport).is_some()
                && !self.subs.contains_key(&SubId(r.id))
        };
        let Some(r) = read(json, c, fits) else {
            return;
        };
        let (Some(package), Some(transport)) =
            (Package::parse(&r.package), transport_of(&r.transport))
        else {
            return;
        };
        let id = SubId(r.id);
        let Some(expires_at) = live(r.expires_unix_ns, t, c) else {
            return;
        };
        let watchers = self
            .presentities
            .get(&r.presentity)
            .map_or(0, |p| p.watchers.len() + p.winfo.len());
        if self.subs.len() >= self.cfg.max_subscriptions
            || watchers >= self.cfg.max_watchers_per_presentity
        {
            c.dropped += 1;
            return;
        }
        let dialog_key = r.dialog_key;
        if self.dialogs.contains_key(&dialog_key) {
            c.dropped += 1;
            return;
        }
        let sub = Subscription {
            package,
            event_id: r.event_id,
            presentity: r.presentity.clone(),
            watcher: r.watcher,
            state: if r.pending {
                SubState::Pending
            } else {
                SubState::Active
            },
            dialog_key: dialog_key.clone(),
            call_id: r.call_id,
            local_uri: r.local_uri,
            local_tag: r.local_tag,
            remote: r.remote,
            remote_target: r.remote_target,
            route_set: r.route_set,
            reach: Reach {
                to: r.to,
                transport,
            },
            local_cseq: r.local_cseq,
            remote_cseq: r.remote_cseq,
            expires_at,
            in_flight: None,
            dirty: false,
            ending: None,
            final_sent: false,
            version: r.version,
        };
        let p = self.presentity_mut(&r.presentity, t.now);
        match package {
            Package::Presence => p.watchers.push(id),
            Package::Winfo => p.winfo.push(id),
        }
        self.dialogs.insert(dialog_key, id);
        self.arm(expires_at, Due::SubExpires(id));
        self.subs.insert(id, sub);
        // Ids and minted tokens continue above every restored id.
        self.next_id = self.next_id.max(r.id.saturating_add(1));
        c.subscriptions += 1;
    }

    fn restore_messages(&mut self, aor: &str, json: &str, t: Clock, c: &mut RestoreCounts) {
        let fits = |r: &MessagesRecord| r.v == RECORD_VERSION && r.aor == aor;
        let Some(rec) = read(json, c, fits) else {
            return;
        };
        for m in rec.messages {
            let Some(at) = live(m.expires_unix_ns, t, c) else {
                continue;
            };
            let msg = StoredMessage {
                id: MsgId(0),
                aor: aor.to_owned(),
                from: m.from,
                to: m.to,
                content_type: m.content_type,
                date: m.date,
                body: m.body.into_bytes(),
                expires_at: at,
                attempts: m.attempts,
            };
            if self.store.restore(msg) {
                self.arm(at, Due::MessagesExpire(aor.to_owned()));
                c.messages += 1;
            } else {
                c.dropped += 1;
            }
        }
    }
}
