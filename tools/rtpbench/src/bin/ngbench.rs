//! ngbench: control-plane throughput of an ng-speaking relay. Runs complete call set-ups and
//! tear-downs (offer + answer + delete, each a real ng request with an SDP) against the
//! relay and reports cycles per second, the request round-trip, and the relay's CPU time per
//! cycle. Two modes per run: `window 1` (one request at a time, the way one Kamailio worker
//! talks to the relay) and a pipelined window (many proxy workers at once).
//!
//! Usage: ngbench --ng 127.0.0.1:2223 [--calls 2000] [--batch 500] [--window 32] [--relay-pid PID] [--json F]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use rtpanchor::control::bencode::Owned;
use rtpbench::ng::{self, NgClient};
use rtpbench::{procfs, sys};

#[derive(Parser, Debug)]
#[command(about = "offer+answer+delete cycles per second against an ng relay")]
struct Args {
    /// The relay's ng address.
    #[arg(long, default_value = "127.0.0.1:2223")]
    ng: SocketAddr,
    /// Calls (cycles) per mode.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Calls set up before they are torn down (each holds two port pairs meanwhile).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Outstanding requests in the pipelined mode.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Relay process, for CPU time per cycle.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// A label for the report (e.g. the relay's name).
    #[arg(long, default_value = "relay")]
    label: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Instead of cycles: set up this many calls, report the relay's resident memory per call
    /// (VmRSS from /proc, needs --relay-pid), then delete them.
    #[arg(long)]
    hold: Option<usize>,
    /// With --hold: keep the calls this long before measuring again (pinging once a second),
    /// so the relay's ng reply cache (30-60 s) has forgotten the set-up replies and the second
    /// figure is the calls' own memory.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// With --hold: both ends offer and answer `a=rtcp-mux` (one relay socket per side).
    #[arg(long)]
    mux: bool,
    /// With --hold: leave the calls up (a later run measures what more calls add on top).
    #[arg(long)]
    keep: bool,
}

/// Open descriptors of `pid` (entries of /proc/PID/fd).
fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident set size of `pid` in bytes (VmRSS in /proc/PID/status).
fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Sets up `n` calls, measures the relay's memory growth, deletes them.
fn hold(args: &Args, n: usize) -> Result<()> {
    let pid = args.relay_pid.context("--hold needs --relay-pid")?;
    let mut client = NgClient::connect(args.ng)?;
    client.window = args.window;
    client.set_timeout(Duration::from_millis(2000));
    let run = format!("hold{}", std::process::id());
    let ids: Vec<String> = (0..n).map(|i| ng::call_id(&run, i)).collect();
    let addr =
        |base: u16, i: usize| SocketAddrV4::new(Ipv4Addr::LOCALHOST, base + 2 * (i % 5000) as u16);
    let before = rss_bytes(pid).context("relay gone")?;
    let fds_before = fd_count(pid).unwrap_or(0);
    let sdp = |base: u16, i: usize, id: u64| {
        Owned::str(&rtpbench::sdp::audio_sdp_mux(addr(base, i), id, args.mux))
    };
    let mut failed = 0;
    for (reqs, what) in [
        (
            ids.iter()
                .enumerate()
                .map(|(i, id)| ng::offer(id, addr(2000, i), 1).with("sdp", sdp(2000, i, 1)))
                .collect::<Vec<_>>(),
            "offer",
        ),
        (
            ids.iter()
                .enumerate()
                .map(|(i, id)| ng::answer(id, addr(12000, i), 2).with("sdp", sdp(12000, i, 2)))
                .collect(),
            "answer",
        ),
    ] {
        for r in client.transact_many(&reqs, &|| false) {
            if !matches!(r, Ok(ref r) if r.result == "ok") {
                failed += 1;
                if failed < 3 {
                    eprintln!("{what} failed: {r:?}");
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes(pid).context("relay gone")?;
    let fds_after = fd_count(pid).unwrap_or(0);
    let mut settled = None;
    if args.hold_secs > 0 {
        for _ in 0..args.hold_secs {
            std::thread::sleep(Duration::from_secs(1));
            // The reply cache rotates its generations as requests arrive.
            let _ = client.transact(Owned::dict().with("command", Owned::str("ping")));
        }
        settled = rss_bytes(pid);
    }
    if !args.keep {
        let deletes: Vec<_> = ids.iter().map(|id| ng::delete(id)).collect();
        client.transact_many(&deletes, &|| false);
    }
    let per_call = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "{}: {n} calls held ({failed} failed): relay RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes per call, {:.0} bytes per stream side",
        args.label,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_call,
        per_call / 2.0
    );
    println!(
        "{}: descriptors {fds_before} -> {fds_after}: {:.2} per call",
        args.label,
        fds_after.saturating_sub(fds_before) as f64 / n as f64
    );
    if let Some(settled) = settled {
        println!(
            "{}: after {} s (reply cache expired): relay RSS {:.1} MiB, {:.0} bytes per call",
            args.label,
            args.hold_secs,
            settled as f64 / 1048576.0,
            settled.saturating_sub(before) as f64 / n as f64
        );
    }
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct ModeResult {
    window: usize,
    calls: usize,
    seconds: f64,
    cycles_per_sec: f64,
    /// Mean time per request (wall time / requests); with window 1 this is the round trip.
    mean_request_us: f64,
    relay_cpu_us_per_cycle: Option<f64>,
    errors: usize,
}

fn run_mode(args: &Args, run: &str, window: usize) -> Result<ModeResult> {
    let mut client = NgClient::connect(args.ng)?;
    client.window = window;
    client.set_timeout(Duration::from_millis(2000));
    let ticks = sys::clock_ticks_per_sec();
    let cpu0 = args
        .relay_pid
        .and_then(|p| procfs::process_cpu_ns(p, ticks));
    let t0 = sys::mono_ns();
    let mut errors = 0usize;
    // Calls go in batches so the relay never holds more than `batch` calls at once.
    let batch = args.batch.max(1).min(args.calls.max(1));
    let mut done = 0;
    while done < args.calls {
        let n = batch.min(args.calls - done);
        let ids: Vec<String> = (done..done + n).map(|i| ng::call_id(run, i)).collect();
        // Ports in the SDP are never used for media here; they only have to be valid.
        let caller =
            |i: usize| SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2000 + 2 * (i % 5000) as u16);
        let callee =
            |i: usize| SocketAddrV4::new(Ipv4Addr::LOCALHOST, 12000 + 2 * (i % 5000) as u16);
        let offers: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ng::offer(id, caller(i), 1))
            .collect();
        let answers: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ng::answer(id, callee(i), 2))
            .collect();
        let deletes: Vec<_> = ids.iter().map(|id| ng::delete(id)).collect();
        for reqs in [&offers, &answers, &deletes] {
            for r in client.transact_many(reqs, &|| false) {
                match r {
                    Ok(r) if r.result == "ok" => {}
                    other => {
                        if errors < 3 {
                            eprintln!("failed request: {other:?}");
                        }
                        errors += 1;
                    }
                }
            }
        }
        done += n;
    }
    let secs = (sys::mono_ns() - t0) as f64 / 1e9;
    let cpu = match (args.relay_pid, cpu0) {
        (Some(p), Some(c0)) => {
            procfs::process_cpu_ns(p, ticks).map(|c1| c1.saturating_sub(c0) as f64 / 1e3)
        }
        _ => None,
    };
    Ok(ModeResult {
        window,
        calls: args.calls,
        seconds: secs,
        cycles_per_sec: args.calls as f64 / secs,
        mean_request_us: secs * 1e6 / (3 * args.calls) as f64,
        relay_cpu_us_per_cycle: cpu.map(|c| c / args.calls as f64),
        errors,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut probe = NgClient::connect(args.ng)?;
    probe
        .wait_ready(Duration::from_secs(10))
        .context("relay not answering ping")?;
    if let Some(n) = args.hold {
        return hold(&args, n);
    }
    let run = format!("ngb{}", std::process::id());
    let mut results = Vec::new();
    for (k, window) in [1, args.window].into_iter().enumerate() {
        let r = run_mode(&args, &format!("{run}-{k}"), window)?;
        eprintln!(
            "{}: window {:>3}: {:>8.0} cycles/s, {:>7.1} us/request, relay CPU {} us/cycle, {} errors",
            args.label,
            r.window,
            r.cycles_per_sec,
            r.mean_request_us,
            r.relay_cpu_us_per_cycle.map_or("-".into(), |c| format!("{c:.1}")),
            r.errors
        );
        results.push(r);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "label": args.label, "modes": results });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    if results.iter().any(|r| r.errors > 0) {
        bail!("some requests failed");
    }
    Ok(())
}
