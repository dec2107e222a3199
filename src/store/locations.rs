//! The registrar's bindings in the state store: a [`LocationStore`] that keeps them in
//! memory (the registrar's own [`MemoryStore`]) and writes every change of an address of
//! record behind to a [`ChangeSink`]; at start it is filled from the stored records, so a
//! restarted proxy still routes calls to phones registered before.
//!
//! A refused write (queue full) is counted by the sink; the next REGISTER refresh of that
//! address of record writes it again. Redis drops a record when its last binding expires;
//! bindings expired in a record still held are skipped when loading.

use std::sync::Arc;
use std::time::Duration;

use crate::sip::registrar::{Binding, LocationStore, MemoryStore};
use crate::store::record::{BindingRecord, RegistrationRecord, RECORD_VERSION};
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
}

impl std::fmt::Debug for LocationPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationPersistence")
            .field("loaded", &self.loaded.len())
            .finish_non_exhaustive()
    }
}

/// The registrar's store: in memory, written behind when persistence is configured.
#[derive(Default)]
pub struct StoredLocations {
    mem: MemoryStore,
    persist: Option<LocationPersistence>,
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

impl StoredLocations {
    /// In memory only (what the proxy does without a store).
    pub fn memory() -> StoredLocations {
        StoredLocations::default()
    }

    /// Filled from `persist.loaded` (bindings still valid at `now`), writing later changes.
    /// Returns the store and how many records could not be read.
    pub fn new(persist: LocationPersistence, now: Nanos) -> (StoredLocations, usize) {
        let mut mem = MemoryStore::default();
        let mut bad = 0;
        let zero = at_zero_ns(&persist);
        for (aor, json) in &persist.loaded {
            let Ok(rec) = RegistrationRecord::parse(json) else {
                bad += 1;
                continue;
            };
            if rec.aor != *aor {
                bad += 1;
                continue;
            }
            let bindings: Vec<Binding> = rec
                .bindings
                .into_iter()
                .filter_map(|b| {
                    let expires_at_ns = b.expires_unix_ns.checked_sub(zero)?;
                    (expires_at_ns > now).then_some(Binding {
                        uri: b.contact,
                        q: b.q,
                        call_id: b.call_id,
                        cseq: b.cseq,
                        source: b.source,
                        expires_at_ns,
                    })
                })
                .collect();
            mem.put(aor, bindings);
        }
        (
            StoredLocations {
                mem,
                persist: Some(persist),
            },
            bad,
        )
    }

    /// The record of an address of record's bindings.
    pub fn record(aor: &str, bindings: &[Binding], unix_at_zero_ns: u64) -> RegistrationRecord {
        RegistrationRecord {
            v: RECORD_VERSION,
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
                })
                .collect(),
        }
    }
}

impl LocationStore for StoredLocations {
    fn get(&self, aor: &str) -> Vec<Binding> {
        self.mem.get(aor)
    }

    fn put(&mut self, aor: &str, bindings: Vec<Binding>) {
        if let Some(p) = &self.persist {
            let change = if bindings.is_empty() {
                Change::DeleteRegistration {
                    aor: aor.to_owned(),
                }
            } else {
                let zero = at_zero_ns(p);
                let rec = StoredLocations::record(aor, &bindings, zero);
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
        }
    }

    #[test]
    fn bindings_survive_a_restart_with_another_clock() {
        let sink = Arc::new(Sink::new());
        let first = LocationPersistence {
            sink: sink.clone(),
            loaded: Vec::new(),
            unix_at_zero: Duration::from_secs(1_000),
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
        };
        let (s, bad) = StoredLocations::new(p, 1);
        assert_eq!((bad, s.len()), (2, 0));
    }
}
