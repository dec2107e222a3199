//! Port-pair allocator: RTP on an even port, RTCP on the next odd one (RFC 3550 §11).
//!
//! Pure bookkeeping; binding the sockets happens at the edge (`dataplane::sockets`). Pairs
//! come from a FIFO free list, so a freed pair goes to the back and is handed out again as
//! late as possible (a stray late packet for an old call then hits an unused port instead of
//! a new call). Allocation and release are O(1). A pair that could not be bound (another
//! program holds it: the kernel's ephemeral range 32768-60999 overlaps typical relay
//! ranges) is passed back with [`PortAllocator::skip`] and goes to the back of the queue too.

use std::collections::VecDeque;

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
}

#[derive(Debug)]
pub struct PortAllocator {
    free: VecDeque<u16>,
    in_use: Vec<bool>,
    base: u16,
    total: usize,
}

impl PortAllocator {
    /// Pairs `(p, p+1)` with `p` even and both inside `min..=max`.
    pub fn new(min: u16, max: u16) -> Result<Self, PortError> {
        // Port 0 is not a port; start at the first even port >= max(min, 2).
        let min = min.max(2);
        let first = if min % 2 == 0 {
            min
        } else {
            min.saturating_add(1)
        };
        let mut free = VecDeque::new();
        let mut p = u32::from(first);
        while p < u32::from(max) {
            free.push_back(p as u16);
            p += 2;
        }
        if free.is_empty() {
            return Err(PortError::BadRange(min, max));
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
}
