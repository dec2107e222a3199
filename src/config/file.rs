//! The TOML file's form (`--config`): the flags' names in kebab-case, every key optional,
//! unknown keys refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::IoEngine;
use crate::cidr::Cidr;
use crate::sip::transport::NextHop;

/// The config file's `interface`: one `[NAME/]ADDR[!ADVERTISED]` or a list of them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The file form: every key optional, same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) interface: Option<OneOrMany>,
    pub(super) port_min: Option<u16>,
    pub(super) port_max: Option<u16>,
    pub(super) listen_ng: Option<SocketAddr>,
    pub(super) listen_tcp_ng: Option<SocketAddr>,
    pub(super) listen_http: Option<SocketAddr>,
    pub(super) num_threads: Option<usize>,
    pub(super) timeout: Option<u64>,
    pub(super) max_sessions: Option<usize>,
    pub(super) io_engine: Option<IoEngine>,
    pub(super) uring_fixed_files: Option<u32>,
    pub(super) uring_batch_wait_us: Option<u32>,
    pub(super) uring_rings: Option<u32>,
    pub(super) spare_descriptors: Option<usize>,
    pub(super) socket_rcvbuf: Option<usize>,
    pub(super) socket_sndbuf: Option<usize>,
    pub(super) strict_rtp: Option<bool>,
    pub(super) no_gso: Option<bool>,
    pub(super) connect_latched: Option<bool>,
    pub(super) no_kernel_forwarding: Option<bool>,
    pub(super) kernel_mode: Option<super::KernelMode>,
    pub(super) listen_sip: Option<SocketAddr>,
    pub(super) no_sip: Option<bool>,
    pub(super) listen_sips: Option<SocketAddr>,
    pub(super) sips_cert: Option<PathBuf>,
    pub(super) sips_key: Option<PathBuf>,
    pub(super) sips_ca: Option<PathBuf>,
    pub(super) domain: Option<Vec<String>>,
    pub(super) sip_outbound: Option<NextHop>,
    pub(super) sip_max_message: Option<usize>,
    pub(super) sip_users: Option<PathBuf>,
    pub(super) sip_open: Option<bool>,
    pub(super) sip_trusted: Option<Vec<String>>,
    pub(super) sip_network: Option<Vec<String>>,
    pub(super) media_relay: Option<Vec<String>>,
    pub(super) sip_auth_algorithms: Option<Vec<String>>,
    pub(super) sip_max_rate: Option<u32>,
    pub(super) sip_max_auth_failures: Option<u32>,
    pub(super) sip_ban_secs: Option<u64>,
    pub(super) no_sip_presence: Option<bool>,
    pub(super) sip_presence_foreign: Option<String>,
    pub(super) sip_state_dir: Option<PathBuf>,
    pub(super) ng_allow: Option<Vec<String>>,
    pub(super) log_level: Option<String>,
    pub(super) redis: Option<String>,
    pub(super) takeover: Option<PathBuf>,
    pub(super) standby: Option<bool>,
    pub(super) cdr_file: Option<PathBuf>,
    pub(super) drain_timeout: Option<u64>,
}

impl FileConfig {
    /// The file at `path`, or every key unset without one.
    pub(super) fn read(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))
            }
            None => Ok(FileConfig::default()),
        }
    }
}

/// The file form of a CIDR list.
pub(super) fn parse_cidrs(list: Vec<String>) -> anyhow::Result<Vec<Cidr>> {
    list.iter()
        .map(|s| s.parse::<Cidr>().map_err(|e| anyhow::anyhow!(e)))
        .collect()
}
