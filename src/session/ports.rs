//! Port-pair allocator: RTP on an even port, RTCP on the next odd one (RFC 3550 §11).
//!
//! Pure bookkeeping; binding the sockets happens at the edge (`dataplane::sockets`). Pairs
//! come from a FIFO free list, so a freed pair goes to the back and is handed out again as
//! late as possible (a stray late packet for an old call then hits an unused port instead of
//! a new call). Allocation and release are O(1). A pair that could not be bound (another
//! program holds it: the kernel's ephemeral range 32768-60999 overlaps typical relay
//! ranges) is passed back with [`PortAllocator::skip`] and goes to the back of the queue too.

use std::collections::VecDeque;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortPair {
    pub rtp: u16,
}

impl PortPair {
    pub fn rtcp(self) -> u16 {
        self.rtp + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// rtpengine's wording, which Kamailio's module recognises to fail over to another node.
    #[error("Ran out of ports")]
    Exhausted,
    #[error("invalid port range {0}-{1}: need at least one even/odd pair")]
    BadRange(u16, u16),
    /// A specific pair was asked for (a restored call) and is outside the range or in use.
    #[error("port pair {0} is outside the range or in use")]
    Unavailable(u16),
    /// Ports were asked for on an address that is none of the relay's interfaces.
    #[error("{0} is not a media interface address")]
    NoSuchAddress(IpAddr),
}

#[derive(Debug)]
pub struct PortAllocator {
    free: VecDeque<u16>,
    in_use: Vec<bool>,
    base: u16,
    total: usize,
}

/// The first RTP port of `min..=max`: even, and port 0 is not a port.
fn first_even(min: u16) -> u16 {
    let min = min.max(2);
    if min % 2 == 0 {
        min
    } else {
        min.saturating_add(1)
    }
}

/// How many pairs `(p, p+1)`, `p` even, fit inside `min..=max`.
pub fn pairs_in_range(min: u16, max: u16) -> usize {
    let first = usize::from(first_even(min));
    let max = usize::from(max);
    if first < max {
        (max - first).div_ceil(2)
    } else {
        0
    }
}

impl PortAllocator {
    /// Pairs `(p, p+1)` with `p` even and both inside `min..=max`.
    pub fn new(min: u16, max: u16) -> Result<Self, PortError> {
        let first = first_even(min);
        let mut free = VecDeque::new();
        let mut p = u32::from(first);
        while p < u32::from(max) {
            free.push_back(p as u16);
            p += 2;
        }
        if free.is_empty() {
            return Err(PortError::BadRange(min.max(2), max));
        }
        let total = free.len();
        Ok(PortAllocator {
            free,
            in_use: vec![false; total],
            base: first,
            total,
        })
    }

    fn index(&self, rtp: u16) -> Option<usize> {
        let off = rtp.checked_sub(self.base)?;
        if off % 2 != 0 {
            return None;
        }
        let i = usize::from(off / 2);
        (i < self.total).then_some(i)
    }

    /// Next candidate pair, marked in use.
    pub fn allocate(&mut self) -> Result<PortPair, PortError> {
        let rtp = self.free.pop_front().ok_or(PortError::Exhausted)?;
        if let Some(i) = self.index(rtp) {
            self.in_use[i] = true;
        }
        Ok(PortPair { rtp })
    }

    /// Takes a specific pair (a call restored from the state store). O(free pairs): only
    /// used at start.
    pub fn claim(&mut self, pair: PortPair) -> Result<(), PortError> {
        let i = self
            .index(pair.rtp)
            .ok_or(PortError::Unavailable(pair.rtp))?;
        if self.in_use[i] {
            return Err(PortError::Unavailable(pair.rtp));
        }
        if let Some(pos) = self.free.iter().position(|&p| p == pair.rtp) {
            self.free.remove(pos);
        }
        self.in_use[i] = true;
        Ok(())
    }

    /// A pair from [`allocate`](Self::allocate) that could not be bound: back of the queue.
    pub fn skip(&mut self, pair: PortPair) {
        self.release(pair);
    }

    /// Returns a pair. Releasing a pair twice, or one not from this range, is ignored.
    pub fn release(&mut self, pair: PortPair) {
        if let Some(i) = self.index(pair.rtp) {
            if self.in_use[i] {
                self.in_use[i] = false;
                self.free.push_back(pair.rtp);
            }
        }
    }

    pub fn is_in_use(&self, pair: PortPair) -> bool {
        self.index(pair.rtp).is_some_and(|i| self.in_use[i])
    }

    pub fn total_pairs(&self) -> usize {
        self.total
    }

    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }

    pub fn used_pairs(&self) -> usize {
        self.total - self.free.len()
    }
}

/// One local address's pool in [`AddressPorts`], by position (configuration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressId(u16);

/// Port pairs in use and in all, on one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressUsage {
    pub addr: IpAddr,
    pub used_pairs: usize,
    pub total_pairs: usize,
}

/// Most addresses [`AddressPorts`] keeps a pool for (each holds the whole range: ~100 kB at
/// 32,000 pairs).
pub const MAX_ADDRESSES: usize = 256;

/// The port pairs of every local media address, each address with the whole range to itself:
/// relay sockets are bound to an address, not to the wildcard, so a port in use on 10.0.0.1
/// is free on 10.0.0.2, and a name with several addresses has that many times the ports.
/// Finding an address's pool is a scan of the (few) addresses; the rest is
/// [`PortAllocator`]'s O(1).
#[derive(Debug)]
pub struct AddressPorts {
    pools: Vec<(IpAddr, PortAllocator)>,
    min: u16,
    max: u16,
    per_address: usize,
}

impl AddressPorts {
    /// A pool of `min..=max` for each of `addrs` (an address given twice gets one).
    pub fn new(addrs: &[IpAddr], min: u16, max: u16) -> Result<Self, PortError> {
        // Checks the range even without addresses.
        let per_address = PortAllocator::new(min, max)?.total_pairs();
        let mut ports = AddressPorts {
            pools: Vec::with_capacity(addrs.len()),
            min,
            max,
            per_address,
        };
        for &a in addrs {
            ports.add(a)?;
        }
        Ok(ports)
    }

    /// The pool of `addr`, made if it has none (at most [`MAX_ADDRESSES`]).
    pub fn add(&mut self, addr: IpAddr) -> Result<AddressId, PortError> {
        if let Some(id) = self.find(addr) {
            return Ok(id);
        }
        let n = u16::try_from(self.pools.len())
            .ok()
            .filter(|n| usize::from(*n) < MAX_ADDRESSES)
            .ok_or(PortError::NoSuchAddress(addr))?;
        self.pools
            .push((addr, PortAllocator::new(self.min, self.max)?));
        Ok(AddressId(n))
    }

    /// The pool of `addr`, if it has one.
    pub fn find(&self, addr: IpAddr) -> Option<AddressId> {
        let n = self.pools.iter().position(|(a, _)| *a == addr)?;
        u16::try_from(n).ok().map(AddressId)
    }

    fn pool(&mut self, id: AddressId) -> Option<&mut PortAllocator> {
        self.pools.get_mut(usize::from(id.0)).map(|(_, p)| p)
    }

    pub fn addr(&self, id: AddressId) -> Option<IpAddr> {
        self.pools.get(usize::from(id.0)).map(|(a, _)| *a)
    }

    /// Next candidate pair on `addr`, marked in use. Returns the pool it came from (to
    /// release it to).
    pub fn allocate(&mut self, addr: IpAddr) -> Result<(AddressId, PortPair), PortError> {
        let id = self.find(addr).ok_or(PortError::NoSuchAddress(addr))?;
        let pair = self
            .pool(id)
            .ok_or(PortError::NoSuchAddress(addr))?
            .allocate()?;
        Ok((id, pair))
    }

    /// Takes a specific pair on `addr` (a restored call).
    pub fn claim(&mut self, addr: IpAddr, pair: PortPair) -> Result<AddressId, PortError> {
        let id = self.find(addr).ok_or(PortError::NoSuchAddress(addr))?;
        self.pool(id)
            .ok_or(PortError::NoSuchAddress(addr))?
            .claim(pair)?;
        Ok(id)
    }

    /// Takes both sides' pairs of a restored stream, or neither.
    pub fn claim_both(
        &mut self,
        [a_ip, b_ip]: [IpAddr; 2],
        [a, b]: [PortPair; 2],
    ) -> Result<[AddressId; 2], PortError> {
        let a_pool = self.claim(a_ip, a)?;
        match self.claim(b_ip, b) {
            Ok(b_pool) => Ok([a_pool, b_pool]),
            Err(e) => {
                self.release(a_pool, a);
                Err(e)
            }
        }
    }

    /// A pair that could not be bound: back of its address's queue.
    pub fn skip(&mut self, id: AddressId, pair: PortPair) {
        self.release(id, pair);
    }

    /// Returns a pair to its address's pool (twice, or an unknown pool: ignored).
    pub fn release(&mut self, id: AddressId, pair: PortPair) {
        if let Some(p) = self.pool(id) {
            p.release(pair);
        }
    }

    pub fn is_in_use(&self, id: AddressId, pair: PortPair) -> bool {
        self.pools
            .get(usize::from(id.0))
            .is_some_and(|(_, p)| p.is_in_use(pair))
    }

    /// Free pairs on one address (0 for an unknown pool).
    pub fn free_pairs_of(&self, id: AddressId) -> usize {
        self.pools
            .get(usize::from(id.0))
            .map_or(0, |(_, p)| p.free_pairs())
    }

    /// Each address's figures, in the order the addresses were added.
    pub fn usage(&self) -> Vec<AddressUsage> {
        self.pools
            .iter()
            .map(|(addr, p)| AddressUsage {
                addr: *addr,
                used_pairs: p.used_pairs(),
                total_pairs: p.total_pairs(),
            })
            .collect()
    }

    /// Pairs in use on all addresses.
    pub fn used_pairs(&self) -> usize {
        self.pools.iter().map(|(_, p)| p.used_pairs()).sum()
    }

    /// Pairs on all addresses.
    pub fn total_pairs(&self) -> usize {
        self.pools.iter().map(|(_, p)| p.total_pairs()).sum()
    }

    /// Pairs in the range (on each address).
    pub fn pairs_per_address(&self) -> usize {
        self.per_address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_takes_a_free_pair_once() {
        let mut a = PortAllocator::new(30000, 30009).unwrap();
        assert!(a.claim(PortPair { rtp: 30004 }).is_ok());
        assert_eq!(
            a.claim(PortPair { rtp: 30004 }),
            Err(PortError::Unavailable(30004))
        );
        assert_eq!(
            a.claim(PortPair { rtp: 30005 }),
            Err(PortError::Unavailable(30005))
        );
        assert_eq!(
            a.claim(PortPair { rtp: 40000 }),
            Err(PortError::Unavailable(40000))
        );
        let mut got = Vec::new();
        while let Ok(p) = a.allocate() {
            got.push(p.rtp);
        }
        assert_eq!(got, vec![30000, 30002, 30006, 30008]);
        a.release(PortPair { rtp: 30004 });
        assert_eq!(a.allocate(), Ok(PortPair { rtp: 30004 }));
    }

    #[test]
    fn pairs_are_even_odd_and_inside_range() {
        let mut a = PortAllocator::new(30001, 30008).unwrap();
        assert_eq!(a.total_pairs(), 3); // 30002, 30004, 30006 (30008 has no 30009)
        let p = a.allocate().unwrap();
        assert_eq!((p.rtp, p.rtcp()), (30002, 30003));
        assert_eq!(a.allocate().unwrap().rtp, 30004);
        assert_eq!(a.allocate().unwrap().rtp, 30006);
        assert_eq!(a.allocate(), Err(PortError::Exhausted));
    }

    #[test]
    fn no_reuse_while_in_use_and_fifo_after_release() {
        let mut a = PortAllocator::new(40000, 40005).unwrap();
        let p1 = a.allocate().unwrap();
        let p2 = a.allocate().unwrap();
        assert_ne!(p1, p2);
        a.release(p1);
        a.release(p1); // double release ignored
        assert_eq!(a.free_pairs(), 2);
        let p3 = a.allocate().unwrap();
        assert_eq!(p3.rtp, 40004, "never-used pair comes before the freed one");
        assert!(a.is_in_use(p2) && a.is_in_use(p3) && !a.is_in_use(p1));
        assert_eq!(a.allocate().unwrap(), p1);
        assert_eq!(a.allocate(), Err(PortError::Exhausted));
    }

    #[test]
    fn skipped_pair_goes_to_the_back() {
        let mut a = PortAllocator::new(2000, 2005).unwrap();
        let p = a.allocate().unwrap();
        a.skip(p);
        assert_eq!(a.allocate().unwrap().rtp, 2002);
        assert_eq!(a.allocate().unwrap().rtp, 2004);
        assert_eq!(a.allocate().unwrap().rtp, 2000);
    }

    #[test]
    fn foreign_pairs_are_ignored_and_bad_ranges_rejected() {
        let mut a = PortAllocator::new(2000, 2003).unwrap();
        a.release(PortPair { rtp: 9000 });
        a.release(PortPair { rtp: 2001 });
        assert_eq!(a.free_pairs(), 2);
        assert!(PortAllocator::new(5, 5).is_err());
        assert!(PortAllocator::new(65534, 65535).is_ok());
        assert!(PortAllocator::new(65535, 65535).is_err());
        assert!(PortAllocator::new(0, 1).is_err(), "port 0 is not a port");
        assert_eq!(PortAllocator::new(0, 5).unwrap().allocate().unwrap().rtp, 2);
    }

    #[test]
    fn each_address_has_the_whole_range() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut p = AddressPorts::new(&[a, b, a], 5600, 5603).unwrap();
        assert_eq!((p.used_pairs(), p.total_pairs()), (0, 4));
        let (ia, a1) = p.allocate(a).unwrap();
        let (_, a2) = p.allocate(a).unwrap();
        assert_eq!((a1.rtp, a2.rtp), (5600, 5602));
        assert_eq!(p.allocate(a), Err(PortError::Exhausted));
        // The same numbers are free on the other address.
        let (ib, b1) = p.allocate(b).unwrap();
        assert_ne!(ia, ib);
        assert_eq!(b1.rtp, 5600);
        assert!(p.is_in_use(ia, a1) && p.is_in_use(ib, b1));
        let unknown: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(p.allocate(unknown), Err(PortError::NoSuchAddress(unknown)));
        // Releasing on b leaves a's pair in use.
        p.release(ib, b1);
        assert!(p.is_in_use(ia, a1) && !p.is_in_use(ib, b1));
        assert_eq!(
            p.usage(),
            vec![
                AddressUsage {
                    addr: a,
                    used_pairs: 2,
                    total_pairs: 2
                },
                AddressUsage {
                    addr: b,
                    used_pairs: 0,
                    total_pairs: 2
                },
            ]
        );
        assert_eq!((p.free_pairs_of(ia), p.free_pairs_of(ib)), (0, 2));
        // Both or neither: 5600 on a is taken, so 5602 on b stays free.
        let both = [PortPair { rtp: 5602 }, PortPair { rtp: 5600 }];
        assert_eq!(
            p.claim_both([b, a], both),
            Err(PortError::Unavailable(5600))
        );
        assert_eq!(p.claim(b, PortPair { rtp: 5602 }), Ok(ib));
        assert_eq!(
            p.claim(b, PortPair { rtp: 5602 }),
            Err(PortError::Unavailable(5602))
        );
        assert_eq!(p.pairs_per_address(), 2);
        for (min, max) in [
            (5600, 5603),
            (5601, 5608),
            (0, 5),
            (65534, 65535),
            (7, 7),
            (9, 8),
        ] {
            let n = PortAllocator::new(min, max).map_or(0, |a| a.total_pairs());
            assert_eq!(pairs_in_range(min, max), n, "{min}-{max}");
        }
        assert!(AddressPorts::new(&[a], 7, 7).is_err());
        assert!(AddressPorts::new(&[], 5600, 5603).is_ok());
    }
}
