//! Call quality per stream direction, sampled on the control plane: MOS estimates with the
//! loss, jitter and round-trip time they came from, kept as average / lowest / highest and a
//! bounded progression, in the shape rtpengine reports them under `SSRC` in `query` and
//! `delete` (which Kamailio's `mos_*_pv` variables read).
//!
//! # Where a sample comes from
//!
//! A direction is named by its receiver (side A hears what B sends, and the other way round),
//! as rtpengine files a sample under the SSRC of the endpoint whose receiver report it came
//! from: the entry for SSRC s tells how the endpoint that sends s hears the other one.
//!
//! - **RTCP**, when the receiver sends reports: each new report block (at most one sample a
//!   second, as rtpengine keeps them) gives the loss (`fraction lost` × 100 / 256, whole
//!   percent) and jitter (timestamp units → ms at the sender's clock rate; 8 kHz when no RTP
//!   was seen) of the whole path sender → relay → receiver.
//! - **The relay's own measurement**, when the receiver never sent a report: every
//!   [`RELAY_SAMPLE_NS`] (or every timeout-sweep round where rounds are longer: 10 s beyond
//!   12,500 calls), the loss over the interval (`Δlost / Δexpected` of the sender's RTP
//!   as the relay received it) and the current interarrival jitter (RFC 3550 §A.8). This
//!   covers only the sender → relay half of the path, but gives every call a figure (rtpengine
//!   reports none without RTCP).
//!
//! **Round-trip time.** For each leg, from the receiver's report block and the sender's SR the
//! relay saw pass: `rtt_leg = arrival(RR) − arrival(SR with NTP middle bits = LSR) − DLSR`
//! (RFC 3550 §6.4.1, with the relay's arrival times on both ends, so it measures relay ↔
//! receiver). Values outside (0, 10 s] are discarded. End to end is this leg plus the other
//! leg's latest (0, i.e. unknown, until both legs have one). The MOS formula is
//! [`crate::rtp::mos::mos_g107`].
//!
//! Sans-IO: figures and a monotonic clock in, samples out; memory per direction is bounded
//! ([`MAX_PROGRESSION`] samples, thinned by halving when full).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use crate::rtp::mos::{mos_g107, Mos10, MosInputs};
use crate::session::backend::{RtcpReport, Side, StreamStats};
use crate::time::{Nanos, NANOS_PER_SEC};

/// How often the relay samples a direction whose receiver sends no RTCP: the interval RTCP
/// itself uses for small sessions (RFC 3550 §6.2: 5 s minimum), so both kinds of sample come
/// at the same pace.
pub const RELAY_SAMPLE_NS: Nanos = 5 * NANOS_PER_SEC;

/// RTCP reports closer together than this give no new sample (rtpengine's rule; an
/// endpoint that reports in bursts would otherwise weigh more in the average).
pub const MIN_RTCP_GAP_NS: Nanos = NANOS_PER_SEC;

/// Samples kept for the progression. When full, every other one is dropped and only every
/// second later one is kept, so the progression always spans the whole call in at most this
/// many entries (rtpengine keeps every sample of a call, without bound).
pub const MAX_PROGRESSION: usize = 32;

/// Round trips beyond this are taken for stale or mismatched reports (rtpengine's bound).
const MAX_RTT_US: u64 = 10_000_000;

/// Clock rate assumed for RTCP jitter when no RTP told the real one (G.711).
const DEFAULT_CLOCK_HZ: u32 = 8_000;

/// Sum, sum of squares and count of one figure over samples: rtpengine's sample triple
/// (`mos_total`, `mos2_total`, `mos_samples_total`), from which a scraper derives the mean
/// and the spread over any interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleSums {
    pub total: f64,
    pub total2: f64,
    pub count: u64,
}

impl SampleSums {
    fn add(&mut self, v: f64) {
        self.total += v;
        self.total2 += v * v;
        self.count += 1;
    }
}

/// Every sample the relay has taken, summed per figure (for `/metrics`). Round trips count
/// only where one was known (end to end needs both legs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleTotals {
    /// MOS (1.0 to 4.5).
    pub mos: SampleSums,
    pub jitter_ms: SampleSums,
    pub packetloss_percent: SampleSums,
    /// End-to-end round trip, microseconds.
    pub rtt_e2e_us: SampleSums,
}

impl SampleTotals {
    pub fn add(&mut self, s: &QualitySample) {
        self.mos.add(f64::from(s.mos.0) / 10.0);
        self.jitter_ms.add(f64::from(s.jitter_ms));
        self.packetloss_percent.add(f64::from(s.loss_percent));
        if s.rtt_us > 0 {
            self.rtt_e2e_us.add(s.rtt_us as f64);
        }
    }
}

/// One estimate and what it was made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QualitySample {
    pub mos: Mos10,
    /// When it was taken (monotonic ns).
    pub at_ns: Nanos,
    pub loss_percent: u32,
    pub jitter_ms: u32,
    /// End to end (both legs), 0 = unknown.
    pub rtt_us: u64,
    /// The receiver's leg only, 0 = unknown.
    pub rtt_leg_us: u64,
    pub from_rtcp: bool,
}

/// A progression entry: a [`QualitySample`] in 24 bytes instead of 40 (a direction with
/// media keeps up to [`MAX_PROGRESSION`] of them, and at 25,000 calls growing them was a
/// few percent of the relay's CPU). Round trips (at most [`MAX_RTT_US`]), loss (a percentage)
/// and jitter (saturated at 65,535 ms) keep their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kept {
    at_ns: Nanos,
    rtt_us: u32,
    rtt_leg_us: u32,
    jitter_ms: u16,
    loss_percent: u8,
    mos: Mos10,
    from_rtcp: bool,
}

impl Kept {
    fn of(s: &QualitySample) -> Kept {
        Kept {
            at_ns: s.at_ns,
            rtt_us: u32::try_from(s.rtt_us).unwrap_or(u32::MAX),
            rtt_leg_us: u32::try_from(s.rtt_leg_us).unwrap_or(u32::MAX),
            jitter_ms: u16::try_from(s.jitter_ms).unwrap_or(u16::MAX),
            loss_percent: u8::try_from(s.loss_percent).unwrap_or(u8::MAX),
            mos: s.mos,
            from_rtcp: s.from_rtcp,
        }
    }

    fn sample(&self) -> QualitySample {
        QualitySample {
            mos: self.mos,
            at_ns: self.at_ns,
            loss_percent: u32::from(self.loss_percent),
            jitter_ms: u32::from(self.jitter_ms),
            rtt_us: u64::from(self.rtt_us),
            rtt_leg_us: u64::from(self.rtt_leg_us),
            from_rtcp: self.from_rtcp,
        }
    }
}

/// The averages of a direction's samples (each figure summed and divided by `samples`,
/// truncated, as rtpengine reports `average MOS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QualityAverage {
    pub mos: Mos10,
    pub loss_percent: u32,
    pub jitter_ms: u32,
    pub rtt_us: u64,
    pub rtt_leg_us: u64,
    pub samples: u32,
}

/// What `query`/`delete` report for one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionSummary {
    /// The receiver's SSRC (of its own RTP; the sender's when it sends none).
    pub ssrc: u32,
    /// RTP of that SSRC as the relay received it.
    pub packets: u64,
    pub bytes: u64,
    pub last_seq: u64,
    /// Packets of the heard stream lost: the receiver's own count when it reports, else the
    /// relay's.
    pub cumulative_loss: i64,
    pub average: QualityAverage,
    pub lowest: QualitySample,
    pub highest: QualitySample,
    pub progression: Vec<QualitySample>,
}

/// One direction's running figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionQuality {
    samples: u32,
    sum_mos: u64,
    sum_loss: u64,
    sum_jitter: u64,
    sum_rtt: u64,
    sum_rtt_leg: u64,
    lowest: Option<QualitySample>,
    highest: Option<QualitySample>,
    progression: Vec<Kept>,
    /// Keep one sample in `stride` for the progression; `seen` counts them.
    stride: u32,
    seen: u32,
    last_sample_ns: Option<Nanos>,
    /// The first look at the direction: its first relay sample is due a
    /// [`RELAY_SAMPLE_NS`] after it, so that an endpoint has an interval's time to send its
    /// first report before the relay measures in its place, however soon another look comes
    /// (the other side's RTCP makes one).
    first_look_ns: Option<Nanos>,
    /// Report blocks from the receiver already looked at.
    reports_seen: u64,
    /// The sender's RTP counts at the last relay sample.
    expected_seen: u64,
    lost_seen: i64,
    /// The receiver's leg, latest valid (0 = none).
    rtt_leg_us: u64,
}

impl DirectionQuality {
    fn add(&mut self, s: QualitySample) -> QualitySample {
        self.samples = self.samples.saturating_add(1);
        self.sum_mos += u64::from(s.mos.0);
        self.sum_loss += u64::from(s.loss_percent);
        self.sum_jitter += u64::from(s.jitter_ms);
        self.sum_rtt = self.sum_rtt.saturating_add(s.rtt_us);
        self.sum_rtt_leg = self.sum_rtt_leg.saturating_add(s.rtt_leg_us);
        if self.lowest.is_none_or(|l| s.mos < l.mos) {
            self.lowest = Some(s);
        }
        if self.highest.is_none_or(|h| s.mos > h.mos) {
            self.highest = Some(s);
        }
        self.last_sample_ns = Some(s.at_ns);
        let stride = self.stride.max(1);
        if self.seen % stride == 0 {
            if self.progression.len() >= MAX_PROGRESSION {
                let mut i = 0;
                self.progression.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = stride.saturating_mul(2);
                self.seen = 0;
            }
            self.progression.push(Kept::of(&s));
        }
        self.seen = self.seen.wrapping_add(1);
        s
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    fn average(&self) -> Option<QualityAverage> {
        let n = u64::from(self.samples);
        let div = |v: u64| v.checked_div(n);
        Some(QualityAverage {
            mos: Mos10(u8::try_from(div(self.sum_mos)?).unwrap_or(u8::MAX)),
            loss_percent: u32::try_from(div(self.sum_loss)?).unwrap_or(u32::MAX),
            jitter_ms: u32::try_from(div(self.sum_jitter)?).unwrap_or(u32::MAX),
            rtt_us: div(self.sum_rtt)?,
            rtt_leg_us: div(self.sum_rtt_leg)?,
            samples: self.samples,
        })
    }
}

/// Both directions of one stream, by receiver: `[heard by A, heard by B]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamQuality {
    dirs: [DirectionQuality; 2],
    /// RTCP packets from both sides, packets on all four sockets, and when the stream was
    /// last looked at (for [`Self::due`]).
    rtcp_packets_seen: u64,
    packets_seen: u64,
    looked_ns: Option<Nanos>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// The receiver's leg from its report and the sender's SRs: see the module doc.
fn rtt_leg_us(rr: &RtcpReport, sender: &RtcpReport) -> Option<u64> {
    if rr.reports == 0 || rr.last_sr == 0 || rr.delay_since_last_sr == 0 {
        return None;
    }
    let sr = sender
        .sender_reports
        .iter()
        .find(|s| s.at_ns != 0 && s.ntp_mid == rr.last_sr)?;
    let dlsr_ns = u64::from(rr.delay_since_last_sr) * NANOS_PER_SEC / 65_536;
    let rtt_ns = rr
        .report_at_ns
        .checked_sub(sr.at_ns)?
        .checked_sub(dlsr_ns)?;
    let us = rtt_ns / 1000;
    (us > 0 && us <= MAX_RTT_US).then_some(us)
}

impl StreamQuality {
    /// Whether a look at the stream's full figures may find a sample due, given its RTCP
    /// packet count (both sides) and its packet count (all four sockets) at `now`: some RTCP
    /// came in, or packets did and a relay interval passed. A stream whose counts did not
    /// move has nothing new to sample (a report or a relay sample needs packets), so it is
    /// not looked at. Cheap, so a sweep can ask it of every stream with only the socket
    /// counters at hand.
    pub fn due(&mut self, rtcp_packets: u64, packets: u64, now: Nanos) -> bool {
        let due = rtcp_packets != self.rtcp_packets_seen
            || (packets != self.packets_seen
                && self
                    .looked_ns
                    .is_none_or(|t| now.saturating_sub(t) >= RELAY_SAMPLE_NS));
        if due {
            self.rtcp_packets_seen = rtcp_packets;
            self.packets_seen = packets;
            self.looked_ns = Some(now);
        }
        due
    }

    /// The packets counted at the last due look (the sweep reads it ahead to warm the cache).
    pub fn packets_seen(&self) -> u64 {
        self.packets_seen
    }

    pub fn direction(&self, receiver: Side) -> &DirectionQuality {
        &self.dirs[idx(receiver)]
    }

    /// Takes what is due from the stream's current figures at `now`: a sample per new
    /// receiver report (a second apart at least), or, for a receiver that never reported, a
    /// relay sample every [`RELAY_SAMPLE_NS`] from the first look on (not off the first few
    /// packets). `closing` takes a last relay sample of whatever media came since the
    /// previous one, however recent (for the final report).
    ///
    /// Returns the samples taken, by receiver (`[heard by A, heard by B]`).
    pub fn observe(
        &mut self,
        st: &StreamStats,
        now: Nanos,
        closing: bool,
    ) -> [Option<QualitySample>; 2] {
        let mut taken = [None, None];
        for receiver in [Side::A, Side::B] {
            let sender = receiver.other();
            let rr = st.side(receiver).rtcp_report;
            let heard = st.side(sender).quality;
            let sender_rtcp = st.side(sender).rtcp_report;
            let other_leg = self.dirs[idx(sender)].rtt_leg_us;
            let d = &mut self.dirs[idx(receiver)];
            let first_look = *d.first_look_ns.get_or_insert(now);
            // A report is sampled a second after the previous sample (at once if none); the
            // relay's own measurement an interval after it (or after the first look).
            let report_due = closing
                || d.last_sample_ns
                    .is_none_or(|t| now.saturating_sub(t) >= MIN_RTCP_GAP_NS);
            let relay_due = closing
                || now.saturating_sub(d.last_sample_ns.unwrap_or(first_look)) >= RELAY_SAMPLE_NS;
            if rr.reports > d.reports_seen {
                d.reports_seen = rr.reports;
                let leg = rtt_leg_us(&rr, &sender_rtcp);
                if let Some(l) = leg {
                    d.rtt_leg_us = l;
                }
                if !report_due {
                    continue;
                }
                let hz = if heard.clock_rate_hz == 0 {
                    DEFAULT_CLOCK_HZ
                } else {
                    heard.clock_rate_hz
                };
                let jitter_ms =
                    u32::try_from(u64::from(rr.jitter_rtp_units) * 1000 / u64::from(hz))
                        .unwrap_or(u32::MAX);
                let leg = leg.unwrap_or(0);
                let rtt_us = if other_leg > 0 { leg + other_leg } else { 0 };
                let inputs = MosInputs {
                    loss_percent: u32::from(rr.fraction_lost) * 100 / 256,
                    jitter_ms,
                    rtt_us,
                };
                taken[idx(receiver)] = Some(d.add(QualitySample {
                    mos: mos_g107(inputs),
                    at_ns: rr.report_at_ns.max(1),
                    loss_percent: inputs.loss_percent,
                    jitter_ms,
                    rtt_us,
                    rtt_leg_us: leg,
                    from_rtcp: true,
                }));
            } else if d.reports_seen == 0 && heard.expected > d.expected_seen && relay_due {
                let expected = heard.expected - d.expected_seen;
                let lost = heard.lost.saturating_sub(d.lost_seen).max(0).unsigned_abs();
                d.expected_seen = heard.expected;
                d.lost_seen = heard.lost;
                let loss_percent = u32::try_from((lost * 100 / expected).min(100)).unwrap_or(100);
                let jitter_ms = heard.jitter_ms.max(0.0).min(f64::from(u32::MAX)) as u32;
                let rtt_us = if d.rtt_leg_us > 0 && other_leg > 0 {
                    d.rtt_leg_us + other_leg
                } else {
                    0
                };
                let inputs = MosInputs {
                    loss_percent,
                    jitter_ms,
                    rtt_us,
                };
                let leg = d.rtt_leg_us;
                taken[idx(receiver)] = Some(d.add(QualitySample {
                    mos: mos_g107(inputs),
                    at_ns: now.max(1),
                    loss_percent,
                    jitter_ms,
                    rtt_us,
                    rtt_leg_us: leg,
                    from_rtcp: false,
                }));
            }
        }
        taken
    }

    /// The report for the direction heard by `receiver`, if it has a sample.
    pub fn summary(&self, st: &StreamStats, receiver: Side) -> Option<DirectionSummary> {
        let d = &self.dirs[idx(receiver)];
        let average = d.average()?;
        let own = st.side(receiver);
        let heard = st.side(receiver.other());
        let ssrc = if own.quality.packets > 0 {
            own.quality.ssrc
        } else {
            heard.quality.ssrc
        };
        let cumulative_loss = if own.rtcp_report.reports > 0 {
            i64::from(own.rtcp_report.cumulative_lost)
        } else {
            heard.quality.lost
        };
        Some(DirectionSummary {
            ssrc,
            packets: own.quality.packets,
            bytes: own.quality.bytes,
            last_seq: own.quality.extended_highest_seq,
            cumulative_loss,
            average,
            lowest: d.lowest?,
            highest: d.highest?,
            progression: d.progression.iter().map(Kept::sample).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::backend::SenderReportSeen;

    const S: Nanos = NANOS_PER_SEC;

    /// A stream where each side sent `packets` RTP packets with `lost` of them missing,
    /// `jitter_units` at 8 kHz.
    fn relay_only(a_expected: u64, a_lost: i64, b_expected: u64, b_lost: i64) -> StreamStats {
        let mut st = StreamStats::default();
        for (side, expected, lost, ssrc) in [
            (&mut st.a, a_expected, a_lost, 0xa),
            (&mut st.b, b_expected, b_lost, 0xb),
        ] {
            side.quality.expected = expected;
            side.quality.lost = lost;
            side.quality.packets = expected.saturating_sub(lost.max(0) as u64);
            side.quality.ssrc = ssrc;
            side.quality.clock_rate_hz = 8000;
            side.quality.jitter_ms = 2.5;
        }
        st
    }

    #[test]
    fn relay_samples_every_interval_with_interval_loss() {
        let mut q = StreamQuality::default();
        // The first look, before the media.
        q.observe(&relay_only(0, 0, 0, 0), 0, false);
        // 5 s of clean audio both ways.
        q.observe(&relay_only(250, 0, 250, 0), 5 * S, false);
        assert_eq!(q.direction(Side::B).samples(), 1);
        // Not due yet: nothing new.
        q.observe(&relay_only(300, 0, 300, 0), 6 * S, false);
        assert_eq!(q.direction(Side::B).samples(), 1);
        // The next 5 s: A's packets lose 10 % (25 of 250), B's none.
        q.observe(&relay_only(500, 25, 500, 0), 10 * S, false);
        let st = relay_only(500, 25, 500, 0);
        let heard_by_b = q.summary(&st, Side::B).unwrap();
        assert_eq!(heard_by_b.ssrc, 0xb, "filed under the receiver's SSRC");
        assert_eq!(heard_by_b.highest.loss_percent, 0);
        assert_eq!(heard_by_b.lowest.loss_percent, 10);
        assert_eq!(heard_by_b.highest.mos, Mos10(44));
        assert_eq!(heard_by_b.lowest.mos, Mos10(34));
        assert_eq!(heard_by_b.average.samples, 2);
        assert_eq!(heard_by_b.average.mos, Mos10((44 + 34) / 2));
        assert_eq!(heard_by_b.cumulative_loss, 25);
        let heard_by_a = q.summary(&st, Side::A).unwrap();
        assert_eq!(heard_by_a.lowest.mos, Mos10(44));
        assert!(!heard_by_a.lowest.from_rtcp);
    }

    #[test]
    fn due_on_rtcp_or_interval() {
        let mut q = StreamQuality::default();
        assert!(q.due(0, 10, S));
        assert!(!q.due(0, 20, 2 * S));
        assert!(q.due(1, 21, 2 * S), "new RTCP");
        assert!(!q.due(1, 30, 3 * S));
        assert!(q.due(1, 80, 7 * S), "relay interval");
        // Nothing moved: no look, however long; the first packet after that is due at once.
        assert!(!q.due(1, 80, 13 * S));
        assert!(!q.due(1, 80, 60 * S));
        assert!(q.due(1, 81, 61 * S));
    }

    #[test]
    fn closing_takes_the_last_interval() {
        let mut q = StreamQuality::default();
        let st = relay_only(100, 10, 0, 0);
        assert!(q.summary(&st, Side::B).is_none());
        q.observe(&st, 2 * S, true);
        let s = q.summary(&st, Side::B).unwrap();
        assert_eq!(s.average.loss_percent, 10);
        // Nothing flowed from B: A hears nothing and gets no figure.
        assert!(q.summary(&st, Side::A).is_none());
        // No new media: closing again adds nothing.
        q.observe(&st, 3 * S, true);
        assert_eq!(q.direction(Side::B).samples(), 1);
    }

    /// Side `rx` reports about the other side's stream; `sr` is what the other side's SR
    /// looked like when it passed the relay.
    fn report(
        st: &mut StreamStats,
        rx: Side,
        n: u64,
        at: Nanos,
        fraction: u8,
        lsr: u32,
        dlsr: u32,
    ) {
        let r = match rx {
            Side::A => &mut st.a.rtcp_report,
            Side::B => &mut st.b.rtcp_report,
        };
        r.reports = n;
        r.report_at_ns = at;
        r.fraction_lost = fraction;
        r.jitter_rtp_units = 80; // 10 ms at 8 kHz
        r.last_sr = lsr;
        r.delay_since_last_sr = dlsr;
    }

    #[test]
    fn rtcp_gives_loss_jitter_and_round_trip() {
        let mut st = relay_only(0, 0, 0, 0);
        // A's SR passed the relay at 10 s, B's at 10.2 s.
        st.a.rtcp_report.sender_reports[0] = SenderReportSeen {
            ntp_mid: 0x1111,
            at_ns: 10 * S,
        };
        st.b.rtcp_report.sender_reports[1] = SenderReportSeen {
            ntp_mid: 0x2222,
            at_ns: 10 * S + 200_000_000,
        };
        let mut q = StreamQuality::default();
        // B answers A's SR: held it 0.5 s (32768/65536), the report reached the relay at
        // 10.54 s: B's leg is 40 ms. A has no leg yet: no end-to-end figure.
        report(&mut st, Side::B, 1, 10 * S + 540_000_000, 0, 0x1111, 32_768);
        q.observe(&st, 11 * S, false);
        let b = q.summary(&st, Side::B).unwrap();
        assert_eq!(b.lowest.rtt_leg_us, 40_000);
        assert_eq!(b.lowest.rtt_us, 0);
        assert_eq!(b.lowest.jitter_ms, 10);
        assert!(b.lowest.from_rtcp);
        // A answers B's older SR after 0.25 s; reaches the relay at 10.47 s: 20 ms leg, and
        // 26/256 lost = 10 %. End to end: 20 + 40 ms.
        report(
            &mut st,
            Side::A,
            1,
            10 * S + 470_000_000,
            26,
            0x2222,
            16_384,
        );
        q.observe(&st, 11 * S, false);
        let a = q.summary(&st, Side::A).unwrap();
        assert_eq!(a.lowest.rtt_leg_us, 20_000);
        assert_eq!(a.lowest.rtt_us, 60_000);
        assert_eq!(a.lowest.loss_percent, 10);
        assert_eq!(
            a.lowest.mos,
            mos_g107(MosInputs {
                loss_percent: 10,
                jitter_ms: 10,
                rtt_us: 60_000
            })
        );
        // A report within a second of the last one is not sampled; one later is.
        report(&mut st, Side::B, 2, 11 * S, 0, 0, 0);
        q.observe(&st, 11 * S, false);
        assert_eq!(q.direction(Side::B).samples(), 1);
        report(&mut st, Side::B, 3, 16 * S, 0, 0x9999, 100);
        q.observe(&st, 16 * S, false);
        assert_eq!(q.direction(Side::B).samples(), 2);
        // An LSR matching no SR: the leg keeps its last value.
        let b = q.summary(&st, Side::B).unwrap();
        assert_eq!(b.highest.rtt_leg_us, 40_000);
        // A receiver that reports gets no relay samples.
        let mut more = st;
        more.a.quality.expected = 1000;
        q.observe(&more, 30 * S, true);
        assert_eq!(q.direction(Side::B).samples(), 2);
    }

    /// One side's first report comes before the other's: the look it makes takes no relay
    /// sample for the direction still waiting for its receiver's first report, not off a
    /// second of media; that receiver's report, when it comes, is its first sample.
    #[test]
    fn an_early_report_on_one_side_takes_no_relay_sample_for_the_other() {
        let mut q = StreamQuality::default();
        // The first look: a few packets each way.
        q.observe(&relay_only(10, 0, 10, 0), S / 5, false);
        // 1.2 s: A reports on B's stream (10 % loss); the relay saw 3 of A's 60 lost.
        let mut st = relay_only(60, 3, 60, 6);
        report(&mut st, Side::A, 1, 1_200_000_000, 25, 0, 0);
        let taken = q.observe(&st, 1_200_000_000, false);
        assert!(taken[0].is_some_and(|s| s.from_rtcp && s.loss_percent == 9));
        assert!(taken[1].is_none(), "no relay sample 1 s in: {taken:?}");
        // 1.8 s: B's first report (10 % loss) is its first sample.
        let mut st = relay_only(90, 9, 90, 9);
        report(&mut st, Side::A, 1, 1_200_000_000, 25, 0, 0);
        report(&mut st, Side::B, 1, 1_800_000_000, 25, 0, 0);
        let taken = q.observe(&st, 1_800_000_000, false);
        assert!(taken[0].is_none());
        assert!(taken[1].is_some_and(|s| s.from_rtcp && s.loss_percent == 9));
        let b = q.summary(&st, Side::B).unwrap();
        assert_eq!(b.average.samples, 1);
        assert!(b.highest.from_rtcp && b.lowest.from_rtcp);
    }

    /// A receiver that never reports gets its first relay sample an interval after the
    /// first look, not at the first look that finds media after it.
    #[test]
    fn the_first_relay_sample_waits_an_interval_from_the_first_look() {
        let mut q = StreamQuality::default();
        assert_eq!(q.observe(&relay_only(5, 0, 5, 0), S, false), [None, None]);
        assert_eq!(
            q.observe(&relay_only(100, 2, 100, 2), 3 * S, false),
            [None, None]
        );
        let taken = q.observe(&relay_only(250, 25, 250, 25), 6 * S, false);
        assert!(taken
            .iter()
            .all(|t| t.is_some_and(|s| !s.from_rtcp && s.loss_percent == 10)));
        // Closing takes what came since, however recent.
        let taken = q.observe(&relay_only(260, 26, 260, 26), 6 * S + S / 2, true);
        assert!(taken
            .iter()
            .all(|t| t.is_some_and(|s| s.loss_percent == 10)));
    }

    #[test]
    fn implausible_round_trips_are_dropped() {
        let mut rr = RtcpReport {
            reports: 1,
            last_sr: 7,
            delay_since_last_sr: 65_536,
            report_at_ns: 5 * S,
            ..RtcpReport::default()
        };
        let mut sender = RtcpReport::default();
        sender.sender_reports[0] = SenderReportSeen {
            ntp_mid: 7,
            at_ns: 3 * S,
        };
        assert_eq!(rtt_leg_us(&rr, &sender), Some(1_000_000));
        // DLSR longer than the time between: negative.
        rr.delay_since_last_sr = 3 * 65_536;
        assert_eq!(rtt_leg_us(&rr, &sender), None);
        // Beyond 10 s.
        rr.delay_since_last_sr = 1;
        rr.report_at_ns = 20 * S;
        assert_eq!(rtt_leg_us(&rr, &sender), None);
    }

    #[test]
    fn a_kept_progression_entry_is_24_bytes_and_keeps_its_figures() {
        assert_eq!(std::mem::size_of::<Kept>(), 24);
        assert!(std::mem::size_of::<QualitySample>() >= 40);
        let s = QualitySample {
            mos: Mos10(41),
            at_ns: 7 * S + 3,
            loss_percent: 100,
            jitter_ms: 65_535,
            rtt_us: MAX_RTT_US,
            rtt_leg_us: 12_345,
            from_rtcp: true,
        };
        assert_eq!(Kept::of(&s).sample(), s);
        let beyond = QualitySample {
            jitter_ms: 70_000,
            ..s
        };
        assert_eq!(Kept::of(&beyond).sample().jitter_ms, 65_535);
    }

    #[test]
    fn progression_stays_bounded_and_spans_the_call() {
        let mut q = StreamQuality::default();
        q.observe(&relay_only(0, 0, 0, 0), 0, false);
        for i in 1..=1000u64 {
            q.observe(&relay_only(i * 250, 0, 0, 0), i * 5 * S, false);
        }
        let st = relay_only(1000 * 250, 0, 0, 0);
        let s = q.summary(&st, Side::B).unwrap();
        assert_eq!(s.average.samples, 1000);
        assert!(s.progression.len() <= MAX_PROGRESSION);
        assert!(s.progression.len() >= MAX_PROGRESSION / 2);
        assert_eq!(s.progression[0].at_ns, 5 * S);
        assert!(s.progression.last().unwrap().at_ns > 4000 * S);
        assert!(s.progression.windows(2).all(|w| w[0].at_ns < w[1].at_ns));
    }
}
