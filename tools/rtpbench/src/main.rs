//! `rtpbench`: sets up N calls on an ng-controlled relay, pushes 172-byte PCMU-sized RTP
//! through every call in both directions at a paced total rate, and measures loss,
//! reordering, duplicates, one-way latency percentiles, RFC 3550 jitter and (with
//! `--relay-pid`) the relay's CPU cost per forwarded packet. `--find-max` climbs a rate
//! ladder and reports the highest rate held cleanly: < 0.1% loss, the generator reached
//! at least 97% of the target, and the last packet arrived <= 50 ms after the sender stopped
//! (deep socket buffers otherwise hide overload as a backlog).
//!
//! Ports: the generator binds 2 sockets per call (caller, callee; RTP only, no RTCP sent) on
//! `--local-port-base ..+2*calls`, which must lie outside the kernel's ephemeral range.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use rtpbench::ng::{self, NgClient};
use rtpbench::plot;
use rtpbench::procfs;
use rtpbench::stats::{self, Percentiles};
use rtpbench::sys;
use rtpbench::traffic::{self, Endpoints, RxCmd, RxShared, SendPlan, SenderState, StepRx};

const LOSS_LIMIT_PCT: f64 = 0.1;
const REACH_LIMIT: f64 = 0.97;
const TAIL_LIMIT_MS: f64 = 50.0;

#[derive(Parser, Debug, Clone)]
#[command(version, about = "RTP relay load generator / benchmark (ng protocol)")]
struct Args {
    /// ng control address of the relay. Several, comma-separated, spread the calls over
    /// several relay processes (call i goes to address i mod n): a sharded relay, or one that
    /// cannot hold all its sockets under one process's open-files limit.
    #[arg(long, default_value = "127.0.0.1:2223", value_delimiter = ',')]
    ng: Vec<SocketAddr>,
    /// Number of calls (each: one stream per direction).
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Total packets/s over all calls and both directions.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measurement duration in seconds (per ladder step with --find-max: see --step-duration).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Ramp the rate up and report the highest rate held cleanly.
    #[arg(long)]
    find_max: bool,
    /// Explicit ladder for --find-max, e.g. "60000,90000,120000".
    #[arg(long, value_delimiter = ',')]
    ladder: Vec<f64>,
    #[arg(long, default_value_t = 20000.0)]
    start_rate: f64,
    #[arg(long, default_value_t = 20000.0)]
    step_rate: f64,
    #[arg(long, default_value_t = 400000.0)]
    max_rate: f64,
    /// Seconds per --find-max step.
    #[arg(long, default_value_t = 2.5)]
    step_duration: f64,
    /// Warm-up seconds before measuring (not reported; lets the relay latch the endpoints).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// First local port; 2 ports per socket pair are bound from here.
    #[arg(long, default_value_t = 20000)]
    local_port_base: u16,
    /// Calls that share one caller socket and one callee socket (0: 1, or as many as the
    /// open-files limit requires). The relay keeps them apart by its own ports; the receiver
    /// by the flow number in each payload.
    #[arg(long, default_value_t = 0)]
    calls_per_socket: usize,
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: std::net::Ipv4Addr,
    /// Relay process id: report its CPU per forwarded packet, from its CPU clock (exact; from
    /// /proc/PID/stat, in 10 ms ticks, where that clock cannot be read). Several,
    /// comma-separated: their CPU times are added (a relay sharded over processes).
    #[arg(long, value_delimiter = ',')]
    relay_pid: Vec<u32>,
    /// Kernel threads whose CPU time counts to the kernel's work for this traffic (the
    /// `ksoftirqd/N` of the cores used: softirq work the sender's context did not finish is
    /// charged there, not to the generator), reported apart as `softirqd_cpu_ns_per_pkt`.
    /// Comma-separated; read from their CPU clocks.
    #[arg(long, value_delimiter = ',')]
    softirq_pid: Vec<u32>,
    /// Cores for the generator: "0" pins sender and receiver to CPU 0, "0,1" splits them.
    #[arg(long, value_delimiter = ',')]
    pin_cpus: Vec<usize>,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an SVG of p99 latency and loss against the offered rate.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// No relay: the generator's sockets send to each other (baseline latency/throughput).
    #[arg(long)]
    direct: bool,
    /// Name of the relay under test (for the report).
    #[arg(long, default_value = "relay")]
    label: String,
    /// Send WebRTC-like audio: each packet carries an RFC 8285 one-byte header extension
    /// (audio level and abs-send-time, 12 bytes) before the payload.
    #[arg(long)]
    webrtc_ext: bool,
    /// Datagrams per sendmmsg/recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Packets each flow sends back to back before the next flow's turn (1: even round
    /// robin, like voice; 10-60: like the frames of a video stream). The rate is unchanged.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    burst: u32,
    /// Receive buffer per generator socket, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    rcvbuf: usize,
    /// After the warm-up and after each step, ask each relay (ng `statistics`) for its data
    /// plane's figures (rtpanchor: directions in the kernel, hand-overs, take-backs, packets
    /// that reached user space by reason, receive re-arms...) and read its CPU per thread
    /// (/proc), and record them in the JSON.
    #[arg(long)]
    relay_stats: bool,
    /// Seconds to wait for the relay to answer ng ping.
    #[arg(long, default_value_t = 5.0)]
    wait_ready: f64,
    /// Give the relay at most this long to deliver its backlog after the sender stops.
    #[arg(long, default_value_t = 3000)]
    drain_max_ms: u64,
    /// The sender skips (does not burst) packets it is more than this late for.
    #[arg(long, default_value_t = 5.0)]
    max_lag_ms: f64,
    /// The sender sleeps at least this long when nothing is due (0: until the next packet
    /// is). At 50,000 packets/s, waking for each packet (every 20 us) costs the generator
    /// more than the packets do, and that cost varies by several percent from run to run;
    /// 1000 sends what came due each millisecond together (still one packet per flow in
    /// turn, so each flow keeps its 20 ms spacing), which makes machine CPU figures far
    /// steadier. Below `--max-lag-ms`.
    #[arg(long, default_value_t = 0.0)]
    wake_us: f64,
}

#[derive(Serialize, Debug, Clone)]
struct StepReport {
    step: u32,
    target_pps: f64,
    achieved_pps: f64,
    duration_s: f64,
    sent: u64,
    send_errors: u64,
    /// Not sent: the generator fell more than --max-lag-ms behind.
    skipped: u64,
    received: u64,
    unique: u64,
    lost: u64,
    loss_pct: f64,
    reordered: u64,
    duplicates: u64,
    stale: u64,
    foreign: u64,
    misrouted: u64,
    latency: Percentiles,
    jitter_mean_us: f64,
    jitter_max_us: f64,
    /// Last packet's arrival after the sender stopped, ms (backlog indicator).
    tail_ms: f64,
    relay_cpu_pct: Option<f64>,
    relay_cpu_ns_per_pkt: Option<f64>,
    gen_cpu_pct: f64,
    /// The whole machine's busy CPU time per forwarded packet, ns: generator, relay and the
    /// kernel's work for both, wherever it is accounted. An in-kernel relay does its work in
    /// softirq context of the sender, which `relay_cpu_ns_per_pkt` cannot see; this can.
    machine_cpu_ns_per_pkt: Option<f64>,
    /// This generator process's CPU time per forwarded packet, ns.
    gen_cpu_ns_per_pkt: Option<f64>,
    /// The `--softirq-pid` threads' CPU time per forwarded packet, ns.
    softirqd_cpu_ns_per_pkt: Option<f64>,
    sender_cpu_pct: f64,
    receiver_cpu_pct: f64,
    sender_syscalls_per_pkt: f64,
    udp_rcvbuf_errors: u64,
    generator_limited: bool,
    pass: bool,
    verdict: String,
    /// With `--relay-stats`: the relays' in-kernel figures at the end of the step (summed).
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_kernel: Option<BTreeMap<String, u64>>,
    /// With `--relay-stats`: the relay processes' CPU ms per thread name at the end of the
    /// step, since they started (which thread burns a relay's CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_threads_ms: Option<BTreeMap<String, u64>>,
}

#[derive(Serialize, Debug)]
struct Report {
    label: String,
    ng: String,
    calls: usize,
    flows: usize,
    /// Calls sharing each generator socket pair (RTP only: one port per side).
    calls_per_socket: usize,
    packet_bytes: usize,
    /// Packets per flow sent back to back (`--burst`).
    burst: u32,
    /// The sender's least sleep when nothing is due, us (`--wake-us`; 0: to the next packet).
    wake_us: f64,
    find_max: bool,
    /// The relay processes whose CPU time is counted (added up).
    relay_pid: Vec<u32>,
    pin_cpus: Vec<usize>,
    steps: Vec<StepReport>,
    /// With `--relay-stats`: the relays' in-kernel figures at the end of the warm-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_relay_kernel: Option<BTreeMap<String, u64>>,
    /// With `--relay-stats`: CPU ms per relay thread name at the end of the warm-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_relay_threads_ms: Option<BTreeMap<String, u64>>,
    /// Highest passing rate (find-max), or the rate if the single run passed.
    max_pass_pps: Option<f64>,
}

/// The calls set up on one relay process; deleted on drop (also on error and Ctrl-C).
struct Calls {
    client: NgClient,
    ng: SocketAddr,
    ids: Vec<String>,
}

impl Drop for Calls {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        // A dead relay would cost a timeout per call: check it is alive first.
        if self.client.wait_ready(Duration::from_secs(1)).is_err() {
            eprintln!(
                "relay {} not answering; {} calls not deleted",
                self.ng,
                self.ids.len()
            );
            return;
        }
        self.client.set_attempts(2);
        let reqs: Vec<_> = self.ids.iter().map(|id| ng::delete(id)).collect();
        let replies = self.client.transact_many(&reqs, &|| false);
        let failed = replies
            .iter()
            .filter(|r| !matches!(r, Ok(r) if r.result == "ok"))
            .count();
        eprintln!(
            "deleted {} calls ({failed} failed)",
            self.ids.len() - failed
        );
    }
}

/// Call `i` of `calls` goes to relay `shard_of(i, n)`; returns, per relay, its calls in order.
fn shard_calls(calls: usize, relays: usize) -> Vec<Vec<usize>> {
    let n = relays.max(1);
    let mut v = vec![Vec::with_capacity(calls.div_ceil(n)); n];
    for i in 0..calls {
        v[i % n].push(i);
    }
    v
}

fn ladder(a: &Args) -> Vec<f64> {
    if !a.ladder.is_empty() {
        return a.ladder.clone();
    }
    let mut v = Vec::new();
    let mut r = a.start_rate;
    while r <= a.max_rate + 0.5 && v.len() < 200 {
        v.push(r);
        r += a.step_rate.max(1.0);
    }
    v
}

fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Sets up every call on its relay (see [`shard_calls`]). The returned sets delete their
/// calls when dropped, including those of a set-up that failed half way.
fn set_up_calls(a: &Args, ep: &mut Endpoints, stop: &AtomicBool) -> Result<Vec<Calls>> {
    let mut shards = Vec::with_capacity(a.ng.len());
    for &addr in &a.ng {
        let mut client = NgClient::connect(addr)?;
        client
            .wait_ready(Duration::from_secs_f64(a.wait_ready))
            .with_context(|| format!("ng {addr}"))?;
        shards.push(Calls {
            client,
            ng: addr,
            ids: Vec::new(),
        });
    }
    let run = format!("{}-{}", std::process::id(), sys::mono_ns() % 1_000_000);
    let t0 = sys::mono_ns();
    let stop_f = || stop.load(Ordering::Relaxed);
    for (calls, members) in shards.iter_mut().zip(shard_calls(a.calls, a.ng.len())) {
        let ids: Vec<String> = members.iter().map(|&i| ng::call_id(&run, i)).collect();
        let offers: Vec<_> = members
            .iter()
            .zip(&ids)
            .map(|(&i, id)| ng::offer(id, ep.local(2 * i), i as u64 + 1))
            .collect();
        let offer_replies = calls.client.transact_many(&offers, &stop_f);
        // Every offered call may exist on the relay now: delete them all at the end.
        calls.ids = ids.clone();
        let answers: Vec<_> = members
            .iter()
            .zip(&ids)
            .map(|(&i, id)| ng::answer(id, ep.local(2 * i + 1), i as u64 + 1))
            .collect();
        let answer_replies = calls.client.transact_many(&answers, &stop_f);
        if stop_f() {
            bail!("interrupted during call setup");
        }
        for (k, &i) in members.iter().enumerate() {
            let ng = calls.ng;
            // The offer's reply goes to the callee: where the callee sends (flow 2i+1).
            ep.dest[2 * i + 1] = offer_replies
                .get(k)
                .ok_or_else(|| anyhow!("no offer reply for call {i}"))
                .and_then(ng::reply_endpoint)
                .with_context(|| format!("offer of call {i} ({ng})"))?;
            // The answer's reply goes to the caller: where the caller sends (flow 2i).
            ep.dest[2 * i] = answer_replies
                .get(k)
                .ok_or_else(|| anyhow!("no answer reply for call {i}"))
                .and_then(ng::reply_endpoint)
                .with_context(|| format!("answer of call {i} ({ng})"))?;
        }
    }
    eprintln!(
        "set up {} calls in {:.2} s (e.g. call 0: caller {} -> relay {}, callee {} -> relay {})",
        a.calls,
        (sys::mono_ns() - t0) as f64 / 1e9,
        ep.local(0),
        ep.dest[0],
        ep.local(1),
        ep.dest[1]
    );
    Ok(shards)
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("warning: could not pin to CPU {id}");
        }
    }
}

struct Bench<'a> {
    a: &'a Args,
    ep: Arc<Endpoints>,
    sender: Option<SenderState>,
    rx_cmd: mpsc::Sender<RxCmd>,
    rx_res: mpsc::Receiver<StepRx>,
    shared: Arc<RxShared>,
    stop: &'static AtomicBool,
    ticks: u64,
    /// Read the relay's CPU time from its CPU clock (exact) rather than `/proc/PID/stat`
    /// (10 ms ticks); chosen once, so a step never mixes the two.
    exact_cpu: bool,
}

impl Bench<'_> {
    /// With `--relay-stats`, the relays' in-kernel figures now, summed over them; `None`
    /// without the flag, or when one relay does not answer or has no such figures (said).
    fn relay_kernel(&self) -> Option<BTreeMap<String, u64>> {
        if !self.a.relay_stats || self.a.direct {
            return None;
        }
        let mut sum = BTreeMap::new();
        for &addr in &self.a.ng {
            let got = NgClient::connect(addr).and_then(|mut c| c.statistics());
            match got {
                Ok(reply) if ng::add_kernel_figures(&reply, &mut sum) => {}
                Ok(_) => return None,
                Err(e) => {
                    eprintln!("relay statistics from {addr}: {e:#}");
                    return None;
                }
            }
        }
        Some(sum)
    }

    /// With `--relay-stats`, CPU ms per thread name of the relay processes so far.
    fn relay_threads(&self) -> Option<BTreeMap<String, u64>> {
        if !self.a.relay_stats || self.a.relay_pid.is_empty() {
            return None;
        }
        let mut sum = BTreeMap::new();
        for &pid in &self.a.relay_pid {
            for (name, ms) in procfs::thread_cpu_ms(pid, self.ticks) {
                *sum.entry(name).or_default() += ms;
            }
        }
        Some(sum)
    }

    /// The relay's CPU time so far, ns: the sum over its processes; `None` without a pid or
    /// if one cannot be read.
    fn relay_cpu_ns(&self) -> Option<u64> {
        if self.a.relay_pid.is_empty() {
            return None;
        }
        self.a.relay_pid.iter().try_fold(0u64, |sum, &pid| {
            let t = if self.exact_cpu {
                sys::other_process_cpu_ns(pid)
            } else {
                procfs::process_cpu_ns(pid, self.ticks)
            };
            Some(sum + t?)
        })
    }

    /// The `--softirq-pid` threads' CPU time so far, ns; `None` without one or if one cannot
    /// be read.
    fn softirqd_cpu_ns(&self) -> Option<u64> {
        if self.a.softirq_pid.is_empty() {
            return None;
        }
        self.a.softirq_pid.iter().try_fold(0u64, |sum, &pid| {
            Some(sum + sys::other_process_cpu_ns(pid)?)
        })
    }

    fn run_step(&mut self, step: u32, rate: f64, secs: f64) -> Result<StepReport> {
        let a = self.a;
        self.rx_cmd
            .send(RxCmd::Start(step))
            .map_err(|_| anyhow!("receiver thread gone"))?;
        // Let the receiver switch before anything of this step can arrive.
        std::thread::sleep(Duration::from_millis(20));
        let relay0 = self.relay_cpu_ns();
        let softirqd0 = self.softirqd_cpu_ns();
        let gen0 = sys::process_cpu_ns();
        let machine0 = procfs::machine_idle_ns(self.ticks).map(|m| (m, sys::mono_ns()));
        let udp0 = procfs::udp_rcvbuf_errors();
        let plan = SendPlan {
            step,
            rate_pps: rate,
            duration_ns: (secs * 1e9) as u64,
            max_lag_ns: (a.max_lag_ms * 1e6) as u64,
            burst: u64::from(a.burst),
            wake_ns: (a.wake_us * 1e3) as u64,
        };
        let mut st = self
            .sender
            .take()
            .ok_or_else(|| anyhow!("sender state lost"))?;
        let ep = Arc::clone(&self.ep);
        let stop = self.stop;
        let core = a.pin_cpus.first().copied();
        let handle = std::thread::Builder::new()
            .name("rtpbench-send".into())
            .spawn(move || {
                pin(core);
                let r = traffic::run_sender(&ep, &mut st, plan, stop);
                (r, st)
            })?;
        let (sr, st) = handle
            .join()
            .map_err(|_| anyhow!("sender thread panicked"))?;
        self.sender = Some(st);
        // Drain: wait until nothing of this step arrived for 100 ms, at most drain_max_ms.
        let quiet = 100 * 1_000_000;
        let drain_end = sr.stop_ns + a.drain_max_ms * 1_000_000;
        loop {
            let now = sys::mono_ns();
            let last = self
                .shared
                .last_rx_ns
                .load(Ordering::Relaxed)
                .max(sr.stop_ns);
            if now >= drain_end
                || now.saturating_sub(last) >= quiet
                || self.stop.load(Ordering::Relaxed)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let relay1 = self.relay_cpu_ns();
        let softirqd1 = self.softirqd_cpu_ns();
        let gen1 = sys::process_cpu_ns();
        let machine1 = procfs::machine_idle_ns(self.ticks).map(|m| (m, sys::mono_ns()));
        let udp1 = procfs::udp_rcvbuf_errors();
        self.rx_cmd
            .send(RxCmd::Collect)
            .map_err(|_| anyhow!("receiver thread gone"))?;
        let rx = self
            .rx_res
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("receiver did not report"))?;

        let send_s = (sr.stop_ns - sr.start_ns).max(1) as f64 / 1e9;
        let achieved = sr.sent as f64 / send_s;
        let lost = sr.sent.saturating_sub(rx.unique);
        let loss_pct = stats::loss_pct(sr.sent, rx.unique);
        let tail_ms = if rx.last_rx_ns > sr.stop_ns {
            (rx.last_rx_ns - sr.stop_ns) as f64 / 1e6
        } else {
            0.0
        };
        let (relay_cpu_pct, relay_ns_pkt) = match (relay0, relay1) {
            (Some(c0), Some(c1)) => {
                let d = c1.saturating_sub(c0) as f64;
                (
                    Some(d / 1e9 / send_s * 100.0),
                    (rx.unique > 0).then(|| d / rx.unique as f64),
                )
            }
            _ => (None, None),
        };
        let gen_cpu_pct = gen1.saturating_sub(gen0) as f64 / 1e9 / send_s * 100.0;
        let machine_cpu_ns_per_pkt = match (machine0, machine1) {
            (Some(((idle0, cpus), t0)), Some(((idle1, _), t1))) if rx.unique > 0 => {
                let elapsed = cpus * t1.saturating_sub(t0);
                let busy = elapsed.saturating_sub(idle1.saturating_sub(idle0));
                Some(busy as f64 / rx.unique as f64)
            }
            _ => None,
        };
        let sender_cpu_pct = sr.cpu_ns as f64 / 1e9 / send_s * 100.0;
        let receiver_cpu_pct = rx.cpu_ns as f64 / 1e9 / send_s * 100.0;
        let reached = achieved >= REACH_LIMIT * rate;
        // The generator is the limit when it missed its target or its core(s) ran full.
        let gen_cores = match a.pin_cpus.as_slice() {
            [] => 2.0,
            [x] => {
                let _ = x;
                1.0
            }
            [x, y, ..] if x == y => 1.0,
            _ => 2.0,
        };
        let generator_limited = !reached || gen_cpu_pct >= 90.0 * gen_cores;
        let mut why = Vec::new();
        if loss_pct >= LOSS_LIMIT_PCT {
            why.push(format!("loss {loss_pct:.3}%"));
        }
        if !reached {
            why.push(format!(
                "generator reached only {:.0}% of target",
                achieved / rate * 100.0
            ));
        }
        if tail_ms > TAIL_LIMIT_MS {
            why.push(format!("backlog: last packet {tail_ms:.0} ms after stop"));
        }
        if self.stop.load(Ordering::Relaxed) {
            why.push("interrupted".to_string());
        }
        let pass = why.is_empty();
        let mut verdict = if pass {
            "pass".to_string()
        } else {
            why.join("; ")
        };
        if generator_limited && reached {
            verdict.push_str(" (generator CPU saturated: the sender may be the bottleneck)");
        }
        Ok(StepReport {
            step,
            target_pps: rate,
            achieved_pps: achieved,
            duration_s: send_s,
            sent: sr.sent,
            send_errors: sr.send_errors,
            skipped: sr.skipped,
            received: rx.received,
            unique: rx.unique,
            lost,
            loss_pct,
            reordered: rx.reordered,
            duplicates: rx.duplicates,
            stale: rx.stale,
            foreign: rx.foreign,
            misrouted: rx.misrouted,
            latency: stats::percentiles(&rx.latency),
            jitter_mean_us: rx.jitter_mean_ns / 1000.0,
            jitter_max_us: rx.jitter_max_ns / 1000.0,
            tail_ms,
            relay_cpu_pct,
            relay_cpu_ns_per_pkt: relay_ns_pkt,
            gen_cpu_pct,
            machine_cpu_ns_per_pkt,
            gen_cpu_ns_per_pkt: (rx.unique > 0)
                .then(|| gen1.saturating_sub(gen0) as f64 / rx.unique as f64),
            softirqd_cpu_ns_per_pkt: match (softirqd0, softirqd1) {
                (Some(c0), Some(c1)) if rx.unique > 0 => {
                    Some(c1.saturating_sub(c0) as f64 / rx.unique as f64)
                }
                _ => None,
            },
            sender_cpu_pct,
            receiver_cpu_pct,
            sender_syscalls_per_pkt: sr.syscalls as f64 / sr.sent.max(1) as f64,
            udp_rcvbuf_errors: udp1.saturating_sub(udp0),
            generator_limited,
            pass,
            verdict,
            relay_kernel: None,
            relay_threads_ms: None,
        })
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

fn print_table(r: &Report) {
    println!(
        "# {} via {}: {} calls, {} flows, {} B packets, {} call(s) per generator socket pair (RTP only)",
        r.label, r.ng, r.calls, r.flows, r.packet_bytes, r.calls_per_socket
    );
    println!(
        "{:>9} {:>9} {:>8} {:>5} {:>4} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>5} {:>5}  verdict",
        "target", "achieved", "loss%", "reord", "dup", "p50us", "p90us", "p99us", "p99.9us", "maxus",
        "jit_us", "tail_ms", "rly%", "rly_ns", "gen%", "snd%"
    );
    for s in &r.steps {
        println!(
            "{:>9.0} {:>9.0} {:>8.4} {:>5} {:>4} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>8.0} {:>7.1} {:>7.1} {:>6} {:>7} {:>5.0} {:>5.0}  {}",
            s.target_pps,
            s.achieved_pps,
            s.loss_pct,
            s.reordered,
            s.duplicates,
            s.latency.p50_us,
            s.latency.p90_us,
            s.latency.p99_us,
            s.latency.p999_us,
            s.latency.max_us,
            s.jitter_mean_us,
            s.tail_ms,
            opt(s.relay_cpu_pct, 0),
            opt(s.relay_cpu_ns_per_pkt, 0),
            s.gen_cpu_pct,
            s.sender_cpu_pct,
            s.verdict
        );
    }
    match r.max_pass_pps {
        Some(p) => println!("max rate held (<{LOSS_LIMIT_PCT}% loss, >=97% sent, tail <= {TAIL_LIMIT_MS} ms): {p:.0} pps"),
        None => println!("no step passed"),
    }
}

/// The in-kernel figures a log line shows: directions in the kernel, hand-overs and
/// take-backs, and the user-space packet reasons that are not zero.
fn kernel_line(k: &BTreeMap<String, u64>) -> String {
    let g = |n: &str| k.get(n).copied().unwrap_or(0);
    let mut line = format!(
        "kernel_streams {} handovers {} takebacks {} recv_rearms {} enobufs {} recv_stalls {}",
        g("kernel_streams"),
        g("kernel_handovers"),
        g("kernel_takebacks"),
        g("recv_rearms"),
        g("enobufs"),
        g("recv_stalls")
    );
    for (n, v) in k {
        if *v > 0 && (n.starts_with("user_") || n.starts_with("kernel_back_")) {
            line.push_str(&format!(" {n} {v}"));
        }
    }
    line
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rtpbench: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<i32> {
    let a = Args::parse();
    if a.calls == 0 || a.rate <= 0.0 || a.batch == 0 {
        bail!("--calls, --rate and --batch must be positive");
    }
    // A sleep as long as the lag allowed would skip what came due meanwhile.
    if !(a.wake_us >= 0.0 && a.wake_us / 1000.0 < a.max_lag_ms) {
        bail!("--wake-us must be at least 0 and below --max-lag-ms");
    }
    let stop = sys::install_stop_signals();
    let nofile = sys::raise_nofile_limit();
    // Each socket pair costs 4 descriptors (the receiver holds clones); keep 256 spare.
    let budget = nofile.saturating_sub(256).max(4);
    let per_socket = if a.calls_per_socket > 0 {
        a.calls_per_socket
    } else {
        (4 * a.calls as u64).div_ceil(budget).max(1) as usize
    };
    let pairs = a.calls.div_ceil(per_socket);
    let need = 4 * pairs as u64 + 64;
    if nofile < need {
        bail!(
            "open-files limit {nofile} < {need} needed for {pairs} socket pairs (ulimit -n, or raise --calls-per-socket)"
        );
    }
    if per_socket > 1 {
        eprintln!(
            "{per_socket} calls share each generator socket ({pairs} pairs; open-files limit {nofile})"
        );
    }
    let (lo, hi) = ephemeral_range();
    let first = a.local_port_base as u32;
    let last = first + 2 * pairs as u32 - 1;
    if last > 65535 {
        bail!("ports {first}..{last} exceed 65535");
    }
    if first <= hi && last >= lo {
        bail!(
            "generator ports {first}..{last} overlap the ephemeral range {lo}..{hi}: pick another --local-port-base"
        );
    }
    let mut ep = Endpoints::bind(a.local_ip, a.local_port_base, a.calls, per_socket, a.rcvbuf)?;
    let _calls = if a.direct {
        for f in 0..ep.flows() {
            ep.dest[f] = ep.local(f ^ 1);
        }
        None
    } else {
        Some(set_up_calls(&a, &mut ep, stop)?)
    };
    let socks: Vec<std::net::UdpSocket> = ep
        .socks
        .iter()
        .map(|s| s.try_clone())
        .collect::<std::io::Result<_>>()
        .context("cloning sockets for the receiver")?;
    let socks = Arc::new(socks);
    let shared = Arc::new(RxShared::default());
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (res_tx, res_rx) = mpsc::channel();
    let rx_core = a.pin_cpus.get(1).or(a.pin_cpus.first()).copied();
    let rx_thread = {
        let socks = Arc::clone(&socks);
        let layout = ep.layout();
        let shared = Arc::clone(&shared);
        let batch = a.batch;
        std::thread::Builder::new()
            .name("rtpbench-recv".into())
            .spawn(move || {
                pin(rx_core);
                traffic::run_receiver(socks, layout, shared, cmd_rx, res_tx, batch)
            })?
    };
    let flows = ep.flows();
    let mut bench = Bench {
        a: &a,
        ep: Arc::new(ep),
        sender: Some(SenderState::new(flows, a.batch, a.webrtc_ext)),
        rx_cmd: cmd_tx,
        rx_res: res_rx,
        shared,
        stop,
        ticks: sys::clock_ticks_per_sec(),
        exact_cpu: !a.relay_pid.is_empty()
            && a.relay_pid
                .iter()
                .all(|&p| sys::other_process_cpu_ns(p).is_some()),
    };
    let rates = if a.find_max { ladder(&a) } else { vec![a.rate] };
    let secs = if a.find_max {
        a.step_duration
    } else {
        a.duration
    };
    let mut steps = Vec::new();
    let mut warmup_kernel = None;
    let mut warmup_threads = None;
    let result = (|| -> Result<()> {
        if a.warmup > 0.0 {
            // A realistic 50 pps per flow (capped at the first measured rate).
            let r = (50.0 * flows as f64).min(rates[0]);
            eprintln!("warm-up: {r:.0} pps for {:.1} s", a.warmup);
            let w = bench.run_step(0, r, a.warmup)?;
            warmup_kernel = bench.relay_kernel();
            warmup_threads = bench.relay_threads();
            if let Some(k) = &warmup_kernel {
                eprintln!("after warm-up: {}", kernel_line(k));
            }
            if w.unique == 0 {
                bail!(
                    "no packet came back during warm-up: the relay does not forward ({})",
                    w.verdict
                );
            }
        }
        let mut fails_in_row = 0;
        for (i, &rate) in rates.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut s = bench.run_step(i as u32 + 1, rate, secs)?;
            s.relay_kernel = bench.relay_kernel();
            s.relay_threads_ms = bench.relay_threads();
            if let Some(k) = &s.relay_kernel {
                eprintln!("after step {}: {}", s.step, kernel_line(k));
            }
            eprintln!(
                "step {}: target {:.0} pps, achieved {:.0}, loss {:.3}%, p50 {:.0} µs, p99 {:.0} µs, tail {:.1} ms, relay {} ns/pkt {}% CPU, gen {:.0}% CPU: {}",
                s.step,
                s.target_pps,
                s.achieved_pps,
                s.loss_pct,
                s.latency.p50_us,
                s.latency.p99_us,
                s.tail_ms,
                opt(s.relay_cpu_ns_per_pkt, 0),
                opt(s.relay_cpu_pct, 0),
                s.gen_cpu_pct,
                s.verdict
            );
            let pass = s.pass;
            let relay_limited = !pass && !s.generator_limited;
            steps.push(s);
            if pass {
                fails_in_row = 0;
            } else {
                fails_in_row += 1;
                // Stop at the first failure the relay caused, or two in a row of any kind.
                if a.find_max && (relay_limited || fails_in_row >= 2) {
                    break;
                }
            }
            // A short pause so the next step starts from empty queues.
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })();
    let _ = bench.rx_cmd.send(RxCmd::Quit);
    let _ = rx_thread.join();
    if let Err(e) = &result {
        eprintln!("rtpbench: {e:#}");
    }
    let max_pass = steps
        .iter()
        .filter(|s| s.pass)
        .map(|s| s.target_pps)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let report = Report {
        label: a.label.clone(),
        ng: if a.direct {
            "direct".into()
        } else {
            a.ng.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        },
        calls: a.calls,
        flows,
        calls_per_socket: per_socket,
        packet_bytes: stats::packet_len(a.webrtc_ext),
        burst: a.burst,
        wake_us: a.wake_us,
        find_max: a.find_max,
        relay_pid: a.relay_pid.clone(),
        pin_cpus: a.pin_cpus.clone(),
        steps,
        warmup_relay_kernel: warmup_kernel,
        warmup_relay_threads_ms: warmup_threads,
        max_pass_pps: max_pass,
    };
    print_table(&report);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        let pts: Vec<_> = report
            .steps
            .iter()
            .map(|s| plot::Point {
                offered_pps: s.target_pps,
                p99_us: s.latency.p99_us,
                loss_pct: s.loss_pct,
                pass: s.pass,
            })
            .collect();
        let title = format!(
            "{}: {} calls, p99 latency and loss vs offered rate",
            report.label, report.calls
        );
        std::fs::write(path, plot::svg(&title, &pts))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(_calls);
    result?;
    Ok(
        if report.steps.iter().all(|s| s.pass) || report.max_pass_pps.is_some() && a.find_max {
            0
        } else {
            1
        },
    )
}

#[cfg(test)]
mod tests {
    use super::shard_calls;

    #[test]
    fn calls_are_dealt_round_robin_to_every_relay() {
        let s = shard_calls(7, 3);
        assert_eq!(s, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        // One relay takes every call; no relay given behaves as one.
        assert_eq!(shard_calls(3, 1), vec![vec![0, 1, 2]]);
        assert_eq!(shard_calls(2, 0), vec![vec![0, 1]]);
        // More relays than calls: the extra relays get none.
        assert_eq!(shard_calls(1, 2), vec![vec![0], vec![]]);
    }
}
