//! Checks made once the configuration is merged, among them the secure defaults: SIP or ng
//! on a public address only with authentication or an allow-list.

use super::{Config, MAX_SIP_MESSAGE, MAX_URING_RINGS, MIN_SIP_MESSAGE};

impl Config {
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
