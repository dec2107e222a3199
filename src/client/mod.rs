//! Clients of a running relay: an I/O edge, like `server`, but blocking and without tokio.
//!
//! - [`ng`]: a blocking ng client over UDP (cookies, Kamailio-style retransmission) or TCP,
//!   with pipelining for load generators. The protocol part (framing, reply matching, the
//!   retransmission schedule) is sans-IO in [`crate::control::client`]; this module only owns
//!   the socket and reads the clock.
//!
//! Used by the integration tests, the benchmarks' tools (`tools/rtpbench`) and meant for an
//! operator's command line.
#![forbid(unsafe_code)]

pub mod ng;
