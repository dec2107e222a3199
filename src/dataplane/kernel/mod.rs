//! The in-kernel fast path: a TC program (`forward.bpf.c`) relays the RTP of latched streams
//! inside the kernel, so those packets never wake a worker.
//!
//! The worker stays the owner of every stream. Once both ends of a direction are latched
//! (confirmed sources) it copies that direction's RTP tracker into the program's map
//! ([`KernelWorker::turn`]); the program then checks the source, tracks sequence numbers,
//! loss, duplicates, reordering and jitter exactly as `rtp::stats` does, rewrites the
//! addresses and sends the packet on. RTCP and non-RTP it passes up to the worker's socket
//! and the stream stays in the kernel. What the tracker or the latch must see (another
//! source, SSRC or payload type, a big sequence jump, RTP with CSRCs, an extension or
//! padding) it passes up and stops forwarding; the worker then takes the tracker back
//! ([`KernelWorker::on_user_packet`]) before it handles the packet, and offers the stream to
//! the kernel again later. The worker folds the kernel's counts into the stream's published
//! figures on its housekeeping ticks, so ng queries, timeouts and metrics read the same
//! cells as before.
//!
//! Scope today: IPv4. A relay on loopback (127.0.0.0/8) relays between endpoints on
//! loopback: the program sits on `lo` and sends the packet out of it again. A relay on a
//! real address relays between endpoints elsewhere: the program sits on the device that has
//! the address and asks the kernel's routing table and neighbour cache (`bpf_fib_lookup`,
//! `bpf_redirect_neigh`) where the packet goes, as the relay's own send would. A direction
//! that mixes the two, and IPv6, stay in user space. The program is attached with TCX
//! (Linux 6.6+), a link that goes away with the process, so a relay that dies leaves
//! nothing behind.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

pub mod route;

use crate::rtp::stats::{RtpStreamTracker, TrackerParts};
use crate::rtp::RtpPacket;

use super::shared::{bump, WorkerCounters};
use super::slot::{DirtyList, Slot, SlotKind, NO_SLOT};
use super::worker::SlotTable;
use crate::session::backend::StreamId;

/// Set by the program when it passed up a packet the worker must see: the worker takes the
/// direction back. With `OUT_OF_SCOPE`, that packet was RTP the program does not parse.
const HANDED_BACK: u32 = 1;
const OUT_OF_SCOPE: u32 = 2;
/// After RTP the program does not parse (CSRCs, extensions, padding: likely on every packet
/// of that stream), a direction is offered again only after this many packets.
const RETRY_OUT_OF_SCOPE_PACKETS: u64 = 10_000;

/// Whether this build carries the program (clang was found at build time).
pub const BUILT: bool = cfg!(rtpanchor_bpf);

/// How often the kernel's counts are folded into the published figures: one map lookup
/// (a syscall, ~1 µs) per direction each time, so 20,000 directions cost the worker ~2%
/// of a core at once a second. Idle timeouts are tens of seconds; queries see figures at
/// most this old.
const SYNC_EVERY_NS: u64 = crate::time::NANOS_PER_SEC;
/// Entries read per batch, and batches per housekeeping turn while a pass runs: 1,024
/// entries (~0.1 ms) a turn, so a pass over 20,000 directions takes 20 turns.
const BATCH: usize = 256;
const BATCHES_PER_TURN: usize = 4;
/// Map operations per housekeeping turn (each is a syscall of about a microsecond), so a
/// busy worker's packets never wait long behind them.
const OPS_PER_TURN: usize = 64;
/// Slots looked at per turn, from the dirty list or by a full scan (no syscall unless one
/// qualifies), so a long list never holds packets up.
const SCAN_PER_TURN: usize = 1024;
/// RTP packets a direction must see in user space after it came back from the kernel
/// before it is offered again: a source or SSRC that keeps changing stays with the worker.
const RETRY_AFTER_PACKETS: u64 = 50;
/// Packets that reach the worker this soon after a hand-over were queued before it: they
/// are counted and forwarded, and the stream stays in the kernel.
const QUEUED_BEFORE_HANDOVER_NS: u64 = 20 * crate::time::NANOS_PER_MS;

/// The program's map key: the relay socket a packet arrives on (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdKey {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// The program's map value; the layout is `struct fwd_value` in `forward.bpf.c`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdValue {
    pub src_addr: u32,
    pub src_port: u16,
    pub out_sport: u16,
    pub out_saddr: u32,
    pub out_daddr: u32,
    pub out_dport: u16,
    pub payload_type: u8,
    /// `MODE_LOCAL` or `MODE_ROUTED` (see `forward.bpf.c`).
    pub mode: u8,
    pub ifindex: u32,
    pub clock_hz: u32,
    pub pad2: u32,
    pub origin_ns: u64,
    pub flags: u32,
    pub ssrc: u32,
    pub window0: u64,
    pub window1: u64,
    pub cycles: u32,
    pub max_seq: u16,
    pub pad1: u16,
    pub packets: u64,
    pub bytes: u64,
    pub received: u64,
    pub last_packet_ns: u64,
    pub duplicates: u32,
    pub reordered: u32,
    pub jitter_q4: u32,
    pub max_jitter_q4: u32,
    pub last_transit: u32,
    pub have_transit: u32,
    pub owner: u32,
    pub slot: u32,
}

const _: () = assert!(std::mem::size_of::<FwdValue>() == 136);
const _: () = assert!(std::mem::size_of::<FwdKey>() == 8);

// SAFETY: both are repr(C) structs of plain integers with every padding byte spelled out as a
// field (the sizes are asserted above and in forward.bpf.c), so any bit pattern is valid and
// no byte is uninitialised.
unsafe impl aya::Pod for FwdKey {}
// SAFETY: as for FwdKey.
unsafe impl aya::Pod for FwdValue {}

impl FwdValue {
    /// Carries the kernel's tracker figures over `base`, the tracker as handed over.
    pub fn advance(&self, base: &TrackerParts) -> TrackerParts {
        TrackerParts {
            window: [self.window0, self.window1],
            cycles: self.cycles,
            max_seq: self.max_seq,
            packets: self.packets,
            bytes: self.bytes,
            received: self.received,
            duplicates: self.duplicates,
            reordered: self.reordered,
            last_packet_ns: self.last_packet_ns,
            jitter_q4: self.jitter_q4,
            max_jitter_q4: self.max_jitter_q4,
            last_transit: self.last_transit,
            have_transit: self.have_transit != 0,
            ..*base
        }
    }
}

/// The two addresses a direction's entry names, as the worker knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The relay socket packets arrive on, and the endpoint they come from.
    pub local: SocketAddr,
    pub source: SocketAddr,
    /// The relay socket they leave from, and the endpoint they go to.
    pub out_local: SocketAddr,
    pub destination: SocketAddr,
}

/// How the program sends a direction's packets on (`forward.bpf.c`).
pub const MODE_LOCAL: u8 = 0;
pub const MODE_ROUTED: u8 = 1;

/// An IPv4 socket address in network order, and whether it is on loopback.
fn v4(a: SocketAddr) -> Option<(u32, u16, bool)> {
    match a.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && a.port() != 0 => Some((
            u32::from_ne_bytes(ip.octets()),
            a.port().to_be(),
            ip.is_loopback(),
        )),
        _ => None,
    }
}

/// The four addresses of a direction in network order, and how the program can send it on;
/// `None` when it cannot carry it: IPv6, or loopback and other addresses mixed (a packet
/// from outside cannot be delivered to a loopback address, and one that came in on `lo` is
/// not routed out again).
fn addresses(route: &Route) -> Option<([(u32, u16); 4], u8)> {
    let mut out = [(0, 0); 4];
    let mut loopback = [false; 4];
    for (k, a) in [
        route.local,
        route.source,
        route.out_local,
        route.destination,
    ]
    .into_iter()
    .enumerate()
    {
        let (addr, port, lo) = v4(a)?;
        out[k] = (addr, port);
        loopback[k] = lo;
    }
    let mode = match loopback {
        [true, true, true, true] => MODE_LOCAL,
        [false, false, false, false] => MODE_ROUTED,
        _ => return None,
    };
    Some((out, mode))
}

/// How the program can send a direction on (`None` as for [`entry`]).
pub fn mode_of(route: &Route) -> Option<u8> {
    addresses(route).map(|(_, mode)| mode)
}

/// The entry for one direction, or `None` when the program cannot carry it (IPv6, or
/// loopback and other addresses mixed). `clock_hz`: the clock rate of the tracker's payload
/// type; `ifindex`: the device packets leave by (`lo` for a local direction, the
/// destination's route for a routed one).
pub fn entry(
    route: &Route,
    parts: &TrackerParts,
    clock_hz: u32,
    ifindex: u32,
    origin_ns: u64,
) -> Option<(FwdKey, FwdValue)> {
    let (
        [(addr, port), (src_addr, src_port), (out_saddr, out_sport), (out_daddr, out_dport)],
        mode,
    ) = addresses(route)?;
    let key = FwdKey { addr, port, pad: 0 };
    let value = FwdValue {
        src_addr,
        src_port,
        out_sport,
        out_saddr,
        out_daddr,
        out_dport,
        payload_type: parts.payload_type,
        mode,
        ifindex,
        clock_hz,
        origin_ns,
        ssrc: parts.ssrc,
        window0: parts.window[0],
        window1: parts.window[1],
        cycles: parts.cycles,
        max_seq: parts.max_seq,
        packets: parts.packets,
        bytes: parts.bytes,
        received: parts.received,
        last_packet_ns: parts.last_packet_ns,
        duplicates: parts.duplicates,
        reordered: parts.reordered,
        jitter_q4: parts.jitter_q4,
        max_jitter_q4: parts.max_jitter_q4,
        last_transit: parts.last_transit,
        have_transit: u32::from(parts.have_transit),
        ..FwdValue::default()
    };
    Some((key, value))
}

/// The loaded and attached program; dropping it detaches it.
pub struct KernelPath {
    #[cfg(rtpanchor_bpf)]
    _ebpf: aya::Ebpf,
    map_id: u32,
    ifindex: u32,
    origin_ns: u64,
    local: Ipv4Addr,
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
    /// Loads the program and attaches it to loopback's ingress. The error says why the
    /// fast path is unavailable; the relay then carries all media in user space.
    pub fn start(local: IpAddr) -> Result<KernelPath, String> {
        let local = match local {
            IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            other => {
                return Err(format!(
                "the relay address {other} is not one IPv4 address (the program handles IPv4 only)"
            ))
            }
        };
        if !kernel_at_least(6, 6) {
            return Err(
                "Linux 6.6 or later is needed (TCX links, detached when the relay exits)".into(),
            );
        }
        let device = if local.is_loopback() {
            "lo".to_string()
        } else {
            device_with(local).ok_or_else(|| format!("no network device has {local}"))?
        };
        Self::load(local, &device)
    }

    #[cfg(not(rtpanchor_bpf))]
    fn load(_local: Ipv4Addr, _device: &str) -> Result<KernelPath, String> {
        Err("built without the program (clang was not found at build time)".into())
    }

    #[cfg(rtpanchor_bpf)]
    fn load(local: Ipv4Addr, device: &str) -> Result<KernelPath, String> {
        use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
        static OBJECT: &[u8] = include_bytes!(env!("RTPANCHOR_BPF_OBJECT"));
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| format!("loading the program: {e}"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("anchor_forward")
            .ok_or("the object has no anchor_forward program")?
            .try_into()
            .map_err(|e| format!("anchor_forward: {e}"))?;
        prog.load()
            .map_err(|e| format!("the kernel refused the program: {e}"))?;
        prog.attach_with_options(
            device,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| format!("attaching to {device}: {e}"))?;
        let map = ebpf
            .map("anchor_fwd")
            .ok_or("the object has no anchor_fwd map")?;
        let map_id = match map {
            aya::maps::Map::HashMap(m) => m.info().map_err(|e| e.to_string())?.id(),
            _ => return Err("anchor_fwd is not a hash map".into()),
        };
        let ifindex = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("no ifindex for lo")?;
        Ok(KernelPath {
            _ebpf: ebpf,
            map_id,
            ifindex,
            origin_ns: monotonic_ns().saturating_sub(crate::time::now_ns()),
            local,
            next_owner: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A worker's own handle on the map (each holds its own descriptor).
    pub fn worker(&self) -> Result<KernelWorker, String> {
        let data = aya::maps::MapData::from_id(self.map_id).map_err(|e| e.to_string())?;
        let map = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))
            .map_err(|e| e.to_string())?;
        Ok(KernelWorker {
            map,
            ifindex: self.ifindex,
            origin_ns: self.origin_ns,
            local: self.local,
            routes: if self.local.is_loopback() {
                None
            } else {
                Some(route::RouteQuery::new().map_err(|e| format!("rtnetlink: {e}"))?)
            },
            slots: HashMap::new(),
            in_kernel: 0,
            scan_cursor: 0,
            dirty_seen: 0,
            dirty_round: 0,
            owner: self
                .next_owner
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sync_token: None,
            sync_in_pass: false,
            last_sync_ns: 0,
            batch_keys: vec![FwdKey::default(); BATCH],
            batch_values: vec![FwdValue::default(); BATCH],
        })
    }
}

/// The name of the network device that has `ip`.
fn device_with(ip: Ipv4Addr) -> Option<String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to a live pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names (AF_INET: a
        // sockaddr_in), owned by the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: as above, an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        if sin.sin_addr.s_addr.to_ne_bytes() == ip.octets() {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: frees the list getifaddrs returned, once; no reference into it outlives this.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let ma: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mi: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

/// What a worker keeps for a direction it handed to the kernel.
struct Handed {
    key: FwdKey,
    /// The tracker as handed over: the fields the kernel does not keep come from here.
    base: TrackerParts,
    at_ns: u64,
    /// The kernel's packet and byte counts when last folded into the published figures.
    seen_packets: u64,
    seen_bytes: u64,
    /// RTP packets that reached the worker after the hand-over but were queued before it.
    carried_packets: u64,
    carried_bytes: u64,
    /// Not offered again before the tracker has seen this many packets.
    retry_at_packets: u64,
}

impl Handed {
    /// The tracker now: the kernel's figures in `v` (if it has the entry) over the tracker
    /// as handed over, plus the packets the worker counted for it meanwhile (queued before
    /// the hand-over).
    fn current(&self, v: Option<&FwdValue>) -> TrackerParts {
        let mut parts = v.map_or(self.base, |v| v.advance(&self.base));
        parts.packets += self.carried_packets;
        parts.bytes += self.carried_bytes;
        parts.received += self.carried_packets;
        parts
    }

    /// A direction handed over under `key` as the tracker stood (`parts`), or, when
    /// `handed` is false, one that could not be: offered again later.
    fn new(key: FwdKey, parts: TrackerParts, now: u64, handed: bool) -> Handed {
        Handed {
            key,
            base: parts,
            at_ns: now,
            seen_packets: parts.packets,
            seen_bytes: parts.bytes,
            carried_packets: 0,
            carried_bytes: 0,
            retry_at_packets: if handed {
                0
            } else {
                parts.packets + RETRY_AFTER_PACKETS
            },
        }
    }
}

/// One worker's (one ring's) side of the fast path. Used only on the worker's thread.
pub struct KernelWorker {
    map: aya::maps::HashMap<aya::maps::MapData, FwdKey, FwdValue>,
    /// Loopback's ifindex.
    ifindex: u32,
    origin_ns: u64,
    local: Ipv4Addr,
    /// For a relay on a real address: which device each destination is reached by.
    routes: Option<route::RouteQuery>,
    slots: HashMap<u32, Handed>,
    /// Directions in the kernel now (the slots with `kernel` set).
    in_kernel: u64,
    /// Where a full scan (after the dirty list overflowed) has got; 0: none running.
    scan_cursor: usize,
    /// How much of the current dirty list (of round `dirty_round`) has been looked at.
    dirty_seen: usize,
    dirty_round: u64,
    /// This worker's mark in the entries it makes (the map is shared by all workers).
    owner: u32,
    /// Where the sync's pass over the map has got (the kernel's batch position).
    sync_token: Option<u32>,
    sync_in_pass: bool,
    last_sync_ns: u64,
    batch_keys: Vec<FwdKey>,
    batch_values: Vec<FwdValue>,
}

impl KernelWorker {
    /// Housekeeping: hands qualifying directions to the kernel, and folds the kernel's
    /// counts into the published figures.
    pub fn turn(
        &mut self,
        slots: &mut [Slot],
        dirty: &DirtyList,
        counters: &WorkerCounters,
        now: u64,
    ) {
        let mut ops = 0;
        if self.sync_in_pass || now.saturating_sub(self.last_sync_ns) >= SYNC_EVERY_NS {
            self.sync_in_pass = true;
            for _ in 0..BATCHES_PER_TURN {
                ops += 1;
                if self.sync_batch(slots, counters) {
                    self.sync_in_pass = false;
                    self.sync_token = None;
                    self.last_sync_ns = now;
                    break;
                }
            }
        }
        // Candidates are the slots that saw RTP in user space lately (the publisher's dirty
        // list, read before it is cleared): once every stream is in the kernel this costs
        // nothing. When that list overflowed, every slot is looked at, a slice a turn.
        if dirty.rounds != self.dirty_round {
            self.dirty_round = dirty.rounds;
            self.dirty_seen = 0;
        }
        if dirty.overflowed || self.scan_cursor > 0 {
            for _ in 0..SCAN_PER_TURN {
                if ops >= OPS_PER_TURN {
                    break;
                }
                if self.scan_cursor >= slots.len() {
                    self.scan_cursor = 0;
                    break;
                }
                let i = self.scan_cursor as u32;
                self.scan_cursor += 1;
                if self.try_hand_over(slots, i, now, counters) {
                    ops += 1;
                }
            }
        }
        for _ in 0..SCAN_PER_TURN {
            if ops >= OPS_PER_TURN {
                break;
            }
            let Some(&i) = dirty.list.get(self.dirty_seen) else {
                break;
            };
            self.dirty_seen += 1;
            // The opposite direction too: it may have qualified only now that this side's
            // source is confirmed, after its own last packet in user space.
            let peer = slots.get(i as usize).map_or(NO_SLOT, |s| s.peer_rtp);
            for j in [i, peer] {
                if self.try_hand_over(slots, j, now, counters) {
                    ops += 1;
                }
            }
        }
    }

    /// Hands slot `i`'s direction to the kernel if it qualifies; true when a map update was
    /// tried.
    fn try_hand_over(
        &mut self,
        slots: &mut [Slot],
        i: u32,
        now: u64,
        counters: &WorkerCounters,
    ) -> bool {
        let Some(slot) = slots.get(i as usize) else {
            return false;
        };
        if slot.kind != SlotKind::Rtp || !slot.is_live() || slot.kernel {
            return false;
        }
        let Some(st) = slot.rtp.as_deref() else {
            return false;
        };
        if let Some(h) = self.slots.get(&i) {
            if st.tracker.packets() < h.retry_at_packets {
                return false;
            }
        }
        let Some(parts) = st.tracker.export() else {
            return false;
        };
        // The kernel keeps one clock rate: the tracker's must be the payload type's.
        let clock_hz = match st.clock_rates.clock_rate_hz(parts.payload_type) {
            Some(hz) if hz == parts.clock_rate_hz => hz,
            Some(_) => return false,
            None => 0,
        };
        let Some(out) = slots.get(slot.peer_rtp as usize) else {
            return false;
        };
        if !out.is_live() {
            return false;
        }
        let (Some(source), Some(destination)) = (slot.latch.confirmed(), out.latch.confirmed())
        else {
            return false;
        };
        let ip = IpAddr::V4(self.local);
        let route = Route {
            local: SocketAddr::new(ip, slot.local_port),
            source,
            out_local: SocketAddr::new(ip, out.local_port),
            destination,
        };
        let ifindex = match (
            mode_of(&route),
            route.out_local.ip(),
            route.destination.ip(),
        ) {
            (Some(MODE_LOCAL), _, _) => self.ifindex,
            (Some(_), IpAddr::V4(from), IpAddr::V4(to)) => {
                match self.routes.as_mut().and_then(|r| r.egress(from, to)) {
                    Some(oif) => oif,
                    None => {
                        // No route now: asked again after as many packets as a take-back.
                        let unrouted = Handed::new(FwdKey::default(), parts, now, false);
                        self.slots.insert(i, unrouted);
                        return true;
                    }
                }
            }
            _ => return false,
        };
        let Some((key, mut value)) = entry(&route, &parts, clock_hz, ifindex, self.origin_ns)
        else {
            return false;
        };
        value.owner = self.owner;
        value.slot = i;
        // Map full or out of memory: tried again after as many packets as a take-back.
        let handed = self.map.insert(key, value, 0).is_ok();
        self.slots.insert(i, Handed::new(key, parts, now, handed));
        if !handed {
            return true;
        }
        if let Some(s) = slots.get_mut(i as usize) {
            s.kernel = true;
        }
        self.in_kernel += 1;
        bump(&counters.kernel_handovers, 1);
        counters
            .kernel_streams
            .store(self.in_kernel, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Reads the next batch of the map and folds this worker's entries into the published
    /// figures. True when the pass over the map is complete.
    fn sync_batch(&mut self, slots: &mut [Slot], counters: &WorkerCounters) -> bool {
        let fd = aya::maps::IterableMap::map(&self.map)
            .fd()
            .as_fd()
            .as_raw_fd();
        let (n, done) = match lookup_batch(
            fd,
            self.sync_token,
            &mut self.batch_keys,
            &mut self.batch_values,
        ) {
            Ok((n, token)) => {
                self.sync_token = token;
                (n, token.is_none())
            }
            Err(_) => (0, true),
        };
        for k in 0..n {
            let (Some(key), Some(v)) = (self.batch_keys.get(k), self.batch_values.get(k)) else {
                break;
            };
            if v.owner != self.owner {
                continue;
            }
            let (Some(h), Some(slot)) =
                (self.slots.get_mut(&v.slot), slots.get_mut(v.slot as usize))
            else {
                continue;
            };
            if slot.kernel && h.key == *key {
                fold(slot, h, Some(v), counters);
            }
        }
        done
    }

    /// A packet reached the worker on slot `idx`, whose direction is in the kernel. Takes
    /// the direction (and the opposite one) back when the packet concerns the tracker or
    /// the latch, so the worker handles it with the kernel's state; a packet queued before
    /// the hand-over is only counted.
    pub fn on_user_packet(
        &mut self,
        slots: &mut [Slot],
        idx: usize,
        src: SocketAddr,
        pkt: &[u8],
        now: u64,
        counters: &WorkerCounters,
    ) {
        let Some(slot) = slots.get(idx) else {
            return;
        };
        let is_rtp = crate::rtp::demux::classify(pkt) == crate::rtp::demux::PacketKind::Rtp
            && RtpPacket::new_checked(pkt).is_ok();
        let same_source = slot.latch.confirmed() == Some(src);
        if same_source && !is_rtp {
            // RTCP or not RTP at all: the worker handles it; the tracker is not involved.
            return;
        }
        let i = idx as u32;
        // The program marks what it passed up for the worker; an unmarked RTP packet from the
        // latched source was queued before the hand-over (the program never saw it).
        let flags = self
            .slots
            .get(&i)
            .and_then(|h| self.map.get(&h.key, 0).ok())
            .map_or(0, |v| v.flags);
        if let Some(h) = self.slots.get_mut(&i) {
            if same_source
                && flags & HANDED_BACK == 0
                && now.saturating_sub(h.at_ns) < QUEUED_BEFORE_HANDOVER_NS
            {
                h.carried_packets += 1;
                h.carried_bytes += pkt.len() as u64;
                return;
            }
        }
        let peer = slot.peer_rtp;
        self.take_back(slots, i, counters);
        self.take_back(slots, peer, counters);
        if flags & OUT_OF_SCOPE != 0 {
            if let Some(h) = self.slots.get_mut(&i) {
                h.retry_at_packets = h
                    .retry_at_packets
                    .saturating_add(RETRY_OUT_OF_SCOPE_PACKETS);
            }
        }
    }

    /// Takes slot `i`'s direction back from the kernel: the tracker continues from where the
    /// kernel left it.
    pub fn take_back(&mut self, slots: &mut [Slot], i: u32, counters: &WorkerCounters) {
        let (Some(h), Some(slot)) = (self.slots.get_mut(&i), slots.get_mut(i as usize)) else {
            return;
        };
        if !slot.kernel {
            return;
        }
        slot.kernel = false;
        self.in_kernel = self.in_kernel.saturating_sub(1);
        bump(&counters.kernel_takebacks, 1);
        counters
            .kernel_streams
            .store(self.in_kernel, std::sync::atomic::Ordering::Relaxed);
        // The entry should be there; without it, the tracker as handed over and the packets
        // the worker counted since.
        let got = self.map.get(&h.key, 0).ok();
        let _ = self.map.remove(&h.key);
        let parts = fold(slot, h, got.as_ref(), counters);
        h.carried_packets = 0;
        h.carried_bytes = 0;
        h.retry_at_packets = parts.packets + RETRY_AFTER_PACKETS;
        if let Some(st) = slot.rtp.as_deref_mut() {
            st.tracker = RtpStreamTracker::import(&parts);
        }
    }

    /// Takes back both RTP directions of stream `id` (its signalling changed).
    pub fn take_back_stream(
        &mut self,
        table: &mut SlotTable,
        id: StreamId,
        counters: &WorkerCounters,
    ) {
        for i in table.group(id).unwrap_or([NO_SLOT; 4]) {
            self.take_back(&mut table.slots, i, counters);
        }
    }

    /// Stream `id` is being removed: its entries go before its sockets close.
    pub fn forget_stream(
        &mut self,
        table: &mut SlotTable,
        id: StreamId,
        counters: &WorkerCounters,
    ) {
        self.take_back_stream(table, id, counters);
        for i in table.group(id).unwrap_or([NO_SLOT; 4]) {
            self.slots.remove(&i);
        }
    }
}

/// `union bpf_attr`'s batch member (include/uapi/linux/bpf.h), which libc lacks.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Reads up to `keys.len()` entries of hash map `fd` from position `from` (`None`: the
/// start) with one syscall (Linux 5.6+). Returns how many it read and where the next batch
/// starts, `None` once the map is exhausted.
fn lookup_batch(
    fd: std::os::fd::RawFd,
    from: Option<u32>,
    keys: &mut [FwdKey],
    values: &mut [FwdValue],
) -> std::io::Result<(usize, Option<u32>)> {
    let in_token = from.unwrap_or(0);
    let mut out_token: u32 = 0;
    let mut attr = BatchAttr {
        in_batch: if from.is_some() {
            &in_token as *const u32 as u64
        } else {
            0
        },
        out_batch: &mut out_token as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` is a fully initialised bpf_attr batch member of the size passed; the
    // kernel writes at most `count` keys and values into the two live, exclusively borrowed
    // slices (each at least `count` long, element sizes those of the map, checked at load),
    // the position into `out_token`, and the count back into `attr`; all outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    let n = (attr.count as usize).min(keys.len());
    if rc == 0 {
        return Ok((n, Some(out_token)));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        return Ok((n, None));
    }
    Err(e)
}

/// Folds the kernel's figures `v` for slot's direction (`None`: the entry is gone) into the
/// published ones: counts, quality, the latch's last packet. Returns the tracker now.
fn fold(
    slot: &mut Slot,
    h: &mut Handed,
    v: Option<&FwdValue>,
    counters: &WorkerCounters,
) -> TrackerParts {
    if let Some(v) = v {
        fold_counts(slot, h, v, counters);
        slot.latch.note_confirmed_packet(v.last_packet_ns);
    }
    let parts = h.current(v);
    if let Some(sh) = slot.side_shared() {
        sh.quality
            .publish(&RtpStreamTracker::import(&parts).snapshot());
    }
    parts
}

/// Adds what the kernel forwarded since the last fold to the socket's and worker's counts.
fn fold_counts(slot: &Slot, h: &mut Handed, v: &FwdValue, counters: &WorkerCounters) {
    let packets = v.packets.saturating_sub(h.seen_packets);
    let bytes = v.bytes.saturating_sub(h.seen_bytes);
    h.seen_packets = h.seen_packets.max(v.packets);
    h.seen_bytes = h.seen_bytes.max(v.bytes);
    if packets == 0 {
        return;
    }
    bump(&counters.rx_packets, packets);
    bump(&counters.rx_bytes, bytes);
    bump(&counters.tx_packets, packets);
    bump(&counters.tx_bytes, bytes);
    bump(&counters.kernel_forwarded, packets);
    if let Some(c) = slot.counters() {
        bump(&c.packets, packets);
        bump(&c.bytes, bytes);
        c.last_packet_ns
            .store(v.last_packet_ns, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            local: "127.0.0.1:30000".parse().unwrap(),
            source: "127.0.0.1:40000".parse().unwrap(),
            out_local: "127.0.0.1:30002".parse().unwrap(),
            destination: "127.0.0.1:40002".parse().unwrap(),
        }
    }

    #[test]
    fn entry_names_the_sockets_in_network_order_and_copies_the_tracker() {
        let mut t = RtpStreamTracker::new();
        t.on_rtp(7, 160, 0xdead_beef, 8, 172, 1_000_000, 8_000);
        t.on_rtp(8, 320, 0xdead_beef, 8, 172, 21_000_000, 8_000);
        let parts = t.export().unwrap();
        let (k, v) = entry(&route(), &parts, 8_000, 1, 5).unwrap();
        assert_eq!(k.addr.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(k.port.to_ne_bytes(), 30000u16.to_be_bytes());
        assert_eq!(v.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(v.out_sport.to_ne_bytes(), 30002u16.to_be_bytes());
        assert_eq!(v.out_dport.to_ne_bytes(), 40002u16.to_be_bytes());
        assert_eq!((v.ssrc, v.payload_type, v.max_seq), (0xdead_beef, 8, 8));
        assert_eq!((v.packets, v.received, v.clock_hz), (2, 2, 8_000));
        // Nothing advanced: the tracker comes back unchanged.
        assert_eq!(v.advance(&parts), parts);
    }

    #[test]
    fn loopback_routes_stay_local_real_ones_are_routed_and_mixes_get_no_entry() {
        let parts = {
            let mut t = RtpStreamTracker::new();
            t.on_rtp(1, 0, 1, 0, 12, 1, 8_000);
            t.export().unwrap()
        };
        let (_, v) = entry(&route(), &parts, 8_000, 1, 0).unwrap();
        assert_eq!((v.mode, v.ifindex), (MODE_LOCAL, 1));
        let routed = Route {
            local: "192.0.2.1:30000".parse().unwrap(),
            source: "198.51.100.9:4000".parse().unwrap(),
            out_local: "192.0.2.1:30002".parse().unwrap(),
            destination: "203.0.113.5:5000".parse().unwrap(),
        };
        let (k, v) = entry(&routed, &parts, 8_000, 1, 0).unwrap();
        assert_eq!(v.mode, MODE_ROUTED);
        assert_eq!(k.addr.to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(v.out_daddr.to_ne_bytes(), [203, 0, 113, 5]);
        // A loopback endpoint of a relay on a real address, and the other way round.
        let mut r = route();
        r.destination = "192.0.2.7:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        let mut r = routed;
        r.source = "127.0.0.1:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        // IPv6, the unspecified address, port 0.
        let mut r = route();
        r.source = "[::1]:4000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        let mut r = routed;
        r.destination = "0.0.0.0:5000".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
        let mut r = routed;
        r.destination = "203.0.113.5:0".parse().unwrap();
        assert!(entry(&r, &parts, 8_000, 1, 0).is_none());
    }

    #[test]
    fn the_kernels_figures_carry_the_tracker_on() {
        let mut t = RtpStreamTracker::new();
        t.on_rtp(100, 0, 9, 0, 172, 1_000_000, 8_000);
        let base = t.export().unwrap();
        // What the program would hold after seq 101 and 103 (102 lost).
        let v = FwdValue {
            window0: 0b1011,
            max_seq: 103,
            packets: 3,
            bytes: 3 * 172,
            received: 3,
            last_packet_ns: 61_000_000,
            ..FwdValue::default()
        };
        let s = RtpStreamTracker::import(&v.advance(&base)).snapshot();
        assert_eq!((s.packets, s.expected, s.lost), (3, 4, 1));
        assert_eq!(s.extended_highest_seq, 103);
        assert_eq!(s.ssrc, 9, "kept from the tracker as handed over");
    }
}
