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

/// The internet phone of the two-network bed: binds `INET_PHONE:port`, echoes every datagram
/// to its source with its own SSRC for at most `limit`, stopping after 3 s without one (once
/// something came), then prints "ECHO <packets> <source> ..." (what it got and from where).
pub fn run_echo_phone(port: u16, limit: std::time::Duration) {
    let s = std::net::UdpSocket::bind((INET_PHONE, port)).expect("the echo phone's port");
    let (got, sources) =
        super::media::echo_until_quiet(&s, limit, std::time::Duration::from_secs(3), Some(0x1E7));
    let list: Vec<String> = sources.iter().map(|a| a.to_string()).collect();
    println!("ECHO {got} {}", list.join(" "));
}

/// Waits (at most 15 s) for the echo phone `echo` to stop by itself (media has stopped for a
/// while), then reads its ECHO line from `echo_log`: the packets it got and their sources.
/// Panics, with the tail of `relay_log`, when it said nothing.
pub fn echo_result(
    mut echo: Proc,
    echo_log: &std::path::Path,
    relay_log: &std::path::Path,
) -> (usize, std::collections::BTreeSet<std::net::SocketAddr>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while echo.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(echo);
    let said = std::fs::read_to_string(echo_log).unwrap_or_default();
    let line = said
        .lines()
        .find_map(|l| l.find("ECHO ").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!(
                "the internet phone said nothing:\n{said}\nrelay:\n{}",
                super::peers::tail(relay_log, 30)
            )
        });
    let mut parts = line.split(' ').skip(1);
    let packets = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (packets, parts.filter_map(|p| p.parse().ok()).collect())
}

/// A call over ng client `c` between the two-network bed's phones (the LAN phone at
/// `lan_port`, the internet phone at `inet_port`), each side anchored on its own network
/// (`direction=[internal, external]`): the replies to the offer and to the answer.
pub fn lan_inet_call(
    c: &mut rtpanchor::client::ng::NgClient,
    call_id: &str,
    lan_port: u16,
    inet_port: u16,
) -> (
    rtpanchor::control::bencode::Owned,
    rtpanchor::control::bencode::Owned,
) {
    use rtpanchor::control::bencode::Owned;
    let direction = || {
        let mut l = Owned::list();
        l.push("internal");
        l.push("external");
        l
    };
    let sdp = |ip: &str, port: u16, sess: u64| {
        let at = std::net::SocketAddr::new(ip.parse().expect("an address"), port);
        rtpanchor::sdp::AudioSdp::new(at, sess).to_string()
    };
    let offer = super::ng::ng(
        c,
        "offer",
        &Owned::dict()
            .with("command", "offer")
            .with("call-id", call_id)
            .with("from-tag", "lan")
            .with("sdp", sdp(LAN_PHONE, lan_port, 1).as_str())
            .with("direction", direction()),
    );
    let answer = super::ng::ng(
        c,
        "answer",
        &Owned::dict()
            .with("command", "answer")
            .with("call-id", call_id)
            .with("from-tag", "lan")
            .with("to-tag", "inet")
            .with("sdp", sdp(INET_PHONE, inet_port, 2).as_str())
            .with("direction", direction()),
    );
    (offer, answer)
}

/// Two namespaces `ns` (the relay's, then the endpoints') joined by a veth pair `devs` (the
/// relay's end first) with IPv6 addresses `addrs` (/64, no duplicate address detection:
/// usable at once). Returns the guard that deletes both namespaces.
pub fn veth_pair6(ns: [&str; 2], devs: [&str; 2], addrs: [&str; 2]) -> Namespaces {
    let guard = Namespaces(ns.iter().map(|n| n.to_string()).collect());
    for n in ns {
        ip(&["netns", "add", n]);
    }
    ip(&[
        "link", "add", devs[0], "type", "veth", "peer", "name", devs[1],
    ]);
    for k in 0..2 {
        ip(&["link", "set", devs[k], "netns", ns[k]]);
        ip(&["-n", ns[k], "link", "set", "lo", "up"]);
        ip(&["-n", ns[k], "link", "set", devs[k], "up"]);
        let a = format!("{}/64", addrs[k]);
        ip(&[
            "-n", ns[k], "-6", "addr", "add", &a, "dev", devs[k], "nodad",
        ]);
    }
    guard
}

/// The endpoints' side of a relay on a real IPv6 address (run in the endpoints' namespace):
/// an ng client from `peers6` to the relay's ng address in environment variable `env`, two
/// endpoint sockets on `peers6`, and call `call_id` between them set up over ng (each reply
/// `ok`, naming `relay6`). Returns the client, the sockets (A, B) and the relay ports each
/// sends to (A's, B's).
pub fn routed6_call(
    env: &str,
    relay6: &str,
    peers6: &str,
    call_id: &str,
) -> (
    rtpanchor::client::ng::NgClient,
    [std::net::UdpSocket; 2],
    [std::net::SocketAddr; 2],
) {
    use rtpanchor::client::ng::{NgClient, RetryPolicy};
    use rtpanchor::control::bencode::Owned;
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    let ng_addr: SocketAddr = std::env::var(env)
        .expect("run in the endpoints' namespace")
        .parse()
        .expect("an ng address");
    let relay_ip: IpAddr = relay6.parse().expect("an address");
    let peers_ip: IpAddr = peers6.parse().expect("an address");
    let bind = || {
        let s = UdpSocket::bind(SocketAddr::new(peers_ip, 0)).expect("an endpoint socket");
        s.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .expect("a timeout");
        s
    };
    let mut c = NgClient::udp_from(SocketAddr::new(peers_ip, 0), ng_addr)
        .expect("an ng client")
        .with_policy(RetryPolicy::millis(500, 1));
    c.wait_ready(std::time::Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let (a, b) = (bind(), bind());
    let mut call = |cmd: &str, s: &UdpSocket, sess: u64| {
        let port = s.local_addr().expect("bound").port();
        let sdp = rtpanchor::sdp::AudioSdp::new(SocketAddr::new(peers_ip, port), sess);
        let sdp = sdp.to_string();
        let mut req = Owned::dict()
            .with("sdp", sdp.as_str())
            .with("call-id", call_id)
            .with("from-tag", "tagA")
            .with("command", cmd);
        if cmd == "answer" {
            req = req.with("to-tag", "tagB");
        }
        let r = super::ng::ng(&mut c, cmd, &req);
        assert_eq!(r.get("result").and_then(Owned::as_str), Some("ok"), "{r}");
        let sdp = r.get("sdp").and_then(Owned::as_str).unwrap_or_default();
        assert!(sdp.contains(&format!("c=IN IP6 {relay6}")), "{sdp}");
        let port = sdp
            .lines()
            .find(|l| l.starts_with("m=audio "))
            .and_then(|m| m.split(' ').nth(1))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no m= port: {sdp}"));
        SocketAddr::new(relay_ip, port)
    };
    let to_b = call("offer", &a, 1);
    let to_a = call("answer", &b, 2);
    (c, [a, b], [to_a, to_b])
}
