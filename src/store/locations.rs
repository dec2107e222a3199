//! The registrar's bindings in the state store: a [`LocationStore`] that keeps them in
//! memory (the registrar's own [`MemoryStore`]) and writes every change of an address of
//! record behind to a [`ChangeSink`]; at start it is filled from the stored records, so a
//! restarted proxy still routes calls to phones registered before.
//!
//! A refused write (queue full) is counted by the sink; the next REGISTER refresh of that
//! address of record writes it again. Redis drops a record when its last binding expires;
//! bindings expired in a record still held are skipped when loading.
//!
//! Shared between fronts (`store::share`): every binding written carries the front that
//! holds it (`path`, this front's SIP URI for bindings made here); the changes other fronts
//! publish are applied with [`StoredLocations::apply_remote`] (not written back), and after a
//! reconnect [`StoredLocations::reload`] puts the whole store in step again. In memory, a
//! binding made here has no path, so the registrar and the proxy tell them apart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::sip::registrar::{Binding, LocationStore, MemoryStore};
use crate::store::record::{BindingRecord, RecordError, RegistrationRecord, REGISTRATION_VERSION};
use crate::store::{Change, ChangeSink};
use crate::time::Nanos;

/// What [`StoredLocations`] needs to write and to start from.
#[derive(Clone)]
pub struct LocationPersistence {
    pub sink: Arc<dyn ChangeSink>,
    /// (address of record, [`RegistrationRecord`] JSON) as loaded at start.
    pub loaded: Vec<(String, String)>,
    /// Unix time at this process's monotonic 0.
    pub unix_at_zero: Duration,
    /// This front's SIP URI (`sip:IP:PORT`), the path of the bindings made here; the SIP
    /// server sets it once bound.
    pub front: Option<String>,
}

impl std::fmt::Debug for LocationPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationPersistence")
            .field("loaded", &self.loaded.len())
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

/// The registrar's store: in memory, written behind when persistence is configured.
#[derive(Default)]
pub struct StoredLocations {
    mem: MemoryStore,
    persist: Option<LocationPersistence>,
    /// While a snapshot is being read (see [`StoredLocations::snapshot_reading`]): the
    /// addresses of record changed here since.
    changed_while_reading: Option<HashSet<String>>,
}

impl std::fmt::Debug for StoredLocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLocations")
            .field("aors", &self.mem.len())
            .field("persist", &self.persist)
            .finish()
    }
}

fn at_zero_ns(p: &LocationPersistence) -> u64 {
    u64::try_from(p.unix_at_zero.as_nanos()).unwrap_or(u64::MAX)
}

/// What a [`StoredLocations::reload`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Addresses of record taken from the store.
    pub applied: usize,
    /// Records that could not be read.
    pub bad: usize,
    /// Addresses of record with bindings made here that the store had lost, written again.
    pub rewritten: usize,
}

impl StoredLocations {
    /// In memory only (what the proxy does without a store).
    pub fn memory() -> StoredLocations {
        StoredLocations::default()
    }

    /// Filled from `persist.loaded` (bindings still valid at `now`), writing later changes.
    /// Returns the store and how many records could not be read.
    pub fn new(persist: LocationPersistence, now: Nanos) -> (StoredLocations, usize) {
        let loaded = persist.loaded.clone();
        let mut s = StoredLocations {
            mem: MemoryStore::default(),
            persist: Some(persist),
            changed_while_reading: None,
        };
        let bad = loaded
            .iter()
            .filter(|(aor, json)| s.apply_remote(aor, Some(json), now).is_err())
            .count();
        (s, bad)
    }

    /// This front's SIP URI, if the store is shared.
    pub fn front(&self) -> Option<&str> {
        self.persist.as_ref().and_then(|p| p.front.as_deref())
    }

    /// The bindings of a stored record still valid at `now`, in this process's clock; a
    /// binding whose path is this front is one made here (no path).
    fn bindings_of(&self, rec: RegistrationRecord, now: Nanos) -> Vec<Binding> {
        let zero = self.persist.as_ref().map_or(0, at_zero_ns);
        let own = self.front();
        rec.bindings
            .into_iter()
            .filter_map(|b| {
                let expires_at_ns = b.expires_unix_ns.checked_sub(zero)?;
                (expires_at_ns > now).then(|| Binding {
                    uri: b.contact,
                    q: b.q,
                    call_id: b.call_id,
                    cseq: b.cseq,
                    source: b.source,
                    expires_at_ns,
                    transport: b.transport,
                    path: b.path.filter(|p| Some(p.as_str()) != own),
                    outbound: b.outbound,
                    nat: b.nat,
                })
            })
            .collect()
    }

    /// A change of `aor` made elsewhere (its record as stored, `None`: no binding left):
    /// replaces what is held here, without writing it back.
    pub fn apply_remote(
        &mut self,
        aor: &str,
        json: Option<&str>,
        now: Nanos,
    ) -> Result<(), RecordError> {
        let bindings = match json {
            None => Vec::new(),
            Some(json) => {
                let rec = RegistrationRecord::parse(json)?;
                if rec.aor != aor {
                    return Err(RecordError::Malformed(format!(
                        "record of {} under {aor}",
                        rec.aor
                    )));
                }
                self.bindings_of(rec, now)
            }
        };
        self.mem.put(aor, bindings);
        Ok(())
    }

    /// A snapshot of the store is about to be read: addresses of record changed here from
    /// now until [`StoredLocations::reload`] are left as they are by it.
    pub fn snapshot_reading(&mut self) {
        self.changed_while_reading = Some(HashSet::new());
    }

    /// Everything the store holds now (after a reconnect, when changes may have been
    /// missed): its records replace what is held here; an address of record it no longer
    /// has loses its bindings held by other fronts, and one with bindings made here (the
    /// store was emptied, or lost them) has those written again. What changed here while
    /// the snapshot was read is newer than it and kept.
    pub fn reload(&mut self, snapshot: &[(String, String)], now: Nanos) -> ReloadCounts {
        let mut counts = ReloadCounts::default();
        let newer = self.changed_while_reading.take().unwrap_or_default();
        let mut seen: HashSet<&str> = newer.iter().map(String::as_str).collect();
        for (aor, json) in snapshot {
            if !seen.insert(aor.as_str()) {
                continue;
            }
            match self.apply_remote(aor, Some(json), now) {
                Ok(()) => counts.applied += 1,
                Err(_) => counts.bad += 1,
            }
        }
        for aor in self.mem.aors() {
            if seen.contains(aor.as_str()) {
                continue;
            }
            let mine: Vec<Binding> = self
                .mem
                .get(&aor)
                .into_iter()
                .filter(|b| b.path.is_none() && b.expires_at_ns > now)
                .collect();
            if !mine.is_empty() {
                counts.rewritten += 1;
                self.write(&aor, &mine);
            }
            self.mem.put(&aor, mine);
        }
        counts
    }

    /// The record of an address of record's bindings; bindings made here get `front` as
    /// their path.
    pub fn record(
        aor: &str,
        bindings: &[Binding],
        unix_at_zero_ns: u64,
        front: Option<&str>,
    ) -> RegistrationRecord {
        RegistrationRecord {
            v: REGISTRATION_VERSION,
            aor: aor.to_owned(),
            bindings: bindings
                .iter()
                .map(|b| BindingRecord {
                    contact: b.uri.clone(),
                    source: b.source,
                    expires_unix_ns: unix_at_zero_ns.saturating_add(b.expires_at_ns),
                    q: b.q,
                    call_id: b.call_id.clone(),
                    cseq: b.cseq,
                    transport: b.transport,
                    path: b.path.clone().or_else(|| front.map(str::to_owned)),
                    outbound: b.outbound,
                    nat: b.nat,
                })
                .collect(),
        }
    }

    /// Writes the bindings of `aor` behind (no binding: a delete).
    fn write(&self, aor: &str, bindings: &[Binding]) {
        let Some(p) = &self.persist else {
            return;
        };
        let change = if bindings.is_empty() {
            Change::DeleteRegistration {
                aor: aor.to_owned(),
            }
        } else {
            let zero = at_zero_ns(p);
            let rec = StoredLocations::record(aor, bindings, zero, p.front.as_deref());
            let expires_unix_ns = rec
                .bindings
                .iter()
                .map(|b| b.expires_unix_ns)
                .max()
                .unwrap_or(zero);
            Change::PutRegistration {
                aor: aor.to_owned(),
                json: rec.emit(),
                expires_unix_ns,
            }
        };
        // A refusal is counted by the sink; the next refresh writes the AOR again.
        let _ = p.sink.offer(change);
    }
}

impl LocationStore for StoredLocations {
    fn get(&self, aor: &str) -> Vec<Binding> {
        self.mem.get(aor)
    }

    fn put(&mut self, aor: &str, bindings: Vec<Binding>) {
        if let Some(changed) = self.changed_while_reading.as_mut() {
            changed.insert(aor.to_owned());
        }
        self.write(aor, &bindings);
        self.mem.put(aor, bindings);
    }

    fn expire(&mut self, now_ns: u64) -> usize {
        self.mem.expire(now_ns)
    }

    fn len(&self) -> usize {
        self.mem.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore as Sink;

    fn binding(exp: Nanos) -> Binding {
        Binding {
            uri: "sip:bob@198.51.100.7:5062".into(),
            q: Some(500),
            call_id: "reg-1".into(),
            cseq: 3,
            source: "203.0.113.9:40000".parse().unwrap(),
            expires_at_ns: exp,
            transport: crate::sip::transport::Transport::Udp,
            path: None,
            outbound: false,
            nat: true,
        }
    }

    #[test]
    fn bindings_survive_a_restart_with_another_clock() {
        let sink = Arc::new(Sink::new());
        let first = LocationPersistence {
            sink: sink.clone(),
            loaded: Vec::new(),
            unix_at_zero: Duration::from_secs(1_000),
            front: None,
        };
        let (mut s, bad) = StoredLocations::new(first, 0);
        assert_eq!(bad, 0);
        // Expires at unix 1000 + 600 s; another AOR at 1000 + 5 s.
        s.put("sip:bob@example.com", vec![binding(600_000_000_000)]);
        s.put("sip:gone@example.com", vec![binding(5_000_000_000)]);
        s.put("sip:x@example.com", vec![binding(9)]);
        s.put("sip:x@example.com", Vec::new());
        let loaded = sink.load().registrations;
        assert_eq!(loaded.len(), 2);
        // The new process started at unix 1100 s: bob has 500 s left, "gone" has expired.
        let second = LocationPersistence {
            sink: sink.clone(),
            loaded,
            unix_at_zero: Duration::from_secs(1_100),
            front: None,
        };
        let (s2, bad) = StoredLocations::new(second, 1);
        assert_eq!(bad, 0);
        let got = s2.get("sip:bob@example.com");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].expires_at_ns, 500_000_000_000);
        assert_eq!(got[0].source, binding(0).source);
        assert_eq!(got[0].remaining_secs(1), 500);
        assert!(s2.get("sip:gone@example.com").is_empty());
        assert_eq!(s2.len(), 1);
    }

    #[test]
    fn unreadable_records_are_counted_not_loaded() {
        let p = LocationPersistence {
            sink: Arc::new(Sink::new()),
            loaded: vec![
                ("sip:a@x".into(), "{\"v\":1}".into()),
                ("sip:b@x".into(), "garbage".into()),
            ],
            unix_at_zero: Duration::ZERO,
            front: None,
        };
        let (s, bad) = StoredLocations::new(p, 1);
        assert_eq!((bad, s.len()), (2, 0));
    }

    fn front(name: &str, sink: Arc<Sink>) -> StoredLocations {
        let p = LocationPersistence {
            sink,
            loaded: Vec::new(),
            unix_at_zero: Duration::from_secs(1_000),
            front: Some(name.into()),
        };
        StoredLocations::new(p, 0).0
    }

    #[test]
    fn two_fronts_see_each_others_bindings_with_their_front() {
        use crate::sip::transport::Transport;
        let (sink_a, sink_b) = (Arc::new(Sink::new()), Arc::new(Sink::new()));
        let mut a = front("sip:192.0.2.1:5060", sink_a.clone());
        let mut b = front("sip:192.0.2.2:5060", sink_b.clone());
        let mut tcp = binding(600_000_000_000);
        tcp.transport = Transport::Tcp;
        a.put("sip:bob@example.com", vec![tcp.clone()]);
        let (aor, json) = sink_a.load().registrations.remove(0);
        assert!(json.contains("\"path\":\"sip:192.0.2.1:5060\""), "{json}");
        // B applies it: the binding is held by A.
        b.apply_remote(&aor, Some(&json), 1).unwrap();
        let got = b.get(&aor);
        assert_eq!(got[0].path.as_deref(), Some("sip:192.0.2.1:5060"));
        assert_eq!(got[0].transport, Transport::Tcp);
        assert!(sink_b.load().registrations.is_empty(), "not written back");
        // A second phone registers at B: B's record keeps A's binding held by A...
        let mut second = binding(600_000_000_000);
        second.uri = "sip:bob@198.51.100.8:5060".into();
        b.put(&aor, vec![got[0].clone(), second]);
        let (_, json_b) = sink_b.load().registrations.remove(0);
        // ... and A, applying it, knows its own binding as its own.
        a.apply_remote(&aor, Some(&json_b), 1).unwrap();
        let at_a = a.get(&aor);
        assert_eq!(at_a.len(), 2);
        assert_eq!(at_a[0].path, None);
        assert_eq!(at_a[1].path.as_deref(), Some("sip:192.0.2.2:5060"));
        // Removal at B reaches A.
        a.apply_remote(&aor, None, 2).unwrap();
        assert!(a.get(&aor).is_empty());
        assert!(matches!(
            a.apply_remote("sip:x@example.com", Some(&json_b), 2),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn a_reload_replaces_remote_state_and_writes_back_what_the_store_lost() {
        let sink = Arc::new(Sink::new());
        let mut a = front("sip:192.0.2.1:5060", sink.clone());
        a.put("sip:mine@example.com", vec![binding(600_000_000_000)]);
        let mut theirs = binding(600_000_000_000);
        theirs.path = Some("sip:192.0.2.2:5060".into());
        a.apply_remote(
            "sip:gone@example.com",
            Some(&StoredLocations::record("sip:gone@example.com", &[theirs], 0, None).emit()),
            1,
        )
        .unwrap();
        let other = StoredLocations::record(
            "sip:other@example.com",
            &[binding(600_000_000_000)],
            1_000_000_000_000,
            Some("sip:192.0.2.2:5060"),
        )
        .emit();
        sink.take_pending();
        // The store was emptied (a Redis restarted without persistence) and holds only
        // another front's new registration.
        let c = a.reload(&[("sip:other@example.com".into(), other)], 1);
        assert_eq!(
            c,
            ReloadCounts {
                applied: 1,
                bad: 0,
                rewritten: 1
            }
        );
        assert_eq!(a.get("sip:mine@example.com").len(), 1);
        assert!(a.get("sip:gone@example.com").is_empty());
        assert_eq!(a.get("sip:other@example.com").len(), 1);
        assert_eq!(
            sink.take_pending(),
            1,
            "the lost registration is written again"
        );
    }
}
