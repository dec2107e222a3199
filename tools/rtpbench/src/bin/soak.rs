//! soak: the load generator and judge of `tools/soak.sh`. Keeps `--calls` ng calls alive on a
//! running relay, each set up (offer + answer, Kamailio-like), carried for a random lifetime
//! with RTP both ways at `--pps` per stream (with some upstream loss and reordering made by
//! the sender), then torn down (delete) or abandoned (every `--abandon-every`th call: media
//! stops, no delete, the relay's media timeout must end it; a later `query` checks it did).
//! A stranger socket sends a few malformed datagrams to every relay port of every call, and
//! to the ng and SIP ports. Every 10 s it samples the relay (RSS, open descriptors, ports in
//! use, calls) and its own loss figures into a CSV. At the end it deletes its calls, waits
//! for the abandoned ones to time out, and judges:
//! - every packet sent must arrive (the relay's policy forwards all of them): lost = 0;
//! - no offer, answer or delete fails; every abandoned call is gone after its timeout;
//! - RSS, descriptors, ports and calls stay within 5% of their post-warm-up level (the
//!   highest sample of the minute after warm-up);
//! - after the last call is gone: 0 calls and 0 ports in use on the relay.
//!
//! Exit 0 on pass, 1 on a failed check (each printed as `FAIL: ...`), 2 on a setup error.

// A load generator: wall-clock pacing is its I/O edge.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rtpanchor::control::bencode::Owned;
use rtpbench::ng::{self, NgClient};

#[derive(Parser, Debug)]
#[command(about = "soak load and resource judge for an ng relay (tools/soak.sh)")]
struct Args {
    #[arg(long)]
    ng: SocketAddr,
    /// The relay's /metrics address (HTTP).
    #[arg(long)]
    http: SocketAddr,
    /// The relay's SIP UDP port (malformed datagrams are sent there too).
    #[arg(long)]
    sip: Option<SocketAddr>,
    #[arg(long)]
    relay_pid: u32,
    /// Concurrent ng calls.
    #[arg(long, default_value_t = 150)]
    calls: usize,
    /// Packets per second per stream (two streams per call).
    #[arg(long, default_value_t = 50)]
    pps: u32,
    #[arg(long)]
    minutes: f64,
    /// Seconds before the resource level is taken.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// First generator port: `--sockets` caller sockets, as many callee sockets, a stranger.
    #[arg(long)]
    local_base: u16,
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Call lifetime range, seconds.
    #[arg(long, default_value_t = 20)]
    life_min: u64,
    #[arg(long, default_value_t = 60)]
    life_max: u64,
    /// Every Nth call is abandoned (no delete) and must be ended by the media timeout.
    #[arg(long, default_value_t = 20)]
    abandon_every: u64,
    /// The relay's media timeout (`--timeout`), seconds.
    #[arg(long)]
    relay_timeout: u64,
    /// Per mille of sequence numbers the sender skips (upstream loss) and of pairs it swaps.
    #[arg(long, default_value_t = 10)]
    skip_permille: u64,
    #[arg(long, default_value_t = 10)]
    reorder_permille: u64,
    /// Length of the windows whose medians are compared (the first after warm-up is the
    /// level), seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// Allowed growth over the post-warm-up level, percent.
    #[arg(long, default_value_t = 5.0)]
    growth_pct: f64,
    #[arg(long)]
    csv: std::path::PathBuf,
}

const TICK: Duration = Duration::from_millis(20);
const RTP_LEN: usize = 172;
/// Sequence numbers a stream can send in its longest life (bitmap of arrivals).
const SEQ_WORDS: usize = 128;

/// What arrived of one stream (direction) of the call now in a slot.
#[derive(Default)]
struct DirRx {
    seen: Vec<u64>,
    unique: u64,
    dup: u64,
}

struct SlotRx {
    gen: u32,
    dirs: [DirRx; 2],
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    dup: AtomicU64,
    stale: AtomicU64,
    misrouted: AtomicU64,
    foreign: AtomicU64,
    calls_done: AtomicU64,
    calls_abandoned: AtomicU64,
    setup_failed: AtomicU64,
    delete_failed: AtomicU64,
    timeout_leaks: AtomicU64,
    malformed_sent: AtomicU64,
    active: AtomicU64,
}

struct Shared {
    rx: Vec<Mutex<SlotRx>>,
    totals: Totals,
}

/// The RTP stream identity: slot, direction and the slot's call generation.
fn ssrc(slot: usize, dir: usize, gen: u32) -> u32 {
    ((gen & 0x7fff) << 16) | ((slot as u32 & 0x7fff) << 1) | dir as u32
}

fn unpack(ssrc: u32) -> (usize, usize, u32) {
    (
        ((ssrc >> 1) & 0x7fff) as usize,
        (ssrc & 1) as usize,
        ssrc >> 16,
    )
}

/// A cheap deterministic mix (splitmix64) for the sender's choices.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn receiver(sock: UdpSocket, side: usize, shared: Arc<Shared>, stop: Arc<AtomicU64>) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 2048];
    while stop.load(Ordering::Relaxed) == 0 {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let t = &shared.totals;
        if n != RTP_LEN || buf[0] >> 6 != 2 {
            t.foreign.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let s = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let idx = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        let (slot, dir, gen) = unpack(s);
        // Direction 0 (caller -> callee) arrives on a callee socket (side 1), and back.
        if dir == side {
            t.misrouted.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(m) = shared.rx.get(slot) else {
            t.foreign.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut r = m.lock().unwrap_or_else(|e| e.into_inner());
        if r.gen & 0x7fff != gen || idx >= SEQ_WORDS * 64 {
            t.stale.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let d = &mut r.dirs[dir];
        let (w, b) = (idx / 64, 1u64 << (idx % 64));
        if d.seen[w] & b != 0 {
            d.dup += 1;
        } else {
            d.seen[w] |= b;
            d.unique += 1;
        }
    }
}

#[derive(Clone)]
enum State {
    Idle {
        at: Instant,
    },
    Active {
        id: String,
        /// Per direction: where to send (the relay port facing the sender).
        dest: [SocketAddrV4; 2],
        relay_ports: [u16; 2],
        /// Per direction: next sequence index, packets sent, a tick to skip (after a swap).
        next: [u32; 2],
        sent: [u64; 2],
        skip_tick: [bool; 2],
        ticks: u64,
        end: Instant,
        abandon: bool,
    },
    /// Media stopped; the arrivals are counted at `at`, then the call is deleted or left.
    Draining {
        id: String,
        sent: [u64; 2],
        at: Instant,
        abandon: bool,
    },
}

struct Driver {
    a: Args,
    client: NgClient,
    callers: Vec<UdpSocket>,
    callees: Vec<UdpSocket>,
    stranger: UdpSocket,
    shared: Arc<Shared>,
    slots: Vec<State>,
    gens: Vec<u32>,
    run: String,
    calls_started: u64,
    /// Abandoned calls and when to check that the relay ended them.
    pending_timeouts: Vec<(String, Instant)>,
    failures: Vec<String>,
}

impl Driver {
    fn lifetime(&self, n: u64) -> Duration {
        let span = self.a.life_max.saturating_sub(self.a.life_min).max(1) * 1000;
        Duration::from_millis(self.a.life_min * 1000 + mix(n) % span)
    }

    fn local(&self, side: usize, slot: usize) -> SocketAddrV4 {
        let socks = if side == 0 {
            &self.callers
        } else {
            &self.callees
        };
        match socks[slot % socks.len()].local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        }
    }

    fn fail_once(&mut self, what: String) {
        if self.failures.len() < 20 {
            eprintln!("soak: {what}");
            self.failures.push(what);
        }
    }

    /// Offer + answer for a new call in `slot`.
    fn start(&mut self, slot: usize, now: Instant) {
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        let gen = self.gens[slot];
        self.calls_started += 1;
        let n = self.calls_started;
        let id = format!("soak-{}-{slot}-{gen}", self.run);
        {
            let mut r = self.shared.rx[slot]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            r.gen = gen;
            for d in &mut r.dirs {
                d.seen.iter_mut().for_each(|w| *w = 0);
                d.unique = 0;
                d.dup = 0;
            }
        }
        let offer = self.client.transact(ng::offer(&id, self.local(0, slot), n));
        let to_callee = ng::reply_endpoint(&offer);
        let answer = self
            .client
            .transact(ng::answer(&id, self.local(1, slot), n));
        let to_caller = ng::reply_endpoint(&answer);
        match (to_caller, to_callee) {
            (Ok(c), Ok(e)) => {
                self.shared.totals.active.fetch_add(1, Ordering::Relaxed);
                self.slots[slot] = State::Active {
                    id,
                    dest: [c, e],
                    relay_ports: [c.port(), e.port()],
                    next: [0, 0],
                    sent: [0, 0],
                    skip_tick: [false, false],
                    ticks: 0,
                    end: now + self.lifetime(n),
                    abandon: self.a.abandon_every > 0 && n.is_multiple_of(self.a.abandon_every),
                };
            }
            (c, e) => {
                self.shared
                    .totals
                    .setup_failed
                    .fetch_add(1, Ordering::Relaxed);
                let why = c.err().or(e.err()).map(|e| format!("{e:#}"));
                self.fail_once(format!("set-up of {id} failed: {why:?}"));
                let _ = self.client.transact(ng::delete(&id));
                self.slots[slot] = State::Idle {
                    at: now + Duration::from_secs(1),
                };
            }
        }
    }

    fn rtp(buf: &mut [u8; RTP_LEN], slot: usize, dir: usize, gen: u32, idx: u32) {
        let seq = (idx as u16).wrapping_add((slot as u16).wrapping_mul(997));
        buf[0] = 0x80;
        buf[1] = if idx == 0 { 0x80 } else { 0 };
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..8].copy_from_slice(&idx.wrapping_mul(160).to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc(slot, dir, gen).to_be_bytes());
        buf[12..16].copy_from_slice(&idx.to_be_bytes());
        buf[16..].fill(0xff);
    }

    /// One tick of media for the call in `slot`: one packet per direction, some skipped
    /// (upstream loss, not counted as sent) and some pairs swapped (reordering).
    fn media(&mut self, slot: usize) {
        let gen = self.gens[slot];
        let (skip_pm, reorder_pm) = (self.a.skip_permille, self.a.reorder_permille);
        let State::Active {
            dest,
            relay_ports,
            next,
            sent,
            skip_tick,
            ticks,
            ..
        } = &mut self.slots[slot]
        else {
            return;
        };
        *ticks += 1;
        let mut buf = [0u8; RTP_LEN];
        let mut out = 0u64;
        for dir in 0..2 {
            if std::mem::take(&mut skip_tick[dir]) {
                continue;
            }
            let socks = if dir == 0 {
                &self.callers
            } else {
                &self.callees
            };
            let sock = &socks[slot % socks.len()];
            let idx = next[dir];
            let r = mix((u64::from(gen) << 40) ^ ((slot as u64) << 20) ^ u64::from(idx) << 1)
                ^ dir as u64;
            let order: &[u32] = if idx > 0 && r % 1000 < reorder_pm {
                skip_tick[dir] = true;
                &[1, 0]
            } else if idx > 0 && (r >> 20) % 1000 < skip_pm {
                &[1]
            } else {
                &[0]
            };
            for &k in order {
                Self::rtp(&mut buf, slot, dir, gen, idx + k);
                if sock.send_to(&buf, dest[dir]).is_ok() {
                    sent[dir] += 1;
                    out += 1;
                }
            }
            next[dir] = idx + order.len().max(if order == [1] { 2 } else { 1 }) as u32;
        }
        self.shared.totals.sent.fetch_add(out, Ordering::Relaxed);
        // After a second of media, a few malformed datagrams to every relay port of the call
        // (RTP and RTCP, both sides) from an address the relay never latched.
        if *ticks == 50 {
            let ports = *relay_ports;
            let junk: [&[u8]; 3] = [
                b"\x00",
                b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                b"\x8f\xc9\xff\xff\x00\x00\x00\x01",
            ];
            for p in ports {
                for port in [p, p.wrapping_add(1)] {
                    for j in junk {
                        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
                        if self.stranger.send_to(j, to).is_ok() {
                            self.shared
                                .totals
                                .malformed_sent
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            let mut sink = [0u8; 2048];
            while self.stranger.recv(&mut sink).is_ok() {}
        }
    }

    /// Counts what arrived of a drained call and deletes it (or leaves it to the timeout).
    fn finish(&mut self, slot: usize, id: String, sent: [u64; 2], abandon: bool, now: Instant) {
        let (unique, dup) = {
            let r = self.shared.rx[slot]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (
                [r.dirs[0].unique, r.dirs[1].unique],
                r.dirs[0].dup + r.dirs[1].dup,
            )
        };
        let shared = Arc::clone(&self.shared);
        let t = &shared.totals;
        let got = unique[0] + unique[1];
        t.received.fetch_add(got, Ordering::Relaxed);
        t.dup.fetch_add(dup, Ordering::Relaxed);
        let lost = (sent[0] + sent[1]).saturating_sub(got);
        t.lost.fetch_add(lost, Ordering::Relaxed);
        t.active.fetch_sub(1, Ordering::Relaxed);
        if lost > 0 {
            self.fail_once(format!(
                "{id}: sent {sent:?}, received {unique:?}: {lost} lost"
            ));
        }
        if abandon {
            t.calls_abandoned.fetch_add(1, Ordering::Relaxed);
            let check = now + Duration::from_secs(self.a.relay_timeout + 10);
            self.pending_timeouts.push((id, check));
        } else {
            match self.client.transact(ng::delete(&id)) {
                Ok(r) if r.result == "ok" => {
                    t.calls_done.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    t.delete_failed.fetch_add(1, Ordering::Relaxed);
                    self.fail_once(format!("delete of {id}: {other:?}"));
                }
            }
        }
    }

    /// An abandoned call must be gone once the media timeout has passed.
    fn check_timeouts(&mut self, now: Instant, all: bool) {
        let due: Vec<String> = self
            .pending_timeouts
            .iter()
            .filter(|(_, at)| all || *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        self.pending_timeouts.retain(|(_, at)| !(all || *at <= now));
        for id in due {
            let q = Owned::dict()
                .with("command", Owned::str("query"))
                .with("call-id", Owned::str(&id));
            match self.client.transact(q) {
                Ok(r) if r.result == "error" => {}
                other => {
                    self.shared
                        .totals
                        .timeout_leaks
                        .fetch_add(1, Ordering::Relaxed);
                    self.fail_once(format!("abandoned {id} not timed out: {other:?}"));
                }
            }
        }
    }

    fn step(&mut self, slot: usize, now: Instant, stopping: bool) {
        match self.slots[slot].clone() {
            State::Idle { at } => {
                if !stopping && now >= at {
                    self.start(slot, now);
                }
            }
            State::Active {
                id,
                sent,
                end,
                abandon,
                ..
            } => {
                if stopping || now >= end {
                    self.slots[slot] = State::Draining {
                        id,
                        sent,
                        at: now + Duration::from_millis(2000),
                        abandon: abandon && !stopping,
                    };
                } else {
                    self.media(slot);
                }
            }
            State::Draining {
                id,
                sent,
                at,
                abandon,
            } => {
                if now >= at {
                    self.finish(slot, id, sent, abandon, now);
                    let gap = Duration::from_millis(mix(self.calls_started) % 2000);
                    self.slots[slot] = State::Idle { at: now + gap };
                }
            }
        }
    }
}

/// One sample of the relay and the driver.
#[derive(Clone, Copy, Default)]
struct Sample {
    t_s: u64,
    rss_kb: u64,
    fds: u64,
    ports: u64,
    calls: u64,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// `name value` lines of the relay's /metrics.
fn metrics(http: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.take(4 << 20).read_to_string(&mut out)?;
    Ok(out)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn sample(a: &Args, t0: Instant) -> Result<Sample> {
    let m = metrics(a.http).context("scraping /metrics")?;
    Ok(Sample {
        t_s: t0.elapsed().as_secs(),
        rss_kb: rss_kb(a.relay_pid).context("relay gone")?,
        fds: fds(a.relay_pid).context("relay gone")?,
        ports: metric(&m, "rtpanchor_ports_used").context("no rtpanchor_ports_used")?,
        calls: metric(&m, "rtpanchor_sessions").context("no rtpanchor_sessions")?,
    })
}

fn csv_row(s: &Sample, t: &Totals) -> String {
    let g = |x: &AtomicU64| x.load(Ordering::Relaxed);
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        s.t_s,
        s.rss_kb,
        s.fds,
        s.ports,
        s.calls,
        g(&t.active),
        g(&t.sent),
        g(&t.received),
        g(&t.lost),
        g(&t.stale),
        g(&t.misrouted),
        g(&t.calls_done),
        g(&t.calls_abandoned),
        g(&t.setup_failed) + g(&t.delete_failed),
        g(&t.timeout_leaks),
        g(&t.malformed_sent),
    )
}

const CSV_HEAD: &str = "t_s,rss_kb,fds,ports_used,relay_calls,driver_calls,sent,received,lost,stale,misrouted,calls_deleted,calls_abandoned,ng_failures,timeout_leaks,malformed_sent\n";

/// The median of `v` (the upper one of an even count); 0 for none.
fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Which resources grew: the median of each `window` seconds after the first one following
/// warm-up (a final window counts when at least half full) against the median of that first
/// window, the level. Medians, so a transient (a scrape's connection, an allocator holding
/// freed memory for a minute) is not growth, while a leak moves every later window up. Also
/// returns, per resource, the level and the window medians, for the report.
fn growth(samples: &[Sample], warmup: u64, window: u64, pct: f64) -> (Vec<String>, Vec<String>) {
    let window = window.max(10);
    let in_window = |from: u64| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.t_s >= from && s.t_s < from + window)
            .collect()
    };
    let base = in_window(warmup);
    if base.is_empty() {
        return (
            vec!["no sample after warm-up: run longer than the warm-up and one window".into()],
            Vec::new(),
        );
    }
    let per_window = (window / 10).max(1) as usize;
    let mut later = Vec::new();
    let mut from = warmup + window;
    while samples.iter().any(|s| s.t_s >= from) {
        let w = in_window(from);
        if w.len() * 2 >= per_window {
            later.push((from, w));
        }
        from += window;
    }
    let (mut fails, mut report) = (Vec::new(), Vec::new());
    type Get = fn(&Sample) -> u64;
    let fields: [(&str, Get); 4] = [
        ("RSS kB", |s| s.rss_kb),
        ("open descriptors", |s| s.fds),
        ("ports in use", |s| s.ports),
        ("calls", |s| s.calls),
    ];
    for (name, get) in fields {
        let level = median(base.iter().map(|s| get(s)).collect());
        let limit = level as f64 * (1.0 + pct / 100.0);
        let meds: Vec<(u64, u64)> = later
            .iter()
            .map(|(t, w)| (*t, median(w.iter().map(|s| get(s)).collect())))
            .collect();
        report.push(format!(
            "{name}: level {level}, later {window} s medians {:?}",
            meds.iter().map(|m| m.1).collect::<Vec<_>>()
        ));
        if let Some((t, m)) = meds.iter().find(|(_, m)| *m as f64 > limit) {
            fails.push(format!(
                "{name} grew: median {m} in the {window} s from {t} s, level {level} (+{pct}% = {limit:.0})"
            ));
        }
    }
    (fails, report)
}

fn main() {
    match run() {
        Ok(0) => {
            println!("SOAK PASS");
            std::process::exit(0)
        }
        Ok(c) => {
            println!("SOAK FAIL");
            std::process::exit(c)
        }
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(2);
        }
    }
}

fn bind(port: u16) -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_recv_buffer_size(4 << 20);
    Ok(s)
}

fn run() -> Result<i32> {
    let a = Args::parse();
    if a.calls == 0 || a.calls > 0x7fff || a.pps != 50 || a.sockets == 0 {
        bail!("--calls 1..32767, --pps 50 (one packet per 20 ms tick), --sockets >= 1");
    }
    if a.life_max * 50 + 100 > (SEQ_WORDS * 64) as u64 {
        bail!("--life-max too long for the arrival bitmap");
    }
    let base = a.local_base;
    let n = a.sockets as u16;
    let callers = (0..n).map(|i| bind(base + i)).collect::<Result<Vec<_>>>()?;
    let callees = (0..n)
        .map(|i| bind(base + n + i))
        .collect::<Result<Vec<_>>>()?;
    let stranger = bind(base + 2 * n)?;
    stranger.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        rx: (0..a.calls)
            .map(|_| {
                Mutex::new(SlotRx {
                    gen: 0,
                    dirs: [0, 1].map(|_| DirRx {
                        seen: vec![0; SEQ_WORDS],
                        ..DirRx::default()
                    }),
                })
            })
            .collect(),
        totals: Totals::default(),
    });
    let stop = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (side, socks) in [(0, &callers), (1, &callees)] {
        for s in socks {
            let (s, sh, st) = (s.try_clone()?, Arc::clone(&shared), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || receiver(s, side, sh, st)));
        }
    }
    let mut client = NgClient::connect(a.ng)?;
    client.set_timeout(Duration::from_millis(1000));
    client.wait_ready(Duration::from_secs(10))?;
    let mut csv =
        std::fs::File::create(&a.csv).with_context(|| format!("creating {}", a.csv.display()))?;
    csv.write_all(CSV_HEAD.as_bytes())?;
    let t0 = Instant::now();
    let calls = a.calls;
    let total = Duration::from_secs_f64(a.minutes * 60.0);
    // Slots start spread over the first 10 s, so lifetimes (and tear-downs) are spread too.
    let slots = (0..calls)
        .map(|i| State::Idle {
            at: t0 + Duration::from_millis((i as u64 * 10_000) / calls as u64),
        })
        .collect();
    let mut d = Driver {
        run: format!("{}", std::process::id()),
        client,
        callers,
        callees,
        stranger,
        shared: Arc::clone(&shared),
        slots,
        gens: vec![0; calls],
        calls_started: 0,
        pending_timeouts: Vec::new(),
        failures: Vec::new(),
        a,
    };
    let mut samples = Vec::new();
    let mut next_sample = t0;
    let mut next_tick = t0;
    let mut next_junk = t0 + Duration::from_secs(5);
    let mut errors = 0;
    loop {
        let now = Instant::now();
        let stopping = now >= t0 + total;
        for slot in 0..calls {
            d.step(slot, now, stopping);
        }
        d.check_timeouts(now, false);
        if now >= next_junk {
            // Malformed control traffic: a truncated bencode request and a SIP fragment.
            next_junk = now + Duration::from_secs(5);
            let _ = d.stranger.send_to(b"1234 d7:command5:offe", d.a.ng);
            if let Some(sip) = d.a.sip {
                let _ = d
                    .stranger
                    .send_to(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP\r\n", sip);
            }
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(10);
            match sample(&d.a, t0) {
                Ok(s) => {
                    csv.write_all(csv_row(&s, &shared.totals).as_bytes())?;
                    csv.flush()?;
                    samples.push(s);
                }
                Err(e) => {
                    errors += 1;
                    d.fail_once(format!("sample failed: {e:#}"));
                }
            }
        }
        if stopping && d.slots.iter().all(|s| matches!(s, State::Idle { .. })) {
            break;
        }
        next_tick += TICK;
        let now = Instant::now();
        if next_tick > now {
            std::thread::sleep(next_tick - now);
        } else if now - next_tick > Duration::from_secs(1) {
            // Fell far behind (a stalled machine): do not burst to catch up.
            next_tick = now;
        }
    }
    // Wait out the abandoned calls' timeouts, then everything must be gone.
    let last = d.pending_timeouts.iter().map(|(_, at)| *at).max();
    if let Some(at) = last {
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
    }
    d.check_timeouts(Instant::now(), true);
    stop.store(1, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let end = sample(&d.a, t0)?;
    csv.write_all(csv_row(&end, &shared.totals).as_bytes())?;
    let t = &shared.totals;
    let g = |x: &AtomicU64| x.load(Ordering::Relaxed);
    println!(
        "soak: {:.0} min, {} calls deleted, {} abandoned (media timeout), {} packets sent, {} received, {} lost, {} duplicated, {} stale, {} misrouted, {} non-RTP received, {} malformed sent",
        d.a.minutes,
        g(&t.calls_done),
        g(&t.calls_abandoned),
        g(&t.sent),
        g(&t.received),
        g(&t.lost),
        g(&t.dup),
        g(&t.stale),
        g(&t.misrouted),
        g(&t.foreign),
        g(&t.malformed_sent)
    );
    let post = samples.iter().filter(|s| s.t_s >= d.a.warmup_secs);
    let peak = |f: fn(&Sample) -> u64| post.clone().map(f).max().unwrap_or(0);
    let low = |f: fn(&Sample) -> u64| post.clone().map(f).min().unwrap_or(0);
    println!(
        "soak: after warm-up: RSS {}..{} kB, descriptors {}..{}, ports {}..{}, calls {}..{}; at the end: {} calls, {} ports",
        low(|s| s.rss_kb),
        peak(|s| s.rss_kb),
        low(|s| s.fds),
        peak(|s| s.fds),
        low(|s| s.ports),
        peak(|s| s.ports),
        low(|s| s.calls),
        peak(|s| s.calls),
        end.calls,
        end.ports
    );
    let mut fails = d.failures.clone();
    let (grew, levels) = growth(&samples, d.a.warmup_secs, d.a.window_secs, d.a.growth_pct);
    for l in &levels {
        println!("soak: {l}");
    }
    fails.extend(grew);
    let counted = [
        ("packets lost", g(&t.lost)),
        ("packets misrouted", g(&t.misrouted)),
        ("duplicated packets", g(&t.dup)),
        ("failed set-ups", g(&t.setup_failed)),
        ("failed deletes", g(&t.delete_failed)),
        ("abandoned calls not timed out", g(&t.timeout_leaks)),
        ("calls left on the relay", end.calls),
        ("ports left in use", end.ports),
        ("failed samples", errors),
    ];
    for (what, v) in counted {
        if v > 0 {
            fails.push(format!("{v} {what}"));
        }
    }
    if g(&t.calls_abandoned) == 0 {
        fails.push("no call was abandoned: the timeout path was not exercised".into());
    }
    for f in &fails {
        println!("FAIL: {f}");
    }
    Ok(if fails.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrc_round_trips() {
        assert_eq!(unpack(ssrc(149, 1, 7)), (149, 1, 7));
        assert_eq!(unpack(ssrc(0, 0, 0x7fff)), (0, 0, 0x7fff));
    }

    #[test]
    fn growth_is_judged_by_window_medians_against_the_first_after_warm_up() {
        let s = |t, rss| Sample {
            t_s: t,
            rss_kb: rss,
            fds: 10,
            ports: 100,
            calls: 50,
        };
        let run = |f: &dyn Fn(u64) -> u64| -> Vec<Sample> {
            (0..30).map(|k| s(k * 10, f(k * 10))).collect()
        };
        // Flat, with a transient of two samples: no growth.
        let flat = run(&|t| if (200..220).contains(&t) { 200 } else { 100 });
        let (fails, report) = growth(&flat, 60, 60, 5.0);
        assert!(fails.is_empty(), "{fails:?}");
        assert_eq!(
            report[0],
            "RSS kB: level 100, later 60 s medians [100, 100, 100]"
        );
        // A leak: +1 a sample from the level on.
        let leak = run(&|t| 100 + t / 10);
        let (fails, _) = growth(&leak, 60, 60, 5.0);
        assert_eq!(fails.len(), 1, "{fails:?}");
        assert!(
            fails[0].starts_with("RSS kB grew: median 115 in the 60 s from 120 s, level 109"),
            "{fails:?}"
        );
        // Nothing after warm-up.
        assert_eq!(growth(&[s(0, 1)], 60, 60, 5.0).0.len(), 1);
    }
}
