//! Loading and attaching the program, and each worker's handle on its map; a watch thread
//! attaches the program again where someone else detached it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handover::KernelWorker;
use super::route;
#[cfg(rtpanchor_bpf)]
use super::xdp;
use crate::config::KernelMode;

/// A device the program attaches to, and the families of the relay's addresses on it.
pub struct Device {
    pub name: String,
    pub v4: bool,
    pub v6: bool,
}

/// How often the watch thread looks whether the program is still attached.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The loaded and attached program; dropping it detaches it.
pub struct KernelPath {
    /// Stops and joins the watch thread before the program is dropped (field order).
    watch: Option<Watch>,
    #[cfg(rtpanchor_bpf)]
    ebpf: Arc<Mutex<aya::Ebpf>>,
    map_id: u32,
    /// The direction entries, mapped once and shared by the workers, and the entry numbers
    /// not yet handed to one.
    dirs: Arc<super::dirs::Directions>,
    pool: super::dirs::Pool,
    /// The address slots and port range of `anchor_port`, and its cells mapped.
    slots: Arc<super::keys::Slots>,
    cells: Arc<super::keys::PortCells>,
    /// Packets each program relayed (`anchor_paths`: TC, XDP), summed over CPUs at read.
    #[cfg(rtpanchor_bpf)]
    paths: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    /// Devices whose driver runs the XDP program.
    xdp_devices: u64,
    ifindex: u32,
    origin_ns: u64,
    /// Some relay address is a real one (not loopback): workers ask routes.
    routed: bool,
    /// Every interface address, in configuration order.
    locals: std::sync::Arc<[IpAddr]>,
    next_owner: std::sync::atomic::AtomicU32,
}

/// CLOCK_MONOTONIC now, in ns (the program's `bpf_ktime_get_ns`).
#[cfg(rtpanchor_bpf)]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a live, exclusively borrowed struct.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(crate::time::NANOS_PER_SEC)
        .saturating_add(ts.tv_nsec as u64)
}

impl KernelPath {
    /// Loads the program and attaches it to the ingress of each device that has one of the
    /// relay's addresses, IPv4 or IPv6 (`lo` for loopback ones): with interfaces on two
    /// networks, packets from either are relayed in the kernel and leave by the other's
    /// device. The error says why the fast path is unavailable; the relay then carries all
    /// media in user space.
    /// `ports`: the relay's media port range (inclusive); packets to other ports are passed
    /// on before the program's map lookup.
    pub fn start(
        locals: &[IpAddr],
        mode: KernelMode,
        ports: (u16, u16),
    ) -> Result<KernelPath, String> {
        let ips: Vec<IpAddr> = locals
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if ips.is_empty() {
            return Err(format!(
                "no relay address among {locals:?} is one address (the program needs the ones it relays on)"
            ));
        }
        if !kernel_at_least(6, 6) {
            return Err(
                "Linux 6.6 or later is needed (TCX links, detached when the relay exits)".into(),
            );
        }
        let mut devices: Vec<Device> = Vec::new();
        for ip in &ips {
            let name = if ip.is_loopback() {
                "lo".to_string()
            } else {
                device_with(*ip).ok_or_else(|| format!("no network device has {ip}"))?
            };
            let at = match devices.iter().position(|d| d.name == name) {
                Some(at) => at,
                None => {
                    devices.push(Device {
                        name,
                        v4: false,
                        v6: false,
                    });
                    devices.len() - 1
                }
            };
            if let Some(d) = devices.get_mut(at) {
                d.v4 |= ip.is_ipv4();
                d.v6 |= ip.is_ipv6();
            }
        }
        let routed = ips.iter().any(|ip| !ip.is_loopback());
        Self::load(&devices, mode, routed, locals.into(), ports)
    }

    #[cfg(not(rtpanchor_bpf))]
    fn load(
        _devices: &[Device],
        _mode: KernelMode,
        _routed: bool,
        _locals: std::sync::Arc<[IpAddr]>,
        _ports: (u16, u16),
    ) -> Result<KernelPath, String> {
        Err("built without the program (clang was not found at build time)".into())
    }

    #[cfg(rtpanchor_bpf)]
    fn load(
        devices: &[Device],
        mode: KernelMode,
        routed: bool,
        locals: std::sync::Arc<[IpAddr]>,
        ports: (u16, u16),
    ) -> Result<KernelPath, String> {
        use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
        static OBJECT: &[u8] = include_bytes!(env!("RTPANCHOR_BPF_OBJECT"));
        let (port_min, port_max) = ports;
        let slots = super::keys::Slots::new(&locals, ports);
        let (n4, n6) = (slots.v4.len() as u32, slots.v6.len() as u32);
        let (addrs4, addrs6) = (slots.addrs4(), slots.addrs6());
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("anchor_port_min", &port_min, true)
            .override_global("anchor_port_max", &port_max, true)
            .override_global("anchor_n4", &n4, true)
            .override_global("anchor_n6", &n6, true)
            .override_global("anchor_addrs4", &addrs4, true)
            .override_global("anchor_addrs6", &addrs6, true)
            .map_max_entries("anchor_port", slots.cells())
            .load(OBJECT)
            .map_err(|e| format!("loading the program: {e}"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("anchor_forward")
            .ok_or("the object has no anchor_forward program")?
            .try_into()
            .map_err(|e| format!("anchor_forward: {e}"))?;
        prog.load()
            .map_err(|e| format!("the kernel refused the program: {e}"))?;
        let prog_id = prog
            .info()
            .map_err(|e| format!("anchor_forward: {e}"))?
            .id();
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        for device in &names {
            prog.attach_with_options(
                device,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| format!("attaching to {device}: {e}"))?;
        }
        let xdp_on = xdp::attach_all(&mut ebpf, devices, mode)?;
        let paths = ebpf
            .take_map("anchor_paths")
            .ok_or("the object has no anchor_paths map")?;
        let paths = aya::maps::PerCpuArray::try_from(paths).map_err(|e| e.to_string())?;
        let map = ebpf
            .map("anchor_fwd")
            .ok_or("the object has no anchor_fwd map")?;
        let map_id = match map {
            aya::maps::Map::HashMap(m) => m.info().map_err(|e| e.to_string())?.id(),
            _ => return Err("anchor_fwd is not a hash map".into()),
        };
        let dirs = match ebpf.map("anchor_dir") {
            Some(aya::maps::Map::Array(m)) => {
                use std::os::fd::AsFd;
                super::dirs::Directions::map(m.fd().as_fd(), super::dirs::DIRECTIONS)
                    .map_err(|e| format!("mapping anchor_dir: {e}"))?
            }
            _ => return Err("the object has no anchor_dir array".into()),
        };
        let cells = match ebpf.map("anchor_port") {
            Some(aya::maps::Map::Array(m)) => {
                use std::os::fd::AsFd;
                super::keys::PortCells::map(m.fd().as_fd(), slots.cells())
                    .map_err(|e| format!("mapping anchor_port: {e}"))?
            }
            _ => return Err("the object has no anchor_port array".into()),
        };
        let ifindex = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("no ifindex for lo")?;
        let ebpf = Arc::new(Mutex::new(ebpf));
        let xdp_devices = xdp_on.len() as u64;
        let watch = Watch::start(ebpf.clone(), names, prog_id, xdp_on)
            .map_err(|e| format!("starting the watch thread: {e}"))?;
        Ok(KernelPath {
            watch: Some(watch),
            ebpf,
            map_id,
            dirs: Arc::new(dirs),
            pool: super::dirs::Pool::new(super::dirs::DIRECTIONS),
            slots: Arc::new(slots),
            cells: Arc::new(cells),
            paths,
            xdp_devices,
            ifindex,
            origin_ns: monotonic_ns().saturating_sub(crate::time::now_ns()),
            routed,
            locals,
            next_owner: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Times the program was attached again after someone else detached it.
    pub fn reattached(&self) -> u64 {
        self.watch
            .as_ref()
            .map_or(0, |w| w.reattached.load(Ordering::Relaxed))
    }

    /// Devices whose driver runs the XDP program.
    pub fn xdp_devices(&self) -> u64 {
        self.xdp_devices
    }

    /// The programs' own run time (ns) and runs so far, the TC and the XDP program summed:
    /// what the in-kernel path costs the machine beyond the stack's own work. The kernel
    /// counts them only while `kernel.bpf_stats_enabled` is 1; otherwise both stay 0.
    pub fn program_time(&self) -> (u64, u64) {
        #[cfg(rtpanchor_bpf)]
        {
            let Ok(ebpf) = self.ebpf.lock() else {
                return (0, 0);
            };
            let mut sum = (0u64, 0u64);
            for name in ["anchor_forward", "anchor_xdp"] {
                // The kernel's `bpf_prog_info` (BPF_OBJ_GET_INFO_BY_FD), through aya.
                let Some(info) = ebpf.program(name).and_then(|p| p.info().ok()) else {
                    continue;
                };
                let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
                sum = (sum.0.wrapping_add(ns), sum.1.wrapping_add(info.run_count()));
            }
            sum
        }
        #[cfg(not(rtpanchor_bpf))]
        (0, 0)
    }

    /// Packets the TC program and the XDP program relayed, in that order.
    pub fn relayed_by_path(&self) -> (u64, u64) {
        #[cfg(rtpanchor_bpf)]
        {
            let sum = |i: u32| {
                self.paths
                    .get(&i, 0)
                    .map_or(0, |v| v.iter().copied().fold(0u64, u64::wrapping_add))
            };
            (sum(0), sum(1))
        }
        #[cfg(not(rtpanchor_bpf))]
        (0, 0)
    }

    /// A worker's own handle on the map (each holds its own descriptor).
    pub fn worker(&self) -> Result<KernelWorker, String> {
        let data = aya::maps::MapData::from_id(self.map_id).map_err(|e| e.to_string())?;
        let map = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))
            .map_err(|e| e.to_string())?;
        let routes = if self.routed {
            Some(route::RouteQuery::new().map_err(|e| format!("rtnetlink: {e}"))?)
        } else {
            None
        };
        let owner = self
            .next_owner
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(KernelWorker::new(
            super::keys::Keys::new(self.slots.clone(), self.cells.clone(), Some(map)),
            super::dirs::Entries::new(self.pool.clone(), self.dirs.clone()),
            self.ifindex,
            self.origin_ns,
            self.locals.clone(),
            routes,
            owner,
        ))
    }
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.stop();
        }
    }
}

/// A thread that looks every [`WATCH_EVERY`] whether the program is still attached to each
/// device's ingress, and attaches it again where it is not: an outsider (`bpftool link
/// detach`, a network manager that resets the device's TC state) would otherwise leave every
/// stream the workers hand over relayed in user space for good.
#[cfg_attr(not(rtpanchor_bpf), allow(dead_code))]
struct Watch {
    stop: Arc<AtomicBool>,
    reattached: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    #[cfg(rtpanchor_bpf)]
    fn start(
        ebpf: Arc<Mutex<aya::Ebpf>>,
        devices: Vec<String>,
        prog_id: u32,
        xdp_on: Vec<(String, u32)>,
    ) -> std::io::Result<Watch> {
        let stop = Arc::new(AtomicBool::new(false));
        let reattached = Arc::new(AtomicU64::new(0));
        let (stop2, count) = (stop.clone(), reattached.clone());
        let thread = std::thread::Builder::new()
            .name("rtpanchor-bpfwatch".into())
            .spawn(move || {
                // Devices whose last attempt failed (logged once until it works again).
                let mut failing: Vec<String> = Vec::new();
                // The devices XDP may send out of, asked at once and then every turn (a veth
                // peer's XDP or GRO comes and goes).
                let mut egress = xdp::Egress::default();
                egress.refresh(&ebpf, &xdp_on);
                while sleep_unless_stopped(&stop2, WATCH_EVERY) {
                    egress.refresh(&ebpf, &xdp_on);
                    for device in &devices {
                        match attach_if_detached(&ebpf, device, prog_id) {
                            Ok(false) => {}
                            Ok(true) => {
                                count.fetch_add(1, Ordering::Relaxed);
                                failing.retain(|d| d != device);
                                tracing::warn!(
                                    device = %device,
                                    "the in-kernel program was detached by someone else; attached it again"
                                );
                            }
                            Err(e) => {
                                if !failing.contains(device) {
                                    failing.push(device.clone());
                                    tracing::warn!(
                                        device = %device,
                                        error = %e,
                                        "the in-kernel program is not attached and could not be attached again; media stays in user space there"
                                    );
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(Watch {
            stop,
            reattached,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps `total` in short steps; false as soon as `stop` is set.
#[cfg(rtpanchor_bpf)]
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(step);
        slept += step;
    }
    !stop.load(Ordering::Relaxed)
}

/// Attaches the program to `device`'s ingress unless it is there already; true when it
/// attached it.
#[cfg(rtpanchor_bpf)]
fn attach_if_detached(ebpf: &Mutex<aya::Ebpf>, device: &str, prog_id: u32) -> Result<bool, String> {
    use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
    let (_, attached) = SchedClassifier::query_tcx(device, TcAttachType::Ingress)
        .map_err(|e| format!("querying {device}: {e}"))?;
    if attached.iter().any(|p| p.id() == prog_id) {
        return Ok(false);
    }
    let mut ebpf = ebpf
        .lock()
        .map_err(|_| "program state poisoned".to_string())?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("anchor_forward")
        .ok_or("the object has no anchor_forward program")?
        .try_into()
        .map_err(|e| format!("anchor_forward: {e}"))?;
    prog.attach_with_options(
        device,
        TcAttachType::Ingress,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    )
    .map_err(|e| format!("attaching to {device}: {e}"))?;
    Ok(true)
}

/// The name of the network device that has `ip`.
fn device_with(ip: IpAddr) -> Option<String> {
    crate::dataplane::ifaddrs::find(ip).map(|a| a.device)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let ma: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mi: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}
