//! Where the program finds a relay socket's direction (`forward.bpf.c`): `anchor_port`, an
//! array with one cell per relay address slot and port of the relay's range, holding the
//! entry number + 1 (0: none), or, for the sockets of an address beyond the slots,
//! `anchor_fwd`, a hash from the socket to the entry number.
//!
//! The array is mapped into the relay's memory (`BPF_F_MMAPABLE`): a worker keys a direction
//! with one atomic store (after it wrote the entry) and unkeys it with another, no system
//! call; the program reads the cell with one load instead of hashing the key and walking a
//! bucket. Each cell belongs to one relay socket, so to one worker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::abi::FwdKey;
use super::mapped::Mapped;

/// Address slots per family (`ANCHOR_SLOTS` in `forward.bpf.c`).
pub const SLOTS: usize = 8;

/// The relay addresses that have slots, and the port range: a key's cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    /// IPv4 slots first (0..), then IPv6 (v4.len()..).
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub port_min: u16,
    pub ports: u32,
}

impl Slots {
    /// The first [`SLOTS`] distinct, specified addresses of each family among `locals`, and
    /// the media port range `ports` (inclusive).
    pub fn new(locals: &[IpAddr], (port_min, port_max): (u16, u16)) -> Slots {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ip in locals.iter().filter(|ip| !ip.is_unspecified()) {
            match ip {
                IpAddr::V4(a) if v4.len() < SLOTS && !v4.contains(a) => v4.push(*a),
                IpAddr::V6(a)
                    if a.to_ipv4_mapped().is_none() && v6.len() < SLOTS && !v6.contains(a) =>
                {
                    v6.push(*a)
                }
                _ => {}
            }
        }
        let ports = u32::from(port_max.saturating_sub(port_min)) + 1;
        Slots {
            v4,
            v6,
            port_min,
            ports,
        }
    }

    /// Cells of `anchor_port` (at least 1: an array has one).
    pub fn cells(&self) -> u32 {
        ((self.v4.len() + self.v6.len()) as u32 * self.ports).max(1)
    }

    /// The cell of `key` (16-byte address, IPv4 mapped; port in network order), or `None`
    /// when its address has no slot or its port is outside the range.
    pub fn cell(&self, key: &FwdKey) -> Option<u32> {
        let addr = Ipv6Addr::from(key.addr);
        let slot = match addr.to_ipv4_mapped() {
            Some(a) => self.v4.iter().position(|s| *s == a)?,
            None => self.v4.len() + self.v6.iter().position(|s| *s == addr)?,
        };
        let port = u16::from_be(key.port).checked_sub(self.port_min)?;
        if u32::from(port) >= self.ports {
            return None;
        }
        Some(slot as u32 * self.ports + u32::from(port))
    }

    /// The IPv4 slots as the program's `anchor_addrs4` (network order).
    pub fn addrs4(&self) -> [u32; SLOTS] {
        let mut out = [0; SLOTS];
        for (o, a) in out.iter_mut().zip(&self.v4) {
            *o = u32::from_ne_bytes(a.octets());
        }
        out
    }

    /// The IPv6 slots as the program's `anchor_addrs6` (four words each, in memory order).
    pub fn addrs6(&self) -> [u32; SLOTS * 4] {
        let mut out = [0; SLOTS * 4];
        for (o, a) in out.chunks_mut(4).zip(&self.v6) {
            for (w, b) in o.iter_mut().zip(a.octets().chunks(4)) {
                *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        out
    }
}

/// Bytes from one cell to the next in the mapping: an array map rounds its values up to 8
/// bytes (the cell is the first 4).
const STRIDE: usize = 8;

/// `anchor_port` as mapped: `len` cells of u32, [`STRIDE`] bytes apart.
pub struct PortCells {
    mem: Mapped,
    len: u32,
}

impl PortCells {
    /// Maps the array `fd` of `len` u32 cells, read and write.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: u32) -> std::io::Result<PortCells> {
        let mem = Mapped::map(fd, len as usize * STRIDE)?;
        Ok(PortCells { mem, len })
    }

    /// `len` empty cells on the heap, standing in for the kernel's (tests).
    #[cfg(test)]
    pub fn on_heap(len: u32) -> PortCells {
        PortCells {
            mem: Mapped::on_heap(len as usize * STRIDE),
            len,
        }
    }

    fn at(&self, cell: u32) -> Option<&AtomicU32> {
        if cell >= self.len {
            return None;
        }
        // SAFETY: cell < len, so the byte offset cell * STRIDE is inside the live mapping (or
        // heap) of len * STRIDE bytes, 4-aligned (the mapping is page aligned, STRIDE 8).
        Some(unsafe {
            &*self
                .mem
                .base::<u8>()
                .as_ptr()
                .add(cell as usize * STRIDE)
                .cast::<AtomicU32>()
        })
    }

    /// Cell `cell`'s value (entry number + 1, 0: none).
    pub fn get(&self, cell: u32) -> Option<u32> {
        self.at(cell).map(|c| c.load(Ordering::Acquire))
    }
}

/// A worker's keys: the shared cells, and its handle on the hash for addresses beyond them.
pub struct Keys {
    slots: Arc<Slots>,
    cells: Arc<PortCells>,
    hash: Option<aya::maps::HashMap<aya::maps::MapData, FwdKey, u32>>,
}

/// Why a key could not be set.
#[derive(Debug)]
pub enum KeyError {
    /// Its cell is outside the array (cannot happen with the loader's sizes).
    Cell,
    /// No hash handle (tests), or the hash refused it.
    Hash(String),
}

impl Keys {
    pub fn new(
        slots: Arc<Slots>,
        cells: Arc<PortCells>,
        hash: Option<aya::maps::HashMap<aya::maps::MapData, FwdKey, u32>>,
    ) -> Keys {
        Keys { slots, cells, hash }
    }

    /// Keys `key` to entry number `entry` (written before: the store publishes it).
    pub fn insert(&mut self, key: FwdKey, entry: u32, flags: u64) -> Result<(), KeyError> {
        match self.slots.cell(&key) {
            Some(cell) => {
                let c = self.cells.at(cell).ok_or(KeyError::Cell)?;
                c.store(entry.wrapping_add(1), Ordering::Release);
                Ok(())
            }
            None => match self.hash.as_mut() {
                Some(h) => h
                    .insert(key, entry, flags)
                    .map_err(|e| KeyError::Hash(e.to_string())),
                None => Err(KeyError::Hash("no hash".into())),
            },
        }
    }

    /// Removes `key`: the program stops using its entry.
    pub fn remove(&mut self, key: &FwdKey) -> Result<(), KeyError> {
        match self.slots.cell(key) {
            Some(cell) => {
                let c = self.cells.at(cell).ok_or(KeyError::Cell)?;
                c.store(0, Ordering::Release);
                Ok(())
            }
            None => match self.hash.as_mut() {
                Some(h) => h.remove(key).map_err(|e| KeyError::Hash(e.to_string())),
                None => Err(KeyError::Hash("no hash".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: IpAddr, port: u16) -> FwdKey {
        let addr = match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        FwdKey {
            addr,
            port: port.to_be(),
            pad: 0,
        }
    }

    #[test]
    fn each_address_and_port_has_its_own_cell() {
        let locals: Vec<IpAddr> = vec![
            "127.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
        ];
        let s = Slots::new(&locals, (1000, 1099));
        assert_eq!(s.v4.len(), 2);
        assert_eq!(s.v6.len(), 1);
        assert_eq!(s.cells(), 300);
        assert_eq!(s.cell(&key(locals[0], 1000)), Some(0));
        assert_eq!(s.cell(&key(locals[0], 1099)), Some(99));
        assert_eq!(s.cell(&key(locals[2], 1000)), Some(100));
        assert_eq!(s.cell(&key(locals[1], 1005)), Some(205));
        assert_eq!(s.cell(&key(locals[0], 999)), None);
        assert_eq!(s.cell(&key(locals[0], 1100)), None);
        assert_eq!(s.cell(&key("127.0.0.3".parse().unwrap(), 1000)), None);
        assert_eq!(s.addrs4()[1], u32::from_ne_bytes([127, 0, 0, 2]));
        assert_eq!(s.addrs6()[3], u32::from_ne_bytes([0, 0, 0, 1]));
    }

    #[test]
    fn beyond_the_slots_keys_go_to_the_hash() {
        let locals: Vec<IpAddr> = (1..=9).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        let s = Arc::new(Slots::new(&locals, (1000, 1009)));
        assert_eq!(s.cells(), 80);
        let cells = Arc::new(PortCells::on_heap(s.cells()));
        let mut keys = Keys::new(s.clone(), cells.clone(), None);
        keys.insert(key(locals[7], 1003), 41, 0).unwrap();
        keys.insert(key(locals[7], 1004), 7, 0).unwrap();
        assert_eq!(cells.get(73), Some(42));
        assert_eq!(cells.get(74), Some(8));
        keys.remove(&key(locals[7], 1003)).unwrap();
        assert_eq!(cells.get(73), Some(0));
        // The ninth address has no slot: the hash, which this test has not.
        assert!(keys.insert(key(locals[8], 1003), 1, 0).is_err());
    }
}
