//! The traffic engine: generator sockets, the paced batched sender and the epoll/recvmmsg
//! receiver. Sender and receiver run on separate threads; neither allocates per packet.
//!
//! Layout: call `i` has flows `2i` (caller -> callee) and `2i+1` (callee -> caller). Calls
//! are grouped `per_socket` at a time onto one socket pair: pair `p` is sockets `2p`
//! (callers) and `2p+1` (callees), bound on consecutive ports `base + 2p`, `base + 2p + 1`:
//! ONE port per side (RTP only; the SDP has no `a=rtcp:` and the benchmark sends no RTCP,
//! so a relay has nothing to send to the implied RTCP port). Flow `f` is sent from socket
//! `sock_of(f)` to `dest[f]` and must arrive on `sock_of(f ^ 1)`. With `per_socket` 1 that
//! is socket `f` and `f ^ 1`; sharing sockets keeps a 10,000-call run inside the open-files
//! limit (the relay tells calls apart by its own ports, the receiver by the payload's flow).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rtpanchor::rtp::RtpPacket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::stats::{self, FlowRx, Stamp, MAX_PACKET_LEN, SAMPLES_PER_PACKET};
use crate::sys::{self, MsgBatch};

/// The generator's sockets and where each flow is sent.
pub struct Endpoints {
    pub socks: Vec<UdpSocket>,
    /// Per flow.
    pub dest: Vec<SocketAddrV4>,
    layout: Layout,
}

/// Which socket carries which flow.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub flows: usize,
    pub per_socket: usize,
}

impl Layout {
    #[inline]
    pub fn sock_of(&self, flow: usize) -> usize {
        2 * ((flow / 2) / self.per_socket) + (flow & 1)
    }
}

impl Endpoints {
    /// Binds a socket pair per `per_socket` calls on `ip:base..`; destinations are filled in
    /// later.
    pub fn bind(
        ip: Ipv4Addr,
        base: u16,
        calls: usize,
        per_socket: usize,
        rcvbuf: usize,
    ) -> Result<Self> {
        let layout = Layout {
            flows: 2 * calls,
            per_socket: per_socket.max(1),
        };
        let pairs = calls.div_ceil(layout.per_socket);
        let mut socks = Vec::with_capacity(2 * pairs);
        for i in 0..2 * pairs {
            let port = base as usize + i;
            let port = u16::try_from(port).context("local port range exceeds 65535")?;
            let addr = SocketAddrV4::new(ip, port);
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&addr.into())
                .with_context(|| format!("binding generator socket {addr}"))?;
            sys::set_rcvbuf(s.as_raw_fd(), rcvbuf);
            socks.push(UdpSocket::from(s));
        }
        let dest = vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0); 2 * calls];
        Ok(Self {
            socks,
            dest,
            layout,
        })
    }

    /// The local address flow `f` is sent from.
    pub fn local(&self, f: usize) -> SocketAddrV4 {
        match self.socks[self.layout.sock_of(f)].local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        }
    }

    pub fn flows(&self) -> usize {
        self.layout.flows
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }
}

/// Per-flow RTP state that continues across steps, and the sender's batch buffers.
pub struct SenderState {
    rtp_seq: Vec<u16>,
    rtp_ts: Vec<u32>,
    batch: MsgBatch,
    /// Bytes per packet (with or without the WebRTC-like extension).
    len: usize,
}

impl SenderState {
    pub fn new(flows: usize, batch: usize, ext: bool) -> Self {
        let mut b = MsgBatch::new(batch, MAX_PACKET_LEN);
        for i in 0..b.capacity() {
            stats::init_packet(b.slot_mut(i), 0, ext);
        }
        Self {
            rtp_seq: (0..flows).map(|f| (f as u16).wrapping_mul(7919)).collect(),
            rtp_ts: (0..flows)
                .map(|f| (f as u32).wrapping_mul(104_729))
                .collect(),
            batch: b,
            len: stats::packet_len(ext),
        }
    }
}

/// One sending step.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    pub step: u32,
    pub rate_pps: f64,
    pub duration_ns: u64,
    /// Packets due longer ago than this are skipped, not sent in a catch-up burst: a
    /// descheduled generator must show up as "target not reached", not as a burst that
    /// overflows the relay's socket and is blamed on the relay.
    pub max_lag_ns: u64,
    /// Packets a flow sends back to back before the next flow's turn (1: even round robin).
    pub burst: u64,
    /// The least sleep when nothing is due (0: until the next burst is).
    pub wake_ns: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SendResult {
    pub sent: u64,
    pub send_errors: u64,
    /// Packets skipped because the sender fell behind by more than `max_lag_ns`.
    pub skipped: u64,
    pub start_ns: u64,
    pub stop_ns: u64,
    pub cpu_ns: u64,
    pub syscalls: u64,
}

/// The SSRC of flow `f` (distinct per direction and call).
fn ssrc(f: usize) -> u32 {
    0x5254_0000 ^ (f as u32).wrapping_mul(2_654_435_761)
}

/// Sends `plan.rate_pps` packets per second, round-robin over all flows (so each flow gets
/// an even share), for `plan.duration_ns`, `plan.burst` packets per flow at a time. Packets
/// that are due together for the same flow go out in one `sendmmsg`; when nothing is due
/// the thread sleeps until the next burst is, or `plan.wake_ns` if that is longer.
pub fn run_sender(
    ep: &Endpoints,
    st: &mut SenderState,
    plan: SendPlan,
    stop: &AtomicBool,
) -> SendResult {
    let flows = ep.flows();
    let cap = st.batch.capacity();
    let cpu0 = sys::thread_cpu_ns();
    let start = sys::mono_ns();
    let end = start + plan.duration_ns;
    let ns_per_pkt = 1e9 / plan.rate_pps.max(1.0);
    let mut res = SendResult {
        start_ns: start,
        ..Default::default()
    };
    let mut seq = vec![0u64; flows];
    let mut rr = 0usize;
    // Bound one iteration's burst so a stalled sender catches up in slices, not one huge loop.
    let burst = plan.burst.max(1);
    let max_bursts = ((flows as u64).max(4096) / burst).max(1);
    let max_lag_pkts = ((plan.max_lag_ns as f64 / ns_per_pkt) as u64).max(burst);
    let fds: Vec<i32> = ep.socks.iter().map(|s| s.as_raw_fd()).collect();
    loop {
        let now = sys::mono_ns();
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let due = ((now - start) as f64 / ns_per_pkt) as u64 + 1;
        let mut n = due.saturating_sub(res.sent + res.send_errors + res.skipped);
        if n > max_lag_pkts {
            res.skipped += n - max_lag_pkts;
            n = max_lag_pkts;
        }
        // Whole bursts only: a flow's packets of one burst leave together.
        let bursts = (n / burst).min(max_bursts);
        if bursts == 0 {
            // Until the last packet of the next burst is due.
            let done = res.sent + res.send_errors + res.skipped;
            let next = start + ((done + burst - 1) as f64 * ns_per_pkt) as u64;
            let wait = next
                .saturating_sub(now)
                .max(plan.wake_ns)
                .min(end.saturating_sub(now));
            std::thread::sleep(Duration::from_nanos(wait.max(1000)));
            continue;
        }
        n = bursts * burst;
        let per = bursts / flows as u64;
        let extra = (bursts % flows as u64) as usize;
        let touched = if per > 0 { flows } else { extra };
        for k in 0..touched {
            let f = (rr + k) % flows;
            let mut count = (per + u64::from(k < extra)) * burst;
            let header_ssrc = ssrc(f);
            while count > 0 {
                let m = (count as usize).min(cap);
                let t = sys::mono_ns();
                for j in 0..m {
                    let slot = st.batch.slot_mut(j);
                    RtpPacket::new_unchecked(&mut *slot).set_ssrc(header_ssrc);
                    let stamp = Stamp {
                        step: plan.step,
                        flow: f as u32,
                        seq: seq[f],
                        sent_ns: t,
                    };
                    stats::stamp_packet(slot, st.rtp_seq[f], st.rtp_ts[f], &stamp);
                    seq[f] += 1;
                    st.rtp_seq[f] = st.rtp_seq[f].wrapping_add(1);
                    st.rtp_ts[f] = st.rtp_ts[f].wrapping_add(SAMPLES_PER_PACKET);
                    st.batch.set(j, st.len, ep.dest[f]);
                }
                let (ok, failed) = st.batch.send_all(fds[ep.layout.sock_of(f)], m);
                res.syscalls += 1;
                res.sent += ok as u64;
                res.send_errors += failed as u64;
                count -= m as u64;
            }
        }
        rr = (rr + bursts as usize) % flows;
    }
    res.stop_ns = sys::mono_ns();
    res.cpu_ns = sys::thread_cpu_ns().saturating_sub(cpu0);
    res
}

/// What the receiver accumulated for one step.
pub struct StepRx {
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Datagrams of an earlier step (arrived after their step was collected).
    pub stale: u64,
    /// Datagrams that are not ours, or arrived on the wrong socket.
    pub foreign: u64,
    pub misrouted: u64,
    /// Mean and max of the per-flow RFC 3550 jitter, ns.
    pub jitter_mean_ns: f64,
    pub jitter_max_ns: f64,
    pub latency: Histogram<u64>,
    pub cpu_ns: u64,
    pub last_rx_ns: u64,
}

pub enum RxCmd {
    /// Reset the accounting and accept packets of this step from now on.
    Start(u32),
    /// Send the accounting of the current step back.
    Collect,
    Quit,
}

/// Shared between the receiver and the coordinator.
#[derive(Default)]
pub struct RxShared {
    /// CLOCK_MONOTONIC of the last batch that carried a packet of the current step.
    pub last_rx_ns: AtomicU64,
}

/// The receiver thread's body: epoll over all sockets, drain each ready socket with
/// `recvmmsg` batches, account every packet. Runs until `Quit` or `stop`.
pub fn run_receiver(
    socks: Arc<Vec<UdpSocket>>,
    layout: Layout,
    shared: Arc<RxShared>,
    cmds: Receiver<RxCmd>,
    results: Sender<StepRx>,
    batch: usize,
) -> Result<()> {
    let flows = layout.flows;
    let mut ep = sys::Epoll::new(256)?;
    for (i, s) in socks.iter().enumerate() {
        ep.add(s.as_raw_fd(), i as u64)?;
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut b = MsgBatch::new(batch, 2048);
    let mut acc = vec![FlowRx::new(); flows];
    let mut hist = stats::latency_histogram();
    let mut step: Option<u32> = None;
    let (mut received, mut stale, mut foreign, mut misrouted) = (0u64, 0u64, 0u64, 0u64);
    let mut cpu0 = sys::thread_cpu_ns();
    let mut last_rx = 0u64;
    loop {
        loop {
            match cmds.try_recv() {
                Ok(RxCmd::Start(s)) => {
                    acc.iter_mut().for_each(|a| *a = FlowRx::new());
                    hist.reset();
                    (received, stale, foreign, misrouted) = (0, 0, 0, 0);
                    cpu0 = sys::thread_cpu_ns();
                    last_rx = 0;
                    shared.last_rx_ns.store(0, Ordering::Relaxed);
                    step = Some(s);
                }
                Ok(RxCmd::Collect) => {
                    let n = acc.len().max(1) as f64;
                    let r = StepRx {
                        received,
                        unique: acc.iter().map(|a| a.unique).sum(),
                        duplicates: acc.iter().map(|a| a.duplicates).sum(),
                        reordered: acc.iter().map(|a| a.reordered).sum(),
                        stale,
                        foreign,
                        misrouted,
                        jitter_mean_ns: acc.iter().map(|a| a.jitter_ns).sum::<f64>() / n,
                        jitter_max_ns: acc.iter().map(|a| a.jitter_ns).fold(0.0, f64::max),
                        latency: hist.clone(),
                        cpu_ns: sys::thread_cpu_ns().saturating_sub(cpu0),
                        last_rx_ns: last_rx,
                    };
                    step = None;
                    if results.send(r).is_err() {
                        return Ok(());
                    }
                }
                Ok(RxCmd::Quit) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(()),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        ep.wait(5, |token| {
            let sock = token as usize;
            let Some(&fd) = fds.get(sock) else { return };
            loop {
                let got = b.recv(fd).unwrap_or_default();
                if got == 0 {
                    break;
                }
                let t = sys::mono_ns();
                let mut mine = false;
                for i in 0..got {
                    let Some(s) = stats::read_stamp(b.data(i)) else {
                        foreign += 1;
                        continue;
                    };
                    if Some(s.step) != step {
                        stale += 1;
                        continue;
                    }
                    let f = s.flow as usize;
                    if f >= flows || layout.sock_of(f ^ 1) != sock {
                        misrouted += 1;
                        continue;
                    }
                    received += 1;
                    mine = true;
                    if acc[f].on_packet(s.seq, s.sent_ns, t) != stats::Arrival::Duplicate {
                        hist.saturating_record(t.saturating_sub(s.sent_ns).max(1));
                    }
                }
                if mine {
                    last_rx = t;
                    shared.last_rx_ns.store(t, Ordering::Relaxed);
                }
                if got < b.capacity() {
                    break;
                }
            }
        })?;
    }
}
