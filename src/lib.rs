//! rtpanchor: a SIP-aware RTP media relay.
//!
//! Three planes:
//! - **Data plane** (`dataplane`): one pinned worker thread per core, each owning an io_uring
//!   (or a `recvmmsg`/`sendmmsg` loop where io_uring is unavailable). It forwards RTP/RTCP
//!   between the two sides of a media stream, tracks stream quality and latches NATed
//!   endpoints. It never allocates, locks or logs per packet.
//! - **Control plane** (`server`, tokio): the rtpengine-compatible ng protocol over UDP/TCP
//!   and (later) a SIP proxy/registrar. Both drive the one session layer (`session`).
//! - **Clients** (`client`): a blocking ng client of a running relay, for the tests, the
//!   benchmark tools and operators; its protocol part is sans-IO in `control::client`.
//! - **Protocol logic** (`rtp`, `sdp`, `sip`, `control`, `session`): sans-IO. Functions and
//!   state machines over bytes and a caller-supplied clock; no sockets, no OS clock.
//!
//! `unsafe` lives only in `dataplane` (io_uring and the mmsg fallback need raw syscalls);
//! every block there carries a `// SAFETY:` comment.

pub mod addr;
pub mod app;
pub mod cidr;
pub mod client;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dataplane;
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub mod metrics;
pub mod ops;
pub mod relayset;
pub mod reload;
pub mod rtp;
pub mod sdp;
pub mod server;
pub mod session;
pub mod sip;
pub mod store;
pub mod takeover;
pub mod time;
pub mod upgrade;
