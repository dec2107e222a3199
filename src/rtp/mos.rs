//! Mean opinion score (MOS) estimates from packet loss, jitter and round-trip time: the
//! simplified ITU-T G.107 E-model that rtpengine applies to narrowband codecs, in the scale
//! rtpengine reports (MOS × 10 as an integer, 10..=45), so figures compare one to one.
//!
//! # Inputs
//!
//! - `loss_percent`: packets lost in the interval, whole percent (rtpengine takes an RTCP
//!   report's `fraction lost` × 100 / 256, truncated);
//! - `jitter_ms`: interarrival jitter in whole milliseconds (RFC 3550 §6.4.1, timestamp units
//!   × 1000 / clock rate, truncated);
//! - `rtt_us`: end-to-end round-trip time in microseconds (both legs of the relay added; 0
//!   when unknown: the estimate then counts no delay, what rtpengine calls listening quality).
//!
//! # Formula ([`mos_g107`])
//!
//! ITU-T G.107 with every factor at its default except the ones measured: `R = 93.2 − Id −
//! Ie,eff`, where
//! - one-way delay `Ta = rtt/2 + jitter` (ms; jitter stands in for the receiver's buffer) and
//!   the delay impairment `Id = 0.024 Ta + 0.11 (Ta − 177.3)` (second term only above
//!   177.3 ms; the usual simplification of G.107 §7.4);
//! - the effective equipment impairment `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl)` (random
//!   loss, BurstR = 1) with G.711's `Ie = 0` and `Bpl = 25.1` (with packet loss
//!   concealment, G.113 Appendix I);
//! - MOS from R (G.107 Annex B): 1 for `R < 0`, 4.5 for `R > 100`, else
//!   `1 + 0.035 R + 7·10⁻⁶ R (R − 60)(100 − R)`, truncated to tenths, at least 1.0.
//!
//! A loss-free call with little delay scores R ≈ 93, MOS 4.4; 10 % loss R ≈ 66, MOS 3.4;
//! both what Debian's rtpengine (10.5) reports for the same traffic with its own estimate
//! ([`mos_legacy`]). Newer rtpengine fits loss with a quadratic in `93.2 − Ppl` whose
//! minimum lies at 16 % loss (at 50 % loss it scores 4.5 again), so the standard's own
//! `Ie,eff` is used here: the score falls monotonically with loss, jitter and delay.
//!
//! [`mos_legacy`] is rtpengine 10.x's estimate: effective latency `L = rtt_ms + 2 jitter +
//! 10`, `R = 93.2 − L/40` (or `93.2 − (L − 120)/10` from 160 ms on) `− 2.5 Ppl`, then the
//! same MOS curve.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// A MOS estimate × 10 (10 = 1.0 ... 45 = 4.5), as rtpengine reports `MOS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mos10(pub u8);

impl Mos10 {
    /// The score as a decimal (4.3 for `Mos10(43)`).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

impl std::fmt::Display for Mos10 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// What one estimate is made of (see the module doc for units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MosInputs {
    pub loss_percent: u32,
    pub jitter_ms: u32,
    pub rtt_us: u64,
}

/// MOS × 10 from a transmission rating R (G.107 Annex B), truncated, within 10..=45.
fn mos_from_r(r: f64) -> Mos10 {
    if r.is_nan() || r < 0.0 {
        return Mos10(10);
    }
    if r > 100.0 {
        return Mos10(45);
    }
    let mos = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    // A tiny epsilon so that exact tenths (e.g. 4.4 computed as 4.3999999) do not drop.
    Mos10(((mos * 10.0 + 1e-9).floor()).clamp(10.0, 45.0) as u8)
}

/// G.711's packet-loss robustness with concealment (G.113 Appendix I).
const BPL_G711: f64 = 25.1;

/// The G.107 estimate (module doc).
pub fn mos_g107(i: MosInputs) -> Mos10 {
    let ta_ms = (i.rtt_us as f64) / 2000.0 + f64::from(i.jitter_ms);
    let mut id = 0.024 * ta_ms;
    if ta_ms > 177.3 {
        id += 0.11 * (ta_ms - 177.3);
    }
    let ppl = f64::from(i.loss_percent.min(100));
    let ie_eff = 95.0 * ppl / (ppl + BPL_G711);
    mos_from_r(93.2 - id - ie_eff)
}

/// The older rtpengine estimate (module doc).
pub fn mos_legacy(i: MosInputs) -> Mos10 {
    let latency_ms =
        i64::try_from(i.rtt_us / 1000).unwrap_or(i64::MAX / 4) + 2 * i64::from(i.jitter_ms) + 10;
    // R × 10⁶.
    let latency_ms = latency_ms.min(1_000_000_000);
    let mut r_e6 = if latency_ms < 160 {
        93_200_000 - latency_ms * 100_000 / 4
    } else {
        93_200_000 - (latency_ms.saturating_mul(100_000) - 12_000_000)
    };
    r_e6 -= i64::from(i.loss_percent.min(100)) * 2_500_000;
    mos_from_r(r_e6 as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(loss: u32, jitter: u32, rtt_ms: u64) -> u8 {
        mos_g107(MosInputs {
            loss_percent: loss,
            jitter_ms: jitter,
            rtt_us: rtt_ms.saturating_mul(1000),
        })
        .0
    }

    fn l(loss: u32, jitter: u32, rtt_ms: u64) -> u8 {
        mos_legacy(MosInputs {
            loss_percent: loss,
            jitter_ms: jitter,
            rtt_us: rtt_ms.saturating_mul(1000),
        })
        .0
    }

    #[test]
    fn clean_call_scores_like_rtpengine() {
        // R = 93.2 - Id: 4.41 for a loss-free call on a LAN.
        assert_eq!(g(0, 0, 0), 44);
        assert_eq!(g(0, 2, 1), 44);
        assert_eq!(l(0, 0, 0), 44);
        assert_eq!(l(0, 1, 1), 44);
        assert_eq!(Mos10(43).to_string(), "4.3");
    }

    #[test]
    fn loss_lowers_the_score() {
        // 10 % loss: Ie,eff = 27.07, R = 66.1, MOS 3.41; rtpengine 10's: R = 67.95, 3.49.
        assert_eq!(g(10, 0, 0), 34);
        assert_eq!(l(10, 0, 0), 34);
        let mut last = 50;
        for loss in 0..=100 {
            let m = g(loss, 5, 40);
            assert!(m <= last, "not monotonic at {loss} %: {m} > {last}");
            assert!((10..=45).contains(&m));
            last = m;
        }
        assert_eq!(g(100, 0, 0), 11);
    }

    #[test]
    fn delay_lowers_the_score() {
        assert!(g(0, 0, 400) < g(0, 0, 0));
        assert!(g(0, 50, 0) < g(0, 0, 0));
        // Beyond 177.3 ms one way the second delay term bites hard.
        assert!(g(0, 0, 800) < g(0, 0, 300));
        assert!(l(0, 0, 400) < l(0, 0, 100));
        // Absurd inputs saturate instead of overflowing.
        assert_eq!(g(0, u32::MAX, u64::MAX), 10);
        assert_eq!(l(u32::MAX, u32::MAX, u64::MAX), 10);
    }

    #[test]
    fn known_points_of_the_curve() {
        // R = 50 exactly (Ppl such that 95 Ppl / (Ppl + 25.1) = 43.2): MOS 2.58.
        let m = mos_from_r(50.0);
        assert_eq!(m, Mos10(25));
        // Annex B's ends.
        assert_eq!(mos_from_r(-3.0), Mos10(10));
        assert_eq!(mos_from_r(100.5), Mos10(45));
        assert_eq!(mos_from_r(f64::NAN), Mos10(10));
        // 150 ms one way, no loss: Id = 3.6, R = 89.6, MOS 4.33.
        assert_eq!(g(0, 0, 300), 43);
    }
}
