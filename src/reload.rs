//! What a reload (SIGHUP) may change: the new configuration compared with the running one,
//! split into what applies live and what needs a restart. Pure; `app` applies the plan.

use crate::config::Config;

/// The live changes of a reload, and the settings that differ but only take effect at a
/// restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub log_level: Option<String>,
    pub max_sessions: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    /// The CDR file's name changed (reopened under the new name is not supported: restart).
    pub restart_needed: Vec<&'static str>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }
}

fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
    (old != new).then(|| new.clone())
}

/// Compares `old` (running) with `new` (just read).
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut restart = Vec::new();
    // Settings bound at start: sockets, threads, the data plane's set-up.
    let fixed: [(&'static str, String, String); 18] = [
        (
            "listen-sips",
            format!("{:?}", old.listen_sips),
            format!("{:?}", new.listen_sips),
        ),
        (
            "interface",
            format!("{:?}", old.interface),
            format!("{:?}", new.interface),
        ),
        (
            "port-min",
            old.port_min.to_string(),
            new.port_min.to_string(),
        ),
        (
            "port-max",
            old.port_max.to_string(),
            new.port_max.to_string(),
        ),
        (
            "listen-ng",
            old.listen_ng.to_string(),
            new.listen_ng.to_string(),
        ),
        (
            "listen-tcp-ng",
            format!("{:?}", old.listen_tcp_ng),
            format!("{:?}", new.listen_tcp_ng),
        ),
        (
            "num-threads",
            old.num_threads.to_string(),
            new.num_threads.to_string(),
        ),
        (
            "io-engine",
            format!("{:?}", old.io_engine),
            format!("{:?}", new.io_engine),
        ),
        (
            "uring-fixed-files",
            format!("{:?}", old.uring_fixed_files),
            format!("{:?}", new.uring_fixed_files),
        ),
        (
            "uring-rings",
            format!("{:?}", old.uring_rings),
            format!("{:?}", new.uring_rings),
        ),
        (
            "socket-rcvbuf",
            old.socket_rcvbuf.to_string(),
            new.socket_rcvbuf.to_string(),
        ),
        (
            "socket-sndbuf",
            old.socket_sndbuf.to_string(),
            new.socket_sndbuf.to_string(),
        ),
        (
            "strict-rtp",
            old.strict_rtp.to_string(),
            new.strict_rtp.to_string(),
        ),
        ("no-gso", old.gso.to_string(), new.gso.to_string()),
        (
            "no-kernel-forwarding",
            old.kernel_forwarding.to_string(),
            new.kernel_forwarding.to_string(),
        ),
        (
            "listen-sip",
            format!("{:?}", old.listen_sip),
            format!("{:?}", new.listen_sip),
        ),
        (
            "domain",
            format!("{:?}", old.domains),
            format!("{:?}", new.domains),
        ),
        (
            "cdr-file",
            format!("{:?}", old.cdr_file),
            format!("{:?}", new.cdr_file),
        ),
    ];
    for (name, a, b) in fixed {
        if a != b {
            restart.push(name);
        }
    }
    if old.sip_outbound != new.sip_outbound {
        restart.push("sip-outbound");
    }
    if old.sip_max_message != new.sip_max_message {
        restart.push("sip-max-message");
    }
    ReloadPlan {
        log_level: changed(&old.log_level, &new.log_level),
        max_sessions: changed(&old.max_sessions, &new.max_sessions),
        timeout_secs: changed(&old.timeout_secs, &new.timeout_secs),
        drain_timeout_secs: changed(&old.drain_timeout_secs, &new.drain_timeout_secs),
        restart_needed: restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_restart_settings_are_told_apart() {
        let old = Config::default();
        assert!(plan(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        new.log_level = "debug".into();
        new.max_sessions = 7;
        new.timeout_secs = 30;
        new.port_max = 40002;
        new.num_threads = old.num_threads + 1;
        let p = plan(&old, &new);
        assert_eq!(p.log_level.as_deref(), Some("debug"));
        assert_eq!(p.max_sessions, Some(7));
        assert_eq!(p.timeout_secs, Some(30));
        assert_eq!(p.drain_timeout_secs, None);
        assert_eq!(p.restart_needed, vec!["port-max", "num-threads"]);
    }
}
