//! Presence state held by other SIP fronts sharing the store (`store::share`): their
//! publications of a presentity, composed with ours into the document our watchers get,
//! and their watchers of it, listed with ours in watcher information.
//!
//! Each front holds the publications it took (their entity tags are its own: a refresh or
//! removal goes to the front that answered the initial PUBLISH) and the subscriptions it
//! took. The other fronts' come in as their records ([`Services::apply_remote_record`]:
//! `presentity:AOR`, `watchers:AOR`), replacing what we held of that front for that AoR; a
//! change NOTIFYs our watchers (rate-limited as our own changes are), or our watcher-info
//! subscribers. They are never written back. Each expires here on its own too (the front
//! that holds it may have died), and after a reconnect [`Services::reload_remote`] replaces
//! the lot. Bounded: per front and AoR at most `max_publications_per_aor` publications and
//! `max_watchers_per_presentity` watchers; in total `max_publications` and
//! `max_subscriptions`.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::persist::{read_publications, read_watchers, shared_record, SharedRecord};
use super::publish::{Presentity, Publication};
use super::{Due, OutRequest, Services};

/// Why another front's record was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteError {
    /// The record cannot be read (or is not the AoR's, or not a shared record).
    Unreadable,
    /// The total of what other fronts hold is reached.
    Full,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoteError::Unreadable => "unreadable presence record",
            RemoteError::Full => "too much presence state held for other fronts",
        })
    }
}

/// A watcher subscribed at another front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RemoteWatcher {
    /// Its subscription's id at that front.
    pub(super) id: u64,
    pub(super) watcher: String,
    pub(super) pending: bool,
    pub(super) expires_at: u64,
}

/// Whether two publication lists carry the same documents (expiry aside).
fn same_documents(a: &[Publication], b: &[Publication]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.etag == y.etag && x.body == y.body)
}

/// Whether two watcher lists are the same in watcher information (expiry aside).
fn same_watchers(a: &[RemoteWatcher], b: &[RemoteWatcher]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.watcher == y.watcher && x.pending == y.pending)
}

/// Replaces `front`'s entry in `list` by `new` (none when empty): whether it changed by
/// `same`, and how many it held before.
fn replace<T>(
    list: &mut Vec<(String, Vec<T>)>,
    front: &str,
    new: Vec<T>,
    same: fn(&[T], &[T]) -> bool,
) -> bool {
    let changed = match list.iter_mut().find(|(f, _)| f == front) {
        Some((_, old)) => {
            let changed = !same(old, &new);
            *old = new;
            changed
        }
        None => {
            let changed = !new.is_empty();
            list.push((front.to_owned(), new));
            changed
        }
    };
    list.retain(|(_, v)| !v.is_empty());
    changed
}

/// What is held for other fronts per AoR, by front.
pub(super) type ByFront<T> = Vec<(String, Vec<T>)>;

/// One kind of state held for other fronts: its bounds, where it is kept, how it compares
/// and expires.
struct Kind<T> {
    per_aor: usize,
    total: usize,
    count: fn(&mut Services) -> &mut usize,
    list: fn(&mut Presentity) -> &mut ByFront<T>,
    same: fn(&[T], &[T]) -> bool,
    expiry: fn(&T) -> u64,
}

/// Another front's record, as published.
#[derive(Clone, Copy, Debug)]
pub struct RemoteRecord<'a> {
    /// The front's SIP URI.
    pub front: &'a str,
    /// `presentity:AOR` or `watchers:AOR`.
    pub key: &'a str,
    /// The record; `None`: deleted.
    pub json: Option<&'a str>,
}

impl Services {
    /// Another front's record, with times as Unix ns (`unix_at_zero_ns` at our monotonic
    /// zero). Our watchers of the AoR are NOTIFYed when the composed state changed, our
    /// watcher-info subscribers when its watchers did.
    pub fn apply_remote_record(
        &mut self,
        r: RemoteRecord<'_>,
        now: u64,
        unix_at_zero_ns: u64,
    ) -> Result<Vec<OutRequest>, RemoteError> {
        let unreadable = RemoteError::Unreadable;
        let (front, zero) = (r.front, unix_at_zero_ns);
        let (aor, changed, presence) = match shared_record(r.key).ok_or(unreadable)? {
            SharedRecord::Presentity(aor) => {
                let new = match r.json {
                    None => Vec::new(),
                    Some(j) => read_publications(aor, j, now, zero).ok_or(unreadable)?,
                };
                let kind = Kind {
                    per_aor: self.cfg.max_publications_per_aor,
                    total: self.cfg.max_publications,
                    count: |s| &mut s.remote_publications,
                    list: |p| &mut p.remote,
                    same: same_documents,
                    expiry: |x| x.expires_at,
                };
                (aor, self.replace_remote(kind, front, aor, new, now)?, true)
            }
            SharedRecord::Watchers(aor) => {
                let new = match r.json {
                    None => Vec::new(),
                    Some(j) => read_watchers(aor, j, now, zero).ok_or(unreadable)?,
                };
                let kind = Kind {
                    per_aor: self.cfg.max_watchers_per_presentity,
                    total: self.cfg.max_subscriptions,
                    count: |s| &mut s.remote_watchers,
                    list: |p| &mut p.remote_watchers,
                    same: same_watchers,
                    expiry: |x| x.expires_at,
                };
                (aor, self.replace_remote(kind, front, aor, new, now)?, false)
            }
        };
        if !changed {
            return Ok(Vec::new());
        }
        let out = if presence {
            self.state_changed(aor, now)
        } else {
            self.winfo_changed(aor, now)
        };
        self.drop_presentity_if_idle(aor);
        Ok(out)
    }

    /// Puts `front`'s `new` list of one kind for `aor` in place of the one held (bounded,
    /// its expiry armed): whether it changed. An idle presentity is left for the caller to
    /// drop.
    fn replace_remote<T>(
        &mut self,
        kind: Kind<T>,
        front: &str,
        aor: &str,
        mut new: Vec<T>,
        now: u64,
    ) -> Result<bool, RemoteError> {
        new.truncate(kind.per_aor);
        let held = match self.presentities.get_mut(aor) {
            Some(p) => (kind.list)(p)
                .iter()
                .find(|(f, _)| f == front)
                .map_or(0, |(_, v)| v.len()),
            None => 0,
        };
        let count = *(kind.count)(self);
        if count - held + new.len() > kind.total {
            self.stats.refused_full += 1;
            return Err(RemoteError::Full);
        }
        if held == 0 && new.is_empty() {
            return Ok(false);
        }
        *(kind.count)(self) = count - held + new.len();
        let first_expiry = new.iter().map(kind.expiry).min();
        let p = self.presentity_mut(aor, now);
        let changed = replace((kind.list)(p), front, new, kind.same);
        if let Some(at) = first_expiry {
            self.arm(at, Due::RemoteExpires(aor.to_owned()));
        }
        if !changed {
            self.drop_presentity_if_idle(aor);
        }
        Ok(changed)
    }

    /// Every other front's shared records, (front, key, record), as the store holds them
    /// now: what we held of them is replaced (what the snapshot lacks is gone). Records
    /// that cannot be applied are counted in the second value.
    pub fn reload_remote(
        &mut self,
        records: &[(String, String, String)],
        now: u64,
        unix_at_zero_ns: u64,
    ) -> (Vec<OutRequest>, usize) {
        let fresh: HashSet<(&str, &str)> = records
            .iter()
            .map(|(f, k, _)| (f.as_str(), k.as_str()))
            .collect();
        let mut held: Vec<(String, String)> = Vec::new();
        for (aor, p) in &self.presentities {
            for (f, _) in &p.remote {
                held.push((f.clone(), format!("presentity:{aor}")));
            }
            for (f, _) in &p.remote_watchers {
                held.push((f.clone(), format!("watchers:{aor}")));
            }
        }
        let mut out = Vec::new();
        let mut bad = 0;
        let gone = held
            .iter()
            .filter(|(f, k)| !fresh.contains(&(f.as_str(), k.as_str())))
            .map(|(f, k)| (f.as_str(), k.as_str(), None));
        let now_held = records
            .iter()
            .map(|(f, k, j)| (f.as_str(), k.as_str(), Some(j.as_str())));
        for (front, key, json) in gone.chain(now_held) {
            let r = RemoteRecord { front, key, json };
            match self.apply_remote_record(r, now, unix_at_zero_ns) {
                Ok(o) => out.extend(o),
                Err(_) => bad += 1,
            }
        }
        (out, bad)
    }

    /// Other fronts' publications and watchers of `aor` past their expiry are dropped
    /// (NOTIFYing our watchers, or watcher-info subscribers, of what changed).
    pub(super) fn remote_expired(&mut self, aor: &str, now: u64) -> Vec<OutRequest> {
        let Some(p) = self.presentities.get_mut(aor) else {
            return Vec::new();
        };
        let mut pubs_gone = 0;
        for (_, pubs) in p.remote.iter_mut() {
            let before = pubs.len();
            pubs.retain(|x| x.expires_at > now);
            pubs_gone += before - pubs.len();
        }
        let mut watchers_gone = 0;
        for (_, list) in p.remote_watchers.iter_mut() {
            let before = list.len();
            list.retain(|x| x.expires_at > now);
            watchers_gone += before - list.len();
        }
        p.remote.retain(|(_, v)| !v.is_empty());
        p.remote_watchers.retain(|(_, v)| !v.is_empty());
        let next = p
            .remote
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.expires_at))
            .chain(
                p.remote_watchers
                    .iter()
                    .flat_map(|(_, v)| v.iter().map(|x| x.expires_at)),
            )
            .min();
        if let Some(at) = next {
            self.arm(at, Due::RemoteExpires(aor.to_owned()));
        }
        self.remote_publications -= pubs_gone;
        self.remote_watchers -= watchers_gone;
        let mut out = Vec::new();
        if pubs_gone > 0 {
            out.extend(self.state_changed(aor, now));
        }
        if watchers_gone > 0 {
            out.extend(self.winfo_changed(aor, now));
        }
        self.drop_presentity_if_idle(aor);
        out
    }

    /// Every AoR the services hold something of (watched, published, or with stored
    /// messages): whose registration-derived state and deliveries depend on bindings.
    pub fn known_aors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.presentities.keys().cloned().collect();
        out.extend(self.store.users());
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Device, PresenceConfig, Reach};
    use super::*;
    use crate::sip::transport::Transport;

    const SEC: u64 = 1_000_000_000;
    const ZERO: u64 = 1_000 * SEC;

    fn record(aor: &str, status: &str, etag: &str, expires_unix: u64) -> String {
        let body = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t\"><status><basic>{status}</basic></status></tuple></presence>"
        );
        serde_json::json!({
            "v": 1,
            "aor": aor,
            "publications": [{"etag": etag, "body": body, "expires_unix_ns": expires_unix}]
        })
        .to_string()
    }

    fn services() -> Services {
        let mut cfg = PresenceConfig::new("127.0.0.1:5060".parse().unwrap());
        cfg.notify_interval_ns = 0;
        Services::new(cfg)
    }

    const BOB: &str = "sip:bob@example.com";

    fn key(aor: &str) -> String {
        format!("presentity:{aor}")
    }

    fn rec_of<'a>(key: &'a str, json: Option<&'a str>) -> RemoteRecord<'a> {
        RemoteRecord {
            front: "sip:a",
            key,
            json,
        }
    }

    #[test]
    fn another_fronts_publication_is_composed_expired_and_bounded() {
        let mut s = services();
        let rec = record(BOB, "open", "e1", ZERO + 100 * SEC);
        assert!(s
            .apply_remote_record(rec_of(&key(BOB), Some(&rec)), SEC, ZERO)
            .unwrap()
            .is_empty());
        let doc = String::from_utf8(s.document(BOB)).unwrap();
        assert!(doc.contains("<basic>open</basic>"), "{doc}");
        // The same record again (a refresh): nothing changed.
        assert!(!s.presentities[BOB].remote.is_empty());
        let again = s.apply_remote_record(rec_of(&key(BOB), Some(&rec)), 2 * SEC, ZERO);
        assert_eq!(again, Ok(Vec::new()));
        // It expires here on its own.
        assert_eq!(s.poll_timeout(), Some(100 * SEC));
        s.handle_timeout(100 * SEC);
        assert!(!s.presentities.contains_key(BOB));
        assert_eq!(s.remote_publications, 0);
        assert_eq!(
            s.apply_remote_record(rec_of(&key(BOB), Some("garbage")), SEC, ZERO),
            Err(RemoteError::Unreadable)
        );
        assert_eq!(
            s.apply_remote_record(rec_of(&key("sip:x@y"), Some(&rec)), SEC, ZERO),
            Err(RemoteError::Unreadable)
        );
        s.cfg.max_publications = 0;
        assert_eq!(
            s.apply_remote_record(rec_of(&key(BOB), Some(&rec)), SEC, ZERO),
            Err(RemoteError::Full)
        );
    }

    /// A `SIP-If-Match` naming another front's tag goes to that front (`Handling::ToFront`).
    #[test]
    fn another_fronts_entity_tag_names_its_front() {
        let mut s = services();
        let rec = record(BOB, "open", "e1", ZERO + 100 * SEC);
        s.apply_remote_record(rec_of(&key(BOB), Some(&rec)), SEC, ZERO)
            .unwrap();
        assert_eq!(s.front_of_etag(BOB, "e1").as_deref(), Some("sip:a"));
        assert_eq!(s.front_of_etag(BOB, "e2"), None);
        assert_eq!(s.front_of_etag("sip:carol@example.com", "e1"), None);
        // Gone from that front's record: no longer its.
        s.apply_remote_record(rec_of(&key(BOB), None), 2 * SEC, ZERO)
            .unwrap();
        assert_eq!(s.front_of_etag(BOB, "e1"), None);
    }

    #[test]
    fn a_reload_drops_what_the_snapshot_lacks() {
        let mut s = services();
        let rec = record(BOB, "open", "e1", ZERO + 100 * SEC);
        s.apply_remote_record(rec_of(&key(BOB), Some(&rec)), SEC, ZERO)
            .unwrap();
        let carol = "sip:carol@example.com";
        let rec_c = record(carol, "closed", "e2", ZERO + 100 * SEC);
        let (_, bad) = s.reload_remote(
            &[
                ("sip:b".into(), key(carol), rec_c),
                ("x".into(), "subscription:1".into(), "z".into()),
            ],
            2 * SEC,
            ZERO,
        );
        assert_eq!(bad, 1);
        assert!(!s.presentities.contains_key(BOB));
        assert!(s.presentities.contains_key(carol));
        assert_eq!(s.remote_publications, 1);
        assert_eq!(s.known_aors(), vec![carol.to_owned()]);
    }

    #[test]
    fn a_device_behind_another_front_gets_its_message_with_a_route() {
        let s = services();
        let dev = Device {
            uri: "sip:bob@127.0.0.1:7000;transport=tcp".into(),
            reach: Reach {
                to: "127.0.0.1:5070".parse().unwrap(),
                transport: Transport::Udp,
            },
            route: Some("<sip:127.0.0.1:5070;lr>".into()),
        };
        let m = super::super::StoredMessage {
            id: super::super::im::MsgId(1),
            aor: BOB.into(),
            from: "<sip:alice@example.com>;tag=1".into(),
            to: format!("<{BOB}>"),
            content_type: Some("text/plain".into()),
            date: None,
            body: b"hi".to_vec(),
            expires_at: 10,
            attempts: 0,
        };
        let bytes = s.delivery(&m, &dev, "z9hG4bKx", "c1");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("MESSAGE sip:bob@127.0.0.1:7000;transport=tcp SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nRoute: <sip:127.0.0.1:5070;lr>\r\n"),
            "{text}"
        );
    }
}
