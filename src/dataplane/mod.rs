//! The data plane: pinned worker threads that relay RTP/RTCP. The only module with `unsafe`
//! (io_uring and the mmsg fallback need raw syscalls); every block says why it holds.
//!
//! The control plane talks to workers only through lock-free queues ([`worker::WorkerShared`])
//! and reads their counters from single-writer atomics ([`shared`]); it never waits for a
//! worker, and a worker never waits for it.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cmsg;
pub mod core;
mod engine;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fdpass;
pub mod forward;
pub mod gso;
pub mod ifaddrs;
pub mod kernel;
pub mod mmsg;
pub mod panic_hook;
pub mod placement;
pub mod priority;
pub mod shared;
pub mod slot;
pub mod sockaddr;
pub mod sockets;
pub mod spares;
pub mod stamped;
pub mod table;
pub mod uring;
pub mod worker;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::addr::PackedAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::session::backend::{
    BackendError, EndpointSpec, LatchEventKind, MediaBackend, MediaEvent, OpenedStream,
    RestoredStream, Side, SocketCounters, StreamId, StreamSpec, StreamStats,
};
use crate::session::ports::{AddressId, AddressPorts, AddressUsage, PortPair};
use crate::time::Nanos;

use forward::PathConfig;
use priority::{control_slice_supported, lower_priority};
pub use priority::{prioritize_control_thread, set_thread_nice};
use shared::{DataPlaneTotals, StreamShared};
use sockets::SocketOptions;
use worker::{Command, NewStream, SideInit, WorkerShared};

pub use engine::{choose_engine, EngineChoice};
use engine::{fd_soft_limit, raise_fd_limit, rings_per_thread, MIN_SPARE_DESCRIPTORS};

struct StreamEntry {
    /// The worker's index (at most 256 workers; two bytes, not eight: one entry per stream).
    worker: u16,
    shared: Arc<StreamShared>,
    a_ports: PortPair,
    b_ports: PortPair,
    /// The address pools the two pairs came from (side A, side B).
    pools: [AddressId; 2],
    /// What the latches reported, once they have (boxed apart: see [`Learned`]).
    learned: Option<Box<Learned>>,
    /// Whether side A's and side B's separate RTCP sockets are bound (closed while that
    /// side's endpoint muxes RTCP on its RTP port; the port stays reserved).
    rtcp_open: [bool; 2],
    /// Only for restored streams and with a takeover configured (see [`Rare`]).
    rare: Option<Box<Rare>>,
    /// The call the stream belongs to (the spec's), for the control side's event logs: the
    /// session manager keeps no stream-to-call table of its own (memory per held call).
    call_id: Arc<str>,
}

/// What few streams have, in one box: an entry is then 56 bytes with its call's id, not 64
/// (memory per held call, issue 19).
#[derive(Default)]
struct Rare {
    /// Counters a restored stream had before (A RTP, A RTCP, B RTP, B RTCP), added to what
    /// its sockets count now.
    base: Option<Box<[SocketCounters; 4]>>,
    /// Copies of the stream's sockets (same order as the ports; none for a closed RTCP
    /// socket), kept when a takeover may ask for them: the io_uring engine keeps its own in
    /// the ring's fixed-file table, which has no descriptor to hand over.
    handover: Option<[Option<std::os::fd::OwnedFd>; 4]>,
}

impl StreamEntry {
    fn base(&self) -> Option<&[SocketCounters; 4]> {
        self.rare.as_ref().and_then(|r| r.base.as_deref())
    }

    /// Sockets the stream holds now (two per side, one per side that muxes).
    fn sockets(&self) -> usize {
        2 + self.rtcp_open.iter().filter(|o| **o).count()
    }

    /// The RTP source side `i`'s latch learnt, and whether it confirmed it.
    fn learned(&self, i: usize) -> (Option<SocketAddr>, bool) {
        self.learned.as_deref().map_or((None, false), |l| {
            (
                l.addr.get(i).and_then(|a| a.get()),
                l.confirmed.get(i).copied().unwrap_or(false),
            )
        })
    }
}

/// The RTP source each side's latch learnt (packed) and whether it is confirmed, as the
/// workers' events told: 40 bytes a stream, allocated with the first such event (command
/// path), so the stream table's entries of held calls that carry no media are 48 bytes,
/// not 80 (memory per held call, issue 19; the table's spare buckets cost whole entries).
#[derive(Default)]
struct Learned {
    addr: [PackedAddr; 2],
    confirmed: [bool; 2],
}

/// Adds a restored stream's earlier counters (packets, bytes, errors; times are this
/// process's own).
fn add_base(c: &mut SocketCounters, base: &SocketCounters) {
    c.packets = c.packets.saturating_add(base.packets);
    c.bytes = c.bytes.saturating_add(base.bytes);
    c.errors = c.errors.saturating_add(base.errors);
}

/// Every media address, in configuration order. A configuration whose `interface` is none of
/// its `interfaces` (one made by hand with only `interface` set) has that address alone.
fn interface_ips(config: &Config) -> Vec<IpAddr> {
    let all: Vec<IpAddr> = config.interfaces.iter().map(|i| i.local).collect();
    if all.contains(&config.interface.local) {
        all
    } else {
        vec![config.interface.local]
    }
}

pub struct DataPlane {
    /// One per io_uring ring (a thread may drive several), or per mmsg worker thread.
    workers: Vec<Arc<WorkerShared>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Each interface address with the whole port range.
    ports: AddressPorts,
    local_ip: IpAddr,
    /// Every interface address, in configuration order (a stream's sides name theirs by
    /// position for the fast path).
    interface_ips: Vec<IpAddr>,
    sockopts: SocketOptions,
    streams: crate::session::backend::StreamIdMap<StreamEntry>,
    next_id: StreamId,
    placement: placement::Placement,
    engine: EngineChoice,
    /// Held for the workers' lifetime: dropping it detaches the program (after `shutdown`,
    /// field order: the threads are joined in `Drop` first).
    kernel_path: Option<kernel::KernelPath>,
    /// Why the fast path was asked for and does not run.
    kernel_unavailable: Option<String>,
    /// Without the fast path: the reason its packets are counted under.
    kernel_off: kernel::reasons::UserReason,
    /// Whether every stream keeps copies of its sockets for a takeover.
    keep_handover: bool,
    /// Sockets taken over from the previous process, by local address, for
    /// [`MediaBackend::restore`] to use instead of binding.
    adopted: HashMap<std::net::SocketAddr, std::os::fd::OwnedFd>,
}

fn side_init(e: &EndpointSpec) -> SideInit {
    SideInit {
        rtp: e.rtp(),
        rtcp: e.rtcp_dest(),
        rtcp_mux: e.rtcp_mux,
        latch: e.latch,
        clock_rates: e.clock_rates.for_tracker(),
    }
}

/// Both sides' [`SideInit`]s; when the two ends map the same payload types, their trackers
/// share one clock-rate slice.
fn side_inits(a: &EndpointSpec, b: &EndpointSpec) -> (SideInit, SideInit) {
    let a_init = side_init(a);
    let mut b_init = side_init(b);
    if a.clock_rates == b.clock_rates {
        b_init.clock_rates = a_init.clock_rates.clone();
    }
    (a_init, b_init)
}

impl DataPlane {
    /// Starts `config.num_threads` workers, each pinned to a core.
    pub fn start(config: &Config) -> anyhow::Result<DataPlane> {
        raise_fd_limit();
        let engine = choose_engine(config.io_engine);
        match &engine {
            EngineChoice::Uring => tracing::info!(engine = engine.name(), "data plane engine"),
            EngineChoice::Mmsg { reason } => {
                tracing::warn!(engine = engine.name(), %reason, "data plane engine")
            }
        }
        let control_slice_ok = control_slice_supported();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let gso = config.gso && sockets::gso_supported();
        if config.gso && !gso {
            tracing::warn!("kernel lacks UDP GSO (Linux < 4.18): every datagram is sent by itself");
        }
        let path = PathConfig {
            strict: config.strict_rtp,
            gso,
            connect: config.connect_latched,
            batch_wait_us: config.uring_batch_wait_us,
        };
        // The kernel caps each ring's fixed-file table at the descriptor limit (and 2^20).
        let fixed_files = config
            .uring_fixed_files
            .unwrap_or_else(fd_soft_limit)
            .min(1 << 20);
        let ports = AddressPorts::new(&interface_ips(config), config.port_min, config.port_max)?;
        // Each worker's slot table is reserved for its share of the port range (one slot per
        // port) instead of growing by doubling: every doubling copied the table and left the
        // old copy resident in the allocator (~11 MB at 10,000 calls).
        let threads = config.num_threads.max(1);
        let sockets_per_thread = (2 * ports.total_pairs()).div_ceil(threads);
        let limit = fd_soft_limit() as usize;
        let spare = config
            .spare_descriptors
            .unwrap_or((limit / 4).max(MIN_SPARE_DESCRIPTORS));
        let descriptor_budget = limit.saturating_sub(spare);
        let rings = match engine {
            EngineChoice::Uring => rings_per_thread(
                config.uring_rings,
                fixed_files,
                sockets_per_thread.saturating_sub(descriptor_budget / threads),
            ),
            EngineChoice::Mmsg { .. } => 1,
        };
        if rings > 1 {
            tracing::info!(
                rings,
                fixed_files,
                sockets_per_thread,
                "each worker drives several rings: its share of the port range exceeds one fixed-file table"
            );
        }
        // A worker's first ring may hold far more than its share (see `placement`); the
        // reserve is address space only until used.
        let slot_reserve = sockets_per_thread;
        let mut kernel_unavailable = None;
        let kernel_path = if config.kernel_forwarding {
            match kernel::KernelPath::start(
                &interface_ips(config),
                config.kernel_mode,
                (config.port_min, config.port_max),
            ) {
                Ok(k) => {
                    tracing::info!(
                        xdp_devices = k.xdp_devices(),
                        "kernel forwarding on: latched RTP is relayed by a TC program, and by XDP where the device line above says xdp"
                    );
                    Some(k)
                }
                Err(reason) => {
                    tracing::warn!(%reason, "kernel forwarding unavailable; all media is relayed in user space");
                    kernel_unavailable = Some(reason);
                    None
                }
            }
        } else {
            None
        };
        let placement = placement::Placement::new(
            config.num_threads,
            rings,
            fixed_files as usize,
            descriptor_budget,
        );
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for n in 0..config.num_threads {
            let shared = (0..rings)
                .map(|_| WorkerShared::new())
                .collect::<std::io::Result<Vec<_>>>()?;
            let mut kernels = Vec::new();
            for _ in 0..rings {
                kernels.push(match &kernel_path {
                    Some(k) => Some(
                        k.worker()
                            .map_err(|e| anyhow::anyhow!("kernel forwarding: {e}"))?,
                    ),
                    None => None,
                });
            }
            let core = if cores.is_empty() {
                None
            } else {
                Some(cores[n % cores.len()])
            };
            let stop2 = stop.clone();
            let sh2 = shared.clone();
            let engine2 = engine.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
            let t = std::thread::Builder::new()
                .name(format!("{}{n}", panic_hook::WORKER_THREAD_PREFIX))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    lower_priority(control_slice_ok);
                    // Rings are built on the thread that submits (SINGLE_ISSUER).
                    match engine2 {
                        EngineChoice::Uring => start_worker(
                            sh2.into_iter()
                                .zip(kernels)
                                .map(|(sh, k)| {
                                    uring::UringWorker::new(sh, path, fixed_files, slot_reserve)
                                        .map(|w| w.with_kernel(k))
                                })
                                .collect::<std::io::Result<Vec<_>>>()
                                .and_then(uring::UringThread::new),
                            &ready_tx,
                            |w| w.run(stop2),
                        ),
                        EngineChoice::Mmsg { .. } => start_worker(
                            sh2.into_iter()
                                .zip(kernels)
                                .next()
                                .ok_or_else(|| std::io::Error::other("no worker state"))
                                .and_then(|(sh, k)| {
                                    mmsg::MmsgWorker::new(sh, path, slot_reserve)
                                        .map(|w| w.with_kernel(k))
                                }),
                            &ready_tx,
                            |w| w.run(stop2),
                        ),
                    }
                })?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("data plane worker {n} failed to start: {e}"),
                Err(_) => anyhow::bail!("data plane worker {n} died at start"),
            }
            workers.extend(shared);
            threads.push(t);
        }
        Ok(DataPlane {
            workers,
            threads,
            stop,
            ports,
            local_ip: config.interface.local,
            interface_ips: interface_ips(config),
            sockopts: SocketOptions {
                rcvbuf: config.socket_rcvbuf,
                sndbuf: config.socket_sndbuf,
            },
            streams: Default::default(),
            next_id: StreamId::FIRST,
            placement,
            engine,
            kernel_off: if config.kernel_forwarding {
                kernel::reasons::UserReason::Unavailable
            } else {
                kernel::reasons::UserReason::Disabled
            },
            kernel_path,
            kernel_unavailable,
            keep_handover: false,
            adopted: HashMap::new(),
        })
    }

    /// Keeps a copy of every later stream's sockets, for [`DataPlane::handover_sockets`]
    /// (one more descriptor per socket).
    pub fn keep_sockets_for_handover(&mut self, on: bool) {
        self.keep_handover = on;
    }

    /// Copies of every stream's sockets with their local ports, for a new process taking
    /// over. Streams opened before [`DataPlane::keep_sockets_for_handover`] have none.
    pub fn handover_sockets(&self) -> std::io::Result<Vec<(u16, std::os::fd::OwnedFd)>> {
        let mut out = Vec::with_capacity(self.streams.len() * 4);
        for e in self.streams.values() {
            let Some(fds) = e.rare.as_ref().and_then(|r| r.handover.as_ref()) else {
                continue;
            };
            let ports = [
                e.a_ports.rtp,
                e.a_ports.rtcp(),
                e.b_ports.rtp,
                e.b_ports.rtcp(),
            ];
            for (port, fd) in ports.into_iter().zip(fds.iter()) {
                if let Some(fd) = fd {
                    out.push((port, fd.try_clone()?));
                }
            }
        }
        Ok(out)
    }

    /// Sockets handed over by the previous process: [`MediaBackend::restore`] uses them
    /// instead of binding, so datagrams already queued on them are relayed. They are kept by
    /// the address each is bound to (asked of the socket: a port number alone may be in use
    /// on several interface addresses); one that cannot say is closed.
    pub fn adopt_sockets(&mut self, sockets: Vec<(u16, std::os::fd::OwnedFd)>) {
        for (port, fd) in sockets {
            match socket2::SockRef::from(&fd)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
            {
                Some(addr) if addr.port() == port => {
                    self.adopted.insert(addr, fd);
                }
                _ => tracing::warn!(port, "handed-over media socket has no local address"),
            }
        }
    }

    /// Closes the handed-over sockets no restored call took; returns how many.
    pub fn drop_unadopted(&mut self) -> usize {
        let n = self.adopted.len();
        self.adopted.clear();
        n
    }

    /// A takeover: every worker stops receiving (what its receives in flight brought is
    /// relayed first); datagrams arriving later stay queued on the sockets. Waits at most
    /// `limit`; false if some worker did not confirm.
    pub fn pause(&self, limit: std::time::Duration) -> bool {
        for w in &self.workers {
            if w.send(Command::Pause).is_err() {
                return false;
            }
        }
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let deadline = crate::time::now_ns().saturating_add(limit_ns);
        loop {
            if self
                .workers
                .iter()
                .all(|w| w.paused.load(Ordering::Acquire))
            {
                return true;
            }
            if crate::time::now_ns() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub fn engine(&self) -> &EngineChoice {
        &self.engine
    }

    /// Whether the in-kernel fast path runs.
    pub fn kernel_forwarding(&self) -> bool {
        self.kernel_path.is_some()
    }

    /// Why the fast path was asked for and does not run (as logged at start).
    pub fn kernel_unavailable(&self) -> Option<&str> {
        self.kernel_unavailable.as_deref()
    }

    pub fn totals(&self) -> DataPlaneTotals {
        let mut t = DataPlaneTotals::default();
        for w in &self.workers {
            t.add(&w.counters);
        }
        t.reasons.kernel_off_because(self.kernel_off);
        t.kernel_reattached = self.kernel_path.as_ref().map_or(0, |k| k.reattached());
        if let Some(k) = &self.kernel_path {
            let (tc, xdp) = k.relayed_by_path();
            t.kernel_tc_forwarded = tc;
            t.kernel_xdp_forwarded = xdp;
            t.kernel_xdp_devices = k.xdp_devices();
            (t.kernel_program_ns, t.kernel_program_runs) = k.program_time();
        }
        t
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Packets received per worker ring (kernel-relayed ones included), in worker order.
    pub fn worker_packets(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.counters.rx_packets.load(Ordering::Relaxed))
            .collect()
    }

    /// Each worker ring's loop count: a worker that answers a wake-up advances it.
    pub fn worker_loops(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.counters.loops.load(Ordering::Relaxed))
            .collect()
    }

    /// Wakes every worker ring (a no-op command), for a liveness check.
    pub fn wake_workers(&self) {
        for w in &self.workers {
            let _ = w.send(Command::Remove(StreamId::NONE));
        }
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            // Wake the worker so it sees the stop flag now rather than at its next timeout.
            let _ = w.send(Command::Remove(StreamId::NONE));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Hands a stream with bound sockets to a worker (ports released on failure).
    fn launch(
        &mut self,
        spec: StreamSpec,
        pools: [AddressId; 2],
        [a_ports, b_ports]: [PortPair; 2],
        [a_rtp, a_rtcp, b_rtp, b_rtcp]: [std::os::fd::OwnedFd; 4],
        restored: Option<&RestoredStream>,
    ) -> Result<OpenedStream, BackendError> {
        if self.workers.is_empty() {
            self.ports.release(pools[0], a_ports);
            self.ports.release(pools[1], b_ports);
            return Err(BackendError::Unavailable("no data plane workers".into()));
        }
        let id = self.next_id;
        self.next_id = self.next_id.next();
        // A stream stays on its ring for life.
        let fixed: u64 = self
            .workers
            .iter()
            .map(|w| w.counters.fixed_files.load(Ordering::Relaxed))
            .sum();
        let unfixed = (self.placement.table_sockets() as u64).saturating_sub(fixed);
        let worker = self
            .placement
            .place(unfixed as usize)
            .min(self.workers.len() - 1);
        let locals = spec.locals.map(|l| {
            let ip = l.unwrap_or(self.local_ip);
            self.interface_ips
                .iter()
                .position(|i| *i == ip)
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| *n != shared::NO_LOCAL)
                .unwrap_or(shared::NO_LOCAL)
        });
        let shared = Arc::new(StreamShared {
            locals,
            ..StreamShared::default()
        });
        let handover = if self.keep_handover {
            match [&a_rtp, &a_rtcp, &b_rtp, &b_rtcp].map(|fd| fd.try_clone()) {
                [Ok(a), Ok(b), Ok(c), Ok(d)] => Some([Some(a), Some(b), Some(c), Some(d)]),
                _ => {
                    tracing::warn!("no descriptor left to keep a stream's sockets for a takeover");
                    None
                }
            }
        } else {
            None
        };
        let (a_init, b_init) = side_inits(&spec.a, &spec.b);
        let ns = NewStream {
            id,
            sockets: [a_rtp, a_rtcp, b_rtp, b_rtcp],
            ports: [a_ports.rtp, a_ports.rtcp(), b_ports.rtp, b_ports.rtcp()],
            a: a_init,
            b: b_init,
            shared: shared.clone(),
        };
        if let Err(Command::Add(ns)) = self.workers[worker].send(Command::Add(Box::new(ns))) {
            drop(ns);
            self.placement.remove(worker, placement::SOCKETS_PER_STREAM);
            self.ports.release(pools[0], a_ports);
            self.ports.release(pools[1], b_ports);
            return Err(BackendError::Unavailable("data plane queue full".into()));
        }
        self.streams.insert(
            id,
            StreamEntry {
                worker: u16::try_from(worker).unwrap_or(u16::MAX),
                shared,
                a_ports,
                b_ports,
                pools,
                learned: restored.map(|r| {
                    Box::new(Learned {
                        addr: r.learned.map(PackedAddr::from_option),
                        confirmed: r.confirmed,
                    })
                }),
                rtcp_open: [true; 2],
                rare: (restored.is_some() || handover.is_some()).then(|| {
                    Box::new(Rare {
                        base: restored.map(|r| Box::new(r.base)),
                        handover,
                    })
                }),
                call_id: spec.call_id.clone(),
            },
        );
        Ok(OpenedStream::new(id, a_ports, b_ports))
    }

    fn send(&self, worker: usize, cmd: Command) {
        if let Some(w) = self.workers.get(worker) {
            if w.send(cmd).is_err() {
                tracing::error!(worker, "data plane command queue full; command dropped");
            }
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl MediaBackend for DataPlane {
    fn open(&mut self, spec: StreamSpec, _now: Nanos) -> Result<OpenedStream, BackendError> {
        // Each side on its own interface's address: the two may be on two networks.
        let [a_ip, b_ip] = spec.locals.map(|l| l.unwrap_or(self.local_ip));
        let (a_pool, a_ports, a_rtp, a_rtcp) =
            sockets::bind_pair(&mut self.ports, a_ip, self.sockopts)?;
        let (b_pool, b_ports, b_rtp, b_rtcp) =
            match sockets::bind_pair(&mut self.ports, b_ip, self.sockopts) {
                Ok(x) => x,
                Err(e) => {
                    self.ports.release(a_pool, a_ports);
                    return Err(e.into());
                }
            };
        self.launch(
            spec,
            [a_pool, b_pool],
            [a_ports, b_ports],
            [a_rtp, a_rtcp, b_rtp, b_rtcp],
            None,
        )
    }

    fn restore(
        &mut self,
        spec: StreamSpec,
        r: &RestoredStream,
        _now: Nanos,
    ) -> Result<OpenedStream, BackendError> {
        let [a_ip, b_ip] = spec.locals.map(|l| l.unwrap_or(self.local_ip));
        let [a_pool, b_pool] = self
            .ports
            .claim_both([a_ip, b_ip], [r.a_ports, r.b_ports])?;
        let mut fds = Vec::with_capacity(4);
        for (ip, port) in [
            (a_ip, r.a_ports.rtp),
            (a_ip, r.a_ports.rtcp()),
            (b_ip, r.b_ports.rtp),
            (b_ip, r.b_ports.rtcp()),
        ] {
            let local = std::net::SocketAddr::new(ip, port);
            let bound = match self.adopted.remove(&local) {
                Some(fd) => Ok(fd),
                None => sockets::bind_udp(local, self.sockopts),
            };
            match bound {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    self.ports.release(a_pool, r.a_ports);
                    self.ports.release(b_pool, r.b_ports);
                    return Err(BackendError::Unavailable(format!(
                        "cannot bind {ip}:{port}: {e}"
                    )));
                }
            }
        }
        let Ok(fds) = <[std::os::fd::OwnedFd; 4]>::try_from(fds) else {
            return Err(BackendError::Unavailable("socket count".into()));
        };
        self.launch(spec, [a_pool, b_pool], [r.a_ports, r.b_ports], fds, Some(r))
    }

    fn update(&mut self, id: StreamId, side: Side, endpoint: EndpointSpec, _now: Nanos) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        let i = match side {
            Side::A => 0,
            Side::B => 1,
        };
        let worker = usize::from(e.worker);
        let init = side_init(&endpoint);
        if init.rtp != e.learned(i).0 {
            if let Some(c) = e
                .learned
                .as_deref_mut()
                .and_then(|l| l.confirmed.get_mut(i))
            {
                *c = false;
            }
        }
        self.send(
            worker,
            Command::Update {
                id,
                side,
                init: Box::new(init),
            },
        );
    }

    fn close(&mut self, id: StreamId) {
        if let Some(e) = self.streams.remove(&id) {
            e.shared.closed.store(true, Ordering::Relaxed);
            self.placement.remove(usize::from(e.worker), e.sockets());
            if let Some(w) = self.workers.get(usize::from(e.worker)) {
                // The `closed` flag stops the worker relaying at once, but not the kernel: with
                // the fast path the worker is woken to take the stream's entries out now,
                // rather than at its next turn (up to its idle timeout later).
                // So is a worker whose sockets' ports are about to be needed: a port is free
                // for the next offer only once the worker has closed its socket (a bind before
                // that fails, and with few pairs left the offer is refused).
                let short = e
                    .pools
                    .iter()
                    .any(|p| self.ports.free_pairs_of(*p) < LOW_FREE_PAIRS);
                let queued = if self.kernel_path.is_some() || short {
                    w.send(Command::Remove(id))
                } else {
                    w.send_lazy(Command::Remove(id))
                };
                if queued.is_err() {
                    tracing::error!(
                        worker = e.worker,
                        "data plane command queue full; close dropped"
                    );
                }
            }
            self.ports.release(e.pools[0], e.a_ports);
            self.ports.release(e.pools[1], e.b_ports);
        }
    }

    fn settle_rtcp(&mut self, id: StreamId, side: Side, endpoint: &EndpointSpec, muxed: bool) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        let i = match side {
            Side::A => 0,
            Side::B => 1,
        };
        if e.rtcp_open[i] != muxed {
            return;
        }
        let worker = usize::from(e.worker);
        let open = if muxed {
            None
        } else {
            let pair = if i == 0 { e.a_ports } else { e.b_ports };
            let Some(ip) = self.ports.addr(e.pools[i]) else {
                return;
            };
            let local = std::net::SocketAddr::new(ip, pair.rtcp());
            let socket = match sockets::bind_udp(local, self.sockopts) {
                Ok(s) => s,
                Err(error) => {
                    // Its RTCP is not relayed (counted as no destination) until a later
                    // signal binds it; the call's RTP goes on.
                    tracing::warn!(%local, %error, "cannot bind a stream's RTCP port again");
                    return;
                }
            };
            Some(Box::new(worker::RtcpOpen {
                socket,
                port: pair.rtcp(),
                init: side_init(endpoint),
            }))
        };
        if let Some(fds) = e.rare.as_mut().and_then(|r| r.handover.as_mut()) {
            fds[2 * i + 1] = open.as_ref().and_then(|o| o.socket.try_clone().ok());
        }
        e.rtcp_open[i] = !muxed;
        if muxed {
            self.placement.remove(worker, 1);
        } else {
            self.placement.add(worker);
        }
        self.send(worker, Command::Rtcp { id, side, open });
    }

    fn stats(&self, id: StreamId) -> Option<StreamStats> {
        Some(stats_of(self.streams.get(&id)?))
    }

    fn warm<I>(&self, ids: I)
    where
        I: Iterator<Item = StreamId>,
    {
        // Two levels, each a pass of independent loads (see the sweep): the entries, then
        // their shared counters.
        let mut shared = [None; crate::session::manager::WARM_AT_ONCE];
        for (s, id) in shared.iter_mut().zip(ids) {
            *s = self.streams.get(&id).map(|e| &*e.shared);
        }
        for sh in shared.iter().flatten() {
            let [a, b] = &sh.sides;
            std::hint::black_box((
                a.rtp.packets.load(Ordering::Relaxed),
                b.rtp.packets.load(Ordering::Relaxed),
            ));
        }
    }

    fn sweep_read<F>(
        &self,
        id: StreamId,
        whole: F,
    ) -> Option<(
        [crate::session::backend::SocketCounters; 4],
        Option<StreamStats>,
    )>
    where
        F: FnOnce(&[crate::session::backend::SocketCounters; 4]) -> bool,
    {
        let e = self.streams.get(&id)?;
        let c = socket_counters_of(e);
        // Without the learned endpoints: their record is a box of its own, a cache miss per
        // sampled stream at 25,000 calls, and the sample does not read them.
        let st = whole(&c).then(|| counted_stats_of(e));
        Some((c, st))
    }

    fn briefs(&self, id: StreamId) -> Option<[crate::session::backend::SideBrief; 2]> {
        Some(self.streams.get(&id)?.shared.briefs())
    }

    fn socket_counters(
        &self,
        id: StreamId,
    ) -> Option<[crate::session::backend::SocketCounters; 4]> {
        Some(socket_counters_of(self.streams.get(&id)?))
    }

    fn poll_event(&mut self) -> Option<MediaEvent> {
        for w in &self.workers {
            if let Some(ev) = w.events.pop() {
                if let Some(e) = self.streams.get_mut(&ev.stream) {
                    if !ev.rtcp {
                        let i = match ev.side {
                            Side::A => 0,
                            Side::B => 1,
                        };
                        let l = e.learned.get_or_insert_with(Box::default);
                        l.addr[i] = PackedAddr::new(ev.addr);
                        l.confirmed[i] = matches!(
                            ev.kind,
                            LatchEventKind::Confirmed | LatchEventKind::Relearned
                        );
                    }
                }
                return Some(ev);
            }
        }
        None
    }

    fn call_of(&self, id: StreamId) -> Option<Arc<str>> {
        self.streams.get(&id).map(|e| e.call_id.clone())
    }

    fn port_usage(&self) -> (usize, usize) {
        (self.ports.used_pairs(), self.ports.total_pairs())
    }

    fn address_usage(&self) -> Vec<AddressUsage> {
        self.ports.usage()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.totals().named()
    }
}

/// A stream's full figures (`MediaBackend::stats`).
fn stats_of(e: &StreamEntry) -> StreamStats {
    let mut s = counted_stats_of(e);
    (s.a.learned_rtp, s.a.confirmed) = e.learned(0);
    (s.b.learned_rtp, s.b.confirmed) = e.learned(1);
    s
}

/// A stream's figures without the learned endpoints (`MediaBackend::sweep_read`).
fn counted_stats_of(e: &StreamEntry) -> StreamStats {
    let mut s = e.shared.stats();
    if let Some(b) = e.base() {
        add_base(&mut s.a.rtp, &b[0]);
        add_base(&mut s.a.rtcp, &b[1]);
        add_base(&mut s.b.rtp, &b[2]);
        add_base(&mut s.b.rtcp, &b[3]);
    }
    s
}

/// A stream's four socket counters (`MediaBackend::socket_counters`).
fn socket_counters_of(e: &StreamEntry) -> [crate::session::backend::SocketCounters; 4] {
    let [a, b] = &e.shared.sides;
    let mut c = [a.rtp.read(), a.rtcp.read(), b.rtp.read(), b.rtcp.read()];
    if let Some(base) = e.base() {
        for (c, b) in c.iter_mut().zip(base.iter()) {
            add_base(c, b);
        }
    }
    c
}

/// Below this many free port pairs a closed stream's worker is woken to close its sockets at
/// once (otherwise at its next turn, up to its idle timeout later).
const LOW_FREE_PAIRS: usize = 64;

/// Tells the starting thread whether the worker could be built, then runs it on this thread.
fn start_worker<W>(
    made: std::io::Result<W>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
    run: impl FnOnce(W),
) {
    match made {
        Ok(w) => {
            let _ = ready.send(Ok(()));
            run(w);
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::priority::{set_thread_nice, set_thread_slice, thread_nice, CONTROL_SLICE_NS};

    #[test]
    fn the_control_slice_keeps_the_threads_nice_value() {
        // On a thread of its own: the nice value set here must not leak into other tests.
        let seen = std::thread::spawn(|| {
            set_thread_nice(7);
            let before = thread_nice();
            let took = set_thread_slice(CONTROL_SLICE_NS);
            (before, took, thread_nice())
        })
        .join()
        .unwrap();
        assert_eq!(seen.0, 7, "nice could not be lowered to 7");
        assert_eq!(
            seen.2, 7,
            "the slice call reset nice (slice taken: {})",
            seen.1
        );
    }

    /// One entry per stream, inline in the streams table (memory per call, issue 19): 88
    /// bytes before the worker index went to 2 bytes and the packed addresses to 19, 80
    /// before the learnt addresses went apart (`Learned`, 40, once a latch reports); 56 with
    /// the call's id (the session manager's stream-to-call table, 24 bytes an entry, gone)
    /// and a restored stream's counters and the takeover's sockets in one box (`Rare`).
    #[test]
    fn a_stream_entry_stays_small() {
        let size = std::mem::size_of::<super::StreamEntry>();
        assert!(size <= 56, "StreamEntry is {size} bytes");
        let size = std::mem::size_of::<super::Learned>();
        assert!(size <= 40, "Learned is {size} bytes");
    }
}
