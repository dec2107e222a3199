// Real-process tests are an I/O edge: they read the clock to bound their waits.
#![allow(clippy::disallowed_methods)]

//! Differential test against rtpengine (issue 23): the ng exchanges of
//! `tests/data/differential/cases.txt` go to Debian's `rtpengine` (userspace forwarding, no
//! kernel module) and to rtpanchor, both on loopback; the SDPs and the reply shapes are
//! compared after normalising what may differ between any two runs (relay ports, ICE and
//! crypto secrets, timestamps, counters). Every difference found must be listed in the table
//! of `COMPATIBILITY.md` with its reason, and every listed difference must still occur: the
//! test fails on either, so the table is the documentation of every deliberate difference.
//!
//! What is compared:
//! - **SDP** (offer and answer replies), per section (session, then each `m=`), as sets of
//!   lines: attribute order is not compared (rtpengine rebuilds the SDP, we keep the input's
//!   order; listed once in COMPATIBILITY.md). Relay ports become `P<n>` (`P<n>+1` for the odd
//!   port of a pair), numbered in order of first appearance in that relay's replies of the
//!   case; ICE credentials and candidates, fingerprints and SDES keys become `*`.
//! - **Reply shape**: every key of rtpengine's reply must be in ours (ours may have more).
//!   Paths name tags `*` and list items `[]`; a missing key is one difference however many
//!   cases show it.
//! - **Values** of the keys a consumer acts on: `result`, `type`, `protocol`, `index`,
//!   `family`, `address`, `port` (of endpoints), `local port` (through the port map), `flags`
//!   (as a set), `tag`, `label`, `via-branch`, `calls`, `error-reason`.
//!
//! Ports (all in 13000-13999): rtpengine ng 13003, media 13100-13299; rtpanchor ng 13004,
//! media 13300-13499. The SDPs name endpoints at 13600-13699, never bound (no media flows).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::ng::{client, start_relay_in};
use common::peers::{find_program, udp_bound, wait_udp_bound, Peer};
use common::TempDir;
use rtpanchor::client::ng::NgClient;
use rtpanchor::control::bencode::Owned;
use rtpanchor::control::json;

const RTPE_NG: u16 = 13003;
const RTPE_MEDIA: (u16, u16) = (13100, 13299);
const OURS_NG: u16 = 13004;
const OURS_MEDIA: (u16, u16) = (13300, 13499);

struct Step {
    command: String,
    extra: Owned,
    sdp: Option<String>,
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("cases.txt line {}", n + 1);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("=== ") {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("{}", at()));
            cases.push(Case {
                name: name.to_owned(),
                steps: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix(">>> ") {
            let (command, extra) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let extra = json::parse(extra.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", at()));
            let case = cases
                .last_mut()
                .unwrap_or_else(|| panic!("{}: step before case", at()));
            case.steps.push(Step {
                command: command.to_owned(),
                extra,
                sdp: None,
            });
        } else {
            let step = cases
                .last_mut()
                .and_then(|c| c.steps.last_mut())
                .unwrap_or_else(|| panic!("{}: SDP line outside a step", at()));
            let sdp = step.sdp.get_or_insert_with(String::new);
            sdp.push_str(line);
            sdp.push_str("\r\n");
        }
    }
    cases
}

fn request(case: &Case, step: &Step) -> Owned {
    let mut d = Owned::dict().with("command", step.command.as_str());
    if !matches!(step.command.as_str(), "ping" | "list" | "statistics") {
        d.insert("call-id", format!("diff-{}", case.name));
    }
    for (k, v) in step.extra.as_dict().unwrap_or_default() {
        d.insert(k, v.clone());
    }
    if let Some(sdp) = &step.sdp {
        d.insert("sdp", sdp.as_str());
    }
    d
}

/// Relay ports to names, per relay and per case: each RTP port (the first relay port of an
/// `m=` line or a stream) is `P<n>`, numbered by first appearance, and the port after it
/// `P<n>+1`. Names go by what a port is used for, not by its parity: a relay that muxes from
/// the start may bind a single odd port.
struct PortMap {
    range: (u16, u16),
    rtp: BTreeMap<u16, usize>,
}

impl PortMap {
    fn new(range: (u16, u16)) -> PortMap {
        PortMap {
            range,
            rtp: BTreeMap::new(),
        }
    }

    fn name(&mut self, port: u16) -> Option<String> {
        if port < self.range.0 || port > self.range.1 {
            return None;
        }
        if let Some(n) = self.rtp.get(&port) {
            return Some(format!("P{n}"));
        }
        if let Some(n) = port.checked_sub(1).and_then(|p| self.rtp.get(&p)) {
            return Some(format!("P{n}+1"));
        }
        let n = self.rtp.len() + 1;
        self.rtp.insert(port, n);
        Some(format!("P{n}"))
    }

    /// Every run of digits that is a relay port, renamed.
    fn text(&mut self, s: &str) -> String {
        let mut out = String::new();
        let mut digits = String::new();
        let flush = |digits: &mut String, out: &mut String, map: &mut PortMap| {
            if !digits.is_empty() {
                match digits.parse::<u16>().ok().and_then(|p| map.name(p)) {
                    Some(n) => out.push_str(&n),
                    None => out.push_str(digits),
                }
                digits.clear();
            }
        };
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
            } else {
                flush(&mut digits, &mut out, self);
                out.push(ch);
            }
        }
        flush(&mut digits, &mut out, self);
        out
    }
}

/// One SDP line with its secrets and generated values blanked.
fn norm_line(line: &str, ports: &mut PortMap) -> String {
    for secret in [
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=candidate:",
        "a=fingerprint:",
    ] {
        if line.starts_with(secret) {
            return format!("{secret}*");
        }
    }
    if let Some(rest) = line.strip_prefix("a=crypto:") {
        let suite = rest.split_whitespace().nth(1).unwrap_or("");
        return format!("a=crypto:* {suite} *");
    }
    ports.text(line)
}

/// Sections of an SDP (session first), each a set of normalised lines.
fn sdp_sections(sdp: &str, ports: &mut PortMap) -> Vec<BTreeSet<String>> {
    let mut sections = vec![BTreeSet::new()];
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            sections.push(BTreeSet::new());
        }
        let l = norm_line(line, ports);
        if let Some(s) = sections.last_mut() {
            s.insert(l);
        }
    }
    sections
}

const VALUE_KEYS: &[&str] = &[
    "result",
    "type",
    "protocol",
    "index",
    "family",
    "address",
    "flags",
    "tag",
    "label",
    "via-branch",
    "calls",
    "error-reason",
];

fn show(v: &Owned, ports: &mut PortMap, local_port: bool) -> String {
    match v {
        Owned::Int(i) if local_port => u16::try_from(*i)
            .ok()
            .and_then(|p| ports.name(p))
            .unwrap_or_else(|| i.to_string()),
        Owned::List(items) => {
            let set: BTreeSet<String> = items.iter().map(|i| show(i, ports, false)).collect();
            format!("[{}]", set.into_iter().collect::<Vec<_>>().join(","))
        }
        other => other
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    }
}

struct Diffs {
    /// Per case: SDP lines and values.
    case: BTreeSet<String>,
    /// Shape and values of replies, once for all cases (with the cases that show it).
    shape: BTreeMap<String, BTreeSet<String>>,
}

struct Walk<'a> {
    diffs: &'a mut Diffs,
    case: &'a str,
    step: String,
    theirs_ports: &'a mut PortMap,
    ours_ports: &'a mut PortMap,
}

impl Walk<'_> {
    /// A difference of reply shape or value: one row for every case that shows it.
    fn global(&mut self, id: String) {
        self.diffs
            .shape
            .entry(id)
            .or_default()
            .insert(format!("{} {}", self.case, self.step));
    }

    fn compare(&mut self, path: &str, theirs: &Owned, ours: &Owned, key: &str) {
        // The SSRC tables hold what was measured, keyed by SSRC: never comparable here.
        if key == "SSRC" || key == "sdp" {
            return;
        }
        let is_port = key == "port" || key == "local port";
        if key == "flags" {
            // Flag by flag, so one flag's difference is one row however many replies show it.
            let set = |v: &Owned| -> BTreeSet<String> {
                v.as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            };
            let (t, o) = (set(theirs), set(ours));
            for f in t.difference(&o) {
                self.global(format!("{path}: without {f:?}"));
            }
            for f in o.difference(&t) {
                self.global(format!("{path}: with {f:?}"));
            }
            return;
        }
        if VALUE_KEYS.contains(&key) || is_port {
            let local = key == "local port";
            let t = show(theirs, self.theirs_ports, local);
            let o = show(ours, self.ours_ports, local);
            if t != o {
                self.global(format!("{path} = {o} (rtpengine: {t})"));
            }
            return;
        }
        match (theirs, ours) {
            (Owned::Dict(t), Owned::Dict(_)) => {
                let generic_keys = path.ends_with(".tags") || path.ends_with(".SSRC");
                // Per-command counters: one row per command, not one per counter.
                let per_command = path.contains(".controlstatistics");
                for (k, tv) in t {
                    let sub = if generic_keys {
                        format!("{path}.*")
                    } else if per_command && (k.ends_with("count") || k.ends_with("duration")) {
                        let stem = k.strip_prefix("total").unwrap_or(k);
                        let stem = stem.strip_suffix("count").unwrap_or(stem);
                        let stem = stem.strip_suffix("duration").unwrap_or(stem);
                        // Per proxy and in total alike.
                        let base = path.replace(".proxies[]", "");
                        format!("{base}.{stem}(count|duration)")
                    } else {
                        format!("{path}.{k}")
                    };
                    match ours.get(k) {
                        Some(ov) => self.compare(&sub, tv, ov, k),
                        None => self.global(format!("missing {sub}")),
                    }
                }
            }
            (Owned::List(t), Owned::List(o)) => {
                for (i, tv) in t.iter().enumerate() {
                    match o.get(i) {
                        Some(ov) => self.compare(&format!("{path}[]"), tv, ov, key),
                        None => {
                            self.global(format!(
                                "{path}[]: {} items (rtpengine: {})",
                                o.len(),
                                t.len()
                            ));
                            break;
                        }
                    }
                }
            }
            (Owned::Dict(_), _) | (Owned::List(_), _) => self.global(format!("type of {path}")),
            _ => {}
        }
    }
}

fn compare_sdp(w: &mut Walk<'_>, theirs: &str, ours: &str) {
    let t = sdp_sections(theirs, w.theirs_ports);
    let o = sdp_sections(ours, w.ours_ports);
    if t.len() != o.len() {
        w.diffs.case.insert(format!(
            "{} {}: sdp has {} sections (rtpengine: {})",
            w.case,
            w.step,
            o.len(),
            t.len()
        ));
    }
    for (i, (ts, os)) in t.iter().zip(&o).enumerate() {
        for l in ts.difference(os) {
            w.diffs
                .case
                .insert(format!("{} {}: sdp[{i}] -{l}", w.case, w.step));
        }
        for l in os.difference(ts) {
            w.diffs
                .case
                .insert(format!("{} {}: sdp[{i}] +{l}", w.case, w.step));
        }
    }
}

fn send(c: &mut NgClient, who: &str, req: &Owned) -> Owned {
    c.request(req)
        .unwrap_or_else(|e| panic!("{who}: no reply to {req}: {e}"))
}

/// The table of COMPATIBILITY.md: rows whose first cell is a `code` span are differences.
fn listed(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(id, _)| id.replace("\\|", "|"))
        .collect()
}

fn start_rtpengine(dir: &Path) -> Peer {
    let bin = find_program("rtpengine").unwrap_or_else(|| {
        panic!(
            "rtpengine (Debian package rtpengine-daemon) is not installed: tools/test.sh and \
             .ci/run install it; the differential test needs it"
        )
    });
    assert!(
        !udp_bound(RTPE_NG),
        "UDP 127.0.0.1:{RTPE_NG} is taken: another differential run?"
    );
    let mut peer = Peer::spawn(
        "rtpengine",
        Command::new(bin)
            .arg("--config-file=none")
            .arg("--foreground")
            .arg("--log-stderr")
            // Userspace forwarding only: no kernel module, no iptables/nftables rule.
            .arg("--table=-1")
            .arg("--interface=127.0.0.1")
            .arg(format!("--listen-ng=127.0.0.1:{RTPE_NG}"))
            .arg(format!("--port-min={}", RTPE_MEDIA.0))
            .arg(format!("--port-max={}", RTPE_MEDIA.1))
            .arg("--delete-delay=0")
            .arg("--log-level=5"),
        &dir.join("rtpengine.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = wait_udp_bound(&mut peer, RTPE_NG, Duration::from_secs(10)) {
        panic!("rtpengine is installed but does not run here: {e}");
    }
    peer
}

#[test]
fn replies_match_rtpengine_or_the_compatibility_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = parse_cases(
        &std::fs::read_to_string(root.join("tests/data/differential/cases.txt"))
            .expect("tests/data/differential/cases.txt"),
    );
    assert!(cases.len() >= 40, "the case table shrank: {}", cases.len());
    let doc = std::fs::read_to_string(root.join("COMPATIBILITY.md")).expect("COMPATIBILITY.md");
    let table = listed(&doc);

    let dir = TempDir::new("differential").expect("temp dir");
    let mut rtpe_peer = start_rtpengine(dir.path());
    let ours_proc = start_relay_in(OURS_NG, OURS_MEDIA, "mmsg", &[]);
    let mut theirs = client(SocketAddr::from(([127, 0, 0, 1], RTPE_NG)));
    theirs
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("rtpengine does not answer ping: {e}"));
    let mut ours = client(ours_proc.ng);

    let mut diffs = Diffs {
        case: BTreeSet::new(),
        shape: BTreeMap::new(),
    };
    for case in &cases {
        let mut theirs_ports = PortMap::new(RTPE_MEDIA);
        let mut ours_ports = PortMap::new(OURS_MEDIA);
        for (i, step) in case.steps.iter().enumerate() {
            let req = request(case, step);
            let t = send(&mut theirs, "rtpengine", &req);
            let o = send(&mut ours, "rtpanchor", &req);
            let mut w = Walk {
                diffs: &mut diffs,
                case: &case.name,
                step: format!("{}.{}", i + 1, step.command),
                theirs_ports: &mut theirs_ports,
                ours_ports: &mut ours_ports,
            };
            match (
                t.get("sdp").and_then(Owned::as_str),
                o.get("sdp").and_then(Owned::as_str),
            ) {
                (Some(ts), Some(os)) => compare_sdp(&mut w, ts, os),
                (None, None) => {}
                (ts, _) => {
                    let who = if ts.is_some() {
                        "rtpengine"
                    } else {
                        "rtpanchor"
                    };
                    w.diffs.case.insert(format!(
                        "{} {}: only {who} returned an SDP",
                        case.name, w.step
                    ));
                }
            }
            // query and delete return the same report.
            let label = match step.command.as_str() {
                "query" | "delete" => "report",
                other => other,
            };
            w.compare(label, &t, &o, "");
        }
    }
    assert!(
        rtpe_peer.is_running(),
        "rtpengine died during the run:\n{}",
        rtpe_peer.log_tail(30)
    );
    rtpe_peer.stop(Duration::from_secs(2));

    let mut found: BTreeSet<String> = diffs.case.clone();
    for shape in diffs.shape.keys() {
        found.insert(shape.clone());
    }
    let unlisted: Vec<&String> = found.difference(&table).collect();
    let stale: Vec<&String> = table.difference(&found).collect();
    let mut report = String::new();
    for d in &unlisted {
        let seen = diffs
            .shape
            .get(*d)
            .map(|c| c.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        report.push_str(&format!("| `{}` | | {seen}\n", d.replace('|', "\\|")));
    }
    // The table is written against one rtpengine release: another one shows up here first.
    let version = Command::new(find_program("rtpengine").expect("found above"))
        .arg("--version")
        .output()
        .map(|o| {
            // It prints the version on stderr.
            let mut v = String::from_utf8_lossy(&o.stdout).into_owned();
            v.push_str(&String::from_utf8_lossy(&o.stderr));
            v.trim().to_owned()
        })
        .unwrap_or_default();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "against rtpengine {version:?}: {} differences are not in COMPATIBILITY.md (fix them \
         or list them with a reason):\n{report}\n{} listed differences no longer occur \
         (remove them):\n{}",
        unlisted.len(),
        stale.len(),
        stale
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
