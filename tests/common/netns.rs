//! Network namespaces a test builds for itself: `ip` commands that must succeed, and a guard
//! that deletes the namespaces (and the veths in them) when dropped, also on a panic.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};

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

/// Three namespaces, `{prefix}-lan-{id}`, `{prefix}-inet-{id}` and `{prefix}-relay-{id}`, and
/// two veth links: the LAN phone's namespace to the relay's, the internet phone's to the
/// relay's (devices `{prefix}l{dev}`/`{prefix}L{dev}` and `{prefix}i{dev}`/`{prefix}I{dev}`;
/// keep them within 15 characters). `addrs` holds (phone, relay) for the LAN link, then for
/// the internet link, each a /24; each phone's default route is the relay's address on its
/// link. A new namespace does not forward, so the relay's is no router: the phones reach each
/// other only through what the relay relays. Returns (guard, lan, inet, relay).
pub fn two_networks(
    prefix: &str,
    id: &str,
    dev: &str,
    addrs: [(&str, &str); 2],
) -> (Namespaces, String, String, String) {
    let (lan, inet, relay) = (
        format!("{prefix}-lan-{id}"),
        format!("{prefix}-inet-{id}"),
        format!("{prefix}-relay-{id}"),
    );
    let guard = Namespaces(vec![lan.clone(), inet.clone(), relay.clone()]);
    for ns in &guard.0 {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let [(lan_phone, lan_relay), (inet_phone, inet_relay)] = addrs;
    for (phone_ns, p_dev, r_dev, p_ip, r_ip) in [
        (
            &lan,
            format!("{prefix}l{dev}"),
            format!("{prefix}L{dev}"),
            lan_phone,
            lan_relay,
        ),
        (
            &inet,
            format!("{prefix}i{dev}"),
            format!("{prefix}I{dev}"),
            inet_phone,
            inet_relay,
        ),
    ] {
        ip(&[
            "link", "add", &p_dev, "type", "veth", "peer", "name", &r_dev,
        ]);
        ip(&["link", "set", &p_dev, "netns", phone_ns]);
        ip(&["link", "set", &r_dev, "netns", &relay]);
        let p_net = format!("{p_ip}/24");
        ip(&["-n", phone_ns, "addr", "add", &p_net, "dev", &p_dev]);
        ip(&["-n", phone_ns, "link", "set", &p_dev, "up"]);
        let r_net = format!("{r_ip}/24");
        ip(&["-n", &relay, "addr", "add", &r_net, "dev", &r_dev]);
        ip(&["-n", &relay, "link", "set", &r_dev, "up"]);
        ip(&["-n", phone_ns, "route", "add", "default", "via", r_ip]);
    }
    (guard, lan, inet, relay)
}

/// The addresses of the two-network test bed: the relay's on the LAN and on the internet
/// link, and a phone's on each.
pub const LAN_RELAY: &str = "10.0.0.1";
pub const LAN_PHONE: &str = "10.0.0.10";
pub const INET_RELAY: &str = "203.0.113.1";
pub const INET_PHONE: &str = "203.0.113.20";

/// A process of the test's, killed by pid when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` inside namespace `ns` (`ip netns exec`), its output to `log`.
pub fn spawn_in(ns: &str, cmd: &mut Command, log: &std::path::Path) -> Proc {
    let out = std::fs::File::create(log).expect("the log file");
    let mut full = Command::new("ip");
    full.args(["netns", "exec", ns]).arg(cmd.get_program());
    full.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => full.env(k, v),
            None => full.env_remove(k),
        };
    }
    let child = full
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("the log file")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start a process in its namespace");
    Proc(child)
}

/// This test binary's ignored test `inner`, run inside namespace `ns`.
pub fn inner_test(inner: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the test binary"));
    c.args(["--exact", inner, "--ignored", "--nocapture"])
        .args(["--test-threads", "1"]);
    c
}

/// Whether we run as root (effective uid 0, from /proc/self/status): namespaces and veths
/// need it.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
