//! Round trips of the ng requests a call makes on a remote relay (offer, answer, delete),
//! kept per relay in a bounded log-linear histogram so that `statistics` can give their
//! median and 99th percentile: a fixed array of counts, no allocation per sample.
//!
//! Buckets in microseconds: 0..16 one each, then every power of two from 16 µs up is split
//! in [`SUB`] equal parts (a quantile is off by at most 1/[`SUB`], 12.5%), up to 2^[`MAX_POW`]
//! µs (about 67 s, far above any ng timeout); slower samples land in the last bucket.

/// Parts each power of two is split into.
const SUB: u64 = 8;
/// Values below this have a bucket each.
const LINEAR: u64 = 2 * SUB;
/// The highest power of two covered.
const MAX_POW: u32 = 26;
/// Bucket count: the linear ones, then `SUB` per power from log2(LINEAR) to `MAX_POW`.
const BUCKETS: usize = LINEAR as usize + (MAX_POW as usize - 4) * SUB as usize;

/// The histogram (see the module docs).
#[derive(Clone, Debug)]
pub struct RttHistogram {
    counts: [u64; BUCKETS],
    samples: u64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            counts: [0; BUCKETS],
            samples: 0,
        }
    }
}

/// The bucket of `us`.
fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    // us >= 16: its power p >= 4, and the SUB parts of [2^p, 2^(p+1)).
    let p = 63 - us.leading_zeros();
    if p >= MAX_POW {
        return BUCKETS - 1;
    }
    let part = (us >> (p - 3)) & (SUB - 1);
    LINEAR as usize + (p as usize - 4) * SUB as usize + part as usize
}

/// The highest value (µs) that falls in bucket `b`.
fn upper(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let i = (b - LINEAR as usize) as u64;
    let p = 4 + i / SUB;
    let part = i % SUB;
    (1u64 << p) + ((part + 1) << (p - 3)) - 1
}

impl RttHistogram {
    /// One round trip of `rtt_us` microseconds.
    pub fn record(&mut self, rtt_us: u64) {
        if let Some(c) = self.counts.get_mut(bucket(rtt_us)) {
            *c = c.saturating_add(1);
            self.samples = self.samples.saturating_add(1);
        }
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The `q`-quantile (0.0..=1.0) in microseconds, as the upper bound of its bucket; 0
    /// without samples.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.samples == 0 {
            return 0;
        }
        // The rank of the sample wanted, 1-based: at least the first, at most the last.
        let rank = ((q.clamp(0.0, 1.0) * self.samples as f64).ceil() as u64).clamp(1, self.samples);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(b);
            }
        }
        upper(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for b in 1..BUCKETS {
            assert_eq!(upper(b - 1) + 1, lowest(b), "bucket {b}");
            assert_eq!(bucket(lowest(b)), b);
            assert_eq!(bucket(upper(b)), b);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(0), 0);
    }

    fn lowest(b: usize) -> u64 {
        if b == 0 {
            0
        } else {
            upper(b - 1) + 1
        }
    }

    #[test]
    fn quantiles_within_an_eighth() {
        let mut h = RttHistogram::default();
        assert_eq!(h.quantile_us(0.5), 0);
        // 1..=1000 µs once each: median 500, p99 990.
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.samples(), 1000);
        let m = h.quantile_us(0.5);
        assert!((500..=563).contains(&m), "median {m}");
        let p99 = h.quantile_us(0.99);
        assert!((990..=1114).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile_us(0.0), 1);
        // One slow outlier moves p99 not the median.
        let mut h = RttHistogram::default();
        for _ in 0..99 {
            h.record(200);
        }
        h.record(5_000_000);
        assert!(h.quantile_us(0.5) < 230);
        assert!(h.quantile_us(0.99) < 230);
        assert!(h.quantile_us(1.0) >= 5_000_000);
    }
}
