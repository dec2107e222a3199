//! What the control plane counts of its own work: ng commands by kind, by the proxy that sent
//! them (rtpengine's `controlstatistics`). Fed by the ng server after each command with the
//! time it took; read by `statistics`. Bounded: at most [`MAX_PROXIES`] senders are told
//! apart, later ones count only in the totals.

use std::net::IpAddr;

use crate::time::Nanos;

/// Senders told apart in `controlstatistics.proxies` (signalling proxies are few).
pub const MAX_PROXIES: usize = 64;

/// The commands counted, as the ng protocol names them, with the stem rtpengine's
/// `controlstatistics` gives their `<stem>count` / `<stem>duration` keys.
pub const COMMANDS: [(&str, &str); 7] = [
    ("ping", "ping"),
    ("offer", "offer"),
    ("answer", "answer"),
    ("delete", "delete"),
    ("query", "query"),
    ("list", "list"),
    ("statistics", "stats"),
];

/// Count and summed handling time of one command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandFigures {
    pub count: u64,
    pub total_ns: Nanos,
}

/// Figures of one sender, or of all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlFigures {
    /// In the order of [`COMMANDS`].
    pub commands: [CommandFigures; COMMANDS.len()],
    /// Commands answered with `result: error`.
    pub errors: u64,
}

impl ControlFigures {
    fn note(&mut self, idx: Option<usize>, elapsed_ns: Nanos, error: bool) {
        if let Some(c) = idx.and_then(|i| self.commands.get_mut(i)) {
            c.count = c.count.saturating_add(1);
            c.total_ns = c.total_ns.saturating_add(elapsed_ns);
        }
        if error {
            self.errors = self.errors.saturating_add(1);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Per sender, in order of first contact.
    pub proxies: Vec<(IpAddr, ControlFigures)>,
    pub totals: ControlFigures,
}

impl ControlStats {
    /// Counts one handled command (`command` as the ng protocol names it) from `source`.
    pub fn note(&mut self, source: Option<IpAddr>, command: &str, elapsed_ns: Nanos, error: bool) {
        let idx = COMMANDS.iter().position(|(c, _)| *c == command);
        self.totals.note(idx, elapsed_ns, error);
        let Some(ip) = source else { return };
        let pos = self.proxies.iter().position(|(p, _)| *p == ip);
        let slot = match pos {
            Some(i) => self.proxies.get_mut(i),
            None if self.proxies.len() < MAX_PROXIES => {
                self.proxies.push((ip, ControlFigures::default()));
                self.proxies.last_mut()
            }
            None => None,
        };
        if let Some((_, f)) = slot {
            f.note(idx, elapsed_ns, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_command_and_sender_with_bounded_senders() {
        let mut s = ControlStats::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        s.note(Some(a), "offer", 1_500, false);
        s.note(Some(a), "offer", 500, true);
        s.note(None, "ping", 10, false);
        s.note(Some(a), "no such command", 10, true);
        assert_eq!(
            s.totals.commands[1],
            CommandFigures {
                count: 2,
                total_ns: 2_000
            }
        );
        assert_eq!(s.totals.commands[0].count, 1);
        assert_eq!(s.totals.errors, 2);
        assert_eq!(s.proxies.len(), 1);
        assert_eq!(s.proxies[0].1.commands[1].count, 2);
        assert_eq!(
            s.proxies[0].1.commands[0].count, 0,
            "ping came from no address"
        );
        for i in 0..(MAX_PROXIES as u32 + 10) {
            s.note(Some(IpAddr::from(i.to_be_bytes())), "list", 1, false);
        }
        assert_eq!(s.proxies.len(), MAX_PROXIES);
        assert_eq!(
            s.totals.commands[5].count,
            u64::from(MAX_PROXIES as u32 + 10)
        );
    }
}
