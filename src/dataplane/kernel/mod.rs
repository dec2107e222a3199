//! The in-kernel fast path: a TC program (`forward.bpf.c`) relays the RTP of latched streams
//! inside the kernel, so those packets never wake a worker; on real devices whose driver runs
//! XDP natively an XDP program with the same parsing and tracking relays them before the
//! kernel builds an skb, and passes to the TC program what it cannot send (`xdp.rs`).
//!
//! The worker stays the owner of every stream. Once both ends of a direction are latched
//! (confirmed sources) it copies that direction's RTP tracker into the program's map
//! ([`KernelWorker::turn`]); the program then checks the source, tracks sequence numbers,
//! loss, duplicates, reordering and jitter exactly as `rtp::stats` does, rewrites the
//! addresses and sends the packet on. RTP with CSRCs, a header extension (RFC 8285 one-byte
//! or two-byte, or any RFC 3550 one) or padding it relays whole after checking that they
//! fit, as the worker's parser does. RTCP, non-RTP and malformed RTP it passes up to the
//! worker's socket and the stream stays in the kernel. What the tracker or the latch must
//! see (another source, SSRC or payload type, a big sequence jump) it passes up and stops
//! forwarding; the worker then takes the tracker back
//! ([`KernelWorker::on_user_packet`]) before it handles the packet, and offers the stream to
//! the kernel again later. The worker folds the kernel's counts into the stream's published
//! figures on its housekeeping ticks, so ng queries, timeouts and metrics read the same
//! cells as before.
//!
//! Scope: IPv4 and IPv6 (UDP right after the fixed IPv6 header); the map keys both with
//! 16-byte addresses, IPv4 mapped. A relay on loopback (127.0.0.0/8, ::1) relays between
//! endpoints on loopback: the program sits on `lo` and sends the packet out of it again. A
//! relay on a real address relays between endpoints elsewhere: the program sits on the
//! device that has the address, the worker asks rtnetlink which device each destination is
//! routed through (`ip route get`, for either family), and the program sends the packet out
//! of it with `bpf_redirect_neigh`, which finds the next hop's MAC (ARP or NDP). A
//! direction that mixes loopback and real addresses, or the two families, stays in user
//! space. The program is attached with TCX (Linux 6.6+), a link that goes away with the
//! process, so a relay that dies leaves nothing behind.

pub mod abi;
pub mod dirs;
pub mod handover;
pub mod keys;
pub mod load;
pub mod mapped;
pub mod offer;
pub mod pace;
pub mod reasons;
pub mod route;
pub mod xdp;

pub use handover::KernelWorker;
pub use load::KernelPath;

/// Whether this build carries the program (clang was found at build time).
pub const BUILT: bool = cfg!(rtpanchor_bpf);
