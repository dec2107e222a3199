//! External peer processes for end-to-end tests (Kamailio, SIPp, a media relay).
//!
//! Contract:
//! - [`Peer::spawn`] starts a program in its own process group, stdin closed, stdout and stderr
//!   appended to one log file, and remembers its pid.
//! - Every wait is bounded ([`Peer::wait_timeout`], [`wait_udp_bound`], [`find_program`] does
//!   no waiting at all).
//! - A [`Peer`] is stopped by its pid when dropped, so also when the test fails or panics:
//!   SIGTERM to the pid, a short grace period, then SIGKILL to the process group the peer
//!   leads (the group id is the peer's own pid). The group matters for daemons that fork
//!   workers (Kamailio with `fork=yes`), so no worker outlives the test. Nothing else is
//!   signalled.
//!
//! Signals are sent with the shell's `kill` (`sh -c`), which keeps this module free of `unsafe`;
//! std's `Child::kill` (SIGKILL to the pid) is the fallback.

// Each integration test compiles this module on its own and uses a subset of it.
#![allow(dead_code)]
// Process supervision is an I/O edge: bounded waits read the wall clock.
#![allow(clippy::disallowed_methods)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How often bounded waits poll.
const POLL: Duration = Duration::from_millis(20);

/// A started external process, stopped by pid on drop.
pub struct Peer {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
    /// Set once the group was signalled; later `stop`s only report the status, so a reused
    /// pid is never signalled.
    stopped: bool,
}

impl Peer {
    /// Starts `cmd` with its output appended to `log` (created if missing).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> io::Result<Peer> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Own process group (pgid = pid): lets `stop` reach forked workers too.
            .process_group(0)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {name} ({cmd:?}): {e}")))?;
        Ok(Peer {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            status: None,
            stopped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has ended (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL to the peer's process group. Idempotent.
    /// Returns the exit status when it could be collected.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.stopped {
            return self.try_status();
        }
        self.stopped = true;
        let pid = self.pid();
        if self.is_running() {
            signal(&format!("{pid}"), "TERM");
            if let Some(s) = self.wait_timeout(grace) {
                // Workers that ignored their leader's exit still share its group.
                signal(&format!("-{pid}"), "KILL");
                return Some(s);
            }
        }
        if !signal(&format!("-{pid}"), "KILL") {
            // No shell `kill` (or the group is gone): at least the leader, by pid.
            let _ = self.child.kill();
        }
        self.wait_timeout(Duration::from_secs(2))
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Sends `sig` to `target` (a pid, or `-pgid` for a group) with the shell's `kill`, present
/// wherever `sh` is. Returns whether `kill` ran and succeeded; failures are otherwise ignored
/// because the target may legitimately be gone already.
fn signal(target: &str, sig: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -s \"$1\" -- \"$2\"", "sh", sig, target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `lines` lines of a text file ("" if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Finds an executable by name in `PATH` and the sbin directories (Kamailio lives in
/// /usr/sbin, which is not on every user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}

/// SIPp, which CI installs (Debian sip-tester): a missing SIPp is a failure, not a skip.
pub fn sipp_program() -> PathBuf {
    find_program("sipp").expect("sipp (Debian sip-tester) is required")
}

/// A SIPp scenario of `tools/sipp/`.
pub fn sipp_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/sipp")
        .join(name)
}

/// Whether some socket is bound to UDP `127.0.0.1:port` or `0.0.0.0:port` (from /proc/net/udp).
pub fn udp_bound(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return false;
    };
    let loopback = format!("0100007F:{port:04X}");
    let any = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| local == loopback || local == any)
    })
}

/// Waits at most `limit` until UDP `port` is bound on loopback; `peer` must stay alive meanwhile.
pub fn wait_udp_bound(peer: &mut Peer, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if udp_bound(port) {
            return Ok(());
        }
        if let Some(s) = peer.try_status() {
            return Err(format!(
                "{} exited ({s}) before binding UDP port {port}; log:\n{}",
                peer.name(),
                peer.log_tail(30)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not bind UDP port {port} within {limit:?}; log:\n{}",
                peer.name(),
                peer.log_tail(30)
            ));
        }
        sleep(POLL);
    }
}

/// Sends `sig` (`TERM`, `HUP`, ...) to the process `pid`; the test fails if `kill` does.
pub fn send_signal(pid: u32, sig: &str) {
    assert!(signal(&pid.to_string(), sig), "kill -s {sig} {pid}");
}

/// Stops `pid` (`SIGSTOP`) and waits, at most 2 s, until the kernel shows every one of its
/// threads stopped (state `T` in `/proc/PID/task/*/stat`): the signal is delivered
/// asynchronously, and a worker thread still running would read what the test sends next.
pub fn stop_and_wait(pid: u32) {
    send_signal(pid, "STOP");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if all_threads_stopped(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("process {pid} not stopped within 2 s");
}

fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut seen = 0;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state != Some("T") {
            return false;
        }
        seen += 1;
    }
    seen > 0
}

/// Adds the arguments every Kamailio of the tests takes to `cmd` (Kamailio itself, or a
/// wrapper that runs it): config `cfg`, foreground with logs on stderr (the pid is the
/// test's to stop), 32 MB shared and 4 MB private memory, runtime files and pid in `run`,
/// working directory `work`.
pub fn kamailio_args<'c>(
    cmd: &'c mut Command,
    cfg: &Path,
    run: &Path,
    work: &Path,
) -> &'c mut Command {
    cmd.arg("-f")
        .arg(cfg)
        .args(["-DD", "-E", "-m", "32", "-M", "4"])
        .arg("-Y")
        .arg(run)
        .arg("-P")
        .arg(run.join("kamailio.pid"))
        .arg("-w")
        .arg(work)
}

/// The relay binary under test with the built-in SIP proxy: loopback, one worker, ng on
/// `ng`, SIP on `sip`; the caller adds media ports and the rest.
pub fn sip_relay_command(ng: u16, sip: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtpanchor"));
    cmd.env("NO_COLOR", "1")
        .args(["--interface", "127.0.0.1", "--num-threads", "1"])
        .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
        .args(["--listen-sip", &format!("127.0.0.1:{sip}")]);
    cmd
}

/// The relay binary under test as a [`Peer`] (log in `dir`, stopped by pid): loopback, no
/// SIP, one worker, ng on `ng`, media ports `ports`, then `extra`; returns once ng answers.
pub fn spawn_relay(dir: &Path, ng: u16, ports: (u16, u16), extra: &[&str]) -> Peer {
    let relay = Peer::spawn(
        "relay",
        Command::new(env!("CARGO_BIN_EXE_rtpanchor"))
            .env("NO_COLOR", "1")
            .args(["--interface", "127.0.0.1", "--no-sip", "--num-threads", "1"])
            .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
            .args(["--port-min", &ports.0.to_string()])
            .args(["--port-max", &ports.1.to_string()])
            .args(extra),
        &dir.join(format!("relay-{ng}.log")),
    )
    .unwrap_or_else(|e| panic!("relay: {e}"));
    super::ng::answering_client(ng, "relay-ready")
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("relay not ready: {e}\n{}", relay.log_tail(20)));
    relay
}
