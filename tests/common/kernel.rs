//! Whether the in-kernel fast path can run on this machine: the precondition the tests that
//! involve it check and report, instead of guessing from a silent fallback.
#![allow(dead_code)]

use rtpanchor::dataplane::kernel;

/// Why the TC program cannot run here (built without clang, not root, Linux < 6.6), or
/// `None` when it must.
pub fn cannot_run() -> Option<String> {
    if !kernel::BUILT {
        return Some("built without clang".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not running as root".into());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse::<u32>().ok());
    if (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (6, 6) {
        return Some(format!("Linux {} < 6.6", release.trim()));
    }
    None
}
