//! The command line (clap): every flag, each optional so the file and the defaults can fill it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use super::{IoEngine, KernelMode};
use crate::cidr::Cidr;
use crate::sip::presence::WatcherPolicy;
use crate::sip::transport::NextHop;

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
    /// io_uring: once a worker has slept, it wakes for its first completions only after up
    /// to this many microseconds (or 32 completions), so each wake-up handles a batch; a
    /// packet waits at most this long more. Needs Linux 6.12+ (IORING_FEAT_MIN_TIMEOUT);
    /// 0 wakes for every completion. [default: 400]
    #[arg(long)]
    pub uring_batch_wait_us: Option<u32>,
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
    /// In user space (io_uring engine, no in-kernel fast path), connect a media socket to
    /// its endpoint's source once the latch has locked it in, so each send skips the
    /// kernel's route lookup. The kernel then drops packets from other sources before the
    /// relay sees them (answering with ICMP port unreachable): they are not counted in
    /// `drop_source` while the socket is connected. Off by default.
    #[arg(long)]
    pub connect_latched: bool,
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
    /// Next hop (an IP and port, no DNS) for requests to domains the proxy does not serve;
    /// without it they are refused with 403, so the proxy is not an open relay. `ADDR:PORT`
    /// is reached over UDP; `ADDR:PORT;transport=tcp|tls`, `sip:ADDR:PORT;transport=...` or
    /// `sips:ADDR:PORT` name the transport. A `sips:` request goes out over TLS only.
    #[arg(long, value_name = "[sips:]ADDR:PORT[;transport=T]")]
    pub sip_outbound: Option<NextHop>,
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
