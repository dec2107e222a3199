//! Typed configuration: embedded loopback defaults, an optional TOML file, then command-line
//! flags (flag names follow rtpengine's where the meaning is the same). Validated once at start.
//!
//! `cli.rs` (the flags), `file.rs` (the TOML file's form), `load.rs` (defaults, file and
//! flags merged: media, control, storage), `sip.rs` (the SIP proxy's options merged),
//! `validate.rs` (checks and the secure defaults).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Deserialize;

use crate::cidr::Cidr;
use crate::sip::auth::Algorithm;
use crate::sip::presence::WatcherPolicy;
use crate::sip::transport::NextHop;

mod cli;
mod file;
mod load;
mod sip;
#[cfg(test)]
mod tests;
mod validate;

pub use cli::{Cli, Subcommand};

/// Largest SIP message (the message layer's own limit, `sip::parse::MAX_MESSAGE_LEN`).
pub const MAX_SIP_MESSAGE: usize = 65_535;
/// Smallest `--sip-max-message` accepted (an INVITE with SDP needs a couple of KiB).
pub const MIN_SIP_MESSAGE: usize = 1_024;

/// Receive queue asked for each media socket. The kernel default (212 KB) holds ~3 ms of a
/// single stream at 90k packets/s; with a low-priority CPU hog on the relay's core that
/// overflowed in every run at 150k (1 call: 107-455 packets lost in 5 s), and with this
/// value in none of three runs (BENCHMARKS-history.md, second session, receive-queue table). The memory is the kernel's, used only while
/// packets wait.
pub const DEFAULT_SOCKET_RCVBUF: usize = 512 * 1024;

/// Most io_uring rings one worker thread drives (`--uring-rings`); each holds 8 MiB of
/// receive buffers.
pub const MAX_URING_RINGS: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoEngine {
    /// io_uring when the kernel allows it, else recvmmsg/sendmmsg.
    #[default]
    Auto,
    Uring,
    Mmsg,
}

/// Which in-kernel program relays on a real device (`--kernel-mode`); loopback always gets
/// the TC program (it has no native XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KernelMode {
    /// XDP where a driver backs the device (not veth, tun, bond, ...: XDP costs more than
    /// TC there), runs it natively and the device forwards (the FIB lookup needs it), TC
    /// elsewhere.
    #[default]
    Auto,
    /// XDP wherever the driver runs it natively, forwarding or not (TC relays what XDP
    /// cannot send).
    Xdp,
    /// The TC program only.
    Tc,
}

/// A media interface: the address bound for media, and the one written into SDP (they differ
/// behind 1:1 NAT, rtpengine's `--interface=LOCAL!ADVERTISED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    pub local: IpAddr,
    pub advertised: IpAddr,
}

impl std::str::FromStr for Interface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let i = crate::session::interfaces::parse_interface(s)?;
        Ok(Interface {
            local: i.local,
            advertised: i.sdp_addr(),
        })
    }
}

/// io_uring: how long (µs) a worker waking from sleep may go on gathering completions, so
/// one wake-up handles a batch: 0.4 ms, 2% of a 20 ms voice packet interval. Each wake-up
/// costs the worker its own switch back in and, on loopback or any path where the receiver
/// sleeps, the wake-up of whoever reads its sends: a quarter of its CPU per packet at 100
/// calls with 200 µs (BENCHMARKS.md, issue 19 item 6); 400 µs halves the wake-ups.
pub const DEFAULT_BATCH_WAIT_US: u32 = 400;

#[derive(Clone, Debug)]
pub struct Config {
    /// The first of `interfaces` (the address the kernel path, SIP and logs use by default).
    pub interface: Interface,
    /// Every media interface, in the order given (`--interface`, repeatable).
    pub interfaces: Vec<crate::session::negotiate::RelayInterface>,
    pub port_min: u16,
    pub port_max: u16,
    pub listen_ng: SocketAddr,
    pub listen_tcp_ng: Option<SocketAddr>,
    pub listen_http: Option<SocketAddr>,
    pub num_threads: usize,
    pub timeout_secs: u64,
    pub max_sessions: usize,
    pub io_engine: IoEngine,
    /// `None`: as many as the descriptor limit allows.
    pub uring_fixed_files: Option<u32>,
    /// io_uring: microseconds a waking worker may wait to batch completions (0: none).
    pub uring_batch_wait_us: u32,
    /// `None`: enough rings for the worker's share of the port range (see `dataplane`).
    pub uring_rings: Option<u32>,
    /// `None`: 1/4 of the descriptor limit, at least 64.
    pub spare_descriptors: Option<usize>,
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
    pub strict_rtp: bool,
    /// Gather bursts for one destination into UDP GSO sends (where the kernel supports it).
    pub gso: bool,
    /// Connect a media socket to its endpoint's locked source (user space, io_uring).
    pub connect_latched: bool,
    /// Try the in-kernel fast path (see `dataplane::kernel`); on unless turned off.
    pub kernel_forwarding: bool,
    /// Which program relays in the kernel on real devices.
    pub kernel_mode: KernelMode,
    /// The SIP proxy's address (UDP and TCP); `None` with `--no-sip`.
    pub listen_sip: Option<SocketAddr>,
    /// Whether `listen_sip` was asked for (flag or file). The default listener is
    /// best-effort: if its port is taken the relay runs without SIP and says so; an explicit
    /// one that cannot be bound stops the start.
    pub listen_sip_explicit: bool,
    /// SIP over TLS (`--listen-sips`), with its certificate, key and CA files.
    pub listen_sips: Option<SocketAddr>,
    pub sips_cert: Option<PathBuf>,
    pub sips_key: Option<PathBuf>,
    pub sips_ca: Option<PathBuf>,
    /// Domains the proxy serves; never empty when `listen_sip` is set.
    pub domains: Vec<String>,
    /// `--sip-outbound`: where requests for other domains go, and over what.
    pub sip_outbound: Option<NextHop>,
    pub sip_max_message: usize,
    /// Digest authentication's users file; `None`: no authentication.
    pub sip_users: Option<PathBuf>,
    /// Serving SIP on a public address without authentication was asked for explicitly.
    pub sip_open: bool,
    pub sip_trusted: Vec<Cidr>,
    /// `--sip-network NAME=CIDR` rules, as given.
    pub sip_networks: Vec<(String, Cidr)>,
    /// `--media-relay` (empty: the embedded relay alone).
    pub media_relays: Vec<crate::relayset::RelaySpec>,
    pub sip_auth_algorithms: Vec<Algorithm>,
    pub sip_max_rate: u32,
    pub sip_max_auth_failures: u32,
    pub sip_ban_secs: u64,
    /// Serve presence and store messages (`sip::presence`).
    pub sip_presence: bool,
    pub sip_presence_foreign: WatcherPolicy,
    /// `--sip-state-dir`; `None`: the default directory if it exists.
    pub sip_state_dir: Option<PathBuf>,
    /// ng clients allowed; empty: anyone (only allowed on loopback listeners).
    pub ng_allow: Vec<Cidr>,
    pub log_level: String,
    /// State store URL (`--redis`); `None`: state lives in this process only.
    pub redis: Option<String>,
    /// The takeover socket (`--takeover`): taken over from at start, served after.
    pub takeover: Option<PathBuf>,
    /// A standby relay (`--standby`).
    pub standby: bool,
    /// Call records (`--cdr-file`), off unless given.
    pub cdr_file: Option<PathBuf>,
    /// Longest drain (`--drain-timeout`); 0 = no limit.
    pub drain_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Config {
            interface: Interface {
                local: lo,
                advertised: lo,
            },
            interfaces: vec![crate::session::negotiate::RelayInterface::new(
                crate::session::interfaces::DEFAULT_NAME,
                lo,
            )],
            port_min: 30000,
            port_max: 40000,
            listen_ng: SocketAddr::new(lo, 2223),
            listen_tcp_ng: None,
            listen_http: None,
            num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout_secs: 60,
            max_sessions: 0,
            io_engine: IoEngine::Auto,
            uring_fixed_files: None,
            uring_batch_wait_us: DEFAULT_BATCH_WAIT_US,
            uring_rings: None,
            spare_descriptors: None,
            socket_rcvbuf: DEFAULT_SOCKET_RCVBUF,
            socket_sndbuf: 0,
            strict_rtp: false,
            gso: true,
            connect_latched: false,
            kernel_forwarding: true,
            kernel_mode: KernelMode::Auto,
            listen_sip: Some(SocketAddr::new(lo, 5060)),
            listen_sip_explicit: false,
            listen_sips: None,
            sips_cert: None,
            sips_key: None,
            sips_ca: None,
            domains: vec![lo.to_string()],
            sip_outbound: None,
            sip_max_message: MAX_SIP_MESSAGE,
            sip_users: None,
            sip_open: false,
            sip_trusted: Vec::new(),
            sip_networks: Vec::new(),
            media_relays: Vec::new(),
            sip_auth_algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            sip_max_rate: 100,
            sip_max_auth_failures: 10,
            sip_ban_secs: 300,
            sip_presence: true,
            sip_presence_foreign: WatcherPolicy::Refuse,
            sip_state_dir: None,
            ng_allow: Vec::new(),
            log_level: "info".into(),
            redis: None,
            takeover: None,
            standby: false,
            cdr_file: None,
            drain_timeout_secs: 0,
        }
    }
}
