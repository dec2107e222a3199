//! Network namespaces a test builds for itself: `ip` commands that must succeed, and a guard
//! that deletes the namespaces (and the veths in them) when dropped, also on a panic.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::process::Command;

/// Runs `ip ARGS`; panics unless it succeeds.
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status();
    assert!(st.is_ok_and(|s| s.success()), "ip {}", args.join(" "));
}

/// The namespaces made for a test, deleted on drop (also when it panics).
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}
