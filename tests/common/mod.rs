//! Shared helpers for integration tests.

pub mod baresip;
pub mod calls;
pub mod http;
pub mod kernel;
pub mod media;
pub mod netns;
pub mod ng;
pub mod peers;
pub mod presence;
pub mod rtcp_talk;
pub mod scrape;
pub mod sip;
pub mod store;
pub mod streams;
pub mod tcp_phone;
pub mod tls;

use std::path::{Path, PathBuf};

/// A scratch directory under the system temp dir, removed on drop unless the thread is
/// panicking (then it is kept and its path printed, for the logs inside).
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`, a fresh directory.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        for n in 0..1000u32 {
            let path = base.join(format!("{prefix}-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path, keep: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temp dir name"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place on drop (for looking at logs after a passing run).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: logs kept in {}", self.path.display());
        } else if self.keep {
            eprintln!("logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `(SuccessfulCall(C), FailedCall(C))` from the last row of SIPp's `-trace_stat` CSV.
pub fn sipp_call_counts(csv: &Path) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or("empty stats CSV")?.split(';').collect();
    let last: Vec<&str> = lines
        .next_back()
        .ok_or("stats CSV has no data row")?
        .split(';')
        .collect();
    let col = |name: &str| -> Result<u64, String> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no {name} column"))?;
        last.get(i)
            .ok_or(format!("short row for {name}"))?
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    Ok((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

/// Where and how hard a SIPp UAC running `tools/sipp/uac_rr_pcap.xml` calls.
pub struct PcapUac<'a> {
    /// `host:port` of the proxy the calls go through.
    pub target: String,
    /// Request-URI user (`-s`), if the scenario's default is not wanted.
    pub service: Option<&'a str>,
    pub sip_port: u16,
    pub media_port: u16,
    pub control_port: u16,
    pub calls: usize,
    pub rate: usize,
    pub limit: usize,
}

/// The SIPp command for the pcap UAC, writing `uac_sdp.log` (the answers' SDP lines),
/// `uac_errors.log` and `uac_stats.csv` (read with [`sipp_call_counts`]) into `dir`. A lost
/// response fails its call after 10 s instead of hanging the run.
pub fn pcap_uac_command(
    sipp: &Path,
    dir: &Path,
    scenario: &Path,
    o: &PcapUac<'_>,
) -> std::process::Command {
    pcap_uac_command_at(
        std::process::Command::new(sipp),
        "127.0.0.1",
        dir,
        scenario,
        o,
    )
}

/// [`pcap_uac_command`] with SIP and media on `ip`, run by `cmd` (SIPp itself, or a wrapper
/// that runs SIPp elsewhere: `ip netns exec NS sipp`).
pub fn pcap_uac_command_at(
    mut cmd: std::process::Command,
    ip: &str,
    dir: &Path,
    scenario: &Path,
    o: &PcapUac<'_>,
) -> std::process::Command {
    cmd.current_dir(dir).arg("-sf").arg(scenario).arg(&o.target);
    if let Some(s) = o.service {
        cmd.args(["-s", s]);
    }
    cmd.args(["-i", ip, "-mi", ip])
        .args(["-p", &o.sip_port.to_string()])
        .args(["-mp", &o.media_port.to_string()])
        .args(["-cp", &o.control_port.to_string()])
        .args(["-m", &o.calls.to_string()])
        .args(["-r", &o.rate.to_string()])
        .args(["-l", &o.limit.to_string()])
        .args(["-recv_timeout", "10000"])
        .args([
            "-nostdin",
            "-trace_logs",
            "-trace_err",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .arg("-log_file")
        .arg(dir.join("uac_sdp.log"))
        .arg("-error_file")
        .arg(dir.join("uac_errors.log"))
        .arg("-stf")
        .arg(dir.join("uac_stats.csv"));
    cmd
}

/// Runs this test binary's ignored test `inner` under `wrapper` (a command that runs its
/// arguments elsewhere: in a network namespace, say) with `env` set, prints what it said,
/// and fails unless it ran and passed.
#[allow(dead_code)] // not every test binary that includes this module has such a test
pub fn run_inner_test(mut wrapper: std::process::Command, inner: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = wrapper
        .arg(exe)
        .args(["--exact", inner, "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .envs(env.iter().copied())
        .output()
        .expect("run the inner test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{inner} failed where it ran");
    assert!(text.contains("1 passed"), "{inner} did not run");
}

/// Writes a `--sip-users` file for `users` (name, password) in `realm` into `dir`.
#[allow(dead_code)] // not every test binary that includes this module has users
pub fn users_file(dir: &Path, realm: &str, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("users.toml");
    let text: String = users
        .iter()
        .map(|(u, pw)| format!("{}\n", rtpanchor::sip::auth::passwd_line(u, realm, pw)))
        .collect();
    std::fs::write(&path, text).expect("writing the users file");
    path
}
