//! Defaults, then the file named by `--config`, then the flags: the media, control, storage
//! and process options (the SIP proxy's are in `sip.rs`).

use super::file::{parse_cidrs, FileConfig, OneOrMany};
use super::{Cli, Config, Interface, DEFAULT_SOCKET_RCVBUF};

impl Config {
    /// Defaults, then the file named by `--config`, then the flags.
    pub fn load(cli: &Cli) -> anyhow::Result<Config> {
        let mut file = FileConfig::read(cli.config.as_deref())?;
        let mut c = Config::default();
        c.merge_media(cli, &mut file)?;
        c.merge_sip(cli, &mut file)?;
        c.ng_allow = if cli.ng_allow.is_empty() {
            parse_cidrs(file.ng_allow.take().unwrap_or_default())?
        } else {
            cli.ng_allow.clone()
        };
        c.merge_sip_auth_algorithms(cli, &mut file)?;
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

    /// Media interfaces, ports, the ng and HTTP listeners, workers and their sockets.
    fn merge_media(&mut self, cli: &Cli, file: &mut FileConfig) -> anyhow::Result<()> {
        let c = self;
        let interfaces = if cli.interface.is_empty() {
            file.interface.take().map(OneOrMany::into_vec)
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
        c.uring_batch_wait_us = cli
            .uring_batch_wait_us
            .or(file.uring_batch_wait_us)
            .unwrap_or(super::DEFAULT_BATCH_WAIT_US)
            .min(10_000);
        c.uring_rings = cli.uring_rings.or(file.uring_rings);
        c.spare_descriptors = cli.spare_descriptors.or(file.spare_descriptors);
        c.socket_rcvbuf = cli
            .socket_rcvbuf
            .or(file.socket_rcvbuf)
            .unwrap_or(DEFAULT_SOCKET_RCVBUF);
        c.socket_sndbuf = cli.socket_sndbuf.or(file.socket_sndbuf).unwrap_or(0);
        c.strict_rtp = cli.strict_rtp || file.strict_rtp.unwrap_or(false);
        c.gso = !(cli.no_gso || file.no_gso.unwrap_or(false));
        c.connect_latched = cli.connect_latched || file.connect_latched.unwrap_or(false);
        c.kernel_forwarding =
            !(cli.no_kernel_forwarding || file.no_kernel_forwarding.unwrap_or(false));
        c.kernel_mode = cli.kernel_mode.or(file.kernel_mode).unwrap_or_default();
        Ok(())
    }
}
