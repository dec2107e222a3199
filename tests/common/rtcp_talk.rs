//! An endpoint that talks like a phone: 20 ms PCMU to the relay and, every so often, an RTCP
//! sender report with a reception report block about what it hears (fraction lost,
//! cumulative loss, RFC 3550 A.8 jitter, LSR/DLSR of the peer's last SR), so the relay can
//! take MOS samples and measure round trips.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtpanchor::rtp::rtcp::{emit_header, ReportBlock, SenderInfo};
use rtpanchor::rtp::RtpRepr;

fn ntp_now() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// What one endpoint sent and received.
#[derive(Debug, Default)]
pub struct EndpointReport {
    pub sent: u64,
    pub received: u64,
    pub reports_sent: u64,
    pub srs_received: u64,
}

/// One endpoint's part: sends 20 ms PCMU to `to` (RTCP to `to`+1) for `duration`, dropping
/// every tenth packet if `lossy`; sends an SR with a report block every `rtcp_every`, the
/// first `rtcp_first` after the start.
///
/// Give the two ends of a call different `rtcp_first` (real endpoints' RTCP is not in step,
/// RFC 3550 6.3.1 randomises it): two SRs sent at the same instant cross in flight, so the
/// second one's report refers to an SR received a moment ago with a delay of about 0, and a
/// relay that matches reports to SRs (rtpengine) learns one leg's round trip only, in every
/// round, and so never computes a MOS.
#[derive(Clone, Copy, Debug)]
pub struct Talk {
    pub to: SocketAddr,
    pub ssrc: u32,
    pub lossy: bool,
    pub duration: Duration,
    pub rtcp_every: Duration,
    pub rtcp_first: Duration,
}

impl Talk {
    /// Talks from `rtp` (and `rtcp`, the next port) until `duration` has passed.
    pub fn run(self, rtp: UdpSocket, rtcp: UdpSocket) -> EndpointReport {
        let to_rtcp = SocketAddr::new(self.to.ip(), self.to.port() + 1);
        rtp.set_nonblocking(true).unwrap();
        rtcp.set_nonblocking(true).unwrap();
        let mut rep = EndpointReport::default();
        let start = Instant::now();
        let mut seq: u16 = 1000;
        let mut next_rtp = start;
        let mut next_rtcp = start + self.rtcp_first;
        // Reception state of the peer's stream (RFC 3550 A.3 / A.8, simply).
        let mut peer_ssrc = 0u32;
        let mut base: Option<u16> = None;
        let mut max_seq: u16 = 0;
        let mut received_prior = 0u64;
        let mut expected_prior = 0u64;
        let mut jitter = 0f64;
        let mut last_transit: Option<f64> = None;
        let mut last_sr: Option<(u32, Instant)> = None;
        let mut buf = [0u8; 1500];
        let payload = [0xffu8; 160];
        while start.elapsed() < self.duration {
            let now = Instant::now();
            if now >= next_rtp {
                let n = (seq - 1000) as u32;
                if !(self.lossy && seq % 10 == 0) {
                    let mut pkt = vec![0u8; 12 + 160];
                    RtpRepr::new(0, seq, n * 160, self.ssrc)
                        .emit(&mut pkt)
                        .unwrap();
                    pkt[12..].copy_from_slice(&payload);
                    rtp.send_to(&pkt, self.to).unwrap();
                    rep.sent += 1;
                }
                seq = seq.wrapping_add(1);
                next_rtp += Duration::from_millis(20);
            }
            while let Ok((n, _)) = rtp.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                rep.received += 1;
                let s = u16::from_be_bytes([buf[2], buf[3]]);
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                peer_ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                if base.is_none() {
                    base = Some(s);
                    max_seq = s;
                } else if s.wrapping_sub(max_seq) < 0x8000 {
                    max_seq = s;
                }
                let arrival = start.elapsed().as_secs_f64() * 8000.0;
                let transit = arrival - f64::from(ts);
                if let Some(lt) = last_transit {
                    jitter += ((transit - lt).abs() - jitter) / 16.0;
                }
                last_transit = Some(transit);
            }
            while let Ok((n, _)) = rtcp.recv_from(&mut buf) {
                if n >= 28 && buf[1] == 200 {
                    let ntp = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    last_sr = Some(((ntp >> 16) as u32, Instant::now()));
                    rep.srs_received += 1;
                }
            }
            if now >= next_rtcp {
                next_rtcp += self.rtcp_every;
                let expected = base.map_or(0, |b| u64::from(max_seq.wrapping_sub(b)) + 1);
                let lost = expected.saturating_sub(rep.received);
                let exp_int = expected - expected_prior;
                let rec_int = rep.received - received_prior;
                expected_prior = expected;
                received_prior = rep.received;
                let lost_int = exp_int.saturating_sub(rec_int);
                let fraction = (lost_int * 256).checked_div(exp_int).unwrap_or(0) as u8;
                let (lsr, dlsr) = match last_sr {
                    Some((mid, at)) => (mid, (at.elapsed().as_secs_f64() * 65536.0) as u32),
                    None => (0, 0),
                };
                let mut pkt = [0u8; 52];
                emit_header(&mut pkt, 1, 200, 52).unwrap();
                pkt[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
                SenderInfo {
                    ntp_timestamp: ntp_now(),
                    rtp_timestamp: u32::from(seq.wrapping_sub(1000)) * 160,
                    packet_count: rep.sent as u32,
                    octet_count: (rep.sent * 160) as u32,
                }
                .emit(&mut pkt[8..28])
                .unwrap();
                ReportBlock {
                    ssrc: peer_ssrc,
                    fraction_lost: fraction,
                    cumulative_lost: lost as i32,
                    extended_highest_seq: u32::from(max_seq),
                    jitter: jitter as u32,
                    last_sr: lsr,
                    delay_since_last_sr: dlsr,
                }
                .emit(&mut pkt[28..52])
                .unwrap();
                rtcp.send_to(&pkt, to_rtcp).unwrap();
                rep.reports_sent += 1;
            }
            thread::sleep(Duration::from_millis(2));
        }
        rep
    }
}
