//! The calls, by Call-ID and in the order the timeout sweep visits them: one dense vector of
//! calls and an index from Call-ID to slot. The sweep walks the vector (no Call-ID hashing,
//! no second table to keep in step); a lookup by Call-ID is one hash and one index.
//!
//! A removal keeps the sweep's promises (every call present for a whole round visited exactly
//! once in it, and no later in a round than in the one before): a hole among the slots the
//! round has not visited yet takes the last call; one among those it has visited stays a hole
//! (skipped, never counted as a visit) until the next round starts, when the last calls fill
//! the holes. A call only ever moves to a lower slot, so nothing waits behind calls moved in
//! front of it: a call is visited at most one round period after its previous visit.
//!
//! The index holds slot numbers only (4 bytes an entry, not a Call-ID's 16-byte pointer and
//! an 8-byte slot: memory per call, issue 19); an entry is found by the Call-ID's hash and
//! recognised by the Call-ID of the call in its slot. It never names a hole.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::session::model::Call;

#[derive(Debug, Default)]
pub(super) struct CallTable {
    /// Boxed: a move copies a pointer, and the vector's spare capacity costs 8 bytes a slot
    /// (memory per call). `None`: a hole the sweep has passed (see above).
    slots: Vec<Option<Box<Call>>>,
    /// Slot numbers by their call's Call-ID (SipHash with a random key: Call-IDs come from
    /// the network).
    index: HashTable<u32>,
    hasher: RandomState,
    holes: usize,
}

/// The Call-ID of the call in slot `s` (`""` for a hole, which the index never names).
fn id_at(slots: &[Option<Box<Call>>], s: u32) -> &str {
    match slots.get(s as usize) {
        Some(Some(c)) => &c.id,
        _ => "",
    }
}

/// A slot number as the index keeps it (the table never holds 2^32 calls: the session
/// limit and the ports run out long before).
fn slot_no(s: usize) -> u32 {
    u32::try_from(s).unwrap_or(u32::MAX)
}

impl CallTable {
    /// Live calls.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of the call named `id`.
    fn find(&self, id: &str) -> Option<usize> {
        let h = self.hasher.hash_one(id);
        let slots = &self.slots;
        self.index
            .find(h, |&s| id_at(slots, s) == id)
            .map(|&s| s as usize)
    }

    /// Adds slot `s` (holding a call now) to the index.
    fn index_slot(&mut self, s: usize) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let h = hasher.hash_one(id_at(slots, slot_no(s)));
        self.index
            .insert_unique(h, slot_no(s), |&x| hasher.hash_one(id_at(slots, x)));
    }

    /// Slots, holes included: where the sweep's position runs to.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn get(&self, id: &str) -> Option<&Call> {
        let slot = self.find(id)?;
        self.slots.get(slot)?.as_deref()
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Call> {
        let slot = self.find(id)?;
        self.slots.get_mut(slot)?.as_deref_mut()
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// Every call, in sweep order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Call> {
        self.slots.iter().flatten().map(|c| &**c)
    }

    /// The calls in slots `from..to` (clamped to the table).
    pub(super) fn slice(&self, from: usize, to: usize) -> impl Iterator<Item = &Call> {
        let to = to.min(self.slots.len());
        self.slots
            .get(from.min(to)..to)
            .unwrap_or_default()
            .iter()
            .flatten()
            .map(|c| &**c)
    }

    /// The call named `id`, made by `make` (and appended, last in the sweep order) when there
    /// is none. Returns it and whether it is new.
    pub(super) fn get_or_insert_with(
        &mut self,
        id: &Arc<str>,
        make: impl FnOnce() -> Box<Call>,
    ) -> (&mut Call, bool) {
        let slot = match self.find(id) {
            Some(s) => s,
            None => {
                self.slots.push(Some(make()));
                let s = self.slots.len() - 1;
                self.index_slot(s);
                let call = self.slots[s].get_or_insert_with(|| Box::new(Call::new(id.clone(), 0)));
                return (call, true);
            }
        };
        // Found through the index, so never a hole.
        let call = self.slots[slot].get_or_insert_with(|| Box::new(Call::new(id.clone(), 0)));
        (call, false)
    }

    /// Adds `call` (last in the sweep order), replacing one with the same id in its slot.
    pub(super) fn insert(&mut self, call: Box<Call>) {
        if let Some(slot) = self.find(&call.id) {
            if let Some(s) = self.slots.get_mut(slot) {
                *s = Some(call);
                return;
            }
        }
        self.slots.push(Some(call));
        self.index_slot(self.slots.len() - 1);
    }

    /// Removes the call named `id`. `visited` is how many slots from the start the current
    /// sweep round has passed: a slot among them becomes a hole, one after them takes the
    /// last call (there are no holes after `visited`).
    pub(super) fn remove(&mut self, id: &str, visited: &mut usize) -> Option<Box<Call>> {
        let h = self.hasher.hash_one(id);
        let slots = &self.slots;
        let entry = self.index.find_entry(h, |&s| id_at(slots, s) == id).ok()?;
        let (slot, _) = entry.remove();
        let slot = slot as usize;
        if slot < *visited {
            let call = self.slots.get_mut(slot)?.take();
            self.holes += 1;
            while matches!(self.slots.last(), Some(None)) {
                self.slots.pop();
                self.holes -= 1;
            }
            *visited = (*visited).min(self.slots.len());
            call
        } else {
            if slot >= self.slots.len() {
                return None;
            }
            let call = self.slots.swap_remove(slot);
            self.reindex(slot);
            call
        }
    }

    /// Fills the holes with the last calls (at a round's start: every call moves down, if
    /// at all).
    pub(super) fn compact(&mut self) {
        let mut i = 0;
        while self.holes > 0 && i < self.slots.len() {
            if self.slots.get(i).is_some_and(Option::is_none) {
                while matches!(self.slots.last(), Some(None)) {
                    self.slots.pop();
                    self.holes -= 1;
                }
                if i >= self.slots.len() {
                    break;
                }
                self.slots.swap_remove(i);
                self.holes -= 1;
                self.reindex(i);
            }
            i += 1;
        }
        self.holes = 0;
    }

    /// The call now in `slot` came from the last slot (a `swap_remove`): its index entry
    /// follows it.
    fn reindex(&mut self, slot: usize) {
        let from = slot_no(self.slots.len());
        if let Some(Some(c)) = self.slots.get(slot) {
            let h = self.hasher.hash_one(&*c.id);
            if let Some(i) = self.index.find_mut(h, |&s| s == from) {
                *i = slot_no(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Box<Call> {
        Box::new(Call::new(Arc::from(id), 0))
    }

    fn ids(t: &CallTable) -> Vec<String> {
        t.values().map(|c| c.id.to_string()).collect()
    }

    fn consistent(t: &CallTable) {
        assert_eq!(t.index.len(), t.values().count());
        assert_eq!(t.holes, t.slots.iter().filter(|s| s.is_none()).count());
        for (k, c) in t.slots.iter().enumerate() {
            if let Some(c) = c {
                assert_eq!(t.find(&c.id), Some(k), "{}", c.id);
            }
        }
        assert!(t
            .index
            .iter()
            .all(|&s| matches!(t.slots.get(s as usize), Some(Some(_)))));
    }

    fn slots(t: &CallTable) -> Vec<String> {
        t.slots
            .iter()
            .map(|c| c.as_ref().map_or("-".to_owned(), |c| c.id.to_string()))
            .collect()
    }

    #[test]
    fn removal_leaves_visited_holes_and_moves_calls_only_down() {
        let mut t = CallTable::default();
        for k in 0..6 {
            t.insert(call(&format!("c{k}")));
        }
        // c0..c2 visited: removing c1 leaves a hole; removing unvisited c3 moves c5 there.
        let mut visited = 3;
        assert!(t.remove("c1", &mut visited).is_some());
        consistent(&t);
        assert_eq!(visited, 3);
        assert_eq!(slots(&t), ["c0", "-", "c2", "c3", "c4", "c5"]);
        assert!(t.remove("c3", &mut visited).is_some());
        consistent(&t);
        assert_eq!(slots(&t), ["c0", "-", "c2", "c5", "c4"]);
        assert_eq!(ids(&t), ["c0", "c2", "c5", "c4"]);
        assert!(t.remove("nope", &mut visited).is_none());
        // All visited; the trailing hole is dropped.
        visited = 5;
        assert!(t.remove("c4", &mut visited).is_some());
        consistent(&t);
        assert_eq!(visited, 4);
        assert_eq!(slots(&t), ["c0", "-", "c2", "c5"]);
        // The next round fills the hole from the end.
        t.compact();
        consistent(&t);
        assert_eq!(slots(&t), ["c0", "c5", "c2"]);
        for id in ["c5", "c0", "c2"] {
            let mut v = 3;
            assert!(t.remove(id, &mut v).is_some());
            consistent(&t);
        }
        t.compact();
        assert_eq!(t.len(), 0);
        assert_eq!(t.slot_count(), 0);
    }

    #[test]
    fn get_or_insert_appends_once() {
        let mut t = CallTable::default();
        let id: Arc<str> = Arc::from("x");
        let (c, new) = t.get_or_insert_with(&id, || call("x"));
        assert!(new);
        c.last_signal_ns = 7;
        let (c, new) = t.get_or_insert_with(&id, || call("x"));
        assert!(!new);
        assert_eq!(c.last_signal_ns, 7);
        assert_eq!(t.len(), 1);
        assert_eq!(t.slice(0, 10).count(), 1);
        assert_eq!(t.slice(5, 10).count(), 0);
    }
}
