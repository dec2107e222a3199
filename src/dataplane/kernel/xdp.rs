//! The XDP side of the fast path: on which devices the XDP program runs (and why not, where
//! it does not), and which devices it may send redirected frames out of.
//!
//! Facts this rests on (Linux 6.18):
//! - `bpf_fib_lookup` answers only for a device with forwarding on
//!   (`net.ipv4.conf.DEV.forwarding`, `net.ipv6.conf.DEV.forwarding`), output lookups
//!   included; elsewhere it returns "forwarding disabled" and the XDP program passes every
//!   packet on to the TC program. `auto` therefore attaches XDP only where forwarding is on.
//! - A redirected or XDP_TX frame is sent with the device's `ndo_xdp_xmit`; the kernel drops
//!   it when the device cannot (its `xdp_features` lack `NDO_XMIT`). A veth has it only while
//!   its peer runs an XDP program or has GRO on (the frame lands in the peer's NAPI ring), and
//!   some NIC drivers only while an XDP program is attached to them. So the XDP program sends
//!   only out of devices in `anchor_egress`: those that run our XDP program and report
//!   `NDO_XMIT` over the `netdev` generic netlink family, asked again every second.
//! - On a virtual device (veth, tun, bond, ...) XDP cannot be cheaper than TC: what arrives
//!   there is an skb a local stack built (a socket's, a container's), which a veth first
//!   copies into a page of its own for XDP (`skb_pp_cow_data`, seen in profiles: a socket's
//!   skb is not laid out as XDP needs, 256 bytes of headroom), and the frame XDP sends becomes
//!   an skb again at the peer; TC relays the skb as it is. A veth also needs an XDP program
//!   on its peer to take XDP's frames, which charges every packet the peer receives the same
//!   copy. Measured on a veth pair (BENCHMARKS.md, "XDP against TC on a veth pair"), TC with
//!   nothing on the peer cost least. So `auto` attaches XDP only to devices a driver backs
//!   (`/sys/class/net/DEV/device`: NICs, virtio-net), where XDP runs before any skb exists;
//!   `--kernel-mode xdp` attaches it to virtual devices too.
//! - A veth whose peer has GRO on but no XDP program reports `NDO_XMIT` and yet dropped every
//!   frame XDP sent into it here (Linux 6.18: `xdp:xdp_bulk_tx` sent=0 drops=1 for XDP_TX,
//!   uncounted for redirects): with `--kernel-mode xdp` on such a veth, calls through it lose
//!   their media. Not detected.
//! - Where none of the devices XDP was attached to can take its frames, `auto` takes XDP off
//!   again: it would only pass every packet on to TC, at a cost.

#![cfg_attr(not(rtpanchor_bpf), allow(dead_code))]

use std::io::Read;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::KernelMode;

const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the device transmits frames redirected to it.
pub const XDP_ACT_NDO_XMIT: u64 = 4;

/// A generic netlink request: header, `cmd`, and one attribute `kind` holding `data`.
fn request(family: u16, seq: u32, cmd: u8, kind: u16, data: &[u8]) -> Vec<u8> {
    let alen = 4 + data.len();
    let len = NLMSG_HDR + GENL_HDR + alen.div_ceil(4) * 4;
    let mut m = vec![0u8; len];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&family.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16] = cmd;
    m[17] = 1;
    let at = NLMSG_HDR + GENL_HDR;
    m[at..at + 2].copy_from_slice(&(alen as u16).to_ne_bytes());
    m[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
    m[at + 4..at + alen].copy_from_slice(data);
    m
}

/// The question "which id has the generic netlink family `netdev`?".
pub fn family_request(seq: u32) -> Vec<u8> {
    request(
        GENL_ID_CTRL,
        seq,
        CTRL_CMD_GETFAMILY,
        CTRL_ATTR_FAMILY_NAME,
        b"netdev\0",
    )
}

/// The question "which XDP features has device `ifindex`?" to the family `family`.
pub fn features_request(family: u16, seq: u32, ifindex: u32) -> Vec<u8> {
    request(
        family,
        seq,
        NETDEV_CMD_DEV_GET,
        NETDEV_A_DEV_IFINDEX,
        &ifindex.to_ne_bytes(),
    )
}

/// The data of attribute `kind` in the answer to request `seq`; `None` for an error answer,
/// an answer to another request, a truncated message or one without it.
pub fn answer_attr(reply: &[u8], seq: u32, kind: u16) -> Option<&[u8]> {
    let len = u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?) as usize;
    let msg = reply.get(..len)?;
    let mtype = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    let mseq = u32::from_ne_bytes(msg.get(8..12)?.try_into().ok()?);
    if mseq != seq || mtype == NLMSG_ERROR {
        return None;
    }
    let mut at = NLMSG_HDR + GENL_HDR;
    while at + 4 <= msg.len() {
        let alen = usize::from(u16::from_ne_bytes(msg.get(at..at + 2)?.try_into().ok()?));
        let akind = u16::from_ne_bytes(msg.get(at + 2..at + 4)?.try_into().ok()?) & 0x3fff;
        if alen < 4 {
            return None;
        }
        let data = msg.get(at + 4..at + alen)?;
        if akind == kind {
            return Some(data);
        }
        at += alen.div_ceil(4) * 4;
    }
    None
}

/// A generic netlink socket asking devices' XDP features (the watch thread's).
pub struct Features {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl Features {
    /// Opens the socket and finds the `netdev` family (Linux 6.3+).
    pub fn new() -> std::io::Result<Features> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_GENERIC)),
        )?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut f = Features {
            sock,
            family: 0,
            seq: 0,
            buf: vec![0; 8192],
        };
        let seq = f.next_seq();
        let id = f
            .ask(&family_request(seq), seq, CTRL_ATTR_FAMILY_ID)
            .and_then(|d| Some(u16::from_ne_bytes(d.get(0..2)?.try_into().ok()?)))
            .ok_or_else(|| std::io::Error::other("no netdev generic netlink family"))?;
        f.family = id;
        Ok(f)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` and returns attribute `kind` of its answer (bounded reads).
    fn ask(&mut self, req: &[u8], seq: u32, kind: u16) -> Option<Vec<u8>> {
        self.sock.send(req).ok()?;
        for _ in 0..4 {
            let n = (&self.sock).read(&mut self.buf).ok()?;
            let reply = self.buf.get(..n)?;
            if let Some(d) = answer_attr(reply, seq, kind) {
                return Some(d.to_vec());
            }
            if reply.get(8..12) == Some(&seq.to_ne_bytes()[..]) {
                return None;
            }
        }
        None
    }

    /// Device `ifindex`'s XDP features (`NETDEV_XDP_ACT_*` bits), or `None`.
    pub fn of(&mut self, ifindex: u32) -> Option<u64> {
        let seq = self.next_seq();
        let req = features_request(self.family, seq, ifindex);
        let d = self.ask(&req, seq, NETDEV_A_DEV_XDP_FEATURES)?;
        Some(u64::from_ne_bytes(d.get(0..8)?.try_into().ok()?))
    }
}

/// Why forwarding is off for `device` in a family the relay uses there (the sysctl to set),
/// or `None` when it is on for each.
pub fn forwarding_off(device: &str, v4: bool, v6: bool) -> Option<String> {
    for (on, family) in [(v4, "ipv4"), (v6, "ipv6")] {
        if !on {
            continue;
        }
        let path = format!("/proc/sys/net/{family}/conf/{device}/forwarding");
        let value = std::fs::read_to_string(&path).unwrap_or_default();
        if value.trim() != "1" {
            return Some(format!("net.{family}.conf.{device}.forwarding is off"));
        }
    }
    None
}

/// Loads the XDP program and attaches it at the driver of each of `devices` that `mode` and
/// the facts allow, logging for every device which program relays there and why. Returns the
/// devices XDP runs on (name, ifindex); an XDP program the kernel refuses leaves TC
/// everywhere (logged), it does not stop the fast path.
#[cfg(rtpanchor_bpf)]
pub fn attach_all(
    ebpf: &mut aya::Ebpf,
    devices: &[super::load::Device],
    mode: KernelMode,
) -> Result<Vec<(String, u32)>, String> {
    use aya::programs::{Xdp, XdpMode};
    let mut on = Vec::new();
    let mut attached = Vec::new();
    let mut prog: Option<&mut Xdp> = None;
    let mut refused: Option<String> = None;
    let wanted = |d: &super::load::Device| {
        d.name != "lo" && virtual_why(mode, is_virtual(&d.name)).is_none()
    };
    if mode != KernelMode::Tc && devices.iter().any(wanted) {
        match ebpf
            .program_mut("anchor_xdp")
            .ok_or("the object has no anchor_xdp program".to_string())
            .and_then(|p| <&mut Xdp>::try_from(p).map_err(|e| e.to_string()))
        {
            Ok(p) => match p.load() {
                Ok(()) => prog = Some(p),
                Err(e) => refused = Some(format!("the kernel refused the XDP program: {e}")),
            },
            Err(e) => refused = Some(e),
        }
    }
    for d in devices {
        let why_not = if d.name == "lo" {
            Some("loopback has no native XDP".to_string())
        } else if mode == KernelMode::Tc {
            Some("--kernel-mode tc".to_string())
        } else if let Some(r) = &refused {
            Some(r.clone())
        } else if let (KernelMode::Auto, Some(off)) = (mode, forwarding_off(&d.name, d.v4, d.v6)) {
            Some(format!(
                "{off} (XDP's route lookup needs it; set it to 1 or use --kernel-mode xdp)"
            ))
        } else {
            virtual_why(mode, is_virtual(&d.name)).map(str::to_string)
        };
        if let Some(why) = why_not {
            tracing::info!(device = %d.name, mode = "tc", why = %why, "in-kernel path");
            continue;
        }
        let Some(p) = prog.as_mut() else {
            continue;
        };
        match p.attach(&d.name, XdpMode::Driver) {
            Ok(link) => {
                let ifindex = ifindex_of(&d.name).unwrap_or(0);
                if mode == KernelMode::Xdp {
                    if let Some(off) = forwarding_off(&d.name, d.v4, d.v6) {
                        tracing::warn!(device = %d.name, "{off}: the XDP program cannot look routes up there and passes its packets to the TC program");
                    }
                }
                attached.push((d.name.clone(), ifindex, link));
            }
            Err(e) => {
                let why = format!("the driver has no native XDP or refused it: {e}");
                tracing::info!(device = %d.name, mode = "tc", why = %why, "in-kernel path");
            }
        }
    }
    // Which of them take XDP_TX and redirected frames, asked once the program is attached
    // (some drivers take them only then; a veth only while its peer runs XDP, or GRO, which
    // it reports alike but which dropped the frames here).
    let sends: Option<Vec<Option<u64>>> = if attached.is_empty() {
        None
    } else {
        Features::new()
            .ok()
            .map(|mut f| attached.iter().map(|(_, i, _)| f.of(*i)).collect())
    };
    if let (Some(why), Some(p)) = (
        sends.as_deref().and_then(|s| detach_why(mode, s)),
        prog.as_mut(),
    ) {
        for (name, _, link) in attached {
            if let Err(e) = p.detach(link) {
                tracing::warn!(device = %name, error = %e, "detaching the XDP program");
            }
            tracing::info!(device = %name, mode = "tc", why = %why, "in-kernel path");
        }
        return Ok(Vec::new());
    }
    for (at, (name, ifindex, _)) in attached.iter().enumerate() {
        let feats = sends.as_ref().and_then(|s| s.get(at).copied().flatten());
        let why = match feats {
            Some(bits) if bits & XDP_ACT_NDO_XMIT != 0 => {
                "native XDP at the driver, which takes XDP_TX and redirected frames"
            }
            Some(_) => "native XDP at the driver, which takes no XDP_TX or redirected frames now (a veth needs an XDP program on its peer): XDP sends to the other devices, TC relays the rest",
            None => "native XDP at the driver (its XDP features unknown: asked again every second)",
        };
        tracing::info!(device = %name, mode = "xdp", why = why, "in-kernel path: XDP at the driver, TC for what it passes on");
        on.push((name.clone(), *ifindex));
    }
    Ok(on)
}

/// Whether no driver backs device `name` (veth, tun, bond, ...: no `/sys/class/net/NAME/device`).
pub fn is_virtual(name: &str) -> bool {
    !std::path::Path::new(&format!("/sys/class/net/{name}/device")).exists()
}

/// Why `mode` does not attach XDP to a device that is virtual (`virt`), or `None`.
pub fn virtual_why(mode: KernelMode, virt: bool) -> Option<&'static str> {
    (mode == KernelMode::Auto && virt).then_some(
        "a virtual device: its packets are skbs a local stack built, which XDP there copies first (a veth also needs XDP on its peer); TC relays them for less (use --kernel-mode xdp to attach XDP anyway)",
    )
}

/// Why `auto` takes the XDP program off again, given the XDP features (`NETDEV_XDP_ACT_*`,
/// `None` where unknown) of every device it was attached to: when none of them takes XDP_TX
/// or redirected frames, XDP can relay nothing and only costs (a veth turns every packet into
/// an XDP buffer first, a copy for a packet that was an skb, then the TC program relays it).
/// `--kernel-mode xdp` keeps it (a device may gain the ability later: the watch thread asks
/// every second); an unknown answer keeps it too.
pub fn detach_why(mode: KernelMode, features: &[Option<u64>]) -> Option<&'static str> {
    if mode != KernelMode::Auto || features.is_empty() {
        return None;
    }
    let none_sends = features
        .iter()
        .all(|f| f.is_some_and(|bits| bits & XDP_ACT_NDO_XMIT == 0));
    none_sends.then_some(
        "no device XDP runs on takes XDP_TX or redirected frames (a veth needs an XDP program on its peer): XDP could only pass every packet on to TC, at a cost (use --kernel-mode xdp to keep it)",
    )
}

/// The ifindex of device `name`.
pub fn ifindex_of(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// What the watch thread keeps to refresh `anchor_egress`.
#[derive(Default)]
pub struct Egress {
    features: Option<Features>,
    /// Devices in the map now.
    listed: Vec<u32>,
    /// Whether a failing features question was logged.
    warned: bool,
    /// Devices logged as unable to take redirected frames (once each).
    told: Vec<u32>,
}

impl Egress {
    /// Puts into `anchor_egress` each device of `on` (XDP runs there) that can transmit
    /// redirected frames now, and takes out those that cannot any more.
    #[cfg(rtpanchor_bpf)]
    pub fn refresh(&mut self, ebpf: &std::sync::Mutex<aya::Ebpf>, on: &[(String, u32)]) {
        if on.is_empty() {
            return;
        }
        if self.features.is_none() {
            match Features::new() {
                Ok(f) => self.features = Some(f),
                Err(e) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(error = %e, "cannot ask devices' XDP features; XDP passes every packet to the TC program");
                    }
                    return;
                }
            }
        }
        let Ok(mut ebpf) = ebpf.lock() else {
            return;
        };
        let Some(map) = ebpf.map_mut("anchor_egress") else {
            return;
        };
        let Ok(mut devmap) = aya::maps::DevMapHash::try_from(map) else {
            return;
        };
        for (name, ifindex) in on {
            let can = self
                .features
                .as_mut()
                .and_then(|f| f.of(*ifindex))
                .is_some_and(|bits| bits & XDP_ACT_NDO_XMIT != 0);
            let listed = self.listed.contains(ifindex);
            if can && !listed {
                if devmap.insert(*ifindex, *ifindex, None, 0).is_ok() {
                    self.listed.push(*ifindex);
                    tracing::info!(device = %name, "XDP sends out of this device");
                }
            } else if !can && listed {
                let _ = devmap.remove(*ifindex);
                self.listed.retain(|i| i != ifindex);
                tracing::info!(device = %name, "XDP does not send out of this device now (it cannot take redirected frames; a veth needs an XDP program on its peer); the TC program relays those packets");
            } else if !can && !listed && !self.told.contains(ifindex) {
                self.told.push(*ifindex);
                tracing::info!(device = %name, "the device cannot take redirected frames (a veth needs an XDP program on its peer); the TC program relays the packets XDP would send there");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seq: u32, kind: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        super::super::route::test_answer(seq, kind, GENL_HDR, attrs)
    }

    #[test]
    fn auto_attaches_xdp_to_devices_a_driver_backs() {
        assert!(is_virtual("lo"), "loopback has no device link");
        assert!(
            virtual_why(KernelMode::Auto, true).is_some_and(|w| w.contains("--kernel-mode xdp"))
        );
        assert_eq!(virtual_why(KernelMode::Auto, false), None);
        assert_eq!(virtual_why(KernelMode::Xdp, true), None);
    }

    #[test]
    fn auto_takes_xdp_off_only_where_no_device_can_send() {
        let can = Some(XDP_ACT_NDO_XMIT | 3);
        let cannot = Some(3);
        assert!(detach_why(KernelMode::Auto, &[cannot, cannot]).is_some());
        assert!(detach_why(KernelMode::Auto, &[cannot]).is_some_and(|w| w.contains("veth")));
        // One device that sends is enough: the others' packets can be redirected to it.
        assert_eq!(detach_why(KernelMode::Auto, &[cannot, can]), None);
        // An unknown answer keeps it (the watch thread asks again).
        assert_eq!(detach_why(KernelMode::Auto, &[cannot, None]), None);
        assert_eq!(detach_why(KernelMode::Xdp, &[cannot]), None);
        assert_eq!(detach_why(KernelMode::Auto, &[]), None);
    }

    #[test]
    fn the_requests_name_the_family_and_the_device() {
        let r = family_request(5);
        assert_eq!(
            r.len(),
            32,
            "header, genl header, an 11-byte attribute padded"
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), GENL_ID_CTRL);
        assert_eq!((r[16], r[17]), (CTRL_CMD_GETFAMILY, 1));
        assert_eq!(u16::from_ne_bytes([r[22], r[23]]), CTRL_ATTR_FAMILY_NAME);
        assert_eq!(&r[24..31], b"netdev\0");
        let d = features_request(33, 6, 7);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), 33);
        assert_eq!(u32::from_ne_bytes([d[8], d[9], d[10], d[11]]), 6);
        assert_eq!(d[16], NETDEV_CMD_DEV_GET);
        assert_eq!(&d[24..28], &7u32.to_ne_bytes());
    }

    #[test]
    fn the_answer_gives_the_features_past_a_pad_attribute() {
        let feats = (XDP_ACT_NDO_XMIT | 3).to_ne_bytes();
        let a = answer(9, 33, &[(1, &7u32.to_ne_bytes()), (2, &[]), (3, &feats)]);
        assert_eq!(
            answer_attr(&a, 9, NETDEV_A_DEV_XDP_FEATURES),
            Some(&feats[..])
        );
        assert_eq!(answer_attr(&a, 8, NETDEV_A_DEV_XDP_FEATURES), None);
        assert_eq!(answer_attr(&answer(9, NLMSG_ERROR, &[]), 9, 3), None);
        for cut in 0..a.len() {
            // A cut message: no answer and no panic.
            let mut short = a[..cut].to_vec();
            if short.len() >= 4 {
                short[0..4].copy_from_slice(&(a.len() as u32).to_ne_bytes());
            }
            assert_eq!(answer_attr(&short, 9, 3), None, "cut at {cut}");
        }
        let mut bad = a.clone();
        bad[NLMSG_HDR + GENL_HDR..NLMSG_HDR + GENL_HDR + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(
            answer_attr(&bad, 9, 3),
            None,
            "an attribute shorter than its header"
        );
    }
}
