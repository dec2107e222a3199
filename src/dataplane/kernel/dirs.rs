//! The program's direction entries (`anchor_dir`, a `BPF_F_MMAPABLE` array) mapped into the
//! relay's memory, and the entry numbers each worker hands out from ranges of its own.
//!
//! A worker writes an entry before it keys it (in the per-port array `anchor_port`, or in the
//! `anchor_fwd` hash for addresses beyond its slots: `keys.rs`) and reads it back after it
//! removed the key; while the key is there only the program writes the entry. The worker reads
//! the figures with plain loads, no system call: one load of the packet count tells whether a
//! direction moved since the last sync.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::abi::FwdValue;
use super::mapped::Mapped;

/// Directions the maps hold (`ANCHOR_DIRECTIONS` in `forward.bpf.c`).
pub const DIRECTIONS: u32 = 1 << 17;

/// Entry numbers a worker takes at once from the shared pool.
const RANGE: u32 = 1024;

/// A freed entry is not handed out again before this long: a program that found the key just
/// before it was removed may still be updating the entry (microseconds).
const REUSE_AFTER_NS: u64 = 10 * crate::time::NANOS_PER_MS;

/// An entry number in `anchor_dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry(u32);

impl Entry {
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// The array as mapped: `len` entries of [`FwdValue`] (their stride: the array rounds values
/// to 8 bytes, which 168 is already). Every access goes through volatile loads and stores of
/// whole plain-integer fields, and each entry has one writer in the relay (the worker that
/// owns its number).
pub struct Directions {
    mem: Mapped,
    len: u32,
}

impl Directions {
    /// Maps the array `fd` of `len` entries, read and write.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: u32) -> std::io::Result<Directions> {
        let mem = Mapped::map(fd, len as usize * std::mem::size_of::<FwdValue>())?;
        Ok(Directions { mem, len })
    }

    /// `len` zeroed entries on the heap, standing in for the kernel's (tests).
    #[cfg(test)]
    pub fn on_heap(len: u32) -> Directions {
        Directions {
            mem: Mapped::on_heap(len as usize * std::mem::size_of::<FwdValue>()),
            len,
        }
    }

    fn at(&self, e: Entry) -> Option<*mut FwdValue> {
        if e.0 >= self.len {
            return None;
        }
        // SAFETY: e.0 < len, so the offset stays inside the mapping of len entries.
        Some(unsafe { self.mem.base::<FwdValue>().as_ptr().add(e.0 as usize) })
    }

    /// Entry `e` as it stands (fields may be from two moments if the program is updating it,
    /// as with a map lookup).
    pub fn read(&self, e: Entry) -> Option<FwdValue> {
        let p = self.at(e)?;
        // SAFETY: p points at a whole entry inside the live mapping, aligned (the mapping is
        // page aligned and the stride a multiple of 8); FwdValue is plain integers, valid for
        // any bit pattern.
        Some(unsafe { std::ptr::read_volatile(p) })
    }

    /// Entry `e`'s packet count: whether the direction moved.
    pub fn packets(&self, e: Entry) -> Option<u64> {
        let p = self.at(e)?;
        // SAFETY: as for `read`, one aligned u64 field of the entry.
        Some(unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).packets)) })
    }

    /// Entry `e`'s flags (the program's `ANCHOR_HANDED_BACK` and reasons).
    pub fn flags(&self, e: Entry) -> Option<u32> {
        let p = self.at(e)?;
        // SAFETY: as for `read`, one aligned u32 field of the entry.
        Some(unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).flags)) })
    }

    /// Writes entry `e` whole (it is not keyed: the program does not touch it). False when
    /// `e` is out of range.
    pub fn write(&self, e: Entry, v: &FwdValue) -> bool {
        let Some(p) = self.at(e) else {
            return false;
        };
        // SAFETY: p points at a whole, aligned entry of the live mapping that nothing else
        // writes now (its number is this worker's and not keyed in anchor_fwd).
        unsafe { std::ptr::write_volatile(p, *v) };
        // The key that publishes it is added by a system call after this.
        std::sync::atomic::fence(Ordering::Release);
        true
    }
}

/// The entry numbers not yet handed to any worker, shared by all.
#[derive(Clone)]
pub struct Pool {
    next: Arc<AtomicU32>,
    len: u32,
}

impl Pool {
    pub fn new(len: u32) -> Pool {
        Pool {
            next: Arc::new(AtomicU32::new(0)),
            len,
        }
    }

    /// The start of a range of [`RANGE`] numbers, `None` once all are handed out.
    fn take(&self) -> Option<u32> {
        let start = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.len).then_some(n.saturating_add(RANGE))
            })
            .ok()?;
        Some(start)
    }
}

/// One worker's entry numbers: positions 0.. over the ranges it took, each in use or free.
pub struct Entries {
    /// The entries themselves, mapped once and shared by the workers.
    dirs: Arc<Directions>,
    pool: Pool,
    ranges: Vec<u32>,
    /// Per position, the slot whose direction it holds.
    users: Vec<Option<crate::dataplane::slot::SlotIdx>>,
    /// Freed positions, oldest first, with when they were freed.
    free: VecDeque<(u32, u64)>,
    /// Positions never used, the lowest last.
    fresh: Vec<u32>,
}

impl Entries {
    pub fn new(pool: Pool, dirs: Arc<Directions>) -> Entries {
        Entries {
            dirs,
            pool,
            ranges: Vec::new(),
            users: Vec::new(),
            free: VecDeque::new(),
            fresh: Vec::new(),
        }
    }

    /// The entries.
    pub fn dirs(&self) -> &Directions {
        &self.dirs
    }

    /// How many positions there are (in use or free).
    pub fn positions(&self) -> usize {
        self.users.len()
    }

    /// The entry at position `pos` and the slot using it.
    pub fn used(&self, pos: usize) -> Option<(Entry, crate::dataplane::slot::SlotIdx)> {
        let user = (*self.users.get(pos)?)?;
        Some((self.entry(pos)?, user))
    }

    fn entry(&self, pos: usize) -> Option<Entry> {
        let base = *self.ranges.get(pos / RANGE as usize)?;
        let n = base.checked_add((pos % RANGE as usize) as u32)?;
        (n < self.pool.len).then_some(Entry(n))
    }

    /// A position and its entry for slot `user`; `None` when every number is in use (or
    /// freed too recently): the map is full.
    pub fn take(
        &mut self,
        user: crate::dataplane::slot::SlotIdx,
        now: u64,
    ) -> Option<(usize, Entry)> {
        let pos = match self.free.front() {
            Some(&(pos, at)) if now.saturating_sub(at) >= REUSE_AFTER_NS => {
                self.free.pop_front();
                pos as usize
            }
            _ => match self.fresh.pop() {
                Some(pos) => pos as usize,
                None => {
                    let base = self.pool.take()?;
                    let first = self.users.len();
                    self.ranges.push(base);
                    let end = base.saturating_add(RANGE).min(self.pool.len);
                    self.users.resize(first + (end - base) as usize, None);
                    self.fresh = (first as u32 + 1..self.users.len() as u32).rev().collect();
                    first
                }
            },
        };
        let e = self.entry(pos)?;
        if let Some(u) = self.users.get_mut(pos) {
            *u = Some(user);
        }
        Some((pos, e))
    }

    /// Position `pos` is free again from `now`.
    pub fn give_back(&mut self, pos: usize, now: u64) {
        if let Some(u) = self.users.get_mut(pos) {
            if u.take().is_some() {
                self.free.push_back((pos as u32, now));
            }
        }
    }

    /// The entry at position `pos` (in use or not).
    pub fn entry_at(&self, pos: usize) -> Option<Entry> {
        self.entry(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::slot::SlotIdx;

    #[test]
    fn workers_take_ranges_of_their_own_and_reuse_a_number_only_after_a_while() {
        let pool = Pool::new(2 * RANGE + 10);
        let dirs = Arc::new(Directions::on_heap(0));
        let mut a = Entries::new(pool.clone(), dirs.clone());
        let mut b = Entries::new(pool.clone(), dirs);
        let (pa, ea) = a.take(SlotIdx::new(1), 0).unwrap();
        let (_, eb) = b.take(SlotIdx::new(1), 0).unwrap();
        assert_eq!((pa, ea.raw(), eb.raw()), (0, 0, RANGE));
        assert_eq!(a.used(pa), Some((ea, SlotIdx::new(1))));
        a.give_back(pa, 1_000);
        assert_eq!(a.used(pa), None);
        // The rest of a's range comes first; the freed number only after REUSE_AFTER_NS.
        for k in 1..RANGE {
            let (_, e) = a.take(SlotIdx::new(k), 2_000).unwrap();
            assert_eq!(e.raw(), k);
        }
        let (_, e) = a.take(SlotIdx::new(9), 1_000 + REUSE_AFTER_NS).unwrap();
        assert_eq!(e.raw(), 0);
        // The third range is cut at the pool's end; then the map is full.
        for k in 0..10 {
            let (_, e) = a.take(SlotIdx::new(k), 0).unwrap();
            assert_eq!(e.raw(), 2 * RANGE + k);
        }
        assert!(a.take(SlotIdx::new(99), 0).is_none());
        assert!(
            b.take(SlotIdx::new(2), 0).is_some(),
            "b's own range has room"
        );
    }

    #[test]
    fn an_entry_reads_back_as_written_and_out_of_range_is_refused() {
        let d = Directions::on_heap(4);
        let v = FwdValue {
            packets: 7,
            flags: 3,
            bytes: 700,
            ..FwdValue::default()
        };
        assert!(d.write(Entry(2), &v));
        assert_eq!(d.read(Entry(2)), Some(v));
        assert_eq!((d.packets(Entry(2)), d.flags(Entry(2))), (Some(7), Some(3)));
        assert!(!d.write(Entry(4), &v));
        assert_eq!(d.read(Entry(4)), None);
    }
}
