//! Sans-IO RTP/RTCP: wire views, demultiplexing and per-stream quality tracking.
//!
//! Everything here runs on the data plane's per-packet path: no allocation, no locks, no
//! panics on hostile input, no clock reads (time is passed in as monotonic nanoseconds).
//!
//! - [`packet`]: checked view of an RTP packet (RFC 3550 §5.1), and its header as values
//!   ([`RtpRepr`]: parse and emit).
//! - [`rtcp`]: compound RTCP validation and SR/RR report blocks (RFC 3550 §6.4, §A.2).
//! - [`demux`]: RTP / RTCP / STUN / DTLS / ZRTP on one port (RFC 7983, RFC 5761 §4).
//! - [`seq`]: extended sequence numbers, duplicates and reordering (RFC 3550 §A.1).
//! - [`stats`]: loss and interarrival jitter per stream direction (RFC 3550 §A.3, §A.8).
//! - [`clock`]: RTP clock rates, static (RFC 3551) and learnt from SDP.
//! - [`mos`]: MOS estimates from loss, jitter and round-trip time (G.107 E-model; control plane only).

#![forbid(unsafe_code)]

pub mod clock;
pub mod demux;
pub mod mos;
pub mod packet;
pub mod rtcp;
pub mod seq;
pub mod stats;

pub use clock::{static_clock_rate_hz, ClockRateMap};
pub use demux::{classify, PacketKind};
pub use packet::{
    CsrcList, RtpEmitError, RtpError, RtpExtension, RtpPacket, RtpRepr, RTP_HEADER_LEN,
};
pub use rtcp::{for_each_report_block, validate_compound, ReportBlock, RtcpError};
pub use seq::{ExtendedSeq, SeqEvent, SeqVerdict};
pub use stats::{RtpStreamStats, RtpStreamTracker};
