//! A relay address a media end is bound on, in one byte: a number in a process-wide table of
//! the relay's own addresses (its `--interface` addresses, and any a restored call names).
//! A media end keeps one per side; as an `Option<IpAddr>` it took 17 bytes and a media line
//! 32 more (memory per held call, issue 19).
//!
//! The table only grows and holds at most [`LocalIp::CAPACITY`] addresses; an address past
//! that is kept as none (the backend's default address), which the relay's own address list
//! never reaches. Entries are set once each ([`OnceLock`]): no lock, and a reader never sees
//! one change.

use std::net::IpAddr;
use std::sync::OnceLock;

/// A relay address by its number in the table; `NONE` is no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalIp(u8);

impl Default for LocalIp {
    fn default() -> LocalIp {
        LocalIp::NONE
    }
}

static TABLE: [OnceLock<IpAddr>; LocalIp::CAPACITY] =
    [const { OnceLock::new() }; LocalIp::CAPACITY];

impl LocalIp {
    /// No address.
    pub const NONE: LocalIp = LocalIp(u8::MAX);
    /// Distinct addresses the table holds.
    pub const CAPACITY: usize = u8::MAX as usize;

    /// The number of `ip`, taking the first free one when it has none yet (`NONE` when the
    /// table is full).
    pub fn of(ip: IpAddr) -> LocalIp {
        for (i, cell) in TABLE.iter().enumerate() {
            let n = LocalIp(u8::try_from(i).unwrap_or(u8::MAX));
            match cell.get() {
                Some(known) if *known == ip => return n,
                Some(_) => {}
                // Another thread may take this cell first, for its address or this one:
                // then look at what it holds.
                None => match cell.set(ip) {
                    Ok(()) => return n,
                    Err(_) if cell.get() == Some(&ip) => return n,
                    Err(_) => {}
                },
            }
        }
        LocalIp::NONE
    }

    pub fn from_option(ip: Option<IpAddr>) -> LocalIp {
        ip.map_or(LocalIp::NONE, LocalIp::of)
    }

    /// The address (`None` for `NONE`).
    pub fn get(self) -> Option<IpAddr> {
        TABLE
            .get(usize::from(self.0))
            .and_then(|c| c.get())
            .copied()
    }

    pub fn is_some(self) -> bool {
        self != LocalIp::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_their_numbers() {
        let a: IpAddr = [127, 0, 0, 201].into();
        let b: IpAddr = "::1".parse().unwrap();
        let (na, nb) = (LocalIp::of(a), LocalIp::of(b));
        assert_ne!(na, nb);
        assert_eq!(LocalIp::of(a), na);
        assert_eq!((na.get(), nb.get()), (Some(a), Some(b)));
        assert_eq!(LocalIp::NONE.get(), None);
        assert_eq!(LocalIp::from_option(None), LocalIp::NONE);
        assert_eq!(LocalIp::default(), LocalIp::NONE);
        assert_eq!(std::mem::size_of::<LocalIp>(), 1);
    }

    #[test]
    fn threads_agree_on_a_number() {
        let ip: IpAddr = [127, 0, 0, 202].into();
        let got: Vec<LocalIp> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(|| LocalIp::of(ip))).collect();
            hs.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|n| *n == got[0] && n.get() == Some(ip)));
    }
}
