//! RTP clock rates: the static payload types of RFC 3551 §6 (tables 4 and 5) and a small
//! per-stream map for dynamic types learnt from SDP `a=rtpmap` (RFC 8866 §6.6).

/// Clock rate of a static payload type (RFC 3551 tables 4 and 5), `None` for reserved,
/// unassigned and dynamic (96..=127) types.
#[inline]
pub const fn static_clock_rate_hz(payload_type: u8) -> Option<u32> {
    match payload_type {
        // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722, QCELP, CN, G728, G729. G722 samples at
        // 16 kHz but its RTP clock is 8000 (RFC 3551 §4.5.2 keeps a historical mistake).
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8_000),
        6 => Some(16_000),       // DVI4/16000
        10 | 11 => Some(44_100), // L16 stereo / mono
        16 => Some(11_025),      // DVI4/11025
        17 => Some(22_050),      // DVI4/22050
        // MPA, CelB, JPEG, nv, H261, MPV, MP2T, H263
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90_000),
        _ => None,
    }
}

const MAP_CAPACITY: usize = 8;

/// Compact per-stream map for dynamic payload types learnt from SDP `a=rtpmap` (up to 8
/// entries, fixed size, `Copy`, no heap); lookups fall back to the static table.
///
/// A learnt entry wins over the static table, so an SDP that (against RFC 3551 advice)
/// re-maps a static type is honoured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockRateMap {
    pts: [u8; MAP_CAPACITY],
    rates: [u32; MAP_CAPACITY],
    len: u8,
}

impl ClockRateMap {
    pub const fn new() -> Self {
        ClockRateMap {
            pts: [0; MAP_CAPACITY],
            rates: [0; MAP_CAPACITY],
            len: 0,
        }
    }

    /// Maps `pt` to `hz`, replacing an existing entry for `pt`. Returns false (and changes
    /// nothing) when the map is full, `pt` is not a 7-bit payload type or `hz` is 0.
    pub fn insert(&mut self, pt: u8, hz: u32) -> bool {
        if pt > 127 || hz == 0 {
            return false;
        }
        let len = usize::from(self.len);
        if let Some(i) = self.pts[..len].iter().position(|&p| p == pt) {
            self.rates[i] = hz;
            return true;
        }
        if len == MAP_CAPACITY {
            return false;
        }
        self.pts[len] = pt;
        self.rates[len] = hz;
        self.len += 1;
        true
    }

    /// Learnt clock rate of `pt`, else its static one.
    #[inline]
    pub fn clock_rate_hz(&self, pt: u8) -> Option<u32> {
        learnt_or_static(self.entries(), pt)
    }

    /// Number of learnt entries.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets all learnt entries (e.g. on an SDP renegotiation).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The learnt entries, in the order they were first learnt.
    pub fn entries(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        let len = usize::from(self.len).min(MAP_CAPACITY);
        self.pts[..len]
            .iter()
            .copied()
            .zip(self.rates[..len].iter().copied())
    }
}

/// The rate `learnt` maps `pt` to, else its static one: the one lookup both stores answer
/// with (a learnt entry wins over the static table).
#[inline]
fn learnt_or_static(mut learnt: impl Iterator<Item = (u8, u32)>, pt: u8) -> Option<u32> {
    learnt
        .find(|&(p, _)| p == pt)
        .map(|(_, hz)| hz)
        .or_else(|| static_clock_rate_hz(pt))
}

/// A [`ClockRateMap`]'s learnt entries as one shared, read-only slice: what an RTP socket's
/// tracker looks clock rates up in. 16 bytes inline (the map is 44), nothing allocated when
/// only static payload types are used, and one allocation for both directions of a stream
/// whose two ends map the same types (memory per held call, issue 19). Lookups give what
/// the map they were made from gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockRates(Option<std::sync::Arc<[(u8, u32)]>>);

impl std::ops::Deref for ClockRates {
    type Target = [(u8, u32)];

    fn deref(&self) -> &[(u8, u32)] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl FromIterator<(u8, u32)> for ClockRates {
    fn from_iter<I: IntoIterator<Item = (u8, u32)>>(iter: I) -> ClockRates {
        let list: Vec<(u8, u32)> = iter.into_iter().collect();
        ClockRates::from_list(&list)
    }
}

impl From<&[(u8, u32)]> for ClockRates {
    fn from(list: &[(u8, u32)]) -> ClockRates {
        ClockRates::from_list(list)
    }
}

impl ClockRates {
    pub fn from_map(map: &ClockRateMap) -> ClockRates {
        if map.is_empty() {
            ClockRates(None)
        } else {
            ClockRates(Some(map.entries().collect()))
        }
    }

    /// Learnt clock rate of `pt`, else its static one (as [`ClockRateMap::clock_rate_hz`]).
    #[inline]
    pub fn clock_rate_hz(&self, pt: u8) -> Option<u32> {
        let learnt = self.0.as_deref().unwrap_or_default();
        learnt_or_static(learnt.iter().copied(), pt)
    }

    /// A list as it is (SDP order, duplicates and all): what the session model keeps of an
    /// end's `a=rtpmap` lines, handed to the data plane as the same allocation when
    /// [`ClockRates::for_tracker`] finds the map would hold the same entries.
    pub fn from_list(list: &[(u8, u32)]) -> ClockRates {
        if list.is_empty() {
            ClockRates(None)
        } else {
            ClockRates(Some(list.into()))
        }
    }

    /// The rates a tracker looks up for an end that mapped `self`: `self` itself (a new
    /// reference, no allocation) when a [`ClockRateMap`] made from it holds the same entries in
    /// the same order, as it does for any list without repeated, out-of-range or excess
    /// entries; else the map's entries.
    pub fn for_tracker(&self) -> ClockRates {
        let mut map = ClockRateMap::new();
        for &(pt, hz) in self.iter() {
            map.insert(pt, hz);
        }
        if map.entries().eq(self.iter().copied()) {
            self.clone()
        } else {
            ClockRates::from_map(&map)
        }
    }

    /// The other's allocation when both hold the same entries (one list for both ends of
    /// a stream: memory per held call).
    pub fn share_with(&mut self, other: &ClockRates) {
        if *self == *other {
            *self = other.clone();
        }
    }

    /// Whether both are the same allocation (or both empty).
    pub fn shares_with(&self, other: &ClockRates) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table() {
        let table: &[(u8, Option<u32>)] = &[
            (0, Some(8_000)),
            (1, None),
            (2, None),
            (3, Some(8_000)),
            (6, Some(16_000)),
            (8, Some(8_000)),
            (9, Some(8_000)),
            (10, Some(44_100)),
            (11, Some(44_100)),
            (13, Some(8_000)),
            (14, Some(90_000)),
            (16, Some(11_025)),
            (17, Some(22_050)),
            (18, Some(8_000)),
            (19, None),
            (24, None),
            (25, Some(90_000)),
            (27, None),
            (31, Some(90_000)),
            (34, Some(90_000)),
            (35, None),
            (96, None),
            (127, None),
            (200, None),
        ];
        for &(pt, want) in table {
            assert_eq!(static_clock_rate_hz(pt), want, "pt {pt}");
        }
    }

    #[test]
    fn map_learns_overrides_and_fills() {
        let mut m = ClockRateMap::new();
        assert!(m.is_empty());
        assert_eq!(m.clock_rate_hz(0), Some(8_000)); // falls back
        assert_eq!(m.clock_rate_hz(111), None);
        assert!(m.insert(111, 48_000)); // opus/48000/2
        assert!(m.insert(101, 8_000)); // telephone-event/8000
        assert_eq!(m.clock_rate_hz(111), Some(48_000));
        assert_eq!(m.clock_rate_hz(101), Some(8_000));
        assert!(m.insert(111, 16_000)); // replace, no new slot
        assert_eq!(m.clock_rate_hz(111), Some(16_000));
        assert_eq!(m.len(), 2);
        assert!(m.insert(0, 16_000)); // learnt wins over static
        assert_eq!(m.clock_rate_hz(0), Some(16_000));
        for pt in 96..101 {
            assert!(m.insert(pt, 90_000));
        }
        assert_eq!(m.len(), 8);
        assert!(!m.insert(120, 90_000), "full");
        assert_eq!(m.clock_rate_hz(120), None);
        assert!(m.insert(96, 1_000), "replacing works when full");
        assert_eq!(m.clock_rate_hz(96), Some(1_000));
        assert!(!m.insert(128, 8_000));
        assert!(!m.insert(97, 0));
        let copy = m; // Copy, no heap
        m.clear();
        assert_eq!(m.clock_rate_hz(111), None);
        assert_eq!(copy.clock_rate_hz(111), Some(16_000));
        assert_eq!(ClockRateMap::default(), ClockRateMap::new());
        assert!(core::mem::size_of::<ClockRateMap>() <= 48);
    }

    #[test]
    fn shared_rates_look_up_as_their_map() {
        let mut m = ClockRateMap::new();
        assert_eq!(ClockRates::from_map(&m), ClockRates::default());
        for (pt, hz) in [(111, 48_000), (101, 8_000), (0, 16_000), (111, 24_000)] {
            m.insert(pt, hz);
        }
        let r = ClockRates::from_map(&m);
        for pt in 0..=255u8 {
            assert_eq!(r.clock_rate_hz(pt), m.clock_rate_hz(pt), "pt {pt}");
        }
        assert!(r.shares_with(&r.clone()));
        assert!(!r.shares_with(&ClockRates::from_map(&m)));
        assert_eq!(core::mem::size_of::<ClockRates>(), 16);
    }

    /// An end's SDP list goes to the trackers as the same allocation when a map would hold
    /// the same entries, and as the map's entries when it would not (a repeated or invalid
    /// payload type): lookups are the map's either way.
    #[test]
    fn an_sdp_list_is_shared_with_the_trackers_when_the_map_agrees() {
        let plain = ClockRates::from_list(&[(111, 48_000), (101, 8_000)]);
        let t = plain.for_tracker();
        assert!(t.shares_with(&plain));
        assert_eq!(&*t, &[(111, 48_000), (101, 8_000)]);
        for list in [
            &[(111, 48_000), (101, 8_000), (111, 24_000)][..],
            &[(200, 8_000), (96, 0), (97, 16_000)][..],
        ] {
            let sdp = ClockRates::from_list(list);
            let t = sdp.for_tracker();
            assert!(!t.shares_with(&sdp));
            let mut m = ClockRateMap::new();
            for &(pt, hz) in list {
                m.insert(pt, hz);
            }
            for pt in 0..=255u8 {
                assert_eq!(t.clock_rate_hz(pt), m.clock_rate_hz(pt), "pt {pt}");
            }
            assert_eq!(&*sdp, list, "the session keeps the list as it came");
        }
        assert_eq!(ClockRates::from_list(&[]), ClockRates::default());
        assert!(ClockRates::default().for_tracker().is_empty());
        // Two ends with the same entries end up on one allocation.
        let mut b = ClockRates::from_list(&[(111, 48_000), (101, 8_000)]);
        assert!(!b.shares_with(&plain));
        b.share_with(&plain);
        assert!(b.shares_with(&plain));
        let mut c = ClockRates::from_list(&[(111, 48_000)]);
        c.share_with(&plain);
        assert!(!c.shares_with(&plain));
    }
}
