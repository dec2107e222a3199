//! rtpbench: a load generator and benchmark for ng-controlled RTP relays (rtpanchor,
//! rtpengine, and the `reflector` yardstick in this package).
//!
//! Modules: `ng` (the requests and replies; the client is `rtpanchor::client::ng`), `sdp`
//! (build/parse the one-stream SDP), `stats` (packet stamp,
//! loss/reorder/duplicate/jitter accounting, percentiles), `traffic` (sockets, paced sender,
//! receiver), `procfs` (CPU time of the relay, UDP drop counters), `plot` (SVG), and `sys`
//! (the batched syscalls; the only `unsafe` of the package). Bencode and the RTP header come
//! from the relay crate (`rtpanchor::control::bencode`, `rtpanchor::rtp::RtpRepr`).

pub mod ng;
pub mod plot;
pub mod procfs;
pub mod sdp;
pub mod stats;
pub mod sys;
pub mod traffic;
