//! Relay sets: the built-in SIP proxy anchoring media on several relays (`--media-relay`),
//! other rtpanchor boxes or rtpengine over ng, and/or its embedded one. Sans-IO: the set's
//! state ([`set`]: weighted choice, Call-ID stickiness, health, counters), the ng requests
//! and what their replies mean ([`ng`]), and the proxy's media hook over them ([`hook`]),
//! which hands the ng requests to the I/O side (`server::relays`) and is fed the replies.
//! The ng protocol itself (cookies, retransmission, reply matching) is
//! [`crate::control::client`], the same client `rtpanchor ctl` and the benchmarks use.

pub mod hook;
pub mod ng;
pub mod rtt;
pub mod set;
pub mod spec;

pub use hook::{Completion, Job, JobId, Outcome, RelayMedia};
pub use set::{HealthConfig, HealthEvent, RelayId, RelaySet, RelaySnapshot};
pub use spec::{parse_relay, NgTransport, RelaySpec, RelayTarget};
