//! Which ring a new stream goes to (sans-IO: counts only). Worker threads take streams in
//! turn, for an even load across cores. Within a thread, the first ring takes streams while
//! its fixed-file table has room or the process has descriptors to spare (a socket beyond the
//! table keeps its descriptor, which costs no more per packet here); the next ring opens only
//! when the first is full, since every ring that carries packets adds its own enters and
//! wake-ups (~10% more per packet with two busy rings on one thread, 60k packets/s).
//!
//! Every socket starts as a descriptor (bound on the control thread) until its worker moves
//! it into a table; sockets still waiting for that count against the spare descriptors too.
//! What the budget leaves free absorbs a worker that falls behind a burst of offers.

/// Sockets per stream when it opens: RTP and RTCP on each side (a side whose endpoint
/// muxes RTCP closes its RTCP socket once the answer settles it, see `DataPlane`).
pub const SOCKETS_PER_STREAM: usize = 4;

pub struct Placement {
    threads: usize,
    rings_per_thread: usize,
    /// Fixed-file table size of every ring (0: sockets stay descriptors).
    fixed: usize,
    /// Media sockets that may be held as descriptors, process-wide.
    descriptor_budget: usize,
    /// Sockets per ring, thread after thread.
    sockets: Vec<usize>,
    next_thread: usize,
}

impl Placement {
    pub fn new(
        threads: usize,
        rings_per_thread: usize,
        fixed: usize,
        descriptor_budget: usize,
    ) -> Placement {
        let threads = threads.max(1);
        let rings_per_thread = rings_per_thread.max(1);
        Placement {
            threads,
            rings_per_thread,
            fixed,
            descriptor_budget,
            sockets: vec![0; threads * rings_per_thread],
            next_thread: 0,
        }
    }

    /// Media sockets beyond the rings' tables, which hold a descriptor each.
    pub fn descriptor_sockets(&self) -> usize {
        self.sockets
            .iter()
            .map(|&n| n.saturating_sub(self.fixed))
            .sum()
    }

    /// Sockets placed where a table has room for them.
    pub fn table_sockets(&self) -> usize {
        self.sockets.iter().map(|&n| n.min(self.fixed)).sum()
    }

    /// Picks the ring (index over all rings, thread after thread) for a new stream and
    /// counts its sockets there. `unfixed`: sockets placed in a table's room that their
    /// worker has not moved there yet (still descriptors).
    pub fn place(&mut self, unfixed: usize) -> usize {
        let n = SOCKETS_PER_STREAM;
        let thread = self.next_thread % self.threads;
        self.next_thread = self.next_thread.wrapping_add(1);
        let first = thread * self.rings_per_thread;
        let rings = first..first + self.rings_per_thread;
        let spare = self.descriptor_sockets() + unfixed + n <= self.descriptor_budget;
        let ring = rings
            .clone()
            .find(|&k| spare || self.sockets[k] + n <= self.fixed)
            // Every table full and no descriptors to spare: the sockets are bound already,
            // so they go where the fewest are.
            .or_else(|| rings.min_by_key(|&k| self.sockets[k]))
            .unwrap_or(first);
        self.sockets[ring] += n;
        ring
    }

    /// `sockets` sockets on `ring` were closed (a stream ended, or a side's RTCP socket
    /// closed because it muxes).
    pub fn remove(&mut self, ring: usize, sockets: usize) {
        if let Some(n) = self.sockets.get_mut(ring) {
            *n = n.saturating_sub(sockets);
        }
    }

    /// A socket was bound again on `ring` (a side's RTCP socket, after a re-offer without
    /// mux).
    pub fn add(&mut self, ring: usize) {
        if let Some(n) = self.sockets.get_mut(ring) {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_streams_in_turn() {
        let mut p = Placement::new(3, 1, 20_000, 1_000);
        let got: Vec<usize> = (0..7).map(|_| p.place(0)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn the_first_ring_fills_its_table_then_spare_descriptors_before_the_next_opens() {
        // One thread, two rings of 8 fixed sockets, 8 descriptors to spare.
        let mut p = Placement::new(1, 2, 8, 8);
        let got: Vec<usize> = (0..6).map(|_| p.place(0)).collect();
        // 2 streams fill ring 0's table, 2 more its spare descriptors, then ring 1.
        assert_eq!(got, [0, 0, 0, 0, 1, 1]);
        assert_eq!(p.descriptor_sockets(), 8);
        // Ring 1's table is full and no descriptor is spare: the least loaded ring.
        assert_eq!(p.place(0), 1);
        assert_eq!(p.descriptor_sockets(), 12);
        // A stream of ring 0 ends: its room is taken again before ring 1's.
        p.remove(0, SOCKETS_PER_STREAM);
        p.remove(1, SOCKETS_PER_STREAM);
        assert_eq!(p.descriptor_sockets(), 4);
        assert_eq!(p.place(0), 0);
        assert_eq!(p.descriptor_sockets(), 8);
    }

    #[test]
    fn sockets_not_yet_in_a_table_count_as_descriptors() {
        let mut p = Placement::new(1, 2, 8, 8);
        assert_eq!([p.place(0), p.place(0)], [0, 0]);
        assert_eq!(p.table_sockets(), 8);
        // The worker has fixed 2 of ring 0's 8: 6 descriptors, no room for 4 more.
        assert_eq!(p.place(6), 1);
        // Once it has fixed them all, ring 0 takes descriptors again.
        assert_eq!(p.place(0), 0);
        assert_eq!(p.descriptor_sockets(), 4);
    }

    #[test]
    fn without_spare_descriptors_rings_fill_table_by_table() {
        let mut p = Placement::new(2, 3, 4, 0);
        // Threads in turn; within each, one stream fills a table of 4.
        let got: Vec<usize> = (0..6).map(|_| p.place(0)).collect();
        assert_eq!(got, [0, 3, 1, 4, 2, 5]);
        assert_eq!(p.descriptor_sockets(), 0);
    }

    #[test]
    fn the_benchmark_at_ten_thousand_calls_keeps_most_on_one_ring() {
        // This VM: a descriptor limit of 20,000, 1/4 kept free, one worker with two rings.
        let mut p = Placement::new(1, 2, 20_000, 20_000 - 5_000);
        let mut per_ring = [0usize; 2];
        for _ in 0..10_000 {
            per_ring[p.place(0)] += 1;
        }
        assert_eq!(per_ring, [8_750, 1_250]);
    }
}
