//! Gathering datagrams for one UDP GSO send (`UDP_SEGMENT`). Within one batch of completions,
//! datagrams that leave through the same relay socket for the same destination one after
//! another (a video frame is a burst of equal-size RTP packets) go to the kernel as one send
//! that it cuts into the original datagrams: one trip through the UDP/IP send path instead of
//! one per packet. Receivers see exactly the datagrams they would have seen otherwise.
//!
//! The kernel's rules: every segment has the size of the first except the last, which may be
//! shorter; at most `UDP_MAX_SEGMENTS` (64) segments and 64 KiB in all; a segment must fit
//! the path MTU without fragmenting (a send that breaks a rule fails as a whole, and the
//! engine then resends its datagrams one by one).
#![forbid(unsafe_code)]

use std::net::SocketAddr;

/// Segments per send (the kernel allows 64).
pub const MAX_SEGMENTS: usize = 32;
/// Largest datagram that is gathered. Above this a 1500-byte path could refuse the segment
/// size (IPv6 + UDP headers take 48 bytes; tunnels take more); bigger datagrams go alone,
/// and fragment as usual.
pub const MAX_SEGMENT_LEN: usize = 1200;

/// Where a datagram leaves: the relay socket (slot) and the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub slot: u32,
    pub dst: SocketAddr,
}

/// Datagrams that leave together; `ids` are the engine's buffer ids, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub route: Route,
    /// Size of every segment but the last.
    pub seg_len: u16,
    pub count: u8,
    pub ids: [u16; MAX_SEGMENTS],
}

impl Default for Group {
    fn default() -> Group {
        Group {
            route: Route {
                slot: 0,
                dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            seg_len: 0,
            count: 0,
            ids: [0; MAX_SEGMENTS],
        }
    }
}

impl Group {
    fn new(route: Route, len: usize, id: u16) -> Group {
        let mut ids = [0; MAX_SEGMENTS];
        ids[0] = id;
        Group {
            route,
            seg_len: u16::try_from(len).unwrap_or(u16::MAX),
            count: 1,
            ids,
        }
    }

    pub fn ids(&self) -> &[u16] {
        &self.ids[..usize::from(self.count)]
    }

    /// Whether this group can take more: a short (last) segment closes it, as does a size
    /// over [`MAX_SEGMENT_LEN`] (never gathered).
    fn open(&self, last_len: usize) -> bool {
        usize::from(self.seg_len) <= MAX_SEGMENT_LEN
            && last_len == usize::from(self.seg_len)
            && usize::from(self.count) < MAX_SEGMENTS
    }
}

/// Holds the group being gathered. Sans-IO: the engine feeds it datagrams in the order it
/// forwards them and sends each group it hands back.
#[derive(Debug)]
pub struct Gatherer {
    open: Option<(Group, usize)>,
    enabled: bool,
}

impl Gatherer {
    /// A gatherer that makes groups of one when `enabled` is false (no GSO).
    pub fn new(enabled: bool) -> Gatherer {
        Gatherer {
            open: None,
            enabled,
        }
    }

    /// Adds a datagram of `len` bytes (buffer `id`) bound for `route`. Returns the group it
    /// closed, if it could not join it; send that one first.
    pub fn push(&mut self, route: Route, len: usize, id: u16) -> Option<Group> {
        if let Some((g, last_len)) = self.open.as_mut() {
            if self.enabled
                && g.route == route
                && g.open(*last_len)
                && len <= usize::from(g.seg_len)
                && len > 0
            {
                g.ids[usize::from(g.count)] = id;
                g.count += 1;
                *last_len = len;
                return None;
            }
        }
        self.open
            .replace((Group::new(route, len, id), len))
            .map(|(g, _)| g)
    }

    /// The group being gathered, if any (at the end of a batch).
    pub fn take(&mut self) -> Option<Group> {
        self.open.take().map(|(g, _)| g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(slot: u32, port: u16) -> Route {
        Route {
            slot,
            dst: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Feeds (route, len) pairs with ids 0.., returns the groups as (slot, seg_len, ids).
    fn run(input: &[(Route, usize)]) -> Vec<(u32, u16, Vec<u16>)> {
        let mut g = Gatherer::new(true);
        let mut out = Vec::new();
        for (i, &(r, len)) in input.iter().enumerate() {
            out.extend(g.push(r, len, i as u16));
        }
        out.extend(g.take());
        out.into_iter()
            .map(|g| (g.route.slot, g.seg_len, g.ids().to_vec()))
            .collect()
    }

    #[test]
    fn equal_datagrams_for_one_route_go_together() {
        let r = route(1, 5000);
        assert_eq!(
            run(&[(r, 172), (r, 172), (r, 172)]),
            vec![(1, 172, vec![0, 1, 2])]
        );
    }

    #[test]
    fn a_shorter_datagram_ends_the_group() {
        let r = route(1, 5000);
        assert_eq!(
            run(&[(r, 1000), (r, 1000), (r, 300), (r, 1000)]),
            vec![(1, 1000, vec![0, 1, 2]), (1, 1000, vec![3])]
        );
    }

    #[test]
    fn a_longer_datagram_starts_a_new_group() {
        let r = route(1, 5000);
        assert_eq!(
            run(&[(r, 100), (r, 200), (r, 200)]),
            vec![(1, 100, vec![0]), (1, 200, vec![1, 2])]
        );
    }

    #[test]
    fn another_socket_or_destination_starts_a_new_group() {
        let (a, b, c) = (route(1, 5000), route(2, 5000), route(1, 5002));
        assert_eq!(
            run(&[(a, 172), (b, 172), (b, 172), (c, 172), (a, 172)]),
            vec![
                (1, 172, vec![0]),
                (2, 172, vec![1, 2]),
                (1, 172, vec![3]),
                (1, 172, vec![4])
            ]
        );
    }

    #[test]
    fn disabled_it_makes_groups_of_one() {
        let r = route(1, 5000);
        let mut g = Gatherer::new(false);
        let mut out = Vec::new();
        for i in 0..5 {
            out.extend(g.push(r, 172, i));
        }
        out.extend(g.take());
        let ids: Vec<Vec<u16>> = out.iter().map(|g| g.ids().to_vec()).collect();
        assert_eq!(ids, vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn groups_stop_at_the_segment_limit() {
        let r = route(3, 6000);
        let input = vec![(r, 172); MAX_SEGMENTS + 5];
        let groups = run(&input);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].2.len(), MAX_SEGMENTS);
        assert_eq!(
            groups[1].2,
            (MAX_SEGMENTS as u16..MAX_SEGMENTS as u16 + 5).collect::<Vec<_>>()
        );
    }

    #[test]
    fn large_or_empty_datagrams_go_alone() {
        let r = route(1, 5000);
        let big = MAX_SEGMENT_LEN + 1;
        assert_eq!(
            run(&[(r, big), (r, big), (r, 0), (r, 0)]),
            vec![
                (1, big as u16, vec![0]),
                (1, big as u16, vec![1]),
                (1, 0, vec![2]),
                (1, 0, vec![3])
            ]
        );
    }

    #[test]
    fn every_datagram_comes_out_once_in_order() {
        // A deterministic mix of routes and sizes: the concatenated groups are the input.
        let routes = [route(1, 5000), route(2, 5000), route(1, 5002)];
        let mut x = 12345u32;
        let mut r = routes[0];
        let input: Vec<(Route, usize)> = (0..2000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Runs: a new route one time in four.
                if (x >> 20) % 4 == 0 {
                    r = routes[(x >> 16) as usize % 3];
                }
                let len = [172, 172, 172, 172, 80, 1300][(x >> 8) as usize % 6];
                (r, len)
            })
            .collect();
        let groups = run(&input);
        assert!(
            groups.iter().any(|g| g.2.len() > 2),
            "the mix has runs to gather"
        );
        let ids: Vec<u16> = groups.iter().flat_map(|g| g.2.clone()).collect();
        assert_eq!(ids, (0..2000).collect::<Vec<u16>>());
        for (slot, seg_len, ids) in &groups {
            let lens: Vec<usize> = ids.iter().map(|&i| input[usize::from(i)].1).collect();
            assert!(lens[..lens.len() - 1]
                .iter()
                .all(|&l| l == usize::from(*seg_len)));
            assert!(*lens.last().unwrap() <= usize::from(*seg_len));
            assert!(ids.iter().all(|&i| input[usize::from(i)].0.slot == *slot));
            assert!(ids.len() == 1 || usize::from(*seg_len) <= MAX_SEGMENT_LEN);
        }
    }
}
