//! The configuration's unit tests: defaults, file and flags, secure defaults.

use super::*;
use clap::Parser;
use std::net::{IpAddr, Ipv4Addr};

#[test]
fn defaults_are_loopback_and_rtpengine_like() {
    let c = Config::load(&Cli::default()).unwrap();
    assert_eq!(c.interface.local, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!((c.port_min, c.port_max), (30000, 40000));
    assert_eq!(c.listen_ng, "127.0.0.1:2223".parse().unwrap());
    assert_eq!(c.timeout_secs, 60);
    assert!(c.num_threads >= 1);
    assert!(c.gso, "GSO for bursts is on unless turned off");
    assert!(
        c.kernel_forwarding,
        "the in-kernel path is tried unless turned off"
    );
    assert!(
        !Config::load(&Cli::parse_from(["x", "--no-kernel-forwarding"]))
            .unwrap()
            .kernel_forwarding
    );
    assert_eq!(c.kernel_mode, KernelMode::Auto);
    let tc = Config::load(&Cli::parse_from(["x", "--kernel-mode", "tc"])).unwrap();
    assert_eq!(tc.kernel_mode, KernelMode::Tc);
    assert_eq!(c.socket_rcvbuf, DEFAULT_SOCKET_RCVBUF);
    let zero = Config::load(&Cli::parse_from(["x", "--socket-rcvbuf", "0"])).unwrap();
    assert_eq!(zero.socket_rcvbuf, 0, "0 keeps the kernel default");
}

#[test]
fn gso_can_be_turned_off_by_flag_or_file() {
    assert!(
        !Config::load(&Cli::parse_from(["x", "--no-gso"]))
            .unwrap()
            .gso
    );
    let dir = std::env::temp_dir().join(format!("rtpanchor-gso-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "no-gso = true\n").unwrap();
    let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
    assert!(!c.gso);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn flags_override_file() {
    let dir = std::env::temp_dir().join(format!("rtpanchor-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "port-min = 20000\nport-max = 21000\ntimeout = 5\ninterface = \"127.0.0.2\"\n",
    )
    .unwrap();
    let cli = Cli::parse_from([
        "rtpanchor",
        "--config",
        path.to_str().unwrap(),
        "--port-max",
        "22000",
    ]);
    let c = Config::load(&cli).unwrap();
    assert_eq!((c.port_min, c.port_max, c.timeout_secs), (20000, 22000, 5));
    assert_eq!(c.interface.local.to_string(), "127.0.0.2");
    std::fs::write(&path, "no-such-key = 1\n").unwrap();
    assert!(Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn interface_forms() {
    let i: Interface = "10.0.0.1!203.0.113.5".parse().unwrap();
    assert_eq!(i.local.to_string(), "10.0.0.1");
    assert_eq!(i.advertised.to_string(), "203.0.113.5");
    let i: Interface = "pub/::1".parse().unwrap();
    assert_eq!(i.local.to_string(), "::1");
    assert!("nonsense".parse::<Interface>().is_err());
}

#[test]
fn sip_networks_need_known_names_and_bridging_needs_authentication() {
    let base = [
        "x",
        "--interface",
        "internal/10.0.0.1",
        "--interface",
        "external/203.0.113.1",
        "--listen-sip",
        "10.0.0.1:5060",
        "--sip-open",
    ];
    let with = |more: &[&str]| {
        let args: Vec<&str> = base.iter().chain(more).copied().collect();
        Config::load(&Cli::parse_from(args))
    };
    let c = with(&["--sip-network", "external=0.0.0.0/0"]).unwrap();
    assert!(c.bridges_networks());
    assert_eq!(c.sip_networks.len(), 1);
    assert_eq!(c.sip_networks[0].0, "external");
    assert!(with(&["--sip-network", "dmz=192.0.2.0/24"]).is_err());
    assert!(with(&["--sip-network", "external"]).is_err());
    // Without --sip-open (or users) the interfaces would be an open registrar.
    let closed = Cli::parse_from(&base[..base.len() - 1]);
    assert!(Config::load(&closed).is_err());
    // Without --listen-sip the default loopback listener is kept: nothing to refuse.
    let ng_only = Cli::parse_from(&base[..5]);
    assert!(!Config::load(&ng_only).unwrap().bridges_networks());
    assert!(!Config::load(&Cli::default()).unwrap().bridges_networks());
}

#[test]
fn named_interfaces_from_flags_and_file() {
    let c = Config::load(&Cli::default()).unwrap();
    assert_eq!(c.interfaces.len(), 1);
    assert_eq!(c.interfaces[0].name, "default");
    let c = Config::load(&Cli::parse_from([
        "x",
        "--interface",
        "internal/10.0.0.1",
        "--interface",
        "external/192.168.7.1!203.0.113.1",
        "--interface",
        "external/2001:db8::1",
        "--no-sip",
    ]))
    .unwrap();
    let names: Vec<_> = c.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["internal", "external", "external"]);
    assert_eq!(c.interface.local.to_string(), "10.0.0.1");
    assert_eq!(c.interfaces[1].sdp_addr().to_string(), "203.0.113.1");
    assert!(Config::load(&Cli::parse_from(["x", "--interface", "a/10.0.0.1!::1"])).is_err());
    let dir = std::env::temp_dir().join(format!("rtpanchor-ifs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "interface = [\"lan/127.0.0.2\", \"wan/127.0.0.3!192.0.2.3\"]\n",
    )
    .unwrap();
    let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(c.interfaces.len(), 2);
    assert_eq!(c.interfaces[1].name, "wan");
    assert_eq!(c.interface.local.to_string(), "127.0.0.2");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sip_listener_and_domains() {
    let c = Config::load(&Cli::default()).unwrap();
    assert_eq!(c.listen_sip, Some("127.0.0.1:5060".parse().unwrap()));
    assert!(!c.listen_sip_explicit);
    assert_eq!(c.domains, vec!["127.0.0.1".to_string()]);
    assert_eq!(c.sip_max_message, MAX_SIP_MESSAGE);
    assert_eq!(c.sip_outbound, None);
    let c = Config::load(&Cli::parse_from([
        "rtpanchor",
        "--listen-sip",
        "127.0.0.2:5070",
        "--domain",
        "example.org",
        "--domain",
        "example.net",
        "--sip-max-message",
        "4096",
        "--sip-outbound",
        "127.0.0.9:5060",
    ]))
    .unwrap();
    assert_eq!(
        c.sip_outbound,
        Some(NextHop::udp("127.0.0.9:5060".parse().unwrap()))
    );
    assert_eq!(c.listen_sip, Some("127.0.0.2:5070".parse().unwrap()));
    assert!(c.listen_sip_explicit);
    assert_eq!(c.domains, vec!["example.org", "example.net"]);
    assert_eq!(c.sip_max_message, 4096);
    let tls = ["rtpanchor", "--sip-outbound", "sips:127.0.0.9:5061"];
    let e = Config::load(&Cli::parse_from(tls)).unwrap_err().to_string();
    assert!(e.contains("--listen-sips"), "{e}");
    let c = Config::load(&Cli::parse_from([
        "rtpanchor",
        "--sip-outbound",
        "127.0.0.9:5070;transport=tcp",
    ]))
    .unwrap();
    assert_eq!(
        c.sip_outbound.map(|h| (h.addr.port(), h.transport)),
        Some((5070, crate::sip::transport::Transport::Tcp))
    );
    let dir = std::env::temp_dir().join(format!("rtpanchor-ob-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    let file = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()]))
    };
    let c = file("sip-outbound = \"sip:127.0.0.9:5070;transport=tcp\"\n").unwrap();
    assert_eq!(
        c.sip_outbound.map(|h| h.transport),
        Some(crate::sip::transport::Transport::Tcp)
    );
    assert!(file("sip-outbound = \"127.0.0.9:5070;transport=sctp\"\n").is_err());
    std::fs::remove_dir_all(&dir).ok();
    let c = Config::load(&Cli::parse_from([
        "rtpanchor",
        "--listen-sip",
        "127.0.0.3:5080",
    ]))
    .unwrap();
    assert_eq!(c.domains, vec!["127.0.0.3"]);
    let c = Config::load(&Cli::parse_from([
        "rtpanchor",
        "--interface",
        "127.0.0.4",
        "--listen-sip",
        "0.0.0.0:5060",
        "--sip-open",
    ]))
    .unwrap();
    assert_eq!(c.domains, vec!["127.0.0.4"]);
    let c = Config::load(&Cli::parse_from(["rtpanchor", "--no-sip"])).unwrap();
    assert_eq!(c.listen_sip, None);
    for bad in ["100", "70000"] {
        let cli = Cli::parse_from(["rtpanchor", "--sip-max-message", bad]);
        assert!(Config::load(&cli).is_err(), "{bad}");
    }
}

#[test]
fn listen_sips_needs_its_files_the_proxy_and_the_secure_default() {
    let files = ["--sips-cert", "/c.pem", "--sips-key", "/k.pem"];
    let load = |args: &[&str]| Config::load(&Cli::parse_from([&["x"], args].concat()));
    let e = load(&["--listen-sips", "127.0.0.1:5061"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--sips-cert"), "{e}");
    let c = load(&[&["--listen-sips", "127.0.0.1:5061"], &files[..]].concat()).unwrap();
    assert_eq!(c.listen_sips, Some("127.0.0.1:5061".parse().unwrap()));
    assert!(
        load(&[&["--listen-sips", "127.0.0.1:5061", "--no-sip"], &files[..]].concat()).is_err()
    );
    let e = load(&[&["--listen-sips", "192.0.2.1:5061"], &files[..]].concat())
        .unwrap_err()
        .to_string();
    assert!(e.contains("without authentication"), "{e}");
}

#[test]
fn public_sip_needs_users_or_sip_open() {
    let public = ["x", "--listen-sip", "192.0.2.1:5060"];
    let e = Config::load(&Cli::parse_from(public))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("without authentication") && e.contains("--sip-users"),
        "{e}"
    );
    let wildcard = Cli::parse_from(["x", "--listen-sip", "0.0.0.0:5060"]);
    assert!(Config::load(&wildcard).is_err());
    let mut open = public.to_vec();
    open.push("--sip-open");
    assert!(Config::load(&Cli::parse_from(&open)).unwrap().sip_open);
    let mut users = public.to_vec();
    users.extend(["--sip-users", "/etc/rtpanchor/users.toml"]);
    let c = Config::load(&Cli::parse_from(&users)).unwrap();
    assert!(c.sip_users.is_some());
    // Loopback and --no-sip need neither.
    assert!(Config::load(&Cli::parse_from(["x", "--listen-sip", "127.0.0.5:5060"])).is_ok());
    assert!(Config::load(&Cli::parse_from([
        "x",
        "--interface",
        "192.0.2.1",
        "--no-sip"
    ]))
    .is_ok());
}

#[test]
fn public_ng_needs_an_allow_list() {
    for flag in ["--listen-ng", "--listen-tcp-ng"] {
        let cli = Cli::parse_from(["x", flag, "192.0.2.1:2223"]);
        let e = Config::load(&cli).unwrap_err().to_string();
        assert!(e.contains("--ng-allow"), "{e}");
        let cli = Cli::parse_from(["x", flag, "192.0.2.1:2223", "--ng-allow", "192.0.2.0/24"]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.ng_allow, vec!["192.0.2.0/24".parse::<Cidr>().unwrap()]);
    }
    assert!(Cli::try_parse_from(["x", "--ng-allow", "300.0.0.0/8"]).is_err());
}

#[test]
fn auth_options_from_flags_and_file() {
    let c = Config::load(&Cli::default()).unwrap();
    assert_eq!(
        c.sip_auth_algorithms,
        vec![Algorithm::Md5, Algorithm::Sha256]
    );
    let c = Config::load(&Cli::parse_from([
        "x",
        "--sip-auth-algorithms",
        "sha-256,MD5",
        "--sip-trusted",
        "10.0.0.0/8",
        "--sip-trusted",
        "192.0.2.7",
    ]))
    .unwrap();
    assert_eq!(
        c.sip_auth_algorithms,
        vec![Algorithm::Sha256, Algorithm::Md5]
    );
    assert_eq!(c.sip_trusted.len(), 2);
    assert!(Config::load(&Cli::parse_from(["x", "--sip-auth-algorithms", "sha-512"])).is_err());
    let dir = std::env::temp_dir().join(format!("rtpanchor-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "sip-users = \"/u.toml\"\nsip-trusted = [\"10.0.0.0/8\"]\nng-allow = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let c = Config::load(&Cli::parse_from(["x", "--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(
        c.sip_users.as_deref(),
        Some(std::path::Path::new("/u.toml"))
    );
    assert_eq!(c.sip_trusted.len(), 1);
    assert_eq!(c.ng_allow.len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn invalid_ranges_rejected() {
    let cli = Cli::parse_from(["rtpanchor", "--port-min", "5000", "--port-max", "4000"]);
    assert!(Config::load(&cli).is_err());
}
