//! The SIP proxy's options merged from the file and the flags: listeners, TLS files, domains,
//! authentication, flood control, networks, media relays and presence.

use super::file::{parse_cidrs, FileConfig};
use super::{Cli, Config};
use crate::sip::auth::Algorithm;
use crate::sip::transport::Transport;

impl Config {
    /// Every SIP option but the digest algorithms (`merge_sip_auth_algorithms`).
    pub(super) fn merge_sip(&mut self, cli: &Cli, file: &mut FileConfig) -> anyhow::Result<()> {
        let c = self;
        let listen_sip = cli.listen_sip.or(file.listen_sip);
        c.listen_sip_explicit = listen_sip.is_some();
        if let Some(a) = listen_sip {
            c.listen_sip = Some(a);
        }
        if cli.no_sip || file.no_sip.unwrap_or(false) {
            c.listen_sip = None;
        }
        c.listen_sips = cli.listen_sips.or(file.listen_sips);
        c.sips_cert = cli.sips_cert.clone().or(file.sips_cert.take());
        c.sips_key = cli.sips_key.clone().or(file.sips_key.take());
        c.sips_ca = cli.sips_ca.clone().or(file.sips_ca.take());
        c.domains = if cli.domains.is_empty() {
            file.domain.take().unwrap_or_default()
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
        if let Some(hop) = c.sip_outbound.filter(|h| h.transport == Transport::Tls) {
            // Our Via and the client handshake need both; refusing to start beats
            // answering every request for that next hop with an error.
            if c.listen_sips.is_none() || c.sips_ca.is_none() {
                anyhow::bail!(
                    "--sip-outbound {hop} is reached over TLS: it needs --listen-sips (with \
                     --sips-cert and --sips-key) and --sips-ca to verify its certificate"
                );
            }
        }
        c.sip_max_message = cli
            .sip_max_message
            .or(file.sip_max_message)
            .unwrap_or(c.sip_max_message);
        c.sip_users = cli.sip_users.clone().or(file.sip_users.take());
        c.sip_open = cli.sip_open || file.sip_open.unwrap_or(false);
        let rules = if cli.sip_networks.is_empty() {
            file.sip_network.take().unwrap_or_default()
        } else {
            cli.sip_networks.clone()
        };
        c.sip_networks = rules
            .iter()
            .map(|r| crate::sip::networks::parse_rule(r).map_err(|e| anyhow::anyhow!(e)))
            .collect::<anyhow::Result<_>>()?;
        c.sip_trusted = if cli.sip_trusted.is_empty() {
            parse_cidrs(file.sip_trusted.take().unwrap_or_default())?
        } else {
            cli.sip_trusted.clone()
        };
        let relays = if cli.media_relays.is_empty() {
            file.media_relay.take().unwrap_or_default()
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
        c.sip_state_dir = cli.sip_state_dir.clone().or(file.sip_state_dir.take());
        Ok(())
    }

    /// `--sip-auth-algorithms`: the digest algorithms offered, most preferred first.
    pub(super) fn merge_sip_auth_algorithms(
        &mut self,
        cli: &Cli,
        file: &mut FileConfig,
    ) -> anyhow::Result<()> {
        let algs = if cli.sip_auth_algorithms.is_empty() {
            file.sip_auth_algorithms.take().unwrap_or_default()
        } else {
            cli.sip_auth_algorithms.clone()
        };
        if !algs.is_empty() {
            self.sip_auth_algorithms = algs
                .iter()
                .map(|a| {
                    Algorithm::from_name(a.trim()).ok_or_else(|| {
                        anyhow::anyhow!("--sip-auth-algorithms: {a:?} is not SHA-256 or MD5")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        Ok(())
    }
}
