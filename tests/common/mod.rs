//! Shared helpers for integration tests.

pub mod peers;

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
