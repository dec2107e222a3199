//! `rtpanchor ctl`: the operator's tool, like `rtpengine-ctl`, talking ng to a running relay
//! (`--ng ADDR`, the relay's `--listen-ng`; UDP, or TCP with `--tcp` for replies too big for a
//! datagram).
//!
//! Subcommands: `list [--limit N]`, `show CALL-ID` (a per-stream table), `terminate
//! CALL-ID|all`, `stats`, `drain`, `set max-sessions N`, `set log-level L`. `--json` prints the
//! relay's reply as JSON instead. Exit codes: 0 done; 1 the relay refused (`result` not
//! `ok`, e.g. an unknown call-id); 2 bad usage; 3 no answer from the relay.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::ng::{NgClient, RetryPolicy};
use crate::control::bencode::Owned;
use crate::control::json::to_json;

mod show;

pub const EXIT_OK: i32 = 0;
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NO_REPLY: i32 = 3;

#[derive(Parser, Debug)]
#[command(name = "rtpanchor ctl", about = "Control a running rtpanchor over ng")]
pub struct CtlCli {
    /// The relay's ng address (its --listen-ng).
    #[arg(long, default_value = "127.0.0.1:2223")]
    pub ng: SocketAddr,
    /// Talk ng over TCP (the relay's --listen-tcp-ng) instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Print the relay's reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 2)]
    pub timeout: u64,
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Call-IDs, oldest first.
    List {
        #[arg(long, default_value_t = 32)]
        limit: usize,
    },
    /// One call: its tags and streams.
    Show { call_id: String },
    /// End a call (or `all`) at once.
    Terminate { call_id: String },
    /// Totals (ng statistics).
    Stats,
    /// Stop taking new calls; the relay exits once the last call ends.
    Drain,
    /// A standby relay (`--standby`) takes the calls over from Redis now.
    Active,
    /// Change a setting live.
    Set {
        #[command(subcommand)]
        what: SetWhat,
    },
}

#[derive(Subcommand, Debug)]
pub enum SetWhat {
    /// Most concurrent calls (0 = no limit).
    MaxSessions { n: usize },
    /// Log filter: error, warn, info, debug, trace.
    LogLevel { level: String },
}

/// The ng request for a subcommand.
pub fn request(cmd: &CtlCommand) -> Owned {
    match cmd {
        CtlCommand::List { limit } => Owned::dict()
            .with("command", "list")
            .with("limit", *limit as u64),
        CtlCommand::Show { call_id } => Owned::dict()
            .with("command", "query")
            .with("call-id", call_id.as_str()),
        CtlCommand::Terminate { call_id } if call_id == "all" => Owned::dict()
            .with("command", "terminate")
            .with("flags", Owned::List(vec![Owned::str("all")])),
        CtlCommand::Terminate { call_id } => Owned::dict()
            .with("command", "terminate")
            .with("call-id", call_id.as_str()),
        CtlCommand::Stats => Owned::dict().with("command", "statistics"),
        CtlCommand::Drain => Owned::dict().with("command", "drain"),
        CtlCommand::Active => Owned::dict().with("command", "active"),
        CtlCommand::Set { what } => match what {
            SetWhat::MaxSessions { n } => Owned::dict()
                .with("command", "set")
                .with("max-sessions", *n as u64),
            SetWhat::LogLevel { level } => Owned::dict()
                .with("command", "set")
                .with("log-level", level.as_str()),
        },
    }
}

/// Human-readable output of a successful reply.
pub fn render(cmd: &CtlCommand, reply: &Owned) -> String {
    match cmd {
        CtlCommand::List { .. } => {
            let calls = reply.get("calls").and_then(Owned::as_list).unwrap_or(&[]);
            let mut out: String = calls
                .iter()
                .filter_map(Owned::as_str)
                .map(|c| format!("{c}\n"))
                .collect();
            if let Some(w) = reply.get("warning").and_then(Owned::as_str) {
                out.push_str(&format!("warning: {w}\n"));
            }
            out
        }
        CtlCommand::Show { call_id } => show::table(call_id, reply),
        CtlCommand::Terminate { .. } => format!(
            "terminated {}\n",
            reply.get("terminated").and_then(Owned::as_int).unwrap_or(0)
        ),
        CtlCommand::Stats => show::stats(reply),
        CtlCommand::Drain => format!(
            "draining; {} calls up\n",
            reply.get("calls").and_then(Owned::as_int).unwrap_or(0)
        ),
        CtlCommand::Active => {
            if reply.get("was standby").and_then(Owned::as_int) == Some(1) {
                "taking over\n".into()
            } else {
                "already active\n".into()
            }
        }
        CtlCommand::Set { what } => match what {
            SetWhat::MaxSessions { n } => format!("max-sessions {n}\n"),
            SetWhat::LogLevel { level } => format!("log-level {level}\n"),
        },
    }
}

/// Runs `rtpanchor ctl ARGS...` (`args` without the program name and `ctl`); prints the
/// result and returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let argv = std::iter::once("rtpanchor ctl".to_owned()).chain(args);
    let cli = match CtlCli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let wait = Duration::from_secs(cli.timeout.max(1));
    let client = if cli.tcp {
        NgClient::tcp(cli.ng, wait)
    } else {
        NgClient::udp(cli.ng).map(|c| {
            // Two sends, half the wait apart, under one cookie (the relay answers a repeat
            // from its reply cache).
            c.with_policy(RetryPolicy::millis(wait.as_millis() as u64 / 2, 2))
        })
    };
    let mut client = match client {
        Ok(c) => c.with_cookie_prefix(format!("ctl_{}", std::process::id())),
        Err(e) => {
            eprintln!("rtpanchor ctl: cannot reach {}: {e}", cli.ng);
            return EXIT_NO_REPLY;
        }
    };
    let reply = match client.request(&request(&cli.cmd)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtpanchor ctl: no reply from {}: {e}", cli.ng);
            return EXIT_NO_REPLY;
        }
    };
    let ok = reply.get("result").and_then(Owned::as_str) == Some("ok");
    if cli.json {
        println!("{}", String::from_utf8_lossy(&to_json(&reply)));
    } else if ok {
        print!("{}", render(&cli.cmd, &reply));
    }
    if ok {
        EXIT_OK
    } else {
        if !cli.json {
            let why = reply
                .get("error-reason")
                .or_else(|| reply.get("message"))
                .and_then(Owned::as_str)
                .unwrap_or("refused");
            eprintln!("rtpanchor ctl: {why}");
        }
        EXIT_REFUSED
    }
}
