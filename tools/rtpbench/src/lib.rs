//! rtpbench: a load generator and benchmark for ng-controlled RTP relays (rtpanchor,
//! rtpengine, and the `reflector` yardstick in this package).
//!
//! Modules: `ng` (control client), `sdp` (build/parse the one-stream SDP), `stats` (packet
//! stamp, loss/reorder/duplicate/jitter accounting, percentiles), `traffic` (sockets, paced
//! sender, receiver), `procfs` (CPU time of the relay, UDP drop counters), `plot` (SVG),
//! `sys` (the batched syscalls; the only `unsafe` of the package), and the temporary
//! bencode shim `ngwire`.

pub mod ng;
pub mod ngwire;
pub mod plot;
pub mod procfs;
pub mod sdp;
pub mod stats;
pub mod sys;
pub mod traffic;
