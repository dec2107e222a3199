//! Typed configuration: embedded loopback defaults, an optional TOML file, then command-line
//! flags (flag names follow rtpengine's where the meaning is the same). Validated once at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::cidr::Cidr;
use crate::sip::auth::Algorithm;
use crate::sip::presence::WatcherPolicy;

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
    /// XDP where the driver runs it natively and the device forwards (the FIB lookup needs
    /// it), TC elsewhere.
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

/// The config file's `interface`: one `[NAME/]ADDR[!ADVERTISED]` or a list of them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "rtpanchor",
    version,
    about = "SIP-aware RTP media relay (rtpengine ng compatible)"
)]
pub struct Cli {
    /// Media interface: [NAME/]ADDR[!ADVERTISED], repeatable (rtpengine's form). Several
    /// addresses under one name (IPv4 and IPv6, or several of one family: calls spread over
    /// them); no name means `default`. ng `direction` picks names per side. [default: 127.0.0.1]
    #[arg(long)]
    pub interface: Vec<String>,
    /// Lowest media port (RTP ports are even, RTCP = RTP+1). [default: 30000]
    #[arg(long)]
    pub port_min: Option<u16>,
    /// Highest media port. [default: 40000]
    #[arg(long)]
    pub port_max: Option<u16>,
    /// UDP address of the ng control protocol. [default: 127.0.0.1:2223]
    #[arg(long)]
    pub listen_ng: Option<SocketAddr>,
    /// TCP address of the ng control protocol (off unless given).
    #[arg(long)]
    pub listen_tcp_ng: Option<SocketAddr>,
    /// HTTP address for Prometheus `/metrics` and `/health` (off unless given).
    #[arg(long)]
    pub listen_http: Option<SocketAddr>,
    /// Data-plane worker threads, each pinned to a core. [default: one per core]
    #[arg(long)]
    pub num_threads: Option<usize>,
    /// Seconds without media after which a call is torn down. [default: 60]
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Maximum concurrent calls (0 = no limit); beyond it offers get "load limit". [default: 0]
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Force a data-plane engine. [default: auto]
    #[arg(long, value_enum)]
    pub io_engine: Option<IoEngine>,
    /// io_uring: media sockets each ring keeps in its fixed-file table instead of as
    /// descriptors (0 = none). Beyond it sockets stay descriptors. [default: the descriptor
    /// limit, per ring]
    #[arg(long)]
    pub uring_fixed_files: Option<u32>,
    /// io_uring: rings per worker thread, each with its own fixed-file table (1-8). [default:
    /// enough for the worker's share of the port range to fit in the tables, at most 8]
    #[arg(long)]
    pub uring_rings: Option<u32>,
    /// io_uring: descriptors kept free for signalling and new sockets. Media sockets that do
    /// not fit in a worker's first fixed-file table may use the rest, before its next ring is
    /// opened (a second busy ring costs ~10% more per packet). [default: 1/4 of the
    /// descriptor limit, at least 64]
    #[arg(long)]
    pub spare_descriptors: Option<usize>,
    /// SO_RCVBUF for media sockets in bytes (0 = kernel default; the kernel doubles the value
    /// and caps it at net.core.rmem_max). [default: 524288]
    #[arg(long)]
    pub socket_rcvbuf: Option<usize>,
    /// SO_SNDBUF for media sockets in bytes (0 = kernel default). [default: 0]
    #[arg(long)]
    pub socket_sndbuf: Option<usize>,
    /// Drop packets on RTP ports that are not valid RTP/RTCP (default: count and forward:
    /// they may be STUN, DTLS or keepalives).
    #[arg(long)]
    pub strict_rtp: bool,
    /// Send every datagram by itself: no UDP GSO for bursts (GSO is used where the kernel has
    /// it, Linux 4.18+).
    #[arg(long)]
    pub no_gso: bool,
    /// Relay all media in user space. By default the RTP of latched streams is relayed
    /// inside the kernel where it can be (a TC program on the device with the relay's
    /// address; needs root or CAP_BPF+CAP_NET_ADMIN, Linux 6.6+, IPv4, and clang at build
    /// time); where it cannot, the relay says why at start and relays in user space.
    #[arg(long)]
    pub no_kernel_forwarding: bool,
    /// Which in-kernel program relays on real devices: `xdp` at the driver where it runs
    /// natively, `tc` the TC program, `auto` XDP where the driver has it natively and the
    /// device forwards, else TC. Loopback is always TC. [default: auto]
    #[arg(long, value_enum)]
    pub kernel_mode: Option<KernelMode>,
    /// Built-in SIP proxy and registrar: UDP and TCP on this address. [default: 127.0.0.1:5060]
    #[arg(long)]
    pub listen_sip: Option<SocketAddr>,
    /// Do not start the built-in SIP proxy (ng control only).
    #[arg(long)]
    pub no_sip: bool,
    /// SIP over TLS (RFC 3261 §26) on this address too; needs --sips-cert and --sips-key.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_sips: Option<SocketAddr>,
    /// The TLS certificate chain (PEM, leaf first) for --listen-sips. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub sips_cert: Option<PathBuf>,
    /// The private key (PEM) of --sips-cert. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub sips_key: Option<PathBuf>,
    /// CA certificates (PEM) that TLS peers the proxy connects to must chain to; without it
    /// TLS destinations are reached only over connections they opened (a phone's
    /// registration). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub sips_ca: Option<PathBuf>,
    /// A domain the SIP proxy is responsible for (registrations and calls to it are served
    /// here); repeatable. [default: the SIP listen address]
    #[arg(long = "domain", value_name = "NAME")]
    pub domains: Vec<String>,
    /// Next hop (IP:PORT, no DNS) for requests to domains the proxy does not serve; without
    /// it they are refused with 403, so the proxy is not an open relay.
    #[arg(long, value_name = "ADDR:PORT")]
    pub sip_outbound: Option<SocketAddr>,
    /// Largest SIP message accepted, in bytes (at most 65535). [default: 65535]
    #[arg(long)]
    pub sip_max_message: Option<usize>,
    /// Keep call and registration state in Redis or Valkey (`redis://HOST:PORT/DB`): written
    /// behind, off the packet path; at start the stored calls are restored on their ports.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Hitless upgrade: at start, take over the calls and sockets of the relay serving
    /// takeovers at this Unix socket path (if one does: otherwise start afresh), then serve
    /// the next takeover there (e.g. /run/rtpanchor/takeover.sock).
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<PathBuf>,
    /// Standby (needs --redis and --no-sip): follow the active relay's heartbeat in Redis
    /// and take its calls over when it stops or on `rtpanchor ctl active`.
    #[arg(long)]
    pub standby: bool,
    /// SIP users (TOML, HA1 hashes per realm; see `rtpanchor passwd`): turns on digest
    /// authentication. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub sip_users: Option<PathBuf>,
    /// Serve SIP on a non-loopback address without authentication (an open registrar:
    /// anyone may register as anyone).
    #[arg(long)]
    pub sip_open: bool,
    /// SIP peers that skip authentication (e.g. a carrier gateway): CIDR or address;
    /// repeatable.
    #[arg(long = "sip-trusted", value_name = "CIDR")]
    pub sip_trusted: Vec<Cidr>,
    /// With named interfaces: SIP peers in CIDR are on the network of interface NAME (their
    /// media is anchored there; longest prefix wins); repeatable. Peers no rule names are on
    /// the interface whose subnet holds them, else on the default interface.
    #[arg(long = "sip-network", value_name = "NAME=CIDR")]
    pub sip_networks: Vec<String>,
    /// Anchor the SIP proxy's media on this relay (another rtpanchor or an rtpengine, over
    /// ng): `ng:HOST:PORT[;weight=N][;transport=tcp]`, or `embedded[;weight=N]` for this
    /// process's own relay; repeatable (a weighted set, a call sticks to one relay).
    /// [default: the embedded relay alone]
    #[arg(long = "media-relay", value_name = "RELAY")]
    pub media_relays: Vec<String>,
    /// Digest algorithms offered, most preferred first: RFC 8760 phones take the first they
    /// support, but older ones (SIPp 3.6) read only the first challenge and fail on
    /// SHA-256, so MD5 leads by default (baresip 1.0 needs MD5 alone); put SHA-256 first
    /// when every phone has it. [default: MD5,SHA-256]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub sip_auth_algorithms: Vec<String>,
    /// Flood control: most SIP messages per second from one address before it is banned
    /// (0 = no limit). On with --sip-users or a non-loopback --listen-sip; --sip-trusted
    /// peers are exempt. [default: 100]
    #[arg(long, value_name = "N")]
    pub sip_max_rate: Option<u32>,
    /// Flood control: most failed authentications per minute from one address before it is
    /// banned (0 = no limit). [default: 10]
    #[arg(long, value_name = "N")]
    pub sip_max_auth_failures: Option<u32>,
    /// Flood control: how long a ban lasts. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub sip_ban_secs: Option<u64>,
    /// Route SUBSCRIBE/PUBLISH to the phones instead of serving presence, and do not store
    /// MESSAGEs for offline users.
    #[arg(long)]
    pub no_sip_presence: bool,
    /// Presence watchers from other domains: allow, pending or refuse (403); watchers from
    /// our own domains are always allowed. [default: refuse]
    #[arg(long, value_name = "POLICY")]
    pub sip_presence_foreign: Option<WatcherPolicy>,
    /// Where presence state (publications, subscriptions) and stored MESSAGEs are kept
    /// across restarts (an embedded database, `presence.redb`); with --redis they go to
    /// Redis instead. Given: created if missing, and the relay does not start without it.
    /// [default: $STATE_DIRECTORY or /var/lib/rtpanchor, if it exists; else in memory]
    #[arg(long, value_name = "DIR")]
    pub sip_state_dir: Option<PathBuf>,
    /// ng clients allowed (CIDR or address; repeatable); others are dropped and counted.
    /// Required when --listen-ng/--listen-tcp-ng is not on loopback. [default: anyone on
    /// a loopback listener]
    #[arg(long = "ng-allow", value_name = "CIDR")]
    pub ng_allow: Vec<Cidr>,
    /// TOML file with the same keys (kebab-case); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing filter. [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Append one JSON line per ended call to this file (`-`: stdout); SIGHUP reopens it.
    #[arg(long, value_name = "PATH")]
    pub cdr_file: Option<PathBuf>,
    /// On SIGTERM (or ng drain) wait at most this long for calls to end, then end them and
    /// exit; 0 = wait until the last call ends (media timeouts end silent ones). [default: 0]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

/// Tools beside the relay itself.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Subcommand {
    /// Print the --sip-users line for USER in REALM; the password is read from stdin.
    Passwd { user: String, realm: String },
}

/// The file form: every key optional, same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    interface: Option<OneOrMany>,
    port_min: Option<u16>,
    port_max: Option<u16>,
    listen_ng: Option<SocketAddr>,
    listen_tcp_ng: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    num_threads: Option<usize>,
    timeout: Option<u64>,
    max_sessions: Option<usize>,
    io_engine: Option<IoEngine>,
    uring_fixed_files: Option<u32>,
    uring_rings: Option<u32>,
    spare_descriptors: Option<usize>,
    socket_rcvbuf: Option<usize>,
    socket_sndbuf: Option<usize>,
    strict_rtp: Option<bool>,
    no_gso: Option<bool>,
    no_kernel_forwarding: Option<bool>,
    kernel_mode: Option<KernelMode>,
    listen_sip: Option<SocketAddr>,
    no_sip: Option<bool>,
    listen_sips: Option<SocketAddr>,
    sips_cert: Option<PathBuf>,
    sips_key: Option<PathBuf>,
    sips_ca: Option<PathBuf>,
    domain: Option<Vec<String>>,
    sip_outbound: Option<SocketAddr>,
    sip_max_message: Option<usize>,
    sip_users: Option<PathBuf>,
    sip_open: Option<bool>,
    sip_trusted: Option<Vec<String>>,
    sip_network: Option<Vec<String>>,
    media_relay: Option<Vec<String>>,
    sip_auth_algorithms: Option<Vec<String>>,
    sip_max_rate: Option<u32>,
    sip_max_auth_failures: Option<u32>,
    sip_ban_secs: Option<u64>,
    no_sip_presence: Option<bool>,
    sip_presence_foreign: Option<String>,
    sip_state_dir: Option<PathBuf>,
    ng_allow: Option<Vec<String>>,
    log_level: Option<String>,
    redis: Option<String>,
    takeover: Option<PathBuf>,
    standby: Option<bool>,
    cdr_file: Option<PathBuf>,
    drain_timeout: Option<u64>,
}

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
    /// `None`: enough rings for the worker's share of the port range (see `dataplane`).
    pub uring_rings: Option<u32>,
    /// `None`: 1/4 of the descriptor limit, at least 64.
    pub spare_descriptors: Option<usize>,
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
    pub strict_rtp: bool,
    /// Gather bursts for one destination into UDP GSO sends (where the kernel supports it).
    pub gso: bool,
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
    pub sip_outbound: Option<SocketAddr>,
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
            uring_rings: None,
            spare_descriptors: None,
            socket_rcvbuf: DEFAULT_SOCKET_RCVBUF,
            socket_sndbuf: 0,
            strict_rtp: false,
            gso: true,
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

impl Config {
    /// Defaults, then the file named by `--config`, then the flags.
    pub fn load(cli: &Cli) -> anyhow::Result<Config> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        let interfaces = if cli.interface.is_empty() {
            file.interface.clone().map(OneOrMany::into_vec)
        } else {
            Some(cli.interface.clone())
        };
        if let Some(list) = interfaces {
            c.interfaces = crate::session::interfaces::parse_interfaces(&list)
                .map_err(|e| anyhow::anyhow!("--interface: {e}"))?;
            if let Some(first) = c.interfaces.first() {
                c.interface = Interface {
                    local: first.local,
                    advertised: first.sdp_addr(),
                };
            }
        }
        c.port_min = cli.port_min.or(file.port_min).unwrap_or(c.port_min);
        c.port_max = cli.port_max.or(file.port_max).unwrap_or(c.port_max);
        c.listen_ng = cli.listen_ng.or(file.listen_ng).unwrap_or(c.listen_ng);
        c.listen_tcp_ng = cli.listen_tcp_ng.or(file.listen_tcp_ng);
        c.listen_http = cli.listen_http.or(file.listen_http);
        c.num_threads = cli
            .num_threads
            .or(file.num_threads)
            .unwrap_or(c.num_threads);
        c.timeout_secs = cli.timeout.or(file.timeout).unwrap_or(c.timeout_secs);
        c.max_sessions = cli.max_sessions.or(file.max_sessions).unwrap_or(0);
        c.io_engine = cli.io_engine.or(file.io_engine).unwrap_or_default();
        c.uring_fixed_files = cli.uring_fixed_files.or(file.uring_fixed_files);
        c.uring_rings = cli.uring_rings.or(file.uring_rings);
        c.spare_descriptors = cli.spare_descriptors.or(file.spare_descriptors);
        c.socket_rcvbuf = cli
            .socket_rcvbuf
            .or(file.socket_rcvbuf)
            .unwrap_or(DEFAULT_SOCKET_RCVBUF);
        c.socket_sndbuf = cli.socket_sndbuf.or(file.socket_sndbuf).unwrap_or(0);
        c.strict_rtp = cli.strict_rtp || file.strict_rtp.unwrap_or(false);
        c.gso = !(cli.no_gso || file.no_gso.unwrap_or(false));
        c.kernel_forwarding =
            !(cli.no_kernel_forwarding || file.no_kernel_forwarding.unwrap_or(false));
        c.kernel_mode = cli.kernel_mode.or(file.kernel_mode).unwrap_or_default();
        let listen_sip = cli.listen_sip.or(file.listen_sip);
        c.listen_sip_explicit = listen_sip.is_some();
        if let Some(a) = listen_sip {
            c.listen_sip = Some(a);
        }
        if cli.no_sip || file.no_sip.unwrap_or(false) {
            c.listen_sip = None;
        }
        c.listen_sips = cli.listen_sips.or(file.listen_sips);
        c.sips_cert = cli.sips_cert.clone().or(file.sips_cert);
        c.sips_key = cli.sips_key.clone().or(file.sips_key);
        c.sips_ca = cli.sips_ca.clone().or(file.sips_ca);
        c.domains = if cli.domains.is_empty() {
            file.domain.unwrap_or_default()
        } else {
            cli.domains.clone()
        };
        if c.domains.is_empty() {
            if let Some(a) = c.listen_sip {
                // A wildcard listener has no name of its own: use the advertised media address.
                let ip = if a.ip().is_unspecified() {
                    c.interface.advertised
                } else {
                    a.ip()
                };
                c.domains.push(ip.to_string());
            }
        }
        c.sip_outbound = cli.sip_outbound.or(file.sip_outbound);
        c.sip_max_message = cli
            .sip_max_message
            .or(file.sip_max_message)
            .unwrap_or(c.sip_max_message);
        c.sip_users = cli.sip_users.clone().or(file.sip_users);
        c.sip_open = cli.sip_open || file.sip_open.unwrap_or(false);
        let rules = if cli.sip_networks.is_empty() {
            file.sip_network.unwrap_or_default()
        } else {
            cli.sip_networks.clone()
        };
        c.sip_networks = rules
            .iter()
            .map(|r| crate::sip::networks::parse_rule(r).map_err(|e| anyhow::anyhow!(e)))
            .collect::<anyhow::Result<_>>()?;
        c.sip_trusted = if cli.sip_trusted.is_empty() {
            parse_cidrs(file.sip_trusted.unwrap_or_default())?
        } else {
            cli.sip_trusted.clone()
        };
        let relays = if cli.media_relays.is_empty() {
            file.media_relay.unwrap_or_default()
        } else {
            cli.media_relays.clone()
        };
        c.media_relays = relays
            .iter()
            .map(|r| {
                crate::relayset::parse_relay(r)
                    .map_err(|e| anyhow::anyhow!("--media-relay {r:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        c.sip_max_rate = cli
            .sip_max_rate
            .or(file.sip_max_rate)
            .unwrap_or(c.sip_max_rate);
        c.sip_max_auth_failures = cli
            .sip_max_auth_failures
            .or(file.sip_max_auth_failures)
            .unwrap_or(c.sip_max_auth_failures);
        c.sip_ban_secs = cli
            .sip_ban_secs
            .or(file.sip_ban_secs)
            .unwrap_or(c.sip_ban_secs);
        c.sip_presence = !(cli.no_sip_presence || file.no_sip_presence.unwrap_or(false));
        if let Some(p) = cli.sip_presence_foreign {
            c.sip_presence_foreign = p;
        } else if let Some(p) = &file.sip_presence_foreign {
            c.sip_presence_foreign = p
                .parse()
                .map_err(|e: String| anyhow::anyhow!("sip-presence-foreign: {e}"))?;
        }
        c.sip_state_dir = cli.sip_state_dir.clone().or(file.sip_state_dir);
        c.ng_allow = if cli.ng_allow.is_empty() {
            parse_cidrs(file.ng_allow.unwrap_or_default())?
        } else {
            cli.ng_allow.clone()
        };
        let algs = if cli.sip_auth_algorithms.is_empty() {
            file.sip_auth_algorithms.unwrap_or_default()
        } else {
            cli.sip_auth_algorithms.clone()
        };
        if !algs.is_empty() {
            c.sip_auth_algorithms = algs
                .iter()
                .map(|a| {
                    Algorithm::from_name(a.trim()).ok_or_else(|| {
                        anyhow::anyhow!("--sip-auth-algorithms: {a:?} is not SHA-256 or MD5")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(l) = cli.log_level.clone().or(file.log_level) {
            c.log_level = l;
        }
        c.redis = cli.redis.clone().or(file.redis);
        c.takeover = cli.takeover.clone().or(file.takeover);
        c.standby = cli.standby || file.standby.unwrap_or(false);
        c.cdr_file = cli.cdr_file.clone().or(file.cdr_file);
        c.drain_timeout_secs = cli.drain_timeout.or(file.drain_timeout).unwrap_or(0);
        c.validate()?;
        Ok(c)
    }

    /// Whether the SIP proxy bridges networks: `--listen-sip` given and the interfaces carry
    /// more than one name. It then listens on each interface address and picks the network
    /// per peer (`sip::networks`). The default loopback listener stays as it is.
    pub fn bridges_networks(&self) -> bool {
        self.listen_sip.is_some()
            && self.listen_sip_explicit
            && crate::session::interfaces::names(&self.interfaces).len() > 1
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.port_min < self.port_max,
            "--port-min ({}) must be below --port-max ({})",
            self.port_min,
            self.port_max
        );
        anyhow::ensure!(self.num_threads >= 1, "--num-threads must be at least 1");
        anyhow::ensure!(
            self.num_threads <= 256,
            "--num-threads above 256 makes no sense"
        );
        anyhow::ensure!(
            self.uring_rings
                .is_none_or(|n| (1..=MAX_URING_RINGS).contains(&n)),
            "--uring-rings must be within 1-{MAX_URING_RINGS}"
        );
        anyhow::ensure!(
            self.timeout_secs >= 1,
            "--timeout must be at least 1 second"
        );
        for (name, cidr) in &self.sip_networks {
            anyhow::ensure!(
                crate::session::interfaces::is_known(&self.interfaces, name),
                "--sip-network {name}={cidr}: no interface is named {name}"
            );
        }
        if self.listen_sip.is_some() && self.bridges_networks() {
            for i in &self.interfaces {
                anyhow::ensure!(
                    i.local.is_loopback() || self.sip_users.is_some() || self.sip_open,
                    "refusing to serve SIP on interface {} ({}) without authentication: give \
                     --sip-users FILE or --sip-open",
                    i.name,
                    i.local
                );
            }
        }
        anyhow::ensure!(
            (MIN_SIP_MESSAGE..=MAX_SIP_MESSAGE).contains(&self.sip_max_message),
            "--sip-max-message must be within {MIN_SIP_MESSAGE}-{MAX_SIP_MESSAGE} bytes"
        );
        anyhow::ensure!(
            self.domains
                .iter()
                .all(|d| !d.is_empty() && !d.contains(char::is_whitespace)),
            "--domain needs a host name or address"
        );
        if let Some(sips) = self.listen_sips {
            anyhow::ensure!(
                self.listen_sip.is_some(),
                "--listen-sips needs the SIP proxy (drop --no-sip)"
            );
            anyhow::ensure!(
                self.sips_cert.is_some() && self.sips_key.is_some(),
                "--listen-sips needs --sips-cert FILE and --sips-key FILE"
            );
            anyhow::ensure!(
                sips.ip().is_loopback() || self.sip_users.is_some() || self.sip_open,
                "refusing to serve SIP over TLS on {sips} without authentication: give \
                 --sip-users FILE or --sip-open"
            );
        }
        if let Some(sip) = self.listen_sip {
            anyhow::ensure!(
                sip.ip().is_loopback() || self.sip_users.is_some() || self.sip_open,
                "refusing to serve SIP on {sip} without authentication: anyone could register \
                 as any user and take their calls. Give --sip-users FILE (see `rtpanchor \
                 passwd`), or --sip-open to run an open registrar on purpose, or a loopback \
                 --listen-sip, or --no-sip"
            );
        }
        for ng in std::iter::once(self.listen_ng).chain(self.listen_tcp_ng) {
            anyhow::ensure!(
                ng.ip().is_loopback() || !self.ng_allow.is_empty(),
                "refusing to serve ng on {ng} to anyone: ng has no authentication, so any \
                 host could open and tear down calls. Give --ng-allow CIDR (your SIP \
                 proxies), or a loopback address"
            );
        }
        Ok(())
    }
}

/// The file form of a CIDR list.
fn parse_cidrs(list: Vec<String>) -> anyhow::Result<Vec<Cidr>> {
    list.iter()
        .map(|s| s.parse::<Cidr>().map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_rtpengine_like() {
        let c = Config::load(&Cli::default()).unwrap();
        assert_eq!(c.interface.local, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((c.port_min, c.port_max), (30000, 40000));
        assert_eq!(c.listen_ng, "127.0.0.1:2223".parse().unwrap());
        assert_eq!(c.timeout_secs, 60);
        assert!(c.num_threads >= 1);
        assert!(c.gso, "GSO for bursts is on unless turned off");
        assert!(
            c.kernel_forwarding,
            "the in-kernel path is tried unless turned off"
        );
        assert!(
            !Config::load(&Cli::parse_from(["x", "--no-kernel-forwarding"]))
                .unwrap()
                .kernel_forwarding
        );
        assert_eq!(c.kernel_mode, KernelMode::Auto);
        let tc = Config::load(&Cli::parse_from(["x", "--kernel-mode", "tc"])).unwrap();
        assert_eq!(tc.kernel_mode, KernelMode::Tc);
        assert_eq!(c.socket_rcvbuf, DEFAULT_SOCKET_RCVBUF);
        let zero = Config::load(&Cli::parse_from(["x", "--socket-rcvbuf", "0"])).unwrap();
        assert_eq!(zero.socket_rcvbuf, 0, "0 keeps the kernel default");
    }

    #[test]
    fn gso_can_be_turned_off_by_flag_or_file() {
        assert!(
            !Config::load(&Cli::parse_from(["x", "--no-gso"]))
                .unwrap()
                .gso
        );
        let dir = std::env::temp_dir().join(format!("rtpanchor-gso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "no-gso = true\n").unwrap();
        let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
        assert!(!c.gso);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("rtpanchor-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "port-min = 20000\nport-max = 21000\ntimeout = 5\ninterface = \"127.0.0.2\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "rtpanchor",
            "--config",
            path.to_str().unwrap(),
            "--port-max",
            "22000",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!((c.port_min, c.port_max, c.timeout_secs), (20000, 22000, 5));
        assert_eq!(c.interface.local.to_string(), "127.0.0.2");
        std::fs::write(&path, "no-such-key = 1\n").unwrap();
        assert!(Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn interface_forms() {
        let i: Interface = "10.0.0.1!203.0.113.5".parse().unwrap();
        assert_eq!(i.local.to_string(), "10.0.0.1");
        assert_eq!(i.advertised.to_string(), "203.0.113.5");
        let i: Interface = "pub/::1".parse().unwrap();
        assert_eq!(i.local.to_string(), "::1");
        assert!("nonsense".parse::<Interface>().is_err());
    }

    #[test]
    fn sip_networks_need_known_names_and_bridging_needs_authentication() {
        let base = [
            "x",
            "--interface",
            "internal/10.0.0.1",
            "--interface",
            "external/203.0.113.1",
            "--listen-sip",
            "10.0.0.1:5060",
            "--sip-open",
        ];
        let with = |more: &[&str]| {
            let args: Vec<&str> = base.iter().chain(more).copied().collect();
            Config::load(&Cli::parse_from(args))
        };
        let c = with(&["--sip-network", "external=0.0.0.0/0"]).unwrap();
        assert!(c.bridges_networks());
        assert_eq!(c.sip_networks.len(), 1);
        assert_eq!(c.sip_networks[0].0, "external");
        assert!(with(&["--sip-network", "dmz=192.0.2.0/24"]).is_err());
        assert!(with(&["--sip-network", "external"]).is_err());
        // Without --sip-open (or users) the interfaces would be an open registrar.
        let closed = Cli::parse_from(&base[..base.len() - 1]);
        assert!(Config::load(&closed).is_err());
        // Without --listen-sip the default loopback listener is kept: nothing to refuse.
        let ng_only = Cli::parse_from(&base[..5]);
        assert!(!Config::load(&ng_only).unwrap().bridges_networks());
        assert!(!Config::load(&Cli::default()).unwrap().bridges_networks());
    }

    #[test]
    fn named_interfaces_from_flags_and_file() {
        let c = Config::load(&Cli::default()).unwrap();
        assert_eq!(c.interfaces.len(), 1);
        assert_eq!(c.interfaces[0].name, "default");
        let c = Config::load(&Cli::parse_from([
            "x",
            "--interface",
            "internal/10.0.0.1",
            "--interface",
            "external/192.168.7.1!203.0.113.1",
            "--interface",
            "external/2001:db8::1",
            "--no-sip",
        ]))
        .unwrap();
        let names: Vec<_> = c.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["internal", "external", "external"]);
        assert_eq!(c.interface.local.to_string(), "10.0.0.1");
        assert_eq!(c.interfaces[1].sdp_addr().to_string(), "203.0.113.1");
        assert!(Config::load(&Cli::parse_from(["x", "--interface", "a/10.0.0.1!::1"])).is_err());
        let dir = std::env::temp_dir().join(format!("rtpanchor-ifs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "interface = [\"lan/127.0.0.2\", \"wan/127.0.0.3!192.0.2.3\"]\n",
        )
        .unwrap();
        let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[1].name, "wan");
        assert_eq!(c.interface.local.to_string(), "127.0.0.2");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sip_listener_and_domains() {
        let c = Config::load(&Cli::default()).unwrap();
        assert_eq!(c.listen_sip, Some("127.0.0.1:5060".parse().unwrap()));
        assert!(!c.listen_sip_explicit);
        assert_eq!(c.domains, vec!["127.0.0.1".to_string()]);
        assert_eq!(c.sip_max_message, MAX_SIP_MESSAGE);
        assert_eq!(c.sip_outbound, None);
        let c = Config::load(&Cli::parse_from([
            "rtpanchor",
            "--listen-sip",
            "127.0.0.2:5070",
            "--domain",
            "example.org",
            "--domain",
            "example.net",
            "--sip-max-message",
            "4096",
            "--sip-outbound",
            "127.0.0.9:5060",
        ]))
        .unwrap();
        assert_eq!(c.sip_outbound, Some("127.0.0.9:5060".parse().unwrap()));
        assert_eq!(c.listen_sip, Some("127.0.0.2:5070".parse().unwrap()));
        assert!(c.listen_sip_explicit);
        assert_eq!(c.domains, vec!["example.org", "example.net"]);
        assert_eq!(c.sip_max_message, 4096);
        let c = Config::load(&Cli::parse_from([
            "rtpanchor",
            "--listen-sip",
            "127.0.0.3:5080",
        ]))
        .unwrap();
        assert_eq!(c.domains, vec!["127.0.0.3"]);
        let c = Config::load(&Cli::parse_from([
            "rtpanchor",
            "--interface",
            "127.0.0.4",
            "--listen-sip",
            "0.0.0.0:5060",
            "--sip-open",
        ]))
        .unwrap();
        assert_eq!(c.domains, vec!["127.0.0.4"]);
        let c = Config::load(&Cli::parse_from(["rtpanchor", "--no-sip"])).unwrap();
        assert_eq!(c.listen_sip, None);
        for bad in ["100", "70000"] {
            let cli = Cli::parse_from(["rtpanchor", "--sip-max-message", bad]);
            assert!(Config::load(&cli).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_sips_needs_its_files_the_proxy_and_the_secure_default() {
        let files = ["--sips-cert", "/c.pem", "--sips-key", "/k.pem"];
        let load = |args: &[&str]| Config::load(&Cli::parse_from([&["x"], args].concat()));
        let e = load(&["--listen-sips", "127.0.0.1:5061"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--sips-cert"), "{e}");
        let c = load(&[&["--listen-sips", "127.0.0.1:5061"], &files[..]].concat()).unwrap();
        assert_eq!(c.listen_sips, Some("127.0.0.1:5061".parse().unwrap()));
        assert!(
            load(&[&["--listen-sips", "127.0.0.1:5061", "--no-sip"], &files[..]].concat()).is_err()
        );
        let e = load(&[&["--listen-sips", "192.0.2.1:5061"], &files[..]].concat())
            .unwrap_err()
            .to_string();
        assert!(e.contains("without authentication"), "{e}");
    }

    #[test]
    fn public_sip_needs_users_or_sip_open() {
        let public = ["x", "--listen-sip", "192.0.2.1:5060"];
        let e = Config::load(&Cli::parse_from(public))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("without authentication") && e.contains("--sip-users"),
            "{e}"
        );
        let wildcard = Cli::parse_from(["x", "--listen-sip", "0.0.0.0:5060"]);
        assert!(Config::load(&wildcard).is_err());
        let mut open = public.to_vec();
        open.push("--sip-open");
        assert!(Config::load(&Cli::parse_from(&open)).unwrap().sip_open);
        let mut users = public.to_vec();
        users.extend(["--sip-users", "/etc/rtpanchor/users.toml"]);
        let c = Config::load(&Cli::parse_from(&users)).unwrap();
        assert!(c.sip_users.is_some());
        // Loopback and --no-sip need neither.
        assert!(Config::load(&Cli::parse_from(["x", "--listen-sip", "127.0.0.5:5060"])).is_ok());
        assert!(Config::load(&Cli::parse_from([
            "x",
            "--interface",
            "192.0.2.1",
            "--no-sip"
        ]))
        .is_ok());
    }

    #[test]
    fn public_ng_needs_an_allow_list() {
        for flag in ["--listen-ng", "--listen-tcp-ng"] {
            let cli = Cli::parse_from(["x", flag, "192.0.2.1:2223"]);
            let e = Config::load(&cli).unwrap_err().to_string();
            assert!(e.contains("--ng-allow"), "{e}");
            let cli = Cli::parse_from(["x", flag, "192.0.2.1:2223", "--ng-allow", "192.0.2.0/24"]);
            let c = Config::load(&cli).unwrap();
            assert_eq!(c.ng_allow, vec!["192.0.2.0/24".parse::<Cidr>().unwrap()]);
        }
        assert!(Cli::try_parse_from(["x", "--ng-allow", "300.0.0.0/8"]).is_err());
    }

    #[test]
    fn auth_options_from_flags_and_file() {
        let c = Config::load(&Cli::default()).unwrap();
        assert_eq!(
            c.sip_auth_algorithms,
            vec![Algorithm::Md5, Algorithm::Sha256]
        );
        let c = Config::load(&Cli::parse_from([
            "x",
            "--sip-auth-algorithms",
            "sha-256,MD5",
            "--sip-trusted",
            "10.0.0.0/8",
            "--sip-trusted",
            "192.0.2.7",
        ]))
        .unwrap();
        assert_eq!(
            c.sip_auth_algorithms,
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        assert_eq!(c.sip_trusted.len(), 2);
        assert!(Config::load(&Cli::parse_from(["x", "--sip-auth-algorithms", "sha-512"])).is_err());
        let dir = std::env::temp_dir().join(format!("rtpanchor-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "sip-users = \"/u.toml\"\nsip-trusted = [\"10.0.0.0/8\"]\nng-allow = [\"127.0.0.1\"]\n",
        )
        .unwrap();
        let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(
            c.sip_users.as_deref(),
            Some(std::path::Path::new("/u.toml"))
        );
        assert_eq!(c.sip_trusted.len(), 1);
        assert_eq!(c.ng_allow.len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn invalid_ranges_rejected() {
        let cli = Cli::parse_from(["rtpanchor", "--port-min", "5000", "--port-max", "4000"]);
        assert!(Config::load(&cli).is_err());
    }
}
